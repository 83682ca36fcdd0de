//! GGUF (version 3) files: [`GgufWriter`] and [`load_gguf`].
//!
//! The layout (which tensors become which GGML type, what the `quantlens.*` keys hold) is
//! documented in [the module above](crate::io#gguf).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::io::ggml::{self, GgmlType};
use crate::io::parts::{self, PART_SUFFIXES, PartSource, PartType};
use crate::io::{Source, TensorEntry, TensorFile, dense_bytes, io_error, malformed};
use crate::quant::QuantizedTensor;

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

/// A GGUF metadata value.
///
/// ```
/// use quantlens::io::GgufValue;
/// assert_eq!(GgufValue::from("llama").as_str(), Some("llama"));
/// assert_eq!(GgufValue::from(32u32).as_u64(), Some(32));
/// assert_eq!(GgufValue::from(vec![1.0f32, 2.0]), GgufValue::Array(vec![1.0f32.into(), 2.0f32.into()]));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// `uint8`.
    U8(u8),
    /// `int8`.
    I8(i8),
    /// `uint16`.
    U16(u16),
    /// `int16`.
    I16(i16),
    /// `uint32`.
    U32(u32),
    /// `int32`.
    I32(i32),
    /// `uint64`.
    U64(u64),
    /// `int64`.
    I64(i64),
    /// `float32`.
    F32(f32),
    /// `float64`.
    F64(f64),
    /// `bool` (one byte, 0 or 1).
    Bool(bool),
    /// A UTF-8 string.
    String(String),
    /// An array of values of one type.
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The string, for string values.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value widened to u64, for unsigned integers (and non-negative signed ones).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// GGUF's id of the value's type (`gguf_metadata_value_type`).
    fn type_id(&self) -> u32 {
        match self {
            GgufValue::U8(_) => 0,
            GgufValue::I8(_) => 1,
            GgufValue::U16(_) => 2,
            GgufValue::I16(_) => 3,
            GgufValue::U32(_) => 4,
            GgufValue::I32(_) => 5,
            GgufValue::F32(_) => 6,
            GgufValue::Bool(_) => 7,
            GgufValue::String(_) => 8,
            GgufValue::Array(_) => 9,
            GgufValue::U64(_) => 10,
            GgufValue::I64(_) => 11,
            GgufValue::F64(_) => 12,
        }
    }

    /// Append the value (without its type id) to `out`; errors on mixed-type arrays.
    fn encode(&self, out: &mut Vec<u8>) -> std::result::Result<(), String> {
        match self {
            GgufValue::U8(v) => out.push(*v),
            GgufValue::I8(v) => out.extend(v.to_le_bytes()),
            GgufValue::U16(v) => out.extend(v.to_le_bytes()),
            GgufValue::I16(v) => out.extend(v.to_le_bytes()),
            GgufValue::U32(v) => out.extend(v.to_le_bytes()),
            GgufValue::I32(v) => out.extend(v.to_le_bytes()),
            GgufValue::U64(v) => out.extend(v.to_le_bytes()),
            GgufValue::I64(v) => out.extend(v.to_le_bytes()),
            GgufValue::F32(v) => out.extend(v.to_le_bytes()),
            GgufValue::F64(v) => out.extend(v.to_le_bytes()),
            GgufValue::Bool(v) => out.push(u8::from(*v)),
            GgufValue::String(s) => put_str(out, s),
            GgufValue::Array(items) => {
                let ty = items
                    .first()
                    .map_or(GgufValue::U8(0).type_id(), Self::type_id);
                if items.iter().any(|v| v.type_id() != ty) {
                    return Err("an array mixes value types".into());
                }
                out.extend(ty.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for v in items {
                    v.encode(out)?;
                }
            }
        }
        Ok(())
    }
}

macro_rules! from_value {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for GgufValue {
            fn from(x: $t) -> Self {
                GgufValue::$v(x.into())
            }
        }
    )*};
}
from_value!(u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, u64 => U64,
    i64 => I64, f32 => F32, f64 => F64, bool => Bool, String => String, &str => String);

