//! Whole models to and from files: every linear layer's weight and bias.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::io::{GgufWriter, SafetensorsWriter, Source, TensorEntry, io_error, malformed};
use crate::model::{LayerWeight, QuantizableModel};

/// A tensor file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileFormat {
    /// GGUF v3 ([`GgufWriter`]).
    Gguf,
    /// safetensors ([`SafetensorsWriter`]).
    Safetensors,
}

impl FileFormat {
    /// The format a path's extension names: `.gguf` or `.safetensors` (any case).
    ///
    /// ```
    /// use quantlens::io::FileFormat;
    /// assert_eq!(FileFormat::from_path("m.GGUF".as_ref()), Some(FileFormat::Gguf));
    /// assert_eq!(FileFormat::from_path("m.safetensors".as_ref()), Some(FileFormat::Safetensors));
    /// assert_eq!(FileFormat::from_path("m.bin".as_ref()), None);
    /// ```
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "gguf" => Some(FileFormat::Gguf),
            "safetensors" => Some(FileFormat::Safetensors),
            _ => None,
        }
    }
}

/// Save every linear layer of `model` (weights packed or dense as they are, and biases) to
/// `path`, in the format its extension names (`.gguf` or `.safetensors`).
///
/// Layer `<layer>` becomes `<layer>.weight` and, if it has a bias, `<layer>.bias`; GGUF files
/// keep packed weights exact (quantlens packed parts where GGML has no matching type). See
/// [`load_into`] for the way back.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::io::{load_into, save_model};
/// use quantlens::model::{Mlp, MlpConfig, QuantizableModel};
///
/// let mlp = Mlp::new(MlpConfig::new(8, &[16], 3), 7, &Device::Cpu)?;
/// let path = std::env::temp_dir().join(format!("quantlens-model-doc-{}.safetensors", std::process::id()));
/// save_model(&mlp, &path)?;
/// let mut other = Mlp::new(MlpConfig::new(8, &[16], 3), 99, &Device::Cpu)?;
/// load_into(&mut other, &path)?;
/// let x = Tensor::ones((2, 8), candle_core::DType::F32, &Device::Cpu)?;
/// assert_eq!(mlp.forward(&x)?.to_vec2::<f32>()?, other.forward(&x)?.to_vec2::<f32>()?);
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), quantlens::Error>(())
/// ```
pub fn save_model<M: QuantizableModel + ?Sized>(model: &M, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let format = FileFormat::from_path(path).ok_or_else(|| Error::InvalidParameter {
        name: "path",
        reason: format!(
            "{} ends in neither .gguf nor .safetensors; use save_model_as to name the format",
            path.display()
        ),
    })?;
    save_model_as(model, path, format)
}

/// [`save_model`] in an explicitly chosen format, whatever the path's extension.
pub fn save_model_as<M: QuantizableModel + ?Sized>(
    model: &M,
    path: impl AsRef<Path>,
    format: FileFormat,
) -> Result<()> {
    let layers = model.linear_layers();
    let mut sources = Vec::new();
    for layer in &layers {
        let weight = match layer.weight() {
            LayerWeight::Dense(t) => Source::Dense(t),
            LayerWeight::Packed(q) => Source::Quantized(q),
        };
        sources.push((format!("{}.weight", layer.name()), weight));
        if let Some(b) = layer.bias() {
            sources.push((format!("{}.bias", layer.name()), Source::Dense(b)));
        }
    }
    match format {
        FileFormat::Gguf => sources
            .into_iter()
            .fold(GgufWriter::new(), |w, (n, s)| w.source(n, s))
            .write(path),
        FileFormat::Safetensors => sources
            .into_iter()
            .fold(SafetensorsWriter::new(), |w, (n, s)| w.source(n, s))
            .write(path),
    }
}

/// Load the weights and biases [`save_model`] wrote into `model`, which must have the same
/// architecture: the same layer names, weight shapes and biases. The file's format is read
/// from its first bytes (GGUF magic, otherwise safetensors).
///
/// Dense weights and biases move to each layer's device; packed weights stay packed. Every
/// check runs before the first layer changes, so on error the model is as it was. Errors name
/// the layer or tensor that does not fit: a missing weight, a shape that differs, a bias the
/// model lacks or the file lacks, a quantized bias, or a tensor that belongs to no layer.
pub fn load_into<M: QuantizableModel + ?Sized>(
    model: &mut M,
    path: impl AsRef<Path>,
) -> Result<()> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
    let tensors = if bytes.starts_with(b"GGUF") {
        super::gguf::parse(&bytes).map(|f| f.into_tensors())
    } else {
        super::safetensors::parse(&bytes).map(|f| f.into_tensors())
    }
    .map_err(|reason| malformed(path, reason))?;
    let mut by_name: HashMap<String, TensorEntry> = tensors.into_iter().collect();
    let mismatch = |reason: String| Error::ShapeMismatch(format!("{}: {reason}", path.display()));
    let missing = |reason: String| malformed(path, format!("does not fit the model: {reason}"));

    let mut plan: Vec<(String, LayerWeight, Option<Tensor>)> = Vec::new();
    for layer in model.linear_layers() {
        let name = layer.name();
        let want = [layer.out_features(), layer.in_features()];
        let weight = by_name
            .remove(&format!("{name}.weight"))
            .ok_or_else(|| missing(format!("no tensor {name}.weight for layer {name}")))?;
        if weight.shape() != want {
            return Err(mismatch(format!(
                "{name}.weight has shape {:?}, layer {name} needs {want:?}",
                weight.shape()
            )));
        }
        let weight = match weight {
            TensorEntry::Dense(t) => LayerWeight::Dense(t.to_device(layer.device())?),
            TensorEntry::Quantized(q) => LayerWeight::Packed(q),
        };
        let bias = match (layer.bias(), by_name.remove(&format!("{name}.bias"))) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(missing(format!(
                    "layer {name} has a bias, the file has no {name}.bias"
                )));
            }
            (None, Some(_)) => {
                return Err(missing(format!(
                    "the file has {name}.bias, layer {name} has no bias"
                )));
            }
            (Some(_), Some(TensorEntry::Quantized(_))) => {
                return Err(missing(format!(
                    "{name}.bias is quantized; biases are dense"
                )));
            }
            (Some(old), Some(TensorEntry::Dense(b))) => {
                if b.dims() != old.dims() {
                    return Err(mismatch(format!(
                        "{name}.bias has shape {:?}, layer {name} needs {:?}",
                        b.dims(),
                        old.dims()
                    )));
                }
                Some(b.to_device(layer.device())?)
            }
        };
        plan.push((name.to_string(), weight, bias));
    }
    if let Some(extra) = by_name.keys().min() {
        return Err(missing(format!(
            "tensor {extra} belongs to no layer of the model"
        )));
    }
    for (name, weight, bias) in plan {
        model.set_weight(&name, weight)?;
        if let (Some(b), Some(layer)) = (bias, model.linear_layer_mut(&name)) {
            layer.replace_bias(b);
        }
    }
    Ok(())
}
