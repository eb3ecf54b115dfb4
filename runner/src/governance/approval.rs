//! Approvals: portable COSE_Sign1 objects by one person's key over exactly
//! one proposal digest (docs/governance.md §8). Parsing checks structure
//! only; whether an approval counts is decided by [`super::authorize`].

use ciborium::Value;
use coset::{CoseSign1, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable};

use super::{GovernanceError, Tier};
use crate::cbor;
use crate::keys::{KeyId, SecretKey};
use crate::timestamp::Timestamp;

/// Largest approval file read, in bytes.
pub const MAX_APPROVAL_BYTES: usize = 64 * 1024;
/// Longest reason, in bytes.
pub const MAX_REASON_BYTES: usize = 4096;
/// COSE content type of an approval's payload.
pub const APPROVAL_CONTENT_TYPE: &str = "application/vnd.edge-runner.approval+cbor";
/// External AAD bound into every approval signature.
pub const APPROVAL_CONTEXT: &[u8] = b"edge-runner/approval/v1";

/// What an approval says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApprovalDecision {
    /// Counts towards the tier's quorum.
    Approve,
    /// Vetoes the proposal when its signer is eligible.
    Deny,
    /// Authorizes alone, by a person the roster flags for it.
    BreakGlass,
}

impl ApprovalDecision {
    /// As written in the payload.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalDecision::Approve => "approve",
            ApprovalDecision::Deny => "deny",
            ApprovalDecision::BreakGlass => "break-glass",
        }
    }

    /// Parses the payload form.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "approve" => ApprovalDecision::Approve,
            "deny" => ApprovalDecision::Deny,
            "break-glass" => ApprovalDecision::BreakGlass,
            _ => return None,
        })
    }
}

/// The signed statement of an approval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    /// SHA-256 of the proposal statement approved.
    pub proposal: [u8; 32],
    /// Approve, deny or break-glass.
    pub decision: ApprovalDecision,
    /// The tier the approver saw.
    pub tier: Tier,
    /// Why (required, non-empty).
    pub reason: String,
    /// The roster person signing.
    pub person: String,
    /// When it was signed.
    pub signed_at: Timestamp,
    /// Not valid from this time on.
    pub expires: Timestamp,
}

impl Statement {
    fn to_value(&self) -> Value {
        cbor::text_map([
            ("decision", Value::Text(self.decision.as_str().into())),
            ("expires", Value::Integer(self.expires.0.into())),
            ("format", Value::Integer(1.into())),
            ("person", Value::Text(self.person.clone())),
            ("proposal", Value::Bytes(self.proposal.to_vec())),
            ("reason", Value::Text(self.reason.clone())),
            ("signed-at", Value::Integer(self.signed_at.0.into())),
            ("tier", Value::Text(self.tier.as_str().into())),
        ])
    }

    fn from_value(value: &Value) -> Result<Self, String> {
        let map = cbor::MapReader::new("approval payload", value)?;
        map.only(&[
            "decision",
            "expires",
            "format",
            "person",
            "proposal",
            "reason",
            "signed-at",
            "tier",
        ])?;
        if map.uint("format")? != 1 {
            return Err("approval format is not 1".into());
        }
        let decision = map.text("decision")?;
        let tier = map.text("tier")?;
        let statement = Statement {
            proposal: cbor::bytes32(
                map.get("proposal").ok_or("approval has no `proposal`")?,
                "`proposal`",
            )?,
            decision: ApprovalDecision::parse(decision).ok_or_else(|| {
                format!("decision `{decision}` is not approve, deny or break-glass")
            })?,
            tier: Tier::parse(tier).ok_or_else(|| format!("tier `{tier}` is not a tier"))?,
            reason: map.text("reason")?.to_string(),
            person: map.text("person")?.to_string(),
            signed_at: Timestamp(map.uint("signed-at")?),
            expires: Timestamp(map.uint("expires")?),
        };
        statement.check()?;
        Ok(statement)
    }

    fn check(&self) -> Result<(), String> {
        if self.reason.trim().is_empty() {
            return Err("the reason is empty; an approval says why (`--reason`)".into());
        }
        if self.reason.len() > MAX_REASON_BYTES {
            return Err(format!(
                "the reason is over {MAX_REASON_BYTES} bytes; link to a longer write-up instead"
            ));
        }
        if self.person.is_empty() {
            return Err("the person is empty".into());
        }
        if self.expires <= self.signed_at {
            return Err("it expires before it was signed".into());
        }
        Ok(())
    }
}

/// A portable signed approval, structurally checked; not yet trusted.
#[derive(Clone, Debug)]
pub struct Approval {
    bytes: Vec<u8>,
    statement: Statement,
    key_id: KeyId,
    tbs: Vec<u8>,
    signature: Vec<u8>,
}

