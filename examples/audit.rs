//! The privacy–utility audit of quantization on real data: the crate's headline workflow.
//!
//! `cargo run --release --example audit`
//!
//! An MLP (64-256-10) is trained to overfit on a seeded, stratified half of the UCI digits
//! (embedded in the crate; the members), the other half held out (the non-members), three
//! times on three seeded splits. Each model is then quantized by 11 schemes — RTN 8/4/3/2-bit,
//! NF4, FP8 E4M3, FP4 E2M1, MXFP4, GPTQ 4-bit, AWQ 4-bit — and perturbed by three Gaussian
//! noises matched in norm to RTN 4-bit's error (plain, magnitude-up, magnitude-down). Every
//! row gets the loss-threshold attack's MIS with a 95 % interval, AUC, TPR at 1 % FPR,
//! held-out accuracy, true bits per weight, model size and per-layer weight error, and
//! explanation columns: gradient × input agreement with the full-precision model (Spearman,
//! Kendall, top-8 overlap, cosine) and the share of the full-precision model's minimal
//! counterfactuals that still flip the quantized model (100 held-out digits).
//!
//! Writes `audit-report/`: the report aggregated over the three trainings (`report.json`,
//! `.csv`, `.md`, `frontier.svg`, `roc.svg`, `losses.svg`), the rows of each training in
//! `audit-report/per-training/`, and prints the Markdown table.
//!
//! Options:
//! - `--shard i/n`: measure only rows `i, i + n, …` of the plan and write
//!   `audit-report/shards/shard-i-of-n.json`; `--merge` then combines every shard in that
//!   folder into the same report an unsharded run writes (see `docs/scaling.md`);
//! - `--trainings K` (default 3), `--jobs J` (rows measured at once, default 2), `--seed S`,
//!   `--out DIR` (default `audit-report`).
//!
//! An interrupted run leaves `checkpoint.json` (or the shard's checkpoint) behind; running the
//! same command again resumes from it without recomputing finished rows.

use std::path::{Path, PathBuf};

use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};
use quantlens::audit::{
    Audit, AuditData, AuditEvent, AuditReport, Shard, Utility, UtilityMetric, WriteOptions,
};
use quantlens::data::{self, MembershipSplit, StandardizeOptions, Standardizer};
use quantlens::explain::ClassifierExplanations;
use quantlens::model::{Mlp, MlpConfig, TrainConfig, train};
use quantlens::perturb::Noise;
use quantlens::{
    AwqQuantizer, FloatQuantizer, GptqQuantizer, Nf4Quantizer, Perturbation, QuantSpec, Quantizer,
    UniformQuantizer,
};

const SEED: u64 = 20261125;

struct Options {
    shard: Option<Shard>,
    merge: bool,
    trainings: usize,
    jobs: usize,
    seed: u64,
    out: PathBuf,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        shard: None,
        merge: false,
        trainings: 3,
        jobs: 2,
        seed: SEED,
        out: PathBuf::from("audit-report"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--shard" => o.shard = Some(value()?.parse()?),
            "--merge" => o.merge = true,
            "--trainings" => o.trainings = value()?.parse()?,
            "--jobs" => o.jobs = value()?.parse()?,
            "--seed" => o.seed = value()?.parse()?,
            "--out" => o.out = PathBuf::from(value()?),
            other => anyhow::bail!(
                "unknown option {other}; expected --shard i/n, --merge, --trainings K, --jobs J, --seed S, --out DIR"
            ),
        }
    }
    Ok(o)
}

/// The membership split of training `k`: a stratified half of the digits, standardised on the
/// members; non-members double as the held-out set for accuracy; GPTQ and AWQ calibrate on
/// 256 members (a deployer calibrates on data like the training data).
fn digits_split(seed: u64) -> quantlens::Result<AuditData> {
    let dev = Device::Cpu;
    let digits = data::digits()?;
    let labels = digits.labels().unwrap_or_default().to_vec();
    let split = MembershipSplit::builder(digits.len())
        .stratify(&labels)
        .seed(seed)
        .build()?;
    let options = StandardizeOptions::default().drop_constant(false);
    let z = Standardizer::fit_with(&digits, split.members(), options)?.transform(&digits)?;
    let members = z.select(split.members())?.to_tensors(&dev)?;
    let (x_out, y_out) = z.select(split.non_members())?.to_tensors(&dev)?;
    Ok(
        AuditData::new(members.clone(), (x_out.clone(), y_out.clone()))?
            .with_calibration([members.0.narrow(0, 0, 256)?])
            .with_utility(Utility::accuracy(x_out, y_out))
            .with_population(digits.len()),
    )
}

/// 100 epochs without weight decay: enough to overfit, so that there is a leak to measure.
fn fit(data: &AuditData, seed: u64) -> quantlens::Result<Mlp> {
    let (x, y) = data.members()?;
    let mut mlp = Mlp::new(MlpConfig::new(x.dims()[1], &[256], 10), seed, x.device())?;
    let recipe = TrainConfig::new(100, seed).batch_size(32).weight_decay(0.0);
    train(&mut mlp, (x, y), None, &recipe)?;
    Ok(mlp)
}

/// Explanation columns: gradient × input agreement with the full-precision model and the
/// share of its minimal counterfactuals that still flip the prediction, on the first 100
/// held-out digits.
fn explanations(fp: &Mlp, model: &Mlp, data: &AuditData) -> quantlens::Result<Vec<(String, f64)>> {
    let Some(Utility::Accuracy { inputs, .. }) = data.utility() else {
        return Err(quantlens::Error::Unsupported(
            "the digits audit measures accuracy".into(),
        ));
    };
    ClassifierExplanations::new(inputs.narrow(0, 0, 100)?).columns(fp, model)
}

