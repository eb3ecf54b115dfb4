//! Pins the capsule attributes' refusals: each misuse below must stay a
//! compile error (reported by `capsule-sdk-macros` at the author's code).
//! Compiled only by `cargo test --doc`; each block differs from this
//! well-formed entry point in one way only:
//!
//! ```no_run
//! #[capsule_sdk::test]
//! fn check(cx: &mut capsule_sdk::Context) -> capsule_sdk::Outcome {
//!     capsule_sdk::Outcome::pass(format!("{} input bytes", cx.input().len()))
//! }
//! ```
//!
//! Arguments to the attribute ("capsule attributes take no arguments;
//! capabilities belong in capsule.toml"):
//!
//! ```compile_fail
//! #[capsule_sdk::test(egress = "example.com:443")]
//! fn check(cx: &mut capsule_sdk::Context) -> capsule_sdk::Outcome {
//!     capsule_sdk::Outcome::pass(format!("{} input bytes", cx.input().len()))
//! }
//! ```
//!
//! An `async` entry point ("a capsule entry point cannot be `async`; write a
//! plain `fn`"):
//!
//! ```compile_fail
//! #[capsule_sdk::test]
//! async fn check(cx: &mut capsule_sdk::Context) -> capsule_sdk::Outcome {
//!     capsule_sdk::Outcome::pass(format!("{} input bytes", cx.input().len()))
//! }
//! ```
//!
//! A generic entry point ("a capsule entry point cannot be generic"):
//!
//! ```compile_fail
//! #[capsule_sdk::test]
//! fn check<T>(cx: &mut capsule_sdk::Context) -> capsule_sdk::Outcome {
//!     capsule_sdk::Outcome::pass(format!("{} input bytes", cx.input().len()))
//! }
//! ```
//!
//! A `where` clause is generic too:
//!
//! ```compile_fail
//! #[capsule_sdk::test]
//! fn check(cx: &mut capsule_sdk::Context) -> capsule_sdk::Outcome
//! where
//!     u8: Copy,
//! {
//!     capsule_sdk::Outcome::pass(format!("{} input bytes", cx.input().len()))
//! }
//! ```
//!
//! An `unsafe` entry point ("a capsule entry point cannot be `unsafe`"):
//!
//! ```compile_fail
//! #[capsule_sdk::test]
//! unsafe fn check(cx: &mut capsule_sdk::Context) -> capsule_sdk::Outcome {
//!     capsule_sdk::Outcome::pass(format!("{} input bytes", cx.input().len()))
//! }
//! ```
//!
//! No argument ("a capsule entry point takes exactly one argument: `cx: &mut
//! capsule_sdk::Context`"):
//!
//! ```compile_fail
//! #[capsule_sdk::test]
//! fn check() -> capsule_sdk::Outcome {
//!     capsule_sdk::Outcome::pass("no input read")
//! }
//! ```
//!
//! Two arguments (the same refusal):
//!
//! ```compile_fail
//! #[capsule_sdk::test]
//! fn check(cx: &mut capsule_sdk::Context, extra: u32) -> capsule_sdk::Outcome {
//!     capsule_sdk::Outcome::pass(format!("{} input bytes, {extra}", cx.input().len()))
//! }
//! ```
//!
//! No return type ("a capsule entry point must return
//! `capsule_sdk::Outcome` or `Result<Outcome, E>`"):
//!
//! ```compile_fail
//! #[capsule_sdk::test]
//! fn check(cx: &mut capsule_sdk::Context) {
//!     let _ = cx.input().len();
//! }
//! ```
//!
//! The other kinds' attributes share these checks; one is enough to pin that:
//!
//! ```compile_fail
//! #[capsule_sdk::remediate]
//! async fn fix(cx: &mut capsule_sdk::Context) -> capsule_sdk::Outcome {
//!     capsule_sdk::Outcome::pass(format!("{} input bytes", cx.input().len()))
//! }
//! ```
