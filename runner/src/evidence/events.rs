//! The typed event model: every event the runner records, one struct each.
//!
//! A record's `event` name and `body` map (`docs/evidence-format.md` §4) are
//! written and read only through these types: the session encodes them, the
//! verifier decodes and checks them, and the auditor's report reads them. A
//! renamed or missing field is therefore a decoding error that names the
//! field, never a silent default. An event name not listed here decodes as
//! [`Event::Unknown`] and stays a valid record (forward compatibility).
//!
//! Adding an event is one struct implementing [`EventBody`] and one line in
//! the `events!` list below.

use ciborium::Value;

use crate::cbor::{MapReader, as_u64, text_map};

mod fleet;
mod jobs;
mod remediation;
pub use fleet::{
    FleetJobAccepted, JobRequestRefused, MAX_REFUSAL_DETAIL_BYTES, TrustUpdateInstalled,
    TrustUpdateRefused,
};
pub use jobs::{
    CANCELLED_BY, JOB_OUTCOMES, JobAbandoned, JobAccepted, JobCancelled, JobFinished, LoadShed,
    MAX_JOB_DETAIL_BYTES, Submitter,
};
pub use remediation::{
    Applied, ApplyStarted, ApprovalChecked, AuthorizationRecorded, Notified, PostReview,
    ProposalRecorded, ProposalRefused, RolledBack, VerifyResult,
};

/// One event body: its name in the log and its CBOR form.
pub trait EventBody: Sized {
    /// The event name in the record, e.g. `capsule-verified`.
    const NAME: &'static str;
    /// The body's fields; [`crate::cbor::encode`] orders them canonically.
    fn fields(&self) -> Vec<(&'static str, Value)>;
    /// Reads a body, failing on a missing or mistyped required field.
    fn read(body: &MapReader<'_>) -> Result<Self, String>;
}

macro_rules! events {
    ($($(#[$doc:meta])* $variant:ident),* $(,)?) => {
        /// A recorded event.
        #[derive(Debug, Clone, PartialEq)]
        #[non_exhaustive]
        pub enum Event {
            $($(#[$doc])* $variant($variant),)*
            /// An event this version does not know: kept as it is, and valid.
            Unknown(UnknownEvent),
        }

        impl Event {
            /// The event name.
            pub fn name(&self) -> &str {
                match self {
                    $(Event::$variant(_) => <$variant as EventBody>::NAME,)*
                    Event::Unknown(u) => &u.name,
                }
            }

            /// The body as a CBOR map with text keys.
            pub fn body(&self) -> Value {
                match self {
                    $(Event::$variant(e) => text_map(e.fields()),)*
                    Event::Unknown(u) => u.body.clone(),
                }
            }

            /// Decodes the body of an event called `name`. A known event's body
            /// must have every required field with the right type.
            pub fn decode(name: &str, body: &Value) -> Result<Self, String> {
                $(
                    if name == <$variant as EventBody>::NAME {
                        let what = format!("`{name}` body");
                        let reader = MapReader::new(&what, body)?;
                        return <$variant as EventBody>::read(&reader).map(Event::$variant);
                    }
                )*
                Ok(Event::Unknown(UnknownEvent { name: name.to_string(), body: body.clone() }))
            }
        }

        $(impl From<$variant> for Event {
            fn from(e: $variant) -> Self {
                Event::$variant(e)
            }
        })*
    };
}

events! {
    /// Record 0 of every log.
    LogOpened,
    /// A runner process took an existing log over.
    RunnerStarted,
    /// A runner took over a log whose last write was torn, and cut it.
    Restart,
    /// The runner key changed: later records are signed by the new key.
    KeyRotated,
    /// A signed checkpoint over every record before it.
    Checkpoint,
    /// A capsule passed the trust checks.
    CapsuleVerified,
    /// A capsule was refused.
    CapsuleRefused,
    /// A verified capsule is about to run, with what it was granted.
    RunStarted,
    /// A run ended (or never started).
    RunFinished,
    /// A run whose runner stopped before it finished, recorded when the log was next opened.
    RunInterrupted,
    /// An operator pinned this runner to another trust store on purpose.
    TrustAnchorChanged,
    /// A signed governance bundle was loaded to tier or authorize remediations.
    GovernanceLoaded,
    /// A sealed remediation proposal, kept whole.
    ProposalRecorded,
    /// A proposal the runner refused to state.
    ProposalRefused,
    /// One approval as the quorum check judged it.
    ApprovalChecked,
    /// A proposal was authorized.
    AuthorizationRecorded,
    /// The runner is about to apply an authorized proposal.
    ApplyStarted,
    /// How an apply ended (or was found after a crash).
    Applied,
    /// The verify plan's result after apply.
    VerifyResult,
    /// The pre-authorized rollback after a failed verify.
    RolledBack,
    /// A notification posted to a tier's webhook.
    Notified,
    /// Approvals recorded after a break-glass apply.
    PostReview,
    /// The daemon accepted a job.
    JobAccepted,
    /// A job ran (or its capsule was refused) and ended.
    JobFinished,
    /// A job was cancelled by its client or by shutdown.
    JobCancelled,
    /// A job a stopped runner left unended, recorded by the next runner.
    JobAbandoned,
    /// A summary of requests rejected under load.
    LoadShed,
    /// A fleet job request was accepted as a local job.
    FleetJobAccepted,
    /// A fleet job request was refused.
    JobRequestRefused,
    /// A trust root or governance version from the hub was installed.
    TrustUpdateInstalled,
    /// A trust root or governance version from the hub was refused.
    TrustUpdateRefused,
}

/// `governance-loaded`: the governance version in force from this record on
/// (docs/governance.md §10). The bundle itself travels in the evidence bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GovernanceLoaded {
    /// The governance name, the same in every version.
    pub name: String,
    /// Its version.
    pub version: u64,
    /// SHA-256 of the signed payload.
    pub sha256: [u8; 32],
    /// SHA-256 of the system graph's canonical form.
    pub graph_sha256: [u8; 32],
    /// Administrators whose signatures counted.
    pub signed_by: Vec<String>,
}

impl EventBody for GovernanceLoaded {
    const NAME: &'static str = "governance-loaded";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("name", text(&self.name)),
            ("version", uint(self.version)),
            ("sha256", bytes(&self.sha256)),
            ("graph-sha256", bytes(&self.graph_sha256)),
            ("signed-by", texts(&self.signed_by)),
        ]
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        Ok(Self {
            name: b.text("name")?.to_string(),
            version: b.uint("version")?,
            sha256: digest(b, "sha256")?,
            graph_sha256: digest(b, "graph-sha256")?,
            signed_by: list(b, "signed-by", text_of)?,
        })
    }
}

/// An event this runner does not know.
#[derive(Debug, Clone, PartialEq)]
pub struct UnknownEvent {
    /// Its name.
    pub name: String,
    /// Its body, as recorded.
    pub body: Value,
}

/// `log-opened`: record 0, naming the key that signs the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOpened {
    /// The runner's Ed25519 public key.
    pub runner_key: [u8; 32],
    /// The runner's version.
    pub runner_version: String,
    /// Bytes of a torn write found (and cut) when the log was created.
    pub torn_bytes_dropped: u64,
}

impl EventBody for LogOpened {
    const NAME: &'static str = "log-opened";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("runner-key", bytes(&self.runner_key)),
            ("runner-version", text(&self.runner_version)),
            ("torn-bytes-dropped", uint(self.torn_bytes_dropped)),
        ]
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        Ok(Self {
            runner_key: digest(b, "runner-key")?,
            runner_version: b.text("runner-version")?.to_string(),
            torn_bytes_dropped: b.uint("torn-bytes-dropped")?,
        })
    }
}

