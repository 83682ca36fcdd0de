//! Saving and loading quantized tensors and models: GGUF and safetensors.
//!
//! | | write | read |
//! |---|---|---|
//! | GGUF v3 | [`GgufWriter`] | [`load_gguf`] (or [`read_gguf`] from memory) → [`GgufFile`] |
//! | safetensors | [`SafetensorsWriter`] | [`load_safetensors`] (or [`read_safetensors`]) → [`SafetensorsFile`] |
//! | a whole model | [`save_model`] (format from the extension) | [`load_into`] (format from the file's first bytes) |
//!
//! A file holds each tensor either *dense* (a plain F32, F16 or BF16 array) or *quantized*,
//! and reading gives it back as a [`TensorEntry`]. Round trips are exact: a loaded
//! [`QuantizedTensor`] equals the one saved (`==`: codes, scales, zero points, codebook,
//! offsets, shape and dtype), so it dequantizes to the same bits. Readers load the whole file
//! into memory (no memory mapping) and answer malformed input with [`Error::Malformed`]
//! (what is wrong, and at which byte or tensor), never a panic.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use quantlens::io::{SafetensorsWriter, load_safetensors};
//! use quantlens::{QuantSpec, Quantizer, UniformQuantizer};
//!
//! let w = Tensor::randn(0f32, 1.0, (4, 96), &Device::Cpu)?;
//! let q3 = UniformQuantizer::new(QuantSpec::int3().per_group(32).asymmetric())?.quantize(&w, None)?;
//! let path = std::env::temp_dir().join(format!("quantlens-io-doc-{}.safetensors", std::process::id()));
//! SafetensorsWriter::new().tensor("proj", &q3).write(&path)?;
//! let back = load_safetensors(&path)?;
//! assert_eq!(back.tensor("proj").and_then(|t| t.as_quantized()), Some(&q3));
//! # std::fs::remove_file(&path).ok();
//! # Ok::<(), quantlens::Error>(())
//! ```
//!
//! # GGUF
//!
//! GGUF v3, little-endian, tensor data aligned to 32 bytes, dimensions in GGML order
//! (innermost first). Quantized tensors whose layout *is* a GGML block type are written as
//! that type, bit for bit: the blocks hold our codes and f16 parameters unchanged, and
//! Candle's reader dequantizes them to exactly the values of
//! [`QuantizedTensor::dequantize`] (tested; other GGML readers evaluate the same expressions,
//! up to their own floating-point contraction):
//!
//! | quantlens tensor | GGUF tensor `<name>` | decodes to |
//! |---|---|---|
//! | `Uniform { bits: 4, symmetric: true }`, groups of 32, f16 scales, rows a multiple of 32 | Q4_0: `d` = scale; element `j` of a block in the low nibble of `qs[j]`, `j + 16` in the high nibble | `d · (code − 8)` |
//! | `Uniform { bits: 8, symmetric: true }`, groups of 32, f16 scales, rows a multiple of 32 | Q8_0: `d` = scale, `qs[j] = code − 128` (i8) | `d · qs` |
//! | `Affine { bits: 4 }` ([`AffineQuantizer::q4_1`](crate::AffineQuantizer::q4_1)), groups of 32, f16 scales and offsets | Q4_1: `d` = scale, `m` = offset, nibbles as Q4_0 | `code · d + m` |
//! | dense f32 / f16 / bf16 | F32 / F16 / BF16 | itself |
//! | any other quantized tensor (including any with input scales), [`GgufFallback::Packed`] (default) | its [packed parts](#packed-parts), each a 1-D tensor `<name>.<part>` (U8 parts as GGML I8) | exact, by quantlens |
//! | any other quantized tensor, [`GgufFallback::DequantizeF16`] | F16 of the dequantized (effective) values | by every reader |
//!
//! Metadata: `general.architecture` and `general.name` (`quantlens` unless set),
//! `general.alignment` (u32 32), `quantlens.version` (u32 1), the caller's keys, then for
//! each quantized tensor `quantlens.<name>.dtype` (the dtype `dequantize` returns; absent in
//! other writers' files, read as f32) or, for packed parts, every
//! [field](#packed-parts) as a string `quantlens.<name>.<field>`.
//!
//! [`load_gguf`] reads versions 2 and 3 from any writer as long as every tensor is F32, F16,
//! BF16, Q4_0, Q4_1, Q8_0, one of llama.cpp's K-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K:
//! read into exact affine or symmetric uniform tensors with the file's two-level scales, bit
//! for bit the values llama.cpp and Candle decode; the mapping is in `src/io/kquants.rs`), or
//! an I8 part of a quantlens packed tensor. IQ and the other GGML types are refused by name.
//! K-quant tensors are never *written* as K types: they go through the fallbacks below.
//! Note that Candle 0.11's reader knows no I8 type: a file with packed parts is
//! quantlens-only, which is what [`GgufFallback::DequantizeF16`] is for. Tensor names are
//! limited to 63 bytes and 4 dimensions, as in GGML.
//!
//! # safetensors
//!
//! A standard safetensors file (8-byte header length, JSON header, data). Dense tensors are
//! stored under their name in their dtype; a quantized tensor `<name>` becomes its
//! [packed parts](#packed-parts), each a 1-D tensor `<name>.<part>`, with its fields as
//! `__metadata__` strings `quantlens.<name>.<field>`. `__metadata__` also holds
//! `quantlens.version` = `"1"` and the caller's keys.
//!
//! # Packed parts
//!
//! | part | dtype | holds | present for |
//! |---|---|---|---|
//! | `<name>.codes` | U8 | the packed codes, byte for byte ([`PackedCodes`](crate::PackedCodes): little-endian bit stream, low bits first) | every format |
//! | `<name>.scales` | F32 / F16 / BF16; U8 for E8M0 | one scale per group | plain scales |
//! | `<name>.scale_codes` | U8 (the i8 codes' bytes) | double-quantized scales: one code per group | [`Scales::Double`](crate::Scales::Double) |
//! | `<name>.scale_blocks` | F32 | double-quantized scales: one scale per block of codes | [`Scales::Double`](crate::Scales::Double) |
//! | `<name>.zeros` | U8 | packed zero points (the format's bits each) | asymmetric uniform |
//! | `<name>.codebook` | F32; F16 for f16-stored levels | the level tables, end to end | codebook |
//! | `<name>.offsets` (or `.offset_codes` + `.offset_blocks`) | as scales | one offset per group | affine |
//! | `<name>.input_scales` (or `.input_scale_codes` + `.input_scale_blocks`) | as scales | one scale per input channel ([`QuantizedTensor::input_scales`](crate::QuantizedTensor::input_scales)) | AWQ, SmoothQuant |
//!
//! | field | value |
//! |---|---|
//! | `format` | `uniform`, `sign`, `ternary`, `codebook`, `float`, `affine` |
//! | `bits` | bits per code |
//! | `symmetric` | `true` or `false` (uniform) |
//! | `element` | `e4m3`, `e5m2` or `e2m1` (float) |
//! | `shape` | row-major dimensions, comma-separated (`4,64`; empty for a scalar) |
//! | `dtype` | `f32`, `f16` or `bf16`: what `dequantize` returns |
//! | `group_len` | consecutive elements per group |
//! | `scale_dtype` (`offset_dtype`, `input_scale_dtype`) | `f32`, `f16`, `bf16`, `e8m0` or `double` |
//! | `scale_block_len`, `scale_mean` (`offset_…`, `input_scale_…`) | double quantization: codes per block, the mean added back |
//! | `codebook_table_len` | levels per table |
//! | `codebook_storage` | `f32`, `f16` or `implicit` (implicit levels are written as F32 all the same, so a file stands alone) |
//!
//! # Models
//!
//! [`save_model`] writes, for every linear layer `<layer>` of a
//! [`QuantizableModel`](crate::model::QuantizableModel), the tensor `<layer>.weight` (quantized
//! for packed weights, dense otherwise) and `<layer>.bias` (dense) when the layer has one.
//! [`load_into`] puts them back into a model of the same architecture: every layer needs its
//! weight (of the same shape) and exactly the biases the model has, and every tensor of the
//! file must belong to a layer; it checks all of that before changing anything, so a failed
//! load leaves the model as it was.

