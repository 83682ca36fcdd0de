//! Gradient-based minimal counterfactuals for a classifier, their size and validity on the
//! model they were found on, and the share that stays valid on another model (a quantized
//! copy).

use candle_core::{DType, Tensor, Var};

use crate::error::{Error, Result};
use crate::explain::attribution::{argmax, finite_f32};
use crate::explain::mean::MeanEstimate;
use crate::mis::{Bootstrap, Interval};

/// What the counterfactual must achieve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Goal {
    /// Any class but the original prediction, searched toward the runner-up class (the
    /// second-largest logit at the input).
    #[default]
    AwayFromPrediction,
    /// This class.
    Class(usize),
}

/// Settings of the counterfactual search.
///
/// The search is ISTA on the edit `δ = x' − x` (Wachter et al. 2017, with an elastic-net
/// penalty as in Dhurandhar et al. 2018):
///
/// `δ ← prox_{ηλ₁‖·‖₁}(δ − η (∇ CE(f(x + δ), t) + 2λ₂ δ))`,
///
/// the proximal step being soft-thresholding (it zeroes small edits, so the counterfactual
/// changes few features). Each row stops as soon as its goal is met with the required logit
/// margin, which keeps the edit near minimal; after `max_steps` an unmet row is reported
/// invalid. Deterministic: no random start, no seed.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::explain::CounterfactualSearch;
/// use quantlens::model::{Mlp, MlpConfig, QuantizableModel};
///
/// let mlp = Mlp::new(MlpConfig::new(3, &[8], 2), 4, &Device::Cpu)?;
/// let x = Tensor::new(&[[0.5f32, -1.0, 2.0], [1.0, 1.0, -1.0]], &Device::Cpu)?;
/// let cfs = CounterfactualSearch::new().step_size(0.2).search(|b| mlp.forward(b), &x)?;
/// for cf in cfs.iter().filter(|cf| cf.valid) {
///     assert_ne!(cf.class, cf.original_class);
/// }
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CounterfactualSearch {
    /// What a counterfactual must achieve.
    pub goal: Goal,
    /// Gradient step `η`.
    pub step_size: f64,
    /// Most gradient steps per row.
    pub max_steps: usize,
    /// L1 penalty `λ₁` on the edit (soft-thresholding).
    pub l1: f64,
    /// L2 penalty `λ₂` on the edit.
    pub l2: f64,
    /// Required logit margin: the goal class must lead every other class (or, away from the
    /// prediction, some class must lead the original one) by at least this much.
    pub margin: f64,
    /// Optional box the counterfactual must stay in, per feature.
    pub bounds: Option<(f64, f64)>,
}

impl Default for CounterfactualSearch {
    fn default() -> Self {
        CounterfactualSearch::new()
    }
}

impl CounterfactualSearch {
    /// Away from the prediction, `η = 0.1`, 500 steps, `λ₁ = 0.01`, `λ₂ = 0`, margin 0,
    /// unbounded.
    pub fn new() -> Self {
        CounterfactualSearch {
            goal: Goal::AwayFromPrediction,
            step_size: 0.1,
            max_steps: 500,
            l1: 0.01,
            l2: 0.0,
            margin: 0.0,
            bounds: None,
        }
    }

    /// A different goal.
    pub fn goal(mut self, goal: Goal) -> Self {
        self.goal = goal;
        self
    }

    /// Gradient step size.
    pub fn step_size(mut self, eta: f64) -> Self {
        self.step_size = eta;
        self
    }

    /// Step cap.
    pub fn max_steps(mut self, steps: usize) -> Self {
        self.max_steps = steps;
        self
    }

    /// Elastic-net penalties on the edit.
    pub fn penalties(mut self, l1: f64, l2: f64) -> Self {
        self.l1 = l1;
        self.l2 = l2;
        self
    }

    /// Required logit margin.
    pub fn margin(mut self, margin: f64) -> Self {
        self.margin = margin;
        self
    }

    /// Keep every feature in `[lo, hi]`.
    pub fn bounds(mut self, lo: f64, hi: f64) -> Self {
        self.bounds = Some((lo, hi));
        self
    }

