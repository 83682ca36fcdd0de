//! Activation quantization: int8 or FP8, dynamic per token or static per tensor.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::kernels::scaled::{ScaledJob, Scaling, quantize_scaled};
use crate::quant::calibration::Calibration;
use crate::quant::float::FloatQuantizer;
use crate::quant::float_format::FloatFormat;
use crate::quant::quantizer::Quantizer;
use crate::quant::spec::{QuantSpec, ScaleDType};
use crate::quant::tensor::{QuantFormat, QuantizedTensor};
use crate::quant::uniform::UniformQuantizer;

/// The code format of quantized activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActivationFormat {
    /// Symmetric int8: `x ≈ scale · q`, `q ∈ [−127, 127]` (stored as `q + 128`).
    Int8,
    /// A small float: `x ≈ scale · decode(q)` (FP8 E4M3 or E5M2; E2M1 works too).
    Float(FloatFormat),
}

impl ActivationFormat {
    /// The largest magnitude a code stands for before scaling: 127, or the float format's
    /// [`max_finite`](FloatFormat::max_finite).
    pub fn max_level(&self) -> f32 {
        match self {
            ActivationFormat::Int8 => 127.0,
            ActivationFormat::Float(f) => f.max_finite(),
        }
    }

    fn tag(&self) -> String {
        match self {
            ActivationFormat::Int8 => "int8".into(),
            ActivationFormat::Float(f) => format!("fp{}-{}", f.bits(), f.tag()),
        }
    }
}

/// Where the scale comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ActScale {
    /// One scale per row, `absmax(row) / max_level`, computed on every call.
    PerToken,
    /// One fixed scale for every element.
    Static(f32),
}

/// Fake-quantizes activations viewed as a matrix `[tokens, features]`: what
/// [`QuantizeActivations`](crate::model::QuantizeActivations) applies to every linear layer's
/// input.
///
/// * **Dynamic per token** ([`int8_per_token`](Self::int8_per_token),
///   [`fp8_per_token`](Self::fp8_per_token)): each row gets its own f32 scale
///   `absmax(row) / max_level` (127 for int8, 448 for E4M3, 57344 for E5M2), computed on
///   every call — the "A8" of W8A8 serving stacks. Nothing saturates.
/// * **Static per tensor** ([`int8_static`](Self::int8_static),
///   [`fp8_static`](Self::fp8_static), [`static_from_calibration`](Self::static_from_calibration)):
///   one scale fixed in advance, typically calibrated once; values beyond
///   `scale · max_level` **saturate** to `±scale · max_level`.
///
/// Int8 rounds `x / scale` to the nearest integer (ties to even) like
/// [`UniformQuantizer`]; FP8 encodes it with [`FloatFormat::encode`] like
/// [`FloatQuantizer`]. The per-token paths *are* those quantizers (symmetric int8 per
/// channel, FP8 per channel, f32 scales); the static paths use the same rounding with the
/// given scale.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::{ActivationQuantizer, FloatFormat, Quantizer};
///
/// let x = Tensor::new(&[[0.5f32, -7.0, 1.0], [100.0, 3.0, 0.0]], &Device::Cpu)?;
/// // Static int8 with scale 1/16: 100 saturates at 127/16.
/// let q = ActivationQuantizer::int8_static(1.0 / 16.0)?;
/// let y = q.fake_quantize(&x, None)?.to_vec2::<f32>()?;
/// assert_eq!(y, [[0.5, -7.0, 1.0], [127.0 / 16.0, 3.0, 0.0]]);
/// // Dynamic FP8 per token: each row's absmax maps onto 448 (row 0: scale 7/448 = 1/64).
/// let q = ActivationQuantizer::fp8_per_token(FloatFormat::E4M3);
/// assert_eq!(q.name(), "fp8-e4m3-token");
/// let y = q.fake_quantize(&x, None)?.to_vec2::<f32>()?;
/// assert_eq!(y[0], [0.5, -7.0, 1.0]);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationQuantizer {
    format: ActivationFormat,
    scale: ActScale,
}

