//! Reproduces "What makes quantization for large language models hard? An empirical study
//! from the lens of perturbation" (Gong et al., paper (b) in the crate's paper notes): which
//! properties of the quantization error hurt a language model?
//!
//! `bash scripts/fetch-fixtures.sh smollm2 python-docs`, then
//! `cargo run --release --example reproduce_perturbation [-- --quick] [--out DIR]`
//!
//! Two models: SmolLM2-135M (its Q4_1 checkpoint dequantized to f32, the reference) and a
//! small decoder trained here (2 blocks of width 192) on one half of the Python docs,
//! re-indexed to the 2,048 most frequent SmolLM2 tokens ([`CompactVocabulary`]). Perplexity on
//! held-out documents for four groups of rows:
//!
//! 1. **Weight and activation quantization**: W8A8 (int8 per-channel weights; int8 per-token
//!    or static per-tensor activations), W4A16 (per channel, groups of 64), W4A8, and
//!    activation-only W16A8 / W16A4.
//! 2. **Weights or activations, perturbed by Gaussian noise of the same relative size**
//!    `‖Δ‖ = ρ‖x‖`, ρ ∈ {1 %, 3 %, 10 %}, in every linear layer (weights) or every linear layer's
//!    input on every call (activations).
//! 3. **Shape and family of the noise, at the norm of 4-bit per-channel RTN's error, layer by
//!    layer**: Gaussian, uniform and Rademacher draws independent of |w|; Gaussian noise growing
//!    with |w| (M+) or shrinking with it (M−); and clipping the largest 0.1 % of |w|.
//! 4. **Uniform vs magnitude-aware 4-bit grids**: RTN, the paper's cube-root companding and
//!    NF4, per channel and in groups of 64.
//!
//! Writes `DIR/` (default `reproductions/perturbation`) `smollm2.md` and `decoder.md`.
//! `--quick` (CI): a one-block decoder, a few hundred training windows, 512 evaluation tokens,
//! and only the first row of each group for SmolLM2.

use std::fmt::Write as _;
use std::time::Instant;

use candle_core::{Device, Tensor};
use quantlens::model::{
    CaptureInputs, ForwardHook, LayerFilter, Llama, LlamaConfig, NoHooks, PerplexityConfig,
    PerturbActivations, QuantizableModel, QuantizeActivations, SequentialQuantization, StoreAs,
    TrainConfig, next_token_pairs, perplexity_hooked, train,
};
use quantlens::perturb::{Clip, Noise, perturb_weights};
use quantlens::quant::{ActivationFormat, CompandingQuantizer};
use quantlens::text::{CompactVocabulary, TokenWindows, Tokenizer, token_stream};
use quantlens::{Granularity, Nf4Quantizer, Perturbation, QuantSpec, Quantizer, UniformQuantizer};

#[path = "support/cli.rs"]
mod cli;
#[path = "support/smollm2.rs"]
mod smollm2;

const SEED: u64 = 20261125;

/// What a row does to the model before evaluation.
enum Change {
    None,
    Weights(Box<dyn Quantizer>),
    Perturb(Box<dyn Perturbation>),
}

/// What a row does during evaluation.
enum Activations {
    Full,
    PerToken(u8),
    StaticInt8,
    Noise(f64),
}

struct Row {
    group: &'static str,
    label: String,
    change: Change,
    activations: Activations,
}

fn row(group: &'static str, label: &str, change: Change, activations: Activations) -> Row {
    Row {
        group,
        label: label.to_string(),
        change,
        activations,
    }
}

