//! Fused dequantize-matmul `y = x · Wᵀ` for a [`CudaQuantizedWeight`] (`qmatmul.cu`): the
//! packed 4-bit weight is read in place and never written out as floats.
//!
//! Dispatch on the number of rows `m` of `x`, by what measured fastest on an H100
//! (docs/cuda-status.md): f16/bf16 up to [`GEMV_HALF_MAX_TOKENS`] rows and f32 up to
//! [`GEMV_MAX_TOKENS`] rows, a GEMV kernel specialised for `m` (the decode case, bound by
//! reading the weight once); f16/bf16 up to [`TILED_MAX_TOKENS`] rows, a tiled tensor-core
//! kernel. Beyond those the product is compute-bound and cuBLAS is faster than our tiled
//! kernel: the weight is dequantized on the device into a temporary and multiplied by Candle's
//! matmul.

use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Layout, Shape, Tensor};

use super::cuda_storage;
use super::launch_1d;
use super::weight::CudaQuantizedWeight;
use crate::error::{Error, Result};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/qmatmul.ptx"));
/// Name under which Candle caches the loaded module per device.
const MODULE: &str = "quantlens_qmatmul";
/// Rows of `x` handled by one GEMV launch; `GEMV_KERNELS` in `qmatmul.cu` has one kernel per
/// count up to this.
pub(crate) const GEMV_MAX_TOKENS: usize = 8;
/// Weight rows per GEMV block for `m` tokens of `dtype`: `GEMV_WARPS · GEMV_ROWS(T, m)` in
/// `qmatmul.cu`.
fn gemv_rows_per_block(m: usize, dtype: DType) -> usize {
    8 * if m == 1 && dtype == DType::F32 { 4 } else { 2 }
}
/// Up to this many rows of f16/bf16 `x` the GEMV runs; above, the tensor cores win (8192²,
/// H100: GEMV 43 µs at 4 rows, 75 µs at 8; tiled 50 µs at 16).
pub(crate) const GEMV_HALF_MAX_TOKENS: usize = 4;
/// Up to this many rows of f16/bf16 `x` the tiled kernel runs; above, dequantize + cuBLAS
/// (8192², H100: tiled 89 µs at 64 rows, 143 µs at 128; dequantize + cuBLAS 116 and 119 µs).
pub(crate) const TILED_MAX_TOKENS: usize = 64;
/// Up to this many rows of `x` the tiled kernel uses 16 × 64 tiles (4 warps), above it
/// 64 × 128 tiles (8 warps).
const SMALL_TILE_MAX_TOKENS: usize = 32;
/// The tiled kernel's k step (`MM_BK` in `qmatmul.cu`).
const MM_BK: usize = 64;
/// Output tiles below this count are split along k so that every SM of an H100 (132) gets
/// about two blocks; more splits than k/256 are not worth their partial sums.
const TARGET_BLOCKS: usize = 264;

/// Problem size, passed by value; layout mirrors `struct MatmulDims` in `qmatmul.cu`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct Dims {
    m: u32,
    n: u32,
    k: u32,
    chunks_per_group: u32,
    steps_per_split: u32,
}

// SAFETY: `Dims` is `repr(C)`, `Copy`, and holds only plain integers, matching the C struct.
unsafe impl DeviceRepr for Dims {}

fn dtype_suffix(dtype: DType) -> candle_core::Result<&'static str> {
    Ok(match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        other => candle_core::bail!("quantlens-qmatmul: unsupported dtype {other:?}"),
    })
}

struct QMatmul<'a> {
    w: &'a CudaQuantizedWeight,
    m: usize,
}

