//! `edge-runner capsule new NAME --kind KIND [--lang rust|python|js]`: a
//! capsule project that builds, passes its own test, and signs and runs as it is.
//!
//! Each project carries the SDK of this runner (written into it, so it builds
//! anywhere with the WIT contract this runner speaks) and a README showing
//! build → sign → run. Python and JavaScript projects fetch their build tools,
//! pinned, from PyPI and npm with their own `build.sh`; nothing is vendored.
//! The manifest is `capsule.toml` in every language, signed with the component
//! by `edge-runner capsule sign --manifest`, exactly as for Rust.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::Exit;
use crate::capsule::{Kind, validate_name};

mod polyglot;
use polyglot::Lang;

/// The capsule SDK this runner was built with, file by file (path inside
/// the SDK, content). `capsule new` writes it into the new crate as
/// `capsule-sdk/`, so the crate builds on any machine, with the SDK that
/// matches this runner's WIT contract, whoever installed the binary and how.
const SDK_FILES: [(&str, &str); 5] = [
    (
        "src/lib.rs",
        include_str!("../../../capsule-sdk/src/lib.rs"),
    ),
    (
        "src/http.rs",
        include_str!("../../../capsule-sdk/src/http.rs"),
    ),
    (
        "src/misuse.rs",
        include_str!("../../../capsule-sdk/src/misuse.rs"),
    ),
    (
        "wit/capsule.wit",
        include_str!("../../../capsule-sdk/wit/capsule.wit"),
    ),
    (
        "macros/src/lib.rs",
        include_str!("../../../capsule-sdk/macros/src/lib.rs"),
    ),
];

