//! [`BertEncoder`] as a chain of blocks, for block-wise sequential calibration.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::model::blocks::{BlockChain, BlockState};
use crate::model::hooks::{ForwardHook, PaddedBatch};

use super::BertEncoder;
use super::input::{TokenBatch, attention_bias};

impl BlockChain for BertEncoder {
    fn block_count(&self) -> usize {
        self.layers.len()
    }

    fn block_layers(&self, block: usize) -> Vec<String> {
        self.layers
            .get(block)
            .map(|l| l.linear_layers().map(|l| l.name().to_string()).to_vec())
            .unwrap_or_default()
    }

    /// The embeddings of `ids: [b, t]` (checked as the forward pass checks them), with the
    /// padding mask `[b, t]` as context.
    fn block_input(&self, input: &Tensor) -> Result<BlockState> {
        let batch = TokenBatch::new(input, &self.config)?;
        let hidden = self.embeddings.forward(&batch.ids)?;
        Ok(BlockState::new(hidden).with_context(batch.mask))
    }

    /// Encoder layer `block`; hooks learn which rows are padding, as in the forward pass.
    fn run_block(
        &self,
        block: usize,
        state: &BlockState,
        hooks: &mut dyn ForwardHook,
    ) -> Result<BlockState> {
        let layer = self
            .layers
            .get(block)
            .ok_or_else(|| Error::InvalidParameter {
                name: "block",
                reason: format!("{block} ≥ the encoder's {} layers", self.layers.len()),
            })?;
        let mask = state
            .context
            .as_ref()
            .ok_or_else(|| Error::InvalidParameter {
                name: "block state",
                reason: "a BERT block state carries its padding mask; make it with block_input"
                    .into(),
            })?;
        let bias = attention_bias(mask)?;
        let padded = mask.flatten_all()?.min(0)?.to_scalar::<f32>()? == 0.0;
        let hidden = if padded {
            layer.forward(&state.hidden, &bias, &mut PaddedBatch::new(hooks, mask)?)?
        } else {
            layer.forward(&state.hidden, &bias, hooks)?
        };
        Ok(BlockState::new(hidden).with_context(mask.clone()))
    }
}
