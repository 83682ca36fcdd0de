//! SmoothQuant (Xiao et al., 2022, "SmoothQuant: Accurate and Efficient Post-Training
//! Quantization for Large Language Models"): migrate the difficulty of quantizing activations
//! with outlier channels into the weights, for W8A8.
//!
//! Dynamic per-token activation quantization rounds every element of a token with one scale,
//! `max_j |x_j| / 127`. When a few input channels carry activations 10–100× larger than the
//! rest (as in large language models), that scale is set by them and every other channel is
//! rounded to a handful of levels. Weights, quantized per output channel, have no such
//! problem. With per-input-channel scales `s > 0`,
//!
//! ```text
//! y = x Wᵀ = (x·diag(s)⁻¹) (W·diag(s))ᵀ,      s_j = max|X_j|^α / max_i|W_ij|^(1−α),
//! ```
//!
//! the function is unchanged, the activations' outlier channels are divided down and the
//! weights' matching columns multiplied up: after smoothing, channel `j` has activation range
//! `max|X_j/s_j| = (max|X_j|·max|W_j|)^(1−α)` and weight range `max|W_j·s_j| =
//! (max|X_j|·max|W_j|)^α` (at the default migration strength α = 0.5 both are
//! `√(max|X_j|·max|W_j|)`). `max|X_j|` is the
//! [`Calibration`]'s per-channel absmax. Channels whose activation or weight maximum is zero
//! get `s_j = 1`; scales are rounded to f16 (clamped to its normal range), which changes
//! nothing in the algebra since any positive `s` keeps the function.
//!
//! [`SmoothQuantizer`] quantizes `W·diag(s)` with a base weight quantizer (default int8 per
//! output channel, symmetric) and stores `s` as the tensor's
//! [`input_scales`](QuantizedTensor::input_scales). Stored packed in a
//! [`LinearLayer`](crate::model::LinearLayer), the layer divides its input by `s` *before*
//! the forward hooks, so [`QuantizeActivations::per_token(8)`] quantizes the smoothed
//! activations: that is the W8A8 SmoothQuant forward. (A dense fake-quantized copy, from
//! [`dequantize`](QuantizedTensor::dequantize), holds the effective weight
//! `Q(W·diag(s))·diag(s)⁻¹` and sees unsmoothed activations: right for weight-only use, not
//! for W8A8.)
//!
//! [`QuantizeActivations::per_token(8)`]: crate::model::QuantizeActivations::per_token

use std::fmt;
use std::sync::Arc;

use candle_core::Tensor;
use half::f16;

use crate::error::Result;
use crate::quant::awq::missing_calibration;
use crate::quant::calibration::Calibration;
use crate::quant::output_error::check_calibration;
use crate::quant::quantizer::Quantizer;
use crate::quant::smoothing::{
    HostWeight, base_calibration, check_alpha, quantize_smoothed, round_scales, scale_columns,
};
use crate::quant::spec::QuantSpec;
use crate::quant::tensor::QuantizedTensor;
use crate::quant::uniform::UniformQuantizer;

/// SmoothQuant around a data-free base weight quantizer (default: int8 per output channel,
/// symmetric, f16 scales), with migration strength α (default 0.5). See the
/// [module docs](self) for the math.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::model::{LinearLayer, QuantizeActivations};
/// use quantlens::{Calibration, Quantizer, SmoothQuantizer};
///
/// let dev = Device::Cpu;
/// let w = Tensor::randn(0f32, 0.1, (16, 64), &dev)?;
/// // Activations with two outlier channels, 50× the rest.
/// let boost: Vec<f32> = (0..64).map(|j| if j % 32 == 5 { 50.0 } else { 1.0 }).collect();
/// let x = Tensor::randn(0f32, 1.0, (128, 64), &dev)?
///     .broadcast_mul(&Tensor::new(boost.as_slice(), &dev)?)?;
/// let mut calib = Calibration::new(64);
/// calib.observe(&x)?;
///
/// let qt = SmoothQuantizer::new().quantize(&w, Some(&calib))?;
/// assert_eq!(qt.input_scales().map(|s| s.len()), Some(64));
/// // W8A8: the packed layer divides x by s, then the hook quantizes x·diag(s)⁻¹ per token.
/// let layer = LinearLayer::new("proj", qt, None)?;
/// let y = layer.forward(&x, &mut QuantizeActivations::per_token(8)?)?;
/// assert_eq!(y.dims(), [128, 16]);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Clone)]
pub struct SmoothQuantizer {
    base: Arc<dyn Quantizer>,
    alpha: f64,
}

impl fmt::Debug for SmoothQuantizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmoothQuantizer")
            .field("base", &self.base.name())
            .field("alpha", &self.alpha)
            .finish()
    }
}

