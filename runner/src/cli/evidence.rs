//! `edge-runner evidence verify | export | prove`: the auditor's commands.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};

use super::{Exit, html, progress_bar, write_atomically};
use crate::audit::{
    KeySource, Report, Source, malformed_bundle_report, verify_bundle, verify_log_report,
};
use crate::evidence::bundle::{Bundle, MAX_BUNDLE_BYTES, looks_like_bundle};
use crate::evidence::{self, CHECKPOINT_FILE, LOG_FILE, merkle};
use crate::fsio::{read_bounded, read_bounded_text};
use crate::keys::PublicKey;

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
}

impl EvidenceCommand {
    pub(super) fn execute(self) -> Result<Exit> {
        match self {
            EvidenceCommand::Verify(args) => args.execute(),
            EvidenceCommand::Export(args) => args.execute(),
            EvidenceCommand::Prove(args) => args.execute(),
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
    fn execute(self) -> Result<Exit> {
        let key = self
            .runner_key
            .as_deref()
            .map(PublicKey::load)
            .transpose()?;
        let mut notes = Vec::new();
        for p in &self.checkpoints {
            notes.push(read_bounded_text(p, MAX_CHECKPOINT_BYTES, "checkpoint")?);
        }
        let report = if self.path.is_dir() {
            let key = key.ok_or_else(|| {
                anyhow!("--runner-key is required to verify an evidence directory")
            })?;
            let log = read_log(&self.path)?;
            let note_path = self.path.join(CHECKPOINT_FILE);
            if note_path.exists() {
                notes.insert(
                    0,
                    read_bounded_text(&note_path, MAX_CHECKPOINT_BYTES, "checkpoint")?,
                );
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
                let key = key
                    .ok_or_else(|| anyhow!("--runner-key is required to verify a bare log file"))?;
                verify_log_report(&bytes, &key, &notes, &mut progress_bar)
            }
        };
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

fn print_report(r: &Report, verbose: bool) -> std::io::Result<()> {
    if verbose {
        for run in &r.runs {
            say!(
                "  #{:<5} run {} ({}): {} {}",
                run.record,
                run.capsule,
                run.kind,
                run.status,
                run.verdict.as_deref().unwrap_or("")
            )?;
        }
        for refusal in &r.refusals {
            say!(
                "  #{:<5} refused: {}",
                refusal.record,
                super::text::escape(&refusal.reason)
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
                super::text::escape(&u.capsule),
                u.record,
                u.interrupted_record.map_or_else(
                    || "; no later runner has recorded it yet".to_string(),
                    |i| format!("; recorded as interrupted in record {i}")
                )
            )?;
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
}

impl EvidenceExport {
    fn execute(self) -> Result<Exit> {
        let key = load_runner_key(self.runner_key.as_deref(), &self.dir)?;
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
        say!(
            "exported {} records, checkpoint {}, {} trust root version(s), runner key {} -> {}",
            report.records,
            report
                .checkpoint_size
                .map_or_else(|| "none".to_string(), |s| format!("covering {s}")),
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
fn read_log(dir: &Path) -> Result<Vec<u8>> {
    Ok(read_bounded(
        &dir.join(LOG_FILE),
        MAX_BUNDLE_BYTES,
        "evidence log",
    )?)
}
