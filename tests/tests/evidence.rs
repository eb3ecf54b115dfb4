//! Evidence: the loop writes a chain that verifies, and every tampering is caught with its exact failure.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

use std::path::Path;

use edge_runner::evidence::{self, EvidenceError, EvidenceLog, Failure, LOG_FILE};
use edge_runner::keys::SecretKey;
use edge_runner::sandbox::{Limits, RunStatus, Verdict};
use edge_runner::session::{Session, SessionError};
use edge_runner_tests::*;

/// Runs the whole loop once (pass, fail, refused) and returns the log bytes and runner key.
fn make_log(dir: &Path) -> (Vec<u8>, SecretKey) {
    let publisher = Publisher::new("acme-ci", "Acme", &["test"]);
    let root = trust_root(&[&publisher]);
    let runner = SecretKey::generate().unwrap();
    let runner_copy = SecretKey::from_pem(&runner.to_pem().unwrap(), Path::new("mem")).unwrap();
    let mut session = Session::new(
        EvidenceLog::open(dir, runner).unwrap(),
        Limits::default(),
        SITE,
    )
    .unwrap();
    let signed = signed_json_assert(&publisher.key);

    let verified = session.verify(raw(signed.clone()), &root).unwrap();
    let pass = session.run(verified, PASSING_INPUT.as_bytes()).unwrap();
    assert_eq!(pass.report.status, RunStatus::Completed);
    assert_eq!(pass.report.outcome.as_ref().unwrap().verdict, Verdict::Pass);
    assert_eq!(pass.report.evidence.len(), 1);
    assert!(pass.report.fuel_used > 0 && pass.report.peak_memory_bytes > 0);

    let verified = session.verify(raw(signed.clone()), &root).unwrap();
    let fail = session.run(verified, FAILING_INPUT.as_bytes()).unwrap();
    assert_eq!(fail.report.outcome.as_ref().unwrap().verdict, Verdict::Fail);
    assert_eq!(fail.report.outcome.as_ref().unwrap().findings.len(), 1);

    let mut tampered = signed;
    tampered[500] ^= 1;
    assert!(matches!(
        session.verify(raw(tampered), &root),
        Err(SessionError::Refused(_))
    ));
    drop(session);
    (std::fs::read(dir.join(LOG_FILE)).unwrap(), runner_copy)
}

/// Byte ranges of each record in a log.
fn record_spans(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut spans = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (_, len) = edge_runner::cbor::decode_prefix(&bytes[at..]).unwrap();
        spans.push(at..at + len);
        at += len;
    }
    spans
}

#[test]
fn loop_writes_a_chain_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, runner) = make_log(dir.path());
    let summary = evidence::verify_log(&bytes, &runner.public()).unwrap();
    let events: Vec<&str> = summary
        .records
        .iter()
        .map(|r| r.record.event.as_str())
        .collect();
    assert_eq!(
        events,
        [
            "log-opened",
            "capsule-verified",
            "run-started",
            "run-finished",
            "capsule-verified",
            "run-started",
            "run-finished",
            "capsule-refused",
            "checkpoint"
        ]
    );
}

// Regression (pycose refuses alg -19): records, checkpoint records included, are
// written with EdDSA (-8), which stock COSE libraries verify.
#[test]
fn records_and_checkpoint_records_are_written_with_alg_eddsa_minus_8() {
    use coset::{CoseSign1, TaggedCborSerializable, iana};
    let dir = tempfile::tempdir().unwrap();
    let (bytes, _) = make_log(dir.path());
    let mut events = Vec::new();
    for span in record_spans(&bytes) {
        let sign1 = CoseSign1::from_tagged_slice(&bytes[span]).unwrap();
        assert_eq!(
            sign1.protected.header.alg,
            Some(coset::RegisteredLabelWithPrivate::Assigned(
                iana::Algorithm::EdDSA
            ))
        );
        let payload = edge_runner::cbor::decode_canonical(&sign1.payload.unwrap()).unwrap();
        let event = payload.as_map().unwrap()[5]
            .1
            .as_text()
            .unwrap()
            .to_string();
        events.push(event);
    }
    assert_eq!(events.last().map(String::as_str), Some("checkpoint"));
}

// Records written before the switch to -8 carry alg -19 (RFC 9864 "Ed25519"):
// they still verify, strictly.
#[test]
fn record_signed_with_alg_ed25519_minus_19_is_still_accepted() {
    use coset::{CoseSign1, TaggedCborSerializable, iana};
    let dir = tempfile::tempdir().unwrap();
    let (bytes, runner) = make_log(dir.path());
    let spans = record_spans(&bytes);
    // The last record (the closing checkpoint): nothing after it chains to its hash.
    let last = spans.len() - 1;
    let mut sign1 = CoseSign1::from_tagged_slice(&bytes[spans[last].clone()]).unwrap();
    sign1.protected.header.alg = Some(coset::RegisteredLabelWithPrivate::Assigned(
        iana::Algorithm::Ed25519,
    ));
    sign1.protected.original_data = None;
    let sign1 = coset::CoseSign1Builder::new()
        .protected(sign1.protected.header)
        .payload(sign1.payload.unwrap())
        .create_signature(evidence::EVIDENCE_CONTEXT, |tbs| {
            runner.sign(tbs).to_bytes().to_vec()
        })
        .build();
    let raw = sign1.to_tagged_vec().unwrap();
    let old_style =
        edge_runner::cbor::encode(&edge_runner::cbor::decode_prefix(&raw).unwrap().0).unwrap();
    assert_ne!(old_style, bytes[spans[last].clone()]);

    let record = evidence::decode_record(&old_style, &runner.public()).unwrap();
    assert_eq!(record.event, "checkpoint");
    let log = splice(&bytes, last, &old_style);
    let summary = evidence::verify_log(&log, &runner.public()).unwrap();
    assert_eq!(summary.records.len(), spans.len());

    let mut flipped = old_style;
    let at = flipped.len() - 1;
    flipped[at] ^= 1;
    let failure =
        evidence::verify_log(&splice(&bytes, last, &flipped), &runner.public()).unwrap_err();
    assert!(
        failure.to_string().contains("signature does not verify"),
        "{failure}"
    );
}

#[test]
fn every_single_flipped_byte_fails_verification() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, runner) = make_log(dir.path());
    let public = runner.public();
    for offset in 0..bytes.len() {
        let mut altered = bytes.clone();
        altered[offset] ^= 0x01;
        assert!(
            evidence::verify_log(&altered, &public).is_err(),
            "flip at byte {offset} went unnoticed"
        );
    }
}

#[test]
fn flipped_byte_names_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, runner) = make_log(dir.path());
    let spans = record_spans(&bytes);
    let mut altered = bytes.clone();
    // The last byte of record 3 is inside its signature.
    altered[spans[3].end - 1] ^= 0x01;
    let failure = evidence::verify_log(&altered, &runner.public()).unwrap_err();
    assert_eq!(
        failure,
        Failure::BadRecord {
            record: 3,
            offset: spans[3].start,
            detail: "signature does not verify under the runner key (record altered?)".into()
        }
    );
}

