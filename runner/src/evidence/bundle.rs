//! Evidence bundles: everything an auditor outside the enclave needs, in one
//! file. This module owns the file format only; [`crate::audit`] gives the
//! verdict over a bundle.
//!
//! A bundle is one deterministic-CBOR map (text keys): `format` (1), `log` (the
//! evidence log's bytes), `runner-key` (the runner's 32-byte public key),
//! `checkpoint` (the newest checkpoint note, when there is one), `witnessed`
//! (the checkpoints witnesses cosigned, when there are any), `trust-roots`
//! (the trust store's signed versions 1…N, in order), `exported-at` (seconds)
//! and, for a bundle holding a range of the log, `range-start` (the sequence
//! number of its first record, a checkpoint record).
//! `docs/evidence-format.md` §7 is normative.

use std::path::Path;

use ciborium::Value;

use super::log::CHECKPOINT_FILE;
use super::witness::{WitnessError, read_witnessed};
use crate::cbor::{self, MapReader};
use crate::fsio::{self, ReadError};
use crate::keys::PublicKey;
use crate::timestamp::Timestamp;
use crate::trust::store::root_file_name;
use crate::trust::{Chain, MAX_TRUST_ROOT_BYTES, TrustError};

/// Bundle format version.
pub const BUNDLE_FORMAT: u64 = 1;

/// Largest bundle read.
pub const MAX_BUNDLE_BYTES: u64 = 4 << 30;

/// Largest checkpoint note put in a bundle (a few hundred bytes in practice).
pub const MAX_CHECKPOINT_BYTES: u64 = 64 * 1024;

/// Why a bundle could not be made or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// A file that goes into the bundle could not be read, or is over its limit.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The witnessed checkpoints could not be read.
    #[error(transparent)]
    Witnessed(#[from] WitnessError),
    /// The trust store to include does not check out.
    #[error(transparent)]
    TrustStore(#[from] TrustError),
    /// The bytes are not a well-formed bundle.
    #[error("{0}")]
    Malformed(String),
    /// The bundle could not be encoded.
    #[error("could not encode the bundle: {0}")]
    Encode(String),
}

impl From<String> for BundleError {
    fn from(detail: String) -> Self {
        BundleError::Malformed(detail)
    }
}

/// An evidence bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The evidence log, byte for byte.
    pub log: Vec<u8>,
    /// The runner's public key.
    pub runner_key: PublicKey,
    /// The newest checkpoint note, if the log has one.
    pub checkpoint: Option<String>,
    /// Checkpoint notes with witness cosignatures (`DIR/witnessed/*.checkpoint`, in file name order).
    pub witnessed: Vec<String>,
    /// The trust store's signed versions, oldest first.
    pub trust_roots: Vec<Vec<u8>>,
    /// The governance chain: every signed governance version installed beside
    /// the trust store (`governance/N.governance.cose`), oldest first, so an
    /// auditor can re-check every authorization offline.
    pub governance: Vec<Vec<u8>>,
    /// When the bundle was made.
    pub exported_at: Timestamp,
    /// 0 when `log` is the whole log; otherwise `log` holds the records from
    /// this one (a checkpoint record with its resume state) to the end.
    pub range_start: u64,
}

