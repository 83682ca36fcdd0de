//! Train an MLP and a logistic-regression baseline on a real table, members only, and watch the
//! generalisation gap (members' loss below non-members') open as the MLP overfits.
//!
//! `cargo run --release --example train_tabular -- [digits|b3db|breast_cancer|wine]`
//!
//! Digits is embedded; the others come from `scripts/fetch-fixtures.sh`.

use std::time::Instant;

use candle_core::Device;
use quantlens::data::{self, MembershipSplit, Standardizer, TabularData};
use quantlens::model::{Mlp, MlpConfig, TrainConfig, evaluate, train};

const SEED: u64 = 20261124;

struct Setup {
    hidden: Vec<usize>,
    epochs: usize,
    lr: f64,
    batch: usize,
}

fn main() -> anyhow::Result<()> {
    let which = std::env::args().nth(1).unwrap_or_else(|| "digits".into());
    let (table, setup): (TabularData, Setup) = match which.as_str() {
        "digits" => (
            data::digits()?,
            Setup {
                hidden: vec![128],
                epochs: 60,
                lr: 1e-3,
                batch: 32,
            },
        ),
        "b3db" => (
            data::b3db_classification()?,
            Setup {
                hidden: vec![128],
                epochs: 30,
                lr: 1e-3,
                batch: 128,
            },
        ),
        "breast_cancer" => (
            data::breast_cancer()?,
            Setup {
                hidden: vec![64],
                epochs: 150,
                lr: 1e-3,
                batch: 16,
            },
        ),
        "wine" => (
            data::wine()?,
            Setup {
                hidden: vec![64],
                epochs: 150,
                lr: 1e-3,
                batch: 8,
            },
        ),
        other => anyhow::bail!("unknown data set {other}: digits, b3db, breast_cancer or wine"),
    };
    let dev = Device::Cpu;
    let labels = table.labels().map(<[u32]>::to_vec).unwrap_or_default();
    let split = MembershipSplit::builder(table.len())
        .stratify(&labels)
        .seed(SEED)
        .build()?;
    println!(
        "{}: {} features; split {split}",
        table.name(),
        table.n_features()
    );

    let t0 = Instant::now();
    let scaler = Standardizer::fit(&table, split.members())?;
    let z = scaler.transform(&table)?;
    let (x_mem, y_mem) = z.select(split.members())?.to_tensors(&dev)?;
    let (x_non, y_non) = z.select(split.non_members())?.to_tensors(&dev)?;
    let classes = z.n_classes().unwrap_or(1);
    println!(
        "preprocessing: {} of {} features kept, {} missing cells imputed, {:.1} s",
        z.n_features(),
        table.n_features(),
        table.select(split.members())?.missing_values(),
        t0.elapsed().as_secs_f64()
    );

    // Multinomial logistic regression = an MLP with no hidden layer, L2 via weight decay.
    let t0 = Instant::now();
    let mut logreg = Mlp::new(MlpConfig::new(z.n_features(), &[], classes), SEED, &dev)?;
    let cfg = TrainConfig::new(100, SEED)
        .batch_size(setup.batch)
        .learning_rate(1e-2)
        .weight_decay(1e-2);
    train(&mut logreg, (&x_mem, &y_mem), None, &cfg)?;
    let lr_eval = evaluate(&logreg, &x_non, &y_non)?;
    println!(
        "logistic regression: held-out accuracy {:.2}% (ECE {:.3}), {:.1} s",
        100.0 * lr_eval.accuracy,
        lr_eval.ece,
        t0.elapsed().as_secs_f64()
    );

    let t0 = Instant::now();
    let mut mlp = Mlp::new(
        MlpConfig::new(z.n_features(), &setup.hidden, classes),
        SEED,
        &dev,
    )?;
    let cfg = TrainConfig::new(setup.epochs, SEED)
        .batch_size(setup.batch)
        .learning_rate(setup.lr)
        .weight_decay(0.0);
    let history = train(&mut mlp, (&x_mem, &y_mem), Some((&x_non, &y_non)), &cfg)?;
    let secs = t0.elapsed().as_secs_f64();
    println!("\n{}: {} epochs in {secs:.1} s", mlp.name(), setup.epochs);
    println!("| epoch | member loss | non-member loss | gap |");
    println!("|---|---|---|---|");
    let every = (setup.epochs / 10).max(1);
    for log in history
        .epochs
        .iter()
        .filter(|l| l.epoch == 1 || l.epoch % every == 0)
    {
        let v = log.val_loss.unwrap_or(f64::NAN);
        println!(
            "| {} | {:.4} | {:.4} | {:.4} |",
            log.epoch,
            log.train_loss,
            v,
            v - log.train_loss
        );
    }
    let (mem, non) = (
        evaluate(&mlp, &x_mem, &y_mem)?,
        evaluate(&mlp, &x_non, &y_non)?,
    );
    println!(
        "\nMLP: member accuracy {:.2}%, held-out accuracy {:.2}% (ECE {:.3}); logistic regression {:.2}%",
        100.0 * mem.accuracy,
        100.0 * non.accuracy,
        non.ece,
        100.0 * lr_eval.accuracy
    );
    Ok(())
}
