//! Public test vectors from `tests/vectors/` (origins in its `SOURCES.md`): our primitives agree
//! with the outside world.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

use std::path::PathBuf;

use coset::{CoseSign1, TaggedCborSerializable};
use edge_runner::cbor::{self, CborError};
use edge_runner::keys::{PublicKey, SecretKey};

fn vectors() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors");
    assert!(dir.is_dir(), "test vectors missing at {}", dir.display());
    dir
}

#[test]
fn rfc8032_ed25519_vectors_sign_and_verify_strictly() {
    let text = std::fs::read_to_string(vectors().join("ed25519/rfc8032-TESTVECTORS")).unwrap();
    let mut count = 0;
    for line in text.lines().filter(|l| !l.is_empty()) {
        let parts: Vec<&str> = line.split(':').collect();
        let seed: [u8; 32] = hex::decode(&parts[0][..64]).unwrap().try_into().unwrap();
        let public = hex::decode(parts[1]).unwrap();
        let message = hex::decode(parts[2]).unwrap();
        let signature = &hex::decode(parts[3]).unwrap()[..64];

        let key = SecretKey::from_signing_key(ed25519_dalek::SigningKey::from_bytes(&seed));
        assert_eq!(
            key.public().as_bytes().as_slice(),
            public.as_slice(),
            "line {count}"
        );
        assert_eq!(
            key.sign(&message).to_bytes().as_slice(),
            signature,
            "line {count}"
        );
        let verifier = PublicKey::from_bytes(&public).unwrap();
        assert!(verifier.verify_strict(&message, signature), "line {count}");
        let mut wrong = signature.to_vec();
        wrong[0] ^= 1;
        assert!(!verifier.verify_strict(&message, &wrong), "line {count}");
        count += 1;
    }
    assert_eq!(count, 128, "every vector in the file was checked");
}

#[test]
fn cose_wg_eddsa_sig_01_verifies_and_to_be_signed_matches() {
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(vectors().join("cose/eddsa-examples/eddsa-sig-01.json")).unwrap(),
    )
    .unwrap();
    let x = hex::decode(json["input"]["sign0"]["key"]["x_hex"].as_str().unwrap()).unwrap();
    let cbor_bytes = hex::decode(json["output"]["cbor"].as_str().unwrap()).unwrap();
    let tbs = hex::decode(json["intermediates"]["ToBeSign_hex"].as_str().unwrap()).unwrap();
    let sign1 = CoseSign1::from_tagged_slice(&cbor_bytes).unwrap();
    assert_eq!(sign1.tbs_data(b""), tbs);
    let key = PublicKey::from_bytes(&x).unwrap();
    assert!(
        sign1
            .verify_signature(b"", |sig, data| if key.verify_strict(data, sig) {
                Ok(())
            } else {
                Err(())
            })
            .is_ok()
    );
    // Our evidence context as external AAD must make the same signature invalid.
    assert!(
        sign1
            .verify_signature(edge_runner::evidence::EVIDENCE_CONTEXT, |sig, data| {
                if key.verify_strict(data, sig) {
                    Ok(())
                } else {
                    Err(())
                }
            })
            .is_err()
    );
}

/// RFC 8949 Appendix A: every round-trippable, float-free encoding is accepted as deterministic;
/// every non-round-trippable one (indefinite lengths, non-preferred forms) is rejected.
#[test]
fn rfc8949_appendix_a_canonical_acceptance() {
    use base64::Engine;
    let json: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(vectors().join("cbor/appendix_a.json")).unwrap(),
    )
    .unwrap();
    let (mut accepted, mut rejected) = (0, 0);
    for case in &json {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(case["cbor"].as_str().unwrap())
            .unwrap();
        let hex = case["hex"].as_str().unwrap();
        let roundtrip = case["roundtrip"].as_bool().unwrap();
        match cbor::decode_canonical(&bytes) {
            Ok(_) => {
                assert!(
                    roundtrip,
                    "{hex} is not deterministic in RFC 8949 but was accepted"
                );
                accepted += 1;
            }
            Err(CborError::Float) => {} // No Edge Runner format allows floats.
            Err(CborError::Malformed(_)) if hex.starts_with("c2") || hex.starts_with("c3") => {
                // Bignums (tags 2/3) beyond 64 bits: ciborium maps them to integers; none of our formats use them.
            }
            Err(e) => {
                if roundtrip && !is_simple_or_tagged_exotic(hex) {
                    panic!("{hex} is deterministic but was rejected: {e}");
                }
                rejected += 1;
            }
        }
    }
    assert!(
        accepted >= 40 && rejected >= 10,
        "accepted {accepted}, rejected {rejected}"
    );
}

/// Simple values and bignum tags that ciborium normalises on decode; outside our formats.
fn is_simple_or_tagged_exotic(hex: &str) -> bool {
    hex.starts_with("f0")
        || hex.starts_with("f8")
        || hex.starts_with("f7")
        || hex.starts_with("c2")
        || hex.starts_with("c3")
}

/// Every JSON file under `dir`, recursively.
fn json_files(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            json_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
}

fn b64(v: &serde_json::Value) -> Option<[u8; 32]> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.as_str()?)
        .ok()?;
    bytes.try_into().ok()
}

/// A proof as listed; `None` when some entry is not a 32-byte hash (then it cannot verify).
fn proof(v: &serde_json::Value) -> Option<Vec<[u8; 32]>> {
    match v {
        serde_json::Value::Null => Some(Vec::new()),
        serde_json::Value::Array(items) => items.iter().map(b64).collect(),
        _ => None,
    }
}

