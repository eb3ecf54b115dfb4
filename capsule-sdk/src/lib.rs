//! Write Edge Runner capsules: one function, one attribute.
//!
//! A capsule is a WebAssembly component that the Edge Runner verifies against
//! a trust root and then runs in a sandbox that grants nothing by default.
//! This crate hides the component bindings: an author writes one function,
//! marks it with the attribute for its kind, and gets typed access to the
//! input, the configuration the runner granted, and the evidence record.
//!
//! ```no_run
//! use capsule_sdk::{Context, Outcome};
//!
//! #[capsule_sdk::test]
//! fn greeting_is_polite(cx: &mut Context) -> Result<Outcome, capsule_sdk::Error> {
//!     let text = cx.input_str()?;
//!     cx.evidence("input", "text/plain", text.as_bytes())?;
//!     Ok(if text.contains("please") {
//!         Outcome::pass("greeting is polite")
//!     } else {
//!         Outcome::fail("greeting lacks `please`")
//!     })
//! }
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`, then sign
//! and run it with the `edge-runner` CLI.
//!
//! This crate owns the guest side of the contract in `wit/capsule.wit`; it
//! must never grant itself anything: every capability comes from the runner.

#![warn(missing_docs)]

use std::fmt;

pub mod http;
#[cfg(doctest)]
mod misuse;

pub use capsule_sdk_macros::{remediate, reproduce, test};

// The generated bindings name their runtime by absolute path, from this crate too.
extern crate self as capsule_sdk;

#[doc(hidden)]
#[allow(unsafe_code, missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "capsule",
        pub_export_macro: true,
        export_macro_name: "export_capsule",
        default_bindings_module: "::capsule_sdk::__private::bindings",
        runtime_path: "::capsule_sdk::__private::wit_bindgen::rt",
    });
}

use bindings::edge_runner::capsule::{host, types as wit};

/// What a capsule is for. It must match the `kind` in the signed manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
///
/// ```
/// let kind = capsule_sdk::Kind::Remediate;
/// assert_ne!(kind, capsule_sdk::Kind::Test);
/// ```
pub enum Kind {
    /// Checks a system; reads only.
    Test,
    /// Replays a failure deterministically.
    Reproduce,
    /// Prepares a fix as a proposal; never applies it.
    Remediate,
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
///
/// ```
/// let f = capsule_sdk::Finding::new("disk.full", capsule_sdk::Severity::Critical, "/var is 99% full");
/// assert!(f.severity > capsule_sdk::Severity::High);
/// ```
pub enum Severity {
    /// Worth knowing; no action needed.
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

/// The capsule's overall judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
///
/// ```
/// let o = capsule_sdk::Outcome::fail("2 checks failed");
/// assert_eq!(o.verdict, capsule_sdk::Verdict::Fail);
/// ```
pub enum Verdict {
    /// Every check held.
    Pass,
    /// At least one check did not hold.
    Fail,
    /// The capsule could not decide.
    Error,
}

/// One observation a capsule reports.
///
/// ```
/// use capsule_sdk::{Finding, Severity};
/// let f = Finding::new("disk.usage", Severity::High, "/var is 97% full");
/// assert_eq!(f.code, "disk.usage");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Stable, machine-readable identifier, e.g. `http.status`.
    pub code: String,
    /// How much it matters.
    pub severity: Severity,
    /// Human-readable explanation.
    pub message: String,
}

impl Finding {
    /// Creates a finding.
    ///
    /// ```
    /// let f = capsule_sdk::Finding::new("tls.expired", capsule_sdk::Severity::High, "certificate expired 2 days ago");
    /// assert_eq!(f.code, "tls.expired");
    /// ```
    pub fn new(code: impl Into<String>, severity: Severity, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            severity,
            message: message.into(),
        }
    }
}

/// What a run produced: a verdict, a one-line summary and findings.
///
/// ```
/// use capsule_sdk::{Finding, Outcome, Severity, Verdict};
/// let outcome = Outcome::fail("1 of 3 endpoints down")
///     .with_finding(Finding::new("http.status", Severity::High, "GET /health returned 503"));
/// assert_eq!(outcome.verdict, Verdict::Fail);
/// assert_eq!(outcome.findings.len(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The judgement.
    pub verdict: Verdict,
    /// One line for humans.
    pub summary: String,
    /// Observations, in the order they were made.
    pub findings: Vec<Finding>,
}

