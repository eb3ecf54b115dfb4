//! Remediation: what a `remediate` capsule proposes, as the runner states it.
//!
//! A capsule hands the runner a *request* (a unified diff for a file it may
//! read, or an exact HTTP request it may send); the runner, never the capsule,
//! turns it into a [`Proposal`]: it reads the pre-image itself, computes the
//! post-image in memory, refuses a rollback that does not restore the
//! pre-image, stages the change ([`stage`]), has the tier derived by
//! [`crate::governance`], and seals everything into one deterministic CBOR
//! *statement* whose SHA-256 is the proposal digest that approvals sign.
//! [`apply`] changes the system, and only given a
//! [`crate::governance::Authorized`] proposal. This module decides nothing
//! about who may approve (that is [`crate::governance`]) and writes no
//! evidence format of its own (the events are in [`crate::evidence::events`]).
//! The format is normative in `docs/remediation.md`.

pub mod apply;
pub mod patch;
pub mod stage;

use std::path::{Path, PathBuf};

use ciborium::Value;
use sha2::{Digest, Sha256};

use crate::capsule::{AbsPath, Access, Destination, Kind};
use crate::cbor::{MapReader, text_map};
use crate::governance::{self, Decision, Target, Tier, TierInputs, Validation};
use crate::keys::KeyId;
use crate::sandbox::{EvidenceItem, Grant};
use crate::timestamp::Timestamp;

/// Media type of the proposal item a capsule emits (`capsule_sdk::PROPOSAL_MEDIA_TYPE`).
pub const PROPOSAL_MEDIA_TYPE: &str = "application/vnd.edge-runner.proposal+json";

/// Largest proposal a capsule may emit, and largest sealed statement (512 KiB).
pub const MAX_PROPOSAL_BYTES: usize = 512 << 10;

/// The statement format this runner writes and reads.
pub const STATEMENT_FORMAT: u64 = 1;

/// Bounds on proposals. Defaults:
///
/// | limit | default |
/// |---|---|
/// | `max_proposal_bytes`: a capsule's proposal item, and the sealed statement | 512 KiB |
/// | `max_target_bytes`: a file target's pre-image, read by the runner | 16 MiB |
/// | `max_actions` in one proposal | 16 |
///
/// A proposal over a bound is refused whole (recorded as `proposal-refused`),
/// never kept as a digest only: an approver must be able to read every byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest proposal item a capsule may emit, and largest sealed statement.
    pub max_proposal_bytes: usize,
    /// Largest file the runner reads as a pre-image.
    pub max_target_bytes: u64,
    /// Most actions in one proposal.
    pub max_actions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_proposal_bytes: MAX_PROPOSAL_BYTES,
            max_target_bytes: 16 << 20,
            max_actions: 16,
        }
    }
}

/// Why a proposal was refused, or a remediation step could not be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemediationError {
    /// Only a `remediate` capsule may propose.
    #[error(
        "capsule `{capsule}` {version} is a `{kind}` capsule and emitted a proposal; only a `remediate` capsule may propose changes (the proposal is refused and recorded)"
    )]
    NotRemediate {
        /// Capsule name.
        capsule: String,
        /// Its version.
        version: String,
        /// Its kind.
        kind: String,
    },
    /// The proposal is over the stated maximum.
    #[error(
        "proposal is {size} bytes, over the {max}-byte maximum (remediation::Limits::max_proposal_bytes); it is refused whole, nothing of it is kept as a digest — split the change into smaller proposals"
    )]
    TooLarge {
        /// Its size.
        size: usize,
        /// The maximum.
        max: usize,
    },
    /// The capsule's proposal item is not a proposal this runner reads.
    #[error("proposal item is malformed: {0}")]
    Malformed(String),
    /// A file target outside what the capsule was granted.
    #[error(
        "target `{path}` is not inside a directory granted to this run (granted: {granted}); a capsule proposes changes only to files it was granted"
    )]
    TargetNotGranted {
        /// The path.
        path: String,
        /// What was granted.
        granted: String,
    },
    /// The runner could not read the pre-image.
    #[error("reading the pre-image of `{path}`: {detail}")]
    PreImage {
        /// The path.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// The diff does not apply to the pre-image.
    #[error("the diff for `{path}` does not apply to its pre-image (sha256 {pre}): {error}")]
    DiffDoesNotApply {
        /// The path.
        path: String,
        /// The pre-image digest.
        pre: String,
        /// Where it failed.
        error: patch::PatchError,
    },
    /// The stated rollback does not restore the pre-image.
    #[error(
        "the rollback for `{path}` does not restore the pre-image (pre-image sha256 {pre}, rollback gives {got}); fix the rollback diff, or propose without one (an irreversible change, tiered change-control)"
    )]
    RollbackDoesNotRestore {
        /// The path.
        path: String,
        /// The pre-image digest.
        pre: String,
        /// What the rollback produced (a digest, or why it did not apply).
        got: String,
    },
    /// An HTTP action outside the egress grant.
    #[error(
        "HTTP action {method} {url}: {detail}; a capsule proposes only requests to destinations in its egress grant, and the site must allow them"
    )]
    EgressNotGranted {
        /// Method.
        method: String,
        /// URL.
        url: String,
        /// Why.
        detail: String,
    },
    /// Staged validation found a regression.
    #[error(
        "staged validation regressed {regressed}: the proposal is stopped (the staged runs are records {runs})"
    )]
    Regression {
        /// Nodes that regressed.
        regressed: String,
        /// Records of the staged runs.
        runs: String,
    },
    /// No governance is installed, so no tier can be derived.
    #[error(
        "no governance is installed ({origin}), so no tier can be derived and nothing can be authorized; install one (`edge-runner governance install`) and run the capsule again"
    )]
    NoGovernance {
        /// Where it was looked for.
        origin: String,
    },
    /// The governance cannot be used here (older than this log has used), or recorded.
    #[error("governance: {0}")]
    Governance(String),
    /// Staging could not be done.
    #[error("staging: {0}")]
    Staging(String),
    /// A statement read back is not one this runner wrote.
    #[error("proposal statement: {0}")]
    Statement(String),
}

