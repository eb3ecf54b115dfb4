//! Capsules in the hub's object store (docs/fleet.md §4.2): each capsule
//! file and each detached signature is one object named by the lowercase hex
//! SHA-256 of its bytes. A site fetches by digest and believes nothing the
//! store says about the object: the size is bounded before and while
//! reading, and the bytes must hash to the name. The capsule is then
//! verified against the trust root as any local one; this module only
//! guarantees that what arrives is what the dispatcher's request named.

use async_nats::jetstream::{self, object_store};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::subjects::CAPSULE_BUCKET;

/// Why an object could not be fetched or published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// The hub's object store could not be reached or read.
    #[error(
        "capsule store `{CAPSULE_BUCKET}` at the hub: {0}; check the leaf is connected to the hub and `edge-runner fleet publish` stored the capsule"
    )]
    Store(String),
    /// The object is larger than allowed (as announced, or as read).
    #[error(
        "capsule object {digest} is over the {limit}-byte limit ({size} bytes); refused without running. Raise the site's limit or publish a smaller capsule"
    )]
    Oversize {
        /// The object name.
        digest: String,
        /// Its size, as far as it was read.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The bytes do not hash to the object's name: replaced at the hub.
    #[error(
        "capsule object {digest} holds bytes whose SHA-256 is {actual}; the object was replaced or corrupted at the hub. Refused without running; publish the capsule again and investigate the hub"
    )]
    DigestMismatch {
        /// The object name.
        digest: String,
        /// The SHA-256 of what was read.
        actual: String,
    },
}

/// The object store bucket, created if missing (the platform team's side).
pub async fn bucket(hub: &jetstream::Context) -> Result<object_store::ObjectStore, ObjectError> {
    match hub.get_object_store(CAPSULE_BUCKET).await {
        Ok(store) => Ok(store),
        Err(_) => hub
            .create_object_store(object_store::Config {
                bucket: CAPSULE_BUCKET.to_string(),
                description: Some(
                    "Edge Runner capsules and detached signatures, by SHA-256".into(),
                ),
                ..Default::default()
            })
            .await
            .map_err(|e| ObjectError::Store(e.to_string())),
    }
}

/// Stores `bytes` under their SHA-256 (hex) and returns that digest.
/// Storing the same bytes again is harmless.
pub async fn publish(hub: &jetstream::Context, bytes: &[u8]) -> Result<[u8; 32], ObjectError> {
    let digest: [u8; 32] = Sha256::digest(bytes).into();
    let store = bucket(hub).await?;
    let mut reader = bytes;
    store
        .put(hex::encode(digest).as_str(), &mut reader)
        .await
        .map_err(|e| ObjectError::Store(e.to_string()))?;
    Ok(digest)
}

/// Fetches the object named `digest` through `hub` (the hub's domain as
/// the site reaches it through its leaf), at most `limit` bytes, and returns
/// its bytes only if they hash to `digest`.
pub async fn fetch(
    hub: &jetstream::Context,
    digest: &[u8; 32],
    limit: u64,
) -> Result<Vec<u8>, ObjectError> {
    let name = hex::encode(digest);
    let store = hub
        .get_object_store(CAPSULE_BUCKET)
        .await
        .map_err(|e| ObjectError::Store(e.to_string()))?;
    let mut object = store
        .get(name.as_str())
        .await
        .map_err(|e| ObjectError::Store(format!("object {name}: {e}")))?;
    let announced = object.info().size as u64;
    if announced > limit {
        return Err(ObjectError::Oversize {
            digest: name,
            size: announced,
            limit,
        });
    }
    // The announced size is the store's word: read at most one byte past the limit.
    let mut bytes = Vec::new();
    (&mut object)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| ObjectError::Store(format!("object {name}: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err(ObjectError::Oversize {
            digest: name,
            size: bytes.len() as u64,
            limit,
        });
    }
    let actual: [u8; 32] = Sha256::digest(&bytes).into();
    if &actual != digest {
        return Err(ObjectError::DigestMismatch {
            digest: name,
            actual: hex::encode(actual),
        });
    }
    Ok(bytes)
}
