//! Additive noise of a chosen distribution and shape, scaled to an exact L2 norm:
//! `Δ = τ · g / ‖g‖₂` with `g = ξ` (plain), `|x| ⊙ ξ` (M+) or `ξ ⊘ (|x| + ε)` (M−).

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::perturb::Perturbation;
use crate::perturb::intensity::Intensity;
use crate::perturb::values;
use crate::quant::Quantizer;
use crate::rng;

/// The law of the i.i.d. draws ξ behind the noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Distribution {
    /// Standard normal (Box–Muller on two counter-based uniforms).
    Gaussian,
    /// Uniform on the open interval (−1, 1).
    Uniform,
    /// ±1 with probability ½ each.
    Rademacher,
}

impl Distribution {
    /// Lowercase name: `gaussian`, `uniform`, `rademacher`.
    pub fn tag(&self) -> &'static str {
        match self {
            Distribution::Gaussian => "gaussian",
            Distribution::Uniform => "uniform",
            Distribution::Rademacher => "rademacher",
        }
    }

    /// The draws ξ₀ … ξₙ₋₁ that [`Noise`] uses with this seed on a tensor of `n` elements
    /// (before shaping and scaling).
    ///
    /// ```
    /// use quantlens::perturb::Distribution;
    /// let xi = Distribution::Rademacher.sample(3, 1000);
    /// assert!(xi.iter().all(|x| x.abs() == 1.0));
    /// assert!(Distribution::Uniform.sample(3, 1000).iter().all(|x| x.abs() < 1.0));
    /// ```
    pub fn sample(&self, seed: u64, n: usize) -> Vec<f64> {
        (0..n as u64)
            .into_par_iter()
            .map(|i| self.draw(seed, i))
            .collect()
    }

    /// Draw `i` of the stream `seed`: a pure function of both, so draws can run in parallel
    /// and the result does not depend on the thread count.
    fn draw(&self, seed: u64, i: u64) -> f64 {
        match self {
            Distribution::Gaussian => {
                let u1 = values::unit_open(rng::nth(seed, 2 * i + 1));
                let u2 = values::unit(rng::nth(seed, 2 * i + 2));
                (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
            }
            // 2u − 1 with u on the half-shifted 53-bit grid: odd multiples of 2^−53, never 0
            // and never ±1.
            Distribution::Uniform => 2.0 * values::unit_open(rng::nth(seed, i + 1)) - 1.0,
            Distribution::Rademacher => {
                if rng::nth(seed, i + 1) >> 63 == 0 {
                    1.0
                } else {
                    -1.0
                }
            }
        }
    }
}

/// The default ε of M− noise, relative to the tensor's mean |x| (see [`NoiseShape`]).
pub const DEFAULT_MAGNITUDE_DOWN_EPS: f64 = 0.01;

/// How the noise direction depends on the values being perturbed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoiseShape {
    /// `g = ξ`: the same law everywhere, like uniform round-to-nearest error.
    Plain,
    /// `g = |x| ⊙ ξ` (the paper's Δ_M+): large values move more, zeros not at all — the
    /// error profile of magnitude-aware (companding, float) formats.
    MagnitudeUp,
    /// `g = ξ ⊘ (|x| + ε)` (Δ_M−): small values move more.
    ///
    /// `eps` is relative: the absolute ε is `eps · mean|x|`, so the shape of the noise does not
    /// depend on the tensor's units (weights near 0.02 and activations near 10 get the same
    /// profile), and an exact zero in `x` gets a draw `1/eps` times that of a typical element
    /// rather than an infinite one. `eps` must be finite and > 0; on an all-zero tensor the
    /// shape falls back to plain noise (every |x| is equal).
    MagnitudeDown {
        /// ε relative to the mean |x| ([`DEFAULT_MAGNITUDE_DOWN_EPS`] by default).
        eps: f64,
    },
}

impl NoiseShape {
    /// Empty for plain noise, `-m+` or `-m-eps…` otherwise.
    pub fn tag(&self) -> String {
        match self {
            NoiseShape::Plain => String::new(),
            NoiseShape::MagnitudeUp => "-m+".into(),
            NoiseShape::MagnitudeDown { eps } => format!("-m-eps{eps}"),
        }
    }

    fn validate(&self) -> Result<()> {
        if let NoiseShape::MagnitudeDown { eps } = *self
            && !(eps.is_finite() && eps > 0.0)
        {
            return Err(Error::InvalidParameter {
                name: "M− epsilon",
                reason: format!("must be finite and > 0, got {eps}"),
            });
        }
        Ok(())
    }
}