/// The audited schemes: quantizers, then weight perturbations.
type Schemes = (Vec<Box<dyn Quantizer>>, Vec<Box<dyn Perturbation>>);

fn schemes() -> anyhow::Result<Schemes> {
    let rtn = |spec: QuantSpec| UniformQuantizer::new(spec);
    let int4 = rtn(QuantSpec::int4().per_group(32).asymmetric())?;
    let quantizers: Vec<Box<dyn Quantizer>> = vec![
        Box::new(rtn(QuantSpec::int8().per_channel())?),
        Box::new(int4.clone()),
        Box::new(rtn(QuantSpec::int3().per_group(32).asymmetric())?),
        Box::new(rtn(QuantSpec::int2().per_group(32).asymmetric())?),
        Box::new(Nf4Quantizer::new().block_size(32)),
        Box::new(FloatQuantizer::fp8_e4m3().per_channel()),
        Box::new(FloatQuantizer::fp4_e2m1().per_group(16)),
        Box::new(FloatQuantizer::mxfp4()),
        Box::new(GptqQuantizer::new(
            QuantSpec::int4().per_group(32).asymmetric(),
        )?),
        Box::new(AwqQuantizer::new().with_base(int4.clone())),
    ];
    let perturbations: Vec<Box<dyn Perturbation>> = vec![
        Box::new(Noise::gaussian().anchored_to(int4.clone(), 1.0)),
        Box::new(
            Noise::gaussian()
                .magnitude_up()
                .anchored_to(int4.clone(), 1.0),
        ),
        Box::new(Noise::gaussian().magnitude_down().anchored_to(int4, 1.0)),
    ];
    Ok((quantizers, perturbations))
}

fn main() -> anyhow::Result<()> {
    let o = options()?;
    let shards = o.out.join("shards");
    let report = if o.merge {
        merge(&shards)?
    } else {
        let (quantizers, perturbations) = schemes()?;
        let checkpoint = match o.shard {
            Some(s) => shards.join(format!("checkpoint-{}-of-{}.json", s.index(), s.count())),
            None => o.out.join("checkpoint.json"),
        };
        let bar = ProgressBar::new(0).with_style(ProgressStyle::with_template(
            "{bar:30} {pos}/{len} rows {elapsed} {msg}",
        )?);
        let mut audit = Audit::repeated(
            format!(
                "MLP 64-256-10 (ReLU, 100 epochs, no weight decay) on UCI digits, K = {}",
                o.trainings
            ),
            o.trainings,
            |_, seed| digits_split(seed),
            fit,
        )
        .quantizers(quantizers)
        .perturbations(perturbations)
        .metrics(explanations)
        .seed(o.seed)
        .jobs(o.jobs)
        .checkpoint(&checkpoint)
        .on_progress(|event| match event {
            AuditEvent::Started { rows, resumed } => {
                bar.set_length(*rows as u64);
                bar.set_position(*resumed as u64);
                if *resumed > 0 {
                    bar.suspend(|| {
                        eprintln!(
                            "resuming: {resumed} rows read from {}",
                            checkpoint.display()
                        )
                    });
                }
            }
            AuditEvent::Trained { training, seconds } => {
                bar.set_message(format!("model {training} trained in {seconds:.1} s"));
            }
            AuditEvent::Row { row, done, .. } => {
                bar.set_position(*done as u64);
                bar.set_message(format!(
                    "{} (training {})",
                    row.scheme,
                    row.training.unwrap_or(0)
                ));
            }
            _ => {}
        });
        if let Some(shard) = o.shard {
            audit = audit.shard(shard);
        }
        let report = audit.run()?;
        bar.finish_and_clear();
        if let Some(s) = o.shard {
            let path = shards.join(format!("shard-{}-of-{}.json", s.index(), s.count()));
            report.write_json(&path, &WriteOptions::default())?;
            std::fs::remove_file(&checkpoint)?;
            println!(
                "shard {s}: {} rows written to {}; run `--merge` once every shard is done",
                report.rows.len(),
                path.display()
            );
            return Ok(());
        }
        std::fs::remove_file(&checkpoint)?;
        report
    };
    write(&report, &o.out)
}

/// Every shard report in `dir`, merged.
fn merge(dir: &Path) -> anyhow::Result<AuditReport> {
    let mut parts = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("shard-") && name.ends_with(".json") {
            parts.push(AuditReport::read_json(&path)?);
        }
    }
    println!(
        "merging {} shard reports from {}",
        parts.len(),
        dir.display()
    );
    Ok(AuditReport::merge(parts)?)
}

fn write(report: &AuditReport, out: &Path) -> anyhow::Result<()> {
    let opts = WriteOptions::default().with_utility(UtilityMetric::Accuracy);
    let per_training = out.join("per-training");
    report.write_all(&per_training, &opts)?;
    let headline = if report.provenance.trainings > 1 {
        report.aggregate_trainings()?
    } else {
        report.clone()
    };
    let written = headline.write_all(out, &opts)?;
    println!("{}", report.provenance.model);
    println!(
        "{} members / {} non-members per split; {} schemes; MIS = 1 − advantage of the loss-threshold attack{}\n",
        report.provenance.split.members,
        report.provenance.split.non_members,
        headline.rows.len(),
        if report.provenance.trainings > 1 {
            ", mean over the trainings with a 95% Student-t interval"
        } else {
            ", 95% bootstrap interval"
        }
    );
    print!("{}", headline.to_markdown_string());
    println!(
        "\nwrote {} and {}",
        written
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        per_training.display()
    );
    Ok(())
}
