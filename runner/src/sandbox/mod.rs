//! The sandbox: runs a [`VerifiedCapsule`] under Wasmtime with nothing granted
//! but what its [`Grant`] names.
//!
//! It takes only `&VerifiedCapsule` — never raw bytes — so nothing unverified
//! can be compiled here. It does not write evidence: it returns a
//! [`RunReport`] that the caller records. By default a capsule gets no files,
//! no network, no environment variables, no arguments and no stdin; see
//! [`Limits`] for every bounded resource and its default.
//!
//! This file is the engine: the Wasmtime engine and linker, the epoch ticker
//! behind the wall-clock deadline, and [`Sandbox::run`], which applies a
//! grant (memory, fuel, deadline, files, sockets, output capture) and
//! classifies how the run ended. What is granted is decided in `grant.rs`,
//! the runner's numbers live in `limits.rs`, what a run produced in
//! `report.rs`, and the host side of the capsule contract
//! (`capsule-sdk/wit/capsule.wit`) in `host.rs`.

mod cache;
mod determinism;
mod grant;
mod host;
mod http;
mod limits;
mod output;
mod report;

pub use cache::{CACHE_KEY_PURPOSE, CodeCache, CodeSource};
pub use determinism::{Determinism, FIXED_WALL_CLOCK_SECS};
pub use grant::{Denial, DirectoryGrant, EgressGrant, Grant, RefusedRequest};
pub use host::{EvidenceItem, Finding, Outcome, Severity, Verdict};
pub use limits::{Limits, Quotas};
pub use output::StreamSummary;
pub use report::{RunReport, RunStatus};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, Trap};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use crate::capsule::Access;
use crate::trust::VerifiedCapsule;

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
    /// The capsule lacks an export every capsule has (`kind`, `run`).
    #[error(
        "capsule `{capsule}` cannot start: {detail}. It does not export the `edge-runner:capsule` world's `kind` and `run` functions; build it with capsule-sdk's `#[capsule_sdk::test]` (or `reproduce`, `remediate`) attribute"
    )]
    MissingExport {
        /// Capsule name and version.
        capsule: String,
        /// Wasmtime's message, which names the export.
        detail: String,
    },
    /// The grant was computed for another capsule.
    #[error(
        "capsule `{capsule}` (module {module}) cannot run under a grant computed for module {granted}; a grant is computed for one capsule, so recompute it with `Grant::compute` for this one"
    )]
    GrantForAnotherCapsule {
        /// Capsule name and version.
        capsule: String,
        /// The capsule's module digest, short hex.
        module: String,
        /// The module digest the grant was computed for, short hex.
        granted: String,
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
        if grant.module_digest() != capsule.module_digest() {
            return Err(SandboxError::GrantForAnotherCapsule {
                capsule: label,
                module: short_hex(&capsule.module_digest()),
                granted: short_hex(&grant.module_digest()),
            });
        }
        let (pre, code) = self.prepare(capsule, &label)?;

        let stdout = output::Capture::new(grant.quotas.stdout_bytes);
        let stderr = output::Capture::new(grant.quotas.stderr_bytes);
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
        // Imports were all satisfied above; what fails here is a missing export.
        let pre = host::CapsulePre::new(pre).map_err(|e| SandboxError::MissingExport {
            capsule: label.to_string(),
            detail: format!("{e:#}"),
        })?;
        let mut warm = self.warm.lock().unwrap_or_else(|p| p.into_inner());
        if warm.len() >= MAX_WARM_CAPSULES {
            warm.clear();
        }
        warm.insert(module, pre.clone());
        Ok((pre, source))
    }
}

/// The first 8 bytes of a digest in hex, as digests are shown in messages.
fn short_hex(digest: &[u8; 32]) -> String {
    hex::encode(&digest[..8])
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
