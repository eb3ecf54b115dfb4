//! Evidence throughput: durable appends (one record per fsync, group
//! commit, and the shared writer at 1, 2, 8 and 32 concurrent writers) and offline verification of 100k- and 1M-record logs, each next to
//! the raw Ed25519 sign and verify rates measured in the same run.
//!
//! ```sh
//! cargo bench -p edge-runner --bench evidence
//! EDGE_RUNNER_BENCH_RECORDS=100000 cargo bench -p edge-runner --bench evidence   # skip the 1M log
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use ciborium::Value;
use edge_runner::cbor::text_map;
use edge_runner::evidence::{self, CheckpointPolicy, EvidenceLog};
use edge_runner::keys::SecretKey;

fn rate(n: u64, secs: f64) -> String {
    format!("{:>12.0}/s", n as f64 / secs)
}

fn body(i: u64) -> Value {
    text_map([
        ("module-sha256", Value::Bytes(vec![7; 32])),
        ("status", Value::Text("completed".into())),
        ("n", Value::Integer(i.into())),
    ])
}

fn main() {
    let max: u64 = std::env::var("EDGE_RUNNER_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let key = SecretKey::generate().unwrap();
    let public = key.public();

    // Raw Ed25519, for scale.
    let n = 20_000u64;
    let msg = [0x5au8; 300];
    let start = Instant::now();
    let sigs: Vec<_> = (0..n).map(|_| key.sign(&msg)).collect();
    let sign_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for s in &sigs {
        assert!(public.verify_strict(&msg, &s.to_bytes()));
    }
    let verify_secs = start.elapsed().as_secs_f64();
    println!(
        "raw Ed25519 sign                      {}",
        rate(n, sign_secs)
    );
    println!(
        "raw Ed25519 verify_strict, 1 core     {}",
        rate(n, verify_secs)
    );
    let items: Vec<(&[u8], [u8; 64])> = sigs.iter().map(|s| (&msg[..], s.to_bytes())).collect();
    let items: Vec<(&[u8], &[u8; 64])> = items.iter().map(|(m, s)| (*m, s)).collect();
    let start = Instant::now();
    evidence::verify_signatures(&public, &items).unwrap();
    println!(
        "raw Ed25519 batch (verifier's path), all cores {}",
        rate(n, start.elapsed().as_secs_f64())
    );

    // Durable appends.
    let dir = tempfile::tempdir().unwrap();
    let pem = key.to_pem().unwrap();
    let fresh_key = || SecretKey::from_pem(&pem, std::path::Path::new("k")).unwrap();
    let mut log = EvidenceLog::open(dir.path(), fresh_key()).unwrap();
    let singles = 2_000u64;
    let start = Instant::now();
    for i in 0..singles {
        log.append("bench", body(i)).unwrap();
    }
    println!(
        "durable append, one fsync per record   {}",
        rate(singles, start.elapsed().as_secs_f64())
    );
    drop(log);

    for &batch in &[16usize, 256] {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EvidenceLog::open(dir.path(), fresh_key()).unwrap();
        let total = 50_000u64;
        let start = Instant::now();
        let mut i = 0;
        while i < total {
            let entries = (0..batch as u64)
                .map(|j| ("bench".to_string(), body(i + j)))
                .collect();
            log.append_batch(entries).unwrap();
            i += batch as u64;
        }
        println!(
            "durable append, group commit of {batch:<4}  {}",
            rate(total, start.elapsed().as_secs_f64())
        );
    }

    // The shared writer (`edge-runner serve`): N threads each recording one
    // record at a time, group-committed by the writer thread; next to the
    // single-append rate above.
    for &writers in &[1u64, 2, 8, 32] {
        let dir = tempfile::tempdir().unwrap();
        let shared =
            evidence::SharedLog::start(EvidenceLog::open(dir.path(), fresh_key()).unwrap());
        let each = (4_000 / writers).max(200);
        let start = Instant::now();
        std::thread::scope(|scope| {
            for w in 0..writers {
                let shared = shared.clone();
                scope.spawn(move || {
                    for i in 0..each {
                        let event = evidence::Event::Unknown(evidence::events::UnknownEvent {
                            name: "bench".into(),
                            body: body(w * each + i),
                        });
                        shared.record(event).unwrap();
                    }
                });
            }
        });
        let secs = start.elapsed().as_secs_f64();
        let stats = shared.stats();
        println!(
            "shared writer, {writers:>2} concurrent writers {}  ({} records in {} group commits, largest {}, mean fsync {:.2} ms)",
            rate(writers * each, secs),
            stats.records,
            stats.batches,
            stats.max_batch,
            stats.fsync_latency_sum.as_secs_f64() * 1e3 / stats.fsync_count.max(1) as f64
        );
        shared.close().unwrap();
    }

    // Open cost and verification, on logs of growing size.
    let mut open_ms = Vec::new();
    for &size in &[10u64, 1_000, 100_000, 1_000_000] {
        if size > max {
            println!("log of {size} records: skipped (EDGE_RUNNER_BENCH_RECORDS={max})");
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut log = EvidenceLog::open(dir.path(), fresh_key()).unwrap();
        log.set_checkpoint_policy(CheckpointPolicy {
            every_records: 10_000,
            every: std::time::Duration::from_secs(3600),
        });
        let mut i = log.len();
        while i < size {
            let n = (size - i).min(1000);
            let entries = (0..n).map(|j| ("bench".to_string(), body(i + j))).collect();
            log.append_batch(entries).unwrap();
            i += n;
        }
        log.close().unwrap();

        // What a `run` does with the log: open it, append a run's records
        // one durable write each, close it with a checkpoint. The open alone
        // is timed too: it holds what depends on the log's length (and one
        // fsync, for its `runner-started` record), while the appends and the
        // close are four more fsyncs whose noise can hide it.
        let (mut samples, mut opens): (Vec<f64>, Vec<f64>) = (0..7)
            .map(|_| {
                let start = Instant::now();
                let mut log = EvidenceLog::open(dir.path(), fresh_key()).unwrap();
                let opened = start.elapsed().as_secs_f64() * 1e3;
                for j in 0..3 {
                    log.append("bench", body(j)).unwrap();
                }
                log.close().unwrap();
                (start.elapsed().as_secs_f64() * 1e3, opened)
            })
            .unzip();
        samples.sort_by(f64::total_cmp);
        opens.sort_by(f64::total_cmp);
        let median = samples[samples.len() / 2];
        let open = opens[opens.len() / 2];
        open_ms.push((median, open));
        println!(
            "open + 3 appends + close, {size:>7} records   median {median:>8.2} ms  (min {:.2}, max {:.2}, 7 runs; x{:.2} of the 10-record log)",
            samples[0],
            samples[samples.len() - 1],
            median / open_ms[0].0
        );
        println!(
            "  of which the open (with one fsync)            median {open:>8.2} ms  (min {:.2}, max {:.2}; x{:.2} of the 10-record log)",
            opens[0],
            opens[opens.len() - 1],
            open / open_ms[0].1
        );

        if size < 100_000 {
            continue;
        }
        // Segments and the active file, as `evidence verify DIR` reads them.
        let bytes = evidence::read_log_dir(dir.path(), u64::MAX).unwrap();
        let start = Instant::now();
        let summary = evidence::verify_log(&bytes, &public).unwrap();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "verify {:>7} records ({:>4} MiB)      {}  ({:.2} s)",
            summary.records.len(),
            bytes.len() >> 20,
            rate(summary.records.len() as u64, secs),
            secs
        );
    }
}
