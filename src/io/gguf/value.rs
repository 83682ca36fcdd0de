//! GGUF metadata values, and the bounds-checked reader of a file's bytes.

use super::MAX_DEPTH;

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
    pub(super) fn type_id(&self) -> u32 {
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
    pub(super) fn encode(&self, out: &mut Vec<u8>) -> std::result::Result<(), String> {
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

pub(super) fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// A bounds-checked little-endian reader over the file's bytes.
pub(super) struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(b: &'a [u8]) -> Self {
        Cursor { b, pos: 0 }
    }

    /// The byte the next read starts at.
    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    pub(super) fn left(&self) -> usize {
        self.b.len() - self.pos
    }

    pub(super) fn take(&mut self, n: usize, what: &str) -> std::result::Result<&'a [u8], String> {
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

    pub(super) fn array<const N: usize>(
        &mut self,
        what: &str,
    ) -> std::result::Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    pub(super) fn u32(&mut self, what: &str) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(super) fn u64(&mut self, what: &str) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A length-prefixed string's bytes.
    fn string_bytes(&mut self, what: &str) -> std::result::Result<&'a [u8], String> {
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
        self.take(len, what)
    }

    /// A key or tensor name: UTF-8 required.
    pub(super) fn string(&mut self, what: &str) -> std::result::Result<String, String> {
        let at = self.pos;
        let s = self.string_bytes(what)?;
        String::from_utf8(s.to_vec()).map_err(|_| format!("{what} at byte {at} is not UTF-8"))
    }

    pub(super) fn value(
        &mut self,
        ty: u32,
        depth: usize,
    ) -> std::result::Result<GgufValue, String> {
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
            // Values are read leniently, as other GGUF readers do: some published files
            // have tokenizer strings that are not valid UTF-8.
            8 => GgufValue::String(String::from_utf8_lossy(self.string_bytes("string")?).into()),
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
