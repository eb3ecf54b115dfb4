//! Fast verification of many Ed25519 signatures made by ONE public key, with
//! exactly the verdict of ed25519-dalek 2.2's `VerifyingKey::verify_strict`
//! for every signature.
//!
//! # Code path
//!
//! 1. The key is decoded once with `VerifyingKey::from_bytes` (the very
//!    constructor a caller of `verify_strict` would use). Undecodable or
//!    small-order key: every item fails. Key with a torsion component (but not
//!    small order): `verify_strict` legitimately accepts signatures whose `R`
//!    carries torsion in that case, so the fast path's "every R is
//!    torsion-free" premise is false and we use plain per-item
//!    `verify_strict` (still spread over threads).
//! 2. Items are cut into chunks spread over `std::thread::scope` workers.
//!    Per item, cheap deterministic gates that each imply a `verify_strict`
//!    rejection: `S < ℓ`, `R` is a canonical encoding (checked on the bytes),
//!    `R` is not one of the 8 small-order encodings, `R` decompresses. Then
//!    `k = SHA-512(R ‖ A ‖ M) mod ℓ` (A = the key bytes exactly as given,
//!    as `verify_strict` hashes them), and `z_i`: 128 OS-random bits
//!    (`getrandom`, drawn after the signatures are fixed, unknown to the
//!    signer), `z_i = lo_i + 2^64·hi_i`.
//! 3. Torsion screen: 64 random subset sums of the `R_i` (subset j = the
//!    items whose bit j of `lo_i` is set) must all be torsion-free; bucket
//!    method, see [`screen_and_low_sums`]. The same buckets give
//!    `Σ lo_i R_i` for a few hundred additions, so the screen's per-item
//!    additions are shared with the batch equation.
//! 4. One multiscalar multiplication with all `A` terms folded into one
//!    scalar (one key):
//!    `Σ 2^64·hi_i·R_i + Σ_g 2^(8g)·L_g − (Σ z_i s_i)B + (Σ z_i k_i)A == 0`
//!    where `Σ_g 2^(8g) L_g = Σ lo_i R_i` (n + 10 points, and the MSM
//!    scalars of the `R_i` have only 64 nonzero bits).
//! 5. Any failure in a chunk (gate, screen or equation) re-runs
//!    `verify_strict` item by item over that chunk (up to the failing item
//!    for a gate), so a reported index is always one `verify_strict`
//!    rejects, and the lowest one overall is returned.
//!
//! # Soundness (one-sided error)
//!
//! If every item passes `verify_strict`, then `R_i = [s_i]B − [k_i]A` lies in
//! the prime-order subgroup, so every gate, torsion test and the batch
//! equation pass deterministically: no false rejections, ever. Conversely,
//! suppose the key point A is torsion-free and some item of a chunk is
//! rejected by `verify_strict` but passes the gates. If some `R_i` has a
//! torsion component `t_i ≠ 0`, then for each test j, conditioned on all
//! other selector bits, the torsion part of `Q_j` is `X` or `X + t_i`
//! depending on one fair bit, and at most one of those is 0: each test misses
//! with probability ≤ 1/2, independently over the 64 bits, so all 64 miss
//! with probability ≤ 2^-64 (whatever the signer did, e.g. two order-2
//! components that cancel in some sums cannot cancel in all). If every
//! `R_i` is torsion-free, then `D_i = R_i − [s_i]B + [k_i]A` lies in the
//! prime-order group; `verify_strict` (given the canonical-encoding gate)
//! accepts item i iff `D_i = 0`, and `Σ z_i D_i = 0` with some `D_j ≠ 0` holds
//! for at most one value of `z_j` (< 2^128 < ℓ), i.e. probability ≤ 2^-128.
//! The two cases are disjoint properties of the input, so no independence
//! between the screen bits (`lo_i`) and `z_i` is needed: a chunk containing a
//! rejected item is accepted with probability ≤ 2^-64, over randomness
//! drawn after the signatures are fixed.

use std::sync::atomic::{AtomicUsize, Ordering};

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{Identity, IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha512};

/// Why a batch of signatures does not verify: the index of the first signature (in input order) that verify_strict rejects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadSignature(pub usize);

/// Number of signatures per batch equation. Large enough that the fixed
/// per-chunk costs (64 torsion checks ≈ 64 scalar multiplications, the
/// 8×256 bucket folding and running sums, the MSM's empty windows) are a
/// few percent;
/// small enough that a bad signature costs at most one chunk of
/// `verify_strict` calls and that a million items still make hundreds of
/// chunks to balance over threads.
pub(crate) const CHUNK_SIZE: usize = 4096;

/// Bits of the per-item random selector consumed by one bucket group.
const GROUP_BITS: u32 = 8;
/// Number of bucket groups; GROUP_BITS × GROUPS = 64 independent subset tests
/// (the bits of `lo_i`), i.e. a torsion component survives all of them with
/// probability ≤ 2^-64.
const GROUPS: usize = 8;

/// Verifies `items[i] = (message, signature)` under `key` (32-byte Ed25519 public key), with the verdict of `verify_strict` for each; `threads` = 0 means all cores. Returns the index of the first failing signature.
///
/// Key handling matches `verify_strict` exactly: a key that does not decode
/// (`VerifyingKey::from_bytes` fails) or decodes to a small-order point makes
/// every item fail, so the result is `Err(BadSignature(0))` for a non-empty
/// list and `Ok(())` for an empty one. A key that decodes to a point with a
/// torsion component but not of small order is accepted by `verify_strict`
/// (and so are some signatures under it); for such a key this function falls
/// back to per-item `verify_strict`. A non-canonical key encoding that
/// decodes to a point of large order is likewise *not* rejected up front,
/// because `verify_strict` does not reject it either (it hashes the bytes as
/// given, and so do we).
///
/// The verdict is exact with certainty whenever it is `Err`, and whenever all
/// items are valid; an `Ok(())` over items of which one is invalid happens with
/// probability ≤ 2^-64 per chunk of [`CHUNK_SIZE`] items (see module docs).
pub(crate) fn verify_all(
    key: &[u8; 32],
    items: &[(&[u8], &[u8; 64])],
    threads: usize,
) -> Result<(), BadSignature> {
    verify_all_chunked(key, items, threads, CHUNK_SIZE)
}

