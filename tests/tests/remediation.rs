//! Remediation attacks (issue 14): each test is named for the attack and
//! asserts the exact refusal. The end-to-end apply path (with governance and
//! signed approvals) is in `runner/tests/cli.rs` and the demo.
#![expect(clippy::unwrap_used, reason = "tests fail by panicking")]

use std::path::Path;

use edge_runner::capsule::{self, Kind, ManifestSource};
use edge_runner::evidence::{self, EvidenceLog, events::*};
use edge_runner::keys::SecretKey;
use edge_runner::remediation::{
    self, Action, CapsuleRef, ItemContext, Limits as RemLimits, Prepare, RemediationError,
    apply::{self, ApplyError},
};
use edge_runner::sandbox::{EvidenceItem, Limits};
use edge_runner::session::{RunRecord, Session};
use edge_runner::site::SitePolicy;
use edge_runner::timestamp::Timestamp;
use edge_runner::trust::TrustRoot;
use edge_runner_tests::*;
use sha2::{Digest, Sha256};

/// A session at `site`, a trust root, and `capsule` signed by two publishers with `capabilities`.
struct Rig {
    session: Session,
    root: TrustRoot,
    signed: Vec<u8>,
    key: edge_runner::keys::PublicKey,
    _dir: tempfile::TempDir,
}

