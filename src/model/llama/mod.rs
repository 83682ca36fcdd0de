//! A Llama-family decoder (Llama 2/3, SmolLM2, TinyLlama, Mistral without sliding windows):
//! token embedding, pre-norm blocks of grouped-query attention with RoPE and a SwiGLU MLP,
//! a final RMSNorm and an LM head.
//!
//! Load a GGUF checkpoint with [`Llama::from_gguf`] (every tensor dequantized to f32, the
//! source formats recorded in [`SourceFormats`]) or build a seeded model from scratch with
//! [`Llama::new`] and fit it with [`train`](crate::model::train) (see
//! [`next_token_pairs`](crate::model::next_token_pairs)). Generate with a KV cache through
//! [`Llama::generate`]; score text with [`perplexity`](crate::model::perplexity).
//!
//! The seven projections of every block are [`LinearLayer`]s named
//! `blocks.{i}.attn.{q,k,v,o}_proj` and `blocks.{i}.mlp.{gate,up,down}_proj`, so weight
//! replacement, calibration capture, activation quantization and
//! [`SequentialQuantization`](crate::model::SequentialQuantization) apply to them. The token
//! embedding, the RMSNorm gains and the LM head are **not** linear layers and stay in full
//! precision: quantizers never see them (the usual practice of GPTQ/AWQ pipelines, and with
//! tied embeddings the LM head *is* the embedding table).

mod attention;
mod block;
mod cache;
mod chain;
mod config;
mod embedding_quant;
mod feed_forward;
mod generate;
mod gguf;
mod kernels;
mod rope;
mod trace;

pub use cache::KvCache;
pub use config::{LlamaConfig, RopeStyle};
pub use embedding_quant::EmbeddingQuantization;
pub use generate::{GenerateConfig, Sampling};
pub use gguf::SourceFormats;
pub use trace::LlamaTrace;

use candle_core::{DType, Device, Tensor, Var};

use crate::error::{Error, Result};
use crate::model::hooks::{ForwardHook, NoHooks};
use crate::model::linear::LinearLayer;
use crate::model::train::Trainable;
use crate::model::{BlockChain, LayerWeight, QuantizableModel};
use crate::rng::SplitMix64;

use attention::{Attention, Step, Trace};
use block::{Block, param};
use feed_forward::FeedForward;
use kernels::Kernels;
use rope::Rope;

/// The projections of a block, in execution order, as they appear in layer names.
const PROJECTIONS: [&str; 7] = [
    "attn.q_proj",
    "attn.k_proj",
    "attn.v_proj",
    "attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

/// The dense tensors a model is assembled from (f32, row-major, `[out, in]` for projections).
pub(crate) struct Weights {
    pub(crate) embedding: Tensor,
    pub(crate) lm_head: Option<Tensor>,
    pub(crate) final_norm: Tensor,
    pub(crate) blocks: Vec<BlockWeights>,
}

/// One block's tensors; `linear` in [`PROJECTIONS`] order.
pub(crate) struct BlockWeights {
    pub(crate) attn_norm: Tensor,
    pub(crate) mlp_norm: Tensor,
    pub(crate) linear: Vec<Tensor>,
}

/// A Llama-family decoder whose projections are [`LinearLayer`]s.
///
/// [`forward`](QuantizableModel::forward) maps u32 token ids `[b, t]` to f32 logits
/// `[b, t, vocab]` (position `j` predicts token `j + 1`), causally: logits at `j` depend only
/// on tokens `≤ j`.
///
/// Every parameter is a Candle [`Var`], so the model trains with
/// [`train`](crate::model::train) ([`Trainable`]); once a projection's weight is replaced
/// (quantized, perturbed) the model refuses further training, as [`Mlp`](crate::model::Mlp)
/// does. Cloning copies the parameters: training a clone leaves the original untouched.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::model::{Llama, LlamaConfig, QuantizableModel};
///
/// let model = Llama::new(LlamaConfig::tiny(100, 32, 2, 4, 2), 7, &Device::Cpu)?;
/// assert_eq!(model.layer_names().len(), 2 * 7);
/// assert_eq!(model.layer_names()[0], "blocks.0.attn.q_proj");
/// let ids = Tensor::new(&[[1u32, 5, 9], [2, 2, 2]], &Device::Cpu)?;
/// assert_eq!(model.forward(&ids)?.dims(), [2, 3, 100]);
/// // Token ids must be u32 and below the vocabulary size.
/// assert!(model.forward(&Tensor::new(&[[100u32]], &Device::Cpu)?).is_err());
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug)]
pub struct Llama {
    config: LlamaConfig,
    embedding: Var,
    lm_head: Option<Var>,
    blocks: Vec<Block>,
    final_norm: Var,
    rope: Rope,
    source: Option<SourceFormats>,
}

