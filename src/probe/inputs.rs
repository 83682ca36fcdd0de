//! Input checks shared by the probes: float outputs, integer targets in range, masks.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// Refuse dtypes other than f32, f16 and bf16.
pub(crate) fn check_float(t: &Tensor, what: &'static str) -> Result<()> {
    match t.dtype() {
        DType::F32 | DType::F16 | DType::BF16 => Ok(()),
        dtype => Err(Error::UnsupportedDType { what, dtype }),
    }
}

/// Refuse a tensor of another rank.
pub(crate) fn check_rank(t: &Tensor, expected: usize, what: &'static str) -> Result<()> {
    if t.rank() == expected {
        Ok(())
    } else {
        Err(Error::RankMismatch {
            what,
            expected,
            shape: t.dims().to_vec(),
        })
    }
}

/// Refuse a tensor with a zero-length dimension.
pub(crate) fn check_non_empty(t: &Tensor, what: &'static str) -> Result<()> {
    if t.elem_count() == 0 {
        Err(Error::EmptyTensor {
            what,
            shape: t.dims().to_vec(),
        })
    } else {
        Ok(())
    }
}

/// The entries of an integer tensor, row-major, as i64 (copied to the host: one per sample or
/// token, small next to the logits).
pub(crate) fn integer_entries(t: &Tensor, what: &'static str) -> Result<Vec<i64>> {
    let flat = t.flatten_all()?;
    Ok(match t.dtype() {
        DType::U8 => flat.to_vec1::<u8>()?.into_iter().map(i64::from).collect(),
        DType::U32 => flat.to_vec1::<u32>()?.into_iter().map(i64::from).collect(),
        DType::I16 => flat.to_vec1::<i16>()?.into_iter().map(i64::from).collect(),
        DType::I32 => flat.to_vec1::<i32>()?.into_iter().map(i64::from).collect(),
        DType::I64 => flat.to_vec1::<i64>()?,
        dtype => return Err(Error::NonIntegerTargets { what, dtype }),
    })
}

/// Which entries of a mask are counted (non-zero), row-major.
pub(crate) fn mask_entries(mask: &Tensor) -> Result<Vec<bool>> {
    Ok(mask
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?
        .into_iter()
        .map(|m| m != 0.0)
        .collect())
}

/// Class indices checked against `0..classes`: `None` where the entry equals `ignore` or the
/// mask is false, an error naming the first entry out of range otherwise.
pub(crate) fn class_targets(
    entries: &[i64],
    classes: usize,
    ignore: Option<i64>,
    mask: Option<&[bool]>,
    what: &'static str,
) -> Result<Vec<Option<u32>>> {
    entries
        .iter()
        .enumerate()
        .map(|(index, &value)| {
            let counted = Some(value) != ignore && mask.is_none_or(|m| m[index]);
            if !counted {
                return Ok(None);
            }
            match u32::try_from(value) {
                Ok(v) if (v as usize) < classes => Ok(Some(v)),
                _ => Err(Error::TargetOutOfRange {
                    what,
                    index,
                    value,
                    classes,
                }),
            }
        })
        .collect()
}
