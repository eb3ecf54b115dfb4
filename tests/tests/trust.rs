//! Capsule and trust root attacks, each named for the attack and asserting the exact refusal.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

use coset::{CborSerializable, CoseSign, TaggedCborSerializable};
use edge_runner::capsule::{self, CheckedCapsule, Kind, Manifest, RawCapsule};
use edge_runner::timestamp::Timestamp;
use edge_runner::trust::{self, Context, HighWater, TrustError, TrustRoot};
use edge_runner_tests::*;

fn verify_with(
    bytes: Vec<u8>,
    root: &TrustRoot,
    site: &str,
    now: Timestamp,
    high_water: &HighWater,
) -> Result<trust::VerifiedCapsule, TrustError> {
    let ctx = Context {
        root,
        site,
        now,
        high_water,
    };
    CheckedCapsule::parse(bytes)
        .map_err(TrustError::from)
        .and_then(|c| trust::verify(c, &ctx))
}

fn verify(bytes: Vec<u8>, root: &TrustRoot) -> Result<trust::VerifiedCapsule, TrustError> {
    verify_with(bytes, root, SITE, Timestamp::now(), &HighWater::default())
}

fn uleb(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Rewrites a signed capsule's COSE_Sign with `edit`, keeping the module, as an attacker would.
fn rewrite_signatures(bytes: &[u8], edit: impl FnOnce(&mut CoseSign)) -> Vec<u8> {
    let module = capsule::strip_signatures(bytes).unwrap();
    let section = &bytes[module.len()..];
    let cose_start = section
        .windows(4)
        .position(|w| w == [0xd8, 0x62, 0x84, 0x58])
        .expect("tagged COSE_Sign in the section");
    let mut sign = CoseSign::from_tagged_slice(&section[cose_start..]).unwrap();
    edit(&mut sign);
    let cose = sign.to_tagged_vec().unwrap();
    let name = capsule::SIGNATURE_SECTION.as_bytes();
    let mut content = Vec::new();
    uleb(name.len(), &mut content);
    content.extend_from_slice(name);
    content.extend_from_slice(&cose);
    let mut out = module.to_vec();
    out.push(0);
    uleb(content.len(), &mut out);
    out.extend_from_slice(&content);
    out
}

/// Replaces the signed manifest with an edited one, keeping the original signatures.
fn swap_manifest(bytes: &[u8], edit: impl FnOnce(&mut Manifest)) -> Vec<u8> {
    rewrite_signatures(bytes, |sign| {
        let mut manifest = Manifest::from_cbor(sign.payload.as_ref().unwrap()).unwrap();
        edit(&mut manifest);
        sign.payload = Some(manifest.to_cbor().unwrap());
    })
}

fn bad_signature_message(p: &Publisher) -> String {
    format!(
        "capsule `json-assert 1.0.0`: the signature by `{}` (key {}) does not verify; the manifest or signature was altered after signing",
        p.name,
        p.key.id().short()
    )
}

#[test]
fn genuine_capsule_is_accepted() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let verified = verify(signed_json_assert(&p.key), &trust_root(&[&p])).unwrap();
    assert_eq!(verified.manifest().name, "json-assert");
    assert_eq!(verified.signers().len(), 1);
    assert_eq!(verified.signers()[0].publisher, "acme-ci");
    assert_eq!(verified.site(), SITE);
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
    let p = Publisher::new("acme-ci", "Acme", &["test", "remediate"]);
    let tampered = swap_manifest(&signed_json_assert(&p.key), |m| m.kind = Kind::Remediate);
    let err = verify(tampered, &trust_root(&[&p])).unwrap_err();
    assert!(matches!(err, TrustError::BadSignature { .. }), "{err}");
    assert_eq!(err.to_string(), bad_signature_message(&p));
}

#[test]
fn manifest_cap_escalation() {
    // The capsule was signed asking for nothing; the attacker adds egress and a bigger budget.
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let tampered = swap_manifest(&signed_json_assert(&p.key), |m| {
        m.capabilities.egress = vec![capsule::Destination::parse("exfil.example.com:443").unwrap()];
        m.limits.fuel = Some(u64::MAX);
    });
    let err = verify(tampered, &trust_root(&[&p])).unwrap_err();
    assert_eq!(err.to_string(), bad_signature_message(&p));
}

#[test]
fn tampered_manifest_description() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let bytes = signed_json_assert(&p.key);
    let pos = bytes
        .windows(6)
        .rposition(|w| w == b"Checks")
        .expect("description in manifest");
    let mut tampered = bytes.clone();
    tampered[pos] = b'X';
    let err = verify(tampered, &trust_root(&[&p])).unwrap_err();
    assert_eq!(err.to_string(), bad_signature_message(&p));
}

#[test]
fn unsupported_algorithm() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let tampered = rewrite_signatures(&signed_json_assert(&p.key), |sign| {
        let sig = &mut sign.signatures[0];
        sig.protected.header.alg = Some(coset::RegisteredLabelWithPrivate::Assigned(
            coset::iana::Algorithm::ES256,
        ));
        sig.protected.original_data = Some(sig.protected.header.clone().to_vec().unwrap());
    });
    let err = verify(tampered, &trust_root(&[&p])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "capsule `json-assert 1.0.0`: signature 0 uses COSE algorithm -7; only EdDSA (-8) and Ed25519 (-19) are accepted"
    );
}

/// Sets signature `index`'s `alg` to `alg` and signs it again with `key`, as a
/// signer that writes another Ed25519 identifier would have.
fn resign_with_alg(
    sign: &mut CoseSign,
    index: usize,
    alg: coset::iana::Algorithm,
    context: &[u8],
    key: &edge_runner::keys::SecretKey,
) {
    let sig = &mut sign.signatures[index];
    sig.protected.header.alg = Some(coset::RegisteredLabelWithPrivate::Assigned(alg));
    sig.protected.original_data = Some(sig.protected.header.clone().to_vec().unwrap());
    let tbs = sign.tbs_data(context, &sign.signatures[index]);
    sign.signatures[index].signature = key.sign(&tbs).to_bytes().to_vec();
}

/// The `alg` of each signature in a tagged COSE_Sign.
fn algorithms(cose: &[u8]) -> Vec<Option<coset::Algorithm>> {
    CoseSign::from_tagged_slice(cose)
        .unwrap()
        .signatures
        .iter()
        .map(|s| s.protected.header.alg.clone())
        .collect()
}

