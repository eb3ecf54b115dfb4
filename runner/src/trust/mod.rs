//! Trust decisions: which signatures count, and the only way to a [`VerifiedCapsule`].
//!
//! A [`TrustRoot`] names the publishers a site trusts (key, organisation,
//! kinds they may sign) and, per capsule kind, how many distinct keys *and*
//! distinct organisations must have signed. [`verify`] applies it to a
//! [`CheckedCapsule`] in a fixed order — signature algorithm, `verify_strict`
//! on every signature from a known key, distinct-key and distinct-organisation
//! thresholds counted only over signers allowed the capsule's kind, then the
//! module digest — and only on success builds a `VerifiedCapsule`, whose
//! fields are private to this module. This module never runs code and never
//! writes evidence; callers record its decisions.

mod root;

pub use root::{Publisher, Threshold, TrustRoot};

use std::collections::BTreeSet;
use std::fmt;

use coset::iana;

use crate::capsule::{CapsuleError, CheckedCapsule, Manifest};
use crate::keys::KeyId;

/// Why a capsule is refused, or a trust root could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// The file is not a well-formed signed capsule.
    #[error(transparent)]
    Capsule(#[from] CapsuleError),
    /// The trust root file is unusable.
    #[error("trust root {path}: {detail}")]
    TrustRoot {
        /// Where it was read from.
        path: String,
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// A signature uses an algorithm other than Ed25519.
    #[error(
        "capsule `{capsule}`: signature {index} uses COSE algorithm {algorithm}; only Ed25519 (-19) and EdDSA (-8) are accepted"
    )]
    UnsupportedAlgorithm {
        /// Capsule name and version.
        capsule: String,
        /// Which signature.
        index: usize,
        /// The algorithm it claims.
        algorithm: i64,
    },
    /// A signature from a trusted key does not verify: the capsule was altered or the signature forged.
    #[error(
        "capsule `{capsule}`: the signature by `{publisher}` (key {key}) does not verify; the manifest or signature was altered after signing"
    )]
    BadSignature {
        /// Capsule name and version.
        capsule: String,
        /// The publisher the key belongs to.
        publisher: String,
        /// The key's short id.
        key: String,
    },
    /// Not enough distinct keys or organisations, allowed this kind, signed.
    #[error("{0}")]
    ThresholdNotMet(Box<Shortfall>),
    /// The module bytes are not the ones the manifest was signed for.
    #[error(
        "capsule `{capsule}`: module digest is {actual} but the signed manifest names {claimed}; the module was altered after signing"
    )]
    ModuleDigestMismatch {
        /// Capsule name and version.
        capsule: String,
        /// Digest in the signed manifest.
        claimed: String,
        /// Digest of the bytes present.
        actual: String,
    },
}

/// How far a capsule's signatures fall short of its kind's threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// Capsule name and version.
    pub capsule: String,
    /// The capsule's kind.
    pub kind: String,
    /// Distinct counted keys.
    pub have_keys: usize,
    /// Distinct counted organisations.
    pub have_orgs: usize,
    /// Keys required.
    pub need_keys: u32,
    /// Organisations required.
    pub need_orgs: u32,
    /// The counted signers, by name, or "none".
    pub have: String,
    /// Signatures that did not count, and why.
    pub ignored: Vec<String>,
    /// The trust root's name.
    pub root: String,
    /// The trust root's version.
    pub root_version: u64,
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "capsule `{}` is signed by {} key(s) from {} organisation(s) allowed kind `{}`, which requires {} key(s) from {} organisation(s) (have: {}; ",
            self.capsule,
            self.have_keys,
            self.have_orgs,
            self.kind,
            self.need_keys,
            self.need_orgs,
            self.have
        )?;
        if !self.ignored.is_empty() {
            write!(f, "not counted: {}; ", self.ignored.join(", "))?;
        }
        write!(f, "trust root `{}` v{})", self.root, self.root_version)
    }
}

/// One signer that counted toward a capsule's threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountedSigner {
    /// Publisher name from the trust root.
    pub publisher: String,
    /// Its organisation.
    pub organisation: String,
    /// Its key id.
    pub key_id: KeyId,
}

