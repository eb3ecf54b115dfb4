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
//!
//! Trust root and governance versions the hub announces
//! ([`crate::fleet::updates`]) are installed only through the trust store's
//! and governance's own `install`, the checks of `edge-runner trust install`
//! and `governance install`, after the evidence's rollback marks; each
//! install and each refusal is recorded.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::config::FleetConfig;
use super::jobs::{Peer, State};
use super::{Daemon, SubmitError, api, stopped};
use crate::capsule::CheckedCapsule;
use crate::evidence::events::{
    Event, FleetJobAccepted, JobRequestRefused, TrustUpdateInstalled, TrustUpdateRefused,
};
use crate::evidence::witness::{self, MAX_NOTE_BYTES, WitnessKey};
use crate::fleet::cosigned;
use crate::fleet::jobs::{Delivery, Inbox, Job};
use crate::fleet::ship::{self, Shipper};
use crate::fleet::status::SiteHead;
use crate::fleet::updates::{self, UpdateKind};
use crate::fleet::{capsules, subjects};
use crate::governance::{self, Governance, GovernanceError};
use crate::keys::PublicKey;
use crate::rollback::HighWater;
use crate::timestamp::Timestamp;
use crate::trust::{SignedRoot, TrustError, TrustRoot, store};

/// Purpose string of the secret that keys fleet job markers.
pub const FLEET_MARKER_PURPOSE: &str = "edge-runner/fleet-job-marker/v1";

/// How long a full or draining daemon asks the hub to wait before redelivering.
const RETRY_DELAY: Duration = Duration::from_secs(5);

/// Most `job-request-refused` records per minute: past this, refusals are
/// only counted in the `load-shed` summary (reason `fleet-request-refused`),
/// so a hostile hub cannot grow the log without bound.
pub const REFUSALS_PER_MINUTE: u32 = 60;

/// How long the update watch may stay quiet before a pending version is tried
/// again (one whose object the hub could not serve yet).
const UPDATE_RETRY: Duration = Duration::from_secs(10);

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
    /// Records the leaf has acknowledged (the next sequence to ship);
    /// [`u64::MAX`] until the shipper first reached it.
    shipped: AtomicU64,
}

impl Fleet {
    /// Whether one more refusal may be recorded this minute (shared by job
    /// requests and trust updates); past the budget it is counted under
    /// `shed` in the `load-shed` summary instead.
    fn refusal_allowed(&self, shed: &'static str) -> bool {
        let mut budget = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        if budget.0.elapsed() >= Duration::from_secs(60) {
            *budget = (std::time::Instant::now(), 0);
        }
        if budget.1 >= REFUSALS_PER_MINUTE {
            self.daemon.count_shed(shed);
            return false;
        }
        budget.1 += 1;
        true
    }

    /// Records `event`, logging (not failing) when it cannot.
    async fn record(&self, event: Event, what: &'static str) {
        let log = self.daemon.log.clone();
        match tokio::task::spawn_blocking(move || log.record(event)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "fleet: could not record {what}"),
            Err(e) => tracing::error!(error = %e, "fleet: could not record {what}"),
        }
    }
}

/// `detail` cut to [`crate::evidence::events::MAX_REFUSAL_DETAIL_BYTES`] at a character boundary.
fn bounded_detail(mut detail: String) -> String {
    if detail.len() > crate::evidence::events::MAX_REFUSAL_DETAIL_BYTES {
        let mut cut = crate::evidence::events::MAX_REFUSAL_DETAIL_BYTES;
        while !detail.is_char_boundary(cut) {
            cut -= 1;
        }
        detail.truncate(cut);
    }
    detail
}

