//! The runner's limits: every bounded resource a run can use, with its
//! default stated where it is defined.
//!
//! Owns only numbers. What one capsule gets out of them is decided by
//! [`super::Grant::compute`]; enforcing them is the engine's job.

use std::time::Duration;

/// Every bounded resource a run can use: the runner's ceiling for what a
/// capsule may be granted, and the default when its manifest asks for nothing.
///
/// | limit | default |
/// |---|---|
/// | `memory_bytes` (all linear memories together) | 64 MiB (ceiling 1 GiB) |
/// | `fuel` (≈ WebAssembly instructions) | 1 000 000 000 (ceiling 20 000 000 000) |
/// | `wall_time` | 10 s (ceiling 5 min) |
/// | `compile_time`: CPU and wall-clock time to compile one component (never more than the site's `wall-time-ms` ceiling) | 30 s |
/// | `compile_memory_bytes`: address space of the process compiling one component | 1 GiB |
/// | `quotas`: output, evidence and tables, the same for every run | see [`Quotas`] |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Default memory when the manifest asks for none.
    pub default_memory_bytes: u64,
    /// Most memory any capsule may be granted.
    pub max_memory_bytes: u64,
    /// Default fuel.
    pub default_fuel: u64,
    /// Most fuel any capsule may be granted.
    pub max_fuel: u64,
    /// Default wall-clock budget.
    pub default_wall_time: Duration,
    /// Longest wall-clock budget any capsule may be granted.
    pub max_wall_time: Duration,
    /// CPU and wall-clock time compiling one component may take, when it is
    /// compiled in a child ([`super::Compiler::Child`]); the site's wall-time
    /// ceiling, when lower, bounds it.
    pub compile_time: Duration,
    /// Address space of the child compiling one component.
    pub compile_memory_bytes: u64,
    /// What every run may write and hold, whatever its manifest asks.
    pub quotas: Quotas,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            default_memory_bytes: 64 << 20,
            max_memory_bytes: 1 << 30,
            default_fuel: 1_000_000_000,
            max_fuel: 20_000_000_000,
            default_wall_time: Duration::from_secs(10),
            max_wall_time: Duration::from_secs(300),
            compile_time: Duration::from_secs(30),
            compile_memory_bytes: 1 << 30,
            quotas: Quotas::default(),
        }
    }
}

/// What every run may write and hold: no manifest asks for these and no site
/// policy changes them, so a [`super::Grant`] carries the runner's as they are.
///
/// | quota | default |
/// |---|---|
/// | `stdout_bytes`, `stderr_bytes` kept (the rest is counted and hashed, not kept) | 64 KiB each |
/// | `evidence_items` per run | 64 |
/// | `evidence_bytes` per run, all items together | 1 MiB |
/// | `evidence_inline_bytes` (items up to this size are stored whole in the record) | 4 KiB |
/// | `table_elements` per table | 100 000 |
/// | `summary_bytes` of an outcome's summary kept in the record | 4 KiB |
/// | `findings` kept in the record | 256 |
/// | `finding_code_bytes` of each finding's code kept | 128 |
/// | `finding_message_bytes` of each finding's message kept | 2 KiB |
/// | `error_bytes` of a failed run's error message kept | 16 KiB |
/// | `denials_listed`: distinct refused network uses listed (all are counted) | 256 |
/// | `denial_bytes` of each listed refused network use | 256 |
/// | `memory_denials_listed`: refused memory growths listed (all are counted) | 64 |
/// | `file_write_bytes`: bytes a run may write to granted files, all files together | 64 MiB |
/// | `file_size_bytes`: largest size a write or `set-size` may give a file | 64 MiB |
/// | `host_resources`: host objects (streams, descriptors, sockets, timers, `wasi:http` values) a run may hold at once | 10 000 |
///
/// A value over its limit is cut, and the record keeps its size and SHA-256
/// and marks it truncated (`docs/evidence-format.md` §3). Evidence labels and
/// media types are refused over 256 bytes when emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Bytes of stdout kept.
    pub stdout_bytes: usize,
    /// Bytes of stderr kept.
    pub stderr_bytes: usize,
    /// Evidence items a run may emit.
    pub evidence_items: u32,
    /// Total evidence bytes a run may emit.
    pub evidence_bytes: u64,
    /// Items up to this size are stored whole in the evidence record.
    pub evidence_inline_bytes: usize,
    /// Elements per table.
    pub table_elements: usize,
    /// Bytes of an outcome's summary kept in the record.
    pub summary_bytes: usize,
    /// Findings kept in the record.
    pub findings: usize,
    /// Bytes of each finding's code kept.
    pub finding_code_bytes: usize,
    /// Bytes of each finding's message kept.
    pub finding_message_bytes: usize,
    /// Bytes of a failed run's error message kept.
    pub error_bytes: usize,
    /// Distinct refused network uses listed; every refusal is counted.
    pub denials_listed: usize,
    /// Bytes of each listed refused network use.
    pub denial_bytes: usize,
    /// Refused memory growths listed; every refusal is counted.
    pub memory_denials_listed: usize,
    /// Bytes a run may write to granted files, all files together.
    pub file_write_bytes: u64,
    /// Largest size a write or `set-size` may give a file (no sparse giants).
    pub file_size_bytes: u64,
    /// Host objects a run may hold at once (entries of its resource table).
    pub host_resources: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            stdout_bytes: 64 << 10,
            stderr_bytes: 64 << 10,
            evidence_items: 64,
            evidence_bytes: 1 << 20,
            evidence_inline_bytes: 4 << 10,
            table_elements: 100_000,
            summary_bytes: 4 << 10,
            findings: 256,
            finding_code_bytes: 128,
            finding_message_bytes: 2 << 10,
            error_bytes: 16 << 10,
            denials_listed: 256,
            denial_bytes: 256,
            memory_denials_listed: 64,
            file_write_bytes: 64 << 20,
            file_size_bytes: 64 << 20,
            host_resources: 10_000,
        }
    }
}
