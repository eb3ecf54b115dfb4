//! `edge-runner serve`: the runner as a long-running on-prem service.
//!
//! One process holds the evidence log, the trust store and a warm sandbox,
//! and runs jobs that local clients submit over a Unix socket. It owns the
//! job lifecycle — accept (durably recorded before the client hears `202`),
//! queue, run on worker threads, end (recorded), cancel, shutdown — and
//! nothing else: trust decisions stay in [`crate::trust`], runs in
//! [`crate::sandbox`] through [`crate::session::Session`], records in
//! [`crate::evidence`]. Every accepted job ends on the record exactly once:
//! finished, cancelled (by its client or the shutdown) or, when the daemon
//! died first, abandoned by the next daemon at start.
//!
//! - [`config`] reads `serve.toml`.
//! - [`jobs`] is the board: queue, quotas, idempotency, states.
//! - [`api`] serves HTTP/1.1 on the Unix socket, authorized by `SO_PEERCRED`.
//! - [`store`] keeps uploaded capsules by digest.
//! - `worker` holds the threads that run jobs.
//! - [`metrics`] and [`systemd`] are for operations.

pub mod api;
pub mod config;
#[cfg(feature = "fleet")]
mod fleet;
pub mod jobs;
pub mod metrics;
pub mod store;
pub mod systemd;
mod worker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::capsule::CheckedCapsule;
use crate::evidence::events::{Event, JobAccepted, JobCancelled, LoadShed, Submitter};
use crate::evidence::{EvidenceError, EvidenceLog, SharedLog};
use crate::keys::SecretKey;
use crate::sandbox::{CACHE_KEY_PURPOSE, CodeCache, Compiler, Sandbox, SandboxError};
use crate::site::SitePolicy;
use crate::timestamp::Timestamp;

pub use config::ServeConfig;
use jobs::{Board, Cancel, Ended, JobView, Peer, Rejection, Reserved};

/// File (in the evidence directory) naming the daemon that holds it: its
/// pid and socket, so `edge-runner run` can point at `submit`.
pub const SERVING_FILE: &str = "serving.json";

/// The `reason` of a `job-abandoned` record.
pub const ABANDONED_REASON: &str = "the daemon stopped before this job ended (killed, crashed or the machine stopped); found when the daemon next started. Jobs run at most once: the client resubmits";

/// How often shed load is summarized into one `load-shed` record (at most).
pub const SHED_INTERVAL: Duration = Duration::from_secs(10);

