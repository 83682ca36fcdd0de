//! The GPTQ sweep: quantize a weight matrix column by column, pushing each column's rounding
//! error onto the columns not yet quantized through the upper Cholesky factor `U` of `H⁻¹`.
//!
//! Rows are independent (every row sees the same `U`), so each block of columns is processed
//! row tile by row tile in parallel: inside the block, column by column (quantize, error
//! `e = (w − q)/U_ii`, `w[i+1..block_end] −= e·U[i, i+1..block_end]`); after the block, the
//! accumulated errors reach every later column in one product `W[:, end..] −= E·U[block, end..]`
//! ([`gemm_sub`](super::linalg::gemm_sub)). Every element is computed by one task in a fixed
//! order, so the result does not depend on the number of threads.

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
                let mut first: Option<SweepFault> = None;
                for (r, loss) in lt.iter_mut().enumerate() {
                    let row = Row {
                        w: &mut wt[r * cols..(r + 1) * cols],
                        codes: &mut ct[r * cols..(r + 1) * cols],
                        errs: &mut et[r * bmax..(r + 1) * bmax],
                        params: &mut pt[r * gpr..(r + 1) * gpr],
                        index: r0 + r,
                    };
                    let ctx = BlockCtx {
                        u,
                        cols,
                        perm,
                        group_cols,
                        mode,
                        blk: blk.clone(),
                    };
                    match block_row(row, &ctx) {
                        Ok(l) => *loss += l,
                        Err(f) => {
                            first.get_or_insert(f);
                        }
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

/// One row's slices inside a row tile.
struct Row<'a> {
    w: &'a mut [f32],
    codes: &'a mut [u8],
    errs: &'a mut [f32],
    params: &'a mut [UniformParams],
    index: usize,
}

/// What every row of a block shares.
struct BlockCtx<'a> {
    u: &'a [f32],
    cols: usize,
    perm: Option<&'a [usize]>,
    group_cols: usize,
    mode: GridMode,
    blk: Range<usize>,
}

multiversion! {
    /// Quantize columns `ctx.blk` of one row, updating the rest of the block; returns `Σ e²`.
    fn block_row(row: Row<'_>, ctx: &BlockCtx<'_>) -> Result<f64, SweepFault> {
        let Row {
            w,
            codes,
            errs,
            params,
            index,
        } = row;
        let BlockCtx {
            u,
            cols,
            perm,
            group_cols,
            mode,
            ref blk,
        } = *ctx;
        let gpr = cols / group_cols;
        let (i1, i2) = (blk.start, blk.end);
        let mut loss = 0f64;
        for c in blk.clone() {
            let oc = perm.map_or(c, |p| p[c]);
            if let GridMode::Dynamic {
                bits,
                symmetric,
                scale_dtype,
            } = mode
                && c.is_multiple_of(group_cols)
            {
                let g = c / group_cols;
                let vals = &w[c..c + group_cols];
                let (min, max, finite) = min_max(vals);
                if !finite {
                    let k = vals.iter().position(|v| !v.is_finite()).unwrap_or(0);
                    return Err(SweepFault::NonFinite {
                        index: index * cols + c + k,
                    });
                }
                params[g] = UniformParams::from_range(min, max, bits, symmetric, scale_dtype)
                    .ok_or(SweepFault::ScaleOverflow {
                        group: index * gpr + g,
                        scale: raw_uniform_scale(min, max, bits, symmetric),
                    })?;
            }
            let p = params[oc / group_cols];
            let x = w[c];
            let q = p.encode_nearest(x);
            codes[oc] = q;
            let e = (x - UniformParams::decode(p.scale, p.zero, q)) / u[c * cols + c];
            errs[c - i1] = e;
            loss += e as f64 * e as f64;
            axpy_neg(&mut w[c + 1..i2], e, &u[c * cols + c + 1..c * cols + i2]);
        }
        Ok(loss)
    }
}

/// `y −= a·x`, elementwise (no fused multiply-add).
#[inline(always)]
fn axpy_neg(y: &mut [f32], a: f32, x: &[f32]) {
    for (v, &b) in y.iter_mut().zip(x) {
        *v -= a * b;
    }
}

/// Min, max and finiteness of a run (eight lanes, as the RTN kernel reduces).
pub(crate) fn min_max(x: &[f32]) -> (f32, f32, bool) {
    let mut mn = [f32::INFINITY; 8];
    let mut mx = [f32::NEG_INFINITY; 8];
    let mut poison = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for ch in chunks {
        for k in 0..8 {
            let v = ch[k];
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
    (
        mn.iter().fold(f32::INFINITY, |a, &b| a.min(b)),
        mx.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)),
        poison.iter().all(|p| *p == 0.0),
    )
}
