//! LayerNorm over the last dimension, kept in full precision (not a quantizable layer).

use candle_core::{D, Tensor};

use crate::error::Result;

/// `γ ⊙ (x − mean(x)) / √(var(x) + ε) + β` over the last dimension (biased variance, as
/// PyTorch's `nn.LayerNorm`).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub(super) fn new(weight: Tensor, bias: Tensor, eps: f64) -> Self {
        LayerNorm { weight, bias, eps }
    }

    /// The scale γ, `[hidden]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The shift β, `[hidden]`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// The ε added to the variance.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // Two passes (mean, then the mean square of the centred values), not Candle's fused
        // kernel: that one takes E[x²] − E[x]² in f32, which cancels badly on rows whose mean
        // is large next to their spread.
        let width = x.dim(D::Minus1)? as f64;
        let mean = (x.sum_keepdim(D::Minus1)? / width)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = (centred.sqr()?.sum_keepdim(D::Minus1)? / width)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(normed
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)?)
    }
}
