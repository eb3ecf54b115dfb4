//! Trust decisions: which signatures count, and the only way to a [`VerifiedCapsule`].
//!
//! A [`TrustRoot`] is a signed, unexpired policy ([`RootPolicy`]) loaded by
//! [`store`], which checks the TUF-style chain of versions (each signed by
//! the root keys of the previous version and its own). It names the
//! publishers a site trusts (key, organisation, kinds, audiences, capability
//! ceiling), per-kind thresholds over distinct keys *and* organisations, and
//! revoked keys and capsules. [`verify`] applies it to a [`CheckedCapsule`]
//! in the fixed order of `docs/capsule-format.md` and only on success builds
//! a `VerifiedCapsule`, whose fields are private to this module. This module
//! never runs code and never writes evidence; callers record its decisions.

mod root;
pub mod store;

pub use root::{
    Ceiling, Dispatcher, GovernanceAdmins, MAX_ROOT_SIGNATURES, MAX_TRUST_ROOT_BYTES, NamePattern,
    Publisher, Revocation, RootKey, RootPolicy, RootSignatures, SignedRoot,
    TRUST_ROOT_CONTENT_TYPE, TRUST_ROOT_CONTEXT, TRUST_ROOT_FORMAT, Threshold,
};
pub use store::{Anchor, Chain, ChainLink, RootShortfall};

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Deref;

use crate::capsule::{CapsuleError, CheckedCapsule, Manifest, Placement};
use crate::keys::KeyId;
pub use crate::rollback::{HighWater, RollbackError};
use crate::timestamp::Timestamp;

