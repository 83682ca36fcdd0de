//! Autoregressive generation with a KV cache: greedy or seeded sampling (temperature, top-k,
//! top-p), stop tokens, and a context-length guard.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::model::hooks::{ForwardHook, NoHooks};
use crate::model::llama::Llama;
use crate::rng::SplitMix64;

/// How the next token is chosen from the logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// The most likely token (the lowest id among ties).
    Greedy,
    /// A draw from `softmax(logits / temperature)`, restricted to the `top_k` most likely
    /// tokens and then to the smallest set whose probability reaches `top_p` (nucleus
    /// sampling), renormalised. Seeded: the same seed gives the same tokens.
    Sample {
        /// Divides the logits; must be finite and > 0 (use `Greedy` for the limit 0).
        temperature: f64,
        /// Keep only the `k ≥ 1` most likely tokens.
        top_k: Option<usize>,
        /// Keep the most likely tokens until their probability reaches `p ∈ (0, 1]`.
        top_p: Option<f64>,
        /// Seed of the draws.
        seed: u64,
    },
}

/// Settings of [`Llama::generate`].
///
/// ```
/// use quantlens::model::{GenerateConfig, Sampling};
///
/// let cfg = GenerateConfig::new(32)
///     .stop_tokens(&[2]) // SmolLM2's end of sequence
///     .sampling(Sampling::Sample { temperature: 0.8, top_k: Some(50), top_p: Some(0.95), seed: 1 });
/// assert_eq!(cfg.max_new_tokens, 32);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct GenerateConfig {
    /// The most tokens generated.
    pub max_new_tokens: usize,
    /// Greedy or seeded sampling.
    pub sampling: Sampling,
    /// Generation ends after producing any of these (which is included in the output).
    pub stop_tokens: Vec<u32>,
}

impl GenerateConfig {
    /// Up to `max_new_tokens` tokens, greedy, no stop token.
    pub fn new(max_new_tokens: usize) -> Self {
        GenerateConfig {
            max_new_tokens,
            sampling: Sampling::Greedy,
            stop_tokens: Vec::new(),
        }
    }

    /// How to choose each token.
    pub fn sampling(mut self, sampling: Sampling) -> Self {
        self.sampling = sampling;
        self
    }

    /// End generation after any of these tokens.
    pub fn stop_tokens(mut self, tokens: &[u32]) -> Self {
        self.stop_tokens = tokens.to_vec();
        self
    }

    fn validate(&self) -> Result<()> {
        let bad = |name, reason: String| Err(Error::InvalidParameter { name, reason });
        if let Sampling::Sample {
            temperature,
            top_k,
            top_p,
            ..
        } = self.sampling
        {
            if temperature.is_nan() || temperature <= 0.0 || temperature.is_infinite() {
                return bad(
                    "temperature",
                    format!(
                        "must be finite and > 0 (use Sampling::Greedy for 0), got {temperature}"
                    ),
                );
            }
            if top_k == Some(0) {
                return bad("top_k", "must be at least 1".into());
            }
            if let Some(p) = top_p
                && (p.is_nan() || p <= 0.0 || p > 1.0)
            {
                return bad("top_p", format!("must lie in (0, 1], got {p}"));
            }
        }
        Ok(())
    }
}

impl Llama {
    /// Continue `prompt` by up to `config.max_new_tokens` tokens and return the new tokens
    /// (ending with the stop token if one was produced).
    ///
    /// The prompt is processed in one pass, then one token at a time against a
    /// [`KvCache`](super::KvCache); only the last position's logits go through the LM head.
    /// The prompt plus the new tokens must fit in `max_seq_len`.
    ///
    /// ```
    /// use candle_core::Device;
    /// use quantlens::model::{GenerateConfig, Llama, LlamaConfig};
    ///
    /// let model = Llama::new(LlamaConfig::tiny(50, 16, 1, 2, 1), 3, &Device::Cpu)?;
    /// let a = model.generate(&[1, 2, 3], &GenerateConfig::new(5))?;
    /// assert_eq!(a.len(), 5);
    /// assert_eq!(a, model.generate(&[1, 2, 3], &GenerateConfig::new(5))?);
    /// # Ok::<(), quantlens::Error>(())
    /// ```
    pub fn generate(&self, prompt: &[u32], config: &GenerateConfig) -> Result<Vec<u32>> {
        self.generate_hooked(prompt, config, &mut NoHooks)
    }