#[test]
fn deleted_record() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, runner) = make_log(dir.path());
    let spans = record_spans(&bytes);
    let mut cut = bytes[..spans[2].start].to_vec();
    cut.extend_from_slice(&bytes[spans[2].end..]);
    let failure = evidence::verify_log(&cut, &runner.public()).unwrap_err();
    assert_eq!(
        failure,
        Failure::Sequence {
            record: 2,
            found: 3
        }
    );
    assert_eq!(
        failure.to_string(),
        "record 2 has sequence number 3, expected 2 (a record was removed, duplicated or reordered)"
    );
}

#[test]
fn reordered_records() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, runner) = make_log(dir.path());
    let spans = record_spans(&bytes);
    let mut swapped = bytes[..spans[1].start].to_vec();
    swapped.extend_from_slice(&bytes[spans[2].clone()]);
    swapped.extend_from_slice(&bytes[spans[1].clone()]);
    swapped.extend_from_slice(&bytes[spans[3].start..]);
    assert_eq!(
        evidence::verify_log(&swapped, &runner.public()).unwrap_err(),
        Failure::Sequence {
            record: 1,
            found: 2
        }
    );
}

#[test]
fn duplicated_record() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, runner) = make_log(dir.path());
    let spans = record_spans(&bytes);
    let mut doubled = bytes[..spans[2].end].to_vec();
    doubled.extend_from_slice(&bytes[spans[2].start..]);
    assert_eq!(
        evidence::verify_log(&doubled, &runner.public()).unwrap_err(),
        Failure::Sequence {
            record: 3,
            found: 2
        }
    );
}

#[test]
fn records_from_another_runner_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, _runner) = make_log(dir.path());
    let other = SecretKey::generate().unwrap();
    match evidence::verify_log(&bytes, &other.public()).unwrap_err() {
        Failure::WrongKey {
            record: 0,
            expected,
            ..
        } => assert_eq!(expected, other.id().short()),
        f => panic!("unexpected failure {f}"),
    }
}

#[test]
fn torn_tail_is_detected_then_repaired_with_a_restart_record() {
    let dir = tempfile::tempdir().unwrap();
    let (mut bytes, runner) = make_log(dir.path());
    let spans = record_spans(&bytes);
    // A crash while the next record was being written leaves part of it after
    // the last complete record (and after what DIR/checkpoint covers).
    let record = spans[2].clone();
    let partial = (record.end - record.start) / 2;
    let torn = bytes[record.start..record.start + partial].to_vec();
    let torn_offset = bytes.len();
    bytes.extend_from_slice(&torn);
    let log_path = dir.path().join(LOG_FILE);
    std::fs::write(&log_path, &bytes).unwrap();

    let failure = evidence::verify_log(&bytes, &runner.public()).unwrap_err();
    assert_eq!(
        failure,
        Failure::TornTail {
            record: spans.len() as u64,
            offset: torn_offset,
            bytes: partial
        }
    );

    // Reopening cuts the torn record and says so in a signed `restart` record.
    let public = runner.public();
    let log = EvidenceLog::open(dir.path(), runner).unwrap();
    assert_eq!(log.len(), spans.len() as u64 + 1);
    drop(log);
    let repaired = std::fs::read(&log_path).unwrap();
    let summary = evidence::verify_log(&repaired, &public).unwrap();
    // The torn record's place is taken by `restart`; closing then adds a checkpoint.
    let restart = &summary.records[spans.len()];
    assert_eq!(restart.record.event, "restart");
    assert_eq!(summary.records.last().unwrap().record.event, "checkpoint");
    let body = edge_runner::cbor::MapReader::new("body", &restart.record.body).unwrap();
    assert_eq!(body.uint("torn-bytes-dropped").unwrap(), partial as u64);
}

/// Reopens the log in `dir` once, appending one record, so that the newest
/// checkpoint moves past it; returns the resume pointer from before.
fn append_after_a_checkpoint(dir: &Path, runner: &SecretKey) -> String {
    let pointer = std::fs::read_to_string(dir.join(evidence::RESUME_FILE)).unwrap();
    let copy = SecretKey::from_pem(&runner.to_pem().unwrap(), Path::new("mem")).unwrap();
    let mut log = EvidenceLog::open(dir, copy).unwrap();
    log.append("note", edge_runner::cbor::text_map([("n", 1u64.into())]))
        .unwrap();
    log.close().unwrap();
    pointer
}

#[test]
fn corrupt_log_is_never_appended_to() {
    let dir = tempfile::tempdir().unwrap();
    let (before, runner) = make_log(dir.path());
    // Records after the checkpoint the next open resumes from: as after a
    // crash that left the pointer at the older checkpoint.
    let pointer = append_after_a_checkpoint(dir.path(), &runner);
    std::fs::write(dir.path().join(evidence::RESUME_FILE), pointer).unwrap();
    let bytes = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
    let mut altered = bytes.clone();
    altered[before.len() + 40] ^= 0x01;
    std::fs::write(dir.path().join(LOG_FILE), &altered).unwrap();
    let err = EvidenceLog::open(dir.path(), runner).unwrap_err();
    assert!(matches!(err, EvidenceError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("refusing to append"), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join(LOG_FILE)).unwrap(),
        altered,
        "the damaged log must be left as it was"
    );
}

/// Opening reads only the records after the newest checkpoint (its signed
/// resume state stands for the rest), so damage before it is not seen at
/// open; it is not hidden either: the full verification an auditor runs
/// names the damaged record.
#[test]
fn damage_before_the_resume_point_is_named_by_full_verification() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, runner) = make_log(dir.path());
    let public = runner.public();
    let spans = record_spans(&bytes);
    let mut altered = bytes.clone();
    altered[spans[2].start + 30] ^= 0x01;
    std::fs::write(dir.path().join(LOG_FILE), &altered).unwrap();
    let log = EvidenceLog::open(dir.path(), runner).unwrap();
    drop(log);
    let after = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
    assert!(after.len() > altered.len(), "the open appended");
    match evidence::verify_log(&after, &public).unwrap_err() {
        Failure::BadRecord { record: 2, .. } | Failure::Malformed { record: 2, .. } => {}
        other => panic!("expected record 2 to fail, got {other}"),
    }
}

/// `DIR/resume` is a hint anyone with write access can change: garbage, a
/// pointer to a record that is not a checkpoint, to an older checkpoint, or
/// past the end all lead to the same state as the honest pointer.
#[test]
fn resume_pointer_is_only_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, runner) = make_log(dir.path());
    let older = append_after_a_checkpoint(dir.path(), &runner);
    let honest = std::fs::read_to_string(dir.path().join(evidence::RESUME_FILE)).unwrap();
    assert_ne!(older, honest);
    let spans = record_spans(&bytes);
    let reopen = |pointer: Option<&str>| {
        let backup = dir.path().join("backup");
        let _ = std::fs::remove_dir_all(&backup);
        std::fs::create_dir(&backup).unwrap();
        for name in [LOG_FILE, evidence::CHECKPOINT_FILE] {
            std::fs::copy(dir.path().join(name), backup.join(name)).unwrap();
        }
        if let Some(p) = pointer {
            std::fs::write(backup.join(evidence::RESUME_FILE), p).unwrap();
        }
        let copy = SecretKey::from_pem(&runner.to_pem().unwrap(), Path::new("mem")).unwrap();
        let log = EvidenceLog::open(&backup, copy).unwrap();
        (
            log.len(),
            log.head() == [0; 32],
            format!("{}", log.high_water()),
        )
    };
    let want = reopen(Some(&honest));
    assert!(want.2.contains("json-assert 1.0.0"), "{want:?}");
    let not_a_checkpoint = format!("{} 1\n", spans[1].start);
    let past_the_end = format!("{} 99\n", u64::MAX / 2);
    for pointer in [
        None,
        Some("garbage"),
        Some(older.as_str()),
        Some(not_a_checkpoint.as_str()),
        Some(past_the_end.as_str()),
        Some("0 0\n"),
    ] {
        assert_eq!(reopen(pointer), want, "pointer {pointer:?}");
    }
}

