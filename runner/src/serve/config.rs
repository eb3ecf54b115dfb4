//! `serve.toml`: what the daemon serves, to whom, and within which bounds.
//!
//! Parsed strictly (unknown keys are refused, naming the key and the file),
//! then checked, into a [`ServeConfig`] in which every default is filled in.
//! The format is documented in `docs/serve.md`; `doc_examples` checks that
//! every `serve-config` example there parses. This module reads one file and
//! touches nothing else.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::fsio::read_bounded_text;

/// Largest config file read.
pub const MAX_CONFIG_BYTES: u64 = 256 * 1024;

/// The config format this runner reads.
pub const CONFIG_FORMAT: u64 = 1;

/// Why a config cannot be used: the file, the key and the fix.
#[derive(Debug, thiserror::Error)]
#[error("serve config {origin}: {detail}")]
pub struct ConfigError {
    /// Where it was read from.
    pub origin: String,
    /// What is wrong and how to fix it.
    pub detail: String,
}

/// Who may use the API: a peer is allowed if its kernel-reported uid is in
/// `uids` or its gid in `gids`, and no one else (the daemon's own user and
/// root included). Both empty: only the daemon's own uid.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllowList {
    /// Allowed user ids.
    pub uids: Vec<u32>,
    /// Allowed group ids (the peer's primary group, as `SO_PEERCRED` reports it).
    pub gids: Vec<u32>,
}

/// The daemon's configuration, every default filled in.
///
/// | key | default |
/// |---|---|
/// | `api.socket` | `/run/edge-runner/api.sock` |
/// | `api.allow-uids`, `api.allow-gids` | empty: only the daemon's own uid |
/// | `api.max-connections` | 64 |
/// | `api.header-timeout-ms` | 5 000 |
/// | `api.max-body-bytes` | 24 MiB (a 16 MiB capsule or input, base64 in JSON) |
/// | `queue.capacity` | 64 jobs waiting |
/// | `queue.concurrency` | the number of CPUs |
/// | `queue.per-submitter` | 16 jobs queued or running per uid |
/// | `store.max-bytes` | 256 MiB of uploaded capsules |
/// | `shutdown.grace-ms` | 30 000 |
/// | `metrics.listen` | none (metrics only at `GET /metrics` on the socket) |
/// | `[fleet]` | none (local jobs only); see [`FleetConfig`] for its defaults |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// The file it was read from (for messages).
    pub origin: PathBuf,
    /// The trust store directory.
    pub trust: PathBuf,
    /// The site policy file (`None`: nothing but compute is granted; `site` names the site).
    pub site_policy: Option<PathBuf>,
    /// The site name, when there is no site policy.
    pub site: Option<String>,
    /// The evidence directory.
    pub evidence: PathBuf,
    /// The runner key; `None`: the default custody location.
    pub runner_key: Option<PathBuf>,
    /// The API's Unix socket (ignored under socket activation).
    pub socket: PathBuf,
    /// Who may call the API.
    pub allow: AllowList,
    /// Most connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// A client that has not sent a request's headers within this is cut off.
    pub header_timeout: Duration,
    /// Largest request body.
    pub max_body_bytes: u64,
    /// Most jobs waiting to run.
    pub queue_capacity: usize,
    /// Jobs run at once.
    pub concurrency: usize,
    /// Most jobs one uid may have queued or running.
    pub per_submitter: usize,
    /// Where uploaded capsules are kept (content-addressed).
    pub store: PathBuf,
    /// Most bytes of uploaded capsules kept; the least recently used unreferenced ones go first.
    pub store_max_bytes: u64,
    /// How long running jobs may finish after SIGTERM before they are interrupted.
    pub grace: Duration,
    /// A TCP address that serves only `GET /metrics` (read-only), if any.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The fleet (docs/fleet.md): jobs from the hub and evidence home,
    /// through the site's own leaf node; `None`: local jobs only.
    pub fleet: Option<FleetConfig>,
}

