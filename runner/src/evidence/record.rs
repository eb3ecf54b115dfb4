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
    // coset writes the structure in order; anything its bytes do not show
    // deterministic by themselves is re-encoded.
    let bytes = if cbor::shown_deterministic(&raw) {
        raw
    } else {
        cbor::encode(&cbor::decode_prefix(&raw).map_err(|e| e.to_string())?.0)
            .map_err(|e| e.to_string())?
    };
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
    let parsed = parse_unverified(bytes);
    parsed.check_kid(key)?;
    let (record, tbs, signature) = parsed.structure()?;
    if !key.verify_strict(tbs, signature) {
        return Err(BAD_SIGNATURE.to_string().into());
    }
    Ok(record?)
}

/// The content of a record read *without checking its signature*: for
/// naming and ordering bytes (the fleet shipper labels each message with
/// the log id and sequence it claims). Never a verdict; `None` if it does
/// not even parse.
pub fn read_unverified(bytes: &[u8]) -> Option<Record> {
    parse_unverified(bytes).record().cloned()
}

/// The refusal of a record whose signature does not verify.
pub(super) const BAD_SIGNATURE: &str =
    "signature does not verify under the runner key (record altered?)";

/// A record parsed without its key: every check of §2 that needs no key,
/// each failure kept at its place in the order of checks (before the `kid`
/// check, after it but before the signature, or in the payload, after the
/// signature), so checking it under a key later gives the verdict that
/// [`decode_record`] gives.
#[derive(Debug)]
pub(super) struct Parsed {
    /// A failure found before the `kid` could be checked.
    early: Option<String>,
    /// The protected header's `kid`.
    kid: Vec<u8>,
    /// A header failure, found after the `kid` check and before the signature's.
    header: Option<String>,
    /// The COSE Sig_structure the signature covers, and the signature.
    tbs: Vec<u8>,
    signature: Vec<u8>,
    /// The payload, or what is wrong with it (checked after the signature).
    record: Result<Record, String>,
}

impl Parsed {
    /// The `kid` check: `Err(WrongKey)` naming the key that signed it, or an
    /// earlier failure.
    pub(super) fn check_kid(&self, key: &PublicKey) -> Result<(), RecordFault> {
        if let Some(e) = &self.early {
            return Err(e.clone().into());
        }
        if self.kid.as_slice() != key.id().0 {
            let kid = <[u8; 32]>::try_from(self.kid.as_slice())
                .map(|k| KeyId(k).short())
                .unwrap_or_else(|_| hex::encode(&self.kid));
            return Err(RecordFault::WrongKey(kid));
        }
        Ok(())
    }

    /// After the `kid` check: the header failure, if any, else the payload
    /// (or its failure) with what the signature covers and the signature.
    #[expect(clippy::type_complexity, reason = "a private triple, named where used")]
    pub(super) fn structure(&self) -> Result<(Result<Record, String>, &[u8], &[u8]), RecordFault> {
        if let Some(e) = &self.header {
            return Err(e.clone().into());
        }
        Ok((self.record.clone(), &self.tbs, &self.signature))
    }

    /// [`Parsed::structure`], moving the payload, what the signature covers
    /// and the signature out rather than copying them (the walk reads each
    /// record once); leaves them empty.
    #[expect(clippy::type_complexity, reason = "a private triple, named where used")]
    pub(super) fn take_structure(
        &mut self,
    ) -> Result<(Result<Record, String>, Vec<u8>, Vec<u8>), RecordFault> {
        if let Some(e) = &self.header {
            return Err(e.clone().into());
        }
        let record = std::mem::replace(&mut self.record, Err(String::new()));
        Ok((
            record,
            std::mem::take(&mut self.tbs),
            std::mem::take(&mut self.signature),
        ))
    }

    /// True when the `kid` names `key`.
    pub(super) fn kid_is(&self, key: &PublicKey) -> bool {
        self.kid.as_slice() == key.id().0
    }

