//! Explanation and interpretability probes: attributions against closed forms (a linear model)
//! and completeness, rank metrics against naive f64 implementations written here,
//! faithfulness curves against a hand-computed linear softmax, counterfactual validity checked
//! with the model's own forward, the logit lens and the FFN-neuron decomposition against the
//! plain forward pass and a capture hook, fact recall against `generate`, bad inputs, and
//! SmolLM2-135M's recall of capitals (fixture).

mod common;

use candle_core::{DType, Device, Tensor};
use common::TestRng;
use proptest::prelude::*;
use quantlens::Error;
use quantlens::explain::{
    Agreement, AgreementSummary, Attributor, Baseline, CounterfactualSearch, FACTS, FactCategory,
    FactPrompt, Faithfulness, Goal, IntegratedGradients, LogitLens, Method, NeuronRetention,
    NeuronScores, PathRule, RecallSummary, Score, Target, cosine_similarity, kendall_tau_b, recall,
    spearman, top_k_jaccard, validity_on,
};
use quantlens::mis::Bootstrap;
use quantlens::model::{
    Activation, ForwardHook, GenerateConfig, Llama, LlamaConfig, Mlp, MlpConfig, QuantizableModel,
};

fn dev() -> Device {
    Device::Cpu
}

fn normal_vec(n: usize, std: f64, seed: u64) -> Vec<f32> {
    let mut g = TestRng::new(seed);
    (0..n).map(|_| (g.normal() * std) as f32).collect()
}

fn to_f64(t: &Tensor) -> Vec<f64> {
    common::values(t).into_iter().map(f64::from).collect()
}

/// A linear classifier (an MLP with no hidden layer) and its weight `[c, d]` and bias, in f64.
fn linear_model(d: usize, c: usize, seed: u64) -> (Mlp, Vec<Vec<f64>>, Vec<f64>) {
    let mlp = Mlp::new(MlpConfig::new(d, &[], c), seed, &dev()).unwrap();
    let w = to_f64(&mlp.weight("layers.0").unwrap());
    let b = to_f64(mlp.linear_layer("layers.0").unwrap().bias().unwrap());
    (mlp, w.chunks(d).map(|r| r.to_vec()).collect(), b)
}

/// A tiny decoder whose projections are N(0, 1/in) (so attention and the FFNs do real work;
/// at the init std 0.02 the model is nearly constant).
fn tiny_llama(seed: u64) -> Llama {
    let mut model = Llama::new(
        LlamaConfig::tiny(64, 32, 2, 4, 2).max_seq_len(16),
        seed,
        &dev(),
    )
    .unwrap();
    let mut g = TestRng::new(seed ^ 0x5eed);
    for name in model.layer_names() {
        let (o, i) = model.weight(&name).unwrap().dims2().unwrap();
        let std = 1.0 / (i as f64).sqrt();
        let w: Vec<f32> = (0..o * i).map(|_| (g.normal() * std) as f32).collect();
        model
            .set_weight(&name, Tensor::from_vec(w, (o, i), &dev()).unwrap().into())
            .unwrap();
    }
    model
}

fn random_ids(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut g = TestRng::new(seed);
    (0..n)
        .map(|_| (g.next_u64() % vocab as u64) as u32)
        .collect()
}

/// The model's last-position logits for `ids`, through the ordinary forward pass.
fn last_logits(model: &Llama, ids: &[u32]) -> Vec<f64> {
    let x = Tensor::from_slice(ids, (1, ids.len()), &dev()).unwrap();
    let logits = model.forward(&x).unwrap();
    to_f64(&logits.get(0).unwrap().get(ids.len() - 1).unwrap())
}

fn log_softmax(row: &[f64]) -> Vec<f64> {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
    row.iter().map(|v| v - lse).collect()
}

// ---------------------------------------------------------------- attributions

