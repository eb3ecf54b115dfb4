//! Capsules in Python and JavaScript through the runner, as their authors and
//! operators use them: built by the SDKs' build commands, signed, verified,
//! precompiled, run, refused ungranted egress (and the refusal recorded), and
//! the evidence verified; and the projects `capsule new --lang python|js` writes.
//!
//! These need componentize-py 0.25.1 (for `python3`, or the interpreter in
//! `EDGE_RUNNER_PYTHON`), Node.js 20 with `npm ci` run in
//! `capsules/json-assert-js`, and the registries for the scaffolds' own
//! builds; `.ci/run` installs them and runs `cargo test -p edge-runner --test
//! polyglot -- --ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{SITE, edge_runner, keys, p, text};
use edge_runner::cbor::MapReader;
use edge_runner::keys::PublicKey;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Serves `status` with a JSON `body` to every request on 127.0.0.1; returns the port and a hit counter.
fn server(status: u16, body: &'static str) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, hits)
}

/// Runs a build command; panics with its output when it fails.
fn build(mut cmd: Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what}: {}", text(&out));
}

/// `capsules/http-probe-py` built by `edge-capsule-build` (the SDK from this checkout).
fn build_python_probe(out: &Path) {
    let python = std::env::var("EDGE_RUNNER_PYTHON").unwrap_or_else(|_| "python3".into());
    let dir = repo().join("capsules/http-probe-py");
    let mut cmd = Command::new(python);
    cmd.args(["-m", "edge_capsule.build"])
        .arg(dir.join("probe.py"))
        .arg("--manifest")
        .arg(dir.join("capsule.toml"))
        .arg("-o")
        .arg(out)
        .env("PYTHONPATH", repo().join("capsule-sdk/python"));
    build(cmd, "edge-capsule-build http-probe-py");
}

/// `capsules/json-assert-js` built by `edge-capsule-build-js` (its node_modules from `npm install`).
fn build_js_assert(out: &Path) {
    let dir = repo().join("capsules/json-assert-js");
    let mut cmd = Command::new("node");
    cmd.arg(repo().join("capsule-sdk/js/build.js"))
        .arg(dir.join("capsule.js"))
        .arg("--manifest")
        .arg(dir.join("capsule.toml"))
        .arg("-o")
        .arg(out);
    build(cmd, "edge-capsule-build-js json-assert-js");
}

