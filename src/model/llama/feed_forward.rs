//! The SwiGLU MLP of a Llama block: `down(silu(gate(x)) · up(x))`.

use candle_core::Tensor;

use crate::error::Result;
use crate::model::hooks::ForwardHook;
use crate::model::linear::LinearLayer;
use crate::model::llama::kernels::Kernels;

/// Gate, up and down projections, all [`LinearLayer`]s.
#[derive(Debug, Clone)]
pub(crate) struct FeedForward {
    pub(crate) gate_proj: LinearLayer,
    pub(crate) up_proj: LinearLayer,
    pub(crate) down_proj: LinearLayer,
}

impl FeedForward {
    /// The intermediate activation `silu(gate(x)) · up(x)`: `x: [b, t, hidden]` →
    /// `[b, t, intermediate]`, what `down_proj` reads.
    pub(crate) fn activation(
        &self,
        x: &Tensor,
        kernels: Kernels,
        hooks: &mut dyn ForwardHook,
    ) -> Result<Tensor> {
        let gate = kernels.linear(&self.gate_proj, x, hooks)?;
        let up = kernels.linear(&self.up_proj, x, hooks)?;
        Ok((gate.silu()? * up)?)
    }

    /// `down_proj` of an [`activation`](Self::activation): `[b, t, intermediate]` →
    /// `[b, t, hidden]`.
    pub(crate) fn down(
        &self,
        activation: &Tensor,
        kernels: Kernels,
        hooks: &mut dyn ForwardHook,
    ) -> Result<Tensor> {
        kernels.linear(&self.down_proj, activation, hooks)
    }
}