/// How often the trust store is re-read for readiness and its expiry metric.
const TRUST_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The config is not usable.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The site policy is not usable.
    #[error(transparent)]
    Site(#[from] crate::site::SiteError),
    /// The evidence log could not be opened or written.
    #[error("evidence {dir}: {source}")]
    Evidence {
        /// The evidence directory.
        dir: String,
        /// What went wrong.
        source: EvidenceError,
    },
    /// The sandbox could not start.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The capsule store could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The API socket could not be set up.
    #[error("API socket {path}: {detail}")]
    Socket {
        /// The socket path.
        path: String,
        /// What is wrong and the fix.
        detail: String,
    },
    /// Another I/O failure (a runtime, a thread, a signal handler).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Why a submission was not accepted.
#[derive(Debug)]
pub(crate) enum SubmitError {
    /// Turned away before acceptance.
    Rejected(Rejection),
    /// Its acceptance could not be recorded.
    Evidence(String),
}

/// Counts of requests turned away since the last `load-shed` record.
#[derive(Debug, Default)]
struct Shed {
    since_ms: u64,
    counts: BTreeMap<&'static str, u64>,
}

/// The running daemon's shared state.
pub struct Daemon {
    pub(crate) config: ServeConfig,
    pub(crate) board: Board,
    pub(crate) store: store::Store,
    pub(crate) log: SharedLog,
    /// Woken after every group commit that made records durable (the fleet's
    /// shipper waits on it, so evidence leaves as soon as it is durable).
    #[cfg_attr(not(feature = "fleet"), allow(dead_code))]
    pub(crate) committed: Arc<tokio::sync::Notify>,
    pub(crate) metrics: Arc<metrics::Metrics>,
    /// The daemon's own uid: always allowed, and may cancel any job.
    pub(crate) uid: u32,
    shed: Mutex<Shed>,
    /// Why the trust store is unusable, if it is (checked every few seconds).
    trust_problem: Mutex<Option<String>>,
    /// The trust root last loaded, and the trust directory's mtime then.
    trust_cache: Mutex<Option<(std::time::SystemTime, Arc<crate::trust::TrustRoot>)>>,
    /// Capsules parsed (structure checked, nothing trusted) for recent jobs.
    parsed: Mutex<ParsedCapsules>,
}

/// Parsed capsules by the SHA-256 of the component file and of the
/// detached signature file (if any): the same bytes always parse the same,
/// so a job naming them again skips the parse and its hash of the component.
type ParsedCapsules = std::collections::HashMap<([u8; 32], Option<[u8; 32]>), CheckedCapsule>;

/// Most bytes of components kept parsed in memory.
const PARSED_BYTES: usize = 64 << 20;

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What the fleet task starts with: its config, the site, the marker secret
/// and the markers already in the log.
#[cfg(feature = "fleet")]
type FleetStart = (
    config::FleetConfig,
    String,
    [u8; 32],
    std::collections::HashSet<[u8; 32]>,
    crate::keys::PublicKey,
);
#[cfg(not(feature = "fleet"))]
type FleetStart = std::convert::Infallible;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Daemon {
    /// True if `peer` may use the API: its uid or gid is on the allow-lists
    /// or, when both are empty, it runs as the daemon's own user.
    pub(crate) fn allowed(&self, peer: Peer) -> bool {
        let allow = &self.config.allow;
        if allow.uids.is_empty() && allow.gids.is_empty() {
            return peer.uid == self.uid;
        }
        allow.uids.contains(&peer.uid) || allow.gids.contains(&peer.gid)
    }

    pub(crate) fn peer_refused(&self) {
        self.metrics.peer_refused();
        self.count_shed("forbidden");
    }

    /// Counts a submission turned away for `reason` (metric and `load-shed` summary).
    pub(crate) fn shed(&self, reason: metrics::Rejection) {
        use metrics::Rejection as R;
        self.metrics.rejected(reason);
        self.count_shed(match reason {
            R::QueueFull => "queue-full",
            R::SubmitterQuota => "submitter-quota",
            R::TooLarge => "too-large",
            R::Malformed => "malformed",
            R::HostPath => "host-path",
            R::UnknownCapsule => "unknown-capsule",
            R::Draining => "draining",
            R::NotReady => "not-ready",
        });
    }

    /// Why the daemon is not ready, if it is not.
    pub(crate) fn not_ready_reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.board.draining() {
            reasons.push("draining: the daemon is shutting down".to_string());
        }
        if let Some(problem) = self
            .trust_problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            reasons.push(format!("trust root unusable: {problem}"));
        }
        if let Some(e) = self.log.stats().last_fsync_error {
            reasons.push(format!("evidence: the last write or fsync failed: {e}"));
        }
        if self.board.full() {
            reasons.push(format!(
                "queue full: {} jobs waiting (`queue.capacity`)",
                self.config.queue_capacity
            ));
        }
        reasons
    }

    pub(crate) fn render_metrics(&self) -> String {
        let (queued, running) = self.board.load();
        self.metrics.set_queue_depth(queued as u64);
        self.metrics.set_running(running as u64);
        self.metrics
            .set_evidence_failing(self.log.stats().last_fsync_error.is_some());
        self.metrics.render()
    }

    fn count_shed(&self, reason: &'static str) {
        let mut shed = self.shed.lock().unwrap_or_else(|p| p.into_inner());
        if shed.counts.is_empty() {
            shed.since_ms = now_ms();
        }
        *shed.counts.entry(reason).or_default() += 1;
    }

    /// Writes one `load-shed` record for what was turned away since the last one, if anything.
    fn flush_shed(&self) -> Result<(), EvidenceError> {
        let taken = {
            let mut shed = self.shed.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *shed)
        };
        if taken.counts.is_empty() {
            return Ok(());
        }
        let event = LoadShed {
            from_ms: taken.since_ms,
            until_ms: now_ms(),
            rejected: taken
                .counts
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        };
        self.log.record(Event::from(event)).map(|_| ())
    }

    /// Accepts a job: reserves a slot, records `job-accepted` durably, then queues it.
    #[cfg(feature = "fleet")]
    pub(crate) async fn submit(
        self: &Arc<Self>,
        peer: Peer,
        submission: api::Submission,
    ) -> Result<(JobView, bool), SubmitError> {
        let capsule_sha256 = Sha256::digest(submission.capsule.as_slice()).into();
        self.submit_digested(peer, submission, capsule_sha256).await
    }

    /// [`Daemon::submit`] of a capsule whose SHA-256 is already known.
    pub(crate) async fn submit_digested(
        self: &Arc<Self>,
        peer: Peer,
        submission: api::Submission,
        capsule_sha256: [u8; 32],
    ) -> Result<(JobView, bool), SubmitError> {
        let reservation = match self.board.reserve(peer, submission.idempotency) {
            Ok(Reserved::Existing(id)) => {
                return match self.board.get(id) {
                    Some(view) => Ok((view, false)),
                    // Forgotten since (only after ENDED_KEPT later jobs): accept anew.
                    None => Err(SubmitError::Rejected(Rejection::InProgress)),
                };
            }
            Ok(Reserved::New(r)) => r,
            Err(why) => {
                match why {
                    Rejection::QueueFull => self.shed(metrics::Rejection::QueueFull),
                    Rejection::Quota => self.shed(metrics::Rejection::SubmitterQuota),
                    Rejection::Draining => self.shed(metrics::Rejection::Draining),
                    // A retry of a submission in flight is not load.
                    Rejection::InProgress => {}
                }
                return Err(SubmitError::Rejected(why));
            }
        };
        let event = JobAccepted {
            job: reservation.id,
            submitter: Submitter {
                uid: peer.uid,
                gid: peer.gid,
                pid: peer.pid,
            },
            capsule_sha256,
            signature_sha256: submission
                .signature
                .as_ref()
                .map(|s| Sha256::digest(s).into()),
            input_sha256: Sha256::digest(&submission.input).into(),
            idempotency_sha256: submission.idempotency,
            queue_depth: reservation.queue_depth,
        };
        // The job is queued (or its slot given back) by the writer, the
        // moment the record is durable (or refused): the API's thread waits
        // without a blocking thread of its own, and a client that goes away
        // meanwhile cannot leave an accepted job unqueued.
        let id = reservation.id;
        let daemon = Arc::clone(self);
        let (answer, durable) = tokio::sync::oneshot::channel();
        self.log.record_then(Event::from(event), move |recorded| {
            let queued = match recorded {
                Ok(signed) => {
                    daemon.board.commit(
                        reservation,
                        submission.capsule,
                        capsule_sha256,
                        submission.signature,
                        submission.input,
                        signed.record.seq,
                    );
                    daemon.metrics.accepted();
                    Ok(())
                }
                Err(e) => {
                    daemon.board.release(reservation);
                    Err(e.to_string())
                }
            };
            let _ = answer.send(queued);
        });
        match durable.await {
            Ok(Ok(())) => match self.board.get(id) {
                Some(view) => Ok((view, true)),
                None => Err(SubmitError::Evidence("the job vanished".into())),
            },
            Ok(Err(e)) => Err(SubmitError::Evidence(e)),
            // The writer answers every record; no answer means it stopped.
            Err(_) => Err(SubmitError::Evidence(EvidenceError::Closed.to_string())),
        }
    }

    /// Cancels job `id` (blocking: it may record). A running job is asked to
    /// stop; its worker records the end.
    pub(crate) fn cancel(&self, id: u64) -> Result<Cancel, String> {
        let found = self.board.cancel(id);
        if found == Cancel::Dequeued {
            self.end_cancelled(id, "client")
                .map_err(|e| e.to_string())?;
        }
        Ok(found)
    }

    /// Records that queued job `id` was cancelled by `by`, and ends it.
    fn end_cancelled(&self, id: u64, by: &str) -> Result<(), EvidenceError> {
        let signed = self.log.record(Event::from(JobCancelled {
            job: id,
            by: by.into(),
            running: false,
        }))?;
        self.metrics.finished(
            if by == "shutdown" {
                metrics::Outcome::CancelledByShutdown
            } else {
                metrics::Outcome::CancelledByClient
            },
            None,
        );
        self.board.end(
            id,
            Ended {
                outcome: "cancelled".into(),
                exit: exit::ABNORMAL,
                records: vec![signed.record.seq],
                lines: vec![format!("cancelled by the {by} before it ran")],
            },
        );
        Ok(())
    }

    /// The trust root for a job: loaded and checked again whenever the trust
    /// directory changed (a version installed or removed changes its mtime),
    /// else the one loaded before. Expiry is not cached: verification checks
    /// the root's validity at the job's own time.
    pub(crate) fn trust_root(
        &self,
    ) -> Result<Arc<crate::trust::TrustRoot>, crate::trust::TrustError> {
        let changed = std::fs::metadata(&self.config.trust)
            .and_then(|m| m.modified())
            .ok();
        let mut cache = self.trust_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(mtime), Some((at, root))) = (changed, cache.as_ref())
            && *at == mtime
        {
            return Ok(Arc::clone(root));
        }
        let root = Arc::new(crate::trust::store::load(
            &self.config.trust,
            Timestamp::now(),
        )?);
        *cache = changed.map(|mtime| (mtime, Arc::clone(&root)));
        Ok(root)
    }

    /// The capsule of job `work`, parsed: from the parses kept for jobs
    /// before when its bytes are ones seen before, else parsed now (and kept).
    /// `None` when the bytes do not parse; the caller's session parses them
    /// again to record the refusal. Nothing here trusts anything: every job's
    /// session verifies the capsule against the trust root, now.
    pub(crate) fn parsed(&self, work: &jobs::Work) -> Option<CheckedCapsule> {
        let key = (
            work.capsule_sha256,
            work.signature
                .as_ref()
                .map(|s| <[u8; 32]>::from(Sha256::digest(s))),
        );
        let lock = || self.parsed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(checked) = lock().get(&key) {
            return Some(checked.clone());
        }
        let raw = crate::capsule::RawCapsule {
            component: work.capsule.as_ref().clone(),
            detached_signature: work.signature.clone(),
        };
        let checked = raw.check().ok()?;
        // Kept only under the digest its own parse computed.
        if checked.file_digest() == work.capsule_sha256 {
            let mut parsed = lock();
            let held: usize = parsed.values().map(|c| c.bytes().len()).sum();
            if held + checked.bytes().len() > PARSED_BYTES {
                parsed.clear();
            }
            parsed.insert(key, checked.clone());
        }
        Some(checked)
    }

    fn check_trust(&self) {
        let problem = match crate::trust::store::load(&self.config.trust, Timestamp::now()) {
            Ok(root) => {
                self.metrics
                    .set_trust_root_expiry(i64::try_from(root.expires.0).unwrap_or(i64::MAX));
                None
            }
            Err(e) => Some(e.to_string()),
        };
        *self.trust_problem.lock().unwrap_or_else(|p| p.into_inner()) = problem;
    }
}

