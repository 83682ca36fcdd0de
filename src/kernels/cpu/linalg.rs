//! Dense f32 linear algebra for GPTQ: a packed GEMM micro-kernel, a blocked Cholesky
//! factorisation and a blocked lower-triangular inverse.
//!
//! Everything is built on one operation, `C −= A·B`, where `B` is packed once into panels of
//! [`NR`] columns ([`PackedB`]) and `A` is packed per call into strips of [`MR`] rows. The
//! micro-kernel keeps an `MR × NR` tile of `C` in registers and streams one row of the `B`
//! panel and one column of the `A` strip per step; the inner loops have constant trip counts,
//! so the compiler turns them into SSE2 or AVX2 vector code ([`multiversion!`]).
//!
//! * **Cholesky** (`A = L·Lᵀ`, lower, right-looking, blocks of [`NB`]): the diagonal block is
//!   factorised and inverted in f64 (the pivots are where accuracy is lost); the panel below it
//!   is `A_ik · L_kk⁻ᵀ` (a product with the f64 inverse rounded to f32); the trailing lower
//!   triangle is updated with `−P·Pᵀ`, row tiles in parallel — the `n³/3` part, in f32.
//! * **Triangular inverse** (`X = L⁻¹`, block rows in order): `X_IJ = −L_II⁻¹ Σ_{J≤K<I} L_IK X_KJ`;
//!   each block row is one product with the already-inverted triangle (skipping its zeros),
//!   column tiles in parallel, then one product with the f64 inverse of the diagonal block.
//!
//! Results do not depend on the number of threads: every element of `C` is computed by one
//! task, summing over `k` in increasing order, with no fused multiply-add (so the SSE2 and
//! AVX2 builds agree to the bit too).

use rayon::prelude::*;

use crate::kernels::multiversion::multiversion;

/// Rows of `C` per micro-kernel tile.
pub(crate) const MR: usize = 4;
/// Columns of `C` per micro-kernel tile (two AVX2 vectors).
pub(crate) const NR: usize = 16;
/// Panels of `B` per cache block: `NC_PANELS · NR` columns of `B` are reused from L2 by every
/// strip of `A`.
const NC_PANELS: usize = 16;
/// Block size of the Cholesky factorisation and the triangular inverse.
pub(crate) const NB: usize = 128;
/// Rows per parallel task in the row-tiled products.
const TASK_ROWS: usize = 32;
/// Columns per parallel task in the column-tiled products (a multiple of `NR`).
const TASK_COLS: usize = 128;

/// A row-major matrix in a slice: row `r` starts at `r · stride`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MatRef<'a> {
    pub data: &'a [f32],
    pub stride: usize,
}

impl<'a> MatRef<'a> {
    pub(crate) fn new(data: &'a [f32], stride: usize) -> Self {
        MatRef { data, stride }
    }

    #[inline(always)]
    fn at(&self, r: usize, c: usize) -> f32 {
        self.data[r * self.stride + c]
    }

    /// The view starting at row `r`, column `c`.
    pub(crate) fn offset(&self, r: usize, c: usize) -> MatRef<'a> {
        MatRef {
            data: &self.data[r * self.stride + c..],
            stride: self.stride,
        }
    }
}

/// A `k × n` right-hand factor packed in panels of [`NR`] columns: panel `p` holds rows
/// `0..k` of columns `p·NR .. p·NR + NR` (zero-padded past `n`), each row `NR` contiguous
/// values. Rows below `k_lo[p]` of panel `p` are known to be zero and are skipped.
#[derive(Debug, Clone)]
pub(crate) struct PackedB {
    k: usize,
    n: usize,
    data: Vec<f32>,
    k_lo: Vec<usize>,
}

impl PackedB {
    /// Pack the `k × n` block `b` (row-major view).
    pub(crate) fn from_rows(b: MatRef<'_>, k: usize, n: usize) -> Self {
        Self::pack(k, n, |t, cols, out| {
            let src = &b.data[t * b.stride + cols.start..];
            if cols.len() == NR {
                // A fixed-size copy: vector moves, not a memcpy call per 64 bytes.
                out.copy_from_slice(&src[..NR]);
            } else {
                out[..cols.len()].copy_from_slice(&src[..cols.len()]);
            }
        })
    }