/// The SDK's version (the workspace's).
const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The vendored SDK's manifests: the workspace's dependency requirements,
/// written out, since the copy is not in our workspace.
fn sdk_manifests() -> [(&'static str, String); 2] {
    [
        (
            "Cargo.toml",
            format!(
                r#"# capsule-sdk {SDK_VERSION}, as shipped with edge-runner {SDK_VERSION} (written by `edge-runner capsule new`).
[package]
name = "capsule-sdk"
version = "{SDK_VERSION}"
edition = "2024"
license = "Apache-2.0"
publish = false

[dependencies]
capsule-sdk-macros = {{ path = "macros" }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"
wit-bindgen = {{ version = "0.61", default-features = false, features = ["macros", "realloc"] }}
wasi = "0.14"
"#
            ),
        ),
        (
            "macros/Cargo.toml",
            format!(
                r#"[package]
name = "capsule-sdk-macros"
version = "{SDK_VERSION}"
edition = "2024"
license = "Apache-2.0"
publish = false

[lib]
proc-macro = true

[dependencies]
proc-macro2 = "1"
quote = "1"
syn = {{ version = "2", features = ["full"] }}
"#
            ),
        ),
    ]
}

#[derive(Debug, Args)]
pub(super) struct CapsuleNew {
    /// The capsule's name: lowercase letters, digits and `-`.
    name: String,
    /// What it is for.
    #[arg(long, value_parser = ["test", "reproduce", "remediate"])]
    kind: String,
    /// The language it is written in.
    #[arg(long, value_parser = ["rust", "python", "js"], default_value = "rust")]
    lang: String,
    /// Directory to create the crate in (default: ./NAME).
    #[arg(long)]
    out: Option<PathBuf>,
    /// A capsule-sdk checkout to depend on instead of the copy of this runner's SDK that is
    /// written into the crate (for developing the SDK itself).
    #[arg(long)]
    sdk: Option<PathBuf>,
    /// A site that may run the capsule (the manifest's `audience`); repeatable. Default: `*`,
    /// every site — which a publisher limited to some sites cannot sign for.
    #[arg(long = "audience", value_name = "SITE")]
    audiences: Vec<String>,
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
        for site in &self.audiences {
            if site != "*" {
                crate::capsule::validate_site(site)
                    .map_err(|e| anyhow::anyhow!("--audience `{site}`: {e}"))?;
            }
        }
        if self.sdk.is_some() && self.lang != "rust" {
            bail!(
                "--sdk is for Rust capsules; a {} project carries this runner's SDK (drop --sdk)",
                self.lang
            );
        }
        let sdk = match &self.sdk {
            Some(p) => Some(p.canonicalize().with_context(|| {
                format!(
                    "--sdk {}: not found; give the path of a capsule-sdk checkout",
                    p.display()
                )
            })?),
            None => None,
        };
        let audience = if self.audiences.is_empty() {
            vec!["*".to_string()]
        } else {
            self.audiences.clone()
        };
        match self.lang.as_str() {
            "python" => return polyglot::write(&dir, &self.name, kind, &audience, Lang::Python),
            "js" => return polyglot::write(&dir, &self.name, kind, &audience, Lang::Js),
            _ => {}
        }
        write_crate(&dir, &self.name, kind, sdk.as_deref(), &audience)?;
        say!("created {} ({kind} capsule `{}`)", dir.display(), self.name)?;
        say!("  cd {}", dir.display())?;
        say!("  cargo test                                   # its own test, natively")?;
        say!("  cargo build --release --target wasm32-wasip2  # the component")?;
        say!(
            "  edge-runner capsule dev-setup                  # DEVELOPMENT ONLY: a key and trust store to try it (README.md)"
        )?;
        say!(
            "  edge-runner capsule sign target/wasm32-wasip2/release/{}.wasm --manifest capsule.toml --key edge-runner-dev/dev-publisher.key --out {}.signed.wasm",
            self.name.replace('-', "_"),
            self.name
        )?;
        Ok(Exit::Ok)
    }
}

fn write_crate(
    dir: &Path,
    name: &str,
    kind: Kind,
    sdk: Option<&Path>,
    audience: &[String],
) -> Result<()> {
    fs::create_dir_all(dir.join("src")).with_context(|| dir.display().to_string())?;
    let sdk_dependency = match sdk {
        Some(path) => format!(
            "# capsule-sdk from a checkout given with --sdk\ncapsule-sdk = {{ path = \"{}\" }}",
            path.display().to_string().replace('\\', "/")
        ),
        None => {
            write_sdk(&dir.join("capsule-sdk"))?;
            format!(
                "# capsule-sdk {SDK_VERSION}, the SDK of the edge-runner that created this crate, copied into\n# ./capsule-sdk so the crate builds anywhere; `edge-runner capsule new` writes the SDK of its version\ncapsule-sdk = {{ path = \"capsule-sdk\" }}"
            )
        }
    };
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
{sdk_dependency}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

[profile.release]
opt-level = "s"
strip = "debuginfo"
"#
            ),
        ),
        ("capsule.toml", manifest(name, kind, audience)),
        ("README.md", rust_readme(name, kind)),
        ("src/lib.rs", lib_rs(kind)),
        (
            ".gitignore",
            "/target\n# signing keys never go into version control\n*.key\n*.pem\n# `edge-runner capsule dev-setup`: development keys, trust store and evidence\n/edge-runner-dev/\n".to_string(),
        ),
    ];
    for (file, text) in files {
        let path = dir.join(file);
        fs::write(&path, text).with_context(|| path.display().to_string())?;
    }
    Ok(())
}

/// The manifest every new project starts from, whatever its language: signed
/// with the component by `edge-runner capsule sign --manifest capsule.toml`.
fn manifest(name: &str, kind: Kind, audience: &[String]) -> String {
    let audience = audience
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"# Signed with the component: `edge-runner capsule sign ... --manifest capsule.toml`.
name = "{name}"
version = "0.1.0"
kind = "{kind}"
description = "A {kind} capsule; replace this line with what it checks, for the humans who approve and audit it."
audience = [{audience}]          # the sites that may run it ("*": every site); your trust-root publisher entry must allow them

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
    )
}

