//! The capsule file format: the manifest and how signatures ride inside a component.
//!
//! A signed capsule is one WebAssembly component binary whose **last**
//! top-level section is a custom section named [`SIGNATURE_SECTION`]. Its
//! content is a tagged COSE_Sign (RFC 9052) whose payload is the manifest in
//! deterministic CBOR, and the manifest carries the SHA-256 of every byte of
//! the file before that section (the *module digest*). `docs/capsule-format.md`
//! is the normative description.
//!
//! This module parses and produces that format (`RawCapsule` →
//! [`CheckedCapsule`]: sizes bounded, structure well formed) and signs it. It
//! decides nothing about whether a signature is *trusted*; that is
//! [`crate::trust`]'s job, and only `trust` can turn a `CheckedCapsule` into
//! something the sandbox will run.

mod manifest;
mod wasm;

pub use manifest::{Kind, Manifest, ManifestSource, RequestedLimits};

use coset::{
    CoseSign, CoseSignBuilder, CoseSignature, CoseSignatureBuilder, HeaderBuilder,
    TaggedCborSerializable, iana,
};
use sha2::{Digest, Sha256};

use crate::cbor;
use crate::keys::{KeyId, SecretKey};

/// Name of the custom section that holds a capsule's signatures.
pub const SIGNATURE_SECTION: &str = "edge-runner.signatures";

/// COSE content type of the signed payload (the manifest).
pub const MANIFEST_CONTENT_TYPE: &str = "application/vnd.edge-runner.capsule-manifest+cbor";

/// External AAD bound into every capsule signature, so it cannot be replayed
/// as any other kind of Edge Runner signature (evidence uses another context).
pub const SIGNATURE_CONTEXT: &[u8] = b"edge-runner/capsule-signature/v1";

/// Largest capsule file accepted, before anything is parsed.
pub const MAX_CAPSULE_BYTES: usize = 64 * 1024 * 1024;

/// Largest signature section accepted.
pub const MAX_SIGNATURE_SECTION_BYTES: usize = 256 * 1024;

/// Most signatures one capsule may carry.
pub const MAX_SIGNATURES: usize = 16;

/// Why a capsule file is not a well-formed signed capsule, or could not be signed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CapsuleError {
    /// Larger than [`MAX_CAPSULE_BYTES`].
    #[error("capsule is {size} bytes; the limit is {limit} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a WebAssembly component at all, or structurally broken.
    #[error("not a WebAssembly component: {0}")]
    NotComponent(String),
    /// A core module where a component is required.
    #[error(
        "this is a core WebAssembly module, not a component; build capsules with `--target wasm32-wasip2` (or wrap the module with `wasm-tools component new`)"
    )]
    CoreModule,
    /// No signature section.
    #[error(
        "capsule is not signed (no `{SIGNATURE_SECTION}` section); sign it with `edge-runner capsule sign`"
    )]
    Unsigned,
    /// Signature section present but not where, or not how, it must be.
    #[error("signature section is malformed: {0}")]
    BadSignatureSection(String),
    /// The manifest inside the signature is malformed.
    #[error("signed manifest is malformed: {0}")]
    BadManifest(String),
    /// The manifest source (`capsule.toml`) is malformed.
    #[error("{0}")]
    ManifestSource(String),
    /// `--add` asked to co-sign, but the new manifest differs from the signed one.
    #[error(
        "cannot add a signature: the capsule's existing signatures cover a different manifest or module ({0}); sign from the unsigned component instead of using --add"
    )]
    ManifestMismatch(String),
    /// The signing key has already signed this capsule.
    #[error("key {0} has already signed this capsule")]
    AlreadySigned(String),
}

/// One signature on a capsule, as found in the file (not yet checked).
#[derive(Debug, Clone)]
pub struct SignatureEntry {
    /// The signer's key id (the `kid` header).
    pub key_id: KeyId,
    /// The COSE algorithm the signature claims.
    pub algorithm: i64,
    /// The Sig_structure bytes the signature must cover.
    pub signed_bytes: Vec<u8>,
    /// The 64-byte signature.
    pub signature: Vec<u8>,
}

/// A capsule whose structure has been checked: size bounded, component
/// header and sections well formed, exactly one signature section, a
/// canonical COSE_Sign with a canonical manifest. Nothing about it is trusted yet.
#[derive(Debug, Clone)]
pub struct CheckedCapsule {
    bytes: Vec<u8>,
    module_digest: [u8; 32],
    file_digest: [u8; 32],
    manifest: Manifest,
    signatures: Vec<SignatureEntry>,
}

