//! One evidence log shared by many threads: a writer thread owns the
//! [`EvidenceLog`] and group-commits what concurrent callers record — one
//! write and one `fdatasync` for every record waiting — and answers each
//! caller only once its record is durable. Records keep the order in which
//! the writer took them; each is judged by the log's rules as it would be
//! alone (a refused record is refused alone). This module owns the queue and
//! the thread, never the format or the rules, which stay in [`EvidenceLog`].

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::log::Entry;
use super::{Event, EvidenceError, EvidenceLog, SignedRecord};
use crate::trust::HighWater;

/// What the writer has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Records made durable.
    pub records: u64,
    /// Group commits (each one write and one `fdatasync`) that wrote records.
    pub batches: u64,
    /// Most records in one group commit.
    pub max_batch: u64,
    /// Time spent writing and syncing, summed over `fsync_count` commits.
    pub fsync_latency_sum: Duration,
    /// Commits timed in `fsync_latency_sum`.
    pub fsync_count: u64,
    /// What the newest group commit's write or `fdatasync` failed with, or
    /// `None` when it succeeded (cleared by the next commit that succeeds).
    pub last_fsync_error: Option<String>,
}

/// Called on the writer thread with a record's result once it is durable
/// (or refused); see [`SharedLog::record_then`].
type Then = Box<dyn FnOnce(Result<SignedRecord, EvidenceError>) + Send>;

/// How a caller hears about its record.
enum Reply {
    /// It waits on this channel.
    Wait(SyncSender<Result<SignedRecord, EvidenceError>>),
    /// It went on; this runs instead.
    Then(Then),
}

impl Reply {
    fn send(self, result: Result<SignedRecord, EvidenceError>) {
        match self {
            // A caller that went away no longer waits for its answer.
            Reply::Wait(channel) => {
                let _ = channel.send(result);
            }
            Reply::Then(then) => then(result),
        }
    }
}

/// A queued record's answer ([`SharedLog::queue`]): wait for it before
/// relying on the record, or on anything queued after it.
#[derive(Debug)]
#[must_use = "a queued record is durable only once its receipt says so"]
pub struct Receipt(Answer);

#[derive(Debug)]
enum Answer {
    Ready(Result<SignedRecord, EvidenceError>),
    Waiting(Receiver<Result<SignedRecord, EvidenceError>>),
}

impl Receipt {
    /// A receipt already answered (a log recording in the caller's thread).
    pub(crate) fn ready(result: Result<SignedRecord, EvidenceError>) -> Receipt {
        Receipt(Answer::Ready(result))
    }

    /// The record once it is durable, or why it was not recorded.
    pub fn wait(self) -> Result<SignedRecord, EvidenceError> {
        match self.0 {
            Answer::Ready(result) => result,
            // The writer answers every record it takes; no answer means it stopped.
            Answer::Waiting(answer) => answer.recv().unwrap_or(Err(EvidenceError::Closed)),
        }
    }
}

/// Called after every group commit that wrote records, with the time its
/// write and `fdatasync` took and how many records it made durable.
pub type CommitObserver = Box<dyn Fn(Duration, u64) + Send>;

#[derive(Default)]
struct Queue {
    pending: Vec<(Entry, Reply)>,
    closing: bool,
}

struct Inner {
    /// The log; `None` once closed.
    log: Mutex<Option<EvidenceLog>>,
    queue: Mutex<Queue>,
    wake: Condvar,
    /// The log's high-water marks as of its newest group commit: read
    /// without waiting for a commit in progress.
    high_water: Mutex<Arc<HighWater>>,
    stats: Mutex<WriterStats>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Closes the log when the last [`SharedLog`] handle goes without `close`.
struct Handle(Arc<Inner>);

impl Drop for Handle {
    fn drop(&mut self) {
        // The log's own `Drop` writes the closing checkpoint; its error is logged there.
        drop(stop(&self.0));
    }
}

/// An [`EvidenceLog`] shared by threads; clones are handles to the same log.
#[derive(Clone)]
pub struct SharedLog {
    inner: Arc<Inner>,
    _handle: Arc<Handle>,
}

impl std::fmt::Debug for SharedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLog")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in a caller's `with` closure leaves the data as it was between
    // batches (every batch updates the log only once it is durable).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SharedLog {
    /// Starts the writer thread over `log`.
    pub fn start(log: EvidenceLog) -> SharedLog {
        Self::start_observed(log, Box::new(|_, _| {}))
    }

