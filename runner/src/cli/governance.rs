//! `edge-runner governance init | sign | install | show | explain`: the
//! governance bundle's life cycle (docs/governance.md §11).
//!
//! `init` writes starter sources; `sign` bundles and signs them (or adds a
//! signature to a staged bundle) like `trust sign`; `install` checks a bundle
//! against the trust store's `[governance]` administrators and installs it as
//! the next version; `show` prints the installed governance; `explain` derives
//! the tier of a hypothetical change to a target and says why.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use super::{Exit, write_atomically};
use crate::fsio::read_bounded;
use crate::governance::bundle::{Draft, MAX_BUNDLE_BYTES, SignedBundle};
use crate::governance::policy::DEFAULT_POLICY;
use crate::governance::{
    Decision, Governance, Target, Tier, TierInputs, Validation, install, load_installed,
    read_sources,
};
use crate::keys::SecretKey;
use crate::timestamp::Timestamp;

#[derive(Debug, Subcommand)]
pub(super) enum GovernanceCommand {
    /// Write starter sources: governance.toml, catalog-info.yaml, tiers.cedar.
    Init(GovInit),
    /// Bundle and sign the sources in a directory, or add a signature to a staged bundle.
    Sign(GovSign),
    /// Check a signed bundle against the trust store and install it as the next version.
    Install(GovInstall),
    /// Show the installed governance.
    Show(GovShow),
    /// Derive the tier of a change to a target and show why.
    Explain(GovExplain),
}

impl GovernanceCommand {
    pub(super) fn execute(self) -> Result<Exit> {
        match self {
            GovernanceCommand::Init(a) => a.execute(),
            GovernanceCommand::Sign(a) => a.execute(),
            GovernanceCommand::Install(a) => a.execute(),
            GovernanceCommand::Show(a) => a.execute(),
            GovernanceCommand::Explain(a) => a.execute(),
        }
    }
}

#[derive(Debug, Args)]
pub(super) struct GovInit {
    /// Directory to write the sources into (created; existing files are never overwritten).
    #[arg(long)]
    dir: PathBuf,
    /// The governance name (the same in every version).
    #[arg(long, default_value = "site-governance")]
    name: String,
    /// The site the starter target mapping names.
    #[arg(long, default_value = "my-site")]
    site: String,
    /// A public key (PEM file) for the starter roster's first approver.
    #[arg(long)]
    approver_key: Option<PathBuf>,
}

const STARTER_CATALOG: &str = r#"# The system graph (docs/governance.md §3): a subset of Backstage's catalog-info.yaml.
apiVersion: backstage.io/v1alpha1
kind: Group
metadata:
  name: operations
---
apiVersion: backstage.io/v1alpha1
kind: Resource
metadata:
  name: app-config
  annotations:
    edge-runner.io/criticality: moderate
    edge-runner.io/test-capsules: json-assert
spec:
  type: config
  owner: operations
---
apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: app
  annotations:
    edge-runner.io/criticality: high
    edge-runner.io/internet-exposed: "false"
    edge-runner.io/test-capsules: http-probe
spec:
  type: service
  owner: operations
  dependsOn:
    - resource:default/app-config
"#;

