//! Perplexity of a language model over a token stream longer than its context: the
//! sliding-window evaluation of Hugging Face's "Perplexity of fixed-length models" guide.

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::model::{ForwardHook, NoHooks, QuantizableModel};
use crate::probe::{DEFAULT_IGNORE_INDEX, SequenceNll};

/// Window, stride and batch size of [`perplexity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PerplexityConfig {
    /// Tokens fed to the model per window (at most its context length).
    pub window: usize,
    /// How far each window starts after the previous one, `1..=window`; a smaller stride gives
    /// every scored token more context at the cost of more forward passes.
    pub stride: usize,
    /// Windows per forward pass.
    pub batch: usize,
}

impl PerplexityConfig {
    /// Windows of `window` tokens every `stride` tokens, one window per forward pass.
    pub fn new(window: usize, stride: usize) -> Self {
        PerplexityConfig {
            window,
            stride,
            batch: 1,
        }
    }

    /// Windows per forward pass (all but possibly the last window have the same length).
    pub fn batch(mut self, windows: usize) -> Self {
        self.batch = windows;
        self
    }

    fn validate(&self) -> Result<()> {
        let bad = |name, reason: String| Err(Error::InvalidParameter { name, reason });
        if self.window < 2 {
            return bad("window", format!("must be at least 2, got {}", self.window));
        }
        if self.stride == 0 || self.stride > self.window {
            return bad(
                "stride",
                format!("must lie in 1..={}, got {}", self.window, self.stride),
            );
        }
        if self.batch == 0 {
            return bad("batch", "must be at least 1".into());
        }
        Ok(())
    }
}

/// The result of [`perplexity`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Perplexity {
    /// Sum of the scored tokens' negative log-likelihoods (nats).
    pub total_nll: f64,
    /// Number of scored tokens: every token but the first.
    pub tokens: usize,
    /// `exp(total_nll / tokens)`.
    pub perplexity: f64,
}

impl Perplexity {
    /// Mean NLL per scored token (nats).
    pub fn mean_nll(&self) -> f64 {
        self.total_nll / self.tokens as f64
    }
}

/// Perplexity of `model` on `tokens`, scoring every token but the first exactly once.
///
/// Windows of `window` input tokens start every `stride` tokens; input position `i` predicts
/// token `i + 1`. Each token is scored by the first window whose newly covered part holds it,
/// so it sees at least `window − stride` tokens of context (when the stream has them); the
/// earlier targets of a window are marked with the ignore index −100 and only provide context,
/// as in Hugging Face's method. Unlike the snippet in Hugging Face's guide, the token right
/// after a window is its last target, so `stride = window` (disjoint windows) scores every
/// token too. Token losses are [`SequenceNll`]'s; sums are in f64.
///
/// The model must map u32 ids `[b, t]` to logits `[b, t, V]`.
///
/// ```
/// use candle_core::Device;
/// use quantlens::model::{Llama, LlamaConfig, PerplexityConfig, perplexity};
///
/// let model = Llama::new(LlamaConfig::tiny(40, 16, 1, 2, 1).max_seq_len(8), 1, &Device::Cpu)?;
/// let tokens: Vec<u32> = (0..30).map(|i| (i * 7 % 40) as u32).collect();
/// let ppl = perplexity(&model, &tokens, PerplexityConfig::new(8, 4).batch(2))?;
/// assert_eq!(ppl.tokens, 29);
/// // A barely trained model is close to uniform over its 40 tokens.
/// assert!((ppl.perplexity - 40.0).abs() < 4.0);
/// # Ok::<(), quantlens::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::TooFewSamples`] for fewer than 2 tokens, [`Error::InvalidParameter`] for a window
/// below 2, a stride of 0 or above the window, or a batch of 0, [`Error::ShapeMismatch`] when
/// the model's output is not `[b, t, V]`, and the model's own errors (ids ≥ vocabulary, a
/// window longer than its context).
pub fn perplexity<M: QuantizableModel + ?Sized>(
    model: &M,
    tokens: &[u32],
    config: PerplexityConfig,
) -> Result<Perplexity> {
    perplexity_hooked(model, tokens, config, &mut NoHooks)
}

