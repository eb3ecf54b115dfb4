#!/usr/bin/env node
// edge-capsule-build-js: check a JavaScript capsule module, then build its
// component with ComponentizeJS.
//
//   edge-capsule-build-js capsule.js --manifest capsule.toml -o capsule.wasm
//   edge-capsule-build-js capsule.js --manifest capsule.toml --check   # the checks only
//
// The module is first loaded natively, so a misuse is refused before anything
// is built, with the author's file and line: no entry point, two entry points,
// an entry point that is not the default export, a wrong signature, or a kind
// that differs from `kind` in capsule.toml (the runner would refuse that
// capsule at run time). Then rolldown bundles the module with this SDK into
// one file, and @bytecodealliance/componentize-js builds the component
// against wit/capsule.wit (a copy of capsule-sdk/wit/capsule.wit); `fetch`
// goes through `wasi:http`. Both tools are pinned (COMPONENTIZE_JS_VERSION,
// ROLLDOWN_VERSION) and come from the npm registry as the project's own
// devDependencies; nothing is vendored.
//
// The component is signed exactly as a Rust capsule is:
//   edge-runner capsule sign OUT.wasm --manifest capsule.toml --key KEY --out OUT.signed.wasm
//
// Exit codes: 0 built (or checked), 1 the build tool failed, 2 the module or
// the command line is wrong.

import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, extname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

import { CapsuleDefinitionError, isDefinition, registered, resetRegistry } from "./index.js";

/** The ComponentizeJS release this SDK is built and tested with. */
export const COMPONENTIZE_JS_VERSION = "0.23.0";
/** The rolldown release that bundles the module and the SDK into one file. */
export const ROLLDOWN_VERSION = "1.3.3";

const SDK_DIR = dirname(fileURLToPath(import.meta.url));

class BuildError extends Error {
  constructor(message, code = 2) {
    super(message);
    this.code = code;
  }
}

/** Where in the author's file an error happened, from its stack. */
function whereIn(error, file) {
  const url = pathToFileURL(file).href;
  for (const line of String(error?.stack ?? "").split("\n")) {
    const i = line.indexOf(url);
    if (i >= 0) {
      const m = line.slice(i + url.length).match(/^:(\d+)/);
      if (m) return `${file}:${m[1]}`;
    }
  }
  return file;
}

/** Loads the module natively and returns its one entry point definition, or throws BuildError. */
export async function checkModule(file) {
  if (![".js", ".mjs"].includes(extname(file)) || !existsSync(file) || !statSync(file).isFile()) {
    throw new BuildError(`${file}: not a JavaScript module file; pass the capsule's module, e.g. capsule.js`);
  }
  resetRegistry();
  let module;
  try {
    module = await import(pathToFileURL(file).href);
  } catch (e) {
    if (e instanceof CapsuleDefinitionError || e?.name === "CapsuleDefinitionError") throw new BuildError(e.message);
    if (e instanceof SyntaxError && whereIn(e, file) === file) {
      // Node gives no location for a module that does not parse; `node --check` prints it first.
      const checked = spawnSync(process.execPath, ["--check", file], { encoding: "utf8" });
      const at = (checked.stderr ?? "").split("\n")[0].match(/^(.*):(\d+)$/);
      if (at) throw new BuildError(`${at[1]}:${at[2]}: the module does not parse: SyntaxError: ${e.message}`);
    }
    throw new BuildError(`${whereIn(e, file)}: loading the module failed: ${e?.name ?? "Error"}: ${e?.message ?? e}`);
  }
  const found = registered();
  if (found.length === 0) {
    throw new BuildError(
      `${file}: no capsule entry point; write \`export default capsule.test(async (cx) => { ... })\` ` +
        "(or capsule.reproduce / capsule.remediate) after `import * as capsule from \"@edge-runner/capsule\"`",
    );
  }
  if (!isDefinition(module.default) || module.default !== found[0]) {
    throw new BuildError(
      `${found[0].where}: capsule.${found[0].kind}(...) is not the module's default export; ` +
        `write \`export default capsule.${found[0].kind}(...)\``,
    );
  }
  return module.default;
}

/** The top-level `kind = "..."` of a capsule.toml (the runner parses the whole file when signing). */
export function manifestKind(text) {
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line.startsWith("[")) break;
    const m = line.match(/^kind\s*=\s*"([^"]*)"\s*(#.*)?$/);
    if (m) return m[1];
  }
  return undefined;
}

function checkManifest(definition, manifest) {
  let text;
  try {
    text = readFileSync(manifest, "utf8");
  } catch (e) {
    throw new BuildError(`--manifest ${manifest}: ${e.code === "ENOENT" ? "no such file" : e.message}; pass the capsule's capsule.toml`);
  }
  const kind = manifestKind(text);
  if (kind !== definition.kind) {
    throw new BuildError(
      `${definition.where}: the entry point is capsule.${definition.kind}(...), but ${manifest} says ` +
        `kind = ${kind === undefined ? "nothing" : JSON.stringify(kind)}; make them agree (the runner refuses a ` +
        "capsule whose code and signed manifest name different kinds)",
    );
  }
}

