//! How strong a perturbation is: the L2 norm τ of the change `Δ`, given directly, relative to
//! the tensor, or anchored to the error a quantizer makes on the same tensor.

use std::fmt;
use std::sync::Arc;

use candle_core::Tensor;

use crate::error::Result;
use crate::perturb::values;
use crate::quant::Quantizer;

/// The target norm τ = ‖Δ‖₂ of an additive perturbation.
///
/// * [`Absolute`](Self::Absolute): τ itself.
/// * [`Relative`](Self::Relative): a fraction of the tensor's norm, τ = f · ‖x‖₂.
/// * [`Anchored`](Self::Anchored): a multiple of a quantizer's error on the same tensor,
///   τ = k · ‖Q(x) − x‖₂, so that "noise as strong as 4-bit RTN" means one number. The
///   quantizer sees the tensor as a matrix `[rows, last_dim]` (leading dimensions folded into
///   rows, a vector as one row), the view per-token activation quantization uses.
///
/// Parameters must be finite and non-negative; that is checked when the intensity is used
/// (or by [`validate`](Self::validate)), since the builders that make one are infallible.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::perturb::Intensity;
/// use quantlens::{QuantSpec, Quantizer, UniformQuantizer};
///
/// let x = Tensor::new(&[[3f32, -4.0]], &Device::Cpu)?;
/// assert_eq!(Intensity::Absolute(0.5).norm_for(&x)?, 0.5);
/// assert_eq!(Intensity::Relative(0.1).norm_for(&x)?, 0.5); // 0.1 · ‖(3, −4)‖
///
/// let int2 = UniformQuantizer::new(QuantSpec::int2())?;
/// let err = (int2.fake_quantize(&x, None)? - &x)?.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
/// let tau = Intensity::anchored(int2, 2.0).norm_for(&x)?;
/// assert!((tau - 2.0 * err as f64).abs() < 1e-6);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Clone)]
pub enum Intensity {
    /// τ given directly.
    Absolute(f64),
    /// τ = fraction · ‖x‖₂.
    Relative(f64),
    /// τ = multiple · ‖Q(x) − x‖₂ for the quantizer Q.
    Anchored {
        /// The reference quantizer Q.
        quantizer: Arc<dyn Quantizer>,
        /// The multiple k of its error norm.
        multiple: f64,
    },
}

impl fmt::Debug for Intensity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Intensity::Absolute(t) => write!(f, "Absolute({t})"),
            Intensity::Relative(r) => write!(f, "Relative({r})"),
            Intensity::Anchored {
                quantizer,
                multiple,
            } => write!(f, "Anchored({multiple} × {})", quantizer.name()),
        }
    }
}

impl Intensity {
    /// `multiple` times the error norm of `quantizer` on the tensor being perturbed.
    pub fn anchored(quantizer: impl Quantizer + 'static, multiple: f64) -> Self {
        Intensity::Anchored {
            quantizer: Arc::new(quantizer),
            multiple,
        }
    }

    /// Check the parameter: finite and non-negative.
    pub fn validate(&self) -> Result<()> {
        match self {
            Intensity::Absolute(t) => values::non_negative("intensity τ", *t)?,
            Intensity::Relative(r) => values::non_negative("relative intensity", *r)?,
            Intensity::Anchored { multiple, .. } => {
                values::non_negative("anchor multiple", *multiple)?
            }
        };
        Ok(())
    }

    /// The norm τ this intensity asks for on `x`.
    ///
    /// Errors on invalid parameters, on a tensor that is empty, not f32/f16/bf16 or not finite,
    /// and — for anchored intensities — on whatever the quantizer refuses (a group size that
    /// does not divide the last dimension, say).
    pub fn norm_for(&self, x: &Tensor) -> Result<f64> {
        self.validate()?;
        let v = values::read(x, "perturbed tensor")?;
        self.resolve(x, &v)
    }

    /// τ for `x` whose elements (row-major, as f64) are `v`; parameters already validated.
    pub(crate) fn resolve(&self, x: &Tensor, v: &[f64]) -> Result<f64> {
        match self {
            Intensity::Absolute(t) => Ok(*t),
            Intensity::Relative(r) => Ok(r * values::l2(v.iter().copied())),
            Intensity::Anchored {
                quantizer,
                multiple,
            } => Ok(multiple * quantization_error_norm(quantizer.as_ref(), x, v)?),
        }
    }

    /// A short tag for perturbation names: `abs0.5`, `rel0.05`, `anchor1x[rtn-w4-c-sym]`.
    pub fn tag(&self) -> String {
        match self {
            Intensity::Absolute(t) => format!("abs{t}"),
            Intensity::Relative(r) => format!("rel{r}"),
            Intensity::Anchored {
                quantizer,
                multiple,
            } => format!("anchor{multiple}x[{}]", quantizer.name()),
        }
    }
}

/// `‖Q(x) − x‖₂` in f64, with `x` viewed as `[rows, last_dim]`; `v` holds x's elements.
pub(crate) fn quantization_error_norm(q: &dyn Quantizer, x: &Tensor, v: &[f64]) -> Result<f64> {
    let m = values::as_matrix(x)?;
    let qx = q.fake_quantize(&m, None)?;
    values::check_same_dims(&qx, &m, &q.name())?;
    let qv = values::read(&qx, "quantizer output")?;
    Ok(values::l2_diff(&qv, v))
}
