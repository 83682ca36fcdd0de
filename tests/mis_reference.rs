//! MIS building blocks against naive references written here: O(n·m) Mann–Whitney, a scan over
//! every threshold, binomial sums, O(n²) dominance — never the code under test.

use proptest::prelude::*;
use quantlens::mis::{
    Bootstrap, DpAudit, MisEstimate, Roc, SlicedScores, Statistic, clopper_pearson, dkw_epsilon,
    paired_bootstrap, pareto_front, rank_by_mis,
};
use quantlens::{Error, Interval, MembershipSample, MisEstimator};

// ---------------------------------------------------------------------------------------------
// Naive ROC quantities.

/// Mann–Whitney U / (n₁ n₀), pair by pair.
fn naive_auc(a: &[f64], b: &[f64]) -> f64 {
    let mut u = 0.0;
    for &x in a {
        for &y in b {
            if x < y {
                u += 1.0;
            } else if x == y {
                u += 0.5;
            }
        }
    }
    u / (a.len() * b.len()) as f64
}

/// Every candidate threshold: −∞ and each observed score.
fn thresholds(a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut t: Vec<f64> = a.iter().chain(b).copied().collect();
    t.push(f64::NEG_INFINITY);
    t.sort_by(|x, y| x.partial_cmp(y).unwrap());
    t
}

fn counts(a: &[f64], b: &[f64], t: f64) -> (usize, usize) {
    (
        a.iter().filter(|&&x| x <= t).count(),
        b.iter().filter(|&&x| x <= t).count(),
    )
}

/// (max advantage, smallest threshold attaining it), compared exactly in integers.
fn naive_best(a: &[f64], b: &[f64]) -> (f64, f64) {
    let (m, n) = (a.len() as i64, b.len() as i64);
    let mut best = (i64::MIN, 0.0);
    for t in thresholds(a, b) {
        let (tp, fp) = counts(a, b, t);
        let d = tp as i64 * n - fp as i64 * m;
        if d > best.0 {
            best = (d, t);
        }
    }
    (best.0 as f64 / (m * n) as f64, best.1)
}

/// Largest TPR over thresholds with FPR ≤ α (the documented conservative rule), and the
/// smallest threshold attaining it.
fn naive_tpr_at(a: &[f64], b: &[f64], alpha: f64) -> (f64, f64) {
    let mut best = (-1.0, 0.0);
    for t in thresholds(a, b) {
        let (tp, fp) = counts(a, b, t);
        let tpr = tp as f64 / a.len() as f64;
        if fp as f64 / b.len() as f64 <= alpha && tpr > best.0 {
            best = (tpr, t);
        }
    }
    best
}