impl CheckedCapsule {
    /// Parses a signed capsule file. `bytes` is kept as is: the same buffer is compiled later.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, CapsuleError> {
        if bytes.len() > MAX_CAPSULE_BYTES {
            return Err(CapsuleError::TooLarge {
                size: bytes.len(),
                limit: MAX_CAPSULE_BYTES,
            });
        }
        let file_digest = Sha256::digest(&bytes).into();
        let layout = wasm::Layout::parse(&bytes)?;
        let Some(section) = layout.signature else {
            return Err(CapsuleError::Unsigned);
        };
        let module_digest = Sha256::digest(&bytes[..section.start]).into();
        let sign = decode_cose_sign(&bytes[section.content.clone()])?;
        let payload = sign
            .payload
            .as_deref()
            .ok_or_else(|| CapsuleError::BadSignatureSection("COSE_Sign has no payload".into()))?;
        let manifest = Manifest::from_cbor(payload)?;
        let signatures = signature_entries(&sign)?;
        Ok(Self {
            bytes,
            module_digest,
            file_digest,
            manifest,
            signatures,
        })
    }

    /// The whole file, exactly as read.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// SHA-256 of the file without its signature section, as computed from the bytes.
    pub fn module_digest(&self) -> [u8; 32] {
        self.module_digest
    }

    /// SHA-256 of the whole file, signatures included.
    pub fn file_digest(&self) -> [u8; 32] {
        self.file_digest
    }

    /// The manifest as signed (its `module_sha256` is the *claimed* digest).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The signatures found, unchecked.
    pub fn signatures(&self) -> &[SignatureEntry] {
        &self.signatures
    }
}

fn decode_cose_sign(content: &[u8]) -> Result<CoseSign, CapsuleError> {
    let bad = |m: String| CapsuleError::BadSignatureSection(m);
    if content.len() > MAX_SIGNATURE_SECTION_BYTES {
        return Err(bad(format!(
            "{} bytes is over the {MAX_SIGNATURE_SECTION_BYTES}-byte limit",
            content.len()
        )));
    }
    cbor::decode_canonical(content).map_err(|e| bad(e.to_string()))?;
    let sign = CoseSign::from_tagged_slice(content)
        .map_err(|e| bad(format!("not a tagged COSE_Sign (tag 98): {e}")))?;
    check_canonical_header(&sign.protected.original_data, "body protected header")?;
    match &sign.protected.header.content_type {
        Some(coset::ContentType::Text(t)) if t == MANIFEST_CONTENT_TYPE => {}
        other => {
            return Err(bad(format!(
                "content type is {other:?}, expected \"{MANIFEST_CONTENT_TYPE}\""
            )));
        }
    }
    if !sign.unprotected.is_empty() {
        return Err(bad("body unprotected header must be empty".into()));
    }
    if sign.signatures.is_empty() {
        return Err(bad("COSE_Sign carries no signatures".into()));
    }
    if sign.signatures.len() > MAX_SIGNATURES {
        return Err(bad(format!(
            "{} signatures is over the limit of {MAX_SIGNATURES}",
            sign.signatures.len()
        )));
    }
    Ok(sign)
}

fn check_canonical_header(original: &Option<Vec<u8>>, what: &str) -> Result<(), CapsuleError> {
    if let Some(bytes) = original
        && !bytes.is_empty()
    {
        cbor::decode_canonical(bytes)
            .map_err(|e| CapsuleError::BadSignatureSection(format!("{what}: {e}")))?;
    }
    Ok(())
}

fn signature_entries(sign: &CoseSign) -> Result<Vec<SignatureEntry>, CapsuleError> {
    let bad = |m: String| CapsuleError::BadSignatureSection(m);
    sign.signatures
        .iter()
        .enumerate()
        .map(|(i, sig)| {
            check_canonical_header(&sig.protected.original_data, &format!("signature {i} protected header"))?;
            let header = &sig.protected.header;
            let algorithm = match &header.alg {
                Some(coset::RegisteredLabelWithPrivate::Assigned(a)) => *a as i64,
                Some(coset::RegisteredLabelWithPrivate::PrivateUse(a)) => *a,
                _ => return Err(bad(format!("signature {i} has no protected `alg`"))),
            };
            let key_id: [u8; 32] = header.key_id.as_slice().try_into().map_err(|_| {
                bad(format!(
                    "signature {i}: `kid` must be the 32-byte SHA-256 of the signer's public key, found {} bytes",
                    header.key_id.len()
                ))
            })?;
            if !sig.unprotected.is_empty() {
                return Err(bad(format!("signature {i}: unprotected header must be empty")));
            }
            Ok(SignatureEntry {
                key_id: KeyId(key_id),
                algorithm,
                signed_bytes: sign.tbs_data(SIGNATURE_CONTEXT, sig),
                signature: sig.signature.clone(),
            })
        })
        .collect()
}