/// `key-rotated`: the key that signed the log so far hands over to a new
/// key. The record is signed by the old key; `new-key-signature` is the new
/// key's signature over [`key_rotation_message`], so both keys agree on the
/// handover and on the history before it. Every later record is signed by the new key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRotated {
    /// The key that signed every record up to and including this one.
    pub old_key: [u8; 32],
    /// The key that signs every record after this one.
    pub new_key: [u8; 32],
    /// Ed25519 signature by `new_key` over [`key_rotation_message`].
    pub new_key_signature: [u8; 64],
    /// Why the key was rotated (free text, may be empty).
    pub reason: String,
}

/// Domain separation for the new key's signature in `key-rotated`.
pub const KEY_ROTATION_CONTEXT: &[u8] = b"edge-runner/key-rotation/v1";

/// What the new key signs in a `key-rotated` record at position `seq`:
/// context ‖ 0x00 ‖ log id (16) ‖ seq (8, big-endian) ‖ the record's `prev` (32)
/// ‖ old key (32) ‖ new key (32).
pub fn key_rotation_message(
    log_id: &[u8; 16],
    seq: u64,
    prev: &[u8; 32],
    old_key: &[u8; 32],
    new_key: &[u8; 32],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(KEY_ROTATION_CONTEXT.len() + 1 + 16 + 8 + 96);
    m.extend_from_slice(KEY_ROTATION_CONTEXT);
    m.push(0);
    m.extend_from_slice(log_id);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(prev);
    m.extend_from_slice(old_key);
    m.extend_from_slice(new_key);
    m
}

impl EventBody for KeyRotated {
    const NAME: &'static str = "key-rotated";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("old-key", bytes(&self.old_key)),
            ("new-key", bytes(&self.new_key)),
            ("new-key-signature", bytes(&self.new_key_signature)),
            ("reason", text(&self.reason)),
        ]
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        let signature = b.bytes("new-key-signature")?;
        Ok(Self {
            old_key: digest(b, "old-key")?,
            new_key: digest(b, "new-key")?,
            new_key_signature: signature
                .try_into()
                .map_err(|_| format!("`new-key-signature` is {} bytes, not 64", signature.len()))?,
            reason: b.text("reason")?.to_string(),
        })
    }
}

/// `runner-started`: a runner process took the log over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerStarted {
    /// The runner's version.
    pub runner_version: String,
}

impl EventBody for RunnerStarted {
    const NAME: &'static str = "runner-started";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![("runner-version", text(&self.runner_version))]
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        Ok(Self {
            runner_version: b.text("runner-version")?.to_string(),
        })
    }
}

/// `restart`: the log's torn tail was cut when a runner took it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    /// Why.
    pub reason: String,
    /// Bytes cut.
    pub torn_bytes_dropped: u64,
    /// The runner's version.
    pub runner_version: String,
}

impl EventBody for Restart {
    const NAME: &'static str = "restart";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("reason", text(&self.reason)),
            ("torn-bytes-dropped", uint(self.torn_bytes_dropped)),
            ("runner-version", text(&self.runner_version)),
        ]
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        Ok(Self {
            reason: b.text("reason")?.to_string(),
            torn_bytes_dropped: b.uint("torn-bytes-dropped")?,
            runner_version: b.text("runner-version")?.to_string(),
        })
    }
}

/// `checkpoint`: the runner's signed checkpoint over every record before it.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Records covered.
    pub size: u64,
    /// Their RFC 9162 Merkle root.
    pub root: [u8; 32],
    /// The C2SP signed note over the same.
    pub note: String,
    /// The resume state after those records (spec §6.1), so a runner can
    /// append without re-reading them; absent in logs written before it.
    /// The verifier checks it equals the state it derives.
    pub state: Option<Value>,
}

