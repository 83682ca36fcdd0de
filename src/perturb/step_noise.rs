//! Step-matched noise: the textbook model of rounding error, `Δ ~ U(−step/2, step/2)` per
//! element, with `step` the local grid spacing a given quantizer uses on that element.

use std::sync::Arc;

use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::perturb::Perturbation;
use crate::perturb::values;
use crate::quant::{QuantizedTensor, Quantizer};
use crate::rng;

/// Keeps step-noise draws apart from those of [`Noise`](super::Noise) under the same seed.
const DOMAIN: u64 = 0x5354_4550_4e4f_4953; // "STEPNOIS"

/// Uniform noise on ±step/2 per element, where `step` is the spacing of the quantizer's grid
/// around that element: what "quantization error is uniform noise" predicts.
///
/// The quantizer quantizes the tensor viewed as `[rows, last_dim]` (see
/// [`Intensity`](super::Intensity)); then each element gets
///
/// * on uniform formats, its group's [`step`](QuantizedTensor::step) (the scale);
/// * on other formats (codebooks, floats, sign, ternary), the gap between the two levels of its
///   group's [`group_levels`](QuantizedTensor::group_levels) that bracket it. A value exactly
///   on a level takes the gap above it; a value below the lowest or above the highest level
///   takes the nearest gap at that end; a group with a single level (all-zero scale) has step 0
///   and gets no noise.
///
/// Draws are counter-based: same seed, same bytes. Shape and dtype are preserved.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::perturb::StepNoise;
/// use quantlens::{Perturbation, QuantSpec, Quantizer, UniformQuantizer};
///
/// let x = Tensor::new(&[[0.7f32, -0.1, 0.3, 0.0]], &Device::Cpu)?;
/// let int4 = UniformQuantizer::new(QuantSpec::int4().per_channel())?;
/// let scale = int4.quantize(&x, None)?.scales().get(0); // ≈ 0.7 / 7
/// let noise = StepNoise::new(int4);
/// assert_eq!(noise.local_steps(&x)?.to_vec2::<f64>()?, vec![vec![scale as f64; 4]]);
/// let y = noise.apply(&x, 3)?;
/// let d = (&y - &x)?.abs()?.max_all()?.to_scalar::<f32>()?;
/// assert!(d <= 0.5 * scale * 1.0001);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Clone)]
pub struct StepNoise {
    quantizer: Arc<dyn Quantizer>,
}

impl std::fmt::Debug for StepNoise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StepNoise({})", self.quantizer.name())
    }
}

impl StepNoise {
    /// Noise matched to the grid of `quantizer`.
    pub fn new(quantizer: impl Quantizer + 'static) -> Self {
        StepNoise::shared(Arc::new(quantizer))
    }

    /// Noise matched to the grid of a shared quantizer.
    pub fn shared(quantizer: Arc<dyn Quantizer>) -> Self {
        StepNoise { quantizer }
    }

    /// The local grid spacing of every element of `x`, as an f64 tensor of `x`'s shape.
    pub fn local_steps(&self, x: &Tensor) -> Result<Tensor> {
        let v = values::read(x, "perturbed tensor")?;
        let qt = self.quantizer.quantize(&values::as_matrix(x)?, None)?;
        let steps = local_steps(&qt, &v)?;
        Ok(Tensor::from_vec(steps, x.dims(), x.device())?.to_dtype(DType::F64)?)
    }

    /// The change Δ, as an f64 tensor of `x`'s shape; `apply` returns `x + Δ` in `x`'s dtype.
    pub fn delta(&self, x: &Tensor, seed: u64) -> Result<Tensor> {
        let v = values::read(x, "perturbed tensor")?;
        let d = self.delta_values(x, &v, seed)?;
        Ok(Tensor::from_vec(d, x.dims(), x.device())?.to_dtype(DType::F64)?)
    }

    pub(crate) fn delta_values(&self, x: &Tensor, v: &[f64], seed: u64) -> Result<Vec<f64>> {
        let qt = self.quantizer.quantize(&values::as_matrix(x)?, None)?;
        Ok(step_delta(&local_steps(&qt, v)?, seed))
    }
}

/// `steps[i] · u_i` with `u_i` uniform on (−½, ½), drawn counter-based from `seed`.
pub(crate) fn step_delta(steps: &[f64], seed: u64) -> Vec<f64> {
    let key = rng::mix(seed ^ DOMAIN);
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| s * (values::unit_open(rng::nth(key, i as u64 + 1)) - 0.5))
        .collect()
}

/// The grid spacing around each value `v[i]` in `qt` (see [`StepNoise`] for the rule).
pub(crate) fn local_steps(qt: &QuantizedTensor, v: &[f64]) -> Result<Vec<f64>> {
    if qt.numel() != v.len() {
        return Err(crate::Error::ShapeMismatch(format!(
            "quantized tensor of {} elements for {} values",
            qt.numel(),
            v.len()
        )));
    }
    let len = qt.group_len();
    let mut out = Vec::with_capacity(v.len());
    for (g, chunk) in v.chunks(len).enumerate() {
        if let Some(s) = qt.step(g) {
            out.extend(std::iter::repeat_n(f64::from(s), chunk.len()));
            continue;
        }
        let levels: Vec<f64> = qt.group_levels(g).into_iter().map(f64::from).collect();
        out.extend(chunk.iter().map(|&x| bracketing_gap(&levels, x)));
    }
    Ok(out)
}

/// The gap between the ascending `levels` around `x`: `[l_j, l_{j+1})` containing it, or the
/// end gap nearest to it; 0 with fewer than two levels.
pub(crate) fn bracketing_gap(levels: &[f64], x: f64) -> f64 {
    let n = levels.len();
    if n < 2 {
        return 0.0;
    }
    // Number of levels ≤ x; the bracket is [levels[j − 1], levels[j]], clamped to the ends.
    let j = levels.partition_point(|&l| l <= x).clamp(1, n - 1);
    levels[j] - levels[j - 1]
}

impl Perturbation for StepNoise {
    /// `step-noise[{quantizer}]`.
    fn name(&self) -> String {
        format!("step-noise[{}]", self.quantizer.name())
    }

    fn apply(&self, x: &Tensor, seed: u64) -> Result<Tensor> {
        let v = values::read(x, "perturbed tensor")?;
        let d = self.delta_values(x, &v, seed)?;
        let out: Vec<f64> = v.iter().zip(&d).map(|(a, b)| a + b).collect();
        values::write(&out, x, "perturbed tensor (overflows its dtype)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bracketing_gap_rules() {
        let l = [-1.0, 0.0, 0.5, 2.0];
        assert_eq!(bracketing_gap(&l, -3.0), 1.0); // below: the lowest gap
        assert_eq!(bracketing_gap(&l, -1.0), 1.0); // on a level: the gap above
        assert_eq!(bracketing_gap(&l, 0.0), 0.5);
        assert_eq!(bracketing_gap(&l, 0.25), 0.5);
        assert_eq!(bracketing_gap(&l, 1.0), 1.5);
        assert_eq!(bracketing_gap(&l, 2.0), 1.5); // top level: the gap below
        assert_eq!(bracketing_gap(&l, 9.0), 1.5);
        assert_eq!(bracketing_gap(&[0.0], 1.0), 0.0);
        assert_eq!(bracketing_gap(&[], 1.0), 0.0);
    }
}
