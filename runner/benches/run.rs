//! Run-latency benchmark: a trivial capsule (json-assert on a one-assertion
//! document) through Edge Runner cold, from the disk cache and warm, next to a
//! plain Wasmtime embedding of the same component.
//!
//! ```sh
//! cargo bench -p edge-runner --bench run
//! ```
//!
//! "Plain" is what an embedder would write without verification, limits or
//! evidence: a pre-linked component instantiated in a fresh store per call,
//! with WASI (an empty `WasiCtx`), stub `edge-runner:capsule/host` imports,
//! the default engine configuration (no fuel, no epoch interruption, no NaN
//! canonicalization), synchronous calls (no fiber stack, no async runtime),
//! no resource limiter, no output capture and no report. It calls only `run`
//! (Edge Runner also calls `kind` to check it against the signed manifest).
//! The ratio printed last is Edge Runner warm ÷ plain.
//!
//! For instruction counts, `EDGE_RUNNER_BENCH_LOOP=warm:N` (or `plain:N`)
//! runs only that loop N times after its set-up and one untimed run, inside
//! `bench_loop`; count only that function with callgrind and divide by N for
//! the cost of one run (compiling is outside it: its instruction count varies
//! from run to run with the parallel compiler's scheduling):
//!
//! ```sh
//! EDGE_RUNNER_BENCH_LOOP=warm:200 valgrind --tool=callgrind --toggle-collect='run::bench_loop' target/release/deps/run-HASH
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use edge_runner::capsule::{self, ManifestSource, RawCapsule};
use edge_runner::keys::SecretKey;
use edge_runner::sandbox::{CACHE_KEY_PURPOSE, CodeCache, Grant, Limits, Sandbox};
use edge_runner::site::SitePolicy;
use edge_runner::timestamp::Timestamp;
use edge_runner::trust::{self, Chain, HighWater, RootPolicy, SignedRoot};
use wasmtime::component::{Component, Linker, ResourceTable, Val};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

const INPUT: &[u8] =
    br#"{"document": {"status": "up"}, "assertions": [{"pointer": "/status", "equals": "up"}]}"#;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn measure(name: &str, iterations: usize, mut f: impl FnMut()) -> Duration {
    f(); // one untimed round: page in code, warm caches
    let samples: Vec<Duration> = (0..iterations)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    let m = median(samples);
    println!(
        "{name:<44} median {:>10.3} ms  ({iterations} runs)",
        m.as_secs_f64() * 1e3
    );
    m
}

