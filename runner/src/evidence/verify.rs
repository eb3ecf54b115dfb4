//! The reference verifier: walks a log and reports the first failure.

use std::fmt;

use sha2::{Digest, Sha256};

use super::checkpoint::{Checkpoint, origin};
use super::events::{self, Event};
use super::merkle::{Frontier, Hash, leaf_hash};
use super::record::{GENESIS_PREV, Record, RecordFault, SignedRecord, decode_record};
use crate::cbor::{self, CborError};
use crate::keys::PublicKey;
use crate::rollback::HighWater;

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
    /// Record 0 is not a `log-opened` naming the key the log is verified
    /// under, or a `log-opened` appears after record 0.
    Genesis {
        /// Position.
        record: u64,
        /// What is wrong.
        detail: String,
    },
    /// A known event's body lacks a required field or has one of the wrong type.
    BadBody {
        /// Position.
        record: u64,
        /// The event name.
        event: String,
        /// What is wrong.
        detail: String,
    },
    /// A `capsule-verified` record accepts a capsule or trust root older
    /// than one accepted earlier in the log, or reuses a version for other code.
    Rollback {
        /// Position.
        record: u64,
        /// What went back.
        detail: String,
    },
    /// A `run-started` does not follow the `capsule-verified` record of the
    /// same module, or a `run-finished` does not close a `run-started` of the
    /// same module: a run the log does not show admitted.
    Unadmitted {
        /// Position.
        record: u64,
        /// What does not pair up.
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
            Failure::Genesis { record, detail } => write!(f, "record {record}: {detail}"),
            Failure::BadBody {
                record,
                event,
                detail,
            } => write!(
                f,
                "record {record} (`{event}`) has a malformed body: {detail}"
            ),
            Failure::Rollback { record, detail } => {
                write!(f, "record {record} accepts a rollback: {detail}")
            }
            Failure::Unadmitted { record, detail } => write!(f, "record {record}: {detail}"),
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
    /// Every record's decoded event, in the same order.
    pub events: Vec<Event>,
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
            events: walk.events,
            high_water: walk.rules.high_water,
            last_checkpoint: walk.last_checkpoint,
            root: walk.tree.root(),
        }),
    }
}

/// The rules that span records: the rollback rule over `capsule-verified`
/// records, and runs admitted by the verification just before them. The
/// writer applies the same rules before it signs, so it cannot write a log
/// that this verifier rejects.
#[derive(Debug, Clone, Default)]
pub(super) struct Rules {
    pub high_water: HighWater,
    /// Sequence number and module of the newest `capsule-verified` record.
    pub last_verified: Option<(u64, [u8; 32])>,
    /// Module of the `run-started` not yet closed by a `run-finished`.
    open_run: Option<[u8; 32]>,
    /// The newest `capsule-verified` acceptance (name, the capsule mark before
    /// it, module): undone if its `run-finished` shows the capsule never started.
    undo: Option<(String, CapsuleMark, [u8; 32])>,
}

/// A capsule's mark as it was: its highest version and module, or none.
type CapsuleMark = Option<(semver::Version, [u8; 32])>;

/// `run-finished` statuses of a capsule that never started: its acceptance
/// is taken back from the capsule mark (`docs/capsule-format.md` §8), so a capsule whose code is
/// not what its manifest says cannot block the genuine one as a rollback.
const NOT_STARTED: [&str; 2] = ["not-started", "kind-mismatch"];

