//! [`LossThreshold`]: the loss-threshold attack as a [`MisEstimator`].

use crate::error::Result;

use super::MisEstimator;
use super::bootstrap::{Bootstrap, Statistic};
use super::estimate::{MisEstimate, PointEstimate, TprAtFpr};
use super::interval::{CiMethod, dkw_interval};
use super::roc::Roc;
use super::sample::MembershipSample;

/// Where the interval of the advantage (and so of MIS) comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AdvantageCi {
    /// Basic bootstrap (the default): corrects the upward bias of a maximum over thresholds,
    /// which the percentile interval inherits (see
    /// [`Replicates::basic_interval`](super::Replicates::basic_interval)).
    #[default]
    BasicBootstrap,
    /// Percentile bootstrap: shifted upward with the bias; under-covers at moderate sizes.
    PercentileBootstrap,
    /// The DKW band ([`dkw_interval`](super::dkw_interval)): valid for every sample size and
    /// distribution, wider.
    Dkw,
}

/// The loss-threshold attack "member iff loss ≤ τ" at its best τ: advantage
/// `max_τ [TPR − FPR]`, MIS = 1 − advantage, with the AUC and TPR at low FPRs beside it.
///
/// The advantage of one attack is a *lower* bound on the best attack's advantage, so its MIS
/// is an *upper* bound on the true MIS. Choosing τ on the same data makes the plug-in
/// advantage biased upward by O(n^(−2/3))–O(n^(−1/2)); the interval accounts for sampling
/// noise, not for that bias.
///
/// Defaults: TPR at FPR 0.1 % and 1 % (Carlini et al. 2022; needs ≥ 1000 non-members, see
/// [`LossThreshold::with_fprs`]), and 1000 bootstrap resamples at 95 % with seed 0: a basic
/// bootstrap interval for MIS (see [`AdvantageCi`]), percentile intervals for the AUC and the
/// TPRs.
///
/// ```
/// use quantlens::MembershipSample;
/// use quantlens::mis::{AdvantageCi, Bootstrap, LossThreshold, MisEstimator};
///
/// // Members have lower losses: the attack separates 30 % of them.
/// let members: Vec<f64> = (0..2000).map(f64::from).collect();
/// let non_members: Vec<f64> = (600..2600).map(f64::from).collect();
/// let s = MembershipSample::new(members, non_members)?;
///
/// let est = LossThreshold::new().with_bootstrap(Bootstrap::new(300, 0.95, 7)?).estimate(&s)?;
/// assert_eq!(est.advantage, 0.3);
/// assert_eq!(est.threshold, Some(599.0));
/// // FPR ≤ 1 %: 20 false positives allowed, so every member below 620 is flagged.
/// assert_eq!(est.tpr_at(0.01).unwrap().tpr, 0.31);
/// println!("{est}");
///
/// // Distribution-free interval for MIS instead.
/// let dkw = LossThreshold::new().with_advantage_ci(AdvantageCi::Dkw).estimate(&s)?;
/// assert!(dkw.ci.unwrap().width() > est.ci.unwrap().width());
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LossThreshold {
    fprs: Vec<f64>,
    bootstrap: Bootstrap,
    advantage_ci: AdvantageCi,
}

impl Default for LossThreshold {
    fn default() -> Self {
        LossThreshold::new()
    }
}

impl LossThreshold {
    /// TPR at FPR 0.1 % and 1 %, default bootstrap, basic bootstrap interval for MIS.
    pub fn new() -> Self {
        LossThreshold {
            fprs: vec![0.001, 0.01],
            bootstrap: Bootstrap::default(),
            advantage_ci: AdvantageCi::BasicBootstrap,
        }
    }

    /// The FPRs at which to report TPR, each in (0, 1). Each needs at least ⌈1/α⌉
    /// non-members; [`estimate`](MisEstimator::estimate) fails with
    /// [`Error::TooFewSamples`](crate::Error::TooFewSamples) otherwise. An empty list reports
    /// none.
    pub fn with_fprs(mut self, fprs: &[f64]) -> Self {
        self.fprs = fprs.to_vec();
        self
    }

    /// Resample count, level and seed of every interval (the DKW band uses the same level).
    pub fn with_bootstrap(mut self, bootstrap: Bootstrap) -> Self {
        self.bootstrap = bootstrap;
        self
    }

    /// Where the MIS interval comes from.
    pub fn with_advantage_ci(mut self, advantage_ci: AdvantageCi) -> Self {
        self.advantage_ci = advantage_ci;
        self
    }

    /// The estimate from an already built ROC (saves the sort when several figures are
    /// wanted from one sample).
    pub fn estimate_roc(&self, roc: &Roc) -> Result<MisEstimate> {
        let mut stats = vec![Statistic::Mis, Statistic::Auc];
        stats.extend(self.fprs.iter().map(|&a| Statistic::TprAtFpr(a)));
        // Checks the FPRs (and their sample-size needs) before any work.
        let reps = self.bootstrap.replicates(roc, &stats)?;
        let (m, n) = (roc.n_members(), roc.n_non_members());
        let best = roc.best_threshold();
        let (resamples, seed) = (self.bootstrap.resamples(), self.bootstrap.seed());
        // Statistic 0 is MIS; its basic interval is the advantage's, mirrored.
        let (ci, method) = match self.advantage_ci {
            AdvantageCi::BasicBootstrap => (
                reps.basic_interval(0),
                CiMethod::BasicBootstrap { resamples, seed },
            ),
            AdvantageCi::PercentileBootstrap => (
                reps.interval(0),
                CiMethod::PercentileBootstrap { resamples, seed },
            ),
            AdvantageCi::Dkw => (
                dkw_interval(best.advantage(), m, n, self.bootstrap.level())?.one_minus(),
                CiMethod::Dkw,
            ),
        };
        let mut est = MisEstimate::from_counts(best.advantage(), Some(ci), m, n);
        est.ci_method = Some(method);
        est.threshold = Some(best.threshold);
        est.auc = Some(PointEstimate {
            value: roc.auc(),
            ci: Some(reps.interval(1)),
        });
        est.tpr_at_fpr = self
            .fprs
            .iter()
            .enumerate()
            .map(|(i, &a)| {
                let p = roc.tpr_at_fpr(a)?;
                Ok(TprAtFpr {
                    target_fpr: a,
                    tpr: p.tpr,
                    fpr: p.fpr,
                    threshold: p.threshold,
                    ci: Some(reps.interval(2 + i)),
                })
            })
            .collect::<Result<_>>()?;
        Ok(est)
    }
}

impl MisEstimator for LossThreshold {
    fn name(&self) -> String {
        "loss-threshold".into()
    }

    fn estimate(&self, sample: &MembershipSample) -> Result<MisEstimate> {
        self.estimate_roc(&Roc::new(sample))
    }
}
