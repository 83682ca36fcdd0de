//! GGML tensor types and the three block formats quantlens maps onto bit for bit in both
//! directions: Q4_0, Q4_1 and Q8_0 (blocks of 32 weights, one f16 scale each, Q4_1 with an f16
//! offset). The K-quants, which quantlens reads but does not write, are in
//! [`kquants`](super::kquants).

use candle_core::DType;
use half::f16;

use crate::io::kquants::{self, KQuant};
use crate::quant::{PackedCodes, QuantFormat, QuantizedParts, QuantizedTensor, Scales};

/// Weights per Q4_0 / Q4_1 / Q8_0 block.
pub(crate) const BLOCK: usize = 32;

/// The GGML tensor types quantlens reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GgmlType {
    F32,
    F16,
    BF16,
    I8,
    Q4_0,
    Q4_1,
    Q8_0,
    /// A K-quant (read only).
    K(KQuant),
}

impl GgmlType {
    /// The type's id in a GGUF tensor info (`enum ggml_type`).
    pub(crate) fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q8_0 => 8,
            GgmlType::I8 => 24,
            GgmlType::BF16 => 30,
            GgmlType::K(k) => k.id(),
        }
    }

    /// The type of id `id`, or why quantlens cannot read it.
    pub(crate) fn from_id(id: u32) -> Result<Self, String> {
        Ok(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            24 => GgmlType::I8,
            30 => GgmlType::BF16,
            _ => {
                if let Some(k) = KQuant::from_id(id) {
                    return Ok(GgmlType::K(k));
                }
                return Err(match other_type_name(id) {
                    Some(name) => format!(
                        "GGML type {name} ({id}) is not supported; quantlens reads F32, F16, \
                         BF16, Q4_0, Q4_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and Q8_K (and I8 \
                         parts of its own packed tensors)"
                    ),
                    None => format!("unknown GGML type id {id}"),
                });
            }
        })
    }

    /// `(elements, bytes)` of one block.
    pub(crate) fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::I8 => (1, 1),
            GgmlType::Q4_0 => (BLOCK, 18),
            GgmlType::Q4_1 => (BLOCK, 20),
            GgmlType::Q8_0 => (BLOCK, 34),
            GgmlType::K(k) => (kquants::SUPER_BLOCK, k.block_bytes()),
        }
    }

    /// Bytes `numel` elements occupy; `None` when they are not whole blocks or overflow.
    pub(crate) fn byte_size(self, numel: usize) -> Option<usize> {
        let (elems, bytes) = self.block();
        numel
            .is_multiple_of(elems)
            .then(|| (numel / elems).checked_mul(bytes))
            .flatten()
    }

    /// The name GGML gives the type.
    pub(crate) fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::BF16 => "BF16",
            GgmlType::I8 => "I8",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::K(k) => k.name(),
        }
    }
}

/// Names of the GGML types quantlens does not read, for error messages.
fn other_type_name(id: u32) -> Option<&'static str> {
    const NAMES: [&str; 40] = [
        "F32",
        "F16",
        "Q4_0",
        "Q4_1",
        "Q4_2",
        "Q4_3",
        "Q5_0",
        "Q5_1",
        "Q8_0",
        "Q8_1",
        "Q2_K",
        "Q3_K",
        "Q4_K",
        "Q5_K",
        "Q6_K",
        "Q8_K",
        "IQ2_XXS",
        "IQ2_XS",
        "IQ3_XXS",
        "IQ1_S",
        "IQ4_NL",
        "IQ3_S",
        "IQ2_S",
        "IQ4_XS",
        "I8",
        "I16",
        "I32",
        "I64",
        "F64",
        "IQ1_M",
        "BF16",
        "Q4_0_4_4",
        "Q4_0_4_8",
        "Q4_0_8_8",
        "TQ1_0",
        "TQ2_0",
        "IQ4_NL_4_4",
        "IQ4_NL_4_8",
        "IQ4_NL_8_8",
        "MXFP4",
    ];
    NAMES.get(id as usize).copied()
}

