//! Differential-privacy ε lower bounds from an attack's TPR and FPR, with Clopper–Pearson
//! intervals, as privacy auditors report them.
//!
//! If training is (ε, δ)-DP, every membership test satisfies `TPR ≤ e^ε · FPR + δ` and, on the
//! complementary decision, `1 − FPR ≤ e^ε · (1 − TPR) + δ` (Kairouz, Oh & Viswanath 2015). An
//! observed attack therefore proves
//!
//! ε ≥ max( ln((TPR_lo − δ) / FPR_hi), ln((1 − FPR_hi − δ) / (1 − TPR_lo)), 0 ),
//!
//! where `TPR_lo` and `FPR_hi` are the lower and upper ends of two-sided Clopper–Pearson
//! intervals at `level`. Only one end of each interval is used, so each fails with
//! probability at most (1 − level)/2 and the bound holds with probability at least `level`
//! (union bound) — **for a threshold fixed in advance**. [`DpAudit::best`] searches the
//! whole ROC on the same data and is optimistic; for an audit-grade figure choose the
//! threshold on held-out scores and use [`DpAudit::at_threshold`].

use crate::error::{Error, Result};

use super::interval::{Interval, check_level};
use super::roc::{OperatingPoint, Roc};
use super::special::inv_reg_inc_beta;

/// Exact (Clopper–Pearson) two-sided interval for a binomial proportion: `successes` out of
/// `trials` at nominal coverage `level`.
///
/// The ends solve `P(Bin(trials, lo) ≥ successes) = (1 − level)/2` and
/// `P(Bin(trials, hi) ≤ successes) = (1 − level)/2` (with `lo = 0` at 0 successes and
/// `hi = 1` at `trials`), computed through the inverse regularized incomplete beta function.
///
/// ```
/// use quantlens::mis::clopper_pearson;
/// // 0 of 10: the upper end is 1 − (0.025)^(1/10).
/// let ci = clopper_pearson(0, 10, 0.95)?;
/// assert_eq!(ci.lower, 0.0);
/// assert!((ci.upper - (1.0 - 0.025f64.powf(0.1))).abs() < 1e-14);
/// # Ok::<(), quantlens::Error>(())
/// ```
pub fn clopper_pearson(successes: usize, trials: usize, level: f64) -> Result<Interval> {
    check_level(level)?;
    if trials == 0 {
        return Err(Error::TooFewSamples {
            what: "binomial trials",
            needed: 1,
            got: 0,
        });
    }
    if successes > trials {
        return Err(Error::InvalidParameter {
            name: "successes",
            reason: format!("{successes} successes out of {trials} trials"),
        });
    }
    let tail = (1.0 - level) / 2.0;
    let (x, n) = (successes as f64, trials as f64);
    let lower = if successes == 0 {
        0.0
    } else {
        inv_reg_inc_beta(x, n - x + 1.0, tail)
    };
    // Upper end through the mirrored lower end, so that a tail near 1 keeps its precision.
    let upper = if successes == trials {
        1.0
    } else {
        1.0 - inv_reg_inc_beta(n - x, x + 1.0, tail)
    };
    Ok(Interval {
        lower,
        upper,
        level,
    })
}

/// An ε lower bound and what it rests on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpsilonBound {
    /// The lower bound on ε (at least 0).
    pub epsilon: f64,
    /// The δ it is stated for.
    pub delta: f64,
    /// Confidence of the bound.
    pub level: f64,
    /// The attack's operating point.
    pub point: OperatingPoint,
    /// Clopper–Pearson interval of the TPR (its lower end is used).
    pub tpr_ci: Interval,
    /// Clopper–Pearson interval of the FPR (its upper end is used).
    pub fpr_ci: Interval,
}

/// Settings of a DP audit: the δ of the (ε, δ) guarantee to test and the confidence level.
///
/// ```
/// use quantlens::MembershipSample;
/// use quantlens::mis::{DpAudit, Roc};
///
/// // 900 of 1000 members below every non-member score.
/// let members: Vec<f64> = (0..1000).map(|i| if i < 900 { -1.0 } else { 1.0 }).collect();
/// let s = MembershipSample::new(members, vec![0.0; 1000])?;
/// let audit = DpAudit::new(1e-5, 0.95)?;
/// let b = audit.at_threshold(&Roc::new(&s), -1.0)?;
/// // TPR_lo ≈ 0.880, FPR_hi = 1 − 0.025^(1/1000) ≈ 0.00368.
/// assert!(b.epsilon > 5.4 && b.epsilon < 5.6);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpAudit {
    delta: f64,
    level: f64,
}

impl DpAudit {
    /// `delta` in [0, 1) and `level` in (0, 1).
    pub fn new(delta: f64, level: f64) -> Result<Self> {
        if !(delta.is_finite() && (0.0..1.0).contains(&delta)) {
            return Err(Error::InvalidParameter {
                name: "delta",
                reason: format!("must lie in [0, 1), got {delta}"),
            });
        }
        check_level(level)?;
        Ok(DpAudit { delta, level })
    }

