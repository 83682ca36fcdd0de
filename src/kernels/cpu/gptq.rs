//! The GPTQ sweep: quantize a weight matrix column by column, pushing each column's rounding
//! error onto the columns not yet quantized through the upper Cholesky factor `U` of `H⁻¹`.
//!
//! Rows are independent (every row sees the same `U`), so each block of columns is processed
//! row tile by row tile in parallel: inside the block, column by column (quantize, error
//! `e = (w − q)/U_ii`, `w[i+1..block_end] −= e·U[i, i+1..block_end]`); after the block, the
//! accumulated errors reach every later column in one product `W[:, end..] −= E·U[block, end..]`
//! ([`gemm_sub`](super::linalg::gemm_sub)). Inside a block, eight rows go together, staged
//! column-major, so rounding one column is eight independent chains and updating a later
//! column one vector operation. Every element is computed by one task in a fixed order, so
//! the result does not depend on the number of threads; each weight receives its updates in
//! increasing column order, exactly as in a column-by-column sweep without blocks.

use std::ops::Range;

use rayon::prelude::*;

use crate::kernels::cpu::linalg::{MatRef, PackedB, gemm_sub};
use crate::kernels::multiversion::multiversion;
use crate::quant::ScaleDType;
use crate::quant::grid::{UniformParams, raw_uniform_scale};

/// Rows per parallel task.
const TILE_ROWS: usize = 32;

/// Where a row's grid parameters come from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum GridMode {
    /// Fixed before the sweep (per tensor, per channel, static groups): the table is filled.
    Fixed,
    /// Recomputed at every group start from the row's current (error-updated) weights of the
    /// group, as GPTQ does without act-order. Needs columns in their original order.
    Dynamic {
        /// Bits per code.
        bits: u8,
        /// Symmetric grid.
        symmetric: bool,
        /// Storage dtype of the scales (scales are rounded up to it).
        scale_dtype: ScaleDType,
    },
}

/// One GPTQ sweep.
pub(crate) struct Sweep<'a> {
    /// `rows × cols` weights, columns in processing order; updated in place.
    pub w: &'a mut [f32],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns (input features).
    pub cols: usize,
    /// Upper Cholesky factor of the damped `H⁻¹`, `cols × cols`, processing order.
    pub u: &'a [f32],
    /// Original column of each processed column (act-order); `None` = identity.
    pub perm: Option<&'a [usize]>,
    /// Columns per group within a row, in the original order (`cols` for one group per row).
    pub group_cols: usize,
    /// Grid parameters, `rows × (cols / group_cols)`, indexed by row and original group.
    pub params: &'a mut [UniformParams],
    /// How the parameters are obtained.
    pub mode: GridMode,
    /// Column blocks in processing order; with [`GridMode::Dynamic`] every group lies inside
    /// one block or starts at a block start.
    pub blocks: &'a [Range<usize>],
}

/// What went wrong in a sweep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum SweepFault {
    /// A group's scale does not fit the scale dtype (`group` = row · groups per row + group).
    ScaleOverflow { group: usize, scale: f32 },
    /// An updated weight became NaN or infinite (flat index in original order).
    NonFinite { index: usize },
}

impl SweepFault {
    fn position(&self, group_cols: usize) -> usize {
        match *self {
            SweepFault::ScaleOverflow { group, .. } => group * group_cols,
            SweepFault::NonFinite { index } => index,
        }
    }
}

/// Result of a sweep.
pub(crate) struct SweepOutput {
    /// One code per weight, row-major in the original column order.
    pub codes: Vec<u8>,
    /// `Σ e²` over all columns: `tr(ΔW·H·ΔWᵀ)` for the damped Hessian (in f64).
    pub loss: f64,
}