fn rig(capsule: &capsule_artifacts::Capsule, capabilities: &str, site: SitePolicy) -> Rig {
    let ceiling = "egress = [\"127.0.0.1:*\"]\nconfig = [\"*\"]\n\
        files = [{ path = \"/\", access = \"read-only\" }]\n";
    let mut a = Publisher::new("acme-ci", "Acme", &["test", "reproduce", "remediate"]);
    let mut b = Publisher::new("globex-sre", "Globex", &["test", "reproduce", "remediate"]);
    a.ceiling = ceiling;
    b.ceiling = ceiling;
    let root = trust_root(&[&a, &b]);
    let mut source = ManifestSource::parse(
        capsule.manifest,
        std::path::Path::new(capsule.manifest_path),
    )
    .unwrap();
    source.capabilities = toml::from_str(capabilities).unwrap();
    let signed = capsule::sign(capsule.component, &source, &a.key, Timestamp::now()).unwrap();
    let signed = capsule::cosign(&signed, &b.key, &[a.key.public()], Timestamp::now()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runner = SecretKey::generate().unwrap();
    let key = runner.public();
    let session = Session::with_policy(
        EvidenceLog::open(dir.path(), runner).unwrap(),
        Limits::default(),
        site,
    )
    .unwrap();
    Rig {
        session,
        root,
        signed,
        key,
        _dir: dir,
    }
}

impl Rig {
    fn run(&mut self, input: &str) -> RunRecord {
        let verified = self
            .session
            .verify(raw(self.signed.clone()), &self.root)
            .unwrap();
        self.session.run(verified, input.as_bytes()).unwrap()
    }

    /// States the run's proposals with no governance installed: every check
    /// before the tier still runs, in order.
    fn prepare(
        &mut self,
        run: &RunRecord,
        input: &str,
    ) -> Vec<Result<remediation::Proposal, RemediationError>> {
        let root = self.root.clone();
        remediation::prepare_run(
            &mut self.session,
            run,
            input.as_bytes(),
            &Prepare {
                governance: None,
                governance_origin: "in this test",
                root: &root,
                capsules: Path::new("/nonexistent"),
                proposer: "agent-7",
                limits: RemLimits::default(),
            },
        )
        .unwrap()
    }

    fn last_event(&self) -> evidence::Event {
        let bytes = std::fs::read(self.session.log().path()).unwrap();
        let summary = evidence::verify_log(&bytes, &self.key).unwrap();
        summary.events.last().unwrap().clone()
    }
}

fn config_site(host: &Path, access: &str, apply: bool) -> SitePolicy {
    SitePolicy::parse(
        &format!(
            "format = 1\nsite = \"{SITE}\"\n[[directory]]\npath = \"/config\"\nhost = \"{}\"\naccess = \"{access}\"\n{}",
            host.display(),
            if apply { "[[apply]]\npath = \"/config\"\n" } else { "" }
        ),
        "site-policy.toml",
    )
    .unwrap()
}

const CONFIG_FILES: &str = "files = [{ path = \"/config\", access = \"read-only\" }]";

fn item(json: &str) -> EvidenceItem {
    EvidenceItem {
        label: "proposal".into(),
        media_type: remediation::PROPOSAL_MEDIA_TYPE.into(),
        size: json.len() as u64,
        sha256: Sha256::digest(json.as_bytes()).into(),
        inline: Some(json.as_bytes().to_vec()),
    }
}

fn draft_of(
    run: &RunRecord,
    site: &SitePolicy,
    kind: Kind,
    json: &str,
) -> Result<remediation::Draft, RemediationError> {
    let m = run.capsule.manifest();
    remediation::draft(
        &ItemContext {
            site: SITE,
            kind,
            capsule: CapsuleRef {
                name: m.name.clone(),
                version: m.version.to_string(),
                module_sha256: run.capsule.module_digest(),
                signers: Vec::new(),
                publishers: Vec::new(),
            },
            grant: &run.grant,
            site_egress: &site.egress,
            run: ([0; 16], 5),
            proposer: "agent-7",
            input: b"{}",
            now: Timestamp::now(),
        },
        &item(json),
        &RemLimits::default(),
    )
}

fn diff(a: &str, b: &str) -> String {
    similar::TextDiff::from_lines(a, b)
        .unified_diff()
        .header("a/config/app.conf", "b/config/app.conf")
        .to_string()
}

const PRE: &str = "max_connections = 50\ntimeout = 30\n";
const POST: &str = "max_connections = 200\ntimeout = 30\n";

/// A config-fix run over `host` (with app.conf = PRE), and its rig.
fn config_run(host: &Path, site: SitePolicy) -> (Rig, RunRecord) {
    std::fs::write(host.join("app.conf"), PRE).unwrap();
    let mut rig = rig(&capsule_artifacts::CONFIG_FIX, CONFIG_FILES, site);
    let run = rig.run(r#"{"path": "/config/app.conf", "set": {"max_connections": "200"}}"#);
    (rig, run)
}

#[test]
fn rollback_that_does_not_restore_the_pre_image_is_refused() {
    let host = tempfile::tempdir().unwrap();
    let site = config_site(host.path(), "read-write", true);
    let (_rig, run) = config_run(host.path(), site.clone());
    let bad_rollback = diff(POST, "max_connections = 10\ntimeout = 30\n");
    let json = serde_json::json!({
        "target": "/config/app.conf", "diff": diff(PRE, POST), "rollback": bad_rollback,
        "rationale": "r"
    })
    .to_string();
    let err = draft_of(&run, &site, Kind::Remediate, &json).unwrap_err();
    let pre = hex::encode(Sha256::digest(PRE));
    let got = hex::encode(Sha256::digest("max_connections = 10\ntimeout = 30\n"));
    assert_eq!(
        err.to_string(),
        format!(
            "the rollback for `/config/app.conf` does not restore the pre-image (pre-image sha256 {pre}, rollback gives sha256 {got}); fix the rollback diff, or propose without one (an irreversible change, tiered change-control)"
        )
    );
    // Without a rollback it is a proposal, and an irreversible one.
    let json =
        serde_json::json!({"target": "/config/app.conf", "diff": diff(PRE, POST)}).to_string();
    let draft = draft_of(&run, &site, Kind::Remediate, &json).unwrap();
    assert!(!draft.tier_inputs(None).reversible);
    let Action::File(f) = &draft.actions[0] else {
        panic!()
    };
    assert_eq!(f.pre_sha256, <[u8; 32]>::from(Sha256::digest(PRE)));
    assert_eq!(f.post_sha256, <[u8; 32]>::from(Sha256::digest(POST)));
}

#[test]
fn proposal_for_a_file_outside_the_capsules_grant_is_refused() {
    let host = tempfile::tempdir().unwrap();
    let site = config_site(host.path(), "read-write", true);
    let (_rig, run) = config_run(host.path(), site.clone());
    let json = serde_json::json!({"target": "/etc/shadow", "diff": "", "rollback": ""}).to_string();
    let err = draft_of(&run, &site, Kind::Remediate, &json).unwrap_err();
    assert_eq!(
        err.to_string(),
        "target `/etc/shadow` is not inside a directory granted to this run (granted: /config (read-only)); a capsule proposes changes only to files it was granted"
    );
}

#[test]
fn http_action_to_a_url_outside_egress_is_refused() {
    let host = tempfile::tempdir().unwrap();
    let site = config_site(host.path(), "read-write", true);
    let (_rig, run) = config_run(host.path(), site.clone());
    let json = serde_json::json!({
        "http": {"method": "post", "url": "https://evil.example.net/drop", "body": "x"},
        "rationale": "r"
    })
    .to_string();
    let err = draft_of(&run, &site, Kind::Remediate, &json).unwrap_err();
    assert_eq!(
        err.to_string(),
        "HTTP action POST https://evil.example.net/drop: evil.example.net:443 is not in the run's egress grant; a capsule proposes only requests to destinations in its egress grant, and the site must allow them"
    );
}

#[test]
fn test_capsule_emitting_a_proposal_is_refused_and_recorded() {
    let host = tempfile::tempdir().unwrap();
    let site = config_site(host.path(), "read-only", false);
    let mut rig = rig(&capsule_artifacts::SANDBOX_PROBE, "", site);
    let input = format!(
        r#"{{"actions": [{{"emit-as": {{"label": "proposal", "media-type": "{}"}}}}]}}"#,
        remediation::PROPOSAL_MEDIA_TYPE
    );
    let run = rig.run(&input);
    let outcomes = rig.prepare(&run, &input);
    assert_eq!(outcomes.len(), 1);
    let expected = "capsule `sandbox-probe` 1.0.0 is a `test` capsule and emitted a proposal; only a `remediate` capsule may propose changes (the proposal is refused and recorded)";
    assert_eq!(outcomes[0].as_ref().unwrap_err().to_string(), expected);
    match rig.last_event() {
        evidence::Event::ProposalRefused(r) => {
            assert_eq!(r.reason, expected);
            assert_eq!(r.kind, "test");
        }
        other => panic!("last record is {other:?}"),
    }
}

#[test]
fn oversized_proposal_is_refused_whole_not_digested() {
    let host = tempfile::tempdir().unwrap();
    let site = config_site(host.path(), "read-only", false);
    std::fs::write(host.path().join("app.conf"), PRE).unwrap();
    let mut rig = rig(&capsule_artifacts::CONFIG_FIX, CONFIG_FILES, site);
    // 4,000 missing keys: the diff and its rollback come to about 600 KiB.
    let set: serde_json::Map<String, serde_json::Value> = (0..4000)
        .map(|i| {
            (
                format!("key_{i:05}"),
                serde_json::Value::from("v".repeat(60)),
            )
        })
        .collect();
    let input = serde_json::json!({"path": "/config/app.conf", "set": set}).to_string();
    let run = rig.run(&input);
    assert!(
        !run.report.evidence.iter().any(remediation::is_proposal),
        "no digest-only proposal is kept"
    );
    assert_eq!(run.report.proposals_refused.len(), 1);
    let (size, _) = run.report.proposals_refused[0];
    assert!(size > remediation::MAX_PROPOSAL_BYTES as u64, "{size}");
    let outcomes = rig.prepare(&run, &input);
    let expected = format!(
        "proposal is {size} bytes, over the 524288-byte maximum (remediation::Limits::max_proposal_bytes); it is refused whole, nothing of it is kept as a digest — split the change into smaller proposals"
    );
    assert_eq!(outcomes[0].as_ref().unwrap_err().to_string(), expected);
    match rig.last_event() {
        evidence::Event::ProposalRefused(r) => {
            assert_eq!(r.reason, expected);
            assert_eq!(r.item_size, size);
        }
        other => panic!("last record is {other:?}"),
    }
}

#[test]
fn proposal_under_the_inline_cap_and_over_it_is_kept_whole() {
    // 100 missing keys: a diff of ~9 KiB, over the 4 KiB inline cap for ordinary items.
    let host = tempfile::tempdir().unwrap();
    let site = config_site(host.path(), "read-only", false);
    std::fs::write(host.path().join("app.conf"), PRE).unwrap();
    let mut rig = rig(&capsule_artifacts::CONFIG_FIX, CONFIG_FILES, site);
    let set: serde_json::Map<String, serde_json::Value> = (0..100)
        .map(|i| {
            (
                format!("key_{i:05}"),
                serde_json::Value::from("v".repeat(60)),
            )
        })
        .collect();
    let input = serde_json::json!({"path": "/config/app.conf", "set": set}).to_string();
    let run = rig.run(&input);
    let item = run
        .report
        .evidence
        .iter()
        .find(|i| remediation::is_proposal(i))
        .unwrap();
    assert!(item.size > 4096);
    assert_eq!(item.inline.as_ref().unwrap().len() as u64, item.size);
}

/// A file action for `host`/app.conf as the runner would state it.
fn file_action(host: &Path) -> remediation::FileAction {
    remediation::FileAction {
        path: edge_runner::capsule::AbsPath::parse("/config/app.conf").unwrap(),
        host: host.join("app.conf"),
        diff: diff(PRE, POST),
        rollback: Some(diff(POST, PRE)),
        pre_sha256: Sha256::digest(PRE).into(),
        post_sha256: Sha256::digest(POST).into(),
    }
}

#[test]
fn target_replaced_by_a_symlink_is_refused() {
    let host = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), PRE).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), host.path().join("app.conf"))
        .unwrap();
    let site = config_site(host.path(), "read-write", true);
    let err =
        apply::check_target(&site, &file_action(host.path()), &RemLimits::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "target /config/app.conf: the target file is a symbolic link (or not a directory); the runner writes only through real directories to regular files, and wrote nothing"
    );
    assert_eq!(
        std::fs::read_to_string(outside.path().join("secret")).unwrap(),
        PRE
    );
}

