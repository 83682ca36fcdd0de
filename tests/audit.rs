//! The audit runner: rows against independent references, determinism (same seed, same bytes;
//! any number of jobs), shards merged = one run, resume after an interruption, repeated
//! trainings aggregated, and bad settings refused.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use candle_core::{DType, Device, Tensor};
use quantlens::audit::{
    Audit, AuditData, AuditEvent, AuditReport, RowKind, Shard, Utility, WriteOptions,
};
use quantlens::data::{self, MembershipSplit, Standardizer};
use quantlens::model::{
    Mlp, MlpConfig, QuantizableModel, SequentialQuantization, TrainConfig, train,
};
use quantlens::perturb::Noise;
use quantlens::{
    Calibration, GptqQuantizer, LossProbe, QuantSpec, QuantizedTensor, Quantizer, UniformQuantizer,
};

const SEED: u64 = 20261125;

/// Digits split in half (members / non-members) by `seed`, standardised on the members.
fn digits_data(seed: u64) -> AuditData {
    let dev = Device::Cpu;
    let digits = data::digits().unwrap();
    let split = MembershipSplit::builder(digits.len())
        .seed(seed)
        .build()
        .unwrap();
    let z = Standardizer::fit(&digits, split.members())
        .unwrap()
        .transform(&digits)
        .unwrap();
    let members = z.select(split.members()).unwrap().to_tensors(&dev).unwrap();
    let (x_out, y_out) = z
        .select(split.non_members())
        .unwrap()
        .to_tensors(&dev)
        .unwrap();
    AuditData::new(members.clone(), (x_out.clone(), y_out.clone()))
        .unwrap()
        .with_calibration([members.0.narrow(0, 0, 256).unwrap()])
        .with_utility(Utility::accuracy(x_out, y_out))
        .with_population(digits.len())
}

fn fit(data: &AuditData, seed: u64) -> quantlens::Result<Mlp> {
    let (x, y) = data.members()?;
    let mut mlp = Mlp::new(MlpConfig::new(x.dims()[1], &[32], 10), seed, x.device())?;
    train(
        &mut mlp,
        (x, y),
        None,
        &TrainConfig::new(8, seed).batch_size(32),
    )?;
    Ok(mlp)
}

fn rtn(spec: QuantSpec) -> UniformQuantizer {
    UniformQuantizer::new(spec).unwrap()
}

/// The audit every test varies: a trained MLP, RTN 8/4/2, GPTQ 4, Gaussian noise.
fn audit<'a>(data: AuditData, model: Mlp) -> Audit<'a, Mlp> {
    Audit::of_model("mlp 32 on digits", model, data)
        .quantizer(rtn(QuantSpec::int8().per_channel()))
        .quantizer(rtn(QuantSpec::int4().per_channel()))
        .quantizer(rtn(QuantSpec::int2().per_channel()))
        .quantizer(GptqQuantizer::new(QuantSpec::int4().per_channel()).unwrap())
        .perturbation(Noise::gaussian().relative(0.05))
        .bootstrap_resamples(100)
        .seed(SEED)
}

fn trained() -> (AuditData, Mlp) {
    let data = digits_data(1);
    let mlp = fit(&data, 2).unwrap();
    (data, mlp)
}

fn json(report: &AuditReport) -> String {
    report.to_json_string(&WriteOptions::default()).unwrap()
}

/// Per-sample cross-entropy in f64 from the model's logits.
fn ce_f64(model: &Mlp, x: &Tensor, y: &Tensor) -> Vec<f64> {
    let logits = model.forward(x).unwrap().to_dtype(DType::F64).unwrap();
    let rows = logits.to_vec2::<f64>().unwrap();
    let labels = y.to_vec1::<u32>().unwrap();
    rows.iter()
        .zip(labels)
        .map(|(r, c)| {
            let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + r.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            lse - r[c as usize]
        })
        .collect()
}

