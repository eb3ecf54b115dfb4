//! `edge-runner serve`, and its clients `submit` and `jobs`.
//!
//! `serve` turns `serve.toml` into a checked config and hands it to
//! [`crate::serve::serve`]. The clients speak the daemon's HTTP API over its
//! Unix socket (routes in `docs/serve.md`); `submit` exits with the codes
//! `run` uses, so scripts can swap one for the other.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::Exit;
use super::run::runner_key;
use crate::custody::KeyPlacement;
use crate::serve::{Listener, ServeConfig};

/// Default API socket (the packaged unit's).
const DEFAULT_SOCKET: &str = "/run/edge-runner/api.sock";

#[derive(Debug, Args)]
pub(super) struct ServeArgs {
    /// The daemon's config (format: docs/serve.md).
    #[arg(long)]
    config: PathBuf,
    /// Check the config (and the site policy, trust store and key it names) and exit without serving.
    #[arg(long)]
    check_config: bool,
}

impl ServeArgs {
    pub(super) fn execute(self) -> Result<Exit> {
        let config = ServeConfig::load(&self.config)?;
        if let Some(policy) = &config.site_policy {
            crate::site::SitePolicy::load(policy)?;
        }
        let root = crate::trust::store::load(&config.trust, crate::timestamp::Timestamp::now())
            .map_err(|e| anyhow!("`trust` {}: {e}", config.trust.display()));
        if self.check_config {
            // A trust store that is unusable now makes the daemon not ready, not unstartable.
            match &root {
                Ok(root) => say!(
                    "trust root `{}` v{} (expires {})",
                    root.name,
                    root.version,
                    root.expires
                )?,
                Err(e) => say!("warning: {e}; the daemon would start but not be ready")?,
            }
            say!(
                "config {} is valid: socket {}, queue {} (per submitter {}), concurrency {}, evidence {}",
                self.config.display(),
                config.socket.display(),
                config.queue_capacity,
                config.per_submitter,
                config.concurrency,
                config.evidence.display()
            )?;
            return Ok(Exit::Ok);
        }
        let key = runner_key(
            config.runner_key.as_deref(),
            &config.evidence,
            KeyPlacement::Separate,
        )?;
        let listener = match crate::serve::systemd::listen_fds()
            .context("the socket systemd passed (LISTEN_FDS)")?
        {
            Some(l) => Listener::Activated(l),
            None => Listener::Bind,
        };
        crate::serve::serve(config, key, listener)?;
        Ok(Exit::Ok)
    }
}

/// Where the daemon is.
#[derive(Debug, Args)]
pub(super) struct SocketArg {
    /// The daemon's API socket.
    #[arg(long, env = "EDGE_RUNNER_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
}

#[derive(Debug, Args)]
pub(super) struct SubmitArgs {
    /// The signed capsule (or the unsigned component, with --signature).
    capsule: PathBuf,
    /// Its detached signature file, if it has one.
    #[arg(long)]
    signature: Option<PathBuf>,
    /// Input for the capsule: a file, or `-` for standard input.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Wait for the job to end, print its report and exit with `run`'s exit code for it.
    #[arg(long)]
    wait: bool,
    /// A resubmission with the same key returns the same job instead of a new one.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    socket: SocketArg,
}

