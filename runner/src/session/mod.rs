//! One runner session: verify → grant → run → record, with evidence for every step.
//!
//! This is the loop the CLI, the demo and embedders share. It owns the order
//! of steps and what each records; the decisions themselves belong to
//! [`crate::trust`] and [`crate::sandbox`], and the record format to
//! [`crate::evidence`]. A refused capsule never reaches the sandbox, and no
//! step returns before its record is on disk.
//!
//! A session records either to a log it owns ([`EvidenceLog`], the CLI's
//! one-shot runs) or to a [`SharedLog`] that many sessions, one per worker
//! thread, record to at once (`edge-runner serve`); there each session
//! carries the job it works for, and its records carry that job's id, so
//! each job's records form their own lane in the log.

mod record;

use std::borrow::Cow;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::capsule::{CheckedCapsule, RawCapsule};
use crate::evidence::events::{CapsuleId, ConfigRef, Event, RunFinished};
use crate::evidence::{
    Entry, EvidenceError, EvidenceLog, Landed, Receipt, SharedLog, SignedRecord,
};
use crate::rollback::HighWater;
use crate::sandbox::{Grant, Limits, RunReport, Sandbox, SandboxError};
use crate::site::SitePolicy;
use crate::timestamp::Timestamp;
use crate::trust::{self, TrustError, TrustRoot, VerifiedCapsule};

use record::FileFacts;

/// Why a session step failed. A refusal or failed run is still recorded first.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The capsule was refused; a `capsule-refused` record says why.
    #[error("capsule refused: {0}")]
    Refused(#[from] TrustError),
    /// The sandbox could not start the capsule; a `run-finished` record says why.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The site name is not a valid name.
    #[error("site name: {0}")]
    BadSite(String),
    /// Evidence could not be written, so nothing further was done.
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    /// The capsule was admitted by another session, or its admission is no
    /// longer the newest verification in this log.
    #[error(
        "capsule `{capsule}` was not admitted by this session ({detail}); verify it in this session, then run it"
    )]
    NotAdmittedHere {
        /// Capsule name and version.
        capsule: String,
        /// What does not match.
        detail: String,
    },
}

/// The `reason` of a `run-interrupted` record.
pub use crate::evidence::INTERRUPTED_REASON;

/// A verified capsule admitted to run by the session that recorded its
/// verification: only [`Session::verify`] builds one, and only that session's
/// [`Session::run`] accepts it, for the same job, and only while its
/// `capsule-verified` record is the newest verification in its lane of the
/// log. It cannot be copied, so it runs once.
///
/// ```compile_fail
/// # fn forge(capsule: edge_runner::trust::VerifiedCapsule) {
/// let admitted = edge_runner::session::Admitted { capsule, session: 0, log_id: [0; 16], seq: 0 };
/// # }
/// ```
#[derive(Debug)]
pub struct Admitted {
    capsule: VerifiedCapsule,
    session: u64,
    log_id: [u8; 16],
    verification: Verification,
    job: Option<u64>,
}

/// Where an admission's `capsule-verified` record is.
#[derive(Debug)]
enum Verification {
    /// Durable, at this sequence number.
    Recorded(u64),
    /// Queued behind the shared log's writer (a job's verification, made
    /// durable with its `run-started` record in one group commit), as the
    /// session's `n`th verification; the run starts only if it lands.
    Queued(Receipt, u64, Landed),
}

impl Admitted {
    /// The verified capsule.
    pub fn capsule(&self) -> &VerifiedCapsule {
        &self.capsule
    }