/// One change a proposal makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A change to one file.
    File(FileAction),
    /// One exact HTTP request.
    Http(HttpAction),
}

/// A file change: the diff, its rollback, and the digests the runner computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAction {
    /// The path as the capsule named it (inside its grant).
    pub path: AbsPath,
    /// The host file behind it.
    pub host: PathBuf,
    /// The unified diff.
    pub diff: String,
    /// The unified diff that undoes it; `None`: irreversible.
    pub rollback: Option<String>,
    /// SHA-256 of the pre-image the runner read.
    pub pre_sha256: [u8; 32],
    /// SHA-256 of the post-image the runner computed.
    pub post_sha256: [u8; 32],
}

/// An HTTP request, exactly as it will be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// Upper-case method.
    pub method: String,
    /// Absolute `http`/`https` URL.
    pub url: String,
    /// Headers, in order, names lower-case.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// An HTTP action: the request and an optional rollback request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAction {
    /// The request.
    pub request: HttpRequest,
    /// The request that undoes it; `None`: irreversible.
    pub rollback: Option<HttpRequest>,
}

impl HttpRequest {
    fn to_value(&self) -> Value {
        text_map([
            ("method", Value::Text(self.method.clone())),
            ("url", Value::Text(self.url.clone())),
            (
                "headers",
                Value::Array(
                    self.headers
                        .iter()
                        .map(|(n, v)| {
                            Value::Array(vec![Value::Text(n.clone()), Value::Text(v.clone())])
                        })
                        .collect(),
                ),
            ),
            ("body", Value::Bytes(self.body.clone())),
        ])
    }

    fn from_value(v: &Value) -> Result<Self, String> {
        let m = MapReader::new("http request", v)?;
        m.only(&["method", "url", "headers", "body"])?;
        let headers = match m.get("headers") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|h| match h {
                    Value::Array(p) => match p.as_slice() {
                        [Value::Text(n), Value::Text(v)] => Ok((n.clone(), v.clone())),
                        _ => Err("a header is not [name, value]".to_string()),
                    },
                    _ => Err("a header is not [name, value]".to_string()),
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err("`headers` is missing or not an array".into()),
        };
        Ok(Self {
            method: m.text("method")?.to_string(),
            url: m.text("url")?.to_string(),
            headers,
            body: m.bytes("body")?.to_vec(),
        })
    }

    /// SHA-256 of the request's deterministic CBOR form.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(crate::cbor::encode(&self.to_value()).unwrap_or_default()).into()
    }

    /// The destination (`scheme://host:port`) and whether it is TLS.
    pub fn destination(&self) -> Result<(Destination, bool), String> {
        let uri: http::Uri = self
            .url
            .parse()
            .map_err(|e| format!("not an absolute URL (http[s]://host[:port]/path): {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => return Err(format!("scheme `{other}` is not http or https")),
            None => return Err("not an absolute URL (http[s]://host[:port]/path)".into()),
        };
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err("user-info in the URL is refused".into());
        }
        let host = uri
            .host()
            .ok_or("the URL names no host")?
            .to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let scheme = if tls { "https" } else { "http" };
        Destination::parse(&format!("{scheme}://{host}:{port}")).map(|d| (d, tls))
    }
}

impl Action {
    /// One line for humans: `file /config/app.conf` or `http POST https://…`.
    pub fn describe(&self) -> String {
        match self {
            Action::File(f) => format!("file {}", f.path),
            Action::Http(h) => format!("http {} {}", h.request.method, h.request.url),
        }
    }

    /// The change as text: the diff, or the request.
    pub fn diff_text(&self) -> String {
        match self {
            Action::File(f) => f.diff.clone(),
            Action::Http(h) => {
                let mut s = format!("{} {}\n", h.request.method, h.request.url);
                for (n, v) in &h.request.headers {
                    s.push_str(&format!("{n}: {v}\n"));
                }
                s.push('\n');
                s.push_str(&String::from_utf8_lossy(&h.request.body));
                s
            }
        }
    }

    /// True when a rollback exists (for a file: checked to restore the pre-image).
    pub fn reversible(&self) -> bool {
        match self {
            Action::File(f) => f.rollback.is_some(),
            Action::Http(h) => h.rollback.is_some(),
        }
    }

    fn size(&self) -> u64 {
        match self {
            Action::File(f) => f.diff.len() as u64,
            Action::Http(h) => (h.request.url.len() + h.request.body.len()) as u64,
        }
    }

