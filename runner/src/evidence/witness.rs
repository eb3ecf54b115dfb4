//! Witnesses: cosigning the runner's checkpoints so that a log cut short or
//! rewritten by whoever holds the runner key is still caught.
//!
//! Three C2SP formats, byte for byte (`docs/evidence-format.md` §10 is normative):
//!
//! * **cosignature/v1** (c2sp.org/tlog-cosignature): a witness signs
//!   `cosignature/v1\ntime <unix seconds>\n` followed by the checkpoint body,
//!   and its note signature line is
//!   `— <name> base64(key ID(4) ‖ timestamp(8, big-endian) ‖ Ed25519 signature(64))`,
//!   the key ID being the first 4 bytes of SHA-256(name ‖ "\n" ‖ 0x04 ‖ public key).
//! * **add-checkpoint** (c2sp.org/tlog-witness): the request a witness
//!   answers, `old <size>\n`, up to 63 consistency proof hashes (one base64
//!   line each), a blank line, then the checkpoint note.
//! * **vkey** (c2sp.org/signed-note, as `golang.org/x/mod/sumdb/note` writes
//!   it): `<name>+<key ID, 8 hex digits>+base64(0x04 ‖ public key)`, how an
//!   auditor names a witness it trusts.
//!
//! The witness side ([`WitnessState::add_checkpoint`]) keeps, per log origin,
//! the newest checkpoint it cosigned, and cosigns only a checkpoint that
//! extends it by a verified RFC 9162 consistency proof; the check and the
//! update happen under one file lock, and the state is replaced atomically.
//! The runner side builds requests ([`request_for`]) and keeps the verified
//! cosigned notes ([`attach`]); the verifier ([`crate::audit`]) counts them
//! with [`verify_cosignature`]. Cosignatures are always verified against a
//! key the caller names, never trusted because of where a file lies. This
//! module signs and checks notes; it does not touch the evidence log itself.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use super::checkpoint::{Checkpoint, canonical_base64, note_parts};
use super::merkle::{Hash, consistency_proof, leaf_hash, verify_consistency};
use super::{Summary, check_against_checkpoint};
use crate::fsio::{read_bounded_text, write_atomically};
use crate::keys::{PublicKey, SecretKey};
use crate::timestamp::Timestamp;

/// The signed-note signature type of a timestamped Ed25519 cosignature (C2SP signed-note).
pub const COSIGNATURE_V1_TYPE: u8 = 0x04;

/// The first line of every cosignature/v1 signed message.
pub const COSIGNATURE_V1_HEADER: &str = "cosignature/v1";

/// Directory, inside an evidence directory, of the witnessed checkpoints:
/// `<key ID, 8 lowercase hex digits>.checkpoint`, one per witness.
pub const WITNESSED_DIR: &str = "witnessed";

/// Suffix of a witnessed checkpoint file.
pub const WITNESSED_SUFFIX: &str = ".checkpoint";

/// The witness's private key in its state directory (PKCS#8 PEM, mode 0600).
pub const WITNESS_KEY_FILE: &str = "witness.key";

/// The witness's public key in its state directory, as a vkey line.
pub const WITNESS_VKEY_FILE: &str = "witness.vkey";

/// Directory, inside a witness's state directory, of the newest checkpoint cosigned per log.
pub const WITNESS_LOGS_DIR: &str = "logs";

/// The lock file that serialises every check-and-update of a witness's state.
pub const WITNESS_LOCK_FILE: &str = "lock";

/// Most consistency proof lines in a request (C2SP tlog-witness).
pub const MAX_PROOF_LINES: usize = 63;

/// Largest add-checkpoint request, cosignature response or witnessed note read.
pub const MAX_NOTE_BYTES: u64 = 64 * 1024;

/// Length of a cosignature/v1 blob: key ID, timestamp, Ed25519 signature.
const COSIGNATURE_LEN: usize = 4 + 8 + 64;