    /// The sequence number of its `capsule-verified` record, or `None` while
    /// that record is queued: a job's verification on a shared log is made
    /// durable together with its `run-started` record, before the run.
    pub fn record(&self) -> Option<u64> {
        match self.verification {
            Verification::Recorded(seq) => Some(seq),
            Verification::Queued(..) => None,
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::evidence::EvidenceLog {}
    impl Sealed for crate::evidence::SharedLog {}
}

/// Where a session records: a log it owns ([`EvidenceLog`]) or one shared
/// with other sessions ([`SharedLog`]). Sealed: only these two.
pub trait Recorder: sealed::Sealed {
    /// Records `event`; returns once it is durable.
    fn put(&mut self, event: Event) -> Result<SignedRecord, EvidenceError>;
    /// Queues `entry`; its receipt answers once it is durable (a log the
    /// session owns records it at once).
    fn queue(&mut self, entry: Entry) -> Receipt;
    /// Commits to a sensitive value (see [`EvidenceLog::commit`]).
    fn commit_value(&mut self, value: &[u8]) -> Result<[u8; 32], EvidenceError>;
    /// The high-water marks as the log shows them now.
    fn high_water_now(&self) -> Result<Cow<'_, HighWater>, EvidenceError>;
    /// The log's id.
    fn id(&self) -> Result<[u8; 16], EvidenceError>;
    /// The newest `capsule-verified` record in lane `job` (`None`: outside jobs).
    fn newest_verification(&self, job: Option<u64>) -> Result<Option<u64>, EvidenceError>;
    /// The records of open job `job` so far, or `None` when it is not open.
    fn lane_records(&self, job: u64) -> Result<Option<Vec<u64>>, EvidenceError>;
}

impl Recorder for EvidenceLog {
    fn put(&mut self, event: Event) -> Result<SignedRecord, EvidenceError> {
        self.record(&event)
    }
    fn queue(&mut self, entry: Entry) -> Receipt {
        let result = self.record_entries(vec![entry]).pop();
        self.checkpoint_if_due();
        Receipt::ready(result.unwrap_or(Err(EvidenceError::Closed)))
    }
    fn commit_value(&mut self, value: &[u8]) -> Result<[u8; 32], EvidenceError> {
        self.commit(value)
    }
    fn high_water_now(&self) -> Result<Cow<'_, HighWater>, EvidenceError> {
        Ok(Cow::Borrowed(self.high_water()))
    }
    fn id(&self) -> Result<[u8; 16], EvidenceError> {
        Ok(self.log_id())
    }
    fn newest_verification(&self, job: Option<u64>) -> Result<Option<u64>, EvidenceError> {
        Ok(self.last_verified_in(job))
    }
    fn lane_records(&self, job: u64) -> Result<Option<Vec<u64>>, EvidenceError> {
        Ok(self.job_records(job))
    }
}

impl Recorder for SharedLog {
    fn put(&mut self, event: Event) -> Result<SignedRecord, EvidenceError> {
        self.record(event)
    }
    fn queue(&mut self, entry: Entry) -> Receipt {
        SharedLog::queue(self, entry)
    }
    fn commit_value(&mut self, value: &[u8]) -> Result<[u8; 32], EvidenceError> {
        self.with(|log| log.commit(value))?
    }
    fn high_water_now(&self) -> Result<Cow<'_, HighWater>, EvidenceError> {
        // As of the newest group commit, without waiting for one in progress:
        // the log's rules refuse the record if another lane accepted a newer
        // version meanwhile.
        Ok(Cow::Owned(HighWater::clone(&self.high_water())))
    }
    fn id(&self) -> Result<[u8; 16], EvidenceError> {
        self.with(|log| log.log_id())
    }
    fn newest_verification(&self, job: Option<u64>) -> Result<Option<u64>, EvidenceError> {
        self.with(|log| log.last_verified_in(job))
    }
    fn lane_records(&self, job: u64) -> Result<Option<Vec<u64>>, EvidenceError> {
        self.with(|log| log.job_records(job))
    }
}

/// A runner with its sandbox, limits, site name and evidence log (its own
/// by default, or a [`SharedLog`]).
#[derive(Debug)]
pub struct Session<L: Recorder = EvidenceLog> {
    /// Unique in this process: an [`Admitted`] names the session that made it.
    id: u64,
    sandbox: Arc<Sandbox>,
    limits: Limits,
    log: L,
    log_id: [u8; 16],
    site: String,
    policy: SitePolicy,
    /// What opening the log found about an interrupted apply (an alarm when it drifted).
    recovered: Option<String>,
    /// The job this session's records belong to, if any.
    job: Option<u64>,
    /// Verifications this session made: an admission queued as the `n`th
    /// runs only while `n` is the newest.
    verifications: u64,
}