/// Runs the fleet side until `stop`: connects to the leaf, ships evidence,
/// takes jobs. Failures are logged and retried; they never stop the daemon.
pub(super) async fn run(
    daemon: Arc<Daemon>,
    config: FleetConfig,
    site: String,
    secret: [u8; 32],
    seen: HashSet<[u8; 32]>,
    runner_public: PublicKey,
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
        hub: jetstream::with_domain(client.clone(), subjects::HUB_DOMAIN),
        daemon,
        site,
        secret,
        seen: Mutex::new(seen),
        refusals: Mutex::new((std::time::Instant::now(), 0)),
        shipped: AtomicU64::new(u64::MAX),
        config,
    });
    let shipping = tokio::spawn(ship_loop(Arc::clone(&fleet), leaf, stop.clone()));
    let updating = tokio::spawn(update_loop(Arc::clone(&fleet)));
    let answering = tokio::spawn(status_loop(Arc::clone(&fleet), client));
    let keeping = tokio::spawn(cosigned_loop(Arc::clone(&fleet), runner_public));
    tokio::select! {
        _ = job_loop(Arc::clone(&fleet)) => {}
        _ = stopped(&mut stop) => {}
    }
    updating.abort();
    answering.abort();
    keeping.abort();
    shipping.abort();
}

/// Ships the log's durable records to the leaf as soon as a group commit
/// makes new ones durable. After a failure (a pause, an unreachable leaf:
/// logged once per change) it retries every `poll` instead, since a retry
/// re-reads the whole log.
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
            let log = fleet.daemon.log.clone();
            let durable = match tokio::task::spawn_blocking(move || log.with(|l| l.len())).await {
                Ok(Ok(n)) => n,
                // Closed: the daemon is stopping.
                Ok(Err(_)) | Err(_) => return,
            };
            match shipper.ship_durable(durable).await {
                Ok(s) => {
                    fleet.shipped.store(s.next_seq, Ordering::Relaxed);
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
        let healthy = stream_ready && last_problem.is_empty();
        tokio::select! {
            _ = tokio::time::sleep(fleet.config.poll) => {}
            _ = fleet.daemon.committed.notified(), if healthy => {}
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
    if !fleet.refusal_allowed("fleet-request-refused") {
        return;
    }
    let event = Event::from(JobRequestRefused {
        claimed_job,
        reason: reason.to_string(),
        detail: bounded_detail(detail),
        request_sha256,
    });
    fleet.record(event, "a refused job request").await;
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

/// With `fleet.witness-vkey`, fetches the hub witness's newest cosigned
/// checkpoint of this site's log every ten polls and keeps it in
/// `DIR/witnessed/` once it verifies against the log and the witness key
/// ([`witness::keep_cosigned`], as `edge-runner evidence add-cosignature`).
async fn cosigned_loop(fleet: Arc<Fleet>, runner_public: PublicKey) {
    let Some(path) = fleet.config.witness_vkey.clone() else {
        return;
    };
    let witness = match crate::fsio::read_bounded_text(&path, MAX_NOTE_BYTES, "witness vkey")
        .map_err(|e| e.to_string())
        .and_then(|t| WitnessKey::from_vkey(&t).map_err(|e| e.to_string()))
    {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "fleet: `fleet.witness-vkey` is unusable; cosigned checkpoints are not fetched until the daemon restarts with a witness vkey file (`edge-runner evidence witness-init` writes one)");
            return;
        }
    };
    let mut kept = String::new();
    let mut last_problem = String::new();
    loop {
        tokio::time::sleep(fleet.config.poll * 10).await;
        let Ok(log_id) = fleet.daemon.log.with(|l| l.log_id()) else {
            return;
        };
        let offered = match cosigned::latest(&fleet.hub, &fleet.site, &log_id, MAX_NOTE_BYTES).await
        {
            Ok(Some(n)) if n != kept => n,
            Ok(_) => continue,
            Err(e) => {
                note(&mut last_problem, e.to_string());
                continue;
            }
        };
        let f = Arc::clone(&fleet);
        let w = witness.clone();
        let candidate = offered.clone();
        let done = tokio::task::spawn_blocking(move || {
            // Read between group commits: the log is whole.
            let bytes = f
                .daemon
                .log
                .with(|l| crate::evidence::read_log_dir(l.dir(), u64::MAX))
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            let summary = crate::evidence::verify_log(&bytes, &runner_public)
                .map_err(|e| format!("the site's own log does not verify: {e}"))?;
            witness::keep_cosigned(
                &f.daemon.config.evidence,
                &summary,
                &runner_public,
                &w,
                &candidate,
            )
        })
        .await;
        match done {
            Ok(Ok((file, size, _))) => {
                tracing::info!(file = %file.display(), size, witness = %witness.name(), "fleet: kept the hub witness's cosigned checkpoint");
                kept = offered;
            }
            Ok(Err(e)) => {
                note(
                    &mut last_problem,
                    format!("cosigned checkpoint from the hub not kept: {e}"),
                );
                // Not fetched again until it changes.
                kept = offered;
            }
            Err(_) => return,
        }
    }
}

/// Answers status requests on [`subjects::status_subject`] with this
/// site's [`SiteHead`] until the task stops.
async fn status_loop(fleet: Arc<Fleet>, client: async_nats::Client) {
    use futures_util::StreamExt;
    let subject = subjects::status_subject(&fleet.site);
    loop {
        let mut requests = match client.subscribe(subject.clone()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(subject = %subject, error = %e, "fleet: cannot answer status requests");
                tokio::time::sleep(UPDATE_RETRY).await;
                continue;
            }
        };
        while let Some(request) = requests.next().await {
            let Some(reply) = request.reply else { continue };
            let f = Arc::clone(&fleet);
            let Ok(head) = tokio::task::spawn_blocking(move || head(&f)).await else {
                return;
            };
            if let Err(e) = client.publish(reply, head.encode().into()).await {
                tracing::debug!(error = %e, "fleet: status answer not sent");
            }
        }
    }
}