    /// Pack the transpose of the `n × k` block `src`: `B[t][j] = src[j][t]`.
    pub(crate) fn from_transposed(src: MatRef<'_>, k: usize, n: usize) -> Self {
        Self::pack(k, n, |t, cols, out| {
            for (o, j) in out.iter_mut().zip(cols) {
                *o = src.at(j, t);
            }
        })
    }

    /// Pack a lower-triangular `k × n` block (`B[t][j] = 0` for `t < j`): the zero rows at the
    /// top of each panel are recorded and skipped by [`gemm_sub`].
    pub(crate) fn from_lower_rows(b: MatRef<'_>, k: usize, n: usize) -> Self {
        let mut packed = Self::from_rows(b, k, n);
        for (p, lo) in packed.k_lo.iter_mut().enumerate() {
            *lo = (p * NR).min(k);
        }
        packed
    }

    fn pack(
        k: usize,
        n: usize,
        fill: impl Fn(usize, std::ops::Range<usize>, &mut [f32; NR]) + Sync,
    ) -> Self {
        let panels = n.div_ceil(NR);
        let mut data = vec![0f32; panels * k * NR];
        if k > 0 {
            data.par_chunks_mut(k * NR)
                .enumerate()
                .for_each(|(p, panel)| {
                    let cols = p * NR..((p + 1) * NR).min(n);
                    for (t, row) in panel.chunks_exact_mut(NR).enumerate() {
                        let row: &mut [f32; NR] = row.try_into().expect("NR values");
                        fill(t, cols.clone(), row);
                    }
                });
        }
        PackedB {
            k,
            n,
            data,
            k_lo: vec![0; panels],
        }
    }
}

/// `C[0..m, 0..n] −= A[0..m, 0..k] · B[0..k, 0..n]`, serially; `k = b.k`, `n ≤ b.n`.
///
/// `c` is row-major with row stride `ldc` (row `r`, column `j` at `c[r·ldc + j]`).
pub(crate) fn gemm_sub(c: &mut [f32], ldc: usize, a: MatRef<'_>, m: usize, b: &PackedB, n: usize) {
    let n = n.min(b.n);
    let k = b.k;
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let panels = n.div_ceil(NR);
    let k0 = b.k_lo[..panels].iter().copied().min().unwrap_or(0);
    let kk = k - k0;
    // A packed in strips of MR rows: strip s, step t at [s·kk·MR + t·MR ..][..MR].
    let strips = m.div_ceil(MR);
    let mut apack = vec![0f32; strips * kk * MR];
    for (s, strip) in apack.chunks_exact_mut(kk * MR).enumerate() {
        for r in 0..MR.min(m - s * MR) {
            let row = &a.data[(s * MR + r) * a.stride + k0..][..kk];
            for (t, &v) in row.iter().enumerate() {
                strip[t * MR + r] = v;
            }
        }
    }
    gemm_sub_packed(c, ldc, &apack, m, b, n, k0);
}

multiversion! {
    /// The cache-blocked loop of [`gemm_sub`] over packed `A` (strips from row `k0` on).
    fn gemm_sub_packed(
        c: &mut [f32],
        ldc: usize,
        apack: &[f32],
        m: usize,
        b: &PackedB,
        n: usize,
        k0: usize,
    ) {
        let k = b.k;
        let kk = k - k0;
        let panels = n.div_ceil(NR);
        for pc in (0..panels).step_by(NC_PANELS) {
            for (s, strip) in apack.chunks_exact(kk * MR).enumerate() {
                let i0 = s * MR;
                let rm = MR.min(m - i0);
                for p in pc..(pc + NC_PANELS).min(panels) {
                    let j0 = p * NR;
                    let cn = NR.min(n - j0);
                    let kl = b.k_lo[p];
                    let ap = &strip[(kl - k0) * MR..];
                    let bp = &b.data[p * k * NR + kl * NR..(p + 1) * k * NR];
                    let mut acc = [[0f32; NR]; MR];
                    // Full-width rows move as fixed-size arrays (vector loads, no memcpy call).
                    for (r, acc_r) in acc.iter_mut().enumerate().take(rm) {
                        let row = &c[(i0 + r) * ldc + j0..];
                        if cn == NR {
                            *acc_r = row[..NR].try_into().expect("NR values");
                        } else {
                            acc_r[..cn].copy_from_slice(&row[..cn]);
                        }
                    }
                    micro(&mut acc, ap, bp);
                    for (r, acc_r) in acc.iter().enumerate().take(rm) {
                        let row = &mut c[(i0 + r) * ldc + j0..];
                        if cn == NR {
                            row[..NR].copy_from_slice(acc_r);
                        } else {
                            row[..cn].copy_from_slice(&acc_r[..cn]);
                        }
                    }
                }
            }
        }
    }
}