impl EventBody for Checkpoint {
    const NAME: &'static str = "checkpoint";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        let mut fields = vec![
            ("size", uint(self.size)),
            ("root", bytes(&self.root)),
            ("note", text(&self.note)),
        ];
        if let Some(state) = &self.state {
            fields.push(("state", state.clone()));
        }
        fields
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        b.only(&["size", "root", "note", "state"])?;
        let state = match b.get("state") {
            None => None,
            Some(v @ Value::Map(_)) => Some(v.clone()),
            Some(_) => return Err("`state` is not a map".into()),
        };
        Ok(Self {
            size: b.uint("size")?,
            root: digest(b, "root")?,
            note: b.text("note")?.to_string(),
            state,
        })
    }
}

/// A trust root version, as records name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustRootRef {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: u64,
    /// SHA-256 of its signed file.
    pub sha256: [u8; 32],
    /// It is a development root (`development = true`): written as
    /// `development: true`, absent otherwise.
    pub development: bool,
}

impl TrustRootRef {
    fn value(&self) -> Value {
        let mut fields = vec![
            ("name", text(&self.name)),
            ("version", uint(self.version)),
            ("sha256", bytes(&self.sha256)),
        ];
        if self.development {
            fields.push(("development", Value::Bool(true)));
        }
        text_map(fields)
    }
    fn read(v: &Value) -> Result<Self, String> {
        let b = MapReader::new("`trust-root`", v)?;
        let development = match b.get("development") {
            None => false,
            Some(Value::Bool(true)) => true,
            Some(_) => {
                return Err("`trust-root`.`development` must be `true` or absent".into());
            }
        };
        Ok(Self {
            name: b.text("name")?.to_string(),
            version: b.uint("version")?,
            sha256: digest(&b, "sha256")?,
            development,
        })
    }
}

/// A trust store's anchor as recorded: version 1's policy digest and root key ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorRef {
    /// SHA-256 of version 1's policy.
    pub sha256: [u8; 32],
    /// Version 1's root key ids, sorted.
    pub root_keys: Vec<[u8; 32]>,
}

impl AnchorRef {
    fn value(&self) -> Value {
        text_map([
            ("sha256", bytes(&self.sha256)),
            (
                "root-keys",
                Value::Array(self.root_keys.iter().map(|k| bytes(k)).collect()),
            ),
        ])
    }
    fn read(v: &Value) -> Result<Self, String> {
        let b = MapReader::new("`trust-anchor`", v)?;
        Ok(Self {
            sha256: digest(&b, "sha256")?,
            root_keys: list(&b, "root-keys", key_id)?,
        })
    }
}

fn key_id(v: &Value) -> Result<[u8; 32], String> {
    match v {
        Value::Bytes(b) => b
            .as_slice()
            .try_into()
            .map_err(|_| "a key id must be 32 bytes".to_string()),
        _ => Err("a key id must be a byte string".into()),
    }
}

/// `trust-anchor-changed`: an operator re-anchored the runner to another
/// trust store on purpose (`edge-runner trust re-anchor`); the trust root
/// version marks start again under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustAnchorChanged {
    /// The new trust root's name.
    pub name: String,
    /// The new anchor.
    pub anchor: AnchorRef,
    /// Why, as the operator gave it.
    pub reason: String,
}

impl EventBody for TrustAnchorChanged {
    const NAME: &'static str = "trust-anchor-changed";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("name", text(&self.name)),
            ("trust-anchor", self.anchor.value()),
            ("reason", text(&self.reason)),
        ]
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        Ok(Self {
            name: b.text("name")?.to_string(),
            anchor: AnchorRef::read(required(b, "trust-anchor")?)?,
            reason: b.text("reason")?.to_string(),
        })
    }
}

/// A signer that counted toward a capsule's threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerRef {
    /// Publisher name in the trust root.
    pub publisher: String,
    /// Its organisation.
    pub organisation: String,
    /// Its key id (SHA-256 of the public key).
    pub key_id: [u8; 32],
}

/// `capsule-verified`: a capsule passed every trust check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapsuleVerified {
    /// Capsule name.
    pub name: String,
    /// Its version (SemVer without build metadata).
    pub version: semver::Version,
    /// Its kind (`test`, `reproduce`, `remediate`).
    pub kind: String,
    /// SHA-256 of the module.
    pub module_sha256: [u8; 32],
    /// SHA-256 of the file as read.
    pub file_sha256: [u8; 32],
    /// The signers that counted.
    pub signers: Vec<SignerRef>,
    /// The trust root that accepted it.
    pub trust_root: TrustRootRef,
    /// The site it was accepted for.
    pub site: String,
    /// When it was checked (seconds since the epoch).
    pub checked_at: u64,
    /// `embedded` or `detached`.
    pub signature_placement: String,
    /// The manifest's audience.
    pub audience: Vec<String>,
    /// The manifest's `not-before` (seconds).
    pub not_before: u64,
    /// The manifest's `expires` (seconds).
    pub expires: u64,
    /// SHA-256 of the detached signature file, if there was one.
    pub signature_sha256: Option<[u8; 32]>,
    /// The trust store's anchor (version 1), which the runner pins; absent in
    /// records written before anchors were recorded.
    pub trust_anchor: Option<AnchorRef>,
    /// The job this record belongs to (`serve`); absent outside a job.
    pub job: Option<u64>,
}