impl GovInit {
    fn execute(self) -> Result<Exit> {
        crate::capsule::validate_site(&self.site).map_err(|e| anyhow::anyhow!("--site: {e}"))?;
        let person = match &self.approver_key {
            None => "# [[person]]\n# name = \"alice\"\n# public-keys = [\"\"\"\n# -----BEGIN PUBLIC KEY-----\n# ...\n# -----END PUBLIC KEY-----\n# \"\"\"]\n# tiers = [\"single-approver\", \"change-control\"]\n# groups = [\"operations\"]\n# expires = 2027-12-31T00:00:00Z\n".to_string(),
            Some(path) => {
                let key = crate::keys::PublicKey::load(path)?;
                format!(
                    "[[person]]\nname = \"approver-1\"\npublic-keys = [\"\"\"\n{}\"\"\"]\ntiers = [\"single-approver\", \"change-control\"]\ngroups = [\"operations\"]\nexpires = {}\n",
                    key.to_pem()?,
                    Timestamp::now().plus_days(365)
                )
            }
        };
        let settings = format!(
            "# Governance (docs/governance.md §4). Sign with `edge-runner governance sign`.\n\
             format = 1\nname = \"{}\"\nversion = 1\nexpires = {}\n\
             catalog = [\"catalog-info.yaml\"]\npolicy = \"tiers.cedar\"\n\
             sensitive-tags = [\"auth\", \"data-path\", \"ledger\", \"payments\", \"regulated-data\"]\n\n\
             [never-automate]\ntags = [\"ledger\"]\nnodes = []\nsystems = []\n\n\
             [[target]]\nsite = \"{}\"\npath = \"/config/\"\nentity = \"resource:default/app-config\"\n\n\
             [tiers.auto-merge]\napprovals = 0\nlifetime-secs = 0\n\n\
             [tiers.notify-and-proceed]\napprovals = 0\nlifetime-secs = 0\nwebhooks = []\n\n\
             [tiers.single-approver]\napprovals = 1\nlifetime-secs = 86400\n\n\
             [tiers.change-control]\napprovals = 2\nlifetime-secs = 86400\ndelay-secs = 0\n\n{person}",
            self.name,
            Timestamp::now().plus_days(180),
            self.site
        );
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let files = [
            ("governance.toml", settings.as_str()),
            ("catalog-info.yaml", STARTER_CATALOG),
            ("tiers.cedar", DEFAULT_POLICY),
        ];
        for (name, _) in &files {
            let path = self.dir.join(name);
            if path.exists() {
                bail!(
                    "{} exists; `governance init` never overwrites. Edit it, or choose another --dir",
                    path.display()
                );
            }
        }
        for (name, text) in files {
            write_atomically(&self.dir.join(name), text.as_bytes())?;
        }
        say!(
            "wrote {}/governance.toml, catalog-info.yaml and tiers.cedar (version 1). Edit the catalog, targets and roster, then `edge-runner governance sign --dir {}`",
            self.dir.display(),
            self.dir.display()
        )?;
        Ok(Exit::Ok)
    }
}

#[derive(Debug, Args)]
pub(super) struct GovSign {
    /// Sources to bundle (governance.toml and the files it names).
    #[arg(long, required_unless_present = "bundle", conflicts_with = "bundle")]
    dir: Option<PathBuf>,
    /// A staged bundle to add signatures to.
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Administrator private keys to sign with (repeat for each holder present).
    #[arg(long = "key", required = true)]
    keys: Vec<PathBuf>,
    /// Where to write the signed bundle (default: --bundle, replaced).
    #[arg(long, required_unless_present = "bundle")]
    out: Option<PathBuf>,
    /// A trust store: report which of its governance administrators have signed.
    #[arg(long)]
    trust: Option<PathBuf>,
}

impl GovSign {
    fn execute(self) -> Result<Exit> {
        let keys = self
            .keys
            .iter()
            .map(|p| SecretKey::load(p))
            .collect::<Result<Vec<_>, _>>()?;
        let (mut bytes, rest) = match (&self.dir, &self.bundle) {
            (Some(dir), _) => {
                let sources = read_sources(dir)?;
                let draft = sources.check()?;
                say!(
                    "bundling {} (version {}): sources check out",
                    dir.display(),
                    draft.version()
                )?;
                let first = keys.first().context("give at least one --key")?;
                (SignedBundle::sign_new(&sources, first)?, &keys[1..])
            }
            (None, Some(path)) => (read_bundle(path)?, &keys[..]),
            (None, None) => bail!("give --dir (sources to sign) or --bundle (a staged bundle)"),
        };
        for key in rest {
            bytes = SignedBundle::parse(&bytes, "bundle")?.add_signature(key)?;
        }
        let out = self
            .out
            .or(self.bundle)
            .context("give --out for the signed bundle")?;
        write_atomically(&out, &bytes)?;
        say!("wrote {}", out.display())?;
        if let Some(trust) = &self.trust {
            let root = super::load_trust_store(trust)?;
            let signed = SignedBundle::parse(&bytes, &out.display().to_string())?;
            let (by, missing, needed) = signed.signatures_by(&root, &out.display().to_string())?;
            say!(
                "signed by {} of the {needed} administrators trust root `{}` requires (have: {}; can still sign: {})",
                by.len(),
                root.name,
                list(&by),
                list(&missing)
            )?;
        }
        Ok(Exit::Ok)
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn read_bundle(path: &Path) -> Result<Vec<u8>> {
    Ok(read_bounded(
        path,
        MAX_BUNDLE_BYTES as u64,
        "governance bundle",
    )?)
}

#[derive(Debug, Args)]
pub(super) struct GovInstall {
    /// The trust store; governance is installed in its `governance/` directory.
    #[arg(long)]
    trust: PathBuf,
    /// The signed bundle.
    #[arg(long)]
    bundle: PathBuf,
}

impl GovInstall {
    fn execute(self) -> Result<Exit> {
        let root = super::load_trust_store(&self.trust)?;
        let bytes = read_bundle(&self.bundle)?;
        let gov = match install(&self.trust, &bytes, &root, Timestamp::now()) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(Exit::Refused);
            }
        };
        say!(
            "installed governance `{}` v{} (sha256 {}, graph {}), signed by {}",
            gov.name(),
            gov.version(),
            hex::encode(gov.digest()),
            hex::encode(gov.graph_digest()),
            gov.signed_by().join(", ")
        )?;
        Ok(Exit::Ok)
    }
}

