//! The system graph's source: a subset of Backstage's `catalog-info.yaml`
//! (docs/governance.md §3), read through YAML *events* so that anchors,
//! aliases, tags, depth and size are bounded before any tree exists.
//!
//! This module turns text into [`Entity`] values and checks references
//! between them; it knows nothing about tiers or Cedar.

use std::collections::{BTreeMap, BTreeSet};

use saphyr_parser::{Event, Parser};

use super::GovernanceError;

/// Largest catalog file read, in bytes.
pub const MAX_CATALOG_BYTES: usize = 8 * 1024 * 1024;
/// Deepest nesting of YAML collections accepted.
pub const MAX_YAML_DEPTH: usize = 16;
/// Most YAML nodes (scalars and collections) in one catalog file.
pub const MAX_YAML_NODES: usize = 2_000_000;
/// Most entities in a governance bundle's catalog, over all files.
pub const MAX_ENTITIES: usize = 100_000;

/// Annotation naming a node's criticality: `low`, `moderate`, `high` or `critical`.
pub const ANNOTATION_CRITICALITY: &str = "edge-runner.io/criticality";
/// Annotation marking a node as an internet-facing entry point: `"true"` or `"false"`.
pub const ANNOTATION_EXPOSED: &str = "edge-runner.io/internet-exposed";
/// Annotation listing the test capsules that check a node, comma-separated.
pub const ANNOTATION_TESTS: &str = "edge-runner.io/test-capsules";

/// How much a node matters, ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Criticality {
    /// Nothing of consequence depends on it.
    Low,
    /// Some users notice when it breaks.
    Moderate,
    /// Many users or revenue depend on it.
    High,
    /// The business stops when it breaks.
    Critical,
}

impl Criticality {
    /// The annotation value.
    pub fn as_str(self) -> &'static str {
        match self {
            Criticality::Low => "low",
            Criticality::Moderate => "moderate",
            Criticality::High => "high",
            Criticality::Critical => "critical",
        }
    }

    /// Parses an annotation value.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "low" => Criticality::Low,
            "moderate" => Criticality::Moderate,
            "high" => Criticality::High,
            "critical" => Criticality::Critical,
            _ => return None,
        })
    }

    /// 1 (low) to 4 (critical), as Cedar policies see it.
    pub fn level(self) -> i64 {
        self as i64 + 1
    }
}

/// One catalog entity, references normalised to `kind:namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entity {
    /// Its own reference, e.g. `component:default/payments-api`.
    pub reference: String,
    /// Catalog file it came from.
    pub file: String,
    /// `metadata.tags`, sorted, unique.
    pub tags: Vec<String>,
    /// Its criticality (default low).
    pub criticality: Criticality,
    /// Internet-facing entry point.
    pub exposed: bool,
    /// Capsule names of the tests that check it, sorted.
    pub tests: Vec<String>,
    /// `spec.owner`, normalised (kind `group` by default).
    pub owner: Option<String>,
    /// `spec.system`, normalised (kind `system` by default).
    pub system: Option<String>,
    /// Entities it depends on (`spec.dependsOn`), normalised, sorted.
    pub depends_on: Vec<String>,
    /// Entities that depend on it (`spec.dependencyOf`), normalised, sorted.
    pub dependency_of: Vec<String>,
}

/// A YAML node as the catalog reader keeps it: plain data, no anchors.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Yaml {
    Scalar(String),
    Seq(Vec<Yaml>),
    Map(Vec<(String, Yaml)>),
}

const KINDS: [&str; 5] = ["component", "resource", "system", "api", "group"];

/// Parses one multi-document catalog file into entities (references not yet checked).
pub fn parse_file(file: &str, text: &str) -> Result<Vec<Entity>, GovernanceError> {
    let err = |entity: &str, field: &str, detail: String| GovernanceError::Catalog {
        file: file.to_string(),
        entity: entity.to_string(),
        field: field.to_string(),
        detail,
    };
    if text.len() > MAX_CATALOG_BYTES {
        return Err(err(
            "-",
            "-",
            format!(
                "{} bytes is over the {MAX_CATALOG_BYTES}-byte limit; split the catalog",
                text.len()
            ),
        ));
    }
    let documents = read_documents(text).map_err(|detail| err("-", "-", detail))?;
    let mut entities = Vec::new();
    for (index, doc) in documents.iter().enumerate() {
        let Yaml::Map(_) = doc else {
            return Err(err(
                &format!("document {}", index + 1),
                "-",
                "is not a mapping; each document is one catalog entity".into(),
            ));
        };
        entities.push(entity(file, index, doc)?);
    }
    Ok(entities)
}

