//! The daemon's metrics: one [`Metrics`] registry of lock-free counters,
//! gauges and fixed-bucket histograms, rendered as OpenMetrics text for the
//! metrics endpoint.
//!
//! No label ever takes a value from outside: the only labels are `reason`
//! ([`Rejection`]) and `outcome` ([`Outcome`]), Rust enums whose
//! [`as_str`](Rejection::as_str) is a fixed string, so a caller cannot grow
//! the number of series (or inject text into the exposition) by what it
//! sends. Every labelled series is rendered from start-up, at zero, so a
//! dashboard sees the whole set before the first event. This module counts
//! and renders; it decides nothing and touches neither the queue nor the log.
//!
//! The series (all prefixed `edge_runner_`; `docs/serve.md` "Metrics" lists
//! them with their types and labels):
//!
//! | family | type | labels |
//! |---|---|---|
//! | `jobs_accepted` | counter | |
//! | `jobs_rejected` | counter | `reason` |
//! | `jobs_finished` | counter | `outcome` |
//! | `queue_depth` | gauge | |
//! | `jobs_running` | gauge | |
//! | `job_queue_duration_seconds` | histogram | |
//! | `job_run_duration_seconds` | histogram | |
//! | `capsule_refusals` | counter | |
//! | `evidence_records` | counter | |
//! | `evidence_fsync_duration_seconds` | histogram | |
//! | `evidence_fsync_batch_records` | histogram | |
//! | `evidence_failing` | gauge | |
//! | `trust_root_expiry_timestamp_seconds` | gauge | |
//! | `code_cache_hits`, `code_cache_misses` | counter | |
//! | `api_peer_refusals` | counter | |

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// The `Content-Type` of [`Metrics::render`]'s output, for the HTTP answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric family's name starts with this.
const PREFIX: &str = "edge_runner_";

/// Why a job submission was refused: the `reason` label of
/// `edge_runner_jobs_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The queue holds `queue_capacity` jobs (429).
    QueueFull,
    /// The submitter has its quota of jobs queued or running (429).
    SubmitterQuota,
    /// The capsule, signature or input is over its size cap (413).
    TooLarge,
    /// The request could not be parsed (400).
    Malformed,
    /// The request named a path on the host instead of sending bytes (400).
    HostPath,
    /// The request named a capsule digest the store does not hold (400).
    UnknownCapsule,
    /// The daemon is shutting down (503).
    Draining,
    /// The daemon is not ready, e.g. the trust root is expired or the last fsync failed (503).
    NotReady,
}

impl Rejection {
    /// Every reason, in the order they are rendered.
    pub const ALL: [Rejection; 8] = [
        Rejection::QueueFull,
        Rejection::SubmitterQuota,
        Rejection::TooLarge,
        Rejection::Malformed,
        Rejection::HostPath,
        Rejection::UnknownCapsule,
        Rejection::Draining,
        Rejection::NotReady,
    ];

    /// The label value, fixed for each reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::QueueFull => "queue_full",
            Rejection::SubmitterQuota => "submitter_quota",
            Rejection::TooLarge => "too_large",
            Rejection::Malformed => "malformed",
            Rejection::HostPath => "host_path",
            Rejection::UnknownCapsule => "unknown_capsule",
            Rejection::Draining => "draining",
            Rejection::NotReady => "not_ready",
        }
    }
}

/// How an accepted job ended: the `outcome` label of
/// `edge_runner_jobs_finished_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The capsule ran and passed (exit 0).
    Pass,
    /// The capsule ran and reported a failure.
    Fail,
    /// The capsule was refused before it ran (signature, trust root, policy).
    Refused,
    /// The run ended abnormally (trap, limit, interruption).
    Abnormal,
    /// The runner could not carry the job out (an internal or I/O error).
    Error,
    /// A client cancelled the job.
    CancelledByClient,
    /// Shutdown cancelled or interrupted the job.
    CancelledByShutdown,
    /// The job was open when a previous daemon stopped and was marked abandoned at start-up.
    Abandoned,
}

