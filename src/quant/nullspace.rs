//! Null-space error projection (Q2N: Zhao et al. 2025, "Boost post-training quantization via
//! null space optimization for large language models", arXiv:2506.11044) as a wrapper around
//! any quantizer.
//!
//! # The math
//!
//! A layer computes `y = W x`. Quantization replaces `W` by `Q`; over calibration inputs
//! `X` (tokens × in) the output changes by `X Eᵀ` with `E = Q − W`. Rows of `E` lying in the
//! null space of `X` — `{v : X v = 0}`, the null space of the Gram `G = XᵀX` — change nothing.
//! Real activations have no exactly zero directions, so the null space is approximated by the
//! eigenvectors of the trailing eigenvalues of `G = U diag(λ₁ ≥ … ≥ λ_d) Uᵀ`:
//!
//! * **Rank cut** (the reference code's "prefix–suffix ratio" `t`, default 0.1): ignoring `λ₁`,
//!   take the first `k` with `Σ_{i>k} λ_i ≤ t · Σ_{1<i<k} λ_i`; `U₀` = the eigenvectors
//!   *after* `k` and `P = U₀U₀ᵀ`. If `U₀` is empty (only the last index qualifies) the step is
//!   a no-op. **Deviation from the reference code**, which also puts the boundary eigenvector
//!   `k` into `U₀`: on inputs of exact rank `r` the cut then lands at `k = r − 1` and `U₀`
//!   admits one direction with real energy; without the boundary, `U₀` is exactly the null
//!   space.
//! * **Target** `B = W (I − P) + Q P = W + E P`: the weights with only the null-space part of
//!   the error kept.
//! * **Equivalent vector** `α ∈ ℝ^out` minimising `‖B − diag(α) Q‖²_F + λ ‖α − 1‖²`, in
//!   closed form per row: `α_r = (⟨B_r, Q_r⟩ + λ) / (‖Q_r‖² + λ)` (λ = 0.2 by default).
//!   `diag(α) Q` is stored by multiplying every scale (and offset) of row `r` by `α_r`, so the
//!   codes, the format, the storage and the kernels do not change.
//!
//! `G` comes from the layer's [`Calibration`] (all tokens; the reference code uses the
//! position-averaged activations instead, which have rank at most the sequence length). The
//! eigendecomposition is of the `d × d` Gram, not an SVD of the tokens × `d` activations:
//! O(d³) once per layer (a fraction of a second at d = 384, seconds at 1536).
//!
//! After folding, each row's calibration output error `E_r G E_rᵀ` is compared with the base
//! quantizer's, and rows where it grew (the scale's storage rounding, or an `α` that trades
//! output error for weight error) keep their original scales: the refinement never increases
//! the layer's output error on the calibration set.
//!
//! [`RescaleRule::OutputOptimal`] is the ablation the design notes ask for: the per-row
//! rescale minimising the output error directly, `α_r = (Q_r G W_rᵀ)/(Q_r G Q_rᵀ)`.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::quant::calibration::Calibration;
use crate::quant::grid::store_scale_nearest;
use crate::quant::quantizer::Quantizer;
use crate::quant::scales::Scales;
use crate::quant::sym_eigen::sym_eigen;
use crate::quant::tensor::QuantizedTensor;

/// How the per-row factors `α` are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RescaleRule {
    /// Q2N: project the error onto the approximate null space of the calibration inputs,
    /// then fit `α` to the projected target (module docs).
    NullSpace {
        /// Prefix–suffix eigenvalue ratio of the rank cut (reference: 0.1).
        ratio: f64,
        /// Ridge weight pulling `α` towards 1 (reference: 0.2).
        lambda: f64,
    },
    /// The rescale that minimises each row's calibration output error.
    OutputOptimal,
}

