//! Jobs over JetStream (docs/fleet.md §3, §4): the hub's work queue, one
//! durable pull consumer per site, and the site's inbox that pulls from it
//! through the leaf.
//!
//! The inbox decides nothing itself: every message goes through
//! [`super::authorize`] under the site's trust root, and the replay check
//! asks the caller, who holds the evidence log. Acknowledgement follows the
//! contract: a refused request is terminated (never redelivered), a replay
//! is acknowledged without running, and an authorised job is acknowledged
//! only when the caller says its end is durable ([`Job::done`]). A job the
//! site took and never acknowledged (the runner was killed) comes back after
//! the ack wait, where the replay check finds it in the log.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::request::{AuthorizedRequest, RequestRefusal, authorize, claimed_job_id};
use super::subjects::{self, JOBS_STREAM};
use crate::capsule::Kind;
use crate::trust::RootPolicy;

/// How many times a job is delivered at most before the hub gives up on it.
pub const MAX_DELIVER: i64 = 5;

/// Margin added to a site's largest wall-time grant to make its ack wait:
/// time to record the job's end and acknowledge after the run stops.
pub const ACK_MARGIN: Duration = Duration::from_secs(60);

/// Why the job queue could not be used.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum JobsError {
    /// The hub's JetStream API refused or did not answer.
    #[error(
        "job queue {JOBS_STREAM}: {what}: {detail}; check the leaf is connected to the hub and the site's consumer exists (docs/fleet.md §4)"
    )]
    Hub {
        /// What was asked.
        what: String,
        /// What the client said.
        detail: String,
    },
}

fn hub_err(what: &str) -> impl Fn(&dyn std::fmt::Display) -> JobsError + '_ {
    move |e| JobsError::Hub {
        what: what.to_string(),
        detail: e.to_string(),
    }
}

/// One site's consumer settings.
#[derive(Debug, Clone)]
pub struct SiteQueue {
    /// The site.
    pub site: String,
    /// Jobs it runs at once (its serve `concurrency`): the consumer's max ack pending.
    pub concurrency: i64,
    /// The largest wall time any job there may be granted.
    pub max_wall_time: Duration,
}

/// The configuration of `q.site`'s durable pull consumer: its subjects only,
/// explicit acks, ack wait above the largest wall-time grant, at most
/// `concurrency` unacknowledged jobs, at most [`MAX_DELIVER`] deliveries.
pub fn site_consumer_config(q: &SiteQueue) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(subjects::site_consumer(&q.site)),
        filter_subject: subjects::site_jobs_filter(&q.site),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: q.max_wall_time + ACK_MARGIN,
        max_ack_pending: q.concurrency.max(1),
        max_deliver: MAX_DELIVER,
        ..Default::default()
    }
}

/// Creates (or checks) the hub's job stream and each site's consumer (the
/// platform team's side). The stream is a work queue: a job leaves it when
/// the site acknowledges it.
pub async fn ensure_queue(hub: &jetstream::Context, sites: &[SiteQueue]) -> Result<(), JobsError> {
    let s = hub
        .get_or_create_stream(stream::Config {
            name: JOBS_STREAM.to_string(),
            subjects: vec!["fleet.jobs.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            max_message_size: i32::try_from(super::MAX_JOB_REQUEST_BYTES).unwrap_or(i32::MAX),
            duplicate_window: Duration::from_secs(24 * 60 * 60),
            ..Default::default()
        })
        .await
        .map_err(|e| hub_err("create stream")(&e))?;
    for q in sites {
        s.get_or_create_consumer(&subjects::site_consumer(&q.site), site_consumer_config(q))
            .await
            .map_err(|e| hub_err("create consumer")(&e))?;
    }
    Ok(())
}

/// Publishes a signed job request to `site`'s subject for `kind`, with the
/// job id as message id (a second dispatch of one job id is dropped by the
/// hub within a day, and refused by the site as a replay after that).
pub async fn dispatch(
    hub: &jetstream::Context,
    site: &str,
    kind: Kind,
    job: &str,
    signed: Vec<u8>,
) -> Result<u64, JobsError> {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, job);
    let ack = hub
        .publish_with_headers(subjects::job_subject(site, kind), headers, signed.into())
        .await
        .map_err(|e| hub_err("publish")(&e))?
        .await
        .map_err(|e| hub_err("publish acknowledgement")(&e))?;
    Ok(ack.sequence)
}

/// A site's view of its job queue.
#[derive(Debug)]
pub struct Inbox {
    consumer: consumer::PullConsumer,
    site: String,
}