/// Why a capsule is refused, or a trust root could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// The file is not a well-formed signed capsule.
    #[error(transparent)]
    Capsule(#[from] CapsuleError),
    /// A trust root file or store is unusable.
    #[error("trust root {path}: {detail}")]
    TrustRoot {
        /// Where it was read from.
        path: String,
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// A trust root version lacks the root signatures it needs.
    #[error("{0}")]
    RootNotSigned(Box<RootShortfall>),
    /// The newest trust root has expired.
    #[error(
        "trust root `{name}` v{version} expired at {expired}; nothing runs under an expired root. Sign a new version with `edge-runner trust rotate`"
    )]
    TrustRootExpired {
        /// Its name.
        name: String,
        /// Its version.
        version: u64,
        /// When it expired (RFC 3339).
        expired: String,
    },
    /// The capsule or its trust root is older than one this runner already
    /// accepted, or reuses an accepted version for other code.
    #[error("rollback: {0} (per this runner's evidence log); {fix}", fix = .0.fix())]
    Rollback(#[from] RollbackError),
    /// A signature uses an algorithm other than Ed25519.
    #[error(
        "capsule `{capsule}`: signature {index} uses COSE algorithm {algorithm}; only EdDSA (-8) and Ed25519 (-19) are accepted"
    )]
    UnsupportedAlgorithm {
        /// Capsule name and version.
        capsule: String,
        /// Which signature.
        index: usize,
        /// The algorithm it claims.
        algorithm: i64,
    },
    /// The capsule carries a signature by a revoked key.
    #[error(
        "capsule `{capsule}` is signed by revoked key {key} (revoked by trust root v{root_version}: {reason}); a capsule carrying a revoked key's signature never runs. Re-sign it without that key"
    )]
    KeyRevoked {
        /// Capsule name and version.
        capsule: String,
        /// The key's short id.
        key: String,
        /// Why it was revoked.
        reason: String,
        /// The trust root version.
        root_version: u64,
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
    /// Not enough distinct valid keys or organisations signed.
    #[error("{0}")]
    ThresholdNotMet(Box<Shortfall>),
    /// Enough signed, but not enough of them may sign this kind.
    #[error("publisher not allowed this kind: {0}")]
    KindNotAllowed(Box<Shortfall>),
    /// Enough signed, but not enough of them are delegated the capsule's name.
    #[error("publisher not delegated this name: {0}")]
    NameNotDelegated(Box<Shortfall>),
    /// Enough signed, but not enough of them vouch for what the capsule asks.
    #[error("capsule asks beyond what its signers may vouch for (ceiling or audience): {0}")]
    CeilingExceeded(Box<Shortfall>),
    /// The capsule's validity has not begun.
    #[error(
        "capsule `{capsule}` is not valid before {not_before} (now {now}); check this machine's clock, or wait"
    )]
    NotYetValid {
        /// Capsule name and version.
        capsule: String,
        /// Its `not-before` (RFC 3339).
        not_before: String,
        /// The time used (RFC 3339).
        now: String,
    },
    /// The capsule's validity has ended.
    #[error(
        "capsule `{capsule}` expired at {expired} (now {now}); ask its publisher to re-sign it with a new `expires`"
    )]
    Expired {
        /// Capsule name and version.
        capsule: String,
        /// Its `expires` (RFC 3339).
        expired: String,
        /// The time used (RFC 3339).
        now: String,
    },
    /// The capsule is not meant for this site.
    #[error(
        "capsule `{capsule}` is for sites [{audience}], not this site `{site}`; it must be signed with this site in its `audience`"
    )]
    WrongAudience {
        /// Capsule name and version.
        capsule: String,
        /// This site.
        site: String,
        /// Its audience.
        audience: String,
    },
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
    /// The module is revoked by the trust root.
    #[error(
        "capsule `{capsule}` (module {digest}) is revoked by trust root v{root_version}: {reason}"
    )]
    CapsuleRevoked {
        /// Capsule name and version.
        capsule: String,
        /// Module digest (hex).
        digest: String,
        /// Why.
        reason: String,
        /// The trust root version.
        root_version: u64,
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
            "capsule `{}` is signed by {} key(s) from {} organisation(s) that count for kind `{}`, which requires {} key(s) from {} organisation(s) (have: {}; ",
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

/// A trust root policy whose signature chain was checked and which had not
/// expired when loaded. Only [`store`] builds one.
#[derive(Debug, Clone)]
pub struct TrustRoot {
    policy: RootPolicy,
    anchor: store::Anchor,
}

impl TrustRoot {
    /// Version 1 of the store it came from: the anchor the evidence pins.
    pub fn anchor(&self) -> &store::Anchor {
        &self.anchor
    }
}

impl Deref for TrustRoot {
    type Target = RootPolicy;

    fn deref(&self) -> &RootPolicy {
        &self.policy
    }
}

/// Everything a verification depends on besides the capsule.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The trust root.
    pub root: &'a TrustRoot,
    /// This site's name; the capsule's audience must include it.
    pub site: &'a str,
    /// The time to judge validity at (normally [`Timestamp::now`]).
    pub now: Timestamp,
    /// What this runner accepted before.
    pub high_water: &'a HighWater,
}

/// A capsule whose signatures met the trust root's policy for its kind,
/// within its signers' ceilings, valid now, for this site, not a rollback,
/// and whose module matches its signed manifest. Only [`verify`] constructs
/// one; the sandbox accepts nothing else.
///
/// ```compile_fail
/// # fn forge(checked: edge_runner::capsule::CheckedCapsule) {
/// let capsule = edge_runner::trust::VerifiedCapsule {
///     checked,
///     signers: Vec::new(),
///     root_name: String::new(),
///     root_version: 1,
///     root_digest: [0; 32],
///     site: String::new(),
/// };
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct VerifiedCapsule {
    checked: CheckedCapsule,
    signers: Vec<CountedSigner>,
    root_name: String,
    root_version: u64,
    root_digest: [u8; 32],
    root_development: bool,
    root_anchor: store::Anchor,
    site: String,
}

impl VerifiedCapsule {
    /// Version 1 of the trust store that accepted it (recorded, then pinned).
    pub fn trust_anchor(&self) -> &store::Anchor {
        &self.root_anchor
    }

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

    /// SHA-256 of the component file as read.
    pub fn file_digest(&self) -> [u8; 32] {
        self.checked.file_digest()
    }

    /// Embedded or detached signatures.
    pub fn placement(&self) -> Placement {
        self.checked.placement()
    }

