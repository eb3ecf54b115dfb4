//! The capsule manifest: what the author asks for, in TOML and in its signed CBOR form.

use std::fmt;
use std::path::Path;

use ciborium::Value;
use serde::Deserialize;

use super::CapsuleError;
use super::capabilities::{
    ANY_SITE, Access, Destination, FileAccess, FileAccessSource, validate_config_key,
    validate_name, validate_site,
};
use super::limits::ResourceLimits;
use crate::cbor::{self, MapReader};
use crate::timestamp::Timestamp;

/// Version of the signed manifest encoding.
pub const MANIFEST_FORMAT: u64 = 1;

/// What a capsule is for. Each kind has its own signature threshold in the trust root.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Checks a system; reads only.
    Test,
    /// Replays a failure deterministically.
    Reproduce,
    /// Prepares a fix as a proposal; never applies it.
    Remediate,
}

impl Kind {
    /// All kinds, in order.
    pub const ALL: [Kind; 3] = [Kind::Test, Kind::Reproduce, Kind::Remediate];

    /// The kind's name as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Test => "test",
            Kind::Reproduce => "reproduce",
            Kind::Remediate => "remediate",
        }
    }

    /// Parses a kind name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Days a signature stays valid when `capsule.toml` sets no `expires`.
pub const DEFAULT_VALIDITY_DAYS: u64 = 90;

/// Access a capsule asks for beyond compute. Empty means none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Paths, sorted by path, each at most once.
    pub files: Vec<FileAccess>,
    /// Egress destinations, sorted by their text, each at most once.
    pub egress: Vec<Destination>,
    /// Config keys, sorted, each at most once.
    pub config: Vec<String>,
}

impl Capabilities {
    /// True when nothing is asked for.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.egress.is_empty() && self.config.is_empty()
    }
}

/// `[capabilities]` as the author writes it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilitiesSource {
    #[serde(default)]
    files: Vec<FileAccessSource>,
    #[serde(default)]
    egress: Vec<String>,
    #[serde(default)]
    config: Vec<String>,
}

impl CapabilitiesSource {
    /// Checks and canonicalises: valid values, sorted, no duplicates.
    fn check(&self) -> Result<Capabilities, String> {
        let mut files = self
            .files
            .iter()
            .map(FileAccessSource::check)
            .collect::<Result<Vec<_>, String>>()?;
        files.sort_by(|a, b| a.path.as_str().cmp(b.path.as_str()));
        if let Some(w) = files.windows(2).find(|w| w[0].path == w[1].path) {
            return Err(format!(
                "capabilities: path `{}` is listed twice; list each path once with the access it needs",
                w[0].path
            ));
        }
        let mut egress = self
            .egress
            .iter()
            .map(|d| Destination::parse(d))
            .collect::<Result<Vec<_>, String>>()?;
        egress.sort_by_key(ToString::to_string);
        if let Some(w) = egress.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("capabilities: egress `{}` is listed twice", w[0]));
        }
        let mut config = self.config.clone();
        for key in &config {
            validate_config_key(key)?;
        }
        config.sort();
        if let Some(w) = config.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!(
                "capabilities: config key `{}` is listed twice",
                w[0]
            ));
        }
        Ok(Capabilities {
            files,
            egress,
            config,
        })
    }
}

/// A manifest as the author writes it (`capsule.toml`), before it is bound to a module.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ManifestSource {
    /// Capsule name: lowercase letters, digits and `-`, 1 to 64 characters.
    pub name: String,
    /// Semantic version; must increase with every release (rollback protection).
    pub version: semver::Version,
    /// What the capsule is for.
    pub kind: Kind,
    /// One line for humans.
    #[serde(default)]
    pub description: String,
    /// Sites that may run it, or `["*"]` for every site the trust root allows.
    pub audience: Vec<String>,
    /// Not valid before this time. Default: the signing time.
    #[serde(default)]
    pub not_before: Option<Timestamp>,
    /// Not valid from this time on. Default: `not-before` plus [`DEFAULT_VALIDITY_DAYS`].
    #[serde(default)]
    pub expires: Option<Timestamp>,
    /// Access asked for.
    #[serde(default)]
    pub capabilities: CapabilitiesSource,
    /// Resources asked for.
    #[serde(default)]
    pub limits: ResourceLimits,
}

