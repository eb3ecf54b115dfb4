//! What each session step records: typed events built from the values the
//! trust check, the grant and the sandbox produced. No decisions here.

use sha2::{Digest, Sha256};

use crate::capsule::RawCapsule;
use ciborium::Value;

use crate::cbor::text_map;
use crate::evidence::events::{
    AnchorRef, CapsuleId, CapsuleRefused, CapsuleVerified, ConfigRef, DenialRef, DeterminismRef,
    DirectoryRef, EgressRef, EvidenceItemRef, FindingRef, GrantRef, OutcomeRef, RefusedRef,
    RunFinished, RunStarted, RunUsage, SignerRef, SitePolicyRef, StreamRef, TruncatedRef,
    TrustRootRef,
};
use crate::evidence::{Event, MAX_RECORD_BYTES};
use crate::sandbox::{Finding, Grant, RunReport, SandboxError, StreamSummary, cut};
use crate::site::SitePolicy;
use crate::timestamp::Timestamp;
use crate::trust::{TrustRoot, VerifiedCapsule};

/// What is known about a capsule's files before they are parsed.
pub(super) struct FileFacts {
    pub file_sha256: [u8; 32],
    pub size: u64,
    pub signature_sha256: Option<[u8; 32]>,
}

impl FileFacts {
    /// The facts of a capsule that parsed, whose detached signature file (if
    /// any) hashes to `signature_sha256`.
    pub fn of_checked(
        capsule: &crate::capsule::CheckedCapsule,
        signature_sha256: Option<[u8; 32]>,
    ) -> Self {
        Self {
            file_sha256: capsule.file_digest(),
            size: capsule.bytes().len() as u64,
            signature_sha256,
        }
    }