impl QMatmul<'_> {
    fn launch<T: CudaDType + DeviceRepr + candle_core::WithDType>(
        &self,
        storage: &CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<CudaStorage> {
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("activations must be contiguous".into()))?;
        let dev = &storage.device;
        let x = storage.as_cuda_slice::<T>()?;
        let (cg, _) = self.w.codes.storage_and_layout();
        let codes = cuda_storage(&cg)?.as_cuda_slice::<u8>()?;
        let (sg, _) = self.w.scales.storage_and_layout();
        let scales = cuda_storage(&sg)?.as_cuda_slice::<f32>()?;
        let zg = self.w.zeros.as_ref().map(|z| z.storage_and_layout().0);
        let zeros = match &zg {
            Some(g) => Some(cuda_storage(g)?.as_cuda_slice::<u8>()?),
            None => None,
        };
        let null = 0u64;
        let (m, n, k) = (self.m, self.w.rows, self.w.cols);
        // SAFETY: every kernel below writes each of the m·n outputs exactly once.
        let mut y = unsafe { dev.alloc::<T>(m * n) }?;
        let suffix = dtype_suffix(T::DTYPE)?;
        let tiled = T::DTYPE != DType::F32 && m > GEMV_HALF_MAX_TOKENS;
        // (row offset into x and y, rows) of each launch.
        let launches: Vec<(usize, usize)> = if tiled {
            vec![(0, m)]
        } else {
            (0..m)
                .step_by(GEMV_MAX_TOKENS)
                .map(|r| (r, GEMV_MAX_TOKENS.min(m - r)))
                .collect()
        };
        for (r0, rows) in launches {
            let xs = x.slice(start + r0 * k..start + (r0 + rows) * k);
            let mut ys = y.slice_mut(r0 * n..(r0 + rows) * n);
            let mut dims = Dims {
                m: rows as u32,
                n: n as u32,
                k: k as u32,
                chunks_per_group: (self.w.group_len / super::weight::CHUNK) as u32,
                steps_per_split: k.div_ceil(MM_BK) as u32,
            };
            if !tiled {
                let name = format!("ql_gemv_u4_{suffix}_m{rows}");
                let cfg = launch_1d(n.div_ceil(gemv_rows_per_block(rows, T::DTYPE)) as u32, 256);
                let func = dev.get_or_load_custom_func(&name, MODULE, PTX)?;
                let mut b = func.builder();
                b.arg(&xs).arg(codes).arg(scales);
                match zeros {
                    Some(z) => b.arg(z),
                    None => b.arg(&null),
                };
                b.arg(&self.w.zero).arg(&dims).arg(&mut ys);
                // SAFETY: argument types and order match `GEMV_KERNEL` in `qmatmul.cu`; x
                // holds rows·k elements, y rows·n, the weight n·k codes with one scale (and
                // zero point) per group.
                debug_assert!(start + (r0 + rows) * k <= end);
                unsafe { b.launch(cfg) }.w()?;
                continue;
            }
            let (size, bm, bn, threads) = if rows <= SMALL_TILE_MAX_TOKENS {
                ("small", 16, 64, 128)
            } else {
                ("large", 64, 128, 256)
            };
            let tiles = n.div_ceil(bn) * rows.div_ceil(bm);
            let steps = k.div_ceil(MM_BK);
            let splits = TARGET_BLOCKS
                .div_ceil(tiles)
                .clamp(1, (k / 256).max(1))
                .min(steps);
            let steps_per_split = steps.div_ceil(splits);
            let splits = steps.div_ceil(steps_per_split);
            dims.steps_per_split = steps_per_split as u32;
            let partial = if splits > 1 {
                // SAFETY: each split writes its whole [rows, n] slab before the reduction.
                Some(unsafe { dev.alloc::<f32>(splits * rows * n) }?)
            } else {
                None
            };
            let cfg = LaunchConfig {
                grid_dim: (
                    n.div_ceil(bn) as u32,
                    rows.div_ceil(bm) as u32,
                    splits as u32,
                ),
                block_dim: (threads, 1, 1),
                shared_mem_bytes: 0,
            };
            let func =
                dev.get_or_load_custom_func(&format!("ql_mm_u4_{suffix}_{size}"), MODULE, PTX)?;
            let mut b = func.builder();
            b.arg(&xs).arg(codes).arg(scales);
            match zeros {
                Some(z) => b.arg(z),
                None => b.arg(&null),
            };
            b.arg(&self.w.zero).arg(&dims).arg(&mut ys);
            match &partial {
                Some(p) => b.arg(p),
                None => b.arg(&null),
            };
            // SAFETY: argument types and order match `MM_KERNEL` in `qmatmul.cu`; `partial`
            // holds splits·rows·n floats, the other buffers as for the GEMV.
            unsafe { b.launch(cfg) }.w()?;
            if let Some(p) = &partial {
                let mn = (rows * n) as u32;
                let func = dev.get_or_load_custom_func(
                    &format!("ql_splitk_reduce_{suffix}"),
                    MODULE,
                    PTX,
                )?;
                let cfg = launch_1d(mn.div_ceil(256), 256);
                let splits = splits as u32;
                let mut b = func.builder();
                b.arg(p).arg(&splits).arg(&mn).arg(&mut ys);
                // SAFETY: matches `SPLITK_REDUCE`; `p` holds splits·mn floats, y mn outputs.
                unsafe { b.launch(cfg) }.w()?;
            }
        }
        Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
    }
}