    fn target(&self, site: &str) -> Target {
        match self {
            Action::File(f) => Target::File {
                site: site.to_string(),
                path: f.path.to_string(),
            },
            Action::Http(h) => Target::Http {
                site: site.to_string(),
                method: h.request.method.clone(),
                url: h.request.url.clone(),
            },
        }
    }

    fn to_value(&self) -> Value {
        match self {
            Action::File(f) => text_map([
                ("kind", Value::Text("file".into())),
                ("path", Value::Text(f.path.to_string())),
                ("host-path", Value::Text(f.host.display().to_string())),
                ("diff", Value::Text(f.diff.clone())),
                (
                    "rollback",
                    f.rollback.clone().map_or(Value::Null, Value::Text),
                ),
                ("pre-sha256", Value::Bytes(f.pre_sha256.to_vec())),
                ("post-sha256", Value::Bytes(f.post_sha256.to_vec())),
            ]),
            Action::Http(h) => text_map([
                ("kind", Value::Text("http".into())),
                ("request", h.request.to_value()),
                (
                    "rollback",
                    h.rollback
                        .as_ref()
                        .map_or(Value::Null, HttpRequest::to_value),
                ),
                ("request-sha256", Value::Bytes(h.request.digest().to_vec())),
            ]),
        }
    }

    fn from_value(v: &Value) -> Result<Self, String> {
        let m = MapReader::new("action", v)?;
        match m.text("kind")? {
            "file" => {
                m.only(&[
                    "kind",
                    "path",
                    "host-path",
                    "diff",
                    "rollback",
                    "pre-sha256",
                    "post-sha256",
                ])?;
                Ok(Action::File(FileAction {
                    path: AbsPath::parse(m.text("path")?)?,
                    host: PathBuf::from(m.text("host-path")?),
                    diff: m.text("diff")?.to_string(),
                    rollback: match m.get("rollback") {
                        Some(Value::Null) => None,
                        Some(Value::Text(t)) => Some(t.clone()),
                        _ => return Err("action: `rollback` is not text or null".into()),
                    },
                    pre_sha256: bytes32(&m, "pre-sha256")?,
                    post_sha256: bytes32(&m, "post-sha256")?,
                }))
            }
            "http" => {
                m.only(&["kind", "request", "rollback", "request-sha256"])?;
                let request =
                    HttpRequest::from_value(m.get("request").ok_or("action: `request` missing")?)?;
                if bytes32(&m, "request-sha256")? != request.digest() {
                    return Err("action: `request-sha256` is not the request's digest".into());
                }
                Ok(Action::Http(HttpAction {
                    request,
                    rollback: match m.get("rollback") {
                        Some(Value::Null) => None,
                        Some(v) => Some(HttpRequest::from_value(v)?),
                        None => return Err("action: `rollback` missing".into()),
                    },
                }))
            }
            other => Err(format!("action kind `{other}` is not file or http")),
        }
    }
}

/// The statement's `capsule` map; `publishers` is absent when empty, so
/// statements from runners that did not record it encode as they were.
fn capsule_value(c: &CapsuleRef) -> Value {
    let mut entries = vec![
        ("name", Value::Text(c.name.clone())),
        ("version", Value::Text(c.version.clone())),
        ("module-sha256", Value::Bytes(c.module_sha256.to_vec())),
        (
            "signers",
            Value::Array(
                c.signers
                    .iter()
                    .map(|k| Value::Bytes(k.0.to_vec()))
                    .collect(),
            ),
        ),
    ];
    if !c.publishers.is_empty() {
        entries.push((
            "publishers",
            Value::Array(c.publishers.iter().cloned().map(Value::Text).collect()),
        ));
    }
    text_map(entries)
}

fn bytes32(m: &MapReader<'_>, key: &str) -> Result<[u8; 32], String> {
    let b = m.bytes(key)?;
    b.try_into()
        .map_err(|_| format!("`{key}` is {} bytes, not 32", b.len()))
}

/// The capsule that proposed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapsuleRef {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Module SHA-256.
    pub module_sha256: [u8; 32],
    /// Publisher keys that signed it.
    pub signers: Vec<KeyId>,
    /// The trust root's names for those publishers, in the same order (empty
    /// in statements from runners before they were recorded).
    pub publishers: Vec<String>,
}

/// What runs after apply to check the change held: a capsule and its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyPlan {
    /// Capsule name.
    pub capsule: String,
    /// Its version.
    pub version: String,
    /// Its module SHA-256 (the apply refuses another module).
    pub module_sha256: [u8; 32],
    /// The input it runs on.
    pub input: Vec<u8>,
}

impl std::fmt::Display for VerifyPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "run `{}` {} (module sha256 {}) on its {}-byte input (sha256 {}); it must pass",
            self.capsule,
            self.version,
            hex::encode(self.module_sha256),
            self.input.len(),
            hex::encode(Sha256::digest(&self.input))
        )
    }
}

/// Staged validation: what ran against the staged copy, and the records of those runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Staged {
    /// Nodes whose registered tests ran.
    pub exercised: Vec<String>,
    /// Nodes whose registered tests all passed.
    pub passed: Vec<String>,
    /// Nodes with a registered test that did not pass.
    pub regressed: Vec<String>,
    /// `run-finished` records of the staged runs.
    pub runs: Vec<u64>,
}

