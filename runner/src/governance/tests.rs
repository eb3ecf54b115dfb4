//! Attacks on governance, each named for the attack and asserting the exact refusal.

use super::approval::Statement;
use super::*;
use crate::keys::{KeyId, PublicKey, SecretKey};
use crate::timestamp::Timestamp;
use crate::trust::RootPolicy;

const CATALOG: &str = include_str!("../../../examples/governance/catalog-info.yaml");
const POLICY: &str = include_str!("../../../examples/governance/tiers.cedar");

/// 2026-12-01T00:00:00Z.
const NOW: Timestamp = Timestamp(1_796_083_200);

struct Fixture {
    admins: Vec<SecretKey>,
    alice: SecretKey,
    alice2: SecretKey,
    bob: SecretKey,
    carol: SecretKey,
    mallory: SecretKey,
    root: RootPolicy,
}

fn pem(key: &SecretKey) -> String {
    key.public().to_pem().unwrap()
}

impl Fixture {
    fn new() -> Self {
        let admins: Vec<SecretKey> = (0..3).map(|_| SecretKey::generate().unwrap()).collect();
        let root_key = SecretKey::generate().unwrap();
        let mut root = format!(
            "format = 1\nname = \"test-root\"\nversion = 1\nexpires = 2036-01-01T00:00:00Z\nroot-threshold = 1\n\
             [[root-key]]\nname = \"root\"\npublic-key = \"\"\"\n{}\"\"\"\n\
             [thresholds.test]\nkeys = 1\norganisations = 1\n\
             [thresholds.reproduce]\nkeys = 1\norganisations = 1\n\
             [thresholds.remediate]\nkeys = 1\norganisations = 1\n\
             [governance]\nthreshold = 2\n",
            pem(&root_key)
        );
        for (i, a) in admins.iter().enumerate() {
            root.push_str(&format!(
                "[[governance.admin]]\nname = \"admin-{i}\"\npublic-key = \"\"\"\n{}\"\"\"\n",
                pem(a)
            ));
        }
        let root = RootPolicy::parse(&root, "test root").unwrap();
        Self {
            admins,
            alice: SecretKey::generate().unwrap(),
            alice2: SecretKey::generate().unwrap(),
            bob: SecretKey::generate().unwrap(),
            carol: SecretKey::generate().unwrap(),
            mallory: SecretKey::generate().unwrap(),
            root,
        }
    }

    fn settings(&self, version: u64, change_control_approvals: u32, extra: &str) -> String {
        let person = |name: &str, keys: &[&SecretKey], tiers: &str, more: &str| {
            let keys: Vec<String> = keys
                .iter()
                .map(|k| format!("\"\"\"\n{}\"\"\"", pem(k)))
                .collect();
            format!(
                "[[person]]\nname = \"{name}\"\npublic-keys = [{}]\ntiers = [{tiers}]\ngroups = [\"payments-team\"]\nexpires = 2036-01-01T00:00:00Z\n{more}\n",
                keys.join(", ")
            )
        };
        let mut text = format!(
            "format = 1\nname = \"site\"\nversion = {version}\nexpires = 2036-01-01T00:00:00Z\n\
             catalog = [\"catalog-info.yaml\"]\npolicy = \"tiers.cedar\"\n{extra}\n\
             [[target]]\nsite = \"demo-site\"\npath = \"/config/app.conf\"\nentity = \"resource:default/app-config\"\n\
             [[target]]\nsite = \"demo-site\"\npath = \"/status/\"\nentity = \"resource:default/status-config\"\n\
             [tiers.auto-merge]\napprovals = 0\nlifetime-secs = 0\n\
             [tiers.notify-and-proceed]\napprovals = 0\nlifetime-secs = 0\n\
             [tiers.single-approver]\napprovals = 1\nlifetime-secs = 86400\n\
             [tiers.change-control]\napprovals = {change_control_approvals}\nlifetime-secs = 86400\ndelay-secs = 3600\n"
        );
        let both = "\"single-approver\", \"change-control\"";
        text.push_str(&person(
            "alice",
            &[&self.alice, &self.alice2],
            both,
            "break-glass = true",
        ));
        text.push_str(&person("bob", &[&self.bob], both, ""));
        text.push_str(&person("carol", &[&self.carol], "\"single-approver\"", ""));
        text.push_str(&format!(
            "[[person]]\nname = \"dave\"\npublic-keys = [\"\"\"\n{}\"\"\"]\ntiers = [{both}]\nexpires = 2026-06-01T00:00:00Z\n",
            pem(&self.mallory)
        ));
        text
    }

    fn sources(&self, settings: String, catalog: &str, policy: &str) -> Sources {
        Sources {
            governance: settings,
            catalog: vec![("catalog-info.yaml".into(), catalog.into())],
            policy: policy.into(),
        }
    }

