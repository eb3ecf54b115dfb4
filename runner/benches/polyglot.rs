//! Polyglot benchmark: the same check (one JSON assertion on a one-field
//! document) as a Rust, a Python and a JavaScript capsule, side by side: the
//! component's size, the CPU time its compile takes in the compile child (what
//! the compile budget bounds), and the run cold (compile child, new sandbox),
//! from the authenticated disk cache (new sandbox, MAC + load) and warm
//! (prepared instance reused).
//!
//! The Rust capsule is `capsules/json-assert`; the Python and JavaScript ones
//! are built by their SDKs' build commands, which need componentize-py and
//! ComponentizeJS (`.ci/run` shows the installs), and are passed by path:
//!
//! ```sh
//! edge-capsule-build runner/benches/polyglot/json_assert.py --manifest runner/benches/polyglot/json-assert-py.toml -o /tmp/ja-py.wasm
//! (cd capsules/json-assert-js && npm ci && npx edge-capsule-build-js capsule.js --manifest capsule.toml -o /tmp/ja-js.wasm)
//! EDGE_RUNNER_BENCH_PYTHON=/tmp/ja-py.wasm EDGE_RUNNER_BENCH_JS=/tmp/ja-js.wasm \
//!     cargo bench -p edge-runner --bench polyglot
//! ```
//!
//! A language whose variable is unset is reported as skipped. Compiles run with
//! a 600 s CPU budget here, so the figure printed is the whole cost; the margin
//! printed is the runner's default budget for that component over it.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use edge_runner::capsule::{self, ManifestSource, RawCapsule};
use edge_runner::keys::SecretKey;
use edge_runner::sandbox::{
    CACHE_KEY_PURPOSE, COMPILE_CHILD_ARG, CodeCache, CodeSource, Compiler, Grant, Limits, Sandbox,
    compile_child_main,
};
use edge_runner::site::SitePolicy;
use edge_runner::timestamp::Timestamp;
use edge_runner::trust::{self, Chain, HighWater, RootPolicy, SignedRoot, VerifiedCapsule};

const INPUT: &[u8] =
    br#"{"document": {"status": "up"}, "assertions": [{"pointer": "/status", "equals": "up"}]}"#;

/// Seconds of CPU this process's waited-for children used (user + system), from `/proc/self/stat`.
fn children_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // Fields 16 and 17 of proc(5) (cutime, cstime), in clock ticks of 1/100 s on Linux.
    let ticks: u64 = fields[13].parse::<u64>().unwrap() + fields[14].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Figures {
    language: &'static str,
    bytes: usize,
    compile_cpu: Duration,
    budget: Duration,
    cold: Duration,
    disk: Duration,
    warm: Duration,
}

fn verified(component: &[u8], manifest: &str) -> VerifiedCapsule {
    let publisher = SecretKey::generate().unwrap();
    let root_key = SecretKey::generate().unwrap();
    let policy = RootPolicy::parse(
        &format!(
            "format = 1\nname = \"bench\"\nversion = 1\nexpires = \"{}\"\nroot-threshold = 1\n\
             [[root-key]]\nname = \"root\"\npublic-key = \"\"\"\n{}\"\"\"\n\
             [thresholds.test]\nkeys = 1\norganisations = 1\n\
             [thresholds.reproduce]\nkeys = 1\norganisations = 1\n\
             [thresholds.remediate]\nkeys = 1\norganisations = 1\n\
             [[publisher]]\nname = \"p\"\norganisation = \"o\"\nkinds = [\"test\"]\nnames = [\"*\"]\naudiences = [\"*\"]\npublic-key = \"\"\"\n{}\"\"\"\n\
             [publisher.ceiling]\nmemory-bytes = 268435456\nfuel = 20000000000\n",
            Timestamp::now().plus_days(1),
            root_key.public().to_pem().unwrap(),
            publisher.public().to_pem().unwrap()
        ),
        "bench",
    )
    .unwrap();
    let root = Chain::from_files(vec![(
        "1.root.cose".into(),
        SignedRoot::sign_new(&policy, &root_key).unwrap(),
    )])
    .unwrap()
    .trust(Timestamp::now())
    .unwrap();
    let source = ManifestSource::parse(manifest, std::path::Path::new("capsule.toml")).unwrap();
    let signed = capsule::sign(component, &source, &publisher, Timestamp::now()).unwrap();
    let high_water = HighWater::default();
    let ctx = trust::Context {
        root: &root,
        site: "bench",
        now: Timestamp::now(),
        high_water: &high_water,
    };
    trust::verify(
        RawCapsule {
            component: signed,
            detached_signature: None,
        }
        .check()
        .unwrap(),
        &ctx,
    )
    .unwrap()
}

