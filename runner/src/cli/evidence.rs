//! `edge-runner evidence verify | export | prove`: the auditor's commands;
//! `witness-init | witness`: running a witness; `witness-request |
//! add-cosignature`: the runner operator's side of witnessing.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};

use super::{Exit, html, progress_bar, write_atomically};
use crate::audit::{
    KeySource, Report, Source, Truncation, malformed_bundle_report, verify_bundle,
    verify_bundle_witnessed, verify_log_report_witnessed,
};
use crate::evidence::bundle::{Bundle, MAX_BUNDLE_BYTES, looks_like_bundle};
use crate::evidence::witness::{
    self, AddCheckpoint, LogConfig, MAX_NOTE_BYTES, WITNESS_KEY_FILE, WITNESS_VKEY_FILE, Witness,
    WitnessError, WitnessKey, WitnessPolicy, WitnessState, note_size,
};
use crate::evidence::{self, CHECKPOINT_FILE, merkle};
use crate::fsio::{read_bounded, read_bounded_text};
use crate::keys::{KeyError, PublicKey, SecretKey};
use crate::timestamp::Timestamp;

/// Largest checkpoint note read; real ones are a few hundred bytes.
const MAX_CHECKPOINT_BYTES: u64 = 64 * 1024;

#[derive(Debug, Subcommand)]
pub(super) enum EvidenceCommand {
    /// Verify evidence offline: a bundle, an evidence directory or a log file.
    Verify(EvidenceVerify),
    /// Write a self-contained bundle (log, checkpoint, runner key, trust store) for an auditor.
    Export(EvidenceExport),
    /// Print an RFC 9162 inclusion proof of one record in the log's newest checkpoint (JSON).
    Prove(EvidenceProve),
    /// Hand the log over to a new runner key: a record signed by the old key and the new one.
    RotateKey(super::rotate::EvidenceRotateKey),
    /// Create a witness: its key pair and vkey (the public key auditors pass to `verify --witness`).
    WitnessInit(WitnessInit),
    /// Act as a witness: answer one add-checkpoint request (C2SP tlog-witness) with a cosignature,
    /// only if the checkpoint extends the last one this witness cosigned for the log.
    Witness(WitnessCosign),
    /// Print the add-checkpoint request for DIR/checkpoint, with a consistency proof from a witness's size.
    WitnessRequest(WitnessRequest),
    /// Verify a witness's cosignature and keep it in DIR/witnessed/ next to the checkpoint.
    AddCosignature(AddCosignature),
    /// Act as a witness: follow a log to its new runner key after `rotate-key`, given a bundle
    /// that shows the old key handing the log over; prints the cosignature of its newest checkpoint.
    WitnessRotate(WitnessRotate),
}

impl EvidenceCommand {
    pub(super) fn execute(self) -> Result<Exit> {
        match self {
            EvidenceCommand::Verify(args) => args.execute(),
            EvidenceCommand::Export(args) => args.execute(),
            EvidenceCommand::Prove(args) => args.execute(),
            EvidenceCommand::RotateKey(args) => args.execute(),
            EvidenceCommand::WitnessInit(args) => args.execute(),
            EvidenceCommand::Witness(args) => args.execute(),
            EvidenceCommand::WitnessRequest(args) => args.execute(),
            EvidenceCommand::AddCosignature(args) => args.execute(),
            EvidenceCommand::WitnessRotate(args) => args.execute(),
        }
    }
}