/// A static scale must be a positive finite number.
fn check_scale(scale: f32) -> Result<f32> {
    if scale.is_finite() && scale > 0.0 {
        Ok(scale)
    } else {
        Err(Error::InvalidParameter {
            name: "scale",
            reason: format!("a static activation scale must be positive and finite, got {scale}"),
        })
    }
}

impl ActivationQuantizer {
    /// Dynamic per-token quantization to `format`.
    pub fn per_token(format: ActivationFormat) -> Self {
        ActivationQuantizer {
            format,
            scale: ActScale::PerToken,
        }
    }

    /// Dynamic per-token symmetric int8 (`absmax / 127` per row, f32 scales).
    pub fn int8_per_token() -> Self {
        Self::per_token(ActivationFormat::Int8)
    }

    /// Dynamic per-token FP8 in `format` (`absmax / max_finite` per row, f32 scales).
    pub fn fp8_per_token(format: FloatFormat) -> Self {
        Self::per_token(ActivationFormat::Float(format))
    }

    /// Static per-tensor quantization to `format` with a fixed `scale` (the value of one
    /// int8 step, or what the float format's 1.0 stands for): values beyond
    /// `scale · max_level` saturate. Errors unless `scale` is positive and finite.
    pub fn with_static_scale(format: ActivationFormat, scale: f32) -> Result<Self> {
        Ok(ActivationQuantizer {
            format,
            scale: ActScale::Static(check_scale(scale)?),
        })
    }

    /// Static per-tensor int8 with step `scale`: `q = clamp(round(x / scale), −127, 127)`.
    pub fn int8_static(scale: f32) -> Result<Self> {
        Self::with_static_scale(ActivationFormat::Int8, scale)
    }

    /// Static per-tensor FP8: `q = encode(x / scale)`, saturating at `±max_finite · scale`.
    pub fn fp8_static(format: FloatFormat, scale: f32) -> Result<Self> {
        Self::with_static_scale(ActivationFormat::Float(format), scale)
    }

    /// Static per-tensor quantization whose range covers every activation seen in `calib`:
    /// `scale = max(act_absmax) / max_level` (in f32, never below the smallest positive f32).
    ///
    /// Errors when `calib` has seen no sample, or only zeros (no range to calibrate to).
    ///
    /// ```
    /// use candle_core::{Device, Tensor};
    /// use quantlens::{ActivationFormat, ActivationQuantizer, Calibration};
    ///
    /// let mut calib = Calibration::new(2);
    /// calib.observe(&Tensor::new(&[[1f32, -254.0], [3.0, 4.0]], &Device::Cpu)?)?;
    /// let q = ActivationQuantizer::static_from_calibration(ActivationFormat::Int8, &calib)?;
    /// assert_eq!(q.static_scale(), Some(2.0));
    /// # Ok::<(), quantlens::Error>(())
    /// ```
    pub fn static_from_calibration(format: ActivationFormat, calib: &Calibration) -> Result<Self> {
        if calib.samples() == 0 {
            return Err(Error::TooFewSamples {
                what: "activation calibration",
                needed: 1,
                got: 0,
            });
        }
        let absmax = calib.act_absmax().iter().fold(0f32, |a, &b| a.max(b));
        if !(absmax > 0.0 && absmax.is_finite()) {
            return Err(Error::InvalidParameter {
                name: "calibration",
                reason: format!(
                    "the calibrated activation absmax is {absmax}; a static scale needs a \
                     positive finite range"
                ),
            });
        }
        let scale = (absmax / format.max_level()).max(f32::from_bits(1));
        Self::with_static_scale(format, scale)
    }

    /// The code format.
    pub fn format(&self) -> ActivationFormat {
        self.format
    }

    /// The fixed scale of a static quantizer; `None` for dynamic per-token ones.
    pub fn static_scale(&self) -> Option<f32> {
        match self.scale {
            ActScale::Static(s) => Some(s),
            ActScale::PerToken => None,
        }
    }
}

