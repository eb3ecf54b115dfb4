//! One runner session: verify → grant → run → record, with evidence for every step.
//!
//! This is the loop the CLI, the demo and embedders share. It owns the order
//! of steps and what each records; the decisions themselves belong to
//! [`crate::trust`] and [`crate::sandbox`], and the record format to
//! [`crate::evidence`]. A refused capsule never reaches the sandbox, and no
//! step returns before its record is on disk.

use ciborium::Value;
use sha2::{Digest, Sha256};

use crate::capsule::RawCapsule;
use crate::cbor::text_map;
use crate::evidence::{EvidenceError, EvidenceLog};
use crate::sandbox::{Grant, Limits, RunReport, Sandbox, SandboxError, StreamSummary};
use crate::site::SitePolicy;
use crate::timestamp::Timestamp;
use crate::trust::{self, TrustError, TrustRoot, VerifiedCapsule};

/// Why a session step failed. A refusal or failed run is still recorded first.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The capsule was refused; a `capsule-refused` record says why.
    #[error("capsule refused: {0}")]
    Refused(#[from] TrustError),
    /// The sandbox could not start the capsule; a `run-finished` record says why.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The site name is not a valid name.
    #[error("--site: {0}")]
    BadSite(String),
    /// Evidence could not be written, so nothing further was done.
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
}

/// A runner with its sandbox, limits, site name and evidence log.
#[derive(Debug)]
pub struct Session {
    sandbox: Sandbox,
    limits: Limits,
    log: EvidenceLog,
    site: String,
    policy: SitePolicy,
}

/// What [`Session::run`] did.
#[derive(Debug)]
pub struct RunRecord {
    /// The capsule that ran.
    pub capsule: VerifiedCapsule,
    /// What it was granted.
    pub grant: Grant,
    /// What happened.
    pub report: RunReport,
}

impl Session {
    /// Starts a session at site `site`, which has no site policy (nothing
    /// but compute is granted), recording to `log`.
    pub fn new(log: EvidenceLog, limits: Limits, site: &str) -> Result<Self, SessionError> {
        let policy = SitePolicy::deny_all(site).map_err(|e| SessionError::BadSite(e.detail))?;
        Self::with_policy(log, limits, policy)
    }

    /// Starts a session under a site policy, recording to `log`.
    pub fn with_policy(
        log: EvidenceLog,
        limits: Limits,
        policy: SitePolicy,
    ) -> Result<Self, SessionError> {
        Ok(Self {
            sandbox: Sandbox::new()?,
            limits,
            log,
            site: policy.site.clone(),
            policy,
        })
    }

    /// Keeps compiled code between runs in `cache` (authenticated before use).
    pub fn set_code_cache(&mut self, cache: crate::sandbox::CodeCache) {
        self.sandbox.set_code_cache(cache);
    }

    /// The evidence log.
    pub fn log(&self) -> &EvidenceLog {
        &self.log
    }

    /// Verifies `capsule` against `root` now, recording the decision either way.
    pub fn verify(
        &mut self,
        capsule: RawCapsule,
        root: &TrustRoot,
    ) -> Result<VerifiedCapsule, SessionError> {
        self.verify_at(capsule, root, Timestamp::now())
    }

    /// Verifies `capsule` against `root` as of `now`, recording the decision
    /// either way. The high-water mark comes from this session's evidence log.
    pub fn verify_at(
        &mut self,
        capsule: RawCapsule,
        root: &TrustRoot,
        now: Timestamp,
    ) -> Result<VerifiedCapsule, SessionError> {
        let facts = FileFacts::of(&capsule);
        let checked = capsule.check();
        let identity = checked.as_ref().ok().map(|c| {
            let m = c.manifest();
            (m.name.clone(), m.version.to_string(), m.kind.as_str())
        });
        let ctx = trust::Context {
            root,
            site: &self.site,
            now,
            high_water: self.log.high_water(),
        };
        let verified = checked
            .map_err(TrustError::from)
            .and_then(|c| trust::verify(c, &ctx));
        match verified {
            Ok(capsule) => {
                self.log.append(
                    "capsule-verified",
                    verified_body(&capsule, now, facts.signature_sha256),
                )?;
                Ok(capsule)
            }
            Err(err) => {
                let root = Some((root.name.as_str(), root.version, root.digest));
                self.record_refusal(facts, identity, root, err, now)
            }
        }
    }

