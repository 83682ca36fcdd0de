//! Reading K-quants: a 4096×4096 Q4_K tensor (Candle-quantized, in a GGUF file in memory)
//! decoded by quantlens (`read_gguf`: parse and turn the super-blocks into a
//! `QuantizedTensor`), then dequantized, against Candle's `QTensor::dequantize` of the same
//! blocks, in one run.
//!
//! Throughput is reported in bytes of f32 output (64 MiB) per second for every entry, so the
//! numbers compare directly.

use std::hint::black_box;
use std::io::Cursor;
use std::time::Duration;

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{Device, Tensor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quantlens::io::read_gguf;

const N: usize = 4096;

#[path = "support/matrix.rs"]
mod support;

fn matrix() -> Tensor {
    support::sine_matrix(N)
}

fn bench(c: &mut Criterion) {
    let q4k = QTensor::quantize(&matrix(), GgmlDType::Q4K).expect("Q4_K");
    let mut file = Cursor::new(Vec::new());
    gguf_file::write(&mut file, &[], &[("w", &q4k)]).expect("GGUF");
    let file = file.into_inner();
    let ours = read_gguf(&file).expect("read");
    let ours = ours
        .tensor("w")
        .and_then(|t| t.as_quantized())
        .expect("quantized")
        .clone();

    let mut g = c.benchmark_group("4096x4096_q4_k");
    g.throughput(Throughput::Bytes((N * N * 4) as u64))
        .sample_size(20)
        .measurement_time(Duration::from_secs(6))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("candle/dequantize", |b| {
        b.iter(|| {
            black_box(&q4k)
                .dequantize(&Device::Cpu)
                .expect("dequantize")
        })
    });
    g.bench_function("quantlens/dequantize", |b| {
        b.iter(|| {
            black_box(&ours)
                .dequantize(&Device::Cpu)
                .expect("dequantize")
        })
    });
    g.bench_function("quantlens/read_gguf", |b| {
        b.iter(|| read_gguf(black_box(&file)).expect("read"))
    });
    g.bench_function("quantlens/read_gguf+dequantize", |b| {
        b.iter(|| {
            let f = read_gguf(black_box(&file)).expect("read");
            let q = f.tensor("w").and_then(|t| t.as_quantized()).expect("q");
            q.dequantize(&Device::Cpu).expect("dequantize")
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
