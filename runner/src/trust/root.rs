//! The trust root: its policy (TOML, written by the compliance team) and
//! the signed file that carries it (`N.root.cose`, a COSE_Sign by root keys).
//!
//! A [`RootPolicy`] is only text that parsed; a [`super::TrustRoot`] is a
//! policy whose signature chain and expiry were checked by [`super::store`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::TrustError;
use crate::capsule::{
    ANY_SITE, DestinationPattern, FileAccess, FileAccessSource, Kind, Manifest, ResourceLimits,
    validate_config_key, validate_name, validate_site,
};
use crate::cose::{self, SignatureEntry};
use crate::keys::{KeyId, PublicKey, SecretKey};
use crate::timestamp::Timestamp;

/// Largest signed trust root file read.
pub const MAX_TRUST_ROOT_BYTES: usize = 1024 * 1024;

/// Most signatures one trust root file may carry.
pub const MAX_ROOT_SIGNATURES: usize = 32;

/// COSE content type of a trust root's payload (the policy TOML, UTF-8).
pub const TRUST_ROOT_CONTENT_TYPE: &str = "application/vnd.edge-runner.trust-root+toml";

/// External AAD bound into every trust root signature.
pub const TRUST_ROOT_CONTEXT: &[u8] = b"edge-runner/trust-root/v1";

/// The trust root policy format this runner reads.
pub const TRUST_ROOT_FORMAT: u64 = 1;

/// How many signatures a kind needs: distinct keys and distinct organisations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// Distinct publisher keys, at least 1.
    pub keys: u32,
    /// Distinct organisations among those keys, at least 1 and at most `keys`.
    pub organisations: u32,
}

/// The most a publisher's signature can vouch for. A capsule's request
/// outside any counted signer's ceiling does not count that signer.
/// Lists default to empty (nothing); limits default to unbounded here
/// (the runner's own `Limits` still apply).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ceiling {
    /// Paths a capsule may ask for: at or beneath one of these, with at most this access.
    pub files: Vec<FileAccess>,
    /// Destinations a capsule may ask for.
    pub egress: Vec<DestinationPattern>,
    /// Config keys a capsule may ask for; `*` allows any.
    pub config: Vec<String>,
    /// The largest limits a capsule may ask for; a limit set here must be stated.
    pub limits: ResourceLimits,
}

impl Ceiling {
    /// The first thing `manifest` asks for beyond this ceiling, in words.
    pub fn excess(&self, manifest: &Manifest) -> Option<String> {
        let caps = &manifest.capabilities;
        for f in &caps.files {
            let covered = self
                .files
                .iter()
                .any(|c| f.path.is_within(&c.path) && f.access <= c.access);
            if !covered {
                return Some(format!("file {f}"));
            }
        }
        for d in &caps.egress {
            if !self.egress.iter().any(|p| p.covers(d)) {
                return Some(format!("egress {d}"));
            }
        }
        for k in &caps.config {
            if !self.config.iter().any(|c| c == "*" || c == k) {
                return Some(format!("config key {k}"));
            }
        }
        self.limits.excess(&manifest.limits)
    }
}

/// A pattern of capsule names a publisher is delegated (as TUF delegates
/// paths): one name, every name starting with a prefix (`acme-*`), or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamePattern {
    /// Every capsule name.
    Any,
    /// Names that start with this prefix (written `PREFIX*`).
    Prefix(String),
    /// Exactly this name.
    Exact(String),
}

impl NamePattern {
    /// Parses `*`, `PREFIX*` or a capsule name (§4 of the format spec).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(NamePattern::Any);
        }
        let bad = || {
            format!(
                "name pattern `{}` is invalid: use a capsule name, a prefix of lowercase letters, digits and `-` followed by `*` (`acme-*`), or `*`",
                text.escape_debug()
            )
        };
        if let Some(prefix) = text.strip_suffix('*') {
            let plain = !prefix.is_empty()
                && prefix.len() < 64
                && !prefix.starts_with('-')
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            return if plain {
                Ok(NamePattern::Prefix(prefix.to_string()))
            } else {
                Err(bad())
            };
        }
        validate_name(text).map_err(|_| bad())?;
        Ok(NamePattern::Exact(text.to_string()))
    }

    /// Whether capsule `name` is covered.
    pub fn covers(&self, name: &str) -> bool {
        match self {
            NamePattern::Any => true,
            NamePattern::Prefix(prefix) => name.starts_with(prefix.as_str()),
            NamePattern::Exact(exact) => name == exact,
        }
    }
}

