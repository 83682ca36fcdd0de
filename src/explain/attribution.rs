//! Gradient-based attributions through Candle's autograd: gradient × input and integrated
//! gradients, for any differentiable function from a batch of inputs to a batch of logits.

use candle_core::{DType, Tensor, Var};

use crate::error::{Error, Result};

/// Which class's score is explained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A given class (or token id).
    Class(usize),
    /// The class the function predicts at the input (the lowest index among tied maxima).
    Predicted,
}

/// The scalar whose gradient is attributed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Score {
    /// The target's logit.
    #[default]
    Logit,
    /// The target's log-probability, `logit − logsumexp(logits)`.
    LogProbability,
}

/// The reference input of integrated gradients.
#[derive(Debug, Clone, Default)]
pub enum Baseline {
    /// All zeros (for standardised features: the mean input).
    ///
    /// Avoid it for token embeddings of an RMSNorm decoder ([`Llama`](crate::model::Llama)):
    /// behind the first norm the model is scale-invariant, so along the path `α·x` the score
    /// jumps from `f(0)` to about `f(x)` within `α ≲ 10⁻⁴` and no Riemann sum of a few dozen
    /// points integrates that step (completeness then fails by an order of magnitude). Use
    /// the embeddings of a neutral token (padding, end of text) instead.
    #[default]
    Zeros,
    /// A given input, shaped like one sample.
    Input(Tensor),
}

/// The quadrature rule of the path integral (see [`Attributor`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathRule {
    /// `m` points at `(k + ½)/m`, equal weights.
    #[default]
    Midpoint,
    /// `m + 1` points at `k/m`, half weights at both ends.
    Trapezoid,
}

/// Settings of integrated gradients.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct IntegratedGradients {
    /// Number of intervals `m` of the Riemann sum (≥ 1).
    pub steps: usize,
    /// The quadrature rule.
    pub rule: PathRule,
    /// The baseline input.
    pub baseline: Baseline,
    /// Path points per forward/backward pass (bounds the memory of the autograd graph).
    pub batch: usize,
}

impl IntegratedGradients {
    /// `steps` intervals, midpoint rule, zero baseline, 16 path points per pass.
    pub fn new(steps: usize) -> Self {
        IntegratedGradients {
            steps,
            rule: PathRule::Midpoint,
            baseline: Baseline::Zeros,
            batch: 16,
        }
    }

    /// A different quadrature rule.
    pub fn rule(mut self, rule: PathRule) -> Self {
        self.rule = rule;
        self
    }

    /// A different baseline.
    pub fn baseline(mut self, baseline: Baseline) -> Self {
        self.baseline = baseline;
        self
    }

    /// Path points per forward/backward pass.
    pub fn batch(mut self, points: usize) -> Self {
        self.batch = points;
        self
    }

    /// `(α_k, w_k)` of the rule, with `Σ w_k = 1`.
    fn points(&self) -> Vec<(f64, f64)> {
        let m = self.steps as f64;
        match self.rule {
            PathRule::Midpoint => (0..self.steps)
                .map(|k| ((k as f64 + 0.5) / m, 1.0 / m))
                .collect(),
            PathRule::Trapezoid => (0..=self.steps)
                .map(|k| {
                    let end = k == 0 || k == self.steps;
                    (k as f64 / m, if end { 0.5 / m } else { 1.0 / m })
                })
                .collect(),
        }
    }
}

/// The attribution method.
#[derive(Debug, Clone)]
pub enum Method {
    /// `x ⊙ ∇s(x)`.
    GradientTimesInput,
    /// Integrated gradients from a baseline.
    IntegratedGradients(IntegratedGradients),
}

/// One sample's attributions.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Attribution {
    /// One value per feature (the first axis of the sample; trailing axes summed).
    pub values: Vec<f64>,
    /// The class explained (resolved when the target was [`Target::Predicted`]).
    pub target: usize,
    /// The explained score at the input.
    pub score: f64,
    /// The explained score at the baseline (integrated gradients only).
    pub baseline_score: Option<f64>,
}

impl Attribution {
    /// `|Σ a_i − (s(x) − s(x'))| / |s(x) − s(x')|`: the relative completeness error of
    /// integrated gradients (`None` for gradient × input, or when `s(x) = s(x')`).
    pub fn completeness_error(&self) -> Option<f64> {
        let gap = self.score - self.baseline_score?;
        (gap != 0.0).then(|| (self.values.iter().sum::<f64>() - gap).abs() / gap.abs())
    }
}