fn rows() -> anyhow::Result<Vec<Row>> {
    use Activations as A;
    use Change as C;
    let rtn = |spec: QuantSpec| -> anyhow::Result<Box<dyn Quantizer>> {
        Ok(Box::new(UniformQuantizer::new(spec)?))
    };
    let int4_pc = UniformQuantizer::new(QuantSpec::int4().per_channel())?;
    let anchored = |n: quantlens::perturb::NoiseBuilder| -> Change {
        C::Perturb(Box::new(n.anchored_to(int4_pc.clone(), 1.0)))
    };
    let mut v = vec![
        row("1. W/A quantization", "full precision", C::None, A::Full),
        row(
            "1. W/A quantization",
            "W8A8 (per-token activations)",
            C::Weights(rtn(QuantSpec::int8().per_channel())?),
            A::PerToken(8),
        ),
        row(
            "1. W/A quantization",
            "W8A8 (static per-tensor activations)",
            C::Weights(rtn(QuantSpec::int8().per_channel())?),
            A::StaticInt8,
        ),
        row(
            "1. W/A quantization",
            "W4A16 (per channel)",
            C::Weights(rtn(QuantSpec::int4().per_channel())?),
            A::Full,
        ),
        row(
            "1. W/A quantization",
            "W4A16 (groups of 64)",
            C::Weights(rtn(QuantSpec::int4().per_group(64))?),
            A::Full,
        ),
        row(
            "1. W/A quantization",
            "W4A8 (per channel, per token)",
            C::Weights(rtn(QuantSpec::int4().per_channel())?),
            A::PerToken(8),
        ),
        row(
            "1. W/A quantization",
            "W4A8 (groups of 64, per token)",
            C::Weights(rtn(QuantSpec::int4().per_group(64))?),
            A::PerToken(8),
        ),
        row(
            "1. W/A quantization",
            "W16A8 (per token)",
            C::None,
            A::PerToken(8),
        ),
        row(
            "1. W/A quantization",
            "W16A4 (per token)",
            C::None,
            A::PerToken(4),
        ),
    ];
    for rho in [0.01, 0.03, 0.10] {
        v.push(row(
            "2. weights vs activations",
            &format!("weights, Gaussian ‖Δ‖ = {:.0}% ‖W‖", 100.0 * rho),
            C::Perturb(Box::new(Noise::gaussian().relative(rho))),
            A::Full,
        ));
        v.push(row(
            "2. weights vs activations",
            &format!("activations, Gaussian ‖Δ‖ = {:.0}% ‖x‖", 100.0 * rho),
            C::None,
            A::Noise(rho),
        ));
    }
    v.extend([
        row(
            "3. noise at RTN-4's norm",
            "RTN 4-bit per channel itself",
            C::Weights(Box::new(int4_pc.clone())),
            A::Full,
        ),
        row(
            "3. noise at RTN-4's norm",
            "Gaussian, plain",
            anchored(Noise::gaussian()),
            A::Full,
        ),
        row(
            "3. noise at RTN-4's norm",
            "uniform, plain",
            anchored(Noise::uniform()),
            A::Full,
        ),
        row(
            "3. noise at RTN-4's norm",
            "Rademacher, plain",
            anchored(Noise::rademacher()),
            A::Full,
        ),
        row(
            "3. noise at RTN-4's norm",
            "Gaussian, M+ (grows with |w|)",
            anchored(Noise::gaussian().magnitude_up()),
            A::Full,
        ),
        row(
            "3. noise at RTN-4's norm",
            "Gaussian, M− (shrinks with |w|)",
            anchored(Noise::gaussian().magnitude_down()),
            A::Full,
        ),
        row(
            "3. noise at RTN-4's norm",
            "clip the largest 0.1 % of |w|",
            C::Perturb(Box::new(Clip::fraction(0.001))),
            A::Full,
        ),
    ]);
    for (granularity, tag) in [
        (Granularity::PerChannel, "per channel"),
        (Granularity::PerGroup(64), "groups of 64"),
    ] {
        let spec = QuantSpec::int4().with_granularity(granularity);
        v.push(row(
            "4. 4-bit grids",
            &format!("uniform (RTN), {tag}"),
            C::Weights(rtn(spec)?),
            A::Full,
        ));
        v.push(row(
            "4. 4-bit grids",
            &format!("cube-root companding, {tag}"),
            C::Weights(Box::new(
                CompandingQuantizer::new(4)?.with_granularity(granularity),
            )),
            A::Full,
        ));
        v.push(row(
            "4. 4-bit grids",
            &format!("NF4, {tag}"),
            C::Weights(Box::new(Nf4Quantizer::new().with_granularity(granularity))),
            A::Full,
        ));
    }
    Ok(v)
}