    fn sign(&self, sources: &Sources, signers: usize) -> Vec<u8> {
        let mut bytes = bundle::SignedBundle::sign_new(sources, &self.admins[0]).unwrap();
        for a in &self.admins[1..signers] {
            bytes = bundle::SignedBundle::parse(&bytes, "t")
                .unwrap()
                .add_signature(a)
                .unwrap();
        }
        bytes
    }

    fn governance_with(&self, settings: String, catalog: &str, policy: &str) -> Governance {
        let bytes = self.sign(&self.sources(settings, catalog, policy), 2);
        Governance::from_signed(&bytes, &self.root, Some(NOW)).unwrap()
    }

    fn governance(&self) -> Governance {
        self.governance_with(self.settings(1, 2, ""), CATALOG, POLICY)
    }
}

#[derive(Debug)]
struct TestProposal {
    digest: [u8; 32],
    inputs: TierInputs,
    recorded: Tier,
    proposer: String,
    signers: Vec<KeyId>,
    publishers: Vec<String>,
    at: Timestamp,
}

impl Proposed for TestProposal {
    fn digest(&self) -> [u8; 32] {
        self.digest
    }
    fn tier_inputs(&self) -> TierInputs {
        self.inputs.clone()
    }
    fn recorded_tier(&self) -> Tier {
        self.recorded
    }
    fn proposer(&self) -> &str {
        &self.proposer
    }
    fn capsule_signers(&self) -> &[KeyId] {
        &self.signers
    }
    fn capsule_publishers(&self) -> &[String] {
        &self.publishers
    }
    fn proposed_at(&self) -> Timestamp {
        self.at
    }
}

fn file(path: &str) -> Target {
    Target::File {
        site: "demo-site".into(),
        path: path.into(),
    }
}

fn full_validation(nodes: &[&str]) -> Option<Validation> {
    let all: Vec<String> = nodes.iter().map(|s| s.to_string()).collect();
    Some(Validation {
        exercised: all.clone(),
        passed: all,
        regressed: Vec::new(),
    })
}

fn config_inputs() -> TierInputs {
    TierInputs {
        targets: vec![file("/config/app.conf")],
        reversible: true,
        validation: full_validation(&[
            "resource:default/app-config",
            "component:default/payments-api",
            "component:default/checkout-web",
        ]),
        change_bytes: 120,
        declared_tier: None,
    }
}

fn status_inputs() -> TierInputs {
    TierInputs {
        targets: vec![file("/status/page.json")],
        reversible: true,
        validation: full_validation(&[
            "resource:default/status-config",
            "component:default/status-page",
        ]),
        change_bytes: 40,
        declared_tier: Some(Tier::AutoMerge),
    }
}

fn proposal(gov: &Governance, inputs: TierInputs) -> TestProposal {
    let recorded = gov.derive(&inputs).tier;
    TestProposal {
        digest: [7; 32],
        inputs,
        recorded,
        proposer: "agent-7".into(),
        signers: Vec::new(),
        publishers: Vec::new(),
        at: Timestamp(NOW.0 - 7200),
    }
}

fn approve(key: &SecretKey, person: &str, digest: [u8; 32], tier: Tier) -> Approval {
    sign_as(key, person, digest, tier, ApprovalDecision::Approve)
}

fn sign_as(
    key: &SecretKey,
    person: &str,
    digest: [u8; 32],
    tier: Tier,
    decision: ApprovalDecision,
) -> Approval {
    Approval::sign(
        Statement {
            proposal: digest,
            decision,
            tier,
            reason: "reviewed the diff and the verify plan".into(),
            person: person.into(),
            signed_at: Timestamp(NOW.0 - 600),
            expires: Timestamp(NOW.0 + 3600),
        },
        key,
    )
    .unwrap()
}

fn refusal(gov: &Governance, p: TestProposal, approvals: &[Approval]) -> String {
    match authorize(gov, p, approvals, NOW) {
        Ok(a) => panic!("authorized: {:?}", a.approvers()),
        Err(r) => r.error.to_string(),
    }
}

fn why_not(gov: &Governance, p: TestProposal, approvals: &[Approval]) -> Vec<Option<String>> {
    match authorize(gov, p, approvals, NOW) {
        Ok(a) => a.verdicts().iter().map(|v| v.why_not.clone()).collect(),
        Err(r) => r.verdicts.iter().map(|v| v.why_not.clone()).collect(),
    }
}

const D: &str = "0707070707070707";

