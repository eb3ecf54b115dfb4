//! `edge-runner serve` with a `[fleet]` table, end to end: the daemon
//! connects to its leaf, takes signed jobs from the hub, runs them as local
//! jobs, and ships its evidence home, where the collector verifies it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use edge_runner::capsule::Kind;
use edge_runner::evidence;
use edge_runner::fleet::collect::{Collector, SiteKey};
use edge_runner::fleet::jobs::{self as fleet_jobs, SiteQueue};
use edge_runner::fleet::{JobRequest, capsules, ship, subjects};
use edge_runner::keys::{PublicKey, SecretKey};
use edge_runner::timestamp::Timestamp;

use super::common::{SITE, edge_runner, keys, p, policy, state_home, text};
use super::harness::Fleet;

const PASSING_INPUT: &str =
    r#"{"document": {"status": "up"}, "assertions": [{"pointer": "/status", "equals": "up"}]}"#;

/// A site directory: trust store with a publisher and dispatcher `fleet-ops`,
/// a signed json-assert, the runner key's public half, a serve config.
pub struct Site {
    pub dir: tempfile::TempDir,
    pub capsule: Vec<u8>,
    pub input: String,
    pub dispatcher: SecretKey,
    child: Option<Child>,
}

impl Site {
    pub fn new(fleet: &Fleet) -> Self {
        Self::with(fleet, &capsule_artifacts::JSON_ASSERT, PASSING_INPUT)
    }

