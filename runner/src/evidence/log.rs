//! The append-only evidence log on disk.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ciborium::Value;

use super::EvidenceError;
use super::checkpoint::{Checkpoint, origin};
use super::events::{self, Event, EventBody};
use super::merkle::{Frontier, leaf_hash};
use super::publish::{CheckpointFiles, Publisher};
use super::record::{GENESIS_PREV, MAX_RECORD_BYTES, Record, SignedRecord, sign_record};
use super::state::{read_state, state_value};
use super::verify::{Failure, Rules, Start, Walk, walk_from};
use crate::keys::SecretKey;
use crate::rollback::HighWater;
use sha2::Digest;

/// File name of the log inside an evidence directory.
pub const LOG_FILE: &str = "evidence.log";

/// File name (inside the evidence directory, mode 0600) of the openings of
/// salted commitments: one JSON object per line, `{"commitment", "salt", "value"}`
/// (hex, hex, base64). It never leaves the enclave unless someone reveals a line.
pub const OPENINGS_FILE: &str = "commitments.jsonl";

/// Domain separation for commitments.
pub const COMMITMENT_CONTEXT: &[u8] = b"edge-runner/commitment/v1";

/// The commitment to `value` under `salt`: SHA-256(context ‖ salt ‖ value).
pub fn commitment(salt: &[u8; 16], value: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(COMMITMENT_CONTEXT);
    h.update(salt);
    h.update(value);
    h.finalize().into()
}

/// File name of the newest checkpoint (a C2SP signed note) inside an evidence directory.
pub const CHECKPOINT_FILE: &str = "checkpoint";

const CHECKPOINT_EVENT: &str = <events::Checkpoint as EventBody>::NAME;

/// Builds [`Entry::Bounded`]'s replacement from the size its event's record would have had.
pub type Replacement = Box<dyn FnOnce(usize) -> Event + Send>;

/// Builds [`Entry::FromLane`]'s event from its job's records so far.
pub type FromRecords = Box<dyn FnOnce(&[u64]) -> Event + Send>;

/// One thing for [`EvidenceLog::record_entries`] to record.
pub enum Entry {
    /// This event.
    Event(Event),
    /// This event, or — when its record would be over the size limit — the
    /// event the function builds from that size instead (a run's end that
    /// says how large it was), so something always lands.
    Bounded(Event, Replacement),
    /// The event the function builds from job `0`'s records so far (empty
    /// when the job is not open), as the log stands when the writer records
    /// it, records before it in the same group commit included: a job's end,
    /// which lists them, queued behind records whose numbers are not known yet.
    FromLane(u64, FromRecords),
    /// This event; the [`Landed`] says afterwards whether it landed.
    Marked(Event, Landed),
    /// This event, only once the entry marked with the [`Landed`] (queued
    /// before it) has landed; refused otherwise: a run's start does not
    /// land when the verification that admitted it did not.
    IfLanded(Landed, Event),
}

/// Whether a [`Entry::Marked`] entry landed, for an entry that depends on it.
#[derive(Debug, Clone, Default)]
pub struct Landed(std::sync::Arc<std::sync::atomic::AtomicU8>);

impl Landed {
    const LANDED: u8 = 1;
    const REFUSED: u8 = 2;

    fn set(&self, state: u8) {
        self.0.store(state, std::sync::atomic::Ordering::SeqCst);
    }

    /// True once the marked entry is in the log (durable, or in the group
    /// commit being written, which records both or neither).
    pub fn landed(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst) == Self::LANDED
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Event(e) => f.debug_tuple("Event").field(&e.name()).finish(),
            Entry::Bounded(e, _) => f.debug_tuple("Bounded").field(&e.name()).finish(),
            Entry::FromLane(job, _) => f.debug_tuple("FromLane").field(job).finish(),
            Entry::Marked(e, _) => f.debug_tuple("Marked").field(&e.name()).finish(),
            Entry::IfLanded(_, e) => f.debug_tuple("IfLanded").field(&e.name()).finish(),
        }
    }
}

/// When the log writes a signed checkpoint: after `every_records` records,
/// or at the first append `every` after the previous one, and when the log is
/// closed — whichever comes first, and only when records were added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// Records between checkpoints. Default 64.
    pub every_records: u64,
    /// Time between checkpoints. Default 60 s.
    pub every: std::time::Duration,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self {
            every_records: 64,
            every: std::time::Duration::from_secs(60),
        }
    }
}

/// When the log rolls over to a new segment file: at the first checkpoint
/// after the active file (`DIR/evidence.log`) reaches `max_bytes`, or after
/// its first record is `max_age` old. The active file is then moved to
/// `DIR/segments/evidence-<first seq, 20 digits>.log` and a new active file
/// starts with a checkpoint record (with its resume state), so the chain and
/// the Merkle tree continue and old segments can be shipped and archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentPolicy {
    /// Largest active file before it rolls. Default 256 MiB.
    pub max_bytes: u64,
    /// Oldest first record before the file rolls. Default: no age limit.
    pub max_age: Option<std::time::Duration>,
}

impl Default for SegmentPolicy {
    fn default() -> Self {
        Self {
            max_bytes: 256 << 20,
            max_age: None,
        }
    }
}

/// Directory (inside the evidence directory) of the segments rolled over.
pub const SEGMENTS_DIR: &str = "segments";

/// An open evidence log, held exclusively by this process.
#[derive(Debug)]
pub struct EvidenceLog {
    path: PathBuf,
    file: File,
    key: SecretKey,
    log_id: [u8; 16],
    next_seq: u64,
    prev: [u8; 32],
    last_time: u64,
    rules: Rules,
    tree: Frontier,
    since_checkpoint: u64,
    /// Writes checkpoint files off this thread, when set
    /// ([`EvidenceLog::publish_checkpoints_in_background`]).
    publisher: Option<Publisher>,
    last_checkpoint: std::time::Instant,
    policy: CheckpointPolicy,
    dir: PathBuf,
    /// Bytes of complete records in the file.
    bytes_len: u64,
    /// True while `rotate_key` writes its record.
    rotating: bool,
    segments: SegmentPolicy,
    /// Sequence number and time of the first record in the active file.
    segment_first: Option<(u64, u64)>,
    /// True while a roll writes the new segment's first checkpoint.
    rolling: bool,
    /// How long the newest write and `fdatasync` of records took.
    last_sync: std::time::Duration,
}

