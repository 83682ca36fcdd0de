//! [`Interval`], the distribution-free DKW band for the advantage, and the parameter checks
//! shared by every interval.

use crate::error::{Error, Result};

/// A two-sided confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Lower end.
    pub lower: f64,
    /// Upper end.
    pub upper: f64,
    /// Nominal coverage, e.g. 0.95.
    pub level: f64,
}

impl Interval {
    /// Whether `x` lies in the closed interval.
    pub fn contains(&self, x: f64) -> bool {
        self.lower <= x && x <= self.upper
    }

    /// `upper − lower`.
    pub fn width(&self) -> f64 {
        self.upper - self.lower
    }

    /// Whether the two closed intervals have no point in common.
    pub fn separated_from(&self, other: &Interval) -> bool {
        self.upper < other.lower || other.upper < self.lower
    }

    /// The interval of `1 − x` when `self` is the interval of `x` (advantage ↔ MIS).
    pub fn one_minus(&self) -> Interval {
        Interval {
            lower: 1.0 - self.upper,
            upper: 1.0 - self.lower,
            level: self.level,
        }
    }
}

/// How the confidence interval of an estimate was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CiMethod {
    /// Percentile bootstrap (see [`Bootstrap`](super::Bootstrap)).
    PercentileBootstrap {
        /// Number of resamples.
        resamples: usize,
        /// Seed of the resampling.
        seed: u64,
    },
    /// Basic (reverse-percentile) bootstrap `[2θ̂ − q_hi, 2θ̂ − q_lo]`, which removes the
    /// first-order bias of a statistic such as a maximum over thresholds (see
    /// [`Replicates::basic_interval`](super::Replicates::basic_interval)).
    BasicBootstrap {
        /// Number of resamples.
        resamples: usize,
        /// Seed of the resampling.
        seed: u64,
    },
    /// The distribution-free Dvoretzky–Kiefer–Wolfowitz band (see [`dkw_epsilon`]).
    Dkw,
}

/// Refuse a confidence level outside the open interval (0, 1).
pub(crate) fn check_level(level: f64) -> Result<()> {
    if level.is_finite() && level > 0.0 && level < 1.0 {
        Ok(())
    } else {
        Err(Error::InvalidParameter {
            name: "level",
            reason: format!("a confidence level must lie strictly between 0 and 1, got {level}"),
        })
    }
}

/// Refuse a false-positive rate outside the open interval (0, 1).
pub(crate) fn check_fpr(fpr: f64) -> Result<()> {
    if fpr.is_finite() && fpr > 0.0 && fpr < 1.0 {
        Ok(())
    } else {
        Err(Error::InvalidParameter {
            name: "fpr",
            reason: format!("a false-positive rate must lie strictly between 0 and 1, got {fpr}"),
        })
    }
}

/// Half-width ε of the DKW band for the best-threshold advantage at miss probability
/// `alpha = 1 − level`:
///
/// ε = √(ln(4/α) / (2 n_m)) + √(ln(4/α) / (2 n_n)).
///
/// Each empirical CDF is within √(ln(4/α)/(2n)) of its truth, uniformly over thresholds, with
/// probability ≥ 1 − α/2 (DKW with Massart's tight constant); the union bound over the two
/// sides gives 1 − α, and `sup_τ [F_m − F_n]` then moves by at most the sum. The band holds
/// for every distribution and every `n` — no asymptotics — at the price of being wider than a
/// bootstrap interval.
///
/// ```
/// use quantlens::mis::dkw_epsilon;
/// let eps = dkw_epsilon(10_000, 10_000, 0.95)?;
/// let want = 2.0 * ((4.0f64 / 0.05).ln() / 20_000.0).sqrt();
/// assert!((eps - want).abs() < 1e-15);
/// # Ok::<(), quantlens::Error>(())
/// ```
pub fn dkw_epsilon(n_members: usize, n_non_members: usize, level: f64) -> Result<f64> {
    check_level(level)?;
    for (what, n) in [
        ("member scores", n_members),
        ("non-member scores", n_non_members),
    ] {
        if n == 0 {
            return Err(Error::TooFewSamples {
                what,
                needed: 1,
                got: 0,
            });
        }
    }
    let log_term = (4.0 / (1.0 - level)).ln();
    let side = |n: usize| (log_term / (2.0 * n as f64)).sqrt();
    Ok(side(n_members) + side(n_non_members))
}

/// The DKW interval `[advantage − ε, advantage + ε] ∩ [0, 1]` of a best-threshold advantage
/// (see [`dkw_epsilon`]).
pub fn dkw_interval(
    advantage: f64,
    n_members: usize,
    n_non_members: usize,
    level: f64,
) -> Result<Interval> {
    if !advantage.is_finite() {
        return Err(Error::InvalidParameter {
            name: "advantage",
            reason: format!("must be finite, got {advantage}"),
        });
    }
    let eps = dkw_epsilon(n_members, n_non_members, level)?;
    Ok(Interval {
        lower: (advantage - eps).clamp(0.0, 1.0),
        upper: (advantage + eps).clamp(0.0, 1.0),
        level,
    })
}

/// The percentile interval of bootstrap replicates: the `(1 − level)/2` and `(1 + level)/2`
/// quantiles, each interpolated linearly between order statistics (Hyndman–Fan type 7, the
/// default of R and NumPy). `values` is sorted in place; it must not be empty.
pub(crate) fn percentile_interval(values: &mut [f64], level: f64) -> Interval {
    values.sort_unstable_by(f64::total_cmp);
    Interval {
        lower: quantile_sorted(values, (1.0 - level) / 2.0),
        upper: quantile_sorted(values, (1.0 + level) / 2.0),
        level,
    }
}

/// The basic (reverse-percentile) interval `[2θ̂ − q_hi, 2θ̂ − q_lo]` of bootstrap replicates
/// around the full-sample estimate `estimate`, with the quantiles of [`percentile_interval`].
pub(crate) fn basic_interval(values: &mut [f64], estimate: f64, level: f64) -> Interval {
    let p = percentile_interval(values, level);
    Interval {
        lower: 2.0 * estimate - p.upper,
        upper: 2.0 * estimate - p.lower,
        level,
    }
}

/// Type-7 quantile of sorted, non-empty data.
pub(crate) fn quantile_sorted(sorted: &[f64], p: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * p.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type7_quantiles_match_hand_computed_values() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile_sorted(&v, 0.0), 1.0);
        assert_eq!(quantile_sorted(&v, 1.0), 5.0);
        assert_eq!(quantile_sorted(&v, 0.5), 3.0);
        assert!((quantile_sorted(&v, 0.1) - 1.4).abs() < 1e-15);
        assert_eq!(quantile_sorted(&[7.0], 0.3), 7.0);
    }

    #[test]
    fn dkw_interval_is_clipped_and_checks_its_inputs() {
        let i = dkw_interval(0.01, 100, 100, 0.95).unwrap();
        assert_eq!(i.lower, 0.0);
        assert!(i.upper > 0.01);
        assert!(dkw_epsilon(0, 5, 0.95).is_err());
        assert!(dkw_epsilon(5, 5, 1.0).is_err());
        assert!(dkw_interval(f64::NAN, 5, 5, 0.9).is_err());
    }
}