/// The register tile: `acc −= Σ_t ap[t]ᵀ · bp[t]` over the steps `t` of a strip and a panel.
#[inline(always)]
fn micro(acc: &mut [[f32; NR]; MR], ap: &[f32], bp: &[f32]) {
    for (a, b) in ap.chunks_exact(MR).zip(bp.chunks_exact(NR)) {
        for (acc_r, &x) in acc.iter_mut().zip(a) {
            for (v, &y) in acc_r.iter_mut().zip(b) {
                *v -= x * y;
            }
        }
    }
}

/// Why a factorisation stopped: the first pivot (row index) that was not positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotPositiveDefinite {
    pub pivot: usize,
}

/// In-place f64 Cholesky of the `n × n` lower triangle of `d` (upper triangle set to 0).
///
/// A pivot must exceed `f32::EPSILON` times `floor[j]` (the diagonal entry before any
/// elimination): below that, the matrix is singular to f32 precision and the factor would be
/// rounding noise. `L_jj` must also be a normal f32.
fn cholesky_f64(d: &mut [f64], n: usize, floor: &[f64]) -> Result<(), usize> {
    for j in 0..n {
        let mut s = d[j * n + j];
        for k in 0..j {
            s -= d[j * n + k] * d[j * n + k];
        }
        let l = s.sqrt();
        // Written so that NaN fails too.
        if !(s > f32::EPSILON as f64 * floor[j] && (l as f32) >= f32::MIN_POSITIVE && l.is_finite())
        {
            return Err(j);
        }
        d[j * n + j] = l;
        for i in j + 1..n {
            let mut s = d[i * n + j];
            for k in 0..j {
                s -= d[i * n + k] * d[j * n + k];
            }
            d[i * n + j] = s / l;
        }
        for k in j + 1..n {
            d[j * n + k] = 0.0;
        }
    }
    Ok(())
}

/// Inverse of the `n × n` lower-triangular `l` (f64), row by row:
/// `X[i, ..i] = −(Σ_{k<i} L_ik · X[k, ..i]) / L_ii`, `X_ii = 1/L_ii` — contiguous row updates.
fn inv_lower_f64(l: &[f64], n: usize) -> Vec<f64> {
    let mut x = vec![0f64; n * n];
    for i in 0..n {
        let (done, rest) = x.split_at_mut(i * n);
        let row = &mut rest[..n];
        for k in 0..i {
            let lik = l[i * n + k];
            // X[k, j] = 0 for j > k.
            for (v, &xk) in row[..=k].iter_mut().zip(&done[k * n..=k * n + k]) {
                *v += lik * xk;
            }
        }
        let lii = l[i * n + i];
        row[..i].iter_mut().for_each(|v| *v = -*v / lii);
        row[i] = 1.0 / lii;
    }
    x
}

/// Lower-triangular block `[r0.., c0..]` of size `b` of `a` (stride `n`) in f64.
fn block_f64(a: &[f32], n: usize, r0: usize, b: usize) -> Vec<f64> {
    let mut d = vec![0f64; b * b];
    for i in 0..b {
        for j in 0..=i {
            d[i * b + j] = a[(r0 + i) * n + r0 + j] as f64;
        }
    }
    d
}

