//! Compiling a verified component under a budget of time and memory.
//!
//! Cranelift's work is not linear in a component's size: a never-instantiated
//! core module of a couple of megabytes with many locals and merge blocks can
//! take minutes of CPU and hundreds of megabytes, and nothing inside Wasmtime
//! can stop a compile once it has begun. So the runner compiles in a child
//! process — its own binary, re-executed with [`COMPILE_CHILD_ARG`] — which
//! limits itself with `RLIMIT_CPU` and `RLIMIT_AS` before it reads a byte of
//! the component, and which the parent kills should it outlive a wall-clock
//! backstop. A
//! child that is stopped is a refused capsule (`compile-limit`), never a
//! stalled or exhausted runner.
//!
//! This module owns the child's protocol, both ends of it, and the one place
//! the child's output becomes loadable code. It does not decide the budget
//! (the grant does) nor cache the result (`cache.rs` does).
//!
//! # Why the artifact is trusted without a MAC from the child
//!
//! `Component::deserialize` loads native code, so it may only get bytes the
//! runner authenticated. The artifact is authenticated by *provenance*: it
//! arrives on an anonymous pipe that the parent created and only the child
//! holds, from a child that is the runner's own executable (`/proc/self/exe`,
//! the very file this process runs, even if the path was replaced since),
//! given exactly the verified bytes, and it is accepted only after the child
//! exited with status 0 under its limits and the frame is complete. A
//! per-run MAC key handed to the child would add nothing: the only party
//! that could forge the child's output is the child itself, compromised
//! through the compiler by its input — and it would hold that key too. Such
//! a compromise would equally compromise an in-process compile, so the
//! child is never weaker than compiling here. What the parent then stores
//! in the disk cache is MACed by the parent, under the runner key, like any
//! code it compiled (`cache.rs`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::Component;

/// The hidden first argument that makes the runner's binary a compile child.
/// An embedder's binary that compiles in a child calls [`compile_child_main`]
/// when it sees it.
pub const COMPILE_CHILD_ARG: &str = "__edge-runner-compile-child";

/// Largest component the child reads, and largest artifact the parent reads
/// (the address-space limit bounds it far below this in practice).
const MAX_COMPILE_BYTES: u64 = 512 << 20;

/// Bytes of the child's stderr kept for the error message.
const MAX_CHILD_STDERR: u64 = 4 << 10;

/// The child's frame: one tag byte, then the payload's length (u64, little
/// endian), then the payload.
const TAG_ARTIFACT: u8 = 0;
/// The component does not compile; the payload is Wasmtime's message.
const TAG_INVALID: u8 = 1;
/// The compiler ran out of address space; the payload is the message.
const TAG_OUT_OF_MEMORY: u8 = 2;

/// How the sandbox compiles a component it has no cached code for.
///
/// [`Compiler::InProcess`] is the default only because a library cannot know
/// whether its host binary answers [`COMPILE_CHILD_ARG`]; it cannot apply the
/// compile budget, and every record of code compiled that way says
/// `compiled-in-process`. `edge-runner run` always uses [`Compiler::Child`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Compiler {
    /// In this process, with no bound on time or memory.
    #[default]
    InProcess,
    /// In a child process running `program COMPILE_CHILD_ARG …`, under the
    /// grant's [`CompileBudget`]; `program` must call [`compile_child_main`]
    /// for that argument (the `edge-runner` binary does).
    Child(PathBuf),
}

impl Compiler {
    /// A child running this very executable (`/proc/self/exe` where it exists,
    /// so a binary replaced on disk since this process started is not run).
    pub fn this_executable() -> std::io::Result<Self> {
        let proc_exe = Path::new("/proc/self/exe");
        if proc_exe.exists() {
            return Ok(Self::Child(proc_exe.to_path_buf()));
        }
        Ok(Self::Child(std::env::current_exe()?))
    }
}

/// What compiling one component may use: enforced in the child as CPU time
/// (`RLIMIT_CPU`, whole seconds rounded up) and address space (`RLIMIT_AS`).
/// CPU time, not wall-clock time, so a compile is judged by its own work and
/// not by how busy the machine is; a child that stops using CPU without
/// finishing is killed by the parent at [`CompileBudget::wall_backstop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileBudget {
    /// CPU time.
    pub time: Duration,
    /// Address space of the compiling process.
    pub memory_bytes: u64,
}