impl Outcome {
    /// An outcome with the given verdict and summary and no findings.
    ///
    /// ```
    /// let o = capsule_sdk::Outcome::new(capsule_sdk::Verdict::Error, "no input");
    /// assert!(o.findings.is_empty());
    /// ```
    pub fn new(verdict: Verdict, summary: impl Into<String>) -> Self {
        Self {
            verdict,
            summary: summary.into(),
            findings: Vec::new(),
        }
    }

    /// Every check held.
    ///
    /// ```
    /// let o = capsule_sdk::Outcome::pass("all 3 checks hold");
    /// assert_eq!(o.verdict, capsule_sdk::Verdict::Pass);
    /// ```
    pub fn pass(summary: impl Into<String>) -> Self {
        Self::new(Verdict::Pass, summary)
    }

    /// At least one check did not hold.
    ///
    /// ```
    /// let o = capsule_sdk::Outcome::fail("status is 503");
    /// assert_eq!(o.verdict, capsule_sdk::Verdict::Fail);
    /// ```
    pub fn fail(summary: impl Into<String>) -> Self {
        Self::new(Verdict::Fail, summary)
    }

    /// The capsule could not decide.
    ///
    /// ```
    /// let o = capsule_sdk::Outcome::error("service unreachable");
    /// assert_eq!(o.verdict, capsule_sdk::Verdict::Error);
    /// ```
    pub fn error(summary: impl Into<String>) -> Self {
        Self::new(Verdict::Error, summary)
    }

    /// Adds a finding.
    #[must_use]
    ///
    /// ```
    /// use capsule_sdk::{Finding, Outcome, Severity};
    /// let o = Outcome::fail("1 check failed").with_finding(Finding::new("status", Severity::High, "503"));
    /// assert_eq!(o.findings.len(), 1);
    /// ```
    pub fn with_finding(mut self, finding: Finding) -> Self {
        self.findings.push(finding);
        self
    }
}

/// Why a capsule could not do its work; becomes an `error` verdict.
///
/// ```
/// let err = capsule_sdk::Error::new("input is not JSON");
/// assert_eq!(err.to_string(), "input is not JSON");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    /// An error with a message for the operator.
    ///
    /// ```
    /// let e = capsule_sdk::Error::new("`url` is missing from the input");
    /// assert_eq!(e.to_string(), "`url` is missing from the input");
    /// ```
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// What the runner hands a capsule: its input, its granted configuration,
/// and the run's evidence record.
///
/// ```no_run
/// #[capsule_sdk::test]
/// fn check(cx: &mut capsule_sdk::Context) -> capsule_sdk::Outcome {
///     let url = cx.config("target-url").unwrap_or_default();
///     capsule_sdk::Outcome::pass(format!("configured for {url}"))
/// }
/// ```
#[derive(Debug)]
pub struct Context {
    kind: Kind,
    input: Vec<u8>,
}

impl Context {
    /// The kind this capsule was built as.
    ///
    /// ```no_run
    /// # fn f(cx: &capsule_sdk::Context) {
    /// if cx.kind() == capsule_sdk::Kind::Reproduce { /* the runner fixed clock and randomness */ }
    /// # }
    /// ```
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The raw input bytes the operator supplied (empty when none).
    ///
    /// ```no_run
    /// # fn f(cx: &capsule_sdk::Context) {
    /// let size = cx.input().len();
    /// # }
    /// ```
    pub fn input(&self) -> &[u8] {
        &self.input
    }

    /// The input as UTF-8 text.
    ///
    /// ```no_run
    /// # fn f(cx: &capsule_sdk::Context) -> Result<(), capsule_sdk::Error> {
    /// let text = cx.input_str()?;
    /// # Ok(()) }
    /// ```
    pub fn input_str(&self) -> Result<&str, Error> {
        std::str::from_utf8(&self.input)
            .map_err(|e| Error::new(format!("input is not UTF-8 text: {e}")))
    }

