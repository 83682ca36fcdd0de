//! Reading a tensor's elements for a perturbation and writing the result back in the tensor's
//! own dtype: the checks every injector shares (float dtype, non-empty, finite).

use candle_core::{DType, Tensor};
use half::{bf16, f16};

use crate::error::{Error, Result};

/// The elements of a float tensor in row-major order, as f64 (exact for f32/f16/bf16).
///
/// Errors on an integer (or f64) dtype, an empty tensor, or a NaN/±Inf element: noise scaled
/// to a norm, quantiles and quantizer anchors are all meaningless on such data.
pub(crate) fn read(t: &Tensor, what: &'static str) -> Result<Vec<f64>> {
    check_dtype(t, what)?;
    if t.elem_count() == 0 {
        return Err(Error::EmptyTensor {
            what,
            shape: t.dims().to_vec(),
        });
    }
    let v: Vec<f64> = t
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(f64::from)
        .collect();
    check_finite(&v, what)?;
    Ok(v)
}

/// Accept the dtypes quantizers accept.
pub(crate) fn check_dtype(t: &Tensor, what: &'static str) -> Result<()> {
    if matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16) {
        Ok(())
    } else {
        Err(Error::UnsupportedDType {
            what,
            dtype: t.dtype(),
        })
    }
}

/// [`Error::NonFinite`] naming the first NaN or ±Inf.
pub(crate) fn check_finite(v: &[f64], what: &'static str) -> Result<()> {
    check_all_finite(v.iter().copied(), what)
}

/// [`check_finite`] over any stream of values (one pass, no copy).
fn check_all_finite(v: impl IntoIterator<Item = f64>, what: &'static str) -> Result<()> {
    let (mut count, mut first_index) = (0, 0);
    for (i, x) in v.into_iter().enumerate() {
        if !x.is_finite() {
            if count == 0 {
                first_index = i;
            }
            count += 1;
        }
    }
    if count == 0 {
        Ok(())
    } else {
        Err(Error::NonFinite {
            what,
            count,
            first_index,
        })
    }
}

/// A tensor shaped like `like` (same dims, dtype, device) holding `values`, each rounded once
/// (to nearest) from f64 to the dtype.
///
/// A value that overflows the dtype (noise pushing an f16 element past 65504) is an error,
/// not a silent infinity.
pub(crate) fn write(values: &[f64], like: &Tensor, what: &'static str) -> Result<Tensor> {
    let (dims, dev) = (like.dims(), like.device());
    let out = match like.dtype() {
        DType::F16 => {
            let v: Vec<f16> = values.iter().map(|&x| f16::from_f64(x)).collect();
            check_all_finite(v.iter().map(|x| x.to_f64()), what)?;
            Tensor::from_vec(v, dims, dev)?
        }
        DType::BF16 => {
            let v: Vec<bf16> = values.iter().map(|&x| bf16::from_f64(x)).collect();
            check_all_finite(v.iter().map(|x| x.to_f64()), what)?;
            Tensor::from_vec(v, dims, dev)?
        }
        _ => {
            let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
            check_all_finite(v.iter().map(|&x| f64::from(x)), what)?;
            Tensor::from_vec(v, dims, dev)?
        }
    };
    Ok(out)
}

/// `t` viewed as the matrix a quantizer expects: `[rows, last_dim]` with every leading
/// dimension folded into rows (a vector is one row, a scalar a 1×1 matrix).
pub(crate) fn as_matrix(t: &Tensor) -> Result<Tensor> {
    let cols = t.dims().last().copied().unwrap_or(1);
    let rows = t.elem_count() / cols.max(1);
    Ok(t.reshape((rows, cols))?)
}

/// Euclidean norm, accumulated in f64.
pub(crate) fn l2(v: impl IntoIterator<Item = f64>) -> f64 {
    v.into_iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// `‖a − b‖₂` in f64.
pub(crate) fn l2_diff(a: &[f64], b: &[f64]) -> f64 {
    l2(a.iter().zip(b).map(|(x, y)| x - y))
}

/// Check that a quantizer's output has the shape of its input (a broken quantizer must not
/// turn into a silently misaligned comparison).
pub(crate) fn check_same_dims(got: &Tensor, want: &Tensor, who: &str) -> Result<()> {
    if got.dims() == want.dims() {
        Ok(())
    } else {
        Err(Error::ShapeMismatch(format!(
            "{who} returned shape {:?} for an input of shape {:?}",
            got.dims(),
            want.dims()
        )))
    }
}

/// `[0, 1)` from 53 random bits.
#[inline]
pub(crate) fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// `(0, 1)` from 53 random bits: the 53-bit grid shifted by half a step (never 0, never 1).
#[inline]
pub(crate) fn unit_open(bits: u64) -> f64 {
    ((bits >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// A finite, non-negative parameter, or [`Error::InvalidParameter`] naming it.
pub(crate) fn non_negative(name: &'static str, v: f64) -> Result<f64> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(Error::InvalidParameter {
            name,
            reason: format!("must be finite and ≥ 0, got {v}"),
        })
    }
}

/// A probability in `[0, 1]`, or [`Error::InvalidParameter`] naming it.
pub(crate) fn probability(name: &'static str, p: f64) -> Result<f64> {
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(Error::InvalidParameter {
            name,
            reason: format!("must lie in [0, 1], got {p}"),
        })
    }
}
