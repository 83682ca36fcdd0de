//! Small floating-point element formats: FP8 (E4M3, E5M2) and FP4 (E2M1).
//!
//! The bit layouts follow the OCP 8-bit floating point specification (OFP8, 2023) and the
//! OCP Microscaling Formats specification v1.0: a sign bit, `e` exponent bits with bias
//! `2^(e−1) − 1` (E2M1: bias 1), `m` mantissa bits, subnormals when the exponent field is 0.
//! Special values differ per format, which is why each is spelled out here:
//!
//! | format | max finite | min subnormal | infinities | NaN codes |
//! |---|---|---|---|---|
//! | E4M3 (`FN`) | 448 | 2^−9 | none | `S.1111.111` |
//! | E5M2 | 57344 | 2^−16 | `S.11111.00` | `S.11111.{01,10,11}` |
//! | E2M1 | 6 | 0.5 | none | none |
//!
//! Decoding is a closed formula on the bit fields; the tests compare it with an independent
//! enumeration of each format's values.

/// A small float element format. Codes are the format's raw bits (8 or 4 of them).
///
/// ```
/// use quantlens::FloatFormat;
/// assert_eq!(FloatFormat::E4M3.max_finite(), 448.0);
/// assert_eq!(FloatFormat::E4M3.decode(0x7E), 448.0); // S=0, E=1111, M=110
/// assert!(FloatFormat::E4M3.decode(0x7F).is_nan());
/// assert_eq!(FloatFormat::E2M1.decode(0b0111), 6.0);
/// assert_eq!(FloatFormat::E5M2.decode(0x7C), f32::INFINITY);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FloatFormat {
    /// FP8 with 4 exponent and 3 mantissa bits, bias 7, no infinities (`float8_e4m3fn`).
    E4M3,
    /// FP8 with 5 exponent and 2 mantissa bits, bias 15, IEEE-style infinities and NaNs.
    E5M2,
    /// FP4 with 2 exponent and 1 mantissa bit, bias 1, no infinities or NaNs (MXFP4's element).
    E2M1,
}

