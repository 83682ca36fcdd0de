//! Reading GGUF files.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::value::Cursor;
use super::{GGUF_ALIGNMENT, GgufFile, GgufValue, MAGIC, MAX_DIMS};
use crate::error::Result;
use crate::io::ggml::{self, GgmlType};
use crate::io::parts::{self, PART_SUFFIXES, PartSource, PartType};
use crate::io::{TensorEntry, TensorFile, io_error, malformed};

/// Read a GGUF file (version 2 or 3): Q4_0, Q4_1 and Q8_0 tensors become quantized tensors
/// (Q4_0/Q8_0 symmetric uniform, Q4_1 affine; groups of 32, f16 scales), F32/F16/BF16
/// tensors dense ones, and quantlens' own packed tensors are rebuilt from their parts.
///
/// llama.cpp's K-quants load too, each as the quantlens format whose decode gives the same
/// f32 values bit for bit (the files' two-level scales and offsets kept as
/// [`Scales::Double`](crate::Scales::Double)): Q2_K, Q4_K and Q5_K as
/// affine 2-, 4- and 5-bit codes (groups of 16, 32, 32), Q3_K and Q6_K as symmetric uniform 3-
/// and 6-bit codes (groups of 16), Q8_K as symmetric uniform 8-bit codes (groups of 256).
/// Such tensors are not written back as K-quants: [`GgufWriter`](super::GgufWriter) stores
/// them as its [fallback](super::GgufFallback) says.
///
/// Files from other writers load too, as long as every tensor has one of those types (IQ
/// types, Q5_0, Q5_1 and the other GGML types are refused, by name); a malformed or
/// unsupported file gives [`Error::Malformed`](crate::Error::Malformed) saying what and where.
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

pub(in crate::io) fn parse(bytes: &[u8]) -> std::result::Result<GgufFile, String> {
    let mut c = Cursor::new(bytes);
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
        let at = c.pos();
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
    let data_start = (c.pos() as u64).div_ceil(alignment) * alignment;
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
                let (elems, _) = ty.block();
                format!(
                    "tensor {name:?}: shape {dims:?} is not a whole number of {} ({}) blocks \
                     of {elems} elements",
                    ty.name(),
                    ty.id()
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
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 | GgmlType::K(_) => {
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
