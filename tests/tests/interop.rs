//! Stock COSE libraries verify what Edge Runner writes: real records (a checkpoint
//! record among them), capsule signatures and trust roots are checked by pycose
//! through `tests/interop/pycose_verify.py`, as an auditor would check them.
//!
//! Regression for "pycose refuses every record we write" (we wrote `alg` -19).
//! Needs `python3` with pycose 1.1.0 (and cbor2 < 6, which pycose 1.1.0 cannot
//! read arrays from), so these are `#[ignore]`d in the plain suite; `.ci/run`
//! installs both and runs them with `--ignored`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use edge_runner::capsule;
use edge_runner::evidence::{self, EvidenceLog, LOG_FILE};
use edge_runner::keys::{PublicKey, SecretKey};
use edge_runner::timestamp::Timestamp;
use edge_runner_tests::*;

const NEEDS_PYCOSE: &str =
    "needs python3 with pycose 1.1.0; .ci/run installs it and runs the ignored tests";

/// Runs the pycose script on `item`; returns whether it verified, and what it printed.
fn pycose_verifies(kind: &str, item: &[u8], key: &PublicKey) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("item.cbor");
    std::fs::write(&file, item).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/pycose_verify.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(kind)
        .arg(&file)
        .arg(hex::encode(key.as_bytes()))
        .output()
        .expect("python3 runs (it is needed for this test)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(1),
        "the script failed to run ({NEEDS_PYCOSE}): {text}"
    );
    (out.status.success(), text)
}

/// `bytes` with its last byte (the end of the final signature) flipped.
fn flip_last(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let last = out.len() - 1;
    out[last] ^= 1;
    out
}

/// A real log: log-opened, notes, an explicit checkpoint, more notes, the closing checkpoint.
fn real_log(dir: &Path, key: SecretKey) -> Vec<u8> {
    let mut log = EvidenceLog::open(dir, key).unwrap();
    let note = |n: u64| edge_runner::cbor::text_map([("n", ciborium::Value::Integer(n.into()))]);
    for n in 0..3 {
        log.append("note", note(n)).unwrap();
    }
    log.checkpoint().unwrap();
    log.append("note", note(3)).unwrap();
    log.close().unwrap();
    std::fs::read(dir.join(LOG_FILE)).unwrap()
}

/// Each record of a log with its event name.
fn records(log: &[u8], key: &PublicKey) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < log.len() {
        let (_, len) = edge_runner::cbor::decode_prefix(&log[at..]).unwrap();
        let bytes = log[at..at + len].to_vec();
        let record = evidence::decode_record(&bytes, key).unwrap();
        out.push((record.event, bytes));
        at += len;
    }
    out
}

#[test]
#[ignore = "needs python3 with pycose 1.1.0; .ci/run installs it and runs the ignored tests"]
fn pycose_verifies_every_record_of_a_real_log_and_refuses_a_flipped_signature_byte() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let public = key.public();
    let log = real_log(dir.path(), key);
    let records = records(&log, &public);
    let events: Vec<&str> = records.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        events,
        [
            "log-opened",
            "note",
            "note",
            "note",
            "checkpoint",
            "note",
            "checkpoint"
        ]
    );
    for (event, bytes) in &records {
        let (ok, text) = pycose_verifies("record", bytes, &public);
        assert!(ok, "pycose refused a `{event}` record: {text}");
    }

    for (event, bytes) in [&records[1], &records[4]] {
        let (ok, text) = pycose_verifies("record", &flip_last(bytes), &public);
        assert!(
            !ok,
            "pycose accepted a `{event}` record with a flipped signature byte"
        );
        assert!(text.contains("signature does not verify"), "{text}");
    }

    // Another runner's key: the `kid` does not match, and the signature would not verify.
    let stranger = SecretKey::generate().unwrap().public();
    let (ok, _) = pycose_verifies("record", &records[1].1, &stranger);
    assert!(!ok, "pycose accepted a record under another key");
}

#[test]
#[ignore = "needs python3 with pycose 1.1.0; .ci/run installs it and runs the ignored tests"]
fn pycose_verifies_capsule_signatures_and_trust_roots() {
    let a = Publisher::new("acme-ci", "Acme", &["test"]);
    let b = Publisher::new("globex-ci", "Globex", &["test"]);
    let source = json_assert_manifest(|_| {});
    let detached = capsule::sign_detached(
        capsule_artifacts::JSON_ASSERT.component,
        &source,
        &a.key,
        Timestamp::now(),
    )
    .unwrap();
    let cosigned = capsule::cosign_detached(
        capsule_artifacts::JSON_ASSERT.component,
        &detached,
        &b.key,
        &[a.key.public()],
        Timestamp::now(),
    )
    .unwrap();
    for p in [&a, &b] {
        let (ok, text) = pycose_verifies("capsule", &cosigned, &p.key.public());
        assert!(
            ok,
            "pycose refused `{}`'s capsule signature: {text}",
            p.name
        );
    }
    // The last byte belongs to the second signature (globex-ci's).
    let (ok, text) = pycose_verifies("capsule", &flip_last(&cosigned), &b.key.public());
    assert!(
        !ok,
        "pycose accepted a capsule signature with a flipped byte"
    );
    assert!(text.contains("signature 1 does not verify"), "{text}");
    // The same bytes are no trust root: the external AAD separates the purposes.
    let (ok, _) = pycose_verifies("trust-root", &cosigned, &a.key.public());
    assert!(!ok, "a capsule signature verified as a trust root");

    let root_key = RootKey::new("root-1");
    let root = Policy::new(vec![&root_key], vec![&a]).signed_by(&[&root_key]);
    let (ok, text) = pycose_verifies("trust-root", &root, &root_key.key.public());
    assert!(ok, "pycose refused a trust root: {text}");
    let (ok, _) = pycose_verifies("trust-root", &flip_last(&root), &root_key.key.public());
    assert!(
        !ok,
        "pycose accepted a trust root with a flipped signature byte"
    );
}
