//! Set-up shared by the digits explanation examples: the classifier under study, its
//! attributions and its counterfactual search.

use candle_core::{Device, Tensor};
use quantlens::data::{self, MembershipSplit, StandardizeOptions, Standardizer};
use quantlens::explain::{Attribution, Attributor, CounterfactualSearch, Target};
use quantlens::model::{Mlp, MlpConfig, QuantizableModel, TrainConfig, train};

/// An MLP 64-128-10 trained 40 epochs on a seeded, stratified 70 % of the UCI digits
/// (standardised on those rows), and the held-out 30 %.
pub struct DigitsClassifier {
    pub split: MembershipSplit,
    pub x_train: Tensor,
    pub x_test: Tensor,
    pub y_test: Vec<u32>,
    pub model: Mlp,
}

/// Trains the classifier with `seed` (split and training).
pub fn digits_classifier(seed: u64) -> anyhow::Result<DigitsClassifier> {
    let dev = Device::Cpu;
    let digits = data::digits()?;
    let labels = digits.labels().unwrap_or_default().to_vec();
    let split = MembershipSplit::builder(digits.len())
        .members(digits.len() * 7 / 10)
        .stratify(&labels)
        .seed(seed)
        .build()?;
    let options = StandardizeOptions::default().drop_constant(false);
    let z = Standardizer::fit_with(&digits, split.members(), options)?.transform(&digits)?;
    let (x_train, y_train) = z.select(split.members())?.to_tensors(&dev)?;
    let (x_test, y_test) = z.select(split.non_members())?.to_tensors(&dev)?;
    let mut model = Mlp::new(MlpConfig::new(z.n_features(), &[128], 10), seed, &dev)?;
    train(
        &mut model,
        (&x_train, &y_train),
        None,
        &TrainConfig::new(40, seed).batch_size(32),
    )?;
    Ok(DigitsClassifier {
        split,
        x_train,
        x_test,
        y_test: y_test.to_vec1::<u32>()?,
        model,
    })
}

/// Attributions of every row of `x` for the given classes.
pub fn attributions(
    method: &Attributor,
    model: &Mlp,
    x: &Tensor,
    classes: &[u32],
) -> anyhow::Result<Vec<Attribution>> {
    let targets: Vec<Target> = classes.iter().map(|&c| Target::Class(c as usize)).collect();
    Ok(method.attribute_rows(|b| model.forward(b), x, &targets)?)
}

/// Minimal counterfactuals: step 0.05, up to 1000 steps, L1 penalty 0.01.
pub fn counterfactual_search() -> CounterfactualSearch {
    CounterfactualSearch::new()
        .step_size(0.05)
        .max_steps(1000)
        .penalties(0.01, 0.0)
}