#[test]
fn parent_directory_replaced_by_a_symlink_is_refused() {
    let host = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("app.conf"), PRE).unwrap();
    std::os::unix::fs::symlink(outside.path(), host.path().join("sub")).unwrap();
    let site = config_site(host.path(), "read-write", true);
    let mut action = file_action(host.path());
    action.path = edge_runner::capsule::AbsPath::parse("/config/sub/app.conf").unwrap();
    action.host = host.path().join("sub/app.conf");
    let err = apply::check_target(&site, &action, &RemLimits::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "target /config/sub/app.conf: parent directory /config/sub is a symbolic link (or not a directory); the runner writes only through real directories to regular files, and wrote nothing"
    );
}

#[test]
fn target_outside_a_read_write_grant_is_refused() {
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("app.conf"), PRE).unwrap();
    let action = file_action(host.path());
    // No [[apply]] entry.
    let site = config_site(host.path(), "read-write", false);
    let err = apply::check_target(&site, &action, &RemLimits::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "target /config/app.conf is outside a read-write apply grant: site `plant-7` grants apply beneath nothing (site-policy.toml [[apply]]); add an [[apply]] entry for its directory to let the runner change it"
    );
    // An [[apply]] entry over a read-only directory.
    let site = config_site(host.path(), "read-only", true);
    let err = apply::check_target(&site, &action, &RemLimits::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "target /config/app.conf is outside a read-write apply grant: site `plant-7` maps /config read-only, and apply needs read-write"
    );
}

#[test]
fn target_drifted_since_proposal_is_refused() {
    let host = tempfile::tempdir().unwrap();
    std::fs::write(
        host.path().join("app.conf"),
        "max_connections = 75\ntimeout = 30\n",
    )
    .unwrap();
    let site = config_site(host.path(), "read-write", true);
    let err =
        apply::check_target(&site, &file_action(host.path()), &RemLimits::default()).unwrap_err();
    assert!(matches!(err, ApplyError::Drifted { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "target /config/app.conf drifted since the proposal: its SHA-256 is {}, the proposal was made against {}; nothing was written — propose again against the current file",
            hex::encode(Sha256::digest("max_connections = 75\ntimeout = 30\n")),
            hex::encode(Sha256::digest(PRE))
        )
    );
}

// ---- The auditor, given forged logs (signed by the runner key, rules skipped) ----

fn forged_log(events: Vec<evidence::Event>) -> (Vec<u8>, SecretKey) {
    let key = SecretKey::generate().unwrap();
    let opened = evidence::Event::from(LogOpened {
        runner_key: *key.public().as_bytes(),
        runner_version: "0.1.0".into(),
        torn_bytes_dropped: 0,
    });
    let mut prev = evidence::GENESIS_PREV;
    let mut bytes = Vec::new();
    for (seq, event) in std::iter::once(opened).chain(events).enumerate() {
        let record = evidence::Record {
            log_id: [7; 16],
            seq: seq as u64,
            prev,
            time_ms: 1_800_000_000_000 + seq as u64,
            event: event.name().into(),
            body: event.body(),
        };
        let signed = evidence::sign_record(record, &key).unwrap();
        prev = signed.hash;
        bytes.extend_from_slice(&signed.bytes);
    }
    (bytes, key)
}

fn proposed(tier: &str) -> (evidence::Event, [u8; 32]) {
    let statement = format!("statement at {tier}").into_bytes();
    let digest: [u8; 32] = Sha256::digest(&statement).into();
    (
        ProposalRecorded {
            digest,
            statement,
            tier: tier.into(),
            run_record: 0,
        }
        .into(),
        digest,
    )
}

fn approval(proposal: [u8; 32], person: &str) -> evidence::Event {
    ApprovalChecked {
        proposal,
        person: person.into(),
        key_id: [1; 32],
        decision: "approve".into(),
        counted: true,
        why_not: None,
        approval: vec![0xa0],
    }
    .into()
}

fn authorization(proposal: [u8; 32], tier: &str, approvers: &[&str]) -> evidence::Event {
    AuthorizationRecorded {
        proposal,
        tier: tier.into(),
        approvers: approvers.iter().map(ToString::to_string).collect(),
        required: 0,
        break_glass: false,
        governance_version: 1,
        governance_sha256: [2; 32],
        review_due: None,
    }
    .into()
}

fn started(proposal: [u8; 32], authorization: u64) -> evidence::Event {
    ApplyStarted {
        proposal,
        authorization,
    }
    .into()
}

fn applied(proposal: [u8; 32], apply_started: u64) -> evidence::Event {
    Applied {
        proposal,
        apply_started,
        result: "applied".into(),
        recovered: false,
        detail: String::new(),
    }
    .into()
}

#[test]
fn auditor_given_an_apply_without_authorization_reports_invalid_naming_the_record() {
    let (p, d) = proposed("single-approver");
    let (bytes, key) = forged_log(vec![p, started(d, 1)]);
    let failure = evidence::verify_log(&bytes, &key.public()).unwrap_err();
    assert_eq!(
        failure.to_string(),
        format!(
            "record 2 breaks the remediation rules: `apply-started` of proposal {} names record 1 as its authorization, but no `authorization` of that proposal precedes it",
            hex::encode(&d[..8])
        )
    );
}

#[test]
fn auditor_given_one_approval_for_change_control_reports_invalid_naming_the_record() {
    let (p, d) = proposed("change-control");
    let (bytes, key) = forged_log(vec![
        p,
        approval(d, "alice"),
        authorization(d, "change-control", &["alice"]),
        started(d, 3),
    ]);
    let failure = evidence::verify_log(&bytes, &key.public()).unwrap_err();
    assert_eq!(
        failure.to_string(),
        format!(
            "record 3 breaks the remediation rules: `authorization` of proposal {} at tier change-control has 1 approver(s), fewer than the 2 the tier requires",
            hex::encode(&d[..8])
        )
    );
}

#[test]
fn auditor_given_an_approver_whose_approval_did_not_count_reports_invalid() {
    let (p, d) = proposed("change-control");
    let (bytes, key) = forged_log(vec![
        p,
        approval(d, "alice"),
        authorization(d, "change-control", &["alice", "mallory"]),
    ]);
    let failure = evidence::verify_log(&bytes, &key.public()).unwrap_err();
    assert_eq!(
        failure.to_string(),
        format!(
            "record 3 breaks the remediation rules: `authorization` of proposal {} counts `mallory`, whose approval is not recorded as counted before it",
            hex::encode(&d[..8])
        )
    );
}

#[test]
fn apply_twice_replay_is_invalid_and_the_writer_refuses_it() {
    let (p, d) = proposed("single-approver");
    let events = vec![
        p,
        approval(d, "alice"),
        authorization(d, "single-approver", &["alice"]),
        started(d, 3),
        applied(d, 4),
        started(d, 3),
    ];
    let (bytes, key) = forged_log(events.clone());
    let failure = evidence::verify_log(&bytes, &key.public()).unwrap_err();
    let expected = format!(
        "record 6 breaks the remediation rules: `apply-started` applies proposal {} a second time (first applied at record 4); a proposal applies once",
        hex::encode(&d[..8])
    );
    assert_eq!(failure.to_string(), expected);
    // The runner's own writer applies the same rule before it signs.
    let dir = tempfile::tempdir().unwrap();
    let mut log = EvidenceLog::open(dir.path(), SecretKey::generate().unwrap()).unwrap();
    let n = events.len();
    for e in &events[..n - 1] {
        log.record(e).unwrap();
    }
    let err = log.record(&events[n - 1]).unwrap_err();
    assert!(
        err.to_string().contains(&expected["record 6 ".len()..]),
        "{err}"
    );
    assert_eq!(log.proposal_mark(&d).unwrap().started, Some(4));
}

// ---- With the demo governance: staging, authorization, apply, verify, rollback ----

fn repo(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)).unwrap()
}

