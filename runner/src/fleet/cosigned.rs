//! Cosigned checkpoints back to the sites (docs/fleet.md §6.2). The
//! collector, as the hub's witness, publishes each cosigned checkpoint note
//! to `fleet.cosigned.<site>.<log id>` in the hub stream [`COSIGNED_STREAM`],
//! which keeps the newest per subject. A site reads only its own subjects
//! (its credential allows a direct get of nothing else) and keeps a note
//! only after [`crate::evidence::witness::keep_cosigned`] verified it
//! against its own log and the witness key it was configured with: the hub
//! is believed in nothing.

use async_nats::jetstream::{self, stream};

/// The hub stream of cosigned checkpoint notes, the newest per site and log.
pub const COSIGNED_STREAM: &str = "FLEET_COSIGNED";

/// Subject of the cosigned checkpoints of log `log_id` of `site`.
pub fn cosigned_subject(site: &str, log_id: &[u8; 16]) -> String {
    format!("fleet.cosigned.{site}.{}", hex::encode(log_id))
}

/// Why a note could not be published or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "hub stream {COSIGNED_STREAM}: {0}; check the hub is reachable and `edge-runner fleet init` ran"
)]
pub struct CosignedError(pub String);

/// Creates (or checks) [`COSIGNED_STREAM`] at the hub (the platform's side).
pub async fn ensure_stream(hub: &jetstream::Context) -> Result<(), CosignedError> {
    if hub.get_stream(COSIGNED_STREAM).await.is_ok() {
        return Ok(());
    }
    hub.create_stream(stream::Config {
        name: COSIGNED_STREAM.into(),
        description: Some(
            "Edge Runner: the hub witness's cosigned checkpoints, newest per site and log".into(),
        ),
        subjects: vec!["fleet.cosigned.>".into()],
        max_messages_per_subject: 1,
        allow_direct: true,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .map(|_| ())
    .map_err(|e| CosignedError(e.to_string()))
}

/// Publishes `note` (a checkpoint with the witness's cosignature) for log
/// `log_id` of `site`, and waits for the stream's acknowledgement.
pub async fn publish(
    hub: &jetstream::Context,
    site: &str,
    log_id: &[u8; 16],
    note: &str,
) -> Result<(), CosignedError> {
    hub.publish(
        cosigned_subject(site, log_id),
        note.as_bytes().to_vec().into(),
    )
    .await
    .map_err(|e| CosignedError(e.to_string()))?
    .await
    .map(|_| ())
    .map_err(|e| CosignedError(e.to_string()))
}

/// The newest note for log `log_id` of `site`, through `hub` (the hub's
/// domain as the site reaches it through its leaf), at most `limit` bytes;
/// `None` when there is none.
pub async fn latest(
    hub: &jetstream::Context,
    site: &str,
    log_id: &[u8; 16],
    limit: u64,
) -> Result<Option<String>, CosignedError> {
    // No stream info: the site's credential may read only its own subjects.
    let stream = hub
        .get_stream_no_info(COSIGNED_STREAM)
        .await
        .map_err(|e| CosignedError(e.to_string()))?;
    match stream
        .direct_get_last_for_subject(cosigned_subject(site, log_id))
        .await
    {
        Ok(m) => {
            if m.payload.len() as u64 > limit {
                return Err(CosignedError(format!(
                    "the note for {site} is {} bytes, over the {limit}-byte limit",
                    m.payload.len()
                )));
            }
            String::from_utf8(m.payload.to_vec())
                .map(Some)
                .map_err(|_| CosignedError(format!("the note for {site} is not UTF-8")))
        }
        Err(e) if e.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(CosignedError(e.to_string())),
    }
}
