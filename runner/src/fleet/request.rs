//! Signed fleet job requests (docs/fleet.md §3): the COSE_Sign1 a
//! dispatcher key makes, and the site's check of it against its own trust
//! root. This module decides whether a request may be *considered*; the
//! capsule it names is still verified by [`crate::trust`] as any local job,
//! and replay (a job id already in the site's log) is the caller's check,
//! since only the log knows.
//!
//! It touches no network and no files: the bytes come from whatever carried
//! them (NATS, a file), which is exactly why nothing about them is trusted.

use ciborium::Value;
use coset::{CoseSign1, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable};

use crate::capsule::{Kind, validate_site};
use crate::cbor::{self, MapReader};
use crate::keys::{KeyId, SecretKey};
use crate::trust::{Dispatcher, RootPolicy};

/// COSE content type of a job request's payload.
pub const JOB_REQUEST_CONTENT_TYPE: &str = "application/vnd.edge-runner.job-request+cbor";

/// External AAD bound into every job request signature, so no capsule,
/// trust root or evidence signature verifies as a job request.
pub const JOB_REQUEST_CONTEXT: &[u8] = b"edge-runner/job-request/v1";

/// The payload format this runner reads and writes.
pub const JOB_REQUEST_FORMAT: u64 = 1;

/// Largest input a job request may carry (64 KiB).
pub const MAX_JOB_INPUT_BYTES: usize = 64 * 1024;

/// Largest encoded job request accepted: the input plus room for the envelope.
pub const MAX_JOB_REQUEST_BYTES: usize = MAX_JOB_INPUT_BYTES + 4096;

/// Longest job id, in bytes.
pub const MAX_JOB_ID_BYTES: usize = 64;

const FIELDS: [&str; 8] = [
    "format",
    "job",
    "site",
    "kind",
    "capsule-sha256",
    "signature-sha256",
    "input",
    "not-after-ms",
];

/// What a dispatcher asks one site to do: run one capsule, once, before a deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    /// The job id, unique per site for ever: 1-64 ASCII letters, digits, `-`, `_`, `.`.
    pub job: String,
    /// The one site that may run it.
    pub site: String,
    /// The kind of capsule it is (the capsule's signed manifest must agree).
    pub kind: Kind,
    /// SHA-256 of the capsule file (its object name in the hub store).
    pub capsule_sha256: [u8; 32],
    /// SHA-256 of a detached signature file, if the capsule needs one.
    pub signature_sha256: Option<[u8; 32]>,
    /// The capsule's input, at most [`MAX_JOB_INPUT_BYTES`].
    pub input: Vec<u8>,
    /// Milliseconds since the Unix epoch from which the site refuses the request.
    pub not_after_ms: u64,
}

/// Checks a job id: 1-64 ASCII letters, digits, `-`, `_` or `.`, so it can
/// sit in NATS message ids and log lines without escaping.
pub fn validate_job_id(job: &str) -> Result<(), String> {
    let ok = !job.is_empty()
        && job.len() <= MAX_JOB_ID_BYTES
        && job
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "job id `{}` is invalid: use 1-{MAX_JOB_ID_BYTES} ASCII letters, digits, `-`, `_` or `.`",
            job.escape_debug()
        ))
    }
}

impl JobRequest {
    fn check_fields(&self) -> Result<(), String> {
        validate_job_id(&self.job)?;
        validate_site(&self.site)?;
        if self.input.len() > MAX_JOB_INPUT_BYTES {
            return Err(format!(
                "input is {} bytes, over the {MAX_JOB_INPUT_BYTES}-byte limit of a job request; give the capsule a smaller input",
                self.input.len()
            ));
        }
        Ok(())
    }

