//! The logit lens: what each block of a decoder already predicts. The residual stream after
//! block `l` at the last prompt position goes through the final RMSNorm and the LM head
//! ([`Llama::unembed`]); the answer's log-probability and rank there show in which layers the
//! answer emerges — and where quantization erases it. After the last block this is the
//! model's own prediction. (`EntRec` of Yang et al. 2024 is the same score for a bridge
//! entity's first token.)

use crate::error::{Error, Result};
use crate::explain::mean::MeanEstimate;
use crate::explain::neurons::{check_answer, last_position, trace_prompt};
use crate::explain::recall::log_prob_rank;
use crate::model::{Llama, LlamaTrace};

/// Per-block log-probability and rank of one answer token at the last prompt position.
///
/// ```
/// use candle_core::Device;
/// use quantlens::explain::LogitLens;
/// use quantlens::model::{Llama, LlamaConfig};
///
/// let model = Llama::new(LlamaConfig::tiny(40, 16, 3, 2, 1), 5, &Device::Cpu)?;
/// let lens = LogitLens::new(&model, &[3, 1, 4], 9)?;
/// assert_eq!(lens.log_probs.len(), 3);
/// assert!(lens.log_probs.iter().all(|&lp| lp <= 0.0));
/// assert!(lens.ranks.iter().all(|&r| (1..=40).contains(&r)));
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LogitLens {
    /// The answer token.
    pub answer: u32,
    /// `log softmax(LM head(norm(h_l)))[answer]` after each block `l`.
    pub log_probs: Vec<f64>,
    /// The answer's rank after each block (1 = the top prediction; ties in its favour).
    pub ranks: Vec<usize>,
}

impl LogitLens {
    /// The lens of `answer` after `prompt` (one traced pass).
    pub fn new(model: &Llama, prompt: &[u32], answer: u32) -> Result<Self> {
        let trace = trace_prompt(model, prompt)?;
        LogitLens::from_trace(model, &trace, answer)
    }

    /// The lens from a trace of the prompt (batch row 0, last position).
    pub fn from_trace(model: &Llama, trace: &LlamaTrace, answer: u32) -> Result<Self> {
        check_answer(answer, model.config().vocab_size)?;
        let last = last_position(trace)?;
        let mut log_probs = Vec::with_capacity(trace.hidden_states.len());
        let mut ranks = Vec::with_capacity(trace.hidden_states.len());
        for h in &trace.hidden_states {
            let row = model
                .unembed(&h.get(0)?.get(last)?)?
                .to_dtype(candle_core::DType::F64)?
                .to_vec1::<f64>()?;
            let (lp, rank, _) = log_prob_rank(&row, answer as usize)?;
            log_probs.push(lp);
            ranks.push(rank);
        }
        Ok(LogitLens {
            answer,
            log_probs,
            ranks,
        })
    }
}

/// The logit lens averaged over prompts, per block.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LogitLensSummary {
    /// Number of prompts.
    pub n: usize,
    /// Mean answer log-probability after each block.
    pub mean_log_prob: Vec<f64>,
    /// Share of prompts whose answer is the top-1 prediction after each block.
    pub top1_rate: Vec<f64>,
}

impl LogitLensSummary {
    /// The per-block means of `lenses` (at least one, all with the same number of blocks).
    pub fn of(lenses: &[LogitLens]) -> Result<Self> {
        if lenses.is_empty() {
            return Err(Error::TooFewSamples {
                what: "logit lenses",
                needed: 1,
                got: 0,
            });
        }
        let layers = lenses.first().map_or(0, |l| l.log_probs.len());
        if lenses.iter().any(|l| l.log_probs.len() != layers) {
            return Err(Error::ShapeMismatch(
                "logit lenses of models with different depths do not average".into(),
            ));
        }
        let mut mean_log_prob = Vec::with_capacity(layers);
        let mut top1_rate = Vec::with_capacity(layers);
        for l in 0..layers {
            let lp: Vec<f64> = lenses.iter().map(|x| x.log_probs[l]).collect();
            mean_log_prob.push(MeanEstimate::of(&lp, None)?.mean);
            let top: Vec<f64> = lenses
                .iter()
                .map(|x| f64::from(u8::from(x.ranks[l] == 1)))
                .collect();
            top1_rate.push(MeanEstimate::of(&top, None)?.mean);
        }
        Ok(LogitLensSummary {
            n: lenses.len(),
            mean_log_prob,
            top1_rate,
        })
    }

    /// Mean of the per-block mean log-probabilities over the last `k` blocks (all blocks when
    /// `k` exceeds the depth): one number for a report column.
    pub fn last_layers_mean(&self, k: usize) -> f64 {
        let start = self.mean_log_prob.len().saturating_sub(k.max(1));
        let tail = &self.mean_log_prob[start..];
        tail.iter().sum::<f64>() / tail.len().max(1) as f64
    }
}