#[test]
fn log_written_by_another_key_is_not_appended_to() {
    let dir = tempfile::tempdir().unwrap();
    let (_bytes, _runner) = make_log(dir.path());
    let err = EvidenceLog::open(dir.path(), SecretKey::generate().unwrap()).unwrap_err();
    assert!(matches!(err, EvidenceError::WrongKey { .. }), "{err}");
}

#[test]
fn every_example_capsule_runs() {
    // Two organisations, so `remediate` capsules meet their threshold; a ceiling
    // that covers every example's request (the site, granting nothing, decides).
    let ceiling = "files = [{ path = \"/\", access = \"read-write\" }]\n\
        egress = [\"*.example.com:443\", \"127.0.0.1:*\"]\nconfig = [\"*\"]\n";
    let mut publisher = Publisher::new("acme-ci", "Acme", &["test", "reproduce", "remediate"]);
    let mut second = Publisher::new("globex-sre", "Globex", &["test", "reproduce", "remediate"]);
    publisher.ceiling = ceiling;
    second.ceiling = ceiling;
    let root = trust_root(&[&publisher, &second]);
    let dir = tempfile::tempdir().unwrap();
    let mut session = Session::new(
        EvidenceLog::open(dir.path(), SecretKey::generate().unwrap()).unwrap(),
        Limits::default(),
        SITE,
    )
    .unwrap();
    for capsule in capsule_artifacts::ALL {
        let source = edge_runner::capsule::ManifestSource::parse(
            capsule.manifest,
            Path::new(capsule.manifest_path),
        )
        .unwrap();
        let signed = edge_runner::capsule::sign(
            capsule.component,
            &source,
            &publisher.key,
            edge_runner::timestamp::Timestamp::now(),
        )
        .unwrap();
        let signed = edge_runner::capsule::cosign(
            &signed,
            &second.key,
            &[publisher.key.public()],
            edge_runner::timestamp::Timestamp::now(),
        )
        .unwrap();
        let verified = session.verify(raw(signed), &root).unwrap();
        let record = session.run(verified, PASSING_INPUT.as_bytes()).unwrap();
        assert_eq!(
            record.report.status,
            RunStatus::Completed,
            "{}: {:?}",
            capsule.package,
            record.report.error
        );
    }
}

/// The `log-opened` body of a log signed by `key`.
fn opened(key: &SecretKey) -> ciborium::Value {
    evidence::Event::from(evidence::events::LogOpened {
        runner_key: *key.public().as_bytes(),
        runner_version: "0.1.0".into(),
        torn_bytes_dropped: 0,
    })
    .body()
}

/// A `capsule-verified` event as the runner writes it.
fn accepted(name: &str, version: &str, digest: u8, root_version: u64) -> evidence::Event {
    use evidence::events::{CapsuleVerified, TrustRootRef};
    evidence::Event::from(CapsuleVerified {
        name: name.into(),
        version: semver::Version::parse(version).unwrap(),
        kind: "test".into(),
        module_sha256: [digest; 32],
        file_sha256: [digest; 32],
        signers: Vec::new(),
        trust_root: TrustRootRef {
            name: "test-root".into(),
            version: root_version,
            sha256: [0; 32],
            development: false,
        },
        site: "plant-7".into(),
        checked_at: 1_800_000_000,
        signature_placement: "embedded".into(),
        audience: vec!["*".into()],
        not_before: 1_700_000_000,
        expires: 1_900_000_000,
        signature_sha256: None,
        trust_anchor: None,
        job: None,
    })
}

