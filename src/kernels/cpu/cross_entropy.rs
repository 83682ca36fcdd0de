//! Fused cross-entropy on the CPU: one pass over each row of logits, rows spread over rayon.
//!
//! For a row `x` with target `t` the loss is `lse(x) − x_t = log1p(S)`,
//! `S = Σ_{i≠t} exp(x_i − x_t)`. Written as `lse − x_t` in floating point it cancels: when the
//! target dominates (a well-fitted training example, the case membership inference cares
//! about) `lse` and `x_t` agree to many digits and f32 keeps none of the difference. So the
//! target is left out of the streaming log-sum-exp: the kernel keeps `m = max_{i≠t} x_i` and
//! `s = Σ_{i≠t} exp(x_i − m)` (see [`super::logsumexp`]), and in f64
//!
//! ```text
//! d = m − x_t,      S = s·e^d,      loss = ln(1 + S)   (ln s + d once d ≥ 700)
//! ```
//!
//! with a `log1p`, which never rounds `1 + tiny` away. The relative error of the loss is at
//! most that of `S` (d ln(1+S)/dS · S/ln(1+S) ≤ 1), i.e. the relative error of `s` (≤ 1e-6,
//! see [`super::logsumexp`]) plus a few f64 ulp: about 1e-6 in the worst case, whatever the
//! size of the loss; then one rounding to f32.
//!
//! Each row is reduced by one thread in a fixed order, so the result does not depend on the
//! number of threads (nor on SSE2 vs AVX2, see [`crate::kernels::multiversion`]).

use rayon::prelude::*;

use crate::kernels::cpu::logsumexp::{SHORT, StreamingLse};
use crate::kernels::{Fault, HostSlice};

/// Elements per parallel task: rows are grouped up to this size so that short rows
/// (classifiers) do not pay one task each.
const TASK_ELEMS: usize = 4 * 1024;

/// The cross-entropy of one row from `max` and `sum` (the streaming state of every entry but
/// the target) and the target logit `xt`. NaN marks a bad row (a NaN or +∞ logit).
fn finish(max: f32, sum: f64, xt: f32) -> f32 {
    if xt.is_nan() || xt == f32::INFINITY || max == f32::INFINITY || sum.is_nan() {
        return f32::NAN;
    }
    if xt == f32::NEG_INFINITY {
        // The model gives the target probability 0.
        return f32::INFINITY;
    }
    if sum == 0.0 {
        // Every other entry is −∞ (or there is none): the target has probability 1.
        return 0.0;
    }
    let d = max as f64 - xt as f64;
    if d < 700.0 {
        ln_1p(sum * d.exp()) as f32
    } else {
        // S ≥ e^700: ln(1 + S) = ln S = ln s + d to f64 precision, and e^d would overflow.
        // Beyond f32::MAX (only for logits near ±f32::MAX) the conversion saturates to +∞.
        (sum.ln() + d) as f32
    }
}

/// `ln(1 + s)` for `s ≥ 0`, within a few ulp, with one `ln` (Kahan's trick: `u = 1 + s` is
/// rounded, but `s / (u − 1)` — with `u − 1` exact — corrects for exactly that rounding).
/// The library's `ln_1p` is several times slower, which shows for short rows.
fn ln_1p(s: f64) -> f64 {
    let u = 1.0 + s;
    if u == 1.0 {
        s
    } else {
        u.ln() * (s / (u - 1.0))
    }
}

/// The cross-entropy of `row` with target index `t` (in range, checked by the caller).
pub(crate) fn row_loss(row: &[f32], t: usize) -> f32 {
    let rest = if row.len() <= SHORT {
        // Classifier rows: one block, the target masked by index, no second call.
        StreamingLse::of_short_excluding(row, t)
    } else {
        let mut rest = StreamingLse::new();
        rest.push(&row[..t]);
        rest.push(&row[t + 1..]);
        rest
    };
    finish(rest.max(), rest.sum(), row[t])
}

