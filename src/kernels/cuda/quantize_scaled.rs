//! Absmax-scaled quantization of a weight on a CUDA device (`quantize_scaled.cu`): the NF4 and
//! NormalFloat codebooks and the small float formats (FP8 E4M3/E5M2, FP4 E2M1, OCP MX).
//!
//! Two kernels and no host step between them: per-group absmax, finiteness and stored scale,
//! then the packed codes. Both follow the CPU code operation by operation (the `.cu` file
//! names each function it mirrors), so codes and scales are the CPU's bit for bit. What comes
//! back is the packed codes, the f32 scales and a status word; when the status reports a
//! fault (a non-finite weight, a scale its dtype cannot hold) these functions return
//! `Ok(None)` and the dispatcher runs the CPU path, whose error names the first bad element
//! or group. `Ok(None)` also means "no kernel for this job" (another element dtype, fixed
//! scales).

use std::ops::Range;

use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchArgs, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CudaDevice, CudaStorage, DType, Storage, Tensor};

use super::launch_1d;
use crate::error::Result;
use crate::kernels::scaled::{ScaledJob, Scaling};
use crate::kernels::{TableJob, TableParts, TableScaling};
use crate::quant::packing::packed_len;
use crate::quant::{FloatFormat, PackedCodes, QuantFormat, ScaleDType};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/quantize_scaled.ptx"));
/// Name under which Candle caches the loaded module per device.
const MODULE: &str = "quantlens_quantize_scaled";
/// Threads per block; `QL_S_THREADS` in `quantize_scaled.cu` must equal it.
const BLOCK: u32 = 256;
/// Enough blocks to fill any current GPU; the encode kernels stride over the rest.
const MAX_BLOCKS: usize = 1 << 16;
/// Groups up to this length are reduced by one warp each, longer ones by one block each.
const WARP_GROUP_MAX: usize = 4096;
/// Groups longer than this (per-tensor scales of a large matrix) are reduced by many blocks
/// each, so one block does not read them alone.
const BLOCK_GROUP_MAX: usize = 1 << 16;
/// Elements per block of a group split over blocks, before the cap on blocks per group.
const PART_ELEMS: usize = 1 << 14;
const MAX_PARTS: usize = 1024;

/// How the absmax kernel turns a group's absmax into its stored scale (`QL_RULE_*`).
#[derive(Debug, Clone, Copy)]
struct Rule {
    /// 0: `store_scale_up(absmax)` (codebooks); 1: `absmax / max_finite` rounded up (float
    /// formats); 2: the OCP MX power of two.
    id: u32,
    /// `QL_DT_*`: 0 f32, 1 f16, 2 bf16, 3 E8M0.
    dtype: u32,
    max_finite: f32,
    emax: i32,
}

impl Rule {
    fn table(dtype: ScaleDType) -> Self {
        Rule {
            id: 0,
            dtype: dtype_id(dtype),
            max_finite: 1.0,
            emax: 0,
        }
    }
}

fn dtype_id(dtype: ScaleDType) -> u32 {
    match dtype {
        ScaleDType::F32 => 0,
        ScaleDType::F16 => 1,
        ScaleDType::BF16 => 2,
        ScaleDType::E8M0 => 3,
    }
}

/// `format` argument of `ql_scaled_encode_float_*`.
fn format_id(format: FloatFormat) -> u32 {
    match format {
        FloatFormat::E4M3 => 0,
        FloatFormat::E5M2 => 1,
        FloatFormat::E2M1 => 2,
    }
}

/// The weight's contiguous elements in device memory, and how they are grouped.
struct Src<'a> {
    cs: &'a CudaStorage,
    range: Range<usize>,
    group_len: usize,
}

impl Src<'_> {
    fn dev(&self) -> &CudaDevice {
        &self.cs.device
    }
    fn n(&self) -> usize {
        self.range.len()
    }
    fn groups(&self) -> usize {
        self.range.len() / self.group_len
    }
    fn view<T: CudaDType>(&self) -> Result<CudaView<'_, T>> {
        Ok(self.cs.as_cuda_slice::<T>()?.slice(self.range.clone()))
    }
}

/// Run `f` on the CUDA storage of `weight` (made contiguous), `Ok(None)` when it is not on a
/// CUDA device.
fn with_src<R>(
    weight: &Tensor,
    group_len: usize,
    f: impl FnOnce(&Src, DType) -> Result<Option<R>>,
) -> Result<Option<R>> {
    let w = weight.contiguous()?;
    let (storage, layout) = w.storage_and_layout();
    let Storage::Cuda(cs) = &*storage else {
        return Ok(None);
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Ok(None);
    };
    if group_len == 0 || !(end - start).is_multiple_of(group_len) {
        return Ok(None);
    }
    let src = Src {
        cs,
        range: start..end,
        group_len,
    };
    f(&src, w.dtype())
}

