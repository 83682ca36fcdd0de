//! Models whose linear layers quantlens can enumerate, replace, observe and quantize.
//!
//! A model implements [`QuantizableModel`] by holding its linear layers as [`LinearLayer`]s
//! and passing the [`ForwardHook`] it is given to each of them; everything else — reading and
//! replacing weights by name, capturing calibration inputs, quantizing activations, quantizing
//! the whole model layer by layer ([`SequentialQuantization`]) — comes with the trait.
//!
//! The crate ships three models, all built from `LinearLayer`s:
//!
//! - [`Mlp`], a classifier/regressor, with a seeded, deterministic [`train`] loop and
//!   [`evaluate`] helpers;
//! - [`Llama`], a Llama-family decoder (RMSNorm, RoPE, grouped-query attention, SwiGLU, tied
//!   embeddings, KV cache) that loads SmolLM2 from GGUF or trains from scratch, with
//!   [`perplexity`] and generation;
//! - [`BertEncoder`], a BERT encoder (all-MiniLM-L6-v2 from safetensors) producing mean-pooled,
//!   normalised sentence embeddings, compared with [`EmbeddingSimilarity`].

mod bert;
mod blocks;
mod embedding;
mod eval;
mod hooks;
mod language;
mod linear;
mod llama;
mod mlp;
mod sequential;
mod train;

pub use bert::{BertConfig, BertEmbeddings, BertEncoder, BertLayer, HiddenAct, LayerNorm};
pub use blocks::{BlockChain, BlockState};
pub use embedding::EmbeddingSimilarity;
pub use eval::{Evaluation, evaluate, expected_calibration_error};
pub use hooks::{
    CaptureInputs, ForwardHook, LayerFilter, NoHooks, PerturbActivations, QuantizeActivations,
};
pub use language::{Perplexity, PerplexityConfig, perplexity, perplexity_hooked};
pub use linear::{LayerWeight, LinearLayer};
pub use llama::{
    EmbeddingQuantization, GenerateConfig, KvCache, Llama, LlamaConfig, LlamaTrace, RopeStyle,
    Sampling, SourceFormats,
};
pub use mlp::{Activation, Mlp, MlpConfig};
pub use sequential::{
    CalibrationMode, LayerReport, QuantizationReport, SequentialQuantization, StoreAs,
};
pub use train::{
    EarlyStopping, EpochLog, Objective, TrainConfig, TrainHistory, Trainable, next_token_pairs,
    train,
};

use candle_core::Tensor;

use crate::error::{Error, Result};

/// A model made of named linear layers that quantlens can read, replace and hook.
///
/// Implementors provide three things: the layers in execution order, mutable access by name,
/// and a forward pass that hands `hooks` to every [`LinearLayer::forward`]. Layer names are
/// stable paths (`layers.2`, `blocks.3.mlp.down_proj`) used in reports, filters and hooks.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::model::{ForwardHook, LinearLayer, QuantizableModel};
///
/// /// Two linear layers with a ReLU between them.
/// struct Tiny { layers: Vec<LinearLayer> }
///
/// impl QuantizableModel for Tiny {
///     fn linear_layers(&self) -> Vec<&LinearLayer> { self.layers.iter().collect() }
///     fn linear_layer_mut(&mut self, name: &str) -> Option<&mut LinearLayer> {
///         self.layers.iter_mut().find(|l| l.name() == name)
///     }
///     fn forward_hooked(&self, x: &Tensor, hooks: &mut dyn ForwardHook) -> quantlens::Result<Tensor> {
///         let h = self.layers[0].forward(x, hooks)?.relu()?;
///         self.layers[1].forward(&h, hooks)
///     }
/// }
///
/// let dev = Device::Cpu;
/// let mut tiny = Tiny { layers: vec![
///     LinearLayer::new("layers.0", Tensor::ones((4, 3), candle_core::DType::F32, &dev)?, None)?,
///     LinearLayer::new("layers.1", Tensor::ones((2, 4), candle_core::DType::F32, &dev)?, None)?,
/// ]};
/// assert_eq!(tiny.layer_names(), ["layers.0", "layers.1"]);
/// tiny.set_weight("layers.1", Tensor::zeros((2, 4), candle_core::DType::F32, &dev)?.into())?;
/// let y = tiny.forward(&Tensor::ones((1, 3), candle_core::DType::F32, &dev)?)?;
/// assert_eq!(y.to_vec2::<f32>()?, vec![vec![0.0, 0.0]]);
/// # Ok::<(), quantlens::Error>(())
/// ```
pub trait QuantizableModel: Send + Sync {
    /// The linear layers, in the order a forward pass runs them.
    fn linear_layers(&self) -> Vec<&LinearLayer>;

