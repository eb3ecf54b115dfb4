//! The auditor's verdict: verifies a bundle or a bare log offline and
//! reports what ran, with which rights, and who signed it.
//!
//! This module drives [`crate::evidence`]'s verifier and reads the typed
//! events of a valid log into a [`Report`]; it owns no format (the bundle file
//! is [`crate::evidence::bundle`], the events [`crate::evidence::events`]) and
//! prints nothing: the CLI renders the report, and passes in a progress callback.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::evidence::bundle::Bundle;
use crate::evidence::events::{CapsuleVerified, Event, RunStarted, RunUsage};
use crate::evidence::witness::{WitnessPolicy, note_size, verify_cosignature};
use crate::evidence::{
    Checkpoint, Summary, check_against_checkpoint, verify_log_with_progress,
    verify_range_with_progress,
};
use crate::keys::PublicKey;
use crate::timestamp::Timestamp;
use crate::trust::store::ROOT_FILE_SUFFIX;
use crate::trust::{Chain, ChainLink, RootPolicy, SignedRoot};

/// Called with `(bytes_done, bytes_total)` while a log is verified.
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize);

/// One run as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunLine {
    /// Sequence number of the `run-finished` record.
    pub record: u64,
    /// Time (ms since the epoch).
    pub time_ms: u64,
    /// Capsule name and version, from the `capsule-verified` record that admitted it.
    pub capsule: String,
    /// Kind.
    pub kind: String,
    /// Signers that counted.
    pub signers: Vec<String>,
    /// Run status.
    pub status: String,
    /// Verdict, when the capsule returned one.
    pub verdict: Option<String>,
    /// Summary, when the capsule returned one (or the error, when it did not).
    pub summary: Option<String>,
    /// What was granted (text lines).
    pub granted: Vec<String>,
    /// What was asked for and denied, with reasons, and what was refused at
    /// run time (network uses, memory growth, file operations).
    pub denied: Vec<String>,
    /// What the capsule found: `SEVERITY CODE: message`, in its order.
    pub findings: Vec<String>,
    /// The job it ran for (`edge-runner serve`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<u64>,
}

/// The jobs a log shows, counted by how they ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct JobsLine {
    /// `job-accepted` records.
    pub accepted: u64,
    /// `job-finished` records.
    pub finished: u64,
    /// `job-cancelled` records.
    pub cancelled: u64,
    /// `job-abandoned` records.
    pub abandoned: u64,
}

/// One remediation's chain of authority: the proposal, its tier and why, who
/// approved (and whose approval did not count, and why), what changed, and
/// whether it held.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RemediationLine {
    /// The proposal id (hex digest).
    pub proposal: String,
    /// The `proposal` record.
    pub record: u64,
    /// The proposing capsule, name and version.
    pub capsule: String,
    /// Who requested the run.
    pub proposer: String,
    /// Why (the capsule's rationale).
    pub rationale: String,
    /// The tier recorded with the proposal.
    pub tier: String,
    /// Why that tier: blast path, deciding policy ids, floors.
    pub why: String,
    /// Each action, one line.
    pub actions: Vec<String>,
    /// What changes: every action's diff (or request).
    pub diff: String,
    /// Staged validation: exercised, passed, regressed.
    pub validation: String,
    /// Every approval as judged: person, decision, counted or why not.
    pub approvals: Vec<String>,
    /// Who authorized it (distinct persons), when authorized.
    pub authorized_by: Vec<String>,
    /// The `authorization` record, if any.
    pub authorization_record: Option<u64>,
    /// The tier it was authorized at.
    pub authorized_tier: Option<String>,
    /// Authorized by break-glass.
    pub break_glass: bool,
    /// A complete post-review was recorded (break-glass only).
    pub post_reviewed: bool,
    /// For break-glass: where its post-review stands, one sentence (on time,
    /// late, not yet due, or OVERDUE as of the log's last record); `None` otherwise.
    pub review: Option<String>,
    /// How the apply ended (`applied`, `not-applied`, `drifted`; `recovered` noted).
    pub applied: Option<String>,
    /// The verify result, when verify ran.
    pub verify: Option<String>,
    /// The rollback, when one was applied.
    pub rollback: Option<String>,
    /// Notifications posted.
    pub notified: Vec<String>,
}

/// A run that started and was never closed by a `run-finished`: its runner
/// stopped mid-run. Listed whether or not a later runner recorded it as
/// `run-interrupted` (that one also appears among the runs, status `interrupted`).
#[derive(Debug, Clone, Serialize)]
pub struct UnfinishedLine {
    /// Sequence number of the `run-started` record.
    pub record: u64,
    /// Time (ms since the epoch) it started.
    pub time_ms: u64,
    /// Capsule name and version, from the `capsule-verified` record that admitted it.
    pub capsule: String,
    /// The `run-interrupted` record that put it on the record, if one did.
    pub interrupted_record: Option<u64>,
    /// The job it ran for, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<u64>,
}

/// A refusal as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RefusalLine {
    /// Sequence number.
    pub record: u64,
    /// Time (ms since the epoch).
    pub time_ms: u64,
    /// The exact reason.
    pub reason: String,
}

/// Where the runner key a log was checked under came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeySource {
    /// The auditor's own copy.
    Given,
    /// The bundle itself: its key id must be confirmed with the runner's operator.
    Bundle,
    /// No key could be read.
    None,
}

/// What was verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// An exported bundle.
    Bundle,
    /// A bare log (file or evidence directory).
    Log,
}

/// How the report rules out that records were cut from the end of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Truncation {
    /// Not at all: no checkpoint and no witness was checked, so records could
    /// have been removed from the end without trace.
    NotRuledOut,
    /// By checkpoints the runner signed: they hold only against someone
    /// without the runner key, who could otherwise cut the log and re-sign.
    RunnerCheckpoint,
    /// By checkpoints cosigned by the required number of independent witnesses.
    Witnessed,
}

