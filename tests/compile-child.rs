//! The runner's compile child, embedded the way an embedder's binary would:
//! started with `COMPILE_CHILD_ARG`, it compiles one component under limits.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args();
    if args.nth(1).as_deref() == Some(edge_runner::sandbox::COMPILE_CHILD_ARG) {
        return edge_runner::sandbox::compile_child_main(args);
    }
    eprintln!(
        "this binary only compiles capsules for the sandbox tests (first argument {})",
        edge_runner::sandbox::COMPILE_CHILD_ARG
    );
    ExitCode::from(2)
}
