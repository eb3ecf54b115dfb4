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

/// Signs `capsule` with its capabilities replaced by `capabilities` (TOML), by two
/// publishers of two organisations (so `remediate` meets its threshold), and runs it
/// on `input` at a site with `site`.
fn run_with(
    capsule: &capsule_artifacts::Capsule,
    capabilities: &str,
    site: SitePolicy,
    input: &str,
) -> RunRecord {
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
    let mut session = Session::with_policy(
        EvidenceLog::open(dir.path(), SecretKey::generate().unwrap()).unwrap(),
        Limits::default(),
        site,
    )
    .unwrap();
    let verified = session.verify(raw(signed), &root).unwrap();
    session.run(verified, input.as_bytes()).unwrap()
}

/// [`run_with`] for egress: the manifest asks for `egress`, the site allows `site_egress`.
fn run_capsule(
    capsule: &capsule_artifacts::Capsule,
    egress: &[String],
    site_egress: &[String],
    input: &str,
) -> RunRecord {
    let quote = |items: &[String]| {
        items
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let site = SitePolicy::parse(
        &format!(
            "format = 1\nsite = \"{SITE}\"\negress = [{}]\n",
            quote(site_egress)
        ),
        "site-policy.toml",
    )
    .unwrap();
    run_with(
        capsule,
        &format!("egress = [{}]", quote(egress)),
        site,
        input,
    )
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
    // With no HTTP egress granted, `wasi:http` is not linked at all (issue 12 §2):
    // the first call traps, and the refusal is recorded.
    assert_eq!(record.report.status, RunStatus::Trap);
    assert_eq!(
        record.report.error.as_deref(),
        Some(
            "the capsule called `wasi:http/types@0.2.12#[static]fields.from-list`, but `wasi:http` is not linked for it: no HTTP egress is granted"
        )
    );
    assert_eq!(
        record.report.egress_denied.listed,
        ["HttpNotGranted wasi:http/types@0.2.12#[static]fields.from-list"]
    );
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// Runs config-fix on `input` with `host` mapped read-only at `/config`.
fn run_config_fix(host: &std::path::Path, input: &str) -> RunRecord {
    let site = SitePolicy::parse(
        &format!(
            "format = 1\nsite = \"{SITE}\"\n[[directory]]\npath = \"/config\"\nhost = \"{}\"\naccess = \"read-only\"\n",
            host.display()
        ),
        "site-policy.toml",
    )
    .unwrap();
    run_with(
        &capsule_artifacts::CONFIG_FIX,
        "files = [{ path = \"/config\", access = \"read-only\" }]",
        site,
        input,
    )
}

#[test]
fn config_fix_proposes_a_diff_and_rollback_without_writing() {
    let host = tempfile::tempdir().unwrap();
    let original = "# database\n[pool]\nmax_connections = 50  # too low\ntimeout: 30\n";
    std::fs::write(host.path().join("app.conf"), original).unwrap();
    let record = run_config_fix(
        host.path(),
        r#"{"path": "/config/app.conf", "set": {"max_connections": "200", "timeout": "30", "tls": "on"},
            "rationale": "policy DB-7"}"#,
    );
    let (v, findings) = verdict(&record);
    assert_eq!(v, Verdict::Fail);
    assert_eq!(findings, ["drift.max_connections", "missing.tls"]);
    // Nothing was written.
    assert_eq!(
        std::fs::read_to_string(host.path().join("app.conf")).unwrap(),
        original
    );
    let item = &record.report.evidence[0];
    assert_eq!(item.label, "proposal");
    assert_eq!(item.media_type, "application/vnd.edge-runner.proposal+json");
    let proposal: serde_json::Value =
        serde_json::from_slice(item.inline.as_ref().unwrap()).unwrap();
    assert_eq!(proposal["target"], "/config/app.conf");
    assert_eq!(proposal["rationale"], "policy DB-7");
    let diff = proposal["diff"].as_str().unwrap();
    assert!(
        diff.starts_with("--- a/config/app.conf\n+++ b/config/app.conf\n"),
        "{diff}"
    );
    assert!(
        diff.contains("-max_connections = 50  # too low\n+max_connections = 200  # too low\n"),
        "{diff}"
    );
    assert!(diff.contains("+tls = on\n"), "{diff}");
    let rollback = proposal["rollback"].as_str().unwrap();
    assert!(
        rollback.contains("-max_connections = 200  # too low\n+max_connections = 50  # too low\n"),
        "{rollback}"
    );
    assert!(rollback.contains("-tls = on\n"), "{rollback}");
}

#[test]
fn config_fix_passes_when_nothing_drifted() {
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("app.conf"), "tls = on\n").unwrap();
    let record = run_config_fix(
        host.path(),
        r#"{"path": "/config/app.conf", "set": {"tls": "on"}}"#,
    );
    let (v, findings) = verdict(&record);
    assert_eq!(v, Verdict::Pass, "{findings:?}");
    assert!(
        record.report.evidence.is_empty(),
        "no proposal when nothing drifted"
    );
}

