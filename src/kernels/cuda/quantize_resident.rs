//! Quantize a weight on a CUDA device straight into a [`CudaQuantizedWeight`]
//! (`ql_quantize_u4_*` in `quantize.cu`): group statistics, parameters and codes in one
//! kernel, so nothing but a 4-byte status word comes back to the host, and only when the
//! caller asks ([`PendingQuantize::finish`]).
//!
//! Scales, zero points and codes are those of the CPU path (`UniformQuantizer`) bit for bit:
//! the kernel follows `UniformParams::from_range` and `encode_nearest` (src/quant/grid.rs)
//! operation by operation. On a fault (a non-finite weight, a scale the scale dtype cannot
//! hold) the weight goes through the CPU path once more, so the error names the first bad
//! element or group exactly as there.

use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DeviceRepr, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::op::BackpropOp;
use candle_core::{CudaDevice, CudaStorage, DType, Device, Storage, Tensor};

use super::launch_1d;
use super::weight::{CHUNK, CudaQuantizedWeight};
use crate::error::{Error, Result};
use crate::quant::uniform::check_weight_matrix;
use crate::quant::{QuantSpec, Quantizer, Rounding, ScaleDType, UniformQuantizer};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/quantize.ptx"));
/// Name under which Candle caches the loaded module per device (shared with `quantize.rs`).
const MODULE: &str = "quantlens_quantize";
/// Threads per block (`__launch_bounds__(256)` of `ql_quantize_u4_*`).
const BLOCK: usize = 256;

/// See [`CudaQuantizedWeight::quantize`]: the deferred quantization, checked at once.
pub(crate) fn quantize_resident(weight: &Tensor, spec: &QuantSpec) -> Result<CudaQuantizedWeight> {
    quantize_resident_deferred(weight, spec)?.finish()
}

/// See [`CudaQuantizedWeight::quantize_deferred`].
pub(crate) fn quantize_resident_deferred(
    weight: &Tensor,
    spec: &QuantSpec,
) -> Result<PendingQuantize> {
    let Device::Cuda(dev) = weight.device() else {
        return Err(Error::UnsupportedDevice {
            op: "CudaQuantizedWeight::quantize",
            device: format!("{:?}", weight.device().location()),
            hint: "quantize on the host with UniformQuantizer and upload with CudaQuantizedWeight::new",
        });
    };
    spec.validate()?;
    let (rows, cols) = check_weight_matrix(weight)?;
    if spec.bits != 4 {
        return Err(Error::Unsupported(format!(
            "CudaQuantizedWeight holds 4-bit weights, the spec asks for {} bits",
            spec.bits
        )));
    }
    if !matches!(spec.rounding, Rounding::Nearest) {
        return Err(Error::Unsupported(
            "CudaQuantizedWeight::quantize rounds to nearest only; quantize stochastically on \
             the host and upload with CudaQuantizedWeight::new"
                .into(),
        ));
    }
    let scale_dtype: u32 = match spec.scale_dtype {
        ScaleDType::F32 => 0,
        ScaleDType::F16 => 1,
        ScaleDType::BF16 => 2,
        ScaleDType::E8M0 => {
            return Err(Error::Unsupported(
                "CudaQuantizedWeight::quantize: E8M0 scales are not supported".into(),
            ));
        }
    };
    let group_len = spec.granularity.group_len(rows, cols)?;
    if !group_len.is_multiple_of(CHUNK) {
        return Err(Error::Unsupported(format!(
            "CudaQuantizedWeight: group length {group_len} is not a multiple of {CHUNK}"
        )));
    }
    // A per-tensor group of several rows would straddle rows, which the kernels do not do.
    if !cols.is_multiple_of(group_len) {
        return Err(Error::GroupSizeMismatch {
            group_size: group_len,
            in_features: cols,
        });
    }
    let n = rows * cols;
    if n / CHUNK > u32::MAX as usize || group_len > u32::MAX as usize {
        return Err(Error::Unsupported(format!(
            "CudaQuantizedWeight: {rows}x{cols} has more than 2^32 chunks of 32 codes"
        )));
    }
    // The kernel loads eight weights with 16-byte loads: the start must be 16-byte aligned
    // (fresh allocations always are; a view at an odd offset is copied into a fresh one, by
    // two transposes since `Tensor::copy` keeps the offset and `contiguous` is a no-op).
    let mut w = weight.contiguous()?;
    if !(w.layout().start_offset() * w.dtype().size_in_bytes()).is_multiple_of(16) {
        w = w.t()?.contiguous()?.t()?.contiguous()?;
    }
    let launch = Launch {
        dev,
        groups: n / group_len,
        group_len,
        symmetric: spec.symmetric,
        scale_dtype,
    };
    // The kernel is only queued: `w` (if a copy) is freed stream-ordered after it, and the
    // status word stays on the device until `finish`.
    let (codes, scales, zeros, status) = match w.dtype() {
        DType::F32 => launch.go::<f32>(&w, "f32")?,
        DType::F16 => launch.go::<half::f16>(&w, "f16")?,
        DType::BF16 => launch.go::<half::bf16>(&w, "bf16")?,
        dtype => {
            return Err(Error::UnsupportedDType {
                what: "weight matrix",
                dtype,
            });
        }
    };
    Ok(PendingQuantize {
        weight: CudaQuantizedWeight {
            codes,
            scales,
            zeros,
            zero: if spec.symmetric { 8 } else { 0 },
            rows,
            cols,
            group_len,
            dtype: weight.dtype(),
            scale_dtype: spec.scale_dtype,
        },
        source: weight.clone(),
        spec: *spec,
        status,
    })
}