/// `$f::<T>(suffix, args..)` for the weight's element type; `Ok(None)` for other dtypes.
macro_rules! by_dtype {
    ($dtype:expr, $f:ident, $($arg:expr),*) => {
        match $dtype {
            DType::F32 => $f::<f32>("f32", $($arg),*),
            DType::F16 => $f::<half::f16>("f16", $($arg),*),
            DType::BF16 => $f::<half::bf16>("bf16", $($arg),*),
            _ => Ok(None),
        }
    };
}

/// NF4 / NormalFloat codes and scales of `weight` on its CUDA device (see the module docs).
pub(crate) fn quantize_table(weight: &Tensor, job: &TableJob) -> Result<Option<TableParts>> {
    if !(2..=256).contains(&job.table.len()) || job.table.len() != 1 << job.bits {
        return Ok(None);
    }
    with_src(weight, job.group_len, |src, dtype| {
        by_dtype!(dtype, table_on, src, job)
    })
}

/// Each group's max |w| (NF4 double quantization's first pass), `Ok(None)` on a non-finite
/// weight.
pub(crate) fn group_absmax(weight: &Tensor, group_len: usize) -> Result<Option<Vec<f32>>> {
    with_src(weight, group_len, |src, dtype| {
        by_dtype!(dtype, absmax_on, src)
    })
}

/// FP8 / FP4 / MX packed codes and stored scales of `weight` on its CUDA device;
/// `Ok(None)` for fixed scales (no kernel) and on a fault.
pub(crate) fn quantize_float(
    weight: &Tensor,
    job: &ScaledJob,
) -> Result<Option<(Vec<u8>, Vec<f32>)>> {
    let QuantFormat::Float(format) = job.format else {
        return Ok(None);
    };
    let rule = match job.scaling {
        Scaling::Absmax(dtype) => Rule {
            id: 1,
            dtype: dtype_id(dtype),
            max_finite: format.max_finite(),
            emax: format.emax(),
        },
        Scaling::Ocp => Rule {
            id: 2,
            dtype: dtype_id(ScaleDType::E8M0),
            max_finite: format.max_finite(),
            emax: format.emax(),
        },
        Scaling::Fixed(_) => return Ok(None),
    };
    with_src(weight, job.group_len, |src, dtype| {
        by_dtype!(dtype, float_on, src, format, rule)
    })
}

fn table_on<T: CudaDType + DeviceRepr>(
    suffix: &str,
    src: &Src,
    job: &TableJob,
) -> Result<Option<TableParts>> {
    let dev = src.dev();
    let x = src.view::<T>()?;
    let (scales, status) = match job.scaling {
        TableScaling::Given(s) if s.len() == src.groups() => (dev.clone_htod(s)?, None),
        TableScaling::Given(_) => return Ok(None),
        TableScaling::Absmax(dtype) => {
            let Some(a) = launch_absmax(suffix, src, &x, Rule::table(dtype))? else {
                return Ok(None);
            };
            (a.scales, Some(a.status))
        }
    };
    let table = dev.clone_htod(job.table)?;
    let nbytes = packed_len(src.n(), job.bits);
    // SAFETY: the encode kernel writes every byte of the packed stream (every octet, the last
    // one's ceil(count·bits/8) bytes included).
    let mut out = unsafe { dev.alloc::<u8>(nbytes) }?;
    let (n, bits, group_len) = (src.n() as u64, u32::from(job.bits), src.group_len as u64);
    let (table_len, zero_code) = (job.table.len() as u32, u32::from(job.zero_code));
    let f =
        dev.get_or_load_custom_func(&format!("ql_scaled_encode_table_{suffix}"), MODULE, PTX)?;
    let mut b = f.builder();
    b.arg(&x)
        .arg(&n)
        .arg(&bits)
        .arg(&group_len)
        .arg(&table)
        .arg(&table_len)
        .arg(&zero_code)
        .arg(&scales)
        .arg(&mut out);
    // SAFETY: argument types and order match `ql_scaled_encode_table_*`; thread o reads
    // elements 8o .. min(8o+8, n), scales of their groups (< groups), levels < table_len ≤ 256
    // (the shared table's size), and writes bytes o·bits .. within `nbytes`.
    unsafe { b.launch(encode_grid(src.n())) }.w()?;
    if let Some(status) = &status
        && !status_clear(dev, status)?
    {
        return Ok(None);
    }
    Ok(Some(TableParts {
        codes: PackedCodes::from_bytes(dev.clone_dtoh(&out)?, job.bits, src.n())?,
        scales: dev.clone_dtoh(&scales)?,
    }))
}

