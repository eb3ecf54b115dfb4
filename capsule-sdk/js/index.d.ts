// Types for @edge-runner/capsule: write Edge Runner capsules in JavaScript or TypeScript.
// The contract is edge-runner:capsule@0.1.0 (capsule-sdk/wit/capsule.wit, copied in wit/).

/** The WIT package this SDK implements. */
export const WIT_PACKAGE: "edge-runner:capsule@0.1.0";
/** Media type of a proposal in the evidence record. */
export const PROPOSAL_MEDIA_TYPE: "application/vnd.edge-runner.proposal+json";

/** What a capsule is for; it must match `kind` in the signed manifest. */
export type KindName = "test" | "reproduce" | "remediate";
export const Kind: { readonly TEST: "test"; readonly REPRODUCE: "reproduce"; readonly REMEDIATE: "remediate" };

/** The capsule's overall judgement. */
export type VerdictName = "pass" | "fail" | "error";
export const Verdict: { readonly PASS: "pass"; readonly FAIL: "fail"; readonly ERROR: "error" };

/** How much a finding matters, least first. */
export type SeverityName = "info" | "low" | "medium" | "high" | "critical";
export const Severity: {
  readonly INFO: "info";
  readonly LOW: "low";
  readonly MEDIUM: "medium";
  readonly HIGH: "high";
  readonly CRITICAL: "critical";
};

/** Why a capsule could not do its work; an entry point that throws it gets an `error` verdict. */
export class CapsuleError extends Error {
  constructor(message: string);
}

/** The capsule module is written wrongly; thrown while it is loaded, naming the author's file and line. */
export class CapsuleDefinitionError extends Error {
  constructor(message: string);
}

/** One observation a capsule reports. */
export class Finding {
  constructor(code: string, severity: SeverityName, message: string);
  /** Stable, machine-readable identifier, e.g. `http.status`. */
  code: string;
  severity: SeverityName;
  /** Human-readable explanation. */
  message: string;
}

/** What a run produced: a verdict, a one-line summary and findings. */
export class Outcome {
  constructor(verdict: VerdictName, summary: string, findings?: Finding[]);
  verdict: VerdictName;
  summary: string;
  findings: Finding[];
  /** Every check held. */
  static pass(summary: string): Outcome;
  /** At least one check did not hold. */
  static fail(summary: string): Outcome;
  /** The capsule could not decide. */
  static error(summary: string): Outcome;
  /** Adds a finding and returns this outcome. */
  withFinding(code: string, severity: SeverityName, message: string): this;
}

/** An exact HTTP request a `remediate` capsule proposes (the runner sends it only after approval). */
export interface ProposedRequest {
  method: string;
  url: string;
  headers?: [string, string][];
  body?: string;
}

/** A file change a `remediate` capsule proposes, as unified diffs. */
export interface FileProposal {
  target: string;
  diff: string;
  rollback: string;
  rationale: string;
}

/** An HTTP change a `remediate` capsule proposes; `httpRollback` null: irreversible. */
export interface HttpProposal {
  http: ProposedRequest;
  httpRollback: ProposedRequest | null;
  rationale: string;
}

/** What the runner hands a capsule: its input, granted configuration and the run's evidence record. */
export class Context {
  private constructor();
  /** The kind this capsule was built as. */
  readonly kind: KindName;
  /** The raw input bytes the operator supplied (empty when none). */
  readonly input: Uint8Array;
  /** The input as UTF-8 text; throws CapsuleError when it is not. */
  inputText(): string;
  /** The input parsed as JSON; throws CapsuleError when it is not. */
  inputJson<T = unknown>(): T;
  /** The value of a configuration key the runner granted, or undefined. */
  config(key: string): string | undefined;
  /** Appends an item to this run's evidence record; returns its index. Throws CapsuleError when the quota is spent. */
  evidence(label: string, mediaType: string, data: Uint8Array | string): number;
  /** `fetch` through the runner (`wasi:http`); a refused request throws CapsuleError naming the egress entry to grant. */
  fetch(url: string, init?: RequestInit): Promise<Response>;
  /** Records a proposal for approval (remediate capsules only); returns its evidence index. */
  propose(proposal: FileProposal | HttpProposal): number;
}

/** A capsule's entry point: one function of the context. */
export type EntryPoint = (cx: Context) => Outcome | Promise<Outcome>;

/** What capsule.test/reproduce/remediate return: the module's default export. */
export interface CapsuleDefinition {
  readonly kind: KindName;
  readonly run: EntryPoint;
  /** `file:line` where the entry point was declared. */
  readonly where: string;
}

/** Marks the entry point of a `test` capsule: `export default capsule.test(async (cx) => ...)`. */
export function test(entry: EntryPoint): CapsuleDefinition;
/** Marks the entry point of a `reproduce` capsule. */
export function reproduce(entry: EntryPoint): CapsuleDefinition;
/** Marks the entry point of a `remediate` capsule. */
export function remediate(entry: EntryPoint): CapsuleDefinition;
/** Whether `value` is what capsule.test/reproduce/remediate returned. */
export function isDefinition(value: unknown): value is CapsuleDefinition;
/** The `[capabilities] egress` entry that grants `url`'s destination, e.g. `https://host:443`. */
export function egressEntry(url: string): string;