#[test]
fn demo_config_target_reaches_payments_and_is_change_control() {
    let f = Fixture::new();
    let gov = f.governance();
    let d = gov.derive(&config_inputs());
    assert_eq!(d.tier, Tier::ChangeControl);
    assert_eq!(
        d.blast_radius,
        [
            "component:default/checkout-web",
            "component:default/payments-api",
            "resource:default/app-config"
        ]
    );
    assert_eq!(d.sensitive, ["payments"]);
    assert!(d.reachable);
    assert_eq!(
        d.blast_path,
        [
            "resource:default/app-config",
            "component:default/payments-api"
        ]
    );
    assert_eq!(
        d.policy_ids,
        [
            "change-control-reachable",
            "change-control-regulated-auth-payments"
        ]
    );
    assert_eq!(d.coverage, (3, 3));
    assert!(d.floors.is_empty(), "{:?}", d.floors);
}

#[test]
fn low_risk_fully_covered_change_auto_merges() {
    let f = Fixture::new();
    let gov = f.governance();
    let d = gov.derive(&status_inputs());
    assert_eq!(d.tier, Tier::AutoMerge);
    assert_eq!(d.policy_ids, ["auto-merge-low-risk"]);
    let p = proposal(&gov, status_inputs());
    let a = authorize(&gov, p, &[], NOW).unwrap();
    assert_eq!(a.tier(), Tier::AutoMerge);
    assert!(a.approvers().is_empty());
}

#[test]
fn author_declared_tier_ignored() {
    let f = Fixture::new();
    let gov = f.governance();
    let mut inputs = config_inputs();
    inputs.declared_tier = Some(Tier::AutoMerge);
    let d = gov.derive(&inputs);
    assert_eq!(d.tier, Tier::ChangeControl);
    assert_eq!(d.declared_tier, Some(Tier::AutoMerge));
}

#[test]
fn unmapped_target_is_change_control() {
    let f = Fixture::new();
    let gov = f.governance();
    let mut inputs = status_inputs();
    inputs.targets.push(file("/etc/passwd"));
    let d = gov.derive(&inputs);
    assert_eq!(d.tier, Tier::ChangeControl);
    assert_eq!(d.floors, ["unmapped"]);
}

#[test]
fn irreversible_change_forced_to_change_control() {
    let f = Fixture::new();
    let gov = f.governance();
    let mut inputs = status_inputs();
    inputs.reversible = false;
    let d = gov.derive(&inputs);
    assert_eq!(d.tier, Tier::ChangeControl);
    assert_eq!(d.floors, ["irreversible"]);
}

#[test]
fn irreversible_floor_holds_under_a_permissive_site_policy() {
    let f = Fixture::new();
    let permissive = "@id(\"allow-all\")\npermit (principal, action, resource);\n";
    let gov = f.governance_with(f.settings(1, 2, ""), CATALOG, permissive);
    let mut inputs = status_inputs();
    inputs.reversible = false;
    let d = gov.derive(&inputs);
    assert_eq!(d.tier, Tier::ChangeControl);
    assert_eq!(d.floors, ["irreversible"]);
}

#[test]
fn reachable_target_forced_to_change_control() {
    let f = Fixture::new();
    // Without the payments tag, the only reason left is the exposed checkout-web.
    let catalog = CATALOG.replace("tags: [payments]", "tags: []");
    let gov = f.governance_with(f.settings(1, 2, ""), &catalog, POLICY);
    let d = gov.derive(&config_inputs());
    assert_eq!(d.tier, Tier::ChangeControl);
    assert_eq!(d.policy_ids, ["change-control-reachable"]);
    assert_eq!(
        d.blast_path,
        [
            "resource:default/app-config",
            "component:default/payments-api",
            "component:default/checkout-web"
        ]
    );
}

#[test]
fn partial_coverage_never_auto_merges() {
    let f = Fixture::new();
    let permissive = "@id(\"allow-all\")\npermit (principal, action, resource);\n";
    let gov = f.governance_with(f.settings(1, 2, ""), CATALOG, permissive);
    let mut inputs = status_inputs();
    inputs.validation = full_validation(&["resource:default/status-config"]);
    let d = gov.derive(&inputs);
    assert_eq!(d.coverage, (1, 2));
    assert_eq!(d.tier, Tier::SingleApprover);
    assert_eq!(d.floors, ["partial-coverage"]);
}

#[test]
fn unvalidated_proposal_is_at_least_single_approver() {
    let f = Fixture::new();
    let gov = f.governance();
    let mut inputs = status_inputs();
    inputs.validation = None;
    let d = gov.derive(&inputs);
    assert_eq!(d.tier, Tier::SingleApprover);
    assert_eq!(d.floors, ["unvalidated"]);
}

#[test]
fn never_automate_entry_reached_is_change_control() {
    let f = Fixture::new();
    let settings = f.settings(
        1,
        2,
        "[never-automate]\nnodes = [\"component:default/status-page\"]\n",
    );
    let permissive = "@id(\"allow-all\")\npermit (principal, action, resource);\n";
    let gov = f.governance_with(settings, CATALOG, permissive);
    let d = gov.derive(&status_inputs());
    assert_eq!(d.tier, Tier::ChangeControl);
    assert_eq!(d.floors, ["never-automate"]);
    assert_eq!(
        d.blast_path,
        [
            "resource:default/status-config",
            "component:default/status-page"
        ]
    );
}