/// Per-row cross-entropy of `src` viewed as `[targets.len(), cols]`; rows whose target is
/// `None` are not read and get 0. Targets must be `< cols` (checked by the caller).
pub(crate) fn rows(
    src: &HostSlice,
    cols: usize,
    targets: &[Option<u32>],
) -> Result<Vec<f32>, Fault> {
    debug_assert_eq!(src.len(), cols * targets.len());
    let mut out = vec![0f32; targets.len()];
    let rows_per_task = (TASK_ELEMS / cols).max(1);
    out.par_chunks_mut(rows_per_task)
        .zip(targets.par_chunks(rows_per_task))
        .enumerate()
        .for_each_init(Vec::new, |scratch, (task, (dst, tgt))| {
            let r0 = task * rows_per_task;
            for (j, (o, t)) in dst.iter_mut().zip(tgt).enumerate() {
                if let Some(t) = *t {
                    let start = (r0 + j) * cols;
                    *o = row_loss(src.f32_range(start..start + cols, scratch), t as usize);
                }
            }
        });
    // NaN only ever marks a bad row (see `finish`); the caller names the bad element.
    if out.iter().any(|v| v.is_nan()) {
        return Err(Fault::NonFinite);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    //! The fused kernel against its scalar twin: two passes over the row in f64, then
    //! `lse − x_t`, also in f64 (accurate to ~1e-16·|lse|, so the test keeps its losses away
    //! from the cancellation regime; `tests/probe.rs` covers that with a log1p reference).
    use super::*;
    use crate::rng::SplitMix64;
    use half::{bf16, f16};
    use proptest::prelude::*;

    fn twin(row: &[f32], t: usize) -> f64 {
        let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        lse - row[t] as f64
    }

    fn logits(rows: usize, cols: usize, scale: f32, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        (0..rows * cols)
            .map(|_| rng.normal() as f32 * scale)
            .collect()
    }

    fn close(got: f32, want: f64, tol: f64) -> bool {
        (got as f64 - want).abs() <= tol * want.abs() + 1e-12
    }

    proptest! {
        #[test]
        fn fused_matches_twin(
            rows in 1usize..40,
            cols in 1usize..300,
            scale in prop_oneof![Just(0.5f32), Just(5.0), Just(50.0)],
            seed: u64,
        ) {
            let x = logits(rows, cols, scale, seed);
            let mut rng = SplitMix64::new(seed ^ 1);
            let t: Vec<Option<u32>> = (0..rows)
                .map(|_| Some((rng.next_u64() % cols as u64) as u32))
                .collect();
            let got = rows_of(&HostSlice::F32(&x), cols, &t);
            for (r, (g, t)) in got.iter().zip(&t).enumerate() {
                let want = twin(&x[r * cols..(r + 1) * cols], t.unwrap() as usize);
                prop_assert!(close(*g, want, 1e-5), "row {}: {} vs {}", r, g, want);
            }
        }
    }

    fn rows_of(src: &HostSlice, cols: usize, t: &[Option<u32>]) -> Vec<f32> {
        rows(src, cols, t).expect("finite logits")
    }

    #[test]
    fn half_precision_inputs_convert_exactly() {
        let x = logits(5, 97, 3.0, 7);
        let h: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
        let b: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
        let t: Vec<Option<u32>> = (0..5).map(|i| Some(i * 13)).collect();
        let hx: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
        let bx: Vec<f32> = b.iter().map(|v| v.to_f32()).collect();
        assert_eq!(
            rows_of(&HostSlice::F16(&h), 97, &t),
            rows_of(&HostSlice::F32(&hx), 97, &t)
        );
        assert_eq!(
            rows_of(&HostSlice::BF16(&b), 97, &t),
            rows_of(&HostSlice::F32(&bx), 97, &t)
        );
    }

    #[test]
    fn skipped_rows_are_not_read() {
        let mut x = logits(3, 10, 1.0, 3);
        x[15] = f32::NAN; // row 1
        let got = rows_of(&HostSlice::F32(&x), 10, &[Some(0), None, Some(9)]);
        assert_eq!(got[1], 0.0);
        assert!(rows(&HostSlice::F32(&x), 10, &[Some(0), Some(1), Some(9)]).is_err());
    }

    #[test]
    fn one_ln_log1p_is_accurate() {
        let mut worst = 0f64;
        for i in 0..200_000 {
            // s from 1e-30 to 1e30, log-spaced, plus the small values log1p exists for.
            let s = 10f64.powf(-30.0 + 60.0 * i as f64 / 200_000.0);
            let want = s.ln_1p();
            worst = worst.max((ln_1p(s) - want).abs() / want);
        }
        assert!(worst <= 4.0 * f64::EPSILON, "{worst:e}");
        assert_eq!(ln_1p(0.0), 0.0);
    }

    /// `row_loss` of `row` as given (short path) and padded with −∞ to a long row.
    fn both_paths(row: &[f32], t: usize) -> [f32; 2] {
        let mut long = row.to_vec();
        long.resize(SHORT * 5 + 3, f32::NEG_INFINITY);
        [row_loss(row, t), row_loss(&long, t)]
    }

    #[test]
    fn special_rows() {
        let (ninf, inf) = (f32::NEG_INFINITY, f32::INFINITY);
        assert_eq!(both_paths(&[ninf, 2.0, ninf], 1), [0.0; 2]);
        assert_eq!(both_paths(&[1.0, ninf, 3.0], 1), [inf; 2]);
        assert_eq!(both_paths(&[ninf, ninf], 0), [inf; 2]);
        assert_eq!(both_paths(&[5.0], 0), [0.0; 2]);
        for (row, t) in [
            (&[1.0, inf][..], 0),
            (&[inf, 1.0], 0),
            (&[1.0, f32::NAN, 0.0], 2),
            (&[ninf, f32::NAN, ninf], 0),
        ] {
            assert!(both_paths(row, t).iter().all(|v| v.is_nan()), "{row:?}");
        }
        // Ties: ln 2; and a dominant target far below f32's resolution of lse.
        for v in both_paths(&[3.0, 3.0], 0) {
            assert!(close(v, std::f64::consts::LN_2, 1e-7));
        }
        let want = (2.0 * (-30f64).exp()).ln_1p();
        for tiny in both_paths(&[30.0, 0.0, 0.0], 0) {
            assert!(close(tiny, want, 1e-6), "{tiny:e} vs {want:e}");
        }
        // d ≥ 700: the ln s + d branch.
        for v in both_paths(&[1e3, -1e3, 0.0], 1) {
            assert!(close(v, 2e3, 1e-7), "{v}");
        }
        // Either side of the switch at d = 700.
        for (row, want) in [([699.0f32, 0.0], 699f64), ([701.0, 0.0], 701.0)] {
            for v in both_paths(&row, 1) {
                assert!(close(v, want + (-want).exp().ln_1p(), 1e-7), "{v}");
            }
        }
    }
}
