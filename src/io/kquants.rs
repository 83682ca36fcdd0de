//! llama.cpp's K-quant block formats (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and Q8_K), decoded into
//! exact [`QuantizedTensor`]s.
//!
//! A K-quant tensor is a run of *super-blocks* of 256 weights. Each super-block holds one or
//! two f16 super-scales (`d`, and `dmin` for the affine types) and small integer scales for
//! its sub-blocks of 16 or 32 weights; a weight decodes as
//!
//! | type | sub-block | llama.cpp decodes | quantlens format | scale | offset |
//! |---|---|---|---|---|---|
//! | Q2_K | 16 | `d·sc·q − dmin·m`, q ∈ 0..4 | `Affine { bits: 2 }` | `d·sc` | `−(dmin·m)` |
//! | Q3_K | 16 | `d·(sc − 32)·(q − 4)`, q ∈ 0..8 | `Uniform { bits: 3, symmetric }` | `d·(sc − 32)` | — |
//! | Q4_K | 32 | `d·sc·q − dmin·m`, q ∈ 0..16 | `Affine { bits: 4 }` | `d·sc` | `−(dmin·m)` |
//! | Q5_K | 32 | `d·sc·q − dmin·m`, q ∈ 0..32 | `Affine { bits: 5 }` | `d·sc` | `−(dmin·m)` |
//! | Q6_K | 16 | `d·sc·(q − 32)`, q ∈ 0..64, sc an i8 | `Uniform { bits: 6, symmetric }` | `d·sc` | — |
//! | Q8_K | 256 | `d·q`, q an i8, d an f32 | `Uniform { bits: 8, symmetric }` | `d` | — |
//!
//! Scales and offsets are kept as the file keeps them, two-level
//! ([`Scales::Double`]): the integer `sc` (or `−32..31` for Q3_K, `m` for offsets) of each
//! sub-block as an i8 code, times the super-block's f32 `d` (`−dmin` for offsets), plus a zero
//! offset of −0.0, so a loaded tensor costs about what the file does
//! ([`storage_bytes`](QuantizedTensor::storage_bytes)); Q8_K's one scale per super-block is
//! its f32 `d`. The mapping is exact, bit for bit:
//!
//! * every product `d·sc` and `dmin·m` of an f16 and an integer of at most 8 bits is exact in
//!   f32 (11 + 8 significand bits ≤ 24, and f16's range, subnormals included, lies well
//!   inside f32's normal range), negation is exact, and adding −0.0 leaves every value (both
//!   zeros included) unchanged, so the scale `−0 + d·sc` and the offset `−0 + (−dmin)·m`
//!   are the very values llama.cpp computes (`d·sc`, `−(dmin·m)`) before touching a weight;
//! * the symmetric uniform decode `(q − zero) · scale` multiplies the same exact integer by
//!   the same f32 as llama.cpp's `(d·sc) · (q − zero)`: one rounding of one real number;
//! * the affine decode `q · scale + offset` rounds the product, then the sum, like llama.cpp's
//!   `d1·q − m1`, and `a + (−b)` is `a − b` in IEEE arithmetic (signed zeros included).
//!
//! Candle's CPU `QTensor::dequantize` evaluates these same expressions without contraction;
//! a C build of ggml that fuses `d1·q − m1` into one multiply-add can differ in the last bit.
//!
//! A super-block whose `d` or `dmin` is infinite or NaN is refused (our scales are finite);
//! Q8_K's per-16 sums (`bsums`, used only by llama.cpp's dot products) are not kept.

use candle_core::DType;
use half::f16;
use rayon::prelude::*;

use crate::quant::{
    DoubleQuantScales, PackedCodes, QuantFormat, QuantizedParts, QuantizedTensor, Scales,
};

/// Weights per super-block (llama.cpp's `QK_K`).
pub(crate) const SUPER_BLOCK: usize = 256;

/// Super-blocks decoded per parallel task.
const TASK_BLOCKS: usize = 64;

/// A K-quant block type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KQuant {
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
}

impl KQuant {
    /// Every K-quant type, in GGML id order.
    pub(crate) const ALL: [KQuant; 6] = [
        KQuant::Q2K,
        KQuant::Q3K,
        KQuant::Q4K,
        KQuant::Q5K,
        KQuant::Q6K,
        KQuant::Q8K,
    ];

