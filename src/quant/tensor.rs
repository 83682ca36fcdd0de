//! The packed result of quantization: codes, per-group scales and zero points (or a
//! codebook), and format.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::quant::codebook::Codebook;
use crate::quant::float_format::FloatFormat;
use crate::quant::packing::PackedCodes;
use crate::quant::scales::Scales;

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
    /// Ternary ("1.58-bit") codes in 2 bits: 0 → `−scale`, 1 → 0, 2 → `+scale` (3 is invalid).
    Ternary,
    /// Codes index a table of levels ([`QuantizedTensor::codebook`]): `w ≈ scale · level[q]`.
    Codebook {
        /// Bits per code (1..=8); tables hold `2^bits` levels.
        bits: u8,
    },
    /// Codes are small floats: `w ≈ scale · decode(q)` (FP8, FP4; MX when scales are E8M0).
    Float(FloatFormat),
    /// Unsigned integer grid shifted by a real offset per group
    /// ([`QuantizedTensor::offsets`]): `w ≈ scale · q + offset`. At 4 bits in groups of 32
    /// with f16 scales and offsets this is GGML's Q4_1.
    ///
    /// Decoded in f32 as `q · scale + offset`: the product rounded, then the sum rounded (no
    /// fused multiply-add), which is GGML's `dequantize_row_q4_1` to the bit.
    Affine {
        /// Bits per code (1..=8).
        bits: u8,
    },
}

impl QuantFormat {
    /// Bits per code.
    pub fn code_bits(&self) -> u8 {
        match *self {
            QuantFormat::Uniform { bits, .. } => bits,
            QuantFormat::Sign => 1,
            QuantFormat::Ternary => 2,
            QuantFormat::Codebook { bits } => bits,
            QuantFormat::Float(f) => f.bits(),
            QuantFormat::Affine { bits } => bits,
        }
    }

    /// The unit levels a code decodes to before the group's scale, indexed by code, for
    /// formats with a fixed table (sign, ternary, float); `None` for uniform and codebook
    /// formats, whose levels depend on the tensor.
    pub fn unit_levels(&self) -> Option<Vec<f32>> {
        match *self {
            QuantFormat::Sign => Some(vec![-1.0, 1.0]),
            QuantFormat::Ternary => Some(vec![-1.0, 0.0, 1.0]),
            QuantFormat::Float(f) => Some(f.value_table()),
            QuantFormat::Uniform { .. }
            | QuantFormat::Codebook { .. }
            | QuantFormat::Affine { .. } => None,
        }
    }
}

/// Everything a [`QuantizedTensor`] is made of, for [`QuantizedTensor::assemble`].
///
/// `zeros` is for asymmetric uniform formats only, `codebook` for codebook formats only,
/// `offsets` for affine formats only; `input_scales` may accompany any format.
///
/// Build one with [`new`](Self::new) and the `with_*` methods: the struct is
/// `#[non_exhaustive]`, so a part added in a later version (as `offsets` once was) does not
/// break your code. The fields stay public for reading and editing.
///
/// ```
/// use candle_core::{DType, Device};
/// use quantlens::{PackedCodes, QuantFormat, QuantizedParts, QuantizedTensor, Scales};
///
/// # fn main() -> quantlens::Result<()> {
/// // Two groups of four 4-bit codes; asymmetric, so each group has a zero point.
/// let codes = PackedCodes::pack(&[0, 5, 10, 15, 1, 2, 3, 4], 4)?;
/// let parts = QuantizedParts::new(
///     vec![2, 4],
///     DType::F32,
///     QuantFormat::Uniform { bits: 4, symmetric: false },
///     4,
///     codes,
///     Scales::F32(vec![0.5, 0.25]),
/// )
/// .with_zeros(PackedCodes::pack(&[8, 0], 4)?);
/// let q = QuantizedTensor::assemble(parts)?;
/// let w: Vec<f32> = q.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1()?;
/// assert_eq!(w, [-4.0, -1.5, 1.0, 3.5, 0.25, 0.5, 0.75, 1.0]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct QuantizedParts {
    /// Shape of the original tensor.
    pub shape: Vec<usize>,
    /// Dtype [`QuantizedTensor::dequantize`] returns (that of the original weight).
    pub dtype: DType,
    /// How codes map to values.
    pub format: QuantFormat,
    /// Consecutive row-major elements sharing a scale.
    pub group_len: usize,
    /// One code per element.
    pub codes: PackedCodes,
    /// One scale per group.
    pub scales: Scales,
    /// One zero point per group (asymmetric uniform formats).
    pub zeros: Option<PackedCodes>,
    /// The level tables (codebook formats).
    pub codebook: Option<Codebook>,
    /// One offset per group (affine formats).
    pub offsets: Option<Scales>,
    /// One positive scale `s_j` per input channel (the last dimension), for weights smoothed
    /// by AWQ or SmoothQuant: the codes then encode `W·diag(s)` (see
    /// [`QuantizedTensor::input_scales`]). `None` for plain quantization.
    pub input_scales: Option<Scales>,
}