/// The GGML block type `q` is bit-identical to, if any: symmetric 4- or 8-bit uniform codes
/// (Q4_0, Q8_0) or 4-bit affine codes (Q4_1), in groups of 32 with f16 scales (and f16
/// offsets), rows a whole number of blocks long, and no input scales (GGML has no place for
/// them).
pub(crate) fn native_type(q: &QuantizedTensor) -> Option<GgmlType> {
    let rows_ok = q.shape().last().is_some_and(|d| d.is_multiple_of(BLOCK));
    if q.group_len() != BLOCK
        || !rows_ok
        || !matches!(q.scales(), Scales::F16(_))
        || q.input_scales().is_some()
    {
        return None;
    }
    match (q.format(), q.offsets()) {
        (
            QuantFormat::Uniform {
                bits: 4,
                symmetric: true,
            },
            None,
        ) => Some(GgmlType::Q4_0),
        (
            QuantFormat::Uniform {
                bits: 8,
                symmetric: true,
            },
            None,
        ) => Some(GgmlType::Q8_0),
        (QuantFormat::Affine { bits: 4 }, Some(Scales::F16(_))) => Some(GgmlType::Q4_1),
        _ => None,
    }
}

/// The blocks of `q`, which [`native_type`] maps to `ty`.
///
/// Q4_0/Q4_1 put element `j` of a block in the low nibble of byte `j` and element `j + 16` in
/// its high nibble; Q8_0 stores `code − 128` as i8. Both decode to our values exactly:
/// `(code − 8) · d`, `q · d + m`, `(code − 128) · d`.
pub(crate) fn encode_blocks(q: &QuantizedTensor, ty: GgmlType) -> Vec<u8> {
    let codes = q.codes().unpack();
    let f16_bits = |s: Option<&Scales>, g: usize| match s {
        Some(Scales::F16(v)) => v[g].to_le_bytes(),
        // `native_type` admits f16 scales and offsets only.
        _ => [0, 0],
    };
    let mut out = Vec::with_capacity(ty.byte_size(codes.len()).unwrap_or(0));
    for (g, block) in codes.chunks_exact(BLOCK).enumerate() {
        out.extend(f16_bits(Some(q.scales()), g));
        match ty {
            GgmlType::Q8_0 => out.extend(block.iter().map(|c| c.wrapping_sub(128))),
            _ => {
                if ty == GgmlType::Q4_1 {
                    out.extend(f16_bits(q.offsets(), g));
                }
                let (lo, hi) = block.split_at(BLOCK / 2);
                out.extend(lo.iter().zip(hi).map(|(l, h)| l | (h << 4)));
            }
        }
    }
    out
}

/// A quantized tensor from GGML blocks of type `ty` (Q4_0, Q4_1, Q8_0 or a K-quant) holding
/// `shape`.
pub(crate) fn decode_blocks(
    ty: GgmlType,
    shape: Vec<usize>,
    dtype: DType,
    bytes: &[u8],
) -> Result<QuantizedTensor, String> {
    if let GgmlType::K(k) = ty {
        return kquants::decode(k, shape, dtype, bytes);
    }
    let (_, block_bytes) = ty.block();
    let mut codes = Vec::with_capacity(bytes.len() / block_bytes * BLOCK);
    let mut scales = Vec::new();
    let mut offsets = Vec::new();
    for b in bytes.chunks_exact(block_bytes) {
        scales.push(f16::from_le_bytes([b[0], b[1]]));
        match ty {
            GgmlType::Q8_0 => codes.extend(b[2..].iter().map(|q| q.wrapping_add(128))),
            _ => {
                let qs = if ty == GgmlType::Q4_1 {
                    offsets.push(f16::from_le_bytes([b[2], b[3]]));
                    &b[4..]
                } else {
                    &b[2..]
                };
                codes.extend(qs.iter().map(|q| q & 0x0F));
                codes.extend(qs.iter().map(|q| q >> 4));
            }
        }
    }
    let (format, bits) = match ty {
        GgmlType::Q8_0 => (
            QuantFormat::Uniform {
                bits: 8,
                symmetric: true,
            },
            8,
        ),
        GgmlType::Q4_1 => (QuantFormat::Affine { bits: 4 }, 4),
        _ => (
            QuantFormat::Uniform {
                bits: 4,
                symmetric: true,
            },
            4,
        ),
    };
    QuantizedTensor::assemble(QuantizedParts {
        shape,
        dtype,
        format,
        group_len: BLOCK,
        codes: PackedCodes::pack(&codes, bits).map_err(|e| e.to_string())?,
        scales: Scales::F16(scales),
        zeros: None,
        codebook: None,
        offsets: (ty == GgmlType::Q4_1).then_some(Scales::F16(offsets)),
        input_scales: None,
    })
    .map_err(|e| e.to_string())
}