#[test]
fn attributions_of_a_linear_model_are_weights_times_input() {
    let (d, c) = (7, 4);
    let (mlp, w, _) = linear_model(d, c, 11);
    let x = normal_vec(d, 1.5, 3);
    let xt = Tensor::from_slice(&x, d, &dev()).unwrap();
    assert_eq!(w.len(), c);
    for (class, row) in w.iter().enumerate() {
        let want: Vec<f64> = (0..d).map(|j| row[j] * f64::from(x[j])).collect();
        for method in [
            Attributor::gradient_times_input(),
            Attributor::integrated_gradients(8),
            Attributor::new(Method::IntegratedGradients(
                IntegratedGradients::new(3).rule(PathRule::Trapezoid),
            )),
        ] {
            let a = method
                .attribute(|b| mlp.forward(b), &xt, Target::Class(class))
                .unwrap();
            assert_eq!(a.target, class);
            for (got, want) in a.values.iter().zip(&want) {
                assert!(
                    (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                    "{got} vs {want}"
                );
            }
        }
    }
    // With a baseline x', integrated gradients of a linear score are w ⊙ (x − x').
    let base = normal_vec(d, 1.0, 4);
    let ig = Attributor::new(Method::IntegratedGradients(
        IntegratedGradients::new(5).baseline(Baseline::Input(
            Tensor::from_slice(&base, d, &dev()).unwrap(),
        )),
    ));
    let a = ig
        .attribute(|b| mlp.forward(b), &xt, Target::Class(1))
        .unwrap();
    for j in 0..d {
        let want = w[1][j] * (f64::from(x[j]) - f64::from(base[j]));
        assert!((a.values[j] - want).abs() < 1e-5 * (1.0 + want.abs()));
    }
}

#[test]
fn integrated_gradients_are_complete_on_an_mlp() {
    let mlp = Mlp::new(
        MlpConfig::new(10, &[24, 24], 5).activation(Activation::Gelu),
        5,
        &dev(),
    )
    .unwrap();
    for seed in 0..4u64 {
        let x = normal_vec(10, 2.0, 100 + seed);
        let b = normal_vec(10, 0.5, 200 + seed);
        let batch = Tensor::from_vec([x.clone(), b.clone()].concat(), (2, 10), &dev()).unwrap();
        let out = mlp.forward(&batch).unwrap().to_dtype(DType::F64).unwrap();
        let rows: Vec<Vec<f64>> = out.to_vec2().unwrap();
        for (rule, score) in [
            (PathRule::Midpoint, Score::Logit),
            (PathRule::Trapezoid, Score::Logit),
            (PathRule::Midpoint, Score::LogProbability),
        ] {
            let ig = Attributor::new(Method::IntegratedGradients(
                IntegratedGradients::new(64)
                    .rule(rule)
                    .baseline(Baseline::Input(Tensor::from_slice(&b, 10, &dev()).unwrap())),
            ))
            .score(score);
            let xt = Tensor::from_slice(&x, 10, &dev()).unwrap();
            let a = ig
                .attribute(|v| mlp.forward(v), &xt, Target::Predicted)
                .unwrap();
            let s = |r: &[f64]| match score {
                Score::Logit => r[a.target],
                _ => log_softmax(r)[a.target],
            };
            let gap = s(&rows[0]) - s(&rows[1]);
            let sum: f64 = a.values.iter().sum();
            assert!(
                (sum - gap).abs() <= 0.01 * gap.abs(),
                "{rule:?} {score:?}: Σ = {sum}, f(x) − f(x') = {gap}"
            );
            // The predicted class is the test's own argmax.
            let argmax = (0..5).fold(0, |m, i| if rows[0][i] > rows[0][m] { i } else { m });
            assert_eq!(a.target, argmax);
        }
    }
}

#[test]
fn embedding_forward_equals_the_token_forward() {
    let model = tiny_llama(1);
    let ids = random_ids(6, 64, 2);
    let x = Tensor::from_slice(&ids, (1, 6), &dev()).unwrap();
    let e = model.embed(&x).unwrap();
    let a = to_f64(&model.forward(&x).unwrap());
    let b = to_f64(&model.forward_embeddings(&e).unwrap());
    let last = to_f64(&model.forward_embeddings_last(&e).unwrap());
    let max = a.iter().fold(0f64, |m, v| m.max(v.abs()));
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5 * max, "{x} vs {y}");
    }
    for (x, y) in a[5 * 64..].iter().zip(&last) {
        assert!((x - y).abs() <= 1e-5 * max);
    }
}

#[test]
fn integrated_gradients_are_complete_on_a_tiny_llama() {
    let model = tiny_llama(3);
    for seed in 0..3u64 {
        let ids = random_ids(5, 64, 10 + seed);
        let other = random_ids(5, 64, 20 + seed);
        let target = (seed * 17 % 64) as u32;
        // Baseline: another prompt's embeddings, so f(x') comes from the plain forward pass.
        // (Not the zero embedding: behind RMSNorm the decoder is scale-invariant, f(αx) jumps
        // from f(0) to about f(x) by α ≈ 1e-5, and no 64-point rule integrates that step.)
        let other_e = model
            .embed(&Tensor::from_slice(&other, (1, 5), &dev()).unwrap())
            .unwrap()
            .squeeze(0)
            .unwrap();
        for rule in [PathRule::Midpoint, PathRule::Trapezoid] {
            let ig = Attributor::new(Method::IntegratedGradients(
                IntegratedGradients::new(64)
                    .rule(rule)
                    .baseline(Baseline::Input(other_e.clone())),
            ));
            let a = ig
                .attribute_tokens(&model, &ids, Target::Class(target as usize))
                .unwrap();
            assert_eq!(a.values.len(), 5);
            let fx = last_logits(&model, &ids)[target as usize];
            let fb = last_logits(&model, &other)[target as usize];
            let sum: f64 = a.values.iter().sum();
            assert!((a.score - fx).abs() < 1e-4 * (1.0 + fx.abs()));
            assert!((a.baseline_score.unwrap() - fb).abs() < 1e-4 * (1.0 + fb.abs()));
            assert!(
                (sum - (fx - fb)).abs() <= 0.01 * (fx - fb).abs(),
                "{rule:?}: Σ = {sum}, f(x) − f(x') = {}",
                fx - fb
            );
        }
    }
}

