//! Fused per-row cross-entropy on a CUDA device (`cross_entropy.cu`): one pass over the
//! logits, one block per row, a streaming log-sum-exp that leaves the target out and a `log1p`
//! finish in f64, as the CPU kernel does (`src/kernels/cpu/cross_entropy.rs`).
//!
//! Accuracy: each exponential is `exp2` on the special-function unit (2 ulp), summed in f32
//! over 8 logits and in f64 beyond, so a loss has a relative error of a few 1e-7 whatever its
//! size (a dominant target's 1e-8 loss keeps its digits); the tests allow 1e-5.

use std::sync::Mutex;

use super::launch_1d;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CpuStorage, CudaStorage, CustomOp2, DType, Device, Layout, Shape, Tensor};

use crate::error::{Error, Result};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/cross_entropy.ptx"));
/// Name under which Candle caches the loaded module per device.
const MODULE: &str = "quantlens_cross_entropy";
/// `CE_THREADS` in `cross_entropy.cu`.
const THREADS: u32 = 256;

/// The kernel launch on (logits `[rows, cols]`, targets `[rows]` u32 or i64).
struct RowsOp {
    /// Targets equal to all-ones (u32::MAX, −1) mark rows that are not read (loss 0).
    skip: bool,
    /// `u32::MAX − row` for the smallest row with a target outside `0..cols`, 0 if none.
    bad: Mutex<Option<CudaSlice<u32>>>,
}

impl RowsOp {
    fn launch<T: CudaDType + candle_core::WithDType>(
        &self,
        logits: &CudaStorage,
        ll: &Layout,
        targets: &CudaStorage,
        tl: &Layout,
    ) -> candle_core::Result<CudaStorage> {
        let (ls, le) = ll
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("logits must be contiguous".into()))?;
        let (ts, te) = tl
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("targets must be contiguous".into()))?;
        let &[rows, cols] = ll.shape().dims() else {
            candle_core::bail!("logits must be [rows, cols]");
        };
        if te - ts != rows {
            candle_core::bail!("{} targets for {rows} rows", te - ts);
        }
        let dev = &logits.device;
        let x = logits.as_cuda_slice::<T>()?.slice(ls..le);
        let size = std::mem::size_of::<T>();
        // 16-byte loads need a 16-byte aligned start of every row.
        let vec = u32::from((ls * size).is_multiple_of(16) && (cols * size).is_multiple_of(16));
        let cols32 = u32::try_from(cols)
            .map_err(|_| candle_core::Error::Msg(format!("{cols} classes exceed u32")))?;
        let skip = u32::from(self.skip);
        let bad = dev.alloc_zeros::<u32>(1)?;
        // SAFETY: the kernel writes each of the `rows` outputs.
        let mut out = unsafe { dev.alloc::<f32>(rows) }?;
        let suffix = match T::DTYPE {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            other => candle_core::bail!("quantlens-cross-entropy: logits dtype {other:?}"),
        };
        let cfg = launch_1d(rows as u32, THREADS);
        let (name, func) = match targets.dtype() {
            DType::U32 => {
                let name = format!("ql_cross_entropy_{suffix}_u32");
                (
                    name.clone(),
                    dev.get_or_load_custom_func(&name, MODULE, PTX)?,
                )
            }
            DType::I64 => {
                let name = format!("ql_cross_entropy_{suffix}_i64");
                (
                    name.clone(),
                    dev.get_or_load_custom_func(&name, MODULE, PTX)?,
                )
            }
            other => candle_core::bail!("quantlens-cross-entropy: targets dtype {other:?}"),
        };
        let mut b = func.builder();
        b.arg(&x);
        let t32;
        let t64;
        if name.ends_with("u32") {
            t32 = targets.as_cuda_slice::<u32>()?.slice(ts..te);
            b.arg(&t32);
        } else {
            t64 = targets.as_cuda_slice::<i64>()?.slice(ts..te);
            b.arg(&t64);
        }
        let mut bad = bad;
        b.arg(&cols32)
            .arg(&vec)
            .arg(&skip)
            .arg(&mut out)
            .arg(&mut bad);
        // SAFETY: argument types and order match `CE_KERNEL` in `cross_entropy.cu`; the logits
        // hold rows·cols elements, the targets `rows`; the kernel reads a target's logit only
        // after checking it is in 0..cols.
        unsafe { b.launch(cfg) }.w()?;
        if let Ok(mut slot) = self.bad.lock() {
            *slot = Some(bad);
        }
        Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
    }
}