/// max over thresholds of TPR − FPR for "member if loss ≤ t", by brute force.
fn naive_advantage(members: &[f64], non_members: &[f64]) -> f64 {
    let mut best = 0.0f64;
    for &t in members.iter().chain(non_members) {
        let tpr = members.iter().filter(|&&l| l <= t).count() as f64 / members.len() as f64;
        let fpr = non_members.iter().filter(|&&l| l <= t).count() as f64 / non_members.len() as f64;
        best = best.max(tpr - fpr);
    }
    best
}

#[test]
fn rows_match_independent_references() {
    let (data, mlp) = trained();
    let report = audit(data.clone(), mlp.clone()).run().unwrap();
    let names: Vec<&str> = report.rows.iter().map(|r| r.scheme.as_str()).collect();
    assert_eq!(names.len(), 6);
    assert_eq!(names[0], "full-precision");
    assert_eq!(report.rows[5].kind, RowKind::Perturbation);
    assert_eq!(report.provenance.split.members, 898);
    assert_eq!(report.provenance.split.calibration, 256);
    assert_eq!(report.provenance.seeds["audit"], SEED);

    // Full precision: losses, MIS and accuracy from the model directly.
    let (xm, ym) = data.members().unwrap();
    let (xn, yn) = data.non_members().unwrap();
    let fp = &report.rows[0];
    let (lm, ln) = (ce_f64(&mlp, xm, ym), ce_f64(&mlp, xn, yn));
    for (a, b) in fp
        .member_losses
        .iter()
        .zip(&lm)
        .chain(fp.non_member_losses.iter().zip(&ln))
    {
        assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
    }
    let adv = naive_advantage(&lm, &ln);
    // f32 vs f64 losses may swap near-ties: allow a few samples' worth.
    assert!(
        (fp.advantage.unwrap() - adv).abs() <= 3.0 / 898.0,
        "{:?} vs {adv}",
        fp.advantage
    );
    assert!((fp.mis.unwrap() - (1.0 - fp.advantage.unwrap())).abs() < 1e-12);
    let logits = mlp.forward(xn).unwrap().to_vec2::<f32>().unwrap();
    let correct = logits
        .iter()
        .zip(yn.to_vec1::<u32>().unwrap())
        .filter(|(r, c)| {
            let argmax = (0..r.len()).max_by(|&i, &j| r[i].total_cmp(&r[j])).unwrap();
            argmax == *c as usize
        })
        .count();
    assert!((fp.accuracy.unwrap() - correct as f64 / 899.0).abs() < 1e-12);
    assert!(fp.bits_per_weight.is_none() && fp.layer_error.is_none());
    assert!(fp.tpr_at_1pct.is_some());
    assert_eq!(
        fp.tpr_at_01pct, None,
        "899 non-members are too few for 0.1% FPR"
    );

    // Sizes: 4 bytes a weight and a bias at full precision.
    let params: usize = mlp
        .linear_layers()
        .iter()
        .map(|l| l.in_features() * l.out_features() + l.out_features())
        .sum();
    assert_eq!(fp.model_bytes, Some(4 * params as u64));

    // int4 row: the same model quantized by hand gives the same losses, bits and size.
    let int4 = &report.rows[2];
    let mut q = mlp.clone();
    let qr = SequentialQuantization::new(&rtn(QuantSpec::int4().per_channel()))
        .run(&mut q)
        .unwrap();
    let lq = ce_f64(&q, xm, ym);
    for (a, b) in int4.member_losses.iter().zip(&lq) {
        assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()));
    }
    assert_eq!(int4.bits_per_weight, Some(qr.bits_per_weight()));
    let biases: usize = mlp
        .linear_layers()
        .iter()
        .map(|l| 4 * l.out_features())
        .sum();
    assert_eq!(int4.model_bytes, Some((qr.storage_bytes() + biases) as u64));
    let le = int4.layer_error.as_ref().unwrap();
    assert_eq!(le.layers, 2);
    assert!(le.max_relative_error >= le.mean_relative_error && le.mean_relative_error > 0.0);
    assert!(
        int4.config["settings"]
            .as_str()
            .unwrap()
            .contains("bits: 4")
    );

    // More bits, less weight error; the 5% noise row moved every layer by 5%.
    let err = |i: usize| {
        report.rows[i]
            .layer_error
            .as_ref()
            .unwrap()
            .mean_relative_error
    };
    assert!(err(1) < err(2) && err(2) < err(3));
    assert!((err(5) - 0.05).abs() < 1e-3);
    assert_eq!(report.rows[5].bits_per_weight, None);
}