    /// [`SharedLog::start`], calling `observer` after each group commit (on
    /// the writer thread, so it must be quick: e.g. a metrics histogram).
    pub fn start_observed(mut log: EvidenceLog, observer: CommitObserver) -> SharedLog {
        log.publish_checkpoints_in_background();
        let high_water = Mutex::new(Arc::new(log.high_water().clone()));
        let inner = Arc::new(Inner {
            high_water,
            log: Mutex::new(Some(log)),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            stats: Mutex::new(WriterStats::default()),
            thread: Mutex::new(None),
        });
        let writer = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("evidence-writer".into())
            .spawn(move || write_loop(&writer, &observer));
        match thread {
            Ok(t) => *lock(&inner.thread) = Some(t),
            // Without a thread, every record is refused as closed; the log
            // itself is closed (with its checkpoint) when the handles go.
            Err(e) => {
                tracing::error!("could not start the evidence writer thread: {e}");
                lock(&inner.queue).closing = true;
            }
        }
        SharedLog {
            _handle: Arc::new(Handle(Arc::clone(&inner))),
            inner,
        }
    }

    /// Records `event` and returns once it is durable. Concurrent callers
    /// are group-committed: one write and one `fdatasync` for everything
    /// waiting. Must not be called from inside [`SharedLog::with`].
    pub fn record(&self, event: Event) -> Result<SignedRecord, EvidenceError> {
        self.queue(Entry::Event(event)).wait()
    }

    /// Queues `entry` and returns at once; its receipt answers once it is
    /// durable (or refused, or the log closed). Entries are recorded in the
    /// order they were queued, so a caller that queues two records and waits
    /// for the second has both durable in one group commit, not two.
    pub fn queue(&self, entry: Entry) -> Receipt {
        let (reply, answer) = sync_channel(1);
        match self.enqueue(entry, Reply::Wait(reply)) {
            Ok(()) => Receipt(Answer::Waiting(answer)),
            Err(_) => Receipt::ready(Err(EvidenceError::Closed)),
        }
    }

    /// Records `event` without waiting: `then` is called with its result
    /// once it is durable (or refused, or the log closed), in the order
    /// records were queued — so a record queued after this one by the same
    /// thread is never durable before it. `then` runs on the writer thread:
    /// it must be quick and must not record (the writer would wait for itself).
    pub fn record_then(
        &self,
        event: Event,
        then: impl FnOnce(Result<SignedRecord, EvidenceError>) + Send + 'static,
    ) {
        self.queue_then(Entry::Event(event), then);
    }

    /// [`SharedLog::record_then`] of an entry (one built as it is recorded).
    pub fn queue_then(
        &self,
        entry: Entry,
        then: impl FnOnce(Result<SignedRecord, EvidenceError>) + Send + 'static,
    ) {
        if let Err(Reply::Then(then)) = self.enqueue(entry, Reply::Then(Box::new(then))) {
            then(Err(EvidenceError::Closed));
        }
    }

    /// The log's high-water marks as of its newest group commit, without
    /// waiting for the one in progress (whose records the log's rules judge
    /// against the marks as they stand then).
    pub fn high_water(&self) -> Arc<HighWater> {
        Arc::clone(&lock(&self.inner.high_water))
    }

