//! The signed governance bundle and the governance store beside the trust
//! store (docs/governance.md §6).
//!
//! A bundle is a COSE_Sign (as trust roots are) whose payload is a
//! deterministic CBOR map of the source files: `governance.toml`, the
//! catalog files it names and the Cedar tier policy. It is signed by a
//! threshold of the administrators the trust root's `[governance]` table
//! names. Versions are installed as `<trust store>/governance/N.governance.cose`,
//! each exactly one above the last; only the newest is used, and never once
//! it has expired. This is the only place that builds a [`Governance`].

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use ciborium::Value;
use sha2::{Digest, Sha256};

use super::settings::{Person, Settings, TierRule};
use super::{Decision, GovernanceError, Rules, Target, Tier, TierInputs};
use crate::cose;
use crate::keys::SecretKey;
use crate::rollback::HighWater;
use crate::timestamp::Timestamp;
use crate::trust::RootPolicy;

/// Largest signed governance bundle read, in bytes.
pub const MAX_BUNDLE_BYTES: usize = 32 * 1024 * 1024;
/// Most signatures one bundle may carry.
pub const MAX_BUNDLE_SIGNATURES: usize = 32;
/// Largest `governance.toml` read, in bytes.
pub const MAX_SETTINGS_BYTES: u64 = 4 * 1024 * 1024;
/// COSE content type of a bundle's payload.
pub const GOVERNANCE_CONTENT_TYPE: &str = "application/vnd.edge-runner.governance+cbor";
/// External AAD bound into every bundle signature.
pub const GOVERNANCE_CONTEXT: &[u8] = b"edge-runner/governance/v1";
/// Directory inside the trust store that holds governance versions.
pub const GOVERNANCE_DIR: &str = "governance";
/// File name suffix of an installed governance version.
pub const GOVERNANCE_FILE_SUFFIX: &str = ".governance.cose";

/// The file name of version `version`.
pub fn governance_file_name(version: u64) -> String {
    format!("{version}{GOVERNANCE_FILE_SUFFIX}")
}

/// A bundle's source files, as signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// `governance.toml`.
    pub governance: String,
    /// Catalog files `(name, text)` in the order `governance.toml` lists them.
    pub catalog: Vec<(String, String)>,
    /// The Cedar tier policy.
    pub policy: String,
}

/// Reads `governance.toml` in `dir` and the files it names.
pub fn read_sources(dir: &Path) -> Result<Sources, GovernanceError> {
    let read = |name: &str, limit: u64| {
        crate::fsio::read_bounded_text(&dir.join(name), limit, name).map_err(|e| {
            GovernanceError::Bundle {
                origin: dir.join(name).display().to_string(),
                detail: e.problem(),
            }
        })
    };
    let governance = read("governance.toml", MAX_SETTINGS_BYTES)?;
    let settings = Settings::parse(
        &governance,
        &dir.join("governance.toml").display().to_string(),
    )?;
    let catalog = settings
        .catalog
        .iter()
        .map(|name| read(name, super::catalog::MAX_CATALOG_BYTES as u64).map(|t| (name.clone(), t)))
        .collect::<Result<Vec<_>, _>>()?;
    let policy = read(&settings.policy, super::policy::MAX_POLICY_BYTES as u64)?;
    Ok(Sources {
        governance,
        catalog,
        policy,
    })
}

impl Sources {
    /// The payload: `{"format": 1, "governance": text, "catalog": [[name, text], ...], "policy": text}`.
    pub fn to_payload(&self) -> Result<Vec<u8>, GovernanceError> {
        let value = crate::cbor::text_map([
            (
                "catalog",
                Value::Array(
                    self.catalog
                        .iter()
                        .map(|(n, t)| {
                            Value::Array(vec![Value::Text(n.clone()), Value::Text(t.clone())])
                        })
                        .collect(),
                ),
            ),
            ("format", Value::Integer(1.into())),
            ("governance", Value::Text(self.governance.clone())),
            ("policy", Value::Text(self.policy.clone())),
        ]);
        crate::cbor::encode(&value).map_err(|e| GovernanceError::Bundle {
            origin: "payload".into(),
            detail: e.to_string(),
        })
    }