impl Rules {
    /// Applies record `seq`'s `event`, or says which failure it is.
    pub fn apply(&mut self, seq: u64, event: &Event) -> Result<(), Failure> {
        match event {
            Event::CapsuleVerified(v) => {
                let before = self.high_water.capsule(&v.name).cloned();
                self.high_water
                    .accept(
                        &v.name,
                        &v.version,
                        v.module_sha256,
                        &v.trust_root.name,
                        v.trust_root.version,
                    )
                    .map_err(|e| Failure::Rollback {
                        record: seq,
                        detail: e.to_string(),
                    })?;
                let anchor = v
                    .trust_anchor
                    .as_ref()
                    .map(|a| (&a.sha256, a.root_keys.as_slice()));
                self.high_water
                    .pin_root(
                        &v.trust_root.name,
                        v.trust_root.version,
                        v.trust_root.sha256,
                        anchor,
                    )
                    .map_err(|e| Failure::Rollback {
                        record: seq,
                        detail: e.to_string(),
                    })?;
                self.undo = Some((v.name.clone(), before, v.module_sha256));
                self.last_verified = Some((seq, v.module_sha256));
            }
            Event::RunStarted(run) => {
                match self.last_verified {
                    Some((_, module)) if module == run.module_sha256 => {}
                    Some((at, module)) => {
                        return Err(Failure::Unadmitted {
                            record: seq,
                            detail: format!(
                                "`run-started` runs module {}, but the newest `capsule-verified` record before it (record {at}) admitted module {}",
                                short(&run.module_sha256),
                                short(&module)
                            ),
                        });
                    }
                    None => {
                        return Err(Failure::Unadmitted {
                            record: seq,
                            detail: format!(
                                "`run-started` runs module {}, but no `capsule-verified` record before it admitted any capsule",
                                short(&run.module_sha256)
                            ),
                        });
                    }
                }
                self.open_run = Some(run.module_sha256);
            }
            Event::RunFinished(end) => {
                if self.open_run != Some(end.module_sha256) {
                    return Err(Failure::Unadmitted {
                        record: seq,
                        detail: format!(
                            "`run-finished` for module {} closes no `run-started` of that module",
                            short(&end.module_sha256)
                        ),
                    });
                }
                self.open_run = None;
                if let Some((name, before, module)) = self.undo.take()
                    && module == end.module_sha256
                    && NOT_STARTED.contains(&end.status.as_str())
                {
                    self.high_water.restore_capsule(&name, before);
                }
            }
            Event::TrustAnchorChanged(change) => {
                self.high_water.reanchor(crate::rollback::PinnedAnchor {
                    name: change.name.clone(),
                    sha256: Some(change.anchor.sha256),
                    root_keys: change.anchor.root_keys.clone(),
                });
            }
            _ => {}
        }
        Ok(())
    }
}

fn short(digest: &[u8; 32]) -> String {
    hex::encode(&digest[..8])
}

/// The result of walking a log as far as it is valid.
#[derive(Debug)]
pub(super) struct Walk {
    pub records: Vec<SignedRecord>,
    pub events: Vec<Event>,
    pub last: Option<SignedRecord>,
    /// Bytes up to the end of the last valid record.
    pub good_bytes: usize,
    pub failure: Option<Failure>,
    pub rules: Rules,
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
        events: Vec::new(),
        last: None,
        good_bytes: 0,
        failure: None,
        rules: Rules::default(),
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
        let event = match Event::decode(&record.event, &record.body) {
            Ok(event) => event,
            Err(detail) => {
                walk.failure = Some(Failure::BadBody {
                    record: index,
                    event: record.event.clone(),
                    detail,
                });
                return walk;
            }
        };
        if let Some(detail) = genesis_failure(index, &event, key) {
            walk.failure = Some(Failure::Genesis {
                record: index,
                detail,
            });
            return walk;
        }
        if let Err(failure) = walk.rules.apply(index, &event) {
            walk.failure = Some(failure);
            return walk;
        }
        if let Event::Checkpoint(cp) = &event {
            match check_checkpoint(&record, cp, &walk.tree, key) {
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
        walk.events.push(event);
        walk.last = Some(signed);
        offset += len;
        walk.good_bytes = offset;
        index += 1;
    }
    progress(bytes.len(), bytes.len());
    walk
}

/// Record 0 opens the log and names the key that signs it; no other record does.
fn genesis_failure(index: u64, event: &Event, key: &PublicKey) -> Option<String> {
    match (index, event) {
        (0, Event::LogOpened(opened)) if opened.runner_key == *key.as_bytes() => None,
        (0, Event::LogOpened(opened)) => Some(format!(
            "`log-opened` names runner key {}, not the key {} the log is verified under",
            hex::encode(&Sha256::digest(opened.runner_key)[..8]),
            key.id().short()
        )),
        (0, other) => Some(format!(
            "the log must open with a `log-opened` record, not `{}`",
            other.name()
        )),
        (_, Event::LogOpened(_)) => {
            Some("`log-opened` may only be record 0 (a log opens once)".into())
        }
        _ => None,
    }
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

/// Checks a checkpoint record: it covers exactly the records before it, its
/// root is theirs, and its note is the runner's signature over the same.
fn check_checkpoint(
    record: &Record,
    body: &events::Checkpoint,
    tree: &Frontier,
    key: &PublicKey,
) -> Result<Checkpoint, String> {
    let (size, root) = (body.size, body.root);
    if size != tree.size() {
        return Err(format!(
            "it covers {size} records, but {} come before it",
            tree.size()
        ));
    }
    if root != tree.root() {
        return Err("its root is not the Merkle root of the records before it".into());
    }
    let note = Checkpoint::verify(&body.note, key)?;
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
