//! The host side of the capsule contract: bindings, store state, and the
//! `edge-runner:capsule/host` imports (evidence emission, granted config).

use sha2::{Digest, Sha256};
use wasmtime::ResourceLimiter;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::Grant;
use crate::capsule::Kind;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../capsule-sdk/wit",
        world: "capsule",
        // Calls into the capsule are async so a run can be abandoned while the
        // guest is blocked in a WASI call (see `Sandbox::run`); host imports stay sync.
        exports: { default: async },
    });
}

use bindings::Capsule;
pub(super) use bindings::CapsulePre;
use bindings::edge_runner::capsule::types as wit;

/// The capsule's overall judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every check held.
    Pass,
    /// At least one check did not hold.
    Fail,
    /// The capsule could not decide.
    Error,
}

impl Verdict {
    /// The name used in evidence.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Error => "error",
        }
    }
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Minor.
    Low,
    /// Should be looked at.
    Medium,
    /// Should be fixed soon.
    High,
    /// Must be fixed now.
    Critical,
}

impl Severity {
    /// The name used in evidence.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// One observation a capsule reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Machine-readable code.
    pub code: String,
    /// How much it matters.
    pub severity: Severity,
    /// Explanation.
    pub message: String,
}

/// What a capsule returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The judgement.
    pub verdict: Verdict,
    /// One line.
    pub summary: String,
    /// Observations.
    pub findings: Vec<Finding>,
}

/// An evidence item a capsule emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceItem {
    /// The capsule's label.
    pub label: String,
    /// Its media type.
    pub media_type: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the bytes.
    pub sha256: [u8; 32],
    /// The bytes, when small enough to keep inline.
    pub inline: Option<Vec<u8>>,
}

pub(super) fn kind_from_wit(kind: wit::Kind) -> Kind {
    match kind {
        wit::Kind::Test => Kind::Test,
        wit::Kind::Reproduce => Kind::Reproduce,
        wit::Kind::Remediate => Kind::Remediate,
    }
}

pub(super) fn outcome_from_wit(o: wit::Outcome) -> Outcome {
    Outcome {
        verdict: match o.verdict {
            wit::Verdict::Pass => Verdict::Pass,
            wit::Verdict::Fail => Verdict::Fail,
            wit::Verdict::Error => Verdict::Error,
        },
        summary: o.summary,
        findings: o
            .findings
            .into_iter()
            .map(|f| Finding {
                code: f.code,
                severity: match f.severity {
                    wit::Severity::Info => Severity::Info,
                    wit::Severity::Low => Severity::Low,
                    wit::Severity::Medium => Severity::Medium,
                    wit::Severity::High => Severity::High,
                    wit::Severity::Critical => Severity::Critical,
                },
                message: f.message,
            })
            .collect(),
    }
}

/// Tracks linear memory across all of a store's memories and refuses growth past the grant.
pub(super) struct MemoryLimiter {
    max: u64,
    total: u64,
    pub peak: u64,
    /// The first `denials_listed` refused growths (bytes asked for in total, each).
    pub denials: Vec<u64>,
    /// Every refused growth, counted.
    pub denials_total: u64,
    /// SHA-256 over the canonical CBOR encoding of every refused growth, in order.
    pub denials_digest: Sha256,
    denials_listed: usize,
    table_elements: usize,
}

impl MemoryLimiter {
    fn refuse(&mut self, after: u64) {
        self.denials_total += 1;
        if let Ok(encoded) = crate::cbor::encode(&ciborium::Value::Integer(after.into())) {
            self.denials_digest.update(encoded);
        }
        if self.denials.len() < self.denials_listed {
            self.denials.push(after);
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let after = self
            .total
            .saturating_add(desired.saturating_sub(current) as u64);
        if after > self.max {
            self.refuse(after);
            return Ok(false);
        }
        self.total = after;
        self.peak = self.peak.max(after);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements)
    }
}

/// Per-run store state.
pub(super) struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    http: wasmtime_wasi_http::WasiHttpCtx,
    hooks: super::http::EgressHooks,
    pub network: super::network::NetworkPolicy,
    pub files: super::files::FileBudget,
    /// Set in deterministic runs: fixed file timestamps and sorted listings.
    pub fixed_files: Option<super::files::FixedFiles>,
    pub limiter: MemoryLimiter,
    /// Host memory the run has made the runner allocate, against its budget.
    pub host_budget: super::host_budget::HostBudget,
    pub evidence: Vec<EvidenceItem>,
    pub evidence_refused: u32,
    /// Proposal items refused for size (size, SHA-256): refused whole, never kept as a digest.
    pub proposals_refused: Vec<(u64, [u8; 32])>,
    evidence_bytes: u64,
    max_items: u32,
    max_bytes: u64,
    inline_bytes: usize,
    config: std::collections::BTreeMap<String, String>,
}