impl Staged {
    /// As governance's input.
    pub fn validation(&self) -> Validation {
        Validation {
            exercised: self.exercised.clone(),
            passed: self.passed.clone(),
            regressed: self.regressed.clone(),
        }
    }

    fn to_value(&self) -> Value {
        let texts = |v: &[String]| Value::Array(v.iter().cloned().map(Value::Text).collect());
        text_map([
            ("exercised", texts(&self.exercised)),
            ("passed", texts(&self.passed)),
            ("regressed", texts(&self.regressed)),
            (
                "runs",
                Value::Array(
                    self.runs
                        .iter()
                        .map(|r| Value::Integer((*r).into()))
                        .collect(),
                ),
            ),
        ])
    }

    fn from_value(v: &Value) -> Result<Self, String> {
        let m = MapReader::new("validation", v)?;
        m.only(&["exercised", "passed", "regressed", "runs"])?;
        let texts = |k: &str| -> Result<Vec<String>, String> {
            match m.get(k) {
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|t| match t {
                        Value::Text(t) => Ok(t.clone()),
                        _ => Err(format!("validation: `{k}` holds a non-text item")),
                    })
                    .collect(),
                _ => Err(format!("validation: `{k}` is missing or not an array")),
            }
        };
        let runs = match m.get("runs") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|r| crate::cbor::as_u64(r).ok_or("validation: a run is not a record number"))
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err("validation: `runs` is missing".into()),
        };
        Ok(Self {
            exercised: texts("exercised")?,
            passed: texts("passed")?,
            regressed: texts("regressed")?,
            runs,
        })
    }
}

/// A proposal before it is sealed: the runner-checked actions and who proposed.
#[derive(Debug, Clone)]
pub struct Draft {
    /// Site.
    pub site: String,
    /// Proposing capsule.
    pub capsule: CapsuleRef,
    /// Evidence log id and the run's `run-finished` record.
    pub run: ([u8; 16], u64),
    /// Who requested the run.
    pub proposer: String,
    /// When.
    pub proposed_at: Timestamp,
    /// The checked actions.
    pub actions: Vec<Action>,
    /// Why.
    pub rationale: String,
    /// What runs after apply.
    pub verify: VerifyPlan,
}

impl Draft {
    /// Governance's inputs for this draft given its staged validation.
    pub fn tier_inputs(&self, staged: Option<&Staged>) -> TierInputs {
        TierInputs {
            targets: self.actions.iter().map(|a| a.target(&self.site)).collect(),
            reversible: self.actions.iter().all(Action::reversible),
            validation: staged.map(Staged::validation),
            change_bytes: self.actions.iter().map(Action::size).sum(),
            declared_tier: None,
        }
    }
}

/// A sealed proposal: its statement bytes and what they say. Built only by
/// [`Proposal::seal`] (from a runner-checked [`Draft`]) or
/// [`Proposal::from_statement`] (re-reading canonical bytes).
#[derive(Debug, Clone)]
pub struct Proposal {
    statement: Vec<u8>,
    digest: [u8; 32],
    draft: Draft,
    staged: Option<Staged>,
    tier: Tier,
    decision: Value,
    declared_tier: Option<Tier>,
}

impl Proposal {
    /// Seals `draft` with its staged validation and governance's decision.
    pub fn seal(
        draft: Draft,
        staged: Option<Staged>,
        decision: &Decision,
        limits: &Limits,
    ) -> Result<Self, RemediationError> {
        let mut statement = Self {
            statement: Vec::new(),
            digest: [0; 32],
            draft,
            staged,
            tier: decision.tier,
            decision: decision.to_value(),
            declared_tier: None,
        };
        let bytes = crate::cbor::encode(&statement.to_value())
            .map_err(|e| RemediationError::Statement(e.to_string()))?;
        if bytes.len() > limits.max_proposal_bytes {
            return Err(RemediationError::TooLarge {
                size: bytes.len(),
                max: limits.max_proposal_bytes,
            });
        }
        statement.digest = Sha256::digest(&bytes).into();
        statement.statement = bytes;
        Ok(statement)
    }

    fn to_value(&self) -> Value {
        let d = &self.draft;
        text_map([
            ("format", Value::Integer(STATEMENT_FORMAT.into())),
            ("site", Value::Text(d.site.clone())),
            ("capsule", capsule_value(&d.capsule)),
            (
                "run",
                text_map([
                    ("log-id", Value::Bytes(d.run.0.to_vec())),
                    ("record", Value::Integer(d.run.1.into())),
                ]),
            ),
            ("proposer", Value::Text(d.proposer.clone())),
            ("proposed-at", Value::Integer(d.proposed_at.0.into())),
            (
                "actions",
                Value::Array(d.actions.iter().map(Action::to_value).collect()),
            ),
            ("rationale", Value::Text(d.rationale.clone())),
            (
                "verify",
                text_map([
                    ("capsule", Value::Text(d.verify.capsule.clone())),
                    ("version", Value::Text(d.verify.version.clone())),
                    (
                        "module-sha256",
                        Value::Bytes(d.verify.module_sha256.to_vec()),
                    ),
                    ("input", Value::Bytes(d.verify.input.clone())),
                ]),
            ),
            (
                "validation",
                self.staged.as_ref().map_or(Value::Null, Staged::to_value),
            ),
            (
                "reversible",
                Value::Bool(d.actions.iter().all(Action::reversible)),
            ),
            ("tier", Value::Text(self.tier.as_str().into())),
            ("decision", self.decision.clone()),
        ])
    }