#[derive(Debug, Args)]
pub(super) struct GovShow {
    /// The trust store the governance is installed beside.
    #[arg(long)]
    trust: PathBuf,
}

fn load(trust: &Path) -> Result<Governance> {
    let root = super::load_trust_store(trust)?;
    load_installed(trust, &root, Timestamp::now())?.with_context(|| {
        format!(
            "no governance is installed in {}/governance; install one with `edge-runner governance install`",
            trust.display()
        )
    })
}

impl GovShow {
    fn execute(self) -> Result<Exit> {
        let gov = load(&self.trust)?;
        say!("governance `{}` v{}", gov.name(), gov.version())?;
        say!("  expires     {}", gov.expires())?;
        say!("  sha256      {}", hex::encode(gov.digest()))?;
        say!(
            "  graph       {} ({} entities)",
            hex::encode(gov.graph_digest()),
            gov.entity_count()
        )?;
        say!("  signed by   {}", gov.signed_by().join(", "))?;
        say!("  policies    {}", gov.policy_ids().join(", "))?;
        for tier in Tier::ALL {
            let r = gov.rule(tier);
            say!(
                "  tier {:<19} approvals {}, groups [{}], lifetime {} s, delay {} s, webhooks {}",
                tier.as_str(),
                r.approvals,
                r.groups.join(", "),
                r.lifetime_secs,
                r.delay_secs,
                r.webhooks.len()
            )?;
        }
        for p in gov.persons() {
            let tiers: Vec<&str> = p.tiers.iter().map(|t| t.as_str()).collect();
            say!(
                "  person {:<16} keys {}, tiers [{}], groups [{}], expires {}{}",
                p.name,
                p.keys
                    .iter()
                    .map(|k| k.id().short())
                    .collect::<Vec<_>>()
                    .join(" "),
                tiers.join(", "),
                p.groups.iter().cloned().collect::<Vec<_>>().join(", "),
                p.expires,
                if p.break_glass { ", break-glass" } else { "" }
            )?;
        }
        Ok(Exit::Ok)
    }
}

#[derive(Debug, Args)]
pub(super) struct GovExplain {
    /// A target: `site:/abs/path` or `site:https://host/path` (repeat for several actions).
    #[arg(long = "target", required_unless_present = "proposal")]
    targets: Vec<String>,
    /// Explain a recorded proposal instead (`DIR/proposals/HEX.proposal`, or the
    /// file `proposal show --out` wrote): its own targets, reversibility, staged
    /// validation and size, derived again now, next to the tier it was given.
    #[arg(
        long,
        conflicts_with_all = ["targets", "irreversible", "unvalidated", "change_bytes"]
    )]
    proposal: Option<PathBuf>,
    /// Explain under the governance installed beside this trust store.
    #[arg(long, required_unless_present = "dir", conflicts_with = "dir")]
    trust: Option<PathBuf>,
    /// Explain under unsigned sources in this directory (before signing).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The change has no rollback.
    #[arg(long)]
    irreversible: bool,
    /// The change was never staged (no validation).
    #[arg(long)]
    unvalidated: bool,
    /// Size of the change in bytes.
    #[arg(long, default_value_t = 0)]
    change_bytes: u64,
}