static NEXT_SESSION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What [`Session::run`] did.
#[derive(Debug)]
pub struct RunRecord {
    /// The capsule that ran.
    pub capsule: VerifiedCapsule,
    /// What it was granted.
    pub grant: Grant,
    /// What happened.
    pub report: RunReport,
}

impl Session<EvidenceLog> {
    /// Starts a session at site `site`, which has no site policy (nothing
    /// but compute is granted), recording to `log`.
    pub fn new(log: EvidenceLog, limits: Limits, site: &str) -> Result<Self, SessionError> {
        let policy = SitePolicy::deny_all(site).map_err(|e| SessionError::BadSite(e.detail))?;
        Self::with_policy(log, limits, policy)
    }

    /// Starts a session under a site policy, recording to `log`.
    pub fn with_policy(
        log: EvidenceLog,
        limits: Limits,
        policy: SitePolicy,
    ) -> Result<Self, SessionError> {
        let mut log = log;
        // A run the previous runner started and never finished (it was killed,
        // or the machine stopped) is put on the record before this session
        // records anything, in every lane; every job accepted and not ended
        // is abandoned (a job is never run again after a crash).
        crate::evidence::abandon_open_jobs(&mut log, crate::evidence::ABANDONED_REASON)?;
        // An apply the previous runner started and never finished is resolved
        // from the target's digest, and recorded, before anything else.
        let recovered = crate::remediation::apply::recover(
            &mut log,
            &policy,
            &crate::remediation::Limits::default(),
        );
        let recovered = match recovered {
            Ok(note) => note,
            Err(crate::remediation::apply::ApplyError::Session(e)) => return Err(e),
            Err(e) => Some(e.to_string()),
        };
        Ok(Self {
            recovered,
            id: NEXT_SESSION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            sandbox: Arc::new(Sandbox::new()?),
            limits,
            log_id: log.log_id(),
            log,
            site: policy.site.clone(),
            policy,
            job: None,
            verifications: 0,
        })
    }

    /// What opening the log found and recorded about an apply a previous
    /// runner left unfinished, if anything (starts with `ALARM` when the target drifted).
    pub fn recovered(&self) -> Option<&str> {
        self.recovered.as_deref()
    }

    /// Keeps compiled code between runs in `cache` (authenticated before use).
    pub fn set_code_cache(&mut self, cache: crate::sandbox::CodeCache) {
        match Arc::get_mut(&mut self.sandbox) {
            Some(sandbox) => sandbox.set_code_cache(cache),
            // Only `with_policy` builds this kind of session, with a sandbox
            // no one else holds, so this is not reached.
            None => tracing::warn!("the session's sandbox is shared; its code cache stays"),
        }
    }

    /// Compiles code that is not cached with `compiler`; [`crate::sandbox::Compiler::Child`]
    /// bounds each compile by the grant's compile budget.
    pub fn set_compiler(&mut self, compiler: crate::sandbox::Compiler) {
        match Arc::get_mut(&mut self.sandbox) {
            Some(sandbox) => sandbox.set_compiler(compiler),
            None => tracing::warn!("the session's sandbox is shared; its compiler stays"),
        }
    }

    /// The evidence log.
    pub fn log(&self) -> &EvidenceLog {
        &self.log
    }
}

impl Session<SharedLog> {
    /// Starts a session recording to `log`, shared with other sessions (one
    /// per worker thread), running capsules in `sandbox` (shared too), under
    /// `policy`. Opening the log (and [`crate::evidence::abandon_open_jobs`])
    /// is the caller's, before the log is shared.
    pub fn shared(
        log: SharedLog,
        sandbox: Arc<Sandbox>,
        limits: Limits,
        policy: SitePolicy,
    ) -> Result<Self, SessionError> {
        Ok(Self {
            recovered: None,
            id: NEXT_SESSION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            sandbox,
            limits,
            log_id: log.id()?,
            log,
            site: policy.site.clone(),
            policy,
            job: None,
            verifications: 0,
        })
    }

