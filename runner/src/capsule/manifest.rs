//! The capsule manifest: what the author asks for, in TOML and in its signed CBOR form.

use std::fmt;
use std::path::Path;

use ciborium::Value;
use serde::Deserialize;

use super::CapsuleError;
use crate::cbor::{self, MapReader};

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

/// Resource limits a capsule asks for. `None` means "the runner's default".
/// What it gets is never more than the runner's ceiling (see `sandbox::Limits`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RequestedLimits {
    /// Linear memory, in bytes, summed over all memories.
    pub memory_bytes: Option<u64>,
    /// Wasmtime fuel (roughly, WebAssembly instructions).
    pub fuel: Option<u64>,
    /// Wall-clock time, in milliseconds.
    pub wall_time_ms: Option<u64>,
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
    /// Resources asked for.
    #[serde(default)]
    pub limits: RequestedLimits,
}

impl ManifestSource {
    /// Parses `capsule.toml` text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, CapsuleError> {
        let source: Self = toml::from_str(text)
            .map_err(|e| CapsuleError::ManifestSource(format!("{}: {e}", origin.display())))?;
        validate_name(&source.name)
            .map_err(|e| CapsuleError::ManifestSource(format!("{}: {e}", origin.display())))?;
        Ok(source)
    }

    /// Binds the manifest to a module digest.
    pub fn to_manifest(&self, module_sha256: [u8; 32]) -> Result<Manifest, CapsuleError> {
        validate_name(&self.name).map_err(CapsuleError::ManifestSource)?;
        Ok(Manifest {
            name: self.name.clone(),
            version: self.version.clone(),
            kind: self.kind,
            description: self.description.clone(),
            limits: self.limits,
            module_sha256,
        })
    }
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
    /// Resources asked for.
    pub limits: RequestedLimits,
    /// SHA-256 of the component without its signature section.
    pub module_sha256: [u8; 32],
}

impl Manifest {
    /// The deterministic CBOR encoding that signatures cover.
    pub fn to_cbor(&self) -> Result<Vec<u8>, CapsuleError> {
        let mut limits = Vec::new();
        let l = &self.limits;
        for (key, value) in [
            ("memory-bytes", l.memory_bytes),
            ("fuel", l.fuel),
            ("wall-time-ms", l.wall_time_ms),
        ] {
            if let Some(v) = value {
                limits.push((key, Value::Integer(v.into())));
            }
        }
        let map = cbor::text_map([
            ("format", Value::Integer(MANIFEST_FORMAT.into())),
            ("name", Value::Text(self.name.clone())),
            ("version", Value::Text(self.version.to_string())),
            ("kind", Value::Text(self.kind.as_str().into())),
            ("description", Value::Text(self.description.clone())),
            ("module-sha256", Value::Bytes(self.module_sha256.to_vec())),
            ("limits", cbor::text_map(limits)),
        ]);
        cbor::encode(&map).map_err(|e| CapsuleError::BadManifest(e.to_string()))
    }

    /// Decodes a signed manifest, strictly: canonical CBOR, known fields only.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, CapsuleError> {
        let bad = CapsuleError::BadManifest;
        let value = cbor::decode_canonical(bytes).map_err(|e| bad(e.to_string()))?;
        let map = MapReader::new("manifest", &value).map_err(bad)?;
        map.only(&[
            "format",
            "name",
            "version",
            "kind",
            "description",
            "module-sha256",
            "limits",
        ])
        .map_err(bad)?;
        let format = map.uint("format").map_err(bad)?;
        if format != MANIFEST_FORMAT {
            return Err(bad(format!(
                "manifest format {format} is not supported (this runner reads format {MANIFEST_FORMAT}); upgrade edge-runner"
            )));
        }
        let name = map.text("name").map_err(bad)?.to_string();
        validate_name(&name).map_err(bad)?;
        let version_text = map.text("version").map_err(bad)?;
        let version = semver::Version::parse(version_text)
            .map_err(|e| bad(format!("version `{version_text}` is not semver: {e}")))?;
        let kind_text = map.text("kind").map_err(bad)?;
        let kind = Kind::parse(kind_text).ok_or_else(|| {
            bad(format!(
                "kind `{kind_text}` is not one of test, reproduce, remediate"
            ))
        })?;
        let description = map.text("description").map_err(bad)?.to_string();
        let module_sha256 = map
            .bytes("module-sha256")
            .map_err(bad)?
            .try_into()
            .map_err(|_| bad("`module-sha256` must be 32 bytes".into()))?;
        let limits_value = map
            .get("limits")
            .ok_or_else(|| bad("`limits` is missing".into()))?;
        let lm = MapReader::new("manifest limits", limits_value).map_err(bad)?;
        lm.only(&["memory-bytes", "fuel", "wall-time-ms"])
            .map_err(bad)?;
        let opt = |k: &str| lm.get(k).map(|_| lm.uint(k)).transpose();
        let limits = RequestedLimits {
            memory_bytes: opt("memory-bytes").map_err(bad)?,
            fuel: opt("fuel").map_err(bad)?,
            wall_time_ms: opt("wall-time-ms").map_err(bad)?,
        };
        Ok(Self {
            name,
            version,
            kind,
            description,
            limits,
            module_sha256,
        })
    }
}

fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "capsule name `{name}` is invalid: use 1-64 lowercase letters, digits and `-`, not starting with `-`"
        ))
    }
}