impl EventBody for CapsuleVerified {
    const NAME: &'static str = "capsule-verified";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        let signers = self
            .signers
            .iter()
            .map(|s| {
                text_map([
                    ("publisher", text(&s.publisher)),
                    ("organisation", text(&s.organisation)),
                    ("key-id", bytes(&s.key_id)),
                ])
            })
            .collect();
        let mut fields = vec![
            ("name", text(&self.name)),
            ("version", Value::Text(self.version.to_string())),
            ("kind", text(&self.kind)),
            ("module-sha256", bytes(&self.module_sha256)),
            ("file-sha256", bytes(&self.file_sha256)),
            ("signers", Value::Array(signers)),
            ("trust-root", self.trust_root.value()),
            ("site", text(&self.site)),
            ("checked-at", uint(self.checked_at)),
            ("signature-placement", text(&self.signature_placement)),
            ("audience", texts(&self.audience)),
            ("not-before", uint(self.not_before)),
            ("expires", uint(self.expires)),
        ];
        if let Some(sig) = &self.signature_sha256 {
            fields.push(("signature-sha256", bytes(sig)));
        }
        if let Some(anchor) = &self.trust_anchor {
            fields.push(("trust-anchor", anchor.value()));
        }
        if let Some(job) = self.job {
            fields.push(("job", uint(job)));
        }
        fields
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        let version_text = b.text("version")?;
        let version = semver::Version::parse(version_text)
            .map_err(|e| format!("version `{version_text}` is not semver: {e}"))?;
        if !version.build.is_empty() {
            return Err(format!(
                "version `{version_text}` carries build metadata, which signed manifests never do"
            ));
        }
        Ok(Self {
            name: b.text("name")?.to_string(),
            version,
            kind: b.text("kind")?.to_string(),
            module_sha256: digest(b, "module-sha256")?,
            file_sha256: digest(b, "file-sha256")?,
            signers: list(b, "signers", |v| {
                let s = MapReader::new("signer", v)?;
                Ok(SignerRef {
                    publisher: s.text("publisher")?.to_string(),
                    organisation: s.text("organisation")?.to_string(),
                    key_id: digest(&s, "key-id")?,
                })
            })?,
            trust_root: TrustRootRef::read(required(b, "trust-root")?)?,
            site: b.text("site")?.to_string(),
            checked_at: b.uint("checked-at")?,
            signature_placement: b.text("signature-placement")?.to_string(),
            audience: list(b, "audience", text_of)?,
            not_before: b.uint("not-before")?,
            expires: b.uint("expires")?,
            signature_sha256: optional(b, "signature-sha256", |_| digest(b, "signature-sha256"))?,
            trust_anchor: optional(b, "trust-anchor", AnchorRef::read)?,
            job: jobs::job_of(b)?,
        })
    }
}

/// A capsule's identity, when its manifest could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapsuleId {
    /// Name.
    pub name: String,
    /// Version, as the manifest states it.
    pub version: String,
    /// Kind.
    pub kind: String,
}

/// `capsule-refused`: a capsule was refused, with the exact reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapsuleRefused {
    /// The refusal, as the runner reported it.
    pub reason: String,
    /// SHA-256 of the file as read.
    pub file_sha256: [u8; 32],
    /// Its size.
    pub file_size: u64,
    /// This site.
    pub site: String,
    /// When (seconds since the epoch).
    pub checked_at: u64,
    /// SHA-256 of the detached signature file, if there was one.
    pub signature_sha256: Option<[u8; 32]>,
    /// The trust root it was checked against, when one was usable.
    pub trust_root: Option<TrustRootRef>,
    /// Name, version and kind, when the manifest could be read.
    pub capsule: Option<CapsuleId>,
    /// The job this record belongs to (`serve`); absent outside a job.
    pub job: Option<u64>,
}

impl EventBody for CapsuleRefused {
    const NAME: &'static str = "capsule-refused";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        let mut fields = vec![
            ("reason", text(&self.reason)),
            ("file-sha256", bytes(&self.file_sha256)),
            ("file-size", uint(self.file_size)),
            ("site", text(&self.site)),
            ("checked-at", uint(self.checked_at)),
        ];
        if let Some(sig) = &self.signature_sha256 {
            fields.push(("signature-sha256", bytes(sig)));
        }
        if let Some(root) = &self.trust_root {
            fields.push(("trust-root", root.value()));
        }
        if let Some(id) = &self.capsule {
            fields.push(("name", text(&id.name)));
            fields.push(("version", text(&id.version)));
            fields.push(("kind", text(&id.kind)));
        }
        if let Some(job) = self.job {
            fields.push(("job", uint(job)));
        }
        fields
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        Ok(Self {
            reason: b.text("reason")?.to_string(),
            file_sha256: digest(b, "file-sha256")?,
            file_size: b.uint("file-size")?,
            site: b.text("site")?.to_string(),
            checked_at: b.uint("checked-at")?,
            signature_sha256: optional(b, "signature-sha256", |_| digest(b, "signature-sha256"))?,
            trust_root: optional(b, "trust-root", TrustRootRef::read)?,
            capsule: optional(b, "name", |_| {
                Ok(CapsuleId {
                    name: b.text("name")?.to_string(),
                    version: b.text("version")?.to_string(),
                    kind: b.text("kind")?.to_string(),
                })
            })?,
            job: jobs::job_of(b)?,
        })
    }
}

/// A directory granted to a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryRef {
    /// The path the guest sees.
    pub guest: String,
    /// The host directory behind it.
    pub host: String,
    /// `read-only` or `read-write`.
    pub access: String,
}

/// An egress destination granted to a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRef {
    /// The destination, as the manifest names it.
    pub destination: String,
    /// The addresses it resolved to when the grant was made.
    pub addresses: Vec<String>,
}

/// A config value granted to a run, as a salted commitment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRef {
    /// The key.
    pub key: String,
    /// SHA-256(context ‖ salt ‖ value); the opening stays in the enclave.
    pub commitment: [u8; 32],
}

/// The settings of a deterministic (`reproduce`) run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeterminismRef {
    /// The RNG seed.
    pub seed: Vec<u8>,
    /// The fixed wall clock (seconds since the epoch).
    pub wall_clock: u64,
    /// The fixed monotonic clock.
    pub monotonic_clock: u64,
    /// Whether NaNs are canonicalised.
    pub nan_canonicalization: bool,
}

