//! The TOML examples in the README and `docs/` are checked, so that an
//! example a reader copies cannot drift from what the runner accepts. Each
//! ```` ```toml ```` block names what it is after the language
//! (```` ```toml site-policy ````, `manifest`, `serve-config`, `trust-root`, or
//! `fragment` for part of a file): site policies, manifests and daemon configs
//! are parsed with the runner's own parsers; trust roots, whose keys the docs elide, and fragments must be
//! valid TOML.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

use std::path::{Path, PathBuf};

/// Every ```` ```toml ```` block of `text`: (line, tag, content), with the
/// block's indentation removed.
fn toml_blocks(text: &str) -> Vec<(usize, String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String, usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut open {
            None => {
                if let Some(info) = trimmed.strip_prefix("```toml") {
                    open = Some((i + 1, info.trim().to_string(), indent, String::new()));
                }
            }
            Some((start, tag, indent, body)) => {
                if trimmed.starts_with("```") {
                    blocks.push((*start, std::mem::take(tag), std::mem::take(body)));
                    open = None;
                } else {
                    body.push_str(line.get(*indent..).unwrap_or(line.trim_start()));
                    body.push('\n');
                }
            }
        }
    }
    assert!(open.is_none(), "a ```toml block is not closed");
    blocks
}

fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

#[test]
fn every_toml_example_in_the_docs_is_accepted() {
    let mut checked = 0;
    for file in documents() {
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, tag, body) in toml_blocks(&text) {
            let at = format!("{}:{line}", file.display());
            if let Err(e) = toml::from_str::<toml::Table>(&body) {
                panic!("{at}: the example is not TOML: {e}");
            }
            match tag.as_str() {
                "site-policy" => {
                    crate::site::SitePolicy::parse(&body, &at)
                        .unwrap_or_else(|e| panic!("{at}: {e}"));
                }
                "manifest" => {
                    crate::capsule::ManifestSource::parse(&body, Path::new(&at))
                        .unwrap_or_else(|e| panic!("{at}: {e}"));
                }
                "serve-config" => {
                    crate::serve::ServeConfig::parse(
                        &body,
                        Path::new(&at),
                        Path::new("/etc/edge-runner"),
                    )
                    .unwrap_or_else(|e| panic!("{at}: {e}"));
                }
                "trust-root" | "fragment" => {}
                other => panic!(
                    "{at}: a ```toml block says what it is: ```toml site-policy, manifest, serve-config, trust-root or fragment (found `{other}`)"
                ),
            }
            checked += 1;
        }
    }
    assert!(checked >= 7, "only {checked} TOML examples found");
}

#[test]
fn a_site_policy_with_egress_after_a_table_is_refused_as_the_docs_warn() {
    // The mistake the docs once made: `egress` after `[[directory]]` belongs to that table.
    let text = "format = 1\nsite = \"s\"\n[[directory]]\npath = \"/logs\"\naccess = \"read-only\"\negress = [\"a.example:443\"]\n";
    let err = crate::site::SitePolicy::parse(text, "example")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`egress` is a top-level key of the site policy")
            && err.contains("write `egress` before the first table"),
        "{err}"
    );
}
