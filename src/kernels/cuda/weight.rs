//! A uniform 4-bit quantized weight kept on a CUDA device: packed codes, f32 scales and (when
//! asymmetric) zero points uploaded once, so dequantization and the fused matmul read them in
//! place instead of uploading the codes on every call.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::quant::{PackedCodes, QuantFormat, QuantSpec, QuantizedTensor, ScaleDType, Scales};

/// Codes per 16-byte chunk: the unit the kernels load; groups must be whole chunks.
pub(crate) const CHUNK: usize = 32;

/// A uniform 4-bit weight `W` (`[rows, cols]`, group-wise along `cols`) resident on a CUDA
/// device, for [`dequantize`](Self::dequantize) and the fused [`matmul`](Self::matmul)
/// `x · Wᵀ`.
///
/// Built from a [`QuantizedTensor`] with format `Uniform { bits: 4, .. }` (symmetric or
/// asymmetric), a group length that is a multiple of 32 and divides `cols` (so no group
/// straddles two rows; 128 is the usual choice), and no input scales. On the device it
/// occupies `rows·cols/2` bytes of codes, 4 bytes of scale per group and, asymmetric, 1 byte
/// of zero point per group.
///
/// ```no_run
/// # fn main() -> quantlens::Result<()> {
/// use candle_core::{DType, Device, Tensor};
/// use quantlens::{CudaQuantizedWeight, QuantSpec, Quantizer, UniformQuantizer};
///
/// let gpu = Device::new_cuda(0)?;
/// let w = Tensor::randn(0f32, 1.0, (256, 512), &Device::Cpu)?;
/// let q = UniformQuantizer::new(QuantSpec::int4().per_group(128))?.quantize(&w, None)?;
/// let wq = CudaQuantizedWeight::new(&q, &gpu)?;
/// let x = Tensor::randn(0f32, 1.0, (1, 512), &gpu)?.to_dtype(DType::BF16)?;
/// let y = wq.matmul(&x)?; // [1, 256] bf16, = x · dequantize(W)ᵀ
/// assert_eq!(y.dims(), &[1, 256]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CudaQuantizedWeight {
    /// u8 `[rows·cols/2]`, the packed codes as in [`QuantizedTensor::codes`].
    pub(crate) codes: Tensor,
    /// f32 `[groups]`.
    pub(crate) scales: Tensor,
    /// u8 `[groups]`, one zero point per group; `None` when symmetric.
    pub(crate) zeros: Option<Tensor>,
    /// The zero point of every group when symmetric (8 for 4 bits).
    pub(crate) zero: i32,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) group_len: usize,
    /// The dtype of the weight that was quantized (what [`to_host`](Self::to_host) records).
    pub(crate) dtype: DType,
    /// The dtype the scales are representable in (they are stored as f32 on the device).
    pub(crate) scale_dtype: ScaleDType,
}

impl CudaQuantizedWeight {
    /// Upload `q` to the CUDA device `device`.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedDevice`] unless `device` is a CUDA device;
    /// [`Error::RankMismatch`] unless `q` is rank 2; [`Error::Unsupported`] for a format other
    /// than uniform 4-bit, input scales, or a group length that is not a multiple of 32;
    /// [`Error::GroupSizeMismatch`] when the group length does not divide the columns.
    pub fn new(q: &QuantizedTensor, device: &Device) -> Result<Self> {
        if !device.is_cuda() {
            return Err(Error::UnsupportedDevice {
                op: "CudaQuantizedWeight",
                device: format!("{:?}", device.location()),
                hint: "a device-resident quantized weight needs a CUDA device",
            });
        }
        let &[rows, cols] = q.shape() else {
            return Err(Error::RankMismatch {
                what: "quantized weight",
                expected: 2,
                shape: q.shape().to_vec(),
            });
        };
        let QuantFormat::Uniform { bits: 4, symmetric } = q.format() else {
            return Err(Error::Unsupported(format!(
                "CudaQuantizedWeight holds uniform 4-bit weights, got {:?}",
                q.format()
            )));
        };
        if q.input_scales().is_some() {
            return Err(Error::Unsupported(
                "CudaQuantizedWeight: weights with input scales (AWQ/SmoothQuant) are not supported yet"
                    .into(),
            ));
        }
        let group_len = q.group_len();
        if !group_len.is_multiple_of(CHUNK) {
            return Err(Error::Unsupported(format!(
                "CudaQuantizedWeight: group length {group_len} is not a multiple of {CHUNK}"
            )));
        }
        if !cols.is_multiple_of(group_len) {
            return Err(Error::GroupSizeMismatch {
                group_size: group_len,
                in_features: cols,
            });
        }
        if rows * cols / CHUNK > u32::MAX as usize {
            return Err(Error::Unsupported(format!(
                "CudaQuantizedWeight: {rows}x{cols} has more than 2^32 chunks of 32 codes"
            )));
        }
        let bytes = q.codes().bytes();
        let codes = Tensor::from_slice(bytes, bytes.len(), device)?;
        let scales = Tensor::from_vec(q.scales().to_f32_vec(), q.num_groups(), device)?;
        let (zeros, zero) = match (symmetric, q.zeros()) {
            (false, Some(z)) => (Some(Tensor::from_vec(z.unpack(), z.len(), device)?), 0),
            _ => (None, q.zero_point(0).unwrap_or(8)),
        };
        Ok(CudaQuantizedWeight {
            codes,
            scales,
            zeros,
            zero,
            rows,
            cols,
            group_len,
            dtype: q.dtype(),
            scale_dtype: q.scales().dtype().unwrap_or(ScaleDType::F32),
        })
    }