impl Bundle {
    /// Collects a bundle from an evidence directory and, optionally, the trust store in force.
    pub fn export(
        evidence_dir: &Path,
        runner_key: PublicKey,
        trust_dir: Option<&Path>,
    ) -> Result<Self, BundleError> {
        // Bounded reads: a log, checkpoint or trust root swapped for a pipe or
        // `/dev/zero` stops at its limit instead of filling memory.
        let log = super::log::read_log_dir(evidence_dir, MAX_BUNDLE_BYTES)?;
        let checkpoint = fsio::read_bounded_if_present(
            &evidence_dir.join(CHECKPOINT_FILE),
            MAX_CHECKPOINT_BYTES,
            "checkpoint",
        )?
        .map(|bytes| {
            String::from_utf8(bytes).map_err(|_| {
                BundleError::Malformed(format!(
                    "{} is not UTF-8 text, so it is not a checkpoint note",
                    evidence_dir.join(CHECKPOINT_FILE).display()
                ))
            })
        })
        .transpose()?;
        let witnessed = read_witnessed(evidence_dir)?
            .into_iter()
            .map(|(_, note)| note)
            .collect();
        let mut trust_roots = Vec::new();
        let mut governance = Vec::new();
        if let Some(dir) = trust_dir {
            governance = read_governance_chain(&dir.join("governance"))?;
            // Reading the chain checks it, so a bundle never carries a broken store.
            let chain = Chain::read_dir(dir)?;
            for link in chain.links() {
                trust_roots.push(fsio::read_bounded(
                    &dir.join(root_file_name(link.version)),
                    MAX_TRUST_ROOT_BYTES as u64,
                    "trust root",
                )?);
            }
        }
        Ok(Self {
            log,
            runner_key,
            checkpoint,
            witnessed,
            trust_roots,
            governance,
            exported_at: Timestamp::now(),
            range_start: 0,
        })
    }

    /// This bundle cut down to a range that an auditor who verified the
    /// checkpoint `since` can tie to what they verified
    /// (`docs/evidence-format.md` §7.1): the records from the newest
    /// checkpoint record *before* the end of `since` to the end of the log.
    /// The whole log is verified first, and `since` against it.
    pub fn into_range_since(mut self, since: &str) -> Result<Self, BundleError> {
        if self.range_start != 0 {
            return Err(BundleError::Malformed(
                "this bundle already holds a range of the log".into(),
            ));
        }
        let summary = super::verify_log(&self.log, &self.runner_key)
            .map_err(|f| BundleError::Malformed(format!("the log does not verify: {f}")))?;
        let cp =
            super::check_against_checkpoint(&summary, since, &self.runner_key).map_err(|f| {
                BundleError::Malformed(format!("the earlier checkpoint (--since): {f}"))
            })?;
        let mut offset = 0;
        let mut start = None;
        for (r, event) in summary.records.iter().zip(&summary.events) {
            if r.record.seq >= cp.size {
                break;
            }
            if let super::Event::Checkpoint(c) = event
                && c.state.is_some()
            {
                start = Some((r.record.seq, offset));
            }
            offset += r.bytes.len();
        }
        let Some((first, offset)) = start else {
            return Err(BundleError::Malformed(format!(
                "the log has no checkpoint record before record {} (the end of the earlier checkpoint), so a range cannot begin after record 0; export the whole log",
                cp.size
            )));
        };
        self.log.drain(..offset);
        self.range_start = first;
        Ok(self)
    }

    /// The deterministic CBOR encoding.
    pub fn to_cbor(&self) -> Result<Vec<u8>, BundleError> {
        let mut fields = vec![
            ("format", Value::Integer(BUNDLE_FORMAT.into())),
            ("log", Value::Bytes(self.log.clone())),
            (
                "runner-key",
                Value::Bytes(self.runner_key.as_bytes().to_vec()),
            ),
            (
                "trust-roots",
                Value::Array(
                    self.trust_roots
                        .iter()
                        .map(|r| Value::Bytes(r.clone()))
                        .collect(),
                ),
            ),
            ("exported-at", Value::Integer(self.exported_at.0.into())),
        ];
        if let Some(cp) = &self.checkpoint {
            fields.push(("checkpoint", Value::Text(cp.clone())));
        }
        if self.range_start != 0 {
            fields.push(("range-start", Value::Integer(self.range_start.into())));
        }
        if !self.governance.is_empty() {
            let versions = self.governance.iter().cloned().map(Value::Bytes).collect();
            fields.push(("governance", Value::Array(versions)));
        }
        if !self.witnessed.is_empty() {
            let notes = self.witnessed.iter().cloned().map(Value::Text).collect();
            fields.push(("witnessed", Value::Array(notes)));
        }
        cbor::encode(&cbor::text_map(fields)).map_err(|e| BundleError::Encode(e.to_string()))
    }

