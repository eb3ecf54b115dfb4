//! Witnesses: a witness cosigns only checkpoints that extend what it saw, and an auditor who
//! names witnesses catches a log rewritten or cut short by whoever holds the runner key.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ciborium::Value;
use edge_runner::audit::{self, Report, Truncation};
use edge_runner::evidence::bundle::Bundle;
use edge_runner::evidence::merkle::{leaf_hash, root};
use edge_runner::evidence::witness::{
    self, AddCheckpoint, LogConfig, WITNESSED_DIR, Witness, WitnessError, WitnessKey,
    WitnessPolicy, WitnessState,
};
use edge_runner::evidence::{self, CHECKPOINT_FILE, Checkpoint, EvidenceLog, LOG_FILE, Summary};
use edge_runner::keys::{PublicKey, SecretKey};
use edge_runner::timestamp::Timestamp;

const W1: &str = "witness.example/w1";
const W2: &str = "witness.example/w2";
const T1: Timestamp = Timestamp(1_800_000_000);
const T2: Timestamp = Timestamp(1_800_000_600);

fn copy(key: &SecretKey) -> SecretKey {
    SecretKey::from_pem(&key.to_pem().unwrap(), Path::new("mem")).unwrap()
}

/// Opens the log in `dir`, appends `n` records, and closes it (which writes a checkpoint).
fn append(dir: &Path, key: &SecretKey, n: usize) {
    let mut log = EvidenceLog::open(dir, copy(key)).unwrap();
    for i in 0..n {
        log.append(
            "test-note",
            Value::Map(vec![(Value::Text("i".into()), Value::Integer(i.into()))]),
        )
        .unwrap();
    }
    log.close().unwrap();
}

fn summary(dir: &Path, key: &SecretKey) -> Summary {
    evidence::verify_log(&fs::read(dir.join(LOG_FILE)).unwrap(), &key.public()).unwrap()
}

fn checkpoint_note(dir: &Path) -> String {
    fs::read_to_string(dir.join(CHECKPOINT_FILE)).unwrap()
}

/// A runner's evidence directory and one witness following its log.
struct Setup {
    _tmp: tempfile::TempDir,
    ev: PathBuf,
    runner: SecretKey,
    witness: Witness,
    state: WitnessState,
    log: LogConfig,
}

impl Setup {
    /// A log of `n` records plus the log-opened and checkpoint records.
    fn new(n: usize) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let ev = tmp.path().join("evidence");
        let runner = SecretKey::generate().unwrap();
        append(&ev, &runner, n);
        let origin = evidence::origin(&summary(&ev, &runner).log_id);
        let state = WitnessState::open(&tmp.path().join("witness")).unwrap();
        Self {
            witness: Witness::new(W1, SecretKey::generate().unwrap()).unwrap(),
            log: LogConfig {
                origin,
                key: runner.public(),
            },
            _tmp: tmp,
            ev,
            runner,
            state,
        }
    }

    /// The request for the current DIR/checkpoint from `old`.
    fn request(&self, old: u64) -> AddCheckpoint {
        witness::request_for(
            &summary(&self.ev, &self.runner),
            &checkpoint_note(&self.ev),
            &self.runner.public(),
            old,
        )
        .unwrap()
    }

    /// Asks the witness to cosign DIR/checkpoint from `old`; keeps the cosignature as the runner does.
    fn cosign(&self, witness: &Witness, old: u64, now: Timestamp) -> Result<(), WitnessError> {
        self.cosign_in(&self.state, witness, old, now)
    }

    /// [`Setup::cosign`] by a witness with its own state.
    fn cosign_in(
        &self,
        state: &WitnessState,
        witness: &Witness,
        old: u64,
        now: Timestamp,
    ) -> Result<(), WitnessError> {
        let request = self.request(old);
        let line = state.add_checkpoint(witness, &self.log, &request, now)?;
        keep(&self.ev, &request.note, &line, witness.public());
        Ok(())
    }

    fn size(&self) -> u64 {
        summary(&self.ev, &self.runner).records.len() as u64
    }

    fn verify(&self, witnesses: &[&WitnessKey], min: Option<usize>) -> Report {
        verify_dir(&self.ev, &self.runner.public(), &[], witnesses, min)
    }
}

/// Keeps a witness's answer next to the checkpoint, in DIR/witnessed/.
fn keep(ev: &Path, note: &str, response: &str, witness: &WitnessKey) {
    let (witnessed, _) = witness::attach(note, response, witness).unwrap();
    let dir = ev.join(WITNESSED_DIR);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(witness::witnessed_file_name(witness)), witnessed).unwrap();
}