    /// The type's id in a GGUF tensor info (`enum ggml_type`).
    pub(crate) fn id(self) -> u32 {
        match self {
            KQuant::Q2K => 10,
            KQuant::Q3K => 11,
            KQuant::Q4K => 12,
            KQuant::Q5K => 13,
            KQuant::Q6K => 14,
            KQuant::Q8K => 15,
        }
    }

    /// The type with id `id`, if it is a K-quant.
    pub(crate) fn from_id(id: u32) -> Option<Self> {
        KQuant::ALL.into_iter().find(|k| k.id() == id)
    }

    /// The name GGML gives the type.
    pub(crate) fn name(self) -> &'static str {
        match self {
            KQuant::Q2K => "Q2_K",
            KQuant::Q3K => "Q3_K",
            KQuant::Q4K => "Q4_K",
            KQuant::Q5K => "Q5_K",
            KQuant::Q6K => "Q6_K",
            KQuant::Q8K => "Q8_K",
        }
    }

    /// Bytes of one super-block.
    pub(crate) fn block_bytes(self) -> usize {
        match self {
            // scales[16], qs[64], d, dmin
            KQuant::Q2K => 16 + 64 + 4,
            // hmask[32], qs[64], scales[12], d
            KQuant::Q3K => 32 + 64 + 12 + 2,
            // d, dmin, scales[12], qs[128]
            KQuant::Q4K => 4 + 12 + 128,
            // d, dmin, scales[12], qh[32], qs[128]
            KQuant::Q5K => 4 + 12 + 32 + 128,
            // ql[128], qh[64], scales[16], d
            KQuant::Q6K => 128 + 64 + 16 + 2,
            // d (f32), qs[256], bsums[16] (i16)
            KQuant::Q8K => 4 + 256 + 32,
        }
    }

    /// Weights sharing one scale (and offset).
    fn sub_block(self) -> usize {
        match self {
            KQuant::Q2K | KQuant::Q3K | KQuant::Q6K => 16,
            KQuant::Q4K | KQuant::Q5K => 32,
            KQuant::Q8K => SUPER_BLOCK,
        }
    }

    /// The quantlens format the codes decode in.
    fn format(self) -> QuantFormat {
        let symmetric = |bits| QuantFormat::Uniform {
            bits,
            symmetric: true,
        };
        match self {
            KQuant::Q2K => QuantFormat::Affine { bits: 2 },
            KQuant::Q3K => symmetric(3),
            KQuant::Q4K => QuantFormat::Affine { bits: 4 },
            KQuant::Q5K => QuantFormat::Affine { bits: 5 },
            KQuant::Q6K => symmetric(6),
            KQuant::Q8K => symmetric(8),
        }
    }

    fn is_affine(self) -> bool {
        matches!(self.format(), QuantFormat::Affine { .. })
    }
}

/// One super-block's output: its 256 codes, the integer scale `sc` (and minimum `m`, for
/// affine types) of each sub-block, and the super-scales `d` (and `dmin`).
struct Out<'a> {
    codes: &'a mut [u8],
    sc: &'a mut [i8],
    m: &'a mut [i8],
    d: &'a mut f32,
    dmin: &'a mut f32,
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Scale and minimum `j` (0..8, 6 bits each) of Q4_K/Q5_K's 12 packed bytes: the first four
/// pairs sit in the low six bits of bytes `j` and `j + 4`; the last four take their low
/// nibbles from byte `j + 4` and their top two bits from the spare high bits of bytes `j − 4`
/// and `j`.
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 0x3F, s[j + 4] & 0x3F)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Scale `j` (0..16, 6 bits, biased by 32) of Q3_K's 12 packed bytes: low nibbles of bytes
/// 0..8 then their high nibbles give the low four bits; bytes 8..12 hold the top two bits, two
/// per scale, scale `j` in byte `8 + j % 4` at bit `2·(j / 4)`.
fn scale_q3k(j: usize, s: &[u8]) -> i8 {
    let low = if j < 8 { s[j] & 0x0F } else { s[j - 8] >> 4 };
    let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | (high << 4)) as i8 - 32
}

