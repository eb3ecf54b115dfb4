//! The daemon's HTTP/1.1 API on its Unix socket.
//!
//! Owns connection handling (the connection cap, the header-read timeout,
//! the peer's kernel-reported credentials), routing, body limits and the
//! JSON shapes; every decision about jobs belongs to [`super::Daemon`]. No
//! request can name a host path: capsules arrive as bytes or as the digest of
//! bytes uploaded before, inputs as bytes. The routes are listed in
//! `docs/serve.md`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::json;

use super::jobs::{Cancel, JobView, Peer, Rejection, State};
use super::metrics::Rejection as Reason;
use super::{Daemon, SubmitError};

/// Longest `wait` a status request may ask for, in seconds.
pub const MAX_WAIT_SECS: u64 = 300;

type Reply = Response<Full<Bytes>>;

/// Serves `listener` until `stop` turns true; then stops accepting (in-flight
/// requests finish on their own tasks).
pub(super) async fn serve(
    listener: tokio::net::UnixListener,
    daemon: Arc<Daemon>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(daemon.config.max_connections));
    loop {
        // The connection cap: beyond it, clients wait in the kernel's backlog.
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = super::stopped(&mut stop) => return,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an API connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = super::stopped(&mut stop) => return,
        };
        let peer = match stream.peer_cred() {
            Ok(cred) => Peer {
                uid: cred.uid(),
                gid: cred.gid(),
                pid: cred.pid().and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
            },
            Err(e) => {
                tracing::warn!(error = %e, "no peer credentials on an API connection; closed");
                continue;
            }
        };
        let daemon = Arc::clone(&daemon);
        tokio::spawn(async move {
            let header_timeout = daemon.config.header_timeout;
            let service = hyper::service::service_fn(move |req| {
                let daemon = Arc::clone(&daemon);
                async move { Ok::<_, Infallible>(handle(req, peer, daemon).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, uid = peer.uid, "API connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// Serves only `GET /metrics` on a TCP listener (read-only; no job can be submitted there).
pub(super) async fn serve_metrics(
    listener: tokio::net::TcpListener,
    daemon: Arc<Daemon>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
            _ = super::stopped(&mut stop) => return,
        };
        let daemon = Arc::clone(&daemon);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let daemon = Arc::clone(&daemon);
                async move {
                    Ok::<_, Infallible>(
                        if req.method() == Method::GET && req.uri().path() == "/metrics" {
                            metrics_reply(&daemon)
                        } else {
                            error(
                                StatusCode::NOT_FOUND,
                                "this listener serves only GET /metrics",
                            )
                        },
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn reply(status: StatusCode, body: serde_json::Value) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: &str) -> Reply {
    reply(status, json!({ "error": message }))
}

fn metrics_reply(daemon: &Daemon) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(daemon.render_metrics())));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    r
}

async fn handle(req: Request<Incoming>, peer: Peer, daemon: Arc<Daemon>) -> Reply {
    if !daemon.allowed(peer) {
        daemon.peer_refused();
        return error(
            StatusCode::FORBIDDEN,
            &format!(
                "uid {} (gid {}) may not use this runner's API; the daemon's `api.allow-uids` / `api.allow-gids` in {} name who may",
                peer.uid,
                peer.gid,
                daemon.config.origin.display()
            ),
        );
    }
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method().clone(), segments.as_slice()) {
        (Method::GET, ["healthz"]) => reply(StatusCode::OK, json!({ "live": true })),
        (Method::GET, ["readyz"]) => {
            let reasons = daemon.not_ready_reasons();
            if reasons.is_empty() {
                reply(StatusCode::OK, json!({ "ready": true }))
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({ "ready": false, "reasons": reasons }),
                )
            }
        }
        (Method::GET, ["metrics"]) => metrics_reply(&daemon),
        (Method::POST, ["v1", "capsules"]) => upload(req, daemon).await,
        (Method::POST, ["v1", "jobs"]) => submit(req, peer, daemon).await,
        (Method::GET, ["v1", "jobs"]) => {
            let limit = param(&query, "limit")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100usize)
                .min(10_000);
            let jobs: Vec<_> = daemon.board.list(limit).iter().map(job_json).collect();
            reply(StatusCode::OK, json!({ "jobs": jobs }))
        }
        (Method::GET, ["v1", "jobs", id]) => {
            let Ok(id) = id.parse::<u64>() else {
                return error(StatusCode::BAD_REQUEST, "a job id is a decimal number");
            };
            let wait = match param(&query, "wait").map(str::parse::<u64>) {
                None => 0,
                Some(Ok(s)) if s <= MAX_WAIT_SECS => s,
                Some(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("`wait` is whole seconds, at most {MAX_WAIT_SECS}"),
                    );
                }
            };
            let view = if wait == 0 {
                daemon.board.get(id)
            } else {
                daemon.board.wait_end(id, Duration::from_secs(wait)).await
            };
            match view {
                Some(view) => reply(StatusCode::OK, job_json(&view)),
                None => error(
                    StatusCode::NOT_FOUND,
                    &format!(
                        "no job {id} is held by this daemon (it was never accepted, or it ended long ago; its records stay in the evidence log)"
                    ),
                ),
            }
        }
        (Method::POST, ["v1", "jobs", id, "cancel"]) => {
            let Ok(id) = id.parse::<u64>() else {
                return error(StatusCode::BAD_REQUEST, "a job id is a decimal number");
            };
            cancel(id, peer, daemon).await
        }
        (_, ["healthz" | "readyz" | "metrics"])
        | (_, ["v1", "jobs", ..])
        | (_, ["v1", "capsules"]) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed here; see docs/serve.md for the API",
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "no such route; the API is /v1/capsules, /v1/jobs, /healthz, /readyz, /metrics (docs/serve.md)",
        ),
    }
}

