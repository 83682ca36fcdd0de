//! GGUF (version 3) files: [`GgufWriter`] and [`load_gguf`].
//!
//! The layout (which tensors become which GGML type, what the `quantlens.*` keys hold) is
//! documented in [the module above](crate::io#gguf).

mod read;
mod value;

use std::collections::HashSet;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::io::ggml::{self, GgmlType};
use crate::io::parts::{self, PartType};
use crate::io::{Source, TensorEntry, TensorFile, dense_bytes, io_error};
use crate::quant::QuantizedTensor;

pub(super) use read::parse;
pub use read::{load_gguf, read_gguf};
pub use value::GgufValue;
use value::put_str;

/// The alignment [`GgufWriter`] uses for tensor data (GGUF's default).
pub const GGUF_ALIGNMENT: u64 = 32;
/// The GGUF version [`GgufWriter`] writes.
pub const GGUF_VERSION: u32 = 3;
const MAGIC: &[u8; 4] = b"GGUF";
/// GGML's limit on tensor names (`GGML_MAX_NAME`, terminating NUL included).
const MAX_NAME: usize = 63;
/// GGML's limit on dimensions (`GGML_MAX_DIMS`).
const MAX_DIMS: usize = 4;
/// Nesting limit for metadata arrays.
const MAX_DEPTH: usize = 16;

/// What [`load_gguf`] returns: metadata values and tensors, in file order.
pub type GgufFile = TensorFile<GgufValue>;

/// What [`GgufWriter`] does with a quantized tensor GGML has no type for (anything but
/// Q4_0, Q4_1 and Q8_0 layouts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GgufFallback {
    /// Store its packed parts as I8 tensors described by `quantlens.<name>.*` keys:
    /// exact, read back by [`load_gguf`]; other readers see byte arrays (and Candle 0.11's
    /// reader, which knows no I8, rejects the file).
    #[default]
    Packed,
    /// Store the dequantized values as an F16 tensor, which every GGUF reader loads; the
    /// packing is lost (the file holds 16 bits per weight).
    DequantizeF16,
}

/// Builds a GGUF v3 file from quantized and dense tensors.
///
/// Writes `general.architecture` and `general.name` (both `quantlens` unless set with
/// [`metadata`](Self::metadata)), `general.alignment` = 32 and `quantlens.version`, then the
/// caller's metadata, then the tensors in the order they were added.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::io::{GgufWriter, load_gguf};
/// use quantlens::{QuantSpec, Quantizer, UniformQuantizer};
///
/// let w = Tensor::randn(0f32, 1.0, (8, 64), &Device::Cpu)?;
/// let q4_0 = UniformQuantizer::new(QuantSpec::int4().per_group(32))?.quantize(&w, None)?;
/// let path = std::env::temp_dir().join(format!("quantlens-doc-{}.gguf", std::process::id()));
/// GgufWriter::new()
///     .metadata("general.name", "demo")
///     .tensor("blk.0.weight", &q4_0) // a Q4_0 tensor any GGUF reader decodes
///     .dense("blk.0.bias", &Tensor::zeros(8, candle_core::DType::F32, &Device::Cpu)?)
///     .write(&path)?;
/// let file = load_gguf(&path)?;
/// assert_eq!(file.tensor("blk.0.weight").and_then(|t| t.as_quantized()), Some(&q4_0));
/// assert_eq!(file.metadata_value("general.name").and_then(|v| v.as_str()), Some("demo"));
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct GgufWriter<'a> {
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<(String, Source<'a>)>,
    fallback: GgufFallback,
}

/// A metadata key and its value.
type Metadata = (String, GgufValue);

/// One tensor ready to be written.
struct Record {
    name: String,
    /// Row-major dims (written innermost first).
    dims: Vec<usize>,
    ty: GgmlType,
    bytes: Vec<u8>,
}

