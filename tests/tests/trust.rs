//! Capsule attacks, each asserting the exact refusal.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

use edge_runner::capsule::{self, CheckedCapsule};
use edge_runner::trust::{self, TrustError};
use edge_runner_tests::*;

fn verify(
    bytes: Vec<u8>,
    root: &edge_runner::trust::TrustRoot,
) -> Result<trust::VerifiedCapsule, TrustError> {
    CheckedCapsule::parse(bytes)
        .map_err(TrustError::from)
        .and_then(|c| trust::verify(c, root))
}

#[test]
fn genuine_capsule_is_accepted() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let verified = verify(signed_json_assert(&p.key), &trust_root(&[&p])).unwrap();
    assert_eq!(verified.manifest().name, "json-assert");
    assert_eq!(verified.signers().len(), 1);
    assert_eq!(verified.signers()[0].publisher, "acme-ci");
}

#[test]
fn tampered_module() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let mut bytes = signed_json_assert(&p.key);
    bytes[1000] ^= 0x01;
    let err = verify(bytes, &trust_root(&[&p])).unwrap_err();
    assert!(
        matches!(err, TrustError::ModuleDigestMismatch { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("capsule `json-assert 1.0.0`: module digest is ")
            && err
                .to_string()
                .ends_with("; the module was altered after signing"),
        "{err}"
    );
}

#[test]
fn tampered_module_every_byte_of_a_region() {
    // Any single flipped byte in the module, wherever it is, must be refused.
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let root = trust_root(&[&p]);
    let bytes = signed_json_assert(&p.key);
    let module_len = capsule::strip_signatures(&bytes).unwrap().len();
    for offset in (0..module_len).step_by(997) {
        let mut tampered = bytes.clone();
        tampered[offset] ^= 0x80;
        assert!(
            verify(tampered, &root).is_err(),
            "flip at {offset} was accepted"
        );
    }
}

#[test]
fn tampered_manifest_kind_changed() {
    // Re-encode the signed manifest with another kind but keep the old signature.
    let p = Publisher::new("acme-ci", "Acme", &["test", "remediate"]);
    let bytes = signed_json_assert(&p.key);
    let needle = b"dkindducapsule"; // never present: guard that the search below is meaningful
    assert!(!bytes.windows(needle.len()).any(|w| w == needle));
    let pos = bytes
        .windows(8)
        .rposition(|w| w == b"dkinddte")
        .expect("manifest kind field");
    let mut tampered = bytes.clone();
    tampered[pos + 6] = b'x'; // "test" -> "xest": still canonical CBOR, signature now wrong
    let err = verify(tampered, &trust_root(&[&p])).unwrap_err();
    assert!(
        matches!(
            err,
            TrustError::Capsule(_) | TrustError::BadSignature { .. }
        ),
        "{err}"
    );
}

#[test]
fn tampered_manifest_signature_no_longer_verifies() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let bytes = signed_json_assert(&p.key);
    // The description text sits inside the signed payload; change one letter of it.
    let pos = bytes
        .windows(6)
        .rposition(|w| w == b"Checks")
        .expect("description in manifest");
    let mut tampered = bytes.clone();
    tampered[pos] = b'X';
    let err = verify(tampered, &trust_root(&[&p])).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "capsule `json-assert 1.0.0`: the signature by `acme-ci` (key {}) does not verify; the manifest or signature was altered after signing",
            p.key.id().short()
        )
    );
}

#[test]
fn unknown_key() {
    let trusted = Publisher::new("acme-ci", "Acme", &["test"]);
    let stranger = Publisher::new("mallory", "Evil", &["test"]);
    let err = verify(signed_json_assert(&stranger.key), &trust_root(&[&trusted])).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "capsule `json-assert 1.0.0` is signed by 0 key(s) from 0 organisation(s) allowed kind `test`, which requires 1 key(s) from 1 organisation(s) (have: none; not counted: unknown key {}; trust root `test-root` v3)",
            stranger.key.id().short()
        )
    );
}

#[test]
fn publisher_not_allowed_this_kind() {
    let p = Publisher::new("acme-repro", "Acme", &["reproduce"]);
    let err = verify(signed_json_assert(&p.key), &trust_root(&[&p])).unwrap_err();
    assert!(
        err.to_string()
            .contains("not counted: `acme-repro` may not sign kind `test`"),
        "{err}"
    );
}

/// json-assert relabelled `remediate`, signed by `a` and co-signed by `b`.
fn remediate_signed_by(a: &Publisher, b: &Publisher) -> Vec<u8> {
    let source = json_assert_manifest(|m| m.kind = edge_runner::capsule::Kind::Remediate);
    let component = capsule_artifacts::JSON_ASSERT.component;
    let once = capsule::sign(component, &source, &a.key, false).unwrap();
    capsule::sign(&once, &source, &b.key, true).unwrap()
}

#[test]
fn remediate_threshold_not_met_by_two_keys_of_one_organisation() {
    let a = Publisher::new("acme-ci", "Acme", &["remediate"]);
    let b = Publisher::new("acme-sec", "Acme", &["remediate"]);
    let twice = remediate_signed_by(&a, &b);
    let err = verify(twice, &trust_root(&[&a, &b])).unwrap_err();
    assert!(
        err.to_string().contains("is signed by 2 key(s) from 1 organisation(s) allowed kind `remediate`, which requires 2 key(s) from 2 organisation(s)"),
        "{err}"
    );
}

#[test]
fn remediate_accepted_with_two_organisations() {
    let a = Publisher::new("acme-ci", "Acme", &["remediate"]);
    let b = Publisher::new("globex-ops", "Globex", &["remediate"]);
    let twice = remediate_signed_by(&a, &b);
    let verified = verify(twice, &trust_root(&[&a, &b])).unwrap();
    assert_eq!(verified.signers().len(), 2);
}

#[test]
fn signature_transplanted_from_another_capsule() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let signed = signed_json_assert(&p.key);
    let module = capsule::strip_signatures(&signed).unwrap();
    let signature_section = &signed[module.len()..];
    // Another component (here: an empty one) carrying json-assert's signature section.
    let mut other = b"\0asm\x0d\x00\x01\x00".to_vec();
    other.extend_from_slice(signature_section);
    let err = verify(other, &trust_root(&[&p])).unwrap_err();
    assert!(
        matches!(err, TrustError::ModuleDigestMismatch { .. }),
        "{err}"
    );
}

#[test]
fn truncated_file() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let bytes = signed_json_assert(&p.key);
    let err = verify(bytes[..bytes.len() - 10].to_vec(), &trust_root(&[&p])).unwrap_err();
    assert!(
        err.to_string()
            .contains("runs past the end of the file (truncated?)"),
        "{err}"
    );
}

#[test]
fn garbage_file() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let err = verify(b"MZ\x90\x00 not wasm at all".to_vec(), &trust_root(&[&p])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "not a WebAssembly component: missing the `\\0asm` magic number"
    );
}

#[test]
fn oversized_file() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let big = vec![0u8; capsule::MAX_CAPSULE_BYTES + 1];
    let err = verify(big, &trust_root(&[&p])).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "capsule is {} bytes; the limit is {} bytes",
            capsule::MAX_CAPSULE_BYTES + 1,
            capsule::MAX_CAPSULE_BYTES
        )
    );
}