fn param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// How much of a refused body is read and thrown away before the 413 goes
/// out, so that a client still writing its body reads the answer instead of
/// failing its write with a broken pipe (nginx's "lingering close"). Past this
/// bound, or [`DISCARD_TIME`], the connection is closed.
const DISCARD_BYTES: u64 = 1 << 20;
const DISCARD_TIME: Duration = Duration::from_secs(2);

/// Reads and drops at most `bound` bytes of `body`, for at most [`DISCARD_TIME`].
async fn discard(mut body: Incoming, bound: u64) {
    let drain = async {
        let mut seen = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            if seen > bound {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
}

/// Reads the body, at most `limit` bytes (a larger Content-Length is refused
/// before reading; up to [`DISCARD_BYTES`] of it are then read and dropped).
async fn body(req: Request<Incoming>, limit: u64) -> Result<Bytes, Reply> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "the request body is larger than this daemon accepts ({limit} bytes, `api.max-body-bytes`)"
            ),
        )
    };
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit
    {
        if len <= limit.saturating_add(DISCARD_BYTES) {
            discard(req.into_body(), len).await;
        }
        return Err(too_large());
    }
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(req.into_body(), limit_usize).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            &format!("the request body could not be read: {e}"),
        )),
    }
}

async fn upload(req: Request<Incoming>, daemon: Arc<Daemon>) -> Reply {
    let limit = daemon
        .config
        .max_body_bytes
        .min(crate::capsule::MAX_CAPSULE_BYTES as u64);
    let bytes = match body(req, limit).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if bytes.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "the body is empty; send the capsule file's bytes",
        );
    }
    let d = Arc::clone(&daemon);
    let stored = tokio::task::spawn_blocking(move || d.store.put(&bytes)).await;
    match stored {
        Ok(Ok((digest, existed))) => reply(
            if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            },
            json!({ "capsule": format!("sha256:{}", hex::encode(digest)) }),
        ),
        Ok(Err(super::store::StoreError::TooLarge { size, max })) => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "the capsule is {size} bytes, more than the daemon's capsule store holds ({max} bytes, `store.max-bytes`)"
            ),
        ),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the capsule store failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the daemon could not keep the capsule (its log says why)",
            )
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the upload task failed"),
    }
}

/// A job submission. Unknown fields are refused: in particular there is no
/// field that names a host path.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct JobRequest {
    /// `sha256:HEX` of a capsule uploaded with `POST /v1/capsules`.
    capsule: Option<String>,
    /// The capsule file's bytes, base64 (instead of `capsule`).
    capsule_base64: Option<String>,
    /// A detached signature's bytes, base64.
    signature_base64: Option<String>,
    /// The capsule's input, base64 (default: empty).
    input_base64: Option<String>,
    /// The client's idempotency key: a resubmission with the same key (by the
    /// same uid) returns the same job.
    idempotency_key: Option<String>,
}

/// A submission, decoded.
pub(crate) struct Submission {
    pub capsule: Arc<Vec<u8>>,
    pub signature: Option<Vec<u8>>,
    pub input: Vec<u8>,
    pub idempotency: Option<[u8; 32]>,
}

