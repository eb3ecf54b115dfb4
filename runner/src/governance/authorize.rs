//! The authority check: the only place an [`Authorized`] proof is built
//! (docs/governance.md §9). Apply takes that proof, never a proposal alone.

use std::collections::BTreeSet;

use super::approval::{Approval, ApprovalDecision};
use super::{Decision, Governance, GovernanceError, Tier, TierInputs};
use crate::keys::KeyId;
use crate::timestamp::Timestamp;

/// What the authority check needs to know about a proposal (remediation implements it).
pub trait Proposed {
    /// SHA-256 of the proposal's deterministic CBOR statement.
    fn digest(&self) -> [u8; 32];
    /// What the tier derivation sees.
    fn tier_inputs(&self) -> TierInputs;
    /// The tier written in the proposal statement when it was proposed.
    fn recorded_tier(&self) -> Tier;
    /// The identity that requested the run (person or agent name).
    fn proposer(&self) -> &str;
    /// Publisher keys that signed the capsule that proposed it.
    fn capsule_signers(&self) -> &[KeyId];
    /// The trust root's names of those publishers (none when not recorded).
    fn capsule_publishers(&self) -> &[String] {
        &[]
    }
    /// When it was proposed.
    fn proposed_at(&self) -> Timestamp;
}

/// Why one approval counted or not (recorded in evidence, shown by reports).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalVerdict {
    /// The person the approval names.
    pub person: String,
    /// The key that signed it.
    pub key: KeyId,
    /// What it says.
    pub decision: ApprovalDecision,
    /// True when it counted (an approval towards the quorum, an eligible deny, an eligible break-glass).
    pub counted: bool,
    /// Why it did not count.
    pub why_not: Option<String>,
}

/// Proof that the authority check passed for this proposal under the
/// governance in force. Its fields are private: only [`authorize`] builds
/// one, and apply accepts nothing else.
///
/// ```compile_fail,E0451
/// use edge_runner::governance::{Authorized, Tier};
/// // No constructor outside the governance module: this does not compile.
/// let forged: Authorized<()> = Authorized {
///     proposal: (),
///     tier: Tier::AutoMerge,
///     approvers: Vec::new(),
///     break_glass: false,
///     verdicts: Vec::new(),
/// };
/// ```
#[derive(Debug)]
pub struct Authorized<P> {
    proposal: P,
    tier: Tier,
    approvers: Vec<String>,
    break_glass: bool,
    verdicts: Vec<ApprovalVerdict>,
    decision: Decision,
}

impl<P> Authorized<P> {
    /// The authorized proposal.
    pub fn proposal(&self) -> &P {
        &self.proposal
    }
    /// The tier it was authorized at (re-derived at authorization time).
    pub fn tier(&self) -> Tier {
        self.tier
    }
    /// The persons whose approvals counted, in the order given.
    pub fn approvers(&self) -> &[String] {
        &self.approvers
    }
    /// True when one break-glass person authorized it alone.
    pub fn break_glass(&self) -> bool {
        self.break_glass
    }
    /// Every approval's verdict, in the order given.
    pub fn verdicts(&self) -> &[ApprovalVerdict] {
        &self.verdicts
    }
    /// The tier decision re-derived under the governance in force.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }
    /// Gives the proposal back.
    pub fn into_proposal(self) -> P {
        self.proposal
    }
}

/// A refused authorization: the proposal back, why, and each approval's verdict.
#[derive(Debug)]
pub struct Refusal<P> {
    /// The proposal, returned.
    pub proposal: P,
    /// Why it is not authorized (boxed: the refusal texts carry every verdict).
    pub error: Box<GovernanceError>,
    /// Each approval's verdict.
    pub verdicts: Vec<ApprovalVerdict>,
}

fn short(digest: &[u8; 32]) -> String {
    hex::encode(&digest[..8])
}

