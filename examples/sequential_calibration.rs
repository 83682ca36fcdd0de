//! What GPTQ's sequential calibration costs on SmolLM2-135M, three ways:
//!
//! 1. `CalibrationMode::FullPrecision`: every layer calibrated on the full-precision model's
//!    inputs, captured in one pass (cheap, but blind to earlier layers' errors);
//! 2. `CalibrationMode::Sequential` on the model as a `BlockChain`: each block's inputs cached,
//!    each stage runs its block alone;
//! 3. the same sequential recipe with the block chain hidden, so every stage re-runs the
//!    model's prefix (what any `QuantizableModel` without `as_block_chain` gets).
//!
//! 2 and 3 give the same weights bit for bit (checked here); the example prints the times and
//! the held-out perplexities.
//!
//! `bash scripts/fetch-fixtures.sh smollm2 python-docs`, then
//! `cargo run --release --example sequential_calibration [-- --quick]`.

use std::time::Instant;

use candle_core::{Device, Tensor};
use quantlens::model::{
    CalibrationMode, ForwardHook, LayerWeight, LinearLayer, Llama, PerplexityConfig,
    QuantizableModel, SequentialQuantization, StoreAs, perplexity,
};
use quantlens::text::Tokenizer;
use quantlens::{GptqQuantizer, QuantSpec, Quantizer};

#[path = "support/smollm2.rs"]
mod support;

/// Seed of the document order (evaluation and calibration documents are disjoint halves).
const DOC_SEED: u64 = 20261125;

/// A model with its block chain hidden: sequential calibration re-runs the prefix per stage.
struct PrefixOnly(Llama);

impl QuantizableModel for PrefixOnly {
    fn linear_layers(&self) -> Vec<&LinearLayer> {
        self.0.linear_layers()
    }

    fn linear_layer_mut(&mut self, name: &str) -> Option<&mut LinearLayer> {
        self.0.linear_layer_mut(name)
    }

    fn forward_hooked(
        &self,
        input: &Tensor,
        hooks: &mut dyn ForwardHook,
    ) -> quantlens::Result<Tensor> {
        self.0.forward_hooked(input, hooks)
    }

    fn quantization_stages(&self) -> Vec<Vec<String>> {
        self.0.quantization_stages()
    }
}

fn weights(model: &impl QuantizableModel) -> quantlens::Result<Vec<Tensor>> {
    model
        .linear_layers()
        .iter()
        .map(|l| match l.weight() {
            LayerWeight::Dense(t) => Ok(t.clone()),
            LayerWeight::Packed(_) => l.dense_weight(),
        })
        .collect()
}

fn main() -> quantlens::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (n_eval, seq_len, n_calib) = if quick { (2, 256, 4) } else { (16, 512, 16) };
    let dev = Device::Cpu;
    let model = Llama::smollm2(&dev)?;
    let tok = Tokenizer::smollm2()?;
    let eval_tokens = support::eval_tokens(&tok, DOC_SEED, n_eval, seq_len)?;
    let calib = support::calibration_batches(&tok, DOC_SEED, n_calib, seq_len)?;
    let ppl_config = PerplexityConfig::new(seq_len, seq_len).batch(4);
    let gptq = GptqQuantizer::new(QuantSpec::int3().per_group(64).asymmetric())?;
    let run = |m: &mut dyn QuantizableModel, mode| -> quantlens::Result<f64> {
        let t = Instant::now();
        SequentialQuantization::new(&gptq)
            .calibration(calib.clone())
            .calibration_mode(mode)
            .store_as(StoreAs::FakeQuantized)
            .run(m)?;
        Ok(t.elapsed().as_secs_f64())
    };
    println!(
        "{} on SmolLM2-135M: calibration {n_calib} x {seq_len} tokens, perplexity on {} held-out tokens\n",
        gptq.name(),
        eval_tokens.len()
    );
    println!("| calibration | quantize time | perplexity |");
    println!("|---|---|---|");
    let mut upfront = model.clone();
    let secs = run(&mut upfront, CalibrationMode::FullPrecision)?;
    let ppl = perplexity(&upfront, &eval_tokens, ppl_config)?.perplexity;
    println!("| full-precision inputs, one pass | {secs:.1} s | {ppl:.3} |");
    let mut blockwise = model.clone();
    let block_secs = run(&mut blockwise, CalibrationMode::Sequential)?;
    let ppl = perplexity(&blockwise, &eval_tokens, ppl_config)?.perplexity;
    println!("| sequential, block by block (cached block inputs) | {block_secs:.1} s | {ppl:.3} |");
    let mut prefix = PrefixOnly(model.clone());
    let prefix_secs = run(&mut prefix, CalibrationMode::Sequential)?;
    let ppl = perplexity(&prefix.0, &eval_tokens, ppl_config)?.perplexity;
    println!("| sequential, prefix re-run per stage | {prefix_secs:.1} s | {ppl:.3} |");

    let same = weights(&blockwise)?
        .iter()
        .zip(weights(&prefix.0)?)
        .map(|(a, b)| Ok(a.eq(&b)?.min_all()?.to_scalar::<u8>()? == 1))
        .collect::<quantlens::Result<Vec<bool>>>()?
        .into_iter()
        .all(|s| s);
    println!(
        "\nblock-wise vs prefix: {:.1}x faster; weights identical: {same}",
        prefix_secs / block_secs
    );
    if !same {
        return Err(quantlens::Error::Unsupported(
            "block-wise and prefix calibration disagree".into(),
        ));
    }
    Ok(())
}
