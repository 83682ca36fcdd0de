//! [`SmoothedTv`]: total variation between the member and non-member score densities, from a
//! Freedman–Diaconis histogram.

use crate::error::Result;

use super::MisEstimator;
use super::bootstrap::{Bootstrap, Groups, draw_sides, par_resamples};
use super::estimate::MisEstimate;
use super::interval::{CiMethod, Interval, basic_interval, quantile_sorted};
use super::roc::sorted;
use super::sample::MembershipSample;

/// Histogram estimate of `TV = ½ ∫ |f_m − f_n|`, the best advantage any attack on the scores
/// alone can reach.
///
/// **Bandwidth.** A Freedman–Diaconis histogram: bin width `h = 2·IQR·n^(−1/3)` computed on
/// each side, and the larger (coarser) of the two used for both; bins are anchored at the
/// smallest score. A side whose IQR is 0 falls back to Rice's rule (range / ⌈2 n^(1/3)⌉); when
/// both sides are constant the "bins" are the distinct scores, which is exact for discrete
/// scores.
///
/// **Read it as an upper-side view.** The plug-in TV of two histograms is biased *upward*:
/// sampling noise alone makes the bin frequencies differ, so identical distributions give a
/// positive TV of order √(bins / n). (At the population level binning can only lose
/// information, so with infinite data it would approach TV from below.) Set it beside the
/// loss-threshold advantage, a lower bound: the truth lies between them up to noise.
///
/// **Interval.** A basic bootstrap interval `[2·TV̂ − q_hi, 2·TV̂ − q_lo]` with the bins of
/// the full sample kept fixed. Resampling adds the same kind of noise again, so the
/// replicates sit above TV̂ by about the bias, and mirroring them removes it to first order:
/// the interval is centred near TV̂ − bias. When the bias dominates the spread (bins too
/// fine for the sample) it lies entirely below TV̂ — read that as "the plug-in overstates".
///
/// ```
/// use quantlens::MembershipSample;
/// use quantlens::mis::{Bootstrap, SmoothedTv};
///
/// // Two uniforms shifted by 0.25: TV = 0.25.
/// let a: Vec<f64> = (0..4000).map(|i| (i as f64 * 0.618_034).fract()).collect();
/// let b: Vec<f64> = a.iter().map(|x| x + 0.25).collect();
/// let s = MembershipSample::new(a, b)?;
/// let tv = SmoothedTv::new().with_bootstrap(Bootstrap::new(200, 0.95, 3)?).histogram(&s)?;
/// println!("TV {:.3} [{:.3}, {:.3}]", tv.tv, tv.ci.lower, tv.ci.upper);
/// assert!((tv.tv - 0.25).abs() < 0.03, "{}", tv.tv);
/// assert!(tv.ci.lower < 0.25 + 0.03 && tv.ci.upper > 0.25 - 0.03);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SmoothedTv {
    bootstrap: Bootstrap,
}

/// A histogram TV estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct TvEstimate {
    /// Plug-in total variation between the two histograms, in [0, 1].
    pub tv: f64,
    /// Its basic bootstrap interval (bins fixed; see [`SmoothedTv`]).
    pub ci: Interval,
    /// The bin width used (0 when the bins are the distinct scores).
    pub bin_width: f64,
    /// Number of bins holding at least one score.
    pub bins: usize,
}

impl SmoothedTv {
    /// Default bootstrap (1000 resamples, 95 %, seed 0).
    pub fn new() -> Self {
        SmoothedTv::default()
    }

    /// Resample count, level and seed of the interval.
    pub fn with_bootstrap(mut self, bootstrap: Bootstrap) -> Self {
        self.bootstrap = bootstrap;
        self
    }

    /// The histogram, its TV and the interval.
    pub fn histogram(&self, sample: &MembershipSample) -> Result<TvEstimate> {
        let a = sorted(sample.members().to_vec());
        let b = sorted(sample.non_members().to_vec());
        let h = fd_width(&a).max(fd_width(&b));
        let origin = a[0].min(b[0]);
        self.binned(&a, &b, origin, h)
    }

