//! Affine quantization: unsigned codes on a grid shifted by a real offset per group,
//! `w ≈ scale · q + offset` — the arithmetic of GGML's Q4_1.
//!
//! The asymmetric [`UniformQuantizer`](crate::UniformQuantizer) stores an *integer* zero
//! point, so its grid is `scale · (q − zero)`; GGML's Q4_1 stores the group minimum itself
//! (as f16), and `−scale · zero` is in general not an f16. [`QuantFormat::Affine`] holds
//! such grids exactly, so Q4_1 files round-trip bit for bit.

use candle_core::{DType, Device, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::quant::calibration::Calibration;
use crate::quant::grid::{round_to_i32, store_scale_up};
use crate::quant::packing::PackedCodes;
use crate::quant::quantizer::Quantizer;
use crate::quant::scales::Scales;
use crate::quant::spec::{Granularity, ScaleDType};
use crate::quant::tensor::{QuantFormat, QuantizedParts, QuantizedTensor};
use crate::quant::uniform::check_weight_matrix;

/// The value code `q` stands for on an affine grid: `q · scale + offset`, the product rounded
/// and then the sum (two roundings, no FMA) — GGML's `dequantize_row_q4_1` expression.
#[inline(always)]
pub(crate) fn decode(scale: f32, offset: f32, q: u8) -> f32 {
    q as f32 * scale + offset
}

/// Round-to-nearest affine quantization: per group, the offset is the group minimum rounded
/// *down* to the scale dtype and the scale is `(max − offset) / (2^bits − 1)` rounded *up*, so
/// the grid `offset + k · scale` (k = 0 … 2^bits − 1) covers the group. Every weight decodes to
/// the grid level nearest to it, as decoded (the choice is checked against the decoded
/// neighbours, so f32 rounding in `q · scale + offset` cannot make it pick a farther level).
///
/// Offsets are stored in the scale dtype (f32, f16 or bf16; E8M0 cannot hold a negative
/// offset). [`AffineQuantizer::q4_1`] is GGML's Q4_1 layout: 4 bits, groups of 32, f16 scale
/// and offset, which [`crate::io::GgufWriter`] writes as a Q4_1 tensor.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::{AffineQuantizer, QuantFormat, Quantizer};
///
/// let w = Tensor::randn(0f32, 1.0, (4, 64), &Device::Cpu)?;
/// let qt = AffineQuantizer::q4_1().quantize(&w, None)?;
/// assert_eq!(qt.format(), QuantFormat::Affine { bits: 4 });
/// assert_eq!(qt.bits_per_weight(), 5.0); // 4-bit codes + f16 scale and offset per 32
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AffineQuantizer {
    bits: u8,
    granularity: Granularity,
    scale_dtype: ScaleDType,
}

impl AffineQuantizer {
    /// `bits`-bit codes (1..=8) with one scale and offset per `granularity` group, both
    /// stored in `scale_dtype` (f32, f16 or bf16).
    pub fn new(bits: u8, granularity: Granularity, scale_dtype: ScaleDType) -> Result<Self> {
        if !(1..=8).contains(&bits) {
            return Err(Error::InvalidBits {
                bits,
                min: 1,
                max: 8,
                scheme: "affine quantization",
            });
        }
        if granularity == Granularity::PerGroup(0) {
            return Err(Error::InvalidGroupSize { group_size: 0 });
        }
        if scale_dtype == ScaleDType::E8M0 {
            return Err(Error::Unsupported(
                "affine offsets can be negative, which E8M0 cannot store; use F16, BF16 or F32"
                    .into(),
            ));
        }
        Ok(AffineQuantizer {
            bits,
            granularity,
            scale_dtype,
        })
    }

    /// GGML's Q4_1: 4 bits, groups of 32, f16 scale and offset (5 bits per weight).
    pub fn q4_1() -> Self {
        AffineQuantizer {
            bits: 4,
            granularity: Granularity::PerGroup(32),
            scale_dtype: ScaleDType::F16,
        }
    }

    /// Bits per code.
    pub fn bits(&self) -> u8 {
        self.bits
    }
    /// How many weights share a scale and offset.
    pub fn granularity(&self) -> Granularity {
        self.granularity
    }
    /// Storage dtype of scales and offsets.
    pub fn scale_dtype(&self) -> ScaleDType {
        self.scale_dtype
    }
}

impl Quantizer for AffineQuantizer {
    fn config(&self) -> serde_json::Value {
        super::quantizer::debug_config(self)
    }

    fn name(&self) -> String {
        // E8M0 never gets here: `AffineQuantizer::new` refuses it.
        format!(
            "affine-w{}-{}{}",
            self.bits,
            self.granularity.tag(),
            self.scale_dtype.name_suffix(ScaleDType::F16)
        )
    }

    fn quantize(&self, weight: &Tensor, _calib: Option<&Calibration>) -> Result<QuantizedTensor> {
        let (rows, cols) = check_weight_matrix(weight)?;
        if !matches!(weight.device(), Device::Cpu) {
            return Err(Error::UnsupportedDevice {
                op: "affine quantize",
                device: format!("{:?}", weight.device().location()),
                hint: "no kernel for this device yet; move the weight with .to_device(&Device::Cpu)",
            });
        }
        let group_len = self.granularity.group_len(rows, cols)?;
        let x = weight
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut bad = x.iter().enumerate().filter(|(_, v)| !v.is_finite());
        if let Some((first_index, _)) = bad.next() {
            return Err(Error::NonFinite {
                what: "weight",
                count: 1 + bad.count(),
                first_index,
            });
        }
        let qmax = ((1u32 << self.bits) - 1) as u8;
        let mut codes = vec![0u8; x.len()];
        let params: Vec<Option<(f32, f32)>> = codes
            .par_chunks_mut(group_len)
            .zip(x.par_chunks(group_len))
            .map(|(c, xs)| encode_group(xs, qmax, self.scale_dtype, c))
            .collect();
        let mut scales = Vec::with_capacity(params.len());
        let mut offsets = Vec::with_capacity(params.len());
        for (group, p) in params.into_iter().enumerate() {
            let Some((scale, offset)) = p else {
                let xs = &x[group * group_len..(group + 1) * group_len];
                let (min, max) = min_max(xs);
                return Err(Error::ScaleOutOfRange {
                    group,
                    scale: (max - min) / qmax as f32,
                    dtype: self.scale_dtype,
                });
            };
            scales.push(scale);
            offsets.push(offset);
        }
        QuantizedTensor::assemble(
            QuantizedParts::new(
                vec![rows, cols],
                weight.dtype(),
                QuantFormat::Affine { bits: self.bits },
                group_len,
                PackedCodes::pack(&codes, self.bits)?,
                Scales::from_f32(scales, self.scale_dtype),
            )
            .with_offsets(Scales::from_f32(offsets, self.scale_dtype)),
        )
    }
}

fn min_max(xs: &[f32]) -> (f32, f32) {
    xs.iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// Quantize one group into `codes`; `(scale, offset)` as stored, or `None` when either does
/// not fit the dtype.
fn encode_group(xs: &[f32], qmax: u8, dtype: ScaleDType, codes: &mut [u8]) -> Option<(f32, f32)> {
    let (min, max) = min_max(xs);
    let offset = store_down(min, dtype)?;
    let raw = (max - offset) / qmax as f32;
    let raw = if raw == 0.0 && max > offset {
        f32::from_bits(1)
    } else {
        raw
    };
    let scale = store_scale_up(raw, dtype)?;
    let divisor = if scale > 0.0 { scale } else { 1.0 };
    for (c, &w) in codes.iter_mut().zip(xs) {
        let t = ((w - offset) / divisor).clamp(0.0, qmax as f32);
        *c = nearest_level(w, round_to_i32(t) as u8, qmax, scale, offset);
    }
    Some((scale, offset))
}

/// The code whose decoded level is nearest to `w` (the lower one on a tie), starting from the
/// estimate `q`. Decoded levels are non-decreasing in the code, so walking to the level just
/// below `w` and comparing it with the next one finds the nearest even where f32 rounding
/// bunches levels together.
fn nearest_level(w: f32, mut q: u8, qmax: u8, scale: f32, offset: f32) -> u8 {
    while q > 0 && decode(scale, offset, q) > w {
        q -= 1;
    }
    while q < qmax && decode(scale, offset, q + 1) < w {
        q += 1;
    }
    if q < qmax && (decode(scale, offset, q + 1) - w).abs() < (w - decode(scale, offset, q)).abs() {
        q + 1
    } else {
        q
    }
}

/// The largest value of `dtype` that is `≤ x` (`x` finite); `None` below the dtype's range.
fn store_down(x: f32, dtype: ScaleDType) -> Option<f32> {
    let v = match dtype {
        ScaleDType::F16 => {
            let h = f16::from_f32(x);
            if h.to_f32() > x {
                f16::from_bits(next_down_bits(h.to_bits(), 0x8000)).to_f32()
            } else {
                h.to_f32()
            }
        }
        ScaleDType::BF16 => {
            let h = bf16::from_f32(x);
            if h.to_f32() > x {
                bf16::from_bits(next_down_bits(h.to_bits(), 0x8000)).to_f32()
            } else {
                h.to_f32()
            }
        }
        // E8M0 is refused by `AffineQuantizer::new`; F32 stores `x` itself.
        ScaleDType::F32 | ScaleDType::E8M0 => x,
    };
    v.is_finite().then_some(v)
}

/// Bits of the next value toward −∞ of a 16-bit sign-magnitude float (`sign` is its sign bit).
fn next_down_bits(bits: u16, sign: u16) -> u16 {
    if bits & !sign == 0 {
        sign | 1 // ±0 → the negative smallest subnormal
    } else if bits & sign == 0 {
        bits - 1 // positive: toward zero
    } else {
        bits + 1 // negative: away from zero
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_down_never_rounds_up() {
        for x in [0.1f32, -0.1, 1e-7, -1e-7, 0.0, -65504.0, 3.0, -3.3, 65504.0] {
            for dtype in [ScaleDType::F16, ScaleDType::BF16, ScaleDType::F32] {
                let v = store_down(x, dtype).unwrap();
                assert!(v <= x, "{x} {dtype:?} → {v}");
            }
        }
        assert_eq!(store_down(-1e6, ScaleDType::F16), None);
        // f16(−0.1) rounds to −0.099976 (0xAE66), above −0.1: one step further down.
        assert_eq!(
            store_down(-0.1, ScaleDType::F16),
            Some(f16::from_bits(0xAE67).to_f32())
        );
        assert_eq!(store_down(0.0, ScaleDType::F16), Some(0.0));
    }

    #[test]
    fn grid_covers_group_and_picks_nearest_decoded_level() {
        let xs: Vec<f32> = (0..32)
            .map(|i| (i as f32 * 0.37).sin() * 2.5 - 0.3)
            .collect();
        let mut codes = vec![0u8; 32];
        let (scale, offset) = encode_group(&xs, 15, ScaleDType::F16, &mut codes).unwrap();
        let (min, max) = min_max(&xs);
        assert!(offset <= min && decode(scale, offset, 15) >= max);
        for (&w, &c) in xs.iter().zip(&codes) {
            let best = (0..=15u8)
                .map(|k| (w - decode(scale, offset, k)).abs())
                .fold(f32::INFINITY, f32::min);
            assert_eq!((w - decode(scale, offset, c)).abs(), best);
        }
    }

    #[test]
    fn constant_group_is_exact() {
        let mut codes = vec![9u8; 4];
        let (scale, offset) = encode_group(&[0.5; 4], 15, ScaleDType::F16, &mut codes).unwrap();
        assert_eq!((scale, offset, codes), (0.0, 0.5, vec![0; 4]));
    }
}
