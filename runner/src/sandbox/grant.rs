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

/// True for addresses that reach this machine or a private network.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || a.octets()[0] == 100 && (a.octets()[1] & 0xc0) == 64 // 100.64.0.0/10, shared
        }
        IpAddr::V6(a) => {
            a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (a.segments()[0] & 0xfe00) == 0xfc00 // fc00::/7, unique local
                || (a.segments()[0] & 0xffc0) == 0xfe80 // fe80::/10, link local
                || a.to_ipv4_mapped().is_some_and(|v4| is_internal(v4.into()))
        }
    }
}

/// Grants `dest` if the site allows it: resolves it once, and refuses
/// internal addresses unless the site names the destination exactly.
fn egress_grant(dest: &Destination, site: &SitePolicy) -> Result<EgressGrant, String> {
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
            "{dest} resolves to {internal}, a loopback or private address, which only an exact entry (one host, one port) in the site policy can grant"
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
