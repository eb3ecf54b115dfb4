// Run a capsule's entry point natively, in a unit test (`node --test`), with a
// fake runner: it grants exactly the `config` it is given, records evidence in
// a list, and answers `cx.fetch` with the `fetch` function it is given (none:
// every request is refused, as the runner refuses an ungranted destination).
//
//   import { test } from "node:test";
//   import assert from "node:assert/strict";
//   import { run } from "@edge-runner/capsule/testing";
//   import capsule from "./capsule.js";
//
//   test("passes when up", async () => {
//     const r = await run(capsule, { input: { status: "up" } });
//     assert.equal(r.outcome.verdict, "pass");
//   });

import { CapsuleError, Context, Outcome, invoke, isDefinition } from "./index.js";

const encoder = new TextEncoder();

/** Runs `definition` (a module's default export) on `input` (bytes, text, or an object encoded as JSON). */
export async function run(definition, { input = new Uint8Array(), config = {}, fetch, maxEvidenceItems = 64 } = {}) {
  if (!isDefinition(definition)) {
    throw new TypeError("run() takes a capsule module's default export: capsule.test/reproduce/remediate(...)");
  }
  let bytes;
  if (input instanceof Uint8Array) bytes = input;
  else if (typeof input === "string") bytes = encoder.encode(input);
  else bytes = encoder.encode(JSON.stringify(input));
  const evidence = [];
  const requests = [];
  const host = {
    config: (key) => (Object.hasOwn(config, key) ? config[key] : undefined),
    emitEvidence: (label, mediaType, data) => {
      if (evidence.length >= maxEvidenceItems) {
        throw new CapsuleError(`the run's evidence quota of ${maxEvidenceItems} items is spent`);
      }
      evidence.push({ label, mediaType, data: new Uint8Array(data), text: new TextDecoder().decode(data) });
      return evidence.length - 1;
    },
    fetch: async (url, init) => {
      requests.push({ url: String(url), init });
      if (!fetch) throw new TypeError("not granted in this test (pass `fetch` to run())");
      return fetch(url, init);
    },
  };
  const outcome = await invoke(definition, new Context(definition.kind, bytes, host));
  return { outcome, evidence, requests };
}

export { Outcome };