struct Plain {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Plain {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// `EDGE_RUNNER_BENCH_LOOP=warm:N` or `plain:N`: which loop alone to run, and how often.
fn loop_only() -> Option<(String, usize)> {
    let spec = std::env::var("EDGE_RUNNER_BENCH_LOOP").ok()?;
    let (which, n) = spec
        .split_once(':')
        .expect("EDGE_RUNNER_BENCH_LOOP is warm:N or plain:N");
    assert!(
        which == "warm" || which == "plain",
        "EDGE_RUNNER_BENCH_LOOP is warm:N or plain:N"
    );
    Some((which.to_string(), n.parse().expect("N is a number of runs")))
}

/// Calls `f` `n` times: all that a callgrind run with
/// `--toggle-collect='run::bench_loop'` counts.
#[inline(never)]
fn bench_loop(n: usize, f: &mut dyn FnMut()) {
    for _ in 0..n {
        f();
    }
}

/// The plain embedding (see the top of this file): one call of it is one run
/// of `run` in a fresh store from a pre-linked component.
fn plain_embedding(component_bytes: &[u8]) -> impl FnMut() {
    let engine = Engine::new(&Config::new()).unwrap();
    let component = Component::new(&engine, component_bytes).unwrap();
    let mut linker = Linker::<Plain>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    let mut host = linker.instance("edge-runner:capsule/host@0.1.0").unwrap();
    host.func_new("emit-evidence", |_, _, _, results| {
        results[0] = Val::Result(Ok(Some(Box::new(Val::U32(0)))));
        Ok(())
    })
    .unwrap();
    host.func_new("config", |_, _, _, results| {
        results[0] = Val::Option(None);
        Ok(())
    })
    .unwrap();
    let pre = linker.instantiate_pre(&component).unwrap();
    let input = Val::List(INPUT.iter().map(|b| Val::U8(*b)).collect());
    move || {
        let mut store = Store::new(
            &engine,
            Plain {
                ctx: WasiCtxBuilder::new().build(),
                table: ResourceTable::new(),
            },
        );
        let instance = pre.instantiate(&mut store).unwrap();
        let run = instance.get_func(&mut store, "run").unwrap();
        let mut results = [Val::Bool(false)];
        run.call(&mut store, std::slice::from_ref(&input), &mut results)
            .unwrap();
    }
}

fn main() {
    let only = loop_only();
    if let Some((which, n)) = &only
        && which == "plain"
    {
        let mut plain = plain_embedding(capsule_artifacts::JSON_ASSERT.component);
        plain();
        bench_loop(*n, &mut plain);
        return;
    }
    let example = capsule_artifacts::JSON_ASSERT;

    // A verified capsule, as the runner would hold it.
    let publisher = SecretKey::generate().unwrap();
    let root_key = SecretKey::generate().unwrap();
    let policy = RootPolicy::parse(
        &format!(
            "format = 1\nname = \"bench\"\nversion = 1\nexpires = \"{}\"\nroot-threshold = 1\n\
             [[root-key]]\nname = \"root\"\npublic-key = \"\"\"\n{}\"\"\"\n\
             [thresholds.test]\nkeys = 1\norganisations = 1\n\
             [thresholds.reproduce]\nkeys = 1\norganisations = 1\n\
             [thresholds.remediate]\nkeys = 1\norganisations = 1\n\
             [[publisher]]\nname = \"p\"\norganisation = \"o\"\nkinds = [\"test\"]\nnames = [\"*\"]\naudiences = [\"*\"]\npublic-key = \"\"\"\n{}\"\"\"\n",
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
    let source = ManifestSource::parse(
        example.manifest,
        std::path::Path::new(example.manifest_path),
    )
    .unwrap();
    let signed = capsule::sign(example.component, &source, &publisher, Timestamp::now()).unwrap();
    let high_water = HighWater::default();
    let ctx = trust::Context {
        root: &root,
        site: "bench",
        now: Timestamp::now(),
        high_water: &high_water,
    };
    let verified = trust::verify(
        RawCapsule {
            component: signed,
            detached_signature: None,
        }
        .check()
        .unwrap(),
        &ctx,
    )
    .unwrap();
    let site = SitePolicy::deny_all("bench").unwrap();
    let grant = Grant::compute(&verified, &Limits::default(), &site, [0; 32]);

    if let Some((which, n)) = &only
        && which == "warm"
    {
        let sandbox = Sandbox::new().unwrap();
        let mut warm = || {
            sandbox.run(&verified, &grant, INPUT).unwrap();
        };
        warm();
        bench_loop(*n, &mut warm);
        return;
    }

    println!("json-assert, {} byte component\n", example.component.len());

    // What a new sandbox costs by itself: the engine, its instance pool,
    // the linkers, the epoch ticker and the runtime, made and dropped.
    measure("edge-runner new sandbox (made, dropped)", 10, || {
        drop(Sandbox::new().unwrap());
    });

    let cold = measure("edge-runner cold (new sandbox, compile)", 5, || {
        let sandbox = Sandbox::new().unwrap();
        let report = sandbox.run(&verified, &grant, INPUT).unwrap();
        assert!(report.outcome.is_some());
    });

    let cache_dir = tempfile::tempdir().unwrap();
    let cache = CodeCache::new(cache_dir.path(), publisher.derive_secret(CACHE_KEY_PURPOSE));
    let disk = measure("edge-runner disk cache (new sandbox, MAC+load)", 10, || {
        let mut sandbox = Sandbox::new().unwrap();
        sandbox.set_code_cache(cache.clone());
        sandbox.run(&verified, &grant, INPUT).unwrap();
    });

    let sandbox = Sandbox::new().unwrap();
    let warm = measure("edge-runner warm (InstancePre reused)", 200, || {
        sandbox.run(&verified, &grant, INPUT).unwrap();
    });

    let plain = measure(
        "plain wasmtime (InstancePre, fresh store)",
        200,
        plain_embedding(example.component),
    );

    println!();
    println!(
        "cold / warm: {:.1}x   disk / warm: {:.1}x   warm / plain: {:.2}x",
        cold.as_secs_f64() / warm.as_secs_f64(),
        disk.as_secs_f64() / warm.as_secs_f64(),
        warm.as_secs_f64() / plain.as_secs_f64()
    );
}
