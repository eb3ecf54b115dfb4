//! What each session step records: typed events built from the values the
//! trust check, the grant and the sandbox produced. No decisions here.

use sha2::{Digest, Sha256};

use crate::capsule::RawCapsule;
use crate::evidence::events::{
    AnchorRef, CapsuleId, CapsuleRefused, CapsuleVerified, ConfigRef, DenialRef, DeterminismRef,
    DirectoryRef, EgressRef, EvidenceItemRef, FindingRef, GrantRef, OutcomeRef, RefusedRef,
    RunFinished, RunStarted, RunUsage, SignerRef, SitePolicyRef, StreamRef, TrustRootRef,
};
use crate::sandbox::{Grant, RunReport, StreamSummary};
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
        reason,
        file_sha256: facts.file_sha256,
        file_size: facts.size,
        site: site.to_string(),
        checked_at: now.0,
        signature_sha256: facts.signature_sha256,
        trust_root,
        capsule,
    }
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
    }
}

pub(super) fn run_finished(capsule: &VerifiedCapsule, report: &RunReport) -> RunFinished {
    let stream = |s: &StreamSummary| StreamRef {
        size: s.size,
        sha256: s.sha256,
        truncated: s.truncated,
    };
    RunFinished {
        module_sha256: capsule.module_digest(),
        status: report.status.as_str().into(),
        usage: Some(RunUsage {
            code: report.code.describe(),
            fuel_used: report.fuel_used,
            peak_memory_bytes: report.peak_memory_bytes,
            wall_time_ms: millis(report.wall_time),
            stdout: stream(&report.stdout),
            stderr: stream(&report.stderr),
            memory_denials: report.memory_denials.clone(),
            evidence_refused: u64::from(report.evidence_refused),
            egress_denied: report.egress_denied.clone(),
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
        }),
        outcome: report.outcome.as_ref().map(|o| OutcomeRef {
            verdict: o.verdict.as_str().into(),
            summary: o.summary.clone(),
            findings: o
                .findings
                .iter()
                .map(|f| FindingRef {
                    code: f.code.clone(),
                    severity: f.severity.as_str().into(),
                    message: f.message.clone(),
                })
                .collect(),
        }),
        error: report.error.clone(),
    }
}

/// The `run-finished` of a capsule the sandbox could not start.
pub(super) fn not_started(capsule: &VerifiedCapsule, error: String) -> RunFinished {
    RunFinished {
        module_sha256: capsule.module_digest(),
        status: "not-started".into(),
        usage: None,
        outcome: None,
        error: Some(error),
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