/// A trust store whose one publisher (`publisher_pub`) may sign test capsules reaching 127.0.0.1.
fn trust_store(d: &Path, publisher_pub: &Path) -> PathBuf {
    let (root_key, root_pub) = keys(d, "root");
    let policy = format!(
        "format = 1\nname = \"polyglot\"\nversion = 1\nexpires = 2099-01-01T00:00:00Z\nroot-threshold = 1\n\
         [thresholds.test]\nkeys = 1\norganisations = 1\n\
         [thresholds.reproduce]\nkeys = 1\norganisations = 1\n\
         [thresholds.remediate]\nkeys = 1\norganisations = 1\n\
         [[root-key]]\nname = \"root\"\npublic-key = \"\"\"\n{}\"\"\"\n\
         [[publisher]]\nname = \"acme-ci\"\norganisation = \"Acme\"\nkinds = [\"test\", \"reproduce\", \"remediate\"]\n\
         names = [\"*\"]\naudiences = [\"*\"]\npublic-key = \"\"\"\n{}\"\"\"\n\
         [publisher.ceiling]\negress = [\"127.0.0.1:*\"]\nconfig = [\"*\"]\n",
        std::fs::read_to_string(root_pub).unwrap(),
        std::fs::read_to_string(publisher_pub).unwrap()
    );
    std::fs::write(d.join("root.toml"), policy).unwrap();
    let trust = d.join("trust");
    let out = edge_runner(&[
        "trust",
        "init",
        "--policy",
        p(&d.join("root.toml")),
        "--key",
        p(&root_key),
        "--dir",
        p(&trust),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    trust
}

/// Signs `wasm` with `manifest` (its text), verifies it with `capsule verify`, and returns the signed file.
fn sign_and_verify(d: &Path, wasm: &Path, manifest: &str, key: &Path, trust: &Path) -> PathBuf {
    let manifest_path = d.join("capsule.toml");
    std::fs::write(&manifest_path, manifest).unwrap();
    let signed = d.join("capsule.signed.wasm");
    let out = edge_runner(&[
        "capsule",
        "sign",
        p(wasm),
        "--manifest",
        p(&manifest_path),
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
        p(trust),
        "--site",
        SITE,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("is trusted by `polyglot` v1"),
        "{}",
        text(&out)
    );
    signed
}

/// `edge-runner run` with a site policy granting `egress` and `input` on a file.
fn run(
    d: &Path,
    signed: &Path,
    trust: &Path,
    evidence: &Path,
    egress: &[String],
    input: &str,
) -> (Option<i32>, String) {
    let quoted: Vec<String> = egress.iter().map(|e| format!("\"{e}\"")).collect();
    let site = d.join("site-policy.toml");
    std::fs::write(
        &site,
        format!(
            "format = 1\nsite = \"{SITE}\"\negress = [{}]\n",
            quoted.join(", ")
        ),
    )
    .unwrap();
    let input_path = d.join("input.json");
    std::fs::write(&input_path, input).unwrap();
    let out = edge_runner(&[
        "run",
        p(signed),
        "--trust",
        p(trust),
        "--site-policy",
        p(&site),
        "--evidence",
        p(evidence),
        "--input",
        p(&input_path),
    ]);
    (out.status.code(), text(&out))
}

/// The `run-finished` bodies of a verified log, oldest first.
fn runs_finished(evidence: &Path) -> Vec<ciborium::Value> {
    let log = std::fs::read(evidence.join("evidence.log")).unwrap();
    let key = PublicKey::load(&evidence.join("runner.pub")).unwrap();
    edge_runner::evidence::verify_log(&log, &key)
        .unwrap()
        .records
        .into_iter()
        .filter(|r| r.record.event == "run-finished")
        .map(|r| r.record.body)
        .collect()
}

/// Where a recorded run's code came from (`compiled`, `disk-cache`, ...).
fn code_source(body: &ciborium::Value) -> String {
    MapReader::new("run-finished", body)
        .unwrap()
        .text("code")
        .unwrap()
        .to_string()
}

/// A recorded run's `egress-denied` entries.
fn egress_denied(body: &ciborium::Value) -> Vec<String> {
    match MapReader::new("run-finished", body)
        .unwrap()
        .get("egress-denied")
    {
        Some(ciborium::Value::Array(items)) => items
            .iter()
            .map(|v| v.as_text().unwrap_or_default().to_string())
            .collect(),
        _ => Vec::new(),
    }
}

fn evidence_verifies(evidence: &Path) {
    let out = edge_runner(&[
        "evidence",
        "verify",
        p(evidence),
        "--runner-key",
        p(&evidence.join("runner.pub")),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("VALID: "), "{}", text(&out));
}

/// Precompiles into `evidence`'s code cache and checks that a second precompile finds it there.
fn precompile(signed: &Path, trust: &Path, evidence: &Path) {
    let args = [
        "capsule",
        "precompile",
        p(signed),
        "--trust",
        p(trust),
        "--site",
        SITE,
        "--evidence",
        p(evidence),
    ];
    let out = edge_runner(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains(" ms into "), "{}", text(&out));
    let again = edge_runner(&args);
    assert!(
        text(&again).contains("is already compiled in") && text(&again).contains("(disk-cache)"),
        "{}",
        text(&again)
    );
}

#[test]
#[ignore = "needs componentize-py 0.25.1; .ci/run installs it and runs the ignored tests"]
fn python_http_probe_signs_verifies_runs_and_its_ungranted_egress_is_denied_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let wasm = d.join("http-probe-py.wasm");
    build_python_probe(&wasm);
    let (key, public) = keys(d, "publisher");
    let trust = trust_store(d, &public);
    let (up, up_hits) = server(200, r#"{"status":"up"}"#);
    let (down, _) = server(503, r#"{"status":"down"}"#);
    let (elsewhere, elsewhere_hits) = server(200, "{}");
    let granted = [
        format!("http://127.0.0.1:{up}"),
        format!("http://127.0.0.1:{down}"),
    ];
    let manifest = std::fs::read_to_string(repo().join("capsules/http-probe-py/capsule.toml"))
        .unwrap()
        .replace(
            r#"egress = ["https://status.example.com:443"]"#,
            &format!(r#"egress = ["{}", "{}"]"#, granted[0], granted[1]),
        );
    let signed = sign_and_verify(d, &wasm, &manifest, &key, &trust);
    let evidence = d.join("evidence");
    // Installed: compiled into the code cache before its first run.
    precompile(&signed, &trust, &evidence);

    let (code, out) = run(
        d,
        &signed,
        &trust,
        &evidence,
        &granted,
        &format!(
            r#"{{"url": "http://127.0.0.1:{up}/health", "headers": {{"content-type": "application/json"}}, "body_contains": ["\"status\":\"up\""]}}"#
        ),
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "verdict: pass — http://127.0.0.1:{up}/health: 200 in "
        )),
        "{out}"
    );
    assert!(
        out.contains("evidence item `response` (application/json"),
        "{out}"
    );
    assert_eq!(up_hits.load(Ordering::SeqCst), 1);

    let (code, out) = run(
        d,
        &signed,
        &trust,
        &evidence,
        &granted,
        &format!(r#"{{"url": "http://127.0.0.1:{down}/health", "body_contains": ["up"]}}"#),
    );
    assert_eq!(code, Some(5), "{out}");
    assert!(
        out.contains("finding [high] status.unexpected: status 503 (expected [200])"),
        "{out}"
    );
    assert!(
        out.contains("finding [high] body.missing: body does not contain 'up'"),
        "{out}"
    );

    // A destination the manifest does not list: the runner refuses the request, the
    // SDK's error names the entry that would grant it, and the refusal is recorded.
    let (code, out) = run(
        d,
        &signed,
        &trust,
        &evidence,
        &granted,
        &format!(r#"{{"url": "http://127.0.0.1:{elsewhere}/"}}"#),
    );
    assert_eq!(code, Some(6), "{out}");
    assert!(out.contains(&format!(
        r#"verdict: error — http://127.0.0.1:{elsewhere}/ is unreachable: GET http://127.0.0.1:{elsewhere}/: request denied: the destination is not granted (list it under [capabilities] egress in capsule.toml, e.g. egress = ["http://127.0.0.1:{elsewhere}"], and the site must allow it)"#
    )), "{out}");
    // With no HTTP egress granted at all, `wasi:http` is not even linked: the call traps.
    let (code, out) = run(
        d,
        &signed,
        &trust,
        &evidence,
        &[],
        &format!(r#"{{"url": "http://127.0.0.1:{up}/"}}"#),
    );
    assert_eq!(code, Some(6), "{out}");
    assert!(
        out.contains("but `wasi:http` is not linked for it: no HTTP egress is granted"),
        "{out}"
    );
    assert_eq!(elsewhere_hits.load(Ordering::SeqCst), 0);
    assert_eq!(up_hits.load(Ordering::SeqCst), 1);

    let finished = runs_finished(&evidence);
    assert_eq!(finished.len(), 4);
    // Every run loaded the code `precompile` compiled; none compiled on its own clock.
    for body in &finished {
        assert_eq!(code_source(body), "disk-cache");
    }
    assert_eq!(
        egress_denied(&finished[2]).len(),
        1,
        "the refused request is recorded"
    );
    assert_eq!(
        egress_denied(&finished[3]),
        ["HttpNotGranted wasi:http/types@0.2.12#[static]fields.from-list"]
    );
    evidence_verifies(&evidence);
}

#[test]
#[ignore = "needs ComponentizeJS 0.23.0 (npm ci in capsules/json-assert-js); .ci/run installs it and runs the ignored tests"]
fn js_json_assert_signs_verifies_runs_and_its_ungranted_egress_is_denied_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let wasm = d.join("json-assert-js.wasm");
    build_js_assert(&wasm);
    let (key, public) = keys(d, "publisher");
    let trust = trust_store(d, &public);
    let (port, hits) = server(200, r#"{"status":"up","version":3}"#);
    let (elsewhere, elsewhere_hits) = server(200, "{}");
    let granted = [format!("http://127.0.0.1:{port}")];
    let manifest = std::fs::read_to_string(repo().join("capsules/json-assert-js/capsule.toml"))
        .unwrap()
        .replace(
            "[limits]",
            &format!("[capabilities]\negress = [\"{}\"]\n\n[limits]", granted[0]),
        );
    let signed = sign_and_verify(d, &wasm, &manifest, &key, &trust);
    let evidence = d.join("evidence");

    // The first run compiles (within the compile budget); the next ones load the cached code.
    let (code, out) = run(
        d,
        &signed,
        &trust,
        &evidence,
        &granted,
        r#"{"document": {"status": "up"}, "assertions": [{"pointer": "/status", "equals": "up"}]}"#,
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("verdict: pass — all 1 assertions hold"),
        "{out}"
    );

    let (code, out) = run(
        d,
        &signed,
        &trust,
        &evidence,
        &granted,
        r#"{"document": {"status": "down"}, "assertions": [{"pointer": "/status", "equals": "up"}, {"pointer": "/x", "exists": true}]}"#,
    );
    assert_eq!(code, Some(5), "{out}");
    assert!(
        out.contains(r#"finding [high] assertion.0: `/status` is "down", expected "up""#),
        "{out}"
    );
    assert!(
        out.contains("finding [high] assertion.1: `/x` is missing"),
        "{out}"
    );

    // A granted fetch, through wasi:http.
    let (code, out) = run(
        d,
        &signed,
        &trust,
        &evidence,
        &granted,
        &format!(
            r#"{{"url": "http://127.0.0.1:{port}/doc", "assertions": [{{"pointer": "/version", "equals": 3}}]}}"#
        ),
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // An ungranted destination: refused by the runner, named by the SDK, recorded.
    let (code, out) = run(
        d,
        &signed,
        &trust,
        &evidence,
        &granted,
        &format!(r#"{{"url": "http://127.0.0.1:{elsewhere}/doc", "assertions": []}}"#),
    );
    assert_eq!(code, Some(6), "{out}");
    assert!(out.contains(&format!(
        r#"if the destination is not granted, list it under [capabilities] egress in capsule.toml, e.g. egress = ["http://127.0.0.1:{elsewhere}"], and the site must allow it"#
    )), "{out}");
    // With no HTTP egress granted, `wasi:http` is not linked: the fetch traps.
    let (code, out) = run(
        d,
        &signed,
        &trust,
        &evidence,
        &[],
        &format!(r#"{{"url": "http://127.0.0.1:{port}/doc", "assertions": []}}"#),
    );
    assert_eq!(code, Some(6), "{out}");
    assert!(
        out.contains("but `wasi:http` is not linked for it: no HTTP egress is granted"),
        "{out}"
    );
    assert_eq!(elsewhere_hits.load(Ordering::SeqCst), 0);

    let finished = runs_finished(&evidence);
    assert_eq!(finished.len(), 5);
    assert_eq!(code_source(&finished[0]), "compiled");
    for body in &finished[1..] {
        assert_eq!(code_source(body), "disk-cache");
    }
    assert_eq!(
        egress_denied(&finished[3]).len(),
        1,
        "the refused request is recorded"
    );
    assert_eq!(
        egress_denied(&finished[4]).len(),
        1,
        "the trapped call is recorded"
    );
    evidence_verifies(&evidence);
}

/// `capsule new --lang LANG`, its own `build.sh` (pinned tools from the registry, unit
/// tests, the component), then sign and run it on a passing and a failing input.
fn scaffold_builds_tests_signs_and_runs(lang: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let project = d.join("disk-check");
    let out = edge_runner(&[
        "capsule",
        "new",
        "disk-check",
        "--kind",
        "test",
        "--lang",
        lang,
        "--out",
        p(&project),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    for file in ["README.md", "build.sh", "capsule.toml", ".gitignore"] {
        assert!(project.join(file).is_file(), "{file}");
    }
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    for step in [
        "./build.sh",
        "edge-runner capsule sign disk-check.wasm --manifest capsule.toml",
        "edge-runner run disk-check.signed.wasm",
    ] {
        assert!(readme.contains(step), "{step}: {readme}");
    }
    let built = Command::new(project.join("build.sh")).output().unwrap();
    assert!(built.status.success(), "build.sh: {}", text(&built));
    let wasm = project.join("disk-check.wasm");
    assert!(wasm.is_file(), "{}", text(&built));

    let (key, public) = keys(d, "publisher");
    let trust = trust_store(d, &public);
    let manifest = std::fs::read_to_string(project.join("capsule.toml")).unwrap();
    let signed = sign_and_verify(d, &wasm, &manifest, &key, &trust);
    let evidence = d.join("evidence");
    let (code, out) = run(d, &signed, &trust, &evidence, &[], r#"{"status": "up"}"#);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("verdict: pass — service is up"), "{out}");
    let (code, out) = run(d, &signed, &trust, &evidence, &[], r#"{"status": "down"}"#);
    assert_eq!(code, Some(5), "{out}");
    evidence_verifies(&evidence);
}

#[test]
#[ignore = "needs python3 with venv and PyPI (componentize-py 0.25.1, pytest); .ci/run runs the ignored tests"]
fn capsule_new_python_builds_passes_its_tests_signs_and_runs() {
    scaffold_builds_tests_signs_and_runs("python");
}

#[test]
#[ignore = "needs Node.js 20 and npm (ComponentizeJS 0.23.0, rolldown 1.3.3); .ci/run runs the ignored tests"]
fn capsule_new_js_builds_passes_its_tests_signs_and_runs() {
    scaffold_builds_tests_signs_and_runs("js");
}
