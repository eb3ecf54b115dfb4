//! Shared fixtures for the integration tests in `tests/tests/`: fresh keys,
//! trust roots written for them, and the example capsules signed with them.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;

use edge_runner::capsule::{self, ManifestSource};
use edge_runner::keys::SecretKey;
use edge_runner::trust::TrustRoot;

/// A publisher identity for tests.
pub struct Publisher {
    pub name: &'static str,
    pub organisation: &'static str,
    pub kinds: &'static [&'static str],
    pub key: SecretKey,
}

impl Publisher {
    pub fn new(
        name: &'static str,
        organisation: &'static str,
        kinds: &'static [&'static str],
    ) -> Self {
        Self {
            name,
            organisation,
            kinds,
            key: SecretKey::generate().unwrap(),
        }
    }
}

/// A trust root trusting `publishers`, with `remediate` needing two organisations.
pub fn trust_root(publishers: &[&Publisher]) -> TrustRoot {
    TrustRoot::parse(&trust_root_toml(publishers), "test-trust-root.toml").unwrap()
}

pub fn trust_root_toml(publishers: &[&Publisher]) -> String {
    let mut text = String::from(
        "format = 1\nname = \"test-root\"\nversion = 3\n\
         [thresholds.test]\nkeys = 1\norganisations = 1\n\
         [thresholds.reproduce]\nkeys = 1\norganisations = 1\n\
         [thresholds.remediate]\nkeys = 2\norganisations = 2\n",
    );
    for p in publishers {
        let kinds: Vec<String> = p.kinds.iter().map(|k| format!("\"{k}\"")).collect();
        text.push_str(&format!(
            "[[publisher]]\nname = \"{}\"\norganisation = \"{}\"\nkinds = [{}]\npublic-key = \"\"\"\n{}\"\"\"\n",
            p.name,
            p.organisation,
            kinds.join(", "),
            p.key.public().to_pem().unwrap()
        ));
    }
    text
}

/// The json-assert capsule's manifest, optionally edited.
pub fn json_assert_manifest(edit: impl FnOnce(&mut ManifestSource)) -> ManifestSource {
    let mut source = ManifestSource::parse(
        capsule_artifacts::JSON_ASSERT.manifest,
        Path::new("capsule.toml"),
    )
    .unwrap();
    edit(&mut source);
    source
}

/// The json-assert capsule signed by `key`.
pub fn signed_json_assert(key: &SecretKey) -> Vec<u8> {
    capsule::sign(
        capsule_artifacts::JSON_ASSERT.component,
        &json_assert_manifest(|_| {}),
        key,
        false,
    )
    .unwrap()
}

/// An input under which json-assert passes.
pub const PASSING_INPUT: &str =
    r#"{"document": {"status": "up"}, "assertions": [{"pointer": "/status", "equals": "up"}]}"#;

/// An input under which json-assert fails.
pub const FAILING_INPUT: &str =
    r#"{"document": {"status": "down"}, "assertions": [{"pointer": "/status", "equals": "up"}]}"#;
