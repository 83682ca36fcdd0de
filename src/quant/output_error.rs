//! The error a quantized weight causes in a layer's *output* on calibration inputs, computed
//! from the Gram matrix without the inputs themselves.
//!
//! For a linear layer `y = x Wᵀ` with calibration inputs `X` (`n` rows) and a quantized
//! weight `Ŵ`, the output error is
//!
//! ```text
//! E(Ŵ) = ‖X (W − Ŵ)ᵀ‖²_F / n = Σ_i δ_iᵀ G δ_i = tr(Δ G Δᵀ),   Δ = W − Ŵ,  G = XᵀX / n,
//! ```
//!
//! with `δ_i` the i-th row of `Δ` (one output channel). `G` is half the Hessian proxy the
//! [`Calibration`] streams (`H = 2·XᵀX/n`), so every data-aware method (AWQ's α search and
//! clipping search, SmoothQuant reports, GPTQ comparisons) can score candidates on all the
//! calibration rows at the cost of one `[out, in] × [in, in]` product, never holding `X`.
//! Both functions work in f64 throughout; the only rounding beyond f64 is that of the
//! Gram itself (f32 per batch, accumulated in f64 by [`Calibration`]).
//!
//! [`relative_layer_output_error`] divides by the output's own size,
//! `‖X(W − Ŵ)ᵀ‖_F / ‖X Wᵀ‖_F = √(E(Ŵ) / tr(W G Wᵀ))`, which makes layers comparable.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::quant::calibration::Calibration;

/// `‖X(W − Ŵ)ᵀ‖²_F / n`: the mean (over the `n` calibration rows) squared error that
/// replacing `w` by `w_hat` causes in the layer's output, from the Gram matrix in `calib`
/// (see the [module docs](self)).
///
/// Both weights are `[out_features, in_features]` with `in_features` equal to the
/// calibration's; f32, f16 or bf16; finite. The calibration must have seen at least one row.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::Calibration;
/// use quantlens::quant::output_error::layer_output_error;
///
/// // Inputs (1, 0) and (1, 2): an error of 0.5 in w[0][0] moves the outputs of output 0 by
/// // 0.5 in both rows, an error in w[0][1] only in the second row (by 2 · error).
/// let x = Tensor::new(&[[1f32, 0.0], [1.0, 2.0]], &Device::Cpu)?;
/// let mut calib = Calibration::new(2);
/// calib.observe(&x)?;
/// let w = Tensor::new(&[[1f32, 1.0]], &Device::Cpu)?;
/// let e = layer_output_error(&w, &Tensor::new(&[[0.5f32, 1.0]], &Device::Cpu)?, &calib)?;
/// assert_eq!(e, (0.25 + 0.25) / 2.0);
/// let e = layer_output_error(&w, &Tensor::new(&[[1f32, 0.5]], &Device::Cpu)?, &calib)?;
/// assert_eq!(e, 1.0 / 2.0);
/// # Ok::<(), quantlens::Error>(())
/// ```
pub fn layer_output_error(w: &Tensor, w_hat: &Tensor, calib: &Calibration) -> Result<f64> {
    let (rows, cols) = check_pair(w, w_hat, calib)?;
    let gram = Gram::new(calib)?;
    let w = read_f64(w, "weight")?;
    let w_hat = read_f64(w_hat, "quantized weight")?;
    let delta: Vec<f64> = w.iter().zip(&w_hat).map(|(a, b)| a - b).collect();
    gram.output_error(&delta, rows, cols)
}

/// `‖X(W − Ŵ)ᵀ‖_F / ‖X Wᵀ‖_F`: [`layer_output_error`] relative to the output itself.
///
/// 0 when both are zero; `f64::INFINITY` when the layer's output is zero on the calibration
/// inputs but the quantized layer's is not.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::Calibration;
/// use quantlens::quant::output_error::relative_layer_output_error;
///
/// let mut calib = Calibration::new(2);
/// calib.observe(&Tensor::new(&[[1f32, 0.0], [1.0, 2.0]], &Device::Cpu)?)?;
/// let w = Tensor::new(&[[1f32, 1.0]], &Device::Cpu)?;
/// // Outputs (1, 3) become (1.1, 3.3): 10% off.
/// let w_hat = Tensor::new(&[[1.1f32, 1.1]], &Device::Cpu)?;
/// let r = relative_layer_output_error(&w, &w_hat, &calib)?;
/// assert!((r - 0.1).abs() < 1e-6);
/// # Ok::<(), quantlens::Error>(())
/// ```
pub fn relative_layer_output_error(w: &Tensor, w_hat: &Tensor, calib: &Calibration) -> Result<f64> {
    let (rows, cols) = check_pair(w, w_hat, calib)?;
    let gram = Gram::new(calib)?;
    let w = read_f64(w, "weight")?;
    let w_hat = read_f64(w_hat, "quantized weight")?;
    let delta: Vec<f64> = w.iter().zip(&w_hat).map(|(a, b)| a - b).collect();
    let num = gram.output_error(&delta, rows, cols)?;
    let den = gram.output_error(&w, rows, cols)?;
    Ok(match (num > 0.0, den > 0.0) {
        (false, _) => 0.0,
        (true, false) => f64::INFINITY,
        (true, true) => (num / den).sqrt(),
    })
}