    fn payload(&self) -> Result<Vec<u8>, String> {
        let mut fields = vec![
            ("format", Value::Integer(JOB_REQUEST_FORMAT.into())),
            ("job", Value::Text(self.job.clone())),
            ("site", Value::Text(self.site.clone())),
            ("kind", Value::Text(self.kind.to_string())),
            ("capsule-sha256", Value::Bytes(self.capsule_sha256.to_vec())),
            ("input", Value::Bytes(self.input.clone())),
            ("not-after-ms", Value::Integer(self.not_after_ms.into())),
        ];
        if let Some(d) = &self.signature_sha256 {
            fields.push(("signature-sha256", Value::Bytes(d.to_vec())));
        }
        cbor::encode(&cbor::text_map(fields)).map_err(|e| e.to_string())
    }

    /// Signs this request with a dispatcher's key: tagged COSE_Sign1,
    /// deterministic CBOR, protected `alg` EdDSA, content type and `kid`.
    pub fn sign(&self, key: &SecretKey) -> Result<Vec<u8>, String> {
        self.check_fields()?;
        let protected = HeaderBuilder::new()
            .algorithm(crate::cose::WRITTEN_ALGORITHM)
            .content_type(JOB_REQUEST_CONTENT_TYPE.to_string())
            .key_id(key.id().0.to_vec())
            .build();
        let sign1 = CoseSign1Builder::new()
            .protected(protected)
            .payload(self.payload()?)
            .create_signature(JOB_REQUEST_CONTEXT, |tbs| key.sign(tbs).to_bytes().to_vec())
            .build();
        let raw = sign1.to_tagged_vec().map_err(|e| e.to_string())?;
        let (value, _) = cbor::decode_prefix(&raw).map_err(|e| e.to_string())?;
        cbor::encode(&value).map_err(|e| e.to_string())
    }

    fn parse_payload(payload: &[u8]) -> Result<Self, String> {
        let value = cbor::decode_canonical(payload).map_err(|e| format!("payload: {e}"))?;
        let map = MapReader::new("job request", &value)?;
        map.only(&FIELDS)?;
        let format = map.uint("format")?;
        if format != JOB_REQUEST_FORMAT {
            return Err(format!(
                "format {format} is not supported; this runner reads format {JOB_REQUEST_FORMAT}"
            ));
        }
        let kind_text = map.text("kind")?;
        let kind = Kind::parse(kind_text).ok_or_else(|| {
            format!(
                "kind `{}` is not one of test, reproduce, remediate",
                kind_text.escape_debug()
            )
        })?;
        let signature_sha256 = match map.get("signature-sha256") {
            None => None,
            Some(v) => Some(cbor::bytes32(v, "job request `signature-sha256`")?),
        };
        let capsule = map
            .get("capsule-sha256")
            .ok_or("job request: `capsule-sha256` is missing")?;
        let request = Self {
            job: map.text("job")?.to_string(),
            site: map.text("site")?.to_string(),
            kind,
            capsule_sha256: cbor::bytes32(capsule, "job request `capsule-sha256`")?,
            signature_sha256,
            input: map.bytes("input")?.to_vec(),
            not_after_ms: map.uint("not-after-ms")?,
        };
        request.check_fields()?;
        Ok(request)
    }
}