/// What a run was granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRef {
    /// Memory, all linear memories together.
    pub memory_bytes: u64,
    /// Fuel.
    pub fuel: u64,
    /// Wall-clock budget in milliseconds.
    pub wall_time_ms: u64,
    /// Stdout bytes kept.
    pub stdout_bytes: u64,
    /// Stderr bytes kept.
    pub stderr_bytes: u64,
    /// Evidence items.
    pub evidence_items: u64,
    /// Evidence bytes.
    pub evidence_bytes: u64,
    /// Directories.
    pub filesystem: Vec<DirectoryRef>,
    /// Egress destinations.
    pub network: Vec<EgressRef>,
    /// Deterministic settings, or `None` for an ordinary run (recorded as `false`).
    pub deterministic: Option<DeterminismRef>,
    /// Config keys with commitments to their values.
    pub config: Vec<ConfigRef>,
}

impl GrantRef {
    fn value(&self) -> Value {
        let deterministic = match &self.deterministic {
            None => Value::Bool(false),
            Some(d) => text_map([
                ("seed", Value::Bytes(d.seed.clone())),
                ("wall-clock", uint(d.wall_clock)),
                ("monotonic-clock", uint(d.monotonic_clock)),
                ("nan-canonicalization", Value::Bool(d.nan_canonicalization)),
            ]),
        };
        text_map([
            ("memory-bytes", uint(self.memory_bytes)),
            ("fuel", uint(self.fuel)),
            ("wall-time-ms", uint(self.wall_time_ms)),
            ("stdout-bytes", uint(self.stdout_bytes)),
            ("stderr-bytes", uint(self.stderr_bytes)),
            ("evidence-items", uint(self.evidence_items)),
            ("evidence-bytes", uint(self.evidence_bytes)),
            (
                "filesystem",
                Value::Array(
                    self.filesystem
                        .iter()
                        .map(|d| {
                            text_map([
                                ("guest", text(&d.guest)),
                                ("host", text(&d.host)),
                                ("access", text(&d.access)),
                            ])
                        })
                        .collect(),
                ),
            ),
            (
                "network",
                Value::Array(
                    self.network
                        .iter()
                        .map(|n| {
                            text_map([
                                ("destination", text(&n.destination)),
                                ("addresses", texts(&n.addresses)),
                            ])
                        })
                        .collect(),
                ),
            ),
            ("deterministic", deterministic),
            (
                "config",
                Value::Array(
                    self.config
                        .iter()
                        .map(|c| {
                            text_map([("key", text(&c.key)), ("commitment", bytes(&c.commitment))])
                        })
                        .collect(),
                ),
            ),
        ])
    }

    fn read(v: &Value) -> Result<Self, String> {
        let g = MapReader::new("`grant`", v)?;
        let deterministic = match required(&g, "deterministic")? {
            Value::Bool(false) => None,
            other => {
                let d = MapReader::new("`deterministic`", other)?;
                Some(DeterminismRef {
                    seed: d.bytes("seed")?.to_vec(),
                    wall_clock: d.uint("wall-clock")?,
                    monotonic_clock: d.uint("monotonic-clock")?,
                    nan_canonicalization: boolean(&d, "nan-canonicalization")?,
                })
            }
        };
        Ok(Self {
            memory_bytes: g.uint("memory-bytes")?,
            fuel: g.uint("fuel")?,
            wall_time_ms: g.uint("wall-time-ms")?,
            stdout_bytes: g.uint("stdout-bytes")?,
            stderr_bytes: g.uint("stderr-bytes")?,
            evidence_items: g.uint("evidence-items")?,
            evidence_bytes: g.uint("evidence-bytes")?,
            filesystem: list(&g, "filesystem", |v| {
                let d = MapReader::new("directory", v)?;
                Ok(DirectoryRef {
                    guest: d.text("guest")?.to_string(),
                    host: d.text("host")?.to_string(),
                    access: d.text("access")?.to_string(),
                })
            })?,
            network: list(&g, "network", |v| {
                let n = MapReader::new("destination", v)?;
                Ok(EgressRef {
                    destination: n.text("destination")?.to_string(),
                    addresses: list(&n, "addresses", text_of)?,
                })
            })?,
            deterministic,
            config: list(&g, "config", |v| {
                let c = MapReader::new("config entry", v)?;
                Ok(ConfigRef {
                    key: c.text("key")?.to_string(),
                    commitment: digest(&c, "commitment")?,
                })
            })?,
        })
    }
}

/// A resource asked for beyond the ceiling, and what was granted instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedRef {
    /// The resource, e.g. `memory-bytes`.
    pub resource: String,
    /// What the manifest asked for.
    pub asked: u64,
    /// What was granted.
    pub granted: u64,
}

/// Access asked for and not granted, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenialRef {
    /// What was asked for.
    pub request: String,
    /// Why it was not granted.
    pub reason: String,
}

/// The site policy a run was granted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SitePolicyRef {
    /// The site.
    pub site: String,
    /// SHA-256 of the policy file, when there was one.
    pub sha256: Option<[u8; 32]>,
}

/// `run-started`: a verified capsule is about to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStarted {
    /// SHA-256 of the module; the `capsule-verified` record just before names the same.
    pub module_sha256: [u8; 32],
    /// SHA-256 of the input.
    pub input_sha256: [u8; 32],
    /// Input size.
    pub input_size: u64,
    /// What was granted.
    pub grant: GrantRef,
    /// Resource requests cut to a ceiling.
    pub refused: Vec<RefusedRef>,
    /// Access requests not granted.
    pub denied: Vec<DenialRef>,
    /// The site policy.
    pub site_policy: SitePolicyRef,
    /// The job this record belongs to (`serve`); absent outside a job.
    pub job: Option<u64>,
}