    fn validate(&self) -> Result<()> {
        let bad = |name, reason: String| Err(Error::InvalidParameter { name, reason });
        let nonneg = |v: f64| v.is_finite() && v >= 0.0;
        if !(self.step_size.is_finite() && self.step_size > 0.0) {
            return bad(
                "step_size",
                format!("must be finite and > 0, got {}", self.step_size),
            );
        }
        if self.max_steps == 0 {
            return bad("max_steps", "must be at least 1".into());
        }
        if !nonneg(self.l1) || !nonneg(self.l2) || !nonneg(self.margin) {
            return bad(
                "penalties / margin",
                format!(
                    "l1, l2 and margin must be finite and ≥ 0, got {}, {}, {}",
                    self.l1, self.l2, self.margin
                ),
            );
        }
        if let Some((lo, hi)) = self.bounds
            && (lo.is_nan() || hi.is_nan() || lo > hi)
        {
            return bad("bounds", format!("need lo ≤ hi, got [{lo}, {hi}]"));
        }
        Ok(())
    }

    /// One counterfactual per row of `x: [n, d]` (finite floats) for the classifier
    /// `f: [m, d] → [m, classes]`, all rows searched together (each stops on its own).
    pub fn search<F>(&self, f: F, x: &Tensor) -> Result<Vec<Counterfactual>>
    where
        F: Fn(&Tensor) -> Result<Tensor>,
    {
        self.validate()?;
        let (n, d) = check_rows(x)?;
        let x0: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let device = x.device();
        let logits0 = logits_of(&f, &x0, (n, d), device)?;
        let classes = logits0[0].len();
        let mut original = Vec::with_capacity(n);
        let mut targets = Vec::with_capacity(n);
        for row in &logits0 {
            let y0 = argmax(row)?;
            let t = match self.goal {
                Goal::Class(c) if c < classes => c,
                Goal::Class(c) => {
                    return Err(Error::TargetOutOfRange {
                        what: "counterfactual goal class",
                        index: 0,
                        value: c as i64,
                        classes,
                    });
                }
                Goal::AwayFromPrediction if classes < 2 => {
                    return Err(Error::InvalidParameter {
                        name: "classes",
                        reason: "a counterfactual needs at least two classes".into(),
                    });
                }
                Goal::AwayFromPrediction => runner_up(row, y0),
            };
            original.push(y0);
            targets.push(t);
        }
        let target_ids = Tensor::from_vec(
            targets.iter().map(|&t| t as u32).collect::<Vec<_>>(),
            (n, 1),
            device,
        )?;
        let mut delta = vec![0.0f64; n * d];
        let mut steps = vec![0usize; n];
        // A row already in its goal class has no counterfactual: done, and invalid.
        let mut done: Vec<bool> = original.iter().zip(&targets).map(|(o, t)| o == t).collect();
        let mut valid = vec![false; n];
        let eta = self.step_size;
        for step in 0..=self.max_steps {
            let current: Vec<f32> = x0
                .iter()
                .zip(&delta)
                .map(|(&x, &e)| (f64::from(x) + e) as f32)
                .collect();
            let var = Var::from_tensor(&Tensor::from_vec(current, (n, d), device)?)?;
            let logits = f(var.as_tensor())?;
            let rows = logits.to_dtype(DType::F64)?.to_vec2::<f64>()?;
            for i in 0..n {
                if !done[i] && self.reached(&rows[i], original[i], targets[i]) {
                    done[i] = true;
                    valid[i] = true;
                    steps[i] = step;
                }
            }
            if step == self.max_steps || done.iter().all(|&v| v) {
                for (i, s) in steps.iter_mut().enumerate() {
                    if !valid[i] && original[i] != targets[i] {
                        *s = step;
                    }
                }
                break;
            }
            // Cross-entropy toward the target of every row still searching.
            let active: Vec<f32> = done.iter().map(|&v| if v { 0.0 } else { 1.0 }).collect();
            let active = Tensor::from_vec(active, (n, 1), device)?;
            let log_p = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, 1)?
                .gather(&target_ids, 1)?;
            let loss = (log_p * active)?.sum_all()?.neg()?;
            let grads = loss.backward()?;
            let g: Vec<f32> = match grads.get(var.as_tensor()) {
                Some(g) => g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
                None => vec![0.0; n * d],
            };
            for i in (0..n).filter(|&i| !done[i]) {
                for j in i * d..(i + 1) * d {
                    let e = delta[j] - eta * (f64::from(g[j]) + 2.0 * self.l2 * delta[j]);
                    // Soft-thresholding: the proximal step of the L1 penalty.
                    let e = e.signum() * (e.abs() - eta * self.l1).max(0.0);
                    delta[j] = match self.bounds {
                        Some((lo, hi)) => {
                            let x = f64::from(x0[j]);
                            (x + e).clamp(lo, hi) - x
                        }
                        None => e,
                    };
                }
            }
        }
        let final_inputs: Vec<f32> = x0
            .iter()
            .zip(&delta)
            .map(|(&x, &e)| (f64::from(x) + e) as f32)
            .collect();
        let final_logits = logits_of(&f, &final_inputs, (n, d), device)?;
        (0..n)
            .map(|i| {
                let edit = &delta[i * d..(i + 1) * d];
                Ok(Counterfactual {
                    input: final_inputs[i * d..(i + 1) * d].to_vec(),
                    original_class: original[i],
                    target_class: targets[i],
                    class: argmax(&final_logits[i])?,
                    valid: valid[i],
                    steps: steps[i],
                    l1: edit.iter().map(|e| e.abs()).sum(),
                    l2: edit.iter().map(|e| e * e).sum::<f64>().sqrt(),
                })
            })
            .collect()
    }

    /// Whether a row with these logits meets the goal with the margin.
    fn reached(&self, logits: &[f64], original: usize, target: usize) -> bool {
        let lead = |c: usize| {
            let other = logits
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != c)
                .map(|(_, &v)| v)
                .fold(f64::NEG_INFINITY, f64::max);
            logits[c] - other
        };
        match self.goal {
            Goal::Class(_) => lead(target) >= self.margin && lead(target) > 0.0,
            Goal::AwayFromPrediction => -lead(original) >= self.margin && lead(original) < 0.0,
        }
    }
}

