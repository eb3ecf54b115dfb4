//! `edge-runner fleet`: the platform team's side of the fleet
//! (docs/fleet.md): publish capsules to the hub, dispatch signed jobs, and
//! collect every site's evidence as a verifier and witness. Flags become a
//! connection and a request here; every decision is the library's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use async_nats::jetstream;
use clap::{Args, Subcommand};

use super::Exit;
use crate::capsule::{CheckedCapsule, MAX_CAPSULE_BYTES, MAX_SIGNATURE_SECTION_BYTES};
use crate::evidence::witness::{Witness, WitnessState};
use crate::fleet::collect::{Collector, CollectorState, FleetJobState, SiteKey, SiteReport};
use crate::fleet::cosigned;
use crate::fleet::status::SiteHead;
use crate::fleet::updates::{self, UpdateKind};
use crate::fleet::{JobRequest, MAX_JOB_INPUT_BYTES, capsules, jobs, subjects};
use crate::fsio::{read_bounded, read_bounded_text};
use crate::keys::{PublicKey, SecretKey};
use crate::timestamp::Timestamp;

/// Fleet commands.
#[derive(Debug, Subcommand)]
pub(super) enum FleetCommand {
    /// Create (or check) the hub's job queue, each site's consumer, the capsule store and the evidence stream.
    Init(InitArgs),
    /// Store capsules (and detached signatures) in the hub's object store, by SHA-256.
    Publish(PublishArgs),
    /// Store a signed trust root version in the hub and announce it to every site.
    PublishTrust(PublishTrustArgs),
    /// Store a signed governance bundle in the hub and announce it to every site.
    PublishGovernance(PublishGovernanceArgs),
    /// Sign a job request with a dispatcher key and queue it for one site.
    Submit(SubmitArgs),
    /// Verify every site's evidence at the hub; cosign checkpoints as a witness.
    Collect(CollectArgs),
    /// Per site: the last record at the hub, shipping lag, trust root in force, open jobs.
    Status(StatusArgs),
}

impl FleetCommand {
    pub(super) fn execute(self) -> Result<Exit> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the fleet client's runtime")?;
        match self {
            FleetCommand::Init(a) => runtime.block_on(a.execute()),
            FleetCommand::Publish(a) => runtime.block_on(a.execute()),
            FleetCommand::PublishTrust(a) => {
                runtime.block_on(a.file.publish(UpdateKind::TrustRoot))
            }
            FleetCommand::PublishGovernance(a) => {
                runtime.block_on(a.file.publish(UpdateKind::Governance))
            }
            FleetCommand::Submit(a) => runtime.block_on(a.execute()),
            FleetCommand::Collect(a) => runtime.block_on(a.execute()),
            FleetCommand::Status(a) => runtime.block_on(a.execute()),
        }
    }
}

/// The collector's state file in its `--state` directory.
const COLLECTOR_STATE_FILE: &str = "collector.state";

/// How to reach the hub.
#[derive(Debug, Args)]
struct Hub {
    /// The hub's client URL.
    #[arg(
        long,
        env = "EDGE_RUNNER_FLEET_HUB",
        default_value = "nats://127.0.0.1:4222"
    )]
    hub: String,
    /// The user to connect as.
    #[arg(long, default_value = "fleet-admin")]
    user: String,
    /// A file holding the user's password (one line).
    #[arg(long, value_name = "FILE")]
    password_file: PathBuf,
}

impl Hub {
    async fn connect(&self) -> Result<jetstream::Context> {
        let password = read_bounded_text(&self.password_file, 4096, "password file")?;
        let client = async_nats::ConnectOptions::with_user_and_password(
            self.user.clone(),
            password.trim_end_matches(['\r', '\n']).to_string(),
        )
        .connection_timeout(Duration::from_secs(5))
        .connect(self.hub.as_str())
        .await
        .with_context(|| {
            format!(
                "connecting to the hub at {} as `{}`; is the hub running (packaging/nats/hub.conf)?",
                self.hub, self.user
            )
        })?;
        Ok(jetstream::new(client))
    }
}

