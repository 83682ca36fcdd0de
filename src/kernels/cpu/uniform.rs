//! Uniform and sign quantization on the CPU.
//!
//! Work is split into tasks of whole groups (small groups: one pass, the group is reduced and
//! encoded while it sits in L1) or of fixed element ranges (groups too large for cache: the
//! group statistics are reduced first, in parallel, then the elements are encoded). Every task
//! boundary falls on a multiple of eight codes, so tasks write disjoint whole bytes of the
//! packed stream. The arithmetic lives in [`crate::quant::grid`].

use rayon::prelude::*;

use crate::error::Result;
use crate::kernels::multiversion::multiversion;
use crate::kernels::{Fault, HostSlice, UniformJob, UniformParts};
use crate::quant::grid::{UniformParams, store_scale_nearest, uniform_draw};
use crate::quant::packing::{pack_into, packed_len};
use crate::quant::{QuantFormat, Rounding};

/// Elements per parallel task: big enough to amortise scheduling, small enough for L2.
const TASK_ELEMS: usize = 32 * 1024;
/// Groups up to this length are reduced and encoded in a single pass over memory.
const FUSE_MAX: usize = 64 * 1024;

/// Summary of a run of values.
#[derive(Debug, Clone, Copy)]
struct Stats {
    min: f32,
    max: f32,
    finite: bool,
    /// Σ|x|, only for sign quantization.
    sum_abs: f64,
}

impl Stats {
    fn merge(self, o: Stats) -> Stats {
        Stats {
            min: self.min.min(o.min),
            max: self.max.max(o.max),
            finite: self.finite && o.finite,
            sum_abs: self.sum_abs + o.sum_abs,
        }
    }
}

/// How one group turns values into codes.
#[derive(Debug, Clone, Copy)]
enum Coder {
    Uniform(UniformParams),
    Sign { scale: f32 },
}

impl Coder {
    fn from_stats(s: &Stats, len: usize, job: &UniformJob, group: usize) -> Result<Self, Fault> {
        if !s.finite {
            return Err(Fault::NonFinite);
        }
        let overflow = Fault::ScaleOverflow { group };
        match job.format {
            QuantFormat::Uniform { bits, symmetric } => {
                UniformParams::from_range(s.min, s.max, bits, symmetric, job.scale_dtype)
                    .map(Coder::Uniform)
                    .ok_or(overflow)
            }
            // A `UniformJob` carries a uniform or a sign format only.
            _ => store_scale_nearest((s.sum_abs / len as f64) as f32, job.scale_dtype)
                .map(|scale| Coder::Sign { scale })
                .ok_or(overflow),
        }
    }

    fn scale_and_zero(&self) -> (f32, u8) {
        match *self {
            Coder::Uniform(p) => (p.scale, p.zero as u8),
            Coder::Sign { scale } => (scale, 0),
        }
    }

    /// Encode `x` (whose first element has flat index `base`) into `out`.
    fn encode(&self, x: &[f32], rounding: Rounding, base: usize, out: &mut [u8]) {
        match (self, rounding) {
            (Coder::Uniform(p), Rounding::Nearest) => encode_nearest(x, p, out),
            (Coder::Uniform(p), Rounding::Stochastic { seed }) => {
                encode_stochastic(x, p, seed, base as u64, out)
            }
            (Coder::Sign { .. }, _) => encode_sign(x, out),
        }
    }
}

multiversion! {
    /// Min, max and finiteness of `x`, in eight independent lanes so it vectorises.
    fn reduce(x: &[f32]) -> Stats {
        let mut mn = [f32::INFINITY; 8];
        let mut mx = [f32::NEG_INFINITY; 8];
        // x·0 is 0 for finite x and NaN for NaN or ±Inf, so a NaN here means "not finite".
        let mut poison = [0f32; 8];
        let chunks = x.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            for k in 0..8 {
                let v = c[k];
                mn[k] = if v < mn[k] { v } else { mn[k] };
                mx[k] = if v > mx[k] { v } else { mx[k] };
                poison[k] += v * 0.0;
            }
        }
        for (k, &v) in rest.iter().enumerate() {
            mn[k] = if v < mn[k] { v } else { mn[k] };
            mx[k] = if v > mx[k] { v } else { mx[k] };
            poison[k] += v * 0.0;
        }
        Stats {
            min: mn.iter().fold(f32::INFINITY, |a, &b| a.min(b)),
            max: mx.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)),
            finite: poison.iter().all(|p| *p == 0.0),
            sum_abs: 0.0,
        }
    }
}

