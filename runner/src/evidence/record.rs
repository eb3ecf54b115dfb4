//! One evidence record: its payload, its COSE_Sign1 envelope, its hash.

use ciborium::Value;
use coset::{CoseSign1, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable};
use sha2::{Digest, Sha256};

use crate::cbor::{self, MapReader};
use crate::keys::{KeyId, PublicKey, SecretKey};

/// Version of the record payload format.
pub const FORMAT_VERSION: u64 = 1;

/// External AAD of every evidence signature: separates them from capsule signatures.
pub const EVIDENCE_CONTEXT: &[u8] = b"edge-runner/evidence/v1";

/// COSE content type of a record payload.
pub const CONTENT_TYPE: &str = "application/vnd.edge-runner.evidence+cbor";

/// The `prev` of record 0: 32 zero bytes.
pub const GENESIS_PREV: [u8; 32] = [0; 32];

/// Largest encoded record accepted.
pub const MAX_RECORD_BYTES: usize = 4 * 1024 * 1024;

// Payload map keys (integers keep records small and the encoding unambiguous).
const K_VERSION: i64 = 1;
const K_LOG_ID: i64 = 2;
const K_SEQ: i64 = 3;
const K_PREV: i64 = 4;
const K_TIME: i64 = 5;
const K_EVENT: i64 = 6;
const K_BODY: i64 = 7;

/// The content of a record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Identifies the log; the same in every record of one log.
    pub log_id: [u8; 16],
    /// Position in the log, from 0, without gaps.
    pub seq: u64,
    /// SHA-256 of the previous record's encoding ([`GENESIS_PREV`] for record 0).
    pub prev: [u8; 32],
    /// Milliseconds since the Unix epoch (UTC) when the record was made.
    pub time_ms: u64,
    /// Event type, e.g. `capsule-verified`.
    pub event: String,
    /// Event-specific fields (a CBOR map with text keys).
    pub body: Value,
}

/// A record with its exact signed encoding and that encoding's hash.
#[derive(Debug, Clone)]
pub struct SignedRecord {
    /// The content.
    pub record: Record,
    /// The tagged COSE_Sign1 bytes, as stored in the log.
    pub bytes: Vec<u8>,
    /// SHA-256 of `bytes`; the next record's `prev`.
    pub hash: [u8; 32],
}

fn int(k: i64) -> Value {
    Value::Integer(k.into())
}

impl Record {
    fn payload(&self) -> Result<Vec<u8>, String> {
        let map = Value::Map(vec![
            (int(K_VERSION), Value::Integer(FORMAT_VERSION.into())),
            (int(K_LOG_ID), Value::Bytes(self.log_id.to_vec())),
            (int(K_SEQ), Value::Integer(self.seq.into())),
            (int(K_PREV), Value::Bytes(self.prev.to_vec())),
            (int(K_TIME), Value::Integer(self.time_ms.into())),
            (int(K_EVENT), Value::Text(self.event.clone())),
            (int(K_BODY), self.body.clone()),
        ]);
        cbor::encode(&map).map_err(|e| e.to_string())
    }
}

/// Signs `record` with the runner key.
pub fn sign_record(record: Record, key: &SecretKey) -> Result<SignedRecord, String> {
    let payload = record.payload()?;
    let protected = HeaderBuilder::new()
        .algorithm(crate::cose::WRITTEN_ALGORITHM)
        .content_type(CONTENT_TYPE.to_string())
        .key_id(key.id().0.to_vec())
        .build();
    let sign1 = CoseSign1Builder::new()
        .protected(protected)
        .payload(payload)
        .create_signature(EVIDENCE_CONTEXT, |tbs| key.sign(tbs).to_bytes().to_vec())
        .build();
    let raw = sign1.to_tagged_vec().map_err(|e| e.to_string())?;
    let bytes = cbor::encode(&cbor::decode_prefix(&raw).map_err(|e| e.to_string())?.0)
        .map_err(|e| e.to_string())?;
    let hash = Sha256::digest(&bytes).into();
    Ok(SignedRecord {
        record,
        bytes,
        hash,
    })
}

/// Decodes one record's bytes and checks its signature under `key`, strictly.
///
/// Checks, in order: size, canonical CBOR, tag 18 COSE_Sign1 structure,
/// protected header (alg EdDSA -8 or Ed25519 -19, content type, kid = `key`'s id),
/// empty unprotected header, `verify_strict` signature, canonical payload
/// with exactly the seven fields and their types, format version.
pub fn decode_record(bytes: &[u8], key: &PublicKey) -> Result<Record, RecordFault> {
    decode_inner(bytes, key)
}

/// Why one record was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordFault {
    /// Signed (per its `kid`) by a key other than the expected runner key.
    WrongKey(String),
    /// Anything else, described.
    Invalid(String),
}

impl From<String> for RecordFault {
    fn from(s: String) -> Self {
        RecordFault::Invalid(s)
    }
}

impl From<&str> for RecordFault {
    fn from(s: &str) -> Self {
        RecordFault::Invalid(s.to_string())
    }
}