/// The signature line prefix: an em dash and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Why a witness refused, or a cosignature or witness key could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessError {
    /// A witness name that signed notes cannot carry.
    #[error(
        "witness name `{0}` is not a signed-note key name: it must be non-empty, without spaces or `+` (e.g. `witness.example.com/w1`)"
    )]
    Name(String),
    /// A witness public key that is not a vkey.
    #[error(
        "witness key `{text}` is not a cosignature/v1 vkey (`NAME+KEYID+BASE64`, as `edge-runner evidence witness-init` writes to witness.vkey): {detail}"
    )]
    VKey {
        /// The text given.
        text: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The add-checkpoint request is not well formed.
    #[error("not an add-checkpoint request (c2sp.org/tlog-witness): {0}")]
    Request(String),
    /// The checkpoint is for a log this witness is not configured for.
    #[error(
        "this witness is configured for log `{configured}`, not `{origin}`; refusing to cosign a checkpoint of a log it does not follow"
    )]
    UnknownOrigin {
        /// The checkpoint's origin.
        origin: String,
        /// The origin the witness was given.
        configured: String,
    },
    /// The checkpoint is not signed by the log's key.
    #[error(
        "the checkpoint for `{origin}` is not signed by the log's key {key_id} ({detail}); refusing to cosign it"
    )]
    NotSignedByLog {
        /// The log.
        origin: String,
        /// The log key the witness was given (short id).
        key_id: String,
        /// What the note check said.
        detail: String,
    },
    /// The checkpoint is smaller than one the witness already cosigned.
    #[error(
        "the checkpoint for `{origin}` covers {size} records, but this witness already cosigned {stored} for it: the log would have shrunk, so records were removed; refusing to cosign"
    )]
    RolledBack {
        /// The log.
        origin: String,
        /// The checkpoint's size.
        size: u64,
        /// The size the witness cosigned last.
        stored: u64,
    },
    /// The request proves consistency from another size than the witness's.
    #[error(
        "the request proves consistency from size {old}, but this witness last cosigned size {stored} for `{origin}`; ask again with a consistency proof from size {stored}"
    )]
    OldSizeMismatch {
        /// The log.
        origin: String,
        /// The request's old size.
        old: u64,
        /// The size the witness cosigned last.
        stored: u64,
    },
    /// Same size as the witness's checkpoint, another root: a fork.
    #[error(
        "the checkpoint for `{origin}` covers {size} records with root {root}, but this witness cosigned {size} records with root {stored_root}: the log forked (history rewritten); refusing to cosign"
    )]
    Fork {
        /// The log.
        origin: String,
        /// Both checkpoints' size.
        size: u64,
        /// The new root (base64).
        root: String,
        /// The cosigned root (base64).
        stored_root: String,
    },
    /// The consistency proof does not verify.
    #[error(
        "the consistency proof from {old} to {size} records of `{origin}` does not verify against the checkpoint this witness cosigned: the checkpoint does not extend it (history rewritten), or the proof is wrong; refusing to cosign"
    )]
    BadProof {
        /// The log.
        origin: String,
        /// The size the proof starts from.
        old: u64,
        /// The checkpoint's size.
        size: u64,
    },
    /// A log's key rotation cannot be followed with the evidence given.
    #[error(
        "cannot follow the runner key rotation of `{origin}`: {detail}; the witness keeps the old key and cosigns nothing under the new one"
    )]
    Rotation {
        /// The log.
        origin: String,
        /// What is missing or wrong.
        detail: String,
    },
    /// The witness's state does not read back.
    #[error(
        "witness state {path} is damaged ({detail}); keep it for investigation and do not cosign for this log until it is resolved"
    )]
    State {
        /// The state file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// A cosignature does not verify, or none was given.
    #[error("{0}")]
    Cosignature(String),
    /// A witnessed checkpoint file could not be read, or is larger than any note.
    #[error(transparent)]
    Read(#[from] crate::fsio::ReadError),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> WitnessError + '_ {
    move |source| WitnessError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Signed-note key names: non-empty, no Unicode spaces, no `+`.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || c == '+')
}

/// A witness as a verifier knows it: its name and Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessKey {
    name: String,
    key: PublicKey,
}

impl WitnessKey {
    /// A witness key; refuses a name that a note signature line cannot carry.
    pub fn new(name: &str, key: PublicKey) -> Result<Self, WitnessError> {
        if !valid_name(name) {
            return Err(WitnessError::Name(name.to_string()));
        }
        Ok(Self {
            name: name.to_string(),
            key,
        })
    }

    /// The witness's name (its note key name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The witness's public key.
    pub fn key(&self) -> &PublicKey {
        &self.key
    }

    /// The cosignature/v1 key ID: the first 4 bytes of SHA-256(name ‖ "\n" ‖ 0x04 ‖ public key).
    pub fn key_id(&self) -> [u8; 4] {
        let mut h = Sha256::new();
        h.update(self.name.as_bytes());
        h.update(b"\n");
        h.update([COSIGNATURE_V1_TYPE]);
        h.update(self.key.as_bytes());
        let d = h.finalize();
        [d[0], d[1], d[2], d[3]]
    }

    /// The vkey text: `name+<key ID hex>+base64(0x04 ‖ key)`.
    pub fn vkey(&self) -> String {
        let mut typed = vec![COSIGNATURE_V1_TYPE];
        typed.extend_from_slice(self.key.as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(self.key_id()),
            STANDARD.encode(typed)
        )
    }

    /// Parses a vkey (surrounding whitespace ignored). Only type 0x04
    /// (cosignature/v1 Ed25519) is accepted, and the key ID must match.
    pub fn from_vkey(text: &str) -> Result<Self, WitnessError> {
        let text = text.trim();
        let bad = |detail: &str| WitnessError::VKey {
            text: text.chars().take(200).collect(),
            detail: detail.to_string(),
        };
        // Base64 may hold `+`, so the key is everything after the second `+`.
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("it must be three `+`-separated parts"));
        };
        if !valid_name(name) {
            return Err(bad("the name must be non-empty, without spaces"));
        }
        let id: [u8; 4] = (id_hex.len() == 8)
            .then(|| hex::decode(id_hex).ok())
            .flatten()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("the key ID must be 8 hex digits"))?;
        let typed = canonical_base64(key64)
            .ok_or_else(|| bad("the key is not canonical standard base64"))?;
        match typed.split_first() {
            Some((&COSIGNATURE_V1_TYPE, raw)) => {
                let key = PublicKey::from_bytes(raw)
                    .ok_or_else(|| bad("the key is not a 32-byte Ed25519 public key"))?;
                let witness = Self::new(name, key)?;
                if witness.key_id() != id {
                    return Err(bad(&format!(
                        "its key ID {id_hex} is not the one its name and key give ({})",
                        hex::encode(witness.key_id())
                    )));
                }
                Ok(witness)
            }
            Some((other, _)) => Err(bad(&format!(
                "signature type {other:#04x} is not 0x04 (a cosignature/v1 Ed25519 witness key)"
            ))),
            None => Err(bad("the key is empty")),
        }
    }
}

/// A witness's signing identity: its name and private key.
#[derive(Debug)]
pub struct Witness {
    public: WitnessKey,
    secret: SecretKey,
}

