//! The example capsules, compiled to `wasm32-wasip2` components at build time.
//!
//! Owns nothing but the embedded bytes; the runner and the tests decide what
//! to do with them. `build.rs` explains how they are produced.

/// One compiled capsule and the manifest its author wrote.
#[derive(Debug, Clone, Copy)]
pub struct Capsule {
    /// The crate's package name, e.g. `json-assert`.
    pub package: &'static str,
    /// The component, unsigned, exactly as `cargo build` produced it.
    pub component: &'static [u8],
    /// The text of the crate's `capsule.toml`.
    pub manifest: &'static str,
    /// Where that `capsule.toml` lives in the source tree.
    pub manifest_path: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/capsules.rs"));
