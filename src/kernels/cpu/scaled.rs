//! Scaled formats on the CPU: per-group absmax, then every element divided by its group's
//! scale and encoded (a small float, or a fixed-scale integer), packed.
//!
//! Two passes over memory, both parallel over fixed element ranges: a task boundary never
//! depends on the thread count, the absmax reduction is exact (a maximum), and encoding is
//! element by element, so the bytes are the same on any number of threads. Tasks cover a
//! multiple of eight codes, so they write disjoint whole bytes of the packed stream.

use rayon::prelude::*;

use crate::kernels::HostSlice;
use crate::kernels::multiversion::multiversion;
use crate::kernels::scaled::{GroupScale, ScaledJob};
use crate::quant::QuantFormat;
use crate::quant::float_format::Encoder;
use crate::quant::grid::UniformParams;
use crate::quant::packing::{pack_into, packed_len};

/// Elements per parallel task: big enough to amortise scheduling, small enough for L2.
const TASK_ELEMS: usize = 32 * 1024;

multiversion! {
    /// max |x|, or NaN when some element is NaN or ±Inf; eight lanes so it vectorises.
    fn absmax(x: &[f32]) -> f32 {
        let mut mx = [0f32; 8];
        // x·0 is 0 for finite x and NaN for NaN or ±Inf.
        let mut poison = [0f32; 8];
        let chunks = x.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            for k in 0..8 {
                let a = c[k].abs();
                mx[k] = if a > mx[k] { a } else { mx[k] };
                poison[k] += c[k] * 0.0;
            }
        }
        for (k, &v) in rest.iter().enumerate() {
            let a = v.abs();
            mx[k] = if a > mx[k] { a } else { mx[k] };
            poison[k] += v * 0.0;
        }
        if poison.iter().all(|p| *p == 0.0) {
            mx.iter().fold(0f32, |a, &b| a.max(b))
        } else {
            f32::NAN
        }
    }
}

multiversion! {
    fn encode_float(x: &[f32], divisor: f32, enc: &Encoder, out: &mut [u8]) {
        let enc = *enc;
        for (o, &w) in out.iter_mut().zip(x) {
            *o = enc.encode(w / divisor);
        }
    }
}

multiversion! {
    fn encode_uniform(x: &[f32], p: &UniformParams, out: &mut [u8]) {
        let p = *p;
        for (o, &w) in out.iter_mut().zip(x) {
            *o = p.encode_nearest(w);
        }
    }
}

fn merge(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

/// max |x| of each group of `group_len` elements (NaN for a group holding NaN or ±Inf).
pub(crate) fn group_absmax(src: &HostSlice, group_len: usize) -> Vec<f32> {
    let g = group_len;
    let groups = src.len() / g;
    if g <= TASK_ELEMS {
        let per_task = TASK_ELEMS / g;
        let mut out = vec![0f32; groups];
        out.par_chunks_mut(per_task).enumerate().for_each_init(
            Vec::new,
            |scratch, (task, amax)| {
                let e0 = task * per_task * g;
                let x = src.f32_range(e0..e0 + amax.len() * g, scratch);
                for (a, xs) in amax.iter_mut().zip(x.chunks_exact(g)) {
                    *a = absmax(xs);
                }
            },
        );
        out
    } else {
        (0..groups)
            .map(|group| {
                let (start, end) = (group * g, (group + 1) * g);
                (start..end)
                    .into_par_iter()
                    .step_by(TASK_ELEMS)
                    .map_init(Vec::new, |scratch, s| {
                        absmax(src.f32_range(s..(s + TASK_ELEMS).min(end), scratch))
                    })
                    .reduce(|| 0.0, merge)
            })
            .collect()
    }
}

/// Encode every element of `src` with its group's scale; the packed codes.
pub(crate) fn encode(src: &HostSlice, job: &ScaledJob, scales: &[GroupScale]) -> Vec<u8> {
    let n = src.len();
    let g = job.group_len;
    let bits = job.format.code_bits();
    let mut codes = vec![0u8; packed_len(n, bits)];
    codes
        .par_chunks_mut(TASK_ELEMS * bits as usize / 8)
        .enumerate()
        .for_each_init(
            || (Vec::new(), Vec::new()),
            |(scratch, qbuf): &mut (Vec<f32>, Vec<u8>), (task, bytes)| {
                let e0 = task * TASK_ELEMS;
                let e1 = (e0 + TASK_ELEMS).min(n);
                let x = src.f32_range(e0..e1, scratch);
                qbuf.resize(e1 - e0, 0u8);
                let mut e = e0;
                while e < e1 {
                    let group = e / g;
                    let end = ((group + 1) * g).min(e1);
                    let (a, b) = (e - e0, end - e0);
                    encode_group(&x[a..b], job.format, &scales[group], &mut qbuf[a..b]);
                    e = end;
                }
                pack_into(qbuf, bits, bytes);
            },
        );
    codes
}

/// Codes of a run of elements of one group.
fn encode_group(x: &[f32], format: QuantFormat, s: &GroupScale, out: &mut [u8]) {
    match format {
        // +0 codes for an all-zero group (its −0 elements included).
        QuantFormat::Float(_) if s.zero => out.fill(0),
        QuantFormat::Float(f) => encode_float(x, s.divisor, &Encoder::new(f), out),
        QuantFormat::Uniform { bits, .. } => {
            let qmax = ((1i32 << (bits - 1)) - 1) as f32;
            let p = UniformParams {
                scale: s.scale,
                divisor: s.divisor,
                zero: 1 << (bits - 1),
                lo: -qmax,
                hi: qmax,
            };
            encode_uniform(x, &p, out)
        }
        other => unreachable!("scaled kernels never see {other:?}"),
    }
}
