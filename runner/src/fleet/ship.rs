//! The evidence shipper (docs/fleet.md §5): copies the site's on-disk log,
//! record by record and byte for byte, into the leaf's evidence stream.
//!
//! The log on disk stays the source of truth; this module only reads it. It
//! keeps no position of its own: where to resume is the last message in the
//! stream, checked against the log (a stream whose last record differs from
//! the log's record at that sequence stops shipping: someone wrote to the
//! stream who is not this log). Each message carries the id
//! `LOG-ID-HEX.SEQ`, so a record published twice inside the stream's
//! duplicate window is stored once. A publish that is not acknowledged
//! (stream full, leaf down) pauses shipping at that record; nothing is lost,
//! and the next [`Shipper::ship`] resumes there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};

use super::subjects::{self, HEADER_LOG, HEADER_SEQ, HEADER_SITE, SITE_EVIDENCE_STREAM};
use crate::evidence::{self, MAX_RECORD_BYTES};

/// How long a duplicate message id is remembered by the evidence streams
/// (the window in which a re-publish after a lost acknowledgement is dropped).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// Largest evidence log the shipper reads (as the verifier: 4 GiB).
pub const MAX_SHIPPED_LOG_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// Why shipping stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShipError {
    /// The leaf's JetStream API refused or did not answer.
    #[error(
        "leaf JetStream {what}: {detail}; check that the site's leaf node is running with JetStream enabled (docs/fleet.md §2)"
    )]
    Leaf {
        /// What was asked.
        what: String,
        /// What the client said.
        detail: String,
    },
    /// The evidence log could not be read or split into records.
    #[error("evidence log {path}: {detail}; run `edge-runner evidence verify` on it")]
    Log {
        /// The evidence directory.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The stream's newest record is not this log's record at that sequence.
    #[error(
        "the leaf evidence stream's newest record (log {log}, sequence {seq}) is not the record this site's log holds there; something other than this site's shipper wrote to it. Shipping stopped: keep both for investigation, then give this log a new stream"
    )]
    Diverged {
        /// The log id the stream names, hex.
        log: String,
        /// The sequence.
        seq: u64,
    },
    /// A record was not acknowledged: shipping paused there.
    #[error(
        "shipping paused at record {seq}: {detail}. Nothing is lost; the log keeps the record and the next run resumes from the stream's last message (if the stream is full, raise its max_bytes or let the hub catch up)"
    )]
    Paused {
        /// The first record not shipped.
        seq: u64,
        /// Why.
        detail: String,
    },
}

/// What one [`Shipper::ship`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shipped {
    /// Records published and acknowledged now.
    pub published: u64,
    /// Of those, how many the stream reported as duplicates (already held).
    pub duplicates: u64,
    /// Records of the log now in the stream: the next sequence to ship.
    pub next_seq: u64,
}

/// Creates (or checks) the site's evidence stream on its leaf: file storage,
/// limits retention, `discard: new` so a full stream refuses rather than
/// drops a record, and at most `max_bytes` bytes.
pub async fn ensure_site_stream(
    leaf: &jetstream::Context,
    site: &str,
    max_bytes: i64,
) -> Result<(), ShipError> {
    let config = site_stream_config(site, max_bytes);
    leaf.get_or_create_stream(config)
        .await
        .map_err(|e| ShipError::Leaf {
            what: format!("create stream {SITE_EVIDENCE_STREAM}"),
            detail: e.to_string(),
        })?;
    Ok(())
}

/// The configuration of `site`'s evidence stream (docs/fleet.md §4).
pub fn site_stream_config(site: &str, max_bytes: i64) -> stream::Config {
    stream::Config {
        name: SITE_EVIDENCE_STREAM.to_string(),
        subjects: vec![subjects::evidence_subject(site)],
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::File,
        max_bytes,
        max_message_size: i32::try_from(MAX_RECORD_BYTES + 4096).unwrap_or(i32::MAX),
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    }
}

