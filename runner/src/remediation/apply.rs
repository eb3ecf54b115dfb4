//! Apply: the runner changes the system, exactly as approved, once.
//!
//! Takes only an [`Authorized`] proposal (which only
//! [`crate::governance::authorize`] builds). Files are changed by
//! compare-and-swap on the pre-image digest, opened without following
//! symbolic links from the site's directory down (`O_NOFOLLOW` at every
//! component), written to a temporary file in the same directory, fsynced,
//! renamed over the target, and the directory fsynced — and only beneath a
//! site-policy `[[apply]]` entry whose `[[directory]]` is read-write. An HTTP
//! action is sent as approved, through the site's egress rules. Then the
//! verify plan runs; if the change did not hold, the pre-authorized rollback is
//! applied. Every step is on the record before the next starts, and a crash
//! between `apply-started` and `applied` is resolved by [`recover`] at the
//! next start. No capsule holds write access at any point.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::fs::{AtFlags, CWD, Mode, OFlags};
use sha2::{Digest, Sha256};

use super::{Action, FileAction, HttpRequest, Limits, Proposal, patch};
use crate::capsule::{Access, RawCapsule};
use crate::evidence::EvidenceLog;
use crate::evidence::events::{
    Applied, ApplyStarted, ApprovalChecked, AuthorizationRecorded, Event, Notified, RolledBack,
    VerifyResult,
};
use crate::governance::{self, Approval, Authorized, Governance, Tier};
use crate::sandbox::Verdict;
use crate::session::{Session, SessionError};
use crate::site::SitePolicy;
use crate::timestamp::Timestamp;
use crate::trust::TrustRoot;

/// Why an apply was refused or did not hold.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The quorum check refused; each approval's verdict is on the record.
    #[error("proposal {proposal} is not authorized: {detail}")]
    NotAuthorized {
        /// Proposal id.
        proposal: String,
        /// Why (governance's refusal).
        detail: String,
    },
    /// The proposal is not recorded in this log.
    #[error(
        "proposal {proposal} is not recorded in this evidence log; apply it with the evidence directory of the run that proposed it"
    )]
    NotProposedHere {
        /// Proposal id.
        proposal: String,
    },
    /// Replay: the proposal was applied before.
    #[error(
        "proposal {proposal} was already applied (apply-started at record {record}); a proposal applies once — propose again for a new change"
    )]
    AlreadyApplied {
        /// Proposal id.
        proposal: String,
        /// Its first `apply-started` record.
        record: u64,
    },
    /// The target is not what the proposal was made against.
    #[error(
        "target {path} drifted since the proposal: its SHA-256 is {found}, the proposal was made against {expected}; nothing was written — propose again against the current file"
    )]
    Drifted {
        /// The path.
        path: String,
        /// Pre-image digest in the proposal.
        expected: String,
        /// What is there now.
        found: String,
    },
    /// A symbolic link where a file or directory was expected.
    #[error(
        "target {path}: {what} is a symbolic link (or not a directory); the runner writes only through real directories to regular files, and wrote nothing"
    )]
    Symlink {
        /// The path.
        path: String,
        /// Which component.
        what: String,
    },
    /// Outside what the site lets the runner change.
    #[error("target {path} is outside a read-write apply grant: {detail}")]
    NotWritable {
        /// The path.
        path: String,
        /// What is missing.
        detail: String,
    },
    /// An HTTP action the site's egress rules do not allow now.
    #[error("HTTP action {method} {url} is outside the site's egress: {detail}")]
    Egress {
        /// Method.
        method: String,
        /// URL.
        url: String,
        /// Why.
        detail: String,
    },
    /// The verify plan did not pass; the rollback was applied.
    #[error(
        "the change to proposal {proposal} did not hold: verify {verdict}; the pre-authorized rollback was applied and recorded"
    )]
    VerifyFailedRolledBack {
        /// Proposal id.
        proposal: String,
        /// What verify said.
        verdict: String,
    },
    /// The verify plan did not pass and the rollback could not restore the pre-image.
    #[error(
        "the change to proposal {proposal} did not hold (verify {verdict}) and rolling back failed: {detail}; the target needs a person now"
    )]
    RollbackFailed {
        /// Proposal id.
        proposal: String,
        /// What verify said.
        verdict: String,
        /// Why the rollback failed.
        detail: String,
    },
    /// After a crash mid-apply, the target is neither pre- nor post-image.
    #[error(
        "ALARM: the apply of proposal {proposal} (record {record}) was interrupted and its target is now neither the pre-image nor the post-image: {detail}; recorded as drifted — a person must inspect it"
    )]
    RecoveredDrift {
        /// Proposal id.
        proposal: String,
        /// Its `apply-started` record.
        record: u64,
        /// What was found.
        detail: String,
    },
    /// The verify capsule given is not the one the plan names.
    #[error("verify capsule: {0}")]
    VerifyCapsule(String),
    /// Writing failed.
    #[error("writing {path}: {detail}")]
    Io {
        /// The path.
        path: String,
        /// What failed.
        detail: String,
    },
    /// A session step failed (evidence, trust, sandbox).
    #[error(transparent)]
    Session(#[from] SessionError),
}