/// One witness the auditor trusts, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WitnessLine {
    /// The witness's name.
    pub name: String,
    /// Its cosignature/v1 key ID (8 hex digits).
    pub key_id: String,
    /// Records covered by the largest checkpoint it cosigned that the log extends.
    pub checkpoint_size: Option<u64>,
    /// When it cosigned that checkpoint (seconds since the epoch).
    pub cosigned_at: Option<u64>,
}

/// The auditor's verdict over a bundle or log. It is valid exactly when
/// `failure` is `None`; the JSON form carries both `valid` and `failure`.
#[derive(Debug, Clone)]
pub struct Report {
    /// The first failure; `None` when every check passed.
    pub failure: Option<String>,
    /// Records in the log.
    pub records: u64,
    /// The log id (hex).
    pub log_id: Option<String>,
    /// The runner key id (hex) the log was checked under.
    pub runner_key_id: String,
    /// Where that key came from.
    pub runner_key_source: KeySource,
    /// Every key that signed the log, oldest first, with the first record
    /// each signed (more than one after `key-rotated` handovers).
    pub signing_keys: Vec<SigningKeyLine>,
    /// SHA-256 of the last record (hex).
    pub head: Option<String>,
    /// Merkle root over all records (hex).
    pub merkle_root: Option<String>,
    /// The checkpoint checked against the log, if any: covered size.
    pub checkpoint_size: Option<u64>,
    /// The sizes of the checkpoints the auditor brought (`--checkpoint`),
    /// each checked against the log; empty when none were given.
    pub auditor_checkpoints: Vec<u64>,
    /// How truncation is ruled out.
    pub truncation: Truncation,
    /// Records below which the required witnesses rule out truncation (with
    /// `min` witnesses required, the `min`-th largest size they cosigned).
    pub witnessed_size: Option<u64>,
    /// Every witness the auditor named, and what each cosigned.
    pub witnesses: Vec<WitnessLine>,
    /// What was verified.
    pub source: Source,
    /// The trust store versions in the bundle that checked out.
    pub trust_roots: Vec<String>,
    /// Every run, in order.
    pub runs: Vec<RunLine>,
    /// Every run that started and never finished, in order.
    pub unfinished: Vec<UnfinishedLine>,
    /// Every refused capsule, in order.
    pub refusals: Vec<RefusalLine>,
    /// Highest accepted version per capsule name.
    pub high_water: Vec<String>,
    /// For a bundle holding a range of the log: the sequence number of its
    /// first record (`docs/evidence-format.md` §7.1); `None` for a whole log.
    pub range_start: Option<u64>,
    /// What was signed with a public demo key (`keys/demo-*`, whose private
    /// halves are published), one sentence each; such evidence proves nothing.
    pub demo_keys: Vec<String>,
    /// What was verified, run or refused under a development trust root
    /// (`development = true`, made by `edge-runner capsule dev-setup`), one
    /// sentence each; such evidence is a capsule author's local trial, not production.
    pub development: Vec<String>,
    /// For a range: the largest checkpoint the auditor supplied
    /// (`--checkpoint`) or the required witnesses cosigned that the range was
    /// checked against, tying it to the history before it; `None` when
    /// nothing does.
    pub range_anchor: Option<u64>,
    /// Every proposal's chain of authority, in order.
    pub remediations: Vec<RemediationLine>,
    /// Proposals the runner refused to state: (record, reason).
    pub proposals_refused: Vec<RefusalLine>,
    /// Jobs accepted and not ended at the end of the log: running when it
    /// was read, or left by a runner that stopped (the next one abandons them).
    pub jobs_in_flight: Vec<u64>,
    /// The job records counted.
    pub jobs: JobsLine,
}

impl Report {
    /// True when every check passed.
    pub fn valid(&self) -> bool {
        self.failure.is_none()
    }

    fn new(key_id: String, key_source: KeySource, source: Source) -> Self {
        Report {
            failure: None,
            records: 0,
            log_id: None,
            runner_key_id: key_id,
            runner_key_source: key_source,
            signing_keys: Vec::new(),
            head: None,
            merkle_root: None,
            checkpoint_size: None,
            auditor_checkpoints: Vec::new(),
            truncation: Truncation::NotRuledOut,
            witnessed_size: None,
            witnesses: Vec::new(),
            source,
            trust_roots: Vec::new(),
            runs: Vec::new(),
            unfinished: Vec::new(),
            refusals: Vec::new(),
            high_water: Vec::new(),
            range_start: None,
            range_anchor: None,
            demo_keys: Vec::new(),
            development: Vec::new(),
            remediations: Vec::new(),
            proposals_refused: Vec::new(),
            jobs_in_flight: Vec::new(),
            jobs: JobsLine::default(),
        }
    }

    fn failed(mut self, failure: String) -> Self {
        self.failure = Some(failure);
        self
    }
}

/// A key that signed the log from `from_record` on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SigningKeyLine {
    /// The first record it signed.
    pub from_record: u64,
    /// Its key id (hex SHA-256 of the raw key).
    pub key_id: String,
}