impl ManifestSource {
    /// Parses `capsule.toml` text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, CapsuleError> {
        let wrap = |e: String| CapsuleError::ManifestSource(format!("{}: {e}", origin.display()));
        let source: Self = toml::from_str(text).map_err(|e| wrap(e.to_string()))?;
        source
            .to_manifest([0; 32], Timestamp(0))
            .map_err(|e| match e {
                CapsuleError::ManifestSource(m) => wrap(m),
                other => other,
            })?;
        Ok(source)
    }

    /// Binds the manifest to a module digest. `now` fills a missing
    /// `not-before`; a missing `expires` is `not-before` + [`DEFAULT_VALIDITY_DAYS`].
    pub fn to_manifest(
        &self,
        module_sha256: [u8; 32],
        now: Timestamp,
    ) -> Result<Manifest, CapsuleError> {
        let err = CapsuleError::ManifestSource;
        validate_name(&self.name).map_err(err)?;
        if !self.version.build.is_empty() {
            return Err(err(format!(
                "version `{}` carries build metadata (`+{}`), which SemVer ignores when ordering releases; rollback protection needs a version that orders, so drop the `+…` part",
                self.version, self.version.build
            )));
        }
        let audience = canonical_audience(&self.audience).map_err(err)?;
        let capabilities = self.capabilities.check().map_err(err)?;
        let not_before = self.not_before.unwrap_or(now);
        let expires = self
            .expires
            .unwrap_or_else(|| not_before.plus_days(DEFAULT_VALIDITY_DAYS));
        if expires <= not_before {
            return Err(err(format!(
                "`expires` ({expires}) must be after `not-before` ({not_before})"
            )));
        }
        if expires <= now {
            return Err(err(format!(
                "`expires` ({expires}) is already past (now {now}); a capsule signed so would never run. Set a future `expires`"
            )));
        }
        Ok(Manifest {
            name: self.name.clone(),
            version: self.version.clone(),
            kind: self.kind,
            description: self.description.clone(),
            audience,
            not_before,
            expires,
            capabilities,
            limits: self.limits,
            module_sha256,
        })
    }
}

fn canonical_audience(audience: &[String]) -> Result<Vec<String>, String> {
    if audience.is_empty() {
        return Err(
            "`audience` is empty; list the sites that may run this capsule, or [\"*\"] for every site"
                .into(),
        );
    }
    if audience.iter().any(|a| a == ANY_SITE) {
        if audience.len() > 1 {
            return Err("`audience` mixes \"*\" with site names; use one or the other".into());
        }
        return Ok(vec![ANY_SITE.to_string()]);
    }
    let mut sites = audience.to_vec();
    for site in &sites {
        validate_site(site)?;
    }
    sites.sort();
    if let Some(w) = sites.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("`audience` lists site `{}` twice", w[0]));
    }
    Ok(sites)
}

/// A manifest as signed: the author's request bound to the module's SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Capsule name.
    pub name: String,
    /// Semantic version.
    pub version: semver::Version,
    /// What the capsule is for.
    pub kind: Kind,
    /// One line for humans.
    pub description: String,
    /// Sites that may run it, sorted; `["*"]` means every site.
    pub audience: Vec<String>,
    /// Not valid before this time.
    pub not_before: Timestamp,
    /// Not valid from this time on.
    pub expires: Timestamp,
    /// Access asked for.
    pub capabilities: Capabilities,
    /// Resources asked for.
    pub limits: ResourceLimits,
    /// SHA-256 of the component without its signature section.
    pub module_sha256: [u8; 32],
}

const MANIFEST_KEYS: &[&str] = &[
    "format",
    "name",
    "version",
    "kind",
    "description",
    "audience",
    "not-before",
    "expires",
    "capabilities",
    "limits",
    "module-sha256",
];

fn text_array<T: ToString>(items: &[T]) -> Value {
    Value::Array(items.iter().map(|i| Value::Text(i.to_string())).collect())
}

impl Manifest {
    /// True when `site` is in the audience (or the audience is every site).
    pub fn allows_site(&self, site: &str) -> bool {
        self.audience.iter().any(|a| a == ANY_SITE || a == site)
    }

    /// The deterministic CBOR encoding that signatures cover.
    pub fn to_cbor(&self) -> Result<Vec<u8>, CapsuleError> {
        let limits = self
            .limits
            .named()
            .into_iter()
            .filter_map(|(key, value)| Some((key, Value::Integer(value?.into()))));
        let files = self
            .capabilities
            .files
            .iter()
            .map(|f| {
                cbor::text_map([
                    ("path", Value::Text(f.path.to_string())),
                    ("access", Value::Text(f.access.as_str().into())),
                ])
            })
            .collect();
        let map = cbor::text_map([
            ("format", Value::Integer(MANIFEST_FORMAT.into())),
            ("name", Value::Text(self.name.clone())),
            ("version", Value::Text(self.version.to_string())),
            ("kind", Value::Text(self.kind.as_str().into())),
            ("description", Value::Text(self.description.clone())),
            ("audience", text_array(&self.audience)),
            ("not-before", Value::Integer(self.not_before.0.into())),
            ("expires", Value::Integer(self.expires.0.into())),
            (
                "capabilities",
                cbor::text_map([
                    ("files", Value::Array(files)),
                    ("egress", text_array(&self.capabilities.egress)),
                    ("config", text_array(&self.capabilities.config)),
                ]),
            ),
            ("limits", cbor::text_map(limits)),
            ("module-sha256", Value::Bytes(self.module_sha256.to_vec())),
        ]);
        cbor::encode(&map).map_err(|e| CapsuleError::BadManifest(e.to_string()))
    }