impl GovExplain {
    fn execute(self) -> Result<Exit> {
        if let Some(path) = &self.proposal {
            return self.explain_proposal(path);
        }
        let targets = self
            .targets
            .iter()
            .map(|t| Target::parse(t))
            .collect::<Result<Vec<_>, String>>()
            .map_err(anyhow::Error::msg)?;
        // A hypothetical change: staged validation is assumed to pass for every
        // node in the radius unless --unvalidated says it was never staged.
        let mut inputs = TierInputs {
            targets,
            reversible: !self.irreversible,
            validation: None,
            change_bytes: self.change_bytes,
            declared_tier: None,
        };
        let decision = match (&self.trust, &self.dir) {
            (Some(trust), _) => {
                let gov = load(trust)?;
                inputs.validation =
                    (!self.unvalidated).then(|| all_pass(&gov.radius_tests(&inputs.targets)));
                gov.derive(&inputs)
            }
            (None, Some(dir)) => {
                let draft: Draft = read_sources(dir)?.check()?;
                let probe = draft.derive(&inputs);
                inputs.validation = (!self.unvalidated).then(|| Validation {
                    exercised: probe.blast_radius.clone(),
                    passed: probe.blast_radius.clone(),
                    regressed: Vec::new(),
                });
                draft.derive(&inputs)
            }
            (None, None) => bail!("give --trust (installed governance) or --dir (sources)"),
        };
        print_decision(&inputs, &decision)?;
        Ok(Exit::Ok)
    }
}

impl GovExplain {
    /// A recorded proposal's tier, derived again under the governance given.
    fn explain_proposal(&self, path: &Path) -> Result<Exit> {
        use crate::governance::Proposed;
        let proposal = super::proposal::read_proposal(path)?;
        let inputs = proposal.tier_inputs();
        let decision = match (&self.trust, &self.dir) {
            (Some(trust), _) => load(trust)?.derive(&inputs),
            (None, Some(dir)) => {
                let draft: Draft = read_sources(dir)?.check()?;
                draft.derive(&inputs)
            }
            (None, None) => bail!("give --trust (installed governance) or --dir (sources)"),
        };
        say!("proposal      {}", hex::encode(proposal.digest()))?;
        let d = proposal.draft();
        say!(
            "capsule       {} {} (proposed by {})",
            d.capsule.name,
            d.capsule.version,
            d.proposer
        )?;
        print_decision(&inputs, &decision)?;
        let recorded = proposal.recorded_tier();
        let now = decision.tier.max(recorded);
        if now == recorded {
            say!("recorded tier {recorded}: unchanged")?;
        } else {
            say!(
                "recorded tier {recorded}: it is {now} now; approvals signed for {recorded} no longer count (approvers must sign again for {now})"
            )?;
        }
        Ok(Exit::Ok)
    }
}

fn all_pass(radius: &[(String, Vec<String>)]) -> Validation {
    let nodes: Vec<String> = radius.iter().map(|(n, _)| n.clone()).collect();
    Validation {
        exercised: nodes.clone(),
        passed: nodes,
        regressed: Vec::new(),
    }
}

/// Prints a decision the way `explain` and `approve` show it.
pub(super) fn print_decision(inputs: &TierInputs, d: &Decision) -> Result<()> {
    for t in &inputs.targets {
        say!("target        {t}")?;
    }
    say!(
        "nodes         {}",
        if d.nodes.is_empty() {
            "none (unmapped)".into()
        } else {
            d.nodes.join(", ")
        }
    )?;
    say!(
        "blast radius  {} node(s): {}",
        d.blast_radius.len(),
        d.blast_radius.join(", ")
    )?;
    say!("blast path    {}", d.blast_path.join(" -> "))?;
    say!("criticality   {}", d.max_criticality)?;
    say!("sensitive     {}", list(&d.sensitive))?;
    say!("reachable     {}", d.reachable)?;
    say!("reversible    {}", d.reversible)?;
    say!("coverage      {}/{}", d.coverage.0, d.coverage.1)?;
    say!("policy ids    {}", list(&d.policy_ids))?;
    say!("floors        {}", list(&d.floors))?;
    for e in &d.cedar_errors {
        say!("cedar error   {e}")?;
    }
    say!(
        "tier          {} (governance v{}, graph {})",
        d.tier,
        d.governance_version,
        hex::encode(&d.graph_digest[..8])
    )?;
    Ok(())
}
