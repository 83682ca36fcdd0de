//! Faithfulness of a model's own attributions: deletion and insertion curves, their areas,
//! comprehensiveness and sufficiency.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::explain::attribution::{Attribution, Baseline};
use crate::explain::mean::MeanEstimate;
use crate::explain::tokens::prompt_embeddings;
use crate::mis::{Bootstrap, Interval};
use crate::model::Llama;

/// Rows per forward pass when evaluating the masked inputs.
const ROWS_PER_PASS: usize = 32;

/// Settings: how many points the curves have and where comprehensiveness and sufficiency
/// are read.
///
/// Features are ranked by their attribution, most positive first (the features that speak
/// most *for* the target class; ties towards the lower index). The **deletion** curve
/// replaces the top `k` features of the input by the baseline, for `k = 0 … d`, and records
/// the target's probability; a faithful explanation makes it fall fast (low area). The
/// **insertion** curve starts from the baseline and puts the top `k` input features back; a
/// faithful explanation makes it rise fast (high area). Areas use the trapezoid rule over the
/// removed fraction `k/d ∈ [0, 1]`.
///
/// **Comprehensiveness** at fraction `q` is `p(x) − p(x without its top ⌈q·d⌉ features)`,
/// **sufficiency** `p(x) − p(only the top ⌈q·d⌉ features)` (DeYoung et al. 2020, ERASER);
/// both are averaged over the evaluation fractions. High comprehensiveness and low
/// sufficiency mean a faithful explanation.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::explain::{Attributor, Baseline, Faithfulness, Target};
/// use quantlens::model::{Mlp, MlpConfig, QuantizableModel};
///
/// let mlp = Mlp::new(MlpConfig::new(6, &[16], 3), 2, &Device::Cpu)?;
/// let x = Tensor::new(&[1f32, -0.5, 2.0, 0.3, -1.5, 0.8], &Device::Cpu)?;
/// let a = Attributor::integrated_gradients(32).attribute(|b| mlp.forward(b), &x, Target::Predicted)?;
/// let c = Faithfulness::new().curves(|b| mlp.forward(b), &x, &a, &Baseline::Zeros)?;
/// assert_eq!(c.deletion.len(), 7); // k = 0..=6
/// assert_eq!(c.deletion[0], c.insertion[6]); // both are p(x)
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Faithfulness {
    /// Number of curve intervals; `None` for one point per feature (`d + 1` points).
    pub steps: Option<usize>,
    /// Fractions `q ∈ (0, 1]` at which comprehensiveness and sufficiency are read.
    pub fractions: Vec<f64>,
}

impl Default for Faithfulness {
    fn default() -> Self {
        Faithfulness::new()
    }
}

impl Faithfulness {
    /// A point per feature; comprehensiveness and sufficiency at 10 %, 20 % and 50 %.
    pub fn new() -> Self {
        Faithfulness {
            steps: None,
            fractions: vec![0.1, 0.2, 0.5],
        }
    }

    /// `steps` intervals on the curves (at most one per feature).
    pub fn steps(mut self, steps: usize) -> Self {
        self.steps = Some(steps);
        self
    }

    /// Where comprehensiveness and sufficiency are read.
    pub fn fractions(mut self, fractions: &[f64]) -> Self {
        self.fractions = fractions.to_vec();
        self
    }

