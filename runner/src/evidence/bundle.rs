//! Evidence bundles: everything an auditor outside the enclave needs, in one
//! file, and the offline verdict over it.
//!
//! A bundle is one deterministic-CBOR map (text keys): `format` (1), `log` (the
//! evidence log's bytes), `runner-key` (the runner's 32-byte public key),
//! `checkpoint` (the newest checkpoint note, when there is one), `trust-roots`
//! (the trust store's signed versions 1…N, in order) and `exported-at` (seconds).
//! `docs/evidence-format.md` §7 is normative.

use std::fs;
use std::path::Path;

use ciborium::Value;
use serde::Serialize;

use super::checkpoint::Checkpoint;
use super::log::{CHECKPOINT_FILE, LOG_FILE};
use super::verify::{Summary, check_against_checkpoint, verify_log_with_progress};
use crate::cbor::{self, MapReader};
use crate::keys::PublicKey;
use crate::timestamp::Timestamp;
use crate::trust::store::{ROOT_FILE_SUFFIX, root_file_name};
use crate::trust::{Chain, ChainLink};

/// Bundle format version.
pub const BUNDLE_FORMAT: u64 = 1;

/// Largest bundle read.
pub const MAX_BUNDLE_BYTES: u64 = 4 << 30;

/// An evidence bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The evidence log, byte for byte.
    pub log: Vec<u8>,
    /// The runner's public key.
    pub runner_key: PublicKey,
    /// The newest checkpoint note, if the log has one.
    pub checkpoint: Option<String>,
    /// The trust store's signed versions, oldest first.
    pub trust_roots: Vec<Vec<u8>>,
    /// When the bundle was made.
    pub exported_at: Timestamp,
}

impl Bundle {
    /// Collects a bundle from an evidence directory and, optionally, the trust store in force.
    pub fn export(
        evidence_dir: &Path,
        runner_key: PublicKey,
        trust_dir: Option<&Path>,
    ) -> Result<Self, String> {
        let read = |p: &Path| fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let log = read(&evidence_dir.join(LOG_FILE))?;
        let checkpoint = match fs::read_to_string(evidence_dir.join(CHECKPOINT_FILE)) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(format!(
                    "{}: {e}",
                    evidence_dir.join(CHECKPOINT_FILE).display()
                ));
            }
        };
        let mut trust_roots = Vec::new();
        if let Some(dir) = trust_dir {
            // Reading the chain checks it, so a bundle never carries a broken store.
            let chain = Chain::read_dir(dir).map_err(|e| e.to_string())?;
            for link in chain.links() {
                trust_roots.push(read(&dir.join(root_file_name(link.version)))?);
            }
        }
        Ok(Self {
            log,
            runner_key,
            checkpoint,
            trust_roots,
            exported_at: Timestamp::now(),
        })
    }

    /// The deterministic CBOR encoding.
    pub fn to_cbor(&self) -> Result<Vec<u8>, String> {
        let mut fields = vec![
            ("format", Value::Integer(BUNDLE_FORMAT.into())),
            ("log", Value::Bytes(self.log.clone())),
            (
                "runner-key",
                Value::Bytes(self.runner_key.as_bytes().to_vec()),
            ),
            (
                "trust-roots",
                Value::Array(
                    self.trust_roots
                        .iter()
                        .map(|r| Value::Bytes(r.clone()))
                        .collect(),
                ),
            ),
            ("exported-at", Value::Integer(self.exported_at.0.into())),
        ];
        if let Some(cp) = &self.checkpoint {
            fields.push(("checkpoint", Value::Text(cp.clone())));
        }
        cbor::encode(&cbor::text_map(fields)).map_err(|e| e.to_string())
    }

    /// Decodes a bundle strictly (canonical CBOR, known fields only).
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, String> {
        let value = cbor::decode_canonical(bytes).map_err(|e| format!("not a bundle: {e}"))?;
        let map = MapReader::new("bundle", &value)?;
        map.only(&[
            "format",
            "log",
            "runner-key",
            "checkpoint",
            "trust-roots",
            "exported-at",
        ])?;
        let format = map.uint("format")?;
        if format != BUNDLE_FORMAT {
            return Err(format!(
                "bundle format {format} is not supported (this verifier reads {BUNDLE_FORMAT})"
            ));
        }
        let runner_key = PublicKey::from_bytes(map.bytes("runner-key")?)
            .ok_or("`runner-key` is not an Ed25519 public key")?;
        let trust_roots = match map.get("trust-roots") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::Bytes(b) => Ok(b.clone()),
                    _ => Err("`trust-roots` must hold byte strings".to_string()),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err("`trust-roots` must be an array".into()),
        };
        let checkpoint = map
            .get("checkpoint")
            .map(|_| map.text("checkpoint").map(str::to_string))
            .transpose()?;
        Ok(Self {
            log: map.bytes("log")?.to_vec(),
            runner_key,
            checkpoint,
            trust_roots,
            exported_at: Timestamp(map.uint("exported-at")?),
        })
    }
}

