//! `edge-runner evidence rotate-key`: hand an evidence log over to a new runner key.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::Exit;
use super::run::runner_key;
use crate::custody::KeyPlacement;
use crate::evidence::EvidenceLog;

#[derive(Debug, Args)]
pub(super) struct EvidenceRotateKey {
    /// The evidence directory whose log is handed over.
    #[arg(long)]
    evidence: PathBuf,
    /// The runner key in force now (it signs the handover record).
    #[arg(long, env = "EDGE_RUNNER_KEY")]
    runner_key: Option<PathBuf>,
    /// The new runner key (e.g. from `keys generate`); it co-signs the handover
    /// and signs every record after it. Point the runner at it afterwards.
    #[arg(long)]
    new_key: PathBuf,
    /// Why the key is rotated; recorded.
    #[arg(long, default_value = "")]
    reason: String,
}

impl EvidenceRotateKey {
    pub(super) fn execute(self) -> Result<Exit> {
        let placement = KeyPlacement::Separate;
        let old = runner_key(self.runner_key.as_deref(), &self.evidence, placement)?;
        let new = runner_key(Some(&self.new_key), &self.evidence, placement)?;
        let (old_id, new_id) = (old.id().short(), new.id().short());
        let mut log = EvidenceLog::open(&self.evidence, old)
            .with_context(|| format!("--evidence {}", self.evidence.display()))?;
        let at = log.rotate_key(new, &self.reason)?;
        let path = log.path().display().to_string();
        log.close()?;
        say!(
            "rotated: record {at} of {path} hands the log from runner key {old_id} to {new_id}; every later record is signed by the new key"
        )?;
        say!(
            "next: run with --runner-key {} (or EDGE_RUNNER_KEY), give auditors its public key, and keep the old key offline or destroy it",
            self.new_key.display()
        )?;
        Ok(Exit::Ok)
    }
}
