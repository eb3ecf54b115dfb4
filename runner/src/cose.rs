//! Multi-signer COSE_Sign (RFC 9052 §4.1) as Edge Runner uses it for
//! capsules and trust roots: one attached payload, Ed25519 signatures each
//! naming its key by SHA-256, every byte deterministically encoded. It also
//! owns which COSE `alg` values name Ed25519, for evidence records too.
//!
//! This module only encodes and decodes; it decides nothing about which
//! keys are trusted. Each caller passes its own content type and external
//! AAD ("context"), so a signature made for one purpose never verifies for
//! another.

use coset::{
    CoseSign, CoseSignBuilder, CoseSignature, CoseSignatureBuilder, HeaderBuilder,
    TaggedCborSerializable, iana,
};

use crate::cbor;
use crate::keys::{KeyId, SecretKey};

/// The `alg` written in every signature Edge Runner makes (capsules, trust
/// roots, evidence records): EdDSA (-8, RFC 9053). Stock COSE libraries
/// (pycose 1.1.0, go-cose 1.3, t_cose 1.x and 2.x, COSE-JAVA 1.1) know -8 and
/// refuse the fully-specified Ed25519 (-19, RFC 9864), so an auditor can check
/// our signatures with any of them unpatched. Both name the same pure Ed25519.
pub(crate) const WRITTEN_ALGORITHM: iana::Algorithm = iana::Algorithm::EdDSA;

/// True when `alg` is EdDSA (-8) or Ed25519 (-19): both are accepted on input,
/// since records and signatures made before we wrote -8 carry -19.
pub(crate) fn is_ed25519_algorithm(alg: i64) -> bool {
    alg == iana::Algorithm::EdDSA as i64 || alg == iana::Algorithm::Ed25519 as i64
}

/// One signature as found in a COSE_Sign, not yet checked.
#[derive(Debug, Clone)]
pub struct SignatureEntry {
    /// The signer's key id (the `kid` header).
    pub key_id: KeyId,
    /// The COSE algorithm the signature claims.
    pub algorithm: i64,
    /// The Sig_structure bytes the signature must cover.
    pub signed_bytes: Vec<u8>,
    /// The signature bytes.
    pub signature: Vec<u8>,
}

impl SignatureEntry {
    /// True when the claimed algorithm is EdDSA (-8) or Ed25519 (-19).
    pub fn is_ed25519(&self) -> bool {
        is_ed25519_algorithm(self.algorithm)
    }
}

/// A decoded, structurally checked COSE_Sign.
#[derive(Debug, Clone)]
pub(crate) struct Signed {
    /// The attached payload.
    pub payload: Vec<u8>,
    /// The signatures, in file order.
    pub entries: Vec<SignatureEntry>,
    raw: CoseSign,
}

/// Decodes `content` strictly: deterministic CBOR, tag 98, the expected
/// content type, empty unprotected headers, 1..=`max_signatures` signatures,
/// each with a protected `alg` and a 32-byte `kid`. Errors are plain
/// sentences for the caller to wrap.
pub(crate) fn decode(
    content: &[u8],
    content_type: &str,
    context: &[u8],
    max_signatures: usize,
) -> Result<Signed, String> {
    cbor::decode_canonical(content).map_err(|e| e.to_string())?;
    let sign = CoseSign::from_tagged_slice(content)
        .map_err(|e| format!("not a tagged COSE_Sign (tag 98): {e}"))?;
    check_canonical_header(&sign.protected.original_data, "body protected header")?;
    only_parameters(&sign.protected.header, "body protected header", &[3])?;
    match &sign.protected.header.content_type {
        Some(coset::ContentType::Text(t)) if t == content_type => {}
        other => {
            return Err(format!(
                "content type is {other:?}, expected \"{content_type}\""
            ));
        }
    }
    if !sign.unprotected.is_empty() {
        return Err("body unprotected header must be empty".into());
    }
    let payload = sign
        .payload
        .clone()
        .ok_or_else(|| "COSE_Sign has no payload (detached payloads are not used)".to_string())?;
    if sign.signatures.is_empty() {
        return Err("COSE_Sign carries no signatures".into());
    }
    if sign.signatures.len() > max_signatures {
        return Err(format!(
            "{} signatures is over the limit of {max_signatures}",
            sign.signatures.len()
        ));
    }
    let entries = sign
        .signatures
        .iter()
        .enumerate()
        .map(|(i, sig)| entry(&sign, i, sig, context))
        .collect::<Result<_, _>>()?;
    Ok(Signed {
        payload,
        entries,
        raw: sign,
    })
}