/// True when `bytes` look like a bundle (a CBOR map) rather than a bare log (tagged COSE_Sign1).
pub fn looks_like_bundle(bytes: &[u8]) -> bool {
    bytes.first().is_some_and(|b| b >> 5 == 5)
}

/// One run as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunLine {
    /// Sequence number of the `run-finished` record.
    pub record: u64,
    /// Time (ms since the epoch).
    pub time_ms: u64,
    /// Capsule name and version, from the `capsule-verified` record before it.
    pub capsule: String,
    /// Kind.
    pub kind: String,
    /// Signers that counted.
    pub signers: Vec<String>,
    /// Run status.
    pub status: String,
    /// Verdict, when the capsule returned one.
    pub verdict: Option<String>,
    /// Summary, when the capsule returned one.
    pub summary: Option<String>,
    /// What was granted (text lines).
    pub granted: Vec<String>,
    /// What was asked for and denied, with reasons, and refused network use.
    pub denied: Vec<String>,
}

/// A refusal as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RefusalLine {
    /// Sequence number.
    pub record: u64,
    /// Time (ms since the epoch).
    pub time_ms: u64,
    /// The exact reason.
    pub reason: String,
}

/// The auditor's verdict over a bundle or log.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// True when every check passed.
    pub valid: bool,
    /// The first failure, when not valid.
    pub failure: Option<String>,
    /// Records in the log.
    pub records: u64,
    /// The log id (hex).
    pub log_id: Option<String>,
    /// The runner key id (hex) the log was checked under.
    pub runner_key_id: String,
    /// Where that key came from: `given` (the auditor's copy) or `bundle`.
    pub runner_key_source: String,
    /// SHA-256 of the last record (hex).
    pub head: Option<String>,
    /// Merkle root over all records (hex).
    pub merkle_root: Option<String>,
    /// The checkpoint checked against the log, if any: covered size.
    pub checkpoint_size: Option<u64>,
    /// What was verified: `bundle` or `log`.
    pub source: String,
    /// The trust store versions in the bundle that checked out.
    pub trust_roots: Vec<String>,
    /// Every run, in order.
    pub runs: Vec<RunLine>,
    /// Every refused capsule, in order.
    pub refusals: Vec<RefusalLine>,
    /// Highest accepted version per capsule name.
    pub high_water: Vec<String>,
}

/// Verifies a bundle, and its log against its own checkpoint and any
/// `extra_checkpoints` kept elsewhere. `expected_key`, when given, must be the key in the bundle.
pub fn verify_bundle(
    bundle: &Bundle,
    expected_key: Option<&PublicKey>,
    extra_checkpoints: &[String],
) -> Report {
    let mut report = empty_report(&bundle.runner_key, expected_key.is_some());
    if let Some(k) = expected_key
        && k.as_bytes() != bundle.runner_key.as_bytes()
    {
        report.failure = Some(format!(
            "the bundle's runner key is {}, not the expected {}; the bundle was not written by that runner",
            bundle.runner_key.id().short(),
            k.id().short()
        ));
        return report;
    }
    if !bundle.trust_roots.is_empty() {
        let files = bundle
            .trust_roots
            .iter()
            .enumerate()
            .map(|(i, b)| {
                (
                    format!("bundle trust root {}{ROOT_FILE_SUFFIX}", i + 1),
                    b.clone(),
                )
            })
            .collect();
        match Chain::from_files(files) {
            Ok(chain) => {
                report.trust_roots = chain.links().iter().map(describe_link).collect();
            }
            Err(e) => {
                report.failure = Some(format!("trust store in the bundle: {e}"));
                return report;
            }
        }
    }
    let notes: Vec<String> = bundle
        .checkpoint
        .iter()
        .cloned()
        .chain(extra_checkpoints.iter().cloned())
        .collect();
    verify_log_into(&bundle.log, &bundle.runner_key, &notes, report)
}