impl Witness {
    /// A witness named `name` signing with `secret`.
    pub fn new(name: &str, secret: SecretKey) -> Result<Self, WitnessError> {
        Ok(Self {
            public: WitnessKey::new(name, secret.public())?,
            secret,
        })
    }

    /// Loads a witness from its state directory: `witness.key` and the name in `witness.vkey`
    /// (whose key must be `witness.key`'s).
    pub fn load(dir: &Path) -> Result<Self, WitnessError> {
        let key_path = dir.join(WITNESS_KEY_FILE);
        let secret = SecretKey::load(&key_path).map_err(|e| WitnessError::State {
            path: key_path.display().to_string(),
            detail: e.to_string(),
        })?;
        let vkey_path = dir.join(WITNESS_VKEY_FILE);
        let vkey = read_bounded_text(&vkey_path, MAX_NOTE_BYTES, "witness vkey").map_err(|e| {
            WitnessError::State {
                path: vkey_path.display().to_string(),
                detail: e.problem(),
            }
        })?;
        let public = WitnessKey::from_vkey(&vkey)?;
        if public.key != secret.public() {
            return Err(WitnessError::State {
                path: vkey_path.display().to_string(),
                detail: format!("its key is not the public key of {WITNESS_KEY_FILE}"),
            });
        }
        Ok(Self { public, secret })
    }

    /// The witness's public identity.
    pub fn public(&self) -> &WitnessKey {
        &self.public
    }

    /// The cosignature/v1 signature line over a checkpoint `body`, at `timestamp` (seconds).
    pub fn cosign(&self, body: &str, timestamp: u64) -> String {
        let message = cosigned_message(timestamp, body);
        let mut blob = self.public.key_id().to_vec();
        blob.extend_from_slice(&timestamp.to_be_bytes());
        blob.extend_from_slice(&self.secret.sign(message.as_bytes()).to_bytes());
        format!(
            "{SIGNATURE_PREFIX}{} {}\n",
            self.public.name,
            STANDARD.encode(blob)
        )
    }
}

/// The message a cosignature/v1 signs: header line, time line, then the checkpoint body.
pub fn cosigned_message(timestamp: u64, body: &str) -> String {
    format!("{COSIGNATURE_V1_HEADER}\ntime {timestamp}\n{body}")
}

/// Verifies `witness`'s cosignature on a checkpoint note. Lines by other keys
/// (another name, or another key ID) are ignored; every line with the
/// witness's name and key ID must verify (strictly). Returns the newest
/// timestamp of a valid cosignature, or `None` when the witness did not cosign.
pub fn verify_cosignature(note: &str, witness: &WitnessKey) -> Result<Option<u64>, String> {
    let (body, lines) = note_parts(note)?;
    let id = witness.key_id();
    let mut newest = None;
    for line in lines {
        let (name, blob) = signature_line(line)?;
        if name != witness.name || blob.len() < 4 || blob[..4] != id {
            continue;
        }
        let (timestamp, signature) = split_cosignature(&blob).ok_or_else(|| {
            format!(
                "witness `{}`'s cosignature is {} bytes, not {COSIGNATURE_LEN} (key ID, timestamp, Ed25519 signature)",
                witness.name,
                blob.len()
            )
        })?;
        let message = cosigned_message(timestamp, &body);
        if !witness.key.verify_strict(message.as_bytes(), signature) {
            return Err(format!(
                "witness `{}`'s cosignature (time {timestamp}) does not verify: the checkpoint or the cosignature was altered, or it was made by another key",
                witness.name
            ));
        }
        newest = newest.max(Some(timestamp));
    }
    Ok(newest)
}

/// The tree size a checkpoint note claims (its body's second line), unverified;
/// for messages only.
pub fn note_size(note: &str) -> Option<u64> {
    note.split('\n').nth(1)?.parse().ok()
}

/// A note signature line's key name and decoded blob; a malformed line is an error.
fn signature_line(line: &str) -> Result<(&str, Vec<u8>), String> {
    let rest = line
        .strip_prefix(SIGNATURE_PREFIX)
        .ok_or_else(|| format!("`{line}` is not a signature line"))?;
    let (name, sig) = rest
        .rsplit_once(' ')
        .ok_or_else(|| format!("`{line}` is not a signature line"))?;
    let blob = canonical_base64(sig)
        .ok_or_else(|| format!("signature `{sig}` is not canonical standard base64"))?;
    Ok((name, blob))
}

/// Splits a cosignature/v1 blob into its timestamp and signature; `None` when
/// its length is wrong or the timestamp exceeds 2^63 − 1.
fn split_cosignature(blob: &[u8]) -> Option<(u64, &[u8])> {
    if blob.len() != COSIGNATURE_LEN {
        return None;
    }
    let timestamp = u64::from_be_bytes(blob[4..12].try_into().ok()?);
    (timestamp <= i64::MAX as u64).then_some((timestamp, &blob[12..]))
}

/// An add-checkpoint request (c2sp.org/tlog-witness).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The size of the checkpoint the witness cosigned last (0: none).
    pub old: u64,
    /// The RFC 9162 consistency proof from `old` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The checkpoint note, with the log's signature.
    pub note: String,
}

impl AddCheckpoint {
    /// The request body: `old N`, one base64 line per proof hash, a blank line, the note.
    pub fn to_text(&self) -> String {
        let mut text = format!("old {}\n", self.old);
        for hash in &self.proof {
            text.push_str(&STANDARD.encode(hash));
            text.push('\n');
        }
        text.push('\n');
        text.push_str(&self.note);
        text
    }

