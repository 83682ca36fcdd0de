//! The likelihood-ratio attack with reference models (LiRA, Carlini et al. 2022).

use crate::error::{Error, Result};
use crate::mis::reference::{ReferenceLosses, check_losses};

/// Which per-example statistic the Gaussians are fitted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LiraStatistic {
    /// `φ = log(p / (1 − p))` with `p = exp(−loss)` the probability of the true label: the
    /// logit-scaled confidence of the paper, close to Gaussian across models. For
    /// cross-entropy losses.
    #[default]
    LogitConfidence,
    /// `−loss` itself: for squared-error (regression) losses.
    NegativeLoss,
}

impl LiraStatistic {
    /// The statistic of one loss. A loss of exactly 0 (an f32 underflow) is read as the
    /// smallest positive f64, so `φ` stays finite (≈ 708).
    pub fn of_loss(self, loss: f64) -> f64 {
        match self {
            LiraStatistic::LogitConfidence => {
                let l = loss.max(f64::MIN_POSITIVE);
                // log p − log(1 − p) with log p = −l and 1 − p = −expm1(−l), exact for tiny l.
                -l - (-(-l).exp_m1()).ln()
            }
            LiraStatistic::NegativeLoss => -loss,
        }
    }
}

/// Online (reference models trained with and without each example) or offline (only without).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiraVariant {
    /// Score = log N(φ; μ_in, σ_in²) − log N(φ; μ_out, σ_out²).
    Online,
    /// Score = (φ − μ_out) / σ_out: the one-sided test against the OUT Gaussian (its p-value
    /// `Φ(score)` orders examples the same way).
    Offline,
}

/// LiRA: per example, fit Gaussians to the reference models' statistic when they trained on it
/// (IN) and when they did not (OUT), and score the target model's statistic by their
/// likelihood ratio. Scores are "higher = more likely a member"; turn them into a
/// [`MembershipSample`](crate::MembershipSample) with
/// [`sample_from_scores`](crate::mis::sample_from_scores).
///
/// Variance: with `global_variance` (the default, as the paper recommends below 64 reference
/// models) one pooled IN and one pooled OUT variance serve every example; otherwise each
/// example's own sample variance is used (needs ≥ 2 IN and ≥ 2 OUT models per example).
///
/// ```
/// use quantlens::mis::{Lira, ReferenceLosses};
/// // Three examples, four references: 0 and 1 trained on example 0, 2 and 3 on examples 1, 2.
/// let refs = ReferenceLosses::new(
///     vec![vec![0.1, 2.0, 1.9], vec![0.2, 2.1, 2.2], vec![1.5, 0.2, 0.1], vec![1.4, 0.1, 0.3]],
///     vec![vec![true, false, false], vec![true, false, false],
///          vec![false, true, true], vec![false, true, true]],
/// )?;
/// let scores = Lira::online().scores(&[0.15, 2.0, 0.2], &refs)?;
/// assert!(scores[0] > 0.0 && scores[1] < 0.0 && scores[2] > 0.0);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lira {
    variant: LiraVariant,
    statistic: LiraStatistic,
    global_variance: bool,
}

impl Lira {
    /// Online LiRA, logit-scaled confidence, global variance.
    pub fn online() -> Self {
        Lira {
            variant: LiraVariant::Online,
            statistic: LiraStatistic::LogitConfidence,
            global_variance: true,
        }
    }

    /// Offline LiRA (OUT models only), logit-scaled confidence, global variance.
    pub fn offline() -> Self {
        Lira {
            variant: LiraVariant::Offline,
            ..Lira::online()
        }
    }

    /// The statistic fitted.
    pub fn statistic(mut self, statistic: LiraStatistic) -> Self {
        self.statistic = statistic;
        self
    }

    /// Pooled (`true`) or per-example (`false`) variances.
    pub fn global_variance(mut self, global: bool) -> Self {
        self.global_variance = global;
        self
    }

