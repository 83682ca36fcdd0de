//! MIS estimators against closed forms for Gaussian losses, and interval coverage.
//!
//! Members' losses ~ N(−μ, 1), non-members' ~ N(0, 1) (members have lower loss). Then
//! TV = best advantage = 2Φ(μ/2) − 1, AUC = Φ(μ/√2), TPR at FPR α = Φ(Φ⁻¹(α) + μ).
//! Φ and Φ⁻¹ are written here in f64, independently of the library.

mod common;

use common::TestRng;
use quantlens::mis::{
    AdvantageCi, Bootstrap, LossThreshold, MisEstimator, Roc, SmoothedTv, Statistic, dkw_interval,
};
use quantlens::{Error, MembershipSample};

// ---------------------------------------------------------------------------------------------
// Independent references: erfc, Φ, Φ⁻¹, a seeded normal generator.

/// erfc(x) for x ≥ 0: Maclaurin series of erf below 1 (alternating, terms below 1, and
/// erfc ≥ 0.157 there, so no digits are lost), Laplace's continued fraction (200 terms,
/// bottom up; converged to the last bit for x ≥ 1) above.
fn erfc_pos(x: f64) -> f64 {
    if x < 1.0 {
        let (mut term, mut sum, x2) = (x, x, x * x);
        for n in 1..200 {
            term *= -x2 / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        1.0 - 2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        // erfc(x) = exp(−x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …)))), evaluated bottom up.
        let mut f = x;
        for k in (1..200).rev() {
            f = x + (k as f64 / 2.0) / f;
        }
        (-x * x).exp() / std::f64::consts::PI.sqrt() / f
    }
}

/// Standard normal CDF.
fn phi(x: f64) -> f64 {
    let z = x / std::f64::consts::SQRT_2;
    if z >= 0.0 {
        1.0 - 0.5 * erfc_pos(z)
    } else {
        0.5 * erfc_pos(-z)
    }
}

/// Standard normal quantile: Acklam's rational approximation (relative error 1.2e-9), then
/// one Halley step on `phi` to full precision.
fn phi_inv(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e+01,
        2.209460984245205e+02,
        -2.759285104469687e+02,
        1.38357751867269e+02,
        -3.066479806614716e+01,
        2.506628277459239e+00,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e+01,
        1.615858368580409e+02,
        -1.556989798598866e+02,
        6.680131188771972e+01,
        -1.328068155288572e+01,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-03,
        -3.223964580411365e-01,
        -2.400758277161838e+00,
        -2.549732539343734e+00,
        4.374664141464968e+00,
        2.938163982698783e+00,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-03,
        3.224671290700398e-01,
        2.445134137142996e+00,
        3.754408661907416e+00,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    let x = if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    };
    let e = phi(x) - p;
    let u = e * (2.0 * std::f64::consts::PI).sqrt() * (x * x / 2.0).exp();
    x - u / (1.0 + x * u / 2.0)
}

/// Seeded standard normals (SplitMix64 + Box–Muller), written out here.
fn normals(n: usize, seed: u64) -> Vec<f64> {
    let mut g = TestRng::new(seed);
    (0..n).map(|_| g.normal()).collect()
}

fn gaussian_sample(n: usize, mu: f64, sigma_members: f64, seed: u64) -> MembershipSample {
    let members = normals(n, seed)
        .into_iter()
        .map(|z| sigma_members * z - mu)
        .collect();
    let non_members = normals(n, seed ^ 0xA5A5_A5A5_A5A5_A5A5);
    MembershipSample::new(members, non_members).unwrap()
}

#[test]
fn reference_normal_functions_are_accurate() {
    // erfc(1) on both sides of the switch between series and continued fraction; erfc(2).
    assert!((erfc_pos(1.0) - 0.157_299_207_050_285_13).abs() < 1e-16);
    assert!((erfc_pos(1.0 - 1e-15) - 0.157_299_207_050_285_13).abs() < 1e-15);
    assert!((erfc_pos(2.0) - 0.004_677_734_981_047_266).abs() < 1e-17);
    assert!((phi(0.0) - 0.5).abs() < 1e-15);
    assert!((phi(1.0) - 0.841_344_746_068_542_9).abs() < 1e-14);
    assert!((phi(-3.0) - 0.001_349_898_031_630_094_6).abs() < 1e-15);
    assert!((phi(5.0) - 0.999_999_713_348_428_1).abs() < 1e-15);
    assert!((phi_inv(0.975) - 1.959_963_984_540_054).abs() < 1e-12);
    assert!((phi_inv(0.001) + 3.090_232_306_167_813_5).abs() < 1e-11);
    for p in [1e-6, 0.01, 0.2, 0.5, 0.7, 0.99] {
        assert!((phi(phi_inv(p)) - p).abs() < 1e-14 * p.max(0.01));
    }
}

