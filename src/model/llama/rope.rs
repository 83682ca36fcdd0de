//! Rotary position embeddings: cos/sin tables for every position of the context, applied to
//! queries and keys in either pairing.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::model::llama::config::{LlamaConfig, RopeStyle};
use crate::model::llama::kernels::Kernels;

/// `cos(pos · θ^(−2i/d))` and `sin(…)` for `pos < max_seq_len`, `i < d/2`.
#[derive(Debug, Clone)]
pub(crate) struct Rope {
    cos: Tensor,
    sin: Tensor,
    style: RopeStyle,
}

impl Rope {
    /// Tables for `config`, computed in f64 (positions times frequencies lose digits in f32 far
    /// into the context) and stored in f32.
    pub(crate) fn new(config: &LlamaConfig, device: &Device) -> Result<Self> {
        let half = config.head_dim / 2;
        let d = config.head_dim as f64;
        let freqs: Vec<f64> = (0..half)
            .map(|i| config.rope_theta.powf(-2.0 * i as f64 / d))
            .collect();
        let mut cos = Vec::with_capacity(config.max_seq_len * half);
        let mut sin = Vec::with_capacity(config.max_seq_len * half);
        for pos in 0..config.max_seq_len {
            for f in &freqs {
                let angle = pos as f64 * f;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        Ok(Rope {
            cos: Tensor::from_vec(cos, (config.max_seq_len, half), device)?,
            sin: Tensor::from_vec(sin, (config.max_seq_len, half), device)?,
            style: config.rope_style,
        })
    }

    /// Rotate `x: [b, heads, t, head_dim]` whose first position is `offset` in the sequence.
    pub(crate) fn apply(&self, x: &Tensor, offset: usize, kernels: Kernels) -> Result<Tensor> {
        let t = x.dim(2)?;
        let max = self.cos.dim(0)?;
        if offset + t > max {
            return Err(Error::InvalidParameter {
                name: "sequence length",
                reason: format!("positions up to {} exceed max_seq_len = {max}", offset + t),
            });
        }
        let cos = self.cos.narrow(0, offset, t)?;
        let sin = self.sin.narrow(0, offset, t)?;
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        Ok(match (kernels, self.style) {
            (Kernels::Fused, RopeStyle::Interleaved) => {
                candle_nn::rotary_emb::rope_i(&x, &cos, &sin)?
            }
            (Kernels::Fused, RopeStyle::Halves) => candle_nn::rotary_emb::rope(&x, &cos, &sin)?,
            // The fused kernels have no backward pass; these compose differentiable ops.
            (Kernels::Differentiable | Kernels::InputGradient, RopeStyle::Interleaved) => {
                candle_nn::rotary_emb::rope_i_slow(&x, &cos, &sin)?
            }
            (Kernels::Differentiable | Kernels::InputGradient, RopeStyle::Halves) => {
                candle_nn::rotary_emb::rope_slow(&x, &cos, &sin)?
            }
        })
    }
}