fn read_documents(text: &str) -> Result<Vec<Yaml>, String> {
    let mut stack: Vec<(Yaml, Option<String>)> = Vec::new();
    let mut documents = Vec::new();
    let mut nodes = 0usize;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| format!("YAML: {e}"))?;
        let at = format!("line {}", span.start.line());
        let check_anchor = |anchor: usize| {
            if anchor != 0 {
                Err(format!(
                    "{at}: YAML anchors are refused (they make alias bombs possible); write the value out"
                ))
            } else {
                Ok(())
            }
        };
        let check_tag = |tag: bool| {
            if tag {
                Err(format!(
                    "{at}: YAML tags are refused; write plain strings, lists and maps"
                ))
            } else {
                Ok(())
            }
        };
        let value = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing => continue,
            Event::DocumentStart(_) => {
                continue;
            }
            Event::DocumentEnd => continue,
            Event::Alias(_) => {
                return Err(format!(
                    "{at}: YAML aliases are refused (an alias bomb expands without bound); write the value out"
                ));
            }
            Event::Scalar(text, _style, anchor, tag) => {
                check_anchor(anchor)?;
                check_tag(tag.is_some())?;
                nodes += 1;
                Yaml::Scalar(text.into_owned())
            }
            Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                check_anchor(anchor)?;
                check_tag(tag.is_some())?;
                nodes += 1;
                if nodes > MAX_YAML_NODES {
                    return Err(format!("more than {MAX_YAML_NODES} YAML nodes"));
                }
                if stack.len() >= MAX_YAML_DEPTH {
                    return Err(format!("{at}: nested deeper than {MAX_YAML_DEPTH} levels"));
                }
                let start = if matches!(event, Event::SequenceStart(..)) {
                    Yaml::Seq(Vec::new())
                } else {
                    Yaml::Map(Vec::new())
                };
                stack.push((start, None));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some((value, None)) => value,
                Some((_, Some(key))) => return Err(format!("{at}: key `{key}` has no value")),
                None => return Err(format!("{at}: unbalanced YAML")),
            },
        };
        if nodes > MAX_YAML_NODES {
            return Err(format!("more than {MAX_YAML_NODES} YAML nodes"));
        }
        match stack.last_mut() {
            None => documents.push(value),
            Some((Yaml::Seq(items), _)) => items.push(value),
            Some((Yaml::Map(entries), pending)) => match pending.take() {
                None => match value {
                    Yaml::Scalar(key) => {
                        if entries.iter().any(|(k, _)| *k == key) {
                            return Err(format!("{at}: key `{key}` appears twice in one mapping"));
                        }
                        *pending = Some(key);
                    }
                    _ => return Err(format!("{at}: mapping keys must be plain strings")),
                },
                Some(key) => entries.push((key, value)),
            },
            Some((Yaml::Scalar(_), _)) => return Err(format!("{at}: unbalanced YAML")),
        }
    }
    Ok(documents)
}

fn get<'a>(map: &'a Yaml, key: &str) -> Option<&'a Yaml> {
    match map {
        Yaml::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
        _ => None,
    }
}