/// A capsule whose signatures met the trust root's policy for its kind and
/// whose module matches its signed manifest. Only [`verify`] constructs one;
/// the sandbox accepts nothing else.
#[derive(Debug, Clone)]
pub struct VerifiedCapsule {
    checked: CheckedCapsule,
    signers: Vec<CountedSigner>,
    root_name: String,
    root_version: u64,
    root_digest: [u8; 32],
}

impl VerifiedCapsule {
    /// The signed manifest.
    pub fn manifest(&self) -> &Manifest {
        self.checked.manifest()
    }

    /// The exact bytes that were verified; the sandbox compiles these.
    pub fn bytes(&self) -> &[u8] {
        self.checked.bytes()
    }

    /// SHA-256 of the module (the file without its signature section).
    pub fn module_digest(&self) -> [u8; 32] {
        self.checked.module_digest()
    }

    /// SHA-256 of the whole signed file.
    pub fn file_digest(&self) -> [u8; 32] {
        self.checked.file_digest()
    }

    /// The signers that counted.
    pub fn signers(&self) -> &[CountedSigner] {
        &self.signers
    }

    /// Name, version and SHA-256 of the trust root that accepted it.
    pub fn trust_root(&self) -> (&str, u64, [u8; 32]) {
        (&self.root_name, self.root_version, self.root_digest)
    }
}

struct Label<'a>(&'a Manifest);

impl fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0.name, self.0.version)
    }
}

/// Applies `root` to `capsule`. On success the capsule may run.
pub fn verify(capsule: CheckedCapsule, root: &TrustRoot) -> Result<VerifiedCapsule, TrustError> {
    let manifest = capsule.manifest();
    let label = Label(manifest).to_string();
    let kind = manifest.kind;

    let mut counted: Vec<CountedSigner> = Vec::new();
    let mut ignored: Vec<String> = Vec::new();
    let mut seen_keys = BTreeSet::new();
    for (index, entry) in capsule.signatures().iter().enumerate() {
        if entry.algorithm != iana::Algorithm::Ed25519 as i64
            && entry.algorithm != iana::Algorithm::EdDSA as i64
        {
            return Err(TrustError::UnsupportedAlgorithm {
                capsule: label,
                index,
                algorithm: entry.algorithm,
            });
        }
        let Some(publisher) = root.publisher_by_key(&entry.key_id) else {
            ignored.push(format!("unknown key {}", entry.key_id.short()));
            continue;
        };
        if !publisher
            .key
            .verify_strict(&entry.signed_bytes, &entry.signature)
        {
            return Err(TrustError::BadSignature {
                capsule: label,
                publisher: publisher.name.clone(),
                key: entry.key_id.short(),
            });
        }
        if !seen_keys.insert(entry.key_id) {
            ignored.push(format!("`{}` signed twice (counted once)", publisher.name));
            continue;
        }
        if !publisher.kinds.contains(&kind) {
            ignored.push(format!("`{}` may not sign kind `{kind}`", publisher.name));
            continue;
        }
        counted.push(CountedSigner {
            publisher: publisher.name.clone(),
            organisation: publisher.organisation.clone(),
            key_id: entry.key_id,
        });
    }

    let threshold = root.threshold(kind);
    let orgs: BTreeSet<&str> = counted.iter().map(|s| s.organisation.as_str()).collect();
    if counted.len() < threshold.keys as usize || orgs.len() < threshold.organisations as usize {
        let have = if counted.is_empty() {
            "none".to_string()
        } else {
            counted
                .iter()
                .map(|s| format!("{} ({})", s.publisher, s.organisation))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(TrustError::ThresholdNotMet(Box::new(Shortfall {
            capsule: label,
            kind: kind.to_string(),
            have_keys: counted.len(),
            have_orgs: orgs.len(),
            need_keys: threshold.keys,
            need_orgs: threshold.organisations,
            have,
            ignored,
            root: root.name.clone(),
            root_version: root.version,
        })));
    }

    if manifest.module_sha256 != capsule.module_digest() {
        return Err(TrustError::ModuleDigestMismatch {
            capsule: label,
            claimed: hex::encode(manifest.module_sha256),
            actual: hex::encode(capsule.module_digest()),
        });
    }

    Ok(VerifiedCapsule {
        checked: capsule,
        signers: counted,
        root_name: root.name.clone(),
        root_version: root.version,
        root_digest: root.digest,
    })
}
