//! The packed result of quantization: codes, per-group scales and zero points, and format.

use candle_core::{DType, Device, Tensor};
use half::{bf16, f16};

use crate::error::{Error, Result};
use crate::quant::packing::PackedCodes;
use crate::quant::spec::ScaleDType;

/// How codes map back to values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QuantFormat {
    /// Uniform integer grid: `w ≈ scale · (q − zero)`.
    ///
    /// Symmetric formats store no zero points: `zero = 2^(bits−1)` for every group.
    Uniform {
        /// Bits per code (2..=8).
        bits: u8,
        /// Whether the zero point is implicit (mid-range) rather than stored per group.
        symmetric: bool,
    },
    /// One-bit sign codes: `w ≈ +scale` for code 1, `−scale` for code 0.
    Sign,
}

impl QuantFormat {
    /// Bits per code.
    pub fn code_bits(&self) -> u8 {
        match *self {
            QuantFormat::Uniform { bits, .. } => bits,
            QuantFormat::Sign => 1,
        }
    }
}

/// Per-group scales in their storage dtype.
#[derive(Debug, Clone, PartialEq)]
pub enum Scales {
    /// f32 scales.
    F32(Vec<f32>),
    /// IEEE half scales.
    F16(Vec<f16>),
    /// bfloat16 scales.
    BF16(Vec<bf16>),
}

impl Scales {
    /// Store f32 values that are already representable in `dtype` (no rounding happens here).
    pub(crate) fn from_f32(values: Vec<f32>, dtype: ScaleDType) -> Self {
        match dtype {
            ScaleDType::F32 => Scales::F32(values),
            ScaleDType::F16 => Scales::F16(values.into_iter().map(f16::from_f32).collect()),
            ScaleDType::BF16 => Scales::BF16(values.into_iter().map(bf16::from_f32).collect()),
        }
    }
    /// Number of scales.
    pub fn len(&self) -> usize {
        match self {
            Scales::F32(v) => v.len(),
            Scales::F16(v) => v.len(),
            Scales::BF16(v) => v.len(),
        }
    }
    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Scale `i` as f32 (exact: every stored dtype widens to f32 without rounding).
    pub fn get(&self, i: usize) -> f32 {
        match self {
            Scales::F32(v) => v[i],
            Scales::F16(v) => v[i].to_f32(),
            Scales::BF16(v) => v[i].to_f32(),
        }
    }
    /// All scales as f32.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }
    /// Storage dtype.
    pub fn dtype(&self) -> ScaleDType {
        match self {
            Scales::F32(_) => ScaleDType::F32,
            Scales::F16(_) => ScaleDType::F16,
            Scales::BF16(_) => ScaleDType::BF16,
        }
    }
    /// Bytes of storage.
    pub fn storage_bytes(&self) -> usize {
        self.len() * self.dtype().size_in_bytes()
    }
}

/// A quantized weight matrix: packed codes plus the per-group parameters to decode them.
///
/// Groups are runs of `group_len` consecutive elements in row-major order (a whole tensor,
/// a row, or a slice of a row), so group `g` covers flat indices `g·group_len .. (g+1)·group_len`.
/// [`storage_bytes`](Self::storage_bytes) counts everything a file would hold for it: codes,
/// scales and zero points.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedTensor {
    shape: Vec<usize>,
    dtype: DType,
    format: QuantFormat,
    group_len: usize,
    codes: PackedCodes,
    scales: Scales,
    zeros: Option<PackedCodes>,
}