/// Where the API listens: a socket systemd passed (socket activation) or one we bind.
#[derive(Debug)]
pub enum Listener {
    /// Bind `config.api.socket` (removing a stale socket file first).
    Bind,
    /// Use this socket, already bound (systemd socket activation).
    Activated(std::os::unix::net::UnixListener),
}

/// Runs the daemon until SIGTERM or SIGINT; returns after every accepted
/// job has an end on the record and the final checkpoint is written.
pub fn serve(config: ServeConfig, key: SecretKey, listener: Listener) -> Result<(), ServeError> {
    let policy = match (&config.site_policy, &config.site) {
        (Some(path), _) => SitePolicy::load(path)?,
        (None, Some(site)) => SitePolicy::deny_all(site).map_err(|e| config::ConfigError {
            origin: config.origin.display().to_string(),
            detail: format!("`site`: {}", e.detail),
        })?,
        (None, None) => {
            return Err(ServeError::Config(config::ConfigError {
                origin: config.origin.display().to_string(),
                detail: "neither `site-policy` nor `site` is set".into(),
            }));
        }
    };
    let evidence_err = |source| ServeError::Evidence {
        dir: config.evidence.display().to_string(),
        source,
    };
    let cache = CodeCache::new(
        &config.evidence.join("code-cache"),
        key.derive_secret(CACHE_KEY_PURPOSE),
    );
    #[cfg(not(feature = "fleet"))]
    if config.fleet.is_some() {
        return Err(ServeError::Config(config::ConfigError {
            origin: config.origin.display().to_string(),
            detail: "`[fleet]` is set but this edge-runner was built without the `fleet` feature; rebuild with `--features fleet` or remove the table".into(),
        }));
    }
    #[cfg(feature = "fleet")]
    let fleet_secret = key.derive_secret(fleet::FLEET_MARKER_PURPOSE);
    #[cfg(feature = "fleet")]
    let runner_public = key.public();
    let mut log = EvidenceLog::open(&config.evidence, key).map_err(evidence_err)?;
    // Runs and jobs the previous daemon left open get their end first.
    let abandoned =
        crate::evidence::abandon_open_jobs(&mut log, ABANDONED_REASON).map_err(evidence_err)?;
    if !abandoned.is_empty() {
        tracing::warn!(
            jobs = ?abandoned,
            "jobs accepted by the previous daemon never ended; recorded as abandoned (clients resubmit)"
        );
    }
    #[cfg(feature = "fleet")]
    let fleet_start: Option<FleetStart> = match &config.fleet {
        None => None,
        Some(f) => {
            let seen = fleet::accepted_markers(&config.evidence).map_err(|detail| {
                ServeError::Evidence {
                    dir: config.evidence.display().to_string(),
                    source: EvidenceError::Encode(format!(
                        "reading the fleet jobs already accepted: {detail}"
                    )),
                }
            })?;
            Some((
                f.clone(),
                policy.site.clone(),
                fleet_secret,
                seen,
                runner_public,
            ))
        }
    };
    #[cfg(not(feature = "fleet"))]
    let fleet_start: Option<FleetStart> = None;
    let metrics = Arc::new(metrics::Metrics::new());
    metrics.abandoned(abandoned.len() as u64);
    let first_id = log.next_job();
    let committed = Arc::new(tokio::sync::Notify::new());
    let observer = {
        let (metrics, committed) = (Arc::clone(&metrics), Arc::clone(&committed));
        Box::new(move |latency, records| {
            metrics.fsync(latency, records);
            committed.notify_one();
        })
    };
    let log = SharedLog::start_observed(log, observer);
    let mut sandbox = Sandbox::with_slots(u32::try_from(config.concurrency).unwrap_or(u32::MAX))?;
    sandbox.set_code_cache(cache);
    sandbox.set_compiler(
        Compiler::this_executable().map_err(|source| ServeError::Io {
            what: "finding the runner's own executable (it compiles capsules in a child)".into(),
            source,
        })?,
    );
    let sandbox = Arc::new(sandbox);
    let store = store::Store::open(&config.store, config.store_max_bytes)?;
    let daemon = Arc::new(Daemon {
        board: Board::new(config.queue_capacity, config.per_submitter, first_id),
        store,
        log: log.clone(),
        committed,
        metrics,
        uid: current_uid(),
        shed: Mutex::new(Shed::default()),
        trust_problem: Mutex::new(None),
        trust_cache: Mutex::new(None),
        parsed: Mutex::new(ParsedCapsules::new()),
        config,
    });
    daemon.check_trust();

    let mut workers = Vec::new();
    for n in 0..daemon.config.concurrency {
        let (d, s, p) = (Arc::clone(&daemon), Arc::clone(&sandbox), policy.clone());
        let handle = std::thread::Builder::new()
            .name(format!("edge-runner-job-{n}"))
            .spawn(move || worker::run(d, s, p))
            .map_err(|source| ServeError::Io {
                what: "starting a worker thread".into(),
                source,
            })?;
        workers.push(handle);
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ServeError::Io {
            what: "starting the API runtime".into(),
            source,
        })?;
    let evidence_dir = daemon.config.evidence.display().to_string();
    let outcome = runtime.block_on(run_api(Arc::clone(&daemon), listener, fleet_start));
    // The API has stopped and every job has ended (or the API failed to
    // start, and the queue is drained the same way).
    let leftover = daemon.board.drain();
    for id in leftover {
        let _ = daemon.end_cancelled(id, "shutdown");
    }
    daemon.board.interrupt_running();
    for w in workers {
        let _ = w.join();
    }
    let _ = daemon.flush_shed();
    drop(runtime);
    let _ = std::fs::remove_file(daemon.config.evidence.join(SERVING_FILE));
    drop(daemon);
    log.close().map_err(|source| ServeError::Evidence {
        dir: evidence_dir,
        source,
    })?;
    outcome
}

