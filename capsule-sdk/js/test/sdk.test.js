// The JavaScript SDK natively: build-time refusals of misuse (named for the attack), the
// context, outcomes, proposals and the denial error. Run: node --test capsule-sdk/js/test/

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import * as capsule from "../index.js";
import { manifestKind } from "../build.js";
import { run } from "../testing.js";

const here = dirname(fileURLToPath(import.meta.url));
const misuse = (name) => join(here, "misuse", name);
const buildJs = join(here, "..", "build.js");

/** Runs `edge-capsule-build-js ARGS --check` in its own process, as an author would. */
function check(...args) {
  const r = spawnSync(process.execPath, [buildJs, ...args, "--check"], { encoding: "utf8" });
  return { code: r.status, err: r.stderr.trim(), out: r.stdout.trim() };
}

test("two entry points are refused naming both lines", () => {
  const f = misuse("two_entry_points.js");
  assert.deepEqual(check(f), {
    code: 2,
    out: "",
    err: `error: ${f}:5: a second capsule entry point (capsule.test); a capsule has exactly one, and capsule.test at ${f}:3 is already one. Remove one of them.`,
  });
});

test("an entry point without the context is refused", () => {
  const f = misuse("no_argument.js");
  assert.equal(check(f).err, `error: ${f}:3: the capsule entry point takes 0 arguments; it must take exactly one, the context: (cx) => ...`);
});

test("an entry point with two arguments is refused", () => {
  const f = misuse("two_arguments.js");
  assert.equal(check(f).err, `error: ${f}:3: the capsule entry point takes 2 arguments; it must take exactly one, the context: (cx) => ...`);
});

test("something other than a function is refused", () => {
  const f = misuse("not_a_function.js");
  assert.equal(
    check(f).err,
    `error: ${f}:3: capsule.test() takes the entry point function, e.g. export default capsule.test(async (cx) => { ... }); capabilities belong in capsule.toml`,
  );
});

test("a generator entry point is refused", () => {
  const f = misuse("generator_entry_point.js");
  assert.equal(check(f).err, `error: ${f}:3: the capsule entry point cannot be a generator; return an Outcome`);
});

test("an entry point that is not the default export is refused", () => {
  const f = misuse("not_the_default_export.js");
  assert.equal(check(f).err, `error: ${f}:3: capsule.test(...) is not the module's default export; write \`export default capsule.test(...)\``);
});

test("a module without an entry point is refused", () => {
  const f = misuse("no_entry_point.js");
  const r = check(f);
  assert.equal(r.code, 2);
  assert.equal(
    r.err,
    `error: ${f}: no capsule entry point; write \`export default capsule.test(async (cx) => { ... })\` (or capsule.reproduce / capsule.remediate) after \`import * as capsule from "@edge-runner/capsule"\``,
  );
});

test("a kind other than the manifest's is refused", () => {
  const f = misuse("kind_differs_from_manifest.js");
  const m = misuse("kind_differs_from_manifest.toml");
  assert.equal(
    check(f, "--manifest", m).err,
    `error: ${f}:3: the entry point is capsule.test(...), but ${m} says kind = "remediate"; make them agree (the runner refuses a capsule whose code and signed manifest name different kinds)`,
  );
});

test("a module that throws while loading names the line", () => {
  const f = misuse("throws_on_load.js");
  const r = check(f);
  assert.equal(r.code, 2);
  assert.match(r.err, new RegExp(`^error: ${f.replaceAll(".", "\\.")}:3: loading the module failed: SyntaxError: `));
});

test("a good module passes the check", () => {
  const f = join(here, "..", "..", "..", "capsules", "json-assert-js", "capsule.js");
  const r = check(f, "--manifest", join(dirname(f), "capsule.toml"));
  // The example imports "@edge-runner/capsule", which resolves once `npm ci` ran there.
  if (r.err.includes("Cannot find package '@edge-runner/capsule'")) return;
  assert.deepEqual(r, { code: 0, err: "", out: `ok: ${f}:38: a test capsule entry point` });
});

test("the manifest's kind is read from the top-level table only", () => {
  assert.equal(manifestKind('name = "x"\nkind = "reproduce"   # why\n[limits]\n'), "reproduce");
  assert.equal(manifestKind('name = "x"\n[limits]\nkind = "test"\n'), undefined);
});

function fresh() {
  globalThis[Symbol.for("edge-runner.capsule.definitions")] = [];
}