    pub fn of(capsule: &RawCapsule) -> Self {
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

pub(super) fn root_ref(root: &TrustRoot) -> TrustRootRef {
    TrustRootRef {
        name: root.name.clone(),
        version: root.version,
        sha256: root.digest,
        development: root.development,
    }
}

pub(super) fn verified(
    capsule: &VerifiedCapsule,
    now: Timestamp,
    signature_sha256: Option<[u8; 32]>,
) -> CapsuleVerified {
    let m = capsule.manifest();
    let (root_name, root_version, root_digest) = capsule.trust_root();
    CapsuleVerified {
        name: m.name.clone(),
        version: m.version.clone(),
        kind: m.kind.as_str().into(),
        module_sha256: capsule.module_digest(),
        file_sha256: capsule.file_digest(),
        signers: capsule
            .signers()
            .iter()
            .map(|s| SignerRef {
                publisher: s.publisher.clone(),
                organisation: s.organisation.clone(),
                key_id: s.key_id.0,
            })
            .collect(),
        trust_root: TrustRootRef {
            name: root_name.to_string(),
            version: root_version,
            sha256: root_digest,
            development: capsule.under_development_root(),
        },
        site: capsule.site().to_string(),
        checked_at: now.0,
        signature_placement: capsule.placement().as_str().into(),
        audience: m.audience.clone(),
        not_before: m.not_before.0,
        expires: m.expires.0,
        signature_sha256,
        trust_anchor: Some(AnchorRef {
            sha256: capsule.trust_anchor().sha256,
            root_keys: capsule.trust_anchor().root_keys.clone(),
        }),
        job: None,
    }
}

pub(super) fn refused(
    facts: &FileFacts,
    capsule: Option<CapsuleId>,
    trust_root: Option<TrustRootRef>,
    reason: String,
    site: &str,
    now: Timestamp,
) -> CapsuleRefused {
    CapsuleRefused {
        reason: bounded_reason(reason),
        file_sha256: facts.file_sha256,
        file_size: facts.size,
        site: site.to_string(),
        checked_at: now.0,
        signature_sha256: facts.signature_sha256,
        trust_root,
        capsule,
        job: None,
    }
}

/// Bytes of a refusal reason kept; reasons can quote an unverified capsule's manifest.
const REASON_BYTES: usize = 16 << 10;

/// `reason`, cut to [`REASON_BYTES`] with its full size and SHA-256 appended when longer.
fn bounded_reason(reason: String) -> String {
    if reason.len() <= REASON_BYTES {
        return reason;
    }
    format!(
        "{}… (cut: the reason is {} bytes, sha256 {})",
        cut(&reason, REASON_BYTES),
        reason.len(),
        hex::encode(Sha256::digest(reason.as_bytes()))
    )
}

pub(super) fn run_started(
    capsule: &VerifiedCapsule,
    grant: &Grant,
    input: &[u8],
    policy: &SitePolicy,
    commitments: Vec<ConfigRef>,
) -> RunStarted {
    RunStarted {
        module_sha256: capsule.module_digest(),
        input_sha256: Sha256::digest(input).into(),
        input_size: input.len() as u64,
        grant: GrantRef {
            memory_bytes: grant.memory_bytes,
            fuel: grant.fuel,
            wall_time_ms: millis(grant.wall_time),
            stdout_bytes: grant.quotas.stdout_bytes as u64,
            stderr_bytes: grant.quotas.stderr_bytes as u64,
            evidence_items: u64::from(grant.quotas.evidence_items),
            evidence_bytes: grant.quotas.evidence_bytes,
            filesystem: grant
                .directories
                .iter()
                .map(|d| DirectoryRef {
                    guest: d.guest.to_string(),
                    host: d.host.display().to_string(),
                    access: d.access.as_str().into(),
                })
                .collect(),
            network: grant
                .egress
                .iter()
                .map(|g| EgressRef {
                    destination: g.destination.to_string(),
                    addresses: g.addresses.iter().map(ToString::to_string).collect(),
                })
                .collect(),
            deterministic: grant.determinism.as_ref().map(|d| DeterminismRef {
                seed: d.seed.to_vec(),
                wall_clock: d.wall_clock_secs,
                monotonic_clock: 0,
                nan_canonicalization: true,
            }),
            config: commitments,
        },
        refused: grant
            .refused
            .iter()
            .map(|r| RefusedRef {
                resource: r.resource.into(),
                asked: r.asked,
                granted: r.granted,
            })
            .collect(),
        denied: grant
            .denied
            .iter()
            .map(|d| DenialRef {
                request: d.request.clone(),
                reason: d.reason.clone(),
            })
            .collect(),
        site_policy: SitePolicyRef {
            site: policy.site.clone(),
            sha256: policy.digest,
        },
        job: None,
    }
}

/// Room left in a record for everything but the `run-finished` body: the
/// payload's other fields, the COSE headers and the signature need far less.
const RECORD_HEADROOM: usize = 16 << 10;

/// The largest `run-finished` body that still makes a record within the format's limit.
pub(super) const MAX_FINISHED_BODY: usize = MAX_RECORD_BYTES - RECORD_HEADROOM;

/// The `run-finished` of a run that started: every capsule-provided value cut
/// to `grant`'s quotas (each cut one listed in `truncated` with its size and
/// digest), then shrunk further if the body would still not fit in a record.
pub(super) fn run_finished(
    capsule: &VerifiedCapsule,
    grant: &Grant,
    report: &RunReport,
) -> RunFinished {
    let q = grant.quotas;
    let mut truncated = Vec::new();
    let stream = |s: &StreamSummary| StreamRef {
        size: s.size,
        sha256: s.sha256,
        truncated: s.truncated,
    };
    if report.memory_denials_total > report.memory_denials.len() as u64 {
        truncated.push(TruncatedRef {
            field: "memory-denials".into(),
            size: report.memory_denials_total,
            kept: report.memory_denials.len() as u64,
            sha256: report.memory_denials_sha256,
        });
    }
    let usage = RunUsage {
        code: report.code.describe(),
        prepare_ms: Some(millis(report.prepare_time)),
        fuel_used: report.fuel_used,
        peak_memory_bytes: report.peak_memory_bytes,
        host_memory_bytes: Some(report.host_memory_bytes),
        wall_time_ms: millis(report.wall_time),
        stdout: stream(&report.stdout),
        stderr: stream(&report.stderr),
        memory_denials: report.memory_denials.clone(),
        evidence_refused: u64::from(report.evidence_refused),
        egress_denied: report.egress_denied.listed.clone(),
        egress_denied_total: Some(report.egress_denied.total),
        files_refused: (report.files_refused.total > 0).then(|| {
            (
                report.files_refused.total,
                report.files_refused.listed.clone(),
            )
        }),
        evidence: report
            .evidence
            .iter()
            .map(|item| EvidenceItemRef {
                label: item.label.clone(),
                media_type: item.media_type.clone(),
                size: item.size,
                sha256: item.sha256,
                data: item.inline.clone(),
            })
            .collect(),
    };
    let outcome = report.outcome.as_ref().map(|o| {
        let summary = bound_text("summary", &o.summary, q.summary_bytes, &mut truncated);
        if o.findings.len() > q.findings {
            truncated.push(TruncatedRef {
                field: "findings".into(),
                size: o.findings.len() as u64,
                kept: q.findings as u64,
                sha256: findings_digest(&o.findings),
            });
        }
        let findings = o
            .findings
            .iter()
            .take(q.findings)
            .enumerate()
            .map(|(i, f)| FindingRef {
                code: bound_text(
                    &format!("findings/{i}/code"),
                    &f.code,
                    q.finding_code_bytes,
                    &mut truncated,
                ),
                severity: f.severity.as_str().into(),
                message: bound_text(
                    &format!("findings/{i}/message"),
                    &f.message,
                    q.finding_message_bytes,
                    &mut truncated,
                ),
            })
            .collect();
        OutcomeRef {
            verdict: o.verdict.as_str().into(),
            summary,
            findings,
        }
    });
    let error = report
        .error
        .as_ref()
        .map(|e| bound_text("error", e, q.error_bytes, &mut truncated));
    let finished = RunFinished {
        module_sha256: capsule.module_digest(),
        status: report.status.as_str().into(),
        usage: Some(usage),
        outcome,
        error,
        exit_code: report.exit_code.map(i64::from),
        compile_ms: report.compile_time.map(millis),
        truncated,
        job: None,
    };
    fit(finished, report)
}

/// `value` cut to `max` bytes at a character boundary; a cut is noted in `truncated`.
fn bound_text(field: &str, value: &str, max: usize, truncated: &mut Vec<TruncatedRef>) -> String {
    let kept = cut(value, max);
    if kept.len() < value.len() {
        truncated.push(TruncatedRef {
            field: field.to_string(),
            size: value.len() as u64,
            kept: kept.len() as u64,
            sha256: Sha256::digest(value.as_bytes()).into(),
        });
    }
    kept.to_string()
}

/// SHA-256 over the canonical CBOR encoding of each finding as the record
/// writes one (`code`, `severity`, `message`), whole, concatenated in order.
fn findings_digest(findings: &[Finding]) -> [u8; 32] {
    let mut h = Sha256::new();
    for f in findings {
        let map = text_map([
            ("code", Value::Text(f.code.clone())),
            ("severity", Value::Text(f.severity.as_str().into())),
            ("message", Value::Text(f.message.clone())),
        ]);
        if let Ok(bytes) = crate::cbor::encode(&map) {
            h.update(bytes);
        }
    }
    h.finalize().into()
}

/// The encoded size of `finished`'s body.
pub(super) fn body_size(finished: &RunFinished) -> usize {
    crate::cbor::encode(&Event::from(finished.clone()).body()).map_or(usize::MAX, |b| b.len())
}

/// Shrinks `finished` until its body fits in a record: first inline evidence
/// bytes go, then the findings, then every listed value, and last the summary
/// and error texts — each noted in `truncated`. Quotas raised far above their
/// defaults are what make this step drop anything.
fn fit(mut finished: RunFinished, report: &RunReport) -> RunFinished {
    if body_size(&finished) <= MAX_FINISHED_BODY {
        return finished;
    }
    if let Some(usage) = &mut finished.usage {
        for (i, item) in usage.evidence.iter_mut().enumerate() {
            if item.data.take().is_some() {
                finished.truncated.push(TruncatedRef {
                    field: format!("evidence/{i}/data"),
                    size: item.size,
                    kept: 0,
                    sha256: item.sha256,
                });
            }
        }
    }
    if body_size(&finished) <= MAX_FINISHED_BODY {
        return finished;
    }
    if let (Some(outcome), Some(o)) = (&mut finished.outcome, &report.outcome) {
        outcome.findings.clear();
        finished
            .truncated
            .retain(|t| !t.field.starts_with("findings"));
        finished.truncated.push(TruncatedRef {
            field: "findings".into(),
            size: o.findings.len() as u64,
            kept: 0,
            sha256: findings_digest(&o.findings),
        });
    }
    if body_size(&finished) <= MAX_FINISHED_BODY {
        return finished;
    }
    if let Some(usage) = &mut finished.usage {
        let list_digest = |items: Vec<Value>| {
            let mut h = Sha256::new();
            for v in &items {
                if let Ok(bytes) = crate::cbor::encode(v) {
                    h.update(bytes);
                }
            }
            <[u8; 32]>::from(h.finalize())
        };
        let evidence = std::mem::take(&mut usage.evidence);
        let digest = list_digest(
            evidence
                .iter()
                .map(|e| Value::Bytes(e.sha256.to_vec()))
                .collect(),
        );
        finished.truncated.push(TruncatedRef {
            field: "evidence".into(),
            size: evidence.len() as u64,
            kept: 0,
            sha256: digest,
        });
        let denied = std::mem::take(&mut usage.egress_denied);
        finished.truncated.push(TruncatedRef {
            field: "egress-denied".into(),
            size: denied.len() as u64,
            kept: 0,
            sha256: list_digest(denied.into_iter().map(Value::Text).collect()),
        });
    }
    if body_size(&finished) <= MAX_FINISHED_BODY {
        return finished;
    }
    if let Some(outcome) = &mut finished.outcome {
        let summary = std::mem::take(&mut outcome.summary);
        let mut t = Vec::new();
        bound_text("summary", &summary, 0, &mut t);
        finished.truncated.retain(|x| x.field != "summary");
        finished.truncated.extend(t);
    }
    if let Some(error) = finished.error.take() {
        let mut t = Vec::new();
        finished.error = Some(bound_text("error", &error, 0, &mut t));
        finished.truncated.retain(|x| x.field != "error");
        finished.truncated.extend(t);
    }
    finished
}

/// What a `run-finished` that the log refused as too large is replaced by:
/// how the run ended and what it used, without any capsule-provided value.
/// It is a few hundred bytes whatever the run did.
pub(super) fn too_large(finished: &RunFinished, size: usize) -> RunFinished {
    let body = crate::cbor::encode(&Event::from(finished.clone()).body()).unwrap_or_default();
    RunFinished {
        module_sha256: finished.module_sha256,
        status: finished.status.clone(),
        usage: finished.usage.as_ref().map(|u| RunUsage {
            memory_denials: Vec::new(),
            egress_denied: Vec::new(),
            evidence: Vec::new(),
            ..u.clone()
        }),
        outcome: finished.outcome.as_ref().map(|o| OutcomeRef {
            verdict: o.verdict.clone(),
            summary: String::new(),
            findings: Vec::new(),
        }),
        error: Some(format!(
            "the run's `run-finished` record would have been {size} bytes, over the {MAX_RECORD_BYTES}-byte record limit; it is replaced by this one, which keeps how the run ended and drops every value the capsule provided (the whole body's size and SHA-256 are under `truncated`, field `record`)"
        )),
        exit_code: finished.exit_code,
        compile_ms: finished.compile_ms,
        truncated: vec![TruncatedRef {
            field: "record".into(),
            size: body.len() as u64,
            kept: 0,
            sha256: Sha256::digest(&body).into(),
        }],
        job: finished.job,
    }
}

/// The `run-finished` of a capsule the sandbox could not start: status
/// `compile-limit` (with the time the stopped compile took) when compiling
/// it exceeded its budget, `not-started` otherwise.
pub(super) fn not_started(capsule: &VerifiedCapsule, err: &SandboxError) -> RunFinished {
    let mut truncated = Vec::new();
    let error = bound_text(
        "error",
        &err.to_string(),
        ERROR_BYTES_NOT_STARTED,
        &mut truncated,
    );
    let (status, compile_ms) = match err {
        SandboxError::CompileLimit { compile_time, .. } => {
            ("compile-limit", Some(millis(*compile_time)))
        }
        _ => ("not-started", None),
    };
    RunFinished {
        module_sha256: capsule.module_digest(),
        status: status.into(),
        usage: None,
        outcome: None,
        error: Some(error),
        exit_code: None,
        compile_ms,
        truncated,
        job: None,
    }
}

/// Bytes of a could-not-start error kept (Wasmtime's message can quote the capsule's names).
const ERROR_BYTES_NOT_STARTED: usize = 16 << 10;

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
