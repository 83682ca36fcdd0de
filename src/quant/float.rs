//! Float-format quantization: FP8 (E4M3, E5M2) and FP4 (E2M1) codes with per-tensor,
//! per-channel or per-group scales, and the OCP Microscaling formats MXFP8 and MXFP4.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::kernels::scaled::{ScaledJob, Scaling, quantize_scaled};
use crate::quant::calibration::Calibration;
use crate::quant::float_format::FloatFormat;
use crate::quant::quantizer::Quantizer;
use crate::quant::spec::{Granularity, ScaleDType};
use crate::quant::tensor::{QuantFormat, QuantizedTensor};
use crate::quant::uniform::check_weight_matrix;

/// Data-free quantization of a weight matrix to a small float format: `w ≈ scale · decode(q)`.
///
/// Two ways to choose a group's scale:
///
/// * **Absmax scaling** ([`fp8_e4m3`](Self::fp8_e4m3), [`fp8_e5m2`](Self::fp8_e5m2),
///   [`fp4_e2m1`](Self::fp4_e2m1)): `scale = absmax / max_finite`, rounded *up* to the scale
///   dtype (f32 by default for FP8, f16 for FP4), so the group's largest weight lands at (or
///   just inside) the format's largest value and nothing saturates. An all-zero group gets
///   scale 0 and codes +0.
/// * **OCP microscaling** ([`mxfp8`](Self::mxfp8), [`mxfp4`](Self::mxfp4), [`mx`](Self::mx)):
///   blocks of 32 consecutive weights of a row share an E8M0 (power of two) scale computed as
///   the OCP Microscaling Formats specification v1.0 (§6.3) says:
///   `X = 2^(floor(log2(amax)) − emax_elem)` with `emax_elem` = [`FloatFormat::emax`]
///   (E4M3 8, E5M2 15, E2M1 2), clamped to E8M0's `[2^−127, 2^127]`; a block of zeros gets
///   the smallest scale `2^−127` (and codes +0). The block size must divide `in_features`.
///
/// Each element is then [`FloatFormat::encode`]d: `q = encode(w / scale)`, round to nearest
/// with ties to even, saturating. The division is one IEEE f32 division, so every backend
/// produces the same bytes.
///
/// # Error bound
///
/// Every weight decodes to the level of its group's grid `{scale · v}` nearest to it (the
/// conformance suite checks this: `ErrorBound::NearestLevel`, feature `testing`). With `m`
/// mantissa bits (E4M3 3, E5M2 2, E2M1 1), the format's smallest normal `2^(1 − bias)` and
/// smallest subnormal `s_min` ([`FloatFormat::min_subnormal`]), that means:
///
/// * `|w/scale| ≥ 2^(1 − bias)` (normal range, not saturated): relative error
///   `|ŵ − w| / |w| ≤ 2^−(m+1)` (E4M3 1/16, E5M2 1/8, E2M1 1/4);
/// * below it: absolute error `≤ scale · s_min / 2` (half the subnormal spacing);
/// * **MX saturation**: the OCP rule can put a block's largest elements above the format's
///   largest value (`amax / X` lies in `[2^emax, 2^(emax+1))`, above `max_finite` =
///   `1.75 · 2^emax` for FP8 and `1.5 · 2^emax` for E2M1); they become `±max_finite · X`, the
///   nearest level, with relative error below `1 − max_finite / 2^(emax+1)`: 1/8 for MXFP8
///   (E4M3 and E5M2) and 1/4 for MXFP4. Absmax scaling never saturates.
///
/// Weights must be finite: NaN or ±Inf give [`Error::NonFinite`] with the first bad index.
/// f16 (and bf16) scales that cannot hold `absmax / max_finite` give
/// [`Error::ScaleOutOfRange`].
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::{FloatQuantizer, Quantizer};
///
/// let w = Tensor::new(&[[0.5f32, -1.0, 0.3, 0.0], [2.0, 1.0, -0.25, 448.0]], &Device::Cpu)?;
/// let q = FloatQuantizer::fp8_e4m3(); // per channel, f32 scales
/// let qt = q.quantize(&w, None)?;
/// assert_eq!(q.name(), "fp8-e4m3-c");
/// // Row 0: scale = 1/448, so -1.0 maps exactly onto -448 (code 0xFE).
/// assert_eq!(qt.codes().get(1), 0xFE);
/// let w_hat = qt.dequantize(&Device::Cpu)?.to_vec2::<f32>()?;
/// assert_eq!(w_hat[1], [2.0, 1.0, -0.25, 448.0]); // scale 1: exact E4M3 values
/// // 0.3 · 448 = 134.4 lies between the E4M3 values 128 and 144.
/// assert_eq!(w_hat[0][2], 128.0 / 448.0);
/// # Ok::<(), quantlens::Error>(())
/// ```
///
/// Microscaling, with the block exponent of the specification:
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::{FloatQuantizer, Quantizer};
///
/// let mut row = vec![0.01f32; 32];
/// row[0] = 7.0; // amax = 7: floor(log2 7) = 2, minus emax(E2M1) = 2 → X = 2^0
/// let w = Tensor::from_vec(row, (1, 32), &Device::Cpu)?;
/// let qt = FloatQuantizer::mxfp4().quantize(&w, None)?;
/// assert_eq!(qt.scales().to_f32_vec(), vec![1.0]);
/// // 7 / X = 7 lies above E2M1's largest value 6: it saturates, as the OCP rule does.
/// assert_eq!(qt.dequantize(&Device::Cpu)?.to_vec2::<f32>()?[0][0], 6.0);
/// assert_eq!(qt.bits_per_weight(), 4.0 + 8.0 / 32.0);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FloatQuantizer {
    format: FloatFormat,
    granularity: Granularity,
    scale_dtype: ScaleDType,
    microscaling: bool,
}

