//! The sandbox: runs a [`VerifiedCapsule`] under Wasmtime with nothing granted
//! but what its [`Grant`] names.
//!
//! Owns the Wasmtime engine, the linker, resource accounting (memory, fuel,
//! wall-clock deadline by epoch interruption), output capture and the host
//! side of the capsule contract (`capsule-sdk/wit/capsule.wit`). It takes
//! only `&VerifiedCapsule` — never raw bytes — so nothing unverified can be
//! compiled here. It does not write evidence: it returns a [`RunReport`] that
//! the caller records. By default a capsule gets no files, no network, no
//! environment variables, no arguments and no stdin; see [`Limits`] for every
//! bounded resource and its default.

mod cache;
mod determinism;
mod host;
mod http;
mod output;

pub use cache::{CACHE_KEY_PURPOSE, CodeCache, CodeSource};
pub use determinism::{Determinism, FIXED_WALL_CLOCK_SECS};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, Trap};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::capsule::{AbsPath, Access, Kind, Manifest};
use crate::site::SitePolicy;
use crate::trust::VerifiedCapsule;

pub use host::{EvidenceItem, Finding, Outcome, Severity, Verdict};
pub use output::StreamSummary;

/// How often the epoch ticker advances; the wall-clock deadline's resolution.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Most refused network attempts recorded per run; later ones are not listed.
const MAX_RECORDED_DENIALS: usize = 64;

/// Notes a refused network use (raw socket or HTTP request), up to the cap.
fn record_denial(denied: &std::sync::Mutex<Vec<String>>, what: String) {
    let mut d = denied.lock().unwrap_or_else(|p| p.into_inner());
    if d.len() < MAX_RECORDED_DENIALS {
        d.push(what);
    }
}

/// How long past its deadline a run blocked in a host call is abandoned.
const HOST_CALL_GRACE: Duration = Duration::from_millis(100);

/// Marks a run abandoned while blocked in a host call.
#[derive(Debug)]
struct BlockedPastDeadline;

impl std::fmt::Display for BlockedPastDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline")
    }
}

/// Every bounded resource a run can use: the runner's ceiling for what a
/// capsule may be granted, and the default when its manifest asks for nothing.
///
/// | limit | default |
/// |---|---|
/// | `memory_bytes` (all linear memories together) | 64 MiB (ceiling 1 GiB) |
/// | `fuel` (≈ WebAssembly instructions) | 1 000 000 000 (ceiling 20 000 000 000) |
/// | `wall_time` | 10 s (ceiling 5 min) |
/// | `stdout_bytes`, `stderr_bytes` kept (the rest is counted and hashed, not kept) | 64 KiB each |
/// | `evidence_items` per run | 64 |
/// | `evidence_bytes` per run, all items together | 1 MiB |
/// | `evidence_inline_bytes` (items up to this size are stored whole in the record) | 4 KiB |
/// | `table_elements` per table | 100 000 |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Default memory when the manifest asks for none.
    pub default_memory_bytes: u64,
    /// Most memory any capsule may be granted.
    pub max_memory_bytes: u64,
    /// Default fuel.
    pub default_fuel: u64,
    /// Most fuel any capsule may be granted.
    pub max_fuel: u64,
    /// Default wall-clock budget.
    pub default_wall_time: Duration,
    /// Longest wall-clock budget any capsule may be granted.
    pub max_wall_time: Duration,
    /// Bytes of stdout kept.
    pub stdout_bytes: usize,
    /// Bytes of stderr kept.
    pub stderr_bytes: usize,
    /// Evidence items a run may emit.
    pub evidence_items: u32,
    /// Total evidence bytes a run may emit.
    pub evidence_bytes: u64,
    /// Items up to this size are stored whole in the evidence record.
    pub evidence_inline_bytes: usize,
    /// Elements per table.
    pub table_elements: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            default_memory_bytes: 64 << 20,
            max_memory_bytes: 1 << 30,
            default_fuel: 1_000_000_000,
            max_fuel: 20_000_000_000,
            default_wall_time: Duration::from_secs(10),
            max_wall_time: Duration::from_secs(300),
            stdout_bytes: 64 << 10,
            stderr_bytes: 64 << 10,
            evidence_items: 64,
            evidence_bytes: 1 << 20,
            evidence_inline_bytes: 4 << 10,
            table_elements: 100_000,
        }
    }
}

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
    pub destination: crate::capsule::Destination,
    /// Its addresses, resolved once by the runner.
    pub addresses: Vec<std::net::SocketAddr>,
}

