//! Jobs in the evidence log (issue 15): every accepted job ends exactly
//! once, abandonment only follows a runner taking the log over, no job runs
//! twice, each job's records form their own lane; forged logs that break a
//! rule fail with the exact reason, and the rules survive resuming from a checkpoint.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use edge_runner::evidence::events::{
    CapsuleVerified, GrantRef, JobAbandoned, JobAccepted, JobCancelled, JobFinished, LoadShed,
    RunFinished, RunInterrupted, RunStarted, RunnerStarted, SitePolicyRef, Submitter, TrustRootRef,
};
use edge_runner::evidence::{self, Event, EvidenceLog, SharedLog};
use edge_runner::keys::{PublicKey, SecretKey};
use edge_runner::sandbox::{Limits, Sandbox};
use edge_runner::session::{Session, SessionError};
use edge_runner::site::SitePolicy;
use edge_runner_tests::*;

fn accept(job: u64) -> Event {
    Event::from(JobAccepted {
        job,
        submitter: Submitter {
            uid: 1000,
            gid: 1000,
            pid: 4242,
        },
        capsule_sha256: [9; 32],
        signature_sha256: None,
        input_sha256: [8; 32],
        idempotency_sha256: Some([7; 32]),
        queue_depth: 0,
    })
}

fn verified(job: Option<u64>, digest: u8) -> Event {
    Event::from(CapsuleVerified {
        name: format!("capsule-{digest}"),
        version: semver::Version::new(1, 0, 0),
        kind: "test".into(),
        module_sha256: [digest; 32],
        file_sha256: [digest; 32],
        signers: Vec::new(),
        trust_root: TrustRootRef {
            name: "test-root".into(),
            version: 1,
            sha256: [0; 32],
            development: false,
        },
        site: SITE.into(),
        checked_at: 1_800_000_000,
        signature_placement: "embedded".into(),
        audience: vec!["*".into()],
        not_before: 1_700_000_000,
        expires: 1_900_000_000,
        signature_sha256: None,
        trust_anchor: None,
        job,
    })
}

fn started(job: Option<u64>, digest: u8) -> Event {
    Event::from(RunStarted {
        module_sha256: [digest; 32],
        input_sha256: [0; 32],
        input_size: 0,
        grant: GrantRef {
            memory_bytes: 64 << 20,
            fuel: 1_000_000_000,
            wall_time_ms: 10_000,
            stdout_bytes: 65536,
            stderr_bytes: 65536,
            evidence_items: 64,
            evidence_bytes: 1 << 20,
            filesystem: Vec::new(),
            network: Vec::new(),
            deterministic: None,
            config: Vec::new(),
        },
        refused: Vec::new(),
        denied: Vec::new(),
        site_policy: SitePolicyRef {
            site: SITE.into(),
            sha256: None,
        },
        job,
    })
}

fn ran(job: Option<u64>, digest: u8, status: &str) -> Event {
    Event::from(RunFinished {
        module_sha256: [digest; 32],
        status: status.into(),
        usage: None,
        outcome: None,
        error: None,
        exit_code: None,
        compile_ms: None,
        truncated: Vec::new(),
        job,
    })
}

fn finished(job: u64, records: &[u64]) -> Event {
    Event::from(JobFinished {
        job,
        outcome: "pass".into(),
        exit: 0,
        records: records.to_vec(),
        detail: None,
    })
}

fn cancelled(job: u64, running: bool) -> Event {
    Event::from(JobCancelled {
        job,
        by: "shutdown".into(),
        running,
    })
}

fn abandoned(job: u64) -> Event {
    Event::from(JobAbandoned {
        job,
        reason: "the runner stopped".into(),
    })
}

fn takeover() -> Event {
    Event::from(RunnerStarted {
        runner_version: "0.1.0".into(),
    })
}

/// A log the runner key signed, holding `events` after its `log-opened`
/// record, as a runner that skipped the job rules would write it.
fn forged_log(events: Vec<Event>) -> (Vec<u8>, SecretKey) {
    let key = SecretKey::generate().unwrap();
    let opened = Event::from(evidence::events::LogOpened {
        runner_key: *key.public().as_bytes(),
        runner_version: "0.1.0".into(),
        torn_bytes_dropped: 0,
    });
    let mut prev = evidence::GENESIS_PREV;
    let mut bytes = Vec::new();
    for (seq, event) in std::iter::once(opened).chain(events).enumerate() {
        let record = evidence::Record {
            log_id: [7; 16],
            seq: seq as u64,
            prev,
            time_ms: 1_800_000_000_000 + seq as u64,
            event: event.name().into(),
            body: event.body(),
        };
        let signed = evidence::sign_record(record, &key).unwrap();
        prev = signed.hash;
        bytes.extend_from_slice(&signed.bytes);
    }
    (bytes, key)
}