#[test]
fn same_seed_same_bytes_whatever_the_jobs() {
    let (data, mlp) = trained();
    let one = json(&audit(data.clone(), mlp.clone()).run().unwrap());
    let again = json(&audit(data.clone(), mlp.clone()).run().unwrap());
    let parallel = json(&audit(data.clone(), mlp.clone()).jobs(3).run().unwrap());
    assert_eq!(one, again);
    assert_eq!(one, parallel);
    assert!(
        !one.contains("\"seconds\""),
        "timings make runs differ: not in the JSON by default"
    );
    let other_seed = json(&audit(data, mlp).seed(SEED + 1).run().unwrap());
    assert_ne!(one, other_seed);
}

#[test]
fn shards_merge_into_the_unsharded_report() {
    let (data, mlp) = trained();
    let whole = json(&audit(data.clone(), mlp.clone()).run().unwrap());
    let parts: Vec<AuditReport> = ["3/3", "1/3", "2/3"]
        .iter()
        .map(|s| {
            let shard: Shard = s.parse().unwrap();
            let part = audit(data.clone(), mlp.clone()).shard(shard).run().unwrap();
            assert_eq!(part.completed_indices(), shard.indices(6));
            part
        })
        .collect();
    assert_eq!(json(&AuditReport::merge(parts).unwrap()), whole);
}

/// RTN that fails while `fail` is set, and counts its calls.
struct Flaky {
    inner: UniformQuantizer,
    fail: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl Quantizer for Flaky {
    fn name(&self) -> String {
        "flaky-int3".into()
    }
    fn quantize(&self, w: &Tensor, c: Option<&Calibration>) -> quantlens::Result<QuantizedTensor> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err(quantlens::Error::Unsupported("simulated crash".into()));
        }
        self.inner.quantize(w, c)
    }
}

