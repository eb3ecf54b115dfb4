// The component's exports and its calls into the runner, over the component
// bindings. Bundled only into the component that edge-capsule-build-js makes
// (the `edge-runner:capsule/host` import exists only there). It decides
// nothing: the entry point is the author's default export, and the runner
// grants or refuses every request (`fetch` goes through `wasi:http`).

import { config, emitEvidence } from "edge-runner:capsule/host@0.1.0";
import { CapsuleError, Context, Kind, Outcome, invoke, isDefinition } from "./index.js";

const host = {
  config: (key) => config(key),
  emitEvidence: (label, mediaType, data) => {
    try {
      return emitEvidence(label, mediaType, data);
    } catch (e) {
      // A WIT `result` error arrives as a thrown value carrying its payload.
      throw new CapsuleError(String(e?.payload ?? e?.message ?? e));
    }
  },
  fetch: (url, init) => globalThis.fetch(url, init),
};

/** The `kind` and `run` exports for the author's default export. */
export function exportsFor(definition) {
  if (!isDefinition(definition)) {
    // edge-capsule-build-js refuses such a module; this guards a hand-made build.
    throw new CapsuleError("the capsule module's default export is not capsule.test/reproduce/remediate(...)");
  }
  return {
    kind: () => definition.kind,
    run: async (input) => {
      const outcome = await invoke(definition, new Context(definition.kind, input, host));
      return toWit(outcome);
    },
  };
}

function toWit(outcome) {
  return {
    verdict: outcome.verdict,
    summary: outcome.summary,
    findings: outcome.findings.map((f) => ({ code: f.code, severity: f.severity, message: f.message })),
  };
}

export { Kind, Outcome };