/// The verifier's verdict on a forged log: its failure text, or the summary.
fn verdict(events: Vec<Event>) -> Result<evidence::Summary, String> {
    let (bytes, key) = forged_log(events);
    evidence::verify_log(&bytes, &key.public()).map_err(|f| f.to_string())
}

fn short(digest: u8) -> String {
    hex::encode([digest; 8])
}

#[test]
fn abandoned_without_restart() {
    assert_eq!(
        verdict(vec![accept(1), abandoned(1)]).unwrap_err(),
        "record 2 breaks the job rules: `job-abandoned` abandons job 1, but no `runner-started` or `restart` record follows its acceptance (record 1): only a runner that took the log over abandons a job"
    );
    // A takeover before the acceptance does not count; one after it does.
    assert!(verdict(vec![takeover(), accept(1), abandoned(1)]).is_err());
    verdict(vec![accept(1), takeover(), abandoned(1)]).unwrap();
}

#[test]
fn job_ran_twice() {
    assert_eq!(
        verdict(vec![
            accept(1),
            verified(Some(1), 1),
            started(Some(1), 1),
            ran(Some(1), 1, "completed"),
            started(Some(1), 1),
        ])
        .unwrap_err(),
        "record 5 breaks the job rules: job 1 ran twice: its run already started in record 3"
    );
}

#[test]
fn job_checked_twice() {
    assert_eq!(
        verdict(vec![accept(1), verified(Some(1), 1), verified(Some(1), 1)]).unwrap_err(),
        "record 3 breaks the job rules: `capsule-verified` checks job 1's capsule again, but record 2 already did (a job's capsule is checked once)"
    );
}

#[test]
fn job_ended_twice() {
    assert_eq!(
        verdict(vec![accept(1), finished(1, &[]), cancelled(1, false)]).unwrap_err(),
        "record 3 breaks the job rules: `job-cancelled` ends job 1, which has already ended (a job ends exactly once)"
    );
}

#[test]
fn end_of_unaccepted_job() {
    assert_eq!(
        verdict(vec![accept(1), finished(4, &[])]).unwrap_err(),
        "record 2 breaks the job rules: `job-finished` ends job 4, which no `job-accepted` record before it accepted"
    );
}

#[test]
fn record_in_ended_job() {
    assert_eq!(
        verdict(vec![accept(1), finished(1, &[]), verified(Some(1), 1)]).unwrap_err(),
        "record 3 breaks the job rules: `capsule-verified` belongs to job 1, which has already ended"
    );
}

#[test]
fn run_in_unaccepted_job() {
    assert_eq!(
        verdict(vec![verified(Some(9), 1)]).unwrap_err(),
        "record 1 breaks the job rules: `capsule-verified` names job 9, which no `job-accepted` record before it accepted"
    );
}

#[test]
fn duplicate_job_id() {
    assert_eq!(
        verdict(vec![accept(1), finished(1, &[]), accept(1)]).unwrap_err(),
        "record 3 breaks the job rules: `job-accepted` reuses job id 1, already accepted earlier in this log (a job id names one job)"
    );
    // Ids taken in order by concurrent submissions may land out of order.
    let summary = verdict(vec![accept(2), accept(1), accept(3)]).unwrap();
    assert_eq!(summary.jobs_in_flight, vec![1, 2, 3]);
}

#[test]
fn finished_with_run_open() {
    assert_eq!(
        verdict(vec![
            accept(1),
            verified(Some(1), 1),
            started(Some(1), 1),
            finished(1, &[2, 3]),
        ])
        .unwrap_err(),
        "record 4 breaks the job rules: `job-finished` ends job 1 while its run (record 3) is open; the run is closed by `run-finished` or `run-interrupted` of the job first"
    );
}

