//! `edge-runner serve`: the runner as a long-lived service. This module owns
//! the daemon's operations surface: its metrics registry ([`metrics`]) and
//! its side of the systemd protocols ([`systemd`]: readiness, watchdog,
//! socket activation). It starts no threads and opens no log itself.

pub mod metrics;
#[cfg(target_os = "linux")]
pub mod systemd;