    /// A site whose one capsule is `capsule`, dispatched with `input`.
    pub fn with(fleet: &Fleet, capsule: &capsule_artifacts::Capsule, input: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (publisher, _) = keys(d, "publisher");
        let (root_key, _) = keys(d, "root");
        let (dispatcher_key, _) = keys(d, "dispatcher");
        std::fs::write(d.join("root.toml"), site_policy(d, 1)).unwrap();
        let out = edge_runner(&[
            "trust",
            "init",
            "--policy",
            p(&d.join("root.toml")),
            "--key",
            p(&root_key),
            "--dir",
            p(&d.join("trust")),
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let unsigned = d.join("json-assert.wasm");
        std::fs::write(&unsigned, capsule.component).unwrap();
        let signed = d.join("json-assert.signed.wasm");
        let out = edge_runner(&[
            "capsule",
            "sign",
            p(&unsigned),
            "--manifest",
            capsule.manifest_path,
            "--key",
            p(&publisher),
            "--out",
            p(&signed),
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let (runner_key, _) = keys(d, "runner");
        std::fs::write(d.join("leaf.password"), "change-me-runner\n").unwrap();
        std::fs::write(
            d.join("serve.toml"),
            format!(
                "format = 1\ntrust = \"trust\"\nevidence = \"evidence\"\nsite = \"{SITE}\"\nrunner-key = \"{}\"\n\
                 [api]\nsocket = \"{}\"\n[queue]\nconcurrency = 1\n\
                 [fleet]\nleaf = \"{}\"\nuser = \"runner\"\npassword-file = \"leaf.password\"\npoll-ms = 200\n",
                p(&runner_key),
                p(&d.join("api.sock")),
                fleet.leaves[0].url()
            ),
        )
        .unwrap();
        Self {
            capsule: std::fs::read(&signed).unwrap(),
            input: input.to_string(),
            dispatcher: SecretKey::load(&dispatcher_key).unwrap(),
            dir,
            child: None,
        }
    }

    /// Sets the config's `fleet.poll-ms` (200 unless set); call before [`Site::start`].
    pub fn set_poll_ms(&self, ms: u64) {
        let path = self.dir.path().join("serve.toml");
        let config = std::fs::read_to_string(&path).unwrap();
        assert!(config.contains("poll-ms = 200\n"));
        std::fs::write(
            &path,
            config.replace("poll-ms = 200\n", &format!("poll-ms = {ms}\n")),
        )
        .unwrap();
    }

    pub fn evidence(&self) -> PathBuf {
        self.dir.path().join("evidence")
    }

    pub fn runner_pub(&self) -> PublicKey {
        PublicKey::load(&self.dir.path().join("runner.pub")).unwrap()
    }

    /// Starts `edge-runner serve` and waits for its socket.
    pub fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_edge-runner"))
            .args(["serve", "--config", p(&self.dir.path().join("serve.toml"))])
            .env_remove("EDGE_RUNNER_KEY")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env("XDG_STATE_HOME", state_home())
            .stdout(Stdio::null())
            .stderr(match std::env::var_os("EDGE_RUNNER_SERVE_STDERR") {
                // Where a failing test's daemon said why (appended).
                Some(path) => Stdio::from(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .unwrap(),
                ),
                None => Stdio::null(),
            })
            .spawn()
            .unwrap();
        self.child = Some(child);
        let started = Instant::now();
        while std::os::unix::net::UnixStream::connect(self.dir.path().join("api.sock")).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "serve did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and wait: the daemon ends its jobs and writes a final checkpoint.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    /// SIGKILL, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn events(&self) -> Vec<(String, ciborium::Value)> {
        let bytes = evidence::read_log_dir(&self.evidence(), u64::MAX).unwrap();
        let summary = evidence::verify_log(&bytes, &self.runner_pub()).unwrap();
        summary
            .records
            .iter()
            .map(|r| (r.record.event.clone(), r.record.body.clone()))
            .collect()
    }

    pub fn request(&self, job: &str) -> Vec<u8> {
        JobRequest {
            job: job.into(),
            site: SITE.into(),
            kind: Kind::Test,
            capsule_sha256: sha(&self.capsule),
            signature_sha256: None,
            input: self.input.as_bytes().to_vec(),
            not_after_ms: now_ms() + 600_000,
        }
        .sign(&self.dispatcher)
        .unwrap()
    }
}

/// Version `version` of the site's trust root policy (root key `root`,
/// publisher `publisher`, dispatcher `fleet-ops`, keys in `d`).
pub fn site_policy(d: &std::path::Path, version: u64) -> String {
    let mut text = policy(
        version,
        "2099-01-01T00:00:00Z",
        &[&d.join("root.pub")],
        &d.join("publisher.pub"),
    );
    text.push_str(&format!(
        "[[dispatcher]]\nname = \"fleet-ops\"\nsites = [\"{SITE}\"]\nkinds = [\"test\"]\npublic-key = \"\"\"\n{}\"\"\"\n",
        std::fs::read_to_string(d.join("dispatcher.pub")).unwrap()
    ));
    // The demo's governance administrator signs the site's governance.
    text.push_str(&format!(
        "[governance]\nthreshold = 1\n[[governance.admin]]\nname = \"demo-governance-admin\"\npublic-key = \"\"\"\n{}\"\"\"\n",
        std::fs::read_to_string(repo("keys/demo-governance-admin.pub")).unwrap()
    ));
    text
}

/// A file of the repository.
pub fn repo(rel: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

impl Site {
    /// The site's trust root version 2, signed by its root key as `trust
    /// rotate --stage` signs it, not installed: the file a platform publishes.
    pub fn next_root(&self) -> PathBuf {
        let d = self.dir.path();
        std::fs::write(d.join("root-2.toml"), site_policy(d, 2)).unwrap();
        let staged = d.join("2.staged.root.cose");
        let out = edge_runner(&[
            "trust",
            "rotate",
            "--dir",
            p(&d.join("trust")),
            "--policy",
            p(&d.join("root-2.toml")),
            "--key",
            p(&d.join("root.key")),
            "--stage",
            p(&staged),
        ]);
        assert!(out.status.success(), "{}", text(&out));
        staged
    }

    /// The trust root versions installed at the site.
    pub fn trust_versions(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("trust"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".root.cose")
            })
            .count()
    }

    /// The bodies of the site's records named `event`.
    pub fn bodies(&self, event: &str) -> Vec<ciborium::Value> {
        self.events()
            .into_iter()
            .filter(|(e, _)| e == event)
            .map(|(_, b)| b)
            .collect()
    }
}

/// Text field `key` of a record body.
pub fn field(body: &ciborium::Value, key: &str) -> String {
    edge_runner::cbor::MapReader::new("body", body)
        .unwrap()
        .text(key)
        .unwrap()
        .to_string()
}

/// Uint field `key` of a record body.
pub fn uint(body: &ciborium::Value, key: &str) -> u64 {
    edge_runner::cbor::MapReader::new("body", body)
        .unwrap()
        .uint(key)
        .unwrap()
}

impl Drop for Site {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

fn sha(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Polls `ok` (async) until it holds or 60 s pass.
pub async fn eventually<F, Fut>(what: &str, mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The platform team's set-up: queue, capsule published, hub evidence stream.
pub async fn hub_setup(fleet: &Fleet, site: &Site) -> jetstream::Context {
    let hub = jetstream::new(fleet.admin().await);
    fleet_jobs::ensure_queue(
        &hub,
        &[SiteQueue {
            site: SITE.into(),
            concurrency: 1,
            max_wall_time: Duration::from_secs(60),
        }],
    )
    .await
    .unwrap();
    capsules::publish(&hub, &site.capsule).await.unwrap();
    hub.create_stream(ship::hub_stream_config(&fleet.sites))
        .await
        .unwrap();
    hub
}

pub fn count(events: &[(String, ciborium::Value)], name: &str) -> usize {
    events.iter().filter(|(e, _)| e == name).count()
}

pub async fn queue_empty(hub: &jetstream::Context) -> bool {
    let mut s = hub.get_stream(subjects::JOBS_STREAM).await.unwrap();
    s.info().await.unwrap().state.messages == 0
}

pub async fn collect_valid(hub: &jetstream::Context, key: PublicKey, at_least: u64) -> bool {
    let mut c = Collector::new(vec![SiteKey {
        site: SITE.into(),
        runner_key: key,
    }]);
    if c.read_hub(hub).await.is_err() {
        return false;
    }
    let report = c.finish(None, Timestamp::now()).pop().unwrap();
    match report.verdict {
        Ok(logs) => logs.iter().map(|l| l.records).sum::<u64>() >= at_least,
        Err(f) => panic!("collector: {f}"),
    }
}
