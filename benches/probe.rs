//! Per-example cross-entropy: quantlens's fused CPU kernel against Candle's
//! `log_softmax` + `gather` on the same logits, and against the bandwidth floor (a copy and a
//! parallel sum of the same bytes), in one run.
//!
//! Two shapes: a language-model batch `[256, 50257]` (GPT-2 vocabulary, 51 MB of f32) and a
//! classifier batch `[4096, 10]`. Throughput is in bytes of f32 logits per second (for the
//! bf16 entries too: same elements, half the bytes), so entries of one group compare directly.
//!
//! `cargo bench --bench probe -- --warm-up-time 1 --measurement-time 5`

use candle_core::{D, DType, Device, Tensor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quantlens::rng::SplitMix64;
use quantlens::{CrossEntropy, LossProbe};
use rayon::prelude::*;
use std::hint::black_box;

fn logits(rows: usize, cols: usize) -> (Tensor, Tensor) {
    let mut rng = SplitMix64::new(42);
    let x: Vec<f32> = (0..rows * cols)
        .map(|_| (rng.normal() * 3.0) as f32)
        .collect();
    let t: Vec<u32> = (0..rows)
        .map(|_| (rng.next_u64() % cols as u64) as u32)
        .collect();
    (
        Tensor::from_vec(x, (rows, cols), &Device::Cpu).expect("logits"),
        Tensor::from_vec(t, rows, &Device::Cpu).expect("targets"),
    )
}

/// Candle's per-example cross-entropy: what `candle_nn::loss::cross_entropy` does before
/// taking the mean.
fn candle_ce(logits: &Tensor, targets: &Tensor) -> Tensor {
    candle_nn::ops::log_softmax(logits, D::Minus1)
        .and_then(|l| l.gather(&targets.unsqueeze(1)?, 1))
        .and_then(|g| g.squeeze(1)?.neg())
        .expect("candle cross-entropy")
}

fn bench_shape(c: &mut Criterion, rows: usize, cols: usize) {
    let (x, t) = logits(rows, cols);
    let mut g = c.benchmark_group(format!("ce_{rows}x{cols}_f32"));
    g.throughput(Throughput::Bytes((rows * cols * 4) as u64))
        .sample_size(20);

    // The floor: every byte read once (copied, or summed on every core).
    let src: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    let mut dst = vec![0f32; src.len()];
    g.bench_function("floor/memcpy", |b| {
        b.iter(|| dst.copy_from_slice(black_box(&src)))
    });
    g.bench_function("floor/parallel-sum", |b| {
        b.iter(|| {
            black_box(&src)
                .par_chunks(16 * 1024)
                .map(|c| {
                    // Eight lanes so the sum vectorises like the kernels do.
                    let mut acc = [0f32; 8];
                    for v in c.chunks_exact(8) {
                        for k in 0..8 {
                            acc[k] += v[k];
                        }
                    }
                    acc.iter().sum::<f32>()
                })
                .sum::<f32>()
        })
    });

    let ce = CrossEntropy::new();
    g.bench_function("quantlens/cross_entropy", |b| {
        b.iter(|| ce.per_sample_losses(black_box(&x), &t).unwrap())
    });
    g.bench_function("candle/log_softmax+gather", |b| {
        b.iter(|| candle_ce(black_box(&x), &t))
    });
    if cols > 1000 {
        let xb = x.to_dtype(DType::BF16).unwrap();
        g.bench_function("quantlens/cross_entropy_bf16", |b| {
            b.iter(|| ce.per_sample_losses(black_box(&xb), &t).unwrap())
        });
        g.bench_function("candle/log_softmax+gather_bf16", |b| {
            b.iter(|| candle_ce(black_box(&xb), &t))
        });
    }
    g.finish();
}

fn bench(c: &mut Criterion) {
    bench_shape(c, 256, 50_257);
    bench_shape(c, 4096, 10);
}

criterion_group!(benches, bench);
criterion_main!(benches);
