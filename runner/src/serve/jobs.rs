//! The job board: which jobs are queued, running and ended, who may add more,
//! and the queue the workers take from.
//!
//! A job exists here only after its `job-accepted` record is durable: the API
//! first *reserves* a slot ([`Board::reserve`], which enforces the queue
//! capacity, the submitter's quota, draining and idempotency), records the
//! acceptance, and only once that record is durable *commits* the reservation
//! ([`Board::commit`], called from the evidence writer's answer), which makes
//! the job visible to workers and to status queries. Likewise a job is
//! [`Board::end`]ed only once its end record is durable. This module records
//! nothing itself and never touches the evidence log.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Ended jobs kept for status queries; older ones are forgotten (their records stay in the log).
pub const ENDED_KEPT: usize = 10_000;

/// A peer as the kernel reported it on the API socket (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Peer {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Process id (0 if the kernel did not say).
    pub pid: u32,
}

/// Why a submission was turned away before it was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The queue holds `queue.capacity` jobs.
    QueueFull,
    /// This uid has `queue.per-submitter` jobs queued or running.
    Quota,
    /// The daemon is shutting down.
    Draining,
    /// A submission with the same idempotency key is being accepted right now.
    InProgress,
}

/// What happened to a job, once it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ended {
    /// `pass`, `fail`, `refused`, `abnormal`, `error`, `cancelled` or `abandoned`.
    pub outcome: String,
    /// The exit code `edge-runner run` would have given.
    pub exit: u8,
    /// Sequence numbers of the job's records, its end record last.
    pub records: Vec<u64>,
    /// What a person reads: the run's report lines, or the refusal.
    pub lines: Vec<String>,
}

/// A job's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Waiting for a worker.
    Queued,
    /// A worker is running it.
    Running,
    /// It ended, and its end is on the record.
    Ended(Ended),
}

impl State {
    /// The state's name in the API.
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Ended(_) => "ended",
        }
    }
}

/// What a worker needs to run a job.
#[derive(Debug)]
pub struct Work {
    /// The job id.
    pub id: u64,
    /// The capsule file's bytes.
    pub capsule: Arc<Vec<u8>>,
    /// Their SHA-256.
    pub capsule_sha256: [u8; 32],
    /// Its detached signature, if any.
    pub signature: Option<Vec<u8>>,
    /// The capsule's input.
    pub input: Vec<u8>,
    /// Set to ask the run to stop.
    pub cancel: Arc<AtomicBool>,
    /// Set (before `cancel`) when the stop is the daemon's shutdown, not a client's cancel.
    pub shutdown: Arc<AtomicBool>,
    /// When it was accepted.
    pub accepted: Instant,
}

/// A job as the API shows it.
#[derive(Debug, Clone)]
pub struct JobView {
    /// The id.
    pub id: u64,
    /// Who submitted it.
    pub submitter: Peer,
    /// The capsule file's SHA-256.
    pub capsule_sha256: [u8; 32],
    /// Its state.
    pub state: State,
    /// The sequence number of its `job-accepted` record.
    pub accepted_record: u64,
}

struct Job {
    view: JobView,
    /// Present while queued; taken by the worker.
    work: Option<Work>,
    cancel: Arc<AtomicBool>,
    shutdown: Arc<AtomicBool>,
    idempotency: Option<[u8; 32]>,
}

/// A reserved slot: the job id and what the acceptance record says.
#[derive(Debug)]
pub struct Reservation {
    /// The job id it will have.
    pub id: u64,
    /// Jobs queued, this one included.
    pub queue_depth: u64,
    peer: Peer,
    idempotency: Option<[u8; 32]>,
}

/// What [`Board::reserve`] decided.
#[derive(Debug)]
pub enum Reserved {
    /// A new slot.
    New(Reservation),
    /// The same submitter already has a job with this idempotency key.
    Existing(u64),
}

#[derive(Default)]
struct Inner {
    jobs: BTreeMap<u64, Job>,
    queue: VecDeque<u64>,
    /// Reserved, not yet committed or released.
    reserved: usize,
    running: usize,
    /// Queued, reserved or running, per uid.
    per_uid: HashMap<u32, usize>,
    idempotency: HashMap<(u32, [u8; 32]), Option<u64>>,
    ended: VecDeque<u64>,
    next_id: u64,
    draining: bool,
    /// Long polls waiting for a job's end, woken by that end only.
    waiting: HashMap<u64, Arc<tokio::sync::Notify>>,
}

/// The board; shared by the API and the workers.
pub struct Board {
    inner: Mutex<Inner>,
    /// Workers wait here for work.
    work: Condvar,
    capacity: usize,
    per_submitter: usize,
}