impl<T: Into<GgufValue>> From<Vec<T>> for GgufValue {
    fn from(v: Vec<T>) -> Self {
        GgufValue::Array(v.into_iter().map(Into::into).collect())
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

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

/// Read a GGUF file (version 2 or 3): Q4_0, Q4_1 and Q8_0 tensors become quantized tensors
/// (Q4_0/Q8_0 symmetric uniform, Q4_1 affine; groups of 32, f16 scales), F32/F16/BF16
/// tensors dense ones, and quantlens' own packed tensors are rebuilt from their parts.
///
/// Files from other writers load too, as long as every tensor has one of those types; a
/// malformed or unsupported file gives [`Error::Malformed`] saying what and where.
pub fn load_gguf(path: impl AsRef<Path>) -> Result<GgufFile> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
    parse(&bytes).map_err(|reason| malformed(path, reason))
}

/// [`load_gguf`] from bytes in memory (errors name the file `<memory>`).
pub fn read_gguf(bytes: &[u8]) -> Result<GgufFile> {
    parse(bytes).map_err(|reason| malformed(Path::new("<memory>"), reason))
}

/// A tensor info as read.
struct Info {
    name: String,
    dims: Vec<usize>,
    ty: GgmlType,
    /// Byte range in the file.
    range: std::ops::Range<usize>,
}

pub(super) fn parse(bytes: &[u8]) -> std::result::Result<GgufFile, String> {
    let mut c = Cursor { b: bytes, pos: 0 };
    let magic = c.take(4, "magic")?;
    if magic != MAGIC {
        return Err(format!(
            "not a GGUF file: magic {magic:02x?}, expected {:02x?} (\"GGUF\")",
            MAGIC
        ));
    }
    let version = c.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(format!(
            "GGUF version {version} is not supported (quantlens reads versions 2 and 3, \
             little-endian)"
        ));
    }
    let n_tensors = c.u64("tensor count")?;
    let n_kv = c.u64("metadata count")?;
    // Each entry takes at least 13 (key/value) or 24 (tensor info) bytes.
    if n_kv
        .saturating_mul(13)
        .saturating_add(n_tensors.saturating_mul(24))
        > c.left() as u64
    {
        return Err(format!(
            "header declares {n_tensors} tensors and {n_kv} metadata entries, more than the \
             {} bytes left can hold",
            c.left()
        ));
    }
    let mut metadata = Vec::new();
    let mut keys = HashSet::new();
    for _ in 0..n_kv {
        let at = c.pos;
        let key = c.string("metadata key")?;
        let ty = c.u32("metadata value type")?;
        let value = c
            .value(ty, 0)
            .map_err(|e| format!("metadata {key:?}: {e}"))?;
        if !keys.insert(key.clone()) {
            return Err(format!("metadata key {key:?} at byte {at} appears twice"));
        }
        metadata.push((key, value));
    }
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => GGUF_ALIGNMENT,
        Some((_, v)) => match v.as_u64() {
            Some(a) if a.is_power_of_two() => a,
            _ => return Err(format!("general.alignment = {v:?} is not a power of two")),
        },
    };
    let mut raw = Vec::new();
    for _ in 0..n_tensors {
        let name = c.string("tensor name")?;
        let n_dims = c.u32("dimension count")? as usize;
        if n_dims > MAX_DIMS {
            return Err(format!(
                "tensor {name:?} has {n_dims} dimensions; GGUF allows at most {MAX_DIMS}"
            ));
        }
        let mut dims = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            let d = c.u64("dimension")?;
            dims.push(usize::try_from(d).map_err(|_| format!("tensor {name:?}: dimension {d}"))?);
        }
        dims.reverse(); // GGML lists the innermost dimension first.
        let ty = c.u32("tensor type")?;
        let ty = GgmlType::from_id(ty).map_err(|e| format!("tensor {name:?}: {e}"))?;
        let offset = c.u64("tensor offset")?;
        raw.push((name, dims, ty, offset));
    }
    let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
    let mut infos = Vec::with_capacity(raw.len());
    let mut names = HashSet::new();
    for (name, dims, ty, offset) in raw {
        if !names.insert(name.clone()) {
            return Err(format!("tensor name {name:?} appears twice"));
        }
        if !offset.is_multiple_of(alignment) {
            return Err(format!(
                "tensor {name:?}: offset {offset} is not a multiple of the alignment {alignment}"
            ));
        }
        let size = parts::checked_numel(&dims)
            .and_then(|n| ty.byte_size(n))
            .ok_or_else(|| {
                format!(
                    "tensor {name:?}: shape {dims:?} is not a whole number of {} blocks",
                    ty.name()
                )
            })?;
        let start = data_start.saturating_add(offset);
        let end = start.saturating_add(size as u64);
        if end > bytes.len() as u64 {
            return Err(format!(
                "truncated: tensor {name:?} ({}, shape {dims:?}) needs bytes {start}..{end}, \
                 the file has {}",
                ty.name(),
                bytes.len()
            ));
        }
        infos.push(Info {
            name,
            dims,
            ty,
            range: start as usize..end as usize,
        });
    }
    let tensors = build_entries(bytes, &metadata, infos)?;
    // Keys that described tensors now loaded as such are not returned as metadata.
    let quantized: HashSet<&str> = tensors
        .iter()
        .filter(|(_, e)| matches!(e, TensorEntry::Quantized(_)))
        .map(|(n, _)| n.as_str())
        .collect();
    metadata.retain(|(k, _)| {
        let described = k
            .strip_prefix("quantlens.")
            .and_then(|rest| rest.rsplit_once('.'))
            .is_some_and(|(base, _)| quantized.contains(base));
        !described
    });
    Ok(TensorFile { metadata, tensors })
}

