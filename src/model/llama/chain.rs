//! [`Llama`] as a chain of blocks, for block-wise sequential calibration.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::model::blocks::{BlockChain, BlockState};
use crate::model::hooks::ForwardHook;

use super::Llama;
use super::attention::Step;
use super::kernels::Kernels;

impl BlockChain for Llama {
    fn block_count(&self) -> usize {
        self.blocks.len()
    }

    fn block_layers(&self, block: usize) -> Vec<String> {
        self.blocks
            .get(block)
            .map(|b| b.linear_layers().map(|l| l.name().to_string()).to_vec())
            .unwrap_or_default()
    }

    /// The token embeddings of `ids: [b, t]`, checked as the forward pass checks them.
    fn block_input(&self, input: &Tensor) -> Result<BlockState> {
        Ok(BlockState::new(self.embed(input)?))
    }

    /// Block `block` of a full pass (no KV cache, positions from 0), on the fused kernels the
    /// forward pass uses.
    fn run_block(
        &self,
        block: usize,
        state: &BlockState,
        hooks: &mut dyn ForwardHook,
    ) -> Result<BlockState> {
        let layer = self
            .blocks
            .get(block)
            .ok_or_else(|| Error::InvalidParameter {
                name: "block",
                reason: format!("{block} ≥ the model's {} blocks", self.blocks.len()),
            })?;
        let h = &state.hidden;
        let (_, t, _) = h.dims3()?;
        let mut step = Step::new(&self.rope, 0, t, Kernels::Fused, None, h.device())?;
        let out = layer.forward(h, block, self.config.rms_eps, &mut step, hooks)?;
        Ok(BlockState::new(out))
    }
}