impl Serialize for Report {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            valid: bool,
            failure: &'a Option<String>,
            records: u64,
            log_id: &'a Option<String>,
            runner_key_id: &'a str,
            runner_key_source: KeySource,
            signing_keys: &'a [SigningKeyLine],
            head: &'a Option<String>,
            merkle_root: &'a Option<String>,
            checkpoint_size: Option<u64>,
            auditor_checkpoints: &'a [u64],
            truncation: Truncation,
            witnessed_size: Option<u64>,
            witnesses: &'a [WitnessLine],
            source: Source,
            trust_roots: &'a [String],
            runs: &'a [RunLine],
            unfinished: &'a [UnfinishedLine],
            refusals: &'a [RefusalLine],
            high_water: &'a [String],
            range_start: Option<u64>,
            range_anchor: Option<u64>,
            demo_keys: &'a [String],
            development: &'a [String],
            remediations: &'a [RemediationLine],
            proposals_refused: &'a [RefusalLine],
            jobs_in_flight: &'a [u64],
            jobs: JobsLine,
        }
        Wire {
            valid: self.valid(),
            failure: &self.failure,
            records: self.records,
            log_id: &self.log_id,
            runner_key_id: &self.runner_key_id,
            runner_key_source: self.runner_key_source,
            signing_keys: &self.signing_keys,
            head: &self.head,
            merkle_root: &self.merkle_root,
            checkpoint_size: self.checkpoint_size,
            auditor_checkpoints: &self.auditor_checkpoints,
            truncation: self.truncation,
            witnessed_size: self.witnessed_size,
            witnesses: &self.witnesses,
            source: self.source,
            trust_roots: &self.trust_roots,
            runs: &self.runs,
            unfinished: &self.unfinished,
            refusals: &self.refusals,
            high_water: &self.high_water,
            range_start: self.range_start,
            range_anchor: self.range_anchor,
            demo_keys: &self.demo_keys,
            development: &self.development,
            remediations: &self.remediations,
            proposals_refused: &self.proposals_refused,
            jobs_in_flight: &self.jobs_in_flight,
            jobs: self.jobs,
        }
        .serialize(serializer)
    }
}

/// Verifies a bundle, and its log against its own checkpoint and any
/// `extra_checkpoints` kept elsewhere. `expected_key`, when given, must be the key in the bundle.
pub fn verify_bundle(
    bundle: &Bundle,
    expected_key: Option<&PublicKey>,
    extra_checkpoints: &[String],
    progress: Progress<'_>,
) -> Report {
    verify_bundle_witnessed(
        bundle,
        expected_key,
        extra_checkpoints,
        &WitnessPolicy::none(),
        progress,
    )
}

/// [`verify_bundle`], also requiring `witnesses.min()` of the witnesses to
/// have cosigned a checkpoint (the bundle's or an extra one) that the log extends.
pub fn verify_bundle_witnessed(
    bundle: &Bundle,
    expected_key: Option<&PublicKey>,
    extra_checkpoints: &[String],
    witnesses: &WitnessPolicy,
    progress: Progress<'_>,
) -> Report {
    let source = if expected_key.is_some() {
        KeySource::Given
    } else {
        KeySource::Bundle
    };
    let mut report = Report::new(bundle.runner_key.id().to_string(), source, Source::Bundle);
    if let Some(k) = expected_key
        && k.as_bytes() != bundle.runner_key.as_bytes()
    {
        return report.failed(format!(
            "the bundle's runner key is {}, not the expected {}; the bundle was not written by that runner",
            bundle.runner_key.id().short(),
            k.id().short()
        ));
    }
    if !bundle.trust_roots.is_empty() {
        match Chain::from_files(bundle_root_files(bundle)) {
            Ok(chain) => report.trust_roots = chain.links().iter().map(describe_link).collect(),
            Err(e) => return report.failed(format!("trust store in the bundle: {e}")),
        }
    }
    let notes: Vec<String> = bundle
        .checkpoint
        .iter()
        .chain(&bundle.witnessed)
        .chain(extra_checkpoints)
        .cloned()
        .collect();
    let chain = if bundle.trust_roots.is_empty() {
        None
    } else {
        Chain::from_files(bundle_root_files(bundle)).ok()
    };
    // Each version's policy, to judge governance under the version in force.
    let root_policies: Vec<RootPolicy> = if chain.is_some() {
        bundle_root_files(bundle)
            .iter()
            .filter_map(|(name, bytes)| SignedRoot::parse(bytes, name).ok())
            .map(|signed| signed.policy)
            .collect()
    } else {
        Vec::new()
    };
    let range = (bundle.range_start != 0).then_some(bundle.range_start);
    report.range_start = range;
    let mut report = verify_log_into(
        &bundle.log,
        &bundle.runner_key,
        &notes,
        witnesses,
        report,
        progress,
        |summary| {
            trust_roots_match(summary, chain.as_ref())?;
            authorizations_recheck(summary, chain.as_ref(), &root_policies, &bundle.governance)
        },
    );
    if let Some(first) = range
        && report.valid()
    {
        // Only what the auditor brings ties the range to the history before
        // it: their own earlier checkpoints, or the witnesses they named. The
        // bundle's own checkpoint is signed by the same key as the range.
        let given = extra_checkpoints.iter().filter_map(|n| note_size(n)).max();
        let witnessed = (report.truncation == Truncation::Witnessed)
            .then_some(report.witnessed_size)
            .flatten();
        report.range_anchor = given.max(witnessed).filter(|&size| size >= first);
    }
    report
}