/// What `evidence verify DIR --witness …` checks: DIR/checkpoint and DIR/witnessed/*.
/// `extra` are notes given with `--checkpoint`.
fn verify_dir(
    ev: &Path,
    key: &PublicKey,
    extra: &[String],
    witnesses: &[&WitnessKey],
    min: Option<usize>,
) -> Report {
    let mut notes: Vec<String> = fs::read_to_string(ev.join(CHECKPOINT_FILE))
        .ok()
        .into_iter()
        .collect();
    notes.extend(
        witness::read_witnessed(ev)
            .unwrap()
            .into_iter()
            .map(|(_, n)| n),
    );
    notes.extend_from_slice(extra);
    let policy = if witnesses.is_empty() {
        WitnessPolicy::none()
    } else {
        WitnessPolicy::new(witnesses.iter().map(|w| (*w).clone()).collect(), min).unwrap()
    };
    audit::verify_log_report_witnessed(
        &fs::read(ev.join(LOG_FILE)).unwrap(),
        key,
        &notes,
        &policy,
        &mut |_, _| {},
    )
}

/// The attacker holds the runner key: cuts the log to its first `keep` records and
/// re-signs DIR/checkpoint over what is left, so the runner opens it again.
fn cut_and_resign(s: &Setup, keep: usize) {
    let summary = summary(&s.ev, &s.runner);
    let len: usize = summary.records[..keep].iter().map(|r| r.bytes.len()).sum();
    let bytes = fs::read(s.ev.join(LOG_FILE)).unwrap();
    fs::write(s.ev.join(LOG_FILE), &bytes[..len]).unwrap();
    let leaves: Vec<_> = summary.records[..keep]
        .iter()
        .map(|r| leaf_hash(&r.bytes))
        .collect();
    let note = Checkpoint {
        origin: s.log.origin.clone(),
        size: keep as u64,
        root: root(&leaves),
    }
    .sign(&s.runner);
    fs::write(s.ev.join(CHECKPOINT_FILE), note).unwrap();
}

/// The full loop: cosigned, grown, cosigned again with a consistency proof.
fn witnessed_twice() -> Setup {
    let s = Setup::new(3);
    assert_eq!(s.size(), 5);
    s.cosign(&s.witness, 0, T1).unwrap();
    append(&s.ev, &s.runner, 2);
    assert_eq!(s.size(), 9);
    let request = s.request(5);
    assert!(!request.proof.is_empty(), "a real consistency proof");
    s.cosign(&s.witness, 5, T2).unwrap();
    s
}

#[test]
fn witnessed_log_verifies_and_says_how_truncation_is_ruled_out() {
    let s = witnessed_twice();
    let report = s.verify(&[s.witness.public()], None);
    assert_eq!(report.failure, None);
    assert_eq!(report.truncation, Truncation::Witnessed);
    assert_eq!(report.witnessed_size, Some(9));
    assert_eq!(report.witnesses[0].checkpoint_size, Some(9));
    assert_eq!(report.witnesses[0].cosigned_at, Some(T2.0));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["truncation"], "witnessed");
    assert_eq!(json["witnesses"][0]["name"], W1);

    let report = s.verify(&[], None);
    assert_eq!(report.failure, None);
    assert_eq!(report.truncation, Truncation::RunnerCheckpoint);
}

#[test]
fn verifier_with_witness_catches_a_rewritten_history() {
    let s = witnessed_twice();
    // The attacker rewrites everything after record 3, lets the runner carry on, and
    // removes the witnessed checkpoints: a valid chain under the runner key, with a
    // valid runner checkpoint over all 11 records.
    cut_and_resign(&s, 3);
    append(&s.ev, &s.runner, 6);
    fs::remove_dir_all(s.ev.join(WITNESSED_DIR)).unwrap();
    assert_eq!(s.size(), 11);
    let alone = s.verify(&[], None);
    assert_eq!(alone.failure, None, "the runner key alone cannot tell");
    assert_eq!(alone.truncation, Truncation::RunnerCheckpoint);
    // The auditor names the witness and has its latest checkpoint of this log (its state).
    let (_, from_witness) = s.state.latest(&s.log).unwrap().unwrap();
    let report = verify_dir(
        &s.ev,
        &s.runner.public(),
        &[from_witness],
        &[s.witness.public()],
        None,
    );
    assert_eq!(
        report.failure.as_deref(),
        Some(
            "the log (11 records) does not extend the checkpoint of 9 records cosigned by witness `witness.example/w1` at 2027-01-15T08:10:00Z: the first 9 records are not the ones the checkpoint covers (its Merkle root differs): history was rewritten after it was signed"
        )
    );
    // Without that checkpoint, the witness requirement alone refuses the log.
    let report = s.verify(&[s.witness.public()], None);
    assert!(
        report.failure.as_deref().unwrap().starts_with(
            "0 of the 1 witnesses required cosigned a checkpoint that this log extends"
        ),
        "{report:?}"
    );
}