impl EventBody for RunStarted {
    const NAME: &'static str = "run-started";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        let site_policy = match &self.site_policy.sha256 {
            Some(d) => text_map([("site", text(&self.site_policy.site)), ("sha256", bytes(d))]),
            None => text_map([("site", text(&self.site_policy.site))]),
        };
        let mut fields = vec![
            ("module-sha256", bytes(&self.module_sha256)),
            ("input-sha256", bytes(&self.input_sha256)),
            ("input-size", uint(self.input_size)),
            ("grant", self.grant.value()),
            (
                "refused",
                Value::Array(
                    self.refused
                        .iter()
                        .map(|r| {
                            text_map([
                                ("resource", text(&r.resource)),
                                ("asked", uint(r.asked)),
                                ("granted", uint(r.granted)),
                            ])
                        })
                        .collect(),
                ),
            ),
            (
                "denied",
                Value::Array(
                    self.denied
                        .iter()
                        .map(|d| {
                            text_map([("request", text(&d.request)), ("reason", text(&d.reason))])
                        })
                        .collect(),
                ),
            ),
            ("site-policy", site_policy),
        ];
        if let Some(job) = self.job {
            fields.push(("job", uint(job)));
        }
        fields
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        let policy = MapReader::new("`site-policy`", required(b, "site-policy")?)?;
        Ok(Self {
            module_sha256: digest(b, "module-sha256")?,
            input_sha256: digest(b, "input-sha256")?,
            input_size: b.uint("input-size")?,
            grant: GrantRef::read(required(b, "grant")?)?,
            refused: list(b, "refused", |v| {
                let r = MapReader::new("refused request", v)?;
                Ok(RefusedRef {
                    resource: r.text("resource")?.to_string(),
                    asked: r.uint("asked")?,
                    granted: r.uint("granted")?,
                })
            })?,
            denied: list(b, "denied", |v| {
                let d = MapReader::new("denial", v)?;
                Ok(DenialRef {
                    request: d.text("request")?.to_string(),
                    reason: d.text("reason")?.to_string(),
                })
            })?,
            site_policy: SitePolicyRef {
                site: policy.text("site")?.to_string(),
                sha256: optional(&policy, "sha256", |_| digest(&policy, "sha256"))?,
            },
            job: jobs::job_of(b)?,
        })
    }
}

/// A captured output stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRef {
    /// Bytes written in all.
    pub size: u64,
    /// SHA-256 of everything written.
    pub sha256: [u8; 32],
    /// Whether more was written than kept.
    pub truncated: bool,
}

impl StreamRef {
    fn value(&self) -> Value {
        text_map([
            ("size", uint(self.size)),
            ("sha256", bytes(&self.sha256)),
            ("truncated", Value::Bool(self.truncated)),
        ])
    }
    fn read(v: &Value) -> Result<Self, String> {
        let s = MapReader::new("stream", v)?;
        Ok(Self {
            size: s.uint("size")?,
            sha256: digest(&s, "sha256")?,
            truncated: boolean(&s, "truncated")?,
        })
    }
}

/// An evidence item a capsule emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceItemRef {
    /// Its label.
    pub label: String,
    /// Its media type.
    pub media_type: String,
    /// Its size.
    pub size: u64,
    /// Its SHA-256.
    pub sha256: [u8; 32],
    /// The item itself, when small enough to keep inline.
    pub data: Option<Vec<u8>>,
}

/// A finding a capsule reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingRef {
    /// Its code.
    pub code: String,
    /// `info`, `low`, `medium`, `high` or `critical`.
    pub severity: String,
    /// Its message.
    pub message: String,
}

/// What a capsule that ran used and produced (absent when it never started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunUsage {
    /// Where the compiled code came from.
    pub code: String,
    /// Milliseconds spent making the code ready (compiling or loading, and
    /// linking); absent in records of older runners.
    pub prepare_ms: Option<u64>,
    /// Fuel consumed.
    pub fuel_used: u64,
    /// Highest total linear memory.
    pub peak_memory_bytes: u64,
    /// Host memory charged to the run's host budget (`wasi:http` values,
    /// sockets, opened files); absent in records of older runners.
    pub host_memory_bytes: Option<u64>,
    /// Wall-clock time in milliseconds.
    pub wall_time_ms: u64,
    /// Stdout.
    pub stdout: StreamRef,
    /// Stderr.
    pub stderr: StreamRef,
    /// Memory growth requests refused (bytes asked for in total, each).
    pub memory_denials: Vec<u64>,
    /// Evidence emissions refused for quota.
    pub evidence_refused: u64,
    /// Network uses refused at run time: a sample, each distinct one up to a limit.
    pub egress_denied: Vec<String>,
    /// Every network use refused at run time, counted (absent in records of older runners).
    pub egress_denied_total: Option<u64>,
    /// File operations refused (symlinks, write quota, file size): every one
    /// counted and a sample listed; absent when there were none.
    pub files_refused: Option<(u64, Vec<String>)>,
    /// Evidence items emitted.
    pub evidence: Vec<EvidenceItemRef>,
}

/// A capsule's own outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeRef {
    /// `pass`, `fail` or `error`.
    pub verdict: String,
    /// Its summary.
    pub summary: String,
    /// Its findings.
    pub findings: Vec<FindingRef>,
}