#[test]
fn identical_models_agree_perfectly() {
    let model = tiny_llama(4);
    let copy = model.clone();
    let ids = random_ids(7, 64, 5);
    let gi = Attributor::gradient_times_input();
    let a = gi
        .attribute_tokens(&model, &ids, Target::Predicted)
        .unwrap();
    let b = gi.attribute_tokens(&copy, &ids, Target::Predicted).unwrap();
    let agreement = Agreement::between(&a.values, &b.values, 3).unwrap();
    assert_eq!(agreement.spearman, 1.0);
    assert_eq!(agreement.kendall, 1.0);
    assert_eq!(agreement.top_k_jaccard, 1.0);
    assert!((agreement.cosine - 1.0).abs() < 1e-12);
    let s = AgreementSummary::of(
        &[agreement; 5],
        Some(&Bootstrap::new(100, 0.95, 1).unwrap()),
    )
    .unwrap();
    assert_eq!(
        (s.n, s.spearman, s.spearman_ci.unwrap().lower),
        (5, 1.0, 1.0)
    );
}

// ---------------------------------------------------------------- rank metrics, naive f64

fn naive_ranks(v: &[f64]) -> Vec<f64> {
    v.iter()
        .map(|x| {
            let below = v.iter().filter(|y| *y < x).count() as f64;
            let equal = v.iter().filter(|y| *y == x).count() as f64;
            below + (equal + 1.0) / 2.0
        })
        .collect()
}

fn naive_pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

fn naive_kendall_b(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len();
    let (mut conc, mut disc, mut tie_a, mut tie_b) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for i in 0..n {
        for j in i + 1..n {
            let (da, db) = (a[i] - a[j], b[i] - b[j]);
            if da == 0.0 && db == 0.0 {
                continue;
            } else if da == 0.0 {
                tie_a += 1.0;
            } else if db == 0.0 {
                tie_b += 1.0;
            } else if da * db > 0.0 {
                conc += 1.0;
            } else {
                disc += 1.0;
            }
        }
    }
    (conc - disc) / ((conc + disc + tie_a) * (conc + disc + tie_b)).sqrt()
}

/// Index i is in the top k when fewer than k indices beat it (larger |v|, or equal and lower).
fn naive_top_k(v: &[f64], k: usize) -> Vec<bool> {
    (0..v.len())
        .map(|i| {
            (0..v.len())
                .filter(|&j| v[j].abs() > v[i].abs() || (v[j].abs() == v[i].abs() && j < i))
                .count()
                < k
        })
        .collect()
}

