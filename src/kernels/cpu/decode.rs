//! Dequantization on the CPU, for every [`QuantFormat`].
//!
//! Uniform grids decode arithmetically (`scale · (q − zero)`); every other format but affine
//! decodes through a small lookup table of unit levels (sign, ternary, codebook, float) times
//! the group's scale. Both are one f32 multiply per element, so the result is the same one
//! rounding whichever path a format takes. Affine grids decode as `q · scale + offset`: a
//! multiply and an add, rounded separately (GGML's Q4_1 expression, bit for bit).
//!
//! A tensor with input scales (AWQ, SmoothQuant) decodes to the effective weight by dividing
//! each decoded f32 by its column's scale (one IEEE division, before any conversion to f16 or
//! bf16), or to the smoothed weight by skipping that division.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use rayon::prelude::*;

use crate::error::Result;
use crate::kernels::Domain;
use crate::kernels::multiversion::multiversion;
use crate::quant::affine;
use crate::quant::grid::UniformParams;
use crate::quant::packing::{packed_len, unpack_from};
use crate::quant::{QuantFormat, QuantizedTensor};

/// Elements per parallel task: big enough to amortise scheduling, small enough for L2.
const TASK_ELEMS: usize = 32 * 1024;

multiversion! {
    fn decode_uniform(q: &[u8], scale: f32, zero: i32, out: &mut [f32]) {
        for (o, &c) in out.iter_mut().zip(q) {
            *o = UniformParams::decode(scale, zero, c);
        }
    }
}

multiversion! {
    fn decode_affine(q: &[u8], scale: f32, offset: f32, out: &mut [f32]) {
        for (o, &c) in out.iter_mut().zip(q) {
            *o = affine::decode(scale, offset, c);
        }
    }
}

multiversion! {
    fn divide(out: &mut [f32], by: &[f32]) {
        for (o, &s) in out.iter_mut().zip(by) {
            *o /= s;
        }
    }
}

multiversion! {
    fn decode_table(q: &[u8], scale: f32, table: &[f32], out: &mut [f32]) {
        for (o, &c) in out.iter_mut().zip(q) {
            *o = scale * table[c as usize];
        }
    }
}

/// Output element types of dequantization.
pub(crate) trait OutElem: candle_core::WithDType + Copy + Send + Sync {
    /// Write f32 values into `dst` (converted if needed); `Some(dst)` for f32 itself, to decode
    /// straight into the output.
    fn as_f32_mut(dst: &mut [Self]) -> Option<&mut [f32]>;
    fn convert(dst: &mut [Self], src: &[f32]);
}

