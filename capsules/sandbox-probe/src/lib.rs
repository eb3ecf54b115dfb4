//! Test capsule that probes its own sandbox.
//!
//! Input: `{"actions": [...]}`, each action one of
//! `{"read": PATH}`, `{"write": PATH, "data": TEXT}`, `{"list": PATH}`,
//! `{"config": KEY}`, `{"connect": "IP:PORT"}`, `{"spin": true}` (loops forever),
//! `{"alloc-mib": N}` (allocates and touches N MiB), `{"recurse": true}` (unbounded recursion),
//! `{"print-kib": N}` (writes N KiB to stdout), `{"emit": N}` (emits N evidence items),
//! `{"panic": TEXT}`, `{"clock": true}` (reads the wall and monotonic clocks),
//! `{"random": true}` (draws randomness through std's hash seeds); these two also print to stdout;
//! `{"sleep-ms": N}` (blocks in a WASI call for N ms), `{"http-get": "http://HOST:PORT/PATH"}`
//! (a `wasi:http` request; the finding holds the status and body),
//! `{"summary": TEXT}` (the outcome's summary becomes TEXT), `{"summary-kib": N}` (an
//! N KiB summary), `{"findings": {"count": N, "message-kib": K}}` (N extra findings of K KiB each),
//! `{"emit-as": {"label": L, "media-type": M}}` (one evidence item so labelled),
//! `{"exit": CODE}` (calls `wasi:cli/exit`), `{"resolve": "HOST:PORT"}` (a DNS lookup),
//! `{"udp": "IP:PORT"}` (sends a UDP datagram), `{"timer-ready-ms": N}` (polls a
//! monotonic-clock timer of N ms with `ready()` until it is ready, giving up after 2 s),
//! `{"symlink": {"dir": GUEST-DIR, "link": NAME, "target": TARGET}}` (creates a symlink in a
//! granted directory), `{"write-mib": {"path": P, "mib": N}}` (writes N MiB, 1 MiB at a time),
//! `{"sparse": {"path": P, "bytes": N}}` (sets a file's size to N, then writes a byte at N),
//! `{"list-raw": PATH}` (a directory's names in the order the runner gives them),
//! `{"stat": PATH}` (a file's size and its access and modification times),
//! `{"http-hoard": {"count": C, "method-mib": N}}` (creates C outgoing `wasi:http` requests
//! whose method is N MiB long, and keeps them all: host memory, if the runner lets it),
//! `{"timers": N}` (subscribes N monotonic-clock timers and keeps them all),
//! `{"header-bomb": {"count": C, "value-kib": K}}` (appends C header values of K KiB each to
//! one `wasi:http` field set), `{"fields-hoard": {"count": C, "kib": K}}` (C field sets of
//! K KiB of headers each, in 4 KiB values, all kept), `{"body-hoard": {"count": C, "kib": K}}`
//! (C outgoing requests, each with a body K KiB are written to as far as the stream takes
//! them, none ever sent, all kept), `{"residue": true}` (reports whether a static
//! initialised to a constant, a zeroed static and 2 MiB of memory it grows still hold
//! their initial contents, then overwrites all three: what a later run in the same
//! instance slot would see if the runner did not reset memory between runs).
//! Each action that returns yields a finding `ACTION.allowed` or `ACTION.denied`
//! whose message is what happened; the verdict is `pass` when every action ran.
//! The runner's containment tests drive it; it is never useful in production.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use capsule_sdk::{Context, Error, Finding, Outcome, Severity};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    actions: Vec<Action>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
enum Action {
    Read(String),
    Write { path: String, data: String },
    List(String),
    Config(String),
    Connect(String),
    Spin(bool),
    AllocMib(usize),
    Recurse(bool),
    PrintKib(usize),
    Emit(u32),
    Panic(String),
    Clock(bool),
    Random(bool),
    SleepMs(u64),
    HttpGet(String),
    Summary(String),
    SummaryKib(usize),
    Findings(FindingFlood),
    EmitAs(Labelled),
    Exit(i32),
    Resolve(String),
    Udp(String),
    TimerReadyMs(u64),
    Symlink(SymlinkAt),
    WriteMib(WriteFlood),
    Sparse(SparseFile),
    ListRaw(String),
    Stat(String),
    HttpHoard(Hoard),
    Timers(usize),
    HeaderBomb(HeaderBomb),
    FieldsHoard(Hoarded),
    BodyHoard(Hoarded),
    Residue(bool),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct HeaderBomb {
    count: usize,
    value_kib: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Hoarded {
    count: usize,
    kib: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Hoard {
    count: usize,
    method_mib: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SymlinkAt {
    dir: String,
    link: String,
    target: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteFlood {
    path: String,
    mib: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SparseFile {
    path: String,
    bytes: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FindingFlood {
    count: usize,
    message_kib: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Labelled {
    label: String,
    media_type: String,
}

fn finding(action: &str, result: Result<String, String>) -> Finding {
    match result {
        Ok(message) => Finding::new(format!("{action}.allowed"), Severity::Info, message),
        Err(message) => Finding::new(format!("{action}.denied"), Severity::Info, message),
    }
}

fn recurse(depth: u64, trail: &mut Vec<u64>) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    trail.push(depth);
    // The pushes keep each frame observable so the optimiser cannot turn this into a loop.
    recurse(depth + 1, trail) + trail[trail.len() / 2]
}

#[capsule_sdk::test]
fn probe(cx: &mut Context) -> Result<Outcome, Error> {
    let input: Input = cx.input_json()?;
    let mut outcome = Outcome::pass(format!("{} actions ran", input.actions.len()));
    for action in input.actions {
        let f = match action {
            Action::Summary(text) => {
                outcome.summary = text;
                finding("summary", Ok("set".into()))
            }
            Action::SummaryKib(kib) => {
                outcome.summary = "s".repeat(kib * 1024);
                finding("summary", Ok(format!("{kib} KiB")))
            }
            Action::Findings(flood) => {
                let message = "m".repeat(flood.message_kib * 1024);
                for i in 0..flood.count {
                    outcome = outcome.with_finding(Finding::new(
                        format!("flood.{i}"),
                        Severity::Low,
                        message.clone(),
                    ));
                }
                finding("findings", Ok(format!("{} findings", flood.count)))
            }
            Action::EmitAs(l) => finding(
                "emit-as",
                cx.evidence(&l.label, &l.media_type, b"x")
                    .map(|i| format!("item {i}"))
                    .map_err(|e| e.to_string()),
            ),
            Action::Exit(code) => std::process::exit(code),
            Action::Symlink(at) => finding(
                "symlink",
                wasi::filesystem::preopens::get_directories()
                    .into_iter()
                    .find(|(_, guest)| *guest == at.dir)
                    .ok_or_else(|| format!("{} is not a granted directory", at.dir))
                    .and_then(|(dir, _)| {
                        dir.symlink_at(&at.target, &at.link)
                            .map(|()| format!("{} -> {}", at.link, at.target))
                            .map_err(|e| e.name().to_string())
                    }),
            ),
            Action::WriteMib(flood) => {
                let block = vec![b'w'; 1 << 20];
                let result = std::fs::File::create(&flood.path).and_then(|mut f| {
                    let mut written = 0;
                    for _ in 0..flood.mib {
                        if let Err(e) = f.write_all(&block) {
                            return Err(std::io::Error::other(format!("after {written} MiB: {e}")));
                        }
                        written += 1;
                    }
                    Ok(written)
                });
                finding(
                    "write-mib",
                    result
                        .map(|n| format!("wrote {n} MiB"))
                        .map_err(|e| e.to_string()),
                )
            }
            Action::Sparse(sparse) => {
                use std::io::{Seek, SeekFrom};
                let result = std::fs::File::create(&sparse.path).map(|mut f| {
                    let sized = f.set_len(sparse.bytes).map_err(|e| format!("set_len: {e}"));
                    let wrote = f
                        .seek(SeekFrom::Start(sparse.bytes))
                        .and_then(|_| f.write_all(b"x"))
                        .map_err(|e| format!("write: {e}"));
                    format!("{sized:?}; {wrote:?}")
                });
                finding("sparse", result.map_err(|e| e.to_string()))
            }
            Action::Timers(n) => {
                let kept: Vec<_> = (0..n)
                    .map(|_| wasi::clocks::monotonic_clock::subscribe_duration(1 << 40))
                    .collect();
                finding("timers", Ok(format!("kept {} timers", kept.len())))
            }
            Action::HttpHoard(hoard) => {
                use wasi::http::types::{Fields, Method, OutgoingRequest};
                let method = Method::Other("M".repeat(hoard.method_mib << 20));
                let mut kept = Vec::new();
                for _ in 0..hoard.count {
                    let request = OutgoingRequest::new(Fields::new());
                    let _ = request.set_method(&method);
                    kept.push(request);
                }
                finding("http-hoard", Ok(format!("kept {} requests", kept.len())))
            }
            Action::HeaderBomb(bomb) => {
                use wasi::http::types::Fields;
                let fields = Fields::new();
                let value = vec![b'v'; bomb.value_kib << 10];
                let mut kept = 0;
                for i in 0..bomb.count {
                    if fields.append(&format!("x-bomb-{i}"), &value).is_ok() {
                        kept += 1;
                    }
                }
                finding("header-bomb", Ok(format!("kept {kept} values")))
            }
            Action::FieldsHoard(hoard) => {
                use wasi::http::types::Fields;
                let value = vec![b'v'; 4 << 10];
                let mut kept = Vec::new();
                for _ in 0..hoard.count {
                    let fields = Fields::new();
                    for i in 0..hoard.kib.div_ceil(4) {
                        let _ = fields.append(&format!("x-hoard-{i}"), &value);
                    }
                    kept.push(fields);
                }
                finding(
                    "fields-hoard",
                    Ok(format!("kept {} field sets", kept.len())),
                )
            }
            Action::BodyHoard(hoard) => {
                use wasi::http::types::{Fields, OutgoingRequest};
                let chunk = vec![b'b'; 4 << 10];
                let mut kept = Vec::new();
                let mut written = 0usize;
                for _ in 0..hoard.count {
                    let request = OutgoingRequest::new(Fields::new());
                    let Ok(body) = request.body() else { break };
                    let Ok(stream) = body.write() else { break };
                    for _ in 0..hoard.kib.div_ceil(4) {
                        match stream.check_write() {
                            Ok(n) if n >= chunk.len() as u64 => {
                                if stream.write(&chunk).is_err() {
                                    break;
                                }
                                written += chunk.len();
                            }
                            _ => break,
                        }
                    }
                    kept.push((request, body, stream));
                }
                finding(
                    "body-hoard",
                    Ok(format!(
                        "kept {} unsent bodies, {written} bytes written",
                        kept.len()
                    )),
                )
            }
            Action::ListRaw(path) => finding(
                "list-raw",
                std::fs::read_dir(&path)
                    .map(|d| {
                        d.filter_map(|e| e.ok())
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .map_err(|e| format!("{path}: {e}")),
            ),
            Action::Stat(path) => {
                let secs = |t: std::io::Result<std::time::SystemTime>| {
                    t.ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or_else(|| "-".to_string(), |d| d.as_nanos().to_string())
                };
                finding(
                    "stat",
                    std::fs::metadata(&path)
                        .map(|m| {
                            format!(
                                "size={} accessed={} modified={}",
                                m.len(),
                                secs(m.accessed()),
                                secs(m.modified())
                            )
                        })
                        .map_err(|e| format!("{path}: {e}")),
                )
            }
            Action::TimerReadyMs(ms) => {
                let timer = wasi::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000);
                let start = std::time::Instant::now();
                let mut polls: u64 = 0;
                let ready = loop {
                    if timer.ready() {
                        break true;
                    }
                    polls += 1;
                    if start.elapsed() > std::time::Duration::from_secs(2) {
                        break false;
                    }
                };
                let waited = start.elapsed().as_millis();
                finding(
                    "timer",
                    if ready {
                        Ok(format!("ready after {waited} ms"))
                    } else {
                        Err(format!("not ready after {waited} ms and {polls} polls"))
                    },
                )
            }
            Action::Resolve(name) => {
                use std::net::ToSocketAddrs;
                finding(
                    "resolve",
                    name.to_socket_addrs()
                        .map(|a| {
                            let mut a: Vec<String> = a.map(|a| a.ip().to_string()).collect();
                            a.sort();
                            a.join(",")
                        })
                        .map_err(|e| format!("{name}: {e}")),
                )
            }
            Action::Udp(addr) => finding(
                "udp",
                std::net::UdpSocket::bind("0.0.0.0:0")
                    .and_then(|s| s.send_to(b"probe", &addr))
                    .map(|n| format!("sent {n} bytes to {addr}"))
                    .map_err(|e| format!("{addr}: {e}")),
            ),
            Action::Read(path) => finding(
                "read",
                std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}")),
            ),
            Action::Write { path, data } => finding(
                "write",
                std::fs::write(&path, data)
                    .map(|()| format!("wrote {path}"))
                    .map_err(|e| format!("{path}: {e}")),
            ),
            Action::List(path) => finding(
                "list",
                std::fs::read_dir(&path)
                    .map(|d| {
                        let mut names: Vec<String> = d
                            .filter_map(|e| e.ok())
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect();
                        names.sort();
                        names.join(",")
                    })
                    .map_err(|e| format!("{path}: {e}")),
            ),
            Action::Config(key) => finding(
                "config",
                cx.config(&key).ok_or_else(|| format!("{key}: not granted")),
            ),
            Action::Connect(addr) => finding(
                "connect",
                std::net::TcpStream::connect(&addr)
                    .map(|_| format!("connected to {addr}"))
                    .map_err(|e| format!("{addr}: {e}")),
            ),
            Action::Spin(false)
            | Action::Recurse(false)
            | Action::Clock(false)
            | Action::Random(false)
            | Action::Residue(false) => finding("skip", Ok("skipped".into())),
            Action::HttpGet(url) => finding("http", http_get(&url)),
            Action::SleepMs(ms) => {
                std::thread::sleep(std::time::Duration::from_millis(ms));
                finding("sleep", Ok(format!("slept {ms} ms")))
            }
            Action::Clock(true) => {
                let start = std::time::Instant::now();
                let wall = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                let text = format!("wall={wall} elapsed={}", start.elapsed().as_nanos());
                println!("{text}");
                finding("clock", Ok(text))
            }
            Action::Random(true) => {
                use std::hash::BuildHasher;
                let text = format!(
                    "{:016x}",
                    std::collections::hash_map::RandomState::new().hash_one(42u64)
                );
                println!("{text}");
                finding("random", Ok(text))
            }
            Action::Spin(true) => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Action::AllocMib(mib) => {
                let mut blocks = Vec::new();
                for _ in 0..mib {
                    blocks.push(vec![1u8; 1 << 20]);
                }
                finding("alloc", Ok(format!("allocated {} MiB", blocks.len())))
            }
            Action::Recurse(true) => {
                let mut trail = Vec::new();
                finding("recurse", Ok(recurse(0, &mut trail).to_string()))
            }
            Action::PrintKib(kib) => {
                let line = [b'x'; 1024];
                let mut out = std::io::stdout().lock();
                let mut written = 0;
                for _ in 0..kib {
                    if out.write_all(&line).is_err() {
                        break;
                    }
                    written += 1;
                }
                let _ = out.flush();
                finding("print", Ok(format!("wrote {written} KiB")))
            }
            Action::Emit(n) => {
                let mut accepted = 0;
                let mut refused = 0;
                for i in 0..n {
                    match cx.evidence(&format!("item-{i}"), "text/plain", b"x") {
                        Ok(_) => accepted += 1,
                        Err(_) => refused += 1,
                    }
                }
                finding(
                    "emit",
                    Ok(format!("accepted {accepted}, refused {refused}")),
                )
            }
            Action::Residue(true) => finding("residue", Ok(residue())),
            Action::Panic(message) => panic!("{message}"),
        };
        outcome = outcome.with_finding(f);
    }
    Ok(outcome)
}

/// Initialised in the module's data, so reset means copied back from its image.
static DATA_MARK: AtomicU64 = AtomicU64::new(0x5eed);
/// Zero-initialised: reset means zeroed.
static ZERO_MARK: AtomicU64 = AtomicU64::new(0);

/// What this instance's memory held before this run wrote to it, then writes to it:
/// `data 0x5eed, zero 0x0, grown clean` in a fresh instance.
fn residue() -> String {
    const MARK: u64 = 0xdead_beef;
    let data = DATA_MARK.swap(MARK, Ordering::Relaxed);
    let zero = ZERO_MARK.swap(MARK, Ordering::Relaxed);
    format!("data {data:#x}, zero {zero:#x}, grown {}", grown_pages())
}

/// Grows linear memory by 2 MiB outside the allocator (whose `calloc` clears
/// what it hands out, hiding what the pages held), reports whether the new
/// pages are all zero, then fills them.
#[cfg(target_arch = "wasm32")]
#[expect(
    unsafe_code,
    reason = "reads pages memory.grow just added, which no allocation owns: what they hold is what the probe reports"
)]
fn grown_pages() -> &'static str {
    const PAGES: usize = 32;
    const PAGE: usize = 64 * 1024;
    let old = core::arch::wasm32::memory_grow(0, PAGES);
    if old == usize::MAX {
        return "refused";
    }
    // SAFETY: pages `old..old + PAGES` were added by the grow above; nothing
    // else holds a reference into them, and nothing will after this function.
    let pages = unsafe { std::slice::from_raw_parts_mut((old * PAGE) as *mut u8, PAGES * PAGE) };
    let clean = pages.iter().all(|&b| b == 0);
    pages.fill(0xaa);
    if clean { "clean" } else { "dirty" }
}

/// The probe is built for the host only to be linted and unit-tested; there is no linear memory.
#[cfg(not(target_arch = "wasm32"))]
fn grown_pages() -> &'static str {
    "not wasm"
}

/// GET `url` through `wasi:http`; returns "STATUS BODY".
fn http_get(url: &str) -> Result<String, String> {
    let response = capsule_sdk::http::get(url)
        .send()
        .map_err(|e| e.to_string())?;
    Ok(format!("{} {}", response.status, response.text()))
}