#[test]
fn abandoned_with_run_open() {
    // A runner taking over interrupts the run first, then abandons the job.
    let open = vec![
        accept(1),
        verified(Some(1), 1),
        started(Some(1), 1),
        takeover(),
    ];
    let mut bad = open.clone();
    bad.push(abandoned(1));
    assert_eq!(
        verdict(bad).unwrap_err(),
        "record 5 breaks the job rules: `job-abandoned` ends job 1 while its run (record 3) is open; the run is closed by `run-finished` or `run-interrupted` of the job first"
    );
    let mut good = open;
    good.push(Event::from(RunInterrupted {
        module_sha256: [1; 32],
        run_started: 3,
        reason: evidence::INTERRUPTED_REASON.into(),
        job: Some(1),
    }));
    good.push(abandoned(1));
    verdict(good).unwrap();
}

#[test]
fn finished_listing_another_jobs_record() {
    assert_eq!(
        verdict(vec![
            accept(1),
            accept(2),
            verified(Some(1), 1),
            verified(Some(2), 2),
            finished(1, &[3, 4]),
        ])
        .unwrap_err(),
        "record 5 breaks the job rules: `job-finished` of job 1 lists record 4, which is not a record of job 1"
    );
}

#[test]
fn cancelled_running_job_whose_run_never_started() {
    assert_eq!(
        verdict(vec![accept(1), cancelled(1, true)]).unwrap_err(),
        "record 2 breaks the job rules: `job-cancelled` says job 1's run had started, but no `run-started` record of job 1 shows it"
    );
    // Shutdown interrupts a running job: its run ends `interrupted`, then the job is cancelled.
    verdict(vec![
        accept(1),
        verified(Some(1), 1),
        started(Some(1), 1),
        ran(Some(1), 1, "interrupted"),
        cancelled(1, true),
    ])
    .unwrap();
}

#[test]
fn run_admitted_in_another_jobs_lane() {
    // Job 1's verification does not admit job 2's run.
    assert_eq!(
        verdict(vec![
            accept(1),
            accept(2),
            verified(Some(1), 1),
            started(Some(2), 1),
        ])
        .unwrap_err(),
        format!(
            "record 4: `run-started` of job 2 runs module {}, but no `capsule-verified` record of job 2 admitted any capsule",
            short(1)
        )
    );
}

#[test]
fn overlapping_load_shed_summaries() {
    let shed = |from_ms, until_ms| {
        let mut rejected = BTreeMap::new();
        rejected.insert("queue_full".to_string(), 1000);
        Event::from(LoadShed {
            from_ms,
            until_ms,
            rejected,
        })
    };
    assert_eq!(
        verdict(vec![shed(1000, 2000), shed(1500, 3000)]).unwrap_err(),
        "record 2 breaks the job rules: `load-shed` interval starts at 1500, before the previous one ended (2000): summaries never overlap"
    );
    verdict(vec![shed(1000, 2000), shed(2000, 3000)]).unwrap();
}

#[test]
fn interleaved_lanes_are_valid_and_open_jobs_are_in_flight() {
    // Two jobs' runs interleaved, with a run outside any job between them.
    let summary = verdict(vec![
        accept(1),                    // 1
        accept(2),                    // 2
        verified(Some(1), 1),         // 3
        verified(Some(2), 2),         // 4
        verified(None, 3),            // 5
        started(Some(2), 2),          // 6
        started(Some(1), 1),          // 7
        started(None, 3),             // 8
        ran(Some(1), 1, "completed"), // 9
        ran(None, 3, "completed"),    // 10
        ran(Some(2), 2, "completed"), // 11
        finished(2, &[4, 6, 11]),     // 12
        accept(3),                    // 13
        finished(1, &[3, 7, 9]),      // 14
        accept(4),                    // 15
        verified(Some(4), 4),         // 16
    ])
    .unwrap();
    assert_eq!(summary.jobs_in_flight, vec![3, 4]);
    assert_eq!(
        (
            summary.job_counts.accepted,
            summary.job_counts.finished,
            summary.job_counts.cancelled,
            summary.job_counts.abandoned
        ),
        (4, 2, 0, 0)
    );
}

/// Every record of a log signed by `key`, with its byte offset.
fn records_at(bytes: &[u8], key: &edge_runner::keys::PublicKey) -> Vec<(usize, evidence::Record)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (_, len) = edge_runner::cbor::decode_prefix(&bytes[at..]).unwrap();
        out.push((
            at,
            evidence::decode_record(&bytes[at..at + len], key).unwrap(),
        ));
        at += len;
    }
    out
}

