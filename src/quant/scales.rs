//! Per-group scales in their storage form.

use half::{bf16, f16};

use crate::error::{Error, Result};
use crate::quant::spec::ScaleDType;

/// Per-group scales in their storage dtype.
#[derive(Debug, Clone, PartialEq)]
pub enum Scales {
    /// f32 scales.
    F32(Vec<f32>),
    /// IEEE half scales.
    F16(Vec<f16>),
    /// bfloat16 scales.
    BF16(Vec<bf16>),
    /// OCP E8M0 scales (microscaling): byte `e` stands for `2^(e − 127)`; 255 (NaN) is not
    /// allowed.
    E8M0(Vec<u8>),
    /// Scales that are themselves quantized (QLoRA's double quantization).
    Double(DoubleQuantScales),
}

/// Scales quantized to int8: `scale_i = offset + block_scale[i / block_len] · code_i`.
///
/// QLoRA's double quantization: the positive per-block absmax constants of NF4 are centred on
/// their mean (`offset`) and quantized symmetrically to 8 bits in blocks of 256 with an f32
/// scale per block, cutting their cost from 32 (or 16) bits per 64 weights to about
/// `8/64 + 32/(64·256)` bits per weight.
///
/// The decoded scale is computed in f32 as written: `offset + block_scale · code`, one
/// multiply-add, rounded twice (product then sum), the same on every backend.
#[derive(Debug, Clone, PartialEq)]
pub struct DoubleQuantScales {
    codes: Vec<i8>,
    block_scales: Vec<f32>,
    block_len: usize,
    offset: f32,
}

impl DoubleQuantScales {
    /// Assemble from parts; errors unless there is one finite block scale per `block_len`
    /// codes (last block may be partial) and the offset is finite.
    pub fn new(
        codes: Vec<i8>,
        block_scales: Vec<f32>,
        block_len: usize,
        offset: f32,
    ) -> Result<Self> {
        if block_len == 0 || block_scales.len() != codes.len().div_ceil(block_len) {
            return Err(Error::InconsistentParts(format!(
                "{} block scales for {} codes in blocks of {block_len}",
                block_scales.len(),
                codes.len()
            )));
        }
        if !offset.is_finite() || block_scales.iter().any(|s| !s.is_finite()) {
            return Err(Error::InconsistentParts(
                "double-quantized scales need a finite offset and block scales".into(),
            ));
        }
        Ok(DoubleQuantScales {
            codes,
            block_scales,
            block_len,
            offset,
        })
    }
    /// The int8 codes, one per group.
    pub fn codes(&self) -> &[i8] {
        &self.codes
    }
    /// The f32 scale of each block of codes.
    pub fn block_scales(&self) -> &[f32] {
        &self.block_scales
    }
    /// Codes per block.
    pub fn block_len(&self) -> usize {
        self.block_len
    }
    /// The mean subtracted before quantizing.
    pub fn offset(&self) -> f32 {
        self.offset
    }
    fn get(&self, i: usize) -> f32 {
        self.offset + self.block_scales[i / self.block_len] * self.codes[i] as f32
    }
    fn storage_bytes(&self) -> usize {
        self.codes.len() + 4 * self.block_scales.len() + 4
    }
}

impl Scales {
    /// Store f32 values that are already representable in `dtype` (no rounding happens here;
    /// E8M0 values must be powers of two in `[2^−127, 2^127]`).
    pub(crate) fn from_f32(values: Vec<f32>, dtype: ScaleDType) -> Self {
        match dtype {
            ScaleDType::F32 => Scales::F32(values),
            ScaleDType::F16 => Scales::F16(values.into_iter().map(f16::from_f32).collect()),
            ScaleDType::BF16 => Scales::BF16(values.into_iter().map(bf16::from_f32).collect()),
            ScaleDType::E8M0 => Scales::E8M0(values.into_iter().map(e8m0_from_f32).collect()),
        }
    }
    /// Number of scales.
    pub fn len(&self) -> usize {
        match self {
            Scales::F32(v) => v.len(),
            Scales::F16(v) => v.len(),
            Scales::BF16(v) => v.len(),
            Scales::E8M0(v) => v.len(),
            Scales::Double(d) => d.codes.len(),
        }
    }
    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Scale `i` as f32 (exact for the plain dtypes: each widens to f32 without rounding).
    pub fn get(&self, i: usize) -> f32 {
        match self {
            Scales::F32(v) => v[i],
            Scales::F16(v) => v[i].to_f32(),
            Scales::BF16(v) => v[i].to_f32(),
            Scales::E8M0(v) => e8m0_to_f32(v[i]),
            Scales::Double(d) => d.get(i),
        }
    }
    /// All scales as f32.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }
    /// Storage dtype of plain scales; `None` for double-quantized ones.
    pub fn dtype(&self) -> Option<ScaleDType> {
        match self {
            Scales::F32(_) => Some(ScaleDType::F32),
            Scales::F16(_) => Some(ScaleDType::F16),
            Scales::BF16(_) => Some(ScaleDType::BF16),
            Scales::E8M0(_) => Some(ScaleDType::E8M0),
            Scales::Double(_) => None,
        }
    }
    /// Bytes of storage.
    pub fn storage_bytes(&self) -> usize {
        match (self, self.dtype()) {
            (Scales::Double(d), _) => d.storage_bytes(),
            (_, Some(dt)) => self.len() * dt.size_in_bytes(),
            (_, None) => unreachable!("only double-quantized scales have no dtype"),
        }
    }
}

/// `2^(e − 127)` (E8M0 byte 255 is NaN, rejected when tensors are assembled).
pub(crate) fn e8m0_to_f32(e: u8) -> f32 {
    if e == 255 {
        f32::NAN
    } else {
        2f32.powi(e as i32 - 127)
    }
}

/// The E8M0 byte of a power of two in `[2^−127, 2^127]` (exact by construction of callers).
pub(crate) fn e8m0_from_f32(v: f32) -> u8 {
    // log2 of a power of two is exact; subnormal 2^−127 is handled by the same path.
    let e = v.log2().round() as i32 + 127;
    e.clamp(0, 254) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e8m0_round_trips_every_finite_byte() {
        for e in 0..=254u8 {
            let v = e8m0_to_f32(e);
            assert_eq!(v, (2f64).powi(e as i32 - 127) as f32);
            assert_eq!(e8m0_from_f32(v), e);
        }
        assert!(e8m0_to_f32(255).is_nan());
    }

    #[test]
    fn double_quant_decodes_and_counts_bytes() {
        let d = DoubleQuantScales::new(vec![1, -2, 3], vec![0.5, 0.25], 2, 1.0).unwrap();
        let s = Scales::Double(d);
        assert_eq!(s.to_f32_vec(), vec![1.5, 0.0, 1.75]);
        assert_eq!(s.storage_bytes(), 3 + 8 + 4);
        assert_eq!(s.dtype(), None);
        assert!(DoubleQuantScales::new(vec![1; 3], vec![0.5], 2, 0.0).is_err());
        assert!(DoubleQuantScales::new(vec![1; 2], vec![f32::NAN], 2, 0.0).is_err());
    }
}
