//! The trust store: a directory of signed trust root versions
//! `1.root.cose`, `2.root.cose`, … and the rules that chain them (TUF's).
//!
//! Version 1 is the anchor the site installed; it must be signed by its own
//! root threshold. Each later version N+1 must be signed by the root
//! threshold of N *and* by its own, carry the same name and exactly version
//! N+1. Only the newest version is used, and only while it has not expired;
//! there is no switch that skips expiry. This is the only place that builds
//! a [`TrustRoot`], and [`install`] is the only way a version is added.

use std::fs;
use std::path::{Path, PathBuf};

use super::root::{MAX_TRUST_ROOT_BYTES, RootPolicy, RootSignatures, SignedRoot};
use super::{TrustError, TrustRoot};
use crate::fsio;
use crate::timestamp::Timestamp;

/// File name suffix of a signed trust root version.
pub const ROOT_FILE_SUFFIX: &str = ".root.cose";

/// Most versions a trust store may hold.
pub const MAX_VERSIONS: u64 = 10_000;

/// The file name of version `version`.
pub fn root_file_name(version: u64) -> String {
    format!("{version}{ROOT_FILE_SUFFIX}")
}

/// One version of a chain, checked.
#[derive(Debug, Clone)]
pub struct ChainLink {
    /// Where it was read from.
    pub origin: String,
    /// Its version.
    pub version: u64,
    /// SHA-256 of its policy text.
    pub digest: [u8; 32],
    /// Its expiry (ignored for every version but the newest).
    pub expires: Timestamp,
    /// Root keys of the previous version that signed it (`None` for version 1).
    pub by_previous: Option<RootSignatures>,
    /// Its own root keys that signed it.
    pub by_self: RootSignatures,
}

/// A trust store's anchor: version 1, installed by hand, from which every
/// later version descends. The evidence records it, and a runner refuses a
/// store with another anchor (`docs/capsule-format.md` §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// SHA-256 of version 1's policy text.
    pub sha256: [u8; 32],
    /// Key ids of version 1's root keys, sorted.
    pub root_keys: Vec<[u8; 32]>,
}

impl Anchor {
    fn of(policy: &RootPolicy) -> Self {
        let mut root_keys: Vec<[u8; 32]> = policy.root_keys.iter().map(|k| k.key.id().0).collect();
        root_keys.sort_unstable();
        Self {
            sha256: policy.digest,
            root_keys,
        }
    }
}

/// A chain of trust root versions whose signatures all check out; expiry not yet judged.
#[derive(Debug, Clone)]
pub struct Chain {
    links: Vec<ChainLink>,
    latest: RootPolicy,
    anchor: Anchor,
}

