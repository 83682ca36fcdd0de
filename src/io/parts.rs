//! A quantized tensor as named byte parts plus descriptive string fields: the layout both
//! file formats share for tensors they have no native type for (see [`crate::io`]).

use candle_core::DType;
use half::{bf16, f16};

use crate::quant::{
    Codebook, DoubleQuantScales, FloatFormat, LevelStorage, PackedCodes, QuantFormat,
    QuantizedParts, QuantizedTensor, Scales,
};

/// Element type of a stored part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PartType {
    U8,
    F16,
    BF16,
    F32,
}

impl PartType {
    pub(crate) fn size(self) -> usize {
        match self {
            PartType::U8 => 1,
            PartType::F16 | PartType::BF16 => 2,
            PartType::F32 => 4,
        }
    }
}

/// One stored array, always one-dimensional: `bytes.len() / ty.size()` elements.
#[derive(Debug, Clone)]
pub(crate) struct Part {
    /// Appended to the tensor's name after a dot: `codes`, `scales`, …
    pub suffix: String,
    pub ty: PartType,
    pub bytes: Vec<u8>,
}

impl Part {
    pub(crate) fn len(&self) -> usize {
        self.bytes.len() / self.ty.size()
    }
}

/// Everything that describes a quantized tensor in a file.
#[derive(Debug, Clone, Default)]
pub(crate) struct Layout {
    /// `(field, value)`: stored under `<name>.<field>` (safetensors) or
    /// `quantlens.<name>.<field>` (GGUF).
    pub fields: Vec<(&'static str, String)>,
    pub parts: Vec<Part>,
}

/// Every part suffix the layout can produce, so that readers can claim them.
pub(crate) const PART_SUFFIXES: [&str; 12] = [
    "codes",
    "scales",
    "zeros",
    "codebook",
    "offsets",
    "scale_codes",
    "scale_blocks",
    "offset_codes",
    "offset_blocks",
    "input_scales",
    "input_scale_codes",
    "input_scale_blocks",
];

pub(crate) fn dtype_tag(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        _ => "f32",
    }
}

pub(crate) fn parse_dtype(s: &str) -> Option<DType> {
    match s {
        "f32" => Some(DType::F32),
        "f16" => Some(DType::F16),
        "bf16" => Some(DType::BF16),
        _ => None,
    }
}

/// Split `q` into fields and parts.
pub(crate) fn split(q: &QuantizedTensor) -> Layout {
    let mut l = Layout::default();
    let shape: Vec<String> = q.shape().iter().map(usize::to_string).collect();
    let (format, bits) = match q.format() {
        QuantFormat::Uniform { bits, symmetric } => {
            l.fields.push(("symmetric", symmetric.to_string()));
            ("uniform", bits)
        }
        QuantFormat::Sign => ("sign", 1),
        QuantFormat::Ternary => ("ternary", 2),
        QuantFormat::Codebook { bits } => ("codebook", bits),
        QuantFormat::Float(f) => {
            l.fields.push(("element", f.tag().to_string()));
            ("float", f.bits())
        }
        QuantFormat::Affine { bits } => ("affine", bits),
    };
    l.fields.push(("format", format.to_string()));
    l.fields.push(("bits", bits.to_string()));
    l.fields.push(("shape", shape.join(",")));
    l.fields.push(("dtype", dtype_tag(q.dtype()).to_string()));
    l.fields.push(("group_len", q.group_len().to_string()));
    l.parts
        .push(bytes_part("codes", q.codes().bytes().to_vec()));
    split_scales(&mut l, "scale", q.scales());
    if let Some(z) = q.zeros() {
        l.parts.push(bytes_part("zeros", z.bytes().to_vec()));
    }
    if let Some(cb) = q.codebook() {
        let (tag, part) = match cb.storage() {
            LevelStorage::Implicit => ("implicit", f32_part("codebook", cb.levels())),
            LevelStorage::F32 => ("f32", f32_part("codebook", cb.levels())),
            LevelStorage::F16 => ("f16", f16_part("codebook", cb.levels())),
        };
        l.fields
            .push(("codebook_table_len", cb.table_len().to_string()));
        l.fields.push(("codebook_storage", tag.to_string()));
        l.parts.push(part);
    }
    if let Some(o) = q.offsets() {
        split_scales(&mut l, "offset", o);
    }
    if let Some(s) = q.input_scales() {
        split_scales(&mut l, "input_scale", s);
    }
    l
}

fn bytes_part(suffix: &str, bytes: Vec<u8>) -> Part {
    Part {
        suffix: suffix.to_string(),
        ty: PartType::U8,
        bytes,
    }
}

