//! A membership game whose true answer is known: the quantized empirical mean.
//!
//! The model is the mean `θ̂` of `n` draws `Z ~ N(0, 1)`; the released object is the index of
//! the grid cell `[offset + k·h, offset + (k+1)·h)` that holds `θ̂` (a round-to-nearest
//! quantizer of step `h` whose reconstruction is the cell's centre). The best attacker's
//! advantage `Δ_n = TV(Law(T, Z₁), Law(T) ⊗ P)` is a one-dimensional integral, so every
//! empirical estimate (an attack, a plug-in total variation, the experimental
//! [`MisIndicator`](super::MisIndicator)) can be checked against the truth. Where the
//! population optimum 0 sits in its cell decides the regime: strictly inside, `Δ_n` decays
//! exponentially in `n` at rate `b²/2` (`b` the distance to the nearer boundary); on a
//! boundary it decays like `n^{-1/2}`, as for the unquantized mean (paper notes §1).

use crate::error::{Error, Result};
use crate::rng::SplitMix64;

/// `Φ(x)`, the standard normal CDF, through `libm`'s `erfc` (accurate in both tails).
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// `Φ⁻¹(p)`, the standard normal quantile, for `p ∈ (0, 1)` (±∞ at 0 and 1, NaN outside):
/// Acklam's rational approximation (relative error 1.2e-9) polished by one Halley step on
/// [`normal_cdf`], which brings it to about 1e-15.
///
/// ```
/// use quantlens::mis::{normal_cdf, normal_quantile};
/// assert!((normal_quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-12);
/// assert!((normal_cdf(normal_quantile(0.3)) - 0.3).abs() < 1e-15);
/// ```
pub fn normal_quantile(p: f64) -> f64 {
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    let x = if p < 0.024_25 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.024_25 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    };
    // One Halley step: e = Φ(x) − p, u = e·√(2π)·e^{x²/2}.
    let e = normal_cdf(x) - p;
    let u = e * (2.0 * std::f64::consts::PI).sqrt() * (x * x / 2.0).exp();
    x - u / (1.0 + x * u / 2.0)
}

/// The quantized empirical mean of `n` standard normal draws, released as its grid cell.
///
/// ```
/// use quantlens::mis::QuantizedMean;
///
/// // 50 training points, step 0.6, the optimum 0 at the centre of cell [−0.3, 0.3).
/// let game = QuantizedMean::new(50, 0.6, -0.3)?;
/// let delta = game.true_advantage();
/// // Exponential regime: Δ_n ≈ e^{−n b²/2} up to a polynomial factor, b = 0.3.
/// assert!(delta < (-50.0 * 0.09 / 2.0f64).exp() && delta > 1e-3, "{delta}");
/// assert_eq!(game.true_mis(), 1.0 - delta);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantizedMean {
    n: usize,
    step: f64,
    offset: f64,
}

/// Simulated rounds of the membership game (see [`QuantizedMean::simulate`]): each entry is
/// `(released cell, candidate point)`.
#[derive(Debug, Clone, PartialEq)]
pub struct GameRounds {
    /// Rounds where the candidate is the model's first training point.
    pub members: Vec<(i64, f64)>,
    /// Rounds where the candidate is a fresh draw, independent of the model.
    pub non_members: Vec<(i64, f64)>,
}

/// A round with its cell re-indexed from 0: `(cell, candidate point)`.
pub type IndexedRound = (u32, f64);

impl GameRounds {
    /// Both sides with cells re-indexed from 0 (the lowest cell seen on either side), the
    /// input of [`SmoothedTv::joint_histogram`](super::SmoothedTv::joint_histogram).
    pub fn joint_histogram_input(&self) -> (Vec<IndexedRound>, Vec<IndexedRound>) {
        let lowest = self
            .members
            .iter()
            .chain(&self.non_members)
            .map(|p| p.0)
            .min()
            .unwrap_or(0);
        let index = |v: &[(i64, f64)]| -> Vec<IndexedRound> {
            v.iter().map(|&(k, z)| ((k - lowest) as u32, z)).collect()
        };
        (index(&self.members), index(&self.non_members))
    }
}

impl QuantizedMean {
    /// `n ≥ 2` training points, grid step `step > 0`, cell boundaries at `offset + k·step`.
    pub fn new(n: usize, step: f64, offset: f64) -> Result<Self> {
        if n < 2 {
            return Err(Error::TooFewSamples {
                what: "training points of the quantized mean",
                needed: 2,
                got: n,
            });
        }
        if !(step.is_finite() && step > 0.0) {
            return Err(Error::InvalidParameter {
                name: "step",
                reason: format!("must be finite and positive, got {step}"),
            });
        }
        if !offset.is_finite() {
            return Err(Error::InvalidParameter {
                name: "offset",
                reason: format!("must be finite, got {offset}"),
            });
        }
        Ok(QuantizedMean { n, step, offset })
    }

