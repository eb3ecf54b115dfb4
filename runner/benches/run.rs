//! Run-latency benchmark: a trivial capsule (json-assert on a one-assertion
//! document) through Edge Runner cold, from the disk cache and warm, next to
//! two plain Wasmtime embeddings of the same component.
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
//! "Plain pooled" is the same embedding on Wasmtime's pooling allocator set
//! up as Edge Runner sets it up: next to warm it leaves only what Edge Runner
//! adds per run, with the allocator (and its page handling, most of a run's
//! kernel time) the same on both sides. Plain stays the headline peer
//! because it is what an embedder writes first.
//!
//! Warm, plain and plain pooled are timed in alternating blocks, 101 rounds of
//! 20 runs each (see [`interleaved`]); a ratio is the median over the rounds of
//! the round's block medians, printed with the lowest and highest round.
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
//!
//! Under valgrind the pool's address space cannot be reserved, so warm there
//! allocates per run (`Sandbox::with_slots` falls back) and `pooled:N` panics:
//! callgrind counts instructions, not the kernel's page handling that the pool
//! saves. For that, `perf stat -e page-faults,task-clock` on `warm:N`,
//! `plain:N` or `pooled:N` (counted from the whole process: subtract a run
//! with N = 0 for the set-up).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use edge_runner::capsule::{self, ManifestSource, RawCapsule};
use edge_runner::keys::SecretKey;
use edge_runner::sandbox::{CACHE_KEY_PURPOSE, CodeCache, Grant, Limits, Sandbox};
use edge_runner::site::SitePolicy;
use edge_runner::timestamp::Timestamp;
use edge_runner::trust::{self, Chain, HighWater, RootPolicy, SignedRoot};
use wasmtime::component::{Component, Linker, ResourceTable, Val};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
};
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

/// Rounds of the warm-against-plain comparison, and timed runs per side per round.
const ROUNDS: usize = 101;
const PER_BLOCK: usize = 20;

/// One embedding timed by [`interleaved`].
struct Side<'a> {
    name: &'static str,
    run: &'a mut dyn FnMut(),
    /// Every timed run, and the median of each round's block.
    all: Vec<Duration>,
    rounds: Vec<Duration>,
}

impl<'a> Side<'a> {
    fn new(name: &'static str, run: &'a mut dyn FnMut()) -> Self {
        Self {
            name,
            run,
            all: Vec::new(),
            rounds: Vec::new(),
        }
    }

    /// One untimed run, then a block of `PER_BLOCK` timed ones.
    fn block(&mut self) {
        (self.run)();
        let samples: Vec<Duration> = (0..PER_BLOCK)
            .map(|_| {
                let start = Instant::now();
                (self.run)();
                start.elapsed()
            })
            .collect();
        self.all.extend_from_slice(&samples);
        self.rounds.push(median(samples));
    }
}

