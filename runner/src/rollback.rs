//! The rollback rule: a capsule or trust root never goes back, and a runner
//! stays with the trust store it is pinned to (its name, its version 1 and
//! the content of every version it used) until an operator re-anchors it.
//!
//! One [`HighWater`] mark and one [`RollbackError`] serve both sides: the trust
//! check refuses a capsule that would go below the mark (`trust::verify`), and
//! the offline verifier fails a log whose `capsule-verified` records show such
//! an acceptance (`evidence::verify_log`). The mark is derived from the
//! evidence log, so an auditor derives the same one. This module depends on
//! nothing else in the crate.

use std::collections::BTreeMap;
use std::fmt;

/// The highest capsule and trust root versions a runner has accepted and the
/// trust anchor it is pinned to, derived from its evidence log (so an auditor
/// can derive the same).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HighWater {
    capsules: BTreeMap<String, (semver::Version, [u8; 32])>,
    roots: BTreeMap<String, u64>,
    /// The trust root this runner is pinned to: the first one it used, or the
    /// one an operator re-anchored it to.
    anchor: Option<PinnedAnchor>,
    /// Policy digest of every trust root version used, by name and version.
    root_digests: BTreeMap<(String, u64), [u8; 32]>,
    /// Highest governance version used, with its digest, by governance name.
    governance: BTreeMap<String, (u64, [u8; 32])>,
}

/// A trust store's anchor as pinned: its name, and version 1's policy digest
/// and root key ids (which every later version descends from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedAnchor {
    /// The trust root's name.
    pub name: String,
    /// SHA-256 of version 1's policy, when the records name it.
    pub sha256: Option<[u8; 32]>,
    /// Version 1's root key ids, sorted, when the records name them.
    pub root_keys: Vec<[u8; 32]>,
}

/// An acceptance that would go below the high-water mark. Its text states the
/// fact; [`RollbackError::fix`] says what an operator does about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RollbackError {
    /// A lower capsule version than one already accepted.
    #[error("capsule `{name}` {version} is older than {highest}, which was already accepted")]
    CapsuleOlder {
        /// Capsule name.
        name: String,
        /// The version offered.
        version: semver::Version,
        /// The highest version accepted before.
        highest: semver::Version,
    },
    /// The same name and version as one already accepted, but different code.
    #[error(
        "capsule `{name}` {version} was already accepted with module {seen}, but this one is {offered}"
    )]
    VersionReused {
        /// Capsule name.
        name: String,
        /// The version.
        version: semver::Version,
        /// Module digest accepted before (hex).
        seen: String,
        /// Module digest offered now (hex).
        offered: String,
    },
    /// A trust root under another name than the pinned one.
    #[error("trust root `{offered}` is not `{pinned}`, the trust root this runner is pinned to")]
    RootRenamed {
        /// The pinned name.
        pinned: String,
        /// The name offered.
        offered: String,
    },
    /// The trust store descends from another version 1 than the pinned one.
    #[error(
        "trust root `{name}` descends from version 1 {offered} (root keys {offered_keys}), but this runner is pinned to version 1 {pinned} (root keys {pinned_keys})"
    )]
    AnchorChanged {
        /// The trust root's name.
        name: String,
        /// Pinned version 1 digest (hex).
        pinned: String,
        /// Pinned root key ids (short hex).
        pinned_keys: String,
        /// Offered version 1 digest (hex).
        offered: String,
        /// Offered root key ids (short hex).
        offered_keys: String,
    },
    /// The same trust root version as one already used, with other content.
    #[error(
        "trust root `{name}` v{version} was already used with policy {seen}, but this one is {offered}"
    )]
    RootVersionReused {
        /// Trust root name.
        name: String,
        /// The version.
        version: u64,
        /// Policy digest used before (hex).
        seen: String,
        /// Policy digest offered now (hex).
        offered: String,
    },
    /// A lower governance version than one already used.
    #[error("governance `{name}` v{version} is older than v{seen}, which was already used")]
    GovernanceOlder {
        /// Governance name.
        name: String,
        /// The version offered.
        version: u64,
        /// The highest version used before.
        seen: u64,
    },
    /// The same governance version as one already used, with other content.
    #[error(
        "governance `{name}` v{version} was already used with content {seen}, but this one is {offered}"
    )]
    GovernanceVersionReused {
        /// Governance name.
        name: String,
        /// The version.
        version: u64,
        /// Digest used before (hex).
        seen: String,
        /// Digest offered now (hex).
        offered: String,
    },
    /// A lower trust root version than one already used.
    #[error("trust root `{name}` v{version} is older than v{seen}, which was already used")]
    RootOlder {
        /// Trust root name.
        name: String,
        /// The version offered.
        version: u64,
        /// The highest version used before.
        seen: u64,
    },
}

