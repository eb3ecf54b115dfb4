//! Issue 13.7: every decoder fed by untrusted bytes, under property-based
//! tests. Each input is random bytes or a valid file with random edits
//! (flipped bytes, a cut, inserted bytes); each decoder must end in a typed
//! error or a value, never a panic, and a value it accepts must round-trip.
//! Case counts are bounded so the suite stays fast; `fuzz/` holds `cargo fuzz`
//! targets for the same decoders, for longer runs (README, "Fuzzing").

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use edge_runner::capsule::{CheckedCapsule, Manifest};
use edge_runner::cbor;
use edge_runner::evidence::bundle::Bundle;
use edge_runner::evidence::{self, Checkpoint, EvidenceLog, LOG_FILE};
use edge_runner::keys::{PublicKey, SecretKey};
use edge_runner::site::SitePolicy;
use edge_runner::timestamp::Timestamp;
use edge_runner::trust::{RootPolicy, SignedRoot};
use edge_runner_tests::*;
use proptest::prelude::*;

/// Cases per property: enough to catch the easy panics on every run, few
/// enough that the whole file runs in seconds. `cargo fuzz` runs for longer.
const CASES: u32 = 96;

/// [`CASES`], or `PROPTEST_CASES` from the environment for a longer run.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES)
}

/// Valid inputs that the edits start from, made once.
struct Seeds {
    capsule: Vec<u8>,
    detached: (Vec<u8>, Vec<u8>),
    manifest: Vec<u8>,
    log: Vec<u8>,
    runner: PublicKey,
    note: String,
    bundle: Vec<u8>,
    root_file: Vec<u8>,
    root_text: String,
    site_text: String,
    key_pem: String,
}

fn seeds() -> &'static Seeds {
    static SEEDS: OnceLock<Seeds> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let p = Publisher::new("acme-ci", "Acme", &["test"]);
        // A small component keeps each case cheap; the format is the same.
        let component = b"\0asm\x0d\x00\x01\x00".to_vec();
        let source = json_assert_manifest(|_| {});
        let capsule =
            edge_runner::capsule::sign(&component, &source, &p.key, Timestamp::now()).unwrap();
        let detached =
            edge_runner::capsule::sign_detached(&component, &source, &p.key, Timestamp::now())
                .unwrap();
        let manifest = CheckedCapsule::parse(capsule.clone())
            .unwrap()
            .manifest()
            .to_cbor()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let runner = SecretKey::generate().unwrap();
        let runner_public = runner.public();
        let mut log = EvidenceLog::open(dir.path(), runner).unwrap();
        log.checkpoint().unwrap();
        drop(log);
        let note = std::fs::read_to_string(dir.path().join(evidence::CHECKPOINT_FILE)).unwrap();
        let log_bytes = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
        let root_key = RootKey::new("root-1");
        let policy = Policy::new(vec![&root_key], vec![&p]);
        let root_file = policy.signed_by(&[&root_key]);
        let bundle = Bundle {
            log: log_bytes.clone(),
            runner_key: runner_public,
            checkpoint: Some(note.clone()),
            trust_roots: vec![root_file.clone()],
            governance: Vec::new(),
            witnessed: Vec::new(),
            exported_at: Timestamp::now(),
            range_start: 0,
        }
        .to_cbor()
        .unwrap();
        Seeds {
            capsule,
            detached: (component, detached),
            manifest,
            log: log_bytes,
            runner: runner_public,
            note,
            bundle,
            root_file,
            root_text: policy.toml(),
            site_text: "format = 1\nsite = \"plant-7\"\n[limits]\nfuel = 5\n[[directory]]\npath = \"/data\"\nhost = \"/srv/data\"\naccess = \"read-only\"\n".into(),
            key_pem: SecretKey::generate().unwrap().to_pem().unwrap(),
        }
    })
}

/// Random edits to a valid input: flips, a cut, an insertion.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Cut(usize),
    Insert(usize, Vec<u8>),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, x)| Edit::Flip(at, x)),
        any::<usize>().prop_map(Edit::Cut),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(at, b)| Edit::Insert(at, b)),
    ];
    proptest::collection::vec(edit, 1..4)
}

fn apply(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for edit in edits {
        match edit {
            Edit::Flip(at, x) if !out.is_empty() => {
                let i = at % out.len();
                out[i] ^= x;
            }
            Edit::Cut(at) => out.truncate(at % (out.len() + 1)),
            Edit::Insert(at, bytes) => {
                let i = at % (out.len() + 1);
                out.splice(i..i, bytes.iter().copied());
            }
            Edit::Flip(..) => {}
        }
    }
    out
}

/// Random bytes, or a seed with random edits.
fn bytes_from(seed: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        edits().prop_map(move |e| apply(seed, &e)),
    ]
}