#[test]
fn cedar_evaluation_error_forces_change_control() {
    let f = Fixture::new();
    // The forbid overflows (an evaluation error), so Cedar skips it and the
    // permit alone would grant auto-merge.
    let policy = "@id(\"allow-all\")\npermit (principal, action, resource);\n\
                  @id(\"overflowing-forbid\")\nforbid (principal, action, resource)\n\
                  when { context.change_bytes * 9223372036854775807 > 0 };\n";
    let gov = f.governance_with(f.settings(1, 2, ""), CATALOG, policy);
    let d = gov.derive(&status_inputs());
    assert_eq!(d.tier, Tier::ChangeControl);
    assert_eq!(d.floors, ["cedar-error"]);
    assert!(
        d.cedar_errors[0].contains("overflowing-forbid"),
        "{:?}",
        d.cedar_errors
    );
}

#[test]
fn site_policy_failing_strict_validation_refused() {
    let f = Fixture::new();
    let policy = "@id(\"typo\")\npermit (principal, action, resource) when { context.max_critcality < 2 };\n";
    let bytes = f.sign(&f.sources(f.settings(1, 2, ""), CATALOG, policy), 2);
    let err = Governance::from_signed(&bytes, &f.root, Some(NOW)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("tier policy: fails strict validation against the tier schema (docs/governance.md §5.1): "),
        "{err}"
    );
}

#[test]
fn cycle_in_the_catalog_collapsed_radius_correct() {
    let f = Fixture::new();
    // status-page depends on status-config and status-config on status-page.
    let catalog = CATALOG.replace(
        "  owner: sre\n  dependencyOf:\n    - component:default/status-page\n",
        "  owner: sre\n  dependencyOf:\n    - component:default/status-page\n  dependsOn:\n    - component:default/status-page\n",
    );
    let catalog = format!(
        "{catalog}---\napiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: status-dashboard\nspec:\n  owner: sre\n  dependsOn: [component:default/status-page]\n"
    );
    let gov = f.governance_with(f.settings(1, 2, ""), &catalog, POLICY);
    let d = gov.derive(&status_inputs());
    assert_eq!(
        d.blast_radius,
        [
            "component:default/status-dashboard",
            "component:default/status-page",
            "resource:default/status-config"
        ]
    );
}

#[test]
fn dangling_reference_refused() {
    let f = Fixture::new();
    let catalog = CATALOG.replace(
        "- component:default/payments-api",
        "- component:default/payments-apy",
    );
    let bytes = f.sign(&f.sources(f.settings(1, 2, ""), &catalog, POLICY), 2);
    let err = Governance::from_signed(&bytes, &f.root, Some(NOW)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "catalog catalog-info.yaml: entity `component:default/checkout-web` field `spec.dependsOn`: refers to `component:default/payments-apy`, which is not in the catalog; add that entity or remove the reference"
    );
}

#[test]
fn yaml_alias_bomb_refused() {
    let bomb = "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n\
                b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n\
                c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n";
    let err = catalog::parse_file("bomb.yaml", bomb).unwrap_err();
    assert_eq!(
        err.to_string(),
        "catalog bomb.yaml: entity `-` field `-`: line 1: YAML anchors are refused (they make alias bombs possible); write the value out"
    );
    // An alias without an anchor is already a YAML error.
    let alias_only = "a: *x\n";
    let err = catalog::parse_file("alias.yaml", alias_only).unwrap_err();
    assert_eq!(
        err.to_string(),
        "catalog alias.yaml: entity `-` field `-`: YAML: while parsing node, found unknown anchor at byte 3 line 1 column 4"
    );
}

#[test]
fn yaml_nested_too_deep_refused() {
    let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
    let err = catalog::parse_file("deep.yaml", &deep).unwrap_err();
    assert_eq!(
        err.to_string(),
        "catalog deep.yaml: entity `-` field `-`: line 1: nested deeper than 16 levels"
    );
}

#[test]
fn governance_signed_below_threshold_refused() {
    let f = Fixture::new();
    let bytes = f.sign(&f.sources(f.settings(1, 2, ""), CATALOG, POLICY), 1);
    let err = Governance::from_signed(&bytes, &f.root, Some(NOW)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "governance `site` v1 is signed by 1 of the 2 administrators trust root `test-root` requires (have: admin-0; can still sign: admin-1, admin-2); collect signatures with `edge-runner governance sign`"
    );
}

