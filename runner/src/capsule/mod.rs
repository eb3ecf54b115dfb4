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

mod capabilities;
mod limits;
mod manifest;
mod wasm;

pub use capabilities::{
    ANY_SITE, AbsPath, Access, Destination, DestinationPattern, FileAccess, FileAccessSource,
    Scheme, validate_config_key, validate_name, validate_site,
};
pub use limits::ResourceLimits;
pub use manifest::{
    Capabilities, CapabilitiesSource, DEFAULT_VALIDITY_DAYS, Kind, Manifest, ManifestSource,
};

pub use crate::cose::SignatureEntry;

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::cose;
use crate::keys::{PublicKey, SecretKey};
use crate::timestamp::Timestamp;

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
    /// Co-signing refused: the module is not the one the existing signatures cover.
    #[error(
        "cannot co-sign: {0}; the module was changed after the first signature, so sign the original module or start over from the unsigned component"
    )]
    ManifestMismatch(String),
    /// Co-signing refused: an existing signature does not verify, or cannot be checked.
    #[error(
        "cannot co-sign {capsule}: {detail}; a co-signature vouches for the manifest as the first signers signed it, so co-sign only what verifies"
    )]
    ExistingSignature {
        /// Capsule name and version.
        capsule: String,
        /// Which signature, and what is wrong with it.
        detail: String,
    },
    /// Co-signing refused: the signed manifest has already expired.
    #[error(
        "cannot co-sign {capsule}: its manifest expired at {expires} (now {now}); ask its publisher to re-sign it with a new `expires`"
    )]
    ManifestExpired {
        /// Capsule name and version.
        capsule: String,
        /// Its `expires`.
        expires: Timestamp,
        /// The time used.
        now: Timestamp,
    },
    /// The signing key has already signed this capsule.
    #[error("key {0} has already signed this capsule")]
    AlreadySigned(String),
    /// Signing a component that is already signed; it can only be co-signed.
    #[error("the component is already signed; co-sign it to add a signature")]
    SignedComponent,
    /// Co-signing a detached signature file for a component that carries its signatures itself.
    #[error(
        "the component carries embedded signatures; co-sign the component, not a detached signature file"
    )]
    EmbeddedSignatures,
}

/// Where a capsule's signatures are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In the component's last custom section, [`SIGNATURE_SECTION`].
    Embedded,
    /// In a separate file holding the same COSE_Sign; the component is unchanged.
    Detached,
}

impl Placement {
    /// `embedded` or `detached`.
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::Embedded => "embedded",
            Placement::Detached => "detached",
        }
    }
}

/// A capsule as read from disk, before any check: the component file and,
/// if its signatures are detached, the signature file.
#[derive(Debug, Clone)]
pub struct RawCapsule {
    /// The component file's bytes.
    pub component: Vec<u8>,
    /// The detached signature file's bytes, if any.
    pub detached_signature: Option<Vec<u8>>,
}

impl RawCapsule {
    /// Checks structure: [`CheckedCapsule::parse`] or [`CheckedCapsule::parse_detached`].
    pub fn check(self) -> Result<CheckedCapsule, CapsuleError> {
        self.check_keeping().map_err(|(err, _)| err)
    }

    /// [`RawCapsule::check`], handing the capsule back with the refusal, so a
    /// caller that records the refusal can still describe the files.
    pub(crate) fn check_keeping(self) -> Result<CheckedCapsule, (CapsuleError, RawCapsule)> {
        let parts = match &self.detached_signature {
            None => Parts::embedded(&self.component),
            Some(signature) => Parts::detached(&self.component, signature),
        };
        match parts {
            Ok(parts) => Ok(parts.with(self.component)),
            Err(err) => Err((err, self)),
        }
    }
}

/// What parsing found in a capsule's bytes, before they are kept with it.
struct Parts {
    module_digest: [u8; 32],
    file_digest: [u8; 32],
    manifest: Manifest,
    signatures: Vec<SignatureEntry>,
    placement: Placement,
}

impl Parts {
    fn embedded(bytes: &[u8]) -> Result<Self, CapsuleError> {
        check_size(bytes.len())?;
        let layout = wasm::Layout::parse(bytes)?;
        let Some(section) = layout.signature else {
            return Err(CapsuleError::Unsigned);
        };
        // One pass: the module is the file's prefix, so its digest is the
        // file hash's state at the section's start.
        let mut hash = Sha256::new();
        hash.update(&bytes[..section.start]);
        let module_digest = hash.clone().finalize().into();
        hash.update(&bytes[section.start..]);
        let signed = decode_signatures(&bytes[section.content.clone()])?;
        Ok(Self {
            module_digest,
            file_digest: hash.finalize().into(),
            manifest: Manifest::from_cbor(&signed.payload)?,
            signatures: signed.entries,
            placement: Placement::Embedded,
        })
    }

