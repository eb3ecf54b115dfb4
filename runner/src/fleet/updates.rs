//! Signed trust root and governance versions through the hub
//! (docs/fleet.md §4.3). The platform stores the signed file in the capsule
//! object store under its SHA-256 (as a capsule) and announces it in the
//! [`UPDATES_BUCKET`] key-value bucket as `trust-root.<N>` or
//! `governance.<N>`. A site watches the bucket and, for the version after
//! the one it has, fetches the object by digest with a size bound.
//!
//! This module only moves bytes and names: it decides nothing. The site
//! installs a version only through [`crate::trust::store::install`] or
//! [`crate::governance::install`], the same checks as `edge-runner trust
//! install` and `governance install`, so an announcement is a hint a
//! hostile hub can forge, never an authority.

use async_nats::jetstream::{self, kv};
use sha2::{Digest, Sha256};

use super::capsules::{self, ObjectError};
use super::subjects::UPDATES_BUCKET;
use crate::governance::SignedBundle;
use crate::governance::bundle::MAX_BUNDLE_BYTES;
use crate::trust::{MAX_TRUST_ROOT_BYTES, SignedRoot};

/// What an announced version is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UpdateKind {
    /// A signed trust root version (`N.root.cose`).
    TrustRoot,
    /// A signed governance bundle (`N.governance.cose`).
    Governance,
}

impl UpdateKind {
    /// Both kinds, trust root first: a governance version is judged by the
    /// trust root in force, so a site installs trust roots first.
    pub const ALL: [UpdateKind; 2] = [UpdateKind::TrustRoot, UpdateKind::Governance];

    /// Its name in keys and evidence: `trust-root` or `governance`.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateKind::TrustRoot => "trust-root",
            UpdateKind::Governance => "governance",
        }
    }

    /// Its name in sentences: `trust root` or `governance`.
    pub fn noun(self) -> &'static str {
        match self {
            UpdateKind::TrustRoot => "trust root",
            UpdateKind::Governance => "governance",
        }
    }

    /// The largest signed file of this kind a site fetches.
    pub fn limit(self) -> u64 {
        match self {
            UpdateKind::TrustRoot => MAX_TRUST_ROOT_BYTES as u64,
            UpdateKind::Governance => MAX_BUNDLE_BYTES as u64,
        }
    }

    /// The key announcing version `version`.
    pub fn key(self, version: u64) -> String {
        format!("{}.{version}", self.as_str())
    }

    /// Reads a key written by [`UpdateKind::key`]; `None` for anything else.
    pub fn parse_key(key: &str) -> Option<(UpdateKind, u64)> {
        let (kind, number) = key.split_once('.')?;
        let kind = UpdateKind::ALL.into_iter().find(|k| k.as_str() == kind)?;
        let version = number
            .parse::<u64>()
            .ok()
            .filter(|v| *v >= 1 && v.to_string() == number)?;
        Some((kind, version))
    }
}

impl std::fmt::Display for UpdateKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a version could not be published or watched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// The hub's bucket could not be reached, created or read.
    #[error(
        "announcement bucket `{UPDATES_BUCKET}` at the hub: {0}; check the hub is reachable and `edge-runner fleet init` ran"
    )]
    Store(String),
    /// The signed object could not be stored or fetched.
    #[error(transparent)]
    Object(#[from] ObjectError),
    /// The file is not a signed trust root or governance bundle.
    #[error("{origin} is not a signed {kind} ({detail}); sign it with `edge-runner {cmd}` first")]
    NotSigned {
        /// The file.
        origin: String,
        /// What it was meant to be.
        kind: UpdateKind,
        /// Why it does not parse.
        detail: String,
        /// The command that makes one.
        cmd: &'static str,
    },
    /// The version was announced before with other bytes.
    #[error(
        "{kind} v{version} was already published as object {published}; versions are never replaced, so sign the change as v{next} (`edge-runner {cmd}`)"
    )]
    AlreadyPublished {
        /// What.
        kind: UpdateKind,
        /// The version.
        version: u64,
        /// The object announced before.
        published: String,
        /// The version to use instead.
        next: u64,
        /// The command that makes it.
        cmd: &'static str,
    },
}