#[test]
fn rewritten_history_kept_beside_its_witnessed_checkpoint_fails_even_without_witness() {
    let s = witnessed_twice();
    cut_and_resign(&s, 3);
    append(&s.ev, &s.runner, 6);
    // DIR/witnessed still holds the runner's signed checkpoint of 9 records.
    let report = s.verify(&[], None);
    assert_eq!(
        report.failure.as_deref(),
        Some(
            "the first 9 records are not the ones the checkpoint covers (its Merkle root differs): history was rewritten after it was signed"
        )
    );
}

#[test]
fn verifier_with_witness_catches_a_log_cut_short_and_re_signed() {
    let s = witnessed_twice();
    cut_and_resign(&s, 6);
    let report = s.verify(&[s.witness.public()], None);
    assert_eq!(
        report.failure.as_deref(),
        Some(
            "the log (6 records) does not extend the checkpoint of 9 records cosigned by witness `witness.example/w1` at 2027-01-15T08:10:00Z: the log holds 6 records but a checkpoint the runner signed for it covers 9: records were removed from its end (truncation)"
        )
    );
}

#[test]
fn verifier_with_witness_refuses_a_log_whose_witnessed_checkpoints_were_removed() {
    let s = witnessed_twice();
    cut_and_resign(&s, 6);
    fs::remove_dir_all(s.ev.join(WITNESSED_DIR)).unwrap();
    let report = s.verify(&[s.witness.public()], None);
    assert_eq!(
        report.failure.as_deref(),
        Some(
            "0 of the 1 witnesses required cosigned a checkpoint that this log extends (cosigned: none; no cosignature from: `witness.example/w1`); a log whose witnessed checkpoints were removed cannot show that it was not cut or rewritten. Ask the runner's operator for the witnessed checkpoints, or each witness for its latest checkpoint of this log, and verify with them"
        )
    );
    assert_eq!(report.truncation, Truncation::RunnerCheckpoint);
}

#[test]
fn min_witnesses_not_met_is_invalid_naming_who_is_missing() {
    let s = witnessed_twice();
    let w2 = Witness::new(W2, SecretKey::generate().unwrap()).unwrap();
    let report = s.verify(&[s.witness.public(), w2.public()], None);
    assert_eq!(
        report.failure.as_deref(),
        Some(
            "1 of the 2 witnesses required cosigned a checkpoint that this log extends (cosigned: `witness.example/w1` (9 records); no cosignature from: `witness.example/w2`); a log whose witnessed checkpoints were removed cannot show that it was not cut or rewritten. Ask the runner's operator for the witnessed checkpoints, or each witness for its latest checkpoint of this log, and verify with them"
        )
    );
    let report = s.verify(&[s.witness.public(), w2.public()], Some(1));
    assert_eq!(report.failure, None);
    assert_eq!(report.witnesses[1].checkpoint_size, None);

    // A second witness that saw only the first checkpoint: two witnesses rule out
    // truncation only below the smaller size.
    let s = Setup::new(3);
    let w2 = Witness::new(W2, SecretKey::generate().unwrap()).unwrap();
    let w2_dir = tempfile::tempdir().unwrap();
    let w2_state = WitnessState::open(w2_dir.path()).unwrap();
    s.cosign(&s.witness, 0, T1).unwrap();
    s.cosign_in(&w2_state, &w2, 0, T1).unwrap();
    append(&s.ev, &s.runner, 2);
    s.cosign(&s.witness, 5, T2).unwrap();
    let report = s.verify(&[s.witness.public(), w2.public()], None);
    assert_eq!(report.failure, None);
    assert_eq!(report.witnessed_size, Some(5));
    let report = s.verify(&[s.witness.public(), w2.public()], Some(1));
    assert_eq!(report.witnessed_size, Some(9));
}