// Regression (pycose refuses alg -19): what we write is EdDSA (-8), which stock
// COSE libraries verify; -19 (RFC 9864 "Ed25519") is still accepted on input.
const EDDSA: Option<coset::Algorithm> = Some(coset::RegisteredLabelWithPrivate::Assigned(
    coset::iana::Algorithm::EdDSA,
));

#[test]
fn capsule_and_trust_root_signatures_are_written_with_alg_eddsa_minus_8() {
    let a = Publisher::new("acme-ci", "Acme", &["test"]);
    let b = Publisher::new("globex-ci", "Globex", &["test"]);
    let cosigned = cosign(&signed_json_assert(&a.key), &b, &[&a]);
    let checked = CheckedCapsule::parse(cosigned).unwrap();
    let written: Vec<i64> = checked.signatures().iter().map(|s| s.algorithm).collect();
    assert_eq!(written, [-8, -8]);

    let (r1, r2) = (RootKey::new("root-1"), RootKey::new("root-2"));
    let root = Policy::new(vec![&r1, &r2], vec![&a]).signed_by(&[&r1, &r2]);
    assert_eq!(algorithms(&root), [EDDSA, EDDSA]);
}

#[test]
fn capsule_signed_with_alg_ed25519_minus_19_is_still_accepted() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let old_style = rewrite_signatures(&signed_json_assert(&p.key), |sign| {
        resign_with_alg(
            sign,
            0,
            coset::iana::Algorithm::Ed25519,
            capsule::SIGNATURE_CONTEXT,
            &p.key,
        );
    });
    let checked = CheckedCapsule::parse(old_style.clone()).unwrap();
    assert_eq!(checked.signatures()[0].algorithm, -19);
    let verified = verify(old_style.clone(), &trust_root(&[&p])).unwrap();
    assert_eq!(verified.manifest().name.as_str(), "json-assert");

    // Accepted means verified: the same -19 signature over other bytes is refused.
    let mut tampered = old_style;
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let err = verify(tampered, &trust_root(&[&p])).unwrap_err();
    assert_eq!(err.to_string(), bad_signature_message(&p));
}

#[test]
fn trust_root_signed_with_alg_ed25519_minus_19_is_still_accepted() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let root_key = RootKey::new("root-1");
    let bytes = Policy::new(vec![&root_key], vec![&p]).signed_by(&[&root_key]);
    let mut sign = CoseSign::from_tagged_slice(&bytes).unwrap();
    resign_with_alg(
        &mut sign,
        0,
        coset::iana::Algorithm::Ed25519,
        trust::TRUST_ROOT_CONTEXT,
        &root_key.key,
    );
    let old_style = sign.to_tagged_vec().unwrap();
    assert_eq!(
        algorithms(&old_style),
        [Some(coset::RegisteredLabelWithPrivate::Assigned(
            coset::iana::Algorithm::Ed25519
        ))]
    );
    let root = trust_chain(vec![old_style]).unwrap();
    verify(signed_json_assert(&p.key), &root).unwrap();
}

#[test]
fn trust_root_signature_with_a_forbidden_algorithm_beside_valid_ones() {
    // The root keys' valid signatures meet the threshold; a third signature, by
    // a key the policy does not know, claims ES256. Spec §7.1: refused whoever signed.
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let root_key = RootKey::new("root-1");
    let bytes = Policy::new(vec![&root_key], vec![&p]).signed_by(&[&root_key]);
    let mut sign = CoseSign::from_tagged_slice(&bytes).unwrap();
    let stranger = edge_runner::keys::SecretKey::generate().unwrap();
    let protected = coset::HeaderBuilder::new()
        .algorithm(coset::iana::Algorithm::ES256)
        .key_id(stranger.id().0.to_vec())
        .build();
    let mut extra = coset::CoseSignatureBuilder::new()
        .protected(protected)
        .build();
    extra.protected.original_data = Some(extra.protected.header.clone().to_vec().unwrap());
    extra.signature = vec![0; 64];
    sign.signatures.push(extra);
    let err = trust_chain(vec![sign.to_tagged_vec().unwrap()]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "trust root 1.root.cose: signature 1 uses COSE algorithm -7; trust root signatures must be EdDSA (-8) or Ed25519 (-19), whoever signed. Re-sign the trust root without it"
    );
}

#[test]
fn unknown_key() {
    let trusted = Publisher::new("acme-ci", "Acme", &["test"]);
    let stranger = Publisher::new("mallory", "Evil", &["test"]);
    let err = verify(signed_json_assert(&stranger.key), &trust_root(&[&trusted])).unwrap_err();
    assert!(matches!(err, TrustError::ThresholdNotMet(_)), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "capsule `json-assert 1.0.0` is signed by 0 key(s) from 0 organisation(s) that count for kind `test`, which requires 1 key(s) from 1 organisation(s) (have: none; not counted: unknown key {}; trust root `test-root` v1)",
            stranger.key.id().short()
        )
    );
}

#[test]
fn revoked_key() {
    let good = Publisher::new("acme-ci", "Acme", &["test"]);
    let stolen = Publisher::new("old-laptop", "Acme", &["test"]);
    let root_key = RootKey::new("root-1");
    let mut policy = Policy::new(vec![&root_key], vec![&good]);
    policy.revoked_keys = vec![(stolen.key.id(), "laptop stolen 2026-10-02")];
    let root = policy.trusted();
    // Even with a valid counted signature beside it, a revoked key's signature refuses the capsule.
    let signed = cosign(&signed_json_assert(&good.key), &stolen, &[&good]);
    let err = verify(signed, &root).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "capsule `json-assert 1.0.0` is signed by revoked key {} (revoked by trust root v1: laptop stolen 2026-10-02); a capsule carrying a revoked key's signature never runs. Re-sign it without that key",
            stolen.key.id().short()
        )
    );
}

#[test]
fn revoked_digest() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let signed = signed_json_assert(&p.key);
    let digest = CheckedCapsule::parse(signed.clone())
        .unwrap()
        .module_digest();
    let root_key = RootKey::new("root-1");
    let mut policy = Policy::new(vec![&root_key], vec![&p]);
    policy.revoked_capsules = vec![(digest, "CVE-2026-1234: leaks the document")];
    let err = verify(signed, &policy.trusted()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "capsule `json-assert 1.0.0` (module {}) is revoked by trust root v1: CVE-2026-1234: leaks the document",
            hex::encode(digest)
        )
    );
}

