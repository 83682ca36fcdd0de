//! The pieces of the decoder in two implementations: Candle's fused kernels for
//! inference, and compositions of differentiable ops for training (the fused kernels have no
//! backward pass). Both compute the same function; the tests compare them.

use candle_core::{D, Tensor};

use crate::error::Result;
use crate::model::hooks::ForwardHook;
use crate::model::linear::LinearLayer;

/// Which implementation of RMSNorm, softmax and RoPE a forward pass uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernels {
    /// Candle's fused CPU/GPU kernels: inference.
    Fused,
    /// Plain tensor ops that backpropagate: training.
    Differentiable,
    /// Plain tensor ops that backpropagate to the *input* only: the parameters are read
    /// detached, so a backward pass computes gradients with respect to the input embeddings
    /// (attributions) without a gradient for every weight.
    InputGradient,
}

impl Kernels {
    /// `x / sqrt(mean(x²) + ε) · weight` over the last dimension.
    pub(crate) fn rms_norm(self, x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
        Ok(match self {
            // The fused kernel reads rows in place (a no-op copy when already contiguous).
            Kernels::Fused => candle_nn::ops::rms_norm(&x.contiguous()?, weight, eps as f32)?,
            Kernels::Differentiable | Kernels::InputGradient => {
                candle_nn::ops::rms_norm_slow(x, weight, eps as f32)?
            }
        })
    }

    /// A projection: through the weights' autograd graph when training, detached for
    /// inference (the weights are training variables; a tracked inference pass would keep
    /// every block's activations alive until the logits are dropped).
    pub(crate) fn linear(
        self,
        layer: &LinearLayer,
        x: &Tensor,
        hooks: &mut dyn ForwardHook,
    ) -> Result<Tensor> {
        match self {
            Kernels::Fused | Kernels::InputGradient => layer.forward_inference(x, hooks),
            Kernels::Differentiable => layer.forward(x, hooks),
        }
    }

    /// Softmax over the last dimension.
    pub(crate) fn softmax(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Kernels::Fused => candle_nn::ops::softmax_last_dim(x)?,
            Kernels::Differentiable | Kernels::InputGradient => {
                candle_nn::ops::softmax(x, D::Minus1)?
            }
        })
    }
}
