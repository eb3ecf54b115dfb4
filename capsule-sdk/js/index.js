// Write Edge Runner capsules in JavaScript: one function, one call.
//
//   import * as capsule from "@edge-runner/capsule";
//
//   export default capsule.test(async (cx) => {
//     const text = cx.inputText();
//     cx.evidence("input", "text/plain", text);
//     return text.includes("please")
//       ? capsule.Outcome.pass("greeting is polite")
//       : capsule.Outcome.fail("greeting lacks `please`");
//   });
//
// This module owns the values an author uses (kinds, outcomes, findings, the
// context, proposals) and the checks on the entry point. It never touches the
// component bindings (`guest.js` does, inside the component only), so it runs
// natively under `node --test`. It grants itself nothing: every capability
// comes from the runner, as the signed manifest (capsule.toml) asks and the
// site allows. The contract is capsule-sdk/wit/capsule.wit (copied in wit/).

/** The WIT package this SDK implements. */
export const WIT_PACKAGE = "edge-runner:capsule@0.1.0";

/** Media type of a proposal in the evidence record (as the Rust SDK's). */
export const PROPOSAL_MEDIA_TYPE = "application/vnd.edge-runner.proposal+json";

/** What a capsule is for; it must match `kind` in the signed manifest. */
export const Kind = Object.freeze({ TEST: "test", REPRODUCE: "reproduce", REMEDIATE: "remediate" });

/** The capsule's overall judgement. */
export const Verdict = Object.freeze({ PASS: "pass", FAIL: "fail", ERROR: "error" });

/** How much a finding matters, least first. */
export const Severity = Object.freeze({
  INFO: "info",
  LOW: "low",
  MEDIUM: "medium",
  HIGH: "high",
  CRITICAL: "critical",
});

// Brands recognised across copies of this module (a bundle may hold two).
const OUTCOME = Symbol.for("edge-runner.capsule.outcome");

const SEVERITIES = new Set(Object.values(Severity));
const VERDICTS = new Set(Object.values(Verdict));

/** Why a capsule could not do its work; an entry point that throws it gets an `error` verdict. */
export class CapsuleError extends Error {
  constructor(message) {
    super(message);
    this.name = "CapsuleError";
  }
}

/** The capsule module is written wrongly; thrown while it is loaded, naming the author's file and line. */
export class CapsuleDefinitionError extends Error {
  constructor(message) {
    super(message);
    this.name = "CapsuleDefinitionError";
  }
}

/** One observation a capsule reports. */
export class Finding {
  constructor(code, severity, message) {
    if (!SEVERITIES.has(severity)) {
      throw new TypeError(`Finding severity must be one of ${[...SEVERITIES].join(", ")} (capsule.Severity), not ${JSON.stringify(severity)}`);
    }
    this.code = String(code);
    this.severity = severity;
    this.message = String(message);
  }
}

/** What a run produced: a verdict, a one-line summary and findings. */
export class Outcome {
  constructor(verdict, summary, findings = []) {
    if (!VERDICTS.has(verdict)) {
      throw new TypeError(`Outcome verdict must be one of pass, fail, error (capsule.Verdict), not ${JSON.stringify(verdict)}`);
    }
    this[OUTCOME] = true;
    this.verdict = verdict;
    this.summary = String(summary);
    this.findings = [...findings];
  }

  /** Every check held. */
  static pass(summary) {
    return new Outcome(Verdict.PASS, summary);
  }

  /** At least one check did not hold. */
  static fail(summary) {
    return new Outcome(Verdict.FAIL, summary);
  }

  /** The capsule could not decide. */
  static error(summary) {
    return new Outcome(Verdict.ERROR, summary);
  }

  /** Adds a finding and returns this outcome. */
  withFinding(code, severity, message) {
    this.findings.push(new Finding(code, severity, message));
    return this;
  }
}

/** The `[capabilities] egress` entry that grants `url`'s destination, e.g. `https://host:443`. */
export function egressEntry(url) {
  const u = new URL(url);
  const port = u.port || (u.protocol === "https:" ? "443" : "80");
  return `${u.protocol}//${u.hostname}:${port}`;
}