#[test]
fn governance_rollback_install_n_minus_1_after_n_refused() {
    let f = Fixture::new();
    let store = tempfile::tempdir().unwrap();
    let v1 = f.sign(&f.sources(f.settings(1, 2, ""), CATALOG, POLICY), 2);
    let v2 = f.sign(&f.sources(f.settings(2, 2, ""), CATALOG, POLICY), 2);
    install(store.path(), &v1, &f.root, NOW).unwrap();
    install(store.path(), &v2, &f.root, NOW).unwrap();
    let err = install(store.path(), &v1, &f.root, NOW).unwrap_err();
    assert_eq!(
        err.to_string(),
        "governance `site` v1 is not newer than v2, which was already installed; governance never goes back. Sign v3 with the change instead"
    );
    let loaded = load_installed(store.path(), &f.root, NOW).unwrap().unwrap();
    assert_eq!(loaded.version(), 2);
}

#[test]
fn governance_rollback_below_evidence_high_water_refused() {
    let f = Fixture::new();
    let v1 = f.governance();
    let v2 = f.governance_with(f.settings(2, 2, ""), CATALOG, POLICY);
    let mut marks = crate::rollback::HighWater::default();
    marks.accept_governance("site", 2, v2.digest()).unwrap();
    let err = v1.check_high_water(&marks).unwrap_err();
    assert_eq!(
        err.to_string(),
        "governance `site` v1 is not newer than v2, which was already used (per this runner's evidence log); governance never goes back. Sign v3 with the change instead"
    );
    let back = crate::rollback::HighWater::from_value(&marks.to_value()).unwrap();
    assert_eq!(back, marks);
}

#[test]
fn expired_governance_refused() {
    let f = Fixture::new();
    let bytes = f.sign(&f.sources(f.settings(1, 2, ""), CATALOG, POLICY), 2);
    let err = Governance::from_signed(&bytes, &f.root, Some(Timestamp(2_082_758_400))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "governance `site` v1 expired at 2036-01-01T00:00:00Z; nothing is authorized under expired rules. Sign and install v2"
    );
}

#[test]
fn two_distinct_approvers_authorize_change_control() {
    let f = Fixture::new();
    let gov = f.governance();
    let p = proposal(&gov, config_inputs());
    let a = authorize(
        &gov,
        p,
        &[
            approve(&f.alice, "alice", [7; 32], Tier::ChangeControl),
            approve(&f.bob, "bob", [7; 32], Tier::ChangeControl),
        ],
        NOW,
    )
    .unwrap();
    assert_eq!(a.tier(), Tier::ChangeControl);
    assert_eq!(a.approvers(), ["alice", "bob"]);
    assert!(!a.break_glass());
}

#[test]
fn one_approval_for_change_control_refused() {
    let f = Fixture::new();
    let gov = f.governance();
    let p = proposal(&gov, config_inputs());
    let err = refusal(
        &gov,
        p,
        &[approve(&f.alice, "alice", [7; 32], Tier::ChangeControl)],
    );
    assert_eq!(
        err,
        format!(
            "proposal {D} (tier change-control, governance v1) has 1 of the 2 approvals from distinct eligible persons it needs (counted: alice; not counted: none); collect approvals with `edge-runner approve`"
        )
    );
}

#[test]
fn forged_approval_signature() {
    let f = Fixture::new();
    let gov = f.governance();
    // Mallory signs with her key but claims alice's key id in the header.
    let real = approve(&f.alice, "alice", [7; 32], Tier::ChangeControl);
    let mut bytes = real.bytes().to_vec();
    let n = bytes.len();
    bytes[n - 1] ^= 1; // last byte of the signature
    let forged = Approval::parse(&bytes, "forged").unwrap();
    let p = proposal(&gov, config_inputs());
    let short = f.alice.id().short();
    assert_eq!(
        why_not(&gov, p, &[forged]),
        [Some(format!(
            "signature does not verify under key {short} of `alice`; the approval was forged or altered"
        ))]
    );
}

#[test]
fn key_not_in_roster() {
    let f = Fixture::new();
    let gov = f.governance();
    let stranger = SecretKey::generate().unwrap();
    let p = proposal(&gov, config_inputs());
    assert_eq!(
        why_not(
            &gov,
            p,
            &[approve(&stranger, "alice", [7; 32], Tier::ChangeControl)]
        ),
        [Some(format!(
            "key {} is not in the roster of governance v1",
            stranger.id().short()
        ))]
    );
}

#[test]
fn roster_person_expired() {
    let f = Fixture::new();
    let gov = f.governance();
    let p = proposal(&gov, config_inputs());
    assert_eq!(
        why_not(
            &gov,
            p,
            &[approve(&f.mallory, "dave", [7; 32], Tier::ChangeControl)]
        ),
        [Some(
            "`dave` expired from the roster at 2026-06-01T00:00:00Z".into()
        )]
    );
}