/// How the items of one call are checked, decided once from the key.
#[derive(Clone, Copy)]
enum Mode {
    /// Torsion-free key of large order: random-linear-combination batch path.
    Batch(VerifyingKey, EdwardsPoint),
    /// Key with a torsion component: per-item `verify_strict` only.
    StrictOnly(VerifyingKey),
}

/// [`verify_all`] with an explicit chunk size (tests use small chunks to
/// exercise the multi-chunk and multi-thread logic on few items; the rate
/// example uses it to tune [`CHUNK_SIZE`]).
pub(crate) fn verify_all_chunked(
    key: &[u8; 32],
    items: &[(&[u8], &[u8; 64])],
    threads: usize,
    chunk: usize,
) -> Result<(), BadSignature> {
    if items.is_empty() {
        return Ok(());
    }
    let chunk = chunk.max(1);
    let vk = match VerifyingKey::from_bytes(key) {
        Ok(vk) => vk,
        // verify_strict cannot even be called: nothing verifies.
        Err(_) => return Err(BadSignature(0)),
    };
    let a_point = EdwardsPoint::from(vk);
    if a_point.is_small_order() {
        // verify_strict rejects every signature under a small-order key.
        return Err(BadSignature(0));
    }
    let mode = if a_point.is_torsion_free() {
        Mode::Batch(vk, a_point)
    } else {
        Mode::StrictOnly(vk)
    };

    let n_chunks = items.len().div_ceil(chunk);
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    }
    .clamp(1, n_chunks);

    // Chunks are handed out in increasing order; `first_bad` is the lowest
    // failing index found so far, so workers stop once every remaining chunk
    // starts after it (they cannot lower it any more).
    let next = AtomicUsize::new(0);
    let first_bad = AtomicUsize::new(usize::MAX);
    let work = || loop {
        let c = next.fetch_add(1, Ordering::Relaxed);
        let start = c.saturating_mul(chunk);
        if start >= items.len() || start >= first_bad.load(Ordering::Relaxed) {
            break;
        }
        let end = (start + chunk).min(items.len());
        let slice = &items[start..end];
        let bad = match mode {
            Mode::Batch(vk, a) => batch_chunk(&vk, &a, key, slice),
            Mode::StrictOnly(vk) => strict_scan(&vk, slice),
        };
        if let Some(i) = bad {
            first_bad.fetch_min(start + i, Ordering::Relaxed);
        }
    };
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(work);
        }
        work();
    });
    match first_bad.into_inner() {
        usize::MAX => Ok(()),
        i => Err(BadSignature(i)),
    }
}

/// Index (within `items`) of the first item `verify_strict` rejects. This is
/// the reference verdict; every failure of the fast path ends up here.
fn strict_scan(vk: &VerifyingKey, items: &[(&[u8], &[u8; 64])]) -> Option<usize> {
    items
        .iter()
        .position(|(msg, sig)| vk.verify_strict(msg, &Signature::from_bytes(sig)).is_err())
}

/// Whether the 32 bytes are the canonical encoding of *some* field element
/// and sign, i.e. whether `decompress` followed by `compress` could give back
/// the same bytes. Equivalent to that round trip for every decodable input
/// (tested), without paying for the inversion inside `compress`:
/// `compress` always emits y reduced below p, and emits sign bit 0 when x = 0
/// (x = 0 exactly when y = ±1).
fn is_canonical_encoding(bytes: &[u8; 32]) -> bool {
    let sign = bytes[31] >> 7;
    let mut y = *bytes;
    y[31] &= 0x7f;
    // y ≥ p = 2^255 − 19 iff bytes 1..=30 are 0xff, byte 31 is 0x7f, byte 0 ≥ 0xed.
    let y_ge_p = y[0] >= 0xed && y[1..31].iter().all(|&b| b == 0xff) && y[31] == 0x7f;
    if y_ge_p {
        return false;
    }
    // x = 0 iff y = 1 or y = p − 1 (= 0xec, 0xff × 30, 0x7f).
    let y_is_one = y[0] == 1 && y[1..].iter().all(|&b| b == 0);
    let y_is_minus_one = y[0] == 0xec && y[1..31].iter().all(|&b| b == 0xff) && y[31] == 0x7f;
    !(sign == 1 && (y_is_one || y_is_minus_one))
}

/// The canonical encodings of the 8 small-order points (the torsion
/// subgroup E[8]). A canonically encoded R decodes to a small-order point iff
/// its bytes are one of these, because `compress` is injective and
/// canonical — so comparing bytes gives exactly `is_small_order()` without
/// three doublings per item.
fn small_order_encodings() -> [[u8; 32]; 8] {
    curve25519_dalek::constants::EIGHT_TORSION.map(|t| t.compress().to_bytes())
}

/// The per-item gates on `R`: canonical encoding, not small order,
/// decompresses. `None` means `verify_strict` certainly rejects the signature.
fn r_gate(r_bytes: &[u8; 32], small_order: &[[u8; 32]; 8]) -> Option<EdwardsPoint> {
    if !is_canonical_encoding(r_bytes) {
        return None;
    }
    // Small-order R is refused by verify_strict even when the equation holds
    // exactly (e.g. R = identity, s = k·a); the batch equation would not see it.
    if small_order.contains(r_bytes) {
        return None;
    }
    CompressedEdwardsY(*r_bytes).decompress()
}