/// Every `authorization` re-checked offline: the approvals recorded just before
/// it (their COSE bytes) are judged again by [`crate::governance::authorize`]
/// under the bundled governance version it names, as of its record's time, and
/// must give the same tier, the same persons and the same break-glass flag.
fn authorizations_recheck(
    summary: &Summary,
    chain: Option<&Chain>,
    root_policies: &[RootPolicy],
    governance: &[Vec<u8>],
) -> Result<(), String> {
    use crate::governance::{Approval, Governance, authorize};
    let mut proposals: Vec<([u8; 32], crate::remediation::Proposal)> = Vec::new();
    // The approvals recorded since the last record that was not an approval.
    let mut pending: Vec<([u8; 32], Approval)> = Vec::new();
    // The governance versions that verify under each trust root version, as needed.
    let mut verified: BTreeMap<u64, Vec<Governance>> = BTreeMap::new();
    // The trust root version the runner last named: the one in force.
    let mut in_force: Option<u64> = None;
    for (r, event) in summary.records.iter().zip(&summary.events) {
        let seq = r.record.seq;
        match event {
            Event::CapsuleVerified(v) => in_force = Some(v.trust_root.version),
            Event::CapsuleRefused(refused) => {
                if let Some(root) = &refused.trust_root {
                    in_force = Some(root.version);
                }
            }
            Event::ProposalRecorded(p) => {
                let stated =
                    crate::remediation::Proposal::from_statement(&p.statement).map_err(|e| {
                        format!("record {seq}: the proposal statement does not read: {e}")
                    })?;
                proposals.push((p.digest, stated));
            }
            Event::ApprovalChecked(a) => {
                match Approval::parse(&a.approval, &format!("record {seq}")) {
                    Ok(approval) => pending.push((a.proposal, approval)),
                    Err(e) if a.counted => {
                        return Err(format!(
                            "record {seq}: an approval recorded as counted is not a valid approval: {e}"
                        ));
                    }
                    Err(_) => {}
                }
                continue;
            }
            Event::AuthorizationRecorded(a) => {
                let Some(chain) = chain else {
                    return Err(format!(
                        "record {seq} authorizes a proposal, but the bundle carries no trust store to check its governance against; export the bundle with the trust store"
                    ));
                };
                // Governance is judged under the trust root version in force
                // when it was used: administrators named only by a later or
                // an earlier version do not count.
                let root_version = in_force.unwrap_or(chain.latest().version);
                let root = root_policies
                    .iter()
                    .find(|p| p.version == root_version)
                    .ok_or_else(|| {
                        format!(
                            "record {seq} authorizes under trust root v{root_version}, which the bundle's trust store does not carry; export the bundle with the trust store the runner used"
                        )
                    })?;
                let versions = verified.entry(root_version).or_insert_with(|| {
                    governance
                        .iter()
                        .filter_map(|b| Governance::from_signed(b, root, None).ok())
                        .collect()
                });
                let gov = versions
                    .iter()
                    .find(|g| g.digest() == a.governance_sha256)
                    .ok_or_else(|| {
                        format!(
                            "record {seq} authorizes under governance v{} (sha256 {}), which the bundle does not carry, or which the administrators of trust root v{root_version} (in force at that record) did not sign; export the bundle with the trust store the runner used",
                            a.governance_version,
                            hex::encode(a.governance_sha256)
                        )
                    })?;
                let proposal = proposals
                    .iter()
                    .find(|(d, _)| *d == a.proposal)
                    .map(|(_, p)| p.clone())
                    .ok_or_else(|| {
                        format!("record {seq} authorizes a proposal no record states")
                    })?;
                let approvals: Vec<Approval> = pending
                    .drain(..)
                    .filter(|(d, _)| *d == a.proposal)
                    .map(|(_, ap)| ap)
                    .collect();
                let at = Timestamp(r.record.time_ms / 1000);
                match authorize(gov, proposal, &approvals, at) {
                    Ok(auth) => {
                        let mut ours: Vec<String> = auth.approvers().to_vec();
                        let mut theirs = a.approvers.clone();
                        ours.sort();
                        theirs.sort();
                        if auth.tier().as_str() != a.tier
                            || ours != theirs
                            || auth.break_glass() != a.break_glass
                        {
                            return Err(format!(
                                "record {seq}: re-checked under governance v{}, the approvals authorize tier {} by {} (break-glass {}), but the record says tier {} by {} (break-glass {})",
                                gov.version(),
                                auth.tier().as_str(),
                                ours.join(", "),
                                auth.break_glass(),
                                a.tier,
                                theirs.join(", "),
                                a.break_glass
                            ));
                        }
                    }
                    Err(refusal) => {
                        return Err(format!(
                            "record {seq}: the authorization does not re-check under the bundled governance v{}: {}",
                            gov.version(),
                            refusal.error
                        ));
                    }
                }
            }
            _ => {}
        }
        pending.clear();
    }
    Ok(())
}

fn bundle_root_files(bundle: &Bundle) -> Vec<(String, Vec<u8>)> {
    bundle
        .trust_roots
        .iter()
        .enumerate()
        .map(|(i, b)| {
            (
                format!("bundle trust root {}{ROOT_FILE_SUFFIX}", i + 1),
                b.clone(),
            )
        })
        .collect()
}

/// Every trust root version the records name is in the bundle's store, with
/// the same content: a bundle must carry the store the runner used, not
/// another one (or none) that would make the report show the wrong publishers.
fn trust_roots_match(summary: &Summary, chain: Option<&Chain>) -> Result<(), String> {
    for (r, event) in summary.records.iter().zip(&summary.events) {
        let named = match event {
            Event::CapsuleVerified(v) => &v.trust_root,
            Event::CapsuleRefused(refused) => match &refused.trust_root {
                Some(root) => root,
                None => continue,
            },
            _ => continue,
        };
        let seq = r.record.seq;
        let Some(chain) = chain else {
            return Err(format!(
                "record {seq} names trust root `{}` v{}, but the bundle carries no trust store; export the bundle with the trust store the runner used",
                named.name, named.version
            ));
        };
        let name = &chain.latest().name;
        let link = chain.links().iter().find(|l| l.version == named.version);
        match link {
            Some(link) if *name == named.name && link.digest == named.sha256 => {}
            _ => {
                return Err(format!(
                    "record {seq} names trust root `{}` v{} (sha256 {}), but the bundle's trust store `{name}` has {}: the bundle carries another trust store than the one the runner used",
                    named.name,
                    named.version,
                    hex::encode(named.sha256),
                    link.map_or_else(
                        || format!("no v{}", named.version),
                        |l| format!("v{} with sha256 {}", l.version, hex::encode(l.digest))
                    )
                ));
            }
        }
    }
    Ok(())
}