fn absmax_on<T: CudaDType + DeviceRepr>(suffix: &str, src: &Src) -> Result<Option<Vec<f32>>> {
    let dev = src.dev();
    let x = src.view::<T>()?;
    // store_scale_up(absmax, F32) is absmax itself: the raw absmax of every group.
    let Some(a) = launch_absmax(suffix, src, &x, Rule::table(ScaleDType::F32))? else {
        return Ok(None);
    };
    if !status_clear(dev, &a.status)? {
        return Ok(None);
    }
    Ok(Some(dev.clone_dtoh(&a.scales)?))
}

fn float_on<T: CudaDType + DeviceRepr>(
    suffix: &str,
    src: &Src,
    format: FloatFormat,
    rule: Rule,
) -> Result<Option<(Vec<u8>, Vec<f32>)>> {
    let dev = src.dev();
    let x = src.view::<T>()?;
    let Some(a) = launch_absmax(suffix, src, &x, rule)? else {
        return Ok(None);
    };
    let bits = format.bits();
    let nbytes = packed_len(src.n(), bits);
    // SAFETY: the encode kernel writes every byte of the packed stream.
    let mut out = unsafe { dev.alloc::<u8>(nbytes) }?;
    let (n, bits_u32, group_len) = (src.n() as u64, u32::from(bits), src.group_len as u64);
    let format_u32 = format_id(format);
    let f =
        dev.get_or_load_custom_func(&format!("ql_scaled_encode_float_{suffix}"), MODULE, PTX)?;
    let mut b = f.builder();
    b.arg(&x)
        .arg(&n)
        .arg(&bits_u32)
        .arg(&group_len)
        .arg(&format_u32)
        .arg(&a.scales)
        .arg(&a.zero)
        .arg(&mut out);
    // SAFETY: argument types and order match `ql_scaled_encode_float_*`; thread o reads
    // elements 8o .. min(8o+8, n) and the scale and zero flag of their groups (< groups), and
    // writes bytes o·bits .. within `nbytes`.
    unsafe { b.launch(encode_grid(src.n())) }.w()?;
    if !status_clear(dev, &a.status)? {
        return Ok(None);
    }
    Ok(Some((dev.clone_dtoh(&out)?, dev.clone_dtoh(&a.scales)?)))
}

/// What the absmax kernel leaves on the device.
struct Absmax {
    /// Stored scale per group (NaN where it overflows its dtype).
    scales: CudaSlice<f32>,
    /// 1 where the group is all ±0.
    zero: CudaSlice<u8>,
    /// Bit 0: a non-finite weight; bit 1: a scale overflow.
    status: CudaSlice<u32>,
}