#[test]
fn witness_refuses_a_non_extending_checkpoint() {
    let s = witnessed_twice();
    cut_and_resign(&s, 3);
    append(&s.ev, &s.runner, 6);
    // The rewritten log's own proof from size 9 does not lead from what the witness saw.
    let request = s.request(9);
    let err = s
        .state
        .add_checkpoint(&s.witness, &s.log, &request, T2)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the consistency proof from 9 to 11 records of `{}` does not verify against the checkpoint this witness cosigned: the checkpoint does not extend it (history rewritten), or the proof is wrong; refusing to cosign",
            s.log.origin
        )
    );
    assert_eq!(s.state.latest(&s.log).unwrap().unwrap().0.size, 9);
}

#[test]
fn witness_refuses_a_forked_checkpoint_of_the_same_size() {
    let s = witnessed_twice();
    cut_and_resign(&s, 3);
    append(&s.ev, &s.runner, 4);
    assert_eq!(s.size(), 9);
    let err = s.cosign(&s.witness, 9, T2).unwrap_err();
    let stored = s.state.latest(&s.log).unwrap().unwrap().0;
    let new = Checkpoint::verify(&checkpoint_note(&s.ev), &s.runner.public()).unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "the checkpoint for `{}` covers 9 records with root {}, but this witness cosigned 9 records with root {}: the log forked (history rewritten); refusing to cosign",
            s.log.origin,
            STANDARD.encode(new.root),
            STANDARD.encode(stored.root)
        )
    );
}

#[test]
fn witness_refuses_a_checkpoint_smaller_than_it_cosigned() {
    let s = witnessed_twice();
    cut_and_resign(&s, 6);
    let request = AddCheckpoint {
        old: 9,
        proof: vec![],
        note: checkpoint_note(&s.ev),
    };
    let err = s
        .state
        .add_checkpoint(&s.witness, &s.log, &request, T2)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the checkpoint for `{}` covers 6 records, but this witness already cosigned 9 for it: the log would have shrunk, so records were removed; refusing to cosign",
            s.log.origin
        )
    );
}

#[test]
fn witness_refuses_a_checkpoint_not_signed_by_the_log_key() {
    let s = Setup::new(3);
    let attacker = SecretKey::generate().unwrap();
    let forged = Checkpoint::verify(&checkpoint_note(&s.ev), &s.runner.public())
        .unwrap()
        .sign(&attacker);
    let request = AddCheckpoint {
        old: 0,
        proof: vec![],
        note: forged,
    };
    let err = s
        .state
        .add_checkpoint(&s.witness, &s.log, &request, T1)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the checkpoint for `{0}` is not signed by the log's key {1} (no signature by runner key {1} named `{0}`); refusing to cosign it",
            s.log.origin,
            s.runner.id().short()
        )
    );
    assert!(s.state.latest(&s.log).unwrap().is_none());
}

#[test]
fn witness_refuses_a_bad_proof() {
    let s = witnessed_twice();
    append(&s.ev, &s.runner, 1);
    let mut request = s.request(9);
    request.proof[0][0] ^= 1;
    let err = s
        .state
        .add_checkpoint(&s.witness, &s.log, &request, T2)
        .unwrap_err();
    assert!(
        matches!(
            err,
            WitnessError::BadProof {
                old: 9,
                size: 12,
                ..
            }
        ),
        "{err}"
    );
    // The same request with the proof as the log gives it is cosigned.
    s.cosign(&s.witness, 9, T2).unwrap();
}

#[test]
fn witness_refuses_a_checkpoint_of_another_log() {
    let s = Setup::new(1);
    let other = Setup::new(1);
    let err = s
        .state
        .add_checkpoint(&s.witness, &s.log, &other.request(0), T1)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "this witness is configured for log `{}`, not `{}`; refusing to cosign a checkpoint of a log it does not follow",
            s.log.origin, other.log.origin
        )
    );
}

#[test]
fn two_witness_processes_cannot_both_cosign_from_the_same_state() {
    let s = Setup::new(3);
    let request = s.request(0);
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| s.state.add_checkpoint(&s.witness, &s.log, &request, T1)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    for err in results.into_iter().filter_map(Result::err) {
        assert!(
            matches!(
                err,
                WitnessError::OldSizeMismatch {
                    old: 0,
                    stored: 5,
                    ..
                }
            ),
            "{err}"
        );
    }
}