impl From<crate::evidence::EvidenceError> for ApplyError {
    fn from(e: crate::evidence::EvidenceError) -> Self {
        ApplyError::Session(SessionError::Evidence(e))
    }
}

/// An authorized proposal and its `authorization` record.
pub struct Authorization {
    authorized: Authorized<Proposal>,
    record: u64,
}

impl Authorization {
    /// The authorized proposal.
    pub fn authorized(&self) -> &Authorized<Proposal> {
        &self.authorized
    }

    /// The `authorization` record.
    pub fn record(&self) -> u64 {
        self.record
    }
}

/// Runs the quorum check for `proposal` under `gov` at `now`, records each
/// approval's verdict (with its bytes) and, if it passes, the authorization.
pub fn authorize(
    session: &mut Session,
    gov: &Governance,
    proposal: Proposal,
    approvals: &[Approval],
    now: Timestamp,
) -> Result<Authorization, ApplyError> {
    let id = proposal.id();
    let digest = proposal.digest();
    match session.log().proposal_mark(&digest) {
        None => return Err(ApplyError::NotProposedHere { proposal: id }),
        Some(mark) => {
            if let Some(record) = mark.started {
                return Err(ApplyError::AlreadyApplied {
                    proposal: id,
                    record,
                });
            }
        }
    }
    let bytes_of = |person: &str, key: &crate::keys::KeyId| -> Vec<u8> {
        approvals
            .iter()
            .find(|a| a.person() == person && a.key_id() == *key)
            .map(|a| a.bytes().to_vec())
            .unwrap_or_default()
    };
    // How each approval was judged, recorded whether or not it authorizes.
    let checked = |v: &governance::ApprovalVerdict| ApprovalChecked {
        proposal: digest,
        person: v.person.clone(),
        key_id: v.key.0,
        decision: v.decision.as_str().into(),
        counted: v.counted,
        why_not: v.why_not.clone(),
        approval: bytes_of(&v.person, &v.key),
    };
    match governance::authorize(gov, proposal, approvals, now) {
        Ok(authorized) => {
            for v in authorized.verdicts() {
                session.record(checked(v))?;
            }
            let tier = authorized.tier();
            let signed = session.record(AuthorizationRecorded {
                proposal: digest,
                tier: tier.as_str().into(),
                approvers: authorized.approvers().to_vec(),
                required: u64::from(gov.rule(tier).approvals),
                break_glass: authorized.break_glass(),
                governance_version: gov.version(),
                governance_sha256: gov.digest(),
                review_due: authorized
                    .break_glass()
                    .then(|| now.0 + gov.break_glass_review_secs()),
            })?;
            Ok(Authorization {
                authorized,
                record: signed.record.seq,
            })
        }
        Err(refusal) => {
            for v in &refusal.verdicts {
                session.record(checked(v))?;
            }
            Err(ApplyError::NotAuthorized {
                proposal: id,
                detail: refusal.error.to_string(),
            })
        }
    }
}