    /// Reads a payload back (deterministic CBOR, exactly the four keys).
    pub fn from_payload(bytes: &[u8], origin: &str) -> Result<Self, GovernanceError> {
        let err = |detail: String| GovernanceError::Bundle {
            origin: origin.to_string(),
            detail,
        };
        let value = crate::cbor::decode_canonical(bytes).map_err(|e| err(e.to_string()))?;
        let map = crate::cbor::MapReader::new("governance payload", &value).map_err(err)?;
        map.only(&["catalog", "format", "governance", "policy"])
            .map_err(err)?;
        if map.uint("format").map_err(err)? != 1 {
            return Err(err(
                "payload format is not 1; this runner reads format 1".into()
            ));
        }
        let Some(Value::Array(files)) = map.get("catalog") else {
            return Err(err("payload `catalog` is not an array".into()));
        };
        let mut catalog = Vec::new();
        for f in files {
            match f {
                Value::Array(pair) => match pair.as_slice() {
                    [Value::Text(n), Value::Text(t)] => catalog.push((n.clone(), t.clone())),
                    _ => return Err(err("a payload catalog entry is not [name, text]".into())),
                },
                _ => return Err(err("a payload catalog entry is not [name, text]".into())),
            }
        }
        Ok(Self {
            governance: map.text("governance").map_err(err)?.to_string(),
            catalog,
            policy: map.text("policy").map_err(err)?.to_string(),
        })
    }

    /// Checks the sources as a bundle would be checked, without signatures:
    /// for `governance explain --dir` before signing.
    pub fn check(&self) -> Result<Draft, GovernanceError> {
        let rules = Rules::build(self)?;
        let settings = Settings::parse(&self.governance, "governance.toml")?;
        if settings.catalog.len() != self.catalog.len()
            || settings
                .catalog
                .iter()
                .zip(&self.catalog)
                .any(|(a, (b, _))| a != b)
        {
            return Err(GovernanceError::Bundle {
                origin: "payload".into(),
                detail: "its catalog files are not the ones governance.toml names, in that order"
                    .into(),
            });
        }
        Ok(Draft {
            digest: Sha256::digest(self.to_payload()?).into(),
            rules,
        })
    }
}

/// Unsigned rules, checked for consistency: good for `explain` before
/// signing, never for authorizing.
#[derive(Debug)]
pub struct Draft {
    rules: Rules,
    digest: [u8; 32],
}

impl Draft {
    /// Derives the tier as the signed bundle would.
    pub fn derive(&self, inputs: &TierInputs) -> Decision {
        self.rules
            .derive(inputs, self.rules.settings.version, self.digest)
    }

    /// The version `governance.toml` states.
    pub fn version(&self) -> u64 {
        self.rules.settings.version
    }
}

/// A signed bundle, decoded: its sources and its (unchecked) signatures.
#[derive(Debug, Clone)]
pub struct SignedBundle {
    /// The sources it carries.
    pub sources: Sources,
    signed: cose::Signed,
}