/// Normalises a Backstage entity reference `[kind:][namespace/]name` to
/// `kind:namespace/name`, lowercased; `default_kind` applies when the kind is
/// left out (`None`: the kind is required).
pub fn normalise_ref(text: &str, default_kind: Option<&str>) -> Result<String, String> {
    let text = text.trim();
    let (kind, rest) = match text.split_once(':') {
        Some((kind, rest)) => (kind.to_ascii_lowercase(), rest),
        None => match default_kind {
            Some(kind) => (kind.to_string(), text),
            None => {
                return Err(format!(
                    "`{text}` names no kind; write it as `kind:namespace/name` (e.g. `component:default/{text}`)"
                ));
            }
        },
    };
    if !KINDS.contains(&kind.as_str()) {
        return Err(format!(
            "`{text}` has kind `{kind}`; the catalog knows {}",
            KINDS.join(", ")
        ));
    }
    let (namespace, name) = rest.split_once('/').unwrap_or(("default", rest));
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    if !valid(namespace) || !valid(name) {
        return Err(format!(
            "`{text}` is not a valid entity reference: namespace and name are 1-63 of [A-Za-z0-9-_.]"
        ));
    }
    Ok(format!(
        "{kind}:{}/{}",
        namespace.to_ascii_lowercase(),
        name.to_ascii_lowercase()
    ))
}

fn entity(file: &str, index: usize, doc: &Yaml) -> Result<Entity, GovernanceError> {
    let name_hint = get(doc, "metadata")
        .and_then(|m| get(m, "name"))
        .and_then(|n| match n {
            Yaml::Scalar(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_else(|| format!("document {}", index + 1));
    let err = |field: &str, detail: String| GovernanceError::Catalog {
        file: file.to_string(),
        entity: name_hint.clone(),
        field: field.to_string(),
        detail,
    };
    let scalar = |value: Option<&Yaml>, field: &str| -> Result<Option<String>, GovernanceError> {
        match value {
            None => Ok(None),
            Some(Yaml::Scalar(s)) => Ok(Some(s.clone())),
            Some(_) => Err(err(field, "must be a string".into())),
        }
    };
    let list = |value: Option<&Yaml>, field: &str| -> Result<Vec<String>, GovernanceError> {
        match value {
            None => Ok(Vec::new()),
            Some(Yaml::Seq(items)) => items
                .iter()
                .map(|i| match i {
                    Yaml::Scalar(s) => Ok(s.clone()),
                    _ => Err(err(field, "must be a list of strings".into())),
                })
                .collect(),
            Some(_) => Err(err(field, "must be a list of strings".into())),
        }
    };
    let api_version = scalar(get(doc, "apiVersion"), "apiVersion")?.unwrap_or_default();
    if api_version != "backstage.io/v1alpha1" && api_version != "backstage.io/v1beta1" {
        return Err(err(
            "apiVersion",
            format!("is `{api_version}`; write `backstage.io/v1alpha1`"),
        ));
    }
    let kind = scalar(get(doc, "kind"), "kind")?.ok_or_else(|| {
        err(
            "kind",
            "is missing; use Component, Resource, System, API or Group".into(),
        )
    })?;
    let kind_lower = kind.to_ascii_lowercase();
    if !KINDS.contains(&kind_lower.as_str()) {
        return Err(err(
            "kind",
            format!("is `{kind}`; the catalog knows Component, Resource, System, API and Group"),
        ));
    }
    let metadata = get(doc, "metadata").ok_or_else(|| err("metadata", "is missing".into()))?;
    let name = scalar(get(metadata, "name"), "metadata.name")?
        .ok_or_else(|| err("metadata.name", "is missing".into()))?;
    let namespace = scalar(get(metadata, "namespace"), "metadata.namespace")?
        .unwrap_or_else(|| "default".into());
    let reference = normalise_ref(&format!("{kind_lower}:{namespace}/{name}"), None)
        .map_err(|e| err("metadata.name", e))?;
    let mut tags = list(get(metadata, "tags"), "metadata.tags")?;
    for t in &tags {
        let ok = !t.is_empty()
            && t.len() <= 63
            && t.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'-' | b':' | b'+' | b'#')
            });
        if !ok {
            return Err(err(
                "metadata.tags",
                format!("tag `{t}` must be 1-63 of [a-z0-9:+#] and `-` (Backstage's rule)"),
            ));
        }
    }
    tags.sort();
    tags.dedup();
    let annotations = get(metadata, "annotations");
    if let Some(a) = annotations
        && !matches!(a, Yaml::Map(_))
    {
        return Err(err("metadata.annotations", "must be a mapping".into()));
    }
    let annotation = |key: &str| -> Result<Option<String>, GovernanceError> {
        match annotations {
            None => Ok(None),
            Some(a) => scalar(get(a, key), &format!("metadata.annotations.{key}")),
        }
    };
    let criticality = match annotation(ANNOTATION_CRITICALITY)? {
        None => Criticality::Low,
        Some(text) => Criticality::parse(&text).ok_or_else(|| {
            err(
                &format!("metadata.annotations.{ANNOTATION_CRITICALITY}"),
                format!("is `{text}`; use low, moderate, high or critical"),
            )
        })?,
    };
    let exposed = match annotation(ANNOTATION_EXPOSED)?.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(err(
                &format!("metadata.annotations.{ANNOTATION_EXPOSED}"),
                format!("is `{other}`; use \"true\" or \"false\""),
            ));
        }
    };
    let mut tests: Vec<String> = match annotation(ANNOTATION_TESTS)? {
        None => Vec::new(),
        Some(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                crate::capsule::validate_name(s)
                    .map(|_| s.to_string())
                    .map_err(|e| {
                        err(
                            &format!("metadata.annotations.{ANNOTATION_TESTS}"),
                            e.to_string(),
                        )
                    })
            })
            .collect::<Result<_, _>>()?,
    };
    tests.sort();
    tests.dedup();
    let spec = get(doc, "spec");
    if let Some(s) = spec
        && !matches!(s, Yaml::Map(_))
    {
        return Err(err("spec", "must be a mapping".into()));
    }
    let spec_field = |key: &str| spec.and_then(|s| get(s, key));
    let owner = scalar(spec_field("owner"), "spec.owner")?
        .map(|o| normalise_ref(&o, Some("group")).map_err(|e| err("spec.owner", e)))
        .transpose()?;
    let system = scalar(spec_field("system"), "spec.system")?
        .map(|o| normalise_ref(&o, Some("system")).map_err(|e| err("spec.system", e)))
        .transpose()?;
    let refs = |field: &str| -> Result<Vec<String>, GovernanceError> {
        let mut out = list(spec_field(field), &format!("spec.{field}"))?
            .iter()
            .map(|r| normalise_ref(r, None).map_err(|e| err(&format!("spec.{field}"), e)))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort();
        out.dedup();
        Ok(out)
    };
    Ok(Entity {
        reference,
        file: file.to_string(),
        tags,
        criticality,
        exposed,
        tests,
        owner,
        system,
        depends_on: refs("dependsOn")?,
        dependency_of: refs("dependencyOf")?,
    })
}