/// Decode one Q2_K super-block. Sub-block `g` (16 weights) lies in the `g / 8`th half of the
/// 64 code bytes, 16 bytes at `16·(g % 2)`, at bit position `2·((g % 8) / 2)`; its scale byte
/// holds `sc` (low nibble) and `m` (high nibble).
fn q2k(b: &[u8], o: Out<'_>) {
    let (sc, qs) = (&b[..16], &b[16..80]);
    (*o.d, *o.dmin) = (f16_at(b, 80), f16_at(b, 82));
    for (g, &sc) in sc.iter().enumerate() {
        let (half, shift, part) = (g / 8, 2 * ((g % 8) / 2), g % 2);
        let src = &qs[32 * half + 16 * part..][..16];
        for (c, q) in o.codes[16 * g..][..16].iter_mut().zip(src) {
            *c = (q >> shift) & 3;
        }
        o.sc[g] = (sc & 0x0F) as i8;
        o.m[g] = (sc >> 4) as i8;
    }
}

/// Decode one Q3_K super-block: two low bits laid out as Q2_K's, the third bit of weight `l`
/// of sub-block `g` in `hmask[16·(g % 2) + l]` at bit `4·(g / 8) + (g % 8) / 2`. llama.cpp
/// subtracts 4 when that bit is clear, so the 3-bit code `low | bit << 2` decodes as `q − 4`.
fn q3k(b: &[u8], o: Out<'_>) {
    let (hmask, qs, sc) = (&b[..32], &b[32..96], &b[96..108]);
    *o.d = f16_at(b, 108);
    for g in 0..16 {
        let (half, step, part) = (g / 8, (g % 8) / 2, g % 2);
        let low = &qs[32 * half + 16 * part..][..16];
        let high = &hmask[16 * part..][..16];
        let codes = o.codes[16 * g..][..16].iter_mut();
        for ((c, q), h) in codes.zip(low).zip(high) {
            *c = ((q >> (2 * step)) & 3) | (((h >> (4 * half + step)) & 1) << 2);
        }
        o.sc[g] = scale_q3k(g, sc);
    }
}

/// Decode one Q4_K (`high_bits` = `None`) or Q5_K super-block. Each 64 weights share 32
/// code bytes: sub-block `2j` takes their low nibbles, `2j + 1` their high ones; Q5_K's fifth
/// bit of weight `l` of sub-block `g` is bit `g` of `qh[l]`.
fn q45k(b: &[u8], qs: &[u8], high_bits: Option<&[u8]>, o: Out<'_>) {
    (*o.d, *o.dmin) = (f16_at(b, 0), f16_at(b, 2));
    let sc = &b[4..16];
    for g in 0..8 {
        let src = &qs[32 * (g / 2)..][..32];
        let shift = 4 * (g % 2);
        let codes = &mut o.codes[32 * g..][..32];
        for (c, q) in codes.iter_mut().zip(src) {
            *c = (q >> shift) & 0x0F;
        }
        if let Some(qh) = high_bits {
            for (c, h) in codes.iter_mut().zip(qh) {
                *c |= ((h >> g) & 1) << 4;
            }
        }
        let (s, m) = scale_min_k4(g, sc);
        (o.sc[g], o.m[g]) = (s as i8, m as i8);
    }
}

/// Decode one Q6_K super-block. In each half (128 weights: 64 `ql` bytes, 32 `qh` bytes)
/// quarter `k` takes the low (`k < 2`) or high nibbles of `ql[32·(k % 2) + l]` and bits
/// `2k, 2k + 1` of `qh[l]` as its top two bits, for `l` in 0..32; sub-block `g` is the
/// `g % 2`th half of quarter `(g % 8) / 2`.
fn q6k(b: &[u8], o: Out<'_>) {
    let (ql, qh, sc) = (&b[..128], &b[128..192], &b[192..208]);
    *o.d = f16_at(b, 208);
    for (g, &sc) in sc.iter().enumerate() {
        let (half, k, part) = (g / 8, (g % 8) / 2, g % 2);
        let low = &ql[64 * half + 32 * (k % 2) + 16 * part..][..16];
        let high = &qh[32 * half + 16 * part..][..16];
        let shift = 4 * (k / 2);
        let codes = o.codes[16 * g..][..16].iter_mut();
        for ((c, l), h) in codes.zip(low).zip(high) {
            *c = ((l >> shift) & 0x0F) | (((h >> (2 * k)) & 3) << 4);
        }
        o.sc[g] = sc as i8;
    }
}

/// Decode one Q8_K super-block: i8 `q` becomes the 8-bit code `q + 128`.
fn q8k(b: &[u8], o: Out<'_>) {
    *o.d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (c, q) in o.codes.iter_mut().zip(&b[4..260]) {
        *c = q.wrapping_add(128);
    }
}