impl QuantizedParts {
    /// The parts every format has: shape, the dtype [`QuantizedTensor::dequantize`] returns,
    /// format, group length, codes and one scale per group. The format-specific parts start
    /// empty; add them with the `with_*` methods. Nothing is checked until
    /// [`QuantizedTensor::assemble`].
    pub fn new(
        shape: Vec<usize>,
        dtype: DType,
        format: QuantFormat,
        group_len: usize,
        codes: PackedCodes,
        scales: Scales,
    ) -> Self {
        Self {
            shape,
            dtype,
            format,
            group_len,
            codes,
            scales,
            zeros: None,
            codebook: None,
            offsets: None,
            input_scales: None,
        }
    }

    /// One zero point per group, packed (asymmetric uniform formats).
    #[must_use]
    pub fn with_zeros(mut self, zeros: PackedCodes) -> Self {
        self.zeros = Some(zeros);
        self
    }

    /// The level tables (codebook formats).
    #[must_use]
    pub fn with_codebook(mut self, codebook: Codebook) -> Self {
        self.codebook = Some(codebook);
        self
    }

    /// One offset per group (affine formats).
    #[must_use]
    pub fn with_offsets(mut self, offsets: Scales) -> Self {
        self.offsets = Some(offsets);
        self
    }

    /// One positive scale per input channel (weights smoothed by AWQ or SmoothQuant).
    #[must_use]
    pub fn with_input_scales(mut self, input_scales: Scales) -> Self {
        self.input_scales = Some(input_scales);
        self
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
    codebook: Option<Codebook>,
    offsets: Option<Scales>,
    input_scales: Option<Scales>,
}

impl QuantizedTensor {
    /// Assemble a uniform or sign quantized tensor from its parts, checking that they fit
    /// together (see [`assemble`](Self::assemble), which takes every format).
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
        Self::assemble(QuantizedParts {
            shape,
            dtype,
            format,
            group_len,
            codes,
            scales,
            zeros,
            codebook: None,
            offsets: None,
            input_scales: None,
        })
    }

