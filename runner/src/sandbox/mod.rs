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
mod clocks;
mod compile;
mod determinism;
mod files;
mod grant;
mod host;
mod host_budget;
mod http;
mod limits;
mod network;
mod output;
mod report;

pub use cache::{CACHE_KEY_PURPOSE, CodeCache, CodeSource};
pub use compile::{COMPILE_CHILD_ARG, CompileBudget, Compiler, compile_child_main};
pub use determinism::{Determinism, FIXED_WALL_CLOCK_SECS};
pub(crate) use grant::egress_grant;
pub use grant::{Denial, DirectoryGrant, EgressGrant, Grant, RefusedRequest};
pub use host::{EvidenceItem, Finding, Outcome, Severity, Verdict};
pub(crate) use http::send_exact;
pub use limits::{Limits, Quotas};
pub use output::StreamSummary;
pub(crate) use report::cut;
pub use report::{Refusals, RunReport, RunStatus};

use std::sync::Arc;

use sha2::Digest;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, Trap};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use crate::capsule::Access;
use crate::trust::VerifiedCapsule;

/// The run was told to stop (`Sandbox::run_until`).
#[derive(Debug)]
struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the run was stopped by the runner (a cancel or a shutdown)")
    }
}

impl std::error::Error for Stopped {}