    /// The bound at one operating point of an attack on `n_members` members and
    /// `n_non_members` non-members.
    pub fn at_point(
        &self,
        point: &OperatingPoint,
        n_members: usize,
        n_non_members: usize,
    ) -> Result<EpsilonBound> {
        let tpr_ci = clopper_pearson(point.true_positives, n_members, self.level)?;
        let fpr_ci = clopper_pearson(point.false_positives, n_non_members, self.level)?;
        let ln_ratio = |num: f64, den: f64| {
            if num > 0.0 && den > 0.0 {
                (num / den).ln()
            } else {
                0.0
            }
        };
        let direct = ln_ratio(tpr_ci.lower - self.delta, fpr_ci.upper);
        let complement = ln_ratio(1.0 - fpr_ci.upper - self.delta, 1.0 - tpr_ci.lower);
        Ok(EpsilonBound {
            epsilon: direct.max(complement).max(0.0),
            delta: self.delta,
            level: self.level,
            point: *point,
            tpr_ci,
            fpr_ci,
        })
    }

    /// The bound for the attack "member iff score ≤ `threshold`", the threshold fixed in
    /// advance (e.g. chosen on held-out scores).
    pub fn at_threshold(&self, roc: &Roc, threshold: f64) -> Result<EpsilonBound> {
        let p = roc.at_threshold(threshold)?;
        self.at_point(&p, roc.n_members(), roc.n_non_members())
    }

    /// The largest bound over every threshold of the ROC. **Optimistic**: the threshold is
    /// chosen on the same data, so the stated level does not hold for the maximum.
    ///
    /// Branch and bound over the ROC vertices: the bound with intervals never exceeds the
    /// plug-in one, so vertices are visited in decreasing plug-in order and the search stops
    /// once no plug-in value can beat the best bound found.
    pub fn best(&self, roc: &Roc) -> Result<EpsilonBound> {
        let (m, n) = (roc.n_members(), roc.n_non_members());
        let delta = self.delta;
        let plug_in = |p: &OperatingPoint| {
            let direct = if p.tpr > delta {
                ((p.tpr - delta) / p.fpr).ln()
            } else {
                0.0
            };
            let complement = if 1.0 - p.fpr - delta > 0.0 {
                ((1.0 - p.fpr - delta) / (1.0 - p.tpr)).ln()
            } else {
                0.0
            };
            // Division by zero gives +∞, which sorts first: right for a point with no false
            // positives.
            direct.max(complement).max(0.0)
        };
        let mut candidates: Vec<(f64, OperatingPoint)> =
            roc.curve().into_iter().map(|p| (plug_in(&p), p)).collect();
        // Stable sort: equal plug-in values keep ROC order, so the result is deterministic.
        candidates.sort_by(|x, y| y.0.total_cmp(&x.0));
        let mut best: Option<EpsilonBound> = None;
        for (upper, p) in candidates {
            if let Some(b) = &best
                && upper <= b.epsilon
            {
                break;
            }
            let b = self.at_point(&p, m, n)?;
            if best.as_ref().is_none_or(|cur| b.epsilon > cur.epsilon) {
                best = Some(b);
            }
        }
        // The curve always has its (0, 0) vertex, so there is a candidate.
        best.ok_or_else(|| Error::Unsupported("empty ROC".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mis::MembershipSample;

    #[test]
    fn best_is_the_maximum_over_all_vertices() {
        let mut g = crate::rng::SplitMix64::new(3);
        let a: Vec<f64> = (0..300).map(|_| (g.normal() * 3.0 - 2.0).round()).collect();
        let b: Vec<f64> = (0..400).map(|_| (g.normal() * 3.0).round()).collect();
        let roc = Roc::new(&MembershipSample::new(a, b).unwrap());
        for delta in [0.0, 1e-3, 0.1] {
            let audit = DpAudit::new(delta, 0.9).unwrap();
            let best = audit.best(&roc).unwrap();
            let brute = roc
                .curve()
                .iter()
                .map(|p| audit.at_point(p, 300, 400).unwrap().epsilon)
                .fold(0.0, f64::max);
            assert_eq!(best.epsilon, brute);
            assert!(best.epsilon > 0.0);
        }
    }

    #[test]
    fn bad_parameters_are_errors() {
        assert!(DpAudit::new(-0.1, 0.95).is_err());
        assert!(DpAudit::new(1.0, 0.95).is_err());
        assert!(DpAudit::new(0.0, 0.0).is_err());
        assert!(clopper_pearson(3, 2, 0.95).is_err());
        assert!(clopper_pearson(0, 0, 0.95).is_err());
    }
}