fn tied_vector(len: usize) -> impl Strategy<Value = Vec<f64>> {
    // Small integers (and a signed zero) so that ties are frequent.
    prop::collection::vec(
        (-3i32..=3).prop_map(|v| if v == 0 { -0.0 } else { f64::from(v) / 2.0 }),
        len,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn rank_metrics_equal_naive_implementations(
        (a, b, k) in (2usize..40).prop_flat_map(|n| (tied_vector(n), tied_vector(n), 1..=n))
    ) {
        let constant = |v: &[f64]| v.iter().all(|x| *x == v[0]);
        if constant(&a) || constant(&b) {
            prop_assert!(spearman(&a, &b).is_err());
            prop_assert!(kendall_tau_b(&a, &b).is_err());
        } else {
            let want = naive_pearson(&naive_ranks(&a), &naive_ranks(&b));
            prop_assert!((spearman(&a, &b).unwrap() - want).abs() < 1e-12);
            let want = naive_kendall_b(&a, &b);
            prop_assert!((kendall_tau_b(&a, &b).unwrap() - want).abs() < 1e-12);
        }
        let (ta, tb) = (naive_top_k(&a, k), naive_top_k(&b, k));
        let inter = ta.iter().zip(&tb).filter(|(x, y)| **x && **y).count() as f64;
        let union = ta.iter().zip(&tb).filter(|(x, y)| **x || **y).count() as f64;
        prop_assert!((top_k_jaccard(&a, &b, k).unwrap() - inter / union).abs() < 1e-15);
        prop_assert!((top_k_jaccard(&a, &b, k).unwrap() - top_k_jaccard(&b, &a, k).unwrap()).abs() < 1e-15);
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm(&a) == 0.0 || norm(&b) == 0.0 {
            prop_assert!(cosine_similarity(&a, &b).is_err());
        } else {
            let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            prop_assert!((cosine_similarity(&a, &b).unwrap() - dot / (norm(&a) * norm(&b))).abs() < 1e-12);
        }
    }

    #[test]
    fn rank_metrics_of_continuous_vectors_equal_naive_ones(
        (a, b) in (2usize..60).prop_flat_map(|n| (
            prop::collection::vec(-1e3f64..1e3, n),
            prop::collection::vec(-1e3f64..1e3, n),
        ))
    ) {
        prop_assume!(a.iter().any(|x| *x != a[0]) && b.iter().any(|x| *x != b[0]));
        let want = naive_pearson(&naive_ranks(&a), &naive_ranks(&b));
        prop_assert!((spearman(&a, &b).unwrap() - want).abs() < 1e-12);
        prop_assert!((kendall_tau_b(&a, &b).unwrap() - naive_kendall_b(&a, &b)).abs() < 1e-12);
        // Reversed order: both rank correlations are −1 (no ties among continuous draws).
        let rev: Vec<f64> = a.iter().map(|x| -x).collect();
        let distinct = {
            let mut s = a.clone();
            s.sort_by(f64::total_cmp);
            s.windows(2).all(|w| w[0] != w[1])
        };
        if distinct {
            prop_assert!((spearman(&a, &rev).unwrap() + 1.0).abs() < 1e-12);
            prop_assert!((kendall_tau_b(&a, &rev).unwrap() + 1.0).abs() < 1e-12);
        }
    }
}

#[test]
fn metric_errors_name_the_bad_input() {
    assert!(matches!(
        spearman(&[1.0, 2.0], &[1.0]),
        Err(Error::ShapeMismatch(_))
    ));
    assert!(matches!(
        kendall_tau_b(&[], &[]),
        Err(Error::TooFewSamples { .. })
    ));
    assert!(matches!(
        cosine_similarity(&[1.0, f64::NAN], &[1.0, 2.0]),
        Err(Error::NonFinite { first_index: 1, .. })
    ));
    assert!(matches!(
        top_k_jaccard(&[1.0, 2.0], &[1.0, 2.0], 0),
        Err(Error::InvalidParameter { name: "k", .. })
    ));
    assert!(matches!(
        top_k_jaccard(&[1.0, 2.0], &[1.0, 2.0], 3),
        Err(Error::InvalidParameter { name: "k", .. })
    ));
    assert!(matches!(
        spearman(&[1.0, f64::INFINITY], &[1.0, 2.0]),
        Err(Error::NonFinite { .. })
    ));
    assert!(AgreementSummary::of(&[], None).is_err());
}

// ---------------------------------------------------------------- faithfulness

#[test]
fn deletion_and_insertion_curves_of_a_linear_softmax() {
    let (d, c) = (6, 3);
    let (mlp, w, bias) = linear_model(d, c, 21);
    let x = normal_vec(d, 2.0, 22);
    let base = normal_vec(d, 0.3, 23);
    let xt = Tensor::from_slice(&x, d, &dev()).unwrap();
    let baseline = Baseline::Input(Tensor::from_slice(&base, d, &dev()).unwrap());
    let a = Attributor::gradient_times_input()
        .attribute(|v| mlp.forward(v), &xt, Target::Class(2))
        .unwrap();
    let faith = Faithfulness::new().fractions(&[0.2, 0.5]);
    let curves = faith
        .curves(|v| mlp.forward(v), &xt, &a, &baseline)
        .unwrap();
    // Naive: the target probability of a mixed input, in f64.
    let prob = |keep: &dyn Fn(usize) -> bool| -> f64 {
        let z: Vec<f64> = (0..c)
            .map(|k| {
                bias[k]
                    + (0..d)
                        .map(|j| w[k][j] * f64::from(if keep(j) { x[j] } else { base[j] }))
                        .sum::<f64>()
            })
            .collect();
        log_softmax(&z)[2].exp()
    };
    // Order: attribution descending, ties to the lower index.
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&i, &j| {
        a.values[j]
            .partial_cmp(&a.values[i])
            .unwrap()
            .then(i.cmp(&j))
    });
    let top = |k: usize| order[..k].to_vec();
    for k in 0..=d {
        let t = top(k);
        let del = prob(&|j| !t.contains(&j));
        let ins = prob(&|j| t.contains(&j));
        assert!((curves.deletion[k] - del).abs() < 1e-5, "deletion {k}");
        assert!((curves.insertion[k] - ins).abs() < 1e-5, "insertion {k}");
        assert!((curves.fractions[k] - k as f64 / d as f64).abs() < 1e-15);
    }
    let auc = |y: &[f64]| {
        (0..d)
            .map(|k| (y[k] + y[k + 1]) / (2.0 * d as f64))
            .sum::<f64>()
    };
    assert!((curves.deletion_auc - auc(&curves.deletion)).abs() < 1e-12);
    assert!((curves.insertion_auc - auc(&curves.insertion)).abs() < 1e-12);
    // ⌈0.2·6⌉ = 2 and ⌈0.5·6⌉ = 3 features.
    let p = prob(&|_| true);
    let comp = p - (prob(&|j| !top(2).contains(&j)) + prob(&|j| !top(3).contains(&j))) / 2.0;
    let suff = p - (prob(&|j| top(2).contains(&j)) + prob(&|j| top(3).contains(&j))) / 2.0;
    assert!((curves.comprehensiveness - comp).abs() < 1e-5);
    assert!((curves.sufficiency - suff).abs() < 1e-5);
    // A coarser curve keeps its end points.
    let coarse = Faithfulness::new()
        .steps(2)
        .curves(|v| mlp.forward(v), &xt, &a, &baseline)
        .unwrap();
    assert_eq!(coarse.fractions, [0.0, 0.5, 1.0]);
    assert!((coarse.deletion[2] - prob(&|_| false)).abs() < 1e-5);
}