impl RollbackError {
    /// What an operator does about it.
    pub fn fix(&self) -> String {
        match self {
            RollbackError::CapsuleOlder { highest, .. } => format!("run {highest} or later"),
            RollbackError::VersionReused { .. } => {
                "a version names exactly one module, so publish the change as a new version".into()
            }
            RollbackError::GovernanceOlder { seen, .. } => format!(
                "governance never goes back. Install v{seen} or later with `edge-runner governance install`"
            ),
            RollbackError::GovernanceVersionReused { .. } => {
                "a governance version names exactly one bundle, so sign the change as a new version".into()
            }
            RollbackError::RootOlder { seen, .. } => {
                format!("a trust root never goes back. Restore the trust store to v{seen} or later")
            }
            RollbackError::RootRenamed { .. }
            | RollbackError::AnchorChanged { .. }
            | RollbackError::RootVersionReused { .. } => {
                "the trust store was replaced. Restore the store this runner is pinned to; if the replacement is intended, record it first with `edge-runner trust re-anchor` (docs/capsule-format.md §8)".into()
            }
        }
    }
}

impl HighWater {
    /// Checks that trust root `name` `version` does not go below the mark.
    pub fn check_root(&self, name: &str, version: u64) -> Result<(), RollbackError> {
        match self.roots.get(name) {
            Some(&seen) if version < seen => Err(RollbackError::RootOlder {
                name: name.to_string(),
                version,
                seen,
            }),
            _ => Ok(()),
        }
    }

    /// Checks that governance `name` `version` (payload `digest`) does not go
    /// below the mark, nor reuse a used version for other content.
    pub fn check_governance(
        &self,
        name: &str,
        version: u64,
        digest: &[u8; 32],
    ) -> Result<(), RollbackError> {
        match self.governance.get(name) {
            Some(&(seen, _)) if version < seen => Err(RollbackError::GovernanceOlder {
                name: name.to_string(),
                version,
                seen,
            }),
            Some((seen, used)) if version == *seen && digest != used => {
                Err(RollbackError::GovernanceVersionReused {
                    name: name.to_string(),
                    version,
                    seen: hex::encode(used),
                    offered: hex::encode(digest),
                })
            }
            _ => Ok(()),
        }
    }

    /// Checks a use of governance `name` `version` and raises the mark to it.
    pub fn accept_governance(
        &mut self,
        name: &str,
        version: u64,
        digest: [u8; 32],
    ) -> Result<(), RollbackError> {
        self.check_governance(name, version, &digest)?;
        self.governance.insert(name.to_string(), (version, digest));
        Ok(())
    }

    /// The highest governance version used under `name`, with its digest.
    pub fn governance(&self, name: &str) -> Option<(u64, [u8; 32])> {
        self.governance.get(name).copied()
    }

    /// Checks that capsule `name` `version` with module `digest` does not go
    /// below the mark, nor reuse an accepted version for other code.
    pub fn check_capsule(
        &self,
        name: &str,
        version: &semver::Version,
        digest: &[u8; 32],
    ) -> Result<(), RollbackError> {
        let Some((highest, seen)) = self.capsules.get(name) else {
            return Ok(());
        };
        if version < highest {
            return Err(RollbackError::CapsuleOlder {
                name: name.to_string(),
                version: version.clone(),
                highest: highest.clone(),
            });
        }
        if version == highest && digest != seen {
            return Err(RollbackError::VersionReused {
                name: name.to_string(),
                version: version.clone(),
                seen: hex::encode(seen),
                offered: hex::encode(digest),
            });
        }
        Ok(())
    }

    /// Checks an acceptance of capsule `name` `version` (module `digest`)
    /// under trust root `root` `root_version`, and raises the mark to it.
    pub fn accept(
        &mut self,
        name: &str,
        version: &semver::Version,
        digest: [u8; 32],
        root: &str,
        root_version: u64,
    ) -> Result<(), RollbackError> {
        self.check_root(root, root_version)?;
        self.check_capsule(name, version, &digest)?;
        let root_entry = self.roots.entry(root.to_string()).or_insert(root_version);
        *root_entry = (*root_entry).max(root_version);
        let raise = self
            .capsules
            .get(name)
            .is_none_or(|(highest, _)| version > highest);
        if raise {
            self.capsules
                .insert(name.to_string(), (version.clone(), digest));
        }
        Ok(())
    }