/// A decoded submission and its capsule's SHA-256: the digest it was named
/// by (the store checked the bytes against it) or, for bytes sent inline,
/// computed while decoding, off the API's thread.
pub(crate) struct Digested {
    pub submission: Submission,
    pub capsule_sha256: [u8; 32],
}

/// Why a submission was refused before acceptance: the answer and the reason it is counted under.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
    reason: Reason,
}

fn refusal(status: StatusCode, message: &str, reason: Reason) -> Refusal {
    Refusal {
        status,
        message: message.to_string(),
        reason,
    }
}

/// Decodes a job, or says why it is refused.
fn decode_submission(bytes: &[u8], daemon: &Daemon) -> Result<Digested, Refusal> {
    let bad = |m: String| refusal(StatusCode::BAD_REQUEST, &m, Reason::Malformed);
    let request: JobRequest = serde_json::from_slice(bytes).map_err(|e| {
        bad(format!(
            "the job is not valid JSON of the documented shape ({e}); fields: capsule (sha256:HEX of an uploaded capsule) or capsule-base64, signature-base64, input-base64, idempotency-key. The daemon takes bytes, never host paths"
        ))
    })?;
    let host_path = |m: String| refusal(StatusCode::BAD_REQUEST, &m, Reason::HostPath);
    let b64 = |field: &str, v: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(v)
            .map_err(|e| bad(format!("`{field}` is not base64 ({e})")))
    };
    let (capsule, capsule_sha256) = match (&request.capsule, &request.capsule_base64) {
        (Some(name), None) => {
            let digest = parse_digest(name).ok_or_else(|| {
                host_path(format!(
                    "`capsule` is `{}`, which is not `sha256:` and 64 hex digits; the daemon never reads host paths: upload the capsule's bytes with POST /v1/capsules and name its digest, or send capsule-base64",
                    clip(name)
                ))
            })?;
            match daemon.store.get(&digest) {
                Ok(Some(bytes)) => (bytes, digest),
                Ok(None) => {
                    return Err(refusal(
                        StatusCode::NOT_FOUND,
                        &format!(
                            "no capsule sha256:{} is in the daemon's store (never uploaded, or evicted); upload it with POST /v1/capsules and submit again",
                            hex::encode(digest)
                        ),
                        Reason::UnknownCapsule,
                    ));
                }
                Err(e) => {
                    tracing::error!(error = %e, "the capsule store failed");
                    return Err(refusal(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the daemon could not read its capsule store",
                        Reason::NotReady,
                    ));
                }
            }
        }
        (None, Some(b)) => {
            let bytes = b64("capsule-base64", b)?;
            let digest = sha2::Digest::finalize(sha2::Digest::chain_update(
                <sha2::Sha256 as sha2::Digest>::new(),
                &bytes,
            ))
            .into();
            (Arc::new(bytes), digest)
        }
        _ => {
            return Err(bad(
                "name the capsule with exactly one of `capsule` (sha256:HEX) or `capsule-base64`"
                    .into(),
            ));
        }
    };
    if capsule.len() > crate::capsule::MAX_CAPSULE_BYTES {
        return Err(refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the capsule is larger than a capsule may be",
            Reason::TooLarge,
        ));
    }
    let signature = request
        .signature_base64
        .as_deref()
        .map(|s| b64("signature-base64", s))
        .transpose()?;
    let input = request
        .input_base64
        .as_deref()
        .map(|s| b64("input-base64", s))
        .transpose()?
        .unwrap_or_default();
    let idempotency = match request.idempotency_key.as_deref() {
        None => None,
        Some(k) if k.is_empty() || k.len() > 256 => {
            return Err(bad("`idempotency-key` is 1 to 256 bytes".into()));
        }
        Some(k) => Some(
            sha2::Digest::finalize(sha2::Digest::chain_update(
                <sha2::Sha256 as sha2::Digest>::new(),
                k.as_bytes(),
            ))
            .into(),
        ),
    };
    Ok(Digested {
        capsule_sha256,
        submission: Submission {
            capsule,
            signature,
            input,
            idempotency,
        },
    })
}

fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out.escape_debug().to_string()
}

/// `sha256:` and 64 lowercase or uppercase hex digits.
pub fn parse_digest(name: &str) -> Option<[u8; 32]> {
    let hex_part = name.strip_prefix("sha256:")?;
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut digest).ok()?;
    Some(digest)
}

