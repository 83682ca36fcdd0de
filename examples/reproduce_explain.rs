//! Reproduces "Through a compressed lens: investigating the impact of quantization on LLM
//! explainability and interpretability" (Wang et al., paper (c) in the crate's paper notes):
//! does quantization change explanations, and is the direction consistent across explanation
//! methods?
//!
//! `bash scripts/fetch-fixtures.sh smollm2 python-docs`, then
//! `cargo run --release --example reproduce_explain [-- --quick] [--out DIR]`
//!
//! Nine schemes: RTN and GPTQ at 8, 4 and 3 bits (per channel, asymmetric) and NormalFloat at
//! 8, 4 and 3 bits (blocks of 64: bitsandbytes' published NF4 table, and QLoRA's recipe at 8
//! and 3 bits, [`NormalFloatQuantizer`]).
//!
//! 1. **Digits classifier** (an MLP 64-128-10 on the embedded UCI digits; 200 held-out
//!    images): integrated-gradients and gradient × input agreement with full precision
//!    (Spearman, top-8 Jaccard), the share of full precision's minimal counterfactuals that
//!    still flip the quantized model, and the label-flip rate and size of the quantized
//!    model's own counterfactuals.
//! 2. **SmolLM2-135M** on the crate's 48 cloze facts: exact-match recall, the answer's
//!    log-probability, gradient × input agreement per prompt token, and the share of FFN
//!    neurons clearing full precision's top-300 contribution threshold.
//!
//! Then the question the paper raises: rank the schemes by every metric and compare the
//! orderings (Kendall τ-b between metrics; pairs of schemes whose order flips).
//!
//! Writes `DIR/` (default `reproductions/explain`) `digits.md`, `smollm2.md`, `orderings.md`.
//! `--quick` (CI): 50 images, 8 facts, RTN 4 / GPTQ 4 / NF4 only.

use std::fmt::Write as _;
use std::time::Instant;

use candle_core::{D, Device, Tensor};
use quantlens::explain::{
    AgreementSummary, Attribution, Attributor, CounterfactualSummary, FACTS, FactPrompt,
    NeuronRetention, NeuronRetentionSummary, NeuronScores, RecallSummary, Target, kendall_tau_b,
    recall, validity_on,
};
use quantlens::model::{CalibrationMode, Llama, QuantizableModel, SequentialQuantization, StoreAs};
use quantlens::quant::NormalFloatQuantizer;
use quantlens::text::Tokenizer;
use quantlens::{GptqQuantizer, Nf4Quantizer, QuantSpec, Quantizer, UniformQuantizer};

#[path = "support/cli.rs"]
mod cli;
#[path = "support/digits.rs"]
mod digits;
#[path = "support/ranks.rs"]
mod ranks;
#[path = "support/smollm2.rs"]
mod smollm2;

const SEED: u64 = 20261125;
/// Full precision's top FFN neurons per fact (the study's value).
const TOP_NEURONS: usize = 300;

fn schemes(quick: bool) -> anyhow::Result<Vec<Box<dyn Quantizer>>> {
    let pc = |s: QuantSpec| s.per_channel().asymmetric();
    let mut v: Vec<Box<dyn Quantizer>> = Vec::new();
    let bits: &[u8] = if quick { &[4] } else { &[8, 4, 3] };
    for &b in bits {
        v.push(Box::new(UniformQuantizer::new(pc(QuantSpec::new(b)))?));
    }
    for &b in bits {
        v.push(Box::new(GptqQuantizer::new(pc(QuantSpec::new(b)))?));
    }
    // NormalFloat, blocks of 64: the published NF4 table at 4 bits, the same recipe at 8 and 3.
    for &b in bits {
        if b == 4 {
            v.push(Box::new(Nf4Quantizer::new()));
        } else {
            v.push(Box::new(NormalFloatQuantizer::new(b)?));
        }
    }
    Ok(v)
}