    /// The payload, if it parsed (whatever else is wrong).
    pub(super) fn record(&self) -> Option<&Record> {
        self.record.as_ref().ok()
    }
}

/// Parses a record with every check that needs no key (see [`Parsed`]).
pub(super) fn parse_unverified(bytes: &[u8]) -> Parsed {
    if let Some(parsed) = parse_as_written(bytes) {
        return parsed;
    }
    let mut parsed = Parsed {
        early: None,
        kid: Vec::new(),
        header: None,
        tbs: Vec::new(),
        signature: Vec::new(),
        record: Err(String::new()),
    };
    let sign1 = match early_checks(bytes) {
        Ok(sign1) => sign1,
        Err(e) => {
            parsed.early = Some(e);
            return parsed;
        }
    };
    let header = &sign1.protected.header;
    parsed.kid = header.key_id.clone();
    if !sign1.unprotected.is_empty() {
        parsed.header = Some("unprotected header must be empty".into());
        return parsed;
    }
    // Exactly alg (1), content type (3) and kid (4): nothing a verifier might skip over.
    if !header.crit.is_empty()
        || !header.iv.is_empty()
        || !header.partial_iv.is_empty()
        || !header.counter_signatures.is_empty()
        || !header.rest.is_empty()
    {
        parsed.header = Some(
            "protected header may hold only labels 1 (alg), 3 (content type) and 4 (kid)".into(),
        );
        return parsed;
    }
    parsed.tbs = sign1.tbs_data(EVIDENCE_CONTEXT);
    parsed.signature = sign1.signature.clone();
    parsed.record = match sign1.payload.as_deref() {
        Some(payload) => parse_payload(payload),
        None => Err("COSE_Sign1 has no payload".into()),
    };
    parsed
}

/// The common case, read straight from the bytes: a record in exactly the
/// layout a runner writes — tag 18, an array of four, the protected header as
/// a byte string, an empty unprotected map (`a0`), the payload and the
/// signature as byte strings, every head in its shortest form — whose
/// protected header passes every header check. Such a record is in
/// deterministic encoding by construction and [`parse_unverified`]'s general
/// path would accept its envelope; this one does so without decoding and
/// re-encoding the payload. `None` for anything else: the general path then
/// gives the verdict and words any failure.
fn parse_as_written(bytes: &[u8]) -> Option<Parsed> {
    if bytes.len() > MAX_RECORD_BYTES {
        return None;
    }
    let rest = bytes.strip_prefix(&[0xd2, 0x84])?;
    let (protected, rest) = shortest_bstr(rest)?;
    let rest = rest.strip_prefix(&[0xa0])?;
    let (payload, rest) = shortest_bstr(rest)?;
    let (signature, rest) = shortest_bstr(rest)?;
    if !rest.is_empty() {
        return None;
    }
    let kid = header_as_written(protected)?;
    Some(Parsed {
        early: None,
        kid: kid.to_vec(),
        header: None,
        tbs: sig_structure(protected, payload),
        signature: signature.to_vec(),
        record: parse_payload(payload),
    })
}

/// The `kid` of a protected header exactly as a runner writes it —
/// `{1: alg, 3: CONTENT_TYPE, 4: kid}` with alg -8 or -19 and a 32-byte kid,
/// deterministically encoded — read from its bytes. Such a header passes
/// every check of the general path (§2: encoding, `alg`, content type, no
/// other labels). `None` for any other header: the general path judges it.
fn header_as_written(protected: &[u8]) -> Option<&[u8]> {
    const CONTENT_TYPE_LEN: u8 = CONTENT_TYPE.len() as u8;
    const _: () = assert!(CONTENT_TYPE.len() >= 24 && CONTENT_TYPE.len() <= 0xff);
    let rest = protected.strip_prefix(&[0xa3, 0x01])?;
    // -8 (EdDSA) and -19 (Ed25519) are one-byte negative integers.
    let (&alg, rest) = rest.split_first()?;
    if alg != 0x27 && alg != 0x32 {
        return None;
    }
    let rest = rest.strip_prefix(&[0x03, 0x78, CONTENT_TYPE_LEN])?;
    let rest = rest.strip_prefix(CONTENT_TYPE.as_bytes())?;
    let kid = rest.strip_prefix(&[0x04, 0x58, 0x20])?;
    (kid.len() == 32).then_some(kid)
}

