//! The reference verifier: walks a log and reports the first failure.

use std::fmt;

use sha2::{Digest, Sha256};

use super::record::{GENESIS_PREV, Record, RecordFault, SignedRecord, decode_record};
use crate::cbor::MapReader;
use crate::cbor::{self, CborError};
use crate::keys::PublicKey;
use crate::trust::HighWater;

use super::checkpoint::{Checkpoint, origin};
use super::log::CHECKPOINT_EVENT;
use super::merkle::{Frontier, Hash, leaf_hash};

/// The first thing wrong with a log. `record` is the 0-based position in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The log holds no records at all.
    Empty,
    /// The file ends inside a record (a write was interrupted, or the tail was cut).
    TornTail {
        /// Position of the incomplete record.
        record: u64,
        /// Its byte offset.
        offset: usize,
        /// Bytes after the last complete record.
        bytes: usize,
    },
    /// A record is not well-formed CBOR.
    Malformed {
        /// Position.
        record: u64,
        /// Byte offset.
        offset: usize,
        /// What is wrong.
        detail: String,
    },
    /// A record is signed by another key.
    WrongKey {
        /// Position.
        record: u64,
        /// Short id of the key that signed it.
        found: String,
        /// Short id of the expected key.
        expected: String,
    },
    /// A record fails its own checks (signature, encoding, fields).
    BadRecord {
        /// Position.
        record: u64,
        /// Byte offset.
        offset: usize,
        /// What is wrong.
        detail: String,
    },
    /// A record belongs to another log.
    LogIdMismatch {
        /// Position.
        record: u64,
    },
    /// Sequence numbers are not 0, 1, 2, ...: a record was removed, duplicated or moved.
    Sequence {
        /// Position.
        record: u64,
        /// The sequence number found there.
        found: u64,
    },
    /// `prev` is not the hash of the record before: history was altered.
    BrokenChain {
        /// Position.
        record: u64,
    },
    /// Time runs backwards between consecutive records.
    TimeReversed {
        /// Position.
        record: u64,
    },
    /// A checkpoint record does not match the records before it, or its note does not verify.
    BadCheckpoint {
        /// Position.
        record: u64,
        /// What is wrong.
        detail: String,
    },
    /// A checkpoint seen earlier (signed by the runner for this log) does not
    /// match the log: records were removed from its end, or history was rewritten.
    CheckpointMismatch {
        /// What does not match.
        detail: String,
    },
    /// A `capsule-verified` record accepts a capsule or trust root older
    /// than one accepted earlier in the log (or malformed so that this cannot be checked).
    Rollback {
        /// Position.
        record: u64,
        /// What went back.
        detail: String,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Empty => write!(f, "the log holds no records"),
            Failure::TornTail {
                record,
                offset,
                bytes,
            } => write!(
                f,
                "record {record} at byte {offset} is incomplete: the log ends {bytes} bytes into it (truncated or interrupted write)"
            ),
            Failure::Malformed {
                record,
                offset,
                detail,
            } => {
                write!(
                    f,
                    "record {record} at byte {offset} is not well-formed CBOR: {detail}"
                )
            }
            Failure::WrongKey {
                record,
                found,
                expected,
            } => {
                write!(
                    f,
                    "record {record} is signed by key {found}, not by the runner key {expected}"
                )
            }
            Failure::BadRecord {
                record,
                offset,
                detail,
            } => write!(f, "record {record} at byte {offset}: {detail}"),
            Failure::LogIdMismatch { record } => {
                write!(
                    f,
                    "record {record} carries another log's id (spliced in from another log)"
                )
            }
            Failure::Sequence { record, found } => write!(
                f,
                "record {record} has sequence number {found}, expected {record} (a record was removed, duplicated or reordered)"
            ),
            Failure::BrokenChain { record } => write!(
                f,
                "record {record} does not link to record {}: its `prev` is not that record's SHA-256 (history altered)",
                record.saturating_sub(1)
            ),
            Failure::CheckpointMismatch { detail } => write!(f, "{detail}"),
            Failure::BadCheckpoint { record, detail } => {
                write!(f, "record {record} is a bad checkpoint: {detail}")
            }
            Failure::Rollback { record, detail } => {
                write!(f, "record {record} accepts a rollback: {detail}")
            }
            Failure::TimeReversed { record } => {
                write!(
                    f,
                    "record {record} is timestamped before record {}",
                    record.saturating_sub(1)
                )
            }
        }
    }
}

impl std::error::Error for Failure {}

/// What a valid log holds.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The log's id.
    pub log_id: [u8; 16],
    /// Every record, in order.
    pub records: Vec<SignedRecord>,
    /// SHA-256 of the last record: commits to the whole history.
    pub head: [u8; 32],
    /// Highest capsule and trust root versions the log shows accepted.
    pub high_water: HighWater,
    /// The newest checkpoint record's checkpoint, if any.
    pub last_checkpoint: Option<Checkpoint>,
    /// RFC 9162 root over every record.
    pub root: Hash,
}