impl FloatQuantizer {
    /// Absmax scaling to `format` with that format's defaults: FP8 per channel with f32
    /// scales, FP4 per group of 16 with f16 scales.
    pub fn new(format: FloatFormat) -> Self {
        let (granularity, scale_dtype) = Self::defaults(format);
        FloatQuantizer {
            format,
            granularity,
            scale_dtype,
            microscaling: false,
        }
    }

    fn defaults(format: FloatFormat) -> (Granularity, ScaleDType) {
        match format {
            FloatFormat::E4M3 | FloatFormat::E5M2 => (Granularity::PerChannel, ScaleDType::F32),
            FloatFormat::E2M1 => (Granularity::PerGroup(16), ScaleDType::F16),
        }
    }

    /// FP8 E4M3 (max 448, 3 mantissa bits), one f32 scale per output channel.
    pub fn fp8_e4m3() -> Self {
        Self::new(FloatFormat::E4M3)
    }

    /// FP8 E5M2 (max 57344, 2 mantissa bits), one f32 scale per output channel.
    pub fn fp8_e5m2() -> Self {
        Self::new(FloatFormat::E5M2)
    }

    /// FP4 E2M1 (values 0, 0.5, 1, 1.5, 2, 3, 4, 6), one f16 scale per 16 weights (NVFP4's
    /// block size; NVFP4 itself stores E4M3 scales and a per-tensor f32 scale on top).
    pub fn fp4_e2m1() -> Self {
        Self::new(FloatFormat::E2M1)
    }

    /// OCP microscaling with `format` elements: blocks of 32 sharing an E8M0 scale.
    pub fn mx(format: FloatFormat) -> Self {
        FloatQuantizer {
            format,
            granularity: Granularity::PerGroup(32),
            scale_dtype: ScaleDType::E8M0,
            microscaling: true,
        }
    }

    /// MXFP8: E4M3 elements in blocks of 32 with an E8M0 scale (8.25 bits per weight).
    pub fn mxfp8() -> Self {
        Self::mx(FloatFormat::E4M3)
    }

    /// MXFP4: E2M1 elements in blocks of 32 with an E8M0 scale (4.25 bits per weight).
    pub fn mxfp4() -> Self {
        Self::mx(FloatFormat::E2M1)
    }

