//! BERT's input layer: word + absolute position + token-type embeddings, then LayerNorm.
//! Lookups, not matrix products, so they stay in full precision.

use candle_core::{Device, Tensor};

use crate::error::Result;
use crate::model::bert::config::BertConfig;
use crate::model::bert::norm::LayerNorm;
use crate::model::bert::params::{Init, ParamSource};

/// The embedding tables and the LayerNorm that follows their sum.
#[derive(Debug, Clone)]
pub struct BertEmbeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: LayerNorm,
}

impl BertEmbeddings {
    pub(super) fn load(
        config: &BertConfig,
        src: &mut dyn ParamSource,
        device: &Device,
    ) -> Result<Self> {
        let h = config.hidden_size;
        let mut get = |name: &str, shape: &[usize], init| {
            src.get(&format!("embeddings.{name}"), shape, init, device)
        };
        Ok(BertEmbeddings {
            word: get(
                "word_embeddings.weight",
                &[config.vocab_size, h],
                Init::Normal,
            )?,
            position: get(
                "position_embeddings.weight",
                &[config.max_position_embeddings, h],
                Init::Normal,
            )?,
            token_type: get(
                "token_type_embeddings.weight",
                &[config.type_vocab_size, h],
                Init::Normal,
            )?,
            norm: LayerNorm::new(
                get("LayerNorm.weight", &[h], Init::OnePlusNormal)?,
                get("LayerNorm.bias", &[h], Init::Normal)?,
                config.layer_norm_eps,
            ),
        })
    }

    /// The word-embedding table, `[vocab_size, hidden]`.
    pub fn word_embeddings(&self) -> &Tensor {
        &self.word
    }

    /// The absolute position table, `[max_position_embeddings, hidden]`.
    pub fn position_embeddings(&self) -> &Tensor {
        &self.position
    }

    /// The token-type (segment) table, `[type_vocab_size, hidden]`; the encoder adds row 0.
    pub fn token_type_embeddings(&self) -> &Tensor {
        &self.token_type
    }

    /// The LayerNorm applied to the sum.
    pub fn layer_norm(&self) -> &LayerNorm {
        &self.norm
    }

    /// `LN(word[ids] + position[0..t] + token_type[0])` for validated `ids: [b, t]` (u32, every
    /// id inside the vocabulary, `t` within the position table).
    pub(super) fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let hidden = self.word.dim(1)?;
        let words = self
            .word
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, hidden))?;
        // Single-segment input: every token has type 0, as sentence-transformers passes it.
        // Summed in Hugging Face's order, (word + type) + position.
        let summed = words
            .broadcast_add(&self.token_type.narrow(0, 0, 1)?)?
            .broadcast_add(&self.position.narrow(0, 0, t)?)?;
        self.norm.forward(&summed)
    }
}
