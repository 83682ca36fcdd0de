//! How well "quantization = noise" holds on a given tensor: the error statistics of a
//! quantizer next to those of the noise injectors matched to it.

use std::fmt;

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::perturb::noise::{Noise, NoiseBuilder};
use crate::perturb::step_noise::{local_steps, step_delta};
use crate::perturb::values;
use crate::quant::{QuantizedTensor, Quantizer};

/// Summary statistics of a perturbation `Δ` of a tensor `x` (all in f64).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ErrorStats {
    /// Mean of Δ over all entries (bias).
    pub mean: f64,
    /// Population variance of Δ over all entries.
    pub variance: f64,
    /// `‖Δ‖₂ / ‖x‖₂` (0 when Δ = 0, +∞ when only x is 0).
    pub relative_norm: f64,
    /// Pearson correlation of |Δ| with |x| over the included entries: ≈ 0 for uniform
    /// round-to-nearest, positive when large values take larger errors (companding, float
    /// formats, M+ noise), negative for M− noise. `None` when |Δ| or |x| is constant there.
    pub magnitude_correlation: Option<f64>,
    /// Excess kurtosis `m₄/m₂² − 3` of Δ over all entries: −1.2 for uniform errors, 0 for
    /// Gaussian ones, large for heavy tails (clipping, flips). `None` when Δ is constant.
    pub excess_kurtosis: Option<f64>,
}

impl ErrorStats {
    /// The statistics of `delta` as a perturbation of `x`; the magnitude correlation runs over
    /// the entries where `include` is true (e.g. those a quantizer did not clip).
    ///
    /// ```
    /// use quantlens::perturb::ErrorStats;
    /// let x = [1.0, -2.0, 3.0, -4.0];
    /// let d = [0.1, -0.2, 0.3, -0.4]; // |Δ| = 0.1 |x|: perfectly magnitude-correlated
    /// let s = ErrorStats::compute(&x, &d, &[true; 4])?;
    /// assert!((s.magnitude_correlation.unwrap() - 1.0).abs() < 1e-12);
    /// assert!((s.relative_norm - 0.1).abs() < 1e-12);
    /// # Ok::<(), quantlens::Error>(())
    /// ```
    pub fn compute(x: &[f64], delta: &[f64], include: &[bool]) -> Result<Self> {
        if x.len() != delta.len() || x.len() != include.len() {
            return Err(Error::ShapeMismatch(format!(
                "error statistics: {} values, {} deltas, {} flags",
                x.len(),
                delta.len(),
                include.len()
            )));
        }
        if x.is_empty() {
            return Err(Error::TooFewSamples {
                what: "error statistics",
                needed: 1,
                got: 0,
            });
        }
        values::check_finite(x, "values")?;
        values::check_finite(delta, "perturbation")?;
        let n = delta.len() as f64;
        let mean = delta.iter().sum::<f64>() / n;
        let central = |p: i32| delta.iter().map(|d| (d - mean).powi(p)).sum::<f64>() / n;
        let (m2, m4) = (central(2), central(4));
        let dn = values::l2(delta.iter().copied());
        let xn = values::l2(x.iter().copied());
        let (a, b): (Vec<f64>, Vec<f64>) = delta
            .iter()
            .zip(x)
            .zip(include)
            .filter(|(_, keep)| **keep)
            .map(|((d, x), _)| (d.abs(), x.abs()))
            .unzip();
        Ok(ErrorStats {
            mean,
            variance: m2,
            relative_norm: if dn == 0.0 { 0.0 } else { dn / xn },
            magnitude_correlation: pearson(&a, &b),
            excess_kurtosis: (m2 > 0.0).then(|| m4 / (m2 * m2) - 3.0),
        })
    }
}

/// Pearson correlation, two-pass; `None` with fewer than two points or a constant side.
fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() < 2 {
        return None;
    }
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        let (dx, dy) = (x - ma, y - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    (saa > 0.0 && sbb > 0.0).then(|| (sab / (saa.sqrt() * sbb.sqrt())).clamp(-1.0, 1.0))
}

