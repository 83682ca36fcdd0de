//! Clipping the largest magnitudes: `x′ = clamp(x, −c, c)` with `c` the (1 − p) quantile of
//! |x| — the outlier-removal perturbation (Δ_C) of the perturbation-lens study.

use candle_core::Tensor;

use crate::error::Result;
use crate::perturb::Perturbation;
use crate::perturb::values;

/// Clamp a tensor to `[−c, c]`, with `c` chosen so that a fraction `p` of its entries lie above
/// it.
///
/// With `N` elements and `a₍₁₎ ≤ … ≤ a₍N₎` the sorted |x|, let `k = ⌊p·N⌋` (p·N taken with a
/// few ulps of slack, so 0.29 · 100 counts as 29) and `c = a₍N−k₎` (`c = 0` when `k = N`).
/// Exactly the entries with |x| > c change, each to ±c: `k` of them when |x| has no tie at
/// `c`, fewer when some of the `k` largest equal `c` (ties are kept, not broken arbitrarily).
/// Deterministic: the seed is ignored. Every output value is an input value or ±c, so the
/// result is exact in f32, f16 and bf16.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::perturb::Clip;
/// use quantlens::Perturbation;
///
/// let x = Tensor::new(&[1f32, -8.0, 3.0, 2.0, -5.0], &Device::Cpu)?;
/// let clip = Clip::fraction(0.4); // the 2 largest of 5 magnitudes
/// assert_eq!(clip.threshold(&x)?, 3.0);
/// assert_eq!(clip.apply(&x, 0)?.to_vec1::<f32>()?, vec![1.0, -3.0, 3.0, 2.0, -3.0]);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clip {
    fraction: f64,
}

impl Clip {
    /// Clip the fraction `p` ∈ [0, 1] of largest magnitudes (checked on use); the study's
    /// damaging setting is about `0.001`.
    pub fn fraction(p: f64) -> Self {
        Clip { fraction: p }
    }

    /// The fraction p.
    pub fn p(&self) -> f64 {
        self.fraction
    }

    /// How many of `n` elements lie above the threshold when |x| has no ties: `⌊p·n⌋`.
    pub fn count(&self, n: usize) -> Result<usize> {
        let p = values::probability("clip fraction", self.fraction)?;
        let k = (p * n as f64 * (1.0 + 4.0 * f64::EPSILON)).floor() as usize;
        Ok(k.min(n))
    }

    /// The clipping threshold c for `x`.
    pub fn threshold(&self, x: &Tensor) -> Result<f64> {
        let v = values::read(x, "clipped tensor")?;
        self.threshold_of(&v)
    }

    fn threshold_of(&self, v: &[f64]) -> Result<f64> {
        let n = v.len();
        let k = self.count(n)?;
        if k == n {
            return Ok(0.0);
        }
        let mut mags: Vec<f64> = v.iter().map(|x| x.abs()).collect();
        // The (N − k)-th smallest, 1-based: index N − k − 1.
        let (_, c, _) = mags.select_nth_unstable_by(n - k - 1, f64::total_cmp);
        Ok(*c)
    }
}

impl Perturbation for Clip {
    /// `clip-p{p}`.
    fn name(&self) -> String {
        format!("clip-p{}", self.fraction)
    }

    fn apply(&self, x: &Tensor, _seed: u64) -> Result<Tensor> {
        let v = values::read(x, "clipped tensor")?;
        let c = self.threshold_of(&v)?;
        let out: Vec<f64> = v.iter().map(|&a| a.clamp(-c, c)).collect();
        values::write(&out, x, "clipped tensor")
    }
}