/// The version a signed file says it is, read without judging its
/// signatures (the sites judge them). `origin` names the file in errors.
pub fn version_of(kind: UpdateKind, bytes: &[u8], origin: &str) -> Result<u64, UpdateError> {
    let not_signed = |detail: String| UpdateError::NotSigned {
        origin: origin.to_string(),
        kind,
        detail,
        cmd: match kind {
            UpdateKind::TrustRoot => "trust rotate --stage",
            UpdateKind::Governance => "governance sign",
        },
    };
    match kind {
        UpdateKind::TrustRoot => SignedRoot::parse(bytes, origin)
            .map(|s| s.policy.version)
            .map_err(|e| not_signed(e.to_string())),
        UpdateKind::Governance => SignedBundle::parse(bytes, origin)
            .and_then(|b| b.sources.check())
            .map(|d| d.version())
            .map_err(|e| not_signed(e.to_string())),
    }
}

/// The announcement bucket, created if missing (the platform team's side).
///
/// The bucket's stream is created directly, with the configuration a
/// key-value bucket has (`KV_<bucket>`, subjects `$KV.<bucket>.>`, one value
/// per key, rollups allowed, deletes denied, direct get): the client's own
/// `create_key_value` first asks for account details in a form nats-server
/// 2.9 does not answer in.
pub async fn bucket(hub: &jetstream::Context) -> Result<kv::Store, UpdateError> {
    if let Ok(store) = hub.get_key_value(UPDATES_BUCKET).await {
        return Ok(store);
    }
    hub.create_stream(jetstream::stream::Config {
        name: format!("KV_{UPDATES_BUCKET}"),
        description: Some("Edge Runner trust root and governance versions, by SHA-256".into()),
        subjects: vec![format!("$KV.{UPDATES_BUCKET}.>")],
        max_messages_per_subject: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .map_err(|e| UpdateError::Store(e.to_string()))?;
    hub.get_key_value(UPDATES_BUCKET)
        .await
        .map_err(|e| UpdateError::Store(e.to_string()))
}

/// Stores a signed trust root or governance file by its SHA-256 and
/// announces it as its version; returns the version and the digest.
/// Publishing the same file again is harmless; another file under a version
/// already announced is refused.
pub async fn publish(
    hub: &jetstream::Context,
    kind: UpdateKind,
    bytes: &[u8],
    origin: &str,
) -> Result<(u64, [u8; 32]), UpdateError> {
    let version = version_of(kind, bytes, origin)?;
    let digest: [u8; 32] = Sha256::digest(bytes).into();
    let store = bucket(hub).await?;
    capsules::publish(hub, bytes).await?;
    let key = kind.key(version);
    let value = hex::encode(digest);
    if store
        .create(&key, value.clone().into_bytes().into())
        .await
        .is_err()
    {
        let published = store
            .get(&key)
            .await
            .map_err(|e| UpdateError::Store(format!("reading `{key}`: {e}")))?
            .ok_or_else(|| UpdateError::Store(format!("could not announce `{key}`")))?;
        if published.as_ref() != value.as_bytes() {
            return Err(UpdateError::AlreadyPublished {
                kind,
                version,
                published: String::from_utf8_lossy(&published).into_owned(),
                next: version + 1,
                cmd: match kind {
                    UpdateKind::TrustRoot => "trust rotate --stage",
                    UpdateKind::Governance => "governance sign",
                },
            });
        }
    }
    Ok((version, digest))
}

/// Watches every announcement through `hub` (the hub's domain as the site
/// reaches it through its leaf): first the newest value of each key, then
/// each new one as it is put.
pub async fn watch(hub: &jetstream::Context) -> Result<kv::Watch, UpdateError> {
    hub.get_key_value(UPDATES_BUCKET)
        .await
        .map_err(|e| UpdateError::Store(e.to_string()))?
        .watch_with_history(">")
        .await
        .map_err(|e| UpdateError::Store(e.to_string()))
}

/// The object an announcement names: 64 lowercase hex digits, else `None`.
pub fn announced_digest(value: &[u8]) -> Option<[u8; 32]> {
    if value.len() != 64
        || !value
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(value, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_nothing_else_parses() {
        assert_eq!(UpdateKind::TrustRoot.key(3), "trust-root.3");
        assert_eq!(
            UpdateKind::parse_key("governance.12"),
            Some((UpdateKind::Governance, 12))
        );
        for bad in [
            "trust-root.0",
            "trust-root.03",
            "trust-root",
            "root.2",
            "trust-root.2.1",
        ] {
            assert_eq!(UpdateKind::parse_key(bad), None, "{bad}");
        }
        assert_eq!(announced_digest(&[b'a'; 64]), Some([0xaa; 32]));
        assert_eq!(announced_digest(&[b'A'; 64]), None);
        assert_eq!(announced_digest(&[b'a'; 63]), None);
    }
}
