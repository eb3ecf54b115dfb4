//! Grant policy: what one verified capsule may use in one run.
//!
//! Owns the intersection of a capsule's signed request with the site policy
//! and the runner's [`Limits`], the resolution of granted egress (once, when
//! the grant is made) and the refusal of internal addresses. It records why
//! each request was cut or denied. It compiles and runs nothing: the engine
//! takes a [`Grant`] as it is, and refuses one made for another capsule.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use super::{Determinism, Limits, Quotas};
use crate::capsule::{AbsPath, Access, Destination, Kind, ResourceLimits};
use crate::site::SitePolicy;
use crate::trust::VerifiedCapsule;

/// A directory granted to a run: seen by the guest at `guest`, backed by `host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryGrant {
    /// The path the capsule asked for, and sees.
    pub guest: AbsPath,
    /// The host directory behind it.
    pub host: PathBuf,
    /// Read-only or read-write.
    pub access: Access,
}

/// An egress destination granted to a run, with the addresses it resolved to
/// when the grant was made; the guest may connect to those addresses only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressGrant {
    /// The destination asked for.
    pub destination: Destination,
    /// Its addresses, resolved once by the runner.
    pub addresses: Vec<SocketAddr>,
}

/// Access a capsule asked for and did not get, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// What was asked for, e.g. `file /var/log (read-only)`.
    pub request: String,
    /// Why it was not granted.
    pub reason: String,
}

/// A resource asked for beyond the ceiling, and what was granted instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedRequest {
    /// The resource, e.g. `memory-bytes`.
    pub resource: &'static str,
    /// What the manifest asked for.
    pub asked: u64,
    /// What was granted.
    pub granted: u64,
}

/// What one run of one verified capsule is allowed: its signed request
/// (already within its signers' ceilings) intersected with the site policy
/// and bounded by the runner's [`Limits`].
///
/// Only [`Grant::compute`] builds one, for one capsule, whose module digest it
/// carries; [`super::Sandbox::run`] refuses it for any other capsule. Its
/// fields are read through the methods below and cannot be set from outside:
///
/// ```compile_fail
/// # fn widen(grant: edge_runner::sandbox::Grant) {
/// let g = edge_runner::sandbox::Grant { memory_bytes: 1 << 40, ..grant };
/// # }
/// ```
///
/// ```compile_fail
/// # fn widen(mut grant: edge_runner::sandbox::Grant) {
/// grant.fuel = u64::MAX;
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The module digest of the capsule this grant was computed for.
    module: [u8; 32],
    pub(crate) memory_bytes: u64,
    pub(crate) fuel: u64,
    pub(crate) wall_time: Duration,
    pub(crate) compile: super::CompileBudget,
    pub(crate) quotas: Quotas,
    pub(crate) directories: Vec<DirectoryGrant>,
    pub(crate) config: BTreeMap<String, String>,
    pub(crate) egress: Vec<EgressGrant>,
    pub(crate) refused: Vec<RefusedRequest>,
    pub(crate) denied: Vec<Denial>,
    pub(crate) determinism: Option<Determinism>,
}