    /// Assemble a quantized tensor of any format from its parts, checking that they fit
    /// together: codes match the element count and the format's bits, one finite scale per
    /// group, zero points exactly for asymmetric uniform formats, a codebook (whose tables
    /// evenly divide the groups) exactly for codebook formats, one finite offset per group
    /// exactly for affine formats, input scales (if any) one per input channel, finite and
    /// positive, and no code that decodes to a non-value (ternary code 3, FP8 NaN or infinity
    /// codes).
    pub fn assemble(parts: QuantizedParts) -> Result<Self> {
        let QuantizedParts {
            shape,
            dtype,
            format,
            group_len,
            codes,
            scales,
            zeros,
            codebook,
            offsets,
            input_scales,
        } = parts;
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
        match (&codebook, format) {
            (None, QuantFormat::Codebook { .. }) => {
                return bad("codebook format without a codebook".into());
            }
            (Some(cb), QuantFormat::Codebook { bits }) => {
                if cb.table_len() != 1 << bits {
                    return bad(format!(
                        "{}-level tables for {bits}-bit codes",
                        cb.table_len()
                    ));
                }
                if !groups.is_multiple_of(cb.tables()) {
                    return bad(format!("{} tables for {groups} groups", cb.tables()));
                }
            }
            (Some(_), _) => return bad("a codebook on a format that has none".into()),
            (None, _) => {}
        }
        match (&offsets, format) {
            (None, QuantFormat::Affine { .. }) => {
                return bad("affine format without offsets".into());
            }
            (Some(o), QuantFormat::Affine { .. }) => {
                if o.len() != groups {
                    return bad(format!("{} offsets for {groups} groups", o.len()));
                }
                if let Some(i) = (0..groups).find(|&i| !o.get(i).is_finite()) {
                    return bad(format!("offset {i} is not finite"));
                }
            }
            (Some(_), _) => return bad("offsets on a format that has none".into()),
            (None, _) => {}
        }
        if let Some(s) = &input_scales {
            let channels = shape.last().copied().unwrap_or(0);
            if shape.len() < 2 || s.len() != channels {
                return bad(format!(
                    "{} input scales for shape {shape:?} (one per input channel, the last \
                     dimension of a matrix)",
                    s.len()
                ));
            }
            if let Some(j) = (0..channels).find(|&j| !(s.get(j).is_finite() && s.get(j) > 0.0)) {
                return bad(format!(
                    "input scale {j} = {} is not finite and positive",
                    s.get(j)
                ));
            }
        }
        if let Some(levels) = format.unit_levels() {
            // Codes past the table (ternary 3) or standing for NaN/∞ (FP8) are not values.
            let invalid: Vec<bool> = (0..1usize << format.code_bits())
                .map(|c| levels.get(c).is_none_or(|v| !v.is_finite()))
                .collect();
            if invalid.iter().any(|&b| b)
                && let Some((i, c)) = first_invalid_code(&codes, &invalid)
            {
                return bad(format!(
                    "code {c} at index {i} is not a value of {format:?}"
                ));
            }
        }
        Ok(QuantizedTensor {
            shape,
            dtype,
            format,
            group_len,
            codes,
            scales,
            zeros,
            codebook,
            offsets,
            input_scales,
        })
    }