/// A log the runner key signed, as a runner that skipped its rollback check would write it.
fn forged_log(events: Vec<evidence::Event>) -> (Vec<u8>, SecretKey) {
    let key = SecretKey::generate().unwrap();
    let events = std::iter::once(evidence::Event::decode("log-opened", &opened(&key)).unwrap())
        .chain(events);
    let mut prev = evidence::GENESIS_PREV;
    let mut bytes = Vec::new();
    for (seq, event) in events.into_iter().enumerate() {
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

#[test]
fn auditor_detects_a_recorded_capsule_rollback() {
    let (bytes, key) = forged_log(vec![
        accepted("db-check", "1.4.0", 1, 1),
        accepted("db-check", "1.3.9", 2, 1),
    ]);
    let failure = evidence::verify_log(&bytes, &key.public()).unwrap_err();
    assert_eq!(
        failure.to_string(),
        "record 2 accepts a rollback: capsule `db-check` 1.3.9 is older than 1.4.0, which was already accepted"
    );
}

#[test]
fn auditor_detects_a_reused_version_and_a_trust_root_rollback() {
    let (bytes, key) = forged_log(vec![
        accepted("db-check", "1.4.0", 1, 1),
        accepted("db-check", "1.4.0", 2, 1),
    ]);
    let failure = evidence::verify_log(&bytes, &key.public()).unwrap_err();
    assert!(
        matches!(failure, Failure::Rollback { record: 2, .. }),
        "{failure}"
    );
    let (bytes, key) = forged_log(vec![
        accepted("db-check", "1.4.0", 1, 3),
        accepted("other", "1.0.0", 2, 2),
    ]);
    let failure = evidence::verify_log(&bytes, &key.public()).unwrap_err();
    assert_eq!(
        failure.to_string(),
        "record 2 accepts a rollback: trust root `test-root` v2 is older than v3, which was already used"
    );
}

/// A `run-started` event for module `digest`, granted nothing but compute.
fn started(digest: u8) -> evidence::Event {
    use evidence::events::{GrantRef, RunStarted, SitePolicyRef};
    evidence::Event::from(RunStarted {
        module_sha256: [digest; 32],
        input_sha256: [0; 32],
        input_size: 0,
        grant: GrantRef {
            memory_bytes: 64 << 20,
            fuel: 1_000_000_000,
            wall_time_ms: 10_000,
            stdout_bytes: 65536,
            stderr_bytes: 65536,
            evidence_items: 64,
            evidence_bytes: 1 << 20,
            filesystem: Vec::new(),
            network: Vec::new(),
            deterministic: None,
            config: Vec::new(),
        },
        refused: Vec::new(),
        denied: Vec::new(),
        site_policy: SitePolicyRef {
            site: "plant-7".into(),
            sha256: None,
        },
        job: None,
    })
}

/// A `run-finished` event for module `digest` that never started.
fn finished(digest: u8) -> evidence::Event {
    evidence::Event::from(evidence::events::RunFinished {
        module_sha256: [digest; 32],
        status: "not-started".into(),
        usage: None,
        outcome: None,
        error: Some("could not start".into()),
        exit_code: None,
        compile_ms: None,
        truncated: Vec::new(),
        job: None,
    })
}

#[test]
fn run_of_a_capsule_that_was_not_the_one_verified() {
    // Capsule 1 is verified, but module 2 runs: the run is credited to nobody.
    let (bytes, key) = forged_log(vec![accepted("db-check", "1.4.0", 1, 1), started(2)]);
    let failure = evidence::verify_log(&bytes, &key.public()).unwrap_err();
    assert_eq!(
        failure.to_string(),
        format!(
            "record 2: `run-started` runs module {}, but the newest `capsule-verified` record before it (record 1) admitted module {}",
            hex::encode([2u8; 8]),
            hex::encode([1u8; 8])
        )
    );
    // The same module, admitted, runs and finishes: valid.
    let (bytes, key) = forged_log(vec![
        accepted("db-check", "1.4.0", 1, 1),
        started(1),
        finished(1),
    ]);
    evidence::verify_log(&bytes, &key.public()).unwrap();
}

#[test]
fn run_with_no_verification_before_it() {
    let (bytes, key) = forged_log(vec![started(1)]);
    let failure = evidence::verify_log(&bytes, &key.public()).unwrap_err();
    assert!(
        matches!(failure, Failure::Unadmitted { record: 1, .. }),
        "{failure}"
    );
    assert!(
        failure
            .to_string()
            .ends_with("but no `capsule-verified` record before it admitted any capsule"),
        "{failure}"
    );
}

#[test]
fn run_finished_that_closes_no_run() {
    let (bytes, key) = forged_log(vec![accepted("db-check", "1.4.0", 1, 1), finished(1)]);
    let failure = evidence::verify_log(&bytes, &key.public()).unwrap_err();
    assert_eq!(
        failure.to_string(),
        format!(
            "record 2: `run-finished` for module {} closes no `run-started` of that module",
            hex::encode([1u8; 8])
        )
    );
}

#[test]
fn known_event_with_an_empty_body() {
    // A `run-finished` stripped of its fields: it no longer says how the run ended.
    let empty = edge_runner::cbor::text_map(Vec::<(String, ciborium::Value)>::new());
    // Built as an unknown event, since the typed `RunFinished` cannot be empty.
    let event = evidence::Event::Unknown(evidence::events::UnknownEvent {
        name: "run-finished".into(),
        body: empty,
    });
    let (bytes, key) = forged_log(vec![event]);
    let failure = evidence::verify_log(&bytes, &key.public()).unwrap_err();
    assert_eq!(
        failure.to_string(),
        "record 1 (`run-finished`) has a malformed body: `run-finished` body: `module-sha256` is missing"
    );
}

#[test]
fn log_that_does_not_open_with_log_opened_for_its_key() {
    // Record 0 names the key that signs the log; a log whose first record is
    // another event, or names another key, did not start as a log of this runner.
    let key = SecretKey::generate().unwrap();
    let sign = |event: &str, body: ciborium::Value| {
        evidence::sign_record(
            evidence::Record {
                log_id: [7; 16],
                seq: 0,
                prev: evidence::GENESIS_PREV,
                time_ms: 1,
                event: event.into(),
                body,
            },
            &key,
        )
        .unwrap()
        .bytes
    };
    let other = SecretKey::generate().unwrap();
    let failure =
        evidence::verify_log(&sign("log-opened", opened(&other)), &key.public()).unwrap_err();
    assert_eq!(
        failure.to_string(),
        format!(
            "record 0: `log-opened` names runner key {}, not the key {} the log is verified under",
            other.id().short(),
            key.id().short()
        )
    );
    let note = edge_runner::cbor::text_map([("t", ciborium::Value::Text("x".into()))]);
    let failure = evidence::verify_log(&sign("note", note), &key.public()).unwrap_err();
    assert_eq!(
        failure.to_string(),
        "record 0: the log must open with a `log-opened` record, not `note`"
    );
}

#[test]
fn high_water_mark_survives_reopening_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (_bytes, runner) = make_log(dir.path());
    let log = EvidenceLog::open(dir.path(), runner).unwrap();
    let (version, _) = log.high_water().capsule("json-assert").unwrap().clone();
    assert_eq!(version, semver::Version::new(1, 0, 0));
    assert_eq!(log.high_water().root("test-root"), Some(1));
}

#[test]
fn checkpoints_are_written_every_n_records_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let runner = SecretKey::generate().unwrap();
    let public = runner.public();
    let mut log = EvidenceLog::open(dir.path(), runner).unwrap();
    log.set_checkpoint_policy(evidence::CheckpointPolicy {
        every_records: 3,
        every: std::time::Duration::from_secs(3600),
    });
    for i in 0..7u64 {
        log.append(
            "note",
            edge_runner::cbor::text_map([("i", ciborium::Value::Integer(i.into()))]),
        )
        .unwrap();
    }
    log.close().unwrap();
    let bytes = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
    let summary = evidence::verify_log(&bytes, &public).unwrap();
    let positions: Vec<u64> = summary
        .records
        .iter()
        .filter(|r| r.record.event == "checkpoint")
        .map(|r| r.record.seq)
        .collect();
    // log-opened + 2 notes, checkpoint; 3 notes, checkpoint; 2 notes, closing checkpoint.
    assert_eq!(positions, [3, 7, 10]);
    let note = std::fs::read_to_string(dir.path().join(evidence::CHECKPOINT_FILE)).unwrap();
    let cp = evidence::check_against_checkpoint(&summary, &note, &public).unwrap();
    // The file covers every record, the closing checkpoint record included;
    // that record itself covers the 10 before it.
    assert_eq!(cp.size, 11);
    assert_eq!(summary.last_checkpoint.as_ref().map(|c| c.size), Some(10));
    assert!(note.starts_with(&format!(
        "edge-runner/log/{}\n11\n",
        hex::encode(summary.log_id)
    )));
}

#[test]
fn tail_truncation_is_caught_with_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, runner) = make_log(dir.path());
    let note = std::fs::read_to_string(dir.path().join(evidence::CHECKPOINT_FILE)).unwrap();
    let spans = record_spans(&bytes);
    // Cut the last whole record (the closing checkpoint itself): the shorter log is a valid chain...
    let cut = &bytes[..spans[spans.len() - 1].start];
    let summary = evidence::verify_log(cut, &runner.public()).unwrap();
    // ...but not against the checkpoint the runner signed before.
    let failure =
        evidence::check_against_checkpoint(&summary, &note, &runner.public()).unwrap_err();
    assert_eq!(
        failure.to_string(),
        format!(
            "the log holds {} records but a checkpoint the runner signed for it covers {}: records were removed from its end (truncation)",
            spans.len() - 1,
            spans.len()
        )
    );
}

