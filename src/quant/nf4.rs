//! NF4: QLoRA's 4-bit NormalFloat codebook with per-block absmax scaling.

use candle_core::Tensor;

use crate::error::Result;
use crate::kernels::cpu::table::{GroupCodes, absmax, absmax_scale, encode_groups};
use crate::kernels::{self, TableJob, TableParts, TableScaling};
use crate::quant::calibration::Calibration;
use crate::quant::codebook::{Codebook, LevelStorage, encode_nearest};
use crate::quant::packing::PackedCodes;
use crate::quant::quantizer::Quantizer;
use crate::quant::scales::{DoubleQuantScales, Scales};
use crate::quant::spec::{Granularity, ScaleDType};
use crate::quant::tensor::{QuantFormat, QuantizedParts, QuantizedTensor};
use crate::quant::uniform::check_weight_matrix;

/// The 16 NF4 levels as published with QLoRA (Dettmers et al. 2023, appendix E; the table
/// bitsandbytes ships): quantiles of N(0, 1) split asymmetrically so that 0 is exact,
/// normalised to `[−1, 1]`. Ascending; code `i` stands for `NF4_LEVELS[i]`.
pub const NF4_LEVELS: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// Scales per block of double quantization (QLoRA uses 256).
pub const DOUBLE_QUANT_BLOCK: usize = 256;

/// NF4 quantization: each block of weights is divided by its absmax and rounded to the
/// nearest of the 16 [`NF4_LEVELS`].
///
/// * Blocks of 64 by default (QLoRA's), any [`Granularity`].
/// * Scales in f32 (bitsandbytes stores them so), f16 or bf16 (rounded up, so every weight
///   lies inside its block's grid), or **double-quantized** ([`double_quant`](Self::double_quant)): the block
///   scales centred on their mean and quantized to int8 in blocks of 256 with an f32 scale
///   each — 4.127 bits per weight instead of 4.5.
/// * The levels are the published constants ([`LevelStorage::Implicit`]): no bytes per tensor.
///
/// Error bound: every weight decodes to the level of its block nearest to it
/// ([`ErrorBound::NearestLevel`](crate::testing::ErrorBound)); the largest gap in the table
/// is `1 − 0.7229568 = 0.277` of the block's absmax, so the error is at most `0.139 · absmax`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::{Nf4Quantizer, Quantizer};
///
/// let w = Tensor::randn(0f32, 0.02, (64, 1024), &Device::Cpu)?;
/// let q = Nf4Quantizer::new().double_quant();
/// let qt = q.quantize(&w, None)?;
/// assert_eq!(q.name(), "nf4-g64-dq");
/// assert!(qt.bits_per_weight() < 4.13);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nf4Quantizer {
    granularity: Granularity,
    scale_dtype: ScaleDType,
    double_quant: bool,
}

impl Default for Nf4Quantizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Nf4Quantizer {
    /// Blocks of 64, f32 scales, no double quantization (bitsandbytes' `nf4` defaults).
    pub fn new() -> Self {
        Nf4Quantizer {
            granularity: Granularity::PerGroup(64),
            scale_dtype: ScaleDType::F32,
            double_quant: false,
        }
    }
    /// Set the block granularity.
    pub fn with_granularity(mut self, granularity: Granularity) -> Self {
        self.granularity = granularity;
        self
    }
    /// Blocks of `n` weights along `in_features`.
    pub fn block_size(self, n: usize) -> Self {
        self.with_granularity(Granularity::PerGroup(n))
    }
    /// Storage dtype of the (not double-quantized) scales.
    pub fn with_scale_dtype(mut self, dtype: ScaleDType) -> Self {
        self.scale_dtype = dtype;
        self
    }
    /// Quantize the block scales to int8 (QLoRA's double quantization).
    pub fn double_quant(mut self) -> Self {
        self.double_quant = true;
        self
    }
}

/// The index of the level nearest to 0 (an exact 0 in NormalFloat tables): the code of every
/// weight of an all-zero block.
fn zero_level(table: &[f32]) -> u8 {
    (0..table.len())
        .min_by(|&a, &b| table[a].abs().total_cmp(&table[b].abs()))
        .unwrap_or(0) as u8
}

/// Codes of one block against the levels `scale · table` as they will be decoded (after
/// storage rounding or double quantization), so "nearest level" holds for the values a user
/// gets back; a zero scale maps every weight to the zero level.
fn encode_block(scale: f32, table: &[f32], zero_code: u8, x: &[f32], codes: &mut [u8]) {
    if scale == 0.0 {
        codes.fill(zero_code);
    } else {
        encode_nearest(scale, table, x, codes);
    }
}

