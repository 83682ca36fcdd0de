//! Causal grouped-query self-attention with rotary positions: the q/k/v/o projections are
//! [`LinearLayer`]s, so quantized weights and forward hooks apply to them.

use candle_core::{Device, Tensor};

use crate::error::Result;
use crate::model::hooks::ForwardHook;
use crate::model::linear::LinearLayer;
use crate::model::llama::cache::KvCache;
use crate::model::llama::kernels::Kernels;
use crate::model::llama::rope::Rope;

/// What every block of one forward pass shares: the RoPE tables, the position of the first
/// new token, the kernels, and the cache (if decoding incrementally).
pub(crate) struct Step<'a> {
    pub(crate) rope: &'a Rope,
    pub(crate) offset: usize,
    pub(crate) kernels: Kernels,
    pub(crate) cache: Option<&'a mut KvCache>,
    /// The additive causal mask `[t, offset + t]`, built once per pass; `None` for a single
    /// new token, which may attend to every position.
    pub(crate) mask: Option<Tensor>,
    /// Where blocks record their internals, when the pass is traced
    /// ([`Llama::trace`](super::Llama::trace)).
    pub(crate) trace: Option<&'a mut Trace>,
}

/// What a traced pass records, one entry per block in order.
#[derive(Debug, Default)]
pub(crate) struct Trace {
    /// The residual stream after each block, `[b, t, hidden]`.
    pub(crate) hidden: Vec<Tensor>,
    /// The SwiGLU activation `silu(gate(x)) · up(x)` of each block (the input of `down_proj`
    /// before any smoothing), `[b, t, intermediate]`.
    pub(crate) ffn: Vec<Tensor>,
}

impl<'a> Step<'a> {
    /// The shared state of a pass over `t` new tokens after `offset` earlier ones.
    pub(crate) fn new(
        rope: &'a Rope,
        offset: usize,
        t: usize,
        kernels: Kernels,
        cache: Option<&'a mut KvCache>,
        device: &Device,
    ) -> Result<Self> {
        let mask = if t > 1 {
            Some(causal_mask(t, offset, device)?)
        } else {
            None
        };
        Ok(Step {
            rope,
            offset,
            kernels,
            cache,
            mask,
            trace: None,
        })
    }
}

/// One attention sub-layer: `o_proj(softmax(q kᵀ/√d + causal mask) v)` per head, the query
/// heads of a group sharing one key/value head.
#[derive(Debug, Clone)]
pub(crate) struct Attention {
    pub(crate) q_proj: LinearLayer,
    pub(crate) k_proj: LinearLayer,
    pub(crate) v_proj: LinearLayer,
    pub(crate) o_proj: LinearLayer,
    pub(crate) num_heads: usize,
    pub(crate) num_kv_heads: usize,
    pub(crate) head_dim: usize,
}

impl Attention {
    /// `x: [b, t, hidden]` → `[b, t, hidden]`, for block `layer` (its slot in the cache).
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        layer: usize,
        step: &mut Step<'_>,
        hooks: &mut dyn ForwardHook,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (heads, kv_heads, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let kernels = step.kernels;
        let q = kernels.linear(&self.q_proj, x, hooks)?;
        let k = kernels.linear(&self.k_proj, x, hooks)?;
        let v = kernels.linear(&self.v_proj, x, hooks)?;
        let q = q.reshape((b, t, heads, d))?.transpose(1, 2)?;
        let k = k.reshape((b, t, kv_heads, d))?.transpose(1, 2)?;
        let v = v
            .reshape((b, t, kv_heads, d))?
            .transpose(1, 2)?
            .contiguous()?;
        let q = step.rope.apply(&q, step.offset, step.kernels)?;
        let k = step.rope.apply(&k, step.offset, step.kernels)?;
        let (k, v) = match step.cache.as_deref_mut() {
            Some(cache) => cache.append(layer, &k, &v)?,
            None => (k, v),
        };
        let total = k.dim(2)?;
        // Grouped-query attention without copying keys and values `groups` times: the query
        // heads of group g (heads g·groups .. (g+1)·groups, the order of Hugging Face's
        // `repeat_kv`) are stacked into one [groups·t, d] matrix against key head g.
        let groups = heads / kv_heads;
        let q = (q * (1.0 / (d as f64).sqrt()))?.reshape((b, kv_heads, groups * t, d))?;
        let scores = q.matmul(&k.t()?)?;
        let scores = match &step.mask {
            Some(mask) => scores
                .reshape((b, kv_heads, groups, t, total))?
                .broadcast_add(mask)?
                .reshape((b, kv_heads, groups * t, total))?,
            None => scores,
        };
        let probs = step.kernels.softmax(&scores)?;
        let out = probs.matmul(&v)?;
        let out = out
            .reshape((b, heads, t, d))?
            .transpose(1, 2)?
            .reshape((b, t, heads * d))?;
        kernels.linear(&self.o_proj, &out, hooks)
    }
}

/// Additive mask `[t, offset + t]`: 0 where query `i` (position `offset + i`) may attend key
/// `j` (`j ≤ offset + i`), −∞ elsewhere.
fn causal_mask(t: usize, offset: usize, device: &Device) -> Result<Tensor> {
    let total = offset + t;
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j <= offset + i {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(mask, (t, total), device)?)
}