/** The error for a request the runner refused: it names the manifest entry that would grant it. */
export function denied(method, url, cause) {
  return new CapsuleError(
    `${method} ${url}: request denied or failed${cause ? ` (${cause})` : ""}: if the destination is not granted, ` +
      `list it under [capabilities] egress in capsule.toml, e.g. egress = ["${egressEntry(url)}"], and the site must allow it`,
  );
}

const encoder = new TextEncoder();

/** What the runner hands a capsule: its input, granted configuration and the run's evidence record. */
export class Context {
  #kind;
  #input;
  #host;

  /** @internal Built by the runner glue (guest.js) or by testing.run. */
  constructor(kind, input, host) {
    this.#kind = kind;
    this.#input = input instanceof Uint8Array ? input : new Uint8Array(input);
    this.#host = host;
  }

  /** The kind this capsule was built as. */
  get kind() {
    return this.#kind;
  }

  /** The raw input bytes the operator supplied (empty when none). */
  get input() {
    return this.#input;
  }

  /** The input as UTF-8 text. */
  inputText() {
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(this.#input);
    } catch (e) {
      throw new CapsuleError(`input is not UTF-8 text: ${e.message}`);
    }
  }

  /** The input parsed as JSON. */
  inputJson() {
    const text = this.inputText();
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new CapsuleError(`input is not the expected JSON: ${e.message}`);
    }
  }

  /** The value of a configuration key the runner granted, or `undefined`. */
  config(key) {
    return this.#host.config(String(key)) ?? undefined;
  }

  /** Appends an item (bytes or text) to this run's evidence record and returns its index. */
  evidence(label, mediaType, data) {
    const bytes = typeof data === "string" ? encoder.encode(data) : new Uint8Array(data);
    try {
      return this.#host.emitEvidence(String(label), String(mediaType), bytes);
    } catch (e) {
      throw new CapsuleError(`evidence \`${label}\` was not recorded: ${e.payload ?? e.message}`);
    }
  }

  /**
   * Sends an HTTP request through the runner (`wasi:http`), like `fetch`, and
   * turns a refusal into a CapsuleError naming the egress entry that would grant it.
   */
  async fetch(url, init = {}) {
    const method = (init.method ?? "GET").toUpperCase();
    try {
      return await this.#host.fetch(url, init);
    } catch (e) {
      if (e instanceof CapsuleError) throw e;
      throw denied(method, url, e?.message);
    }
  }

  /**
   * Records a proposal in this run's evidence for approval; returns its evidence index.
   * Either `{target, diff, rollback, rationale}` or `{http, httpRollback, rationale}`
   * where a request is `{method, url, headers: [[name, value]], body}`.
   * Only a `remediate` capsule may propose.
   */
  propose(proposal) {
    if (this.#kind !== Kind.REMEDIATE) {
      throw new CapsuleError("only a `remediate` capsule may propose changes; export capsule.remediate(...)");
    }
    let body;
    if (proposal && "http" in proposal) {
      body = {
        http: request(proposal.http),
        http_rollback: proposal.httpRollback == null ? null : request(proposal.httpRollback),
        rationale: String(proposal.rationale ?? ""),
      };
    } else if (proposal && "target" in proposal) {
      for (const field of ["target", "diff", "rollback", "rationale"]) {
        if (typeof proposal[field] !== "string") {
          throw new TypeError(`a file proposal needs \`${field}\` as a string`);
        }
      }
      const { target, diff, rollback, rationale } = proposal;
      body = { target, diff, rollback, rationale };
    } else {
      throw new TypeError("propose() takes {target, diff, rollback, rationale} or {http, httpRollback, rationale}");
    }
    return this.evidence("proposal", PROPOSAL_MEDIA_TYPE, JSON.stringify(body));
  }
}

