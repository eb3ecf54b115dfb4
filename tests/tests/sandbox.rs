//! Sandbox limits: a run that exceeds its grant is stopped, classified and recorded.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

use edge_runner::capsule::{self, ManifestSource};
use edge_runner::evidence::{self, EvidenceLog, LOG_FILE};
use edge_runner::keys::SecretKey;
use edge_runner::sandbox::{Limits, RunStatus};
use edge_runner::session::Session;
use edge_runner_tests::*;

/// Runs json-assert with its manifest edited by `edit`; returns the status and the last record's body.
fn run_with(edit: impl FnOnce(&mut ManifestSource)) -> (RunStatus, ciborium::Value) {
    let publisher = Publisher::new("acme-ci", "Acme", &["test"]);
    let root = trust_root(&[&publisher]);
    let dir = tempfile::tempdir().unwrap();
    let runner = SecretKey::generate().unwrap();
    let public = runner.public();
    let mut session = Session::new(
        EvidenceLog::open(dir.path(), runner).unwrap(),
        Limits::default(),
        SITE,
    )
    .unwrap();
    let source = json_assert_manifest(edit);
    let signed = capsule::sign(
        capsule_artifacts::JSON_ASSERT.component,
        &source,
        &publisher.key,
        edge_runner::timestamp::Timestamp::now(),
    )
    .unwrap();
    let verified = session.verify(raw(signed), &root).unwrap();
    let record = session.run(verified, PASSING_INPUT.as_bytes()).unwrap();
    drop(session);
    let log = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
    let summary = evidence::verify_log(&log, &public).unwrap();
    let last = summary.records.last().unwrap();
    assert_eq!(last.record.event, "run-finished");
    (record.report.status, last.record.body.clone())
}

fn status_in(body: &ciborium::Value) -> String {
    edge_runner::cbor::MapReader::new("body", body)
        .unwrap()
        .text("status")
        .unwrap()
        .to_string()
}

#[test]
fn out_of_fuel_is_classified_and_recorded() {
    let (status, body) = run_with(|m| m.limits.fuel = Some(1_000));
    assert_eq!(status, RunStatus::OutOfFuel);
    assert_eq!(status_in(&body), "out-of-fuel");
}

#[test]
fn memory_beyond_the_grant_is_refused_and_recorded() {
    // Less than the capsule's initial linear memory: instantiation's growth is refused.
    let (status, body) = run_with(|m| m.limits.memory_bytes = Some(64 * 1024));
    assert_eq!(status, RunStatus::MemoryRefused);
    assert_eq!(status_in(&body), "memory-refused");
    let map = edge_runner::cbor::MapReader::new("body", &body).unwrap();
    assert!(matches!(map.get("memory-denials"), Some(ciborium::Value::Array(d)) if !d.is_empty()));
}

#[test]
fn requests_above_the_ceiling_are_cut_and_recorded() {
    let limits = Limits::default();
    let source = json_assert_manifest(|m| m.limits.fuel = Some(limits.max_fuel + 1));
    let grant = edge_runner::sandbox::Grant::compute(&source.limits, &limits);
    assert_eq!(grant.fuel, limits.max_fuel);
    assert_eq!(grant.refused.len(), 1);
    assert_eq!(grant.refused[0].resource, "fuel");
    assert_eq!(grant.refused[0].asked, limits.max_fuel + 1);
}
