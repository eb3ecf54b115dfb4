//! `edge-runner apply`: authorize a proposal with signed approvals and apply
//! it — once, exactly as approved, then verify it held (or roll it back).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::run::runner_key;
use super::{Exit, read_raw, warn_if_demo};
use crate::custody::KeyPlacement;
use crate::evidence::{EvidenceError, EvidenceLog};
use crate::fsio::read_bounded;
use crate::governance::{Approval, load_installed};
use crate::remediation::Limits;
use crate::remediation::apply::{self, ApplyContext, ApplyError};
use crate::sandbox;
use crate::session::Session;
use crate::site::SitePolicy;
use crate::timestamp::Timestamp;
use crate::trust::store;

/// Largest approval file read.
const MAX_APPROVAL_BYTES: u64 = 64 * 1024;

#[derive(Debug, Args)]
pub(super) struct ApplyArgs {
    /// The proposal: its id (or a unique prefix) in the evidence directory, or its file.
    #[arg(long)]
    proposal: String,
    /// Signed approvals (`edge-runner approve` writes them), one file each.
    #[arg(long, num_args = 0..)]
    approvals: Vec<PathBuf>,
    /// The trust store; the governance in force is installed beside it.
    #[arg(long)]
    trust: PathBuf,
    /// The site policy: its [[apply]] entries say where the runner may write.
    #[arg(long, env = "EDGE_RUNNER_SITE_POLICY")]
    site_policy: PathBuf,
    /// Evidence directory of the run that proposed it.
    #[arg(long)]
    evidence: PathBuf,
    /// The verify plan's capsule (the signed capsule the proposal names).
    #[arg(long)]
    verify_capsule: PathBuf,
    /// Its detached signature file, if it has one.
    #[arg(long)]
    verify_signature: Option<PathBuf>,
    /// The runner's private key (as for `run`).
    #[arg(long, env = "EDGE_RUNNER_KEY")]
    runner_key: Option<PathBuf>,
    /// Allow a runner key inside the evidence directory (unsafe; experiments only).
    #[arg(long)]
    unsafe_key_in_evidence_dir: bool,
}

/// The exit code for an apply error.
pub(super) fn apply_exit(err: &ApplyError) -> Exit {
    match err {
        ApplyError::NotAuthorized { .. }
        | ApplyError::AlreadyApplied { .. }
        | ApplyError::NotProposedHere { .. }
        | ApplyError::Symlink { .. }
        | ApplyError::NotWritable { .. }
        | ApplyError::Egress { .. } => Exit::NotAuthorized,
        ApplyError::VerifyFailedRolledBack { .. } | ApplyError::RollbackFailed { .. } => {
            Exit::VerifyFailedRolledBack
        }
        ApplyError::Drifted { .. } | ApplyError::RecoveredDrift { .. } => Exit::TargetDrifted,
        _ => Exit::Error,
    }
}

impl ApplyArgs {
    pub(super) fn execute(self) -> Result<Exit> {
        let policy = SitePolicy::load(&self.site_policy)?;
        let proposal = super::proposal::find(&self.proposal, Some(&self.evidence))?;
        let mut approvals = Vec::new();
        for path in &self.approvals {
            let bytes = read_bounded(path, MAX_APPROVAL_BYTES, "approval")?;
            approvals.push(
                Approval::parse(&bytes, &path.display().to_string())
                    .with_context(|| format!("approval {}", path.display()))?,
            );
        }
        let verify_capsule = read_raw(&self.verify_capsule, self.verify_signature.as_deref())?;
        if !self.evidence.is_dir() {
            bail!(
                "--evidence {} is not a directory; pass the evidence directory of the run that proposed it",
                self.evidence.display()
            );
        }
        let placement = if self.unsafe_key_in_evidence_dir {
            KeyPlacement::UnsafeInsideEvidenceDir
        } else {
            KeyPlacement::Separate
        };
        let key = runner_key(self.runner_key.as_deref(), &self.evidence, placement)?;
        let log = match EvidenceLog::open(&self.evidence, key) {
            Ok(log) => log,
            Err(err @ (EvidenceError::Corrupt { .. } | EvidenceError::BehindCheckpoint { .. })) => {
                eprintln!("INVALID: --evidence {}: {err}", self.evidence.display());
                return Ok(Exit::EvidenceInvalid);
            }
            Err(err) => return Err(err.into()),
        };
        let mut session = Session::with_policy(log, sandbox::Limits::default(), policy)?;
        if let Some(note) = session.recovered() {
            eprintln!("{note}");
            if note.starts_with("ALARM") {
                return Ok(Exit::TargetDrifted);
            }
        }
        let root = store::load(&self.trust, Timestamp::now())?;
        warn_if_demo(&root);
        let now = Timestamp::now();
        let gov = load_installed(&self.trust, &root, now)?.with_context(|| {
            format!(
                "no governance is installed beside {}; nothing can be authorized without one (`edge-runner governance install`)",
                self.trust.display()
            )
        })?;
        if let Err(e) = crate::remediation::record_governance(&mut session, &gov) {
            eprintln!("REFUSED: {e}");
            return Ok(Exit::NotAuthorized);
        }
        let webhooks = gov.rule(proposal.tier()).webhooks.clone();
        let id = proposal.id();
        let outcome =
            apply::authorize(&mut session, &gov, proposal, &approvals, now).and_then(|auth| {
                apply::apply(
                    ApplyContext {
                        session: &mut session,
                        root: &root,
                        verify_capsule,
                        limits: Limits::default(),
                        webhooks,
                    },
                    auth,
                )
            });
        match outcome {
            Ok(report) => {
                say!(
                    "APPLIED proposal {} at tier {} (authorized by {}); verify: {} — the change held",
                    report.proposal,
                    report.tier.as_str(),
                    if report.approvers.is_empty() {
                        "no one: the tier needs no approval".to_string()
                    } else {
                        report.approvers.join(", ")
                    },
                    report.verdict
                )?;
                for (url, status) in &report.notified {
                    say!("notified {url}: {status}")?;
                }
                say!(
                    "evidence: {} (applied at record {})",
                    session.log().path().display(),
                    report.applied_record
                )?;
                Ok(Exit::Ok)
            }
            Err(ApplyError::Session(e)) => Err(e.into()),
            Err(e) => {
                let exit = apply_exit(&e);
                let word = match exit {
                    Exit::NotAuthorized => "NOT AUTHORIZED",
                    Exit::VerifyFailedRolledBack => "ROLLED BACK",
                    Exit::TargetDrifted => "DRIFTED",
                    _ => "FAILED",
                };
                eprintln!("{word}: proposal {id}: {e}");
                eprintln!("(recorded in {})", session.log().path().display());
                Ok(exit)
            }
        }
    }
}

