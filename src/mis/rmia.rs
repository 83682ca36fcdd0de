//! The robust membership-inference attack (RMIA, Zarifzadeh et al. 2024): pairwise likelihood
//! ratios of each example against population samples.

use crate::error::{Error, Result};
use crate::mis::reference::{ReferenceLosses, check_losses};

/// RMIA. With `p(x | θ) = exp(−loss)` the probability a model gives the true label,
///
/// - `p(x)` = the mean of `p(x | θ_k)` over the reference models (online: all of them, so on
///   average half trained on `x`; offline: only those that did not, corrected by
///   `p(x) ≈ ½((1 + a)·p_OUT(x) + (1 − a))` as in the paper);
/// - `LR(x, z) = [p(x | θ) / p(x)] / [p(z | θ) / p(z)]` for population samples `z`;
/// - score(x) = the fraction of population samples with `LR(x, z) ≥ γ`.
///
/// Scores are "higher = more likely a member", in `[0, 1]`; turn them into a
/// [`MembershipSample`](crate::MembershipSample) with
/// [`sample_from_scores`](crate::mis::sample_from_scores). Ratios are compared in log space;
/// sorting the population once makes scoring `O((n + m) log m)`.
///
/// ```
/// use quantlens::mis::{ReferenceLosses, Rmia};
/// let refs = ReferenceLosses::offline(vec![vec![1.0, 1.0]])?;         // one reference model
/// let pop_refs = ReferenceLosses::offline(vec![vec![1.0, 1.0, 1.0]])?;
/// let scores = Rmia::offline(1.0).scores(&[0.1, 3.0], &refs, &[1.0, 0.9, 1.1], &pop_refs)?;
/// assert_eq!(scores, vec![1.0, 0.0]); // fits x₀ far better than the population; x₁ worse
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rmia {
    gamma: f64,
    /// `Some(a)`: offline, with the paper's linear correction of `p_OUT`.
    offline_a: Option<f64>,
}

impl Rmia {
    /// Online RMIA (reference models trained with and without each example), `γ = 1`.
    pub fn online() -> Self {
        Rmia {
            gamma: 1.0,
            offline_a: None,
        }
    }

    /// Offline RMIA (only OUT reference models) with correction parameter `a ∈ [0, 1]`
    /// (`a = 1` trusts `p_OUT` as it is; the paper tunes `a` on one reference model, and
    /// values around 0.3–0.6 are typical).
    pub fn offline(a: f64) -> Self {
        Rmia {
            gamma: 1.0,
            offline_a: Some(a),
        }
    }

    /// The likelihood-ratio threshold `γ > 0` (default 1).
    pub fn gamma(mut self, gamma: f64) -> Self {
        self.gamma = gamma;
        self
    }

    /// A stable name for reports, e.g. `rmia-offline-a0.5-g1`.
    pub fn name(&self) -> String {
        match self.offline_a {
            Some(a) => format!("rmia-offline-a{a}-g{}", self.gamma),
            None => format!("rmia-online-g{}", self.gamma),
        }
    }

    /// Scores of the audited examples.
    ///
    /// `losses` / `refs`: target- and reference-model losses on the audited examples;
    /// `population` / `population_refs`: the same on population samples, which no model
    /// trained on.
    pub fn scores(
        &self,
        losses: &[f64],
        refs: &ReferenceLosses,
        population: &[f64],
        population_refs: &ReferenceLosses,
    ) -> Result<Vec<f64>> {
        if !(self.gamma.is_finite() && self.gamma > 0.0) {
            return Err(Error::InvalidParameter {
                name: "gamma",
                reason: format!("must be finite and > 0, got {}", self.gamma),
            });
        }
        if let Some(a) = self.offline_a
            && !(0.0..=1.0).contains(&a)
        {
            return Err(Error::InvalidParameter {
                name: "a",
                reason: format!("offline correction must lie in [0, 1], got {a}"),
            });
        }
        check_losses("target-model losses", losses)?;
        check_losses("target-model population losses", population)?;
        for (what, l, r) in [
            ("audited examples", losses, refs),
            ("population samples", population, population_refs),
        ] {
            if l.len() != r.examples() {
                return Err(Error::ShapeMismatch(format!(
                    "{}: {} target losses but reference losses for {} examples",
                    what,
                    l.len(),
                    r.examples()
                )));
            }
        }
        let mut log_ratio_z: Vec<f64> = population
            .iter()
            .enumerate()
            .map(|(j, &l)| Ok(-l - self.log_marginal(population_refs, j)?))
            .collect::<Result<_>>()?;
        log_ratio_z.sort_by(f64::total_cmp);
        let m = log_ratio_z.len() as f64;
        let log_gamma = self.gamma.ln();
        losses
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                let log_ratio_x = -l - self.log_marginal(refs, i)?;
                // LR(x, z) ≥ γ  ⇔  log ratio_z ≤ log ratio_x − log γ.
                let bound = log_ratio_x - log_gamma;
                let below = log_ratio_z.partition_point(|&r| r <= bound);
                Ok(below as f64 / m)
            })
            .collect()
    }

    /// `log p(x_i)` from the reference models.
    fn log_marginal(&self, refs: &ReferenceLosses, i: usize) -> Result<f64> {
        let models =
            (0..refs.models()).filter(|&k| self.offline_a.is_none() || !refs.trained_on(k, i));
        let (mut sum, mut count) = (0.0, 0usize);
        for k in models {
            sum += (-refs.loss(k, i)).exp();
            count += 1;
        }
        if count == 0 {
            return Err(Error::TooFewSamples {
                what: "OUT reference models for an example (offline RMIA)",
                needed: 1,
                got: 0,
            });
        }
        let mean = sum / count as f64;
        let p = match self.offline_a {
            Some(a) => 0.5 * ((1.0 + a) * mean + (1.0 - a)),
            None => mean,
        };
        // A marginal of exactly 0 (every reference gives the label probability 0 in f64) would
        // make the ratio infinite; the smallest positive value keeps the order meaningful.
        Ok(p.max(f64::MIN_POSITIVE).ln())
    }
}