    /// The signers that counted.
    pub fn signers(&self) -> &[CountedSigner] {
        &self.signers
    }

    /// Name, version and SHA-256 of the trust root that accepted it.
    pub fn trust_root(&self) -> (&str, u64, [u8; 32]) {
        (&self.root_name, self.root_version, self.root_digest)
    }

    /// Whether the trust root that accepted it is a development root
    /// (`development = true`, made by `edge-runner capsule dev-setup`).
    pub fn under_development_root(&self) -> bool {
        self.root_development
    }

    /// The site it was accepted for.
    pub fn site(&self) -> &str {
        &self.site
    }
}

struct Label<'a>(&'a Manifest);

impl fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0.name, self.0.version)
    }
}

/// Signers still counting, and why the others stopped counting.
struct Tally<'r> {
    counted: Vec<(&'r Publisher, KeyId)>,
    ignored: Vec<String>,
}

impl Tally<'_> {
    fn shortfall(&self, manifest: &Manifest, root: &TrustRoot) -> Option<Box<Shortfall>> {
        let threshold = root.threshold(manifest.kind);
        let orgs: BTreeSet<&str> = self
            .counted
            .iter()
            .map(|(p, _)| p.organisation.as_str())
            .collect();
        if self.counted.len() >= threshold.keys as usize
            && orgs.len() >= threshold.organisations as usize
        {
            return None;
        }
        let have = if self.counted.is_empty() {
            "none".to_string()
        } else {
            self.counted
                .iter()
                .map(|(p, _)| {
                    format!(
                        "{} ({})",
                        crate::names::shown(&p.name),
                        crate::names::shown(&p.organisation)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        Some(Box::new(Shortfall {
            capsule: Label(manifest).to_string(),
            kind: manifest.kind.to_string(),
            have_keys: self.counted.len(),
            have_orgs: orgs.len(),
            need_keys: threshold.keys,
            need_orgs: threshold.organisations,
            have,
            ignored: self.ignored.clone(),
            root: root.name.clone(),
            root_version: root.version,
        }))
    }

    /// Drops signers for which `reason` gives a reason.
    fn drop_where(&mut self, reason: impl Fn(&Publisher) -> Option<String>) {
        let mut kept = Vec::new();
        for (publisher, key) in self.counted.drain(..) {
            match reason(publisher) {
                Some(why) => self.ignored.push(why),
                None => kept.push((publisher, key)),
            }
        }
        self.counted = kept;
    }
}

/// Applies the trust root, in the documented order, to `capsule`. On success the capsule may run.
///
/// Order (`docs/capsule-format.md` §5): trust root not rolled back and its anchor pinned;
/// signatures (algorithm, revoked keys, `verify_strict`); distinct key and
/// organisation threshold; kind allowed for each counted signer; capsule
/// name delegated to each counted signer;
/// capabilities and audience within each counted signer's ceiling; validity
/// times; audience includes this site; version not below the high-water
/// mark; module digest; module not revoked.
pub fn verify(capsule: CheckedCapsule, ctx: &Context<'_>) -> Result<VerifiedCapsule, TrustError> {
    let root = ctx.root;
    let manifest = capsule.manifest();
    let label = Label(manifest).to_string();

    ctx.high_water.check_root(&root.name, root.version)?;
    let anchor = root.anchor();
    ctx.high_water.check_anchor(
        &root.name,
        root.version,
        &root.digest,
        Some((&anchor.sha256, &anchor.root_keys)),
    )?;

    let mut tally = Tally {
        counted: Vec::new(),
        ignored: Vec::new(),
    };
    let mut seen_keys = BTreeSet::new();
    for (index, entry) in capsule.signatures().iter().enumerate() {
        if !entry.is_ed25519() {
            return Err(TrustError::UnsupportedAlgorithm {
                capsule: label,
                index,
                algorithm: entry.algorithm,
            });
        }
        if let Some(revoked) = root.key_revocation(&entry.key_id) {
            return Err(TrustError::KeyRevoked {
                capsule: label,
                key: entry.key_id.short(),
                reason: revoked.reason.clone(),
                root_version: root.version,
            });
        }
        let Some(publisher) = root.publisher_by_key(&entry.key_id) else {
            tally
                .ignored
                .push(format!("unknown key {}", entry.key_id.short()));
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
            tally
                .ignored
                .push(format!("`{}` signed twice (counted once)", publisher.name));
            continue;
        }
        tally.counted.push((publisher, entry.key_id));
    }
    if let Some(short) = tally.shortfall(manifest, root) {
        return Err(TrustError::ThresholdNotMet(short));
    }

    let kind = manifest.kind;
    tally.drop_where(|p| {
        (!p.kinds.contains(&kind)).then(|| format!("`{}` may not sign kind `{kind}`", p.name))
    });
    if let Some(short) = tally.shortfall(manifest, root) {
        return Err(TrustError::KindNotAllowed(short));
    }

    // Names are delegated (as TUF delegates paths): a signature on a name
    // outside its publisher's `names` does not count, so no publisher can
    // sign, and raise the rollback mark of, another publisher's capsule.
    let name = manifest.name.as_str();
    tally.drop_where(|p| {
        (!p.may_sign_name(name))
            .then(|| format!("`{}` is not delegated capsule name `{name}`", p.name))
    });
    if let Some(short) = tally.shortfall(manifest, root) {
        return Err(TrustError::NameNotDelegated(short));
    }

    tally.drop_where(|p| {
        if let Some(excess) = p.ceiling.excess(manifest) {
            return Some(format!("`{}`'s ceiling does not cover {excess}", p.name));
        }
        p.audience_excess(manifest).map(|site| {
            let allowed = p.audiences.join(", ");
            if site == crate::capsule::ANY_SITE {
                format!(
                    "`{}` may sign only for sites {allowed}, but the manifest's `audience` is [\"*\"] (every site); list the sites in `audience`",
                    p.name
                )
            } else {
                format!(
                    "`{}` may sign only for sites {allowed}, but the manifest's `audience` names `{site}`",
                    p.name
                )
            }
        })
    });
    if let Some(short) = tally.shortfall(manifest, root) {
        return Err(TrustError::CeilingExceeded(short));
    }

    if ctx.now < manifest.not_before {
        return Err(TrustError::NotYetValid {
            capsule: label,
            not_before: manifest.not_before.to_string(),
            now: ctx.now.to_string(),
        });
    }
    if ctx.now >= manifest.expires {
        return Err(TrustError::Expired {
            capsule: label,
            expired: manifest.expires.to_string(),
            now: ctx.now.to_string(),
        });
    }
    if !manifest.allows_site(ctx.site) {
        return Err(TrustError::WrongAudience {
            capsule: label,
            site: ctx.site.to_string(),
            audience: manifest.audience.join(", "),
        });
    }

    ctx.high_water
        .check_capsule(&manifest.name, &manifest.version, &manifest.module_sha256)?;

    if manifest.module_sha256 != capsule.module_digest() {
        return Err(TrustError::ModuleDigestMismatch {
            capsule: label,
            claimed: hex::encode(manifest.module_sha256),
            actual: hex::encode(capsule.module_digest()),
        });
    }
    if let Some(revoked) = root.capsule_revocation(&capsule.module_digest()) {
        return Err(TrustError::CapsuleRevoked {
            capsule: label,
            digest: hex::encode(capsule.module_digest()),
            reason: revoked.reason.clone(),
            root_version: root.version,
        });
    }

    let signers = tally
        .counted
        .iter()
        .map(|(p, key_id)| CountedSigner {
            publisher: p.name.clone(),
            organisation: p.organisation.clone(),
            key_id: *key_id,
        })
        .collect();
    Ok(VerifiedCapsule {
        checked: capsule,
        signers,
        root_name: root.name.clone(),
        root_version: root.version,
        root_digest: root.digest,
        root_development: root.development,
        root_anchor: root.anchor.clone(),
        site: ctx.site.to_string(),
    })
}
