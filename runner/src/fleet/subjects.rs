//! Names on the wire (docs/fleet.md §4): streams, subjects, consumers,
//! buckets and message headers. One place, so the hub configuration, the
//! site and the collector cannot drift apart, and another implementation
//! can read them off one table.

use crate::capsule::Kind;

/// JetStream domain of the hub.
pub const HUB_DOMAIN: &str = "hub";

/// The hub's work-queue stream of job requests.
pub const JOBS_STREAM: &str = "FLEET_JOBS";

/// Object store bucket (on the hub) holding capsules and detached
/// signatures, each named by the lowercase hex SHA-256 of its bytes.
pub const CAPSULE_BUCKET: &str = "fleet-capsules";

/// Each site's evidence stream, on its leaf (JetStream domain = site name).
pub const SITE_EVIDENCE_STREAM: &str = "EVIDENCE";

/// The hub's evidence stream, sourcing every site's [`SITE_EVIDENCE_STREAM`].
pub const HUB_EVIDENCE_STREAM: &str = "FLEET_EVIDENCE";

/// Header naming the evidence log a shipped record belongs to (32 lowercase hex digits).
pub const HEADER_LOG: &str = "Edge-Runner-Log";

/// Header with a shipped record's sequence number in its log (decimal).
pub const HEADER_SEQ: &str = "Edge-Runner-Seq";

/// Header naming the site that shipped a record.
pub const HEADER_SITE: &str = "Edge-Runner-Site";

/// Subject a dispatcher publishes `site`'s jobs of `kind` to.
pub fn job_subject(site: &str, kind: Kind) -> String {
    format!("fleet.jobs.{site}.{kind}")
}

/// Every job subject of `site` (its consumer's filter).
pub fn site_jobs_filter(site: &str) -> String {
    format!("fleet.jobs.{site}.>")
}

/// The durable pull consumer of `site` on [`JOBS_STREAM`].
pub fn site_consumer(site: &str) -> String {
    format!("site-{site}")
}

/// Subject `site`'s records are shipped to on its leaf.
pub fn evidence_subject(site: &str) -> String {
    format!("fleet.evidence.{site}")
}

/// The JetStream API prefix of `site`'s domain, as the hub reaches it through the leaf.
pub fn site_api_prefix(site: &str) -> String {
    format!("$JS.{site}.API")
}

/// Where the hub's sourcing consumer on `site`'s leaf delivers to
/// (the site's hub credential may publish only under this prefix).
pub fn site_deliver_prefix(site: &str) -> String {
    format!("fleet.deliver.{site}")
}

/// The NATS message id of record `seq` of log `log_id`: the stream drops a
/// second message with the same id inside its duplicate window.
pub fn record_message_id(log_id: &[u8; 16], seq: u64) -> String {
    format!("{}.{seq}", hex::encode(log_id))
}

/// Key-value bucket (on the hub) announcing signed trust root and
/// governance versions: key `trust-root.<N>` or `governance.<N>`, value the
/// 64 lowercase hex digits of the signed file's SHA-256, its object name in
/// [`CAPSULE_BUCKET`].
pub const UPDATES_BUCKET: &str = "fleet-updates";

/// Subject `site`'s daemon answers status requests on, with its
/// [`super::status::SiteHead`] (core NATS request and reply, through the leaf).
pub fn status_subject(site: &str) -> String {
    format!("fleet.status.{site}")
}