/// Check that `x` is a non-empty float matrix `[tokens, features]`.
fn check_activation_matrix(x: &Tensor) -> Result<()> {
    if x.rank() != 2 {
        return Err(Error::RankMismatch {
            what: "activation matrix [tokens, features]",
            expected: 2,
            shape: x.dims().to_vec(),
        });
    }
    if x.elem_count() == 0 {
        return Err(Error::EmptyTensor {
            what: "activation matrix",
            shape: x.dims().to_vec(),
        });
    }
    if !matches!(x.dtype(), DType::F32 | DType::F16 | DType::BF16) {
        return Err(Error::UnsupportedDType {
            what: "activation matrix",
            dtype: x.dtype(),
        });
    }
    Ok(())
}

impl Quantizer for ActivationQuantizer {
    fn config(&self) -> serde_json::Value {
        super::quantizer::debug_config(self)
    }

    /// `int8-token`, `fp8-e4m3-token`, `int8-static-{scale:e}`, `fp8-e5m2-static-{scale:e}`.
    fn name(&self) -> String {
        match self.scale {
            ActScale::PerToken => format!("{}-token", self.format.tag()),
            ActScale::Static(s) => format!("{}-static-{s:e}", self.format.tag()),
        }
    }

    fn quantize(&self, x: &Tensor, _calib: Option<&Calibration>) -> Result<QuantizedTensor> {
        check_activation_matrix(x)?;
        match (self.scale, self.format) {
            (ActScale::PerToken, ActivationFormat::Int8) => {
                let spec = QuantSpec::int8()
                    .per_channel()
                    .symmetric()
                    .with_scale_dtype(ScaleDType::F32);
                UniformQuantizer::new(spec)?
                    .quantize(x, None)
                    .map_err(|e| match e {
                        Error::NonFinite {
                            count, first_index, ..
                        } => Error::NonFinite {
                            what: "activation",
                            count,
                            first_index,
                        },
                        other => other,
                    })
            }
            (ActScale::PerToken, ActivationFormat::Float(f)) => FloatQuantizer::new(f)
                .per_channel()
                .with_scale_dtype(ScaleDType::F32)
                .quantize_matrix(x, "activation"),
            (ActScale::Static(scale), format) => {
                let job = ScaledJob {
                    format: match format {
                        ActivationFormat::Int8 => QuantFormat::Uniform {
                            bits: 8,
                            symmetric: true,
                        },
                        ActivationFormat::Float(f) => QuantFormat::Float(f),
                    },
                    group_len: x.elem_count(),
                    scaling: Scaling::Fixed(scale),
                    what: "activation",
                };
                quantize_scaled(x, &job)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn bad_scales_are_errors() {
        for s in [0.0, -1.0, f32::NAN, f32::INFINITY, -0.0] {
            assert!(matches!(
                ActivationQuantizer::int8_static(s),
                Err(Error::InvalidParameter { name: "scale", .. })
            ));
            assert!(ActivationQuantizer::fp8_static(FloatFormat::E4M3, s).is_err());
        }
        let empty = Calibration::new(3);
        assert!(matches!(
            ActivationQuantizer::static_from_calibration(ActivationFormat::Int8, &empty),
            Err(Error::TooFewSamples { .. })
        ));
        let mut zeros = Calibration::new(3);
        zeros
            .observe(&Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap())
            .unwrap();
        assert!(matches!(
            ActivationQuantizer::static_from_calibration(ActivationFormat::Int8, &zeros),
            Err(Error::InvalidParameter {
                name: "calibration",
                ..
            })
        ));
    }

    #[test]
    fn names() {
        assert_eq!(ActivationQuantizer::int8_per_token().name(), "int8-token");
        assert_eq!(
            ActivationQuantizer::fp8_static(FloatFormat::E5M2, 0.5)
                .unwrap()
                .name(),
            "fp8-e5m2-static-5e-1"
        );
    }
}
