//! The SwiGLU MLP of a Llama block: `down(silu(gate(x)) · up(x))`.

use candle_core::Tensor;

use crate::error::Result;
use crate::model::hooks::ForwardHook;
use crate::model::linear::LinearLayer;

/// Gate, up and down projections, all [`LinearLayer`]s.
#[derive(Debug, Clone)]
pub(crate) struct FeedForward {
    pub(crate) gate_proj: LinearLayer,
    pub(crate) up_proj: LinearLayer,
    pub(crate) down_proj: LinearLayer,
}

impl FeedForward {
    /// `x: [b, t, hidden]` → `[b, t, hidden]`.
    pub(crate) fn forward(&self, x: &Tensor, hooks: &mut dyn ForwardHook) -> Result<Tensor> {
        let gate = self.gate_proj.forward(x, hooks)?;
        let up = self.up_proj.forward(x, hooks)?;
        self.down_proj.forward(&(gate.silu()? * up)?, hooks)
    }
}