#[test]
fn jobs_open_across_a_checkpoint_resume_and_verify_as_a_range() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let public = key.public();
    let copy = SecretKey::from_pem(&key.to_pem().unwrap(), Path::new("mem")).unwrap();
    let mut log = EvidenceLog::open(dir.path(), key).unwrap();
    for r in log.record_each(vec![
        accept(1),
        accept(2),
        verified(Some(1), 1),
        started(Some(1), 1),
    ]) {
        r.unwrap();
    }
    // The checkpoint's signed state carries both open jobs and job 1's open run.
    log.checkpoint().unwrap();
    drop(log);
    // Reopened from that state (the resume pointer): the rules go on where they were.
    let mut log = EvidenceLog::open(dir.path(), copy).unwrap();
    assert_eq!(log.open_jobs(), vec![1, 2]);
    assert_eq!(log.next_job(), 3);
    assert_eq!(log.open_runs(), vec![(Some(1), 4, [1; 32])]);
    assert_eq!(log.job_records(1), Some(vec![3, 4]));
    let done = log.record(&ran(Some(1), 1, "completed")).unwrap();
    log.record(&finished(1, &[3, 4, done.record.seq])).unwrap();
    // A job that ended does not run again, resumed or not.
    let again = log.record(&started(Some(1), 1)).unwrap_err();
    assert_eq!(
        again.to_string(),
        format!(
            "could not encode an evidence record: refusing to record it: record {} breaks the job rules: `run-started` belongs to job 1, which has already ended",
            done.record.seq + 2
        )
    );
    drop(log);
    let bytes = evidence::read_log_dir(dir.path(), u64::MAX).unwrap();
    let whole = evidence::verify_log(&bytes, &public).unwrap();
    assert_eq!(whole.jobs_in_flight, vec![2]);
    // A range from the checkpoint with jobs open verifies on its own, to the same verdict.
    let records = records_at(&bytes, &public);
    let (offset, cp) = records
        .iter()
        .find(|(_, r)| r.event == "checkpoint" && r.seq == 5)
        .unwrap();
    assert_eq!(cp.seq, 5);
    let range =
        evidence::verify_range_with_progress(&bytes[*offset..], &public, &mut |_, _| {}).unwrap();
    assert_eq!(range.jobs_in_flight, vec![2]);
    assert_eq!(range.head, whole.head);
}

#[test]
fn a_runner_taking_over_interrupts_every_lane_and_abandons_open_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let public = key.public();
    let copy = SecretKey::from_pem(&key.to_pem().unwrap(), Path::new("mem")).unwrap();
    let mut log = EvidenceLog::open(dir.path(), key).unwrap();
    for r in log.record_each(vec![
        accept(1),
        accept(2),
        verified(Some(1), 1),
        started(Some(1), 1),
        verified(None, 3),
        started(None, 3),
    ]) {
        r.unwrap();
    }
    drop(log); // as a crash leaves it: jobs and runs open
    let mut log = EvidenceLog::open(dir.path(), copy).unwrap();
    let jobs = evidence::abandon_open_jobs(&mut log, evidence::ABANDONED_REASON).unwrap();
    assert_eq!(jobs, vec![1, 2]);
    assert!(log.open_jobs().is_empty() && log.open_runs().is_empty());
    drop(log);
    let bytes = evidence::read_log_dir(dir.path(), u64::MAX).unwrap();
    let summary = evidence::verify_log(&bytes, &public).unwrap();
    assert!(summary.jobs_in_flight.is_empty());
    assert_eq!(summary.job_counts.abandoned, 2);
    let names: Vec<_> = summary
        .events
        .iter()
        .map(|e| e.name().to_string())
        .collect();
    let tail: Vec<_> = names.iter().rev().take(5).rev().cloned().collect();
    assert_eq!(
        tail,
        [
            "run-interrupted",
            "run-interrupted",
            "job-abandoned",
            "job-abandoned",
            "checkpoint"
        ]
    );
}

