//! The remediation events (`docs/remediation.md` §6): a proposal and its
//! refusals, each approval as checked, the authorization, apply, verify,
//! rollback, notification and post-review. Plain data, like every event.

use super::*;

/// `proposal`: a sealed proposal, kept whole: the statement bytes the digest covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposalRecorded {
    /// SHA-256 of `statement`.
    pub digest: [u8; 32],
    /// The deterministic CBOR statement.
    pub statement: Vec<u8>,
    /// The tier derived for it.
    pub tier: String,
    /// The `run-finished` record of the run that proposed it.
    pub run_record: u64,
}

impl EventBody for ProposalRecorded {
    const NAME: &'static str = "proposal";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("digest", bytes(&self.digest)),
            ("statement", bytes(&self.statement)),
            ("tier", text(&self.tier)),
            ("run-record", uint(self.run_record)),
        ]
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        Ok(Self {
            digest: digest(b, "digest")?,
            statement: b.bytes("statement")?.to_vec(),
            tier: b.text("tier")?.to_string(),
            run_record: b.uint("run-record")?,
        })
    }
}

/// `proposal-refused`: a proposal the runner would not state, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposalRefused {
    /// Capsule name.
    pub capsule: String,
    /// Its version.
    pub version: String,
    /// Its kind.
    pub kind: String,
    /// The run's `run-finished` record, when the run finished before the refusal.
    pub run_record: Option<u64>,
    /// Size of the capsule's proposal item.
    pub item_size: u64,
    /// SHA-256 of the item.
    pub item_sha256: [u8; 32],
    /// Why (the refusal text).
    pub reason: String,
}

impl EventBody for ProposalRefused {
    const NAME: &'static str = "proposal-refused";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        let mut f = vec![
            ("capsule", text(&self.capsule)),
            ("version", text(&self.version)),
            ("kind", text(&self.kind)),
            ("item-size", uint(self.item_size)),
            ("item-sha256", bytes(&self.item_sha256)),
            ("reason", text(&self.reason)),
        ];
        if let Some(r) = self.run_record {
            f.push(("run-record", uint(r)));
        }
        f
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        Ok(Self {
            capsule: b.text("capsule")?.to_string(),
            version: b.text("version")?.to_string(),
            kind: b.text("kind")?.to_string(),
            run_record: optional(b, "run-record", |v| {
                crate::cbor::as_u64(v).ok_or_else(|| "`run-record` is not a number".to_string())
            })?,
            item_size: b.uint("item-size")?,
            item_sha256: digest(b, "item-sha256")?,
            reason: b.text("reason")?.to_string(),
        })
    }
}

/// `approval`: one approval as the quorum check judged it, with its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalChecked {
    /// The proposal digest it is for (as checked against the proposal).
    pub proposal: [u8; 32],
    /// The person it names.
    pub person: String,
    /// The key that signed it.
    pub key_id: [u8; 32],
    /// `approve`, `deny` or `break-glass`.
    pub decision: String,
    /// Whether it counted toward the quorum.
    pub counted: bool,
    /// Why not, when it did not.
    pub why_not: Option<String>,
    /// The COSE_Sign1 approval, so an offline verifier can check it again.
    pub approval: Vec<u8>,
}

impl EventBody for ApprovalChecked {
    const NAME: &'static str = "approval";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        let mut f = vec![
            ("proposal", bytes(&self.proposal)),
            ("person", text(&self.person)),
            ("key-id", bytes(&self.key_id)),
            ("decision", text(&self.decision)),
            ("counted", Value::Bool(self.counted)),
            ("approval", bytes(&self.approval)),
        ];
        if let Some(w) = &self.why_not {
            f.push(("why-not", text(w)));
        }
        f
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        Ok(Self {
            proposal: digest(b, "proposal")?,
            person: b.text("person")?.to_string(),
            key_id: digest(b, "key-id")?,
            decision: b.text("decision")?.to_string(),
            counted: boolean(b, "counted")?,
            why_not: optional(b, "why-not", text_of)?,
            approval: b.bytes("approval")?.to_vec(),
        })
    }
}

/// `authorization`: the quorum check passed; who authorized, at which tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationRecorded {
    /// The proposal digest.
    pub proposal: [u8; 32],
    /// The tier re-derived at authorization.
    pub tier: String,
    /// Distinct persons whose approvals counted.
    pub approvers: Vec<String>,
    /// Approvals the tier requires.
    pub required: u64,
    /// True when one person authorized alone by break-glass.
    pub break_glass: bool,
    /// Governance version in force.
    pub governance_version: u64,
    /// SHA-256 of the signed governance bundle in force.
    pub governance_sha256: [u8; 32],
    /// For break-glass: when a quorum post-review is due (seconds since the
    /// epoch: the authorization's time plus the governance's
    /// `break-glass-review-secs`); absent otherwise, and in records of older runners.
    pub review_due: Option<u64>,
}

impl EventBody for AuthorizationRecorded {
    const NAME: &'static str = "authorization";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("proposal", bytes(&self.proposal)),
            ("tier", text(&self.tier)),
            ("approvers", texts(&self.approvers)),
            ("required", uint(self.required)),
            ("break-glass", Value::Bool(self.break_glass)),
            ("governance-version", uint(self.governance_version)),
            ("governance-sha256", bytes(&self.governance_sha256)),
        ]
        .into_iter()
        .chain(self.review_due.map(|due| ("review-due", uint(due))))
        .collect()
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        let review_due = match b.get("review-due") {
            None => None,
            Some(_) => Some(b.uint("review-due")?),
        };
        Ok(Self {
            proposal: digest(b, "proposal")?,
            tier: b.text("tier")?.to_string(),
            approvers: list(b, "approvers", text_of)?,
            required: b.uint("required")?,
            break_glass: boolean(b, "break-glass")?,
            governance_version: b.uint("governance-version")?,
            governance_sha256: digest(b, "governance-sha256")?,
            review_due,
        })
    }
}