    /// [`generate`](Self::generate) with `hooks` on every linear layer of every step (e.g.
    /// [`QuantizeActivations`](crate::model::QuantizeActivations) for a W8A8 model).
    pub fn generate_hooked(
        &self,
        prompt: &[u32],
        config: &GenerateConfig,
        hooks: &mut dyn ForwardHook,
    ) -> Result<Vec<u32>> {
        config.validate()?;
        if prompt.is_empty() {
            return Err(Error::TooFewSamples {
                what: "prompt tokens",
                needed: 1,
                got: 0,
            });
        }
        let max = self.config().max_seq_len;
        if prompt.len() + config.max_new_tokens > max {
            return Err(Error::InvalidParameter {
                name: "max_new_tokens",
                reason: format!(
                    "a prompt of {} tokens plus {} new tokens exceeds max_seq_len = {max}",
                    prompt.len(),
                    config.max_new_tokens
                ),
            });
        }
        if config.max_new_tokens == 0 {
            return Ok(Vec::new());
        }
        // The last generated token is never fed back, hence the − 1.
        let mut cache = self.kv_cache(prompt.len() + config.max_new_tokens - 1)?;
        let device = self.device().clone();
        let mut rng = match config.sampling {
            Sampling::Sample { seed, .. } => Some(SplitMix64::new(seed)),
            Sampling::Greedy => None,
        };
        let mut input = Tensor::from_slice(prompt, (1, prompt.len()), &device)?;
        let mut out = Vec::with_capacity(config.max_new_tokens);
        loop {
            let logits = self.forward_cached_last(&input, &mut cache, hooks)?;
            let logits = logits
                .flatten_all()?
                .to_dtype(DType::F32)?
                .to_vec1::<f32>()?;
            let next = match (config.sampling, rng.as_mut()) {
                (
                    Sampling::Sample {
                        temperature,
                        top_k,
                        top_p,
                        ..
                    },
                    Some(rng),
                ) => sample(&logits, temperature, top_k, top_p, rng)?,
                _ => argmax(&logits)?,
            };
            out.push(next);
            if config.stop_tokens.contains(&next) || out.len() == config.max_new_tokens {
                return Ok(out);
            }
            input = Tensor::from_slice(&[next], (1, 1), &device)?;
        }
    }
}

/// Refuse NaN logits (a diverged or broken model); ±∞ are fine.
fn check_logits(logits: &[f32]) -> Result<()> {
    let nan = logits.iter().filter(|v| v.is_nan()).count();
    if nan > 0 {
        return Err(Error::NonFinite {
            what: "logits",
            count: nan,
            first_index: logits.iter().position(|v| v.is_nan()).unwrap_or(0),
        });
    }
    Ok(())
}

/// The index of the largest logit, the lowest among ties.
fn argmax(logits: &[f32]) -> Result<u32> {
    check_logits(logits)?;
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    Ok(best as u32)
}

/// One draw from the tempered, top-k / top-p truncated distribution, in f64.
fn sample(
    logits: &[f32],
    temperature: f64,
    top_k: Option<usize>,
    top_p: Option<f64>,
    rng: &mut SplitMix64,
) -> Result<u32> {
    check_logits(logits)?;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    if max == f64::NEG_INFINITY {
        return Err(Error::InvalidParameter {
            name: "logits",
            reason: "every logit is −∞; nothing can be sampled".into(),
        });
    }
    // Unnormalised probabilities, most likely first (lowest id among ties), so truncation
    // keeps a deterministic set.
    let mut ranked: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as u32, ((v as f64 - max) / temperature).exp()))
        .collect();
    if top_k.is_some() || top_p.is_some() {
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    }
    if let Some(k) = top_k {
        ranked.truncate(k.max(1));
    }
    if let Some(p) = top_p {
        let total: f64 = ranked.iter().map(|r| r.1).sum();
        let mut cumulative = 0.0;
        let keep = ranked
            .iter()
            .position(|r| {
                cumulative += r.1;
                cumulative >= p * total
            })
            .map_or(ranked.len(), |i| i + 1);
        ranked.truncate(keep);
    }
    let total: f64 = ranked.iter().map(|r| r.1).sum();
    let mut u = rng.next_f64() * total;
    for &(id, w) in &ranked {
        if u < w {
            return Ok(id);
        }
        u -= w;
    }
    // Rounding can leave u a hair above the last weight: the last candidate it is.
    Ok(ranked.last().map_or(0, |r| r.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_the_most_likely_tokens() {
        // Probabilities ∝ e^[3, 2, 1, 0]: top-k 2 can only give ids 0 and 1.
        let logits = [3f32, 2.0, 1.0, 0.0];
        let mut rng = SplitMix64::new(5);
        for _ in 0..200 {
            let id = sample(&logits, 1.0, Some(2), None, &mut rng).unwrap();
            assert!(id < 2);
        }
        // p(0) = e³ / Σ ≈ 0.644 < 0.7: top-p 0.7 keeps ids 0 and 1, top-p 0.6 only id 0.
        for _ in 0..200 {
            assert!(sample(&logits, 1.0, None, Some(0.7), &mut rng).unwrap() < 2);
            assert_eq!(sample(&logits, 1.0, None, Some(0.6), &mut rng).unwrap(), 0);
        }
        assert_eq!(argmax(&[1.0, 5.0, 5.0]).unwrap(), 1);
        assert!(argmax(&[1.0, f32::NAN]).is_err());
    }

    #[test]
    fn sampling_frequencies_follow_the_tempered_softmax() {
        // Temperature 2 on logits ln[1, 4] gives probabilities ∝ [1, 2]: 1/3 and 2/3.
        let logits = [0f32, 4f32.ln()];
        let mut rng = SplitMix64::new(9);
        let n = 30_000;
        let ones = (0..n)
            .filter(|_| sample(&logits, 2.0, None, None, &mut rng).unwrap() == 1)
            .count();
        let freq = ones as f64 / n as f64;
        // 5 standard errors of a binomial proportion at p = 2/3.
        assert!(
            (freq - 2.0 / 3.0).abs() < 5.0 * (2.0 / 9.0 / n as f64).sqrt(),
            "{freq}"
        );
    }
}