/// Records a post-review of a break-glass apply: the approvals are judged as
/// for an authorization (break-glass ones do not count here), each verdict is
/// recorded, and a `post-review` says whether they meet the tier's quorum.
/// Returns whether the review is complete.
pub fn post_review(
    session: &mut Session,
    gov: &Governance,
    proposal: Proposal,
    approvals: &[Approval],
    now: Timestamp,
) -> Result<bool, ApplyError> {
    let id = proposal.id();
    let digest = proposal.digest();
    match session.log().proposal_mark(&digest) {
        Some(mark) if mark.awaiting_review => {}
        Some(_) => {
            return Err(ApplyError::NotAuthorized {
                proposal: id,
                detail: "it was not authorized by break-glass, so there is nothing to post-review"
                    .into(),
            });
        }
        None => return Err(ApplyError::NotProposedHere { proposal: id }),
    }
    let reviews: Vec<Approval> = approvals
        .iter()
        .filter(|a| a.statement().decision != governance::ApprovalDecision::BreakGlass)
        .cloned()
        .collect();
    let (verdicts, outcome) = match governance::authorize(gov, proposal, &reviews, now) {
        Ok(a) => (
            a.verdicts().to_vec(),
            Ok((a.approvers().to_vec(), !a.break_glass())),
        ),
        Err(r) => (r.verdicts, Err(r.error.to_string())),
    };
    for v in &verdicts {
        session.record(ApprovalChecked {
            proposal: digest,
            person: v.person.clone(),
            key_id: v.key.0,
            decision: v.decision.as_str().into(),
            counted: v.counted,
            why_not: v.why_not.clone(),
            approval: reviews
                .iter()
                .find(|a| a.person() == v.person && a.key_id() == v.key)
                .map(|a| a.bytes().to_vec())
                .unwrap_or_default(),
        })?;
    }
    let (reviewers, complete) = match &outcome {
        Ok((who, complete)) => (who.clone(), *complete),
        Err(_) => (Vec::new(), false),
    };
    session.record(crate::evidence::events::PostReview {
        proposal: digest,
        reviewers,
        complete,
    })?;
    match outcome {
        Ok(_) => Ok(complete),
        Err(detail) => Err(ApplyError::NotAuthorized {
            proposal: id,
            detail: format!("the post-review does not meet the tier's quorum: {detail}"),
        }),
    }
}

/// What an apply needs besides the authorization.
pub struct ApplyContext<'a> {
    /// The session (its log holds the proposal and the authorization).
    pub session: &'a mut Session,
    /// The trust root the verify capsule is verified against.
    pub root: &'a TrustRoot,
    /// The verify plan's capsule file.
    pub verify_capsule: RawCapsule,
    /// Bounds.
    pub limits: Limits,
    /// Webhooks to notify after applying (the tier's; notify-and-proceed only).
    pub webhooks: Vec<String>,
}

/// How an apply ended well.
#[derive(Debug)]
pub struct ApplyReport {
    /// Proposal id.
    pub proposal: String,
    /// The tier it was authorized at.
    pub tier: Tier,
    /// Who authorized.
    pub approvers: Vec<String>,
    /// The `applied` record.
    pub applied_record: u64,
    /// The verify run's verdict.
    pub verdict: String,
    /// Webhooks notified (url, status or error).
    pub notified: Vec<(String, String)>,
}

