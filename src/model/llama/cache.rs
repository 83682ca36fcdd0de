//! The key/value cache of incremental decoding: per block, the rotated keys and the values of
//! every position seen so far, in buffers allocated once for the whole generation.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// Keys and values of the positions a [`Llama`](super::Llama) has already processed, so that
/// each new token attends to them without recomputing them.
///
/// Make one with [`Llama::kv_cache`](super::Llama::kv_cache) and pass it to
/// [`Llama::forward_cached`](super::Llama::forward_cached). Buffers of `capacity` positions
/// are allocated at the first call (when the batch size is known) and written in place; the
/// cache holds plain tensors, never an autograd graph.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::model::{Llama, LlamaConfig, NoHooks};
///
/// let model = Llama::new(LlamaConfig::tiny(32, 16, 1, 2, 1), 0, &Device::Cpu)?;
/// let mut cache = model.kv_cache(8)?;
/// model.forward_cached(&Tensor::new(&[[1u32, 2, 3]], &Device::Cpu)?, &mut cache, &mut NoHooks)?;
/// assert_eq!(cache.len(), 3);
/// cache.truncate(1); // forget positions 1 and 2
/// let logits = model.forward_cached(&Tensor::new(&[[5u32]], &Device::Cpu)?, &mut cache, &mut NoHooks)?;
/// assert_eq!((logits.dims(), cache.len()), (&[1, 1, 32][..], 2));
/// # Ok::<(), quantlens::Error>(())
/// ```
///
/// Not `Clone`: the buffers are written in place, so a shallow copy would share them.
#[derive(Debug)]
pub struct KvCache {
    /// Per block: key and value buffers `[b, kv_heads, capacity, head_dim]`, once allocated.
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    pub(crate) fn new(num_layers: usize, capacity: usize) -> Self {
        KvCache {
            layers: vec![None; num_layers],
            len: 0,
            capacity,
        }
    }

    /// Positions cached so far (the position of the next token fed).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forget every position from `len` on (no effect when `len ≥ self.len()`); the buffers
    /// are kept and overwritten by the next call.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Forget every position.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Refuse a forward pass of `t` new positions for batch size `b` that does not fit.
    pub(crate) fn check_room(&self, b: usize, t: usize) -> Result<()> {
        if self.len + t > self.capacity {
            return Err(Error::InvalidParameter {
                name: "kv cache",
                reason: format!(
                    "{} cached + {t} new positions exceed its capacity of {}",
                    self.len, self.capacity
                ),
            });
        }
        if let Some(Some((k, _))) = self.layers.first()
            && k.dim(0)? != b
        {
            return Err(Error::ShapeMismatch(format!(
                "the kv cache holds a batch of {} sequences, got {b}",
                k.dim(0)?
            )));
        }
        Ok(())
    }

    /// Write block `layer`'s new keys and values `[b, kv_heads, t, head_dim]` after the cached
    /// positions and return views of all `len + t` positions. The length only advances with
    /// [`advance`](Self::advance), once every block has written.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let (b, heads, t, d) = k.dims4()?;
        let capacity = self.capacity;
        let Some(slot) = self.layers.get_mut(layer) else {
            return Err(Error::ShapeMismatch(format!(
                "kv cache has {} blocks, block {layer} asked for",
                self.layers.len()
            )));
        };
        let (kb, vb) = match slot {
            Some(bufs) => bufs,
            None => {
                let zeros = || Tensor::zeros((b, heads, capacity, d), DType::F32, k.device());
                slot.insert((zeros()?, zeros()?))
            }
        };
        // Copies into the buffers: the cache keeps no reference to this pass's graph.
        kb.slice_set(&k.to_dtype(DType::F32)?.contiguous()?, 2, self.len)?;
        vb.slice_set(&v.to_dtype(DType::F32)?.contiguous()?, 2, self.len)?;
        let total = self.len + t;
        Ok((kb.narrow(2, 0, total)?, vb.narrow(2, 0, total)?))
    }

    /// Count `t` more cached positions (after a whole forward pass).
    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }
}
