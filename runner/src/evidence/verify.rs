//! The reference verifier: walks a log and reports the first failure.

use std::fmt;

use sha2::{Digest, Sha256};

use super::checkpoint::{Checkpoint, origin};
use super::events::{self, Event};
pub use super::job_rules::JobCounts;
use super::merkle::{Frontier, Hash, leaf_hash};
use super::record::{GENESIS_PREV, Parsed, Record, RecordFault, SignedRecord, parse_unverified};
use super::state::state_value;
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
    /// A remediation record breaks the authority rules: an apply without an
    /// authorization, an authorization short of its tier's quorum, a proposal
    /// applied twice (`docs/remediation.md` §7).
    Unauthorized {
        /// Position.
        record: u64,
        /// What is wrong.
        detail: String,
    },
    /// A job record breaks the job rules (`docs/evidence-format.md` §5.3):
    /// a job accepted twice, ended twice or never, run twice, or abandoned
    /// without a runner having taken the log over.
    Job {
        /// Position.
        record: u64,
        /// What is wrong.
        detail: String,
    },
    /// A `key-rotated` record does not hand over from the key that signed it
    /// to a valid new key that signed the handover.
    KeyRotation {
        /// Position.
        record: u64,
        /// What is wrong.
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
            Failure::Unauthorized { record, detail } => {
                write!(f, "record {record} breaks the remediation rules: {detail}")
            }
            Failure::KeyRotation { record, detail } => {
                write!(f, "record {record} is a bad key rotation: {detail}")
            }
            Failure::Job { record, detail } => {
                write!(f, "record {record} breaks the job rules: {detail}")
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

impl Failure {
    /// The same failure with byte offsets moved by `base` (for a walk that
    /// started `base` bytes into the file).
    pub(super) fn shifted(mut self, base: usize) -> Self {
        match &mut self {
            Failure::TornTail { offset, .. }
            | Failure::Malformed { offset, .. }
            | Failure::BadRecord { offset, .. } => *offset += base,
            _ => {}
        }
        self
    }
}

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
    /// The keys that signed the log: (first record signed, key), oldest
    /// first; more than one after `key-rotated` records.
    pub keys: Vec<(u64, PublicKey)>,
    /// Sequence number of `records[0]`: 0 for a whole log, the first
    /// record's for a range (`docs/evidence-format.md` §7.1).
    pub first: u64,
    /// The Merkle frontier over the records before `records[0]` (empty for
    /// a whole log; for a range, from the signed resume state).
    pub start: Frontier,
    /// Jobs accepted and not ended at the end of the log (in flight, or
    /// left by a runner that stopped; the next runner abandons them).
    pub jobs_in_flight: Vec<u64>,
    /// The job records in `records`, counted by kind.
    pub job_counts: JobCounts,
}

impl Summary {
    /// The key that signed record `seq`.
    pub fn key_at(&self, seq: u64) -> Option<PublicKey> {
        self.keys
            .iter()
            .rev()
            .find(|(from, _)| *from <= seq)
            .map(|(_, k)| *k)
    }
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
    // The log may have been signed by earlier keys, handed over by
    // `key-rotated` records; the key it is verified under must be one of them.
    if let Some((_, first)) = walk.keys.first()
        && !walk.keys.iter().any(|(_, k)| k == key)
    {
        return Err(Failure::WrongKey {
            record: 0,
            found: first.id().short(),
            expected: key.id().short(),
        });
    }
    match walk.last {
        None => Err(Failure::Empty),
        Some(last) => Ok(Summary {
            log_id: last.record.log_id,
            head: last.hash,
            records: walk.records,
            jobs_in_flight: walk.rules.jobs.lanes.keys().copied().collect(),
            job_counts: JobCounts::of(&walk.events),
            events: walk.events,
            high_water: walk.rules.high_water,
            last_checkpoint: walk.last_checkpoint,
            root: walk.tree.root(),
            keys: walk.keys,
            first: 0,
            start: Frontier::default(),
        }),
    }
}

/// Verifies a range of a log (`docs/evidence-format.md` §7.1): `bytes` holds
/// the records from a checkpoint record to the end of the log. That first
/// record must be a checkpoint whose signed resume state (§6.1) matches it;
/// its state stands in for the records before it, so the walk goes on from
/// there with every check of a whole log. Nothing here ties the range to the
/// history before it: [`check_against_checkpoint`] with a checkpoint the
/// auditor verified earlier does that.
pub fn verify_range_with_progress(
    bytes: &[u8],
    key: &PublicKey,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Summary, Failure> {
    let (start, event, len, before) = range_start(bytes)?;
    let Some(first) = start.last.clone() else {
        return Err(Failure::Empty);
    };
    let signer = start.key.unwrap_or(*key);
    let walk = walk_from(&bytes[len..], key, start, progress);
    if let Some(failure) = walk.failure {
        return Err(failure.shifted(len));
    }
    let mut keys = walk.keys;
    if let Some(k) = keys.first_mut() {
        k.0 = first.record.seq;
    }
    if !keys.iter().any(|(_, k)| k == key) {
        return Err(Failure::WrongKey {
            record: first.record.seq,
            found: signer.id().short(),
            expected: key.id().short(),
        });
    }
    let last = walk.last.unwrap_or_else(|| first.clone());
    let mut records = Vec::with_capacity(walk.records.len() + 1);
    let mut events = Vec::with_capacity(walk.events.len() + 1);
    records.push(first.clone());
    events.push(event);
    records.extend(walk.records);
    events.extend(walk.events);
    Ok(Summary {
        log_id: first.record.log_id,
        head: last.hash,
        records,
        jobs_in_flight: walk.rules.jobs.lanes.keys().copied().collect(),
        job_counts: JobCounts::of(&events),
        events,
        high_water: walk.rules.high_water,
        last_checkpoint: walk.last_checkpoint,
        root: walk.tree.root(),
        keys,
        first: first.record.seq,
        start: before,
    })
}

/// The walk start just after the checkpoint record a range begins with, that
/// record's event and length, and the frontier before it — or why the range
/// cannot begin there.
fn range_start(bytes: &[u8]) -> Result<(Start, Event, usize, Frontier), Failure> {
    let (_, len) = cbor::decode_prefix(bytes).map_err(|e| match e {
        CborError::Truncated => Failure::TornTail {
            record: 0,
            offset: 0,
            bytes: bytes.len(),
        },
        e => Failure::Malformed {
            record: 0,
            offset: 0,
            detail: e.to_string(),
        },
    })?;
    let item = &bytes[..len];
    let parsed = parse_unverified(item);
    let Some(unverified) = parsed.record() else {
        let detail = match parsed.structure() {
            Err(RecordFault::Invalid(d) | RecordFault::WrongKey(d)) => d,
            Ok((Err(d), _, _)) => d,
            Ok((Ok(_), _, _)) => "not a record".into(),
        };
        return Err(Failure::BadRecord {
            record: 0,
            offset: 0,
            detail,
        });
    };
    let seq = unverified.seq;
    let not_a_start = |detail: String| Failure::BadCheckpoint {
        record: seq,
        detail: format!(
            "a range must begin with a checkpoint record carrying its resume state (docs/evidence-format.md §7.1), and this one {detail}"
        ),
    };
    let cp = match Event::decode(&unverified.event, &unverified.body) {
        Ok(Event::Checkpoint(cp)) => cp,
        Ok(other) => return Err(not_a_start(format!("is `{}`", other.name()))),
        Err(detail) => return Err(not_a_start(format!("does not decode: {detail}"))),
    };
    let Some(state) = cp.state.as_ref() else {
        return Err(not_a_start("has no `state`".into()));
    };
    let (before, rules, signer) = super::state::read_state(state, cp.size)
        .map_err(|e| not_a_start(format!("has an unreadable `state`: {e}")))?;
    if cp.size != seq || before.size() != seq || before.root() != cp.root {
        return Err(not_a_start(format!(
            "does not match its own state (size {}, frontier of {}, at record {seq})",
            cp.size,
            before.size()
        )));
    }
    // Its signature, under the key its state names (the key in force then).
    let record = super::record::decode_record(item, &signer).map_err(|fault| match fault {
        RecordFault::WrongKey(found) => Failure::WrongKey {
            record: seq,
            found,
            expected: signer.id().short(),
        },
        RecordFault::Invalid(detail) => Failure::BadRecord {
            record: seq,
            offset: 0,
            detail,
        },
    })?;
    let event = Event::decode(&record.event, &record.body).map_err(|detail| Failure::BadBody {
        record: seq,
        event: record.event.clone(),
        detail,
    })?;
    let mut tree = before.clone();
    tree.push(leaf_hash(item));
    let signed = SignedRecord {
        hash: Sha256::digest(item).into(),
        bytes: item.to_vec(),
        record,
    };
    let start = Start {
        index: seq + 1,
        last: Some(signed),
        rules,
        tree,
        key: Some(signer),
    };
    Ok((start, event, len, before))
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
    /// Sequence number and module of the `run-started` not yet closed by a
    /// `run-finished` or `run-interrupted`.
    pub open_run: Option<(u64, [u8; 32])>,
    /// The newest `capsule-verified` acceptance (name, the capsule mark before
    /// it, module): undone if its `run-finished` shows the capsule never started.
    pub undo: Option<(String, CapsuleMark, [u8; 32])>,
    /// Proposals, their approvals, authorizations and applies.
    pub remediation: super::remediation_rules::RemediationRules,
    /// Jobs: the open ones' lanes, every id accepted, shed load.
    pub jobs: super::job_rules::JobRules,
}

/// A capsule's mark as it was: its highest version and module, or none.
pub(super) type CapsuleMark = Option<(semver::Version, [u8; 32])>;

/// `run-finished` statuses of a capsule that never started: its acceptance
/// is taken back from the capsule mark (`docs/capsule-format.md` §8), so a capsule whose code is
/// not what its manifest says cannot block the genuine one as a rollback.
const NOT_STARTED: [&str; 2] = ["not-started", "kind-mismatch"];

impl Rules {
    /// Applies record `seq`'s `event`, or says which failure it is.
    pub fn apply(&mut self, seq: u64, event: &Event) -> Result<(), Failure> {
        if let Some(job) = job_of(event) {
            return self.apply_in_lane(seq, job, event);
        }
        match event {
            Event::CapsuleVerified(v) => {
                let before = self.accept_capsule(seq, v)?;
                self.jobs.forget_undo(&v.name, None);
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
                self.open_run = Some((seq, run.module_sha256));
            }
            Event::RunFinished(end) => {
                if self.open_run.map(|(_, m)| m) != Some(end.module_sha256) {
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
            Event::GovernanceLoaded(g) => {
                // Governance never goes back: a log that loads an older
                // version, or one version with two contents, fails here.
                self.high_water
                    .accept_governance(&g.name, g.version, g.sha256)
                    .map_err(|e| Failure::Rollback {
                        record: seq,
                        detail: e.to_string(),
                    })?;
            }
            Event::TrustAnchorChanged(change) => {
                self.high_water.reanchor(crate::rollback::PinnedAnchor {
                    name: change.name.clone(),
                    sha256: Some(change.anchor.sha256),
                    root_keys: change.anchor.root_keys.clone(),
                });
            }
            Event::ProposalRecorded(_)
            | Event::ApprovalChecked(_)
            | Event::AuthorizationRecorded(_)
            | Event::ApplyStarted(_)
            | Event::Applied(_)
            | Event::VerifyResult(_)
            | Event::RolledBack(_)
            | Event::Notified(_)
            | Event::PostReview(_) => {
                self.remediation
                    .apply(seq, event)
                    .map_err(|detail| Failure::Unauthorized {
                        record: seq,
                        detail,
                    })?;
            }
            Event::RunInterrupted(cut) => {
                if self.open_run != Some((cut.run_started, cut.module_sha256)) {
                    return Err(Failure::Unadmitted {
                        record: seq,
                        detail: format!(
                            "`run-interrupted` names the `run-started` record {} of module {}, which is not the open run",
                            cut.run_started,
                            short(&cut.module_sha256)
                        ),
                    });
                }
                self.open_run = None;
            }
            Event::RunnerStarted(_)
            | Event::Restart(_)
            | Event::JobAccepted(_)
            | Event::JobFinished(_)
            | Event::JobCancelled(_)
            | Event::JobAbandoned(_)
            | Event::LoadShed(_) => {
                self.jobs.apply(seq, event).map_err(|detail| Failure::Job {
                    record: seq,
                    detail,
                })?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Accepts `v`'s capsule and trust root into the high-water marks (the
    /// rollback rule is global, whatever the lane); returns the capsule's mark before.
    fn accept_capsule(
        &mut self,
        seq: u64,
        v: &events::CapsuleVerified,
    ) -> Result<CapsuleMark, Failure> {
        let before = self.high_water.capsule(&v.name).cloned();
        let rollback = |e: crate::rollback::RollbackError| Failure::Rollback {
            record: seq,
            detail: e.to_string(),
        };
        self.high_water
            .accept(
                &v.name,
                &v.version,
                v.module_sha256,
                &v.trust_root.name,
                v.trust_root.version,
            )
            .map_err(rollback)?;
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
            .map_err(rollback)?;
        Ok(before)
    }

    /// Applies record `seq` of job `job`'s lane: the run rules of a log,
    /// within the lane, and each job checked and run at most once.
    fn apply_in_lane(&mut self, seq: u64, job: u64, event: &Event) -> Result<(), Failure> {
        let job_failure = |detail: String| Failure::Job {
            record: seq,
            detail,
        };
        let unadmitted = |detail: String| Failure::Unadmitted {
            record: seq,
            detail,
        };
        let lane = self.jobs.lane(job, event.name()).map_err(job_failure)?;
        match event {
            Event::CapsuleVerified(_) | Event::CapsuleRefused(_) => {
                if let Some(c) = lane.checked {
                    return Err(job_failure(format!(
                        "`{}` checks job {job}'s capsule again, but record {c} already did (a job's capsule is checked once)",
                        event.name()
                    )));
                }
            }
            Event::RunStarted(run) => {
                if let Some(s) = lane.started {
                    return Err(job_failure(format!(
                        "job {job} ran twice: its run already started in record {s}"
                    )));
                }
                match lane.last_verified {
                    Some((_, module)) if module == run.module_sha256 => {}
                    Some((at, module)) => {
                        return Err(unadmitted(format!(
                            "`run-started` of job {job} runs module {}, but job {job}'s `capsule-verified` record (record {at}) admitted module {}",
                            short(&run.module_sha256),
                            short(&module)
                        )));
                    }
                    None => {
                        return Err(unadmitted(format!(
                            "`run-started` of job {job} runs module {}, but no `capsule-verified` record of job {job} admitted any capsule",
                            short(&run.module_sha256)
                        )));
                    }
                }
                lane.started = Some(seq);
                lane.open_run = Some((seq, run.module_sha256));
            }
            Event::RunFinished(end) => {
                if lane.open_run.map(|(_, m)| m) != Some(end.module_sha256) {
                    return Err(unadmitted(format!(
                        "`run-finished` of job {job} for module {} closes no `run-started` of that module in job {job}",
                        short(&end.module_sha256)
                    )));
                }
                lane.open_run = None;
                if let Some((name, before, module)) = lane.undo.take()
                    && module == end.module_sha256
                    && NOT_STARTED.contains(&end.status.as_str())
                {
                    self.high_water.restore_capsule(&name, before);
                }
            }
            Event::RunInterrupted(cut) => {
                if lane.open_run != Some((cut.run_started, cut.module_sha256)) {
                    return Err(unadmitted(format!(
                        "`run-interrupted` of job {job} names the `run-started` record {} of module {}, which is not job {job}'s open run",
                        cut.run_started,
                        short(&cut.module_sha256)
                    )));
                }
                lane.open_run = None;
            }
            _ => {}
        }
        let mut undo = None;
        if let Event::CapsuleVerified(v) = event {
            let before = self.accept_capsule(seq, v)?;
            self.jobs.forget_undo(&v.name, Some(job));
            if self.undo.as_ref().is_some_and(|(n, _, _)| *n == v.name) {
                self.undo = None;
            }
            undo = Some((v.name.clone(), before, v.module_sha256));
        }
        let lane = self.jobs.lane(job, event.name()).map_err(job_failure)?;
        match event {
            Event::CapsuleVerified(v) => {
                lane.checked = Some(seq);
                lane.last_verified = Some((seq, v.module_sha256));
                lane.undo = undo;
            }
            Event::CapsuleRefused(_) => lane.checked = Some(seq),
            _ => {}
        }
        lane.records.push(seq);
        Ok(())
    }
}

/// The job a run's record belongs to, if it carries one.
pub(super) fn job_of(event: &Event) -> Option<u64> {
    match event {
        Event::CapsuleVerified(e) => e.job,
        Event::CapsuleRefused(e) => e.job,
        Event::RunStarted(e) => e.job,
        Event::RunFinished(e) => e.job,
        Event::RunInterrupted(e) => e.job,
        _ => None,
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
    /// The signing keys: (first record signed, key), oldest first.
    pub keys: Vec<(u64, PublicKey)>,
}

/// Where a walk starts: at record 0 with nothing before it, or just after a
/// checkpoint record whose signed resume state supplies the rest.
#[derive(Debug, Default)]
pub(super) struct Start {
    /// Index of the first record the walk reads.
    pub index: u64,
    /// The record before it.
    pub last: Option<SignedRecord>,
    /// The rules' state after the records before it.
    pub rules: Rules,
    /// The Merkle frontier over the records before it.
    pub tree: Frontier,
    /// The key that signs the records from `index` on (from the resume
    /// state); `None` at record 0, where the walk's key is used.
    pub key: Option<PublicKey>,
}

fn walk_with_progress(
    bytes: &[u8],
    key: &PublicKey,
    progress: &mut dyn FnMut(usize, usize),
) -> Walk {
    walk_from(bytes, key, Start::default(), progress)
}

/// Records parsed and checked per round: enough to keep every core busy,
/// few enough that a round's signature material stays small.
const CHUNK: usize = 8192;

/// One record as the parallel stage leaves it: parsed and decoded, with its
/// hashes, but not yet checked against the records before it or its key.
struct Prepared {
    offset: usize,
    len: usize,
    /// A copy of the record's bytes, for the summary (made here, on all cores).
    bytes: Vec<u8>,
    /// Not well-formed CBOR (the failure of §4 step 2).
    malformed: Option<String>,
    parsed: Parsed,
    event: Option<Result<Event, String>>,
    hash: [u8; 32],
    leaf: Hash,
}

fn prepare(bytes: &[u8], span: &std::ops::Range<usize>) -> Prepared {
    let item = &bytes[span.clone()];
    let parsed = parse_unverified(item);
    // Only worth telling apart when something is wrong.
    let malformed = if parsed.record().is_none() {
        cbor::decode_prefix(item).err().map(|e| e.to_string())
    } else {
        None
    };
    let event = parsed.record().map(|r| Event::decode(&r.event, &r.body));
    Prepared {
        offset: span.start,
        len: span.len(),
        bytes: item.to_vec(),
        malformed,
        parsed,
        event,
        hash: Sha256::digest(item).into(),
        leaf: leaf_hash(item),
    }
}

/// A signature still to check: record `index`, under `key`.
struct SigJob {
    index: u64,
    offset: usize,
    key: PublicKey,
    tbs: Vec<u8>,
    signature: Vec<u8>,
}

/// Walks `bytes`, the records from `start.index` on, as far as they are valid.
/// Offsets in failures are relative to `bytes`.
///
/// The verdict is that of checking each record in turn (§4), but the work is
/// not done in turn: each round parses a chunk of records on all cores
/// (while the round before is checked in turn), applies the checks that
/// depend on earlier records in order, then checks the round's signatures
/// together ([`super::batch`]). A bad signature at
/// record *k* is the verdict whenever no record before *k* failed, exactly as
/// if it had been checked first.
pub(super) fn walk_from(
    bytes: &[u8],
    key: &PublicKey,
    start: Start,
    progress: &mut dyn FnMut(usize, usize),
) -> Walk {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let mut walk = Walk {
        records: Vec::new(),
        events: Vec::new(),
        last: start.last,
        good_bytes: 0,
        failure: None,
        rules: start.rules,
        tree: start.tree,
        since_checkpoint: 0,
        last_checkpoint: None,
        keys: Vec::new(),
    };
    let mut offset = 0;
    let mut index: u64 = start.index;
    // The key signing the current record: the resume state's, or at record 0
    // the walk's key — or the key record 0 names, when it is not the walk's
    // key, so that a log begun under a key rotated away from still verifies;
    // `verify_log` then requires the walk's key among the log's keys.
    let mut current = start.key.unwrap_or(*key);
    walk.keys.push((start.index, current));
    // Three stages overlap: while round k is checked in turn on this thread,
    // round k+1 is parsed and round k−1's signatures are checked, each on
    // all cores. A bad signature in round k−1 is the verdict even if round k
    // found something else, since it comes first; a round parsed after a
    // failure is thrown away.
    let parse = move |from: usize, index: u64| {
        let (spans, end_failure) = next_spans(bytes, from, index);
        let prepared = parallel_map(&spans, threads, |span| prepare(bytes, span));
        (prepared, end_failure)
    };
    std::thread::scope(|scope| {
        let mut pending: Option<std::thread::ScopedJoinHandle<'_, Option<(u64, usize)>>> = None;
        let bad_signature = |(record, offset): (u64, usize)| Failure::BadRecord {
            record,
            offset,
            detail: super::record::BAD_SIGNATURE.into(),
        };
        let mut next = (offset < bytes.len()).then(|| scope.spawn(move || parse(offset, index)));
        while let Some(round) = next.take() {
            progress(offset, bytes.len());
            let (mut prepared, end_failure) = join(round);
            let round_end = prepared.last().map_or(offset, |p| p.offset + p.len);
            if end_failure.is_none() && round_end < bytes.len() {
                let next_index = index + prepared.len() as u64;
                next = Some(scope.spawn(move || parse(round_end, next_index)));
            }
            let mut jobs = Vec::with_capacity(prepared.len());
            for p in &mut prepared {
                if let Some(failure) = check_in_turn(&mut walk, &mut current, &mut jobs, p, index) {
                    walk.failure = Some(failure);
                    break;
                }
                offset = p.offset + p.len;
                walk.good_bytes = offset;
                index += 1;
            }
            if walk.failure.is_none() {
                walk.failure = end_failure;
            }
            if let Some(earlier) = pending.take().and_then(join) {
                walk.failure = Some(bad_signature(earlier));
                return;
            }
            if walk.failure.is_some() {
                if let Some(bad) = first_bad_signature(&jobs, threads) {
                    walk.failure = Some(bad_signature(bad));
                }
                return;
            }
            pending = Some(scope.spawn(move || first_bad_signature(&jobs, threads)));
        }
        if let Some(bad) = pending.take().and_then(join) {
            walk.failure = Some(bad_signature(bad));
        }
    });
    progress(bytes.len(), bytes.len());
    if let Some(last) = walk.records.last() {
        walk.last = Some(last.clone());
    }
    walk
}

/// Record boundaries from `offset` on, up to a round's worth, and the failure
/// of the item after them if one ends badly (record `index` is the first).
fn next_spans(
    bytes: &[u8],
    offset: usize,
    index: u64,
) -> (Vec<std::ops::Range<usize>>, Option<Failure>) {
    let mut spans = Vec::new();
    let mut at = offset;
    while spans.len() < CHUNK && at < bytes.len() {
        let found = match cbor::item_len(&bytes[at..]) {
            Some(len) => Ok(len),
            None => cbor::decode_prefix(&bytes[at..]).map(|(_, len)| len),
        };
        let record = index + spans.len() as u64;
        match found {
            Ok(len) => {
                spans.push(at..at + len);
                at += len;
            }
            Err(CborError::Truncated) => {
                let failure = Failure::TornTail {
                    record,
                    offset: at,
                    bytes: bytes.len() - at,
                };
                return (spans, Some(failure));
            }
            Err(e) => {
                let failure = Failure::Malformed {
                    record,
                    offset: at,
                    detail: e.to_string(),
                };
                return (spans, Some(failure));
            }
        }
    }
    (spans, None)
}

/// What a stage's thread returned (a panic there is re-raised).
fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// The checks of record `index` that depend on the records before it, in
/// the order of §4; its signature is queued in `jobs` (checked by the
/// caller) once every check before it has passed.
fn check_in_turn(
    walk: &mut Walk,
    current: &mut PublicKey,
    jobs: &mut Vec<SigJob>,
    p: &mut Prepared,
    index: u64,
) -> Option<Failure> {
    let bad_record = |detail: String| {
        Some(Failure::BadRecord {
            record: index,
            offset: p.offset,
            detail,
        })
    };
    if let Some(detail) = &p.malformed {
        return Some(Failure::Malformed {
            record: index,
            offset: p.offset,
            detail: detail.clone(),
        });
    }
    if index == 0
        && walk.last.is_none()
        && walk.records.is_empty()
        && !p.parsed.kid_is(current)
        && let Some(named) = genesis_key(p.parsed.record())
        && p.parsed.kid_is(&named)
    {
        *current = named;
        walk.keys = vec![(0, named)];
    }
    match p.parsed.check_kid(current) {
        Ok(()) => {}
        Err(RecordFault::WrongKey(found)) => {
            return Some(Failure::WrongKey {
                record: index,
                found,
                expected: current.id().short(),
            });
        }
        Err(RecordFault::Invalid(detail)) => return bad_record(detail),
    }
    let (record, tbs, signature) = match p.parsed.take_structure() {
        Ok(structure) => structure,
        Err(RecordFault::Invalid(detail) | RecordFault::WrongKey(detail)) => {
            return bad_record(detail);
        }
    };
    jobs.push(SigJob {
        index,
        offset: p.offset,
        key: *current,
        tbs,
        signature,
    });
    let record = match record {
        Ok(r) => r,
        Err(detail) => return bad_record(detail),
    };
    // The record before: the last one walked, or the one the walk started after.
    let before = walk.records.last().or(walk.last.as_ref());
    if let Some(failure) = link_failure(before, &record, index) {
        return Some(failure);
    }
    let event = match p.event.take() {
        Some(Ok(event)) => event,
        Some(Err(detail)) => {
            return Some(Failure::BadBody {
                record: index,
                event: record.event.clone(),
                detail,
            });
        }
        None => return bad_record("payload did not decode".into()),
    };
    if let Some(detail) = genesis_failure(index, &event, current) {
        return Some(Failure::Genesis {
            record: index,
            detail,
        });
    }
    if let Err(failure) = walk.rules.apply(index, &event) {
        return Some(failure);
    }
    if let Event::KeyRotated(rotation) = &event {
        match check_rotation(&record, rotation, current) {
            Ok(new) => {
                *current = new;
                walk.keys.push((index + 1, new));
            }
            Err(detail) => {
                return Some(Failure::KeyRotation {
                    record: index,
                    detail,
                });
            }
        }
    }
    if let Event::Checkpoint(cp) = &event {
        match check_checkpoint(&record, cp, &walk.tree, &walk.rules, current) {
            Ok(cp) => {
                walk.last_checkpoint = Some(cp);
                walk.since_checkpoint = 0;
            }
            Err(detail) => {
                return Some(Failure::BadCheckpoint {
                    record: index,
                    detail,
                });
            }
        }
    } else {
        walk.since_checkpoint += 1;
    }
    walk.tree.push(p.leaf);
    let signed = SignedRecord {
        record,
        bytes: std::mem::take(&mut p.bytes),
        hash: p.hash,
    };
    walk.records.push(signed);
    walk.events.push(event);
    None
}

/// The first job (lowest record) whose signature `verify_strict` rejects: its record and offset.
fn first_bad_signature(jobs: &[SigJob], threads: usize) -> Option<(u64, usize)> {
    let mut from = 0;
    while from < jobs.len() {
        // A run of records under one key (keys change only at a handover).
        let key = jobs[from].key;
        let to = jobs[from..]
            .iter()
            .position(|j| j.key != key)
            .map_or(jobs.len(), |n| from + n);
        let run = &jobs[from..to];
        // A signature that is not 64 bytes fails; those before it go in one batch.
        let sized = run
            .iter()
            .position(|j| j.signature.len() != 64)
            .unwrap_or(run.len());
        let items: Vec<(&[u8], &[u8; 64])> = run[..sized]
            .iter()
            .filter_map(|j| {
                Some((
                    j.tbs.as_slice(),
                    <&[u8; 64]>::try_from(j.signature.as_slice()).ok()?,
                ))
            })
            .collect();
        if let Err(super::batch::BadSignature(i)) =
            super::batch::verify_all(key.as_bytes(), &items, threads)
        {
            return Some((run[i].index, run[i].offset));
        }
        if sized < run.len() {
            return Some((run[sized].index, run[sized].offset));
        }
        from = to;
    }
    None
}

/// `f` over `items` on up to `threads` threads, results in order.
fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    if threads <= 1 || items.len() < 64 {
        return items.iter().map(f).collect();
    }
    let per = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(per)
            .map(|part| scope.spawn(|| part.iter().map(&f).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// The key record 0 names, if it is a `log-opened` record (read before its
/// signature is checked; the signature is then checked under it like any record's).
fn genesis_key(record: Option<&Record>) -> Option<PublicKey> {
    let record = record?;
    let Ok(Event::LogOpened(opened)) = Event::decode(&record.event, &record.body) else {
        return None;
    };
    PublicKey::from_bytes(&opened.runner_key)
}

/// Checks a `key-rotated` record signed by `current`: it hands over from
/// `current` to a valid, different key, which signed the handover. Returns the new key.
fn check_rotation(
    record: &Record,
    rotation: &events::KeyRotated,
    current: &PublicKey,
) -> Result<PublicKey, String> {
    if rotation.old_key != *current.as_bytes() {
        return Err(format!(
            "`old-key` is not {}, the key that signed it",
            current.id().short()
        ));
    }
    let new = PublicKey::from_bytes(&rotation.new_key)
        .filter(|k| !k.is_weak())
        .ok_or("`new-key` is not a valid Ed25519 public key")?;
    if new == *current {
        return Err("`new-key` is the key it replaces".into());
    }
    let message = events::key_rotation_message(
        &record.log_id,
        record.seq,
        &record.prev,
        &rotation.old_key,
        &rotation.new_key,
    );
    if !new.verify_strict(&message, &rotation.new_key_signature) {
        return Err(format!(
            "`new-key-signature` is not a valid signature by the new key {} over the handover",
            new.id().short()
        ));
    }
    Ok(new)
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
    rules: &Rules,
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
    // Compared as deterministic CBOR: one state, one encoding.
    if let Some(state) = &body.state
        && cbor::encode(state).ok() != cbor::encode(&state_value(tree, rules, key)).ok()
    {
        return Err(
            "its resume `state` is not the state the records before it give (frontier, high-water marks, last verification or open run differ)"
                .into(),
        );
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
    // Signed by the key in force after the records it covers (keys rotate).
    let size = Checkpoint::peek_size(note).unwrap_or(0);
    let signer = summary.key_at(size.saturating_sub(1)).unwrap_or(*key);
    let cp = Checkpoint::verify(note, &signer).map_err(|e| mismatch(format!("checkpoint: {e}")))?;
    if cp.origin != origin(&summary.log_id) {
        return Err(mismatch(format!(
            "the checkpoint is for `{}`, not this log (`{}`)",
            cp.origin,
            origin(&summary.log_id)
        )));
    }
    let records = summary.first + summary.records.len() as u64;
    if cp.size > records {
        return Err(mismatch(format!(
            "the log holds {records} records but a checkpoint the runner signed for it covers {}: records were removed from its end (truncation)",
            cp.size
        )));
    }
    if cp.size < summary.first {
        return Err(mismatch(format!(
            "the checkpoint covers {} records, but this range of the log begins at record {}, so it cannot show the range extends it; export a range that begins at or before record {} (`evidence export --since` with this checkpoint)",
            cp.size,
            summary.first,
            cp.size.saturating_sub(1)
        )));
    }
    let mut tree = summary.start.clone();
    for r in summary
        .records
        .iter()
        .take((cp.size - summary.first) as usize)
    {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

    use super::*;
    use crate::keys::SecretKey;

    /// A valid log of `n` records signed by `key`, as written (record 0
    /// opens it), each record's encoding separately; `tamper(i, record)` may
    /// change record i's content before it is signed.
    fn log_of(n: usize, key: &SecretKey, tamper: impl Fn(usize, &mut Record)) -> Vec<Vec<u8>> {
        let opened = Event::from(events::LogOpened {
            runner_key: *key.public().as_bytes(),
            runner_version: "0.1.0".into(),
            torn_bytes_dropped: 0,
        });
        let mut prev = GENESIS_PREV;
        (0..n)
            .map(|i| {
                let (event, body) = match i {
                    0 => (opened.name().to_string(), opened.body()),
                    _ => (
                        "note".to_string(),
                        cbor::text_map([("n", ciborium::Value::Integer(i.into()))]),
                    ),
                };
                let mut record = Record {
                    log_id: [7; 16],
                    seq: i as u64,
                    prev,
                    time_ms: 1_800_000_000_000 + i as u64,
                    event,
                    body,
                };
                tamper(i, &mut record);
                let signed = super::super::record::sign_record(record, key).unwrap();
                prev = signed.hash;
                signed.bytes
            })
            .collect()
    }

    fn offset_of(records: &[Vec<u8>], i: usize) -> usize {
        records[..i].iter().map(Vec::len).sum()
    }

    /// Flips a bit of record i's signature (its last bytes).
    fn bad_signature(records: &mut [Vec<u8>], i: usize) {
        let last = records[i].len() - 1;
        records[i][last] ^= 0x10;
    }

    fn verdict(records: &[Vec<u8>], key: &SecretKey) -> Failure {
        verify_log(&records.concat(), &key.public()).unwrap_err()
    }

    #[test]
    fn failures_in_later_rounds_name_the_first_bad_record() {
        // Rounds are parsed, checked in turn and signature-checked on
        // different threads at once: the verdict must still be that of a
        // record-by-record walk, whichever round each failure falls in.
        let key = SecretKey::generate().unwrap();
        let n = 2 * CHUNK + 300;
        let clean = log_of(n, &key, |_, _| {});
        let summary = verify_log(&clean.concat(), &key.public()).unwrap();
        assert_eq!(summary.records.len(), n);
        let want_bad_signature = |records: &[Vec<u8>], i: usize| Failure::BadRecord {
            record: i as u64,
            offset: offset_of(records, i),
            detail: super::super::record::BAD_SIGNATURE.into(),
        };

        // A bad signature in round 0 comes before a broken chain in round 1.
        let broken = log_of(n, &key, |i, r| {
            if i == CHUNK + 5 {
                r.prev = [1; 32];
            }
        });
        let mut records = broken.clone();
        bad_signature(&mut records, CHUNK - 3);
        assert_eq!(
            verdict(&records, &key),
            want_bad_signature(&records, CHUNK - 3)
        );
        // The broken chain alone, and before a bad signature in round 2.
        assert_eq!(
            verdict(&broken, &key),
            Failure::BrokenChain {
                record: (CHUNK + 5) as u64
            }
        );
        let mut records = broken;
        bad_signature(&mut records, 2 * CHUNK + 7);
        assert_eq!(
            verdict(&records, &key),
            Failure::BrokenChain {
                record: (CHUNK + 5) as u64
            }
        );
        // Two bad signatures in the last round, and one at a round's first record.
        let mut records = clean.clone();
        bad_signature(&mut records, 2 * CHUNK + 200);
        bad_signature(&mut records, 2 * CHUNK + 100);
        assert_eq!(
            verdict(&records, &key),
            want_bad_signature(&records, 2 * CHUNK + 100)
        );
        let mut records = clean.clone();
        bad_signature(&mut records, CHUNK);
        assert_eq!(verdict(&records, &key), want_bad_signature(&records, CHUNK));
        // A bad signature in round 1 before a torn tail.
        let mut records = clean.clone();
        bad_signature(&mut records, CHUNK + 1);
        let mut bytes = records.concat();
        bytes.truncate(bytes.len() - 10);
        assert_eq!(
            verify_log(&bytes, &key.public()).unwrap_err(),
            want_bad_signature(&records, CHUNK + 1)
        );
        // The torn tail alone, and a record that is not CBOR at a round's start.
        let mut bytes = clean.concat();
        bytes.truncate(bytes.len() - 10);
        let last = n - 1;
        assert_eq!(
            verify_log(&bytes, &key.public()).unwrap_err(),
            Failure::TornTail {
                record: last as u64,
                offset: offset_of(&clean, last),
                bytes: clean[last].len() - 10,
            }
        );
        let mut records = clean;
        records[2 * CHUNK][0] = 0xff;
        assert!(matches!(
            verdict(&records, &key),
            Failure::Malformed { record, .. } if record == (2 * CHUNK) as u64
        ));
    }
}