fn demo_key(name: &str) -> SecretKey {
    SecretKey::from_pem(&repo(&format!("keys/{name}.key")), Path::new(name)).unwrap()
}

const PASSING: &str =
    r#"{"document": {"status": "up"}, "assertions": [{"pointer": "/status", "equals": "up"}]}"#;
const FAILING: &str =
    r#"{"document": {"status": "down"}, "assertions": [{"pointer": "/status", "equals": "up"}]}"#;

/// The demo trust store and governance, a `demo-site` session whose /config
/// (app.conf = PRE) the runner may apply to, and signed json-assert and config-fix.
struct GovRig {
    session: Session,
    root: TrustRoot,
    gov: edge_runner::governance::Governance,
    host: tempfile::TempDir,
    capsules: tempfile::TempDir,
    json_assert: Vec<u8>,
    config_fix: Vec<u8>,
    /// The runner's public key (its log is in `_dirs`/evidence).
    runner: edge_runner::keys::PublicKey,
    /// config-fix's input (default: [`FIX_INPUT`]).
    input: String,
    /// The runner's key, PEM, to open its log again.
    runner_pem: String,
    _dirs: tempfile::TempDir,
}

fn gov_rig(staged_input: &str) -> GovRig {
    gov_rig_with(staged_input, None)
}

/// [`gov_rig`], where config-fix may also reach `127.0.0.1:PORT` over HTTP
/// (its manifest asks, the site policy allows, both publishers' ceilings cover it).
fn gov_rig_with(staged_input: &str, egress_port: Option<u16>) -> GovRig {
    gov_rig_edited(staged_input, egress_port, &|_| {})
}

/// [`gov_rig_with`], with the governance sources edited before they are signed.
fn gov_rig_edited(
    staged_input: &str,
    egress_port: Option<u16>,
    edit: &dyn Fn(&mut edge_runner::governance::Sources),
) -> GovRig {
    use edge_runner::trust::{RootPolicy, SignedRoot, store};
    let dirs = tempfile::tempdir().unwrap();
    let trust = dirs.path().join("trust");
    let mut root_text = repo("keys/demo-trust-root.toml");
    let (site_egress, caps_egress) = match egress_port {
        Some(port) => {
            // The partner's ceiling (the last one) covers no egress in the demo.
            let partner = "files = [{ path = \"/config\", access = \"read-only\" }]\n\n# Who signs";
            assert!(
                root_text.contains(partner),
                "the demo root's partner ceiling changed"
            );
            root_text = root_text.replace(
                partner,
                "files = [{ path = \"/config\", access = \"read-only\" }]\negress = [\"127.0.0.1:*\"]\n\n# Who signs",
            );
            (
                format!("egress = [\"127.0.0.1:{port}\"]\n"),
                format!("\negress = [\"127.0.0.1:{port}\"]"),
            )
        }
        None => (String::new(), String::new()),
    };
    let policy = RootPolicy::parse(&root_text, "demo").unwrap();
    store::install(
        &trust,
        &SignedRoot::sign_new(&policy, &demo_key("demo-root")).unwrap(),
        Timestamp::now(),
    )
    .unwrap();
    let root = store::load(&trust, Timestamp::now()).unwrap();
    let mut sources = edge_runner::governance::Sources {
        governance: repo("examples/governance/governance.toml"),
        catalog: vec![(
            "catalog-info.yaml".into(),
            repo("examples/governance/catalog-info.yaml"),
        )],
        policy: repo("examples/governance/tiers.cedar"),
    };
    edit(&mut sources);
    let signed = edge_runner::governance::SignedBundle::sign_new(
        &sources,
        &demo_key("demo-governance-admin"),
    )
    .unwrap();
    let gov = edge_runner::governance::install(&trust, &signed, &root, Timestamp::now()).unwrap();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("app.conf"), PRE).unwrap();
    let site = SitePolicy::parse(
        &format!(
            "format = 1\nsite = \"demo-site\"\n{site_egress}[[directory]]\npath = \"/config\"\nhost = \"{}\"\naccess = \"read-write\"\n[[apply]]\npath = \"/config\"\n",
            host.path().display()
        ),
        "site-policy.toml",
    )
    .unwrap();
    let publisher = demo_key("demo-publisher");
    let sign = |c: &capsule_artifacts::Capsule, caps: &str| {
        let mut source = ManifestSource::parse(c.manifest, Path::new(c.manifest_path)).unwrap();
        source.capabilities = toml::from_str(caps).unwrap();
        capsule::sign(c.component, &source, &publisher, Timestamp::now()).unwrap()
    };
    let json_assert = sign(&capsule_artifacts::JSON_ASSERT, "");
    let config_fix = capsule::cosign(
        &sign(
            &capsule_artifacts::CONFIG_FIX,
            &format!("{CONFIG_FILES}{caps_egress}"),
        ),
        &demo_key("demo-partner"),
        &[publisher.public()],
        Timestamp::now(),
    )
    .unwrap();
    let capsules = tempfile::tempdir().unwrap();
    std::fs::write(
        capsules.path().join("json-assert.signed.wasm"),
        &json_assert,
    )
    .unwrap();
    std::fs::write(capsules.path().join("json-assert.input"), staged_input).unwrap();
    let runner_key = SecretKey::generate().unwrap();
    let runner = runner_key.public();
    let runner_pem = runner_key.to_pem().unwrap();
    let session = Session::with_policy(
        EvidenceLog::open(&dirs.path().join("evidence"), runner_key).unwrap(),
        Limits::default(),
        site,
    )
    .unwrap();
    GovRig {
        session,
        root,
        gov,
        host,
        capsules,
        json_assert,
        config_fix,
        runner,
        input: FIX_INPUT.to_string(),
        runner_pem,
        _dirs: dirs,
    }
}

