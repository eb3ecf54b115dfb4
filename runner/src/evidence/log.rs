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
use super::record::{GENESIS_PREV, Record, SignedRecord, sign_record};
use super::verify::{Failure, Rules, walk_log};
use crate::keys::SecretKey;
use crate::rollback::HighWater;

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
    last_checkpoint: std::time::Instant,
    policy: CheckpointPolicy,
    dir: PathBuf,
    /// Bytes of complete records in the file.
    bytes_len: u64,
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
        // before it is read, and the read is bounded whatever the file is.
        let meta = file.metadata().map_err(io(&path))?;
        if !meta.is_file() {
            return Err(io(&path)(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file; the evidence log is a file the runner writes itself",
            )));
        }
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0)).map_err(io(&path))?;
        if meta.len() <= MAX_LOG_BYTES {
            (&mut file)
                .take(MAX_LOG_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(io(&path))?;
        }
        if meta.len() > MAX_LOG_BYTES || bytes.len() as u64 > MAX_LOG_BYTES {
            return Err(io(&path)(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!(
                    "larger than the limit of {MAX_LOG_BYTES} bytes (the most a bundle carries); start a new evidence directory"
                ),
            )));
        }

        let public = key.public();
        let walk = walk_log(&bytes, &public);
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
        // A log shorter than its own newest checkpoint, or not extending it, was
        // cut or rewritten: no crash does that. Refuse before cutting anything.
        if let Some(note) = read_checkpoint_file(dir)?
            && let Err(detail) = extends_checkpoint(&walk, &note, &public)
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
            last_checkpoint: std::time::Instant::now(),
            policy: CheckpointPolicy::default(),
            dir: dir.to_path_buf(),
            bytes_len: walk.good_bytes as u64,
        };
        let torn_bytes = (bytes.len() - walk.good_bytes) as u64;
        if torn {
            log.file
                .set_len(walk.good_bytes as u64)
                .map_err(io(&log.path))?;
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
            rules.apply(seq, &decoded).map_err(|failure| {
                EvidenceError::Encode(format!("refusing to record it: {failure}"))
            })?;
            let signed = sign_record(record, &self.key).map_err(EvidenceError::Encode)?;
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
        if let Err(e) = self
            .file
            .write_all(&buffer)
            .and_then(|()| self.file.sync_data())
        {
            // Leave no partial record behind for the next append to build on.
            let _ = self.file.set_len(self.bytes_len);
            return Err(io(e));
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
        self.record(&Event::from(events::Checkpoint {
            size: checkpoint.size,
            root: checkpoint.root,
            note,
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
        let note = covering.sign(&self.key);
        let path = self.dir.join(CHECKPOINT_FILE);
        let tmp = self.dir.join(format!(".{CHECKPOINT_FILE}.tmp"));
        let io = |source| EvidenceError::Io {
            path: path.display().to_string(),
            source,
        };
        fs::write(&tmp, note.as_bytes()).map_err(io)?;
        File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
        fs::rename(&tmp, &path).map_err(io)?;
        Ok(checkpoint)
    }

    /// Writes a final checkpoint if records were added since the last one, and closes the log.
    pub fn close(mut self) -> Result<(), EvidenceError> {
        self.close_inner()
    }

    fn close_inner(&mut self) -> Result<(), EvidenceError> {
        if self.since_checkpoint > 0 {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Where the log lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of records in the log.
    pub fn len(&self) -> u64 {
        self.next_seq
    }

    /// True when the log has no records (never after `open`, which writes one).
    pub fn is_empty(&self) -> bool {
        self.next_seq == 0
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
}

/// Largest checkpoint note read (a few hundred bytes in practice).
const MAX_CHECKPOINT_BYTES: u64 = super::bundle::MAX_CHECKPOINT_BYTES;

/// Largest evidence log opened: what one bundle can carry.
const MAX_LOG_BYTES: u64 = super::bundle::MAX_BUNDLE_BYTES;

/// The text of `DIR/checkpoint`, if there is one.
fn read_checkpoint_file(dir: &Path) -> Result<Option<String>, EvidenceError> {
    let path = dir.join(CHECKPOINT_FILE);
    let io = |source| EvidenceError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = match File::open(&path) {
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

/// Checks that the complete records of `walk` extend the checkpoint `note`
/// the runner signed: they are at least as many, and the first `size` of them
/// have its Merkle root.
fn extends_checkpoint(
    walk: &super::verify::Walk,
    note: &str,
    key: &crate::keys::PublicKey,
) -> Result<(), String> {
    let cp = Checkpoint::verify(note, key)
        .map_err(|e| format!("{CHECKPOINT_FILE} does not verify under this runner's key: {e}"))?;
    let Some(first) = walk.records.first() else {
        return Err(format!(
            "{CHECKPOINT_FILE} covers {} records, but the log holds none",
            cp.size
        ));
    };
    if cp.origin != origin(&first.record.log_id) {
        return Err(format!(
            "{CHECKPOINT_FILE} is for `{}`, not this log (`{}`)",
            cp.origin,
            origin(&first.record.log_id)
        ));
    }
    let held = walk.records.len() as u64;
    if cp.size > held {
        return Err(format!(
            "the checkpoint covers {} records, but the log holds {held} complete ones",
            cp.size
        ));
    }
    let mut tree = Frontier::default();
    for r in walk.records.iter().take(cp.size as usize) {
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

impl Drop for EvidenceLog {
    /// Closing without `close` still leaves a checkpoint when it can; a
    /// failure here is not lost evidence (the records are already synced).
    fn drop(&mut self) {
        if let Err(e) = self.close_inner() {
            tracing::warn!("could not write the closing checkpoint: {e}");
        }
    }
}