#[test]
fn transparency_dev_merkle_inclusion_vectors() {
    use edge_runner::evidence::merkle;
    let mut files = Vec::new();
    json_files(&vectors().join("merkle/inclusion"), &mut files);
    assert!(files.len() > 20, "only {} inclusion vectors", files.len());
    for file in &files {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let want_err = v["wantErr"].as_bool().unwrap();
        let ok = match (b64(&v["root"]), b64(&v["leafHash"]), proof(&v["proof"])) {
            (Some(root), Some(leaf), Some(p)) => merkle::verify_inclusion(
                v["leafIdx"].as_u64().unwrap(),
                v["treeSize"].as_u64().unwrap(),
                &leaf,
                &p,
                &root,
            ),
            _ => false,
        };
        assert_eq!(ok, !want_err, "{}", file.display());
    }
}

#[test]
fn transparency_dev_merkle_consistency_vectors() {
    use edge_runner::evidence::merkle;
    let mut files = Vec::new();
    json_files(&vectors().join("merkle/consistency"), &mut files);
    assert!(files.len() > 10, "only {} consistency vectors", files.len());
    for file in &files {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let want_err = v["wantErr"].as_bool().unwrap();
        let (size1, size2) = (v["size1"].as_u64().unwrap(), v["size2"].as_u64().unwrap());
        let ok = match (b64(&v["root1"]), b64(&v["root2"]), proof(&v["proof"])) {
            (Some(r1), Some(r2), Some(p)) => merkle::verify_consistency(size1, size2, &r1, &r2, &p),
            // Roots that are not hashes ("don't care") can only match themselves at equal sizes.
            (_, _, Some(p)) => {
                size1 != 0 && size1 == size2 && p.is_empty() && v["root1"] == v["root2"]
            }
            _ => false,
        };
        assert_eq!(ok, !want_err, "{}", file.display());
    }
}

#[test]
fn merkle_roots_and_proofs_match_the_vectors_we_can_rebuild() {
    // The transparency-dev test trees use leaves "" , "\x00", "\x10", ... ; instead
    // of guessing, check our generator against the verifier on every shape up to 64.
    use edge_runner::evidence::merkle;
    for n in 1..=64usize {
        let leaves: Vec<[u8; 32]> = (0..n)
            .map(|i| merkle::leaf_hash(&i.to_be_bytes()))
            .collect();
        let root = merkle::root(&leaves);
        for m in 1..=n {
            let p = merkle::consistency_proof(&leaves, m).unwrap();
            assert!(merkle::verify_consistency(
                m as u64,
                n as u64,
                &merkle::root(&leaves[..m]),
                &root,
                &p
            ));
        }
    }
}

/// The hex following `marker` in `doc`: the next code span that starts a line, spaces removed.
fn doc_hex_after(doc: &str, marker: &str) -> String {
    let at = doc
        .find(marker)
        .unwrap_or_else(|| panic!("`{marker}` not in the spec"));
    let rest = &doc[at + marker.len()..];
    let start = rest.find("\n`").expect("a code span on the next line") + 2;
    let len = rest[start..].find('`').expect("closing backtick");
    rest[start..start + len].replace(' ', "")
}

/// `docs/capsule-format.md` §10 is a contract an independent verifier was built
/// from: the real signer must produce its bytes exactly, so the spec cannot drift
/// from the code (as it would have when signatures moved from `alg` -19 to -8).
#[test]
fn capsule_format_worked_example_is_what_the_signer_writes() {
    use edge_runner::capsule::{self, CheckedCapsule, ManifestSource};
    use sha2::Digest;

    let doc = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/capsule-format.md"),
    )
    .unwrap();
    let seed: [u8; 32] =
        hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap()
            .try_into()
            .unwrap();
    let key = SecretKey::from_signing_key(ed25519_dalek::SigningKey::from_bytes(&seed));
    let component = hex::decode("0061736d0d000100").unwrap();
    let toml = "name = \"hello\"\nversion = \"1.0.0\"\nkind = \"test\"\naudience = [\"plant-7\"]\n\
                not-before = 2026-01-01T00:00:00Z\nexpires = 2027-01-01T00:00:00Z\n";
    let source = ManifestSource::parse(toml, std::path::Path::new("hello.toml")).unwrap();
    let signed = capsule::sign(
        &component,
        &source,
        &key,
        edge_runner::timestamp::Timestamp::now(),
    )
    .unwrap();
    let checked = CheckedCapsule::parse(signed.clone()).unwrap();
    let entry = &checked.signatures()[0];
    // Sig_structure = 85 69 "Signature" 58 35 <body> 58 26 <sign> 58 20 <aad> 58 c5 <manifest>.
    let body_protected = &entry.signed_bytes[13..13 + 53];
    let sign_protected = &entry.signed_bytes[13 + 53 + 2..13 + 53 + 2 + 38];

    println!(
        "signature protected header: {}",
        hex::encode(sign_protected)
    );
    println!("signature: {}", hex::encode(&entry.signature));
    println!("signed capsule: {} bytes", signed.len());
    println!(
        "signed capsule sha256: {}",
        hex::encode(sha2::Sha256::digest(&signed))
    );
    println!("signed capsule: {}", hex::encode(&signed));

    assert_eq!(
        hex::encode(body_protected),
        doc_hex_after(&doc, "**Body protected header** (53 bytes)")
    );
    assert_eq!(
        hex::encode(sign_protected),
        doc_hex_after(&doc, "**Signature protected header** (38 bytes)")
    );
    assert_eq!(entry.signed_bytes.len(), 339);
    assert_eq!(
        hex::encode(&entry.signature),
        doc_hex_after(&doc, "**Signature:**")
    );
    assert_eq!(signed.len(), 401);
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&signed)),
        doc_hex_after(&doc, "**Signed capsule** (401 bytes; SHA-256")
    );
}
