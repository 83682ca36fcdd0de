//! **Experimental.** The membership-inference-security indicator of quantized models after
//! Aubinais, Formont, Piantanida & Gassiat (AISTATS 2026), *as reconstructed* in the project's
//! paper notes: the published formula was not available to us.
//!
//! Reconstruction: let `q*` be the quantized model a procedure selects and `q_k` its
//! competitors (e.g. the same model with the weights nearest a rounding boundary rounded the
//! other way). With `d_k(z) = ℓ(q_k, z) − ℓ(q*, z)`, `δ_k = E d_k(Z) > 0` and
//! `σ_k² = Var d_k(Z)`, the rate is `r = min_k δ_k² / (2σ_k²)` — the Gaussian approximation to
//! the rate at which the empirical loss of `n` training samples ranks a competitor ahead of
//! `q*` — and `MIS ≳ 1 − exp(−n·r)`. Larger `r` means a safer quantizer.
//!
//! Validated (tests) on the quantized empirical mean, where `r = h²/8` exactly and the true
//! advantage, computed by quadrature, decays at that rate.

use crate::error::{Error, Result};
use crate::mis::Interval;
use crate::rng::SplitMix64;

/// The indicator estimated from held-out losses.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct IndicatorEstimate {
    /// `r̂ = min_k δ̂_k² / (2σ̂_k²)`; 0 when some competitor is not worse on average
    /// (`δ̂_k ≤ 0`: the selection is not stable, no exponential protection).
    pub rate: f64,
    /// `1 − exp(−n_train · r̂)`: the indicator's MIS level at the training-set size.
    pub mis: f64,
    /// Training-set size `n` used in `mis`.
    pub n_train: usize,
    /// Index of the competitor attaining the minimum.
    pub binding_competitor: usize,
    /// `(δ̂_k, σ̂_k²)` per competitor.
    pub gaps: Vec<(f64, f64)>,
    /// Percentile bootstrap interval of `rate` (resampling the held-out examples).
    pub ci: Option<Interval>,
    /// Held-out examples behind the estimate.
    pub n_samples: usize,
}

/// Estimates the indicator from per-example losses of the selected quantized model and of its
/// competitors on held-out data (examples not used for training).
///
/// ```
/// use quantlens::mis::MisIndicator;
/// // Squared loss around 0 with a competitor at h = 0.5 (quantized empirical mean):
/// let z: Vec<f64> = (0..2000).map(|i| ((i as f64 + 0.5) / 2000.0 - 0.5) * 6.0).collect();
/// let selected: Vec<f64> = z.iter().map(|z| z * z).collect();
/// let competitor: Vec<f64> = z.iter().map(|z| (0.5 - z).powi(2)).collect();
/// let est = MisIndicator::new(100).estimate(&selected, &[competitor])?;
/// assert!(est.rate > 0.0 && est.mis > 0.5);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MisIndicator {
    n_train: usize,
    resamples: usize,
    level: f64,
    seed: u64,
}

impl MisIndicator {
    /// For a model trained on `n_train` examples; no bootstrap interval.
    pub fn new(n_train: usize) -> Self {
        MisIndicator {
            n_train,
            resamples: 0,
            level: 0.95,
            seed: 0,
        }
    }

    /// Add a seeded percentile-bootstrap interval of the rate.
    pub fn bootstrap(mut self, resamples: usize, level: f64, seed: u64) -> Self {
        self.resamples = resamples;
        self.level = level;
        self.seed = seed;
        self
    }

    /// Estimate from `selected[i] = ℓ(q*, z_i)` and `competitors[k][i] = ℓ(q_k, z_i)`.
    pub fn estimate(
        &self,
        selected: &[f64],
        competitors: &[Vec<f64>],
    ) -> Result<IndicatorEstimate> {
        let n = selected.len();
        if n < 2 {
            return Err(Error::TooFewSamples {
                what: "held-out losses for the MIS indicator",
                needed: 2,
                got: n,
            });
        }
        if competitors.is_empty() {
            return Err(Error::TooFewSamples {
                what: "competitors for the MIS indicator",
                needed: 1,
                got: 0,
            });
        }
        if self.n_train == 0 {
            return Err(Error::InvalidParameter {
                name: "n_train",
                reason: "must be at least 1".into(),
            });
        }
        if self.resamples > 0 && !(self.level > 0.0 && self.level < 1.0) {
            return Err(Error::InvalidParameter {
                name: "level",
                reason: format!("must lie in (0, 1), got {}", self.level),
            });
        }
        for (what, v) in std::iter::once(("selected-model losses", selected)).chain(
            competitors
                .iter()
                .map(|c| ("competitor losses", c.as_slice())),
        ) {
            if v.len() != n {
                return Err(Error::ShapeMismatch(format!(
                    "{what}: {} values, the selected model has {n}",
                    v.len()
                )));
            }
            if let Some(first_index) = v.iter().position(|x| !x.is_finite()) {
                return Err(Error::NonFinite {
                    what,
                    count: v.iter().filter(|x| !x.is_finite()).count(),
                    first_index,
                });
            }
        }
        let diffs: Vec<Vec<f64>> = competitors
            .iter()
            .map(|c| c.iter().zip(selected).map(|(a, b)| a - b).collect())
            .collect();
        let all: Vec<usize> = (0..n).collect();
        let (rate, binding, gaps) = rate_of(&diffs, &all);
        let ci = if self.resamples > 0 {
            let mut rng = SplitMix64::new(self.seed);
            let mut rates: Vec<f64> = (0..self.resamples)
                .map(|_| {
                    let idx: Vec<usize> = (0..n)
                        .map(|_| (rng.next_u64() % n as u64) as usize)
                        .collect();
                    rate_of(&diffs, &idx).0
                })
                .collect();
            rates.sort_by(f64::total_cmp);
            let q =
                |p: f64| rates[((p * rates.len() as f64).floor() as usize).min(rates.len() - 1)];
            let tail = (1.0 - self.level) / 2.0;
            Some(Interval {
                lower: q(tail),
                upper: q(1.0 - tail),
                level: self.level,
            })
        } else {
            None
        };
        Ok(IndicatorEstimate {
            rate,
            mis: -(-(self.n_train as f64) * rate).exp_m1(),
            n_train: self.n_train,
            binding_competitor: binding,
            gaps,
            ci,
            n_samples: n,
        })
    }
}

/// `(min_k δ_k²/(2σ_k²), argmin, (δ_k, σ_k²))` over the examples `idx`.
fn rate_of(diffs: &[Vec<f64>], idx: &[usize]) -> (f64, usize, Vec<(f64, f64)>) {
    let m = idx.len() as f64;
    let mut best = (f64::INFINITY, 0usize);
    let mut gaps = Vec::with_capacity(diffs.len());
    for (k, d) in diffs.iter().enumerate() {
        let mean = idx.iter().map(|&i| d[i]).sum::<f64>() / m;
        let var = idx.iter().map(|&i| (d[i] - mean).powi(2)).sum::<f64>() / (m - 1.0);
        let r = if mean <= 0.0 {
            0.0
        } else if var <= 0.0 {
            f64::INFINITY
        } else {
            mean * mean / (2.0 * var)
        };
        if r < best.0 {
            best = (r, k);
        }
        gaps.push((mean, var));
    }
    (best.0, best.1, gaps)
}