impl SubmitArgs {
    pub(super) fn execute(self) -> Result<Exit> {
        let raw = super::read_raw(&self.capsule, self.signature.as_deref())?;
        let input = match &self.input {
            Some(p) if p.as_os_str() == "-" => super::run::read_stdin(super::run::MAX_INPUT_BYTES)?,
            Some(p) => crate::fsio::read_bounded(p, super::run::MAX_INPUT_BYTES, "input")?,
            None => Vec::new(),
        };
        let client = Client::new(&self.socket.socket)?;
        // Upload by digest first (idempotent), so the job names bytes the daemon holds.
        let uploaded = client.call("POST", "/v1/capsules", raw.component, "application/wasm")?;
        let capsule = match uploaded.status {
            200 | 201 => uploaded.body["capsule"]
                .as_str()
                .ok_or_else(|| anyhow!("the daemon's upload answer names no capsule"))?
                .to_string(),
            _ => return Ok(uploaded.fail("uploading the capsule")),
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut job = json!({ "capsule": capsule, "input-base64": b64.encode(&input) });
        if let Some(sig) = &raw.detached_signature {
            job["signature-base64"] = json!(b64.encode(sig));
        }
        if let Some(key) = &self.idempotency_key {
            job["idempotency-key"] = json!(key);
        }
        let submitted = client.call(
            "POST",
            "/v1/jobs",
            job.to_string().into_bytes(),
            "application/json",
        )?;
        if !matches!(submitted.status, 200 | 202) {
            return Ok(submitted.fail("submitting the job"));
        }
        let id = submitted.body["job"]
            .as_u64()
            .ok_or_else(|| anyhow!("the daemon's answer names no job"))?;
        eprintln!(
            "job {id} {} (record {})",
            if submitted.status == 202 {
                "accepted"
            } else {
                "already accepted with this idempotency key"
            },
            submitted.body["accepted-record"]
        );
        if !self.wait {
            say!("{id}")?;
            return Ok(Exit::Ok);
        }
        let ended = client.wait(id)?;
        print_job(&ended)?;
        Ok(exit_of(&ended))
    }
}

#[derive(Debug, Subcommand)]
pub(super) enum JobsCommand {
    /// List the jobs the daemon holds, newest first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Show one job (with --wait, once it has ended); exits with `run`'s exit code for it.
    Show {
        /// The job id.
        id: u64,
        /// Wait for it to end.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Cancel a job: a queued one is taken off the queue, a running one is interrupted.
    Cancel {
        /// The job id.
        id: u64,
        #[command(flatten)]
        socket: SocketArg,
    },
}

impl JobsCommand {
    pub(super) fn execute(self) -> Result<Exit> {
        match self {
            JobsCommand::List { limit, socket } => {
                let client = Client::new(&socket.socket)?;
                let answer = client.call("GET", &format!("/v1/jobs?limit={limit}"), vec![], "")?;
                if answer.status != 200 {
                    return Ok(answer.fail("listing jobs"));
                }
                for job in answer.body["jobs"].as_array().into_iter().flatten() {
                    say!(
                        "{:>8}  {:<8} {:<9} uid {:<6} {}",
                        job["job"],
                        job["state"].as_str().unwrap_or("?"),
                        job["outcome"].as_str().unwrap_or("-"),
                        job["submitter"]["uid"],
                        job["capsule"].as_str().unwrap_or("?")
                    )?;
                }
                Ok(Exit::Ok)
            }
            JobsCommand::Show { id, wait, socket } => {
                let client = Client::new(&socket.socket)?;
                let job = if wait {
                    client.wait(id)?
                } else {
                    let answer = client.call("GET", &format!("/v1/jobs/{id}"), vec![], "")?;
                    if answer.status != 200 {
                        return Ok(answer.fail(&format!("job {id}")));
                    }
                    answer.body
                };
                print_job(&job)?;
                Ok(if job["state"] == "ended" {
                    exit_of(&job)
                } else {
                    Exit::Ok
                })
            }
            JobsCommand::Cancel { id, socket } => {
                let client = Client::new(&socket.socket)?;
                let answer = client.call("POST", &format!("/v1/jobs/{id}/cancel"), vec![], "")?;
                match answer.status {
                    202 => {
                        say!("job {id}: cancel requested ({})", answer.body["state"])?;
                        Ok(Exit::Ok)
                    }
                    409 => {
                        say!("job {id} had already ended")?;
                        print_job(&answer.body)?;
                        Ok(Exit::Ok)
                    }
                    _ => Ok(answer.fail(&format!("cancelling job {id}"))),
                }
            }
        }
    }
}

fn print_job(job: &Value) -> std::io::Result<()> {
    say!(
        "job {}: {}{} (capsule {}, submitted by uid {}, accepted in record {})",
        job["job"],
        job["state"].as_str().unwrap_or("?"),
        job["outcome"]
            .as_str()
            .map(|o| format!(", {o}"))
            .unwrap_or_default(),
        job["capsule"].as_str().unwrap_or("?"),
        job["submitter"]["uid"],
        job["accepted-record"]
    )?;
    for line in job["lines"].as_array().into_iter().flatten() {
        say!("{}", line.as_str().unwrap_or(""))?;
    }
    if let Some(records) = job["records"].as_array() {
        let seqs: Vec<String> = records.iter().map(ToString::to_string).collect();
        say!("  records: {}", seqs.join(", "))?;
    }
    Ok(())
}

fn exit_of(job: &Value) -> Exit {
    let code = job["exit"].as_u64().unwrap_or(1);
    Exit::ALL
        .iter()
        .copied()
        .find(|e| u64::from(e.code()) == code)
        .unwrap_or(Exit::Error)
}

/// One answer from the daemon.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

impl Answer {
    /// Says why the daemon said no, and the exit code for it.
    fn fail(&self, doing: &str) -> Exit {
        let message = self.body["error"]
            .as_str()
            .map_or_else(|| self.body.to_string(), str::to_string);
        match &self.retry_after {
            Some(r) => eprintln!(
                "{doing}: the daemon answered {}: {message} (retry after {r} s)",
                self.status
            ),
            None => eprintln!("{doing}: the daemon answered {}: {message}", self.status),
        }
        Exit::Error
    }
}

/// An HTTP/1.1 client of the daemon's Unix socket.
struct Client {
    socket: PathBuf,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    fn new(socket: &std::path::Path) -> Result<Self> {
        Ok(Self {
            socket: socket.to_path_buf(),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the client runtime")?,
        })
    }

    fn call(&self, method: &str, path: &str, body: Vec<u8>, content_type: &str) -> Result<Answer> {
        let socket = self.socket.clone();
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "edge-runner")
            .header(http::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .context("building the request")?;
        self.runtime.block_on(async move {
            let stream = tokio::net::UnixStream::connect(&socket).await.map_err(|e| {
                anyhow!(
                    "cannot reach the daemon at {} ({e}); is `edge-runner serve` running, and may this user use its socket? (--socket or EDGE_RUNNER_SOCKET names another)",
                    socket.display()
                )
            })?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .context("talking to the daemon")?;
            let driver = tokio::spawn(connection);
            let response = sender
                .send_request(request)
                .await
                .context("the daemon closed the connection")?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let bytes = response
                .into_body()
                .collect()
                .await
                .context("reading the daemon's answer")?
                .to_bytes();
            driver.abort();
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                    json!({ "error": String::from_utf8_lossy(&bytes).into_owned() })
                })
            };
            Ok(Answer {
                status,
                retry_after,
                body,
            })
        })
    }

    /// Long-polls job `id` until it has ended.
    fn wait(&self, id: u64) -> Result<Value> {
        loop {
            let answer = self.call(
                "GET",
                &format!(
                    "/v1/jobs/{id}?wait={}",
                    crate::serve::api::MAX_WAIT_SECS.min(60)
                ),
                vec![],
                "",
            )?;
            if answer.status != 200 {
                answer.fail(&format!("waiting for job {id}"));
                bail!("job {id} could not be followed");
            }
            if answer.body["state"] == "ended" {
                return Ok(answer.body);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