#[test]
fn token_curves_of_a_tiny_llama_start_and_end_at_the_plain_forward() {
    let model = tiny_llama(6);
    let ids = random_ids(5, 64, 7);
    let a = Attributor::integrated_gradients(16)
        .attribute_tokens(&model, &ids, Target::Predicted)
        .unwrap();
    let c = Faithfulness::new()
        .token_curves(&model, &ids, &a, &Baseline::Zeros)
        .unwrap();
    let p = log_softmax(&last_logits(&model, &ids))[a.target].exp();
    assert!((c.deletion[0] - p).abs() < 1e-5 && (c.insertion[5] - p).abs() < 1e-5);
    assert_eq!(c.deletion.len(), 6);
}

// ---------------------------------------------------------------- counterfactuals

#[test]
fn counterfactuals_flip_the_model_they_were_found_on() {
    let mlp = Mlp::new(MlpConfig::new(5, &[16], 3), 31, &dev()).unwrap();
    let x = Tensor::from_vec(normal_vec(8 * 5, 1.0, 32), (8, 5), &dev()).unwrap();
    let xs = to_f64(&x);
    let predict = |rows: &Tensor| -> Vec<usize> {
        let out: Vec<Vec<f32>> = mlp.forward(rows).unwrap().to_vec2().unwrap();
        out.iter()
            .map(|r| (0..r.len()).fold(0, |m, i| if r[i] > r[m] { i } else { m }))
            .collect()
    };
    let before = predict(&x);
    for goal in [Goal::AwayFromPrediction, Goal::Class(1)] {
        let search = CounterfactualSearch::new()
            .goal(goal)
            .step_size(0.5)
            .max_steps(2000)
            .penalties(0.001, 0.01)
            .margin(0.05);
        let cfs = search.search(|v| mlp.forward(v), &x).unwrap();
        assert!(cfs.iter().filter(|c| c.valid).count() >= 6, "{goal:?}");
        let edited: Vec<f32> = cfs.iter().flat_map(|c| c.input.clone()).collect();
        let after = predict(&Tensor::from_vec(edited, (8, 5), &dev()).unwrap());
        for (i, cf) in cfs.iter().enumerate() {
            assert_eq!(cf.original_class, before[i]);
            assert_eq!(cf.class, after[i]);
            let delta: Vec<f64> = (0..5)
                .map(|j| f64::from(cf.input[j]) - xs[i * 5 + j])
                .collect();
            let l1: f64 = delta.iter().map(|v| v.abs()).sum();
            assert!((cf.l1 - l1).abs() < 1e-5 * (1.0 + l1));
            let l2 = delta.iter().map(|v| v * v).sum::<f64>().sqrt();
            assert!((cf.l2 - l2).abs() < 1e-5 * (1.0 + l2));
            if cf.valid {
                match goal {
                    Goal::Class(t) => assert_eq!(after[i], t),
                    _ => assert_ne!(after[i], before[i]),
                }
            }
        }
        // On the same model every valid counterfactual still flips; a constant model flips
        // none.
        let same = validity_on(|v| mlp.forward(v), &x, &cfs).unwrap();
        assert_eq!(same.flip_rate, 1.0);
        if let Goal::Class(_) = goal {
            assert_eq!(same.target_rate, 1.0);
        }
        let mut flat = mlp.clone();
        for name in flat.layer_names() {
            let w = flat.weight(&name).unwrap().zeros_like().unwrap();
            flat.set_weight(&name, w.into()).unwrap();
        }
        let none = validity_on(|v| flat.forward(v), &x, &cfs).unwrap();
        assert_eq!(none.flip_rate, 0.0);
    }
}

// ---------------------------------------------------------------- logit lens and neurons