impl CustomOp2 for RowsOp {
    fn name(&self) -> &'static str {
        "quantlens-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("quantlens-cross-entropy runs on CUDA only")
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let out = match s1.dtype() {
            DType::F32 => self.launch::<f32>(s1, l1, s2, l2)?,
            DType::F16 => self.launch::<half::f16>(s1, l1, s2, l2)?,
            DType::BF16 => self.launch::<half::bf16>(s1, l1, s2, l2)?,
            other => candle_core::bail!("quantlens-cross-entropy: logits dtype {other:?}"),
        };
        Ok((out, Shape::from(l1.shape().dims()[0])))
    }
}

/// Per-sample losses whose target check has not been read back yet: the kernel ran (queued on
/// the device's stream), and [`finish`](Self::finish) waits for it and reports bad targets.
#[derive(Debug)]
pub struct PendingLosses {
    losses: Tensor,
    logits: Tensor,
    targets: Tensor,
    classes: usize,
    bad: CudaSlice<u32>,
}

impl PendingLosses {
    /// The losses, not yet checked: rows with an out-of-range target or a non-finite logit
    /// hold NaN.
    pub fn losses_unchecked(&self) -> &Tensor {
        &self.losses
    }

    /// Wait for the kernel and return the losses.
    ///
    /// # Errors
    ///
    /// [`Error::TargetOutOfRange`] naming the first row whose target is outside
    /// `0..classes`; [`Error::NonFinite`] naming the first NaN or +∞ logit.
    pub fn finish(self) -> Result<Tensor> {
        let Device::Cuda(dev) = self.losses.device() else {
            return Err(Error::Unsupported("pending losses off the GPU".into()));
        };
        let bad = dev.clone_dtoh(&self.bad)?;
        if let Some(&flag) = bad.first()
            && flag != 0
        {
            let row = (u32::MAX - flag) as usize;
            let value = self.targets.narrow(0, row, 1)?.to_dtype(DType::I64)?;
            return Err(Error::TargetOutOfRange {
                what: "targets",
                index: row,
                value: value.to_vec1::<i64>()?[0],
                classes: self.classes,
            });
        }
        if self.losses.to_vec1::<f32>()?.iter().any(|l| l.is_nan()) {
            // Only NaN or +∞ logits make a NaN row now; the CPU kernel names the first one
            // (and returns its error) exactly as a CPU call would.
            let targets = self.targets.to_dtype(DType::I64)?.to_vec1::<i64>()?;
            let targets: Vec<Option<u32>> = targets.iter().map(|&t| Some(t as u32)).collect();
            let host = self.logits.to_device(&Device::Cpu)?;
            crate::kernels::cross_entropy_rows(&host, &targets)?;
        }
        Ok(self.losses)
    }
}

fn check_inputs(logits: &Tensor, targets: &Tensor) -> Result<(usize, usize)> {
    let (rows, cols) = match logits.dims() {
        &[r, c] => (r, c),
        d => {
            return Err(Error::RankMismatch {
                what: "logits",
                expected: 2,
                shape: d.to_vec(),
            });
        }
    };
    if targets.rank() != 1 {
        return Err(Error::RankMismatch {
            what: "targets",
            expected: 1,
            shape: targets.dims().to_vec(),
        });
    }
    if rows == 0 || cols == 0 {
        return Err(Error::EmptyTensor {
            what: "logits",
            shape: logits.dims().to_vec(),
        });
    }
    if targets.dim(0)? != rows {
        return Err(Error::ShapeMismatch(format!(
            "logits {:?} have {rows} rows but targets {:?} have {} entries",
            logits.dims(),
            targets.dims(),
            targets.dim(0)?
        )));
    }
    if !matches!(logits.dtype(), DType::F32 | DType::F16 | DType::BF16) {
        return Err(Error::UnsupportedDType {
            what: "logits",
            dtype: logits.dtype(),
        });
    }
    if !logits.device().is_cuda() || !targets.device().same_device(logits.device()) {
        return Err(Error::UnsupportedDevice {
            op: "cross_entropy_per_sample",
            device: format!("{:?}", logits.device().location()),
            hint: "logits and targets must be on the same CUDA device",
        });
    }
    Ok((rows, cols))
}

