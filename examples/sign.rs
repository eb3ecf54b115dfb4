//! Writing and signing a capsule, as a fleet author does: take a component
//! built for `wasm32-wasip2` and its `capsule.toml`, sign it, co-sign it with a
//! second organisation's key, and inspect what was signed.
//!
//! ```sh
//! cargo run -p edge-runner --example sign
//! ```
//!
//! The CLI equivalent is `edge-runner capsule sign COMPONENT --manifest capsule.toml
//! --key publisher.key --out signed.wasm` (then `--add` to co-sign).

use std::path::Path;

use anyhow::Result;
use edge_runner::capsule::{self, CheckedCapsule, ManifestSource};
use edge_runner::keys::SecretKey;
use edge_runner::timestamp::Timestamp;

fn main() -> Result<()> {
    // The component and manifest of the config-fix capsule (built by capsules/artifacts).
    let example = capsule_artifacts::CONFIG_FIX;
    let source = ManifestSource::parse(example.manifest, Path::new(example.manifest_path))?;

    // Two publishers from two organisations: a `remediate` capsule needs both.
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("../keys");
    let acme = SecretKey::load(&keys.join("demo-publisher.key"))?; // demo key: never for real work
    let globex = SecretKey::generate()?;

    let signed = capsule::sign(example.component, &source, &acme, Timestamp::now())?;
    // A co-signer checks the existing signature before adding its own.
    let cosigned = capsule::cosign(&signed, &globex, &[acme.public()], Timestamp::now())?;

    let checked = CheckedCapsule::parse(cosigned.clone())?;
    let m = checked.manifest();
    println!("{} {} ({}) — {}", m.name, m.version, m.kind, m.description);
    println!("  valid {} until {}", m.not_before, m.expires);
    for f in &m.capabilities.files {
        println!("  asks for file {f}");
    }
    println!("  module sha256 {}", hex::encode(checked.module_digest()));
    for s in checked.signatures() {
        println!("  signed by key {}", s.key_id.short());
    }
    let out = std::env::temp_dir().join("config-fix.signed.wasm");
    std::fs::write(&out, &cosigned)?;
    println!("wrote {} ({} bytes)", out.display(), cosigned.len());
    Ok(())
}