impl Approval {
    /// Signs `statement` with `key`, returning the approval (its bytes are the file).
    pub fn sign(statement: Statement, key: &SecretKey) -> Result<Approval, GovernanceError> {
        let err = |detail: String| GovernanceError::Approval {
            origin: "new approval".into(),
            detail,
        };
        statement.check().map_err(err)?;
        let payload = cbor::encode(&statement.to_value()).map_err(|e| err(e.to_string()))?;
        let protected = HeaderBuilder::new()
            .algorithm(crate::cose::WRITTEN_ALGORITHM)
            .key_id(key.id().0.to_vec())
            .content_type(APPROVAL_CONTENT_TYPE.to_string())
            .build();
        let sign1 = CoseSign1Builder::new()
            .protected(protected)
            .payload(payload)
            .create_signature(APPROVAL_CONTEXT, |tbs| key.sign(tbs).to_bytes().to_vec())
            .build();
        let encoded = sign1
            .to_tagged_vec()
            .map_err(|e| err(format!("encoding COSE_Sign1: {e}")))?;
        let (value, _) = cbor::decode_prefix(&encoded).map_err(|e| err(e.to_string()))?;
        let bytes = cbor::encode(&value).map_err(|e| err(e.to_string()))?;
        Approval::parse(&bytes, "new approval")
    }

    /// Decodes an approval strictly: deterministic CBOR, tag 18, protected
    /// `alg` (EdDSA or Ed25519), 32-byte `kid` and the approval content type
    /// and nothing else, an empty unprotected header, and a payload of exactly
    /// the statement's keys. No signature is checked here.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Approval, GovernanceError> {
        let err = |detail: String| GovernanceError::Approval {
            origin: origin.to_string(),
            detail,
        };
        if bytes.len() > MAX_APPROVAL_BYTES {
            return Err(err(format!(
                "{} bytes is over the {MAX_APPROVAL_BYTES}-byte limit",
                bytes.len()
            )));
        }
        cbor::decode_canonical(bytes).map_err(|e| err(e.to_string()))?;
        let sign1 = CoseSign1::from_tagged_slice(bytes)
            .map_err(|e| err(format!("not a tagged COSE_Sign1 (tag 18): {e}")))?;
        let header = &sign1.protected.header;
        if !header.crit.is_empty()
            || !header.iv.is_empty()
            || !header.partial_iv.is_empty()
            || !header.counter_signatures.is_empty()
            || !header.rest.is_empty()
        {
            return Err(err(
                "the protected header carries parameters other than alg, content type and kid"
                    .into(),
            ));
        }
        let alg = match &header.alg {
            Some(coset::RegisteredLabelWithPrivate::Assigned(a)) => *a as i64,
            Some(coset::RegisteredLabelWithPrivate::PrivateUse(a)) => *a,
            _ => return Err(err("no protected `alg`".into())),
        };
        if !crate::cose::is_ed25519_algorithm(alg) {
            return Err(err(format!(
                "COSE algorithm {alg}; approvals must be EdDSA (-8) or Ed25519 (-19)"
            )));
        }
        match &header.content_type {
            Some(coset::ContentType::Text(t)) if t == APPROVAL_CONTENT_TYPE => {}
            other => {
                return Err(err(format!(
                    "content type is {other:?}, expected \"{APPROVAL_CONTENT_TYPE}\""
                )));
            }
        }
        let key_id: [u8; 32] = header.key_id.as_slice().try_into().map_err(|_| {
            err("`kid` must be the 32-byte SHA-256 of the signer's public key".into())
        })?;
        if !sign1.unprotected.is_empty() {
            return Err(err("the unprotected header must be empty".into()));
        }
        let payload = sign1
            .payload
            .as_ref()
            .ok_or_else(|| err("no payload (detached payloads are not used)".into()))?;
        let value = cbor::decode_canonical(payload).map_err(|e| err(e.to_string()))?;
        let statement = Statement::from_value(&value).map_err(err)?;
        let tbs = sign1.tbs_data(APPROVAL_CONTEXT);
        Ok(Approval {
            bytes: bytes.to_vec(),
            statement,
            key_id: KeyId(key_id),
            tbs,
            signature: sign1.signature.clone(),
        })
    }

    /// The file bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The digest of the proposal it speaks for.
    pub fn proposal_digest(&self) -> [u8; 32] {
        self.statement.proposal
    }

    /// The person it names.
    pub fn person(&self) -> &str {
        &self.statement.person
    }

    /// The signed statement.
    pub fn statement(&self) -> &Statement {
        &self.statement
    }

    /// The key that signed it (by id; not yet checked).
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Whether the signature verifies strictly under `key`.
    pub fn verifies_under(&self, key: &crate::keys::PublicKey) -> bool {
        key.id() == self.key_id && key.verify_strict(&self.tbs, &self.signature)
    }
}
