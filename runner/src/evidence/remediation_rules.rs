//! The cross-record rules for remediation (`docs/remediation.md` §7), applied
//! by the writer before it signs and by the verifier: a proposal's statement
//! matches its digest; every `authorization` names distinct persons whose
//! `approval` records counted, at least its tier's floor (change-control two,
//! single-approver one, break-glass one); every `apply-started` follows an
//! authorization of that proposal; nothing is applied twice; an `applied`
//! closes the open apply. The governance-specific re-check of each approval
//! (signatures under the roster in force) is the offline verifier's, from the
//! bundled governance chain (`crate::audit`).

use std::collections::{BTreeMap, BTreeSet};

use ciborium::Value;
use sha2::{Digest, Sha256};

use super::events::Event;
use crate::cbor::{MapReader, as_u64, bytes32, text_map};

/// What the log shows about one proposal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProposalMark {
    /// The tier recorded in the `proposal` record.
    pub tier: String,
    /// Persons whose `approval` records counted.
    pub counted: BTreeSet<String>,
    /// The `authorization` record, once authorized.
    pub authorized: Option<u64>,
    /// The `apply-started` record, once started (a proposal applies once).
    pub started: Option<u64>,
    /// True while a break-glass authorization awaits a complete `post-review`.
    pub awaiting_review: bool,
}

/// The remediation part of the rules' state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemediationRules {
    /// Every proposal recorded, by digest.
    pub proposals: BTreeMap<[u8; 32], ProposalMark>,
    /// The `apply-started` (proposal, record) not yet closed by `applied`.
    pub open_apply: Option<([u8; 32], u64)>,
}

/// Approvals a tier needs at the least, whatever the governance says.
pub fn tier_floor(tier: &str) -> u64 {
    match tier {
        "change-control" => 2,
        "single-approver" => 1,
        _ => 0,
    }
}

fn rank(tier: &str) -> u8 {
    match tier {
        "auto-merge" => 0,
        "notify-and-proceed" => 1,
        "single-approver" => 2,
        _ => 3,
    }
}

fn short(d: &[u8; 32]) -> String {
    hex::encode(&d[..8])
}