/// Where a row of an [`EquivalenceReport`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorSource {
    /// The quantizer's real error `Q(x) − x`.
    Quantizer,
    /// [`StepNoise`](super::StepNoise): uniform on ±step/2 of the quantizer's local grid.
    StepMatched,
    /// Plain Gaussian noise with ‖Δ‖ = ‖Q(x) − x‖.
    Gaussian,
    /// Gaussian M+ noise (`|x| ⊙ ξ`) with the same norm.
    GaussianUp,
    /// Gaussian M− noise (`ξ ⊘ (|x| + ε)`, default ε) with the same norm.
    GaussianDown,
}

impl ErrorSource {
    fn label(&self) -> &'static str {
        match self {
            ErrorSource::Quantizer => "quantizer",
            ErrorSource::StepMatched => "step-matched uniform",
            ErrorSource::Gaussian => "gaussian, same ‖Δ‖",
            ErrorSource::GaussianUp => "gaussian M+, same ‖Δ‖",
            ErrorSource::GaussianDown => "gaussian M−, same ‖Δ‖",
        }
    }
}

/// One row of an [`EquivalenceReport`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EquivalenceRow {
    /// Which perturbation.
    pub source: ErrorSource,
    /// Its statistics on the tensor.
    pub stats: ErrorStats,
}

/// A quantizer's error statistics on one tensor next to those of its matched noise models;
/// made by [`perturbation_equivalence`]. `Display` prints it as a small table.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EquivalenceReport {
    /// The quantizer's name.
    pub quantizer: String,
    /// Elements of the tensor.
    pub numel: usize,
    /// Elements inside their group's grid range (not clipped by the quantizer): the entries
    /// the magnitude correlations run over.
    pub unclipped: usize,
    /// The quantizer first, then step-matched, Gaussian, Gaussian M+ and Gaussian M− noise.
    pub rows: Vec<EquivalenceRow>,
}

impl EquivalenceReport {
    /// The statistics of one source.
    pub fn stats(&self, source: ErrorSource) -> Option<&ErrorStats> {
        self.rows
            .iter()
            .find(|r| r.source == source)
            .map(|r| &r.stats)
    }

    /// The quantizer's own error statistics.
    pub fn quantizer_stats(&self) -> &ErrorStats {
        &self.rows[0].stats
    }
}

impl fmt::Display for EquivalenceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:+.4}"));
        writeln!(
            f,
            "quantization as noise: {} on {} values ({} inside the grid)",
            self.quantizer, self.numel, self.unclipped
        )?;
        write!(
            f,
            "{:<24} {:>11} {:>11} {:>9} {:>14} {:>12}",
            "source", "mean", "variance", "‖Δ‖/‖x‖", "corr(|Δ|,|x|)", "excess kurt."
        )?;
        for r in &self.rows {
            let s = &r.stats;
            let label = match r.source {
                ErrorSource::Quantizer => self.quantizer.as_str(),
                other => other.label(),
            };
            write!(
                f,
                "\n{:<24} {:>11.3e} {:>11.3e} {:>9.4} {:>14} {:>12}",
                label,
                s.mean,
                s.variance,
                s.relative_norm,
                opt(s.magnitude_correlation),
                opt(s.excess_kurtosis)
            )?;
        }
        Ok(())
    }
}