#[test]
fn publisher_not_allowed_this_kind() {
    let p = Publisher::new("acme-repro", "Acme", &["reproduce"]);
    let err = verify(signed_json_assert(&p.key), &trust_root(&[&p])).unwrap_err();
    assert!(matches!(err, TrustError::KindNotAllowed(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "publisher not allowed this kind: capsule `json-assert 1.0.0` is signed by 0 key(s) from 0 organisation(s) that count for kind `test`, which requires 1 key(s) from 1 organisation(s) (have: none; not counted: `acme-repro` may not sign kind `test`; trust root `test-root` v1)"
    );
}

/// json-assert relabelled `remediate`, signed by `a` and co-signed by `b`.
fn remediate_signed_by(a: &Publisher, b: &Publisher) -> Vec<u8> {
    let once = sign_json_assert(&a.key, |m| m.kind = Kind::Remediate);
    cosign(&once, b, &[a])
}

/// `signed` co-signed by `by`, after checking it is signed by `first`.
fn cosign(signed: &[u8], by: &Publisher, first: &[&Publisher]) -> Vec<u8> {
    let keys: Vec<_> = first.iter().map(|p| p.key.public()).collect();
    capsule::cosign(signed, &by.key, &keys, Timestamp::now()).unwrap()
}

#[test]
fn threshold_met_by_one_key_signing_twice() {
    let a = Publisher::new("acme-ci", "Acme", &["remediate"]);
    let b = Publisher::new("globex-ops", "Globex", &["remediate"]);
    let once = sign_json_assert(&a.key, |m| m.kind = Kind::Remediate);
    // The attacker duplicates a's signature to look like two signers.
    let doubled = rewrite_signatures(&once, |sign| {
        let sig = sign.signatures[0].clone();
        sign.signatures.push(sig);
    });
    let err = verify(doubled, &trust_root(&[&a, &b])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "capsule `json-assert 1.0.0` is signed by 1 key(s) from 1 organisation(s) that count for kind `remediate`, which requires 2 key(s) from 2 organisation(s) (have: acme-ci (Acme); not counted: `acme-ci` signed twice (counted once); trust root `test-root` v1)"
    );
}

#[test]
fn threshold_met_by_two_keys_of_one_organisation() {
    let a = Publisher::new("acme-ci", "Acme", &["remediate"]);
    let b = Publisher::new("acme-sec", "Acme", &["remediate"]);
    let err = verify(remediate_signed_by(&a, &b), &trust_root(&[&a, &b])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "capsule `json-assert 1.0.0` is signed by 2 key(s) from 1 organisation(s) that count for kind `remediate`, which requires 2 key(s) from 2 organisation(s) (have: acme-ci (Acme), acme-sec (Acme); trust root `test-root` v1)"
    );
}

#[test]
fn remediate_accepted_with_two_organisations() {
    let a = Publisher::new("acme-ci", "Acme", &["remediate"]);
    let b = Publisher::new("globex-ops", "Globex", &["remediate"]);
    let verified = verify(remediate_signed_by(&a, &b), &trust_root(&[&a, &b])).unwrap();
    assert_eq!(verified.signers().len(), 2);
}

#[test]
fn remediate_with_one_signer_outside_its_kind_falls_short() {
    let a = Publisher::new("acme-ci", "Acme", &["remediate"]);
    let b = Publisher::new("globex-tests", "Globex", &["test"]);
    let err = verify(remediate_signed_by(&a, &b), &trust_root(&[&a, &b])).unwrap_err();
    assert!(matches!(err, TrustError::KindNotAllowed(_)), "{err}");
    assert!(
        err.to_string()
            .contains("not counted: `globex-tests` may not sign kind `remediate`"),
        "{err}"
    );
}

#[test]
fn capability_beyond_ceiling() {
    let mut p = Publisher::new("acme-ci", "Acme", &["test"]);
    p.ceiling = "egress = [\"*.example.com:443\"]\n";
    let signed = sign_json_assert(&p.key, |m| {
        m.capabilities = toml::from_str("egress = [\"db.internal:5432\"]").unwrap();
    });
    let err = verify(signed, &trust_root(&[&p])).unwrap_err();
    assert!(matches!(err, TrustError::CeilingExceeded(_)), "{err}");
    assert!(
        err.to_string()
            .contains("not counted: `acme-ci`'s ceiling does not cover egress db.internal:5432"),
        "{err}"
    );
}

#[test]
fn limits_beyond_ceiling() {
    let mut p = Publisher::new("acme-ci", "Acme", &["test"]);
    p.ceiling = "fuel = 1000\n";
    let err = verify(signed_json_assert(&p.key), &trust_root(&[&p])).unwrap_err();
    assert!(
        err.to_string()
            .contains("`acme-ci`'s ceiling does not cover fuel 2000000000 (ceiling 1000)"),
        "{err}"
    );
}

#[test]
fn file_access_within_ceiling_is_accepted_and_escalation_is_not() {
    let mut p = Publisher::new("acme-ci", "Acme", &["test"]);
    p.ceiling = "files = [{ path = \"/var/log\", access = \"read-only\" }]\n";
    let root = trust_root(&[&p]);
    let reading = sign_json_assert(&p.key, |m| {
        m.capabilities =
            toml::from_str("files = [{ path = \"/var/log/app\", access = \"read-only\" }]")
                .unwrap();
    });
    verify(reading, &root).unwrap();
    let writing = sign_json_assert(&p.key, |m| {
        m.capabilities =
            toml::from_str("files = [{ path = \"/var/log/app\", access = \"read-write\" }]")
                .unwrap();
    });
    let err = verify(writing, &root).unwrap_err();
    assert!(
        err.to_string()
            .contains("ceiling does not cover file /var/log/app (read-write)"),
        "{err}"
    );
}

#[test]
fn audience_beyond_publisher_audiences() {
    let mut p = Publisher::new("plant-7-ops", "Acme", &["test"]);
    p.audiences = &["plant-7"];
    // The capsule targets every site, but its signer may only target plant-7.
    let err = verify(signed_json_assert(&p.key), &trust_root(&[&p])).unwrap_err();
    assert!(
        err.to_string().starts_with(
            "capsule asks beyond what its signers may vouch for (ceiling or audience): "
        ) && err.to_string().contains(
            r#"not counted: `plant-7-ops` may sign only for sites plant-7, but the manifest's `audience` is ["*"] (every site); list the sites in `audience`"#
        ),
        "{err}"
    );
    // A named site outside the signer's audiences is named.
    let signed = sign_json_assert(&p.key, |m| {
        m.audience = vec!["plant-7".into(), "plant-9".into()]
    });
    let err = verify(signed, &trust_root(&[&p])).unwrap_err();
    assert!(
        err.to_string().contains(
            "`plant-7-ops` may sign only for sites plant-7, but the manifest's `audience` names `plant-9`"
        ),
        "{err}"
    );
}

#[test]
fn wrong_audience() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let signed = sign_json_assert(&p.key, |m| m.audience = vec!["plant-9".into()]);
    let err = verify(signed, &trust_root(&[&p])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "capsule `json-assert 1.0.0` is for sites [plant-9], not this site `plant-7`; it must be signed with this site in its `audience`"
    );
}

#[test]
fn expired_capsule() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let signed = sign_json_assert(&p.key, |m| {
        m.not_before = Some(Timestamp::parse("2025-01-01T00:00:00Z").unwrap());
        m.expires = Some(Timestamp::parse("2025-04-01T00:00:00Z").unwrap());
    });
    let now = Timestamp::parse("2026-11-21T12:00:00Z").unwrap();
    let err =
        verify_with(signed, &trust_root(&[&p]), SITE, now, &HighWater::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "capsule `json-assert 1.0.0` expired at 2025-04-01T00:00:00Z (now 2026-11-21T12:00:00Z); ask its publisher to re-sign it with a new `expires`"
    );
}

