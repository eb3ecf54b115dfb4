//! Edge Runner: runs signed WebAssembly capsules inside a customer's enclave
//! and leaves a signed, hash-chained evidence record of every step.
//!
//! The crate is laid out along the path a capsule takes:
//!
//! 1. [`capsule`] parses a signed capsule file and its manifest (`RawCapsule`
//!    → `CheckedCapsule`).
//! 2. [`trust`] checks the signatures against a trust root and is the only
//!    place that can build a [`trust::VerifiedCapsule`].
//! 3. [`sandbox`] runs a `&VerifiedCapsule` under Wasmtime with nothing
//!    granted but what the effective grant names.
//! 4. [`evidence`] appends a signed record for every step and verifies
//!    chains offline.
//!
//! [`keys`], [`cbor`] and [`fsio`] are the shared primitives (Ed25519 keys,
//! deterministic CBOR, bounded file reads and atomic writes); `cli` is the
//! command-line front end, behind the default `cli` feature.

// One `unsafe` block in the whole crate: loading authenticated compiled code
// (`sandbox::cache`), marked with `#[expect(unsafe_code)]` and a SAFETY comment.
#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod audit;
pub mod capsule;
pub mod cbor;
#[cfg(feature = "cli")]
pub mod cli;
mod cose;
pub mod custody;
#[cfg(test)]
mod doc_examples;
pub mod evidence;
pub mod fleet;
pub mod fsio;
pub mod governance;
pub mod keys;
pub mod names;
pub mod remediation;
pub mod rollback;
pub mod sandbox;
pub mod serve;
pub mod session;
pub mod site;
mod text;
pub mod timestamp;
pub mod trust;

/// This crate's version, recorded in evidence so an auditor knows which runner wrote a record.
pub const RUNNER_VERSION: &str = env!("CARGO_PKG_VERSION");
