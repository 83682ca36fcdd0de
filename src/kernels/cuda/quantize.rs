//! Round-to-nearest uniform quantization of a weight on a CUDA device (`quantize.cu`).
//!
//! The group statistics and the encode run on the device; the per-group parameters in between
//! come from [`UniformParams::from_range`], the function the CPU kernel uses, so scales, zero
//! points and codes are the CPU's bit for bit. Jobs without a device kernel yet (sign,
//! stochastic rounding) return `None` and run on the host.

use super::launch_1d;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CudaDevice, CudaStorage, DType, Storage, Tensor};

use crate::error::{Error, Result};
use crate::kernels::{Fault, UniformJob, UniformParts};
use crate::quant::grid::UniformParams;
use crate::quant::packing::packed_len;
use crate::quant::{QuantFormat, Rounding};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/quantize.ptx"));
/// Name under which Candle caches the loaded module per device.
const MODULE: &str = "quantlens_quantize";
/// Threads per block; `MINMAX_THREADS` in `quantize.cu` must equal it.
const BLOCK: u32 = 256;
/// Enough blocks to fill any current GPU; the encode kernel strides over the rest.
const MAX_BLOCKS: usize = 1 << 16;
/// Groups up to this length are reduced by one warp each, longer ones by one block each.
const WARP_GROUP_MAX: usize = 4096;

fn u32_grid(blocks: usize) -> Result<u32> {
    u32::try_from(blocks)
        .map_err(|_| Error::Unsupported(format!("{blocks} blocks exceed a CUDA grid")))
}

/// Quantize `weight` (rank 2, float, on a CUDA device) on the device: `Ok(None)` when this job
/// has no device kernel, `Ok(Some(Err(fault)))` when the CPU kernel would fault too.
pub(crate) fn quantize_uniform(
    weight: &Tensor,
    job: &UniformJob,
) -> Result<Option<std::result::Result<UniformParts, Fault>>> {
    let QuantFormat::Uniform { bits, symmetric } = job.format else {
        return Ok(None);
    };
    if !matches!(job.rounding, Rounding::Nearest) {
        return Ok(None);
    }
    let w = weight.contiguous()?;
    let (storage, layout) = w.storage_and_layout();
    let Storage::Cuda(cs) = &*storage else {
        return Ok(None);
    };
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| Error::Unsupported("non-contiguous tensor after .contiguous()".into()))?;
    let run = Run {
        storage: cs,
        range: start..end,
        bits,
        symmetric,
        job,
    };
    Ok(Some(match w.dtype() {
        DType::F32 => run.go::<f32>("f32")?,
        DType::F16 => run.go::<half::f16>("f16")?,
        DType::BF16 => run.go::<half::bf16>("bf16")?,
        _ => return Ok(None),
    }))
}

/// One quantization: the weight's device storage and what to do with it.
struct Run<'a> {
    storage: &'a CudaStorage,
    range: std::ops::Range<usize>,
    bits: u8,
    symmetric: bool,
    job: &'a UniformJob,
}

fn grid(blocks: usize) -> LaunchConfig {
    launch_1d(blocks.clamp(1, MAX_BLOCKS) as u32, BLOCK)
}