/// Min, max and whether every value is finite: the lane-wise reduction of the RTN kernel,
/// shared with GPTQ's group ranges and the table quantizers' finiteness check.
pub(crate) fn min_max(x: &[f32]) -> (f32, f32, bool) {
    let s = reduce(x);
    (s.min, s.max, s.finite)
}

multiversion! {
    /// Σ|x| in f64, eight lanes, for the sign scale mean|w|.
    fn sum_abs(x: &[f32]) -> f64 {
        let mut acc = [0f64; 8];
        let chunks = x.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            for k in 0..8 {
                acc[k] += c[k].abs() as f64;
            }
        }
        for (k, &v) in rest.iter().enumerate() {
            acc[k] += v.abs() as f64;
        }
        acc.iter().sum()
    }
}

multiversion! {
    fn encode_nearest(x: &[f32], p: &UniformParams, out: &mut [u8]) {
        let p = *p;
        for (o, &w) in out.iter_mut().zip(x) {
            *o = p.encode_nearest(w);
        }
    }
}

multiversion! {
    fn encode_stochastic(x: &[f32], p: &UniformParams, seed: u64, base: u64, out: &mut [u8]) {
        let p = *p;
        for (i, (o, &w)) in out.iter_mut().zip(x).enumerate() {
            *o = p.encode_stochastic(w, uniform_draw(seed, base + i as u64));
        }
    }
}

multiversion! {
    fn encode_sign(x: &[f32], out: &mut [u8]) {
        for (o, &w) in out.iter_mut().zip(x) {
            *o = (w >= 0.0) as u8;
        }
    }
}

