use super::*;
use crate::keys::SecretKey;

/// The smallest valid component: magic and layer-1 version, no sections.
const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";

fn source() -> ManifestSource {
    ManifestSource::parse(
        "name = \"t\"\nversion = \"1.2.3\"\nkind = \"test\"\n[limits]\nfuel = 5\n",
        std::path::Path::new("capsule.toml"),
    )
    .unwrap()
}

#[test]
fn sign_then_parse_round_trips_manifest_and_digest() {
    let key = SecretKey::generate().unwrap();
    let signed = sign(EMPTY_COMPONENT, &source(), &key, false).unwrap();
    let checked = CheckedCapsule::parse(signed.clone()).unwrap();
    assert_eq!(checked.manifest().name, "t");
    assert_eq!(checked.manifest().limits.fuel, Some(5));
    assert_eq!(checked.module_digest(), checked.manifest().module_sha256);
    assert_eq!(strip_signatures(&signed).unwrap(), EMPTY_COMPONENT);
    assert_eq!(checked.signatures().len(), 1);
    assert_eq!(checked.signatures()[0].key_id, key.id());
}

#[test]
fn add_co_signs_and_refuses_the_same_key_twice() {
    let a = SecretKey::generate().unwrap();
    let b = SecretKey::generate().unwrap();
    let once = sign(EMPTY_COMPONENT, &source(), &a, false).unwrap();
    assert!(matches!(
        sign(&once, &source(), &b, false),
        Err(CapsuleError::BadSignatureSection(_))
    ));
    let twice = sign(&once, &source(), &b, true).unwrap();
    assert_eq!(
        CheckedCapsule::parse(twice.clone())
            .unwrap()
            .signatures()
            .len(),
        2
    );
    assert!(matches!(
        sign(&twice, &source(), &a, true),
        Err(CapsuleError::AlreadySigned(_))
    ));
}

#[test]
fn core_module_is_refused_with_build_advice() {
    let err = CheckedCapsule::parse(b"\0asm\x01\x00\x00\x00".to_vec()).unwrap_err();
    assert!(err.to_string().contains("--target wasm32-wasip2"), "{err}");
}

#[test]
fn unsigned_component_is_refused() {
    let err = CheckedCapsule::parse(EMPTY_COMPONENT.to_vec()).unwrap_err();
    assert!(matches!(err, CapsuleError::Unsigned), "{err}");
}

#[test]
fn section_after_signature_is_refused() {
    let key = SecretKey::generate().unwrap();
    let mut signed = sign(EMPTY_COMPONENT, &source(), &key, false).unwrap();
    wasm::append_custom_section(&mut signed, "other", b"x");
    let err = CheckedCapsule::parse(signed).unwrap_err();
    assert!(
        err.to_string().contains("must be the last section"),
        "{err}"
    );
}