/// Times the sides in alternating blocks: each of `ROUNDS` rounds runs a
/// block of each side, the first side of a round rotating so each leads
/// equally often, and each block opens with one untimed run so no side
/// inherits another's cold caches. A round's ratio is one block's median over
/// another's, taken within a few milliseconds of each other, so a change of
/// CPU speed or load over the seconds of the bench moves both alike instead
/// of landing on one side (as it did when 200 warm runs were timed before 200
/// plain ones). Prints each side's median over all rounds with the spread of
/// its round medians, and returns those medians.
fn interleaved(sides: &mut [Side<'_>]) -> Vec<Duration> {
    for round in 0..ROUNDS {
        for i in 0..sides.len() {
            sides[(round + i) % sides.len()].block();
        }
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    sides
        .iter()
        .map(|side| {
            let mut rounds = side.rounds.clone();
            rounds.sort();
            let m = median(side.all.clone());
            println!(
                "{:<44} median {:>10.3} ms  ({ROUNDS}x{PER_BLOCK} runs; round medians {:.1}-{:.1} us)",
                side.name,
                m.as_secs_f64() * 1e3,
                us(rounds[0]),
                us(rounds[ROUNDS - 1]),
            );
            m
        })
        .collect()
}

/// `a` over `b`, round by round: the median ratio and the lowest and highest.
fn round_ratios(a: &Side<'_>, b: &Side<'_>) -> (f64, f64, f64) {
    let mut ratios: Vec<f64> = a
        .rounds
        .iter()
        .zip(&b.rounds)
        .map(|(a, b)| a.as_secs_f64() / b.as_secs_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    (
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1],
    )
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

/// `EDGE_RUNNER_BENCH_LOOP=warm:N`, `plain:N` or `pooled:N`: which loop alone to run, and how often.
fn loop_only() -> Option<(String, usize)> {
    let spec = std::env::var("EDGE_RUNNER_BENCH_LOOP").ok()?;
    let (which, n) = spec
        .split_once(':')
        .expect("EDGE_RUNNER_BENCH_LOOP is warm:N, plain:N or pooled:N");
    assert!(
        ["warm", "plain", "pooled"].contains(&which),
        "EDGE_RUNNER_BENCH_LOOP is warm:N, plain:N or pooled:N"
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

/// The default configuration with Wasmtime's pooling allocator set up as
/// Edge Runner sets it up (`pooled_config` in `runner/src/sandbox/mod.rs`):
/// 4 runs' worth of slots, and up to 256 KiB of the pages a run wrote to a
/// memory (16 KiB of a table) reset in place where the kernel can say which
/// were written. Beside warm it prices
/// what Edge Runner adds (fuel, epochs, limiter, async call, capture, `kind`,
/// report) with the allocator the same on both sides.
fn pooled_config() -> Config {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(4)
        .total_core_instances(4 * 32)
        .total_memories(4 * 4)
        .total_tables(4 * 16)
        .total_stacks(4)
        .max_core_instances_per_component(32)
        .max_memories_per_component(4)
        .max_tables_per_component(16)
        .max_memories_per_module(4)
        .max_tables_per_module(16)
        .table_elements(1 << 18);
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(256 << 10)
            .table_keep_resident(16 << 10);
    }
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// The plain embedding (see the top of this file): one call of it is one run
/// of `run` in a fresh store from a pre-linked component.
fn plain_embedding(component_bytes: &[u8], config: Config) -> impl FnMut() {
    let engine = Engine::new(&config).unwrap();
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
        && (which == "plain" || which == "pooled")
    {
        let config = if which == "pooled" {
            pooled_config()
        } else {
            Config::new()
        };
        let mut plain = plain_embedding(capsule_artifacts::JSON_ASSERT.component, config);
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
    let mut warm = || {
        sandbox.run(&verified, &grant, INPUT).unwrap();
    };
    let mut plain = plain_embedding(example.component, Config::new());
    let mut pooled = plain_embedding(example.component, pooled_config());
    let mut sides = [
        Side::new("edge-runner warm (InstancePre reused)", &mut warm),
        Side::new("plain wasmtime (InstancePre, fresh store)", &mut plain),
        Side::new("plain wasmtime, pooled like edge-runner", &mut pooled),
    ];
    let medians = interleaved(&mut sides);

    println!();
    println!(
        "cold / warm: {:.1}x   disk / warm: {:.1}x",
        cold.as_secs_f64() / medians[0].as_secs_f64(),
        disk.as_secs_f64() / medians[0].as_secs_f64(),
    );
    let (pooled_ratio, pooled_low, pooled_high) = round_ratios(&sides[0], &sides[2]);
    println!(
        "warm / plain pooled: {pooled_ratio:.2}x  (median of {ROUNDS} rounds; rounds {pooled_low:.2}-{pooled_high:.2}x)"
    );
    let (ratio, low, high) = round_ratios(&sides[0], &sides[1]);
    println!("warm / plain: {ratio:.2}x  (median of {ROUNDS} rounds; rounds {low:.2}-{high:.2}x)");
}
