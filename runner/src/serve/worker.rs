//! The worker threads: each takes a job off the board, runs it through its
//! own [`Session`] (verify, grant, run, record — the same steps as
//! `edge-runner run`, recorded in the job's lane of the shared log), queues
//! the record of how the job ended, and takes the next; the board shows the
//! job ended once that record is durable. Runs execute here, never on the
//! API's runtime, so a CPU-bound capsule cannot stall the API.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};

use crate::capsule::{Kind, RawCapsule};
use crate::evidence::events::{Event, JobCancelled, JobFinished};
use crate::evidence::{Entry, EvidenceError, SharedLog, SignedRecord};
use crate::sandbox::{CodeSource, Limits, RunStatus, Sandbox, SandboxError};
use crate::session::{Judged, RunRecord, Session, SessionError};
use crate::site::SitePolicy;

use super::Daemon;
use super::exit;
use super::jobs::{Ended, Work};
use super::metrics::Outcome;

/// Longest `detail` kept in a `job-finished` record.
const MAX_DETAIL_BYTES: usize = 1024;

/// Runs jobs until the board is drained.
pub(super) fn run(daemon: Arc<Daemon>, sandbox: Arc<Sandbox>, policy: SitePolicy) {
    let mut session = match Session::shared(daemon.log.clone(), sandbox, Limits::default(), policy)
    {
        Ok(session) => session,
        Err(e) => {
            tracing::error!(error = %e, "a worker could not start; its jobs go to the others");
            return;
        }
    };
    while let Some(work) = daemon.board.take() {
        daemon.metrics.started(work.accepted.elapsed());
        let started = std::time::Instant::now();
        let (end, ending) = settle(&mut session, &daemon, &work);
        // The job's end is queued, not waited for, behind its run's end
        // (also queued): the writer builds it from the job's records as they
        // stand then, and the board shows the job ended (and its client hears
        // so) only once the end is durable, from the writer's thread. This
        // worker takes the next job meanwhile; whatever that job records is
        // queued after this end, so it is never durable before it.
        let d = Arc::clone(&daemon);
        let (id, shutdown) = (work.id, Arc::clone(&work.shutdown));
        let listed = Arc::new(Mutex::new(Vec::new()));
        let lists = Arc::clone(&listed);
        let build = move |records: &[u64]| {
            *lists.lock().unwrap_or_else(PoisonError::into_inner) = records.to_vec();
            end(records.to_vec())
        };
        daemon
            .log
            .queue_then(Entry::FromLane(id, Box::new(build)), move |recorded| {
                let records =
                    std::mem::take(&mut *listed.lock().unwrap_or_else(PoisonError::into_inner));
                let ended = ending.ended(id, records, recorded);
                let outcome = metric_outcome(&ended, shutdown.load(Ordering::SeqCst));
                d.metrics.finished(outcome, Some(started.elapsed()));
                d.board.end(id, ended);
            });
    }
}

fn metric_outcome(ended: &Ended, shutdown: bool) -> Outcome {
    match ended.outcome.as_str() {
        "pass" => Outcome::Pass,
        "fail" => Outcome::Fail,
        "refused" => Outcome::Refused,
        "abnormal" => Outcome::Abnormal,
        "cancelled" if shutdown => Outcome::CancelledByShutdown,
        "cancelled" => Outcome::CancelledByClient,
        _ => Outcome::Error,
    }
}

/// What the job's run came to, before its end is recorded.
struct Settled {
    outcome: &'static str,
    exit: u8,
    lines: Vec<String>,
    detail: Option<String>,
}

/// How a job ends once its end record is durable: everything but its records.
struct Ending {
    outcome: String,
    exit: u8,
    lines: Vec<String>,
}

/// A job's end record, built from the job's records (those its end lists)
/// when the writer records it.
type End = Box<dyn FnOnce(Vec<u64>) -> Event + Send>;

impl Ending {
    /// The job's end as the board shows it, given the records its end
    /// record lists and how recording that record went.
    fn ended(
        self,
        id: u64,
        mut records: Vec<u64>,
        recorded: Result<SignedRecord, EvidenceError>,
    ) -> Ended {
        match recorded {
            Ok(signed) => {
                records.push(signed.record.seq);
                Ended {
                    outcome: self.outcome,
                    exit: self.exit,
                    records,
                    lines: self.lines,
                }
            }
            Err(e) => {
                // The end could not be recorded (the log failed): the job stays
                // open in the log and the next daemon records it abandoned.
                tracing::error!(job = id, error = %e, "could not record how a job ended");
                Ended {
                    outcome: "error".into(),
                    exit: exit::ERROR,
                    records: Vec::new(),
                    lines: vec![format!(
                        "the job's end could not be recorded ({e}); the next daemon start records it abandoned"
                    )],
                }
            }
        }
    }
}

