//! GPTQ wall time (4-bit, groups of 128, asymmetric, with and without act-order) against RTN on
//! the same matrix in the same run, for three layer shapes: 384×1536 and 1536×384 (a small
//! transformer's MLP) and 4096×4096 (a 7B model's attention projection).
//!
//! The Hessian comes from correlated calibration inputs: an AR(1) process along the features
//! (`x_j = 0.9·x_{j−1} + √0.19·z_j`) with a few loud channels, `in + 512` samples, built once
//! outside the timing. Each GPTQ iteration includes everything `quantize` does: reading the
//! Hessian, damping, Cholesky, triangular inverse, the sweep and packing.
//!
//! `cargo bench --bench gptq`

use candle_core::{Device, Tensor};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use quantlens::rng::SplitMix64;
use quantlens::{Calibration, GptqQuantizer, QuantSpec, Quantizer, UniformQuantizer};
use std::hint::black_box;
use std::time::Duration;

fn weights(rows: usize, cols: usize, seed: u64) -> Tensor {
    let mut rng = SplitMix64::new(seed);
    let w: Vec<f32> = (0..rows * cols)
        .map(|_| (rng.normal() * 0.02) as f32)
        .collect();
    Tensor::from_vec(w, (rows, cols), &Device::Cpu).expect("weights")
}

fn calibration(cols: usize, seed: u64) -> Calibration {
    let mut rng = SplitMix64::new(seed);
    let n = cols + 512;
    let mut calib = Calibration::new(cols);
    // In batches, to keep the activations small.
    for start in (0..n).step_by(1024) {
        let rows = 1024.min(n - start);
        let mut x = vec![0f32; rows * cols];
        for row in x.chunks_mut(cols) {
            let mut prev = 0f64;
            for (j, v) in row.iter_mut().enumerate() {
                prev = 0.9 * prev + 0.19f64.sqrt() * rng.normal();
                let loud = if j % 97 == 0 { 10.0 } else { 1.0 };
                *v = (prev * loud) as f32;
            }
        }
        let x = Tensor::from_vec(x, (rows, cols), &Device::Cpu).expect("inputs");
        calib.observe(&x).expect("calibration");
    }
    calib
}

fn bench(c: &mut Criterion) {
    let spec = QuantSpec::int4().per_group(128).asymmetric();
    let rtn = UniformQuantizer::new(spec).unwrap();
    let gptq = GptqQuantizer::new(spec).unwrap();
    let gptq_act = gptq.clone().act_order(true);
    for (rows, cols, secs) in [(384, 1536, 5), (1536, 384, 5), (4096, 4096, 30)] {
        let w = weights(rows, cols, 1);
        let calib = calibration(cols, 2);
        let mut g = c.benchmark_group(format!("{rows}x{cols}"));
        g.sample_size(10)
            .measurement_time(Duration::from_secs(secs))
            .warm_up_time(Duration::from_secs(1));
        let entries: [(&str, &dyn Quantizer); 3] = [
            ("rtn-w4-g128-asym", &rtn),
            ("gptq-w4-g128-asym", &gptq),
            ("gptq-w4-g128-asym-actorder", &gptq_act),
        ];
        for (name, q) in entries {
            g.bench_with_input(BenchmarkId::new("quantize", name), &w, |b, w| {
                b.iter(|| q.quantize(black_box(w), Some(&calib)).unwrap())
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
