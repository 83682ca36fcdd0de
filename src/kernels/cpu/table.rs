//! The group loop of table-driven quantizers (codebooks, companding, ternary): each group of
//! consecutive elements is encoded independently, in parallel, by a quantizer-supplied
//! closure that returns the group's scale.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::kernels::host::with_host_slice;
use crate::quant::ScaleDType;
use crate::quant::grid::store_scale_up;

/// Codes (one byte each, not yet packed) and one scale per group.
pub(crate) struct GroupCodes {
    pub codes: Vec<u8>,
    pub scales: Vec<f32>,
}

/// Groups per parallel task, sized so a task holds about this many elements.
const TASK_ELEMS: usize = 16 * 1024;

/// Run `encode(group_index, values, codes_out) -> scale` over every `group_len` run of the
/// weight's elements (f32 view, row-major). Rejects non-finite weights first, naming the
/// first one, so encoders only ever see finite values. Results do not depend on the number
/// of threads: each group is encoded by one call, whatever the split, and an error names the
/// first failing group.
pub(crate) fn encode_groups<F>(
    weight: &candle_core::Tensor,
    group_len: usize,
    encode: F,
) -> Result<GroupCodes>
where
    F: Fn(usize, &[f32], &mut [u8]) -> Result<f32> + Sync,
{
    with_host_slice(weight, "weight", |src| {
        let mut scratch = Vec::new();
        let x = src.f32_range(0..src.len(), &mut scratch);
        encode_groups_f32(x, group_len, encode)
    })
}

/// [`encode_groups`] on values already in host memory.
pub(crate) fn encode_groups_f32<F>(x: &[f32], group_len: usize, encode: F) -> Result<GroupCodes>
where
    F: Fn(usize, &[f32], &mut [u8]) -> Result<f32> + Sync,
{
    check_finite(x)?;
    let n = x.len();
    let groups = n / group_len;
    let mut codes = vec![0u8; n];
    let mut scales = vec![0f32; groups];
    let per_task = (TASK_ELEMS / group_len).max(1);
    codes
        .par_chunks_mut(per_task * group_len)
        .zip(scales.par_chunks_mut(per_task))
        .enumerate()
        .map(|(task, (codes, scales))| -> Result<()> {
            for (j, (c, s)) in codes
                .chunks_mut(group_len)
                .zip(scales.iter_mut())
                .enumerate()
            {
                let g = task * per_task + j;
                *s = encode(g, &x[g * group_len..(g + 1) * group_len], c)?;
            }
            Ok(())
        })
        // Collected in task order, so the error reported is the first failing group's,
        // whatever the thread timing.
        .collect::<Vec<_>>()
        .into_iter()
        .collect::<Result<()>>()?;
    Ok(GroupCodes { codes, scales })
}

/// `Error::NonFinite` naming the first NaN or infinity of a weight, if any.
///
/// The common case (all finite) is a parallel, vectorised pass (the RTN kernel's lane-wise
/// reduction); the slow, exact count runs only when something is wrong.
pub(crate) fn check_finite(x: &[f32]) -> Result<()> {
    let clean = x
        .par_chunks(TASK_ELEMS)
        .all(|c| crate::kernels::cpu::uniform::min_max(c).2);
    if clean {
        return Ok(());
    }
    let mut bad = x.iter().enumerate().filter(|(_, v)| !v.is_finite());
    match bad.next() {
        Some((first_index, _)) => Err(Error::NonFinite {
            what: "weight",
            count: 1 + bad.count(),
            first_index,
        }),
        None => Ok(()),
    }
}

/// The absmax scale of group `group` (values `x`) rounded up to `dtype`, or the error naming
/// the group when its dtype cannot hold it (the scale rule of NF4, companding and k-means).
pub(crate) fn absmax_scale(group: usize, x: &[f32], dtype: ScaleDType) -> Result<f32> {
    let absmax = absmax(x);
    store_scale_up(absmax, dtype).ok_or(Error::ScaleOutOfRange {
        group,
        scale: absmax,
        dtype,
    })
}

/// `max |x|` (0 for an empty or all-zero slice), eight lanes at a time so it vectorises.
/// Inputs are finite (checked by [`encode_groups`]).
#[inline]
pub(crate) fn absmax(x: &[f32]) -> f32 {
    let mut m = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in m.iter_mut().zip(c) {
            let v = v.abs();
            *a = if v > *a { v } else { *a };
        }
    }
    for (a, &v) in m.iter_mut().zip(rest) {
        *a = a.max(v.abs());
    }
    m.iter().fold(0f32, |a, &b| a.max(b))
}