/// Lower Cholesky factor of the symmetric positive-definite `n × n` matrix `a` (row-major;
/// only the lower triangle is read), in place: afterwards `a` holds `L` with `A = L·Lᵀ` and
/// zeros above the diagonal.
///
/// Fails at the first pivot that is not positive, or not above `f32::EPSILON` times its
/// original diagonal entry (numerically singular in f32).
pub(crate) fn cholesky_lower(a: &mut [f32], n: usize) -> Result<(), NotPositiveDefinite> {
    assert_eq!(a.len(), n * n, "cholesky_lower: {n}×{n} matrix expected");
    let diag: Vec<f64> = (0..n).map(|i| (a[i * n + i] as f64).abs()).collect();
    let mut k0 = 0;
    while k0 < n {
        let nb = NB.min(n - k0);
        let k1 = k0 + nb;
        // 1. The diagonal block in f64: factor, invert.
        let mut d = block_f64(a, n, k0, nb);
        cholesky_f64(&mut d, nb, &diag[k0..k1])
            .map_err(|j| NotPositiveDefinite { pivot: k0 + j })?;
        for i in 0..nb {
            for j in 0..nb {
                a[(k0 + i) * n + k0 + j] = d[i * nb + j] as f32;
            }
        }
        let m = n - k1;
        if m > 0 {
            // 2. Panel P = A[k1.., k0..k1] · L_kk⁻ᵀ: C −= A·B with C = 0 and B = −L_kk⁻ᵀ.
            let inv = inv_lower_f64(&d, nb);
            let neg_inv_t: Vec<f32> = (0..nb * nb)
                .map(|idx| -(inv[(idx % nb) * nb + idx / nb] as f32))
                .collect();
            let b = PackedB::from_rows(MatRef::new(&neg_inv_t, nb), nb, nb);
            let mut panel = vec![0f32; m * nb];
            {
                let src = MatRef::new(&a[k1 * n + k0..], n);
                panel
                    .par_chunks_mut(TASK_ROWS * nb)
                    .enumerate()
                    .for_each(|(task, tile)| {
                        let rows = tile.len() / nb;
                        gemm_sub(tile, nb, src.offset(task * TASK_ROWS, 0), rows, &b, nb);
                    });
            }
            // 3. Write the panel back and update the trailing lower triangle: −P·Pᵀ.
            let pt = PackedB::from_transposed(MatRef::new(&panel, nb), nb, m);
            let p = MatRef::new(&panel, nb);
            a[k1 * n..]
                .par_chunks_mut(TASK_ROWS * n)
                .enumerate()
                .for_each(|(task, tile)| {
                    let r0 = task * TASK_ROWS;
                    let rows = tile.len() / n;
                    for r in 0..rows {
                        tile[r * n + k0..r * n + k1]
                            .copy_from_slice(&panel[(r0 + r) * nb..(r0 + r + 1) * nb]);
                    }
                    // Columns up to the tile's last row: the lower triangle (and a little of
                    // the upper one, which is never read and zeroed at the end).
                    gemm_sub(&mut tile[k1..], n, p.offset(r0, 0), rows, &pt, r0 + rows);
                });
        }
        k0 = k1;
    }
    // Zero the strict upper triangle (the trailing updates wrote a little of it).
    a.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        row[i + 1..].iter_mut().for_each(|v| *v = 0.0);
    });
    Ok(())
}

/// Inverse `X = L⁻¹` of the lower-triangular `n × n` matrix `l` (row-major, zeros above the
/// diagonal, positive diagonal); `X` is lower-triangular too.
pub(crate) fn inverse_lower(l: &[f32], n: usize) -> Vec<f32> {
    assert_eq!(l.len(), n * n, "inverse_lower: {n}×{n} matrix expected");
    let mut x = vec![0f32; n * n];
    let mut i0 = 0;
    while i0 < n {
        let nb = NB.min(n - i0);
        let i1 = i0 + nb;
        let dinv = inv_lower_f64(&block_f64(l, n, i0, nb), nb);
        if i0 > 0 {
            // −L_II⁻¹ as a row-major left factor, for X_I = −L_II⁻¹ · (L[I, ..i0] · X[..i0, ..i0]).
            let neg_dinv: Vec<f32> = dinv.iter().map(|&v| -(v as f32)).collect();
            let lrows = MatRef::new(&l[i0 * n..], n);
            let xdone = MatRef::new(&x, n);
            let tiles: Vec<Vec<f32>> = (0..i0.div_ceil(TASK_COLS))
                .into_par_iter()
                .map(|t| {
                    let c0 = t * TASK_COLS;
                    let w = TASK_COLS.min(i0 - c0);
                    // S = −L[I, c0..i0] · X[c0..i0, c0..c0+w] (X is zero above its diagonal).
                    let b = PackedB::from_lower_rows(xdone.offset(c0, c0), i0 - c0, w);
                    let mut s = vec![0f32; nb * w];
                    gemm_sub(&mut s, w, lrows.offset(0, c0), nb, &b, w);
                    // X[I, c0..c0+w] = −L_II⁻¹·ΣLX = L_II⁻¹·S = 0 − (−L_II⁻¹)·S.
                    let bs = PackedB::from_rows(MatRef::new(&s, w), nb, w);
                    let mut out = vec![0f32; nb * w];
                    gemm_sub(&mut out, w, MatRef::new(&neg_dinv, nb), nb, &bs, w);
                    out
                })
                .collect();
            for (t, tile) in tiles.iter().enumerate() {
                let c0 = t * TASK_COLS;
                let w = tile.len() / nb;
                for r in 0..nb {
                    x[(i0 + r) * n + c0..][..w].copy_from_slice(&tile[r * w..(r + 1) * w]);
                }
            }
        }
        for r in 0..nb {
            for c in 0..=r {
                x[(i0 + r) * n + i0 + c] = dinv[r * nb + c] as f32;
            }
        }
        i0 = i1;
    }
    x
}

