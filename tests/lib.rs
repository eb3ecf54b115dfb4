//! Shared fixtures for the integration tests in `tests/tests/`: fresh keys,
//! trust roots written for them, and the example capsules signed with them.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;

use edge_runner::capsule::{self, ManifestSource, RawCapsule};
use edge_runner::keys::{KeyId, SecretKey};
use edge_runner::timestamp::Timestamp;
use edge_runner::trust::{Chain, RootPolicy, SignedRoot, TrustRoot};

/// The site the tests run as.
pub const SITE: &str = "plant-7";

/// A generous ceiling: what test publishers may vouch for unless a test narrows it.
pub const WIDE_CEILING: &str = "files = [{ path = \"/srv\", access = \"read-write\" }]\n\
    egress = [\"*.example.com:443\"]\nconfig = [\"*\"]\n\
    memory-bytes = 1073741824\nfuel = 100000000000\nwall-time-ms = 600000\n";

/// A publisher identity for tests.
pub struct Publisher {
    pub name: &'static str,
    pub organisation: &'static str,
    pub kinds: &'static [&'static str],
    /// Capsule name patterns it is delegated (`names`).
    pub names: &'static [&'static str],
    pub audiences: &'static [&'static str],
    pub ceiling: &'static str,
    pub key: SecretKey,
}

impl Publisher {
    /// A publisher for every site and every capsule name with [`WIDE_CEILING`].
    pub fn new(
        name: &'static str,
        organisation: &'static str,
        kinds: &'static [&'static str],
    ) -> Self {
        Self {
            name,
            organisation,
            kinds,
            names: &["*"],
            audiences: &["*"],
            ceiling: WIDE_CEILING,
            key: SecretKey::generate().unwrap(),
        }
    }
}

/// A holder of a trust root signing key.
pub struct RootKey {
    pub name: &'static str,
    pub key: SecretKey,
}

impl RootKey {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            key: SecretKey::generate().unwrap(),
        }
    }
}

