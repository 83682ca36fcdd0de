//! Explanation columns for an audit: [`ClassifierExplanations`] and [`FactRecallColumns`]
//! turn the probes of this module into named figures per row, for
//! [`Audit::metrics`](crate::audit::Audit::metrics).

use candle_core::{D, Tensor};

use crate::error::Result;
use crate::model::{Llama, QuantizableModel};

use super::agreement::AgreementSummary;
use super::attribution::{Attributor, Target};
use super::counterfactual::{CounterfactualSearch, validity_on};
use super::facts::FactPrompt;
use super::recall::{RecallSummary, recall};

/// Attribution agreement and counterfactual validity of a classifier against its
/// full-precision original, as audit columns.
///
/// For each row's model, on the given inputs:
/// - `attr_spearman`, `attr_kendall`, `attr_top{k}_jaccard`, `attr_cosine`: mean agreement of
///   the row model's attributions with the full-precision model's, both for the
///   full-precision prediction (gradient × input by default);
/// - `cf_still_valid`: the fraction of the full-precision model's minimal counterfactuals
///   (valid where found) that still change this model's prediction.
///
/// The full-precision row scores 1 everywhere, by construction.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::explain::ClassifierExplanations;
/// use quantlens::model::{Mlp, MlpConfig};
///
/// let dev = Device::Cpu;
/// let mlp = Mlp::new(MlpConfig::new(4, &[16], 3), 1, &dev)?;
/// let x = Tensor::new(&[[0.5f32, -1.0, 0.3, 2.0], [1.5, 0.2, -0.7, 0.1]], &dev)?;
/// let columns = ClassifierExplanations::new(x).top_k(2).columns(&mlp, &mlp)?;
/// assert!(columns.iter().all(|(_, v)| (*v - 1.0).abs() < 1e-9));
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClassifierExplanations {
    inputs: Tensor,
    top_k: usize,
    attributor: Attributor,
    counterfactuals: Option<CounterfactualSearch>,
}

impl ClassifierExplanations {
    /// Columns on `inputs` (`[n, features]`): gradient × input, top-8 overlap, and
    /// counterfactuals from [`CounterfactualSearch::new`] with an L1 penalty of 0.01 (sparse,
    /// minimal changes).
    pub fn new(inputs: Tensor) -> Self {
        ClassifierExplanations {
            inputs,
            top_k: 8,
            attributor: Attributor::gradient_times_input(),
            counterfactuals: Some(CounterfactualSearch::new().penalties(0.01, 0.0)),
        }
    }

    /// Features compared by the top-k overlap.
    pub fn top_k(mut self, k: usize) -> Self {
        self.top_k = k;
        self
    }

    /// The attribution method (e.g. [`Attributor::integrated_gradients`]).
    pub fn attributor(mut self, attributor: Attributor) -> Self {
        self.attributor = attributor;
        self
    }

    /// The counterfactual search, or `None` to leave out the `cf_still_valid` column.
    pub fn counterfactuals(mut self, search: Option<CounterfactualSearch>) -> Self {
        self.counterfactuals = search;
        self
    }

    /// The columns for `model` against `full_precision`.
    pub fn columns<M: QuantizableModel>(
        &self,
        full_precision: &M,
        model: &M,
    ) -> Result<Vec<(String, f64)>> {
        let x = &self.inputs;
        let classes = full_precision
            .forward(x)?
            .argmax(D::Minus1)?
            .to_vec1::<u32>()?;
        let targets: Vec<Target> = classes.iter().map(|&c| Target::Class(c as usize)).collect();
        let a = self
            .attributor
            .attribute_rows(|b| full_precision.forward(b), x, &targets)?;
        let b = self
            .attributor
            .attribute_rows(|b| model.forward(b), x, &targets)?;
        let agreement = AgreementSummary::compare(&a, &b, self.top_k, None)?;
        let mut out = vec![
            ("attr_spearman".to_string(), agreement.spearman),
            ("attr_kendall".to_string(), agreement.kendall),
            (
                format!("attr_top{}_jaccard", self.top_k),
                agreement.top_k_jaccard,
            ),
            ("attr_cosine".to_string(), agreement.cosine),
        ];
        if let Some(search) = &self.counterfactuals {
            let found = search.search(|b| full_precision.forward(b), x)?;
            let validity = validity_on(|b| model.forward(b), x, &found)?;
            out.push(("cf_still_valid".to_string(), validity.flip_rate));
        }
        Ok(out)
    }
}

/// Fact recall of a language model as audit columns: `fact_exact_match` (fraction of facts
/// whose whole answer is the greedy continuation) and `fact_log_prob` (mean teacher-forced
/// log-probability of the answer, nats), over tokenized [`FACTS`](super::FACTS).
#[derive(Debug, Clone)]
pub struct FactRecallColumns {
    prompts: Vec<FactPrompt>,
}

impl FactRecallColumns {
    /// Columns over `prompts` (e.g. every fact of [`FACTS`](super::FACTS) tokenized).
    pub fn new(prompts: Vec<FactPrompt>) -> Self {
        FactRecallColumns { prompts }
    }

    /// The columns for `model`.
    pub fn columns(&self, model: &Llama) -> Result<Vec<(String, f64)>> {
        let outcomes = self
            .prompts
            .iter()
            .map(|p| recall(model, p))
            .collect::<Result<Vec<_>>>()?;
        let summary = RecallSummary::of(&outcomes, None)?;
        Ok(vec![
            ("fact_exact_match".to_string(), summary.exact_match),
            ("fact_log_prob".to_string(), summary.mean_log_prob),
        ])
    }
}