impl SignedBundle {
    /// Decodes a signed bundle strictly; `origin` names it in errors.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Self, GovernanceError> {
        let err = |detail: String| GovernanceError::Bundle {
            origin: origin.to_string(),
            detail,
        };
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(err(format!(
                "{} bytes is over the {MAX_BUNDLE_BYTES}-byte limit",
                bytes.len()
            )));
        }
        let signed = cose::decode(
            bytes,
            GOVERNANCE_CONTENT_TYPE,
            GOVERNANCE_CONTEXT,
            MAX_BUNDLE_SIGNATURES,
        )
        .map_err(|e| {
            err(format!(
                "not a signed governance bundle ({e}); make one with `edge-runner governance sign`"
            ))
        })?;
        let sources = Sources::from_payload(&signed.payload, origin)?;
        Ok(Self { sources, signed })
    }

    /// Signs `sources` with `key` as a new bundle.
    pub fn sign_new(sources: &Sources, key: &SecretKey) -> Result<Vec<u8>, GovernanceError> {
        cose::sign(
            sources.to_payload()?,
            GOVERNANCE_CONTENT_TYPE,
            GOVERNANCE_CONTEXT,
            None,
            key,
        )
        .map_err(|detail| GovernanceError::Bundle {
            origin: "new bundle".into(),
            detail,
        })
    }

    /// Adds `key`'s signature, keeping the others.
    pub fn add_signature(&self, key: &SecretKey) -> Result<Vec<u8>, GovernanceError> {
        if self.signed.entries.iter().any(|s| s.key_id == key.id()) {
            return Err(GovernanceError::Bundle {
                origin: "bundle".into(),
                detail: format!("key {} has already signed it", key.id().short()),
            });
        }
        cose::sign(
            self.signed.payload.clone(),
            GOVERNANCE_CONTENT_TYPE,
            GOVERNANCE_CONTEXT,
            Some(&self.signed),
            key,
        )
        .map_err(|detail| GovernanceError::Bundle {
            origin: "bundle".into(),
            detail,
        })
    }

    /// SHA-256 of the signed payload: the bundle's identity, whoever signed it.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(&self.signed.payload).into()
    }

    /// Names of the distinct administrators of `root` whose signatures
    /// verify, and those who have not signed. A non-Ed25519 signature, or a
    /// signature by an administrator that does not verify, refuses the bundle.
    pub fn signatures_by(
        &self,
        root: &RootPolicy,
        origin: &str,
    ) -> Result<(Vec<String>, Vec<String>, u32), GovernanceError> {
        let admins = root
            .governance
            .as_ref()
            .ok_or_else(|| GovernanceError::NoAdministrators {
                root: root.name.clone(),
                version: root.version,
            })?;
        let mut seen = BTreeSet::new();
        let mut signed_by = Vec::new();
        for (index, entry) in self.signed.entries.iter().enumerate() {
            if !entry.is_ed25519() {
                return Err(GovernanceError::Bundle {
                    origin: origin.to_string(),
                    detail: format!(
                        "signature {index} uses COSE algorithm {}; governance signatures must be EdDSA (-8) or Ed25519 (-19). Re-sign without it",
                        entry.algorithm
                    ),
                });
            }
            let Some(admin) = admins.admin(&entry.key_id) else {
                continue;
            };
            if !admin
                .key
                .verify_strict(&entry.signed_bytes, &entry.signature)
            {
                return Err(GovernanceError::Bundle {
                    origin: origin.to_string(),
                    detail: format!(
                        "signature {index} by administrator `{}` does not verify; the bundle was altered after signing",
                        admin.name
                    ),
                });
            }
            if seen.insert(entry.key_id) {
                signed_by.push(admin.name.clone());
            }
        }
        let missing = admins
            .admins
            .iter()
            .filter(|a| !seen.contains(&a.key.id()))
            .map(|a| a.name.clone())
            .collect();
        Ok((signed_by, missing, admins.threshold))
    }
}

/// A governance bundle whose administrator signatures, consistency and
/// expiry were checked. Only [`Governance::from_signed`] builds one.
#[derive(Debug)]
pub struct Governance {
    rules: Rules,
    bytes: Vec<u8>,
    digest: [u8; 32],
    signed_by: Vec<String>,
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

impl Governance {
    /// Verifies a signed bundle against the trust root's `[governance]`
    /// administrators and, when `now` is given, its expiry. The offline
    /// verifier passes `None` to judge a bundle as of the records it covers.
    pub fn from_signed(
        bytes: &[u8],
        root: &RootPolicy,
        now: Option<Timestamp>,
    ) -> Result<Governance, GovernanceError> {
        Self::from_signed_at(bytes, root, now, "governance bundle")
    }

    fn from_signed_at(
        bytes: &[u8],
        root: &RootPolicy,
        now: Option<Timestamp>,
        origin: &str,
    ) -> Result<Governance, GovernanceError> {
        let signed = SignedBundle::parse(bytes, origin)?;
        let settings = Settings::parse(&signed.sources.governance, origin)?;
        let (signed_by, missing, needed) = signed.signatures_by(root, origin)?;
        if signed_by.len() < needed as usize {
            return Err(GovernanceError::NotSigned {
                name: settings.name.clone(),
                version: settings.version,
                root: root.name.clone(),
                have: signed_by.len(),
                needed,
                signed_by: list(&signed_by),
                missing: list(&missing),
            });
        }
        if let Some(now) = now
            && now >= settings.expires
        {
            return Err(GovernanceError::Expired {
                name: settings.name.clone(),
                version: settings.version,
                expired: settings.expires.to_string(),
            });
        }
        let rules = signed.sources.check()?.rules;
        Ok(Governance {
            rules,
            bytes: bytes.to_vec(),
            digest: signed.digest(),
            signed_by,
        })
    }