test("outcomes, findings and evidence through the fake runner", async () => {
  fresh();
  const def = capsule.test(async (cx) => {
    cx.evidence("input", "application/json", cx.input);
    return capsule.Outcome.fail("down").withFinding("status", capsule.Severity.HIGH, `is ${cx.inputJson().status}`);
  });
  const r = await run(def, { input: { status: "down" } });
  assert.equal(r.outcome.verdict, "fail");
  assert.deepEqual(r.outcome.findings, [new capsule.Finding("status", "high", "is down")]);
  assert.deepEqual(JSON.parse(r.evidence[0].text), { status: "down" });
});

test("what an entry point throws or wrongly returns is an error verdict", async () => {
  fresh();
  const def = capsule.test(async (cx) => {
    const text = cx.inputText();
    if (text === "throw") throw new capsule.CapsuleError("no target given");
    if (text === "crash") return null.missing;
    return "pass";
  });
  assert.deepEqual((await run(def, { input: "throw" })).outcome, capsule.Outcome.error("no target given"));
  const crashed = (await run(def, { input: "crash" })).outcome;
  assert.equal(crashed.verdict, "error");
  assert.match(crashed.summary, /^TypeError: Cannot read properties of null/);
  const wrong = (await run(def, { input: "x" })).outcome;
  assert.match(wrong.summary, /returned string, not a capsule\.Outcome$/);
});

test("bad input says what is wrong", async () => {
  fresh();
  const def = capsule.test(async (cx) => (cx.inputJson(), capsule.Outcome.pass("never")));
  assert.match((await run(def, { input: new Uint8Array([0xff]) })).outcome.summary, /^input is not UTF-8 text/);
  assert.match((await run(def, { input: "{" })).outcome.summary, /^input is not the expected JSON/);
});

test("only remediate may propose; proposals match the Rust encoding", async () => {
  fresh();
  const fix = capsule.remediate(async (cx) => {
    cx.propose({ target: "/c", diff: "-a\n+b\n", rollback: "-b\n+a\n", rationale: "why" });
    cx.propose({ http: { method: "put", url: "https://api.example.com/f", headers: [["content-type", "text/plain"]], body: "off" }, httpRollback: null, rationale: "off" });
    return capsule.Outcome.fail("fix proposed");
  });
  const r = await run(fix);
  assert.deepEqual(r.evidence.map((e) => e.mediaType), [capsule.PROPOSAL_MEDIA_TYPE, capsule.PROPOSAL_MEDIA_TYPE]);
  assert.deepEqual(JSON.parse(r.evidence[0].text), { target: "/c", diff: "-a\n+b\n", rollback: "-b\n+a\n", rationale: "why" });
  assert.deepEqual(JSON.parse(r.evidence[1].text), {
    http: { method: "PUT", url: "https://api.example.com/f", headers: [["content-type", "text/plain"]], body: "off" },
    http_rollback: null,
    rationale: "off",
  });
  fresh();
  const notFix = capsule.test(async (cx) => (cx.propose({ target: "/c", diff: "", rollback: "", rationale: "" }), capsule.Outcome.pass("never")));
  assert.equal((await run(notFix)).outcome.summary, "only a `remediate` capsule may propose changes; export capsule.remediate(...)");
});

test("a refused request names the manifest entry that grants it", async () => {
  fresh();
  const def = capsule.test(async (cx) => {
    await cx.fetch("http://10.0.0.5:8080/ready");
    return capsule.Outcome.pass("never");
  });
  assert.equal(
    (await run(def)).outcome.summary,
    'GET http://10.0.0.5:8080/ready: request denied or failed (not granted in this test (pass `fetch` to run())): if the destination is not granted, list it under [capabilities] egress in capsule.toml, e.g. egress = ["http://10.0.0.5:8080"], and the site must allow it',
  );
  assert.equal(capsule.egressEntry("https://status.example.com/health"), "https://status.example.com:443");
});

test("the evidence quota is an error saying so", async () => {
  fresh();
  const def = capsule.test(async (cx) => {
    for (let i = 0; i < 3; i++) cx.evidence(`item-${i}`, "text/plain", "x");
    return capsule.Outcome.pass("never");
  });
  assert.equal((await run(def, { maxEvidenceItems: 2 })).outcome.summary, "evidence `item-2` was not recorded: the run's evidence quota of 2 items is spent");
});

test("the WIT contract copy is the contract", () => {
  assert.equal(readFileSync(join(here, "..", "wit", "capsule.wit"), "utf8"), readFileSync(join(here, "..", "..", "wit", "capsule.wit"), "utf8"));
});

test("a module that does not parse names the line", () => {
  const f = misuse("syntax_error.js");
  assert.deepEqual(check(f), { code: 2, out: "", err: `error: ${f}:5: the module does not parse: SyntaxError: Unexpected token ')'` });
});
