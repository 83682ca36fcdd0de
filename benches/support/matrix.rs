//! The test matrix the CPU benches share (included with `#[path]`).

use candle_core::{Device, Tensor};

/// An `n × n` f32 matrix of a deterministic, Gaussian-like pattern (a sum of sines, every value
/// distinct): enough for throughput, and the same bytes on every run. (Candle's CPU RNG takes
/// no seed.)
pub fn sine_matrix(n: usize) -> Tensor {
    let data: Vec<f32> = (0..n * n)
        .map(|i| {
            let x = i as f32;
            (x * 0.618_034).sin() + 0.5 * (x * 0.414_213_5).sin() + 0.25 * (x * 0.732_050_8).sin()
        })
        .collect();
    Tensor::from_vec(data, (n, n), &Device::Cpu).expect("matrix")
}
