//! Reproduces the membership-inference study of quantized models (Aubinais et al., paper (a)
//! in the crate's paper notes): does a quantizer's MIS follow the paper's indicator, and
//! does sparsity buy more privacy than bit width?
//!
//! `cargo run --release --example reproduce_mis [-- --quick] [--splits K] [--out DIR]`
//!
//! **Part 1, synthetic, where the truth is known.** The model is the mean of n = 20 standard
//! normal draws, released through ten round-to-nearest grids ([`QuantizedMean`]): seven steps
//! with the optimum 0 at a cell's centre, and three placements of 0 off-centre or on a
//! boundary. For each grid: the true MIS by quadrature; two empirical estimates from simulated
//! rounds of the game (the loss-threshold attack, an upper bound on MIS, and a joint plug-in
//! total variation); the indicator `r = min_k δ_k²/(2σ_k²)` from held-out losses of the
//! selected cell and its two neighbours, with its MIS lower bound `1 − e^{−n r}`. Then the
//! indicator's ranking and the empirical ranking against the true one: Spearman correlations
//! with paired bootstrap intervals.
//!
//! **Part 2, molecules.** B3DB blood–brain-barrier classification (1,164 RDKit descriptors),
//! an MLP 1164-128-2 overfitted on a seeded stratified half (the members), K seeded splits
//! (default 5). Eleven rows: full precision, RTN 8/4/3/2-bit, 1-bit sign, ternary with 33 % and
//! 90 % zeros, NF4, FP8 E4M3, GPTQ 4-bit (calibrated on 256 rows disjoint from the members).
//! The audit gives MIS (loss-threshold attack) with intervals, AUC, accuracy and size; the
//! indicator is estimated per training from held-out losses of the quantized model and two
//! competitors (the same quantizer applied to weights pushed away from their grid points by
//! 10 % and 25 % of their quantization error, which moves the weights nearest a decision
//! boundary across it: our reconstruction, the paper's exact competitor set is not known).
//! Then the indicator's ranking against the empirical MIS ranking (Spearman, paired bootstrap
//! interval) and the privacy–accuracy Pareto front.
//!
//! Writes `DIR/` (default `reproductions/mis`): `synthetic.md`, the aggregated audit report
//! (`report.{json,csv,md}`, `frontier.svg`, …) and `ranking.md`; prints every table.
//! `--quick` (CI) uses fewer simulated rounds, 2 splits and fewer bootstrap resamples.

use std::sync::Mutex;
use std::time::Instant;

use candle_core::{Device, Tensor};
use quantlens::audit::{Audit, AuditData, Utility, UtilityMetric, WriteOptions};
use quantlens::data::{self, MembershipSplit, Standardizer, TabularData};
use quantlens::explain::spearman;
use quantlens::mis::{
    Bootstrap, LossThreshold, MisEstimator, MisIndicator, QuantizedMean, Roc, SmoothedTv,
    pareto_front,
};
use quantlens::model::{
    LayerWeight, Mlp, MlpConfig, QuantizableModel, SequentialQuantization, StoreAs, TrainConfig,
    train,
};
use quantlens::rng::SplitMix64;
use quantlens::{
    CrossEntropy, FloatQuantizer, GptqQuantizer, LossProbe, MembershipSample, Nf4Quantizer,
    QuantSpec, Quantizer, TernaryQuantizer, UniformQuantizer,
};
use rayon::prelude::*;

#[path = "support/cli.rs"]
mod cli;
#[path = "support/ranks.rs"]
mod ranks;

const SEED: u64 = 20261125;
/// Training-set size of the synthetic game: small enough that every Δ_n is measurable.
const N_SYNTHETIC: usize = 20;
/// How far the indicator's competitors push each weight away from its grid point, as a
/// fraction of its quantization error.
const PUSHES: [f64; 2] = [0.10, 0.25];

struct Options {
    cli: cli::Options,
    splits: usize,
}

fn options() -> anyhow::Result<Options> {
    let mut splits = None;
    let cli = cli::parse("reproductions/mis", ", --splits K", |flag, value| {
        if flag == "--splits" {
            splits = Some(value()?.parse()?);
            Ok(true)
        } else {
            Ok(false)
        }
    })?;
    let splits = splits.unwrap_or(if cli.quick { 2 } else { 5 });
    Ok(Options { cli, splits })
}

