//! [`MisEstimate`]: what an estimator reports, with the figures a privacy audit prints.

use std::fmt;

use super::interval::{CiMethod, Interval};
use super::sample::MembershipSample;

/// A figure with its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointEstimate {
    /// The estimate from the full sample.
    pub value: f64,
    /// Its confidence interval, when one was computed.
    pub ci: Option<Interval>,
}

/// TPR of the loss-threshold attack at a target FPR (conservative rule, see
/// [`Roc`](super::Roc)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TprAtFpr {
    /// The FPR asked for, e.g. 0.001.
    pub target_fpr: f64,
    /// The TPR attained.
    pub tpr: f64,
    /// The empirical FPR of the chosen threshold (at most `target_fpr`).
    pub fpr: f64,
    /// The chosen threshold ("member iff score ≤ threshold"; `−∞` flags nobody).
    pub threshold: f64,
    /// Confidence interval of `tpr`.
    pub ci: Option<Interval>,
}

/// What an estimator concludes from a [`MembershipSample`].
///
/// `mis`, `advantage`, `ci` and the sample sizes are always there; the attack-specific
/// figures (`threshold`, `auc`, `tpr_at_fpr`) are filled by the estimators that have them.
/// `Display` prints one line for a report:
///
/// ```
/// use quantlens::MembershipSample;
/// use quantlens::mis::{Bootstrap, LossThreshold, MisEstimator};
///
/// let members: Vec<f64> = (0..1000).map(|i| (i as f64 * 0.618).fract()).collect();
/// let non_members: Vec<f64> = (0..1000).map(|i| (i as f64 * 0.618).fract() + 0.2).collect();
/// let s = MembershipSample::new(members, non_members)?;
/// let est = LossThreshold::new()
///     .with_fprs(&[0.01])
///     .with_bootstrap(Bootstrap::new(200, 0.95, 1)?)
///     .estimate(&s)?;
/// println!("{est}");
/// // MIS 0.798 [0.795, 0.849] (95 % basic bootstrap, 200 resamples) | advantage 0.202
/// // | AUC 0.680 [0.658, 0.699] | TPR@1% 0.210 [0.187, 0.232] | n = 1000 members, 1000 non-members
/// assert!((est.advantage - 0.2).abs() < 0.01);
/// assert!(est.ci.unwrap().contains(est.mis));
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MisEstimate {
    /// Membership-inference security, `1 − advantage`.
    pub mis: f64,
    /// The attack's advantage, `TPR − FPR` at its best operating point.
    pub advantage: f64,
    /// Confidence interval of `mis`, when the estimator provides one.
    pub ci: Option<Interval>,
    /// Number of member scores behind the estimate.
    pub n_members: usize,
    /// Number of non-member scores behind the estimate.
    pub n_non_members: usize,
    /// How `ci` was obtained.
    pub ci_method: Option<CiMethod>,
    /// The threshold of the best operating point, for threshold attacks ("member iff
    /// score ≤ threshold"; `−∞` when no threshold beats flagging nobody).
    pub threshold: Option<f64>,
    /// Area under the ROC, for attacks that have one.
    pub auc: Option<PointEstimate>,
    /// TPR at the requested low FPRs, in the order asked for.
    pub tpr_at_fpr: Vec<TprAtFpr>,
}

impl MisEstimate {
    /// An estimate from an advantage (MIS = 1 − advantage) and the sample it came from; `ci` is
    /// the interval of MIS. The optional figures start empty.
    pub fn from_advantage(advantage: f64, ci: Option<Interval>, sample: &MembershipSample) -> Self {
        MisEstimate::from_counts(advantage, ci, sample.n_members(), sample.n_non_members())
    }

    /// As [`MisEstimate::from_advantage`], from the sample sizes alone.
    pub fn from_counts(
        advantage: f64,
        ci: Option<Interval>,
        n_members: usize,
        n_non_members: usize,
    ) -> Self {
        MisEstimate {
            mis: 1.0 - advantage,
            advantage,
            ci,
            n_members,
            n_non_members,
            ci_method: None,
            threshold: None,
            auc: None,
            tpr_at_fpr: Vec::new(),
        }
    }

    /// Confidence interval of the advantage (the MIS interval mirrored).
    pub fn advantage_ci(&self) -> Option<Interval> {
        self.ci.map(|i| i.one_minus())
    }

    /// The TPR entry for a target FPR, compared exactly as given to the estimator.
    pub fn tpr_at(&self, target_fpr: f64) -> Option<&TprAtFpr> {
        self.tpr_at_fpr.iter().find(|t| t.target_fpr == target_fpr)
    }
}

fn write_ci(f: &mut fmt::Formatter<'_>, ci: Option<Interval>) -> fmt::Result {
    match ci {
        Some(i) => write!(f, " [{:.3}, {:.3}]", i.lower, i.upper),
        None => Ok(()),
    }
}

impl fmt::Display for MisEstimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MIS {:.3}", self.mis)?;
        write_ci(f, self.ci)?;
        if let Some(ci) = self.ci {
            let pct = ci.level * 100.0;
            match self.ci_method {
                Some(CiMethod::PercentileBootstrap { resamples, .. }) => {
                    write!(f, " ({pct} % percentile bootstrap, {resamples} resamples)")?
                }
                Some(CiMethod::BasicBootstrap { resamples, .. }) => {
                    write!(f, " ({pct} % basic bootstrap, {resamples} resamples)")?
                }
                Some(CiMethod::Dkw) => write!(f, " ({pct} % DKW)")?,
                None => write!(f, " ({pct} %)")?,
            }
        }
        write!(f, " | advantage {:.3}", self.advantage)?;
        if let Some(auc) = self.auc {
            write!(f, " | AUC {:.3}", auc.value)?;
            write_ci(f, auc.ci)?;
        }
        for t in &self.tpr_at_fpr {
            // Rounded to 9 digits so that 0.001 prints as 0.1 %, not 0.09999999999999999 %.
            let pct = (t.target_fpr * 100.0 * 1e9).round() / 1e9;
            write!(f, " | TPR@{pct}% {:.3}", t.tpr)?;
            write_ci(f, t.ci)?;
        }
        write!(
            f,
            " | n = {} members, {} non-members",
            self.n_members, self.n_non_members
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_interval_and_the_sizes() {
        let mut e = MisEstimate::from_counts(
            0.25,
            Some(Interval {
                lower: 0.7,
                upper: 0.8,
                level: 0.95,
            }),
            10,
            20,
        );
        e.ci_method = Some(CiMethod::Dkw);
        let s = e.to_string();
        assert_eq!(
            s,
            "MIS 0.750 [0.700, 0.800] (95 % DKW) | advantage 0.250 | n = 10 members, 20 non-members"
        );
        let a = e.advantage_ci().unwrap();
        assert!((a.lower - 0.2).abs() < 1e-15 && (a.upper - 0.3).abs() < 1e-15);
    }
}