/// One counterfactual and what it achieved on the model it was found on.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Counterfactual {
    /// The counterfactual input `x'`.
    pub input: Vec<f32>,
    /// The model's prediction at the original input.
    pub original_class: usize,
    /// The class the search moved toward.
    pub target_class: usize,
    /// The model's prediction at `x'`.
    pub class: usize,
    /// Whether the goal was met (with the margin) within the step cap; always false when
    /// the goal class already was the prediction (nothing to flip).
    pub valid: bool,
    /// Gradient steps taken.
    pub steps: usize,
    /// `‖x' − x‖₁`.
    pub l1: f64,
    /// `‖x' − x‖₂`.
    pub l2: f64,
}

/// How counterfactuals found on one model fare on another.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct CounterfactualValidity {
    /// Counterfactuals checked: those valid on the model they were found on.
    pub n: usize,
    /// Share whose input flips the other model's own prediction (`g(x') ≠ g(x)`).
    pub flip_rate: f64,
    /// Share the other model assigns to the counterfactual's target class.
    pub target_rate: f64,
}

/// Check counterfactuals `cfs` (found for the rows of `x: [n, d]` on some model) on the
/// classifier `g`: only those valid where they were found count.
pub fn validity_on<F>(g: F, x: &Tensor, cfs: &[Counterfactual]) -> Result<CounterfactualValidity>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    let (n, d) = check_rows(x)?;
    if cfs.len() != n {
        return Err(Error::ShapeMismatch(format!(
            "{} counterfactuals for {n} input rows",
            cfs.len()
        )));
    }
    if let Some(bad) = cfs.iter().find(|c| c.input.len() != d) {
        return Err(Error::ShapeMismatch(format!(
            "a counterfactual of {} features for inputs of {d}",
            bad.input.len()
        )));
    }
    let keep: Vec<usize> = (0..n).filter(|&i| cfs[i].valid).collect();
    if keep.is_empty() {
        return Err(Error::TooFewSamples {
            what: "valid counterfactuals to check",
            needed: 1,
            got: 0,
        });
    }
    let x0 = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let originals: Vec<f32> = keep
        .iter()
        .flat_map(|&i| x0[i * d..(i + 1) * d].iter().copied())
        .collect();
    let edited: Vec<f32> = keep
        .iter()
        .flat_map(|&i| cfs[i].input.iter().copied())
        .collect();
    let m = keep.len();
    let before = logits_of(&g, &originals, (m, d), x.device())?;
    let after = logits_of(&g, &edited, (m, d), x.device())?;
    let (mut flips, mut hits) = (0usize, 0usize);
    for (k, &i) in keep.iter().enumerate() {
        let c = argmax(&after[k])?;
        flips += usize::from(c != argmax(&before[k])?);
        hits += usize::from(c == cfs[i].target_class);
    }
    Ok(CounterfactualValidity {
        n: m,
        flip_rate: flips as f64 / m as f64,
        target_rate: hits as f64 / m as f64,
    })
}