/// Launch `ql_scaled_absmax_{warp,block,part}_*`; `Ok(None)` when the grid would not fit.
fn launch_absmax<T: CudaDType + DeviceRepr>(
    suffix: &str,
    src: &Src,
    x: &CudaView<'_, T>,
    rule: Rule,
) -> Result<Option<Absmax>> {
    let dev = src.dev();
    let groups = src.groups();
    // SAFETY: the kernel writes the scale and zero flag of every group.
    let mut scales = unsafe { dev.alloc::<f32>(groups) }?;
    let mut zero = unsafe { dev.alloc::<u8>(groups) }?;
    let mut status = dev.alloc_zeros::<u32>(1)?;
    let group_len = src.group_len as u64;
    if src.group_len <= WARP_GROUP_MAX {
        let seg = warp_segment(src.group_len);
        let per_block = (BLOCK / 32 * (32 / seg)) as usize;
        let Ok(blocks) = u32::try_from(groups.div_ceil(per_block)) else {
            return Ok(None);
        };
        let groups_u64 = groups as u64;
        let f =
            dev.get_or_load_custom_func(&format!("ql_scaled_absmax_warp_{suffix}"), MODULE, PTX)?;
        let mut b = f.builder();
        b.arg(x).arg(&group_len).arg(&groups_u64).arg(&seg);
        push_rule_and_outputs(&mut b, &rule, &mut scales, &mut zero, &mut status);
        let cfg = launch_1d(blocks, BLOCK);
        // SAFETY: argument types and order match `ql_scaled_absmax_warp_*`; the `seg` lanes
        // of group g < groups read elements g·group_len .. (g+1)·group_len ≤ n and one of
        // them writes index g of `scales` and `zero`; lanes past `groups` read nothing.
        unsafe { b.launch(cfg) }.w()?;
    } else if src.group_len > BLOCK_GROUP_MAX {
        // Several blocks per group fold their maxima into `bits` (atomicMax), then one thread
        // per group derives the scale.
        let parts = src.group_len.div_ceil(PART_ELEMS).min(MAX_PARTS) as u32;
        let Some(groups_y) = u32::try_from(groups).ok().filter(|&g| g <= 65_535) else {
            return Ok(None);
        };
        let Ok(finish_blocks) = u32::try_from(groups.div_ceil(BLOCK as usize)) else {
            return Ok(None);
        };
        let mut bits = dev.alloc_zeros::<u32>(groups)?;
        let mut bad = dev.alloc_zeros::<u32>(groups)?;
        let f =
            dev.get_or_load_custom_func(&format!("ql_scaled_absmax_part_{suffix}"), MODULE, PTX)?;
        let mut b = f.builder();
        b.arg(x).arg(&group_len).arg(&mut bits).arg(&mut bad);
        let cfg = LaunchConfig {
            grid_dim: (parts, groups_y, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: argument types and order match `ql_scaled_absmax_part_*`; block (p, g)
        // reads elements of group g < groups only (indices < group_len, block-strided) and
        // updates index g of `bits` and `bad` atomically.
        unsafe { b.launch(cfg) }.w()?;
        let groups_u64 = groups as u64;
        let f = dev.get_or_load_custom_func("ql_scaled_absmax_finish", MODULE, PTX)?;
        let mut b = f.builder();
        b.arg(&bits).arg(&bad).arg(&groups_u64);
        push_rule_and_outputs(&mut b, &rule, &mut scales, &mut zero, &mut status);
        let cfg = launch_1d(finish_blocks, BLOCK);
        // SAFETY: argument types and order match `ql_scaled_absmax_finish`; thread g < groups
        // reads index g of `bits` and `bad` and writes index g of `scales` and `zero`.
        unsafe { b.launch(cfg) }.w()?;
    } else {
        let Ok(blocks) = u32::try_from(groups) else {
            return Ok(None);
        };
        let f =
            dev.get_or_load_custom_func(&format!("ql_scaled_absmax_block_{suffix}"), MODULE, PTX)?;
        let mut b = f.builder();
        b.arg(x).arg(&group_len);
        push_rule_and_outputs(&mut b, &rule, &mut scales, &mut zero, &mut status);
        let cfg = launch_1d(blocks, BLOCK);
        // SAFETY: argument types and order match `ql_scaled_absmax_block_*`; block g reads
        // elements g·group_len .. (g+1)·group_len ≤ n and writes index g of each output.
        unsafe { b.launch(cfg) }.w()?;
    }
    Ok(Some(Absmax {
        scales,
        zero,
        status,
    }))
}

/// The arguments every scale-deriving absmax kernel (`warp`, `block`, `finish`) ends with:
/// the rule (`rule, dtype, max_finite, emax`), then `scales`, `zero` and `status`.
fn push_rule_and_outputs<'a>(
    b: &mut LaunchArgs<'a>,
    rule: &'a Rule,
    scales: &'a mut CudaSlice<f32>,
    zero: &'a mut CudaSlice<u8>,
    status: &'a mut CudaSlice<u32>,
) {
    b.arg(&rule.id)
        .arg(&rule.dtype)
        .arg(&rule.max_finite)
        .arg(&rule.emax)
        .arg(scales)
        .arg(zero)
        .arg(status);
}

/// Lanes per group of `ql_scaled_absmax_warp_*`: one per octet (or per element when the
/// group is not whole octets), rounded up to a power of two, at most a warp.
fn warp_segment(group_len: usize) -> u32 {
    let units = if group_len.is_multiple_of(8) {
        group_len / 8
    } else {
        group_len
    };
    units.next_power_of_two().min(32) as u32
}

/// One thread per octet of eight codes, grid-stride beyond `MAX_BLOCKS` blocks.
fn encode_grid(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(8).div_ceil(BLOCK as usize).clamp(1, MAX_BLOCKS);
    launch_1d(blocks as u32, BLOCK)
}

/// Read the status word back (this waits for the kernels): true when no fault was reported.
fn status_clear(dev: &CudaDevice, status: &CudaSlice<u32>) -> Result<bool> {
    Ok(dev.clone_dtoh(status)?.first().copied().unwrap_or(0) == 0)
}
