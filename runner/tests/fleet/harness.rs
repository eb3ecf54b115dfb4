//! Two (or three) real `nats-server` processes for the fleet tests: a hub
//! and site leaves that dial it, started from the configs shipped in
//! `packaging/nats/` with only ports and store directories changed, on free
//! loopback ports with temporary stores, killed when the harness drops.
//!
//! Without `nats-server` on PATH the tests skip with a printed reason;
//! with `CI` or `EDGE_RUNNER_REQUIRE_NATS=1` set they fail instead, so CI
//! cannot pass by skipping.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The shipped configs, relative to the runner crate.
fn shipped(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging/nats")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `nats-server` on PATH (or in /usr/sbin, where Debian puts it).
fn nats_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

/// Whether a missing server fails the test rather than skipping it.
fn required() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
        || std::env::var("EDGE_RUNNER_REQUIRE_NATS").is_ok_and(|v| v == "1")
}

/// The server binary, or `None` after printing why the test is skipped.
pub fn server_or_skip(test: &str) -> Option<PathBuf> {
    match nats_server() {
        Some(p) => Some(p),
        None if required() => panic!(
            "{test}: nats-server is not on PATH and CI (or EDGE_RUNNER_REQUIRE_NATS=1) is set; install it (`apt-get install -y nats-server`, 2.9.10 or newer)"
        ),
        None => {
            eprintln!(
                "SKIPPED {test}: nats-server is not on PATH (apt-get install -y nats-server); set EDGE_RUNNER_REQUIRE_NATS=1 to fail instead"
            );
            None
        }
    }
}

/// `EDGE_RUNNER_NATS_TRACE=1`: the servers log every protocol line and the
/// temporary directory (configs, logs, stores) is kept and named.
fn trace() -> bool {
    std::env::var("EDGE_RUNNER_NATS_TRACE").is_ok_and(|v| v == "1")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One running server.
pub struct Server {
    bin: PathBuf,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// Its client port.
    pub port: u16,
}

impl Server {
    fn start(bin: &Path, dir: &Path, name: &str, text: &str, port: u16) -> Self {
        let conf = dir.join(format!("{name}.conf"));
        std::fs::write(&conf, text).unwrap();
        let mut s = Self {
            bin: bin.to_path_buf(),
            conf,
            log: dir.join(format!("{name}.log")),
            child: None,
            port,
        };
        s.restart();
        s
    }

    /// Starts the server again (same config, same store), waiting until it listens.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c").arg(&self.conf);
        if trace() {
            cmd.arg("-DV");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("nats-server exited ({status}):\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Everything it logged so far.
    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Its client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            // What the server saw is usually the answer (a permissions violation, say).
            let text = self.log_text();
            let interesting: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("[ERR]") || l.contains("[WRN]") || l.contains("Violation"))
                .collect();
            eprintln!(
                "--- {} ---\n{}",
                self.conf.display(),
                interesting.join("\n")
            );
        }
    }
}

/// A hub and one leaf per site, from the shipped configs.
pub struct Fleet {
    /// The hub.
    pub hub: Server,
    /// The leaves, in the order of the sites given.
    pub leaves: Vec<Server>,
    /// The sites.
    pub sites: Vec<String>,
    /// Removed on drop unless tracing.
    _dir: Option<tempfile::TempDir>,
}

/// The shipped hub config with one `site-NAME` block per site (copied from
/// the plant-7 block, as its comment tells an operator to do).
fn hub_conf(sites: &[&str], port: u16, leaf_port: u16, store: &Path) -> String {
    let text = shipped("hub.conf");
    let begin = text
        .find("      # BEGIN site plant-7")
        .expect("BEGIN marker");
    let end_marker = "      # END site plant-7\n";
    let end = text.find(end_marker).expect("END marker") + end_marker.len();
    let block = &text[begin..end];
    let blocks: String = sites.iter().map(|s| block.replace("plant-7", s)).collect();
    let text = format!("{}{}{}", &text[..begin], blocks, &text[end..]);
    let replaced = text
        .replace("127.0.0.1:4222", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:7422", &format!("127.0.0.1:{leaf_port}"))
        .replace("/var/lib/edge-runner/nats-hub", store.to_str().unwrap());
    assert_ne!(replaced, text);
    replaced
}

fn leaf_conf(site: &str, port: u16, hub_leaf_port: u16, store: &Path) -> String {
    let text = shipped("leaf-plant-7.conf").replace("plant-7", site);
    text.replace("127.0.0.1:4223", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:7422", &format!("127.0.0.1:{hub_leaf_port}"))
        .replace(
            &format!("/var/lib/edge-runner/nats-leaf-{site}"),
            store.to_str().unwrap(),
        )
}

impl Fleet {
    /// Starts a hub and a leaf for each of `sites`, each leaf connected.
    pub fn start(bin: &Path, sites: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let hub_port = free_port();
        let leaf_listen = free_port();
        let hub = Server::start(
            bin,
            dir.path(),
            "hub",
            &hub_conf(sites, hub_port, leaf_listen, &dir.path().join("hub-store")),
            hub_port,
        );
        let leaves = sites
            .iter()
            .map(|site| {
                let port = free_port();
                let store = dir.path().join(format!("leaf-{site}-store"));
                Server::start(
                    bin,
                    dir.path(),
                    &format!("leaf-{site}"),
                    &leaf_conf(site, port, leaf_listen, &store),
                    port,
                )
            })
            .collect();
        let fleet = Self {
            hub,
            leaves,
            sites: sites.iter().map(|s| s.to_string()).collect(),
            _dir: if trace() {
                eprintln!("fleet test directory (kept): {}", dir.keep().display());
                None
            } else {
                Some(dir)
            },
        };
        for leaf in &fleet.leaves {
            wait_for(Duration::from_secs(15), || {
                leaf.log_text().contains("Leafnode connection created")
            });
        }
        fleet
    }

    /// The platform team's client at the hub.
    pub async fn admin(&self) -> async_nats::Client {
        async_nats::ConnectOptions::with_user_and_password(
            "fleet-admin".into(),
            "change-me-fleet-admin".into(),
        )
        .connect(self.hub.url())
        .await
        .unwrap()
    }

    /// A site runner's client at its own leaf.
    pub async fn runner(&self, site: &str) -> async_nats::Client {
        let i = self.sites.iter().position(|s| s == site).unwrap();
        async_nats::ConnectOptions::with_user_and_password(
            "runner".into(),
            "change-me-runner".into(),
        )
        .retry_on_initial_connect()
        .connect(self.leaves[i].url())
        .await
        .unwrap()
    }
}

/// Polls `ok` until it holds or `limit` passes (then panics).
pub fn wait_for(limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