    /// The curves of one sample `x` (shape `[d, …]`) under `f: [m, d, …] → [m, classes]`,
    /// ranking the features by `attribution.values` and explaining `attribution.target`;
    /// removed features take the `baseline`'s values.
    pub fn curves<F>(
        &self,
        f: F,
        x: &Tensor,
        attribution: &Attribution,
        baseline: &Baseline,
    ) -> Result<FaithfulnessCurves>
    where
        F: Fn(&Tensor) -> Result<Tensor>,
    {
        self.validate()?;
        let x = x.to_dtype(DType::F32)?;
        let d = match x.dims().first() {
            Some(&d) if d > 0 => d,
            _ => {
                return Err(Error::EmptyTensor {
                    what: "faithfulness input",
                    shape: x.dims().to_vec(),
                });
            }
        };
        if attribution.values.len() != d {
            return Err(Error::ShapeMismatch(format!(
                "{} attributions for an input of {d} features",
                attribution.values.len()
            )));
        }
        crate::mis::check_scores("attributions", &attribution.values)?;
        let baseline = match baseline {
            Baseline::Zeros => x.zeros_like()?,
            Baseline::Input(b) if b.dims() == x.dims() => b.to_dtype(DType::F32)?,
            Baseline::Input(b) => {
                return Err(Error::ShapeMismatch(format!(
                    "baseline {:?} is not shaped like the input {:?}",
                    b.dims(),
                    x.dims()
                )));
            }
        };
        let mut order: Vec<usize> = (0..d).collect();
        let v = &attribution.values;
        order.sort_by(|&i, &j| v[j].total_cmp(&v[i]).then(i.cmp(&j)));
        let points = self.steps.map_or(d, |s| s.min(d));
        let ks: Vec<usize> = (0..=points)
            .map(|j| ((j * d) as f64 / points as f64).round() as usize)
            .collect();
        let eval_ks: Vec<usize> = self
            .fractions
            .iter()
            .map(|q| ((q * d as f64).ceil() as usize).clamp(1, d))
            .collect();
        // Masks: 1 keeps the input, 0 takes the baseline. Deletion masks for the curve, then
        // insertion masks, then the evaluation fractions' two of each.
        let mut masks: Vec<Vec<f32>> = Vec::new();
        for insert in [false, true] {
            for &k in ks.iter().chain(&eval_ks) {
                masks.push(mask(&order, k, insert));
            }
        }
        let probs = probabilities(&f, &x, &baseline, &masks, attribution.target)?;
        let (n_curve, n_eval) = (ks.len(), eval_ks.len());
        let block = n_curve + n_eval;
        let deletion = probs[..n_curve].to_vec();
        let insertion = probs[block..block + n_curve].to_vec();
        let p_x = deletion[0];
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let removed = &probs[n_curve..block];
        let kept = &probs[block + n_curve..];
        let fractions: Vec<f64> = ks.iter().map(|&k| k as f64 / d as f64).collect();
        Ok(FaithfulnessCurves {
            target: attribution.target,
            deletion_auc: trapezoid(&fractions, &deletion),
            insertion_auc: trapezoid(&fractions, &insertion),
            comprehensiveness: p_x - mean(removed),
            sufficiency: p_x - mean(kept),
            fractions,
            deletion,
            insertion,
        })
    }

    /// The curves of a prompt's tokens for a [`Llama`]'s next-token prediction, from token
    /// attributions ([`Attributor::attribute_tokens`](super::Attributor::attribute_tokens)):
    /// a removed token's embedding takes the baseline's row (zeros by default).
    pub fn token_curves(
        &self,
        model: &Llama,
        ids: &[u32],
        attribution: &Attribution,
        baseline: &Baseline,
    ) -> Result<FaithfulnessCurves> {
        let embeddings = prompt_embeddings(model, ids)?;
        self.curves(
            |e| model.forward_embeddings_last(e),
            &embeddings,
            attribution,
            baseline,
        )
    }

    fn validate(&self) -> Result<()> {
        if self.steps == Some(0) {
            return Err(Error::InvalidParameter {
                name: "steps",
                reason: "a curve needs at least one interval".into(),
            });
        }
        if self.fractions.is_empty()
            || self
                .fractions
                .iter()
                .any(|q| q.is_nan() || *q <= 0.0 || *q > 1.0)
        {
            return Err(Error::InvalidParameter {
                name: "fractions",
                reason: format!(
                    "need at least one fraction, each in (0, 1], got {:?}",
                    self.fractions
                ),
            });
        }
        Ok(())
    }
}

/// The deletion and insertion curves of one sample and the scores read from them.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FaithfulnessCurves {
    /// The class explained.
    pub target: usize,
    /// Fraction of the features removed (deletion) or inserted (insertion) at each point,
    /// from 0 to 1.
    pub fractions: Vec<f64>,
    /// Target probability with the top fraction of features replaced by the baseline.
    pub deletion: Vec<f64>,
    /// Target probability of the baseline with the top fraction of features put back.
    pub insertion: Vec<f64>,
    /// Area under the deletion curve (lower is more faithful).
    pub deletion_auc: f64,
    /// Area under the insertion curve (higher is more faithful).
    pub insertion_auc: f64,
    /// Mean over the evaluation fractions of `p(x) − p(x without the top features)`.
    pub comprehensiveness: f64,
    /// Mean over the evaluation fractions of `p(x) − p(only the top features)`.
    pub sufficiency: f64,
}

