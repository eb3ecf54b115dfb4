//! The CLI as a user runs it: keys, sign, verify, run, evidence verify, demo; exit codes and messages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

fn edge_runner(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edge-runner"))
        .args(args)
        .output()
        .expect("run edge-runner")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Writes a trust root trusting the public key at `publisher_pub` for every kind.
fn write_trust_root(dir: &Path, publisher_pub: &Path) -> std::path::PathBuf {
    let pem = std::fs::read_to_string(publisher_pub).unwrap();
    let path = dir.join("trust-root.toml");
    std::fs::write(
        &path,
        format!(
            "format = 1\nname = \"cli-root\"\nversion = 1\n\
             [thresholds.test]\nkeys = 1\norganisations = 1\n\
             [thresholds.reproduce]\nkeys = 1\norganisations = 1\n\
             [thresholds.remediate]\nkeys = 2\norganisations = 2\n\
             [[publisher]]\nname = \"acme-ci\"\norganisation = \"Acme\"\nkinds = [\"test\"]\npublic-key = \"\"\"\n{pem}\"\"\"\n"
        ),
    )
    .unwrap();
    path
}

/// `edge-runner run` with `input` written to a file.
fn run_with_input(dir: &Path, signed: &Path, trust: &Path, evidence: &Path, input: &str) -> Output {
    let path = dir.join("input.json");
    std::fs::write(&path, input).unwrap();
    edge_runner(&[
        "run",
        p(signed),
        "--trust",
        p(trust),
        "--evidence",
        p(evidence),
        "--input",
        p(&path),
    ])
}

#[test]
fn keys_generate_writes_pkcs8_and_spki_with_private_mode() {
    let dir = tempfile::tempdir().unwrap();
    let out = edge_runner(&[
        "keys",
        "generate",
        "--out",
        p(dir.path()),
        "--name",
        "alice",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let key = std::fs::read_to_string(dir.path().join("alice.key")).unwrap();
    let public = std::fs::read_to_string(dir.path().join("alice.pub")).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("alice.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = edge_runner(&[
        "keys",
        "generate",
        "--out",
        p(dir.path()),
        "--name",
        "alice",
    ]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again).contains("already exists; refusing to overwrite a key"),
        "{}",
        text(&again)
    );
}

/// The whole loop through the CLI, with a publisher key made by OpenSSL when it is installed.
#[test]
fn sign_verify_run_and_verify_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = d.join("pub.key");
    let public = d.join("pub.pub");
    let openssl = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out", p(&key)])
        .status();
    if openssl.is_ok_and(|s| s.success()) {
        let st = Command::new("openssl")
            .args(["pkey", "-in", p(&key), "-pubout", "-out", p(&public)])
            .status()
            .unwrap();
        assert!(st.success());
    } else {
        let out = edge_runner(&["keys", "generate", "--out", p(d), "--name", "pub"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let trust = write_trust_root(d, &public);

    let capsule = capsule_artifacts::JSON_ASSERT;
    let unsigned = d.join("json-assert.wasm");
    std::fs::write(&unsigned, capsule.component).unwrap();
    let signed = d.join("json-assert.signed.wasm");
    let out = edge_runner(&[
        "capsule",
        "sign",
        p(&unsigned),
        "--manifest",
        capsule.manifest_path,
        "--key",
        p(&key),
        "--out",
        p(&signed),
    ]);
    assert!(out.status.success(), "{}", text(&out));

    let out = edge_runner(&["capsule", "verify", p(&signed), "--trust", p(&trust)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("OK: json-assert 1.0.0 (test) is trusted by `cli-root` v1"),
        "{}",
        text(&out)
    );

    let out = edge_runner(&["capsule", "inspect", p(&signed)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("kind:          test"), "{}", text(&out));

    let evidence = d.join("evidence");
    let out = run_with_input(
        d,
        &signed,
        &trust,
        &evidence,
        r#"{"document": {"ok": true}, "assertions": [{"pointer": "/ok", "equals": true}]}"#,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("verdict: pass — all 1 assertions hold"),
        "{}",
        text(&out)
    );
    assert!(
        evidence.join("runner.pub").is_file(),
        "runner key is created on first use"
    );

    let out = run_with_input(
        d,
        &signed,
        &trust,
        &evidence,
        r#"{"document": {"ok": false}, "assertions": [{"pointer": "/ok", "equals": true}]}"#,
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));

    let mut bytes = std::fs::read(&signed).unwrap();
    bytes[2000] ^= 0x01;
    let tampered = d.join("tampered.wasm");
    std::fs::write(&tampered, &bytes).unwrap();
    let out = edge_runner(&[
        "run",
        p(&tampered),
        "--trust",
        p(&trust),
        "--evidence",
        p(&evidence),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("the module was altered after signing"),
        "{}",
        text(&out)
    );

    let runner_pub = evidence.join("runner.pub");
    let out = edge_runner(&[
        "evidence",
        "verify",
        p(&evidence),
        "--runner-key",
        p(&runner_pub),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).starts_with("VALID: 8 records"), "{}", text(&out));

    let log = evidence.join("evidence.log");
    let mut log_bytes = std::fs::read(&log).unwrap();
    let at = log_bytes.len() - 3;
    log_bytes[at] ^= 0x01;
    std::fs::write(&log, &log_bytes).unwrap();
    let out = edge_runner(&[
        "evidence",
        "verify",
        p(&evidence),
        "--runner-key",
        p(&runner_pub),
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains("record 7 at byte")
            && text(&out).contains("signature does not verify under the runner key"),
        "{}",
        text(&out)
    );
}

#[test]
fn missing_trust_root_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let out = edge_runner(&["capsule", "verify", p(&missing), "--trust", p(&missing)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains(&format!("trust root {}", missing.display())),
        "{}",
        text(&out)
    );
}

#[test]
fn demo_runs_the_whole_loop() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("demo");
    let out = edge_runner(&["demo", "--out", p(&out_dir)]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("verdict: pass"), "{t}");
    assert!(t.contains("verdict: fail"), "{t}");
    assert!(t.contains("is REFUSED"), "{t}");
    assert!(t.contains("Evidence chain VERIFIED: 8 records"), "{t}");
    assert!(t.contains("FAILS verification"), "{t}");
}