/// The README of a Rust project: build → sign → run, on the author's machine
/// with the development set-up, then for real.
fn rust_readme(name: &str, kind: Kind) -> String {
    let wasm = name.replace('-', "_");
    let try_it = super::dev::try_it_block(
        "cargo test                                    # its unit test, natively\n\
         cargo build --release --target wasm32-wasip2  # the component",
        &format!("target/wasm32-wasip2/release/{wasm}.wasm"),
        name,
    );
    format!(
        r#"# {name}

A `{kind}` capsule for the Edge Runner, in Rust. Input: `{{"status": "up"}}`.
`src/lib.rs` is the capsule (one function, one attribute); `capsule-sdk/` is
the SDK of the edge-runner that created this crate.

{try_it}
## Release

Sign with your own publisher key (the trust-root holders add its `.pub` to
the sites' trust root) and run it at a site:

```sh
edge-runner keys generate --out ~/keys --name publisher      # once; send publisher.pub to the trust-root holders
edge-runner capsule sign target/wasm32-wasip2/release/{wasm}.wasm --manifest capsule.toml \
    --key ~/keys/publisher.key --out {name}.signed.wasm
edge-runner run {name}.signed.wasm --trust /etc/edge-runner/trust --site plant-7 \
    --evidence /var/lib/edge-runner --input input.json
```
"#
    )
}

/// Writes the SDK this runner was built with into `dir`.
fn write_sdk(dir: &Path) -> Result<()> {
    let manifests = sdk_manifests();
    let files = SDK_FILES
        .iter()
        .map(|(path, text)| (*path, *text))
        .chain(manifests.iter().map(|(path, text)| (*path, text.as_str())));
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| parent.display().to_string())?;
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

    use super::*;

    /// Every source file of the SDK is in the copy a scaffold gets: a file
    /// added to the SDK and not here would leave scaffolds that do not build.
    #[test]
    fn the_embedded_sdk_has_every_file_of_the_sdk() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../capsule-sdk");
        let mut on_disk = Vec::new();
        for sub in ["src", "wit", "macros/src"] {
            for entry in fs::read_dir(root.join(sub)).unwrap() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                on_disk.push(format!("{sub}/{name}"));
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = SDK_FILES.iter().map(|(p, _)| p.to_string()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk, "update SDK_FILES in cli/scaffold.rs");
    }

    /// Every file `dir` holds below it, as paths relative to it, except `skip`ped names.
    fn files_below(dir: &Path, skip: &[&str]) -> Vec<String> {
        let mut found = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(here) = pending.pop() {
            for entry in fs::read_dir(&here).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_str().unwrap().to_string();
                if skip.iter().any(|s| name == *s || name.ends_with(s)) {
                    continue;
                }
                if path.is_dir() {
                    pending.push(path);
                } else {
                    let relative = path.strip_prefix(dir).unwrap();
                    found.push(relative.to_str().unwrap().to_string());
                }
            }
        }
        found.sort();
        found
    }

    /// Every file of the Python and JavaScript SDKs (but their own tests) is in the copy
    /// a project gets, and the copies of the WIT contract are the contract.
    #[test]
    fn the_embedded_python_and_js_sdks_have_every_file_and_the_same_contract() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../capsule-sdk");
        let skip = ["tests", "test", "__pycache__", ".egg-info", "node_modules"];
        for (lang, files) in [
            ("python", &polyglot::PYTHON_SDK_FILES[..]),
            ("js", &polyglot::JS_SDK_FILES[..]),
        ] {
            let mut embedded: Vec<String> = files.iter().map(|(p, _)| p.to_string()).collect();
            embedded.sort();
            assert_eq!(
                embedded,
                files_below(&root.join(lang), &skip),
                "update {lang} in cli/scaffold/polyglot.rs"
            );
        }
        let contract = include_str!("../../../capsule-sdk/wit/capsule.wit");
        for (lang, files) in [
            ("python", &polyglot::PYTHON_SDK_FILES[..]),
            ("js", &polyglot::JS_SDK_FILES[..]),
        ] {
            let copy = files
                .iter()
                .find(|(p, _)| p.ends_with("wit/capsule.wit"))
                .unwrap()
                .1;
            assert_eq!(
                copy, contract,
                "the {lang} SDK's capsule.wit differs from capsule-sdk/wit/capsule.wit"
            );
        }
    }
}