impl CompileBudget {
    /// The wall-clock time after which the parent kills the child whatever
    /// its CPU time: ten times the CPU budget, plus five seconds (generous,
    /// so that a loaded machine does not refuse an honest capsule; the CPU
    /// limit is what stops a hostile one).
    pub fn wall_backstop(&self) -> Duration {
        self.time * 10 + Duration::from_secs(5)
    }
}

/// Why a compile did not produce code.
#[derive(Debug)]
pub(super) enum CompileFailure {
    /// The bytes are not a valid component (Wasmtime's message).
    Invalid(String),
    /// The compile exceeded its budget (which one, in words).
    Limit(String),
    /// The child could not be run or broke the protocol.
    Child(String),
}

/// Compiles `bytes` in a child running `program`, within `budget`; returns
/// the component loaded into `engine`.
pub(super) fn in_child(
    program: &Path,
    engine: &Engine,
    bytes: &[u8],
    budget: CompileBudget,
) -> Result<Component, CompileFailure> {
    let cpu_secs = budget.time.as_secs() + u64::from(budget.time.subsec_nanos() > 0);
    let mut child = Command::new(program)
        .arg(COMPILE_CHILD_ARG)
        .arg(cpu_secs.max(1).to_string())
        .arg(budget.memory_bytes.to_string())
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            CompileFailure::Child(format!(
                "could not start the compile child {}: {e}",
                program.display()
            ))
        })?;
    let started = Instant::now();
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (status, out, err) = std::thread::scope(|s| {
        s.spawn(move || {
            if let Some(mut stdin) = stdin {
                // A child that stops reading (killed at its limit) closes the pipe: nothing to report.
                let _ = stdin.write_all(bytes);
            }
        });
        let out = s.spawn(move || read_bounded(stdout, MAX_COMPILE_BYTES));
        let err = s.spawn(move || read_bounded(stderr, MAX_CHILD_STDERR));
        let mut pause = Duration::from_micros(200);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if started.elapsed() >= budget.wall_backstop() => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(None);
                }
                Ok(None) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(Some(e));
                }
            }
        };
        let out = out.join().unwrap_or_default();
        let err = err.join().unwrap_or_default();
        (status, out, err)
    });
    let stderr_text = String::from_utf8_lossy(&err).trim().to_string();
    let too_slow = || {
        CompileFailure::Limit(format!(
            "compiling took more than its budget of {} ms of CPU time; the compiler was stopped",
            budget.time.as_millis()
        ))
    };
    let stalled = || {
        CompileFailure::Limit(format!(
            "compiling took more than {} ms of wall-clock time (its budget is {} ms of CPU time); the compiler was stopped",
            budget.wall_backstop().as_millis(),
            budget.time.as_millis()
        ))
    };
    let too_big = || {
        CompileFailure::Limit(format!(
            "compiling needed more than its budget of {} bytes of memory; the compiler was stopped",
            budget.memory_bytes
        ))
    };
    let status = match status {
        Ok(status) => status,
        Err(None) => return Err(stalled()),
        Err(Some(e)) => {
            return Err(CompileFailure::Child(format!(
                "could not wait for the compile child: {e}"
            )));
        }
    };
    if !status.success() {
        return Err(match signal(&status) {
            // SIGXCPU at the soft CPU limit, SIGKILL at the hard one.
            Some(SIGXCPU | SIGKILL) => too_slow(),
            // Rust aborts when an allocation fails, which under RLIMIT_AS is the address-space limit.
            Some(SIGABRT) => too_big(),
            _ if stderr_text.contains("memory allocation of") => too_big(),
            _ => CompileFailure::Child(format!(
                "the compile child failed ({status}){}",
                if stderr_text.is_empty() {
                    String::new()
                } else {
                    format!(": {stderr_text}")
                }
            )),
        });
    }
    let (tag, payload) = parse_frame(&out).ok_or_else(|| {
        CompileFailure::Child(format!(
            "the compile child exited cleanly but sent an incomplete answer ({} bytes)",
            out.len()
        ))
    })?;
    match tag {
        TAG_ARTIFACT => {
            // SAFETY: `payload` is what `Component::serialize` produced in the
            // runner's own executable, from the verified bytes, under an
            // engine configured by the same `engine_config`; it came over a
            // pipe only that child held, whole, after the child exited
            // cleanly under its limits (the module documentation gives the
            // argument). `deserialize` also checks that the artifact was
            // compiled for this engine's configuration and Wasmtime version.
            #[expect(
                unsafe_code,
                reason = "loading native code the runner's own compile child produced; authenticated by provenance above"
            )]
            let component = unsafe { Component::deserialize(engine, payload) };
            component.map_err(|e| {
                CompileFailure::Child(format!("the compiled code did not load: {e:#}"))
            })
        }
        TAG_INVALID => Err(CompileFailure::Invalid(
            String::from_utf8_lossy(payload).into_owned(),
        )),
        TAG_OUT_OF_MEMORY => Err(too_big()),
        other => Err(CompileFailure::Child(format!(
            "the compile child sent an unknown answer (tag {other})"
        ))),
    }
}

