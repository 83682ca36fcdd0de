//! How well a quantizer reconstructs a tensor: error and true storage cost, side by side.

use std::fmt;

use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::quant::quantizer::Quantizer;

/// Reconstruction error and storage of one quantizer on one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Reconstruction {
    /// The quantizer's name.
    pub quantizer: String,
    /// Storage bits per weight: codes, scales, zero points and stored codebooks.
    pub bits_per_weight: f64,
    /// Relative Frobenius error `‖Ŵ − W‖_F / ‖W‖_F` (computed in f64).
    pub relative_error: f64,
    /// Largest `|ŵ − w|`.
    pub max_abs_error: f64,
}

impl Reconstruction {
    /// Quantize `weight` with `q`, dequantize, and compare.
    ///
    /// ```
    /// use candle_core::{Device, Tensor};
    /// use quantlens::quant::Reconstruction;
    /// use quantlens::{Nf4Quantizer, QuantSpec, UniformQuantizer};
    ///
    /// let w = Tensor::randn(0f32, 1.0, (16, 256), &Device::Cpu)?;
    /// let rtn = Reconstruction::measure(&UniformQuantizer::new(QuantSpec::int4().per_group(64))?, &w)?;
    /// let nf4 = Reconstruction::measure(&Nf4Quantizer::new(), &w)?;
    /// assert!(nf4.relative_error < rtn.relative_error); // NF4 suits Gaussian weights
    /// println!("{rtn}\n{nf4}");
    /// # Ok::<(), quantlens::Error>(())
    /// ```
    pub fn measure(q: &dyn Quantizer, weight: &Tensor) -> Result<Self> {
        let qt = q.quantize(weight, None)?;
        let w_hat = qt.dequantize(&Device::Cpu)?;
        let w = weight.to_device(&Device::Cpu)?;
        let diff = (w.to_dtype(DType::F64)? - w_hat.to_dtype(DType::F64)?)?;
        Ok(Reconstruction {
            quantizer: q.name(),
            bits_per_weight: qt.bits_per_weight(),
            relative_error: relative_error(&w, &w_hat)?,
            max_abs_error: diff.abs()?.max_all()?.to_scalar::<f64>()?,
        })
    }
}

impl fmt::Display for Reconstruction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {:.3} bits/weight, relative error {:.4}, max |error| {:.3e}",
            self.quantizer, self.bits_per_weight, self.relative_error, self.max_abs_error
        )
    }
}

/// `‖Ŵ − W‖_F / ‖W‖_F` in f64 (0 for an all-zero `W`).
pub(crate) fn relative_error(w: &Tensor, w_hat: &Tensor) -> Result<f64> {
    let w = w.to_dtype(DType::F64)?;
    let diff = (&w - w_hat.to_dtype(DType::F64)?)?;
    let num = diff.sqr()?.sum_all()?.to_scalar::<f64>()?;
    let den = w.sqr()?.sum_all()?.to_scalar::<f64>()?;
    Ok(if den > 0.0 { (num / den).sqrt() } else { 0.0 })
}