    /// The input parsed as JSON into `T`.
    ///
    /// ```no_run
    /// # fn f(cx: &capsule_sdk::Context) -> Result<(), capsule_sdk::Error> {
    /// #[derive(serde::Deserialize)]
    /// struct Input { url: String }
    /// let input: Input = cx.input_json()?;
    /// # Ok(()) }
    /// ```
    pub fn input_json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.input)
            .map_err(|e| Error::new(format!("input is not the expected JSON: {e}")))
    }

    /// The value of a configuration key the runner granted, if any.
    ///
    /// ```no_run
    /// # fn f(cx: &capsule_sdk::Context) {
    /// let url = cx.config("target-url").unwrap_or_else(|| "http://localhost".into());
    /// # }
    /// ```
    pub fn config(&self, key: &str) -> Option<String> {
        host::config(key)
    }

    /// Appends an item to this run's evidence record and returns its index.
    ///
    /// Fails when the run's evidence quota is spent.
    ///
    /// ```no_run
    /// # fn f(cx: &capsule_sdk::Context) -> Result<(), capsule_sdk::Error> {
    /// cx.evidence("response", "application/json", br#"{"status":"up"}"#)?;
    /// # Ok(()) }
    /// ```
    pub fn evidence(&self, label: &str, media_type: &str, data: &[u8]) -> Result<u32, Error> {
        host::emit_evidence(label, media_type, data)
            .map_err(|e| Error::new(format!("evidence `{label}` was not recorded: {e}")))
    }
}

/// A change a `remediate` capsule proposes. It is recorded as evidence for the
/// humans who must approve it; the capsule never applies it.
///
/// ```no_run
/// #[capsule_sdk::remediate]
/// fn fix(cx: &mut capsule_sdk::Context) -> Result<capsule_sdk::Outcome, capsule_sdk::Error> {
///     cx.propose(&capsule_sdk::Proposal {
///         target: "/config/app.conf".into(),
///         diff: "--- a/app.conf\n+++ b/app.conf\n@@ -1 +1 @@\n-tls = off\n+tls = on\n".into(),
///         rollback: "--- a/app.conf\n+++ b/app.conf\n@@ -1 +1 @@\n-tls = on\n+tls = off\n".into(),
///         rationale: "TLS must be on (policy NET-4)".into(),
///     })?;
///     Ok(capsule_sdk::Outcome::fail("tls is off; a fix is proposed"))
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Proposal {
    /// What the change applies to, e.g. a file path as the capsule sees it.
    pub target: String,
    /// The change as a unified diff.
    pub diff: String,
    /// The unified diff that undoes it.
    pub rollback: String,
    /// Why, for the approvers.
    pub rationale: String,
}

/// Media type of a proposal in the evidence record.
///
/// ```
/// assert!(capsule_sdk::PROPOSAL_MEDIA_TYPE.ends_with("+json"));
/// ```
pub const PROPOSAL_MEDIA_TYPE: &str = "application/vnd.edge-runner.proposal+json";

/// An exact HTTP request a `remediate` capsule proposes (the runner sends it,
/// byte for byte, only after the humans its tier needs have approved it).
///
/// ```
/// let r = capsule_sdk::HttpRequest::new("POST", "https://api.example.com/flags/checkout")
///     .header("content-type", "application/json")
///     .body(r#"{"enabled":false}"#);
/// assert_eq!(r.method, "POST");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HttpRequest {
    /// Method, upper case.
    pub method: String,
    /// Absolute URL; its destination must be in the capsule's egress grant.
    pub url: String,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// Body (text).
    pub body: String,
}

impl HttpRequest {
    /// A request with no headers and an empty body.
    ///
    /// ```
    /// let r = capsule_sdk::HttpRequest::new("delete", "https://api.example.com/cache");
    /// assert_eq!(r.method, "DELETE");
    /// ```
    pub fn new(method: &str, url: &str) -> Self {
        Self {
            method: method.to_ascii_uppercase(),
            url: url.to_string(),
            headers: Vec::new(),
            body: String::new(),
        }
    }

    /// Adds a header.
    ///
    /// ```
    /// let r = capsule_sdk::HttpRequest::new("GET", "https://x.example.com/").header("accept", "text/plain");
    /// assert_eq!(r.headers.len(), 1);
    /// ```
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body.
    ///
    /// ```
    /// let r = capsule_sdk::HttpRequest::new("PUT", "https://x.example.com/a").body("on");
    /// assert_eq!(r.body, "on");
    /// ```
    pub fn body(mut self, body: &str) -> Self {
        self.body = body.to_string();
        self
    }
}

/// An HTTP change a `remediate` capsule proposes: the request, and the request
/// that undoes it (`None`: irreversible, which the runner tiers change-control).
///
/// ```no_run
/// # fn f(cx: &capsule_sdk::Context) -> Result<(), capsule_sdk::Error> {
/// use capsule_sdk::{HttpProposal, HttpRequest};
/// cx.propose_http(&HttpProposal {
///     http: HttpRequest::new("PUT", "https://api.example.com/flags/checkout").body("off"),
///     http_rollback: Some(HttpRequest::new("PUT", "https://api.example.com/flags/checkout").body("on")),
///     rationale: "checkout errors above 5%: turn the new flow off".into(),
/// })?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HttpProposal {
    /// The request.
    pub http: HttpRequest,
    /// The request that undoes it.
    pub http_rollback: Option<HttpRequest>,
    /// Why, for the approvers.
    pub rationale: String,
}