    /// Set the granularity (for microscaling, the block; the OCP formats use 32).
    pub fn with_granularity(mut self, granularity: Granularity) -> Self {
        self.granularity = granularity;
        self
    }

    /// One scale for the whole tensor.
    pub fn per_tensor(self) -> Self {
        self.with_granularity(Granularity::PerTensor)
    }

    /// One scale per output channel (row).
    pub fn per_channel(self) -> Self {
        self.with_granularity(Granularity::PerChannel)
    }

    /// One scale per `group_size` consecutive weights of a row; must divide `in_features`.
    pub fn per_group(self, group_size: usize) -> Self {
        self.with_granularity(Granularity::PerGroup(group_size))
    }

    /// Set the scale storage dtype of absmax scaling (rounded up, see [`ScaleDType`]).
    ///
    /// Microscaling formats store E8M0 scales by definition; any other dtype on them is an
    /// [`Error::InvalidParameter`] from [`validate`](Self::validate) and
    /// [`quantize`](Quantizer::quantize).
    pub fn with_scale_dtype(mut self, scale_dtype: ScaleDType) -> Self {
        self.scale_dtype = scale_dtype;
        self
    }

    /// The element format.
    pub fn format(&self) -> FloatFormat {
        self.format
    }

    /// How many weights share a scale.
    pub fn granularity(&self) -> Granularity {
        self.granularity
    }

    /// The scale storage dtype.
    pub fn scale_dtype(&self) -> ScaleDType {
        self.scale_dtype
    }

    /// Whether scales follow the OCP microscaling rule (MXFP8, MXFP4).
    pub fn is_microscaling(&self) -> bool {
        self.microscaling
    }

    /// Check the configuration on its own: a group size of at least 1, and E8M0 scales for
    /// microscaling. (Whether the group size divides `in_features` is checked per weight.)
    pub fn validate(&self) -> Result<()> {
        if let Granularity::PerGroup(0) = self.granularity {
            return Err(Error::InvalidGroupSize { group_size: 0 });
        }
        if self.microscaling && self.scale_dtype != ScaleDType::E8M0 {
            return Err(Error::InvalidParameter {
                name: "scale_dtype",
                reason: format!(
                    "microscaling (MX) formats store E8M0 scales, got {:?}; for other scale \
                     dtypes use absmax scaling, e.g. FloatQuantizer::new({:?}).per_group(32)",
                    self.scale_dtype, self.format
                ),
            });
        }
        Ok(())
    }

    fn scaling(&self) -> Scaling {
        if self.microscaling {
            Scaling::Ocp
        } else {
            Scaling::Absmax(self.scale_dtype)
        }
    }

    /// Quantize a validated matrix `[rows, cols]`; `what` names it in errors.
    pub(crate) fn quantize_matrix(
        &self,
        x: &Tensor,
        what: &'static str,
    ) -> Result<QuantizedTensor> {
        self.validate()?;
        let (rows, cols) = check_weight_matrix(x)?;
        let job = ScaledJob {
            format: QuantFormat::Float(self.format),
            group_len: self.granularity.group_len(rows, cols)?,
            scaling: self.scaling(),
            what,
        };
        quantize_scaled(x, &job)
    }
}

impl Quantizer for FloatQuantizer {
    fn config(&self) -> serde_json::Value {
        super::quantizer::debug_config(self)
    }

    /// `fp8-e4m3-c`, `fp8-e5m2-g128`, `fp4-e2m1-g16`, `mxfp8-g32`, `mxfp8-e5m2-g32`,
    /// `mxfp4-g32`; a scale dtype other than the format's default adds `-s32`, `-s16`,
    /// `-sbf16` or `-se8m0`.
    fn name(&self) -> String {
        let g = self.granularity.tag();
        let f = self.format;
        if self.microscaling {
            return match f {
                FloatFormat::E4M3 => format!("mxfp8-{g}"),
                FloatFormat::E5M2 => format!("mxfp8-e5m2-{g}"),
                FloatFormat::E2M1 => format!("mxfp4-{g}"),
            };
        }
        let suffix = self.scale_dtype.name_suffix(Self::defaults(f).1);
        format!("fp{}-{}-{g}{suffix}", f.bits(), f.tag())
    }

