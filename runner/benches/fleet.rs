//! The fleet over real NATS servers (a hub and one leaf, from the shipped
//! configs, as the tests start them), each figure next to its floor:
//!
//! * records shipped per second, runner → leaf → hub, until the hub's stream
//!   holds them all, next to raw JetStream publishes of the same bytes with the
//!   same client (each acknowledged, as the shipper waits for each);
//! * dispatch → evidence-at-hub latency, p50 and p99: a signed job published
//!   to the hub's queue until its `job-finished` record arrives in the hub's
//!   stream, through a real `edge-runner serve`, one job at a time after a
//!   first job that compiles the capsule (printed apart);
//! * fetching a 10 MiB capsule by digest through the leaf;
//! * the collector's verification rate at the hub next to the local
//!   `evidence verify` of the same log.
//!
//! ```sh
//! cargo bench -p edge-runner --features fleet --bench fleet
//! ```
//!
//! Sizes: `EDGE_RUNNER_BENCH_FLEET_RECORDS` (default 5000),
//! `EDGE_RUNNER_BENCH_FLEET_JOBS` (default 50). Without `nats-server` the
//! bench prints why and exits 0.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;
#[allow(dead_code)]
#[path = "../tests/fleet/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../tests/fleet/serve.rs"]
mod serve;

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use edge_runner::capsule::Kind;
use edge_runner::evidence::{self, EvidenceLog};
use edge_runner::fleet::collect::{Collector, SiteKey};
use edge_runner::fleet::jobs as fleet_jobs;
use edge_runner::fleet::ship::{self, Shipper};
use edge_runner::fleet::{capsules, subjects};
use edge_runner::keys::SecretKey;
use edge_runner::timestamp::Timestamp;
use futures_util::StreamExt;
use harness::Fleet;

const MIB: i64 = 1 << 20;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rate(n: usize, took: Duration) -> String {
    format!("{:>10.0} records/s", n as f64 / took.as_secs_f64())
}

/// The records of the log in `dir`, as bytes.
fn records(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let bytes = evidence::read_log_dir(dir, u64::MAX).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (_, len) = edge_runner::cbor::decode_prefix(&bytes[at..]).unwrap();
        out.push(bytes[at..at + len].to_vec());
        at += len;
    }
    out
}

async fn hub_count(hub: &jetstream::Context) -> u64 {
    let mut s = hub.get_stream(subjects::HUB_EVIDENCE_STREAM).await.unwrap();
    s.info().await.unwrap().state.messages
}