/// The `[fleet]` table: how the daemon reaches its site's NATS leaf node.
/// Defaults: `max-capsule-bytes` 64 MiB, `evidence-stream-bytes` 1 GiB,
/// `poll-ms` 1000. Needs a runner built with the `fleet` feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// The leaf's client URL, e.g. `nats://127.0.0.1:4223` (never the hub).
    pub leaf: String,
    /// The user the daemon connects to the leaf as.
    pub user: String,
    /// A file holding that user's password (one line).
    pub password_file: PathBuf,
    /// Largest capsule (or detached signature) fetched from the hub.
    pub max_capsule_bytes: u64,
    /// Size of the leaf's evidence stream; a full stream pauses shipping.
    pub evidence_stream_bytes: i64,
    /// How long one wait for a job lasts, and how often evidence is shipped.
    pub poll: Duration,
    /// The hub witness's vkey file: its cosignatures of this site's
    /// checkpoints are fetched and kept (none when unset).
    pub witness_vkey: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FleetTable {
    leaf: String,
    user: String,
    password_file: PathBuf,
    max_capsule_bytes: Option<u64>,
    evidence_stream_bytes: Option<u64>,
    poll_ms: Option<u64>,
    witness_vkey: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ConfigFile {
    format: u64,
    trust: PathBuf,
    evidence: PathBuf,
    site_policy: Option<PathBuf>,
    site: Option<String>,
    runner_key: Option<PathBuf>,
    #[serde(default)]
    api: ApiTable,
    #[serde(default)]
    queue: QueueTable,
    #[serde(default)]
    store: StoreTable,
    #[serde(default)]
    shutdown: ShutdownTable,
    #[serde(default)]
    metrics: MetricsTable,
    fleet: Option<FleetTable>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ApiTable {
    socket: Option<PathBuf>,
    #[serde(default)]
    allow_uids: Vec<u32>,
    #[serde(default)]
    allow_gids: Vec<u32>,
    max_connections: Option<usize>,
    header_timeout_ms: Option<u64>,
    max_body_bytes: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct QueueTable {
    capacity: Option<usize>,
    concurrency: Option<usize>,
    per_submitter: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct StoreTable {
    dir: Option<PathBuf>,
    max_bytes: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ShutdownTable {
    grace_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct MetricsTable {
    listen: Option<String>,
}

/// Bounds on the values a config may set (a typo of three zeros is refused, not obeyed).
const MAX_QUEUE: usize = 100_000;
const MAX_CONCURRENCY: usize = 1024;
const MAX_CONNECTIONS: usize = 10_000;
const MAX_BODY: u64 = 64 << 20;

impl ServeConfig {
    /// Reads and checks `path`. Relative paths in it are taken relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let origin = path.display().to_string();
        let text =
            read_bounded_text(path, MAX_CONFIG_BYTES, "serve config").map_err(|e| ConfigError {
                origin: origin.clone(),
                detail: e.to_string(),
            })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, path, base)
    }

    /// Parses config text; `origin` names it in errors, relative paths are under `base`.
    pub fn parse(text: &str, origin: &Path, base: &Path) -> Result<Self, ConfigError> {
        let fail = |detail: String| ConfigError {
            origin: origin.display().to_string(),
            detail,
        };
        let file: ConfigFile = toml::from_str(text).map_err(|e| {
            fail(format!(
                "{}; the keys are listed in docs/serve.md",
                e.message().trim_end()
            ))
        })?;
        if file.format != CONFIG_FORMAT {
            return Err(fail(format!(
                "`format = {}` is not a format this runner reads (it reads {CONFIG_FORMAT})",
                file.format
            )));
        }
        let abs = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        if file.site_policy.is_none() && file.site.is_none() {
            return Err(fail(
                "neither `site-policy` nor `site` is set; name the site policy file (or, to grant nothing but compute, the site)".into(),
            ));
        }
        if let Some(site) = &file.site {
            crate::capsule::validate_site(site).map_err(|e| fail(format!("`site`: {e}")))?;
        }
        let positive = |key: &str, value: Option<usize>, default: usize, max: usize| match value {
            None => Ok(default),
            Some(0) => Err(fail(format!("`{key}` is 0; it must be at least 1"))),
            Some(v) if v > max => Err(fail(format!(
                "`{key}` is {v}, above the most this runner accepts ({max})"
            ))),
            Some(v) => Ok(v),
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let queue_capacity = positive("queue.capacity", file.queue.capacity, 64, MAX_QUEUE)?;
        let concurrency = positive(
            "queue.concurrency",
            file.queue.concurrency,
            cpus,
            MAX_CONCURRENCY,
        )?;
        let per_submitter = positive(
            "queue.per-submitter",
            file.queue.per_submitter,
            16,
            MAX_QUEUE,
        )?;
        let max_connections = positive(
            "api.max-connections",
            file.api.max_connections,
            64,
            MAX_CONNECTIONS,
        )?;
        let max_body_bytes = match file.api.max_body_bytes {
            None => 24 << 20,
            Some(v) if !(1024..=MAX_BODY).contains(&v) => {
                return Err(fail(format!(
                    "`api.max-body-bytes` is {v}; it must be between 1024 and {MAX_BODY}"
                )));
            }
            Some(v) => v,
        };
        let header_timeout = match file.api.header_timeout_ms {
            None => Duration::from_secs(5),
            Some(ms) if !(100..=600_000).contains(&ms) => {
                return Err(fail(format!(
                    "`api.header-timeout-ms` is {ms}; it must be between 100 and 600000"
                )));
            }
            Some(ms) => Duration::from_millis(ms),
        };
        let grace = Duration::from_millis(file.shutdown.grace_ms.unwrap_or(30_000));
        let metrics_listen = file
            .metrics
            .listen
            .map(|s| {
                s.parse::<std::net::SocketAddr>().map_err(|e| {
                    fail(format!(
                        "`metrics.listen` = \"{s}\" is not an IP address and port ({e}); write e.g. \"127.0.0.1:9464\""
                    ))
                })
            })
            .transpose()?;
        let fleet = match file.fleet {
            None => None,
            Some(f) => {
                if !(f.leaf.starts_with("nats://") || f.leaf.starts_with("tls://")) {
                    return Err(fail(format!(
                        "`fleet.leaf` = \"{}\" is not a NATS URL; write the site's leaf node, e.g. \"nats://127.0.0.1:4223\"",
                        f.leaf.escape_debug()
                    )));
                }
                let max_capsule_bytes = f.max_capsule_bytes.unwrap_or(64 << 20);
                if !(1024..=(1 << 30)).contains(&max_capsule_bytes) {
                    return Err(fail(format!(
                        "`fleet.max-capsule-bytes` is {max_capsule_bytes}; it must be between 1024 and {}",
                        1u64 << 30
                    )));
                }
                let stream = f.evidence_stream_bytes.unwrap_or(1 << 30);
                if !((1 << 20)..=(1 << 50)).contains(&stream) {
                    return Err(fail(format!(
                        "`fleet.evidence-stream-bytes` is {stream}; it must be between 1 MiB and 1 PiB"
                    )));
                }
                let poll_ms = f.poll_ms.unwrap_or(1000);
                if !(50..=60_000).contains(&poll_ms) {
                    return Err(fail(format!(
                        "`fleet.poll-ms` is {poll_ms}; it must be between 50 and 60000"
                    )));
                }
                Some(FleetConfig {
                    leaf: f.leaf,
                    user: f.user,
                    password_file: abs(f.password_file),
                    max_capsule_bytes,
                    evidence_stream_bytes: stream as i64,
                    poll: Duration::from_millis(poll_ms),
                    witness_vkey: f.witness_vkey.map(abs),
                })
            }
        };
        let evidence = abs(file.evidence);
        let store = file
            .store
            .dir
            .map(abs)
            .unwrap_or_else(|| evidence.join("capsule-store"));
        Ok(Self {
            origin: origin.to_path_buf(),
            trust: abs(file.trust),
            site_policy: file.site_policy.map(abs),
            site: file.site,
            evidence,
            runner_key: file.runner_key.map(abs),
            socket: abs(file
                .api
                .socket
                .unwrap_or_else(|| PathBuf::from("/run/edge-runner/api.sock"))),
            allow: AllowList {
                uids: file.api.allow_uids,
                gids: file.api.allow_gids,
            },
            max_connections,
            header_timeout,
            max_body_bytes,
            queue_capacity,
            concurrency,
            per_submitter,
            store,
            store_max_bytes: file.store.max_bytes.unwrap_or(256 << 20),
            grace,
            metrics_listen,
            fleet,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ServeConfig, ConfigError> {
        ServeConfig::parse(text, Path::new("serve.toml"), Path::new("/etc/edge-runner"))
    }

    #[test]
    fn defaults_are_filled_in_and_paths_resolved() {
        let c =
            parse("format = 1\ntrust = \"trust\"\nevidence = \"/var/lib/e\"\nsite = \"plant-7\"\n")
                .unwrap();
        assert_eq!(c.trust, PathBuf::from("/etc/edge-runner/trust"));
        assert_eq!(c.evidence, PathBuf::from("/var/lib/e"));
        assert_eq!(c.store, PathBuf::from("/var/lib/e/capsule-store"));
        assert_eq!(c.queue_capacity, 64);
        assert_eq!(c.per_submitter, 16);
        assert!(c.concurrency >= 1);
        assert_eq!(c.header_timeout, Duration::from_secs(5));
        assert_eq!(c.allow, AllowList::default());
    }

    #[test]
    fn the_packaged_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/serve.toml");
        let c = ServeConfig::load(&path).unwrap();
        assert_eq!(c.socket, PathBuf::from("/run/edge-runner/api.sock"));
    }

    #[test]
    fn unknown_key_is_refused_by_name() {
        let err = parse(
            "format = 1\ntrust = \"t\"\nevidence = \"e\"\nsite = \"s\"\n[queue]\ncapacty = 3\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `capacty`"), "{err}");
        assert!(err.contains("serve config serve.toml"), "{err}");
    }

    #[test]
    fn zero_concurrency_is_refused() {
        let err = parse(
            "format = 1\ntrust = \"t\"\nevidence = \"e\"\nsite = \"s\"\n[queue]\nconcurrency = 0\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.ends_with("`queue.concurrency` is 0; it must be at least 1"),
            "{err}"
        );
    }

    #[test]
    fn a_site_is_required() {
        let err = parse("format = 1\ntrust = \"t\"\nevidence = \"e\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("neither `site-policy` nor `site`"), "{err}");
    }

    #[test]
    fn metrics_listen_must_be_an_address() {
        let err = parse(
            "format = 1\ntrust = \"t\"\nevidence = \"e\"\nsite = \"s\"\n[metrics]\nlisten = \"localhost:9\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("is not an IP address and port"), "{err}");
    }
}