    /// Reads a statement (a proposal file, or the bytes in a `proposal`
    /// record): canonical CBOR, format 1, every field present and typed.
    pub fn from_statement(bytes: &[u8]) -> Result<Self, RemediationError> {
        let bad = RemediationError::Statement;
        let value = crate::cbor::decode_canonical(bytes).map_err(|e| bad(e.to_string()))?;
        let m = MapReader::new("proposal statement", &value).map_err(bad)?;
        m.only(&[
            "format",
            "site",
            "capsule",
            "run",
            "proposer",
            "proposed-at",
            "actions",
            "rationale",
            "verify",
            "validation",
            "reversible",
            "tier",
            "decision",
        ])
        .map_err(bad)?;
        let read = || -> Result<Self, String> {
            let format = m.uint("format")?;
            if format != STATEMENT_FORMAT {
                return Err(format!(
                    "format {format} is not supported; this runner reads format {STATEMENT_FORMAT}"
                ));
            }
            let c = MapReader::new("capsule", m.get("capsule").ok_or("`capsule` missing")?)?;
            let signers = match c.get("signers") {
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|k| match k {
                        Value::Bytes(b) => <[u8; 32]>::try_from(b.as_slice())
                            .map(KeyId)
                            .map_err(|_| "a signer is not a 32-byte key id".to_string()),
                        _ => Err("a signer is not a 32-byte key id".to_string()),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                _ => return Err("capsule: `signers` missing".into()),
            };
            let publishers = match c.get("publishers") {
                None => Vec::new(),
                Some(Value::Array(a)) if a.len() == signers.len() => a
                    .iter()
                    .map(|p| match p {
                        Value::Text(t) => Ok(t.clone()),
                        _ => Err("capsule: a publisher is not text".to_string()),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                Some(_) => {
                    return Err(
                        "capsule: `publishers` must be text, one per signer, in the same order"
                            .into(),
                    );
                }
            };
            let r = MapReader::new("run", m.get("run").ok_or("`run` missing")?)?;
            let log_id: [u8; 16] = r
                .bytes("log-id")?
                .try_into()
                .map_err(|_| "run: `log-id` is not 16 bytes")?;
            let actions = match m.get("actions") {
                Some(Value::Array(a)) if !a.is_empty() => a
                    .iter()
                    .map(Action::from_value)
                    .collect::<Result<Vec<_>, _>>()?,
                _ => return Err("`actions` is missing or empty".into()),
            };
            let v = MapReader::new("verify", m.get("verify").ok_or("`verify` missing")?)?;
            let staged = match m.get("validation") {
                Some(Value::Null) => None,
                Some(v) => Some(Staged::from_value(v)?),
                None => return Err("`validation` missing".into()),
            };
            let tier_text = m.text("tier")?;
            let tier = Tier::parse(tier_text).ok_or(format!("tier `{tier_text}` is unknown"))?;
            let reversible = matches!(m.get("reversible"), Some(Value::Bool(true)));
            if reversible != actions.iter().all(Action::reversible) {
                return Err("`reversible` disagrees with the actions' rollbacks".into());
            }
            Ok(Self {
                statement: bytes.to_vec(),
                digest: Sha256::digest(bytes).into(),
                draft: Draft {
                    site: m.text("site")?.to_string(),
                    capsule: CapsuleRef {
                        name: c.text("name")?.to_string(),
                        version: c.text("version")?.to_string(),
                        module_sha256: bytes32(&c, "module-sha256")?,
                        signers,
                        publishers,
                    },
                    run: (log_id, r.uint("record")?),
                    proposer: m.text("proposer")?.to_string(),
                    proposed_at: Timestamp(m.uint("proposed-at")?),
                    actions,
                    rationale: m.text("rationale")?.to_string(),
                    verify: VerifyPlan {
                        capsule: v.text("capsule")?.to_string(),
                        version: v.text("version")?.to_string(),
                        module_sha256: bytes32(&v, "module-sha256")?,
                        input: v.bytes("input")?.to_vec(),
                    },
                },
                staged,
                tier,
                decision: m.get("decision").cloned().ok_or("`decision` missing")?,
                declared_tier: None,
            })
        };
        read().map_err(bad)
    }

    /// The statement bytes (what the digest covers; the proposal file).
    pub fn statement_bytes(&self) -> &[u8] {
        &self.statement
    }

    /// SHA-256 of the statement.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// The digest as lower-case hex (the proposal's id).
    pub fn id(&self) -> String {
        hex::encode(self.digest)
    }

    /// The actions.
    pub fn actions(&self) -> &[Action] {
        &self.draft.actions
    }

    /// The runner-checked draft.
    pub fn draft(&self) -> &Draft {
        &self.draft
    }

    /// Why.
    pub fn rationale(&self) -> &str {
        &self.draft.rationale
    }

    /// What runs after apply.
    pub fn verify_plan(&self) -> &VerifyPlan {
        &self.draft.verify
    }

    /// Staged validation, if it was staged.
    pub fn staged(&self) -> Option<&Staged> {
        self.staged.as_ref()
    }

    /// The tier recorded in the statement.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// Governance's decision as recorded (`Decision::to_value()`).
    pub fn decision(&self) -> &Value {
        &self.decision
    }

    /// True when every action has a rollback.
    pub fn reversible(&self) -> bool {
        self.draft.actions.iter().all(Action::reversible)
    }
}

impl governance::Proposed for Proposal {
    fn digest(&self) -> [u8; 32] {
        self.digest
    }
    fn tier_inputs(&self) -> TierInputs {
        let mut inputs = self.draft.tier_inputs(self.staged.as_ref());
        inputs.declared_tier = self.declared_tier;
        inputs
    }
    fn recorded_tier(&self) -> Tier {
        self.tier
    }
    fn proposer(&self) -> &str {
        &self.draft.proposer
    }
    fn capsule_signers(&self) -> &[KeyId] {
        &self.draft.capsule.signers
    }
    fn capsule_publishers(&self) -> &[String] {
        &self.draft.capsule.publishers
    }
    fn proposed_at(&self) -> Timestamp {
        self.draft.proposed_at
    }
}

/// What a capsule's proposal item asks for (the SDK's JSON).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemJson {
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    diff: Option<String>,
    #[serde(default)]
    rollback: Option<String>,
    #[serde(default)]
    http: Option<HttpJson>,
    #[serde(default)]
    http_rollback: Option<HttpJson>,
    #[serde(default)]
    rationale: String,
    /// Declared by the author; recorded, never used for the tier.
    #[serde(default)]
    tier: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpJson {
    method: String,
    url: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: String,
}

impl HttpJson {
    fn request(self) -> HttpRequest {
        HttpRequest {
            method: self.method.to_ascii_uppercase(),
            url: self.url,
            headers: self
                .headers
                .into_iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v))
                .collect(),
            body: self.body.into_bytes(),
        }
    }
}

/// Who proposed and what they ran: the context a proposal item is read in.
pub struct ItemContext<'a> {
    /// Site.
    pub site: &'a str,
    /// The capsule's kind (only `remediate` may propose).
    pub kind: Kind,
    /// The proposing capsule.
    pub capsule: CapsuleRef,
    /// The run's grant (targets must be inside it).
    pub grant: &'a Grant,
    /// The site's egress patterns.
    pub site_egress: &'a [crate::capsule::DestinationPattern],
    /// Evidence log id and the run's `run-finished` record.
    pub run: ([u8; 16], u64),
    /// Who requested the run.
    pub proposer: &'a str,
    /// The run's input (the default verify plan re-runs the proposing capsule on it).
    pub input: &'a [u8],
    /// Now.
    pub now: Timestamp,
}

