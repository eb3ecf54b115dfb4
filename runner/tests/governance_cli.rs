//! `edge-runner governance …` and `edge-runner approve` as a compliance team and an approver run them,
//! on the demo keys and `examples/governance`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ciborium::Value;
use edge_runner::governance::{Approval, ApprovalDecision, Tier};

fn edge_runner(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edge-runner"))
        .args(args)
        .env_remove("EDGE_RUNNER_KEY")
        .output()
        .expect("run edge-runner")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = edge_runner(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    text(&out)
}

/// A demo trust store (with its `[governance]` table) in DIR/trust.
fn demo_trust(dir: &Path) -> PathBuf {
    let trust = dir.join("trust");
    ok(&[
        "trust",
        "init",
        "--policy",
        p(&repo("keys/demo-trust-root.toml")),
        "--key",
        p(&repo("keys/demo-root.key")),
        "--dir",
        p(&trust),
    ]);
    trust
}

fn sign_dir(sources: &Path, out: &Path) {
    ok(&[
        "governance",
        "sign",
        "--dir",
        p(sources),
        "--key",
        p(&repo("keys/demo-governance-admin.key")),
        "--out",
        p(out),
    ]);
}

#[test]
fn demo_governance_signed_installed_shown_and_explained_as_change_control() {
    let d = tempfile::tempdir().unwrap();
    let trust = demo_trust(d.path());
    let bundle = d.path().join("gov.cose");
    sign_dir(&repo("examples/governance"), &bundle);
    let out = ok(&[
        "governance",
        "install",
        "--trust",
        p(&trust),
        "--bundle",
        p(&bundle),
    ]);
    assert!(
        out.contains("installed governance `edge-runner-demo` v1"),
        "{out}"
    );
    let out = ok(&["governance", "show", "--trust", p(&trust)]);
    assert!(out.contains("person alice"), "{out}");
    let out = ok(&[
        "governance",
        "explain",
        "--trust",
        p(&trust),
        "--target",
        "demo-site:/config/app.conf",
    ]);
    assert!(
        out.contains("blast path    resource:default/app-config -> component:default/payments-api"),
        "{out}"
    );
    assert!(
        out.contains(
            "policy ids    change-control-reachable, change-control-regulated-auth-payments"
        ),
        "{out}"
    );
    assert!(out.contains("tier          change-control"), "{out}");
}

#[test]
fn governance_rollback_install_n_minus_1_after_n_refused() {
    let d = tempfile::tempdir().unwrap();
    let trust = demo_trust(d.path());
    let v2_dir = d.path().join("v2");
    std::fs::create_dir(&v2_dir).unwrap();
    for f in ["catalog-info.yaml", "tiers.cedar"] {
        std::fs::copy(repo("examples/governance").join(f), v2_dir.join(f)).unwrap();
    }
    let settings = std::fs::read_to_string(repo("examples/governance/governance.toml"))
        .unwrap()
        .replace("\nversion = 1\n", "\nversion = 2\n");
    std::fs::write(v2_dir.join("governance.toml"), settings).unwrap();
    let v1 = d.path().join("v1.cose");
    let v2 = d.path().join("v2.cose");
    sign_dir(&repo("examples/governance"), &v1);
    sign_dir(&v2_dir, &v2);
    ok(&[
        "governance",
        "install",
        "--trust",
        p(&trust),
        "--bundle",
        p(&v1),
    ]);
    ok(&[
        "governance",
        "install",
        "--trust",
        p(&trust),
        "--bundle",
        p(&v2),
    ]);
    let out = edge_runner(&[
        "governance",
        "install",
        "--trust",
        p(&trust),
        "--bundle",
        p(&v1),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("governance `edge-runner-demo` v1 is not newer than v2, which was already installed; governance never goes back. Sign v3 with the change instead"),
        "{}",
        text(&out)
    );
}

#[test]
fn governance_signed_by_a_non_admin_refused() {
    let d = tempfile::tempdir().unwrap();
    let trust = demo_trust(d.path());
    let bundle = d.path().join("gov.cose");
    ok(&[
        "governance",
        "sign",
        "--dir",
        p(&repo("examples/governance")),
        "--key",
        p(&repo("keys/demo-publisher.key")),
        "--out",
        p(&bundle),
    ]);
    let out = edge_runner(&[
        "governance",
        "install",
        "--trust",
        p(&trust),
        "--bundle",
        p(&bundle),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("governance `edge-runner-demo` v1 is signed by 0 of the 1 administrators trust root `edge-runner-demo` requires (have: none; can still sign: demo-governance-admin); collect signatures with `edge-runner governance sign`"),
        "{}",
        text(&out)
    );
}

#[test]
fn approve_shows_the_proposal_then_signs_an_approval_bound_to_its_digest() {
    let d = tempfile::tempdir().unwrap();
    let statement = edge_runner::cbor::text_map([
        ("format", Value::Integer(1.into())),
        ("site", Value::Text("demo-site".into())),
        ("proposer", Value::Text("agent-7".into())),
        ("rationale", Value::Text("raise max_connections".into())),
        ("tier", Value::Text("change-control".into())),
        (
            "actions",
            Value::Array(vec![edge_runner::cbor::text_map([
                ("kind", Value::Text("file".into())),
                ("path", Value::Text("/config/app.conf".into())),
                (
                    "diff",
                    Value::Text("-max_connections = 20\n+max_connections = 200\n".into()),
                ),
            ])]),
        ),
    ]);
    let bytes = edge_runner::cbor::encode(&statement).unwrap();
    let proposal = d.path().join("x.proposal");
    std::fs::write(&proposal, &bytes).unwrap();
    let approval = d.path().join("alice.approval");
    let out = ok(&[
        "approve",
        "--proposal",
        p(&proposal),
        "--key",
        p(&repo("keys/demo-approver-alice.key")),
        "--person",
        "alice",
        "--reason",
        "checked the diff against the runbook",
        "--out",
        p(&approval),
    ]);
    assert!(out.contains("+max_connections = 200"), "{out}");
    assert!(out.contains("tier          change-control"), "{out}");
    let a = Approval::parse(&std::fs::read(&approval).unwrap(), "alice.approval").unwrap();
    use sha2::Digest;
    let digest: [u8; 32] = sha2::Sha256::digest(&bytes).into();
    assert_eq!(a.proposal_digest(), digest);
    assert_eq!(a.person(), "alice");
    assert_eq!(a.statement().decision, ApprovalDecision::Approve);
    assert_eq!(a.statement().tier, Tier::ChangeControl);
    let alice = edge_runner::keys::PublicKey::load(&repo("keys/demo-approver-alice.pub")).unwrap();
    assert!(a.verifies_under(&alice));

    let out = edge_runner(&[
        "approve",
        "--proposal",
        p(&proposal),
        "--key",
        p(&repo("keys/demo-approver-alice.key")),
        "--person",
        "alice",
        "--reason",
        " ",
        "--out",
        p(&approval),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--reason is empty; an approval says why, for the auditors"),
        "{}",
        text(&out)
    );
}

/// `governance explain --proposal` derives a recorded proposal's tier again
/// from its own targets, reversibility and staged validation, and says
/// whether it still has the tier it was given; a file that is not a
/// proposal statement is refused by name.
#[test]
fn explain_a_recorded_proposal() {
    let d = tempfile::tempdir().unwrap();
    let demo = d.path().join("demo");
    ok(&["demo", "--out", p(&demo)]);
    let proposal = std::fs::read_dir(demo.join("evidence/proposals"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "proposal"))
        .expect("the demo records a proposal");
    let out = ok(&[
        "governance",
        "explain",
        "--trust",
        p(&demo.join("trust")),
        "--proposal",
        p(&proposal),
    ]);
    for line in [
        "capsule       config-fix 1.0.0 (proposed by config-fix-agent)",
        "target        demo-site:/config/app.conf",
        "blast path    resource:default/app-config -> component:default/payments-api",
        "coverage      1/3",
        "recorded tier change-control: unchanged",
    ] {
        assert!(out.lines().any(|l| l == line), "no {line:?} in\n{out}");
    }
    // Hypothetical flags do not apply to a recorded proposal.
    let out = edge_runner(&[
        "governance",
        "explain",
        "--trust",
        p(&demo.join("trust")),
        "--proposal",
        p(&proposal),
        "--unvalidated",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = edge_runner(&[
        "governance",
        "explain",
        "--trust",
        p(&demo.join("trust")),
        "--proposal",
        p(&demo.join("runner.pub")),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("runner.pub is not a proposal statement"),
        "{}",
        text(&out)
    );
}
