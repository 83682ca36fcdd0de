//! Where a BERT encoder's parameters come from: a checkpoint (safetensors, Hugging Face names)
//! or a seeded random draw. Both answer the same request — a name in the checkpoint's naming,
//! a shape, and how a random draw should look — so one builder serves both.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::io::{SafetensorsFile, load_safetensors};
use crate::rng::{self, SplitMix64};

/// How a randomly drawn parameter is distributed (`σ` = the config's initializer range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Init {
    /// `N(0, σ²)`: projection weights, embeddings, biases, LayerNorm shifts.
    Normal,
    /// `1 + N(0, σ²)`: LayerNorm scales.
    OnePlusNormal,
}

/// A source of named parameters.
pub(super) trait ParamSource {
    /// The f32 tensor `name` (Hugging Face naming, without any `bert.` prefix) of shape
    /// `shape`, on `device`.
    fn get(&mut self, name: &str, shape: &[usize], init: Init, device: &Device) -> Result<Tensor>;
}

/// Parameters read from a safetensors checkpoint, with or without a `bert.` prefix.
pub(super) struct FileParams {
    file: SafetensorsFile,
    prefix: &'static str,
    path: String,
}

impl FileParams {
    /// Read `path` and work out the prefix its tensor names carry.
    pub(super) fn open(path: &Path) -> Result<Self> {
        let file = load_safetensors(path)?;
        // `BertModel` checkpoints name tensors `embeddings.…`; task models wrapping one
        // (`BertForMaskedLM`, …) name them `bert.embeddings.…`.
        let prefix = if file
            .tensor("bert.embeddings.word_embeddings.weight")
            .is_some()
        {
            "bert."
        } else {
            ""
        };
        Ok(FileParams {
            file,
            prefix,
            path: path.display().to_string(),
        })
    }

    fn malformed(&self, reason: String) -> Error {
        Error::Malformed {
            path: self.path.clone(),
            reason,
        }
    }
}

impl ParamSource for FileParams {
    fn get(&mut self, name: &str, shape: &[usize], _: Init, device: &Device) -> Result<Tensor> {
        let full = format!("{}{name}", self.prefix);
        let entry = self.file.tensor(&full).ok_or_else(|| {
            self.malformed(format!(
                "missing tensor {full:?} (a BERT checkpoint names it {name:?} or \"bert.{name}\")"
            ))
        })?;
        if entry.shape() != shape {
            return Err(self.malformed(format!(
                "tensor {full:?} has shape {:?}, but config.json implies {shape:?}",
                entry.shape()
            )));
        }
        let t = entry.to_dense(device)?;
        if !t.dtype().is_float() {
            return Err(self.malformed(format!(
                "tensor {full:?} has dtype {:?}, not a float type",
                t.dtype()
            )));
        }
        Ok(t.to_dtype(DType::F32)?)
    }
}

/// Parameters drawn from [`SplitMix64`], each from its own seed derived from the model seed
/// and the parameter's name, so the draw of one does not depend on which came before it.
pub(super) struct RandomParams {
    seed: u64,
    sigma: f64,
}

impl RandomParams {
    pub(super) fn new(seed: u64, sigma: f64) -> Self {
        RandomParams { seed, sigma }
    }
}

impl ParamSource for RandomParams {
    fn get(&mut self, name: &str, shape: &[usize], init: Init, device: &Device) -> Result<Tensor> {
        let name_hash = name
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| rng::mix(h ^ b as u64));
        let mut draw = SplitMix64::new(rng::mix(self.seed ^ name_hash));
        let offset = match init {
            Init::Normal => 0.0,
            Init::OnePlusNormal => 1.0,
        };
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|_| (offset + self.sigma * draw.normal()) as f32)
            .collect();
        Ok(Tensor::from_vec(values, shape, device)?)
    }
}
