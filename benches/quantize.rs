//! Quantize / dequantize throughput on a 4096×4096 f32 matrix (RTN and FP8), against Candle's own
//! `QTensor::quantize` (Q4_0, Q8_0) and a plain copy of the same bytes, in one run.
//!
//! Throughput is reported in bytes of f32 input (64 MiB) per second for every entry, so the
//! numbers compare directly. `python3 scripts/bench_table.py` prints the ratios.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use quantlens::{FloatQuantizer, Nf4Quantizer, QuantSpec, Quantizer, UniformQuantizer};
use std::hint::black_box;
use std::time::Duration;

const N: usize = 4096;

#[path = "support/matrix.rs"]
mod support;

fn matrix() -> Tensor {
    support::sine_matrix(N)
}

fn bench(c: &mut Criterion) {
    let w = matrix();
    let bytes = (N * N * 4) as u64;
    let mut g = c.benchmark_group("4096x4096_f32");
    g.throughput(Throughput::Bytes(bytes))
        .sample_size(20)
        .measurement_time(Duration::from_secs(6))
        .warm_up_time(Duration::from_secs(1));

    // (b) a plain copy of the same bytes, into a buffer allocated once, and into a fresh one
    // (what a dequantize that returns a new tensor must also pay).
    let src: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
    let mut dst = vec![0f32; src.len()];
    g.bench_function("copy/memcpy", |b| {
        b.iter(|| dst.copy_from_slice(black_box(&src)))
    });
    g.bench_function("copy/alloc+memcpy", |b| b.iter(|| black_box(&src).clone()));

    // quantlens: uniform RTN, the NF4 codebook and FP8 in the same run.
    let schemes: Vec<(&str, Box<dyn Quantizer>)> = vec![
        (
            "int4-g128-asym",
            Box::new(UniformQuantizer::new(QuantSpec::int4().per_group(128).asymmetric()).unwrap()),
        ),
        (
            "int4-g128-sym",
            Box::new(UniformQuantizer::new(QuantSpec::int4().per_group(128)).unwrap()),
        ),
        (
            "int8-channel-sym",
            Box::new(UniformQuantizer::new(QuantSpec::int8().per_channel()).unwrap()),
        ),
        ("nf4-g64", Box::new(Nf4Quantizer::new())),
        ("nf4-g64-dq", Box::new(Nf4Quantizer::new().double_quant())),
        // FP8 E4M3, one f32 scale per channel.
        ("fp8-e4m3-c", Box::new(FloatQuantizer::fp8_e4m3())),
    ];
    for (name, q) in &schemes {
        g.bench_with_input(BenchmarkId::new("quantlens/quantize", name), &w, |b, w| {
            b.iter(|| q.quantize(black_box(w), None).unwrap())
        });
        let qt = q.quantize(&w, None).unwrap();
        g.bench_with_input(
            BenchmarkId::new("quantlens/dequantize", name),
            &qt,
            |b, qt| b.iter(|| qt.dequantize(&Device::Cpu).unwrap()),
        );
        // Into a reused buffer: the kernel alone, comparable with copy/memcpy.
        g.bench_with_input(
            BenchmarkId::new("quantlens/dequantize_into", name),
            &qt,
            |b, qt| b.iter(|| qt.dequantize_into(black_box(&mut dst)).unwrap()),
        );
    }

    // (a) Candle's own quantizer on the same matrix.
    for (name, dtype) in [("q4_0", GgmlDType::Q4_0), ("q8_0", GgmlDType::Q8_0)] {
        g.bench_with_input(BenchmarkId::new("candle/quantize", name), &w, |b, w| {
            b.iter(|| QTensor::quantize(black_box(w), dtype).unwrap())
        });
        let qt = QTensor::quantize(&w, dtype).unwrap();
        g.bench_with_input(BenchmarkId::new("candle/dequantize", name), &qt, |b, qt| {
            b.iter(|| qt.dequantize(&Device::Cpu).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