impl Default for SmoothQuantizer {
    fn default() -> Self {
        Self::new()
    }
}

impl SmoothQuantizer {
    /// Int8 weights per output channel (symmetric, f16 scales), α = 0.5.
    pub fn new() -> Self {
        let spec = QuantSpec::int8().per_channel().symmetric();
        SmoothQuantizer {
            // A valid spec: `new` cannot fail on it.
            base: Arc::new(UniformQuantizer::new(spec).unwrap_or_else(|_| unreachable!())),
            alpha: 0.5,
        }
    }

    /// Quantize the smoothed weight with `base` instead (any data-free quantizer).
    pub fn with_base(mut self, base: impl Quantizer + 'static) -> Self {
        self.base = Arc::new(base);
        self
    }

    /// Migration strength α in [0, 1]: 0 leaves the activations' ranges to the weights' (`s_j
    /// = 1/max|W_j|`), 1 moves them entirely into the weights (`s_j = max|X_j|`).
    pub fn with_alpha(mut self, alpha: f64) -> Result<Self> {
        self.alpha = check_alpha(alpha, "SmoothQuant alpha")?;
        Ok(self)
    }

    /// The migration strength α.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// The base quantizer.
    pub fn base(&self) -> &dyn Quantizer {
        &*self.base
    }

    /// The smoothing scales `s_j = max|X_j|^α / max_i|W_ij|^(1−α)` for `weight`
    /// `[out, in]` (1 where either maximum is 0), rounded to f16 values.
    ///
    /// ```
    /// use candle_core::{Device, Tensor};
    /// use quantlens::{Calibration, SmoothQuantizer};
    /// let mut calib = Calibration::new(3);
    /// calib.observe(&Tensor::new(&[[16f32, -1.0, 0.0]], &Device::Cpu)?)?;
    /// let w = Tensor::new(&[[1f32, 4.0, 2.0], [-0.25, 1.0, 1.0]], &Device::Cpu)?;
    /// let s = SmoothQuantizer::new().smoothing_scales(&w, &calib)?;
    /// assert_eq!(s, vec![4.0, 0.5, 1.0]); // √(16/1), √(1/4), and 1 for a dead channel
    /// # Ok::<(), quantlens::Error>(())
    /// ```
    pub fn smoothing_scales(&self, weight: &Tensor, calib: &Calibration) -> Result<Vec<f32>> {
        let w = HostWeight::read(weight)?;
        check_calibration(calib, w.cols, &self.name())?;
        Ok(self
            .scales(&w, calib)
            .into_iter()
            .map(f16::to_f32)
            .collect())
    }

    fn scales(&self, w: &HostWeight, calib: &Calibration) -> Vec<f16> {
        let mut w_max = vec![0f32; w.cols];
        for row in w.values.chunks(w.cols) {
            for (m, v) in w_max.iter_mut().zip(row) {
                *m = m.max(v.abs());
            }
        }
        let s: Vec<f64> = calib
            .act_absmax()
            .iter()
            .zip(&w_max)
            .map(|(&a, &m)| {
                if a > 0.0 && m > 0.0 {
                    (a as f64).powf(self.alpha) / (m as f64).powf(1.0 - self.alpha)
                } else {
                    1.0
                }
            })
            .collect();
        round_scales(&s)
    }
}

impl Quantizer for SmoothQuantizer {
    fn config(&self) -> serde_json::Value {
        let mut config = super::quantizer::debug_config(self);
        config["base"] = self.base.config();
        config
    }

    /// `smoothquant-a{α}-{base}`, e.g. `smoothquant-a0.5-rtn-w8-c-sym`.
    fn name(&self) -> String {
        format!("smoothquant-a{}-{}", self.alpha, self.base.name())
    }

    /// SmoothQuant needs the layer's [`Calibration`]: `None` is an error.
    fn quantize(&self, weight: &Tensor, calib: Option<&Calibration>) -> Result<QuantizedTensor> {
        let Some(calib) = calib else {
            return Err(missing_calibration(&self.name()));
        };
        let w = HostWeight::read(weight)?;
        check_calibration(calib, w.cols, &self.name())?;
        let s = self.scales(&w, calib);
        if s.iter().all(|&v| v == f16::ONE) {
            let plain = base_calibration(&*self.base, Some(calib), None)?;
            return self.base.quantize(weight, plain.as_ref());
        }
        let sf: Vec<f32> = s.iter().map(|v| v.to_f32()).collect();
        let smoothed = scale_columns(&w.values, &sf);
        quantize_smoothed(&*self.base, &w, smoothed, &s, Some(calib))
    }

    fn uses_calibration(&self) -> bool {
        true
    }
}
