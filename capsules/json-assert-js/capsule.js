// Test capsule: checks assertions over a JSON document (JavaScript).
//
// Input: {"document": <any JSON>, "assertions": [{"pointer": "/status", "equals": "up"}, ...]}
// or {"url": "https://status.example.com/health", "assertions": [...]}, which
// fetches the document (the destination must be granted as egress).
// Each assertion names a JSON Pointer (RFC 6901) and either the value it must
// equal or "exists": true|false. The verdict is `pass` when every assertion
// holds, `fail` otherwise with one finding per failed assertion.

import * as capsule from "@edge-runner/capsule";

const FIELDS = new Set(["document", "url", "assertions"]);

/** Resolves an RFC 6901 JSON Pointer; `undefined` when it names nothing. */
export function pointer(document, path) {
  if (path === "") return document;
  if (!path.startsWith("/")) throw new capsule.CapsuleError(`pointer \`${path}\` must be empty or start with \`/\``);
  let here = document;
  for (const raw of path.slice(1).split("/")) {
    const token = raw.replaceAll("~1", "/").replaceAll("~0", "~");
    if (Array.isArray(here) && /^(0|[1-9][0-9]*)$/.test(token) && Number(token) < here.length) here = here[Number(token)];
    else if (here !== null && typeof here === "object" && !Array.isArray(here) && Object.hasOwn(here, token)) here = here[token];
    else return undefined;
  }
  return here;
}

/** JSON equality: same types, same members, key order ignored. */
export function same(a, b) {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  return ka.length === kb.length && ka.every((k) => Object.hasOwn(b, k) && same(a[k], b[k]));
}

export default capsule.test(async (cx) => {
  const input = cx.inputJson();
  if (input === null || typeof input !== "object" || Array.isArray(input)) throw new capsule.CapsuleError("input must be a JSON object");
  for (const key of Object.keys(input)) {
    if (!FIELDS.has(key)) throw new capsule.CapsuleError(`unknown input field \`${key}\`; expected document, url or assertions`);
  }
  if (!Array.isArray(input.assertions)) throw new capsule.CapsuleError("`assertions` must be a list");
  let document = input.document;
  if (input.url !== undefined) {
    const response = await cx.fetch(input.url, { headers: { accept: "application/json" } });
    const body = await response.text();
    try {
      document = JSON.parse(body);
    } catch (e) {
      return capsule.Outcome.error(`${input.url} answered ${response.status} with a body that is not JSON: ${e.message}`);
    }
  } else if (!("document" in input)) {
    throw new capsule.CapsuleError("the input needs `document` or `url`");
  }
  cx.evidence("document", "application/json", JSON.stringify(document));

  const outcome = capsule.Outcome.pass("");
  input.assertions.forEach((assertion, index) => {
    const { pointer: path, equals, exists } = assertion;
    if (typeof path !== "string") throw new capsule.CapsuleError(`assertion ${index} needs a \`pointer\` string`);
    const found = pointer(document, path);
    let problem;
    if (equals !== undefined) {
      if (found === undefined) problem = `\`${path}\` is missing`;
      else if (!same(found, equals)) problem = `\`${path}\` is ${JSON.stringify(found)}, expected ${JSON.stringify(equals)}`;
    } else if (exists === true) {
      if (found === undefined) problem = `\`${path}\` is missing`;
    } else if (exists === false) {
      if (found !== undefined) problem = `\`${path}\` is present (${JSON.stringify(found)}) but must not be`;
    } else {
      throw new capsule.CapsuleError(`assertion ${index} on \`${path}\` needs \`equals\` or \`exists\``);
    }
    if (problem) outcome.withFinding(`assertion.${index}`, capsule.Severity.HIGH, problem);
  });
  const total = input.assertions.length;
  if (outcome.findings.length === 0) {
    outcome.summary = `all ${total} assertions hold`;
    return outcome;
  }
  const failed = capsule.Outcome.fail(`${outcome.findings.length} of ${total} assertions failed`);
  failed.findings.push(...outcome.findings);
  return failed;
});
