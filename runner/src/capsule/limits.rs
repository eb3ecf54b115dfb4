//! Resource limits as written in the three places that state them: a
//! manifest's request (`[limits]`), a site policy's ceiling (`[limits]`) and
//! a trust root publisher's ceiling (`[publisher.ceiling]`).
//!
//! Owns the one type they share, its canonical names and the rule for
//! whether a ceiling covers a request. What a run finally gets is decided by
//! `sandbox::Grant::compute`, not here.

use serde::Deserialize;

/// Memory, fuel and wall-clock time, each optional. In a request `None`
/// means "the runner's default"; in a ceiling it means "unbounded here"
/// (the runner's own `sandbox::Limits` still apply).
///
/// ```
/// use edge_runner::capsule::ResourceLimits;
/// let ceiling = ResourceLimits { fuel: Some(1_000), ..ResourceLimits::default() };
/// let asked = ResourceLimits { fuel: Some(5_000), ..ResourceLimits::default() };
/// assert_eq!(ceiling.excess(&asked).as_deref(), Some("fuel 5000 (ceiling 1000)"));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ResourceLimits {
    /// Linear memory, in bytes, summed over all memories.
    pub memory_bytes: Option<u64>,
    /// Wasmtime fuel (roughly, WebAssembly instructions).
    pub fuel: Option<u64>,
    /// Wall-clock time, in milliseconds.
    pub wall_time_ms: Option<u64>,
}

impl ResourceLimits {
    /// Canonical name of [`Self::memory_bytes`].
    pub const MEMORY_BYTES: &'static str = "memory-bytes";
    /// Canonical name of [`Self::fuel`].
    pub const FUEL: &'static str = "fuel";
    /// Canonical name of [`Self::wall_time_ms`].
    pub const WALL_TIME_MS: &'static str = "wall-time-ms";
    /// Every canonical name, in the order the signed manifest encodes them.
    pub const NAMES: [&'static str; 3] = [Self::MEMORY_BYTES, Self::FUEL, Self::WALL_TIME_MS];

    /// Each limit with its canonical name, in [`Self::NAMES`] order.
    pub fn named(&self) -> [(&'static str, Option<u64>); 3] {
        [
            (Self::MEMORY_BYTES, self.memory_bytes),
            (Self::FUEL, self.fuel),
            (Self::WALL_TIME_MS, self.wall_time_ms),
        ]
    }

    /// Reads each limit by its canonical name with `get`.
    pub fn from_named<E>(
        mut get: impl FnMut(&'static str) -> Result<Option<u64>, E>,
    ) -> Result<Self, E> {
        Ok(Self {
            memory_bytes: get(Self::MEMORY_BYTES)?,
            fuel: get(Self::FUEL)?,
            wall_time_ms: get(Self::WALL_TIME_MS)?,
        })
    }

    /// Read as a ceiling: the first limit of `asked` it does not cover, in
    /// words. A limit this ceiling sets must be stated and at most the ceiling.
    pub fn excess(&self, asked: &ResourceLimits) -> Option<String> {
        for ((what, asked), (_, max)) in asked.named().into_iter().zip(self.named()) {
            match (asked, max) {
                (Some(asked), Some(max)) if asked > max => {
                    return Some(format!("{what} {asked} (ceiling {max})"));
                }
                // Unstated means "the runner's default", which this ceiling cannot bound.
                (None, Some(max)) => {
                    return Some(format!(
                        "an unstated {what} (ceiling {max}; state `{what}` in the manifest's [limits])"
                    ));
                }
                _ => {}
            }
        }
        None
    }
}
