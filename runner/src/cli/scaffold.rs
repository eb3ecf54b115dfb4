//! `edge-runner capsule new NAME --kind KIND`: a capsule crate that builds,
//! passes its own test, and signs and runs as it is.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::Exit;
use crate::capsule::{Kind, validate_name};

/// Where this runner's SDK lives, for the new crate's path dependency.
const SDK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../capsule-sdk");

#[derive(Debug, Args)]
pub(super) struct CapsuleNew {
    /// The capsule's name: lowercase letters, digits and `-`.
    name: String,
    /// What it is for.
    #[arg(long, value_parser = ["test", "reproduce", "remediate"])]
    kind: String,
    /// Directory to create the crate in (default: ./NAME).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The capsule-sdk crate to depend on (default: the one this runner was built with).
    #[arg(long)]
    sdk: Option<PathBuf>,
}

impl CapsuleNew {
    pub(super) fn execute(self) -> Result<Exit> {
        let kind = Kind::parse(&self.kind)
            .ok_or_else(|| anyhow::anyhow!("--kind must be test, reproduce or remediate"))?;
        validate_name(&self.name).map_err(anyhow::Error::msg)?;
        let dir = self
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from(&self.name));
        if dir.exists() && dir.read_dir().map(|mut d| d.next().is_some())? {
            bail!(
                "{} is not empty; choose a new directory with --out",
                dir.display()
            );
        }
        let sdk = match &self.sdk {
            Some(p) => p.clone(),
            None => PathBuf::from(SDK_DIR),
        };
        let sdk = sdk.canonicalize().with_context(|| {
            format!(
                "capsule-sdk not found at {}; pass --sdk PATH to your checkout's capsule-sdk",
                sdk.display()
            )
        })?;
        write_crate(&dir, &self.name, kind, &sdk)?;
        say!("created {} ({kind} capsule `{}`)", dir.display(), self.name)?;
        say!("  cd {}", dir.display())?;
        say!("  cargo test                                   # its own test, natively")?;
        say!("  cargo build --release --target wasm32-wasip2  # the component")?;
        say!(
            "  edge-runner capsule sign target/wasm32-wasip2/release/{}.wasm --manifest capsule.toml --key YOUR.key --out {}.signed.wasm",
            self.name.replace('-', "_"),
            self.name
        )?;
        Ok(Exit::Ok)
    }
}

fn write_crate(dir: &Path, name: &str, kind: Kind, sdk: &Path) -> Result<()> {
    fs::create_dir_all(dir.join("src")).with_context(|| dir.display().to_string())?;
    let sdk_path = sdk.display().to_string().replace('\\', "/");
    let files = [
        (
            "Cargo.toml",
            format!(
                r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

# Its own workspace, so it builds wherever it is.
[workspace]

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
capsule-sdk = {{ path = "{sdk_path}" }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

[profile.release]
opt-level = "s"
strip = "debuginfo"
"#
            ),
        ),
        (
            "capsule.toml",
            format!(
                r#"# Signed with the component: `edge-runner capsule sign ... --manifest capsule.toml`.
name = "{name}"
version = "0.1.0"
kind = "{kind}"
description = "TODO: one line for the humans who approve and audit this capsule."
audience = ["*"]          # or the sites that may run it

# Ask only for what it needs; the trust root and the site policy must allow it.
[capabilities]
files = []                # e.g. [{{ path = "/var/log/app", access = "read-only" }}]
egress = []               # e.g. ["https://status.example.com:443"]
config = []               # e.g. ["target-url"]

[limits]
memory-bytes = 67108864
fuel = 1000000000
wall-time-ms = 5000
"#
            ),
        ),
        ("src/lib.rs", lib_rs(kind)),
        (".gitignore", "/target\n".to_string()),
    ];
    for (file, text) in files {
        let path = dir.join(file);
        fs::write(&path, text).with_context(|| path.display().to_string())?;
    }
    Ok(())
}

fn lib_rs(kind: Kind) -> String {
    let (attr, body, test) = match kind {
        Kind::Test => (
            "test",
            r#"/// Passes when the input JSON has `"status": "up"`.
fn judge(input: &Input) -> Outcome {
    if input.status == "up" {
        Outcome::pass("service is up")
    } else {
        Outcome::fail(format!("service is {}", input.status))
            .with_finding(Finding::new("status", Severity::High, "expected `up`"))
    }
}"#,
            r#"assert_eq!(judge(&Input { status: "up".into() }).verdict, Verdict::Pass);
        assert_eq!(judge(&Input { status: "down".into() }).verdict, Verdict::Fail);"#,
        ),
        Kind::Reproduce => (
            "reproduce",
            r#"/// Fails (the failure reproduces) when the recorded status is still `down`.
fn judge(input: &Input) -> Outcome {
    if input.status == "down" {
        Outcome::fail("the failure reproduces")
            .with_finding(Finding::new("reproduced", Severity::High, "status is still `down`"))
    } else {
        Outcome::pass("the failure does not reproduce")
    }
}"#,
            r#"assert_eq!(judge(&Input { status: "down".into() }).verdict, Verdict::Fail);
        assert_eq!(judge(&Input { status: "up".into() }).verdict, Verdict::Pass);"#,
        ),
        Kind::Remediate => (
            "remediate",
            r#"/// Proposes setting `status` to `up` when it is not (the capsule never applies it).
fn judge(input: &Input) -> Outcome {
    if input.status == "up" {
        Outcome::pass("nothing to fix")
    } else {
        Outcome::fail(format!("status is {}; a fix is proposed", input.status))
            .with_finding(Finding::new("status", Severity::Medium, "expected `up`"))
    }
}"#,
            r#"assert_eq!(judge(&Input { status: "up".into() }).verdict, Verdict::Pass);
        assert_eq!(judge(&Input { status: "down".into() }).verdict, Verdict::Fail);"#,
        ),
    };
    let propose = if kind == Kind::Remediate {
        r#"
    if outcome.verdict == Verdict::Fail {
        cx.propose(&capsule_sdk::Proposal {
            target: "status".into(),
            diff: format!("-status = {}\n+status = up\n", input.status),
            rollback: format!("-status = up\n+status = {}\n", input.status),
            rationale: "the service must be up".into(),
        })?;
    }"#
    } else {
        ""
    };
    format!(
        r#"//! A {kind} capsule. Input: `{{"status": "up"}}`.

use capsule_sdk::{{Context, Error, Finding, Outcome, Severity, Verdict}};
use serde::Deserialize;

#[derive(Deserialize)]
struct Input {{
    status: String,
}}

{body}

#[capsule_sdk::{attr}]
fn run(cx: &mut Context) -> Result<Outcome, Error> {{
    let input: Input = cx.input_json()?;
    cx.evidence("input", "application/json", cx.input())?;
    let outcome = judge(&input);{propose}
    Ok(outcome)
}}

#[cfg(test)]
mod tests {{
    use super::*;

    #[test]
    fn judges_the_input() {{
        {test}
    }}
}}
"#,
        kind = kind.as_str()
    )
}
