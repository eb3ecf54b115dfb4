//! The command line: each subcommand is a clap-derive struct with `execute`.
//!
//! Owns flag parsing, file I/O at the edges, human-readable output and the
//! exit codes below. Every decision is delegated to the library modules; this
//! module must not verify, sandbox or encode anything itself.
//!
//! Exit codes: 0 success; 1 error (bad input, I/O); 2 usage error; 3 capsule
//! refused by the trust checks; 4 evidence failed verification; 5 the capsule
//! ran and its verdict is `fail`; 6 the capsule ran but did not complete
//! (trap, fuel, deadline, memory) or its verdict is `error`.

mod capsule;
mod demo;
mod html;
mod scaffold;
mod trust;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::audit::{
    KeySource, Report, Source, malformed_bundle_report, verify_bundle, verify_log_report,
};
use crate::capsule::{MAX_CAPSULE_BYTES, MAX_SIGNATURE_SECTION_BYTES, RawCapsule};
use crate::evidence::bundle::{Bundle, MAX_BUNDLE_BYTES, looks_like_bundle};
use crate::evidence::{self, EvidenceLog, LOG_FILE};
use crate::keys::{PublicKey, SecretKey};
use crate::sandbox::{CACHE_KEY_PURPOSE, CodeCache, Limits, RunStatus, Verdict};
use crate::session::{RunRecord, Session, SessionError};
use crate::site::SitePolicy;
use crate::timestamp::Timestamp;
use crate::trust::{TrustRoot, store};

/// Exit code: the capsule was refused by the trust checks.
pub const EXIT_REFUSED: u8 = 3;
/// Exit code: evidence failed verification.
pub const EXIT_EVIDENCE_INVALID: u8 = 4;
/// Exit code: the capsule's verdict is `fail`.
pub const EXIT_VERDICT_FAIL: u8 = 5;
/// Exit code: the run did not complete, or the verdict is `error`.
pub const EXIT_RUN_ABNORMAL: u8 = 6;

/// Largest `--input` file read.
const MAX_INPUT_BYTES: u64 = 16 * 1024 * 1024;

/// Edge Runner: verify signed WebAssembly capsules, run them in a deny-by-default sandbox, and keep signed evidence.
#[derive(Debug, Parser)]
#[command(name = "edge-runner", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 ok; 1 error; 2 usage; 3 capsule refused; 4 evidence invalid; 5 verdict fail; 6 run abnormal or verdict error";

#[derive(Debug, Subcommand)]
enum Command {
    /// Create and inspect Ed25519 keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Sign, verify and inspect capsules.
    #[command(subcommand)]
    Capsule(capsule::CapsuleCommand),
    /// Create, rotate, sign and show the trust store.
    #[command(subcommand)]
    Trust(trust::TrustCommand),
    /// Verify a capsule, run it in the sandbox and record evidence.
    Run(RunArgs),
    /// Verify evidence logs.
    #[command(subcommand)]
    Evidence(EvidenceCommand),
    /// Run the whole loop on the built-in demo keys and capsules.
    Demo(demo::DemoArgs),
}

