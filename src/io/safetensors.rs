//! safetensors files: [`SafetensorsWriter`] and [`load_safetensors`].
//!
//! The layout is documented in [the module above](crate::io#safetensors).

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use ::safetensors::tensor::{Dtype, SafeTensors, TensorView, View};
use candle_core::safetensors::Load;
use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::io::parts::{self, PART_SUFFIXES, PartSource, PartType};
use crate::io::{Source, TensorEntry, TensorFile, dense_bytes, io_error, malformed};
use crate::quant::QuantizedTensor;

/// What [`load_safetensors`] returns: `__metadata__` strings and tensors, in file order.
pub type SafetensorsFile = TensorFile<String>;

/// Builds a safetensors file from quantized and dense tensors.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::io::{SafetensorsWriter, load_safetensors};
/// use quantlens::{AffineQuantizer, Quantizer};
///
/// let w = Tensor::randn(0f32, 1.0, (2, 64), &Device::Cpu)?;
/// let q = AffineQuantizer::q4_1().quantize(&w, None)?;
/// let path = std::env::temp_dir().join(format!("quantlens-st-doc-{}.safetensors", std::process::id()));
/// SafetensorsWriter::new()
///     .metadata("source", "doc test")
///     .tensor("w", &q)  // w.codes, w.scales, w.offsets
///     .dense("b", &Tensor::ones(2, candle_core::DType::F32, &Device::Cpu)?)
///     .write(&path)?;
/// let file = load_safetensors(&path)?;
/// assert_eq!(file.tensor("w").and_then(|t| t.as_quantized()), Some(&q));
/// assert_eq!(file.metadata_value("source").map(String::as_str), Some("doc test"));
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct SafetensorsWriter<'a> {
    metadata: Vec<(String, String)>,
    tensors: Vec<(String, Source<'a>)>,
}

/// One array ready to be written.
struct Blob {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Blob {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

impl<'a> SafetensorsWriter<'a> {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add (or replace) a `__metadata__` entry. Keys `quantlens.*` are the writer's own.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        self.metadata.retain(|(k, _)| *k != key);
        self.metadata.push((key, value.into()));
        self
    }

    /// Add a quantized tensor, stored as its packed parts `<name>.codes`, `<name>.scales`, ….
    pub fn tensor(mut self, name: impl Into<String>, q: &'a QuantizedTensor) -> Self {
        self.tensors.push((name.into(), Source::Quantized(q)));
        self
    }

    /// Add a dense tensor, stored under `name` in its dtype.
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

    /// Write the file at `path`.
    ///
    /// Errors on duplicate names (generated part names included), caller keys under
    /// `quantlens.`, dense dtypes safetensors cannot hold, and I/O failures.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        std::fs::write(path, bytes).map_err(|e| io_error(path, e))
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let invalid = |reason: String| Error::InvalidParameter {
            name: "safetensors contents",
            reason,
        };
        let mut metadata: HashMap<String, String> = HashMap::new();
        metadata.insert("quantlens.version".into(), "1".into());
        for (k, v) in &self.metadata {
            if k.starts_with("quantlens.") {
                return Err(invalid(format!(
                    "metadata key {k}: quantlens.* keys are the writer's"
                )));
            }
            metadata.insert(k.clone(), v.clone());
        }
        let mut blobs: Vec<(String, Blob)> = Vec::new();
        for (name, src) in &self.tensors {
            match *src {
                Source::Dense(t) => blobs.push((
                    name.clone(),
                    Blob {
                        dtype: t.dtype().into(),
                        shape: t.dims().to_vec(),
                        bytes: dense_bytes(t)?,
                    },
                )),
                Source::Quantized(q) => {
                    let layout = parts::split(q);
                    for (field, value) in layout.fields {
                        metadata.insert(format!("quantlens.{name}.{field}"), value);
                    }
                    for p in layout.parts {
                        let shape = vec![p.len()];
                        blobs.push((
                            format!("{name}.{}", p.suffix),
                            Blob {
                                dtype: match p.ty {
                                    PartType::U8 => Dtype::U8,
                                    PartType::F16 => Dtype::F16,
                                    PartType::BF16 => Dtype::BF16,
                                    PartType::F32 => Dtype::F32,
                                },
                                shape,
                                bytes: p.bytes,
                            },
                        ));
                    }
                }
            }
        }
        let mut names = HashSet::new();
        if let Some((dup, _)) = blobs.iter().find(|(n, _)| !names.insert(n.as_str())) {
            return Err(invalid(format!(
                "tensor {dup:?} is used twice (quantized tensors also take <name>.codes, \
                 <name>.scales, …)"
            )));
        }
        ::safetensors::tensor::serialize(blobs.iter().map(|(n, b)| (n.as_str(), b)), Some(metadata))
            .map_err(|e| invalid(e.to_string()))
    }
}