const FIX_INPUT: &str = r#"{"path": "/config/app.conf", "set": {"max_connections": "200"}}"#;

impl GovRig {
    /// Applies `auth`, verifying with the capsule `verify`, notifying `webhooks`.
    fn apply(
        &mut self,
        auth: apply::Authorization,
        verify: Vec<u8>,
        webhooks: Vec<String>,
    ) -> Result<apply::ApplyReport, ApplyError> {
        apply::apply(
            apply::ApplyContext {
                session: &mut self.session,
                root: &self.root,
                verify_capsule: raw(verify),
                limits: RemLimits::default(),
                webhooks,
            },
            auth,
        )
    }

    fn propose(&mut self) -> Result<remediation::Proposal, RemediationError> {
        let verified = self
            .session
            .verify(raw(self.config_fix.clone()), &self.root)
            .unwrap();
        let run = self.session.run(verified, self.input.as_bytes()).unwrap();
        let root = self.root.clone();
        let mut outcomes = remediation::prepare_run(
            &mut self.session,
            &run,
            self.input.as_bytes(),
            &Prepare {
                governance: Some(&self.gov),
                governance_origin: "test",
                root: &root,
                capsules: self.capsules.path(),
                proposer: "agent-7",
                limits: RemLimits::default(),
            },
        )
        .unwrap();
        assert_eq!(outcomes.len(), 1);
        outcomes.remove(0)
    }

    fn approve(
        &self,
        p: &remediation::Proposal,
        person: &str,
    ) -> edge_runner::governance::Approval {
        let now = Timestamp::now();
        edge_runner::governance::Approval::sign(
            edge_runner::governance::approval::Statement {
                proposal: p.digest(),
                decision: edge_runner::governance::ApprovalDecision::Approve,
                tier: p.tier(),
                reason: "reviewed".into(),
                person: person.into(),
                signed_at: now,
                expires: Timestamp(now.0 + 3600),
            },
            &demo_key(&format!("demo-approver-{person}")),
        )
        .unwrap()
    }
}

#[test]
fn staged_validation_regression_stops_the_proposal() {
    let mut rig = gov_rig(FAILING);
    let err = rig.propose().unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(
            "staged validation regressed resource:default/app-config: the proposal is stopped (the staged runs are records "
        ),
        "{text}"
    );
    // The target was never touched; staging wrote only its scratch copy.
    assert_eq!(
        std::fs::read_to_string(rig.host.path().join("app.conf")).unwrap(),
        PRE
    );
}

#[test]
fn change_control_proposal_applies_with_two_approvals_and_not_one() {
    let mut rig = gov_rig(PASSING);
    let p = rig.propose().unwrap();
    assert_eq!(p.tier().as_str(), "change-control");
    let staged = p.staged().unwrap();
    assert_eq!(staged.passed, ["resource:default/app-config"]);
    let alice = rig.approve(&p, "alice");
    let err = apply::authorize(
        &mut rig.session,
        &rig.gov,
        p.clone(),
        std::slice::from_ref(&alice),
        Timestamp::now(),
    )
    .err()
    .unwrap();
    assert!(matches!(err, ApplyError::NotAuthorized { .. }), "{err}");
    let bob = rig.approve(&p, "bob");
    let auth = apply::authorize(
        &mut rig.session,
        &rig.gov,
        p,
        &[alice, bob],
        Timestamp::now(),
    )
    .unwrap();
    let report = rig.apply(auth, rig.config_fix.clone(), Vec::new()).unwrap();
    assert_eq!(report.verdict, "pass");
    assert_eq!(report.approvers, ["alice", "bob"]);
    assert_eq!(
        std::fs::read_to_string(rig.host.path().join("app.conf")).unwrap(),
        POST
    );
}

#[test]
fn verify_fails_then_rolled_back() {
    let mut rig = gov_rig(PASSING);
    let p = rig.propose().unwrap();
    // The same change, with a verify plan that cannot pass: json-assert on a failing document.
    let mut draft = p.draft().clone();
    let checked = edge_runner::capsule::RawCapsule {
        component: rig.json_assert.clone(),
        detached_signature: None,
    }
    .check()
    .unwrap();
    draft.verify = remediation::VerifyPlan {
        capsule: "json-assert".into(),
        version: "1.0.0".into(),
        module_sha256: checked.module_digest(),
        input: FAILING.as_bytes().to_vec(),
    };
    let decision = rig.gov.derive(&draft.tier_inputs(p.staged()));
    let p =
        remediation::Proposal::seal(draft, p.staged().cloned(), &decision, &RemLimits::default())
            .unwrap();
    rig.session
        .record(ProposalRecorded {
            digest: p.digest(),
            statement: p.statement_bytes().to_vec(),
            tier: p.tier().as_str().into(),
            run_record: 0,
        })
        .unwrap();
    let approvals = [rig.approve(&p, "alice"), rig.approve(&p, "bob")];
    let auth = apply::authorize(
        &mut rig.session,
        &rig.gov,
        p.clone(),
        &approvals,
        Timestamp::now(),
    )
    .unwrap();
    let err = rig
        .apply(auth, rig.json_assert.clone(), Vec::new())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the change to proposal {} did not hold: verify fail; the pre-authorized rollback was applied and recorded",
            p.id()
        )
    );
    assert_eq!(
        std::fs::read_to_string(rig.host.path().join("app.conf")).unwrap(),
        PRE
    );
}

impl GovRig {
    /// Proposes, has alice and bob approve, and authorizes (under `self.gov`).
    fn authorized(&mut self) -> Result<(), ApplyError> {
        let p = self.propose().unwrap();
        let approvals = [self.approve(&p, "alice"), self.approve(&p, "bob")];
        apply::authorize(
            &mut self.session,
            &self.gov,
            p,
            &approvals,
            Timestamp::now(),
        )
        .map(drop)
    }