impl EvidenceLog {
    /// Opens (or creates) the log in `dir`, signing new records with `key`.
    ///
    /// An existing log is verified first. A torn tail (an incomplete last
    /// record, as a crash mid-write leaves) is cut off and a `restart` record
    /// says how many bytes were dropped; any other damage refuses the open.
    pub fn open(dir: &Path, key: SecretKey) -> Result<Self, EvidenceError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| EvidenceError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(LOG_FILE);
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(EvidenceError::Locked(path.display().to_string()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&path)(e)),
        }
        if created {
            // Make the new directory entry durable too.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        // A log swapped for a pipe, a device or a symlink to one is refused
        // before it is read; reads are bounded (MAX_LOG_BYTES) whatever the file is.
        let meta = file.metadata().map_err(io(&path))?;
        if !meta.is_file() {
            return Err(io(&path)(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file; the evidence log is a file the runner writes itself",
            )));
        }
        let public = key.public();
        let file_len = file.metadata().map_err(io(&path))?.len();
        let note = read_checkpoint_file(dir)?;
        // Resume from the newest checkpoint's signed state when the pointer to
        // it checks out; otherwise (older logs, a damaged pointer, a log cut
        // below it) read everything, which also finds what is wrong.
        let loaded = match resume_start(dir, &mut file, file_len, &public) {
            Some((start, base)) => {
                let loaded = load_from(&mut file, &path, base, start, &public)?;
                match &note {
                    Some(note) if extends_checkpoint(&loaded, note, &public).is_err() => None,
                    _ => Some(loaded),
                }
            }
            None => None,
        };
        let loaded = match loaded {
            Some(loaded) => loaded,
            None => load_all(dir, &mut file, &path, &public)?,
        };
        let walk = &loaded.walk;
        match &walk.failure {
            None | Some(Failure::TornTail { .. }) => {}
            Some(Failure::WrongKey { found, .. }) => {
                return Err(EvidenceError::WrongKey {
                    path: path.display().to_string(),
                    log_key: found.clone(),
                    our_key: key.id().short(),
                });
            }
            Some(failure) => {
                return Err(EvidenceError::Corrupt {
                    path: path.display().to_string(),
                    failure: failure.clone(),
                });
            }
        }
        // Only the key in force at the end of the log may continue it.
        if let Some(&(_, signing)) = walk.keys.last()
            && signing != public
        {
            let retired = walk.keys.windows(2).find(|w| w[0].1 == public);
            return Err(match retired {
                Some(w) => EvidenceError::KeyRetired {
                    path: path.display().to_string(),
                    at: w[1].0 - 1,
                    our_key: key.id().short(),
                    new_key: w[1].1.id().short(),
                },
                None => EvidenceError::WrongKey {
                    path: path.display().to_string(),
                    log_key: signing.id().short(),
                    our_key: key.id().short(),
                },
            });
        }
        // A log shorter than its own newest checkpoint, or not extending it, was
        // cut or rewritten: no crash does that. Refuse before cutting anything.
        if let Some(note) = &note
            && let Err(detail) = extends_checkpoint(&loaded, note, &public)
        {
            return Err(EvidenceError::BehindCheckpoint {
                path: path.display().to_string(),
                detail,
            });
        }
        let torn = matches!(walk.failure, Some(Failure::TornTail { .. }));
        let (log_id, next_seq, prev, last_time) = match &walk.last {
            Some(last) => (
                last.record.log_id,
                last.record.seq + 1,
                last.hash,
                last.record.time_ms,
            ),
            None => {
                let mut log_id = [0u8; 16];
                getrandom::fill(&mut log_id).map_err(|e| {
                    EvidenceError::Encode(format!("randomness for the log id: {e}"))
                })?;
                (log_id, 0, GENESIS_PREV, 0)
            }
        };
        let mut log = Self {
            path,
            file,
            key,
            log_id,
            next_seq,
            prev,
            last_time,
            rules: walk.rules.clone(),
            tree: walk.tree.clone(),
            since_checkpoint: walk.since_checkpoint,
            publisher: None,
            last_checkpoint: std::time::Instant::now(),
            policy: CheckpointPolicy::default(),
            dir: dir.to_path_buf(),
            bytes_len: loaded.good_end() - loaded.before_active,
            rotating: false,
            segments: SegmentPolicy::default(),
            segment_first: None,
            rolling: false,
            last_sync: std::time::Duration::ZERO,
        };
        log.segment_first = first_in_file(&mut log.file, log.bytes_len);
        let torn_bytes = (file_len + loaded.before_active).saturating_sub(loaded.good_end());
        if torn {
            log.file.set_len(log.bytes_len).map_err(io(&log.path))?;
            log.file.sync_all().map_err(io(&log.path))?;
        }
        let runner_version = crate::RUNNER_VERSION.to_string();
        let first = if log.next_seq == 0 {
            Event::from(events::LogOpened {
                runner_key: *public.as_bytes(),
                runner_version,
                torn_bytes_dropped: torn_bytes,
            })
        } else if torn {
            Event::from(events::Restart {
                reason: "torn tail after an interrupted write".into(),
                torn_bytes_dropped: torn_bytes,
                runner_version,
            })
        } else {
            // Every process that takes the log over says so, with its version.
            Event::from(events::RunnerStarted { runner_version })
        };
        log.record(&first)?;
        Ok(log)
    }

    /// Signs and appends one typed event; returns once it is on disk.
    pub fn record(&mut self, event: &Event) -> Result<SignedRecord, EvidenceError> {
        self.append(event.name(), event.body())
    }

    /// Signs and appends one record with an event name and a raw body (an
    /// event this runner does not model, or a test's); returns once it is on
    /// disk. A known event's body must decode as its type.
    pub fn append(&mut self, event: &str, body: Value) -> Result<SignedRecord, EvidenceError> {
        self.append_batch(vec![(event.to_string(), body)])?
            .pop()
            .ok_or_else(|| EvidenceError::Encode("an append wrote no record".into()))
    }

    /// Group commit: signs every entry, writes them with one write and makes
    /// them durable with one `fdatasync`, and returns once all are on disk.
    /// Either all are acknowledged or none is: on an I/O error the file is
    /// cut back to where it was.
    pub fn append_batch(
        &mut self,
        entries: Vec<(String, Value)>,
    ) -> Result<Vec<SignedRecord>, EvidenceError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        // Time in the log never goes backwards, even if the system clock does.
        let time_ms = now.max(self.last_time);
        let mut rules = self.rules.clone();
        let (mut seq, mut prev) = (self.next_seq, self.prev);
        let mut signed_all = Vec::with_capacity(entries.len());
        let mut buffer = Vec::new();
        let mut counted = 0u64;
        for (event, body) in entries {
            if event != CHECKPOINT_EVENT {
                counted += 1;
            }
            let record = Record {
                log_id: self.log_id,
                seq,
                prev,
                time_ms,
                event,
                body,
            };
            // The verifier's rules, applied before signing: this writer never
            // produces a record that verification would reject.
            let decoded = Event::decode(&record.event, &record.body).map_err(|detail| {
                EvidenceError::Encode(format!("`{}` body: {detail}", record.event))
            })?;
            // A handover changes the signing key; only `rotate_key` may write one.
            if matches!(decoded, Event::KeyRotated(_)) && !self.rotating {
                return Err(EvidenceError::Encode(
                    "a `key-rotated` record is written only by `EvidenceLog::rotate_key`".into(),
                ));
            }
            rules.apply(seq, &decoded).map_err(|failure| {
                EvidenceError::Encode(format!("refusing to record it: {failure}"))
            })?;
            let signed = sign_record(record, &self.key).map_err(EvidenceError::Encode)?;
            check_record_size(&signed)?;
            prev = signed.hash;
            seq += 1;
            buffer.extend_from_slice(&signed.bytes);
            signed_all.push(signed);
        }
        if signed_all.is_empty() {
            return Ok(signed_all);
        }
        let io = |source| EvidenceError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let synced = std::time::Instant::now();
        if let Err(e) = self
            .file
            .write_all(&buffer)
            .and_then(|()| self.file.sync_data())
        {
            // Leave no partial record behind for the next append to build on.
            let _ = self.file.set_len(self.bytes_len);
            return Err(io(e));
        }
        self.last_sync = synced.elapsed();
        if self.segment_first.is_none() {
            self.segment_first = Some((self.next_seq, time_ms));
        }
        self.bytes_len += buffer.len() as u64;
        self.next_seq = seq;
        self.prev = prev;
        self.last_time = time_ms;
        self.rules = rules;
        for s in &signed_all {
            self.tree.push(leaf_hash(&s.bytes));
        }
        if counted > 0 {
            self.since_checkpoint += counted;
            let due = self.since_checkpoint >= self.policy.every_records
                || self.last_checkpoint.elapsed() >= self.policy.every;
            if due {
                self.checkpoint()?;
            }
        }
        Ok(signed_all)
    }

    /// Group commit with a result per entry: signs every event the rules
    /// accept, writes them with one write and makes them durable with one
    /// `fdatasync`, and returns once they are on disk. An entry the rules
    /// refuse (or too large to record) is refused alone, and the others still
    /// land, in order; on an I/O error none of them does and each gets the error.
    pub fn record_each(&mut self, events: Vec<Event>) -> Vec<Result<SignedRecord, EvidenceError>> {
        let results = self.record_entries(events.into_iter().map(Entry::Event).collect());
        self.checkpoint_if_due();
        results
    }

    /// [`EvidenceLog::record_each`] of entries, some built as they are
    /// recorded, without the checkpoint that may be due after them: the
    /// caller answers its callers first, then calls
    /// [`EvidenceLog::checkpoint_if_due`].
    pub fn record_entries(
        &mut self,
        entries: Vec<Entry>,
    ) -> Vec<Result<SignedRecord, EvidenceError>> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let time_ms = now.max(self.last_time);
        let mut rules = self.rules.clone();
        let (mut seq, mut prev) = (self.next_seq, self.prev);
        let mut results = Vec::with_capacity(entries.len());
        // Entries signed so far (seq, event), to rebuild the rules after a refusal.
        let mut landed: Vec<(u64, Event)> = Vec::new();
        let mut buffer = Vec::new();
        // Marks of the entries that landed in this commit: refused again if it fails.
        let mut marked: Vec<Landed> = Vec::new();
        for entry in entries {
            let mut mark = None;
            let (event, bounded) = match entry {
                Entry::Event(event) => (event, None),
                Entry::Bounded(event, bounded) => (event, Some(bounded)),
                Entry::FromLane(job, build) => {
                    let records = rules.jobs.lanes.get(&job).map(|l| l.records.as_slice());
                    (build(records.unwrap_or(&[])), None)
                }
                Entry::Marked(event, landed) => {
                    // Refused unless it lands below.
                    landed.set(Landed::REFUSED);
                    mark = Some(landed);
                    (event, None)
                }
                Entry::IfLanded(landed, event) => {
                    if !landed.landed() {
                        results.push(Err(EvidenceError::Encode(format!(
                            "refusing to record it: `{}` depends on a record that was not recorded",
                            event.name()
                        ))));
                        continue;
                    }
                    (event, None)
                }
            };
            // An event built as unknown is recorded as it is, and judged as
            // the type its name says when that name is a known event.
            let body = event.body();
            let event = match event {
                Event::Unknown(u) => match Event::decode(&u.name, &u.body) {
                    Ok(decoded) => decoded,
                    Err(detail) => {
                        results.push(Err(EvidenceError::Encode(format!(
                            "`{}` body: {detail}",
                            u.name
                        ))));
                        continue;
                    }
                },
                known => known,
            };
            if matches!(event, Event::KeyRotated(_) | Event::Checkpoint(_)) {
                results.push(Err(EvidenceError::Encode(format!(
                    "a `{}` record is written only by the log itself (`rotate_key`, `checkpoint`)",
                    event.name()
                ))));
                continue;
            }
            let sign = |event: &Event, body| {
                let record = Record {
                    log_id: self.log_id,
                    seq,
                    prev,
                    time_ms,
                    event: event.name().to_string(),
                    body,
                };
                sign_record(record, &self.key)
                    .map_err(EvidenceError::Encode)
                    .and_then(|s| check_record_size(&s).map(|()| s))
            };
            let (event, signed) = match (sign(&event, body), bounded) {
                (Err(EvidenceError::RecordTooLarge { size, .. }), Some(bounded)) => {
                    let replacement = bounded(size);
                    let body = replacement.body();
                    let signed = sign(&replacement, body);
                    (replacement, signed)
                }
                (signed, _) => (event, signed),
            };
            let signed = match signed {
                Ok(s) => s,
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            };
            if let Err(failure) = rules.apply(seq, &event) {
                // `apply` may have changed part of the state before refusing:
                // start again from the entries that landed.
                rules = self.rules.clone();
                for (s, e) in &landed {
                    let _ = rules.apply(*s, e);
                }
                results.push(Err(EvidenceError::Encode(format!(
                    "refusing to record it: {failure}"
                ))));
                continue;
            }
            prev = signed.hash;
            buffer.extend_from_slice(&signed.bytes);
            if let Some(mark) = mark {
                mark.set(Landed::LANDED);
                marked.push(mark);
            }
            landed.push((seq, event));
            seq += 1;
            results.push(Ok(signed));
        }
        if landed.is_empty() {
            return results;
        }
        let synced = std::time::Instant::now();
        if let Err(e) = self
            .file
            .write_all(&buffer)
            .and_then(|()| self.file.sync_data())
        {
            let _ = self.file.set_len(self.bytes_len);
            for mark in marked {
                mark.set(Landed::REFUSED);
            }
            let path = self.path.display().to_string();
            return results
                .into_iter()
                .map(|r| {
                    r.and_then(|_| {
                        Err(EvidenceError::Io {
                            path: path.clone(),
                            source: std::io::Error::new(e.kind(), e.to_string()),
                        })
                    })
                })
                .collect();
        }
        self.last_sync = synced.elapsed();
        if self.segment_first.is_none() {
            self.segment_first = Some((self.next_seq, time_ms));
        }
        self.bytes_len += buffer.len() as u64;
        self.next_seq = seq;
        self.prev = prev;
        self.last_time = time_ms;
        self.rules = rules;
        for s in results.iter().flatten() {
            self.tree.push(leaf_hash(&s.bytes));
        }
        self.since_checkpoint += landed.len() as u64;
        results
    }

    /// From now on, writes the files each checkpoint leaves (`DIR/checkpoint`
    /// and the resume pointer, two `fsync`s) on a thread of their own, after
    /// the checkpoint record is durable, instead of before the next append;
    /// when several wait, only the newest is written. A roll and the closing
    /// checkpoint still write theirs before going on. For the shared log's
    /// writer, whose next group commit would otherwise wait for them.
    pub fn publish_checkpoints_in_background(&mut self) {
        match Publisher::start() {
            Ok(publisher) => self.publisher = Some(publisher),
            Err(e) => tracing::warn!(
                "could not start the checkpoint thread; checkpoints are written by the writer: {e}"
            ),
        }
    }

    /// Writes a checkpoint when one is due (§6 of the format: every 64
    /// records, or at the first record 60 s after the last one). The records
    /// are durable whatever happens to the checkpoint; a failed one is tried
    /// again after the next group commit.
    pub fn checkpoint_if_due(&mut self) {
        let due = self.since_checkpoint > 0
            && (self.since_checkpoint >= self.policy.every_records
                || self.last_checkpoint.elapsed() >= self.policy.every);
        if due && let Err(e) = self.checkpoint() {
            tracing::warn!("could not write a checkpoint after a group commit: {e}");
        }
    }

    /// How long the newest write and `fdatasync` of records took.
    pub fn last_sync(&self) -> std::time::Duration {
        self.last_sync
    }

    /// Jobs accepted and not ended, lowest id first.
    pub fn open_jobs(&self) -> Vec<u64> {
        self.rules.jobs.lanes.keys().copied().collect()
    }

    /// The id for the next job: the highest job id in the log + 1 (1 if none).
    pub fn next_job(&self) -> u64 {
        self.rules.jobs.highest().map_or(1, |h| h + 1)
    }

    /// Every open run: (its job, or `None` outside jobs; its `run-started`
    /// record; its module), the run outside jobs first.
    pub fn open_runs(&self) -> Vec<(Option<u64>, u64, [u8; 32])> {
        let outside = self.rules.open_run.map(|(seq, m)| (None, seq, m));
        outside
            .into_iter()
            .chain(
                self.rules
                    .jobs
                    .lanes
                    .iter()
                    .filter_map(|(&job, lane)| lane.open_run.map(|(seq, m)| (Some(job), seq, m))),
            )
            .collect()
    }

    /// The records of open job `job` so far (what its `job-finished` lists),
    /// or `None` when it is not open.
    pub fn job_records(&self, job: u64) -> Option<Vec<u64>> {
        self.rules.jobs.lanes.get(&job).map(|l| l.records.clone())
    }

    /// The newest `capsule-verified` record in lane `job` (`None`: the
    /// records outside any job), if any.
    pub fn last_verified_in(&self, job: Option<u64>) -> Option<u64> {
        match job {
            None => self.last_verified(),
            Some(j) => self
                .rules
                .jobs
                .lanes
                .get(&j)
                .and_then(|l| l.last_verified)
                .map(|(seq, _)| seq),
        }
    }

    /// Commits to a sensitive `value` (e.g. a config secret) without putting it in
    /// the log: returns SHA-256(context ‖ salt ‖ value) for a fresh random salt, and
    /// keeps the opening in `DIR/commitments.jsonl` (mode 0600), so the value can be
    /// revealed to an auditor later without changing any signed record.
    pub fn commit(&mut self, value: &[u8]) -> Result<[u8; 32], EvidenceError> {
        use base64::Engine;
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt)
            .map_err(|e| EvidenceError::Encode(format!("randomness for a salt: {e}")))?;
        let c = commitment(&salt, value);
        let line = format!(
            "{{\"commitment\":\"{}\",\"salt\":\"{}\",\"value\":\"{}\"}}\n",
            hex::encode(c),
            hex::encode(salt),
            base64::engine::general_purpose::STANDARD.encode(value)
        );
        let path = self.dir.join(OPENINGS_FILE);
        let io = |source| EvidenceError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&path).map_err(io)?;
        file.write_all(line.as_bytes()).map_err(io)?;
        file.sync_data().map_err(io)?;
        Ok(c)
    }

    /// Hands the log over to `new`: appends a `key-rotated` record signed
    /// by the current key and carrying `new`'s signature over the handover,
    /// then signs everything after it (starting with a checkpoint) with `new`.
    /// Returns the sequence number of the `key-rotated` record.
    pub fn rotate_key(&mut self, new: SecretKey, reason: &str) -> Result<u64, EvidenceError> {
        let (old_key, new_key) = (*self.key.public().as_bytes(), *new.public().as_bytes());
        if old_key == new_key {
            return Err(EvidenceError::Encode(
                "the new runner key is the current one; generate a new key to rotate to".into(),
            ));
        }
        let seq = self.next_seq;
        let message =
            events::key_rotation_message(&self.log_id, seq, &self.prev, &old_key, &new_key);
        let rotation = events::KeyRotated {
            old_key,
            new_key,
            new_key_signature: new.sign(&message).to_bytes(),
            reason: reason.to_string(),
        };
        self.rotating = true;
        let written = self.record(&Event::from(rotation));
        self.rotating = false;
        written?;
        self.key = new;
        self.checkpoint()?;
        Ok(seq)
    }

    /// Sets when the log rolls over to a new segment file.
    pub fn set_segment_policy(&mut self, policy: SegmentPolicy) {
        self.segments = policy;
    }

    fn roll_due(&self) -> bool {
        let Some((_, started)) = self.segment_first else {
            return false;
        };
        let age = self.last_time.saturating_sub(started);
        self.bytes_len >= self.segments.max_bytes
            || self
                .segments
                .max_age
                .is_some_and(|max| u128::from(age) >= max.as_millis())
    }

    /// Moves the active file to `DIR/segments/` and starts a new one with a
    /// checkpoint record. A crash at any point leaves a log that opens: the
    /// segments and the active file (if any) are read together.
    fn roll(&mut self) -> Result<(), EvidenceError> {
        let Some((first, _)) = self.segment_first else {
            return Ok(());
        };
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| EvidenceError::Io { path, source }
        };
        let segments = self.dir.join(SEGMENTS_DIR);
        fs::create_dir_all(&segments).map_err(io(&segments))?;
        let target = segments.join(segment_name(first));
        if target.exists() {
            return Err(EvidenceError::Encode(format!(
                "segment {} already exists; refusing to replace it",
                target.display()
            )));
        }
        fs::rename(&self.path, &target).map_err(io(&target))?;
        for d in [&segments, &self.dir] {
            File::open(d).and_then(|f| f.sync_all()).map_err(io(d))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&self.path)
            .map_err(io(&self.path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(EvidenceError::Locked(self.path.display().to_string()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&self.path)(e)),
        }
        File::open(&self.dir)
            .and_then(|f| f.sync_all())
            .map_err(io(&self.dir))?;
        self.file = file;
        self.bytes_len = 0;
        self.segment_first = None;
        self.rolling = true;
        let started = self.checkpoint();
        self.rolling = false;
        started.map(|_| ())
    }

    /// Sets when checkpoints are written.
    pub fn set_checkpoint_policy(&mut self, policy: CheckpointPolicy) {
        self.policy = policy;
    }

    /// Appends a signed checkpoint over every record so far and writes it
    /// to `DIR/checkpoint` too (replacing the previous one atomically).
    pub fn checkpoint(&mut self) -> Result<Checkpoint, EvidenceError> {
        let checkpoint = Checkpoint {
            origin: origin(&self.log_id),
            size: self.tree.size(),
            root: self.tree.root(),
        };
        let note = checkpoint.sign(&self.key);
        let offset = self.bytes_len;
        let state = state_value(&self.tree, &self.rules, &self.key.public());
        let written = self.record(&Event::from(events::Checkpoint {
            size: checkpoint.size,
            root: checkpoint.root,
            note,
            state: Some(state),
        }))?;
        self.since_checkpoint = 0;
        self.last_checkpoint = std::time::Instant::now();
        // The file's checkpoint also covers the checkpoint record just written, so
        // no record — not even the last — can be dropped without contradicting it.
        let covering = Checkpoint {
            origin: checkpoint.origin.clone(),
            size: self.tree.size(),
            root: self.tree.root(),
        };
        let files = CheckpointFiles {
            dir: self.dir.clone(),
            note: covering.sign(&self.key),
            // Only a hint for the next open; a wrong one costs a full re-read.
            pointer: format!("{offset} {}\n", written.record.seq),
        };
        let rolls = !self.rolling && self.roll_due();
        match &self.publisher {
            // The roll moves the file the pointer points into: it goes after
            // every checkpoint file handed over is written.
            Some(publisher) if !rolls => publisher.publish(files),
            Some(publisher) => {
                publisher.flush();
                files.write()?;
            }
            None => files.write()?,
        }
        if rolls {
            self.roll()?;
        }
        Ok(checkpoint)
    }

    /// Writes a final checkpoint if records were added since the last one, and closes the log.
    pub fn close(mut self) -> Result<(), EvidenceError> {
        self.close_inner()
    }

    fn close_inner(&mut self) -> Result<(), EvidenceError> {
        // Writes what it was handed, and stops: the closing checkpoint's
        // files are written here, before the log is closed.
        drop(self.publisher.take());
        if self.since_checkpoint > 0 {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Where the log lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The evidence directory the log is in (proposal files are kept beside it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of records in the log.
    pub fn len(&self) -> u64 {
        self.next_seq
    }

    /// True when the log has no records (never after `open`, which writes one).
    pub fn is_empty(&self) -> bool {
        self.next_seq == 0
    }

    /// Sequence number and module of the `run-started` record that no
    /// `run-finished` or `run-interrupted` has closed, if any.
    pub fn open_run(&self) -> Option<(u64, [u8; 32])> {
        self.rules.open_run
    }

    /// Highest capsule and trust root versions this log shows accepted.
    pub fn high_water(&self) -> &HighWater {
        &self.rules.high_water
    }

    /// This log's id.
    pub fn log_id(&self) -> [u8; 16] {
        self.log_id
    }

    /// The sequence number of the newest `capsule-verified` record, if any.
    pub fn last_verified(&self) -> Option<u64> {
        self.rules.last_verified.map(|(seq, _)| seq)
    }

    /// SHA-256 of the newest record.
    pub fn head(&self) -> [u8; 32] {
        self.prev
    }

    /// What this log shows about proposal `digest` (recorded, approvals
    /// counted, authorized, applied), if it was recorded here.
    pub fn proposal_mark(
        &self,
        digest: &[u8; 32],
    ) -> Option<&super::remediation_rules::ProposalMark> {
        self.rules.remediation.proposals.get(digest)
    }

    /// The `apply-started` (proposal, record) no `applied` has closed: a
    /// runner stopped mid-apply, to be resolved from the target's digest.
    pub fn open_apply(&self) -> Option<([u8; 32], u64)> {
        self.rules.remediation.open_apply
    }
}

/// The `reason` of a `run-interrupted` record written when a log is taken over.
pub const INTERRUPTED_REASON: &str = "the runner stopped before this run finished (killed, crashed or the machine stopped); found when the log was next opened";

/// The `reason` of a `job-abandoned` record written when a log is taken over.
pub const ABANDONED_REASON: &str = "the runner that accepted this job stopped before the job ended (killed, crashed or the machine stopped); found when the log was next opened. The job was not run again: resubmit it";

/// What a runner taking the log over records first: a `run-interrupted`
/// (with its job) for every run left open in any lane, then a
/// `job-abandoned` with `reason` for every job accepted and not ended, all
/// in one group commit. Returns the jobs abandoned. Valid only after
/// [`EvidenceLog::open`], whose `runner-started`/`restart` record is what
/// allows abandonment.
pub fn abandon_open_jobs(log: &mut EvidenceLog, reason: &str) -> Result<Vec<u64>, EvidenceError> {
    let mut events: Vec<Event> = log
        .open_runs()
        .into_iter()
        .map(|(job, run_started, module_sha256)| {
            Event::from(events::RunInterrupted {
                module_sha256,
                run_started,
                reason: INTERRUPTED_REASON.into(),
                job,
            })
        })
        .collect();
    let jobs = log.open_jobs();
    events.extend(jobs.iter().map(|&job| {
        Event::from(events::JobAbandoned {
            job,
            reason: reason.to_string(),
        })
    }));
    if events.is_empty() {
        return Ok(jobs);
    }
    for result in log.record_each(events) {
        result?;
    }
    Ok(jobs)
}

/// Largest checkpoint note read (a few hundred bytes in practice).
const MAX_CHECKPOINT_BYTES: u64 = super::bundle::MAX_CHECKPOINT_BYTES;

/// Largest evidence log opened: what one bundle can carry.
const MAX_LOG_BYTES: u64 = super::bundle::MAX_BUNDLE_BYTES;

/// The text of `DIR/checkpoint`, if there is one.
/// Refuses, before it is written, a signed record over the format's size
/// limit: the verifier would reject it, and every later append with it.
fn check_record_size(signed: &SignedRecord) -> Result<(), EvidenceError> {
    if signed.bytes.len() > MAX_RECORD_BYTES {
        return Err(EvidenceError::RecordTooLarge {
            event: signed.record.event.clone(),
            size: signed.bytes.len(),
            limit: MAX_RECORD_BYTES,
        });
    }
    Ok(())
}

fn read_checkpoint_file(dir: &Path) -> Result<Option<String>, EvidenceError> {
    let path = dir.join(CHECKPOINT_FILE);
    let io = |source| EvidenceError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = match crate::fsio::open_without_waiting(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_CHECKPOINT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_CHECKPOINT_BYTES {
        return Err(EvidenceError::BehindCheckpoint {
            path: path.display().to_string(),
            detail: format!(
                "{CHECKPOINT_FILE} is larger than {MAX_CHECKPOINT_BYTES} bytes, so it is not a checkpoint note"
            ),
        });
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| EvidenceError::BehindCheckpoint {
            path: path.display().to_string(),
            detail: format!("{CHECKPOINT_FILE} is not UTF-8 text, so it is not a checkpoint note"),
        })
}

/// Checks that the complete records of `loaded` extend the checkpoint `note`
/// the runner signed: they are at least as many, and the first `size` of them
/// have its Merkle root.
fn extends_checkpoint(
    loaded: &Loaded,
    note: &str,
    key: &crate::keys::PublicKey,
) -> Result<(), String> {
    let walk = &loaded.walk;
    // Signed by the key in force after the records it covers (keys rotate).
    let size = Checkpoint::peek_size(note).unwrap_or(0);
    let signer = walk
        .keys
        .iter()
        .rev()
        .find(|(from, _)| *from < size.max(1))
        .or(walk.keys.first())
        .map_or(*key, |(_, k)| *k);
    let cp = Checkpoint::verify(note, &signer)
        .map_err(|e| format!("{CHECKPOINT_FILE} does not verify under this runner's key: {e}"))?;
    let Some(log_id) = loaded
        .start_last
        .as_ref()
        .or(walk.records.first())
        .map(|r| r.record.log_id)
    else {
        return Err(format!(
            "{CHECKPOINT_FILE} covers {} records, but the log holds none",
            cp.size
        ));
    };
    if cp.origin != origin(&log_id) {
        return Err(format!(
            "{CHECKPOINT_FILE} is for `{}`, not this log (`{}`)",
            cp.origin,
            origin(&log_id)
        ));
    }
    let held = loaded.start_tree.size() + walk.records.len() as u64;
    if cp.size > held {
        return Err(format!(
            "the checkpoint covers {} records, but the log holds {held} complete ones",
            cp.size
        ));
    }
    if cp.size < loaded.start_tree.size() {
        return Err(format!(
            "the checkpoint covers {} records, fewer than the resume point {}",
            cp.size,
            loaded.start_tree.size()
        ));
    }
    let mut tree = loaded.start_tree.clone();
    let more = (cp.size - tree.size()) as usize;
    for r in walk.records.iter().take(more) {
        tree.push(leaf_hash(&r.bytes));
    }
    if tree.root() != cp.root {
        return Err(format!(
            "the first {} records are not the ones the checkpoint covers (their Merkle root differs)",
            cp.size
        ));
    }
    Ok(())
}

/// File name of the pointer to the newest checkpoint record: `OFFSET SEQ\n`
/// (decimal), a hint that lets `open` skip the records before it. It is not
/// trusted: the record it points at must verify and carry its resume state.
pub const RESUME_FILE: &str = "resume";

/// What was read of a log at open: the walk over the records from the resume
/// point (or from record 0), and where it started.
#[derive(Debug)]
struct Loaded {
    walk: Walk,
    /// Byte offset where the walk started.
    base: u64,
    /// The Merkle frontier over the records before the walk.
    start_tree: Frontier,
    /// The record just before the walk (the resume checkpoint), if any.
    start_last: Option<SignedRecord>,
    /// Bytes of segment files read before the active file.
    before_active: u64,
}

impl Loaded {
    /// Byte offset just after the last complete, valid record.
    fn good_end(&self) -> u64 {
        self.base + self.walk.good_bytes as u64
    }
}

/// Reads the log from byte `base` on and walks it from `start`.
fn load_from(
    file: &mut File,
    path: &Path,
    base: u64,
    start: Start,
    key: &crate::keys::PublicKey,
) -> Result<Loaded, EvidenceError> {
    let io = |source| EvidenceError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(base)).map_err(io)?;
    read_capped(file, &mut bytes, path)?;
    let start_tree = start.tree.clone();
    let start_last = start.last.clone();
    let mut walk = walk_from(&bytes, key, start, &mut |_, _| {});
    walk.failure = walk.failure.map(|f| f.shifted(base as usize));
    Ok(Loaded {
        walk,
        base,
        start_tree,
        start_last,
        before_active: 0,
    })
}

/// Sequence number and time of the first record of the active file (only
/// for naming its segment and its age; nothing is trusted from it).
fn first_in_file(file: &mut File, len: u64) -> Option<(u64, u64)> {
    // A record is usually well under 4 KiB: read that much first, and up to
    // the largest record only when the first one is longer (opening a long
    // log then reads a few KiB here, not 4 MiB).
    let cap = len.min(super::record::MAX_RECORD_BYTES as u64 + 16);
    for want in [cap.min(4096), cap] {
        let mut head = vec![0u8; want as usize];
        file.seek(SeekFrom::Start(0)).ok()?;
        file.read_exact(&mut head).ok()?;
        if let Some(len) = crate::cbor::item_len(&head) {
            let parsed = super::record::parse_unverified(&head[..len]);
            return parsed.record().map(|r| (r.seq, r.time_ms));
        }
    }
    None
}

/// The name of the segment whose first record is `first`.
pub fn segment_name(first: u64) -> String {
    format!("evidence-{first:020}.log")
}

/// The segment files of an evidence directory, oldest first.
pub fn segment_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let segments = dir.join(SEGMENTS_DIR);
    let mut files = match fs::read_dir(&segments) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    files.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("evidence-") && n.ends_with(".log"))
    });
    files.sort();
    Ok(files)
}