/// Turn tensor infos into entries: quantlens packed tensors from their parts, GGML blocks into
/// quantized tensors, F32/F16/BF16 into dense ones.
fn build_entries(
    bytes: &[u8],
    metadata: &[(String, GgufValue)],
    infos: Vec<Info>,
) -> std::result::Result<Vec<(String, TensorEntry)>, String> {
    let meta: HashMap<&str, &GgufValue> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let packed: BTreeSet<&str> = metadata
        .iter()
        .filter_map(|(k, _)| k.strip_prefix("quantlens.")?.strip_suffix(".format"))
        .collect();
    let index: HashMap<&str, usize> = infos
        .iter()
        .enumerate()
        .map(|(i, info)| (info.name.as_str(), i))
        .collect();
    fn part_of<'n>(name: &'n str, packed: &BTreeSet<&str>) -> Option<&'n str> {
        let (base, suffix) = name.rsplit_once('.')?;
        (PART_SUFFIXES.contains(&suffix) && packed.contains(base)).then_some(base)
    }
    let mut used = vec![false; infos.len()];
    let mut out = Vec::new();
    let mut done = HashSet::new();
    for (i, info) in infos.iter().enumerate() {
        if used[i] {
            continue;
        }
        let name = info.name.as_str();
        if let Some(base) = part_of(name, &packed) {
            if !done.insert(base) {
                return Err(format!(
                    "tensor {name:?} is not a part of {base:?}'s format"
                ));
            }
            let mut src = GgufParts {
                base,
                meta: &meta,
                bytes,
                infos: &infos,
                index: &index,
                used: &mut used,
            };
            let q = parts::join(&mut src).map_err(|e| format!("tensor {base:?}: {e}"))?;
            out.push((base.to_string(), TensorEntry::Quantized(Box::new(q))));
            continue;
        }
        used[i] = true;
        let data = &bytes[info.range.clone()];
        let entry = match info.ty {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
                let dtype = match info.ty {
                    GgmlType::F32 => DType::F32,
                    GgmlType::F16 => DType::F16,
                    _ => DType::BF16,
                };
                let t = Tensor::from_raw_buffer(data, dtype, &info.dims, &Device::Cpu)
                    .map_err(|e| format!("tensor {name:?}: {e}"))?;
                TensorEntry::Dense(t)
            }
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 => {
                let dtype = match meta.get(format!("quantlens.{name}.dtype").as_str()) {
                    None => DType::F32,
                    Some(v) => v.as_str().and_then(parts::parse_dtype).ok_or_else(|| {
                        format!(
                            "quantlens.{name}.dtype = {v:?} is not \"f32\", \"f16\" or \"bf16\""
                        )
                    })?,
                };
                let q = ggml::decode_blocks(info.ty, info.dims.clone(), dtype, data)
                    .map_err(|e| format!("tensor {name:?}: {e}"))?;
                TensorEntry::Quantized(Box::new(q))
            }
            GgmlType::I8 => {
                return Err(format!(
                    "tensor {name:?} has type I8 but belongs to no quantlens packed tensor \
                     (no quantlens.<name>.format key); quantlens reads I8 only as such parts"
                ));
            }
        };
        out.push((name.to_string(), entry));
    }
    if let Some(base) = packed.iter().find(|b| !done.contains(*b)) {
        return Err(format!(
            "quantlens.{base}.format describes a tensor whose parts ({base}.codes, …) are missing"
        ));
    }
    Ok(out)
}

