//! The CLI as a user runs it: keys, sign, verify, run, evidence verify, demo; exit codes and messages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{SITE, edge_runner, keys, p, policy, state_home, text, write_trust_root};

/// `edge-runner run` with `input` written to a file.
fn run_with_input(dir: &Path, signed: &Path, trust: &Path, evidence: &Path, input: &str) -> Output {
    let path = dir.join("input.json");
    std::fs::write(&path, input).unwrap();
    edge_runner(&[
        "run",
        p(signed),
        "--trust",
        p(trust),
        "--site",
        SITE,
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

/// The whole loop through the CLI, with a publisher key from `keys generate`.
#[test]
fn sign_verify_run_and_verify_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keys(dir.path(), "pub");
    sign_verify_run_and_verify_evidence_with(dir.path(), &key, &public);
}

/// The same loop with a publisher key made by OpenSSL: our PEM files interoperate.
#[test]
#[ignore = "needs the openssl binary; .ci/run installs it and runs the ignored tests"]
fn sign_verify_run_and_verify_evidence_with_an_openssl_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = d.join("pub.key");
    let public = d.join("pub.pub");
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .status()
            .expect("the openssl binary (install it, e.g. `apt-get install openssl`)");
        assert!(status.success(), "openssl {args:?}: {status}");
    };
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", p(&key)]);
    openssl(&["pkey", "-in", p(&key), "-pubout", "-out", p(&public)]);
    // `keys id` gives one id for OpenSSL's private key and its public key.
    let out = edge_runner(&["keys", "id", p(&key), p(&public)]);
    assert!(out.status.success(), "{}", text(&out));
    let ids: Vec<&str> = std::str::from_utf8(&out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[0].len(), 64);
    sign_verify_run_and_verify_evidence_with(d, &key, &public);
}

/// Keys we write are keys OpenSSL reads: `openssl pkey` takes our private key
/// (PKCS#8 v1, as `openssl genpkey` writes it) and derives exactly our `.pub`.
#[test]
#[ignore = "needs the openssl binary; .ci/run installs it and runs the ignored tests"]
fn openssl_reads_our_private_key_and_derives_our_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keys(dir.path(), "ours");
    let out = Command::new("openssl")
        .args(["pkey", "-in", p(&key), "-pubout"])
        .output()
        .expect("the openssl binary (install it, e.g. `apt-get install openssl`)");
    assert!(
        out.status.success(),
        "openssl refused our key: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        std::fs::read_to_string(&public).unwrap()
    );
    // And the private key text is what OpenSSL itself would write for it.
    let out = Command::new("openssl")
        .args(["pkey", "-in", p(&key)])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        std::fs::read_to_string(&key).unwrap()
    );
}

fn sign_verify_run_and_verify_evidence_with(d: &Path, key: &Path, public: &Path) {
    let trust = write_trust_root(d, public);

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
        p(key),
        "--out",
        p(&signed),
    ]);
    assert!(out.status.success(), "{}", text(&out));

    let out = edge_runner(&[
        "capsule",
        "verify",
        p(&signed),
        "--trust",
        p(&trust),
        "--site",
        SITE,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(
            "OK: json-assert 1.0.0 (test) is trusted by `cli-root` v1 for site `plant-7`"
        ),
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
        "runner key is created on first use, its public key copied beside the log"
    );
    let default_key = state_home().join("edge-runner/runner.key");
    assert!(default_key.is_file(), "the key lives at the default path");
    assert!(
        !evidence.join("runner.key").exists(),
        "no private key in the evidence directory"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&default_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

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
        "--site",
        SITE,
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
    assert!(text(&out).contains("VALID: 13 records"), "{}", text(&out));
    assert!(
        text(&out).contains("consistent with a checkpoint covering 13 records"),
        "{}",
        text(&out)
    );

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
        text(&out).contains("record 12 at byte")
            && text(&out).contains("signature does not verify under the runner key"),
        "{}",
        text(&out)
    );
}

#[test]
fn missing_trust_store_refuses_naming_the_directory_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let capsule = dir.path().join("capsule.wasm");
    std::fs::write(&capsule, capsule_artifacts::JSON_ASSERT.component).unwrap();
    let out = edge_runner(&[
        "capsule",
        "verify",
        p(&capsule),
        "--trust",
        p(&missing),
        "--site",
        SITE,
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("trust root {}", missing.display()))
            && text(&out).contains("create it with `edge-runner trust init`"),
        "{}",
        text(&out)
    );
}

/// Signs json-assert with `key` into DIR/name; returns its path.
fn sign(dir: &Path, key: &Path, name: &str, extra: &[&str]) -> std::path::PathBuf {
    let unsigned = dir.join("json-assert.wasm");
    std::fs::write(&unsigned, capsule_artifacts::JSON_ASSERT.component).unwrap();
    let out_path = dir.join(name);
    let mut args = vec![
        "capsule",
        "sign",
        p(&unsigned),
        "--manifest",
        capsule_artifacts::JSON_ASSERT.manifest_path,
        "--key",
        p(key),
        "--out",
        p(&out_path),
    ];
    args.extend_from_slice(extra);
    let out = edge_runner(&args);
    assert!(out.status.success(), "{}", text(&out));
    out_path
}

