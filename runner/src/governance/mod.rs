//! Governance: who may authorize a remediation, derived from the site's
//! system graph and signed rules, never from what a capsule author declares.
//!
//! A site's governance is a signed bundle ([`bundle`]) holding a catalog
//! (the system graph, [`catalog`] and [`graph`]), Cedar tier rules
//! ([`policy`]), and `governance.toml` ([`settings`]: never-automate list,
//! target mapping, per-tier rules, roster). [`Governance`] exists only once
//! a bundle's signatures, version and expiry were checked against the trust
//! root's `[governance]` administrators. [`Governance::derive`] turns a
//! proposal's [`TierInputs`] into a [`Decision`]; [`authorize`] checks signed
//! [`Approval`]s against it and is the only place that builds an
//! [`Authorized`] proof, which apply (in `remediation`) takes.
//!
//! This module decides; it never writes to a target, runs a capsule or
//! appends evidence. The normative description is `docs/governance.md`.

pub mod approval;
mod authorize;
pub mod bundle;
pub mod catalog;
pub mod graph;
pub mod policy;
pub mod settings;

use std::collections::BTreeSet;

use ciborium::Value;

pub use approval::{Approval, ApprovalDecision};
pub use authorize::{ApprovalVerdict, Authorized, Proposed, Refusal, authorize};
pub use bundle::{
    GOVERNANCE_DIR, Governance, SignedBundle, Sources, install, load_installed, read_sources,
};
pub use settings::{Person, TierRule};

use catalog::Criticality;
use graph::SystemGraph;
use policy::{PolicyInputs, TierPolicy};
use settings::Settings;

/// The approval tiers, ordered: `AutoMerge < NotifyAndProceed < SingleApprover < ChangeControl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// Applied without anyone asked.
    AutoMerge,
    /// Applied, then the tier's webhooks are told.
    NotifyAndProceed,
    /// One eligible person approves.
    SingleApprover,
    /// At least two eligible persons approve.
    ChangeControl,
}

impl Tier {
    /// Every tier, lowest first.
    pub const ALL: [Tier; 4] = [
        Tier::AutoMerge,
        Tier::NotifyAndProceed,
        Tier::SingleApprover,
        Tier::ChangeControl,
    ];

    /// The tier's name as written in files and evidence.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::AutoMerge => "auto-merge",
            Tier::NotifyAndProceed => "notify-and-proceed",
            Tier::SingleApprover => "single-approver",
            Tier::ChangeControl => "change-control",
        }
    }

    /// Parses a tier's name.
    pub fn parse(text: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.as_str() == text)
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a remediation action touches: the key the catalog maps to a graph node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A file, by the absolute host path the site grants.
    File {
        /// The site.
        site: String,
        /// Absolute host path.
        path: String,
    },
    /// An HTTP endpoint.
    Http {
        /// The site.
        site: String,
        /// Request method.
        method: String,
        /// Full URL.
        url: String,
    },
}

impl Target {
    /// Parses `site:/abs/path` or `site:https://host/path` (the CLI's form).
    pub fn parse(text: &str) -> Result<Target, String> {
        let (site, rest) = text.split_once(':').ok_or_else(|| {
            format!("target `{text}` is not `site:/path` or `site:https://host/path`")
        })?;
        if rest.starts_with('/') {
            Ok(Target::File {
                site: site.to_string(),
                path: rest.to_string(),
            })
        } else if rest.starts_with("https://") || rest.starts_with("http://") {
            Ok(Target::Http {
                site: site.to_string(),
                method: "POST".into(),
                url: rest.to_string(),
            })
        } else {
            Err(format!(
                "target `{text}` is not `site:/path` or `site:https://host/path`"
            ))
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::File { site, path } => write!(f, "{site}:{path}"),
            Target::Http { site, method, url } => write!(f, "{site}:{method} {url}"),
        }
    }
}

/// Staged validation results (remediation computes them; governance turns them into coverage).
#[derive(Clone, Debug, Default)]
pub struct Validation {
    /// Entity references whose registered tests ran.
    pub exercised: Vec<String>,
    /// Entity references whose registered tests passed.
    pub passed: Vec<String>,
    /// Entity references whose registered tests failed on the staged copy.
    pub regressed: Vec<String>,
}