/// Checks `approvals` for `proposal` under `gov` at `now`, in this order
/// (docs/governance.md §9.2): the tier is re-derived now (never below the
/// recorded tier); each approval is judged (proposal digest, roster key,
/// strict signature, person unexpired, approval unexpired and within the
/// tier's lifetime, signed for this tier or higher, person allowed the tier,
/// not the proposer, not a capsule signer, not barred, one count per person);
/// an eligible deny vetoes; an eligible break-glass authorizes alone; else the
/// quorum of distinct persons, the required groups and the delay must hold.
pub fn authorize<P: Proposed>(
    gov: &Governance,
    proposal: P,
    approvals: &[Approval],
    now: Timestamp,
) -> Result<Authorized<P>, Refusal<P>> {
    let decision = gov.derive(&proposal.tier_inputs());
    let tier = decision.tier.max(proposal.recorded_tier());
    let rule = gov.rule(tier);
    let digest = proposal.digest();
    let mut verdicts = Vec::with_capacity(approvals.len());
    let mut counted: Vec<String> = Vec::new();
    let mut counted_set: BTreeSet<String> = BTreeSet::new();
    let mut deny: Option<(String, String)> = None;
    let mut glass: Option<String> = None;
    for a in approvals {
        let why_not = judge(gov, &proposal, a, tier, now);
        let s = a.statement();
        let mut verdict = ApprovalVerdict {
            person: s.person.clone(),
            key: a.key_id(),
            decision: s.decision,
            counted: false,
            why_not,
        };
        if verdict.why_not.is_none() {
            match s.decision {
                ApprovalDecision::Deny => {
                    verdict.counted = true;
                    if deny.is_none() {
                        deny = Some((s.person.clone(), s.reason.clone()));
                    }
                }
                ApprovalDecision::BreakGlass => {
                    verdict.counted = true;
                    if glass.is_none() {
                        glass = Some(s.person.clone());
                    }
                }
                ApprovalDecision::Approve => {
                    if counted_set.insert(s.person.clone()) {
                        verdict.counted = true;
                        counted.push(s.person.clone());
                    } else {
                        verdict.why_not = Some(format!(
                            "`{}` is already counted (one person counts once, whatever their keys)",
                            s.person
                        ));
                    }
                }
            }
        }
        verdicts.push(verdict);
    }
    let refuse = |proposal: P, error: GovernanceError, verdicts: Vec<ApprovalVerdict>| {
        Err(Refusal {
            proposal,
            error: Box::new(error),
            verdicts,
        })
    };
    if let Some((person, reason)) = deny {
        return refuse(
            proposal,
            GovernanceError::Denied {
                proposal: short(&digest),
                person,
                reason,
            },
            verdicts,
        );
    }
    if let Some(person) = glass {
        return Ok(Authorized {
            proposal,
            tier,
            approvers: vec![person],
            break_glass: true,
            verdicts,
            decision,
        });
    }
    if counted.len() < rule.approvals as usize {
        let not_counted: Vec<String> = verdicts
            .iter()
            .filter_map(|v| v.why_not.as_ref().map(|w| format!("{}: {w}", v.person)))
            .collect();
        return refuse(
            proposal,
            GovernanceError::Quorum {
                proposal: short(&digest),
                tier,
                version: gov.version(),
                have: counted.len(),
                needed: rule.approvals,
                counted: if counted.is_empty() {
                    "none".into()
                } else {
                    counted.join(", ")
                },
                not_counted: if not_counted.is_empty() {
                    "none".into()
                } else {
                    not_counted.join("; ")
                },
            },
            verdicts,
        );
    }
    for group in &rule.groups {
        let met = counted
            .iter()
            .filter_map(|p| gov.person(p))
            .any(|p| p.groups.contains(group));
        if !met {
            return refuse(
                proposal,
                GovernanceError::GroupMissing {
                    proposal: short(&digest),
                    tier,
                    group: group.clone(),
                    counted: if counted.is_empty() {
                        "none".into()
                    } else {
                        counted.join(", ")
                    },
                },
                verdicts,
            );
        }
    }
    let proposed_at = proposal.proposed_at();
    let not_before = Timestamp(proposed_at.0.saturating_add(rule.delay_secs));
    if now < not_before {
        return refuse(
            proposal,
            GovernanceError::Delay {
                proposal: short(&digest),
                tier,
                delay: rule.delay_secs,
                proposed_at: proposed_at.to_string(),
                not_before: not_before.to_string(),
            },
            verdicts,
        );
    }
    Ok(Authorized {
        proposal,
        tier,
        approvers: counted,
        break_glass: false,
        verdicts,
        decision,
    })
}