/// Integer-valued scores (heavy ties), sometimes −0.0 for 0.
fn scores(max_len: usize) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec((-4i32..5, any::<bool>()), 1..max_len).prop_map(|v| {
        v.into_iter()
            .map(|(k, neg)| if k == 0 && neg { -0.0 } else { k as f64 })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn auc_equals_mann_whitney(a in scores(40), b in scores(40)) {
        let roc = Roc::new(&MembershipSample::new(a.clone(), b.clone()).unwrap());
        let want = naive_auc(&a, &b);
        prop_assert!((roc.auc() - want).abs() < 1e-12, "{} vs {}", roc.auc(), want);
        // The trapezoids under the plotted polyline add up to the same area.
        let c = roc.curve();
        let area: f64 = c.windows(2).map(|w| (w[1].fpr - w[0].fpr) * (w[0].tpr + w[1].tpr) / 2.0).sum();
        prop_assert!((area - want).abs() < 1e-12);
        prop_assert_eq!((c[0].tpr, c[0].fpr), (0.0, 0.0));
        prop_assert_eq!((c[c.len() - 1].tpr, c[c.len() - 1].fpr), (1.0, 1.0));
    }

    #[test]
    fn best_threshold_equals_a_scan(a in scores(40), b in scores(40)) {
        let roc = Roc::new(&MembershipSample::new(a.clone(), b.clone()).unwrap());
        let (adv, t) = naive_best(&a, &b);
        prop_assert!((roc.advantage() - adv).abs() < 1e-12);
        prop_assert_eq!(roc.best_threshold().threshold, t);
        let p = roc.at_threshold(t).unwrap();
        prop_assert_eq!((p.true_positives, p.false_positives), counts(&a, &b, t));
    }

    #[test]
    fn tpr_at_fpr_equals_the_definition(
        a in scores(30),
        b in prop::collection::vec(-4i32..5, 10..60).prop_map(|v| v.into_iter().map(f64::from).collect::<Vec<_>>()),
        alpha in prop::sample::select(vec![0.1, 0.15, 0.2, 0.25, 0.5, 0.9]),
    ) {
        let roc = Roc::new(&MembershipSample::new(a.clone(), b.clone()).unwrap());
        let p = roc.tpr_at_fpr(alpha).unwrap();
        let (tpr, t) = naive_tpr_at(&a, &b, alpha);
        prop_assert_eq!(p.tpr, tpr);
        prop_assert_eq!(p.threshold, t);
        prop_assert!(p.fpr <= alpha);
    }

    #[test]
    fn pareto_front_equals_naive_dominance(
        pts in prop::collection::vec((0i32..6, 0i32..6), 0..30)
    ) {
        let pts: Vec<(f64, f64)> = pts.into_iter().map(|(x, y)| (x as f64 / 5.0, y as f64 / 5.0)).collect();
        let front = pareto_front(&pts).unwrap();
        let dominated = |i: usize| pts.iter().any(|q| {
            let p = pts[i];
            q.0 >= p.0 && q.1 >= p.1 && (q.0 > p.0 || q.1 > p.1)
        });
        let mut want: Vec<usize> = (0..pts.len()).filter(|&i| !dominated(i)).collect();
        // Documented order: MIS descending, utility descending, index.
        want.sort_by(|&i, &j| pts[j].0.partial_cmp(&pts[i].0).unwrap()
            .then(pts[j].1.partial_cmp(&pts[i].1).unwrap())
            .then(i.cmp(&j)));
        prop_assert_eq!(front, want);
    }

    #[test]
    fn ranks_follow_the_overlap_components(
        ivs in prop::collection::vec((0i32..20, 0i32..6), 1..12)
    ) {
        let ests: Vec<(String, MisEstimate)> = ivs.iter().enumerate().map(|(k, &(lo, w))| {
            let (lo, hi) = (lo as f64 / 20.0, (lo + w) as f64 / 20.0);
            let ci = Interval { lower: lo, upper: hi, level: 0.95 };
            (format!("q{k:02}"), MisEstimate::from_counts(1.0 - (lo + hi) / 2.0, Some(ci), 10, 10))
        }).collect();
        let ranked = rank_by_mis(&ests).unwrap();
        // Naive: components of the overlap graph by repeated relabelling, O(n³) at worst.
        let n = ests.len();
        let ci = |i: usize| ests[i].1.ci.unwrap();
        let mut comp: Vec<usize> = (0..n).collect();
        loop {
            let mut changed = false;
            for i in 0..n {
                for j in 0..n {
                    let overlap = ci(i).lower <= ci(j).upper && ci(j).lower <= ci(i).upper;
                    if overlap && comp[j] < comp[i] {
                        comp[i] = comp[j];
                        changed = true;
                    }
                }
            }
            if !changed { break; }
        }
        let rank_of = |name: &str| ranked.iter().find(|r| r.name == name).unwrap().rank;
        for i in 0..n {
            // 1 + entries of components lying entirely above this one.
            let above = (0..n).filter(|&j| comp[j] != comp[i] && ci(j).lower > ci(i).upper).count();
            prop_assert_eq!(rank_of(&ests[i].0), 1 + above);
            for j in 0..n {
                if rank_of(&ests[i].0) < rank_of(&ests[j].0) {
                    prop_assert!(ci(i).lower > ci(j).upper, "A above B needs separated intervals");
                }
            }
        }
        prop_assert!(ranked.windows(2).all(|w| w[0].rank <= w[1].rank));
    }
}

// ---------------------------------------------------------------------------------------------
// Clopper–Pearson and the ε bound against binomial sums.

/// P(Bin(n, p) ≤ x), term by term: ln pmf(0) = n·ln(1 − p), then
/// pmf(k + 1) = pmf(k) · (n − k)/(k + 1) · p/(1 − p), in logs.
fn binom_cdf(x: usize, n: usize, p: f64) -> f64 {
    let (ln_p, ln_q) = (p.ln(), (-p).ln_1p());
    let mut ln_pmf = n as f64 * ln_q;
    let mut sum = 0.0;
    for k in 0..=x {
        sum += ln_pmf.exp();
        ln_pmf += ((n - k) as f64 / (k + 1) as f64).ln() + ln_p - ln_q;
    }
    sum.min(1.0)
}

/// Clopper–Pearson by bisection on the binomial sums.
fn naive_cp(x: usize, n: usize, level: f64) -> (f64, f64) {
    let tail = (1.0 - level) / 2.0;
    // Root of f(p) = target for f decreasing in p (every binomial CDF is).
    let solve = |f: &dyn Fn(f64) -> f64, target: f64| {
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        for _ in 0..100 {
            let mid = 0.5 * (lo + hi);
            if f(mid) > target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        0.5 * (lo + hi)
    };
    // Lower: P(Bin ≥ x) = tail, i.e. P(Bin ≤ x − 1) = 1 − tail. Upper: P(Bin ≤ x) = tail.
    let lower = if x == 0 {
        0.0
    } else {
        solve(&|p| binom_cdf(x - 1, n, p), 1.0 - tail)
    };
    let upper = if x == n {
        1.0
    } else {
        solve(&|p| binom_cdf(x, n, p), tail)
    };
    (lower, upper)
}

#[test]
fn clopper_pearson_matches_binomial_sums() {
    for &n in &[1usize, 2, 7, 30, 100, 1000] {
        for x in [0, 1, n / 3, n / 2, n.saturating_sub(1), n] {
            for level in [0.9, 0.95, 0.99] {
                let ci = clopper_pearson(x, n, level).unwrap();
                let (lo, hi) = naive_cp(x, n, level);
                assert!(
                    (ci.lower - lo).abs() <= 1e-9 * lo.max(1e-6),
                    "lower {x}/{n} @{level}: {} vs {lo}",
                    ci.lower
                );
                assert!(
                    (ci.upper - hi).abs() <= 1e-9 * hi.max(1e-6),
                    "upper {x}/{n} @{level}: {} vs {hi}",
                    ci.upper
                );
                // And the defining tail identities directly.
                let tail = (1.0 - level) / 2.0;
                if x < n {
                    assert!((binom_cdf(x, n, ci.upper) - tail).abs() < 1e-9);
                }
                if x > 0 {
                    assert!((1.0 - binom_cdf(x - 1, n, ci.lower) - tail).abs() < 1e-9);
                }
            }
        }
    }
    // A published value: 5 of 10 at 95 % is [0.187086, 0.812914].
    let ci = clopper_pearson(5, 10, 0.95).unwrap();
    assert!((ci.lower - 0.187_086).abs() < 1e-6 && (ci.upper - 0.812_914).abs() < 1e-6);
}

#[test]
fn epsilon_bound_follows_the_auditors_formula() {
    let a: Vec<f64> = (0..200).map(|i| if i < 150 { 0.0 } else { 2.0 }).collect();
    let b: Vec<f64> = (0..300).map(|i| if i < 6 { 0.0 } else { 1.0 }).collect();
    let roc = Roc::new(&MembershipSample::new(a, b).unwrap());
    for (delta, level) in [(0.0, 0.95), (1e-3, 0.9), (0.05, 0.99)] {
        let got = DpAudit::new(delta, level)
            .unwrap()
            .at_threshold(&roc, 0.0)
            .unwrap();
        let (tpr_lo, _) = naive_cp(150, 200, level);
        let (_, fpr_hi) = naive_cp(6, 300, level);
        let want = ((tpr_lo - delta) / fpr_hi)
            .ln()
            .max(((1.0 - fpr_hi - delta) / (1.0 - tpr_lo)).ln())
            .max(0.0);
        assert!(
            (got.epsilon - want).abs() < 1e-8,
            "{} vs {want}",
            got.epsilon
        );
        assert_eq!(
            (got.point.true_positives, got.point.false_positives),
            (150, 6)
        );
        let best = DpAudit::new(delta, level).unwrap().best(&roc).unwrap();
        assert!(best.epsilon >= got.epsilon);
    }
}

// ---------------------------------------------------------------------------------------------
// DKW, paired test, slicing, errors.

#[test]
fn dkw_epsilon_is_the_formula() {
    for (m, n, level) in [(100, 400, 0.95), (1000, 1000, 0.99), (7, 3, 0.5)] {
        let alpha: f64 = 1.0 - level;
        let want = ((4.0 / alpha).ln() / (2.0 * m as f64)).sqrt()
            + ((4.0 / alpha).ln() / (2.0 * n as f64)).sqrt();
        assert!((dkw_epsilon(m, n, level).unwrap() - want).abs() < 1e-15);
    }
}

#[test]
fn paired_bootstrap_sees_a_small_consistent_shift() {
    // b is a with a constant 0.02 added to 30 % of the members: a tiny but systematic change.
    let m: Vec<f64> = (0..3000)
        .map(|i| ((i * 7919) % 3001) as f64 / 3001.0)
        .collect();
    let n: Vec<f64> = (0..3000)
        .map(|i| ((i * 104_729) % 3001) as f64 / 3001.0 + 0.2)
        .collect();
    let shifted: Vec<f64> = m
        .iter()
        .enumerate()
        .map(|(i, &x)| if i % 10 < 3 { x + 0.05 } else { x })
        .collect();
    let a = MembershipSample::new(m, n.clone()).unwrap();
    let b = MembershipSample::new(shifted, n).unwrap();
    let boot = Bootstrap::new(300, 0.95, 9).unwrap();
    let c = paired_bootstrap(&a, &b, Statistic::Auc, &boot).unwrap();
    assert!(c.difference > 0.0);
    assert!(c.ci.lower > 0.0, "{c:?}");
    assert!(c.p_value < 0.05);
    // Same seed, same answer.
    assert_eq!(c, paired_bootstrap(&a, &b, Statistic::Auc, &boot).unwrap());
    // Unpaired intervals of each AUC overlap: the pairing is what resolves the difference.
    let ia = boot.interval(&Roc::new(&a), Statistic::Auc).unwrap();
    let ib = boot.interval(&Roc::new(&b), Statistic::Auc).unwrap();
    assert!(!ia.separated_from(&ib));
}

#[test]
fn errors_are_values_not_panics() {
    assert!(matches!(
        MembershipSample::new(vec![], vec![1.0]),
        Err(Error::TooFewSamples { got: 0, .. })
    ));
    assert!(matches!(
        MembershipSample::new(vec![1.0], vec![2.0, f64::NAN, f64::INFINITY]),
        Err(Error::NonFinite {
            count: 2,
            first_index: 1,
            ..
        })
    ));
    let s = MembershipSample::new(vec![1.0; 10], vec![2.0; 999]).unwrap();
    let roc = Roc::new(&s);
    match roc.tpr_at_fpr(0.001) {
        Err(e @ Error::TooFewSamples { .. }) => {
            assert!(e.to_string().contains("1000"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    for bad in [0.0, 1.0, -0.1, f64::NAN] {
        assert!(matches!(
            roc.tpr_at_fpr(bad),
            Err(Error::InvalidParameter { .. })
        ));
    }
    assert!(DpAudit::new(0.0, 1.5).is_err());
    assert!(matches!(
        SlicedScores::new(&[1.0, 2.0], &['x', 'y'], &[3.0], &['x'])
            .unwrap()
            .estimate_each(&quantlens::LossThreshold::new()),
        Err(Error::EmptyGroup { .. })
    ));
    assert!(pareto_front(&[(f64::INFINITY, 0.0)]).is_err());
    assert!(dkw_epsilon(10, 10, 0.0).is_err());
}

#[test]
fn display_reads_like_a_report_line() {
    let members: Vec<f64> = (0..1000).map(|i| (i as f64 * 0.618).fract()).collect();
    let non_members: Vec<f64> = (0..1000)
        .map(|i| (i as f64 * 0.618).fract() + 0.2)
        .collect();
    let s = MembershipSample::new(members, non_members).unwrap();
    let est = quantlens::LossThreshold::new()
        .with_fprs(&[0.001, 0.01])
        .with_bootstrap(Bootstrap::new(200, 0.95, 1).unwrap())
        .estimate(&s)
        .unwrap();
    let line = est.to_string();
    println!("{line}");
    assert!(line.starts_with(&format!("MIS {:.3} [", est.mis)));
    assert!(line.contains("(95 % basic bootstrap, 200 resamples)"));
    assert!(line.contains("| TPR@0.1% "));
    assert!(line.ends_with("| n = 1000 members, 1000 non-members"));
    let tv = quantlens::SmoothedTv::new()
        .with_bootstrap(Bootstrap::new(200, 0.95, 3).unwrap())
        .histogram(&s)
        .unwrap();
    println!(
        "TV {:.3} [{:.3}, {:.3}], h = {:.4}",
        tv.tv, tv.ci.lower, tv.ci.upper, tv.bin_width
    );
}