/// The upper Cholesky factor `U` of `A⁻¹` (`A⁻¹ = UᵀU`) for the symmetric positive-definite
/// `n × n` matrix `a` (row-major; only its upper triangle is read), without forming `A⁻¹`.
///
/// With `J` the reversal permutation, factor `J·A·J = L'·L'ᵀ`; then `A = R·Rᵀ` with
/// `R = J·L'·J` upper triangular, `A⁻¹ = R⁻ᵀ·R⁻¹`, and `U = R⁻¹ = J·L'⁻¹·J` — upper triangular
/// with a positive diagonal, hence *the* Cholesky factor. In row-major storage, `J·M·J` is the
/// buffer reversed. Fails with the first bad pivot as a row of `a`; an inverse that overflows
/// f32 (numerically singular) fails at the row where it does.
pub(crate) fn inverse_upper_factor(
    mut a: Vec<f32>,
    n: usize,
) -> Result<Vec<f32>, NotPositiveDefinite> {
    // J·A·J: the lower triangle of the reversed buffer is the upper triangle of `a`.
    a.reverse();
    cholesky_lower(&mut a, n).map_err(|e| NotPositiveDefinite {
        pivot: n - 1 - e.pivot,
    })?;
    let mut x = inverse_lower(&a, n);
    if let Some(k) = x.iter().position(|v| !v.is_finite()) {
        return Err(NotPositiveDefinite {
            pivot: n - 1 - k / n,
        });
    }
    x.reverse();
    Ok(x)
}

