//! Embedding Edge Runner as a library: verify a signed capsule, run it, and
//! verify the evidence it left — the same loop as `edge-runner run`.
//!
//! ```sh
//! cargo run -p edge-runner --example embed
//! ```

use std::path::Path;

use anyhow::Result;
use edge_runner::capsule::{self, ManifestSource, RawCapsule};
use edge_runner::evidence::{self, EvidenceLog, LOG_FILE};
use edge_runner::keys::SecretKey;
use edge_runner::sandbox::Limits;
use edge_runner::session::Session;
use edge_runner::timestamp::Timestamp;
use edge_runner::trust::{RootPolicy, SignedRoot, store};

fn main() -> Result<()> {
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("../keys");
    // A publisher signs the example capsule (demo key: never use it for real work).
    let publisher = SecretKey::load(&keys.join("demo-publisher.key"))?;
    let example = capsule_artifacts::JSON_ASSERT;
    let source = ManifestSource::parse(example.manifest, Path::new(example.manifest_path))?;
    let signed = capsule::sign(example.component, &source, &publisher, Timestamp::now())?;

    // The site's trust store: version 1 of the policy, signed by its root key.
    let dir = tempfile::tempdir()?;
    let trust_dir = dir.path().join("trust");
    let policy_path = keys.join("demo-trust-root.toml");
    let policy = RootPolicy::parse(
        &std::fs::read_to_string(&policy_path)?,
        &policy_path.display().to_string(),
    )?;
    let root_key = SecretKey::load(&keys.join("demo-root.key"))?;
    store::install(
        &trust_dir,
        &SignedRoot::sign_new(&policy, &root_key)?,
        Timestamp::now(),
    )?;

    // The runner checks the capsule against the store, runs it, and records every step.
    let root = store::load(&trust_dir, Timestamp::now())?;
    let runner_key = SecretKey::generate()?;
    let runner_public = runner_key.public();
    let mut session = Session::new(
        EvidenceLog::open(&dir.path().join("evidence"), runner_key)?,
        Limits::default(),
        "demo-site",
    )?;
    let verified = session.verify(
        RawCapsule {
            component: signed,
            detached_signature: None,
        },
        &root,
    )?;
    let input = br#"{"document": {"status": "up"}, "assertions": [{"pointer": "/status", "equals": "up"}]}"#;
    let record = session.run(verified, input)?;
    println!("status: {}", record.report.status.as_str());
    if let Some(outcome) = &record.report.outcome {
        println!(
            "verdict: {} — {}",
            outcome.verdict.as_str(),
            outcome.summary
        );
    }
    drop(session);

    // An auditor needs only the log and the runner's public key.
    let log = std::fs::read(dir.path().join("evidence").join(LOG_FILE))?;
    let summary = evidence::verify_log(&log, &runner_public)?;
    println!(
        "evidence: {} records verified, head {}",
        summary.records.len(),
        hex::encode(summary.head)
    );
    Ok(())
}
