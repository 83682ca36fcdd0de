//! SmolLM2-135M forward throughput: quantlens's `Llama` (every weight dequantized to f32, the
//! projections run through `LinearLayer`) against Candle's `quantized_llama` on the same GGUF
//! file — with its Q4_1 `QMatMul` (activations quantized to Q8_1 on the CPU) and with every
//! weight dequantized to f32 (what `CANDLE_DEQUANTIZE_ALL=1` selects) — in one run.
//!
//! * `prefill_1x128`: 128 prompt tokens into an empty KV cache, last position's logits (what
//!   Candle's `forward` returns). Ours also without a cache, all 128 positions' logits (what
//!   perplexity and training use).
//! * `decode_at_128`: one token after 128 cached ones, its logits.
//!
//! Throughput is in tokens per second. Needs the SmolLM2 fixture
//! (`scripts/fetch-fixtures.sh smollm2`).
//!
//! `cargo bench --bench llama`

use std::io::Cursor;

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use quantlens::model::{Llama, NoHooks, QuantizableModel};
use quantlens::rng::SplitMix64;
use std::hint::black_box;
use std::path::{Path, PathBuf};

const PROMPT: usize = 128;

fn fixture() -> PathBuf {
    quantlens::data::fixture_path("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        .expect("SmolLM2 fixture: run scripts/fetch-fixtures.sh smollm2")
}

fn prompt(vocab: usize) -> Vec<u32> {
    let mut rng = SplitMix64::new(7);
    (0..PROMPT)
        .map(|_| (rng.next_u64() % vocab as u64) as u32)
        .collect()
}

fn candle_q4(path: &Path) -> ModelWeights {
    let mut file = std::fs::File::open(path).expect("open gguf");
    let content = gguf_file::Content::read(&mut file).expect("read gguf");
    ModelWeights::from_gguf(content, &mut file, &Device::Cpu).expect("candle model")
}

/// Candle's model over the same file with every tensor dequantized to f32 first: F32 tensors
/// always take `QMatMul`'s dense path, as `CANDLE_DEQUANTIZE_ALL=1` would (that variable is
/// read into a thread-local, so an in-memory F32 copy of the file is the reliable route).
fn candle_f32(path: &Path) -> ModelWeights {
    let dev = Device::Cpu;
    let mut file = std::fs::File::open(path).expect("open gguf");
    let content = gguf_file::Content::read(&mut file).expect("read gguf");
    let tensors: Vec<(String, QTensor)> = content
        .tensor_infos
        .keys()
        .map(|name| {
            let q = content.tensor(&mut file, name, &dev).expect("tensor");
            let t = q.dequantize(&dev).expect("dequantize");
            (
                name.clone(),
                QTensor::quantize(&t, GgmlDType::F32).expect("f32"),
            )
        })
        .collect();
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut bytes = Cursor::new(Vec::new());
    gguf_file::write(&mut bytes, &metadata, &refs).expect("write f32 gguf");
    bytes.set_position(0);
    let content = gguf_file::Content::read(&mut bytes).expect("read f32 gguf");
    ModelWeights::from_gguf(content, &mut bytes, &dev).expect("candle f32 model")
}

fn bench(c: &mut Criterion) {
    let path = fixture();
    let ours = Llama::from_gguf(&path, &Device::Cpu).expect("quantlens model");
    let ids = prompt(ours.config().vocab_size);
    let x = Tensor::new(ids.as_slice(), &Device::Cpu)
        .and_then(|t| t.unsqueeze(0))
        .expect("ids");
    let next = Tensor::new(&[[ids[0]]], &Device::Cpu).expect("next id");
    let candles = [
        ("candle-q4_1-qmatmul", candle_q4(&path)),
        ("candle-f32-dequantized", candle_f32(&path)),
    ];

    let mut g = c.benchmark_group("smollm2_prefill_1x128");
    g.throughput(Throughput::Elements(PROMPT as u64))
        .sample_size(10);
    g.bench_function("quantlens-f32/kv-cache-last-logits", |b| {
        b.iter(|| {
            let mut cache = ours.kv_cache(PROMPT + 1).expect("cache");
            black_box(
                ours.forward_cached_last(&x, &mut cache, &mut NoHooks)
                    .expect("prefill"),
            )
        })
    });
    g.bench_function("quantlens-f32/forward-all-logits", |b| {
        b.iter(|| black_box(ours.forward(&x).expect("forward")))
    });
    for (name, model) in &candles {
        g.bench_function(*name, |b| {
            b.iter_batched(
                || model.clone(),
                |mut m| black_box(m.forward(&x, 0).expect("candle prefill")),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();

    let mut g = c.benchmark_group("smollm2_decode_at_128");
    g.throughput(Throughput::Elements(1)).sample_size(10);
    let mut cache = ours.kv_cache(PROMPT + 1).expect("cache");
    ours.forward_cached_last(&x, &mut cache, &mut NoHooks)
        .expect("prefill");
    g.bench_function("quantlens-f32", |b| {
        b.iter(|| {
            // Always position 128: rewind the cache to the prompt after each step.
            cache.truncate(PROMPT);
            black_box(
                ours.forward_cached_last(&next, &mut cache, &mut NoHooks)
                    .expect("decode"),
            )
        })
    });
    for (name, model) in &candles {
        let mut prefilled = model.clone();
        prefilled.forward(&x, 0).expect("candle prefill");
        g.bench_function(*name, |b| {
            // A clone shares the weights and the cached tensors (Arc), and Candle's step
            // concatenates into new tensors, so every step starts from the same 128 positions.
            b.iter_batched(
                || prefilled.clone(),
                |mut m| black_box(m.forward(&next, PROMPT).expect("candle decode")),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