#[derive(Debug, Args)]
pub(super) struct EvidenceVerify {
    /// A bundle (from `evidence export`), an evidence directory, or a log file.
    path: PathBuf,
    /// The runner's public key (SPKI PEM). Required for a directory or log; for a
    /// bundle, checked against the key inside it (without it, the bundle's own key is used).
    #[arg(long)]
    runner_key: Option<PathBuf>,
    /// A checkpoint (C2SP signed note, or a bundle whose checkpoint is meant) seen earlier, e.g.
    /// kept by a witness or from the previous bundle; repeatable. The log must still hold,
    /// unchanged, every record it covers. DIR/checkpoint is always checked too. For a bundle
    /// holding a range (`export --since`), this is what ties the range to the history before it.
    #[arg(long = "checkpoint")]
    checkpoints: Vec<PathBuf>,
    /// A witness you trust: a file holding its vkey (`NAME+KEYID+BASE64`, the witness's
    /// witness.vkey); repeatable. Its cosignatures on checkpoints the log must extend are counted.
    #[arg(long = "witness", value_name = "VKEY_FILE")]
    witnesses: Vec<PathBuf>,
    /// How many of the --witness witnesses must have cosigned a checkpoint the log extends.
    /// Default: all of them.
    #[arg(long, value_name = "N", requires = "witnesses")]
    min_witnesses: Option<usize>,
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
    fn execute(self) -> Result<Exit> {
        let key = self
            .runner_key
            .as_deref()
            .map(PublicKey::load)
            .transpose()?;
        let mut notes = Vec::new();
        for p in &self.checkpoints {
            notes.push(checkpoint_from(p)?);
        }
        let policy = if self.witnesses.is_empty() {
            WitnessPolicy::none()
        } else {
            let mut keys = Vec::new();
            for path in &self.witnesses {
                keys.push(load_vkey(path)?);
            }
            WitnessPolicy::new(keys, self.min_witnesses)
                .map_err(|e| anyhow!("--witness/--min-witnesses: {e}"))?
        };
        // The auditor's own checkpoints, each checked below (a valid report
        // means every one of them is consistent with the log).
        let given: Vec<u64> = notes.iter().filter_map(|n| note_size(n)).collect();
        let mut report = if self.path.is_dir() {
            let key = key.ok_or_else(|| {
                anyhow!("--runner-key is required to verify an evidence directory")
            })?;
            let log = read_log(&self.path)?;
            let note_path = self.path.join(CHECKPOINT_FILE);
            let mut kept = Vec::new();
            if note_path.exists() {
                kept.push(read_bounded_text(
                    &note_path,
                    MAX_CHECKPOINT_BYTES,
                    "checkpoint",
                )?);
            }
            kept.extend(
                witness::read_witnessed(&self.path)?
                    .into_iter()
                    .map(|(_, note)| note),
            );
            notes.splice(0..0, kept);
            verify_log_report_witnessed(&log, &key, &notes, &policy, &mut progress_bar)
        } else {
            let bytes = read_bounded(&self.path, MAX_BUNDLE_BYTES, "evidence")?;
            if looks_like_bundle(&bytes) {
                match Bundle::from_cbor(&bytes) {
                    Ok(bundle) => verify_bundle_witnessed(
                        &bundle,
                        key.as_ref(),
                        &notes,
                        &policy,
                        &mut progress_bar,
                    ),
                    Err(e) => malformed_bundle_report(key.as_ref(), &e.to_string()),
                }
            } else {
                let key = key
                    .ok_or_else(|| anyhow!("--runner-key is required to verify a bare log file"))?;
                verify_log_report_witnessed(&bytes, &key, &notes, &policy, &mut progress_bar)
            }
        };
        if report.valid() {
            report.auditor_checkpoints = given;
        }
        if self.json {
            say!("{}", serde_json::to_string_pretty(&report)?)?;
        } else {
            print_report(&report, self.verbose)?;
        }
        if let Some(path) = &self.html {
            write_atomically(path, html::render(&report).as_bytes())?;
            say!("report: {}", path.display())?;
        }
        Ok(if report.valid() {
            Exit::Ok
        } else {
            Exit::EvidenceInvalid
        })
    }
}