    fn detached(component: &[u8], signature: &[u8]) -> Result<Self, CapsuleError> {
        check_size(component.len())?;
        let layout = wasm::Layout::parse(component)?;
        if layout.signature.is_some() {
            return Err(CapsuleError::BadSignatureSection(
                "the component carries embedded signatures and a detached signature was also given; use one or the other".into(),
            ));
        }
        // Unsigned, the file is the module.
        let digest = Sha256::digest(component).into();
        let signed = decode_signatures(signature)?;
        Ok(Self {
            module_digest: digest,
            file_digest: digest,
            manifest: Manifest::from_cbor(&signed.payload)?,
            signatures: signed.entries,
            placement: Placement::Detached,
        })
    }

    /// The checked capsule over `bytes`, the buffer these parts were parsed from.
    fn with(self, bytes: Vec<u8>) -> CheckedCapsule {
        CheckedCapsule {
            bytes: Arc::new(bytes),
            module_digest: self.module_digest,
            file_digest: self.file_digest,
            manifest: self.manifest,
            signatures: self.signatures,
            placement: self.placement,
        }
    }
}

/// A capsule whose structure has been checked: size bounded, component
/// header and sections well formed, one canonical COSE_Sign (embedded as
/// the last section, or detached) with a canonical manifest. Nothing about
/// it is trusted yet. Clones share the bytes (a daemon's jobs clone the
/// capsule they run; the bytes are never copied).
#[derive(Debug, Clone)]
pub struct CheckedCapsule {
    bytes: Arc<Vec<u8>>,
    module_digest: [u8; 32],
    file_digest: [u8; 32],
    manifest: Manifest,
    signatures: Vec<SignatureEntry>,
    placement: Placement,
}

impl CheckedCapsule {
    /// Parses a capsule with embedded signatures. `bytes` is kept as is:
    /// the same buffer is compiled later.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, CapsuleError> {
        Ok(Parts::embedded(&bytes)?.with(bytes))
    }

    /// Parses an unsigned component and its detached signature file.
    pub fn parse_detached(component: Vec<u8>, signature: &[u8]) -> Result<Self, CapsuleError> {
        Ok(Parts::detached(&component, signature)?.with(component))
    }

    /// The component file, exactly as read.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// SHA-256 of the component without its signature section, as computed from the bytes.
    pub fn module_digest(&self) -> [u8; 32] {
        self.module_digest
    }

    /// SHA-256 of the component file as read (with its section, if embedded).
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

    /// Embedded or detached.
    pub fn placement(&self) -> Placement {
        self.placement
    }
}

fn check_size(size: usize) -> Result<(), CapsuleError> {
    if size > MAX_CAPSULE_BYTES {
        return Err(CapsuleError::TooLarge {
            size,
            limit: MAX_CAPSULE_BYTES,
        });
    }
    Ok(())
}

fn decode_signatures(content: &[u8]) -> Result<cose::Signed, CapsuleError> {
    if content.len() > MAX_SIGNATURE_SECTION_BYTES {
        return Err(CapsuleError::BadSignatureSection(format!(
            "{} bytes is over the {MAX_SIGNATURE_SECTION_BYTES}-byte limit",
            content.len()
        )));
    }
    cose::decode(
        content,
        MANIFEST_CONTENT_TYPE,
        SIGNATURE_CONTEXT,
        MAX_SIGNATURES,
    )
    .map_err(CapsuleError::BadSignatureSection)
}

/// The module part of `component`, refusing one that is already signed.
fn unsigned_module(component: &[u8]) -> Result<&[u8], CapsuleError> {
    check_size(component.len())?;
    if wasm::Layout::parse(component)?.signature.is_some() {
        return Err(CapsuleError::SignedComponent);
    }
    Ok(component)
}

fn first_signature(
    module: &[u8],
    source: &ManifestSource,
    key: &SecretKey,
    now: Timestamp,
) -> Result<Vec<u8>, CapsuleError> {
    let manifest = source.to_manifest(Sha256::digest(module).into(), now)?;
    cose::sign(
        manifest.to_cbor()?,
        MANIFEST_CONTENT_TYPE,
        SIGNATURE_CONTEXT,
        None,
        key,
    )
    .map_err(CapsuleError::BadSignatureSection)
}