/// The whole log of an evidence directory: its segments, oldest first, then
/// the active file, as one byte sequence (what verification reads), with at
/// most `limit` bytes in all.
pub fn read_log_dir(dir: &Path, limit: u64) -> Result<Vec<u8>, crate::fsio::ReadError> {
    let mut files = segment_files(dir).map_err(|source| crate::fsio::ReadError::Io {
        what: "evidence segments".into(),
        path: dir.join(SEGMENTS_DIR),
        source,
    })?;
    let active = dir.join(LOG_FILE);
    if active.exists() || files.is_empty() {
        files.push(active);
    }
    let mut bytes = Vec::new();
    for file in files {
        let room = limit.saturating_sub(bytes.len() as u64);
        bytes.extend_from_slice(&crate::fsio::read_bounded(&file, room, "evidence log")?);
    }
    Ok(bytes)
}

/// Appends what `file` holds from its position to `bytes`, refusing once
/// `bytes` would pass [`MAX_LOG_BYTES`] (a pipe or device stops there too).
fn read_capped(file: &mut File, bytes: &mut Vec<u8>, path: &Path) -> Result<(), EvidenceError> {
    let room = MAX_LOG_BYTES.saturating_sub(bytes.len() as u64);
    file.take(room + 1)
        .read_to_end(bytes)
        .map_err(|source| EvidenceError::Io {
            path: path.display().to_string(),
            source,
        })?;
    if bytes.len() as u64 > MAX_LOG_BYTES {
        return Err(EvidenceError::Io {
            path: path.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!(
                    "larger than the limit of {MAX_LOG_BYTES} bytes (the most a bundle carries); start a new evidence directory"
                ),
            ),
        });
    }
    Ok(())
}