/// A checkpoint note from a file holding one, or the newest checkpoint of a bundle.
fn checkpoint_from(path: &std::path::Path) -> Result<String> {
    let bytes = match read_bounded(path, MAX_CHECKPOINT_BYTES, "checkpoint") {
        Ok(bytes) => bytes,
        // Larger than a note: a bundle, if it is a regular file (a pipe or
        // device is refused at the note's limit).
        Err(crate::fsio::ReadError::TooLarge { .. }) if path.is_file() => {
            read_bounded(path, MAX_BUNDLE_BYTES, "bundle")?
        }
        Err(e) => return Err(e.into()),
    };
    if looks_like_bundle(&bytes) {
        let bundle = Bundle::from_cbor(&bytes).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        return bundle.checkpoint.ok_or_else(|| {
            anyhow!(
                "{}: the bundle holds no checkpoint; give a checkpoint note instead",
                path.display()
            )
        });
    }
    if bytes.len() as u64 > MAX_CHECKPOINT_BYTES {
        bail!(
            "{}: larger than {MAX_CHECKPOINT_BYTES} bytes and not a bundle, so not a checkpoint note",
            path.display()
        );
    }
    String::from_utf8(bytes).map_err(|_| {
        anyhow!(
            "{}: not UTF-8 text, so not a checkpoint note",
            path.display()
        )
    })
}

fn print_report(r: &Report, verbose: bool) -> std::io::Result<()> {
    for line in &r.demo_keys {
        eprintln!(
            "WARNING: DEMO KEY — {line}; its private key is published, so this proves nothing"
        );
    }
    for line in &r.development {
        eprintln!(
            "WARNING: DEVELOPMENT SET-UP — {line}; a capsule author's local trial (`edge-runner capsule dev-setup`), not production evidence"
        );
    }
    print_remediations(r)?;
    if verbose {
        for run in &r.runs {
            print_run(run)?;
        }
        for refusal in &r.refusals {
            say!(
                "  #{:<5} refused: {}",
                refusal.record,
                crate::text::escape(&refusal.reason)
            )?;
        }
    }
    if r.valid() {
        say!(
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
        )?;
        say!(
            "  {} runs, {} unfinished, {} refusals",
            r.runs.len(),
            r.unfinished.len(),
            r.refusals.len()
        )?;
        for u in &r.unfinished {
            say!(
                "  UNFINISHED: run of {} started in record {} never finished (its runner stopped mid-run){}",
                crate::text::escape(&u.capsule),
                u.record,
                u.interrupted_record.map_or_else(
                    || "; no later runner has recorded it yet".to_string(),
                    |i| format!("; recorded as interrupted in record {i}")
                )
            )?;
        }
        if let Some(line) = jobs_text(r) {
            say!("  {line}")?;
        }
        if let Some(line) = in_flight_text(r) {
            say!("  {line}")?;
        }
        if r.signing_keys.len() > 1 {
            let keys: Vec<String> = r
                .signing_keys
                .iter()
                .map(|k| format!("{} from record {}", &k.key_id[..16], k.from_record))
                .collect();
            say!("  signing keys (rotated): {}", keys.join(", "))?;
        }
        say!("  truncation: {}", truncation_text(r))?;
        say!(
            "  your checkpoints (--checkpoint): {}",
            auditor_checkpoints_text(r)
        )?;
        if let Some(text) = range_text(r) {
            say!("  range: {text}")?;
        }
        if r.source == Source::Bundle {
            say!(
                "  trust store versions in the bundle (chain checked): {}",
                if r.trust_roots.is_empty() {
                    "none".to_string()
                } else {
                    r.trust_roots.join(", ")
                }
            )?;
        }
    } else {
        eprintln!(
            "INVALID: {}",
            r.failure.as_deref().unwrap_or("unknown failure")
        );
    }
    Ok(())
}

