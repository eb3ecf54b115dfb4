//! The command line: each subcommand is a clap-derive struct with `execute`.
//!
//! Owns flag parsing, file I/O at the edges, human-readable output and the
//! exit codes ([`Exit`]). Every decision is delegated to the library modules;
//! this module must not verify, sandbox or encode anything itself. Output goes
//! through `say!`, so a closed standard output is an error that `main` turns
//! into [`Exit::BrokenPipe`], not a panic.

/// Writes a line to standard output and returns the `io::Result` (a closed
/// pipe is an error to propagate with `?`, not a panic as with `println!`).
macro_rules! say {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        ::std::writeln!(::std::io::stdout().lock(), $($arg)*)
    }};
}

mod apply;
mod approve;
mod capsule;
mod demo;
mod dev;
mod evidence;
#[cfg(feature = "fleet")]
mod fleet;
mod governance;
mod html;
mod keys;
mod manual;
mod proposal;
mod rotate;
mod run;
mod scaffold;
mod serve;
mod trust;

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::capsule::{MAX_CAPSULE_BYTES, MAX_SIGNATURE_SECTION_BYTES, RawCapsule};
use crate::fsio::read_bounded;
use crate::timestamp::Timestamp;
use crate::trust::{TrustRoot, store};

/// How `edge-runner` exits. The numbers are part of its interface: scripts and
/// CI jobs branch on them, and the README lists them (from [`Exit::help`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// The command did what was asked (for `run`: the verdict is `pass`).
    Ok = 0,
    /// An error: bad input, a file that cannot be read or written.
    Error = 1,
    /// The command line is wrong (clap's own code for usage errors).
    Usage = 2,
    /// The capsule was refused by the trust checks, or the trust store cannot be used.
    Refused = 3,
    /// The evidence failed verification (`evidence verify`, or the log `run` would append to).
    EvidenceInvalid = 4,
    /// The capsule ran and its verdict is `fail`.
    VerdictFail = 5,
    /// The capsule ran but did not complete (trap, fuel, deadline, memory), or its verdict is `error`.
    RunAbnormal = 6,
    /// `apply`: the proposal is not authorized (quorum not met, a replay, or outside the site's apply grant or egress).
    NotAuthorized = 7,
    /// `apply`: the change was applied, did not pass its verify plan, and was rolled back.
    VerifyFailedRolledBack = 8,
    /// `apply`: the target is not the pre-image the proposal was made against (or an interrupted apply left it neither).
    TargetDrifted = 9,
    /// Standard output was closed early (`edge-runner … | head`): 128 + SIGPIPE, as shells expect.
    BrokenPipe = 141,
}

impl Exit {
    /// Every exit code, in numeric order.
    pub const ALL: [Exit; 11] = [
        Exit::Ok,
        Exit::Error,
        Exit::Usage,
        Exit::Refused,
        Exit::EvidenceInvalid,
        Exit::VerdictFail,
        Exit::RunAbnormal,
        Exit::NotAuthorized,
        Exit::VerifyFailedRolledBack,
        Exit::TargetDrifted,
        Exit::BrokenPipe,
    ];

    /// The process exit status.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// What the code means, in a few words.
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Ok => "ok",
            Exit::Error => "error",
            Exit::Usage => "usage",
            Exit::Refused => "capsule refused",
            Exit::EvidenceInvalid => "evidence invalid",
            Exit::VerdictFail => "verdict `fail`",
            Exit::RunAbnormal => {
                "run ended abnormally (trap, fuel, deadline, memory) or verdict `error`"
            }
            Exit::NotAuthorized => "not authorized (apply)",
            Exit::VerifyFailedRolledBack => "verify failed, rolled back (apply)",
            Exit::TargetDrifted => "target drifted (apply)",
            Exit::BrokenPipe => "output closed early (broken pipe)",
        }
    }

    /// The exit code list shown by `--help` and in the README.
    pub fn help() -> String {
        let codes: Vec<String> = Self::ALL
            .iter()
            .map(|e| format!("{} {}", e.code(), e.meaning()))
            .collect();
        format!("Exit codes: {}.", codes.join("; "))
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

/// Edge Runner: verify signed WebAssembly capsules, run them in a deny-by-default sandbox, and keep signed evidence.
#[derive(Debug, Parser)]
#[command(name = "edge-runner", version, about, long_about = None, after_help = Exit::help())]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create and inspect Ed25519 keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Sign, verify and inspect capsules.
    #[command(subcommand)]
    Capsule(capsule::CapsuleCommand),
    /// Create, rotate, sign and show the trust store.
    #[command(subcommand)]
    Trust(trust::TrustCommand),
    /// Verify a capsule, run it in the sandbox and record evidence.
    Run(run::RunArgs),
    /// Verify evidence logs.
    #[command(subcommand)]
    Evidence(evidence::EvidenceCommand),
    /// Run the whole loop on the built-in demo keys and capsules.
    Demo(demo::DemoArgs),
    /// Create, sign, install, show and explain the site's governance (tiers, graph, roster).
    #[command(subcommand)]
    Governance(governance::GovernanceCommand),
    /// Review a proposal and sign an approval (or a deny) with your key.
    Approve(approve::ApproveArgs),
    /// List and show remediation proposals.
    #[command(subcommand)]
    Proposal(proposal::ProposalCommand),
    /// Authorize a proposal with signed approvals, apply it once, verify it held.
    Apply(apply::ApplyArgs),
    /// Run as a service: accept jobs on a local Unix socket, run them, record every one.
    Serve(serve::ServeArgs),
    /// Submit a capsule to a running `serve` (exits like `run` with --wait).
    Submit(serve::SubmitArgs),
    /// List, show and cancel a running `serve`'s jobs.
    #[command(subcommand)]
    Jobs(serve::JobsCommand),
    /// The fleet over NATS JetStream: publish capsules, dispatch signed jobs, collect evidence.
    #[cfg(feature = "fleet")]
    #[command(subcommand)]
    Fleet(fleet::FleetCommand),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to standard output.
    Completions(manual::CompletionsArgs),
    /// Write man pages for every command.
    Man(manual::ManArgs),
}

