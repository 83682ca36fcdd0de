//! Magnitude-aware non-uniform grids by companding: round `sign(w)·|w|^p` on a uniform grid,
//! so the step in `w` grows with `|w|`.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::kernels::cpu::table::{absmax_scale, encode_groups};
use crate::quant::calibration::Calibration;
use crate::quant::codebook::{Codebook, LevelStorage};
use crate::quant::packing::PackedCodes;
use crate::quant::quantizer::Quantizer;
use crate::quant::scales::Scales;
use crate::quant::spec::{Granularity, ScaleDType};
use crate::quant::tensor::{QuantFormat, QuantizedParts, QuantizedTensor};
use crate::quant::uniform::check_weight_matrix;

/// Companding quantization (Gong et al., AAAI 2024, "What makes quantization for LLMs hard?"):
/// transform `y = sign(w)·|w/s|^p` (`s` the group's absmax), round `y·qmax` to the nearest
/// integer of the symmetric `bits`-bit grid, decode `w ≈ s·sign(q)·(|q|/qmax)^(1/p)`.
///
/// With `p < 1` small weights get fine levels and large ones coarse levels: the paper's
/// finding that large-magnitude values tolerate larger perturbations, turned into a grid.
/// `p = 1/3` (the paper's cube root) is the default; `p = 1` is symmetric RTN with an absmax
/// scale. The levels are a closed form of `(bits, p)` ([`LevelStorage::Implicit`]), so only
/// the codes and one scale per group are stored.
///
/// Error bound: the decoded value is one of the two levels bracketing the weight
/// ([`ErrorBound::AdjacentLevel`](crate::testing::ErrorBound)); to first order
/// `|ŵ − w| ≤ s/(2·p·qmax) · ((|y|·qmax + ½)/qmax)^(1/p − 1)`, half a step in `y` times the
/// inverse transform's derivative.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::{CompandingQuantizer, Quantizer};
///
/// let w = Tensor::new(&[[0.001f32, -0.01, 0.1, -1.0]], &Device::Cpu)?;
/// let q = CompandingQuantizer::new(4)?; // cube root, per channel
/// let w_hat = q.fake_quantize(&w, None)?.to_vec2::<f32>()?;
/// assert_eq!(w_hat[0][3], -1.0); // the absmax is a level
/// assert!((w_hat[0][0] - 0.001).abs() < 0.003); // small values keep a fine grid
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompandingQuantizer {
    bits: u8,
    exponent: f64,
    granularity: Granularity,
    scale_dtype: ScaleDType,
}

impl CompandingQuantizer {
    /// `bits` (2..=8), cube-root transform, one f16 scale per output channel.
    pub fn new(bits: u8) -> Result<Self> {
        if !(2..=8).contains(&bits) {
            return Err(Error::InvalidBits {
                bits,
                min: 2,
                max: 8,
                scheme: "companding",
            });
        }
        Ok(CompandingQuantizer {
            bits,
            exponent: 1.0 / 3.0,
            granularity: Granularity::PerChannel,
            scale_dtype: ScaleDType::F16,
        })
    }
    /// The transform's exponent `p` in `(0, 1]`: smaller gives coarser steps for large values.
    pub fn exponent(mut self, p: f64) -> Result<Self> {
        if !(p > 0.0 && p <= 1.0) {
            return Err(Error::InvalidParameter {
                name: "exponent",
                reason: format!("must be in (0, 1], got {p}"),
            });
        }
        self.exponent = p;
        Ok(self)
    }
    /// Set the scale granularity.
    pub fn with_granularity(mut self, granularity: Granularity) -> Self {
        self.granularity = granularity;
        self
    }
    /// One scale per `n` weights along `in_features`.
    pub fn per_group(self, n: usize) -> Self {
        self.with_granularity(Granularity::PerGroup(n))
    }
    /// Storage dtype of the scales (rounded up, so every weight lies inside its grid).
    pub fn with_scale_dtype(mut self, dtype: ScaleDType) -> Self {
        self.scale_dtype = dtype;
        self
    }

    fn qmax(&self) -> i32 {
        (1 << (self.bits - 1)) - 1
    }

    /// The unit levels, indexed by code: `sign(m)·(|m|/qmax)^(1/p)` for `m = code − 2^(b−1)`.
    /// Code 0 (`m = −2^(b−1)`, beyond −1) is never produced but decodes like the others.
    pub fn levels(&self) -> Vec<f32> {
        let (mid, qmax) = (1i32 << (self.bits - 1), self.qmax() as f64);
        (0..1i32 << self.bits)
            .map(|k| {
                let m = (k - mid) as f64;
                (m.signum() * (m.abs() / qmax).powf(1.0 / self.exponent)) as f32
            })
            .collect()
    }
}

impl Quantizer for CompandingQuantizer {
    fn config(&self) -> serde_json::Value {
        super::quantizer::debug_config(self)
    }

    fn name(&self) -> String {
        format!(
            "compand-p{:.3}-w{}-{}",
            self.exponent,
            self.bits,
            self.granularity.tag()
        )
    }

    fn quantize(&self, weight: &Tensor, _calib: Option<&Calibration>) -> Result<QuantizedTensor> {
        let (rows, cols) = check_weight_matrix(weight)?;
        let group_len = self.granularity.group_len(rows, cols)?;
        let (mid, qmax, p) = (1i32 << (self.bits - 1), self.qmax(), self.exponent);
        let dtype = self.scale_dtype;
        let encoded = encode_groups(weight, group_len, |g, x, codes| {
            let scale = absmax_scale(g, x, dtype)?;
            for (c, &w) in codes.iter_mut().zip(x) {
                let q = if scale > 0.0 {
                    let u = w as f64 / scale as f64;
                    let y = u.signum() * u.abs().powf(p) * qmax as f64;
                    (y.round_ties_even() as i32).clamp(-qmax, qmax)
                } else {
                    0
                };
                *c = (q + mid) as u8;
            }
            Ok(scale)
        })?;
        QuantizedTensor::assemble(
            QuantizedParts::new(
                vec![rows, cols],
                weight.dtype(),
                QuantFormat::Codebook { bits: self.bits },
                group_len,
                PackedCodes::pack_trusted(&encoded.codes, self.bits)?,
                Scales::from_f32(encoded.scales, dtype),
            )
            .with_codebook(Codebook::new(
                self.levels(),
                1 << self.bits,
                LevelStorage::Implicit,
            )?),
        )
    }
}