    /// Training-set size `n`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Grid step `h`.
    pub fn step(&self) -> f64 {
        self.step
    }

    /// The cell holding `theta`.
    pub fn cell(&self, theta: f64) -> i64 {
        ((theta - self.offset) / self.step).floor() as i64
    }

    /// The centre of cell `k`: the quantized model's parameter.
    pub fn centre(&self, cell: i64) -> f64 {
        self.offset + (cell as f64 + 0.5) * self.step
    }

    /// Squared loss `(centre(cell) − z)²` of the released model on a point `z`.
    pub fn loss(&self, cell: i64, z: f64) -> f64 {
        (self.centre(cell) - z).powi(2)
    }

    /// The true advantage `Δ_n = ½ Σ_k E_z |P(T = k | Z₁ = z) − P(T = k)|` by quadrature
    /// (trapezoid rule on `z ∈ [−12, 12]` with 6000 panels, cells within 12 standard deviations
    /// of 0; absolute error well below 1e-6 for `n ≤ 10⁴` and `h ≥ 10⁻³`).
    pub fn true_advantage(&self) -> f64 {
        let nf = self.n as f64;
        // (Z₂ + … + Z_n)/n has standard deviation √(n−1)/n.
        let s = (nf - 1.0).sqrt() / nf;
        let reach = 12.0 / nf.sqrt() + 2.0 * self.step;
        let k_lo = ((-reach - self.offset) / self.step).floor() as i64;
        let k_hi = ((reach - self.offset) / self.step).ceil() as i64;
        let (lo, hi, panels) = (-12.0, 12.0, 6000);
        let dz = (hi - lo) / panels as f64;
        let density: Vec<f64> = (0..=panels)
            .map(|j| {
                let z: f64 = lo + j as f64 * dz;
                let w = if j == 0 || j == panels { 0.5 } else { 1.0 };
                w * (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt()
            })
            .collect();
        let mut total = 0.0;
        for k in k_lo..=k_hi {
            let a = self.offset + k as f64 * self.step;
            let b = a + self.step;
            let marginal = normal_cdf(b * nf.sqrt()) - normal_cdf(a * nf.sqrt());
            let integral: f64 = density
                .iter()
                .enumerate()
                .map(|(j, w)| {
                    let z = lo + j as f64 * dz;
                    let cond = normal_cdf((b - z / nf) / s) - normal_cdf((a - z / nf) / s);
                    w * (cond - marginal).abs()
                })
                .sum();
            total += integral * dz;
        }
        (0.5 * total).clamp(0.0, 1.0)
    }

    /// `1 − Δ_n`: the membership-inference security of releasing the quantized mean.
    pub fn true_mis(&self) -> f64 {
        1.0 - self.true_advantage()
    }

    /// `rounds` member and `rounds` non-member rounds of the game: a member round trains on
    /// `n` fresh points and presents the first; a non-member round trains on `n` fresh points
    /// and presents an independent draw. The draws do not depend on the grid, so two games
    /// simulated with the same seed are paired round by round.
    pub fn simulate(&self, rounds: usize, seed: u64) -> GameRounds {
        let nf = self.n as f64;
        let rest = (nf - 1.0).sqrt();
        let mut rng = SplitMix64::new(seed);
        let mut members = Vec::with_capacity(rounds);
        let mut non_members = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let z1 = rng.normal();
            members.push((self.cell((z1 + rest * rng.normal()) / nf), z1));
            let other = rng.normal();
            let theta = (other + rest * rng.normal()) / nf;
            non_members.push((self.cell(theta), rng.normal()));
        }
        GameRounds {
            members,
            non_members,
        }
    }

    /// Held-out losses for the [`MisIndicator`](super::MisIndicator): the losses on `z` of the
    /// model the procedure selects as `n → ∞` (the cell holding the optimum 0), and of its two
    /// competitors, the neighbouring cells.
    pub fn indicator_losses(&self, z: &[f64]) -> (Vec<f64>, Vec<Vec<f64>>) {
        let selected = self.cell(0.0);
        let losses = |k: i64| z.iter().map(|&z| self.loss(k, z)).collect::<Vec<f64>>();
        (
            losses(selected),
            vec![losses(selected - 1), losses(selected + 1)],
        )
    }
}