    /// Puts capsule `name`'s mark back to `before` (what [`HighWater::capsule`]
    /// returned before an acceptance), undoing an acceptance of a capsule that
    /// never started.
    pub fn restore_capsule(&mut self, name: &str, before: Option<(semver::Version, [u8; 32])>) {
        match before {
            Some(entry) => {
                self.capsules.insert(name.to_string(), entry);
            }
            None => {
                self.capsules.remove(name);
            }
        }
    }

    /// Checks trust root `name` `version` (policy `digest`, descending from
    /// `anchor`: version 1's digest and root key ids) against the pinned anchor
    /// and the versions already used.
    pub fn check_anchor(
        &self,
        name: &str,
        version: u64,
        digest: &[u8; 32],
        anchor: Option<(&[u8; 32], &[[u8; 32]])>,
    ) -> Result<(), RollbackError> {
        if let Some(pin) = &self.anchor {
            if pin.name != name {
                return Err(RollbackError::RootRenamed {
                    pinned: pin.name.clone(),
                    offered: name.to_string(),
                });
            }
            if let (Some(pinned), Some((sha256, keys))) = (&pin.sha256, anchor)
                && (pinned != sha256 || pin.root_keys.as_slice() != keys)
            {
                let ids = |keys: &[[u8; 32]]| {
                    keys.iter()
                        .map(|k| hex::encode(&k[..8]))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(RollbackError::AnchorChanged {
                    name: name.to_string(),
                    pinned: hex::encode(pinned),
                    pinned_keys: ids(&pin.root_keys),
                    offered: hex::encode(sha256),
                    offered_keys: ids(keys),
                });
            }
        }
        match self.root_digests.get(&(name.to_string(), version)) {
            Some(seen) if seen != digest => Err(RollbackError::RootVersionReused {
                name: name.to_string(),
                version,
                seen: hex::encode(seen),
                offered: hex::encode(digest),
            }),
            _ => Ok(()),
        }
    }

    /// Checks as [`HighWater::check_anchor`], then pins the anchor (if none is
    /// pinned yet) and this version's digest.
    pub fn pin_root(
        &mut self,
        name: &str,
        version: u64,
        digest: [u8; 32],
        anchor: Option<(&[u8; 32], &[[u8; 32]])>,
    ) -> Result<(), RollbackError> {
        self.check_anchor(name, version, &digest, anchor)?;
        match &mut self.anchor {
            None => {
                self.anchor = Some(PinnedAnchor {
                    name: name.to_string(),
                    sha256: anchor.map(|(s, _)| *s),
                    root_keys: anchor.map(|(_, k)| k.to_vec()).unwrap_or_default(),
                });
            }
            Some(pin) if pin.sha256.is_none() => {
                if let Some((sha256, keys)) = anchor {
                    pin.sha256 = Some(*sha256);
                    pin.root_keys = keys.to_vec();
                }
            }
            Some(_) => {}
        }
        self.root_digests
            .insert((name.to_string(), version), digest);
        Ok(())
    }

    /// An operator's re-anchoring: pins `anchor` instead and forgets every
    /// trust root version used before (the new store starts its own count).
    pub fn reanchor(&mut self, anchor: PinnedAnchor) {
        self.roots.clear();
        self.root_digests.clear();
        self.anchor = Some(anchor);
    }

    /// The pinned trust anchor, if any.
    pub fn anchor(&self) -> Option<&PinnedAnchor> {
        self.anchor.as_ref()
    }

    /// The highest accepted version of capsule `name`, with its module digest.
    pub fn capsule(&self, name: &str) -> Option<&(semver::Version, [u8; 32])> {
        self.capsules.get(name)
    }

    /// The highest version of trust root `name` used.
    pub fn root(&self, name: &str) -> Option<u64> {
        self.roots.get(name).copied()
    }

    /// Every capsule name with its highest accepted version, by name.
    pub fn capsules(&self) -> impl Iterator<Item = (&str, &semver::Version)> {
        self.capsules.iter().map(|(n, (v, _))| (n.as_str(), v))
    }
}

impl HighWater {
    /// The marks as a deterministic-CBOR value (the `high-water` field of a
    /// checkpoint's resume state, `docs/evidence-format.md` §6.1): capsule
    /// marks `[name, version, module-sha256]` and trust root marks
    /// `[name, version]`, each list sorted by name.
    pub fn to_value(&self) -> ciborium::Value {
        use ciborium::Value;
        let capsules = self
            .capsules
            .iter()
            .map(|(name, (version, digest))| {
                Value::Array(vec![
                    Value::Text(name.clone()),
                    Value::Text(version.to_string()),
                    Value::Bytes(digest.to_vec()),
                ])
            })
            .collect();
        let roots = self
            .roots
            .iter()
            .map(|(name, version)| {
                Value::Array(vec![
                    Value::Text(name.clone()),
                    Value::Integer((*version).into()),
                ])
            })
            .collect();
        let digests = self
            .root_digests
            .iter()
            .map(|((name, version), digest)| {
                Value::Array(vec![
                    Value::Text(name.clone()),
                    Value::Integer((*version).into()),
                    Value::Bytes(digest.to_vec()),
                ])
            })
            .collect();
        let mut fields = vec![
            ("capsules", Value::Array(capsules)),
            ("trust-roots", Value::Array(roots)),
            ("trust-root-digests", Value::Array(digests)),
        ];
        if let Some(anchor) = &self.anchor {
            let mut pin = vec![
                ("name", Value::Text(anchor.name.clone())),
                (
                    "root-keys",
                    Value::Array(
                        anchor
                            .root_keys
                            .iter()
                            .map(|k| Value::Bytes(k.to_vec()))
                            .collect(),
                    ),
                ),
            ];
            if let Some(sha256) = anchor.sha256 {
                pin.push(("sha256", Value::Bytes(sha256.to_vec())));
            }
            fields.push(("anchor", crate::cbor::text_map(pin)));
        }
        // Written only when set, so resume states from before governance keep their encoding.
        if !self.governance.is_empty() {
            let marks = self
                .governance
                .iter()
                .map(|(name, (version, digest))| {
                    Value::Array(vec![
                        Value::Text(name.clone()),
                        Value::Integer((*version).into()),
                        Value::Bytes(digest.to_vec()),
                    ])
                })
                .collect();
            fields.push(("governance", Value::Array(marks)));
        }
        crate::cbor::text_map(fields)
    }

