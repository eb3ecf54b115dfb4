//! `edge-runner approve`: review a proposal offline and sign an approval
//! (docs/governance.md §8.3).
//!
//! It reads the proposal statement file (deterministic CBOR, as
//! `docs/remediation.md` defines it; its SHA-256 is the proposal digest),
//! prints what will change, the blast radius and the verify plan, and only
//! then signs a COSE_Sign1 approval with the approver's key. It decides
//! nothing: whether the approval counts is `apply`'s authority check.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use ciborium::Value;
use clap::Args;
use sha2::{Digest, Sha256};

use super::{Exit, write_atomically};
use crate::cbor::MapReader;
use crate::fsio::read_bounded;
use crate::governance::approval::Statement;
use crate::governance::{Approval, ApprovalDecision, Tier};
use crate::keys::SecretKey;
use crate::timestamp::Timestamp;

/// Largest proposal statement read.
const MAX_PROPOSAL_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Args)]
pub(super) struct ApproveArgs {
    /// The proposal statement file (`DIR/proposals/HEX.proposal`).
    #[arg(long)]
    proposal: PathBuf,
    /// Your private key (one of your keys in the governance roster).
    #[arg(long)]
    key: PathBuf,
    /// Your name in the governance roster.
    #[arg(long)]
    person: String,
    /// Why you approve (or deny); required, recorded in evidence.
    #[arg(long)]
    reason: String,
    /// Deny instead: one eligible deny vetoes the proposal.
    #[arg(long, conflicts_with = "break_glass")]
    deny: bool,
    /// Break glass: authorize alone (only persons the roster flags may).
    #[arg(long)]
    break_glass: bool,
    /// How long the approval stays valid, in hours (the tier's lifetime may be shorter).
    #[arg(long, default_value_t = 24)]
    valid_hours: u64,
    /// Where to write the approval.
    #[arg(long)]
    out: PathBuf,
}

fn texts(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| match i {
                Value::Text(t) => Some(t.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

impl ApproveArgs {
    pub(super) fn execute(self) -> Result<Exit> {
        if self.reason.trim().is_empty() {
            bail!("--reason is empty; an approval says why, for the auditors");
        }
        let bytes = read_bounded(&self.proposal, MAX_PROPOSAL_BYTES, "proposal")?;
        let value = crate::cbor::decode_canonical(&bytes).with_context(|| {
            format!(
                "{} is not a proposal statement (deterministic CBOR)",
                self.proposal.display()
            )
        })?;
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        let m = MapReader::new("proposal statement", &value).map_err(anyhow::Error::msg)?;
        let tier_text = m.text("tier").map_err(anyhow::Error::msg)?;
        let tier = Tier::parse(tier_text)
            .with_context(|| format!("proposal tier `{tier_text}` is not a tier"))?;
        say!("proposal      {}", hex::encode(digest))?;
        if let Ok(site) = m.text("site") {
            say!("site          {site}")?;
        }
        if let Some(c) = m
            .get("capsule")
            .and_then(|c| MapReader::new("capsule", c).ok())
        {
            say!(
                "capsule       {} {}",
                c.text("name").unwrap_or("?"),
                c.text("version").unwrap_or("?")
            )?;
        }
        if let Ok(p) = m.text("proposer") {
            say!("proposer      {p}")?;
        }
        if let Ok(r) = m.text("rationale") {
            say!("rationale     {r}")?;
        }
        say!("tier          {tier}")?;
        if let Some(d) = m
            .get("decision")
            .and_then(|d| MapReader::new("decision", d).ok())
        {
            let radius = texts(d.get("blast-radius"));
            say!(
                "blast radius  {} node(s): {}",
                radius.len(),
                radius.join(", ")
            )?;
            say!("blast path    {}", texts(d.get("blast-path")).join(" -> "))?;
            say!("policy ids    {}", texts(d.get("policy-ids")).join(", "))?;
            let floors = texts(d.get("floors"));
            if !floors.is_empty() {
                say!("floors        {}", floors.join(", "))?;
            }
        }
        if let Some(Value::Array(actions)) = m.get("actions") {
            for (i, a) in actions.iter().enumerate() {
                let Ok(a) = MapReader::new("action", a) else {
                    continue;
                };
                match a.text("kind") {
                    Ok("file") => {
                        say!("action {i}      file {}", a.text("path").unwrap_or("?"))?;
                        say!("{}", a.text("diff").unwrap_or(""))?;
                    }
                    Ok("http") => {
                        let r = a
                            .get("request")
                            .and_then(|r| MapReader::new("request", r).ok());
                        say!(
                            "action {i}      http {} {}",
                            r.as_ref()
                                .and_then(|r| r.text("method").ok())
                                .unwrap_or("?"),
                            r.as_ref().and_then(|r| r.text("url").ok()).unwrap_or("?")
                        )?;
                    }
                    other => say!("action {i}      {}", other.unwrap_or("?"))?,
                }
            }
        }
        if let Some(v) = m
            .get("verify")
            .and_then(|v| MapReader::new("verify", v).ok())
        {
            say!(
                "verify plan   run {} {} after apply; roll back if it does not pass",
                v.text("capsule").unwrap_or("?"),
                v.text("version").unwrap_or("?")
            )?;
        }
        let decision = if self.deny {
            ApprovalDecision::Deny
        } else if self.break_glass {
            ApprovalDecision::BreakGlass
        } else {
            ApprovalDecision::Approve
        };
        let key = SecretKey::load(&self.key)?;
        let now = Timestamp::now();
        let approval = Approval::sign(
            Statement {
                proposal: digest,
                decision,
                tier,
                reason: self.reason.clone(),
                person: self.person.clone(),
                signed_at: now,
                expires: Timestamp(now.0.saturating_add(self.valid_hours.saturating_mul(3600))),
            },
            &key,
        )?;
        write_atomically(&self.out, approval.bytes())?;
        say!(
            "signed: {} {} (tier {tier}) as `{}` with key {}; wrote {}",
            decision.as_str(),
            hex::encode(&digest[..8]),
            self.person,
            key.id().short(),
            self.out.display()
        )?;
        Ok(Exit::Ok)
    }
}