    /// Its name, the same in every version.
    pub fn name(&self) -> &str {
        &self.rules.settings.name
    }

    /// Its version.
    pub fn version(&self) -> u64 {
        self.rules.settings.version
    }

    /// When it expires.
    pub fn expires(&self) -> Timestamp {
        self.rules.settings.expires
    }

    /// SHA-256 of the signed payload (the same whoever signed).
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// SHA-256 of the system graph's canonical form.
    pub fn graph_digest(&self) -> [u8; 32] {
        self.rules.graph.digest()
    }

    /// The signed bundle, for evidence export.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Administrators whose signatures counted.
    pub fn signed_by(&self) -> &[String] {
        &self.signed_by
    }

    /// Number of catalog entities.
    pub fn entity_count(&self) -> usize {
        self.rules.graph.len()
    }

    /// Cedar policy ids, sorted.
    pub fn policy_ids(&self) -> &[String] {
        self.rules.policy.ids()
    }

    /// The roster.
    pub fn persons(&self) -> &[Person] {
        &self.rules.settings.persons
    }

    /// The roster person named `name`.
    pub fn person(&self, name: &str) -> Option<&Person> {
        self.rules.settings.persons.iter().find(|p| p.name == name)
    }

    /// Nodes in the blast radius of these targets with the test capsules registered for each.
    pub fn radius_tests(&self, targets: &[Target]) -> Vec<(String, Vec<String>)> {
        self.rules.radius_tests(targets)
    }

    /// Derives the tier for a proposal (docs/governance.md §7).
    pub fn derive(&self, inputs: &TierInputs) -> Decision {
        self.rules.derive(inputs, self.version(), self.digest)
    }

    /// How long after a break-glass authorization a quorum must post-review it.
    pub fn break_glass_review_secs(&self) -> u64 {
        self.rules.settings.break_glass_review_secs
    }

    /// The rule for `tier`.
    pub fn rule(&self, tier: Tier) -> &TierRule {
        // Settings::parse refuses a governance.toml without every tier.
        static NONE: TierRule = TierRule {
            approvals: u32::MAX,
            groups: Vec::new(),
            lifetime_secs: 0,
            delay_secs: u64::MAX,
            webhooks: Vec::new(),
        };
        self.rules.settings.tiers.get(&tier).unwrap_or(&NONE)
    }

    /// The `governance-loaded` event to record before anything is tiered,
    /// approved or applied under this version (docs/governance.md §10).
    pub fn loaded_event(&self) -> crate::evidence::events::GovernanceLoaded {
        crate::evidence::events::GovernanceLoaded {
            name: self.name().to_string(),
            version: self.version(),
            sha256: self.digest,
            graph_sha256: self.graph_digest(),
            signed_by: self.signed_by.clone(),
        }
    }

    /// Refuses this governance when the evidence shows a newer version was
    /// used, or this version with other content (rollback protection).
    pub fn check_high_water(&self, marks: &HighWater) -> Result<(), GovernanceError> {
        marks
            .check_governance(self.name(), self.version(), &self.digest)
            .map_err(|e| match e {
                crate::rollback::RollbackError::GovernanceOlder {
                    name,
                    version,
                    seen,
                } => GovernanceError::Rollback {
                    name,
                    version,
                    seen,
                    how: "used (per this runner's evidence log)".into(),
                },
                other => GovernanceError::Bundle {
                    origin: self.name().to_string(),
                    detail: format!("rollback: {other}; {}", other.fix()),
                },
            })
    }

