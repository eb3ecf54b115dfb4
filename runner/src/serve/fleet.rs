//! The daemon's side of the fleet (docs/fleet.md): with a `[fleet]` table,
//! the daemon connects to its site's leaf node (never the hub), takes jobs
//! from its consumer on the hub's queue, and ships its evidence log to the
//! leaf's stream.
//!
//! A fleet job is a local job with another door: the request is authorised
//! by [`crate::fleet::authorize`] under the daemon's trust root, its capsule
//! fetched by digest ([`crate::fleet::capsules`]), then it is submitted to
//! the same [`super::Daemon::submit`] as a job from the socket, so it is
//! accepted, verified, run and ended on the record exactly as one. Its
//! `job-accepted` carries as idempotency digest an HMAC of the fleet job id
//! under a secret derived from the runner key: a redelivery finds it in the
//! log and is acknowledged, not run; no local client can forge it. The
//! message is acknowledged only once the job's end is durable.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::config::FleetConfig;
use super::jobs::{Peer, State};
use super::{Daemon, SubmitError, api, stopped};
use crate::capsule::CheckedCapsule;
use crate::evidence::events::{Event, FleetJobAccepted, JobRequestRefused};
use crate::fleet::jobs::{Delivery, Inbox, Job};
use crate::fleet::ship::{self, Shipper};
use crate::fleet::{capsules, subjects};

/// Purpose string of the secret that keys fleet job markers.
pub const FLEET_MARKER_PURPOSE: &str = "edge-runner/fleet-job-marker/v1";

/// How long a full or draining daemon asks the hub to wait before redelivering.
const RETRY_DELAY: Duration = Duration::from_secs(5);

/// Most `job-request-refused` records per minute: past this, refusals are
/// only counted in the `load-shed` summary (reason `fleet-request-refused`),
/// so a hostile hub cannot grow the log without bound.
pub const REFUSALS_PER_MINUTE: u32 = 60;

/// How often a running fleet job tells the hub it is still running.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// The idempotency digest of fleet job `job`: HMAC-SHA256 under `secret`.
pub fn marker(secret: &[u8; 32], job: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(job.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Every idempotency digest of the log's `job-accepted` records (the log
/// was verified when it was opened).
pub fn accepted_markers(dir: &Path) -> Result<HashSet<[u8; 32]>, String> {
    let bytes = crate::evidence::read_log_dir(dir, u64::MAX).map_err(|e| e.to_string())?;
    let mut out = HashSet::new();
    let mut at = 0;
    while at < bytes.len() {
        let len = match crate::cbor::item_len(&bytes[at..]) {
            Some(n) => n,
            None => {
                crate::cbor::decode_prefix(&bytes[at..])
                    .map_err(|e| format!("record at byte {at}: {e}"))?
                    .1
            }
        };
        if let Some(r) = crate::evidence::read_unverified(&bytes[at..at + len])
            && r.event == "job-accepted"
            && let Ok(body) = crate::cbor::MapReader::new("job-accepted", &r.body)
            && let Ok(d) = body.bytes("idempotency-sha256")
            && let Ok(d) = <[u8; 32]>::try_from(d)
        {
            out.insert(d);
        }
        at += len;
    }
    Ok(out)
}

/// What the fleet task shares between its jobs.
struct Fleet {
    daemon: Arc<Daemon>,
    config: FleetConfig,
    site: String,
    secret: [u8; 32],
    seen: Mutex<HashSet<[u8; 32]>>,
    hub: jetstream::Context,
    /// Refusals recorded in the current minute, and when it started.
    refusals: Mutex<(std::time::Instant, u32)>,
}

/// Runs the fleet side until `stop`: connects to the leaf, ships evidence,
/// takes jobs. Failures are logged and retried; they never stop the daemon.
pub(super) async fn run(
    daemon: Arc<Daemon>,
    config: FleetConfig,
    site: String,
    secret: [u8; 32],
    seen: HashSet<[u8; 32]>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let password = match std::fs::read_to_string(&config.password_file) {
        Ok(p) => p.trim_end_matches(['\r', '\n']).to_string(),
        Err(e) => {
            tracing::error!(
                file = %config.password_file.display(),
                error = %e,
                "fleet: cannot read `fleet.password-file`; the fleet is off until the daemon restarts with it readable"
            );
            return;
        }
    };
    let client = match async_nats::ConnectOptions::with_user_and_password(
        config.user.clone(),
        password,
    )
    .retry_on_initial_connect()
    .connect(config.leaf.as_str())
    .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(leaf = %config.leaf, error = %e, "fleet: cannot connect to the leaf node");
            return;
        }
    };
    let leaf = jetstream::new(client.clone());
    let fleet = Arc::new(Fleet {
        hub: jetstream::with_domain(client, subjects::HUB_DOMAIN),
        daemon,
        site,
        secret,
        seen: Mutex::new(seen),
        refusals: Mutex::new((std::time::Instant::now(), 0)),
        config,
    });
    let shipping = tokio::spawn(ship_loop(Arc::clone(&fleet), leaf, stop.clone()));
    tokio::select! {
        _ = job_loop(Arc::clone(&fleet)) => {}
        _ = stopped(&mut stop) => {}
    }
    shipping.abort();
}