/// Applies an authorized proposal once, verifies it, and rolls back if it did not hold.
pub fn apply(cx: ApplyContext<'_>, auth: Authorization) -> Result<ApplyReport, ApplyError> {
    let ApplyContext {
        session,
        root,
        verify_capsule,
        limits,
        webhooks,
    } = cx;
    let Authorization { authorized, record } = auth;
    let proposal = authorized.proposal();
    let id = proposal.id();
    let digest = proposal.digest();
    if let Some(mark) = session.log().proposal_mark(&digest)
        && let Some(first) = mark.started
    {
        return Err(ApplyError::AlreadyApplied {
            proposal: id,
            record: first,
        });
    }
    let policy = session.policy().clone();
    // The verify capsule is checked before anything changes.
    let module: [u8; 32] = verify_capsule_module(&verify_capsule)?;
    let plan = proposal.verify_plan();
    if module != plan.module_sha256 {
        return Err(ApplyError::VerifyCapsule(format!(
            "the capsule given has module sha256 {}, the verify plan names `{}` {} with module {}; pass that capsule",
            hex::encode(module),
            plan.capsule,
            plan.version,
            hex::encode(plan.module_sha256)
        )));
    }
    let started = session
        .record(ApplyStarted {
            proposal: digest,
            authorization: record,
        })?
        .record
        .seq;
    // Every action is checked before any is written.
    let mut checks = Vec::new();
    for action in proposal.actions() {
        let checked = match action {
            Action::File(f) => preflight_file(&policy, f, &limits).map(Checked::File),
            Action::Http(h) => preflight_http(&policy, &h.request).map(Checked::Http),
        };
        match checked {
            Ok(c) => checks.push(c),
            Err(e) => {
                let result = if matches!(e, ApplyError::Drifted { .. }) {
                    "drifted"
                } else {
                    "not-applied"
                };
                session.record(Applied {
                    proposal: digest,
                    apply_started: started,
                    result: result.into(),
                    recovered: false,
                    detail: e.to_string(),
                })?;
                return Err(e);
            }
        }
    }
    let mut done = 0usize;
    let mut failure = None;
    for (action, check) in proposal.actions().iter().zip(&checks) {
        let step = match (action, check) {
            (Action::File(f), Checked::File(target)) => write_change(
                target,
                f,
                f.pre_sha256,
                &f.diff,
                f.post_sha256,
                &limits,
                "after-rename",
            ),
            (Action::Http(h), Checked::Http(grant)) => send(&h.request, grant).map(|_| ()),
            _ => Ok(()),
        };
        match step {
            Ok(()) => done += 1,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if let Some(e) = failure {
        let undone = undo(proposal, &checks[..done], &limits);
        session.record(Applied {
            proposal: digest,
            apply_started: started,
            result: "not-applied".into(),
            recovered: false,
            detail: format!("{e}; {undone}"),
        })?;
        return Err(e);
    }
    let applied_record = session
        .record(Applied {
            proposal: digest,
            apply_started: started,
            result: "applied".into(),
            recovered: false,
            detail: format!("{} action(s) applied", proposal.actions().len()),
        })?
        .record
        .seq;

    // The verify plan: the capsule that found the problem runs again; it must pass now.
    let (verdict, run_record) = run_verify(session, root, verify_capsule, &plan.input);
    let held = verdict == Verdict::Pass.as_str();
    session.record(VerifyResult {
        proposal: digest,
        run_record,
        verdict: verdict.clone(),
        held,
    })?;
    if !held {
        let result = if proposal.reversible() {
            Ok(undo(proposal, &checks, &limits))
        } else {
            Err("the change has no rollback (it was approved as irreversible)".to_string())
        };
        let (ok, detail) = match &result {
            Ok(text) if !text.contains("failed") => (true, text.clone()),
            Ok(text) => (false, text.clone()),
            Err(text) => (false, text.clone()),
        };
        session.record(RolledBack {
            proposal: digest,
            result: if ok { "rolled-back" } else { "failed" }.into(),
            detail: detail.clone(),
        })?;
        return Err(if ok {
            ApplyError::VerifyFailedRolledBack {
                proposal: id,
                verdict,
            }
        } else {
            ApplyError::RollbackFailed {
                proposal: id,
                verdict,
                detail,
            }
        });
    }
    let mut notified = Vec::new();
    if authorized.tier() == Tier::NotifyAndProceed {
        for url in &webhooks {
            let body = serde_json::json!({
                "event": "edge-runner.applied",
                "proposal": id,
                "tier": authorized.tier().as_str(),
                "site": proposal.draft().site,
                "actions": proposal.actions().iter().map(Action::describe).collect::<Vec<_>>(),
                "rationale": proposal.rationale(),
                "verify": verdict,
                "applied-record": applied_record,
            })
            .to_string()
            .into_bytes();
            let request = HttpRequest {
                method: "POST".into(),
                url: url.clone(),
                headers: vec![("content-type".into(), "application/json".into())],
                body: body.clone(),
            };
            let outcome = preflight_http(&policy, &request).and_then(|g| send(&request, &g));
            let (status, error) = match &outcome {
                Ok(s) => (Some(u64::from(*s)), None),
                Err(e) => (None, Some(e.to_string())),
            };
            session.record(Notified {
                proposal: digest,
                url: url.clone(),
                body_sha256: Sha256::digest(&body).into(),
                status,
                error: error.clone(),
            })?;
            notified.push((
                url.clone(),
                status.map_or_else(|| error.unwrap_or_default(), |s| s.to_string()),
            ));
        }
    }
    Ok(ApplyReport {
        proposal: id,
        tier: authorized.tier(),
        approvers: authorized.approvers().to_vec(),
        applied_record,
        verdict,
        notified,
    })
}

fn verify_capsule_module(capsule: &RawCapsule) -> Result<[u8; 32], ApplyError> {
    let checked = capsule
        .clone()
        .check()
        .map_err(|e| ApplyError::VerifyCapsule(e.to_string()))?;
    Ok(checked.module_digest())
}

/// Runs the verify capsule (verified in this session) on `input`; its verdict and record.
fn run_verify(
    session: &mut Session,
    root: &TrustRoot,
    capsule: RawCapsule,
    input: &[u8],
) -> (String, Option<u64>) {
    let admitted = match session.verify(capsule, root) {
        Ok(a) => a,
        Err(e) => return (format!("refused ({e})"), None),
    };
    match session.run(admitted, input) {
        Ok(run) => {
            let verdict = run.report.outcome.as_ref().map_or_else(
                || run.report.status.as_str().to_string(),
                |o| o.verdict.as_str().to_string(),
            );
            (verdict, Some(session.log().len().saturating_sub(1)))
        }
        Err(e) => (
            format!("did not run ({e})"),
            Some(session.log().len().saturating_sub(1)),
        ),
    }
}

/// A checked action, ready to write or send.
enum Checked {
    File(Target),
    Http(crate::sandbox::EgressGrant),
}

/// A file target opened safely: its directory (reached without following a
/// symbolic link below the site's directory) and its name in it.
pub(crate) struct Target {
    dir: OwnedFd,
    name: String,
    display: String,
}

fn io_err(path: &str) -> impl Fn(std::io::Error) -> ApplyError + '_ {
    move |e| ApplyError::Io {
        path: path.to_string(),
        detail: e.to_string(),
    }
}

/// Opens the directory of `action`'s target, refusing anything the site does
/// not grant for apply and any symbolic link below the site's directory.
pub(crate) fn locate(site: &SitePolicy, action: &FileAction) -> Result<Target, ApplyError> {
    let path = action.path.to_string();
    let not_writable = |detail: String| ApplyError::NotWritable {
        path: path.clone(),
        detail,
    };
    if site.apply_for(&action.path).is_none() {
        let granted: Vec<String> = site.apply.iter().map(ToString::to_string).collect();
        return Err(not_writable(format!(
            "site `{}` grants apply beneath {} (site-policy.toml [[apply]]); add an [[apply]] entry for its directory to let the runner change it",
            site.site,
            if granted.is_empty() {
                "nothing".to_string()
            } else {
                granted.join(", ")
            }
        )));
    }
    let dir = site
        .directory_for(&action.path)
        .ok_or_else(|| not_writable(format!("site `{}` maps no directory above it", site.site)))?;
    if dir.access != Access::ReadWrite {
        return Err(not_writable(format!(
            "site `{}` maps {} {}, and apply needs read-write",
            site.site, dir.path, dir.access
        )));
    }
    let below = action.path.as_str()[dir.path.as_str().len()..].trim_start_matches('/');
    let host = dir.host.join(below);
    if host != action.host {
        return Err(not_writable(format!(
            "the site now maps it to {}, and the proposal was made for {}",
            host.display(),
            action.host.display()
        )));
    }
    let mut parts: Vec<&str> = below.split('/').filter(|p| !p.is_empty()).collect();
    let name = parts
        .pop()
        .ok_or_else(|| not_writable("it names the granted directory itself, not a file".into()))?;
    let mut fd = rustix::fs::openat(
        CWD,
        &dir.host,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err(&path)(e.into()))?;
    let mut walked = dir.path.to_string();
    for part in parts {
        walked = format!("{}/{part}", walked.trim_end_matches('/'));
        fd = rustix::fs::openat(
            &fd,
            part,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => ApplyError::Symlink {
                path: path.clone(),
                what: format!("parent directory {walked}"),
            },
            e => io_err(&path)(e.into()),
        })?;
    }
    Ok(Target {
        dir: fd,
        name: name.to_string(),
        display: path,
    })
}