/// Everything the tier derivation sees about one proposal.
#[derive(Clone, Debug)]
pub struct TierInputs {
    /// One per action.
    pub targets: Vec<Target>,
    /// Every action has a rollback that restores the pre-image.
    pub reversible: bool,
    /// `None`: never staged.
    pub validation: Option<Validation>,
    /// Total size of the diffs and requests.
    pub change_bytes: u64,
    /// What the author claimed; recorded, never used.
    pub declared_tier: Option<Tier>,
}

/// Floor names, as recorded in [`Decision::floors`].
pub mod floor {
    /// A blast radius reaches a never-automate tag, node or system.
    pub const NEVER_AUTOMATE: &str = "never-automate";
    /// Some action has no rollback restoring the pre-image.
    pub const IRREVERSIBLE: &str = "irreversible";
    /// Some target maps to no catalog node.
    pub const UNMAPPED: &str = "unmapped";
    /// Cedar reported an evaluation error.
    pub const CEDAR_ERROR: &str = "cedar-error";
    /// The proposal was never staged.
    pub const UNVALIDATED: &str = "unvalidated";
    /// Not every radius node has a passing registered test.
    pub const PARTIAL_COVERAGE: &str = "partial-coverage";
    /// A registered test failed on the staged copy.
    pub const REGRESSED: &str = "regressed";
}

/// The derived tier and why; [`Decision::to_value`] is its evidence form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The tier.
    pub tier: Tier,
    /// Graph nodes the targets map to (empty: unmapped).
    pub nodes: Vec<String>,
    /// The targets' nodes and every node that transitively depends on them, sorted.
    pub blast_radius: Vec<String>,
    /// Path from a target node to the node that decided the tier.
    pub blast_path: Vec<String>,
    /// Highest criticality in the radius.
    pub max_criticality: String,
    /// Sensitive tags reached, sorted.
    pub sensitive: Vec<String>,
    /// Reachable from an internet-exposed node.
    pub reachable: bool,
    /// Every action reversible.
    pub reversible: bool,
    /// (nodes in radius with a passing registered test, nodes in radius).
    pub coverage: (u32, u32),
    /// Cedar policy ids that decided.
    pub policy_ids: Vec<String>,
    /// Floors applied (see [`floor`]).
    pub floors: Vec<String>,
    /// Cedar evaluation errors, if any.
    pub cedar_errors: Vec<String>,
    /// The author's declared tier (recorded, never used).
    pub declared_tier: Option<Tier>,
    /// Governance version that decided.
    pub governance_version: u64,
    /// Governance digest (SHA-256 of the signed payload).
    pub governance_digest: [u8; 32],
    /// Graph digest.
    pub graph_digest: [u8; 32],
}

impl Decision {
    /// The decision as a deterministic CBOR map (docs/governance.md §7.3).
    pub fn to_value(&self) -> Value {
        let texts = |v: &[String]| Value::Array(v.iter().map(|s| Value::Text(s.clone())).collect());
        let mut fields = vec![
            ("tier", Value::Text(self.tier.as_str().into())),
            ("nodes", texts(&self.nodes)),
            ("blast-radius", texts(&self.blast_radius)),
            ("blast-path", texts(&self.blast_path)),
            ("max-criticality", Value::Text(self.max_criticality.clone())),
            ("sensitive", texts(&self.sensitive)),
            ("reachable", Value::Bool(self.reachable)),
            ("reversible", Value::Bool(self.reversible)),
            (
                "coverage",
                Value::Array(vec![
                    Value::Integer(self.coverage.0.into()),
                    Value::Integer(self.coverage.1.into()),
                ]),
            ),
            ("policy-ids", texts(&self.policy_ids)),
            ("floors", texts(&self.floors)),
            ("cedar-errors", texts(&self.cedar_errors)),
            (
                "governance-version",
                Value::Integer(self.governance_version.into()),
            ),
            (
                "governance-sha256",
                Value::Bytes(self.governance_digest.to_vec()),
            ),
            ("graph-sha256", Value::Bytes(self.graph_digest.to_vec())),
        ];
        if let Some(t) = self.declared_tier {
            fields.push(("declared-tier", Value::Text(t.as_str().into())));
        }
        crate::cbor::text_map(fields)
    }
}