/// One run for `verify -v`: what ran, who signed it, what it was granted and
/// denied, what it found.
fn print_run(run: &crate::audit::RunLine) -> std::io::Result<()> {
    use crate::text::escape;
    say!(
        "  #{:<5} run {} ({}): {} {}{}",
        run.record,
        escape(&run.capsule),
        run.kind,
        run.status,
        run.verdict.as_deref().unwrap_or(""),
        run.job.map_or_else(String::new, |j| format!(" (job {j})"))
    )?;
    if let Some(summary) = &run.summary {
        say!("         summary: {}", escape(summary))?;
    }
    let rows: [(&str, &[String]); 4] = [
        ("signed by", &run.signers),
        ("granted", &run.granted),
        ("denied", &run.denied),
        ("found", &run.findings),
    ];
    for (label, items) in rows {
        if items.is_empty() {
            say!("         {label}: none")?;
        }
        for item in items {
            say!("         {label}: {}", escape(item))?;
        }
    }
    Ok(())
}

/// The jobs the log shows, counted by how they ended (also used by the
/// HTML report); `None` for a log without jobs.
pub(super) fn jobs_text(r: &Report) -> Option<String> {
    let j = r.jobs;
    (j.accepted + j.finished + j.cancelled + j.abandoned > 0).then(|| {
        format!(
            "jobs: {} accepted, {} finished, {} cancelled, {} abandoned",
            j.accepted, j.finished, j.cancelled, j.abandoned
        )
    })
}

/// The jobs accepted and not ended at the end of the log, in one sentence
/// (also used by the HTML report); `None` when there are none.
pub(super) fn in_flight_text(r: &Report) -> Option<String> {
    if r.jobs_in_flight.is_empty() {
        return None;
    }
    let ids: Vec<String> = r.jobs_in_flight.iter().map(u64::to_string).collect();
    Some(format!(
        "{} job{} in flight: {} (accepted and not ended: running when the log was read, or left by a runner that stopped, which the next runner records as abandoned)",
        ids.len(),
        if ids.len() == 1 { "" } else { "s" },
        ids.join(", ")
    ))
}

/// For a bundle holding a range of the log: what it covers and what ties it
/// to the history before it, in one sentence (also used by the HTML report).
pub(super) fn range_text(r: &Report) -> Option<String> {
    let first = r.range_start?;
    Some(match r.range_anchor {
        Some(size) => format!(
            "records {first} to {} only; records 0 to {} are not in this bundle and were checked through the checkpoint of {size} records you verified earlier, which this range extends",
            r.records.saturating_sub(1),
            first - 1
        ),
        None => format!(
            "records {first} to {} only; NOTHING ties them to records 0 to {}, which are not in this bundle: pass the checkpoint you verified earlier (--checkpoint, e.g. from the previous bundle) or --witness",
            r.records.saturating_sub(1),
            first - 1
        ),
    })
}

/// Whether the auditor's own checkpoints were checked, in one sentence (also
/// used by the HTML report).
pub(super) fn auditor_checkpoints_text(r: &Report) -> String {
    if r.auditor_checkpoints.is_empty() {
        return "none given; only checkpoints from the runner's side were checked".into();
    }
    let sizes: Vec<String> = r.auditor_checkpoints.iter().map(u64::to_string).collect();
    format!(
        "{} checked, covering {} records; the log extends each unchanged",
        sizes.len(),
        sizes.join(", ")
    )
}

/// How the report rules out a log cut short, in one sentence (also used by the HTML report).
pub(super) fn truncation_text(r: &Report) -> String {
    match r.truncation {
        Truncation::NotRuledOut => "NOT ruled out: no checkpoint and no witness was checked, so records could have been removed from the end of this log without trace".into(),
        Truncation::RunnerCheckpoint => format!(
            "ruled out up to {} records by the runner's own checkpoint only; whoever holds the runner key could cut the log and re-sign it, which only witness cosignatures rule out (--witness)",
            r.checkpoint_size.unwrap_or(0)
        ),
        Truncation::Witnessed => {
            let names: Vec<String> = r
                .witnesses
                .iter()
                .filter_map(|w| {
                    w.checkpoint_size
                        .map(|s| format!("{} ({s} records)", w.name))
                })
                .collect();
            format!(
                "ruled out up to {} records by witness cosignatures: {}",
                r.witnessed_size.unwrap_or(0),
                names.join(", ")
            )
        }
    }
}