/// Reads the target (not following a symbolic link), bounded; `None` when it does not exist.
fn read_target(t: &Target, limits: &Limits) -> Result<(Vec<u8>, u32), ApplyError> {
    let fd = rustix::fs::openat(
        &t.dir,
        t.name.as_str(),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP => ApplyError::Symlink {
            path: t.display.clone(),
            what: "the target file".into(),
        },
        e => io_err(&t.display)(e.into()),
    })?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| io_err(&t.display)(e.into()))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(ApplyError::Symlink {
            path: t.display.clone(),
            what: "the target (not a regular file)".into(),
        });
    }
    let mut data = Vec::new();
    std::fs::File::from(fd)
        .take(limits.max_target_bytes + 1)
        .read_to_end(&mut data)
        .map_err(io_err(&t.display))?;
    if data.len() as u64 > limits.max_target_bytes {
        return Err(ApplyError::Io {
            path: t.display.clone(),
            detail: format!(
                "it is over {} bytes (remediation::Limits::max_target_bytes)",
                limits.max_target_bytes
            ),
        });
    }
    Ok((data, stat.st_mode & 0o7777))
}

/// The current SHA-256 of the target, reached safely.
pub fn current_digest(
    site: &SitePolicy,
    action: &FileAction,
    limits: &Limits,
) -> Result<[u8; 32], ApplyError> {
    let t = locate(site, action)?;
    let (data, _) = read_target(&t, limits)?;
    Ok(Sha256::digest(&data).into())
}