    /// Queues `entry` for the writer, or hands `reply` back when the log is closing.
    fn enqueue(&self, event: Entry, reply: Reply) -> Result<(), Reply> {
        {
            let mut queue = lock(&self.inner.queue);
            if queue.closing {
                return Err(reply);
            }
            queue.pending.push((event, reply));
        }
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Runs `f` on the log between group commits (reads, `commit`,
    /// `checkpoint`); `Err(Closed)` once the log is closed. `f` must not
    /// call [`SharedLog::record`] (the writer waits for `f` to return).
    pub fn with<R: Send>(
        &self,
        f: impl FnOnce(&mut EvidenceLog) -> R + Send,
    ) -> Result<R, EvidenceError> {
        match lock(&self.inner.log).as_mut() {
            Some(log) => Ok(f(log)),
            None => Err(EvidenceError::Closed),
        }
    }

    /// What the writer has done so far.
    pub fn stats(&self) -> WriterStats {
        lock(&self.inner.stats).clone()
    }

    /// Answers the records already waiting, stops the writer, writes a
    /// final checkpoint and closes the log. Every handle then refuses records as closed.
    pub fn close(self) -> Result<(), EvidenceError> {
        match stop(&self.inner) {
            Some(log) => log.close(),
            None => Ok(()),
        }
    }
}

/// Stops the writer after it answered everything queued, and takes the log
/// out (`None` when another handle already did).
fn stop(inner: &Inner) -> Option<EvidenceLog> {
    lock(&inner.queue).closing = true;
    inner.wake.notify_all();
    if let Some(thread) = lock(&inner.thread).take()
        && thread.join().is_err()
    {
        tracing::error!("the evidence writer thread panicked");
    }
    // Anything queued after the writer stopped is answered as closed.
    for (_, reply) in std::mem::take(&mut lock(&inner.queue).pending) {
        reply.send(Err(EvidenceError::Closed));
    }
    lock(&inner.log).take()
}

fn write_loop(inner: &Inner, observer: &CommitObserver) {
    loop {
        let batch = {
            let mut queue = lock(&inner.queue);
            while queue.pending.is_empty() && !queue.closing {
                queue = inner
                    .wake
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if queue.pending.is_empty() {
                return;
            }
            std::mem::take(&mut queue.pending)
        };
        let (entries, replies): (Vec<Entry>, Vec<Reply>) = batch.into_iter().unzip();
        let n = entries.len();
        let mut log = lock(&inner.log);
        let (results, sync) = match log.as_mut() {
            Some(log) => {
                let results = log.record_entries(entries);
                (results, log.last_sync())
            }
            None => (
                (0..n).map(|_| Err(EvidenceError::Closed)).collect(),
                Duration::ZERO,
            ),
        };
        let written = results.iter().filter(|r| r.is_ok()).count() as u64;
        {
            let mut stats = lock(&inner.stats);
            let failed = results.iter().find_map(|r| match r {
                Err(e @ EvidenceError::Io { .. }) => Some(e.to_string()),
                _ => None,
            });
            if written > 0 {
                stats.records += written;
                stats.batches += 1;
                stats.max_batch = stats.max_batch.max(written);
                stats.fsync_latency_sum += sync;
                stats.fsync_count += 1;
                stats.last_fsync_error = None;
            } else if failed.is_some() {
                stats.last_fsync_error = failed;
            }
        }
        if written > 0 {
            observer(sync, written);
        }
        if let Some(log) = log.as_ref().filter(|_| written > 0) {
            let mut published = lock(&inner.high_water);
            if **published != *log.high_water() {
                *published = Arc::new(log.high_water().clone());
            }
        }
        // Answers run without the log's lock: a `then` may read the log.
        drop(log);
        for (reply, result) in replies.into_iter().zip(results) {
            reply.send(result);
        }
        // Callers hear first; the checkpoint a commit made due comes after.
        if let Some(log) = lock(&inner.log).as_mut() {
            log.checkpoint_if_due();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

    use super::*;
    use crate::evidence::Landed;
    use crate::evidence::events::{JobAccepted, JobFinished, Submitter, UnknownEvent};
    use crate::evidence::{read_log_dir, verify_log};
    use crate::keys::SecretKey;

    fn note(thread: u64, i: u64) -> Event {
        Event::Unknown(UnknownEvent {
            name: "test-note".into(),
            body: crate::cbor::text_map([
                ("thread", ciborium::Value::Integer(thread.into())),
                ("i", ciborium::Value::Integer(i.into())),
            ]),
        })
    }

    fn key_pair() -> (SecretKey, crate::keys::PublicKey) {
        let key = SecretKey::generate().unwrap();
        let public = key.public();
        (key, public)
    }

    /// Every record a caller was told is durable is in the verified log, at
    /// the place it was told, and concurrent callers share group commits.
    #[test]
    fn every_acknowledged_record_is_in_the_verified_log_and_commits_group() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = key_pair();
        let shared = SharedLog::start(EvidenceLog::open(dir.path(), key).unwrap());
        let (threads, each) = (16u64, 40u64);
        let acknowledged: Vec<SignedRecord> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let log = shared.clone();
                    scope.spawn(move || {
                        (0..each)
                            .map(|i| log.record(note(t, i)).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let stats = shared.stats();
        assert_eq!(stats.records, threads * each);
        assert!(
            stats.batches < stats.records,
            "no group commit happened: {stats:?}"
        );
        assert!(stats.max_batch > 1 && stats.last_fsync_error.is_none());
        shared.close().unwrap();
        let bytes = read_log_dir(dir.path(), u64::MAX).unwrap();
        let summary = verify_log(&bytes, &public).unwrap();
        for signed in &acknowledged {
            let at = &summary.records[signed.record.seq as usize];
            assert_eq!(at.hash, signed.hash);
        }
        // The closing checkpoint is the last record.
        assert_eq!(summary.records.last().unwrap().record.event, "checkpoint");
    }

    #[test]
    fn a_record_the_rules_refuse_is_refused_alone_in_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = key_pair();
        let mut log = EvidenceLog::open(dir.path(), key).unwrap();
        let end = |job| finished(job, Vec::new());
        let results = log.record_each(vec![accepted(1), end(2), note(0, 0), end(1)]);
        assert!(results[0].is_ok() && results[2].is_ok() && results[3].is_ok());
        assert_eq!(
            results[1].as_ref().unwrap_err().to_string(),
            "could not encode an evidence record: refusing to record it: record 2 breaks the job rules: `job-finished` ends job 2, which no `job-accepted` record before it accepted"
        );
        // The records after the refused one took its place in the chain.
        assert_eq!(results[2].as_ref().unwrap().record.seq, 2);
        assert_eq!(log.open_jobs(), Vec::<u64>::new());
        assert_eq!(log.next_job(), 2);
        log.close().unwrap();
        let bytes = read_log_dir(dir.path(), u64::MAX).unwrap();
        let summary = verify_log(&bytes, &public).unwrap();
        assert_eq!(summary.job_counts.accepted, 1);
        assert_eq!(summary.job_counts.finished, 1);
        assert!(summary.jobs_in_flight.is_empty());
    }

    fn accepted(job: u64) -> Event {
        Event::from(JobAccepted {
            job,
            submitter: Submitter {
                uid: 1000,
                gid: 1000,
                pid: 7,
            },
            capsule_sha256: [1; 32],
            signature_sha256: None,
            input_sha256: [2; 32],
            idempotency_sha256: None,
            queue_depth: 0,
        })
    }

    fn finished(job: u64, records: Vec<u64>) -> Event {
        Event::from(JobFinished {
            job,
            outcome: "error".into(),
            exit: 3,
            records,
            detail: None,
        })
    }

    /// A job's end queued as built from its lane lists the job's records as
    /// they stand when the writer records it — records queued just before
    /// it, in the same group commit, included — and a lane the job does not
    /// have (not accepted) gives an empty list, which the rules then judge.
    #[test]
    fn an_end_built_from_its_lane_lists_the_records_before_it_in_the_same_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = key_pair();
        let mut log = EvidenceLog::open(dir.path(), key).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let build = |job: u64| {
            let seen = Arc::clone(&seen);
            Entry::FromLane(
                job,
                Box::new(move |records: &[u64]| {
                    lock(&seen).push(records.to_vec());
                    finished(job, records.to_vec())
                }),
            )
        };
        let refused = Event::from(crate::evidence::events::CapsuleRefused {
            reason: "not signed".into(),
            file_sha256: [3; 32],
            file_size: 9,
            site: "test".into(),
            checked_at: 0,
            signature_sha256: None,
            trust_root: None,
            capsule: None,
            job: Some(1),
        });
        let results = log.record_entries(vec![
            Entry::Event(accepted(1)),
            Entry::Event(note(0, 0)),
            Entry::Event(refused),
            build(1),
            build(2),
        ]);
        assert_eq!(*lock(&seen), vec![vec![3], vec![]]);
        assert_eq!(results[3].as_ref().unwrap().record.seq, 4);
        assert_eq!(
            results[4].as_ref().unwrap_err().to_string(),
            "could not encode an evidence record: refusing to record it: record 5 breaks the job rules: `job-finished` ends job 2, which no `job-accepted` record before it accepted"
        );
        log.close().unwrap();
        let summary = verify_log(&read_log_dir(dir.path(), u64::MAX).unwrap(), &public).unwrap();
        assert_eq!(summary.job_counts.finished, 1);
    }

    /// An entry that depends on a marked one lands only when that one did,
    /// in the same group commit or a later one.
    #[test]
    fn an_entry_lands_only_after_the_entry_it_depends_on() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = key_pair();
        let mut log = EvidenceLog::open(dir.path(), key).unwrap();
        let (kept, dropped) = (Landed::default(), Landed::default());
        assert!(!kept.landed());
        let results = log.record_entries(vec![
            Entry::Marked(note(0, 0), kept.clone()),
            // Refused by the job rules: job 9 was never accepted.
            Entry::Marked(finished(9, Vec::new()), dropped.clone()),
            Entry::IfLanded(kept.clone(), note(0, 1)),
            Entry::IfLanded(dropped.clone(), note(0, 2)),
        ]);
        assert!(kept.landed() && !dropped.landed());
        assert_eq!(results[2].as_ref().unwrap().record.seq, 2);
        assert_eq!(
            results[3].as_ref().unwrap_err().to_string(),
            "could not encode an evidence record: refusing to record it: `test-note` depends on a record that was not recorded"
        );
        // A later commit still sees the mark.
        let later = log.record_entries(vec![Entry::IfLanded(kept, note(0, 3))]);
        assert_eq!(later[0].as_ref().unwrap().record.seq, 3);
        log.close().unwrap();
        verify_log(&read_log_dir(dir.path(), u64::MAX).unwrap(), &public).unwrap();
    }

    /// A bounded entry lands as itself when it fits, and as the replacement
    /// built from its size when it does not; a plain entry that does not fit
    /// is refused, and the records after it still land.
    #[test]
    fn a_bounded_entry_too_large_lands_as_its_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = key_pair();
        let mut log = EvidenceLog::open(dir.path(), key).unwrap();
        let huge = || {
            Event::Unknown(UnknownEvent {
                name: "test-huge".into(),
                body: crate::cbor::text_map([(
                    "blob",
                    ciborium::Value::Bytes(vec![7; super::super::record::MAX_RECORD_BYTES]),
                )]),
            })
        };
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let replace = || {
            let sizes = Arc::clone(&sizes);
            Box::new(move |size: usize| {
                lock(&sizes).push(size);
                note(9, size as u64)
            }) as Box<dyn FnOnce(usize) -> Event + Send>
        };
        let results = log.record_entries(vec![
            Entry::Bounded(note(1, 1), replace()),
            Entry::Bounded(huge(), replace()),
            Entry::Event(huge()),
            Entry::Event(note(1, 2)),
        ]);
        let landed: Vec<_> = results
            .iter()
            .map(|r| r.as_ref().map(|s| (s.record.seq, s.record.event.clone())))
            .collect();
        let sizes = lock(&sizes).clone();
        assert_eq!(
            sizes.len(),
            1,
            "only the entry that did not fit is replaced"
        );
        assert!(sizes[0] > super::super::record::MAX_RECORD_BYTES);
        assert_eq!(landed[0].as_ref().unwrap(), &(1, "test-note".to_string()));
        assert_eq!(landed[1].as_ref().unwrap(), &(2, "test-note".to_string()));
        assert_eq!(
            results[1].as_ref().unwrap().record.body,
            crate::cbor::text_map([
                ("thread", ciborium::Value::Integer(9.into())),
                ("i", ciborium::Value::Integer((sizes[0] as u64).into())),
            ])
        );
        assert!(matches!(
            results[2],
            Err(EvidenceError::RecordTooLarge { .. })
        ));
        assert_eq!(landed[3].as_ref().unwrap(), &(3, "test-note".to_string()));
        log.close().unwrap();
        verify_log(&read_log_dir(dir.path(), u64::MAX).unwrap(), &public).unwrap();
    }

    /// Queued entries land in the order they were queued, whichever
    /// receipt is waited for first; once the log is closed, a queued entry
    /// is answered `Closed` at once.
    #[test]
    fn queued_entries_land_in_queue_order_and_a_closed_log_answers_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = key_pair();
        let shared = SharedLog::start(EvidenceLog::open(dir.path(), key).unwrap());
        let first = shared.queue(Entry::Event(note(0, 0)));
        let second = shared.queue(Entry::Event(note(0, 1)));
        let second = second.wait().unwrap();
        let first = first.wait().unwrap();
        assert_eq!(second.record.seq, first.record.seq + 1);
        assert_eq!(second.record.prev, first.hash);
        let other = shared.clone();
        shared.close().unwrap();
        assert!(matches!(
            other.queue(Entry::Event(note(0, 2))).wait(),
            Err(EvidenceError::Closed)
        ));
    }

    /// A known event built as unknown (as a test or an embedder might) is
    /// still judged by the rules of its kind, not waved through as unknown.
    #[test]
    fn a_job_end_built_as_unknown_is_judged_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = key_pair();
        let mut log = EvidenceLog::open(dir.path(), key).unwrap();
        let forged = Event::Unknown(UnknownEvent {
            name: "job-abandoned".into(),
            body: crate::cbor::text_map([
                ("job", ciborium::Value::Integer(5.into())),
                ("reason", ciborium::Value::Text("gone".into())),
            ]),
        });
        let results = log.record_each(vec![forged]);
        assert_eq!(
            results[0].as_ref().unwrap_err().to_string(),
            "could not encode an evidence record: refusing to record it: record 1 breaks the job rules: `job-abandoned` ends job 5, which no `job-accepted` record before it accepted"
        );
    }

    /// A record queued with `record_then` is answered only once it is in
    /// the log file, and one the same thread queues next lands after it:
    /// the daemon's worker relies on both to show a job ended only once its
    /// end is on disk while it goes on to the next job.
    #[test]
    fn record_then_answers_once_written_and_keeps_queue_order() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = key_pair();
        let shared = SharedLog::start(EvidenceLog::open(dir.path(), key).unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let path = dir.path().to_path_buf();
        shared.record_then(note(0, 0), move |result| {
            let signed = result.unwrap();
            let on_disk = read_log_dir(&path, u64::MAX).unwrap();
            tx.send((signed, on_disk)).unwrap();
        });
        let next = shared.record(note(0, 1)).unwrap();
        let (first, on_disk) = rx.recv().unwrap();
        assert!(
            on_disk
                .windows(first.bytes.len())
                .any(|w| w == first.bytes.as_slice()),
            "the record was answered before it was written"
        );
        assert_eq!(next.record.seq, first.record.seq + 1);
        let other = shared.clone();
        shared.close().unwrap();
        // Once closed, the answer comes at once: `Closed`.
        let (tx, rx) = std::sync::mpsc::channel();
        other.record_then(note(0, 2), move |result| {
            tx.send(matches!(result, Err(EvidenceError::Closed)))
                .unwrap();
        });
        assert!(rx.recv().unwrap());
        let summary = verify_log(&read_log_dir(dir.path(), u64::MAX).unwrap(), &public).unwrap();
        assert_eq!(summary.records[first.record.seq as usize].hash, first.hash);
    }

    #[test]
    fn the_observer_sees_every_group_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = key_pair();
        let seen = Arc::new(Mutex::new((0u64, 0u64)));
        let tally = Arc::clone(&seen);
        let shared = SharedLog::start_observed(
            EvidenceLog::open(dir.path(), key).unwrap(),
            Box::new(move |_, records| {
                let mut t = lock(&tally);
                t.0 += 1;
                t.1 += records;
            }),
        );
        for i in 0..5 {
            shared.record(note(0, i)).unwrap();
        }
        let stats = shared.stats();
        assert_eq!(*lock(&seen), (stats.batches, stats.records));
        assert_eq!(stats.records, 5);
        shared.close().unwrap();
    }

    #[test]
    fn a_closed_log_refuses_records_and_reads() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = key_pair();
        let shared = SharedLog::start(EvidenceLog::open(dir.path(), key).unwrap());
        let other = shared.clone();
        assert_eq!(shared.with(|log| log.next_job()).unwrap(), 1);
        shared.close().unwrap();
        assert!(matches!(
            other.record(note(0, 0)),
            Err(EvidenceError::Closed)
        ));
        assert!(matches!(
            other.with(|log| log.len()),
            Err(EvidenceError::Closed)
        ));
        // The file lock went with the log: the directory opens again.
        let (key, _) = key_pair();
        assert!(matches!(
            EvidenceLog::open(dir.path(), key),
            Err(EvidenceError::WrongKey { .. })
        ));
    }
}