    /// The rules, for the tier benchmark.
    #[doc(hidden)]
    pub fn bench_policy(&self) -> &super::policy::TierPolicy {
        &self.rules.policy
    }
}

/// The governance directory of the trust store in `store`.
pub fn governance_dir(store: &Path) -> PathBuf {
    store.join(GOVERNANCE_DIR)
}

/// The newest governance version installed beside the trust store in
/// `store`, unjudged (0 when none is): the version an update must follow.
pub fn installed_version(store: &Path) -> Result<u64, GovernanceError> {
    Ok(versions(&governance_dir(store))?
        .last()
        .copied()
        .unwrap_or(0))
}

fn versions(dir: &Path) -> Result<Vec<u64>, GovernanceError> {
    let err = |detail: String| GovernanceError::Bundle {
        origin: dir.display().to_string(),
        detail,
    };
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err(e.to_string())),
    };
    let mut versions = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| err(e.to_string()))?;
        let name = entry.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|n| n.strip_suffix(GOVERNANCE_FILE_SUFFIX))
        else {
            continue;
        };
        let version = number
            .parse::<u64>()
            .ok()
            .filter(|v| *v >= 1 && v.to_string() == number)
            .ok_or_else(|| {
                err(format!(
                    "`{}` is not named N{GOVERNANCE_FILE_SUFFIX} with N a version from 1; rename or remove it",
                    name.to_string_lossy()
                ))
            })?;
        versions.push(version);
    }
    versions.sort_unstable();
    Ok(versions)
}

fn read_version(dir: &Path, version: u64) -> Result<(String, Vec<u8>), GovernanceError> {
    let path = dir.join(governance_file_name(version));
    let bytes = crate::fsio::read_bounded(&path, MAX_BUNDLE_BYTES as u64, "governance bundle")
        .map_err(|e| GovernanceError::Bundle {
            origin: path.display().to_string(),
            detail: e.problem(),
        })?;
    Ok((path.display().to_string(), bytes))
}

/// Loads the newest governance installed beside the trust store in `store`,
/// verified against `root` and valid at `now`; `None` when none is installed.
pub fn load_installed(
    store: &Path,
    root: &RootPolicy,
    now: Timestamp,
) -> Result<Option<Governance>, GovernanceError> {
    let dir = governance_dir(store);
    let Some(&latest) = versions(&dir)?.last() else {
        return Ok(None);
    };
    let (origin, bytes) = read_version(&dir, latest)?;
    let gov = Governance::from_signed_at(&bytes, root, Some(now), &origin)?;
    if gov.version() != latest {
        return Err(GovernanceError::Bundle {
            origin,
            detail: format!(
                "holds version {} where version {latest} belongs; a file's name and its `version` must agree",
                gov.version()
            ),
        });
    }
    Ok(Some(gov))
}

/// Installs a signed bundle as the next governance version beside the trust
/// store in `store`: verified against `root` and unexpired at `now`; the
/// first version into an empty directory, every later one exactly one above
/// the newest installed and under the same name. No file is ever replaced.
pub fn install(
    store: &Path,
    signed: &[u8],
    root: &RootPolicy,
    now: Timestamp,
) -> Result<Governance, GovernanceError> {
    let dir = governance_dir(store);
    let gov = Governance::from_signed_at(signed, root, Some(now), "new governance bundle")?;
    let existing = versions(&dir)?;
    if let Some(&latest) = existing.last() {
        let (origin, bytes) = read_version(&dir, latest)?;
        let installed = SignedBundle::parse(&bytes, &origin)?;
        let installed = Settings::parse(&installed.sources.governance, &origin)?;
        if gov.version() <= latest {
            return Err(GovernanceError::Rollback {
                name: gov.name().to_string(),
                version: gov.version(),
                seen: latest,
                how: "installed".into(),
            });
        }
        if gov.version() != latest + 1 {
            return Err(GovernanceError::Bundle {
                origin: "new governance bundle".into(),
                detail: format!(
                    "is version {} but the installed version is {latest}; the next version must be {}",
                    gov.version(),
                    latest + 1
                ),
            });
        }
        if installed.name != gov.name() {
            return Err(GovernanceError::Bundle {
                origin: "new governance bundle".into(),
                detail: format!(
                    "is named `{}` but v{latest} is named `{}`; governance keeps its name across versions",
                    gov.name(),
                    installed.name
                ),
            });
        }
    }
    let path = dir.join(governance_file_name(gov.version()));
    let err = |detail: String| GovernanceError::Bundle {
        origin: path.display().to_string(),
        detail,
    };
    fs::create_dir_all(&dir).map_err(|e| err(e.to_string()))?;
    if path.exists() {
        return Err(err("already exists; versions are never replaced".into()));
    }
    crate::fsio::write_atomically(&path, signed).map_err(|e| err(e.to_string()))?;
    load_installed(store, root, now)?
        .filter(|g| g.version() == gov.version())
        .ok_or_else(|| err("was written but is not the newest version".into()))
}