/// A valid payload in exactly the layout a runner writes — a map of the
/// seven keys 1 to 7 in order, `version` 1, a 16-byte log id, a 32-byte
/// `prev`, a non-empty event name and a body map with text keys, the whole in
/// deterministic encoding as its heads show — read from its bytes: only the
/// body is decoded. It is the record [`payload_by_value`] gives.
/// `None` for anything else: the general path then gives the verdict and
/// words any failure.
fn payload_as_written(payload: &[u8]) -> Option<Record> {
    if !cbor::shown_deterministic(payload) {
        return None;
    }
    let rest = payload.strip_prefix(&[0xa7, 0x01, 0x01, 0x02, 0x50])?;
    let (log_id, rest) = rest.split_first_chunk::<16>()?;
    let (seq, rest) = head(rest.strip_prefix(&[0x03])?, 0)?;
    let rest = rest.strip_prefix(&[0x04, 0x58, 0x20])?;
    let (prev, rest) = rest.split_first_chunk::<32>()?;
    let (time_ms, rest) = head(rest.strip_prefix(&[0x05])?, 0)?;
    let (event_len, rest) = head(rest.strip_prefix(&[0x06])?, 3)?;
    let (event, rest) = rest.split_at_checked(usize::try_from(event_len).ok()?)?;
    let event = std::str::from_utf8(event).ok().filter(|e| !e.is_empty())?;
    let body_bytes = rest.strip_prefix(&[0x07])?;
    let (body, used) = cbor::decode_prefix(body_bytes).ok()?;
    let Value::Map(entries) = &body else {
        return None;
    };
    if used != body_bytes.len() || !entries.iter().all(|(k, _)| matches!(k, Value::Text(_))) {
        return None;
    }
    Some(Record {
        log_id: *log_id,
        seq,
        prev: *prev,
        time_ms,
        event: event.to_string(),
        body,
    })
}

/// The argument of a CBOR item head of major type `major`, and what follows
/// the head (the caller has checked the heads are in shortest form).
fn head(bytes: &[u8], major: u8) -> Option<(u64, &[u8])> {
    let (&first, rest) = bytes.split_first()?;
    if first >> 5 != major {
        return None;
    }
    let width = match first & 0x1f {
        n @ 0..=23 => return Some((u64::from(n), rest)),
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        _ => return None,
    };
    let (arg, rest) = rest.split_at_checked(width)?;
    Some((
        arg.iter().fold(0, |acc, &b| (acc << 8) | u64::from(b)),
        rest,
    ))
}

/// A byte string with its head in shortest form, and what follows it.
fn shortest_bstr(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&head, rest) = bytes.split_first()?;
    if head >> 5 != 2 {
        return None;
    }
    let (len, rest) = match head & 0x1f {
        n @ 0..=23 => (usize::from(n), rest),
        24 => {
            let (&n, rest) = rest.split_first()?;
            (n >= 24).then_some((usize::from(n), rest))?
        }
        25 => {
            let n = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?);
            (n > 0xff).then_some((usize::from(n), &rest[2..]))?
        }
        26 => {
            let n = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
            (n > 0xffff).then_some((usize::try_from(n).ok()?, &rest[4..]))?
        }
        _ => return None,
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// The COSE Sig_structure of a record (RFC 9052 §4.4):
/// `["Signature1", protected, EVIDENCE_CONTEXT, payload]`, deterministically encoded.
fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + protected.len() + EVIDENCE_CONTEXT.len() + payload.len());
    out.extend_from_slice(&[0x84, 0x6a]);
    out.extend_from_slice(b"Signature1");
    for part in [protected, EVIDENCE_CONTEXT, payload] {
        let len = part.len();
        match len {
            0..=23 => out.push(0x40 | len as u8),
            24..=0xff => out.extend_from_slice(&[0x58, len as u8]),
            0x100..=0xffff => {
                out.push(0x59);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(0x5a);
                out.extend_from_slice(&(len as u32).to_be_bytes());
            }
        }
        out.extend_from_slice(part);
    }
    out
}