/// The verdict on a file that is not a well-formed bundle.
pub fn malformed_bundle_report(expected_key: Option<&PublicKey>, detail: &str) -> Report {
    let report = match expected_key {
        Some(k) => Report::new(k.id().to_string(), KeySource::Given, Source::Bundle),
        None => Report::new(String::new(), KeySource::None, Source::Bundle),
    };
    report.failed(format!("not a valid bundle: {detail}"))
}

/// Verifies a bare log, and it against each kept checkpoint note, into a report.
pub fn verify_log_report(
    log: &[u8],
    key: &PublicKey,
    checkpoints: &[String],
    progress: Progress<'_>,
) -> Report {
    verify_log_report_witnessed(log, key, checkpoints, &WitnessPolicy::none(), progress)
}

/// [`verify_log_report`], also requiring `witnesses.min()` of the witnesses
/// to have cosigned one of `checkpoints` that the log extends.
pub fn verify_log_report_witnessed(
    log: &[u8],
    key: &PublicKey,
    checkpoints: &[String],
    witnesses: &WitnessPolicy,
    progress: Progress<'_>,
) -> Report {
    let report = Report::new(key.id().to_string(), KeySource::Given, Source::Log);
    verify_log_into(log, key, checkpoints, witnesses, report, progress, |_| {
        Ok(())
    })
}

fn describe_link(link: &ChainLink) -> String {
    format!("v{} sha256 {}", link.version, hex::encode(link.digest))
}

/// Verifies the log, then checks it against each checkpoint note in turn
/// (its witnesses' cosignatures first, so that a failure names them), then
/// counts the witnesses (`docs/evidence-format.md` §10.4).
fn verify_log_into(
    log: &[u8],
    key: &PublicKey,
    checkpoints: &[String],
    policy: &WitnessPolicy,
    mut report: Report,
    progress: Progress<'_>,
    also: impl FnOnce(&Summary) -> Result<(), String>,
) -> Report {
    // A bundle holding a range of the log says so in the report it starts.
    let range = report.range_start;
    let verified = match range {
        None => verify_log_with_progress(log, key, progress),
        Some(_) => verify_range_with_progress(log, key, progress),
    };
    let summary = match verified {
        Ok(s) => s,
        Err(f) => return report.failed(f.to_string()),
    };
    if let Some(first) = range
        && summary.first != first
    {
        return report.failed(format!(
            "the bundle says its range begins at record {first}, but its first record is record {}",
            summary.first
        ));
    }
    fill(&mut report, &summary);
    if let Err(failure) = also(&summary) {
        return report.failed(failure);
    }
    // Per witness: (size, time) of the largest checkpoint it cosigned that the log extends.
    let mut seen: Vec<Option<(u64, u64)>> = vec![None; policy.witnesses().len()];
    for note in checkpoints {
        let mut cosigners = Vec::new();
        for (i, witness) in policy.witnesses().iter().enumerate() {
            match verify_cosignature(note, witness) {
                Ok(Some(time)) => cosigners.push((i, time)),
                Ok(None) => {}
                Err(detail) => {
                    return report.failed(format!(
                        "a checkpoint{}: {detail}",
                        note_size(note).map_or_else(String::new, |s| format!(" of {s} records"))
                    ));
                }
            }
        }
        match check_against_checkpoint(&summary, note, key) {
            Ok(Checkpoint { size, .. }) => {
                report.checkpoint_size = Some(report.checkpoint_size.unwrap_or(0).max(size));
                for (i, time) in cosigners {
                    if seen[i].is_none_or(|(s, _)| size > s) {
                        seen[i] = Some((size, time));
                    }
                }
            }
            Err(f) if cosigners.is_empty() => return report.failed(f.to_string()),
            Err(f) => {
                let names: Vec<String> = cosigners
                    .iter()
                    .map(|&(i, time)| {
                        format!("`{}` at {}", policy.witnesses()[i].name(), Timestamp(time))
                    })
                    .collect();
                return report.failed(format!(
                    "the log ({} records) does not extend the checkpoint of {} records cosigned by witness {}: {f}",
                    summary.first + summary.records.len() as u64,
                    note_size(note).map_or_else(|| "?".to_string(), |s| s.to_string()),
                    names.join(", ")
                ));
            }
        }
    }
    report.witnesses = policy
        .witnesses()
        .iter()
        .zip(&seen)
        .map(|(w, s)| WitnessLine {
            name: w.name().to_string(),
            key_id: hex::encode(w.key_id()),
            checkpoint_size: s.map(|(size, _)| size),
            cosigned_at: s.map(|(_, time)| time),
        })
        .collect();
    let mut sizes: Vec<u64> = seen.iter().flatten().map(|&(size, _)| size).collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    if policy.min() > 0 && sizes.len() >= policy.min() {
        report.truncation = Truncation::Witnessed;
        report.witnessed_size = sizes.get(policy.min() - 1).copied();
    } else if report.checkpoint_size.is_some() {
        report.truncation = Truncation::RunnerCheckpoint;
    }
    if sizes.len() < policy.min() {
        let cosigned: Vec<String> = report
            .witnesses
            .iter()
            .filter_map(|w| {
                w.checkpoint_size
                    .map(|s| format!("`{}` ({s} records)", w.name))
            })
            .collect();
        let missing: Vec<String> = report
            .witnesses
            .iter()
            .filter(|w| w.checkpoint_size.is_none())
            .map(|w| format!("`{}`", w.name))
            .collect();
        return report.failed(format!(
            "{} of the {} witnesses required cosigned a checkpoint that this log extends (cosigned: {}; no cosignature from: {}); a log whose witnessed checkpoints were removed cannot show that it was not cut or rewritten. Ask the runner's operator for the witnessed checkpoints, or each witness for its latest checkpoint of this log, and verify with them",
            sizes.len(),
            policy.min(),
            if cosigned.is_empty() { "none".to_string() } else { cosigned.join(", ") },
            missing.join(", ")
        ));
    }
    report
}

