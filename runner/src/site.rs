//! The site policy (`site-policy.toml`): what *this site* lets any capsule
//! have, written by the site's compliance team.
//!
//! A capsule's effective grant is its signed request, already bounded by
//! its signers' ceilings in the trust root, intersected with this policy
//! (see [`crate::sandbox::Grant::compute`]). Without a policy a site grants
//! nothing but compute within the runner's [`crate::sandbox::Limits`]. This
//! module only parses and checks the file; it grants nothing itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::capsule::{
    AbsPath, Access, DestinationPattern, ResourceLimits, validate_config_key, validate_site,
};
use crate::fsio::read_bounded_text;

/// Largest site policy file read.
pub const MAX_SITE_POLICY_BYTES: u64 = 1024 * 1024;

/// The site policy's keys outside any table.
const TOP_LEVEL_KEYS: [&str; 3] = ["egress", "format", "site"];

/// The site policy format this runner reads.
pub const SITE_POLICY_FORMAT: u64 = 1;

/// Why a site policy cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("site policy {origin}: {detail}")]
pub struct SiteError {
    /// Where it was read from.
    pub origin: String,
    /// What is wrong and how to fix it.
    pub detail: String,
}

/// A directory this site lets capsules see: the path capsules name, the
/// host directory behind it, and the most access granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteDirectory {
    /// The path as capsules name it (and see it, in the guest).
    pub path: AbsPath,
    /// The host directory mapped there.
    pub host: PathBuf,
    /// The most access granted beneath it.
    pub access: Access,
}