    /// Decodes a signed manifest, strictly: canonical CBOR, known fields
    /// only, lists sorted without duplicates, every value well formed.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, CapsuleError> {
        let bad = CapsuleError::BadManifest;
        let value = cbor::decode_canonical(bytes).map_err(|e| bad(e.to_string()))?;
        let map = MapReader::new("manifest", &value).map_err(bad)?;
        map.only(MANIFEST_KEYS).map_err(bad)?;
        let format = map.uint("format").map_err(bad)?;
        if format != MANIFEST_FORMAT {
            return Err(bad(format!(
                "manifest format {format} is not supported (this runner reads format {MANIFEST_FORMAT}); upgrade edge-runner"
            )));
        }
        let version_text = map.text("version").map_err(bad)?;
        let version = semver::Version::parse(version_text)
            .map_err(|e| bad(format!("version `{version_text}` is not semver: {e}")))?;
        let kind_text = map.text("kind").map_err(bad)?;
        let kind = Kind::parse(kind_text).ok_or_else(|| {
            bad(format!(
                "kind `{kind_text}` is not one of test, reproduce, remediate"
            ))
        })?;
        let module_sha256 = map
            .bytes("module-sha256")
            .map_err(bad)?
            .try_into()
            .map_err(|_| bad("`module-sha256` must be 32 bytes".into()))?;

        let caps_value = map
            .get("capabilities")
            .ok_or_else(|| bad("`capabilities` is missing".into()))?;
        let caps = MapReader::new("manifest capabilities", caps_value).map_err(bad)?;
        caps.only(&["files", "egress", "config"]).map_err(bad)?;
        let files = array(&caps, "files")?
            .iter()
            .map(|v| {
                let f = MapReader::new("capabilities file", v)?;
                f.only(&["path", "access"])?;
                let access_text = f.text("access")?;
                Ok(FileAccessSource {
                    path: f.text("path")?.to_string(),
                    access: Access::parse(access_text).ok_or_else(|| {
                        format!("file access `{access_text}` is not read-only or read-write")
                    })?,
                })
            })
            .collect::<Result<Vec<_>, String>>()
            .map_err(bad)?;
        let source = ManifestSource {
            name: map.text("name").map_err(bad)?.to_string(),
            version,
            kind,
            description: map.text("description").map_err(bad)?.to_string(),
            audience: texts(&map, "audience")?,
            not_before: Some(Timestamp(map.uint("not-before").map_err(bad)?)),
            expires: Some(Timestamp(map.uint("expires").map_err(bad)?)),
            capabilities: CapabilitiesSource {
                files,
                egress: texts(&caps, "egress")?,
                config: texts(&caps, "config")?,
            },
            limits: limits(&map)?,
        };
        let manifest = source
            .to_manifest(module_sha256, Timestamp(0))
            .map_err(|e| match e {
                CapsuleError::ManifestSource(m) => bad(m),
                other => other,
            })?;
        // One manifest, one encoding: lists must already be in canonical order.
        let reencoded = manifest.to_cbor()?;
        if reencoded != bytes {
            return Err(bad(
                "lists are not sorted or not unique (`audience`, `files` by path, `egress`, `config` must be in ascending bytewise order without duplicates)"
                    .into(),
            ));
        }
        Ok(manifest)
    }
}

fn array<'a>(map: &MapReader<'a>, key: &str) -> Result<&'a [Value], CapsuleError> {
    match map.get(key) {
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(CapsuleError::BadManifest(format!(
            "`{key}` must be an array"
        ))),
        None => Err(CapsuleError::BadManifest(format!("`{key}` is missing"))),
    }
}

fn texts(map: &MapReader<'_>, key: &str) -> Result<Vec<String>, CapsuleError> {
    array(map, key)?
        .iter()
        .map(|v| match v {
            Value::Text(t) => Ok(t.clone()),
            _ => Err(CapsuleError::BadManifest(format!(
                "`{key}` must contain only text"
            ))),
        })
        .collect()
}

fn limits(map: &MapReader<'_>) -> Result<ResourceLimits, CapsuleError> {
    let bad = CapsuleError::BadManifest;
    let limits_value = map
        .get("limits")
        .ok_or_else(|| bad("`limits` is missing".into()))?;
    let lm = MapReader::new("manifest limits", limits_value).map_err(bad)?;
    lm.only(&ResourceLimits::NAMES).map_err(bad)?;
    ResourceLimits::from_named(|k| lm.get(k).map(|_| lm.uint(k)).transpose()).map_err(bad)
}