#[test]
fn approver_not_allowed_this_tier() {
    let f = Fixture::new();
    let gov = f.governance();
    let p = proposal(&gov, config_inputs());
    assert_eq!(
        why_not(
            &gov,
            p,
            &[approve(&f.carol, "carol", [7; 32], Tier::ChangeControl)]
        ),
        [Some(
            "`carol` may not approve tier change-control (may approve: single-approver)".into()
        )]
    );
}

#[test]
fn approval_for_another_proposal_digest() {
    let f = Fixture::new();
    let gov = f.governance();
    let p = proposal(&gov, config_inputs());
    assert_eq!(
        why_not(
            &gov,
            p,
            &[approve(&f.alice, "alice", [8; 32], Tier::ChangeControl)]
        ),
        [Some(format!(
            "approves proposal 0808080808080808, not this one ({D})"
        ))]
    );
}

#[test]
fn expired_approval() {
    let f = Fixture::new();
    let gov = f.governance();
    let p = proposal(&gov, config_inputs());
    let a = Approval::sign(
        Statement {
            proposal: [7; 32],
            decision: ApprovalDecision::Approve,
            tier: Tier::ChangeControl,
            reason: "ok".into(),
            person: "alice".into(),
            signed_at: Timestamp(NOW.0 - 600),
            expires: Timestamp(NOW.0 - 1),
        },
        &f.alice,
    )
    .unwrap();
    assert_eq!(
        why_not(&gov, p, &[a]),
        [Some(format!("expired at {}", Timestamp(NOW.0 - 1)))]
    );
}

#[test]
fn approval_older_than_tier_lifetime() {
    let f = Fixture::new();
    let gov = f.governance();
    let p = proposal(&gov, config_inputs());
    let signed = Timestamp(NOW.0 - 90_000);
    let a = Approval::sign(
        Statement {
            proposal: [7; 32],
            decision: ApprovalDecision::Approve,
            tier: Tier::ChangeControl,
            reason: "ok".into(),
            person: "alice".into(),
            signed_at: signed,
            expires: Timestamp(NOW.0 + 3600),
        },
        &f.alice,
    )
    .unwrap();
    assert_eq!(
        why_not(&gov, p, &[a]),
        [Some(format!(
            "was signed at {signed}, longer ago than tier change-control's approval lifetime of 86400 s"
        ))]
    );
}

#[test]
fn one_person_with_two_keys_counted_once() {
    let f = Fixture::new();
    let gov = f.governance();
    let p = proposal(&gov, config_inputs());
    let err = refusal(
        &gov,
        p,
        &[
            approve(&f.alice, "alice", [7; 32], Tier::ChangeControl),
            approve(&f.alice2, "alice", [7; 32], Tier::ChangeControl),
        ],
    );
    assert_eq!(
        err,
        format!(
            "proposal {D} (tier change-control, governance v1) has 1 of the 2 approvals from distinct eligible persons it needs (counted: alice; not counted: alice: `alice` is already counted (one person counts once, whatever their keys)); collect approvals with `edge-runner approve`"
        )
    );
}

#[test]
fn approver_is_the_proposer() {
    let f = Fixture::new();
    let gov = f.governance();
    let mut p = proposal(&gov, config_inputs());
    p.proposer = "bob".into();
    assert_eq!(
        why_not(
            &gov,
            p,
            &[approve(&f.bob, "bob", [7; 32], Tier::ChangeControl)]
        ),
        [Some("`bob` is the proposer".into())]
    );
}

#[test]
fn approver_is_a_capsule_signer() {
    let f = Fixture::new();
    let gov = f.governance();
    let mut p = proposal(&gov, config_inputs());
    p.signers = vec![f.bob.id()];
    assert_eq!(
        why_not(
            &gov,
            p,
            &[approve(&f.bob, "bob", [7; 32], Tier::ChangeControl)]
        ),
        [Some(format!(
            "`bob` signed the capsule that proposed it (key {})",
            f.bob.id().short()
        ))]
    );
}

#[test]
fn approver_barred_by_never_approve_for() {
    let f = Fixture::new();
    let settings = f
        .settings(1, 2, "")
        .replace("groups = [\"payments-team\"]\nexpires = 2036-01-01T00:00:00Z\n\n[[person]]\nname = \"carol\"", "groups = [\"payments-team\"]\nexpires = 2036-01-01T00:00:00Z\nnever-approve-for = [\"agent-7\"]\n\n[[person]]\nname = \"carol\"");
    let gov = f.governance_with(settings, CATALOG, POLICY);
    let p = proposal(&gov, config_inputs());
    assert_eq!(
        why_not(
            &gov,
            p,
            &[approve(&f.bob, "bob", [7; 32], Tier::ChangeControl)]
        ),
        [Some("`bob` must never approve for `agent-7`".into())]
    );
}