impl Grant {
    /// Intersects `capsule`'s signed request with `site` and bounds it by `limits`;
    /// a `reproduce` capsule runs deterministically, seeded from its module and `input_sha256`.
    pub fn compute(
        capsule: &VerifiedCapsule,
        limits: &Limits,
        site: &SitePolicy,
        input_sha256: [u8; 32],
    ) -> Self {
        let manifest = capsule.manifest();
        let module = capsule.module_digest();
        let requested = &manifest.limits;
        let mut refused = Vec::new();
        let mut bound = |resource, asked: Option<u64>, default: u64, max: u64| match asked {
            None => default.min(max),
            Some(asked) if asked > max => {
                refused.push(RefusedRequest {
                    resource,
                    asked,
                    granted: max,
                });
                max
            }
            Some(asked) => asked,
        };
        let site_max = |site: Option<u64>, runner: u64| site.map_or(runner, |s| s.min(runner));
        let memory_bytes = bound(
            ResourceLimits::MEMORY_BYTES,
            requested.memory_bytes,
            limits.default_memory_bytes,
            site_max(site.limits.memory_bytes, limits.max_memory_bytes),
        );
        let fuel = bound(
            ResourceLimits::FUEL,
            requested.fuel,
            limits.default_fuel,
            site_max(site.limits.fuel, limits.max_fuel),
        );
        let wall_ms = bound(
            ResourceLimits::WALL_TIME_MS,
            requested.wall_time_ms,
            duration_ms(limits.default_wall_time),
            site_max(site.limits.wall_time_ms, duration_ms(limits.max_wall_time)),
        );

        let mut denied = Vec::new();
        let mut directories = Vec::new();
        for want in &manifest.capabilities.files {
            let deny = |reason: String| Denial {
                request: format!("file {want}"),
                reason,
            };
            let Some(dir) = site.directory_for(&want.path) else {
                denied.push(deny(format!(
                    "site `{}` maps no directory at or above {}",
                    site.site, want.path
                )));
                continue;
            };
            if want.access > dir.access {
                denied.push(deny(format!(
                    "site `{}` allows only {} access to {}",
                    site.site, dir.access, dir.path
                )));
                continue;
            }
            let below = want.path.as_str()[dir.path.as_str().len()..].trim_start_matches('/');
            let host = if below.is_empty() {
                dir.host.clone()
            } else {
                dir.host.join(below)
            };
            if !host.is_dir() {
                denied.push(deny(format!(
                    "host directory {} does not exist or is not a directory (only directories can be granted)",
                    host.display()
                )));
                continue;
            }
            directories.push(DirectoryGrant {
                guest: want.path.clone(),
                host,
                access: want.access,
            });
        }
        let mut config = BTreeMap::new();
        for key in &manifest.capabilities.config {
            match site.config.get(key) {
                Some(value) => {
                    config.insert(key.clone(), value.clone());
                }
                None => denied.push(Denial {
                    request: format!("config {key}"),
                    reason: format!("site `{}` sets no value for `{key}`", site.site),
                }),
            }
        }
        let mut egress = Vec::new();
        for dest in &manifest.capabilities.egress {
            match egress_grant(dest, site) {
                Ok(grant) => egress.push(grant),
                Err(reason) => denied.push(Denial {
                    request: format!("egress {dest}"),
                    reason,
                }),
            }
        }

        Self {
            module,
            memory_bytes,
            fuel,
            wall_time: Duration::from_millis(wall_ms),
            // Compiling is part of running: the site's wall-time ceiling bounds it too.
            compile: super::CompileBudget {
                time: site.limits.wall_time_ms.map_or(limits.compile_time, |ms| {
                    limits.compile_time.min(Duration::from_millis(ms))
                }),
                memory_bytes: limits.compile_memory_bytes,
            },
            quotas: limits.quotas,
            directories,
            config,
            egress,
            refused,
            denied,
            determinism: (manifest.kind == Kind::Reproduce)
                .then(|| Determinism::for_run(module, input_sha256)),
        }
    }

    /// This grant with a fixed clock and randomness seeded from its capsule's
    /// module and `input_sha256`, as every `reproduce` run gets. It takes
    /// real time and fresh randomness away and grants nothing new.
    pub fn deterministic(mut self, input_sha256: [u8; 32]) -> Self {
        self.determinism = Some(Determinism::for_run(self.module, input_sha256));
        self
    }

    /// The module digest of the capsule this grant was computed for.
    pub fn module_digest(&self) -> [u8; 32] {
        self.module
    }

    /// Memory, all linear memories together.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }

    /// Fuel.
    pub fn fuel(&self) -> u64 {
        self.fuel
    }

    /// Wall-clock budget.
    pub fn wall_time(&self) -> Duration {
        self.wall_time
    }

    /// What compiling the capsule may take, when it is compiled in a child.
    pub fn compile_budget(&self) -> super::CompileBudget {
        self.compile
    }