/// Access a capsule asked for and did not get, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// What was asked for, e.g. `file /var/log (read-only)`.
    pub request: String,
    /// Why it was not granted.
    pub reason: String,
}

/// What one run is allowed: the capsule's signed request (already within
/// its signers' ceilings) intersected with the site policy and bounded by
/// the runner's [`Limits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Memory, all linear memories together.
    pub memory_bytes: u64,
    /// Fuel.
    pub fuel: u64,
    /// Wall-clock budget.
    pub wall_time: Duration,
    /// Stdout bytes kept.
    pub stdout_bytes: usize,
    /// Stderr bytes kept.
    pub stderr_bytes: usize,
    /// Evidence items.
    pub evidence_items: u32,
    /// Evidence bytes.
    pub evidence_bytes: u64,
    /// Inline evidence size.
    pub evidence_inline_bytes: usize,
    /// Elements per table.
    pub table_elements: usize,
    /// Directories visible to the guest; nothing else of the host file system is.
    pub directories: Vec<DirectoryGrant>,
    /// Config values the capsule may read, by key.
    pub config: BTreeMap<String, String>,
    /// TCP destinations the capsule may connect to.
    pub egress: Vec<EgressGrant>,
    /// Resource requests that were cut down to the ceiling.
    pub refused: Vec<RefusedRequest>,
    /// Access requests that were not granted.
    pub denied: Vec<Denial>,
    /// Fixed clock and seeded randomness; set for every `reproduce` capsule.
    pub determinism: Option<Determinism>,
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

impl Grant {
    /// Intersects `manifest`'s request with `site` and bounds it by `limits`;
    /// a `reproduce` capsule runs deterministically, seeded from its module and `input_sha256`.
    pub fn compute(
        manifest: &Manifest,
        limits: &Limits,
        site: &SitePolicy,
        input_sha256: [u8; 32],
    ) -> Self {
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
            "memory-bytes",
            requested.memory_bytes,
            limits.default_memory_bytes,
            site_max(site.limits.memory_bytes, limits.max_memory_bytes),
        );
        let fuel = bound(
            "fuel",
            requested.fuel,
            limits.default_fuel,
            site_max(site.limits.fuel, limits.max_fuel),
        );
        let wall_ms = bound(
            "wall-time-ms",
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
            memory_bytes,
            fuel,
            wall_time: Duration::from_millis(wall_ms),
            stdout_bytes: limits.stdout_bytes,
            stderr_bytes: limits.stderr_bytes,
            evidence_items: limits.evidence_items,
            evidence_bytes: limits.evidence_bytes,
            evidence_inline_bytes: limits.evidence_inline_bytes,
            table_elements: limits.table_elements,
            directories,
            config,
            egress,
            refused,
            denied,
            determinism: (manifest.kind == Kind::Reproduce)
                .then(|| Determinism::for_run(manifest.module_sha256, input_sha256)),
        }
    }
}

