//! Streaming log-sum-exp over f32 values: an online maximum and a rescaled sum of
//! exponentials, in one pass, accumulated in f64.
//!
//! The values are read in blocks of [`BLOCK`]: the block's maximum is taken first (cheap, the
//! block sits in L1), the running sum is rescaled by `exp(old_max − new_max)` when it grows,
//! then `exp(x − max)` of every element is added. Nothing of the size of the input is ever
//! written: no shifted copy, no log-softmax.
//!
//! Accuracy. Every term `exp(x − max)` lies in `[0, 1]` and at least one is exactly 1, so the
//! sum is at least 1 and adding terms in f64 costs nothing measurable in accuracy. Each term
//! carries two f32 roundings: the difference `x − max` (relative error ≤ 2⁻²⁴, i.e. an
//! absolute error ≤ 2⁻²⁴·|x − max| in the exponent) and the exponential ([`exp_le0`], ≤ 2 ulp).
//! Weighted by the terms themselves, the first is at most 2⁻²⁴ times the softmax-weighted mean
//! of `max − x`, which is bounded by the entropy of the softmax, ≤ ln n. The sum therefore has
//! a relative error below `2⁻²⁴·(ln n + 4)`: 1.0e-6 for n = 131,072.
//!
//! Bad values need no test in the hot loop: a NaN turns the sum into NaN (through the
//! exponential, and NaN stays NaN through every later rescaling and addition) and +∞ becomes
//! the maximum, so the caller detects both after the pass. −∞ adds exactly 0.

use crate::kernels::multiversion::multiversion;

/// Elements per block: the unit of the online maximum.
const BLOCK: usize = 256;
/// Longest input of [`StreamingLse::of_short_excluding`] (at most one block).
pub(crate) const SHORT: usize = 64;
/// Lanes of independent partial sums (one AVX2 register of f32, two of f64).
const LANES: usize = 8;

/// `ln(f32::MIN_POSITIVE)`: below it `exp` leaves f32's normal range and is flushed to 0
/// (the largest term is 1, so a dropped term weighs under 1.2e-38 of the sum).
const EXP_LO: f32 = -87.336_54;
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split Cody–Waite style: `LN2_HI` has 9 significant bits, so `n·LN2_HI` is exact for
/// the |n| ≤ 126 that occur here.
const LN2_HI: f32 = 0.693_359_4; // = 355/512 exactly
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5·2²³: adding it rounds an f32 in ±2²² to the nearest integer, which then sits in the
/// low mantissa bits (no float-to-int conversion needed, so the loop vectorises on SSE2).
const ROUND_MAGIC: f32 = 12_582_912.0;
/// Minimax polynomial for `(exp(r) − 1 − r)/r²` on |r| ≤ ln2/2 (Cephes `expf`; its last
/// coefficient, 0.50000001201, is 0.5 in f32).
const P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// `exp(d)` for `d ≤ 0` (−∞ gives 0, NaN gives NaN), within 2 ulp of the true value where the
/// result is normal, 0 below `EXP_LO`. Branch-free so that loops over it vectorise.
#[inline(always)]
pub(crate) fn exp_le0(d: f32) -> f32 {
    // Clamp into the range where 2ⁿ is a normal float; −∞ and tiny values land here and are
    // zeroed by the final select. A NaN fails the comparison and flows through as NaN.
    let x = if d < EXP_LO { EXP_LO } else { d };
    let t = x * LOG2E + ROUND_MAGIC;
    let n = t - ROUND_MAGIC;
    let n_bits = (t.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut y = P[0];
    y = y * r + P[1];
    y = y * r + P[2];
    y = y * r + P[3];
    y = y * r + P[4];
    y = y * r + P[5];
    let y = y * r * r + r + 1.0;
    // 2ⁿ built from its exponent field; n ≥ −126 after the clamp, so the field is ≥ 1.
    let two_n = f32::from_bits((n_bits.wrapping_add(127) as u32) << 23);
    let e = y * two_n;
    if d < EXP_LO { 0.0 } else { e }
}

/// The running state of a streaming log-sum-exp: `Σ exp(xᵢ) = exp(max) · sum()`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamingLse {
    /// The largest value seen so far (−∞ before any value above −∞).
    max: f32,
    /// `Σ exp(xᵢ − max)` in independent lanes, merged in a fixed order by [`Self::sum`].
    lanes: [f64; LANES],
}

impl StreamingLse {
    /// The state of an empty sequence: max −∞, sum 0.
    pub(crate) fn new() -> Self {
        StreamingLse {
            max: f32::NEG_INFINITY,
            lanes: [0.0; LANES],
        }
    }

    /// The running maximum.
    pub(crate) fn max(&self) -> f32 {
        self.max
    }