/// Signs a component with `key`, binding it to `source` (the author's `capsule.toml`).
///
/// `component` may be unsigned, or already signed when `add` is true, in which
/// case the existing signatures are kept and the new one is added; the
/// manifest and module must then be exactly those already signed.
pub fn sign(
    component: &[u8],
    source: &ManifestSource,
    key: &SecretKey,
    add: bool,
) -> Result<Vec<u8>, CapsuleError> {
    if component.len() > MAX_CAPSULE_BYTES {
        return Err(CapsuleError::TooLarge {
            size: component.len(),
            limit: MAX_CAPSULE_BYTES,
        });
    }
    let layout = wasm::Layout::parse(component)?;
    let module_end = layout
        .signature
        .as_ref()
        .map_or(component.len(), |s| s.start);
    let module = &component[..module_end];
    let manifest = source.to_manifest(Sha256::digest(module).into())?;
    let payload = manifest.to_cbor()?;

    let mut existing = Vec::new();
    if let Some(section) = &layout.signature {
        if !add {
            return Err(CapsuleError::BadSignatureSection(
                "the component is already signed; pass --add to co-sign it".into(),
            ));
        }
        let old = decode_cose_sign(&component[section.content.clone()])?;
        if old.payload.as_deref() != Some(payload.as_slice()) {
            let old_manifest = old
                .payload
                .as_deref()
                .map(Manifest::from_cbor)
                .transpose()?;
            let detail = match old_manifest {
                Some(m) if m.module_sha256 != manifest.module_sha256 => {
                    "module digest differs".to_string()
                }
                Some(m) => format!(
                    "signed manifest is {} {}, new one differs",
                    m.name, m.version
                ),
                None => "no payload".to_string(),
            };
            return Err(CapsuleError::ManifestMismatch(detail));
        }
        for entry in signature_entries(&old)? {
            if entry.key_id == key.id() {
                return Err(CapsuleError::AlreadySigned(key.id().short()));
            }
        }
        existing = old.signatures;
    }

    let body = HeaderBuilder::new()
        .content_type(MANIFEST_CONTENT_TYPE.to_string())
        .build();
    let mut builder = CoseSignBuilder::new().protected(body).payload(payload);
    for sig in existing {
        builder = builder.add_signature(sig);
    }
    let sig_header = HeaderBuilder::new()
        .algorithm(iana::Algorithm::Ed25519)
        .key_id(key.id().0.to_vec())
        .build();
    let new_sig: CoseSignature = CoseSignatureBuilder::new().protected(sig_header).build();
    let sign = builder
        .add_created_signature(new_sig, SIGNATURE_CONTEXT, |tbs| {
            key.sign(tbs).to_bytes().to_vec()
        })
        .build();
    let cose = sign
        .to_tagged_vec()
        .map_err(|e| CapsuleError::BadSignatureSection(format!("encoding COSE_Sign: {e}")))?;
    // coset's encoding of these headers is already canonical; re-encode to be sure.
    let cose = cbor::encode(
        &cbor::decode_prefix(&cose)
            .map_err(|e| CapsuleError::BadSignatureSection(e.to_string()))?
            .0,
    )
    .map_err(|e| CapsuleError::BadSignatureSection(e.to_string()))?;

    let mut out = module.to_vec();
    wasm::append_custom_section(&mut out, SIGNATURE_SECTION, &cose);
    Ok(out)
}

/// The unsigned component inside a signed capsule (everything before the signature section).
pub fn strip_signatures(bytes: &[u8]) -> Result<&[u8], CapsuleError> {
    let layout = wasm::Layout::parse(bytes)?;
    Ok(layout.signature.map_or(bytes, |s| &bytes[..s.start]))
}

#[cfg(test)]
mod tests;
