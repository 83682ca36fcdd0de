//! Per-row cross-entropy of a `[rows, cols]` logits tensor, dispatched on its device.
//!
//! * CPU: the fused single-pass kernel of [`super::cpu::cross_entropy`], reading the tensor's
//!   storage in place.
//! * CUDA (feature `cuda`): the fused kernel of `super::cuda::cross_entropy` (one pass, same
//!   formulation as the CPU kernel).
//! * Any other device: a fallback from Candle ops (`log_softmax` + `gather`) run on that
//!   device in f64, over chunks of rows so that the f64 copy stays under 256 MiB. f64
//!   because `lse − x_t` has an absolute error of a few ulp of `lse`: in f32 a loss of 1e-8 at a dominant target rounds to 0; in f64 losses keep 1e-5
//!   relative accuracy down to about 1e-10·|lse| (the fused CPU kernel has no such floor).
//!
//! Both follow one contract: a −∞ target logit gives +∞, a NaN or +∞ logit in a counted row
//! is [`Error::NonFinite`], rows without a target are not read and get 0.

use candle_core::{D, DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::kernels::host::with_host_slice;
use crate::kernels::{HostSlice, cpu};

/// The fallback converts at most this many logits to f64 at once (256 MiB).
const FALLBACK_CHUNK_ELEMS: usize = 32 << 20;

/// Cross-entropy of every row of `logits` (`[targets.len(), cols]`, f32/f16/bf16, validated by
/// the caller) whose target is `Some` (`< cols`, validated); rank-1 f32 on the logits' device.
pub(crate) fn cross_entropy_rows(logits: &Tensor, targets: &[Option<u32>]) -> Result<Tensor> {
    match logits.device() {
        Device::Cpu => cpu_rows(logits, targets),
        device => {
            #[cfg(feature = "cuda")]
            let losses = if device.is_cuda() {
                super::cuda::cross_entropy_rows(logits, targets)?
            } else {
                candle_rows(logits, targets)?
            };
            #[cfg(not(feature = "cuda"))]
            let losses = candle_rows(logits, targets)?;
            // NaN comes from a NaN or +∞ logit or from a row that is −∞ throughout; the CPU
            // kernel settles each case exactly (an error naming the element, or +∞).
            if losses.to_vec1::<f32>()?.iter().any(|v| v.is_nan()) {
                let host = cpu_rows(&logits.to_device(&Device::Cpu)?, targets)?;
                return Ok(host.to_device(device)?);
            }
            Ok(losses)
        }
    }
}

fn cpu_rows(logits: &Tensor, targets: &[Option<u32>]) -> Result<Tensor> {
    let (_, cols) = logits.dims2()?;
    let out = with_host_slice(logits, "logits", |src| {
        cpu::cross_entropy::rows(&src, cols, targets)
            .map_err(|_| explain_non_finite(&src, cols, targets))
    })?;
    Ok(Tensor::from_vec(out, targets.len(), &Device::Cpu)?)
}

/// Name the first NaN or +∞ among the counted rows. Runs only on failure, sequentially, so
/// the error does not depend on thread timing.
fn explain_non_finite(src: &HostSlice, cols: usize, targets: &[Option<u32>]) -> Error {
    let mut scratch = Vec::new();
    let (mut count, mut first) = (0, None);
    for (r, _) in targets.iter().enumerate().filter(|(_, t)| t.is_some()) {
        let row = src.f32_range(r * cols..(r + 1) * cols, &mut scratch);
        for (j, v) in row.iter().enumerate() {
            if v.is_nan() || *v == f32::INFINITY {
                count += 1;
                first.get_or_insert(r * cols + j);
            }
        }
    }
    Error::NonFinite {
        what: "logits",
        count,
        first_index: first.unwrap_or(0),
    }
}

/// The fallback: `−log_softmax(x)[t]` from Candle ops in f64 on the logits' device.
pub(crate) fn candle_rows(logits: &Tensor, targets: &[Option<u32>]) -> Result<Tensor> {
    let (rows, cols) = logits.dims2()?;
    let device = logits.device();
    let index: Vec<u32> = targets.iter().map(|t| t.unwrap_or(0)).collect();
    let chunk = (FALLBACK_CHUNK_ELEMS / cols.max(1)).max(1);
    let mut parts = Vec::with_capacity(rows.div_ceil(chunk));
    for r0 in (0..rows).step_by(chunk) {
        let len = chunk.min(rows - r0);
        let x = logits.narrow(0, r0, len)?.to_dtype(DType::F64)?;
        let log_p = candle_nn::ops::log_softmax(&x, D::Minus1)?;
        let i = Tensor::from_slice(&index[r0..r0 + len], (len, 1), device)?;
        parts.push(log_p.gather(&i, 1)?.squeeze(1)?.neg()?);
    }
    let nll = Tensor::cat(&parts, 0)?.to_dtype(DType::F32)?;
    if targets.iter().all(Option::is_some) {
        return Ok(nll);
    }
    // A select, not a product with the mask: 0·∞ would be NaN.
    let keep: Vec<u8> = targets.iter().map(|t| t.is_some() as u8).collect();
    let keep = Tensor::from_vec(keep, rows, device)?;
    Ok(keep.where_cond(&nll, &nll.zeros_like()?)?)
}

#[cfg(test)]
mod tests {
    //! The Candle fallback runs on the CPU too, so it is checked here against the fused
    //! kernel; the two must agree to the fused kernel's accuracy.
    use super::*;
    use crate::rng::SplitMix64;

    #[test]
    fn fallback_agrees_with_the_fused_kernel() {
        let (rows, cols) = (37, 1000);
        let mut rng = SplitMix64::new(11);
        let mut x: Vec<f32> = (0..rows * cols)
            .map(|_| rng.normal() as f32 * 4.0)
            .collect();
        // Row 0: dominant target (loss ≈ 1.7e-12); row 1: masked entries; row 2: skipped.
        x[0] = 40.0;
        x[cols + 5] = f32::NEG_INFINITY;
        let mut t: Vec<Option<u32>> = (0..rows)
            .map(|_| Some((rng.next_u64() % cols as u64) as u32))
            .collect();
        t[0] = Some(0);
        t[2] = None;
        let logits = Tensor::from_vec(x, (rows, cols), &Device::Cpu).unwrap();
        let fused = cross_entropy_rows(&logits, &t)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let candle = candle_rows(&logits, &t).unwrap().to_vec1::<f32>().unwrap();
        assert!(fused[0] > 0.0 && fused[0] < 1e-8, "{}", fused[0]);
        assert_eq!(candle[2], 0.0);
        // The fallback computes lse − x_t in f64: an absolute error of a few ulp of |lse|
        // (≤ 40 here), which the fused kernel does not have.
        let slack = 8.0 * f64::EPSILON * 40.0;
        for (a, b) in fused.iter().zip(&candle) {
            let (a, b) = (*a as f64, *b as f64);
            assert!((a - b).abs() <= 2e-6 * b.abs() + slack, "{a:e} vs {b:e}");
        }
    }

    #[test]
    fn non_finite_logits_are_named() {
        let mut x = vec![0f32; 4 * 8];
        x[13] = f32::NAN;
        x[30] = f32::INFINITY;
        let logits = Tensor::from_vec(x, (4, 8), &Device::Cpu).unwrap();
        let t = [Some(0), Some(1), Some(2), Some(3)];
        match cross_entropy_rows(&logits, &t) {
            Err(Error::NonFinite {
                count: 2,
                first_index: 13,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        // Row 1 skipped: only the +∞ in row 3 is left.
        let t = [Some(0), None, Some(2), Some(3)];
        match cross_entropy_rows(&logits, &t) {
            Err(Error::NonFinite {
                count: 1,
                first_index: 30,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }
}