async fn submit(req: Request<Incoming>, peer: Peer, daemon: Arc<Daemon>) -> Reply {
    let bytes = match body(req, daemon.config.max_body_bytes).await {
        Ok(b) => b,
        Err(r) => {
            daemon.shed(if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Reason::TooLarge
            } else {
                Reason::Malformed
            });
            return r;
        }
    };
    let d = Arc::clone(&daemon);
    let decoded = tokio::task::spawn_blocking(move || decode_submission(&bytes, &d)).await;
    let submission = match decoded {
        Ok(Ok(s)) => s,
        Ok(Err(refused)) => {
            daemon.shed(refused.reason);
            return error(refused.status, &refused.message);
        }
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "decoding the job failed"),
    };
    match daemon
        .submit_digested(peer, submission.submission, submission.capsule_sha256)
        .await
    {
        Ok((view, new)) => reply(
            if new {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            },
            job_json(&view),
        ),
        Err(SubmitError::Rejected(why)) => {
            let (status, retry, message) = match why {
                Rejection::QueueFull => (
                    StatusCode::TOO_MANY_REQUESTS,
                    1,
                    format!(
                        "the queue is full ({} jobs waiting, `queue.capacity`); retry later",
                        daemon.config.queue_capacity
                    ),
                ),
                Rejection::Quota => (
                    StatusCode::TOO_MANY_REQUESTS,
                    2,
                    format!(
                        "uid {} has {} jobs queued or running, its quota (`queue.per-submitter`); retry when one ends",
                        peer.uid, daemon.config.per_submitter
                    ),
                ),
                Rejection::InProgress => (
                    StatusCode::CONFLICT,
                    1,
                    "a job with this idempotency key is being accepted right now; retry to get it"
                        .to_string(),
                ),
                Rejection::Draining => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    5,
                    "the runner is shutting down and accepts no jobs; submit again once it has restarted"
                        .to_string(),
                ),
            };
            let mut r = error(status, &message);
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(retry));
            r
        }
        Err(SubmitError::Evidence(detail)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "the job was not accepted: its acceptance could not be recorded ({detail}); nothing was queued"
            ),
        ),
    }
}

async fn cancel(id: u64, peer: Peer, daemon: Arc<Daemon>) -> Reply {
    let Some(view) = daemon.board.get(id) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no job {id} is held by this daemon"),
        );
    };
    if view.submitter.uid != peer.uid && peer.uid != 0 && peer.uid != daemon.uid {
        return error(
            StatusCode::FORBIDDEN,
            &format!(
                "job {id} was submitted by uid {}; only its submitter (or root, or the daemon's user) may cancel it",
                view.submitter.uid
            ),
        );
    }
    let d = Arc::clone(&daemon);
    let found = tokio::task::spawn_blocking(move || d.cancel(id)).await;
    match found {
        Ok(Ok(Cancel::AlreadyEnded)) => reply(StatusCode::CONFLICT, job_json(&view)),
        Ok(Ok(Cancel::Unknown)) => error(
            StatusCode::NOT_FOUND,
            &format!("no job {id} is held by this daemon"),
        ),
        Ok(Ok(Cancel::Signalled | Cancel::Dequeued)) => match daemon.board.get(id) {
            Some(view) => reply(StatusCode::ACCEPTED, job_json(&view)),
            None => error(StatusCode::NOT_FOUND, "the job is gone"),
        },
        Ok(Err(detail)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the cancellation could not be recorded ({detail})"),
        ),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "cancelling failed"),
    }
}

/// A job as JSON.
pub(super) fn job_json(view: &JobView) -> serde_json::Value {
    let mut value = json!({
        "job": view.id,
        "state": view.state.as_str(),
        "submitter": view.submitter,
        "capsule": format!("sha256:{}", hex::encode(view.capsule_sha256)),
        "accepted-record": view.accepted_record,
    });
    if let State::Ended(ended) = &view.state
        && let Some(map) = value.as_object_mut()
    {
        map.insert("outcome".into(), json!(ended.outcome));
        map.insert("exit".into(), json!(ended.exit));
        map.insert("records".into(), json!(ended.records));
        map.insert("lines".into(), json!(ended.lines));
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse_only_in_their_one_form() {
        let hex64 = "ab".repeat(32);
        assert_eq!(parse_digest(&format!("sha256:{hex64}")), Some([0xab; 32]));
        assert_eq!(parse_digest(&hex64), None);
        assert_eq!(parse_digest("/tmp/capsule.signed.wasm"), None);
        assert_eq!(parse_digest("sha256:../../etc/passwd"), None);
    }

    #[test]
    fn query_parameters_are_found_by_name() {
        assert_eq!(param("wait=30&limit=2", "limit"), Some("2"));
        assert_eq!(param("wait=30", "limit"), None);
    }
}