    /// The shared evidence log.
    pub fn log(&self) -> &SharedLog {
        &self.log
    }
}

impl<L: Recorder> Session<L> {
    /// Sets the job this session's records belong to from now on (`None`:
    /// outside any job). A capsule admitted for another job does not run.
    pub fn set_job(&mut self, job: Option<u64>) {
        self.job = job;
    }

    /// The job this session's records belong to.
    pub fn job(&self) -> Option<u64> {
        self.job
    }

    /// The records of this session's job so far, in order (empty outside a
    /// job, or when the log cannot say).
    pub fn job_records(&self) -> Vec<u64> {
        self.job
            .and_then(|job| self.log.lane_records(job).ok().flatten())
            .unwrap_or_default()
    }

    /// The site policy in force.
    pub fn policy(&self) -> &SitePolicy {
        &self.policy
    }

    /// Replaces the site policy (staging runs tests under a read-only policy
    /// over a scratch copy); returns the one it replaced. The site name stays.
    pub(crate) fn replace_policy(&mut self, policy: SitePolicy) -> SitePolicy {
        std::mem::replace(&mut self.policy, policy)
    }

    /// Records one remediation event (proposal, approval, authorization,
    /// apply, verify, rollback, notify, post-review); the log's rules refuse
    /// one that breaks them (an apply without authorization, a replay).
    pub fn record(
        &mut self,
        event: impl Into<Event>,
    ) -> Result<crate::evidence::SignedRecord, SessionError> {
        Ok(self.log.put(event.into())?)
    }

    /// Verifies `capsule` against `root` now, recording the decision either way.
    pub fn verify(
        &mut self,
        capsule: RawCapsule,
        root: &TrustRoot,
    ) -> Result<Admitted, SessionError> {
        self.verify_at(capsule, root, Timestamp::now())
    }

    /// Verifies `capsule` against `root` as of `now`, recording the decision
    /// either way. The high-water mark comes from this session's evidence log.
    pub fn verify_at(
        &mut self,
        capsule: RawCapsule,
        root: &TrustRoot,
        now: Timestamp,
    ) -> Result<Admitted, SessionError> {
        let signature_sha256: Option<[u8; 32]> = capsule
            .detached_signature
            .as_ref()
            .map(|s| Sha256::digest(s).into());
        // The file's digest comes from the parse when it succeeds: the
        // bytes are hashed once per verification, not once more for the record.
        let (checked, facts) = match capsule.check_keeping() {
            Ok(checked) => {
                let facts = FileFacts::of_checked(&checked, signature_sha256);
                (Ok(checked), facts)
            }
            Err((err, raw)) => (Err(err), FileFacts::of(&raw)),
        };
        self.verify_parsed(checked, facts, root, now)
    }

    /// [`Session::verify`] of a capsule whose structure was checked before
    /// (the daemon keeps the parse of a capsule it runs again and again),
    /// whose detached signature file, if any, hashes to `signature_sha256`.
    /// The trust checks all run, now, as for a capsule just read.
    pub fn verify_checked(
        &mut self,
        capsule: CheckedCapsule,
        signature_sha256: Option<[u8; 32]>,
        root: &TrustRoot,
    ) -> Result<Admitted, SessionError> {
        let facts = FileFacts::of_checked(&capsule, signature_sha256);
        self.verify_parsed(Ok(capsule), facts, root, Timestamp::now())
    }

