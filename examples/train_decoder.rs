//! A small Llama-family decoder trained here, from scratch, on a membership split of the Python
//! documentation (split by file, seeded), so that members and non-members are known: the
//! member/non-member loss gap, the loss-threshold membership attack (MIS, AUC, TPR at 1% FPR),
//! and what RTN quantization at 8, 4 and 3 bits does to both, with and without the token
//! embedding (`Llama::quantize_embedding`).
//!
//! The model uses SmolLM2's tokenizer (49,152 tokens, tied embeddings), 4 blocks of width 128.
//!
//! `bash scripts/fetch-fixtures.sh smollm2 python-docs`, then
//! `cargo run --release --example train_decoder [-- --quick]`.

use std::time::Instant;

use candle_core::{Device, Tensor};
use quantlens::mis::{Bootstrap, LossThreshold, MisEstimator};
use quantlens::model::{
    Llama, LlamaConfig, QuantizableModel, SequentialQuantization, StoreAs, TrainConfig,
    next_token_pairs, train,
};
use quantlens::text::{TextCorpus, TokenWindows, Tokenizer, token_stream};
use quantlens::{LossProbe, MembershipSample, QuantSpec, Quantizer, SequenceNll, UniformQuantizer};

const SEED: u64 = 20261125;
/// Tokens per training window (plus one for the shifted targets).
const CONTEXT: usize = 64;

/// `n` windows `[n, CONTEXT + 1]` drawn at random (seeded) from the whole token stream of one
/// side of the split, so that both sides sample their documents evenly.
fn windows(
    corpus: &TextCorpus,
    tok: &Tokenizer,
    n: usize,
    dev: &Device,
) -> quantlens::Result<Tensor> {
    let stream = token_stream(corpus, tok, tok.eos_id())?;
    TokenWindows::non_overlapping(CONTEXT + 1)?.sample_tensor(&stream, n, SEED, dev)
}

/// Mean next-token NLL of every window, in batches.
fn window_losses(model: &Llama, x: &Tensor, y: &Tensor) -> quantlens::Result<Vec<f64>> {
    let probe = SequenceNll::new();
    let n = x.dim(0)?;
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(32) {
        let len = 32.min(n - start);
        let logits = model.forward(&x.narrow(0, start, len)?)?;
        let l = probe.per_sample_losses(&logits, &y.narrow(0, start, len)?)?;
        out.extend(l.to_vec1::<f32>()?.into_iter().map(f64::from));
    }
    Ok(out)
}

fn main() -> quantlens::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (n_windows, epochs) = if quick { (32, 3) } else { (192, 12) };
    let dev = Device::Cpu;
    let tok = Tokenizer::smollm2()?;
    let corpus = TextCorpus::python_docs()?;
    let (member_docs, non_member_docs) = corpus.split_by_document(0.5, SEED)?;
    let (x_in, y_in) = next_token_pairs(&windows(&member_docs, &tok, n_windows, &dev)?)?;
    let (x_out, y_out) = next_token_pairs(&windows(&non_member_docs, &tok, n_windows, &dev)?)?;
    println!(
        "members: {n_windows} windows of {CONTEXT} tokens from {} documents; non-members: {n_windows} from {} others (seed {SEED})",
        member_docs.len(),
        non_member_docs.len()
    );

    let config = LlamaConfig::tiny(tok.vocab_size(), 128, 4, 4, 2).max_seq_len(CONTEXT);
    let mut model = Llama::new(config, SEED, &dev)?;
    let t = Instant::now();
    let history = train(
        &mut model,
        (&x_in, &y_in),
        Some((&x_out, &y_out)),
        &TrainConfig::new(epochs, SEED)
            .batch_size(16)
            .learning_rate(3e-3),
    )?;
    for e in &history.epochs {
        println!(
            "epoch {:>2}: member loss {:.3}, non-member loss {:.3}",
            e.epoch,
            e.train_loss,
            e.val_loss.unwrap_or(f64::NAN)
        );
    }
    println!(
        "trained {} ({} linear parameters) in {:.0} s\n",
        model.name(),
        model.linear_parameters(),
        t.elapsed().as_secs_f64()
    );

    // TPR at 1% FPR needs at least 100 non-members.
    let fprs: &[f64] = if n_windows >= 100 { &[0.01] } else { &[] };
    let threshold = LossThreshold::new()
        .with_fprs(fprs)
        .with_bootstrap(Bootstrap::new(1000, 0.95, SEED)?);
    // (linear layers, token embedding): quantizing the linear layers alone leaves the tied
    // embedding, where this model memorises, in full precision.
    let rtn = |spec: QuantSpec| UniformQuantizer::new(spec.per_channel());
    let schemes: Vec<(Option<UniformQuantizer>, Option<UniformQuantizer>)> = vec![
        (None, None),
        (Some(rtn(QuantSpec::int8())?), None),
        (Some(rtn(QuantSpec::int4().asymmetric())?), None),
        (Some(rtn(QuantSpec::int3().asymmetric())?), None),
        (None, Some(rtn(QuantSpec::int4().asymmetric())?)),
        (
            Some(rtn(QuantSpec::int4().asymmetric())?),
            Some(rtn(QuantSpec::int4().asymmetric())?),
        ),
        (
            Some(rtn(QuantSpec::int3().asymmetric())?),
            Some(rtn(QuantSpec::int3().asymmetric())?),
        ),
    ];
    println!("| scheme | member loss | non-member loss | gap | MIS [95% CI] | AUC | TPR@1% FPR |");
    println!("|---|---|---|---|---|---|---|");
    for (linear, embedding) in schemes {
        let mut m = model.clone();
        let mut names = Vec::new();
        if let Some(q) = &embedding {
            m.quantize_embedding(q)?;
            names.push(format!("embedding {}", q.name()));
        }
        if let Some(q) = &linear {
            SequentialQuantization::new(q)
                .store_as(StoreAs::FakeQuantized)
                .run(&mut m)?;
            names.insert(0, q.name());
        }
        let name = if names.is_empty() {
            "full precision".to_string()
        } else {
            names.join(" + ")
        };
        let members = window_losses(&m, &x_in, &y_in)?;
        let non_members = window_losses(&m, &x_out, &y_out)?;
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (lm, ln) = (mean(&members), mean(&non_members));
        let est = threshold.estimate(&MembershipSample::new(members, non_members)?)?;
        let ci = est.ci.map_or(String::new(), |c| {
            format!(" [{:.3}, {:.3}]", c.lower, c.upper)
        });
        println!(
            "| {name} | {lm:.3} | {ln:.3} | {:.3} | {:.3}{ci} | {:.3} | {:.3} |",
            ln - lm,
            est.mis,
            est.auc.map_or(f64::NAN, |a| a.value),
            est.tpr_at(0.01).map_or(f64::NAN, |t| t.tpr)
        );
    }
    Ok(())
}
