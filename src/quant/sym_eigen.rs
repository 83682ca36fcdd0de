//! Eigendecomposition of a symmetric f64 matrix: Householder tridiagonalisation, then the
//! implicit QL iteration with Wilkinson-style shifts (the EISPACK `tred2` / `tql2` pair, as in
//! JAMA), O(n³). Used for the null space of calibration Gram matrices, where n is a layer's
//! input width (384 … 4096): an n×n problem instead of an SVD of the tokens × n activations.

/// Eigenvalues ascending and the matching orthonormal eigenvectors, `vectors[i]` being the
/// eigenvector of `values[i]` (each a contiguous row of length n).
#[derive(Debug, Clone)]
pub(crate) struct SymEigen {
    pub values: Vec<f64>,
    pub vectors: Vec<Vec<f64>>,
}

/// Decompose the symmetric `n × n` row-major matrix `a` (only symmetric input is meaningful;
/// the lower triangle is what is read). `n ≥ 1`, finite entries.
pub(crate) fn sym_eigen(a: &[f64], n: usize) -> SymEigen {
    assert_eq!(a.len(), n * n, "sym_eigen: {} entries for n = {n}", a.len());
    let mut v: Vec<Vec<f64>> = (0..n).map(|i| a[i * n..(i + 1) * n].to_vec()).collect();
    let mut d = vec![0f64; n];
    let mut e = vec![0f64; n];
    tridiagonalize(&mut v, &mut d, &mut e);
    // `v` now holds the transform transposed: eigenvector columns are contiguous rows, so the
    // QL rotations (which mix two of them) stream through memory.
    let mut vt = v;
    tql2(&mut vt, &mut d, &mut e);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| d[i].total_cmp(&d[j]));
    SymEigen {
        values: order.iter().map(|&i| d[i]).collect(),
        vectors: order.iter().map(|&i| std::mem::take(&mut vt[i])).collect(),
    }
}

/// Householder reduction to tridiagonal form; on return `v` holds the orthogonal transform
/// **transposed**, `d` the diagonal and `e` the sub-diagonal (`e[0] = 0`).
///
/// This is EISPACK's `tred2` with every `V[a][b]` read as `v[b][a]`: the original walks
/// columns (Fortran's layout); on the transpose every inner loop walks a contiguous row, which
/// made the refinement of a 384×1536 layer 1.7× faster (9.0 → 5.4 s; the QL sweep over all
/// eigenvectors is the rest). The input is symmetric, so its transpose is itself.
#[allow(clippy::needless_range_loop)] // index-heavy numerical kernel, kept close to the math
fn tridiagonalize(v: &mut [Vec<f64>], d: &mut [f64], e: &mut [f64]) {
    let n = d.len();
    for (j, dj) in d.iter_mut().enumerate() {
        *dj = v[j][n - 1];
    }
    for i in (1..n).rev() {
        let scale: f64 = d[..i].iter().map(|x| x.abs()).sum();
        let mut h = 0.0;
        if scale == 0.0 {
            e[i] = d[i - 1];
            for j in 0..i {
                d[j] = v[j][i - 1];
                v[j][i] = 0.0;
                v[i][j] = 0.0;
            }
        } else {
            for k in 0..i {
                d[k] /= scale;
                h += d[k] * d[k];
            }
            let f = d[i - 1];
            let mut g = h.sqrt();
            if f > 0.0 {
                g = -g;
            }
            e[i] = scale * g;
            h -= f * g;
            d[i - 1] = f - g;
            e[..i].fill(0.0);
            for j in 0..i {
                let f = d[j];
                v[i][j] = f;
                let mut g = e[j] + v[j][j] * f;
                for k in j + 1..i {
                    g += v[j][k] * d[k];
                    e[k] += v[j][k] * f;
                }
                e[j] = g;
            }
            let mut f = 0.0;
            for j in 0..i {
                e[j] /= h;
                f += e[j] * d[j];
            }
            let hh = f / (h + h);
            for j in 0..i {
                e[j] -= hh * d[j];
            }
            for j in 0..i {
                let (f, g) = (d[j], e[j]);
                for k in j..i {
                    v[j][k] -= f * e[k] + g * d[k];
                }
                d[j] = v[j][i - 1];
                v[j][i] = 0.0;
            }
        }
        d[i] = h;
    }
    // Accumulate the transformations.
    for i in 0..n - 1 {
        v[i][n - 1] = v[i][i];
        v[i][i] = 1.0;
        let h = d[i + 1];
        if h != 0.0 {
            for k in 0..=i {
                d[k] = v[i + 1][k] / h;
            }
            for j in 0..=i {
                let g: f64 = (0..=i).map(|k| v[i + 1][k] * v[j][k]).sum();
                for k in 0..=i {
                    v[j][k] -= g * d[k];
                }
            }
        }
        for k in 0..=i {
            v[i + 1][k] = 0.0;
        }
    }
    for j in 0..n {
        d[j] = v[j][n - 1];
        v[j][n - 1] = 0.0;
    }
    v[n - 1][n - 1] = 1.0;
    e[0] = 0.0;
}