#[test]
fn altered_or_forged_cosignature_is_refused_and_an_unknown_witness_ignored() {
    let s = witnessed_twice();
    let path =
        s.ev.join(WITNESSED_DIR)
            .join(witness::witnessed_file_name(s.witness.public()));
    let good = fs::read_to_string(&path).unwrap();

    // The attacker moves the witnessed checkpoint forward to a size the witness never saw.
    append(&s.ev, &s.runner, 1);
    let note = checkpoint_note(&s.ev);
    let line = good.lines().last().unwrap();
    fs::write(&path, format!("{note}{line}\n")).unwrap();
    let report = s.verify(&[s.witness.public()], None);
    assert_eq!(
        report.failure.as_deref(),
        Some(
            "a checkpoint of 12 records: witness `witness.example/w1`'s cosignature (time 1800000600) does not verify: the checkpoint or the cosignature was altered, or it was made by another key"
        )
    );
    // A cosignature line forged under the witness's name and key ID by another key.
    let impostor = Witness::new(W1, SecretKey::generate().unwrap()).unwrap();
    let body = note.split_once("\n\n").unwrap().0;
    let mut forged = impostor.cosign(&format!("{body}\n"), T2.0);
    let mut blob = STANDARD
        .decode(forged.trim_end().rsplit_once(' ').unwrap().1)
        .unwrap();
    blob[..4].copy_from_slice(&s.witness.public().key_id());
    forged = format!("\u{2014} {W1} {}\n", STANDARD.encode(blob));
    fs::write(&path, format!("{note}{forged}")).unwrap();
    let report = s.verify(&[s.witness.public()], None);
    assert!(
        report
            .failure
            .as_deref()
            .unwrap()
            .ends_with("does not verify: the checkpoint or the cosignature was altered, or it was made by another key"),
        "{report:?}"
    );
    // Under its own key ID the impostor is simply another witness: ignored, so none counts.
    fs::write(
        &path,
        format!("{note}{}", impostor.cosign(&format!("{body}\n"), T2.0)),
    )
    .unwrap();
    let report = s.verify(&[s.witness.public()], None);
    assert!(
        report
            .failure
            .as_deref()
            .unwrap()
            .starts_with("0 of the 1 witnesses required cosigned"),
        "{report:?}"
    );
    // attach() keeps only a cosignature that verifies.
    let err = witness::attach(&note, &forged, s.witness.public()).unwrap_err();
    assert!(err.ends_with("made by another key"), "{err}");
}

#[test]
fn bundle_carries_the_witnessed_checkpoints_and_verifies_them() {
    let s = witnessed_twice();
    let bundle = Bundle::export(&s.ev, s.runner.public(), None).unwrap();
    assert_eq!(bundle.witnessed.len(), 1);
    let bytes = bundle.to_cbor().unwrap();
    let back = Bundle::from_cbor(&bytes).unwrap();
    assert_eq!(back.witnessed, bundle.witnessed);
    let policy = WitnessPolicy::new(vec![s.witness.public().clone()], None).unwrap();
    let report = audit::verify_bundle_witnessed(&back, None, &[], &policy, &mut |_, _| {});
    assert_eq!(report.failure, None);
    assert_eq!(report.truncation, Truncation::Witnessed);

    // A bundle whose log was rewritten after the witness saw it.
    cut_and_resign(&s, 3);
    append(&s.ev, &s.runner, 6);
    let mut rewritten = Bundle::export(&s.ev, s.runner.public(), None).unwrap();
    rewritten.witnessed = bundle.witnessed.clone();
    let report = audit::verify_bundle_witnessed(&rewritten, None, &[], &policy, &mut |_, _| {});
    assert!(
        report
            .failure
            .as_deref()
            .unwrap()
            .starts_with("the log (11 records) does not extend the checkpoint of 9 records cosigned by witness `witness.example/w1`"),
        "{report:?}"
    );
}

#[test]
fn bundle_without_checkpoint_or_witness_says_truncation_is_not_ruled_out() {
    let s = Setup::new(1);
    let mut bundle = Bundle::export(&s.ev, s.runner.public(), None).unwrap();
    bundle.checkpoint = None;
    let report = audit::verify_bundle(&bundle, None, &[], &mut |_, _| {});
    assert_eq!(report.failure, None);
    assert_eq!(report.truncation, Truncation::NotRuledOut);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["truncation"], "not-ruled-out");
    assert_eq!(json["witnessed_size"], serde_json::Value::Null);
}