    /// Rotates the trust store to v2, whose `[governance]` administrator is a
    /// new key; the session goes on under v2.
    fn rotate_governance_admin(&mut self) {
        use edge_runner::trust::{RootPolicy, SignedRoot, store};
        let trust = self._dirs.path().join("trust");
        let old_admin = demo_key("demo-governance-admin").public().to_pem().unwrap();
        let new_admin = SecretKey::generate().unwrap().public().to_pem().unwrap();
        let text = repo("keys/demo-trust-root.toml");
        assert!(
            text.contains(old_admin.trim()),
            "the demo root names the demo admin"
        );
        let text = text
            .replacen("version = 1", "version = 2", 1)
            .replace(old_admin.trim(), new_admin.trim());
        let v2 = RootPolicy::parse(&text, "v2").unwrap();
        store::install(
            &trust,
            &SignedRoot::sign_new(&v2, &demo_key("demo-root")).unwrap(),
            Timestamp::now(),
        )
        .unwrap();
        self.root = store::load(&trust, Timestamp::now()).unwrap();
    }

    /// Closes the log and verifies the exported bundle offline.
    fn audit(self) -> edge_runner::audit::Report {
        let GovRig {
            session,
            runner,
            _dirs: dirs,
            ..
        } = self;
        drop(session); // closes the log
        let bundle = edge_runner::evidence::bundle::Bundle::export(
            &dirs.path().join("evidence"),
            runner,
            Some(&dirs.path().join("trust")),
        )
        .unwrap();
        edge_runner::audit::verify_bundle(&bundle, Some(&runner), &[], &mut |_, _| {})
    }
}

/// Governance is judged under the trust root version in force when it was
/// used. After the trust root hands governance to a new administrator, an
/// earlier authorization still re-checks (it was judged by the newest
/// version, and failed); an authorization made later under governance that
/// only the removed administrator signed is INVALID, naming the record.
#[test]
fn governance_is_rechecked_under_the_trust_root_in_force_at_each_authorization() {
    let mut rig = gov_rig(PASSING);
    rig.authorized().unwrap();
    rig.rotate_governance_admin();
    let report = rig.audit();
    assert!(report.valid(), "{:?}", report.failure);
    assert_eq!(report.remediations.len(), 1);

    // An embedder that keeps using the governance the old administrator
    // signed after the rotation: the offline verifier refuses it.
    let mut rig = gov_rig(PASSING);
    rig.rotate_governance_admin();
    rig.authorized().unwrap();
    let report = rig.audit();
    let failure = report.failure.unwrap_or_default();
    assert!(
        failure.contains(
            "which the administrators of trust root v2 (in force at that record) did not sign"
        ),
        "{failure}"
    );
    assert!(failure.starts_with("record "), "{failure}");
}

/// A break-glass authorization names when its quorum post-review is due; the
/// auditor's report says OVERDUE once the log runs past that time without one,
/// "not yet" before, and LATE or in time once one is recorded.
#[test]
fn break_glass_without_post_review_in_its_window_is_reported_overdue() {
    let report = |review_due: u64, reviewed: bool| {
        let (p, d) = proposed("change-control");
        let mut events = vec![
            p,
            ApprovalChecked {
                proposal: d,
                person: "alice".into(),
                key_id: [1; 32],
                decision: "break-glass".into(),
                counted: true,
                why_not: None,
                approval: vec![0xa0],
            }
            .into(),
            AuthorizationRecorded {
                proposal: d,
                tier: "change-control".into(),
                approvers: vec!["alice".into()],
                required: 2,
                break_glass: true,
                governance_version: 1,
                governance_sha256: [2; 32],
                review_due: Some(review_due),
            }
            .into(),
        ];
        if reviewed {
            events.push(
                PostReview {
                    proposal: d,
                    reviewers: vec!["alice".into(), "bob".into()],
                    complete: true,
                }
                .into(),
            );
        }
        // Records are written at 1_800_000_000 s (plus a millisecond each).
        let (bytes, key) = forged_log(events);
        let report =
            edge_runner::audit::verify_log_report(&bytes, &key.public(), &[], &mut |_, _| {});
        assert!(report.valid(), "{:?}", report.failure);
        report.remediations[0].review.clone().unwrap()
    };
    assert_eq!(
        report(1_799_999_000, false),
        "WARNING: OVERDUE — no quorum post-review recorded; it was due by 2027-01-15T07:43:20Z"
    );
    assert_eq!(
        report(1_800_001_000, false),
        "WARNING: no quorum post-review recorded yet; due by 2027-01-15T08:16:40Z"
    );
    assert_eq!(
        report(1_799_999_000, true),
        "post-reviewed LATE: record 4 at 2027-01-15T08:00:00Z, due by 2027-01-15T07:43:20Z"
    );
    assert_eq!(
        report(1_800_001_000, true),
        "post-reviewed in time: record 4 at 2027-01-15T08:00:00Z, due by 2027-01-15T08:16:40Z"
    );
}

/// End to end: alice breaks glass; the authorization records when the
/// post-review is due (the governance's default 72 hours), the offline
/// verifier re-checks it and reports the review as not yet recorded.
#[test]
fn break_glass_authorization_records_when_its_post_review_is_due() {
    let mut rig = gov_rig(PASSING);
    let p = rig.propose().unwrap();
    let now = Timestamp::now();
    let glass = edge_runner::governance::Approval::sign(
        edge_runner::governance::approval::Statement {
            proposal: p.digest(),
            decision: edge_runner::governance::ApprovalDecision::BreakGlass,
            tier: p.tier(),
            reason: "payments down, pool exhausted".into(),
            person: "alice".into(),
            signed_at: now,
            expires: Timestamp(now.0 + 3600),
        },
        &demo_key("demo-approver-alice"),
    )
    .unwrap();
    let auth = apply::authorize(&mut rig.session, &rig.gov, p, &[glass], now).unwrap();
    assert!(auth.authorized().break_glass());
    let report = rig.audit();
    assert!(report.valid(), "{:?}", report.failure);
    let due = Timestamp(now.0 + 72 * 3600).to_string();
    assert_eq!(
        report.remediations[0].review.as_deref(),
        Some(format!("WARNING: no quorum post-review recorded yet; due by {due}").as_str())
    );
}

/// One setting served over HTTP on 127.0.0.1: `GET` answers its value, `PUT`
/// sets it (unless `frozen`: then it answers 200 and keeps the old value, a
/// change that does not hold). Every request is kept as (method, body).
struct FlagServer {
    port: u16,
    state: std::sync::Arc<std::sync::Mutex<FlagState>>,
}

