//! [`MeanEstimate`]: the mean of per-sample scores with a seeded percentile-bootstrap interval,
//! drawn by the crate's bootstrap machinery (multinomial counts, one stream per resample).

use crate::error::Result;
use crate::mis::{
    Bootstrap, Interval, check_scores, draw_counts, par_resamples, percentile_interval,
};

/// The mean of per-sample values, with a percentile-bootstrap interval when one was asked for.
///
/// ```
/// use quantlens::explain::MeanEstimate;
/// use quantlens::mis::Bootstrap;
///
/// let m = MeanEstimate::of(&[0.2, 0.4, 0.6, 0.8], Some(&Bootstrap::new(500, 0.9, 3)?))?;
/// assert!((m.mean - 0.5).abs() < 1e-12);
/// let ci = m.ci.unwrap();
/// assert!(ci.lower <= 0.5 && 0.5 <= ci.upper && ci.lower >= 0.2 && ci.upper <= 0.8);
/// assert!(MeanEstimate::of(&[], None).is_err());
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct MeanEstimate {
    /// The sample mean.
    pub mean: f64,
    /// Percentile-bootstrap interval of the mean (resampling the samples), if asked for.
    pub ci: Option<Interval>,
    /// Number of samples.
    pub n: usize,
}

impl MeanEstimate {
    /// The mean of `values` (non-empty, finite) and, with `bootstrap`, its seeded percentile
    /// interval: resample `r` draws `n` values with replacement from its own stream of
    /// `(seed, r)`, so the interval does not depend on the thread count.
    pub fn of(values: &[f64], bootstrap: Option<&Bootstrap>) -> Result<Self> {
        check_scores("values to average", values)?;
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let ci = bootstrap.map(|b| {
            let mut means = par_resamples(
                b.resamples(),
                b.seed(),
                || vec![0u32; n],
                |counts, rng| {
                    draw_counts(rng, counts);
                    let total: f64 = counts
                        .iter()
                        .zip(values)
                        .map(|(&c, &v)| f64::from(c) * v)
                        .sum();
                    total / n as f64
                },
            );
            percentile_interval(&mut means, b.level())
        });
        Ok(MeanEstimate { mean, ci, n })
    }

    /// The lower end of the interval, if any.
    pub fn lower(&self) -> Option<f64> {
        self.ci.map(|c| c.lower)
    }

    /// The upper end of the interval, if any.
    pub fn upper(&self) -> Option<f64> {
        self.ci.map(|c| c.upper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_values_give_a_degenerate_interval() {
        let m = MeanEstimate::of(&[2.5; 7], Some(&Bootstrap::new(50, 0.95, 1).unwrap())).unwrap();
        assert_eq!(m.mean, 2.5);
        assert_eq!((m.lower(), m.upper()), (Some(2.5), Some(2.5)));
        assert_eq!(m.n, 7);
    }

    #[test]
    fn same_seed_same_interval_and_bad_values_are_refused() {
        let v: Vec<f64> = (0..40).map(|i| (i as f64 * 0.37).sin()).collect();
        let b = Bootstrap::new(200, 0.95, 9).unwrap();
        assert_eq!(
            MeanEstimate::of(&v, Some(&b)).unwrap(),
            MeanEstimate::of(&v, Some(&b)).unwrap()
        );
        assert!(MeanEstimate::of(&[1.0, f64::NAN], None).is_err());
        assert!(MeanEstimate::of(&[f64::INFINITY], None).is_err());
    }
}
