//! The trust root file (`trust-root.toml`): publishers and per-kind thresholds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::TrustError;
use crate::capsule::Kind;
use crate::keys::{KeyId, PublicKey};

/// Largest trust root file read.
const MAX_TRUST_ROOT_BYTES: u64 = 1024 * 1024;

/// How many signatures a kind needs: distinct keys and distinct organisations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// Distinct publisher keys, at least 1.
    pub keys: u32,
    /// Distinct organisations among those keys, at least 1 and at most `keys`.
    pub organisations: u32,
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
    /// Its Ed25519 key.
    pub key: PublicKey,
}

/// The site's trust policy for capsules.
#[derive(Debug, Clone)]
pub struct TrustRoot {
    /// Human name, shown in every refusal.
    pub name: String,
    /// Version; shown in refusals and recorded in evidence.
    pub version: u64,
    /// True for the built-in demo root: the CLI warns loudly when it is used.
    pub demo: bool,
    /// SHA-256 of the file as read.
    pub digest: [u8; 32],
    thresholds: BTreeMap<Kind, Threshold>,
    publishers: Vec<Publisher>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RootFile {
    format: u64,
    name: String,
    version: u64,
    #[serde(default)]
    demo: bool,
    thresholds: BTreeMap<Kind, Threshold>,
    #[serde(default, rename = "publisher")]
    publishers: Vec<PublisherFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PublisherFile {
    name: String,
    organisation: String,
    kinds: Vec<Kind>,
    public_key: String,
}

impl TrustRoot {
    /// Reads and validates a trust root file.
    pub fn load(path: &Path) -> Result<Self, TrustError> {
        let err = |detail: String| TrustError::TrustRoot {
            path: path.display().to_string(),
            detail,
        };
        let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
        if meta.len() > MAX_TRUST_ROOT_BYTES {
            return Err(err(format!(
                "{} bytes is over the {MAX_TRUST_ROOT_BYTES}-byte limit",
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses trust root text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, TrustError> {
        let err = |detail: String| TrustError::TrustRoot {
            path: origin.to_string(),
            detail,
        };
        let file: RootFile = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        if file.format != 1 {
            return Err(err(format!(
                "format {} is not supported; this runner reads format 1",
                file.format
            )));
        }
        for kind in Kind::ALL {
            let Some(t) = file.thresholds.get(&kind) else {
                return Err(err(format!(
                    "no threshold for kind `{kind}`; add `[thresholds.{kind}]` with `keys` and `organisations`"
                )));
            };
            if t.keys == 0 || t.organisations == 0 || t.organisations > t.keys {
                return Err(err(format!(
                    "threshold for `{kind}` must have keys >= organisations >= 1 (got keys = {}, organisations = {})",
                    t.keys, t.organisations
                )));
            }
        }
        let mut publishers = Vec::new();
        let mut names = BTreeSet::new();
        let mut keys = BTreeSet::new();
        for p in file.publishers {
            let key = PublicKey::from_pem(&p.public_key, Path::new(origin))
                .map_err(|e| err(format!("publisher `{}`: {e}", p.name)))?;
            if !names.insert(p.name.clone()) {
                return Err(err(format!("publisher `{}` is listed twice", p.name)));
            }
            if !keys.insert(key.id()) {
                return Err(err(format!(
                    "publisher `{}` reuses another publisher's key; each key belongs to one publisher",
                    p.name
                )));
            }
            if p.organisation.trim().is_empty() {
                return Err(err(format!(
                    "publisher `{}` has an empty organisation",
                    p.name
                )));
            }
            publishers.push(Publisher {
                name: p.name,
                organisation: p.organisation,
                kinds: p.kinds.into_iter().collect(),
                key,
            });
        }
        Ok(Self {
            name: file.name,
            version: file.version,
            demo: file.demo,
            digest: Sha256::digest(text.as_bytes()).into(),
            thresholds: file.thresholds,
            publishers,
        })
    }

    /// The publisher owning `key`, if any.
    pub fn publisher_by_key(&self, key: &KeyId) -> Option<&Publisher> {
        self.publishers.iter().find(|p| p.key.id() == *key)
    }

    /// The threshold for `kind` (always present after parsing).
    pub fn threshold(&self, kind: Kind) -> Threshold {
        self.thresholds.get(&kind).copied().unwrap_or(Threshold {
            keys: u32::MAX,
            organisations: u32::MAX,
        })
    }

    /// All publishers.
    pub fn publishers(&self) -> &[Publisher] {
        &self.publishers
    }
}