/// The configuration of the hub's evidence stream, sourcing each of
/// `sites`' evidence streams through their leaves, each filtered to that
/// site's own subject. It has no subjects of its own: nothing is published
/// to it directly.
pub fn hub_stream_config(sites: &[String]) -> stream::Config {
    stream::Config {
        name: subjects::HUB_EVIDENCE_STREAM.to_string(),
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        sources: Some(
            sites
                .iter()
                .map(|site| stream::Source {
                    name: SITE_EVIDENCE_STREAM.to_string(),
                    // Only the site's own subject: a site that widens its
                    // leaf stream cannot speak for another site at the hub.
                    filter_subject: Some(subjects::evidence_subject(site)),
                    external: Some(stream::External {
                        api_prefix: subjects::site_api_prefix(site),
                        delivery_prefix: Some(subjects::site_deliver_prefix(site)),
                    }),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    }
}

/// Ships one site's evidence log to its leaf's evidence stream.
#[derive(Debug)]
pub struct Shipper {
    leaf: jetstream::Context,
    site: String,
    dir: PathBuf,
    ack_timeout: Duration,
    /// Where the last successful [`Shipper::ship`] stopped, so the next one
    /// reads only what was appended since; `None`: read the whole log and
    /// resume from the stream (at start, and after any failure).
    cursor: std::sync::Mutex<Option<Cursor>>,
}

/// A position in the log known to be shipped up to.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    /// Bytes of the log (segments, then the active file) shipped.
    offset: u64,
    /// The next record's sequence.
    next_seq: u64,
    /// The log's id.
    log_id: [u8; 16],
}

/// One record of the log, as bytes, with what it claims to be.
struct Item<'a> {
    log_id: [u8; 16],
    seq: u64,
    /// Its first byte's offset in the bytes it was split from.
    at: usize,
    bytes: &'a [u8],
}

impl Shipper {
    /// A shipper of the log in evidence directory `dir` for `site`, through `leaf`.
    pub fn new(leaf: jetstream::Context, site: &str, dir: &Path) -> Self {
        Self {
            leaf,
            site: site.to_string(),
            dir: dir.to_path_buf(),
            ack_timeout: Duration::from_secs(10),
            cursor: std::sync::Mutex::new(None),
        }
    }

    /// Ships every whole record on disk the stream does not hold yet,
    /// waiting for each acknowledgement before the next. For a log no
    /// process is writing; a log being written is shipped with
    /// [`Shipper::ship_durable`].
    pub async fn ship(&self) -> Result<Shipped, ShipError> {
        self.ship_durable(u64::MAX).await
    }

    /// [`Shipper::ship`], but only records with a sequence below `durable`:
    /// the number of records the writer has made durable. A record written
    /// but not yet synced can still vanish in a power loss; had it been
    /// shipped, the log would afterwards hold a different record at its
    /// sequence than the hub, which is equivocation (docs/fleet.md §5).
    pub async fn ship_durable(&self, durable: u64) -> Result<Shipped, ShipError> {
        let cursor = *self.cursor.lock().unwrap_or_else(|p| p.into_inner());
        // Any failure forgets the cursor: the next call reads the whole log
        // and resumes from the stream's last message.
        *self.cursor.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let log_err = |detail: String| ShipError::Log {
            path: self.dir.clone(),
            detail,
        };
        let (bytes, base) = match cursor {
            Some(c) => (read_from(&self.dir, c.offset).map_err(log_err)?, Some(c)),
            None => (
                evidence::read_log_dir(&self.dir, MAX_SHIPPED_LOG_BYTES)
                    .map_err(|e| log_err(e.to_string()))?,
                None,
            ),
        };
        let mut items = split(
            &bytes,
            base.map_or(0, |c| c.next_seq),
            base.map(|c| c.log_id),
        )
        .map_err(log_err)?;
        items.retain(|i| i.seq < durable);
        let next = match base {
            Some(c) => c.next_seq,
            None => self.resume(&items).await?,
        };
        let first = base.map_or(0, |c| c.next_seq);
        let result = self.publish(&items, next.saturating_sub(first)).await?;
        let shipped_bytes = items.last().map_or(0, |i| (i.at + i.bytes.len()) as u64);
        let log_id = items.first().map(|i| i.log_id).or(base.map(|c| c.log_id));
        if let Some(log_id) = log_id {
            *self.cursor.lock().unwrap_or_else(|p| p.into_inner()) = Some(Cursor {
                offset: base.map_or(0, |c| c.offset) + shipped_bytes,
                next_seq: first + items.len() as u64,
                log_id,
            });
        }
        Ok(Shipped {
            next_seq: first + items.len() as u64,
            ..result
        })
    }

    /// Publishes `items` from index `skip` on, each acknowledged before the next.
    async fn publish(&self, items: &[Item<'_>], skip: u64) -> Result<Shipped, ShipError> {
        let subject = subjects::evidence_subject(&self.site);
        let mut published = 0;
        let mut duplicates = 0;
        for item in items
            .iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
        {
            let pause = |detail: String| ShipError::Paused {
                seq: item.seq,
                detail,
            };
            let mut headers = HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                subjects::record_message_id(&item.log_id, item.seq).as_str(),
            );
            headers.insert(HEADER_LOG, hex::encode(item.log_id).as_str());
            headers.insert(HEADER_SEQ, item.seq.to_string().as_str());
            headers.insert(HEADER_SITE, self.site.as_str());
            let ack = self
                .leaf
                .publish_with_headers(
                    subject.clone(),
                    headers,
                    bytes::Bytes::copy_from_slice(item.bytes),
                )
                .await
                .map_err(|e| pause(e.to_string()))?;
            let ack = tokio::time::timeout(self.ack_timeout, ack)
                .await
                .map_err(|_| pause("no acknowledgement within 10 s".into()))?
                .map_err(|e| pause(e.to_string()))?;
            published += 1;
            if ack.duplicate {
                duplicates += 1;
            }
        }
        Ok(Shipped {
            published,
            duplicates,
            next_seq: 0,
        })
    }

    /// The first sequence the stream does not hold, from its last message,
    /// which must be byte for byte this log's record at its sequence.
    async fn resume(&self, items: &[Item<'_>]) -> Result<u64, ShipError> {
        let leaf_err = |what: &str, e: String| ShipError::Leaf {
            what: what.to_string(),
            detail: e,
        };
        let stream = self
            .leaf
            .get_stream(SITE_EVIDENCE_STREAM)
            .await
            .map_err(|e| leaf_err(&format!("stream {SITE_EVIDENCE_STREAM}"), e.to_string()))?;
        let subject = subjects::evidence_subject(&self.site);
        let last = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => m,
            Err(e)
                if e.kind()
                    == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
            {
                return Ok(0);
            }
            Err(e) => return Err(leaf_err("last evidence message", e.to_string())),
        };
        let claimed = evidence::read_unverified(&last.payload);
        let (log, seq) = match &claimed {
            Some(r) => (hex::encode(r.log_id), r.seq),
            None => ("(unreadable)".to_string(), last.sequence),
        };
        let ours = claimed.as_ref().and_then(|r| {
            items
                .get(usize::try_from(r.seq).ok()?)
                .filter(|i| i.log_id == r.log_id)
        });
        match ours {
            Some(item) if item.bytes == last.payload.as_ref() => Ok(item.seq + 1),
            _ => Err(ShipError::Diverged { log, seq }),
        }
    }
}

/// Reads the log (segments, then the active file) from byte `offset` on.
/// A roll between listing and reading shows up as a sequence mismatch in
/// [`split`], which forgets the cursor: nothing is skipped.
fn read_from(dir: &Path, mut offset: u64) -> Result<Vec<u8>, String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut files = evidence::segment_files(dir).map_err(|e| format!("segments: {e}"))?;
    files.push(dir.join(evidence::LOG_FILE));
    let mut out = Vec::new();
    for path in files {
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let len = file
            .metadata()
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len();
        if offset >= len {
            offset -= len;
            continue;
        }
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        offset = 0;
        let room = MAX_SHIPPED_LOG_BYTES.saturating_sub(out.len() as u64);
        file.take(room)
            .read_to_end(&mut out)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(out)
}

/// Splits bytes of a log into its records, the first being sequence `first`
/// (of log `log_id`, if known), each claiming the next sequence of one log.
/// A record cut short at the end (being written right now) is left for the
/// next call.
fn split(bytes: &[u8], first: u64, log_id: Option<[u8; 16]>) -> Result<Vec<Item<'_>>, String> {
    let mut items: Vec<Item<'_>> = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len = match crate::cbor::item_len(&bytes[at..]) {
            Some(n) => n,
            None => match crate::cbor::decode_prefix(&bytes[at..]) {
                Ok((_, n)) => n,
                // Incomplete (or unreadable) from here: ship what is whole.
                Err(_) => break,
            },
        };
        let raw = &bytes[at..at + len];
        let record = evidence::read_unverified(raw)
            .ok_or_else(|| format!("record at byte {at} is not an evidence record"))?;
        let expected = first + items.len() as u64;
        let log = items.first().map(|f| f.log_id).or(log_id);
        if record.seq != expected || log.is_some_and(|l| l != record.log_id) {
            return Err(format!(
                "record at byte {at} claims log {} sequence {} where sequence {expected} of this log belongs",
                hex::encode(record.log_id),
                record.seq
            ));
        }
        items.push(Item {
            log_id: record.log_id,
            seq: record.seq,
            at,
            bytes: raw,
        });
        at += len;
    }
    Ok(items)
}
