//! Verifying an exported evidence bundle, as an auditor outside the enclave does.
//!
//! ```sh
//! cargo run -p edge-runner --example audit -- evidence.bundle runner.pub
//! cargo run -p edge-runner --example audit        # makes a small bundle first, then audits it
//! ```
//!
//! The CLI equivalent is `edge-runner evidence verify evidence.bundle --runner-key runner.pub`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use edge_runner::audit::verify_bundle;
use edge_runner::evidence::bundle::Bundle;
use edge_runner::keys::PublicKey;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (bundle_path, key_path) = match args.as_slice() {
        [bundle, key] => (PathBuf::from(bundle), PathBuf::from(key)),
        [] => make_bundle()?,
        _ => bail!("usage: audit [BUNDLE RUNNER_PUB]"),
    };
    let bundle = Bundle::from_cbor(&std::fs::read(&bundle_path)?)?;
    let key = PublicKey::load(&key_path)?;
    let report = verify_bundle(&bundle, Some(&key), &[], &mut |_, _| {});
    if !report.valid() {
        println!("INVALID: {}", report.failure.unwrap_or_default());
        std::process::exit(4);
    }
    println!(
        "VALID: {} records from runner {}, Merkle root {}",
        report.records,
        &report.runner_key_id[..16],
        report.merkle_root.unwrap_or_default()
    );
    for run in &report.runs {
        println!(
            "  run #{}: {} ({}) signed by {} -> {} {}",
            run.record,
            run.capsule,
            run.kind,
            run.signers.join(", "),
            run.status,
            run.verdict.as_deref().unwrap_or("")
        );
    }
    for refusal in &report.refusals {
        println!("  refused #{}: {}", refusal.record, refusal.reason);
    }
    Ok(())
}

/// Runs the demo into a temporary directory and exports its evidence.
fn make_bundle() -> Result<(PathBuf, PathBuf)> {
    let dir = tempfile::tempdir()?.keep();
    let exe = std::env::current_exe()?;
    // The example binaries sit next to the edge-runner binary's deps directory.
    let runner = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("edge-runner"))
        .filter(|p| p.is_file());
    let Some(runner) = runner else {
        bail!("build the CLI first (cargo build -p edge-runner), or pass BUNDLE RUNNER_PUB");
    };
    let demo = dir.join("demo");
    let status = std::process::Command::new(&runner)
        .args(["demo", "--out"])
        .arg(&demo)
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        bail!("the demo failed");
    }
    let bundle = dir.join("evidence.bundle");
    let status = std::process::Command::new(&runner)
        .args(["evidence", "export"])
        .arg(demo.join("evidence"))
        .arg("--trust")
        .arg(demo.join("trust"))
        .arg("--runner-key")
        .arg(demo.join("runner.pub"))
        .arg("--out")
        .arg(&bundle)
        .status()?;
    if !status.success() {
        bail!("export failed");
    }
    Ok((bundle, demo.join("runner.pub")))
}