impl Cli {
    /// Runs the parsed command.
    pub fn execute(self) -> Result<ExitCode> {
        match self.command {
            Command::Keys(KeysCommand::Generate(args)) => args.execute(),
            Command::Capsule(command) => command.execute(),
            Command::Trust(command) => command.execute(),
            Command::Run(args) => args.execute(),
            Command::Evidence(EvidenceCommand::Verify(args)) => args.execute(),
            Command::Evidence(EvidenceCommand::Export(args)) => args.execute(),
            Command::Evidence(EvidenceCommand::Prove(args)) => args.execute(),
            Command::Demo(args) => args.execute(),
        }
    }
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Generate an Ed25519 key pair: NAME.key (PKCS#8 PEM, mode 0600) and NAME.pub (SPKI PEM).
    Generate(KeysGenerate),
}

#[derive(Debug, Args)]
struct KeysGenerate {
    /// Directory to write the key pair into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Base name of the files.
    #[arg(long)]
    name: String,
}

impl KeysGenerate {
    fn execute(self) -> Result<ExitCode> {
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name.starts_with('.') {
            bail!(
                "--name `{}` must be a plain file name (no `/`, not starting with `.`)",
                self.name
            );
        }
        let key = SecretKey::generate()?;
        let (private, public) = key.write_pair(&self.out, &self.name)?;
        println!("private key: {} (keep it secret)", private.display());
        println!("public key:  {}", public.display());
        println!("key id:      {}", key.id());
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The signed capsule (or the unsigned component, with --signature).
    capsule: PathBuf,
    /// Its detached signature file, if it has one.
    #[arg(long)]
    signature: Option<PathBuf>,
    /// The trust store directory (1.root.cose, 2.root.cose, …).
    #[arg(long)]
    trust: PathBuf,
    /// This site's name; the capsule's audience must include it. Taken from --site-policy when given.
    #[arg(
        long,
        env = "EDGE_RUNNER_SITE",
        required_unless_present = "site_policy"
    )]
    site: Option<String>,
    /// The site policy (`site-policy.toml`): directories, config values and limits this site grants.
    /// Without one, nothing but compute is granted.
    #[arg(long, env = "EDGE_RUNNER_SITE_POLICY")]
    site_policy: Option<PathBuf>,
    /// Evidence directory; the log is DIR/evidence.log.
    #[arg(long)]
    evidence: PathBuf,
    /// Input for the capsule (passed as bytes; usually JSON).
    #[arg(long)]
    input: Option<PathBuf>,
    /// The runner's private key. Default: DIR/runner.key, generated on first use with DIR/runner.pub.
    #[arg(long, env = "EDGE_RUNNER_KEY")]
    runner_key: Option<PathBuf>,
}

impl RunArgs {
    fn execute(self) -> Result<ExitCode> {
        let input = match &self.input {
            Some(path) => read_bounded(path, MAX_INPUT_BYTES, "input")?,
            None => Vec::new(),
        };
        let raw = read_raw(&self.capsule, self.signature.as_deref())?;
        let policy = match (&self.site_policy, &self.site) {
            (Some(path), site) => {
                let policy = SitePolicy::load(path)?;
                if let Some(site) = site
                    && *site != policy.site
                {
                    bail!(
                        "--site is `{site}` but {} is the policy of site `{}`; drop --site or use that site's policy",
                        path.display(),
                        policy.site
                    );
                }
                policy
            }
            (None, Some(site)) => SitePolicy::deny_all(site)?,
            (None, None) => bail!("pass --site NAME or --site-policy FILE"),
        };
        let key = runner_key(self.runner_key.as_deref(), &self.evidence)?;
        let cache = CodeCache::new(
            &self.evidence.join("code-cache"),
            key.derive_secret(CACHE_KEY_PURPOSE),
        );
        let log = EvidenceLog::open(&self.evidence, key)?;
        let mut session = Session::with_policy(log, Limits::default(), policy)?;
        session.set_code_cache(cache);
        let refused = |session: &Session, err: &dyn std::fmt::Display| {
            eprintln!("REFUSED: {}: {err}", self.capsule.display());
            eprintln!("(recorded in {})", session.log().path().display());
            Ok(ExitCode::from(EXIT_REFUSED))
        };
        // An unusable trust store refuses the capsule, and that is evidence too.
        let root = match store::load(&self.trust, Timestamp::now()) {
            Ok(root) => root,
            Err(err) => {
                return match session.refuse_without_root(&raw, err) {
                    SessionError::Refused(err) => refused(&session, &err),
                    other => Err(other.into()),
                };
            }
        };
        warn_if_demo(&root);
        let verified = match session.verify(raw, &root) {
            Ok(v) => v,
            Err(SessionError::Refused(err)) => return refused(&session, &err),
            Err(other) => return Err(other.into()),
        };
        let record = session.run(verified, &input)?;
        print_run(&record);
        println!(
            "evidence: {} ({} records)",
            session.log().path().display(),
            session.log().len()
        );
        Ok(run_exit_code(&record))
    }
}