/// Linux's signal numbers for what stops a compile child.
const SIGABRT: i32 = 6;
const SIGKILL: i32 = 9;
const SIGXCPU: i32 = 24;

#[cfg(unix)]
fn signal(status: &std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal()
}

#[cfg(not(unix))]
fn signal(_status: &std::process::ExitStatus) -> Option<i32> {
    None
}

fn read_bounded(pipe: Option<impl Read>, max: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(pipe) = pipe {
        let _ = pipe.take(max + 1).read_to_end(&mut buf);
    }
    buf
}

/// Splits a whole frame; `None` unless the length matches the bytes exactly.
fn parse_frame(out: &[u8]) -> Option<(u8, &[u8])> {
    let (&tag, rest) = out.split_first()?;
    let (len, payload) = rest.split_first_chunk::<8>()?;
    (u64::from_le_bytes(*len) == payload.len() as u64).then_some((tag, payload))
}

/// The compile child: the whole of a process started with
/// [`COMPILE_CHILD_ARG`]. `args` are the arguments after it (CPU seconds,
/// address-space bytes). It limits itself first, then reads the component
/// from stdin, compiles it and writes one frame to stdout.
///
/// Exit codes: 0 an answer was written (code, or why the component does
/// not compile), 2 bad arguments, 3 the limits could not be set, 4 stdin or
/// stdout failed.
pub fn compile_child_main(mut args: impl Iterator<Item = String>) -> ExitCode {
    let cpu_secs = args.next().and_then(|a| a.parse::<u64>().ok());
    let memory = args.next().and_then(|a| a.parse::<u64>().ok());
    let (Some(cpu_secs), Some(memory)) = (cpu_secs, memory) else {
        eprintln!(
            "usage: {COMPILE_CHILD_ARG} CPU-SECONDS ADDRESS-SPACE-BYTES (used by the runner itself)"
        );
        return ExitCode::from(2);
    };
    if let Err(e) = limit_self(cpu_secs, memory) {
        eprintln!("could not limit the compile child: {e}");
        return ExitCode::from(3);
    }
    let mut bytes = Vec::new();
    if std::io::stdin()
        .lock()
        .take(MAX_COMPILE_BYTES)
        .read_to_end(&mut bytes)
        .is_err()
    {
        return ExitCode::from(4);
    }
    let (tag, payload) = match compile_here(&bytes) {
        Ok(code) => (TAG_ARTIFACT, code),
        Err(e) => {
            let text = format!("{e:#}");
            let oom = text.contains("Cannot allocate memory") || text.contains("os error 12");
            let tag = if oom { TAG_OUT_OF_MEMORY } else { TAG_INVALID };
            (tag, text.into_bytes())
        }
    };
    let mut out = std::io::stdout().lock();
    let written = out
        .write_all(&[tag])
        .and_then(|()| out.write_all(&(payload.len() as u64).to_le_bytes()))
        .and_then(|()| out.write_all(&payload))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(4),
    }
}

fn compile_here(bytes: &[u8]) -> wasmtime::Result<Vec<u8>> {
    let engine = Engine::new(&super::engine_config())?;
    Component::new(&engine, bytes)?.serialize()
}

#[cfg(unix)]
fn limit_self(cpu_secs: u64, memory: u64) -> std::io::Result<()> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    // A child stopped by SIGXCPU or a failed allocation leaves no core file.
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )?;
    // SIGXCPU at the soft limit; SIGKILL a second later should it be caught.
    setrlimit(
        Resource::Cpu,
        Rlimit {
            current: Some(cpu_secs),
            maximum: Some(cpu_secs + 1),
        },
    )?;
    setrlimit(
        Resource::As,
        Rlimit {
            current: Some(memory),
            maximum: Some(memory),
        },
    )?;
    Ok(())
}

#[cfg(not(unix))]
fn limit_self(_cpu_secs: u64, _memory: u64) -> std::io::Result<()> {
    Err(std::io::Error::other(
        "resource limits need a Unix system; compile in process instead",
    ))
}
