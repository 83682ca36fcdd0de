//! Does quantized SmolLM2-135M still know its facts, explain its answers the same way, and
//! keep the neurons and layers that carry them?
//!
//! `bash scripts/fetch-fixtures.sh smollm2 python-docs`, then
//! `cargo run --release --example explain_smollm2 [-- --quick]`.
//!
//! Full precision (the Q4_1 checkpoint dequantized to f32, see `examples/smollm2.rs`) against
//! RTN at 8/4/3 bits per channel and GPTQ at 4 bits per channel (calibrated on 8 × 256 tokens
//! of the Python documentation), on the crate's 48 cloze facts (`explain::FACTS`):
//!
//! 1. fact recall: greedy exact match and the teacher-forced log-probability of the answer;
//! 2. attribution agreement with full precision: gradient × input and integrated gradients
//!    (64 midpoint steps; baseline: the first token kept — SmolLM2's attention sink — and
//!    " the" at every other position) of the first answer token's logit at the last prompt
//!    position, per prompt token; Spearman, Kendall τ-b, top-3 Jaccard, cosine, mean with a
//!    95 % bootstrap interval, and the median completeness error of each model's IG (the
//!    path is rough on this model: read IG agreement with that column in mind);
//! 3. FFN neurons: how many of each model's neurons clear full precision's top-300
//!    contribution threshold for the answer token;
//! 4. the logit lens: the answer's mean log-probability after every block.

use std::time::Instant;

use candle_core::Device;
use quantlens::explain::{
    AgreementSummary, Attribution, Attributor, Baseline, FACTS, FactCategory, FactOutcome,
    FactPrompt, IntegratedGradients, LogitLens, LogitLensSummary, Method, NeuronRetention,
    NeuronRetentionSummary, NeuronScores, RecallSummary, Target, recall,
};
use quantlens::mis::{Bootstrap, Interval};
use quantlens::model::{CalibrationMode, Llama, SequentialQuantization, StoreAs};
use quantlens::text::{TextCorpus, TokenWindows, Tokenizer, token_stream};
use quantlens::{GptqQuantizer, QuantSpec, Quantizer, UniformQuantizer};

/// Seed of the document order and of the bootstrap.
const SEED: u64 = 20261125;
/// Neurons in full precision's top set (the study's value).
const TOP_NEURONS: usize = 300;
/// Tokens in the top-k overlap.
const TOP_TOKENS: usize = 3;

fn ci(i: Option<Interval>) -> String {
    i.map_or_else(String::new, |i| {
        format!(" [{:.3}, {:.3}]", i.lower, i.upper)
    })
}

/// What one model yields on the facts.
struct Probe {
    outcomes: Vec<FactOutcome>,
    ig: Vec<Attribution>,
    gxi: Vec<Attribution>,
    neurons: Vec<NeuronScores>,
    lenses: Vec<LogitLens>,
    secs: f64,
}

fn probe(
    model: &Llama,
    facts: &[FactPrompt],
    ig: &IntegratedGradients,
    pad: u32,
) -> anyhow::Result<Probe> {
    let t = Instant::now();
    let gxi = Attributor::gradient_times_input();
    let mut p = Probe {
        outcomes: Vec::new(),
        ig: Vec::new(),
        gxi: Vec::new(),
        neurons: Vec::new(),
        lenses: Vec::new(),
        secs: 0.0,
    };
    for fact in facts {
        let answer = fact.answer_token();
        let target = Target::Class(answer as usize);
        p.outcomes.push(recall(model, fact)?);
        // Baseline: the first token kept (SmolLM2's attention sink; interpolating it makes
        // the path jump), " the" everywhere else.
        let mut base_ids = vec![pad; fact.prompt.len()];
        base_ids[0] = fact.prompt[0];
        let ids = candle_core::Tensor::from_slice(&base_ids, (1, base_ids.len()), model.device())?;
        let baseline = Baseline::Input(model.embed(&ids)?.squeeze(0)?);
        let method = Method::IntegratedGradients(ig.clone().baseline(baseline));
        p.ig.push(Attributor::new(method).attribute_tokens(model, &fact.prompt, target)?);
        p.gxi
            .push(gxi.attribute_tokens(model, &fact.prompt, target)?);
        let trace = model.trace(&candle_core::Tensor::from_slice(
            &fact.prompt,
            (1, fact.prompt.len()),
            model.device(),
        )?)?;
        p.neurons
            .push(NeuronScores::from_trace(model, &trace, answer)?);
        p.lenses.push(LogitLens::from_trace(model, &trace, answer)?);
    }
    p.secs = t.elapsed().as_secs_f64();
    Ok(p)
}