/// Jobs through `Session::shared` on two worker threads and one shared
/// writer: every job ends once, the lanes interleave, and the log verifies.
#[test]
fn sessions_on_worker_threads_share_one_log() {
    let publisher = Publisher::new("acme-ci", "Acme", &["test"]);
    let root = trust_root(&[&publisher]);
    let capsule = signed_json_assert(&publisher.key);
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let public = key.public();
    let mut log = EvidenceLog::open(dir.path(), key).unwrap();
    evidence::abandon_open_jobs(&mut log, evidence::ABANDONED_REASON).unwrap();
    let next = AtomicU64::new(log.next_job());
    let shared = SharedLog::start(log);
    let sandbox = Arc::new(Sandbox::new().unwrap());
    let per_worker = 4;
    std::thread::scope(|scope| {
        for _ in 0..2 {
            let (shared, sandbox) = (shared.clone(), Arc::clone(&sandbox));
            let (root, capsule, next) = (&root, &capsule, &next);
            scope.spawn(move || {
                let policy = SitePolicy::deny_all(SITE).unwrap();
                let mut session =
                    Session::shared(shared.clone(), sandbox, Limits::default(), policy).unwrap();
                for _ in 0..per_worker {
                    let job = next.fetch_add(1, Ordering::Relaxed);
                    shared.record(accept(job)).unwrap();
                    session.set_job(Some(job));
                    let admitted = session.verify(raw(capsule.clone()), root).unwrap();
                    session.run(admitted, PASSING_INPUT.as_bytes()).unwrap();
                    let records = shared.with(|l| l.job_records(job)).unwrap().unwrap();
                    assert_eq!(records.len(), 3);
                    shared.record(finished(job, &records)).unwrap();
                }
            });
        }
    });
    shared.close().unwrap();
    let bytes = evidence::read_log_dir(dir.path(), u64::MAX).unwrap();
    let summary = evidence::verify_log(&bytes, &public).unwrap();
    assert!(summary.jobs_in_flight.is_empty());
    assert_eq!(summary.job_counts.accepted, 2 * per_worker);
    assert_eq!(summary.job_counts.finished, 2 * per_worker);
}

#[test]
fn capsule_admitted_for_another_job_is_refused() {
    let publisher = Publisher::new("acme-ci", "Acme", &["test"]);
    let root = trust_root(&[&publisher]);
    let dir = tempfile::tempdir().unwrap();
    let shared =
        SharedLog::start(EvidenceLog::open(dir.path(), SecretKey::generate().unwrap()).unwrap());
    let policy = SitePolicy::deny_all(SITE).unwrap();
    let mut session = Session::shared(
        shared.clone(),
        Arc::new(Sandbox::new().unwrap()),
        Limits::default(),
        policy,
    )
    .unwrap();
    shared.record(accept(1)).unwrap();
    shared.record(accept(2)).unwrap();
    session.set_job(Some(1));
    let admitted = session
        .verify(raw(signed_json_assert(&publisher.key)), &root)
        .unwrap();
    session.set_job(Some(2));
    let err = session.run(admitted, PASSING_INPUT.as_bytes()).unwrap_err();
    assert!(matches!(err, SessionError::NotAdmittedHere { .. }));
    assert_eq!(
        err.to_string(),
        "capsule `json-assert 1.0.0` was not admitted by this session (it was verified for job 1, and this session now records job 2); verify it in this session, then run it"
    );
    shared.close().unwrap();
}

/// A shared log in `dir` with a fresh runner key, a session on it at
/// [`SITE`] with nothing granted, and the key's public half.
fn shared_session(dir: &Path) -> (SharedLog, Session<SharedLog>, PublicKey) {
    let key = SecretKey::generate().unwrap();
    let public = key.public();
    let shared = SharedLog::start(EvidenceLog::open(dir, key).unwrap());
    let session = Session::shared(
        shared.clone(),
        Arc::new(Sandbox::new().unwrap()),
        Limits::default(),
        SitePolicy::deny_all(SITE).unwrap(),
    )
    .unwrap();
    (shared, session, public)
}