impl Llama {
    /// A freshly initialised model, seeded: every weight drawn from N(0, 0.02²) by
    /// [`SplitMix64`] (the same seed gives the same bytes on every machine), the output
    /// projections of each residual branch (`o_proj`, `down_proj`) scaled by `1/√(2·layers)`
    /// as in GPT-2, RMSNorm gains 1.
    pub fn new(config: LlamaConfig, seed: u64, device: &Device) -> Result<Self> {
        config.validate()?;
        let mut rng = SplitMix64::new(seed);
        let mut normal = |shape: (usize, usize), std: f64| -> Result<Tensor> {
            let data: Vec<f32> = (0..shape.0 * shape.1)
                .map(|_| (rng.normal() * std) as f32)
                .collect();
            Ok(Tensor::from_vec(data, shape, device)?)
        };
        let std = 0.02;
        let residual_std = std / (2.0 * config.num_layers as f64).sqrt();
        let embedding = normal((config.vocab_size, config.hidden_size), std)?;
        let shapes = projection_shapes(&config);
        let mut blocks = Vec::with_capacity(config.num_layers);
        for _ in 0..config.num_layers {
            let linear = shapes
                .iter()
                .zip(PROJECTIONS)
                .map(|(&shape, name)| {
                    let writes_residual = matches!(name, "attn.o_proj" | "mlp.down_proj");
                    normal(shape, if writes_residual { residual_std } else { std })
                })
                .collect::<Result<Vec<_>>>()?;
            blocks.push(BlockWeights {
                attn_norm: Tensor::ones(config.hidden_size, DType::F32, device)?,
                mlp_norm: Tensor::ones(config.hidden_size, DType::F32, device)?,
                linear,
            });
        }
        let lm_head = if config.tie_embeddings {
            None
        } else {
            Some(normal((config.vocab_size, config.hidden_size), std)?)
        };
        let weights = Weights {
            embedding,
            lm_head,
            final_norm: Tensor::ones(config.hidden_size, DType::F32, device)?,
            blocks,
        };
        Llama::from_weights(config, weights, None, device)
    }