/// Perplexity of every row on `tokens`; `calibration` feeds the static activation scales.
fn evaluate(
    model: &Llama,
    tokens: &[u32],
    config: PerplexityConfig,
    calibration: &[Tensor],
    rows: &[Row],
) -> anyhow::Result<String> {
    let mut capture = CaptureInputs::all();
    for b in calibration {
        model.forward_hooked(b, &mut capture)?;
    }
    let calibrations = capture.into_calibrations();
    let mut md = String::from(
        "| group | row | ‖ΔW‖/‖W‖ (mean over layers) | perplexity | vs full precision |\n|---|---|---|---|---|\n",
    );
    let mut reference = None;
    for r in rows {
        let t = Instant::now();
        let mut m = model.clone();
        let rel = match &r.change {
            Change::None => 0.0,
            Change::Weights(q) => {
                let report = SequentialQuantization::new(q.as_ref())
                    .store_as(StoreAs::FakeQuantized)
                    .run(&mut m)?;
                mean(report.layers.iter().map(|l| l.relative_error))
            }
            Change::Perturb(p) => {
                let report = perturb_weights(&mut m, p.as_ref(), &LayerFilter::All, SEED)?;
                mean(report.layers.iter().map(|l| l.relative))
            }
        };
        let mut hooks: Box<dyn ForwardHook> = match r.activations {
            Activations::Full => Box::new(NoHooks),
            Activations::PerToken(bits) => Box::new(QuantizeActivations::per_token(bits)?),
            Activations::StaticInt8 => Box::new(QuantizeActivations::static_per_layer(
                ActivationFormat::Int8,
                &calibrations,
            )?),
            Activations::Noise(rho) => Box::new(PerturbActivations::new(
                Noise::gaussian().relative(rho),
                SEED,
            )),
        };
        let ppl = perplexity_hooked(&m, tokens, config, hooks.as_mut())?.perplexity;
        let base = *reference.get_or_insert(ppl);
        writeln!(
            md,
            "| {} | {} | {rel:.4} | {ppl:.3} | {:+.1}% |",
            r.group,
            r.label,
            100.0 * (ppl / base - 1.0)
        )?;
        eprintln!("  {} ({:.0} s)", r.label, t.elapsed().as_secs_f64());
    }
    Ok(md)
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// The decoder trained here: SmolLM2's tokenizer, the calibration half of the docs re-indexed
/// to its 2,048 most frequent ids. Returns the model and the held-out tokens re-indexed the
/// same way.
fn train_decoder(
    o: &cli::Options,
    tok: &Tokenizer,
    eval_tokens: &[u32],
) -> anyhow::Result<(Llama, Vec<u32>, Vec<Tensor>, String)> {
    let dev = Device::Cpu;
    let (width, blocks, windows, epochs) = if o.quick {
        (192, 1, 256, 1)
    } else {
        (192, 2, 1536, 2)
    };
    const CONTEXT: usize = 128;
    let (_, train_docs) = smollm2::halves(SEED)?;
    let stream = token_stream(&train_docs, tok, tok.eos_id())?;
    let vocab = CompactVocabulary::most_frequent(&stream, 2048)?;
    let compact = vocab.encode(&stream);
    let data =
        TokenWindows::non_overlapping(CONTEXT + 1)?.sample_tensor(&compact, windows, SEED, &dev)?;
    let (x, y) = next_token_pairs(&data)?;
    let config = LlamaConfig::tiny(vocab.size(), width, blocks, 4, 2).max_seq_len(CONTEXT);
    let mut model = Llama::new(config, SEED, &dev)?;
    let t = Instant::now();
    let history = train(
        &mut model,
        (&x, &y),
        None,
        &TrainConfig::new(epochs, SEED)
            .batch_size(32)
            .learning_rate(3e-3),
    )?;
    let eval = vocab.encode(eval_tokens);
    let note = format!(
        "decoder: {blocks} blocks of width {width}, vocabulary {} (covers {:.1} % of the training tokens, {:.1} % of the held-out ones), {} linear parameters; {windows} windows of {CONTEXT} tokens, {epochs} epochs in {:.0} s, final training loss {:.3}",
        vocab.size(),
        100.0 * vocab.coverage(&stream),
        100.0 * vocab.coverage(eval_tokens),
        model.linear_parameters(),
        t.elapsed().as_secs_f64(),
        history.epochs.last().map_or(f64::NAN, |e| e.train_loss)
    );
    // Static activation scales calibrate on training windows (the model's own data).
    let calibration = vec![x.narrow(0, 0, 16.min(x.dim(0)?))?];
    Ok((model, eval, calibration, note))
}

fn main() -> anyhow::Result<()> {
    let o = cli::parse("reproductions/perturbation", "", |_, _| Ok(false))?;
    std::fs::create_dir_all(&o.out)?;
    let dev = Device::Cpu;
    let tok = Tokenizer::smollm2()?;
    let all_rows = rows()?;

    // The small decoder first: fast, and every row.
    let t0 = Instant::now();
    let eval_tokens = smollm2::eval_tokens(&tok, SEED, if o.quick { 4 } else { 32 }, 128)?;
    let (decoder, eval, calibration, note) = train_decoder(&o, &tok, &eval_tokens)?;
    let config = PerplexityConfig::new(128, 128).batch(8);
    let md = format!(
        "{note}; perplexity over {} held-out tokens\n\n{}",
        eval.len(),
        evaluate(&decoder, &eval, config, &calibration, &all_rows)?
    );
    std::fs::write(o.out.join("decoder.md"), &md)?;
    println!(
        "## The decoder trained here\n\n{md}\n(decoder: {:.0} s)\n",
        t0.elapsed().as_secs_f64()
    );

    // SmolLM2.
    let t0 = Instant::now();
    let model = Llama::smollm2(&dev)?;
    let (n_seq, seq_len) = if o.quick { (1, 512) } else { (4, 512) };
    let tokens = smollm2::eval_tokens(&tok, SEED, n_seq, seq_len)?;
    let calibration = smollm2::calibration_batches(&tok, SEED, 4, 256)?;
    let rows: Vec<Row> = if o.quick {
        // The first row of each group.
        let mut seen = std::collections::BTreeSet::new();
        all_rows
            .into_iter()
            .filter(|r| seen.insert(r.group))
            .collect()
    } else {
        all_rows
    };
    let config = PerplexityConfig::new(seq_len, seq_len).batch(4);
    let md = format!(
        "SmolLM2-135M (Q4_1 checkpoint dequantized); perplexity over {} held-out tokens\n\n{}",
        tokens.len(),
        evaluate(&model, &tokens, config, &calibration, &rows)?
    );
    std::fs::write(o.out.join("smollm2.md"), &md)?;
    println!(
        "## SmolLM2-135M\n\n{md}\n(SmolLM2: {:.0} s)",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
