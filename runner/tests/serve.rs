//! `edge-runner serve` as a compliance team deploys it and clients use it:
//! the API over its Unix socket, the queue under load, shutdown and crashes,
//! and the evidence every job leaves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{SITE, edge_runner, keys, p, state_home, text, write_trust_root};
use edge_runner::evidence::Event;

/// A signed sandbox probe (it sleeps or spins on request) and a trust store for it.
struct Fixture {
    dir: tempfile::TempDir,
    trust: PathBuf,
    probe: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (key, publisher_pub) = keys(d, "publisher");
        let trust = write_trust_root(d, &publisher_pub);
        let unsigned = d.join("probe.wasm");
        std::fs::write(&unsigned, capsule_artifacts::SANDBOX_PROBE.component).unwrap();
        let probe = d.join("probe.signed.wasm");
        let out = edge_runner(&[
            "capsule",
            "sign",
            p(&unsigned),
            "--manifest",
            capsule_artifacts::SANDBOX_PROBE.manifest_path,
            "--key",
            p(&key),
            "--out",
            p(&probe),
        ]);
        assert!(out.status.success(), "{}", text(&out));
        Self { dir, trust, probe }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `serve.toml` (with `extra` appended) and starts the daemon.
    fn serve(&self, extra: &str) -> Daemon {
        let d = self.path();
        let socket = d.join("run/api.sock");
        let evidence = d.join("evidence");
        let config = d.join("serve.toml");
        let api = format!("[api]\nsocket = \"{}\"\n", p(&socket));
        let extra = if extra.contains("[api]\n") {
            extra.replace("[api]\n", &api)
        } else {
            format!("{extra}\n{api}")
        };
        std::fs::write(
            &config,
            format!(
                "format = 1\ntrust = \"{}\"\nevidence = \"{}\"\nsite = \"{SITE}\"\n{extra}\n",
                p(&self.trust),
                p(&evidence),
            ),
        )
        .unwrap();
        Daemon::start(&config, socket, evidence)
    }
}

/// A running daemon, killed when dropped.
struct Daemon {
    child: Child,
    socket: PathBuf,
    evidence: PathBuf,
}

impl Daemon {
    fn start(config: &Path, socket: PathBuf, evidence: PathBuf) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_edge-runner"))
            .args(["serve", "--config", p(config)])
            .env_remove("EDGE_RUNNER_KEY")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env("XDG_STATE_HOME", state_home())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut daemon = Self {
            child,
            socket,
            evidence,
        };
        let started = Instant::now();
        loop {
            if let Some(status) = daemon.child.try_wait().unwrap() {
                let mut err = String::new();
                daemon
                    .child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("the daemon exited at start ({status}): {err}");
            }
            if UnixStream::connect(&daemon.socket).is_ok() {
                return daemon;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the daemon did not open its socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn request(&self, method: &str, path: &str, body: &[u8]) -> Answer {
        request(&self.socket, method, path, body)
    }

    fn submit(&self, job: &serde_json::Value) -> Answer {
        self.request("POST", "/v1/jobs", job.to_string().as_bytes())
    }

    fn wait(&self, id: u64) -> serde_json::Value {
        loop {
            let a = self.request("GET", &format!("/v1/jobs/{id}?wait=30"), b"");
            assert_eq!(a.status, 200, "{a:?}");
            if a.json["state"] == "ended" {
                return a.json;
            }
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the daemon to exit; returns its exit code and stderr.
    fn exit(mut self) -> (Option<i32>, String) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    e.read_to_string(&mut err).unwrap();
                }
                return (status.code(), err);
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the daemon did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    json: serde_json::Value,
}

/// One HTTP/1.1 request on a fresh connection (closed after the answer).
///
/// Like any HTTP client, it reads an answer the daemon sent before taking the
/// whole body (a 413 for a body over the cap): a write the daemon no longer
/// reads may fail, and the answer is still there to read.
fn request(socket: &Path, method: &str, path: &str, body: &[u8]) -> Answer {
    let mut stream = UnixStream::connect(socket).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: edge-runner\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let sent = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body));
    if let Err(e) = sent {
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "writing the request: {e}"
        );
    }
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    parse_answer(&raw)
}