    /// Output kept, evidence emitted and table size: the runner's [`Quotas`].
    pub fn quotas(&self) -> Quotas {
        self.quotas
    }

    /// Directories visible to the guest; nothing else of the host file system is.
    pub fn directories(&self) -> &[DirectoryGrant] {
        &self.directories
    }

    /// Config values the capsule may read, by key.
    pub fn config(&self) -> &BTreeMap<String, String> {
        &self.config
    }

    /// Destinations the capsule may reach, with their resolved addresses.
    pub fn egress(&self) -> &[EgressGrant] {
        &self.egress
    }

    /// Resource requests that were cut down to the ceiling.
    pub fn refused(&self) -> &[RefusedRequest] {
        &self.refused
    }

    /// Access requests that were not granted.
    pub fn denied(&self) -> &[Denial] {
        &self.denied
    }

    /// Fixed clock and seeded randomness; set for every `reproduce` capsule.
    pub fn determinism(&self) -> Option<&Determinism> {
        self.determinism.as_ref()
    }
}

/// IPv4 ranges that are not the public internet: every entry of the IANA
/// IPv4 Special-Purpose Address Registry, and multicast.
const INTERNAL_V4: &[(u32, u32)] = &[
    (0x0000_0000, 8),  // 0.0.0.0/8, "this network"
    (0x0a00_0000, 8),  // 10.0.0.0/8, private
    (0x6440_0000, 10), // 100.64.0.0/10, shared address space (CGN)
    (0x7f00_0000, 8),  // 127.0.0.0/8, loopback
    (0xa9fe_0000, 16), // 169.254.0.0/16, link local (cloud metadata)
    (0xac10_0000, 12), // 172.16.0.0/12, private
    (0xc000_0000, 24), // 192.0.0.0/24, IETF protocol assignments
    (0xc000_0200, 24), // 192.0.2.0/24, documentation
    (0xc01f_c400, 24), // 192.31.196.0/24, AS112
    (0xc034_c100, 24), // 192.52.193.0/24, AMT
    (0xc058_6300, 24), // 192.88.99.0/24, 6to4 relay anycast
    (0xc0a8_0000, 16), // 192.168.0.0/16, private
    (0xc0af_3000, 24), // 192.175.48.0/24, direct delegation AS112
    (0xc612_0000, 15), // 198.18.0.0/15, benchmarking
    (0xc633_6400, 24), // 198.51.100.0/24, documentation
    (0xcb00_7100, 24), // 203.0.113.0/24, documentation
    (0xe000_0000, 4),  // 224.0.0.0/4, multicast
    (0xf000_0000, 4),  // 240.0.0.0/4, reserved, and 255.255.255.255
];

/// IPv6 ranges that are not the public internet: every entry of the IANA IPv6
/// Special-Purpose Address Registry, the deprecated IPv4-compatible range, and
/// multicast. Every form that embeds an IPv4 address (mapped, compatible,
/// NAT64, 6to4, Teredo) is in it whole.
const INTERNAL_V6: &[(u128, u32)] = &[
    (0, 96),                           // ::/96: unspecified, ::1 and IPv4-compatible
    (0xffff_0000_0000, 96),            // ::ffff:0:0/96, IPv4-mapped
    (0x0064_ff9b_u128 << 96, 96),      // 64:ff9b::/96, NAT64
    (0x0064_ff9b_0001_u128 << 80, 48), // 64:ff9b:1::/48, local-use NAT64
    (0x0100_u128 << 112, 63),          // 100::/64 discard and 100:0:0:1::/64 dummy
    (0x2001_u128 << 112, 23),          // 2001::/23, IETF protocol assignments (Teredo, ORCHID)
    (0x2001_0db8_u128 << 96, 32),      // 2001:db8::/32, documentation
    (0x2002_u128 << 112, 16),          // 2002::/16, 6to4
    (0x2620_004f_8000_u128 << 80, 48), // 2620:4f:8000::/48, direct delegation AS112
    (0x3fff_u128 << 112, 20),          // 3fff::/20, documentation
    (0x5f00_u128 << 112, 16),          // 5f00::/16, segment routing SIDs
    (0xfc00_u128 << 112, 7),           // fc00::/7, unique local
    (0xfe80_u128 << 112, 10),          // fe80::/10, link local
    (0xff00_u128 << 112, 8),           // ff00::/8, multicast
];

