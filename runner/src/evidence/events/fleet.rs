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

/// `trust-update-installed`: a signed trust root or governance version
/// announced by the hub was fetched, verified as `edge-runner trust install`
/// or `governance install` verify it, and installed (docs/fleet.md §4.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustUpdateInstalled {
    /// `trust-root` or `governance`.
    pub what: String,
    /// The trust root's or governance's name.
    pub name: String,
    /// The version now in force.
    pub version: u64,
    /// SHA-256 of the trust root policy text, or of the governance payload.
    pub sha256: [u8; 32],
    /// SHA-256 of the signed file: its object name at the hub.
    pub object_sha256: [u8; 32],
    /// Whose signatures counted: for a trust root the previous version's
    /// root keys, then its own not already named; for governance the
    /// administrators.
    pub signed_by: Vec<String>,
}

impl EventBody for TrustUpdateInstalled {
    const NAME: &'static str = "trust-update-installed";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("what", text(&self.what)),
            ("name", text(&self.name)),
            ("version", uint(self.version)),
            ("sha256", bytes(&self.sha256)),
            ("object-sha256", bytes(&self.object_sha256)),
            ("signed-by", texts(&self.signed_by)),
        ]
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        Ok(Self {
            what: b.text("what")?.to_string(),
            name: b.text("name")?.to_string(),
            version: b.uint("version")?,
            sha256: digest(b, "sha256")?,
            object_sha256: digest(b, "object-sha256")?,
            signed_by: list(b, "signed-by", text_of)?,
        })
    }
}

/// `trust-update-refused`: a trust root or governance version the hub
/// announced that the site refused; nothing was installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustUpdateRefused {
    /// `trust-root` or `governance`.
    pub what: String,
    /// The version the hub announced it as (unverified).
    pub announced_version: u64,
    /// The object the hub named (unverified).
    pub object_sha256: [u8; 32],
    /// The refusal's code (`object`, `malformed`, `rollback`, `not-next`,
    /// `not-signed`, `expired`, `invalid`).
    pub reason: String,
    /// The refusal in words (at most [`MAX_REFUSAL_DETAIL_BYTES`]).
    pub detail: String,
}

impl EventBody for TrustUpdateRefused {
    const NAME: &'static str = "trust-update-refused";
    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("what", text(&self.what)),
            ("announced-version", uint(self.announced_version)),
            ("object-sha256", bytes(&self.object_sha256)),
            ("reason", text(&self.reason)),
            ("detail", text(&self.detail)),
        ]
    }
    fn read(b: &MapReader<'_>) -> Result<Self, String> {
        Ok(Self {
            what: b.text("what")?.to_string(),
            announced_version: b.uint("announced-version")?,
            object_sha256: digest(b, "object-sha256")?,
            reason: b.text("reason")?.to_string(),
            detail: b.text("detail")?.to_string(),
        })
    }
}