/// This site's head: its log's length, what the leaf acknowledged, the
/// trust root and governance in force.
fn head(fleet: &Fleet) -> SiteHead {
    let (log_id, records) = fleet
        .daemon
        .log
        .with(|l| (l.log_id(), l.len()))
        .unwrap_or(([0; 16], 0));
    let shipped = fleet.shipped.load(Ordering::Relaxed);
    SiteHead {
        log_id,
        records,
        shipped: (shipped != u64::MAX).then_some(shipped),
        trust_root: fleet
            .daemon
            .trust_root()
            .ok()
            .map(|r| (r.name.clone(), r.version)),
        governance: governance::bundle::installed_version(&fleet.daemon.config.trust).unwrap_or(0),
        time_ms: super::now_ms(),
    }
}

/// Follows the hub's trust root and governance announcements until the
/// task stops: each time one arrives (and every [`UPDATE_RETRY`] while a
/// version could not be fetched yet), installs the versions that follow the
/// site's own, in order.
async fn update_loop(fleet: Arc<Fleet>) {
    use futures_util::StreamExt;
    let mut announced: BTreeMap<(UpdateKind, u64), [u8; 32]> = BTreeMap::new();
    // Objects refused once are not fetched again by this daemon: a hostile
    // hub repeating one announcement leaves one record.
    let mut refused: HashSet<[u8; 32]> = HashSet::new();
    let mut last_problem = String::new();
    loop {
        let mut watch = match updates::watch(&fleet.hub).await {
            Ok(w) => w,
            Err(e) => {
                // No bucket yet: the platform has announced nothing.
                note(&mut last_problem, e.to_string());
                tokio::time::sleep(fleet.config.poll).await;
                continue;
            }
        };
        loop {
            match tokio::time::timeout(UPDATE_RETRY, watch.next()).await {
                Err(_) => {}
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    note(
                        &mut last_problem,
                        format!("watching `{}`: {e}", subjects::UPDATES_BUCKET),
                    );
                    break;
                }
                Ok(Some(Ok(entry))) => {
                    if entry.operation != async_nats::jetstream::kv::Operation::Put {
                        continue;
                    }
                    let (Some((kind, version)), Some(digest)) = (
                        UpdateKind::parse_key(&entry.key),
                        updates::announced_digest(&entry.value),
                    ) else {
                        note(
                            &mut last_problem,
                            format!(
                                "ignored announcement `{}`: not `trust-root.N` or `governance.N` naming a SHA-256 in hex",
                                entry.key
                            ),
                        );
                        continue;
                    };
                    announced.insert((kind, version), digest);
                }
            }
            advance(&fleet, &announced, &mut refused, &mut last_problem).await;
        }
        tokio::time::sleep(fleet.config.poll).await;
    }
}

