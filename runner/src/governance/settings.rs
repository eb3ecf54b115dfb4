//! `governance.toml`: the bundle's header (name, version, expiry), the
//! never-automate list, the target mapping, the per-tier rules and the
//! roster of persons who may approve (docs/governance.md §4).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use super::catalog::normalise_ref;
use super::{GovernanceError, Target, Tier};
use crate::keys::{KeyId, PublicKey};
use crate::timestamp::Timestamp;

/// The governance format this runner reads.
pub const GOVERNANCE_FORMAT: u64 = 1;

/// Most persons in a roster.
pub const MAX_PERSONS: usize = 10_000;

/// Sensitive tags used when `sensitive-tags` is not given.
pub const DEFAULT_SENSITIVE_TAGS: [&str; 5] =
    ["auth", "data-path", "ledger", "payments", "regulated-data"];

/// Per-tier requirements (docs/governance.md §4.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierRule {
    /// Approvals needed, from distinct persons.
    pub approvals: u32,
    /// Groups each of which at least one counted approver must belong to.
    pub groups: Vec<String>,
    /// Longest an approval counts after it was signed, in seconds.
    pub lifetime_secs: u64,
    /// Seconds after the proposal before it may be applied.
    pub delay_secs: u64,
    /// URLs notified after apply (through the site's egress grant).
    pub webhooks: Vec<String>,
}

/// One person of the roster.
#[derive(Debug, Clone)]
pub struct Person {
    /// Unique name, as approvals name it.
    pub name: String,
    /// Their public keys (one person, however many keys, counts once).
    pub keys: Vec<PublicKey>,
    /// Tiers they may approve.
    pub tiers: BTreeSet<Tier>,
    /// Groups they belong to.
    pub groups: BTreeSet<String>,
    /// Identities they must never approve for: proposer names, publisher key
    /// names, or 64-hex key ids of capsule signers.
    pub never_approve_for: Vec<String>,
    /// May authorize alone, with a reason, in an emergency.
    pub break_glass: bool,
    /// Not valid from this time on.
    pub expires: Timestamp,
}

impl Person {
    /// Whether `key` is one of this person's keys.
    pub fn has_key(&self, key: &KeyId) -> bool {
        self.keys.iter().any(|k| k.id() == *key)
    }
}

/// The never-automate list: anything in a blast radius matching it is change-control.
#[derive(Debug, Clone, Default)]
pub struct NeverAutomate {
    /// Tags.
    pub tags: Vec<String>,
    /// Entity references.
    pub nodes: Vec<String>,
    /// System references.
    pub systems: Vec<String>,
}

/// How one target maps to a graph node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The site.
    pub site: String,
    /// An absolute path prefix (files), matched at a `/` boundary.
    pub path: Option<String>,
    /// A URL prefix (HTTP), matched at a `/`, `?` or `#` boundary.
    pub url: Option<String>,
    /// The entity it maps to.
    pub entity: String,
}

impl Mapping {
    /// The length of the prefix that matches `target`, if it does.
    pub fn matches(&self, target: &Target) -> Option<usize> {
        let boundary = |whole: &str, prefix: &str, seps: &[char]| {
            whole == prefix
                || (whole.starts_with(prefix)
                    && (prefix.ends_with(seps) || whole[prefix.len()..].starts_with(seps)))
        };
        match (target, &self.path, &self.url) {
            (Target::File { site, path }, Some(prefix), _) if *site == self.site => {
                boundary(path, prefix, &['/']).then_some(prefix.len())
            }
            (Target::Http { site, url, .. }, _, Some(prefix)) if *site == self.site => {
                boundary(url, prefix, &['/', '?', '#']).then_some(prefix.len())
            }
            _ => None,
        }
    }
}

/// `governance.toml`, parsed and checked (keys decoded, tiers complete).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The site governance's name; the same in every version.
    pub name: String,
    /// Version from 1.
    pub version: u64,
    /// Not valid from this time on.
    pub expires: Timestamp,
    /// Catalog file names, in the order they are bundled.
    pub catalog: Vec<String>,
    /// Cedar policy file name.
    pub policy: String,
    /// Tags that count as sensitive surfaces.
    pub sensitive_tags: Vec<String>,
    /// The never-automate list.
    pub never_automate: NeverAutomate,
    /// Target mappings.
    pub targets: Vec<Mapping>,
    /// Rules by tier (every tier present).
    pub tiers: BTreeMap<Tier, TierRule>,
    /// The roster.
    pub persons: Vec<Person>,
    /// How long after a break-glass authorization a quorum must post-review
    /// it (`break-glass-review-secs`; default [`DEFAULT_BREAK_GLASS_REVIEW_SECS`]).
    pub break_glass_review_secs: u64,
}