/// A trust root policy under construction.
pub struct Policy<'a> {
    pub version: u64,
    pub expires: Timestamp,
    pub root_threshold: u32,
    pub root_keys: Vec<&'a RootKey>,
    pub publishers: Vec<&'a Publisher>,
    pub revoked_keys: Vec<(KeyId, &'static str)>,
    pub revoked_capsules: Vec<([u8; 32], &'static str)>,
}

fn toml_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

impl<'a> Policy<'a> {
    /// Version 1, a year of validity, root threshold 1, `remediate` needing two organisations.
    pub fn new(root_keys: Vec<&'a RootKey>, publishers: Vec<&'a Publisher>) -> Self {
        Self {
            version: 1,
            expires: Timestamp::now().plus_days(365),
            root_threshold: 1,
            root_keys,
            publishers,
            revoked_keys: Vec::new(),
            revoked_capsules: Vec::new(),
        }
    }

    pub fn toml(&self) -> String {
        let mut text = format!(
            "format = 1\nname = \"test-root\"\nversion = {}\nexpires = \"{}\"\nroot-threshold = {}\n\
             [thresholds.test]\nkeys = 1\norganisations = 1\n\
             [thresholds.reproduce]\nkeys = 1\norganisations = 1\n\
             [thresholds.remediate]\nkeys = 2\norganisations = 2\n",
            self.version, self.expires, self.root_threshold
        );
        for k in &self.root_keys {
            text.push_str(&format!(
                "[[root-key]]\nname = \"{}\"\npublic-key = \"\"\"\n{}\"\"\"\n",
                k.name,
                k.key.public().to_pem().unwrap()
            ));
        }
        for p in &self.publishers {
            text.push_str(&format!(
                "[[publisher]]\nname = \"{}\"\norganisation = \"{}\"\nkinds = {}\nnames = {}\naudiences = {}\npublic-key = \"\"\"\n{}\"\"\"\n[publisher.ceiling]\n{}",
                p.name,
                p.organisation,
                toml_list(p.kinds),
                toml_list(p.names),
                toml_list(p.audiences),
                p.key.public().to_pem().unwrap(),
                p.ceiling
            ));
        }
        for (id, reason) in &self.revoked_keys {
            text.push_str(&format!(
                "[[revoked-key]]\nkey-id = \"{id}\"\nreason = \"{reason}\"\n"
            ));
        }
        for (digest, reason) in &self.revoked_capsules {
            text.push_str(&format!(
                "[[revoked-capsule]]\nmodule-sha256 = \"{}\"\nreason = \"{reason}\"\n",
                hex::encode(digest)
            ));
        }
        text
    }

    pub fn parsed(&self) -> RootPolicy {
        RootPolicy::parse(&self.toml(), "test policy").unwrap()
    }

    /// The signed trust root file, signed by `signers` in order.
    pub fn signed_by(&self, signers: &[&RootKey]) -> Vec<u8> {
        let policy = self.parsed();
        let mut bytes = SignedRoot::sign_new(&policy, &signers[0].key).unwrap();
        for s in &signers[1..] {
            bytes = SignedRoot::parse(&bytes, "test")
                .unwrap()
                .add_signature(&s.key)
                .unwrap();
        }
        bytes
    }

    /// Signed by all its own root keys, as the only version of a store.
    pub fn trusted(&self) -> TrustRoot {
        let signers = self.root_keys.clone();
        trust_chain(vec![self.signed_by(&signers)]).unwrap()
    }
}

/// Checks a chain of signed versions 1, 2, … and trusts the newest now.
pub fn trust_chain(files: Vec<Vec<u8>>) -> Result<TrustRoot, edge_runner::trust::TrustError> {
    let files = files
        .into_iter()
        .enumerate()
        .map(|(i, b)| (format!("{}.root.cose", i + 1), b))
        .collect();
    Chain::from_files(files)?.trust(Timestamp::now())
}

/// A version-1 trust root trusting `publishers`, with `remediate` needing two organisations.
pub fn trust_root(publishers: &[&Publisher]) -> TrustRoot {
    let root_key = RootKey::new("root-1");
    Policy::new(vec![&root_key], publishers.to_vec()).trusted()
}

/// An embedded-signature capsule as read from disk.
pub fn raw(bytes: Vec<u8>) -> RawCapsule {
    RawCapsule {
        component: bytes,
        detached_signature: None,
    }
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
    sign_json_assert(key, |_| {})
}

/// The json-assert capsule with an edited manifest, signed by `key` now, or
/// at its `not-before` if it sets one (so an already expired fixture can be
/// made: signing refuses a manifest expired at the time of signing).
pub fn sign_json_assert(key: &SecretKey, edit: impl FnOnce(&mut ManifestSource)) -> Vec<u8> {
    let source = json_assert_manifest(edit);
    let now = source.not_before.unwrap_or_else(Timestamp::now);
    capsule::sign(capsule_artifacts::JSON_ASSERT.component, &source, key, now).unwrap()
}

/// An input under which json-assert passes.
pub const PASSING_INPUT: &str =
    r#"{"document": {"status": "up"}, "assertions": [{"pointer": "/status", "equals": "up"}]}"#;

/// An input under which json-assert fails.
pub const FAILING_INPUT: &str =
    r#"{"document": {"status": "down"}, "assertions": [{"pointer": "/status", "equals": "up"}]}"#;

/// Serves one fixed HTTP/1.1 response per connection on 127.0.0.1; returns
/// its address and a counter of connections served.
pub fn http_server(
    body: &'static str,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    http_server_with(200, "text/plain", body)
}

/// [`http_server`] with a chosen status and content type.
pub fn http_server_with(
    status: u16,
    content_type: &'static str,
    body: &'static str,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&hits);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = [0u8; 8192];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, hits)
}
