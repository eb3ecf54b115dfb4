//! The `edge-runner` binary: parses the command line and hands off to [`edge_runner::cli`].

use std::process::ExitCode;

use clap::Parser;

/// Exit status of a process stopped by SIGPIPE (128 + 13), as shells expect.
const EXIT_BROKEN_PIPE: i32 = 141;

fn main() -> ExitCode {
    // `edge-runner … | head` closes our stdout early; `println!` then panics.
    // Treat that like the SIGPIPE it stands for: stop quietly.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(EXIT_BROKEN_PIPE);
        }
        default_hook(info);
    }));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EDGE_RUNNER_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = edge_runner::cli::Cli::parse();
    match cli.execute() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