/// A [`Noise`] whose distribution and shape are chosen, waiting for its intensity.
///
/// Made by [`Noise::gaussian`], [`Noise::uniform`], [`Noise::rademacher`] or [`Noise::from_distribution`];
/// [`absolute`](Self::absolute), [`relative`](Self::relative),
/// [`anchored_to`](Self::anchored_to) or [`with_intensity`](Self::with_intensity) finish it,
/// so a noise without an intensity cannot be built by mistake.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseBuilder {
    distribution: Distribution,
    shape: NoiseShape,
}

impl NoiseBuilder {
    /// Magnitude-correlated noise M+: `g = |x| ⊙ ξ`.
    pub fn magnitude_up(mut self) -> Self {
        self.shape = NoiseShape::MagnitudeUp;
        self
    }

    /// Inversely magnitude-correlated noise M−: `g = ξ ⊘ (|x| + ε)` with the default relative
    /// ε ([`DEFAULT_MAGNITUDE_DOWN_EPS`] · mean|x|).
    pub fn magnitude_down(self) -> Self {
        self.magnitude_down_eps(DEFAULT_MAGNITUDE_DOWN_EPS)
    }

    /// M− noise with ε = `eps` · mean|x| (`eps` finite and > 0, checked on use).
    pub fn magnitude_down_eps(mut self, eps: f64) -> Self {
        self.shape = NoiseShape::MagnitudeDown { eps };
        self
    }

    /// Any shape.
    pub fn with_shape(mut self, shape: NoiseShape) -> Self {
        self.shape = shape;
        self
    }

    /// ‖Δ‖₂ = `tau`.
    pub fn absolute(self, tau: f64) -> Noise {
        self.with_intensity(Intensity::Absolute(tau))
    }

    /// ‖Δ‖₂ = `fraction` · ‖x‖₂.
    pub fn relative(self, fraction: f64) -> Noise {
        self.with_intensity(Intensity::Relative(fraction))
    }

    /// ‖Δ‖₂ = `multiple` · ‖Q(x) − x‖₂ for `quantizer` Q on the same tensor.
    pub fn anchored_to(self, quantizer: impl Quantizer + 'static, multiple: f64) -> Noise {
        self.with_intensity(Intensity::anchored(quantizer, multiple))
    }

    /// Any [`Intensity`].
    pub fn with_intensity(self, intensity: Intensity) -> Noise {
        Noise {
            distribution: self.distribution,
            shape: self.shape,
            intensity,
        }
    }
}

/// Additive noise `x′ = x + Δ`, `Δ = τ · g / ‖g‖₂`, the parametrisation of the
/// perturbation-lens study (Gong et al., *What Makes Quantization for Large Language Models
/// Hard?*, AAAI 2024, arXiv:2403.06408).
///
/// * `ξ` i.i.d. [`Distribution::Gaussian`], [`Uniform`](Distribution::Uniform) or
///   [`Rademacher`](Distribution::Rademacher), drawn counter-based from the seed (same seed,
///   same bytes, on any thread count);
/// * `g` [`NoiseShape::Plain`], [`MagnitudeUp`](NoiseShape::MagnitudeUp) (M+) or
///   [`MagnitudeDown`](NoiseShape::MagnitudeDown) (M−);
/// * τ an [`Intensity`]: absolute, relative to ‖x‖₂, or anchored to a quantizer's error.
///
/// Works on any rank and on f32, f16 and bf16; Δ is computed in f64 and `x + Δ` rounded once to
/// the input's dtype, so ‖x′ − x‖₂ = τ up to that rounding (exactly τ in f64 via
/// [`delta`](Self::delta)). τ = 0 returns the input unchanged. Errors: invalid parameters,
/// non-finite or empty input, an integer dtype, M+ asked for τ > 0 on an all-zero tensor (no
/// direction to scale), a result that overflows the dtype.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::perturb::Noise;
/// use quantlens::{Perturbation, QuantSpec, UniformQuantizer};
///
/// let x = Tensor::randn(0f32, 1.0, (16, 64), &Device::Cpu)?;
/// let noise = Noise::gaussian().relative(0.05);
/// let y = noise.apply(&x, 7)?;
/// let rel = ((&y - &x)?.sqr()?.sum_all()?.sqrt()? / x.sqr()?.sum_all()?.sqrt()?)?;
/// assert!((rel.to_scalar::<f32>()? - 0.05).abs() < 1e-4);
/// assert_eq!(y.to_vec2::<f32>()?, noise.apply(&x, 7)?.to_vec2::<f32>()?);
///
/// // Rademacher M+ noise exactly as strong as 4-bit per-channel RTN on this tensor.
/// let rtn4 = UniformQuantizer::new(QuantSpec::int4().per_channel())?;
/// let like_rtn4 = Noise::rademacher().magnitude_up().anchored_to(rtn4, 1.0);
/// println!("{}", like_rtn4.name()); // noise-rademacher-m+-anchor1x[rtn-w4-c-sym]
/// let _ = like_rtn4.apply(&x, 7)?;
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Noise {
    distribution: Distribution,
    shape: NoiseShape,
    intensity: Intensity,
}