    /// Assemble a model from dense tensors whose shapes match `config`.
    pub(crate) fn from_weights(
        config: LlamaConfig,
        weights: Weights,
        source: Option<SourceFormats>,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let (v, h) = (config.vocab_size, config.hidden_size);
        let var = |t: Tensor, what: &str, shape: &[usize]| -> Result<Var> {
            if t.dims() != shape {
                return Err(Error::ShapeMismatch(format!(
                    "{what}: expected {shape:?}, got {:?}",
                    t.dims()
                )));
            }
            Ok(Var::from_tensor(
                &t.to_dtype(DType::F32)?.to_device(device)?,
            )?)
        };
        if weights.blocks.len() != config.num_layers {
            return Err(Error::ShapeMismatch(format!(
                "{} blocks of weights for a model of {} layers",
                weights.blocks.len(),
                config.num_layers
            )));
        }
        if weights.lm_head.is_some() == config.tie_embeddings {
            return Err(Error::InvalidParameter {
                name: "lm_head",
                reason: format!(
                    "tie_embeddings = {} needs {} LM head",
                    config.tie_embeddings,
                    if config.tie_embeddings {
                        "no separate"
                    } else {
                        "a separate"
                    }
                ),
            });
        }
        let embedding = var(weights.embedding, "embed_tokens", &[v, h])?;
        let lm_head = match weights.lm_head {
            Some(t) => Some(var(t, "lm_head", &[v, h])?),
            None => None,
        };
        let final_norm = var(weights.final_norm, "norm", &[h])?;
        let shapes = projection_shapes(&config);
        let mut blocks = Vec::with_capacity(config.num_layers);
        for (i, bw) in weights.blocks.into_iter().enumerate() {
            if bw.linear.len() != PROJECTIONS.len() {
                return Err(Error::ShapeMismatch(format!(
                    "block {i}: {} projection weights, expected {}",
                    bw.linear.len(),
                    PROJECTIONS.len()
                )));
            }
            let mut vars = Vec::with_capacity(PROJECTIONS.len());
            let mut layers = Vec::with_capacity(PROJECTIONS.len());
            for ((t, name), (o, n)) in bw.linear.into_iter().zip(PROJECTIONS).zip(shapes) {
                let full = format!("blocks.{i}.{name}");
                let w = var(t, &full, &[o, n])?;
                layers.push(LinearLayer::new(full, w.as_tensor().clone(), None)?);
                vars.push(w);
            }
            let mut layers = layers.into_iter();
            let mut next = || {
                layers
                    .next()
                    .ok_or_else(|| Error::ShapeMismatch("missing projection".into()))
            };
            let attn = Attention {
                q_proj: next()?,
                k_proj: next()?,
                v_proj: next()?,
                o_proj: next()?,
                num_heads: config.num_heads,
                num_kv_heads: config.num_kv_heads,
                head_dim: config.head_dim,
            };
            let mlp = FeedForward {
                gate_proj: next()?,
                up_proj: next()?,
                down_proj: next()?,
            };
            blocks.push(Block {
                attn_norm: var(bw.attn_norm, &format!("blocks.{i}.attn_norm"), &[h])?,
                mlp_norm: var(bw.mlp_norm, &format!("blocks.{i}.mlp_norm"), &[h])?,
                attn,
                mlp,
                weights: vars,
            });
        }
        Ok(Llama {
            rope: Rope::new(&config, device)?,
            config,
            embedding,
            lm_head,
            blocks,
            final_norm,
            source,
        })
    }

    /// The configuration it was built from (or read from the GGUF metadata).
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// A short description for reports, e.g. `llama-30x576-h9kv3`.
    pub fn name(&self) -> String {
        let c = &self.config;
        format!(
            "llama-{}x{}-h{}kv{}",
            c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads
        )
    }