function request(r) {
  if (!r || typeof r.method !== "string" || typeof r.url !== "string") {
    throw new TypeError("a proposed request needs `method` and `url` strings");
  }
  return {
    method: r.method.toUpperCase(),
    url: r.url,
    headers: (r.headers ?? []).map(([n, v]) => [String(n), String(v)]),
    body: String(r.body ?? ""),
  };
}

// Definitions are counted across every copy of this module a process loads.
const REGISTRY = Symbol.for("edge-runner.capsule.definitions");
const DEFINITION = Symbol.for("edge-runner.capsule.definition");

function registry() {
  globalThis[REGISTRY] ??= [];
  return globalThis[REGISTRY];
}

/** Where the author called `capsule.test(...)`: `file:line` from the stack. */
function callerLocation() {
  const lines = (new Error().stack ?? "").split("\n").slice(1);
  // Frames: callerLocation, define, test|reproduce|remediate, then the author's.
  const frame = lines[3] ?? "";
  const m = frame.match(/\(?((?:file:\/\/)?[^()\s]+):(\d+):\d+\)?\s*$/);
  if (!m) return "<unknown>";
  const file = m[1].startsWith("file://") ? decodeURIComponent(new URL(m[1]).pathname) : m[1];
  return `${file}:${m[2]}`;
}

function define(kind, fn) {
  const where = callerLocation();
  if (typeof fn !== "function") {
    throw new CapsuleDefinitionError(
      `${where}: capsule.${kind}() takes the entry point function, e.g. export default capsule.${kind}(async (cx) => { ... }); ` +
        "capabilities belong in capsule.toml",
    );
  }
  if (fn.constructor?.name === "GeneratorFunction" || fn.constructor?.name === "AsyncGeneratorFunction") {
    throw new CapsuleDefinitionError(`${where}: the capsule entry point cannot be a generator; return an Outcome`);
  }
  if (fn.length !== 1) {
    throw new CapsuleDefinitionError(
      `${where}: the capsule entry point takes ${fn.length} arguments; it must take exactly one, the context: (cx) => ...`,
    );
  }
  const seen = registry();
  if (seen.length > 0) {
    const first = seen[0];
    throw new CapsuleDefinitionError(
      `${where}: a second capsule entry point (capsule.${kind}); a capsule has exactly one, and ` +
        `capsule.${first.kind} at ${first.where} is already one. Remove one of them.`,
    );
  }
  const definition = Object.freeze({ [DEFINITION]: true, kind, run: fn, where });
  seen.push(definition);
  return definition;
}

/** Marks the entry point of a `test` capsule (checks a system): `export default capsule.test(async (cx) => ...)`. */
export function test(fn) {
  return define(Kind.TEST, fn);
}

/** Marks the entry point of a `reproduce` capsule (replays a failure deterministically). */
export function reproduce(fn) {
  return define(Kind.REPRODUCE, fn);
}

/** Marks the entry point of a `remediate` capsule (proposes a change, never applies it). */
export function remediate(fn) {
  return define(Kind.REMEDIATE, fn);
}

/** Whether `value` is what capsule.test/reproduce/remediate returned. */
export function isDefinition(value) {
  return value != null && value[DEFINITION] === true;
}

/** @internal The definitions registered so far in this process (for the build's checks). */
export function registered() {
  return [...registry()];
}

/** @internal Forgets registered definitions (testing.run and the build load modules afresh). */
export function resetRegistry() {
  registry().length = 0;
}

/** Runs a definition's entry point; what it throws or wrongly returns becomes an `error` outcome. */
export async function invoke(definition, cx) {
  let result;
  try {
    result = await definition.run(cx);
  } catch (e) {
    if (e instanceof CapsuleError) return Outcome.error(e.message);
    const at = (e?.stack ?? "").split("\n")[1]?.trim() ?? "";
    return Outcome.error(`${e?.name ?? "Error"}: ${e?.message ?? String(e)}${at ? ` (${at})` : ""}`);
  }
  if (result?.[OUTCOME] !== true) {
    return Outcome.error(
      `the entry point at ${definition.where} returned ${result === null ? "null" : typeof result}, not a capsule.Outcome`,
    );
  }
  return result;
}