/// Read a safetensors file: quantized tensors written by [`SafetensorsWriter`] are rebuilt
/// from their parts; every other tensor is returned dense, in its dtype. Any safetensors file
/// of Candle-supported dtypes loads.
pub fn load_safetensors(path: impl AsRef<Path>) -> Result<SafetensorsFile> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
    parse(&bytes).map_err(|reason| malformed(path, reason))
}

/// [`load_safetensors`] from bytes in memory (errors name the file `<memory>`).
pub fn read_safetensors(bytes: &[u8]) -> Result<SafetensorsFile> {
    parse(bytes).map_err(|reason| malformed(Path::new("<memory>"), reason))
}

pub(super) fn parse(bytes: &[u8]) -> std::result::Result<SafetensorsFile, String> {
    let bad = |e: ::safetensors::SafeTensorError| format!("not a valid safetensors file: {e}");
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(bad)?;
    let st = SafeTensors::deserialize(bytes).map_err(bad)?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let packed: BTreeSet<&str> = metadata
        .keys()
        .filter_map(|k| k.strip_prefix("quantlens.")?.strip_suffix(".format"))
        .collect();
    let order = header.offset_keys();
    let mut used: HashSet<String> = HashSet::new();
    let mut tensors = Vec::new();
    let mut done = HashSet::new();
    for name in &order {
        if used.contains(name) {
            continue;
        }
        let base = name
            .rsplit_once('.')
            .filter(|(b, s)| PART_SUFFIXES.contains(s) && packed.contains(b))
            .map(|(b, _)| b);
        if let Some(base) = base {
            if !done.insert(base) {
                return Err(format!(
                    "tensor {name:?} is not a part of {base:?}'s format"
                ));
            }
            let mut src = StParts {
                base,
                metadata: &metadata,
                st: &st,
                used: &mut used,
            };
            let q = parts::join(&mut src).map_err(|e| format!("tensor {base:?}: {e}"))?;
            tensors.push((base.to_string(), TensorEntry::Quantized(Box::new(q))));
            continue;
        }
        let view = st.tensor(name).map_err(bad)?;
        let t = view
            .load(&Device::Cpu)
            .map_err(|e| format!("tensor {name:?}: {e}"))?;
        tensors.push((name.clone(), TensorEntry::Dense(t)));
    }
    if let Some(base) = packed.iter().find(|b| !done.contains(*b)) {
        return Err(format!(
            "quantlens.{base}.format describes a tensor whose parts ({base}.codes, …) are missing"
        ));
    }
    let quantized: HashSet<&str> = done;
    let mut metadata: Vec<(String, String)> = metadata
        .iter()
        .filter(|(k, _)| {
            !k.strip_prefix("quantlens.")
                .and_then(|rest| rest.rsplit_once('.'))
                .is_some_and(|(base, _)| quantized.contains(base))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata.sort();
    Ok(TensorFile { metadata, tensors })
}

/// The fields and parts of one packed tensor in a safetensors file.
struct StParts<'f> {
    base: &'f str,
    metadata: &'f HashMap<String, String>,
    st: &'f SafeTensors<'f>,
    used: &'f mut HashSet<String>,
}

impl PartSource for StParts<'_> {
    fn field(&self, field: &str) -> std::result::Result<Option<String>, String> {
        Ok(self
            .metadata
            .get(&format!("quantlens.{}.{field}", self.base))
            .cloned())
    }

    fn part(&mut self, suffix: &str) -> std::result::Result<Option<(PartType, Vec<u8>)>, String> {
        let name = format!("{}.{suffix}", self.base);
        let Ok(view) = self.st.tensor(&name) else {
            return Ok(None);
        };
        self.used.insert(name.clone());
        Ok(Some((part_type(&name, &view)?, view.data().to_vec())))
    }
}

fn part_type(name: &str, view: &TensorView<'_>) -> std::result::Result<PartType, String> {
    Ok(match view.dtype() {
        Dtype::U8 => PartType::U8,
        Dtype::F16 => PartType::F16,
        Dtype::BF16 => PartType::BF16,
        Dtype::F32 => PartType::F32,
        other => return Err(format!("part {name:?} has dtype {other:?}")),
    })
}