fn f32_part(suffix: &str, v: &[f32]) -> Part {
    Part {
        suffix: suffix.to_string(),
        ty: PartType::F32,
        bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

fn f16_part(suffix: &str, v: &[f32]) -> Part {
    Part {
        suffix: suffix.to_string(),
        ty: PartType::F16,
        bytes: v
            .iter()
            .flat_map(|x| f16::from_f32(*x).to_le_bytes())
            .collect(),
    }
}

/// Scales (`stem` = `scale`), offsets (`stem` = `offset`) or input scales (`stem` =
/// `input_scale`): part `<stem>s` in their dtype, or `<stem>_codes` + `<stem>_blocks` when
/// double-quantized.
fn split_scales(l: &mut Layout, stem: &'static str, s: &Scales) {
    let (dtype_key, block_key, mean_key) = stem_keys(stem);
    let plural = format!("{stem}s");
    let (tag, ty, bytes): (&str, PartType, Vec<u8>) = match s {
        Scales::F32(v) => ("f32", PartType::F32, le(v, |x| x.to_le_bytes())),
        Scales::F16(v) => ("f16", PartType::F16, le(v, |x| x.to_le_bytes())),
        Scales::BF16(v) => ("bf16", PartType::BF16, le(v, |x| x.to_le_bytes())),
        Scales::E8M0(v) => ("e8m0", PartType::U8, v.clone()),
        Scales::Double(d) => {
            l.fields.push((dtype_key, "double".into()));
            l.fields.push((block_key, d.block_len().to_string()));
            l.fields.push((mean_key, d.offset().to_string()));
            l.parts.push(bytes_part(
                &format!("{stem}_codes"),
                d.codes().iter().map(|&c| c as u8).collect(),
            ));
            l.parts
                .push(f32_part(&format!("{stem}_blocks"), d.block_scales()));
            return;
        }
    };
    l.fields.push((dtype_key, tag.into()));
    l.parts.push(Part {
        suffix: plural,
        ty,
        bytes,
    });
}

fn stem_keys(stem: &str) -> (&'static str, &'static str, &'static str) {
    match stem {
        "scale" => ("scale_dtype", "scale_block_len", "scale_mean"),
        "input_scale" => (
            "input_scale_dtype",
            "input_scale_block_len",
            "input_scale_mean",
        ),
        _ => ("offset_dtype", "offset_block_len", "offset_mean"),
    }
}

fn le<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

/// Where [`join`] reads a tensor's fields and parts from.
pub(crate) trait PartSource {
    /// The value of `field`, if the file has it (an error if it has it in the wrong type).
    fn field(&self, field: &str) -> Result<Option<String>, String>;
    /// The part `suffix` with its type and bytes, if the file has it.
    fn part(&mut self, suffix: &str) -> Result<Option<(PartType, Vec<u8>)>, String>;
}

fn required(src: &dyn PartSource, field: &str) -> Result<String, String> {
    src.field(field)?
        .ok_or_else(|| format!("field `{field}` is missing"))
}

fn parsed<T: std::str::FromStr>(src: &dyn PartSource, field: &str) -> Result<T, String> {
    let v = required(src, field)?;
    v.parse()
        .map_err(|_| format!("field `{field}` = {v:?} is not a valid value"))
}

fn required_part(src: &mut dyn PartSource, suffix: &str, ty: PartType) -> Result<Vec<u8>, String> {
    match src.part(suffix)? {
        Some((t, bytes)) if t == ty => Ok(bytes),
        Some((t, _)) => Err(format!("part `{suffix}` is {t:?}, expected {ty:?}")),
        None => Err(format!("part `{suffix}` is missing")),
    }
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn halves(b: &[u8]) -> impl Iterator<Item = [u8; 2]> + '_ {
    b.chunks_exact(2).map(|c| [c[0], c[1]])
}

/// Read scales or offsets back (see [`split_scales`]).
fn join_scales(src: &mut dyn PartSource, stem: &str) -> Result<Scales, String> {
    let (dtype_key, block_key, mean_key) = stem_keys(stem);
    let plural = format!("{stem}s");
    Ok(match required(src, dtype_key)?.as_str() {
        "f32" => Scales::F32(f32s(&required_part(src, &plural, PartType::F32)?)),
        "f16" => Scales::F16(
            halves(&required_part(src, &plural, PartType::F16)?)
                .map(f16::from_le_bytes)
                .collect(),
        ),
        "bf16" => Scales::BF16(
            halves(&required_part(src, &plural, PartType::BF16)?)
                .map(bf16::from_le_bytes)
                .collect(),
        ),
        "e8m0" => Scales::E8M0(required_part(src, &plural, PartType::U8)?),
        "double" => {
            let block_len: usize = parsed(src, block_key)?;
            let mean: f32 = parsed(src, mean_key)?;
            let codes = required_part(src, &format!("{stem}_codes"), PartType::U8)?;
            let blocks = f32s(&required_part(
                src,
                &format!("{stem}_blocks"),
                PartType::F32,
            )?);
            let codes = codes.into_iter().map(|c| c as i8).collect();
            Scales::Double(
                DoubleQuantScales::new(codes, blocks, block_len, mean)
                    .map_err(|e| e.to_string())?,
            )
        }
        other => {
            return Err(format!(
                "field `{dtype_key}` = {other:?} is not a scale dtype"
            ));
        }
    })
}

fn join_format(src: &dyn PartSource) -> Result<QuantFormat, String> {
    let format = required(src, "format")?;
    let bits: u8 = parsed(src, "bits")?;
    let f = match format.as_str() {
        "uniform" => QuantFormat::Uniform {
            bits,
            symmetric: parsed(src, "symmetric")?,
        },
        "sign" => QuantFormat::Sign,
        "ternary" => QuantFormat::Ternary,
        "codebook" => QuantFormat::Codebook { bits },
        "affine" => QuantFormat::Affine { bits },
        "float" => QuantFormat::Float(match required(src, "element")?.as_str() {
            "e4m3" => FloatFormat::E4M3,
            "e5m2" => FloatFormat::E5M2,
            "e2m1" => FloatFormat::E2M1,
            other => return Err(format!("unknown float element {other:?}")),
        }),
        other => return Err(format!("unknown format {other:?}")),
    };
    if f.code_bits() != bits || !(1..=8).contains(&bits) {
        return Err(format!("{bits} bits do not fit format {format:?}"));
    }
    Ok(f)
}

/// Rebuild a quantized tensor from its fields and parts; the error says what is wrong.
pub(crate) fn join(src: &mut dyn PartSource) -> Result<QuantizedTensor, String> {
    let format = join_format(src)?;
    let bits = format.code_bits();
    let shape_field = required(src, "shape")?;
    let shape = parse_shape(&shape_field)
        .ok_or_else(|| format!("field `shape` = {shape_field:?} is not a shape"))?;
    let numel = checked_numel(&shape).ok_or_else(|| format!("shape {shape:?} is too large"))?;
    let dtype_field = required(src, "dtype")?;
    let dtype = parse_dtype(&dtype_field)
        .ok_or_else(|| format!("field `dtype` = {dtype_field:?} is not f32, f16 or bf16"))?;
    let group_len: usize = parsed(src, "group_len")?;
    if group_len == 0 || !numel.is_multiple_of(group_len) {
        return Err(format!(
            "group length {group_len} does not tile {numel} elements"
        ));
    }
    let groups = numel / group_len;
    let codes = packed(required_part(src, "codes", PartType::U8)?, bits, numel)?;
    let scales = join_scales(src, "scale")?;
    let zeros = match src.part("zeros")? {
        Some((PartType::U8, b)) => Some(packed(b, bits, groups)?),
        Some((t, _)) => return Err(format!("part `zeros` is {t:?}, expected U8")),
        None => None,
    };
    let codebook = match src.field("codebook_storage")? {
        Some(storage) => {
            let storage = match storage.as_str() {
                "implicit" => LevelStorage::Implicit,
                "f32" => LevelStorage::F32,
                "f16" => LevelStorage::F16,
                other => return Err(format!("unknown codebook storage {other:?}")),
            };
            let levels = match storage {
                LevelStorage::F16 => halves(&required_part(src, "codebook", PartType::F16)?)
                    .map(|h| f16::from_le_bytes(h).to_f32())
                    .collect(),
                _ => f32s(&required_part(src, "codebook", PartType::F32)?),
            };
            let table_len: usize = parsed(src, "codebook_table_len")?;
            Some(Codebook::new(levels, table_len, storage).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let offsets = match src.field("offset_dtype")? {
        Some(_) => Some(join_scales(src, "offset")?),
        None => None,
    };
    let input_scales = match src.field("input_scale_dtype")? {
        Some(_) => Some(join_scales(src, "input_scale")?),
        None => None,
    };
    QuantizedTensor::assemble(QuantizedParts {
        shape,
        dtype,
        format,
        group_len,
        codes,
        scales,
        zeros,
        codebook,
        offsets,
        input_scales,
    })
    .map_err(|e| e.to_string())
}

/// `len` codes of `bits` bits from `bytes`, checking the byte count without overflowing.
fn packed(bytes: Vec<u8>, bits: u8, len: usize) -> Result<PackedCodes, String> {
    let need = len
        .checked_mul(bits as usize)
        .map(|b| b.div_ceil(8))
        .ok_or_else(|| format!("{len} codes are too many"))?;
    if bytes.len() != need {
        return Err(format!(
            "{len} codes of {bits} bits need {need} bytes, the file has {}",
            bytes.len()
        ));
    }
    PackedCodes::from_bytes(bytes, bits, len).map_err(|e| e.to_string())
}

/// `"4,64"` → `[4, 64]`; `""` → `[]` (a scalar).
pub(crate) fn parse_shape(s: &str) -> Option<Vec<usize>> {
    if s.is_empty() {
        return Some(Vec::new());
    }
    s.split(',').map(|d| d.trim().parse().ok()).collect()
}

/// Product of `shape`, or `None` on overflow.
pub(crate) fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}