/// A tiny order service on 127.0.0.1: POST /orders with a negative quantity
/// answers 500 with a panic message while `broken`; everything else answers 200.
fn order_service(broken: bool) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = vec![0u8; 16384];
            let mut n = 0;
            // Read until the (small) body has arrived.
            while n < buf.len() {
                match stream.read(&mut buf[n..]) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
                let text = String::from_utf8_lossy(&buf[..n]);
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if n >= end + 4 + len {
                        break;
                    }
                }
            }
            let request = String::from_utf8_lossy(&buf[..n]).to_string();
            let (status, body) = if broken
                && request.starts_with("POST /orders")
                && request.contains("\"qty\":-1")
            {
                (500, "panic: negative quantity")
            } else {
                (200, "ok")
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

fn replay_against(addr: std::net::SocketAddr) -> RunRecord {
    let grant = format!("http://{addr}");
    run_capsule(
        &capsule_artifacts::REPLAY,
        std::slice::from_ref(&grant),
        std::slice::from_ref(&grant),
        &format!(
            r#"{{"base_url": "http://{addr}", "steps": [
                 {{"method": "GET", "path": "/health"}},
                 {{"method": "POST", "path": "/orders", "body": "{{\"qty\":-1}}"}}],
               "failure": {{"step": 1, "status": 500, "body_contains": "panic"}}}}"#
        ),
    )
}

#[test]
fn replay_reproduces_a_failure_deterministically_and_reports_a_fixed_one() {
    let broken = order_service(true);
    let first = replay_against(broken);
    let (v, findings) = verdict(&first);
    assert_eq!(v, Verdict::Fail);
    assert_eq!(findings, ["failure.reproduced"]);
    // A reproduce capsule runs deterministically: a second replay leaves the same transcript.
    assert!(first.grant.determinism().is_some());
    let second = replay_against(broken);
    assert_eq!(
        first.report.evidence[0].sha256,
        second.report.evidence[0].sha256
    );
    assert_eq!(first.report.outcome, second.report.outcome);

    let fixed = order_service(false);
    let (v, _) = verdict(&replay_against(fixed));
    assert_eq!(v, Verdict::Pass);
}

/// Issue 13.6: a component that imports nothing but exports neither `kind`
/// nor `run` is told what it lacks, not that it needs an ungranted import.
#[test]
fn a_component_without_the_kind_export_is_told_it_lacks_the_export() {
    let component = wat::parse_str("(component)").unwrap();
    let publisher = Publisher::new("acme-ci", "Acme", &["test"]);
    let root = trust_root(&[&publisher]);
    let mut source = json_assert_manifest(|_| {});
    source.name = "no-exports".into();
    let signed = capsule::sign(&component, &source, &publisher.key, Timestamp::now()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut session = Session::new(
        EvidenceLog::open(dir.path(), SecretKey::generate().unwrap()).unwrap(),
        Limits::default(),
        SITE,
    )
    .unwrap();
    let verified = session.verify(raw(signed), &root).unwrap();
    let message = session.run(verified, b"").unwrap_err().to_string();
    assert!(
        message.starts_with("capsule `no-exports 1.0.0` cannot start: ")
            && message.ends_with(". It does not export the `edge-runner:capsule` world's `kind` and `run` functions; build it with capsule-sdk's `#[capsule_sdk::test]` (or `reproduce`, `remediate`) attribute"),
        "{message}"
    );
    assert!(!message.contains("does not grant"), "{message}");
}
