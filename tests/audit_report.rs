//! The audit report layer: JSON round trip and determinism, schema refusal, shards and merge,
//! CSV quoting, the Markdown table, hashes, and the SVG plots.
//!
//! Everything runs on small synthetic reports (no fixtures); the whole file takes well under a
//! second in the dev profile.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use quantlens::audit::{
    AuditReport, AuditRow, Ci, LayerErrorSummary, Provenance, RowKind, Shard, SplitSizes,
    UtilityMetric, WriteOptions, frontier_indices, hash_bytes, hash_f32, hash_tensor, histogram,
};
use quantlens::mis::{LossThreshold, MisEstimator};
use quantlens::model::{Mlp, MlpConfig, SequentialQuantization};
use quantlens::rng::SplitMix64;
use quantlens::{Error, MembershipSample, QuantSpec, UniformQuantizer};

const SCHEMES: [&str; 10] = [
    "fp32",
    "rtn-w8-per-channel",
    "rtn-w4-g128-asym",
    "rtn-w4-g128-sym",
    "nf4",
    "gptq-w4-g128",
    "awq-w4-g128",
    "rtn-w3-g64-asym",
    "ternary",
    "noise-anchored-int4",
];

fn provenance() -> Provenance {
    Provenance::new("synthetic mlp 64-32-10")
        .with_seed("train", 2)
        .with_seed("split", 1)
        .with_seed("bootstrap", 3)
        .with_split(SplitSizes::new(120, 1000, 64, 1184))
        .with_trainings(4)
        .with_data_hash(hash_bytes(b"evaluation data"))
        .with_calibration_hash(hash_bytes(b"calibration data"))
        .with_notes("synthetic rows for the tests")
}

/// Rows with every kind of field filled, values drawn from a seeded RNG so that floats have
/// full precision (a round trip through JSON must keep all their bits).
fn synthetic_row(i: usize, rng: &mut SplitMix64) -> AuditRow {
    let kind = match i {
        0 => RowKind::FullPrecision,
        9 => RowKind::Perturbation,
        _ => RowKind::Quantizer,
    };
    let members: Vec<f64> = (0..120).map(|_| rng.next_f64() * 2.0).collect();
    let shift = 0.05 * (10 - i) as f64;
    let non_members: Vec<f64> = (0..1000).map(|_| rng.next_f64() * 2.0 + shift).collect();
    let sample = MembershipSample::new(members, non_members).unwrap();
    let mis = 0.7 + 0.3 * rng.next_f64();
    let mut row = AuditRow::new(i, SCHEMES[i], kind)
        .with_config(
            serde_json::json!({ "bits": 8 - (i % 5), "group_size": 128, "name": SCHEMES[i] }),
        )
        .with_sample(&sample)
        .with_accuracy(0.8 + 0.2 * rng.next_f64())
        .with_timing(rng.next_f64() * 30.0, 1000 + i as u64);
    row.mis = Some(mis);
    row.mis_ci = Some(Ci {
        lower: mis - 0.02,
        upper: (mis + 0.02).min(1.0),
        level: 0.95,
    });
    row.advantage = Some(1.0 - mis);
    row.auc = Some(0.5 + 0.1 * rng.next_f64());
    if i.is_multiple_of(2) {
        row.auc_ci = Some(Ci {
            lower: 0.45,
            upper: 0.65,
            level: 0.95,
        });
        row.tpr_at_01pct = Some(rng.next_f64() * 0.01);
    }
    row.tpr_at_1pct = Some(rng.next_f64() * 0.05);
    if kind != RowKind::FullPrecision {
        row.bits_per_weight = Some(2.0 + 6.0 * rng.next_f64());
        row.layer_error = Some(LayerErrorSummary {
            mean_relative_error: rng.next_f64() * 0.1,
            max_relative_error: 0.1 + rng.next_f64() * 0.1,
            worst_layer: "layers.1".into(),
            layers: 3,
        });
    }
    row.model_bytes = Some(100_000 - 5_000 * i as u64);
    row
}

