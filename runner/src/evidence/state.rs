//! The resume state a checkpoint record carries (`docs/evidence-format.md`
//! §6.1): the Merkle frontier and the cross-record rules' state after the
//! records it covers. A runner opening its log starts from the newest one and
//! verifies only the records after it; the verifier recomputes the state at
//! every checkpoint and fails a log whose signed state differs, so resuming
//! and re-reading everything always agree.

use ciborium::Value;

use super::merkle::{Frontier, Hash};
use super::verify::CapsuleMark;
use super::verify::Rules;
use crate::cbor::{MapReader, as_u64, bytes32, text_map};
use crate::keys::PublicKey;
use crate::rollback::HighWater;

/// The state after the records `tree` covers, with `key` signing the
/// records after them, as the `state` field holds it.
pub(super) fn state_value(tree: &Frontier, rules: &Rules, key: &PublicKey) -> Value {
    let mut fields = vec![
        ("runner-key", Value::Bytes(key.as_bytes().to_vec())),
        (
            "frontier",
            Value::Array(
                tree.subtree_roots()
                    .map(|h| Value::Bytes(h.to_vec()))
                    .collect(),
            ),
        ),
        ("high-water", rules.high_water.to_value()),
    ];
    if let Some((seq, module)) = rules.last_verified {
        fields.push((
            "last-verified",
            Value::Array(vec![
                Value::Integer(seq.into()),
                Value::Bytes(module.to_vec()),
            ]),
        ));
    }
    if let Some(undo) = &rules.undo {
        fields.push(("undo", undo_value(undo)));
    }
    if let Some((seq, module)) = rules.open_run {
        fields.push((
            "open-run",
            Value::Array(vec![
                Value::Integer(seq.into()),
                Value::Bytes(module.to_vec()),
            ]),
        ));
    }
    if !rules.remediation.is_empty() {
        fields.push(("remediation", rules.remediation.to_value()));
    }
    // Absent while the log has shown no job, so the state of a log without
    // jobs is what it was before jobs existed.
    fields.extend(rules.jobs.to_fields());
    text_map(fields)
}

/// `[name, [version, module-sha256] / null, module-sha256]`, as `undo` holds it.
pub(super) fn undo_value((name, before, module): &(String, CapsuleMark, Hash)) -> Value {
    let mark = match before {
        Some((version, digest)) => Value::Array(vec![
            Value::Text(version.to_string()),
            Value::Bytes(digest.to_vec()),
        ]),
        None => Value::Null,
    };
    Value::Array(vec![
        Value::Text(name.clone()),
        mark,
        Value::Bytes(module.to_vec()),
    ])
}

/// Reads a `state` field for a checkpoint covering `size` records.
pub(super) fn read_state(value: &Value, size: u64) -> Result<(Frontier, Rules, PublicKey), String> {
    let map = MapReader::new("`state`", value)?;
    map.only(&[
        "runner-key",
        "frontier",
        "high-water",
        "last-verified",
        "open-run",
        "undo",
        "remediation",
        "jobs",
        "accepted-jobs",
        "shed-until",
    ])?;
    let key = map
        .bytes("runner-key")
        .ok()
        .and_then(PublicKey::from_bytes)
        .ok_or("`state` has no valid `runner-key`")?;
    let Some(Value::Array(items)) = map.get("frontier") else {
        return Err("`state` has no `frontier` array".into());
    };
    let roots = items
        .iter()
        .map(|v| bytes32(v, "a `frontier` hash"))
        .collect::<Result<Vec<_>, _>>()?;
    let tree = Frontier::from_subtree_roots(size, &roots).ok_or_else(|| {
        format!(
            "`frontier` holds {} hashes, but a tree of {size} records has {}",
            roots.len(),
            size.count_ones()
        )
    })?;
    let high_water =
        HighWater::from_value(map.get("high-water").ok_or("`state` has no `high-water`")?)?;
    let last_verified = map
        .get("last-verified")
        .map(|v| seq_and_module(v, "last-verified"))
        .transpose()?;
    let open_run = map
        .get("open-run")
        .map(|v| seq_and_module(v, "open-run"))
        .transpose()?;
    let undo = map.get("undo").map(read_undo).transpose()?;
    let remediation = map
        .get("remediation")
        .map(super::remediation_rules::RemediationRules::from_value)
        .transpose()?
        .unwrap_or_default();
    let jobs = super::job_rules::JobRules::from_state(&map)?;
    Ok((
        tree,
        Rules {
            undo,
            high_water,
            last_verified,
            open_run,
            remediation,
            jobs,
        },
        key,
    ))
}