/// `run-finished`: how a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFinished {
    /// SHA-256 of the module; the open `run-started` names the same.
    pub module_sha256: [u8; 32],
    /// How it ended, e.g. `completed`, `trap`, `not-started`.
    pub status: String,
    /// What was used and produced, when the capsule started.
    pub usage: Option<RunUsage>,
    /// The capsule's outcome, when it returned one.
    pub outcome: Option<OutcomeRef>,
    /// What went wrong, when something did.
    pub error: Option<String>,
    /// The code the capsule passed to `wasi:cli/exit`, when its status is `exited`.
    pub exit_code: Option<i64>,
    /// Milliseconds spent compiling the code for this run (also when the
    /// compile was stopped at its budget: status `compile-limit`); absent
    /// when the code came from a cache.
    pub compile_ms: Option<u64>,
    /// Capsule-provided values cut to their limits, each kept as a size and a digest.
    pub truncated: Vec<TruncatedRef>,
    /// The job this record belongs to (`serve`); absent outside a job.
    pub job: Option<u64>,
}

/// A capsule-provided value that was over its limit: what was kept of it, and
/// its size and SHA-256, so the whole value can still be matched later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruncatedRef {
    /// Which value, e.g. `summary`, `findings`, `findings/3/message`.
    pub field: String,
    /// Its full size: bytes of a text, items of a list.
    pub size: u64,
    /// How much of it the record keeps, in the same unit.
    pub kept: u64,
    /// SHA-256 of a text's UTF-8 bytes, or of a list's items' canonical CBOR encodings, concatenated.
    pub sha256: [u8; 32],
}

/// `run-interrupted`: a `run-started` that no `run-finished` closed, because
/// the runner stopped mid-run; written by the next runner that opened the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInterrupted {
    /// SHA-256 of the module; the open `run-started` names the same.
    pub module_sha256: [u8; 32],
    /// Sequence number of that `run-started` record.
    pub run_started: u64,
    /// Why it is recorded.
    pub reason: String,
    /// The job this record belongs to (`serve`); absent outside a job.
    pub job: Option<u64>,
}

impl EventBody for RunInterrupted {
    const NAME: &'static str = "run-interrupted";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        let mut fields = vec![
            ("module-sha256", bytes(&self.module_sha256)),
            ("run-started", uint(self.run_started)),
            ("reason", text(&self.reason)),
        ];
        if let Some(job) = self.job {
            fields.push(("job", uint(job)));
        }
        fields
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        Ok(Self {
            module_sha256: digest(b, "module-sha256")?,
            run_started: b.uint("run-started")?,
            reason: b.text("reason")?.to_string(),
            job: jobs::job_of(b)?,
        })
    }
}

impl EventBody for RunFinished {
    const NAME: &'static str = "run-finished";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        let mut fields = vec![
            ("module-sha256", bytes(&self.module_sha256)),
            ("status", text(&self.status)),
        ];
        if let Some(u) = &self.usage {
            fields.extend([
                ("code", text(&u.code)),
                ("fuel-used", uint(u.fuel_used)),
                ("peak-memory-bytes", uint(u.peak_memory_bytes)),
                ("wall-time-ms", uint(u.wall_time_ms)),
                ("stdout", u.stdout.value()),
                ("stderr", u.stderr.value()),
                (
                    "memory-denials",
                    Value::Array(u.memory_denials.iter().map(|&b| uint(b)).collect()),
                ),
                ("evidence-refused", uint(u.evidence_refused)),
                ("egress-denied", texts(&u.egress_denied)),
                (
                    "evidence",
                    Value::Array(
                        u.evidence
                            .iter()
                            .map(|item| {
                                let mut f = vec![
                                    ("label", text(&item.label)),
                                    ("media-type", text(&item.media_type)),
                                    ("size", uint(item.size)),
                                    ("sha256", bytes(&item.sha256)),
                                ];
                                if let Some(data) = &item.data {
                                    f.push(("data", Value::Bytes(data.clone())));
                                }
                                text_map(f)
                            })
                            .collect(),
                    ),
                ),
            ]);
        }
        if let Some(o) = &self.outcome {
            fields.push(("verdict", text(&o.verdict)));
            fields.push(("summary", text(&o.summary)));
            fields.push((
                "findings",
                Value::Array(
                    o.findings
                        .iter()
                        .map(|f| {
                            text_map([
                                ("code", text(&f.code)),
                                ("severity", text(&f.severity)),
                                ("message", text(&f.message)),
                            ])
                        })
                        .collect(),
                ),
            ));
        }
        if let Some(e) = &self.error {
            fields.push(("error", text(e)));
        }
        if let Some(ms) = self.usage.as_ref().and_then(|u| u.prepare_ms) {
            fields.push(("prepare-ms", uint(ms)));
        }
        if let Some(bytes) = self.usage.as_ref().and_then(|u| u.host_memory_bytes) {
            fields.push(("host-memory-bytes", uint(bytes)));
        }
        if let Some(total) = self.usage.as_ref().and_then(|u| u.egress_denied_total) {
            fields.push(("egress-denied-total", uint(total)));
        }
        if let Some((total, listed)) = self.usage.as_ref().and_then(|u| u.files_refused.as_ref()) {
            fields.push(("files-refused-total", uint(*total)));
            fields.push(("files-refused", texts(listed)));
        }
        if let Some(code) = self.exit_code {
            fields.push(("exit-code", Value::Integer(code.into())));
        }
        if let Some(ms) = self.compile_ms {
            fields.push(("compile-ms", uint(ms)));
        }
        if !self.truncated.is_empty() {
            fields.push((
                "truncated",
                Value::Array(
                    self.truncated
                        .iter()
                        .map(|t| {
                            text_map([
                                ("field", text(&t.field)),
                                ("size", uint(t.size)),
                                ("kept", uint(t.kept)),
                                ("sha256", bytes(&t.sha256)),
                            ])
                        })
                        .collect(),
                ),
            ));
        }
        if let Some(job) = self.job {
            fields.push(("job", uint(job)));
        }
        fields
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        let usage = optional(b, "code", |_| {
            Ok(RunUsage {
                code: b.text("code")?.to_string(),
                prepare_ms: optional(b, "prepare-ms", |_| b.uint("prepare-ms"))?,
                fuel_used: b.uint("fuel-used")?,
                peak_memory_bytes: b.uint("peak-memory-bytes")?,
                host_memory_bytes: optional(b, "host-memory-bytes", |_| {
                    b.uint("host-memory-bytes")
                })?,
                wall_time_ms: b.uint("wall-time-ms")?,
                stdout: StreamRef::read(required(b, "stdout")?)?,
                stderr: StreamRef::read(required(b, "stderr")?)?,
                memory_denials: list(b, "memory-denials", |v| {
                    as_u64(v).ok_or_else(|| "`memory-denials` must hold unsigned integers".into())
                })?,
                evidence_refused: b.uint("evidence-refused")?,
                egress_denied: list(b, "egress-denied", text_of)?,
                egress_denied_total: optional(b, "egress-denied-total", |_| {
                    b.uint("egress-denied-total")
                })?,
                files_refused: optional(b, "files-refused-total", |_| {
                    Ok((
                        b.uint("files-refused-total")?,
                        list(b, "files-refused", text_of)?,
                    ))
                })?,
                evidence: list(b, "evidence", |v| {
                    let i = MapReader::new("evidence item", v)?;
                    Ok(EvidenceItemRef {
                        label: i.text("label")?.to_string(),
                        media_type: i.text("media-type")?.to_string(),
                        size: i.uint("size")?,
                        sha256: digest(&i, "sha256")?,
                        data: optional(&i, "data", |_| Ok(i.bytes("data")?.to_vec()))?,
                    })
                })?,
            })
        })?;
        let outcome = optional(b, "verdict", |_| {
            Ok(OutcomeRef {
                verdict: b.text("verdict")?.to_string(),
                summary: b.text("summary")?.to_string(),
                findings: list(b, "findings", |v| {
                    let f = MapReader::new("finding", v)?;
                    Ok(FindingRef {
                        code: f.text("code")?.to_string(),
                        severity: f.text("severity")?.to_string(),
                        message: f.text("message")?.to_string(),
                    })
                })?,
            })
        })?;
        Ok(Self {
            module_sha256: digest(b, "module-sha256")?,
            status: b.text("status")?.to_string(),
            usage,
            outcome,
            error: optional(b, "error", |_| Ok(b.text("error")?.to_string()))?,
            exit_code: optional(b, "exit-code", |v| match v {
                Value::Integer(i) => {
                    i64::try_from(*i).map_err(|_| "`exit-code` is out of range".to_string())
                }
                _ => Err("`exit-code` is not an integer".into()),
            })?,
            compile_ms: optional(b, "compile-ms", |_| b.uint("compile-ms"))?,
            truncated: match b.get("truncated") {
                None => Vec::new(),
                Some(_) => list(b, "truncated", |v| {
                    let t = MapReader::new("truncated value", v)?;
                    Ok(TruncatedRef {
                        field: t.text("field")?.to_string(),
                        size: t.uint("size")?,
                        kept: t.uint("kept")?,
                        sha256: digest(&t, "sha256")?,
                    })
                })?,
            },
            job: jobs::job_of(b)?,
        })
    }
}