/// The error statistics of `quantizer` on `x` next to those of noise matched to it:
/// step-matched uniform noise ([`StepNoise`](super::StepNoise)) and Gaussian, M+ and M− noise
/// with the norm of the quantizer's error, all drawn with `seed`.
///
/// `x` may have any rank; the quantizer sees it as `[rows, last_dim]`. The magnitude
/// correlation of every row runs over the same entries: those inside their group's grid range
/// (`min level ≤ x ≤ max level`), where the rounding model applies.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::perturb::{ErrorSource, perturbation_equivalence};
/// use quantlens::{QuantSpec, UniformQuantizer};
///
/// let w = Tensor::randn(0f32, 1.0, (64, 256), &Device::Cpu)?;
/// let rtn = UniformQuantizer::new(QuantSpec::int4().per_channel())?;
/// let report = perturbation_equivalence(&rtn, &w, 1)?;
/// println!("{report}");
/// // Round-to-nearest error looks like step-matched uniform noise: flat in |x| ...
/// assert!(report.quantizer_stats().magnitude_correlation.unwrap().abs() < 0.1);
/// // ... with a uniform law's kurtosis, not a Gaussian's.
/// assert!(report.quantizer_stats().excess_kurtosis.unwrap() < -0.8);
/// let up = report.stats(ErrorSource::GaussianUp).unwrap();
/// assert!(up.magnitude_correlation.unwrap() > 0.3);
/// # Ok::<(), quantlens::Error>(())
/// ```
pub fn perturbation_equivalence<Q>(
    quantizer: &Q,
    x: &Tensor,
    seed: u64,
) -> Result<EquivalenceReport>
where
    Q: Quantizer + ?Sized,
{
    let v = values::read(x, "tensor")?;
    let qt = quantizer.quantize(&values::as_matrix(x)?, None)?;
    if qt.numel() != v.len() {
        return Err(Error::ShapeMismatch(format!(
            "{} returned {} codes for {} elements",
            quantizer.name(),
            qt.numel(),
            v.len()
        )));
    }
    let qv = values::read(&qt.dequantize(x.device())?, "dequantized tensor")?;
    let dq: Vec<f64> = qv.iter().zip(&v).map(|(q, x)| q - x).collect();
    let include = inside_grid(&qt, &v);
    let tau = values::l2(dq.iter().copied());
    let noise = |b: NoiseBuilder| b.absolute(tau).delta_values(x, &v, seed);
    let deltas = [
        (ErrorSource::Quantizer, dq.clone()),
        (
            ErrorSource::StepMatched,
            step_delta(&local_steps(&qt, &v)?, seed),
        ),
        (ErrorSource::Gaussian, noise(Noise::gaussian())?),
        (
            ErrorSource::GaussianUp,
            noise(Noise::gaussian().magnitude_up())?,
        ),
        (
            ErrorSource::GaussianDown,
            noise(Noise::gaussian().magnitude_down())?,
        ),
    ];
    let rows = deltas
        .into_iter()
        .map(|(source, d)| {
            Ok(EquivalenceRow {
                source,
                stats: ErrorStats::compute(&v, &d, &include)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(EquivalenceReport {
        quantizer: quantizer.name(),
        numel: v.len(),
        unclipped: include.iter().filter(|b| **b).count(),
        rows,
    })
}

/// Whether each value lies within its group's range of levels.
fn inside_grid(qt: &QuantizedTensor, v: &[f64]) -> Vec<bool> {
    let mut out = Vec::with_capacity(v.len());
    for (g, chunk) in v.chunks(qt.group_len()).enumerate() {
        let levels = qt.group_levels(g);
        let (lo, hi) = match (levels.first(), levels.last()) {
            (Some(&lo), Some(&hi)) => (f64::from(lo), f64::from(hi)),
            _ => (0.0, 0.0),
        };
        out.extend(chunk.iter().map(|&x| (lo..=hi).contains(&x)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pearson_matches_hand_values() {
        // y = 2x + 1: r = 1; y = −x: r = −1; hand-computed r for a small set.
        assert!((pearson(&[1.0, 2.0, 3.0], &[3.0, 5.0, 7.0]).unwrap() - 1.0).abs() < 1e-15);
        assert!((pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap() + 1.0).abs() < 1e-15);
        // x = (1,2,3,4), y = (1,3,2,4): Σdxdy = 4, Σdx² = Σdy² = 5, r = 0.8.
        let r = pearson(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]).unwrap();
        assert!((r - 0.8).abs() < 1e-15);
        assert_eq!(pearson(&[1.0, 1.0], &[1.0, 2.0]), None);
        assert_eq!(pearson(&[1.0], &[1.0]), None);
    }

    #[test]
    fn stats_of_a_two_point_law() {
        // Δ = ±1 equally often: mean 0, variance 1, excess kurtosis 1 − 3 = −2.
        let x = [1.0, 2.0, 3.0, 4.0];
        let d = [1.0, -1.0, 1.0, -1.0];
        let s = ErrorStats::compute(&x, &d, &[true; 4]).unwrap();
        assert_eq!(s.mean, 0.0);
        assert_eq!(s.variance, 1.0);
        assert_eq!(s.excess_kurtosis, Some(-2.0));
        assert_eq!(s.magnitude_correlation, None); // |Δ| constant
        assert!((s.relative_norm - 2.0 / 30f64.sqrt()).abs() < 1e-15);
        assert!(ErrorStats::compute(&x, &d[..3], &[true; 4]).is_err());
        assert!(ErrorStats::compute(&[], &[], &[]).is_err());
    }
}