/// `k = SHA-512(R ‖ A ‖ M) mod ℓ`, with A the key bytes as given (as
/// `verify_strict` hashes `VerifyingKey::compressed`, i.e. the input bytes).
fn challenge(r_bytes: &[u8], key: &[u8; 32], msg: &[u8]) -> Scalar {
    let digest = Sha512::new()
        .chain_update(r_bytes)
        .chain_update(key)
        .chain_update(msg)
        .finalize();
    let mut wide = [0u8; 64];
    wide.copy_from_slice(digest.as_slice());
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// Everything the batch equation and the torsion screen need for one chunk.
///
/// Each `z_i` is a uniformly random 128-bit integer `lo_i + 2^64·hi_i`. The
/// low 64 bits do double duty: bit j of `lo_i` says whether `R_i` is in the
/// j-th torsion test subset, and the buckets built for those 64 tests also
/// give `Σ lo_i R_i` almost for free (see [`screen_and_low_sums`]), so the
/// multiscalar multiplication only has to handle the `hi_i`.
struct Prepared {
    /// Decompressed `R_i`.
    points: Vec<EdwardsPoint>,
    /// `2^64·hi_i`: the part of `z_i` left to the multiscalar multiplication.
    hi_scalars: Vec<Scalar>,
    /// `lo_i`: low 64 bits of `z_i`, also the subset selectors.
    lo: Vec<u64>,
    /// `−Σ z_i s_i` (coefficient of B).
    b_coeff: Scalar,
    /// `Σ z_i k_i` (coefficient of A: all items share the key, so one term).
    a_coeff: Scalar,
}

/// Outcome of the per-item phase of a chunk.
enum Prep {
    /// All gates passed.
    Ready(Prepared),
    /// Item `i` failed a gate (so verify_strict rejects it).
    Gate(usize),
    /// No OS randomness: we refuse to batch with guessable coefficients.
    NoRandomness,
}

/// Per-item gates, challenges and random coefficients for one chunk.
fn prepare(key: &[u8; 32], items: &[(&[u8], &[u8; 64])]) -> Prep {
    let n = items.len();
    // 16 random bytes (z_i) per item, drawn after the signatures are fixed
    // and never derivable from them (unlike dalek's merlin-transcript
    // coefficients, which a signer can grind).
    let mut rnd = vec![0u8; n * 16];
    if getrandom::fill(&mut rnd).is_err() {
        return Prep::NoRandomness;
    }
    let mut points = Vec::with_capacity(n);
    let mut hi_scalars = Vec::with_capacity(n);
    let mut lo = Vec::with_capacity(n);
    let mut sum_zs = Scalar::ZERO;
    let mut sum_zk = Scalar::ZERO;
    let small_order = small_order_encodings();
    for (i, ((msg, sig), rnd)) in items.iter().zip(rnd.chunks_exact(16)).enumerate() {
        let mut r_bytes = [0u8; 32];
        let mut s_bytes = [0u8; 32];
        r_bytes.copy_from_slice(&sig[..32]);
        s_bytes.copy_from_slice(&sig[32..]);
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)) else {
            return Prep::Gate(i);
        };
        let Some(r) = r_gate(&r_bytes, &small_order) else {
            return Prep::Gate(i);
        };
        let k = challenge(&r_bytes, key, msg);
        // z_i = lo_i + 2^64·hi_i, little-endian in the first 16 bytes.
        let mut z_bytes = [0u8; 32];
        z_bytes[..16].copy_from_slice(rnd);
        let z = Scalar::from_bytes_mod_order(z_bytes);
        let mut hi_bytes = [0u8; 32];
        hi_bytes[8..16].copy_from_slice(&rnd[8..16]);
        let mut lo_bytes = [0u8; 8];
        lo_bytes.copy_from_slice(&rnd[..8]);
        sum_zs += z * s;
        sum_zk += z * k;
        points.push(r);
        hi_scalars.push(Scalar::from_bytes_mod_order(hi_bytes));
        lo.push(u64::from_le_bytes(lo_bytes));
    }
    Prep::Ready(Prepared {
        points,
        hi_scalars,
        lo,
        b_coeff: -sum_zs,
        a_coeff: sum_zk,
    })
}

/// `[2^(8g)]` for g = 0..GROUPS: weights of the per-group low sums.
fn group_weights() -> [Scalar; GROUPS] {
    let mut w = [Scalar::ONE; GROUPS];
    for g in 1..GROUPS {
        w[g] = w[g - 1] * Scalar::from(1u64 << GROUP_BITS);
    }
    w
}

/// The batch equation `Σ z_i R_i − (Σ z_i s_i)B + (Σ z_i k_i)A == 0`, given
/// the per-group low sums `L_g = Σ_i byte_g(lo_i)·R_i` from the screen:
/// one MSM over `R_i` (scalars `2^64·hi_i`), B, A and the 8 `L_g` (scalars
/// `2^(8g)`), n + 10 points.
fn batch_equation_holds(p: &Prepared, a: &EdwardsPoint, low: &[EdwardsPoint; GROUPS]) -> bool {
    let weights = group_weights();
    let scalars = p
        .hi_scalars
        .iter()
        .chain([&p.b_coeff, &p.a_coeff])
        .chain(weights.iter());
    let points = p
        .points
        .iter()
        .chain([&ED25519_BASEPOINT_POINT, a])
        .chain(low.iter());
    EdwardsPoint::vartime_multiscalar_mul(scalars, points).is_identity()
}

/// Fast path for one chunk under a torsion-free key; returns the index
/// (within `items`) of the first item verify_strict rejects, if any.
fn batch_chunk(
    vk: &VerifyingKey,
    a: &EdwardsPoint,
    key: &[u8; 32],
    items: &[(&[u8], &[u8; 64])],
) -> Option<usize> {
    let p = match prepare(key, items) {
        Prep::Ready(p) => p,
        // Item i is certainly bad, but an earlier one may be too.
        Prep::Gate(i) => return Some(strict_scan(vk, &items[..i]).unwrap_or(i)),
        Prep::NoRandomness => return strict_scan(vk, items),
    };
    let Some(low) = screen_and_low_sums(&p.points, &p.lo) else {
        return strict_scan(vk, items);
    };
    if !batch_equation_holds(&p, a, &low) {
        return strict_scan(vk, items);
    }
    None
}

/// Torsion screen plus the low half of the batch MSM. Returns `None` unless
/// all 64 random subset sums `Q_j = Σ_{i : bit j of lo[i] set} P_i` are
/// torsion-free; otherwise `Some(L)` with `L_g = Σ_i byte_g(lo_i)·P_i`, so
/// that `Σ_g 2^(8g) L_g = Σ_i lo_i P_i`.
///
/// If every point is torsion-free the screen always passes. If some point
/// has a torsion component, each `Q_j` has a nonzero torsion part with
/// probability ≥ 1/2 independently (the bits of `lo` are independent and
/// uniform), so the screen passes with probability ≤ 2^-64.
///
/// Cost (bucket / transposed "four Russians"): the 64 bits are cut into 8
/// groups of 8; each point is added into one of 256 buckets per group
/// (8 additions per point, shared with the MSM since they also give `L_g`
/// by a running sum, ≈ 2·255 additions per group). Per group, the 8 subset
/// sums are read off by folding the 8-cube: the sum for the top bit is the
/// sum of the upper half of the buckets, then the upper half is added onto
/// the lower half and we recurse (≈ 2·256 additions per group). Finally 64
/// checks `is_torsion_free` (one scalar multiplication by ℓ each).
fn screen_and_low_sums(points: &[EdwardsPoint], lo: &[u64]) -> Option<[EdwardsPoint; GROUPS]> {
    let mut buckets = fill_buckets(points, lo);
    let low = low_sums(&buckets);
    screen_buckets(&mut buckets).then_some(low)
}