fn stats_of(x: &[f32], sign: bool) -> Stats {
    let mut s = reduce(x);
    if sign {
        s.sum_abs = sum_abs(x);
    }
    s
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Quantize every group of `src`.
pub(crate) fn quantize(src: &HostSlice, job: &UniformJob) -> Result<UniformParts, Fault> {
    let n = src.len();
    let bits = job.format.code_bits();
    let groups = n / job.group_len;
    let mut parts = UniformParts {
        codes: vec![0u8; packed_len(n, bits)],
        scales: vec![0f32; groups],
        zeros: vec![0u8; groups],
    };
    if job.group_len <= FUSE_MAX {
        quantize_fused(src, job, &mut parts)?;
    } else {
        quantize_two_pass(src, job, &mut parts)?;
    }
    Ok(parts)
}

/// Small groups: each task takes whole groups, reduces and encodes each while it is in cache.
fn quantize_fused(
    src: &HostSlice,
    job: &UniformJob,
    parts: &mut UniformParts,
) -> Result<(), Fault> {
    let g = job.group_len;
    let bits = job.format.code_bits() as usize;
    let sign = job.format == QuantFormat::Sign;
    // Groups per task: a multiple of `unit` so a task covers a multiple of 8 codes.
    let unit = 8 / gcd(g, 8);
    let per_task = (TASK_ELEMS / g).max(1).div_ceil(unit) * unit;
    let bytes_per_task = per_task * g * bits / 8;
    parts
        .codes
        .par_chunks_mut(bytes_per_task)
        .zip(parts.scales.par_chunks_mut(per_task))
        .zip(parts.zeros.par_chunks_mut(per_task))
        .enumerate()
        .try_for_each_init(
            || (Vec::new(), Vec::new()),
            |(scratch, qbuf), (task, ((bytes, scales), zeros))| {
                let g0 = task * per_task;
                let e0 = g0 * g;
                let ne = scales.len() * g;
                let x = src.f32_range(e0..e0 + ne, scratch);
                qbuf.resize(ne, 0u8);
                for (j, (s, z)) in scales.iter_mut().zip(zeros.iter_mut()).enumerate() {
                    let xs = &x[j * g..(j + 1) * g];
                    let coder = Coder::from_stats(&stats_of(xs, sign), g, job, g0 + j)?;
                    (*s, *z) = coder.scale_and_zero();
                    coder.encode(xs, job.rounding, e0 + j * g, &mut qbuf[j * g..(j + 1) * g]);
                }
                pack_into(&qbuf[..ne], bits as u8, bytes);
                Ok(())
            },
        )
}

/// Large groups: reduce each group in parallel chunks, then encode fixed element ranges.
fn quantize_two_pass(
    src: &HostSlice,
    job: &UniformJob,
    parts: &mut UniformParts,
) -> Result<(), Fault> {
    let g = job.group_len;
    let bits = job.format.code_bits() as usize;
    let sign = job.format == QuantFormat::Sign;
    let mut coders = Vec::with_capacity(parts.scales.len());
    for group in 0..parts.scales.len() {
        let start = group * g;
        // Chunk boundaries depend only on the data size, and partial results merge in order,
        // so the sums (and hence the bytes) do not depend on the number of threads.
        let partial: Vec<Stats> = (start..start + g)
            .into_par_iter()
            .step_by(TASK_ELEMS)
            .map_init(Vec::new, |scratch, s| {
                let e = (s + TASK_ELEMS).min(start + g);
                stats_of(src.f32_range(s..e, scratch), sign)
            })
            .collect();
        let stats = partial
            .into_iter()
            .reduce(Stats::merge)
            .expect("a group has at least one chunk");
        let coder = Coder::from_stats(&stats, g, job, group)?;
        (parts.scales[group], parts.zeros[group]) = coder.scale_and_zero();
        coders.push(coder);
    }
    parts
        .codes
        .par_chunks_mut(TASK_ELEMS * bits / 8)
        .enumerate()
        .for_each_init(
            || (Vec::new(), Vec::new()),
            |(scratch, qbuf), (task, bytes)| {
                let e0 = task * TASK_ELEMS;
                let e1 = (e0 + TASK_ELEMS).min(src.len());
                let x = src.f32_range(e0..e1, scratch);
                qbuf.resize(e1 - e0, 0u8);
                let mut e = e0;
                while e < e1 {
                    let group = e / g;
                    let end = ((group + 1) * g).min(e1);
                    let (a, b) = (e - e0, end - e0);
                    coders[group].encode(&x[a..b], job.rounding, e, &mut qbuf[a..b]);
                    e = end;
                }
                pack_into(qbuf, bits as u8, bytes);
            },
        );
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The fast kernels against their scalar twin: the formulas written out element by element,
    //! with the standard library's rounding instead of the magic-number trick.
    use super::*;
    use crate::quant::grid::store_scale_up;
    use crate::quant::{ScaleDType, packing::get_code};
    use proptest::prelude::*;

    struct Reference {
        codes: Vec<u8>,
        scales: Vec<f32>,
        zeros: Vec<u8>,
    }

    fn reference(x: &[f32], job: &UniformJob) -> Reference {
        let g = job.group_len;
        let mut r = Reference {
            codes: vec![],
            scales: vec![],
            zeros: vec![],
        };
        for (gi, xs) in x.chunks(g).enumerate() {
            let min = xs.iter().cloned().fold(f32::INFINITY, f32::min);
            let max = xs.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            match job.format {
                QuantFormat::Sign => {
                    let mean = xs.iter().map(|v| v.abs() as f64).sum::<f64>() / g as f64;
                    r.scales
                        .push(store_scale_nearest(mean as f32, job.scale_dtype).unwrap());
                    r.zeros.push(0);
                    r.codes.extend(xs.iter().map(|&w| (w >= 0.0) as u8));
                }
                QuantFormat::Uniform { bits, symmetric } => {
                    let (scale, zero, lo, hi) = if symmetric {
                        let qmax = (1 << (bits - 1)) - 1;
                        let absmax = min.abs().max(max.abs());
                        let mut s = absmax / qmax as f32;
                        if s == 0.0 && absmax > 0.0 {
                            s = f32::from_bits(1);
                        }
                        let s = store_scale_up(s, job.scale_dtype).unwrap();
                        (s, 1 << (bits - 1), -qmax, qmax)
                    } else {
                        let qmax = (1 << bits) - 1;
                        let (lo, hi) = (min.min(0.0), max.max(0.0));
                        let mut s = (hi - lo) / qmax as f32;
                        if s == 0.0 && hi > lo {
                            s = f32::from_bits(1);
                        }
                        let s = store_scale_up(s, job.scale_dtype).unwrap();
                        let z = if s > 0.0 {
                            (-lo / s).round_ties_even().clamp(0.0, qmax as f32) as i32
                        } else {
                            0
                        };
                        (s, z, -z, qmax - z)
                    };
                    r.scales.push(scale);
                    r.zeros.push(zero as u8);
                    for (k, &w) in xs.iter().enumerate() {
                        let t = if scale > 0.0 { w / scale } else { 0.0 };
                        let t = t.clamp(lo as f32, hi as f32);
                        let q = match job.rounding {
                            Rounding::Nearest => t.round_ties_even() as i32,
                            Rounding::Stochastic { seed } => {
                                let u = uniform_draw(seed, (gi * g + k) as u64);
                                ((t + u).floor() as i32).clamp(lo, hi)
                            }
                        };
                        r.codes.push((q + zero) as u8);
                    }
                }
                other => unreachable!("uniform kernels never see {other:?}"),
            }
        }
        r
    }

    fn gaussianish(n: usize, seed: u64) -> Vec<f32> {
        (0..n as u64)
            .map(|i| {
                let u = uniform_draw(seed, 3 * i)
                    + uniform_draw(seed, 3 * i + 1)
                    + uniform_draw(seed, 3 * i + 2);
                (u - 1.5) * 2.0
            })
            .collect()
    }

    fn check_against_reference(x: &[f32], job: &UniformJob) {
        let fast = quantize(&HostSlice::F32(x), job).expect("valid input");
        let slow = reference(x, job);
        let bits = job.format.code_bits();
        let codes: Vec<u8> = (0..x.len())
            .map(|i| get_code(&fast.codes, bits, i))
            .collect();
        assert_eq!(codes, slow.codes, "codes differ for {job:?}");
        if job.format == QuantFormat::Sign {
            for (a, b) in fast.scales.iter().zip(&slow.scales) {
                assert!((a - b).abs() <= 1e-3 * b.abs(), "{a} vs {b}");
            }
        } else {
            assert_eq!(fast.scales, slow.scales, "scales differ for {job:?}");
            assert_eq!(fast.zeros, slow.zeros, "zeros differ for {job:?}");
        }
        // Dequantize against value = scale·(q − zero) computed in f64 (exact, then one rounding).
        let qt = crate::kernels::quantize_uniform(
            &candle_core::Tensor::from_slice(x, (1, x.len()), &candle_core::Device::Cpu).unwrap(),
            job,
        );
        if let Ok(qt) = qt {
            let deq = crate::kernels::cpu::decode::dequantize::<f32>(
                &qt,
                crate::kernels::Domain::Effective,
            )
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
            for (i, &d) in deq.iter().enumerate() {
                let g = i / job.group_len;
                let s = fast.scales[g] as f64;
                let want = match job.format {
                    QuantFormat::Sign => (2.0 * codes[i] as f64 - 1.0) * s,
                    _ => (codes[i] as f64 - qt.zero_point(g).unwrap() as f64) * s,
                } as f32;
                assert_eq!(d.to_bits(), want.to_bits(), "element {i}: {d} vs {want}");
            }
        }
    }

    fn job(bits: u8, symmetric: bool, group_len: usize, rounding: Rounding) -> UniformJob {
        UniformJob {
            format: if bits == 1 {
                QuantFormat::Sign
            } else {
                QuantFormat::Uniform { bits, symmetric }
            },
            group_len,
            rounding,
            scale_dtype: ScaleDType::F16,
        }
    }

    proptest! {
        #[test]
        fn fused_path_matches_reference(
            bits in 1u8..=8,
            symmetric: bool,
            group_len in 1usize..300,
            groups in 1usize..40,
            stochastic: bool,
            seed: u64,
        ) {
            let symmetric = symmetric || bits == 1;
            let rounding = if stochastic { Rounding::Stochastic { seed } } else { Rounding::Nearest };
            let x = gaussianish(group_len * groups, seed);
            check_against_reference(&x, &job(bits, symmetric, group_len, rounding));
        }
    }

    #[test]
    fn two_pass_path_matches_reference() {
        // Groups longer than FUSE_MAX, element counts not a multiple of 8 or of TASK_ELEMS.
        let x = gaussianish(2 * (FUSE_MAX + 13), 5);
        for bits in [1, 3, 4, 8] {
            for symmetric in [true, false] {
                let symmetric = symmetric || bits == 1;
                for rounding in [Rounding::Nearest, Rounding::Stochastic { seed: 9 }] {
                    check_against_reference(&x, &job(bits, symmetric, x.len(), rounding));
                    check_against_reference(&x, &job(bits, symmetric, x.len() / 2, rounding));
                }
            }
        }
    }

    #[test]
    fn faults_name_their_cause() {
        let mut x = gaussianish(256, 1);
        x[100] = f32::NAN;
        let j = job(4, true, 64, Rounding::Nearest);
        assert_eq!(
            quantize(&HostSlice::F32(&x), &j).err(),
            Some(Fault::NonFinite)
        );
        let mut big = gaussianish(256, 1);
        big[200] = 1e9;
        assert_eq!(
            quantize(&HostSlice::F32(&big), &j).err(),
            Some(Fault::ScaleOverflow { group: 3 })
        );
    }
}