/// True for addresses that reach this machine or a private network.
fn is_internal(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(a) => {
            a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || a.octets()[0] == 100 && (a.octets()[1] & 0xc0) == 64 // 100.64.0.0/10, shared
        }
        std::net::IpAddr::V6(a) => {
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
fn egress_grant(
    dest: &crate::capsule::Destination,
    site: &SitePolicy,
) -> Result<EgressGrant, String> {
    use std::net::ToSocketAddrs;
    let patterns: Vec<_> = site.egress.iter().filter(|p| p.covers(dest)).collect();
    if patterns.is_empty() {
        return Err(format!(
            "site `{}` does not allow egress to {dest}",
            site.site
        ));
    }
    let host = dest.host();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut addresses: Vec<std::net::SocketAddr> = (host, dest.port())
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

/// Why the sandbox could not run a capsule at all (as opposed to a run that ended badly).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// Wasmtime could not be configured.
    #[error("could not set up the WebAssembly engine: {0}")]
    Engine(String),
    /// The verified bytes do not compile as a component.
    #[error("capsule `{capsule}` does not compile as a WebAssembly component: {detail}")]
    Compile {
        /// Capsule name and version.
        capsule: String,
        /// Wasmtime's message.
        detail: String,
    },
    /// The capsule imports something the runner does not provide.
    #[error(
        "capsule `{capsule}` cannot start: {detail}. It needs an import that this runner does not grant; capsules may import only WASI 0.2 and `edge-runner:capsule/host`"
    )]
    Link {
        /// Capsule name and version.
        capsule: String,
        /// Wasmtime's message, which names the import.
        detail: String,
    },
    /// A granted resource could not be provided (e.g. a granted directory vanished).
    #[error("capsule `{capsule}` cannot start: {detail}")]
    Grant {
        /// Capsule name and version.
        capsule: String,
        /// What could not be provided.
        detail: String,
    },
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// The capsule returned an outcome.
    Completed,
    /// The capsule trapped (including a panic or `exit`).
    Trap,
    /// The fuel budget ran out.
    OutOfFuel,
    /// The wall-clock deadline passed.
    Deadline,
    /// The capsule trapped after a memory growth was refused.
    MemoryRefused,
    /// The code's declared kind differs from the signed manifest's.
    KindMismatch,
    /// The capsule returned an outcome, but wrote more to stdout or stderr
    /// than its grant keeps; the excess was counted and hashed, not kept.
    OutputOverflow,
}

impl RunStatus {
    /// The name used in evidence.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Completed => "completed",
            RunStatus::Trap => "trap",
            RunStatus::OutOfFuel => "out-of-fuel",
            RunStatus::Deadline => "deadline",
            RunStatus::MemoryRefused => "memory-refused",
            RunStatus::KindMismatch => "kind-mismatch",
            RunStatus::OutputOverflow => "output-overflow",
        }
    }
}

/// Everything a run produced and used.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// How it ended.
    pub status: RunStatus,
    /// The capsule's outcome, when it returned one.
    pub outcome: Option<Outcome>,
    /// What went wrong, when it did not complete.
    pub error: Option<String>,
    /// Fuel consumed.
    pub fuel_used: u64,
    /// Highest total linear memory reached, in bytes.
    pub peak_memory_bytes: u64,
    /// Memory growth requests refused (each: bytes requested in total).
    pub memory_denials: Vec<u64>,
    /// Wall-clock time from instantiation to return.
    pub wall_time: Duration,
    /// Captured stdout.
    pub stdout: StreamSummary,
    /// Captured stderr.
    pub stderr: StreamSummary,
    /// Evidence items the capsule emitted.
    pub evidence: Vec<EvidenceItem>,
    /// Evidence emissions refused because the quota was spent.
    pub evidence_refused: u32,
    /// Where the compiled code came from.
    pub code: CodeSource,
    /// Network uses the capsule attempted and was refused (`TcpConnect 10.0.0.1:80`), at most 64.
    pub egress_denied: Vec<String>,
}

