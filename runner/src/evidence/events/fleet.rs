//! The fleet's events (`docs/evidence-format.md` §4.4, docs/fleet.md §3):
//! a job request taken from the hub and the local job it became, or a job
//! request refused. The job's own records are the daemon's (`job-accepted`
//! and its end); these say where it came from.

use super::*;

/// Longest `detail` of a `job-request-refused` record, in bytes.
pub const MAX_REFUSAL_DETAIL_BYTES: usize = 1024;

/// `fleet-job-accepted`: a job request from the hub passed the site's
/// checks and was accepted as local job `local_job` (its `job-accepted`
/// record comes first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetJobAccepted {
    /// The local job id (of the preceding `job-accepted`).
    pub local_job: u64,
    /// The request's job id.
    pub fleet_job: String,
    /// The dispatcher that signed it, by its trust root name.
    pub dispatcher: String,
    /// SHA-256 of the signed request bytes.
    pub request_sha256: [u8; 32],
}

impl EventBody for FleetJobAccepted {
    const NAME: &'static str = "fleet-job-accepted";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("local-job", uint(self.local_job)),
            ("fleet-job", text(&self.fleet_job)),
            ("dispatcher", text(&self.dispatcher)),
            ("request-sha256", bytes(&self.request_sha256)),
        ]
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        Ok(Self {
            local_job: b.uint("local-job")?,
            fleet_job: b.text("fleet-job")?.to_string(),
            dispatcher: b.text("dispatcher")?.to_string(),
            request_sha256: digest(b, "request-sha256")?,
        })
    }
}

/// `job-request-refused`: a message from the hub's job queue that the site
/// refused (and terminated there, so it is not redelivered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequestRefused {
    /// The job id the request claims, if it could be read (unverified).
    pub claimed_job: Option<String>,
    /// The refusal's code (`malformed`, `unknown-dispatcher`, `bad-signature`,
    /// `bad-payload`, `wrong-site`, `site-not-delegated`, `wrong-kind`,
    /// `expired`, `oversize`, `capsule-refused`).
    pub reason: String,
    /// The refusal in words (at most [`MAX_REFUSAL_DETAIL_BYTES`]).
    pub detail: String,
    /// SHA-256 of the message bytes.
    pub request_sha256: [u8; 32],
}

impl EventBody for JobRequestRefused {
    const NAME: &'static str = "job-request-refused";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        let mut f = vec![
            ("reason", text(&self.reason)),
            ("detail", text(&self.detail)),
            ("request-sha256", bytes(&self.request_sha256)),
        ];
        if let Some(j) = &self.claimed_job {
            f.push(("claimed-job", text(j)));
        }
        f
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        Ok(Self {
            claimed_job: optional(b, "claimed-job", text_of)?,
            reason: b.text("reason")?.to_string(),
            detail: b.text("detail")?.to_string(),
            request_sha256: digest(b, "request-sha256")?,
        })
    }
}
