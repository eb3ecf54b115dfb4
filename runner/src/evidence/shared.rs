//! One evidence log shared by many threads: a writer thread owns the
//! [`EvidenceLog`] and group-commits what concurrent callers record — one
//! write and one `fdatasync` for every record waiting — and answers each
//! caller only once its record is durable. Records keep the order in which
//! the writer took them; each is judged by the log's rules as it would be
//! alone (a refused record is refused alone). This module owns the queue and
//! the thread, never the format or the rules, which stay in [`EvidenceLog`].

use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Event, EvidenceError, EvidenceLog, SignedRecord};

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

/// Called after every group commit that wrote records, with the time its
/// write and `fdatasync` took and how many records it made durable.
pub type CommitObserver = Box<dyn Fn(Duration, u64) + Send>;

#[derive(Default)]
struct Queue {
    pending: Vec<(Event, Reply)>,
    closing: bool,
}

struct Inner {
    /// The log; `None` once closed.
    log: Mutex<Option<EvidenceLog>>,
    queue: Mutex<Queue>,
    wake: Condvar,
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
    pub fn start_observed(log: EvidenceLog, observer: CommitObserver) -> SharedLog {
        let inner = Arc::new(Inner {
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
        let (reply, answer) = sync_channel(1);
        if let Err(reply) = self.enqueue(event, Reply::Wait(reply)) {
            drop(reply);
            return Err(EvidenceError::Closed);
        }
        // The writer answers every record it takes; no answer means it stopped.
        answer.recv().unwrap_or(Err(EvidenceError::Closed))
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
        if let Err(Reply::Then(then)) = self.enqueue(event, Reply::Then(Box::new(then))) {
            then(Err(EvidenceError::Closed));
        }
    }

    /// Queues `event` for the writer, or hands `reply` back when the log is closing.
    fn enqueue(&self, event: Event, reply: Reply) -> Result<(), Reply> {
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
        let (events, replies): (Vec<Event>, Vec<Reply>) = batch.into_iter().unzip();
        let n = events.len();
        let (results, sync) = match lock(&inner.log).as_mut() {
            Some(log) => {
                let results = log.record_each(events);
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
        for (reply, result) in replies.into_iter().zip(results) {
            reply.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

    use super::*;
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
        let accepted = Event::from(JobAccepted {
            job: 1,
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
        });
        let end = |job| {
            Event::from(JobFinished {
                job,
                outcome: "error".into(),
                exit: 3,
                records: Vec::new(),
                detail: Some("capsule not found".into()),
            })
        };
        let results = log.record_each(vec![accepted, end(2), note(0, 0), end(1)]);
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