impl QuantizedTensor {
    /// Assemble a quantized tensor from its parts, checking that they fit together.
    ///
    /// `zeros` must be present exactly for asymmetric uniform formats. `dtype` is the dtype
    /// [`dequantize`](Self::dequantize) returns (that of the original weight).
    pub fn from_parts(
        shape: Vec<usize>,
        dtype: DType,
        format: QuantFormat,
        group_len: usize,
        codes: PackedCodes,
        scales: Scales,
        zeros: Option<PackedCodes>,
    ) -> Result<Self> {
        let numel: usize = shape.iter().product();
        let bad = |m: String| Err(Error::InconsistentParts(m));
        if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(Error::UnsupportedDType {
                what: "dequantized dtype",
                dtype,
            });
        }
        if numel == 0 || group_len == 0 || !numel.is_multiple_of(group_len) {
            return bad(format!(
                "group length {group_len} does not tile {numel} elements"
            ));
        }
        let groups = numel / group_len;
        if codes.len() != numel || codes.bits() != format.code_bits() {
            return bad(format!(
                "{} codes of {} bits for {numel} elements of a {}-bit format",
                codes.len(),
                codes.bits(),
                format.code_bits()
            ));
        }
        if scales.len() != groups {
            return bad(format!("{} scales for {groups} groups", scales.len()));
        }
        if let Some(i) = (0..groups).find(|&i| !scales.get(i).is_finite()) {
            return bad(format!("scale {i} is not finite"));
        }
        let needs_zeros = matches!(
            format,
            QuantFormat::Uniform {
                symmetric: false,
                ..
            }
        );
        match (&zeros, needs_zeros) {
            (None, false) => {}
            (Some(z), true) if z.len() == groups && z.bits() == format.code_bits() => {}
            (Some(_), true) => return bad("zero points do not match groups or bits".into()),
            (None, true) => return bad("asymmetric format without zero points".into()),
            (Some(_), false) => return bad("zero points on a format that has none".into()),
        }
        Ok(QuantizedTensor {
            shape,
            dtype,
            format,
            group_len,
            codes,
            scales,
            zeros,
        })
    }

    /// Shape of the original tensor.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Dtype of the original tensor, returned by [`dequantize`](Self::dequantize).
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// The code format.
    pub fn format(&self) -> QuantFormat {
        self.format
    }
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.codes.len()
    }
    /// Consecutive elements per group.
    pub fn group_len(&self) -> usize {
        self.group_len
    }
    /// Number of groups (= number of scales).
    pub fn num_groups(&self) -> usize {
        self.scales.len()
    }
    /// The packed codes.
    pub fn codes(&self) -> &PackedCodes {
        &self.codes
    }
    /// The per-group scales.
    pub fn scales(&self) -> &Scales {
        &self.scales
    }
    /// The packed per-group zero points (asymmetric formats only).
    pub fn zeros(&self) -> Option<&PackedCodes> {
        self.zeros.as_ref()
    }
    /// Zero point of group `g`: the code that decodes to 0 (None for sign formats).
    pub fn zero_point(&self, g: usize) -> Option<i32> {
        match (self.format, &self.zeros) {
            (QuantFormat::Uniform { .. }, Some(z)) => Some(z.get(g) as i32),
            (QuantFormat::Uniform { bits, .. }, None) => Some(1 << (bits - 1)),
            _ => None,
        }
    }
    /// Distance between adjacent levels of group `g` on a uniform grid (its scale);
    /// None for formats without a uniform step.
    pub fn step(&self, g: usize) -> Option<f32> {
        match self.format {
            QuantFormat::Uniform { .. } => Some(self.scales.get(g)),
            QuantFormat::Sign => None,
        }
    }
    /// True storage in bytes: packed codes, scales and zero points.
    pub fn storage_bytes(&self) -> usize {
        self.codes.storage_bytes()
            + self.scales.storage_bytes()
            + self.zeros.as_ref().map_or(0, PackedCodes::storage_bytes)
    }
    /// Storage bits per weight, scales and zero points included.
    ///
    /// ```
    /// # use candle_core::{Device, Tensor};
    /// use quantlens::{QuantSpec, Quantizer, UniformQuantizer};
    /// let w = Tensor::randn(0f32, 1.0, (8, 256), &Device::Cpu)?;
    /// let q = UniformQuantizer::new(QuantSpec::int4().per_group(128).asymmetric())?;
    /// // 4-bit codes + one f16 scale and one 4-bit zero point per 128 weights.
    /// assert_eq!(q.quantize(&w, None)?.bits_per_weight(), 4.0 + 20.0 / 128.0);
    /// # Ok::<(), quantlens::Error>(())
    /// ```
    pub fn bits_per_weight(&self) -> f64 {
        self.storage_bytes() as f64 * 8.0 / self.numel() as f64
    }
    /// Decode to a tensor of the original dtype on `device`.
    ///
    /// Decoding runs on the device's kernel backend; devices without one yet (CUDA, Metal)
    /// decode on the host and upload the result.
    pub fn dequantize(&self, device: &Device) -> Result<Tensor> {
        self.dequantize_to(device, self.dtype)
    }
    /// Decode into a caller-owned f32 buffer of [`numel`](Self::numel) elements, row-major.
    ///
    /// Reusing one buffer across layers avoids allocating (and page-faulting) fresh memory
    /// for every weight; the values are those of [`dequantize`](Self::dequantize) in f32.
    ///
    /// ```
    /// # use candle_core::{Device, Tensor};
    /// use quantlens::{QuantSpec, Quantizer, UniformQuantizer};
    /// let w = Tensor::randn(0f32, 1.0, (4, 64), &Device::Cpu)?;
    /// let qt = UniformQuantizer::new(QuantSpec::int8())?.quantize(&w, None)?;
    /// let mut buf = vec![0f32; qt.numel()];
    /// qt.dequantize_into(&mut buf)?;
    /// assert_eq!(buf, qt.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?);
    /// # Ok::<(), quantlens::Error>(())
    /// ```
    pub fn dequantize_into(&self, out: &mut [f32]) -> Result<()> {
        if out.len() != self.numel() {
            return Err(Error::ShapeMismatch(format!(
                "dequantize_into: buffer of {} elements for a tensor of {}",
                out.len(),
                self.numel()
            )));
        }
        crate::kernels::cpu::uniform::decode_into(self, out);
        Ok(())
    }

    /// Decode to a tensor of `dtype` (f32, f16 or bf16) on `device`.
    pub fn dequantize_to(&self, device: &Device, dtype: DType) -> Result<Tensor> {
        crate::kernels::dequantize(self, device, dtype)
    }
}
