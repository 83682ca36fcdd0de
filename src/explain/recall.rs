//! Knowledge recall of a language model on cloze facts: exact match of the greedy
//! continuation and the teacher-forced log-probability of the true answer.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::explain::facts::FactPrompt;
use crate::explain::mean::MeanEstimate;
use crate::mis::{Bootstrap, Interval};
use crate::model::{Llama, QuantizableModel};

/// How one model did on one fact.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct FactOutcome {
    /// Whether greedy decoding after the prompt produces every answer token.
    pub exact_match: bool,
    /// Whether the greedy next token is the first answer token.
    pub first_token_match: bool,
    /// `Σ_j log p(answer_j | prompt, answer_<j)`, teacher-forced (natural log).
    pub answer_log_prob: f64,
    /// `log p(answer_0 | prompt)`.
    pub first_token_log_prob: f64,
    /// Rank of the first answer token among the next-token logits (1 = the greedy choice;
    /// ties counted in its favour).
    pub first_token_rank: usize,
    /// The greedy next token after the prompt.
    pub predicted: u32,
}

/// Score `model` on one fact with a single forward pass over `prompt + answer[..−1]`.
///
/// Greedy decoding reproduces the answer exactly when, at every answer position, the answer
/// token is the argmax given the true prefix (the lowest id among ties, as
/// [`Llama::generate`] breaks them): if every earlier token was the answer's, greedy decoding
/// conditions on the same prefix. So no generation loop is needed.
///
/// ```
/// use candle_core::Device;
/// use quantlens::explain::{FactPrompt, recall};
/// use quantlens::model::{GenerateConfig, Llama, LlamaConfig};
///
/// let model = Llama::new(LlamaConfig::tiny(40, 16, 1, 2, 1), 5, &Device::Cpu)?;
/// let greedy = model.generate(&[3, 1, 4], &GenerateConfig::new(2))?;
/// let outcome = recall(&model, &FactPrompt::new(vec![3, 1, 4], greedy)?)?;
/// assert!(outcome.exact_match && outcome.first_token_rank == 1);
/// # Ok::<(), quantlens::Error>(())
/// ```
pub fn recall(model: &Llama, fact: &FactPrompt) -> Result<FactOutcome> {
    if fact.prompt.is_empty() || fact.answer.is_empty() {
        return Err(Error::EmptyTensor {
            what: "fact prompt or answer ids",
            shape: vec![fact.prompt.len(), fact.answer.len()],
        });
    }
    let (p, a) = (fact.prompt.len(), fact.answer.len());
    let ids: Vec<u32> = fact
        .prompt
        .iter()
        .chain(&fact.answer[..a - 1])
        .copied()
        .collect();
    let input = Tensor::from_slice(&ids, (1, ids.len()), model.device())?;
    // Positions p − 1 … p + a − 2 predict the answer tokens.
    let logits = model
        .forward(&input)?
        .squeeze(0)?
        .narrow(0, p - 1, a)?
        .to_dtype(DType::F64)?
        .to_vec2::<f64>()?;
    let mut answer_log_prob = 0.0;
    let mut exact_match = true;
    let mut first = (0.0, 0, 0u32);
    for (j, (row, &token)) in logits.iter().zip(&fact.answer).enumerate() {
        let t = token as usize;
        if t >= row.len() {
            return Err(Error::TargetOutOfRange {
                what: "fact answer ids",
                index: j,
                value: i64::from(token),
                classes: row.len(),
            });
        }
        let (lp, rank, argmax) = log_prob_rank(row, t)?;
        answer_log_prob += lp;
        exact_match &= argmax == t;
        if j == 0 {
            first = (lp, rank, argmax as u32);
        }
    }
    Ok(FactOutcome {
        exact_match,
        first_token_match: first.2 == fact.answer[0],
        answer_log_prob,
        first_token_log_prob: first.0,
        first_token_rank: first.1,
        predicted: first.2,
    })
}

/// `(log softmax(row)[t], 1 + #{logits > row[t]}, argmax)` in f64; NaN logits are an error.
pub(crate) fn log_prob_rank(row: &[f64], t: usize) -> Result<(f64, usize, usize)> {
    if let Some(first_index) = row.iter().position(|v| v.is_nan()) {
        return Err(Error::NonFinite {
            what: "logits",
            count: row.iter().filter(|v| v.is_nan()).count(),
            first_index,
        });
    }
    let argmax = crate::explain::attribution::argmax(row)?;
    let max = row[argmax];
    let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
    let rank = 1 + row.iter().filter(|&&v| v > row[t]).count();
    Ok((row[t] - lse, rank, argmax))
}

/// Recall over facts, one report row.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RecallSummary {
    /// Number of facts.
    pub n: usize,
    /// Share of facts recalled exactly.
    pub exact_match: f64,
    /// Its interval.
    pub exact_match_ci: Option<Interval>,
    /// Share of facts whose first answer token is the greedy choice.
    pub first_token_match: f64,
    /// Mean teacher-forced log-probability of the whole answer.
    pub mean_log_prob: f64,
    /// Its interval.
    pub mean_log_prob_ci: Option<Interval>,
}

impl RecallSummary {
    /// The summary of `outcomes` (at least one), with intervals from `bootstrap` if given.
    pub fn of(outcomes: &[FactOutcome], bootstrap: Option<&Bootstrap>) -> Result<Self> {
        let mean = |pick: fn(&FactOutcome) -> f64| -> Result<MeanEstimate> {
            let v: Vec<f64> = outcomes.iter().map(pick).collect();
            MeanEstimate::of(&v, bootstrap)
        };
        let exact = mean(|o| f64::from(u8::from(o.exact_match)))?;
        let first = mean(|o| f64::from(u8::from(o.first_token_match)))?;
        let lp = mean(|o| o.answer_log_prob)?;
        Ok(RecallSummary {
            n: outcomes.len(),
            exact_match: exact.mean,
            exact_match_ci: exact.ci,
            first_token_match: first.mean,
            mean_log_prob: lp.mean,
            mean_log_prob_ci: lp.ci,
        })
    }
}