impl FloatFormat {
    /// Bits per code (8 or 4).
    pub fn bits(&self) -> u8 {
        match self {
            FloatFormat::E4M3 | FloatFormat::E5M2 => 8,
            FloatFormat::E2M1 => 4,
        }
    }
    /// Exponent field width.
    pub fn exponent_bits(&self) -> u8 {
        match self {
            FloatFormat::E4M3 => 4,
            FloatFormat::E5M2 => 5,
            FloatFormat::E2M1 => 2,
        }
    }
    /// Mantissa field width.
    pub fn mantissa_bits(&self) -> u8 {
        match self {
            FloatFormat::E4M3 => 3,
            FloatFormat::E5M2 => 2,
            FloatFormat::E2M1 => 1,
        }
    }
    /// Exponent bias.
    pub fn bias(&self) -> i32 {
        (1 << (self.exponent_bits() - 1)) - 1
    }
    /// Largest finite value.
    pub fn max_finite(&self) -> f32 {
        match self {
            FloatFormat::E4M3 => 448.0,
            FloatFormat::E5M2 => 57344.0,
            FloatFormat::E2M1 => 6.0,
        }
    }
    /// Smallest positive (subnormal) value: `2^(1 − bias − m)`.
    pub fn min_subnormal(&self) -> f32 {
        2f32.powi(1 - self.bias() - self.mantissa_bits() as i32)
    }
    /// Exponent of the largest finite value's binade (`floor(log2(max_finite))`): what the
    /// OCP MX scale computation subtracts (`emax_elem`: E4M3 8, E5M2 15, E2M1 2).
    pub fn emax(&self) -> i32 {
        match self {
            FloatFormat::E4M3 => 8,
            FloatFormat::E5M2 => 15,
            FloatFormat::E2M1 => 2,
        }
    }
    /// Short lowercase name: `e4m3`, `e5m2`, `e2m1`.
    pub fn tag(&self) -> &'static str {
        match self {
            FloatFormat::E4M3 => "e4m3",
            FloatFormat::E5M2 => "e5m2",
            FloatFormat::E2M1 => "e2m1",
        }
    }

    /// The value of `code` (its low [`bits`](Self::bits) bits): finite, ±∞ or NaN.
    pub fn decode(&self, code: u8) -> f32 {
        let (e, m) = (self.exponent_bits() as u32, self.mantissa_bits() as u32);
        let code = code as u32 & ((1 << (1 + e + m)) - 1);
        let negative = code >> (e + m) == 1;
        let exp = (code >> m) & ((1 << e) - 1);
        let man = code & ((1 << m) - 1);
        let all_ones = exp == (1 << e) - 1;
        let magnitude = match self {
            FloatFormat::E4M3 if all_ones && man == (1 << m) - 1 => f32::NAN,
            FloatFormat::E5M2 if all_ones && man == 0 => f32::INFINITY,
            FloatFormat::E5M2 if all_ones => f32::NAN,
            _ if exp == 0 => man as f32 * 2f32.powi(1 - self.bias() - m as i32),
            _ => (1.0 + man as f32 / (1 << m) as f32) * 2f32.powi(exp as i32 - self.bias()),
        };
        if negative { -magnitude } else { magnitude }
    }

    /// Whether `code` decodes to a finite value.
    pub fn is_finite_code(&self, code: u8) -> bool {
        self.decode(code).is_finite()
    }

    /// The value of every code, indexed by code (`2^bits` entries; NaN/∞ where the format has
    /// them).
    pub fn value_table(&self) -> Vec<f32> {
        (0..1u16 << self.bits())
            .map(|c| self.decode(c as u8))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Independent enumeration: every finite positive value of a format with `e` exponent
    /// and `m` mantissa bits, built as `k · 2^(j)` on the integer lattice of each binade.
    fn positive_values(e: i32, m: i32, max_exp_field: i32) -> Vec<f64> {
        let bias = (1 << (e - 1)) - 1;
        let mut v = Vec::new();
        for k in 1..(1 << m) {
            v.push(k as f64 * 2f64.powi(1 - bias - m)); // subnormals
        }
        for ef in 1..=max_exp_field {
            for k in (1 << m)..(2 << m) {
                v.push(k as f64 * 2f64.powi(ef - bias - m));
            }
        }
        v
    }

    fn finite_positive(f: FloatFormat) -> Vec<f64> {
        let mut v: Vec<f64> = f
            .value_table()
            .into_iter()
            .filter(|x| x.is_finite() && *x > 0.0)
            .map(f64::from)
            .collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v
    }

    #[test]
    fn e4m3_values_match_enumeration() {
        // All exponent fields 1..=15, but the top code S.1111.111 is NaN.
        let mut want = positive_values(4, 3, 15);
        want.pop();
        assert_eq!(finite_positive(FloatFormat::E4M3), want);
        assert_eq!(*want.last().unwrap(), 448.0);
        assert_eq!(want[0], 2f64.powi(-9));
        let nans = FloatFormat::E4M3
            .value_table()
            .iter()
            .filter(|x| x.is_nan())
            .count();
        assert_eq!(nans, 2);
    }

    #[test]
    fn e5m2_values_match_enumeration() {
        let want = positive_values(5, 2, 30);
        assert_eq!(finite_positive(FloatFormat::E5M2), want);
        assert_eq!(*want.last().unwrap(), 57344.0);
        let t = FloatFormat::E5M2.value_table();
        assert_eq!(t.iter().filter(|x| x.is_infinite()).count(), 2);
        assert_eq!(t.iter().filter(|x| x.is_nan()).count(), 6);
    }

    #[test]
    fn e2m1_values_are_the_ocp_table() {
        let t = FloatFormat::E2M1.value_table();
        assert_eq!(&t[..8], &[0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]);
        for c in 0..8 {
            assert_eq!(t[c + 8], -t[c]);
        }
    }

    #[test]
    fn agrees_with_half_crate_where_formats_coincide() {
        // E5M2 is the top byte of an IEEE half: decode(c) = f16 with bits c << 8.
        for c in 0..=255u8 {
            let h = half::f16::from_bits((c as u16) << 8).to_f32();
            let d = FloatFormat::E5M2.decode(c);
            assert!(
                h == d || (h.is_nan() && d.is_nan()),
                "code {c:#x}: {h} vs {d}"
            );
        }
    }

    #[test]
    fn derived_constants() {
        for f in [FloatFormat::E4M3, FloatFormat::E5M2, FloatFormat::E2M1] {
            assert_eq!(f.min_subnormal(), f.decode(1));
            assert_eq!(f.emax(), f.max_finite().log2().floor() as i32);
        }
    }
}
