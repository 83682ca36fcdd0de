//! NormalFloat at any bit width: QLoRA's NF4 construction generalised to `k` bits.
//!
//! NF4 takes quantiles of N(0, 1) — eight on the positive side, seven on the negative side,
//! and an exact 0 — and normalises them to `[−1, 1]`. The same recipe gives a 2^k-level
//! table for any `k`: `2^(k−1)` positive quantiles `Φ⁻¹(o − j(o − ½)/2^(k−1))`,
//! `2^(k−1) − 1` negative ones `−Φ⁻¹(o − j(o − ½)/(2^(k−1) − 1))`, and 0, with QLoRA's offset
//! `o = ½[(1 − 1/(2(2^k − 1))) + (1 − 1/2^(k+1))]` (0.9677083 at k = 4). At k = 4 this
//! reproduces the published NF4 table, so explanation and privacy studies can compare one
//! codebook family across bit widths (bitsandbytes ships only the 4-bit member).

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::mis::normal_quantile;
use crate::quant::calibration::Calibration;
use crate::quant::codebook::{Codebook, LevelStorage};
use crate::quant::nf4::encode_absmax_blocks;
use crate::quant::quantizer::Quantizer;
use crate::quant::scales::Scales;
use crate::quant::spec::{Granularity, ScaleDType};
use crate::quant::tensor::{QuantFormat, QuantizedParts, QuantizedTensor};
use crate::quant::uniform::check_weight_matrix;

/// The `2^bits` NormalFloat levels, ascending, in `[−1, 1]`, with an exact 0 (module docs).
/// Errors: `bits` outside 2..=8.
///
/// ```
/// use quantlens::quant::normal_float_levels;
/// use quantlens::NF4_LEVELS;
///
/// let nf4 = normal_float_levels(4)?;
/// for (a, b) in nf4.iter().zip(NF4_LEVELS) {
///     assert!((a - b).abs() < 1e-6);
/// }
/// assert_eq!(normal_float_levels(3)?.len(), 8);
/// # Ok::<(), quantlens::Error>(())
/// ```
pub fn normal_float_levels(bits: u8) -> Result<Vec<f32>> {
    if !(2..=8).contains(&bits) {
        return Err(Error::InvalidBits {
            bits,
            min: 2,
            max: 8,
            scheme: "NormalFloat",
        });
    }
    let n = 1usize << bits;
    let positive = n / 2;
    let negative = n / 2 - 1;
    let offset = 0.5 * ((1.0 - 1.0 / (2.0 * (n as f64 - 1.0))) + (1.0 - 1.0 / (2.0 * n as f64)));
    // linspace(offset, ½, m + 1) without its last point, through Φ⁻¹.
    let side = |m: usize| -> Vec<f64> {
        (0..m)
            .map(|j| normal_quantile(offset - j as f64 * (offset - 0.5) / m as f64))
            .collect()
    };
    let mut levels: Vec<f64> = side(positive);
    levels.extend(side(negative).into_iter().map(|v| -v));
    levels.push(0.0);
    let max = levels.iter().fold(0f64, |m, v| m.max(v.abs()));
    levels.sort_by(f64::total_cmp);
    Ok(levels.into_iter().map(|v| (v / max) as f32).collect())
}

/// NormalFloat quantization at 2–8 bits: each block of weights is divided by its absmax and
/// rounded to the nearest of [`normal_float_levels`]`(bits)`; blocks of 64 and f32 scales by
/// default, as NF4. The table is stored once per tensor in f32 (`2^bits · 4` bytes, counted in
/// the storage). At 4 bits it encodes like [`Nf4Quantizer`](crate::Nf4Quantizer) up to the
/// table's last-digit differences.
///
/// Error bound: every weight decodes to the level of its block nearest to it.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::quant::NormalFloatQuantizer;
/// use quantlens::Quantizer;
///
/// let w = Tensor::randn(0f32, 0.02, (64, 256), &Device::Cpu)?;
/// let nf3 = NormalFloatQuantizer::new(3)?;
/// let qt = nf3.quantize(&w, None)?;
/// assert_eq!(nf3.name(), "nf3-g64");
/// assert!(qt.bits_per_weight() < 3.6); // 3 + 32/64 for the scales + the table
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NormalFloatQuantizer {
    bits: u8,
    levels: Vec<f32>,
    granularity: Granularity,
    scale_dtype: ScaleDType,
}

impl NormalFloatQuantizer {
    /// `2^bits` NormalFloat levels (bits 2..=8), blocks of 64, f32 scales.
    pub fn new(bits: u8) -> Result<Self> {
        Ok(NormalFloatQuantizer {
            bits,
            levels: normal_float_levels(bits)?,
            granularity: Granularity::PerGroup(64),
            scale_dtype: ScaleDType::F32,
        })
    }
    /// Per tensor, channel or group.
    pub fn with_granularity(mut self, granularity: Granularity) -> Self {
        self.granularity = granularity;
        self
    }
    /// Blocks of `n` weights along `in_features`.
    pub fn block_size(self, n: usize) -> Self {
        self.with_granularity(Granularity::PerGroup(n))
    }
    /// Storage dtype of the block scales (rounded up, so every weight lies inside its grid).
    pub fn with_scale_dtype(mut self, dtype: ScaleDType) -> Self {
        self.scale_dtype = dtype;
        self
    }
    /// The levels, ascending.
    pub fn levels(&self) -> &[f32] {
        &self.levels
    }
}

impl Quantizer for NormalFloatQuantizer {
    fn config(&self) -> serde_json::Value {
        super::quantizer::debug_config(self)
    }

    fn name(&self) -> String {
        format!(
            "nf{}-{}{}",
            self.bits,
            self.granularity.tag(),
            self.scale_dtype.name_suffix(ScaleDType::F32)
        )
    }

    fn quantize(&self, weight: &Tensor, _calib: Option<&Calibration>) -> Result<QuantizedTensor> {
        let (rows, cols) = check_weight_matrix(weight)?;
        let group_len = self.granularity.group_len(rows, cols)?;
        let encoded =
            encode_absmax_blocks(weight, group_len, &self.levels, self.bits, self.scale_dtype)?;
        QuantizedTensor::assemble(QuantizedParts {
            shape: vec![rows, cols],
            dtype: weight.dtype(),
            format: QuantFormat::Codebook { bits: self.bits },
            group_len,
            codes: encoded.codes,
            scales: Scales::from_f32(encoded.scales, self.scale_dtype),
            zeros: None,
            offsets: None,
            codebook: Some(Codebook::new(
                self.levels.clone(),
                self.levels.len(),
                LevelStorage::F32,
            )?),
            input_scales: None,
        })
    }
}