/// `call`, or [`Stopped`] once `stop` is set (looked at every epoch tick):
/// ends a guest blocked in a host call, which the epoch check cannot reach.
async fn until_stopped<T>(
    call: impl std::future::Future<Output = wasmtime::Result<T>>,
    stop: Option<&Arc<AtomicBool>>,
) -> wasmtime::Result<T> {
    let Some(stop) = stop else {
        return call.await;
    };
    let mut call = std::pin::pin!(call);
    let mut tick = tokio::time::interval(EPOCH_TICK);
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(out) = call.as_mut().poll(cx) {
            return std::task::Poll::Ready(out);
        }
        while tick.poll_tick(cx).is_ready() {
            if stop.load(Ordering::Relaxed) {
                return std::task::Poll::Ready(Err(wasmtime::Error::new(Stopped)));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// How often the epoch ticker advances; the wall-clock deadline's resolution.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The refused network uses of one run, shared by the socket check, the
/// name lookup and the HTTP hooks.
#[derive(Clone)]
pub(crate) struct DenialLog {
    refusals: Arc<std::sync::Mutex<Refusals>>,
    quotas: Quotas,
}

impl DenialLog {
    fn new(quotas: Quotas) -> Self {
        Self {
            refusals: Arc::default(),
            quotas,
        }
    }

    /// Counts a refused network use (raw socket, name lookup or HTTP request).
    pub(crate) fn note(&self, what: &str) {
        self.refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .note(what, &self.quotas);
    }

    fn take(&self) -> Refusals {
        self.refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
    /// Compiling the capsule exceeded its compile budget; it was stopped and is refused.
    #[error(
        "capsule `{capsule}` was refused: {detail}. Its compile budget comes from the runner's `Limits` (compile time bounded by the site's wall-time ceiling); a component that takes this much to compile is hostile or needs splitting"
    )]
    CompileLimit {
        /// Capsule name and version.
        capsule: String,
        /// Which budget, and how large it was.
        detail: String,
        /// How long the compile ran before it was stopped.
        compile_time: Duration,
    },
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
    /// Everything a capsule may import, `wasi:http` included.
    linker: Linker<host::State>,
    /// The same without `wasi:http`: a run with no HTTP egress grant gets
    /// these, its `wasi:http` imports trapping when called, so not even its
    /// types (fields, requests, bodies) can hold host memory.
    without_http: Linker<host::State>,
    /// Drives the async calls into capsules (WASI's blocking operations run on it).
    runtime: tokio::runtime::Runtime,
    cache: Option<CodeCache>,
    /// Where code that is not cached is compiled (in a bounded child, or here).
    compiler: Compiler,
    compat: [u8; 32],
    /// Ready-to-instantiate capsules by module digest, so a warm run skips compiling and linking.
    /// Keyed by module digest and whether `wasi:http` is linked.
    warm: std::sync::Mutex<WarmCapsules>,
    ticker_stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Creates the engine (fuel metering and epoch interruption on) and the
    /// linker, with room for [`DEFAULT_SLOTS`] runs at once.
    pub fn new() -> Result<Self, SandboxError> {
        Self::with_slots(DEFAULT_SLOTS)
    }

    /// Like [`Sandbox::new`], with room for `slots` runs at once: the
    /// instances, memories, tables and fiber stacks of that many runs are
    /// kept in a pool and reused, so a warm run maps and unmaps nothing (see
    /// [`pooled_config`]). `serve` passes its `queue.concurrency`. A run past
    /// the pool's room, or a capsule over its per-run bounds, is refused at
    /// instantiation with an error naming the bound.
    ///
    /// The pool reserves address space up front (4 GiB and a guard per
    /// memory slot). Where that reservation is refused (an address-space
    /// rlimit, a tool such as valgrind) the sandbox allocates per run instead,
    /// with the same limits, and says so in a warning.
    pub fn with_slots(slots: u32) -> Result<Self, SandboxError> {
        let engine = match Engine::new(&pooled_config(slots.max(1))) {
            Ok(engine) => engine,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "the instance pool's address space could not be reserved; allocating per run (slower, same limits)"
                );
                Engine::new(&engine_config()).map_err(|e| SandboxError::Engine(e.to_string()))?
            }
        };
        let engine_error = |e: wasmtime::Error| SandboxError::Engine(e.to_string());
        let mut without_http = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut without_http).map_err(engine_error)?;
        host::add_to_linker(&mut without_http).map_err(engine_error)?;
        network::add_to_linker(&mut without_http).map_err(engine_error)?;
        clocks::add_to_linker(&mut without_http).map_err(engine_error)?;
        files::add_to_linker(&mut without_http).map_err(engine_error)?;
        let mut linker = without_http.clone();
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(engine_error)?;
        host_budget::add_to_linker(&mut linker).map_err(engine_error)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.clone();
            let stop = Arc::clone(&ticker_stop);
            std::thread::Builder::new()
                .name("edge-runner-epoch".into())
                .spawn(move || {
                    // Parked, not asleep: `Drop` unparks it, so dropping a
                    // sandbox does not wait out the rest of a tick. A wake-up
                    // before the tick is up (spurious, or that unpark) ticks nothing.
                    let mut next = Instant::now() + EPOCH_TICK;
                    while !stop.load(Ordering::Relaxed) {
                        let now = Instant::now();
                        if now < next {
                            std::thread::park_timeout(next - now);
                            continue;
                        }
                        next = now + EPOCH_TICK;
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
            without_http,
            cache: None,
            compiler: Compiler::default(),
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
        self.run_until(capsule, grant, input, None)
    }

    /// Runs `capsule` on `input` within `grant`, stopping it (status
    /// [`RunStatus::Interrupted`]) within one epoch tick of `stop` being set:
    /// the daemon's cancel and shutdown. Guest code is stopped by the epoch
    /// check, a guest blocked in a host call by abandoning the call.
    pub fn run_until(
        &self,
        capsule: &VerifiedCapsule,
        grant: &Grant,
        input: &[u8],
        stop: Option<&Arc<AtomicBool>>,
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
        let http = grant
            .egress
            .iter()
            .any(|g| g.destination.allows_http(false) || g.destination.allows_http(true));
        let preparing = Instant::now();
        let (pre, code, compile_time) = self.prepare(capsule, &label, http, grant.compile)?;
        let prepare_time = preparing.elapsed();

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
        let egress_denied = DenialLog::new(grant.quotas);
        {
            let denied = egress_denied.clone();
            builder
                .allow_tcp(true)
                .allow_udp(false)
                // Lookups reach Wasmtime only as IP literals (see `network.rs`).
                .allow_ip_name_lookup(true)
                .socket_addr_check(move |addr, usage| {
                    let ok = match usage {
                        SocketAddrUse::TcpConnect => allowed.contains(&addr),
                        // The implicit bind before a connect names the wildcard address.
                        SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
                        _ => false,
                    };
                    if !ok {
                        denied.note(&format!("{usage:?} {addr}"));
                    }
                    Box::pin(async move { ok })
                });
        }
        let wasi: WasiCtx = builder.build();
        let hooks = http::EgressHooks::new(
            grant.egress.clone(),
            egress_denied.clone(),
            grant.quotas.http_body_chunk_bytes,
        );
        let network = network::NetworkPolicy::new(&grant.egress, egress_denied.clone());
        let file_budget = files::FileBudget::new(grant.quotas);
        let mut table = ResourceTable::new();
        table.set_max_capacity(grant.quotas.host_resources);
        let state = host::State::new(wasi, table, grant, hooks, network, file_budget.clone());
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store
            .set_fuel(grant.fuel)
            .map_err(|e| SandboxError::Engine(e.to_string()))?;
        let ticks = grant.wall_time.as_millis().div_ceil(EPOCH_TICK.as_millis()) + 1;
        let ticks = u64::try_from(ticks).unwrap_or(u64::MAX);
        match stop {
            None => {
                store.set_epoch_deadline(ticks);
                store.epoch_deadline_trap();
            }
            Some(stop) => {
                // Woken every tick to look at `stop`; the wall-clock deadline is counted here.
                let stop = Arc::clone(stop);
                let mut left = ticks;
                store.set_epoch_deadline(1);
                store.epoch_deadline_callback(move |_| {
                    left = left.saturating_sub(1);
                    if stop.load(Ordering::Relaxed) {
                        Err(wasmtime::Error::new(Stopped))
                    } else if left == 0 {
                        Err(wasmtime::Error::from(Trap::Interrupt))
                    } else {
                        Ok(wasmtime::UpdateDeadline::Continue(1))
                    }
                });
            }
        }

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
            .block_on(async { tokio::time::timeout(limit, until_stopped(call, stop)).await })
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
        let exit_code = match &result {
            Err(err) => err.downcast_ref::<wasmtime_wasi::I32Exit>().map(|e| e.0),
            Ok(_) => None,
        };
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
                    _ if err.downcast_ref::<Stopped>().is_some() => RunStatus::Interrupted,
                    Some(Trap::OutOfFuel) => RunStatus::OutOfFuel,
                    Some(Trap::Interrupt) => RunStatus::Deadline,
                    _ if err.downcast_ref::<BlockedPastDeadline>().is_some() => RunStatus::Deadline,
                    _ if err.downcast_ref::<wasmtime_wasi::I32Exit>().is_some() => {
                        RunStatus::Exited
                    }
                    _ if err
                        .downcast_ref::<host_budget::HostMemoryRefused>()
                        .is_some() =>
                    {
                        RunStatus::HostMemoryRefused
                    }
                    _ if state.limiter.denials_total > 0 => RunStatus::MemoryRefused,
                    _ => RunStatus::Trap,
                };
                let error = if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
                    format!("the capsule exited with code {}", exit.0)
                } else if let Some(wasmtime::component::ResourceTableError::Full) =
                    err.downcast_ref::<wasmtime::component::ResourceTableError>()
                {
                    format!(
                        "the capsule tried to hold more than {} host objects (streams, descriptors, sockets, timers, `wasi:http` values) at once; the run was stopped",
                        grant.quotas.host_resources
                    )
                } else if let Some(refused) = err.downcast_ref::<host_budget::HostMemoryRefused>() {
                    refused.to_string()
                } else if let Some(http) = err.downcast_ref::<HttpNotGranted>() {
                    egress_denied.note(&format!("HttpNotGranted {}", http.0));
                    http.to_string()
                } else {
                    format!("{err:#}")
                };
                (status, None, Some(error))
            }
        };
        let (stdout, stderr) = (stdout.summary(), stderr.summary());
        let (files_written_bytes, files_refused) = file_budget.take();
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
            host_memory_bytes: state.host_budget.charged,
            memory_denials: state.limiter.denials.clone(),
            memory_denials_total: state.limiter.denials_total,
            memory_denials_sha256: if state.limiter.denials_total == 0 {
                output::EMPTY_SHA256
            } else {
                state.limiter.denials_digest.clone().finalize().into()
            },
            wall_time,
            stdout,
            stderr,
            evidence: state.evidence,
            evidence_refused: state.evidence_refused,
            proposals_refused: state.proposals_refused,
            code,
            prepare_time,
            compile_time,
            egress_denied: egress_denied.take(),
            files_written_bytes,
            files_refused,
            exit_code,
        })
    }

    /// Compiles `capsule` ahead of its first run (when a site installs it), within
    /// `budget`, and links it against everything the runner can provide; with a
    /// code cache set ([`Sandbox::set_code_cache`]) the code is stored there, MACed,
    /// so a later run in any process loads it (`disk-cache`) instead of compiling.
    /// Returns where the code came from (`Disk` when it was already cached) and
    /// how long compiling took. Runs nothing and grants nothing.
    pub fn precompile(
        &self,
        capsule: &VerifiedCapsule,
        budget: CompileBudget,
    ) -> Result<(CodeSource, Option<Duration>), SandboxError> {
        let manifest = capsule.manifest();
        let label = format!("{} {}", manifest.name, manifest.version);
        let (_, source, compile_time) = self.prepare(capsule, &label, true, budget)?;
        Ok((source, compile_time))
    }

    /// Keeps compiled code in `cache` between processes (authenticated; see [`CodeCache`]).
    pub fn set_code_cache(&mut self, cache: CodeCache) {
        self.cache = Some(cache);
    }

    /// Compiles code that is not cached with `compiler` (see [`Compiler`]:
    /// [`Compiler::Child`] applies each grant's compile budget).
    pub fn set_compiler(&mut self, compiler: Compiler) {
        self.compiler = compiler;
    }

    /// A capsule ready to instantiate: from memory, the disk cache, or
    /// compiled now within `budget` (with the time that took).
    fn prepare(
        &self,
        capsule: &VerifiedCapsule,
        label: &str,
        http: bool,
        budget: CompileBudget,
    ) -> Result<(host::CapsulePre<host::State>, CodeSource, Option<Duration>), SandboxError> {
        let module = capsule.module_digest();
        let key = (module, http);
        let warm = |s: &Self| {
            s.warm
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .cloned()
        };
        if let Some(pre) = warm(self) {
            return Ok((pre, CodeSource::Memory, None));
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
        let mut compile_time = None;
        let component = match component {
            Some(c) => c,
            None => {
                let compiling = Instant::now();
                let c = match &self.compiler {
                    Compiler::InProcess => {
                        if source == CodeSource::Compiled {
                            source = CodeSource::CompiledInProcess;
                        }
                        Component::new(&self.engine, capsule.bytes()).map_err(|e| {
                            SandboxError::Compile {
                                capsule: label.to_string(),
                                detail: format!("{e:#}"),
                            }
                        })?
                    }
                    Compiler::Child(program) => {
                        compile::in_child(program, &self.engine, capsule.bytes(), budget).map_err(
                            |failure| match failure {
                                compile::CompileFailure::Limit(detail) => {
                                    SandboxError::CompileLimit {
                                        capsule: label.to_string(),
                                        detail,
                                        compile_time: compiling.elapsed(),
                                    }
                                }
                                compile::CompileFailure::Invalid(detail)
                                | compile::CompileFailure::Child(detail) => SandboxError::Compile {
                                    capsule: label.to_string(),
                                    detail,
                                },
                            },
                        )?
                    }
                };
                compile_time = Some(compiling.elapsed());
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
        // Every import must be one the runner provides, granted or not.
        let mut pre = self.linker.instantiate_pre(&component).map_err(link)?;
        if !http {
            let mut linker = self.without_http.clone();
            http_traps(&mut linker, &self.engine, &component).map_err(link)?;
            pre = linker.instantiate_pre(&component).map_err(link)?;
        }
        // Imports were all satisfied above; what fails here is a missing export.
        let pre = host::CapsulePre::new(pre).map_err(|e| SandboxError::MissingExport {
            capsule: label.to_string(),
            detail: format!("{e:#}"),
        })?;
        let mut warm = self.warm.lock().unwrap_or_else(|p| p.into_inner());
        if warm.len() >= MAX_WARM_CAPSULES {
            warm.clear();
        }
        warm.insert(key, pre.clone());
        Ok((pre, source, compile_time))
    }
}

/// The engine configuration every capsule is compiled and run under; the
/// compile child builds the same, so its code loads here.
/// How many runs a [`Sandbox::new`] holds at once.
pub const DEFAULT_SLOTS: u32 = 4;

/// What one run may hold in the pool: core instances, linear memories and
/// tables across its component, and entries per table. Room to spare for what
/// the SDKs' toolchains produce (a componentized CPython or SpiderMonkey is a
/// handful of core modules and one or two memories); all of it is address
/// space reserved once, committed only as a run touches it.
const CORE_INSTANCES_PER_RUN: u32 = 32;
const MEMORIES_PER_RUN: u32 = 4;
const TABLES_PER_RUN: u32 = 16;
const TABLE_ELEMENTS: usize = 1 << 18;

/// How much of a pooled linear memory stays resident between runs: when a
/// run ends, up to this many bytes of the pages it wrote are reset in place
/// (zeroed, or copied back from the module's initial image) instead of handed
/// back to the kernel, so the next run in the slot does not fault them in
/// again. Written pages past it are decommitted as before. Either way the
/// next run sees only its module's initial contents. With
/// [`TABLE_KEEP_RESIDENT_BYTES`], at most 1.25 MiB per slot stays resident
/// (4 memories, 16 tables) while no run holds it.
const MEMORY_KEEP_RESIDENT_BYTES: usize = 256 << 10;
/// The same for a pooled table: 2 048 entries, far more than the few hundred
/// a toolchain's indirect-call table holds.
const TABLE_KEEP_RESIDENT_BYTES: usize = 16 << 10;

/// [`engine_config`] with Wasmtime's pooling instance allocator sized for
/// `slots` concurrent runs. Compiled code does not depend on the allocator
/// (the compatibility hash is the same), so code compiled in the bounded
/// child, with [`engine_config`], loads here.
fn pooled_config(slots: u32) -> Config {
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(CORE_INSTANCES_PER_RUN))
        .total_memories(slots.saturating_mul(MEMORIES_PER_RUN))
        .total_tables(slots.saturating_mul(TABLES_PER_RUN))
        .total_stacks(slots)
        .max_core_instances_per_component(CORE_INSTANCES_PER_RUN)
        .max_memories_per_component(MEMORIES_PER_RUN)
        .max_tables_per_component(TABLES_PER_RUN)
        .max_memories_per_module(MEMORIES_PER_RUN)
        .max_tables_per_module(TABLES_PER_RUN)
        .table_elements(TABLE_ELEMENTS);
    // Which pages a run wrote comes from the kernel (`PAGEMAP_SCAN`, Linux
    // 6.7 and later). Without it Wasmtime would rewrite the first
    // `MEMORY_KEEP_RESIDENT_BYTES` of every memory whether the run wrote them or not
    // (for a Rust guest, the far end of its stack, which it rarely touches),
    // so there every page is decommitted as before.
    if wasmtime::PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(wasmtime::Enabled::Yes)
            .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT_BYTES)
            .table_keep_resident(TABLE_KEEP_RESIDENT_BYTES);
    }
    let mut config = engine_config();
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    config
}