/// After a run that proposed: states each proposal (staged, tiered, sealed,
/// recorded, its file written) or records why not, and prints the outcome.
pub(super) fn prepare_proposals(
    session: &mut Session,
    record: &crate::session::RunRecord,
    input: &[u8],
    trust: &std::path::Path,
    root: &crate::trust::TrustRoot,
    capsules: &std::path::Path,
    proposer: &str,
) -> Result<()> {
    let (gov, origin) = match load_installed(trust, root, Timestamp::now()) {
        Ok(gov) => (gov, format!("beside the trust store {}", trust.display())),
        Err(e) => (
            None,
            format!(
                "the governance beside {} cannot be used: {e}",
                trust.display()
            ),
        ),
    };
    let outcomes = crate::remediation::prepare_run(
        session,
        record,
        input,
        &crate::remediation::Prepare {
            governance: gov.as_ref(),
            governance_origin: &origin,
            root,
            capsules,
            proposer,
            limits: Limits::default(),
        },
    )?;
    for outcome in outcomes {
        match outcome {
            Ok(p) => {
                say!(
                    "PROPOSED {} at tier {}: {}",
                    p.id(),
                    p.tier().as_str(),
                    crate::remediation::proposal_path(session.log().dir(), &p.digest()).display()
                )?;
                say!(
                    "  review: edge-runner proposal show {} --evidence {}",
                    &p.id()[..16],
                    session.log().dir().display()
                )?;
            }
            Err(e) => say!("PROPOSAL REFUSED: {e}")?,
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub(super) struct ReviewArgs {
    /// The proposal id (or a unique prefix) in the evidence directory, or its file.
    proposal: String,
    /// Signed approvals of the reviewers, one file each.
    #[arg(long, num_args = 1..)]
    approvals: Vec<PathBuf>,
    /// The trust store; the governance in force is installed beside it.
    #[arg(long)]
    trust: PathBuf,
    /// The site policy.
    #[arg(long, env = "EDGE_RUNNER_SITE_POLICY")]
    site_policy: PathBuf,
    /// Evidence directory of the apply.
    #[arg(long)]
    evidence: PathBuf,
    /// The runner's private key (as for `run`).
    #[arg(long, env = "EDGE_RUNNER_KEY")]
    runner_key: Option<PathBuf>,
}

impl ReviewArgs {
    pub(super) fn execute(self) -> Result<Exit> {
        let policy = SitePolicy::load(&self.site_policy)?;
        let proposal = super::proposal::find(&self.proposal, Some(&self.evidence))?;
        let mut approvals = Vec::new();
        for path in &self.approvals {
            let bytes = read_bounded(path, MAX_APPROVAL_BYTES, "approval")?;
            approvals.push(Approval::parse(&bytes, &path.display().to_string())?);
        }
        let key = runner_key(
            self.runner_key.as_deref(),
            &self.evidence,
            KeyPlacement::Separate,
        )?;
        let log = EvidenceLog::open(&self.evidence, key)?;
        let mut session = Session::with_policy(log, sandbox::Limits::default(), policy)?;
        let root = store::load(&self.trust, Timestamp::now())?;
        warn_if_demo(&root);
        let now = Timestamp::now();
        let gov = load_installed(&self.trust, &root, now)?.with_context(|| {
            format!("no governance is installed beside {}", self.trust.display())
        })?;
        let id = proposal.id();
        match apply::post_review(&mut session, &gov, proposal, &approvals, now) {
            Ok(true) => {
                say!("POST-REVIEWED proposal {id}: the break-glass apply is reviewed by a quorum")?;
                Ok(Exit::Ok)
            }
            Ok(false) => {
                say!("proposal {id}: review recorded, but it is not a quorum yet")?;
                Ok(Exit::NotAuthorized)
            }
            Err(ApplyError::Session(e)) => Err(e.into()),
            Err(e) => {
                eprintln!("NOT AUTHORIZED: {e}");
                Ok(apply_exit(&e))
            }
        }
    }
}