/// As [`bytes_from`], as text (lossily, so edits inside UTF-8 sequences still make text).
fn text_from(seed: &'static str) -> impl Strategy<Value = String> {
    bytes_from(seed.as_bytes()).prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn capsule_files_decode_or_refuse(bytes in bytes_from(&seeds().capsule)) {
        if let Ok(checked) = CheckedCapsule::parse(bytes.clone()) {
            prop_assert_eq!(checked.bytes(), &bytes[..]);
            let manifest = checked.manifest().to_cbor().unwrap();
            prop_assert_eq!(Manifest::from_cbor(&manifest).unwrap().to_cbor().unwrap(), manifest);
        }
    }

    #[test]
    fn detached_signatures_decode_or_refuse(sig in bytes_from(&seeds().detached.1)) {
        let component = seeds().detached.0.clone();
        if let Ok(checked) = CheckedCapsule::parse_detached(component.clone(), &sig) {
            prop_assert_eq!(checked.bytes(), &component[..]);
        }
    }

    #[test]
    fn manifests_decode_or_refuse_and_round_trip(bytes in bytes_from(&seeds().manifest)) {
        if let Ok(manifest) = Manifest::from_cbor(&bytes) {
            prop_assert_eq!(manifest.to_cbor().unwrap(), bytes);
        }
    }

    #[test]
    fn deterministic_cbor_decodes_or_refuses_and_round_trips(bytes in bytes_from(&seeds().bundle)) {
        if let Ok(value) = cbor::decode_canonical(&bytes) {
            prop_assert_eq!(cbor::encode(&value).unwrap(), bytes);
        }
    }

    #[test]
    fn evidence_records_and_logs_verify_or_fail(bytes in bytes_from(&seeds().log)) {
        let key = seeds().runner;
        let _ = evidence::decode_record(&bytes, &key);
        if let Ok(summary) = evidence::verify_log(&bytes, &key) {
            let total: usize = summary.records.iter().map(|r| r.bytes.len()).sum();
            prop_assert_eq!(total, bytes.len());
        }
    }

    #[test]
    fn bundles_decode_or_refuse_and_round_trip(bytes in bytes_from(&seeds().bundle)) {
        if let Ok(bundle) = Bundle::from_cbor(&bytes) {
            prop_assert_eq!(bundle.to_cbor().unwrap(), bytes);
        }
    }

    #[test]
    fn checkpoint_notes_verify_or_refuse(note in text_from(&seeds().note)) {
        if let Ok(checkpoint) = Checkpoint::verify(&note, &seeds().runner) {
            prop_assert!(note.starts_with(&checkpoint.body()));
        }
    }

    #[test]
    fn trust_root_files_decode_or_refuse(bytes in bytes_from(&seeds().root_file)) {
        if let Ok(signed) = SignedRoot::parse(&bytes, "fuzz") {
            let again = RootPolicy::parse(&signed.policy.text, "fuzz").unwrap();
            prop_assert_eq!(again.digest, signed.policy.digest);
        }
    }

    #[test]
    fn trust_root_policies_parse_or_refuse(text in text_from(&seeds().root_text)) {
        if let Ok(policy) = RootPolicy::parse(&text, "fuzz") {
            prop_assert_eq!(policy.text, text);
        }
    }

    #[test]
    fn site_policies_parse_or_refuse(text in text_from(&seeds().site_text)) {
        if let Ok(policy) = SitePolicy::parse(&text, "fuzz") {
            prop_assert_eq!(SitePolicy::parse(&text, "fuzz").unwrap(), policy);
        }
    }

    #[test]
    fn key_files_parse_or_refuse(text in text_from(&seeds().key_pem)) {
        if let Ok(key) = SecretKey::from_pem(&text, std::path::Path::new("fuzz")) {
            let again = SecretKey::from_pem(&key.to_pem().unwrap(), std::path::Path::new("fuzz"));
            prop_assert_eq!(again.unwrap().id(), key.id());
        }
        let _ = PublicKey::from_pem(&text, std::path::Path::new("fuzz"));
    }
}

/// CBOR that claims more than it holds, or nests without end: each decoder
/// refuses it without allocating the claim or exhausting the stack.
#[test]
fn cbor_claiming_huge_lengths_or_nesting_deeply_is_refused() {
    let mut hostile: Vec<Vec<u8>> = Vec::new();
    for major in [0x5b_u8, 0x7b, 0x9b, 0xbb] {
        // A byte string, text, array or map claiming 2^64 - 1 entries or bytes.
        let mut item = vec![major];
        item.extend_from_slice(&[0xff; 8]);
        hostile.push(item);
    }
    hostile.push(vec![0x81; 100_000]);
    hostile.push([0xa1, 0x61, b'a'].repeat(50_000));
    let key = seeds().runner;
    for bytes in &hostile {
        assert!(cbor::decode_canonical(bytes).is_err());
        assert!(Manifest::from_cbor(bytes).is_err());
        assert!(Bundle::from_cbor(bytes).is_err());
        assert!(evidence::verify_log(bytes, &key).is_err());
        assert!(SignedRoot::parse(bytes, "hostile").is_err());
        assert!(CheckedCapsule::parse_detached(seeds().detached.0.clone(), bytes).is_err());
    }
}