/// Reads every segment and the active file and walks them from record 0.
fn load_all(
    dir: &Path,
    file: &mut File,
    path: &Path,
    key: &crate::keys::PublicKey,
) -> Result<Loaded, EvidenceError> {
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |source| EvidenceError::Io { path: p, source }
    };
    let mut bytes = Vec::new();
    for segment in segment_files(dir).map_err(io(dir))? {
        let mut f = crate::fsio::open_without_waiting(&segment).map_err(io(&segment))?;
        read_capped(&mut f, &mut bytes, &segment)?;
    }
    let before_active = bytes.len() as u64;
    file.seek(SeekFrom::Start(0)).map_err(io(path))?;
    read_capped(file, &mut bytes, path)?;
    let walk = walk_from(&bytes, key, Start::default(), &mut |_, _| {});
    // A crash can tear only the active file; a segment ending inside a record
    // was cut, so it is refused however the walk names it.
    if (walk.good_bytes as u64) < before_active
        && let Some(failure) = &walk.failure
    {
        return Err(EvidenceError::Corrupt {
            path: dir.join(SEGMENTS_DIR).display().to_string(),
            failure: match failure {
                Failure::TornTail { record, offset, .. } => Failure::Malformed {
                    record: *record,
                    offset: *offset,
                    detail: "the last segment ends inside a record".into(),
                },
                other => other.clone(),
            },
        });
    }
    Ok(Loaded {
        walk,
        base: 0,
        start_tree: Frontier::default(),
        start_last: None,
        before_active,
    })
}