    /// Take the tensor apart again: `QuantizedTensor::assemble(q.clone().into_parts())`
    /// gives back `q`. Wrapping quantizers (AWQ, SmoothQuant) use it to attach input scales
    /// to what their base quantizer produced.
    pub fn into_parts(self) -> QuantizedParts {
        QuantizedParts {
            shape: self.shape,
            dtype: self.dtype,
            format: self.format,
            group_len: self.group_len,
            codes: self.codes,
            scales: self.scales,
            zeros: self.zeros,
            codebook: self.codebook,
            offsets: self.offsets,
            input_scales: self.input_scales,
        }
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
    /// The level tables (codebook formats only).
    pub fn codebook(&self) -> Option<&Codebook> {
        self.codebook.as_ref()
    }
    /// The per-group offsets (affine formats only).
    pub fn offsets(&self) -> Option<&Scales> {
        self.offsets.as_ref()
    }
    /// The per-input-channel scales `s` of a smoothed weight (AWQ, SmoothQuant), if any.
    ///
    /// With input scales the codes, scales and levels describe the *smoothed* weight
    /// `W·diag(s)` (column `j` multiplied by `s_j`): [`dequantize_smoothed`] decodes it, and
    /// [`dequantize`] returns the effective weight `Q(W·diag(s))·diag(s)⁻¹`, each decoded value
    /// divided by its column's `s_j` (one f32 division), which is what the layer computes with.
    /// A [`LinearLayer`](crate::model::LinearLayer) holding the packed tensor divides its input
    /// by `s` instead and multiplies by the smoothed weight, so activation hooks see `X·diag(s)⁻¹`.
    ///
    /// [`dequantize_smoothed`]: Self::dequantize_smoothed
    /// [`dequantize`]: Self::dequantize
    ///
    /// ```
    /// # use candle_core::{DType, Device, Tensor};
    /// use half::f16;
    /// use quantlens::{QuantSpec, QuantizedTensor, Quantizer, ScaleDType, Scales, UniformQuantizer};
    ///
    /// // Quantize W·diag(s) for s = (2, 0.5), then attach s.
    /// let w = Tensor::new(&[[0.25f32, 1.0], [-0.5, 2.0]], &Device::Cpu)?;
    /// let s = Tensor::new(&[2f32, 0.5], &Device::Cpu)?;
    /// let spec = QuantSpec::int8().per_channel().with_scale_dtype(ScaleDType::F32);
    /// let smoothed = UniformQuantizer::new(spec)?.quantize(&w.broadcast_mul(&s)?, None)?;
    /// let mut parts = smoothed.into_parts();
    /// parts.input_scales = Some(Scales::F16(vec![f16::from_f32(2.0), f16::from_f32(0.5)]));
    /// let qt = QuantizedTensor::assemble(parts)?;
    /// assert_eq!(qt.input_scales().map(|s| s.to_f32_vec()), Some(vec![2.0, 0.5]));
    /// // The effective weight is close to W, the smoothed one to W·diag(s).
    /// let eff = qt.dequantize(&Device::Cpu)?.to_vec2::<f32>()?;
    /// let raw = qt.dequantize_smoothed(&Device::Cpu)?.to_vec2::<f32>()?;
    /// assert!((eff[1][0] + 0.5).abs() < 0.01 && (raw[1][0] + 1.0).abs() < 0.01);
    /// assert_eq!(eff[1][1], raw[1][1] / 0.5);
    /// # Ok::<(), quantlens::Error>(())
    /// ```
    pub fn input_scales(&self) -> Option<&Scales> {
        self.input_scales.as_ref()
    }
    /// Every value group `g` can decode to, ascending, without duplicates: the grid a
    /// weight of that group is rounded onto. For a tensor with
    /// [`input_scales`](Self::input_scales) these are levels of the smoothed weight `W·diag(s)`
    /// ([`dequantize_smoothed`](Self::dequantize_smoothed)), as is [`step`](Self::step).
    ///
    /// ```
    /// # use candle_core::{Device, Tensor};
    /// use quantlens::{QuantSpec, Quantizer, ScaleDType, UniformQuantizer};
    /// let w = Tensor::new(&[[1.0f32, -0.5, 0.25, 0.0]], &Device::Cpu)?;
    /// let spec = QuantSpec::int2().per_channel().with_scale_dtype(ScaleDType::F32);
    /// let qt = UniformQuantizer::new(spec)?.quantize(&w, None)?;
    /// assert_eq!(qt.group_levels(0), vec![-2.0, -1.0, 0.0, 1.0]);
    /// # Ok::<(), quantlens::Error>(())
    /// ```
    pub fn group_levels(&self, g: usize) -> Vec<f32> {
        let scale = self.scales.get(g);
        let mut v: Vec<f32> = match (self.format, &self.codebook) {
            (QuantFormat::Uniform { bits, .. }, _) => {
                let zero = self.zero_point(g).unwrap_or(0);
                (0..1i32 << bits)
                    .map(|q| crate::quant::grid::UniformParams::decode(scale, zero, q as u8))
                    .collect()
            }
            (QuantFormat::Affine { bits }, _) => {
                let offset = self.offsets.as_ref().map_or(0.0, |o| o.get(g));
                (0..1u16 << bits)
                    .map(|q| crate::quant::affine::decode(scale, offset, q as u8))
                    .collect()
            }
            (QuantFormat::Codebook { .. }, Some(cb)) => {
                let t = g / (self.num_groups() / cb.tables());
                cb.table(t).iter().map(|l| scale * l).collect()
            }
            (format, _) => format
                .unit_levels()
                .unwrap_or_default()
                .into_iter()
                .filter(|l| l.is_finite())
                .map(|l| scale * l)
                .collect(),
        };
        v.sort_by(f32::total_cmp);
        v.dedup_by(|a, b| a == b);
        v
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
            QuantFormat::Uniform { .. } | QuantFormat::Affine { .. } => Some(self.scales.get(g)),
            _ => None,
        }
    }
    /// True storage in bytes: packed codes, scales, zero points, stored codebook levels,
    /// offsets and input scales.
    pub fn storage_bytes(&self) -> usize {
        self.codes.storage_bytes()
            + self.scales.storage_bytes()
            + self.zeros.as_ref().map_or(0, PackedCodes::storage_bytes)
            + self.codebook.as_ref().map_or(0, Codebook::storage_bytes)
            + self.offsets.as_ref().map_or(0, Scales::storage_bytes)
            + self.input_scales.as_ref().map_or(0, Scales::storage_bytes)
    }
    /// Storage bits per weight, scales, zero points, codebooks, offsets and input scales
    /// included.
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
    /// Decode to a tensor of the original dtype on `device`: the weight the quantized layer
    /// computes with. For a tensor with [`input_scales`](Self::input_scales) this is the
    /// effective weight `Q(W·diag(s))·diag(s)⁻¹`.
    ///
    /// Decoding runs on the device's kernel backend; devices without one yet (CUDA, Metal)
    /// decode on the host and upload the result.
    pub fn dequantize(&self, device: &Device) -> Result<Tensor> {
        self.dequantize_to(device, self.dtype)
    }
    /// Decode the smoothed weight `Q(W·diag(s))` in the original dtype, without dividing by
    /// the [`input_scales`](Self::input_scales); the same as [`dequantize`](Self::dequantize)
    /// for a tensor without them.
    pub fn dequantize_smoothed(&self, device: &Device) -> Result<Tensor> {
        self.dequantize_smoothed_to(device, self.dtype)
    }
    /// [`dequantize_smoothed`](Self::dequantize_smoothed) to a tensor of `dtype` (f32, f16 or
    /// bf16) on `device`.
    pub fn dequantize_smoothed_to(&self, device: &Device, dtype: DType) -> Result<Tensor> {
        crate::kernels::dequantize(self, device, dtype, crate::kernels::Domain::Smoothed)
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
        crate::kernels::cpu::decode::decode_into(self, out, crate::kernels::Domain::Effective);
        Ok(())
    }