/// Mean faithfulness scores over samples, with percentile-bootstrap intervals: one report row.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct FaithfulnessSummary {
    /// Number of samples.
    pub n: usize,
    /// Mean deletion AUC.
    pub deletion_auc: f64,
    /// Its interval.
    pub deletion_auc_ci: Option<Interval>,
    /// Mean insertion AUC.
    pub insertion_auc: f64,
    /// Its interval.
    pub insertion_auc_ci: Option<Interval>,
    /// Mean comprehensiveness.
    pub comprehensiveness: f64,
    /// Its interval.
    pub comprehensiveness_ci: Option<Interval>,
    /// Mean sufficiency.
    pub sufficiency: f64,
    /// Its interval.
    pub sufficiency_ci: Option<Interval>,
}

impl FaithfulnessSummary {
    /// The means of `samples` (at least one), with intervals from `bootstrap` if given.
    pub fn of(samples: &[FaithfulnessCurves], bootstrap: Option<&Bootstrap>) -> Result<Self> {
        let mean = |pick: fn(&FaithfulnessCurves) -> f64| -> Result<MeanEstimate> {
            let v: Vec<f64> = samples.iter().map(pick).collect();
            MeanEstimate::of(&v, bootstrap)
        };
        let (del, ins, com, suf) = (
            mean(|c| c.deletion_auc)?,
            mean(|c| c.insertion_auc)?,
            mean(|c| c.comprehensiveness)?,
            mean(|c| c.sufficiency)?,
        );
        Ok(FaithfulnessSummary {
            n: samples.len(),
            deletion_auc: del.mean,
            deletion_auc_ci: del.ci,
            insertion_auc: ins.mean,
            insertion_auc_ci: ins.ci,
            comprehensiveness: com.mean,
            comprehensiveness_ci: com.ci,
            sufficiency: suf.mean,
            sufficiency_ci: suf.ci,
        })
    }
}

/// The feature mask that keeps the input everywhere but the top `k` (deletion), or only at
/// the top `k` (insertion).
fn mask(order: &[usize], k: usize, insert: bool) -> Vec<f32> {
    let (top, rest) = if insert { (1.0, 0.0) } else { (0.0, 1.0) };
    let mut m = vec![rest; order.len()];
    for &i in &order[..k] {
        m[i] = top;
    }
    m
}

/// The target probability of `baseline + mask ⊙ (x − baseline)` for every mask, in f64.
fn probabilities<F>(
    f: &F,
    x: &Tensor,
    baseline: &Tensor,
    masks: &[Vec<f32>],
    target: usize,
) -> Result<Vec<f64>>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    let d = x.dims()[0];
    let diff = (x - baseline)?.unsqueeze(0)?;
    let base = baseline.unsqueeze(0)?;
    let mut out = Vec::with_capacity(masks.len());
    for chunk in masks.chunks(ROWS_PER_PASS) {
        let mut shape = vec![chunk.len(), d];
        shape.extend(std::iter::repeat_n(1, x.rank() - 1));
        let m = Tensor::from_vec(chunk.concat(), shape, x.device())?;
        let inputs = m.broadcast_mul(&diff)?.broadcast_add(&base)?;
        let logits = f(&inputs)?.detach();
        match *logits.dims() {
            [r, c] if r == chunk.len() && target < c => {}
            _ => {
                return Err(Error::ShapeMismatch(format!(
                    "the model must map {} rows to logits [{}, classes > {target}], got {:?}",
                    chunk.len(),
                    chunk.len(),
                    logits.dims()
                )));
            }
        }
        for row in logits.to_dtype(DType::F64)?.to_vec2::<f64>()? {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = row.iter().map(|v| (v - max).exp()).sum();
            out.push((row[target] - max).exp() / z);
        }
    }
    Ok(out)
}

/// Trapezoid-rule area of `y` over increasing `x`.
fn trapezoid(x: &[f64], y: &[f64]) -> f64 {
    x.windows(2)
        .zip(y.windows(2))
        .map(|(x, y)| (x[1] - x[0]) * (y[0] + y[1]) / 2.0)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_remove_or_insert_the_top_features() {
        let order = [2, 0, 1];
        assert_eq!(mask(&order, 1, false), [1.0, 1.0, 0.0]);
        assert_eq!(mask(&order, 2, true), [1.0, 0.0, 1.0]);
        assert_eq!(mask(&order, 0, true), [0.0, 0.0, 0.0]);
    }

    #[test]
    fn trapezoid_area_of_a_line() {
        assert!((trapezoid(&[0.0, 0.5, 1.0], &[1.0, 0.5, 0.0]) - 0.5).abs() < 1e-15);
    }
}
