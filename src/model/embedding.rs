//! How far a model's embeddings moved: per-row cosine similarity between a reference model's
//! embeddings and another's (a quantized copy, a perturbed one) of the same inputs.

use std::fmt;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::model::QuantizableModel;
use crate::model::hooks::{ForwardHook, NoHooks};

/// Per-row cosine similarities between two embedding matrices of the same inputs, computed in
/// f64, with their mean and minimum.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::model::EmbeddingSimilarity;
///
/// let a = Tensor::new(&[[1f32, 0.0], [0.0, 2.0]], &Device::Cpu)?;
/// let b = Tensor::new(&[[1f32, 0.0], [2.0, 2.0]], &Device::Cpu)?;
/// let s = EmbeddingSimilarity::between(&a, &b)?;
/// assert_eq!(s.cosines[0], 1.0);
/// assert!((s.cosines[1] - 0.5f64.sqrt()).abs() < 1e-15);
/// assert_eq!((s.min, s.worst_row()), (s.cosines[1], 1));
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EmbeddingSimilarity {
    /// `cos(aᵢ, bᵢ) = aᵢ·bᵢ / √(‖aᵢ‖²‖bᵢ‖²)` for every row `i`, clamped to `[−1, 1]`; exactly 1
    /// for identical rows.
    pub cosines: Vec<f64>,
    /// Mean of `cosines`.
    pub mean: f64,
    /// Smallest of `cosines`.
    pub min: f64,
    /// Largest `|aᵢⱼ − bᵢⱼ|` over all entries.
    pub max_abs_difference: f64,
}

impl EmbeddingSimilarity {
    /// Compare `a` and `b`, both `[n, d]` float matrices of the same shape with finite values
    /// and no all-zero row (whose direction, and so its cosine, is undefined).
    pub fn between(a: &Tensor, b: &Tensor) -> Result<Self> {
        let (ra, rb) = (rows(a, "first embeddings")?, rows(b, "second embeddings")?);
        if a.dims() != b.dims() {
            return Err(Error::ShapeMismatch(format!(
                "embeddings to compare have shapes {:?} and {:?}",
                a.dims(),
                b.dims()
            )));
        }
        let mut cosines = Vec::with_capacity(ra.len());
        let mut max_abs_difference = 0f64;
        for (i, (x, y)) in ra.iter().zip(&rb).enumerate() {
            let (mut dot, mut xx, mut yy) = (0f64, 0f64, 0f64);
            for (&p, &q) in x.iter().zip(y) {
                dot += p * q;
                xx += p * p;
                yy += q * q;
                max_abs_difference = max_abs_difference.max((p - q).abs());
            }
            if xx == 0.0 || yy == 0.0 {
                return Err(Error::InvalidParameter {
                    name: "embeddings",
                    reason: format!("row {i} is all zeros; its cosine similarity is undefined"),
                });
            }
            // √(‖a‖²‖b‖²) rather than ‖a‖·‖b‖: √(s²) = s exactly in IEEE arithmetic, so a row
            // compared with itself gives exactly 1.
            cosines.push((dot / (xx * yy).sqrt()).clamp(-1.0, 1.0));
        }
        let mean = cosines.iter().sum::<f64>() / cosines.len() as f64;
        let min = cosines.iter().copied().fold(f64::INFINITY, f64::min);
        Ok(EmbeddingSimilarity {
            cosines,
            mean,
            min,
            max_abs_difference,
        })
    }

    /// Run `reference` and `other` over the same input batches and compare their outputs, the
    /// rows of all batches together.
    pub fn between_models<A, B>(reference: &A, other: &B, batches: &[Tensor]) -> Result<Self>
    where
        A: QuantizableModel + ?Sized,
        B: QuantizableModel + ?Sized,
    {
        Self::between_models_hooked(reference, other, &mut NoHooks, batches)
    }

    /// [`between_models`](Self::between_models) with `hooks` on `other`'s forward passes
    /// (e.g. [`QuantizeActivations`](crate::model::QuantizeActivations) for W8A8).
    pub fn between_models_hooked<A, B>(
        reference: &A,
        other: &B,
        hooks: &mut dyn ForwardHook,
        batches: &[Tensor],
    ) -> Result<Self>
    where
        A: QuantizableModel + ?Sized,
        B: QuantizableModel + ?Sized,
    {
        if batches.is_empty() {
            return Err(Error::TooFewSamples {
                what: "input batches",
                needed: 1,
                got: 0,
            });
        }
        let mut ours = Vec::with_capacity(batches.len());
        let mut theirs = Vec::with_capacity(batches.len());
        for batch in batches {
            ours.push(reference.forward(batch)?.to_dtype(DType::F32)?);
            theirs.push(other.forward_hooked(batch, hooks)?.to_dtype(DType::F32)?);
        }
        Self::between(&Tensor::cat(&ours, 0)?, &Tensor::cat(&theirs, 0)?)
    }

    /// Number of rows compared.
    pub fn len(&self) -> usize {
        self.cosines.len()
    }

    /// Whether no row was compared (never true for a value built by this type).
    pub fn is_empty(&self) -> bool {
        self.cosines.is_empty()
    }

    /// The row with the smallest cosine similarity (the first, on ties).
    pub fn worst_row(&self) -> usize {
        self.cosines
            .iter()
            .enumerate()
            .fold(
                (0, f64::INFINITY),
                |(bi, bv), (i, &v)| {
                    if v < bv { (i, v) } else { (bi, bv) }
                },
            )
            .0
    }
}

impl fmt::Display for EmbeddingSimilarity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cosine mean {:.6}, min {:.6} (row {}) | max |Δ| {:.3e} | n = {}",
            self.mean,
            self.min,
            self.worst_row(),
            self.max_abs_difference,
            self.len()
        )
    }
}

/// The rows of a non-empty, finite float matrix, widened to f64.
fn rows(t: &Tensor, what: &'static str) -> Result<Vec<Vec<f64>>> {
    if t.rank() != 2 {
        return Err(Error::RankMismatch {
            what,
            expected: 2,
            shape: t.dims().to_vec(),
        });
    }
    if t.elem_count() == 0 {
        return Err(Error::EmptyTensor {
            what,
            shape: t.dims().to_vec(),
        });
    }
    if !matches!(
        t.dtype(),
        DType::F32 | DType::F16 | DType::BF16 | DType::F64
    ) {
        return Err(Error::UnsupportedDType {
            what,
            dtype: t.dtype(),
        });
    }
    let rows = t.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let flat = rows.iter().flatten();
    let bad: Vec<usize> = flat
        .enumerate()
        .filter(|(_, v)| !v.is_finite())
        .map(|(i, _)| i)
        .collect();
    if let Some(&first_index) = bad.first() {
        return Err(Error::NonFinite {
            what,
            count: bad.len(),
            first_index,
        });
    }
    Ok(rows)
}