/// Run the sweep.
pub(crate) fn sweep(s: Sweep<'_>) -> Result<SweepOutput, SweepFault> {
    let Sweep {
        w,
        rows,
        cols,
        u,
        perm,
        group_cols,
        params,
        mode,
        blocks,
    } = s;
    let gpr = cols / group_cols;
    let bmax = blocks.iter().map(|b| b.len()).max().unwrap_or(0);
    let mut codes = vec![0u8; rows * cols];
    let mut errs = vec![0f32; rows * bmax];
    let mut losses = vec![0f64; rows];
    for blk in blocks {
        let (i1, i2) = (blk.start, blk.end);
        let rest = cols - i2;
        let ublock = (rest > 0)
            .then(|| PackedB::from_rows(MatRef::new(&u[i1 * cols + i2..], cols), i2 - i1, rest));
        let fault = w
            .par_chunks_mut(TILE_ROWS * cols)
            .zip(codes.par_chunks_mut(TILE_ROWS * cols))
            .zip(errs.par_chunks_mut(TILE_ROWS * bmax))
            .zip(params.par_chunks_mut(TILE_ROWS * gpr))
            .zip(losses.par_chunks_mut(TILE_ROWS))
            .enumerate()
            .map(|(task, ((((wt, ct), et), pt), lt))| {
                let r0 = task * TILE_ROWS;
                let ctx = BlockCtx {
                    u,
                    cols,
                    perm,
                    group_cols,
                    mode,
                    blk: blk.clone(),
                    errs_stride: bmax,
                };
                let mut first: Option<SweepFault> = None;
                for (k, ((((wl, cl), el), pl), ll)) in wt
                    .chunks_mut(LANES * cols)
                    .zip(ct.chunks_mut(LANES * cols))
                    .zip(et.chunks_mut(LANES * bmax))
                    .zip(pt.chunks_mut(LANES * gpr))
                    .zip(lt.chunks_mut(LANES))
                    .enumerate()
                {
                    let lanes = Lanes {
                        w: wl,
                        codes: cl,
                        errs: el,
                        params: pl,
                        losses: ll,
                        first_row: r0 + k * LANES,
                    };
                    if let Err(f) = block_lanes(lanes, &ctx) {
                        first.get_or_insert(f);
                    }
                }
                if let Some(b) = &ublock {
                    let rows_here = lt.len();
                    gemm_sub(
                        &mut wt[i2..],
                        cols,
                        MatRef::new(et, bmax),
                        rows_here,
                        b,
                        rest,
                    );
                }
                first
            })
            .reduce(
                || None,
                |a, b| match (a, b) {
                    (Some(x), Some(y)) => {
                        Some(if y.position(group_cols) < x.position(group_cols) {
                            y
                        } else {
                            x
                        })
                    }
                    (x, y) => x.or(y),
                },
            );
        if let Some(f) = fault {
            return Err(f);
        }
    }
    let loss = losses.iter().sum();
    if !f64::is_finite(loss) {
        // Name the first row whose errors overflowed.
        let r = losses.iter().position(|l| !l.is_finite()).unwrap_or(0);
        return Err(SweepFault::NonFinite { index: r * cols });
    }
    Ok(SweepOutput { codes, loss })
}

/// Rows processed together, one per vector lane.
const LANES: usize = 8;

/// Up to [`LANES`] consecutive rows of a tile.
struct Lanes<'a> {
    /// `lanes × cols` weights.
    w: &'a mut [f32],
    /// `lanes × cols` codes (original column order).
    codes: &'a mut [u8],
    /// `lanes × errs_stride` errors of the current block.
    errs: &'a mut [f32],
    /// `lanes × groups per row` grid parameters.
    params: &'a mut [UniformParams],
    /// `Σ e²` per row.
    losses: &'a mut [f64],
    /// Index of the first row in the matrix.
    first_row: usize,
}

/// What every row of a block shares.
struct BlockCtx<'a> {
    u: &'a [f32],
    cols: usize,
    perm: Option<&'a [usize]>,
    group_cols: usize,
    mode: GridMode,
    blk: Range<usize>,
    errs_stride: usize,
}

/// Parameters of an unused lane: every value encodes to 0 and decodes to 0.
const IDLE: UniformParams = UniformParams {
    scale: 0.0,
    divisor: 1.0,
    zero: 0,
    lo: 0.0,
    hi: 0.0,
};