/// Installs, for each kind (trust roots first), the announced versions that
/// follow the installed one, until one is missing, refused or cannot be fetched yet.
async fn advance(
    fleet: &Arc<Fleet>,
    announced: &BTreeMap<(UpdateKind, u64), [u8; 32]>,
    refused: &mut HashSet<[u8; 32]>,
    last_problem: &mut String,
) {
    for kind in UpdateKind::ALL {
        loop {
            let trust = fleet.daemon.config.trust.clone();
            let current =
                tokio::task::spawn_blocking(move || installed_version(&trust, kind)).await;
            let current = match current {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    note(
                        last_problem,
                        format!("cannot read the installed {kind}: {e}"),
                    );
                    break;
                }
                Err(_) => return,
            };
            let Some(&digest) = announced.get(&(kind, current + 1)) else {
                break;
            };
            if refused.contains(&digest) {
                break;
            }
            let bytes = match capsules::fetch(&fleet.hub, &digest, kind.limit()).await {
                Ok(b) => b,
                Err(capsules::ObjectError::Store(e)) => {
                    // Not yet at the hub, or the hub is away: tried again later.
                    note(last_problem, format!("{kind} v{}: {e}", current + 1));
                    break;
                }
                Err(e) => {
                    refused.insert(digest);
                    refuse_update(fleet, kind, current + 1, digest, "object", e.to_string()).await;
                    break;
                }
            };
            let f = Arc::clone(fleet);
            let done = tokio::task::spawn_blocking(move || {
                install_update(&f, kind, current + 1, &bytes, digest)
            })
            .await;
            match done {
                Ok(Ok(installed)) => {
                    tracing::info!(
                        what = %kind,
                        name = %installed.name,
                        version = installed.version,
                        "fleet: installed a version announced by the hub"
                    );
                    fleet
                        .record(Event::from(installed), "an installed trust update")
                        .await;
                }
                Ok(Err(UpdateRefusal { code, detail })) => {
                    refused.insert(digest);
                    refuse_update(fleet, kind, current + 1, digest, code, detail).await;
                    break;
                }
                Err(_) => return,
            }
        }
    }
}

/// The installed version of `kind` in the trust store `trust` (0: no governance yet).
fn installed_version(trust: &Path, kind: UpdateKind) -> Result<u64, String> {
    match kind {
        UpdateKind::TrustRoot => store::Chain::read_dir(trust)
            .map(|c| c.latest().version)
            .map_err(|e| e.to_string()),
        UpdateKind::Governance => {
            governance::bundle::installed_version(trust).map_err(|e| e.to_string())
        }
    }
}

/// Why an announced version was not installed: a code for the record and the words.
struct UpdateRefusal {
    code: &'static str,
    detail: String,
}

fn refusal(code: &'static str, detail: impl std::fmt::Display) -> UpdateRefusal {
    UpdateRefusal {
        code,
        detail: detail.to_string(),
    }
}

