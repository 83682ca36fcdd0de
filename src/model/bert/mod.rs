//! A BERT encoder (all-MiniLM-L6-v2 and other `BertModel` checkpoints) producing
//! sentence-transformers sentence embeddings, with every projection a quantizable
//! [`LinearLayer`].
//!
//! | file | concept |
//! |---|---|
//! | `config.rs` | [`BertConfig`], [`HiddenAct`]: `config.json`, validation, tiny test configs |
//! | `params.rs` | parameters from a safetensors checkpoint (`bert.` prefix or not) or a seeded draw |
//! | `embeddings.rs` | [`BertEmbeddings`]: word + position + token type 0, LayerNorm |
//! | `layer.rs` | [`BertLayer`]: post-norm self-attention and feed-forward blocks |
//! | `norm.rs` | [`LayerNorm`] (two-pass, full precision) |
//! | `input.rs` | token-id checks and the padding mask |
//! | `pooling.rs` | mean pooling over real tokens, L2 normalisation |
//! | `chain.rs` | the encoder as a [`BlockChain`](crate::model::BlockChain) of its layers |

mod chain;
mod config;
mod embeddings;
mod input;
mod layer;
mod norm;
mod params;
mod pooling;

pub use config::{BertConfig, HiddenAct};
pub use embeddings::BertEmbeddings;
pub use layer::BertLayer;
pub use norm::LayerNorm;

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::error::Result;
use crate::model::hooks::{ForwardHook, PaddedBatch};
use crate::model::linear::LinearLayer;
use crate::model::{BlockChain, QuantizableModel};
use input::TokenBatch;
use params::{FileParams, ParamSource, RandomParams};

/// A BERT encoder whose forward pass maps token ids `[b, t]` to mean-pooled, L2-normalised
/// sentence embeddings `[b, hidden]`.
///
/// Token ids are any integer dtype (u32 is used as is); shorter rows are padded with
/// `pad_token_id` (`[PAD]` = 0 for MiniLM), which is masked out of attention and of the
/// pooling. Positions are absolute from 0, so pad at the end of a row, as Hugging Face
/// tokenizers do.
///
/// Each layer `i` holds six [`LinearLayer`]s: `blocks.{i}.attn.{q,k,v,o}_proj` and
/// `blocks.{i}.mlp.{up,down}_proj`. The embedding tables and LayerNorms are not linear layers
/// and stay in full precision. [`quantization_stages`](QuantizableModel::quantization_stages)
/// puts q, k and v of a layer in one stage (they read the same input).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::model::{BertConfig, BertEncoder, QuantizableModel};
///
/// let mut config = BertConfig::new(50, 16, 2, 4, 32);
/// config.max_position_embeddings = 8;
/// let bert = BertEncoder::new(config, 7, &Device::Cpu)?;
/// assert_eq!(bert.layer_names().len(), 12);
/// assert_eq!(bert.quantization_stages()[0], ["blocks.0.attn.q_proj", "blocks.0.attn.k_proj", "blocks.0.attn.v_proj"]);
///
/// // Two sentences, the second padded with [PAD] = 0.
/// let ids = Tensor::new(&[[1u32, 5, 9, 2], [1, 7, 2, 0]], &Device::Cpu)?;
/// let emb = bert.forward(&ids)?;
/// assert_eq!(emb.dims(), [2, 16]);
/// let norms = emb.sqr()?.sum(1)?.sqrt()?.to_vec1::<f32>()?;
/// assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5));
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct BertEncoder {
    config: BertConfig,
    embeddings: BertEmbeddings,
    layers: Vec<BertLayer>,
}

impl BertEncoder {
    /// Load a Hugging Face `BertModel` checkpoint: `model.safetensors` (tensor names with or
    /// without a `bert.` prefix; f16/bf16 weights are widened to f32) and its `config.json`.
    /// The pooler, if present, is not used.
    ///
    /// Errors: an unreadable or malformed file, a missing tensor or one whose shape does not
    /// match the config ([`Error::Malformed`](crate::Error::Malformed) naming it), or an
    /// unsupported config.
    pub fn from_safetensors(
        model_path: impl AsRef<Path>,
        config_path: impl AsRef<Path>,
        device: &Device,
    ) -> Result<Self> {
        let config = BertConfig::from_json_file(config_path)?;
        let mut src = FileParams::open(model_path.as_ref())?;
        Self::build(config, &mut src, device)
    }