#[test]
fn bundle_with_an_empty_witnessed_array_is_refused() {
    use ciborium::Value as V;
    let s = Setup::new(1);
    let bytes = Bundle::export(&s.ev, s.runner.public(), None)
        .unwrap()
        .to_cbor()
        .unwrap();
    let V::Map(map) = ciborium::from_reader::<V, _>(&bytes[..]).unwrap() else {
        unreachable!("a bundle is a map")
    };
    let mut fields: Vec<(String, V)> = map
        .into_iter()
        .map(|(k, v)| (k.into_text().unwrap(), v))
        .collect();
    fields.push(("witnessed".into(), V::Array(vec![])));
    let encoded = edge_runner::cbor::encode(&edge_runner::cbor::text_map(fields)).unwrap();
    let err = Bundle::from_cbor(&encoded).unwrap_err().to_string();
    assert_eq!(
        err,
        "`witnessed` must be a non-empty array (absent when there is no witnessed checkpoint)"
    );
}

#[test]
fn vkeys_from_transparency_dev_formats_have_the_key_ids_we_compute() {
    let text = fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors/cosignature/vkeys.txt"),
    )
    .unwrap();
    let mut checked = 0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (kind, vkey) = line.split_once(' ').unwrap();
        let mut parts = vkey.splitn(3, '+');
        let (name, id) = (parts.next().unwrap(), parts.next().unwrap());
        let typed = STANDARD.decode(parts.next().unwrap()).unwrap();
        let key = PublicKey::from_bytes(&typed[1..]).unwrap();
        match kind {
            "04" => {
                let parsed = WitnessKey::from_vkey(vkey).unwrap();
                assert_eq!(parsed.name(), name);
                assert_eq!(hex::encode(parsed.key_id()), id);
                assert_eq!(parsed.vkey(), vkey, "written back byte for byte");
            }
            "01" => {
                assert_eq!(hex::encode(evidence::key_hash(name, &key)), id);
                let err = WitnessKey::from_vkey(vkey).unwrap_err().to_string();
                assert!(
                    err.ends_with(
                        "signature type 0x01 is not 0x04 (a cosignature/v1 Ed25519 witness key)"
                    ),
                    "{err}"
                );
            }
            other => panic!("unknown type {other}"),
        }
        checked += 1;
    }
    assert_eq!(checked, 2);
}

// ---- Ranges: a bundle of only the records an auditor has not seen (§7.1) ----

/// A log written in three sittings; returns the directory, the key and the
/// checkpoint note after the second sitting (what the auditor verified last time).
fn log_in_three_sittings() -> (tempfile::TempDir, SecretKey, String) {
    let tmp = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    append(tmp.path(), &key, 5);
    append(tmp.path(), &key, 4);
    let earlier = checkpoint_note(tmp.path());
    append(tmp.path(), &key, 6);
    (tmp, key, earlier)
}

fn range_bundle(dir: &Path, key: &SecretKey, since: &str) -> Bundle {
    let bundle = Bundle::export(dir, key.public(), None)
        .unwrap()
        .into_range_since(since)
        .unwrap();
    // What an auditor receives: the encoded bundle.
    Bundle::from_cbor(&bundle.to_cbor().unwrap()).unwrap()
}

#[test]
fn range_since_an_earlier_checkpoint_verifies_and_is_anchored_by_it() {
    let (tmp, key, earlier) = log_in_three_sittings();
    let whole = summary(tmp.path(), &key);
    let since = Checkpoint::peek_size(&earlier).unwrap();
    let bundle = range_bundle(tmp.path(), &key, &earlier);
    // It begins at the newest checkpoint record before the end of the earlier checkpoint.
    assert_eq!(bundle.range_start, since - 1);
    assert!(bundle.log.len() < fs::read(tmp.path().join(LOG_FILE)).unwrap().len());
    let report = audit::verify_bundle(&bundle, Some(&key.public()), &[earlier], &mut |_, _| {});
    assert!(report.valid(), "{:?}", report.failure);
    assert_eq!(report.range_start, Some(since - 1));
    assert_eq!(report.range_anchor, Some(since));
    // The same head, root and record count as verifying the whole log.
    assert_eq!(report.records, whole.records.len() as u64);
    assert_eq!(
        report.head.as_deref(),
        Some(hex::encode(whole.head).as_str())
    );
    assert_eq!(
        report.merkle_root.as_deref(),
        Some(hex::encode(whole.root).as_str())
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["range_start"], since - 1);
    assert_eq!(json["range_anchor"], since);
}