impl std::fmt::Display for NamePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NamePattern::Any => f.write_str("*"),
            NamePattern::Prefix(prefix) => write!(f, "{prefix}*"),
            NamePattern::Exact(name) => f.write_str(name),
        }
    }
}

/// A publisher the site trusts.
#[derive(Debug, Clone)]
pub struct Publisher {
    /// Unique name, e.g. `acme-ci`.
    pub name: String,
    /// The organisation it belongs to; thresholds count distinct organisations.
    pub organisation: String,
    /// Kinds it may sign.
    pub kinds: BTreeSet<Kind>,
    /// Capsule names it may sign; its signature on any other name does not count.
    pub names: Vec<NamePattern>,
    /// Sites its capsules may target; `*` allows an audience of every site.
    pub audiences: Vec<String>,
    /// The most its signature vouches for.
    pub ceiling: Ceiling,
    /// Its Ed25519 key.
    pub key: PublicKey,
}

impl Publisher {
    /// Whether this publisher is delegated capsule name `name`.
    pub fn may_sign_name(&self, name: &str) -> bool {
        self.names.iter().any(|p| p.covers(name))
    }

    /// The first audience entry of `manifest` this publisher may not target.
    pub fn audience_excess<'m>(&self, manifest: &'m Manifest) -> Option<&'m str> {
        if self.audiences.iter().any(|a| a == ANY_SITE) {
            return None;
        }
        manifest
            .audience
            .iter()
            .find(|a| !self.audiences.contains(a))
            .map(String::as_str)
    }
}

/// A key allowed to sign trust roots.
#[derive(Debug, Clone)]
pub struct RootKey {
    /// Who holds it, e.g. `ciso-2026`.
    pub name: String,
    /// The key.
    pub key: PublicKey,
}

/// A key the site accepts fleet job requests from (docs/fleet.md §3): it may
/// ask the named sites to run capsules of the named kinds, nothing more. The
/// capsule itself is still verified against the publishers as always.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    /// Unique name, e.g. `fleet-ops`.
    pub name: String,
    /// Its Ed25519 key.
    pub key: PublicKey,
    /// Sites it may dispatch to; `*` allows every site.
    pub sites: Vec<String>,
    /// Kinds of capsule it may dispatch.
    pub kinds: BTreeSet<Kind>,
}

impl Dispatcher {
    /// Whether this dispatcher may send jobs to `site`.
    pub fn may_dispatch_to(&self, site: &str) -> bool {
        self.sites.iter().any(|s| s == ANY_SITE || s == site)
    }
}

/// The optional `[governance]` table: which keys administer the site's
/// governance bundle (docs/governance.md §6) and how many must sign each version.
#[derive(Debug, Clone)]
pub struct GovernanceAdmins {
    /// Distinct administrator keys that must sign a governance version.
    pub threshold: u32,
    /// The administrators.
    pub admins: Vec<RootKey>,
}

impl GovernanceAdmins {
    /// The administrator with key id `key`, if any.
    pub fn admin(&self, key: &KeyId) -> Option<&RootKey> {
        self.admins.iter().find(|k| k.key.id() == *key)
    }
}

/// Something the trust root revokes, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation<T> {
    /// The revoked key id or module digest.
    pub what: T,
    /// Why, for refusals.
    pub reason: String,
}