impl RemediationRules {
    /// Applies record `seq`'s `event`, or says why the record breaks a rule.
    pub fn apply(&mut self, seq: u64, event: &Event) -> Result<(), String> {
        let known = |rules: &Self, p: &[u8; 32], what: &str| -> Result<(), String> {
            if rules.proposals.contains_key(p) {
                Ok(())
            } else {
                Err(format!(
                    "`{what}` names proposal {}, which no `proposal` record before it states",
                    short(p)
                ))
            }
        };
        match event {
            Event::ProposalRecorded(p) => {
                let digest: [u8; 32] = Sha256::digest(&p.statement).into();
                if digest != p.digest {
                    return Err(format!(
                        "`proposal` digest {} is not the SHA-256 of its statement ({})",
                        short(&p.digest),
                        short(&digest)
                    ));
                }
                if self.proposals.contains_key(&p.digest) {
                    return Err(format!("proposal {} is recorded twice", short(&p.digest)));
                }
                self.proposals.insert(
                    p.digest,
                    ProposalMark {
                        tier: p.tier.clone(),
                        ..ProposalMark::default()
                    },
                );
            }
            Event::ApprovalChecked(a) => {
                known(self, &a.proposal, "approval")?;
                if a.counted
                    && let Some(mark) = self.proposals.get_mut(&a.proposal)
                {
                    mark.counted.insert(a.person.clone());
                }
            }
            Event::AuthorizationRecorded(auth) => {
                known(self, &auth.proposal, "authorization")?;
                let mark = self
                    .proposals
                    .get_mut(&auth.proposal)
                    .ok_or("unreachable: proposal checked above")?;
                let distinct: BTreeSet<&String> = auth.approvers.iter().collect();
                if distinct.len() != auth.approvers.len() {
                    return Err(format!(
                        "`authorization` of proposal {} lists a person twice",
                        short(&auth.proposal)
                    ));
                }
                if let Some(p) = auth.approvers.iter().find(|p| !mark.counted.contains(*p)) {
                    return Err(format!(
                        "`authorization` of proposal {} counts `{p}`, whose approval is not recorded as counted before it",
                        short(&auth.proposal)
                    ));
                }
                if rank(&auth.tier) < rank(&mark.tier) {
                    return Err(format!(
                        "`authorization` of proposal {} is at tier {}, below the proposal's tier {}",
                        short(&auth.proposal),
                        auth.tier,
                        mark.tier
                    ));
                }
                let need = if auth.break_glass {
                    1
                } else {
                    tier_floor(&auth.tier).max(auth.required)
                };
                if (auth.approvers.len() as u64) < need {
                    return Err(format!(
                        "`authorization` of proposal {} at tier {} has {} approver(s), fewer than the {need} the tier requires",
                        short(&auth.proposal),
                        auth.tier,
                        auth.approvers.len()
                    ));
                }
                mark.authorized = Some(seq);
                mark.awaiting_review = auth.break_glass;
            }
            Event::ApplyStarted(start) => {
                known(self, &start.proposal, "apply-started")?;
                let mark = self
                    .proposals
                    .get_mut(&start.proposal)
                    .ok_or("unreachable: proposal checked above")?;
                if let Some(first) = mark.started {
                    return Err(format!(
                        "`apply-started` applies proposal {} a second time (first applied at record {first}); a proposal applies once",
                        short(&start.proposal)
                    ));
                }
                if mark.authorized != Some(start.authorization) {
                    return Err(format!(
                        "`apply-started` of proposal {} names record {} as its authorization, but {}",
                        short(&start.proposal),
                        start.authorization,
                        mark.authorized.map_or_else(
                            || "no `authorization` of that proposal precedes it".to_string(),
                            |a| format!("its authorization is record {a}")
                        )
                    ));
                }
                if let Some((p, at)) = self.open_apply {
                    return Err(format!(
                        "`apply-started` while the apply of proposal {} (record {at}) is still open",
                        short(&p)
                    ));
                }
                mark.started = Some(seq);
                self.open_apply = Some((start.proposal, seq));
            }
            Event::Applied(done) => {
                if self.open_apply != Some((done.proposal, done.apply_started)) {
                    return Err(format!(
                        "`applied` for proposal {} closes no open `apply-started` (record {})",
                        short(&done.proposal),
                        done.apply_started
                    ));
                }
                self.open_apply = None;
            }
            Event::VerifyResult(v) => self.started(&v.proposal, "verify-result")?,
            Event::RolledBack(r) => self.started(&r.proposal, "rollback")?,
            Event::Notified(n) => self.started(&n.proposal, "notify")?,
            Event::PostReview(r) => {
                known(self, &r.proposal, "post-review")?;
                if r.complete
                    && let Some(mark) = self.proposals.get_mut(&r.proposal)
                {
                    mark.awaiting_review = false;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn started(&self, p: &[u8; 32], what: &str) -> Result<(), String> {
        match self.proposals.get(p) {
            Some(m) if m.started.is_some() => Ok(()),
            _ => Err(format!(
                "`{what}` names proposal {}, which was never applied",
                short(p)
            )),
        }
    }

    /// True when nothing is recorded (the state then omits the field).
    pub fn is_empty(&self) -> bool {
        self.proposals.is_empty() && self.open_apply.is_none()
    }

    /// The state as the checkpoint's `remediation` field holds it.
    pub fn to_value(&self) -> Value {
        let opt = |v: Option<u64>| v.map_or(Value::Null, |s| Value::Integer(s.into()));
        let proposals = self
            .proposals
            .iter()
            .map(|(d, m)| {
                Value::Array(vec![
                    Value::Bytes(d.to_vec()),
                    Value::Text(m.tier.clone()),
                    Value::Array(m.counted.iter().cloned().map(Value::Text).collect()),
                    opt(m.authorized),
                    opt(m.started),
                    Value::Bool(m.awaiting_review),
                ])
            })
            .collect();
        text_map([
            ("proposals", Value::Array(proposals)),
            (
                "open-apply",
                self.open_apply.map_or(Value::Null, |(d, s)| {
                    Value::Array(vec![Value::Bytes(d.to_vec()), Value::Integer(s.into())])
                }),
            ),
        ])
    }

    /// Reads the checkpoint's `remediation` field.
    pub fn from_value(value: &Value) -> Result<Self, String> {
        let m = MapReader::new("`remediation`", value)?;
        m.only(&["proposals", "open-apply"])?;
        let opt = |v: &Value| -> Result<Option<u64>, String> {
            match v {
                Value::Null => Ok(None),
                v => as_u64(v)
                    .map(Some)
                    .ok_or_else(|| "`remediation`: a record number is not a number".into()),
            }
        };
        let mut proposals = BTreeMap::new();
        let Some(Value::Array(items)) = m.get("proposals") else {
            return Err("`remediation` has no `proposals` array".into());
        };
        for item in items {
            let Value::Array(parts) = item else {
                return Err("`remediation`: a proposal is not an array".into());
            };
            let [
                d,
                Value::Text(tier),
                Value::Array(counted),
                auth,
                started,
                Value::Bool(review),
            ] = parts.as_slice()
            else {
                return Err(
                    "`remediation`: a proposal is not [digest, tier, counted, authorized, started, awaiting-review]"
                        .into(),
                );
            };
            let counted = counted
                .iter()
                .map(|c| match c {
                    Value::Text(t) => Ok(t.clone()),
                    _ => Err("`remediation`: a counted person is not text".to_string()),
                })
                .collect::<Result<BTreeSet<_>, _>>()?;
            proposals.insert(
                bytes32(d, "`remediation` proposal digest")?,
                ProposalMark {
                    tier: tier.clone(),
                    counted,
                    authorized: opt(auth)?,
                    started: opt(started)?,
                    awaiting_review: *review,
                },
            );
        }
        let open_apply = match m.get("open-apply") {
            Some(Value::Null) | None => None,
            Some(Value::Array(pair)) => match pair.as_slice() {
                [d, s] => Some((
                    bytes32(d, "`open-apply` digest")?,
                    as_u64(s).ok_or("`open-apply` record is not a number")?,
                )),
                _ => return Err("`open-apply` is not [digest, record]".into()),
            },
            Some(_) => return Err("`open-apply` is not [digest, record]".into()),
        };
        Ok(Self {
            proposals,
            open_apply,
        })
    }
}