#[test]
fn range_without_an_earlier_checkpoint_says_nothing_ties_it_to_the_history() {
    let (tmp, key, earlier) = log_in_three_sittings();
    let bundle = range_bundle(tmp.path(), &key, &earlier);
    let report = audit::verify_bundle(&bundle, Some(&key.public()), &[], &mut |_, _| {});
    assert!(report.valid(), "{:?}", report.failure);
    assert_eq!(report.range_start, Some(bundle.range_start));
    // The bundle's own checkpoint is signed by the same key as the range: no anchor.
    assert_eq!(report.range_anchor, None);
}

#[test]
fn range_rewritten_after_the_fork_fails_against_the_checkpoint_verified_earlier() {
    // Two histories share their first sitting; the auditor verified history X.
    let tmp = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let (x, y) = (tmp.path().join("x"), tmp.path().join("y"));
    fs::create_dir(&x).unwrap();
    append(&x, &key, 5);
    fs::create_dir(&y).unwrap();
    for entry in fs::read_dir(&x).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            fs::copy(entry.path(), y.join(entry.file_name())).unwrap();
        }
    }
    append(&x, &key, 4);
    let verified_earlier = checkpoint_note(&x);
    // Y: the same number of records, different ones, re-signed with the runner key.
    let mut log = EvidenceLog::open(&y, copy(&key)).unwrap();
    for i in 0..4u64 {
        log.append(
            "test-note",
            Value::Map(vec![(Value::Text("forged".into()), i.into())]),
        )
        .unwrap();
    }
    log.close().unwrap();
    append(&y, &key, 2);
    let forged = range_bundle(&y, &key, &checkpoint_note(&y));
    assert!(forged.range_start > 0);
    let report = audit::verify_bundle(
        &forged,
        Some(&key.public()),
        std::slice::from_ref(&verified_earlier),
        &mut |_, _| {},
    );
    let failure = report.failure.expect("a rewritten range must not verify");
    // Cut after the fork, it cannot show that it extends what was verified.
    assert!(
        failure.contains("cannot show the range extends it"),
        "{failure}"
    );
    // Cut so that it begins before the earlier checkpoint's end, it is caught by the root.
    let early = range_bundle(&y, &key, &{
        // Y's own checkpoint at the fork's size: the range begins at or before it.
        let size = Checkpoint::peek_size(&verified_earlier).unwrap();
        let whole = summary(&y, &key);
        let mut tree = edge_runner::evidence::merkle::Frontier::default();
        for r in whole.records.iter().take(size as usize) {
            tree.push(leaf_hash(&r.bytes));
        }
        Checkpoint {
            origin: edge_runner::evidence::origin(&whole.log_id),
            size,
            root: tree.root(),
        }
        .sign(&key)
    });
    let report = audit::verify_bundle(
        &early,
        Some(&key.public()),
        &[verified_earlier],
        &mut |_, _| {},
    );
    let failure = report.failure.expect("a rewritten range must not verify");
    assert!(failure.contains("history was rewritten"), "{failure}");
}

#[test]
fn range_that_does_not_begin_with_a_checkpoint_record_is_refused() {
    let (tmp, key, earlier) = log_in_three_sittings();
    let mut bundle = range_bundle(tmp.path(), &key, &earlier);
    // Drop the range's first record: the next one is not a checkpoint.
    let (_, len) = edge_runner::cbor::decode_prefix(&bundle.log).unwrap();
    bundle.log.drain(..len);
    bundle.range_start += 1;
    let report = audit::verify_bundle(&bundle, Some(&key.public()), &[earlier], &mut |_, _| {});
    let failure = report.failure.unwrap();
    assert!(
        failure.contains("a range must begin with a checkpoint record carrying its resume state"),
        "{failure}"
    );
}

#[test]
fn range_whose_stated_start_is_not_its_first_record_is_refused() {
    let (tmp, key, earlier) = log_in_three_sittings();
    let mut bundle = range_bundle(tmp.path(), &key, &earlier);
    bundle.range_start += 3;
    let report = audit::verify_bundle(&bundle, Some(&key.public()), &[earlier], &mut |_, _| {});
    let failure = report.failure.unwrap();
    assert!(
        failure.contains("says its range begins at record"),
        "{failure}"
    );
}

#[test]
fn checkpoint_older_than_the_range_cannot_anchor_it() {
    let tmp = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    append(tmp.path(), &key, 3);
    let oldest = checkpoint_note(tmp.path());
    append(tmp.path(), &key, 3);
    let earlier = checkpoint_note(tmp.path());
    append(tmp.path(), &key, 3);
    let bundle = range_bundle(tmp.path(), &key, &earlier);
    assert!(Checkpoint::peek_size(&oldest).unwrap() < bundle.range_start);
    let report = audit::verify_bundle(&bundle, Some(&key.public()), &[oldest], &mut |_, _| {});
    let failure = report.failure.unwrap();
    assert!(
        failure.contains("cannot show the range extends it"),
        "{failure}"
    );
}