fn current_uid() -> u32 {
    #[cfg(unix)]
    {
        rustix::process::geteuid().as_raw()
    }
    #[cfg(not(unix))]
    {
        0
    }
}

/// Binds the API socket at `path`: a socket file nobody answers on is stale
/// and replaced; one that answers belongs to a running daemon and is refused.
fn bind(path: &Path) -> Result<tokio::net::UnixListener, ServeError> {
    let fail = |detail: String| ServeError::Socket {
        path: path.display().to_string(),
        detail,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| {
            fail(format!(
                "its directory could not be created ({e}); create it, owned by the daemon's user"
            ))
        })?;
    }
    if path.exists() || path.symlink_metadata().is_ok() {
        let meta = path
            .symlink_metadata()
            .map_err(|e| fail(format!("cannot look at it ({e})")))?;
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(fail(
                "a file that is not a socket is in the way; remove it or choose another `api.socket`"
                    .into(),
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(fail(
                "another daemon answers on it; stop it first, or give this one another `api.socket`"
                    .into(),
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| fail(format!("a stale socket could not be removed ({e})")))?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .map_err(|e| fail(format!("could not bind ({e})")))?;
    {
        use std::os::unix::fs::PermissionsExt;
        // Owner and group only; who may call is then decided by SO_PEERCRED.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .map_err(|e| fail(format!("could not set its mode to 0660 ({e})")))?;
    }
    listener
        .set_nonblocking(true)
        .map_err(|e| fail(e.to_string()))?;
    tokio::net::UnixListener::from_std(listener).map_err(|e| fail(e.to_string()))
}

async fn run_api(
    daemon: Arc<Daemon>,
    listener: Listener,
    fleet_start: Option<FleetStart>,
) -> Result<(), ServeError> {
    // Handlers first: a client may signal the daemon as soon as the socket
    // answers, and SIGTERM then must drain, not kill.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| ServeError::Io {
            what: "installing the SIGTERM handler".into(),
            source,
        })?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|source| ServeError::Io {
            what: "installing the SIGINT handler".into(),
            source,
        })?;
    let socket_path = daemon.config.socket.clone();
    let (listener, bound) = match listener {
        Listener::Bind => (bind(&socket_path)?, true),
        Listener::Activated(l) => {
            l.set_nonblocking(true).map_err(|source| ServeError::Io {
                what: "the socket systemd passed".into(),
                source,
            })?;
            let l = tokio::net::UnixListener::from_std(l).map_err(|source| ServeError::Io {
                what: "the socket systemd passed".into(),
                source,
            })?;
            (l, false)
        }
    };
    let serving = serde_json::json!({
        "pid": std::process::id(),
        "socket": socket_path,
    });
    let _ = crate::fsio::write_atomically(
        &daemon.config.evidence.join(SERVING_FILE),
        serving.to_string().as_bytes(),
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let api = tokio::spawn(api::serve(listener, Arc::clone(&daemon), stop_rx.clone()));
    if let Some(addr) = daemon.config.metrics_listen {
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| ServeError::Socket {
                path: addr.to_string(),
                detail: format!("the metrics listener could not bind ({e})"),
            })?;
        tokio::spawn(api::serve_metrics(
            tcp,
            Arc::clone(&daemon),
            stop_rx.clone(),
        ));
    }
    // Housekeeping: shed-load summaries, the trust store's health, the watchdog.
    {
        let daemon = Arc::clone(&daemon);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut shed = tokio::time::interval(SHED_INTERVAL);
            let mut trust = tokio::time::interval(TRUST_CHECK_INTERVAL);
            let watchdog = systemd::watchdog_interval();
            let mut dog =
                tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |w| w / 2));
            loop {
                tokio::select! {
                    _ = shed.tick() => {
                        let d = Arc::clone(&daemon);
                        let _ = tokio::task::spawn_blocking(move || d.flush_shed()).await;
                    }
                    _ = trust.tick() => {
                        let d = Arc::clone(&daemon);
                        let _ = tokio::task::spawn_blocking(move || d.check_trust()).await;
                    }
                    _ = dog.tick() => {
                        if watchdog.is_some() && daemon.log.stats().last_fsync_error.is_none() {
                            notify(systemd::notify_watchdog());
                        }
                    }
                    _ = stopped(&mut stop) => return,
                }
            }
        });
    }
    #[cfg(feature = "fleet")]
    if let Some((config, site, secret, seen, runner_public)) = fleet_start {
        tokio::spawn(fleet::run(
            Arc::clone(&daemon),
            config,
            site,
            secret,
            seen,
            runner_public,
            stop_rx.clone(),
        ));
    }
    #[cfg(not(feature = "fleet"))]
    if let Some(never) = fleet_start {
        match never {}
    }
    notify(systemd::notify_ready());
    tracing::info!(
        socket = %socket_path.display(),
        concurrency = daemon.config.concurrency,
        "serving"
    );
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    // Draining: no new jobs; queued ones are cancelled on the record.
    notify(systemd::notify_stopping());
    tracing::info!("shutting down: draining");
    let queued = daemon.board.drain();
    let _ = stop_tx.send(true);
    let _ = api.await;
    if bound {
        let _ = std::fs::remove_file(&socket_path);
    }
    {
        let d = Arc::clone(&daemon);
        let _ = tokio::task::spawn_blocking(move || {
            for id in queued {
                if let Err(e) = d.end_cancelled(id, "shutdown") {
                    tracing::error!(job = id, error = %e, "could not record a cancelled job");
                }
            }
        })
        .await;
    }
    // Running jobs may finish within the grace period; a second signal ends it at once.
    let deadline = tokio::time::Instant::now() + daemon.config.grace;
    let mut interrupted = false;
    loop {
        if daemon.board.load().1 == 0 {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = term.recv() => { interrupted = true; }
            _ = int.recv() => { interrupted = true; }
        }
        if !interrupted && tokio::time::Instant::now() >= deadline {
            interrupted = true;
        }
        if interrupted {
            daemon.board.interrupt_running();
        }
    }
    Ok(())
}