/// Prints a run's result for humans.
fn print_run(record: &RunRecord) {
    let m = record.capsule.manifest();
    let r = &record.report;
    println!(
        "ran {} {} ({}): {}",
        m.name,
        m.version,
        m.kind,
        r.status.as_str()
    );
    if let Some(o) = &r.outcome {
        println!("  verdict: {} — {}", o.verdict.as_str(), o.summary);
        for f in &o.findings {
            println!(
                "  finding [{}] {}: {}",
                f.severity.as_str(),
                f.code,
                f.message
            );
        }
    }
    if let Some(e) = &r.error {
        println!("  error: {e}");
    }
    for d in &record.grant.directories {
        println!(
            "  granted: {} -> {} ({})",
            d.guest,
            d.host.display(),
            d.access
        );
    }
    for k in record.grant.config.keys() {
        println!("  granted: config {k}");
    }
    for e in &record.grant.egress {
        let addrs: Vec<String> = e.addresses.iter().map(ToString::to_string).collect();
        println!("  granted: egress {} ({})", e.destination, addrs.join(", "));
    }
    for d in &record.grant.denied {
        println!("  denied: {} — {}", d.request, d.reason);
    }
    println!(
        "  used: fuel {} of {}, peak memory {} of {} bytes, {} ms",
        r.fuel_used,
        record.grant.fuel,
        r.peak_memory_bytes,
        record.grant.memory_bytes,
        r.wall_time.as_millis()
    );
    for item in &r.evidence {
        println!(
            "  evidence item `{}` ({}, {} bytes, sha256 {})",
            item.label,
            item.media_type,
            item.size,
            hex::encode(&item.sha256[..8])
        );
    }
}

fn run_exit_code(record: &RunRecord) -> ExitCode {
    match (&record.report.status, &record.report.outcome) {
        (RunStatus::Completed | RunStatus::OutputOverflow, Some(o))
            if o.verdict == Verdict::Pass =>
        {
            ExitCode::SUCCESS
        }
        (RunStatus::Completed | RunStatus::OutputOverflow, Some(o))
            if o.verdict == Verdict::Fail =>
        {
            ExitCode::from(EXIT_VERDICT_FAIL)
        }
        _ => ExitCode::from(EXIT_RUN_ABNORMAL),
    }
}

#[derive(Debug, Subcommand)]
enum EvidenceCommand {
    /// Verify evidence offline: a bundle, an evidence directory or a log file.
    Verify(EvidenceVerify),
    /// Write a self-contained bundle (log, checkpoint, runner key, trust store) for an auditor.
    Export(EvidenceExport),
    /// Print an RFC 9162 inclusion proof of one record in the log's newest checkpoint (JSON).
    Prove(EvidenceProve),
}

#[derive(Debug, Args)]
struct EvidenceProve {
    /// The evidence directory.
    dir: PathBuf,
    /// The record's sequence number.
    #[arg(long)]
    record: u64,
    /// The runner's public key. Default: DIR/runner.pub.
    #[arg(long)]
    runner_key: Option<PathBuf>,
}

