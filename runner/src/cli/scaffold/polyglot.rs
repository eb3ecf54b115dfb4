//! Python and JavaScript capsule projects for `edge-runner capsule new --lang python|js`.
//!
//! Owns the project templates and the copy of this runner's Python or
//! JavaScript SDK written into each project. The build tools themselves
//! (componentize-py, ComponentizeJS, rolldown, pytest) are fetched, pinned,
//! by the project's `build.sh` from PyPI or npm (a JS project with an npm
//! lockfile, so `npm ci` pins their dependencies too).

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use super::{Exit, Kind, manifest};

/// One file of an SDK in `capsule-sdk/LANG/`: its path there and its text.
macro_rules! sdk_file {
    ($lang:literal, $path:literal) => {
        (
            $path,
            include_str!(concat!("../../../../capsule-sdk/", $lang, "/", $path)),
        )
    };
}

/// A language `capsule new` writes projects in, besides Rust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lang {
    /// Python, built with componentize-py.
    Python,
    /// JavaScript, built with ComponentizeJS.
    Js,
}

/// The componentize-py release the Python SDK is built and tested with.
pub(crate) const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
/// The pytest release a Python project's unit tests run under.
pub(crate) const PYTEST_VERSION: &str = "9.2.0";

/// The Python SDK (`capsule-sdk/python`), file by file, written as `capsule-sdk-python/`.
pub(super) const PYTHON_SDK_FILES: [(&str, &str); 19] = [
    sdk_file!("python", "pyproject.toml"),
    sdk_file!("python", "README.md"),
    sdk_file!("python", "edge_capsule/__init__.py"),
    sdk_file!("python", "edge_capsule/_api.py"),
    sdk_file!("python", "edge_capsule/_entry.py"),
    sdk_file!("python", "edge_capsule/_guest.py"),
    sdk_file!("python", "edge_capsule/build.py"),
    sdk_file!("python", "edge_capsule/http.py"),
    sdk_file!("python", "edge_capsule/testing.py"),
    sdk_file!("python", "edge_capsule/py.typed"),
    sdk_file!("python", "edge_capsule/wit/capsule.wit"),
    sdk_file!("python", "edge_capsule/wit/guest.wit"),
    sdk_file!("python", "edge_capsule/wit/deps/cli/cli.wit"),
    sdk_file!("python", "edge_capsule/wit/deps/clocks/clocks.wit"),
    sdk_file!("python", "edge_capsule/wit/deps/filesystem/filesystem.wit"),
    sdk_file!("python", "edge_capsule/wit/deps/http/http.wit"),
    sdk_file!("python", "edge_capsule/wit/deps/io/io.wit"),
    sdk_file!("python", "edge_capsule/wit/deps/random/random.wit"),
    sdk_file!("python", "edge_capsule/wit/deps/sockets/sockets.wit"),
];

/// The JavaScript SDK (`capsule-sdk/js`), file by file, written as `capsule-sdk-js/`.
pub(super) const JS_SDK_FILES: [(&str, &str); 9] = [
    sdk_file!("js", "package.json"),
    sdk_file!("js", "README.md"),
    sdk_file!("js", "index.js"),
    sdk_file!("js", "index.d.ts"),
    sdk_file!("js", "testing.js"),
    sdk_file!("js", "testing.d.ts"),
    sdk_file!("js", "guest.js"),
    sdk_file!("js", "build.js"),
    sdk_file!("js", "wit/capsule.wit"),
];

