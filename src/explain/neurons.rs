//! FFN-neuron contribution scores for the answer token, the full-precision top-k threshold,
//! and how many neurons of another (quantized) model still clear it.

use candle_core::{D, DType, Tensor};

use crate::error::{Error, Result};
use crate::explain::mean::MeanEstimate;
use crate::mis::{Bootstrap, Interval};
use crate::model::{Llama, LlamaTrace, QuantizableModel};

/// Every FFN neuron's contribution to the answer token's logit at the last prompt position.
///
/// **Definition used here** (direct logit attribution through a frozen final norm). At the
/// last prompt position the final residual state is a sum of parts,
/// `h_L = e + Σ_l attn_l + Σ_l Σ_j m_{l,j} · W_down,l[:, j]`, with `m_{l,j}` the SwiGLU
/// activation of neuron `j` in block `l`. The answer's logit is
/// `z_y = (g ⊙ h_L / rms(h_L)) · u_y` (`g` the final RMSNorm gain, `u_y` the LM head row of
/// `y`); holding the normaliser `rms(h_L)` at its value for the actual pass makes `z_y`
/// linear in the parts, so
///
/// `c_{l,j} = m_{l,j} · (W_down,l[:, j] · (g ⊙ u_y)) / rms(h_L)`
///
/// and the neurons' scores plus the embedding's and the attention outputs' terms add up to
/// `z_y` exactly. This is `activation · (W_down[:, j] · unembedding of the answer)` with the
/// final norm folded in. The 2025 study behind this view (`papers.md` §3) scores a neuron by
/// how much it raises the answer's *log-probability*; our reconstruction of that,
/// `log p(y | h + m v) − log p(y | h)`, needs a softmax over the vocabulary per neuron
/// (~46 k softmaxes of 49 k logits per prompt for SmolLM2). To first order it is `c_{l,j}`
/// minus the same neuron's push on the expected unembedding `E_p[u]` (the partition
/// function's change), so the two rankings agree for neurons that write mostly along the
/// answer's own direction and can differ for neurons that lift many tokens at once. We keep
/// the logit form: it is what the issue asks for, and it decomposes the logit exactly.
///
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NeuronScores {
    /// Number of blocks.
    pub layers: usize,
    /// Neurons per block (the intermediate size).
    pub width: usize,
    /// `c_{l,j}`, block-major: `scores[l * width + j]`.
    pub scores: Vec<f64>,
    /// The answer token.
    pub answer: u32,
    /// The answer's logit at the last position.
    pub logit: f64,
}

impl NeuronScores {
    /// The scores of `answer` after `prompt` (one traced pass).
    ///
    /// ```
    /// use candle_core::Device;
    /// use quantlens::explain::NeuronScores;
    /// use quantlens::model::{Llama, LlamaConfig};
    ///
    /// let model = Llama::new(LlamaConfig::tiny(40, 16, 2, 2, 1), 5, &Device::Cpu)?;
    /// let s = NeuronScores::new(&model, &[3, 1, 4], 9)?;
    /// assert_eq!(s.scores.len(), 2 * model.config().intermediate_size);
    /// let tau = s.top_k_threshold(10)?;
    /// assert!(s.count_at_least(tau) >= 10);
    /// # Ok::<(), quantlens::Error>(())
    /// ```
    pub fn new(model: &Llama, prompt: &[u32], answer: u32) -> Result<Self> {
        let trace = trace_prompt(model, prompt)?;
        NeuronScores::from_trace(model, &trace, answer)
    }

    /// The scores from a trace of the prompt (batch row 0, last position).
    pub fn from_trace(model: &Llama, trace: &LlamaTrace, answer: u32) -> Result<Self> {
        let c = model.config();
        check_answer(answer, c.vocab_size)?;
        let last = last_position(trace)?;
        let h = trace
            .hidden_states
            .last()
            .ok_or_else(|| Error::InvalidParameter {
                name: "trace",
                reason: "holds no block".into(),
            })?
            .get(0)?
            .get(last)?;
        // w = g ⊙ u_y / rms(h_L): the direction whose dot product with a residual part is that
        // part's logit contribution (normaliser frozen).
        let rms = (h.sqr()?.mean_all()?.to_scalar::<f32>()? as f64 + c.rms_eps).sqrt();
        let u = model.lm_head().get(answer as usize)?;
        let w = ((u * model.final_norm())? / rms)?;
        let logit = model
            .unembed(&h)?
            .get(answer as usize)?
            .to_scalar::<f32>()? as f64;
        let mut scores = Vec::with_capacity(c.num_layers * c.intermediate_size);
        for (l, m) in trace.ffn_activations.iter().enumerate() {
            let m = m.get(0)?.get(last)?;
            let down = model.weight(&format!("blocks.{l}.mlp.down_proj"))?;
            // v_j = W_down[:, j] · w for every j at once: wᵀ W_down.
            let v = w.unsqueeze(0)?.matmul(&down)?.squeeze(0)?;
            let contrib = (m * v)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            scores.extend(contrib);
        }
        Ok(NeuronScores {
            layers: trace.ffn_activations.len(),
            width: c.intermediate_size,
            scores,
            answer,
            logit,
        })
    }