#[test]
fn checkpoint_over_a_forked_history_is_caught() {
    // A runner (or whoever holds its key) signs a checkpoint, then rewrites history
    // and re-signs every record: the rewritten log verifies alone, but not against
    // the checkpoint an auditor or witness kept.
    let key = SecretKey::generate().unwrap();
    let write = |dir: &Path, text: &str| {
        let mut log = EvidenceLog::open(
            dir,
            SecretKey::from_pem(&key.to_pem().unwrap(), Path::new("k")).unwrap(),
        )
        .unwrap();
        log.append(
            "note",
            edge_runner::cbor::text_map([("t", ciborium::Value::Text(text.into()))]),
        )
        .unwrap();
        log.close().unwrap();
    };
    let original = tempfile::tempdir().unwrap();
    write(original.path(), "what happened");
    let kept = std::fs::read_to_string(original.path().join(evidence::CHECKPOINT_FILE)).unwrap();
    let original_log = std::fs::read(original.path().join(LOG_FILE)).unwrap();

    // The fork: same log id and key, different history.
    let forked = tempfile::tempdir().unwrap();
    let spans = record_spans(&original_log);
    std::fs::write(forked.path().join(LOG_FILE), &original_log[..spans[0].end]).unwrap();
    write(forked.path(), "what we say happened");
    let forked_log = std::fs::read(forked.path().join(LOG_FILE)).unwrap();
    let summary = evidence::verify_log(&forked_log, &key.public()).unwrap();
    let failure = evidence::check_against_checkpoint(&summary, &kept, &key.public()).unwrap_err();
    assert!(
        failure
            .to_string()
            .contains("history was rewritten after it was signed"),
        "{failure}"
    );
}

#[test]
fn a_checkpoint_record_that_lies_about_its_root_is_refused() {
    let key = SecretKey::generate().unwrap();
    let log_id = [9u8; 16];
    let first = evidence::sign_record(
        evidence::Record {
            log_id,
            seq: 0,
            prev: evidence::GENESIS_PREV,
            time_ms: 1,
            event: "log-opened".into(),
            body: opened(&key),
        },
        &key,
    )
    .unwrap();
    let wrong_root = [0u8; 32];
    let note = evidence::Checkpoint {
        origin: evidence::origin(&log_id),
        size: 1,
        root: wrong_root,
    }
    .sign(&key);
    let cp = evidence::sign_record(
        evidence::Record {
            log_id,
            seq: 1,
            prev: first.hash,
            time_ms: 2,
            event: "checkpoint".into(),
            body: edge_runner::cbor::text_map([
                ("size", ciborium::Value::Integer(1.into())),
                ("root", ciborium::Value::Bytes(wrong_root.to_vec())),
                ("note", ciborium::Value::Text(note)),
            ]),
        },
        &key,
    )
    .unwrap();
    let mut bytes = first.bytes.clone();
    bytes.extend_from_slice(&cp.bytes);
    let failure = evidence::verify_log(&bytes, &key.public()).unwrap_err();
    assert_eq!(
        failure.to_string(),
        "record 1 is a bad checkpoint: its root is not the Merkle root of the records before it"
    );
}

/// In the child process of `sigkill_loses_no_acknowledged_record`: appends
/// records (single and in groups) forever, printing each acknowledged seq.
fn crash_child(dir: &Path) -> ! {
    use std::io::Write;
    let key = SecretKey::load(&dir.join("runner.key")).unwrap();
    let mut log = EvidenceLog::open(dir, key).unwrap();
    let mut out = std::io::stdout().lock();
    let mut n: u64 = 0;
    loop {
        let group = 1 + (n % 7) as usize;
        let entries = (0..group)
            .map(|i| {
                (
                    "note".to_string(),
                    edge_runner::cbor::text_map([(
                        "n",
                        ciborium::Value::Integer((n + i as u64).into()),
                    )]),
                )
            })
            .collect();
        for record in log.append_batch(entries).unwrap() {
            writeln!(out, "ACK {}", record.record.seq).unwrap();
        }
        out.flush().unwrap();
        n += group as u64;
    }
}

#[test]
fn sigkill_loses_no_acknowledged_record() {
    if let Some(dir) = std::env::var_os("EDGE_RUNNER_CRASH_CHILD") {
        crash_child(Path::new(&dir));
    }
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    key.write_pair(dir.path(), "runner").unwrap();
    let mut acknowledged = std::collections::BTreeSet::new();
    for round in 0..6u64 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "sigkill_loses_no_acknowledged_record",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("EDGE_RUNNER_CRASH_CHILD", dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(stdout).lines();
        // Kill at a different point each round, mid-stream.
        let wanted = 40 + round * 37;
        let mut seen = 0;
        while seen < wanted {
            let line = lines.next().expect("child ended early").unwrap();
            if let Some(seq) = line.strip_prefix("ACK ") {
                acknowledged.insert(seq.parse::<u64>().unwrap());
                seen += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        // Anything the child printed before dying was acknowledged too.
        for line in lines.map_while(Result::ok) {
            if let Some(seq) = line.strip_prefix("ACK ") {
                acknowledged.insert(seq.parse::<u64>().unwrap());
            }
        }
        // Reopening repairs a torn tail (if the kill landed mid-write) and keeps every acknowledged record.
        let log = EvidenceLog::open(
            dir.path(),
            SecretKey::load(&dir.path().join("runner.key")).unwrap(),
        )
        .unwrap();
        drop(log);
        let bytes = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
        let summary = evidence::verify_log(&bytes, &key.public()).unwrap();
        let present: std::collections::BTreeSet<u64> = summary
            .records
            .iter()
            .filter(|r| r.record.event == "note")
            .map(|r| r.record.seq)
            .collect();
        let lost: Vec<&u64> = acknowledged.difference(&present).collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged records lost: {lost:?}"
        );
    }
    assert!(
        acknowledged.len() > 500,
        "only {} records acknowledged",
        acknowledged.len()
    );
}

#[test]
fn a_valid_record_re_encoded_non_canonically_is_refused() {
    use coset::{CoseSign1Builder, HeaderBuilder, TaggedCborSerializable, iana};
    let key = SecretKey::generate().unwrap();
    // The same fields a genuine record has, with map keys in descending order:
    // valid CBOR, correctly signed, but not the one deterministic encoding.
    let int = |i: i64| ciborium::Value::Integer(i.into());
    let payload = ciborium::Value::Map(vec![
        (
            int(7),
            edge_runner::cbor::text_map([("t", ciborium::Value::Text("x".into()))]),
        ),
        (int(6), ciborium::Value::Text("note".into())),
        (int(5), int(1)),
        (int(4), ciborium::Value::Bytes(vec![0; 32])),
        (int(3), int(0)),
        (int(2), ciborium::Value::Bytes(vec![9; 16])),
        (int(1), int(1)),
    ]);
    let mut payload_bytes = Vec::new();
    ciborium::ser::into_writer(&payload, &mut payload_bytes).unwrap();
    let protected = HeaderBuilder::new()
        .algorithm(iana::Algorithm::EdDSA)
        .content_type(evidence::CONTENT_TYPE.to_string())
        .key_id(key.id().0.to_vec())
        .build();
    let record = CoseSign1Builder::new()
        .protected(protected)
        .payload(payload_bytes)
        .create_signature(evidence::EVIDENCE_CONTEXT, |tbs| {
            key.sign(tbs).to_bytes().to_vec()
        })
        .build()
        .to_tagged_vec()
        .unwrap();
    let failure = evidence::verify_log(&record, &key.public()).unwrap_err();
    assert!(
        matches!(failure, Failure::BadRecord { record: 0, .. }),
        "{failure}"
    );
    assert!(
        failure
            .to_string()
            .contains("not in deterministic encoding"),
        "{failure}"
    );
}

/// `bytes` with record `index` replaced by `replacement`.
fn splice(bytes: &[u8], index: usize, replacement: &[u8]) -> Vec<u8> {
    let spans = record_spans(bytes);
    let mut out = bytes[..spans[index].start].to_vec();
    out.extend_from_slice(replacement);
    out.extend_from_slice(&bytes[spans[index].end..]);
    out
}

#[test]
fn record_spliced_in_from_another_runners_log() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, a_key) = make_log(a_dir.path());
    let (b, b_key) = make_log(b_dir.path());
    let from_b = &b[record_spans(&b)[3].clone()];
    let failure = evidence::verify_log(&splice(&a, 3, from_b), &a_key.public()).unwrap_err();
    assert_eq!(
        failure,
        Failure::WrongKey {
            record: 3,
            found: b_key.id().short(),
            expected: a_key.id().short()
        }
    );
}