/// A Wasmtime engine configured for capsules, with its epoch ticker.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<host::State>,
    /// Drives the async calls into capsules (WASI's blocking operations run on it).
    runtime: tokio::runtime::Runtime,
    cache: Option<CodeCache>,
    compat: [u8; 32],
    /// Ready-to-instantiate capsules by module digest, so a warm run skips compiling and linking.
    warm: std::sync::Mutex<std::collections::HashMap<[u8; 32], host::CapsulePre<host::State>>>,
    ticker_stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Creates the engine (fuel metering and epoch interruption on) and the linker.
    pub fn new() -> Result<Self, SandboxError> {
        let mut config = Config::new();
        config.consume_fuel(true);
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        // Bounded native stack for guests: deep recursion traps instead of crashing the runner.
        config.max_wasm_stack(1 << 20);
        // NaN bit patterns differ between CPUs; canonical NaNs make float results reproducible.
        config.cranelift_nan_canonicalization(true);
        let engine = Engine::new(&config).map_err(|e| SandboxError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| SandboxError::Engine(e.to_string()))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| SandboxError::Engine(e.to_string()))?;
        host::add_to_linker(&mut linker).map_err(|e| SandboxError::Engine(e.to_string()))?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.clone();
            let stop = Arc::clone(&ticker_stop);
            std::thread::Builder::new()
                .name("edge-runner-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| {
                    SandboxError::Engine(format!("could not start the epoch ticker: {e}"))
                })?
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SandboxError::Engine(format!("could not start the async runtime: {e}")))?;
        Ok(Self {
            compat: cache::compatibility(&engine),
            runtime,
            engine,
            linker,
            cache: None,
            warm: std::sync::Mutex::new(std::collections::HashMap::new()),
            ticker_stop,
            ticker: Some(ticker),
        })
    }

    /// Runs `capsule` on `input` within `grant`.
    pub fn run(
        &self,
        capsule: &VerifiedCapsule,
        grant: &Grant,
        input: &[u8],
    ) -> Result<RunReport, SandboxError> {
        let manifest = capsule.manifest();
        let label = format!("{} {}", manifest.name, manifest.version);
        let (pre, code) = self.prepare(capsule, &label)?;

        let stdout = output::Capture::new(grant.stdout_bytes);
        let stderr = output::Capture::new(grant.stderr_bytes);
        let mut builder = WasiCtxBuilder::new();
        builder.stdout(stdout.clone()).stderr(stderr.clone());
        for dir in &grant.directories {
            let perms = match dir.access {
                Access::ReadOnly => FsPerms::ReadOnly,
                Access::ReadWrite => FsPerms::ReadWrite,
            };
            builder
                .preopened_dir(&dir.host, dir.guest.as_str(), perms)
                .map_err(|e| SandboxError::Grant {
                    capsule: label.clone(),
                    detail: format!(
                        "could not open granted directory {} for {}: {e:#}",
                        dir.host.display(),
                        dir.guest
                    ),
                })?;
        }
        if let Some(determinism) = &grant.determinism {
            determinism.apply(&mut builder);
        }
        // TCP is switched on so that every attempt reaches this check, which
        // allows only connections to granted addresses and records the rest.
        let allowed: Vec<std::net::SocketAddr> = grant
            .egress
            .iter()
            .filter(|g| g.destination.allows_tcp())
            .flat_map(|g| g.addresses.iter().copied())
            .collect();
        let egress_denied = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        {
            let denied = Arc::clone(&egress_denied);
            builder
                .allow_tcp(true)
                .allow_udp(false)
                .allow_ip_name_lookup(grant.egress.iter().any(|g| g.destination.allows_tcp()))
                .socket_addr_check(move |addr, usage| {
                    let ok = match usage {
                        SocketAddrUse::TcpConnect => allowed.contains(&addr),
                        // The implicit bind before a connect names the wildcard address.
                        SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
                        _ => false,
                    };
                    if !ok {
                        record_denial(&denied, format!("{usage:?} {addr}"));
                    }
                    Box::pin(async move { ok })
                });
        }
        let wasi: WasiCtx = builder.build();
        let hooks = http::EgressHooks::new(grant.egress.clone(), Arc::clone(&egress_denied));
        let state = host::State::new(wasi, ResourceTable::new(), grant, hooks);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store
            .set_fuel(grant.fuel)
            .map_err(|e| SandboxError::Engine(e.to_string()))?;
        let ticks = grant.wall_time.as_millis().div_ceil(EPOCH_TICK.as_millis()) + 1;
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
        store.epoch_deadline_trap();

        let started = Instant::now();
        let call = async {
            let bindings = pre.instantiate_async(&mut store).await?;
            let declared = bindings.call_kind(&mut store).await?;
            let declared = host::kind_from_wit(declared);
            if declared != manifest.kind {
                return Ok(Err((declared, manifest.kind)));
            }
            Ok(Ok(bindings.call_run(&mut store, input).await?))
        };
        // Epoch interruption stops guest code at the deadline, but not a guest
        // blocked inside a host call (a sleep, a read): this timeout abandons the
        // call itself, so no run outlives its wall-clock grant by more than the grace.
        let limit = grant.wall_time + HOST_CALL_GRACE;
        let result: Result<Result<_, _>, wasmtime::Error> = match self
            .runtime
            .block_on(async { tokio::time::timeout(limit, call).await })
        {
            Ok(result) => result,
            Err(_) => Err(wasmtime::Error::msg(format!(
                "blocked in a host call past the wall-clock deadline ({} ms); the call was abandoned",
                grant.wall_time.as_millis()
            ))
            .context(BlockedPastDeadline)),
        };
        let wall_time = started.elapsed();
        let fuel_left = store.get_fuel().unwrap_or(0);
        let state = store.into_data();

        let (status, outcome, error) = match result {
            Ok(Ok(outcome)) => (
                RunStatus::Completed,
                Some(host::outcome_from_wit(outcome)),
                None,
            ),
            Ok(Err((declared, signed))) => (
                RunStatus::KindMismatch,
                None,
                Some(format!(
                    "the code declares kind `{declared}` but the signed manifest says `{signed}`"
                )),
            ),
            Err(err) => {
                let status = match err.downcast_ref::<Trap>() {
                    Some(Trap::OutOfFuel) => RunStatus::OutOfFuel,
                    Some(Trap::Interrupt) => RunStatus::Deadline,
                    _ if err.downcast_ref::<BlockedPastDeadline>().is_some() => RunStatus::Deadline,
                    _ if !state.limiter.denials.is_empty() => RunStatus::MemoryRefused,
                    _ => RunStatus::Trap,
                };
                (status, None, Some(format!("{err:#}")))
            }
        };
        let (stdout, stderr) = (stdout.summary(), stderr.summary());
        let status = if status == RunStatus::Completed && (stdout.truncated || stderr.truncated) {
            RunStatus::OutputOverflow
        } else {
            status
        };
        Ok(RunReport {
            status,
            outcome,
            error,
            fuel_used: grant.fuel.saturating_sub(fuel_left),
            peak_memory_bytes: state.limiter.peak,
            memory_denials: state.limiter.denials.clone(),
            wall_time,
            stdout,
            stderr,
            evidence: state.evidence,
            evidence_refused: state.evidence_refused,
            code,
            egress_denied: egress_denied
                .lock()
                .map(|d| d.clone())
                .unwrap_or_else(|p| p.into_inner().clone()),
        })
    }

    /// Keeps compiled code in `cache` between processes (authenticated; see [`CodeCache`]).
    pub fn set_code_cache(&mut self, cache: CodeCache) {
        self.cache = Some(cache);
    }

    /// A capsule ready to instantiate: from memory, the disk cache, or compiled now.
    fn prepare(
        &self,
        capsule: &VerifiedCapsule,
        label: &str,
    ) -> Result<(host::CapsulePre<host::State>, CodeSource), SandboxError> {
        let module = capsule.module_digest();
        let warm = |s: &Self| {
            s.warm
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&module)
                .cloned()
        };
        if let Some(pre) = warm(self) {
            return Ok((pre, CodeSource::Memory));
        }
        let mut source = CodeSource::Compiled;
        let mut component = None;
        if let Some(cache) = &self.cache {
            match cache.load(&self.engine, &module, &self.compat) {
                Ok(Some(c)) => {
                    component = Some(c);
                    source = CodeSource::Disk;
                }
                Ok(None) => {}
                Err(reason) => source = CodeSource::Recompiled(reason),
            }
        }
        let component = match component {
            Some(c) => c,
            None => {
                let c = Component::new(&self.engine, capsule.bytes()).map_err(|e| {
                    SandboxError::Compile {
                        capsule: label.to_string(),
                        detail: format!("{e:#}"),
                    }
                })?;
                if let Some(cache) = &self.cache
                    && let Err(e) = cache.store(&c, &module, &self.compat)
                {
                    tracing::warn!("could not write the code cache: {e}");
                }
                c
            }
        };
        let link = |e: wasmtime::Error| SandboxError::Link {
            capsule: label.to_string(),
            detail: format!("{e:#}"),
        };
        let pre = self.linker.instantiate_pre(&component).map_err(link)?;
        let pre = host::CapsulePre::new(pre).map_err(link)?;
        let mut warm = self.warm.lock().unwrap_or_else(|p| p.into_inner());
        if warm.len() >= MAX_WARM_CAPSULES {
            warm.clear();
        }
        warm.insert(module, pre.clone());
        Ok((pre, source))
    }
}

/// Most capsules kept ready in memory at once.
const MAX_WARM_CAPSULES: usize = 64;

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}