impl State {
    pub fn new(
        wasi: WasiCtx,
        table: ResourceTable,
        grant: &Grant,
        hooks: super::http::EgressHooks,
        network: super::network::NetworkPolicy,
        files: super::files::FileBudget,
    ) -> Self {
        Self {
            wasi,
            table,
            http: {
                let mut http = wasmtime_wasi_http::WasiHttpCtx::new();
                http.set_field_size_limit(grant.quotas.http_fields_bytes);
                http
            },
            host_budget: super::host_budget::HostBudget::new(grant.quotas),
            hooks,
            network,
            files,
            fixed_files: grant
                .determinism
                .as_ref()
                .map(|d| super::files::FixedFiles::new(d.wall_clock_secs)),
            limiter: MemoryLimiter {
                max: grant.memory_bytes,
                total: 0,
                peak: 0,
                denials: Vec::new(),
                denials_total: 0,
                denials_digest: Sha256::new(),
                denials_listed: grant.quotas.memory_denials_listed,
                table_elements: grant.quotas.table_elements,
            },
            evidence: Vec::new(),
            evidence_refused: 0,
            proposals_refused: Vec::new(),
            evidence_bytes: 0,
            max_items: grant.quotas.evidence_items,
            max_bytes: grant.quotas.evidence_bytes,
            inline_bytes: grant.quotas.evidence_inline_bytes,
            config: grant.config.clone(),
        }
    }
}

impl wasmtime_wasi_http::WasiHttpView for State {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::edge_runner::capsule::types::Host for State {}

impl bindings::edge_runner::capsule::host::Host for State {
    fn emit_evidence(
        &mut self,
        label: String,
        media_type: String,
        data: Vec<u8>,
    ) -> Result<u32, String> {
        let size = data.len() as u64;
        let proposal = media_type == crate::remediation::PROPOSAL_MEDIA_TYPE;
        if proposal && data.len() > crate::remediation::MAX_PROPOSAL_BYTES {
            // Refused whole: a proposal is never kept as a digest only.
            self.evidence_refused += 1;
            self.proposals_refused
                .push((size, Sha256::digest(&data).into()));
            return Err(format!(
                "proposal is {size} bytes, over the {}-byte maximum; it is refused whole — split the change",
                crate::remediation::MAX_PROPOSAL_BYTES
            ));
        }
        if self.evidence.len() as u32 >= self.max_items {
            self.evidence_refused += 1;
            return Err(format!(
                "evidence quota spent: {} items per run",
                self.max_items
            ));
        }
        if self.evidence_bytes + size > self.max_bytes {
            self.evidence_refused += 1;
            return Err(format!(
                "evidence quota spent: {} bytes per run",
                self.max_bytes
            ));
        }
        if let Err(why) = check_label(&label).and_then(|()| check_media_type(&media_type)) {
            self.evidence_refused += 1;
            return Err(why);
        }
        self.evidence_bytes += size;
        let index = self.evidence.len() as u32;
        self.evidence.push(EvidenceItem {
            label,
            media_type,
            size,
            sha256: Sha256::digest(&data).into(),
            // A proposal is kept whole (bounded above), whatever the inline cap.
            inline: (proposal || data.len() <= self.inline_bytes).then_some(data),
        });
        Ok(index)
    }

    fn config(&mut self, key: String) -> Option<String> {
        // Only granted keys have values; every other key reads as "not granted".
        self.config.get(&key).cloned()
    }
}

/// Longest evidence label and media type.
pub(super) const MAX_LABEL_BYTES: usize = 256;

/// A label is 1 to 256 bytes of printable text: no control, bidirectional
/// formatting or line separator characters, which could forge report lines.
fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() || label.len() > MAX_LABEL_BYTES {
        return Err(format!(
            "evidence label must be 1 to {MAX_LABEL_BYTES} bytes (it is {})",
            label.len()
        ));
    }
    if let Some(c) = label.chars().find(|&c| {
        c.is_control()
            || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }) {
        return Err(format!(
            "evidence label contains the control or formatting character U+{:04X}; labels are printable text",
            u32::from(c)
        ));
    }
    Ok(())
}

/// A media type is `type/subtype`, each 1 to 127 characters of RFC 6838's
/// restricted-name characters (letters, digits, ``!#$&-^_.+``), 256 bytes at most.
fn check_media_type(media_type: &str) -> Result<(), String> {
    let name = |s: &str| {
        (1..=127).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match media_type.split_once('/') {
        Some((t, sub)) if media_type.len() <= MAX_LABEL_BYTES && name(t) && name(sub) => Ok(()),
        _ => Err(format!(
            "evidence media type must be `type/subtype` (RFC 6838 names, at most {MAX_LABEL_BYTES} bytes), e.g. `application/json`; got {} bytes",
            media_type.len()
        )),
    }
}

pub(super) fn add_to_linker(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    Capsule::add_to_linker::<State, HasSelf<State>>(linker, |s| s)
}