#[test]
fn record_spliced_in_from_another_log_of_the_same_runner() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, key) = make_log(a_dir.path());
    // A second log under the same runner key (another evidence directory).
    let mut log = EvidenceLog::open(
        b_dir.path(),
        SecretKey::from_pem(&key.to_pem().unwrap(), Path::new("k")).unwrap(),
    )
    .unwrap();
    for _ in 0..4 {
        log.append(
            "note",
            edge_runner::cbor::text_map([("x", ciborium::Value::Bool(true))]),
        )
        .unwrap();
    }
    drop(log);
    let b = std::fs::read(b_dir.path().join(LOG_FILE)).unwrap();
    let from_b = &b[record_spans(&b)[3].clone()];
    let failure = evidence::verify_log(&splice(&a, 3, from_b), &key.public()).unwrap_err();
    assert_eq!(failure, Failure::LogIdMismatch { record: 3 });
}

#[test]
fn record_re_signed_with_another_key() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, key) = make_log(dir.path());
    let span = record_spans(&bytes)[2].clone();
    let record = evidence::decode_record(&bytes[span], &key.public()).unwrap();
    let mallory = SecretKey::generate().unwrap();
    let forged = evidence::sign_record(record, &mallory).unwrap();
    let failure =
        evidence::verify_log(&splice(&bytes, 2, &forged.bytes), &key.public()).unwrap_err();
    assert_eq!(
        failure,
        Failure::WrongKey {
            record: 2,
            found: mallory.id().short(),
            expected: key.id().short()
        }
    );
}

#[test]
fn capsule_admitted_by_another_session_is_refused() {
    // A capsule verified (and recorded) in one log cannot run in a session
    // writing another: that log never shows it verified.
    let publisher = Publisher::new("acme-ci", "Acme", &["test"]);
    let root = trust_root(&[&publisher]);
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let session = |dir: &Path| {
        Session::new(
            EvidenceLog::open(dir, SecretKey::generate().unwrap()).unwrap(),
            Limits::default(),
            SITE,
        )
        .unwrap()
    };
    let (mut a, mut b) = (session(a_dir.path()), session(b_dir.path()));
    let admitted = a
        .verify(raw(signed_json_assert(&publisher.key)), &root)
        .unwrap();
    let b_records = b.log().len();
    let err = b.run(admitted, PASSING_INPUT.as_bytes()).unwrap_err();
    assert!(matches!(err, SessionError::NotAdmittedHere { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "capsule `json-assert 1.0.0` was not admitted by this session (it was verified in log {}, and this session records to log {}); verify it in this session, then run it",
            hex::encode(a.log().log_id()),
            hex::encode(b.log().log_id())
        )
    );
    assert_eq!(
        b.log().len(),
        b_records,
        "nothing was recorded in the other log"
    );
}

#[test]
fn admission_superseded_by_a_newer_verification_is_refused() {
    // Verify A, verify B, run A: the run would be credited to B by whoever reads the log.
    let publisher = Publisher::new("acme-ci", "Acme", &["test"]);
    let root = trust_root(&[&publisher]);
    let dir = tempfile::tempdir().unwrap();
    let mut session = Session::new(
        EvidenceLog::open(dir.path(), SecretKey::generate().unwrap()).unwrap(),
        Limits::default(),
        SITE,
    )
    .unwrap();
    let first = session
        .verify(raw(signed_json_assert(&publisher.key)), &root)
        .unwrap();
    let second = session
        .verify(raw(signed_json_assert(&publisher.key)), &root)
        .unwrap();
    let err = session.run(first, PASSING_INPUT.as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "capsule `json-assert 1.0.0` was not admitted by this session (its verification is record 1, but a newer capsule was verified since, in record {}); verify it in this session, then run it",
            second.record().unwrap()
        )
    );
    // The newest admission runs, and the log verifies.
    session.run(second, PASSING_INPUT.as_bytes()).unwrap();
}

#[test]
fn truncated_log_below_its_checkpoint_is_refused_not_repaired() {
    // An attacker who can write the evidence directory cuts records off the end
    // (whole records, or in the middle of one) and leaves DIR/checkpoint, which
    // covers the longer log. Cutting the "torn tail" and appending would erase
    // the cut (and forget the capsule versions accepted in it).
    for mid_record in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, runner) = make_log(dir.path());
        let spans = record_spans(&bytes);
        let keep = spans.len() - 3;
        let cut_at = spans[keep].start + if mid_record { 10 } else { 0 };
        let cut = bytes[..cut_at].to_vec();
        let log_path = dir.path().join(LOG_FILE);
        std::fs::write(&log_path, &cut).unwrap();

        let err = EvidenceLog::open(dir.path(), runner).unwrap_err();
        assert!(
            matches!(err, EvidenceError::BehindCheckpoint { .. }),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "evidence log {} does not extend its newest checkpoint: the checkpoint covers {} records, but the log holds {keep} complete ones. Records that were checkpointed are gone or changed, which a crash cannot do, so this is tampering; nothing was appended or cut. Keep the directory as it is for investigation and follow the recovery procedure in docs/evidence-format.md §9",
                log_path.display(),
                spans.len()
            )
        );
        assert_eq!(
            std::fs::read(&log_path).unwrap(),
            cut,
            "the log was left as found"
        );
    }
}

#[test]
fn log_rewritten_under_its_checkpoint_is_refused() {
    // Same length, other history: the checkpoint's Merkle root gives it away.
    let dir = tempfile::tempdir().unwrap();
    let (bytes, runner) = make_log(dir.path());
    let spans = record_spans(&bytes);
    let log_path = dir.path().join(LOG_FILE);
    // Replace the DIR/checkpoint with one that covers a different log of the same length.
    let other = tempfile::tempdir().unwrap();
    let copy = SecretKey::from_pem(&runner.to_pem().unwrap(), Path::new("k")).unwrap();
    std::fs::write(
        other.path().join(LOG_FILE),
        &bytes[..spans[spans.len() - 1].start],
    )
    .unwrap();
    drop(EvidenceLog::open(other.path(), copy).unwrap());
    let foreign = std::fs::read_to_string(other.path().join(evidence::CHECKPOINT_FILE)).unwrap();
    std::fs::write(dir.path().join(evidence::CHECKPOINT_FILE), foreign).unwrap();
    let before = std::fs::read(&log_path).unwrap();
    let err = EvidenceLog::open(dir.path(), runner).unwrap_err();
    assert!(
        err.to_string()
            .contains("does not extend its newest checkpoint: the checkpoint covers"),
        "{err}"
    );
    assert_eq!(std::fs::read(&log_path).unwrap(), before);
}

