//! Hot loops, dispatched on the tensor's [`Device`].
//!
//! Quantizers describe *what* to compute (a [`UniformJob`]); this module picks *where*: the
//! backend of the weight's device for quantization, of the target device for dequantization.
//! A quantizer never names a backend. The CPU backend lives in [`cpu`]; the CUDA issue adds a
//! `cuda` backend here without touching any quantizer.

pub(crate) mod cpu;
mod cross_entropy;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
mod host;
mod multiversion;
pub(crate) mod scaled;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::quant::grid::raw_uniform_scale;
use crate::quant::{PackedCodes, QuantFormat, QuantizedTensor, Rounding, ScaleDType, Scales};

pub(crate) use cross_entropy::cross_entropy_rows;
pub(crate) use host::HostSlice;

/// One uniform (or sign) quantization of a whole tensor, as a kernel sees it. `format` is
/// [`QuantFormat::Uniform`] or [`QuantFormat::Sign`], nothing else.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UniformJob {
    pub format: QuantFormat,
    /// Consecutive row-major elements that share a scale.
    pub group_len: usize,
    pub rounding: Rounding,
    pub scale_dtype: ScaleDType,
}

/// What a kernel returns: packed codes plus one scale and one zero point per group.
pub(crate) struct UniformParts {
    pub codes: Vec<u8>,
    pub scales: Vec<f32>,
    pub zeros: Vec<u8>,
}

/// Why a kernel stopped. Turned into a precise [`Error`] by [`quantize_uniform`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    NonFinite,
    ScaleOverflow { group: usize },
}

/// One codebook quantization of a whole tensor (NF4, NormalFloat), as a kernel sees it: each
/// group's codes are the nearest levels of `scale · table`.
// Read only by device kernels; a CPU-only build passes the job through unread.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct TableJob<'a> {
    /// The levels, ascending, `2^bits` of them.
    pub table: &'a [f32],
    pub bits: u8,
    /// Consecutive row-major elements that share a scale.
    pub group_len: usize,
    /// The code of every element of a group whose scale is 0 (the level nearest to 0).
    pub zero_code: u8,
    pub scaling: TableScaling<'a>,
}

/// Where a codebook job's scales come from.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
#[derive(Debug, Clone, Copy)]
pub(crate) enum TableScaling<'a> {
    /// Each group's absmax rounded up to the dtype (`store_scale_up`).
    Absmax(ScaleDType),
    /// Given, one per group (NF4 double quantization: the decoded second-level scales).
    Given(&'a [f32]),
}

/// What a codebook quantization returns: packed codes and one f32 scale per group.
pub(crate) struct TableParts {
    pub codes: PackedCodes,
    pub scales: Vec<f32>,
}

/// Codebook-quantize `weight` (already validated: rank 2, non-empty, float dtype) on its
/// device. `host` is the CPU path; it runs for CPU tensors, for jobs without a device kernel,
/// and, on a CPU copy, when a device kernel reports a fault, so the error is the CPU's exactly.
pub(crate) fn quantize_table(
    weight: &Tensor,
    job: &TableJob,
    host: impl FnOnce(&Tensor) -> Result<TableParts>,
) -> Result<TableParts> {
    #[cfg(feature = "cuda")]
    if weight.device().is_cuda() {
        return match cuda::quantize_table(weight, job)? {
            Some(parts) => Ok(parts),
            None => host(&weight.to_device(&Device::Cpu)?),
        };
    }
    #[cfg(not(feature = "cuda"))]
    let _ = job;
    host(weight)
}

/// Each group's max |w| on the weight's device (a non-finite weight is the CPU's error, from
/// `host` on a CPU copy), as [`quantize_table`] dispatches.
pub(crate) fn group_absmax(
    weight: &Tensor,
    group_len: usize,
    host: impl FnOnce(&Tensor) -> Result<Vec<f32>>,
) -> Result<Vec<f32>> {
    #[cfg(feature = "cuda")]
    if weight.device().is_cuda() {
        return match cuda::group_absmax(weight, group_len)? {
            Some(absmax) => Ok(absmax),
            None => host(&weight.to_device(&Device::Cpu)?),
        };
    }
    #[cfg(not(feature = "cuda"))]
    let _ = group_len;
    host(weight)
}

