//! The daemon's side of the systemd protocols: readiness, status, stopping
//! and watchdog notifications (`sd_notify` over `$NOTIFY_SOCKET`) and socket
//! activation (`$LISTEN_PID`, `$LISTEN_FDS`, the API socket as fd 3).
//!
//! Everything here is a no-op when the daemon does not run under systemd:
//! the notify functions answer `Ok(false)` without `$NOTIFY_SOCKET`,
//! [`watchdog_interval`] `None` without `$WATCHDOG_USEC`, and [`listen_fds`]
//! `Ok(None)` without `$LISTEN_FDS`. Variables addressed to another process
//! (`$WATCHDOG_PID`, `$LISTEN_PID` not ours) are ignored, as `sd_notify(3)`
//! and `sd_listen_fds(3)` do. A notification that cannot be sent is an
//! error the daemon logs and goes on (systemd then acts on its own
//! timeouts). This module only speaks the protocols; when to
//! announce readiness or ping the watchdog is the daemon's decision.
//!
//! No `unsafe` here: taking fd 3 as a socket goes through the `listenfd`
//! crate, after this module has checked that the descriptors are meant for
//! this process and that there is exactly one.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};
use std::time::Duration;

/// Why a systemd notification or socket activation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SystemdError {
    /// `$NOTIFY_SOCKET` is not a Unix socket path or an abstract `@` name.
    #[error(
        "$NOTIFY_SOCKET is `{socket}`, which is neither an absolute path nor an abstract `@` socket; edge-runner notifies systemd over Unix sockets only: run it as a Type=notify unit or unset NOTIFY_SOCKET"
    )]
    UnsupportedNotifySocket {
        /// The variable's value.
        socket: String,
    },
    /// Sending to the notify socket failed.
    #[error(
        "sending `{state}` to systemd's notify socket `{socket}`: {source}; check that the unit has Type=notify and NotifyAccess=main and that systemd is running"
    )]
    Notify {
        /// The first assignment sent, e.g. `READY=1`.
        state: String,
        /// `$NOTIFY_SOCKET`.
        socket: String,
        /// What the OS said.
        source: io::Error,
    },
    /// `$LISTEN_FDS` is not a number.
    #[error(
        "$LISTEN_FDS is `{value}`, not a count of sockets; start edge-runner from edge-runner.socket or unset LISTEN_FDS and LISTEN_PID"
    )]
    InvalidListenFds {
        /// The variable's value.
        value: String,
    },
    /// systemd passed more than the one API socket.
    #[error(
        "systemd passed {count} sockets to edge-runner; edge-runner.socket must have exactly one ListenStream= (the API socket)"
    )]
    TooManySockets {
        /// How many `$LISTEN_FDS` says.
        count: u64,
    },
    /// `$LISTEN_FDS_FIRST_FD` would move the passed sockets away from fd 3.
    #[error(
        "$LISTEN_FDS_FIRST_FD is set, which systemd never does; refusing to take the API socket from a descriptor other than 3: unset LISTEN_FDS_FIRST_FD"
    )]
    FirstFdOverride,
    /// Descriptor 3 is not a listening Unix stream socket.
    #[error(
        "the descriptor systemd passed (fd 3) is not a Unix stream socket: {source}; edge-runner.socket must use ListenStream= with a socket path"
    )]
    NotUnixStream {
        /// What the check said.
        source: io::Error,
    },
}

/// Tells systemd the daemon is ready (`READY=1`): the API socket is
/// listening and the evidence log is open. `Ok(true)` if the message was
/// sent, `Ok(false)` when not run under systemd.
pub fn notify_ready() -> Result<bool, SystemdError> {
    notify("READY=1")
}

/// Tells systemd the daemon is shutting down (`STOPPING=1`).
pub fn notify_stopping() -> Result<bool, SystemdError> {
    notify("STOPPING=1")
}

/// Sets the one-line status `systemctl status` shows (`STATUS=…`); line
/// breaks in `status` become spaces, so it cannot carry other assignments.
pub fn notify_status(status: &str) -> Result<bool, SystemdError> {
    notify(&status_message(status))
}

/// Pings the watchdog (`WATCHDOG=1`); call it every half [`watchdog_interval`].
pub fn notify_watchdog() -> Result<bool, SystemdError> {
    notify("WATCHDOG=1")
}