#[test]
fn not_yet_valid_capsule() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let signed = sign_json_assert(&p.key, |m| {
        m.not_before = Some(Timestamp::parse("2027-01-01T00:00:00Z").unwrap());
        m.expires = Some(Timestamp::parse("2027-06-01T00:00:00Z").unwrap());
    });
    let now = Timestamp::parse("2026-11-21T12:00:00Z").unwrap();
    let err =
        verify_with(signed, &trust_root(&[&p]), SITE, now, &HighWater::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "capsule `json-assert 1.0.0` is not valid before 2027-01-01T00:00:00Z (now 2026-11-21T12:00:00Z); check this machine's clock, or wait"
    );
}

#[test]
fn rollback_v2_after_v3() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let v2 = sign_json_assert(&p.key, |m| m.version = semver::Version::new(2, 0, 0));
    let mut seen = HighWater::default();
    seen.accept(
        "json-assert",
        &semver::Version::new(3, 0, 0),
        [9; 32],
        "test-root",
        1,
    )
    .unwrap();
    let err = verify_with(v2, &trust_root(&[&p]), SITE, Timestamp::now(), &seen).unwrap_err();
    assert_eq!(
        err.to_string(),
        "rollback: capsule `json-assert` 2.0.0 is older than 3.0.0, which was already accepted (per this runner's evidence log); run 3.0.0 or later"
    );
}

#[test]
fn same_version_with_different_code() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let mut seen = HighWater::default();
    seen.accept(
        "json-assert",
        &semver::Version::new(1, 0, 0),
        [9; 32],
        "test-root",
        1,
    )
    .unwrap();
    let err = verify_with(
        signed_json_assert(&p.key),
        &trust_root(&[&p]),
        SITE,
        Timestamp::now(),
        &seen,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            TrustError::Rollback(trust::RollbackError::VersionReused { .. })
        ),
        "{err}"
    );
    assert!(
        err.to_string().ends_with(
            "a version names exactly one module, so publish the change as a new version"
        ),
        "{err}"
    );
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
fn detached_signature_is_accepted_and_cannot_be_moved_to_another_component() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let root = trust_root(&[&p]);
    let component = capsule_artifacts::JSON_ASSERT.component;
    let sig = capsule::sign_detached(
        component,
        &json_assert_manifest(|_| {}),
        &p.key,
        Timestamp::now(),
    )
    .unwrap();
    let ctx = Context {
        root: &root,
        site: SITE,
        now: Timestamp::now(),
        high_water: &HighWater::default(),
    };
    let check = |component: Vec<u8>| {
        RawCapsule {
            component,
            detached_signature: Some(sig.clone()),
        }
        .check()
        .map_err(TrustError::from)
        .and_then(|c| trust::verify(c, &ctx))
    };
    let verified = check(component.to_vec()).unwrap();
    assert_eq!(verified.placement(), capsule::Placement::Detached);
    assert_eq!(verified.bytes(), component);
    let err = check(b"\0asm\x0d\x00\x01\x00".to_vec()).unwrap_err();
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

// ---- The trust root itself ----

#[test]
fn expired_trust_root() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let root_key = RootKey::new("root-1");
    let mut policy = Policy::new(vec![&root_key], vec![&p]);
    policy.expires = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
    let err = trust_chain(vec![policy.signed_by(&[&root_key])]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "trust root `test-root` v1 expired at 2026-01-01T00:00:00Z; nothing runs under an expired root. Sign a new version with `edge-runner trust rotate`"
    );
}

#[test]
fn trust_root_signed_by_a_stranger() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let root_key = RootKey::new("root-1");
    let stranger = RootKey::new("mallory");
    let policy = Policy::new(vec![&root_key], vec![&p]);
    let err = trust_chain(vec![policy.signed_by(&[&stranger])]).unwrap_err();
    assert!(matches!(err, TrustError::RootNotSigned(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "trust root 1.root.cose (v1) is signed by 0 of its own root keys (v1), which requires 1 (have: none; can still sign: root-1); collect signatures with `edge-runner trust sign`"
    );
}

#[test]
fn trust_root_with_altered_policy() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let root_key = RootKey::new("root-1");
    let policy = Policy::new(vec![&root_key], vec![&p]);
    let mut bytes = policy.signed_by(&[&root_key]);
    // Raise the test threshold inside the signed TOML without re-signing.
    let at = bytes
        .windows(b"[thresholds.test]\nkeys = 1".len())
        .position(|w| w == b"[thresholds.test]\nkeys = 1")
        .unwrap();
    bytes[at + b"[thresholds.test]\nkeys = ".len()] = b'5';
    let err = trust_chain(vec![bytes]).unwrap_err();
    assert!(
        err.to_string().ends_with(
            "signature 0 by root key `root-1` does not verify; the file was altered after signing"
        ),
        "{err}"
    );
}