    /// Records that `capsule` was refused before it could be verified
    /// because no trust root was usable (`err` says why), and returns `err`.
    pub fn refuse_without_root(
        &mut self,
        capsule: &RawCapsule,
        err: TrustError,
    ) -> Result<VerifiedCapsule, SessionError> {
        self.record_refusal(FileFacts::of(capsule), None, None, err, Timestamp::now())
    }

    fn record_refusal(
        &mut self,
        facts: FileFacts,
        identity: Option<(String, String, &'static str)>,
        root: Option<(&str, u64, [u8; 32])>,
        err: TrustError,
        now: Timestamp,
    ) -> Result<VerifiedCapsule, SessionError> {
        let mut body = vec![
            ("reason", Value::Text(err.to_string())),
            ("file-sha256", Value::Bytes(facts.file_sha256.to_vec())),
            ("file-size", uint(facts.size)),
            ("site", Value::Text(self.site.clone())),
            ("checked-at", uint(now.0)),
        ];
        if let Some(sig) = facts.signature_sha256 {
            body.push(("signature-sha256", Value::Bytes(sig.to_vec())));
        }
        if let Some((name, version, digest)) = root {
            body.push(("trust-root", trust_root_value(name, version, digest)));
        }
        if let Some((name, version, kind)) = identity {
            body.push(("name", Value::Text(name)));
            body.push(("version", Value::Text(version)));
            body.push(("kind", Value::Text(kind.into())));
        }
        self.log.append("capsule-refused", text_map(body))?;
        Err(err.into())
    }

    /// Runs a verified capsule on `input`, recording the grant before and the result after.
    pub fn run(
        &mut self,
        capsule: VerifiedCapsule,
        input: &[u8],
    ) -> Result<RunRecord, SessionError> {
        let grant = Grant::compute(
            &capsule,
            &self.limits,
            &self.policy,
            Sha256::digest(input).into(),
        );
        // Config values can be secrets: the record holds a salted commitment to each.
        let mut commitments = Vec::new();
        for (key, value) in &grant.config {
            commitments.push((key.clone(), self.log.commit(value.as_bytes())?));
        }
        self.log.append(
            "run-started",
            run_started_body(&capsule, &grant, input, &self.policy, &commitments),
        )?;
        match self.sandbox.run(&capsule, &grant, input) {
            Ok(report) => {
                self.log
                    .append("run-finished", run_finished_body(&capsule, &report))?;
                Ok(RunRecord {
                    capsule,
                    grant,
                    report,
                })
            }
            Err(err) => {
                self.log.append(
                    "run-finished",
                    text_map([
                        (
                            "module-sha256",
                            Value::Bytes(capsule.module_digest().to_vec()),
                        ),
                        ("status", Value::Text("not-started".into())),
                        ("error", Value::Text(err.to_string())),
                    ]),
                )?;
                Err(err.into())
            }
        }
    }
}

fn trust_root_value(name: &str, version: u64, digest: [u8; 32]) -> Value {
    text_map([
        ("name", Value::Text(name.into())),
        ("version", Value::Integer(version.into())),
        ("sha256", Value::Bytes(digest.to_vec())),
    ])
}

/// What is known about a capsule's files before they are parsed.
struct FileFacts {
    file_sha256: [u8; 32],
    size: u64,
    signature_sha256: Option<[u8; 32]>,
}

impl FileFacts {
    fn of(capsule: &RawCapsule) -> Self {
        Self {
            file_sha256: Sha256::digest(&capsule.component).into(),
            size: capsule.component.len() as u64,
            signature_sha256: capsule
                .detached_signature
                .as_ref()
                .map(|s| Sha256::digest(s).into()),
        }
    }
}

fn verified_body(
    capsule: &VerifiedCapsule,
    now: Timestamp,
    signature_sha256: Option<[u8; 32]>,
) -> Value {
    let m = capsule.manifest();
    let (root_name, root_version, root_digest) = capsule.trust_root();
    let signers = capsule
        .signers()
        .iter()
        .map(|s| {
            text_map([
                ("publisher", Value::Text(s.publisher.clone())),
                ("organisation", Value::Text(s.organisation.clone())),
                ("key-id", Value::Bytes(s.key_id.0.to_vec())),
            ])
        })
        .collect();
    let mut body = vec![
        ("name", Value::Text(m.name.clone())),
        ("version", Value::Text(m.version.to_string())),
        ("kind", Value::Text(m.kind.as_str().into())),
        (
            "module-sha256",
            Value::Bytes(capsule.module_digest().to_vec()),
        ),
        ("file-sha256", Value::Bytes(capsule.file_digest().to_vec())),
        ("signers", Value::Array(signers)),
        (
            "trust-root",
            trust_root_value(root_name, root_version, root_digest),
        ),
        ("site", Value::Text(capsule.site().to_string())),
        ("checked-at", uint(now.0)),
        (
            "signature-placement",
            Value::Text(capsule.placement().as_str().into()),
        ),
        ("audience", text_values(&m.audience)),
        ("not-before", uint(m.not_before.0)),
        ("expires", uint(m.expires.0)),
    ];
    if let Some(sig) = signature_sha256 {
        body.push(("signature-sha256", Value::Bytes(sig.to_vec())));
    }
    text_map(body)
}

fn uint(v: u64) -> Value {
    Value::Integer(v.into())
}

fn text_values<T: ToString>(items: &[T]) -> Value {
    Value::Array(items.iter().map(|i| Value::Text(i.to_string())).collect())
}

fn run_started_body(
    capsule: &VerifiedCapsule,
    grant: &Grant,
    input: &[u8],
    policy: &SitePolicy,
    commitments: &[(String, [u8; 32])],
) -> Value {
    let refused = grant
        .refused
        .iter()
        .map(|r| {
            text_map([
                ("resource", Value::Text(r.resource.into())),
                ("asked", uint(r.asked)),
                ("granted", uint(r.granted)),
            ])
        })
        .collect();
    text_map([
        (
            "module-sha256",
            Value::Bytes(capsule.module_digest().to_vec()),
        ),
        ("input-sha256", Value::Bytes(Sha256::digest(input).to_vec())),
        ("input-size", uint(input.len() as u64)),
        (
            "grant",
            text_map([
                ("memory-bytes", uint(grant.memory_bytes)),
                ("fuel", uint(grant.fuel)),
                (
                    "wall-time-ms",
                    uint(u64::try_from(grant.wall_time.as_millis()).unwrap_or(u64::MAX)),
                ),
                ("stdout-bytes", uint(grant.quotas.stdout_bytes as u64)),
                ("stderr-bytes", uint(grant.quotas.stderr_bytes as u64)),
                (
                    "evidence-items",
                    uint(u64::from(grant.quotas.evidence_items)),
                ),
                ("evidence-bytes", uint(grant.quotas.evidence_bytes)),
                (
                    "filesystem",
                    Value::Array(
                        grant
                            .directories
                            .iter()
                            .map(|d| {
                                text_map([
                                    ("guest", Value::Text(d.guest.to_string())),
                                    ("host", Value::Text(d.host.display().to_string())),
                                    ("access", Value::Text(d.access.as_str().into())),
                                ])
                            })
                            .collect(),
                    ),
                ),
                (
                    "network",
                    Value::Array(
                        grant
                            .egress
                            .iter()
                            .map(|g| {
                                text_map([
                                    ("destination", Value::Text(g.destination.to_string())),
                                    ("addresses", text_values(&g.addresses)),
                                ])
                            })
                            .collect(),
                    ),
                ),
                ("deterministic", determinism_value(grant)),
                (
                    "config",
                    Value::Array(
                        commitments
                            .iter()
                            .map(|(k, c)| {
                                text_map([
                                    ("key", Value::Text(k.clone())),
                                    ("commitment", Value::Bytes(c.to_vec())),
                                ])
                            })
                            .collect(),
                    ),
                ),
            ]),
        ),
        ("refused", Value::Array(refused)),
        (
            "denied",
            Value::Array(
                grant
                    .denied
                    .iter()
                    .map(|d| {
                        text_map([
                            ("request", Value::Text(d.request.clone())),
                            ("reason", Value::Text(d.reason.clone())),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "site-policy",
            match policy.digest {
                Some(digest) => text_map([
                    ("site", Value::Text(policy.site.clone())),
                    ("sha256", Value::Bytes(digest.to_vec())),
                ]),
                None => text_map([("site", Value::Text(policy.site.clone()))]),
            },
        ),
    ])
}

/// The deterministic-run settings, or `false` for an ordinary run.
fn determinism_value(grant: &Grant) -> Value {
    match &grant.determinism {
        None => Value::Bool(false),
        Some(d) => text_map([
            ("seed", Value::Bytes(d.seed.to_vec())),
            ("wall-clock", uint(d.wall_clock_secs)),
            ("monotonic-clock", uint(0)),
            ("nan-canonicalization", Value::Bool(true)),
        ]),
    }
}

fn stream_value(s: &StreamSummary) -> Value {
    text_map([
        ("size", uint(s.size)),
        ("sha256", Value::Bytes(s.sha256.to_vec())),
        ("truncated", Value::Bool(s.truncated)),
    ])
}

fn run_finished_body(capsule: &VerifiedCapsule, report: &RunReport) -> Value {
    let mut body = vec![
        (
            "module-sha256",
            Value::Bytes(capsule.module_digest().to_vec()),
        ),
        ("status", Value::Text(report.status.as_str().into())),
        ("code", Value::Text(report.code.describe())),
        ("fuel-used", uint(report.fuel_used)),
        ("peak-memory-bytes", uint(report.peak_memory_bytes)),
        (
            "wall-time-ms",
            uint(u64::try_from(report.wall_time.as_millis()).unwrap_or(u64::MAX)),
        ),
        ("stdout", stream_value(&report.stdout)),
        ("stderr", stream_value(&report.stderr)),
        (
            "memory-denials",
            Value::Array(report.memory_denials.iter().map(|&b| uint(b)).collect()),
        ),
        ("evidence-refused", uint(u64::from(report.evidence_refused))),
        ("egress-denied", text_values(&report.egress_denied)),
        (
            "evidence",
            Value::Array(
                report
                    .evidence
                    .iter()
                    .map(|item| {
                        let mut fields = vec![
                            ("label", Value::Text(item.label.clone())),
                            ("media-type", Value::Text(item.media_type.clone())),
                            ("size", uint(item.size)),
                            ("sha256", Value::Bytes(item.sha256.to_vec())),
                        ];
                        if let Some(data) = &item.inline {
                            fields.push(("data", Value::Bytes(data.clone())));
                        }
                        text_map(fields)
                    })
                    .collect(),
            ),
        ),
    ];
    if let Some(outcome) = &report.outcome {
        body.push(("verdict", Value::Text(outcome.verdict.as_str().into())));
        body.push(("summary", Value::Text(outcome.summary.clone())));
        body.push((
            "findings",
            Value::Array(
                outcome
                    .findings
                    .iter()
                    .map(|f| {
                        text_map([
                            ("code", Value::Text(f.code.clone())),
                            ("severity", Value::Text(f.severity.as_str().into())),
                            ("message", Value::Text(f.message.clone())),
                        ])
                    })
                    .collect(),
            ),
        ));
    }
    if let Some(error) = &report.error {
        body.push(("error", Value::Text(error.clone())));
    }
    text_map(body)
}