/// `never-approve-for` names a publisher as the trust root names it: bob
/// may not approve what `acme-ci` signed, whichever key it used.
#[test]
fn approver_barred_by_never_approve_for_a_publisher_name() {
    let f = Fixture::new();
    let settings = f
        .settings(1, 2, "")
        .replace("groups = [\"payments-team\"]\nexpires = 2036-01-01T00:00:00Z\n\n[[person]]\nname = \"carol\"", "groups = [\"payments-team\"]\nexpires = 2036-01-01T00:00:00Z\nnever-approve-for = [\"acme-ci\"]\n\n[[person]]\nname = \"carol\"");
    let gov = f.governance_with(settings, CATALOG, POLICY);
    let mut p = proposal(&gov, config_inputs());
    p.signers = vec![KeyId([9; 32])];
    p.publishers = vec!["acme-ci".into()];
    assert_eq!(
        why_not(
            &gov,
            p,
            &[approve(&f.bob, "bob", [7; 32], Tier::ChangeControl)]
        ),
        [Some("`bob` must never approve for `acme-ci`".into())]
    );
}

#[test]
fn deny_vetoes() {
    let f = Fixture::new();
    let gov = f.governance();
    let p = proposal(&gov, config_inputs());
    let mut deny = sign_as(
        &f.carol,
        "carol",
        [7; 32],
        Tier::ChangeControl,
        ApprovalDecision::Deny,
    );
    // carol may not approve change-control, so her deny does not count; bob's does.
    let _ = &mut deny;
    let err = refusal(
        &gov,
        p,
        &[
            approve(&f.alice, "alice", [7; 32], Tier::ChangeControl),
            sign_as(
                &f.bob,
                "bob",
                [7; 32],
                Tier::ChangeControl,
                ApprovalDecision::Deny,
            ),
            approve(&f.alice2, "alice", [7; 32], Tier::ChangeControl),
        ],
    );
    assert_eq!(
        err,
        format!(
            "proposal {D} is denied by `bob`: \"reviewed the diff and the verify plan\"; one eligible deny vetoes it whatever the approvals. Address it and propose again"
        )
    );
}

#[test]
fn apply_before_delay() {
    let f = Fixture::new();
    let gov = f.governance();
    let mut p = proposal(&gov, config_inputs());
    p.at = Timestamp(NOW.0 - 60);
    let err = refusal(
        &gov,
        p,
        &[
            approve(&f.alice, "alice", [7; 32], Tier::ChangeControl),
            approve(&f.bob, "bob", [7; 32], Tier::ChangeControl),
        ],
    );
    assert_eq!(
        err,
        format!(
            "proposal {D} (tier change-control) may not be applied before {} (3600 s after it was proposed at {}); wait and apply again",
            Timestamp(NOW.0 - 60 + 3600),
            Timestamp(NOW.0 - 60)
        )
    );
}

#[test]
fn tier_raised_by_new_governance_version_invalidates_lower_approvals() {
    let f = Fixture::new();
    let v1 = f.governance();
    let p = proposal(&v1, status_inputs());
    assert_eq!(p.recorded, Tier::AutoMerge);
    let mut p = p;
    p.recorded = Tier::SingleApprover;
    // v2 puts status-page on the never-automate list: the same proposal is now change-control.
    let v2 = f.governance_with(
        f.settings(
            2,
            2,
            "[never-automate]\nnodes = [\"component:default/status-page\"]\n",
        ),
        CATALOG,
        POLICY,
    );
    let approvals = [
        approve(&f.alice, "alice", [7; 32], Tier::SingleApprover),
        approve(&f.bob, "bob", [7; 32], Tier::SingleApprover),
    ];
    let err = refusal(&v2, p, &approvals);
    assert_eq!(
        err,
        format!(
            "proposal {D} (tier change-control, governance v2) has 0 of the 2 approvals from distinct eligible persons it needs (counted: none; not counted: alice: was signed for tier single-approver, but the proposal is now tier change-control under governance v2; bob: was signed for tier single-approver, but the proposal is now tier change-control under governance v2); collect approvals with `edge-runner approve`"
        )
    );
}

#[test]
fn break_glass_authorizes_alone_and_says_so() {
    let f = Fixture::new();
    let gov = f.governance();
    let mut p = proposal(&gov, config_inputs());
    p.at = NOW;
    let a = authorize(
        &gov,
        p,
        &[sign_as(
            &f.alice,
            "alice",
            [7; 32],
            Tier::ChangeControl,
            ApprovalDecision::BreakGlass,
        )],
        NOW,
    )
    .unwrap();
    assert!(a.break_glass());
    assert_eq!(a.approvers(), ["alice"]);
    let p = proposal(&gov, config_inputs());
    assert_eq!(
        why_not(
            &gov,
            p,
            &[sign_as(
                &f.bob,
                "bob",
                [7; 32],
                Tier::ChangeControl,
                ApprovalDecision::BreakGlass
            )]
        ),
        [Some(
            "`bob` may not break glass (the roster does not flag them)".into()
        )]
    );
}

