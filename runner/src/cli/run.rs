//! `edge-runner run`: verify a capsule, run it in the sandbox and record evidence.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::{Exit, read_raw, warn_if_demo};
use crate::custody::{self, KeyPlacement};
use crate::evidence::{EvidenceError, EvidenceLog};
use crate::fsio::read_bounded;
use crate::keys::SecretKey;
use crate::sandbox::{CACHE_KEY_PURPOSE, CodeCache, Compiler, Limits, SandboxError};
use crate::session::{RunRecord, Session, SessionError};
use crate::site::SitePolicy;
use crate::timestamp::Timestamp;
use crate::trust::store;

/// Largest `--input` file read.
pub(super) const MAX_INPUT_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Args)]
pub(super) struct RunArgs {
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
        required_unless_present = "site_policy",
        value_parser = super::site_name
    )]
    site: Option<String>,
    /// The site policy (`site-policy.toml`): directories, config values and limits this site grants.
    /// Without one, nothing but compute is granted.
    #[arg(long, env = "EDGE_RUNNER_SITE_POLICY")]
    site_policy: Option<PathBuf>,
    /// Evidence directory; the log is DIR/evidence.log.
    #[arg(long)]
    evidence: PathBuf,
    /// Input for the capsule (passed as bytes; usually JSON): a file, or `-` for standard input.
    #[arg(long)]
    input: Option<PathBuf>,
    /// The runner's private key (mode 0600, owned by this user, outside the evidence directory).
    /// Default: $XDG_STATE_HOME/edge-runner/runner.key or ~/.local/state/edge-runner/runner.key,
    /// created on first use; its public key is copied to DIR/runner.pub.
    #[arg(long, env = "EDGE_RUNNER_KEY")]
    runner_key: Option<PathBuf>,
    /// Allow a runner key inside the evidence directory. Unsafe: whoever can
    /// write the evidence can then re-sign it. For throwaway experiments only.
    #[arg(long)]
    unsafe_key_in_evidence_dir: bool,
    /// Who asked for this run (a person or an agent); a proposal names them as
    /// its proposer, and they may not approve it. Default: $USER.
    #[arg(long, env = "EDGE_RUNNER_PROPOSER")]
    proposer: Option<String>,
    /// Where the test capsules the catalog registers are (`NAME.signed.wasm`,
    /// optional `NAME.input`), for staging a proposal. Default: the capsule's directory.
    #[arg(long)]
    test_capsules: Option<PathBuf>,
}