/// In a job on a shared log, a verification is queued, not waited for: it
/// has no record number until the run makes it durable with `run-started`.
/// Only the session's newest verification may run, and only once the log
/// has accepted it; the log stays valid.
#[test]
fn a_jobs_verification_is_queued_and_only_the_newest_runs() {
    let publisher = Publisher::new("acme-ci", "Acme", &["test"]);
    let root = trust_root(&[&publisher]);
    let dir = tempfile::tempdir().unwrap();
    let (shared, mut session, public) = shared_session(dir.path());
    shared.record(accept(1)).unwrap();
    session.set_job(Some(1));
    let first = session
        .verify(raw(signed_json_assert(&publisher.key)), &root)
        .unwrap();
    let second = session
        .verify(raw(signed_json_assert(&publisher.key)), &root)
        .unwrap();
    assert_eq!((first.record(), second.record()), (None, None));
    let err = session.run(first, PASSING_INPUT.as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "capsule `json-assert 1.0.0` was not admitted by this session (it is this session's verification 1, but a newer capsule was verified since (verification 2)); verify it in this session, then run it"
    );
    // A job's capsule is checked once: the log refuses the second
    // verification when it reaches it, and the run it admitted does not
    // start; the refusal named is the verification's, not the run's.
    let err = session.run(second, PASSING_INPUT.as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "could not encode an evidence record: refusing to record it: record 3 breaks the job rules: `capsule-verified` checks job 1's capsule again, but record 2 already did (a job's capsule is checked once)"
    );
    let records = shared.with(|l| l.job_records(1)).unwrap().unwrap();
    assert_eq!(records, [2]);
    shared.record(finished(1, &records)).unwrap();
    shared.close().unwrap();
    let bytes = evidence::read_log_dir(dir.path(), u64::MAX).unwrap();
    let summary = evidence::verify_log(&bytes, &public).unwrap();
    assert_eq!(summary.job_counts.finished, 1);
}

/// Interleaved jobs' runs are each credited to the capsule their own job
/// verified, and the report counts the jobs and lists those in flight.
#[test]
fn report_credits_interleaved_runs_to_their_own_jobs() {
    let (bytes, key) = forged_log(vec![
        accept(1),                    // 1
        accept(2),                    // 2
        verified(Some(1), 1),         // 3
        verified(Some(2), 2),         // 4
        started(Some(2), 2),          // 5
        started(Some(1), 1),          // 6
        ran(Some(1), 1, "completed"), // 7
        ran(Some(2), 2, "trap"),      // 8
        finished(1, &[3, 6, 7]),      // 9
    ]);
    let report = edge_runner::audit::verify_log_report(&bytes, &key.public(), &[], &mut |_, _| {});
    assert!(report.valid(), "{:?}", report.failure);
    let runs: Vec<_> = report
        .runs
        .iter()
        .map(|r| (r.record, r.capsule.as_str(), r.status.as_str(), r.job))
        .collect();
    assert_eq!(
        runs,
        [
            (7, "capsule-1 1.0.0", "completed", Some(1)),
            (8, "capsule-2 1.0.0", "trap", Some(2)),
        ]
    );
    assert_eq!(report.jobs_in_flight, vec![2]);
    assert_eq!((report.jobs.accepted, report.jobs.finished), (2, 1));
    assert!(report.unfinished.is_empty());
}

/// A job whose capsule is refused: the refusal carries the job, and the job
/// ends `refused` listing it.
#[test]
fn refused_capsule_is_recorded_in_its_job() {
    let publisher = Publisher::new("acme-ci", "Acme", &["test"]);
    let root = trust_root(&[&publisher]);
    let dir = tempfile::tempdir().unwrap();
    let (shared, mut session, public) = shared_session(dir.path());
    shared.record(accept(3)).unwrap();
    session.set_job(Some(3));
    let mut tampered = signed_json_assert(&publisher.key);
    tampered[500] ^= 1;
    assert!(matches!(
        session.verify(raw(tampered), &root),
        Err(SessionError::Refused(_))
    ));
    let records = shared.with(|l| l.job_records(3)).unwrap().unwrap();
    assert_eq!(records.len(), 1);
    shared
        .record(Event::from(JobFinished {
            job: 3,
            outcome: "refused".into(),
            exit: 3,
            records,
            detail: None,
        }))
        .unwrap();
    shared.close().unwrap();
    let bytes = evidence::read_log_dir(dir.path(), u64::MAX).unwrap();
    let summary = evidence::verify_log(&bytes, &public).unwrap();
    let refused = summary
        .events
        .iter()
        .find_map(|e| match e {
            Event::CapsuleRefused(r) => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(refused.job, Some(3));
    assert!(summary.jobs_in_flight.is_empty());
}