/// Computes attributions with one [`Method`] of one [`Score`].
///
/// A *sample* is a tensor of shape `S = [features, …]`; the function sees a batch
/// `[m, features, …]` and returns logits `[m, classes]`, each row depending on its own input
/// row only (no batch statistics). The scalar explained is the logit — or the log-probability
/// — of one class. Attributions are per element, then summed over the trailing axes to one
/// value per feature: per input feature for tabular data (`S = [d]`), per token for a
/// sequence of embeddings (`S = [t, hidden]`, summed over the embedding dimension).
///
/// **Gradient × input**: `a_i = x_i · ∂s/∂x_i`. For a linear score it is exactly
/// `w_i · x_i`.
///
/// **Integrated gradients** (Sundararajan et al. 2017): `a_i = (x_i − x'_i) ·
/// ∫₀¹ ∂s/∂x_i (x' + α(x − x')) dα` from a baseline `x'`, so that `Σ a_i = s(x) − s(x')`
/// (completeness) up to the quadrature error. The integral is a Riemann sum over `steps`
/// points, either the **midpoint** rule (`α_k = (k + ½)/m`, weights `1/m`, error O(1/m²); the
/// default) or the **trapezoid** rule (`α_k = k/m` for `k = 0..=m`, end weights `1/(2m)`,
/// inner `1/m`; also O(1/m²), and it evaluates both end points).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::explain::{Attributor, Target};
/// use quantlens::model::{Mlp, MlpConfig, QuantizableModel};
///
/// let mlp = Mlp::new(MlpConfig::new(4, &[8], 3), 1, &Device::Cpu)?;
/// let x = Tensor::new(&[0.5f32, -1.0, 2.0, 0.0], &Device::Cpu)?;
/// let ig = Attributor::integrated_gradients(64).attribute(|b| mlp.forward(b), &x, Target::Predicted)?;
/// assert_eq!(ig.values.len(), 4);
/// // Completeness: the attributions add up to s(x) − s(0).
/// assert!(ig.completeness_error().unwrap() < 0.01);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Attributor {
    method: Method,
    score: Score,
}

impl Attributor {
    /// `method`, explaining the target's logit.
    pub fn new(method: Method) -> Self {
        Attributor {
            method,
            score: Score::Logit,
        }
    }

    /// Gradient × input of the target's logit.
    pub fn gradient_times_input() -> Self {
        Attributor::new(Method::GradientTimesInput)
    }

    /// Integrated gradients of the target's logit: `steps` intervals, midpoint rule, zero
    /// baseline ([`IntegratedGradients::new`]).
    pub fn integrated_gradients(steps: usize) -> Self {
        Attributor::new(Method::IntegratedGradients(IntegratedGradients::new(steps)))
    }