/// The verdict on a file that is not a well-formed bundle.
pub fn malformed_bundle_report(expected_key: Option<&PublicKey>, detail: &str) -> Report {
    let mut report = match expected_key {
        Some(k) => empty_report(k, true),
        None => Report {
            runner_key_id: String::new(),
            runner_key_source: "none".into(),
            ..blank_report()
        },
    };
    report.failure = Some(format!("not a valid bundle: {detail}"));
    report
}

/// A report that has checked nothing yet (source `bundle`, no key).
fn blank_report() -> Report {
    Report {
        valid: false,
        failure: None,
        records: 0,
        log_id: None,
        runner_key_id: String::new(),
        runner_key_source: "none".into(),
        head: None,
        merkle_root: None,
        checkpoint_size: None,
        source: "bundle".into(),
        trust_roots: Vec::new(),
        runs: Vec::new(),
        refusals: Vec::new(),
        high_water: Vec::new(),
    }
}

fn describe_link(link: &ChainLink) -> String {
    format!("v{} sha256 {}", link.version, hex::encode(link.digest))
}

fn empty_report(key: &PublicKey, given: bool) -> Report {
    Report {
        runner_key_id: key.id().to_string(),
        runner_key_source: if given { "given" } else { "bundle" }.into(),
        ..blank_report()
    }
}

/// Verifies a bare log, and it against each kept checkpoint note, into a report.
pub fn verify_log_report(log: &[u8], key: &PublicKey, checkpoints: &[String]) -> Report {
    let mut report = empty_report(key, true);
    report.source = "log".into();
    verify_log_into(log, key, checkpoints, report)
}

fn verify_log_into(
    log: &[u8],
    key: &PublicKey,
    checkpoints: &[String],
    mut report: Report,
) -> Report {
    let summary = match verify_log_with_progress(log, key, &mut progress_bar) {
        Ok(s) => s,
        Err(f) => {
            report.failure = Some(f.to_string());
            return report;
        }
    };
    for note in checkpoints {
        match check_against_checkpoint(&summary, note, key) {
            Ok(Checkpoint { size, .. }) => {
                report.checkpoint_size = Some(report.checkpoint_size.unwrap_or(0).max(size));
            }
            Err(f) => {
                report.failure = Some(f.to_string());
                fill(&mut report, &summary);
                return report;
            }
        }
    }
    fill(&mut report, &summary);
    report.valid = true;
    report
}

fn text(map: &MapReader<'_>, key: &str) -> Option<String> {
    map.text(key).ok().map(str::to_string)
}

