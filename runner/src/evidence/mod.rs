//! Evidence: signed, hash-chained records of everything the runner does, and their verification.
//!
//! Each record is a COSE_Sign1 (tag 18) signed by the runner's Ed25519 key
//! over a deterministic-CBOR payload that carries the log id, a contiguous
//! sequence number, the SHA-256 of the previous record, the time, the event
//! type and its body. The log is a CBOR sequence (RFC 8742) in one
//! append-only file, synced to disk before an append returns.
//! `docs/evidence-format.md` is the normative description; [`verify`] is
//! its reference verifier and needs nothing but the log and the runner's
//! public key. This module records what others decided; it makes no trust or
//! sandbox decisions itself.

mod batch;
pub mod bundle;
mod checkpoint;
pub mod events;
mod job_rules;
mod log;
pub mod merkle;
mod publish;
mod record;
pub mod remediation_rules;
mod shared;
mod state;
mod verify;
pub mod witness;

pub use checkpoint::{Checkpoint, key_hash, origin};
pub use events::Event;
pub use log::{
    ABANDONED_REASON, CHECKPOINT_FILE, COMMITMENT_CONTEXT, CheckpointPolicy, Entry, EvidenceLog,
    INTERRUPTED_REASON, LOG_FILE, Landed, OPENINGS_FILE, RESUME_FILE, SEGMENTS_DIR, SegmentPolicy,
    abandon_open_jobs, commitment, read_log_dir, segment_files, segment_name,
};
pub use record::{
    CONTENT_TYPE, EVIDENCE_CONTEXT, FORMAT_VERSION, GENESIS_PREV, MAX_RECORD_BYTES, Record,
    SignedRecord, decode_record, read_unverified, sign_record,
};
pub use shared::{CommitObserver, Receipt, SharedLog, WriterStats};
pub use verify::{
    Failure, JobCounts, Summary, check_against_checkpoint, verify_log, verify_log_with_progress,
    verify_range_with_progress,
};

/// Checks `items[i] = (message, signature)` under `key` with the batch path
/// the verifier uses (on all cores): the verdict of `verify_strict` for each
/// signature. `Err(i)`: the first signature it rejects.
pub fn verify_signatures(
    key: &crate::keys::PublicKey,
    items: &[(&[u8], &[u8; 64])],
) -> Result<(), usize> {
    batch::verify_all(key.as_bytes(), items, 0).map_err(|batch::BadSignature(i)| i)
}

/// Why evidence could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvidenceError {
    /// A file operation failed.
    #[error("evidence {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Another process holds the log.
    #[error(
        "evidence log {0} is in use by another edge-runner process; wait for it to finish, or use another evidence directory"
    )]
    Locked(String),
    /// The log was written under another key.
    #[error(
        "evidence log {path} belongs to runner key {log_key}, but this runner's key is {our_key}; use the runner key that wrote it, or a new evidence directory"
    )]
    WrongKey {
        /// The log.
        path: String,
        /// Key that signed the log.
        log_key: String,
        /// Key this runner holds.
        our_key: String,
    },
    /// The key was rotated away from: a newer key continues the log.
    #[error(
        "evidence log {path} no longer accepts runner key {our_key}: record {at} handed the log over to key {new_key}; use that key (and keep the old one offline, or destroy it)"
    )]
    KeyRetired {
        /// The log.
        path: String,
        /// The `key-rotated` record.
        at: u64,
        /// The key offered.
        our_key: String,
        /// The key now in force.
        new_key: String,
    },
    /// The existing log fails verification, so appending would hide the damage.
    #[error(
        "evidence log {path} does not verify ({failure}); refusing to append. Keep it for investigation, move it aside, and start a new evidence directory"
    )]
    Corrupt {
        /// The log.
        path: String,
        /// The first failure.
        failure: Failure,
    },
    /// The log does not extend the newest checkpoint the runner signed for
    /// it: checkpointed records were removed or rewritten, which no crash does.
    #[error(
        "evidence log {path} does not extend its newest checkpoint: {detail}. Records that were checkpointed are gone or changed, which a crash cannot do, so this is tampering; nothing was appended or cut. Keep the directory as it is for investigation and follow the recovery procedure in docs/evidence-format.md §9"
    )]
    BehindCheckpoint {
        /// The log.
        path: String,
        /// What does not match.
        detail: String,
    },
    /// A record would be over the format's size limit; nothing was written.
    #[error(
        "a `{event}` record would be {size} bytes, over the {limit}-byte record limit; nothing was written, so the log stays valid. Record less in it"
    )]
    RecordTooLarge {
        /// The event.
        event: String,
        /// Its signed size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A record could not be encoded.
    #[error("could not encode an evidence record: {0}")]
    Encode(String),
    /// The shared log's writer has stopped (the service is shutting down,
    /// or the log was closed); nothing was recorded.
    #[error(
        "the evidence log is closed (its writer has stopped, as at shutdown); nothing was recorded. Record before closing the log"
    )]
    Closed,
}