/// The checks before the `kid` check: size, encoding, COSE structure,
/// algorithm and content type.
fn early_checks(bytes: &[u8]) -> Result<CoseSign1, String> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(format!(
            "record is {} bytes, over the {MAX_RECORD_BYTES}-byte limit",
            bytes.len()
        ));
    }
    // Records as a runner writes them took [`parse_as_written`]; this is the
    // general path, which also words every failure.
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
            ));
        }
    }
    match &header.content_type {
        Some(coset::ContentType::Text(t)) if t == CONTENT_TYPE => {}
        other => return Err(format!("content type {other:?} is not \"{CONTENT_TYPE}\"")),
    }
    Ok(sign1)
}

fn parse_payload(payload: &[u8]) -> Result<Record, String> {
    match payload_as_written(payload) {
        Some(record) => Ok(record),
        None => payload_by_value(payload),
    }
}

/// The general path of [`parse_payload`]: decodes the whole payload, then
/// checks it field by field, wording the first failure.
fn payload_by_value(payload: &[u8]) -> Result<Record, String> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

    use super::*;

    #[test]
    fn records_as_written_take_the_fast_path_and_agree_with_coset() {
        let key = SecretKey::generate().unwrap();
        // Payload lengths on each side of every head width.
        for size in [0usize, 10, 23, 24, 200, 255, 256, 65_535, 65_536, 70_000] {
            let record = Record {
                log_id: [3; 16],
                seq: 9,
                prev: [4; 32],
                time_ms: 1_800_000_000_000,
                event: "note".into(),
                body: cbor::text_map([("t", Value::Bytes(vec![1; size]))]),
            };
            let signed = sign_record(record.clone(), &key).unwrap();
            let fast =
                parse_as_written(&signed.bytes).expect("a written record has the written layout");
            let sign1 = CoseSign1::from_tagged_slice(&signed.bytes).unwrap();
            assert_eq!(
                fast.tbs,
                sign1.tbs_data(EVIDENCE_CONTEXT),
                "payload of {size}"
            );
            assert_eq!(fast.signature, sign1.signature);
            assert_eq!(fast.kid, key.public().id().0.to_vec());
            assert_eq!(fast.record.unwrap(), record);
            assert_eq!(decode_record(&signed.bytes, &key.public()).unwrap(), record);
        }
    }

    /// Record 0 of a log, a `note` with `body`.
    fn first_note(body: Value) -> Record {
        Record {
            log_id: [3; 16],
            seq: 0,
            prev: GENESIS_PREV,
            time_ms: 1,
            event: "note".into(),
            body,
        }
    }

    /// The payload and protected header of a record, as written.
    fn written_parts(record: Record, key: &SecretKey) -> (Vec<u8>, Vec<u8>) {
        let bytes = sign_record(record, key).unwrap().bytes;
        let sign1 = CoseSign1::from_tagged_slice(&bytes).unwrap();
        (
            sign1.payload.unwrap(),
            sign1.protected.original_data.unwrap(),
        )
    }

    #[test]
    fn payload_read_from_its_bytes_is_the_decoded_payload_under_every_single_byte_change() {
        // The byte-level reader either declines or gives exactly the record
        // the value-level reader gives: for written payloads, and for every
        // one-byte change of them (lengths, keys, types, version, UTF-8, order).
        let key = SecretKey::generate().unwrap();
        let bodies = [
            cbor::text_map([("a", Value::Integer(1.into()))]),
            cbor::text_map([
                ("module-sha256", Value::Bytes(vec![7; 32])),
                ("status", Value::Text("completed".into())),
                ("n", Value::Integer(u64::MAX.into())),
            ]),
            Value::Map(vec![]),
        ];
        let mut taken = 0;
        for (i, body) in bodies.into_iter().enumerate() {
            let record = Record {
                log_id: [3; 16],
                seq: [0, 23, 24, 300, 70_000, u64::MAX][i * 2],
                prev: [4; 32],
                time_ms: [1, 1_800_000_000_000, u64::MAX][i],
                event: ["x", "capsule-verified", "ü"][i].into(),
                body,
            };
            // The writer sorts the body's keys; compare what was signed.
            let (payload, _) = written_parts(record, &key);
            let decoded = payload_by_value(&payload).unwrap();
            assert_eq!(payload_as_written(&payload), Some(decoded));
            for at in 0..payload.len() {
                for change in [0x01u8, 0x02, 0x20, 0x40, 0x80, 0xff] {
                    let mut p = payload.clone();
                    p[at] ^= change;
                    if let Some(fast) = payload_as_written(&p) {
                        assert_eq!(Ok(fast), payload_by_value(&p), "byte {at} ^ {change:#x}");
                        taken += 1;
                    }
                }
            }
        }
        assert!(taken > 0, "some changed payloads are still valid payloads");
    }

    #[test]
    fn protected_header_read_from_its_bytes_passes_the_general_checks_under_every_single_byte_change()
     {
        let key = SecretKey::generate().unwrap();
        let (_, protected) = written_parts(first_note(Value::Map(vec![])), &key);
        assert_eq!(
            header_as_written(&protected),
            Some(&key.public().id().0[..])
        );
        let mut accepted = 0;
        for at in 0..protected.len() {
            for change in [0x01u8, 0x02, 0x15, 0x20, 0x40, 0x80, 0xff] {
                let mut h = protected.clone();
                h[at] ^= change;
                let Some(kid) = header_as_written(&h) else {
                    continue;
                };
                // What the general path checks of a protected header.
                let value = cbor::decode_canonical(&h).unwrap();
                let header = <coset::Header as coset::AsCborValue>::from_cbor_value(value).unwrap();
                let alg = match header.alg {
                    Some(coset::RegisteredLabelWithPrivate::Assigned(a)) => a as i64,
                    other => panic!("{other:?}"),
                };
                assert!(crate::cose::is_ed25519_algorithm(alg));
                assert_eq!(
                    header.content_type,
                    Some(coset::ContentType::Text(CONTENT_TYPE.into()))
                );
                assert!(header.crit.is_empty() && header.rest.is_empty() && header.iv.is_empty());
                assert_eq!(header.key_id, kid);
                accepted += 1;
            }
        }
        // Other kids, and alg -8 changed to -19 (0x27 ^ 0x15 = 0x32).
        assert!(accepted > 32 * 7);
    }

    #[test]
    fn other_layouts_take_the_general_path() {
        let key = SecretKey::generate().unwrap();
        let record = first_note(cbor::text_map([("t", Value::Bytes(vec![1; 30]))]));
        let bytes = sign_record(record, &key).unwrap().bytes;
        // Untagged; a widened head; a byte after the end: none is the written layout.
        assert!(parse_as_written(&bytes[1..]).is_none());
        let mut widened = bytes[..2].to_vec();
        let protected_len = bytes[2] & 0x1f;
        widened.extend_from_slice(&[0x58, protected_len]);
        widened.extend_from_slice(&bytes[3..]);
        assert!(parse_as_written(&widened).is_none());
        assert!(decode_record(&widened, &key.public()).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(parse_as_written(&longer).is_none());
        assert!(parse_as_written(&bytes).is_some());
    }
}
