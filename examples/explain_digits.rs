//! Does a quantized digits classifier explain itself the way the full-precision one does?
//!
//! `cargo run --release --example explain_digits`
//!
//! A 64-128-10 MLP trained on the UCI digits (embedded, seeded stratified 70/30 split, as in
//! `quantize_digits`), quantized per channel by RTN at 8/4/3 bits and by GPTQ at 4 bits
//! (calibrated on the training rows). On 200 test images:
//!
//! 1. attribution agreement with full precision: integrated gradients (64 midpoint steps,
//!    baseline = the all-zero standardised image, i.e. the training mean) and gradient × input
//!    of the full-precision model's predicted class; Spearman, Kendall τ-b, top-8 Jaccard and
//!    cosine, mean with a 95 % bootstrap interval;
//! 2. faithfulness of each model's own integrated gradients for its own prediction: deletion
//!    and insertion AUC, comprehensiveness and sufficiency at 10/20/50 % of the pixels;
//! 3. counterfactuals (elastic-net gradient search away from the prediction): those found on
//!    full precision checked on each quantized model, and each model's own counterfactuals'
//!    validity and size.

use std::time::Instant;

use candle_core::D;
use quantlens::explain::{
    AgreementSummary, Attributor, Baseline, Counterfactual, CounterfactualSummary, Faithfulness,
    FaithfulnessSummary, validity_on,
};
use quantlens::mis::{Bootstrap, Interval};
use quantlens::model::{Mlp, QuantizableModel, SequentialQuantization, StoreAs};
use quantlens::{GptqQuantizer, QuantSpec, Quantizer, UniformQuantizer};

#[path = "support/digits.rs"]
mod digits;

const SEED: u64 = 20261124;
/// Test images explained.
const N_EXPLAIN: usize = 200;
/// Pixels in the top-k overlap.
const TOP_K: usize = 8;

fn ci(i: Option<Interval>) -> String {
    i.map_or_else(String::new, |i| {
        format!(" [{:.3}, {:.3}]", i.lower, i.upper)
    })
}