/// True for addresses that are not the public internet: this machine (its
/// loopback and every address of its own interfaces), private networks, and
/// every IANA special-purpose range, including IPv6 forms embedding IPv4.
pub(crate) fn is_internal(ip: IpAddr) -> bool {
    let special = match ip {
        IpAddr::V4(a) => {
            let a = u32::from(a);
            INTERNAL_V4
                .iter()
                .any(|&(net, len)| a >> (32 - len) == net >> (32 - len))
        }
        IpAddr::V6(a) => {
            let a = u128::from(a);
            INTERNAL_V6
                .iter()
                .any(|&(net, len)| a >> (128 - len) == net >> (128 - len))
        }
    };
    special || is_own_address(ip)
}

/// True when `ip` is one of this host's own addresses: only those can be bound.
fn is_own_address(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// Grants `dest` if the site allows it: resolves it once, and refuses
/// internal addresses unless the site names the destination exactly.
/// The grant of `dest` under `site`'s egress rules (resolved once; an internal
/// address only through an exact entry), or why it is refused.
pub(crate) fn egress_grant(dest: &Destination, site: &SitePolicy) -> Result<EgressGrant, String> {
    let patterns: Vec<_> = site.egress.iter().filter(|p| p.covers(dest)).collect();
    if patterns.is_empty() {
        return Err(format!(
            "site `{}` does not allow egress to {dest}",
            site.site
        ));
    }
    let host = dest.host();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut addresses: Vec<SocketAddr> = (host, dest.port())
        .to_socket_addrs()
        .map_err(|e| format!("could not resolve {dest}: {e}"))?
        .collect();
    addresses.sort();
    addresses.dedup();
    if addresses.is_empty() {
        return Err(format!("{dest} resolves to no address"));
    }
    let exact = patterns.iter().any(|p| p.is_exact());
    if let Some(internal) = addresses.iter().find(|a| is_internal(a.ip()))
        && !exact
    {
        return Err(format!(
            "{dest} resolves to {internal}, an internal address (this host's own, loopback, private, or another IANA special-purpose range), which only an exact entry (one host, one port) in the site policy can grant"
        ));
    }
    Ok(EgressGrant {
        destination: dest.clone(),
        addresses,
    })
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn internal(s: &str) -> bool {
        is_internal(s.parse().unwrap())
    }

    /// Issue 12 §6: each address a wildcard entry used to grant is internal.
    #[test]
    fn every_special_purpose_range_and_embedded_ipv4_form_is_internal() {
        for a in [
            "198.18.0.1",
            "198.19.255.254",
            "240.0.0.1",
            "255.255.255.255",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "::7f00:1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "2002:7f00:1::1",
            "2001::1",
            "2001:db8::1",
            "100::1",
            "0.1.2.3",
            "169.254.169.254",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "203.0.113.9",
            "100.64.0.1",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::1",
            "::",
        ] {
            assert!(internal(a), "{a} must be internal");
        }
        for a in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "2a00:1450::1",
        ] {
            assert!(!internal(a), "{a} is a public address");
        }
    }

    /// Issue 12 §6: the host's own address (a service bound to 0.0.0.0 answers on it) is internal.
    #[test]
    fn the_hosts_own_addresses_are_internal() {
        let own = std::net::UdpSocket::bind("0.0.0.0:0")
            .and_then(|s| s.connect("192.0.2.1:9").map(|()| s))
            .and_then(|s| s.local_addr());
        // No route at all leaves only loopback, which is internal anyway.
        if let Ok(own) = own {
            assert!(is_internal(own.ip()), "{own} is this host's own address");
        }
        assert!(is_own_address("127.0.0.1".parse().unwrap()));
        assert!(!is_own_address("192.0.2.1".parse().unwrap()));
    }
}