/// The walk start just after the checkpoint record `DIR/resume` points at,
/// when that record verifies, is a checkpoint with a resume state, and sits
/// where the pointer says; `None` otherwise.
fn resume_start(
    dir: &Path,
    file: &mut File,
    file_len: u64,
    key: &crate::keys::PublicKey,
) -> Option<(Start, u64)> {
    let text = crate::fsio::read_bounded_text(&dir.join(RESUME_FILE), 64, "resume pointer").ok()?;
    let (offset, seq) = text.strip_suffix('\n')?.split_once(' ')?;
    let (offset, seq): (u64, u64) = (offset.parse().ok()?, seq.parse().ok()?);
    if offset >= file_len {
        return None;
    }
    let want = (file_len - offset).min(super::record::MAX_RECORD_BYTES as u64 + 16);
    let mut head = vec![0u8; want as usize];
    file.seek(SeekFrom::Start(offset)).ok()?;
    file.read_exact(&mut head).ok()?;
    let (_, len) = crate::cbor::decode_prefix(&head).ok()?;
    let item = &head[..len];
    let record = super::record::decode_record(item, key).ok()?;
    let Ok(Event::Checkpoint(cp)) = Event::decode(&record.event, &record.body) else {
        return None;
    };
    if record.seq != seq || cp.size != seq {
        return None;
    }
    let (mut tree, rules, signing) = read_state(cp.state.as_ref()?, cp.size).ok()?;
    if tree.root() != cp.root || signing != *key {
        return None;
    }
    let signed = SignedRecord {
        hash: sha2::Sha256::digest(item).into(),
        bytes: item.to_vec(),
        record,
    };
    tree.push(leaf_hash(item));
    Some((
        Start {
            index: seq + 1,
            last: Some(signed),
            rules,
            tree,
            key: Some(signing),
        },
        offset + len as u64,
    ))
}