    /// Where the weights came from: the GGUF file and each tensor's storage format there
    /// (`None` for a model built by [`Llama::new`]).
    pub fn source_formats(&self) -> Option<&SourceFormats> {
        self.source.as_ref()
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &Device {
        self.embedding.device()
    }

    /// The token embedding `[vocab, hidden]` (not a linear layer: full precision unless
    /// [`quantize_embedding`](Self::quantize_embedding) replaced it).
    pub fn embedding(&self) -> Tensor {
        self.embedding.as_tensor().detach()
    }

    /// The LM head `[vocab, hidden]`: the embedding itself when tied.
    pub fn lm_head(&self) -> Tensor {
        self.lm_head
            .as_ref()
            .unwrap_or(&self.embedding)
            .as_tensor()
            .detach()
    }

    /// The RMSNorm gain before block `block`'s attention, `[hidden]`.
    pub fn attn_norm(&self, block: usize) -> Result<Tensor> {
        Ok(self.block(block)?.attn_norm.as_tensor().detach())
    }

    /// The RMSNorm gain before block `block`'s MLP, `[hidden]`.
    pub fn mlp_norm(&self, block: usize) -> Result<Tensor> {
        Ok(self.block(block)?.mlp_norm.as_tensor().detach())
    }

    /// The final RMSNorm gain, `[hidden]`.
    pub fn final_norm(&self) -> Tensor {
        self.final_norm.as_tensor().detach()
    }

    fn block(&self, block: usize) -> Result<&Block> {
        self.blocks
            .get(block)
            .ok_or_else(|| Error::InvalidParameter {
                name: "block",
                reason: format!("the model has {} blocks, got {block}", self.blocks.len()),
            })
    }

    /// An empty cache for incremental decoding of up to `capacity` positions (at most
    /// `max_seq_len`).
    pub fn kv_cache(&self, capacity: usize) -> Result<KvCache> {
        if capacity == 0 || capacity > self.config.max_seq_len {
            return Err(Error::InvalidParameter {
                name: "kv cache capacity",
                reason: format!(
                    "must lie in 1..={}, got {capacity}",
                    self.config.max_seq_len
                ),
            });
        }
        Ok(KvCache::new(self.config.num_layers, capacity))
    }

    /// Logits `[b, t, vocab]` of `t` new tokens `ids: [b, t]` placed after the `cache.len()`
    /// positions already in `cache`, which then holds them too. Feeding a sequence in pieces
    /// gives the logits of one full [`forward`](QuantizableModel::forward) (to rounding);
    /// the projections run through [`LinearLayer::forward`] with `hooks`, so a quantized
    /// model decodes with its quantized weights.
    pub fn forward_cached(
        &self,
        ids: &Tensor,
        cache: &mut KvCache,
        hooks: &mut dyn ForwardHook,
    ) -> Result<Tensor> {
        self.run(ids, hooks, Some(cache), Kernels::Fused, false)
    }

    /// Like [`forward_cached`](Self::forward_cached), but only the last position's logits
    /// `[b, vocab]`: what generation needs after a prompt (the LM head, a `[vocab, hidden]`
    /// product per position, runs once).
    pub fn forward_cached_last(
        &self,
        ids: &Tensor,
        cache: &mut KvCache,
        hooks: &mut dyn ForwardHook,
    ) -> Result<Tensor> {
        let logits = self.run(ids, hooks, Some(cache), Kernels::Fused, true)?;
        Ok(logits.squeeze(1)?)
    }

    /// The forward pass: `ids: [b, t]` (u32) → logits `[b, t, vocab]`, or `[b, 1, vocab]` of
    /// the last position when `last_only`.
    pub(crate) fn run(
        &self,
        ids: &Tensor,
        hooks: &mut dyn ForwardHook,
        cache: Option<&mut KvCache>,
        kernels: Kernels,
        last_only: bool,
    ) -> Result<Tensor> {
        let offset = cache.as_ref().map_or(0, |c| c.len());
        let (b, t) = self.check_ids(ids, offset)?;
        let h = param(&self.embedding, kernels)
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, self.config.hidden_size))?;
        self.run_embedded(h, hooks, cache, kernels, last_only, None)
    }

    /// The blocks, the final norm and the LM head over input embeddings `h: [b, t, hidden]`
    /// (already checked), recording each block's internals into `trace` when given.
    pub(crate) fn run_embedded(
        &self,
        mut h: Tensor,
        hooks: &mut dyn ForwardHook,
        mut cache: Option<&mut KvCache>,
        kernels: Kernels,
        last_only: bool,
        trace: Option<&mut Trace>,
    ) -> Result<Tensor> {
        let offset = cache.as_ref().map_or(0, |c| c.len());
        let (b, t, _) = h.dims3()?;
        if let Some(c) = cache.as_deref() {
            c.check_room(b, t)?;
        }
        let c = &self.config;
        let mut step = Step::new(
            &self.rope,
            offset,
            t,
            kernels,
            cache.as_deref_mut(),
            h.device(),
        )?;
        step.trace = trace;
        for (i, block) in self.blocks.iter().enumerate() {
            h = block.forward(&h, i, c.rms_eps, &mut step, hooks)?;
        }
        if let Some(cache) = cache {
            cache.advance(t);
        }
        let h = if last_only { h.narrow(1, t - 1, 1)? } else { h };
        let rows = h.dim(1)?;
        let h = kernels.rms_norm(&h, &param(&self.final_norm, kernels), c.rms_eps)?;
        let head = param(self.lm_head.as_ref().unwrap_or(&self.embedding), kernels);
        let logits = h
            .reshape((b * rows, c.hidden_size))?
            .matmul(&head.t()?)?
            .reshape((b, rows, c.vocab_size))?;
        Ok(match kernels {
            Kernels::Differentiable | Kernels::InputGradient => logits,
            // The projections' weights are variables, so their outputs carry a graph; drop it.
            Kernels::Fused => logits.detach(),
        })
    }

    /// Refuse ids that are not u32 `[b, t]` with `t ≥ 1`, ids ≥ vocab, or positions past the
    /// context; return `(b, t)`.
    fn check_ids(&self, ids: &Tensor, offset: usize) -> Result<(usize, usize)> {
        if ids.dtype() != DType::U32 {
            return Err(Error::InvalidParameter {
                name: "token ids",
                reason: format!("must be u32, got {:?}", ids.dtype()),
            });
        }
        let (b, t) = match *ids.dims() {
            [b, t] => (b, t),
            _ => {
                return Err(Error::RankMismatch {
                    what: "token ids [batch, seq]",
                    expected: 2,
                    shape: ids.dims().to_vec(),
                });
            }
        };
        if b == 0 || t == 0 {
            return Err(Error::EmptyTensor {
                what: "token ids",
                shape: ids.dims().to_vec(),
            });
        }
        if offset + t > self.config.max_seq_len {
            return Err(Error::InvalidParameter {
                name: "sequence length",
                reason: format!(
                    "{offset} cached + {t} new positions exceed max_seq_len = {}",
                    self.config.max_seq_len
                ),
            });
        }
        // Candle's index_select does not bounds-check on every backend: check on the host
        // (one u32 per token, small next to the logits).
        let flat = ids.flatten_all()?.to_vec1::<u32>()?;
        if let Some((index, &value)) = flat
            .iter()
            .enumerate()
            .find(|(_, id)| **id as usize >= self.config.vocab_size)
        {
            return Err(Error::TargetOutOfRange {
                what: "token ids",
                index,
                value: i64::from(value),
                classes: self.config.vocab_size,
            });
        }
        Ok((b, t))
    }
}