fn main() -> anyhow::Result<()> {
    let start = Instant::now();
    let digits::DigitsClassifier {
        split,
        x_train,
        x_test,
        y_test,
        model: fp,
    } = digits::digits_classifier(SEED)?;
    let x = x_test.narrow(0, 0, N_EXPLAIN)?;

    let per_channel = |s: QuantSpec| s.per_channel().asymmetric();
    let schemes: Vec<Box<dyn Quantizer>> = vec![
        Box::new(UniformQuantizer::new(per_channel(QuantSpec::int8()))?),
        Box::new(UniformQuantizer::new(per_channel(QuantSpec::int4()))?),
        Box::new(UniformQuantizer::new(per_channel(QuantSpec::int3()))?),
        Box::new(GptqQuantizer::new(per_channel(QuantSpec::int4()))?),
    ];
    let mut models: Vec<(String, f64, Mlp)> = vec![("fp32".into(), 32.0, fp.clone())];
    for q in &schemes {
        let mut m = fp.clone();
        let report = SequentialQuantization::new(q.as_ref())
            .calibration([x_train.clone()])
            .store_as(StoreAs::FakeQuantized)
            .run(&mut m)?;
        models.push((q.name(), report.bits_per_weight(), m));
    }
    println!(
        "digits: {split}; {} trained 40 epochs; explaining {N_EXPLAIN} test images\n",
        fp.name()
    );

    let boot = Bootstrap::new(1000, 0.95, SEED)?;
    let ig = Attributor::integrated_gradients(64);
    let gxi = Attributor::gradient_times_input();
    let fp_classes = fp.forward(&x)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let fp_ig = digits::attributions(&ig, &fp, &x, &fp_classes)?;
    let fp_gxi = digits::attributions(&gxi, &fp, &x, &fp_classes)?;
    let search = digits::counterfactual_search();
    let fp_cfs = search.search(|b| fp.forward(b), &x)?;

    let mut agreement_rows = Vec::new();
    let mut faith_rows = Vec::new();
    let mut cf_rows = Vec::new();
    for (name, bits, model) in &models {
        let t = Instant::now();
        let pred = model
            .forward(&x_test)?
            .argmax(D::Minus1)?
            .to_vec1::<u32>()?;
        let acc =
            pred.iter().zip(&y_test).filter(|(p, y)| p == y).count() as f64 / y_test.len() as f64;
        // 1. Agreement with full precision on the full-precision model's prediction.
        let q_ig = digits::attributions(&ig, model, &x, &fp_classes)?;
        let a_ig = AgreementSummary::compare(&fp_ig, &q_ig, TOP_K, Some(&boot))?;
        let q_gxi = digits::attributions(&gxi, model, &x, &fp_classes)?;
        let a_gxi = AgreementSummary::compare(&fp_gxi, &q_gxi, TOP_K, Some(&boot))?;
        // 2. Faithfulness of the model's own attributions for its own prediction.
        let own_classes = model.forward(&x)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
        let own = digits::attributions(&ig, model, &x, &own_classes)?;
        let curves = own
            .iter()
            .enumerate()
            .map(|(i, a)| {
                Faithfulness::new().curves(|b| model.forward(b), &x.get(i)?, a, &Baseline::Zeros)
            })
            .collect::<quantlens::Result<Vec<_>>>()?;
        let faith = FaithfulnessSummary::of(&curves, Some(&boot))?;
        // 3. Counterfactuals: full precision's on this model, and this model's own.
        let transfer = validity_on(|b| model.forward(b), &x, &fp_cfs)?;
        let own_cfs: Vec<Counterfactual> = search.search(|b| model.forward(b), &x)?;
        let cf = CounterfactualSummary::of(&own_cfs, Some(&boot))?;
        let secs = t.elapsed().as_secs_f64();
        agreement_rows.push(format!(
            "| {name} | {bits:.2} | {:.2}% | {:.3}{} | {:.3}{} | {:.3}{} | {:.3}{} | {:.3} | {:.3} |",
            100.0 * acc,
            a_ig.spearman,
            ci(a_ig.spearman_ci),
            a_ig.kendall,
            ci(a_ig.kendall_ci),
            a_ig.top_k_jaccard,
            ci(a_ig.top_k_jaccard_ci),
            a_ig.cosine,
            ci(a_ig.cosine_ci),
            a_gxi.spearman,
            a_gxi.top_k_jaccard,
        ));
        faith_rows.push(format!(
            "| {name} | {:.3}{} | {:.3}{} | {:.3}{} | {:.3}{} |",
            faith.deletion_auc,
            ci(faith.deletion_auc_ci),
            faith.insertion_auc,
            ci(faith.insertion_auc_ci),
            faith.comprehensiveness,
            ci(faith.comprehensiveness_ci),
            faith.sufficiency,
            ci(faith.sufficiency_ci),
        ));
        cf_rows.push(format!(
            "| {name} | {:.3} ({}) | {:.3} | {:.3} | {:.2}{} | {:.2}{} | {:.0} | {secs:.1} s |",
            transfer.flip_rate,
            transfer.n,
            transfer.target_rate,
            cf.validity,
            cf.l1,
            ci(cf.l1_ci),
            cf.l2,
            ci(cf.l2_ci),
            cf.steps,
        ));
    }

    println!(
        "Attribution agreement with fp32 (IG, 64 steps; last two columns gradient × input):\n"
    );
    println!(
        "| scheme | bits/weight | test acc. | Spearman | Kendall τ-b | top-{TOP_K} Jaccard | cosine | G×I Spearman | G×I top-{TOP_K} |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    agreement_rows.iter().for_each(|r| println!("{r}"));
    println!(
        "\nFaithfulness of each model's own IG (deletion: lower is better; insertion: higher):\n"
    );
    println!("| scheme | deletion AUC | insertion AUC | comprehensiveness | sufficiency |");
    println!("|---|---|---|---|---|");
    faith_rows.iter().for_each(|r| println!("{r}"));
    println!("\nCounterfactuals (fp32's checked on each model; each model's own):\n");
    println!(
        "| scheme | fp32 CFs still flip (n) | … reach fp32's target | own CFs valid | own L1 | own L2 | mean steps | time |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    cf_rows.iter().for_each(|r| println!("{r}"));
    println!("\ntotal {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}