mod ggml;
pub mod gguf;
mod kquants;
mod model;
mod parts;
pub mod safetensors;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use half::{bf16, f16};

use crate::error::{Error, Result};
use crate::model::LayerWeight;
use crate::quant::QuantizedTensor;

pub use gguf::{
    GGUF_ALIGNMENT, GGUF_VERSION, GgufFallback, GgufFile, GgufValue, GgufWriter, load_gguf,
    read_gguf,
};
pub use model::{FileFormat, load_into, save_model, save_model_as};
pub use safetensors::{SafetensorsFile, SafetensorsWriter, load_safetensors, read_safetensors};

/// One tensor as a file holds it.
#[derive(Debug, Clone)]
pub enum TensorEntry {
    /// A plain array (weights, biases, embeddings, or a quantized tensor written dequantized).
    Dense(Tensor),
    /// Packed codes and their parameters.
    Quantized(Box<QuantizedTensor>),
}

impl TensorEntry {
    /// The tensor's shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            TensorEntry::Dense(t) => t.dims(),
            TensorEntry::Quantized(q) => q.shape(),
        }
    }
    /// The dense tensor, if this is one.
    pub fn as_dense(&self) -> Option<&Tensor> {
        match self {
            TensorEntry::Dense(t) => Some(t),
            TensorEntry::Quantized(_) => None,
        }
    }
    /// The quantized tensor, if this is one.
    pub fn as_quantized(&self) -> Option<&QuantizedTensor> {
        match self {
            TensorEntry::Quantized(q) => Some(q),
            TensorEntry::Dense(_) => None,
        }
    }
    /// The values as a dense tensor on `device` (quantized tensors are dequantized).
    pub fn to_dense(&self, device: &Device) -> Result<Tensor> {
        match self {
            TensorEntry::Dense(t) => Ok(t.to_device(device)?),
            TensorEntry::Quantized(q) => q.dequantize(device),
        }
    }
}