fn fill(report: &mut Report, summary: &Summary) {
    report.records = summary.records.len() as u64;
    report.log_id = Some(hex::encode(summary.log_id));
    report.head = Some(hex::encode(summary.head));
    report.merkle_root = Some(hex::encode(summary.root));
    let mut current: Option<(String, String, Vec<String>)> = None;
    let mut grant: (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    for r in &summary.records {
        let Ok(body) = MapReader::new("body", &r.record.body) else {
            continue;
        };
        match r.record.event.as_str() {
            "capsule-verified" => {
                let signers = match body.get("signers") {
                    Some(Value::Array(items)) => items
                        .iter()
                        .filter_map(|s| MapReader::new("signer", s).ok())
                        .map(|s| {
                            format!(
                                "{} ({})",
                                text(&s, "publisher").unwrap_or_default(),
                                text(&s, "organisation").unwrap_or_default()
                            )
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                current = Some((
                    format!(
                        "{} {}",
                        text(&body, "name").unwrap_or_default(),
                        text(&body, "version").unwrap_or_default()
                    ),
                    text(&body, "kind").unwrap_or_default(),
                    signers,
                ));
            }
            "capsule-refused" => report.refusals.push(RefusalLine {
                record: r.record.seq,
                time_ms: r.record.time_ms,
                reason: text(&body, "reason").unwrap_or_default(),
            }),
            "run-started" => grant = grant_lines(&body),
            "run-finished" => {
                let (capsule, kind, signers) = current.clone().unwrap_or_default();
                let mut denied = grant.1.clone();
                if let Some(Value::Array(items)) = body.get("egress-denied") {
                    denied.extend(items.iter().filter_map(|v| match v {
                        Value::Text(t) => Some(format!("refused at run time: {t}")),
                        _ => None,
                    }));
                }
                report.runs.push(RunLine {
                    record: r.record.seq,
                    time_ms: r.record.time_ms,
                    capsule,
                    kind,
                    signers,
                    status: text(&body, "status").unwrap_or_default(),
                    verdict: text(&body, "verdict"),
                    summary: text(&body, "summary").or_else(|| text(&body, "error")),
                    granted: grant.0.clone(),
                    denied,
                });
            }
            _ => {}
        }
    }
    report.high_water = summary
        .records
        .iter()
        .filter(|r| r.record.event == "capsule-verified")
        .filter_map(|r| {
            let b = MapReader::new("b", &r.record.body).ok()?;
            let name = text(&b, "name")?;
            let (v, _) = summary.high_water.capsule(&name)?;
            Some(format!("{name} {v}"))
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
}

fn grant_lines(body: &MapReader<'_>) -> (Vec<String>, Vec<String>) {
    let mut granted = Vec::new();
    if let Some(g) = body
        .get("grant")
        .and_then(|g| MapReader::new("grant", g).ok())
    {
        for key in ["memory-bytes", "fuel", "wall-time-ms"] {
            if let Ok(v) = g.uint(key) {
                granted.push(format!("{key} {v}"));
            }
        }
        if let Some(Value::Array(dirs)) = g.get("filesystem") {
            for d in dirs.iter().filter_map(|d| MapReader::new("dir", d).ok()) {
                granted.push(format!(
                    "file {} ({})",
                    text(&d, "guest").unwrap_or_default(),
                    text(&d, "access").unwrap_or_default()
                ));
            }
        }
        if let Some(Value::Array(net)) = g.get("network") {
            for n in net.iter().filter_map(|n| MapReader::new("net", n).ok()) {
                granted.push(format!(
                    "egress {}",
                    text(&n, "destination").unwrap_or_default()
                ));
            }
        }
        if let Some(Value::Array(keys)) = g.get("config") {
            for c in keys.iter().filter_map(|c| MapReader::new("config", c).ok()) {
                granted.push(format!(
                    "config {} (value committed: {})",
                    text(&c, "key").unwrap_or_default(),
                    c.bytes("commitment").map(hex::encode).unwrap_or_default()
                ));
            }
        }
    }
    let mut denied = Vec::new();
    if let Some(Value::Array(items)) = body.get("denied") {
        for d in items
            .iter()
            .filter_map(|d| MapReader::new("denied", d).ok())
        {
            denied.push(format!(
                "{}: {}",
                text(&d, "request").unwrap_or_default(),
                text(&d, "reason").unwrap_or_default()
            ));
        }
    }
    (granted, denied)
}

/// Draws a progress bar on stderr for logs big enough to take a while, when
/// stderr is a terminal (never in pipes, `--json` consumers or CI logs).
fn progress_bar(done: usize, total: usize) {
    use std::io::{IsTerminal, Write};
    if total < (8 << 20) || !std::io::stderr().is_terminal() {
        return;
    }
    let pct = done * 100 / total.max(1);
    let filled = pct / 4;
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\rverifying [{}{}] {pct:>3}%",
        "#".repeat(filled),
        " ".repeat(25 - filled)
    );
    if done >= total {
        let _ = writeln!(err);
    }
    let _ = err.flush();
}