/// `[seq, module-sha256]`, as `last-verified` and `open-run` hold them.
pub(super) fn seq_and_module(value: &Value, what: &str) -> Result<(u64, Hash), String> {
    match value {
        Value::Array(pair) => match pair.as_slice() {
            [seq, module] => Ok((
                as_u64(seq).ok_or_else(|| {
                    format!("`{what}` sequence number is not an unsigned integer")
                })?,
                bytes32(module, &format!("`{what}` module"))?,
            )),
            _ => Err(format!("`{what}` is not [seq, module]")),
        },
        _ => Err(format!("`{what}` is not [seq, module]")),
    }
}

/// `[name, [version, module-sha256] / null, module-sha256]`, as `undo` holds it.
pub(super) fn read_undo(value: &Value) -> Result<(String, CapsuleMark, Hash), String> {
    let bad = || "`undo` is not [name, mark, module]".to_string();
    let Value::Array(parts) = value else {
        return Err(bad());
    };
    let [Value::Text(name), mark, module] = parts.as_slice() else {
        return Err(bad());
    };
    let before = match mark {
        Value::Null => None,
        Value::Array(pair) => match pair.as_slice() {
            [Value::Text(version), digest] => Some((
                semver::Version::parse(version).map_err(|e| format!("`undo` version: {e}"))?,
                bytes32(digest, "`undo` mark module")?,
            )),
            _ => return Err("`undo` mark is not [version, sha256] or null".into()),
        },
        _ => return Err("`undo` mark is not [version, sha256] or null".into()),
    };
    Ok((name.clone(), before, bytes32(module, "`undo` module")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::merkle::leaf_hash;
    use crate::keys::SecretKey;

    /// Every part of the rules' state survives the round trip, so a runner
    /// resumes with exactly what a full read would give (a field the reader
    /// does not know would make every open fall back to reading everything).
    #[test]
    fn every_part_of_the_state_round_trips() {
        let v = |t: &str| semver::Version::parse(t).unwrap();
        let mut rules = Rules::default();
        rules
            .high_water
            .accept("db-check", &v("1.2.0"), [1; 32], "root", 2)
            .unwrap();
        rules
            .high_water
            .pin_root("root", 2, [3; 32], Some((&[4; 32], &[[5; 32]][..])))
            .unwrap();
        rules
            .high_water
            .accept_governance("site-governance", 3, [6; 32])
            .unwrap();
        rules.last_verified = Some((7, [1; 32]));
        rules.open_run = Some((8, [1; 32]));
        rules.undo = Some(("db-check".into(), Some((v("1.1.0"), [9; 32])), [1; 32]));
        let mut counted = std::collections::BTreeSet::new();
        counted.insert("alice".to_string());
        rules.remediation.proposals.insert(
            [6; 32],
            crate::evidence::remediation_rules::ProposalMark {
                tier: "change-control".into(),
                counted,
                authorized: Some(5),
                started: Some(6),
                awaiting_review: true,
            },
        );
        rules.remediation.open_apply = Some(([6; 32], 6));
        // Two open jobs (one mid-run, one with an undo), ids accepted out of order.
        rules.jobs.accepted = vec![(1, 3), (5, 5)];
        rules.jobs.shed_until = Some(1_800_000_000_000);
        rules.jobs.lanes.insert(
            2,
            std::sync::Arc::new(crate::evidence::job_rules::Lane {
                accepted: 4,
                restarted: true,
                checked: Some(6),
                last_verified: Some((6, [1; 32])),
                started: Some(7),
                open_run: Some((7, [1; 32])),
                undo: Some(("db-check".into(), None, [1; 32])),
                records: vec![6, 7],
            }),
        );
        rules.jobs.lanes.insert(
            5,
            std::sync::Arc::new(crate::evidence::job_rules::Lane {
                accepted: 8,
                ..Default::default()
            }),
        );
        let mut tree = Frontier::default();
        for i in 0..9u8 {
            tree.push(leaf_hash(&[i]));
        }
        let key = SecretKey::generate().unwrap().public();
        let value = state_value(&tree, &rules, &key);
        let (tree2, rules2, key2) = read_state(&value, 9).unwrap();
        assert_eq!((tree2.clone(), key2), (tree, key));
        assert_eq!(
            crate::cbor::encode(&state_value(&tree2, &rules2, &key2)).unwrap(),
            crate::cbor::encode(&value).unwrap()
        );
        assert_eq!(rules2.undo, rules.undo);
        assert_eq!(rules2.remediation, rules.remediation);
        assert_eq!(rules2.high_water, rules.high_water);
        assert_eq!(rules2.jobs, rules.jobs);
        // A tree whose size needs another number of subtrees does not take this frontier.
        assert!(read_state(&value, 11).is_err());
    }
}