impl<'a> GgufWriter<'a> {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add (or replace) a metadata key. `general.alignment` is the writer's own and refused
    /// at [`write`](Self::write).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<GgufValue>) -> Self {
        let key = key.into();
        self.metadata.retain(|(k, _)| *k != key);
        self.metadata.push((key, value.into()));
        self
    }

    /// Add a quantized tensor: Q4_0, Q4_1 or Q8_0 when its layout is one of those, otherwise
    /// as the [`fallback`](Self::fallback) says.
    pub fn tensor(mut self, name: impl Into<String>, q: &'a QuantizedTensor) -> Self {
        self.tensors.push((name.into(), Source::Quantized(q)));
        self
    }

    /// Add a dense f32, f16 or bf16 tensor (written as F32, F16 or BF16).
    pub fn dense(mut self, name: impl Into<String>, t: &'a Tensor) -> Self {
        self.tensors.push((name.into(), Source::Dense(t)));
        self
    }

    /// Add a tensor as a file holds it (dense or quantized).
    pub fn entry(mut self, name: impl Into<String>, e: &'a TensorEntry) -> Self {
        self.tensors.push((name.into(), Source::of(e)));
        self
    }

    pub(super) fn source(mut self, name: String, s: Source<'a>) -> Self {
        self.tensors.push((name, s));
        self
    }

    /// What to do with quantized tensors GGML has no type for ([`GgufFallback::Packed`]
    /// unless set).
    pub fn fallback(mut self, fallback: GgufFallback) -> Self {
        self.fallback = fallback;
        self
    }

    /// Write the file at `path`.
    ///
    /// Errors on duplicate tensor names (generated part names included), names longer than
    /// GGML's 63 bytes, tensors of rank above 4, dense dtypes other than f32/f16/bf16,
    /// mixed-type metadata arrays, a caller-set `general.alignment`, and I/O failures.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        std::fs::write(path, bytes).map_err(|e| io_error(path, e))
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let invalid = |reason: String| Error::InvalidParameter {
            name: "GGUF contents",
            reason,
        };
        let (records, tensor_keys) = self.records()?;
        let mut metadata: Vec<Metadata> = Vec::new();
        for (key, default) in [
            ("general.architecture", "quantlens"),
            ("general.name", "quantlens"),
        ] {
            let v = self
                .metadata
                .iter()
                .find(|(k, _)| k == key)
                .map_or_else(|| default.into(), |(_, v)| v.clone());
            metadata.push((key.into(), v));
        }
        metadata.push(("general.alignment".into(), (GGUF_ALIGNMENT as u32).into()));
        metadata.push(("quantlens.version".into(), 1u32.into()));
        for (k, v) in &self.metadata {
            match k.as_str() {
                "general.architecture" | "general.name" => {}
                "general.alignment" | "quantlens.version" => {
                    return Err(invalid(format!("{k} is set by the writer")));
                }
                _ => metadata.push((k.clone(), v.clone())),
            }
        }
        let mut seen: HashSet<&str> = metadata.iter().map(|(k, _)| k.as_str()).collect();
        for (k, _) in &tensor_keys {
            if !seen.insert(k) {
                return Err(invalid(format!("metadata key {k} is set twice")));
            }
        }
        metadata.extend(tensor_keys);

        let mut out = Vec::new();
        out.extend(MAGIC);
        out.extend(GGUF_VERSION.to_le_bytes());
        out.extend((records.len() as u64).to_le_bytes());
        out.extend((metadata.len() as u64).to_le_bytes());
        for (k, v) in &metadata {
            put_str(&mut out, k);
            out.extend(v.type_id().to_le_bytes());
            v.encode(&mut out)
                .map_err(|e| invalid(format!("metadata {k}: {e}")))?;
        }
        let mut offset = 0u64;
        for r in &records {
            put_str(&mut out, &r.name);
            out.extend((r.dims.len() as u32).to_le_bytes());
            for &d in r.dims.iter().rev() {
                out.extend((d as u64).to_le_bytes());
            }
            out.extend(r.ty.id().to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset = align(offset + r.bytes.len() as u64);
        }
        for r in &records {
            pad(&mut out);
            out.extend(&r.bytes);
        }
        pad(&mut out);
        Ok(out)
    }

    /// Every tensor as GGML records, plus the `quantlens.<name>.*` keys describing them.
    fn records(&self) -> Result<(Vec<Record>, Vec<Metadata>)> {
        let mut records = Vec::new();
        let mut keys = Vec::new();
        for (name, src) in &self.tensors {
            match *src {
                Source::Dense(t) => records.push(dense_record(name, t)?),
                Source::Quantized(q) => match ggml::native_type(q) {
                    Some(ty) => {
                        keys.push((
                            format!("quantlens.{name}.dtype"),
                            parts::dtype_tag(q.dtype()).into(),
                        ));
                        records.push(Record {
                            name: name.clone(),
                            dims: q.shape().to_vec(),
                            ty,
                            bytes: ggml::encode_blocks(q, ty),
                        });
                    }
                    None if self.fallback == GgufFallback::DequantizeF16 => {
                        let t = q.dequantize_to(&Device::Cpu, DType::F16)?;
                        records.push(dense_record(name, &t)?);
                    }
                    None => {
                        let layout = parts::split(q);
                        for (field, value) in layout.fields {
                            keys.push((format!("quantlens.{name}.{field}"), value.into()));
                        }
                        for p in layout.parts {
                            records.push(Record {
                                name: format!("{name}.{}", p.suffix),
                                dims: vec![p.len()],
                                ty: match p.ty {
                                    PartType::U8 => GgmlType::I8,
                                    PartType::F16 => GgmlType::F16,
                                    PartType::BF16 => GgmlType::BF16,
                                    PartType::F32 => GgmlType::F32,
                                },
                                bytes: p.bytes,
                            });
                        }
                    }
                },
            }
        }
        let mut names = HashSet::new();
        for r in &records {
            let reason = if !names.insert(r.name.as_str()) {
                "is used twice (quantized tensors also take <name>.codes, <name>.scales, …)"
            } else if r.name.is_empty() || r.name.len() > MAX_NAME {
                "must be 1 to 63 bytes long (GGML_MAX_NAME)"
            } else if r.dims.len() > MAX_DIMS {
                "has more than 4 dimensions (GGML_MAX_DIMS)"
            } else {
                continue;
            };
            return Err(Error::InvalidParameter {
                name: "GGUF tensor name",
                reason: format!("tensor {:?} {reason}", r.name),
            });
        }
        Ok((records, keys))
    }
}

fn dense_record(name: &str, t: &Tensor) -> Result<Record> {
    let ty = match t.dtype() {
        DType::F32 => GgmlType::F32,
        DType::F16 => GgmlType::F16,
        DType::BF16 => GgmlType::BF16,
        dtype => {
            return Err(Error::UnsupportedDType {
                what: "dense GGUF tensor",
                dtype,
            });
        }
    };
    Ok(Record {
        name: name.to_string(),
        dims: t.dims().to_vec(),
        ty,
        bytes: dense_bytes(t)?,
    })
}

fn align(n: u64) -> u64 {
    n.div_ceil(GGUF_ALIGNMENT) * GGUF_ALIGNMENT
}

fn pad(out: &mut Vec<u8>) {
    out.resize(align(out.len() as u64) as usize, 0);
}
