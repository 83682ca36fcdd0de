//! What AWQ and SmoothQuant share: per-input-channel scales rounded to f16, the smoothed
//! weight `W·diag(s)`, and a base quantizer's result with the scales attached.

use candle_core::{DType, Device, Tensor};
use half::f16;

use crate::error::{Error, Result};
use crate::quant::quantizer::Quantizer;
use crate::quant::scales::Scales;
use crate::quant::tensor::QuantizedTensor;

/// Round positive f64 scales to f16 values, clamped to f16's normal range
/// `[2^−14, 65504]`: every input scale is then exactly what a file stores. Any positive scale
/// keeps the layer's function, so clamping only restricts the search, never breaks it.
pub(crate) fn round_scales(s: &[f64]) -> Vec<f16> {
    s.iter()
        .map(|&v| {
            let h = f16::from_f64(v);
            if h.is_nan() || h < f16::MIN_POSITIVE {
                f16::MIN_POSITIVE
            } else if h > f16::MAX {
                f16::MAX
            } else {
                h
            }
        })
        .collect()
}

/// `W·diag(s)` in f32 (one multiply per element), row-major `[rows, cols]`.
pub(crate) fn scale_columns(w: &[f32], s: &[f32]) -> Vec<f32> {
    w.chunks(s.len())
        .flat_map(|row| row.iter().zip(s).map(|(a, b)| a * b))
        .collect()
}

/// A weight read once: `[rows, cols]` f32 values (checked finite) and the original dtype.
pub(crate) struct HostWeight {
    pub rows: usize,
    pub cols: usize,
    pub dtype: DType,
    pub values: Vec<f32>,
}

impl HostWeight {
    pub(crate) fn read(weight: &Tensor) -> Result<Self> {
        let (rows, cols) = crate::quant::uniform::check_weight_matrix(weight)?;
        let values = weight
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        if let Some(first_index) = values.iter().position(|x| !x.is_finite()) {
            return Err(Error::NonFinite {
                what: "weight",
                count: values.iter().filter(|x| !x.is_finite()).count(),
                first_index,
            });
        }
        Ok(HostWeight {
            rows,
            cols,
            dtype: weight.dtype(),
            values,
        })
    }

    pub(crate) fn tensor(&self, values: Vec<f32>) -> Result<Tensor> {
        Ok(Tensor::from_vec(
            values,
            (self.rows, self.cols),
            &Device::Cpu,
        )?)
    }
}

/// Quantize `smoothed` (= `W·diag(s)`, possibly clipped) with `base` and attach `s`; the
/// result dequantizes to the original dtype.
pub(crate) fn quantize_smoothed(
    base: &dyn Quantizer,
    w: &HostWeight,
    smoothed: Vec<f32>,
    s: &[f16],
) -> Result<QuantizedTensor> {
    let qt = base.quantize(&w.tensor(smoothed)?, None)?;
    let mut parts = qt.into_parts();
    parts.dtype = w.dtype;
    parts.input_scales = Some(Scales::F16(s.to_vec()));
    QuantizedTensor::assemble(parts)
}

/// Data-aware bases would need the calibration of the smoothed inputs `X·diag(s)⁻¹`.
pub(crate) fn check_base(base: &dyn Quantizer, method: &str) -> Result<()> {
    if base.uses_calibration() {
        return Err(Error::Unsupported(format!(
            "{method} over the data-aware quantizer {} (it would need the statistics of the \
             smoothed inputs X·diag(s)⁻¹); use a data-free base quantizer",
            base.name()
        )));
    }
    Ok(())
}

/// An α in [0, 1].
pub(crate) fn check_alpha(alpha: f64, name: &'static str) -> Result<f64> {
    if !(0.0..=1.0).contains(&alpha) {
        return Err(Error::InvalidParameter {
            name,
            reason: format!("{alpha} is not in [0, 1]"),
        });
    }
    Ok(alpha)
}