/// Verifies a whole log under the runner's public key. Any failure is returned, the first one found.
pub fn verify_log(bytes: &[u8], key: &PublicKey) -> Result<Summary, Failure> {
    verify_log_with_progress(bytes, key, &mut |_, _| {})
}

/// [`verify_log`], calling `progress(bytes_done, bytes_total)` every few thousand records.
pub fn verify_log_with_progress(
    bytes: &[u8],
    key: &PublicKey,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Summary, Failure> {
    let walk = walk_with_progress(bytes, key, progress);
    if let Some(failure) = walk.failure {
        return Err(failure);
    }
    match walk.last {
        None => Err(Failure::Empty),
        Some(last) => Ok(Summary {
            log_id: last.record.log_id,
            head: last.hash,
            records: walk.records,
            high_water: walk.high_water,
            last_checkpoint: walk.last_checkpoint,
            root: walk.tree.root(),
        }),
    }
}

/// The result of walking a log as far as it is valid.
#[derive(Debug)]
pub(super) struct Walk {
    pub records: Vec<SignedRecord>,
    pub last: Option<SignedRecord>,
    /// Bytes up to the end of the last valid record.
    pub good_bytes: usize,
    pub failure: Option<Failure>,
    pub high_water: HighWater,
    pub tree: Frontier,
    /// Records after the last checkpoint record (checkpoints themselves not counted).
    pub since_checkpoint: u64,
    pub last_checkpoint: Option<Checkpoint>,
}

pub(super) fn walk_log(bytes: &[u8], key: &PublicKey) -> Walk {
    walk_with_progress(bytes, key, &mut |_, _| {})
}

fn walk_with_progress(
    bytes: &[u8],
    key: &PublicKey,
    progress: &mut dyn FnMut(usize, usize),
) -> Walk {
    let mut walk = Walk {
        records: Vec::new(),
        last: None,
        good_bytes: 0,
        failure: None,
        high_water: HighWater::default(),
        tree: Frontier::default(),
        since_checkpoint: 0,
        last_checkpoint: None,
    };
    let mut offset = 0;
    let mut index: u64 = 0;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let len = match cbor::decode_prefix(rest) {
            Ok((_, len)) => len,
            Err(CborError::Truncated) => {
                walk.failure = Some(Failure::TornTail {
                    record: index,
                    offset,
                    bytes: rest.len(),
                });
                return walk;
            }
            Err(e) => {
                walk.failure = Some(Failure::Malformed {
                    record: index,
                    offset,
                    detail: e.to_string(),
                });
                return walk;
            }
        };
        let item = &rest[..len];
        let record = match decode_record(item, key) {
            Ok(r) => r,
            Err(RecordFault::WrongKey(found)) => {
                walk.failure = Some(Failure::WrongKey {
                    record: index,
                    found,
                    expected: key.id().short(),
                });
                return walk;
            }
            Err(RecordFault::Invalid(detail)) => {
                walk.failure = Some(Failure::BadRecord {
                    record: index,
                    offset,
                    detail,
                });
                return walk;
            }
        };
        if let Some(failure) = link_failure(walk.last.as_ref(), &record, index) {
            walk.failure = Some(failure);
            return walk;
        }
        if let Err(detail) = observe(&mut walk.high_water, &record) {
            walk.failure = Some(Failure::Rollback {
                record: index,
                detail,
            });
            return walk;
        }
        if record.event == CHECKPOINT_EVENT {
            match check_checkpoint(&record, &walk.tree, key) {
                Ok(cp) => {
                    walk.last_checkpoint = Some(cp);
                    walk.since_checkpoint = 0;
                }
                Err(detail) => {
                    walk.failure = Some(Failure::BadCheckpoint {
                        record: index,
                        detail,
                    });
                    return walk;
                }
            }
        } else {
            walk.since_checkpoint += 1;
        }
        walk.tree.push(leaf_hash(item));
        if index.is_multiple_of(4096) {
            progress(offset, bytes.len());
        }
        let signed = SignedRecord {
            record,
            bytes: item.to_vec(),
            hash: Sha256::digest(item).into(),
        };
        walk.records.push(signed.clone());
        walk.last = Some(signed);
        offset += len;
        walk.good_bytes = offset;
        index += 1;
    }
    progress(bytes.len(), bytes.len());
    walk
}

fn link_failure(prev: Option<&SignedRecord>, record: &Record, index: u64) -> Option<Failure> {
    if record.seq != index {
        return Some(Failure::Sequence {
            record: index,
            found: record.seq,
        });
    }
    match prev {
        None => (record.prev != GENESIS_PREV).then_some(Failure::BrokenChain { record: index }),
        Some(prev) => {
            if record.log_id != prev.record.log_id {
                Some(Failure::LogIdMismatch { record: index })
            } else if record.prev != prev.hash {
                Some(Failure::BrokenChain { record: index })
            } else if record.time_ms < prev.record.time_ms {
                Some(Failure::TimeReversed { record: index })
            } else {
                None
            }
        }
    }
}