fn fill(report: &mut Report, summary: &Summary) {
    report.records = summary.first + summary.records.len() as u64;
    report.log_id = Some(hex::encode(summary.log_id));
    report.head = Some(hex::encode(summary.head));
    report.merkle_root = Some(hex::encode(summary.root));
    report.signing_keys = summary
        .keys
        .iter()
        .map(|(from, key)| SigningKeyLine {
            from_record: *from,
            key_id: key.id().to_string(),
        })
        .collect();
    for (from, key) in &summary.keys {
        if let Some(name) = crate::keys::demo_key_name(&key.id()) {
            report.demo_keys.push(format!(
                "the runner key signing from record {from} is the public demo key `{name}`"
            ));
        }
    }
    for (r, event) in summary.records.iter().zip(&summary.events) {
        if let Event::CapsuleVerified(v) = event {
            for signer in &v.signers {
                if let Some(name) = crate::keys::demo_key_name(&crate::keys::KeyId(signer.key_id)) {
                    report.demo_keys.push(format!(
                        "capsule {} {} (record {}) is signed by the public demo key `{name}`",
                        v.name, v.version, r.record.seq
                    ));
                }
            }
        }
        let development = match event {
            Event::CapsuleVerified(v) if v.trust_root.development => Some(format!(
                "capsule {} {} (record {}) was verified under the development trust root `{}` v{}",
                v.name, v.version, r.record.seq, v.trust_root.name, v.trust_root.version
            )),
            Event::CapsuleRefused(e) => e
                .trust_root
                .as_ref()
                .filter(|root| root.development)
                .map(|root| {
                    format!(
                        "a capsule refused at record {} was checked under the development trust root `{}` v{}",
                        r.record.seq, root.name, root.version
                    )
                }),
            _ => None,
        };
        report.development.extend(development);
    }
    let counts = summary.job_counts;
    report.jobs = JobsLine {
        accepted: counts.accepted,
        finished: counts.finished,
        cancelled: counts.cancelled,
        abandoned: counts.abandoned,
    };
    report.jobs_in_flight = summary.jobs_in_flight.clone();
    // Each job's records form their own lane (records outside jobs: lane
    // `None`), so interleaved jobs' runs are credited to their own capsules.
    let mut lanes: BTreeMap<Option<u64>, Lane<'_>> = BTreeMap::new();
    let capsule_of = |v: Option<&CapsuleVerified>| {
        v.map_or_else(String::new, |v| format!("{} {}", v.name, v.version))
    };
    remediation_lines(report, summary);
    for (r, event) in summary.records.iter().zip(&summary.events) {
        let job = match event {
            Event::CapsuleVerified(e) => e.job,
            Event::CapsuleRefused(e) => e.job,
            Event::RunStarted(e) => e.job,
            Event::RunFinished(e) => e.job,
            Event::RunInterrupted(e) => e.job,
            _ => None,
        };
        let lane = lanes.entry(job).or_default();
        let Lane {
            admitted,
            started,
            open,
        } = lane;
        match event {
            Event::CapsuleVerified(v) => *admitted = Some(v),
            Event::CapsuleRefused(refused) => report.refusals.push(RefusalLine {
                record: r.record.seq,
                time_ms: r.record.time_ms,
                reason: refused.reason.clone(),
            }),
            Event::RunStarted(run) => {
                *started = Some(run);
                // A run-started still open here was superseded: its runner died.
                report.unfinished.extend(open.take());
                *open = Some(UnfinishedLine {
                    record: r.record.seq,
                    time_ms: r.record.time_ms,
                    capsule: capsule_of(*admitted),
                    interrupted_record: None,
                    job,
                });
            }
            Event::RunInterrupted(cut) => {
                let line = open.take();
                report.unfinished.extend(line.map(|l| UnfinishedLine {
                    interrupted_record: Some(r.record.seq),
                    ..l
                }));
                let mut run = run_line(r.record.seq, r.record.time_ms, *admitted, *started, job);
                run.status = "interrupted".into();
                run.summary = Some(format!(
                    "run started in record {}: {}",
                    cut.run_started, cut.reason
                ));
                report.runs.push(run);
            }
            Event::RunFinished(end) => {
                *open = None;
                // The verifier checked that a run-finished closes a run-started,
                // which follows the capsule-verified record that admitted it.
                let mut run = run_line(r.record.seq, r.record.time_ms, *admitted, *started, job);
                if let Some(usage) = &end.usage {
                    run.denied.extend(refused_at_run_time(usage));
                }
                run.status = end.status.clone();
                run.verdict = end.outcome.as_ref().map(|o| o.verdict.clone());
                run.summary = end
                    .outcome
                    .as_ref()
                    .map(|o| o.summary.clone())
                    .or_else(|| end.error.clone());
                run.findings = end
                    .outcome
                    .as_ref()
                    .map(|o| {
                        o.findings
                            .iter()
                            .map(|f| format!("{} {}: {}", f.severity, f.code, f.message))
                            .collect()
                    })
                    .unwrap_or_default();
                if let Some(cut) = end.truncated.iter().find(|t| t.field == "findings") {
                    run.findings.push(format!(
                        "(and {} more findings, kept only as SHA-256 {} of all {})",
                        cut.size - cut.kept,
                        hex::encode(cut.sha256),
                        cut.size
                    ));
                }
                report.runs.push(run);
            }
            _ => {}
        }
    }
    let mut left: Vec<UnfinishedLine> = lanes.into_values().filter_map(|l| l.open).collect();
    left.sort_by_key(|l| l.record);
    report.unfinished.extend(left);
    report.high_water = summary
        .events
        .iter()
        .filter_map(|e| match e {
            Event::CapsuleVerified(v) => summary
                .high_water
                .capsule(&v.name)
                .map(|(highest, _)| format!("{} {highest}", v.name)),
            _ => None,
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
}

/// What the report keeps of one lane while it reads the log.
#[derive(Default)]
struct Lane<'a> {
    /// The newest `capsule-verified` of the lane.
    admitted: Option<&'a CapsuleVerified>,
    /// The newest `run-started` of the lane.
    started: Option<&'a RunStarted>,
    /// The `run-started` not yet closed, as a line of `unfinished` if it never is.
    open: Option<UnfinishedLine>,
}

/// A run's line with what its `capsule-verified` and `run-started` records
/// say (who signed, what was granted and denied); status and outcome are the caller's.
fn run_line(
    record: u64,
    time_ms: u64,
    admitted: Option<&CapsuleVerified>,
    started: Option<&RunStarted>,
    job: Option<u64>,
) -> RunLine {
    let (granted, denied) = started.map(grant_lines).unwrap_or_default();
    RunLine {
        record,
        time_ms,
        capsule: admitted.map_or_else(String::new, |v| format!("{} {}", v.name, v.version)),
        kind: admitted.map_or_else(String::new, |v| v.kind.clone()),
        signers: admitted.map_or_else(Vec::new, |v| {
            v.signers
                .iter()
                .map(|s| {
                    format!(
                        "{} ({}), key {}",
                        s.publisher,
                        s.organisation,
                        hex::encode(s.key_id)
                    )
                })
                .collect()
        }),
        status: String::new(),
        verdict: None,
        summary: None,
        granted,
        denied,
        findings: Vec::new(),
        job,
    }
}

/// What the sandbox refused while the capsule ran, one line each.
fn refused_at_run_time(usage: &RunUsage) -> Vec<String> {
    let mut lines: Vec<String> = usage
        .egress_denied
        .iter()
        .map(|t| format!("refused at run time: {t}"))
        .collect();
    if let Some(total) = usage.egress_denied_total
        && total > usage.egress_denied.len() as u64
    {
        lines.push(format!(
            "refused at run time: {} network uses in all ({} listed)",
            total,
            usage.egress_denied.len()
        ));
    }
    if !usage.memory_denials.is_empty() {
        lines.push(format!(
            "refused at run time: {} memory growth request(s), up to {} bytes",
            usage.memory_denials.len(),
            usage.memory_denials.iter().max().copied().unwrap_or(0)
        ));
    }
    if let Some((count, sample)) = &usage.files_refused {
        lines.push(format!(
            "refused at run time: {count} file operation(s): {}",
            sample.join("; ")
        ));
    }
    if usage.evidence_refused > 0 {
        lines.push(format!(
            "refused at run time: {} evidence item(s) over quota",
            usage.evidence_refused
        ));
    }
    lines
}

fn grant_lines(run: &RunStarted) -> (Vec<String>, Vec<String>) {
    let g = &run.grant;
    let mut granted = vec![
        format!("memory-bytes {}", g.memory_bytes),
        format!("fuel {}", g.fuel),
        format!("wall-time-ms {}", g.wall_time_ms),
    ];
    granted.extend(
        g.filesystem
            .iter()
            .map(|d| format!("file {} ({})", d.guest, d.access)),
    );
    granted.extend(
        g.network
            .iter()
            .map(|n| format!("egress {}", n.destination)),
    );
    granted.extend(g.config.iter().map(|c| {
        format!(
            "config {} (value committed: {})",
            c.key,
            hex::encode(c.commitment)
        )
    }));
    let denied = run
        .denied
        .iter()
        .map(|d| format!("{}: {}", d.request, d.reason))
        .collect();
    (granted, denied)
}

/// Builds each proposal's chain of authority from the remediation records.
fn remediation_lines(report: &mut Report, summary: &Summary) {
    let texts = |v: Option<&ciborium::Value>| -> Vec<String> {
        match v {
            Some(ciborium::Value::Array(a)) => a
                .iter()
                .filter_map(|t| match t {
                    ciborium::Value::Text(t) => Some(t.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    };
    let mut lines: Vec<([u8; 32], RemediationLine)> = Vec::new();
    // Break-glass authorizations (proposal, review due) and complete post-reviews (proposal, record, time).
    let mut due: Vec<([u8; 32], Option<u64>)> = Vec::new();
    let mut reviewed_at: Vec<([u8; 32], u64, u64)> = Vec::new();
    let find = |lines: &mut Vec<([u8; 32], RemediationLine)>, d: &[u8; 32]| {
        lines.iter().position(|(k, _)| k == d)
    };
    for (r, event) in summary.records.iter().zip(&summary.events) {
        let seq = r.record.seq;
        match event {
            Event::ProposalRecorded(p) => {
                let mut line = RemediationLine {
                    proposal: hex::encode(p.digest),
                    record: seq,
                    tier: p.tier.clone(),
                    ..RemediationLine::default()
                };
                match crate::remediation::Proposal::from_statement(&p.statement) {
                    Ok(stated) => {
                        let d = stated.draft();
                        line.capsule = format!("{} {}", d.capsule.name, d.capsule.version);
                        line.proposer = d.proposer.clone();
                        line.rationale = d.rationale.clone();
                        line.actions = stated
                            .actions()
                            .iter()
                            .map(crate::remediation::Action::describe)
                            .collect();
                        line.diff = stated
                            .actions()
                            .iter()
                            .map(crate::remediation::Action::diff_text)
                            .collect::<Vec<_>>()
                            .join("\n");
                        line.validation = stated.staged().map_or_else(
                            || "none (never staged)".to_string(),
                            |s| {
                                format!(
                                    "exercised [{}], passed [{}], regressed [{}]",
                                    s.exercised.join(", "),
                                    s.passed.join(", "),
                                    s.regressed.join(", ")
                                )
                            },
                        );
                        if let Ok(m) = crate::cbor::MapReader::new("decision", stated.decision()) {
                            let mut why = vec![format!(
                                "blast path {}",
                                texts(m.get("blast-path")).join(" -> ")
                            )];
                            let ids = texts(m.get("policy-ids"));
                            if !ids.is_empty() {
                                why.push(format!("policies {}", ids.join(", ")));
                            }
                            let floors = texts(m.get("floors"));
                            if !floors.is_empty() {
                                why.push(format!("floors {}", floors.join(", ")));
                            }
                            line.why = why.join("; ");
                        }
                    }
                    Err(e) => line.why = format!("statement unreadable: {e}"),
                }
                lines.push((p.digest, line));
            }
            Event::ProposalRefused(p) => report.proposals_refused.push(RefusalLine {
                record: seq,
                time_ms: r.record.time_ms,
                reason: p.reason.clone(),
            }),
            Event::ApprovalChecked(a) => {
                if let Some(i) = find(&mut lines, &a.proposal) {
                    lines[i].1.approvals.push(format!(
                        "record {seq}: {} ({}, key {}): {}",
                        a.person,
                        a.decision,
                        hex::encode(&a.key_id[..8]),
                        if a.counted {
                            "counted".to_string()
                        } else {
                            format!("not counted — {}", a.why_not.as_deref().unwrap_or(""))
                        }
                    ));
                }
            }
            Event::AuthorizationRecorded(a) => {
                if let Some(i) = find(&mut lines, &a.proposal) {
                    let l = &mut lines[i].1;
                    l.authorized_by = a.approvers.clone();
                    l.authorization_record = Some(seq);
                    l.authorized_tier = Some(a.tier.clone());
                    l.break_glass = a.break_glass;
                    if a.break_glass {
                        due.push((a.proposal, a.review_due));
                    }
                }
            }
            Event::Applied(a) => {
                if let Some(i) = find(&mut lines, &a.proposal) {
                    lines[i].1.applied = Some(format!(
                        "{}{} (record {seq}): {}",
                        a.result,
                        if a.recovered {
                            ", recovered at restart"
                        } else {
                            ""
                        },
                        a.detail
                    ));
                }
            }
            Event::VerifyResult(v) => {
                if let Some(i) = find(&mut lines, &v.proposal) {
                    lines[i].1.verify = Some(format!(
                        "{} ({}){}",
                        v.verdict,
                        if v.held { "held" } else { "did not hold" },
                        v.run_record
                            .map_or_else(String::new, |r| format!(", run record {r}"))
                    ));
                }
            }
            Event::RolledBack(b) => {
                if let Some(i) = find(&mut lines, &b.proposal) {
                    lines[i].1.rollback = Some(format!("{}: {}", b.result, b.detail));
                }
            }
            Event::Notified(n) => {
                if let Some(i) = find(&mut lines, &n.proposal) {
                    lines[i].1.notified.push(format!(
                        "{}: {}",
                        n.url,
                        n.status
                            .map_or_else(|| n.error.clone().unwrap_or_default(), |s| s.to_string())
                    ));
                }
            }
            Event::PostReview(p) => {
                if let Some(i) = find(&mut lines, &p.proposal) {
                    let l = &mut lines[i].1;
                    if p.complete && !l.post_reviewed {
                        reviewed_at.push((p.proposal, seq, r.record.time_ms / 1000));
                    }
                    l.post_reviewed |= p.complete;
                }
            }
            _ => {}
        }
    }
    // Where each break-glass post-review stands, as of the last record.
    let last = summary
        .records
        .last()
        .map_or(0, |r| r.record.time_ms / 1000);
    for (proposal, due) in due {
        let Some(i) = find(&mut lines, &proposal) else {
            continue;
        };
        let reviewed = reviewed_at.iter().find(|(d, ..)| *d == proposal);
        lines[i].1.review = Some(match (reviewed, due) {
            (Some((_, rec, at)), Some(due)) if *at > due => format!(
                "post-reviewed LATE: record {rec} at {}, due by {}",
                Timestamp(*at),
                Timestamp(due)
            ),
            (Some((_, rec, at)), Some(due)) => format!(
                "post-reviewed in time: record {rec} at {}, due by {}",
                Timestamp(*at),
                Timestamp(due)
            ),
            (Some((_, rec, at)), None) => {
                format!("post-reviewed: record {rec} at {}", Timestamp(*at))
            }
            (None, Some(due)) if last > due => format!(
                "WARNING: OVERDUE — no quorum post-review recorded; it was due by {}",
                Timestamp(due)
            ),
            (None, Some(due)) => format!(
                "WARNING: no quorum post-review recorded yet; due by {}",
                Timestamp(due)
            ),
            (None, None) => "WARNING: no quorum post-review recorded".to_string(),
        });
    }
    report.remediations = lines.into_iter().map(|(_, l)| l).collect();
}