#[derive(Debug, Args)]
pub(super) struct EvidenceExport {
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
    /// Export only the records an auditor has not seen: from the newest checkpoint record
    /// before the end of this checkpoint (a checkpoint note, or the bundle it came from) on.
    /// The auditor verifies the range with the same checkpoint (`verify --checkpoint`).
    #[arg(long, value_name = "CHECKPOINT_OR_BUNDLE")]
    since: Option<PathBuf>,
}

impl EvidenceExport {
    fn execute(self) -> Result<Exit> {
        let key = load_runner_key(self.runner_key.as_deref(), &self.dir)?;
        let mut bundle = Bundle::export(&self.dir, key, self.trust.as_deref())?;
        let mut since = Vec::new();
        if let Some(path) = &self.since {
            let note = checkpoint_from(path)?;
            bundle = bundle
                .into_range_since(&note)
                .map_err(|e| anyhow!("--since {}: {e}", path.display()))?;
            since.push(note);
        }
        // Never hand an auditor a bundle that does not verify here.
        let report = verify_bundle(&bundle, Some(&key), &since, &mut progress_bar);
        if !report.valid() {
            bail!(
                "refusing to export: the evidence does not verify ({})",
                report.failure.unwrap_or_default()
            );
        }
        write_atomically(&self.out, &bundle.to_cbor()?)?;
        say!(
            "exported {} records{}, checkpoint {}, {} witnessed checkpoint(s), {} trust root version(s), runner key {} -> {}",
            report.records - bundle.range_start,
            if bundle.range_start == 0 {
                String::new()
            } else {
                format!(" (from record {} on)", bundle.range_start)
            },
            report
                .checkpoint_size
                .map_or_else(|| "none".to_string(), |s| format!("covering {s}")),
            bundle.witnessed.len(),
            bundle.trust_roots.len(),
            key.id().short(),
            self.out.display()
        )?;
        Ok(Exit::Ok)
    }
}

#[derive(Debug, Args)]
pub(super) struct EvidenceProve {
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
    fn execute(self) -> Result<Exit> {
        use base64::Engine;
        let b64 = |h: &[u8]| base64::engine::general_purpose::STANDARD.encode(h);
        let key = load_runner_key(self.runner_key.as_deref(), &self.dir)?;
        let summary = evidence::verify_log(&read_log(&self.dir)?, &key)
            .map_err(|f| anyhow!("the log does not verify: {f}"))?;
        let proof = merkle::inclusion_proof_for(&summary, self.record)?;
        let out = serde_json::json!({
            "record": proof.record,
            "record_cbor": b64(&proof.record_bytes),
            "leafIdx": proof.record,
            "treeSize": proof.tree_size,
            "leafHash": b64(&proof.leaf_hash),
            "root": b64(&proof.root),
            "proof": proof.path.iter().map(|h| b64(h)).collect::<Vec<_>>(),
            "checkpoint": proof.checkpoint_note,
        });
        say!("{}", serde_json::to_string_pretty(&out)?)?;
        Ok(Exit::Ok)
    }
}

#[derive(Debug, Args)]
pub(super) struct WitnessInit {
    /// The witness's state directory (created if missing): witness.key, witness.pub, witness.vkey.
    #[arg(long)]
    dir: PathBuf,
    /// The witness's name, a schema-less URL such as `witness.example.com/w1` (no spaces or `+`).
    #[arg(long)]
    name: String,
}