    /// Explain `score` instead of the logit.
    pub fn score(mut self, score: Score) -> Self {
        self.score = score;
        self
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// Attributions of one sample `x` (shape `S`, a float dtype, finite) for the score of
    /// `target` under `f: [m, S…] → [m, classes]`.
    pub fn attribute<F>(&self, f: F, x: &Tensor, target: Target) -> Result<Attribution>
    where
        F: Fn(&Tensor) -> Result<Tensor>,
    {
        let x = check_sample(x)?;
        let at_x = scores_of(&f, &x.unsqueeze(0)?)?;
        let classes = at_x[0].len();
        let target = match target {
            Target::Class(c) if c < classes => c,
            Target::Class(c) => {
                return Err(Error::TargetOutOfRange {
                    what: "attribution target",
                    index: 0,
                    value: c as i64,
                    classes,
                });
            }
            Target::Predicted => argmax(&at_x[0])?,
        };
        let score = self.score.of(&at_x[0], target);
        match &self.method {
            Method::GradientTimesInput => {
                let g = self.weighted_gradient(&f, &x.unsqueeze(0)?, target, &[1.0])?;
                let xs = x.flatten_all()?.to_vec1::<f32>()?;
                let values = per_feature(&xs, &g, x.dims()[0]);
                Ok(Attribution {
                    values,
                    target,
                    score,
                    baseline_score: None,
                })
            }
            Method::IntegratedGradients(ig) => self.integrated(&f, &x, target, score, ig),
        }
    }

    /// Attributions of every row of `x: [n, S…]`, row `i` for `targets[i]` (`n` targets).
    pub fn attribute_rows<F>(
        &self,
        f: F,
        x: &Tensor,
        targets: &[Target],
    ) -> Result<Vec<Attribution>>
    where
        F: Fn(&Tensor) -> Result<Tensor>,
    {
        let n = x.dims().first().copied().unwrap_or(0);
        if targets.len() != n {
            return Err(Error::ShapeMismatch(format!(
                "{} targets for {n} rows of {:?}",
                targets.len(),
                x.dims()
            )));
        }
        targets
            .iter()
            .enumerate()
            .map(|(i, &t)| self.attribute(&f, &x.get(i)?, t))
            .collect()
    }

    fn integrated<F>(
        &self,
        f: &F,
        x: &Tensor,
        target: usize,
        score: f64,
        ig: &IntegratedGradients,
    ) -> Result<Attribution>
    where
        F: Fn(&Tensor) -> Result<Tensor>,
    {
        if ig.steps == 0 || ig.batch == 0 {
            return Err(Error::InvalidParameter {
                name: "integrated gradients",
                reason: format!(
                    "steps and batch must be at least 1, got {} and {}",
                    ig.steps, ig.batch
                ),
            });
        }
        let baseline = match &ig.baseline {
            Baseline::Zeros => x.zeros_like()?,
            Baseline::Input(b) if b.dims() == x.dims() => check_sample(b)?,
            Baseline::Input(b) => {
                return Err(Error::ShapeMismatch(format!(
                    "baseline {:?} is not shaped like the input {:?}",
                    b.dims(),
                    x.dims()
                )));
            }
        };
        let baseline_score = self
            .score
            .of(&scores_of(f, &baseline.unsqueeze(0)?)?[0], target);
        let diff = (x - &baseline)?;
        let mut sum = vec![0.0f64; x.elem_count()];
        for chunk in ig.points().chunks(ig.batch) {
            let m = chunk.len();
            let alphas: Vec<f32> = chunk.iter().map(|p| p.0 as f32).collect();
            let mut shape = vec![m];
            shape.extend(std::iter::repeat_n(1, x.rank()));
            let alphas = Tensor::from_vec(alphas, shape, x.device())?;
            let path = alphas
                .broadcast_mul(&diff.unsqueeze(0)?)?
                .broadcast_add(&baseline.unsqueeze(0)?)?;
            let weights: Vec<f64> = chunk.iter().map(|p| p.1).collect();
            let g = self.weighted_gradient(f, &path, target, &weights)?;
            // Rows of g are already weighted: their sum is this chunk's share of the integral.
            for row in g.chunks(sum.len()) {
                for (s, v) in sum.iter_mut().zip(row) {
                    *s += v;
                }
            }
        }
        let d = diff.flatten_all()?.to_vec1::<f32>()?;
        let values = per_feature(&d, &sum, x.dims()[0]);
        Ok(Attribution {
            values,
            target,
            score,
            baseline_score: Some(baseline_score),
        })
    }

    /// `∂/∂x_k (Σ_k w_k s(x_k))` for a batch `xs: [m, S…]`, flattened row-major (`m · |S|`).
    fn weighted_gradient<F>(&self, f: &F, xs: &Tensor, target: usize, w: &[f64]) -> Result<Vec<f64>>
    where
        F: Fn(&Tensor) -> Result<Tensor>,
    {
        let m = w.len();
        let var = Var::from_tensor(xs)?;
        let logits = f(var.as_tensor())?;
        check_logits_shape(&logits, m)?;
        let logits = logits.to_dtype(DType::F32)?;
        let scores = match self.score {
            Score::Logit => logits,
            Score::LogProbability => candle_nn::ops::log_softmax(&logits, 1)?,
        };
        let weights = Tensor::from_vec(
            w.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            (m, 1),
            xs.device(),
        )?;
        let total = (scores.narrow(1, target, 1)? * weights)?.sum_all()?;
        let grads = total.backward()?;
        Ok(match grads.get(var.as_tensor()) {
            Some(g) => g
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?
                .into_iter()
                .map(f64::from)
                .collect(),
            // The score does not depend on the input at all.
            None => vec![0.0; xs.elem_count()],
        })
    }
}

impl Score {
    /// This score of class `c` from one row of logits, in f64.
    fn of(self, logits: &[f64], c: usize) -> f64 {
        match self {
            Score::Logit => logits[c],
            Score::LogProbability => {
                let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let lse = max + logits.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                logits[c] - lse
            }
        }
    }
}

/// `Σ_{trailing} a ⊙ b` per feature: both flattened row-major over `features` rows.
fn per_feature(a: &[f32], b: &[f64], features: usize) -> Vec<f64> {
    let width = a.len() / features.max(1);
    a.chunks(width.max(1))
        .zip(b.chunks(width.max(1)))
        .map(|(x, g)| x.iter().zip(g).map(|(&x, &g)| f64::from(x) * g).sum())
        .collect()
}

/// One sample as f32: rank ≥ 1, non-empty, a float dtype, finite.
fn check_sample(x: &Tensor) -> Result<Tensor> {
    if x.rank() == 0 {
        return Err(Error::RankMismatch {
            what: "attribution input (one sample, [features, ...])",
            expected: 1,
            shape: vec![],
        });
    }
    if x.elem_count() == 0 {
        return Err(Error::EmptyTensor {
            what: "attribution input",
            shape: x.dims().to_vec(),
        });
    }
    Ok(finite_f32("attribution input", x)?.0)
}

/// `x` as f32 (on its device and as host values) after refusing a non-float dtype and NaN or
/// ±∞, naming `what`.
pub(crate) fn finite_f32(what: &'static str, x: &Tensor) -> Result<(Tensor, Vec<f32>)> {
    if !x.dtype().is_float() {
        return Err(Error::UnsupportedDType {
            what,
            dtype: x.dtype(),
        });
    }
    let x = x.to_dtype(DType::F32)?;
    let v = x.flatten_all()?.to_vec1::<f32>()?;
    if let Some(first_index) = v.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what,
            count: v.iter().filter(|v| !v.is_finite()).count(),
            first_index,
        });
    }
    Ok((x, v))
}