/// Why a site refused a job request, in the order the checks run
/// (docs/fleet.md §3.2). Each is recorded as a `job-request-refused` event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestRefusal {
    /// Over [`MAX_JOB_REQUEST_BYTES`].
    #[error(
        "job request is {0} bytes, over the {MAX_JOB_REQUEST_BYTES}-byte limit; the input of a fleet job is at most {MAX_JOB_INPUT_BYTES} bytes"
    )]
    Oversize(usize),
    /// Not a well-formed signed job request (this includes an unsigned one).
    #[error(
        "not a signed job request ({0}); dispatch jobs with `edge-runner fleet submit`, which signs them with a dispatcher key"
    )]
    Malformed(String),
    /// Signed by a key that is no dispatcher in the trust root.
    #[error(
        "job request is signed by key {key}, which is not a dispatcher in trust root {root}; add it as a `[[dispatcher]]` in a new trust root version, or sign with a listed dispatcher key"
    )]
    UnknownDispatcher {
        /// The signing key's short id.
        key: String,
        /// The trust root, `name vN`.
        root: String,
    },
    /// The signature does not verify under the named dispatcher's key.
    #[error(
        "job request signature by dispatcher `{0}` does not verify; the request was altered after signing"
    )]
    BadSignature(String),
    /// The payload is malformed (checked only after the signature, so this is the dispatcher's doing).
    #[error("job request signed by dispatcher `{dispatcher}` is malformed: {detail}")]
    BadPayload {
        /// The dispatcher.
        dispatcher: String,
        /// What is wrong.
        detail: String,
    },
    /// Addressed to another site.
    #[error(
        "job request {job} is for site `{wanted}`, but this is site `{site}`; dispatch it to `{wanted}`'s subject"
    )]
    WrongSite {
        /// The job id.
        job: String,
        /// The site the request names.
        wanted: String,
        /// This site.
        site: String,
    },
    /// The dispatcher may not send jobs to this site.
    #[error(
        "dispatcher `{dispatcher}` may not send jobs to site `{site}` (its sites: {sites}); extend its `sites` in a new trust root version"
    )]
    SiteNotDelegated {
        /// The dispatcher.
        dispatcher: String,
        /// This site.
        site: String,
        /// Its sites, comma-separated.
        sites: String,
    },
    /// The dispatcher may not dispatch this kind.
    #[error(
        "dispatcher `{dispatcher}` may not dispatch `{kind}` capsules (its kinds: {kinds}); extend its `kinds` in a new trust root version"
    )]
    WrongKind {
        /// The dispatcher.
        dispatcher: String,
        /// The kind asked for.
        kind: Kind,
        /// Its kinds, comma-separated.
        kinds: String,
    },
    /// Past its `not-after-ms`.
    #[error(
        "job request {job} expired at {not_after_ms} ms (now {now_ms} ms since the epoch); dispatch it again with a later deadline"
    )]
    Expired {
        /// The job id.
        job: String,
        /// Its deadline.
        not_after_ms: u64,
        /// The site's clock.
        now_ms: u64,
    },
}

impl RequestRefusal {
    /// A stable, short name for the refusal, as recorded in evidence.
    pub fn code(&self) -> &'static str {
        match self {
            RequestRefusal::Oversize(_) => "oversize",
            RequestRefusal::Malformed(_) => "malformed",
            RequestRefusal::UnknownDispatcher { .. } => "unknown-dispatcher",
            RequestRefusal::BadSignature(_) => "bad-signature",
            RequestRefusal::BadPayload { .. } => "bad-payload",
            RequestRefusal::WrongSite { .. } => "wrong-site",
            RequestRefusal::SiteNotDelegated { .. } => "site-not-delegated",
            RequestRefusal::WrongKind { .. } => "wrong-kind",
            RequestRefusal::Expired { .. } => "expired",
        }
    }
}

/// A job request whose signature, dispatcher, site, kind and deadline
/// passed [`authorize`] under one trust root. Only [`authorize`] builds it;
/// the site still checks the job id against its log and verifies the capsule.
///
/// ```compile_fail
/// let _ = edge_runner::fleet::AuthorizedRequest { request: todo!(), dispatcher: todo!(), key: todo!() };
/// ```
#[derive(Debug, Clone)]
pub struct AuthorizedRequest {
    request: JobRequest,
    dispatcher: String,
    key: KeyId,
}

impl AuthorizedRequest {
    /// The request.
    pub fn request(&self) -> &JobRequest {
        &self.request
    }

    /// The dispatcher that signed it, by its trust root name.
    pub fn dispatcher(&self) -> &str {
        &self.dispatcher
    }

    /// The dispatcher's key id.
    pub fn key(&self) -> KeyId {
        self.key
    }
}