impl Noise {
    /// Noise with draws from `distribution`, plain shape; choose an intensity to finish it.
    pub fn from_distribution(distribution: Distribution) -> NoiseBuilder {
        NoiseBuilder {
            distribution,
            shape: NoiseShape::Plain,
        }
    }

    /// Gaussian noise (plain shape until told otherwise).
    pub fn gaussian() -> NoiseBuilder {
        Noise::from_distribution(Distribution::Gaussian)
    }

    /// Uniform U(−1, 1) noise.
    pub fn uniform() -> NoiseBuilder {
        Noise::from_distribution(Distribution::Uniform)
    }

    /// Rademacher ±1 noise.
    pub fn rademacher() -> NoiseBuilder {
        Noise::from_distribution(Distribution::Rademacher)
    }

    /// The draws' law.
    pub fn distribution(&self) -> Distribution {
        self.distribution
    }

    /// The shape of `g`.
    pub fn shape(&self) -> NoiseShape {
        self.shape
    }

    /// How strong Δ is.
    pub fn intensity(&self) -> &Intensity {
        &self.intensity
    }

    /// Check the parameters (intensity finite and ≥ 0, M− ε finite and > 0).
    pub fn validate(&self) -> Result<()> {
        self.shape.validate()?;
        self.intensity.validate()
    }

    /// The change Δ itself, as an f64 tensor of `x`'s shape: ‖Δ‖₂ = τ to f64 rounding.
    ///
    /// [`apply`](Perturbation::apply) returns `x + Δ` rounded to `x`'s dtype.
    pub fn delta(&self, x: &Tensor, seed: u64) -> Result<Tensor> {
        let v = values::read(x, "perturbed tensor")?;
        let d = self.delta_values(x, &v, seed)?;
        Ok(Tensor::from_vec(d, x.dims(), x.device())?.to_dtype(DType::F64)?)
    }

    /// Δ for `x` whose elements (row-major, f64) are `v`.
    pub(crate) fn delta_values(&self, x: &Tensor, v: &[f64], seed: u64) -> Result<Vec<f64>> {
        self.validate()?;
        let tau = self.intensity.resolve(x, v)?;
        if tau == 0.0 {
            return Ok(vec![0.0; v.len()]);
        }
        let g = self.direction(v, seed);
        let norm = values::l2(g.iter().copied());
        if norm == 0.0 {
            return Err(Error::InvalidParameter {
                name: "noise shape",
                reason: format!(
                    "{} noise is zero on an all-zero tensor, so no norm τ = {tau} > 0 can be \
                     reached; use plain noise",
                    self.name()
                ),
            });
        }
        if !norm.is_finite() {
            return Err(Error::InvalidParameter {
                name: "M− epsilon",
                reason: "so small that 1/(|x| + ε) overflows on this tensor".into(),
            });
        }
        let k = tau / norm;
        Ok(g.into_iter().map(|gi| k * gi).collect())
    }

    /// The unscaled direction g.
    fn direction(&self, v: &[f64], seed: u64) -> Vec<f64> {
        let dist = self.distribution;
        let xi = |i: usize| dist.draw(seed, i as u64);
        match self.shape {
            NoiseShape::Plain => (0..v.len()).into_par_iter().map(xi).collect(),
            NoiseShape::MagnitudeUp => v
                .par_iter()
                .enumerate()
                .map(|(i, x)| x.abs() * xi(i))
                .collect(),
            NoiseShape::MagnitudeDown { eps } => {
                let mean_abs = v.iter().map(|x| x.abs()).sum::<f64>() / v.len() as f64;
                let eps_abs = eps * mean_abs;
                if eps_abs == 0.0 {
                    // All-zero tensor: every |x| is equal, so M− is plain noise.
                    return (0..v.len()).into_par_iter().map(xi).collect();
                }
                v.par_iter()
                    .enumerate()
                    .map(|(i, x)| xi(i) / (x.abs() + eps_abs))
                    .collect()
            }
        }
    }
}