#[test]
fn detached_signature_runs_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = keys(d, "publisher");
    let trust = write_trust_root(d, &public);
    let sig = sign(d, &key, "json-assert.wasm.sig", &["--detached"]);
    let component = d.join("json-assert.wasm");
    assert_eq!(
        std::fs::read(&component).unwrap(),
        capsule_artifacts::JSON_ASSERT.component,
        "--detached leaves the component unchanged"
    );
    let out = edge_runner(&[
        "capsule",
        "inspect",
        p(&component),
        "--signature",
        p(&sig),
        "--trust",
        p(&trust),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("signatures:    detached"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("= publisher `acme-ci` (Acme)"),
        "{}",
        text(&out)
    );
    let evidence = d.join("evidence");
    let out = edge_runner(&[
        "run",
        p(&component),
        "--signature",
        p(&sig),
        "--trust",
        p(&trust),
        "--site",
        SITE,
        "--evidence",
        p(&evidence),
    ]);
    // Empty input: json-assert reports an error verdict, but it ran.
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(
        text(&out).contains("ran json-assert 1.0.0 (test)"),
        "{}",
        text(&out)
    );
    // Without the signature file, the bare component is refused with the fix.
    let out = edge_runner(&[
        "run",
        p(&component),
        "--trust",
        p(&trust),
        "--site",
        SITE,
        "--evidence",
        p(&evidence),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("capsule is not signed"),
        "{}",
        text(&out)
    );
}

#[test]
fn trust_rotation_staged_signed_installed_and_shown() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, publisher_pub) = keys(d, "publisher");
    let trust = write_trust_root(d, &publisher_pub);
    let old_root = d.join("root.key");
    let (new_root, new_root_pub) = keys(d, "root2");
    let v2 = d.join("root-v2.toml");
    std::fs::write(
        &v2,
        policy(2, "2099-01-01T00:00:00Z", &[&new_root_pub], &publisher_pub),
    )
    .unwrap();

    // Signed by the new key alone, it cannot be installed.
    let out = edge_runner(&[
        "trust",
        "rotate",
        "--dir",
        p(&trust),
        "--policy",
        p(&v2),
        "--key",
        p(&new_root),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("must be signed by the thresholds of both v1 and v2"),
        "{}",
        text(&out)
    );
    assert!(!trust.join("2.root.cose").exists());

    // Staged inside the store, it would break every run: refused, nothing written.
    let out = edge_runner(&[
        "trust",
        "rotate",
        "--dir",
        p(&trust),
        "--policy",
        p(&v2),
        "--key",
        p(&new_root),
        "--stage",
        p(&trust.join("2.root.cose")),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("stage it outside the store"),
        "{}",
        text(&out)
    );
    assert!(!trust.join("2.root.cose").exists());

    // Staged by the new key holder, co-signed by the old one, then installed.
    let staged = d.join("2.root.cose");
    let out = edge_runner(&[
        "trust",
        "rotate",
        "--dir",
        p(&trust),
        "--policy",
        p(&v2),
        "--key",
        p(&new_root),
        "--stage",
        p(&staged),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("can still sign: root-0"),
        "{}",
        text(&out)
    );
    let out = edge_runner(&["trust", "install", p(&staged), "--dir", p(&trust)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("signed by 0 of the root keys of the version it replaces (v1)"),
        "{}",
        text(&out)
    );
    let out = edge_runner(&[
        "trust",
        "sign",
        p(&staged),
        "--key",
        p(&old_root),
        "--dir",
        p(&trust),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = edge_runner(&["trust", "install", p(&staged), "--dir", p(&trust)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("is at `cli-root` v2"), "{}", text(&out));

    let out = edge_runner(&["trust", "show", p(&trust)]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("v2 "), "{t}");
    assert!(t.contains("by v1 keys: 1 of 1 needed (root-0)"), "{t}");
    assert!(t.contains("current: `cli-root` v2"), "{t}");
}

#[test]
fn expired_trust_root_refuses_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, publisher_pub) = keys(d, "publisher");
    let (root_key, root_pub) = keys(d, "root");
    let policy_path = d.join("root.toml");
    std::fs::write(
        &policy_path,
        policy(1, "2020-01-01T00:00:00Z", &[&root_pub], &publisher_pub),
    )
    .unwrap();
    let trust = d.join("trust");
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
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("`expires` (2020-01-01T00:00:00Z) is in the past"),
        "{}",
        text(&out)
    );
    // A store that was valid when made and has since expired.
    let root_policy = edge_runner::trust::RootPolicy::parse(
        &std::fs::read_to_string(&policy_path).unwrap(),
        "root.toml",
    )
    .unwrap();
    let secret = edge_runner::keys::SecretKey::load(&root_key).unwrap();
    std::fs::create_dir_all(&trust).unwrap();
    std::fs::write(
        trust.join("1.root.cose"),
        edge_runner::trust::SignedRoot::sign_new(&root_policy, &secret).unwrap(),
    )
    .unwrap();
    let out = edge_runner(&["trust", "show", p(&trust)]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("EXPIRED"), "{}", text(&out));

    let signed = sign(d, &key, "signed.wasm", &[]);
    let evidence = d.join("evidence");
    let out = run_with_input(d, &signed, &trust, &evidence, "{}");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("trust root `cli-root` v1 expired at 2020-01-01T00:00:00Z"),
        "{}",
        text(&out)
    );
    let out = edge_runner(&[
        "evidence",
        "verify",
        p(&evidence),
        "--runner-key",
        p(&evidence.join("runner.pub")),
        "-v",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("refused: trust root `cli-root` v1 expired"),
        "{}",
        text(&out)
    );
}

#[test]
fn rollback_is_refused_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = keys(d, "publisher");
    let trust = write_trust_root(d, &public);
    let evidence = d.join("evidence");
    let v1 = sign(d, &key, "v1.wasm", &[]);
    let out = run_with_input(d, &v1, &trust, &evidence, "{}");
    assert_ne!(out.status.code(), Some(3), "{}", text(&out));
    // An older version, genuinely signed, in a later run.
    let manifest = std::fs::read_to_string(capsule_artifacts::JSON_ASSERT.manifest_path)
        .unwrap()
        .replace("version = \"1.0.0\"", "version = \"0.9.0\"");
    let older_manifest = d.join("older.toml");
    std::fs::write(&older_manifest, manifest).unwrap();
    let unsigned = d.join("json-assert.wasm");
    let older = d.join("older.wasm");
    let out = edge_runner(&[
        "capsule",
        "sign",
        p(&unsigned),
        "--manifest",
        p(&older_manifest),
        "--key",
        p(&key),
        "--out",
        p(&older),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run_with_input(d, &older, &trust, &evidence, "{}");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("rollback: capsule `json-assert` 0.9.0 is older than 1.0.0"),
        "{}",
        text(&out)
    );
}

/// `run SIGNED --trust T --site SITE --evidence E` and `extra` flags.
fn run_capsule(signed: &Path, trust: &Path, evidence: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        p(signed),
        "--trust",
        p(trust),
        "--site",
        SITE,
        "--evidence",
        p(evidence),
    ];
    args.extend_from_slice(extra);
    edge_runner(&args)
}

/// An attacker who can write the evidence directory must not find a key
/// there that re-signs it: a runner key inside it is refused unless the
/// operator says, by name, that this is unsafe; a key others can read is refused.
#[test]
fn runner_key_inside_the_evidence_dir_is_refused_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = keys(d, "publisher");
    let trust = write_trust_root(d, &public);
    let signed = sign(d, &key, "v1.wasm", &[]);
    let evidence = d.join("evidence");
    let (inside, _) = keys(&evidence, "runner");
    let run = |extra: &[&str]| {
        let mut args = vec!["--runner-key", p(&inside)];
        args.extend_from_slice(extra);
        run_capsule(&signed, &trust, &evidence, &args)
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "runner key {} is inside the evidence directory {}: whoever can write the evidence could re-sign it with that key",
            inside.display(),
            evidence.display()
        )),
        "{}",
        text(&out)
    );
    assert!(
        !evidence.join("evidence.log").exists(),
        "nothing was signed with that key"
    );
    // Named through a symlink from outside, it is still the same file.
    #[cfg(unix)]
    {
        let link = d.join("key-link.key");
        std::os::unix::fs::symlink(&inside, &link).unwrap();
        let out = run_capsule(&signed, &trust, &evidence, &["--runner-key", p(&link)]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(
            text(&out).contains("is inside the evidence directory"),
            "{}",
            text(&out)
        );
    }
    let out = run(&["--unsafe-key-in-evidence-dir"]);
    assert!(
        text(&out).contains("ran json-assert 1.0.0"),
        "{}",
        text(&out)
    );
    assert!(evidence.join("evidence.log").is_file());

    // A key others may read is refused whatever its place.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let (outside, _) = keys(&d.join("keys"), "runner");
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();
        let other = d.join("evidence-2");
        let out = run_capsule(&signed, &trust, &other, &["--runner-key", p(&outside)]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(
            text(&out).contains(&format!(
                "runner key {} is accessible to other users (mode 0644); run `chmod 600 {}`",
                outside.display(),
                outside.display()
            )),
            "{}",
            text(&out)
        );
    }
}

#[test]
fn runner_key_rotation_hands_the_log_over_and_retires_the_old_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = keys(d, "publisher");
    let trust = write_trust_root(d, &public);
    let signed = sign(d, &key, "v1.wasm", &[]);
    let evidence = d.join("evidence");
    let out = run_with_input(d, &signed, &trust, &evidence, "{}");
    assert!(evidence.join("evidence.log").is_file(), "{}", text(&out));
    let old_pub = d.join("old-runner.pub");
    std::fs::copy(evidence.join("runner.pub"), &old_pub).unwrap();
    let (new_key, new_pub) = keys(&d.join("keys"), "runner-2026");
    let out = edge_runner(&[
        "evidence",
        "rotate-key",
        "--evidence",
        p(&evidence),
        "--new-key",
        p(&new_key),
        "--reason",
        "yearly rotation",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("hands the log from runner key"),
        "{}",
        text(&out)
    );
    // The old key may no longer continue the log; the new one does.
    let out = run_with_input(d, &signed, &trust, &evidence, "{}");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("no longer accepts runner key"),
        "{}",
        text(&out)
    );
    let out = run_capsule(&signed, &trust, &evidence, &["--runner-key", p(&new_key)]);
    assert!(
        text(&out).contains("ran json-assert 1.0.0"),
        "{}",
        text(&out)
    );
    // An auditor holding either public key verifies the whole log.
    for key in [&old_pub, &new_pub] {
        let out = edge_runner(&["evidence", "verify", p(&evidence), "--runner-key", p(key)]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(text(&out).contains("VALID"), "{}", text(&out));
        assert!(
            text(&out).contains("signing keys (rotated): "),
            "{}",
            text(&out)
        );
    }
    let out = edge_runner(&[
        "evidence",
        "verify",
        p(&evidence),
        "--runner-key",
        p(&new_pub),
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["signing_keys"].as_array().unwrap().len(), 2, "{json}");
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
    assert!(t.contains("Evidence chain VERIFIED: 33 records"), "{t}");
    assert!(t.contains("FAILS verification"), "{t}");
    // The three shipped capsules run through the demo.
    assert!(
        t.contains("ran http-probe 1.0.0 (test): completed\n  verdict: pass"),
        "{t}"
    );
    assert!(t.contains("verdict: fail — the failure reproduces"), "{t}");
    assert!(
        t.contains("signed by Edge Runner Demo + Edge Runner Demo Partner"),
        "{t}"
    );
    assert!(t.contains("+max_connections = 200"), "{t}");
    // Issue 14: the proposal is change-control (its radius reaches payments),
    // one approval is refused, two apply it, and the verify plan holds.
    assert!(t.contains("tier        change-control"), "{t}");
    assert!(
        t.contains("apply with alice's approval alone is REFUSED"),
        "{t}"
    );
    assert!(t.contains("the runner APPLIED it"), "{t}");
    assert!(t.contains("the verify plan passed: pass"), "{t}");
    assert!(t.contains("Chain of authority:"), "{t}");
    // The runner, not the capsule, wrote the approved change.
    assert_eq!(
        std::fs::read_to_string(out_dir.join("config/app.conf")).unwrap(),
        "[pool]\nmax_connections = 200\ntls = on\n"
    );
}

#[test]
fn site_policy_names_the_site_and_a_conflicting_site_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = keys(d, "publisher");
    let trust = write_trust_root(d, &public);
    let signed = sign(d, &key, "signed.wasm", &[]);
    let policy = d.join("site-policy.toml");
    std::fs::write(
        &policy,
        "format = 1\nsite = \"plant-7\"\n[limits]\nfuel = 5000000000\n",
    )
    .unwrap();
    let input = d.join("in.json");
    std::fs::write(
        &input,
        r#"{"document": {"ok": true}, "assertions": [{"pointer": "/ok", "equals": true}]}"#,
    )
    .unwrap();
    let evidence = d.join("evidence");
    let base = [
        "run",
        p(&signed),
        "--trust",
        p(&trust),
        "--site-policy",
        p(&policy),
        "--evidence",
        p(&evidence),
        "--input",
        p(&input),
    ];
    let out = edge_runner(&base);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut conflicting = base.to_vec();
    conflicting.extend(["--site", "plant-9"]);
    let out = edge_runner(&conflicting);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("--site is `plant-9` but")
            && text(&out).contains("is the policy of site `plant-7`"),
        "{}",
        text(&out)
    );
    std::fs::write(&policy, "format = 1\nsite = \"plant-7\"\nunknown = 1\n").unwrap();
    let out = edge_runner(&base);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("site policy"), "{}", text(&out));
}

