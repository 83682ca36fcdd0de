//! Token attributions of a [`Llama`]'s next-token prediction: the attribution methods of
//! [`Attributor`] applied to the input embeddings, one value per token (the sum over the
//! embedding dimension of the element attributions).

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::explain::attribution::{Attribution, Attributor, Target};
use crate::model::Llama;

impl Attributor {
    /// Attributions of each token of `ids` (the prompt) for the score of `target` — a token
    /// id, or the predicted token — at the **last** position, i.e. for the prediction of the
    /// token that follows the prompt. Gradients flow to the input embeddings only
    /// ([`Llama::forward_embeddings_last`]); a [`Baseline::Input`](super::Baseline::Input)
    /// must be `[t, hidden]`, and the zero baseline is the all-zero embedding.
    ///
    /// ```
    /// use candle_core::Device;
    /// use quantlens::explain::{Attributor, Target};
    /// use quantlens::model::{Llama, LlamaConfig};
    ///
    /// let model = Llama::new(LlamaConfig::tiny(50, 16, 2, 2, 1), 3, &Device::Cpu)?;
    /// let a = Attributor::integrated_gradients(64).attribute_tokens(&model, &[4, 8, 15, 16], Target::Class(23))?;
    /// assert_eq!(a.values.len(), 4);
    /// assert!(a.completeness_error().unwrap() < 0.01);
    /// # Ok::<(), quantlens::Error>(())
    /// ```
    pub fn attribute_tokens(
        &self,
        model: &Llama,
        ids: &[u32],
        target: Target,
    ) -> Result<Attribution> {
        if ids.is_empty() {
            return Err(Error::EmptyTensor {
                what: "prompt token ids",
                shape: vec![0],
            });
        }
        let ids = Tensor::from_slice(ids, (1, ids.len()), model.device())?;
        let embeddings = model.embed(&ids)?.squeeze(0)?;
        self.attribute(|e| model.forward_embeddings_last(e), &embeddings, target)
    }
}
