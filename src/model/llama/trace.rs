//! Views inside the decoder for explanation and interpretability: input embeddings, a forward
//! pass that starts from them (differentiable with respect to them), the per-block residual
//! stream and FFN activations of one pass, and the final norm + LM head on any hidden state
//! (the logit lens).

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::model::hooks::NoHooks;
use crate::model::llama::Llama;
use crate::model::llama::attention::Trace;
use crate::model::llama::block::param;
use crate::model::llama::kernels::Kernels;

/// The internals of one forward pass of a [`Llama`], recorded by [`Llama::trace`].
///
/// Block `l`'s residual update splits as
/// `hidden_states[l] = hidden_states[l − 1] + attn_l + W_down,l · ffn_activations[l]`
/// (with the input embeddings before block 0), where `W_down,l` is the dense weight of
/// `blocks.{l}.mlp.down_proj` ([`QuantizableModel::weight`](crate::model::QuantizableModel::weight)).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LlamaTrace {
    /// The token embeddings the pass started from, `[b, t, hidden]`.
    pub embeddings: Tensor,
    /// The residual stream after each block, in block order, each `[b, t, hidden]`.
    pub hidden_states: Vec<Tensor>,
    /// Each block's SwiGLU activation `silu(gate(x)) · up(x)` — the input of its `down_proj`
    /// (before the input scaling of an AWQ/SmoothQuant weight, so it pairs with the dense
    /// effective weight) — each `[b, t, intermediate]`.
    pub ffn_activations: Vec<Tensor>,
    /// The logits of the pass, `[b, t, vocab]`: equal to
    /// [`forward`](crate::model::QuantizableModel::forward)'s.
    pub logits: Tensor,
}

impl Llama {
    /// The token embeddings of `ids: [b, t]` (u32), `[b, t, hidden]`, detached from the
    /// parameters; ids are checked as [`forward`](crate::model::QuantizableModel::forward)
    /// checks them.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = self.check_ids(ids, 0)?;
        Ok(self
            .embedding
            .as_tensor()
            .detach()
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, self.config.hidden_size))?)
    }

    /// Logits `[b, t, vocab]` of input embeddings `embeddings: [b, t, hidden]` (f32) in place
    /// of looked-up tokens: `forward_embeddings(&embed(ids)?)` equals `forward(ids)` up to
    /// rounding.
    ///
    /// The pass runs on differentiable kernels with the parameters detached, so the logits
    /// backpropagate to `embeddings` (a [`Var`](candle_core::Var)) and to nothing else: what
    /// gradient-based attributions need, without a gradient for every weight. Projections
    /// run their weights as stored (full precision, fake-quantized or packed).
    ///
    /// ```
    /// use candle_core::{Device, Tensor, Var};
    /// use quantlens::model::{Llama, LlamaConfig};
    ///
    /// let model = Llama::new(LlamaConfig::tiny(50, 16, 1, 2, 1), 3, &Device::Cpu)?;
    /// let e = Var::from_tensor(&model.embed(&Tensor::new(&[[1u32, 2, 3]], &Device::Cpu)?)?)?;
    /// let logits = model.forward_embeddings(e.as_tensor())?;
    /// let grads = logits.narrow(2, 7, 1)?.sum_all()?.backward()?;
    /// assert_eq!(grads.get(e.as_tensor()).map(|g| g.dims().to_vec()), Some(vec![1, 3, 16]));
    /// # Ok::<(), quantlens::Error>(())
    /// ```
    pub fn forward_embeddings(&self, embeddings: &Tensor) -> Result<Tensor> {
        self.check_embeddings(embeddings)?;
        self.run_embedded(
            embeddings.clone(),
            &mut NoHooks,
            None,
            Kernels::InputGradient,
            false,
            None,
        )
    }

    /// Like [`forward_embeddings`](Self::forward_embeddings), but only the last position's
    /// logits `[b, vocab]` (the LM head runs once per row): what attributions of the
    /// next-token prediction need.
    pub fn forward_embeddings_last(&self, embeddings: &Tensor) -> Result<Tensor> {
        self.check_embeddings(embeddings)?;
        let logits = self.run_embedded(
            embeddings.clone(),
            &mut NoHooks,
            None,
            Kernels::InputGradient,
            true,
            None,
        )?;
        Ok(logits.squeeze(1)?)
    }

    /// One inference pass over `ids: [b, t]` recording the residual stream after every block
    /// and every block's FFN activation (see [`LlamaTrace`]). Memory grows by
    /// `b · t · (hidden + intermediate)` floats per block: meant for short prompts.
    pub fn trace(&self, ids: &Tensor) -> Result<LlamaTrace> {
        let embeddings = self.embed(ids)?;
        let mut trace = Trace::default();
        let logits = self.run_embedded(
            embeddings.clone(),
            &mut NoHooks,
            None,
            Kernels::Fused,
            false,
            Some(&mut trace),
        )?;
        Ok(LlamaTrace {
            embeddings,
            hidden_states: trace.hidden,
            ffn_activations: trace.ffn,
            logits,
        })
    }

    /// The final RMSNorm and the LM head applied to hidden states `[..., hidden]` →
    /// `[..., vocab]`: on the last block's output this is the model's own logits; on an
    /// earlier block's, the *logit lens* view of what that block already predicts.
    pub fn unembed(&self, hidden: &Tensor) -> Result<Tensor> {
        let h = self.config.hidden_size;
        if hidden.rank() == 0 || hidden.dims().last() != Some(&h) {
            return Err(Error::ShapeMismatch(format!(
                "hidden states must end in hidden_size = {h}, got {:?}",
                hidden.dims()
            )));
        }
        let lead = &hidden.dims()[..hidden.rank() - 1];
        let rows: usize = lead.iter().product();
        let kernels = Kernels::Fused;
        let normed = kernels.rms_norm(
            &hidden.to_dtype(DType::F32)?.reshape((rows, h))?,
            &param(&self.final_norm, kernels),
            self.config.rms_eps,
        )?;
        let head = param(self.lm_head.as_ref().unwrap_or(&self.embedding), kernels);
        let mut dims = lead.to_vec();
        dims.push(self.config.vocab_size);
        Ok(normed.matmul(&head.t()?)?.reshape(dims)?)
    }

    /// Refuse embeddings that are not f32 `[b, t, hidden]` with `b, t ≥ 1` and
    /// `t ≤ max_seq_len`.
    fn check_embeddings(&self, e: &Tensor) -> Result<()> {
        if e.dtype() != DType::F32 {
            return Err(Error::InvalidParameter {
                name: "input embeddings",
                reason: format!("must be f32, got {:?}", e.dtype()),
            });
        }
        let (b, t, h) = match *e.dims() {
            [b, t, h] => (b, t, h),
            _ => {
                return Err(Error::RankMismatch {
                    what: "input embeddings [batch, seq, hidden]",
                    expected: 3,
                    shape: e.dims().to_vec(),
                });
            }
        };
        if b == 0 || t == 0 {
            return Err(Error::EmptyTensor {
                what: "input embeddings",
                shape: e.dims().to_vec(),
            });
        }
        if h != self.config.hidden_size {
            return Err(Error::ShapeMismatch(format!(
                "input embeddings {:?} do not end in hidden_size = {}",
                e.dims(),
                self.config.hidden_size
            )));
        }
        if t > self.config.max_seq_len {
            return Err(Error::InvalidParameter {
                name: "sequence length",
                reason: format!(
                    "{t} positions exceed max_seq_len = {}",
                    self.config.max_seq_len
                ),
            });
        }
        Ok(())
    }
}