impl std::fmt::Debug for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Board")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Board {
    /// An empty board whose first job id is `first_id`.
    pub fn new(capacity: usize, per_submitter: usize, first_id: u64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                next_id: first_id,
                ..Inner::default()
            }),
            work: Condvar::new(),
            capacity,
            per_submitter,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A worker that panicked mid-update leaves counts that are still
        // consistent (every update is one statement), so keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves a queue slot for `peer`, or says why not.
    pub fn reserve(
        &self,
        peer: Peer,
        idempotency: Option<[u8; 32]>,
    ) -> Result<Reserved, Rejection> {
        let mut inner = self.lock();
        if let Some(key) = idempotency {
            match inner.idempotency.get(&(peer.uid, key)) {
                Some(Some(id)) => return Ok(Reserved::Existing(*id)),
                Some(None) => return Err(Rejection::InProgress),
                None => {}
            }
        }
        if inner.draining {
            return Err(Rejection::Draining);
        }
        if inner.queue.len() + inner.reserved >= self.capacity {
            return Err(Rejection::QueueFull);
        }
        let mine = inner.per_uid.get(&peer.uid).copied().unwrap_or(0);
        if mine >= self.per_submitter {
            return Err(Rejection::Quota);
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.reserved += 1;
        *inner.per_uid.entry(peer.uid).or_default() += 1;
        if let Some(key) = idempotency {
            inner.idempotency.insert((peer.uid, key), None);
        }
        let queue_depth = (inner.queue.len() + inner.reserved) as u64;
        Ok(Reserved::New(Reservation {
            id,
            queue_depth,
            peer,
            idempotency,
        }))
    }

    /// Gives a reservation back (its acceptance could not be recorded).
    pub fn release(&self, reservation: Reservation) {
        let mut inner = self.lock();
        inner.reserved -= 1;
        Self::uncount(&mut inner, reservation.peer.uid);
        if let Some(key) = reservation.idempotency {
            inner.idempotency.remove(&(reservation.peer.uid, key));
        }
    }

    fn uncount(inner: &mut Inner, uid: u32) {
        if let Some(n) = inner.per_uid.get_mut(&uid) {
            *n -= 1;
            if *n == 0 {
                inner.per_uid.remove(&uid);
            }
        }
    }

    /// Queues the job whose acceptance is record `accepted_record`.
    pub fn commit(
        &self,
        reservation: Reservation,
        capsule: Arc<Vec<u8>>,
        capsule_sha256: [u8; 32],
        signature: Option<Vec<u8>>,
        input: Vec<u8>,
        accepted_record: u64,
    ) {
        let mut inner = self.lock();
        inner.reserved -= 1;
        let id = reservation.id;
        let cancel = Arc::new(AtomicBool::new(false));
        let shutdown = Arc::new(AtomicBool::new(false));
        if let Some(key) = reservation.idempotency {
            inner
                .idempotency
                .insert((reservation.peer.uid, key), Some(id));
        }
        inner.jobs.insert(
            id,
            Job {
                view: JobView {
                    id,
                    submitter: reservation.peer,
                    capsule_sha256,
                    state: State::Queued,
                    accepted_record,
                },
                work: Some(Work {
                    id,
                    capsule,
                    capsule_sha256,
                    signature,
                    input,
                    cancel: Arc::clone(&cancel),
                    shutdown: Arc::clone(&shutdown),
                    accepted: Instant::now(),
                }),
                cancel,
                shutdown,
                idempotency: reservation.idempotency,
            },
        );
        inner.queue.push_back(id);
        drop(inner);
        self.work.notify_one();
    }

    /// Blocks until there is work (returned, marked running) or the board is
    /// draining with an empty queue (`None`: the worker should stop).
    pub fn take(&self) -> Option<Work> {
        let mut inner = self.lock();
        loop {
            while let Some(id) = inner.queue.pop_front() {
                let Some(job) = inner.jobs.get_mut(&id) else {
                    continue;
                };
                let Some(work) = job.work.take() else {
                    continue;
                };
                job.view.state = State::Running;
                inner.running += 1;
                drop(inner);
                return Some(work);
            }
            if inner.draining {
                return None;
            }
            inner = self.work.wait(inner).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Records in the board that job `id` ended (its end record is durable).
    pub fn end(&self, id: u64, ended: Ended) {
        let mut inner = self.lock();
        let Some(job) = inner.jobs.get_mut(&id) else {
            return;
        };
        let was_running = job.view.state == State::Running;
        job.view.state = State::Ended(ended);
        job.work = None;
        let uid = job.view.submitter.uid;
        if was_running {
            inner.running -= 1;
        }
        Self::uncount(&mut inner, uid);
        inner.ended.push_back(id);
        let waiting = inner.waiting.remove(&id);
        while inner.ended.len() > ENDED_KEPT {
            if let Some(old) = inner.ended.pop_front()
                && let Some(job) = inner.jobs.remove(&old)
                && let Some(key) = job.idempotency
            {
                inner.idempotency.remove(&(job.view.submitter.uid, key));
            }
        }
        drop(inner);
        if let Some(waiting) = waiting {
            waiting.notify_waiters();
        }
    }

    /// What a cancel of job `id` finds.
    pub fn cancel(&self, id: u64) -> Cancel {
        let mut inner = self.lock();
        let Some(job) = inner.jobs.get_mut(&id) else {
            return Cancel::Unknown;
        };
        match &job.view.state {
            State::Ended(_) => Cancel::AlreadyEnded,
            State::Running => {
                job.cancel.store(true, Ordering::SeqCst);
                Cancel::Signalled
            }
            State::Queued => {
                // Taken off the queue here; the caller records the cancellation, then ends it.
                job.work = None;
                inner.queue.retain(|q| *q != id);
                Cancel::Dequeued
            }
        }
    }

    /// Stops taking new jobs; returns the ids still queued, now taken off the
    /// queue (the caller records their cancellation and ends them).
    pub fn drain(&self) -> Vec<u64> {
        let mut inner = self.lock();
        inner.draining = true;
        let queued: Vec<u64> = inner.queue.drain(..).collect();
        for id in &queued {
            if let Some(job) = inner.jobs.get_mut(id) {
                job.work = None;
            }
        }
        drop(inner);
        self.work.notify_all();
        queued
    }

    /// Asks every running job to stop; returns their ids.
    pub fn interrupt_running(&self) -> Vec<u64> {
        let inner = self.lock();
        inner
            .jobs
            .values()
            .filter(|j| j.view.state == State::Running)
            .map(|j| {
                j.shutdown.store(true, Ordering::SeqCst);
                j.cancel.store(true, Ordering::SeqCst);
                j.view.id
            })
            .collect()
    }

    /// True once [`Board::drain`] was called.
    pub fn draining(&self) -> bool {
        self.lock().draining
    }

    /// One job.
    pub fn get(&self, id: u64) -> Option<JobView> {
        self.lock().jobs.get(&id).map(|j| j.view.clone())
    }

    /// Jobs, newest first, at most `limit`.
    pub fn list(&self, limit: usize) -> Vec<JobView> {
        self.lock()
            .jobs
            .values()
            .rev()
            .take(limit)
            .map(|j| j.view.clone())
            .collect()
    }

    /// (queued, running) right now.
    pub fn load(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.queue.len(), inner.running)
    }

    /// True while the queue has no free slot.
    pub fn full(&self) -> bool {
        let inner = self.lock();
        inner.queue.len() + inner.reserved >= self.capacity
    }

    /// Waits until job `id` has ended or `timeout` passes; returns its view
    /// then. Only that job's end wakes the wait, not every change of any job.
    pub async fn wait_end(&self, id: u64, timeout: Duration) -> Option<JobView> {
        let notify = {
            let mut inner = self.lock();
            let job = inner.jobs.get(&id)?;
            if matches!(job.view.state, State::Ended(_)) {
                return Some(job.view.clone());
            }
            // Inserted only while the job is open, under the lock `end` takes
            // to remove it: an entry never outlives its job's end.
            Arc::clone(inner.waiting.entry(id).or_default())
        };
        // Registered before the state is read again: an end in between still wakes it.
        let ended = notify.notified();
        if let Some(view) = self.get(id).filter(|v| matches!(v.state, State::Ended(_))) {
            return Some(view);
        }
        let _ = tokio::time::timeout(timeout, ended).await;
        self.get(id)
    }
}

/// What a cancel found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// No such job (or it ended long ago and is no longer held).
    Unknown,
    /// It had already ended.
    AlreadyEnded,
    /// It was running; it has been asked to stop.
    Signalled,
    /// It was queued and has been taken off the queue.
    Dequeued,
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: Peer = Peer {
        uid: 1000,
        gid: 1000,
        pid: 1,
    };
    const BOB: Peer = Peer {
        uid: 1001,
        gid: 1001,
        pid: 2,
    };

    fn new(board: &Board, peer: Peer, key: Option<[u8; 32]>) -> Result<u64, Rejection> {
        match board.reserve(peer, key)? {
            Reserved::New(r) => {
                let id = r.id;
                board.commit(r, Arc::new(vec![]), [0; 32], None, vec![], id);
                Ok(id)
            }
            Reserved::Existing(id) => Ok(id),
        }
    }

    #[test]
    fn queue_capacity_and_quota_are_enforced() {
        let board = Board::new(3, 2, 1);
        assert_eq!(new(&board, ALICE, None), Ok(1));
        assert_eq!(new(&board, ALICE, None), Ok(2));
        assert_eq!(new(&board, ALICE, None), Err(Rejection::Quota));
        assert_eq!(new(&board, BOB, None), Ok(3));
        assert_eq!(new(&board, BOB, None), Err(Rejection::QueueFull));
        let work = board.take().unwrap();
        assert_eq!(work.id, 1);
        // Running still counts against the quota, not against the queue.
        assert_eq!(new(&board, ALICE, None), Err(Rejection::Quota));
        assert_eq!(new(&board, BOB, None), Ok(4));
        board.end(
            1,
            Ended {
                outcome: "pass".into(),
                exit: 0,
                records: vec![],
                lines: vec![],
            },
        );
        assert_eq!(board.load(), (3, 0));
    }

    fn pass() -> Ended {
        Ended {
            outcome: "pass".into(),
            exit: 0,
            records: vec![],
            lines: vec![],
        }
    }

    /// A long poll returns with the job's end as soon as that job ends,
    /// not at its timeout, whatever other jobs do meanwhile; one that times
    /// out returns the job as it stands; none is left registered after the
    /// job's end.
    #[test]
    fn a_long_poll_wakes_at_its_jobs_end_and_leaves_nothing_behind() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let board = Arc::new(Board::new(8, 8, 1));
        let (a, b) = (
            new(&board, ALICE, None).unwrap(),
            new(&board, BOB, None).unwrap(),
        );
        runtime.block_on(async {
            let timed_out = board.wait_end(a, Duration::from_millis(20)).await.unwrap();
            assert_eq!(timed_out.state, State::Queued);
            let waiter = {
                let board = Arc::clone(&board);
                tokio::spawn(async move { board.wait_end(a, Duration::from_secs(600)).await })
            };
            tokio::task::yield_now().await;
            // Another job's progress and end do not end this wait.
            let work = board.take().unwrap();
            assert_eq!(work.id, a);
            board.end(b, pass());
            tokio::task::yield_now().await;
            assert!(!waiter.is_finished());
            board.end(a, pass());
            let ended = tokio::time::timeout(Duration::from_secs(60), waiter)
                .await
                .expect("the wait did not end with its job")
                .unwrap()
                .unwrap();
            assert!(matches!(ended.state, State::Ended(_)), "{ended:?}");
            // An ended job answers at once; an unknown one with nothing.
            assert!(board.wait_end(a, Duration::from_secs(600)).await.is_some());
            assert!(board.wait_end(99, Duration::from_secs(600)).await.is_none());
        });
        assert!(board.lock().waiting.is_empty());
    }

    #[test]
    fn idempotent_resubmission_returns_the_same_job() {
        let board = Board::new(8, 8, 10);
        let key = Some([7; 32]);
        assert_eq!(new(&board, ALICE, key), Ok(10));
        assert_eq!(new(&board, ALICE, key), Ok(10));
        // The key is per submitter.
        assert_eq!(new(&board, BOB, key), Ok(11));
        let Reserved::New(pending) = board.reserve(ALICE, Some([8; 32])).unwrap() else {
            panic!("a new key reserves a new slot");
        };
        assert_eq!(
            board.reserve(ALICE, Some([8; 32])).unwrap_err(),
            Rejection::InProgress
        );
        board.release(pending);
        assert!(matches!(
            board.reserve(ALICE, Some([8; 32])),
            Ok(Reserved::New(_))
        ));
    }

    #[test]
    fn draining_refuses_new_jobs_and_returns_the_queued_ones() {
        let board = Board::new(8, 8, 1);
        new(&board, ALICE, None).unwrap();
        new(&board, ALICE, None).unwrap();
        assert_eq!(board.drain(), vec![1, 2]);
        assert_eq!(new(&board, ALICE, None), Err(Rejection::Draining));
        assert!(board.take().is_none());
    }

    #[test]
    fn cancel_dequeues_a_queued_job_and_signals_a_running_one() {
        let board = Board::new(8, 8, 1);
        new(&board, ALICE, None).unwrap();
        new(&board, ALICE, None).unwrap();
        let running = board.take().unwrap();
        assert_eq!(board.cancel(1), Cancel::Signalled);
        assert!(running.cancel.load(Ordering::SeqCst));
        assert_eq!(board.cancel(2), Cancel::Dequeued);
        assert_eq!(board.cancel(3), Cancel::Unknown);
        assert_eq!(board.load(), (0, 1));
    }
}