/// Ships the log to the leaf every `poll`; a pause or an unreachable leaf
/// is logged once per change and retried.
async fn ship_loop(
    fleet: Arc<Fleet>,
    leaf: jetstream::Context,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let shipper = Shipper::new(leaf.clone(), &fleet.site, &fleet.daemon.config.evidence);
    let mut stream_ready = false;
    let mut last_problem = String::new();
    loop {
        if !stream_ready {
            match ship::ensure_site_stream(&leaf, &fleet.site, fleet.config.evidence_stream_bytes)
                .await
            {
                Ok(()) => stream_ready = true,
                Err(e) => note(&mut last_problem, e.to_string()),
            }
        }
        if stream_ready {
            match shipper.ship().await {
                Ok(s) => {
                    if !last_problem.is_empty() || s.published > 0 {
                        tracing::debug!(
                            published = s.published,
                            next = s.next_seq,
                            "fleet: evidence shipped"
                        );
                    }
                    last_problem.clear();
                }
                Err(e) => note(&mut last_problem, e.to_string()),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(fleet.config.poll) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

fn note(last: &mut String, problem: String) {
    if *last != problem {
        tracing::warn!(problem = %problem, "fleet");
        *last = problem;
    }
}

/// Takes jobs until the task is stopped.
async fn job_loop(fleet: Arc<Fleet>) {
    let mut inbox: Option<Inbox> = None;
    let mut last_problem = String::new();
    loop {
        if fleet.daemon.board.draining() {
            return;
        }
        let Some(current) = inbox.as_ref() else {
            match Inbox::open(&fleet.hub, &fleet.site).await {
                Ok(i) => inbox = Some(i),
                Err(e) => {
                    note(&mut last_problem, e.to_string());
                    tokio::time::sleep(fleet.config.poll).await;
                }
            }
            continue;
        };
        if fleet.daemon.board.full() {
            tokio::time::sleep(fleet.config.poll).await;
            continue;
        }
        let root = {
            let d = Arc::clone(&fleet.daemon);
            match tokio::task::spawn_blocking(move || d.trust_root()).await {
                Ok(Ok(root)) => root,
                Ok(Err(e)) => {
                    note(
                        &mut last_problem,
                        format!("trust root unusable, no fleet jobs taken: {e}"),
                    );
                    tokio::time::sleep(fleet.config.poll).await;
                    continue;
                }
                Err(_) => return,
            }
        };
        let seen = |job: &str| {
            let m = marker(&fleet.secret, job);
            fleet
                .seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&m)
        };
        match current
            .next(&root, super::now_ms(), seen, fleet.config.poll)
            .await
        {
            Ok(None) => {}
            Ok(Some(Delivery::Job(job))) => {
                tokio::spawn(take(Arc::clone(&fleet), *job));
            }
            Ok(Some(Delivery::Refused {
                refusal,
                claimed_job,
                request_sha256,
            })) => {
                tracing::warn!(job = ?claimed_job, refusal = %refusal, "fleet: job request refused");
                record_refusal(
                    &fleet,
                    claimed_job,
                    refusal.code(),
                    refusal.to_string(),
                    request_sha256,
                )
                .await;
            }
            Ok(Some(Delivery::Replay { job, delivered })) => {
                tracing::info!(job = %job, delivered, "fleet: job already in the log; acknowledged, not run again");
            }
            Err(e) => {
                note(&mut last_problem, e.to_string());
                inbox = None;
                tokio::time::sleep(fleet.config.poll).await;
            }
        }
    }
}

async fn record_refusal(
    fleet: &Fleet,
    claimed_job: Option<String>,
    reason: &str,
    detail: String,
    request_sha256: [u8; 32],
) {
    {
        let mut budget = fleet.refusals.lock().unwrap_or_else(|p| p.into_inner());
        if budget.0.elapsed() >= Duration::from_secs(60) {
            *budget = (std::time::Instant::now(), 0);
        }
        if budget.1 >= REFUSALS_PER_MINUTE {
            fleet.daemon.count_shed("fleet-request-refused");
            return;
        }
        budget.1 += 1;
    }
    let mut detail = detail;
    if detail.len() > crate::evidence::events::MAX_REFUSAL_DETAIL_BYTES {
        let mut cut = crate::evidence::events::MAX_REFUSAL_DETAIL_BYTES;
        while !detail.is_char_boundary(cut) {
            cut -= 1;
        }
        detail.truncate(cut);
    }
    let event = Event::from(JobRequestRefused {
        claimed_job,
        reason: reason.to_string(),
        detail,
        request_sha256,
    });
    let log = fleet.daemon.log.clone();
    match tokio::task::spawn_blocking(move || log.record(event)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "fleet: could not record a refused job request"),
        Err(e) => tracing::error!(error = %e, "fleet: could not record a refused job request"),
    }
}

/// Fetches, submits and watches one authorised job; acknowledges it once its end is durable.
async fn take(fleet: Arc<Fleet>, job: Job) {
    let request = job.request.request().clone();
    let limit = fleet.config.max_capsule_bytes;
    let refuse = |detail: String| async {
        tracing::warn!(job = %request.job, detail = %detail, "fleet: job refused");
        record_refusal(
            &fleet,
            Some(request.job.clone()),
            "capsule-refused",
            detail,
            job.request_sha256,
        )
        .await;
    };
    let capsule = match capsules::fetch(&fleet.hub, &request.capsule_sha256, limit).await {
        Ok(c) => c,
        Err(e) => {
            refuse(e.to_string()).await;
            let _ = job.refuse().await;
            return;
        }
    };
    let signature = match &request.signature_sha256 {
        None => None,
        Some(d) => match capsules::fetch(&fleet.hub, d, limit).await {
            Ok(s) => Some(s),
            Err(e) => {
                refuse(e.to_string()).await;
                let _ = job.refuse().await;
                return;
            }
        },
    };
    // The dispatcher was authorised for the request's kind: the capsule must be of it.
    let parsed = match &signature {
        None => CheckedCapsule::parse(capsule.clone()),
        Some(s) => CheckedCapsule::parse_detached(capsule.clone(), s),
    };
    if let Ok(checked) = &parsed
        && checked.manifest().kind != request.kind
    {
        refuse(format!(
            "the request says kind `{}` but capsule {} is signed as kind `{}`; the dispatcher may not send it",
            request.kind,
            hex::encode(request.capsule_sha256),
            checked.manifest().kind
        ))
        .await;
        let _ = job.refuse().await;
        return;
    }
    // A capsule that does not parse is submitted all the same: the daemon
    // refuses it on the record, as it would from a local client.
    let idempotency = marker(&fleet.secret, &request.job);
    let peer = Peer {
        uid: fleet.daemon.uid,
        gid: current_gid(),
        pid: 0,
    };
    let submission = api::Submission {
        capsule: Arc::new(capsule),
        signature,
        input: request.input.clone(),
        idempotency: Some(idempotency),
    };
    let (view, created) = match fleet.daemon.submit(peer, submission).await {
        Ok(v) => v,
        Err(SubmitError::Rejected(why)) => {
            tracing::info!(job = %request.job, why = ?why, "fleet: daemon busy; the hub redelivers later");
            let _ = job.later(RETRY_DELAY).await;
            return;
        }
        Err(SubmitError::Evidence(e)) => {
            tracing::error!(job = %request.job, error = %e, "fleet: could not record the job's acceptance; the hub redelivers later");
            let _ = job.later(RETRY_DELAY).await;
            return;
        }
    };
    fleet
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(idempotency);
    if created {
        let event = Event::from(FleetJobAccepted {
            local_job: view.id,
            fleet_job: request.job.clone(),
            dispatcher: job.request.dispatcher().to_string(),
            request_sha256: job.request_sha256,
        });
        let log = fleet.daemon.log.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || log.record(event)).await {
            tracing::error!(error = %e, "fleet: could not record where a job came from");
        }
    }
    loop {
        match fleet.daemon.board.wait_end(view.id, PROGRESS_EVERY).await {
            Some(v) if matches!(v.state, State::Ended(_)) => break,
            // Forgotten by the board: ended long ago.
            None => break,
            Some(_) => {
                let _ = job.still_running().await;
            }
        }
    }
    // The worker records the end durably before the board shows it ended.
    if let Err(e) = job.done().await {
        tracing::warn!(job = %request.job, error = %e, "fleet: acknowledgement lost; the hub redelivers and the log answers");
    }
}

fn current_gid() -> u32 {
    #[cfg(unix)]
    {
        rustix::process::getegid().as_raw()
    }
    #[cfg(not(unix))]
    {
        0
    }
}