fn decode_inner(bytes: &[u8], key: &PublicKey) -> Result<Record, RecordFault> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(format!(
            "record is {} bytes, over the {MAX_RECORD_BYTES}-byte limit",
            bytes.len()
        )
        .into());
    }
    cbor::decode_canonical(bytes).map_err(|e| format!("record encoding: {e}"))?;
    let sign1 = CoseSign1::from_tagged_slice(bytes)
        .map_err(|e| format!("not a tagged COSE_Sign1 (tag 18): {e}"))?;
    if let Some(raw) = &sign1.protected.original_data {
        cbor::decode_canonical(raw).map_err(|e| format!("protected header: {e}"))?;
    }
    let header = &sign1.protected.header;
    match &header.alg {
        Some(coset::RegisteredLabelWithPrivate::Assigned(a))
            if crate::cose::is_ed25519_algorithm(*a as i64) => {}
        other => {
            return Err(format!(
                "algorithm {other:?} is not Ed25519; only EdDSA (-8) and Ed25519 (-19) are accepted"
            )
            .into());
        }
    }
    match &header.content_type {
        Some(coset::ContentType::Text(t)) if t == CONTENT_TYPE => {}
        other => return Err(format!("content type {other:?} is not \"{CONTENT_TYPE}\"").into()),
    }
    if header.key_id.as_slice() != key.id().0 {
        let kid = <[u8; 32]>::try_from(header.key_id.as_slice())
            .map(|k| KeyId(k).short())
            .unwrap_or_else(|_| hex::encode(&header.key_id));
        return Err(RecordFault::WrongKey(kid));
    }
    if !sign1.unprotected.is_empty() {
        return Err("unprotected header must be empty".into());
    }
    // Exactly alg (1), content type (3) and kid (4): nothing a verifier might skip over.
    if !header.crit.is_empty()
        || !header.iv.is_empty()
        || !header.partial_iv.is_empty()
        || !header.counter_signatures.is_empty()
        || !header.rest.is_empty()
    {
        return Err(
            "protected header may hold only labels 1 (alg), 3 (content type) and 4 (kid)".into(),
        );
    }
    sign1
        .verify_signature(EVIDENCE_CONTEXT, |sig, tbs| {
            if key.verify_strict(tbs, sig) {
                Ok(())
            } else {
                Err(())
            }
        })
        .map_err(|()| {
            "signature does not verify under the runner key (record altered?)".to_string()
        })?;
    let payload = sign1
        .payload
        .as_deref()
        .ok_or("COSE_Sign1 has no payload")?;
    Ok(parse_payload(payload)?)
}

/// The record in `bytes` without checking its signature or header: only for
/// finding which key to check it under (record 0's `log-opened` names it).
pub(super) fn peek_record(bytes: &[u8]) -> Option<Record> {
    if bytes.len() > MAX_RECORD_BYTES {
        return None;
    }
    let sign1 = CoseSign1::from_tagged_slice(bytes).ok()?;
    let key_id = KeyId(sign1.protected.header.key_id.as_slice().try_into().ok()?);
    let record = parse_payload(sign1.payload.as_deref()?).ok()?;
    // Only a record whose kid names the key its body names is worth trying.
    match super::events::Event::decode(&record.event, &record.body) {
        Ok(super::events::Event::LogOpened(opened))
            if PublicKey::from_bytes(&opened.runner_key).is_some_and(|k| k.id() == key_id) =>
        {
            Some(record)
        }
        _ => None,
    }
}

fn parse_payload(payload: &[u8]) -> Result<Record, String> {
    let value = cbor::decode_canonical(payload).map_err(|e| format!("payload: {e}"))?;
    let map = MapReader::new("payload", &value)?;
    if let Value::Map(entries) = &value
        && entries.len() != 7
    {
        return Err(format!(
            "payload has {} fields, expected exactly 7 (keys 1-7)",
            entries.len()
        ));
    }
    let field = |k: i64| {
        map.get_int(k)
            .ok_or(format!("payload field {k} is missing"))
    };
    let version = cbor::as_u64(field(K_VERSION)?)
        .ok_or("payload field 1 (version) is not an unsigned integer")?;
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version} is not supported (expected {FORMAT_VERSION})"
        ));
    }
    let bytes_field = |k: i64, len: usize, name: &str| -> Result<Vec<u8>, String> {
        match field(k)? {
            Value::Bytes(b) if b.len() == len => Ok(b.clone()),
            _ => Err(format!(
                "payload field {k} ({name}) must be a {len}-byte string"
            )),
        }
    };
    let log_id = bytes_field(K_LOG_ID, 16, "log id")?
        .try_into()
        .map_err(|_| "log id")?;
    let prev = bytes_field(K_PREV, 32, "prev")?
        .try_into()
        .map_err(|_| "prev")?;
    let seq =
        cbor::as_u64(field(K_SEQ)?).ok_or("payload field 3 (seq) is not an unsigned integer")?;
    let time_ms =
        cbor::as_u64(field(K_TIME)?).ok_or("payload field 5 (time) is not an unsigned integer")?;
    let event = match field(K_EVENT)? {
        Value::Text(t) if !t.is_empty() => t.clone(),
        _ => return Err("payload field 6 (event) must be a non-empty text string".into()),
    };
    let body = field(K_BODY)?.clone();
    match &body {
        Value::Map(entries) if entries.iter().all(|(k, _)| matches!(k, Value::Text(_))) => {}
        Value::Map(_) => return Err("payload field 7 (body) must have text keys only".into()),
        _ => return Err("payload field 7 (body) must be a map".into()),
    }
    Ok(Record {
        log_id,
        seq,
        prev,
        time_ms,
        event,
        body,
    })
}
