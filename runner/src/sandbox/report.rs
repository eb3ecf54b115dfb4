//! What a run produced: how it ended and every resource it used.
//!
//! Owns the result types the engine returns and the caller records as
//! evidence. Plain data: nothing here runs, grants or writes anything.

use std::time::Duration;

use super::{CodeSource, EvidenceItem, Outcome, StreamSummary};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// The capsule returned an outcome.
    Completed,
    /// The capsule trapped (including a panic).
    Trap,
    /// The capsule called `wasi:cli/exit`; the code is in [`RunReport::exit_code`].
    Exited,
    /// The fuel budget ran out.
    OutOfFuel,
    /// The wall-clock deadline passed.
    Deadline,
    /// The runner stopped the run: the daemon's job was cancelled, or it shut down.
    Interrupted,
    /// The capsule trapped after a memory growth was refused.
    MemoryRefused,
    /// The capsule asked the runner to hold more host memory than its
    /// budget, or a value over its per-item limit ([`super::Quotas`]).
    HostMemoryRefused,
    /// The code's declared kind differs from the signed manifest's.
    KindMismatch,
    /// The capsule returned an outcome, but wrote more to stdout or stderr
    /// than its grant keeps; the excess was counted and hashed, not kept.
    OutputOverflow,
}

impl RunStatus {
    /// The name used in evidence.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Completed => "completed",
            RunStatus::Trap => "trap",
            RunStatus::Exited => "exited",
            RunStatus::OutOfFuel => "out-of-fuel",
            RunStatus::Deadline => "deadline",
            RunStatus::Interrupted => "interrupted",
            RunStatus::MemoryRefused => "memory-refused",
            RunStatus::HostMemoryRefused => "host-memory-refused",
            RunStatus::KindMismatch => "kind-mismatch",
            RunStatus::OutputOverflow => "output-overflow",
        }
    }
}

/// Everything a run produced and used.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// How it ended.
    pub status: RunStatus,
    /// The capsule's outcome, when it returned one.
    pub outcome: Option<Outcome>,
    /// What went wrong, when it did not complete.
    pub error: Option<String>,
    /// Fuel consumed.
    pub fuel_used: u64,
    /// Highest total linear memory reached, in bytes.
    pub peak_memory_bytes: u64,
    /// Host memory charged to the run's host budget, in bytes.
    pub host_memory_bytes: u64,
    /// Memory growth requests refused (each: bytes requested in total), the
    /// first [`super::Quotas::memory_denials_listed`] of them.
    pub memory_denials: Vec<u64>,
    /// Memory growth requests refused in all.
    pub memory_denials_total: u64,
    /// SHA-256 over the canonical CBOR encodings of every refused request, listed or not.
    pub memory_denials_sha256: [u8; 32],
    /// Wall-clock time from instantiation to return.
    pub wall_time: Duration,
    /// Captured stdout.
    pub stdout: StreamSummary,
    /// Captured stderr.
    pub stderr: StreamSummary,
    /// Evidence items the capsule emitted.
    pub evidence: Vec<EvidenceItem>,
    /// Evidence emissions refused because the quota was spent.
    pub evidence_refused: u32,
    /// Proposal items refused whole for size: (size, SHA-256) each.
    pub proposals_refused: Vec<(u64, [u8; 32])>,
    /// Where the compiled code came from.
    pub code: CodeSource,
    /// Time to make the code ready: compiling (or loading it from the cache) and linking.
    pub prepare_time: Duration,
    /// Wall-clock time compiling took, when the code was compiled for this run.
    pub compile_time: Option<Duration>,
    /// Network uses the capsule attempted and was refused (`TcpConnect 10.0.0.1:80`).
    pub egress_denied: Refusals,
    /// Bytes written to granted files, all files together.
    pub files_written_bytes: u64,
    /// File operations refused: symlink creation, writes past the quota or the file size limit.
    pub files_refused: Refusals,
    /// The code the capsule passed to `wasi:cli/exit`, when it exited that way.
    pub exit_code: Option<i32>,
}

/// Refused uses of one kind: every one counted, each distinct one listed up to a limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refusals {
    /// How many were refused in all.
    pub total: u64,
    /// Each distinct one, in the order first seen, up to [`super::Quotas::denials_listed`],
    /// each cut to [`super::Quotas::denial_bytes`].
    pub listed: Vec<String>,
}

impl Refusals {
    /// Counts one refusal of `what`, and lists it if it is new and there is room.
    pub(super) fn note(&mut self, what: &str, quotas: &super::Quotas) {
        self.total += 1;
        let what = cut(what, quotas.denial_bytes);
        if self.listed.len() < quotas.denials_listed && !self.listed.iter().any(|l| l == what) {
            self.listed.push(what.to_string());
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