/// Null-space refinement of any base quantizer (module docs): same format and storage as the
/// base, per-row scales adjusted so the quantization error moves towards directions the
/// calibration inputs do not excite.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::quant::NullSpaceRefine;
/// use quantlens::{Calibration, QuantSpec, Quantizer, UniformQuantizer};
///
/// let w = Tensor::randn(0f32, 1.0, (32, 64), &Device::Cpu)?;
/// // Inputs that live in a 16-dimensional subspace of the 64 input channels.
/// let basis = Tensor::randn(0f32, 1.0, (16, 64), &Device::Cpu)?;
/// let x = Tensor::randn(0f32, 1.0, (256, 16), &Device::Cpu)?.matmul(&basis)?;
/// let mut calib = Calibration::new(64);
/// calib.observe(&x)?;
/// let base = UniformQuantizer::new(QuantSpec::int3().per_channel())?;
/// let q2n = NullSpaceRefine::new(base.clone());
/// let err = |w_hat: &Tensor| -> quantlens::Result<f32> {
///     Ok(x.matmul(&(&w - w_hat)?.t()?)?.sqr()?.sum_all()?.to_scalar::<f32>()?)
/// };
/// let before = err(&base.fake_quantize(&w, Some(&calib))?)?;
/// let after = err(&q2n.fake_quantize(&w, Some(&calib))?)?;
/// assert!(after <= before * 1.0001);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct NullSpaceRefine<Q> {
    base: Q,
    rule: RescaleRule,
    keep_only_improving: bool,
    cache: NullSpaceCache,
}

/// The null-space bases already computed, keyed by the calibration's Gram matrix and the rank
/// cut, so that refining several base quantizers of one layer (RTN, GPTQ, AWQ, at several bit
/// widths) runs the `O(d³)` eigendecomposition once. A handle: clones share one store.
///
/// ```
/// use quantlens::quant::{NullSpaceCache, NullSpaceRefine};
/// use quantlens::{QuantSpec, UniformQuantizer};
///
/// let cache = NullSpaceCache::default();
/// let int4 = NullSpaceRefine::new(UniformQuantizer::new(QuantSpec::int4().per_channel())?)
///     .share_cache(&cache);
/// let int3 = NullSpaceRefine::new(UniformQuantizer::new(QuantSpec::int3().per_channel())?)
///     .share_cache(&cache);
/// assert!(cache.is_empty());
/// # let _ = (int4, int3);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct NullSpaceCache {
    bases: Arc<Mutex<HashMap<CacheKey, SharedBasis>>>,
}

/// A basis as rows (`None`: no rank cut qualifies), shared by every refiner that needs it.
type SharedBasis = Arc<Option<Vec<Vec<f64>>>>;

/// `(d, samples, ratio bits, hash of the Gram's bits)`.
type CacheKey = (usize, usize, u64, u64);

impl NullSpaceCache {
    /// Number of bases stored.
    pub fn len(&self) -> usize {
        self.bases.lock().map_or(0, |m| m.len())
    }

    /// Whether nothing is stored yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The basis for `g` under `ratio`, computed on first use.
    fn basis(&self, g: &[f64], d: usize, samples: usize, ratio: f64) -> SharedBasis {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for v in g {
            v.to_bits().hash(&mut hasher);
        }
        let key = (d, samples, ratio.to_bits(), hasher.finish());
        if let Ok(map) = self.bases.lock()
            && let Some(hit) = map.get(&key)
        {
            return Arc::clone(hit);
        }
        // Computed outside the lock: two threads may both compute a missing basis (same
        // result), but no thread waits seconds on another layer's eigendecomposition.
        let basis = Arc::new(null_space_basis(g, d, ratio));
        if let Ok(mut map) = self.bases.lock() {
            map.insert(key, Arc::clone(&basis));
        }
        basis
    }
}

impl<Q: Quantizer> NullSpaceRefine<Q> {
    /// Q2N with the reference hyper-parameters (`t = 0.1`, `λ = 0.2`), keeping only rows whose
    /// calibration output error drops.
    pub fn new(base: Q) -> Self {
        NullSpaceRefine {
            base,
            rule: RescaleRule::NullSpace {
                ratio: 0.1,
                lambda: 0.2,
            },
            keep_only_improving: true,
            cache: NullSpaceCache::default(),
        }
    }