    /// Quantize `weight` (`[rows, cols]`, f32/f16/bf16, on a CUDA device) on the device,
    /// straight into a resident weight: group statistics, scales, zero points and codes are
    /// computed by one kernel and never leave the device.
    ///
    /// The result holds exactly the codes, scales and zero points that
    /// [`UniformQuantizer`](crate::UniformQuantizer) with the same `spec` produces on the CPU
    /// (see [`to_host`](Self::to_host)).
    ///
    /// ```no_run
    /// # fn main() -> quantlens::Result<()> {
    /// use candle_core::{DType, Device, Tensor};
    /// use quantlens::{CudaQuantizedWeight, QuantSpec};
    ///
    /// let gpu = Device::new_cuda(0)?;
    /// let w = Tensor::randn(0f32, 1.0, (256, 512), &gpu)?.to_dtype(DType::BF16)?;
    /// let wq = CudaQuantizedWeight::quantize(&w, &QuantSpec::int4().per_group(128))?;
    /// assert_eq!((wq.rows(), wq.cols()), (256, 512));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedDevice`] unless `weight` is on a CUDA device; the errors of
    /// [`UniformQuantizer`](crate::UniformQuantizer) for a bad weight or spec (rank, dtype,
    /// empty, non-finite weights, a scale out of the scale dtype's range, a group that does
    /// not divide the columns); [`Error::Unsupported`] for other than 4 bits, stochastic
    /// rounding, E8M0 scales or a group length that is not a multiple of 32.
    ///
    /// This waits for the kernel to read its 4-byte status word (one host round trip, ~30 µs
    /// on an H100 for an 8192² weight whose kernel takes ~65 µs); to quantize many weights
    /// without waiting for each, use [`quantize_deferred`](Self::quantize_deferred).
    pub fn quantize(weight: &Tensor, spec: &QuantSpec) -> Result<Self> {
        super::quantize_resident::quantize_resident(weight, spec)
    }

    /// [`quantize`](Self::quantize) without waiting: the kernel is queued on the device's
    /// stream and the returned [`PendingQuantize`](crate::PendingQuantize) hands out the weight
    /// from [`finish`](crate::PendingQuantize::finish), which reads the kernel's status word
    /// and reports a fault (non-finite weight, scale overflow) as the CPU path's exact error.
    /// No host synchronisation happens here, so a model's layers can all be queued before the
    /// first `finish`; a fault cannot go unnoticed, since the weight is only reachable through
    /// `finish`.
    ///
    /// ```no_run
    /// # fn main() -> quantlens::Result<()> {
    /// use candle_core::{DType, Device, Tensor};
    /// use quantlens::{CudaQuantizedWeight, QuantSpec};
    ///
    /// let gpu = Device::new_cuda(0)?;
    /// let spec = QuantSpec::int4().per_group(128);
    /// let layers: Vec<Tensor> = (0..4)
    ///     .map(|_| Tensor::randn(0f32, 1.0, (256, 512), &gpu)?.to_dtype(DType::BF16))
    ///     .collect::<candle_core::Result<_>>()?;
    /// // Queue every layer, then check them: one wait for all.
    /// let pending = layers
    ///     .iter()
    ///     .map(|w| CudaQuantizedWeight::quantize_deferred(w, &spec))
    ///     .collect::<quantlens::Result<Vec<_>>>()?;
    /// let weights = pending
    ///     .into_iter()
    ///     .map(|p| p.finish())
    ///     .collect::<quantlens::Result<Vec<_>>>()?;
    /// assert_eq!(weights.len(), 4);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The errors of [`quantize`](Self::quantize) that need no device result (device, spec,
    /// shape, dtype); faults in the weight's values come from `finish`.
    pub fn quantize_deferred(weight: &Tensor, spec: &QuantSpec) -> Result<crate::PendingQuantize> {
        super::quantize_resident::quantize_resident_deferred(weight, spec)
    }

