//! The worker threads: each takes a job off the board, runs it through its
//! own [`Session`] (verify, grant, run, record — the same steps as
//! `edge-runner run`, recorded in the job's lane of the shared log), records
//! how the job ended, and takes the next. Runs execute here, never on the
//! API's runtime, so a CPU-bound capsule cannot stall the API.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::capsule::{Kind, RawCapsule};
use crate::evidence::SharedLog;
use crate::evidence::events::{Event, JobCancelled, JobFinished};
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
        let ended = match run_job(&mut session, &daemon, &work) {
            Ok(ended) => ended,
            Err(e) => {
                // The end could not be recorded (the log failed): the job stays
                // open in the log and the next daemon records it abandoned.
                tracing::error!(job = work.id, error = %e, "could not record how a job ended");
                Ended {
                    outcome: "error".into(),
                    exit: exit::ERROR,
                    records: Vec::new(),
                    lines: vec![format!(
                        "the job's end could not be recorded ({e}); the next daemon start records it abandoned"
                    )],
                }
            }
        };
        daemon
            .metrics
            .finished(metric_outcome(&ended, &work), Some(started.elapsed()));
        daemon.board.end(work.id, ended);
    }
}

fn metric_outcome(ended: &Ended, work: &Work) -> Outcome {
    match ended.outcome.as_str() {
        "pass" => Outcome::Pass,
        "fail" => Outcome::Fail,
        "refused" => Outcome::Refused,
        "abnormal" => Outcome::Abnormal,
        "cancelled" if work.shutdown.load(Ordering::SeqCst) => Outcome::CancelledByShutdown,
        "cancelled" => Outcome::CancelledByClient,
        _ => Outcome::Error,
    }
}

/// What the job's run came to, before its end is recorded.
struct Settled {
    outcome: &'static str,
    exit: u8,
    records: Vec<u64>,
    lines: Vec<String>,
    detail: Option<String>,
}

fn run_job(
    session: &mut Session<SharedLog>,
    daemon: &Daemon,
    work: &Work,
) -> Result<Ended, crate::evidence::EvidenceError> {
    session.set_job(Some(work.id));
    let outcome = attempt(session, daemon, work);
    session.set_job(None);
    let Settled {
        outcome,
        exit,
        mut records,
        lines,
        detail,
    } = match outcome {
        Ok(o) => o,
        Err(Stopped { records, running }) => {
            let by = if work.shutdown.load(Ordering::SeqCst) {
                "shutdown"
            } else {
                "client"
            };
            let signed = daemon.log.record(Event::from(JobCancelled {
                job: work.id,
                by: by.into(),
                running,
            }))?;
            let mut records = records;
            records.push(signed.record.seq);
            return Ok(Ended {
                outcome: "cancelled".into(),
                exit: exit::ABNORMAL,
                records,
                lines: vec![if running {
                    format!("interrupted by the {by} while it ran")
                } else {
                    format!("cancelled by the {by} before it ran")
                }],
            });
        }
    };
    let signed = daemon.log.record(Event::from(JobFinished {
        job: work.id,
        outcome: outcome.into(),
        exit,
        records: records.clone(),
        detail,
    }))?;
    records.push(signed.record.seq);
    Ok(Ended {
        outcome: outcome.into(),
        exit,
        records,
        lines,
    })
}

/// The job was stopped (cancel or shutdown) before it finished.
struct Stopped {
    records: Vec<u64>,
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
    let refused = |records: Vec<u64>, why: String| Settled {
        outcome: "refused",
        exit: exit::REFUSED,
        records,
        lines: vec![format!("REFUSED: {why}")],
        detail: Some(clip(&why)),
    };
    let failed = |records: Vec<u64>, why: String| Settled {
        outcome: "error",
        exit: exit::ERROR,
        records,
        lines: vec![format!("error: {why}")],
        detail: Some(clip(&why)),
    };
    if work.cancel.load(Ordering::SeqCst) {
        return Err(Stopped {
            records: Vec::new(),
            running: false,
        });
    }
    let raw = RawCapsule {
        component: work.capsule.as_ref().clone(),
        detached_signature: work.signature.clone(),
    };
    let root = match daemon.trust_root() {
        Ok(root) => root,
        Err(err) => {
            return Ok(match session.refuse_without_root(&raw, err) {
                SessionError::Refused(err) => {
                    daemon.metrics.capsule_refused();
                    refused(session.job_records(), err.to_string())
                }
                other => failed(session.job_records(), other.to_string()),
            });
        }
    };
    let admitted = match session.verify(raw, &root) {
        Ok(admitted) => admitted,
        Err(SessionError::Refused(err)) => {
            daemon.metrics.capsule_refused();
            return Ok(refused(session.job_records(), err.to_string()));
        }
        Err(other) => return Ok(failed(session.job_records(), other.to_string())),
    };
    if admitted.capsule().manifest().kind == Kind::Remediate {
        // A proposal is staged by running the catalog's test capsules in the
        // same session, which a job's single run cannot hold; `run` does it.
        let why = "`remediate` capsules are not run by the daemon: run them with `edge-runner run`, which records, tiers and stages their proposals for review (docs/remediation.md)".to_string();
        return Ok(refused(session.job_records(), why));
    }
    let record = match session.run_until(admitted, &work.input, Some(&work.cancel)) {
        Ok(record) => record,
        Err(SessionError::Sandbox(err @ SandboxError::CompileLimit { .. })) => {
            daemon.metrics.capsule_refused();
            return Ok(refused(session.job_records(), err.to_string()));
        }
        Err(other) => return Ok(failed(session.job_records(), other.to_string())),
    };
    let records = session.job_records();
    if record.report.status == RunStatus::Interrupted {
        return Err(Stopped {
            records,
            running: true,
        });
    }
    match record.report.code {
        CodeSource::Memory | CodeSource::Disk => daemon.metrics.cache_hit(),
        _ => daemon.metrics.cache_miss(),
    }
    let (outcome, exit) = judge(&record);
    Ok(Settled {
        outcome,
        exit,
        records,
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
