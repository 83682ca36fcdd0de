//! The CUDA backend: our own kernels, compiled to PTX by nvcc at build time (`build.rs`) and
//! run through Candle [`CustomOp1`](candle_core::CustomOp1)s, so results stay ordinary
//! [`Tensor`](candle_core::Tensor)s on [`Device::Cuda`](candle_core::Device::Cuda).
//!
//! Every kernel reproduces the CPU backend bit for bit (same f32 operations, same order, no
//! FMA contraction), so a quantized model gives the same numbers wherever it is decoded.

mod dequantize;
mod quantize;

pub(crate) use dequantize::dequantize;
pub(crate) use quantize::quantize_uniform;