    /// The layer called `name`, mutably.
    fn linear_layer_mut(&mut self, name: &str) -> Option<&mut LinearLayer>;

    /// The forward pass, handing `hooks` to every linear layer.
    fn forward_hooked(&self, input: &Tensor, hooks: &mut dyn ForwardHook) -> Result<Tensor>;

    /// The forward pass without hooks.
    fn forward(&self, input: &Tensor) -> Result<Tensor> {
        self.forward_hooked(input, &mut NoHooks)
    }

    /// Names of the linear layers, in execution order.
    fn layer_names(&self) -> Vec<String> {
        self.linear_layers()
            .iter()
            .map(|l| l.name().to_string())
            .collect()
    }

    /// The layer called `name`.
    fn linear_layer(&self, name: &str) -> Result<&LinearLayer> {
        let layers = self.linear_layers();
        match layers.iter().position(|l| l.name() == name) {
            Some(i) => Ok(layers[i]),
            None => Err(unknown_layer(name, &self.layer_names())),
        }
    }

    /// The weight of layer `name` as a dense f32 tensor (packed weights are dequantized).
    fn weight(&self, name: &str) -> Result<Tensor> {
        self.linear_layer(name)?.dense_weight()
    }

    /// Replace the weight of layer `name`: a dense tensor (full precision or fake-quantized)
    /// or a packed [`QuantizedTensor`](crate::QuantizedTensor), dequantized on the fly.
    fn set_weight(&mut self, name: &str, weight: LayerWeight) -> Result<()> {
        let names = self.layer_names();
        match self.linear_layer_mut(name) {
            Some(layer) => layer.set_weight(weight),
            None => Err(unknown_layer(name, &names)),
        }
    }

    /// Groups of layers quantized together by [`SequentialQuantization`], in order. Layers in
    /// one stage read the same input (a transformer's q/k/v projections), so one calibration
    /// pass serves all of them. The default puts every layer in a stage of its own.
    fn quantization_stages(&self) -> Vec<Vec<String>> {
        self.layer_names().into_iter().map(|n| vec![n]).collect()
    }

    /// Total parameter count of the linear layers' weights.
    fn linear_parameters(&self) -> usize {
        self.linear_layers()
            .iter()
            .map(|l| l.in_features() * l.out_features())
            .sum()
    }

    /// Bytes the linear layers' weights occupy as stored (packed sizes for packed weights).
    fn linear_storage_bytes(&self) -> usize {
        self.linear_layers()
            .iter()
            .map(|l| l.weight().storage_bytes())
            .sum()
    }

    /// Bytes of the parameters outside the linear layers (embeddings, norms, position
    /// tables), which quantization leaves alone. The default is 0; a model with such
    /// parameters overrides it so that reports give the size of the whole model.
    fn other_parameter_bytes(&self) -> usize {
        0
    }

    /// The model as a chain of blocks, if it can run block by block; `None` (the default)
    /// makes sequential calibration re-run the model's prefix for every stage. [`Llama`] and
    /// [`BertEncoder`] return themselves.
    fn as_block_chain(&self) -> Option<&dyn BlockChain> {
        None
    }

    /// Bytes of the whole model as stored: the linear layers' weights (packed sizes for packed
    /// weights) and biases, plus [`other_parameter_bytes`](Self::other_parameter_bytes).
    fn storage_bytes(&self) -> usize {
        let biases: usize = self
            .linear_layers()
            .iter()
            .filter_map(|l| l.bias())
            .map(|b| b.elem_count() * b.dtype().size_in_bytes())
            .sum();
        self.linear_storage_bytes() + biases + self.other_parameter_bytes()
    }
}

pub(crate) fn unknown_layer(name: &str, names: &[String]) -> Error {
    let mut available = names.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 8 {
        available.push_str(&format!(", … ({} layers)", names.len()));
    }
    Error::UnknownLayer {
        name: name.to_string(),
        available,
    }
}