/// `f(xs)` as host rows of f64 logits, checked to be `[m, classes]`.
fn scores_of<F>(f: &F, xs: &Tensor) -> Result<Vec<Vec<f64>>>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    let logits = f(xs)?;
    check_logits_shape(&logits, xs.dims()[0])?;
    Ok(logits
        .to_dtype(DType::F64)?
        .to_vec2::<f64>()?
        .into_iter()
        .collect())
}

fn check_logits_shape(logits: &Tensor, rows: usize) -> Result<()> {
    match *logits.dims() {
        [m, c] if m == rows && c > 0 => Ok(()),
        _ => Err(Error::ShapeMismatch(format!(
            "the explained function must map {rows} input rows to logits [{rows}, classes], got {:?}",
            logits.dims()
        ))),
    }
}

/// The index of the largest logit (lowest among ties); NaN logits are an error.
pub(crate) fn argmax(logits: &[f64]) -> Result<usize> {
    if let Some(first_index) = logits.iter().position(|v| v.is_nan()) {
        return Err(Error::NonFinite {
            what: "logits",
            count: logits.iter().filter(|v| v.is_nan()).count(),
            first_index,
        });
    }
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quadrature_weights_sum_to_one() {
        for rule in [PathRule::Midpoint, PathRule::Trapezoid] {
            for steps in [1, 2, 7, 64] {
                let p = IntegratedGradients::new(steps).rule(rule).points();
                let total: f64 = p.iter().map(|p| p.1).sum();
                assert!((total - 1.0).abs() < 1e-12);
                assert!(p.iter().all(|p| (0.0..=1.0).contains(&p.0)));
            }
        }
        let t = IntegratedGradients::new(2)
            .rule(PathRule::Trapezoid)
            .points();
        assert_eq!(t, [(0.0, 0.25), (0.5, 0.5), (1.0, 0.25)]);
    }

    #[test]
    fn log_probability_score_is_a_log_softmax() {
        let l = [1.0, 2.0, 0.5];
        let z: f64 = l.iter().map(|v: &f64| v.exp()).sum();
        assert!((Score::LogProbability.of(&l, 1) - (2f64.exp() / z).ln()).abs() < 1e-12);
        assert_eq!(Score::Logit.of(&l, 2), 0.5);
    }
}
