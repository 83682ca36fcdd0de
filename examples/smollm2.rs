//! SmolLM2-135M-Instruct end to end: perplexity on the Python documentation, greedy generation,
//! and whole-model quantization layer by layer (RTN, and GPTQ calibrated sequentially) with a
//! progress bar.
//!
//! The reference weights are a **Q4_1 checkpoint** (the only SmolLM2 that ships in a package we
//! can reach), dequantized to f32: "full precision" below means that dequantized model, and
//! 4-bit grids of 32-wide groups would realign with its rounding. So 4-bit results are quoted
//! per channel and 3-bit results with groups of 64 (576, the hidden size, is not a multiple of
//! 128).
//!
//! `bash scripts/fetch-fixtures.sh smollm2 python-docs`, then
//! `cargo run --release --example smollm2 [-- --quick]`.

use std::time::Instant;

use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};
use quantlens::model::{
    CalibrationMode, GenerateConfig, Llama, PerplexityConfig, QuantizableModel, Sampling,
    SequentialQuantization, StoreAs, perplexity,
};
use quantlens::text::Tokenizer;
use quantlens::{GptqQuantizer, QuantSpec, Quantizer, UniformQuantizer};

/// Seed of the document order (evaluation and calibration documents are disjoint halves).
#[path = "support/smollm2.rs"]
mod support;

const DOC_SEED: u64 = 20261125;

fn main() -> quantlens::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (n_eval, seq_len, n_calib) = if quick { (4, 256, 4) } else { (64, 512, 32) };
    let dev = Device::Cpu;

    let t = Instant::now();
    let model = Llama::smollm2(&dev)?;
    let tok = Tokenizer::smollm2()?;
    println!(
        "SmolLM2-135M-Instruct loaded in {:.1} s; reference weights: {} (dequantized to f32)",
        t.elapsed().as_secs_f64(),
        model
            .source_formats()
            .map_or_else(|| "unknown".to_string(), |f| f.summary())
    );

    // Evaluation and calibration text: disjoint halves of a seeded document order.
    let eval_tokens = support::eval_tokens(&tok, DOC_SEED, n_eval, seq_len)?;
    let calib_batches = support::calibration_batches(&tok, DOC_SEED, n_calib, seq_len)?;
    let ppl_config = PerplexityConfig::new(seq_len, seq_len).batch(4);

    let prompt = "<|im_start|>user\nWhat is the capital of France, and why is it famous?<|im_end|>\n<|im_start|>assistant\n";
    let prompt_ids = tok.encode(prompt)?;
    let stop: Vec<u32> = tok.eos_id().into_iter().collect();
    let generate = |m: &Llama| -> quantlens::Result<String> {
        let ids = m.generate(
            &prompt_ids,
            &GenerateConfig::new(48)
                .sampling(Sampling::Greedy)
                .stop_tokens(&stop),
        )?;
        tok.decode_skipping_special(&ids)
    };

    let t = Instant::now();
    let fp = perplexity(&model, &eval_tokens, ppl_config)?;
    let fp_secs = t.elapsed().as_secs_f64();
    println!(
        "full precision: perplexity {:.3} over {} tokens ({} x {seq_len}) in {fp_secs:.1} s ({:.0} tokens/s)",
        fp.perplexity,
        fp.tokens,
        n_eval,
        eval_tokens.len() as f64 / fp_secs
    );
    println!("greedy: {:?}", generate(&model)?);

    let per_channel4 = QuantSpec::int4().per_channel().asymmetric();
    let g64_3 = QuantSpec::int3().per_group(64).asymmetric();
    let schemes: Vec<Box<dyn Quantizer>> = vec![
        Box::new(UniformQuantizer::new(per_channel4)?),
        Box::new(UniformQuantizer::new(g64_3)?),
        Box::new(GptqQuantizer::new(per_channel4)?),
        Box::new(GptqQuantizer::new(g64_3)?),
    ];
    println!();
    println!("| scheme | bits/weight | perplexity | quantize time | evaluation time |");
    println!("|---|---|---|---|---|");
    println!(
        "| full precision (dequantized Q4_1) | 32 | {:.3} | – | {fp_secs:.0} s |",
        fp.perplexity
    );
    let mut generations = Vec::new();
    for q in &schemes {
        let mut m = model.clone();
        let bar = ProgressBar::new(m.layer_names().len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>28} {bar:40} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(q.name());
        let t = Instant::now();
        let report = SequentialQuantization::new(q.as_ref())
            .calibration(calib_batches.clone())
            // Sequential (the default): each stage calibrated through the quantized blocks
            // before it, one block per stage (see examples/sequential_calibration.rs).
            .calibration_mode(CalibrationMode::Sequential)
            .store_as(StoreAs::FakeQuantized)
            .on_progress(|layer| {
                bar.set_message(layer.name.clone());
                bar.inc(1);
            })
            .run(&mut m)?;
        bar.finish_and_clear();
        let q_secs = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let ppl = perplexity(&m, &eval_tokens, ppl_config)?;
        println!(
            "| {} | {:.3} | {:.3} | {q_secs:.1} s | {:.0} s |",
            q.name(),
            report.bits_per_weight(),
            ppl.perplexity,
            t.elapsed().as_secs_f64()
        );
        generations.push((q.name(), generate(&m)?));
    }
    println!();
    for (name, text) in generations {
        println!("{name}: {text:?}");
    }
    Ok(())
}