/// True when `item` is a proposal (by media type or label).
pub fn is_proposal(item: &EvidenceItem) -> bool {
    item.media_type == PROPOSAL_MEDIA_TYPE || item.label == "proposal"
}

/// Turns a capsule's proposal item into a runner-checked [`Draft`]: kind,
/// size, shape, the target inside the grant, the pre-image read by the runner,
/// the diff applied in memory and the rollback checked to restore it; an HTTP
/// destination inside the run's egress grant and the site's egress.
pub fn draft(
    cx: &ItemContext<'_>,
    item: &EvidenceItem,
    limits: &Limits,
) -> Result<Draft, RemediationError> {
    if cx.kind != Kind::Remediate {
        return Err(RemediationError::NotRemediate {
            capsule: cx.capsule.name.clone(),
            version: cx.capsule.version.clone(),
            kind: cx.kind.as_str().into(),
        });
    }
    if item.size > limits.max_proposal_bytes as u64 {
        return Err(RemediationError::TooLarge {
            size: usize::try_from(item.size).unwrap_or(usize::MAX),
            max: limits.max_proposal_bytes,
        });
    }
    let data = item.inline.as_deref().ok_or_else(|| {
        RemediationError::Malformed(
            "the runner kept only the item's digest (it was emitted without the proposal media type)".into(),
        )
    })?;
    let json: ItemJson = serde_json::from_slice(data)
        .map_err(|e| RemediationError::Malformed(format!("not a proposal: {e}")))?;
    let mut actions = Vec::new();
    match (json.target, json.http) {
        (Some(target), None) => actions.push(Action::File(file_action(
            cx,
            &target,
            json.diff.unwrap_or_default(),
            json.rollback.filter(|r| !r.is_empty()),
            limits,
        )?)),
        (None, Some(http)) => {
            let request = http.request();
            check_egress(cx, &request)?;
            let rollback = json.http_rollback.map(HttpJson::request);
            if let Some(r) = &rollback {
                check_egress(cx, r)?;
            }
            actions.push(Action::Http(HttpAction { request, rollback }));
        }
        _ => {
            return Err(RemediationError::Malformed(
                "a proposal names exactly one of `target` (a file change) and `http` (a request)"
                    .into(),
            ));
        }
    }
    let _ = json.tier;
    let rationale = if json.rationale.is_empty() {
        "(no rationale given)".to_string()
    } else {
        json.rationale
    };
    Ok(Draft {
        site: cx.site.to_string(),
        capsule: cx.capsule.clone(),
        run: cx.run,
        proposer: cx.proposer.to_string(),
        proposed_at: cx.now,
        actions,
        rationale,
        verify: VerifyPlan {
            capsule: cx.capsule.name.clone(),
            version: cx.capsule.version.clone(),
            module_sha256: cx.capsule.module_sha256,
            input: cx.input.to_vec(),
        },
    })
}