    /// Total variation between the *joint* laws of (released object, score) for members and
    /// non-members: `TV(Law(T, Z₁), Law(T) ⊗ P)` in the notation of the paper notes, which for
    /// the best attacker seeing both the released model `T` and the candidate is exactly the
    /// membership advantage Δ_n. `T` is discrete (a cell index, a model id); the score is
    /// binned with the Freedman–Diaconis width of the scores, the same bins within every `T`.
    ///
    /// Pairs are `(t, score)`. Bias and interval as for [`histogram`](Self::histogram): an
    /// upper-side plug-in with a basic bootstrap interval.
    ///
    /// ```
    /// use quantlens::mis::SmoothedTv;
    /// // The released bit says which half the member came from: the joint TV is large even
    /// // though the scores alone have the same law on both sides.
    /// let z: Vec<f64> = (0..4000).map(|i| (i as f64 * 0.618_034).fract()).collect();
    /// let members: Vec<(u32, f64)> = z.iter().map(|&z| ((z > 0.5) as u32, z)).collect();
    /// let non: Vec<(u32, f64)> = z.iter().enumerate().map(|(i, &z)| ((i % 2) as u32, z)).collect();
    /// let tv = SmoothedTv::new().joint_histogram(&members, &non)?;
    /// assert!((tv.tv - 0.5).abs() < 0.05, "{}", tv.tv);
    /// # Ok::<(), quantlens::Error>(())
    /// ```
    pub fn joint_histogram(
        &self,
        members: &[(u32, f64)],
        non_members: &[(u32, f64)],
    ) -> Result<TvEstimate> {
        // Validates (non-empty, finite) through the ordinary sample.
        let scores = MembershipSample::new(
            members.iter().map(|p| p.1).collect(),
            non_members.iter().map(|p| p.1).collect(),
        )?;
        let za = sorted(scores.members().to_vec());
        let zb = sorted(scores.non_members().to_vec());
        let h = fd_width(&za).max(fd_width(&zb));
        let origin = za[0].min(zb[0]);
        let top = za[za.len() - 1].max(zb[zb.len() - 1]);
        // Lay the released objects side by side on one axis, each a block of whole bins:
        // score ↦ t·W + (z − origin) with W a multiple of h wider than the score range, so one
        // sorted pass over the encoded values groups by (t, bin).
        let width = if h > 0.0 {
            h * (((top - origin) / h).floor() + 2.0)
        } else {
            (top - origin) + 1.0
        };
        let encode = |pairs: &[(u32, f64)]| {
            sorted(
                pairs
                    .iter()
                    .map(|&(t, z)| t as f64 * width + (z - origin))
                    .collect(),
            )
        };
        let (a, b) = (encode(members), encode(non_members));
        // Encoded values already start at 0, and every block is a whole number of bins.
        self.binned(&a, &b, 0.0, h)
    }

    /// TV of the histograms of sorted `a` and `b` with bins `[origin + k·h, origin + (k+1)·h)`
    /// (the distinct values when `h` is 0), with its basic bootstrap interval.
    fn binned(&self, a: &[f64], b: &[f64], origin: f64, h: f64) -> Result<TvEstimate> {
        let groups = if h > 0.0 {
            // Monotone in the score, so sorted scores have sorted bin indices.
            Groups::by_key(a, b, |x| ((x - origin) / h).floor())?
        } else {
            Groups::by_value(a, b)?
        };
        let (m, n) = (a.len(), b.len());
        let tv = groups.total_variation(&vec![1; m + n]);
        let mut reps = par_resamples(
            self.bootstrap.resamples(),
            self.bootstrap.seed(),
            || vec![0u32; m + n],
            |w, g| {
                draw_sides(g, w, m);
                groups.total_variation(w)
            },
        );
        let ci = basic_interval(&mut reps, tv, self.bootstrap.level());
        Ok(TvEstimate {
            tv,
            ci: Interval {
                lower: ci.lower.clamp(0.0, 1.0),
                upper: ci.upper.clamp(0.0, 1.0),
                level: ci.level,
            },
            bin_width: h,
            bins: groups.len(),
        })
    }
}

/// Freedman–Diaconis width of sorted data, Rice's rule when the IQR is 0, 0 when constant.
fn fd_width(sorted: &[f64]) -> f64 {
    let n = sorted.len() as f64;
    let iqr = quantile_sorted(sorted, 0.75) - quantile_sorted(sorted, 0.25);
    if iqr > 0.0 {
        return 2.0 * iqr * n.powf(-1.0 / 3.0);
    }
    let range = sorted[sorted.len() - 1] - sorted[0];
    range / (2.0 * n.cbrt()).ceil()
}

impl MisEstimator for SmoothedTv {
    fn name(&self) -> String {
        "smoothed-tv".into()
    }

    /// Advantage = histogram TV, MIS = 1 − TV (a lower-side view of MIS, see the type docs).
    fn estimate(&self, sample: &MembershipSample) -> Result<MisEstimate> {
        let t = self.histogram(sample)?;
        let mut e = MisEstimate::from_advantage(t.tv, Some(t.ci.one_minus()), sample);
        e.ci_method = Some(CiMethod::BasicBootstrap {
            resamples: self.bootstrap.resamples(),
            seed: self.bootstrap.seed(),
        });
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discrete_scores_give_the_exact_discrete_tv() {
        // Members: 0 ×3, 1 ×1; non-members: 0 ×1, 1 ×3 → TV = ½(|¾ − ¼| + |¼ − ¾|) = ½.
        let s = MembershipSample::new(vec![0.0, 0.0, 0.0, 1.0], vec![0.0, 1.0, 1.0, 1.0]).unwrap();
        let t = SmoothedTv::new().histogram(&s).unwrap();
        assert!((t.tv - 0.5).abs() < 1e-15);
        // Constant and equal sides: TV 0, one bin.
        let s = MembershipSample::new(vec![2.0; 5], vec![2.0; 7]).unwrap();
        let t = SmoothedTv::new().histogram(&s).unwrap();
        assert_eq!((t.tv, t.bins, t.bin_width), (0.0, 1, 0.0));
    }

    #[test]
    fn disjoint_supports_give_tv_one() {
        let s = MembershipSample::new(
            (0..100).map(|i| i as f64 / 100.0).collect(),
            (0..100).map(|i| 10.0 + i as f64 / 100.0).collect(),
        )
        .unwrap();
        let e = SmoothedTv::new().estimate(&s).unwrap();
        assert_eq!(e.advantage, 1.0);
        assert_eq!(e.mis, 0.0);
    }
}