/// Check two weights against each other and the calibration; `(out, in)`.
fn check_pair(w: &Tensor, w_hat: &Tensor, calib: &Calibration) -> Result<(usize, usize)> {
    let (rows, cols) = crate::quant::uniform::check_weight_matrix(w)?;
    crate::quant::uniform::check_weight_matrix(w_hat)?;
    if w.dims() != w_hat.dims() {
        return Err(Error::ShapeMismatch(format!(
            "weight {:?} and quantized weight {:?} differ",
            w.dims(),
            w_hat.dims()
        )));
    }
    check_calibration(calib, cols, "layer output error")?;
    Ok((rows, cols))
}

/// The calibration must match `cols` input features and hold at least one row.
pub(crate) fn check_calibration(calib: &Calibration, cols: usize, what: &str) -> Result<()> {
    if calib.in_features() != cols {
        return Err(Error::ShapeMismatch(format!(
            "{what}: calibration of {} input features for a weight with in_features = {cols}",
            calib.in_features()
        )));
    }
    if calib.samples() == 0 {
        return Err(Error::TooFewSamples {
            what: "calibration rows",
            needed: 1,
            got: 0,
        });
    }
    Ok(())
}

/// A float tensor's values in f64, row-major, checked finite.
pub(crate) fn read_f64(t: &Tensor, what: &'static str) -> Result<Vec<f64>> {
    let v = t
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    if let Some(first_index) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::NonFinite {
            what,
            count: v.iter().filter(|x| !x.is_finite()).count(),
            first_index,
        });
    }
    Ok(v)
}

/// `G = XᵀX / n` in f64, as a host buffer and as a Candle tensor (for the one big product).
pub(crate) struct Gram {
    n: usize,
    values: Vec<f64>,
    tensor: Tensor,
}

impl Gram {
    /// From a calibration that has seen at least one row (checked by callers).
    pub(crate) fn new(calib: &Calibration) -> Result<Self> {
        let n = calib.in_features();
        let values: Vec<f64> = calib.hessian_f64().into_iter().map(|h| 0.5 * h).collect();
        let tensor = Tensor::from_slice(&values, (n, n), &Device::Cpu)?;
        Ok(Gram { n, values, tensor })
    }

    /// `tr(Δ G Δᵀ)` for `Δ` row-major `[rows, cols]` (`cols` = the Gram's size), clamped at 0
    /// (a Gram that is positive semi-definite only up to rounding may give −1e-20).
    pub(crate) fn output_error(&self, delta: &[f64], rows: usize, cols: usize) -> Result<f64> {
        debug_assert_eq!(cols, self.n);
        let d = Tensor::from_slice(delta, (rows, cols), &Device::Cpu)?;
        let dg = d.matmul(&self.tensor)?.flatten_all()?.to_vec1::<f64>()?;
        let sum: f64 = dg.iter().zip(delta).map(|(a, b)| a * b).sum();
        Ok(sum.max(0.0))
    }

    /// `δ_{i,c}ᵀ G_cc δ_{i,c}` for every row `i` and every run `c` of `block` columns (the
    /// block-diagonal part of the output error, per row and group), row-major
    /// `[rows, cols / block]`.
    pub(crate) fn block_errors(&self, delta: &[f64], block: usize) -> Vec<f64> {
        use rayon::prelude::*;
        let n = self.n;
        let blocks = n / block;
        let mut out = vec![0.0; delta.len() / n * blocks];
        out.par_chunks_mut(blocks)
            .zip(delta.par_chunks(n))
            .for_each(|(errs, row)| {
                for (c, e) in errs.iter_mut().enumerate() {
                    let a = c * block;
                    let d = &row[a..a + block];
                    let mut total = 0.0;
                    for (j, &dj) in d.iter().enumerate() {
                        let g = &self.values[(a + j) * n + a..(a + j) * n + a + block];
                        let gd: f64 = g.iter().zip(d).map(|(x, y)| x * y).sum();
                        total += dj * gd;
                    }
                    *e = total;
                }
            });
        out
    }
}