/// The unit's `WatchdogSec=` (`$WATCHDOG_USEC`), like
/// `sd_watchdog_enabled(3)`: systemd kills the daemon if no
/// [`notify_watchdog`] arrives within it, so ping every half of it. `None`
/// when no watchdog is set, or it is set for another process
/// (`$WATCHDOG_PID`).
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var_os("WATCHDOG_USEC").as_deref(),
        std::env::var_os("WATCHDOG_PID").as_deref(),
        std::process::id(),
    )
}

/// The API socket systemd passed by socket activation (fd 3), if any.
///
/// `Ok(None)` without `$LISTEN_FDS`, or when `$LISTEN_PID` is missing or
/// names another process. Exactly one socket, a Unix stream socket, is
/// accepted. Call this in `main` before starting any other thread: taking the
/// socket unsets `$LISTEN_PID` and `$LISTEN_FDS` (so children do not inherit
/// them), and changing the environment is only sound while no other thread
/// reads it. The listener is blocking; for tokio, `set_nonblocking(true)` and
/// then `tokio::net::UnixListener::from_std`.
pub fn listen_fds() -> Result<Option<UnixListener>, SystemdError> {
    let activated = activation(
        std::env::var_os("LISTEN_PID").as_deref(),
        std::env::var_os("LISTEN_FDS").as_deref(),
        std::env::var_os("LISTEN_FDS_FIRST_FD").as_deref(),
        std::process::id(),
    )?;
    if !activated {
        return Ok(None);
    }
    listenfd::ListenFd::from_env()
        .take_unix_listener(0)
        .map_err(|source| SystemdError::NotUnixStream { source })
}

fn notify(state: &str) -> Result<bool, SystemdError> {
    match std::env::var_os("NOTIFY_SOCKET") {
        None => Ok(false),
        Some(socket) if socket.is_empty() => Ok(false),
        Some(socket) => send_notify(&socket, state).map(|()| true),
    }
}

/// Sends `state` as one datagram to the notify socket named `socket`: an
/// absolute path, or `@name` for an abstract socket.
fn send_notify(socket: &OsStr, state: &str) -> Result<(), SystemdError> {
    let shown = || socket.to_string_lossy().into_owned();
    let bytes = socket.as_bytes();
    let address = match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(socket),
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        _ => return Err(SystemdError::UnsupportedNotifySocket { socket: shown() }),
    };
    let failed = |source| SystemdError::Notify {
        state: state.lines().next().unwrap_or_default().to_owned(),
        socket: shown(),
        source,
    };
    let address = address.map_err(failed)?;
    let sender = UnixDatagram::unbound().map_err(failed)?;
    sender
        .send_to_addr(state.as_bytes(), &address)
        .map_err(failed)?;
    Ok(())
}

fn status_message(status: &str) -> String {
    format!("STATUS={}", status.replace(['\n', '\r'], " "))
}