    /// Store and look up null-space bases in `cache` (shared with other refiners) instead of
    /// this refiner's own.
    pub fn share_cache(mut self, cache: &NullSpaceCache) -> Self {
        self.cache = cache.clone();
        self
    }
    /// Choose the rule (validated: ratio ≥ 0, λ ≥ 0, both finite).
    pub fn rule(mut self, rule: RescaleRule) -> Result<Self> {
        if let RescaleRule::NullSpace { ratio, lambda } = rule
            && !(ratio.is_finite() && ratio >= 0.0 && lambda.is_finite() && lambda >= 0.0)
        {
            return Err(Error::InvalidParameter {
                name: "null-space rule",
                reason: format!("ratio and lambda must be finite and ≥ 0, got {ratio}, {lambda}"),
            });
        }
        self.rule = rule;
        Ok(self)
    }
    /// Keep every row's new scales even where the calibration output error grew (the paper's
    /// behaviour; off by default).
    pub fn keep_all_rows(mut self) -> Self {
        self.keep_only_improving = false;
        self
    }
    /// The wrapped quantizer.
    pub fn base(&self) -> &Q {
        &self.base
    }
}

/// `rows × cols` f64 values of a tensor.
fn f64_rows(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?)
}

/// `a (r × k) · b (k × c)` in f64 through Candle's matmul.
fn matmul(a: &[f64], b: &[f64], r: usize, k: usize, c: usize) -> Result<Vec<f64>> {
    let a = Tensor::from_slice(a, (r, k), &Device::Cpu)?;
    let b = Tensor::from_slice(b, (k, c), &Device::Cpu)?;
    Ok(a.matmul(&b)?.flatten_all()?.to_vec1::<f64>()?)
}

/// Row-wise `E_r G E_rᵀ`.
fn row_output_errors(e: &[f64], g: &[f64], rows: usize, d: usize) -> Result<Vec<f64>> {
    let eg = matmul(e, g, rows, d, d)?;
    Ok(eg
        .chunks(d)
        .zip(e.chunks(d))
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x * y).sum())
        .collect())
}

/// The eigenvectors spanning the approximate null space of `g` under the ratio cut, as rows;
/// `None` when no cut qualifies (P = I).
pub(crate) fn null_space_basis(g: &[f64], d: usize, ratio: f64) -> Option<Vec<Vec<f64>>> {
    let eig = sym_eigen(g, d);
    // Descending, negatives (round-off of a PSD matrix) as 0.
    let lam: Vec<f64> = eig.values.iter().rev().map(|v| v.max(0.0)).collect();
    let total: f64 = lam[1..].iter().sum();
    let mut prefix = 0.0;
    for (k, &lam_k) in lam.iter().enumerate().skip(1) {
        let suffix = total - prefix - lam_k;
        if suffix <= ratio * prefix {
            // The directions after k are negligible: they span the null space. Descending
            // indices k+1 … d−1 are ascending indices 0 … d−2−k.
            let m = d - 1 - k;
            if m == 0 {
                return None;
            }
            let mut vectors = eig.vectors;
            vectors.truncate(m);
            return Some(vectors);
        }
        prefix += lam_k;
    }
    None
}

impl<Q: Quantizer> Quantizer for NullSpaceRefine<Q> {
    fn name(&self) -> String {
        match self.rule {
            RescaleRule::NullSpace { ratio, lambda } => {
                format!("{}+q2n-t{ratio}-l{lambda}", self.base.name())
            }
            RescaleRule::OutputOptimal => format!("{}+rescale", self.base.name()),
        }
    }

    fn uses_calibration(&self) -> bool {
        true
    }

    fn config(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name(),
            "settings": format!(
                "NullSpaceRefine {{ rule: {:?}, keep_only_improving: {} }}",
                self.rule, self.keep_only_improving
            ),
            "base": self.base.config(),
        })
    }

    fn quantize(&self, weight: &Tensor, calib: Option<&Calibration>) -> Result<QuantizedTensor> {
        let calib = calib.ok_or_else(|| Error::InvalidParameter {
            name: "calibration",
            reason: format!("{} needs the layer's calibration statistics", self.name()),
        })?;
        let qt = self.base.quantize(weight, Some(calib))?;
        self.refine(weight, qt, calib)
    }
}