impl OutElem for f32 {
    fn as_f32_mut(dst: &mut [Self]) -> Option<&mut [f32]> {
        Some(dst)
    }
    fn convert(dst: &mut [Self], src: &[f32]) {
        dst.copy_from_slice(src)
    }
}
impl OutElem for f16 {
    fn as_f32_mut(_: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
    fn convert(dst: &mut [Self], src: &[f32]) {
        dst.convert_from_f32_slice(src)
    }
}
impl OutElem for bf16 {
    fn as_f32_mut(_: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
    fn convert(dst: &mut [Self], src: &[f32]) {
        dst.convert_from_f32_slice(src)
    }
}

/// Decode every element of `q` into a new host tensor of element type `T`.
pub(crate) fn dequantize<T: OutElem>(
    q: &QuantizedTensor,
    domain: Domain,
) -> Result<candle_core::Tensor> {
    let mut out = crate::kernels::cpu::zeroed_vec::<T>(q.numel());
    decode_into(q, &mut out, domain);
    Ok(candle_core::Tensor::from_vec(
        out,
        q.shape(),
        &candle_core::Device::Cpu,
    )?)
}

/// How codes of each group become values.
enum Decoder {
    /// `scale · (q − zero[g])`.
    Uniform { zeros: Vec<i32> },
    /// `q · scale + offset[g]`.
    Affine { offsets: Vec<f32> },
    /// `scale · tables[t][q]`, group `g` using table `g / groups_per_table`.
    Table {
        tables: Vec<f32>,
        table_len: usize,
        groups_per_table: usize,
    },
}

impl Decoder {
    fn of(q: &QuantizedTensor) -> Decoder {
        let unit_table = |t: Vec<f32>| Decoder::Table {
            table_len: t.len(),
            tables: t,
            groups_per_table: q.num_groups(),
        };
        match q.format() {
            QuantFormat::Uniform { .. } => Decoder::Uniform {
                zeros: match q.zeros() {
                    Some(z) => z.unpack().into_iter().map(i32::from).collect(),
                    None => vec![q.zero_point(0).unwrap_or(0); q.num_groups()],
                },
            },
            QuantFormat::Affine { .. } => Decoder::Affine {
                offsets: q
                    .offsets()
                    .expect("assemble guarantees offsets for affine formats")
                    .to_f32_vec(),
            },
            QuantFormat::Sign => unit_table(vec![-1.0, 1.0]),
            // Code 3 is rejected by `QuantizedTensor::assemble`.
            QuantFormat::Ternary => unit_table(vec![-1.0, 0.0, 1.0, 0.0]),
            QuantFormat::Float(f) => unit_table(f.value_table()),
            QuantFormat::Codebook { .. } => {
                let cb = q
                    .codebook()
                    .expect("assemble guarantees a codebook for codebook formats");
                Decoder::Table {
                    tables: cb.levels().to_vec(),
                    table_len: cb.table_len(),
                    groups_per_table: q.num_groups() / cb.tables(),
                }
            }
        }
    }
}

/// Decode every element of `q` into `out` (`q.numel()` long, checked by callers), as the
/// effective or the smoothed weight.
pub(crate) fn decode_into<T: OutElem>(q: &QuantizedTensor, out: &mut [T], domain: Domain) {
    let g = q.group_len();
    let bits = q.format().code_bits();
    let scales = q.scales().to_f32_vec();
    let input_scales = match (domain, q.input_scales()) {
        (Domain::Effective, Some(s)) => Some(s.to_f32_vec()),
        _ => None,
    };
    let decoder = Decoder::of(q);
    let bytes = q.codes().bytes();
    out.par_chunks_mut(TASK_ELEMS).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(qbuf, fbuf): &mut (Vec<u8>, Vec<f32>), (task, dst)| {
            let e0 = task * TASK_ELEMS;
            let ne = dst.len();
            qbuf.resize(ne, 0u8);
            let b0 = e0 * bits as usize / 8;
            unpack_from(&bytes[b0..b0 + packed_len(ne, bits)], bits, qbuf);
            let direct = T::as_f32_mut(dst);
            let is_direct = direct.is_some();
            let f: &mut [f32] = match direct {
                Some(d) => d,
                None => {
                    fbuf.resize(ne, 0.0);
                    fbuf
                }
            };
            let mut e = e0;
            while e < e0 + ne {
                let group = e / g;
                let end = ((group + 1) * g).min(e0 + ne);
                let (a, b) = (e - e0, end - e0);
                match &decoder {
                    Decoder::Uniform { zeros } => {
                        decode_uniform(&qbuf[a..b], scales[group], zeros[group], &mut f[a..b])
                    }
                    Decoder::Affine { offsets } => {
                        decode_affine(&qbuf[a..b], scales[group], offsets[group], &mut f[a..b])
                    }
                    Decoder::Table {
                        tables,
                        table_len,
                        groups_per_table,
                    } => {
                        let t = group / groups_per_table;
                        let table = &tables[t * table_len..(t + 1) * table_len];
                        decode_table(&qbuf[a..b], scales[group], table, &mut f[a..b])
                    }
                }
                e = end;
            }
            if let Some(s) = &input_scales {
                // Row pieces of the task: element e is in column e % cols.
                let cols = s.len();
                let mut e = e0;
                while e < e0 + ne {
                    let col = e % cols;
                    let end = (e + cols - col).min(e0 + ne);
                    divide(&mut f[e - e0..end - e0], &s[col..col + (end - e)]);
                    e = end;
                }
            }
            if !is_direct {
                T::convert(dst, fbuf);
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{PackedCodes, QuantizedParts, Scales};
    use candle_core::DType;

    /// Affine decode over several parallel tasks equals GGML's scalar `q · d + m`, with
    /// offsets that are not multiples of the scale (so `−m/d` is no integer zero point).
    #[test]
    fn affine_decodes_like_ggml_q4_1() {
        let (groups, g) = (2 * TASK_ELEMS / 32 + 3, 32);
        let n = groups * g;
        let codes: Vec<u8> = (0..n).map(|i| (i * 7 % 16) as u8).collect();
        let d: Vec<f16> = (0..groups)
            .map(|i| f16::from_f32(0.013 * (1 + i % 5) as f32))
            .collect();
        let m: Vec<f16> = (0..groups)
            .map(|i| f16::from_f32(-0.1 - 0.0371 * (i % 7) as f32))
            .collect();
        let q = QuantizedTensor::assemble(QuantizedParts {
            shape: vec![groups, g],
            dtype: DType::F32,
            format: QuantFormat::Affine { bits: 4 },
            group_len: g,
            codes: PackedCodes::pack(&codes, 4).unwrap(),
            scales: Scales::F16(d.clone()),
            zeros: None,
            codebook: None,
            offsets: Some(Scales::F16(m.clone())),
            input_scales: None,
        })
        .unwrap();
        let mut out = vec![0f32; n];
        decode_into(&q, &mut out, Domain::Effective);
        for (i, &o) in out.iter().enumerate() {
            let want = (codes[i] as f32) * d[i / g].to_f32() + m[i / g].to_f32();
            assert_eq!(o.to_bits(), want.to_bits(), "element {i}");
        }
        let mut half = vec![f16::ZERO; n];
        decode_into(&q, &mut half, Domain::Effective);
        assert!(half.iter().zip(&out).all(|(h, &o)| *h == f16::from_f32(o)));
    }

    /// Input scales divide each decoded f32 by its column's scale, across task boundaries
    /// that fall inside rows (rows of 1000 elements, tasks of 32 Ki), before any conversion.
    #[test]
    fn input_scales_divide_each_column_once() {
        let (rows, cols) = (70, 1000);
        let n = rows * cols;
        let codes: Vec<u8> = (0..n).map(|i| (i * 37 % 256) as u8).collect();
        let s: Vec<f16> = (0..cols)
            .map(|j| f16::from_f32(0.3 + 0.011 * (j % 97) as f32))
            .collect();
        let base = QuantizedParts {
            shape: vec![rows, cols],
            dtype: DType::F32,
            format: QuantFormat::Uniform {
                bits: 8,
                symmetric: true,
            },
            group_len: 100,
            codes: PackedCodes::pack(&codes, 8).unwrap(),
            scales: Scales::F32((0..n / 100).map(|g| 0.01 + g as f32 * 1e-4).collect()),
            zeros: None,
            codebook: None,
            offsets: None,
            input_scales: None,
        };
        let plain = QuantizedTensor::assemble(base.clone()).unwrap();
        let scaled = QuantizedTensor::assemble(QuantizedParts {
            input_scales: Some(Scales::F16(s.clone())),
            ..base
        })
        .unwrap();
        let mut raw = vec![0f32; n];
        decode_into(&plain, &mut raw, Domain::Effective);
        let mut smoothed = vec![0f32; n];
        decode_into(&scaled, &mut smoothed, Domain::Smoothed);
        assert_eq!(raw, smoothed);
        let mut eff = vec![0f32; n];
        decode_into(&scaled, &mut eff, Domain::Effective);
        let mut eff_half = vec![f16::ZERO; n];
        decode_into(&scaled, &mut eff_half, Domain::Effective);
        for i in 0..n {
            let want = raw[i] / s[i % cols].to_f32();
            assert_eq!(eff[i].to_bits(), want.to_bits(), "element {i}");
            assert_eq!(eff_half[i], f16::from_f32(want), "element {i}");
        }
    }
}
