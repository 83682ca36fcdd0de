//! The arithmetic of one quantization group, shared by every kernel backend.
//!
//! Kept separate from the loops so the CPU kernels, their scalar twins and (later) the CUDA
//! kernels compute exactly the same codes: every backend must follow these formulas to the
//! bit. Rounding uses the `1.5·2^23` trick (adding it leaves the rounded integer in the low
//! mantissa bits), which is round-half-to-even and vectorises with plain SSE2.

use half::{bf16, f16};

use crate::quant::spec::ScaleDType;

/// `1.5 · 2^23`: for |x| ≤ 2^22, the bits of `x + MAGIC` minus `MAGIC_BITS` are `rne(x)`.
const MAGIC: f32 = 12_582_912.0;
const MAGIC_BITS: i32 = 0x4B40_0000;

/// `x` rounded to the nearest integer, ties to even, as an `i32`. Valid for |x| ≤ 2^22.
#[inline(always)]
pub(crate) fn round_to_i32(x: f32) -> i32 {
    ((x + MAGIC).to_bits() as i32).wrapping_sub(MAGIC_BITS)
}

/// Decode-and-encode parameters of one uniform group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct UniformParams {
    /// The stored scale (exactly representable in the scale dtype). 0 for an all-zero group.
    pub scale: f32,
    /// What weights are divided by: the scale, or 1 for an all-zero group (whose weights are
    /// all 0, so the codes come out at the zero point either way).
    pub divisor: f32,
    /// The code that decodes to 0.
    pub zero: i32,
    /// Smallest and largest `q − zero`.
    pub lo: f32,
    pub hi: f32,
}

impl UniformParams {
    /// Parameters of a group whose values span `[min, max]` (both finite).
    ///
    /// Returns `None` when the scale does not fit the scale dtype.
    pub(crate) fn from_range(
        min: f32,
        max: f32,
        bits: u8,
        symmetric: bool,
        dtype: ScaleDType,
    ) -> Option<Self> {
        let scale = store_scale_up(raw_uniform_scale(min, max, bits, symmetric), dtype)?;
        if symmetric {
            let qmax = ((1i32 << (bits - 1)) - 1) as f32;
            Some(Self::with_scale(scale, 1 << (bits - 1), -qmax, qmax))
        } else {
            let lo = min.min(0.0);
            let qmax = ((1i32 << bits) - 1) as f32;
            let zero = if scale > 0.0 {
                round_to_i32(-lo / scale).clamp(0, qmax as i32)
            } else {
                0
            };
            Some(Self::with_scale(
                scale,
                zero,
                -(zero as f32),
                qmax - zero as f32,
            ))
        }
    }

    fn with_scale(scale: f32, zero: i32, lo: f32, hi: f32) -> Self {
        UniformParams {
            scale,
            divisor: if scale > 0.0 { scale } else { 1.0 },
            zero,
            lo,
            hi,
        }
    }

    /// Nearest-rounding code of `w`.
    #[inline(always)]
    pub(crate) fn encode_nearest(&self, w: f32) -> u8 {
        let t = w / self.divisor;
        let t = if t < self.lo { self.lo } else { t };
        let t = if t > self.hi { self.hi } else { t };
        (round_to_i32(t) + self.zero) as u8
    }

    /// Stochastic-rounding code of `w` given a uniform draw `u ∈ [0, 1)`:
    /// `floor(w/scale + u)`, clamped to the grid.
    #[inline(always)]
    pub(crate) fn encode_stochastic(&self, w: f32, u: f32) -> u8 {
        let t = w / self.divisor;
        let t = if t < self.lo { self.lo } else { t };
        let t = if t > self.hi { self.hi } else { t };
        let y = t + u;
        let r = round_to_i32(y);
        let r = if r as f32 > y { r - 1 } else { r };
        let r = r.clamp(self.lo as i32, self.hi as i32);
        (r + self.zero) as u8
    }

    /// The value code `q` stands for: `scale · (q − zero)`, one rounding.
    #[inline(always)]
    pub(crate) fn decode(scale: f32, zero: i32, q: u8) -> f32 {
        (q as i32 - zero) as f32 * scale
    }
}