fn decode_block(k: KQuant, b: &[u8], o: Out<'_>) {
    match k {
        KQuant::Q2K => q2k(b, o),
        KQuant::Q3K => q3k(b, o),
        KQuant::Q4K => q45k(b, &b[16..144], None, o),
        KQuant::Q5K => q45k(b, &b[48..176], Some(&b[16..48]), o),
        KQuant::Q6K => q6k(b, o),
        KQuant::Q8K => q8k(b, o),
    }
}

/// A quantized tensor of `shape` from the super-blocks of K-quant type `k` in `bytes`, which
/// must be exactly the tensor's data (`numel / 256` blocks).
pub(crate) fn decode(
    k: KQuant,
    shape: Vec<usize>,
    dtype: DType,
    bytes: &[u8],
) -> Result<QuantizedTensor, String> {
    let numel = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    let block_bytes = k.block_bytes();
    let blocks = bytes.len() / block_bytes;
    if numel != Some(blocks * SUPER_BLOCK) || !bytes.len().is_multiple_of(block_bytes) {
        return Err(format!(
            "{} bytes of {} data for shape {shape:?}: {} needs whole super-blocks of \
             {SUPER_BLOCK} weights, {block_bytes} bytes each",
            bytes.len(),
            k.name(),
            k.name()
        ));
    }
    let per_block = SUPER_BLOCK / k.sub_block();
    let mut codes = vec![0u8; blocks * SUPER_BLOCK];
    let mut sc = vec![0i8; blocks * per_block];
    // Symmetric types leave `m` and `dmin` zero and drop them below.
    let mut m = vec![0i8; blocks * per_block];
    let mut d = vec![0f32; blocks];
    let mut dmin = vec![0f32; blocks];
    bytes
        .par_chunks(TASK_BLOCKS * block_bytes)
        .zip(codes.par_chunks_mut(TASK_BLOCKS * SUPER_BLOCK))
        .zip(sc.par_chunks_mut(TASK_BLOCKS * per_block))
        .zip(m.par_chunks_mut(TASK_BLOCKS * per_block))
        .zip(d.par_chunks_mut(TASK_BLOCKS))
        .zip(dmin.par_chunks_mut(TASK_BLOCKS))
        .for_each(|(((((src, codes), sc), m), d), dmin)| {
            let outs = codes
                .chunks_exact_mut(SUPER_BLOCK)
                .zip(sc.chunks_exact_mut(per_block))
                .zip(m.chunks_exact_mut(per_block))
                .zip(d.iter_mut().zip(dmin));
            for (b, (((codes, sc), m), (d, dmin))) in src.chunks_exact(block_bytes).zip(outs) {
                let out = Out {
                    codes,
                    sc,
                    m,
                    d,
                    dmin,
                };
                decode_block(k, b, out);
            }
        });
    if let Some(i) = (0..blocks).find(|&i| !(d[i].is_finite() && dmin[i].is_finite())) {
        return Err(format!(
            "{} super-block {i} has a super-scale (d or dmin) that is infinite or NaN",
            k.name()
        ));
    }
    let format = k.format();
    // Every decoder masks its codes to the format's width.
    let codes = PackedCodes::pack_trusted(&codes, format.code_bits()).map_err(|e| e.to_string())?;
    // Scale `g` is `−0 + d · sc[g]` and offset `g` is `−0 + (−dmin) · m[g]`: the products are
    // exact (an f16 times an integer of at most 8 bits), negation is exact, and adding −0 is
    // the identity (it keeps +0 and −0 apart), so these are llama.cpp's `d·sc` and `−(dmin·m)`
    // to the bit, kept at the file's cost: one byte per sub-block and an f32 per super-block.
    let two_level = |codes: Vec<i8>, block_scales: Vec<f32>| {
        DoubleQuantScales::new(codes, block_scales, per_block, -0.0)
            .map(Scales::Double)
            .map_err(|e| e.to_string())
    };
    let scales = match k {
        // One scale per super-block: `d` itself.
        KQuant::Q8K => Scales::F32(d),
        _ => two_level(sc, d)?,
    };
    let parts = QuantizedParts::new(shape, dtype, format, k.sub_block(), codes, scales);
    let parts = if k.is_affine() {
        let neg_dmin = dmin.iter().map(|x| -x).collect();
        parts.with_offsets(two_level(m, neg_dmin)?)
    } else {
        parts
    };
    QuantizedTensor::assemble(parts).map_err(|e| e.to_string())
}