/// A device-side quantization ([`CudaQuantizedWeight::quantize_deferred`]) whose fault check
/// has not been read back yet: the kernel is queued on the device's stream, and the weight is
/// handed out only by [`finish`](Self::finish), which reads the kernel's status word. So a
/// fault can never be ignored, while quantizing many weights costs one host round trip for
/// all of them instead of one each (queue them all, then finish them in order: the first
/// `finish` waits for the device, the others find their kernels done).
///
/// Holds the source weight (a reference-counted handle, not a copy) until `finish`, to
/// re-run the CPU path on a fault. Dropping it without `finish` discards the quantization.
#[derive(Debug)]
#[must_use = "the quantized weight is only reachable through `finish`"]
pub struct PendingQuantize {
    weight: CudaQuantizedWeight,
    source: Tensor,
    spec: QuantSpec,
    status: CudaSlice<u32>,
}

impl PendingQuantize {
    /// Wait for the kernel and return the quantized weight.
    ///
    /// # Errors
    ///
    /// When the kernel reported a fault, the error of the CPU path
    /// ([`UniformQuantizer`] with the same spec on a host copy of the weight), exactly: the
    /// first non-finite element ([`Error::NonFinite`]) or the first group whose scale the scale
    /// dtype cannot hold ([`Error::ScaleOutOfRange`]). A device error from the read-back.
    pub fn finish(self) -> Result<CudaQuantizedWeight> {
        let Device::Cuda(dev) = self.source.device() else {
            return Err(Error::Unsupported(
                "a pending CUDA quantization whose weight is not on a CUDA device".into(),
            ));
        };
        let status = dev.clone_dtoh(&self.status)?.first().copied().unwrap_or(0);
        if status != 0 {
            // Let the CPU path name the fault (first non-finite element, overflowing group).
            let host = self.source.to_device(&Device::Cpu)?;
            UniformQuantizer::new(self.spec)?.quantize(&host, None)?;
            return Err(Error::Unsupported(format!(
                "CudaQuantizedWeight::quantize: the device reported fault {status:#x} where \
                 the CPU path does not"
            )));
        }
        Ok(self.weight)
    }
}

/// One kernel launch: the problem without the weight's element type.
struct Launch<'a> {
    dev: &'a CudaDevice,
    groups: usize,
    group_len: usize,
    symmetric: bool,
    scale_dtype: u32,
}

/// Codes, scales, zero points (asymmetric) and the kernel's status word (still on the device).
type Outputs = (Tensor, Tensor, Option<Tensor>, CudaSlice<u32>);

fn wrap<T: CudaDType>(
    dev: &CudaDevice,
    s: candle_core::cuda_backend::cudarc::driver::CudaSlice<T>,
    len: usize,
) -> Tensor {
    let storage = Storage::Cuda(CudaStorage::wrap_cuda_slice(s, dev.clone()));
    Tensor::from_storage(storage, len, BackpropOp::none(), false)
}

impl Launch<'_> {
    fn go<T: CudaDType + DeviceRepr>(&self, w: &Tensor, suffix: &str) -> Result<Outputs> {
        let dev = self.dev;
        let (storage, layout) = w.storage_and_layout();
        let cs = super::cuda_storage(&storage)?;
        let start = layout.start_offset();
        let n = self.groups * self.group_len;
        let x = cs.as_cuda_slice::<T>()?.slice(start..start + n);

        // Lanes per group: a power of two up to a warp dividing the group's octets (so a
        // segment is aligned within its warp and xor shuffles stay in it), with at least four
        // octets per lane: the per-group parameter arithmetic, done by every lane, is then
        // spread over 32 weights or more (one octet per lane made the kernel issue-bound).
        let octets = self.group_len / 8;
        let seg_log2 = octets.trailing_zeros().saturating_sub(2).min(5);
        let seg = 1usize << seg_log2;
        // SAFETY (allocations): the kernel writes every code word, scale and zero point.
        let mut codes = unsafe { dev.alloc::<u8>(n / 2) }?;
        let mut scales = unsafe { dev.alloc::<f32>(self.groups) }?;
        let mut zeros = unsafe { dev.alloc::<u8>(if self.symmetric { 1 } else { self.groups }) }?;
        let mut status = dev.alloc_zeros::<u32>(1)?;
        let (groups, group_len, seg_log2_arg, sym) = (
            self.groups as u64,
            self.group_len as u32,
            seg_log2,
            u32::from(self.symmetric),
        );
        let blocks = u32::try_from((self.groups * seg).div_ceil(BLOCK))
            .map_err(|_| Error::Unsupported("weight too large for one CUDA grid".into()))?;
        let f = dev.get_or_load_custom_func(&format!("ql_quantize_u4_{suffix}"), MODULE, PTX)?;
        let mut b = f.builder();
        b.arg(&x)
            .arg(&groups)
            .arg(&group_len)
            .arg(&seg_log2_arg)
            .arg(&sym)
            .arg(&self.scale_dtype)
            .arg(&mut codes)
            .arg(&mut scales)
            .arg(&mut zeros)
            .arg(&mut status);
        let cfg = launch_1d(blocks, BLOCK as u32);
        // SAFETY: argument types and order match `ql_quantize_u4_*`; segment g reads
        // elements g·group_len .. (g+1)·group_len ≤ n of x (16-byte aligned, checked by the
        // caller), writes words g·octets .. (g+1)·octets of `codes` (n/2 bytes, 256-byte
        // aligned), scales[g] and, asymmetric, zeros[g]; segments past `groups` return.
        unsafe { b.launch(cfg) }.w()?;
        drop(storage);
        let zeros = (!self.symmetric).then(|| wrap(dev, zeros, self.groups));
        Ok((
            wrap(dev, codes, n / 2),
            wrap(dev, scales, self.groups),
            zeros,
            status,
        ))
    }
}