/// One metric over the schemes: its name, and its value per scheme (higher = closer to full
/// precision).
type Column = (&'static str, Vec<f64>);

/// Every metric's ranking of the schemes, Kendall τ-b between every pair of metrics, and the
/// pairs of schemes whose order differs between them.
fn orderings(title: &str, names: &[String], cols: &[Column]) -> anyhow::Result<String> {
    let mut md = format!(
        "### {title}\n\nRank of each scheme under each metric (1 = closest to full precision):\n\n| scheme |"
    );
    for (c, _) in cols {
        write!(md, " {c} |")?;
    }
    write!(md, "\n|---|{}\n", "---|".repeat(cols.len()))?;
    let r: Vec<Vec<usize>> = cols.iter().map(|(_, v)| ranks::ranks(v)).collect();
    for (i, n) in names.iter().enumerate() {
        write!(md, "| {n} |")?;
        for rc in &r {
            write!(md, " {} |", rc[i])?;
        }
        writeln!(md)?;
    }
    writeln!(
        md,
        "\n| metric A | metric B | Kendall τ-b | scheme pairs ordered oppositely |\n|---|---|---|---|"
    )?;
    for a in 0..cols.len() {
        for b in a + 1..cols.len() {
            // Undefined when a metric ties every scheme (e.g. accuracy at 8 bits).
            let tau = kendall_tau_b(&cols[a].1, &cols[b].1)
                .map_or_else(|_| "– (constant)".to_string(), |t| format!("{t:.2}"));
            let mut flips = 0;
            let mut pairs = 0;
            for i in 0..names.len() {
                for j in i + 1..names.len() {
                    let da = cols[a].1[i] - cols[a].1[j];
                    let db = cols[b].1[i] - cols[b].1[j];
                    if da != 0.0 && db != 0.0 {
                        pairs += 1;
                        if (da > 0.0) != (db > 0.0) {
                            flips += 1;
                        }
                    }
                }
            }
            writeln!(
                md,
                "| {} | {} | {tau} | {flips} of {pairs} |",
                cols[a].0, cols[b].0
            )?;
        }
    }
    Ok(md)
}

fn digits(o: &cli::Options, names: &mut Vec<String>) -> anyhow::Result<(String, Vec<Column>)> {
    let n_explain = if o.quick { 50 } else { 200 };
    let digits::DigitsClassifier {
        split,
        x_train,
        x_test,
        y_test,
        model: fp,
    } = digits::digits_classifier(SEED)?;
    let x = x_test.narrow(0, 0, n_explain)?;
    let ig = Attributor::integrated_gradients(64);
    let gxi = Attributor::gradient_times_input();
    let fp_classes = fp.forward(&x)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let fp_ig = digits::attributions(&ig, &fp, &x, &fp_classes)?;
    let fp_gxi = digits::attributions(&gxi, &fp, &x, &fp_classes)?;
    let search = digits::counterfactual_search();
    let fp_cfs = search.search(|b| fp.forward(b), &x)?;
    let mut md = format!(
        "Digits: {split}; MLP 64-128-10, 40 epochs; {n_explain} held-out images explained.\n\n\
         | scheme | accuracy | IG Spearman | IG top-8 Jaccard | G×I Spearman | fp counterfactuals still valid | own counterfactuals: flip rate | own: mean L1 |\n\
         |---|---|---|---|---|---|---|---|\n"
    );
    let mut cols: Vec<Column> = vec![
        ("accuracy", vec![]),
        ("IG Spearman", vec![]),
        ("IG top-8 Jaccard", vec![]),
        ("G×I Spearman", vec![]),
        ("fp counterfactuals valid", vec![]),
        ("own counterfactual size: closeness to fp", vec![]),
    ];
    let fp_pred = fp.forward(&x_test)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let acc = |p: &[u32]| {
        p.iter().zip(&y_test).filter(|(a, b)| a == b).count() as f64 / y_test.len() as f64
    };
    let fp_own = CounterfactualSummary::of(&fp_cfs, None)?;
    writeln!(
        md,
        "| full precision | {:.4} | – | – | – | – | {:.3} | {:.2} |",
        acc(&fp_pred),
        fp_own.validity,
        fp_own.l1
    )?;
    for q in schemes(o.quick)? {
        let mut m = fp.clone();
        SequentialQuantization::new(q.as_ref())
            .calibration([x_train.clone()])
            .store_as(StoreAs::FakeQuantized)
            .run(&mut m)?;
        let pred = m.forward(&x_test)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
        let a_ig = AgreementSummary::compare(
            &fp_ig,
            &digits::attributions(&ig, &m, &x, &fp_classes)?,
            8,
            None,
        )?;
        let a_gxi = AgreementSummary::compare(
            &fp_gxi,
            &digits::attributions(&gxi, &m, &x, &fp_classes)?,
            8,
            None,
        )?;
        let transfer = validity_on(|b| m.forward(b), &x, &fp_cfs)?;
        let own = CounterfactualSummary::of(&search.search(|b| m.forward(b), &x)?, None)?;
        writeln!(
            md,
            "| {} | {:.4} | {:.4} | {:.3} | {:.4} | {:.3} | {:.3} | {:.2} |",
            q.name(),
            acc(&pred),
            a_ig.spearman,
            a_ig.top_k_jaccard,
            a_gxi.spearman,
            transfer.flip_rate,
            own.validity,
            own.l1
        )?;
        if !names.contains(&q.name()) {
            names.push(q.name());
        }
        for (c, v) in cols.iter_mut().zip([
            acc(&pred),
            a_ig.spearman,
            a_ig.top_k_jaccard,
            a_gxi.spearman,
            transfer.flip_rate,
            -(own.l1 - fp_own.l1).abs(),
        ]) {
            c.1.push(v);
        }
    }
    Ok((md, cols))
}

/// What SmolLM2 yields on the facts.
struct FactProbe {
    recall: RecallSummary,
    gxi: Vec<Attribution>,
    neurons: Vec<NeuronScores>,
}

fn probe(model: &Llama, facts: &[FactPrompt]) -> anyhow::Result<FactProbe> {
    let gxi = Attributor::gradient_times_input();
    let mut outcomes = Vec::new();
    let mut attributions = Vec::new();
    let mut neurons = Vec::new();
    for fact in facts {
        let answer = fact.answer_token();
        outcomes.push(recall(model, fact)?);
        attributions.push(gxi.attribute_tokens(
            model,
            &fact.prompt,
            Target::Class(answer as usize),
        )?);
        let ids = Tensor::from_slice(&fact.prompt, (1, fact.prompt.len()), model.device())?;
        neurons.push(NeuronScores::from_trace(
            model,
            &model.trace(&ids)?,
            answer,
        )?);
    }
    Ok(FactProbe {
        recall: RecallSummary::of(&outcomes, None)?,
        gxi: attributions,
        neurons,
    })
}

fn smollm2_part(o: &cli::Options) -> anyhow::Result<(String, Vec<Column>)> {
    let dev = Device::Cpu;
    let model = Llama::smollm2(&dev)?;
    let tok = Tokenizer::smollm2()?;
    let n_facts = if o.quick { 8 } else { FACTS.len() };
    let facts: Vec<FactPrompt> = FACTS[..n_facts]
        .iter()
        .map(|f| f.tokenize(&tok))
        .collect::<quantlens::Result<_>>()?;
    let calibration = smollm2::calibration_batches(&tok, SEED, 8, 256)?;
    let fp = probe(&model, &facts)?;
    let mut md = format!(
        "SmolLM2-135M-Instruct; {n_facts} cloze facts; GPTQ calibrated on 8 × 256 tokens of the Python docs, block by block through the quantized prefix.\n\n\
         | scheme | exact match | mean log p(answer) | G×I Spearman | G×I top-3 Jaccard | FFN neurons above fp's top-{TOP_NEURONS} threshold (÷ {TOP_NEURONS}) | quantize |\n\
         |---|---|---|---|---|---|---|\n| full precision | {:.3} | {:.3} | – | – | – | – |\n",
        fp.recall.exact_match, fp.recall.mean_log_prob
    );
    let mut cols: Vec<Column> = vec![
        ("fact exact match", vec![]),
        ("log p(answer)", vec![]),
        ("G×I Spearman", vec![]),
        ("G×I top-3 Jaccard", vec![]),
        ("neurons: closeness of the count to fp", vec![]),
    ];
    for q in schemes(o.quick)? {
        let t = Instant::now();
        let mut m = model.clone();
        SequentialQuantization::new(q.as_ref())
            .calibration(calibration.clone())
            .calibration_mode(CalibrationMode::Sequential)
            .store_as(StoreAs::FakeQuantized)
            .run(&mut m)?;
        let secs = t.elapsed().as_secs_f64();
        let p = probe(&m, &facts)?;
        let g = AgreementSummary::compare(&fp.gxi, &p.gxi, 3, None)?;
        let retained: Vec<NeuronRetention> = fp
            .neurons
            .iter()
            .zip(&p.neurons)
            .map(|(a, b)| NeuronRetention::new(a, b, TOP_NEURONS))
            .collect::<quantlens::Result<_>>()?;
        let n = NeuronRetentionSummary::of(&retained, None)?;
        writeln!(
            md,
            "| {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {secs:.0} s |",
            q.name(),
            p.recall.exact_match,
            p.recall.mean_log_prob,
            g.spearman,
            g.top_k_jaccard,
            n.retained
        )?;
        eprintln!("  {} done ({:.0} s)", q.name(), t.elapsed().as_secs_f64());
        for (c, v) in cols.iter_mut().zip([
            p.recall.exact_match,
            p.recall.mean_log_prob,
            g.spearman,
            g.top_k_jaccard,
            // Above 1 means more neurons clear the threshold than in full precision: also a
            // departure from it.
            -(n.retained - 1.0).abs(),
        ]) {
            c.1.push(v);
        }
    }
    Ok((md, cols))
}

fn main() -> anyhow::Result<()> {
    let o = cli::parse("reproductions/explain", "", |_, _| Ok(false))?;
    std::fs::create_dir_all(&o.out)?;
    let t0 = Instant::now();
    let mut names = Vec::new();
    let (digits_md, digits_cols) = digits(&o, &mut names)?;
    std::fs::write(o.out.join("digits.md"), &digits_md)?;
    println!(
        "## Digits\n\n{digits_md}\n(digits: {:.0} s)\n",
        t0.elapsed().as_secs_f64()
    );
    let t0 = Instant::now();
    let (llm_md, llm_cols) = smollm2_part(&o)?;
    std::fs::write(o.out.join("smollm2.md"), &llm_md)?;
    println!(
        "## SmolLM2\n\n{llm_md}\n(SmolLM2: {:.0} s)\n",
        t0.elapsed().as_secs_f64()
    );
    let md = format!(
        "{}\n{}",
        orderings("Digits", &names, &digits_cols)?,
        orderings("SmolLM2", &names, &llm_cols)?
    );
    std::fs::write(o.out.join("orderings.md"), &md)?;
    println!("## Do the metrics order the schemes alike?\n\n{md}");
    Ok(())
}
