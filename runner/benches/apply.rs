//! Apply throughput: changing a 100 KB file the way an authorized apply does
//! (symlink-free open from the site's directory, compare-and-swap on the
//! pre-image digest, the diff applied in memory and its result checked, a
//! temporary file, fsync, rename, directory fsync) next to the raw floor of
//! the same bytes written with write + fsync + rename + directory fsync.
//!
//! ```sh
//! cargo bench -p edge-runner --bench apply
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::Write;
use std::time::Instant;

use edge_runner::capsule::AbsPath;
use edge_runner::remediation::apply::danger::apply_file_unauthorized;
use edge_runner::remediation::{FileAction, Limits};
use edge_runner::site::SitePolicy;
use sha2::{Digest, Sha256};

fn diff(a: &str, b: &str) -> String {
    similar::TextDiff::from_lines(a, b)
        .unified_diff()
        .header("a/config/app.conf", "b/config/app.conf")
        .to_string()
}

fn main() {
    let n: u32 = std::env::var("EDGE_RUNNER_BENCH_APPLIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("config");
    std::fs::create_dir(&host).unwrap();
    // 100 KB of `key = value` lines; the change touches 10 of them.
    let pre: String = (0..2600)
        .map(|i| format!("setting_{i:05} = value-{i:05}-padding-xyz\n"))
        .collect();
    assert!(pre.len() >= 100_000, "{}", pre.len());
    let post: String = pre
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i % 260 == 0 {
                format!("{l}-changed\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(host.join("app.conf"), &pre).unwrap();
    let site = SitePolicy::parse(
        &format!(
            "format = 1\nsite = \"bench\"\n[[directory]]\npath = \"/config\"\nhost = \"{}\"\naccess = \"read-write\"\n[[apply]]\npath = \"/config\"\n",
            host.display()
        ),
        "bench",
    )
    .unwrap();
    let forward = FileAction {
        path: AbsPath::parse("/config/app.conf").unwrap(),
        host: host.join("app.conf"),
        diff: diff(&pre, &post),
        rollback: Some(diff(&post, &pre)),
        pre_sha256: Sha256::digest(&pre).into(),
        post_sha256: Sha256::digest(&post).into(),
    };
    let back = FileAction {
        diff: diff(&post, &pre),
        rollback: Some(diff(&pre, &post)),
        pre_sha256: forward.post_sha256,
        post_sha256: forward.pre_sha256,
        ..forward.clone()
    };
    let limits = Limits::default();
    let start = Instant::now();
    for i in 0..n {
        let action = if i % 2 == 0 { &forward } else { &back };
        apply_file_unauthorized(&site, action, &limits).unwrap();
    }
    let apply_secs = start.elapsed().as_secs_f64();

    let target = host.join("raw.conf");
    let tmp = host.join(".raw.conf.tmp");
    let start = Instant::now();
    for i in 0..n {
        let data = if i % 2 == 0 { &post } else { &pre };
        let mut f = std::fs::File::create(&tmp).unwrap();
        f.write_all(data.as_bytes()).unwrap();
        f.sync_all().unwrap();
        std::fs::rename(&tmp, &target).unwrap();
        std::fs::File::open(&host).unwrap().sync_all().unwrap();
    }
    let raw_secs = start.elapsed().as_secs_f64();
    let per = |s: f64| s * 1e3 / f64::from(n);
    println!(
        "apply a 100 KB file change (CAS, diff, tmp, fsync, rename, dir fsync)  {:>8.3} ms each",
        per(apply_secs)
    );
    println!(
        "raw write + fsync + rename + dir fsync of the same bytes               {:>8.3} ms each",
        per(raw_secs)
    );
    println!(
        "overhead                                                               {:>8.2}x",
        apply_secs / raw_secs
    );
}