/// Why governance could not be loaded, a proposal not tiered, or an apply not authorized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GovernanceError {
    /// A catalog file is unusable.
    #[error("catalog {file}: entity `{entity}` field `{field}`: {detail}")]
    Catalog {
        /// The file.
        file: String,
        /// The entity (or `-`).
        entity: String,
        /// The field (or `-`).
        field: String,
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// The Cedar tier policy is unusable.
    #[error("tier policy: {detail}")]
    Policy {
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// `governance.toml` is unusable.
    #[error("{origin}: {detail}")]
    Settings {
        /// Where it was read from.
        origin: String,
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// A governance bundle or the governance store is unusable.
    #[error("governance bundle {origin}: {detail}")]
    Bundle {
        /// Where it was read from.
        origin: String,
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// The trust root names no governance administrators.
    #[error(
        "trust root `{root}` v{version} has no [governance] table, so no governance bundle can be trusted; add `[governance]` with `threshold` and `[[governance.admin]]` keys and rotate the trust root"
    )]
    NoAdministrators {
        /// Trust root name.
        root: String,
        /// Its version.
        version: u64,
    },
    /// Too few administrators signed.
    #[error(
        "governance `{name}` v{version} is signed by {have} of the {needed} administrators trust root `{root}` requires (have: {signed_by}; can still sign: {missing}); collect signatures with `edge-runner governance sign`"
    )]
    NotSigned {
        /// Governance name.
        name: String,
        /// Its version.
        version: u64,
        /// Trust root name.
        root: String,
        /// Distinct administrators that signed.
        have: usize,
        /// Threshold.
        needed: u32,
        /// Their names, or `none`.
        signed_by: String,
        /// Administrators that have not signed, or `none`.
        missing: String,
    },
    /// The governance has expired.
    #[error(
        "governance `{name}` v{version} expired at {expired}; nothing is authorized under expired rules. Sign and install v{next}",
        next = .version + 1
    )]
    Expired {
        /// Governance name.
        name: String,
        /// Its version.
        version: u64,
        /// When (RFC 3339).
        expired: String,
    },
    /// A governance version at or below one already installed or used.
    #[error(
        "governance `{name}` v{version} is not newer than v{seen}, which was already {how}; governance never goes back. Sign v{next} with the change instead",
        next = .seen + 1
    )]
    Rollback {
        /// Governance name.
        name: String,
        /// The version offered.
        version: u64,
        /// The highest version installed or used.
        seen: u64,
        /// `installed` or `used (per this runner's evidence log)`.
        how: String,
    },
    /// A malformed approval file.
    #[error("approval {origin}: {detail}")]
    Approval {
        /// Where it was read from.
        origin: String,
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// An eligible person denied the proposal.
    #[error(
        "proposal {proposal} is denied by `{person}`: \"{reason}\"; one eligible deny vetoes it whatever the approvals. Address it and propose again"
    )]
    Denied {
        /// Proposal digest (hex).
        proposal: String,
        /// Who denied.
        person: String,
        /// Their reason.
        reason: String,
    },
    /// Too few counted approvals.
    #[error(
        "proposal {proposal} (tier {tier}, governance v{version}) has {have} of the {needed} approvals from distinct eligible persons it needs (counted: {counted}; not counted: {not_counted}); collect approvals with `edge-runner approve`"
    )]
    Quorum {
        /// Proposal digest (hex).
        proposal: String,
        /// The tier in force.
        tier: Tier,
        /// Governance version.
        version: u64,
        /// Counted persons.
        have: usize,
        /// Needed.
        needed: u32,
        /// Names counted, or `none`.
        counted: String,
        /// Each approval not counted and why, or `none`.
        not_counted: String,
    },
    /// A required group has no counted approver.
    #[error(
        "proposal {proposal} (tier {tier}) needs an approval from a member of group `{group}`, and none of the counted approvers ({counted}) is in it; ask a member of `{group}` to approve"
    )]
    GroupMissing {
        /// Proposal digest (hex).
        proposal: String,
        /// The tier.
        tier: Tier,
        /// The group.
        group: String,
        /// Counted persons.
        counted: String,
    },
    /// The tier's delay has not elapsed.
    #[error(
        "proposal {proposal} (tier {tier}) may not be applied before {not_before} ({delay} s after it was proposed at {proposed_at}); wait and apply again"
    )]
    Delay {
        /// Proposal digest (hex).
        proposal: String,
        /// The tier.
        tier: Tier,
        /// Delay in seconds.
        delay: u64,
        /// When it was proposed.
        proposed_at: String,
        /// Earliest apply time.
        not_before: String,
    },
}