#[test]
fn capsule_admitted_before_the_log_was_reopened_is_refused() {
    // Same log, same last verification, but another session: the one that
    // judged the capsule (its clock, trust root and high-water mark) has ended.
    let publisher = Publisher::new("acme-ci", "Acme", &["test"]);
    let root = trust_root(&[&publisher]);
    let dir = tempfile::tempdir().unwrap();
    let runner = SecretKey::generate().unwrap();
    let copy = SecretKey::from_pem(&runner.to_pem().unwrap(), Path::new("k")).unwrap();
    let mut first = Session::new(
        EvidenceLog::open(dir.path(), runner).unwrap(),
        Limits::default(),
        SITE,
    )
    .unwrap();
    let admitted = first
        .verify(raw(signed_json_assert(&publisher.key)), &root)
        .unwrap();
    drop(first);
    let mut second = Session::new(
        EvidenceLog::open(dir.path(), copy).unwrap(),
        Limits::default(),
        SITE,
    )
    .unwrap();
    let err = second.run(admitted, PASSING_INPUT.as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "capsule `json-assert 1.0.0` was not admitted by this session (it was verified by another session of this log, which has ended); verify it in this session, then run it"
    );
}

/// A checkpoint whose signed resume state does not match the records before
/// it (here: high-water marks that forget an accepted capsule, which would let
/// a resumed runner accept its rollback) fails verification, even signed by
/// the runner's own key.
#[test]
fn checkpoint_with_a_false_resume_state_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, runner) = make_log(dir.path());
    let public = runner.public();
    let summary = evidence::verify_log(&bytes, &public).unwrap();
    let last = summary.records.last().unwrap();
    assert_eq!(last.record.event, "checkpoint");
    let ciborium::Value::Map(mut body) = last.record.body.clone() else {
        panic!("checkpoint body is a map")
    };
    let state = body
        .iter_mut()
        .find(|(k, _)| k.as_text() == Some("state"))
        .map(|(_, v)| v)
        .expect("checkpoints carry a resume state");
    let ciborium::Value::Map(fields) = state else {
        panic!("state is a map")
    };
    for (k, v) in fields.iter_mut() {
        if k.as_text() == Some("high-water") {
            *v = edge_runner::rollback::HighWater::default().to_value();
        }
    }
    let mut record = last.record.clone();
    record.body = ciborium::Value::Map(body);
    let forged = evidence::sign_record(record, &runner).unwrap();
    let start = bytes.len() - last.bytes.len();
    let mut altered = bytes[..start].to_vec();
    altered.extend_from_slice(&forged.bytes);
    let err = evidence::verify_log(&altered, &public).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "record {} is a bad checkpoint: its resume `state` is not the state the records before it give (frontier, high-water marks, last verification or open run differ)",
            summary.records.len() - 1
        )
    );
}

fn key_copy(key: &SecretKey) -> SecretKey {
    SecretKey::from_pem(&key.to_pem().unwrap(), Path::new("mem")).unwrap()
}

/// Signs `event` with `body` as the next record after the valid log `bytes`
/// with `key`, as someone holding that key could, and appends it.
fn forge_next(
    bytes: &[u8],
    verify_key: &SecretKey,
    key: &SecretKey,
    event: &str,
    body: ciborium::Value,
) -> Vec<u8> {
    let summary = evidence::verify_log(bytes, &verify_key.public()).unwrap();
    let last = summary.records.last().unwrap();
    let record = evidence::Record {
        log_id: summary.log_id,
        seq: summary.records.len() as u64,
        prev: last.hash,
        time_ms: last.record.time_ms,
        event: event.into(),
        body,
    };
    let mut out = bytes.to_vec();
    out.extend_from_slice(&evidence::sign_record(record, key).unwrap().bytes);
    out
}

#[test]
fn key_rotation_hands_the_log_to_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let (_, old) = make_log(dir.path());
    let new = SecretKey::generate().unwrap();
    let mut log = EvidenceLog::open(dir.path(), key_copy(&old)).unwrap();
    let at = log
        .rotate_key(key_copy(&new), "scheduled yearly rotation")
        .unwrap();
    log.append("note", edge_runner::cbor::text_map([("n", 1u64.into())]))
        .unwrap();
    log.close().unwrap();
    let bytes = std::fs::read(dir.path().join(LOG_FILE)).unwrap();

    // Either key verifies the whole log, and the summary says who signed what.
    for key in [&old, &new] {
        let summary = evidence::verify_log(&bytes, &key.public()).unwrap();
        assert_eq!(
            summary.keys,
            vec![(0, old.public()), (at + 1, new.public())]
        );
        assert_eq!(summary.records[at as usize].record.event, "key-rotated");
    }
    let stranger = SecretKey::generate().unwrap();
    assert!(matches!(
        evidence::verify_log(&bytes, &stranger.public()).unwrap_err(),
        Failure::WrongKey { record: 0, .. }
    ));

    // Only the new key continues the log, from its checkpoint or from record 0.
    let err = EvidenceLog::open(dir.path(), key_copy(&old)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "evidence log {} no longer accepts runner key {}: record {at} handed the log over to key {}; use that key (and keep the old one offline, or destroy it)",
            dir.path().join(LOG_FILE).display(),
            old.id().short(),
            new.id().short()
        )
    );
    drop(EvidenceLog::open(dir.path(), key_copy(&new)).unwrap());
    std::fs::remove_file(dir.path().join(evidence::RESUME_FILE)).unwrap();
    drop(EvidenceLog::open(dir.path(), key_copy(&new)).unwrap());
    let bytes = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
    evidence::verify_log(&bytes, &new.public()).unwrap();

    // The old key, read by an attacker after the rotation, signs nothing that verifies.
    let forged = forge_next(
        &bytes,
        &new,
        &old,
        "note",
        edge_runner::cbor::text_map([("n", 2u64.into())]),
    );
    assert!(matches!(
        evidence::verify_log(&forged, &new.public()).unwrap_err(),
        Failure::WrongKey { .. }
    ));
}

#[test]
fn key_rotation_not_signed_by_the_new_key_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, old) = make_log(dir.path());
    let new = SecretKey::generate().unwrap();
    let summary = evidence::verify_log(&bytes, &old.public()).unwrap();
    let seq = summary.records.len() as u64;
    let prev = summary.head;
    let body = |old_key: [u8; 32], signer: &SecretKey| {
        let message = evidence::events::key_rotation_message(
            &summary.log_id,
            seq,
            &prev,
            &old_key,
            new.public().as_bytes(),
        );
        evidence::Event::from(evidence::events::KeyRotated {
            old_key,
            new_key: *new.public().as_bytes(),
            new_key_signature: signer.sign(&message).to_bytes(),
            reason: String::new(),
        })
        .body()
    };
    // The old key alone cannot hand the log to a key that did not agree.
    let forged = forge_next(
        &bytes,
        &old,
        &old,
        "key-rotated",
        body(*old.public().as_bytes(), &old),
    );
    assert_eq!(
        evidence::verify_log(&forged, &old.public())
            .unwrap_err()
            .to_string(),
        format!(
            "record {seq} is a bad key rotation: `new-key-signature` is not a valid signature by the new key {} over the handover",
            new.id().short()
        )
    );
    // A handover must name the key that signs it as the old key.
    let stranger = SecretKey::generate().unwrap();
    let forged = forge_next(
        &bytes,
        &old,
        &old,
        "key-rotated",
        body(*stranger.public().as_bytes(), &new),
    );
    assert_eq!(
        evidence::verify_log(&forged, &old.public())
            .unwrap_err()
            .to_string(),
        format!(
            "record {seq} is a bad key rotation: `old-key` is not {}, the key that signed it",
            old.id().short()
        )
    );
    // The genuine handover verifies.
    let good = forge_next(
        &bytes,
        &old,
        &old,
        "key-rotated",
        body(*old.public().as_bytes(), &new),
    );
    evidence::verify_log(&good, &new.public()).unwrap();
    // And the writer never writes one except through rotate_key.
    let mut log = EvidenceLog::open(dir.path(), key_copy(&old)).unwrap();
    let err = log
        .append("key-rotated", body(*old.public().as_bytes(), &new))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("a `key-rotated` record is written only by `EvidenceLog::rotate_key`"),
        "{err}"
    );
}