    /// The score of neuron `neuron` of block `layer`.
    pub fn get(&self, layer: usize, neuron: usize) -> Option<f64> {
        (neuron < self.width)
            .then(|| self.scores.get(layer * self.width + neuron).copied())
            .flatten()
    }

    /// `Σ_{l,j} c_{l,j}`: the FFNs' share of the answer's logit.
    pub fn total(&self) -> f64 {
        self.scores.iter().sum()
    }

    /// The `k`-th largest score (`1 ≤ k ≤` number of neurons): the threshold the top-k
    /// neurons clear.
    pub fn top_k_threshold(&self, k: usize) -> Result<f64> {
        crate::explain::rank::check_k(k, self.scores.len())?;
        let mut sorted = self.scores.clone();
        sorted.sort_unstable_by(|a, b| b.total_cmp(a));
        Ok(sorted[k - 1])
    }

    /// Neurons scoring at least `threshold`.
    pub fn count_at_least(&self, threshold: f64) -> usize {
        self.scores.iter().filter(|&&s| s >= threshold).count()
    }

    /// Neurons scoring at least `threshold`, per block.
    pub fn per_layer_at_least(&self, threshold: f64) -> Vec<usize> {
        self.scores
            .chunks(self.width.max(1))
            .map(|c| c.iter().filter(|&&s| s >= threshold).count())
            .collect()
    }
}

/// How many neurons of a model clear a reference model's top-k threshold.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NeuronRetention {
    /// The `k` of the reference top-k.
    pub k: usize,
    /// The reference's `k`-th largest score `τ`.
    pub threshold: f64,
    /// Neurons of the other model scoring at least `τ`.
    pub count: usize,
    /// `count / k`.
    pub retained: f64,
    /// The reference's neurons at or above `τ` per block (`k` in all, more with ties).
    pub reference_per_layer: Vec<usize>,
    /// The other model's neurons at or above `τ` per block.
    pub per_layer: Vec<usize>,
}

impl NeuronRetention {
    /// Compare `other` (e.g. a quantized model, same prompt and answer) with the top-k
    /// threshold of `reference` (full precision). The two must have the same layout.
    pub fn new(reference: &NeuronScores, other: &NeuronScores, k: usize) -> Result<Self> {
        if (reference.layers, reference.width) != (other.layers, other.width)
            || reference.answer != other.answer
        {
            return Err(Error::ShapeMismatch(format!(
                "neuron scores of {}x{} for token {} and {}x{} for token {} do not compare",
                reference.layers,
                reference.width,
                reference.answer,
                other.layers,
                other.width,
                other.answer
            )));
        }
        let threshold = reference.top_k_threshold(k)?;
        let count = other.count_at_least(threshold);
        Ok(NeuronRetention {
            k,
            threshold,
            count,
            retained: count as f64 / k as f64,
            reference_per_layer: reference.per_layer_at_least(threshold),
            per_layer: other.per_layer_at_least(threshold),
        })
    }
}

/// Mean retention over prompts: one report row.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct NeuronRetentionSummary {
    /// Number of prompts.
    pub n: usize,
    /// The `k` of the reference top-k.
    pub k: usize,
    /// Mean `count / k`.
    pub retained: f64,
    /// Its interval.
    pub retained_ci: Option<Interval>,
}

impl NeuronRetentionSummary {
    /// The summary of `samples` (at least one, all with the same `k`).
    pub fn of(samples: &[NeuronRetention], bootstrap: Option<&Bootstrap>) -> Result<Self> {
        let k = samples.first().map_or(0, |s| s.k);
        if samples.iter().any(|s| s.k != k) {
            return Err(Error::InvalidParameter {
                name: "k",
                reason: "retention samples with different k do not average".into(),
            });
        }
        let v: Vec<f64> = samples.iter().map(|s| s.retained).collect();
        let m = MeanEstimate::of(&v, bootstrap)?;
        Ok(NeuronRetentionSummary {
            n: m.n,
            k,
            retained: m.mean,
            retained_ci: m.ci,
        })
    }
}

/// A traced pass over one prompt.
pub(crate) fn trace_prompt(model: &Llama, prompt: &[u32]) -> Result<LlamaTrace> {
    if prompt.is_empty() {
        return Err(Error::EmptyTensor {
            what: "prompt token ids",
            shape: vec![0],
        });
    }
    model.trace(&Tensor::from_slice(
        prompt,
        (1, prompt.len()),
        model.device(),
    )?)
}

/// The last position of a trace's first row.
pub(crate) fn last_position(trace: &LlamaTrace) -> Result<usize> {
    let t = trace.logits.dim(D::Minus2)?;
    t.checked_sub(1).ok_or_else(|| Error::EmptyTensor {
        what: "trace positions",
        shape: trace.logits.dims().to_vec(),
    })
}

pub(crate) fn check_answer(answer: u32, vocab: usize) -> Result<()> {
    if answer as usize >= vocab {
        return Err(Error::TargetOutOfRange {
            what: "answer token",
            index: 0,
            value: i64::from(answer),
            classes: vocab,
        });
    }
    Ok(())
}