pub(crate) fn engine_config() -> Config {
    let mut config = Config::new();
    config.consume_fuel(true);
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    // Bounded native stack for guests: deep recursion traps instead of crashing the runner.
    config.max_wasm_stack(1 << 20);
    // NaN bit patterns differ between CPUs; canonical NaNs make float results reproducible.
    config.cranelift_nan_canonicalization(true);
    config
}

/// The resources `wasi:http` itself defines (the others its interfaces name come from `wasi:io`).
const HTTP_RESOURCES: &[&str] = &[
    "fields",
    "incoming-request",
    "outgoing-request",
    "request-options",
    "response-outparam",
    "incoming-response",
    "incoming-body",
    "future-trailers",
    "outgoing-response",
    "outgoing-body",
    "future-incoming-response",
];

/// Marks a `wasi:http` resource in a run without it: none is ever created.
struct NotGranted;

/// A capsule called a `wasi:http` function in a run with no HTTP egress grant.
#[derive(Debug)]
struct HttpNotGranted(String);

impl std::fmt::Display for HttpNotGranted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the capsule called `{}`, but `wasi:http` is not linked for it: no HTTP egress is granted",
            self.0
        )
    }
}

impl std::error::Error for HttpNotGranted {}

/// Defines every `wasi:http` function `component` imports as a trap, and its
/// resources as types nothing can create, so the component links but cannot
/// make the host hold any `wasi:http` value.
fn http_traps(
    linker: &mut Linker<host::State>,
    engine: &Engine,
    component: &Component,
) -> wasmtime::Result<()> {
    use wasmtime::component::ResourceType;
    use wasmtime::component::types::ComponentItem;
    let ty = component.component_type();
    for (name, import) in ty.imports(engine) {
        let ComponentItem::ComponentInstance(instance) = import.ty else {
            continue;
        };
        if !name.starts_with("wasi:http/") {
            continue;
        }
        let mut stub = linker.instance(name)?;
        for (item, export) in instance.exports(engine) {
            match export.ty {
                ComponentItem::ComponentFunc(_) => {
                    let what = format!("{name}#{item}");
                    stub.func_new(item, move |_, _, _, _| {
                        Err(wasmtime::Error::new(HttpNotGranted(what.clone())))
                    })?;
                }
                ComponentItem::Resource(_) if HTTP_RESOURCES.contains(&item) => {
                    stub.resource(item, ResourceType::host::<NotGranted>(), |_, _| Ok(()))?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The first 8 bytes of a digest in hex, as digests are shown in messages.
fn short_hex(digest: &[u8; 32]) -> String {
    hex::encode(&digest[..8])
}

/// Capsules ready to instantiate, by module digest and whether `wasi:http` is linked.
type WarmCapsules = std::collections::HashMap<([u8; 32], bool), host::CapsulePre<host::State>>;

/// Most capsules kept ready in memory at once.
const MAX_WARM_CAPSULES: usize = 64;

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            ticker.thread().unpark();
            let _ = ticker.join();
        }
    }
}