/// The rules of one governance bundle, checked for consistency but not (yet) trusted.
#[derive(Debug)]
pub(crate) struct Rules {
    pub(crate) settings: Settings,
    pub(crate) graph: SystemGraph,
    pub(crate) policy: TierPolicy,
}

impl Rules {
    /// Builds and cross-checks the rules from bundle sources.
    pub(crate) fn build(sources: &Sources) -> Result<Self, GovernanceError> {
        let settings = Settings::parse(&sources.governance, "governance.toml")?;
        let mut entities = Vec::new();
        for (name, text) in &sources.catalog {
            entities.extend(catalog::parse_file(name, text)?);
        }
        let entities = catalog::check(entities)?;
        let policy = TierPolicy::parse(&sources.policy)?;
        for m in &settings.targets {
            if !entities.contains_key(&m.entity) {
                return Err(GovernanceError::Settings {
                    origin: "governance.toml".into(),
                    detail: format!(
                        "[[target]] maps to `{}`, which is not in the catalog; add the entity or fix the reference",
                        m.entity
                    ),
                });
            }
        }
        for n in settings
            .never_automate
            .nodes
            .iter()
            .chain(&settings.never_automate.systems)
        {
            if !entities.contains_key(n) {
                return Err(GovernanceError::Settings {
                    origin: "governance.toml".into(),
                    detail: format!(
                        "[never-automate] names `{n}`, which is not in the catalog; a never-automate entry that matches nothing protects nothing"
                    ),
                });
            }
        }
        Ok(Self {
            settings,
            graph: SystemGraph::new(entities),
            policy,
        })
    }