/// `[out, in]` of the seven projections, in [`PROJECTIONS`] order.
fn projection_shapes(c: &LlamaConfig) -> [(usize, usize); 7] {
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let (q, kv) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
    [(q, h), (kv, h), (kv, h), (h, q), (i, h), (i, h), (h, i)]
}

impl Clone for Llama {
    fn clone(&self) -> Self {
        // Fresh variables, so the clone trains independently; projections whose weight was
        // replaced (quantized) keep the replacement, which is immutable and shared.
        let copy = |v: &Var| {
            v.as_tensor()
                .copy()
                .and_then(|t| Var::from_tensor(&t))
                .expect("copying a tensor that already exists does not fail")
        };
        let mut blocks = self.blocks.clone();
        for block in &mut blocks {
            block.attn_norm = copy(&block.attn_norm);
            block.mlp_norm = copy(&block.mlp_norm);
            let old = std::mem::take(&mut block.weights);
            let fresh: Vec<Var> = old.iter().map(copy).collect();
            for ((layer, old), new) in block.linear_layers_mut().into_iter().zip(&old).zip(&fresh) {
                if let LayerWeight::Dense(t) = layer.weight()
                    && t.id() == old.as_tensor().id()
                {
                    layer
                        .set_weight(new.as_tensor().clone())
                        .expect("same shape by construction");
                }
            }
            block.weights = fresh;
        }
        Llama {
            config: self.config.clone(),
            embedding: copy(&self.embedding),
            lm_head: self.lm_head.as_ref().map(copy),
            blocks,
            final_norm: copy(&self.final_norm),
            rope: self.rope.clone(),
            source: self.source.clone(),
        }
    }
}