// ---------------------------------------------------------------------------------------------
// Closed forms at 10⁵ per side: every estimate inside its own 99 % interval.

#[test]
fn gaussian_shift_lands_in_its_intervals() {
    let mu = 1.0;
    let s = gaussian_sample(100_000, mu, 1.0, 1);
    let est = LossThreshold::new()
        .with_bootstrap(Bootstrap::new(1000, 0.99, 2).unwrap())
        .estimate(&s)
        .unwrap();

    let adv = 2.0 * phi(mu / 2.0) - 1.0;
    let auc = phi(mu / std::f64::consts::SQRT_2);
    println!("{est}");
    println!("truth: advantage {adv:.4}, AUC {auc:.4}");
    assert!(est.advantage_ci().unwrap().contains(adv));
    assert!(est.ci.unwrap().contains(1.0 - adv));
    assert!(est.auc.unwrap().ci.unwrap().contains(auc));
    for t in &est.tpr_at_fpr {
        let truth = phi(phi_inv(t.target_fpr) + mu);
        println!("TPR@{}: {:.4} vs truth {truth:.4}", t.target_fpr, t.tpr);
        assert!(t.ci.unwrap().contains(truth), "{t:?} vs {truth}");
        assert!(t.fpr <= t.target_fpr);
    }
    // The best threshold sits near the densities' crossing, −μ/2.
    assert!((est.threshold.unwrap() + mu / 2.0).abs() < 0.1);
    assert_eq!((est.n_members, est.n_non_members), (100_000, 100_000));

    // DKW: wider, still contains the truth.
    let dkw = dkw_interval(est.advantage, 100_000, 100_000, 0.99).unwrap();
    assert!(dkw.contains(adv) && dkw.width() > est.ci.unwrap().width());

    // Histogram TV: an upper-side view, close to the truth at this size.
    let tv = SmoothedTv::new()
        .with_bootstrap(Bootstrap::new(200, 0.99, 3).unwrap())
        .histogram(&s)
        .unwrap();
    println!(
        "histogram TV {:.4} {:?} (h = {:.4})",
        tv.tv, tv.ci, tv.bin_width
    );
    assert!((tv.tv - adv).abs() < 0.01);
}

/// Unequal variances: the threshold attack is no longer optimal. Its advantage must sit below
/// the TV of the two laws (by quadrature), and its own truth (a scan over thresholds of the
/// closed-form CDFs) must lie in the interval.
#[test]
fn unequal_variances_stay_below_the_total_variation() {
    let (mu, sigma) = (1.0, 0.5);
    let s = gaussian_sample(100_000, mu, sigma, 5);
    let est = LossThreshold::new()
        .with_fprs(&[])
        .with_bootstrap(Bootstrap::new(500, 0.99, 6).unwrap())
        .estimate(&s)
        .unwrap();
    let pdf = |x: f64, m: f64, sd: f64| {
        (-(x - m) * (x - m) / (2.0 * sd * sd)).exp() / (sd * (2.0 * std::f64::consts::PI).sqrt())
    };
    // Midpoint rule on [−12, 12] with step 1e-4: error far below the test's tolerances.
    let h = 1e-4;
    let tv: f64 = (0..240_000)
        .map(|k| {
            let x = -12.0 + (k as f64 + 0.5) * h;
            0.5 * (pdf(x, -mu, sigma) - pdf(x, 0.0, 1.0)).abs() * h
        })
        .sum();
    let thr_truth = (0..240_000)
        .map(|k| {
            let t = -12.0 + k as f64 * h;
            phi((t + mu) / sigma) - phi(t)
        })
        .fold(f64::NEG_INFINITY, f64::max);
    println!("threshold attack truth {thr_truth:.4}, TV {tv:.4}, estimate {est}");
    assert!(thr_truth < tv - 0.003);
    assert!(est.advantage_ci().unwrap().contains(thr_truth));
    assert!(est.advantage_ci().unwrap().upper < tv);
}