    /// Reads [`HighWater::to_value`]'s form back; it must be exactly that
    /// form (sorted, no duplicates), so one set of marks has one encoding.
    pub fn from_value(value: &ciborium::Value) -> Result<Self, String> {
        use ciborium::Value;
        let map = crate::cbor::MapReader::new("`high-water`", value)?;
        map.only(&[
            "capsules",
            "trust-roots",
            "trust-root-digests",
            "anchor",
            "governance",
        ])?;
        let list = |key: &str| match map.get(key) {
            Some(Value::Array(items)) => Ok(items),
            _ => Err(format!("`high-water` field `{key}` is not an array")),
        };
        let mut marks = HighWater::default();
        for item in list("capsules")? {
            let bad = || "a `high-water` capsule mark is not [name, version, sha256]".to_string();
            let Value::Array(parts) = item else {
                return Err(bad());
            };
            let [
                Value::Text(name),
                Value::Text(version),
                Value::Bytes(digest),
            ] = parts.as_slice()
            else {
                return Err(bad());
            };
            let version = semver::Version::parse(version).map_err(|e| format!("{}: {e}", bad()))?;
            let digest: [u8; 32] = digest.as_slice().try_into().map_err(|_| bad())?;
            if marks
                .capsules
                .keys()
                .next_back()
                .is_some_and(|last| last >= name)
            {
                return Err(
                    "`high-water` capsule marks are not sorted by name without repeats".into(),
                );
            }
            marks.capsules.insert(name.clone(), (version, digest));
        }
        for item in list("trust-roots")? {
            let bad = || "a `high-water` trust root mark is not [name, version]".to_string();
            let Value::Array(parts) = item else {
                return Err(bad());
            };
            let [Value::Text(name), version] = parts.as_slice() else {
                return Err(bad());
            };
            let version = crate::cbor::as_u64(version).ok_or_else(bad)?;
            if marks
                .roots
                .keys()
                .next_back()
                .is_some_and(|last| last >= name)
            {
                return Err(
                    "`high-water` trust root marks are not sorted by name without repeats".into(),
                );
            }
            marks.roots.insert(name.clone(), version);
        }
        for item in list("trust-root-digests")? {
            let bad =
                || "a `high-water` trust root digest is not [name, version, sha256]".to_string();
            let Value::Array(parts) = item else {
                return Err(bad());
            };
            let [Value::Text(name), version, digest] = parts.as_slice() else {
                return Err(bad());
            };
            let key = (name.clone(), crate::cbor::as_u64(version).ok_or_else(bad)?);
            if marks
                .root_digests
                .keys()
                .next_back()
                .is_some_and(|last| *last >= key)
            {
                return Err(
                    "`high-water` trust root digests are not sorted by name and version without repeats"
                        .into(),
                );
            }
            marks
                .root_digests
                .insert(key, crate::cbor::bytes32(digest, "a trust root digest")?);
        }
        if let Some(pin) = map.get("anchor") {
            let pin = crate::cbor::MapReader::new("`high-water` `anchor`", pin)?;
            pin.only(&["name", "root-keys", "sha256"])?;
            let Some(Value::Array(keys)) = pin.get("root-keys") else {
                return Err("`anchor` has no `root-keys` array".into());
            };
            marks.anchor = Some(PinnedAnchor {
                name: pin.text("name")?.to_string(),
                sha256: pin
                    .get("sha256")
                    .map(|v| crate::cbor::bytes32(v, "`anchor` `sha256`"))
                    .transpose()?,
                root_keys: keys
                    .iter()
                    .map(|k| crate::cbor::bytes32(k, "an `anchor` root key id"))
                    .collect::<Result<_, _>>()?,
            });
        }
        if let Some(found) = map.get("governance") {
            let Value::Array(items) = found else {
                return Err("`high-water` field `governance` is not an array".into());
            };
            if items.is_empty() {
                return Err(
                    "`high-water` field `governance` is present but empty; leave it out".into(),
                );
            }
            for item in items {
                let bad =
                    || "a `high-water` governance mark is not [name, version, sha256]".to_string();
                let Value::Array(parts) = item else {
                    return Err(bad());
                };
                let [Value::Text(name), version, digest] = parts.as_slice() else {
                    return Err(bad());
                };
                let version = crate::cbor::as_u64(version).ok_or_else(bad)?;
                if marks
                    .governance
                    .keys()
                    .next_back()
                    .is_some_and(|last| last >= name)
                {
                    return Err(
                        "`high-water` governance marks are not sorted by name without repeats"
                            .into(),
                    );
                }
                marks.governance.insert(
                    name.clone(),
                    (
                        version,
                        crate::cbor::bytes32(digest, "a governance digest")?,
                    ),
                );
            }
        }
        Ok(marks)
    }
}

impl fmt::Display for HighWater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self.capsules().map(|(n, v)| format!("{n} {v}")).collect();
        f.write_str(&items.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> semver::Version {
        semver::Version::parse(text).unwrap()
    }

    #[test]
    fn a_lower_version_a_reused_version_and_an_older_root_are_refused() {
        let mut mark = HighWater::default();
        mark.accept("db-check", &v("1.4.0"), [1; 32], "root", 3)
            .unwrap();
        assert_eq!(
            mark.check_capsule("db-check", &v("1.3.9"), &[1; 32])
                .unwrap_err()
                .to_string(),
            "capsule `db-check` 1.3.9 is older than 1.4.0, which was already accepted"
        );
        assert!(matches!(
            mark.check_capsule("db-check", &v("1.4.0"), &[2; 32]),
            Err(RollbackError::VersionReused { .. })
        ));
        assert_eq!(
            mark.accept("other", &v("1.0.0"), [3; 32], "root", 2)
                .unwrap_err()
                .to_string(),
            "trust root `root` v2 is older than v3, which was already used"
        );
        // A refused acceptance leaves the mark where it was.
        assert!(mark.capsule("other").is_none());
        mark.accept("db-check", &v("1.4.0"), [1; 32], "root", 3)
            .unwrap();
        mark.accept("db-check", &v("2.0.0"), [4; 32], "root", 4)
            .unwrap();
        assert_eq!(mark.capsule("db-check").unwrap().0, v("2.0.0"));
        assert_eq!(mark.root("root"), Some(4));
    }
}