    /// Decodes a bundle strictly (canonical CBOR, known fields only).
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, BundleError> {
        let value = cbor::decode_canonical(bytes).map_err(|e| format!("not a bundle: {e}"))?;
        let map = MapReader::new("bundle", &value)?;
        map.only(&[
            "format",
            "log",
            "runner-key",
            "checkpoint",
            "witnessed",
            "trust-roots",
            "exported-at",
            "range-start",
            "governance",
        ])?;
        let format = map.uint("format")?;
        if format != BUNDLE_FORMAT {
            return Err(BundleError::Malformed(format!(
                "bundle format {format} is not supported (this verifier reads {BUNDLE_FORMAT})"
            )));
        }
        let runner_key = PublicKey::from_bytes(map.bytes("runner-key")?)
            .ok_or_else(|| "`runner-key` is not an Ed25519 public key".to_string())?;
        let trust_roots = match map.get("trust-roots") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::Bytes(b) => Ok(b.clone()),
                    _ => Err(BundleError::Malformed(
                        "`trust-roots` must hold byte strings".into(),
                    )),
                })
                .collect::<Result<_, _>>()?,
            _ => {
                return Err(BundleError::Malformed(
                    "`trust-roots` must be an array".into(),
                ));
            }
        };
        let governance = match map.get("governance") {
            None => Vec::new(),
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .map(|v| match v {
                    Value::Bytes(b) => Ok(b.clone()),
                    _ => Err(BundleError::Malformed(
                        "`governance` must hold byte strings (signed governance versions)".into(),
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(BundleError::Malformed(
                    "`governance` must be a non-empty array (absent when no governance is installed)"
                        .into(),
                ));
            }
        };
        let checkpoint = map
            .get("checkpoint")
            .map(|_| map.text("checkpoint").map(str::to_string))
            .transpose()?;
        let witnessed = match map.get("witnessed") {
            None => Vec::new(),
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .map(|v| match v {
                    Value::Text(t) => Ok(t.clone()),
                    _ => Err(BundleError::Malformed(
                        "`witnessed` must hold text strings (checkpoint notes)".into(),
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(BundleError::Malformed(
                    "`witnessed` must be a non-empty array (absent when there is no witnessed checkpoint)"
                        .into(),
                ));
            }
        };
        let range_start = match map.get("range-start") {
            None => 0,
            Some(_) => match map.uint("range-start")? {
                0 => {
                    return Err(BundleError::Malformed(
                        "`range-start` is 0; a bundle of the whole log has no `range-start`".into(),
                    ));
                }
                n => n,
            },
        };
        Ok(Self {
            range_start,
            log: map.bytes("log")?.to_vec(),
            runner_key,
            checkpoint,
            witnessed,
            trust_roots,
            governance,
            exported_at: Timestamp(map.uint("exported-at")?),
        })
    }
}

/// Largest signed governance version read into a bundle.
pub const MAX_GOVERNANCE_BYTES: u64 = 16 << 20;

/// The signed governance versions `N.governance.cose` in `dir`, in version
/// order (none when the directory does not exist).
fn read_governance_chain(dir: &Path) -> Result<Vec<Vec<u8>>, BundleError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(BundleError::Malformed(format!(
                "reading {}: {e}",
                dir.display()
            )));
        }
    };
    let mut versions: Vec<(u64, std::path::PathBuf)> = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| BundleError::Malformed(format!("reading {}: {e}", dir.display())))?
            .path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if let Some(n) = name
            .strip_suffix(".governance.cose")
            .and_then(|n| n.parse::<u64>().ok())
        {
            versions.push((n, path));
        }
    }
    versions.sort();
    versions
        .into_iter()
        .map(|(_, path)| {
            fsio::read_bounded(&path, MAX_GOVERNANCE_BYTES, "governance bundle")
                .map_err(BundleError::from)
        })
        .collect()
}

/// True when `bytes` look like a bundle (a CBOR map) rather than a bare log (tagged COSE_Sign1).
pub fn looks_like_bundle(bytes: &[u8]) -> bool {
    bytes.first().is_some_and(|b| b >> 5 == 5)
}