#[test]
fn logit_lens_at_the_last_layer_is_the_models_own_prediction() {
    let model = tiny_llama(8);
    let ids = random_ids(6, 64, 9);
    let own = log_softmax(&last_logits(&model, &ids));
    for answer in [0u32, 17, 63] {
        let lens = LogitLens::new(&model, &ids, answer).unwrap();
        assert_eq!(lens.log_probs.len(), 2);
        let want = own[answer as usize];
        assert!(
            (lens.log_probs[1] - want).abs() < 1e-5,
            "{} vs {want}",
            lens.log_probs[1]
        );
        let rank = 1 + own.iter().filter(|&&v| v > want).count();
        assert_eq!(lens.ranks[1], rank);
    }
}

/// Records the input of every `down_proj`: the FFN activations of the plain forward pass.
struct DownInputs(Vec<Tensor>);

impl ForwardHook for DownInputs {
    fn layer_input(&mut self, layer: &str, x: &Tensor) -> quantlens::Result<Option<Tensor>> {
        if layer.ends_with("mlp.down_proj") {
            self.0.push(x.clone());
        }
        Ok(None)
    }
}

#[test]
fn ffn_contributions_decompose_the_answer_logit() {
    let model = tiny_llama(12);
    let ids = random_ids(7, 64, 13);
    let t = ids.len() - 1;
    let x = Tensor::from_slice(&ids, (1, ids.len()), &dev()).unwrap();
    let trace = model.trace(&x).unwrap();
    // The trace's FFN activations are what down_proj reads in the plain forward pass.
    let mut hook = DownInputs(Vec::new());
    model.forward_hooked(&x, &mut hook).unwrap();
    assert_eq!(hook.0.len(), 2);
    for (a, b) in trace.ffn_activations.iter().zip(&hook.0) {
        let (a, b) = (to_f64(a), to_f64(b));
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-6));
    }
    let answer = 29u32;
    let scores = NeuronScores::new(&model, &ids, answer).unwrap();
    let width = model.config().intermediate_size;
    assert_eq!((scores.layers, scores.width), (2, width));
    // Naive f64: w = g ⊙ u / rms(h_L), c_lj = m_lj (W_down[:, j] · w).
    let h_last = to_f64(&trace.hidden_states[1].get(0).unwrap().get(t).unwrap());
    let hid = h_last.len();
    let rms = (h_last.iter().map(|v| v * v).sum::<f64>() / hid as f64 + 1e-5).sqrt();
    let g = to_f64(&model.final_norm());
    let u = to_f64(&model.lm_head().get(answer as usize).unwrap());
    let w: Vec<f64> = (0..hid).map(|i| g[i] * u[i] / rms).collect();
    let mut ffn_sum = vec![0.0; hid];
    let mut total = 0.0;
    for l in 0..2 {
        let down = to_f64(&model.weight(&format!("blocks.{l}.mlp.down_proj")).unwrap());
        let m = to_f64(&hook.0[l].get(0).unwrap().get(t).unwrap());
        for j in 0..width {
            let col_dot: f64 = (0..hid).map(|i| down[i * width + j] * w[i]).sum();
            let want = m[j] * col_dot;
            let got = scores.get(l, j).unwrap();
            assert!(
                (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                "{l},{j}: {got} vs {want}"
            );
            total += want;
            for i in 0..hid {
                ffn_sum[i] += down[i * width + j] * m[j];
            }
        }
    }
    // The rest: embedding and attention outputs, h_L minus the FFN outputs.
    let rest: f64 = (0..hid).map(|i| (h_last[i] - ffn_sum[i]) * w[i]).sum();
    let logit = last_logits(&model, &ids)[answer as usize];
    assert!((scores.total() - total).abs() < 1e-4 * (1.0 + total.abs()));
    assert!(
        (scores.total() + rest - logit).abs() < 1e-4 * (1.0 + logit.abs()),
        "{} + {rest} vs {logit}",
        scores.total()
    );
    assert!((scores.logit - logit).abs() < 1e-4 * (1.0 + logit.abs()));

    // Retention: the same model keeps exactly its own top k (no ties among random scores).
    let same = NeuronRetention::new(&scores, &scores, 10).unwrap();
    assert_eq!((same.count, same.retained), (10, 1.0));
    assert_eq!(same.per_layer.iter().sum::<usize>(), 10);
    // Another model: the count is a plain threshold count.
    let other = NeuronScores::new(&tiny_llama(99), &ids, answer).unwrap();
    let r = NeuronRetention::new(&scores, &other, 25).unwrap();
    let mut sorted = scores.scores.clone();
    sorted.sort_by(|a, b| b.partial_cmp(a).unwrap());
    assert_eq!(r.threshold, sorted[24]);
    assert_eq!(
        r.count,
        other.scores.iter().filter(|&&s| s >= sorted[24]).count()
    );
    assert!(
        NeuronRetention::new(&scores, &NeuronScores::new(&model, &ids, 3).unwrap(), 5).is_err()
    );
}

