//! Helpers the CLI test binaries share: the binary with a private key
//! directory, keys, a trust store, output as text.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

pub fn edge_runner(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edge-runner"))
        .args(args)
        .env_remove("EDGE_RUNNER_KEY")
        .env("XDG_STATE_HOME", state_home())
        .output()
        .expect("run edge-runner")
}

/// The runner's default key directory for this test binary (never the user's own).
pub fn state_home() -> &'static Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("cli-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

pub const SITE: &str = "plant-7";

/// A trust root policy trusting `publisher_pub` for `test`, with root key `root_pub`.
pub fn policy(version: u64, expires: &str, root_pubs: &[&Path], publisher_pub: &Path) -> String {
    let pem = std::fs::read_to_string(publisher_pub).unwrap();
    let mut text = format!(
        "format = 1\nname = \"cli-root\"\nversion = {version}\nexpires = {expires}\nroot-threshold = {}\n\
         [thresholds.test]\nkeys = 1\norganisations = 1\n\
         [thresholds.reproduce]\nkeys = 1\norganisations = 1\n\
         [thresholds.remediate]\nkeys = 2\norganisations = 2\n\
         [[publisher]]\nname = \"acme-ci\"\norganisation = \"Acme\"\nkinds = [\"test\"]\nnames = [\"*\"]\naudiences = [\"*\"]\npublic-key = \"\"\"\n{pem}\"\"\"\n\
         [publisher.ceiling]\nfuel = 10000000000\n",
        root_pubs.len()
    );
    for (i, root_pub) in root_pubs.iter().enumerate() {
        let root_pem = std::fs::read_to_string(root_pub).unwrap();
        text.push_str(&format!(
            "[[root-key]]\nname = \"root-{i}\"\npublic-key = \"\"\"\n{root_pem}\"\"\"\n"
        ));
    }
    text
}

pub fn keys(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let out = edge_runner(&["keys", "generate", "--out", p(dir), "--name", name]);
    assert!(out.status.success(), "{}", text(&out));
    (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    )
}

/// Creates a trust store in DIR/trust with `trust init`, trusting the key at `publisher_pub`.
pub fn write_trust_root(dir: &Path, publisher_pub: &Path) -> std::path::PathBuf {
    let (root_key, root_pub) = keys(dir, "root");
    let policy_path = dir.join("root.toml");
    std::fs::write(
        &policy_path,
        policy(1, "2099-01-01T00:00:00Z", &[&root_pub], publisher_pub),
    )
    .unwrap();
    let trust = dir.join("trust");
    let out = edge_runner(&[
        "trust",
        "init",
        "--policy",
        p(&policy_path),
        "--key",
        p(&root_key),
        "--dir",
        p(&trust),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    trust
}