    /// `Σ exp(xᵢ − max)` over the values seen: ≥ 1 once a finite value was seen, 0 if none,
    /// NaN if a NaN or +∞ was seen.
    pub(crate) fn sum(&self) -> f64 {
        let l = &self.lanes;
        ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
    }

    /// The state of every entry of `x` but `x[t]`, for `x` of at most [`SHORT`] entries:
    /// the same bits as pushing a copy of `x` with `x[t] = −∞` (one block) into a new state.
    pub(crate) fn of_short_excluding(x: &[f32], t: usize) -> Self {
        debug_assert!(x.len() <= SHORT && t < x.len());
        reduce_excluding(x, t)
    }

    /// Take in `x`. The result depends only on the sequence of values and how it is split
    /// into `push` calls, never on the CPU's vector width or on threads.
    pub(crate) fn push(&mut self, x: &[f32]) {
        accumulate(self, x)
    }
}

multiversion! {
    fn accumulate(st: &mut StreamingLse, x: &[f32]) {
        // Work on locals: the compiler keeps them in registers, where fields behind `st`
        // would be reloaded around every store.
        let (mut max, mut lanes) = (st.max, st.lanes);
        let mut e = [0f32; BLOCK];
        for b in x.chunks(BLOCK) {
            let shift = rebase(&mut max, &mut lanes, block_max(b));
            // Exponentials into a buffer first: a plain element loop that vectorises at full
            // f32 width, apart from the f64 accumulation below.
            let e = &mut e[..b.len()];
            for (o, &v) in e.iter_mut().zip(b) {
                *o = exp_le0(v - shift);
            }
            add_to_lanes(&mut lanes, e);
        }
        (st.max, st.lanes) = (max, lanes);
    }
}

multiversion! {
    fn reduce_excluding(x: &[f32], t: usize) -> StreamingLse {
        // Entry `t` reads as −∞, which adds exactly 0. A select on the index keeps the loops
        // branch-free, and reading `x` in place (no copy with the target overwritten) avoids
        // a failed store-to-load forward that costs more than the row.
        let at = |i: usize, v: f32| if i == t { f32::NEG_INFINITY } else { v };
        let mut mx = [f32::NEG_INFINITY; LANES];
        let chunks = x.chunks_exact(LANES);
        let rest = chunks.remainder();
        for (c, ch) in chunks.enumerate() {
            for k in 0..LANES {
                let v = at(c * LANES + k, ch[k]);
                mx[k] = if v > mx[k] { v } else { mx[k] };
            }
        }
        let base = x.len() - rest.len();
        for (k, &v) in rest.iter().enumerate() {
            let v = at(base + k, v);
            mx[k] = if v > mx[k] { v } else { mx[k] };
        }
        let mut st = StreamingLse::new();
        let shift = rebase(&mut st.max, &mut st.lanes, horizontal_max(&mx));
        let mut e = [0f32; SHORT];
        let e = &mut e[..x.len()];
        for (i, (o, &v)) in e.iter_mut().zip(x).enumerate() {
            *o = exp_le0(at(i, v) - shift);
        }
        add_to_lanes(&mut st.lanes, e);
        st
    }
}

/// Add a block's exponentials to the lanes, element `i` to lane `i mod LANES`.
#[inline(always)]
fn add_to_lanes(lanes: &mut [f64; LANES], e: &[f32]) {
    let chunks = e.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..LANES {
            lanes[k] += c[k] as f64;
        }
    }
    for (k, &v) in rest.iter().enumerate() {
        lanes[k] += v as f64;
    }
}

/// The largest element of a block (−∞ for an empty one; NaN is passed over).
#[inline(always)]
fn block_max(b: &[f32]) -> f32 {
    let mut mx = [f32::NEG_INFINITY; LANES];
    let chunks = b.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..LANES {
            mx[k] = if c[k] > mx[k] { c[k] } else { mx[k] };
        }
    }
    for (k, &v) in rest.iter().enumerate() {
        mx[k] = if v > mx[k] { v } else { mx[k] };
    }
    horizontal_max(&mx)
}

/// Raise the running maximum to `block_max` if larger (rescaling the sum), and return the
/// shift to subtract from the block's values.
#[inline(always)]
fn rebase(max: &mut f32, lanes: &mut [f64; LANES], block_max: f32) -> f32 {
    if block_max > *max {
        // Nothing to rescale while every value so far was −∞ (the lanes are 0).
        if *max != f32::NEG_INFINITY {
            let factor = (*max as f64 - block_max as f64).exp();
            for l in lanes.iter_mut() {
                *l *= factor;
            }
        }
        *max = block_max;
    }
    // While every value so far is −∞ (or NaN), shift by 0: −∞ − 0 = −∞ adds 0 and NaN stays
    // NaN, where −∞ − (−∞) would turn a masked value into NaN.
    if *max == f32::NEG_INFINITY { 0.0 } else { *max }
}