impl RunArgs {
    pub(super) fn execute(self) -> Result<Exit> {
        let input = match &self.input {
            Some(path) if path.as_os_str() == "-" => read_stdin(MAX_INPUT_BYTES)?,
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
            (None, Some(site)) => {
                SitePolicy::deny_all(site).map_err(|e| anyhow::anyhow!("--site: {}", e.detail))?
            }
            (None, None) => bail!("pass --site NAME or --site-policy FILE"),
        };
        if self.evidence.exists() && !self.evidence.is_dir() {
            bail!(
                "--evidence {} is a file, not a directory; pass the evidence directory (the log is DIR/evidence.log)",
                self.evidence.display()
            );
        }
        let placement = if self.unsafe_key_in_evidence_dir {
            KeyPlacement::UnsafeInsideEvidenceDir
        } else {
            KeyPlacement::Separate
        };
        let key = runner_key(self.runner_key.as_deref(), &self.evidence, placement)?;
        let cache = CodeCache::new(
            &self.evidence.join("code-cache"),
            key.derive_secret(CACHE_KEY_PURPOSE),
        );
        let log = match EvidenceLog::open(&self.evidence, key) {
            Ok(log) => log,
            // A log that fails verification is invalid evidence (exit 4), not an I/O error.
            Err(err @ (EvidenceError::Corrupt { .. } | EvidenceError::BehindCheckpoint { .. })) => {
                eprintln!("INVALID: --evidence {}: {err}", self.evidence.display());
                return Ok(Exit::EvidenceInvalid);
            }
            Err(EvidenceError::Locked(path)) => {
                if let Some((pid, socket)) = crate::serve::serving_socket(&self.evidence) {
                    bail!(
                        "--evidence {}: held by `edge-runner serve` (pid {pid}); submit the capsule to it instead: edge-runner submit --socket {} {} --wait",
                        self.evidence.display(),
                        socket.display(),
                        self.capsule.display()
                    );
                }
                return Err(anyhow::Error::new(EvidenceError::Locked(path))
                    .context(format!("--evidence {}", self.evidence.display())));
            }
            Err(err) => {
                return Err(anyhow::Error::new(err)
                    .context(format!("--evidence {}", self.evidence.display())));
            }
        };
        let mut session = Session::with_policy(log, Limits::default(), policy)?;
        session.set_code_cache(cache);
        // Compiling is bounded by the grant's compile budget in a child of this binary.
        session.set_compiler(
            Compiler::this_executable().context("could not find the runner's own executable")?,
        );
        let refused = |session: &Session, err: &dyn std::fmt::Display| {
            eprintln!("REFUSED: {}: {err}", self.capsule.display());
            eprintln!("(recorded in {})", session.log().path().display());
            Ok(Exit::Refused)
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
        let record = match session.run(verified, &input) {
            Ok(record) => record,
            // A component too costly to compile is refused like any other capsule.
            Err(SessionError::Sandbox(err @ SandboxError::CompileLimit { .. })) => {
                return refused(&session, &err);
            }
            Err(other) => return Err(other.into()),
        };
        print_run(&record)?;
        if record
            .report
            .evidence
            .iter()
            .any(crate::remediation::is_proposal)
            || !record.report.proposals_refused.is_empty()
        {
            let proposer = self
                .proposer
                .clone()
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "unknown".into());
            let capsules = self.test_capsules.clone().unwrap_or_else(|| {
                self.capsule
                    .parent()
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
            });
            super::apply::prepare_proposals(
                &mut session,
                &record,
                &input,
                &self.trust,
                &root,
                &capsules,
                &proposer,
            )?;
        }
        say!(
            "evidence: {} ({} records)",
            session.log().path().display(),
            session.log().len()
        )?;
        Ok(run_exit(&record))
    }
}

/// Prints a run's result for humans.
pub(super) fn print_run(record: &RunRecord) -> std::io::Result<()> {
    for line in record.lines() {
        say!("{line}")?;
    }
    Ok(())
}

fn run_exit(record: &RunRecord) -> Exit {
    match record.judge() {
        crate::session::Judged::Pass => Exit::Ok,
        crate::session::Judged::Fail => Exit::VerdictFail,
        crate::session::Judged::Abnormal => Exit::RunAbnormal,
    }
}

/// Loads the runner key after checking its custody (or creates it at the
/// default path), and leaves a copy of its public key in the evidence directory.
pub(super) fn runner_key(
    explicit: Option<&Path>,
    evidence_dir: &Path,
    placement: KeyPlacement,
) -> Result<SecretKey> {
    let opened = custody::open_runner_key(explicit, evidence_dir, placement)?;
    if opened.created {
        eprintln!(
            "created runner key {} (mode 0600; keep it out of the evidence directory and back it up as the compliance team's key custody requires)",
            opened.path.display()
        );
    }
    let public = opened.key.public().to_pem()?;
    let copy = evidence_dir.join("runner.pub");
    if std::fs::read_to_string(&copy).ok().as_deref() != Some(public.as_str()) {
        std::fs::create_dir_all(evidence_dir)
            .with_context(|| format!("--evidence {}", evidence_dir.display()))?;
        crate::fsio::write_atomically(&copy, public.as_bytes())
            .with_context(|| format!("writing {}", copy.display()))?;
        eprintln!(
            "runner public key {} written to {}; auditors verify this log with it (obtained from you, not from the evidence directory)",
            opened.key.id().short(),
            copy.display()
        );
    }
    if let Some(name) = crate::keys::demo_key_name(&opened.key.id()) {
        eprintln!(
            "WARNING: the runner key is the public demo key `{name}`; its private key is published, so whoever has this repository can forge this evidence. Never use it outside a demo."
        );
    }
    Ok(opened.key)
}

/// Standard input, at most `limit` bytes (more is refused, naming the limit).
pub(super) fn read_stdin(limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .context("reading --input - (standard input)")?;
    if bytes.len() as u64 > limit {
        anyhow::bail!(
            "--input - (standard input) gave more than the limit of {limit} bytes; pass a smaller input"
        );
    }
    Ok(bytes)
}
