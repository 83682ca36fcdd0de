//! Perturbations: controlled noise on weights or activations, to study quantization as
//! perturbation (Gong et al., *What Makes Quantization for Large Language Models Hard?*, AAAI
//! 2024).
//!
//! | file | concept |
//! |---|---|
//! | `noise.rs` | [`Noise`]: Gaussian / uniform / Rademacher draws, plain, M+ or M− shape, `Δ = τ·g/‖g‖₂` |
//! | `intensity.rs` | [`Intensity`]: τ absolute, relative to ‖x‖, or anchored to a quantizer's error |
//! | `step_noise.rs` | [`StepNoise`]: uniform on ±step/2 of a quantizer's local grid |
//! | `code_flips.rs` | [`CodeFlips`]: bit and sign flips in packed codes; [`QuantizedFlips`] |
//! | `clip.rs` | [`Clip`]: clamp to the (1 − p) quantile of \|x\| |
//! | `weights.rs` | [`perturb_weights`]: a model's weights, per-layer seeds, [`PerturbationReport`] |
//! | `equivalence.rs` | [`perturbation_equivalence`]: a quantizer's error next to its matched noise |
//!
//! Activations are perturbed during the forward pass by
//! [`PerturbActivations`](crate::model::PerturbActivations), which takes any [`Perturbation`].
//!
//! Every injector reads its input as f64 (exact for f32, f16 and bf16), refuses NaN/±Inf,
//! empty tensors and integer dtypes with an [`Error`](crate::Error), and rounds its result
//! once to the input's dtype. Random draws come from [`crate::rng`], counter-based, so the same
//! seed gives the same bytes on any thread count.

use candle_core::Tensor;

use crate::error::Result;

mod clip;
mod code_flips;
mod equivalence;
mod intensity;
mod noise;
mod step_noise;
mod values;
mod weights;

pub use clip::Clip;
pub use code_flips::{CodeFlips, FlipAmount, FlipCounts, FlipTarget, QuantizedFlips};
pub use equivalence::{
    EquivalenceReport, EquivalenceRow, ErrorSource, ErrorStats, perturbation_equivalence,
};
pub use intensity::Intensity;
pub use noise::{DEFAULT_MAGNITUDE_DOWN_EPS, Distribution, Noise, NoiseBuilder, NoiseShape};
pub use step_noise::StepNoise;
pub use weights::{LayerPerturbation, PerturbationReport, layer_seed, perturb_weights};

/// A seeded transformation of a tensor (weights or activations), such as additive noise of a
/// chosen shape and size.
///
/// Object safe, so an audit can hold a `Vec<Box<dyn Perturbation>>`. Implementations must be
/// deterministic in `seed`, preserve shape and dtype, and return an error (not NaNs) on input
/// they cannot handle.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::{Perturbation, Result};
///
/// /// Multiplies every element by a constant.
/// struct Scale(f64);
/// impl Perturbation for Scale {
///     fn name(&self) -> String { format!("scale-{}", self.0) }
///     fn apply(&self, t: &Tensor, _seed: u64) -> Result<Tensor> { Ok(t.affine(self.0, 0.0)?) }
/// }
///
/// let p: Box<dyn Perturbation> = Box::new(Scale(2.0));
/// let t = Tensor::new(&[1f32, -3.0], &Device::Cpu)?;
/// assert_eq!(p.apply(&t, 0)?.to_vec1::<f32>()?, vec![2.0, -6.0]);
/// # Ok::<(), quantlens::Error>(())
/// ```
pub trait Perturbation: Send + Sync {
    /// A stable name for reports, unique per configuration.
    fn name(&self) -> String;

    /// The perturbed tensor; same seed, same bytes.
    fn apply(&self, t: &Tensor, seed: u64) -> Result<Tensor>;

    /// The full configuration, for reports. The default gives `{"name": …}`, which for the
    /// crate's injectors already spells out distribution, shape and intensity.
    fn config(&self) -> serde_json::Value {
        serde_json::json!({ "name": self.name() })
    }
}
