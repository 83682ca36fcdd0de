//! Membership-inference security: from member / non-member scores to MIS = 1 − advantage.
//!
//! Scores are per-example losses under the released (e.g. quantized) model: *lower* means
//! "more likely a member". The **advantage** of an attack is `TPR − FPR`; the best attack's
//! advantage is the total variation between the two score laws, and **MIS = 1 − advantage**.
//! A concrete attack gives a lower bound on the advantage, hence an upper bound on MIS.
//!
//! | concept | type | file |
//! |---|---|---|
//! | validated scores | [`MembershipSample`] | `sample.rs` |
//! | ROC, AUC, best threshold, TPR at FPR (conservative rule) | [`Roc`], [`OperatingPoint`] | `roc.rs` |
//! | the loss-threshold attack as an estimator | [`LossThreshold`] | `threshold.rs` |
//! | percentile bootstrap without re-sorting | [`Bootstrap`], [`Statistic`] | `bootstrap.rs` |
//! | intervals, distribution-free DKW band | [`Interval`], [`dkw_interval`] | `interval.rs` |
//! | what an estimator reports | [`MisEstimate`] | `estimate.rs` |
//! | ε lower bound with Clopper–Pearson | [`DpAudit`], [`clopper_pearson`] | `dp.rs` |
//! | histogram total variation (upper-side view) | [`SmoothedTv`] | `tv.rs` |
//! | per-group (per-class) estimates | [`SlicedScores`] | `slice.rs` |
//! | ranking, paired test, Pareto front | [`rank_by_mis`], [`paired_bootstrap`], [`pareto_front`] | `rank.rs` |
//! | reference-model losses, scores → sample | [`ReferenceLosses`], [`sample_from_scores`] | `reference.rs` |
//! | likelihood-ratio attack (online / offline) | [`Lira`] | `lira.rs` |
//! | pairwise likelihood-ratio attack | [`Rmia`] | `rmia.rs` |
//! | **experimental** quantized-model MIS indicator | [`MisIndicator`] | `indicator.rs` |
//! | a game with known true MIS: the quantized mean | [`QuantizedMean`] | `synthetic.rs` |
//!
//! ```
//! use quantlens::MembershipSample;
//! use quantlens::mis::{Bootstrap, LossThreshold, MisEstimator};
//! use quantlens::rng::SplitMix64;
//!
//! // Members' losses sit 1 below the non-members' (both Gaussian, unit variance).
//! let mut g = SplitMix64::new(1);
//! let members: Vec<f64> = (0..5000).map(|_| g.normal() - 1.0).collect();
//! let non_members: Vec<f64> = (0..5000).map(|_| g.normal()).collect();
//! let sample = MembershipSample::new(members, non_members)?;
//!
//! let est = LossThreshold::new().with_bootstrap(Bootstrap::new(300, 0.95, 7)?).estimate(&sample)?;
//! println!("{est}");
//! // Truth: advantage 2Φ(½) − 1 = 0.383, AUC Φ(1/√2) = 0.760.
//! assert!((est.advantage - 0.383).abs() < 0.04);
//! assert!((est.auc.unwrap().value - 0.760).abs() < 0.02);
//! # Ok::<(), quantlens::Error>(())
//! ```

mod bootstrap;
mod dp;
mod estimate;
mod indicator;
mod interval;
mod lira;
mod rank;
mod reference;
mod rmia;
mod roc;
mod sample;
mod slice;
pub(crate) mod special;
mod synthetic;
mod threshold;
mod tv;

pub use bootstrap::{Bootstrap, Replicates, Statistic};
// The resampling machinery, shared with the explanation metrics' mean intervals.
pub(crate) use bootstrap::{draw_counts, par_resamples};
pub use dp::{DpAudit, EpsilonBound, clopper_pearson};
pub use estimate::{MisEstimate, PointEstimate, TprAtFpr};
pub use indicator::{IndicatorEstimate, MisIndicator};
pub(crate) use interval::percentile_interval;
pub use interval::{CiMethod, Interval, dkw_epsilon, dkw_interval};
pub use lira::{Lira, LiraStatistic, LiraVariant};
pub use rank::{PairedComparison, Ranked, paired_bootstrap, pareto_front, rank_by_mis};
pub use reference::{ReferenceLosses, sample_from_scores};
pub use rmia::Rmia;
pub use roc::{OperatingPoint, Roc};
pub use sample::MembershipSample;
pub(crate) use sample::check_scores;
pub use slice::{GroupSize, SlicedScores};
pub use synthetic::{GameRounds, IndexedRound, QuantizedMean, normal_cdf, normal_quantile};
pub use threshold::{AdvantageCi, LossThreshold};
pub use tv::{SmoothedTv, TvEstimate};

use crate::error::Result;

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
