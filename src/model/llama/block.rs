//! One pre-norm decoder block: `h = x + attn(norm(x))`, `out = h + mlp(norm(h))`.

use candle_core::{Tensor, Var};

use crate::error::Result;
use crate::model::hooks::ForwardHook;
use crate::model::linear::LinearLayer;
use crate::model::llama::attention::{Attention, Step};
use crate::model::llama::feed_forward::FeedForward;
use crate::model::llama::kernels::Kernels;

/// A block's sub-layers and its two RMSNorm gains.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub(crate) attn_norm: Var,
    pub(crate) mlp_norm: Var,
    pub(crate) attn: Attention,
    pub(crate) mlp: FeedForward,
    /// The variables the projections were built from, in [`Block::linear_layers`] order:
    /// what the optimiser updates while the layers still hold them.
    pub(crate) weights: Vec<Var>,
}

impl Block {
    /// The seven projections in execution order: q, k, v, o, gate, up, down.
    pub(crate) fn linear_layers(&self) -> [&LinearLayer; 7] {
        [
            &self.attn.q_proj,
            &self.attn.k_proj,
            &self.attn.v_proj,
            &self.attn.o_proj,
            &self.mlp.gate_proj,
            &self.mlp.up_proj,
            &self.mlp.down_proj,
        ]
    }

    /// The same, mutably.
    pub(crate) fn linear_layers_mut(&mut self) -> [&mut LinearLayer; 7] {
        [
            &mut self.attn.q_proj,
            &mut self.attn.k_proj,
            &mut self.attn.v_proj,
            &mut self.attn.o_proj,
            &mut self.mlp.gate_proj,
            &mut self.mlp.up_proj,
            &mut self.mlp.down_proj,
        ]
    }

    /// `x: [b, t, hidden]` → `[b, t, hidden]` for block number `index`.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        index: usize,
        eps: f64,
        step: &mut Step<'_>,
        hooks: &mut dyn ForwardHook,
    ) -> Result<Tensor> {
        let kernels = step.kernels;
        let normed = kernels.rms_norm(x, &param(&self.attn_norm, kernels), eps)?;
        let h = (x + self.attn.forward(&normed, index, step, hooks)?)?;
        let normed = kernels.rms_norm(&h, &param(&self.mlp_norm, kernels), eps)?;
        let activation = self.mlp.activation(&normed, kernels, hooks)?;
        let out = (&h + self.mlp.down(&activation, kernels, hooks)?)?;
        if let Some(trace) = step.trace.as_deref_mut() {
            trace.ffn.push(activation);
            trace.hidden.push(out.clone());
        }
        Ok(out)
    }
}

/// A parameter as the forward pass reads it: the variable itself when training (so gradients
/// reach it), a detached view of the same storage otherwise (so inference builds no graph).
pub(crate) fn param(v: &Var, kernels: Kernels) -> Tensor {
    match kernels {
        Kernels::Differentiable => v.as_tensor().clone(),
        // An input-gradient pass tracks the input only: no gradient for every weight.
        Kernels::Fused | Kernels::InputGradient => v.as_tensor().detach(),
    }
}