/// Checks a signed manifest before `key` co-signs it: it names `module`, it
/// has not expired at `now`, and every existing signature is Ed25519 by one
/// of `signers` and verifies strictly (a signature that cannot be checked,
/// or does not verify, refuses: the manifest may have been altered after it
/// was signed, and a co-signature would vouch for the alteration).
fn add_signature(
    module: &[u8],
    existing: &[u8],
    key: &SecretKey,
    signers: &[PublicKey],
    now: Timestamp,
) -> Result<Vec<u8>, CapsuleError> {
    let signed = decode_signatures(existing)?;
    let manifest = Manifest::from_cbor(&signed.payload)?;
    let label = format!("{} {}", manifest.name, manifest.version);
    let actual: [u8; 32] = Sha256::digest(module).into();
    if manifest.module_sha256 != actual {
        return Err(CapsuleError::ManifestMismatch(format!(
            "the signed manifest of {label} names module {} but the module is {}",
            hex::encode(manifest.module_sha256),
            hex::encode(actual)
        )));
    }
    if now >= manifest.expires {
        return Err(CapsuleError::ManifestExpired {
            capsule: label,
            expires: manifest.expires,
            now,
        });
    }
    if signed.entries.iter().any(|e| e.key_id == key.id()) {
        return Err(CapsuleError::AlreadySigned(key.id().short()));
    }
    for (index, entry) in signed.entries.iter().enumerate() {
        let refuse = |detail: String| CapsuleError::ExistingSignature {
            capsule: label.clone(),
            detail: format!("signature {index} (key {}) {detail}", entry.key_id.short()),
        };
        if !entry.is_ed25519() {
            return Err(refuse(format!(
                "uses COSE algorithm {}, not EdDSA",
                entry.algorithm
            )));
        }
        let Some(signer) = signers.iter().find(|k| k.id() == entry.key_id) else {
            return Err(refuse(
                "is by a key not given to check it against; give the trust store or that signer's public key"
                    .into(),
            ));
        };
        if !signer.verify_strict(&entry.signed_bytes, &entry.signature) {
            return Err(refuse(
                "does not verify: the manifest or signature was altered after signing".into(),
            ));
        }
    }
    cose::sign(
        signed.payload.clone(),
        MANIFEST_CONTENT_TYPE,
        SIGNATURE_CONTEXT,
        Some(&signed),
        key,
    )
    .map_err(CapsuleError::BadSignatureSection)
}

/// The manifest of a signed capsule or detached signature, as signed and not
/// yet trusted: what a co-signer is shown before co-signing.
pub fn signed_manifest(signature: &[u8]) -> Result<Manifest, CapsuleError> {
    Manifest::from_cbor(&decode_signatures(signature)?.payload)
}

/// Signs an unsigned component with `key`, binding it to `source` (the
/// author's `capsule.toml`); `now` fills a missing `not-before`. Returns the
/// component with the signature section appended.
pub fn sign(
    component: &[u8],
    source: &ManifestSource,
    key: &SecretKey,
    now: Timestamp,
) -> Result<Vec<u8>, CapsuleError> {
    let module = unsigned_module(component)?;
    let cose = first_signature(module, source, key, now)?;
    let mut out = module.to_vec();
    wasm::append_custom_section(&mut out, SIGNATURE_SECTION, &cose);
    Ok(out)
}

/// Co-signs a signed capsule: keeps its manifest and signatures, adds `key`'s.
/// Refused unless every existing signature verifies under one of `signers`
/// and the manifest has not expired at `now`.
pub fn cosign(
    capsule: &[u8],
    key: &SecretKey,
    signers: &[PublicKey],
    now: Timestamp,
) -> Result<Vec<u8>, CapsuleError> {
    check_size(capsule.len())?;
    let layout = wasm::Layout::parse(capsule)?;
    let Some(section) = layout.signature else {
        return Err(CapsuleError::Unsigned);
    };
    let module = &capsule[..section.start];
    let cose = add_signature(module, &capsule[section.content.clone()], key, signers, now)?;
    let mut out = module.to_vec();
    wasm::append_custom_section(&mut out, SIGNATURE_SECTION, &cose);
    Ok(out)
}

/// Signs an unsigned component, returning a detached signature file (the
/// COSE_Sign that would otherwise be embedded). The component is unchanged.
pub fn sign_detached(
    component: &[u8],
    source: &ManifestSource,
    key: &SecretKey,
    now: Timestamp,
) -> Result<Vec<u8>, CapsuleError> {
    first_signature(unsigned_module(component)?, source, key, now)
}

/// Adds `key`'s signature to a detached signature file for `component`, on
/// the same conditions as [`cosign`].
pub fn cosign_detached(
    component: &[u8],
    signature: &[u8],
    key: &SecretKey,
    signers: &[PublicKey],
    now: Timestamp,
) -> Result<Vec<u8>, CapsuleError> {
    check_size(component.len())?;
    if wasm::Layout::parse(component)?.signature.is_some() {
        return Err(CapsuleError::EmbeddedSignatures);
    }
    add_signature(component, signature, key, signers, now)
}

/// The signature section's content of a signed capsule (its COSE_Sign), or `None` if unsigned.
pub fn embedded_signature(bytes: &[u8]) -> Result<Option<&[u8]>, CapsuleError> {
    let layout = wasm::Layout::parse(bytes)?;
    Ok(layout.signature.map(|s| &bytes[s.content]))
}

/// The unsigned component inside a signed capsule (everything before the signature section).
pub fn strip_signatures(bytes: &[u8]) -> Result<&[u8], CapsuleError> {
    let layout = wasm::Layout::parse(bytes)?;
    Ok(layout.signature.map_or(bytes, |s| &bytes[..s.start]))
}

#[cfg(test)]
mod tests;
