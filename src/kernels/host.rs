//! Borrowing a CPU tensor's elements without copying them.

use std::ops::Range;

use candle_core::{CpuStorage, Storage, Tensor};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use crate::error::{Error, Result};

/// The contiguous elements of a float tensor in host memory.
#[derive(Clone, Copy)]
pub(crate) enum HostSlice<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
}

impl<'a> HostSlice<'a> {
    pub(crate) fn len(&self) -> usize {
        match self {
            HostSlice::F32(s) => s.len(),
            HostSlice::F16(s) => s.len(),
            HostSlice::BF16(s) => s.len(),
        }
    }

    /// Elements `range` as f32: borrowed for f32, converted into `scratch` otherwise.
    pub(crate) fn f32_range<'b>(
        &'b self,
        range: Range<usize>,
        scratch: &'b mut Vec<f32>,
    ) -> &'b [f32]
    where
        'a: 'b,
    {
        match self {
            HostSlice::F32(s) => &s[range],
            HostSlice::F16(s) => {
                scratch.resize(range.len(), 0.0);
                s[range].convert_to_f32_slice(scratch);
                scratch
            }
            HostSlice::BF16(s) => {
                scratch.resize(range.len(), 0.0);
                s[range].convert_to_f32_slice(scratch);
                scratch
            }
        }
    }
}

/// Run `f` on the elements of a CPU float tensor (made contiguous first if it is not).
pub(crate) fn with_host_slice<R>(
    t: &Tensor,
    what: &'static str,
    f: impl FnOnce(HostSlice<'_>) -> Result<R>,
) -> Result<R> {
    if !t.is_contiguous() {
        return with_host_slice(&t.contiguous()?, what, f);
    }
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Err(Error::UnsupportedDevice {
            op: "host access",
            device: format!("{:?}", t.device().location()),
            hint: "move the tensor with .to_device(&Device::Cpu)",
        });
    };
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| Error::Unsupported("non-contiguous tensor after .contiguous()".into()))?;
    match cpu {
        CpuStorage::F32(v) => f(HostSlice::F32(&v[start..end])),
        CpuStorage::F16(v) => f(HostSlice::F16(&v[start..end])),
        CpuStorage::BF16(v) => f(HostSlice::BF16(&v[start..end])),
        _ => Err(Error::UnsupportedDType {
            what,
            dtype: t.dtype(),
        }),
    }
}
