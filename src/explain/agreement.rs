//! [`Agreement`] of two models' attributions for one sample, and its mean over samples with
//! bootstrap intervals ([`AgreementSummary`]): how much quantization changed the explanation.

use crate::error::{Error, Result};
use crate::explain::attribution::Attribution;
use crate::explain::mean::MeanEstimate;
use crate::explain::rank::{cosine_similarity, kendall_tau_b, spearman, top_k_jaccard};
use crate::mis::{Bootstrap, Interval};

/// The four agreement scores of two attribution vectors over the same features (typically
/// full precision vs quantized, same input, same target).
///
/// ```
/// use quantlens::explain::Agreement;
/// let a = Agreement::between(&[0.9, 0.1, -0.5, 0.3], &[0.8, 0.2, -0.4, 0.3], 2)?;
/// assert_eq!((a.spearman, a.kendall, a.top_k_jaccard), (1.0, 1.0, 1.0));
/// assert!(a.cosine > 0.97);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Agreement {
    /// Spearman's ρ ([`spearman`]).
    pub spearman: f64,
    /// Kendall's τ-b ([`kendall_tau_b`]).
    pub kendall: f64,
    /// Jaccard overlap of the top-k features by magnitude ([`top_k_jaccard`]).
    pub top_k_jaccard: f64,
    /// Cosine similarity ([`cosine_similarity`]).
    pub cosine: f64,
}

impl Agreement {
    /// All four scores of `a` against `b`, top-k with `k` features. Errors as the metrics do
    /// (length mismatch, fewer than two values, NaN/±∞, a constant or all-zero side, `k`
    /// outside `1..=len`).
    pub fn between(a: &[f64], b: &[f64], k: usize) -> Result<Self> {
        Ok(Agreement {
            spearman: spearman(a, b)?,
            kendall: kendall_tau_b(a, b)?,
            top_k_jaccard: top_k_jaccard(a, b, k)?,
            cosine: cosine_similarity(a, b)?,
        })
    }
}

/// Mean agreement over samples, each with a percentile-bootstrap interval when asked for
/// (every metric resampled with the same seed, hence the same resamples): one report row.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct AgreementSummary {
    /// Number of samples averaged.
    pub n: usize,
    /// Samples left out by [`compare`](Self::compare) because a metric was undefined for
    /// them (a constant or all-zero attribution vector).
    pub skipped: usize,
    /// Mean Spearman's ρ.
    pub spearman: f64,
    /// Its interval.
    pub spearman_ci: Option<Interval>,
    /// Mean Kendall's τ-b.
    pub kendall: f64,
    /// Its interval.
    pub kendall_ci: Option<Interval>,
    /// Mean top-k Jaccard overlap.
    pub top_k_jaccard: f64,
    /// Its interval.
    pub top_k_jaccard_ci: Option<Interval>,
    /// Mean cosine similarity.
    pub cosine: f64,
    /// Its interval.
    pub cosine_ci: Option<Interval>,
}

impl AgreementSummary {
    /// The means of `samples` (at least one), with intervals from `bootstrap` if given.
    ///
    /// ```
    /// use quantlens::explain::{Agreement, AgreementSummary};
    /// use quantlens::mis::Bootstrap;
    ///
    /// let per_sample = [
    ///     Agreement::between(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0], 1)?,
    ///     Agreement::between(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0], 1)?,
    /// ];
    /// let s = AgreementSummary::of(&per_sample, Some(&Bootstrap::new(200, 0.95, 1)?))?;
    /// assert_eq!((s.n, s.spearman), (2, 0.0));
    /// assert!(s.spearman_ci.unwrap().contains(0.0));
    /// # Ok::<(), quantlens::Error>(())
    /// ```
    pub fn of(samples: &[Agreement], bootstrap: Option<&Bootstrap>) -> Result<Self> {
        if samples.is_empty() {
            return Err(Error::TooFewSamples {
                what: "per-sample agreements",
                needed: 1,
                got: 0,
            });
        }
        let mean = |pick: fn(&Agreement) -> f64| -> Result<MeanEstimate> {
            let v: Vec<f64> = samples.iter().map(pick).collect();
            MeanEstimate::of(&v, bootstrap)
        };
        let (s, k, j, c) = (
            mean(|a| a.spearman)?,
            mean(|a| a.kendall)?,
            mean(|a| a.top_k_jaccard)?,
            mean(|a| a.cosine)?,
        );
        Ok(AgreementSummary {
            n: samples.len(),
            skipped: 0,
            spearman: s.mean,
            spearman_ci: s.ci,
            kendall: k.mean,
            kendall_ci: k.ci,
            top_k_jaccard: j.mean,
            top_k_jaccard_ci: j.ci,
            cosine: c.mean,
            cosine_ci: c.ci,
        })
    }

    /// Agreement of paired attributions `a[i]` and `b[i]` (same sample, two models; at
    /// least one pair), top-k with `k` features, averaged with intervals from `bootstrap`.
    /// Pairs for which a metric is undefined (a constant or all-zero side) are left out and
    /// counted in `skipped`; other errors (length mismatch, bad `k`) are returned.
    pub fn compare(
        a: &[Attribution],
        b: &[Attribution],
        k: usize,
        bootstrap: Option<&Bootstrap>,
    ) -> Result<Self> {
        if a.len() != b.len() {
            return Err(Error::ShapeMismatch(format!(
                "{} attributions cannot be paired with {}",
                a.len(),
                b.len()
            )));
        }
        let mut rows = Vec::with_capacity(a.len());
        let mut skipped = 0;
        for (x, y) in a.iter().zip(b) {
            match Agreement::between(&x.values, &y.values, k) {
                Ok(r) => rows.push(r),
                Err(Error::InvalidParameter {
                    name: "attributions",
                    ..
                }) => skipped += 1,
                Err(e) => return Err(e),
            }
        }
        let mut summary = AgreementSummary::of(&rows, bootstrap)?;
        summary.skipped = skipped;
        Ok(summary)
    }
}