/// Runs the demo into DIR/demo and exports a bundle to DIR/bundle.cbor.
fn demo_bundle(d: &Path) -> std::path::PathBuf {
    let demo = d.join("demo");
    let out = edge_runner(&["demo", "--out", p(&demo)]);
    assert!(out.status.success(), "{}", text(&out));
    let bundle = d.join("bundle.cbor");
    let out = edge_runner(&[
        "evidence",
        "export",
        p(&demo.join("evidence")),
        "--trust",
        p(&demo.join("trust")),
        "--runner-key",
        p(&demo.join("runner.pub")),
        "--out",
        p(&bundle),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    bundle
}

#[test]
fn exported_bundle_verifies_offline_with_one_command() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bundle = demo_bundle(d);
    let runner_pub = d.join("demo/runner.pub");
    let out = edge_runner(&[
        "evidence",
        "verify",
        p(&bundle),
        "--runner-key",
        p(&runner_pub),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("VALID: 33 records"), "{}", text(&out));
    assert!(
        text(&out).contains("7 runs, 0 unfinished, 2 refusals"),
        "{}",
        text(&out)
    );

    // The demo is signed with the public demo keys: every report says so.
    assert!(
        text(&out).contains(
            "WARNING: DEMO KEY — the runner key signing from record 0 is the public demo key `demo-runner`"
        ),
        "{}",
        text(&out)
    );
    let out = edge_runner(&["evidence", "verify", p(&bundle), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["valid"], true);
    assert_eq!(json["runner_key_source"], "bundle");
    let demo: Vec<&str> = json["demo_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        demo.iter()
            .any(|l| l.contains("is signed by the public demo key `demo-publisher`")),
        "{demo:?}"
    );
    let runs: Vec<(String, String)> = json["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["capsule"].as_str().unwrap().to_string(),
                r["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect = |c: &str, v: &str| (c.to_string(), v.to_string());
    assert_eq!(
        runs,
        [
            expect("json-assert 1.0.0", "pass"),
            expect("json-assert 1.0.0", "fail"),
            expect("http-probe 1.0.0", "pass"),
            expect("replay 1.0.0", "fail"),
            expect("config-fix 1.0.0", "fail"),
            // Staging: the test registered for app-config, against the staged copy.
            expect("json-assert 1.0.0", "pass"),
            // The verify plan after apply: config-fix passes now.
            expect("config-fix 1.0.0", "pass"),
        ]
    );
    assert_eq!(json["runs"][4]["signers"].as_array().unwrap().len(), 2);
    assert_eq!(json["checkpoint_size"], 33);
    let chain = &json["remediations"][0];
    assert_eq!(chain["tier"], "change-control", "{json}");
    assert_eq!(
        chain["authorized_by"],
        serde_json::json!(["alice", "bob"]),
        "{json}"
    );
    assert!(
        chain["verify"].as_str().unwrap().starts_with("pass (held)"),
        "{json}"
    );

    // Another runner's key: refused.
    let (_, other) = keys(d, "other");
    let out = edge_runner(&["evidence", "verify", p(&bundle), "--runner-key", p(&other)]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains("not written by that runner"),
        "{}",
        text(&out)
    );

    // One flipped byte anywhere in the bundle's log: INVALID with the reason.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes.windows(4).position(|w| w == b"json").unwrap();
    bytes[at] ^= 0x01;
    let tampered = d.join("tampered.cbor");
    std::fs::write(&tampered, &bytes).unwrap();
    let out = edge_runner(&["evidence", "verify", p(&tampered), "--json"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["valid"], false);
    assert!(
        json["failure"]
            .as_str()
            .unwrap()
            .contains("does not verify"),
        "{json}"
    );
}

#[test]
fn html_report_is_self_contained_and_escapes_what_it_shows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bundle = demo_bundle(d);
    let html = d.join("report.html");
    let out = edge_runner(&["evidence", "verify", p(&bundle), "--html", p(&html)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains(r#"<p id="verdict" class="verdict valid">VALID"#));
    // No scripts and nothing loaded from elsewhere (URLs may appear as text, e.g. a probe's target).
    for external in ["<script", "src=", "href=", "<link", "@import", "url("] {
        assert!(!page.contains(external), "page contains {external}");
    }
    // Refusal reasons contain backticks and capsule text: shown, escaped.
    assert!(page.contains("rollback: capsule `json-assert` 0.9.0"));
    // Each run shows who signed it, what it was granted and what it found.
    assert!(page.contains(
        "<dt>Signed by</dt><dd><ul><li>demo-publisher (Edge Runner Demo), key 8485038863d55e1c"
    ));
    assert!(page.contains(
        "<li>high assertion.0: `/status` is &quot;degraded&quot;, expected &quot;up&quot;</li>"
    ));
    assert!(page.contains("<li>file /config (read-only)</li>"));
    assert!(page.contains("none given; only checkpoints from the runner&#39;s side were checked"));

    // The auditor's own checkpoint (here: the bundle's) is named as checked.
    let out = edge_runner(&[
        "evidence",
        "verify",
        p(&bundle),
        "--checkpoint",
        p(&bundle),
        "--html",
        p(&html),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("1 checked, covering 33 records; the log extends each unchanged"));

    // An INVALID report does not claim a record count it never made.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes.windows(4).position(|w| w == b"json").unwrap();
    bytes[at] ^= 0x01;
    let tampered = d.join("tampered.cbor");
    std::fs::write(&tampered, &bytes).unwrap();
    let out = edge_runner(&["evidence", "verify", p(&tampered), "--html", p(&html)]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains(r#"class="verdict invalid">INVALID"#));
    assert!(page.contains("<tr><th>Records</th><td><code>not counted: verification stopped at the failure above</code></td></tr>"), "{page}");
}

/// `verify -v` shows, per run, who signed it, what it was granted and
/// denied and what it found; JSON carries the same, and whether the
/// auditor's own checkpoint was checked.
#[test]
fn verbose_report_shows_signers_grants_denials_and_findings() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bundle = demo_bundle(d);
    let out = edge_runner(&["evidence", "verify", p(&bundle), "-v"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    for line in [
        "  #6     run json-assert 1.0.0 (test): completed fail",
        "         summary: 1 of 2 assertions failed",
        "         signed by: demo-publisher (Edge Runner Demo), key 8485038863d55e1ca5b874b454e4036577f590402a24caa41f2c1fae4b069c5f",
        "         granted: memory-bytes 67108864",
        "         found: high assertion.0: `/status` is \"degraded\", expected \"up\"",
        "         signed by: demo-partner (Edge Runner Demo Partner), key a55e3c1e2cfcd22269cd5ac270bfb32c9cfcb8aa02c91d4d46f9a7f0634059e3",
        "         granted: file /config (read-only)",
        "         found: medium drift.tls: `tls` is `off`, policy wants `on`",
        "         denied: none",
        "  your checkpoints (--checkpoint): none given; only checkpoints from the runner's side were checked",
    ] {
        assert!(
            report.lines().any(|l| l == line),
            "no line {line:?} in\n{report}"
        );
    }
    // The two approvals by alice (the refused apply, then the one that
    // went through) are told apart by their records.
    assert!(report.contains("approval: record "), "{report}");

    let out = edge_runner(&[
        "evidence",
        "verify",
        p(&bundle),
        "--checkpoint",
        p(&bundle),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["auditor_checkpoints"], serde_json::json!([33]));
    assert_eq!(
        json["runs"][1]["findings"],
        serde_json::json!(["high assertion.0: `/status` is \"degraded\", expected \"up\""])
    );
    assert_eq!(json["runs"][0]["findings"], serde_json::json!([]));
}

/// `demo --out` with a relative directory: the site policy it writes needs
/// absolute host paths, so the demo resolves the directory first.
#[test]
fn demo_runs_into_a_relative_out_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edge-runner"))
        .args(["demo", "--out", "rel/demo"])
        .current_dir(dir.path())
        .env_remove("EDGE_RUNNER_KEY")
        .env("XDG_STATE_HOME", state_home())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(dir.path().join("rel/demo/evidence.bundle").is_file());
}

#[test]
fn under_an_address_space_limit_runs_fall_back_to_per_run_allocation() {
    // 16 GiB of address space: less than the instance pool reserves for its
    // slots, plenty for a run allocated on its own. The whole demo still runs.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("sh")
        .args([
            "-c",
            "ulimit -v 16777216 && exec \"$0\" demo --out demo",
            env!("CARGO_BIN_EXE_edge-runner"),
        ])
        .current_dir(dir.path())
        .env_remove("EDGE_RUNNER_KEY")
        .env("XDG_STATE_HOME", state_home())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(
            "the instance pool's address space could not be reserved; allocating per run"
        ),
        "{}",
        text(&out)
    );
    assert!(dir.path().join("demo/evidence.bundle").is_file());
}

/// Renders the report in headless Chromium and reads back the DOM it built.
/// Needs /usr/bin/chromium, which `.ci/run` installs; run with `-- --include-ignored`.
#[test]
#[ignore = "needs Chromium (/usr/bin/chromium); .ci/run installs it and runs ignored tests"]
fn html_report_renders_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bundle = demo_bundle(d);
    let html = d.join("report.html");
    let out = edge_runner(&["evidence", "verify", p(&bundle), "--html", p(&html)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let profile = d.join("chromium-profile");
    let dom = Command::new("/usr/bin/chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.display()),
            "--dump-dom",
            &format!("file://{}", html.display()),
        ])
        .output()
        .expect("run /usr/bin/chromium (install it: apt-get install chromium)");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("Edge Runner evidence report"), "{dom}");
    assert!(
        dom.contains(r#"id="verdict" class="verdict valid""#),
        "{dom}"
    );
    // The browser parsed seven run rows, one remediation's chain of authority
    // and two refusal rows out of the page.
    assert_eq!(dom.matches("<tr><td>").count(), 10, "{dom}");
    assert!(dom.contains("Remediations (1)"), "{dom}");

    // Laid out at common widths, the page never needs a horizontal scroll
    // bar (the runs table used to wrap one word a line and overflow). A
    // page of ours with a script loads the report in frames of each width
    // and writes down each frame's scroll width and client width.
    std::fs::write(
        d.join("widths.html"),
        r#"<!DOCTYPE html><html><body><pre id="out">not measured</pre><script>
const widths = [1280, 1024, 800, 600];
const res = {};
let done = 0;
for (const w of widths) {
  const f = document.createElement('iframe');
  f.style.width = w + 'px'; f.style.height = '600px'; f.style.border = '0';
  f.onload = () => {
    const e = f.contentDocument.documentElement;
    res[w] = [e.scrollWidth, e.clientWidth];
    if (++done === widths.length) document.getElementById('out').textContent = JSON.stringify(res);
  };
  f.src = 'report.html';
  document.body.appendChild(f);
}
</script></body></html>"#,
    )
    .unwrap();
    let dom = Command::new("/usr/bin/chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--allow-file-access-from-files",
            "--virtual-time-budget=10000",
            &format!("--user-data-dir={}", profile.display()),
            "--dump-dom",
            &format!("file://{}", d.join("widths.html").display()),
        ])
        .output()
        .expect("run /usr/bin/chromium");
    let dom = String::from_utf8_lossy(&dom.stdout);
    let measured = dom
        .split("<pre id=\"out\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap_or_default();
    let widths: serde_json::Value =
        serde_json::from_str(measured).unwrap_or_else(|e| panic!("no measurements ({e}) in {dom}"));
    for w in ["1280", "1024", "800", "600"] {
        let (scroll, client) = (
            widths[w][0].as_u64().unwrap(),
            widths[w][1].as_u64().unwrap(),
        );
        assert!(
            scroll <= client,
            "at {w} px the report is {scroll} px wide, wider than its {client} px: {widths}"
        );
    }
}

#[test]
fn inclusion_proof_verifies_against_the_checkpoint_root() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let demo = d.join("demo");
    let out = edge_runner(&["demo", "--out", p(&demo)]);
    assert!(out.status.success(), "{}", text(&out));
    let out = edge_runner(&[
        "evidence",
        "prove",
        p(&demo.join("evidence")),
        "--record",
        "3",
        "--runner-key",
        p(&demo.join("runner.pub")),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let b64 = |v: &serde_json::Value| -> [u8; 32] {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    };
    let record = base64::engine::general_purpose::STANDARD
        .decode(v["record_cbor"].as_str().unwrap())
        .unwrap();
    let leaf = edge_runner::evidence::merkle::leaf_hash(&record);
    assert_eq!(leaf, b64(&v["leafHash"]));
    let proof: Vec<[u8; 32]> = v["proof"].as_array().unwrap().iter().map(b64).collect();
    assert!(edge_runner::evidence::merkle::verify_inclusion(
        3,
        v["treeSize"].as_u64().unwrap(),
        &leaf,
        &proof,
        &b64(&v["root"])
    ));
    assert!(
        v["checkpoint"]
            .as_str()
            .unwrap()
            .starts_with("edge-runner/log/")
    );
    let out = edge_runner(&[
        "evidence",
        "prove",
        p(&demo.join("evidence")),
        "--record",
        "999",
        "--runner-key",
        p(&demo.join("runner.pub")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("is not covered by the newest checkpoint"),
        "{}",
        text(&out)
    );
}

/// The new author's path: scaffold, its own test, build, sign, run.
#[test]
fn capsule_new_builds_passes_its_test_signs_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let crate_dir = d.join("disk-check");
    let out = scaffold_rust(&crate_dir);
    assert!(out.status.success(), "{}", text(&out));
    // The crate carries this runner's SDK, so it builds anywhere; keys stay out of git.
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains(r#"capsule-sdk = { path = "capsule-sdk" }"#),
        "{manifest}"
    );
    assert!(!manifest.contains(env!("CARGO_MANIFEST_DIR")), "{manifest}");
    assert!(crate_dir.join("capsule-sdk/wit/capsule.wit").is_file());
    assert!(crate_dir.join("capsule-sdk/macros/Cargo.toml").is_file());
    let ignored = std::fs::read_to_string(crate_dir.join(".gitignore")).unwrap();
    assert!(ignored.lines().any(|l| l == "*.key"), "{ignored}");
    let capsule_toml = std::fs::read_to_string(crate_dir.join("capsule.toml")).unwrap();
    assert!(
        capsule_toml.contains(r#"audience = ["*"]"#),
        "{capsule_toml}"
    );
    // A second scaffold into the same place is refused rather than overwriting.
    let again = scaffold_rust(&crate_dir);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).contains("is not empty"), "{}", text(&again));

    let wasm = build_scaffold(&crate_dir, "disk-check");

    let (key, public) = keys(d, "publisher");
    let trust = write_trust_root(d, &public);
    let signed = d.join("disk-check.signed.wasm");
    let out = sign_scaffold(&crate_dir, &wasm, &key, &signed);
    assert!(out.status.success(), "{}", text(&out));
    let evidence = d.join("evidence");
    let out = run_with_input(d, &signed, &trust, &evidence, r#"{"status": "up"}"#);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("verdict: pass — service is up"),
        "{}",
        text(&out)
    );
    let out = run_with_input(d, &signed, &trust, &evidence, r#"{"status": "down"}"#);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
}

/// `capsule new disk-check --kind test --out CRATE_DIR`: a Rust test capsule.
fn scaffold_rust(crate_dir: &Path) -> Output {
    edge_runner(&[
        "capsule",
        "new",
        "disk-check",
        "--kind",
        "test",
        "--out",
        p(crate_dir),
    ])
}

/// Signs a scaffold's built `wasm` with its own `capsule.toml` and `key` into `signed`.
fn sign_scaffold(crate_dir: &Path, wasm: &Path, key: &Path, signed: &Path) -> Output {
    edge_runner(&[
        "capsule",
        "sign",
        p(wasm),
        "--manifest",
        p(&crate_dir.join("capsule.toml")),
        "--key",
        p(key),
        "--out",
        p(signed),
    ])
}

/// Builds the scaffolded Rust crate in `crate_dir` (its own test first) and
/// returns its component, `NAME.wasm` with `-` as `_`.
fn build_scaffold(crate_dir: &Path, name: &str) -> std::path::PathBuf {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/scaffold");
    let cargo = |args: &[&str]| {
        let out = Command::new(env!("CARGO"))
            .args(args)
            .arg("--offline")
            .current_dir(crate_dir)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .unwrap();
        assert!(out.status.success(), "cargo {args:?}: {}", text(&out));
        text(&out)
    };
    assert!(cargo(&["test"]).contains("test tests::judges_the_input ... ok"));
    cargo(&["build", "--release", "--target", "wasm32-wasip2"]);
    target.join(format!(
        "wasm32-wasip2/release/{}.wasm",
        name.replace('-', "_")
    ))
}

/// Issue 18: `capsule dev-setup` gives an author build → sign → run with no one
/// else's keys, and says "development" wherever the result is shown: the signing,
/// the trust store, the run, and the human, JSON and HTML reports. Its key is
/// refused by a production trust store, and its root cannot be rotated into one.
#[test]
fn dev_setup_runs_a_fresh_scaffold_and_every_output_says_development() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let crate_dir = d.join("disk-check");
    let out = scaffold_rust(&crate_dir);
    assert!(out.status.success(), "{}", text(&out));
    let ignored = std::fs::read_to_string(crate_dir.join(".gitignore")).unwrap();
    assert!(
        ignored.lines().any(|l| l == "/edge-runner-dev/"),
        "{ignored}"
    );
    let dev = crate_dir.join("edge-runner-dev");
    let out = edge_runner(&["capsule", "dev-setup", "--dir", p(&dev)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("NOT FOR PRODUCTION"), "{}", text(&out));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dev.join("dev-publisher.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let pem = std::fs::read_to_string(dev.join("dev-publisher.key")).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    // Run again, it keeps what is there.
    let again = edge_runner(&["capsule", "dev-setup", "--dir", p(&dev)]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("already holds a development set-up"));

    let wasm = build_scaffold(&crate_dir, "disk-check");
    let signed = d.join("disk-check.signed.wasm");
    let out = sign_scaffold(&crate_dir, &wasm, &dev.join("dev-publisher.key"), &signed);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("is a DEVELOPMENT key"),
        "{}",
        text(&out)
    );
    let input = d.join("input.json");
    std::fs::write(&input, r#"{"status": "up"}"#).unwrap();
    let evidence = dev.join("evidence");
    let out = edge_runner(&[
        "run",
        p(&signed),
        "--trust",
        p(&dev.join("trust")),
        "--site-policy",
        p(&dev.join("dev-site-policy.toml")),
        "--evidence",
        p(&evidence),
        "--runner-key",
        p(&dev.join("dev-runner.key")),
        "--input",
        p(&input),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = text(&out);
    assert!(shown.contains("verdict: pass — service is up"), "{shown}");
    assert!(
        shown.contains(
            "DEVELOPMENT SET-UP: verified under the development trust root `development-only` v1; a local trial, not for production"
        ),
        "{shown}"
    );
    assert!(
        shown.contains("WARNING: trust root `development-only` is a DEVELOPMENT root"),
        "{shown}"
    );
    let out = edge_runner(&["trust", "show", p(&dev.join("trust"))]);
    assert!(
        text(&out).contains("— DEVELOPMENT ROOT, not for production"),
        "{}",
        text(&out)
    );

    // Every report format says so.
    let runner_pub = dev.join("dev-runner.pub");
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "evidence",
            "verify",
            p(&evidence),
            "--runner-key",
            p(&runner_pub),
        ];
        args.extend_from_slice(extra);
        let out = edge_runner(&args);
        assert!(out.status.success(), "{}", text(&out));
        out
    };
    let human = text(&verify(&[]));
    assert!(
        human.contains(
            "WARNING: DEVELOPMENT SET-UP — capsule disk-check 0.1.0 (record 1) was verified under the development trust root `development-only` v1"
        ),
        "{human}"
    );
    let json: serde_json::Value = serde_json::from_slice(&verify(&["--json"]).stdout).unwrap();
    assert_eq!(
        json["development"],
        serde_json::json!([
            "capsule disk-check 0.1.0 (record 1) was verified under the development trust root `development-only` v1"
        ]),
        "{json}"
    );
    let html_file = d.join("report.html");
    verify(&["--html", p(&html_file)]);
    let html = std::fs::read_to_string(&html_file).unwrap();
    assert!(
        html.contains("<td id=\"development\" class=\"invalid\"><strong>WARNING"),
        "{html}"
    );

    // A production trust store does not know the development key.
    let (_, production_publisher) = keys(d, "publisher");
    let production = write_trust_root(d, &production_publisher);
    let out = edge_runner(&[
        "capsule",
        "verify",
        p(&signed),
        "--trust",
        p(&production),
        "--site",
        SITE,
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("not counted: unknown key "),
        "{}",
        text(&out)
    );
    let production_run = run_with_input(
        d,
        &signed,
        &production,
        &d.join("production-evidence"),
        r#"{"status": "up"}"#,
    );
    assert_eq!(
        production_run.status.code(),
        Some(3),
        "{}",
        text(&production_run)
    );

    // The development root cannot be rotated into a production one.
    let v1 = std::fs::read_to_string(dev.join("dev-trust-root.toml")).unwrap();
    let v2 = v1
        .replacen("version = 1", "version = 2", 1)
        .replacen("development = true\n", "", 1);
    std::fs::write(d.join("v2.toml"), v2).unwrap();
    let out = edge_runner(&[
        "trust",
        "rotate",
        "--dir",
        p(&dev.join("trust")),
        "--policy",
        p(&d.join("v2.toml")),
        "--key",
        p(&dev.join("dev-root.key")),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("sets `development = false` but version 1 sets `development = true`"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_closed_stdout_ends_quietly_like_sigpipe() {
    // `edge-runner … | head` closes the pipe early; that must not print a panic.
    let dir = tempfile::tempdir().unwrap();
    let bundle = demo_bundle(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_edge-runner"))
        .args(["evidence", "verify", p(&bundle), "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.is_empty(),
        "a closed pipe is not an error to report: {stderr}"
    );
}

/// `--help` lists the exit codes from the one `Exit` enum, and the README lists the same.
#[test]
fn exit_codes_in_help_and_readme_agree() {
    let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let help = edge_runner::cli::Exit::help();
    let out = edge_runner(&["--help"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(words(&text(&out)).contains(&help), "{}", text(&out));
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    assert!(
        words(&readme).contains(&help),
        "README.md must list the exit codes as `--help` does:\n{help}"
    );
    // Issue 13.6: one table, one truth: the spec lists the same codes.
    let spec = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/capsule-format.md"),
    )
    .unwrap();
    assert!(
        words(&spec).contains(&help),
        "docs/capsule-format.md §9.1 must list the exit codes as `--help` does:\n{help}"
    );
    assert!(
        !words(&readme).contains("and 1 if the trust store itself is unusable"),
        "README and spec agree: an unusable trust store is a refusal (3)"
    );
    for (exit, code) in edge_runner::cli::Exit::ALL
        .iter()
        .zip([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 141])
    {
        assert_eq!(exit.code(), code, "{exit:?}");
    }
    // Issue 18: every subcommand's --help lists them too, not only the top level.
    for args in [
        &["run", "--help"][..],
        &["submit", "--help"],
        &["jobs", "cancel", "--help"],
        &["evidence", "verify", "--help"],
        &["trust", "rotate", "--help"],
        &["apply", "--help"],
    ] {
        let out = edge_runner(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        assert!(
            words(&text(&out)).contains(&help),
            "{args:?}: {}",
            text(&out)
        );
    }
    // A job through `serve` ends with the code `run` gives for the same outcome.
    use edge_runner::cli::Exit;
    use edge_runner::serve::exit;
    for (job, run) in [
        (exit::PASS, Exit::Ok),
        (exit::ERROR, Exit::Error),
        (exit::REFUSED, Exit::Refused),
        (exit::FAIL, Exit::VerdictFail),
        (exit::ABNORMAL, Exit::RunAbnormal),
    ] {
        assert_eq!(job, run.code(), "{run:?}");
    }
}

#[test]
fn completions_and_man_pages_come_from_the_command_definitions() {
    let out = edge_runner(&["completions", "bash"]);
    assert!(out.status.success(), "{}", text(&out));
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(script.contains("complete -F _edge__runner"), "{script}");
    for command in ["submit", "serve", "evidence", "witness-rotate"] {
        assert!(script.contains(command), "completions lack `{command}`");
    }
    let out = edge_runner(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man1");
    let out = edge_runner(&["man", "--out", p(&man)]);
    assert!(out.status.success(), "{}", text(&out));
    for page in [
        "edge-runner.1",
        "edge-runner-run.1",
        "edge-runner-jobs-cancel.1",
        "edge-runner-evidence-verify.1",
    ] {
        let text =
            std::fs::read_to_string(man.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: {text}"
        );
    }
    let run = std::fs::read_to_string(man.join("edge-runner-run.1")).unwrap();
    assert!(run.contains("Exit codes"), "{run}");
}

/// A pipe or device where a file is expected is read up to the limit and refused,
/// never read without end (a size from metadata says nothing for these).
#[cfg(unix)]
#[test]
fn dev_zero_and_a_fifo_as_capsule_or_input_are_refused_at_the_limit() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = keys(d, "publisher");
    let trust = write_trust_root(d, &public);
    let signed = sign(d, &key, "signed.wasm", &[]);
    let evidence = d.join("evidence");
    let run = |capsule: &Path, input: &Path| {
        edge_runner(&[
            "run",
            p(capsule),
            "--trust",
            p(&trust),
            "--site",
            SITE,
            "--evidence",
            p(&evidence),
            "--input",
            p(input),
        ])
    };
    let input = d.join("in.json");
    std::fs::write(&input, "{}").unwrap();
    let zero = Path::new("/dev/zero");
    let out = run(zero, &input);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("capsule /dev/zero is larger than the limit of 67108864 bytes"),
        "{}",
        text(&out)
    );
    let out = run(&signed, zero);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("input /dev/zero is larger than the limit of 16777216 bytes"),
        "{}",
        text(&out)
    );

    // A named pipe fed without end by a writer that stops only when the reader goes.
    let fifo = d.join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut pipe = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            let chunk = vec![b' '; 64 * 1024];
            while pipe.write_all(&chunk).is_ok() {}
        })
    };
    let out = run(&signed, &fifo);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "input {} is larger than the limit of 16777216 bytes",
            fifo.display()
        )),
        "{}",
        text(&out)
    );
    writer.join().unwrap();
}

#[test]
fn a_malformed_bundle_is_invalid_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bad.bundle");
    // A CBOR map, so it is read as a bundle, but with an unknown key.
    std::fs::write(&bundle, [0xa1, 0x63, b'f', b'o', b'o', 0x01]).unwrap();
    let out = edge_runner(&["evidence", "verify", p(&bundle), "--json"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["valid"], false);
    assert!(
        json["failure"]
            .as_str()
            .unwrap()
            .starts_with("not a valid bundle: "),
        "{json}"
    );
}

#[test]
fn capsule_new_refuses_a_bad_name_and_kind_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let out = edge_runner(&[
        "capsule",
        "new",
        "Disk_Check",
        "--kind",
        "test",
        "--out",
        p(&dir.path().join("x")),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(
            "capsule name `Disk_Check` is invalid: use 1-64 lowercase letters, digits and `-`"
        ),
        "{}",
        text(&out)
    );
    assert!(
        !dir.path().join("x").exists(),
        "nothing is created for a refused name"
    );
    let out = edge_runner(&[
        "capsule",
        "new",
        "disk-check",
        "--kind",
        "test",
        "--audience",
        "Plant 7",
        "--out",
        p(&dir.path().join("y")),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("--audience `Plant 7`"),
        "{}",
        text(&out)
    );
    assert!(!dir.path().join("y").exists());
    let out = edge_runner(&[
        "capsule",
        "new",
        "disk-check",
        "--kind",
        "test",
        "--audience",
        "plant-7",
        "--audience",
        "plant-9",
        "--out",
        p(&dir.path().join("z")),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let capsule_toml = std::fs::read_to_string(dir.path().join("z/capsule.toml")).unwrap();
    assert!(
        capsule_toml.contains(r#"audience = ["plant-7", "plant-9"]"#),
        "{capsule_toml}"
    );
    let out = edge_runner(&["capsule", "new", "disk-check", "--kind", "fix"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("[possible values: test, reproduce, remediate]"),
        "{}",
        text(&out)
    );
}

/// `capsule new --lang python|js` writes a project with the SDK of this runner, a
/// manifest signed as for Rust, unit tests, a build script and a README; a language
/// or flag it does not take is refused with the fix. (Building the projects needs the
/// registries' tools: tests/polyglot.rs, run by .ci/run.)
#[test]
fn capsule_new_python_and_js_write_projects_and_refuse_what_they_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (lang, files) in [
        (
            "python",
            &[
                "app.py",
                "test_app.py",
                "build.sh",
                "README.md",
                "capsule.toml",
                ".gitignore",
                "capsule-sdk-python/pyproject.toml",
                "capsule-sdk-python/edge_capsule/wit/capsule.wit",
                "capsule-sdk-python/edge_capsule/wit/guest.wit",
            ][..],
        ),
        (
            "js",
            &[
                "capsule.js",
                "test/capsule.test.js",
                "package.json",
                "package-lock.json",
                "build.sh",
                "README.md",
                "capsule.toml",
                ".gitignore",
                "capsule-sdk-js/index.d.ts",
                "capsule-sdk-js/wit/capsule.wit",
            ][..],
        ),
    ] {
        let project = d.join(format!("fix-{lang}"));
        let out = edge_runner(&[
            "capsule",
            "new",
            &format!("fix-{lang}"),
            "--kind",
            "remediate",
            "--lang",
            lang,
            "--out",
            p(&project),
        ]);
        assert!(out.status.success(), "{}", text(&out));
        for file in files {
            assert!(project.join(file).is_file(), "{lang}: {file}");
        }
        let manifest = std::fs::read_to_string(project.join("capsule.toml")).unwrap();
        assert!(manifest.contains("kind = \"remediate\""), "{manifest}");
        let build = std::fs::read_to_string(project.join("build.sh")).unwrap();
        let pin = if lang == "python" {
            "componentize-py==0.25.1"
        } else {
            "@bytecodealliance/componentize-js 0.23.0"
        };
        assert!(build.contains(pin), "{build}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(project.join("build.sh"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o111, 0o111, "build.sh is executable");
        }
        let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
        assert!(
            readme.contains(&format!(
                "edge-runner capsule sign fix-{lang}.wasm --manifest capsule.toml"
            )),
            "{readme}"
        );
        let ignored = std::fs::read_to_string(project.join(".gitignore")).unwrap();
        assert!(ignored.lines().any(|l| l == "*.key"), "{ignored}");
    }
    let out = edge_runner(&["capsule", "new", "x", "--kind", "test", "--lang", "ruby"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("[possible values: rust, python, js]"),
        "{}",
        text(&out)
    );
    let out = edge_runner(&[
        "capsule",
        "new",
        "x",
        "--kind",
        "test",
        "--lang",
        "js",
        "--sdk",
        p(d),
        "--out",
        p(&d.join("x")),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(
            "--sdk is for Rust capsules; a js project carries this runner's SDK (drop --sdk)"
        ),
        "{}",
        text(&out)
    );
    assert!(!d.join("x").exists());
}

/// `capsule precompile` verifies a capsule and compiles it into the code cache of the
/// evidence directory at install time; the first run then loads the cached code, and
/// a capsule that does not verify is refused without compiling anything.
#[test]
fn precompile_warms_the_code_cache_and_refuses_what_does_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = keys(d, "publisher");
    let trust = write_trust_root(d, &public);
    let signed = sign(d, &key, "json-assert.signed.wasm", &[]);
    let evidence = d.join("evidence");
    let precompile = |capsule: &Path| {
        edge_runner(&[
            "capsule",
            "precompile",
            p(capsule),
            "--trust",
            p(&trust),
            "--site",
            SITE,
            "--evidence",
            p(&evidence),
        ])
    };
    let out = precompile(&signed);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("compiled json-assert 1.0.0 (test) in ")
            && text(&out).contains(&format!(
                " ms into {} (compiled)",
                evidence.join("code-cache").display()
            )),
        "{}",
        text(&out)
    );
    let out = precompile(&signed);
    assert!(
        text(&out).contains(&format!(
            "json-assert 1.0.0 (test) is already compiled in {} (disk-cache)",
            evidence.join("code-cache").display()
        )),
        "{}",
        text(&out)
    );
    let out = run_with_input(
        d,
        &signed,
        &trust,
        &evidence,
        r#"{"document": {"status": "up"}, "assertions": [{"pointer": "/status", "equals": "up"}]}"#,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let log = std::fs::read(evidence.join("evidence.log")).unwrap();
    let runner_pub = edge_runner::keys::PublicKey::load(&evidence.join("runner.pub")).unwrap();
    let summary = edge_runner::evidence::verify_log(&log, &runner_pub).unwrap();
    let finished = summary
        .records
        .iter()
        .find(|r| r.record.event == "run-finished")
        .unwrap();
    let body = edge_runner::cbor::MapReader::new("run-finished", &finished.record.body).unwrap();
    assert_eq!(body.text("code").unwrap(), "disk-cache");

    // One flipped byte in the module: refused before anything is compiled.
    let mut tampered = std::fs::read(&signed).unwrap();
    tampered[100] ^= 1;
    let bad = d.join("tampered.signed.wasm");
    std::fs::write(&bad, tampered).unwrap();
    let cached = std::fs::read_dir(evidence.join("code-cache"))
        .unwrap()
        .count();
    let out = precompile(&bad);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).starts_with(&format!("REFUSED: {}: ", bad.display())),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_dir(evidence.join("code-cache"))
            .unwrap()
            .count(),
        cached
    );
}

/// Runs the passing json-assert input once more: the log grows by a few records and a checkpoint.
fn run_pass(d: &Path, signed: &Path, trust: &Path, evidence: &Path) {
    let out = run_with_input(
        d,
        signed,
        trust,
        evidence,
        r#"{"document": {"ok": true}, "assertions": [{"pointer": "/ok", "equals": true}]}"#,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// `evidence witness-request`, `evidence witness` and `evidence add-cosignature` in turn.
fn witness_round(d: &Path, evidence: &Path, witness: &Path, origin: &str, old: u64) -> Output {
    let out = edge_runner(&[
        "evidence",
        "witness-request",
        p(evidence),
        "--old",
        &old.to_string(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let request = d.join("request.txt");
    std::fs::write(&request, &out.stdout).unwrap();
    let out = edge_runner(&[
        "evidence",
        "witness",
        "--dir",
        p(witness),
        "--log-key",
        p(&evidence.join("runner.pub")),
        "--origin",
        origin,
        "--request",
        p(&request),
    ]);
    if !out.status.success() {
        return out;
    }
    let cosignature = d.join("cosignature.txt");
    std::fs::write(&cosignature, &out.stdout).unwrap();
    edge_runner(&[
        "evidence",
        "add-cosignature",
        p(evidence),
        "--witness",
        p(&witness.join("witness.vkey")),
        "--request",
        p(&request),
        "--cosignature",
        p(&cosignature),
    ])
}

fn records(evidence: &Path) -> u64 {
    let out = edge_runner(&[
        "evidence",
        "verify",
        p(evidence),
        "--runner-key",
        p(&evidence.join("runner.pub")),
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["records"].as_u64().unwrap()
}

#[test]
fn verifier_with_witness_catches_a_rewritten_history() {
    use edge_runner::evidence::{self, Checkpoint, merkle};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = keys(d, "publisher");
    let trust = write_trust_root(d, &public);
    let signed = sign(d, &key, "json-assert.signed.wasm", &[]);
    let ev = d.join("evidence");
    run_pass(d, &signed, &trust, &ev);

    // Running a witness.
    let w = d.join("witness");
    let out = edge_runner(&[
        "evidence",
        "witness-init",
        "--dir",
        p(&w),
        "--name",
        "witness.example/w1",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let vkey = std::fs::read_to_string(w.join("witness.vkey")).unwrap();
    assert!(vkey.starts_with("witness.example/w1+"), "{vkey}");
    assert!(text(&out).contains(vkey.trim()), "{}", text(&out));

    let out = edge_runner(&[
        "evidence",
        "verify",
        p(&ev),
        "--runner-key",
        p(&ev.join("runner.pub")),
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let origin = format!("edge-runner/log/{}", json["log_id"].as_str().unwrap());
    assert_eq!(json["truncation"], "runner-checkpoint");

    // First cosignature, then more records and a cosignature with a consistency proof.
    let out = witness_round(d, &ev, &w, &origin, 0);
    assert!(out.status.success(), "{}", text(&out));
    let first = records(&ev);
    run_pass(d, &signed, &trust, &ev);
    let out = witness_round(d, &ev, &w, &origin, 0);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "REFUSED: the request proves consistency from size 0, but this witness last cosigned size {first} for `{origin}`; ask again with a consistency proof from size {first}\n  the runner's operator asks again with: edge-runner evidence witness-request DIR --old {first}"
        )),
        "{}",
        text(&out)
    );
    let out = witness_round(d, &ev, &w, &origin, first);
    assert!(out.status.success(), "{}", text(&out));
    let witnessed = records(&ev);
    assert!(
        text(&out).contains(&format!("on the checkpoint of {witnessed} records")),
        "{}",
        text(&out)
    );

    let verify_with_witness = |extra: &[&str]| {
        let (runner_pub, vkey) = (ev.join("runner.pub"), w.join("witness.vkey"));
        let mut args = vec!["evidence", "verify", p(&ev), "--runner-key", p(&runner_pub)];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--witness", p(&vkey)]);
        edge_runner(&args)
    };
    let out = verify_with_witness(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "truncation: ruled out up to {witnessed} records by witness cosignatures: witness.example/w1 ({witnessed} records)"
        )),
        "{}",
        text(&out)
    );
    let out = verify_with_witness(&["--min-witnesses", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(
            "--witness/--min-witnesses: the minimum number of witnesses must be between 1 and the 1 given, not 2"
        ),
        "{}",
        text(&out)
    );

    // The attacker holds the runner key: keeps 3 records, re-signs DIR/checkpoint over
    // them, lets the runner carry on, and removes the witnessed checkpoints.
    let runner =
        edge_runner::keys::SecretKey::load(&state_home().join("edge-runner/runner.key")).unwrap();
    let log = std::fs::read(ev.join("evidence.log")).unwrap();
    let summary = evidence::verify_log(&log, &runner.public()).unwrap();
    let kept = &summary.records[..3];
    let cut: usize = kept.iter().map(|r| r.bytes.len()).sum();
    std::fs::write(ev.join("evidence.log"), &log[..cut]).unwrap();
    let leaves: Vec<_> = kept.iter().map(|r| merkle::leaf_hash(&r.bytes)).collect();
    let note = Checkpoint {
        origin: origin.clone(),
        size: 3,
        root: merkle::root(&leaves),
    }
    .sign(&runner);
    std::fs::write(ev.join("checkpoint"), note).unwrap();
    run_pass(d, &signed, &trust, &ev);
    run_pass(d, &signed, &trust, &ev);
    std::fs::remove_dir_all(ev.join("witnessed")).unwrap();
    let rewritten = records(&ev);
    assert!(rewritten > witnessed);

    let out = edge_runner(&[
        "evidence",
        "verify",
        p(&ev),
        "--runner-key",
        p(&ev.join("runner.pub")),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the runner key alone cannot tell: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("whoever holds the runner key could cut the log and re-sign it"),
        "{}",
        text(&out)
    );
    let out = verify_with_witness(&[]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains(
            "INVALID: 0 of the 1 witnesses required cosigned a checkpoint that this log extends (cosigned: none; no cosignature from: `witness.example/w1`)"
        ),
        "{}",
        text(&out)
    );
    // The witness's own latest checkpoint of this log names it.
    let state = std::fs::read_dir(w.join("logs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let out = verify_with_witness(&["--checkpoint", p(&state)]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "INVALID: the log ({rewritten} records) does not extend the checkpoint of {witnessed} records cosigned by witness `witness.example/w1` at "
        )) && text(&out).contains(&format!(
            ": the first {witnessed} records are not the ones the checkpoint covers (its Merkle root differs): history was rewritten after it was signed"
        )),
        "{}",
        text(&out)
    );
    // Nor will the witness cosign the rewritten log.
    let out = witness_round(d, &ev, &w, &origin, witnessed);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "REFUSED: the consistency proof from {witnessed} to {rewritten} records of `{origin}` does not verify against the checkpoint this witness cosigned"
        )),
        "{}",
        text(&out)
    );
}

#[test]
fn verifier_given_no_checkpoint_and_no_witness_says_truncation_is_not_ruled_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = keys(d, "publisher");
    let trust = write_trust_root(d, &public);
    let signed = sign(d, &key, "json-assert.signed.wasm", &[]);
    let ev = d.join("evidence");
    run_pass(d, &signed, &trust, &ev);
    let bare = ev.join("evidence.log");
    let runner_pub = ev.join("runner.pub");
    let out = edge_runner(&[
        "evidence",
        "verify",
        p(&bare),
        "--runner-key",
        p(&runner_pub),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("truncation: NOT ruled out: no checkpoint and no witness was checked, so records could have been removed from the end of this log without trace"),
        "{}",
        text(&out)
    );
    let out = edge_runner(&[
        "evidence",
        "verify",
        p(&bare),
        "--runner-key",
        p(&runner_pub),
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["truncation"], "not-ruled-out");
    assert_eq!(json["witnesses"], serde_json::json!([]));
    let page = d.join("report.html");
    let out = edge_runner(&[
        "evidence",
        "verify",
        p(&bare),
        "--runner-key",
        p(&runner_pub),
        "--html",
        p(&page),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("<tr><th>Truncation</th><td><code>NOT ruled out: no checkpoint and no witness was checked"),
        "{html}"
    );
}

#[cfg(unix)]
#[test]
fn witness_given_dev_zero_as_request_or_vkey_refuses_at_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let w = d.join("witness");
    let out = edge_runner(&[
        "evidence",
        "witness-init",
        "--dir",
        p(&w),
        "--name",
        "w.example/1",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let (_, runner_pub) = keys(d, "runner");
    let out = edge_runner(&[
        "evidence",
        "witness",
        "--dir",
        p(&w),
        "--log-key",
        p(&runner_pub),
        "--origin",
        "edge-runner/log/00000000000000000000000000000000",
        "--request",
        "/dev/zero",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out)
            .contains("add-checkpoint request /dev/zero is larger than the limit of 65536 bytes"),
        "{}",
        text(&out)
    );
    let out = edge_runner(&[
        "evidence",
        "verify",
        p(d),
        "--runner-key",
        p(&runner_pub),
        "--witness",
        "/dev/zero",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("witness vkey /dev/zero is larger than the limit of 65536 bytes"),
        "{}",
        text(&out)
    );
    // witness-init never overwrites a witness's key.
    let out = edge_runner(&[
        "evidence",
        "witness-init",
        "--dir",
        p(&w),
        "--name",
        "w.example/1",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("witness.vkey already exists; refusing to overwrite a key"),
        "{}",
        text(&out)
    );
}

/// Issue 12 §10: a capsule's summary, findings and error cannot forge lines of
/// the runner's output or reach the terminal as escape sequences.
#[test]
fn capsule_text_cannot_forge_output_lines_or_terminal_escapes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let probe = capsule_artifacts::SANDBOX_PROBE;
    let wasm = d.join("probe.wasm");
    std::fs::write(&wasm, probe.component).unwrap();
    let manifest = d.join("capsule.toml");
    std::fs::write(&manifest, probe.manifest).unwrap();
    let (key, public) = keys(d, "publisher");
    let trust = write_trust_root(d, &public);
    let signed = d.join("probe.signed.wasm");
    let out = edge_runner(&[
        "capsule",
        "sign",
        p(&wasm),
        "--manifest",
        p(&manifest),
        "--key",
        p(&key),
        "--out",
        p(&signed),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let forged = "ok\\nVALID: 1 records, log forged\\u001b[2J\\u009b31m\\r\\u202egnp.exe";
    let input = format!(
        r#"{{"actions": [{{"summary": "{forged}"}}, {{"emit-as": {{"label": "a\nVALID: forged", "media-type": "text/plain"}}}}]}}"#
    );
    let out = run_with_input(d, &signed, &trust, &d.join("evidence"), &input);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "  verdict: pass — ok\\nVALID: 1 records, log forged\\u{1b}[2J\\u{9b}31m\\r\\u{202e}gnp.exe\n"
        ),
        "{stdout}"
    );
    // No line the capsule wrote starts a line of output, and no control character is printed.
    assert!(!stdout.lines().any(|l| l.starts_with("VALID")), "{stdout}");
    assert!(
        !stdout.chars().any(|c| c != '\n' && c.is_control()),
        "{stdout:?}"
    );
    // The label with a newline was refused when emitted, and said why.
    assert!(
        stdout.contains("  finding [info] emit-as.denied: evidence `a\\nVALID: forged` was not recorded: evidence label contains the control or formatting character U+000A; labels are printable text\n"),
        "{stdout}"
    );
}

/// Issue 13.1: every file the CLI reads, fed `/dev/zero` (directly, or as a
/// symlink where the file sits in a directory), is read up to its own limit
/// and refused naming that limit; a gigabyte limit (bundles) stops a pipe or
/// device at 64 MiB.
#[cfg(unix)]
#[test]
fn dev_zero_as_any_file_the_cli_reads_is_refused_at_its_limit() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = keys(d, "publisher");
    let trust = write_trust_root(d, &public);
    let signed = sign(d, &key, "signed.wasm", &[]);
    let unsigned = d.join("json-assert.wasm");
    let zero = "/dev/zero";
    let expect = |out: Output, code: i32, message: &str| {
        assert_eq!(out.status.code(), Some(code), "{}", text(&out));
        assert!(
            text(&out).contains(message),
            "want {message:?} in:\n{}",
            text(&out)
        );
    };
    let limit = |what: &str, path: &str, bytes: u64| {
        format!(
            "{what} {path} is larger than the limit of {bytes} bytes; check that it is the file you meant"
        )
    };
    let out_path = d.join("out.wasm");
    let sign_with = |manifest: &str, key: &str| {
        edge_runner(&[
            "capsule",
            "sign",
            p(&unsigned),
            "--manifest",
            manifest,
            "--key",
            key,
            "--out",
            p(&out_path),
        ])
    };
    expect(
        sign_with(capsule_artifacts::JSON_ASSERT.manifest_path, zero),
        1,
        &limit("key file", zero, 16384),
    );
    expect(
        sign_with(zero, p(&key)),
        1,
        &limit("manifest", zero, 262144),
    );
    expect(
        edge_runner(&[
            "capsule",
            "verify",
            p(&unsigned),
            "--signature",
            zero,
            "--trust",
            p(&trust),
            "--site",
            SITE,
        ]),
        1,
        &limit("signature file", zero, 262144),
    );
    let run = |extra: &[&str], evidence: &Path| {
        let mut args = vec![
            "run",
            p(&signed),
            "--trust",
            p(&trust),
            "--evidence",
            p(evidence),
        ];
        args.extend_from_slice(extra);
        edge_runner(&args)
    };
    let evidence = d.join("evidence");
    expect(
        run(&["--site-policy", zero], &evidence),
        1,
        "site policy /dev/zero: larger than the limit of 1048576 bytes",
    );
    // A runner key must be a regular file the runner's user owns (custody).
    expect(
        run(&["--site", SITE, "--runner-key", zero], &evidence),
        1,
        "runner key /dev/zero is not a regular file; pass the path of a PEM private key",
    );

    // A trust store whose version file is a symlink to /dev/zero: unusable, so refused (3).
    let swapped = d.join("swapped-trust");
    std::fs::create_dir(&swapped).unwrap();
    symlink(zero, swapped.join("1.root.cose")).unwrap();
    expect(
        edge_runner(&[
            "capsule",
            "verify",
            p(&signed),
            "--trust",
            p(&swapped),
            "--site",
            SITE,
        ]),
        3,
        &format!(
            "trust root {}: larger than the limit of 1048576 bytes",
            swapped.join("1.root.cose").display()
        ),
    );
    let root_key = d.join("root.key");
    expect(
        edge_runner(&[
            "trust",
            "init",
            "--policy",
            zero,
            "--key",
            p(&root_key),
            "--dir",
            p(&d.join("new-trust")),
        ]),
        1,
        &limit("trust root file", zero, 1048576),
    );
    expect(
        edge_runner(&["trust", "install", zero, "--dir", p(&trust)]),
        1,
        &limit("trust root file", zero, 1048576),
    );

    // An evidence log swapped for a symlink to /dev/zero is not read at all.
    let zero_log = d.join("zero-log");
    std::fs::create_dir(&zero_log).unwrap();
    symlink(zero, zero_log.join("evidence.log")).unwrap();
    expect(
        run(&["--site", SITE, "--runner-key", p(&key)], &zero_log),
        1,
        &format!(
            "evidence {}: not a regular file; the evidence log is a file the runner writes itself",
            zero_log.join("evidence.log").display()
        ),
    );

    // Bundles may be gigabytes; a device stops at the stream bound.
    expect(
        edge_runner(&["evidence", "verify", zero, "--runner-key", p(&public)]),
        1,
        "evidence /dev/zero is a pipe or device that gave more than 67108864 bytes, the most read from one",
    );
    let bundle = demo_bundle(d);
    expect(
        edge_runner(&["evidence", "verify", p(&bundle), "--checkpoint", zero]),
        1,
        &limit("checkpoint", zero, 65536),
    );
    let demo_evidence = d.join("demo").join("evidence");
    std::fs::remove_file(demo_evidence.join("checkpoint")).unwrap();
    symlink(zero, demo_evidence.join("checkpoint")).unwrap();
    expect(
        edge_runner(&[
            "evidence",
            "export",
            p(&demo_evidence),
            "--runner-key",
            p(&d.join("demo").join("runner.pub")),
            "--out",
            p(&d.join("b2")),
        ]),
        1,
        &limit("checkpoint", p(&demo_evidence.join("checkpoint")), 65536),
    );
}

/// Issue 13.4: `capsule sign --add` checks the existing signatures (against
/// the trust store or the given public keys) and shows the manifest it co-signs.
#[test]
fn cosign_add_checks_the_existing_signatures_and_shows_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = keys(d, "publisher");
    let (colleague, _) = keys(d, "colleague");
    let (_, stranger_pub) = keys(d, "stranger");
    let trust = write_trust_root(d, &public);
    let signed = sign(d, &key, "signed.wasm", &[]);
    let out_path = d.join("cosigned.wasm");
    let add = |extra: &[&str]| {
        let mut args = vec![
            "capsule",
            "sign",
            p(&signed),
            "--add",
            "--key",
            p(&colleague),
            "--out",
            p(&out_path),
        ];
        args.extend_from_slice(extra);
        edge_runner(&args)
    };
    let out = add(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("co-signing checks the existing signatures first: pass --trust DIR (the trust store naming their publishers) or --signed-by PUBLIC_KEY for each"),
        "{}",
        text(&out)
    );
    assert!(!out_path.exists());
    let out = add(&["--signed-by", p(&stranger_pub)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("is by a key not given to check it against"),
        "{}",
        text(&out)
    );
    assert!(!out_path.exists());
    for check in [["--trust", p(&trust)], ["--signed-by", p(&public)]] {
        let out = add(&check);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let shown = text(&out);
        assert!(
            shown.contains("co-signing this manifest (as its first signers signed it):\nname:          json-assert\nversion:       1.0.0\nkind:          test"),
            "{shown}"
        );
        assert!(shown.contains("signatures:    2"), "{shown}");
        std::fs::remove_file(&out_path).unwrap();
    }
}

/// Issue 13.6: `capsule verify` and `run` accept and refuse the same site
/// names, as usage errors, and `*` is not offered as a site name.
#[test]
fn site_star_empty_or_invalid_is_refused_alike_by_verify_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = keys(d, "publisher");
    let trust = write_trust_root(d, &public);
    let signed = sign(d, &key, "signed.wasm", &[]);
    let evidence = d.join("evidence");
    for (site, message) in [
        (
            "*",
            "site `*` is not a site name: `*` in an audience means every site, but this site needs its own name (1-64 lowercase letters, digits and `-`)",
        ),
        (
            "",
            "site `` is invalid: use 1-64 lowercase letters, digits and `-`, not starting with `-`",
        ),
        (
            "Plant 7",
            "site `Plant 7` is invalid: use 1-64 lowercase letters, digits and `-`, not starting with `-`",
        ),
    ] {
        let verify = edge_runner(&[
            "capsule",
            "verify",
            p(&signed),
            "--trust",
            p(&trust),
            "--site",
            site,
        ]);
        let run = edge_runner(&[
            "run",
            p(&signed),
            "--trust",
            p(&trust),
            "--site",
            site,
            "--evidence",
            p(&evidence),
        ]);
        for out in [verify, run] {
            assert_eq!(out.status.code(), Some(2), "{site:?}: {}", text(&out));
            assert!(text(&out).contains(message), "{site:?}: {}", text(&out));
            assert!(
                !text(&out).contains("or `*` for every site"),
                "{}",
                text(&out)
            );
        }
    }
    assert!(!evidence.exists(), "nothing is recorded for a usage error");
}

/// Issue 13.6: `--evidence` naming a regular file says so (not "key file …: File exists"),
/// and an OS error is said once.
#[test]
fn evidence_flag_naming_a_file_names_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = keys(d, "publisher");
    let trust = write_trust_root(d, &public);
    let signed = sign(d, &key, "signed.wasm", &[]);
    let file = d.join("evidence.txt");
    std::fs::write(&file, "not a directory").unwrap();
    let out = edge_runner(&[
        "run",
        p(&signed),
        "--trust",
        p(&trust),
        "--site",
        SITE,
        "--evidence",
        p(&file),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        format!(
            "error: --evidence {} is a file, not a directory; pass the evidence directory (the log is DIR/evidence.log)",
            file.display()
        )
    );
    let missing = d.join("missing.wasm");
    let out = edge_runner(&[
        "capsule",
        "verify",
        p(&missing),
        "--trust",
        p(&trust),
        "--site",
        SITE,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        format!(
            "error: reading capsule {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
}

/// Issue 13.6: `run` on a log that fails verification exits 4 (evidence
/// invalid), as the README's table says, and appends nothing.
#[test]
fn run_on_an_invalid_log_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = keys(d, "publisher");
    let trust = write_trust_root(d, &public);
    let signed = sign(d, &key, "signed.wasm", &[]);
    let evidence = d.join("evidence");
    let out = run_with_input(d, &signed, &trust, &evidence, "{}");
    assert!(
        matches!(out.status.code(), Some(0 | 5 | 6)),
        "{}",
        text(&out)
    );
    // Damage to the records after the newest checkpoint, which every open
    // verifies (older records are checked by `evidence verify`, not at open).
    let log = evidence.join("evidence.log");
    let mut bytes = std::fs::read(&log).unwrap();
    let near_end = bytes.len() - 40;
    bytes[near_end] ^= 0x01;
    std::fs::write(&log, &bytes).unwrap();
    let out = run_with_input(d, &signed, &trust, &evidence, "{}");
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with(&format!(
            "INVALID: --evidence {}: evidence log {} does not verify (",
            evidence.display(),
            log.display()
        )),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(&log).unwrap(), bytes, "nothing appended");
}

/// Issue 13.2: a runner is pinned to the trust store it used; a store swapped
/// for another correctly signed chain under the same name is refused (and the
/// refusal recorded) until an operator re-anchors on purpose, which the log
/// records and the auditor's verification accepts.
#[test]
fn swapped_trust_store_is_refused_until_re_anchored() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = keys(d, "publisher");
    let genuine_dir = d.join("genuine");
    let attacker_dir = d.join("attacker");
    std::fs::create_dir_all(&genuine_dir).unwrap();
    std::fs::create_dir_all(&attacker_dir).unwrap();
    let genuine = write_trust_root(&genuine_dir, &public);
    let swapped = write_trust_root(&attacker_dir, &public);
    let signed = sign(d, &key, "signed.wasm", &[]);
    let evidence = d.join("evidence");
    let out = run_with_input(d, &signed, &genuine, &evidence, "{}");
    assert!(
        matches!(out.status.code(), Some(0 | 5 | 6)),
        "{}",
        text(&out)
    );
    let out = run_with_input(d, &signed, &swapped, &evidence, "{}");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    // The refusal names the anchor `trust show` prints for the swapped store.
    let shown = text(&edge_runner(&["trust", "show", p(&swapped)]));
    let anchor = shown
        .lines()
        .find_map(|l| l.trim().strip_prefix("anchor: version 1 policy sha256 "))
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .to_string();
    assert!(
        text(&out).contains(&format!(
            "rollback: trust root `cli-root` descends from version 1 {anchor} "
        )),
        "{}",
        text(&out)
    );
    let out = edge_runner(&[
        "trust",
        "re-anchor",
        "--trust",
        p(&swapped),
        "--evidence",
        p(&evidence),
        "--reason",
        "root keys rotated after the 2026 audit",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("pinned to trust root `cli-root`")
            && text(&out).contains("instead of `cli-root`; recorded as `trust-anchor-changed`"),
        "{}",
        text(&out)
    );
    let out = run_with_input(d, &signed, &swapped, &evidence, "{}");
    assert!(
        matches!(out.status.code(), Some(0 | 5 | 6)),
        "{}",
        text(&out)
    );
    // The old store is now the stranger.
    let out = run_with_input(d, &signed, &genuine, &evidence, "{}");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let out = edge_runner(&[
        "evidence",
        "verify",
        p(&evidence),
        "--runner-key",
        p(&evidence.join("runner.pub")),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// Issue 13.5: `trust show` prints a look-alike organisation with its escapes,
/// and `trust init` refuses one with an invisible character, naming it.
#[test]
fn look_alike_and_invisible_organisation_names_in_trust_show_and_init() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, public) = keys(d, "publisher");
    let (root_key, root_pub) = keys(d, "root");
    let base = policy(1, "2099-01-01T00:00:00Z", &[&root_pub], &public);
    let init = |organisation: &str, store: &str| {
        let path = d.join(format!("{store}.toml"));
        std::fs::write(
            &path,
            base.replace(
                "organisation = \"Acme\"",
                &format!("organisation = \"{organisation}\""),
            ),
        )
        .unwrap();
        edge_runner(&[
            "trust",
            "init",
            "--policy",
            p(&path),
            "--key",
            p(&root_key),
            "--dir",
            p(&d.join(store)),
        ])
    };
    let out = init("\u{410}cme", "cyrillic");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = edge_runner(&["trust", "show", p(&d.join("cyrillic"))]);
    assert!(
        text(&out).contains("publisher `acme-ci` (\u{410}cme [\\u{410}cme])"),
        "{}",
        text(&out)
    );
    let out = init("Acme\u{200B}", "invisible");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("publisher `acme-ci` organisation `Acme\\u{200b}` contains the invisible or format character U+200B"),
        "{}",
        text(&out)
    );
}

/// An auditor who verified last month's bundle gets only the new records,
/// and ties them to what they verified with the old bundle as `--checkpoint`.
#[test]
fn export_since_an_earlier_bundle_holds_only_new_records_and_verifies_against_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = keys(d, "publisher");
    let trust = write_trust_root(d, &public);
    let signed = sign(d, &key, "v1.wasm", &[]);
    let evidence = d.join("evidence");
    let export = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "evidence",
            "export",
            p(&evidence),
            "--trust",
            p(&trust),
            "--out",
            p(out),
        ];
        args.extend_from_slice(extra);
        edge_runner(&args)
    };
    for _ in 0..2 {
        let out = run_with_input(d, &signed, &trust, &evidence, "{}");
        assert!(text(&out).contains("ran json-assert"), "{}", text(&out));
    }
    let first = d.join("first.cbor");
    let out = export(&first, &[]);
    assert!(out.status.success(), "{}", text(&out));
    for _ in 0..2 {
        let out = run_with_input(d, &signed, &trust, &evidence, "{}");
        assert!(text(&out).contains("ran json-assert"), "{}", text(&out));
    }
    let second = d.join("second.cbor");
    let out = export(&second, &["--since", p(&first)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("(from record "), "{}", text(&out));
    assert!(
        std::fs::metadata(&second).unwrap().len()
            < std::fs::metadata(&first).unwrap().len() * 3 / 2,
        "the range bundle should hold only the new records"
    );

    let out = edge_runner(&["evidence", "verify", p(&second), "--checkpoint", p(&first)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("were checked through the checkpoint of"),
        "{}",
        text(&out)
    );
    // Without the earlier checkpoint the verdict says plainly that nothing ties the range down.
    let out = edge_runner(&["evidence", "verify", p(&second)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("NOTHING ties them to records 0 to"),
        "{}",
        text(&out)
    );
    let out = edge_runner(&["evidence", "verify", p(&second), "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["range_start"].as_u64().unwrap() > 0);
    assert!(json["range_anchor"].is_null());
    // A --since that is not a checkpoint of this log is refused, naming the flag.
    let other = tempfile::tempdir().unwrap();
    let other_evidence = other.path().join("evidence");
    let out = run_with_input(d, &signed, &trust, &other_evidence, "{}");
    assert!(text(&out).contains("ran json-assert"), "{}", text(&out));
    let out = export(
        &d.join("bad.cbor"),
        &["--since", p(&other_evidence.join("checkpoint"))],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--since"), "{}", text(&out));
    assert!(!d.join("bad.cbor").exists());
}

/// `keys id` prints the full 64-digit id to copy into revocations and trust roots.
#[test]
fn keys_id_prints_the_full_id_of_a_key_file() {
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
    let generated = text(&out)
        .lines()
        .find_map(|l| l.strip_prefix("key id:"))
        .unwrap()
        .trim()
        .to_string();
    for file in ["alice.key", "alice.pub"] {
        let out = edge_runner(&["keys", "id", p(&dir.path().join(file))]);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("{generated}\n")
        );
    }
    assert_eq!(generated.len(), 64);
    let junk = dir.path().join("junk.pub");
    std::fs::write(&junk, "not a key").unwrap();
    let out = edge_runner(&["keys", "id", p(&junk)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("junk.pub"), "{}", text(&out));
}

/// `--input -` reads the capsule's input from standard input.
#[test]
fn input_dash_reads_standard_input() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, public) = keys(d, "publisher");
    let trust = write_trust_root(d, &public);
    let signed = sign(d, &key, "v1.wasm", &[]);
    let evidence = d.join("evidence");
    let run = |input: &[u8]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_edge-runner"))
            .args([
                "run",
                p(&signed),
                "--trust",
                p(&trust),
                "--site",
                SITE,
                "--evidence",
                p(&evidence),
                "--input",
                "-",
            ])
            .env_remove("EDGE_RUNNER_KEY")
            .env("XDG_STATE_HOME", state_home())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // The runner may stop reading early (over the limit): a closed pipe is fine here.
        let _ = stdin.write_all(input);
        drop(stdin);
        child.wait_with_output().unwrap()
    };
    let out =
        run(br#"{"document": {"ok": true}, "assertions": [{"pointer": "/ok", "equals": true}]}"#);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("verdict: pass — all 1 assertions hold"),
        "{}",
        text(&out)
    );
    let out = run(&vec![b' '; 17 * 1024 * 1024]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("--input - (standard input) gave more than the limit of"),
        "{}",
        text(&out)
    );
}

/// Issue 12 §4: `edge-runner` re-executes itself to compile a capsule under
/// CPU and address-space limits. The hidden child answers one frame (tag,
/// length, payload) with the compiled code, and refuses to start without its limits.
#[test]
fn the_hidden_compile_child_answers_one_frame_and_needs_its_limits() {
    use std::io::Write;
    let child = |args: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_edge-runner"))
            .arg(edge_runner::sandbox::COMPILE_CHILD_ARG)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(capsule_artifacts::JSON_ASSERT.component);
        drop(stdin);
        child.wait_with_output().unwrap()
    };
    let out = child(&["30", "1073741824"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(out.stdout[0], 0, "tag 0: compiled code follows");
    let len = u64::from_le_bytes(out.stdout[1..9].try_into().unwrap());
    assert_eq!(len, out.stdout.len() as u64 - 9);
    let out = child(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "usage: {} CPU-SECONDS ADDRESS-SPACE-BYTES (used by the runner itself)\n",
            edge_runner::sandbox::COMPILE_CHILD_ARG
        )
    );
}

/// The demo's directory, its runner key copied out with mode 0600, and the
/// arguments `apply` takes for the demo's site (the proposal and approvals added by each test).
fn demo_for_apply(d: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let demo = d.join("demo");
    let out = edge_runner(&["demo", "--out", p(&demo)]);
    assert!(out.status.success(), "{}", text(&out));
    let key = d.join("runner.key");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../keys/demo-runner.key"),
        &key,
    )
    .unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    (demo, key)
}

fn apply_args<'a>(
    demo: &'a Path,
    key: &'a Path,
    proposal: &'a str,
    approvals: &[&'a Path],
) -> Vec<String> {
    let mut args: Vec<String> = [
        "apply",
        "--proposal",
        proposal,
        "--trust",
        p(&demo.join("trust")),
        "--site-policy",
        p(&demo.join("site-policy.toml")),
        "--evidence",
        p(&demo.join("evidence")),
        "--verify-capsule",
        p(&demo.join("config-fix.signed.wasm")),
        "--runner-key",
        p(key),
        "--approvals",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    args.extend(approvals.iter().map(|a| p(a).to_string()));
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The id of the only proposal `proposal list` shows that `pick` accepts.
fn proposal_ids(demo: &Path) -> Vec<String> {
    let out = edge_runner(&["proposal", "list", "--evidence", p(&demo.join("evidence"))]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn apply_twice_replay_is_refused_from_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (demo, key) = demo_for_apply(d);
    let ids = proposal_ids(&demo);
    assert_eq!(ids.len(), 1, "{ids:?}");
    let alice = demo.join("approval-alice.cose");
    let bob = demo.join("approval-bob.cose");
    let out = edge_runner(&strs(&apply_args(&demo, &key, &ids[0], &[&alice, &bob])));
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("NOT AUTHORIZED: proposal {}: proposal {} was already applied (apply-started at record ", ids[0], ids[0]))
            && text(&out).contains("); a proposal applies once — propose again for a new change"),
        "{}",
        text(&out)
    );
}

#[test]
fn kill_9_between_rename_and_record_is_recovered_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (demo, key) = demo_for_apply(d);
    let conf = demo.join("config/app.conf");
    std::fs::write(&conf, "[pool]\nmax_connections = 10\ntls = on\n").unwrap();
    let input = d.join("fix.json");
    std::fs::write(
        &input,
        r#"{"path": "/config/app.conf", "set": {"max_connections": "200"}, "rationale": "DB-7"}"#,
    )
    .unwrap();
    let out = edge_runner(&[
        "run",
        p(&demo.join("config-fix.signed.wasm")),
        "--trust",
        p(&demo.join("trust")),
        "--site-policy",
        p(&demo.join("site-policy.toml")),
        "--evidence",
        p(&demo.join("evidence")),
        "--input",
        p(&input),
        "--runner-key",
        p(&key),
        "--test-capsules",
        p(&demo.join("test-capsules")),
        "--proposer",
        "config-fix-agent",
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(
        text(&out).contains("at tier change-control"),
        "{}",
        text(&out)
    );
    // The proposal of this run is the one made against the drifted file.
    let ids = proposal_ids(&demo);
    assert_eq!(ids.len(), 2, "{ids:?}");
    let drifted = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        b"[pool]\nmax_connections = 10\ntls = on\n",
    ));
    let id = ids
        .iter()
        .find(|id| {
            let out = edge_runner(&[
                "proposal",
                "show",
                id,
                "--evidence",
                p(&demo.join("evidence")),
            ]);
            String::from_utf8_lossy(&out.stdout).contains(&drifted)
        })
        .unwrap()
        .clone();
    let f = demo.join(format!("evidence/proposals/{id}.proposal"));
    let approve = |person: &str| {
        let approval = d.join(format!("{person}.cose"));
        let out = edge_runner(&[
            "approve",
            "--proposal",
            p(&f),
            "--key",
            p(&Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../keys/demo-approver-{person}.key"))),
            "--person",
            person,
            "--reason",
            "pool back to 200",
            "--out",
            p(&approval),
        ]);
        assert!(out.status.success(), "{}", text(&out));
        approval
    };
    let alice = approve("alice");
    let bob = approve("bob");

    // Apply, and kill -9 the runner after the rename, before `applied` is recorded.
    let args = apply_args(&demo, &key, &id, &[&alice, &bob]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_edge-runner"))
        .args(strs(&args))
        .env_remove("EDGE_RUNNER_KEY")
        .env("XDG_STATE_HOME", state_home())
        .env("EDGE_RUNNER_TEST_HOOK", "after-rename")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(n > 0, "the runner ended before the hook");
        if line.contains("edge-runner test hook: after-rename") {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        "[pool]\nmax_connections = 200\ntls = on\n",
        "the rename happened"
    );

    // The next start resolves it from the target's digest: post-image, so applied.
    let out = edge_runner(&strs(&args));
    assert!(
        text(&out).contains(&format!("the interrupted apply of proposal {id} (record "))
            && text(&out).contains(") was found applied: /config/app.conf: post-image"),
        "{}",
        text(&out)
    );
    // And it is applied once: this second apply is a replay.
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert!(
        text(&out).contains("a proposal applies once"),
        "{}",
        text(&out)
    );
    let out = edge_runner(&[
        "evidence",
        "verify",
        p(&demo.join("evidence")),
        "--runner-key",
        p(&demo.join("runner.pub")),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("applied: applied, recovered at restart"),
        "{}",
        text(&out)
    );
}

/// The auditor's report says how many jobs a log shows, how they ended, and
/// which are still in flight — in text, JSON and HTML (issue 15).
#[test]
fn evidence_report_shows_jobs_in_flight_and_counts() {
    use edge_runner::evidence::events::{JobAccepted, JobFinished, Submitter};
    use edge_runner::evidence::{Event, EvidenceLog};
    let dir = tempfile::tempdir().unwrap();
    let evidence = dir.path().join("evidence");
    let key = edge_runner::keys::SecretKey::generate().unwrap();
    let runner_pub = dir.path().join("runner.pub");
    std::fs::write(&runner_pub, key.public().to_pem().unwrap()).unwrap();
    let accept = |job| {
        Event::from(JobAccepted {
            job,
            submitter: Submitter {
                uid: 1000,
                gid: 1000,
                pid: 1,
            },
            capsule_sha256: [1; 32],
            signature_sha256: None,
            input_sha256: [2; 32],
            idempotency_sha256: None,
            queue_depth: job,
        })
    };
    let mut log = EvidenceLog::open(&evidence, key).unwrap();
    let finished = Event::from(JobFinished {
        job: 1,
        outcome: "error".into(),
        exit: 1,
        records: Vec::new(),
        detail: Some("the capsule digest names no uploaded capsule".into()),
    });
    for r in log.record_each(vec![accept(1), accept(2), accept(3), finished]) {
        r.unwrap();
    }
    log.close().unwrap();
    let html = dir.path().join("report.html");
    let out = edge_runner(&[
        "evidence",
        "verify",
        p(&evidence),
        "--runner-key",
        p(&runner_pub),
        "--html",
        p(&html),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("  jobs: 3 accepted, 1 finished, 0 cancelled, 0 abandoned\n"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("  2 jobs in flight: 2, 3 (accepted and not ended"),
        "{}",
        text(&out)
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("<p id=\"jobs-in-flight\">2 jobs in flight: 2, 3"),
        "{page}"
    );
    let out = edge_runner(&[
        "evidence",
        "verify",
        p(&evidence),
        "--runner-key",
        p(&runner_pub),
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["jobs_in_flight"], serde_json::json!([2, 3]));
    assert_eq!(json["jobs"]["accepted"], 3);
    assert_eq!(json["jobs"]["finished"], 1);
}

/// A revocation may name a key by an unambiguous prefix of its id (as most
/// commands print 16 digits): `trust rotate` resolves it against the keys the
/// store has held and signs the full id; an unknown or ambiguous prefix is
/// refused with what to do, and nothing is installed.
#[test]
fn a_revoked_key_may_be_named_by_an_unambiguous_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (publisher, publisher_pub) = keys(d, "publisher");
    let trust = write_trust_root(d, &publisher_pub);
    let out = edge_runner(&["keys", "id", p(&publisher_pub)]);
    assert!(out.status.success(), "{}", text(&out));
    let full = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(full.len(), 64, "{full}");
    // v2 keeps the root key and drops the publisher, revoking its key by prefix.
    let (_, other_pub) = keys(d, "other");
    let v2 = |key_id: &str| {
        let text =
            policy(
                2,
                "2099-01-01T00:00:00Z",
                &[&d.join("root.pub")],
                &other_pub,
            ) + &format!("[[revoked-key]]\nkey-id = \"{key_id}\"\nreason = \"laptop stolen\"\n");
        let path = d.join("v2.toml");
        std::fs::write(&path, text).unwrap();
        path
    };
    let rotate = |path: &Path| {
        edge_runner(&[
            "trust",
            "rotate",
            "--dir",
            p(&trust),
            "--policy",
            p(path),
            "--key",
            p(&d.join("root.key")),
        ])
    };

    let out = rotate(&v2("00000000deadbeef"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(
            "revoked-key `00000000deadbeef` is the start of no key this trust store has held"
        ),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("`edge-runner keys id FILE`"),
        "{}",
        text(&out)
    );
    // Too short to be a prefix: the parser's own error, naming the full form.
    let out = rotate(&v2(&full[..6]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("must be 64 lowercase hex digits"),
        "{}",
        text(&out)
    );
    assert!(!trust.join("2.root.cose").exists());

    let out = rotate(&v2(&full[..16]));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "revoked-key `{}` is publisher `acme-ci` (v1): the signed version names it in full, {full}",
            &full[..16]
        )),
        "{}",
        text(&out)
    );
    let show = edge_runner(&["trust", "show", p(&trust)]);
    assert!(text(&show).contains(&full), "{}", text(&show));

    // The revoked key's capsule is refused.
    let unsigned = d.join("unsigned.wasm");
    std::fs::write(&unsigned, capsule_artifacts::JSON_ASSERT.component).unwrap();
    let signed = d.join("signed.wasm");
    let out = edge_runner(&[
        "capsule",
        "sign",
        p(&unsigned),
        "--manifest",
        capsule_artifacts::JSON_ASSERT.manifest_path,
        "--key",
        p(&publisher),
        "--out",
        p(&signed),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = edge_runner(&[
        "capsule",
        "verify",
        p(&signed),
        "--trust",
        p(&trust),
        "--site",
        SITE,
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("revoked"), "{}", text(&out));
}