/// The scale of a uniform group spanning `[min, max]`, before rounding to the storage dtype:
/// `absmax / (2^(b−1) − 1)` symmetric, `(max − min) / (2^b − 1)` asymmetric over the range
/// widened to include 0 (so 0 is exactly representable and the zero point is a valid code).
pub(crate) fn raw_uniform_scale(min: f32, max: f32, bits: u8, symmetric: bool) -> f32 {
    if symmetric {
        let qmax = ((1i32 << (bits - 1)) - 1) as f32;
        positive_ratio(min.abs().max(max.abs()), qmax)
    } else {
        let qmax = ((1i32 << bits) - 1) as f32;
        positive_ratio(max.max(0.0) - min.min(0.0), qmax)
    }
}

/// `num / den` for positive `num`, never 0 when `num > 0` (a subnormal range would underflow).
fn positive_ratio(num: f32, den: f32) -> f32 {
    let r = num / den;
    if r == 0.0 && num > 0.0 {
        f32::from_bits(1)
    } else {
        r
    }
}

/// Round a non-negative scale *up* to the storage dtype (so the grid still covers the group).
pub(crate) fn store_scale_up(x: f32, dtype: ScaleDType) -> Option<f32> {
    if !x.is_finite() {
        return None;
    }
    let v = match dtype {
        ScaleDType::F32 => x,
        ScaleDType::F16 => {
            let h = f16::from_f32(x);
            if h.to_f32() < x {
                f16::from_bits(h.to_bits() + 1).to_f32()
            } else {
                h.to_f32()
            }
        }
        ScaleDType::BF16 => {
            let h = bf16::from_f32(x);
            if h.to_f32() < x {
                bf16::from_bits(h.to_bits() + 1).to_f32()
            } else {
                h.to_f32()
            }
        }
        ScaleDType::E8M0 => pow2_up(x)?,
    };
    v.is_finite().then_some(v)
}

/// Smallest power of two `2^k ≥ x` with `k ∈ [−127, 127]` (E8M0's range); `None` above it.
pub(crate) fn pow2_up(x: f32) -> Option<f32> {
    let k = exponent_up(x);
    (k <= 127).then(|| 2f32.powi(k.max(-127)))
}

/// The power of two nearest to `x` in linear scale (ties up), clamped to E8M0's range.
fn pow2_nearest(x: f32) -> Option<f32> {
    if x <= 0.0 {
        return Some(2f32.powi(-127));
    }
    let k = exponent_up(x);
    let (lo, hi) = (2f64.powi(k - 1), 2f64.powi(k));
    let k = if (x as f64 - lo) < (hi - x as f64) {
        k - 1
    } else {
        k
    };
    (k <= 127).then(|| 2f32.powi(k.max(-127)))
}

/// `ceil(log2 x)` for positive finite `x`, exactly (from the bits, not a float log); very
/// small or zero `x` give −127 or less.
fn exponent_up(x: f32) -> i32 {
    if x <= 0.0 {
        return -127;
    }
    let bits = x.to_bits();
    let (exp, man) = (((bits >> 23) & 0xff) as i32, bits & 0x7f_ffff);
    if exp == 0 {
        // Subnormal: x = man · 2^−149.
        let top = 31 - man.leading_zeros() as i32; // floor(log2 man)
        let k = top - 149;
        if man.is_power_of_two() { k } else { k + 1 }
    } else if man == 0 {
        exp - 127
    } else {
        exp - 126
    }
}

/// Round a scale to the nearest value of the storage dtype.
pub(crate) fn store_scale_nearest(x: f32, dtype: ScaleDType) -> Option<f32> {
    let v = match dtype {
        ScaleDType::F32 => x,
        ScaleDType::F16 => f16::from_f32(x).to_f32(),
        ScaleDType::BF16 => bf16::from_f32(x).to_f32(),
        ScaleDType::E8M0 => pow2_nearest(x)?,
    };
    v.is_finite().then_some(v)
}