/// Checks a file action's target as apply would, writing nothing: inside a
/// read-write `[[apply]]` grant, no symbolic link from the site's directory
/// down, a regular file whose digest is the proposal's pre-image.
pub fn check_target(
    site: &SitePolicy,
    action: &FileAction,
    limits: &Limits,
) -> Result<(), ApplyError> {
    preflight_file(site, action, limits).map(|_| ())
}

fn preflight_file(
    site: &SitePolicy,
    action: &FileAction,
    limits: &Limits,
) -> Result<Target, ApplyError> {
    let t = locate(site, action)?;
    let (data, _) = read_target(&t, limits)?;
    let found: [u8; 32] = Sha256::digest(&data).into();
    if found != action.pre_sha256 {
        return Err(ApplyError::Drifted {
            path: t.display.clone(),
            expected: hex::encode(action.pre_sha256),
            found: hex::encode(found),
        });
    }
    Ok(t)
}

fn preflight_http(
    site: &SitePolicy,
    request: &HttpRequest,
) -> Result<crate::sandbox::EgressGrant, ApplyError> {
    let refuse = |detail: String| ApplyError::Egress {
        method: request.method.clone(),
        url: request.url.clone(),
        detail,
    };
    let (dest, _) = request.destination().map_err(refuse)?;
    crate::sandbox::egress_grant(&dest, site).map_err(refuse)
}

fn send(request: &HttpRequest, grant: &crate::sandbox::EgressGrant) -> Result<u16, ApplyError> {
    let refuse = |detail: String| ApplyError::Egress {
        method: request.method.clone(),
        url: request.url.clone(),
        detail,
    };
    let (_, tls) = request.destination().map_err(refuse)?;
    let uri: http::Uri = request
        .url
        .parse()
        .map_err(|e: http::uri::InvalidUri| refuse(e.to_string()))?;
    let (status, _) = crate::sandbox::send_exact(
        grant,
        tls,
        &request.method,
        &uri,
        &request.headers,
        request.body.clone(),
        Duration::from_secs(30),
    )
    .map_err(|e| ApplyError::Io {
        path: request.url.clone(),
        detail: e,
    })?;
    if !(200..300).contains(&status) {
        return Err(ApplyError::Io {
            path: request.url.clone(),
            detail: format!("the server answered {status}"),
        });
    }
    Ok(status)
}