struct FlagState {
    value: String,
    frozen: bool,
    requests: Vec<(String, String)>,
}

impl FlagServer {
    fn start(value: &str, frozen: bool) -> Self {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = std::sync::Arc::new(std::sync::Mutex::new(FlagState {
            value: value.into(),
            frozen,
            requests: Vec::new(),
        }));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let method = line.split(' ').next().unwrap_or("").to_string();
                let mut length = 0;
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = header.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let body = String::from_utf8_lossy(&body).into_owned();
                let answer = {
                    let mut s = shared.lock().unwrap();
                    s.requests.push((method.clone(), body.clone()));
                    if method == "PUT" && !s.frozen {
                        s.value = body;
                    }
                    s.value.clone()
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            }
        });
        FlagServer { port, state }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/flags/pool", self.port)
    }

    fn requests(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().requests.clone()
    }
}

/// A rig whose config-fix checks the flag served by `server` (wants 200).
fn flag_rig(server: &FlagServer) -> GovRig {
    let mut rig = gov_rig_with(PASSING, Some(server.port));
    rig.input = format!(r#"{{"url": "{}", "want": "200"}}"#, server.url());
    rig
}

/// An HTTP action end to end: config-fix finds the flag drifted and proposes
/// a PUT (with a PUT of the old value as rollback); two approvers authorize;
/// the runner sends exactly the approved request, once, and the verify run
/// (config-fix again) finds the flag holds.
#[test]
fn http_action_is_applied_exactly_once_and_verified() {
    let server = FlagServer::start("50", false);
    let mut rig = flag_rig(&server);
    let p = rig.propose().unwrap();
    let Action::Http(h) = &p.draft().actions[0] else {
        panic!("an HTTP action: {:?}", p.draft().actions)
    };
    assert_eq!(h.request.method, "PUT");
    assert_eq!(h.request.body, b"200");
    assert_eq!(p.tier().as_str(), "change-control", "an unmapped target");
    assert_eq!(server.requests(), [("GET".into(), String::new())]);
    let approvals = [rig.approve(&p, "alice"), rig.approve(&p, "bob")];
    let auth =
        apply::authorize(&mut rig.session, &rig.gov, p, &approvals, Timestamp::now()).unwrap();
    let report = rig.apply(auth, rig.config_fix.clone(), Vec::new()).unwrap();
    assert_eq!(report.verdict, "pass");
    assert_eq!(
        server.requests(),
        [
            ("GET".into(), String::new()),
            ("PUT".into(), "200".into()),
            ("GET".into(), String::new()),
        ]
    );
    let audit = rig.audit();
    assert!(audit.valid(), "{:?}", audit.failure);
    let chain = &audit.remediations[0];
    assert!(
        chain.applied.as_deref().unwrap().starts_with("applied"),
        "{chain:?}"
    );
    assert!(
        chain.verify.as_deref().unwrap().starts_with("pass (held)"),
        "{chain:?}"
    );
}

/// The server accepts the PUT but the flag does not change: the verify run
/// fails, and the runner sends the pre-authorized rollback request.
#[test]
fn http_action_that_does_not_hold_is_rolled_back_by_its_rollback_request() {
    let server = FlagServer::start("50", true);
    let mut rig = flag_rig(&server);
    let p = rig.propose().unwrap();
    let approvals = [rig.approve(&p, "alice"), rig.approve(&p, "bob")];
    let id = p.id();
    let auth =
        apply::authorize(&mut rig.session, &rig.gov, p, &approvals, Timestamp::now()).unwrap();
    let err = rig
        .apply(auth, rig.config_fix.clone(), Vec::new())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the change to proposal {id} did not hold: verify fail; the pre-authorized rollback was applied and recorded"
        )
    );
    assert_eq!(
        server.requests(),
        [
            ("GET".into(), String::new()),
            ("PUT".into(), "200".into()),
            ("GET".into(), String::new()),
            ("PUT".into(), "50".into()),
        ]
    );
    let audit = rig.audit();
    assert!(audit.valid(), "{:?}", audit.failure);
    assert!(
        audit.remediations[0]
            .rollback
            .as_deref()
            .unwrap()
            .starts_with("rolled-back"),
        "{:?}",
        audit.remediations[0]
    );
}

impl GovRig {
    /// Closes the session and opens the log again under `site` (the site's
    /// operator changed its policy).
    fn reopen_with_site(&mut self, site: SitePolicy) {
        let scratch = self._dirs.path().join("scratch-evidence");
        let placeholder = Session::new(
            EvidenceLog::open(&scratch, SecretKey::generate().unwrap()).unwrap(),
            Limits::default(),
            "demo-site",
        )
        .unwrap();
        drop(std::mem::replace(&mut self.session, placeholder));
        let key = SecretKey::from_pem(&self.runner_pem, Path::new("runner.key")).unwrap();
        self.session = Session::with_policy(
            EvidenceLog::open(&self._dirs.path().join("evidence"), key).unwrap(),
            Limits::default(),
            site,
        )
        .unwrap();
    }
}

/// Egress is judged again at apply: a destination the site stopped allowing
/// after the approvals were signed gets nothing, and the apply is recorded as
/// not applied.
#[test]
fn http_action_to_a_destination_the_site_no_longer_allows_is_not_sent() {
    let server = FlagServer::start("50", false);
    let mut rig = flag_rig(&server);
    let p = rig.propose().unwrap();
    let approvals = [rig.approve(&p, "alice"), rig.approve(&p, "bob")];
    let auth =
        apply::authorize(&mut rig.session, &rig.gov, p, &approvals, Timestamp::now()).unwrap();
    let site = SitePolicy::parse(
        &format!(
            "format = 1\nsite = \"demo-site\"\n[[directory]]\npath = \"/config\"\nhost = \"{}\"\naccess = \"read-write\"\n[[apply]]\npath = \"/config\"\n",
            rig.host.path().display()
        ),
        "site-policy.toml",
    )
    .unwrap();
    rig.reopen_with_site(site);
    let err = rig
        .apply(auth, rig.config_fix.clone(), Vec::new())
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{}", server.port)),
        "{text}"
    );
    assert_eq!(server.requests(), [("GET".into(), String::new())], "{text}");
    let audit = rig.audit();
    assert!(audit.valid(), "{:?}", audit.failure);
    assert!(
        audit.remediations[0]
            .applied
            .as_deref()
            .unwrap()
            .starts_with("not-applied"),
        "{:?}",
        audit.remediations[0]
    );
}