    /// all-MiniLM-L6-v2 (f32, 6 layers, hidden 384) from the fixture cache
    /// (`minilm/model.safetensors` and `minilm/config.json`, filled by
    /// `scripts/fetch-fixtures.sh`).
    pub fn minilm(device: &Device) -> Result<Self> {
        BertEncoder::from_safetensors(
            crate::data::fixture_path("minilm/model.safetensors")?,
            crate::data::fixture_path("minilm/config.json")?,
            device,
        )
    }

    /// A randomly initialised encoder (for tests and experiments), the same bytes for the same
    /// seed. Every parameter is drawn — weights, biases and embeddings from `N(0, σ²)`,
    /// LayerNorm scales from `1 + N(0, σ²)`, shifts from `N(0, σ²)`, with
    /// σ = `config.initializer_range` — unlike Hugging Face's initialisation (zero biases,
    /// unit LayerNorms), so that a test against a reference sees every term.
    pub fn new(config: BertConfig, seed: u64, device: &Device) -> Result<Self> {
        config.validate()?;
        let mut src = RandomParams::new(seed, config.initializer_range);
        Self::build(config, &mut src, device)
    }

    fn build(config: BertConfig, src: &mut dyn ParamSource, device: &Device) -> Result<Self> {
        let embeddings = BertEmbeddings::load(&config, src, device)?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| BertLayer::load(i, &config, src, device))
            .collect::<Result<Vec<_>>>()?;
        Ok(BertEncoder {
            config,
            embeddings,
            layers,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The embedding tables and their LayerNorm.
    pub fn embeddings(&self) -> &BertEmbeddings {
        &self.embeddings
    }

    /// The encoder layers, in order.
    pub fn layers(&self) -> &[BertLayer] {
        &self.layers
    }

    /// The last hidden state `[b, t, hidden]` for token ids `[b, t]`, handing `hooks` to every
    /// linear layer. Rows at padding positions are computed (they attend to the real tokens)
    /// but carry no meaning.
    pub fn forward_hidden(&self, ids: &Tensor, hooks: &mut dyn ForwardHook) -> Result<Tensor> {
        let batch = TokenBatch::new(ids, &self.config)?;
        self.hidden(&batch, hooks)
    }

    fn hidden(&self, batch: &TokenBatch, hooks: &mut dyn ForwardHook) -> Result<Tensor> {
        if batch.has_padding {
            // Hooks learn which rows are padding (calibration capture leaves them out).
            let mut padded = PaddedBatch::new(hooks, &batch.mask)?;
            return self.layers_forward(batch, &mut padded);
        }
        self.layers_forward(batch, hooks)
    }

    fn layers_forward(&self, batch: &TokenBatch, hooks: &mut dyn ForwardHook) -> Result<Tensor> {
        let mask_bias = batch.attention_bias()?;
        let mut h = self.embeddings.forward(&batch.ids)?;
        for layer in &self.layers {
            h = layer.forward(&h, &mask_bias, hooks)?;
        }
        Ok(h)
    }
}

impl QuantizableModel for BertEncoder {
    fn linear_layers(&self) -> Vec<&LinearLayer> {
        self.layers.iter().flat_map(|l| l.linear_layers()).collect()
    }

    fn linear_layer_mut(&mut self, name: &str) -> Option<&mut LinearLayer> {
        self.layers
            .iter_mut()
            .flat_map(|l| l.linear_layers_mut())
            .find(|l| l.name() == name)
    }

    /// Sentence embeddings `[b, hidden]`: the last hidden state averaged over the non-padding
    /// tokens of each row, then scaled to unit L2 norm.
    fn forward_hooked(&self, input: &Tensor, hooks: &mut dyn ForwardHook) -> Result<Tensor> {
        let batch = TokenBatch::new(input, &self.config)?;
        let hidden = self.hidden(&batch, hooks)?;
        pooling::mean_pool_normalize(&hidden, &batch.mask)
    }

    fn as_block_chain(&self) -> Option<&dyn BlockChain> {
        Some(self)
    }

    /// Per layer: `[q, k, v]` (one calibration pass for the three), then `o`, `up`, `down`.
    fn quantization_stages(&self) -> Vec<Vec<String>> {
        self.layers
            .iter()
            .flat_map(|l| {
                let [q, k, v, o, up, down] = l.linear_layers().map(|x| x.name().to_string());
                [vec![q, k, v], vec![o], vec![up], vec![down]]
            })
            .collect()
    }
}