/// An authorised job, to run once; acknowledge it with [`Job::done`]
/// after its end is durable in the log.
#[derive(Debug)]
pub struct Job {
    /// The authorised request.
    pub request: AuthorizedRequest,
    /// How many times the hub has delivered it (1 the first time).
    pub delivered: i64,
    /// SHA-256 of the signed request bytes.
    pub request_sha256: [u8; 32],
    message: jetstream::Message,
}

impl Job {
    /// Acknowledges the job (and waits for the hub to confirm): call only
    /// once its end is durable in the evidence log.
    pub async fn done(self) -> Result<(), JobsError> {
        self.message
            .double_ack()
            .await
            .map_err(|e| hub_err("acknowledge")(&e))
    }

    /// Refuses the job after all (its capsule could not be had, or is not
    /// what the request said): terminated at the hub, never redelivered.
    pub async fn refuse(self) -> Result<(), JobsError> {
        self.message
            .ack_with(AckKind::Term)
            .await
            .map_err(|e| hub_err("terminate")(&e))
    }

    /// Gives the job back to be delivered again after `delay` (the site is
    /// full or draining; nothing was recorded for it).
    pub async fn later(self, delay: Duration) -> Result<(), JobsError> {
        self.message
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(|e| hub_err("give back")(&e))
    }

    /// Tells the hub the job is still running, restarting its ack wait.
    pub async fn still_running(&self) -> Result<(), JobsError> {
        self.message
            .ack_with(AckKind::Progress)
            .await
            .map_err(|e| hub_err("progress")(&e))
    }
}

/// What one pull produced.
#[derive(Debug)]
pub enum Delivery {
    /// An authorised job that is not in the log: run it.
    Job(Box<Job>),
    /// Refused by [`authorize`]; terminated at the hub, so never redelivered.
    /// Record it (`job-request-refused`).
    Refused {
        /// Why.
        refusal: RequestRefusal,
        /// The job id the request claims, unverified, for the record.
        claimed_job: Option<String>,
        /// SHA-256 of the message bytes.
        request_sha256: [u8; 32],
    },
    /// An authorised request whose job id the log already holds (a replay,
    /// or a redelivery after a crash): acknowledged, not run.
    Replay {
        /// The job id.
        job: String,
        /// How many times the hub has delivered it.
        delivered: i64,
    },
}

impl Inbox {
    /// The inbox of `site`, through `hub` (the hub's domain as reached
    /// through the site's leaf).
    pub async fn open(hub: &jetstream::Context, site: &str) -> Result<Self, JobsError> {
        let consumer = hub
            .get_consumer_from_stream(subjects::site_consumer(site), JOBS_STREAM)
            .await
            .map_err(|e| hub_err("open consumer")(&e))?;
        Ok(Self {
            consumer,
            site: site.to_string(),
        })
    }

    /// Waits up to `wait` for one message and judges it under `root` at
    /// `now_ms`; `in_log(job)` says whether the site's log already holds
    /// job id `job`. `None`: nothing arrived.
    pub async fn next(
        &self,
        root: &RootPolicy,
        now_ms: u64,
        in_log: impl Fn(&str) -> bool,
        wait: Duration,
    ) -> Result<Option<Delivery>, JobsError> {
        let mut batch = self
            .consumer
            .fetch()
            .max_messages(1)
            .expires(wait)
            .messages()
            .await
            .map_err(|e| hub_err("fetch")(&e))?;
        let message = match batch.next().await {
            None => return Ok(None),
            Some(m) => m.map_err(|e| hub_err("fetch")(&e))?,
        };
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
        let request_sha256: [u8; 32] = Sha256::digest(&message.payload).into();
        match authorize(&message.payload, root, &self.site, now_ms) {
            Err(refusal) => {
                let claimed_job = claimed_job_id(&message.payload);
                message
                    .ack_with(AckKind::Term)
                    .await
                    .map_err(|e| hub_err("terminate")(&e))?;
                Ok(Some(Delivery::Refused {
                    refusal,
                    claimed_job,
                    request_sha256,
                }))
            }
            Ok(request) if in_log(&request.request().job) => {
                let job = request.request().job.clone();
                message
                    .double_ack()
                    .await
                    .map_err(|e| hub_err("acknowledge")(&e))?;
                Ok(Some(Delivery::Replay { job, delivered }))
            }
            Ok(request) => Ok(Some(Delivery::Job(Box::new(Job {
                request,
                delivered,
                request_sha256,
                message,
            })))),
        }
    }
}
