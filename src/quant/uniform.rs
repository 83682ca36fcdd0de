//! Round-to-nearest (and stochastic-rounding) uniform quantization, plus 1-bit sign.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::kernels::{self, UniformJob};
use crate::quant::calibration::Calibration;
use crate::quant::quantizer::Quantizer;
use crate::quant::spec::{QuantSpec, Rounding, ScaleDType};
use crate::quant::tensor::{QuantFormat, QuantizedTensor};

/// Data-free uniform quantization (RTN) of a weight matrix.
///
/// * 2..=8 bits, symmetric or asymmetric; 1 bit means sign quantization (`±mean|w|`).
/// * Per tensor, per output channel, or per group along `in_features`.
/// * Nearest rounding (error at most half a step) or seeded stochastic rounding (unbiased,
///   error below one step).
/// * f32, f16 and bf16 weights; codes, scales and zero points really packed.
///
/// Weights must be finite: NaN or ±Inf give [`Error::NonFinite`] with the first bad index,
/// because no scale can represent them and silently clipping would hide a broken checkpoint.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::{QuantSpec, Quantizer, UniformQuantizer};
///
/// let w = Tensor::new(&[[0.1f32, -0.4, 0.25, 0.0]], &Device::Cpu)?;
/// let q = UniformQuantizer::new(QuantSpec::int4().per_channel())?;
/// let qt = q.quantize(&w, None)?;
/// // scale = 0.4 / 7 (rounded up to f16); codes are q + 8.
/// assert_eq!(qt.codes().unpack(), vec![10, 1, 12, 8]);
/// let w_hat = qt.dequantize(&Device::Cpu)?.to_vec2::<f32>()?;
/// // -7 steps: -0.4 up to the f16 rounding of the scale.
/// assert!((w_hat[0][1] + 0.4).abs() < 7.0 * 3.1e-5);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UniformQuantizer {
    spec: QuantSpec,
}

impl UniformQuantizer {
    /// A quantizer for `spec`; errors if the spec is invalid (bits, group size of 0, …).
    pub fn new(spec: QuantSpec) -> Result<Self> {
        spec.validate()?;
        Ok(UniformQuantizer { spec })
    }

    /// The spec this quantizer applies.
    pub fn spec(&self) -> &QuantSpec {
        &self.spec
    }

    fn format(&self) -> QuantFormat {
        if self.spec.bits == 1 {
            QuantFormat::Sign
        } else {
            QuantFormat::Uniform {
                bits: self.spec.bits,
                symmetric: self.spec.symmetric,
            }
        }
    }
}

/// Check that `weight` is a non-empty float matrix; return `(rows, cols)`.
pub(crate) fn check_weight_matrix(weight: &Tensor) -> Result<(usize, usize)> {
    let dims = weight.dims();
    if dims.len() != 2 {
        return Err(Error::RankMismatch {
            what: "weight matrix [out_features, in_features]",
            expected: 2,
            shape: dims.to_vec(),
        });
    }
    if weight.elem_count() == 0 {
        return Err(Error::EmptyTensor {
            what: "weight matrix",
            shape: dims.to_vec(),
        });
    }
    if !matches!(weight.dtype(), DType::F32 | DType::F16 | DType::BF16) {
        return Err(Error::UnsupportedDType {
            what: "weight matrix",
            dtype: weight.dtype(),
        });
    }
    Ok((dims[0], dims[1]))
}

impl Quantizer for UniformQuantizer {
    fn config(&self) -> serde_json::Value {
        super::quantizer::debug_config(self)
    }

    fn name(&self) -> String {
        let s = &self.spec;
        let mut name = if s.bits == 1 {
            format!("sign-w1-{}", s.granularity.tag())
        } else {
            format!(
                "rtn-w{}-{}-{}",
                s.bits,
                s.granularity.tag(),
                if s.symmetric { "sym" } else { "asym" }
            )
        };
        if let Rounding::Stochastic { seed } = s.rounding {
            name.push_str(&format!("-sr{seed}"));
        }
        name.push_str(s.scale_dtype.name_suffix(ScaleDType::F16));
        name
    }

    fn quantize(&self, weight: &Tensor, _calib: Option<&Calibration>) -> Result<QuantizedTensor> {
        let (rows, cols) = check_weight_matrix(weight)?;
        let job = UniformJob {
            format: self.format(),
            group_len: self.spec.granularity.group_len(rows, cols)?,
            rounding: self.spec.rounding,
            scale_dtype: self.spec.scale_dtype,
        };
        kernels::quantize_uniform(weight, &job)
    }
}