fn file_action(
    cx: &ItemContext<'_>,
    target: &str,
    diff: String,
    rollback: Option<String>,
    limits: &Limits,
) -> Result<FileAction, RemediationError> {
    let path = AbsPath::parse(target).map_err(RemediationError::Malformed)?;
    let dir = cx
        .grant
        .directories()
        .iter()
        .find(|d| path.is_within(&d.guest) && path != d.guest)
        .ok_or_else(|| RemediationError::TargetNotGranted {
            path: path.to_string(),
            granted: granted_dirs(cx.grant),
        })?;
    let below = path.as_str()[dir.guest.as_str().len()..].trim_start_matches('/');
    let host = dir.host.join(below);
    let pre = read_pre_image(&host, limits).map_err(|detail| RemediationError::PreImage {
        path: path.to_string(),
        detail,
    })?;
    let pre_sha256: [u8; 32] = Sha256::digest(pre.as_bytes()).into();
    let post = patch::apply(&pre, &diff).map_err(|error| RemediationError::DiffDoesNotApply {
        path: path.to_string(),
        pre: hex::encode(pre_sha256),
        error,
    })?;
    if let Some(r) = &rollback {
        let restored = patch::apply(&post, r);
        let ok = restored.as_deref().is_ok_and(|t| t == pre);
        if !ok {
            return Err(RemediationError::RollbackDoesNotRestore {
                path: path.to_string(),
                pre: hex::encode(pre_sha256),
                got: match restored {
                    Ok(t) => format!("sha256 {}", hex::encode(Sha256::digest(t.as_bytes()))),
                    Err(e) => format!("no text: {e}"),
                },
            });
        }
    }
    Ok(FileAction {
        path,
        host,
        diff,
        rollback,
        pre_sha256,
        post_sha256: Sha256::digest(post.as_bytes()).into(),
    })
}

fn granted_dirs(grant: &Grant) -> String {
    let dirs: Vec<String> = grant
        .directories()
        .iter()
        .map(|d| format!("{} ({})", d.guest, d.access))
        .collect();
    if dirs.is_empty() {
        "nothing".into()
    } else {
        dirs.join(", ")
    }
}

/// Reads a pre-image as UTF-8 text, bounded, refusing a symlink.
pub(crate) fn read_pre_image(host: &Path, limits: &Limits) -> Result<String, String> {
    let meta = std::fs::symlink_metadata(host).map_err(|e| e.to_string())?;
    if meta.file_type().is_symlink() {
        return Err(
            "it is a symbolic link; the runner reads and changes regular files only".into(),
        );
    }
    let bytes = crate::fsio::read_bounded(host, limits.max_target_bytes, "pre-image")
        .map_err(|e| e.problem())?;
    String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text; diffs apply to text files".into())
}

fn check_egress(cx: &ItemContext<'_>, request: &HttpRequest) -> Result<(), RemediationError> {
    let refuse = |detail: String| RemediationError::EgressNotGranted {
        method: request.method.clone(),
        url: request.url.clone(),
        detail,
    };
    let (dest, tls) = request.destination().map_err(refuse)?;
    if !cx
        .grant
        .egress()
        .iter()
        .any(|g| g.destination.authority() == dest.authority() && g.destination.allows_http(tls))
    {
        return Err(refuse(format!(
            "{} is not in the run's egress grant",
            dest.authority()
        )));
    }
    if !cx.site_egress.iter().any(|p| p.covers(&dest)) {
        return Err(refuse(format!(
            "site egress does not allow {}",
            dest.authority()
        )));
    }
    Ok(())
}

/// Read-write access needed for apply, named in refusals.
pub const APPLY_ACCESS: Access = Access::ReadWrite;

/// Where the runner keeps the proposal file of `digest` beside log `dir`:
/// `DIR/proposals/HEX.proposal`, holding exactly the statement bytes.
pub fn proposal_path(dir: &Path, digest: &[u8; 32]) -> PathBuf {
    dir.join("proposals")
        .join(format!("{}.proposal", hex::encode(digest)))
}

/// Records that `gov` is the governance in force from here on
/// (`governance-loaded`), after refusing a version or content older than
/// what this log already used (rollback protection).
pub fn record_governance(
    session: &mut crate::session::Session,
    gov: &governance::Governance,
) -> Result<(), RemediationError> {
    gov.check_high_water(session.log().high_water())
        .map_err(|e| RemediationError::Governance(e.to_string()))?;
    session
        .record(gov.loaded_event())
        .map_err(|e| RemediationError::Governance(format!("recording governance-loaded: {e}")))?;
    Ok(())
}

/// What turning one run's proposal items into proposals needs.
pub struct Prepare<'a> {
    /// The governance in force (tiers, radius tests); `None` when none is
    /// installed: every proposal is then refused, after its own checks.
    pub governance: Option<&'a governance::Governance>,
    /// Where the governance would be (named in the refusal when there is none).
    pub governance_origin: &'a str,
    /// The trust root staged test capsules are verified against.
    pub root: &'a crate::trust::TrustRoot,
    /// Directory of registered test capsules (`NAME.signed.wasm`, optional `NAME.input`).
    pub capsules: &'a Path,
    /// Who requested the run.
    pub proposer: &'a str,
    /// Bounds.
    pub limits: Limits,
}