// ---------------------------------------------------------------- fact recall

#[test]
fn recall_agrees_with_greedy_generation_and_naive_log_probabilities() {
    let model = tiny_llama(14);
    let mut outcomes = Vec::new();
    for seed in 0..6u64 {
        let prompt = random_ids(4, 64, 40 + seed);
        let greedy = model.generate(&prompt, &GenerateConfig::new(3)).unwrap();
        // Half the answers are the greedy continuation, half are altered in their last token.
        let mut answer = greedy.clone();
        if seed % 2 == 1 {
            answer[2] = (answer[2] + 1) % 64;
        }
        let fact = FactPrompt::new(prompt.clone(), answer.clone()).unwrap();
        let o = recall(&model, &fact).unwrap();
        assert_eq!(o.exact_match, answer == greedy, "seed {seed}");
        assert!(o.first_token_match && o.first_token_rank == 1 && o.predicted == greedy[0]);
        // Teacher-forced log-probability, summed in f64 from the plain forward's logits.
        let mut want = 0.0;
        for j in 0..3 {
            let ids: Vec<u32> = prompt.iter().chain(&answer[..j]).copied().collect();
            want += log_softmax(&last_logits(&model, &ids))[answer[j] as usize];
        }
        assert!(
            (o.answer_log_prob - want).abs() < 1e-4,
            "{} vs {want}",
            o.answer_log_prob
        );
        outcomes.push(o);
    }
    let s = RecallSummary::of(&outcomes, Some(&Bootstrap::new(100, 0.9, 2).unwrap())).unwrap();
    assert_eq!((s.n, s.exact_match, s.first_token_match), (6, 0.5, 1.0));
    assert!(s.mean_log_prob_ci.unwrap().contains(s.mean_log_prob));
}

// ---------------------------------------------------------------- bad inputs