/// The uniform draw in `[0, 1)` for element `index` under `seed`: the top 24 bits of
/// SplitMix64 at state `seed + (index + 1)·γ`. Counter-based, so any split of the work
/// over threads draws the same numbers.
#[inline(always)]
pub(crate) fn uniform_draw(seed: u64, index: u64) -> f32 {
    (crate::rng::nth(seed, index.wrapping_add(1)) >> 40) as f32 * (1.0 / 16_777_216.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn magic_rounding_is_round_half_even(x in -4_194_304.0f32..4_194_304.0) {
            prop_assert_eq!(round_to_i32(x), x.round_ties_even() as i32);
        }

        #[test]
        fn f16_scale_rounds_up_to_a_representable_value(x in 1e-9f32..6e4) {
            let v = store_scale_up(x, ScaleDType::F16).unwrap();
            prop_assert!(v >= x);
            prop_assert_eq!(f16::from_f32(v).to_f32(), v);
            // …and is the smallest such value.
            let below = f16::from_bits(f16::from_f32(v).to_bits() - 1).to_f32();
            prop_assert!(below < x);
        }

        #[test]
        fn draws_are_in_unit_interval(seed: u64, i: u64) {
            let u = uniform_draw(seed, i);
            prop_assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn e8m0_scales_round_up_to_powers_of_two() {
        assert_eq!(store_scale_up(1.0, ScaleDType::E8M0), Some(1.0));
        assert_eq!(store_scale_up(1.0001, ScaleDType::E8M0), Some(2.0));
        assert_eq!(store_scale_up(0.3, ScaleDType::E8M0), Some(0.5));
        assert_eq!(
            store_scale_up(3e-39, ScaleDType::E8M0),
            Some(2f32.powi(-127))
        );
        assert_eq!(
            store_scale_up(1e-44, ScaleDType::E8M0),
            Some(2f32.powi(-127))
        );
        assert_eq!(store_scale_up(2e38, ScaleDType::E8M0), None);
        assert_eq!(store_scale_nearest(1.4, ScaleDType::E8M0), Some(1.0));
        assert_eq!(store_scale_nearest(1.6, ScaleDType::E8M0), Some(2.0));
        for k in -149..=127 {
            // 2^k from its bits (powi underflows through 2^149 for the smallest ones).
            let x = if k >= -126 {
                f32::from_bits(((k + 127) as u32) << 23)
            } else {
                f32::from_bits(1 << (k + 149))
            };
            assert_eq!(exponent_up(x), k);
            if k < 127 {
                assert_eq!(exponent_up(x * 1.5), k + 1);
            }
        }
    }

    #[test]
    fn ties_go_to_even() {
        assert_eq!(round_to_i32(2.5), 2);
        assert_eq!(round_to_i32(3.5), 4);
        assert_eq!(round_to_i32(-2.5), -2);
        assert_eq!(round_to_i32(-0.4), 0);
    }

    #[test]
    fn scale_overflow_is_reported() {
        assert_eq!(store_scale_up(70_000.0, ScaleDType::F16), None);
        assert_eq!(store_scale_up(f32::INFINITY, ScaleDType::F32), None);
        assert!(store_scale_up(70_000.0, ScaleDType::BF16).is_some());
    }

    #[test]
    fn draws_look_uniform() {
        // Mean 1/2 and variance 1/12 of U[0,1), within 5 standard errors for n = 100k.
        let n = 100_000;
        let xs: Vec<f64> = (0..n).map(|i| uniform_draw(42, i) as f64).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 5.0 * (1.0f64 / 12.0 / n as f64).sqrt());
        assert!((var - 1.0 / 12.0).abs() < 0.002);
    }

    #[test]
    fn asymmetric_zero_point_is_a_valid_code() {
        let p = UniformParams::from_range(0.5, 3.0, 4, false, ScaleDType::F32).unwrap();
        assert_eq!(p.zero, 0); // range widened to [0, 3]
        assert_eq!(p.scale, 3.0 / 15.0);
        let p = UniformParams::from_range(-3.0, -1.0, 4, false, ScaleDType::F32).unwrap();
        assert_eq!(p.zero, 15);
        let p = UniformParams::from_range(0.0, 0.0, 4, false, ScaleDType::F16).unwrap();
        assert_eq!((p.scale, p.zero), (0.0, 0));
        assert_eq!(p.encode_nearest(0.0), 0);
    }
}
