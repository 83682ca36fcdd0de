//! Token ids checked before they reach the embedding tables, and the padding mask derived from
//! them.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::model::bert::config::BertConfig;
use crate::probe::inputs::integer_entries;

const WHAT: &str = "token ids";

/// A validated batch of token ids `[b, t]` and its padding mask.
pub(super) struct TokenBatch {
    /// The ids as u32, on the caller's device.
    pub(super) ids: Tensor,
    /// 1 for real tokens, 0 for `[PAD]`, `[b, t]` f32.
    pub(super) mask: Tensor,
    /// Whether any position is padding.
    pub(super) has_padding: bool,
}

impl TokenBatch {
    /// Check `ids` against `config`: an integer dtype, rank 2, not empty, at most
    /// `max_position_embeddings` columns, every id in `0..vocab_size`, and at least one
    /// non-padding token per row (a row of padding has no mean to pool).
    pub(super) fn new(ids: &Tensor, config: &BertConfig) -> Result<Self> {
        if ids.rank() != 2 {
            return Err(Error::RankMismatch {
                what: WHAT,
                expected: 2,
                shape: ids.dims().to_vec(),
            });
        }
        let (b, t) = ids.dims2()?;
        if b == 0 || t == 0 {
            return Err(Error::EmptyTensor {
                what: WHAT,
                shape: ids.dims().to_vec(),
            });
        }
        if t > config.max_position_embeddings {
            return Err(Error::InvalidParameter {
                name: "token ids",
                reason: format!(
                    "sequence length {t} exceeds max_position_embeddings = {}",
                    config.max_position_embeddings
                ),
            });
        }
        // Ids are few next to the activations: check them on the host, where Candle's gather
        // would otherwise read out of bounds (or fail with an opaque message).
        let values = integer_entries(ids, WHAT)?;
        let vocab = config.vocab_size as i64;
        if let Some(index) = values.iter().position(|&v| v < 0 || v >= vocab) {
            return Err(Error::TargetOutOfRange {
                what: WHAT,
                index,
                value: values[index],
                classes: config.vocab_size,
            });
        }
        let pad = i64::from(config.pad_token_id);
        let mask: Vec<f32> = values
            .iter()
            .map(|&v| if v == pad { 0.0 } else { 1.0 })
            .collect();
        if let Some(row) = mask.chunks(t).position(|r| r.iter().all(|&m| m == 0.0)) {
            return Err(Error::InvalidParameter {
                name: "token ids",
                reason: format!(
                    "row {row} is all padding (id {pad}); an empty sequence has no embedding"
                ),
            });
        }
        let ids = if ids.dtype() == DType::U32 {
            ids.contiguous()?
        } else {
            let host: Vec<u32> = values.iter().map(|&v| v as u32).collect();
            Tensor::from_vec(host, (b, t), ids.device())?
        };
        let has_padding = mask.contains(&0.0);
        let mask = Tensor::from_vec(mask, (b, t), ids.device())?;
        Ok(TokenBatch {
            ids,
            mask,
            has_padding,
        })
    }

    /// The additive attention mask `[b, 1, 1, t]`: 0 on real keys, `f32::MIN` on padding (as
    /// Hugging Face and Candle do), so padded keys get weight exactly 0 after the softmax.
    pub(super) fn attention_bias(&self) -> Result<Tensor> {
        attention_bias(&self.mask)
    }
}

/// The additive attention mask `[b, 1, 1, t]` of a padding mask `[b, t]` (1 = token).
pub(super) fn attention_bias(mask: &Tensor) -> Result<Tensor> {
    let (b, t) = mask.dims2()?;
    let bias = ((mask.ones_like()? - mask)? * f64::from(f32::MIN))?;
    Ok(bias.reshape((b, 1, 1, t))?)
}
