//! `edge-runner proposal list | show`: the proposals a runner stated, as
//! approvers and operators read them (the files `edge-runner approve` signs).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ciborium::Value;
use clap::{Args, Subcommand};

use super::{Exit, write_atomically};
use crate::cbor::MapReader;
use crate::fsio::read_bounded;
use crate::remediation::{Action, MAX_PROPOSAL_BYTES, Proposal};
use crate::text::escape;

#[derive(Debug, Subcommand)]
pub(super) enum ProposalCommand {
    /// List the proposals in an evidence directory (DIR/proposals/*.proposal).
    List(ProposalList),
    /// Show one proposal whole: actions and diffs, tier and why, validation, verify plan.
    Show(ProposalShow),
    /// Record the post-review of a break-glass apply: approvals meeting the tier's quorum.
    Review(super::apply::ReviewArgs),
}

impl ProposalCommand {
    pub(super) fn execute(self) -> Result<Exit> {
        match self {
            ProposalCommand::List(a) => a.execute(),
            ProposalCommand::Show(a) => a.execute(),
            ProposalCommand::Review(a) => a.execute(),
        }
    }
}

#[derive(Debug, Args)]
pub(super) struct ProposalList {
    /// Evidence directory.
    #[arg(long)]
    evidence: PathBuf,
}

#[derive(Debug, Args)]
pub(super) struct ProposalShow {
    /// The proposal id (its digest in hex, or a unique prefix) or a proposal file.
    proposal: String,
    /// Evidence directory (where the id is looked up).
    #[arg(long)]
    evidence: Option<PathBuf>,
    /// Also write the proposal file (the statement `edge-runner approve` signs) here.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Reads every proposal file in `DIR/proposals`, sorted by id.
fn all(dir: &Path) -> Result<Vec<Proposal>> {
    let pdir = dir.join("proposals");
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&pdir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", pdir.display())),
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("proposal") {
            continue;
        }
        out.push(read_proposal(&path)?);
    }
    out.sort_by_key(Proposal::id);
    Ok(out)
}

/// Reads one proposal file (canonical statement bytes), bounded.
pub(super) fn read_proposal(path: &Path) -> Result<Proposal> {
    let bytes = read_bounded(path, MAX_PROPOSAL_BYTES as u64, "proposal")?;
    Proposal::from_statement(&bytes).with_context(|| {
        format!(
            "{} is not a proposal statement (the file the runner writes to DIR/proposals/, or `proposal show --out`)",
            path.display()
        )
    })
}

/// Finds a proposal by file path, or by id (or unique id prefix) in `evidence`.
pub(super) fn find(reference: &str, evidence: Option<&Path>) -> Result<Proposal> {
    let as_path = Path::new(reference);
    if as_path.is_file() {
        return read_proposal(as_path);
    }
    let Some(dir) = evidence else {
        bail!("`{reference}` is not a file; pass --evidence DIR to look the id up there");
    };
    let want = reference.to_ascii_lowercase();
    let matches: Vec<Proposal> = all(dir)?
        .into_iter()
        .filter(|p| p.id().starts_with(&want))
        .collect();
    match matches.len() {
        1 => Ok(matches.into_iter().next().context("one match")?),
        0 => bail!(
            "no proposal `{reference}` in {}/proposals; `edge-runner proposal list --evidence {}` lists them",
            dir.display(),
            dir.display()
        ),
        n => bail!("`{reference}` matches {n} proposals; give more of the id"),
    }
}

impl ProposalList {
    fn execute(self) -> Result<Exit> {
        let proposals = all(&self.evidence)?;
        if proposals.is_empty() {
            say!("no proposals in {}/proposals", self.evidence.display())?;
        }
        for p in proposals {
            let actions: Vec<String> = p.actions().iter().map(Action::describe).collect();
            say!(
                "{}  {:<18}  {} {}  {}",
                p.id(),
                p.tier().as_str(),
                escape(&p.draft().capsule.name),
                escape(&p.draft().capsule.version),
                escape(&actions.join(", "))
            )?;
        }
        Ok(Exit::Ok)
    }
}

impl ProposalShow {
    fn execute(self) -> Result<Exit> {
        let p = find(&self.proposal, self.evidence.as_deref())?;
        show(&p)?;
        if let Some(out) = &self.out {
            write_atomically(out, p.statement_bytes())?;
            say!("proposal file written to {}", out.display())?;
        }
        Ok(Exit::Ok)
    }
}

fn texts(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|t| match t {
                Value::Text(t) => Some(t.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Prints a proposal for a reviewer: everything an approval binds to.
pub(super) fn show(p: &Proposal) -> std::io::Result<()> {
    let d = p.draft();
    say!("proposal    {}", p.id())?;
    say!("site        {}", escape(&d.site))?;
    say!(
        "capsule     {} {} (module {})",
        escape(&d.capsule.name),
        escape(&d.capsule.version),
        hex::encode(&d.capsule.module_sha256[..8])
    )?;
    say!("proposer    {}", escape(&d.proposer))?;
    say!("proposed at {}", d.proposed_at)?;
    say!(
        "run         record {} of log {}",
        d.run.1,
        hex::encode(d.run.0)
    )?;
    say!("rationale   {}", escape(p.rationale()))?;
    say!(
        "tier        {}{}",
        p.tier().as_str(),
        if p.reversible() {
            ""
        } else {
            " (irreversible)"
        }
    )?;
    if let Ok(m) = MapReader::new("decision", p.decision()) {
        let radius = texts(m.get("blast-radius"));
        say!("  blast radius  {}", radius.join(", "))?;
        say!(
            "  blast path    {}",
            texts(m.get("blast-path")).join(" -> ")
        )?;
        say!("  policy ids    {}", texts(m.get("policy-ids")).join(", "))?;
        let floors = texts(m.get("floors"));
        if !floors.is_empty() {
            say!("  floors        {}", floors.join(", "))?;
        }
    }
    match p.staged() {
        Some(s) => say!(
            "validation  staged: exercised [{}], passed [{}], regressed [{}] (runs: records {})",
            s.exercised.join(", "),
            s.passed.join(", "),
            s.regressed.join(", "),
            s.runs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )?,
        None => say!("validation  none (never staged)")?,
    }
    say!("verify plan {}", p.verify_plan())?;
    for (i, a) in p.actions().iter().enumerate() {
        say!("action {i}    {}", escape(&a.describe()))?;
        if let Action::File(f) = a {
            say!(
                "  pre-image sha256 {}  post-image sha256 {}",
                hex::encode(f.pre_sha256),
                hex::encode(f.post_sha256)
            )?;
            say!(
                "  rollback: {}",
                if f.rollback.is_some() {
                    "restores the pre-image (checked by the runner)"
                } else {
                    "none (irreversible)"
                }
            )?;
        }
        for line in a.diff_text().lines() {
            say!("  | {}", escape(line))?;
        }
    }
    Ok(())
}