/// Notify-and-proceed: a change to a moderate, fully covered node needs no
/// approval; after it is applied and verified, the tier's webhook gets a JSON
/// notification through the site's egress, and it is recorded.
#[test]
fn notify_and_proceed_posts_to_the_tiers_webhook_and_records_it() {
    let hook = FlagServer::start("", false);
    let url = format!("http://127.0.0.1:{}/hook", hook.port);
    let edit = |sources: &mut edge_runner::governance::Sources| {
        let edited = |text: &str, from: &str, to: &str| {
            assert!(
                text.contains(from),
                "the example governance changed: no {from:?}"
            );
            text.replacen(from, to, 1)
        };
        // app.conf is mapped to the status configuration, made moderate.
        sources.governance = edited(
            &sources.governance,
            "path = \"/config/app.conf\"\nentity = \"resource:default/app-config\"",
            "path = \"/config/app.conf\"\nentity = \"resource:default/status-config\"",
        );
        sources.governance = edited(
            &sources.governance,
            "[tiers.notify-and-proceed]\napprovals = 0\nlifetime-secs = 0\nwebhooks = []",
            &format!(
                "[tiers.notify-and-proceed]\napprovals = 0\nlifetime-secs = 0\nwebhooks = [\"{url}\"]"
            ),
        );
        let catalog = &mut sources.catalog[0].1;
        *catalog = edited(
            catalog,
            "name: status-config\n  annotations:\n    edge-runner.io/criticality: low",
            "name: status-config\n  annotations:\n    edge-runner.io/criticality: moderate",
        );
        *catalog = edited(
            catalog,
            "name: status-page\n  annotations:\n    edge-runner.io/criticality: low\n    edge-runner.io/test-capsules: http-probe",
            "name: status-page\n  annotations:\n    edge-runner.io/criticality: low\n    edge-runner.io/test-capsules: json-assert",
        );
    };
    let mut rig = gov_rig_edited(PASSING, Some(hook.port), &edit);
    let p = rig.propose().unwrap();
    assert_eq!(
        p.tier().as_str(),
        "notify-and-proceed",
        "{:?} {:?}",
        p.staged(),
        p.decision()
    );
    let auth =
        apply::authorize(&mut rig.session, &rig.gov, p.clone(), &[], Timestamp::now()).unwrap();
    let report = rig
        .apply(
            auth,
            rig.config_fix.clone(),
            rig.gov.rule(p.tier()).webhooks.clone(),
        )
        .unwrap();
    assert_eq!(report.verdict, "pass");
    assert_eq!(report.notified, [(url.clone(), "200".to_string())]);
    let requests = hook.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].0, "POST");
    let body: serde_json::Value = serde_json::from_str(&requests[0].1).unwrap();
    assert_eq!(body["proposal"], p.id(), "{body}");
    assert_eq!(body["tier"], "notify-and-proceed", "{body}");
    let audit = rig.audit();
    assert!(audit.valid(), "{:?}", audit.failure);
    assert_eq!(audit.remediations[0].notified, [format!("{url}: 200")]);
}

/// After a break-glass authorization, a quorum reviews it (`proposal
/// review`): their approvals are judged as for an authorization, a complete
/// `post-review` is recorded, and the report says it came in time.
#[test]
fn break_glass_post_reviewed_by_a_quorum_is_reported_in_time() {
    let mut rig = gov_rig(PASSING);
    let p = rig.propose().unwrap();
    let now = Timestamp::now();
    let sign = |person: &str, decision| {
        edge_runner::governance::Approval::sign(
            edge_runner::governance::approval::Statement {
                proposal: p.digest(),
                decision,
                tier: p.tier(),
                reason: "reviewed after the incident".into(),
                person: person.into(),
                signed_at: now,
                expires: Timestamp(now.0 + 3600),
            },
            &demo_key(&format!("demo-approver-{person}")),
        )
        .unwrap()
    };
    let glass = sign(
        "alice",
        edge_runner::governance::ApprovalDecision::BreakGlass,
    );
    apply::authorize(&mut rig.session, &rig.gov, p.clone(), &[glass], now).unwrap();
    // One reviewer is not the quorum: refused, and the warning stays.
    let alice = sign("alice", edge_runner::governance::ApprovalDecision::Approve);
    let bob = sign("bob", edge_runner::governance::ApprovalDecision::Approve);
    let complete = apply::post_review(
        &mut rig.session,
        &rig.gov,
        p.clone(),
        std::slice::from_ref(&alice),
        now,
    );
    let err = complete.unwrap_err().to_string();
    assert!(
        err.contains("the post-review does not meet the tier's quorum")
            && err.contains("has 1 of the 2 approvals"),
        "{err}"
    );
    let complete = apply::post_review(&mut rig.session, &rig.gov, p, &[alice, bob], now).unwrap();
    assert!(complete);
    let report = rig.audit();
    assert!(report.valid(), "{:?}", report.failure);
    let review = report.remediations[0].review.clone().unwrap();
    assert!(
        review.starts_with("post-reviewed in time: record "),
        "{review}"
    );
    assert!(report.remediations[0].post_reviewed);
}

/// An HTTP change cannot be staged (there is no scratch copy of a remote
/// system). Even when its URL maps to a low, fully tested node, the tests are
/// not run against the unchanged system to vouch for it: no validation, so at
/// least single-approver, never auto-merged.
#[test]
fn http_action_is_not_staged_and_never_auto_merges() {
    let server = FlagServer::start("50", false);
    let url = server.url();
    let edit = move |sources: &mut edge_runner::governance::Sources| {
        sources.governance.push_str(&format!(
            "\n[[target]]\nsite = \"demo-site\"\nurl = \"{url}\"\nentity = \"resource:default/status-config\"\n"
        ));
        let catalog = &mut sources.catalog[0].1;
        *catalog = catalog.replacen(
            "name: status-page\n  annotations:\n    edge-runner.io/criticality: low\n    edge-runner.io/test-capsules: http-probe",
            "name: status-page\n  annotations:\n    edge-runner.io/criticality: low\n    edge-runner.io/test-capsules: json-assert",
            1,
        );
    };
    let mut rig = gov_rig_edited(PASSING, Some(server.port), &edit);
    rig.input = format!(r#"{{"url": "{}", "want": "200"}}"#, server.url());
    let p = rig.propose().unwrap();
    assert!(p.staged().is_none(), "{:?}", p.staged());
    assert_eq!(p.tier().as_str(), "single-approver");
    let floors = edge_runner::cbor::MapReader::new("decision", p.decision())
        .unwrap()
        .get("floors")
        .cloned();
    assert_eq!(
        floors,
        Some(ciborium::Value::Array(vec![ciborium::Value::Text(
            "unvalidated".into()
        )]))
    );
    // Only config-fix's own read reached the server: no test ran against it.
    assert_eq!(server.requests(), [("GET".into(), String::new())]);
}