/// Every entity of every file, by reference, with every reference checked:
/// a duplicate entity or a reference to an entity not in the catalog is refused.
pub fn check(entities: Vec<Entity>) -> Result<BTreeMap<String, Entity>, GovernanceError> {
    if entities.len() > MAX_ENTITIES {
        return Err(GovernanceError::Catalog {
            file: "-".into(),
            entity: "-".into(),
            field: "-".into(),
            detail: format!(
                "{} entities is over the {MAX_ENTITIES}-entity limit",
                entities.len()
            ),
        });
    }
    let mut by_ref: BTreeMap<String, Entity> = BTreeMap::new();
    for e in entities {
        if let Some(first) = by_ref.get(&e.reference) {
            return Err(GovernanceError::Catalog {
                file: e.file.clone(),
                entity: e.reference.clone(),
                field: "metadata.name".into(),
                detail: format!("is defined twice (first in {})", first.file),
            });
        }
        by_ref.insert(e.reference.clone(), e);
    }
    let known: BTreeSet<&String> = by_ref.keys().collect();
    for e in by_ref.values() {
        let fields = [
            ("spec.owner", e.owner.iter().collect::<Vec<_>>()),
            ("spec.system", e.system.iter().collect()),
            ("spec.dependsOn", e.depends_on.iter().collect()),
            ("spec.dependencyOf", e.dependency_of.iter().collect()),
        ];
        for (field, refs) in fields {
            if let Some(missing) = refs.into_iter().find(|r| !known.contains(r)) {
                return Err(GovernanceError::Catalog {
                    file: e.file.clone(),
                    entity: e.reference.clone(),
                    field: field.into(),
                    detail: format!(
                        "refers to `{missing}`, which is not in the catalog; add that entity or remove the reference"
                    ),
                });
            }
        }
    }
    Ok(by_ref)
}
