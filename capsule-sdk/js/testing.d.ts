// Types for @edge-runner/capsule/testing: run an entry point natively with a fake runner.

import type { CapsuleDefinition, Outcome } from "./index.js";

/** One item the capsule appended to the (fake) evidence record. */
export interface EvidenceItem {
  label: string;
  mediaType: string;
  data: Uint8Array;
  /** `data` decoded as UTF-8. */
  text: string;
}

export interface RunOptions {
  /** Bytes, text, or a value encoded as JSON. */
  input?: Uint8Array | string | unknown;
  /** The configuration the fake runner grants. */
  config?: Record<string, string>;
  /** Answers `cx.fetch`; without it every request is refused, as for an ungranted destination. */
  fetch?: (url: string, init?: RequestInit) => Promise<Response>;
  /** The evidence quota in items (default 64). */
  maxEvidenceItems?: number;
}

export interface Run {
  outcome: Outcome;
  evidence: EvidenceItem[];
  requests: { url: string; init?: RequestInit }[];
}

/** Runs `definition` (a capsule module's default export) on `input`. */
export function run(definition: CapsuleDefinition, options?: RunOptions): Promise<Run>;