/// Compare-and-swap: if the target's digest is `from`, replaces it with
/// `diff` applied (which must give `to`): temporary file in the same
/// directory, fsync, rename, fsync of the directory.
fn write_change(
    t: &Target,
    action: &FileAction,
    from: [u8; 32],
    diff: &str,
    to: [u8; 32],
    limits: &Limits,
    hook: &str,
) -> Result<(), ApplyError> {
    let (data, mode) = read_target(t, limits)?;
    let found: [u8; 32] = Sha256::digest(&data).into();
    if found != from {
        return Err(ApplyError::Drifted {
            path: t.display.clone(),
            expected: hex::encode(from),
            found: hex::encode(found),
        });
    }
    let text = String::from_utf8(data).map_err(|_| ApplyError::Io {
        path: t.display.clone(),
        detail: "it is not UTF-8 text".into(),
    })?;
    let next = patch::apply(&text, diff).map_err(|e| ApplyError::Io {
        path: t.display.clone(),
        detail: format!("the approved diff no longer applies: {e}"),
    })?;
    let got: [u8; 32] = Sha256::digest(next.as_bytes()).into();
    if got != to {
        return Err(ApplyError::Io {
            path: t.display.clone(),
            detail: format!(
                "the diff gives sha256 {}, not the approved {}",
                hex::encode(got),
                hex::encode(to)
            ),
        });
    }
    let _ = action;
    replace(t, next.as_bytes(), mode, hook)
}

/// Writes `data` to a new temporary file beside the target, fsyncs it,
/// renames it over the target and fsyncs the directory.
pub(crate) fn replace(t: &Target, data: &[u8], mode: u32, hook: &str) -> Result<(), ApplyError> {
    let tmp = format!(".{}.edge-runner-{}.tmp", t.name, std::process::id());
    let err = io_err(&t.display);
    let fd = rustix::fs::openat(
        &t.dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )
    .map_err(|e| err(e.into()))?;
    let mut file = std::fs::File::from(fd);
    let written = file
        .write_all(data)
        .and_then(|()| file.sync_all())
        .and_then(|()| {
            rustix::fs::renameat(&t.dir, tmp.as_str(), &t.dir, t.name.as_str()).map_err(Into::into)
        });
    if let Err(e) = written {
        let _ = rustix::fs::unlinkat(&t.dir, tmp.as_str(), AtFlags::empty());
        return Err(err(e));
    }
    test_hook(hook);
    rustix::fs::fsync(&t.dir).map_err(|e| err(e.into()))
}

/// Rolls back the actions already applied (`checks` in order), newest first; says what it did.
fn undo(proposal: &Proposal, checks: &[Checked], limits: &Limits) -> String {
    let mut notes = Vec::new();
    for (action, check) in proposal.actions().iter().zip(checks).rev() {
        let note = match (action, check) {
            (Action::File(f), Checked::File(t)) => match &f.rollback {
                Some(r) => match write_change(
                    t,
                    f,
                    f.post_sha256,
                    r,
                    f.pre_sha256,
                    limits,
                    "after-rollback-rename",
                ) {
                    Ok(()) => format!("{}: restored to the pre-image", f.path),
                    Err(e) => format!("{}: rollback failed: {e}", f.path),
                },
                None => format!("{}: rollback failed: no rollback was proposed", f.path),
            },
            (Action::Http(h), Checked::Http(g)) => match &h.rollback {
                Some(r) => match send(r, g) {
                    Ok(s) => format!("{} {}: rollback sent ({s})", r.method, r.url),
                    Err(e) => format!("{} {}: rollback failed: {e}", r.method, r.url),
                },
                None => format!(
                    "{} {}: rollback failed: no rollback request was proposed",
                    h.request.method, h.request.url
                ),
            },
            _ => String::new(),
        };
        notes.push(note);
    }
    if notes.is_empty() {
        "nothing had been changed".into()
    } else {
        notes.join("; ")
    }
}

