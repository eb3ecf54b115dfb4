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
    /// The capsule trapped (including a panic or `exit`).
    Trap,
    /// The fuel budget ran out.
    OutOfFuel,
    /// The wall-clock deadline passed.
    Deadline,
    /// The capsule trapped after a memory growth was refused.
    MemoryRefused,
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
            RunStatus::OutOfFuel => "out-of-fuel",
            RunStatus::Deadline => "deadline",
            RunStatus::MemoryRefused => "memory-refused",
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
    /// Memory growth requests refused (each: bytes requested in total).
    pub memory_denials: Vec<u64>,
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
    /// Where the compiled code came from.
    pub code: CodeSource,
    /// Network uses the capsule attempted and was refused (`TcpConnect 10.0.0.1:80`), at most 64.
    pub egress_denied: Vec<String>,
}