/// Turns every proposal item of `run` into a sealed, recorded proposal (the
/// proposal file written beside the log), or a recorded `proposal-refused`.
/// Returns each outcome in item order.
pub fn prepare_run(
    session: &mut crate::session::Session,
    run: &crate::session::RunRecord,
    input: &[u8],
    cx: &Prepare<'_>,
) -> Result<Vec<Result<Proposal, RemediationError>>, crate::session::SessionError> {
    use crate::evidence::events::{ProposalRecorded, ProposalRefused};
    let manifest = run.capsule.manifest();
    let capsule = CapsuleRef {
        name: manifest.name.clone(),
        version: manifest.version.to_string(),
        module_sha256: run.capsule.module_digest(),
        signers: run.capsule.signers().iter().map(|s| s.key_id).collect(),
        publishers: run
            .capsule
            .signers()
            .iter()
            .map(|s| s.publisher.clone())
            .collect(),
    };
    let run_record = session.log().len().saturating_sub(1);
    let mut outcomes = Vec::new();
    let refusals = run
        .report
        .proposals_refused
        .iter()
        .map(|(size, sha)| (*size, *sha, None));
    let items = run
        .report
        .evidence
        .iter()
        .filter(|i| is_proposal(i))
        .map(|i| (i.size, i.sha256, Some(i)));
    for (size, sha256, item) in refusals.chain(items) {
        let outcome = match item {
            None => Err(RemediationError::TooLarge {
                size: usize::try_from(size).unwrap_or(usize::MAX),
                max: cx.limits.max_proposal_bytes,
            }),
            Some(item) => prepare_item(session, run, input, cx, &capsule, run_record, item),
        };
        match &outcome {
            Ok(p) => {
                let path = proposal_path(session.log().dir(), &p.digest());
                if let Some(parent) = path.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                crate::fsio::write_atomically(&path, p.statement_bytes()).map_err(|e| {
                    crate::session::SessionError::Evidence(crate::evidence::EvidenceError::Io {
                        path: path.display().to_string(),
                        source: e,
                    })
                })?;
                session.record(ProposalRecorded {
                    digest: p.digest(),
                    statement: p.statement_bytes().to_vec(),
                    tier: p.tier().as_str().into(),
                    run_record,
                })?;
            }
            Err(e) => {
                session.record(ProposalRefused {
                    capsule: capsule.name.clone(),
                    version: capsule.version.clone(),
                    kind: manifest.kind.as_str().into(),
                    run_record: Some(run_record),
                    item_size: size,
                    item_sha256: sha256,
                    reason: e.to_string(),
                })?;
            }
        }
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

fn prepare_item(
    session: &mut crate::session::Session,
    run: &crate::session::RunRecord,
    input: &[u8],
    cx: &Prepare<'_>,
    capsule: &CapsuleRef,
    run_record: u64,
    item: &EvidenceItem,
) -> Result<Proposal, RemediationError> {
    let policy = session.policy().clone();
    let icx = ItemContext {
        site: &policy.site,
        kind: run.capsule.manifest().kind,
        capsule: capsule.clone(),
        grant: &run.grant,
        site_egress: &policy.egress,
        run: (session.log().log_id(), run_record),
        proposer: cx.proposer,
        input,
        now: Timestamp::now(),
    };
    let draft = draft(&icx, item, &cx.limits)?;
    let gov = cx
        .governance
        .ok_or_else(|| RemediationError::NoGovernance {
            origin: cx.governance_origin.to_string(),
        })?;
    if draft.actions.iter().any(|a| matches!(a, Action::Http(_))) {
        // A remote system has no scratch copy: tests run now would see it
        // unchanged and vouch for a change they never saw. An HTTP change is
        // not staged; it carries no validation (floor: at least single approver).
        let decision = gov.derive(&draft.tier_inputs(None));
        return Proposal::seal(draft, None, &decision, &cx.limits);
    }
    let targets = draft.tier_inputs(None).targets;
    let radius = gov.radius_tests(&targets);
    let scratch = tempdir_for_staging(session.log().dir())?;
    let staged = stage::stage(
        stage::StageContext {
            session,
            root: cx.root,
            capsules: cx.capsules,
            scratch: &scratch,
            limits: cx.limits,
        },
        &draft,
        &radius,
    );
    let _ = std::fs::remove_dir_all(&scratch);
    let staged = staged?;
    let decision = gov.derive(&draft.tier_inputs(Some(&staged)));
    Proposal::seal(draft, Some(staged), &decision, &cx.limits)
}

/// A fresh scratch directory beside the log (same filesystem, never the target).
fn tempdir_for_staging(log_dir: &Path) -> Result<PathBuf, RemediationError> {
    let base = log_dir.join("staging");
    std::fs::create_dir_all(&base)
        .map_err(|e| RemediationError::Staging(format!("{}: {e}", base.display())))?;
    for n in 0..1000u32 {
        let dir = base.join(format!("{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(RemediationError::Staging(format!("{}: {e}", dir.display())));
            }
        }
    }
    Err(RemediationError::Staging(format!(
        "no free scratch directory under {}",
        base.display()
    )))
}
