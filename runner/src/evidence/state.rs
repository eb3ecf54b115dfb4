//! The resume state a checkpoint record carries (`docs/evidence-format.md`
//! §6.1): the Merkle frontier and the cross-record rules' state after the
//! records it covers. A runner opening its log starts from the newest one and
//! verifies only the records after it; the verifier recomputes the state at
//! every checkpoint and fails a log whose signed state differs, so resuming
//! and re-reading everything always agree.

use ciborium::Value;

use super::merkle::{Frontier, Hash};
use super::verify::Rules;
use crate::cbor::{MapReader, as_u64, text_map};
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
    if let Some((name, before, module)) = &rules.undo {
        let mark = match before {
            Some((version, digest)) => Value::Array(vec![
                Value::Text(version.to_string()),
                Value::Bytes(digest.to_vec()),
            ]),
            None => Value::Null,
        };
        fields.push((
            "undo",
            Value::Array(vec![
                Value::Text(name.clone()),
                mark,
                Value::Bytes(module.to_vec()),
            ]),
        ));
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
    text_map(fields)
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
    ])?;
    let key = map
        .bytes("runner-key")
        .ok()
        .and_then(PublicKey::from_bytes)
        .ok_or("`state` has no valid `runner-key`")?;
    let digest = |v: &Value, what: &str| -> Result<Hash, String> {
        match v {
            Value::Bytes(b) => b
                .as_slice()
                .try_into()
                .map_err(|_| format!("{what} is not 32 bytes")),
            _ => Err(format!("{what} is not a byte string")),
        }
    };
    let Some(Value::Array(items)) = map.get("frontier") else {
        return Err("`state` has no `frontier` array".into());
    };
    let roots = items
        .iter()
        .map(|v| digest(v, "a `frontier` hash"))
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
    let last_verified = match map.get("last-verified") {
        None => None,
        Some(Value::Array(pair)) => match pair.as_slice() {
            [seq, module] => Some((
                as_u64(seq).ok_or("`last-verified` sequence number is not an unsigned integer")?,
                digest(module, "`last-verified` module")?,
            )),
            _ => return Err("`last-verified` is not [seq, module]".into()),
        },
        Some(_) => return Err("`last-verified` is not [seq, module]".into()),
    };
    let open_run = match map.get("open-run") {
        None => None,
        Some(Value::Array(pair)) => match pair.as_slice() {
            [seq, module] => Some((
                as_u64(seq).ok_or("`open-run` sequence number is not an unsigned integer")?,
                digest(module, "`open-run` module")?,
            )),
            _ => return Err("`open-run` is not [seq, module]".into()),
        },
        Some(_) => return Err("`open-run` is not [seq, module]".into()),
    };
    let undo = match map.get("undo") {
        None => None,
        Some(Value::Array(parts)) => match parts.as_slice() {
            [Value::Text(name), mark, module] => {
                let before = match mark {
                    Value::Null => None,
                    Value::Array(pair) => match pair.as_slice() {
                        [Value::Text(version), digest_value] => Some((
                            semver::Version::parse(version)
                                .map_err(|e| format!("`undo` version: {e}"))?,
                            digest(digest_value, "`undo` module")?,
                        )),
                        _ => return Err("`undo` mark is not [version, sha256] or null".into()),
                    },
                    _ => return Err("`undo` mark is not [version, sha256] or null".into()),
                };
                Some((name.clone(), before, digest(module, "`undo` module")?))
            }
            _ => return Err("`undo` is not [name, mark, module]".into()),
        },
        Some(_) => return Err("`undo` is not [name, mark, module]".into()),
    };
    Ok((
        tree,
        Rules {
            undo,
            high_water,
            last_verified,
            open_run,
        },
        key,
    ))
}