multiversion! {
    /// Quantize columns `ctx.blk` of up to eight rows at once, updating the rest of the block.
    ///
    /// The block is staged column-major (`[column][lane]`), so the rounding of one column is
    /// eight independent chains and the update of a later column one vector operation; each
    /// row sees exactly the arithmetic of a row on its own (`w −= e·u`, no fused multiply-add).
    fn block_lanes(l: Lanes<'_>, ctx: &BlockCtx<'_>) -> Result<(), SweepFault> {
        let BlockCtx {
            u,
            cols,
            perm,
            group_cols,
            mode,
            ref blk,
            errs_stride,
        } = *ctx;
        let n = l.losses.len();
        let gpr = cols / group_cols;
        let (i1, i2) = (blk.start, blk.end);
        let mut wt = vec![[0f32; LANES]; i2 - i1];
        for (r, row) in l.w.chunks(cols).enumerate() {
            for (v, &x) in wt.iter_mut().zip(&row[i1..i2]) {
                v[r] = x;
            }
        }
        let mut loss = [0f64; LANES];
        for c in blk.clone() {
            let j = c - i1;
            let oc = perm.map_or(c, |p| p[c]);
            if let GridMode::Dynamic {
                bits,
                symmetric,
                scale_dtype,
            } = mode
                && c.is_multiple_of(group_cols)
            {
                let g = c / group_cols;
                for r in 0..n {
                    // A group inside the block is read from the staged (updated) copy; a longer
                    // one starts at the block start, where the matrix itself is current.
                    let (min, max, bad) = if c + group_cols <= i2 {
                        min_max_lane(&wt[j..j + group_cols], r)
                    } else {
                        let vals = &l.w[r * cols + c..r * cols + c + group_cols];
                        let (min, max, finite) = min_max(vals);
                        (min, max, (!finite).then(|| vals.iter().position(|v| !v.is_finite())).flatten())
                    };
                    let row = l.first_row + r;
                    if let Some(k) = bad {
                        return Err(SweepFault::NonFinite {
                            index: row * cols + c + k,
                        });
                    }
                    l.params[r * gpr + g] =
                        UniformParams::from_range(min, max, bits, symmetric, scale_dtype).ok_or(
                            SweepFault::ScaleOverflow {
                                group: row * gpr + g,
                                scale: raw_uniform_scale(min, max, bits, symmetric),
                            },
                        )?;
                }
            }
            let mut p = [IDLE; LANES];
            for (r, pr) in p.iter_mut().enumerate().take(n) {
                *pr = l.params[r * gpr + oc / group_cols];
            }
            let ucc = u[c * cols + c];
            let x = wt[j];
            let mut q = [0u8; LANES];
            let mut e = [0f32; LANES];
            for r in 0..LANES {
                q[r] = p[r].encode_nearest(x[r]);
                e[r] = (x[r] - UniformParams::decode(p[r].scale, p[r].zero, q[r])) / ucc;
            }
            for r in 0..n {
                l.codes[r * cols + oc] = q[r];
                l.errs[r * errs_stride + j] = e[r];
                loss[r] += e[r] as f64 * e[r] as f64;
            }
            let urow = &u[c * cols + c + 1..c * cols + i2];
            for (wj, &uu) in wt[j + 1..].iter_mut().zip(urow) {
                for r in 0..LANES {
                    wj[r] -= e[r] * uu;
                }
            }
        }
        for (acc, v) in l.losses.iter_mut().zip(loss) {
            *acc += v;
        }
        Ok(())
    }
}

/// Min, max and the offset of the first non-finite value of lane `r` of staged columns.
fn min_max_lane(cols: &[[f32; LANES]], r: usize) -> (f32, f32, Option<usize>) {
    let mut mn = f32::INFINITY;
    let mut mx = f32::NEG_INFINITY;
    for (k, v) in cols.iter().enumerate() {
        let v = v[r];
        if !v.is_finite() {
            return (mn, mx, Some(k));
        }
        mn = if v < mn { v } else { mn };
        mx = if v > mx { v } else { mx };
    }
    (mn, mx, None)
}

pub(crate) use crate::kernels::cpu::uniform::min_max;

#[cfg(test)]
mod tests {
    //! The blocked, lane-parallel sweep against its scalar twin: one row at a time, every error
    //! pushed to every later column at once. Each weight receives the same `w −= e·u` updates
    //! in the same order either way, so codes and parameters agree to the bit.
    use super::*;
    use crate::rng::SplitMix64;

    struct Twin {
        codes: Vec<u8>,
        params: Vec<UniformParams>,
        loss: f64,
    }