impl Context {
    /// Records an HTTP `proposal` in this run's evidence for approval; returns its evidence index.
    ///
    /// Only a `remediate` capsule may propose; from any other kind this is an error.
    ///
    /// ```no_run
    /// # fn f(cx: &capsule_sdk::Context, p: &capsule_sdk::HttpProposal) -> Result<(), capsule_sdk::Error> {
    /// let index = cx.propose_http(p)?;
    /// # Ok(()) }
    /// ```
    pub fn propose_http(&self, proposal: &HttpProposal) -> Result<u32, Error> {
        if self.kind != Kind::Remediate {
            return Err(Error::new(
                "only a `remediate` capsule may propose changes; mark the function #[capsule_sdk::remediate]",
            ));
        }
        let json = serde_json::to_vec(proposal)
            .map_err(|e| Error::new(format!("encoding the proposal: {e}")))?;
        self.evidence("proposal", PROPOSAL_MEDIA_TYPE, &json)
    }

    /// Records `proposal` in this run's evidence for approval; returns its evidence index.
    ///
    /// Only a `remediate` capsule may propose; from any other kind this is an error.
    ///
    /// ```no_run
    /// # fn f(cx: &capsule_sdk::Context, p: &capsule_sdk::Proposal) -> Result<(), capsule_sdk::Error> {
    /// let index = cx.propose(p)?;
    /// # Ok(()) }
    /// ```
    pub fn propose(&self, proposal: &Proposal) -> Result<u32, Error> {
        if self.kind != Kind::Remediate {
            return Err(Error::new(
                "only a `remediate` capsule may propose changes; mark the function #[capsule_sdk::remediate]",
            ));
        }
        let json = serde_json::to_vec(proposal)
            .map_err(|e| Error::new(format!("encoding the proposal: {e}")))?;
        self.evidence("proposal", PROPOSAL_MEDIA_TYPE, &json)
    }
}

/// Converts what an entry point returns into an [`Outcome`].
///
/// ```
/// use capsule_sdk::{IntoOutcome, Outcome, Verdict};
/// let r: Result<Outcome, String> = Err("boom".into());
/// assert_eq!(r.into_outcome().verdict, Verdict::Error);
/// ```
pub trait IntoOutcome {
    /// Performs the conversion; errors become an `error` verdict.
    fn into_outcome(self) -> Outcome;
}

impl IntoOutcome for Outcome {
    fn into_outcome(self) -> Outcome {
        self
    }
}

impl<E: fmt::Display> IntoOutcome for Result<Outcome, E> {
    fn into_outcome(self) -> Outcome {
        self.unwrap_or_else(|e| Outcome::error(e.to_string()))
    }
}

/// Glue for the attribute macros. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use super::bindings::Guest;
    pub use super::bindings::edge_runner::capsule::types::Kind as WitKind;
    pub use super::bindings::edge_runner::capsule::types::Outcome as WitOutcome;
    pub use super::bindings::export_capsule;
    pub use wit_bindgen;

    pub use crate::bindings;

    use super::{Context, IntoOutcome, Kind};

    /// Runs the author's function and converts its result for the runner.
    pub fn run_entry<R: IntoOutcome>(
        kind: Kind,
        input: Vec<u8>,
        entry: fn(&mut Context) -> R,
    ) -> WitOutcome {
        let mut cx = Context { kind, input };
        super::to_wit(entry(&mut cx).into_outcome())
    }
}

fn to_wit(outcome: Outcome) -> wit::Outcome {
    wit::Outcome {
        verdict: match outcome.verdict {
            Verdict::Pass => wit::Verdict::Pass,
            Verdict::Fail => wit::Verdict::Fail,
            Verdict::Error => wit::Verdict::Error,
        },
        summary: outcome.summary,
        findings: outcome
            .findings
            .into_iter()
            .map(|f| wit::Finding {
                code: f.code,
                severity: match f.severity {
                    Severity::Info => wit::Severity::Info,
                    Severity::Low => wit::Severity::Low,
                    Severity::Medium => wit::Severity::Medium,
                    Severity::High => wit::Severity::High,
                    Severity::Critical => wit::Severity::Critical,
                },
                message: f.message,
            })
            .collect(),
    }
}