impl Drop for EvidenceLog {
    /// Closing without `close` still leaves a checkpoint when it can; a
    /// failure here is not lost evidence (the records are already synced).
    fn drop(&mut self) {
        if let Err(e) = self.close_inner() {
            tracing::warn!("could not write the closing checkpoint: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

    use std::io::Write;

    use super::*;
    use crate::evidence::record::{Record, sign_record};

    fn record(seq: u64, time_ms: u64, text_bytes: usize) -> Vec<u8> {
        let key = SecretKey::generate().unwrap();
        let body = crate::cbor::text_map([("t", Value::Text("x".repeat(text_bytes)))]);
        let record = Record {
            log_id: [5; 16],
            seq,
            prev: [6; 32],
            time_ms,
            event: "note".into(),
            body,
        };
        sign_record(record, &key).unwrap().bytes
    }

    /// The active file's first record names its segment: found whether it
    /// fits the first 4 KiB read or is longer (a checkpoint with a large
    /// state, a large record after a roll).
    #[test]
    fn the_first_record_is_found_whether_it_fits_the_first_read_or_not() {
        for text_bytes in [10, 5000, 100_000] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            let mut file = File::options()
                .create(true)
                .read(true)
                .append(true)
                .open(&path)
                .unwrap();
            file.write_all(&record(41, 7, text_bytes)).unwrap();
            file.write_all(&record(42, 8, 10)).unwrap();
            let len = file.metadata().unwrap().len();
            assert_eq!(
                first_in_file(&mut file, len),
                Some((41, 7)),
                "a first record with {text_bytes} bytes of text"
            );
            // Cut inside the first record: nothing is claimed.
            let first_len = record(41, 7, text_bytes).len() as u64;
            assert_eq!(first_in_file(&mut file, first_len - 1), None);
        }
    }
}