impl Run<'_> {
    fn go<T: CudaDType + DeviceRepr>(
        &self,
        suffix: &str,
    ) -> Result<std::result::Result<UniformParts, Fault>> {
        let dev: &CudaDevice = &self.storage.device;
        let x = self.storage.as_cuda_slice::<T>()?.slice(self.range.clone());
        let n = self.range.len();
        let group_len = self.job.group_len as u64;
        let groups = n / self.job.group_len;

        // 1. Per-group min, max, finiteness: one warp (short groups) or one block per group.
        let mut mn = dev.alloc_zeros::<f32>(groups)?;
        let mut mx = dev.alloc_zeros::<f32>(groups)?;
        let mut finite = dev.alloc_zeros::<u8>(groups)?;
        let f;
        let mut b;
        let groups_u64 = groups as u64;
        let cfg = if self.job.group_len <= WARP_GROUP_MAX {
            f = dev.get_or_load_custom_func(
                &format!("ql_group_minmax_warp_{suffix}"),
                MODULE,
                PTX,
            )?;
            b = f.builder();
            b.arg(&x)
                .arg(&group_len)
                .arg(&groups_u64)
                .arg(&mut mn)
                .arg(&mut mx)
                .arg(&mut finite);
            let per_block = (BLOCK / 32) as usize;
            launch_1d(u32_grid(groups.div_ceil(per_block))?, BLOCK)
        } else {
            f = dev.get_or_load_custom_func(&format!("ql_group_minmax_{suffix}"), MODULE, PTX)?;
            b = f.builder();
            b.arg(&x)
                .arg(&group_len)
                .arg(&mut mn)
                .arg(&mut mx)
                .arg(&mut finite);
            launch_1d(u32_grid(groups)?, BLOCK)
        };
        // SAFETY: argument types and order match `ql_group_minmax[_warp]_*`; group g reads
        // elements g·group_len .. (g+1)·group_len <= n and writes index g < groups of each
        // output.
        unsafe { b.launch(cfg) }.w()?;
        let (mn, mx, finite) = (
            dev.clone_dtoh(&mn)?,
            dev.clone_dtoh(&mx)?,
            dev.clone_dtoh(&finite)?,
        );

        // 2. Parameters on the host, exactly as the CPU kernel derives them.
        let mut params = Vec::with_capacity(groups);
        for g in 0..groups {
            if finite[g] == 0 {
                return Ok(Err(Fault::NonFinite));
            }
            match UniformParams::from_range(
                mn[g],
                mx[g],
                self.bits,
                self.symmetric,
                self.job.scale_dtype,
            ) {
                Some(p) => params.push(p),
                None => return Ok(Err(Fault::ScaleOverflow { group: g })),
            }
        }
        let divisor: Vec<f32> = params.iter().map(|p| p.divisor).collect();
        let zero: Vec<i32> = params.iter().map(|p| p.zero).collect();
        let lo: Vec<f32> = params.iter().map(|p| p.lo).collect();
        let hi: Vec<f32> = params.iter().map(|p| p.hi).collect();
        let (divisor, zero, lo, hi) = (
            dev.clone_htod(&divisor)?,
            dev.clone_htod(&zero)?,
            dev.clone_htod(&lo)?,
            dev.clone_htod(&hi)?,
        );

        // 3. Encode and pack, eight codes (`bits` whole bytes) per thread.
        let nbytes = packed_len(n, self.bits);
        // SAFETY: the encode kernel writes every byte of the packed stream (see quantize.cu).
        let mut out = unsafe { dev.alloc::<u8>(nbytes) }?;
        let (n_u64, bits_u32) = (n as u64, u32::from(self.bits));
        let f = dev.get_or_load_custom_func(&format!("ql_encode_nearest_{suffix}"), MODULE, PTX)?;
        let mut b = f.builder();
        b.arg(&x)
            .arg(&n_u64)
            .arg(&bits_u32)
            .arg(&group_len)
            .arg(&divisor)
            .arg(&zero)
            .arg(&lo)
            .arg(&hi)
            .arg(&mut out);
        // SAFETY: argument types and order match `ql_encode_nearest_*`; thread o reads
        // elements 8o .. min(8o+8, n) and writes bytes o·bits .. within `nbytes`.
        unsafe { b.launch(grid(n.div_ceil(8).div_ceil(BLOCK as usize))) }.w()?;
        Ok(Ok(UniformParts {
            codes: dev.clone_dtoh(&out)?,
            scales: params.iter().map(|p| p.scale).collect(),
            zeros: params.iter().map(|p| p.zero as u8).collect(),
        }))
    }
}