/// Implicit QL on the tridiagonal (`d`, `e`), rotating the eigenvector rows `vt`.
#[allow(clippy::needless_range_loop)]
fn tql2(vt: &mut [Vec<f64>], d: &mut [f64], e: &mut [f64]) {
    let n = d.len();
    for i in 1..n {
        e[i - 1] = e[i];
    }
    e[n - 1] = 0.0;
    let mut f = 0.0;
    let mut tst1: f64 = 0.0;
    let eps = f64::EPSILON;
    for l in 0..n {
        tst1 = tst1.max(d[l].abs() + e[l].abs());
        let mut m = l;
        while m < n - 1 && e[m].abs() > eps * tst1 {
            m += 1;
        }
        if m > l {
            // At most a few dozen iterations in practice; the cap only guards against a loop
            // on pathological input.
            for _ in 0..100 {
                let g = d[l];
                let mut p = (d[l + 1] - g) / (2.0 * e[l]);
                let mut r = p.hypot(1.0);
                if p < 0.0 {
                    r = -r;
                }
                d[l] = e[l] / (p + r);
                d[l + 1] = e[l] * (p + r);
                let dl1 = d[l + 1];
                let h = g - d[l];
                for x in d.iter_mut().skip(l + 2) {
                    *x -= h;
                }
                f += h;
                p = d[m];
                let (mut c, mut c2, mut c3) = (1.0, 1.0, 1.0);
                let el1 = e[l + 1];
                let (mut s, mut s2) = (0.0, 0.0);
                for i in (l..m).rev() {
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    let g = c * e[i];
                    let h = c * p;
                    r = p.hypot(e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = p / r;
                    p = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    let (lo, hi) = vt.split_at_mut(i + 1);
                    let (vi, vi1) = (&mut lo[i], &mut hi[0]);
                    for (a, b) in vi.iter_mut().zip(vi1.iter_mut()) {
                        let h = *b;
                        *b = s * *a + c * h;
                        *a = c * *a - s * h;
                    }
                }
                p = -s * s2 * c3 * el1 * e[l] / dl1;
                e[l] = s * p;
                d[l] = c * p;
                if e[l].abs() <= eps * tst1 {
                    break;
                }
            }
        }
        d[l] += f;
        e[l] = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn check(a: &[f64], n: usize) {
        let eig = sym_eigen(a, n);
        let norm = a.iter().map(|x| x * x).sum::<f64>().sqrt().max(1.0);
        // A v = λ v, orthonormal vectors, ascending values.
        for (lam, v) in eig.values.iter().zip(&eig.vectors) {
            for i in 0..n {
                let av: f64 = (0..n).map(|j| a[i * n + j] * v[j]).sum();
                assert!(
                    (av - lam * v[i]).abs() < 1e-10 * norm,
                    "residual {}",
                    av - lam * v[i]
                );
            }
        }
        for i in 0..n {
            for j in 0..n {
                let dot: f64 = eig.vectors[i]
                    .iter()
                    .zip(&eig.vectors[j])
                    .map(|(x, y)| x * y)
                    .sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-10, "({i},{j}) {dot}");
            }
        }
        assert!(eig.values.windows(2).all(|w| w[0] <= w[1]));
        let trace: f64 = (0..n).map(|i| a[i * n + i]).sum();
        assert!((eig.values.iter().sum::<f64>() - trace).abs() < 1e-9 * norm);
    }

    #[test]
    fn closed_forms() {
        // [[2, 1], [1, 2]]: eigenvalues 1 and 3.
        let e = sym_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
        assert!((e.values[0] - 1.0).abs() < 1e-14 && (e.values[1] - 3.0).abs() < 1e-14);
        let e = sym_eigen(&[5.0], 1);
        assert_eq!(e.values, vec![5.0]);
        let e = sym_eigen(&[3.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 2.0], 3);
        assert_eq!(e.values, vec![-1.0, 2.0, 3.0]);
    }

    #[test]
    fn random_grams_and_rank_deficient_ones() {
        let mut rng = SplitMix64::new(3);
        for (n, rank) in [(7, 7), (20, 5), (33, 33), (16, 1)] {
            let x: Vec<f64> = (0..rank * n).map(|_| rng.normal()).collect();
            let mut g = vec![0f64; n * n];
            for r in 0..rank {
                for i in 0..n {
                    for j in 0..n {
                        g[i * n + j] += x[r * n + i] * x[r * n + j];
                    }
                }
            }
            check(&g, n);
            let e = sym_eigen(&g, n);
            let zeros = e.values.iter().filter(|v| v.abs() < 1e-9).count();
            assert_eq!(zeros, n - rank);
        }
    }
}