    /// Decode to a tensor of `dtype` (f32, f16 or bf16) on `device` (the effective weight, as
    /// [`dequantize`](Self::dequantize)).
    pub fn dequantize_to(&self, device: &Device, dtype: DType) -> Result<Tensor> {
        crate::kernels::dequantize(self, device, dtype, crate::kernels::Domain::Effective)
    }
}

/// The first code (index, value) flagged in `invalid`, scanning unpacked chunks in parallel
/// (this check runs on every quantize of a format with invalid codes, so it must be cheap).
fn first_invalid_code(codes: &PackedCodes, invalid: &[bool]) -> Option<(usize, u8)> {
    use rayon::prelude::*;
    const CHUNK: usize = 64 * 1024; // a multiple of 8: chunks start on whole bytes
    let bits = codes.bits() as usize;
    let bytes = codes.bytes();
    let n = codes.len();
    (0..n.div_ceil(CHUNK)).into_par_iter().find_map_first(|k| {
        let start = k * CHUNK;
        let len = CHUNK.min(n - start);
        let mut buf = vec![0u8; len];
        let b0 = start * bits / 8;
        let b1 = crate::quant::packing::packed_len(len, bits as u8);
        crate::quant::packing::unpack_from(&bytes[b0..b0 + b1], bits as u8, &mut buf);
        buf.iter()
            .position(|&c| invalid[c as usize])
            .map(|j| (start + j, buf[j]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(format: QuantFormat, codes: Vec<u8>) -> QuantizedParts {
        let n = codes.len();
        QuantizedParts {
            shape: vec![1, n],
            dtype: DType::F32,
            format,
            group_len: n,
            codes: PackedCodes::pack(&codes, format.code_bits()).unwrap(),
            scales: Scales::F32(vec![1.0]),
            zeros: None,
            offsets: None,
            codebook: None,
            input_scales: None,
        }
    }

    #[test]
    fn codes_that_are_not_values_are_rejected_wherever_they_are() {
        let n = 200_000;
        for (format, bad) in [
            (QuantFormat::Ternary, 3u8),
            (QuantFormat::Float(FloatFormat::E4M3), 0x7F),
            (QuantFormat::Float(FloatFormat::E5M2), 0xFC),
        ] {
            let ok = vec![1u8; n];
            assert!(QuantizedTensor::assemble(parts(format, ok.clone())).is_ok());
            for at in [0, 65_535, 65_536, 131_073, n - 1] {
                let mut codes = ok.clone();
                codes[at] = bad;
                let err = QuantizedTensor::assemble(parts(format, codes)).unwrap_err();
                assert!(err.to_string().contains(&format!("index {at} ")), "{err}");
            }
        }
    }

    #[test]
    fn codebooks_must_match_format_and_groups() {
        let mut p = parts(QuantFormat::Codebook { bits: 2 }, vec![0, 1, 2, 3]);
        assert!(QuantizedTensor::assemble(p.clone()).is_err()); // no codebook
        p.codebook = Some(Codebook::new(vec![0.0; 8], 8, crate::LevelStorage::F32).unwrap());
        assert!(QuantizedTensor::assemble(p.clone()).is_err()); // 8 levels for 2-bit codes
        p.codebook = Some(Codebook::new(vec![0.0; 8], 4, crate::LevelStorage::F32).unwrap());
        assert!(QuantizedTensor::assemble(p.clone()).is_err()); // 2 tables for 1 group
        p.codebook = Some(Codebook::new(vec![0.0; 4], 4, crate::LevelStorage::F32).unwrap());
        assert!(QuantizedTensor::assemble(p).is_ok());
        let mut q = parts(QuantFormat::Ternary, vec![0, 1]);
        q.codebook = Some(Codebook::new(vec![0.0; 4], 4, crate::LevelStorage::F32).unwrap());
        assert!(QuantizedTensor::assemble(q).is_err()); // codebook on a fixed-table format
    }

    #[test]
    fn input_scales_must_be_one_positive_finite_value_per_column() {
        let mut p = parts(QuantFormat::Ternary, vec![0, 1, 2, 1]);
        p.shape = vec![2, 2];
        p.group_len = 4;
        let with = |v: Vec<f32>| QuantizedParts {
            input_scales: Some(Scales::F32(v)),
            ..p.clone()
        };
        let q = QuantizedTensor::assemble(with(vec![2.0, 0.5])).unwrap();
        assert_eq!(q.storage_bytes(), 1 + 4 + 8);
        assert_eq!(
            QuantizedTensor::assemble(q.clone().into_parts()).unwrap(),
            q
        );
        for bad in [
            vec![1.0],
            vec![1.0, 1.0, 1.0],
            vec![1.0, 0.0],
            vec![-1.0, 1.0],
        ] {
            let err = QuantizedTensor::assemble(with(bad.clone())).unwrap_err();
            assert!(err.to_string().contains("input scale"), "{bad:?}: {err}");
        }
        for bad in [f32::NAN, f32::INFINITY] {
            assert!(QuantizedTensor::assemble(with(vec![1.0, bad])).is_err());
        }
        // A vector is no matrix: no input channels to scale.
        let mut flat = with(vec![1.0, 1.0, 1.0, 1.0]);
        flat.shape = vec![4];
        assert!(QuantizedTensor::assemble(flat).is_err());
    }
}
