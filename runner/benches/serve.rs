//! Daemon throughput benchmark: signed hello-capsule jobs through
//! `edge-runner serve`'s Unix socket at concurrency 1, 2 and 8 (more workers
//! than cores: while some wait for their records' fsync, others run),
//! printed next to an in-process loop of the same runs without the API (one
//! session, its own log) and next to the raw group-commit append rate of the
//! shared evidence writer; then accept → finish latency percentiles and the
//! daemon's RSS, idle and with jobs running. Each client submits a job,
//! long-polls it to its end and submits the next; it opens a new connection
//! per request (as `edge-runner submit` does) in one row, and keeps one
//! connection alive in the next; four clients a slot in both. A third row
//! runs 48 clients (below the API's 64-connection cap), so the queue never
//! runs dry and the daemon's capacity, not the clients' round trips, sets
//! the rate (a rate from four clients a slot is at most 4 × concurrency ÷
//! the time a client waits for one job). Under each row: the CPU time per job
//! of each part of the daemon (its threads are named) and of the bench's
//! clients, from `/proc`, and the rate those leave room for on this machine's
//! cores — what bounds a row once the disk does not.
//!
//! ```sh
//! cargo bench -p edge-runner --bench serve          # EDGE_RUNNER_BENCH_JOBS=N (default 400)
//! ```
//!
//! Every job writes five records (accepted, verified, started, finished,
//! job-finished): acceptance is durable before the `202`; verification and
//! `run-started` are made durable together before the capsule starts (the
//! worker's one wait); `run-finished` and the job's end are queued behind the
//! run and durable before the job is shown ended (its worker goes on
//! meanwhile). So a job costs three fsync round trips unless concurrent jobs
//! share them (group commit).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use edge_runner::capsule::{self, ManifestSource, RawCapsule};
use edge_runner::evidence::events::{Event, UnknownEvent};
use edge_runner::evidence::{EvidenceLog, SharedLog};
use edge_runner::keys::SecretKey;
use edge_runner::sandbox::Limits;
use edge_runner::session::Session;
use edge_runner::site::SitePolicy;
use edge_runner::timestamp::Timestamp;
use edge_runner::trust::{RootPolicy, SignedRoot};

const INPUT: &[u8] =
    br#"{"document": {"status": "up"}, "assertions": [{"pointer": "/status", "equals": "up"}]}"#;

const SITE: &str = "bench";

struct Setup {
    dir: tempfile::TempDir,
    trust: PathBuf,
    signed: Vec<u8>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let publisher = SecretKey::generate().unwrap();
    let root_key = SecretKey::generate().unwrap();
    let policy = RootPolicy::parse(
        &format!(
            "format = 1\nname = \"bench\"\nversion = 1\nexpires = \"{}\"\nroot-threshold = 1\n\
             [[root-key]]\nname = \"root\"\npublic-key = \"\"\"\n{}\"\"\"\n\
             [thresholds.test]\nkeys = 1\norganisations = 1\n\
             [thresholds.reproduce]\nkeys = 1\norganisations = 1\n\
             [thresholds.remediate]\nkeys = 1\norganisations = 1\n\
             [[publisher]]\nname = \"p\"\norganisation = \"o\"\nkinds = [\"test\"]\nnames = [\"*\"]\naudiences = [\"*\"]\npublic-key = \"\"\"\n{}\"\"\"\n",
            Timestamp::now().plus_days(1),
            root_key.public().to_pem().unwrap(),
            publisher.public().to_pem().unwrap()
        ),
        "bench",
    )
    .unwrap();
    let trust = dir.path().join("trust");
    std::fs::create_dir_all(&trust).unwrap();
    std::fs::write(
        trust.join("1.root.cose"),
        SignedRoot::sign_new(&policy, &root_key).unwrap(),
    )
    .unwrap();
    let example = capsule_artifacts::JSON_ASSERT;
    let source = ManifestSource::parse(example.manifest, Path::new(example.manifest_path)).unwrap();
    let signed = capsule::sign(example.component, &source, &publisher, Timestamp::now()).unwrap();
    Setup { dir, trust, signed }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The same verified runs, in this process, through one session and its own log.
fn in_process(setup: &Setup, jobs: usize) -> f64 {
    let evidence = setup.dir.path().join("in-process");
    let log = EvidenceLog::open(&evidence, SecretKey::generate().unwrap()).unwrap();
    let mut session =
        Session::with_policy(log, Limits::default(), SitePolicy::deny_all(SITE).unwrap()).unwrap();
    let root = edge_runner::trust::store::load(&setup.trust, Timestamp::now()).unwrap();
    let raw = || RawCapsule {
        component: setup.signed.clone(),
        detached_signature: None,
    };
    let admitted = session.verify(raw(), &root).unwrap();
    session.run(admitted, INPUT).unwrap();
    let start = Instant::now();
    for _ in 0..jobs {
        let admitted = session.verify(raw(), &root).unwrap();
        let record = session.run(admitted, INPUT).unwrap();
        assert!(record.report.outcome.is_some());
    }
    jobs as f64 / start.elapsed().as_secs_f64()
}

/// Records appended by `writers` threads through one shared writer, per second.
fn group_commit(dir: &Path, writers: usize, total: usize) -> f64 {
    let log = EvidenceLog::open(dir, SecretKey::generate().unwrap()).unwrap();
    let shared = SharedLog::start(log);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..writers {
            let shared = shared.clone();
            s.spawn(move || {
                for i in 0..total / writers {
                    let event = Event::Unknown(UnknownEvent {
                        name: "bench-note".into(),
                        body: ciborium::Value::Map(vec![(
                            ciborium::Value::Text("n".into()),
                            ciborium::Value::Integer((i as u64).into()),
                        )]),
                    });
                    shared.record(event).unwrap();
                }
            });
        }
    });
    let rate = total as f64 / start.elapsed().as_secs_f64();
    shared.close().unwrap();
    rate
}

struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn start_daemon(setup: &Setup, name: &str, concurrency: usize) -> Daemon {
    let d = setup.dir.path().join(name);
    std::fs::create_dir_all(&d).unwrap();
    let socket = d.join("api.sock");
    let config = d.join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "format = 1\ntrust = \"{}\"\nevidence = \"{}\"\nsite = \"{SITE}\"\nrunner-key = \"{}\"\n\
             [api]\nsocket = \"{}\"\n[queue]\ncapacity = 10000\nper-submitter = 10000\nconcurrency = {concurrency}\n",
            setup.trust.display(),
            d.join("evidence").display(),
            d.join("runner.key").display(),
            socket.display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_edge-runner"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while UnixStream::connect(&socket).is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "no socket");
        std::thread::sleep(Duration::from_millis(10));
    }
    Daemon { child, socket }
}

/// One request on a fresh connection; returns the status and the JSON body.
fn call(socket: &Path, method: &str, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let mut stream = UnixStream::connect(socket).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or_default())
}

/// A client connection kept open across requests (HTTP/1.1 keep-alive).
struct KeptAlive {
    stream: std::io::BufReader<UnixStream>,
}

impl KeptAlive {
    fn open(socket: &Path) -> Self {
        Self {
            stream: std::io::BufReader::new(UnixStream::connect(socket).unwrap()),
        }
    }