#[test]
fn range_start_zero_in_a_bundle_is_malformed() {
    let (tmp, key, _) = log_in_three_sittings();
    let bundle = Bundle::export(tmp.path(), key.public(), None).unwrap();
    let mut value: Value = ciborium::de::from_reader(&bundle.to_cbor().unwrap()[..]).unwrap();
    let Value::Map(fields) = &mut value else {
        panic!("a bundle is a map")
    };
    fields.push((Value::Text("range-start".into()), Value::Integer(0.into())));
    let bytes = edge_runner::cbor::encode(&value).unwrap();
    let err = Bundle::from_cbor(&bytes).unwrap_err().to_string();
    assert!(err.contains("`range-start` is 0"), "{err}");
}

/// After `rotate-key`, a witness keeps refusing the new key until it is shown
/// the handover in evidence; then it follows the log under the new key, with
/// the same consistency checks as before (§10.6).
#[test]
fn witness_follows_a_key_rotation_only_with_the_handover_in_evidence() {
    let s = Setup::new(3);
    s.cosign(&s.witness, 0, T1).unwrap();
    let cosigned = s.size();
    let new = SecretKey::generate().unwrap();
    let mut log = EvidenceLog::open(&s.ev, copy(&s.runner)).unwrap();
    log.rotate_key(copy(&new), "yearly rotation").unwrap();
    log.close().unwrap();
    append(&s.ev, &new, 2);
    let new_log = LogConfig {
        origin: s.log.origin.clone(),
        key: new.public(),
    };
    let request = |old: u64| {
        witness::request_for(
            &summary(&s.ev, &new),
            &checkpoint_note(&s.ev),
            &new.public(),
            old,
        )
        .unwrap()
    };
    // Told the new key without evidence, the witness stops.
    let err = s
        .state
        .add_checkpoint(&s.witness, &new_log, &request(cosigned), T2)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("A witness never switches a log's key"),
        "{err}"
    );
    let bundle = Bundle::export(&s.ev, new.public(), None).unwrap();
    // A key the log was never handed to.
    let impostor = SecretKey::generate().unwrap();
    let err = s
        .state
        .follow_rotation(&s.witness, &s.log, &impostor.public(), &bundle, T2)
        .unwrap_err();
    assert!(err.to_string().contains("not the new key"), "{err}");
    // Another log signed by the new key is not this log's handover.
    let other = tempfile::tempdir().unwrap();
    append(other.path(), &new, 2);
    let foreign = Bundle::export(other.path(), new.public(), None).unwrap();
    let err = s
        .state
        .follow_rotation(&s.witness, &s.log, &new.public(), &foreign, T2)
        .unwrap_err();
    assert!(err.to_string().contains("the bundle holds log"), "{err}");
    // A range that begins after what the witness cosigned cannot show it extends it.
    let later = Bundle::export(&s.ev, new.public(), None)
        .unwrap()
        .into_range_since(&checkpoint_note(&s.ev))
        .unwrap();
    assert!(later.range_start > cosigned);
    let err = s
        .state
        .follow_rotation(&s.witness, &s.log, &new.public(), &later, T2)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("does not extend the checkpoint of"),
        "{err}"
    );
    // With the handover in evidence, it follows.
    let line = s
        .state
        .follow_rotation(&s.witness, &s.log, &new.public(), &bundle, T2)
        .unwrap();
    keep(&s.ev, &checkpoint_note(&s.ev), &line, s.witness.public());
    let (followed, _) = s.state.latest(&new_log).unwrap().unwrap();
    assert_eq!(followed.size, s.size());
    // Later checkpoints are cosigned under the new key, from the followed size.
    append(&s.ev, &new, 2);
    let line = s
        .state
        .add_checkpoint(&s.witness, &new_log, &request(followed.size), T2)
        .unwrap();
    keep(&s.ev, &checkpoint_note(&s.ev), &line, s.witness.public());
    let report = verify_dir(&s.ev, &new.public(), &[], &[s.witness.public()], None);
    assert!(report.valid(), "{:?}", report.failure);
    assert_eq!(report.truncation, Truncation::Witnessed);
    assert_eq!(report.witnessed_size, Some(s.size()));
}