/// Checks and installs `bytes`, announced as version `next` of `kind` (the
/// one after the installed version): first the evidence's rollback marks,
/// then the trust store's or governance's own `install`, which checks the
/// chain, the thresholds and expiry and writes atomically.
fn install_update(
    fleet: &Fleet,
    kind: UpdateKind,
    next: u64,
    bytes: &[u8],
    object_sha256: [u8; 32],
) -> Result<TrustUpdateInstalled, UpdateRefusal> {
    let trust = &fleet.daemon.config.trust;
    let origin = format!(
        "{kind} v{next} from the hub (object {})",
        hex::encode(object_sha256)
    );
    let marks: HighWater = fleet
        .daemon
        .log
        .with(|l| l.high_water().clone())
        .map_err(|e| {
            refusal(
                "invalid",
                format!("reading the evidence's rollback marks: {e}"),
            )
        })?;
    let now = Timestamp::now();
    let not_next = |version: u64| {
        if version < next {
            refusal(
                "rollback",
                format!(
                    "{origin} is v{version}, but v{} is installed; a {} never goes back. Refused: investigate the hub, which announced an old version as new",
                    next - 1,
                    kind.noun()
                ),
            )
        } else {
            refusal(
                "not-next",
                format!(
                    "{origin} is v{version}, but the next version is v{next}; refused. Publish every version in order (`edge-runner fleet publish-{}`)",
                    if kind == UpdateKind::TrustRoot {
                        "trust"
                    } else {
                        "governance"
                    }
                ),
            )
        }
    };
    match kind {
        UpdateKind::TrustRoot => {
            let signed = SignedRoot::parse(bytes, &origin).map_err(|e| refusal("malformed", e))?;
            let policy = &signed.policy;
            if policy.version != next {
                return Err(not_next(policy.version));
            }
            marks
                .check_root(&policy.name, policy.version)
                .map_err(|e| refusal("rollback", format!("{origin}: {e}; {}", e.fix())))?;
            let link = store::install(trust, bytes, now).map_err(|e| match e {
                TrustError::RootNotSigned(_) => refusal("not-signed", e),
                _ if now >= policy.expires => refusal("expired", e),
                _ => refusal("invalid", e),
            })?;
            let mut signed_by: Vec<String> =
                link.by_previous.map(|p| p.signed_by).unwrap_or_default();
            for name in link.by_self.signed_by {
                if !signed_by.contains(&name) {
                    signed_by.push(name);
                }
            }
            Ok(TrustUpdateInstalled {
                what: kind.as_str().into(),
                name: policy.name.clone(),
                version: link.version,
                sha256: link.digest,
                object_sha256,
                signed_by,
            })
        }
        UpdateKind::Governance => {
            let root: Arc<TrustRoot> = fleet.daemon.trust_root().map_err(|e| {
                refusal(
                    "invalid",
                    format!("{origin}: no trust root to judge it by: {e}"),
                )
            })?;
            let gov = Governance::from_signed(bytes, &root, Some(now)).map_err(|e| match e {
                GovernanceError::NotSigned { .. } => refusal("not-signed", e),
                GovernanceError::Expired { .. } => refusal("expired", e),
                _ => refusal("malformed", format!("{origin}: {e}")),
            })?;
            if gov.version() != next {
                return Err(not_next(gov.version()));
            }
            gov.check_high_water(&marks)
                .map_err(|e| refusal("rollback", e))?;
            let gov = governance::install(trust, bytes, &root, now).map_err(|e| match e {
                GovernanceError::Rollback { .. } => refusal("rollback", e),
                _ => refusal("invalid", e),
            })?;
            Ok(TrustUpdateInstalled {
                what: kind.as_str().into(),
                name: gov.name().to_string(),
                version: gov.version(),
                sha256: gov.digest(),
                object_sha256,
                signed_by: gov.signed_by().to_vec(),
            })
        }
    }
}

async fn refuse_update(
    fleet: &Fleet,
    kind: UpdateKind,
    announced_version: u64,
    object_sha256: [u8; 32],
    reason: &str,
    detail: String,
) {
    tracing::warn!(what = %kind, version = announced_version, reason, detail = %detail, "fleet: announced version refused");
    if !fleet.refusal_allowed("fleet-update-refused") {
        return;
    }
    let event = Event::from(TrustUpdateRefused {
        what: kind.as_str().into(),
        announced_version,
        object_sha256,
        reason: reason.to_string(),
        detail: bounded_detail(detail),
    });
    fleet.record(event, "a refused trust update").await;
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