fn synthetic_report(rows: usize) -> AuditReport {
    let mut rng = SplitMix64::new(42);
    let mut report = AuditReport::new(provenance());
    for i in 0..rows {
        report.push(synthetic_row(i, &mut rng)).unwrap();
    }
    report
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("quantlens-audit-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn json_round_trip_is_lossless_and_byte_stable() {
    let report = synthetic_report(10);
    let dir = temp_dir("json");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("report.json");
    // Timings are kept only when asked for; with them, nothing is lost.
    let opts = WriteOptions::default().with_timing();
    report.write_json(&path, &opts).unwrap();
    let first = std::fs::read(&path).unwrap();
    let back = AuditReport::read_json(&path).unwrap();
    assert_eq!(
        back, report,
        "every field, every float bit, survives the round trip"
    );
    back.write_json(&path, &opts).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        first,
        "rewriting gives the same bytes"
    );
    assert_eq!(first.last(), Some(&b'\n'));
    // Seeds are written in name order whatever the insertion order.
    let text = String::from_utf8(first).unwrap();
    let (b, s, t) = (
        text.find("\"bootstrap\"").unwrap(),
        text.find("\"split\"").unwrap(),
        text.find("\"train\"").unwrap(),
    );
    assert!(b < s && s < t);
    let mut reordered = report.clone();
    reordered.provenance = Provenance::new("synthetic mlp 64-32-10")
        .with_seed("bootstrap", 3)
        .with_seed("train", 2)
        .with_seed("split", 1)
        .with_split(SplitSizes::new(120, 1000, 64, 1184))
        .with_trainings(4)
        .with_data_hash(hash_bytes(b"evaluation data"))
        .with_calibration_hash(hash_bytes(b"calibration data"))
        .with_notes("synthetic rows for the tests");
    assert!(reordered.to_json_string(&opts).unwrap().as_bytes() == text.as_bytes());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn json_without_losses_keeps_the_means_and_drops_the_vectors() {
    let report = synthetic_report(3);
    let full = report.to_json_string(&WriteOptions::default()).unwrap();
    let slim = report
        .to_json_string(&WriteOptions::default().without_losses())
        .unwrap();
    assert!(full.contains("\"member_losses\"") && !slim.contains("member_losses"));
    assert!(slim.len() * 10 < full.len());
    let back = AuditReport::from_json_str(&slim, "slim").unwrap();
    for (a, b) in back.rows.iter().zip(&report.rows) {
        assert!(a.member_losses.is_empty() && a.non_member_losses.is_empty());
        assert_eq!(a.member_loss_mean, b.member_loss_mean);
        // The mean itself, checked against a naive f64 sum.
        let naive = b.member_losses.iter().sum::<f64>() / b.member_losses.len() as f64;
        assert!((a.member_loss_mean.unwrap() - naive).abs() < 1e-12);
    }
}

#[test]
fn reading_refuses_another_schema_version_and_non_reports() {
    let json = synthetic_report(2)
        .to_json_string(&WriteOptions::default())
        .unwrap();
    assert!(json.contains("\"schema_version\": 1,"));
    let newer = json.replacen("\"schema_version\": 1,", "\"schema_version\": 2,", 1);
    let dir = temp_dir("schema");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("newer.json");
    std::fs::write(&path, newer).unwrap();
    match AuditReport::read_json(&path) {
        Err(Error::Malformed { path: p, reason }) => {
            assert!(p.ends_with("newer.json"));
            assert!(reason.contains("schema_version 2"), "{reason}");
        }
        other => panic!("expected a schema refusal, got {other:?}"),
    }
    let missing = json.replacen("\"schema_version\": 1,", "", 1);
    assert!(matches!(
        AuditReport::from_json_str(&missing, "m"),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        AuditReport::from_json_str("{\"schema_version\": 1, \"rows\": 3", "t"),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        AuditReport::from_json_str("{\"schema_version\": 1}", "t"),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        AuditReport::read_json(dir.join("absent.json")),
        Err(Error::Io { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn writing_refuses_non_finite_numbers() {
    let mut report = synthetic_report(2);
    report.rows[1].non_member_losses[5] = f64::INFINITY;
    assert!(matches!(
        report.to_json_string(&WriteOptions::default()),
        Err(Error::NonFinite {
            what: "non_member_losses",
            first_index: 5,
            ..
        })
    ));
    let mut report = synthetic_report(2);
    report.rows[0].perplexity = Some(f64::NAN);
    assert!(report.to_json_string(&WriteOptions::default()).is_err());
}

fn shard_part(full: &AuditReport, shard: Shard) -> AuditReport {
    let mut part = AuditReport::new(full.provenance.clone());
    for r in full.rows.iter().filter(|r| shard.selects(r.index)) {
        part.push(r.clone()).unwrap();
    }
    part
}

#[test]
fn merging_three_shards_gives_the_unsharded_bytes_in_any_order() {
    let full = synthetic_report(10);
    let expected = full.to_json_string(&WriteOptions::default()).unwrap();
    let parts: Vec<AuditReport> = (1..=3)
        .map(|i| shard_part(&full, Shard::new(i, 3).unwrap()))
        .collect();
    assert_eq!(
        parts.iter().map(|p| p.rows.len()).collect::<Vec<_>>(),
        vec![4, 3, 3],
        "round-robin shards balance"
    );
    for order in [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ] {
        let merged = AuditReport::merge(order.map(|k| parts[k].clone())).unwrap();
        assert_eq!(
            merged.to_json_string(&WriteOptions::default()).unwrap(),
            expected,
            "order {order:?}"
        );
    }
}

#[test]
fn merging_refuses_duplicates_mismatched_provenance_and_nothing() {
    let full = synthetic_report(10);
    let a = shard_part(&full, "1/2".parse().unwrap());
    let b = shard_part(&full, "2/2".parse().unwrap());
    assert!(AuditReport::merge([a.clone(), b.clone()]).is_ok());

    let err = AuditReport::merge([a.clone(), b.clone(), a.clone()]).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidParameter { reason, .. } if reason.contains("more than once")),
        "{err}"
    );

    let mut other = b.clone();
    other.provenance.seeds.insert("train".into(), 99);
    let err = AuditReport::merge([a.clone(), other]).unwrap_err();
    assert!(err.to_string().contains("provenance"), "{err}");

    let mut newer = b.clone();
    newer.schema_version += 1;
    assert!(AuditReport::merge([a.clone(), newer]).is_err());

    assert!(AuditReport::merge(Vec::<AuditReport>::new()).is_err());

    // A report refuses a second row with the same index.
    let mut single = a.clone();
    assert!(single.push(full.rows[0].clone()).is_err());
}

#[test]
fn shards_parse_validate_and_partition_the_plan() {
    let s: Shard = " 3/4 ".parse().unwrap();
    assert_eq!((s.index(), s.count()), (3, 4));
    assert_eq!(s.to_string(), "3/4");
    assert_eq!(Shard::whole().indices(3), vec![0, 1, 2]);
    for bad in [
        "0/3", "4/3", "1/0", "0/0", "", "3", "a/3", "1/b", "-1/3", "1/3/4", "1.5/3",
    ] {
        match bad.parse::<Shard>() {
            Err(Error::InvalidParameter { name: "shard", .. }) => {}
            other => panic!("{bad:?} should be refused, got {other:?}"),
        }
    }
    assert!(Shard::new(0, 2).is_err() && Shard::new(1, 0).is_err());
    // Every plan row lands in exactly one shard, round-robin.
    for n in 1..=5 {
        for plan in [0, 1, 7, 10] {
            let mut seen = vec![0; plan];
            for i in 1..=n {
                let shard = Shard::new(i, n).unwrap();
                for r in shard.indices(plan) {
                    assert!(shard.selects(r));
                    assert_eq!(r % n, i - 1);
                    seen[r] += 1;
                }
            }
            assert!(seen.iter().all(|&c| c == 1));
        }
    }
}

#[test]
fn a_partial_report_says_what_is_left_to_resume() {
    let full = synthetic_report(10);
    let part = shard_part(&full, "2/3".parse().unwrap());
    assert_eq!(part.completed_indices(), vec![1, 4, 7]);
    assert_eq!(part.missing_rows(10), vec![0, 2, 3, 5, 6, 8, 9]);
    assert_eq!(part.missing_rows(3), vec![0, 2]);
    assert!(full.missing_rows(10).is_empty());
    // Through JSON, as a resumed runner would read it.
    let json = part.to_json_string(&WriteOptions::default()).unwrap();
    let back = AuditReport::from_json_str(&json, "partial").unwrap();
    assert_eq!(back.missing_rows(10), vec![0, 2, 3, 5, 6, 8, 9]);
}

#[test]
fn csv_quotes_a_scheme_name_with_a_comma_and_a_quote() {
    let mut report = AuditReport::new(provenance());
    let mut row = AuditRow::new(3, "int4 \"fast\", g128", RowKind::Quantizer)
        .with_config(serde_json::json!({ "bits": 4 }))
        .with_timing(1.5, 7);
    row.bits_per_weight = Some(4.5);
    row.mis = Some(0.9);
    report.push(row).unwrap();
    let csv = report.to_csv_string();
    let lines: Vec<&str> = csv.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0],
        "index,scheme,kind,training,config,bits_per_weight,model_bytes,accuracy,perplexity,\
         embedding_cosine,mis,mis_ci_lower,mis_ci_upper,mis_ci_level,advantage,\
         advantage_ci_lower,advantage_ci_upper,auc,auc_ci_lower,auc_ci_upper,tpr_at_1pct,\
         tpr_at_01pct,member_loss_mean,non_member_loss_mean,mean_relative_error,\
         max_relative_error,worst_layer,seconds,seed"
    );
    assert_eq!(
        lines[1],
        r#"3,"int4 ""fast"", g128",quantizer,0,"{""bits"":4}",4.5,,,,,0.9,,,,,,,,,,,,,,,,,1.5,7"#
    );
    assert!(csv.ends_with("\r\n"));
}

#[test]
fn csv_and_markdown_have_one_line_per_row() {
    let report = synthetic_report(10);
    assert_eq!(report.to_csv_string().split_terminator("\r\n").count(), 11);
    let md = report.to_markdown_string();
    let lines: Vec<&str> = md.lines().collect();
    assert_eq!(lines.len(), 2 + 10, "header, separator, one line per row");
    assert!(lines[0].starts_with("| scheme | bits/weight | size | accuracy | MIS [CI] | AUC"));
    assert!(lines[0].ends_with("| time (s) |"));
    assert!(lines[0].contains("TPR@1%") && lines[0].contains("TPR@0.1%"));
    assert!(lines[1].starts_with("| :--- | ---: |"));
    let cells = lines[0].matches(" | ").count();
    for (l, r) in lines[2..].iter().zip(&report.rows) {
        assert!(l.starts_with(&format!("| {} |", r.scheme)));
        assert_eq!(l.matches(" | ").count(), cells, "{l}");
    }
    // fp32 has no bits/weight; odd rows no TPR@0.1%: "–".
    assert!(lines[2].starts_with("| fp32 | – | "));
    let mis = report.rows[1].mis.unwrap();
    assert!(lines[3].contains(&format!("{mis:.3} [")));
    assert_eq!(lines[3].matches(" – ").count(), 1);

    // A `|` in a scheme name must not break the table.
    let mut r = AuditReport::new(provenance());
    r.push(AuditRow::new(0, "a|b", RowKind::Quantizer)).unwrap();
    let md = r.to_markdown_string();
    assert!(md.contains("| a\\|b |"));
}

#[test]
fn hashes_are_sha256_of_the_documented_bytes() {
    // FIPS 180-2 test vector.
    assert_eq!(
        hash_bytes(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let values = [1.0f32, -2.5, 3.25e-7, 0.0];
    let le: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(hash_f32(&values), hash_bytes(&le));

    let dev = Device::Cpu;
    let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.37 - 2.0).collect();
    let t = Tensor::from_vec(data.clone(), (4, 6), &dev).unwrap();
    let same = Tensor::from_vec(data.clone(), (4, 6), &dev).unwrap();
    assert_eq!(hash_tensor(&t).unwrap(), hash_tensor(&same).unwrap());
    let h = hash_tensor(&t).unwrap();
    assert_eq!(h.len(), 64);
    assert!(
        h.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    // A strided view of the same values hashes the same.
    let transposed_back = t.t().unwrap().contiguous().unwrap().t().unwrap();
    assert_eq!(hash_tensor(&transposed_back).unwrap(), h);
    // One changed element, another shape or another dtype: another hash.
    let mut changed = data.clone();
    changed[13] = f32::from_bits(changed[13].to_bits() ^ 1);
    let changed = Tensor::from_vec(changed, (4, 6), &dev).unwrap();
    assert_ne!(hash_tensor(&changed).unwrap(), h);
    assert_ne!(hash_tensor(&t.reshape((6, 4)).unwrap()).unwrap(), h);
    assert_ne!(hash_tensor(&t.to_dtype(DType::F64).unwrap()).unwrap(), h);
    // Independent reference: the documented layout, dtype name, 0, rank and dims as u64 LE,
    // then the values' LE bytes.
    let mut bytes = b"f32\0".to_vec();
    for d in [2u64, 4, 6] {
        bytes.extend(d.to_le_bytes());
    }
    bytes.extend(data.iter().flat_map(|v| v.to_le_bytes()));
    assert_eq!(h, hash_bytes(&bytes));
}

fn naive_front(points: &[(f64, f64)], higher_is_better: bool) -> Vec<usize> {
    let s = if higher_is_better { 1.0 } else { -1.0 };
    let dominates = |a: (f64, f64), b: (f64, f64)| {
        let (au, am, bu, bm) = (s * a.0, a.1, s * b.0, b.1);
        au >= bu && am >= bm && (au > bu || am > bm)
    };
    let mut front: Vec<usize> = (0..points.len())
        .filter(|&i| !points.iter().any(|&p| dominates(p, points[i])))
        .collect();
    front.sort_by(|&a, &b| points[a].0.total_cmp(&points[b].0).then(a.cmp(&b)));
    front
}

#[test]
fn the_frontier_is_the_set_of_undominated_points() {
    let mut rng = SplitMix64::new(7);
    for trial in 0..50 {
        let n = 1 + trial % 12;
        // Coarse values, so that ties and duplicates happen.
        let pts: Vec<(f64, f64)> = (0..n)
            .map(|_| {
                (
                    (rng.next_f64() * 5.0).round(),
                    (rng.next_f64() * 5.0).round() / 5.0,
                )
            })
            .collect();
        for (metric, higher) in [
            (UtilityMetric::Accuracy, true),
            (UtilityMetric::Perplexity, false),
            (UtilityMetric::EmbeddingCosine, true),
        ] {
            assert_eq!(
                frontier_indices(&pts, metric).unwrap(),
                naive_front(&pts, higher),
                "{pts:?} {metric:?}"
            );
        }
    }
    assert!(frontier_indices(&[(f64::NAN, 0.5)], UtilityMetric::Accuracy).is_err());
}

#[test]
fn histogram_counts_fractions_per_bin() {
    let mut rng = SplitMix64::new(3);
    let values: Vec<f64> = (0..500).map(|_| rng.next_f64() * 4.0 - 1.0).collect();
    let (lo, hi, bins) = (-0.5, 2.5, 7);
    let got = histogram(&values, lo, hi, bins);
    let width = (hi - lo) / bins as f64;
    for (b, &g) in got.iter().enumerate() {
        let (a, z) = (lo + b as f64 * width, lo + (b + 1) as f64 * width);
        let naive = values
            .iter()
            .filter(|&&v| v >= a && (v < z || (b == bins - 1 && v <= hi)))
            .count() as f64
            / values.len() as f64;
        assert!((g - naive).abs() < 1e-12, "bin {b}: {g} vs {naive}");
    }
    assert_eq!(histogram(&[hi], lo, hi, bins)[bins - 1], 1.0);
    assert!(histogram(&values, lo, hi, 0).is_empty());
}

#[test]
fn rows_are_filled_from_an_estimate_and_a_quantization_run() {
    let mut rng = SplitMix64::new(11);
    let members: Vec<f64> = (0..400).map(|_| rng.next_f64()).collect();
    let non_members: Vec<f64> = (0..1200).map(|_| rng.next_f64() + 0.1).collect();
    let sample = MembershipSample::new(members, non_members).unwrap();
    let est = LossThreshold::new()
        .with_fprs(&[0.01, 0.001])
        .estimate(&sample)
        .unwrap();
    let row = AuditRow::new(0, "x", RowKind::Quantizer)
        .with_estimate(&est)
        .with_sample(&sample);
    assert_eq!(row.mis, Some(est.mis));
    assert_eq!(row.advantage, Some(est.advantage));
    assert_eq!(row.auc, est.auc.map(|a| a.value));
    assert_eq!(row.tpr_at_1pct, est.tpr_at(0.01).map(|t| t.tpr));
    assert_eq!(row.tpr_at_01pct, est.tpr_at(0.001).map(|t| t.tpr));
    assert_eq!(row.member_losses.len(), 400);

    // Layer errors of a real (tiny) quantization run, against a naive mean and max.
    let mut mlp = Mlp::new(MlpConfig::new(8, &[16, 16], 4), 5, &Device::Cpu).unwrap();
    let int3 = UniformQuantizer::new(QuantSpec::int3().per_channel()).unwrap();
    let q = SequentialQuantization::new(&int3).run(&mut mlp).unwrap();
    let row = AuditRow::new(1, "int3", RowKind::Quantizer).with_quantization_report(&q);
    let errs: Vec<f64> = q.layers.iter().map(|l| l.relative_error).collect();
    let summary = row.layer_error.unwrap();
    let naive_mean = errs.iter().sum::<f64>() / errs.len() as f64;
    assert!((summary.mean_relative_error - naive_mean).abs() < 1e-15);
    let worst = errs.iter().cloned().fold(f64::MIN, f64::max);
    assert_eq!(summary.max_relative_error, worst);
    let worst_layer = &q.layers[errs.iter().position(|&e| e == worst).unwrap()].name;
    assert_eq!(&summary.worst_layer, worst_layer);
    assert_eq!(summary.layers, 3);
    assert_eq!(row.bits_per_weight, Some(q.bits_per_weight()));
}

/// The trimmed contents of the `<text>` elements of an SVG (plotters puts each on its own line).
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let body = &t[t.find('>')? + 1..];
            Some(body[..body.find("</text>")?].trim().to_string())
        })
        .collect()
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn write_all_writes_tables_and_svg_plots() {
    let mut report = synthetic_report(10);
    // Trim the losses so the SVGs stay small and the test fast.
    for r in &mut report.rows {
        r.member_losses.truncate(100);
        r.non_member_losses.truncate(1000);
    }
    let root = temp_dir("all");
    let dir = root.join("nested");
    let written = report.write_all(&dir, &WriteOptions::default()).unwrap();
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "report.json",
            "report.csv",
            "report.md",
            "frontier.svg",
            "roc.svg",
            "losses.svg"
        ]
    );
    for p in &written {
        assert!(p.exists());
    }
    for svg in ["frontier.svg", "roc.svg", "losses.svg"] {
        let text = read(&dir.join(svg));
        assert!(text.trim_start().starts_with("<svg"), "{svg}");
        assert!(text.trim_end().ends_with("</svg>"), "{svg}");
        // XML-ish: every element that opens with a body closes.
        for tag in ["svg", "text"] {
            let opened = text.matches(&format!("<{tag} ")).count();
            assert!(opened > 0 && opened == text.matches(&format!("</{tag}>")).count());
        }
        let texts = svg_texts(&text);
        for s in SCHEMES {
            // The frontier numbers its points and names them in a key ("3  int4-g128").
            let named = |t: &String| t == s || t.ends_with(&format!(" {s}"));
            assert!(texts.iter().any(named), "{svg} lacks {s}");
        }
    }
    let frontier = read(&dir.join("frontier.svg"));
    assert!(frontier.contains("accuracy (fraction correct"));
    assert!(frontier.contains("MIS = 1 − attack advantage"));
    assert!(frontier.contains("Pareto front"));
    assert!(frontier.contains("95 % confidence interval"));
    let roc = read(&dir.join("roc.svg"));
    assert!(roc.contains("false positive rate") && roc.contains("true positive rate"));
    assert!(roc.contains("log scale") && roc.contains("chance (TPR = FPR)"));
    // Log axes from 1/1000: decade ticks.
    let ticks = svg_texts(&roc);
    for tick in ["0.001", "0.01", "0.1", "1"] {
        assert!(
            ticks.iter().any(|t| t == tick),
            "roc.svg has no tick {tick}: {ticks:?}"
        );
    }
    let losses = read(&dir.join("losses.svg"));
    assert!(losses.contains("per-sample loss") && losses.contains("fraction of samples"));

    // Perplexity on the x axis (lower is better), chosen by the caller.
    let mut ppl = report.clone();
    for (i, r) in ppl.rows.iter_mut().enumerate() {
        r.perplexity = Some(10.0 + i as f64);
    }
    let opts = WriteOptions::default()
        .with_utility(UtilityMetric::Perplexity)
        .without_losses();
    let dir2 = temp_dir("ppl");
    ppl.write_all(&dir2, &opts).unwrap();
    assert!(
        read(&dir2.join("frontier.svg"))
            .contains("perplexity (exp of mean token NLL, lower is better)")
    );
    assert!(!read(&dir2.join("report.json")).contains("member_losses"));

    // Nothing to plot: only the tables.
    let mut bare = AuditReport::new(provenance());
    bare.push(AuditRow::new(0, "fp32", RowKind::FullPrecision))
        .unwrap();
    let dir3 = temp_dir("bare");
    assert_eq!(
        bare.write_all(&dir3, &WriteOptions::default())
            .unwrap()
            .len(),
        3
    );
    for d in [root, dir2, dir3] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn timings_stay_out_of_the_default_json_so_runs_compare_equal() {
    let report = synthetic_report(3);
    let default = report.to_json_string(&WriteOptions::default()).unwrap();
    assert!(!default.contains("\"seconds\""));
    let back = AuditReport::from_json_str(&default, "default").unwrap();
    assert!(back.rows.iter().all(|r| r.seconds.is_none()));
    assert!(!back.to_markdown_string().contains("time (s)"));
    let timed = report
        .to_json_string(&WriteOptions::default().with_timing())
        .unwrap();
    assert_eq!(timed.matches("\"seconds\"").count(), 3);
}

#[test]
fn extra_metrics_are_columns_in_name_order() {
    let mut report = AuditReport::new(provenance());
    report
        .push(AuditRow::new(0, "fp32", RowKind::FullPrecision).with_metric("zeta", 1.0))
        .unwrap();
    report
        .push(
            AuditRow::new(1, "int4", RowKind::Quantizer)
                .with_metric("alpha", 0.25)
                .with_metric("zeta", 0.5),
        )
        .unwrap();
    let csv = report.to_csv_string();
    let lines: Vec<&str> = csv.split_terminator("\r\n").collect();
    assert!(
        lines[0].ends_with(",seconds,seed,alpha,zeta"),
        "{}",
        lines[0]
    );
    assert!(lines[1].ends_with(",,1"), "fp32 has no alpha: {}", lines[1]);
    assert!(lines[2].ends_with(",0.25,0.5"), "{}", lines[2]);
    let md = report.to_markdown_string();
    let header = md.lines().next().unwrap();
    assert!(header.ends_with("| alpha | zeta |"), "{header}");
    assert!(md.lines().nth(2).unwrap().ends_with("| – | 1.0000 |"));
    let json = report.to_json_string(&WriteOptions::default()).unwrap();
    assert_eq!(AuditReport::from_json_str(&json, "m").unwrap(), report);
}
