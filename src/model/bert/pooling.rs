//! Sentence embeddings from hidden states: sentence-transformers' mean pooling over the real
//! tokens, then L2 normalisation (the `Pooling` + `Normalize` modules of all-MiniLM-L6-v2).

use candle_core::Tensor;

use crate::error::Result;

/// `F.normalize`'s default ε: a zero vector stays zero instead of dividing by zero.
const NORM_EPS: f64 = 1e-12;

/// `hidden: [b, t, d]`, `mask: [b, t]` (1 = token, 0 = padding, every row with a token) →
/// `[b, d]` unit vectors.
pub(super) fn mean_pool_normalize(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let mask = mask.to_dtype(hidden.dtype())?;
    let summed = hidden.broadcast_mul(&mask.unsqueeze(2)?)?.sum(1)?;
    let counts = mask.sum_keepdim(1)?;
    let mean = summed.broadcast_div(&counts)?;
    let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(NORM_EPS)?;
    Ok(mean.broadcast_div(&norm)?)
}