    /// Derives the tier (docs/governance.md §7).
    pub(crate) fn derive(&self, inputs: &TierInputs, version: u64, digest: [u8; 32]) -> Decision {
        let mut floors: BTreeSet<&'static str> = BTreeSet::new();
        let mut nodes = BTreeSet::new();
        for t in &inputs.targets {
            match self.settings.map(t) {
                Some(n) => {
                    nodes.insert(n.to_string());
                }
                None => {
                    floors.insert(floor::UNMAPPED);
                }
            }
        }
        if inputs.targets.is_empty() {
            floors.insert(floor::UNMAPPED);
        }
        let nodes: Vec<String> = nodes.into_iter().collect();
        let radius = self.graph.blast_radius(&nodes);
        let entities: Vec<&catalog::Entity> = radius
            .nodes
            .iter()
            .filter_map(|n| self.graph.entity(n))
            .collect();
        let mut tags = BTreeSet::new();
        let mut systems = BTreeSet::new();
        let mut owners = BTreeSet::new();
        for e in &entities {
            tags.extend(e.tags.iter().cloned());
            systems.extend(e.system.iter().cloned());
            owners.extend(e.owner.iter().cloned());
            if e.reference.starts_with("system:") {
                systems.insert(e.reference.clone());
            }
        }
        let sensitive: Vec<String> = tags
            .iter()
            .filter(|t| self.settings.sensitive_tags.contains(t))
            .cloned()
            .collect();
        let max_criticality = self.graph.max_criticality(&radius.nodes);
        let exposed = entities.iter().find(|e| e.exposed);
        let reachable = exposed.is_some();
        let never = &self.settings.never_automate;
        let never_hit = entities.iter().find(|e| {
            never.nodes.contains(&e.reference)
                || e.tags.iter().any(|t| never.tags.contains(t))
                || e.system.as_ref().is_some_and(|s| never.systems.contains(s))
                || never.systems.contains(&e.reference)
        });
        if never_hit.is_some() {
            floors.insert(floor::NEVER_AUTOMATE);
        }
        if !inputs.reversible {
            floors.insert(floor::IRREVERSIBLE);
        }
        let total = radius.nodes.len() as u32;
        let (covered, validated) = match &inputs.validation {
            None => {
                floors.insert(floor::UNVALIDATED);
                (0, false)
            }
            Some(v) => {
                if !v.regressed.is_empty() {
                    floors.insert(floor::REGRESSED);
                }
                let covered = entities
                    .iter()
                    .filter(|e| !e.tests.is_empty() && v.passed.contains(&e.reference))
                    .count() as u32;
                (covered, true)
            }
        };
        let coverage_full = validated && total > 0 && covered == total;
        if validated && !coverage_full {
            floors.insert(floor::PARTIAL_COVERAGE);
        }
        let answer = self.policy.evaluate(&PolicyInputs {
            max_criticality: max_criticality.level(),
            tags: tags.iter().cloned().collect(),
            sensitive: sensitive.clone(),
            systems: systems.into_iter().collect(),
            owners: owners.into_iter().collect(),
            nodes: radius.nodes.clone(),
            reachable,
            reversible: inputs.reversible,
            validated,
            coverage_full,
            covered: i64::from(covered),
            change_bytes: i64::try_from(inputs.change_bytes).unwrap_or(i64::MAX),
        });
        if !answer.errors.is_empty() {
            floors.insert(floor::CEDAR_ERROR);
        }
        let mut tier = answer.tier;
        for f in &floors {
            let at_least = match *f {
                floor::UNVALIDATED | floor::PARTIAL_COVERAGE => Tier::SingleApprover,
                _ => Tier::ChangeControl,
            };
            tier = tier.max(at_least);
        }
        // The node that decided, for `explain`: never-automate, then a
        // sensitive surface, then an exposed entry, then the most critical node.
        let decider = never_hit
            .or_else(|| {
                entities
                    .iter()
                    .find(|e| e.tags.iter().any(|t| sensitive.contains(t)))
            })
            .or(exposed)
            .or_else(|| entities.iter().max_by_key(|e| e.criticality))
            .map(|e| e.reference.clone());
        let blast_path = decider.map(|d| radius.path_to(&d)).unwrap_or_default();
        Decision {
            tier,
            nodes,
            blast_radius: radius.nodes,
            blast_path,
            max_criticality: max_criticality.as_str().into(),
            sensitive,
            reachable,
            reversible: inputs.reversible,
            coverage: (covered, total),
            policy_ids: answer.policy_ids,
            floors: floors.into_iter().map(String::from).collect(),
            cedar_errors: answer.errors,
            declared_tier: inputs.declared_tier,
            governance_version: version,
            governance_digest: digest,
            graph_digest: self.graph.digest(),
        }
    }

    /// Radius nodes with their registered test capsules.
    pub(crate) fn radius_tests(&self, targets: &[Target]) -> Vec<(String, Vec<String>)> {
        let nodes: Vec<String> = targets
            .iter()
            .filter_map(|t| self.settings.map(t).map(String::from))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        self.graph
            .blast_radius(&nodes)
            .nodes
            .into_iter()
            .map(|n| {
                let tests = self
                    .graph
                    .entity(&n)
                    .map(|e| e.tests.clone())
                    .unwrap_or_default();
                (n, tests)
            })
            .collect()
    }
}

/// Criticality names, for documentation and the CLI.
pub fn criticality_names() -> [&'static str; 4] {
    [
        Criticality::Low.as_str(),
        Criticality::Moderate.as_str(),
        Criticality::High.as_str(),
        Criticality::Critical.as_str(),
    ]
}

#[cfg(test)]
mod tests;
