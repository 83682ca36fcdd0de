//! Negative log-likelihood of a language model: token logits `[b, t, V]` and next-token
//! targets `[b, t]` → mean NLL per sequence `[b]` (or per token `[b, t]`).

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::kernels;
use crate::probe::LossProbe;
use crate::probe::inputs::{
    check_float, check_non_empty, check_rank, class_targets, integer_entries, mask_entries,
};

/// PyTorch's `ignore_index` default, the usual label of padding and prompt tokens.
pub const DEFAULT_IGNORE_INDEX: i64 = -100;

/// Mean token negative log-likelihood per sequence, over the tokens that count.
///
/// * **outputs**: logits `[b, t, V]` in f32, f16 or bf16, already aligned with the targets
///   (position `j` predicts `targets[.., j]`; shift by one yourself if your model's logits
///   predict the *next* position).
/// * **targets**: token ids `[b, t]` in any integer dtype. Entries equal to the ignore index
///   (−100 by default, see [`SequenceNll::ignore_index`]) do not count; neither do positions
///   where an optional mask is 0 ([`SequenceNll::per_sequence_losses`]).
/// * **result** of [`LossProbe::per_sample_losses`]: `[b]` f32, the mean over each
///   sequence's counted tokens, on the logits' device. [`SequenceNll::per_token_losses`]
///   gives the `[b, t]` losses themselves.
///
/// Token losses are [`CrossEntropy`](crate::CrossEntropy)'s: the fused CPU kernel (accurate
/// to ~1e-6 relative even for tiny losses) or the Candle-ops fallback elsewhere, with the
/// same special values. Ignored or masked positions are not read at all (their logits may be
/// anything). Means are taken in f64.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::{LossProbe, SequenceNll};
///
/// // One sequence of 3 positions over a vocabulary of 4; the last position is padding.
/// let logits = Tensor::zeros((1, 3, 4), candle_core::DType::F32, &Device::Cpu)?;
/// let targets = Tensor::new(&[[1i64, 2, -100]], &Device::Cpu)?;
/// let nll = SequenceNll::new();
/// let per_seq = nll.per_sample_losses(&logits, &targets)?.to_vec1::<f32>()?;
/// assert!((per_seq[0] - 4f32.ln()).abs() < 1e-6);
/// let per_tok = nll.per_token_losses(&logits, &targets, None)?.to_vec2::<f32>()?;
/// assert_eq!(per_tok[0][2], 0.0); // not counted
/// # Ok::<(), quantlens::Error>(())
/// ```
///
/// # Errors
///
/// Those of [`CrossEntropy`](crate::CrossEntropy) (with logits rank 3 and targets rank 2),
/// [`Error::ShapeMismatch`] when targets or mask are not `[b, t]`, and, for the per-sequence
/// mean, [`Error::NoCountedTokens`] naming a sequence whose every token is ignored or masked.
#[derive(Debug, Clone)]
pub struct SequenceNll {
    ignore_index: Option<i64>,
}

impl Default for SequenceNll {
    fn default() -> Self {
        SequenceNll {
            ignore_index: Some(DEFAULT_IGNORE_INDEX),
        }
    }
}

impl SequenceNll {
    /// The probe, ignoring targets equal to [`DEFAULT_IGNORE_INDEX`] (−100).
    pub fn new() -> Self {
        SequenceNll::default()
    }

    /// Ignore targets equal to `index` instead (for example the padding token's id).
    ///
    /// ```
    /// # use quantlens::SequenceNll;
    /// let nll = SequenceNll::new().ignore_index(50_256);
    /// assert_eq!(nll.ignored(), Some(50_256));
    /// ```
    pub fn ignore_index(mut self, index: i64) -> Self {
        self.ignore_index = Some(index);
        self
    }

    /// Count every target (every one must then be a valid token id).
    pub fn without_ignore_index(mut self) -> Self {
        self.ignore_index = None;
        self
    }

    /// The ignored target value, if any.
    pub fn ignored(&self) -> Option<i64> {
        self.ignore_index
    }

    /// Per-token losses `[b, t]` (f32, on the logits' device); 0 at positions that do not
    /// count. `mask`, if given, is `[b, t]` of any dtype: non-zero entries count.
    ///
    /// ```
    /// use candle_core::{DType, Device, Tensor};
    /// use quantlens::SequenceNll;
    ///
    /// let logits = Tensor::zeros((2, 2, 8), DType::F32, &Device::Cpu)?;
    /// let targets = Tensor::new(&[[1u32, 2], [3, 4]], &Device::Cpu)?;
    /// let mask = Tensor::new(&[[1u8, 1], [1, 0]], &Device::Cpu)?;
    /// let tok = SequenceNll::new().per_token_losses(&logits, &targets, Some(&mask))?;
    /// assert_eq!(tok.to_vec2::<f32>()?[1][1], 0.0);
    /// # Ok::<(), quantlens::Error>(())
    /// ```
    pub fn per_token_losses(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        Ok(self.token_losses(logits, targets, mask)?.0)
    }

    /// Mean loss of each sequence's counted tokens, `[b]` (f32, on the logits' device). `mask`
    /// as for [`Self::per_token_losses`].
    pub fn per_sequence_losses(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (tokens, counts) = self.token_losses(logits, targets, mask)?;
        if let Some(sequence) = counts.iter().position(|&c| c == 0) {
            return Err(Error::NoCountedTokens { sequence });
        }
        let counts: Vec<f64> = counts.into_iter().map(|c| c as f64).collect();
        let counts = Tensor::from_vec(counts, tokens.dim(0)?, tokens.device())?;
        // Sum in f64: a sequence of thousands of tokens would lose digits in f32.
        let sums = tokens.to_dtype(DType::F64)?.sum(1)?;
        Ok((sums / counts)?.to_dtype(DType::F32)?)
    }

    /// Token losses `[b, t]` and the number of counted tokens of each sequence.
    fn token_losses(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<(Tensor, Vec<usize>)> {
        check_rank(logits, 3, "logits")?;
        check_rank(targets, 2, "targets")?;
        check_non_empty(logits, "logits")?;
        let (b, t, vocab) = logits.dims3()?;
        if targets.dims() != [b, t] {
            return Err(Error::ShapeMismatch(format!(
                "logits {:?} need targets [{b}, {t}], got {:?}",
                logits.dims(),
                targets.dims()
            )));
        }
        let mask = match mask {
            Some(m) if m.dims() != [b, t] => {
                return Err(Error::ShapeMismatch(format!(
                    "logits {:?} need a mask [{b}, {t}], got {:?}",
                    logits.dims(),
                    m.dims()
                )));
            }
            Some(m) => Some(mask_entries(m)?),
            None => None,
        };
        check_float(logits, "logits")?;
        let entries = integer_entries(targets, "targets")?;
        let rows = class_targets(
            &entries,
            vocab,
            self.ignore_index,
            mask.as_deref(),
            "targets",
        )?;
        let counts = rows
            .chunks(t)
            .map(|seq| seq.iter().filter(|r| r.is_some()).count())
            .collect();
        let flat = logits.reshape((b * t, vocab))?;
        let losses = kernels::cross_entropy_rows(&flat, &rows)?.reshape((b, t))?;
        Ok((losses, counts))
    }
}

impl LossProbe for SequenceNll {
    fn name(&self) -> String {
        "sequence-nll".into()
    }

    /// [`SequenceNll::per_sequence_losses`] without a mask.
    fn per_sample_losses(&self, outputs: &Tensor, targets: &Tensor) -> Result<Tensor> {
        self.per_sequence_losses(outputs, targets, None)
    }
}