fn main() -> anyhow::Result<()> {
    let start = Instant::now();
    let quick = std::env::args().any(|a| a == "--quick");
    let dev = Device::Cpu;
    let model = Llama::smollm2(&dev)?;
    let tok = Tokenizer::smollm2()?;
    let n_facts = if quick { 8 } else { FACTS.len() };
    let chosen = &FACTS[..n_facts];
    let facts: Vec<FactPrompt> = chosen
        .iter()
        .map(|f| f.tokenize(&tok))
        .collect::<quantlens::Result<_>>()?;
    let pad = tok
        .token_to_id("Ġthe")
        .ok_or_else(|| anyhow::anyhow!("no token \" the\""))?;
    let ig = IntegratedGradients::new(if quick { 16 } else { 64 }).batch(32);
    let boot = Bootstrap::new(1000, 0.95, SEED)?;
    let prompt_tokens: usize = facts.iter().map(|f| f.prompt.len()).sum();
    println!(
        "SmolLM2-135M-Instruct; {n_facts} facts ({prompt_tokens} prompt tokens); IG {} midpoint steps, baseline: first token kept, \" the\" (id {pad}) elsewhere",
        ig.steps
    );

    // GPTQ calibration: 8 windows of 256 tokens from the Python documentation.
    let corpus = TextCorpus::python_docs()?.shuffled(SEED);
    let (_, calib_docs) = corpus.split_by_document(0.5, SEED)?;
    let stream = token_stream(&calib_docs, &tok, tok.eos_id())?;
    let calib = TokenWindows::non_overlapping(256)?.sample_tensor(&stream, 8, SEED, &dev)?;
    let calib_batches = vec![calib.narrow(0, 0, 4)?, calib.narrow(0, 4, 4)?];

    let per_channel = |s: QuantSpec| s.per_channel().asymmetric();
    let schemes: Vec<Box<dyn Quantizer>> = vec![
        Box::new(UniformQuantizer::new(per_channel(QuantSpec::int8()))?),
        Box::new(UniformQuantizer::new(per_channel(QuantSpec::int4()))?),
        Box::new(UniformQuantizer::new(per_channel(QuantSpec::int3()))?),
        Box::new(GptqQuantizer::new(per_channel(QuantSpec::int4()))?),
    ];

    let fp = probe(&model, &facts, &ig, pad)?;
    let mut runs: Vec<(String, f64, f64, Probe)> = Vec::new();
    for q in &schemes {
        let t = Instant::now();
        let mut m = model.clone();
        let report = SequentialQuantization::new(q.as_ref())
            .calibration(calib_batches.clone())
            .calibration_mode(CalibrationMode::Sequential)
            .store_as(StoreAs::FakeQuantized)
            .run(&mut m)?;
        let q_secs = t.elapsed().as_secs_f64();
        let p = probe(&m, &facts, &ig, pad)?;
        eprintln!(
            "{}: quantized in {q_secs:.1} s, probed in {:.1} s",
            q.name(),
            p.secs
        );
        runs.push((q.name(), report.bits_per_weight(), q_secs, p));
    }

    let categories = [
        FactCategory::Capital,
        FactCategory::ElementSymbol,
        FactCategory::Author,
        FactCategory::Language,
    ];
    let all: Vec<(&str, f64, f64, &Probe)> = std::iter::once(("full precision", 32.0, 0.0, &fp))
        .chain(runs.iter().map(|(n, b, s, p)| (n.as_str(), *b, *s, p)))
        .collect();

    println!("\nFact recall ({n_facts} facts; exact match per category in the middle columns):\n");
    println!(
        "| scheme | bits/weight | exact match | first token | mean log p(answer) | {} | quantize | probe |",
        categories.map(|c| c.name()).join(" | ")
    );
    println!(
        "|---|---|---|---|---|{}---|---|",
        "---|".repeat(categories.len())
    );
    for (name, bits, q_secs, p) in &all {
        let s = RecallSummary::of(&p.outcomes, Some(&boot))?;
        let per_cat: Vec<String> = categories
            .iter()
            .map(|c| {
                let hits: Vec<bool> = chosen
                    .iter()
                    .zip(&p.outcomes)
                    .filter(|(f, _)| f.category == *c)
                    .map(|(_, o)| o.exact_match)
                    .collect();
                let n = hits.len();
                format!("{}/{n}", hits.into_iter().filter(|&h| h).count())
            })
            .collect();
        println!(
            "| {name} | {bits:.2} | {:.3}{} | {:.3} | {:.3}{} | {} | {q_secs:.1} s | {:.1} s |",
            s.exact_match,
            ci(s.exact_match_ci),
            s.first_token_match,
            s.mean_log_prob,
            ci(s.mean_log_prob_ci),
            per_cat.join(" | "),
            p.secs
        );
    }

    println!(
        "\nAttribution agreement with full precision (per prompt token; gradient × input, then IG):\n"
    );
    println!(
        "| scheme | G×I Spearman | G×I Kendall τ-b | G×I top-{TOP_TOKENS} Jaccard | G×I cosine | IG Spearman | IG top-{TOP_TOKENS} Jaccard | IG cosine | IG completeness error (median) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (i, (name, _, _, p)) in all.iter().enumerate() {
        let completeness: Vec<f64> = p.ig.iter().filter_map(|a| a.completeness_error()).collect();
        if i == 0 {
            println!(
                "| {name} | – | – | – | – | – | – | – | {:.3} |",
                median(&completeness)
            );
            continue;
        }
        let a = AgreementSummary::compare(&fp.ig, &p.ig, TOP_TOKENS, Some(&boot))?;
        let g = AgreementSummary::compare(&fp.gxi, &p.gxi, TOP_TOKENS, Some(&boot))?;
        println!(
            "| {name} | {:.3}{} | {:.3}{} | {:.3}{} | {:.3}{} | {:.3}{} | {:.3} | {:.3} | {:.3} |",
            g.spearman,
            ci(g.spearman_ci),
            g.kendall,
            ci(g.kendall_ci),
            g.top_k_jaccard,
            ci(g.top_k_jaccard_ci),
            g.cosine,
            ci(g.cosine_ci),
            a.spearman,
            ci(a.spearman_ci),
            a.top_k_jaccard,
            a.cosine,
            median(&completeness)
        );
    }

    let layers = fp.lenses[0].log_probs.len();
    let thirds = [
        (0, layers / 3),
        (layers / 3, 2 * layers / 3),
        (2 * layers / 3, layers),
    ];
    println!(
        "\nFFN neurons clearing full precision's top-{TOP_NEURONS} threshold for the answer token (share of {TOP_NEURONS}; by thirds of the depth):\n"
    );
    println!(
        "| scheme | retained | blocks {}–{} | blocks {}–{} | blocks {}–{} |",
        thirds[0].0,
        thirds[0].1 - 1,
        thirds[1].0,
        thirds[1].1 - 1,
        thirds[2].0,
        thirds[2].1 - 1
    );
    println!("|---|---|---|---|---|");
    for (name, _, _, p) in &all {
        let r: Vec<NeuronRetention> = fp
            .neurons
            .iter()
            .zip(&p.neurons)
            .map(|(a, b)| NeuronRetention::new(a, b, TOP_NEURONS))
            .collect::<quantlens::Result<_>>()?;
        let s = NeuronRetentionSummary::of(&r, Some(&boot))?;
        let third = |(lo, hi): (usize, usize)| -> String {
            let (got, reference): (usize, usize) = r.iter().fold((0, 0), |acc, x| {
                (
                    acc.0 + x.per_layer[lo..hi].iter().sum::<usize>(),
                    acc.1 + x.reference_per_layer[lo..hi].iter().sum::<usize>(),
                )
            });
            format!("{got} / {reference}")
        };
        println!(
            "| {name} | {:.3}{} | {} | {} | {} |",
            s.retained,
            ci(s.retained_ci),
            third(thirds[0]),
            third(thirds[1]),
            third(thirds[2])
        );
    }

    println!("\nLogit lens: mean log p(answer) after each block (top-1 share in parentheses):\n");
    let summaries: Vec<LogitLensSummary> = all
        .iter()
        .map(|(_, _, _, p)| LogitLensSummary::of(&p.lenses))
        .collect::<quantlens::Result<_>>()?;
    println!(
        "| block | {} |",
        all.iter().map(|a| a.0).collect::<Vec<_>>().join(" | ")
    );
    println!("|---|{}", "---|".repeat(all.len()));
    for l in 0..layers {
        let cells: Vec<String> = summaries
            .iter()
            .map(|s| format!("{:.2} ({:.2})", s.mean_log_prob[l], s.top1_rate[l]))
            .collect();
        println!("| {l} | {} |", cells.join(" | "));
    }
    println!(
        "| mean of last 5 | {} |",
        summaries
            .iter()
            .map(|s| format!("{:.2}", s.last_layers_mean(5)))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("\ntotal {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        f64::NAN
    } else {
        s[s.len() / 2]
    }
}