#[test]
fn log_rolls_into_segments_and_the_chain_continues_across_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let runner = SecretKey::generate().unwrap();
    let public = runner.public();
    let mut log = EvidenceLog::open(d, key_copy(&runner)).unwrap();
    log.set_checkpoint_policy(evidence::CheckpointPolicy {
        every_records: 16,
        every: std::time::Duration::from_secs(3600),
    });
    log.set_segment_policy(evidence::SegmentPolicy {
        max_bytes: 8 * 1024,
        max_age: None,
    });
    for n in 0..300u64 {
        log.append("note", edge_runner::cbor::text_map([("n", n.into())]))
            .unwrap();
    }
    let len = log.len();
    log.close().unwrap();

    let segments = evidence::segment_files(d).unwrap();
    assert!(segments.len() >= 3, "{segments:?}");
    // Each segment after the first, and the active file, begins with a
    // checkpoint carrying the resume state, and is named for its first record.
    let whole = evidence::read_log_dir(d, u64::MAX).unwrap();
    let summary = evidence::verify_log(&whole, &public).unwrap();
    assert_eq!(
        summary.records.len() as u64,
        len + 1,
        "every record, once, in order"
    );
    let mut files = segments.clone();
    files.push(d.join(LOG_FILE));
    for (i, file) in files.iter().enumerate() {
        let bytes = std::fs::read(file).unwrap();
        let (first, _) = edge_runner::cbor::decode_prefix(&bytes).unwrap();
        let first = summary
            .records
            .iter()
            .find(|r| r.bytes == edge_runner::cbor::encode(&first).unwrap())
            .unwrap();
        if i > 0 {
            assert_eq!(first.record.event, "checkpoint", "{}", file.display());
        }
        if i < segments.len() {
            assert_eq!(
                file.file_name().unwrap().to_str().unwrap(),
                evidence::segment_name(first.record.seq)
            );
        }
    }

    // Reopening resumes within the active file, or reads everything without the pointer.
    drop(EvidenceLog::open(d, key_copy(&runner)).unwrap());
    std::fs::remove_file(d.join(evidence::RESUME_FILE)).unwrap();
    let log = EvidenceLog::open(d, key_copy(&runner)).unwrap();
    let reopened = log.len();
    assert!(reopened > len);
    drop(log);
    let whole = evidence::read_log_dir(d, u64::MAX).unwrap();
    let summary = evidence::verify_log(&whole, &public).unwrap();
    assert_eq!(
        summary.records[reopened as usize - 1].record.event,
        "runner-started",
        "the full read found the same end of the log as the resume"
    );

    // A segment removed from the middle is a gap the verifier names.
    std::fs::remove_file(&segments[1]).unwrap();
    let cut = evidence::read_log_dir(d, u64::MAX).unwrap();
    assert!(matches!(
        evidence::verify_log(&cut, &public).unwrap_err(),
        Failure::Sequence { .. }
    ));
}

/// A crash between moving the active file into `segments/` and creating the
/// new one leaves no active file: the next open continues the same log.
#[test]
fn crash_while_rolling_a_segment_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, runner) = make_log(d);
    let before =
        evidence::verify_log(&std::fs::read(d.join(LOG_FILE)).unwrap(), &runner.public()).unwrap();
    std::fs::create_dir(d.join(evidence::SEGMENTS_DIR)).unwrap();
    std::fs::rename(
        d.join(LOG_FILE),
        d.join(evidence::SEGMENTS_DIR)
            .join(evidence::segment_name(0)),
    )
    .unwrap();
    let log = EvidenceLog::open(d, key_copy(&runner)).unwrap();
    assert_eq!(log.len(), before.records.len() as u64 + 1);
    assert_eq!(log.log_id(), before.log_id);
    drop(log);
    let whole = evidence::read_log_dir(d, u64::MAX).unwrap();
    let after = evidence::verify_log(&whole, &runner.public()).unwrap();
    assert_eq!(
        after.records[before.records.len()].record.event,
        "runner-started"
    );
}

/// An attacker who can write the evidence directory replaces the checkpoint
/// with a named pipe nobody writes to: opening the log must refuse, not hang.
#[test]
fn checkpoint_replaced_by_a_named_pipe_is_refused_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let copy = SecretKey::from_pem(&key.to_pem().unwrap(), Path::new("mem")).unwrap();
    EvidenceLog::open(dir.path(), key).unwrap().close().unwrap();
    let checkpoint = dir.path().join(evidence::CHECKPOINT_FILE);
    std::fs::remove_file(&checkpoint).unwrap();
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&checkpoint)
            .status()
            .unwrap()
            .success()
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let path = dir.path().to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(EvidenceLog::open(&path, copy).map(|_| ()));
    });
    let opened = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("opening the log must not wait on a named pipe");
    let err = opened.unwrap_err().to_string();
    assert!(err.contains("checkpoint"), "{err}");
}

/// A `governance-loaded` event for governance `site` version `version` with content `digest`.
fn governance_loaded(version: u64, digest: u8) -> evidence::Event {
    evidence::Event::from(evidence::events::GovernanceLoaded {
        name: "site".into(),
        version,
        sha256: [digest; 32],
        graph_sha256: [9; 32],
        signed_by: vec!["admin-0".into()],
    })
}

#[test]
fn auditor_detects_a_governance_rollback() {
    let (bytes, key) = forged_log(vec![governance_loaded(2, 1), governance_loaded(1, 2)]);
    let failure = evidence::verify_log(&bytes, &key.public()).unwrap_err();
    assert_eq!(
        failure.to_string(),
        "record 2 accepts a rollback: governance `site` v1 is older than v2, which was already used"
    );
    let (bytes, key) = forged_log(vec![governance_loaded(2, 1), governance_loaded(2, 3)]);
    let failure = evidence::verify_log(&bytes, &key.public()).unwrap_err();
    assert_eq!(
        failure.to_string(),
        format!(
            "record 2 accepts a rollback: governance `site` v2 was already used with content {}, but this one is {}",
            hex::encode([1u8; 32]),
            hex::encode([3u8; 32])
        )
    );
    let (bytes, key) = forged_log(vec![governance_loaded(1, 1), governance_loaded(2, 2)]);
    evidence::verify_log(&bytes, &key.public()).unwrap();
}
