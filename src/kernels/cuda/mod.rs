//! The CUDA backend: our own kernels, compiled to PTX by nvcc at build time (`build.rs`) and
//! run through Candle [`CustomOp1`](candle_core::CustomOp1)s, so results stay ordinary
//! [`Tensor`](candle_core::Tensor)s on [`Device::Cuda`](candle_core::Device::Cuda).
//!
//! Every dequantize kernel reproduces the CPU backend bit for bit (same f32 operations, same
//! order, no FMA contraction), so a quantized model gives the same numbers wherever it is
//! decoded. The fused matmul and cross-entropy accumulate in f32/f64 and document their error.

mod cross_entropy;
mod dequantize;
mod qmatmul;
mod quantize;
mod quantize_resident;
mod quantize_scaled;
mod weight;

pub(crate) use cross_entropy::cross_entropy_rows;
pub use cross_entropy::{
    PendingLosses, cross_entropy_per_sample, cross_entropy_per_sample_deferred,
};
pub(crate) use dequantize::dequantize;
pub(crate) use quantize::quantize_uniform;
pub use quantize_resident::PendingQuantize;
pub(crate) use quantize_scaled::{group_absmax, quantize_float, quantize_table};
pub use weight::CudaQuantizedWeight;

use candle_core::cuda_backend::cudarc::driver::LaunchConfig;
use candle_core::{CudaStorage, Storage};

/// The CUDA storage behind a tensor's storage guard; an error for any other backend.
pub(crate) fn cuda_storage(s: &Storage) -> candle_core::Result<&CudaStorage> {
    match s {
        Storage::Cuda(cs) => Ok(cs),
        _ => candle_core::bail!("quantlens: expected a tensor on a CUDA device"),
    }
}

/// A one-dimensional launch: `blocks` blocks of `threads` threads, no dynamic shared memory.
pub(crate) fn launch_1d(blocks: u32, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}