    fn quantize(&self, weight: &Tensor, _calib: Option<&Calibration>) -> Result<QuantizedTensor> {
        self.quantize_matrix(weight, "weight")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn row(v: Vec<f32>) -> Tensor {
        let n = v.len();
        Tensor::from_vec(v, (1, n), &Device::Cpu).unwrap()
    }

    #[test]
    fn names_are_distinct_and_stable() {
        let qs = [
            FloatQuantizer::fp8_e4m3(),
            FloatQuantizer::fp8_e4m3().per_tensor(),
            FloatQuantizer::fp8_e4m3().with_scale_dtype(ScaleDType::F16),
            FloatQuantizer::fp8_e5m2().per_group(128),
            FloatQuantizer::fp4_e2m1(),
            FloatQuantizer::fp4_e2m1()
                .per_group(32)
                .with_scale_dtype(ScaleDType::E8M0),
            FloatQuantizer::mxfp8(),
            FloatQuantizer::mx(FloatFormat::E5M2),
            FloatQuantizer::mxfp4(),
        ];
        let names: Vec<String> = qs.iter().map(|q| q.name()).collect();
        assert_eq!(
            names,
            [
                "fp8-e4m3-c",
                "fp8-e4m3-t",
                "fp8-e4m3-c-s16",
                "fp8-e5m2-g128",
                "fp4-e2m1-g16",
                "fp4-e2m1-g32-se8m0",
                "mxfp8-g32",
                "mxfp8-e5m2-g32",
                "mxfp4-g32"
            ]
        );
    }

    #[test]
    fn bad_configurations_are_errors() {
        let w = Tensor::ones((2, 48), DType::F32, &Device::Cpu).unwrap();
        // The MX block must divide in_features.
        assert!(matches!(
            FloatQuantizer::mxfp4().quantize(&w, None),
            Err(Error::GroupSizeMismatch {
                group_size: 32,
                in_features: 48
            })
        ));
        assert!(matches!(
            FloatQuantizer::fp8_e4m3().per_group(0).quantize(&w, None),
            Err(Error::InvalidGroupSize { group_size: 0 })
        ));
        let e = FloatQuantizer::mxfp8()
            .with_scale_dtype(ScaleDType::F16)
            .quantize(&w, None)
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidParameter {
                    name: "scale_dtype",
                    ..
                }
            ),
            "{e}"
        );
        // f16 cannot hold 1e9 / 448.
        assert!(matches!(
            FloatQuantizer::fp8_e4m3()
                .with_scale_dtype(ScaleDType::F16)
                .quantize(&row(vec![1e9, 1.0]), None),
            Err(Error::ScaleOutOfRange { group: 0, .. })
        ));
    }

    #[test]
    fn zero_groups_get_zero_scale_or_the_smallest_mx_scale_and_plus_zero_codes() {
        let w = row(vec![-0.0, 0.0, -0.0, 0.0, 1.0, -0.0, 2.0, 0.5]);
        let qt = FloatQuantizer::fp8_e4m3()
            .per_group(4)
            .quantize(&w, None)
            .unwrap();
        assert_eq!(qt.scales().to_f32_vec(), vec![0.0, 2.0 / 448.0]);
        // +0 codes in the zero group; the −0 in the other group keeps its sign.
        assert_eq!(qt.codes().unpack()[..6], [0, 0, 0, 0, 0x76, 0x80]);
        let w = row([vec![-0.0; 32], vec![1.0; 32]].concat());
        let qt = FloatQuantizer::mxfp8().quantize(&w, None).unwrap();
        assert_eq!(
            qt.scales().to_f32_vec(),
            vec![2f32.powi(-127), 2f32.powi(-8)]
        );
        assert!(qt.codes().unpack()[..32].iter().all(|&c| c == 0));
    }
}