fn bench(language: &'static str, component: &[u8], manifest: &str) -> Figures {
    let capsule = verified(component, manifest);
    let site = SitePolicy::deny_all("bench").unwrap();
    let default_budget = Grant::compute(&capsule, &Limits::default(), &site, [0; 32])
        .compile_budget()
        .time;
    let limits = Limits {
        compile_time: Duration::from_secs(600),
        ..Limits::default()
    };
    let grant = Grant::compute(&capsule, &limits, &site, [0; 32]);
    let compiler = Compiler::this_executable().unwrap();
    let check = |report: &edge_runner::sandbox::RunReport| {
        let outcome = report
            .outcome
            .as_ref()
            .unwrap_or_else(|| panic!("{language}: the run did not complete: {:?}", report.error));
        assert_eq!(
            outcome.verdict,
            edge_runner::sandbox::Verdict::Pass,
            "{language}: {}",
            outcome.summary
        );
    };

    // Cold: a new sandbox compiles in the child, then runs; the compile's CPU is the child's.
    let rounds = std::env::var("EDGE_RUNNER_BENCH_COLD_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3usize);
    let mut cold = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..rounds {
        let mut sandbox = Sandbox::new().unwrap();
        sandbox.set_compiler(compiler.clone());
        let before = children_cpu();
        let start = Instant::now();
        let report = sandbox.run(&capsule, &grant, INPUT).unwrap();
        cold.push(start.elapsed());
        cpu.push(children_cpu() - before);
        assert_eq!(report.code, CodeSource::Compiled);
        check(&report);
    }

    let cache_dir = tempfile::tempdir().unwrap();
    let cache = CodeCache::new(
        cache_dir.path(),
        SecretKey::generate()
            .unwrap()
            .derive_secret(CACHE_KEY_PURPOSE),
    );
    {
        let mut sandbox = Sandbox::new().unwrap();
        sandbox.set_compiler(compiler.clone());
        sandbox.set_code_cache(cache.clone());
        check(&sandbox.run(&capsule, &grant, INPUT).unwrap());
    }
    let disk = median(
        (0..5)
            .map(|_| {
                let mut sandbox = Sandbox::new().unwrap();
                sandbox.set_code_cache(cache.clone());
                let start = Instant::now();
                let report = sandbox.run(&capsule, &grant, INPUT).unwrap();
                let took = start.elapsed();
                assert_eq!(report.code, CodeSource::Disk);
                check(&report);
                took
            })
            .collect(),
    );

    let mut sandbox = Sandbox::new().unwrap();
    sandbox.set_code_cache(cache);
    check(&sandbox.run(&capsule, &grant, INPUT).unwrap());
    let warm = median(
        (0..50)
            .map(|_| {
                let start = Instant::now();
                let report = sandbox.run(&capsule, &grant, INPUT).unwrap();
                let took = start.elapsed();
                assert_eq!(report.code, CodeSource::Memory);
                took
            })
            .collect(),
    );
    Figures {
        language,
        bytes: component.len(),
        compile_cpu: median(cpu),
        budget: default_budget,
        cold: median(cold),
        disk,
        warm,
    }
}

fn main() -> std::process::ExitCode {
    // The compile child is this very executable, as `edge-runner` is for `run`.
    let mut args = std::env::args();
    if args.nth(1).as_deref() == Some(COMPILE_CHILD_ARG) {
        return compile_child_main(args);
    }
    let json_assert = capsule_artifacts::JSON_ASSERT;
    let mut rows = vec![bench("Rust", json_assert.component, json_assert.manifest)];
    let manifest = |name: &str| {
        json_assert
            .manifest
            .replace("name = \"json-assert\"", &format!("name = \"{name}\""))
            .replace("memory-bytes = 67108864", "memory-bytes = 134217728")
            .replace("fuel = 2000000000", "fuel = 20000000000")
    };
    for (language, var, name) in [
        ("Python", "EDGE_RUNNER_BENCH_PYTHON", "json-assert-py"),
        ("JavaScript", "EDGE_RUNNER_BENCH_JS", "json-assert-js"),
    ] {
        match std::env::var_os(var) {
            Some(path) => {
                let component = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("{var}={}: {e}", path.to_string_lossy()));
                rows.push(bench(language, &component, &manifest(name)));
            }
            None => println!(
                "{language}: skipped (set {var} to its component; see the top of benches/polyglot.rs)"
            ),
        }
    }
    println!(
        "\n{:<11} {:>9} {:>13} {:>14} {:>8} {:>11} {:>12} {:>10}",
        "capsule",
        "size MB",
        "compile CPU s",
        "budget CPU s",
        "margin",
        "cold ms",
        "disk ms",
        "warm ms"
    );
    for r in &rows {
        println!(
            "{:<11} {:>9.1} {:>13.2} {:>14.0} {:>7.1}x {:>11.1} {:>12.2} {:>10.3}",
            r.language,
            r.bytes as f64 / 1e6,
            r.compile_cpu.as_secs_f64(),
            r.budget.as_secs_f64(),
            r.budget.as_secs_f64() / r.compile_cpu.as_secs_f64().max(0.01),
            ms(r.cold),
            ms(r.disk),
            ms(r.warm)
        );
    }
    std::process::ExitCode::SUCCESS
}