    /// A stable name for reports, e.g. `lira-online-global`.
    pub fn name(&self) -> String {
        format!(
            "lira-{}-{}{}",
            match self.variant {
                LiraVariant::Online => "online",
                LiraVariant::Offline => "offline",
            },
            if self.global_variance {
                "global"
            } else {
                "per-example"
            },
            match self.statistic {
                LiraStatistic::LogitConfidence => "",
                LiraStatistic::NegativeLoss => "-negloss",
            }
        )
    }

    /// Membership scores (higher = member) of the target model's per-example `losses`.
    pub fn scores(&self, losses: &[f64], refs: &ReferenceLosses) -> Result<Vec<f64>> {
        check_losses("target-model losses", losses)?;
        let n = refs.examples();
        if losses.len() != n {
            return Err(Error::ShapeMismatch(format!(
                "{} target losses but reference losses for {n} examples",
                losses.len()
            )));
        }
        let stat = |l: f64| self.statistic.of_loss(l);
        let need_in = self.variant == LiraVariant::Online;
        let per_example_min = if self.global_variance { 1 } else { 2 };
        // Per example: mean and sum of squared deviations on each side.
        let mut fits = Vec::with_capacity(n);
        for i in 0..n {
            let (mut inn, mut out) = (Moments::default(), Moments::default());
            for k in 0..refs.models() {
                let v = stat(refs.loss(k, i));
                if refs.trained_on(k, i) {
                    inn.push(v);
                } else {
                    out.push(v);
                }
            }
            if out.n < per_example_min {
                return Err(Error::TooFewSamples {
                    what: "OUT reference models for an example",
                    needed: per_example_min,
                    got: out.n,
                });
            }
            if need_in && inn.n < per_example_min {
                return Err(Error::TooFewSamples {
                    what: "IN reference models for an example (online LiRA)",
                    needed: per_example_min,
                    got: inn.n,
                });
            }
            fits.push((inn, out));
        }
        let pooled = |side: fn(&(Moments, Moments)) -> &Moments| -> Result<f64> {
            let (ss, dof) = fits.iter().map(side).fold((0.0, 0usize), |(s, d), m| {
                (s + m.ss, d + m.n.saturating_sub(1))
            });
            if dof == 0 {
                return Err(Error::TooFewSamples {
                    what: "reference models for a pooled variance",
                    needed: 2,
                    got: 1,
                });
            }
            Ok(ss / dof as f64)
        };
        let global_in = if need_in && self.global_variance {
            pooled(|f| &f.0)?
        } else {
            0.0
        };
        let global_out = if self.global_variance {
            pooled(|f| &f.1)?
        } else {
            0.0
        };
        Ok(losses
            .iter()
            .zip(&fits)
            .map(|(&l, (inn, out))| {
                let phi = stat(l);
                let var_out = floor(if self.global_variance {
                    global_out
                } else {
                    out.variance()
                });
                match self.variant {
                    LiraVariant::Offline => (phi - out.mean) / var_out.sqrt(),
                    LiraVariant::Online => {
                        let var_in = floor(if self.global_variance {
                            global_in
                        } else {
                            inn.variance()
                        });
                        log_normal_pdf(phi, inn.mean, var_in)
                            - log_normal_pdf(phi, out.mean, var_out)
                    }
                }
            })
            .collect())
    }
}

/// Reference statistics can coincide (identical models): keep variances strictly positive so
/// that scores stay finite. The floor is far below any statistic's real spread.
fn floor(var: f64) -> f64 {
    var.max(1e-12)
}

fn log_normal_pdf(x: f64, mean: f64, var: f64) -> f64 {
    -0.5 * (x - mean).powi(2) / var - 0.5 * var.ln()
}

/// Welford's running mean and sum of squared deviations.
#[derive(Debug, Default, Clone, Copy)]
struct Moments {
    n: usize,
    mean: f64,
    ss: f64,
}

impl Moments {
    fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.ss += d * (x - self.mean);
    }
    fn variance(&self) -> f64 {
        if self.n > 1 {
            self.ss / (self.n - 1) as f64
        } else {
            0.0
        }
    }
}