#[derive(Debug, Args)]
pub(super) struct InitArgs {
    /// The sites, each with its own consumer and evidence source.
    #[arg(long = "site", required = true, value_parser = super::site_name)]
    sites: Vec<String>,
    /// Jobs a site runs at once (its serve `queue.concurrency`): its consumer's max ack pending.
    #[arg(long, default_value_t = 2)]
    concurrency: i64,
    /// The largest wall time any job may be granted; the ack wait is this plus 60 s.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    max_wall_time: u64,
    #[command(flatten)]
    hub: Hub,
}

impl InitArgs {
    async fn execute(self) -> Result<Exit> {
        let hub = self.hub.connect().await?;
        let queues: Vec<jobs::SiteQueue> = self
            .sites
            .iter()
            .map(|site| jobs::SiteQueue {
                site: site.clone(),
                concurrency: self.concurrency,
                max_wall_time: Duration::from_secs(self.max_wall_time),
            })
            .collect();
        jobs::ensure_queue(&hub, &queues).await?;
        capsules::bucket(&hub).await?;
        updates::bucket(&hub).await?;
        cosigned::ensure_stream(&hub).await?;
        let config = crate::fleet::ship::hub_stream_config(&self.sites);
        match hub.get_stream(subjects::HUB_EVIDENCE_STREAM).await {
            Ok(_) => {
                hub.update_stream(&config)
                    .await
                    .with_context(|| format!("updating {}", subjects::HUB_EVIDENCE_STREAM))?;
            }
            Err(_) => {
                hub.create_stream(config)
                    .await
                    .with_context(|| format!("creating {}", subjects::HUB_EVIDENCE_STREAM))?;
            }
        }
        say!(
            "hub ready: {} (consumers {}), {}, {}, {} sourcing {}",
            subjects::JOBS_STREAM,
            self.sites
                .iter()
                .map(|s| subjects::site_consumer(s))
                .collect::<Vec<_>>()
                .join(", "),
            subjects::CAPSULE_BUCKET,
            subjects::UPDATES_BUCKET,
            subjects::HUB_EVIDENCE_STREAM,
            self.sites.join(", ")
        )?;
        Ok(Exit::Ok)
    }
}

#[derive(Debug, Args)]
pub(super) struct PublishArgs {
    /// Capsule files and detached signature files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    hub: Hub,
}

impl PublishArgs {
    async fn execute(self) -> Result<Exit> {
        let hub = self.hub.connect().await?;
        for path in &self.files {
            let bytes = read_bounded(path, MAX_CAPSULE_BYTES as u64, "capsule")?;
            let digest = capsules::publish(&hub, &bytes).await?;
            say!("{}  {}", hex::encode(digest), path.display())?;
        }
        Ok(Exit::Ok)
    }
}

#[derive(Debug, Args)]
pub(super) struct PublishTrustArgs {
    #[command(flatten)]
    file: SignedFile,
}

#[derive(Debug, Args)]
pub(super) struct PublishGovernanceArgs {
    #[command(flatten)]
    file: SignedFile,
}

/// A signed trust root version (`trust rotate --stage`, signed by the
/// thresholds) or governance bundle (`governance sign`) to announce.
#[derive(Debug, Args)]
struct SignedFile {
    /// The signed file. Each site installs it only when it is the version
    /// after its own and its signatures chain (docs/fleet.md §4.3).
    file: PathBuf,
    #[command(flatten)]
    hub: Hub,
}

impl SignedFile {
    async fn publish(self, kind: UpdateKind) -> Result<Exit> {
        let bytes = read_bounded(&self.file, kind.limit(), kind.as_str())?;
        let origin = self.file.display().to_string();
        // Checked before connecting: a file that is not signed is the usual mistake.
        updates::version_of(kind, &bytes, &origin)?;
        let hub = self.hub.connect().await?;
        let (version, digest) = updates::publish(&hub, kind, &bytes, &origin).await?;
        say!(
            "{}  {origin}: announced as `{}` in {}; each site installs it after v{} if its signatures chain, and records the install or the refusal",
            hex::encode(digest),
            kind.key(version),
            subjects::UPDATES_BUCKET,
            version.saturating_sub(1)
        )?;
        Ok(Exit::Ok)
    }
}