impl<Q: Quantizer> NullSpaceRefine<Q> {
    /// The refinement step alone, on `qt`, the base quantizer's result for `weight`: what
    /// [`quantize`](Quantizer::quantize) does after running the base. For a weight already
    /// quantized by an expensive base (GPTQ, AWQ), this adds Q2N without quantizing again;
    /// `refine(w, base.quantize(w, c)?, c)` equals `quantize(w, c)` bit for bit.
    ///
    /// Errors: `qt` not `[out, in]` of `weight`'s shape, a calibration of another width, or
    /// scale groups that straddle rows.
    pub fn refine(
        &self,
        weight: &Tensor,
        qt: QuantizedTensor,
        calib: &Calibration,
    ) -> Result<QuantizedTensor> {
        if qt.shape() != weight.dims() {
            return Err(Error::ShapeMismatch(format!(
                "quantized tensor of shape {:?} for a weight of shape {:?}",
                qt.shape(),
                weight.dims()
            )));
        }
        let (rows, d) = match qt.shape() {
            [r, c] => (*r, *c),
            s => {
                return Err(Error::RankMismatch {
                    what: "weight matrix [out_features, in_features]",
                    expected: 2,
                    shape: s.to_vec(),
                });
            }
        };
        if calib.in_features() != d {
            return Err(Error::ShapeMismatch(format!(
                "calibration of {} features for a weight with {d} inputs",
                calib.in_features()
            )));
        }
        if !d.is_multiple_of(qt.group_len()) {
            return Err(Error::Unsupported(format!(
                "{}: per-row rescaling needs scale groups within rows (group of {} over rows of {d})",
                self.name(),
                qt.group_len()
            )));
        }
        if calib.samples() == 0 {
            return Ok(qt);
        }
        let w = f64_rows(weight)?;
        let q = f64_rows(&qt.dequantize(&Device::Cpu)?)?;
        let g = calib.hessian_f64();
        let alpha: Vec<f64> = match self.rule {
            RescaleRule::NullSpace { ratio, lambda } => {
                let basis = self.cache.basis(&g, d, calib.samples(), ratio);
                let Some(u0) = basis.as_ref() else {
                    return Ok(qt);
                };
                let m = u0.len();
                let u0: Vec<f64> = u0.concat(); // m × d
                let e: Vec<f64> = q.iter().zip(&w).map(|(a, b)| a - b).collect();
                // E P = (E U₀ᵀ) U₀ with U₀ stored as m rows of length d.
                let u0t: Vec<f64> = (0..d * m).map(|i| u0[(i % m) * d + i / m]).collect();
                let c = matmul(&e, &u0t, rows, d, m)?;
                let ep = matmul(&c, &u0, rows, m, d)?;
                (0..rows)
                    .map(|r| {
                        let (qr, wr, epr) = (
                            &q[r * d..(r + 1) * d],
                            &w[r * d..(r + 1) * d],
                            &ep[r * d..(r + 1) * d],
                        );
                        let bq: f64 = (0..d).map(|j| (wr[j] + epr[j]) * qr[j]).sum();
                        let qq: f64 = qr.iter().map(|v| v * v).sum();
                        if qq + lambda > 0.0 {
                            (bq + lambda) / (qq + lambda)
                        } else {
                            1.0
                        }
                    })
                    .collect()
            }
            RescaleRule::OutputOptimal => {
                let qg = matmul(&q, &g, rows, d, d)?;
                (0..rows)
                    .map(|r| {
                        let qgr = &qg[r * d..(r + 1) * d];
                        let num: f64 = qgr
                            .iter()
                            .zip(&w[r * d..(r + 1) * d])
                            .map(|(a, b)| a * b)
                            .sum();
                        let den: f64 = qgr
                            .iter()
                            .zip(&q[r * d..(r + 1) * d])
                            .map(|(a, b)| a * b)
                            .sum();
                        if den > 0.0 { num / den } else { 1.0 }
                    })
                    .collect()
            }
        };
        let refined = rescale_rows(&qt, &alpha, None)?;
        if !self.keep_only_improving {
            return Ok(refined);
        }
        let e_old: Vec<f64> = q.iter().zip(&w).map(|(a, b)| a - b).collect();
        let q_new = f64_rows(&refined.dequantize(&Device::Cpu)?)?;
        let e_new: Vec<f64> = q_new.iter().zip(&w).map(|(a, b)| a - b).collect();
        let before = row_output_errors(&e_old, &g, rows, d)?;
        let after = row_output_errors(&e_new, &g, rows, d)?;
        let keep: Vec<bool> = before.iter().zip(&after).map(|(b, a)| a < b).collect();
        if keep.iter().all(|&k| k) {
            return Ok(refined);
        }
        rescale_rows(&qt, &alpha, Some(&keep))
    }
}