/// Runs the job and returns how to build its end record, with how the job
/// ends once that record is durable.
fn settle(session: &mut Session<SharedLog>, daemon: &Daemon, work: &Work) -> (End, Ending) {
    session.set_job(Some(work.id));
    let outcome = attempt(session, daemon, work);
    session.set_job(None);
    let job = work.id;
    match outcome {
        Ok(Settled {
            outcome,
            exit,
            lines,
            detail,
        }) => (
            Box::new(move |records| {
                Event::from(JobFinished {
                    job,
                    outcome: outcome.into(),
                    exit,
                    records,
                    detail,
                })
            }),
            Ending {
                outcome: outcome.into(),
                exit,
                lines,
            },
        ),
        Err(Stopped { running }) => {
            let by = if work.shutdown.load(Ordering::SeqCst) {
                "shutdown"
            } else {
                "client"
            };
            (
                Box::new(move |_| {
                    Event::from(JobCancelled {
                        job,
                        by: by.into(),
                        running,
                    })
                }),
                Ending {
                    outcome: "cancelled".into(),
                    exit: exit::ABNORMAL,
                    lines: vec![if running {
                        format!("interrupted by the {by} while it ran")
                    } else {
                        format!("cancelled by the {by} before it ran")
                    }],
                },
            )
        }
    }
}

/// The job was stopped (cancel or shutdown) before it finished.
struct Stopped {
    running: bool,
}

fn clip(text: &str) -> String {
    let mut end = text.len().min(MAX_DETAIL_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

fn attempt(
    session: &mut Session<SharedLog>,
    daemon: &Daemon,
    work: &Work,
) -> Result<Settled, Stopped> {
    let refused = |why: String| Settled {
        outcome: "refused",
        exit: exit::REFUSED,
        lines: vec![format!("REFUSED: {why}")],
        detail: Some(clip(&why)),
    };
    let failed = |why: String| Settled {
        outcome: "error",
        exit: exit::ERROR,
        lines: vec![format!("error: {why}")],
        detail: Some(clip(&why)),
    };
    if work.cancel.load(Ordering::SeqCst) {
        return Err(Stopped { running: false });
    }
    let raw = || RawCapsule {
        component: work.capsule.as_ref().clone(),
        detached_signature: work.signature.clone(),
    };
    let root = match daemon.trust_root() {
        Ok(root) => root,
        Err(err) => {
            return Ok(match session.refuse_without_root(&raw(), err) {
                SessionError::Refused(err) => {
                    daemon.metrics.capsule_refused();
                    refused(err.to_string())
                }
                other => failed(other.to_string()),
            });
        }
    };
    // Bytes that do not parse go through `verify`, which records why.
    let verified = match daemon.parsed(work) {
        Some(checked) => {
            let signature = work.signature.as_ref().map(|s| Sha256::digest(s).into());
            session.verify_checked(checked, signature, &root)
        }
        None => session.verify(raw(), &root),
    };
    let admitted = match verified {
        Ok(admitted) => admitted,
        Err(SessionError::Refused(err)) => {
            daemon.metrics.capsule_refused();
            return Ok(refused(err.to_string()));
        }
        Err(other) => return Ok(failed(other.to_string())),
    };
    if admitted.capsule().manifest().kind == Kind::Remediate {
        // A proposal is staged by running the catalog's test capsules in the
        // same session, which a job's single run cannot hold; `run` does it.
        let why = "`remediate` capsules are not run by the daemon: run them with `edge-runner run`, which records, tiers and stages their proposals for review (docs/remediation.md)".to_string();
        return Ok(refused(why));
    }
    // The run's end is queued, not waited for: the job's end goes behind it.
    let record = match session.run_queued(admitted, &work.input, Some(&work.cancel)) {
        Ok((record, _finished)) => record,
        Err(SessionError::Sandbox(err @ SandboxError::CompileLimit { .. })) => {
            daemon.metrics.capsule_refused();
            return Ok(refused(err.to_string()));
        }
        Err(other) => return Ok(failed(other.to_string())),
    };
    if record.report.status == RunStatus::Interrupted {
        return Err(Stopped { running: true });
    }
    match record.report.code {
        CodeSource::Memory | CodeSource::Disk => daemon.metrics.cache_hit(),
        _ => daemon.metrics.cache_miss(),
    }
    let (outcome, exit) = judge(&record);
    Ok(Settled {
        outcome,
        exit,
        lines: record.lines(),
        detail: None,
    })
}

/// The outcome and exit code, as `edge-runner run` judges a run.
fn judge(record: &RunRecord) -> (&'static str, u8) {
    match record.judge() {
        Judged::Pass => ("pass", exit::PASS),
        Judged::Fail => ("fail", exit::FAIL),
        Judged::Abnormal => ("abnormal", exit::ABNORMAL),
    }
}
