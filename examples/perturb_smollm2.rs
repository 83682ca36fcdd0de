//! Quantization through the lens of perturbation, on SmolLM2-135M: the perplexity cost of
//! weight noise with the same L2 norm as 4-bit per-channel RTN's error (layer by layer), in
//! three shapes — plain Gaussian, magnitude-proportional (M+) and inversely proportional (M−)
//! — next to RTN itself and to clipping the top 0.1% of |w| in every layer.
//!
//! The reference is SmolLM2's Q4_1 checkpoint dequantized to f32.
//!
//! `bash scripts/fetch-fixtures.sh smollm2 python-docs`, then
//! `cargo run --release --example perturb_smollm2 [-- --quick]`.

use candle_core::Device;
use quantlens::model::{
    LayerFilter, Llama, PerplexityConfig, SequentialQuantization, StoreAs, perplexity,
};
use quantlens::perturb::{Clip, Noise, perturb_weights};
use quantlens::text::Tokenizer;
use quantlens::{Perturbation, QuantSpec, Quantizer, UniformQuantizer};

#[path = "support/smollm2.rs"]
mod support;

const SEED: u64 = 20261125;

fn main() -> quantlens::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (n_eval, seq_len) = if quick { (4, 256) } else { (16, 512) };
    let dev = Device::Cpu;
    let model = Llama::smollm2(&dev)?;
    let tok = Tokenizer::smollm2()?;
    let tokens = support::eval_tokens(&tok, SEED, n_eval, seq_len)?;
    let config = PerplexityConfig::new(seq_len, seq_len).batch(4);
    let reference = perplexity(&model, &tokens, config)?;
    println!(
        "SmolLM2-135M (Q4_1 checkpoint dequantized): perplexity {:.3} over {} tokens\n",
        reference.perplexity, reference.tokens
    );

    let int4 = UniformQuantizer::new(QuantSpec::int4().per_channel())?;
    println!("| weights | ‖Δ‖/‖W‖ (mean over layers) | perplexity | vs reference |");
    println!("|---|---|---|---|");
    let row = |name: &str, rel: f64, ppl: f64| {
        println!(
            "| {name} | {rel:.4} | {ppl:.3} | {:+.1}% |",
            100.0 * (ppl / reference.perplexity - 1.0)
        );
    };

    let mut m = model.clone();
    let report = SequentialQuantization::new(&int4)
        .store_as(StoreAs::FakeQuantized)
        .run(&mut m)?;
    let rel =
        report.layers.iter().map(|l| l.relative_error).sum::<f64>() / report.layers.len() as f64;
    row(
        &int4.name(),
        rel,
        perplexity(&m, &tokens, config)?.perplexity,
    );

    let perturbations: Vec<Box<dyn Perturbation>> = vec![
        Box::new(Noise::gaussian().anchored_to(int4.clone(), 1.0)),
        Box::new(
            Noise::gaussian()
                .magnitude_up()
                .anchored_to(int4.clone(), 1.0),
        ),
        Box::new(
            Noise::gaussian()
                .magnitude_down()
                .anchored_to(int4.clone(), 1.0),
        ),
        Box::new(Clip::fraction(0.001)),
    ];
    for p in &perturbations {
        let mut m = model.clone();
        let report = perturb_weights(&mut m, p.as_ref(), &LayerFilter::All, SEED)?;
        let rel =
            report.layers.iter().map(|l| l.relative).sum::<f64>() / report.layers.len() as f64;
        row(&p.name(), rel, perplexity(&m, &tokens, config)?.perplexity);
    }
    Ok(())
}