#[test]
fn rotation_signed_only_by_new_keys() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let old = RootKey::new("ciso-2025");
    let new = RootKey::new("ciso-2026");
    let v1 = Policy::new(vec![&old], vec![&p]);
    let mut v2 = Policy::new(vec![&new], vec![&p]);
    v2.version = 2;
    let err = trust_chain(vec![v1.signed_by(&[&old]), v2.signed_by(&[&new])]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "trust root 2.root.cose (v2) is signed by 0 of the root keys of the version it replaces (v1), which requires 1 (have: none; can still sign: ciso-2025); collect signatures with `edge-runner trust sign`"
    );
}

#[test]
fn rotation_signed_only_by_old_keys() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let old = RootKey::new("ciso-2025");
    let new = RootKey::new("ciso-2026");
    let v1 = Policy::new(vec![&old], vec![&p]);
    let mut v2 = Policy::new(vec![&new], vec![&p]);
    v2.version = 2;
    let err = trust_chain(vec![v1.signed_by(&[&old]), v2.signed_by(&[&old])]).unwrap_err();
    assert!(
        err.to_string()
            .contains("(v2) is signed by 0 of its own root keys (v2), which requires 1"),
        "{err}"
    );
}

#[test]
fn rotation_by_old_and_new_keys_takes_effect() {
    // v2 hands the root to new keys and revokes a publisher's key; the revocation applies at once.
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let q = Publisher::new("acme-nightly", "Acme", &["test"]);
    let old = RootKey::new("ciso-2025");
    let new = RootKey::new("ciso-2026");
    let v1 = Policy::new(vec![&old], vec![&p, &q]);
    let mut v2 = Policy::new(vec![&new], vec![&p]);
    v2.version = 2;
    v2.revoked_keys = vec![(q.key.id(), "compromised")];
    let v1_file = v1.signed_by(&[&old]);
    let root = trust_chain(vec![v1_file.clone(), v2.signed_by(&[&old, &new])]).unwrap();
    assert_eq!(root.version, 2);
    let err = verify(signed_json_assert(&q.key), &root).unwrap_err();
    assert!(matches!(err, TrustError::KeyRevoked { .. }), "{err}");
    verify(signed_json_assert(&p.key), &root).unwrap();

    // And v3 must now be signed by the v2 keys; the old key alone no longer suffices.
    let mut v3 = Policy::new(vec![&old], vec![&p]);
    v3.version = 3;
    let err = trust_chain(vec![
        v1_file,
        v2.signed_by(&[&old, &new]),
        v3.signed_by(&[&old]),
    ])
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("(v3) is signed by 0 of the root keys of the version it replaces (v2)"),
        "{err}"
    );
}

#[test]
fn rotation_needs_every_threshold_of_a_two_of_three_root() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let (a, b, c) = (RootKey::new("a"), RootKey::new("b"), RootKey::new("c"));
    let mut v1 = Policy::new(vec![&a, &b, &c], vec![&p]);
    v1.root_threshold = 2;
    let v1_file = v1.signed_by(&[&a, &b]);
    let mut v2 = Policy::new(vec![&a, &b, &c], vec![&p]);
    v2.root_threshold = 2;
    v2.version = 2;
    // One key signing twice is still one key.
    let doubled = {
        let once = v2.signed_by(&[&a]);
        let mut sign = CoseSign::from_tagged_slice(&once).unwrap();
        let sig = sign.signatures[0].clone();
        sign.signatures.push(sig);
        sign.to_tagged_vec().unwrap()
    };
    let err = trust_chain(vec![v1_file.clone(), doubled]).unwrap_err();
    assert!(err.to_string().contains("signed by 1 of"), "{err}");
    trust_chain(vec![v1_file, v2.signed_by(&[&b, &c])]).unwrap();
}

#[test]
fn trust_root_version_skipped() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let k = RootKey::new("root-1");
    let v1 = Policy::new(vec![&k], vec![&p]);
    let mut v3 = Policy::new(vec![&k], vec![&p]);
    v3.version = 3;
    let err = trust_chain(vec![v1.signed_by(&[&k]), v3.signed_by(&[&k])]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "trust root 2.root.cose: holds version 3 where version 2 belongs; a file's name and its `version` must agree"
    );
}

#[test]
fn trust_root_rollback_against_evidence() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let root = trust_root(&[&p]);
    let mut seen = HighWater::default();
    seen.accept(
        "other",
        &semver::Version::new(1, 0, 0),
        [1; 32],
        "test-root",
        4,
    )
    .unwrap();
    let err = verify_with(
        signed_json_assert(&p.key),
        &root,
        SITE,
        Timestamp::now(),
        &seen,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "rollback: trust root `test-root` v1 is older than v4, which was already used (per this runner's evidence log); a trust root never goes back. Restore the trust store to v4 or later"
    );
}

#[test]
fn trust_root_file_garbage_truncated_oversized() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let k = RootKey::new("root-1");
    let good = Policy::new(vec![&k], vec![&p]).signed_by(&[&k]);
    let err = trust_chain(vec![b"format = 1\nname = \"x\"\n".to_vec()]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("trust root 1.root.cose: not a signed trust root ("),
        "{err}"
    );
    let err = trust_chain(vec![good[..good.len() - 7].to_vec()]).unwrap_err();
    assert!(err.to_string().contains("not a signed trust root"), "{err}");
    let err = trust_chain(vec![vec![0u8; trust::MAX_TRUST_ROOT_BYTES + 1]]).unwrap_err();
    assert!(err.to_string().contains("-byte limit"), "{err}");
}