/// Absmax-scaled codebook encoding, the shared core of NF4 and NormalFloat: each group's scale
/// is its absmax rounded up to `dtype` (so every weight lies inside its grid), and its codes
/// are the nearest levels of `table` (`2^bits` of them) against that stored scale. Runs on
/// the weight's device (the closure is the CPU path, see [`kernels::quantize_table`]).
pub(crate) fn encode_absmax_blocks(
    weight: &Tensor,
    group_len: usize,
    table: &[f32],
    bits: u8,
    dtype: ScaleDType,
) -> Result<TableParts> {
    let zero_code = zero_level(table);
    let job = TableJob {
        table,
        bits,
        group_len,
        zero_code,
        scaling: TableScaling::Absmax(dtype),
    };
    kernels::quantize_table(weight, &job, |weight| {
        let encoded = encode_groups(weight, group_len, |g, x, codes| {
            let scale = absmax_scale(g, x, dtype)?;
            encode_block(scale, table, zero_code, x, codes);
            Ok(scale)
        })?;
        packed(encoded, bits)
    })
}

/// The CPU kernel's one-byte codes packed, with their scales.
fn packed(encoded: GroupCodes, bits: u8) -> Result<TableParts> {
    Ok(TableParts {
        codes: PackedCodes::pack_trusted(&encoded.codes, bits)?,
        scales: encoded.scales,
    })
}

/// Double-quantize positive block scales: subtract the mean, quantize symmetric int8 per block
/// of [`DOUBLE_QUANT_BLOCK`]. Codes are nudged up where rounding would make a decoded scale
/// negative (a scale must stay ≥ 0).
pub(crate) fn double_quantize(scales: &[f32]) -> Result<DoubleQuantScales> {
    let mean = (scales.iter().map(|&s| s as f64).sum::<f64>() / scales.len() as f64) as f32;
    let mut codes = Vec::with_capacity(scales.len());
    let mut block_scales = Vec::new();
    for block in scales.chunks(DOUBLE_QUANT_BLOCK) {
        let absmax = block.iter().map(|&s| (s - mean).abs()).fold(0f32, f32::max);
        let c = absmax / 127.0;
        block_scales.push(c);
        for &s in block {
            let mut q = if c > 0.0 {
                ((s - mean) / c).round_ties_even().clamp(-127.0, 127.0) as i8
            } else {
                0
            };
            while q < 127 && mean + c * (q as f32) < 0.0 {
                q += 1;
            }
            codes.push(q);
        }
    }
    DoubleQuantScales::new(codes, block_scales, DOUBLE_QUANT_BLOCK, mean)
}

impl Quantizer for Nf4Quantizer {
    fn config(&self) -> serde_json::Value {
        super::quantizer::debug_config(self)
    }

    fn name(&self) -> String {
        let mut name = format!("nf4-{}", self.granularity.tag());
        if self.double_quant {
            name.push_str("-dq");
        } else {
            name.push_str(self.scale_dtype.name_suffix(ScaleDType::F32));
        }
        name
    }

    fn quantize(&self, weight: &Tensor, _calib: Option<&Calibration>) -> Result<QuantizedTensor> {
        let (rows, cols) = check_weight_matrix(weight)?;
        let group_len = self.granularity.group_len(rows, cols)?;
        let (encoded, stored) = if self.double_quant {
            // All block scales are needed before any is final: two passes (on the weight's
            // device; the second-level quantization of the scales runs on the host).
            let raw = kernels::group_absmax(weight, group_len, |weight| {
                Ok(encode_groups(weight, group_len, |_, x, _| Ok(absmax(x)))?.scales)
            })?;
            let stored = Scales::Double(double_quantize(&raw)?);
            let scales = stored.to_f32_vec();
            let zero_code = zero_level(&NF4_LEVELS);
            let job = TableJob {
                table: &NF4_LEVELS,
                bits: 4,
                group_len,
                zero_code,
                scaling: TableScaling::Given(&scales),
            };
            let encoded = kernels::quantize_table(weight, &job, |weight| {
                let encoded = encode_groups(weight, group_len, |g, x, codes| {
                    encode_block(scales[g], &NF4_LEVELS, zero_code, x, codes);
                    Ok(scales[g])
                })?;
                packed(encoded, 4)
            })?;
            (encoded, stored)
        } else {
            let encoded =
                encode_absmax_blocks(weight, group_len, &NF4_LEVELS, 4, self.scale_dtype)?;
            let stored = Scales::from_f32(encoded.scales.clone(), self.scale_dtype);
            (encoded, stored)
        };
        QuantizedTensor::assemble(QuantizedParts {
            shape: vec![rows, cols],
            dtype: weight.dtype(),
            format: QuantFormat::Codebook { bits: 4 },
            group_len,
            codes: encoded.codes,
            scales: stored,
            zeros: None,
            offsets: None,
            codebook: Some(Codebook::new(
                NF4_LEVELS.to_vec(),
                16,
                LevelStorage::Implicit,
            )?),
            input_scales: None,
        })
    }
}