/// Writes a Python or JavaScript project for capsule `name` into `dir` and says how to use it.
pub(super) fn write(
    dir: &Path,
    name: &str,
    kind: Kind,
    audience: &[String],
    lang: Lang,
) -> Result<Exit> {
    let (sdk_dir, sdk_files, files) = match lang {
        Lang::Python => (
            "capsule-sdk-python",
            &PYTHON_SDK_FILES[..],
            python(name, kind),
        ),
        Lang::Js => ("capsule-sdk-js", &JS_SDK_FILES[..], js(name, kind)),
    };
    fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let all = files
        .into_iter()
        .chain([("capsule.toml".to_string(), manifest(name, kind, audience))])
        .chain(
            sdk_files
                .iter()
                .map(|(path, text)| (format!("{sdk_dir}/{path}"), (*text).to_string())),
        );
    for (file, text) in all {
        let path = dir.join(&file);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| parent.display().to_string())?;
        }
        fs::write(&path, text).with_context(|| path.display().to_string())?;
        if file == "build.sh" {
            make_executable(&path)?;
        }
    }
    let language = match lang {
        Lang::Python => "Python",
        Lang::Js => "JavaScript",
    };
    say!(
        "created {} ({kind} capsule `{name}`, {language})",
        dir.display()
    )?;
    say!("  cd {}", dir.display())?;
    say!(
        "  ./build.sh      # fetches the pinned build tools, runs the unit tests, builds {name}.wasm"
    )?;
    say!(
        "  edge-runner capsule dev-setup   # DEVELOPMENT ONLY: a key and trust store to try it (README.md)"
    )?;
    say!(
        "  edge-runner capsule sign {name}.wasm --manifest capsule.toml --key edge-runner-dev/dev-publisher.key --out {name}.signed.wasm"
    )?;
    Ok(Exit::Ok)
}

#[cfg(unix)]
fn make_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .with_context(|| path.display().to_string())
}

#[cfg(not(unix))]
fn make_executable(_: &Path) -> Result<()> {
    Ok(())
}

