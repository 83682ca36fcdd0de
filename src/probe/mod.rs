//! Loss probes: one loss per sample, the raw material of membership inference.

use candle_core::Tensor;

use crate::error::Result;

/// Turns a model's outputs and the targets into one loss per sample.
///
/// A probe is model-agnostic: it sees outputs (logits of a classifier, token logits of a
/// language model, predictions of a regressor) and targets, not the model, so the same probe
/// scores the full-precision and every quantized model alike. The result is a rank-1 f32
/// tensor with one entry per sample, on the outputs' device.
///
/// ```
/// use candle_core::{Device, Tensor, D};
/// use quantlens::{LossProbe, Result};
///
/// /// Squared error per sample, summed over output dimensions.
/// struct SquaredError;
/// impl LossProbe for SquaredError {
///     fn name(&self) -> String { "squared-error".into() }
///     fn per_sample_losses(&self, outputs: &Tensor, targets: &Tensor) -> Result<Tensor> {
///         Ok((outputs - targets)?.sqr()?.sum(D::Minus1)?)
///     }
/// }
///
/// let y_hat = Tensor::new(&[[1f32, 2.0], [0.0, 0.0]], &Device::Cpu)?;
/// let y = Tensor::new(&[[1f32, 0.0], [1.0, 1.0]], &Device::Cpu)?;
/// assert_eq!(SquaredError.per_sample_losses(&y_hat, &y)?.to_vec1::<f32>()?, vec![4.0, 2.0]);
/// # Ok::<(), quantlens::Error>(())
/// ```
pub trait LossProbe: Send + Sync {
    /// A stable name for reports.
    fn name(&self) -> String;

    /// One loss per sample (`[n]`), lower meaning a better fit.
    fn per_sample_losses(&self, outputs: &Tensor, targets: &Tensor) -> Result<Tensor>;
}