#[test]
fn trust_root_policy_mistakes_name_the_fix() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let k = RootKey::new("root-1");
    let mut policy = Policy::new(vec![&k], vec![&p]);
    policy.root_threshold = 2;
    let err = trust::RootPolicy::parse(&policy.toml(), "root.toml").unwrap_err();
    assert!(
        err.to_string()
            .contains("`root-threshold` is 2 but there are 1 `[[root-key]]` entries"),
        "{err}"
    );
    let policy = Policy::new(vec![&k], vec![&p]);
    let no_expiry = policy
        .toml()
        .lines()
        .filter(|l| !l.starts_with("expires"))
        .collect::<Vec<_>>()
        .join("\n");
    let err = trust::RootPolicy::parse(&no_expiry, "root.toml").unwrap_err();
    assert!(err.to_string().contains("missing field `expires`"), "{err}");
    let mut revoking_itself = Policy::new(vec![&k], vec![&p]);
    revoking_itself.revoked_keys = vec![(p.key.id(), "oops")];
    let err = trust::RootPolicy::parse(&revoking_itself.toml(), "root.toml").unwrap_err();
    assert!(err.to_string().contains("uses revoked key"), "{err}");
}

#[test]
fn trust_store_directory_mistakes() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let k = RootKey::new("root-1");
    let v1 = Policy::new(vec![&k], vec![&p]).signed_by(&[&k]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let err = trust::store::load(d, Timestamp::now()).unwrap_err();
    assert!(err.to_string().contains("no 1.root.cose here"), "{err}");

    std::fs::write(d.join("1.root.cose"), &v1).unwrap();
    std::fs::write(d.join("notes.txt"), "ignored").unwrap();
    assert_eq!(trust::store::load(d, Timestamp::now()).unwrap().version, 1);

    std::fs::write(d.join("3.root.cose"), &v1).unwrap();
    let err = trust::store::load(d, Timestamp::now()).unwrap_err();
    assert!(
        err.to_string()
            .contains("2.root.cose is missing (found 3.root.cose)"),
        "{err}"
    );
    std::fs::remove_file(d.join("3.root.cose")).unwrap();

    std::fs::write(d.join("02.root.cose"), &v1).unwrap();
    let err = trust::store::load(d, Timestamp::now()).unwrap_err();
    assert!(
        err.to_string()
            .contains("`02.root.cose` is not named N.root.cose"),
        "{err}"
    );
}

#[test]
fn unknown_critical_header_parameter_is_refused() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let tampered = rewrite_signatures(&signed_json_assert(&p.key), |sign| {
        sign.protected.header.crit = vec![coset::RegisteredLabelWithPrivate::PrivateUse(-65537)];
        sign.protected.original_data = Some(sign.protected.header.clone().to_vec().unwrap());
    });
    let err = verify(tampered, &trust_root(&[&p])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "signature section is malformed: body protected header carries parameter 2, which this format does not use; only labels [3] are allowed"
    );
}

#[test]
fn build_metadata_versions_are_refused_at_signing() {
    let err = edge_runner::capsule::ManifestSource::parse(
        "name = \"x\"\nversion = \"1.0.0+b.1\"\nkind = \"test\"\naudience = [\"*\"]\n",
        std::path::Path::new("capsule.toml"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("carries build metadata"), "{err}");
}

#[test]
fn unstated_limit_under_a_ceiling_does_not_count() {
    let mut p = Publisher::new("acme-ci", "Acme", &["test"]);
    p.ceiling = "memory-bytes = 1048576\n";
    let signed = sign_json_assert(&p.key, |m| m.limits.memory_bytes = None);
    let err = verify(signed, &trust_root(&[&p])).unwrap_err();
    assert!(
        err.to_string().contains(
            "ceiling does not cover an unstated memory-bytes (ceiling 1048576; state `memory-bytes` in the manifest's [limits])"
        ),
        "{err}"
    );
}

#[test]
fn organisation_names_must_be_written_exactly() {
    let mut p = Publisher::new("acme-ci", "Acme ", &["test"]);
    p.organisation = "Acme ";
    let k = RootKey::new("root-1");
    let err =
        trust::RootPolicy::parse(&Policy::new(vec![&k], vec![&p]).toml(), "root.toml").unwrap_err();
    assert!(
        err.to_string().contains("has leading or trailing spaces"),
        "{err}"
    );
}

/// Issue 13.4: a manifest altered after its first signature is not co-signed;
/// otherwise, with the stale signature stripped, the capsule would stand on
/// the co-signer alone. A signature the co-signer cannot check refuses too.
#[test]
fn cosign_of_a_manifest_altered_after_the_first_signature() {
    let a = Publisher::new("acme-ci", "Acme", &["test"]);
    let b = Publisher::new("globex-ci", "Globex", &["test"]);
    let signed = signed_json_assert(&a.key);
    let altered = swap_manifest(&signed, |m| m.description = "altered after signing".into());
    let now = Timestamp::now();
    let err = capsule::cosign(&altered, &b.key, &[a.key.public()], now).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot co-sign json-assert 1.0.0: signature 0 (key {}) does not verify: the manifest or signature was altered after signing; a co-signature vouches for the manifest as the first signers signed it, so co-sign only what verifies",
            a.key.id().short()
        )
    );
    let err = capsule::cosign(&signed, &b.key, &[b.key.public()], now).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot co-sign json-assert 1.0.0: signature 0 (key {}) is by a key not given to check it against; give the trust store or that signer's public key; a co-signature vouches for the manifest as the first signers signed it, so co-sign only what verifies",
            a.key.id().short()
        )
    );
    // The genuine manifest co-signs, and both signatures count.
    let cosigned = capsule::cosign(&signed, &b.key, &[a.key.public()], now).unwrap();
    let verified = verify(cosigned, &trust_root(&[&a, &b])).unwrap();
    assert_eq!(verified.signers().len(), 2);
}

/// Issue 13.4: neither signing nor co-signing accepts a manifest already expired.
#[test]
fn signing_or_cosigning_an_expired_manifest() {
    let a = Publisher::new("acme-ci", "Acme", &["test"]);
    let b = Publisher::new("globex-ci", "Globex", &["test"]);
    let expired = |m: &mut edge_runner::capsule::ManifestSource| {
        m.not_before = Some(Timestamp::parse("2025-01-01T00:00:00Z").unwrap());
        m.expires = Some(Timestamp::parse("2025-04-01T00:00:00Z").unwrap());
    };
    let now = Timestamp::parse("2026-11-21T12:00:00Z").unwrap();
    let err = capsule::sign(
        capsule_artifacts::JSON_ASSERT.component,
        &json_assert_manifest(expired),
        &a.key,
        now,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`expires` (2025-04-01T00:00:00Z) is already past (now 2026-11-21T12:00:00Z); a capsule signed so would never run. Set a future `expires`"
    );
    // Signed while it was valid, offered for co-signing after it expired.
    let signed = sign_json_assert(&a.key, expired);
    let err = capsule::cosign(&signed, &b.key, &[a.key.public()], now).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot co-sign json-assert 1.0.0: its manifest expired at 2025-04-01T00:00:00Z (now 2026-11-21T12:00:00Z); ask its publisher to re-sign it with a new `expires`"
    );
}