fn entry(
    sign: &CoseSign,
    i: usize,
    sig: &CoseSignature,
    context: &[u8],
) -> Result<SignatureEntry, String> {
    check_canonical_header(
        &sig.protected.original_data,
        &format!("signature {i} protected header"),
    )?;
    let header = &sig.protected.header;
    only_parameters(header, &format!("signature {i} protected header"), &[1, 4])?;
    let algorithm = match &header.alg {
        Some(coset::RegisteredLabelWithPrivate::Assigned(a)) => *a as i64,
        Some(coset::RegisteredLabelWithPrivate::PrivateUse(a)) => *a,
        _ => return Err(format!("signature {i} has no protected `alg`")),
    };
    let key_id: [u8; 32] = header.key_id.as_slice().try_into().map_err(|_| {
        format!(
            "signature {i}: `kid` must be the 32-byte SHA-256 of the signer's public key, found {} bytes",
            header.key_id.len()
        )
    })?;
    if !sig.unprotected.is_empty() {
        return Err(format!("signature {i}: unprotected header must be empty"));
    }
    Ok(SignatureEntry {
        key_id: KeyId(key_id),
        algorithm,
        signed_bytes: sign.tbs_data(context, sig),
        signature: sig.signature.clone(),
    })
}

/// Refuses any header parameter but the labels in `allowed` (3 content type,
/// 1 alg, 4 kid): an unknown or critical parameter could change how the
/// signature should be read, and RFC 9052 §3.1 says such input is rejected.
fn only_parameters(header: &coset::Header, what: &str, allowed: &[i64]) -> Result<(), String> {
    let mut present = Vec::new();
    if header.alg.is_some() {
        present.push(1);
    }
    if !header.crit.is_empty() {
        present.push(2);
    }
    if header.content_type.is_some() {
        present.push(3);
    }
    if !header.key_id.is_empty() {
        present.push(4);
    }
    if !header.iv.is_empty() {
        present.push(5);
    }
    if !header.partial_iv.is_empty() {
        present.push(6);
    }
    if !header.counter_signatures.is_empty() {
        present.push(7);
    }
    if let Some(label) = present.iter().find(|l| !allowed.contains(l)) {
        return Err(format!(
            "{what} carries parameter {label}, which this format does not use; only labels {allowed:?} are allowed"
        ));
    }
    if let Some((label, _)) = header.rest.first() {
        return Err(format!(
            "{what} carries parameter {label:?}, which this format does not use; only labels {allowed:?} are allowed"
        ));
    }
    Ok(())
}

fn check_canonical_header(original: &Option<Vec<u8>>, what: &str) -> Result<(), String> {
    if let Some(bytes) = original
        && !bytes.is_empty()
    {
        cbor::decode_canonical(bytes).map_err(|e| format!("{what}: {e}"))?;
    }
    Ok(())
}

/// Signs `payload` with `key`, keeping the signatures of `existing` (which
/// must carry the same payload; the caller checks). Returns the tagged,
/// deterministically encoded COSE_Sign.
pub(crate) fn sign(
    payload: Vec<u8>,
    content_type: &str,
    context: &[u8],
    existing: Option<&Signed>,
    key: &SecretKey,
) -> Result<Vec<u8>, String> {
    let body = HeaderBuilder::new()
        .content_type(content_type.to_string())
        .build();
    let mut builder = CoseSignBuilder::new().protected(body).payload(payload);
    if let Some(existing) = existing {
        for sig in &existing.raw.signatures {
            builder = builder.add_signature(sig.clone());
        }
    }
    let sig_header = HeaderBuilder::new()
        .algorithm(WRITTEN_ALGORITHM)
        .key_id(key.id().0.to_vec())
        .build();
    let new_sig = CoseSignatureBuilder::new().protected(sig_header).build();
    let sign = builder
        .add_created_signature(new_sig, context, |tbs| key.sign(tbs).to_bytes().to_vec())
        .build();
    let encoded = sign
        .to_tagged_vec()
        .map_err(|e| format!("encoding COSE_Sign: {e}"))?;
    // coset keeps original header bytes, which we produced canonically; re-encoding
    // through our deterministic encoder makes that a guarantee rather than a hope.
    let (value, _) = cbor::decode_prefix(&encoded).map_err(|e| e.to_string())?;
    cbor::encode(&value).map_err(|e| e.to_string())
}
