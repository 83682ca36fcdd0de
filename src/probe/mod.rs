//! Loss probes: one loss per sample, the raw material of membership inference.
//!
//! | probe | outputs | targets | loss per sample |
//! |---|---|---|---|
//! | [`CrossEntropy`] | logits `[n, C]` | class ids `[n]` | `logsumexp(x) − x_y` |
//! | [`SequenceNll`] | logits `[b, t, V]` | token ids `[b, t]` (ignore index, mask) | mean token NLL |
//! | [`SquaredError`] | predictions `[n]` / `[n, d]` | same shape | `Σⱼ (ŷ − y)²` (or mean) |
//!
//! Cross-entropy on the CPU runs in a fused kernel that never materialises the log-softmax and
//! keeps ~1e-6 relative accuracy even for losses of 1e-8 and below — the well-fitted training
//! examples that membership inference looks at. On other devices it falls back to Candle ops
//! (in f64) until a CUDA kernel lands.

mod cross_entropy;
pub(crate) mod inputs;
mod sequence_nll;
mod squared_error;

use candle_core::Tensor;

use crate::error::Result;

pub use cross_entropy::CrossEntropy;
pub use sequence_nll::{DEFAULT_IGNORE_INDEX, SequenceNll};
pub use squared_error::SquaredError;

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
/// /// Absolute error per sample, summed over output dimensions.
/// struct AbsoluteError;
/// impl LossProbe for AbsoluteError {
///     fn name(&self) -> String { "absolute-error".into() }
///     fn per_sample_losses(&self, outputs: &Tensor, targets: &Tensor) -> Result<Tensor> {
///         Ok((outputs - targets)?.abs()?.sum(D::Minus1)?)
///     }
/// }
///
/// let y_hat = Tensor::new(&[[1f32, 2.0], [0.0, 0.0]], &Device::Cpu)?;
/// let y = Tensor::new(&[[1f32, 0.0], [1.0, 1.0]], &Device::Cpu)?;
/// assert_eq!(AbsoluteError.per_sample_losses(&y_hat, &y)?.to_vec1::<f32>()?, vec![2.0, 2.0]);
/// # Ok::<(), quantlens::Error>(())
/// ```
pub trait LossProbe: Send + Sync {
    /// A stable name for reports.
    fn name(&self) -> String;

    /// One loss per sample (`[n]`), lower meaning a better fit.
    fn per_sample_losses(&self, outputs: &Tensor, targets: &Tensor) -> Result<Tensor>;
}