impl Cli {
    /// Runs the parsed command.
    pub fn execute(self) -> Result<Exit> {
        match self.command {
            Command::Keys(command) => command.execute(),
            Command::Capsule(command) => command.execute(),
            Command::Trust(command) => command.execute(),
            Command::Run(args) => args.execute(),
            Command::Evidence(command) => command.execute(),
            Command::Demo(args) => args.execute(),
            Command::Governance(command) => command.execute(),
            Command::Approve(args) => args.execute(),
            Command::Proposal(command) => command.execute(),
            Command::Apply(args) => args.execute(),
            Command::Serve(args) => args.execute(),
            Command::Submit(args) => args.execute(),
            Command::Jobs(command) => command.execute(),
            #[cfg(feature = "fleet")]
            Command::Fleet(command) => command.execute(),
            Command::Completions(args) => args.execute(),
            Command::Man(args) => args.execute(),
        }
    }

    /// Parses the process's arguments with [`command`] (exit codes in every `--help`).
    pub fn parse_args() -> Self {
        use clap::FromArgMatches;
        let matches = command().get_matches();
        match Self::from_arg_matches(&matches) {
            Ok(cli) => cli,
            Err(e) => e.exit(),
        }
    }
}

/// The clap command, with the exit codes in the `--help` of every subcommand.
pub fn command() -> clap::Command {
    fn with_exit_codes(command: clap::Command) -> clap::Command {
        command
            .after_help(Exit::help())
            .mut_subcommands(with_exit_codes)
    }
    use clap::CommandFactory;
    with_exit_codes(Cli::command())
}

/// Whether `err` is, at its root, a write to a closed pipe.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error as one line: each cause in turn, skipping a cause whose text
/// the line already holds (an error that prints its source *and* returns it
/// as its source would otherwise say the OS error twice).
pub fn error_message(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Parses `--site` for every command that takes it, so `capsule verify` and
/// `run` accept and refuse the same names (a usage error, exit 2).
fn site_name(text: &str) -> Result<String, String> {
    crate::capsule::validate_site(text)?;
    Ok(text.to_string())
}

/// Loads the trust store for commands that only read it; warns about the demo root.
fn load_trust_store(dir: &Path) -> Result<TrustRoot, crate::trust::TrustError> {
    let root = store::load(dir, Timestamp::now())?;
    warn_if_demo(&root);
    Ok(root)
}

fn warn_if_demo(root: &TrustRoot) {
    if root.demo {
        eprintln!(
            "WARNING: trust root `{}` is the DEMO root; its keys are public. Never use it outside a demo.",
            root.name
        );
    }
    if root.development {
        eprintln!(
            "WARNING: trust root `{}` is a DEVELOPMENT root (made by `edge-runner capsule dev-setup`, its root key unencrypted beside it), for trying capsules locally. Never use it in production; its runs are recorded as development runs.",
            root.name
        );
    }
}

/// Reads a capsule file, and its detached signature file if given.
fn read_raw(capsule: &Path, signature: Option<&Path>) -> Result<RawCapsule> {
    Ok(RawCapsule {
        component: read_capsule(capsule)?,
        detached_signature: signature.map(read_signature).transpose()?,
    })
}

fn read_capsule(path: &Path) -> Result<Vec<u8>> {
    Ok(read_bounded(path, MAX_CAPSULE_BYTES as u64, "capsule")?)
}

fn read_signature(path: &Path) -> Result<Vec<u8>> {
    Ok(read_bounded(
        path,
        MAX_SIGNATURE_SECTION_BYTES as u64,
        "signature file",
    )?)
}

/// [`crate::fsio::write_atomically`], naming the file in errors.
fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    crate::fsio::write_atomically(path, data).with_context(|| format!("writing {}", path.display()))
}

/// Draws a progress bar on stderr for logs big enough to take a while, when
/// stderr is a terminal (never in pipes, `--json` consumers or CI logs).
fn progress_bar(done: usize, total: usize) {
    use std::io::{IsTerminal, Write};
    if total < (8 << 20) || !std::io::stderr().is_terminal() {
        return;
    }
    let pct = done * 100 / total.max(1);
    let filled = pct / 4;
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\rverifying [{}{}] {pct:>3}%",
        "#".repeat(filled),
        " ".repeat(25 - filled)
    );
    if done >= total {
        let _ = writeln!(err);
    }
    let _ = err.flush();
}