/// A site's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SitePolicy {
    /// This site's name; capsule audiences name it.
    pub site: String,
    /// The most this site grants any capsule; `None` leaves the runner's ceiling.
    pub limits: ResourceLimits,
    /// Directories that may be granted.
    pub directories: Vec<SiteDirectory>,
    /// Config values capsules may be granted, by key.
    pub config: BTreeMap<String, String>,
    /// Destinations capsules may be granted. Only an exact entry (one host,
    /// one port) can grant a destination that resolves to a loopback,
    /// private or link-local address.
    pub egress: Vec<DestinationPattern>,
    /// Directories (guest paths, each inside a `[[directory]]`) beneath which
    /// the runner itself — never a capsule — may change files when it applies
    /// an authorized proposal. Empty: no file is ever changed.
    pub apply: Vec<AbsPath>,
    /// SHA-256 of the policy file, or `None` for the built-in deny-all policy.
    pub digest: Option<[u8; 32]>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PolicyFile {
    format: u64,
    site: String,
    #[serde(default)]
    limits: ResourceLimits,
    #[serde(default, rename = "directory")]
    directories: Vec<DirectoryFile>,
    #[serde(default)]
    config: BTreeMap<String, String>,
    #[serde(default)]
    egress: Vec<String>,
    #[serde(default)]
    apply: Vec<ApplyFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyFile {
    path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectoryFile {
    path: String,
    host: Option<PathBuf>,
    access: Access,
}

impl SitePolicy {
    /// The policy of a site that wrote none: no directories, no config,
    /// the runner's own limits.
    pub fn deny_all(site: &str) -> Result<Self, SiteError> {
        validate_site(site).map_err(|detail| SiteError {
            origin: "(none: deny-all)".into(),
            detail,
        })?;
        Ok(Self {
            site: site.to_string(),
            limits: ResourceLimits::default(),
            directories: Vec::new(),
            config: BTreeMap::new(),
            egress: Vec::new(),
            apply: Vec::new(),
            digest: None,
        })
    }

    /// Reads and checks `site-policy.toml`.
    pub fn load(path: &Path) -> Result<Self, SiteError> {
        let text = read_bounded_text(path, MAX_SITE_POLICY_BYTES, "site policy").map_err(|e| {
            SiteError {
                origin: path.display().to_string(),
                detail: e.problem(),
            }
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses policy text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, SiteError> {
        let err = |detail: String| SiteError {
            origin: origin.to_string(),
            detail,
        };
        let file: PolicyFile = toml::from_str(text).map_err(|e| {
            let mut detail = e.to_string();
            // A top-level key written after a `[table]` header lands inside that
            // table, where it reads as "unknown": say what really happened.
            if let Some(key) = TOP_LEVEL_KEYS
                .iter()
                .find(|k| detail.contains(&format!("unknown field `{k}`")))
            {
                detail.push_str(&format!(
                    "\n`{key}` is a top-level key of the site policy: TOML puts every key written after a `[table]` or `[[table]]` header inside that table, so write `{key}` before the first table"
                ));
            }
            err(detail)
        })?;
        if file.format != SITE_POLICY_FORMAT {
            return Err(err(format!(
                "format {} is not supported; this runner reads format {SITE_POLICY_FORMAT}",
                file.format
            )));
        }
        validate_site(&file.site).map_err(err)?;
        let mut directories: Vec<SiteDirectory> = Vec::new();
        for d in file.directories {
            let path = AbsPath::parse(&d.path).map_err(err)?;
            let host = d.host.unwrap_or_else(|| PathBuf::from(path.as_str()));
            if !host.is_absolute() {
                return Err(err(format!(
                    "directory `{path}`: host path `{}` must be absolute",
                    host.display()
                )));
            }
            if let Some(other) = directories
                .iter()
                .find(|o| path.is_within(&o.path) || o.path.is_within(&path))
            {
                return Err(err(format!(
                    "directories `{}` and `{path}` overlap; map each part of the guest tree once",
                    other.path
                )));
            }
            directories.push(SiteDirectory {
                path,
                host,
                access: d.access,
            });
        }
        for key in file.config.keys() {
            validate_config_key(key).map_err(err)?;
        }
        let egress = file
            .egress
            .iter()
            .map(|p| DestinationPattern::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        let mut apply = Vec::new();
        for a in file.apply {
            let path = AbsPath::parse(&a.path).map_err(err)?;
            if !directories.iter().any(|d| path.is_within(&d.path)) {
                return Err(err(format!(
                    "apply `{path}` is inside no [[directory]]; map the directory first, then grant apply beneath it"
                )));
            }
            apply.push(path);
        }
        Ok(Self {
            site: file.site,
            limits: file.limits,
            directories,
            config: file.config,
            egress,
            apply,
            digest: Some(Sha256::digest(text.as_bytes()).into()),
        })
    }

    /// The `[[apply]]` entry covering `path`, if the runner may change it.
    pub fn apply_for(&self, path: &AbsPath) -> Option<&AbsPath> {
        self.apply.iter().find(|a| path.is_within(a))
    }

    /// The directory entry covering `path`, if any.
    pub fn directory_for(&self, path: &AbsPath) -> Option<&SiteDirectory> {
        self.directories.iter().find(|d| path.is_within(&d.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_with_the_fix() {
        let policy = SitePolicy::parse(
            "format = 1\nsite = \"plant-7\"\n[limits]\nfuel = 5\n\
             [[directory]]\npath = \"/logs\"\nhost = \"/srv/logs\"\naccess = \"read-only\"\n\
             [config]\ntarget-url = \"http://x\"\n",
            "site-policy.toml",
        )
        .unwrap();
        assert_eq!(policy.limits.fuel, Some(5));
        let logs = AbsPath::parse("/logs/app").unwrap();
        assert_eq!(
            policy.directory_for(&logs).unwrap().host,
            PathBuf::from("/srv/logs")
        );
        assert!(policy.digest.is_some());

        let err = SitePolicy::parse(
            "format = 1\nsite = \"plant-7\"\n[[directory]]\npath = \"/a\"\naccess = \"read-only\"\n\
             [[directory]]\npath = \"/a/b\"\naccess = \"read-write\"\n",
            "p",
        )
        .unwrap_err();
        assert!(err.to_string().contains("overlap"), "{err}");
        let err = SitePolicy::parse("format = 1\nsite = \"Plant 7\"\n", "p").unwrap_err();
        assert!(
            err.to_string().contains("site `Plant 7` is invalid"),
            "{err}"
        );
        let err = SitePolicy::parse(
            "format = 1\nsite = \"p\"\n[[directory]]\npath = \"/a\"\nhost = \"rel\"\naccess = \"read-only\"\n",
            "p",
        )
        .unwrap_err();
        assert!(err.to_string().contains("must be absolute"), "{err}");
    }
}
