//! The system graph: catalog entities as nodes, "depends on" as edges, with
//! dependency cycles collapsed (strongly connected components condensed)
//! before any question is asked of it. It answers one question for the tier
//! derivation: which nodes does a change to these nodes reach?

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use ciborium::Value;
use petgraph::Direction;
use petgraph::algo::condensation;
use petgraph::graph::{DiGraph, NodeIndex};
use sha2::{Digest, Sha256};

use super::catalog::{Criticality, Entity};

/// The condensed dependency graph of a checked catalog.
#[derive(Debug)]
pub struct SystemGraph {
    /// Entities by reference.
    entities: BTreeMap<String, Entity>,
    /// Component (condensed node) of each entity reference.
    component_of: BTreeMap<String, NodeIndex>,
    /// The condensed graph: each node holds the sorted references of one
    /// strongly connected component; an edge runs from dependent to dependency.
    condensed: DiGraph<Vec<String>, ()>,
    /// SHA-256 over the canonical form (docs/governance.md §3.4).
    digest: [u8; 32],
}

/// What a change to some nodes reaches.
#[derive(Debug, Clone, Default)]
pub struct Radius {
    /// The changed nodes and every node that transitively depends on them, sorted.
    pub nodes: Vec<String>,
    /// For each node in the radius but the starting ones, the node it was reached from.
    pub parent: BTreeMap<String, String>,
}

impl Radius {
    /// The path from a starting node to `to`, starting node first.
    pub fn path_to(&self, to: &str) -> Vec<String> {
        let mut path = vec![to.to_string()];
        let mut at = to;
        while let Some(p) = self.parent.get(at) {
            path.push(p.clone());
            at = p;
            if path.len() > self.nodes.len() + 1 {
                break;
            }
        }
        path.reverse();
        path
    }
}

impl SystemGraph {
    /// Builds the graph from checked entities (every reference resolves).
    pub fn new(entities: BTreeMap<String, Entity>) -> Self {
        let mut graph: DiGraph<String, ()> = DiGraph::new();
        let mut index = BTreeMap::new();
        for reference in entities.keys() {
            index.insert(reference.clone(), graph.add_node(reference.clone()));
        }
        let mut edges = BTreeSet::new();
        for e in entities.values() {
            for d in &e.depends_on {
                edges.insert((e.reference.clone(), d.clone()));
            }
            for d in &e.dependency_of {
                edges.insert((d.clone(), e.reference.clone()));
            }
        }
        for (from, to) in &edges {
            if let (Some(a), Some(b)) = (index.get(from), index.get(to)) {
                graph.add_edge(*a, *b, ());
            }
        }
        let mut condensed = condensation(graph, true);
        let mut component_of = BTreeMap::new();
        for node in condensed.node_indices() {
            let members = &mut condensed[node];
            members.sort();
            for m in members.iter() {
                component_of.insert(m.clone(), node);
            }
        }
        let digest = canonical_digest(&entities, &edges);
        Self {
            entities,
            component_of,
            condensed,
            digest,
        }
    }

    /// SHA-256 of the graph's canonical form.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// The entity named `reference`.
    pub fn entity(&self, reference: &str) -> Option<&Entity> {
        self.entities.get(reference)
    }

    /// Every entity, by reference.
    pub fn entities(&self) -> &BTreeMap<String, Entity> {
        &self.entities
    }

    /// Number of entities.
    pub fn len(&self) -> usize {
        self.entities.len()
    }

    /// True when the catalog is empty.
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    /// The members of `reference`'s dependency cycle (itself alone when it is in none).
    pub fn cycle_of(&self, reference: &str) -> Vec<String> {
        self.component_of
            .get(reference)
            .map(|c| self.condensed[*c].clone())
            .unwrap_or_default()
    }

    /// `start` and every node that transitively depends on one of them.
    /// Nodes in one dependency cycle are all reached together.
    pub fn blast_radius(&self, start: &[String]) -> Radius {
        let mut seen: BTreeSet<NodeIndex> = BTreeSet::new();
        let mut queue = VecDeque::new();
        let mut parent: BTreeMap<String, String> = BTreeMap::new();
        let mut nodes: BTreeSet<String> = BTreeSet::new();
        for s in start {
            let Some(c) = self.component_of.get(s) else {
                continue;
            };
            nodes.insert(s.clone());
            if seen.insert(*c) {
                queue.push_back((*c, s.clone()));
                for m in &self.condensed[*c] {
                    if nodes.insert(m.clone()) {
                        parent.insert(m.clone(), s.clone());
                    }
                }
            }
        }
        while let Some((c, via)) = queue.pop_front() {
            for dependent in self.condensed.neighbors_directed(c, Direction::Incoming) {
                if !seen.insert(dependent) {
                    continue;
                }
                let members = &self.condensed[dependent];
                let Some(first) = members.first() else {
                    continue;
                };
                for m in members {
                    if nodes.insert(m.clone()) {
                        parent.insert(m.clone(), via.clone());
                    }
                }
                queue.push_back((dependent, first.clone()));
            }
        }
        Radius {
            nodes: nodes.into_iter().collect(),
            parent,
        }
    }

    /// The highest criticality among `nodes` (low for none).
    pub fn max_criticality(&self, nodes: &[String]) -> Criticality {
        nodes
            .iter()
            .filter_map(|n| self.entities.get(n))
            .map(|e| e.criticality)
            .max()
            .unwrap_or(Criticality::Low)
    }
}

fn canonical_digest(
    entities: &BTreeMap<String, Entity>,
    edges: &BTreeSet<(String, String)>,
) -> [u8; 32] {
    let text = |s: &str| Value::Text(s.to_string());
    let texts = |v: &[String]| Value::Array(v.iter().map(|s| text(s)).collect());
    let nodes = entities
        .values()
        .map(|e| {
            Value::Array(vec![
                text(&e.reference),
                text(e.criticality.as_str()),
                Value::Bool(e.exposed),
                texts(&e.tags),
                texts(&e.tests),
                e.owner.as_deref().map_or(Value::Null, text),
                e.system.as_deref().map_or(Value::Null, text),
            ])
        })
        .collect();
    let edges = edges
        .iter()
        .map(|(a, b)| Value::Array(vec![text(a), text(b)]))
        .collect();
    let value = crate::cbor::text_map([
        ("edges", Value::Array(edges)),
        ("format", Value::Integer(1.into())),
        ("nodes", Value::Array(nodes)),
    ]);
    let bytes = crate::cbor::encode(&value).unwrap_or_default();
    Sha256::digest(&bytes).into()
}