fn parse_answer(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::String(body.to_string()));
    Answer {
        status,
        headers,
        json,
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A job running the probe with `actions` (JSON array text).
fn probe_job(fixture: &Fixture, actions: &str) -> serde_json::Value {
    serde_json::json!({
        "capsule-base64": b64(&std::fs::read(&fixture.probe).unwrap()),
        "input-base64": b64(format!("{{\"actions\": {actions}}}").as_bytes()),
    })
}

/// The verified log's events (the verifier's own check passes first).
fn events(evidence: &Path) -> Vec<(u64, Event)> {
    let key = edge_runner::keys::PublicKey::load(&evidence.join("runner.pub")).unwrap();
    let bytes = edge_runner::evidence::read_log_dir(evidence, 1 << 30).unwrap();
    let summary = edge_runner::evidence::verify_log(&bytes, &key).unwrap();
    summary
        .records
        .iter()
        .map(|r| r.record.seq)
        .zip(summary.events)
        .collect()
}

/// `evidence verify` says VALID.
fn assert_valid(evidence: &Path) -> String {
    let out = edge_runner(&[
        "evidence",
        "verify",
        p(evidence),
        "--runner-key",
        p(&evidence.join("runner.pub")),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

/// Every job's acceptance and end in the log: id -> (accepted, ends).
fn job_ends(evidence: &Path) -> BTreeMap<u64, Vec<String>> {
    let mut jobs: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (_, event) in events(evidence) {
        match event {
            Event::JobAccepted(a) => {
                assert!(
                    jobs.insert(a.job, Vec::new()).is_none(),
                    "job {} accepted twice",
                    a.job
                );
            }
            Event::JobFinished(f) => jobs.get_mut(&f.job).unwrap().push(f.outcome),
            Event::JobCancelled(c) => jobs
                .get_mut(&c.job)
                .unwrap()
                .push(format!("cancelled-by-{}", c.by)),
            Event::JobAbandoned(a) => jobs.get_mut(&a.job).unwrap().push("abandoned".into()),
            _ => {}
        }
    }
    jobs
}

/// Requests turned away for `reason`, summed over the `load-shed` records.
fn shed(evidence: &Path, reason: &str) -> u64 {
    events(evidence)
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::LoadShed(s) => s.rejected.get(reason).copied(),
            _ => None,
        })
        .sum()
}

#[test]
fn hundred_jobs_through_the_socket_never_run_more_than_concurrency_at_once() {
    let fixture = Fixture::new();
    let daemon = fixture.serve("[queue]\ncapacity = 128\nconcurrency = 2\nper-submitter = 128");
    let job = probe_job(&fixture, r#"[{"sleep-ms": 5}]"#);
    // Upload once, then name the capsule by digest (as `submit` does).
    let up = daemon.request(
        "POST",
        "/v1/capsules",
        &std::fs::read(&fixture.probe).unwrap(),
    );
    assert_eq!(up.status, 201, "{up:?}");
    let digest = up.json["capsule"].as_str().unwrap().to_string();
    let by_digest = serde_json::json!({ "capsule": digest, "input-base64": job["input-base64"] });
    let ids: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (daemon, job, by_digest) = (&daemon, &job, &by_digest);
                s.spawn(move || {
                    (0..25)
                        .map(|i| {
                            let a = daemon.submit(if (t + i) % 2 == 0 { job } else { by_digest });
                            assert_eq!(a.status, 202, "{a:?}");
                            a.json["job"].as_u64().unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 100);
    for id in &ids {
        let ended = daemon.wait(*id);
        assert_eq!(ended["outcome"], "pass", "{ended}");
        assert_eq!(ended["exit"], 0);
    }
    daemon.signal("TERM");
    let (code, err) = daemon.exit();
    assert_eq!(code, Some(0), "{err}");
    // The log's own order shows at most two runs open at any point.
    let (mut open, mut most) = (BTreeSet::new(), 0);
    for (_, event) in events(&fixture.path().join("evidence")) {
        match event {
            Event::RunStarted(r) => {
                open.insert(r.job.unwrap());
                most = most.max(open.len());
            }
            Event::RunFinished(r) => {
                open.remove(&r.job.unwrap());
            }
            _ => {}
        }
    }
    assert_eq!(most, 2, "runs open at once");
    let jobs = job_ends(&fixture.path().join("evidence"));
    assert_eq!(jobs.len(), 100);
    assert!(
        jobs.values().all(|ends| ends == &["pass".to_string()]),
        "{jobs:?}"
    );
    assert_valid(&fixture.path().join("evidence"));
}

#[test]
fn overload_at_twice_capacity_gets_429_and_loses_no_accepted_job() {
    let fixture = Fixture::new();
    let daemon = fixture.serve("[queue]\ncapacity = 4\nconcurrency = 1\nper-submitter = 100");
    let job = probe_job(&fixture, r#"[{"sleep-ms": 200}]"#);
    let mut accepted = Vec::new();
    let mut refused = 0u64;
    for _ in 0..10 {
        let a = daemon.submit(&job);
        match a.status {
            202 => accepted.push(a.json["job"].as_u64().unwrap()),
            429 => {
                refused += 1;
                assert_eq!(a.headers.get("retry-after").map(String::as_str), Some("1"));
                assert!(
                    a.json["error"]
                        .as_str()
                        .unwrap()
                        .contains("the queue is full (4 jobs waiting"),
                    "{a:?}"
                );
            }
            other => panic!("unexpected {other}: {a:?}"),
        }
    }
    assert!(refused >= 4, "accepted {accepted:?}");
    assert!(accepted.len() >= 4, "accepted {accepted:?}");
    for id in &accepted {
        assert_eq!(daemon.wait(*id)["outcome"], "pass");
    }
    daemon.signal("TERM");
    assert_eq!(daemon.exit().0, Some(0));
    let jobs = job_ends(&fixture.path().join("evidence"));
    assert_eq!(jobs.keys().copied().collect::<Vec<_>>(), {
        let mut a = accepted.clone();
        a.sort_unstable();
        a
    });
    // The refusals are summarized, not one record each.
    assert_eq!(
        shed(&fixture.path().join("evidence"), "queue-full"),
        refused
    );
}

#[test]
fn idempotent_resubmission_returns_the_same_job() {
    let fixture = Fixture::new();
    let daemon = fixture.serve("");
    let mut job = probe_job(&fixture, "[]");
    job["idempotency-key"] = serde_json::json!("deploy-42-check");
    let first = daemon.submit(&job);
    assert_eq!(first.status, 202, "{first:?}");
    let again = daemon.submit(&job);
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.json["job"], first.json["job"]);
    assert_eq!(again.json["accepted-record"], first.json["accepted-record"]);
    job["idempotency-key"] = serde_json::json!("deploy-43-check");
    let other = daemon.submit(&job);
    assert_eq!(other.status, 202);
    assert_ne!(other.json["job"], first.json["job"]);
}

#[test]
fn oversize_malformed_and_host_path_requests_are_refused_with_the_fix() {
    let fixture = Fixture::new();
    let daemon = fixture.serve("[api]\nmax-body-bytes = 4096");
    let big = daemon.request("POST", "/v1/jobs", &vec![b'x'; 5000]);
    assert_eq!(big.status, 413, "{big:?}");
    assert!(
        big.json["error"]
            .as_str()
            .unwrap()
            .contains("larger than this daemon accepts (4096 bytes, `api.max-body-bytes`)"),
        "{big:?}"
    );
    // A client that writes its body only after the daemon has answered (here
    // 300 ms after its headers) still gets to write it: the daemon reads and
    // drops a refused body of modest size before closing, so the client sees
    // the 413, not a broken pipe.
    let mut late = UnixStream::connect(&daemon.socket).unwrap();
    write!(
        late,
        "POST /v1/jobs HTTP/1.1\r\nHost: edge-runner\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    late.write_all(&[b'x'; 5000])
        .expect("the daemon drains a refused body of modest size");
    let mut raw = Vec::new();
    late.read_to_end(&mut raw).unwrap();
    assert_eq!(parse_answer(&raw).status, 413);
    let bad = daemon.request("POST", "/v1/jobs", b"{not json");
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(
        bad.json["error"]
            .as_str()
            .unwrap()
            .contains("is not valid JSON"),
        "{bad:?}"
    );
    let path_field = daemon.request(
        "POST",
        "/v1/jobs",
        br#"{"capsule-path": "/etc/shadow", "input-base64": ""}"#,
    );
    assert_eq!(path_field.status, 400, "{path_field:?}");
    assert!(
        path_field.json["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `capsule-path`"),
        "{path_field:?}"
    );
    let path_value = daemon.request(
        "POST",
        "/v1/jobs",
        br#"{"capsule": "/srv/capsules/probe.signed.wasm"}"#,
    );
    assert_eq!(path_value.status, 400, "{path_value:?}");
    assert!(
        path_value.json["error"]
            .as_str()
            .unwrap()
            .contains("the daemon never reads host paths"),
        "{path_value:?}"
    );
    let unknown = daemon.request(
        "POST",
        "/v1/jobs",
        format!("{{\"capsule\": \"sha256:{}\"}}", "0".repeat(64)).as_bytes(),
    );
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert!(
        unknown.json["error"]
            .as_str()
            .unwrap()
            .contains("upload it with POST /v1/capsules")
    );
    // Nothing was accepted.
    daemon.signal("TERM");
    assert_eq!(daemon.exit().0, Some(0));
    assert!(job_ends(&fixture.path().join("evidence")).is_empty());
}

#[test]
fn a_slow_client_that_never_finishes_its_headers_is_cut_off() {
    let fixture = Fixture::new();
    let daemon = fixture.serve("[api]\nheader-timeout-ms = 300");
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    // The daemon closes the connection (after a 408, or without a word).
    let read = stream.read_to_end(&mut rest);
    assert!(read.is_ok(), "the connection was not closed: {read:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let answer = String::from_utf8_lossy(&rest);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    // Others are still served.
    assert_eq!(daemon.request("GET", "/healthz", b"").status, 200);
}

#[test]
fn a_peer_uid_not_allowed_gets_403_and_a_metric() {
    let fixture = Fixture::new();
    // An explicit allow-list that names someone else: this uid is not on it.
    let me = rustix_uid();
    let daemon = fixture.serve(&format!("[api]\nallow-uids = [{}]", me + 1));
    let a = daemon.request("GET", "/v1/jobs", b"");
    assert_eq!(a.status, 403, "{a:?}");
    assert!(
        a.json["error"]
            .as_str()
            .unwrap()
            .contains(&format!("uid {me} ")),
        "{a:?}"
    );
    let metrics = daemon.request("GET", "/metrics", b"");
    assert_eq!(metrics.status, 403, "metrics are not public either");
    daemon.signal("TERM");
    assert_eq!(daemon.exit().0, Some(0));
    assert_eq!(shed(&fixture.path().join("evidence"), "forbidden"), 2);
}

fn rustix_uid() -> u32 {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn an_expired_trust_root_makes_the_daemon_not_ready_and_jobs_are_refused_on_the_record() {
    let fixture = Fixture::new();
    // Replace the store with one that has expired since it was signed.
    let d = fixture.path();
    let (root_key, root_pub) = keys(d, "old-root");
    let policy = common::policy(
        1,
        "2020-01-01T00:00:00Z",
        &[&root_pub],
        &d.join("publisher.pub"),
    );
    let parsed = edge_runner::trust::RootPolicy::parse(&policy, "root.toml").unwrap();
    let secret = edge_runner::keys::SecretKey::load(&root_key).unwrap();
    std::fs::write(
        fixture.trust.join("1.root.cose"),
        edge_runner::trust::SignedRoot::sign_new(&parsed, &secret).unwrap(),
    )
    .unwrap();
    let daemon = fixture.serve("");
    let ready = daemon.request("GET", "/readyz", b"");
    assert_eq!(ready.status, 503, "{ready:?}");
    assert!(
        ready.json["reasons"][0]
            .as_str()
            .unwrap()
            .contains("trust root unusable: trust root `cli-root` v1 expired"),
        "{ready:?}"
    );
    assert_eq!(daemon.request("GET", "/healthz", b"").status, 200);
    let a = daemon.submit(&probe_job(&fixture, "[]"));
    assert_eq!(a.status, 202, "{a:?}");
    let ended = daemon.wait(a.json["job"].as_u64().unwrap());
    assert_eq!(ended["outcome"], "refused", "{ended}");
    assert_eq!(ended["exit"], 3);
    daemon.signal("TERM");
    assert_eq!(daemon.exit().0, Some(0));
    let refused = events(&fixture.path().join("evidence"))
        .into_iter()
        .any(|(_, e)| matches!(e, Event::CapsuleRefused(r) if r.job.is_some()));
    assert!(refused);
}

#[test]
fn sigterm_mid_run_leaves_every_job_with_one_end_and_a_valid_log() {
    let fixture = Fixture::new();
    let daemon = fixture.serve("[queue]\nconcurrency = 1\n[shutdown]\ngrace-ms = 200");
    // One spins (interrupted after the grace period), three wait in the queue.
    let spinning = daemon.submit(&probe_job(&fixture, r#"[{"spin": true}]"#));
    assert_eq!(spinning.status, 202);
    let queued: Vec<u64> = (0..3)
        .map(|_| {
            daemon.submit(&probe_job(&fixture, "[]")).json["job"]
                .as_u64()
                .unwrap()
        })
        .collect();
    // Wait until the spinner runs.
    let id = spinning.json["job"].as_u64().unwrap();
    let started = Instant::now();
    while daemon.request("GET", &format!("/v1/jobs/{id}"), b"").json["state"] != "running" {
        assert!(started.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(10));
    }
    daemon.signal("TERM");
    let (code, err) = daemon.exit();
    assert_eq!(code, Some(0), "{err}");
    let jobs = job_ends(&fixture.path().join("evidence"));
    assert_eq!(jobs[&id], vec!["cancelled-by-shutdown".to_string()]);
    for q in queued {
        assert_eq!(jobs[&q], vec!["cancelled-by-shutdown".to_string()]);
    }
    let interrupted = events(&fixture.path().join("evidence"))
        .into_iter()
        .any(|(_, e)| matches!(e, Event::RunFinished(r) if r.job == Some(id) && r.status == "interrupted"));
    assert!(interrupted);
    let report = assert_valid(&fixture.path().join("evidence"));
    assert!(!report.contains("in flight"), "{report}");
}

#[test]
fn cancel_takes_a_queued_job_off_the_queue_and_interrupts_a_running_one() {
    let fixture = Fixture::new();
    let daemon = fixture.serve("[queue]\nconcurrency = 1");
    // A first run compiles the probe, so the sleeper below starts its sleep at once.
    let warm = daemon.submit(&probe_job(&fixture, "[]")).json["job"]
        .as_u64()
        .unwrap();
    assert_eq!(daemon.wait(warm)["outcome"], "pass");
    let sleeper = daemon
        .submit(&probe_job(&fixture, r#"[{"sleep-ms": 4000}]"#))
        .json["job"]
        .as_u64()
        .unwrap();
    let waiting = daemon.submit(&probe_job(&fixture, "[]")).json["job"]
        .as_u64()
        .unwrap();
    let started = Instant::now();
    while daemon
        .request("GET", &format!("/v1/jobs/{sleeper}"), b"")
        .json["state"]
        != "running"
    {
        assert!(started.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(10));
    }
    let c = daemon.request("POST", &format!("/v1/jobs/{waiting}/cancel"), b"");
    assert_eq!(c.status, 202, "{c:?}");
    assert_eq!(daemon.wait(waiting)["outcome"], "cancelled");
    let cancelled = Instant::now();
    let c = daemon.request("POST", &format!("/v1/jobs/{sleeper}/cancel"), b"");
    assert_eq!(c.status, 202, "{c:?}");
    let ended = daemon.wait(sleeper);
    assert_eq!(ended["outcome"], "cancelled", "{ended}");
    // A blocked host call is abandoned at once, not after its 4 s.
    assert!(
        cancelled.elapsed() < Duration::from_millis(2000),
        "{:?}",
        cancelled.elapsed()
    );
    let again = daemon.request("POST", &format!("/v1/jobs/{sleeper}/cancel"), b"");
    assert_eq!(again.status, 409);
    daemon.signal("TERM");
    assert_eq!(daemon.exit().0, Some(0));
    let jobs = job_ends(&fixture.path().join("evidence"));
    assert_eq!(jobs[&waiting], vec!["cancelled-by-client".to_string()]);
    assert_eq!(jobs[&sleeper], vec!["cancelled-by-client".to_string()]);
    let cut_short = events(&fixture.path().join("evidence"))
        .into_iter()
        .find_map(|(_, e)| match e {
            Event::RunFinished(r) if r.job == Some(sleeper) => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(cut_short.status, "interrupted");
    assert!(
        cut_short
            .usage
            .as_ref()
            .is_some_and(|u| u.wall_time_ms < 4000),
        "{cut_short:?}"
    );
    assert_valid(&fixture.path().join("evidence"));
}

#[test]
fn sigkill_loop_keeps_every_acknowledged_job_ended_exactly_once() {
    let fixture = Fixture::new();
    let mut acknowledged = BTreeSet::new();
    // Jobs a client saw ended, with the outcome it saw.
    let mut seen_ended = BTreeMap::new();
    // A fixed pseudo-random schedule: where each kill lands varies, and any failure replays.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..8 {
        let daemon = fixture.serve("[queue]\nconcurrency = 2");
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let submissions = 1 + seed % 6;
        let socket = daemon.socket.clone();
        let job = probe_job(&fixture, &format!("[{{\"sleep-ms\": {}}}]", seed % 50));
        let submitter = std::thread::spawn(move || {
            let mut ids = Vec::new();
            for _ in 0..submissions {
                let Ok(mut stream) = UnixStream::connect(&socket) else {
                    break;
                };
                let body = job.to_string();
                let sent = write!(
                    stream,
                    "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let mut raw = Vec::new();
                if sent.is_err() || stream.read_to_end(&mut raw).is_err() || raw.is_empty() {
                    break;
                }
                let a = parse_answer(&raw);
                if a.status != 202 {
                    continue;
                }
                let id = a.json["job"].as_u64().unwrap();
                ids.push((id, None));
                // Every other job is followed to its end, as long as the daemon lives.
                if id.is_multiple_of(2) {
                    let Ok(mut stream) = UnixStream::connect(&socket) else {
                        break;
                    };
                    let sent = write!(
                        stream,
                        "GET /v1/jobs/{id}?wait=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                    );
                    let mut raw = Vec::new();
                    if sent.is_err() || stream.read_to_end(&mut raw).is_err() || raw.is_empty() {
                        break;
                    }
                    let view = parse_answer(&raw).json;
                    if view["state"] == "ended" {
                        let outcome = view["outcome"].as_str().unwrap().to_string();
                        ids.last_mut().unwrap().1 = Some(outcome);
                    }
                }
            }
            ids
        });
        std::thread::sleep(Duration::from_millis(seed % 120));
        daemon.signal("KILL");
        let _ = daemon.exit();
        for (id, ended) in submitter.join().unwrap() {
            acknowledged.insert(id);
            if let Some(outcome) = ended {
                seen_ended.insert(id, outcome);
            }
        }
    }
    // A last start records what the last kill left open, then a clean stop.
    let daemon = fixture.serve("");
    daemon.signal("TERM");
    assert_eq!(daemon.exit().0, Some(0));
    let jobs = job_ends(&fixture.path().join("evidence"));
    for id in &acknowledged {
        let ends = jobs
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged job {id} is not in the log"));
        assert_eq!(ends.len(), 1, "job {id}: {ends:?}");
    }
    assert!(jobs.values().all(|ends| ends.len() == 1), "{jobs:?}");
    // A job shown ended was ended on the record before it was shown: no
    // kill turns it into an abandoned one. (Which jobs a client sees end
    // before a kill depends on timing; often the first compile outlasts it.)
    for (id, outcome) in &seen_ended {
        assert_eq!(jobs[id], vec![outcome.clone()], "job {id}");
    }
    assert_valid(&fixture.path().join("evidence"));
}

/// A worker queues its job's end and goes on (docs/serve.md, "Backpressure,
/// shutdown and crashes"), but a client is shown a job ended only from the
/// writer's answer: a SIGKILL the moment the client has seen every job end
/// leaves each end on the record as the client saw it, none of them
/// abandoned at the next start.
#[test]
fn jobs_a_client_saw_ended_keep_that_end_after_an_immediate_sigkill() {
    let fixture = Fixture::new();
    let daemon = fixture.serve("[queue]\nconcurrency = 2");
    let passing = probe_job(&fixture, "[]");
    let failing = probe_job(&fixture, r#"[{"panic": "on purpose"}]"#);
    let ids: Vec<u64> = [&passing, &failing, &passing, &failing]
        .iter()
        .map(|job| {
            let a = daemon.submit(job);
            assert_eq!(a.status, 202, "{a:?}");
            a.json["job"].as_u64().unwrap()
        })
        .collect();
    let seen: BTreeMap<u64, String> = ids
        .iter()
        .map(|&id| (id, daemon.wait(id)["outcome"].as_str().unwrap().to_string()))
        .collect();
    daemon.signal("KILL");
    let _ = daemon.exit();
    let daemon = fixture.serve("");
    daemon.signal("TERM");
    assert_eq!(daemon.exit().0, Some(0));
    let jobs = job_ends(&fixture.path().join("evidence"));
    assert!(
        seen.values().any(|o| o == "pass") && seen.values().any(|o| o != "pass"),
        "{seen:?}"
    );
    for (id, outcome) in &seen {
        assert_eq!(jobs[id], vec![outcome.clone()], "job {id}");
    }
    assert_valid(&fixture.path().join("evidence"));
}

/// The daemon keeps the parse of a capsule it saw before, by the digests of
/// the component *and* of its detached signature: the same component with
/// another signature file is judged on that signature, not on the first's.
#[test]
fn detached_signature_swapped_after_a_parsed_job_is_judged_alone() {
    let fixture = Fixture::new();
    let d = fixture.path();
    let (stranger, _) = keys(d, "stranger");
    let component = d.join("probe.wasm");
    let sign = |key: &Path, out: &str| {
        let out_path = d.join(out);
        let signed = edge_runner(&[
            "capsule",
            "sign",
            p(&component),
            "--manifest",
            capsule_artifacts::SANDBOX_PROBE.manifest_path,
            "--key",
            p(key),
            "--detached",
            "--out",
            p(&out_path),
        ]);
        assert!(signed.status.success(), "{}", text(&signed));
        std::fs::read(out_path).unwrap()
    };
    let trusted = sign(&d.join("publisher.key"), "trusted.sig");
    let untrusted = sign(&stranger, "stranger.sig");
    let daemon = fixture.serve("");
    let job = |signature: &[u8]| {
        serde_json::json!({
            "capsule-base64": b64(&std::fs::read(&component).unwrap()),
            "signature-base64": b64(signature),
            "input-base64": b64(br#"{"actions": []}"#),
        })
    };
    let first = daemon.submit(&job(&trusted));
    assert_eq!(first.status, 202, "{first:?}");
    let first = daemon.wait(first.json["job"].as_u64().unwrap());
    assert_eq!(first["outcome"], "pass", "{first}");
    let second = daemon.submit(&job(&untrusted));
    assert_eq!(second.status, 202, "{second:?}");
    let second = daemon.wait(second.json["job"].as_u64().unwrap());
    assert_eq!(second["outcome"], "refused", "{second}");
    assert!(
        second["lines"][0].as_str().unwrap().contains("unknown key"),
        "{second}"
    );
}

#[test]
fn submit_waits_and_exits_like_run_and_run_points_at_submit() {
    let fixture = Fixture::new();
    let daemon = fixture.serve("");
    let input = fixture.path().join("input.json");
    std::fs::write(&input, r#"{"actions": []}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edge-runner"))
        .args([
            "submit",
            p(&fixture.probe),
            "--input",
            p(&input),
            "--wait",
            "--socket",
            p(&daemon.socket),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("ran sandbox-probe 1.0.0 (test): completed"),
        "{}",
        text(&out)
    );
    // A failing capsule exits 6 through submit as through run (it panics: abnormal).
    std::fs::write(&input, r#"{"actions": [{"panic": "boom"}]}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edge-runner"))
        .args([
            "submit",
            p(&fixture.probe),
            "--input",
            p(&input),
            "--wait",
            "--socket",
            p(&daemon.socket),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let listed = Command::new(env!("CARGO_BIN_EXE_edge-runner"))
        .args(["jobs", "list", "--socket", p(&daemon.socket)])
        .output()
        .unwrap();
    assert!(listed.status.success(), "{}", text(&listed));
    assert_eq!(text(&listed).lines().count(), 2, "{}", text(&listed));
    // `run` on the directory the daemon holds says so and names `submit`.
    let out = edge_runner(&[
        "run",
        p(&fixture.probe),
        "--trust",
        p(&fixture.trust),
        "--site",
        SITE,
        "--evidence",
        p(&daemon.evidence),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("held by `edge-runner serve` (pid")
            && text(&out).contains("edge-runner submit --socket"),
        "{}",
        text(&out)
    );
}

#[test]
fn check_config_validates_without_starting_and_names_an_unknown_key() {
    let fixture = Fixture::new();
    let config = fixture.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "format = 1\ntrust = \"{}\"\nevidence = \"ev\"\nsite = \"{SITE}\"\n[queue]\nconcurency = 2\n",
            p(&fixture.trust)
        ),
    )
    .unwrap();
    let out = edge_runner(&["serve", "--config", p(&config), "--check-config"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("unknown field `concurency`"),
        "{}",
        text(&out)
    );
    std::fs::write(
        &config,
        format!(
            "format = 1\ntrust = \"{}\"\nevidence = \"ev\"\nsite = \"{SITE}\"\n",
            p(&fixture.trust)
        ),
    )
    .unwrap();
    let out = edge_runner(&["serve", "--config", p(&config), "--check-config"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("is valid"), "{}", text(&out));
    assert!(
        !fixture.path().join("ev").exists(),
        "--check-config created the evidence directory"
    );
}

#[test]
fn the_metrics_endpoint_counts_jobs_and_fsyncs_in_openmetrics() {
    let fixture = Fixture::new();
    let daemon = fixture.serve("");
    let id = daemon.submit(&probe_job(&fixture, "[]")).json["job"]
        .as_u64()
        .unwrap();
    assert_eq!(daemon.wait(id)["outcome"], "pass");
    let _ = daemon.request("POST", "/v1/jobs", b"{not json");
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    for line in [
        "edge_runner_jobs_accepted_total 1\n",
        "edge_runner_jobs_finished_total{outcome=\"pass\"} 1\n",
        "edge_runner_jobs_rejected_total{reason=\"malformed\"} 1\n",
    ] {
        assert!(body.contains(line), "`{line}` missing from:\n{body}");
    }
    // Every record the job wrote (accepted, verified, started, finished,
    // job-finished) went through a group commit the histograms saw; they
    // took at least three (acceptance before the `202`, verification and
    // start before the run, the run's end after it).
    let value = |name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no `{name}` in:\n{body}"))
            .parse()
            .unwrap()
    };
    let fsyncs = value("edge_runner_evidence_fsync_duration_seconds_count");
    let records = value("edge_runner_evidence_fsync_batch_records_sum");
    assert!(
        fsyncs >= 3.0 && records >= 5.0,
        "{fsyncs} commits, {records} records"
    );
}

/// A SIGTERM as soon as the socket answers drains and exits 0: the handlers
/// are in place before the first connection is taken (the default action
/// would kill a daemon that may already have accepted jobs).
#[test]
fn sigterm_right_after_the_socket_answers_exits_cleanly() {
    let fixture = Fixture::new();
    for _ in 0..5 {
        let daemon = fixture.serve("");
        daemon.signal("TERM");
        assert_eq!(daemon.exit().0, Some(0));
    }
}