    /// Parses a request body strictly.
    pub fn parse(text: &str) -> Result<Self, WitnessError> {
        let bad = |detail: String| WitnessError::Request(detail);
        let (head, note) = text
            .split_once("\n\n")
            .ok_or_else(|| bad("no blank line before the checkpoint".into()))?;
        let mut lines = head.split('\n');
        let old_line = lines.next().unwrap_or_default();
        let old_text = old_line
            .strip_prefix("old ")
            .ok_or_else(|| bad(format!("the first line `{old_line}` is not `old <size>`")))?;
        let old = old_text
            .parse::<u64>()
            .ok()
            .filter(|n| n.to_string() == old_text)
            .ok_or_else(|| {
                bad(format!(
                    "old size `{old_text}` is not a decimal number without leading zeros"
                ))
            })?;
        let mut proof = Vec::new();
        for line in lines {
            if proof.len() == MAX_PROOF_LINES {
                return Err(bad(format!(
                    "more than {MAX_PROOF_LINES} consistency proof lines"
                )));
            }
            let hash: Hash = canonical_base64(line)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    bad(format!(
                        "proof line `{line}` is not a canonical base64 SHA-256 hash"
                    ))
                })?;
            proof.push(hash);
        }
        if old == 0 && !proof.is_empty() {
            return Err(bad("a request from old size 0 carries no proof".into()));
        }
        Ok(Self {
            old,
            proof,
            note: note.to_string(),
        })
    }
}

/// The log a witness follows: its origin line and the key that signs its checkpoints.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// The origin line, e.g. `edge-runner/log/0f1e…`.
    pub origin: String,
    /// The runner key that signs the log's checkpoints.
    pub key: PublicKey,
}

/// A witness's state directory: its key, and the newest checkpoint it cosigned per log.
#[derive(Debug)]
pub struct WitnessState {
    dir: PathBuf,
}

