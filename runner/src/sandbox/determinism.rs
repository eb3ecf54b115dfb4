//! Deterministic runs for `reproduce` capsules: a fixed clock, seeded
//! randomness and canonical NaNs, so the same capsule on the same input
//! produces the same bytes.

use std::time::Duration;

use chacha20::ChaCha20Rng;
use rand_core::SeedableRng;
use sha2::{Digest, Sha256};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtxBuilder};

/// The wall-clock time a deterministic run sees, always: 2000-01-01T00:00:00Z.
pub const FIXED_WALL_CLOCK_SECS: u64 = 946_684_800;

/// Settings of a deterministic run; all of them are recorded in evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Determinism {
    /// Seeds both WASI random generators (ChaCha20) and the insecure seed.
    pub seed: [u8; 32],
    /// Seconds since the epoch that `wasi:clocks/wall-clock` always reports.
    pub wall_clock_secs: u64,
}

impl Determinism {
    /// The settings for a run of module `module_sha256` on input `input_sha256`:
    /// the seed is SHA-256("edge-runner/reproduce-seed/v1" ‖ module ‖ input),
    /// so the same capsule on the same input always sees the same randomness.
    pub fn for_run(module_sha256: [u8; 32], input_sha256: [u8; 32]) -> Self {
        let mut h = Sha256::new();
        h.update(b"edge-runner/reproduce-seed/v1");
        h.update(module_sha256);
        h.update(input_sha256);
        Self {
            seed: h.finalize().into(),
            wall_clock_secs: FIXED_WALL_CLOCK_SECS,
        }
    }

    /// Applies the fixed clocks and seeded generators to a WASI context.
    pub(super) fn apply(&self, builder: &mut WasiCtxBuilder) {
        let mut insecure_seed = Sha256::new();
        insecure_seed.update(b"insecure-seed");
        insecure_seed.update(self.seed);
        let insecure_seed: [u8; 32] = insecure_seed.finalize().into();
        let mut low = [0u8; 16];
        low.copy_from_slice(&insecure_seed[..16]);
        let mut insecure = self.seed;
        insecure[0] ^= 0xff;
        builder
            .secure_random(ChaCha20Rng::from_seed(self.seed))
            .insecure_random(ChaCha20Rng::from_seed(insecure))
            .insecure_random_seed(u128::from_le_bytes(low))
            .wall_clock(FixedWallClock(Duration::from_secs(self.wall_clock_secs)))
            .monotonic_clock(FixedMonotonicClock);
    }
}

struct FixedWallClock(Duration);

impl HostWallClock for FixedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        self.0
    }
}

/// A monotonic clock that never advances: elapsed time is always zero.
struct FixedMonotonicClock;

impl HostMonotonicClock for FixedMonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        0
    }
}