/// Why one approval does not count, or `None` when its signer is eligible.
fn judge<P: Proposed>(
    gov: &Governance,
    proposal: &P,
    a: &Approval,
    tier: Tier,
    now: Timestamp,
) -> Option<String> {
    let s = a.statement();
    let digest = proposal.digest();
    if s.proposal != digest {
        return Some(format!(
            "approves proposal {}, not this one ({})",
            short(&s.proposal),
            short(&digest)
        ));
    }
    let key = a.key_id();
    let Some(person) = gov.persons().iter().find(|p| p.has_key(&key)) else {
        return Some(format!(
            "key {} is not in the roster of governance v{}",
            key.short(),
            gov.version()
        ));
    };
    if person.name != s.person {
        return Some(format!(
            "is signed with key {} of `{}` but names `{}`",
            key.short(),
            person.name,
            s.person
        ));
    }
    let Some(public) = person.keys.iter().find(|k| k.id() == key) else {
        return Some(format!("key {} is not in the roster", key.short()));
    };
    if !a.verifies_under(public) {
        return Some(format!(
            "signature does not verify under key {} of `{}`; the approval was forged or altered",
            key.short(),
            person.name
        ));
    }
    if now >= person.expires {
        return Some(format!(
            "`{}` expired from the roster at {}",
            person.name, person.expires
        ));
    }
    if s.signed_at > now {
        return Some(format!("is signed at {}, in the future", s.signed_at));
    }
    if now >= s.expires {
        return Some(format!("expired at {}", s.expires));
    }
    let lifetime = gov.rule(tier).lifetime_secs;
    if now.0.saturating_sub(s.signed_at.0) > lifetime {
        return Some(format!(
            "was signed at {}, longer ago than tier {tier}'s approval lifetime of {lifetime} s",
            s.signed_at
        ));
    }
    if s.tier < tier {
        return Some(format!(
            "was signed for tier {}, but the proposal is now tier {tier} under governance v{}",
            s.tier,
            gov.version()
        ));
    }
    match s.decision {
        ApprovalDecision::BreakGlass if !person.break_glass => {
            return Some(format!(
                "`{}` may not break glass (the roster does not flag them)",
                person.name
            ));
        }
        ApprovalDecision::BreakGlass => {}
        _ if !person.tiers.contains(&tier) => {
            let may: Vec<&str> = person.tiers.iter().map(|t| t.as_str()).collect();
            return Some(format!(
                "`{}` may not approve tier {tier} (may approve: {})",
                person.name,
                if may.is_empty() {
                    "none".into()
                } else {
                    may.join(", ")
                }
            ));
        }
        _ => {}
    }
    if person.name == proposal.proposer() {
        return Some(format!("`{}` is the proposer", person.name));
    }
    if let Some(k) = proposal
        .capsule_signers()
        .iter()
        .find(|k| person.has_key(k))
    {
        return Some(format!(
            "`{}` signed the capsule that proposed it (key {})",
            person.name,
            k.short()
        ));
    }
    for barred in &person.never_approve_for {
        let hit = *barred == proposal.proposer()
            || proposal.capsule_publishers().contains(barred)
            || proposal
                .capsule_signers()
                .iter()
                .any(|k| hex::encode(k.0) == *barred);
        if hit {
            return Some(format!(
                "`{}` must never approve for `{barred}`",
                person.name
            ));
        }
    }
    None
}
