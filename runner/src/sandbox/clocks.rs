//! Monotonic-clock timers (`subscribe-duration`, `subscribe-instant`) the
//! runner answers itself, in place of Wasmtime's.
//!
//! Wasmtime's timer is a Tokio sleep, which becomes ready only when the
//! runtime's timer driver runs; a guest that polls `ready()` in a loop never
//! lets this runner's single-threaded runtime run it, so the timer stayed
//! not-ready until the run's deadline. This timer compares against the clock
//! first: `ready()` is true as soon as its instant has passed, however it is
//! polled. Waiting on it (`block`, `poll`) still sleeps, and the run's
//! deadline still applies.

use std::time::Duration;

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::clocks::WasiClocksView;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};

use super::host::State;

/// The WASI clocks version whose functions are replaced (Wasmtime 48's).
const CLOCKS: &str = "0.2.12";

/// A monotonic-clock timer.
enum Timer {
    /// Due now: ready at once, after yielding to the runtime once so a guest
    /// polling sockets with a zero timeout does not starve their readiness.
    Now { yielded: bool },
    /// Due at this instant.
    At(tokio::time::Instant),
    /// Further away than the clock can represent.
    Never,
}

#[async_trait::async_trait]
impl Pollable for Timer {
    async fn ready(&mut self) {
        match self {
            Timer::Now { yielded: true } => {}
            Timer::Now { yielded } => {
                *yielded = true;
                tokio::task::yield_now().await;
            }
            Timer::At(when) => {
                if tokio::time::Instant::now() < *when {
                    tokio::time::sleep_until(*when).await;
                }
            }
            Timer::Never => std::future::pending().await,
        }
    }
}

fn timer(
    store: &mut StoreContextMut<'_, State>,
    after: Duration,
) -> wasmtime::Result<Resource<DynPollable>> {
    let timer = if after.is_zero() {
        Timer::Now { yielded: false }
    } else {
        tokio::time::Instant::now()
            .checked_add(after)
            .map_or(Timer::Never, Timer::At)
    };
    let table = store.data_mut().clocks().table;
    let timer = table.push(timer)?;
    subscribe(table, timer)
}

/// Replaces Wasmtime's `subscribe-duration` and `subscribe-instant` in `linker` with the runner's.
pub(super) fn add_to_linker(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(&format!("wasi:clocks/monotonic-clock@{CLOCKS}"))?;
    clock.func_wrap(
        "subscribe-duration",
        |mut store: StoreContextMut<'_, State>, (nanos,): (u64,)| {
            Ok((timer(&mut store, Duration::from_nanos(nanos))?,))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut store: StoreContextMut<'_, State>, (when,): (u64,)| {
            // Measured against the clock the guest sees (fixed in deterministic runs).
            let now = monotonic_clock::Host::now(&mut store.data_mut().clocks())?;
            let after = Duration::from_nanos(when.saturating_sub(now));
            Ok((timer(&mut store, after)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