#[cfg(test)]
mod tests {
    //! Every kernel against a naive f64 twin.
    use super::*;
    use crate::rng::SplitMix64;

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        (0..len).map(|_| rng.normal() as f32).collect()
    }

    /// `X·Xᵀ/cols + ridge·I` for a random `n × cols` X: SPD, condition set by `cols` and `ridge`.
    fn spd(n: usize, cols: usize, ridge: f64, seed: u64) -> Vec<f64> {
        let x = random(n * cols, seed);
        let mut a = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                let s: f64 = (0..cols)
                    .map(|t| x[i * cols + t] as f64 * x[j * cols + t] as f64)
                    .sum();
                a[i * n + j] = s / cols as f64 + if i == j { ridge } else { 0.0 };
            }
        }
        a
    }

    /// Textbook Cholesky–Banachiewicz in f64.
    fn naive_cholesky(a: &[f64], n: usize) -> Vec<f64> {
        let mut l = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..=i {
                let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
                l[i * n + j] = if i == j {
                    (a[i * n + i] - s).sqrt()
                } else {
                    (a[i * n + j] - s) / l[j * n + j]
                };
            }
        }
        l
    }

    /// `L⁻¹` column by column: forward substitution of `L·x = e_j` in f64.
    fn naive_inverse(l: &[f64], n: usize) -> Vec<f64> {
        let mut x = vec![0f64; n * n];
        for j in 0..n {
            for i in j..n {
                let rhs = if i == j { 1.0 } else { 0.0 };
                let s: f64 = (j..i).map(|k| l[i * n + k] * x[k * n + j]).sum();
                x[i * n + j] = (rhs - s) / l[i * n + i];
            }
        }
        x
    }

    #[test]
    fn f64_block_routines_match_the_textbook() {
        let n = 37;
        let a = spd(n, n + 3, 0.05, 21);
        let mut l = a.clone();
        cholesky_f64(&mut l, n, &vec![0.0; n]).unwrap();
        let want = naive_cholesky(&a, n);
        assert!(max_abs(l.iter().zip(&want).map(|(x, y)| x - y)) < 1e-12);
        let inv = inv_lower_f64(&l, n);
        let want = naive_inverse(&l, n);
        assert!(
            max_abs(inv.iter().zip(&want).map(|(x, y)| x - y))
                < 1e-10 * max_abs(want.iter().copied())
        );
    }

    fn max_abs(v: impl IntoIterator<Item = f64>) -> f64 {
        v.into_iter().fold(0.0, |m, x| m.max(x.abs()))
    }

    #[test]
    fn gemm_matches_naive_f64_on_ragged_shapes() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 5, 7),
            (4, 16, 8),
            (13, 37, 29),
            (33, 300, 130),
            (70, 17, 3),
        ] {
            let a = random(m * k, 1);
            let b = random(k * n, 2);
            let c0 = random(m * n, 3);
            let mut c = c0.clone();
            let packed = PackedB::from_rows(MatRef::new(&b, n), k, n);
            gemm_sub(&mut c, n, MatRef::new(&a, k), m, &packed, n);
            for i in 0..m {
                for j in 0..n {
                    let want = c0[i * n + j] as f64
                        - (0..k)
                            .map(|t| a[i * k + t] as f64 * b[t * n + j] as f64)
                            .sum::<f64>();
                    let got = c[i * n + j] as f64;
                    assert!(
                        (got - want).abs() <= 1e-5 * (k as f64).sqrt() * (1.0 + want.abs()),
                        "{m}x{n}x{k} at ({i},{j}): {got} vs {want}"
                    );
                }
            }
            // The transposed packing gives the same result.
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            let packed_t = PackedB::from_transposed(MatRef::new(&bt, k), k, n);
            let mut c2 = c0.clone();
            gemm_sub(&mut c2, n, MatRef::new(&a, k), m, &packed_t, n);
            assert_eq!(c, c2);
        }
    }

    #[test]
    fn gemm_skips_only_zero_rows_of_lower_factors() {
        let (m, k) = (9, 40);
        let a = random(m * k, 4);
        let mut b = random(k * k, 5);
        for t in 0..k {
            for j in t + 1..k {
                b[t * k + j] = 0.0;
            }
        }
        // b is lower: B[t][j] = 0 for t < j.
        let dense = PackedB::from_rows(MatRef::new(&b, k), k, k);
        let lower = PackedB::from_lower_rows(MatRef::new(&b, k), k, k);
        let mut c1 = vec![1f32; m * k];
        let mut c2 = c1.clone();
        gemm_sub(&mut c1, k, MatRef::new(&a, k), m, &dense, k);
        gemm_sub(&mut c2, k, MatRef::new(&a, k), m, &lower, k);
        assert_eq!(c1, c2);
    }

    #[test]
    fn cholesky_matches_naive_f64() {
        for &(n, seed) in &[(1, 1), (7, 2), (128, 3), (129, 4), (300, 5)] {
            let a64 = spd(n, n + 5, 0.1, seed);
            let mut a: Vec<f32> = a64.iter().map(|&v| v as f32).collect();
            cholesky_lower(&mut a, n).unwrap();
            let want = naive_cholesky(&a64, n);
            let scale = max_abs(want.iter().copied());
            let err = max_abs(a.iter().zip(&want).map(|(&x, &y)| x as f64 - y));
            assert!(err <= 1e-4 * scale, "n = {n}: max error {err:e}");
            // Upper triangle zero.
            for i in 0..n {
                assert!(a[i * n + i + 1..(i + 1) * n].iter().all(|&v| v == 0.0));
            }
        }
    }

    #[test]
    fn cholesky_reports_the_first_bad_pivot() {
        // Rank-deficient: pivot 200 (in the second block) is zero in exact arithmetic.
        let n = 260;
        let mut a64 = spd(n, 200, 0.0, 6);
        for i in 0..n {
            a64[i * n + i] += if i < 200 { 1e-3 } else { 0.0 };
        }
        // Make row/column 200 a copy of row/column 3: singular at pivot 200.
        for j in 0..n {
            a64[200 * n + j] = a64[3 * n + j];
            a64[j * n + 200] = a64[j * n + 3];
        }
        a64[200 * n + 200] = a64[3 * n + 3] - 1.0;
        let mut a: Vec<f32> = a64.iter().map(|&v| v as f32).collect();
        assert_eq!(
            cholesky_lower(&mut a, n),
            Err(NotPositiveDefinite { pivot: 200 })
        );
        // Singular to f32 precision: the pivot is rounding noise, far below ε·diagonal.
        let mut dup = vec![3f32, 3.0, 3.0, 3.0];
        assert_eq!(
            cholesky_lower(&mut dup, 2),
            Err(NotPositiveDefinite { pivot: 1 })
        );
        let mut nan = vec![1f32, f32::NAN, f32::NAN, 1.0];
        assert_eq!(
            cholesky_lower(&mut nan, 2),
            Err(NotPositiveDefinite { pivot: 1 })
        );
    }

    #[test]
    fn inverse_matches_naive_f64() {
        for &(n, seed) in &[(1, 7), (5, 8), (128, 9), (200, 10), (385, 11)] {
            let a64 = spd(n, 2 * n, 0.5, seed);
            let l = naive_cholesky(&a64, n);
            let l32: Vec<f32> = l.iter().map(|&v| v as f32).collect();
            let l_rounded: Vec<f64> = l32.iter().map(|&v| v as f64).collect();
            let want = naive_inverse(&l_rounded, n);
            let got = inverse_lower(&l32, n);
            let scale = max_abs(want.iter().copied());
            let err = max_abs(got.iter().zip(&want).map(|(&x, &y)| x as f64 - y));
            assert!(
                err <= 2e-5 * scale,
                "n = {n}: max error {err:e} (scale {scale})"
            );
            for i in 0..n {
                assert!(got[i * n + i + 1..(i + 1) * n].iter().all(|&v| v == 0.0));
            }
        }
    }

    #[test]
    fn inverse_upper_factor_is_the_cholesky_factor_of_the_inverse() {
        for &(n, seed) in &[(1, 31), (6, 32), (150, 33), (260, 34)] {
            let a64 = spd(n, 2 * n, 0.2, seed);
            let a: Vec<f32> = a64.iter().map(|&v| v as f32).collect();
            let u = inverse_upper_factor(a, n).unwrap();
            let u64: Vec<f64> = u.iter().map(|&v| v as f64).collect();
            // Upper triangular with a positive diagonal, and Uᵀ·U·A = I.
            for i in 0..n {
                assert!(u64[i * n + i] > 0.0);
                assert!(u64[i * n..i * n + i].iter().all(|&v| v == 0.0));
            }
            let ua: Vec<f64> = (0..n * n)
                .map(|k| {
                    (0..n)
                        .map(|t| u64[(k / n) * n + t] * a64[t * n + k % n])
                        .sum()
                })
                .collect();
            for i in 0..n {
                for j in 0..n {
                    let v: f64 = (0..n).map(|t| u64[t * n + i] * ua[t * n + j]).sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((v - want).abs() < 1e-3, "n = {n}: (UᵀUA)[{i}][{j}] = {v}");
                }
            }
        }
        // A singular matrix names its pivot in the original order: rows 4 and 5 equal.
        let n = 8;
        let mut a64 = spd(n, 20, 0.0, 35);
        for j in 0..n {
            a64[5 * n + j] = a64[4 * n + j];
            a64[j * n + 5] = a64[j * n + 4];
        }
        a64[5 * n + 5] = a64[4 * n + 4];
        let a: Vec<f32> = a64.iter().map(|&v| v as f32).collect();
        let pivot = inverse_upper_factor(a, n).unwrap_err().pivot;
        assert!(pivot == 4 || pivot == 5, "pivot {pivot}");
    }

    #[test]
    fn kernels_do_not_depend_on_thread_count() {
        let n = 300;
        let a64 = spd(n, n, 0.01, 12);
        let a: Vec<f32> = a64.iter().map(|&v| v as f32).collect();
        let run = || {
            let mut l = a.clone();
            cholesky_lower(&mut l, n).unwrap();
            inverse_lower(&l, n)
        };
        let many = run();
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(run);
        assert!(
            many.iter()
                .zip(&one)
                .all(|(x, y)| x.to_bits() == y.to_bits())
        );
    }
}