fn uint(v: u64) -> Value {
    Value::Integer(v.into())
}

fn text(t: &str) -> Value {
    Value::Text(t.to_string())
}

fn bytes(b: &[u8]) -> Value {
    Value::Bytes(b.to_vec())
}

fn texts(items: &[String]) -> Value {
    Value::Array(items.iter().map(|t| text(t)).collect())
}

fn text_of(v: &Value) -> Result<String, String> {
    match v {
        Value::Text(t) => Ok(t.clone()),
        _ => Err("expected a text string".into()),
    }
}

fn required<'a>(b: &MapReader<'a>, key: &str) -> Result<&'a Value, String> {
    b.get(key).ok_or_else(|| format!("`{key}` is missing"))
}

fn optional<T>(
    b: &MapReader<'_>,
    key: &str,
    read: impl FnOnce(&Value) -> Result<T, String>,
) -> Result<Option<T>, String> {
    b.get(key).map(read).transpose()
}

fn digest(b: &MapReader<'_>, key: &str) -> Result<[u8; 32], String> {
    b.bytes(key)?
        .try_into()
        .map_err(|_| format!("`{key}` must be 32 bytes"))
}

fn boolean(b: &MapReader<'_>, key: &str) -> Result<bool, String> {
    match b.get(key) {
        Some(Value::Bool(v)) => Ok(*v),
        Some(_) => Err(format!("`{key}` is not a boolean")),
        None => Err(format!("`{key}` is missing")),
    }
}

fn list<T>(
    b: &MapReader<'_>,
    key: &str,
    item: impl Fn(&Value) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    match b.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| item(v).map_err(|e| format!("`{key}`: {e}")))
            .collect(),
        Some(_) => Err(format!("`{key}` is not an array")),
        None => Err(format!("`{key}` is missing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_event_round_trips_and_a_missing_field_is_named() {
        let event = Event::from(RunnerStarted {
            runner_version: "0.1.0".into(),
        });
        assert_eq!(event.name(), "runner-started");
        assert_eq!(
            Event::decode("runner-started", &event.body()).unwrap(),
            event
        );
        let err = Event::decode("runner-started", &text_map([("x", uint(1))])).unwrap_err();
        assert_eq!(err, "`runner-started` body: `runner-version` is missing");
    }

    #[test]
    fn an_unknown_event_stays_as_it_was() {
        let body = text_map([("anything", uint(7))]);
        let event = Event::decode("future-event", &body).unwrap();
        assert_eq!(event.name(), "future-event");
        assert_eq!(event.body(), body);
    }
}
