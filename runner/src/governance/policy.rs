//! Tier rules in Cedar: the schema every site policy is validated against
//! (strict mode, at sign and install time), the default policy that
//! implements the issue's table, and the evaluation that asks, tier by tier
//! from the lowest, whether the proposal may have it.
//!
//! Cedar decides only *which* tier a proposal gets below change-control;
//! the floors in [`super::Governance::derive`] are applied after it and no
//! policy can lower them.

use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, EntityUid, PolicyId, PolicySet,
    Request, RestrictedExpression, Schema, ValidationMode, Validator,
};

use super::{GovernanceError, Tier};

/// Largest Cedar policy text accepted, in bytes.
pub const MAX_POLICY_BYTES: usize = 256 * 1024;

/// The schema site policies are validated against (docs/governance.md §5.1).
pub const SCHEMA: &str = r#"namespace EdgeRunner {
  entity Governance;
  entity Proposal;
  type Inputs = {
    max_criticality: Long,
    tags: Set<String>,
    sensitive: Set<String>,
    systems: Set<String>,
    owners: Set<String>,
    nodes: Set<String>,
    radius_size: Long,
    reachable: Bool,
    reversible: Bool,
    validated: Bool,
    coverage_full: Bool,
    covered: Long,
    change_bytes: Long,
  };
  action "auto-merge", "notify-and-proceed", "single-approver" appliesTo {
    principal: [Governance],
    resource: [Proposal],
    context: Inputs
  };
}
"#;

/// The default tier policy: the issue's table, written in Cedar.
pub const DEFAULT_POLICY: &str = r#"// Edge Runner default tier policy (docs/governance.md §5.2).
// A tier below change-control is granted when a permit for its action matches
// and no forbid does; the lowest granted tier wins; none granted is change-control.
// Criticality levels: 1 low, 2 moderate, 3 high, 4 critical.

@id("auto-merge-low-risk")
permit (principal, action == EdgeRunner::Action::"auto-merge", resource)
when {
  context.max_criticality <= 1 &&
  context.coverage_full &&
  context.sensitive.isEmpty()
};

@id("notify-moderate-covered")
permit (principal, action == EdgeRunner::Action::"notify-and-proceed", resource)
when {
  context.max_criticality <= 2 &&
  context.coverage_full &&
  context.sensitive.isEmpty()
};

@id("single-approver-high")
permit (principal, action == EdgeRunner::Action::"single-approver", resource)
when { context.max_criticality <= 3 };

@id("change-control-regulated-auth-payments")
forbid (principal, action, resource)
when {
  context.sensitive.containsAny(["regulated-data", "auth", "payments", "ledger"])
};

@id("change-control-irreversible")
forbid (principal, action, resource)
when { !context.reversible };

@id("change-control-reachable")
forbid (principal, action, resource)
when { context.reachable };
"#;

/// The actions asked, lowest tier first.
const ASKED: [Tier; 3] = [
    Tier::AutoMerge,
    Tier::NotifyAndProceed,
    Tier::SingleApprover,
];

/// What a policy sees about one proposal (the `Inputs` record of [`SCHEMA`]).
#[derive(Debug, Clone, Default)]
pub struct PolicyInputs {
    /// Highest criticality level in the radius (1-4).
    pub max_criticality: i64,
    /// Every tag in the radius.
    pub tags: Vec<String>,
    /// The sensitive tags reached.
    pub sensitive: Vec<String>,
    /// Systems of radius nodes.
    pub systems: Vec<String>,
    /// Owners of radius nodes.
    pub owners: Vec<String>,
    /// Radius nodes.
    pub nodes: Vec<String>,
    /// Reachable from an internet-exposed node.
    pub reachable: bool,
    /// Every action has a rollback restoring the pre-image.
    pub reversible: bool,
    /// Staged validation ran.
    pub validated: bool,
    /// Every radius node has a passing registered test.
    pub coverage_full: bool,
    /// Radius nodes with a passing registered test.
    pub covered: i64,
    /// Size of the change in bytes.
    pub change_bytes: i64,
}

/// A site's tier policy, validated against [`SCHEMA`] in strict mode.
#[derive(Debug)]
pub struct TierPolicy {
    policies: PolicySet,
    schema: Schema,
    ids: Vec<String>,
}

/// The policy's answer for one proposal.
#[derive(Debug, Clone)]
pub struct PolicyAnswer {
    /// Lowest tier granted (change-control when none is).
    pub tier: Tier,
    /// The policy ids that decided it: the permits that granted it, or the
    /// forbids that blocked the highest tier asked.
    pub policy_ids: Vec<String>,
    /// Evaluation errors, as Cedar reports them (any forces change-control).
    pub errors: Vec<String>,
}

fn schema() -> Result<Schema, GovernanceError> {
    Schema::from_cedarschema_str(SCHEMA)
        .map(|(schema, _)| schema)
        .map_err(|e| GovernanceError::Policy {
            detail: format!("built-in schema: {e}"),
        })
}