/// Multiply every scale (and offset) of row `r` by `alpha[r]`, rounded to nearest in the
/// scale's storage dtype; rows with `keep[r] == false` stay as they are.
fn rescale_rows(
    qt: &QuantizedTensor,
    alpha: &[f64],
    keep: Option<&[bool]>,
) -> Result<QuantizedTensor> {
    let groups_per_row = qt.num_groups() / alpha.len();
    let rescale = |s: &Scales| -> Result<Scales> {
        let dtype = s
            .dtype()
            .filter(|dt| !matches!(dt, crate::quant::spec::ScaleDType::E8M0));
        let Some(dtype) = dtype else {
            return Err(Error::Unsupported(
                "per-row rescaling of E8M0 or double-quantized scales".into(),
            ));
        };
        let values = (0..s.len())
            .map(|i| {
                let r = i / groups_per_row;
                if keep.is_some_and(|k| !k[r]) {
                    return Ok(s.get(i));
                }
                let v = (s.get(i) as f64 * alpha[r]) as f32;
                store_scale_nearest(v, dtype).ok_or(Error::ScaleOutOfRange {
                    group: i,
                    scale: v,
                    dtype,
                })
            })
            .collect::<Result<Vec<f32>>>()?;
        Ok(Scales::from_f32(values, dtype))
    };
    let mut parts = qt.clone().into_parts();
    parts.scales = rescale(&parts.scales)?;
    if let Some(o) = &parts.offsets {
        parts.offsets = Some(rescale(o)?);
    }
    QuantizedTensor::assemble(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// P = U₀U₀ᵀ is symmetric and idempotent, and on inputs of rank r the null space found
    /// has dimension d − r and annihilates the inputs.
    #[test]
    fn projector_is_the_null_space_of_low_rank_inputs() {
        let mut rng = SplitMix64::new(5);
        let (n, d, r) = (100, 20, 7);
        let z: Vec<f64> = (0..n * r).map(|_| rng.normal()).collect();
        let b: Vec<f64> = (0..r * d).map(|_| rng.normal()).collect();
        let x = matmul(&z, &b, n, r, d).unwrap();
        let mut g = vec![0f64; d * d];
        for i in 0..n {
            for p in 0..d {
                for q in 0..d {
                    g[p * d + q] += x[i * d + p] * x[i * d + q];
                }
            }
        }
        let u0 = null_space_basis(&g, d, 1e-9).unwrap();
        assert_eq!(u0.len(), d - r);
        let xnorm = x.iter().map(|v| v * v).sum::<f64>().sqrt();
        for u in &u0 {
            // X u ≈ 0.
            let xu: f64 = (0..n)
                .map(|i| (0..d).map(|j| x[i * d + j] * u[j]).sum::<f64>().powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(xu < 1e-9 * xnorm, "{xu}");
        }
        let p: Vec<f64> = (0..d * d)
            .map(|i| u0.iter().map(|u| u[i / d] * u[i % d]).sum())
            .collect();
        let pp = matmul(&p, &p, d, d, d).unwrap();
        for i in 0..d {
            for j in 0..d {
                assert!((p[i * d + j] - p[j * d + i]).abs() < 1e-12);
                assert!((pp[i * d + j] - p[i * d + j]).abs() < 1e-10);
            }
        }
    }
}
