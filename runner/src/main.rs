//! The `edge-runner` binary: parses the command line and hands off to [`edge_runner::cli`].

use std::process::ExitCode;

use clap::Parser;
use edge_runner::cli::{Cli, Exit, error_message, is_broken_pipe};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EDGE_RUNNER_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().execute() {
        Ok(exit) => exit.into(),
        // `edge-runner … | head` closed our output: stop quietly, as SIGPIPE would.
        Err(err) if is_broken_pipe(&err) => Exit::BrokenPipe.into(),
        Err(err) => {
            eprintln!("error: {}", error_message(&err));
            Exit::Error.into()
        }
    }
}