fn structure(bytes: &[u8]) -> Result<CoseSign1, String> {
    cbor::decode_canonical(bytes).map_err(|e| format!("encoding: {e}"))?;
    let sign1 = CoseSign1::from_tagged_slice(bytes)
        .map_err(|e| format!("not a tagged COSE_Sign1 (tag 18): {e}"))?;
    if let Some(raw) = &sign1.protected.original_data {
        cbor::decode_canonical(raw).map_err(|e| format!("protected header: {e}"))?;
    }
    if !sign1.unprotected.is_empty() {
        return Err("unprotected header must be empty".into());
    }
    let header = &sign1.protected.header;
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
        Some(coset::ContentType::Text(t)) if t == JOB_REQUEST_CONTENT_TYPE => {}
        other => {
            return Err(format!(
                "content type {other:?} is not \"{JOB_REQUEST_CONTENT_TYPE}\""
            ));
        }
    }
    if header.key_id.len() != 32 {
        return Err("protected `kid` must be the 32-byte SHA-256 key id".into());
    }
    if sign1.payload.is_none() {
        return Err("COSE_Sign1 has no payload".into());
    }
    if sign1.signature.is_empty() {
        return Err("the signature is empty".into());
    }
    Ok(sign1)
}

fn list<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks a job request for `site` under `root` at `now_ms`, in this order:
/// size, COSE structure, dispatcher named by `kid`, signature
/// (`verify_strict`), payload, site, the dispatcher's sites, its kinds,
/// deadline. The first failure is the refusal.
pub fn authorize(
    bytes: &[u8],
    root: &RootPolicy,
    site: &str,
    now_ms: u64,
) -> Result<AuthorizedRequest, RequestRefusal> {
    if bytes.len() > MAX_JOB_REQUEST_BYTES {
        return Err(RequestRefusal::Oversize(bytes.len()));
    }
    let sign1 = structure(bytes).map_err(RequestRefusal::Malformed)?;
    let kid = KeyId(
        <[u8; 32]>::try_from(sign1.protected.header.key_id.as_slice())
            .map_err(|_| RequestRefusal::Malformed("kid is not 32 bytes".into()))?,
    );
    let dispatcher: &Dispatcher =
        root.dispatcher_by_key(&kid)
            .ok_or_else(|| RequestRefusal::UnknownDispatcher {
                key: kid.short(),
                root: format!("{} v{}", root.name, root.version),
            })?;
    let tbs = sign1.tbs_data(JOB_REQUEST_CONTEXT);
    if !dispatcher.key.verify_strict(&tbs, &sign1.signature) {
        return Err(RequestRefusal::BadSignature(dispatcher.name.clone()));
    }
    let payload = sign1.payload.as_deref().unwrap_or_default();
    let request =
        JobRequest::parse_payload(payload).map_err(|detail| RequestRefusal::BadPayload {
            dispatcher: dispatcher.name.clone(),
            detail,
        })?;
    if request.site != site {
        return Err(RequestRefusal::WrongSite {
            job: request.job,
            wanted: request.site,
            site: site.to_string(),
        });
    }
    if !dispatcher.may_dispatch_to(site) {
        return Err(RequestRefusal::SiteNotDelegated {
            dispatcher: dispatcher.name.clone(),
            site: site.to_string(),
            sites: list(&dispatcher.sites),
        });
    }
    if !dispatcher.kinds.contains(&request.kind) {
        return Err(RequestRefusal::WrongKind {
            dispatcher: dispatcher.name.clone(),
            kind: request.kind,
            kinds: list(&dispatcher.kinds),
        });
    }
    if now_ms >= request.not_after_ms {
        return Err(RequestRefusal::Expired {
            job: request.job,
            not_after_ms: request.not_after_ms,
            now_ms,
        });
    }
    Ok(AuthorizedRequest {
        request,
        dispatcher: dispatcher.name.clone(),
        key: kid,
    })
}

/// The job id a request claims, read without any check, so a site can
/// name the message in a refusal record even when the request is refused.
/// Never use it to decide anything.
pub fn claimed_job_id(bytes: &[u8]) -> Option<String> {
    if bytes.len() > MAX_JOB_REQUEST_BYTES {
        return None;
    }
    let sign1 = CoseSign1::from_tagged_slice(bytes).ok()?;
    let value = cbor::decode_canonical(sign1.payload.as_deref()?).ok()?;
    let job = MapReader::new("job request", &value)
        .ok()?
        .text("job")
        .ok()?;
    validate_job_id(job).ok()?;
    Some(job.to_string())
}