    fn twin(s: &Sweep<'_>) -> Twin {
        let (rows, cols, gc) = (s.rows, s.cols, s.group_cols);
        let gpr = cols / gc;
        let mut params = s.params.to_vec();
        let mut codes = vec![0u8; rows * cols];
        let mut loss = 0f64;
        for r in 0..rows {
            let mut w = s.w[r * cols..(r + 1) * cols].to_vec();
            for c in 0..cols {
                let oc = s.perm.map_or(c, |p| p[c]);
                if let GridMode::Dynamic {
                    bits,
                    symmetric,
                    scale_dtype,
                } = s.mode
                    && c % gc == 0
                {
                    let g = &w[c..c + gc];
                    let min = g.iter().copied().fold(f32::INFINITY, f32::min);
                    let max = g.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    params[r * gpr + c / gc] =
                        UniformParams::from_range(min, max, bits, symmetric, scale_dtype).unwrap();
                }
                let p = params[r * gpr + oc / gc];
                let q = p.encode_nearest(w[c]);
                codes[r * cols + oc] = q;
                let e = (w[c] - UniformParams::decode(p.scale, p.zero, q)) / s.u[c * cols + c];
                loss += e as f64 * e as f64;
                for (x, &uu) in w[c + 1..]
                    .iter_mut()
                    .zip(&s.u[c * cols + c + 1..(c + 1) * cols])
                {
                    *x -= e * uu;
                }
            }
        }
        Twin {
            codes,
            params,
            loss,
        }
    }

    fn blocks(cols: usize, b: usize) -> Vec<Range<usize>> {
        (0..cols).step_by(b).map(|s| s..(s + b).min(cols)).collect()
    }

    #[test]
    fn sweep_matches_its_scalar_twin_to_the_bit() {
        let mut rng = SplitMix64::new(9);
        // (rows, cols, group, block, act-order, dynamic): ragged row counts (lanes and tiles
        // partly filled), blocks that do and do not divide the width.
        let cases = [
            (1, 16, 16, 5, false, false),
            (13, 48, 8, 16, false, true),
            (37, 96, 32, 32, false, true),
            // Groups longer than blocks, starting at block starts.
            (11, 64, 32, 16, false, true),
            (70, 64, 16, 24, true, false),
            (9, 130, 130, 128, true, false),
        ];
        for &(rows, cols, gc, b, act, dynamic) in &cases {
            let w0: Vec<f32> = (0..rows * cols).map(|_| rng.normal() as f32).collect();
            let mut u = vec![0f32; cols * cols];
            for i in 0..cols {
                u[i * cols + i] = 0.5 + rng.next_f32();
                for j in i + 1..cols {
                    u[i * cols + j] = 0.3 * rng.normal() as f32 / (cols as f32).sqrt();
                }
            }
            let mut perm: Vec<usize> = (0..cols).collect();
            if act {
                rng.shuffle(&mut perm);
            }
            let (bits, symmetric, scale_dtype) = (4, false, ScaleDType::F16);
            let gpr = cols / gc;
            let mut params = vec![
                UniformParams::from_range(0.0, 0.0, bits, symmetric, scale_dtype)
                    .unwrap();
                rows * gpr
            ];
            if !dynamic {
                for (k, p) in params.iter_mut().enumerate() {
                    let g = &w0[k * gc..(k + 1) * gc];
                    let (min, max, _) = min_max(g);
                    *p = UniformParams::from_range(min, max, bits, symmetric, scale_dtype).unwrap();
                }
            }
            let mode = if dynamic {
                GridMode::Dynamic {
                    bits,
                    symmetric,
                    scale_dtype,
                }
            } else {
                GridMode::Fixed
            };
            let mut w = w0.clone();
            let mut p_fast = params.clone();
            let blk = blocks(cols, b);
            let want = twin(&Sweep {
                w: &mut w0.clone(),
                rows,
                cols,
                u: &u,
                perm: act.then_some(&perm[..]),
                group_cols: gc,
                params: &mut params,
                mode,
                blocks: &blk,
            });
            // Dynamic groups must not straddle blocks: the callers align them.
            let got = sweep(Sweep {
                w: &mut w,
                rows,
                cols,
                u: &u,
                perm: act.then_some(&perm[..]),
                group_cols: gc,
                params: &mut p_fast,
                mode,
                blocks: &blk,
            })
            .unwrap();
            let ctx = format!("{rows}x{cols} g{gc} b{b} act {act} dynamic {dynamic}");
            assert_eq!(got.codes, want.codes, "{ctx}");
            assert_eq!(p_fast, want.params, "{ctx}");
            assert!((got.loss - want.loss).abs() <= 1e-12 * want.loss, "{ctx}");
        }
    }
}