#[inline(always)]
fn horizontal_max(mx: &[f32; LANES]) -> f32 {
    mx.iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

#[cfg(test)]
mod tests {
    //! The streaming kernel against its scalar twin: two passes in f64 with the standard
    //! library's `exp`.
    use super::*;
    use crate::rng::SplitMix64;
    use proptest::prelude::*;

    /// (max, Σ exp(x − max)) in f64, the obvious way.
    fn twin(x: &[f32]) -> (f64, f64) {
        let m = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        if m == f64::NEG_INFINITY {
            return (m, 0.0);
        }
        (m, x.iter().map(|&v| (v as f64 - m).exp()).sum())
    }

    fn lse_of(x: &[f32]) -> StreamingLse {
        let mut s = StreamingLse::new();
        s.push(x);
        s
    }

    #[test]
    fn exp_le0_is_within_two_ulp_where_normal() {
        // A dense sweep of [EXP_LO, 0] plus the exact endpoints.
        let mut worst = 0f64;
        let steps = 2_000_000;
        for i in 0..=steps {
            let d = EXP_LO * i as f32 / steps as f32;
            let want = (d as f64).exp();
            let got = exp_le0(d) as f64;
            if want >= f32::MIN_POSITIVE as f64 {
                worst = worst.max((got - want).abs() / want);
            }
        }
        assert!(
            worst <= 2.0 * f32::EPSILON as f64,
            "worst relative error {worst:e}"
        );
        assert_eq!(exp_le0(0.0), 1.0);
        assert_eq!(exp_le0(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_le0(-1e30), 0.0);
        assert_eq!(exp_le0(f32::MIN), 0.0);
        assert!(exp_le0(f32::NAN).is_nan());
    }

    proptest! {
        #[test]
        fn matches_the_twin(len in 1usize..700, scale in prop_oneof![Just(1.0f32), Just(30.0), Just(1e4)], seed: u64) {
            let mut rng = SplitMix64::new(seed);
            let x: Vec<f32> = (0..len).map(|_| (rng.normal() as f32) * scale).collect();
            let s = lse_of(&x);
            let (m, sum) = twin(&x);
            prop_assert_eq!(s.max() as f64, m);
            let bound = f32::EPSILON as f64 / 2.0 * ((len as f64).ln() + 4.0);
            prop_assert!((s.sum() - sum).abs() <= bound * sum, "{} vs {}", s.sum(), sum);
        }
    }

    #[test]
    fn short_excluding_matches_push_of_a_masked_copy() {
        for len in [1, 7, 8, 9, 17, 63, 64] {
            let x: Vec<f32> = (0..len).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
            for t in [0, len / 2, len - 1] {
                let mut masked = x.clone();
                masked[t] = f32::NEG_INFINITY;
                let a = lse_of(&masked);
                let b = StreamingLse::of_short_excluding(&x, t);
                assert_eq!((a.max(), a.sum().to_bits()), (b.max(), b.sum().to_bits()));
            }
        }
    }

    #[test]
    fn split_pushes_and_rising_maxima() {
        // An increasing ramp forces a rescale at every block.
        let x: Vec<f32> = (0..1000).map(|i| i as f32 * 0.05).collect();
        let mut s = StreamingLse::new();
        s.push(&x[..333]);
        s.push(&x[333..]);
        let (m, sum) = twin(&x);
        assert_eq!(s.max() as f64, m);
        assert!((s.sum() - sum).abs() <= 1e-6 * sum);
    }

    #[test]
    fn masked_and_bad_values() {
        let ninf = f32::NEG_INFINITY;
        let s = lse_of(&[ninf; 100]);
        assert_eq!((s.max(), s.sum()), (ninf, 0.0));
        let s = lse_of(&[ninf, 0.0, ninf, ninf]);
        assert_eq!((s.max(), s.sum()), (0.0, 1.0));
        // A NaN surrounded by −∞ (block max −∞) still poisons the sum.
        let mut x = vec![ninf; 130];
        x[70] = f32::NAN;
        assert!(lse_of(&x).sum().is_nan());
        x[3] = 1.0;
        assert!(lse_of(&x).sum().is_nan());
        let mut x = vec![0.0; 130];
        x[129] = f32::INFINITY;
        let s = lse_of(&x);
        assert_eq!(s.max(), f32::INFINITY);
        // Extremes of the range do not overflow: f32::MAX − (−f32::MAX) is −∞ in f32 → 0.
        let s = lse_of(&[f32::MAX, -f32::MAX, f32::MAX, 1e30, -1e30]);
        assert_eq!((s.max(), s.sum()), (f32::MAX, 2.0));
    }
}
