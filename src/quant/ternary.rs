//! Ternary ("1.58-bit") quantization: each weight becomes −s, 0 or +s.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::kernels::cpu::table::encode_groups;
use crate::quant::calibration::Calibration;
use crate::quant::grid::store_scale_nearest;
use crate::quant::packing::PackedCodes;
use crate::quant::quantizer::Quantizer;
use crate::quant::scales::Scales;
use crate::quant::spec::{Granularity, ScaleDType};
use crate::quant::tensor::{QuantFormat, QuantizedParts, QuantizedTensor};
use crate::quant::uniform::check_weight_matrix;

/// How a ternary quantizer decides which weights become 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TernaryRule {
    /// Zero exactly `round(sparsity · n)` weights of smallest magnitude in each group (ties
    /// broken by position: the earlier weight is zeroed first); the rest keep their sign;
    /// the scale is the mean `|w|` of the surviving non-zero weights. The sparse low-bit
    /// quantizers of the membership-inference study use 33% and 90%.
    Sparsity(f64),
    /// BitNet b1.58's absmean rule: `s = mean |w|` of the group, code `clamp(round(w/s), −1, 1)`.
    AbsMean,
}

/// Ternary quantization to `{−s, 0, +s}` per tensor, channel or group, codes in 2 bits
/// ([`QuantFormat::Ternary`]); 1-bit sign quantization is
/// [`UniformQuantizer`](crate::UniformQuantizer) with [`QuantSpec::binary`](crate::QuantSpec).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::{Quantizer, TernaryQuantizer};
///
/// let w = Tensor::new(&[[0.1f32, -2.0, 0.3, 4.0]], &Device::Cpu)?;
/// let q = TernaryQuantizer::with_sparsity(0.5)?;
/// // The two smallest become 0; the scale is the mean of |−2| and |4|.
/// assert_eq!(q.fake_quantize(&w, None)?.to_vec2::<f32>()?, vec![vec![0.0, -3.0, 0.0, 3.0]]);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TernaryQuantizer {
    rule: TernaryRule,
    granularity: Granularity,
    scale_dtype: ScaleDType,
}

impl TernaryQuantizer {
    /// Zero a fraction `sparsity ∈ [0, 1)` of each channel's weights (smallest first).
    pub fn with_sparsity(sparsity: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&sparsity) {
            return Err(Error::InvalidParameter {
                name: "sparsity",
                reason: format!("must be in [0, 1), got {sparsity}"),
            });
        }
        Ok(Self::with_rule(TernaryRule::Sparsity(sparsity)))
    }
    /// BitNet b1.58's absmean rule, per channel.
    pub fn absmean() -> Self {
        Self::with_rule(TernaryRule::AbsMean)
    }
    fn with_rule(rule: TernaryRule) -> Self {
        TernaryQuantizer {
            rule,
            granularity: Granularity::PerChannel,
            scale_dtype: ScaleDType::F16,
        }
    }
    /// Set the granularity.
    pub fn with_granularity(mut self, granularity: Granularity) -> Self {
        self.granularity = granularity;
        self
    }
    /// One scale for the whole tensor.
    pub fn per_tensor(self) -> Self {
        self.with_granularity(Granularity::PerTensor)
    }
    /// One scale per `n` weights along `in_features`.
    pub fn per_group(self, n: usize) -> Self {
        self.with_granularity(Granularity::PerGroup(n))
    }
    /// Storage dtype of the scales (rounded to nearest).
    pub fn with_scale_dtype(mut self, dtype: ScaleDType) -> Self {
        self.scale_dtype = dtype;
        self
    }
}

/// Codes: 0 → −s, 1 → 0, 2 → +s.
fn sign_code(w: f32) -> u8 {
    if w > 0.0 {
        2
    } else if w < 0.0 {
        0
    } else {
        1
    }
}

impl Quantizer for TernaryQuantizer {
    fn config(&self) -> serde_json::Value {
        super::quantizer::debug_config(self)
    }

    fn name(&self) -> String {
        let rule = match self.rule {
            TernaryRule::Sparsity(s) => format!("s{s:.2}"),
            TernaryRule::AbsMean => "absmean".into(),
        };
        format!("ternary-{rule}-{}", self.granularity.tag())
    }

    fn quantize(&self, weight: &Tensor, _calib: Option<&Calibration>) -> Result<QuantizedTensor> {
        let (rows, cols) = check_weight_matrix(weight)?;
        let group_len = self.granularity.group_len(rows, cols)?;
        let dtype = self.scale_dtype;
        let rule = self.rule;
        let encoded = encode_groups(weight, group_len, |g, x, codes| {
            let raw = match rule {
                TernaryRule::Sparsity(sparsity) => {
                    let zeroed = ((sparsity * x.len() as f64).round() as usize).min(x.len());
                    let mut order: Vec<usize> = (0..x.len()).collect();
                    // Stable: equal magnitudes keep their order, so the earlier one is zeroed.
                    order.sort_by(|&a, &b| x[a].abs().total_cmp(&x[b].abs()));
                    let (mut sum, mut count) = (0f64, 0usize);
                    for (rank, &i) in order.iter().enumerate() {
                        codes[i] = if rank < zeroed { 1 } else { sign_code(x[i]) };
                        if rank >= zeroed && x[i] != 0.0 {
                            sum += x[i].abs() as f64;
                            count += 1;
                        }
                    }
                    if count > 0 { sum / count as f64 } else { 0.0 }
                }
                TernaryRule::AbsMean => {
                    let mean = x.iter().map(|v| v.abs() as f64).sum::<f64>() / x.len() as f64;
                    for (c, &w) in codes.iter_mut().zip(x) {
                        let r = if mean > 0.0 {
                            (w as f64 / mean).round_ties_even().clamp(-1.0, 1.0)
                        } else {
                            0.0
                        };
                        *c = (r as i32 + 1) as u8;
                    }
                    mean
                }
            } as f32;
            store_scale_nearest(raw, dtype).ok_or(Error::ScaleOutOfRange {
                group: g,
                scale: raw,
                dtype,
            })
        })?;
        QuantizedTensor::assemble(QuantizedParts::new(
            vec![rows, cols],
            weight.dtype(),
            QuantFormat::Ternary,
            group_len,
            PackedCodes::pack_trusted(&encoded.codes, 2)?,
            Scales::from_f32(encoded.scales, dtype),
        ))
    }
}
