//! Perturbations: controlled noise on weights or activations, to study quantization as
//! perturbation.

use candle_core::Tensor;

use crate::error::Result;

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
}