impl From<Tensor> for TensorEntry {
    fn from(t: Tensor) -> Self {
        TensorEntry::Dense(t)
    }
}

impl From<QuantizedTensor> for TensorEntry {
    fn from(q: QuantizedTensor) -> Self {
        TensorEntry::Quantized(Box::new(q))
    }
}

impl From<TensorEntry> for LayerWeight {
    fn from(e: TensorEntry) -> Self {
        match e {
            TensorEntry::Dense(t) => LayerWeight::Dense(t),
            TensorEntry::Quantized(q) => LayerWeight::Packed(q),
        }
    }
}

/// The contents of a tensor file: metadata (`V`: [`GgufValue`] or `String`) and tensors, in
/// file order. Keys that only describe how a quantized tensor is packed are not repeated here.
#[derive(Debug, Clone)]
pub struct TensorFile<V> {
    metadata: Vec<(String, V)>,
    tensors: Vec<(String, TensorEntry)>,
}

impl<V> TensorFile<V> {
    /// Every metadata key and value.
    pub fn metadata(&self) -> &[(String, V)] {
        &self.metadata
    }
    /// The value of metadata `key`.
    pub fn metadata_value(&self, key: &str) -> Option<&V> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    /// Every tensor with its name.
    pub fn tensors(&self) -> &[(String, TensorEntry)] {
        &self.tensors
    }
    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
    /// Tensor names, in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|(n, _)| n.as_str())
    }
    /// The tensors, by value.
    pub fn into_tensors(self) -> Vec<(String, TensorEntry)> {
        self.tensors
    }
}

/// A tensor a writer was given, borrowed until it writes.
#[derive(Debug, Clone, Copy)]
enum Source<'a> {
    Dense(&'a Tensor),
    Quantized(&'a QuantizedTensor),
}

impl<'a> Source<'a> {
    fn of(e: &'a TensorEntry) -> Self {
        match e {
            TensorEntry::Dense(t) => Source::Dense(t),
            TensorEntry::Quantized(q) => Source::Quantized(q),
        }
    }
}

/// The little-endian bytes of a dense tensor (any device, any layout), row-major.
fn dense_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let t = t.to_device(&Device::Cpu)?.flatten_all()?;
    fn le<T: candle_core::WithDType, const N: usize>(
        t: &Tensor,
        f: fn(T) -> [u8; N],
    ) -> Result<Vec<u8>> {
        Ok(t.to_vec1::<T>()?.into_iter().flat_map(f).collect())
    }
    match t.dtype() {
        DType::F32 => le(&t, f32::to_le_bytes),
        DType::F16 => le(&t, f16::to_le_bytes),
        DType::BF16 => le(&t, bf16::to_le_bytes),
        DType::F64 => le(&t, f64::to_le_bytes),
        DType::U8 => le(&t, u8::to_le_bytes),
        DType::U32 => le(&t, u32::to_le_bytes),
        DType::I16 => le(&t, i16::to_le_bytes),
        DType::I32 => le(&t, i32::to_le_bytes),
        DType::I64 => le(&t, i64::to_le_bytes),
        dtype => Err(Error::Unsupported(format!(
            "saving dense {dtype:?} tensors (f32, f16, bf16, f64 and integer dtypes are supported)"
        ))),
    }
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

fn malformed(path: &Path, reason: String) -> Error {
    Error::Malformed {
        path: path.display().to_string(),
        reason,
    }
}