impl WitnessState {
    /// The state in `dir` (created, with `logs/`, if missing).
    pub fn open(dir: &Path) -> Result<Self, WitnessError> {
        let logs = dir.join(WITNESS_LOGS_DIR);
        fs::create_dir_all(&logs).map_err(io_error(&logs))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// Holds the state lock until the returned file is dropped: checks and
    /// updates of the state happen under it (tlog-witness).
    fn lock(&self) -> Result<File, WitnessError> {
        let lock_path = self.dir.join(WITNESS_LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        lock.lock().map_err(io_error(&lock_path))?;
        Ok(lock)
    }

    /// The state file of the log named `origin`: `logs/<hex SHA-256 of the origin>`.
    pub fn state_path(&self, origin: &str) -> PathBuf {
        self.dir
            .join(WITNESS_LOGS_DIR)
            .join(hex::encode(Sha256::digest(origin.as_bytes())))
    }

    /// The newest checkpoint this witness cosigned for `log` (the note as stored:
    /// the log's signature and this witness's cosignature), verified under the log key.
    pub fn latest(&self, log: &LogConfig) -> Result<Option<(Checkpoint, String)>, WitnessError> {
        let path = self.state_path(&log.origin);
        let damaged = |detail: String| WitnessError::State {
            path: path.display().to_string(),
            detail,
        };
        let note = match read_bounded_text(&path, MAX_NOTE_BYTES, "witness state") {
            Ok(note) => note,
            Err(crate::fsio::ReadError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(None);
            }
            Err(e) => return Err(damaged(e.problem())),
        };
        let cp = Checkpoint::verify(&note, &log.key).map_err(|e| {
            damaged(format!(
                "it does not verify under log key {} ({e}); was the log's key changed? A witness never switches a log's key",
                log.key.id().short()
            ))
        })?;
        if cp.origin != log.origin {
            return Err(damaged(format!(
                "it is for `{}`, not `{}`",
                cp.origin, log.origin
            )));
        }
        Ok(Some((cp, note)))
    }

    /// Answers an add-checkpoint request: checks, in this order, the origin,
    /// the log's signature, then (holding the state lock) that the checkpoint
    /// does not shrink the log, that `old` is not above the checkpoint's size,
    /// that `old` is the size this witness cosigned last, and that the checkpoint extends it (same root at the same size,
    /// or a verified consistency proof); then stores the new state atomically
    /// and returns the cosignature line.
    pub fn add_checkpoint(
        &self,
        witness: &Witness,
        log: &LogConfig,
        request: &AddCheckpoint,
        now: Timestamp,
    ) -> Result<String, WitnessError> {
        let origin = request.note.split('\n').next().unwrap_or_default();
        if origin != log.origin {
            return Err(WitnessError::UnknownOrigin {
                origin: origin.chars().take(200).collect(),
                configured: log.origin.clone(),
            });
        }
        let cp = Checkpoint::verify(&request.note, &log.key).map_err(|detail| {
            WitnessError::NotSignedByLog {
                origin: log.origin.clone(),
                key_id: log.key.id().short(),
                detail,
            }
        })?;
        // Check and update under one lock: two requests checked against the same
        // state and stored in turn would roll the state back (tlog-witness).
        let lock = self.lock()?;
        let stored = self.latest(log)?;
        let (stored_size, stored_root) = stored
            .as_ref()
            .map_or((0, None), |(s, _)| (s.size, Some(s.root)));
        if cp.size < stored_size {
            return Err(WitnessError::RolledBack {
                origin: log.origin.clone(),
                size: cp.size,
                stored: stored_size,
            });
        }
        if request.old > cp.size {
            return Err(WitnessError::Request(format!(
                "old size {} is larger than the checkpoint's size {}",
                request.old, cp.size
            )));
        }
        if request.old != stored_size {
            return Err(WitnessError::OldSizeMismatch {
                origin: log.origin.clone(),
                old: request.old,
                stored: stored_size,
            });
        }
        if let Some(stored_root) = stored_root {
            if cp.size == stored_size {
                if cp.root != stored_root {
                    return Err(WitnessError::Fork {
                        origin: log.origin.clone(),
                        size: cp.size,
                        root: STANDARD.encode(cp.root),
                        stored_root: STANDARD.encode(stored_root),
                    });
                }
                if !request.proof.is_empty() {
                    return Err(WitnessError::Request(
                        "a request for the size already cosigned carries no proof".into(),
                    ));
                }
            } else if !verify_consistency(
                stored_size,
                cp.size,
                &stored_root,
                &cp.root,
                &request.proof,
            ) {
                return Err(WitnessError::BadProof {
                    origin: log.origin.clone(),
                    old: stored_size,
                    size: cp.size,
                });
            }
        }
        let line = witness.cosign(&cp.body(), now.0);
        let path = self.state_path(&log.origin);
        let kept = without_signatures_by(&request.note, &witness.public.name)
            .map_err(WitnessError::Request)?;
        let state = format!("{kept}{line}");
        write_atomically(&path, state.as_bytes()).map_err(io_error(&path))?;
        if let Some(parent) = path.parent() {
            File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(io_error(parent))?;
        }
        drop(lock);
        Ok(line)
    }
}

impl WitnessState {
    /// Follows a runner key rotation of the log `old` names
    /// (`docs/evidence-format.md` §10.6): a witness never takes a new key on
    /// someone's word, only with evidence that the old key handed the log
    /// over. `bundle` (the whole log, or a range from the witness's last
    /// checkpoint on) must verify under `new_key`, extend the checkpoint this
    /// witness cosigned last (signed by the old key), hold a `key-rotated`
    /// handover from the old key to `new_key` after it, and carry a newest
    /// checkpoint signed by `new_key` that covers the handover. That checkpoint
    /// is cosigned and becomes the witness's state for the log, so later
    /// requests are answered under `new_key` with the usual consistency checks.
    /// Returns the cosignature line.
    pub fn follow_rotation(
        &self,
        witness: &Witness,
        old: &LogConfig,
        new_key: &PublicKey,
        bundle: &super::bundle::Bundle,
        now: Timestamp,
    ) -> Result<String, WitnessError> {
        let refuse = |detail: String| WitnessError::Rotation {
            origin: old.origin.clone(),
            detail,
        };
        if new_key == &old.key {
            return Err(refuse(
                "the new key is the key this witness already follows".into(),
            ));
        }
        if bundle.runner_key != *new_key {
            return Err(refuse(format!(
                "the bundle's runner key is {}, not the new key {}",
                bundle.runner_key.id().short(),
                new_key.id().short()
            )));
        }
        let lock = self.lock()?;
        let Some((stored, stored_note)) = self.latest(old)? else {
            return Err(refuse(
                "this witness has cosigned nothing for the log, so there is no state to carry over; follow the log under the new key from the start".into(),
            ));
        };
        let verified = if bundle.range_start == 0 {
            super::verify_log(&bundle.log, new_key)
        } else {
            super::verify_range_with_progress(&bundle.log, new_key, &mut |_, _| {})
        };
        let summary = verified
            .map_err(|f| refuse(format!("the bundle does not verify under the new key: {f}")))?;
        if super::origin(&summary.log_id) != old.origin {
            return Err(refuse(format!(
                "the bundle holds log `{}`",
                super::origin(&summary.log_id)
            )));
        }
        super::check_against_checkpoint(&summary, &stored_note, &old.key).map_err(|f| {
            refuse(format!(
                "the bundle does not extend the checkpoint of {} records this witness cosigned: {f}",
                stored.size
            ))
        })?;
        let handover = summary
            .keys
            .windows(2)
            .find(|pair| pair[0].1 == old.key && pair[1].1 == *new_key)
            .map(|pair| pair[1].0)
            .ok_or_else(|| {
                refuse(format!(
                    "the bundle holds no `key-rotated` record handing the log over from key {} to key {}",
                    old.key.id().short(),
                    new_key.id().short()
                ))
            })?;
        if stored.size > handover {
            return Err(refuse(format!(
                "the checkpoint this witness cosigned ({} records) is past the handover at record {handover}",
                stored.size
            )));
        }
        let note = bundle.checkpoint.as_deref().ok_or_else(|| {
            refuse("the bundle carries no checkpoint signed by the new key".into())
        })?;
        let cp = super::check_against_checkpoint(&summary, note, new_key)
            .map_err(|f| refuse(format!("the bundle's checkpoint: {f}")))?;
        if cp.size <= handover {
            return Err(refuse(format!(
                "the bundle's checkpoint covers {} records, not the handover at record {handover}",
                cp.size
            )));
        }
        Checkpoint::verify(note, new_key).map_err(|e| {
            refuse(format!(
                "the bundle's checkpoint is not signed by the new key: {e}"
            ))
        })?;
        let line = witness.cosign(&cp.body(), now.0);
        let path = self.state_path(&old.origin);
        let kept =
            without_signatures_by(note, &witness.public.name).map_err(WitnessError::Request)?;
        write_atomically(&path, format!("{kept}{line}").as_bytes()).map_err(io_error(&path))?;
        if let Some(parent) = path.parent() {
            File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(io_error(parent))?;
        }
        drop(lock);
        Ok(line)
    }
}

/// `note` without signature lines bearing the key name `name` (so a stored or
/// witnessed note holds one cosignature per witness), ready for a new line.
fn without_signatures_by(note: &str, name: &str) -> Result<String, String> {
    let (body, lines) = note_parts(note)?;
    let mut out = format!("{body}\n");
    let own = format!("{SIGNATURE_PREFIX}{name} ");
    for line in lines.into_iter().filter(|l| !l.starts_with(&own)) {
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}

/// The add-checkpoint request for the checkpoint `note` of a verified log,
/// from the size `old` a witness cosigned last (0: never). The log must
/// extend the note, and `old` must not exceed its size.
pub fn request_for(
    summary: &Summary,
    note: &str,
    key: &PublicKey,
    old: u64,
) -> Result<AddCheckpoint, String> {
    let cp = check_against_checkpoint(summary, note, key).map_err(|f| f.to_string())?;
    if old > cp.size {
        return Err(format!(
            "the witness's size {old} is larger than the checkpoint's {}: the witness has seen more of this log than the log now holds (truncation); do not ask it to cosign, investigate",
            cp.size
        ));
    }
    let leaves: Vec<Hash> = if old == 0 || old == cp.size {
        Vec::new()
    } else {
        summary
            .records
            .iter()
            .take(usize::try_from(cp.size).map_err(|_| "log too large".to_string())?)
            .map(|r| leaf_hash(&r.bytes))
            .collect()
    };
    request_from_leaves(cp.size, note, old, &leaves)
}

/// The add-checkpoint request for `note` (a checkpoint of `size` records,
/// already checked against the log) given the leaf hashes of at least its
/// first `size` records, for a caller that keeps them (the fleet collector
/// between passes) rather than the records.
pub fn request_from_leaves(
    size: u64,
    note: &str,
    old: u64,
    leaves: &[Hash],
) -> Result<AddCheckpoint, String> {
    if old > size {
        return Err(format!(
            "the witness's size {old} is larger than the checkpoint's {size}: the witness has seen more of this log than the log now holds (truncation); do not ask it to cosign, investigate"
        ));
    }
    let proof = if old == 0 || old == size {
        Vec::new()
    } else {
        let size = usize::try_from(size).map_err(|_| "log too large".to_string())?;
        let old = usize::try_from(old).map_err(|_| "size too large".to_string())?;
        let leaves = leaves
            .get(..size)
            .ok_or("fewer leaves than the checkpoint covers")?;
        consistency_proof(leaves, old).ok_or("no consistency proof for these sizes")?
    };
    Ok(AddCheckpoint {
        old,
        proof,
        note: note.to_string(),
    })
}

/// Keeps `witness`'s cosignature from a witness `response` (signature lines)
/// on the checkpoint `note`: returns the note with that witness's verified
/// cosignature appended (earlier lines by the same name dropped) and its
/// timestamp. Lines by other keys are ignored; none verifying is an error.
pub fn attach(note: &str, response: &str, witness: &WitnessKey) -> Result<(String, u64), String> {
    let (body, _) = note_parts(note)?;
    let id = witness.key_id();
    let mut kept = None;
    for line in response.lines().filter(|l| !l.is_empty()) {
        let (name, blob) = signature_line(line)?;
        if name != witness.name || blob.len() < 4 || blob[..4] != id {
            continue;
        }
        let candidate = format!("{body}\n{line}\n");
        if let Some(t) = verify_cosignature(&candidate, witness)? {
            kept = Some((line, t));
        }
    }
    let Some((line, timestamp)) = kept else {
        return Err(format!(
            "the response holds no cosignature by witness `{}` (key ID {}); check that it answered this checkpoint and that its vkey is the one given",
            witness.name,
            hex::encode(id)
        ));
    };
    let mut out = without_signatures_by(note, &witness.name)?;
    out.push_str(line);
    out.push('\n');
    Ok((out, timestamp))
}

/// Keeps `cosigned`, a checkpoint note carrying `witness`'s cosignature, in
/// `evidence_dir`'s `witnessed/` directory, once it is shown that the log
/// (`summary`, verified under `key`) extends the checkpoint, the runner
/// signed it and the witness's cosignature verifies. A note for an older
/// checkpoint than the one kept is refused. Returns the file, the
/// checkpoint's size and the cosignature's time.
pub fn keep_cosigned(
    evidence_dir: &Path,
    summary: &Summary,
    key: &PublicKey,
    witness: &WitnessKey,
    cosigned: &str,
) -> Result<(PathBuf, u64, u64), String> {
    let time = verify_cosignature(cosigned, witness)?.ok_or_else(|| {
        format!(
            "the checkpoint carries no cosignature of witness `{}`",
            witness.name
        )
    })?;
    let Checkpoint { size, .. } = check_against_checkpoint(summary, cosigned, key)
        .map_err(|f| format!("the cosigned checkpoint: {f}"))?;
    let dir = evidence_dir.join(WITNESSED_DIR);
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join(witnessed_file_name(witness));
    if let Ok(old) = read_bounded_text(&path, MAX_NOTE_BYTES, "witnessed checkpoint")
        && let Ok(Some(_)) = verify_cosignature(&old, witness)
        && let Ok(previous) = check_against_checkpoint(summary, &old, key)
        && previous.size > size
    {
        return Err(format!(
            "{} already holds a checkpoint of {} records cosigned by `{}`; refusing to replace it with an older one of {size}",
            path.display(),
            previous.size,
            witness.name
        ));
    }
    write_atomically(&path, cosigned.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((path, size, time))
}

/// The file name of `witness`'s witnessed checkpoint in `DIR/witnessed/`.
pub fn witnessed_file_name(witness: &WitnessKey) -> String {
    format!("{}{WITNESSED_SUFFIX}", hex::encode(witness.key_id()))
}

/// Reads every witnessed checkpoint note in `DIR/witnessed/`, in file name
/// order (none when the directory does not exist). Nothing is trusted here:
/// the verifier checks each note and each cosignature.
pub fn read_witnessed(evidence_dir: &Path) -> Result<Vec<(PathBuf, String)>, WitnessError> {
    let dir = evidence_dir.join(WITNESSED_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(&dir)(e)),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(io_error(&dir))?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(WITNESSED_SUFFIX) && !n.starts_with('.'))
        {
            paths.push(path);
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let note = read_bounded_text(&path, MAX_NOTE_BYTES, "witnessed checkpoint")?;
            Ok((path, note))
        })
        .collect()
}

/// What an auditor asks of witnesses: whom they trust, and how many must have cosigned.
#[derive(Debug, Clone, Default)]
pub struct WitnessPolicy {
    witnesses: Vec<WitnessKey>,
    min: usize,
}

impl WitnessPolicy {
    /// No witness required (the default).
    pub fn none() -> Self {
        Self::default()
    }

    /// Trusts `witnesses` and requires `min` of them (default: all); refuses
    /// a count of 0 or above the number given, and the same witness twice.
    pub fn new(witnesses: Vec<WitnessKey>, min: Option<usize>) -> Result<Self, String> {
        let min = min.unwrap_or(witnesses.len());
        if witnesses.is_empty() {
            return Err("a minimum number of witnesses needs at least one witness key".into());
        }
        if min == 0 || min > witnesses.len() {
            return Err(format!(
                "the minimum number of witnesses must be between 1 and the {} given, not {min}",
                witnesses.len()
            ));
        }
        for (i, w) in witnesses.iter().enumerate() {
            if let Some(dup) = witnesses[..i]
                .iter()
                .find(|o| o.name == w.name || o.key == w.key)
            {
                return Err(format!(
                    "witness `{}` and witness `{}` are the same witness (same name or key); each counts once, so give it once",
                    dup.name, w.name
                ));
            }
        }
        Ok(Self { witnesses, min })
    }

    /// The trusted witnesses, in the order given.
    pub fn witnesses(&self) -> &[WitnessKey] {
        &self.witnesses
    }

    /// How many must have cosigned a checkpoint the log extends (0: no witness asked for).
    pub fn min(&self) -> usize {
        self.min
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::checkpoint::origin;
    use crate::evidence::merkle::root;

    fn witness(name: &str) -> Witness {
        Witness::new(name, SecretKey::generate().unwrap()).unwrap()
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&[i as u8])).collect()
    }

    fn note(key: &SecretKey, leaves: &[Hash]) -> String {
        Checkpoint {
            origin: origin(&[7; 16]),
            size: leaves.len() as u64,
            root: root(leaves),
        }
        .sign(key)
    }

    #[test]
    fn cosignature_line_is_c2sp_cosignature_v1() {
        let w = witness("witness.example/w1");
        let body = "example.com/log\n3\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        let line = w.cosign(body, 1_679_315_147);
        let (name, b64) = line
            .strip_prefix("\u{2014} ")
            .unwrap()
            .trim_end()
            .split_once(' ')
            .unwrap();
        assert_eq!(name, "witness.example/w1");
        let blob = STANDARD.decode(b64).unwrap();
        assert_eq!(blob.len(), 76);
        assert_eq!(blob[..4], w.public().key_id());
        assert_eq!(blob[4..12], 1_679_315_147u64.to_be_bytes());
        let message = format!("cosignature/v1\ntime 1679315147\n{body}");
        assert!(
            w.public()
                .key()
                .verify_strict(message.as_bytes(), &blob[12..])
        );
        let mut h = Sha256::new();
        h.update(b"witness.example/w1\n\x04");
        h.update(w.public().key().as_bytes());
        assert_eq!(w.public().key_id(), h.finalize()[..4]);
    }

    #[test]
    fn state_under_another_log_key_is_damaged_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let state = WitnessState::open(dir.path()).unwrap();
        let runner = SecretKey::generate().unwrap();
        let log = LogConfig {
            origin: origin(&[7; 16]),
            key: runner.public(),
        };
        let w = witness("witness.example/w1");
        let l = leaves(4);
        let first = AddCheckpoint {
            old: 0,
            proof: vec![],
            note: note(&runner, &l),
        };
        state
            .add_checkpoint(&w, &log, &first, Timestamp(1))
            .unwrap();
        // Someone configures the same origin with another key: the witness stops.
        let other = SecretKey::generate().unwrap();
        let switched = LogConfig {
            origin: log.origin.clone(),
            key: other.public(),
        };
        let request = AddCheckpoint {
            old: 4,
            proof: vec![],
            note: note(&other, &l),
        };
        let err = state
            .add_checkpoint(&w, &switched, &request, Timestamp(2))
            .unwrap_err();
        assert!(matches!(err, WitnessError::State { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("was the log's key changed? A witness never switches a log's key"),
            "{err}"
        );
        assert_eq!(state.latest(&log).unwrap().unwrap().0.size, 4);
    }

    /// The worked example of `docs/evidence-format.md` §10.1: the RFC 8032 test 1
    /// key as witness `witness.example/w1`, cosigning C2SP's example checkpoint.
    #[test]
    fn spec_example_cosignature() {
        let seed: [u8; 32] =
            hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .unwrap()
                .try_into()
                .unwrap();
        let key = SecretKey::from_signing_key(ed25519_dalek::SigningKey::from_bytes(&seed));
        let w = Witness::new("witness.example/w1", key).unwrap();
        let body =
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        assert_eq!(w.public().vkey(), SPEC_VKEY);
        assert_eq!(w.cosign(body, 1_679_315_147), SPEC_LINE);
    }

    const SPEC_VKEY: &str =
        "witness.example/w1+eb762cc2+BNdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea";
    const SPEC_LINE: &str = "\u{2014} witness.example/w1 63YswgAAAABkGFDL+TPmh4BYuAjsYRoqMJCWb/gWJaeRF/kmm5tlCr9sJ57DLErur7K0yDXc2ArN+TIuotuB/HbuL3AJsp3bv/aNCQ==\n";

    #[test]
    fn vkey_round_trips_and_a_wrong_key_id_or_type_is_refused() {
        let w = witness("witness.example/w1");
        let vkey = w.public().vkey();
        assert_eq!(WitnessKey::from_vkey(&vkey).unwrap(), *w.public());
        let (name, rest) = vkey.split_once('+').unwrap();
        let wrong_id = format!("{name}+00000000{}", &rest[8..]);
        let err = WitnessKey::from_vkey(&wrong_id).unwrap_err().to_string();
        assert!(err.contains("its key ID 00000000 is not the one"), "{err}");
        let mut typed = vec![0x01];
        typed.extend_from_slice(w.public().key().as_bytes());
        let plain = format!("{name}+{}+{}", &rest[..8], STANDARD.encode(typed));
        let err = WitnessKey::from_vkey(&plain).unwrap_err().to_string();
        assert!(err.contains("signature type 0x01 is not 0x04"), "{err}");
        assert!(matches!(
            WitnessKey::new("has space", w.public().key),
            Err(WitnessError::Name(_))
        ));
    }

    #[test]
    fn request_text_round_trips_and_is_parsed_strictly() {
        let req = AddCheckpoint {
            old: 5,
            proof: vec![[1; 32], [2; 32]],
            note: "o\n8\nAAAA\n\n\u{2014} o AAAA\n".into(),
        };
        let text = req.to_text();
        assert!(text.starts_with("old 5\nAQEB"));
        assert_eq!(AddCheckpoint::parse(&text).unwrap(), req);
        for (bad, want) in [
            ("old 05\n\nx", "leading zeros"),
            ("new 5\n\nx", "is not `old <size>`"),
            (
                "old 0\nAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n\nx",
                "carries no proof",
            ),
            ("old 5\nAQ==\n\nx", "is not a canonical base64 SHA-256"),
            ("old 5\n", "no blank line"),
        ] {
            let err = AddCheckpoint::parse(bad).unwrap_err().to_string();
            assert!(err.contains(want), "{bad:?}: {err}");
        }
        let many = format!(
            "old 1\n{}\nx",
            "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n".repeat(64)
        );
        let err = AddCheckpoint::parse(&many).unwrap_err().to_string();
        assert!(err.contains("more than 63"), "{err}");
    }

    #[test]
    fn witness_cosigns_growth_and_refuses_a_fork_a_rollback_and_a_bad_proof() {
        let dir = tempfile::tempdir().unwrap();
        let state = WitnessState::open(dir.path()).unwrap();
        let runner = SecretKey::generate().unwrap();
        let log = LogConfig {
            origin: origin(&[7; 16]),
            key: runner.public(),
        };
        let w = witness("witness.example/w1");
        let l = leaves(20);
        let now = Timestamp(1_800_000_000);
        let first = AddCheckpoint {
            old: 0,
            proof: vec![],
            note: note(&runner, &l[..8]),
        };
        let line = state.add_checkpoint(&w, &log, &first, now).unwrap();
        let stored = format!("{}{line}", first.note);
        assert_eq!(
            verify_cosignature(&stored, w.public()).unwrap(),
            Some(now.0)
        );

        let grow = AddCheckpoint {
            old: 8,
            proof: consistency_proof(&l[..13], 8).unwrap(),
            note: note(&runner, &l[..13]),
        };
        state.add_checkpoint(&w, &log, &grow, now).unwrap();
        assert_eq!(state.latest(&log).unwrap().unwrap().0.size, 13);

        // The witness's answer to a request it must refuse.
        let refused = |old, proof, note| {
            state
                .add_checkpoint(&w, &log, &AddCheckpoint { old, proof, note }, now)
                .unwrap_err()
        };
        let mut forked = l.clone();
        forked[3] = leaf_hash(b"rewritten");
        let err = refused(13, vec![], note(&runner, &forked[..13]));
        assert!(matches!(err, WitnessError::Fork { size: 13, .. }), "{err}");
        let err = refused(
            13,
            consistency_proof(&forked[..20], 13).unwrap(),
            note(&runner, &forked[..20]),
        );
        assert!(
            matches!(
                err,
                WitnessError::BadProof {
                    old: 13,
                    size: 20,
                    ..
                }
            ),
            "{err}"
        );
        let err = refused(0, vec![], note(&runner, &l[..10]));
        assert!(
            matches!(
                err,
                WitnessError::RolledBack {
                    size: 10,
                    stored: 13,
                    ..
                }
            ),
            "{err}"
        );
        let err = refused(
            8,
            consistency_proof(&l[..20], 8).unwrap(),
            note(&runner, &l[..20]),
        );
        assert!(
            matches!(
                err,
                WitnessError::OldSizeMismatch {
                    old: 8,
                    stored: 13,
                    ..
                }
            ),
            "{err}"
        );
        // The refusals left the state as it was.
        assert_eq!(state.latest(&log).unwrap().unwrap().0.size, 13);
    }
}
