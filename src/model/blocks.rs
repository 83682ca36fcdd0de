//! A model as a chain of blocks, so that sequential calibration runs one block per stage
//! instead of the whole prefix of the model.

use candle_core::Tensor;

use crate::error::Result;
use crate::model::hooks::ForwardHook;

/// What flows from one block to the next for one batch: the hidden state, plus what the model
/// computes once per batch and every block needs (BERT's padding mask).
#[derive(Debug, Clone)]
pub struct BlockState {
    /// The residual stream entering the next block, `[batch, seq, hidden]` for the shipped
    /// models.
    pub hidden: Tensor,
    /// Per-batch context handed unchanged from block to block (`None` if the model needs
    /// none).
    pub context: Option<Tensor>,
}

impl BlockState {
    /// A state that is just a hidden state.
    pub fn new(hidden: Tensor) -> Self {
        BlockState {
            hidden,
            context: None,
        }
    }

    /// The same state with per-batch `context`.
    #[must_use]
    pub fn with_context(mut self, context: Tensor) -> Self {
        self.context = Some(context);
        self
    }
}

/// A model that can run block by block (transformer layers, say).
///
/// [`SequentialQuantization`](super::SequentialQuantization) uses it, through
/// [`QuantizableModel::as_block_chain`](super::QuantizableModel::as_block_chain), to calibrate
/// the stages of block `i` by running block `i` alone on cached inputs: one block per stage
/// instead of blocks `0..=i`, which makes GPTQ's sequential recipe affordable on deep decoders.
/// The result is the same, bit for bit, as re-running the prefix.
///
/// The contract an implementation keeps: for any model input `x`, running
/// [`block_input`](Self::block_input) and then every block in order hands the hooks exactly
/// the layer inputs that `forward_hooked(x, hooks)` hands them, with the same values; and
/// [`block_layers`](Self::block_layers)`(i)` names every linear layer that block `i` runs.
pub trait BlockChain {
    /// How many blocks there are.
    fn block_count(&self) -> usize;

    /// The names of the linear layers block `block` runs.
    fn block_layers(&self, block: usize) -> Vec<String>;

    /// The state entering block 0 for a model input (checked as the forward pass checks it).
    fn block_input(&self, input: &Tensor) -> Result<BlockState>;

    /// Run block `block` on `state`, handing `hooks` to its linear layers.
    fn run_block(
        &self,
        block: usize,
        state: &BlockState,
        hooks: &mut dyn ForwardHook,
    ) -> Result<BlockState>;
}