/// The README: build → sign → run, on the author's machine with the
/// development set-up, then for real.
fn readme(name: &str, kind: Kind, language: &str, layout: &str, test: &str) -> String {
    let try_it = crate::cli::dev::try_it_block(
        "./build.sh       # the pinned build tools, the unit tests, the component",
        &format!("{name}.wasm"),
        name,
    );
    format!(
        r#"# {name}

A `{kind}` capsule for the Edge Runner, in {language}. Input: `{{"status": "up"}}`.

{layout}

`./build.sh` fetches the pinned build tools from the package registry, runs the
unit tests natively ({test}), checks the module (one entry point, the right
signature, the same kind as `capsule.toml`) and builds the WebAssembly component
`{name}.wasm`. The manifest `capsule.toml` (name, version, kind, what it may
touch) is signed together with the component, exactly as for a Rust capsule.

{try_it}
## Release

Sign with your own publisher key (the trust-root holders add its `.pub` to
the sites' trust root) and run it at a site:

```sh
edge-runner keys generate --out ~/keys --name publisher      # once; send publisher.pub to the trust-root holders
edge-runner capsule sign {name}.wasm --manifest capsule.toml --key ~/keys/publisher.key --out {name}.signed.wasm
edge-runner capsule verify {name}.signed.wasm --trust /etc/edge-runner/trust --site plant-7
edge-runner capsule precompile {name}.signed.wasm --trust /etc/edge-runner/trust --site plant-7 --evidence /var/lib/edge-runner
edge-runner run {name}.signed.wasm --trust /etc/edge-runner/trust --site plant-7 \
    --evidence /var/lib/edge-runner --input input.json
```

`precompile` is optional: it compiles the component into the runner's
authenticated code cache when the capsule is installed, so the first run does
not spend the compile (seconds of CPU for a {language} component) on its clock.
"#
    )
}

fn python(name: &str, kind: Kind) -> Vec<(String, String)> {
    let k = kind.as_str();
    let (judge, propose) = match kind {
        Kind::Test => (
            "if status == \"up\":\n        return Outcome.passed(\"service is up\")\n    return Outcome.failed(f\"service is {status}\").with_finding(\"status\", Severity.HIGH, \"expected `up`\")",
            "",
        ),
        Kind::Reproduce => (
            "if status == \"down\":\n        return Outcome.failed(\"the failure reproduces\").with_finding(\"reproduced\", Severity.HIGH, \"status is still `down`\")\n    return Outcome.passed(\"the failure does not reproduce\")",
            "",
        ),
        Kind::Remediate => (
            "if status == \"up\":\n        return Outcome.passed(\"nothing to fix\")\n    return Outcome.failed(f\"status is {status}; a fix is proposed\").with_finding(\"status\", Severity.MEDIUM, \"expected `up`\")",
            "\n    if outcome.verdict is Verdict.FAIL:\n        cx.propose(\n            capsule.Proposal(\n                target=\"status\",\n                diff=f\"-status = {status}\\n+status = up\\n\",\n                rollback=f\"-status = up\\n+status = {status}\\n\",\n                rationale=\"the service must be up\",\n            )\n        )",
        ),
    };
    let proposal_test = if kind == Kind::Remediate {
        "\n    assert run.evidence[-1].label == \"proposal\"\n    assert run.evidence[-1].json()[\"target\"] == \"status\""
    } else {
        ""
    };
    let app = format!(
        r#""""A {k} capsule. Input: {{"status": "up"}}."""

import edge_capsule as capsule
from edge_capsule import CapsuleError, Outcome, Severity, Verdict


def judge(status: str) -> Outcome:
    """The check itself, kept apart from the runner so unit tests call it directly."""
    {judge}


@capsule.{k}
def run(cx: capsule.Context) -> Outcome:
    data = cx.input_json()
    status = data.get("status") if isinstance(data, dict) else None
    if not isinstance(status, str):
        raise CapsuleError('the input must be {{"status": "..."}}')
    cx.evidence("input", "application/json", cx.input)
    outcome = judge(status){propose}
    return outcome
"#
    );
    let test = format!(
        r#""""Unit tests, run natively with pytest against a fake runner (edge_capsule.testing)."""

from edge_capsule import Verdict, testing

import app


def test_judges_the_input():
    assert app.judge("up").verdict is Verdict.PASS
    assert app.judge("down").verdict is Verdict.FAIL


def test_runs_as_the_runner_would():
    run = testing.run(app.run, input={{"status": "down"}})
    assert run.outcome.verdict is Verdict.FAIL, run.outcome
    assert run.evidence[0].label == "input"{proposal_test}


def test_bad_input_is_an_error():
    run = testing.run(app.run, input="not json")
    assert run.outcome.verdict is Verdict.ERROR
"#
    );
    let build = format!(
        r#"#!/bin/sh
# Builds {name}.wasm. Fetches the SDK's build tools from PyPI, pinned, into .venv
# (componentize-py {COMPONENTIZE_PY_VERSION}, pytest {PYTEST_VERSION}), runs the unit tests, checks the
# module and builds the component. Needs python3 (3.11 or later) with venv.
set -eu
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
    ./capsule-sdk-python componentize-py=={COMPONENTIZE_PY_VERSION} pytest=={PYTEST_VERSION}
.venv/bin/python -m pytest -q -p no:cacheprovider test_app.py
.venv/bin/edge-capsule-build app.py --manifest capsule.toml -o {name}.wasm
"#
    );
    let layout = "`app.py` is the capsule (one function, one decorator), `test_app.py` its unit\n\
                  tests, `capsule-sdk-python/` the Python SDK of the edge-runner that created\n\
                  this project (it speaks that runner's WIT contract, `edge-runner:capsule@0.1.0`).";
    vec![
        ("app.py".into(), app),
        ("test_app.py".into(), test),
        ("build.sh".into(), build),
        (
            "README.md".into(),
            readme(name, kind, "Python", layout, "`pytest`"),
        ),
        (
            ".gitignore".into(),
            "/.venv/\n__pycache__/\n*.wasm\n# signing keys never go into version control\n*.key\n*.pem\n# `edge-runner capsule dev-setup`: development keys, trust store and evidence\n/edge-runner-dev/\n"
                .into(),
        ),
    ]
}

/// The npm lockfile of `capsules/json-assert-js`, whose dependencies are a JS
/// project's (the SDK, ComponentizeJS and rolldown at the pins below): a new
/// project gets it with its own name and SDK path, so `npm ci` installs the
/// same tree, to the integrity hash, wherever it is built.
const JS_EXAMPLE_LOCKFILE: &str =
    include_str!("../../../../capsules/json-assert-js/package-lock.json");

/// `package-lock.json` for JS project `name`: the example's, renamed, with the
/// SDK at `./capsule-sdk-js`.
fn js_lockfile(name: &str) -> String {
    JS_EXAMPLE_LOCKFILE
        .replace(
            "\"name\": \"json-assert-js\"",
            &format!("\"name\": \"{name}\""),
        )
        .replace("\"file:../../capsule-sdk/js\"", "\"file:./capsule-sdk-js\"")
        .replace("\"../../capsule-sdk/js\"", "\"capsule-sdk-js\"")
}

/// The ComponentizeJS release the JavaScript SDK is built and tested with.
pub(crate) const COMPONENTIZE_JS_VERSION: &str = "0.23.0";
/// The WASI shim ComponentizeJS's build imports without declaring it as a
/// dependency (it relied on hoisting, which a locked `npm ci` tree does not do).
pub(crate) const PREVIEW2_SHIM_VERSION: &str = "0.25.0";
/// The rolldown release that bundles a JavaScript capsule with the SDK.
pub(crate) const ROLLDOWN_VERSION: &str = "1.3.3";

fn js(name: &str, kind: Kind) -> Vec<(String, String)> {
    let k = kind.as_str();
    let judge = match kind {
        Kind::Test => {
            "if (status === \"up\") return capsule.Outcome.pass(\"service is up\");\n  return capsule.Outcome.fail(`service is ${status}`).withFinding(\"status\", capsule.Severity.HIGH, \"expected `up`\");"
        }
        Kind::Reproduce => {
            "if (status === \"down\") {\n    return capsule.Outcome.fail(\"the failure reproduces\").withFinding(\"reproduced\", capsule.Severity.HIGH, \"status is still `down`\");\n  }\n  return capsule.Outcome.pass(\"the failure does not reproduce\");"
        }
        Kind::Remediate => {
            "if (status === \"up\") return capsule.Outcome.pass(\"nothing to fix\");\n  return capsule.Outcome.fail(`status is ${status}; a fix is proposed`).withFinding(\"status\", capsule.Severity.MEDIUM, \"expected `up`\");"
        }
    };
    let propose = if kind == Kind::Remediate {
        "\n  if (outcome.verdict === capsule.Verdict.FAIL) {\n    cx.propose({\n      target: \"status\",\n      diff: `-status = ${status}\\n+status = up\\n`,\n      rollback: `-status = up\\n+status = ${status}\\n`,\n      rationale: \"the service must be up\",\n    });\n  }"
    } else {
        ""
    };
    let proposal_test = if kind == Kind::Remediate {
        "\n  assert.equal(r.evidence.at(-1).label, \"proposal\");"
    } else {
        ""
    };
    let capsule_js = format!(
        r#"// A {k} capsule. Input: {{"status": "up"}}.

import * as capsule from "@edge-runner/capsule";

/** The check itself, kept apart from the runner so unit tests call it directly. */
export function judge(status) {{
  {judge}
}}

export default capsule.{k}(async (cx) => {{
  const input = cx.inputJson();
  const status = input?.status;
  if (typeof status !== "string") throw new capsule.CapsuleError('the input must be {{"status": "..."}}');
  cx.evidence("input", "application/json", cx.input);
  const outcome = judge(status);{propose}
  return outcome;
}});
"#
    );
    let test = format!(
        r#"// Unit tests, run natively with `node --test` against a fake runner (@edge-runner/capsule/testing).

import assert from "node:assert/strict";
import {{ test }} from "node:test";

import {{ run }} from "@edge-runner/capsule/testing";

import capsule, {{ judge }} from "../capsule.js";

test("judges the input", () => {{
  assert.equal(judge("up").verdict, "pass");
  assert.equal(judge("down").verdict, "fail");
}});

test("runs as the runner would", async () => {{
  const r = await run(capsule, {{ input: {{ status: "down" }} }});
  assert.equal(r.outcome.verdict, "fail", r.outcome.summary);
  assert.equal(r.evidence[0].label, "input");{proposal_test}
}});

test("bad input is an error", async () => {{
  const r = await run(capsule, {{ input: "not json" }});
  assert.equal(r.outcome.verdict, "error");
}});
"#
    );
    let package = format!(
        r#"{{
  "name": "{name}",
  "private": true,
  "type": "module",
  "scripts": {{
    "test": "node --test test/",
    "build": "edge-capsule-build-js capsule.js --manifest capsule.toml -o {name}.wasm"
  }},
  "dependencies": {{
    "@edge-runner/capsule": "file:./capsule-sdk-js"
  }},
  "devDependencies": {{
    "@bytecodealliance/componentize-js": "{COMPONENTIZE_JS_VERSION}",
    "@bytecodealliance/preview2-shim": "{PREVIEW2_SHIM_VERSION}",
    "rolldown": "{ROLLDOWN_VERSION}"
  }}
}}
"#
    );
    let build = format!(
        r#"#!/bin/sh
# Builds {name}.wasm. Fetches the build tools from npm, pinned in package.json
# (@bytecodealliance/componentize-js {COMPONENTIZE_JS_VERSION}, rolldown {ROLLDOWN_VERSION}) and, with
# everything they depend on, in package-lock.json (`npm ci`), runs the
# unit tests, checks the module and builds the component. Needs Node.js 20 or later.
set -eu
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --loglevel=error   # exactly package-lock.json's tree
npm test
npm run --silent build
"#
    );
    let layout = "`capsule.js` is the capsule (one default export), `test/` its unit tests,\n\
                  `capsule-sdk-js/` the JavaScript SDK of the edge-runner that created this\n\
                  project (it speaks that runner's WIT contract, `edge-runner:capsule@0.1.0`;\n\
                  TypeScript types in `index.d.ts`).";
    vec![
        ("capsule.js".into(), capsule_js),
        ("test/capsule.test.js".into(), test),
        ("package.json".into(), package),
        ("package-lock.json".into(), js_lockfile(name)),
        ("build.sh".into(), build),
        (
            "README.md".into(),
            readme(name, kind, "JavaScript", layout, "`node --test`"),
        ),
        (
            ".gitignore".into(),
            "/node_modules/\n*.wasm\n# signing keys never go into version control\n*.key\n*.pem\n# `edge-runner capsule dev-setup`: development keys, trust store and evidence\n/edge-runner-dev/\n"
                .into(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

    use super::*;

    /// The lockfile a JS project gets is in step with its `package.json` (else
    /// `npm ci` refuses it) and locks the build tools at the pins its
    /// `build.sh` names: regenerate `capsules/json-assert-js/package-lock.json`
    /// (`npm install` there) when a pin moves.
    #[test]
    fn a_js_project_lockfile_matches_its_package_json_and_pins() {
        let files: std::collections::BTreeMap<String, String> =
            js("disk-check", Kind::Test).into_iter().collect();
        let package: serde_json::Value = serde_json::from_str(&files["package.json"]).unwrap();
        let lock: serde_json::Value = serde_json::from_str(&files["package-lock.json"]).unwrap();
        assert_eq!(lock["name"], "disk-check");
        let root = &lock["packages"][""];
        assert_eq!(root["name"], "disk-check");
        for deps in ["dependencies", "devDependencies"] {
            assert_eq!(root[deps], package[deps], "{deps}");
        }
        let sdk = &lock["packages"]["node_modules/@edge-runner/capsule"];
        assert_eq!(sdk["resolved"], "capsule-sdk-js");
        assert_eq!(
            lock["packages"]["capsule-sdk-js"]["name"],
            "@edge-runner/capsule"
        );
        for (package, version) in [
            ("@bytecodealliance/componentize-js", COMPONENTIZE_JS_VERSION),
            ("@bytecodealliance/preview2-shim", PREVIEW2_SHIM_VERSION),
            ("rolldown", ROLLDOWN_VERSION),
        ] {
            let locked = &lock["packages"][format!("node_modules/{package}")];
            assert_eq!(locked["version"], version, "{package}");
            assert!(locked["integrity"].is_string(), "{package}");
        }
        assert!(files["build.sh"].contains("npm ci "));
    }
}