/// A trust root's content as parsed from its TOML: who may sign what, and
/// who may sign the next version. Parsing checks only well-formedness.
#[derive(Debug, Clone)]
pub struct RootPolicy {
    /// Human name, shown in every refusal; the same in every version.
    pub name: String,
    /// Version, from 1, increasing by one with each rotation.
    pub version: u64,
    /// Not valid from this time on; the runner refuses to use an expired root.
    pub expires: Timestamp,
    /// True for the built-in demo root: the CLI warns loudly when it is used.
    pub demo: bool,
    /// True for a capsule author's local root made by `edge-runner capsule
    /// dev-setup` (`development = true`): every run under it says so, in its
    /// output and in its evidence record, so it is never mistaken for production.
    pub development: bool,
    /// SHA-256 of the policy text (the signed payload); recorded in evidence.
    pub digest: [u8; 32],
    /// Distinct root keys that must sign this version and the next.
    pub root_threshold: u32,
    /// Keys that may sign trust roots.
    pub root_keys: Vec<RootKey>,
    /// Signatures each kind needs.
    pub thresholds: BTreeMap<Kind, Threshold>,
    /// Publishers.
    pub publishers: Vec<Publisher>,
    /// Revoked publisher keys: a capsule carrying their signature is refused.
    pub revoked_keys: Vec<Revocation<KeyId>>,
    /// Revoked capsules, by module digest.
    pub revoked_capsules: Vec<Revocation<[u8; 32]>>,
    /// Who signs the site's governance bundle (`None`: this trust root allows no governance).
    pub governance: Option<GovernanceAdmins>,
    /// Who may send this site fleet job requests (empty: none; roots written
    /// before the fleet have no `[[dispatcher]]` and accept no fleet jobs).
    pub dispatchers: Vec<Dispatcher>,
    /// The policy text.
    pub text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PolicyFile {
    format: u64,
    name: String,
    version: u64,
    expires: Timestamp,
    #[serde(default)]
    demo: bool,
    #[serde(default)]
    development: bool,
    root_threshold: u32,
    #[serde(rename = "root-key")]
    root_keys: Vec<RootKeyFile>,
    thresholds: BTreeMap<Kind, Threshold>,
    #[serde(default, rename = "publisher")]
    publishers: Vec<PublisherFile>,
    #[serde(default, rename = "revoked-key")]
    revoked_keys: Vec<RevokedKeyFile>,
    #[serde(default, rename = "revoked-capsule")]
    revoked_capsules: Vec<RevokedCapsuleFile>,
    governance: Option<GovernanceFile>,
    #[serde(default, rename = "dispatcher")]
    dispatchers: Vec<DispatcherFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct DispatcherFile {
    name: String,
    public_key: String,
    sites: Vec<String>,
    kinds: Vec<Kind>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct GovernanceFile {
    threshold: u32,
    #[serde(rename = "admin")]
    admins: Vec<RootKeyFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RootKeyFile {
    name: String,
    public_key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PublisherFile {
    name: String,
    organisation: String,
    kinds: Vec<Kind>,
    names: Vec<String>,
    audiences: Vec<String>,
    public_key: String,
    #[serde(default)]
    ceiling: CeilingFile,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct CeilingFile {
    #[serde(default)]
    files: Vec<FileAccessSource>,
    #[serde(default)]
    egress: Vec<String>,
    #[serde(default)]
    config: Vec<String>,
    memory_bytes: Option<u64>,
    fuel: Option<u64>,
    wall_time_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RevokedKeyFile {
    key_id: String,
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RevokedCapsuleFile {
    module_sha256: String,
    reason: String,
}

/// Names compare in NFC and as written, so they must be non-empty, at most
/// 128 bytes, without control, invisible or format characters or surrounding
/// spaces ("Acme " and "Acme\u{200B}" are not "Acme"). Returns the NFC form.
fn check_label(text: &str, what: &str) -> Result<String, String> {
    crate::names::normalise(text, what)
}

fn hex32(text: &str, what: &str) -> Result<[u8; 32], String> {
    hex::decode(text)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .filter(|_| text.bytes().all(|b| !b.is_ascii_uppercase()))
        .ok_or_else(|| format!("{what} `{text}` must be 64 lowercase hex digits (a SHA-256)"))
}

impl RootPolicy {
    /// Parses and checks policy text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, TrustError> {
        let err = |detail: String| TrustError::TrustRoot {
            path: origin.to_string(),
            detail,
        };
        let file: PolicyFile = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        Self::from_file(file, text).map_err(err)
    }

    fn from_file(file: PolicyFile, text: &str) -> Result<Self, String> {
        if file.format != TRUST_ROOT_FORMAT {
            return Err(format!(
                "format {} is not supported; this runner reads format {TRUST_ROOT_FORMAT}",
                file.format
            ));
        }
        let name = check_label(&file.name, "`name`")?;
        if file.version == 0 {
            return Err("`version` starts at 1".into());
        }
        for kind in Kind::ALL {
            let Some(t) = file.thresholds.get(&kind) else {
                return Err(format!(
                    "no threshold for kind `{kind}`; add `[thresholds.{kind}]` with `keys` and `organisations`"
                ));
            };
            if t.keys == 0 || t.organisations == 0 || t.organisations > t.keys {
                return Err(format!(
                    "threshold for `{kind}` must have keys >= organisations >= 1 (got keys = {}, organisations = {})",
                    t.keys, t.organisations
                ));
            }
        }

        let mut all_keys = BTreeSet::new();
        let mut root_keys = Vec::new();
        let mut root_names = BTreeSet::new();
        for mut k in file.root_keys {
            k.name = check_label(&k.name, "root key name")?;
            let key = PublicKey::from_pem(&k.public_key, Path::new(&k.name))
                .map_err(|e| format!("root key `{}`: {e}", k.name))?;
            if !root_names.insert(k.name.clone()) {
                return Err(format!("root key `{}` is listed twice", k.name));
            }
            if !all_keys.insert(key.id()) {
                return Err(format!(
                    "root key `{}` repeats another root key; each key is listed once",
                    k.name
                ));
            }
            root_keys.push(RootKey { name: k.name, key });
        }
        if file.root_threshold == 0 || file.root_threshold as usize > root_keys.len() {
            return Err(format!(
                "`root-threshold` is {} but there are {} `[[root-key]]` entries; it must be between 1 and the number of root keys",
                file.root_threshold,
                root_keys.len()
            ));
        }

        let mut publishers = Vec::new();
        let mut names = BTreeSet::new();
        for mut p in file.publishers {
            p.name = check_label(&p.name, "publisher name")?;
            p.organisation = check_label(
                &p.organisation,
                &format!("publisher `{}` organisation", p.name),
            )?;
            if p.kinds.is_empty() {
                return Err(format!(
                    "publisher `{}` has no `kinds`; list the kinds it may sign, or remove it",
                    p.name
                ));
            }
            if p.names.is_empty() {
                return Err(format!(
                    "publisher `{}` has no `names`; list the capsule names it may sign (`[\"disk-check\", \"acme-*\"]`), or [\"*\"] for any",
                    p.name
                ));
            }
            let delegated = p
                .names
                .iter()
                .map(|n| NamePattern::parse(n))
                .collect::<Result<Vec<_>, String>>()
                .map_err(|e| format!("publisher `{}`: {e}", p.name))?;
            let key = PublicKey::from_pem(&p.public_key, Path::new(&p.name))
                .map_err(|e| format!("publisher `{}`: {e}", p.name))?;
            if !names.insert(p.name.clone()) {
                return Err(format!("publisher `{}` is listed twice", p.name));
            }
            if !all_keys.insert(key.id()) {
                return Err(format!(
                    "publisher `{}` reuses a key already listed (as a root key or another publisher's); each key has one role",
                    p.name
                ));
            }
            if p.audiences.is_empty() {
                return Err(format!(
                    "publisher `{}` has no `audiences`; list the sites its capsules may target, or [\"*\"]",
                    p.name
                ));
            }
            for a in p.audiences.iter().filter(|a| *a != ANY_SITE) {
                validate_site(a).map_err(|e| format!("publisher `{}`: {e}", p.name))?;
            }
            let ceiling =
                ceiling(p.ceiling).map_err(|e| format!("publisher `{}` ceiling: {e}", p.name))?;
            publishers.push(Publisher {
                name: p.name,
                organisation: p.organisation,
                kinds: p.kinds.into_iter().collect(),
                names: delegated,
                audiences: p.audiences,
                ceiling,
                key,
            });
        }

        let revoked_keys = file
            .revoked_keys
            .into_iter()
            .map(|r| {
                Ok(Revocation {
                    what: KeyId(hex32(&r.key_id, "revoked key-id")?),
                    reason: r.reason,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        for r in &revoked_keys {
            if let Some(p) = publishers.iter().find(|p| p.key.id() == r.what) {
                return Err(format!(
                    "publisher `{}` uses revoked key {}; remove the publisher or the revocation",
                    p.name,
                    r.what.short()
                ));
            }
            if let Some(k) = root_keys.iter().find(|k| k.key.id() == r.what) {
                return Err(format!(
                    "root key `{}` is also revoked; remove it from `[[root-key]]`",
                    k.name
                ));
            }
        }
        let revoked_capsules = file
            .revoked_capsules
            .into_iter()
            .map(|r| {
                Ok(Revocation {
                    what: hex32(&r.module_sha256, "revoked module-sha256")?,
                    reason: r.reason,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;

        let governance = match file.governance {
            None => None,
            Some(g) => {
                let mut admins: Vec<RootKey> = Vec::new();
                for mut k in g.admins {
                    k.name = check_label(&k.name, "governance admin name")?;
                    let key = PublicKey::from_pem(&k.public_key, Path::new(&k.name))
                        .map_err(|e| format!("governance admin `{}`: {e}", k.name))?;
                    if admins.iter().any(|a| a.name == k.name) {
                        return Err(format!("governance admin `{}` is listed twice", k.name));
                    }
                    if admins.iter().any(|a| a.key.id() == key.id())
                        || publishers.iter().any(|p| p.key.id() == key.id())
                    {
                        return Err(format!(
                            "governance admin `{}` reuses a key already listed (as another admin or a publisher); a publisher must not sign the rules its capsules are judged by",
                            k.name
                        ));
                    }
                    if revoked_keys.iter().any(|r| r.what == key.id()) {
                        return Err(format!("governance admin `{}` uses a revoked key", k.name));
                    }
                    admins.push(RootKey { name: k.name, key });
                }
                if g.threshold == 0 || g.threshold as usize > admins.len() {
                    return Err(format!(
                        "[governance] threshold is {} but there are {} `[[governance.admin]]` entries; it must be between 1 and the number of admins",
                        g.threshold,
                        admins.len()
                    ));
                }
                Some(GovernanceAdmins {
                    threshold: g.threshold,
                    admins,
                })
            }
        };

        let dispatchers = dispatchers(
            file.dispatchers,
            &all_keys,
            &revoked_keys,
            governance.as_ref(),
        )?;

        Ok(Self {
            name,
            version: file.version,
            expires: file.expires,
            demo: file.demo,
            development: file.development,
            digest: Sha256::digest(text.as_bytes()).into(),
            root_threshold: file.root_threshold,
            root_keys,
            thresholds: file.thresholds,
            publishers,
            revoked_keys,
            revoked_capsules,
            governance,
            dispatchers,
            text: text.to_string(),
        })
    }

    /// The publisher owning `key`, if any.
    pub fn publisher_by_key(&self, key: &KeyId) -> Option<&Publisher> {
        self.publishers.iter().find(|p| p.key.id() == *key)
    }

    /// The root key with id `key`, if any.
    pub fn root_key(&self, key: &KeyId) -> Option<&RootKey> {
        self.root_keys.iter().find(|k| k.key.id() == *key)
    }

    /// The threshold for `kind` (always present after parsing).
    pub fn threshold(&self, kind: Kind) -> Threshold {
        self.thresholds.get(&kind).copied().unwrap_or(Threshold {
            keys: u32::MAX,
            organisations: u32::MAX,
        })
    }

    /// The dispatcher owning `key`, if any.
    pub fn dispatcher_by_key(&self, key: &KeyId) -> Option<&Dispatcher> {
        self.dispatchers.iter().find(|d| d.key.id() == *key)
    }

    /// The revocation of `key`, if it is revoked.
    pub fn key_revocation(&self, key: &KeyId) -> Option<&Revocation<KeyId>> {
        self.revoked_keys.iter().find(|r| r.what == *key)
    }

    /// The revocation of a module digest, if it is revoked.
    pub fn capsule_revocation(&self, digest: &[u8; 32]) -> Option<&Revocation<[u8; 32]>> {
        self.revoked_capsules.iter().find(|r| r.what == *digest)
    }
}

/// Checks `[[dispatcher]]` entries: each key has one role (not a root key,
/// publisher, governance admin or another dispatcher, since a dispatcher
/// that could also sign capsules could make a site run what it alone chose),
/// is not revoked, and names at least one site and one kind.
fn dispatchers(
    files: Vec<DispatcherFile>,
    other_keys: &BTreeSet<KeyId>,
    revoked: &[Revocation<KeyId>],
    governance: Option<&GovernanceAdmins>,
) -> Result<Vec<Dispatcher>, String> {
    let mut out: Vec<Dispatcher> = Vec::new();
    for mut d in files {
        d.name = check_label(&d.name, "dispatcher name")?;
        let key = PublicKey::from_pem(&d.public_key, Path::new(&d.name))
            .map_err(|e| format!("dispatcher `{}`: {e}", d.name))?;
        if out.iter().any(|o| o.name == d.name) {
            return Err(format!("dispatcher `{}` is listed twice", d.name));
        }
        let admin = governance.is_some_and(|g| g.admin(&key.id()).is_some());
        if other_keys.contains(&key.id()) || admin || out.iter().any(|o| o.key.id() == key.id()) {
            return Err(format!(
                "dispatcher `{}` reuses a key already listed (as a root key, publisher, governance admin or another dispatcher); give the dispatcher its own key",
                d.name
            ));
        }
        if revoked.iter().any(|r| r.what == key.id()) {
            return Err(format!(
                "dispatcher `{}` uses a revoked key; remove the dispatcher or the revocation",
                d.name
            ));
        }
        if d.sites.is_empty() {
            return Err(format!(
                "dispatcher `{}` has no `sites`; list the sites it may send jobs to (`[\"plant-7\"]`), or [\"*\"] for every site",
                d.name
            ));
        }
        for s in d.sites.iter().filter(|s| *s != ANY_SITE) {
            validate_site(s).map_err(|e| format!("dispatcher `{}`: {e}", d.name))?;
        }
        if d.kinds.is_empty() {
            return Err(format!(
                "dispatcher `{}` has no `kinds`; list the kinds of capsule it may dispatch, or remove it",
                d.name
            ));
        }
        out.push(Dispatcher {
            name: d.name,
            key,
            sites: d.sites,
            kinds: d.kinds.into_iter().collect(),
        });
    }
    Ok(out)
}

fn ceiling(file: CeilingFile) -> Result<Ceiling, String> {
    let files = file
        .files
        .iter()
        .map(FileAccessSource::check)
        .collect::<Result<Vec<_>, String>>()?;
    let egress = file
        .egress
        .iter()
        .map(|p| DestinationPattern::parse(p))
        .collect::<Result<Vec<_>, String>>()?;
    for key in file.config.iter().filter(|k| *k != "*") {
        validate_config_key(key)?;
    }
    Ok(Ceiling {
        files,
        egress,
        config: file.config,
        limits: ResourceLimits {
            memory_bytes: file.memory_bytes,
            fuel: file.fuel,
            wall_time_ms: file.wall_time_ms,
        },
    })
}

/// A signed trust root file, decoded: its policy and its (unchecked) signatures.
#[derive(Debug, Clone)]
pub struct SignedRoot {
    /// The policy it carries.
    pub policy: RootPolicy,
    /// Its signatures, not yet checked.
    pub signatures: Vec<SignatureEntry>,
    signed: cose::Signed,
}

/// Which root keys validly signed a trust root file, judged by one policy's key list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootSignatures {
    /// Names of the distinct root keys whose signatures verify.
    pub signed_by: Vec<String>,
    /// The policy's root threshold.
    pub needed: u32,
    /// Names of that policy's root keys that have not signed.
    pub missing: Vec<String>,
}

impl RootSignatures {
    /// True when enough distinct keys signed.
    pub fn met(&self) -> bool {
        self.signed_by.len() >= self.needed as usize
    }
}

impl SignedRoot {
    /// Decodes a signed trust root file strictly; `origin` names it in errors.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Self, TrustError> {
        let err = |detail: String| TrustError::TrustRoot {
            path: origin.to_string(),
            detail,
        };
        if bytes.len() > MAX_TRUST_ROOT_BYTES {
            return Err(err(format!(
                "{} bytes is over the {MAX_TRUST_ROOT_BYTES}-byte limit",
                bytes.len()
            )));
        }
        let signed = cose::decode(
            bytes,
            TRUST_ROOT_CONTENT_TYPE,
            TRUST_ROOT_CONTEXT,
            MAX_ROOT_SIGNATURES,
        )
        .map_err(|e| {
            err(format!(
                "not a signed trust root ({e}); create one with `edge-runner trust init`"
            ))
        })?;
        let text = std::str::from_utf8(&signed.payload)
            .map_err(|_| err("the signed policy is not UTF-8".into()))?;
        let policy = RootPolicy::parse(text, origin)?;
        Ok(Self {
            policy,
            signatures: signed.entries.clone(),
            signed,
        })
    }

    /// Signs `policy` with `key` as a new file.
    pub fn sign_new(policy: &RootPolicy, key: &SecretKey) -> Result<Vec<u8>, TrustError> {
        cose::sign(
            policy.text.as_bytes().to_vec(),
            TRUST_ROOT_CONTENT_TYPE,
            TRUST_ROOT_CONTEXT,
            None,
            key,
        )
        .map_err(|e| TrustError::TrustRoot {
            path: policy.name.clone(),
            detail: e,
        })
    }

    /// Adds `key`'s signature, keeping the others.
    pub fn add_signature(&self, key: &SecretKey) -> Result<Vec<u8>, TrustError> {
        if self.signatures.iter().any(|s| s.key_id == key.id()) {
            return Err(TrustError::TrustRoot {
                path: format!("{} v{}", self.policy.name, self.policy.version),
                detail: format!("key {} has already signed it", key.id().short()),
            });
        }
        cose::sign(
            self.signed.payload.clone(),
            TRUST_ROOT_CONTENT_TYPE,
            TRUST_ROOT_CONTEXT,
            Some(&self.signed),
            key,
        )
        .map_err(|e| TrustError::TrustRoot {
            path: self.policy.name.clone(),
            detail: e,
        })
    }

    /// Counts distinct root keys of `keys_of` whose signatures on this file
    /// verify. A signature with an algorithm other than Ed25519, by anyone,
    /// or one by those keys that does *not* verify, is an error: the file was
    /// altered (or signed with a forbidden algorithm).
    pub fn signatures_by(
        &self,
        keys_of: &RootPolicy,
        origin: &str,
    ) -> Result<RootSignatures, TrustError> {
        let mut signed_by = Vec::new();
        let mut seen = BTreeSet::new();
        for (index, entry) in self.signatures.iter().enumerate() {
            // A forbidden algorithm refuses the file whoever signed it (§7.1):
            // a verifier must not have to know the key to reject the file.
            if !entry.is_ed25519() {
                return Err(TrustError::TrustRoot {
                    path: origin.to_string(),
                    detail: format!(
                        "signature {index} uses COSE algorithm {}; trust root signatures must be EdDSA (-8) or Ed25519 (-19), whoever signed. Re-sign the trust root without it",
                        entry.algorithm
                    ),
                });
            }
            let Some(root_key) = keys_of.root_key(&entry.key_id) else {
                continue;
            };
            if !root_key
                .key
                .verify_strict(&entry.signed_bytes, &entry.signature)
            {
                return Err(TrustError::TrustRoot {
                    path: origin.to_string(),
                    detail: format!(
                        "signature {index} by root key `{}` does not verify; the file was altered after signing",
                        root_key.name
                    ),
                });
            }
            if seen.insert(entry.key_id) {
                signed_by.push(root_key.name.clone());
            }
        }
        let missing = keys_of
            .root_keys
            .iter()
            .filter(|k| !seen.contains(&k.key.id()))
            .map(|k| k.name.clone())
            .collect();
        Ok(RootSignatures {
            signed_by,
            needed: keys_of.root_threshold,
            missing,
        })
    }
}
