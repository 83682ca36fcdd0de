//! Scaled element formats as a kernel sees them: one code per element, one scale per group,
//! the scale chosen from the group's absmax (float formats, microscaling) or given (static
//! activation quantization).

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::kernels::{HostSlice, cpu};
use crate::quant::float_format::FloatFormat;
use crate::quant::grid::store_scale_up;
use crate::quant::{PackedCodes, QuantFormat, QuantizedParts, QuantizedTensor, ScaleDType, Scales};

/// How each group's scale is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scaling {
    /// `absmax / max_finite`, rounded up to the storage dtype (nothing saturates).
    Absmax(ScaleDType),
    /// OCP microscaling: `2^(floor(log2 absmax) − emax_elem)` in E8M0 (`2^−127` for an
    /// all-zero block); the top of a block may saturate, as the specification says.
    Ocp,
    /// The same positive finite f32 scale for every group.
    Fixed(f32),
}

/// One quantization of a whole tensor to a scaled format.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScaledJob {
    /// [`QuantFormat::Float`] (any scaling), or symmetric 8-bit [`QuantFormat::Uniform`]
    /// ([`Scaling::Fixed`] only: the uniform quantizer owns data-dependent integer scales).
    pub format: QuantFormat,
    /// Consecutive row-major elements sharing a scale.
    pub group_len: usize,
    pub scaling: Scaling,
    /// What the input is, for errors ("weight", "activation").
    pub what: &'static str,
}

/// The scale stored for a group and what its elements are divided by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct GroupScale {
    /// Stored scale (exact in the scale dtype).
    pub scale: f32,
    /// `w / divisor` is encoded; the scale, or 1 for an all-zero group with scale 0.
    pub divisor: f32,
    /// Every element of the group is zero: codes are +0.
    pub zero: bool,
}

/// `2^k` for `k ∈ [−149, 127]`, from its bits.
fn pow2(k: i32) -> f32 {
    if k >= -126 {
        f32::from_bits(((k + 127) as u32) << 23)
    } else {
        f32::from_bits(1 << (k + 149))
    }
}

/// `floor(log2 x)` of a positive finite f32, exactly (subnormals included).
pub(crate) fn floor_log2(x: f32) -> i32 {
    let bits = x.to_bits() & 0x7FFF_FFFF;
    let exp = (bits >> 23) as i32;
    if exp == 0 {
        (31 - bits.leading_zeros() as i32) - 149
    } else {
        exp - 127
    }
}

/// The OCP MX shared scale of a block whose largest magnitude is `amax`:
/// `2^(floor(log2 amax) − emax)` clamped to E8M0's `[2^−127, 2^127]`, `2^−127` when `amax = 0`.
pub(crate) fn ocp_scale(amax: f32, format: FloatFormat) -> f32 {
    if amax == 0.0 {
        return pow2(-127);
    }
    pow2((floor_log2(amax) - format.emax()).clamp(-127, 127))
}

impl GroupScale {
    /// The scale of a group with finite absmax `amax`; `Err(raw scale)` when it does not fit
    /// the scale dtype.
    pub(crate) fn new(amax: f32, format: QuantFormat, scaling: Scaling) -> Result<Self, f32> {
        let zero = amax == 0.0;
        let scale = match (scaling, format) {
            (Scaling::Fixed(s), _) => s,
            (Scaling::Ocp, QuantFormat::Float(f)) => ocp_scale(amax, f),
            (Scaling::Absmax(dtype), QuantFormat::Float(f)) => {
                let mut raw = amax / f.max_finite();
                if raw == 0.0 && amax > 0.0 {
                    raw = f32::from_bits(1); // a subnormal absmax whose quotient underflows
                }
                store_scale_up(raw, dtype).ok_or(raw)?
            }
            _ => unreachable!("data-dependent scales are for float formats only"),
        };
        Ok(GroupScale {
            scale,
            divisor: if scale > 0.0 { scale } else { 1.0 },
            zero,
        })
    }
}

/// Quantize `weight` (already validated: rank 2, non-empty, float dtype) on its device.
pub(crate) fn quantize_scaled(weight: &Tensor, job: &ScaledJob) -> Result<QuantizedTensor> {
    // The CPU path: packed codes and stored scales.
    let host = |w: &Tensor| -> Result<(Vec<u8>, Vec<f32>)> {
        super::host::with_host_slice(w, job.what, |src| {
            let absmax = cpu::scaled::group_absmax(&src, job.group_len);
            let scales = group_scales(&src, &absmax, job)?;
            let stored = scales.iter().map(|s| s.scale).collect();
            Ok((cpu::scaled::encode(&src, job, &scales), stored))
        })
    };
    let (codes, stored) = match weight.device() {
        Device::Cpu => host(weight)?,
        // Jobs without a device kernel (fixed scales) run on the host; so do faults, so the
        // error names the first bad element or group exactly as on the CPU.
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => match super::cuda::quantize_float(weight, job)? {
            Some(parts) => parts,
            None => host(&weight.to_device(&Device::Cpu)?)?,
        },
        other => {
            return Err(Error::UnsupportedDevice {
                op: "quantize",
                device: format!("{:?}", other.location()),
                hint: "no kernel for this device yet; move the tensor with .to_device(&Device::Cpu)",
            });
        }
    };
    let bits = job.format.code_bits();
    let scales = match job.scaling {
        Scaling::Absmax(dtype) => Scales::from_f32(stored, dtype),
        Scaling::Ocp => Scales::from_f32(stored, ScaleDType::E8M0),
        Scaling::Fixed(_) => Scales::F32(stored),
    };
    QuantizedTensor::assemble(QuantizedParts {
        shape: weight.dims().to_vec(),
        dtype: weight.dtype(),
        format: job.format,
        group_len: job.group_len,
        codes: PackedCodes::from_bytes(codes, bits, weight.elem_count())?,
        scales,
        zeros: None,
        offsets: None,
        codebook: None,
        input_scales: None,
    })
}

/// Every group's scale, in order; the first non-finite element or the first group whose scale
/// overflows its dtype is the error (sequential, so it does not depend on threads).
fn group_scales(src: &HostSlice, absmax: &[f32], job: &ScaledJob) -> Result<Vec<GroupScale>> {
    if absmax.iter().any(|a| a.is_nan()) {
        let mut scratch = Vec::new();
        let x = src.f32_range(0..src.len(), &mut scratch);
        let mut bad = x.iter().enumerate().filter(|(_, v)| !v.is_finite());
        let (first_index, _) = bad
            .next()
            .expect("a NaN absmax comes from a non-finite value");
        return Err(Error::NonFinite {
            what: job.what,
            count: 1 + bad.count(),
            first_index,
        });
    }
    absmax
        .iter()
        .enumerate()
        .map(|(group, &a)| {
            GroupScale::new(a, job.format, job.scaling).map_err(|scale| Error::ScaleOutOfRange {
                group,
                scale,
                dtype: match job.scaling {
                    Scaling::Absmax(dtype) => dtype,
                    _ => ScaleDType::E8M0,
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_log2_is_exact_over_the_whole_range() {
        for k in -149..=127 {
            let x = pow2(k);
            assert_eq!(x as f64, 2f64.powi(k));
            assert_eq!(floor_log2(x), k);
            if (-147..127).contains(&k) {
                assert_eq!(floor_log2(x * 1.75), k, "{x:e}");
            }
            if k > -149 {
                assert_eq!(floor_log2(x.next_down()), k - 1, "{x:e}");
            }
        }
        assert_eq!(floor_log2(f32::MAX), 127);
    }
}