/// Resolves an apply a previous runner started and never finished, from the
/// target's digest: all post-images → `applied`; all pre-images →
/// `not-applied`; anything else → `drifted` (and an alarm, as the error).
/// Called when a session opens its log (before it records anything else).
pub fn recover(
    log: &mut EvidenceLog,
    site: &SitePolicy,
    limits: &Limits,
) -> Result<Option<String>, ApplyError> {
    let Some((digest, started)) = log.open_apply() else {
        return Ok(None);
    };
    let id = hex::encode(digest);
    let file = super::proposal_path(log.dir(), &digest);
    let found = std::fs::read(&file)
        .map_err(|e| e.to_string())
        .and_then(|b| Proposal::from_statement(&b).map_err(|e| e.to_string()))
        .and_then(|p| {
            if p.digest() == digest {
                Ok(p)
            } else {
                Err("its digest differs".into())
            }
        });
    let (result, detail) = match found {
        Err(e) => (
            "drifted",
            format!(
                "the proposal file {} cannot be read ({e}), so the target cannot be checked",
                file.display()
            ),
        ),
        Ok(proposal) => {
            let mut states = Vec::new();
            for action in proposal.actions() {
                states.push(match action {
                    Action::File(f) => match current_digest(site, f, limits) {
                        Ok(d) if d == f.post_sha256 => ("post", format!("{}: post-image", f.path)),
                        Ok(d) if d == f.pre_sha256 => ("pre", format!("{}: pre-image", f.path)),
                        Ok(d) => (
                            "other",
                            format!(
                                "{}: sha256 {}, neither pre-image {} nor post-image {}",
                                f.path,
                                hex::encode(d),
                                hex::encode(f.pre_sha256),
                                hex::encode(f.post_sha256)
                            ),
                        ),
                        Err(e) => ("other", format!("{}: {e}", f.path)),
                    },
                    Action::Http(h) => (
                        "other",
                        format!(
                            "{} {}: an HTTP action's effect cannot be read back",
                            h.request.method, h.request.url
                        ),
                    ),
                });
            }
            let all = |s: &str| states.iter().all(|(k, _)| *k == s);
            let text = states
                .iter()
                .map(|(_, d)| d.clone())
                .collect::<Vec<_>>()
                .join("; ");
            if all("post") {
                ("applied", text)
            } else if all("pre") {
                ("not-applied", text)
            } else {
                ("drifted", text)
            }
        }
    };
    log.record(&Event::from(Applied {
        proposal: digest,
        apply_started: started,
        result: result.into(),
        recovered: true,
        detail: detail.clone(),
    }))?;
    if result == "drifted" {
        return Err(ApplyError::RecoveredDrift {
            proposal: id,
            record: started,
            detail,
        });
    }
    Ok(Some(format!(
        "the interrupted apply of proposal {id} (record {started}) was found {result}: {detail}"
    )))
}

/// Paths that change files without an authorization, for benchmarks only.
/// Nothing in the runner calls them; apply takes an [`Authorized`] proposal.
pub mod danger {
    use super::*;

    /// Applies one file change as [`apply`](super::apply) does for an
    /// authorized proposal (every target check, compare-and-swap, temporary
    /// file, fsync, rename, directory fsync), without asking who authorized it
    /// and without recording anything. For measuring the write path only.
    pub fn apply_file_unauthorized(
        site: &SitePolicy,
        action: &FileAction,
        limits: &Limits,
    ) -> Result<(), ApplyError> {
        let t = preflight_file(site, action, limits)?;
        write_change(
            &t,
            action,
            action.pre_sha256,
            &action.diff,
            action.post_sha256,
            limits,
            "",
        )
    }
}

/// Test hook (debug builds only): with `EDGE_RUNNER_TEST_HOOK` set to `point`,
/// the runner says so on stderr and waits to be killed, so a test can kill -9
/// it between the rename and the record.
fn test_hook(point: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("EDGE_RUNNER_TEST_HOOK").as_deref() == Ok(point) {
        eprintln!("edge-runner test hook: {point}");
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}