impl WitnessInit {
    fn execute(self) -> Result<Exit> {
        let secret = SecretKey::generate()?;
        let public = WitnessKey::new(&self.name, secret.public()).context("--name")?;
        let vkey_path = self.dir.join(WITNESS_VKEY_FILE);
        if vkey_path.exists() {
            return Err(KeyError::Exists(vkey_path).into());
        }
        let stem = WITNESS_KEY_FILE.trim_end_matches(".key");
        secret.write_pair(&self.dir, stem)?;
        let vkey = public.vkey();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&vkey_path)
            .with_context(|| format!("creating {}", vkey_path.display()))?;
        file.write_all(format!("{vkey}\n").as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", vkey_path.display()))?;
        WitnessState::open(&self.dir)?;
        say!("witness `{}` in {}", self.name, self.dir.display())?;
        say!("vkey (give it to auditors, for `evidence verify --witness FILE`): {vkey}")?;
        Ok(Exit::Ok)
    }
}

#[derive(Debug, Args)]
pub(super) struct WitnessCosign {
    /// The witness's state directory (from `evidence witness-init`).
    #[arg(long)]
    dir: PathBuf,
    /// The public key (SPKI PEM) of the runner whose log this witness follows.
    #[arg(long)]
    log_key: PathBuf,
    /// The origin line of that log: `edge-runner/log/<log id>` (the log id `evidence verify` prints).
    #[arg(long)]
    origin: String,
    /// The add-checkpoint request (from `evidence witness-request`). Default: standard input.
    #[arg(long)]
    request: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(super) struct WitnessRotate {
    /// The witness's state directory (from `evidence witness-init`).
    #[arg(long)]
    dir: PathBuf,
    /// The origin line of the log: `edge-runner/log/<log id>`.
    #[arg(long)]
    origin: String,
    /// The runner key (SPKI PEM) this witness has followed the log under so far.
    #[arg(long)]
    old_log_key: PathBuf,
    /// The runner's new key (SPKI PEM), obtained from the runner's operator.
    #[arg(long)]
    new_log_key: PathBuf,
    /// A bundle exported after the rotation (`evidence export`, whole or `--since` this
    /// witness's last cosigned checkpoint): it must show the old key handing the log over.
    #[arg(long)]
    bundle: PathBuf,
}

impl WitnessRotate {
    fn execute(self) -> Result<Exit> {
        let witness = Witness::load(&self.dir)?;
        let state = WitnessState::open(&self.dir)?;
        let log = LogConfig {
            origin: self.origin,
            key: PublicKey::load(&self.old_log_key)?,
        };
        let new_key = PublicKey::load(&self.new_log_key)?;
        let bytes = read_bounded(&self.bundle, MAX_BUNDLE_BYTES, "bundle")?;
        let bundle =
            Bundle::from_cbor(&bytes).map_err(|e| anyhow!("{}: {e}", self.bundle.display()))?;
        match state.follow_rotation(&witness, &log, &new_key, &bundle, Timestamp::now()) {
            Ok(line) => {
                std::io::stdout().lock().write_all(line.as_bytes())?;
                eprintln!(
                    "this witness now follows `{}` under runner key {}; the runner's operator keeps the cosignature with `edge-runner evidence add-cosignature`",
                    log.origin,
                    new_key.id().short()
                );
                Ok(Exit::Ok)
            }
            Err(e @ WitnessError::Rotation { .. }) => {
                eprintln!("REFUSED: {e}");
                Ok(Exit::Refused)
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl WitnessCosign {
    fn execute(self) -> Result<Exit> {
        let witness = Witness::load(&self.dir)?;
        let state = WitnessState::open(&self.dir)?;
        let log = LogConfig {
            origin: self.origin,
            key: PublicKey::load(&self.log_key)?,
        };
        let text = read_input(self.request.as_deref(), "add-checkpoint request")?;
        let answer = AddCheckpoint::parse(&text)
            .and_then(|request| state.add_checkpoint(&witness, &log, &request, Timestamp::now()));
        match answer {
            Ok(line) => {
                std::io::stdout().lock().write_all(line.as_bytes())?;
                Ok(Exit::Ok)
            }
            Err(
                e @ (WitnessError::Request(_)
                | WitnessError::UnknownOrigin { .. }
                | WitnessError::NotSignedByLog { .. }
                | WitnessError::RolledBack { .. }
                | WitnessError::OldSizeMismatch { .. }
                | WitnessError::Fork { .. }
                | WitnessError::BadProof { .. }),
            ) => {
                eprintln!("REFUSED: {e}");
                if let WitnessError::OldSizeMismatch { stored, .. } = e {
                    eprintln!(
                        "  the runner's operator asks again with: edge-runner evidence witness-request DIR --old {stored}"
                    );
                }
                Ok(Exit::EvidenceInvalid)
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[derive(Debug, Args)]
pub(super) struct WitnessRequest {
    /// The evidence directory.
    dir: PathBuf,
    /// The size of the checkpoint the witness cosigned last (0 if never; a witness that
    /// refuses the request names its size).
    #[arg(long, default_value_t = 0)]
    old: u64,
    /// The runner's public key. Default: DIR/runner.pub.
    #[arg(long)]
    runner_key: Option<PathBuf>,
}

impl WitnessRequest {
    fn execute(self) -> Result<Exit> {
        let key = load_runner_key(self.runner_key.as_deref(), &self.dir)?;
        let summary = evidence::verify_log(&read_log(&self.dir)?, &key)
            .map_err(|f| anyhow!("the log does not verify: {f}"))?;
        let note = read_checkpoint_file(&self.dir)?;
        let request = witness::request_for(&summary, &note, &key, self.old)
            .map_err(|e| anyhow!("{}: {e}", self.dir.join(CHECKPOINT_FILE).display()))?;
        std::io::stdout()
            .lock()
            .write_all(request.to_text().as_bytes())?;
        Ok(Exit::Ok)
    }
}

#[derive(Debug, Args)]
pub(super) struct AddCosignature {
    /// The evidence directory.
    dir: PathBuf,
    /// The witness's vkey file (its witness.vkey).
    #[arg(long, value_name = "VKEY_FILE")]
    witness: PathBuf,
    /// The request the witness answered (its checkpoint is the one cosigned). Default: DIR/checkpoint.
    #[arg(long)]
    request: Option<PathBuf>,
    /// The witness's answer (cosignature lines). Default: standard input.
    #[arg(long)]
    cosignature: Option<PathBuf>,
    /// The runner's public key. Default: DIR/runner.pub.
    #[arg(long)]
    runner_key: Option<PathBuf>,
}

impl AddCosignature {
    fn execute(self) -> Result<Exit> {
        let key = load_runner_key(self.runner_key.as_deref(), &self.dir)?;
        let witness = load_vkey(&self.witness)?;
        let note = match &self.request {
            Some(path) => {
                AddCheckpoint::parse(&read_input(Some(path), "add-checkpoint request")?)?.note
            }
            None => read_checkpoint_file(&self.dir)?,
        };
        let response = read_input(self.cosignature.as_deref(), "witness cosignature")?;
        // Verified before it is kept: the log extends the checkpoint, the runner
        // signed it, and the witness's cosignature on it verifies.
        let summary = evidence::verify_log(&read_log(&self.dir)?, &key)
            .map_err(|f| anyhow!("the log does not verify: {f}"))?;
        let (witnessed, _) = witness::attach(&note, &response, &witness)
            .map_err(|e| anyhow!("{}: {e}", witness.name()))?;
        let (path, size, time) =
            witness::keep_cosigned(&self.dir, &summary, &key, &witness, &witnessed)
                .map_err(|e| anyhow!("{e}"))?;
        say!(
            "kept the cosignature of witness `{}` (at {}) on the checkpoint of {size} records -> {}",
            witness.name(),
            Timestamp(time),
            path.display()
        )?;
        Ok(Exit::Ok)
    }
}

/// Reads a witness vkey file.
fn load_vkey(path: &Path) -> Result<WitnessKey> {
    let text = read_bounded_text(path, MAX_NOTE_BYTES, "witness vkey")?;
    WitnessKey::from_vkey(&text).with_context(|| format!("witness vkey {}", path.display()))
}

/// DIR/checkpoint, which must exist.
fn read_checkpoint_file(dir: &Path) -> Result<String> {
    let path = dir.join(CHECKPOINT_FILE);
    if !path.exists() {
        bail!(
            "{} does not exist: the runner writes it when it closes the log or after 64 records; run a capsule (or close the log) first",
            path.display()
        );
    }
    Ok(read_bounded_text(
        &path,
        MAX_CHECKPOINT_BYTES,
        "checkpoint",
    )?)
}

/// A file, or standard input when `path` is `None` or `-`, bounded like a note.
fn read_input(path: Option<&Path>, what: &str) -> Result<String> {
    match path {
        Some(p) if p != Path::new("-") => Ok(read_bounded_text(p, MAX_NOTE_BYTES, what)?),
        _ => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .lock()
                .take(MAX_NOTE_BYTES + 1)
                .read_to_end(&mut bytes)
                .with_context(|| format!("reading the {what} from standard input"))?;
            if bytes.len() as u64 > MAX_NOTE_BYTES {
                bail!("the {what} on standard input is larger than {MAX_NOTE_BYTES} bytes");
            }
            String::from_utf8(bytes)
                .map_err(|_| anyhow!("the {what} on standard input is not UTF-8 text"))
        }
    }
}

/// The runner's public key: `--runner-key`, or DIR/runner.pub.
fn load_runner_key(explicit: Option<&Path>, dir: &Path) -> Result<PublicKey> {
    let path = explicit.map_or_else(|| dir.join("runner.pub"), Path::to_path_buf);
    PublicKey::load(&path).with_context(|| {
        format!(
            "the runner's public key; pass --runner-key if it is not {}",
            path.display()
        )
    })
}

/// Reads DIR/evidence.log.
/// The directory's whole log: its segments, oldest first, then the active file.
fn read_log(dir: &Path) -> Result<Vec<u8>> {
    Ok(evidence::read_log_dir(dir, MAX_BUNDLE_BYTES)?)
}

/// Each remediation's chain of authority, for the auditor.
pub(super) fn print_remediations(r: &Report) -> std::io::Result<()> {
    use crate::text::escape;
    for p in &r.proposals_refused {
        say!("  #{:<5} proposal refused: {}", p.record, escape(&p.reason))?;
    }
    for m in &r.remediations {
        say!(
            "  #{:<5} proposal {} by {} ({}), tier {}",
            m.record,
            &m.proposal[..16],
            escape(&m.capsule),
            escape(&m.proposer),
            m.tier
        )?;
        say!("         why: {}", escape(&m.why))?;
        say!("         rationale: {}", escape(&m.rationale))?;
        say!("         validation: {}", escape(&m.validation))?;
        for a in &m.actions {
            say!("         action: {}", escape(a))?;
        }
        for line in m.diff.lines() {
            say!("         | {}", escape(line))?;
        }
        for a in &m.approvals {
            say!("         approval: {}", escape(a))?;
        }
        match m.authorization_record {
            Some(rec) => say!(
                "         authorized (record {rec}) at tier {} by {}{}",
                m.authorized_tier.as_deref().unwrap_or(""),
                if m.authorized_by.is_empty() {
                    "no one (the tier needs no approval)".to_string()
                } else {
                    escape(&m.authorized_by.join(", ")).into_owned()
                },
                if m.break_glass {
                    format!(
                        " — BREAK-GLASS, {}",
                        m.review
                            .as_deref()
                            .unwrap_or("no quorum post-review recorded")
                    )
                } else {
                    String::new()
                }
            )?,
            None => say!("         not authorized")?,
        }
        if let Some(a) = &m.applied {
            say!("         applied: {}", escape(a))?;
        }
        if let Some(v) = &m.verify {
            say!("         verify: {}", escape(v))?;
        }
        if let Some(b) = &m.rollback {
            say!("         rollback: {}", escape(b))?;
        }
        for n in &m.notified {
            say!("         notified: {}", escape(n))?;
        }
    }
    Ok(())
}