impl Perturbation for Noise {
    /// `noise-{distribution}{shape}-{intensity}`, e.g. `noise-gaussian-m+-rel0.05`.
    fn name(&self) -> String {
        format!(
            "noise-{}{}-{}",
            self.distribution.tag(),
            self.shape.tag(),
            self.intensity.tag()
        )
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
    use candle_core::Device;

    fn l2(t: &Tensor) -> f64 {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
            .iter()
            .map(|x| x * x)
            .sum::<f64>()
            .sqrt()
    }

    #[test]
    fn draws_have_the_moments_of_their_law() {
        // Mean 0 and variance 1, 1/3, 1 within 6 standard errors over 40k draws.
        let n = 40_000u64;
        for (d, var, var_of_sq) in [
            (Distribution::Gaussian, 1.0, 2.0),
            (Distribution::Uniform, 1.0 / 3.0, 1.0 / 5.0 - 1.0 / 9.0),
            (Distribution::Rademacher, 1.0, 0.0),
        ] {
            let xs: Vec<f64> = (0..n).map(|i| d.draw(11, i)).collect();
            let mean = xs.iter().sum::<f64>() / n as f64;
            let m2 = xs.iter().map(|x| x * x).sum::<f64>() / n as f64;
            let se_mean = (var / n as f64).sqrt();
            assert!(mean.abs() < 6.0 * se_mean, "{d:?}: mean {mean}");
            let se_var = (var_of_sq / n as f64).sqrt().max(1e-12);
            assert!((m2 - var).abs() < 6.0 * se_var, "{d:?}: E[ξ²] {m2}");
        }
    }

    #[test]
    fn m_minus_on_all_zero_tensor_is_plain() {
        let x = Tensor::zeros((3, 4), DType::F32, &Device::Cpu).unwrap();
        let down = Noise::uniform().magnitude_down().absolute(2.0);
        let plain = Noise::uniform().absolute(2.0);
        let a = down.delta(&x, 5).unwrap();
        let b = plain.delta(&x, 5).unwrap();
        assert_eq!(
            a.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f64>().unwrap()
        );
        assert!((l2(&a) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn m_plus_on_all_zero_tensor_is_an_error_unless_tau_is_zero() {
        let x = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
        let up = Noise::gaussian().magnitude_up();
        assert!(matches!(
            up.absolute(1.0).apply(&x, 0),
            Err(Error::InvalidParameter { .. })
        ));
        let same = up.absolute(0.0).apply(&x, 0).unwrap();
        assert_eq!(same.to_vec2::<f32>().unwrap(), vec![vec![0.0; 2]; 2]);
    }

    #[test]
    fn zero_eps_is_rejected() {
        let x = Tensor::ones((2, 2), DType::F32, &Device::Cpu).unwrap();
        for eps in [0.0, -1.0, f64::NAN] {
            let n = Noise::gaussian().magnitude_down_eps(eps).absolute(1.0);
            assert!(matches!(
                n.apply(&x, 0),
                Err(Error::InvalidParameter {
                    name: "M− epsilon",
                    ..
                })
            ));
        }
    }

    #[test]
    fn overflowing_the_dtype_is_an_error() {
        let x = Tensor::new(&[60000f32, 1.0], &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap();
        let big = Noise::rademacher().absolute(1e6);
        assert!(matches!(big.apply(&x, 0), Err(Error::NonFinite { .. })));
    }

    #[test]
    fn names_are_distinct_per_configuration() {
        let names = [
            Noise::gaussian().relative(0.1).name(),
            Noise::gaussian().absolute(0.1).name(),
            Noise::uniform().relative(0.1).name(),
            Noise::gaussian().magnitude_up().relative(0.1).name(),
            Noise::gaussian().magnitude_down().relative(0.1).name(),
            Noise::gaussian()
                .magnitude_down_eps(0.1)
                .relative(0.1)
                .name(),
        ];
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(names[3], "noise-gaussian-m+-rel0.1");
    }
}