fn main() {
    let Some(bin) = harness::server_or_skip("bench fleet") else {
        return;
    };
    let n = env("EDGE_RUNNER_BENCH_FLEET_RECORDS", 5000);
    let jobs = env("EDGE_RUNNER_BENCH_FLEET_JOBS", 50);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fleet = Fleet::start(&bin, &["plant-7"]);
    println!("fleet bench: hub and leaf nats-server, {n} records, {jobs} jobs");

    // A log of n notes, written with one group commit.
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let mut log = EvidenceLog::open(
        dir.path(),
        SecretKey::from_pem(&key.to_pem().unwrap(), std::path::Path::new("bench key")).unwrap(),
    )
    .unwrap();
    log.append_batch(
        (0..n as u64)
            .map(|i| {
                (
                    "note".to_string(),
                    edge_runner::cbor::text_map([("n", i.into())]),
                )
            })
            .collect(),
    )
    .unwrap();
    log.close().unwrap();
    let all = records(dir.path());

    rt.block_on(async {
        let leaf = jetstream::new(fleet.runner("plant-7").await);
        let hub = jetstream::new(fleet.admin().await);
        ship::ensure_site_stream(&leaf, "plant-7", 1024 * MIB)
            .await
            .unwrap();
        hub.create_stream(ship::hub_stream_config(&fleet.sites))
            .await
            .unwrap();

        // 1. Shipping, acknowledged by the leaf, until the hub holds every record.
        let started = Instant::now();
        Shipper::new(leaf.clone(), "plant-7", dir.path())
            .ship()
            .await
            .unwrap();
        let at_leaf = started.elapsed();
        while hub_count(&hub).await < all.len() as u64 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let at_hub = started.elapsed();
        // The floor: the same bytes, raw publishes, each acknowledged.
        leaf.create_stream(jetstream::stream::Config {
            name: "BENCH_RAW".into(),
            subjects: vec!["bench.raw".into()],
            max_bytes: 1024 * MIB,
            ..Default::default()
        })
        .await
        .unwrap();
        let started = Instant::now();
        for r in &all {
            leaf.publish("bench.raw", r.clone().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let raw = started.elapsed();
        println!(
            "shipping   {} acknowledged at the leaf, {} in the hub's stream; raw publish {} ({} records)",
            rate(all.len(), at_leaf),
            rate(all.len(), at_hub),
            rate(all.len(), raw),
            all.len()
        );

        // 2. Collector at the hub next to local `evidence verify`.
        let started = Instant::now();
        let mut c = Collector::new(vec![SiteKey {
            site: "plant-7".into(),
            runner_key: key.public(),
        }]);
        c.read_hub(&hub).await.unwrap();
        let report = c.finish(None, Timestamp::now()).pop().unwrap();
        assert!(report.verdict.is_ok(), "{:?}", report.verdict);
        let collected = started.elapsed();
        let bytes = evidence::read_log_dir(dir.path(), u64::MAX).unwrap();
        let started = Instant::now();
        evidence::verify_log(&bytes, &key.public()).unwrap();
        let local = started.elapsed();
        println!(
            "verify     collector at the hub {}; local evidence verify {}",
            rate(all.len(), collected),
            rate(all.len(), local)
        );

        // 3. A 10 MiB capsule object fetched by digest through the leaf.
        let big: Vec<u8> = (0..10 * MIB as usize).map(|i| (i * 7 % 251) as u8).collect();
        let digest = capsules::publish(&hub, &big).await.unwrap();
        let through_leaf = jetstream::with_domain(fleet.runner("plant-7").await, "hub");
        let mut times = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let got = capsules::fetch(&through_leaf, &digest, 64 * MIB as u64)
                .await
                .unwrap();
            times.push(started.elapsed());
            assert_eq!(got.len(), big.len());
        }
        times.sort();
        println!(
            "fetch      10 MiB capsule through the leaf: median {:?} ({:.0} MiB/s)",
            times[2],
            10.0 / times[2].as_secs_f64()
        );
    });
    drop(fleet);

    // 4. Dispatch → evidence at the hub, through a real `serve`.
    let fleet = Fleet::start(&bin, &["plant-7"]);
    let mut site = serve::Site::new(&fleet);
    let hub = rt.block_on(serve::hub_setup(&fleet, &site));
    site.start();
    let mut latencies = rt.block_on(async {
        let stream = hub.get_stream(subjects::HUB_EVIDENCE_STREAM).await.unwrap();
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::New,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut arriving = consumer.messages().await.unwrap();
        let mut latencies = Vec::new();
        // Job 0 compiles the capsule; it is printed alone, not counted.
        for i in 0..=jobs {
            let id = format!("bench-{i}");
            let started = Instant::now();
            fleet_jobs::dispatch(&hub, "plant-7", Kind::Test, &id, site.request(&id))
                .await
                .unwrap();
            let mut accepted = None;
            loop {
                let m = arriving.next().await.unwrap().unwrap();
                match evidence::read_unverified(&m.payload).map(|r| r.event) {
                    Some(e) if e == "job-accepted" => accepted = Some(started.elapsed()),
                    Some(e) if e == "job-finished" => break,
                    _ => {}
                }
            }
            latencies.push((started.elapsed(), accepted.unwrap_or_default()));
        }
        latencies
    });
    let (first, _) = latencies.remove(0);
    site.stop();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "dispatch   → job-finished in the hub's stream: p50 {:.1?}, p99 {:.1?}, job-accepted there p50 {:.1?} ({} jobs, one at a time; the first, which compiles the capsule: {first:.0?})",
        at(0.50).0,
        at(0.99).0,
        {
            let mut accepted: Vec<Duration> = latencies.iter().map(|l| l.1).collect();
            accepted.sort();
            accepted[accepted.len() / 2]
        },
        latencies.len()
    );
}