/// Issue 13.5: "Acme" and "Acme" with a zero-width space are not two
/// organisations: the invisible character is refused, naming it.
#[test]
fn organisation_with_an_invisible_character_for_a_two_organisation_threshold() {
    let a = Publisher::new("acme-ci", "Acme", &["remediate"]);
    let b = Publisher::new("acme-ci-2", "Acme\u{200B}", &["remediate"]);
    let k = RootKey::new("root-1");
    let err = trust::RootPolicy::parse(&Policy::new(vec![&k], vec![&a, &b]).toml(), "root.toml")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "trust root root.toml: publisher `acme-ci-2` organisation `Acme\\u{200b}` contains the invisible or format character U+200B, which would make a name that prints like another count as a different one; remove it"
    );
}

/// Issue 13.5: one organisation written with a precomposed and a decomposed
/// "é" is one organisation (NFC), so it cannot meet a two-organisation threshold.
#[test]
fn organisation_in_two_unicode_normal_forms_counts_once() {
    let a = Publisher::new("cafe-ci", "Caf\u{e9}", &["test", "remediate"]);
    let b = Publisher::new("cafe-ci-2", "Cafe\u{301}", &["test", "remediate"]);
    let signed = remediate_signed_by(&a, &b);
    let err = verify(signed, &trust_root(&[&a, &b])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "capsule `json-assert 1.0.0` is signed by 2 key(s) from 1 organisation(s) that count for kind `remediate`, which requires 2 key(s) from 2 organisation(s) (have: cafe-ci (Caf\u{e9} [Caf\\u{e9}]), cafe-ci-2 (Caf\u{e9} [Caf\\u{e9}]); trust root `test-root` v1)"
    );
}

/// Issue 13.3: a publisher trusted for other names signs `json-assert 99.0.0`
/// to block the genuine 2.1.0 as a rollback; its signature does not count.
#[test]
fn name_squatting_by_a_publisher_not_delegated_the_name() {
    let mut genuine = Publisher::new("json-team", "Acme", &["test"]);
    genuine.names = &["json-assert"];
    let mut squatter = Publisher::new("squatter", "Evil", &["test"]);
    squatter.names = &["squat-*"];
    let root = trust_root(&[&genuine, &squatter]);
    let squat = sign_json_assert(&squatter.key, |m| {
        m.version = semver::Version::new(99, 0, 0);
    });
    assert_eq!(
        verify(squat, &root).unwrap_err().to_string(),
        "publisher not delegated this name: capsule `json-assert 99.0.0` is signed by 0 key(s) from 0 organisation(s) that count for kind `test`, which requires 1 key(s) from 1 organisation(s) (have: none; not counted: `squatter` is not delegated capsule name `json-assert`; trust root `test-root` v1)"
    );
    let own = sign_json_assert(&squatter.key, |m| m.name = "squat-check".into());
    verify(own, &root).unwrap();
    verify(signed_json_assert(&genuine.key), &root).unwrap();
}

/// Issue 13.3: name patterns in the trust root are checked when it is parsed.
#[test]
fn name_delegation_mistakes_name_the_fix() {
    let k = RootKey::new("root-1");
    for (names, message) in [
        (
            &[][..],
            "trust root root.toml: publisher `acme-ci` has no `names`; list the capsule names it may sign (`[\"disk-check\", \"acme-*\"]`), or [\"*\"] for any",
        ),
        (
            &["Acme-*"][..],
            "trust root root.toml: publisher `acme-ci`: name pattern `Acme-*` is invalid: use a capsule name, a prefix of lowercase letters, digits and `-` followed by `*` (`acme-*`), or `*`",
        ),
        (
            &["a*b"][..],
            "trust root root.toml: publisher `acme-ci`: name pattern `a*b` is invalid: use a capsule name, a prefix of lowercase letters, digits and `-` followed by `*` (`acme-*`), or `*`",
        ),
    ] {
        let mut p = Publisher::new("acme-ci", "Acme", &["test"]);
        p.names = names;
        let err = trust::RootPolicy::parse(&Policy::new(vec![&k], vec![&p]).toml(), "root.toml")
            .unwrap_err();
        assert_eq!(err.to_string(), message);
    }
}

/// Issue 13.3: a capsule whose code declares another kind than its manifest
/// never runs, so it does not raise the high-water mark and cannot block the
/// genuine capsule as a rollback, now or after the log is reopened.
#[test]
fn kind_mismatch_does_not_raise_the_high_water_mark() {
    use edge_runner::evidence::EvidenceLog;
    use edge_runner::keys::SecretKey;
    use edge_runner::sandbox::{Limits, RunStatus};
    use edge_runner::session::Session;
    let p = Publisher::new("acme-ci", "Acme", &["test", "reproduce"]);
    let root = trust_root(&[&p]);
    let dir = tempfile::tempdir().unwrap();
    let runner = SecretKey::generate().unwrap();
    let runner_pem = runner.to_pem().unwrap();
    let mut session = Session::new(
        EvidenceLog::open(dir.path(), runner).unwrap(),
        Limits::default(),
        SITE,
    )
    .unwrap();
    // json-assert's code declares `test`; this manifest says `reproduce`.
    let mislabelled = sign_json_assert(&p.key, |m| {
        m.version = semver::Version::new(99, 0, 0);
        m.kind = Kind::Reproduce;
    });
    let verified = session.verify(raw(mislabelled), &root).unwrap();
    let record = session.run(verified, PASSING_INPUT.as_bytes()).unwrap();
    assert_eq!(record.report.status, RunStatus::KindMismatch);
    assert!(session.log().high_water().capsule("json-assert").is_none());
    let genuine = session
        .verify(raw(signed_json_assert(&p.key)), &root)
        .unwrap();
    let record = session.run(genuine, PASSING_INPUT.as_bytes()).unwrap();
    assert_eq!(record.report.status, RunStatus::Completed);
    assert_eq!(
        session.log().high_water().capsule("json-assert").unwrap().0,
        semver::Version::new(1, 0, 0)
    );
    drop(session);
    // The runner reopening its log derives the same mark.
    let runner = SecretKey::from_pem(&runner_pem, std::path::Path::new("runner.key")).unwrap();
    let log = EvidenceLog::open(dir.path(), runner).unwrap();
    assert_eq!(
        log.high_water().capsule("json-assert").unwrap().0,
        semver::Version::new(1, 0, 0)
    );
}