#[test]
fn an_interrupted_audit_resumes_without_recomputing_finished_rows() {
    let (data, mlp) = trained();
    let dir = std::env::temp_dir().join(format!("quantlens-audit-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let checkpoint = dir.join("partial.json");
    let fail = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicUsize::new(0));
    let flaky_audit = |fail: &Arc<AtomicBool>, calls: &Arc<AtomicUsize>| {
        audit(data.clone(), mlp.clone())
            .quantizer(Flaky {
                inner: rtn(QuantSpec::int3().per_channel()),
                fail: fail.clone(),
                calls: calls.clone(),
            })
            .perturbation(Noise::gaussian().relative(0.2))
    };
    // Row 5 (flaky) fails: rows 0–4 finish first (one job, plan order) and are saved.
    let err = flaky_audit(&fail, &calls)
        .checkpoint(&checkpoint)
        .run()
        .unwrap_err();
    assert!(err.to_string().contains("simulated crash"), "{err}");
    let saved = AuditReport::read_json(&checkpoint).unwrap();
    assert_eq!(saved.completed_indices(), vec![0, 1, 2, 3, 4]);
    assert!(
        saved.rows.iter().all(|r| r.seconds.is_some()),
        "checkpoints keep timings"
    );

    // Rerun: only the missing rows are computed (the flaky scheme once per layer: 2 calls).
    fail.store(false, Ordering::SeqCst);
    calls.store(0, Ordering::SeqCst);
    let mut events = Vec::new();
    let resumed = flaky_audit(&fail, &calls)
        .checkpoint(&checkpoint)
        .on_progress(|e| {
            events.push(match e {
                AuditEvent::Started { rows, resumed } => format!("start {rows} {resumed}"),
                AuditEvent::Trained { training, .. } => format!("trained {training}"),
                AuditEvent::Row { row, done, rows } => format!("row {} {done}/{rows}", row.index),
                _ => "other".into(),
            })
        })
        .run()
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        events,
        [
            "start 8 5",
            "trained 0",
            "row 5 6/8",
            "row 6 7/8",
            "row 7 8/8"
        ]
    );

    // Same bytes as a run that never stopped.
    let fresh = flaky_audit(&fail, &calls).run().unwrap();
    assert_eq!(json(&resumed), json(&fresh));

    // A checkpoint from another audit (other seed) is refused, not silently mixed in.
    let err = flaky_audit(&fail, &calls)
        .seed(1)
        .checkpoint(&checkpoint)
        .run()
        .unwrap_err();
    assert!(err.to_string().contains("different audit"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn repeated_trainings_aggregate_with_a_t_interval() {
    let mut report = Audit::repeated(
        "mlp 32 on digits, K = 3",
        3,
        |_, seed| Ok(digits_data(seed)),
        fit,
    )
    .quantizer(rtn(QuantSpec::int4().per_channel()))
    .bootstrap_resamples(50)
    .seed(SEED)
    .jobs(2)
    .run()
    .unwrap();
    assert_eq!(report.rows.len(), 6);
    assert_eq!(report.provenance.trainings, 3);
    let trainings: Vec<Option<usize>> = report.rows.iter().map(|r| r.training).collect();
    assert_eq!(
        trainings,
        [Some(0), Some(0), Some(1), Some(1), Some(2), Some(2)]
    );
    // Different splits: different member sets, so different losses.
    assert_ne!(report.rows[0].member_losses, report.rows[2].member_losses);

    let agg = report.aggregate_trainings().unwrap();
    assert_eq!(agg.rows.len(), 2);
    for (slot, row) in agg.rows.iter().enumerate() {
        let mis: Vec<f64> = (0..3)
            .map(|k| report.rows[2 * k + slot].mis.unwrap())
            .collect();
        let mean = mis.iter().sum::<f64>() / 3.0;
        let sd = (mis.iter().map(|m| (m - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
        // t(0.975, 2) = 4.303 (published tables).
        let half = 4.302_652_7 * sd / 3f64.sqrt();
        assert!((row.mis.unwrap() - mean).abs() < 1e-12);
        let ci = row.mis_ci.unwrap();
        assert!((ci.lower - (mean - half)).abs() < 1e-6 && (ci.upper - (mean + half)).abs() < 1e-6);
        assert_eq!(row.training, None);
        assert_eq!(row.member_losses.len(), 3 * 898);
    }
    // An aggregated report, or a partial one, cannot be aggregated again.
    assert!(agg.aggregate_trainings().is_err());
    report.rows.pop();
    assert!(
        report
            .aggregate_trainings()
            .unwrap_err()
            .to_string()
            .contains("merge every shard")
    );
}

#[test]
fn bad_settings_are_refused() {
    let (data, mlp) = trained();
    let dup = audit(data.clone(), mlp.clone())
        .quantizer(rtn(QuantSpec::int4().per_channel()))
        .run()
        .unwrap_err();
    assert!(dup.to_string().contains("both called"), "{dup}");
    assert!(audit(data.clone(), mlp.clone()).jobs(0).run().is_err());
    assert!(
        audit(data.clone(), mlp.clone())
            .batch_rows(0)
            .run()
            .is_err()
    );
    assert!(
        Audit::repeated("none", 0, |_, s| Ok(digits_data(s)), fit)
            .run()
            .is_err()
    );

    // GPTQ without calibration data says so.
    let (xm, ym) = data.members().unwrap();
    let (xn, yn) = data.non_members().unwrap();
    let bare = AuditData::new((xm.clone(), ym.clone()), (xn.clone(), yn.clone())).unwrap();
    let err = audit(bare, mlp.clone()).run().unwrap_err();
    assert!(err.to_string().contains("calibration"), "{err}");

    // Data with mismatched inputs and targets, or nothing in a set.
    assert!(
        AuditData::new(
            (xm.clone(), yn.narrow(0, 0, 10).unwrap()),
            (xn.clone(), yn.clone())
        )
        .is_err()
    );
    let empty = xm.narrow(0, 0, 0).unwrap();
    let none = ym.narrow(0, 0, 0).unwrap();
    assert!(AuditData::new((empty, none), (xn.clone(), yn.clone())).is_err());

    // NaN weights: the row fails with a clear error instead of writing garbage.
    let mut broken = mlp.clone();
    let w = broken.weight("layers.0").unwrap();
    let nan = w.affine(f64::NAN, 0.0).unwrap();
    broken.set_weight("layers.0", nan.into()).unwrap();
    let err = audit(data, broken).run().unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("nan") || err.to_string().contains("finite"),
        "{err}"
    );
}

/// Top-1 agreement with the full-precision model on `x`.
fn agreement(fp: &Mlp, model: &Mlp, x: &Tensor) -> quantlens::Result<f64> {
    let a = fp.forward(x)?.argmax(1)?.to_vec1::<u32>()?;
    let b = model.forward(x)?.argmax(1)?.to_vec1::<u32>()?;
    Ok(a.iter().zip(&b).filter(|(p, q)| p == q).count() as f64 / a.len() as f64)
}

#[test]
fn utility_only_audits_and_extra_metric_columns() {
    let (data, mlp) = trained();
    let (xn, yn) = data.non_members().unwrap();
    let only = AuditData::utility_only(Utility::accuracy(xn.clone(), yn.clone()));
    assert!(only.members().is_err() && !only.has_membership());
    let report = Audit::of_model("mlp, utility only", mlp.clone(), only)
        .quantizer(rtn(QuantSpec::int2().per_channel()))
        .metrics(|fp, model, data| {
            let (x, _) = data.utility().map_or(
                Err(quantlens::Error::Unsupported("no utility".into())),
                |u| match u {
                    Utility::Accuracy { inputs, labels } => Ok((inputs.clone(), labels.clone())),
                    _ => Err(quantlens::Error::Unsupported("accuracy expected".into())),
                },
            )?;
            Ok(vec![("agreement".to_string(), agreement(fp, model, &x)?)])
        })
        .run()
        .unwrap();
    assert_eq!(report.provenance.split.members, 0);
    for row in &report.rows {
        assert!(row.mis.is_none() && row.auc.is_none() && row.member_losses.is_empty());
        assert!(row.accuracy.is_some());
    }
    assert_eq!(report.rows[0].metrics["agreement"], 1.0);
    let mut q = mlp.clone();
    SequentialQuantization::new(&rtn(QuantSpec::int2().per_channel()))
        .run(&mut q)
        .unwrap();
    let expected = agreement(&mlp, &q, xn).unwrap();
    assert_eq!(report.rows[1].metrics["agreement"], expected);
    assert!(expected < 1.0, "2-bit RTN changes some predictions");
    assert!(report.to_markdown_string().contains("| agreement |"));
    // Without MIS there is no frontier, but the tables are written.
    let dir = std::env::temp_dir().join(format!("quantlens-audit-utility-{}", std::process::id()));
    let written = report.write_all(&dir, &WriteOptions::default()).unwrap();
    assert!(written.iter().all(|p| !p.ends_with("frontier.svg")));
    let _ = std::fs::remove_dir_all(&dir);
}

/// RTN that records how many of its copies run at once.
struct Concurrency {
    name: String,
    active: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Quantizer for Concurrency {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn quantize(&self, w: &Tensor, c: Option<&Calibration>) -> quantlens::Result<QuantizedTensor> {
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(30));
        self.active.fetch_sub(1, Ordering::SeqCst);
        rtn(QuantSpec::int4().per_channel()).quantize(w, c)
    }
}

#[test]
fn a_memory_budget_caps_the_rows_in_flight() {
    let (data, mlp) = trained();
    let (active, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let run = |budget: Option<usize>| {
        peak.store(0, Ordering::SeqCst);
        let mut audit = Audit::of_model("mlp", mlp.clone(), data.clone())
            .bootstrap_resamples(20)
            .jobs(4);
        for i in 0..6 {
            audit = audit.quantizer(Concurrency {
                name: format!("rtn-{i}"),
                active: active.clone(),
                peak: peak.clone(),
            });
        }
        if let Some(b) = budget {
            audit = audit.memory_budget(b);
        }
        let report = audit.run().unwrap();
        (json(&report), peak.load(Ordering::SeqCst))
    };
    let bytes = mlp.storage_bytes();
    let (capped, peak_capped) = run(Some(2 * bytes + bytes / 2));
    assert!(
        peak_capped <= 2,
        "{peak_capped} rows at once under a two-model budget"
    );
    let (single, peak_single) = run(Some(1));
    assert_eq!(
        peak_single, 1,
        "a budget below one model still runs one row at a time"
    );
    assert_eq!(capped, single, "parallelism never changes the numbers");
}

#[test]
fn language_models_are_audited_with_sequence_losses_and_perplexity() {
    use quantlens::SequenceNll;
    use quantlens::model::{Llama, LlamaConfig, PerplexityConfig, next_token_pairs, perplexity};

    let dev = Device::Cpu;
    let config = LlamaConfig::tiny(64, 32, 2, 4, 2).max_seq_len(16);
    let model = Llama::new(config, 3, &dev).unwrap();
    let mut rng = common::TestRng::new(9);
    let mut windows = |n: usize| {
        let ids: Vec<u32> = (0..n * 17).map(|_| (rng.next_u64() % 64) as u32).collect();
        next_token_pairs(&Tensor::from_vec(ids, (n, 17), &dev).unwrap()).unwrap()
    };
    let (members, non_members) = (windows(12), windows(12));
    let tokens: Vec<u32> = (0..200).map(|i| (i * 7 % 64) as u32).collect();
    let ppl = PerplexityConfig::new(16, 16);
    let data = AuditData::new(members.clone(), non_members)
        .unwrap()
        .with_utility(Utility::perplexity(tokens.clone(), ppl));
    let report = Audit::of_model("tiny llama", model.clone(), data)
        .quantizer(rtn(QuantSpec::int4().per_channel()))
        .probe(SequenceNll::new())
        .batch_rows(5)
        .bootstrap_resamples(20)
        .run()
        .unwrap();
    let fp = &report.rows[0];
    assert_eq!(
        fp.perplexity,
        Some(perplexity(&model, &tokens, ppl).unwrap().perplexity)
    );
    assert_eq!(fp.member_losses.len(), 12);
    // Per-window mean NLL, batched 5 + 5 + 2, equals one forward over all windows.
    let whole = SequenceNll::new()
        .per_sample_losses(&model.forward(&members.0).unwrap(), &members.1)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for (a, b) in fp.member_losses.iter().zip(&whole) {
        assert!((a - f64::from(*b)).abs() < 1e-5, "{a} vs {b}");
    }
    assert!(report.rows[1].perplexity.unwrap() != fp.perplexity.unwrap());
    assert!(
        fp.mis.is_some() && fp.tpr_at_1pct.is_none(),
        "12 non-members: no TPR@1%"
    );
    assert!(fp.model_bytes.unwrap() > report.rows[1].model_bytes.unwrap());
}
