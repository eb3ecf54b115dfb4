use super::*;
use crate::keys::SecretKey;

/// The smallest valid component: magic and layer-1 version, no sections.
const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";

const NOW: Timestamp = Timestamp(1_800_000_000);

fn source() -> ManifestSource {
    ManifestSource::parse(
        "name = \"t\"\nversion = \"1.2.3\"\nkind = \"test\"\naudience = [\"*\"]\n[limits]\nfuel = 5\n",
        std::path::Path::new("capsule.toml"),
    )
    .unwrap()
}

#[test]
fn sign_then_parse_round_trips_manifest_and_digest() {
    let key = SecretKey::generate().unwrap();
    let signed = sign(EMPTY_COMPONENT, &source(), &key, NOW).unwrap();
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
    let once = sign(EMPTY_COMPONENT, &source(), &a, NOW).unwrap();
    assert!(matches!(
        sign(&once, &source(), &b, NOW),
        Err(CapsuleError::SignedComponent)
    ));
    let twice = cosign(&once, &b, &[a.public()], NOW).unwrap();
    assert_eq!(
        CheckedCapsule::parse(twice.clone())
            .unwrap()
            .signatures()
            .len(),
        2
    );
    assert!(matches!(
        cosign(&twice, &a, &[a.public(), b.public()], NOW),
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
    let mut signed = sign(EMPTY_COMPONENT, &source(), &key, NOW).unwrap();
    wasm::append_custom_section(&mut signed, "other", b"x");
    let err = CheckedCapsule::parse(signed).unwrap_err();
    assert!(
        err.to_string().contains("must be the last section"),
        "{err}"
    );
}

#[test]
fn manifest_defaults_validity_from_signing_time() {
    let key = SecretKey::generate().unwrap();
    let signed = sign(EMPTY_COMPONENT, &source(), &key, NOW).unwrap();
    let m = CheckedCapsule::parse(signed).unwrap().manifest().clone();
    assert_eq!(m.not_before, NOW);
    assert_eq!(m.expires, NOW.plus_days(DEFAULT_VALIDITY_DAYS));
    assert_eq!(m.audience, vec!["*".to_string()]);
}

#[test]
fn detached_signature_round_trips_and_leaves_component_alone() {
    let a = SecretKey::generate().unwrap();
    let b = SecretKey::generate().unwrap();
    let sig = sign_detached(EMPTY_COMPONENT, &source(), &a, NOW).unwrap();
    let sig = cosign_detached(EMPTY_COMPONENT, &sig, &b, &[a.public()], NOW).unwrap();
    let checked = CheckedCapsule::parse_detached(EMPTY_COMPONENT.to_vec(), &sig).unwrap();
    assert_eq!(checked.placement(), Placement::Detached);
    assert_eq!(checked.signatures().len(), 2);
    assert_eq!(checked.bytes(), EMPTY_COMPONENT);
    assert_eq!(checked.module_digest(), checked.manifest().module_sha256);
    // A detached signature on an already-signed component is ambiguous: refused.
    let embedded = sign(EMPTY_COMPONENT, &source(), &a, NOW).unwrap();
    let err = CheckedCapsule::parse_detached(embedded, &sig).unwrap_err();
    assert!(err.to_string().contains("use one or the other"), "{err}");
}

#[test]
fn cosign_refuses_a_module_changed_after_the_first_signature() {
    let a = SecretKey::generate().unwrap();
    let sig = sign_detached(EMPTY_COMPONENT, &source(), &a, NOW).unwrap();
    let mut other = EMPTY_COMPONENT.to_vec();
    wasm::append_custom_section(&mut other, "name", b"x");
    let err = cosign_detached(
        &other,
        &sig,
        &SecretKey::generate().unwrap(),
        &[a.public()],
        NOW,
    )
    .unwrap_err();
    assert!(matches!(err, CapsuleError::ManifestMismatch(_)), "{err}");
}

#[test]
fn manifest_source_refuses_bad_capabilities_with_the_fix() {
    let parse = |extra: &str| {
        ManifestSource::parse(
            &format!("name = \"t\"\nversion = \"1.0.0\"\nkind = \"test\"\n{extra}"),
            std::path::Path::new("capsule.toml"),
        )
        .map(|_| ())
        .unwrap_err()
        .to_string()
    };
    assert!(parse("").contains("missing field `audience`"));
    assert!(parse("audience = []").contains("list the sites"));
    assert!(parse("audience = [\"*\", \"plant-1\"]").contains("mixes"));
    let err = parse(
        "audience = [\"*\"]\n[capabilities]\nfiles = [{ path = \"var/log\", access = \"read-only\" }]",
    );
    assert!(err.contains("is not absolute"), "{err}");
    let err = parse("audience = [\"*\"]\n[capabilities]\negress = [\"db:5432\", \"db:5432\"]");
    assert!(err.contains("listed twice"), "{err}");
    let err = parse(
        "audience = [\"*\"]\nnot-before = 2027-01-02T00:00:00Z\nexpires = 2027-01-01T00:00:00Z",
    );
    assert!(err.contains("must be after"), "{err}");
}

#[test]
fn manifest_with_unsorted_lists_is_not_canonical() {
    let mut m = source().to_manifest([7; 32], NOW).unwrap();
    m.capabilities.config = vec!["b".into(), "a".into()];
    let bytes = m.to_cbor().unwrap();
    let err = Manifest::from_cbor(&bytes).unwrap_err();
    assert!(
        err.to_string().contains("ascending bytewise order"),
        "{err}"
    );
    m.capabilities.config.sort();
    let bytes = m.to_cbor().unwrap();
    assert_eq!(Manifest::from_cbor(&bytes).unwrap(), m);
}

/// Issue 13.6: a padded (non-minimal) LEB128 in the signature section's
/// header is refused; otherwise one signed capsule would have many file digests.
#[test]
fn non_minimal_leb128_in_the_signature_section_header() {
    let key = SecretKey::generate().unwrap();
    let signed = sign(EMPTY_COMPONENT, &source(), &key, NOW).unwrap();
    let cose = embedded_signature(&signed).unwrap().unwrap().to_vec();
    let name = SIGNATURE_SECTION.as_bytes();
    // `padded` adds one continuation byte to the shortest encoding of `n`.
    let leb = |n: usize, padded: bool| {
        let mut out = Vec::new();
        wasm::write_u32_for_tests(&mut out, n as u32);
        if padded {
            let last = out.len() - 1;
            out[last] |= 0x80;
            out.push(0);
        }
        out
    };
    let build = |pad_size: bool, pad_name: bool| {
        let mut content = leb(name.len(), pad_name);
        content.extend_from_slice(name);
        content.extend_from_slice(&cose);
        let mut out = EMPTY_COMPONENT.to_vec();
        out.push(0);
        out.extend(leb(content.len(), pad_size));
        out.extend_from_slice(&content);
        out
    };
    assert_eq!(
        build(false, false),
        signed,
        "the shortest encoding is what sign writes"
    );
    CheckedCapsule::parse(build(false, false)).unwrap();
    for (pad_size, pad_name) in [(true, false), (false, true), (true, true)] {
        let err = CheckedCapsule::parse(build(pad_size, pad_name)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "signature section is malformed: its header encodes a size in more LEB128 bytes than needed; sizes in the signature section header must use the shortest encoding"
        );
    }
}