// ---------------------------------------------------------------------------------------------
// Coverage: 200 seeded repetitions, 2000 per side, 400 resamples.

/// The basic interval is what `LossThreshold` reports for the advantage; the percentile one
/// is printed beside it for the record (it inherits the upward bias of a maximum and
/// under-covers at this size).
#[test]
fn bootstrap_intervals_cover_the_truth() {
    let mu = 1.0;
    let truths = [
        2.0 * phi(mu / 2.0) - 1.0,
        phi(mu / std::f64::consts::SQRT_2),
        phi(phi_inv(0.01) + mu),
    ];
    let names = ["advantage", "AUC", "TPR@1%"];
    let reps = 200u64;
    // covered[statistic][0 = percentile, 1 = basic]
    let mut covered = [[0u32; 2]; 3];
    for r in 0..reps {
        let roc = Roc::new(&gaussian_sample(2000, mu, 1.0, 1000 + r));
        let boot = Bootstrap::new(400, 0.95, r).unwrap();
        let stats = [
            Statistic::Advantage,
            Statistic::Auc,
            Statistic::TprAtFpr(0.01),
        ];
        let replicates = boot.replicates(&roc, &stats).unwrap();
        for (s, truth) in truths.iter().enumerate() {
            covered[s][0] += replicates.interval(s).contains(*truth) as u32;
            covered[s][1] += replicates.basic_interval(s).contains(*truth) as u32;
        }
    }
    let pct = |c: u32| 100.0 * c as f64 / reps as f64;
    for (s, name) in names.iter().enumerate() {
        println!(
            "coverage of nominal 95 %, {name}: percentile {:.1} %, basic {:.1} %",
            pct(covered[s][0]),
            pct(covered[s][1])
        );
    }
    assert!(pct(covered[0][1]) >= 92.0, "advantage, basic");
    assert!(pct(covered[1][0]) >= 92.0, "AUC, percentile");
    assert!(pct(covered[2][0]) >= 90.0, "TPR@1%, percentile");
}

#[test]
fn identical_distributions_stay_in_the_dkw_band() {
    let reps = 200;
    let mut inside = 0;
    for r in 0..reps {
        let roc = Roc::new(&gaussian_sample(2000, 0.0, 1.0, 7000 + r));
        let band = dkw_interval(roc.advantage(), 2000, 2000, 0.95).unwrap();
        inside += band.contains(0.0) as u32;
    }
    println!("DKW band contains 0 in {inside}/{reps} repetitions");
    assert!(inside as f64 >= 0.95 * reps as f64);
}

#[test]
fn estimator_errors_are_values() {
    let s = gaussian_sample(500, 1.0, 1.0, 3);
    // Default FPRs include 0.1 %, which needs 1000 non-members.
    match LossThreshold::new().estimate(&s) {
        Err(Error::TooFewSamples { needed, got, .. }) => assert_eq!((needed, got), (1000, 500)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        LossThreshold::new().with_fprs(&[1.5]).estimate(&s),
        Err(Error::InvalidParameter { name: "fpr", .. })
    ));
    assert!(matches!(
        Bootstrap::new(0, 0.95, 1),
        Err(Error::InvalidParameter {
            name: "resamples",
            ..
        })
    ));
    for level in [0.0, 1.0, -0.5, f64::NAN] {
        assert!(matches!(
            Bootstrap::new(10, level, 1),
            Err(Error::InvalidParameter { name: "level", .. })
        ));
    }
    let dkw = LossThreshold::new()
        .with_fprs(&[0.01])
        .with_advantage_ci(AdvantageCi::Dkw)
        .with_bootstrap(Bootstrap::new(50, 0.9, 1).unwrap())
        .estimate(&s)
        .unwrap();
    assert!(dkw.ci.unwrap().lower >= 0.0 && dkw.ci.unwrap().upper <= 1.0);
}