    fn verify_parsed(
        &mut self,
        checked: Result<CheckedCapsule, crate::capsule::CapsuleError>,
        facts: FileFacts,
        root: &TrustRoot,
        now: Timestamp,
    ) -> Result<Admitted, SessionError> {
        let identity = checked.as_ref().ok().map(|c| {
            let m = c.manifest();
            CapsuleId {
                name: m.name.clone(),
                version: m.version.to_string(),
                kind: m.kind.as_str().into(),
            }
        });
        let high_water = self.log.high_water_now()?;
        let ctx = trust::Context {
            root,
            site: &self.site,
            now,
            high_water: &high_water,
        };
        let verified = checked
            .map_err(TrustError::from)
            .and_then(|c| trust::verify(c, &ctx));
        drop(high_water);
        match verified {
            Ok(capsule) => {
                let mut event = record::verified(&capsule, now, facts.signature_sha256);
                event.job = self.job;
                self.verifications += 1;
                // A job's verification is queued, to be made durable with
                // its `run-started` record in one group commit; outside jobs
                // (where other sessions' records share the lane) it is waited for.
                let verification = match self.job {
                    Some(_) => {
                        let landed = Landed::default();
                        let receipt = self
                            .log
                            .queue(Entry::Marked(Event::from(event), landed.clone()));
                        Verification::Queued(receipt, self.verifications, landed)
                    }
                    None => Verification::Recorded(self.log.put(Event::from(event))?.record.seq),
                };
                Ok(Admitted {
                    capsule,
                    session: self.id,
                    log_id: self.log_id,
                    verification,
                    job: self.job,
                })
            }
            Err(err) => {
                Err(self.record_refusal(&facts, identity, Some(record::root_ref(root)), err, now))
            }
        }
    }

    /// Records that `capsule` was refused before it could be verified
    /// because no trust root was usable (`err` says why), and returns the
    /// refusal (or the evidence error that kept it from being recorded).
    pub fn refuse_without_root(&mut self, capsule: &RawCapsule, err: TrustError) -> SessionError {
        self.record_refusal(&FileFacts::of(capsule), None, None, err, Timestamp::now())
    }

    fn record_refusal(
        &mut self,
        facts: &FileFacts,
        identity: Option<CapsuleId>,
        root: Option<crate::evidence::events::TrustRootRef>,
        err: TrustError,
        now: Timestamp,
    ) -> SessionError {
        let mut event = record::refused(facts, identity, root, err.to_string(), &self.site, now);
        event.job = self.job;
        match self.log.put(Event::from(event)) {
            Ok(_) => SessionError::Refused(err),
            Err(e) => SessionError::Evidence(e),
        }
    }

    /// Queues `finished`; a record the log refuses as too large (possible
    /// only with quotas raised far above their defaults) is replaced by a
    /// bounded one that says so, so a run always ends on the record.
    fn record_finished(&mut self, mut finished: RunFinished) -> Receipt {
        finished.job = self.job;
        let event = Event::from(finished.clone());
        self.log.queue(Entry::Bounded(
            event,
            Box::new(move |size| Event::from(record::too_large(&finished, size))),
        ))
    }

    /// Runs an admitted capsule on `input`, recording the grant before and
    /// the result after. Refuses a capsule admitted by another session (or
    /// another log), and one whose verification is no longer the newest in
    /// this log: verify it again.
    pub fn run(&mut self, admitted: Admitted, input: &[u8]) -> Result<RunRecord, SessionError> {
        self.run_until(admitted, input, None)
    }

    /// [`Session::run`], stopping the run (status `interrupted`, recorded
    /// like any end) once `stop` is set: the daemon's cancel and shutdown.
    pub fn run_until(
        &mut self,
        admitted: Admitted,
        input: &[u8],
        stop: Option<&Arc<std::sync::atomic::AtomicBool>>,
    ) -> Result<RunRecord, SessionError> {
        let (record, finished) = self.run_queued(admitted, input, stop)?;
        finished.wait()?;
        Ok(record)
    }