impl QuantizableModel for Llama {
    fn linear_layers(&self) -> Vec<&LinearLayer> {
        self.blocks.iter().flat_map(Block::linear_layers).collect()
    }

    fn linear_layer_mut(&mut self, name: &str) -> Option<&mut LinearLayer> {
        self.blocks
            .iter_mut()
            .flat_map(Block::linear_layers_mut)
            .find(|l| l.name() == name)
    }

    /// `ids: [b, t]` (u32) → logits `[b, t, vocab]` (f32).
    fn forward_hooked(&self, input: &Tensor, hooks: &mut dyn ForwardHook) -> Result<Tensor> {
        self.run(input, hooks, None, Kernels::Fused, false)
    }

    fn as_block_chain(&self) -> Option<&dyn BlockChain> {
        Some(self)
    }

    /// Per block: `[q, k, v]` (one input), `[o]`, `[gate, up]` (one input), `[down]`.
    fn quantization_stages(&self) -> Vec<Vec<String>> {
        let mut stages = Vec::with_capacity(4 * self.blocks.len());
        for i in 0..self.blocks.len() {
            let name = |p: &str| format!("blocks.{i}.{p}");
            stages.push(vec![
                name("attn.q_proj"),
                name("attn.k_proj"),
                name("attn.v_proj"),
            ]);
            stages.push(vec![name("attn.o_proj")]);
            stages.push(vec![name("mlp.gate_proj"), name("mlp.up_proj")]);
            stages.push(vec![name("mlp.down_proj")]);
        }
        stages
    }

    /// The embedding (tied to the LM head unless a separate head was loaded), the separate
    /// head, the RMSNorm gains.
    fn other_parameter_bytes(&self) -> usize {
        let bytes = |v: &Var| v.elem_count() * v.dtype().size_in_bytes();
        let norms: usize = self
            .blocks
            .iter()
            .map(|b| bytes(&b.attn_norm) + bytes(&b.mlp_norm))
            .sum();
        bytes(&self.embedding)
            + self.lm_head.as_ref().map_or(0, bytes)
            + norms
            + bytes(&self.final_norm)
    }
}

impl Trainable for Llama {
    /// The embedding, the separate LM head if any, then per block the two RMSNorm gains and
    /// the seven projection weights, then the final norm gain.
    fn parameters(&self) -> Result<Vec<Var>> {
        let mut params = vec![self.embedding.clone()];
        params.extend(self.lm_head.iter().cloned());
        for block in &self.blocks {
            for (layer, w) in block.linear_layers().into_iter().zip(&block.weights) {
                let trainable = matches!(
                    layer.weight(),
                    LayerWeight::Dense(t) if t.id() == w.as_tensor().id()
                );
                if !trainable {
                    return Err(Error::Unsupported(format!(
                        "layer {} has a replaced (quantized or perturbed) weight; train the \
                         full-precision model and quantize afterwards",
                        layer.name()
                    )));
                }
            }
            params.push(block.attn_norm.clone());
            params.push(block.mlp_norm.clone());
            params.extend(block.weights.iter().cloned());
        }
        params.push(self.final_norm.clone());
        Ok(params)
    }

    /// The forward pass with differentiable kernels; no dropout, so `step_seed` is unused.
    fn forward_train(&self, input: &Tensor, _step_seed: u64) -> Result<Tensor> {
        self.run(input, &mut NoHooks, None, Kernels::Differentiable, false)
    }
}