/// A mark pinned to `root`, as a log that used it records.
fn pinned_to(root: &TrustRoot) -> HighWater {
    let mut seen = HighWater::default();
    let a = root.anchor();
    seen.pin_root(
        &root.name,
        root.version,
        root.digest,
        Some((&a.sha256, &a.root_keys)),
    )
    .unwrap();
    seen
}

/// Versions 1..=n of a store under `key`, its policy text edited by `edit`.
fn store_of(key: &RootKey, p: &Publisher, n: u64, edit: impl Fn(String) -> String) -> TrustRoot {
    let files = (1..=n)
        .map(|version| {
            let mut policy = Policy::new(vec![key], vec![p]);
            policy.version = version;
            let text = edit(policy.toml());
            let parsed = trust::RootPolicy::parse(&text, "test").unwrap();
            trust::SignedRoot::sign_new(&parsed, &key.key).unwrap()
        })
        .collect();
    trust_chain(files).unwrap()
}

const REPLACED: &str = "the trust store was replaced. Restore the store this runner is pinned to; if the replacement is intended, record it first with `edge-runner trust re-anchor` (docs/capsule-format.md §8)";

/// Issue 13.2: a log that used `test-root` v2 meets, on the next run, an
/// attacker's own correctly signed chain under the same name at v3.
#[test]
fn trust_store_swapped_for_another_chain_under_the_same_name() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let genuine_key = RootKey::new("root-1");
    let genuine = store_of(&genuine_key, &p, 2, |t| t);
    let seen = pinned_to(&genuine);
    let attacker_key = RootKey::new("root-1");
    let swapped = store_of(&attacker_key, &p, 3, |t| t);
    let err = verify_with(
        signed_json_assert(&p.key),
        &swapped,
        SITE,
        Timestamp::now(),
        &seen,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "rollback: trust root `test-root` descends from version 1 {} (root keys {}), but this runner is pinned to version 1 {} (root keys {}) (per this runner's evidence log); {REPLACED}",
            hex::encode(swapped.anchor().sha256),
            hex::encode(&attacker_key.key.id().0[..8]),
            hex::encode(genuine.anchor().sha256),
            hex::encode(&genuine_key.key.id().0[..8]),
        )
    );
    verify_with(
        signed_json_assert(&p.key),
        &genuine,
        SITE,
        Timestamp::now(),
        &seen,
    )
    .unwrap();
}

/// Issue 13.2: the same attack under another trust root name, at v1.
#[test]
fn trust_store_swapped_for_a_chain_under_another_name() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let genuine_key = RootKey::new("root-1");
    let seen = pinned_to(&store_of(&genuine_key, &p, 2, |t| t));
    let renamed = store_of(&RootKey::new("root-1"), &p, 1, |t| {
        t.replace("name = \"test-root\"", "name = \"other-root\"")
    });
    let err = verify_with(
        signed_json_assert(&p.key),
        &renamed,
        SITE,
        Timestamp::now(),
        &seen,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "rollback: trust root `other-root` is not `test-root`, the trust root this runner is pinned to (per this runner's evidence log); {REPLACED}"
        )
    );
}

/// Issue 13.2: a second, correctly signed v2 with other content (here:
/// without the revocation the first v2 carried), by the genuine root key.
#[test]
fn trust_root_version_reused_with_other_content() {
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let key = RootKey::new("root-1");
    let revocation = "[[revoked-capsule]]\nmodule-sha256 = \"0000000000000000000000000000000000000000000000000000000000000001\"\nreason = \"broken\"\n";
    let with_revocation = store_of(&key, &p, 2, |t| {
        if t.contains("\nversion = 2\n") {
            format!("{t}{revocation}")
        } else {
            t
        }
    });
    let seen = pinned_to(&with_revocation);
    let without = store_of(&key, &p, 2, |t| t);
    assert_eq!(
        without.anchor(),
        with_revocation.anchor(),
        "same version 1 anchor"
    );
    let err = verify_with(
        signed_json_assert(&p.key),
        &without,
        SITE,
        Timestamp::now(),
        &seen,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "rollback: trust root `test-root` v2 was already used with policy {}, but this one is {} (per this runner's evidence log); {REPLACED}",
            hex::encode(with_revocation.digest),
            hex::encode(without.digest)
        )
    );
}

/// Issue 13.3: a capsule that cannot start because it imports what this
/// runner does not grant does not raise the mark either.
#[test]
fn ungranted_import_does_not_raise_the_high_water_mark() {
    use edge_runner::evidence::EvidenceLog;
    use edge_runner::keys::SecretKey;
    use edge_runner::sandbox::Limits;
    use edge_runner::session::Session;
    let p = Publisher::new("acme-ci", "Acme", &["test"]);
    let root = trust_root(&[&p]);
    let component = wat::parse_str(
        r#"(component
             (import "evil:net/raw@1.0.0" (instance (export "connect" (func (param "addr" string)))))
           )"#,
    )
    .unwrap();
    let mut source = json_assert_manifest(|_| {});
    source.version = semver::Version::new(99, 0, 0);
    let hostile = capsule::sign(&component, &source, &p.key, Timestamp::now()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut session = Session::new(
        EvidenceLog::open(dir.path(), SecretKey::generate().unwrap()).unwrap(),
        Limits::default(),
        SITE,
    )
    .unwrap();
    let verified = session.verify(raw(hostile), &root).unwrap();
    let err = session.run(verified, b"").unwrap_err();
    assert!(err.to_string().contains("evil:net/raw@1.0.0"), "{err}");
    assert!(session.log().high_water().capsule("json-assert").is_none());
    let genuine = session
        .verify(raw(signed_json_assert(&p.key)), &root)
        .unwrap();
    session.run(genuine, PASSING_INPUT.as_bytes()).unwrap();
}