#[test]
fn approval_without_reason_refused() {
    let f = Fixture::new();
    let err = Approval::sign(
        Statement {
            proposal: [7; 32],
            decision: ApprovalDecision::Approve,
            tier: Tier::ChangeControl,
            reason: "  ".into(),
            person: "alice".into(),
            signed_at: NOW,
            expires: Timestamp(NOW.0 + 1),
        },
        &f.alice,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "approval new approval: the reason is empty; an approval says why (`--reason`)"
    );
}

#[test]
fn approval_round_trips_and_binds_the_key() {
    let f = Fixture::new();
    let a = approve(&f.alice, "alice", [7; 32], Tier::ChangeControl);
    let b = Approval::parse(a.bytes(), "file").unwrap();
    assert_eq!(b.statement(), a.statement());
    assert_eq!(b.key_id(), f.alice.id());
    let alice: PublicKey = f.alice.public();
    assert!(b.verifies_under(&alice));
    assert!(!b.verifies_under(&f.bob.public()));
}

#[test]
fn decision_value_is_deterministic_cbor() {
    let f = Fixture::new();
    let gov = f.governance();
    let d = gov.derive(&config_inputs());
    let bytes = crate::cbor::encode(&d.to_value()).unwrap();
    let back = crate::cbor::decode_canonical(&bytes).unwrap();
    assert_eq!(crate::cbor::encode(&back).unwrap(), bytes);
    assert_eq!(gov.derive(&config_inputs()), d);
}

#[test]
fn example_governance_builds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/governance");
    let sources = read_sources(&dir).unwrap();
    let draft = sources.check().unwrap();
    let d = draft.derive(&config_inputs());
    assert_eq!(d.tier, Tier::ChangeControl);
}

#[test]
fn trust_root_without_governance_table_trusts_no_bundle() {
    let f = Fixture::new();
    let bytes = f.sign(&f.sources(f.settings(1, 2, ""), CATALOG, POLICY), 2);
    let text = f
        .root
        .text
        .split("[governance]")
        .next()
        .unwrap()
        .to_string();
    let bare = RootPolicy::parse(&text, "bare root").unwrap();
    let err = Governance::from_signed(&bytes, &bare, Some(NOW)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "trust root `test-root` v1 has no [governance] table, so no governance bundle can be trusted; add `[governance]` with `threshold` and `[[governance.admin]]` keys and rotate the trust root"
    );
}

#[test]
fn governance_admin_reusing_a_publisher_key_refused() {
    let f = Fixture::new();
    let admin_pem = pem(&f.admins[0]);
    let text = f.root.text.replace(
        "[governance]",
        &format!(
            "[[publisher]]\nname = \"acme-ci\"\norganisation = \"Acme\"\nkinds = [\"test\"]\nnames = [\"*\"]\naudiences = [\"*\"]\npublic-key = \"\"\"\n{admin_pem}\"\"\"\n[governance]"
        ),
    );
    let err = RootPolicy::parse(&text, "root").unwrap_err();
    assert_eq!(
        err.to_string(),
        "trust root root: governance admin `admin-0` reuses a key already listed (as another admin or a publisher); a publisher must not sign the rules its capsules are judged by"
    );
}

#[test]
fn governance_bundle_altered_after_signing_refused() {
    let f = Fixture::new();
    let mut bytes = f.sign(&f.sources(f.settings(1, 2, ""), CATALOG, POLICY), 2);
    // Flip one byte of the payload's policy text ("permit" -> "pepmit" would not parse; change a digit).
    let at = bytes
        .windows(b"max_criticality <= 1".len())
        .position(|w| w == b"max_criticality <= 1")
        .unwrap();
    bytes[at + b"max_criticality <= ".len()] = b'4';
    let err = Governance::from_signed(&bytes, &f.root, Some(NOW)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "governance bundle governance bundle: signature 0 by administrator `admin-0` does not verify; the bundle was altered after signing"
    );
}

#[test]
fn break_glass_review_window_out_of_bounds_refused_and_default_is_72_hours() {
    let f = Fixture::new();
    assert_eq!(f.governance().break_glass_review_secs(), 72 * 3600);
    let gov = f.governance_with(
        f.settings(1, 2, "break-glass-review-secs = 7200"),
        CATALOG,
        POLICY,
    );
    assert_eq!(gov.break_glass_review_secs(), 7200);
    let bytes = f.sign(
        &f.sources(
            f.settings(1, 2, "break-glass-review-secs = 60"),
            CATALOG,
            POLICY,
        ),
        2,
    );
    let err = Governance::from_signed(&bytes, &f.root, Some(NOW))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "`break-glass-review-secs` is 60; it must be from 3600 (an hour) to 2592000 (30 days)"
        ),
        "{err}"
    );
}
