//! Membership-inference security: from member / non-member scores to MIS = 1 − advantage.

mod indicator;
mod lira;
mod reference;
mod rmia;

pub use indicator::{IndicatorEstimate, MisIndicator};
pub use lira::{Lira, LiraStatistic, LiraVariant};
pub use reference::{ReferenceLosses, sample_from_scores};
pub use rmia::Rmia;

use crate::error::{Error, Result};

/// Per-sample scores of members (trained on) and non-members (never seen), where a *lower*
/// score means "more likely a member" (a loss).
///
/// Built only through [`MembershipSample::new`], which refuses empty sides and non-finite
/// scores, so every estimator can rely on clean input.
#[derive(Debug, Clone, PartialEq)]
pub struct MembershipSample {
    members: Vec<f64>,
    non_members: Vec<f64>,
}

impl MembershipSample {
    /// Validate and wrap the two score lists.
    ///
    /// ```
    /// use quantlens::MembershipSample;
    /// assert!(MembershipSample::new(vec![0.1, 0.2], vec![0.9]).is_ok());
    /// assert!(MembershipSample::new(vec![], vec![0.9]).is_err());
    /// assert!(MembershipSample::new(vec![f64::NAN], vec![0.9]).is_err());
    /// ```
    pub fn new(members: Vec<f64>, non_members: Vec<f64>) -> Result<Self> {
        for (what, v) in [
            ("member scores", &members),
            ("non-member scores", &non_members),
        ] {
            if v.is_empty() {
                return Err(Error::TooFewSamples {
                    what,
                    needed: 1,
                    got: 0,
                });
            }
            if let Some(first_index) = v.iter().position(|x| !x.is_finite()) {
                return Err(Error::NonFinite {
                    what,
                    count: v.iter().filter(|x| !x.is_finite()).count(),
                    first_index,
                });
            }
        }
        Ok(MembershipSample {
            members,
            non_members,
        })
    }
    /// Scores of the members.
    pub fn members(&self) -> &[f64] {
        &self.members
    }
    /// Scores of the non-members.
    pub fn non_members(&self) -> &[f64] {
        &self.non_members
    }
}

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

/// What an estimator concludes from a [`MembershipSample`].
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
}

impl MisEstimate {
    /// An estimate from an advantage (MIS = 1 − advantage) and the sample it came from.
    pub fn from_advantage(advantage: f64, ci: Option<Interval>, sample: &MembershipSample) -> Self {
        MisEstimate {
            mis: 1.0 - advantage,
            advantage,
            ci,
            n_members: sample.members.len(),
            n_non_members: sample.non_members.len(),
        }
    }
}

/// Estimates membership-inference security from member and non-member scores.
///
/// ```
/// use quantlens::{MembershipSample, MisEstimate, MisEstimator, Result};
///
/// /// Advantage of the attack "member iff score < t" at one fixed threshold.
/// struct FixedThreshold(f64);
/// impl MisEstimator for FixedThreshold {
///     fn name(&self) -> String { format!("threshold-{}", self.0) }
///     fn estimate(&self, s: &MembershipSample) -> Result<MisEstimate> {
///         let rate = |v: &[f64]| v.iter().filter(|&&x| x < self.0).count() as f64 / v.len() as f64;
///         let adv = rate(s.members()) - rate(s.non_members());
///         Ok(MisEstimate::from_advantage(adv, None, s))
///     }
/// }
///
/// let s = MembershipSample::new(vec![0.1, 0.2, 0.9], vec![0.8, 1.2])?;
/// let e = FixedThreshold(0.5).estimate(&s)?;
/// assert!((e.mis - 1.0 / 3.0).abs() < 1e-12); // TPR 2/3, FPR 0
/// # Ok::<(), quantlens::Error>(())
/// ```
pub trait MisEstimator: Send + Sync {
    /// A stable name for reports.
    fn name(&self) -> String;

    /// Estimate MIS (and the advantage behind it) from a sample.
    fn estimate(&self, sample: &MembershipSample) -> Result<MisEstimate>;
}