/// The job timeline's paths, for messages: where the daemon's socket is, read from `DIR/serving.json`.
pub fn serving_socket(evidence: &Path) -> Option<(u32, PathBuf)> {
    let text = std::fs::read_to_string(evidence.join(SERVING_FILE)).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let pid = u32::try_from(value.get("pid")?.as_u64()?).ok()?;
    let socket = PathBuf::from(value.get("socket")?.as_str()?);
    Some((pid, socket))
}

/// Resolves once `stop` holds `true` (or its sender is gone).
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        let now = *stop.borrow_and_update();
        if now || stop.changed().await.is_err() {
            return;
        }
    }
}

/// Logs a failed notification to systemd (the service goes on).
fn notify(sent: Result<bool, systemd::SystemdError>) {
    if let Err(e) = sent {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// The exit codes a job ends with: those `edge-runner run` gives for the
/// same outcome (the CLI's `Exit` enum; a test keeps them equal).
pub mod exit {
    /// The verdict is `pass`.
    pub const PASS: u8 = 0;
    /// An error outside the capsule (the job could not be run).
    pub const ERROR: u8 = 1;
    /// The capsule was refused.
    pub const REFUSED: u8 = 3;
    /// The verdict is `fail`.
    pub const FAIL: u8 = 5;
    /// The run did not complete (trap, limits, interrupted, cancelled), or its verdict is `error`.
    pub const ABNORMAL: u8 = 6;
}
