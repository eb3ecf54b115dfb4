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
/// | `compile_time`: CPU time to compile one component (never more than the site's `wall-time-ms` ceiling; the compiler is killed after ten times it plus 5 s of wall-clock time in any case). Sized for Python and JavaScript components (10–20 MB, which carry their interpreter): they took 29.5–40.4 s of CPU in a dev-profile build (Cranelift at opt-level 2 with debug assertions, as the test suite runs it) on a loaded 2-core machine (`benches/polyglot.rs`), so 120 s leaves about 3× there; a release build compiles faster (not yet measured on a quiet machine); a Rust capsule takes under 1 s | 120 s |
/// | `compile_memory_bytes`: address space of the process compiling one component. The same Python and JavaScript components fail to compile in 512 MiB and compile in 768 MiB, so 2 GiB leaves 2.6× or more | 2 GiB |
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
    /// CPU time compiling one component may take, when it is
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
            compile_time: Duration::from_secs(120),
            compile_memory_bytes: 2 << 30,
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
/// | `host_memory_bytes`: host memory a run may make the runner allocate (see below) | 64 MiB |
/// | `http_method_bytes`: a `wasi:http` method or scheme | 32 |
/// | `http_authority_bytes`: a request's authority | 512 |
/// | `http_path_bytes`: a request's path with query | 8 KiB |
/// | `http_field_name_bytes`: a header (field) name | 256 |
/// | `http_field_value_bytes`: a header (field) value | 8 KiB |
/// | `http_fields_bytes`: one field set, all names and values (Wasmtime's own measure) | 64 KiB |
/// | `http_body_chunk_bytes`: one write to an outgoing body; a body buffers one chunk plus the one in flight | 64 KiB |
///
/// The host budget counts what a run has made the runner allocate on its
/// behalf, not what it holds at the moment: releasing an object does not give
/// its bytes back, so the budget bounds what a run can hold at any time.
/// Charged against it: each `wasi:http` field set (512 bytes plus its names
/// and values; a clone again), outgoing request (512 bytes plus its method,
/// scheme, authority and path), outgoing response (512), request options
/// (128), outgoing body (its buffer: two chunks), request sent (64 KiB: its
/// connection and the client's buffers), TCP socket (16 KiB) and
/// opened file or directory (1 KiB). Every other host object is a small
/// fixed-size value, bounded in number by `host_resources`. A value over its
/// per-item limit, or a charge past the budget, stops the run
/// (`host-memory-refused`). Values the guest passes in are copied from its
/// own (bounded) memory for the call and released when it returns.
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
    /// Host memory a run may make the runner allocate, all objects together.
    pub host_memory_bytes: u64,
    /// Longest `wasi:http` method or scheme.
    pub http_method_bytes: usize,
    /// Longest request authority.
    pub http_authority_bytes: usize,
    /// Longest request path with query.
    pub http_path_bytes: usize,
    /// Longest header (field) name.
    pub http_field_name_bytes: usize,
    /// Longest header (field) value.
    pub http_field_value_bytes: usize,
    /// Largest field set, all names and values.
    pub http_fields_bytes: usize,
    /// Largest write to an outgoing body.
    pub http_body_chunk_bytes: usize,
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
            host_memory_bytes: 64 << 20,
            http_method_bytes: 32,
            http_authority_bytes: 512,
            http_path_bytes: 8 << 10,
            http_field_name_bytes: 256,
            http_field_value_bytes: 8 << 10,
            http_fields_bytes: 64 << 10,
            http_body_chunk_bytes: 64 << 10,
        }
    }
}