/// Buckets `B[g·256 + v] = Σ_{i : byte g of lo_i = v} P_i` (v ≠ 0; bucket 0
/// of each group stays the identity, it is in no test and has weight 0).
fn fill_buckets(points: &[EdwardsPoint], lo: &[u64]) -> Vec<EdwardsPoint> {
    let width = 1usize << GROUP_BITS;
    let mask = (width - 1) as u64;
    let mut buckets = vec![EdwardsPoint::identity(); GROUPS * width];
    // The first point into a bucket is copied, not added to the identity:
    // saves one addition per bucket.
    let mut filled = vec![false; GROUPS * width];
    for (p, &sel) in points.iter().zip(lo) {
        for g in 0..GROUPS {
            // In range: masked to GROUP_BITS bits.
            let v = ((sel >> (g as u32 * GROUP_BITS)) & mask) as usize;
            if v != 0 {
                let idx = g * width + v;
                if filled[idx] {
                    buckets[idx] += p;
                } else {
                    buckets[idx] = *p;
                    filled[idx] = true;
                }
            }
        }
    }
    buckets
}

/// `L_g = Σ_v v·B[g·256 + v]` by the running-sum trick (2·255 additions
/// per group), so that `Σ_g 2^(8g) L_g = Σ_i lo_i P_i`.
fn low_sums(buckets: &[EdwardsPoint]) -> [EdwardsPoint; GROUPS] {
    let width = 1usize << GROUP_BITS;
    let mut low = [EdwardsPoint::identity(); GROUPS];
    for (group, low_g) in buckets.chunks_exact(width).zip(low.iter_mut()) {
        let mut running = EdwardsPoint::identity();
        let mut total = EdwardsPoint::identity();
        for b in group[1..].iter().rev() {
            running += b;
            total += &running;
        }
        *low_g = total;
    }
    low
}

/// The 64 subset tests, read off the buckets (destroyed) by folding each
/// group's 8-cube; `true` iff all 64 subset sums are torsion-free.
fn screen_buckets(buckets: &mut [EdwardsPoint]) -> bool {
    let width = 1usize << GROUP_BITS;
    for group in buckets.chunks_exact_mut(width) {
        let mut w = width;
        while w > 1 {
            let half = w / 2;
            // group[v] for v < w holds the sum of the original buckets whose
            // index agrees with v on its low log2(w) bits; the upper half is
            // exactly "this bit set".
            let mut q = group[half];
            for b in &group[half + 1..w] {
                q += b;
            }
            if !q.is_torsion_free() {
                return false;
            }
            let (lower, upper) = group[..w].split_at_mut(half);
            for (l, h) in lower.iter_mut().zip(upper.iter()) {
                *l += h;
            }
            w = half;
        }
    }
    true
}