fn watchdog_interval_from(usec: Option<&OsStr>, pid: Option<&OsStr>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.to_str()?.parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        let pid: u32 = pid.to_str()?.parse().ok()?;
        if pid != me {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// Whether one socket was passed to this process: the checks of
/// `sd_listen_fds(3)`, plus "exactly one" and "at fd 3".
fn activation(
    pid: Option<&OsStr>,
    fds: Option<&OsStr>,
    first_fd: Option<&OsStr>,
    me: u32,
) -> Result<bool, SystemdError> {
    let Some(fds) = fds else {
        return Ok(false);
    };
    let for_us = pid
        .and_then(OsStr::to_str)
        .and_then(|pid| pid.parse::<u32>().ok())
        == Some(me);
    if !for_us {
        return Ok(false);
    }
    let shown = || OsString::from(fds).to_string_lossy().into_owned();
    let count: u64 = fds
        .to_str()
        .and_then(|fds| fds.parse().ok())
        .ok_or_else(|| SystemdError::InvalidListenFds { value: shown() })?;
    if first_fd.is_some() {
        return Err(SystemdError::FirstFdOverride);
    }
    match count {
        0 => Ok(false),
        1 => Ok(true),
        count => Err(SystemdError::TooManySockets { count }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn os(s: &str) -> Option<&OsStr> {
        Some(OsStr::new(s))
    }

    #[test]
    fn notify_reaches_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let systemd = UnixDatagram::bind(&path).unwrap();
        send_notify(path.as_os_str(), "READY=1").unwrap();
        send_notify(path.as_os_str(), &status_message("draining\nREADY=1")).unwrap();
        let mut buf = [0u8; 256];
        let n = systemd.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let n = systemd.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STATUS=draining READY=1");
    }

    #[test]
    fn notify_reaches_an_abstract_socket() {
        let name = format!(
            "edge-runner-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        );
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let systemd = UnixDatagram::bind_addr(&address).unwrap();
        send_notify(OsStr::new(&format!("@{name}")), "WATCHDOG=1").unwrap();
        let mut buf = [0u8; 64];
        let n = systemd.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    #[test]
    fn notify_socket_that_is_not_unix_is_refused() {
        let err = send_notify(OsStr::new("vsock:2:1234"), "READY=1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "$NOTIFY_SOCKET is `vsock:2:1234`, which is neither an absolute path nor an abstract `@` socket; edge-runner notifies systemd over Unix sockets only: run it as a Type=notify unit or unset NOTIFY_SOCKET"
        );
        assert!(matches!(
            send_notify(OsStr::new("relative/notify"), "READY=1"),
            Err(SystemdError::UnsupportedNotifySocket { .. })
        ));
    }

    #[test]
    fn notify_socket_without_listener_names_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone");
        let err = send_notify(path.as_os_str(), "STOPPING=1").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "sending `STOPPING=1` to systemd's notify socket `{}`: ",
                path.display()
            )),
            "{text}"
        );
        assert!(text.ends_with(
            "check that the unit has Type=notify and NotifyAccess=main and that systemd is running"
        ));
    }

    #[test]
    fn watchdog_interval_is_the_timeout_for_this_process_only() {
        assert_eq!(
            watchdog_interval_from(os("30000000"), None, 42),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_interval_from(os("30000000"), os("42"), 42),
            Some(Duration::from_secs(30))
        );
        // Set for another process (a parent that exec'd us keeps its own pid's watchdog).
        assert_eq!(watchdog_interval_from(os("30000000"), os("41"), 42), None);
        assert_eq!(watchdog_interval_from(os("30000000"), os("x"), 42), None);
        assert_eq!(watchdog_interval_from(None, os("42"), 42), None);
        assert_eq!(watchdog_interval_from(os("0"), None, 42), None);
        assert_eq!(watchdog_interval_from(os("-5"), None, 42), None);
    }

    #[test]
    fn listen_fds_for_another_process_are_ignored() {
        assert!(!activation(None, None, None, 42).unwrap());
        assert!(!activation(None, os("1"), None, 42).unwrap());
        assert!(!activation(os("41"), os("1"), None, 42).unwrap());
        assert!(!activation(os(""), os("1"), None, 42).unwrap());
        assert!(!activation(os("42"), os("0"), None, 42).unwrap());
        assert!(activation(os("42"), os("1"), None, 42).unwrap());
    }

    #[test]
    fn listen_fds_with_two_sockets_is_refused() {
        let err = activation(os("42"), os("2"), None, 42).unwrap_err();
        assert_eq!(
            err.to_string(),
            "systemd passed 2 sockets to edge-runner; edge-runner.socket must have exactly one ListenStream= (the API socket)"
        );
    }

    #[test]
    fn listen_fds_moved_off_fd_3_is_refused() {
        let err = activation(os("42"), os("1"), os("7"), 42).unwrap_err();
        assert!(matches!(err, SystemdError::FirstFdOverride), "{err}");
    }

    #[test]
    fn listen_fds_not_a_number_is_refused() {
        let err = activation(os("42"), os("one"), None, 42).unwrap_err();
        assert_eq!(
            err.to_string(),
            "$LISTEN_FDS is `one`, not a count of sockets; start edge-runner from edge-runner.socket or unset LISTEN_FDS and LISTEN_PID"
        );
    }

    /// Marks the copy of this test binary that `systemd-socket-activate` starts.
    const CHILD: &str = "EDGE_RUNNER_TEST_ACTIVATED_CHILD";

    /// Socket activation end to end: `systemd-socket-activate` (from the
    /// systemd package) binds a socket, then execs this test binary with the
    /// socket as fd 3 and `LISTEN_PID`/`LISTEN_FDS` set, running
    /// [`activated_child`]; it takes the listener and answers one connection.
    #[test]
    #[ignore = "needs systemd-socket-activate (.ci/run installs systemd)"]
    fn socket_activation_hands_over_the_api_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let mut child = std::process::Command::new("systemd-socket-activate")
            .arg("--listen")
            .arg(&path)
            .arg(format!("--setenv={CHILD}=1"))
            .arg(std::env::current_exe().unwrap())
            .args([
                "serve::systemd::tests::activated_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("systemd-socket-activate runs");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut stream = loop {
            match std::os::unix::net::UnixStream::connect(&path) {
                Ok(stream) => break stream,
                Err(e) if std::time::Instant::now() > deadline => {
                    let _ = child.kill();
                    panic!("the activated socket never accepted: {e}");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(answer, "took fd 3; LISTEN_FDS unset\n");
        assert!(status.success(), "the activated child failed: {status}");
    }

    /// The child half of [`socket_activation_hands_over_the_api_socket`];
    /// does nothing unless started by it.
    #[test]
    #[ignore = "started by socket_activation_hands_over_the_api_socket"]
    fn activated_child() {
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        let listener = listen_fds()
            .expect("the passed socket is taken")
            .expect("a socket was passed");
        let (mut stream, _) = listener.accept().unwrap();
        let unset =
            std::env::var_os("LISTEN_FDS").is_none() && std::env::var_os("LISTEN_PID").is_none();
        let message = if unset {
            "took fd 3; LISTEN_FDS unset\n"
        } else {
            "took fd 3; LISTEN_FDS still set\n"
        };
        stream.write_all(message.as_bytes()).unwrap();
    }

    /// `packaging/` at the top of the repository.
    fn packaging() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging")
    }

    /// The packaged units copied into `dir`, with `ExecStart=` pointed at an
    /// executable there (`systemd-analyze verify` checks that it exists).
    fn units_in(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let binary = dir.join("edge-runner");
        std::fs::write(&binary, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        let service = std::fs::read_to_string(packaging().join("edge-runner.service")).unwrap();
        let installed =
            "ExecStart=/usr/local/bin/edge-runner serve --config /etc/edge-runner/serve.toml";
        assert_eq!(service.matches(installed).count(), 1, "ExecStart changed");
        let service = service.replace(
            "ExecStart=/usr/local/bin/edge-runner ",
            &format!("ExecStart={} ", binary.display()),
        );
        let service_path = dir.join("edge-runner.service");
        std::fs::write(&service_path, service).unwrap();
        let socket_path = dir.join("edge-runner.socket");
        std::fs::copy(packaging().join("edge-runner.socket"), &socket_path).unwrap();
        (service_path, socket_path)
    }

    #[test]
    fn every_hardening_option_turned_off_says_why() {
        let service = std::fs::read_to_string(packaging().join("edge-runner.service")).unwrap();
        let lines: Vec<&str> = service.lines().collect();
        let mut off = 0;
        for (i, line) in lines.iter().enumerate() {
            if line.ends_with("=no") {
                off += 1;
                assert!(
                    i > 0 && lines[i - 1].starts_with('#'),
                    "`{line}` has no comment saying why it is off"
                );
            }
        }
        assert!(
            off >= 4,
            "PrivateUsers, MemoryDenyWriteExecute, PrivateNetwork, DynamicUser"
        );
        assert!(lines.contains(&"MemoryDenyWriteExecute=no"));
        assert!(lines.contains(&"Type=notify"));
    }

    #[test]
    #[ignore = "needs systemd-analyze (.ci/run installs systemd)"]
    fn packaged_units_pass_systemd_analyze_verify() {
        let dir = tempfile::tempdir().unwrap();
        let (service, socket) = units_in(dir.path());
        let output = std::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&socket)
            .arg(&service)
            .output()
            .expect("systemd-analyze runs");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "systemd-analyze verify failed:\n{said}"
        );
        // Unknown keys and bad values are only warnings, with the exit status 0.
        let ours: Vec<&str> = said.lines().filter(|l| l.contains("edge-runner")).collect();
        assert!(ours.is_empty(), "systemd-analyze verify warns:\n{said}");
    }

    #[test]
    #[ignore = "needs systemd-analyze (.ci/run installs systemd)"]
    fn packaged_service_exposure_is_at_most_2_0() {
        let dir = tempfile::tempdir().unwrap();
        let (service, _) = units_in(dir.path());
        let output = std::process::Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&service)
            .output()
            .expect("systemd-analyze runs");
        let said = String::from_utf8_lossy(&output.stdout);
        // "→ Overall exposure level for edge-runner.service: 1.3 OK 🙂" ("->" without UTF-8).
        let label = "Overall exposure level for edge-runner.service: ";
        let exposure: f64 = said
            .lines()
            .find_map(|l| l.split_once(label).map(|(_, rest)| rest))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no overall exposure in:\n{said}{}",
                    String::from_utf8_lossy(&output.stderr)
                )
            });
        assert!(exposure <= 2.0, "exposure {exposure} is above 2.0:\n{said}");
    }
}
