//! What AWQ and SmoothQuant share: per-input-channel scales rounded to f16, the smoothed
//! weight `W·diag(s)`, and a base quantizer's result with the scales attached.

use candle_core::{DType, Device, Tensor};
use half::f16;

use crate::error::{Error, Result};
use crate::quant::calibration::Calibration;
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
/// result dequantizes to the original dtype. A data-aware base gets the calibration of the
/// smoothed inputs `X·diag(s)⁻¹` ([`Calibration::scaled`]).
pub(crate) fn quantize_smoothed(
    base: &dyn Quantizer,
    w: &HostWeight,
    smoothed: Vec<f32>,
    s: &[f16],
    calib: Option<&Calibration>,
) -> Result<QuantizedTensor> {
    let sf: Vec<f32> = s.iter().map(|v| v.to_f32()).collect();
    let scaled = base_calibration(base, calib, Some(&sf))?;
    let qt = base.quantize(&w.tensor(smoothed)?, scaled.as_ref())?;
    if qt.input_scales().is_some() {
        // Composing two smoothings would need their product stored; refuse rather than drop one.
        return Err(Error::Unsupported(format!(
            "smoothing over {}, which already smooths its inputs",
            base.name()
        )));
    }
    let mut parts = qt.into_parts();
    parts.dtype = w.dtype;
    parts.input_scales = Some(Scales::F16(s.to_vec()));
    QuantizedTensor::assemble(parts)
}

/// What to hand the base quantizer: nothing for a data-free base; for a data-aware one the
/// layer's calibration, rescaled by `s` when the inputs are smoothed.
pub(crate) fn base_calibration(
    base: &dyn Quantizer,
    calib: Option<&Calibration>,
    s: Option<&[f32]>,
) -> Result<Option<Calibration>> {
    if !base.uses_calibration() {
        return Ok(None);
    }
    let Some(c) = calib else {
        return Err(Error::InvalidParameter {
            name: "calibration",
            reason: format!("the data-aware base {} needs calibration", base.name()),
        });
    };
    Ok(Some(match s {
        Some(s) => c.scaled(s)?,
        None => c.clone(),
    }))
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