/// Quantize `weight` (already validated: rank 2, non-empty, float dtype) on its device.
pub(crate) fn quantize_uniform(weight: &Tensor, job: &UniformJob) -> Result<QuantizedTensor> {
    let parts = match weight.device() {
        Device::Cpu => host::with_host_slice(weight, "weight", |src| {
            cpu::uniform::quantize(&src, job).map_err(|fault| explain_fault(&src, job, fault))
        })?,
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => match cuda::quantize_uniform(weight, job)? {
            Some(Ok(parts)) => parts,
            // Jobs without a device kernel run on the host; so do faults, so the error names
            // the first bad element or group exactly as on the CPU.
            Some(Err(_)) | None => {
                let host = weight.to_device(&Device::Cpu)?;
                host::with_host_slice(&host, "weight", |src| {
                    cpu::uniform::quantize(&src, job)
                        .map_err(|fault| explain_fault(&src, job, fault))
                })?
            }
        },
        other => {
            return Err(Error::UnsupportedDevice {
                op: "quantize",
                device: format!("{:?}", other.location()),
                hint: "no kernel for this device yet; move the weight with .to_device(&Device::Cpu)",
            });
        }
    };
    let numel = weight.elem_count();
    let bits = job.format.code_bits();
    let codes = PackedCodes::from_bytes(parts.codes, bits, numel)?;
    let scales = Scales::from_f32(parts.scales, job.scale_dtype);
    let zeros = match job.format {
        QuantFormat::Uniform {
            symmetric: false, ..
        } => Some(PackedCodes::pack(&parts.zeros, bits)?),
        _ => None,
    };
    QuantizedTensor::from_parts(
        weight.dims().to_vec(),
        weight.dtype(),
        job.format,
        job.group_len,
        codes,
        scales,
        zeros,
    )
}

/// Which weight a decode produces for a tensor with input scales (the same for one without).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Domain {
    /// `Q(W·diag(s))·diag(s)⁻¹`: each decoded value divided by its column's input scale.
    Effective,
    /// `Q(W·diag(s))`: the codes as they are.
    Smoothed,
}

/// Decode `q` into a `dtype` tensor on `device`.
pub(crate) fn dequantize(
    q: &QuantizedTensor,
    device: &Device,
    dtype: DType,
    domain: Domain,
) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if matches!(device, Device::Cuda(_)) && matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
        return cuda::dequantize(q, device, dtype, domain);
    }
    let host = match dtype {
        DType::F32 => cpu::decode::dequantize::<f32>(q, domain)?,
        DType::F16 => cpu::decode::dequantize::<half::f16>(q, domain)?,
        DType::BF16 => cpu::decode::dequantize::<half::bf16>(q, domain)?,
        other => {
            return Err(Error::UnsupportedDType {
                what: "dequantized tensor",
                dtype: other,
            });
        }
    };
    // Devices without a decode kernel (Metal, or CUDA without feature `cuda`): decode on the
    // host, then upload.
    Ok(match device {
        Device::Cpu => host,
        other => host.to_device(other)?,
    })
}

/// Turn a kernel fault into an error that names the first bad element or group.
/// Runs only on failure, sequentially, so the error does not depend on thread timing.
fn explain_fault(src: &HostSlice, job: &UniformJob, fault: Fault) -> Error {
    let mut scratch = Vec::new();
    let x = src.f32_range(0..src.len(), &mut scratch);
    let mut bad = x.iter().enumerate().filter(|(_, v)| !v.is_finite());
    if let Some((first_index, _)) = bad.next() {
        return Error::NonFinite {
            what: "weight",
            count: 1 + bad.count(),
            first_index,
        };
    }
    let group = match fault {
        Fault::ScaleOverflow { group } => group,
        Fault::NonFinite => 0,
    };
    let g = &x[group * job.group_len..(group + 1) * job.group_len];
    let (min, max) = g
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let scale = match job.format {
        QuantFormat::Uniform { bits, symmetric } => raw_uniform_scale(min, max, bits, symmetric),
        // Sign: the only other format a `UniformJob` carries.
        _ => g.iter().map(|v| v.abs() as f64).sum::<f64>() as f32 / g.len() as f32,
    };
    Error::ScaleOutOfRange {
        group,
        scale,
        dtype: job.scale_dtype,
    }
}