impl Outcome {
    /// Every outcome, in the order they are rendered.
    pub const ALL: [Outcome; 8] = [
        Outcome::Pass,
        Outcome::Fail,
        Outcome::Refused,
        Outcome::Abnormal,
        Outcome::Error,
        Outcome::CancelledByClient,
        Outcome::CancelledByShutdown,
        Outcome::Abandoned,
    ];

    /// The label value, fixed for each outcome.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Refused => "refused",
            Outcome::Abnormal => "abnormal",
            Outcome::Error => "error",
            Outcome::CancelledByClient => "cancelled_client",
            Outcome::CancelledByShutdown => "cancelled_shutdown",
            Outcome::Abandoned => "abandoned",
        }
    }

    /// The outcome named `name` exactly as [`as_str`](Outcome::as_str)
    /// writes it (the names `job-finished` records use), or `None`.
    pub fn from_name(name: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == name)
    }
}

/// Upper bounds for job queue and run durations, in nanoseconds with their
/// `le` text: 50 µs (a warm hello run) to 5 minutes.
const JOB_SECONDS: &[(u64, &str)] = &[
    (50_000, "0.00005"),
    (100_000, "0.0001"),
    (250_000, "0.00025"),
    (500_000, "0.0005"),
    (1_000_000, "0.001"),
    (2_500_000, "0.0025"),
    (5_000_000, "0.005"),
    (10_000_000, "0.01"),
    (25_000_000, "0.025"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
    (250_000_000, "0.25"),
    (500_000_000, "0.5"),
    (1_000_000_000, "1.0"),
    (2_500_000_000, "2.5"),
    (5_000_000_000, "5.0"),
    (10_000_000_000, "10.0"),
    (30_000_000_000, "30.0"),
    (60_000_000_000, "60.0"),
    (300_000_000_000, "300.0"),
];

/// Upper bounds for fdatasync latency, in nanoseconds with their `le` text:
/// 50 µs (tmpfs, NVMe) to 2.5 s (a disk in trouble).
const FSYNC_SECONDS: &[(u64, &str)] = &[
    (50_000, "0.00005"),
    (100_000, "0.0001"),
    (250_000, "0.00025"),
    (500_000, "0.0005"),
    (1_000_000, "0.001"),
    (2_500_000, "0.0025"),
    (5_000_000, "0.005"),
    (10_000_000, "0.01"),
    (25_000_000, "0.025"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
    (250_000_000, "0.25"),
    (500_000_000, "0.5"),
    (1_000_000_000, "1.0"),
    (2_500_000_000, "2.5"),
];

/// Upper bounds for the records in one group commit, with their `le` text.
const BATCH_RECORDS: &[(u64, &str)] = &[
    (1, "1.0"),
    (2, "2.0"),
    (4, "4.0"),
    (8, "8.0"),
    (16, "16.0"),
    (32, "32.0"),
    (64, "64.0"),
    (128, "128.0"),
    (256, "256.0"),
    (512, "512.0"),
    (1024, "1024.0"),
];

/// What a histogram's observations are counted in.
#[derive(Debug, Clone, Copy)]
enum Scale {
    /// Nanoseconds, rendered as seconds.
    Nanoseconds,
    /// Plain counts, rendered as they are.
    Count,
}

/// A histogram with fixed upper bounds; each bucket counts only its own
/// observations, made cumulative when rendered.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [(u64, &'static str)],
    scale: Scale,
    /// One per bound, then one for `+Inf`.
    buckets: Vec<AtomicU64>,
    sum: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [(u64, &'static str)], scale: Scale) -> Histogram {
        Histogram {
            bounds,
            scale,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: u64) {
        let index = self
            .bounds
            .iter()
            .position(|&(bound, _)| value <= bound)
            .unwrap_or(self.bounds.len());
        if let Some(bucket) = self.buckets.get(index) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    fn observe_duration(&self, duration: Duration) {
        self.observe(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX));
    }

    fn render(&self, out: &mut String, name: &str) {
        // `_count` is the sum of the buckets as read here, so the `+Inf`
        // bucket and `_count` agree even while other threads observe.
        let mut cumulative = 0u64;
        for (index, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = self.bounds.get(index).map_or("+Inf", |&(_, text)| text);
            let _ = writeln!(out, "{PREFIX}{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum.load(Ordering::Relaxed);
        match self.scale {
            Scale::Nanoseconds => {
                let _ = writeln!(out, "{PREFIX}{name}_sum {:?}", sum as f64 / 1e9);
            }
            Scale::Count => {
                let _ = writeln!(out, "{PREFIX}{name}_sum {sum}");
            }
        }
        let _ = writeln!(out, "{PREFIX}{name}_count {cumulative}");
    }
}

/// The daemon's metrics registry: every series the daemon exports, updated
/// lock-free from any thread (share one in an `Arc`) and rendered by
/// [`render`](Metrics::render).
#[derive(Debug)]
pub struct Metrics {
    accepted: AtomicU64,
    rejected: [AtomicU64; Rejection::ALL.len()],
    finished: [AtomicU64; Outcome::ALL.len()],
    queue_depth: AtomicU64,
    running: AtomicU64,
    queue_seconds: Histogram,
    run_seconds: Histogram,
    capsule_refusals: AtomicU64,
    evidence_records: AtomicU64,
    fsync_seconds: Histogram,
    fsync_batch: Histogram,
    evidence_failing: AtomicBool,
    trust_root_expiry: AtomicI64,
    trust_root_expiry_set: AtomicBool,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    peer_refusals: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every counter, gauge and histogram at zero and no
    /// trust root expiry yet.
    pub fn new() -> Metrics {
        Metrics {
            accepted: AtomicU64::new(0),
            rejected: std::array::from_fn(|_| AtomicU64::new(0)),
            finished: std::array::from_fn(|_| AtomicU64::new(0)),
            queue_depth: AtomicU64::new(0),
            running: AtomicU64::new(0),
            queue_seconds: Histogram::new(JOB_SECONDS, Scale::Nanoseconds),
            run_seconds: Histogram::new(JOB_SECONDS, Scale::Nanoseconds),
            capsule_refusals: AtomicU64::new(0),
            evidence_records: AtomicU64::new(0),
            fsync_seconds: Histogram::new(FSYNC_SECONDS, Scale::Nanoseconds),
            fsync_batch: Histogram::new(BATCH_RECORDS, Scale::Count),
            evidence_failing: AtomicBool::new(false),
            trust_root_expiry: AtomicI64::new(0),
            trust_root_expiry_set: AtomicBool::new(false),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            peer_refusals: AtomicU64::new(0),
        }
    }

    /// A job was accepted: its `job-accepted` record is durable and `202` was answered.
    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// A job submission was refused, for `reason`.
    pub fn rejected(&self, reason: Rejection) {
        self.rejected[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A job left the queue to run after `queue_time` (from acceptance).
    pub fn started(&self, queue_time: Duration) {
        self.queue_seconds.observe_duration(queue_time);
    }

    /// A job left the queue without running (it was cancelled) after `queue_time`.
    pub fn dequeued(&self, queue_time: Duration) {
        self.queue_seconds.observe_duration(queue_time);
    }

    /// A job ended with `outcome`; `run_time` is how long it ran, `None` if it never started.
    pub fn finished(&self, outcome: Outcome, run_time: Option<Duration>) {
        self.finished[outcome as usize].fetch_add(1, Ordering::Relaxed);
        if let Some(run_time) = run_time {
            self.run_seconds.observe_duration(run_time);
        }
    }

    /// `jobs` jobs left open by a previous daemon were marked abandoned at start-up.
    pub fn abandoned(&self, jobs: u64) {
        self.finished[Outcome::Abandoned as usize].fetch_add(jobs, Ordering::Relaxed);
    }

    /// The queue now holds `jobs` jobs waiting to run.
    pub fn set_queue_depth(&self, jobs: u64) {
        self.queue_depth.store(jobs, Ordering::Relaxed);
    }

    /// `jobs` jobs are running now.
    pub fn set_running(&self, jobs: u64) {
        self.running.store(jobs, Ordering::Relaxed);
    }

    /// A capsule was refused (a `capsule-refused` record was written).
    pub fn capsule_refused(&self) {
        self.capsule_refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// One group commit made `batch` records durable, its write and
    /// fdatasync taking `latency`: counts the records and observes both
    /// histograms. Fits `evidence::SharedLog::start_observed` as is:
    /// `Box::new(move |latency, batch| metrics.fsync(latency, batch))`.
    pub fn fsync(&self, latency: Duration, batch: u64) {
        self.evidence_records.fetch_add(batch, Ordering::Relaxed);
        self.fsync_seconds.observe_duration(latency);
        self.fsync_batch.observe(batch);
    }

    /// Whether the evidence log's newest group commit failed (its write or
    /// fdatasync), e.g. `log.stats().last_fsync_error.is_some()` read before rendering.
    pub fn set_evidence_failing(&self, failing: bool) {
        self.evidence_failing.store(failing, Ordering::Relaxed);
    }

    /// The trust root in use expires at `unix_secs` (seconds since the Unix epoch).
    pub fn set_trust_root_expiry(&self, unix_secs: i64) {
        self.trust_root_expiry.store(unix_secs, Ordering::Relaxed);
        self.trust_root_expiry_set.store(true, Ordering::Release);
    }

    /// A capsule's compiled code was found in the code cache.
    pub fn cache_hit(&self) {
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// A capsule's code was not in the code cache and was compiled.
    pub fn cache_miss(&self) {
        self.cache_misses.fetch_add(1, Ordering::Relaxed);
    }

    /// An API request was refused because the peer's uid/gid (`SO_PEERCRED`) is not allowed.
    pub fn peer_refused(&self) {
        self.peer_refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// Every series in OpenMetrics text exposition format, ending in `# EOF`;
    /// serve it with [`CONTENT_TYPE`].
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        counter(
            &mut out,
            "jobs_accepted",
            "Jobs accepted (acceptance record durable, 202 answered).",
            &self.accepted,
        );
        header(
            &mut out,
            "jobs_rejected",
            "counter",
            None,
            "Job submissions refused, by reason.",
        );
        for reason in Rejection::ALL {
            let value = self.rejected[reason as usize].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{PREFIX}jobs_rejected_total{{reason=\"{}\"}} {value}",
                reason.as_str()
            );
        }
        header(
            &mut out,
            "jobs_finished",
            "counter",
            None,
            "Accepted jobs that ended, by outcome.",
        );
        for outcome in Outcome::ALL {
            let value = self.finished[outcome as usize].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{PREFIX}jobs_finished_total{{outcome=\"{}\"}} {value}",
                outcome.as_str()
            );
        }
        gauge(
            &mut out,
            "queue_depth",
            None,
            "Jobs queued and not yet running.",
            &self.queue_depth.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "jobs_running",
            None,
            "Jobs running now.",
            &self.running.load(Ordering::Relaxed).to_string(),
        );
        histogram(
            &mut out,
            "job_queue_duration_seconds",
            Some("seconds"),
            "Time from acceptance to leaving the queue (start or cancel).",
            &self.queue_seconds,
        );
        histogram(
            &mut out,
            "job_run_duration_seconds",
            Some("seconds"),
            "Time a job ran, verification to end.",
            &self.run_seconds,
        );
        counter(
            &mut out,
            "capsule_refusals",
            "Capsules refused by verification or policy.",
            &self.capsule_refusals,
        );
        counter(
            &mut out,
            "evidence_records",
            "Evidence records made durable.",
            &self.evidence_records,
        );
        histogram(
            &mut out,
            "evidence_fsync_duration_seconds",
            Some("seconds"),
            "Latency of each group commit's fdatasync.",
            &self.fsync_seconds,
        );
        histogram(
            &mut out,
            "evidence_fsync_batch_records",
            Some("records"),
            "Records made durable by each group commit.",
            &self.fsync_batch,
        );
        gauge(
            &mut out,
            "evidence_failing",
            None,
            "1 while the evidence log's newest write or fdatasync has failed, else 0.",
            if self.evidence_failing.load(Ordering::Relaxed) {
                "1"
            } else {
                "0"
            },
        );
        if self.trust_root_expiry_set.load(Ordering::Acquire) {
            gauge(
                &mut out,
                "trust_root_expiry_timestamp_seconds",
                Some("seconds"),
                "When the trust root in use expires, in seconds since the Unix epoch.",
                &self.trust_root_expiry.load(Ordering::Relaxed).to_string(),
            );
        }
        counter(
            &mut out,
            "code_cache_hits",
            "Capsules whose compiled code came from the code cache.",
            &self.cache_hits,
        );
        counter(
            &mut out,
            "code_cache_misses",
            "Capsules compiled because their code was not cached.",
            &self.cache_misses,
        );
        counter(
            &mut out,
            "api_peer_refusals",
            "API requests refused for the peer's uid/gid (SO_PEERCRED).",
            &self.peer_refusals,
        );
        out.push_str("# EOF\n");
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, unit: Option<&str>, help: &str) {
    let _ = writeln!(out, "# TYPE {PREFIX}{name} {kind}");
    if let Some(unit) = unit {
        let _ = writeln!(out, "# UNIT {PREFIX}{name} {unit}");
    }
    let _ = writeln!(out, "# HELP {PREFIX}{name} {help}");
}

fn counter(out: &mut String, name: &str, help: &str, value: &AtomicU64) {
    header(out, name, "counter", None, help);
    let value = value.load(Ordering::Relaxed);
    let _ = writeln!(out, "{PREFIX}{name}_total {value}");
}

fn gauge(out: &mut String, name: &str, unit: Option<&str>, help: &str, value: &str) {
    header(out, name, "gauge", unit, help);
    let _ = writeln!(out, "{PREFIX}{name} {value}");
}

fn histogram(out: &mut String, name: &str, unit: Option<&str>, help: &str, h: &Histogram) {
    header(out, name, "histogram", unit, help);
    h.render(out, name);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn fresh_registry_renders_every_labelled_series_at_zero() {
        let text = Metrics::new().render();
        for reason in Rejection::ALL {
            let line = format!(
                "edge_runner_jobs_rejected_total{{reason=\"{}\"}} 0",
                reason.as_str()
            );
            assert!(lines(&text).contains(&line.as_str()), "{line} missing");
        }
        for outcome in Outcome::ALL {
            let line = format!(
                "edge_runner_jobs_finished_total{{outcome=\"{}\"}} 0",
                outcome.as_str()
            );
            assert!(lines(&text).contains(&line.as_str()), "{line} missing");
        }
        assert!(text.ends_with("\n# EOF\n"));
        assert_eq!(text.matches("# EOF").count(), 1);
        assert!(
            !text.contains("\n\n"),
            "blank lines are invalid OpenMetrics"
        );
    }

    #[test]
    fn counters_render_with_total_suffix_and_metadata() {
        let metrics = Metrics::new();
        metrics.accepted();
        metrics.accepted();
        metrics.rejected(Rejection::QueueFull);
        metrics.peer_refused();
        metrics.cache_hit();
        metrics.fsync(Duration::from_micros(90), 7);
        let text = metrics.render();
        let expected = "# TYPE edge_runner_jobs_accepted counter\n\
             # HELP edge_runner_jobs_accepted Jobs accepted (acceptance record durable, 202 answered).\n\
             edge_runner_jobs_accepted_total 2\n";
        assert!(text.starts_with(expected), "{text}");
        let lines = lines(&text);
        assert!(lines.contains(&"edge_runner_jobs_rejected_total{reason=\"queue_full\"} 1"));
        assert!(lines.contains(&"edge_runner_jobs_rejected_total{reason=\"draining\"} 0"));
        assert!(lines.contains(&"edge_runner_api_peer_refusals_total 1"));
        assert!(lines.contains(&"edge_runner_code_cache_hits_total 1"));
        assert!(lines.contains(&"edge_runner_evidence_records_total 7"));
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_in_inf_equal_to_count() {
        let metrics = Metrics::new();
        metrics.started(Duration::from_micros(40)); // le 0.00005
        metrics.started(Duration::from_millis(1)); // exactly on 0.001: counted there
        metrics.dequeued(Duration::from_secs(3600)); // above every bound: +Inf only
        metrics.finished(Outcome::Pass, Some(Duration::from_millis(2)));
        metrics.finished(Outcome::CancelledByClient, None);
        let text = metrics.render();
        let lines = lines(&text);
        let q = "edge_runner_job_queue_duration_seconds";
        for expected in [
            format!("{q}_bucket{{le=\"0.00005\"}} 1"),
            format!("{q}_bucket{{le=\"0.0005\"}} 1"),
            format!("{q}_bucket{{le=\"0.001\"}} 2"),
            format!("{q}_bucket{{le=\"300.0\"}} 2"),
            format!("{q}_bucket{{le=\"+Inf\"}} 3"),
            format!("{q}_sum 3600.00104"),
            format!("{q}_count 3"),
            "edge_runner_job_run_duration_seconds_bucket{le=\"0.0025\"} 1".to_string(),
            "edge_runner_job_run_duration_seconds_count 1".to_string(),
            "edge_runner_jobs_finished_total{outcome=\"pass\"} 1".to_string(),
            "edge_runner_jobs_finished_total{outcome=\"cancelled_client\"} 1".to_string(),
        ] {
            assert!(
                lines.contains(&expected.as_str()),
                "{expected} missing:\n{text}"
            );
        }
        assert!(lines.contains(&"# UNIT edge_runner_job_queue_duration_seconds seconds"));
    }

    #[test]
    fn fsync_batch_sizes_fill_count_buckets() {
        let metrics = Metrics::new();
        metrics.fsync(Duration::from_micros(800), 3);
        metrics.fsync(Duration::from_micros(300), 5000);
        let text = metrics.render();
        let lines = lines(&text);
        let b = "edge_runner_evidence_fsync_batch_records";
        assert!(lines.contains(&format!("{b}_bucket{{le=\"2.0\"}} 0").as_str()));
        assert!(lines.contains(&format!("{b}_bucket{{le=\"4.0\"}} 1").as_str()));
        assert!(lines.contains(&format!("{b}_bucket{{le=\"1024.0\"}} 1").as_str()));
        assert!(lines.contains(&format!("{b}_bucket{{le=\"+Inf\"}} 2").as_str()));
        assert!(lines.contains(&format!("{b}_sum 5003").as_str()));
        assert!(lines.contains(&"edge_runner_evidence_records_total 5003"));
        assert!(lines.contains(&"edge_runner_evidence_failing 0"));
        metrics.set_evidence_failing(true);
        assert!(
            metrics
                .render()
                .lines()
                .any(|l| l == "edge_runner_evidence_failing 1")
        );
        let f = "edge_runner_evidence_fsync_duration_seconds";
        assert!(lines.contains(&format!("{f}_bucket{{le=\"0.0005\"}} 1").as_str()));
        assert!(lines.contains(&format!("{f}_bucket{{le=\"0.001\"}} 2").as_str()));
    }

    #[test]
    fn trust_root_expiry_is_absent_until_set() {
        let metrics = Metrics::new();
        assert!(!metrics.render().contains("trust_root_expiry"));
        metrics.set_trust_root_expiry(1_798_761_600);
        let text = metrics.render();
        assert!(text.contains(
            "# TYPE edge_runner_trust_root_expiry_timestamp_seconds gauge\n\
             # UNIT edge_runner_trust_root_expiry_timestamp_seconds seconds\n"
        ));
        assert!(
            lines(&text).contains(&"edge_runner_trust_root_expiry_timestamp_seconds 1798761600")
        );
    }

    #[test]
    fn gauges_hold_the_last_value_set() {
        let metrics = Metrics::new();
        metrics.set_queue_depth(12);
        metrics.set_queue_depth(4);
        metrics.set_running(2);
        let text = metrics.render();
        assert!(lines(&text).contains(&"edge_runner_queue_depth 4"));
        assert!(lines(&text).contains(&"edge_runner_jobs_running 2"));
    }

    #[test]
    fn bucket_labels_match_their_bounds() {
        for (bounds, scale) in [
            (JOB_SECONDS, 1e9),
            (FSYNC_SECONDS, 1e9),
            (BATCH_RECORDS, 1.0),
        ] {
            let mut previous = 0;
            for &(bound, text) in bounds {
                assert!(bound > previous, "bounds must increase: {text}");
                previous = bound;
                let parsed: f64 = text.parse().unwrap();
                assert_eq!((parsed * scale).round() as u64, bound, "{text}");
                assert!(text.contains('.'), "{text} is not written as a float");
            }
        }
    }

    #[test]
    fn label_values_are_fixed_identifiers() {
        let values = Rejection::ALL
            .iter()
            .map(|r| r.as_str())
            .chain(Outcome::ALL.iter().map(|o| o.as_str()));
        for value in values {
            assert!(
                value.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{value}"
            );
        }
        for (index, reason) in Rejection::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index);
        }
        for (index, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, index);
        }
    }

    #[test]
    fn outcome_names_round_trip_and_nothing_else_parses() {
        for outcome in Outcome::ALL {
            assert_eq!(Outcome::from_name(outcome.as_str()), Some(outcome));
        }
        assert_eq!(Outcome::from_name("pass\"} 1\nedge_runner_x 9"), None);
        assert_eq!(Outcome::from_name("Pass"), None);
    }

    #[test]
    fn concurrent_updates_are_all_counted() {
        let metrics = Arc::new(Metrics::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let metrics = Arc::clone(&metrics);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        metrics.accepted();
                        metrics.finished(Outcome::Fail, Some(Duration::from_millis(3)));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let text = metrics.render();
        assert!(lines(&text).contains(&"edge_runner_jobs_accepted_total 4000"));
        assert!(lines(&text).contains(&"edge_runner_job_run_duration_seconds_count 4000"));
    }

    /// Parses the exposition with the Prometheus project's strict OpenMetrics
    /// parser (`prometheus_client.openmetrics.parser`). Needs Python with
    /// `prometheus-client`; `.ci/run` installs it and runs this with `--ignored`.
    #[test]
    #[ignore = "needs python3 with prometheus-client (.ci/run installs it)"]
    fn exposition_parses_with_prometheus_openmetrics_parser() {
        use std::io::Write;
        use std::process::{Command, Stdio};

        let metrics = Metrics::new();
        metrics.accepted();
        metrics.rejected(Rejection::SubmitterQuota);
        metrics.started(Duration::from_millis(5));
        metrics.finished(Outcome::Refused, Some(Duration::from_micros(70)));
        metrics.set_evidence_failing(true);
        metrics.abandoned(2);
        metrics.fsync(Duration::from_micros(120), 9);
        metrics.set_trust_root_expiry(1_798_761_600);
        let text = metrics.render();

        let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    print(family.name, family.type, family.unit or "-", len(family.samples))
"#;
        let mut child = Command::new("python3")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "the OpenMetrics parser refused the exposition: {}\n{text}",
            String::from_utf8_lossy(&output.stderr)
        );
        let families: Vec<&str> = stdout.lines().collect();
        let expected = [
            "edge_runner_jobs_accepted counter - 1",
            "edge_runner_jobs_rejected counter - 8",
            "edge_runner_jobs_finished counter - 8",
            "edge_runner_queue_depth gauge - 1",
            "edge_runner_jobs_running gauge - 1",
            "edge_runner_job_queue_duration_seconds histogram seconds 23",
            "edge_runner_job_run_duration_seconds histogram seconds 23",
            "edge_runner_capsule_refusals counter - 1",
            "edge_runner_evidence_records counter - 1",
            "edge_runner_evidence_fsync_duration_seconds histogram seconds 18",
            "edge_runner_evidence_fsync_batch_records histogram records 14",
            "edge_runner_evidence_failing gauge - 1",
            "edge_runner_trust_root_expiry_timestamp_seconds gauge seconds 1",
            "edge_runner_code_cache_hits counter - 1",
            "edge_runner_code_cache_misses counter - 1",
            "edge_runner_api_peer_refusals counter - 1",
        ];
        assert_eq!(families, expected, "{stdout}");
    }
}