impl Chain {
    /// Reads every `N.root.cose` in `dir` and checks the chain.
    pub fn read_dir(dir: &Path) -> Result<Self, TrustError> {
        let err = |detail: String| TrustError::TrustRoot {
            path: dir.display().to_string(),
            detail,
        };
        let entries = fs::read_dir(dir).map_err(|e| {
            err(format!(
                "{e}; a trust store is a directory holding 1.root.cose (create it with `edge-runner trust init`)"
            ))
        })?;
        let mut versions = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| err(e.to_string()))?;
            let name = entry.file_name();
            let Some(number) = name.to_str().and_then(|n| n.strip_suffix(ROOT_FILE_SUFFIX)) else {
                continue;
            };
            let version = number
                .parse::<u64>()
                .ok()
                .filter(|v| *v >= 1 && v.to_string() == number)
                .ok_or_else(|| {
                    err(format!(
                        "`{}` is not named N.root.cose with N a version from 1; rename or remove it",
                        name.to_string_lossy()
                    ))
                })?;
            versions.push(version);
        }
        versions.sort_unstable();
        if versions.is_empty() {
            return Err(err(
                "no 1.root.cose here; create the trust store with `edge-runner trust init`".into(),
            ));
        }
        if versions.len() as u64 > MAX_VERSIONS {
            return Err(err(format!("more than {MAX_VERSIONS} versions")));
        }
        for (expected, found) in (1u64..).zip(&versions) {
            if *found != expected {
                return Err(err(format!(
                    "{} is missing (found {}); versions must run 1, 2, 3, … without gaps",
                    root_file_name(expected),
                    root_file_name(*found)
                )));
            }
        }
        let files = versions
            .iter()
            .map(|v| {
                let path: PathBuf = dir.join(root_file_name(*v));
                read_root_file(&path).map(|bytes| (path.display().to_string(), bytes))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_files(files)
    }

    /// Checks a chain given as `(origin, bytes)` for versions 1, 2, … in order.
    pub fn from_files(files: Vec<(String, Vec<u8>)>) -> Result<Self, TrustError> {
        let mut links: Vec<ChainLink> = Vec::new();
        let mut current: Option<RootPolicy> = None;
        let mut anchor: Option<Anchor> = None;
        for (index, (origin, bytes)) in files.into_iter().enumerate() {
            let signed = SignedRoot::parse(&bytes, &origin)?;
            let expected = index as u64 + 1;
            let policy = &signed.policy;
            if policy.version != expected {
                return Err(TrustError::TrustRoot {
                    path: origin,
                    detail: format!(
                        "holds version {} where version {expected} belongs; a file's name and its `version` must agree",
                        policy.version
                    ),
                });
            }
            let by_previous = match &current {
                None => None,
                Some(previous) => Some(check_successor(previous, &signed, &origin)?),
            };
            let by_self = signed.signatures_by(policy, &origin)?;
            if !by_self.met() {
                return Err(TrustError::RootNotSigned(Box::new(RootShortfall {
                    origin,
                    version: policy.version,
                    judged_by: policy.version,
                    signatures: by_self,
                })));
            }
            if anchor.is_none() {
                anchor = Some(Anchor::of(policy));
            }
            links.push(ChainLink {
                origin,
                version: policy.version,
                digest: policy.digest,
                expires: policy.expires,
                by_previous,
                by_self,
            });
            current = Some(signed.policy);
        }
        let (Some(latest), Some(anchor)) = (current, anchor) else {
            return Err(TrustError::TrustRoot {
                path: "trust store".into(),
                detail: "no versions given".into(),
            });
        };
        Ok(Self {
            links,
            latest,
            anchor,
        })
    }

    /// Each version, oldest first.
    pub fn links(&self) -> &[ChainLink] {
        &self.links
    }

    /// The newest version's policy.
    pub fn latest(&self) -> &RootPolicy {
        &self.latest
    }

    /// Version 1, the anchor every version descends from.
    pub fn anchor(&self) -> &Anchor {
        &self.anchor
    }

    /// The newest version as the trust root to use at `now`, refused if it has expired.
    pub fn trust(self, now: Timestamp) -> Result<TrustRoot, TrustError> {
        let policy = self.latest;
        if now >= policy.expires {
            return Err(TrustError::TrustRootExpired {
                name: policy.name.clone(),
                version: policy.version,
                expired: policy.expires.to_string(),
            });
        }
        Ok(TrustRoot {
            policy,
            anchor: self.anchor,
        })
    }
}

/// Checks that `next` may follow `current`: same name, version + 1, the same
/// `development` marker, and signed by `current`'s root threshold. Returns those signatures.
pub fn check_successor(
    current: &RootPolicy,
    next: &SignedRoot,
    origin: &str,
) -> Result<RootSignatures, TrustError> {
    let policy = &next.policy;
    if policy.name != current.name {
        return Err(TrustError::TrustRoot {
            path: origin.to_string(),
            detail: format!(
                "is named `{}` but version {} is named `{}`; a trust root keeps its name across versions",
                policy.name, current.version, current.name
            ),
        });
    }
    if policy.version != current.version + 1 {
        return Err(TrustError::TrustRoot {
            path: origin.to_string(),
            detail: format!(
                "is version {} but the current version is {}; the next version must be {}",
                policy.version,
                current.version,
                current.version + 1
            ),
        });
    }
    if policy.development != current.development {
        return Err(TrustError::TrustRoot {
            path: origin.to_string(),
            detail: format!(
                "sets `development = {}` but version {} sets `development = {}`; a development root (`edge-runner capsule dev-setup`) stays one in every version: make a production trust store with `edge-runner trust init` instead",
                policy.development, current.version, current.development
            ),
        });
    }
    let by_previous = next.signatures_by(current, origin)?;
    if !by_previous.met() {
        return Err(TrustError::RootNotSigned(Box::new(RootShortfall {
            origin: origin.to_string(),
            version: policy.version,
            judged_by: current.version,
            signatures: by_previous,
        })));
    }
    Ok(by_previous)
}

