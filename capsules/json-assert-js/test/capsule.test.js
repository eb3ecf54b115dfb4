// Native unit tests of the JavaScript JSON assertion capsule (node --test), with a fake runner.

import assert from "node:assert/strict";
import { test } from "node:test";

import { run } from "@edge-runner/capsule/testing";

import capsule, { pointer } from "../capsule.js";

const document = { status: "up", "a/b": { "m~n": [1, 2] }, nested: { x: null } };

test("every assertion holds", async () => {
  const r = await run(capsule, {
    input: { document, assertions: [{ pointer: "/status", equals: "up" }, { pointer: "/a~1b/m~0n/1", equals: 2 }, { pointer: "/nested/x", exists: true }] },
  });
  assert.equal(r.outcome.verdict, "pass", r.outcome.summary);
  assert.equal(r.outcome.summary, "all 3 assertions hold");
  assert.equal(r.evidence[0].label, "document");
  assert.deepEqual(JSON.parse(r.evidence[0].text), document);
});

test("one finding per failed assertion", async () => {
  const r = await run(capsule, {
    input: { document, assertions: [{ pointer: "/status", equals: "down" }, { pointer: "/status", exists: false }, { pointer: "/nope", exists: true }] },
  });
  assert.equal(r.outcome.verdict, "fail");
  assert.deepEqual(r.outcome.findings.map((f) => f.code), ["assertion.0", "assertion.1", "assertion.2"]);
  assert.equal(r.outcome.findings[0].message, '`/status` is "up", expected "down"');
});

test("a fetched document is checked", async () => {
  const r = await run(capsule, {
    input: { url: "http://svc.test/health", assertions: [{ pointer: "/status", equals: "up" }] },
    fetch: async () => new Response('{"status":"up"}', { status: 200 }),
  });
  assert.equal(r.outcome.verdict, "pass", r.outcome.summary);
  assert.deepEqual(r.requests.map((q) => q.url), ["http://svc.test/health"]);
});

test("an ungranted fetch is an error naming the manifest entry", async () => {
  const r = await run(capsule, { input: { url: "https://elsewhere.test/doc", assertions: [] } });
  assert.equal(r.outcome.verdict, "error");
  assert.match(r.outcome.summary, /egress = \["https:\/\/elsewhere\.test:443"\]/);
});

test("an assertion without equals or exists is an error", async () => {
  const r = await run(capsule, { input: { document, assertions: [{ pointer: "/status" }] } });
  assert.equal(r.outcome.verdict, "error");
  assert.equal(r.outcome.summary, "assertion 0 on `/status` needs `equals` or `exists`");
});

test("pointer follows RFC 6901", () => {
  assert.equal(pointer(document, ""), document);
  assert.equal(pointer(document, "/a~1b/m~0n/0"), 1);
  assert.equal(pointer(document, "/a~1b/m~0n/01"), undefined);
  assert.equal(pointer(document, "/a~1b/m~0n/2"), undefined);
});