impl CustomOp1 for QMatmul<'_> {
    fn name(&self) -> &'static str {
        "quantlens-qmatmul"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("quantlens-qmatmul runs on CUDA only")
    }

    fn cuda_fwd(
        &self,
        storage: &CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let out = match layout.shape().dims().len() {
            2 => match storage_dtype(storage) {
                DType::F32 => self.launch::<f32>(storage, layout)?,
                DType::F16 => self.launch::<half::f16>(storage, layout)?,
                DType::BF16 => self.launch::<half::bf16>(storage, layout)?,
                other => candle_core::bail!("quantlens-qmatmul: unsupported dtype {other:?}"),
            },
            _ => candle_core::bail!("quantlens-qmatmul: activations must be [m, k]"),
        };
        Ok((out, Shape::from((self.m, self.w.rows))))
    }
}

fn storage_dtype(s: &CudaStorage) -> DType {
    use candle_core::backend::BackendStorage;
    s.dtype()
}

/// [`CudaQuantizedWeight::matmul`].
pub(crate) fn matmul(w: &CudaQuantizedWeight, x: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    let Some((&k, lead)) = dims.split_last() else {
        return Err(Error::RankMismatch {
            what: "activations",
            expected: 2,
            shape: dims.to_vec(),
        });
    };
    if k != w.cols {
        return Err(Error::ShapeMismatch(format!(
            "activations {dims:?} have {k} features, the weight [{}, {}] needs {}",
            w.rows, w.cols, w.cols
        )));
    }
    if !matches!(x.dtype(), DType::F32 | DType::F16 | DType::BF16) {
        return Err(Error::UnsupportedDType {
            what: "activations",
            dtype: x.dtype(),
        });
    }
    if !x.device().same_device(w.device()) {
        return Err(Error::UnsupportedDevice {
            op: "CudaQuantizedWeight::matmul",
            device: format!("{:?}", x.device().location()),
            hint: "move the activations to the weight's device first",
        });
    }
    let m: usize = lead.iter().product();
    if m == 0 {
        return Err(Error::EmptyTensor {
            what: "activations",
            shape: dims.to_vec(),
        });
    }
    let mut x2 = x.reshape((m, k))?.contiguous()?;
    // The kernels load 16 bytes at a time: a view starting mid-vector is copied.
    let offset = x2.layout().start_offset() * x2.dtype().size_in_bytes();
    if !offset.is_multiple_of(16) {
        x2 = x2.copy()?;
    }
    let fused = match x2.dtype() {
        DType::F32 => m <= GEMV_MAX_TOKENS,
        _ => m <= TILED_MAX_TOKENS,
    };
    let y = if fused {
        x2.apply_op1_no_bwd(&QMatmul { w, m })?
    } else {
        let wd = super::dequantize::dequantize_resident(w, x2.dtype())?;
        x2.matmul(&wd.t()?)?
    };
    let mut out_dims = lead.to_vec();
    out_dims.push(w.rows);
    Ok(y.reshape(out_dims)?)
}