/// `true` iff the torsion screen passes on `points` with these selectors
/// (test helper view of [`screen_and_low_sums`]).
#[cfg(test)]
fn all_torsion_free_whp(points: &[EdwardsPoint], selectors: &[u64]) -> bool {
    screen_and_low_sums(points, selectors).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::EIGHT_TORSION;
    use ed25519_dalek::{Signer, SigningKey};

    /// Small deterministic PRNG (splitmix64) so failures are reproducible.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn bytes<const N: usize>(&mut self) -> [u8; N] {
            let mut out = [0u8; N];
            for c in out.chunks_mut(8) {
                let v = self.next().to_le_bytes();
                c.copy_from_slice(&v[..c.len()]);
            }
            out
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn scalar(&mut self) -> Scalar {
            Scalar::from_bytes_mod_order_wide(&self.bytes::<64>())
        }
    }

    type Owned = Vec<(Vec<u8>, [u8; 64])>;

    fn view(v: &Owned) -> Vec<(&[u8], &[u8; 64])> {
        v.iter().map(|(m, s)| (m.as_slice(), s)).collect()
    }

    fn honest(sk: &SigningKey, n: usize, rng: &mut Rng) -> Owned {
        (0..n)
            .map(|i| {
                let mut m = format!("record {i} ").into_bytes();
                m.extend_from_slice(&rng.bytes::<16>());
                let s = sk.sign(&m).to_bytes();
                (m, s)
            })
            .collect()
    }

    /// The reference: first index verify_strict rejects, with the same key rules.
    fn reference(key: &[u8; 32], items: &[(&[u8], &[u8; 64])]) -> Result<(), BadSignature> {
        let Ok(vk) = VerifyingKey::from_bytes(key) else {
            return if items.is_empty() {
                Ok(())
            } else {
                Err(BadSignature(0))
            };
        };
        match strict_scan(&vk, items) {
            Some(i) => Err(BadSignature(i)),
            None => Ok(()),
        }
    }

    fn strict_ok(key: &[u8; 32], m: &[u8], s: &[u8; 64]) -> bool {
        VerifyingKey::from_bytes(key)
            .map(|vk| vk.verify_strict(m, &Signature::from_bytes(s)).is_ok())
            .unwrap_or(false)
    }

    /// Signature under secret scalar `a` (key A = aB, bytes `key`) whose R is
    /// `rB + t`: satisfies the cofactored equation, not the cofactorless one
    /// unless t = 0.
    fn sign_with_r_offset(
        a: &Scalar,
        key: &[u8; 32],
        m: &[u8],
        t: &EdwardsPoint,
        rng: &mut Rng,
    ) -> [u8; 64] {
        let r = rng.scalar();
        let big_r = EdwardsPoint::mul_base(&r) + t;
        let r_bytes = big_r.compress().to_bytes();
        let k = challenge(&r_bytes, key, m);
        let s = r + k * a;
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&r_bytes);
        out[32..].copy_from_slice(s.as_bytes());
        out
    }

    fn raw_key(rng: &mut Rng) -> (Scalar, [u8; 32]) {
        let a = rng.scalar();
        (a, EdwardsPoint::mul_base(&a).compress().to_bytes())
    }

    fn check_all_ways(
        key: &[u8; 32],
        items: &[(&[u8], &[u8; 64])],
        expect: Result<(), BadSignature>,
    ) {
        assert_eq!(
            reference(key, items),
            expect,
            "reference disagrees with expectation"
        );
        for threads in [1, 2, 3, 0] {
            for chunk in [7, 64, CHUNK_SIZE] {
                assert_eq!(
                    verify_all_chunked(key, items, threads, chunk),
                    expect,
                    "threads {threads} chunk {chunk}"
                );
            }
        }
        assert_eq!(verify_all(key, items, 0), expect);
    }

    #[test]
    fn honest_signatures_pass_and_empty_is_ok() {
        let mut rng = Rng(1);
        let sk = SigningKey::from_bytes(&rng.bytes::<32>());
        let key = sk.verifying_key().to_bytes();
        let v = honest(&sk, 400, &mut rng);
        check_all_ways(&key, &view(&v), Ok(()));
        assert_eq!(verify_all(&key, &[], 0), Ok(()));
        // RFC 8032 test 1 (empty message), verbatim.
        let key1 = hex32("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
        let sig1 = hex64(
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        );
        assert_eq!(verify_all(&key1, &[(&[][..], &sig1)], 1), Ok(()));
        // RFC 8032 test 2 (message 0x72).
        let key2 = hex32("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c");
        let sig2 = hex64(
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        );
        assert_eq!(verify_all(&key2, &[(&[0x72][..], &sig2)], 1), Ok(()));
        assert_eq!(
            verify_all(&key2, &[(&[0x73][..], &sig2)], 1),
            Err(BadSignature(0))
        );
        assert_eq!(
            verify_all(&key1, &[(&[][..], &sig1), (&[0x72][..], &sig2)], 1),
            Err(BadSignature(1))
        );
    }

    /// The fast path alone (no per-item fallback): true when it accepts.
    fn fast_path_accepts(key: &[u8; 32], items: &[(&[u8], &[u8; 64])]) -> bool {
        let vk = VerifyingKey::from_bytes(key).unwrap();
        let a = EdwardsPoint::from(vk);
        let Prep::Ready(p) = prepare(key, items) else {
            return false;
        };
        let mut buckets = fill_buckets(&p.points, &p.lo);
        let low = low_sums(&buckets);
        screen_buckets(&mut buckets) && batch_equation_holds(&p, &a, &low)
    }

    #[test]
    fn fast_path_accepts_honest_chunks_without_fallback() {
        // The fallback would hide a wrong batch equation (verdicts stay
        // right, only slow): check the fast path itself accepts, for several
        // chunk sizes, including ones below the MSM algorithm switch (190).
        let mut rng = Rng(12);
        let sk = SigningKey::from_bytes(&rng.bytes::<32>());
        let key = sk.verifying_key().to_bytes();
        let v = honest(&sk, 1500, &mut rng);
        let items = view(&v);
        for n in [1usize, 2, 100, 189, 190, 1000, 1500] {
            assert!(fast_path_accepts(&key, &items[..n]), "n = {n}");
        }
        let mut bad = v.clone();
        bad[700].0.push(1);
        assert!(!fast_path_accepts(&key, &view(&bad)));
    }

    fn hex32(s: &str) -> [u8; 32] {
        let mut o = [0u8; 32];
        for (i, b) in o.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        o
    }
    fn hex64(s: &str) -> [u8; 64] {
        let mut o = [0u8; 64];
        o[..32].copy_from_slice(&hex32(&s[..64]));
        o[32..].copy_from_slice(&hex32(&s[64..]));
        o
    }

    #[test]
    fn one_altered_message_or_signature_is_found_at_its_index() {
        let mut rng = Rng(2);
        let sk = SigningKey::from_bytes(&rng.bytes::<32>());
        let key = sk.verifying_key().to_bytes();
        let base = honest(&sk, 300, &mut rng);
        for &(pos, what) in &[(0usize, 0u8), (299, 1), (157, 2), (2, 3), (240, 0)] {
            let mut v = base.clone();
            match what {
                0 => v[pos].0.push(b'!'),
                1 => v[pos].1[40] ^= 1,               // S bit
                2 => v[pos].1[5] ^= 0x10,             // R bit
                _ => v[pos].1 = v[(pos + 1) % 300].1, // signature of another record
            }
            check_all_ways(&key, &view(&v), Err(BadSignature(pos)));
        }
    }

    #[test]
    fn several_bad_report_the_lowest_index() {
        let mut rng = Rng(3);
        let sk = SigningKey::from_bytes(&rng.bytes::<32>());
        let key = sk.verifying_key().to_bytes();
        let mut v = honest(&sk, 400, &mut rng);
        for pos in [398, 300, 123, 124, 201] {
            v[pos].0[0] ^= 1;
        }
        check_all_ways(&key, &view(&v), Err(BadSignature(123)));
        // A gate failure (S ≥ ℓ: top byte 0xff) after an equation failure in
        // the same chunk: the earlier equation failure is still the answer.
        v[130].1[63] = 0xff;
        check_all_ways(&key, &view(&v), Err(BadSignature(123)));
        v[123].0[0] ^= 1;
        v[124].0[0] ^= 1;
        check_all_ways(&key, &view(&v), Err(BadSignature(130)));
    }

    #[test]
    fn lowest_index_wins_when_a_later_chunk_fails_last() {
        // Chunk 0 fails early-ish (S ≥ ℓ at index 60, 100 kB messages);
        // chunk 1 fails at its last item with 1 MB messages, so its verdict
        // arrives long after chunk 0's: it must not overwrite the lower index.
        let mut rng = Rng(14);
        let sk = SigningKey::from_bytes(&rng.bytes::<32>());
        let key = sk.verifying_key().to_bytes();
        let mut v: Owned = (0..128)
            .map(|i| {
                let mut m = vec![(i % 251) as u8; if i < 64 { 100_000 } else { 1_000_000 }];
                m.extend_from_slice(&rng.bytes::<8>());
                let s = sk.sign(&m).to_bytes();
                (m, s)
            })
            .collect();
        v[60].1[63] = 0xff;
        v[127].0[0] ^= 1;
        for _ in 0..3 {
            assert_eq!(
                verify_all_chunked(&key, &view(&v), 2, 64),
                Err(BadSignature(60))
            );
        }
    }

    #[test]
    fn mixed_order_r_is_refused() {
        let mut rng = Rng(4);
        let (a, key) = raw_key(&mut rng);
        let vk = VerifyingKey::from_bytes(&key).unwrap();
        // Honest filler signatures are made with the same raw key (t = identity).
        let id = EdwardsPoint::identity();
        let mut dalek_accepted = 0;
        let mut evil: Owned = Vec::new();
        for j in 0..96 {
            let t = EIGHT_TORSION[1 + j % 7];
            let m = format!("evil {j}").into_bytes();
            let s = sign_with_r_offset(&a, &key, &m, &t, &mut rng);
            // Cofactored equation holds, cofactorless does not.
            assert!(!strict_ok(&key, &m, &s));
            let sig = Signature::from_bytes(&s);
            if ed25519_dalek::verify_batch(&[&m[..]], &[sig], &[vk]).is_ok() {
                dalek_accepted += 1;
            }
            assert_eq!(verify_all(&key, &[(&m[..], &s)], 1), Err(BadSignature(0)));
            evil.push((m, s));
        }
        // Each order-2/4/8 T is accepted by dalek's batch with prob. 1/2, 1/4,
        // 1/8; over 96 samples, zero acceptances has probability < 2^-20 and
        // the transcript coefficients are deterministic, so this is a fixed
        // fact of this seed: the hazard is real.
        assert!(dalek_accepted > 0, "dalek verify_batch accepted none");
        eprintln!("dalek verify_batch accepted {dalek_accepted}/96 mixed-order-R signatures");

        // Cancelling torsion: with two order-2 components the batch equation's
        // torsion part is (z_1 + z_2)·T2, zero whenever z_1 ≡ z_2 mod 2; the
        // subset screen must still refuse them.
        let t2 = EIGHT_TORSION[4];
        let t4 = EIGHT_TORSION[2];
        assert!(!t2.is_identity() && (t2 + t2).is_identity());
        assert!(!(t4 + t4).is_identity() && (t4 + t4 + t4 + t4).is_identity());
        for trial in 0..6usize {
            let mut v: Owned = (0..300)
                .map(|i| {
                    let m = format!("ok {trial} {i}").into_bytes();
                    let s = sign_with_r_offset(&a, &key, &m, &id, &mut rng);
                    (m, s)
                })
                .collect();
            let p1 = 10 + rng.below(280);
            let p2 = p1 + 1 + rng.below(299 - p1);
            let (tt1, tt2) = if trial % 2 == 0 { (t2, t2) } else { (t4, -t4) };
            v[p1].1 = sign_with_r_offset(&a, &key, &v[p1].0.clone(), &tt1, &mut rng);
            v[p2].1 = sign_with_r_offset(&a, &key, &v[p2].0.clone(), &tt2, &mut rng);
            check_all_ways(&key, &view(&v), Err(BadSignature(p1)));
            // And with four cancelling order-8 components spread over the batch.
            let t8 = EIGHT_TORSION[1];
            let ps = [3usize, 77, 150, 299];
            for (n, &p) in ps.iter().enumerate() {
                let t = if n % 2 == 0 { t8 } else { -t8 };
                v[p].1 = sign_with_r_offset(&a, &key, &v[p].0.clone(), &t, &mut rng);
            }
            check_all_ways(&key, &view(&v), Err(BadSignature(3)));
        }
        // All mixed-order ones at once, mixed into honest ones.
        let mut v: Owned = Vec::new();
        for (i, e) in evil.into_iter().enumerate() {
            let m = format!("filler {i}").into_bytes();
            let s = sign_with_r_offset(&a, &key, &m, &id, &mut rng);
            v.push((m, s));
            v.push(e);
        }
        check_all_ways(&key, &view(&v), Err(BadSignature(1)));
        // The fast path's torsion screen is what refuses them (not a gate):
        let pts: Vec<EdwardsPoint> = v
            .iter()
            .map(|(_, s)| {
                CompressedEdwardsY::from_slice(&s[..32])
                    .unwrap()
                    .decompress()
                    .unwrap()
            })
            .collect();
        let sels: Vec<u64> = (0..pts.len()).map(|_| rng.next()).collect();
        assert!(!all_torsion_free_whp(&pts, &sels));
        assert!(all_torsion_free_whp(
            &pts.iter().step_by(2).copied().collect::<Vec<_>>(),
            &sels[..96]
        ));
    }

    #[test]
    fn torsion_screen_catches_one_order_two_component_among_many() {
        // A single order-2 component hidden among 2000 clean points: each of
        // the 64 tests contains it with prob. 1/2; all must be run.
        let mut rng = Rng(5);
        let mut pts: Vec<EdwardsPoint> = (0..2000)
            .map(|_| EdwardsPoint::mul_base(&rng.scalar()))
            .collect();
        for trial in 0..8 {
            let pos = rng.below(pts.len());
            let saved = pts[pos];
            pts[pos] = saved + EIGHT_TORSION[4];
            let sels: Vec<u64> = (0..pts.len()).map(|_| rng.next()).collect();
            assert!(!all_torsion_free_whp(&pts, &sels), "trial {trial}");
            // Selectors that never pick it: the screen (rightly) cannot see it.
            let mut blind = sels.clone();
            blind[pos] = 0;
            assert!(all_torsion_free_whp(
                &pts.iter()
                    .enumerate()
                    .map(|(i, p)| if i == pos { saved } else { *p })
                    .collect::<Vec<_>>(),
                &blind
            ));
            pts[pos] = saved;
        }
    }

    #[test]
    fn every_one_of_the_64_selector_bits_is_a_torsion_test() {
        // Deterministic: a point with an order-2 component that only selector
        // bit j includes must be caught, for each j; clean points pass with
        // any selectors. Dropping or merging any test bit fails this.
        let mut rng = Rng(13);
        let mut pts: Vec<EdwardsPoint> = (0..300)
            .map(|_| EdwardsPoint::mul_base(&rng.scalar()))
            .collect();
        let sels: Vec<u64> = (0..pts.len()).map(|_| rng.next()).collect();
        assert!(all_torsion_free_whp(&pts, &sels));
        let pos = 137;
        pts[pos] += EIGHT_TORSION[4];
        for j in 0..64 {
            let mut s = sels.clone();
            s[pos] = 1u64 << j;
            assert!(!all_torsion_free_whp(&pts, &s), "bit {j}");
        }
        let mut s = sels.clone();
        s[pos] = 0;
        assert!(all_torsion_free_whp(&pts, &s));
    }

    /// S ← S + ℓ (same value mod ℓ, non-canonical encoding; never overflows
    /// 256 bits since S < ℓ < 2^253).
    fn add_ell_to_s(sig: &mut [u8; 64]) {
        // ℓ, little-endian.
        let ell = hex32("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010");
        let mut carry = 0u16;
        for (b, l) in sig[32..].iter_mut().zip(ell) {
            let x = *b as u16 + l as u16 + carry;
            *b = x as u8;
            carry = x >> 8;
        }
    }

    #[test]
    fn non_canonical_s_is_refused() {
        let mut rng = Rng(6);
        let sk = SigningKey::from_bytes(&rng.bytes::<32>());
        let key = sk.verifying_key().to_bytes();
        let mut v = honest(&sk, 500, &mut rng);
        for pos in [499usize, 250, 42] {
            add_ell_to_s(&mut v[pos].1);
            // Same scalar mod ℓ: the unstrict equation would still hold.
            assert!(!strict_ok(&key, &v[pos].0, &v[pos].1));
        }
        check_all_ways(&key, &view(&v), Err(BadSignature(42)));
    }

    /// Non-canonical encodings: y + p for y in 0..19 (both signs) and the sign
    /// bit on x = 0 (y = 1, y = −1).
    fn non_canonical_encodings() -> Vec<[u8; 32]> {
        let mut out = Vec::new();
        for y in 0u8..19 {
            for sign in [0u8, 0x80] {
                let mut b = [0xffu8; 32];
                b[0] = 0xed + y;
                b[31] = 0x7f | sign;
                out.push(b);
            }
        }
        let mut one = [0u8; 32];
        one[0] = 1;
        one[31] = 0x80;
        out.push(one);
        let mut m1 = [0xffu8; 32];
        m1[0] = 0xec;
        out.push(m1);
        out
    }

    #[test]
    fn non_canonical_r_encoding_is_refused() {
        // The byte-level canonicity gate equals decompress→compress round trip
        // on every decodable input we can think of, including large-order
        // points with y < 19 (their y + p encodings decode too).
        let mut rng = Rng(7);
        let mut decodable_large = 0;
        let mut cases = non_canonical_encodings();
        for t in EIGHT_TORSION.iter() {
            cases.push(t.compress().to_bytes());
        }
        for _ in 0..200 {
            cases.push(rng.bytes::<32>());
            cases.push(EdwardsPoint::mul_base(&rng.scalar()).compress().to_bytes());
        }
        for b in &cases {
            if let Some(p) = CompressedEdwardsY(*b).decompress() {
                assert_eq!(
                    is_canonical_encoding(b),
                    p.compress().to_bytes() == *b,
                    "{b:02x?}"
                );
                if is_canonical_encoding(b) {
                    assert_eq!(
                        r_gate(b, &small_order_encodings()).is_none(),
                        p.is_small_order()
                    );
                }
                if !is_canonical_encoding(b) && !p.is_small_order() {
                    decodable_large += 1;
                    assert!(r_gate(b, &small_order_encodings()).is_none());
                }
            }
        }
        assert!(
            decodable_large > 0,
            "expected some decodable non-canonical large-order encodings"
        );

        // End to end: signatures whose R bytes are a non-canonical encoding of
        // a point for which the cofactorless equation holds exactly
        // (R = identity / order-4 point with s = k·a: [s]B − [k]A = 0). Only
        // small-order points have known discrete logs among such encodings.
        let (a, key) = raw_key(&mut rng);
        let id = EdwardsPoint::identity();
        let mut v: Owned = (0..200)
            .map(|i| {
                let m = format!("m{i}").into_bytes();
                (m.clone(), sign_with_r_offset(&a, &key, &m, &id, &mut rng))
            })
            .collect();
        let mut positions = Vec::new();
        for enc in non_canonical_encodings() {
            if CompressedEdwardsY(enc).decompress().is_none() {
                continue;
            }
            let pos = 195 - 4 * positions.len();
            let k = challenge(&enc, &key, &v[pos].0);
            let s = k * a;
            v[pos].1[..32].copy_from_slice(&enc);
            v[pos].1[32..].copy_from_slice(s.as_bytes());
            assert!(!strict_ok(&key, &v[pos].0, &v[pos].1));
            positions.push(pos);
        }
        let lowest = *positions.iter().min().unwrap();
        check_all_ways(&key, &view(&v), Err(BadSignature(lowest)));
    }

    #[test]
    fn small_order_r_is_refused() {
        // R = small-order T with s = k·a (so [s]B − [k]A = 0): for T = identity
        // the cofactorless equation holds exactly; verify_strict refuses anyway.
        let mut rng = Rng(8);
        let (a, key) = raw_key(&mut rng);
        let id = EdwardsPoint::identity();
        for (j, t) in EIGHT_TORSION.iter().enumerate() {
            let mut v: Owned = (0..100)
                .map(|i| {
                    let m = format!("m{i}").into_bytes();
                    (m.clone(), sign_with_r_offset(&a, &key, &m, &id, &mut rng))
                })
                .collect();
            let pos = 10 * j + 3;
            let enc = t.compress().to_bytes();
            let k = challenge(&enc, &key, &v[pos].0);
            v[pos].1[..32].copy_from_slice(&enc);
            v[pos].1[32..].copy_from_slice((k * a).as_bytes());
            if j == 0 {
                // Identity R: the exact cofactorless equation holds.
                let r = EdwardsPoint::mul_base(&(k * a)) - EdwardsPoint::mul_base(&a) * k;
                assert!(r.is_identity());
            }
            check_all_ways(&key, &view(&v), Err(BadSignature(pos)));
        }
    }

    #[test]
    fn small_order_key_refuses_everything() {
        let mut rng = Rng(9);
        let mut keys: Vec<[u8; 32]> = EIGHT_TORSION
            .iter()
            .map(|t| t.compress().to_bytes())
            .collect();
        keys.extend(non_canonical_encodings().into_iter().filter(|b| {
            CompressedEdwardsY(*b)
                .decompress()
                .is_some_and(|p| p.is_small_order())
        }));
        for key in keys {
            // With A of small order, R = rB, s = r satisfies [s]B = R + [k]A
            // whenever [k]A = 0 (always for A = identity): verify() accepts.
            let v: Owned = (0..50)
                .map(|i| {
                    let r = rng.scalar();
                    let mut s = [0u8; 64];
                    s[..32].copy_from_slice(&EdwardsPoint::mul_base(&r).compress().to_bytes());
                    s[32..].copy_from_slice(r.as_bytes());
                    (format!("m{i}").into_bytes(), s)
                })
                .collect();
            if key == EdwardsPoint::identity().compress().to_bytes() {
                let vk = VerifyingKey::from_bytes(&key).unwrap();
                use ed25519_dalek::Verifier;
                assert!(vk.verify(&v[0].0, &Signature::from_bytes(&v[0].1)).is_ok());
            }
            check_all_ways(&key, &view(&v), Err(BadSignature(0)));
            assert_eq!(verify_all(&key, &[], 0), Ok(()));
        }
        // An undecodable key: everything fails too.
        let mut bad_key = [0u8; 32];
        bad_key[0] = 2; // y = 2 is not on the curve
        assert!(VerifyingKey::from_bytes(&bad_key).is_err());
        assert_eq!(
            verify_all(&bad_key, &[(&b"x"[..], &[0u8; 64])], 0),
            Err(BadSignature(0))
        );
    }

    #[test]
    fn non_canonical_key_encoding_of_a_large_order_point_is_what_verify_strict_says() {
        // VerifyingKey::from_bytes only decompresses: y + p encodings of
        // large-order points are accepted as keys, and verify_strict hashes
        // those bytes as given. Nobody knows such a point's discrete log, so
        // no signature verifies, but the verdicts must still coincide.
        let mut rng = Rng(15);
        let keys: Vec<[u8; 32]> = non_canonical_encodings()
            .into_iter()
            .filter(|b| {
                CompressedEdwardsY(*b)
                    .decompress()
                    .is_some_and(|p| !p.is_small_order())
            })
            .collect();
        assert!(!keys.is_empty());
        let sk = SigningKey::from_bytes(&rng.bytes::<32>());
        let v = honest(&sk, 50, &mut rng);
        for key in keys {
            let vk = VerifyingKey::from_bytes(&key).unwrap();
            assert_ne!(vk.to_bytes(), EdwardsPoint::from(vk).compress().to_bytes());
            check_all_ways(&key, &view(&v), Err(BadSignature(0)));
            assert_eq!(verify_all(&key, &[], 0), Ok(()));
        }
    }

    #[test]
    fn key_with_torsion_component_matches_verify_strict() {
        // A = aB + T8. verify_strict computes [s]B − [k]A = rB − [k]T8 for
        // s = r + k·a; so it accepts iff R = rB − [k mod 8]T8, where k depends
        // on R: grind R over the 8 guesses. These accepted signatures have R
        // with a torsion component, which the fast path would (wrongly) refuse.
        let mut rng = Rng(10);
        let a = rng.scalar();
        let t8 = EIGHT_TORSION[1];
        let big_a = EdwardsPoint::mul_base(&a) + t8;
        let key = big_a.compress().to_bytes();
        assert!(!big_a.is_small_order() && !big_a.is_torsion_free());
        let mut v: Owned = Vec::new();
        let mut torsioned_r = 0;
        while v.len() < 100 {
            let m = format!("m{}", v.len()).into_bytes();
            let r = rng.scalar();
            let found = (0u8..8).find_map(|j| {
                let big_r = EdwardsPoint::mul_base(&r) - t8 * Scalar::from(j);
                let rb = big_r.compress().to_bytes();
                let k = challenge(&rb, &key, &m);
                (k.as_bytes()[0] % 8 == j).then(|| {
                    let mut s = [0u8; 64];
                    s[..32].copy_from_slice(&rb);
                    s[32..].copy_from_slice((r + k * a).as_bytes());
                    (j, s)
                })
            });
            if let Some((j, s)) = found {
                assert!(strict_ok(&key, &m, &s));
                torsioned_r += usize::from(j != 0);
                v.push((m, s));
            }
        }
        assert!(torsioned_r > 50);
        check_all_ways(&key, &view(&v), Ok(()));
        // Signatures correct for the prime-order part of A only: R = rB
        // (torsion-free), s = r + k·a, with k ≡ 4 mod 8 so [k]T8 = T2 ≠ 0 and
        // verify_strict refuses. A batch equation under this key would see
        // the torsion (Σ z_i k_i)·T8 = (Σ z_i mod 2)·T2 only half the time:
        // this is why such keys take the per-item path. 40 independent tries.
        for trial in 0..40 {
            let m = format!("prime part only {trial}").into_bytes();
            let s = loop {
                let r = rng.scalar();
                let rb = EdwardsPoint::mul_base(&r).compress().to_bytes();
                let k = challenge(&rb, &key, &m);
                if k.as_bytes()[0] % 8 == 4 {
                    let mut s = [0u8; 64];
                    s[..32].copy_from_slice(&rb);
                    s[32..].copy_from_slice((r + k * a).as_bytes());
                    break s;
                }
            };
            assert!(!strict_ok(&key, &m, &s));
            assert_eq!(
                verify_all_chunked(&key, &[(&m[..], &s)], 1, 64),
                Err(BadSignature(0)),
                "trial {trial}"
            );
        }
        v[61].0.push(0);
        v[77].1[33] ^= 4;
        check_all_ways(&key, &view(&v), Err(BadSignature(61)));
    }

    #[test]
    fn random_corruptions_match_per_item_verify_strict() {
        let mut rng = Rng(11);
        for case in 0..40 {
            let (a, key) = raw_key(&mut rng);
            let n = rng.below(400);
            let id = EdwardsPoint::identity();
            let mut v: Owned = (0..n)
                .map(|i| {
                    let m = format!("c{case} r{i}").into_bytes();
                    (m.clone(), sign_with_r_offset(&a, &key, &m, &id, &mut rng))
                })
                .collect();
            let corruptions = if n == 0 { 0 } else { rng.below(4) };
            for _ in 0..corruptions {
                let pos = rng.below(n);
                let m = v[pos].0.clone();
                match rng.below(7) {
                    0 => v[pos].0.push(1),
                    1 => v[pos].1[rng.below(64)] ^= 1 << rng.below(8),
                    2 => {
                        v[pos].1 = sign_with_r_offset(
                            &a,
                            &key,
                            &m,
                            &EIGHT_TORSION[1 + rng.below(7)],
                            &mut rng,
                        )
                    }
                    3 => add_ell_to_s(&mut v[pos].1),
                    4 => v[pos].1[..32]
                        .copy_from_slice(&EIGHT_TORSION[rng.below(8)].compress().to_bytes()),
                    5 => v[pos].1 = [0u8; 64],
                    _ => {} // no-op corruption: still valid
                }
            }
            let items = view(&v);
            let expect = reference(&key, &items);
            let threads = rng.below(3);
            let chunk = 1 + rng.below(150);
            assert_eq!(
                verify_all_chunked(&key, &items, threads, chunk),
                expect,
                "case {case}"
            );
            assert_eq!(verify_all(&key, &items, threads), expect, "case {case}");
        }
    }
}