impl EvidenceProve {
    fn execute(self) -> Result<ExitCode> {
        use base64::Engine;
        let b64 = |h: &[u8]| base64::engine::general_purpose::STANDARD.encode(h);
        let key = PublicKey::load(
            &self
                .runner_key
                .clone()
                .unwrap_or_else(|| self.dir.join("runner.pub")),
        )?;
        let log = fs::read(self.dir.join(LOG_FILE))
            .with_context(|| format!("reading {}", self.dir.join(LOG_FILE).display()))?;
        let summary = evidence::verify_log(&log, &key)
            .map_err(|f| anyhow::anyhow!("the log does not verify: {f}"))?;
        let Some(cp) = &summary.last_checkpoint else {
            bail!("the log has no checkpoint yet; proofs are relative to a signed checkpoint");
        };
        if self.record >= cp.size {
            bail!(
                "record {} is not covered by the newest checkpoint (it covers records 0 to {})",
                self.record,
                cp.size.saturating_sub(1)
            );
        }
        let leaves: Vec<[u8; 32]> = summary
            .records
            .iter()
            .take(cp.size as usize)
            .map(|r| evidence::merkle::leaf_hash(&r.bytes))
            .collect();
        let index = self.record as usize;
        let proof = evidence::merkle::inclusion_proof(&leaves, index)
            .ok_or_else(|| anyhow::anyhow!("record {} is out of range", self.record))?;
        let note = summary
            .records
            .iter()
            .rev()
            .find(|r| r.record.event == "checkpoint")
            .and_then(|r| {
                crate::cbor::MapReader::new("b", &r.record.body)
                    .ok()?
                    .text("note")
                    .ok()
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let out = serde_json::json!({
            "record": self.record,
            "record_cbor": b64(&summary.records[index].bytes),
            "leafIdx": self.record,
            "treeSize": cp.size,
            "leafHash": b64(&leaves[index]),
            "root": b64(&cp.root),
            "proof": proof.iter().map(|h| b64(h)).collect::<Vec<_>>(),
            "checkpoint": note,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Debug, Args)]
struct EvidenceExport {
    /// The evidence directory.
    dir: PathBuf,
    /// Where to write the bundle.
    #[arg(long)]
    out: PathBuf,
    /// The trust store in force, included so the auditor sees who was trusted.
    #[arg(long)]
    trust: Option<PathBuf>,
    /// The runner's public key. Default: DIR/runner.pub.
    #[arg(long)]
    runner_key: Option<PathBuf>,
}

impl EvidenceExport {
    fn execute(self) -> Result<ExitCode> {
        let key_path = self
            .runner_key
            .clone()
            .unwrap_or_else(|| self.dir.join("runner.pub"));
        let key = PublicKey::load(&key_path).with_context(|| {
            format!(
                "the runner's public key; pass --runner-key if it is not {}",
                key_path.display()
            )
        })?;
        let bundle = Bundle::export(&self.dir, key, self.trust.as_deref())?;
        // Never hand an auditor a bundle that does not verify here.
        let report = verify_bundle(&bundle, Some(&key), &[], &mut progress_bar);
        if !report.valid() {
            bail!(
                "refusing to export: the evidence does not verify ({})",
                report.failure.unwrap_or_default()
            );
        }
        write_atomically(&self.out, &bundle.to_cbor()?)?;
        println!(
            "exported {} records, checkpoint {}, {} trust root version(s), runner key {} -> {}",
            report.records,
            report
                .checkpoint_size
                .map_or_else(|| "none".to_string(), |s| format!("covering {s}")),
            bundle.trust_roots.len(),
            key.id().short(),
            self.out.display()
        );
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Debug, Args)]
struct EvidenceVerify {
    /// A bundle (from `evidence export`), an evidence directory, or a log file.
    path: PathBuf,
    /// The runner's public key (SPKI PEM). Required for a directory or log; for a
    /// bundle, checked against the key inside it (without it, the bundle's own key is used).
    #[arg(long)]
    runner_key: Option<PathBuf>,
    /// A checkpoint (C2SP signed note) seen earlier, e.g. kept by a witness; repeatable.
    /// The log must still hold, unchanged, every record it covers. DIR/checkpoint is always checked too.
    #[arg(long = "checkpoint")]
    checkpoints: Vec<PathBuf>,
    /// Print the report as JSON.
    #[arg(long, conflicts_with = "html")]
    json: bool,
    /// Write the report as one self-contained HTML page to this file.
    #[arg(long)]
    html: Option<PathBuf>,
    /// List every run and refusal.
    #[arg(long, short)]
    verbose: bool,
}

impl EvidenceVerify {
    fn execute(self) -> Result<ExitCode> {
        let key = self
            .runner_key
            .as_deref()
            .map(PublicKey::load)
            .transpose()?;
        let mut notes = Vec::new();
        for p in &self.checkpoints {
            let bytes = read_bounded(p, 64 * 1024, "checkpoint")?;
            notes.push(
                String::from_utf8(bytes)
                    .map_err(|_| anyhow::anyhow!("checkpoint {} is not UTF-8", p.display()))?,
            );
        }
        let report = if self.path.is_dir() {
            let key = key.ok_or_else(|| {
                anyhow::anyhow!("--runner-key is required to verify an evidence directory")
            })?;
            let log_path = self.path.join(LOG_FILE);
            let log = fs::read(&log_path)
                .with_context(|| format!("reading evidence log {}", log_path.display()))?;
            if let Ok(note) = fs::read_to_string(self.path.join(evidence::CHECKPOINT_FILE)) {
                notes.insert(0, note);
            }
            verify_log_report(&log, &key, &notes, &mut progress_bar)
        } else {
            let bytes = read_bounded(&self.path, MAX_BUNDLE_BYTES, "evidence")?;
            if looks_like_bundle(&bytes) {
                match Bundle::from_cbor(&bytes) {
                    Ok(bundle) => verify_bundle(&bundle, key.as_ref(), &notes, &mut progress_bar),
                    Err(e) => malformed_bundle_report(key.as_ref(), &e.to_string()),
                }
            } else {
                let key = key.ok_or_else(|| {
                    anyhow::anyhow!("--runner-key is required to verify a bare log file")
                })?;
                verify_log_report(&bytes, &key, &notes, &mut progress_bar)
            }
        };
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_report(&report, self.verbose);
        }
        if let Some(path) = &self.html {
            write_atomically(path, html::render(&report).as_bytes())?;
            println!("report: {}", path.display());
        }
        Ok(if report.valid() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_EVIDENCE_INVALID)
        })
    }
}

fn print_report(r: &Report, verbose: bool) {
    if verbose {
        for run in &r.runs {
            println!(
                "  #{:<5} run {} ({}): {} {}",
                run.record,
                run.capsule,
                run.kind,
                run.status,
                run.verdict.as_deref().unwrap_or("")
            );
        }
        for refusal in &r.refusals {
            println!("  #{:<5} refused: {}", refusal.record, refusal.reason);
        }
    }
    if r.valid() {
        println!(
            "VALID: {} records, log {}, signed by runner key {} ({}), head {}, Merkle root {}{}",
            r.records,
            r.log_id.as_deref().unwrap_or(""),
            &r.runner_key_id[..r.runner_key_id.len().min(16)],
            if r.runner_key_source == KeySource::Bundle {
                "from the bundle: confirm this key id with the runner's operator"
            } else {
                "as given"
            },
            r.head.as_deref().unwrap_or(""),
            r.merkle_root.as_deref().unwrap_or(""),
            r.checkpoint_size.map_or_else(String::new, |s| format!(
                ", consistent with a checkpoint covering {s} records"
            ))
        );
        println!("  {} runs, {} refusals", r.runs.len(), r.refusals.len());
        if r.source == Source::Bundle {
            println!(
                "  trust store versions in the bundle (chain checked): {}",
                if r.trust_roots.is_empty() {
                    "none".to_string()
                } else {
                    r.trust_roots.join(", ")
                }
            );
        }
    } else {
        eprintln!(
            "INVALID: {}",
            r.failure.as_deref().unwrap_or("unknown failure")
        );
    }
}

/// Loads the trust store for commands that only read it; warns about the demo root.
fn load_trust_store(dir: &Path) -> Result<TrustRoot, crate::trust::TrustError> {
    let root = store::load(dir, Timestamp::now())?;
    warn_if_demo(&root);
    Ok(root)
}

fn warn_if_demo(root: &TrustRoot) {
    if root.demo {
        eprintln!(
            "WARNING: trust root `{}` is the DEMO root; its keys are public. Never use it outside a demo.",
            root.name
        );
    }
}

/// Reads a capsule file, and its detached signature file if given.
fn read_raw(capsule: &Path, signature: Option<&Path>) -> Result<RawCapsule> {
    Ok(RawCapsule {
        component: read_capsule(capsule)?,
        detached_signature: signature
            .map(|p| read_bounded(p, MAX_SIGNATURE_SECTION_BYTES as u64, "signature file"))
            .transpose()?,
    })
}

fn read_capsule(path: &Path) -> Result<Vec<u8>> {
    read_bounded(path, MAX_CAPSULE_BYTES as u64, "capsule")
}

/// Loads the runner key, or creates DIR/runner.key (0600) and DIR/runner.pub on first use.
fn runner_key(explicit: Option<&Path>, evidence_dir: &Path) -> Result<SecretKey> {
    if let Some(path) = explicit {
        return Ok(SecretKey::load(path)?);
    }
    let path = evidence_dir.join("runner.key");
    if path.exists() {
        return Ok(SecretKey::load(&path)?);
    }
    let key = SecretKey::generate()?;
    key.write_pair(evidence_dir, "runner")?;
    eprintln!(
        "created runner key {} (public key {}); auditors verify this log with that public key",
        path.display(),
        evidence_dir.join("runner.pub").display()
    );
    Ok(key)
}

fn read_bounded(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let meta = fs::metadata(path).with_context(|| format!("reading {what} {}", path.display()))?;
    if meta.len() > limit {
        bail!(
            "{what} {} is {} bytes; the limit is {limit} bytes",
            path.display(),
            meta.len()
        );
    }
    fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

/// Writes via a temporary file and rename, so a crash never leaves a half-written file.
fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out")
    ));
    fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
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