/// [`perplexity`] with `hooks` on every forward pass: quantized activations
/// ([`QuantizeActivations`](crate::model::QuantizeActivations), the "A8" of W8A8) or
/// activation noise ([`PerturbActivations`](crate::model::PerturbActivations)).
///
/// ```
/// use candle_core::Device;
/// use quantlens::model::{Llama, LlamaConfig, NoHooks, PerplexityConfig, QuantizeActivations};
/// use quantlens::model::{perplexity, perplexity_hooked};
///
/// let model = Llama::new(LlamaConfig::tiny(40, 32, 2, 4, 2), 1, &Device::Cpu)?;
/// let tokens: Vec<u32> = (0..30).map(|i| (i * 7 % 40) as u32).collect();
/// let config = PerplexityConfig::new(16, 16);
/// let plain = perplexity(&model, &tokens, config)?;
/// assert_eq!(perplexity_hooked(&model, &tokens, config, &mut NoHooks)?, plain);
/// let a8 = perplexity_hooked(&model, &tokens, config, &mut QuantizeActivations::per_token(8)?)?;
/// assert!((a8.perplexity / plain.perplexity - 1.0).abs() < 0.05);
/// # Ok::<(), quantlens::Error>(())
/// ```
pub fn perplexity_hooked<M: QuantizableModel + ?Sized>(
    model: &M,
    tokens: &[u32],
    config: PerplexityConfig,
    hooks: &mut dyn ForwardHook,
) -> Result<Perplexity> {
    config.validate()?;
    if tokens.len() < 2 {
        return Err(Error::TooFewSamples {
            what: "perplexity token stream",
            needed: 2,
            got: tokens.len(),
        });
    }
    let device = model
        .linear_layers()
        .first()
        .map_or(Device::Cpu, |l| l.device().clone());
    let probe = SequenceNll::new();
    let mut acc = Accumulator::default();
    let mut pending: Vec<(Vec<u32>, Vec<i64>)> = Vec::with_capacity(config.batch);
    for (inputs, targets) in windows(tokens, config.window, config.stride) {
        // Batch only windows of one length (every window but possibly the last).
        if pending.len() == config.batch
            || pending
                .first()
                .is_some_and(|(p, _)| p.len() != inputs.len())
        {
            acc.score(model, &probe, &pending, &device, hooks)?;
            pending.clear();
        }
        pending.push((inputs, targets));
    }
    acc.score(model, &probe, &pending, &device, hooks)?;
    Ok(Perplexity {
        total_nll: acc.total_nll,
        tokens: acc.tokens,
        perplexity: (acc.total_nll / acc.tokens as f64).exp(),
    })
}

/// The windows of a stream: input ids and their targets (the next tokens), −100 where the
/// target was already scored by an earlier window.
fn windows(
    tokens: &[u32],
    window: usize,
    stride: usize,
) -> impl Iterator<Item = (Vec<u32>, Vec<i64>)> + '_ {
    // Positions that have an input-to-target pair: inputs 0..n−1 predict tokens 1..n.
    let pairs = tokens.len() - 1;
    let mut scored_until = 0; // targets of inputs < scored_until are done
    (0..pairs).step_by(stride).map_while(move |begin| {
        if scored_until >= pairs {
            return None;
        }
        let end = (begin + window).min(pairs);
        let inputs = tokens[begin..end].to_vec();
        let targets = (begin..end)
            .map(|i| {
                if i < scored_until {
                    DEFAULT_IGNORE_INDEX
                } else {
                    i64::from(tokens[i + 1])
                }
            })
            .collect();
        scored_until = end;
        Some((inputs, targets))
    })
}

/// Running sums over the scored tokens.
#[derive(Default)]
struct Accumulator {
    total_nll: f64,
    tokens: usize,
}

impl Accumulator {
    /// Run one batch of equal-length windows and add its scored tokens' losses.
    fn score<M: QuantizableModel + ?Sized>(
        &mut self,
        model: &M,
        probe: &SequenceNll,
        batch: &[(Vec<u32>, Vec<i64>)],
        device: &Device,
        hooks: &mut dyn ForwardHook,
    ) -> Result<()> {
        let Some((first, _)) = batch.first() else {
            return Ok(());
        };
        let (b, t) = (batch.len(), first.len());
        let ids: Vec<u32> = batch.iter().flat_map(|(i, _)| i.iter().copied()).collect();
        let targets: Vec<i64> = batch.iter().flat_map(|(_, t)| t.iter().copied()).collect();
        let logits = model.forward_hooked(&Tensor::from_vec(ids, (b, t), device)?, hooks)?;
        if logits.rank() != 3 || logits.dims()[..2] != [b, t] {
            return Err(Error::ShapeMismatch(format!(
                "perplexity needs logits [{b}, {t}, vocab] for ids [{b}, {t}], got {:?}",
                logits.dims()
            )));
        }
        let counted = targets
            .iter()
            .filter(|&&t| t != DEFAULT_IGNORE_INDEX)
            .count();
        let targets = Tensor::from_vec(targets, (b, t), device)?;
        let losses = probe.per_token_losses(&logits, &targets, None)?;
        // Ignored positions are exactly 0 in the probe's output.
        let sum: f64 = losses
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(f64::from)
            .sum();
        self.total_nll += sum;
        self.tokens += counted;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_score_every_target_once() {
        let tokens: Vec<u32> = (0..23).collect();
        for (window, stride) in [(5, 5), (5, 2), (5, 1), (22, 3), (30, 30), (2, 1)] {
            let mut hits = vec![0; tokens.len()];
            for (inputs, targets) in windows(&tokens, window, stride) {
                assert!(inputs.len() <= window);
                for (i, t) in inputs.iter().zip(&targets) {
                    if *t != DEFAULT_IGNORE_INDEX {
                        assert_eq!(*t, i64::from(*i) + 1, "target is the next token");
                        hits[*t as usize] += 1;
                    }
                }
            }
            assert_eq!(hits[0], 0);
            assert!(
                hits[1..].iter().all(|&h| h == 1),
                "{window}/{stride}: {hits:?}"
            );
        }
    }
}