/// Installs `signed`, the signed bytes of a trust root version, as the next
/// version of the store in `dir`, once it is shown to extend the chain:
/// version 1 only into an empty (or new) directory and signed by its own root
/// threshold; version N+1 with the same name, signed by the root thresholds of
/// N and of itself. A version that has expired at `now` is refused, and no
/// file is ever replaced. The file is written atomically and the whole store is
/// read back before the new version's link is returned.
pub fn install(dir: &Path, signed: &[u8], now: Timestamp) -> Result<ChainLink, TrustError> {
    let err = |path: &Path, detail: String| TrustError::TrustRoot {
        path: path.display().to_string(),
        detail,
    };
    let new = SignedRoot::parse(signed, "new trust root")?;
    let version = new.policy.version;
    let path = dir.join(root_file_name(version));
    let origin = path.display().to_string();
    if now >= new.policy.expires {
        return Err(err(
            &path,
            format!(
                "`expires` ({}) is in the past; nothing would run under it. Set a future `expires`",
                new.policy.expires
            ),
        ));
    }
    if version == 1 {
        if dir.read_dir().is_ok_and(|mut d| d.next().is_some()) {
            return Err(err(
                dir,
                "is not empty; version 1 starts a new trust store in an empty directory".into(),
            ));
        }
        // Version 1 must stand on its own: signed by its own root threshold.
        Chain::from_files(vec![(origin, signed.to_vec())])?;
        fs::create_dir_all(dir).map_err(|e| err(dir, e.to_string()))?;
    } else {
        let chain = Chain::read_dir(dir)?;
        check_successor(chain.latest(), &new, &origin)?;
        let by_self = new.signatures_by(&new.policy, &origin)?;
        if !by_self.met() {
            return Err(TrustError::RootNotSigned(Box::new(RootShortfall {
                origin,
                version,
                judged_by: version,
                signatures: by_self,
            })));
        }
    }
    if path.exists() {
        return Err(err(
            &path,
            "already exists; versions are never replaced".into(),
        ));
    }
    fsio::write_atomically(&path, signed).map_err(|e| err(&path, e.to_string()))?;
    // Prove the store as a whole still loads before reporting success.
    let chain = Chain::read_dir(dir)?;
    chain
        .links()
        .last()
        .filter(|link| link.version == version)
        .cloned()
        .ok_or_else(|| {
            err(
                dir,
                format!("version {version} was written but is not the newest"),
            )
        })
}

/// Loads the trust store in `dir` and returns its newest version, if valid at `now`.
pub fn load(dir: &Path, now: Timestamp) -> Result<TrustRoot, TrustError> {
    Chain::read_dir(dir)?.trust(now)
}

/// How a trust root version falls short of a root threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootShortfall {
    /// The file.
    pub origin: String,
    /// Its version.
    pub version: u64,
    /// The version whose root keys and threshold were applied.
    pub judged_by: u64,
    /// What was found.
    pub signatures: RootSignatures,
}

impl std::fmt::Display for RootShortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.signatures;
        let whose = if self.judged_by == self.version {
            format!("its own root keys (v{})", self.version)
        } else {
            format!(
                "the root keys of the version it replaces (v{})",
                self.judged_by
            )
        };
        write!(
            f,
            "trust root {} (v{}) is signed by {} of {}, which requires {} (have: {}; can still sign: {}); collect signatures with `edge-runner trust sign`",
            self.origin,
            self.version,
            s.signed_by.len(),
            whose,
            s.needed,
            if s.signed_by.is_empty() {
                "none".to_string()
            } else {
                s.signed_by.join(", ")
            },
            if s.missing.is_empty() {
                "none".to_string()
            } else {
                s.missing.join(", ")
            }
        )
    }
}

/// Reads a trust root file, at most [`MAX_TRUST_ROOT_BYTES`].
pub fn read_root_file(path: &Path) -> Result<Vec<u8>, TrustError> {
    fsio::read_bounded(path, MAX_TRUST_ROOT_BYTES as u64, "trust root").map_err(|e| {
        TrustError::TrustRoot {
            path: path.display().to_string(),
            detail: e.problem(),
        }
    })
}