/// The fields and parts of one packed tensor in a GGUF file.
struct GgufParts<'f> {
    base: &'f str,
    meta: &'f HashMap<&'f str, &'f GgufValue>,
    bytes: &'f [u8],
    infos: &'f [Info],
    index: &'f HashMap<&'f str, usize>,
    used: &'f mut [bool],
}

impl PartSource for GgufParts<'_> {
    fn field(&self, field: &str) -> std::result::Result<Option<String>, String> {
        let key = format!("quantlens.{}.{field}", self.base);
        match self.meta.get(key.as_str()) {
            None => Ok(None),
            Some(GgufValue::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(format!("{key} = {v:?} is not a string")),
        }
    }

    fn part(&mut self, suffix: &str) -> std::result::Result<Option<(PartType, Vec<u8>)>, String> {
        let name = format!("{}.{suffix}", self.base);
        let Some(&i) = self.index.get(name.as_str()) else {
            return Ok(None);
        };
        self.used[i] = true;
        let info = &self.infos[i];
        let ty = match info.ty {
            GgmlType::I8 => PartType::U8,
            GgmlType::F16 => PartType::F16,
            GgmlType::BF16 => PartType::BF16,
            GgmlType::F32 => PartType::F32,
            other => return Err(format!("part {name:?} has type {}", other.name())),
        };
        Ok(Some((ty, self.bytes[info.range.clone()].to_vec())))
    }
}

/// A bounds-checked little-endian reader over the file's bytes.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn left(&self) -> usize {
        self.b.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> std::result::Result<&'a [u8], String> {
        if n > self.left() {
            return Err(format!(
                "truncated: {what} at byte {} needs {n} bytes, {} left",
                self.pos,
                self.left()
            ));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> std::result::Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> std::result::Result<String, String> {
        let at = self.pos;
        let len = self.u64(what)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= self.left())
            .ok_or_else(|| {
                format!(
                    "truncated: {what} at byte {at} declares {len} bytes, {} left",
                    self.left()
                )
            })?;
        let s = self.take(len, what)?;
        String::from_utf8(s.to_vec()).map_err(|_| format!("{what} at byte {at} is not UTF-8"))
    }

    fn value(&mut self, ty: u32, depth: usize) -> std::result::Result<GgufValue, String> {
        Ok(match ty {
            0 => GgufValue::U8(self.array::<1>("u8")?[0]),
            1 => GgufValue::I8(i8::from_le_bytes(self.array("i8")?)),
            2 => GgufValue::U16(u16::from_le_bytes(self.array("u16")?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array("i16")?)),
            4 => GgufValue::U32(self.u32("u32")?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array("i32")?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array("f32")?)),
            7 => match self.array::<1>("bool")?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(format!("bool byte {b} at {} is not 0 or 1", self.pos - 1)),
            },
            8 => GgufValue::String(self.string("string")?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(format!("arrays nested deeper than {MAX_DEPTH}"));
                }
                let item = self.u32("array type")?;
                let len = self.u64("array length")?;
                let min = match item {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    t => return Err(format!("unknown metadata value type {t}")),
                };
                if len.saturating_mul(min) > self.left() as u64 {
                    return Err(format!(
                        "truncated: array of {len} values at byte {} needs at least {} bytes, \
                         {} left",
                        self.pos,
                        len.saturating_mul(min),
                        self.left()
                    ));
                }
                let mut items = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    items.push(self.value(item, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64("u64")?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array("i64")?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array("f64")?)),
            t => return Err(format!("unknown metadata value type {t}")),
        })
    }
}