#[test]
fn bad_inputs_are_errors() {
    let model = tiny_llama(15);
    let mlp = Mlp::new(MlpConfig::new(4, &[8], 3), 1, &dev()).unwrap();
    let f = |v: &Tensor| mlp.forward(v);
    let x = Tensor::new(&[1f32, 2.0, 3.0, 4.0], &dev()).unwrap();
    let gi = Attributor::gradient_times_input();
    assert!(matches!(
        gi.attribute(f, &x, Target::Class(3)),
        Err(Error::TargetOutOfRange {
            value: 3,
            classes: 3,
            ..
        })
    ));
    let nan = Tensor::new(&[1f32, f32::NAN, 3.0, 4.0], &dev()).unwrap();
    assert!(matches!(
        gi.attribute(f, &nan, Target::Predicted),
        Err(Error::NonFinite { .. })
    ));
    let ints = Tensor::new(&[1u32, 2, 3, 4], &dev()).unwrap();
    assert!(matches!(
        gi.attribute(f, &ints, Target::Predicted),
        Err(Error::UnsupportedDType { .. })
    ));
    let scalar = Tensor::new(1f32, &dev()).unwrap();
    assert!(matches!(
        gi.attribute(f, &scalar, Target::Predicted),
        Err(Error::RankMismatch { .. })
    ));
    // Wrong input width: the model's own shape error comes through.
    let short = Tensor::new(&[1f32, 2.0], &dev()).unwrap();
    assert!(gi.attribute(f, &short, Target::Predicted).is_err());
    let ig0 = Attributor::integrated_gradients(0);
    assert!(matches!(
        ig0.attribute(f, &x, Target::Predicted),
        Err(Error::InvalidParameter { .. })
    ));
    let bad_base = Attributor::new(Method::IntegratedGradients(
        IntegratedGradients::new(4).baseline(Baseline::Input(short.clone())),
    ));
    assert!(matches!(
        bad_base.attribute(f, &x, Target::Predicted),
        Err(Error::ShapeMismatch(_))
    ));
    assert!(gi.attribute_rows(f, &x.unsqueeze(0).unwrap(), &[]).is_err());
    // A function that does not return [m, classes].
    assert!(matches!(
        gi.attribute(|v: &Tensor| Ok(v.sum_all()?), &x, Target::Predicted),
        Err(Error::ShapeMismatch(_))
    ));

    // Token attributions: empty prompt, id ≥ vocab, target ≥ vocab, prompt too long.
    assert!(gi.attribute_tokens(&model, &[], Target::Predicted).is_err());
    assert!(matches!(
        gi.attribute_tokens(&model, &[1, 64], Target::Predicted),
        Err(Error::TargetOutOfRange { value: 64, .. })
    ));
    assert!(matches!(
        gi.attribute_tokens(&model, &[1, 2], Target::Class(64)),
        Err(Error::TargetOutOfRange { value: 64, .. })
    ));
    assert!(
        gi.attribute_tokens(&model, &[1; 17], Target::Predicted)
            .is_err()
    );
    let e = Tensor::zeros((1, 3, 31), DType::F32, &dev()).unwrap();
    assert!(matches!(
        model.forward_embeddings(&e),
        Err(Error::ShapeMismatch(_))
    ));
    let e = Tensor::zeros((3, 32), DType::F32, &dev()).unwrap();
    assert!(matches!(
        model.forward_embeddings(&e),
        Err(Error::RankMismatch { .. })
    ));
    let e = Tensor::zeros((1, 3, 32), DType::F64, &dev()).unwrap();
    assert!(model.forward_embeddings(&e).is_err());
    let e = Tensor::zeros((1, 17, 32), DType::F32, &dev()).unwrap();
    assert!(model.forward_embeddings_last(&e).is_err());
    assert!(
        model
            .unembed(&Tensor::zeros(31, DType::F32, &dev()).unwrap())
            .is_err()
    );

    // Interpretability views and recall.
    assert!(matches!(
        LogitLens::new(&model, &[1, 2], 64),
        Err(Error::TargetOutOfRange { .. })
    ));
    assert!(LogitLens::new(&model, &[], 1).is_err());
    assert!(NeuronScores::new(&model, &[1, 2], 99).is_err());
    let s = NeuronScores::new(&model, &[1, 2], 5).unwrap();
    assert!(s.top_k_threshold(0).is_err() && s.top_k_threshold(s.scores.len() + 1).is_err());
    assert!(FactPrompt::new(vec![1], vec![]).is_err());
    assert!(recall(&model, &FactPrompt::new(vec![1], vec![64]).unwrap()).is_err());
    assert!(recall(&model, &FactPrompt::new(vec![70], vec![1]).unwrap()).is_err());

    // Faithfulness.
    let a = gi.attribute(f, &x, Target::Predicted).unwrap();
    for fr in [vec![], vec![0.0], vec![1.5], vec![f64::NAN]] {
        assert!(
            Faithfulness::new()
                .fractions(&fr)
                .curves(f, &x, &a, &Baseline::Zeros)
                .is_err()
        );
    }
    assert!(
        Faithfulness::new()
            .steps(0)
            .curves(f, &x, &a, &Baseline::Zeros)
            .is_err()
    );
    let mut short_a = a.clone();
    short_a.values.pop();
    assert!(matches!(
        Faithfulness::new().curves(f, &x, &short_a, &Baseline::Zeros),
        Err(Error::ShapeMismatch(_))
    ));

    // Counterfactuals.
    let rows = x.unsqueeze(0).unwrap();
    assert!(
        CounterfactualSearch::new()
            .step_size(0.0)
            .search(f, &rows)
            .is_err()
    );
    assert!(
        CounterfactualSearch::new()
            .max_steps(0)
            .search(f, &rows)
            .is_err()
    );
    assert!(
        CounterfactualSearch::new()
            .penalties(-1.0, 0.0)
            .search(f, &rows)
            .is_err()
    );
    assert!(
        CounterfactualSearch::new()
            .bounds(1.0, 0.0)
            .search(f, &rows)
            .is_err()
    );
    assert!(
        CounterfactualSearch::new()
            .goal(Goal::Class(3))
            .search(f, &rows)
            .is_err()
    );
    assert!(matches!(
        CounterfactualSearch::new().search(f, &x),
        Err(Error::RankMismatch { .. })
    ));
    let cfs = CounterfactualSearch::new().search(f, &rows).unwrap();
    let two = Tensor::cat(&[&rows, &rows], 0).unwrap();
    assert!(matches!(
        validity_on(f, &two, &cfs),
        Err(Error::ShapeMismatch(_))
    ));
}

// ---------------------------------------------------------------- SmolLM2 (fixture)

#[test]
fn smollm2_recalls_most_capitals() {
    common::ensure_fixtures();
    let model = Llama::smollm2(&dev()).unwrap();
    let tok = quantlens::text::Tokenizer::smollm2().unwrap();
    let outcomes: Vec<_> = FACTS
        .iter()
        .filter(|f| f.category == FactCategory::Capital)
        .map(|f| recall(&model, &f.tokenize(&tok).unwrap()).unwrap())
        .collect();
    let s = RecallSummary::of(&outcomes, None).unwrap();
    eprintln!("SmolLM2 capitals: {s:?}");
    assert_eq!(s.n, 20);
    // Measured: 16 of 20 exact, mean answer log-probability −1.23 nats.
    assert!(s.exact_match >= 0.6, "{s:?}");
    assert!(s.mean_log_prob > -3.0 && s.mean_log_prob < 0.0, "{s:?}");
    // "The capital of France is" → " Paris".
    assert!(outcomes[0].exact_match);
}