fn run(logits: &Tensor, targets: &Tensor, skip: bool) -> Result<(Tensor, CudaSlice<u32>)> {
    let op = RowsOp {
        skip,
        bad: Mutex::new(None),
    };
    let losses = logits
        .contiguous()?
        .apply_op2_no_bwd(&targets.contiguous()?, &op)?;
    let bad = op
        .bad
        .into_inner()
        .ok()
        .flatten()
        .ok_or_else(|| Error::Unsupported("cross-entropy kernel did not run".into()))?;
    Ok((losses, bad))
}

/// Launch the fused per-sample cross-entropy without waiting for it; see
/// [`cross_entropy_per_sample`] for the contract. The target check is read back by
/// [`PendingLosses::finish`], so a caller timing the kernel (or queueing more work) does not
/// pay a device synchronisation per call.
///
/// # Errors
///
/// The shape, dtype and device errors of [`cross_entropy_per_sample`].
pub fn cross_entropy_per_sample_deferred(
    logits: &Tensor,
    targets: &Tensor,
) -> Result<PendingLosses> {
    let (_, classes) = check_inputs(logits, targets)?;
    let targets = match targets.dtype() {
        DType::U32 | DType::I64 => targets.clone(),
        DType::U8 | DType::I16 | DType::I32 => targets.to_dtype(DType::I64)?,
        dtype => {
            return Err(Error::NonIntegerTargets {
                what: "targets",
                dtype,
            });
        }
    };
    let (losses, bad) = run(logits, &targets, false)?;
    Ok(PendingLosses {
        losses,
        logits: logits.clone(),
        targets,
        classes,
        bad,
    })
}

/// Per-sample cross-entropy `ℓᵢ = log Σ_c exp(x_{i,c}) − x_{i,yᵢ}` of logits `[n, C]` (f32,
/// f16 or bf16) and class indices `[n]` (u32 or i64; u8/i16/i32 are widened), both on one
/// CUDA device, in one fused pass over the logits; `[n]` f32 on that device.
///
/// Same contract as [`CrossEntropy`](crate::CrossEntropy) on the CPU: the target is left out
/// of the streaming log-sum-exp and the loss is `ln(1 + Σ_{c≠y} e^{x_c − x_y})` in f64, so
/// tiny losses keep their relative precision (about 1e-6); −∞ logits are masked classes; a −∞
/// target logit gives +∞.
///
/// # Errors
///
/// [`Error::RankMismatch`], [`Error::EmptyTensor`], [`Error::ShapeMismatch`],
/// [`Error::UnsupportedDType`], [`Error::NonIntegerTargets`], [`Error::UnsupportedDevice`];
/// [`Error::TargetOutOfRange`] for the first row whose target is outside `0..C`;
/// [`Error::NonFinite`] for NaN or +∞ logits.
pub fn cross_entropy_per_sample(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    cross_entropy_per_sample_deferred(logits, targets)?.finish()
}

/// The probe's CUDA path: targets already validated on the host, `None` = row not read.
/// NaN marks a row with a NaN or +∞ logit; the caller names it.
pub(crate) fn cross_entropy_rows(logits: &Tensor, targets: &[Option<u32>]) -> Result<Tensor> {
    let t: Vec<u32> = targets.iter().map(|t| t.unwrap_or(u32::MAX)).collect();
    let t = Tensor::from_vec(t, targets.len(), logits.device())?;
    Ok(run(logits, &t, true)?.0)
}