/// A break-glass authorization's default post-review window: 72 hours.
pub const DEFAULT_BREAK_GLASS_REVIEW_SECS: u64 = 72 * 3600;

/// The post-review windows a governance may set: one hour to 30 days.
pub const BREAK_GLASS_REVIEW_SECS: std::ops::RangeInclusive<u64> = 3600..=30 * 86_400;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct File {
    format: u64,
    name: String,
    version: u64,
    expires: Timestamp,
    catalog: Vec<String>,
    policy: String,
    sensitive_tags: Option<Vec<String>>,
    #[serde(default)]
    never_automate: NeverFile,
    #[serde(default, rename = "target")]
    targets: Vec<TargetFile>,
    tiers: BTreeMap<String, TierFile>,
    #[serde(default, rename = "person")]
    persons: Vec<PersonFile>,
    break_glass_review_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NeverFile {
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    nodes: Vec<String>,
    #[serde(default)]
    systems: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetFile {
    site: String,
    path: Option<String>,
    url: Option<String>,
    entity: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct TierFile {
    approvals: u32,
    #[serde(default)]
    groups: Vec<String>,
    lifetime_secs: u64,
    #[serde(default)]
    delay_secs: u64,
    #[serde(default)]
    webhooks: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PersonFile {
    name: String,
    public_keys: Vec<String>,
    tiers: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    never_approve_for: Vec<String>,
    #[serde(default)]
    break_glass: bool,
    expires: Timestamp,
}

/// The fewest approvals each tier may require: change-control means at least two persons.
pub fn minimum_approvals(tier: Tier) -> u32 {
    match tier {
        Tier::AutoMerge | Tier::NotifyAndProceed => 0,
        Tier::SingleApprover => 1,
        Tier::ChangeControl => 2,
    }
}

fn file_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Settings {
    /// Parses `governance.toml` text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, GovernanceError> {
        let err = |detail: String| GovernanceError::Settings {
            origin: origin.to_string(),
            detail,
        };
        let file: File = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        if file.format != GOVERNANCE_FORMAT {
            return Err(err(format!(
                "format {} is not supported; this runner reads format {GOVERNANCE_FORMAT}",
                file.format
            )));
        }
        let name = crate::names::normalise(&file.name, "`name`").map_err(err)?;
        if file.version == 0 {
            return Err(err("`version` starts at 1".into()));
        }
        if file.catalog.is_empty() {
            return Err(err(
                "`catalog` lists no files; name the catalog-info.yaml files of the system graph"
                    .into(),
            ));
        }
        for f in file.catalog.iter().chain([&file.policy]) {
            if !file_name_ok(f) {
                return Err(err(format!(
                    "file `{f}` must be a plain file name beside governance.toml ([A-Za-z0-9._-], not starting with `.`)"
                )));
            }
        }
        let sensitive_tags = file.sensitive_tags.unwrap_or_else(|| {
            DEFAULT_SENSITIVE_TAGS
                .iter()
                .map(|s| s.to_string())
                .collect()
        });
        let never_automate = NeverAutomate {
            tags: file.never_automate.tags,
            nodes: file
                .never_automate
                .nodes
                .iter()
                .map(|n| normalise_ref(n, None))
                .collect::<Result<_, _>>()
                .map_err(|e| err(format!("[never-automate] nodes: {e}")))?,
            systems: file
                .never_automate
                .systems
                .iter()
                .map(|n| normalise_ref(n, Some("system")))
                .collect::<Result<_, _>>()
                .map_err(|e| err(format!("[never-automate] systems: {e}")))?,
        };
        let mut targets = Vec::new();
        for t in file.targets {
            let entity = normalise_ref(&t.entity, None)
                .map_err(|e| err(format!("[[target]] entity: {e}")))?;
            match (&t.path, &t.url) {
                (Some(p), None) if p.starts_with('/') => {}
                (None, Some(u)) if u.starts_with("https://") || u.starts_with("http://") => {}
                _ => {
                    return Err(err(format!(
                        "[[target]] for `{entity}` must have exactly one of `path` (absolute, e.g. \"/etc/app/\") or `url` (\"https://host/prefix\")"
                    )));
                }
            }
            crate::capsule::validate_site(&t.site)
                .map_err(|e| err(format!("[[target]] for `{entity}`: {e}")))?;
            targets.push(Mapping {
                site: t.site,
                path: t.path,
                url: t.url,
                entity,
            });
        }
        let mut tiers = BTreeMap::new();
        for (key, rule) in file.tiers {
            let tier = Tier::parse(&key).ok_or_else(|| {
                err(format!(
                    "[tiers.{key}] is not a tier; use auto-merge, notify-and-proceed, single-approver or change-control"
                ))
            })?;
            if rule.approvals < minimum_approvals(tier) {
                return Err(err(format!(
                    "[tiers.{key}] approvals = {} is below the minimum of {} for that tier",
                    rule.approvals,
                    minimum_approvals(tier)
                )));
            }
            if rule.approvals > 0 && rule.lifetime_secs == 0 {
                return Err(err(format!(
                    "[tiers.{key}] lifetime-secs is 0, so no approval could count; set how long an approval stays valid (e.g. 86400)"
                )));
            }
            for w in &rule.webhooks {
                if !w.starts_with("https://") && !w.starts_with("http://") {
                    return Err(err(format!(
                        "[tiers.{key}] webhook `{w}` is not an http(s) URL"
                    )));
                }
            }
            tiers.insert(
                tier,
                TierRule {
                    approvals: rule.approvals,
                    groups: rule.groups,
                    lifetime_secs: rule.lifetime_secs,
                    delay_secs: rule.delay_secs,
                    webhooks: rule.webhooks,
                },
            );
        }
        for tier in Tier::ALL {
            if !tiers.contains_key(&tier) {
                return Err(err(format!(
                    "no [tiers.{}]; every tier needs its rule",
                    tier.as_str()
                )));
            }
        }
        if file.persons.len() > MAX_PERSONS {
            return Err(err(format!("more than {MAX_PERSONS} persons")));
        }
        let mut persons: Vec<Person> = Vec::new();
        let mut all_keys = BTreeSet::new();
        for p in file.persons {
            let name = crate::names::normalise(&p.name, "person name").map_err(err)?;
            if persons.iter().any(|q| q.name == name) {
                return Err(err(format!("person `{name}` is listed twice")));
            }
            if p.public_keys.is_empty() {
                return Err(err(format!("person `{name}` has no `public-keys`")));
            }
            let mut keys = Vec::new();
            for pem in &p.public_keys {
                let key = PublicKey::from_pem(pem, Path::new(&name))
                    .map_err(|e| err(format!("person `{name}`: {e}")))?;
                if !all_keys.insert(key.id()) {
                    return Err(err(format!(
                        "person `{name}` lists key {} which is already listed; a key belongs to one person",
                        key.id().short()
                    )));
                }
                keys.push(key);
            }
            let tiers = p
                .tiers
                .iter()
                .map(|t| {
                    Tier::parse(t)
                        .ok_or_else(|| err(format!("person `{name}`: `{t}` is not a tier")))
                })
                .collect::<Result<BTreeSet<_>, _>>()?;
            persons.push(Person {
                name,
                keys,
                tiers,
                groups: p.groups.into_iter().collect(),
                never_approve_for: p.never_approve_for,
                break_glass: p.break_glass,
                expires: p.expires,
            });
        }
        for (tier, rule) in &tiers {
            for g in &rule.groups {
                if !persons.iter().any(|p| p.groups.contains(g)) {
                    return Err(err(format!(
                        "[tiers.{}] requires group `{g}` but no person is in it; add a person to it or drop the requirement",
                        tier.as_str()
                    )));
                }
            }
        }
        let break_glass_review_secs = file
            .break_glass_review_secs
            .unwrap_or(DEFAULT_BREAK_GLASS_REVIEW_SECS);
        if !BREAK_GLASS_REVIEW_SECS.contains(&break_glass_review_secs) {
            return Err(err(format!(
                "`break-glass-review-secs` is {break_glass_review_secs}; it must be from {} (an hour) to {} (30 days)",
                BREAK_GLASS_REVIEW_SECS.start(),
                BREAK_GLASS_REVIEW_SECS.end()
            )));
        }
        Ok(Self {
            name,
            version: file.version,
            expires: file.expires,
            catalog: file.catalog,
            policy: file.policy,
            sensitive_tags,
            never_automate,
            targets,
            tiers,
            persons,
            break_glass_review_secs,
        })
    }

    /// The person owning `key`, if any.
    pub fn person_by_key(&self, key: &KeyId) -> Option<&Person> {
        self.persons.iter().find(|p| p.has_key(key))
    }

    /// The entity `target` maps to (longest matching prefix), if any.
    pub fn map(&self, target: &Target) -> Option<&str> {
        self.targets
            .iter()
            .filter_map(|m| m.matches(target).map(|len| (len, m)))
            .max_by_key(|(len, _)| *len)
            .map(|(_, m)| m.entity.as_str())
    }
}
