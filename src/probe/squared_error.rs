//! Squared error of a regressor: predictions and targets `[n]` or `[n, d]` → `[n]`.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::probe::LossProbe;
use crate::probe::inputs::{check_float, check_non_empty};

/// Per-sample squared error `ℓᵢ = Σⱼ (ŷᵢⱼ − yᵢⱼ)²`, summed over the `d` outputs by default
/// ([`SquaredError::mean_over_outputs`] divides by `d`).
///
/// * **outputs**: predictions `[n]` (one output each) or `[n, d]`, f32/f16/bf16.
/// * **targets**: the same shape, f32/f16/bf16 (the dtypes may differ).
/// * **result**: `[n]` f32 on the predictions' device.
///
/// Differences, squares and sums are taken in f64 with Candle ops on the tensors' device, so
/// the result is the exact loss rounded once to f32 (`+∞` beyond `f32::MAX`).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::{LossProbe, SquaredError};
///
/// let y_hat = Tensor::new(&[[1f32, 2.0], [0.0, 0.0]], &Device::Cpu)?;
/// let y = Tensor::new(&[[1f32, 0.0], [1.0, 1.0]], &Device::Cpu)?;
/// let se = SquaredError::new();
/// assert_eq!(se.per_sample_losses(&y_hat, &y)?.to_vec1::<f32>()?, vec![4.0, 2.0]);
/// let mse = SquaredError::new().mean_over_outputs();
/// assert_eq!(mse.per_sample_losses(&y_hat, &y)?.to_vec1::<f32>()?, vec![2.0, 1.0]);
/// assert_eq!((se.name().as_str(), mse.name().as_str()), ("squared-error", "mean-squared-error"));
/// # Ok::<(), quantlens::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::RankMismatch`] unless predictions are rank 1 or 2; [`Error::ShapeMismatch`] when
/// targets differ in shape; [`Error::EmptyTensor`]; [`Error::UnsupportedDType`];
/// [`Error::NonFinite`] naming the first NaN or ±∞ in predictions or targets.
#[derive(Debug, Clone, Default)]
pub struct SquaredError {
    mean: bool,
}

impl SquaredError {
    /// Squared error summed over the outputs of each sample.
    pub fn new() -> Self {
        SquaredError::default()
    }

    /// Divide each sample's sum by the number of outputs `d` (per-sample MSE).
    pub fn mean_over_outputs(mut self) -> Self {
        self.mean = true;
        self
    }

    /// Sum over the outputs of each sample (the default).
    pub fn sum_over_outputs(mut self) -> Self {
        self.mean = false;
        self
    }
}

impl LossProbe for SquaredError {
    fn name(&self) -> String {
        if self.mean {
            "mean-squared-error".into()
        } else {
            "squared-error".into()
        }
    }

    fn per_sample_losses(&self, outputs: &Tensor, targets: &Tensor) -> Result<Tensor> {
        if !(1..=2).contains(&outputs.rank()) {
            return Err(Error::RankMismatch {
                what: "predictions",
                expected: outputs.rank().clamp(1, 2),
                shape: outputs.dims().to_vec(),
            });
        }
        if outputs.dims() != targets.dims() {
            return Err(Error::ShapeMismatch(format!(
                "predictions {:?} and targets {:?} must have the same shape",
                outputs.dims(),
                targets.dims()
            )));
        }
        check_non_empty(outputs, "predictions")?;
        check_float(outputs, "predictions")?;
        check_float(targets, "targets")?;
        let sq = (outputs.to_dtype(DType::F64)? - targets.to_dtype(DType::F64)?)?.sqr()?;
        let per = match (outputs.rank(), self.mean) {
            (1, _) => sq,
            (_, false) => sq.sum(1)?,
            (_, true) => sq.mean(1)?,
        };
        let losses = per.to_dtype(DType::F32)?;
        // A non-finite loss means a non-finite input or an overflow of f32; only the first
        // is an error. Checking the n losses costs far less than scanning the inputs.
        if losses.to_vec1::<f32>()?.iter().any(|v| !v.is_finite()) {
            for (t, what) in [(outputs, "predictions"), (targets, "targets")] {
                let v = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
                if let Some(first_index) = v.iter().position(|x| !x.is_finite()) {
                    return Err(Error::NonFinite {
                        what,
                        count: v.iter().filter(|x| !x.is_finite()).count(),
                        first_index,
                    });
                }
            }
        }
        Ok(losses)
    }
}