/// The event that marks a capsule as accepted; its body feeds the high-water mark.
pub const CAPSULE_VERIFIED: &str = "capsule-verified";

/// Folds an accepted capsule's name, version and module digest, and its
/// trust root's name and version, into `high_water`; refuses a record that
/// goes below it (or reuses a version for other code).
pub(super) fn observe(high_water: &mut HighWater, record: &Record) -> Result<(), String> {
    if record.event != CAPSULE_VERIFIED {
        return Ok(());
    }
    let body = MapReader::new("capsule-verified body", &record.body)?;
    let name = body.text("name")?;
    let version_text = body.text("version")?;
    let version = semver::Version::parse(version_text)
        .map_err(|e| format!("version `{version_text}` is not semver: {e}"))?;
    if !version.build.is_empty() {
        return Err(format!(
            "version `{version_text}` carries build metadata, which signed manifests never do"
        ));
    }
    let digest: [u8; 32] = body
        .bytes("module-sha256")?
        .try_into()
        .map_err(|_| "`module-sha256` must be 32 bytes".to_string())?;
    let root_value = body
        .get("trust-root")
        .ok_or_else(|| "`trust-root` is missing".to_string())?;
    let root = MapReader::new("trust-root", root_value)?;
    let root_name = root.text("name")?;
    let root_version = root.uint("version")?;

    if let Some(seen) = high_water.root(root_name)
        && root_version < seen
    {
        return Err(format!(
            "trust root `{root_name}` v{root_version} after v{seen} was used"
        ));
    }
    if let Some((highest, seen_digest)) = high_water.capsule(name) {
        if version < *highest {
            return Err(format!(
                "capsule `{name}` {version} after {highest} was accepted"
            ));
        }
        if version == *highest && digest != *seen_digest {
            return Err(format!(
                "capsule `{name}` {version} accepted with module {} after the same version was accepted with module {}",
                hex::encode(digest),
                hex::encode(seen_digest)
            ));
        }
    }
    high_water.observe_root(root_name, root_version);
    high_water.observe_capsule(name, &version, digest);
    Ok(())
}

/// Checks a checkpoint record: it covers exactly the records before it, its
/// root is theirs, and its note is the runner's signature over the same.
fn check_checkpoint(
    record: &Record,
    tree: &Frontier,
    key: &PublicKey,
) -> Result<Checkpoint, String> {
    let body = MapReader::new("checkpoint body", &record.body)?;
    body.only(&["size", "root", "note"])?;
    let size = body.uint("size")?;
    let root: Hash = body
        .bytes("root")?
        .try_into()
        .map_err(|_| "`root` must be 32 bytes".to_string())?;
    if size != tree.size() {
        return Err(format!(
            "it covers {size} records, but {} come before it",
            tree.size()
        ));
    }
    if root != tree.root() {
        return Err("its root is not the Merkle root of the records before it".into());
    }
    let note = Checkpoint::verify(body.text("note")?, key)?;
    let want = Checkpoint {
        origin: origin(&record.log_id),
        size,
        root,
    };
    if note != want {
        return Err("its signed note names another log, size or root".into());
    }
    Ok(note)
}

/// Checks a valid log against a checkpoint `note` obtained earlier (from the
/// evidence directory, a bundle, or a witness): the note must be the runner's
/// signature for this log, the log must still hold every record it covers, and
/// those records must be the ones it covers (RFC 9162 root over them).
pub fn check_against_checkpoint(
    summary: &Summary,
    note: &str,
    key: &PublicKey,
) -> Result<Checkpoint, Failure> {
    let mismatch = |detail: String| Failure::CheckpointMismatch { detail };
    let cp = Checkpoint::verify(note, key).map_err(|e| mismatch(format!("checkpoint: {e}")))?;
    if cp.origin != origin(&summary.log_id) {
        return Err(mismatch(format!(
            "the checkpoint is for `{}`, not this log (`{}`)",
            cp.origin,
            origin(&summary.log_id)
        )));
    }
    let records = summary.records.len() as u64;
    if cp.size > records {
        return Err(mismatch(format!(
            "the log holds {records} records but a checkpoint the runner signed for it covers {}: records were removed from its end (truncation)",
            cp.size
        )));
    }
    let mut tree = Frontier::default();
    for r in summary.records.iter().take(cp.size as usize) {
        tree.push(leaf_hash(&r.bytes));
    }
    if tree.root() != cp.root {
        return Err(mismatch(format!(
            "the first {} records are not the ones the checkpoint covers (its Merkle root differs): history was rewritten after it was signed",
            cp.size
        )));
    }
    Ok(cp)
}