/// Counterfactuals of one model summarised: one report row.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct CounterfactualSummary {
    /// Rows searched.
    pub n: usize,
    /// Share of rows whose counterfactual met its goal (the label-flip rate on the model
    /// itself).
    pub validity: f64,
    /// Mean `‖x' − x‖₁` of the valid counterfactuals (NaN when none is valid).
    pub l1: f64,
    /// Its interval.
    pub l1_ci: Option<Interval>,
    /// Mean `‖x' − x‖₂` of the valid counterfactuals (NaN when none is valid).
    pub l2: f64,
    /// Its interval.
    pub l2_ci: Option<Interval>,
    /// Mean gradient steps over all rows.
    pub steps: f64,
}

impl CounterfactualSummary {
    /// The summary of `cfs` (at least one), with intervals from `bootstrap` if given.
    pub fn of(cfs: &[Counterfactual], bootstrap: Option<&Bootstrap>) -> Result<Self> {
        if cfs.is_empty() {
            return Err(Error::TooFewSamples {
                what: "counterfactuals",
                needed: 1,
                got: 0,
            });
        }
        let valid: Vec<&Counterfactual> = cfs.iter().filter(|c| c.valid).collect();
        let size = |pick: fn(&Counterfactual) -> f64| -> Result<(f64, Option<Interval>)> {
            if valid.is_empty() {
                return Ok((f64::NAN, None));
            }
            let v: Vec<f64> = valid.iter().map(|c| pick(c)).collect();
            let m = MeanEstimate::of(&v, bootstrap)?;
            Ok((m.mean, m.ci))
        };
        let (l1, l1_ci) = size(|c| c.l1)?;
        let (l2, l2_ci) = size(|c| c.l2)?;
        Ok(CounterfactualSummary {
            n: cfs.len(),
            validity: valid.len() as f64 / cfs.len() as f64,
            l1,
            l1_ci,
            l2,
            l2_ci,
            steps: cfs.iter().map(|c| c.steps as f64).sum::<f64>() / cfs.len() as f64,
        })
    }
}

/// The second-largest logit's class (the lowest index among ties), excluding `top`.
fn runner_up(logits: &[f64], top: usize) -> usize {
    let mut best: Option<usize> = None;
    for (i, &v) in logits.iter().enumerate() {
        if i != top && best.is_none_or(|b| v > logits[b]) {
            best = Some(i);
        }
    }
    best.unwrap_or(top)
}

/// `[n, d]` with `n, d ≥ 1`, a float dtype and finite values.
fn check_rows(x: &Tensor) -> Result<(usize, usize)> {
    let (n, d) = match *x.dims() {
        [n, d] => (n, d),
        _ => {
            return Err(Error::RankMismatch {
                what: "counterfactual inputs [rows, features]",
                expected: 2,
                shape: x.dims().to_vec(),
            });
        }
    };
    if n == 0 || d == 0 {
        return Err(Error::EmptyTensor {
            what: "counterfactual inputs",
            shape: x.dims().to_vec(),
        });
    }
    finite_f32("counterfactual inputs", x)?;
    Ok((n, d))
}

/// `f` on host rows `data: [n, d]`, as f64 rows checked to be `[n, classes]`.
fn logits_of<F>(
    f: &F,
    data: &[f32],
    (n, d): (usize, usize),
    device: &candle_core::Device,
) -> Result<Vec<Vec<f64>>>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    let logits = f(&Tensor::from_slice(data, (n, d), device)?)?.detach();
    match *logits.dims() {
        [r, c] if r == n && c > 0 => {}
        _ => {
            return Err(Error::ShapeMismatch(format!(
                "the classifier must map {n} rows to logits [{n}, classes], got {:?}",
                logits.dims()
            )));
        }
    }
    Ok(logits.to_dtype(DType::F64)?.to_vec2::<f64>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_up_skips_the_top_class() {
        assert_eq!(runner_up(&[1.0, 5.0, 3.0, 3.0], 1), 2);
        assert_eq!(runner_up(&[9.0, 1.0], 0), 1);
    }
}