#[derive(Debug, Args)]
pub(super) struct SubmitArgs {
    /// The site to run it.
    #[arg(long, value_parser = super::site_name)]
    site: String,
    /// The signed capsule.
    capsule: PathBuf,
    /// Its detached signature, if it has one.
    #[arg(long)]
    signature: Option<PathBuf>,
    /// The capsule's input (at most 64 KiB). Default: none.
    #[arg(long)]
    input: Option<PathBuf>,
    /// The dispatcher's secret key (a `[[dispatcher]]` of the site's trust root).
    #[arg(long, value_name = "KEY_FILE")]
    key: PathBuf,
    /// The job id (1-64 letters, digits, `-`, `_`, `.`; unique per site). Default: random.
    #[arg(long)]
    job: Option<String>,
    /// How long the site may still start it.
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    valid_for: u64,
    /// Wait for the job's end in the collected evidence and exit as `run` would.
    #[arg(long, requires = "runner_key")]
    wait: bool,
    /// The site's runner public key, to verify its evidence (with --wait).
    #[arg(long, value_name = "PUB_FILE")]
    runner_key: Option<PathBuf>,
    /// Give up waiting after this long.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    timeout: u64,
    #[command(flatten)]
    hub: Hub,
}

impl SubmitArgs {
    async fn execute(self) -> Result<Exit> {
        let key = SecretKey::load(&self.key)?;
        let capsule = read_bounded(&self.capsule, MAX_CAPSULE_BYTES as u64, "capsule")?;
        let signature = self
            .signature
            .as_deref()
            .map(|p| read_bounded(p, MAX_SIGNATURE_SECTION_BYTES as u64, "detached signature"))
            .transpose()?;
        let input = match &self.input {
            Some(p) => read_bounded(p, MAX_JOB_INPUT_BYTES as u64, "input")?,
            None => Vec::new(),
        };
        // The kind is the capsule's own; the site checks them against each other.
        let checked = match &signature {
            None => CheckedCapsule::parse(capsule.clone()),
            Some(s) => CheckedCapsule::parse_detached(capsule.clone(), s),
        }
        .with_context(|| format!("{} is not a signed capsule", self.capsule.display()))?;
        let job = match self.job {
            Some(j) => j,
            None => {
                let mut b = [0u8; 8];
                getrandom::fill(&mut b).map_err(|e| anyhow!("no randomness for a job id: {e}"))?;
                format!("job-{}", hex::encode(b))
            }
        };
        let now = Timestamp::now().0;
        let request = JobRequest {
            job: job.clone(),
            site: self.site.clone(),
            kind: checked.manifest().kind,
            capsule_sha256: sha256(&capsule),
            signature_sha256: signature.as_deref().map(sha256),
            input,
            not_after_ms: now
                .saturating_mul(1000)
                .saturating_add(self.valid_for.saturating_mul(1000)),
        };
        let signed = request
            .sign(&key)
            .map_err(|e| anyhow!("the job request: {e}"))?;
        let hub = self.hub.connect().await?;
        capsules::publish(&hub, &capsule).await?;
        if let Some(s) = &signature {
            capsules::publish(&hub, s).await?;
        }
        jobs::dispatch(&hub, &self.site, request.kind, &job, signed).await?;
        say!(
            "dispatched {job} to {} ({} capsule {})",
            self.site,
            request.kind,
            hex::encode(request.capsule_sha256)
        )?;
        if !self.wait {
            return Ok(Exit::Ok);
        }
        let runner_key = match &self.runner_key {
            Some(p) => PublicKey::load(p)?,
            None => bail!("--wait needs --runner-key"),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(self.timeout);
        loop {
            let mut collector = Collector::new(vec![SiteKey {
                site: self.site.clone(),
                runner_key,
            }]);
            collector.read_hub(&hub).await?;
            let report = collector.finish(None, Timestamp::now());
            if let Some(exit) = job_end(&report, &self.site, &job)? {
                return Ok(exit);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "job {job} has not ended in the evidence at the hub after {} s; `edge-runner fleet status` shows whether {} took it",
                    self.timeout,
                    self.site
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// The end of fleet job `job` at `site` in verified evidence, printed, as an exit code.
fn job_end(report: &[SiteReport], site: &str, job: &str) -> Result<Option<Exit>> {
    let Some(r) = report.iter().find(|r| r.site == site) else {
        return Ok(None);
    };
    let logs = match &r.verdict {
        Ok(logs) => logs,
        Err(fault) => {
            say!("{site}: INVALID: {fault}")?;
            return Ok(Some(Exit::EvidenceInvalid));
        }
    };
    for result in logs.iter().flat_map(|l| &l.fleet_jobs) {
        if result.fleet_job != job {
            continue;
        }
        match &result.state {
            FleetJobState::Running { .. } => return Ok(None),
            FleetJobState::Ended {
                local_job,
                outcome,
                exit,
            } => {
                say!("{job}: {outcome} (job {local_job} at {site}; evidence verified)")?;
                return Ok(Some(match *exit {
                    0 => Exit::Ok,
                    3 => Exit::Refused,
                    5 => Exit::VerdictFail,
                    6 => Exit::RunAbnormal,
                    _ => Exit::Error,
                }));
            }
            FleetJobState::Refused { reason, detail } => {
                say!("{job}: refused by {site} ({reason}): {detail}")?;
                return Ok(Some(Exit::Refused));
            }
        }
    }
    Ok(None)
}

#[derive(Debug, Args)]
pub(super) struct CollectArgs {
    /// A site and its runner public key, as SITE=PUB_FILE; repeat for each site.
    #[arg(long = "site", value_name = "SITE=PUB_FILE", required = true)]
    sites: Vec<String>,
    /// A witness directory (`edge-runner evidence witness-init`): cosign each valid
    /// log's newest checkpoint and publish it for its site to read back (FLEET_COSIGNED).
    #[arg(long, value_name = "DIR")]
    witness: Option<PathBuf>,
    /// Where to write the cosigned checkpoints, as DIR/SITE/LOG.witnessed, for the sites to keep.
    #[arg(long, value_name = "DIR", requires = "witness")]
    out: Option<PathBuf>,
    /// Keep the collector's state here (DIR/collector.state) and verify only what
    /// arrived since the last pass without a fault (docs/fleet.md §6.1).
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// With --state: verify every log from record 0 again, then keep the new state.
    #[arg(long, requires = "state")]
    full: bool,
    #[command(flatten)]
    hub: Hub,
}

fn site_keys(specs: &[String]) -> Result<Vec<SiteKey>> {
    specs
        .iter()
        .map(|spec| {
            let (site, path) = spec.split_once('=').ok_or_else(|| {
                anyhow!("--site `{spec}`: write SITE=PUB_FILE, e.g. plant-7=plant-7/runner.pub")
            })?;
            crate::capsule::validate_site(site).map_err(|e| anyhow!("--site `{spec}`: {e}"))?;
            Ok(SiteKey {
                site: site.to_string(),
                runner_key: PublicKey::load(Path::new(path))?,
            })
        })
        .collect()
}

impl CollectArgs {
    async fn execute(self) -> Result<Exit> {
        let sites = site_keys(&self.sites)?;
        let witness = match &self.witness {
            Some(dir) => Some((Witness::load(dir)?, WitnessState::open(dir)?)),
            None => None,
        };
        let state_file = self.state.as_ref().map(|d| d.join(COLLECTOR_STATE_FILE));
        let before = match &state_file {
            Some(path) if !self.full && path.exists() => {
                let bytes =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                CollectorState::decode(&bytes).map_err(|e| {
                    anyhow!(
                        "{}: {e}; it is not a collector state this version wrote. Run with --full to verify from record 0 and write it anew",
                        path.display()
                    )
                })?
            }
            _ => CollectorState::default(),
        };
        let hub = self.hub.connect().await?;
        let mut collector = Collector::resume(sites, before.sites);
        let (read, last) = collector.read_hub_from(&hub, before.stream_seq + 1).await?;
        for (subject, n) in collector.unknown_subjects() {
            say!("{subject}: {n} message(s) for no --site given; not verified")?;
        }
        let reports = collector.finish(witness.as_ref().map(|(w, s)| (w, s)), Timestamp::now());
        let mut exit = Exit::Ok;
        // The state moves on only after a pass without a fault, so a fault is reported again.
        if let Some(path) = &state_file
            && reports.iter().all(|r| r.progress.is_some())
        {
            let state = CollectorState {
                stream_seq: last.max(before.stream_seq),
                sites: reports
                    .iter()
                    .filter_map(|r| r.progress.clone().map(|p| (r.site.clone(), p)))
                    .collect(),
            };
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let bytes = state
                .encode()
                .map_err(|e| anyhow!("collector state: {e}"))?;
            crate::fsio::write_atomically(path, &bytes)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        for r in &reports {
            match &r.verdict {
                Ok(logs) => {
                    let records: u64 = logs.iter().map(|l| l.records).sum();
                    let now: u64 = logs.iter().map(|l| l.verified_now).sum();
                    let cosigned = logs.iter().filter(|l| l.witnessed.is_some()).count();
                    say!(
                        "{}: VALID: {} log(s), {records} record(s) ({now} new in this pass){}",
                        r.site,
                        logs.len(),
                        if witness.is_some() {
                            format!(", {cosigned} checkpoint(s) cosigned")
                        } else {
                            String::new()
                        }
                    )?;
                    // Each site reads its own cosigned checkpoints back (docs/fleet.md §6.2).
                    if witness.is_some() {
                        cosigned::ensure_stream(&hub).await?;
                    }
                    for l in logs {
                        if let Some(note) = &l.witnessed {
                            let mut log_id = [0u8; 16];
                            hex::decode_to_slice(&l.log, &mut log_id)
                                .with_context(|| format!("log id {}", l.log))?;
                            cosigned::publish(&hub, &r.site, &log_id, note).await?;
                        }
                    }
                    if let Some(out) = &self.out {
                        for l in logs {
                            if let Some(note) = &l.witnessed {
                                let dir = out.join(&r.site);
                                std::fs::create_dir_all(&dir)
                                    .with_context(|| format!("creating {}", dir.display()))?;
                                let path = dir.join(format!("{}.witnessed", l.log));
                                crate::fsio::write_atomically(&path, note.as_bytes())
                                    .with_context(|| format!("writing {}", path.display()))?;
                            }
                        }
                    }
                }
                Err(fault) => {
                    say!("{}: INVALID: {fault}", r.site)?;
                    exit = Exit::EvidenceInvalid;
                }
            }
        }
        say!(
            "{read} message(s) read from {}",
            subjects::HUB_EVIDENCE_STREAM
        )?;
        Ok(exit)
    }
}

#[derive(Debug, Args)]
pub(super) struct StatusArgs {
    /// The sites to show.
    #[arg(long = "site", required = true, value_parser = super::site_name)]
    sites: Vec<String>,
    /// How long to wait for each site's own answer (log length, trust root).
    #[arg(long, default_value_t = 2, value_name = "SECONDS")]
    answer_within: u64,
    #[command(flatten)]
    hub: Hub,
}

impl StatusArgs {
    async fn execute(self) -> Result<Exit> {
        let hub = self.hub.connect().await?;
        let evidence = hub.get_stream(subjects::HUB_EVIDENCE_STREAM).await.ok();
        for site in &self.sites {
            // The newest record at the hub: (log id, sequence).
            let mut at_hub: Option<([u8; 16], u64)> = None;
            let last = match &evidence {
                Some(s) => match s
                    .get_last_raw_message_by_subject(&subjects::evidence_subject(site))
                    .await
                {
                    Ok(m) => match crate::evidence::read_unverified(&m.payload) {
                        Some(r) => {
                            at_hub = Some((r.log_id, r.seq));
                            format!(
                                "last record {} of log {} ({}) [unverified: run `fleet collect`]",
                                r.seq,
                                hex::encode(r.log_id),
                                Timestamp(r.time_ms / 1000)
                            )
                        }
                        None => "last message is not a record".into(),
                    },
                    Err(_) => "no evidence at the hub yet".into(),
                },
                None => format!("no {} stream at the hub", subjects::HUB_EVIDENCE_STREAM),
            };
            let jobs = match hub
                .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
                    subjects::site_consumer(site),
                    subjects::JOBS_STREAM,
                )
                .await
            {
                Ok(mut c) => match c.info().await {
                    Ok(i) => format!(
                        "{} job(s) waiting, {} taken and not acknowledged",
                        i.num_pending, i.num_ack_pending
                    ),
                    Err(e) => format!("consumer: {e}"),
                },
                Err(_) => format!("no consumer {}", subjects::site_consumer(site)),
            };
            say!("{site}: {last}; {jobs}")?;
            match ask_head(&hub, site, Duration::from_secs(self.answer_within)).await {
                Ok(head) => {
                    say!("  {}", lag(&head, at_hub))?;
                    say!(
                        "  trust root {}, governance {} [the site's answer]",
                        head.trust_root
                            .as_ref()
                            .map(|(name, v)| format!("`{name}` v{v}"))
                            .unwrap_or_else(|| "unusable".into()),
                        match head.governance {
                            0 => "none".to_string(),
                            v => format!("v{v}"),
                        }
                    )?;
                }
                Err(why) => say!("  shipping lag and trust root unknown: {why}")?,
            }
        }
        Ok(Exit::Ok)
    }
}

/// Asks `site`'s daemon for its head through the hub and its leaf.
async fn ask_head(
    hub: &jetstream::Context,
    site: &str,
    within: Duration,
) -> std::result::Result<SiteHead, String> {
    let client = hub.client();
    let asked = client.request(subjects::status_subject(site), Vec::new().into());
    match tokio::time::timeout(within, asked).await {
        Err(_) => Err(format!(
            "the site did not answer within {} s (its serve is stopped, or its leaf is cut off from the hub)",
            within.as_secs()
        )),
        Ok(Err(e)) => Err(format!(
            "the site did not answer ({e}): its serve is stopped, or its leaf is cut off from the hub"
        )),
        Ok(Ok(m)) => SiteHead::decode(&m.payload)
            .map_err(|e| format!("the site's answer is not a status head: {e}")),
    }
}

/// The shipping lag: records in the site's log (as it says) past the newest
/// one at the hub, and how many of those its leaf holds already.
fn lag(head: &SiteHead, at_hub: Option<([u8; 16], u64)>) -> String {
    let log = hex::encode(head.log_id);
    let at_leaf = match head.shipped {
        Some(n) => format!("{n} acknowledged by its leaf"),
        None => "its leaf not reached since serve started".into(),
    };
    match at_hub {
        Some((id, seq)) if id == head.log_id => format!(
            "shipping lag {} record(s): the site's log {log} holds {}, the hub through record {seq}; {at_leaf} [the site's answer]",
            head.records.saturating_sub(seq + 1),
            head.records
        ),
        Some((id, _)) => format!(
            "shipping lag unknown: the site writes log {log} ({} records; {at_leaf}) but the hub's newest record is of log {}",
            head.records,
            hex::encode(id)
        ),
        None => format!(
            "shipping lag {} record(s): the site's log {log} holds {} and none is at the hub; {at_leaf} [the site's answer]",
            head.records, head.records
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_the_sites_records_past_the_hubs_newest() {
        let head = SiteHead {
            log_id: [1; 16],
            records: 10,
            shipped: Some(9),
            trust_root: None,
            governance: 0,
            time_ms: 0,
        };
        let log = hex::encode([1u8; 16]);
        assert_eq!(
            lag(&head, Some(([1; 16], 6))),
            format!(
                "shipping lag 3 record(s): the site's log {log} holds 10, the hub through record 6; 9 acknowledged by its leaf [the site's answer]"
            )
        );
        assert!(lag(&head, None).starts_with("shipping lag 10 record(s)"));
        assert!(
            lag(&head, Some(([2; 16], 6))).starts_with("shipping lag unknown: the site writes log")
        );
    }
}