fn main() -> anyhow::Result<()> {
    let o = options()?;
    std::fs::create_dir_all(&o.cli.out)?;
    let t0 = Instant::now();
    let synthetic = synthetic(&o)?;
    std::fs::write(o.cli.out.join("synthetic.md"), &synthetic)?;
    print!("{synthetic}");
    println!("(part 1: {:.1} s)\n", t0.elapsed().as_secs_f64());
    let t0 = Instant::now();
    molecular(&o)?;
    println!("(part 2: {:.1} s)", t0.elapsed().as_secs_f64());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Part 1: the quantized mean.

struct Grid {
    label: &'static str,
    game: QuantizedMean,
}

fn grids() -> anyhow::Result<Vec<Grid>> {
    let n = N_SYNTHETIC;
    let centred = |h: f64| QuantizedMean::new(n, h, -h / 2.0);
    Ok(vec![
        Grid {
            label: "h = 0.05, 0 centred",
            game: centred(0.05)?,
        },
        Grid {
            label: "h = 0.1, 0 centred",
            game: centred(0.1)?,
        },
        Grid {
            label: "h = 0.2, 0 centred",
            game: centred(0.2)?,
        },
        Grid {
            label: "h = 0.3, 0 centred",
            game: centred(0.3)?,
        },
        Grid {
            label: "h = 0.4, 0 centred",
            game: centred(0.4)?,
        },
        Grid {
            label: "h = 0.6, 0 centred",
            game: centred(0.6)?,
        },
        Grid {
            label: "h = 0.8, 0 centred",
            game: centred(0.8)?,
        },
        Grid {
            label: "h = 0.4, 0 at 1/4 of its cell",
            game: QuantizedMean::new(n, 0.4, -0.1)?,
        },
        Grid {
            label: "h = 0.6, 0 at 1/6 of its cell",
            game: QuantizedMean::new(n, 0.6, -0.1)?,
        },
        Grid {
            label: "h = 0.4, 0 on a boundary",
            game: QuantizedMean::new(n, 0.4, 0.0)?,
        },
    ])
}

/// Loss-threshold sample of simulated rounds: ℓ = (centre of the released cell − z)².
fn game_sample(
    game: &QuantizedMean,
    rounds: &[(i64, f64)],
    non: &[(i64, f64)],
) -> anyhow::Result<MembershipSample> {
    let loss = |v: &[(i64, f64)]| v.iter().map(|&(k, z)| game.loss(k, z)).collect::<Vec<_>>();
    Ok(MembershipSample::new(loss(rounds), loss(non))?)
}

fn synthetic(o: &Options) -> anyhow::Result<String> {
    let (rounds, held_out, resamples) = if o.cli.quick {
        (40_000, 5_000, 40)
    } else {
        (400_000, 50_000, 200)
    };
    let grids = grids()?;
    let boot = |seed| Bootstrap::new(resamples, 0.95, seed);
    let mut z_rng = SplitMix64::new(SEED ^ 0x5EED);
    let z: Vec<f64> = (0..held_out).map(|_| z_rng.normal()).collect();

    struct Measured {
        truth: f64,
        threshold: quantlens::MisEstimate,
        tv: quantlens::mis::TvEstimate,
        indicator: quantlens::mis::IndicatorEstimate,
        rounds: quantlens::mis::GameRounds,
    }
    let measured: Vec<Measured> = grids
        .par_iter()
        .enumerate()
        .map(|(i, g)| -> anyhow::Result<Measured> {
            let game = &g.game;
            // One seed for every grid: the rounds are paired across grids.
            let rounds = game.simulate(rounds, SEED);
            let sample = game_sample(game, &rounds.members, &rounds.non_members)?;
            let threshold = LossThreshold::new()
                .with_fprs(&[])
                .with_bootstrap(boot(SEED + i as u64)?)
                .estimate(&sample)?;
            let (members, non_members) = rounds.joint_histogram_input();
            let tv = SmoothedTv::new()
                .with_bootstrap(boot(SEED + 100 + i as u64)?)
                .joint_histogram(&members, &non_members)?;
            let (selected, competitors) = game.indicator_losses(&z);
            let indicator = MisIndicator::new(game.n())
                .bootstrap(resamples, 0.95, SEED + 200 + i as u64)
                .estimate(&selected, &competitors)?;
            Ok(Measured {
                truth: game.true_mis(),
                threshold,
                tv,
                indicator,
                rounds,
            })
        })
        .collect::<anyhow::Result<_>>()?;

    let mut md = format!(
        "## Part 1: the quantized mean (n = {N_SYNTHETIC}, {rounds} simulated rounds a side, {held_out} held-out points)\n\n\
         MIS = 1 − Δ_n. `attack` = loss-threshold attack on ℓ = (released centre − z)² (an upper bound on MIS); \
         `plug-in` = joint histogram total variation of (cell, z); `indicator` = 1 − e^(−n r̂), the paper's bound \
         from the rate r̂ = min_k δ_k²/(2σ_k²) (neighbouring cells as competitors). 95 % bootstrap intervals.\n\n\
         | grid | true MIS | attack MIS | plug-in MIS | indicator rate r̂ | indicator MIS | bound holds |\n\
         |---|---|---|---|---|---|---|\n"
    );
    for (g, m) in grids.iter().zip(&measured) {
        let mis_ci = m
            .threshold
            .ci
            .map(|c| format!(" [{:.4}, {:.4}]", c.lower, c.upper))
            .unwrap_or_default();
        let r_ci = m
            .indicator
            .ci
            .map(|c| format!(" [{:.4}, {:.4}]", c.lower, c.upper))
            .unwrap_or_default();
        md += &format!(
            "| {} | {:.4} | {:.4}{mis_ci} | {:.4} [{:.4}, {:.4}] | {:.4}{r_ci} | {:.3} | {} |\n",
            g.label,
            m.truth,
            m.threshold.mis,
            1.0 - m.tv.tv,
            1.0 - m.tv.ci.upper,
            1.0 - m.tv.ci.lower,
            m.indicator.rate,
            m.indicator.mis,
            if m.indicator.mis <= m.truth {
                "yes"
            } else {
                "no"
            },
        );
    }

    // Rankings against the truth, with paired bootstrap intervals: a replicate resamples the
    // held-out points (indicator) and the simulated rounds (attack), the same indices for
    // every grid.
    let truth: Vec<f64> = measured.iter().map(|m| m.truth).collect();
    let rates: Vec<f64> = measured.iter().map(|m| m.indicator.rate).collect();
    let attack: Vec<f64> = measured.iter().map(|m| m.threshold.mis).collect();
    let reps: Vec<(f64, f64, f64)> = (0..resamples)
        .into_par_iter()
        .map(|b| -> anyhow::Result<(f64, f64, f64)> {
            let mut rng = SplitMix64::new(SEED ^ (0xB007 + b as u64));
            let zi: Vec<f64> = (0..held_out)
                .map(|_| z[(rng.next_u64() % held_out as u64) as usize])
                .collect();
            let ri: Vec<usize> = (0..rounds)
                .map(|_| (rng.next_u64() % rounds as u64) as usize)
                .collect();
            let ni: Vec<usize> = (0..rounds)
                .map(|_| (rng.next_u64() % rounds as u64) as usize)
                .collect();
            let mut r = Vec::new();
            let mut a = Vec::new();
            for (g, m) in grids.iter().zip(&measured) {
                let (sel, comps) = g.game.indicator_losses(&zi);
                r.push(MisIndicator::new(g.game.n()).estimate(&sel, &comps)?.rate);
                let mem: Vec<(i64, f64)> = ri.iter().map(|&i| m.rounds.members[i]).collect();
                let non: Vec<(i64, f64)> = ni.iter().map(|&i| m.rounds.non_members[i]).collect();
                a.push(1.0 - Roc::from_sample(game_sample(&g.game, &mem, &non)?).advantage());
            }
            Ok((
                spearman(&r, &truth)?,
                spearman(&a, &truth)?,
                spearman(&r, &a)?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let ci = |f: fn(&(f64, f64, f64)) -> f64| percentile_ci(reps.iter().map(f).collect());
    let rows = [
        (
            "indicator rate vs true MIS",
            spearman(&rates, &truth)?,
            ci(|r| r.0),
        ),
        (
            "attack MIS vs true MIS",
            spearman(&attack, &truth)?,
            ci(|r| r.1),
        ),
        (
            "indicator rate vs attack MIS",
            spearman(&rates, &attack)?,
            ci(|r| r.2),
        ),
    ];
    md += &format!(
        "\nRank agreement over the {} grids (Spearman ρ, 95 % paired bootstrap interval, {resamples} resamples):\n\n| rankings | ρ | interval |\n|---|---|---|\n",
        grids.len()
    );
    for (what, rho, (lo, hi)) in rows {
        md += &format!("| {what} | {rho:.3} | [{lo:.3}, {hi:.3}] |\n");
    }
    md += "\nRankings (1 = most private):\n\n| grid | true | indicator | attack |\n|---|---|---|---|\n";
    let (rt, ri, ra) = (
        ranks::ranks(&truth),
        ranks::ranks(&rates),
        ranks::ranks(&attack),
    );
    for (i, g) in grids.iter().enumerate() {
        md += &format!("| {} | {} | {} | {} |\n", g.label, rt[i], ri[i], ra[i]);
    }
    md.push('\n');
    Ok(md)
}

/// 2.5 % and 97.5 % percentiles.
fn percentile_ci(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((p * v.len() as f64).floor() as usize).min(v.len() - 1)];
    (q(0.025), q(0.975))
}

// ---------------------------------------------------------------------------------------
// Part 2: B3DB.

/// The membership split of one training: a stratified half of B3DB are the members, 256
/// other rows calibrate GPTQ, the rest are the non-members (also the held-out set for
/// accuracy and the indicator). Standardised on the members.
fn b3db_split(table: &TabularData, seed: u64) -> quantlens::Result<AuditData> {
    let dev = Device::Cpu;
    let labels = table.labels().unwrap_or_default().to_vec();
    let split = MembershipSplit::builder(table.len())
        .members(table.len() / 2)
        .calibration(256)
        .stratify(&labels)
        .seed(seed)
        .build()?;
    let z = Standardizer::fit(table, split.members())?.transform(table)?;
    let members = z.select(split.members())?.to_tensors(&dev)?;
    let (x_out, y_out) = z.select(split.non_members())?.to_tensors(&dev)?;
    let (x_cal, _) = z.select(split.calibration())?.to_tensors(&dev)?;
    Ok(AuditData::new(members, (x_out.clone(), y_out.clone()))?
        .with_calibration([x_cal])
        .with_utility(Utility::accuracy(x_out, y_out))
        .with_population(table.len()))
}

/// train_tabular's B3DB recipe: 30 epochs, batch 128, no weight decay (it overfits: member
/// accuracy ≈ 97 %, held-out ≈ 87 %).
fn fit(data: &AuditData, seed: u64) -> quantlens::Result<Mlp> {
    let (x, y) = data.members()?;
    let mut mlp = Mlp::new(MlpConfig::new(x.dims()[1], &[128], 2), seed, x.device())?;
    let recipe = TrainConfig::new(30, seed).batch_size(128).weight_decay(0.0);
    train(&mut mlp, (x, y), None, &recipe)?;
    Ok(mlp)
}

fn quantizers() -> anyhow::Result<Vec<Box<dyn Quantizer>>> {
    let rtn = |spec: QuantSpec| UniformQuantizer::new(spec.per_channel());
    Ok(vec![
        Box::new(rtn(QuantSpec::int8())?),
        Box::new(rtn(QuantSpec::int4())?),
        Box::new(rtn(QuantSpec::int3())?),
        Box::new(rtn(QuantSpec::int2())?),
        Box::new(rtn(QuantSpec::binary())?),
        Box::new(TernaryQuantizer::with_sparsity(0.33)?),
        Box::new(TernaryQuantizer::with_sparsity(0.90)?),
        Box::new(Nf4Quantizer::new().with_granularity(quantlens::Granularity::PerChannel)),
        Box::new(FloatQuantizer::fp8_e4m3().per_channel()),
        Box::new(GptqQuantizer::new(QuantSpec::int4().per_channel())?),
    ])
}

/// Held-out losses of a selected model and of its competitors.
type IndicatorLosses = (Vec<f64>, Vec<Vec<f64>>);

/// Per-sample cross-entropy of `model` on `(x, y)`.
fn losses(model: &Mlp, x: &Tensor, y: &Tensor) -> anyhow::Result<Vec<f64>> {
    let logits = model.forward(x)?;
    let l = CrossEntropy::new().per_sample_losses(&logits, y)?;
    Ok(l.to_dtype(candle_core::DType::F64)?.to_vec1()?)
}

/// `q` applied to `model` (weights fake-quantized in place of the dense ones).
fn quantized(model: &Mlp, q: &dyn Quantizer, data: &AuditData) -> anyhow::Result<Mlp> {
    let mut m = model.clone();
    SequentialQuantization::new(q)
        .calibration(data.calibration().to_vec())
        .store_as(StoreAs::FakeQuantized)
        .run(&mut m)?;
    Ok(m)
}

/// Held-out losses of the quantized model and of its competitors: `q` applied to weights
/// `W + c·(W − Q(W))`, which moves each weight away from its grid point by `c` of its error,
/// so the weights nearest a decision boundary cross it.
fn indicator_losses(
    fp: &Mlp,
    q: &dyn Quantizer,
    data: &AuditData,
) -> anyhow::Result<IndicatorLosses> {
    let (x, y) = data.non_members()?;
    let selected = quantized(fp, q, data)?;
    let mut competitors = Vec::new();
    for c in PUSHES {
        let mut pushed = fp.clone();
        for name in fp.layer_names() {
            let w = fp.weight(&name)?;
            let err = (&w - selected.weight(&name)?)?;
            pushed.set_weight(&name, LayerWeight::Dense((&w + (err * c)?)?))?;
        }
        competitors.push(losses(&quantized(&pushed, q, data)?, x, y)?);
    }
    Ok((losses(&selected, x, y)?, competitors))
}

fn molecular(o: &Options) -> anyhow::Result<()> {
    let resamples = if o.cli.quick { 40 } else { 200 };
    // Read and parsed once; each split standardises its own members.
    let table = data::b3db_classification()?;
    let datas: Mutex<Vec<AuditData>> = Mutex::new(Vec::new());
    let models: Mutex<Vec<Mlp>> = Mutex::new(Vec::new());
    let report = Audit::repeated(
        format!("MLP 1164-128-2 (ReLU, 30 epochs, batch 128, no weight decay) on B3DB classification, K = {}", o.splits),
        o.splits,
        |_, seed| {
            let d = b3db_split(&table, seed)?;
            datas.lock().map_err(|_| quantlens::Error::Unsupported("poisoned lock".into()))?.push(d.clone());
            Ok(d)
        },
        |d, seed| {
            let m = fit(d, seed)?;
            models.lock().map_err(|_| quantlens::Error::Unsupported("poisoned lock".into()))?.push(m.clone());
            Ok(m)
        },
    )
    .quantizers(quantizers()?)
    .bootstrap_resamples(resamples)
    .seed(SEED)
    .jobs(2)
    .run()?;
    let datas = datas
        .into_inner()
        .map_err(|_| anyhow::anyhow!("poisoned lock"))?;
    let models = models
        .into_inner()
        .map_err(|_| anyhow::anyhow!("poisoned lock"))?;
    let opts = WriteOptions::default().with_utility(UtilityMetric::Accuracy);
    let aggregated = report.aggregate_trainings()?;
    aggregated.write_all(&o.cli.out, &opts)?;
    report.write_all(o.cli.out.join("per-training"), &opts)?;
    println!("## Part 2: B3DB, {} splits\n", o.splits);
    print!("{}", aggregated.to_markdown_string());

    // The indicator, per training and scheme, from the non-members' losses.
    let qs = quantizers()?;
    let schemes: Vec<String> = std::iter::once(quantlens::audit::FULL_PRECISION.to_string())
        .chain(qs.iter().map(|q| q.name()))
        .collect();
    let mut held_out: Vec<Vec<IndicatorLosses>> = Vec::new(); // [training][scheme]
    for (d, fp) in datas.iter().zip(&models) {
        let (x, y) = d.non_members()?;
        let fp_losses = losses(fp, x, y)?;
        let mut per = vec![(fp_losses.clone(), vec![fp_losses])];
        for q in &qs {
            per.push(indicator_losses(fp, q.as_ref(), d)?);
        }
        held_out.push(per);
    }
    let n_members = report.provenance.split.members;
    let rate = |sel: &[f64], comps: &[Vec<f64>]| -> anyhow::Result<f64> {
        Ok(MisIndicator::new(n_members).estimate(sel, comps)?.rate)
    };
    // Per scheme: mean over trainings of the indicator rate and of the empirical MIS.
    let row = |t: usize, s: &str| {
        report
            .rows
            .iter()
            .find(|r| r.training == Some(t) && r.scheme == s)
            .ok_or_else(|| anyhow::anyhow!("no row for {s} in training {t}"))
    };
    let k = held_out.len() as f64;
    let mut rates = vec![0.0; schemes.len()];
    let mut mis = vec![0.0; schemes.len()];
    let mut accuracy = vec![0.0; schemes.len()];
    for (t, per) in held_out.iter().enumerate() {
        for (s, (sel, comps)) in per.iter().enumerate() {
            rates[s] += rate(sel, comps)? / k;
            let r = row(t, &schemes[s])?;
            mis[s] += r.mis.unwrap_or(f64::NAN) / k;
            accuracy[s] += r.accuracy.unwrap_or(f64::NAN) / k;
        }
    }
    // Paired bootstrap: per replicate and training, resample non-members (indicator) and
    // members/non-members (attack) once for every scheme.
    let reps: Vec<f64> = (0..resamples)
        .into_par_iter()
        .map(|b| -> anyhow::Result<f64> {
            let mut rng = SplitMix64::new(SEED ^ (0xB3DB + b as u64));
            let mut r = vec![0.0; schemes.len()];
            let mut m = vec![0.0; schemes.len()];
            for (t, per) in held_out.iter().enumerate() {
                let n_out = per[0].0.len();
                let hi: Vec<usize> = (0..n_out)
                    .map(|_| (rng.next_u64() % n_out as u64) as usize)
                    .collect();
                let first = row(t, &schemes[0])?;
                let (nm, nn) = (first.member_losses.len(), first.non_member_losses.len());
                let mi: Vec<usize> = (0..nm)
                    .map(|_| (rng.next_u64() % nm as u64) as usize)
                    .collect();
                let ni: Vec<usize> = (0..nn)
                    .map(|_| (rng.next_u64() % nn as u64) as usize)
                    .collect();
                for (s, (sel, comps)) in per.iter().enumerate() {
                    let pick =
                        |v: &[f64], idx: &[usize]| idx.iter().map(|&i| v[i]).collect::<Vec<f64>>();
                    let comps: Vec<Vec<f64>> = comps.iter().map(|c| pick(c, &hi)).collect();
                    r[s] += rate(&pick(sel, &hi), &comps)? / k;
                    let rw = row(t, &schemes[s])?;
                    let sample = MembershipSample::new(
                        pick(&rw.member_losses, &mi),
                        pick(&rw.non_member_losses, &ni),
                    )?;
                    m[s] += (1.0 - Roc::from_sample(sample).advantage()) / k;
                }
            }
            Ok(spearman(&r, &m)?)
        })
        .collect::<anyhow::Result<_>>()?;
    let rho = spearman(&rates, &mis)?;
    let (lo, hi) = percentile_ci(reps);
    let front = pareto_front(
        &mis.iter()
            .copied()
            .zip(accuracy.iter().copied())
            .collect::<Vec<_>>(),
    )?;
    let (rm, ri) = (ranks::ranks(&mis), ranks::ranks(&rates));
    let mut md = format!(
        "\n### Indicator ranking against the empirical MIS ranking (B3DB, mean over {} splits)\n\n\
         Indicator rate r̂ from the non-members' losses of the quantized model and its two competitors \
         (weights pushed by {:?} of their quantization error, then re-quantized); n = {n_members} members. \
         Rank 1 = most private.\n\n\
         | scheme | empirical MIS | rank | indicator rate r̂ | indicator MIS 1 − e^(−n r̂) | rank | accuracy | Pareto |\n\
         |---|---|---|---|---|---|---|---|\n",
        held_out.len(),
        PUSHES
    );
    for s in 0..schemes.len() {
        md += &format!(
            "| {} | {:.4} | {} | {:.2e} | {:.3} | {} | {:.4} | {} |\n",
            schemes[s],
            mis[s],
            rm[s],
            rates[s],
            -(-(n_members as f64) * rates[s]).exp_m1(),
            ri[s],
            accuracy[s],
            if front.contains(&s) { "yes" } else { "" }
        );
    }
    md += &format!(
        "\nSpearman ρ(indicator rate, empirical MIS) = {rho:.3}, 95 % paired bootstrap interval [{lo:.3}, {hi:.3}] ({resamples} resamples).\n"
    );
    std::fs::write(o.cli.out.join("ranking.md"), &md)?;
    print!("{md}");
    println!("\nwrote {}", o.cli.out.display());
    Ok(())
}