/// `apply-started`: the runner is about to change the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyStarted {
    /// The proposal digest.
    pub proposal: [u8; 32],
    /// The `authorization` record it applies under.
    pub authorization: u64,
}

impl EventBody for ApplyStarted {
    const NAME: &'static str = "apply-started";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("proposal", bytes(&self.proposal)),
            ("authorization", uint(self.authorization)),
        ]
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        Ok(Self {
            proposal: digest(b, "proposal")?,
            authorization: b.uint("authorization")?,
        })
    }
}

/// `applied`: how an apply ended — `applied`, `not-applied` or `drifted`
/// (`recovered` when found at the next start after a crash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The proposal digest.
    pub proposal: [u8; 32],
    /// Its `apply-started` record.
    pub apply_started: u64,
    /// `applied`, `not-applied` or `drifted`.
    pub result: String,
    /// True when resolved after a crash, from the target's digest.
    pub recovered: bool,
    /// What was found or done.
    pub detail: String,
}

impl EventBody for Applied {
    const NAME: &'static str = "applied";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("proposal", bytes(&self.proposal)),
            ("apply-started", uint(self.apply_started)),
            ("result", text(&self.result)),
            ("recovered", Value::Bool(self.recovered)),
            ("detail", text(&self.detail)),
        ]
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        Ok(Self {
            proposal: digest(b, "proposal")?,
            apply_started: b.uint("apply-started")?,
            result: b.text("result")?.to_string(),
            recovered: boolean(b, "recovered")?,
            detail: b.text("detail")?.to_string(),
        })
    }
}

/// `verify-result`: the verify plan's run after apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyResult {
    /// The proposal digest.
    pub proposal: [u8; 32],
    /// The verify run's `run-finished` record, when it ran.
    pub run_record: Option<u64>,
    /// The verdict (`pass`, `fail`, `error`) or how the run ended.
    pub verdict: String,
    /// True when the change held.
    pub held: bool,
}

impl EventBody for VerifyResult {
    const NAME: &'static str = "verify-result";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        let mut f = vec![
            ("proposal", bytes(&self.proposal)),
            ("verdict", text(&self.verdict)),
            ("held", Value::Bool(self.held)),
        ];
        if let Some(r) = self.run_record {
            f.push(("run-record", uint(r)));
        }
        f
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        Ok(Self {
            proposal: digest(b, "proposal")?,
            run_record: optional(b, "run-record", |v| {
                crate::cbor::as_u64(v).ok_or_else(|| "`run-record` is not a number".to_string())
            })?,
            verdict: b.text("verdict")?.to_string(),
            held: boolean(b, "held")?,
        })
    }
}

/// `rollback`: the pre-authorized rollback after a failed verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolledBack {
    /// The proposal digest.
    pub proposal: [u8; 32],
    /// `rolled-back` or `failed`.
    pub result: String,
    /// What was done or went wrong.
    pub detail: String,
}

impl EventBody for RolledBack {
    const NAME: &'static str = "rollback";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("proposal", bytes(&self.proposal)),
            ("result", text(&self.result)),
            ("detail", text(&self.detail)),
        ]
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        Ok(Self {
            proposal: digest(b, "proposal")?,
            result: b.text("result")?.to_string(),
            detail: b.text("detail")?.to_string(),
        })
    }
}

/// `notify`: a notification posted to a tier's webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notified {
    /// The proposal digest.
    pub proposal: [u8; 32],
    /// The webhook URL.
    pub url: String,
    /// SHA-256 of the JSON body posted.
    pub body_sha256: [u8; 32],
    /// The HTTP status, when a response came.
    pub status: Option<u64>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

impl EventBody for Notified {
    const NAME: &'static str = "notify";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        let mut f = vec![
            ("proposal", bytes(&self.proposal)),
            ("url", text(&self.url)),
            ("body-sha256", bytes(&self.body_sha256)),
        ];
        if let Some(s) = self.status {
            f.push(("status", uint(s)));
        }
        if let Some(e) = &self.error {
            f.push(("error", text(e)));
        }
        f
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        Ok(Self {
            proposal: digest(b, "proposal")?,
            url: b.text("url")?.to_string(),
            body_sha256: digest(b, "body-sha256")?,
            status: optional(b, "status", |v| {
                crate::cbor::as_u64(v).ok_or_else(|| "`status` is not a number".to_string())
            })?,
            error: optional(b, "error", text_of)?,
        })
    }
}

/// `post-review`: approvals recorded after a break-glass apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostReview {
    /// The proposal digest.
    pub proposal: [u8; 32],
    /// Distinct persons whose review approvals counted.
    pub reviewers: Vec<String>,
    /// True when they meet the tier's quorum.
    pub complete: bool,
}

impl EventBody for PostReview {
    const NAME: &'static str = "post-review";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("proposal", bytes(&self.proposal)),
            ("reviewers", texts(&self.reviewers)),
            ("complete", Value::Bool(self.complete)),
        ]
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        Ok(Self {
            proposal: digest(b, "proposal")?,
            reviewers: list(b, "reviewers", text_of)?,
            complete: boolean(b, "complete")?,
        })
    }
}
