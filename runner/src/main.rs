//! The `edge-runner` binary: parses the command line and hands off to [`edge_runner::cli`].

use std::process::ExitCode;

use edge_runner::cli::{Cli, Exit, error_message, is_broken_pipe};

fn main() -> ExitCode {
    // The runner re-executes itself to compile a capsule under CPU and memory
    // limits (`edge_runner::sandbox::Compiler`); that child does nothing else.
    let mut args = std::env::args_os();
    if args.nth(1).as_deref()
        == Some(std::ffi::OsStr::new(
            edge_runner::sandbox::COMPILE_CHILD_ARG,
        ))
    {
        return edge_runner::sandbox::compile_child_main(
            args.map(|a| a.to_string_lossy().into_owned()),
        );
    }
    // Logs go to stderr: text for people, one JSON object per line for a
    // service's journal (`EDGE_RUNNER_LOG_FORMAT=json`, as the packaged unit sets).
    let filter = tracing_subscriber::EnvFilter::try_from_env("EDGE_RUNNER_LOG")
        .unwrap_or_else(|_| "warn".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("EDGE_RUNNER_LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().init();
    } else {
        logs.init();
    }
    match Cli::parse_args().execute() {
        Ok(exit) => exit.into(),
        // `edge-runner … | head` closed our output: stop quietly, as SIGPIPE would.
        Err(err) if is_broken_pipe(&err) => Exit::BrokenPipe.into(),
        Err(err) => {
            eprintln!("error: {}", error_message(&err));
            Exit::Error.into()
        }
    }
}
