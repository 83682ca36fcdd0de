//! The quantized empirical mean (paper notes §1): a model whose true membership advantage Δ_n
//! is a one-dimensional integral. Checks the two regimes of Δ_n and the experimental MIS
//! indicator against them. Everything reference-side (Φ, quadrature) is written here in f64.

mod common;

use common::TestRng;
use quantlens::MembershipSample;
use quantlens::mis::{Bootstrap, LossThreshold, MisEstimator, MisIndicator, SmoothedTv};

/// erfc in f64 to ~1e-15 relative: Taylor series of erf below 2.5, Lentz continued fraction
/// above.
fn erfc(x: f64) -> f64 {
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 2.5 {
        // erf(x) = 2/√π Σ (−1)^k x^(2k+1) / (k! (2k+1))
        let (mut term, mut sum) = (x, x);
        for k in 1..200 {
            let k = k as f64;
            term *= -x * x / k;
            let add = term / (2.0 * k + 1.0);
            sum += add;
            if add.abs() <= 1e-17 * sum.abs() {
                break;
            }
        }
        1.0 - 2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        // erfc(x) = e^{−x²}/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + …))))
        let tiny = 1e-300;
        let (mut f, mut c, mut d) = (x, x, 0.0);
        for n in 1..300 {
            let a = n as f64 / 2.0;
            d = x + a * d;
            d = if d.abs() < tiny { tiny } else { d };
            c = x + a / c;
            c = if c.abs() < tiny { tiny } else { c };
            d = 1.0 / d;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        (-x * x).exp() / std::f64::consts::PI.sqrt() / f
    }
}

fn phi_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// Δ_n = ½ Σ_k E_z |P(T=k | Z₁=z) − P(T=k)| for θ̂ = mean of n N(0,1) samples released as the
/// index of its cell; cell k is [offset + k·h, offset + (k+1)·h).
fn true_advantage(n: usize, h: f64, offset: f64) -> f64 {
    let nf = n as f64;
    let s = (nf - 1.0).sqrt() / nf; // sd of (Z₂+…+Z_n)/n
    let reach = 12.0 / nf.sqrt() + 2.0 * h;
    let k_lo = ((-reach - offset) / h).floor() as i64;
    let k_hi = ((reach - offset) / h).ceil() as i64;
    let (lo_z, hi_z, steps) = (-12.0, 12.0, 6000);
    let dz = (hi_z - lo_z) / steps as f64;
    let mut total = 0.0;
    for k in k_lo..=k_hi {
        let (a, b) = (offset + k as f64 * h, offset + (k + 1) as f64 * h);
        let marginal = phi_cdf(b * nf.sqrt()) - phi_cdf(a * nf.sqrt());
        let mut integral = 0.0;
        for j in 0..=steps {
            let z = lo_z + j as f64 * dz;
            let w = if j == 0 || j == steps { 0.5 } else { 1.0 };
            let density = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let cond = phi_cdf((b - z / nf) / s) - phi_cdf((a - z / nf) / s);
            integral += w * density * (cond - marginal).abs();
        }
        total += integral * dz;
    }
    0.5 * total
}

#[test]
fn reference_erfc_is_accurate() {
    // Published values (Abramowitz & Stegun table 7.1 / high-precision tables).
    for (x, v) in [
        (0.5, 0.479_500_122_186_953_5),
        (1.0, 0.157_299_207_050_285_1),
        (2.0, 4.677_734_981_047_266e-3),
        (3.0, 2.209_049_699_858_544e-5),
        (5.0, 1.537_459_794_428_035e-12),
    ] {
        assert!(
            (erfc(x) - v).abs() < 1e-13 * v,
            "erfc({x}) = {} vs {v}",
            erfc(x)
        );
    }
}

#[test]
fn optimum_inside_a_cell_decays_exponentially_at_the_indicator_rate() {
    let h = 0.5;
    // 0 at the centre of cell [−h/2, h/2).
    let d = |n| true_advantage(n, h, -h / 2.0);
    let (n1, n2) = (150, 300);
    let slope = (d(n1).ln() - d(n2).ln()) / (n2 - n1) as f64;
    let predicted = h * h / 8.0;
    assert!(
        (slope / predicted - 1.0).abs() < 0.15,
        "decay {slope:.4}/sample vs h²/8 = {predicted:.4}"
    );
    // Exponential, not polynomial: the rate per sample is about constant along n.
    let slope_late = (d(300).ln() - d(450).ln()) / 150.0;
    assert!(
        (slope_late / slope - 1.0).abs() < 0.1,
        "{slope} vs {slope_late}"
    );

    // The indicator, estimated from data, recovers the same rate: competitors are the
    // neighbouring cells' centres ±h, losses (θ − z)².
    let mut g = TestRng::new(42);
    let z: Vec<f64> = (0..100_000).map(|_| g.normal_open()).collect();
    let selected: Vec<f64> = z.iter().map(|z| z * z).collect();
    let up: Vec<f64> = z.iter().map(|z| (h - z).powi(2)).collect();
    let down: Vec<f64> = z.iter().map(|z| (-h - z).powi(2)).collect();
    let est = MisIndicator::new(n1)
        .bootstrap(200, 0.95, 1)
        .estimate(&selected, &[up, down])
        .unwrap();
    let ci = est.ci.unwrap();
    eprintln!(
        "inside a cell (h = {h}): Δ_n decays {slope:.4}/sample (n {n1}→{n2}), {slope_late:.4} (300→450); \
         h²/8 = {predicted:.4}; indicator r̂ = {:.4} [{:.4}, {:.4}]",
        est.rate, ci.lower, ci.upper
    );
    assert!(
        ci.lower <= predicted && predicted <= ci.upper,
        "{ci:?} vs {predicted}"
    );
    assert!(
        (est.rate / slope - 1.0).abs() < 0.15,
        "r̂ {} vs decay {slope}",
        est.rate
    );
    // δ = h², σ² = 4h² for both neighbours.
    for (delta, var) in &est.gaps {
        assert!((delta - h * h).abs() < 0.01 && (var - 4.0 * h * h).abs() < 0.02);
    }
    assert!((est.mis - (1.0 - (-(n1 as f64) * est.rate).exp())).abs() < 1e-12);
}

#[test]
fn optimum_on_a_boundary_decays_like_inverse_square_root() {
    let h = 0.5;
    // 0 on the boundary between cells [−h, 0) and [0, h).
    let (a, b) = (true_advantage(100, h, 0.0), true_advantage(1600, h, 0.0));
    let slope = (b.ln() - a.ln()) / (1600f64.ln() - 100f64.ln());
    eprintln!("on a boundary: Δ_100 = {a:.4}, Δ_1600 = {b:.4}, log-log slope {slope:.3}");
    assert!((slope + 0.5).abs() < 0.1, "log-log slope {slope}");
    // …and it is far larger than the inside-a-cell advantage at the same n.
    assert!(true_advantage(400, h, 0.0) > 100.0 * true_advantage(400, h, -h / 2.0));
}

#[test]
fn indicator_refuses_bad_input_and_flags_unstable_selection() {
    let ind = MisIndicator::new(10);
    assert!(ind.estimate(&[1.0], &[vec![2.0]]).is_err());
    assert!(ind.estimate(&[1.0, 2.0], &[]).is_err());
    assert!(ind.estimate(&[1.0, 2.0], &[vec![1.0]]).is_err());
    assert!(ind.estimate(&[1.0, f64::NAN], &[vec![1.0, 2.0]]).is_err());
    assert!(
        MisIndicator::new(0)
            .estimate(&[1.0, 2.0], &[vec![1.0, 2.0]])
            .is_err()
    );
    assert!(
        ind.bootstrap(10, 1.5, 0)
            .estimate(&[1.0, 2.0], &[vec![1.0, 2.0]])
            .is_err()
    );
    // A competitor better on average: no protection, rate 0, MIS indicator 0.
    let e = ind
        .estimate(&[1.0, 2.0, 3.0], &[vec![0.5, 1.0, 2.9]])
        .unwrap();
    assert_eq!((e.rate, e.mis), (0.0, 0.0));
}

#[test]
fn simulated_release_pairs_recover_the_true_advantage() {
    // Boundary regime at a small n, where Δ_n is large enough to see with 2·10⁵ pairs a side.
    let (n, h, offset) = (10usize, 0.5, 0.0);
    let delta = true_advantage(n, h, offset);
    let nf = n as f64;
    let mut g = TestRng::new(2026);
    let cell = |theta: f64| ((theta - offset) / h).floor() as i64;
    // Released cell of a fresh training set whose first point is z₁: θ̂ = (z₁ + S)/n, S ~ N(0, n−1).
    let release = |z1: f64, g: &mut TestRng| cell((z1 + (nf - 1.0).sqrt() * g.normal_open()) / nf);
    let pairs = 200_000;
    let (mut members, mut non_members) = (Vec::new(), Vec::new());
    for _ in 0..pairs {
        let z1 = g.normal_open();
        members.push((release(z1, &mut g), z1));
        // Non-member: the model of an independent training set, and a fresh point.
        let other = g.normal_open();
        non_members.push((release(other, &mut g), g.normal_open()));
    }
    let lowest = members
        .iter()
        .chain(&non_members)
        .map(|p| p.0)
        .min()
        .unwrap();
    let as_index = |v: &[(i64, f64)]| -> Vec<(u32, f64)> {
        v.iter().map(|&(k, z)| ((k - lowest) as u32, z)).collect()
    };
    let tv = SmoothedTv::new()
        .with_bootstrap(Bootstrap::new(200, 0.95, 7).unwrap())
        .joint_histogram(&as_index(&members), &as_index(&non_members))
        .unwrap();
    eprintln!(
        "n = {n}, h = {h}: Δ_n = {delta:.4}; joint plug-in TV {:.4} [{:.4}, {:.4}]",
        tv.tv, tv.ci.lower, tv.ci.upper
    );
    assert!(
        tv.ci.lower <= delta && delta <= tv.ci.upper,
        "Δ_n = {delta} outside {:?}",
        tv.ci
    );

    // The loss-threshold attack on ℓ = (centre of the released cell − z)² sees less.
    let loss = |v: &[(i64, f64)]| -> Vec<f64> {
        v.iter()
            .map(|&(k, z)| (offset + (k as f64 + 0.5) * h - z).powi(2))
            .collect()
    };
    let sample = MembershipSample::new(loss(&members), loss(&non_members)).unwrap();
    let est = LossThreshold::new()
        .with_fprs(&[])
        .with_bootstrap(Bootstrap::new(200, 0.95, 8).unwrap())
        .estimate(&sample)
        .unwrap();
    let adv_ci = est.advantage_ci().unwrap();
    eprintln!(
        "loss-threshold advantage {:.4} [{:.4}, {:.4}]",
        est.advantage, adv_ci.lower, adv_ci.upper
    );
    assert!(
        adv_ci.lower <= delta,
        "threshold advantage {:?} above Δ_n = {delta}",
        adv_ci
    );
    assert!(est.advantage > 0.0);
}

#[test]
fn library_game_matches_the_reference_quadrature_and_simulation() {
    use quantlens::mis::{QuantizedMean, normal_cdf};
    for x in [-7.5, -3.0, -1.0, 0.0, 0.3, 2.0, 6.0] {
        let reference = phi_cdf(x);
        assert!(
            (normal_cdf(x) - reference).abs() <= 1e-14 * reference.max(1e-300) + 1e-16,
            "Φ({x}) = {} vs {reference}",
            normal_cdf(x)
        );
    }
    for (n, h, offset) in [
        (10, 0.5, 0.0),
        (50, 0.6, -0.3),
        (200, 0.25, -0.05),
        (30, 0.05, -0.025),
    ] {
        let game = QuantizedMean::new(n, h, offset).unwrap();
        let (lib, reference) = (game.true_advantage(), true_advantage(n, h, offset));
        assert!(
            (lib - reference).abs() < 1e-9,
            "n {n} h {h}: {lib} vs {reference}"
        );
    }
    // Simulated rounds: the joint plug-in TV brackets the truth (n = 10, boundary regime).
    let game = QuantizedMean::new(10, 0.5, 0.0).unwrap();
    let rounds = game.simulate(100_000, 5);
    assert_eq!(rounds, game.simulate(100_000, 5));
    let (members, non_members) = rounds.joint_histogram_input();
    assert_eq!(members.len(), rounds.members.len());
    assert_eq!(
        members.iter().chain(&non_members).map(|p| p.0).min(),
        Some(0),
        "cells re-indexed from 0"
    );
    let tv = SmoothedTv::new()
        .with_bootstrap(Bootstrap::new(200, 0.95, 7).unwrap())
        .joint_histogram(&members, &non_members)
        .unwrap();
    let delta = game.true_advantage();
    assert!(
        tv.ci.lower <= delta && delta <= tv.ci.upper,
        "{delta} vs {:?}",
        tv.ci
    );
    // Indicator losses: the selected cell holds 0, competitors are its neighbours.
    let (sel, comps) = game.indicator_losses(&[0.1]);
    assert!((sel[0] - (0.25 - 0.1f64).powi(2)).abs() < 1e-12);
    assert_eq!(comps.len(), 2);
    // Bad settings are errors.
    assert!(QuantizedMean::new(1, 0.5, 0.0).is_err());
    assert!(QuantizedMean::new(10, 0.0, 0.0).is_err());
    assert!(QuantizedMean::new(10, f64::NAN, 0.0).is_err());
    assert!(QuantizedMean::new(10, 0.5, f64::INFINITY).is_err());
}