    /// Download the weight into a host [`QuantizedTensor`] (codes, scales, zero points as
    /// they are on the device; the scales in the dtype they were quantized for).
    ///
    /// # Errors
    ///
    /// A device error from the copy.
    pub fn to_host(&self) -> Result<QuantizedTensor> {
        let n = self.rows * self.cols;
        let codes = PackedCodes::from_bytes(self.codes.to_vec1::<u8>()?, 4, n)?;
        let scales = Scales::from_f32(self.scales.to_vec1::<f32>()?, self.scale_dtype);
        let zeros = match &self.zeros {
            Some(z) => Some(PackedCodes::pack(&z.to_vec1::<u8>()?, 4)?),
            None => None,
        };
        QuantizedTensor::from_parts(
            vec![self.rows, self.cols],
            self.dtype,
            QuantFormat::Uniform {
                bits: 4,
                symmetric: self.zeros.is_none(),
            },
            self.group_len,
            codes,
            scales,
            zeros,
        )
    }

    /// Output features (rows of `W`).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features (columns of `W`).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Codes sharing one scale, along a row.
    pub fn group_len(&self) -> usize {
        self.group_len
    }

    /// Whether the groups have per-group zero points.
    pub fn is_asymmetric(&self) -> bool {
        self.zeros.is_some()
    }

    /// The device holding the weight.
    pub fn device(&self) -> &Device {
        self.codes.device()
    }

    /// Bytes held on the device (codes, scales, zero points).
    pub fn device_bytes(&self) -> usize {
        let groups = self.rows * self.cols / self.group_len;
        self.rows * self.cols / 2 + 4 * groups + self.zeros.as_ref().map_or(0, |_| groups)
    }

    /// `W` as a `[rows, cols]` tensor of `dtype` (f32, f16 or bf16) on the weight's device,
    /// bit-identical to [`QuantizedTensor::dequantize_to`].
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedDType`] for other dtypes.
    pub fn dequantize(&self, dtype: DType) -> Result<Tensor> {
        super::dequantize::dequantize_resident(self, dtype)
    }

    /// `x · Wᵀ`: `x` is `[.., cols]` in f32, f16 or bf16 on the weight's device; the result
    /// is `[.., rows]` in `x`'s dtype. For decode-sized `x` (up to 4 rows of f16/bf16, 8 of
    /// f32) one GEMV kernel reads the packed weight and never materialises `W`; up to 64 rows
    /// of f16/bf16 a tiled tensor-core kernel does the same. Beyond that the product is
    /// compute-bound, and `W` is dequantized on the device into a temporary and multiplied by
    /// cuBLAS, which is faster there.
    ///
    /// Accumulation is in f32; the result differs from `x · dequantize(W)ᵀ` computed exactly
    /// by the f32 accumulation error plus one rounding to `x`'s dtype.
    ///
    /// # Errors
    ///
    /// [`Error::RankMismatch`] for a rank-0 `x`; [`Error::ShapeMismatch`] when its last
    /// dimension is not `cols`; [`Error::EmptyTensor`] when it has no rows;
    /// [`Error::UnsupportedDType`]; [`Error::UnsupportedDevice`] when `x` is not on the
    /// weight's device.
    pub fn matmul(&self, x: &Tensor) -> Result<Tensor> {
        super::qmatmul::matmul(self, x)
    }
}