    /// [`Session::run_until`], returning once the run's `run-finished`
    /// record is queued, with its receipt: the daemon queues the job's end
    /// behind it and takes the next job. Everything before the run —
    /// verification, `run-started` — is durable before the capsule starts.
    pub fn run_queued(
        &mut self,
        admitted: Admitted,
        input: &[u8],
        stop: Option<&Arc<std::sync::atomic::AtomicBool>>,
    ) -> Result<(RunRecord, Receipt), SessionError> {
        let Admitted {
            capsule,
            session,
            log_id,
            verification,
            job,
        } = admitted;
        let label = || {
            let m = capsule.manifest();
            format!("{} {}", m.name, m.version)
        };
        if log_id != self.log_id {
            return Err(SessionError::NotAdmittedHere {
                capsule: label(),
                detail: format!(
                    "it was verified in log {}, and this session records to log {}",
                    hex::encode(log_id),
                    hex::encode(self.log_id)
                ),
            });
        }
        if session != self.id {
            // The same log, reopened by another session: its verification was
            // judged for a session that has ended; judge it again here.
            return Err(SessionError::NotAdmittedHere {
                capsule: label(),
                detail: "it was verified by another session of this log, which has ended".into(),
            });
        }
        if capsule.site() != self.site {
            return Err(SessionError::NotAdmittedHere {
                capsule: label(),
                detail: format!(
                    "it was verified for site `{}`, and this session is site `{}`",
                    capsule.site(),
                    self.site
                ),
            });
        }
        if job != self.job {
            let name =
                |j: Option<u64>| j.map_or_else(|| "no job".to_string(), |j| format!("job {j}"));
            return Err(SessionError::NotAdmittedHere {
                capsule: label(),
                detail: format!(
                    "it was verified for {}, and this session now records {}",
                    name(job),
                    name(self.job)
                ),
            });
        }
        // The newest verification in this session's lane: the log's records
        // outside jobs, or this job's (whose records only this session writes
        // while it runs the job, so its own count says which is newest).
        let queued = match verification {
            Verification::Recorded(seq) => {
                let newest = self.log.newest_verification(self.job)?;
                if newest != Some(seq) {
                    return Err(SessionError::NotAdmittedHere {
                        capsule: label(),
                        detail: format!(
                            "its verification is record {seq}, but a newer capsule was verified since, in record {}",
                            newest.map_or_else(|| "none".to_string(), |s| s.to_string())
                        ),
                    });
                }
                None
            }
            Verification::Queued(receipt, n, landed) => {
                if n != self.verifications {
                    return Err(SessionError::NotAdmittedHere {
                        capsule: label(),
                        detail: format!(
                            "it is this session's verification {n}, but a newer capsule was verified since (verification {})",
                            self.verifications
                        ),
                    });
                }
                Some((receipt, landed))
            }
        };
        let grant = Grant::compute(
            &capsule,
            &self.limits,
            &self.policy,
            Sha256::digest(input).into(),
        );
        // Config values can be secrets: the record holds a salted commitment to each.
        let mut commitments = Vec::new();
        for (key, value) in &grant.config {
            commitments.push(ConfigRef {
                key: key.clone(),
                commitment: self.log.commit_value(value.as_bytes())?,
            });
        }
        let mut started = record::run_started(&capsule, &grant, input, &self.policy, commitments);
        started.job = self.job;
        let started = Event::from(started);
        // Both in one group commit; the verification's answer first, since
        // when it was refused, so is the run it admits, and it says why.
        let started = match queued {
            Some((verified, landed)) => {
                let started = self.log.queue(Entry::IfLanded(landed, started));
                verified.wait()?;
                started
            }
            None => self.log.queue(Entry::Event(started)),
        };
        started.wait()?;
        match self.sandbox.run_until(&capsule, &grant, input, stop) {
            Ok(report) => {
                let finished = record::run_finished(&capsule, &grant, &report);
                let receipt = self.record_finished(finished);
                Ok((
                    RunRecord {
                        capsule,
                        grant,
                        report,
                    },
                    receipt,
                ))
            }
            Err(err) => {
                let mut finished = record::not_started(&capsule, &err);
                finished.job = self.job;
                self.log.put(Event::from(finished))?;
                Err(err.into())
            }
        }
    }
}

