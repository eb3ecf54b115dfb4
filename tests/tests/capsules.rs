//! The example capsules end to end through the runner, against real services started on 127.0.0.1.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

use edge_runner::capsule::{self, ManifestSource};
use edge_runner::evidence::EvidenceLog;
use edge_runner::keys::SecretKey;
use edge_runner::sandbox::{Limits, RunStatus, Verdict};
use edge_runner::session::{RunRecord, Session};
use edge_runner::site::SitePolicy;
use edge_runner::timestamp::Timestamp;
use edge_runner_tests::*;

/// Signs `capsule` with its manifest's egress replaced by `egress`, and runs it
/// on `input` at a site allowing `site_egress`.
fn run_capsule(
    capsule: &capsule_artifacts::Capsule,
    egress: &[String],
    site_egress: &[String],
    input: &str,
) -> RunRecord {
    let mut publisher = Publisher::new("acme-ci", "Acme", &["test", "reproduce", "remediate"]);
    publisher.ceiling = "egress = [\"127.0.0.1:*\"]\nconfig = [\"*\"]\n\
        files = [{ path = \"/\", access = \"read-only\" }]\n";
    let root = trust_root(&[&publisher]);
    let mut source = ManifestSource::parse(
        capsule.manifest,
        std::path::Path::new(capsule.manifest_path),
    )
    .unwrap();
    let list: Vec<String> = egress.iter().map(|e| format!("\"{e}\"")).collect();
    source.capabilities = toml::from_str(&format!("egress = [{}]", list.join(", "))).unwrap();
    let signed =
        capsule::sign(capsule.component, &source, &publisher.key, Timestamp::now()).unwrap();
    let site_list: Vec<String> = site_egress.iter().map(|e| format!("\"{e}\"")).collect();
    let site = SitePolicy::parse(
        &format!(
            "format = 1\nsite = \"{SITE}\"\negress = [{}]\n",
            site_list.join(", ")
        ),
        "site-policy.toml",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut session = Session::with_policy(
        EvidenceLog::open(dir.path(), SecretKey::generate().unwrap()).unwrap(),
        Limits::default(),
        site,
    )
    .unwrap();
    let verified = session.verify(raw(signed), &root).unwrap();
    session.run(verified, input.as_bytes()).unwrap()
}

fn verdict(record: &RunRecord) -> (Verdict, Vec<String>) {
    assert_eq!(
        record.report.status,
        RunStatus::Completed,
        "{:?}",
        record.report.error
    );
    let o = record.report.outcome.as_ref().unwrap();
    (
        o.verdict,
        o.findings.iter().map(|f| f.code.clone()).collect(),
    )
}

#[test]
fn http_probe_passes_against_a_healthy_service() {
    let (addr, hits) = http_server_with(200, "application/json", r#"{"status":"up"}"#);
    let grant = format!("http://{addr}");
    let record = run_capsule(
        &capsule_artifacts::HTTP_PROBE,
        std::slice::from_ref(&grant),
        std::slice::from_ref(&grant),
        &format!(
            r#"{{"url": "http://{addr}/health", "expect_status": [200], "max_latency_ms": 10000,
                "headers": {{"content-type": "application/json"}}, "body_contains": ["\"status\":\"up\""]}}"#
        ),
    );
    let (v, findings) = verdict(&record);
    assert_eq!(v, Verdict::Pass, "{findings:?}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(record.report.evidence[0].label, "response");
}

#[test]
fn http_probe_fails_with_one_finding_per_broken_check() {
    let (addr, _) = http_server_with(503, "text/html", "<h1>maintenance</h1>");
    let grant = format!("http://{addr}");
    let record = run_capsule(
        &capsule_artifacts::HTTP_PROBE,
        std::slice::from_ref(&grant),
        std::slice::from_ref(&grant),
        &format!(
            r#"{{"url": "http://{addr}/health", "headers": {{"content-type": "application/json"}},
                "body_contains": ["up"]}}"#
        ),
    );
    let (v, findings) = verdict(&record);
    assert_eq!(v, Verdict::Fail);
    assert_eq!(
        findings,
        ["status.unexpected", "header.content-type", "body.missing"]
    );
}

#[test]
fn http_probe_cannot_reach_what_the_site_does_not_grant() {
    let (addr, hits) = http_server("up");
    let record = run_capsule(
        &capsule_artifacts::HTTP_PROBE,
        &[format!("http://{addr}")],
        &[],
        &format!(r#"{{"url": "http://{addr}/health"}}"#),
    );
    let (v, _) = verdict(&record);
    assert_eq!(v, Verdict::Error);
    let summary = &record.report.outcome.as_ref().unwrap().summary;
    assert!(summary.contains("request denied"), "{summary}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}