/** The installed version of `name` as seen from `from`, or undefined. */
function installedVersion(name, from) {
  for (let dir = from; ; dir = dirname(dir)) {
    const manifest = join(dir, "node_modules", name, "package.json");
    if (existsSync(manifest)) return { version: JSON.parse(readFileSync(manifest, "utf8")).version, dir: dirname(manifest) };
    if (dirname(dir) === dir) return undefined;
  }
}

async function tool(name, version, from) {
  const found = installedVersion(name, from) ?? installedVersion(name, SDK_DIR);
  if (found?.version !== version) {
    const have = found ? `version ${found.version} is installed` : "it is not installed";
    throw new BuildError(`building needs ${name} ${version} (${have}); run: npm install --save-dev --save-exact ${name}@${version}`, 1);
  }
  const pkg = JSON.parse(readFileSync(join(found.dir, "package.json"), "utf8"));
  return import(pathToFileURL(join(found.dir, esmEntry(pkg))).href);
}

/** The file a package's `import` of its root resolves to (the `exports` shapes these two tools use). */
function esmEntry(pkg) {
  let e = pkg.exports;
  if (e && typeof e === "object" && "." in e) e = e["."];
  for (let depth = 0; e && typeof e === "object" && depth < 4; depth++) e = e.import ?? e.default;
  return typeof e === "string" ? e : (pkg.main ?? "index.js");
}

async function build(file, out) {
  const from = dirname(file);
  const { componentize } = await tool("@bytecodealliance/componentize-js", COMPONENTIZE_JS_VERSION, from);
  const { rolldown } = await tool("rolldown", ROLLDOWN_VERSION, from);
  const stage = mkdtempSync(join(tmpdir(), "edge-capsule-build-js-"));
  try {
    const entry = join(stage, "entry.js");
    writeFileSync(
      entry,
      `// Generated by edge-capsule-build-js: the world's exports for the author's default export.\n` +
        `import definition from ${JSON.stringify(file)};\n` +
        `import { exportsFor } from ${JSON.stringify(join(SDK_DIR, "guest.js"))};\n` +
        `const capsule = exportsFor(definition);\n` +
        `export function kind() { return capsule.kind(); }\n` +
        `export async function run(input) { return capsule.run(input); }\n`,
    );
    const bundled = join(stage, "bundle.js");
    const bundle = await rolldown({
      input: entry,
      // StarlingMonkey offers web APIs (fetch, TextEncoder), not Node's: resolve packages as a browser would.
      platform: "browser",
      external: [/^edge-runner:/, /^wasi:/],
      logLevel: "warn",
    });
    await bundle.write({ file: bundled, format: "esm", codeSplitting: false });
    await bundle.close();
    const { component } = await componentize({
      sourcePath: bundled,
      witPath: join(SDK_DIR, "wit"),
      worldName: "capsule",
      // No incoming HTTP: a capsule is called through `run`, never served.
      disableFeatures: ["fetch-event"],
    });
    writeFileSync(out, component);
  } catch (e) {
    if (e instanceof BuildError) throw e;
    throw new BuildError(`building the component failed: ${e?.message ?? e}`, 1);
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

async function main(argv) {
  let args;
  try {
    args = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        manifest: { type: "string" },
        out: { type: "string", short: "o" },
        check: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    console.error(`error: ${e.message}\nusage: edge-capsule-build-js MODULE.js [--manifest capsule.toml] [-o OUT.wasm] [--check]`);
    return 2;
  }
  if (args.values.help || args.positionals.length !== 1) {
    console.error("usage: edge-capsule-build-js MODULE.js [--manifest capsule.toml] [-o OUT.wasm] [--check]");
    return args.values.help ? 0 : 2;
  }
  const file = resolve(args.positionals[0]);
  try {
    const definition = await checkModule(file);
    if (args.values.manifest !== undefined) checkManifest(definition, resolve(args.values.manifest));
    if (args.values.check) {
      console.log(`ok: ${definition.where}: a ${definition.kind} capsule entry point`);
      return 0;
    }
    const out = resolve(args.values.out ?? join(dirname(file), `${basename(file, extname(file))}.wasm`));
    await build(file, out);
    console.log(`built ${out} (${(statSync(out).size / 1e6).toFixed(1)} MB): ${definition.kind} capsule, entry point at ${definition.where}`);
    return 0;
  } catch (e) {
    if (!(e instanceof BuildError)) throw e;
    console.error(`error: ${e.message}`);
    return e.code;
  }
}

if (process.argv[1] && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url))) {
  process.exitCode = await main(process.argv.slice(2));
}