    /// One request on this connection; returns the status and the JSON body.
    fn call(&mut self, method: &str, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
        use std::io::BufRead;
        let stream = self.stream.get_mut();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        stream.write_all(&request).unwrap();
        let mut line = String::new();
        self.stream.read_line(&mut line).unwrap();
        let status = line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut length = 0usize;
        loop {
            line.clear();
            self.stream.read_line(&mut line).unwrap();
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).unwrap();
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// CPU time used so far by each thread group of `pid` (`/proc/PID/task`),
/// keyed by the part of the daemon it is (its threads are named), and by the
/// process as a whole under "all".
fn cpu_by_part(pid: u32) -> std::collections::BTreeMap<&'static str, Duration> {
    let mut parts = std::collections::BTreeMap::new();
    let tick = clock_tick();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let Ok(stat) = std::fs::read_to_string(task.unwrap().path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        let (comm, cpu) = parse_stat(&stat, tick);
        let part = match comm {
            "evidence-writer" => "writer",
            c if c.starts_with("edge-runner-job") => "jobs",
            c if c.starts_with("evidence-check") => "checkpoints",
            _ => "API and the rest",
        };
        *parts.entry(part).or_default() += cpu;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    parts.insert("all", parse_stat(&stat, tick).1);
    parts
}

/// A `/proc` stat line's thread name and user + system CPU time.
fn parse_stat(stat: &str, tick: Duration) -> (&str, Duration) {
    let (head, rest) = stat.rsplit_once(')').unwrap();
    let comm = head.split_once('(').unwrap().1;
    // After the name: state is field 3; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    (comm, tick * ticks as u32)
}

/// The length of the clock tick `/proc` counts CPU time in.
fn clock_tick() -> Duration {
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    let hz: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    Duration::from_nanos(1_000_000_000 / hz)
}

/// How a bench client talks to the daemon.
#[derive(Clone, Copy, PartialEq)]
enum Connections {
    /// A new connection per request (`Connection: close`), as `edge-runner submit` does.
    PerRequest,
    /// One connection per client thread, kept alive across its requests.
    KeptAlive,
}

/// Jobs through the socket from `clients` threads; returns jobs/s and the
/// accept → finish latencies (202 received → end observed by a long poll).
fn through_socket(
    daemon: &Daemon,
    digest: &str,
    jobs: usize,
    clients: usize,
    connections: Connections,
) -> (f64, Vec<Duration>) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let job =
        serde_json::json!({ "capsule": digest, "input-base64": b64.encode(INPUT) }).to_string();
    let start = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let job = job.as_bytes();
                s.spawn(move || {
                    let mut kept = (connections == Connections::KeptAlive)
                        .then(|| KeptAlive::open(&daemon.socket));
                    let mut call = |method: &str, path: &str, body: &[u8]| match &mut kept {
                        Some(c) => c.call(method, path, body),
                        None => call(&daemon.socket, method, path, body),
                    };
                    let mut lat = Vec::new();
                    for _ in 0..jobs / clients {
                        let (status, accepted) = call("POST", "/v1/jobs", job);
                        assert_eq!(status, 202, "{accepted}");
                        let t = Instant::now();
                        let id = accepted["job"].as_u64().unwrap();
                        loop {
                            let (_, view) = call("GET", &format!("/v1/jobs/{id}?wait=30"), b"");
                            if view["state"] == "ended" {
                                assert_eq!(view["outcome"], "pass", "{view}");
                                break;
                            }
                        }
                        lat.push(t.elapsed());
                    }
                    lat
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let rate = latencies.len() as f64 / start.elapsed().as_secs_f64();
    latencies.sort();
    (rate, latencies)
}

fn main() {
    let jobs: usize = std::env::var("EDGE_RUNNER_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let setup = setup();
    println!("json-assert jobs ({jobs} per row); each job is 5 durable records\n");
    let local = in_process(&setup, jobs.min(200));
    println!(
        "{:<52} {:>9.0} runs/s",
        "in-process loop (verify + run, own log)", local
    );
    for writers in [1, 2, 8, 32] {
        let dir = setup.dir.path().join(format!("gc-{writers}"));
        let rate = group_commit(&dir, writers, 4000);
        println!(
            "{:<52} {:>9.0} records/s",
            format!("raw group-commit append, {writers} writers"),
            rate
        );
    }
    for concurrency in [1, 2, 8] {
        let daemon = start_daemon(&setup, &format!("serve-{concurrency}"), concurrency);
        let idle = rss_kib(daemon.child.id());
        let (status, up) = call(&daemon.socket, "POST", "/v1/capsules", &setup.signed);
        assert!(status == 201 || status == 200, "{up}");
        let digest = up["capsule"].as_str().unwrap().to_string();
        // One job compiles the capsule; the rest reuse it.
        through_socket(&daemon, &digest, 1, 1, Connections::PerRequest);
        // Four clients a slot show latency with a little queueing; 48 keep
        // the queue from ever running dry, so the daemon, not the clients'
        // round trips, sets the rate.
        for (clients, connections, how) in [
            (
                concurrency * 4,
                Connections::PerRequest,
                "new connection per request",
            ),
            (
                concurrency * 4,
                Connections::KeptAlive,
                "connections kept alive",
            ),
            (48, Connections::KeptAlive, "kept alive, saturated"),
        ] {
            let before = cpu_by_part(daemon.child.id());
            let clients_before = cpu_by_part(std::process::id())["all"];
            let (rate, lat) = through_socket(&daemon, &digest, jobs, clients, connections);
            let after = cpu_by_part(daemon.child.id());
            let clients_cpu = cpu_by_part(std::process::id())["all"] - clients_before;
            println!(
                "{:<52} {:>9.0} jobs/s   p50 {:>7.2} ms  p99 {:>7.2} ms",
                format!("through the socket, concurrency {concurrency}, {clients} clients"),
                rate,
                percentile(&lat, 0.5).as_secs_f64() * 1e3,
                percentile(&lat, 0.99).as_secs_f64() * 1e3
            );
            println!(
                "{:<52} {:.2}",
                format!("  ({how}) socket ÷ in-process"),
                rate / local
            );
            let per_job = |d: Duration| d.as_secs_f64() * 1e6 / jobs as f64;
            let daemon_us = per_job(after["all"] - before["all"]);
            let parts: Vec<String> = after
                .iter()
                .filter(|(part, _)| **part != "all")
                .map(|(part, cpu)| {
                    let was = before.get(part).copied().unwrap_or_default();
                    format!("{part} {:.0}", per_job(cpu.saturating_sub(was)))
                })
                .collect();
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            println!(
                "{:<52} daemon {:.0} ({}), clients {:.0}; {} cores ÷ both = {:.0} jobs/s",
                "  CPU µs per job",
                daemon_us,
                parts.join(", "),
                per_job(clients_cpu),
                cores,
                cores * 1e6 / (daemon_us + per_job(clients_cpu))
            );
        }
        let busy = rss_kib(daemon.child.id());
        println!(
            "{:<52} idle {:>6} KiB   after the jobs {:>6} KiB   (+{} KiB per concurrent job)",
            "  daemon RSS",
            idle,
            busy,
            busy.saturating_sub(idle) / concurrency as u64
        );
    }
}