/// How a run ended, as `edge-runner run` and the daemon judge it for their exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judged {
    /// It completed with verdict `pass`.
    Pass,
    /// It completed with verdict `fail`.
    Fail,
    /// It did not complete (trap, limits, interrupted), or its verdict is `error`.
    Abnormal,
}

impl RunRecord {
    /// How the run ended: `pass` and `fail` only for a run that returned that
    /// verdict (its output may have been cut, never its outcome).
    pub fn judge(&self) -> Judged {
        use crate::sandbox::{RunStatus, Verdict};
        match (&self.report.status, &self.report.outcome) {
            (RunStatus::Completed | RunStatus::OutputOverflow, Some(o))
                if o.verdict == Verdict::Pass =>
            {
                Judged::Pass
            }
            (RunStatus::Completed | RunStatus::OutputOverflow, Some(o))
                if o.verdict == Verdict::Fail =>
            {
                Judged::Fail
            }
            _ => Judged::Abnormal,
        }
    }

    /// The run's result for people, one line each: what ran and how it
    /// ended, the verdict and findings, what was granted and denied, what it
    /// used and the evidence items. Everything the capsule wrote is escaped,
    /// so it cannot start a line of its own.
    pub fn lines(&self) -> Vec<String> {
        use crate::text::{escape, escape_clipped};
        let record = self;
        let mut lines = Vec::new();

        let m = record.capsule.manifest();
        let r = &record.report;
        lines.push(format!(
            "ran {} {} ({}): {}",
            m.name,
            m.version,
            m.kind,
            r.status.as_str()
        ));
        if record.capsule.under_development_root() {
            let (root, version, _) = record.capsule.trust_root();
            lines.push(format!(
                "  DEVELOPMENT SET-UP: verified under the development trust root `{root}` v{version}; a local trial, not for production"
            ));
        }
        let q = record.grant.quotas();
        // Everything the capsule wrote is escaped: it cannot start a line of its own.
        if let Some(o) = &r.outcome {
            lines.push(format!(
                "  verdict: {} — {}",
                o.verdict.as_str(),
                escape_clipped(&o.summary, q.summary_bytes)
            ));
            for f in o.findings.iter().take(q.findings) {
                lines.push(format!(
                    "  finding [{}] {}: {}",
                    f.severity.as_str(),
                    escape_clipped(&f.code, q.finding_code_bytes),
                    escape_clipped(&f.message, q.finding_message_bytes)
                ));
            }
            if o.findings.len() > q.findings {
                lines.push(format!(
                    "  … {} more findings (the record keeps their count and digest)",
                    o.findings.len() - q.findings
                ));
            }
        }
        if let Some(e) = &r.error {
            lines.push(format!("  error: {}", escape_clipped(e, q.error_bytes)));
        }
        for d in &record.grant.directories {
            lines.push(format!(
                "  granted: {} -> {} ({})",
                d.guest,
                d.host.display(),
                d.access
            ));
        }
        for k in record.grant.config.keys() {
            lines.push(format!("  granted: config {k}"));
        }
        for e in &record.grant.egress {
            let addrs: Vec<String> = e.addresses.iter().map(ToString::to_string).collect();
            lines.push(format!(
                "  granted: egress {} ({})",
                e.destination,
                addrs.join(", ")
            ));
        }
        for d in &record.grant.denied {
            lines.push(format!("  denied: {} — {}", d.request, d.reason));
        }
        lines.push(format!(
            "  used: fuel {} of {}, peak memory {} of {} bytes, {} ms",
            r.fuel_used,
            record.grant.fuel,
            r.peak_memory_bytes,
            record.grant.memory_bytes,
            r.wall_time.as_millis()
        ));
        for item in &r.evidence {
            lines.push(format!(
                "  evidence item `{}` ({}, {} bytes, sha256 {})",
                escape(&item.label),
                escape(&item.media_type),
                item.size,
                hex::encode(&item.sha256[..8])
            ));
        }

        lines
    }
}
