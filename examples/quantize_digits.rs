//! Quantize a small MLP trained on real handwritten digits, and see what each scheme costs.
//!
//! `cargo run --release --example quantize_digits`
//!
//! Trains a 64-128-10 MLP on the UCI digits (embedded in the crate, 1,797 images, a seeded
//! stratified 70/30 split), then quantizes it layer by layer with a range of uniform schemes
//! and reports, per scheme: true storage in bits per weight, relative weight error, test
//! accuracy, and how many test predictions agree with the full-precision model.

use candle_core::{D, Device, Tensor};
use quantlens::data::{self, MembershipSplit, StandardizeOptions, Standardizer};
use quantlens::model::{
    Mlp, MlpConfig, QuantizableModel, SequentialQuantization, TrainConfig, train,
};
use quantlens::{QuantSpec, UniformQuantizer};

const SEED: u64 = 20261124;

fn predictions(model: &Mlp, x: &Tensor) -> anyhow::Result<Vec<u32>> {
    Ok(model.forward(x)?.argmax(D::Minus1)?.to_vec1::<u32>()?)
}

fn agreement(a: &[u32], b: &[u32]) -> f64 {
    a.iter().zip(b).filter(|(p, q)| p == q).count() as f64 / a.len() as f64
}

fn main() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let digits = data::digits()?;
    let labels = digits.labels().unwrap_or_default().to_vec();
    let n_train = digits.len() * 7 / 10;
    let split = MembershipSplit::builder(digits.len())
        .members(n_train)
        .stratify(&labels)
        .seed(SEED)
        .build()?;
    // Scaling statistics come from the training rows only. Always-blank pixels are kept (as
    // zeros) so the first layer stays 64 wide, a multiple of the group size.
    let options = StandardizeOptions::default().drop_constant(false);
    let z = Standardizer::fit_with(&digits, split.members(), options)?.transform(&digits)?;
    let (x_train, y_train) = z.select(split.members())?.to_tensors(&dev)?;
    let (x_test, y_test) = z.select(split.non_members())?.to_tensors(&dev)?;
    let y_test = y_test.to_vec1::<u32>()?;

    let mut mlp = Mlp::new(MlpConfig::new(z.n_features(), &[128], 10), SEED, &dev)?;
    train(
        &mut mlp,
        (&x_train, &y_train),
        None,
        &TrainConfig::new(40, SEED).batch_size(32),
    )?;
    let fp_pred = predictions(&mlp, &x_test)?;
    println!(
        "digits: {split}\n{}, full-precision test accuracy {:.2}%\n",
        mlp.name(),
        100.0 * agreement(&fp_pred, &y_test)
    );

    let specs = [
        QuantSpec::int8().per_channel(),
        QuantSpec::int4().per_group(32),
        QuantSpec::int4().per_group(32).asymmetric(),
        QuantSpec::int4().per_channel(),
        QuantSpec::int4().per_tensor(),
        QuantSpec::int4().per_group(32).stochastic(SEED),
        QuantSpec::int3().per_group(32).asymmetric(),
        QuantSpec::int2().per_group(32).asymmetric(),
        QuantSpec::binary().per_group(32),
    ];
    println!(
        "| scheme | bits/weight | rel. weight error (per layer) | test accuracy | agrees with fp32 |"
    );
    println!("|---|---|---|---|---|");
    for spec in specs {
        let quantizer = UniformQuantizer::new(spec)?;
        let mut quantized = mlp.clone();
        let report = SequentialQuantization::new(&quantizer).run(&mut quantized)?;
        let errors: Vec<String> = report
            .layers
            .iter()
            .map(|l| format!("{:.2}%", 100.0 * l.relative_error))
            .collect();
        let pred = predictions(&quantized, &x_test)?;
        println!(
            "| {} | {:.3} | {} | {:.2}% | {:.2}% |",
            report.quantizer,
            report.bits_per_weight(),
            errors.join(" / "),
            100.0 * agreement(&pred, &y_test),
            100.0 * agreement(&pred, &fp_pred)
        );
    }
    Ok(())
}