impl TierPolicy {
    /// Parses `text`, re-identifies every policy by its required `@id`
    /// annotation and validates the set against [`SCHEMA`] in strict mode.
    pub fn parse(text: &str) -> Result<Self, GovernanceError> {
        let err = |detail: String| GovernanceError::Policy { detail };
        if text.len() > MAX_POLICY_BYTES {
            return Err(err(format!(
                "{} bytes is over the {MAX_POLICY_BYTES}-byte limit",
                text.len()
            )));
        }
        let parsed = PolicySet::from_str(text).map_err(|e| err(format!("does not parse: {e}")))?;
        if parsed.templates().next().is_some() {
            return Err(err(
                "contains a template; tier policies are static `permit`/`forbid` rules".into(),
            ));
        }
        let mut policies = PolicySet::new();
        let mut ids = Vec::new();
        for p in parsed.policies() {
            let Some(id) = p.annotation("id") else {
                return Err(err(format!(
                    "a policy has no `@id(\"...\")` annotation; give every policy a unique id so decisions can name it:\n{p}"
                )));
            };
            let id = id.to_string();
            if ids.contains(&id) {
                return Err(err(format!("policy id `{id}` is used twice")));
            }
            policies
                .add(p.new_id(PolicyId::new(&id)))
                .map_err(|e| err(format!("policy `{id}`: {e}")))?;
            ids.push(id);
        }
        if ids.is_empty() {
            return Err(err(
                "holds no policies; with none every proposal is change-control. Start from `edge-runner governance init`".into(),
            ));
        }
        let schema = schema()?;
        let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        if !result.validation_passed() {
            let errors: Vec<String> = result.validation_errors().map(|e| e.to_string()).collect();
            return Err(err(format!(
                "fails strict validation against the tier schema (docs/governance.md §5.1): {}",
                errors.join("; ")
            )));
        }
        ids.sort();
        Ok(Self {
            policies,
            schema,
            ids,
        })
    }

    /// Every policy id, sorted.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// Asks, lowest tier first, whether the proposal may have each tier below change-control.
    pub fn evaluate(&self, inputs: &PolicyInputs) -> PolicyAnswer {
        let mut errors = Vec::new();
        let context = match self.context(inputs) {
            Ok(c) => c,
            Err(e) => {
                return PolicyAnswer {
                    tier: Tier::ChangeControl,
                    policy_ids: Vec::new(),
                    errors: vec![e],
                };
            }
        };
        let authorizer = Authorizer::new();
        let entities = Entities::empty();
        let mut blocking = Vec::new();
        let mut granted: Option<(Tier, Vec<String>)> = None;
        for tier in ASKED {
            let request = match self.request(tier, context.clone()) {
                Ok(r) => r,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let response = authorizer.is_authorized(&request, &self.policies, &entities);
            // Cedar skips a policy whose condition errors: a forbid that errors
            // would silently not apply. Any error is recorded and forces change-control.
            for e in response.diagnostics().errors() {
                errors.push(e.to_string());
            }
            let mut reasons: Vec<String> = response
                .diagnostics()
                .reason()
                .map(|id| id.to_string())
                .collect();
            reasons.sort();
            match response.decision() {
                CedarDecision::Allow => {
                    if granted.is_none() {
                        granted = Some((tier, reasons));
                    }
                }
                CedarDecision::Deny => blocking = reasons,
            }
        }
        match granted {
            Some((tier, ids)) => PolicyAnswer {
                tier,
                policy_ids: ids,
                errors,
            },
            None => PolicyAnswer {
                tier: Tier::ChangeControl,
                policy_ids: blocking,
                errors,
            },
        }
    }

    /// One raw Cedar request, for the benchmark beside [`TierPolicy::evaluate`].
    pub fn is_authorized_once(&self, inputs: &PolicyInputs) -> bool {
        let Ok(context) = self.context(inputs) else {
            return false;
        };
        let Ok(request) = self.request(Tier::SingleApprover, context) else {
            return false;
        };
        Authorizer::new()
            .is_authorized(&request, &self.policies, &Entities::empty())
            .decision()
            == CedarDecision::Allow
    }

    fn request(&self, tier: Tier, context: Context) -> Result<Request, String> {
        let uid = |text: &str| EntityUid::from_str(text).map_err(|e| e.to_string());
        Request::new(
            uid(r#"EdgeRunner::Governance::"site""#)?,
            uid(&format!(r#"EdgeRunner::Action::"{}""#, tier.as_str()))?,
            uid(r#"EdgeRunner::Proposal::"proposal""#)?,
            context,
            Some(&self.schema),
        )
        .map_err(|e| e.to_string())
    }

    fn context(&self, i: &PolicyInputs) -> Result<Context, String> {
        let set = |v: &[String]| {
            RestrictedExpression::new_set(
                v.iter()
                    .map(|s| RestrictedExpression::new_string(s.clone())),
            )
        };
        let pairs = [
            (
                "max_criticality",
                RestrictedExpression::new_long(i.max_criticality),
            ),
            ("tags", set(&i.tags)),
            ("sensitive", set(&i.sensitive)),
            ("systems", set(&i.systems)),
            ("owners", set(&i.owners)),
            ("nodes", set(&i.nodes)),
            (
                "radius_size",
                RestrictedExpression::new_long(i.nodes.len() as i64),
            ),
            ("reachable", RestrictedExpression::new_bool(i.reachable)),
            ("reversible", RestrictedExpression::new_bool(i.reversible)),
            ("validated", RestrictedExpression::new_bool(i.validated)),
            (
                "coverage_full",
                RestrictedExpression::new_bool(i.coverage_full),
            ),
            ("covered", RestrictedExpression::new_long(i.covered)),
            (
                "change_bytes",
                RestrictedExpression::new_long(i.change_bytes),
            ),
        ];
        Context::from_pairs(pairs.into_iter().map(|(k, v)| (k.to_string(), v)))
            .map_err(|e| e.to_string())
    }
}
