//! A seeded, deterministic training loop (AdamW, mini-batches in a seeded order, optional early
//! stopping) for models whose parameters are Candle variables.

use candle_core::{DType, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

use crate::error::{Error, Result};
use crate::model::QuantizableModel;
use crate::rng::{self, SplitMix64};

/// A model the [`train`] loop can fit.
pub trait Trainable: QuantizableModel {
    /// The variables the optimiser updates. Errors when the model can no longer be trained
    /// (e.g. a weight was replaced by a quantized one).
    fn parameters(&self) -> Result<Vec<Var>>;

    /// The forward pass in training mode (dropout on), with randomness drawn from `step_seed`.
    fn forward_train(&self, input: &Tensor, step_seed: u64) -> Result<Tensor>;
}

/// What the model is fitted to minimise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Objective {
    /// Softmax cross-entropy against integer (`u32`) class labels: outputs `[n, C]` against
    /// labels `[n]`, or a language model's logits `[n, t, V]` against next-token targets
    /// `[n, t]` (leading dimensions are flattened; the loss is the mean over all tokens; see
    /// [`next_token_pairs`]).
    #[default]
    CrossEntropy,
    /// Mean squared error against `f32` targets shaped like the output (`[n]` for a single
    /// output is accepted).
    SquaredError,
}

/// Stop when the validation loss has not improved for `patience` epochs.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct EarlyStopping {
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// Smallest decrease that counts as an improvement.
    pub min_delta: f64,
    /// Put the best epoch's parameters back at the end.
    pub restore_best: bool,
}

impl EarlyStopping {
    /// Patience `patience`, any decrease counts, best parameters restored.
    pub fn new(patience: usize) -> Self {
        EarlyStopping {
            patience,
            min_delta: 0.0,
            restore_best: true,
        }
    }
}

/// Settings of [`train`]. Every random choice (batch order, dropout) derives from `seed`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TrainConfig {
    /// Passes over the training data.
    pub epochs: usize,
    /// Rows per optimiser step; `None` for full-batch steps.
    pub batch_size: Option<usize>,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Seed of the batch order and of dropout.
    pub seed: u64,
    /// Optional early stopping on the validation loss.
    pub early_stopping: Option<EarlyStopping>,
    /// The loss minimised.
    pub objective: Objective,
}

impl TrainConfig {
    /// `epochs` epochs, batches of 64, learning rate 1e-3, weight decay 0.01 (AdamW's usual
    /// default), cross-entropy, no early stopping.
    pub fn new(epochs: usize, seed: u64) -> Self {
        TrainConfig {
            epochs,
            batch_size: Some(64),
            learning_rate: 1e-3,
            weight_decay: 0.01,
            seed,
            early_stopping: None,
            objective: Objective::CrossEntropy,
        }
    }

    /// Rows per step.
    pub fn batch_size(mut self, rows: usize) -> Self {
        self.batch_size = Some(rows);
        self
    }

    /// One step per epoch over all training rows.
    pub fn full_batch(mut self) -> Self {
        self.batch_size = None;
        self
    }

    /// AdamW learning rate.
    pub fn learning_rate(mut self, lr: f64) -> Self {
        self.learning_rate = lr;
        self
    }

    /// AdamW weight decay.
    pub fn weight_decay(mut self, wd: f64) -> Self {
        self.weight_decay = wd;
        self
    }

    /// Early stopping on the validation loss (needs a validation split).
    pub fn early_stopping(mut self, es: EarlyStopping) -> Self {
        self.early_stopping = Some(es);
        self
    }

    /// The loss to minimise.
    pub fn objective(mut self, objective: Objective) -> Self {
        self.objective = objective;
        self
    }

    fn validate(&self) -> Result<()> {
        let bad = |name, reason: String| Err(Error::InvalidParameter { name, reason });
        if self.epochs == 0 {
            return bad("epochs", "must be at least 1".into());
        }
        if self.batch_size == Some(0) {
            return bad("batch_size", "must be at least 1".into());
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(
                "learning_rate",
                format!("must be finite and > 0, got {}", self.learning_rate),
            );
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(
                "weight_decay",
                format!("must be finite and ≥ 0, got {}", self.weight_decay),
            );
        }
        Ok(())
    }
}

/// Losses at the end of one epoch (parameters as they stand, dropout off).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct EpochLog {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean loss over the training rows (the members).
    pub train_loss: f64,
    /// Mean loss over the validation rows, when given.
    pub val_loss: Option<f64>,
}

/// The per-epoch record of a [`train`] run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TrainHistory {
    /// One entry per completed epoch.
    pub epochs: Vec<EpochLog>,
    /// With early stopping: the epoch whose parameters the model ends with.
    pub best_epoch: Option<usize>,
    /// Whether early stopping ended the run before `epochs`.
    pub stopped_early: bool,
}

impl TrainHistory {
    /// The last epoch's record.
    pub fn last(&self) -> Option<&EpochLog> {
        self.epochs.last()
    }
}

/// Fit `model` to `(x, y)` with AdamW, deterministically: the batch order of epoch `e` is a
/// permutation drawn from `(seed, e)`, dropout masks from `(seed, step)`; the same seed on the
/// same machine gives bit-identical weights.
///
/// `validation` (optional) is only evaluated, never trained on; it drives early stopping and
/// the `val_loss` column of the history.
///
/// A language model ([`Llama`](crate::model::Llama)) trains the same way: `x` holds token ids
/// `[n, t]`, `y` the next-token targets `[n, t]` ([`next_token_pairs`] makes both from windows
/// `[n, t + 1]`), and the cross-entropy is the mean over all `n · t` tokens.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::model::{Mlp, MlpConfig, TrainConfig, train};
///
/// let dev = Device::Cpu;
/// // XOR-like toy data.
/// let x = Tensor::new(&[[0f32, 0.], [0., 1.], [1., 0.], [1., 1.]], &dev)?;
/// let y = Tensor::new(&[0u32, 1, 1, 0], &dev)?;
/// let mut mlp = Mlp::new(MlpConfig::new(2, &[16], 2), 1, &dev)?;
/// let history = train(&mut mlp, (&x, &y), None, &TrainConfig::new(300, 1).full_batch().learning_rate(0.05))?;
/// assert!(history.last().unwrap().train_loss < 0.1);
/// # Ok::<(), quantlens::Error>(())
/// ```
pub fn train<M: Trainable + ?Sized>(
    model: &mut M,
    train_split: (&Tensor, &Tensor),
    validation: Option<(&Tensor, &Tensor)>,
    config: &TrainConfig,
) -> Result<TrainHistory> {
    config.validate()?;
    let (x, y) = train_split;
    check_split("training", x, y, config.objective)?;
    if let Some((xv, yv)) = validation {
        check_split("validation", xv, yv, config.objective)?;
    }
    if config.early_stopping.is_some() && validation.is_none() {
        return Err(Error::InvalidParameter {
            name: "early_stopping",
            reason: "needs a validation split".into(),
        });
    }
    // One row's outputs: their shape checks the labels, their size sets the evaluation chunks.
    let probe = model.forward(&x.narrow(0, 0, 1)?)?;
    let eval_rows = (EVAL_CHUNK_ELEMENTS / probe.elem_count().max(1)).max(1);
    if config.objective == Objective::CrossEntropy {
        // Candle's gather does not bounds-check labels; a label ≥ the number of outputs must
        // be an error here, not garbage (or a panic) inside the loss.
        let out_dims = probe.dims();
        let classes = *out_dims.last().unwrap_or(&0);
        for (what, labels) in
            std::iter::once(("training", y)).chain(validation.map(|v| ("validation", v.1)))
        {
            // Targets have the outputs' leading shape: [n] for [n, C], [n, t] for [n, t, V].
            let lead = &out_dims[..out_dims.len().saturating_sub(1)];
            if labels.dims().get(1..) != lead.get(1..) {
                return Err(Error::ShapeMismatch(format!(
                    "{what} targets {:?} do not match outputs [n, ..] = {out_dims:?} without \
                     their last dimension",
                    labels.dims()
                )));
            }
            // Flattened, so token targets [n, t] are checked like class labels [n].
            let max = labels.flatten_all()?.max(0)?.to_scalar::<u32>()? as usize;
            if max >= classes {
                return Err(Error::InvalidParameter {
                    name: "targets",
                    reason: format!("{what} label {max} but the model has {classes} outputs"),
                });
            }
        }
    }
    let params = model.parameters()?;
    let mut opt = AdamW::new(
        params.clone(),
        ParamsAdamW {
            lr: config.learning_rate,
            weight_decay: config.weight_decay,
            ..Default::default()
        },
    )?;

    let n = x.dims()[0];
    let batch = config.batch_size.unwrap_or(n).min(n);
    let mut history = TrainHistory {
        epochs: Vec::with_capacity(config.epochs),
        best_epoch: None,
        stopped_early: false,
    };
    let mut best: Option<(f64, usize, Vec<Tensor>)> = None;
    let mut step = 0u64;
    for epoch in 1..=config.epochs {
        let order = permutation(n, rng::mix(config.seed ^ rng::mix(epoch as u64)));
        for chunk in order.chunks(batch) {
            let idx = Tensor::from_vec(
                chunk.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                chunk.len(),
                x.device(),
            )?;
            let (xb, yb) = (x.index_select(&idx, 0)?, y.index_select(&idx, 0)?);
            let out = model.forward_train(&xb, rng::mix(config.seed ^ rng::mix(!step)))?;
            let loss = objective_loss(config.objective, &out, &yb)?;
            opt.backward_step(&loss)?;
            step += 1;
        }
        let train_loss = mean_loss(&*model, x, y, config.objective, eval_rows)?;
        if !train_loss.is_finite() {
            return Err(Error::Unsupported(format!(
                "training diverged at epoch {epoch} (loss {train_loss}); lower the learning rate"
            )));
        }
        let val_loss = match validation {
            Some((xv, yv)) => Some(mean_loss(&*model, xv, yv, config.objective, eval_rows)?),
            None => None,
        };
        history.epochs.push(EpochLog {
            epoch,
            train_loss,
            val_loss,
        });
        if let (Some(es), Some(v)) = (config.early_stopping, val_loss) {
            let improved = best.as_ref().is_none_or(|(b, _, _)| v < *b - es.min_delta);
            if improved {
                let snapshot = if es.restore_best {
                    params
                        .iter()
                        .map(|p| p.as_tensor().copy())
                        .collect::<candle_core::Result<Vec<_>>>()?
                } else {
                    Vec::new()
                };
                best = Some((v, epoch, snapshot));
            } else if best
                .as_ref()
                .is_some_and(|(_, e, _)| epoch - e >= es.patience)
            {
                history.stopped_early = epoch < config.epochs;
                break;
            }
        }
    }
    if let (Some(es), Some((_, epoch, snapshot))) = (config.early_stopping, best) {
        history.best_epoch = Some(epoch);
        if es.restore_best {
            for (p, t) in params.iter().zip(&snapshot) {
                p.set(t)?;
            }
        }
    }
    Ok(history)
}

/// Output elements evaluated at once by [`mean_loss`] (~64 MiB of f32): the whole split for
/// any MLP, a few sequences for a language model.
const EVAL_CHUNK_ELEMENTS: usize = 1 << 24;

/// The objective's mean loss of `model` on `(x, y)`, dropout off, `chunk` rows at a time so
/// that a language model's `[n, t, V]` logits never exist for the whole split at once. Chunk
/// means are weighted by their share of the rows (every row has the same number of targets).
pub(crate) fn mean_loss<M: QuantizableModel + ?Sized>(
    model: &M,
    x: &Tensor,
    y: &Tensor,
    objective: Objective,
    chunk: usize,
) -> Result<f64> {
    let n = x.dims()[0];
    if chunk >= n {
        return Ok(objective_loss(objective, &model.forward(x)?, y)?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?);
    }
    let mut total = 0.0;
    for start in (0..n).step_by(chunk) {
        let len = chunk.min(n - start);
        let out = model.forward(&x.narrow(0, start, len)?)?;
        let mean = objective_loss(objective, &out, &y.narrow(0, start, len)?)?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        total += mean * len as f64;
    }
    Ok(total / n as f64)
}

fn objective_loss(objective: Objective, out: &Tensor, y: &Tensor) -> Result<Tensor> {
    Ok(match objective {
        Objective::CrossEntropy if out.rank() > 2 => {
            // A language model: logits [n, t, V] against targets [n, t], one row per token.
            let (lead, classes) = out.dims().split_at(out.rank() - 1);
            if y.dims() != lead {
                return Err(Error::ShapeMismatch(format!(
                    "outputs {:?} need targets {lead:?}, got {:?}",
                    out.dims(),
                    y.dims()
                )));
            }
            let rows: usize = lead.iter().product();
            candle_nn::loss::cross_entropy(
                &out.to_dtype(DType::F32)?.reshape((rows, classes[0]))?,
                &y.reshape(rows)?,
            )?
        }
        Objective::CrossEntropy => candle_nn::loss::cross_entropy(&out.to_dtype(DType::F32)?, y)?,
        Objective::SquaredError => {
            let y = y.reshape(out.dims())?.to_dtype(out.dtype())?;
            candle_nn::loss::mse(out, &y)?
        }
    })
}

fn check_split(what: &'static str, x: &Tensor, y: &Tensor, objective: Objective) -> Result<()> {
    if x.rank() != 2 {
        return Err(Error::RankMismatch {
            what: "feature matrix",
            expected: 2,
            shape: x.dims().to_vec(),
        });
    }
    let n = x.dims()[0];
    if n == 0 {
        return Err(Error::TooFewSamples {
            what,
            needed: 1,
            got: 0,
        });
    }
    if y.dims().first() != Some(&n) {
        return Err(Error::ShapeMismatch(format!(
            "{what} split: {n} feature rows but targets of shape {:?}",
            y.dims()
        )));
    }
    match objective {
        // Class labels [n], or a language model's next-token targets [n, t].
        Objective::CrossEntropy if y.dtype() != DType::U32 || !(1..=2).contains(&y.rank()) => {
            return Err(Error::InvalidParameter {
                name: "targets",
                reason: format!(
                    "cross-entropy needs u32 class labels [n] or token targets [n, t], got {:?} {:?}",
                    y.dtype(),
                    y.dims()
                ),
            });
        }
        Objective::SquaredError if !y.dtype().is_float() => {
            return Err(Error::InvalidParameter {
                name: "targets",
                reason: format!("squared error needs float targets, got {:?}", y.dtype()),
            });
        }
        _ => {}
    }
    let bad = x
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_finite())
        .map(|(i, _)| i)
        .collect::<Vec<_>>();
    if let Some(&first_index) = bad.first() {
        return Err(Error::NonFinite {
            what,
            count: bad.len(),
            first_index,
        });
    }
    Ok(())
}

/// Split token windows `[n, t + 1]` (u32) into language-model training pairs: inputs
/// `[n, t]` (every token but the last) and next-token targets `[n, t]` (every token but the
/// first), ready for [`train`] with [`Objective::CrossEntropy`].
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::model::next_token_pairs;
///
/// let windows = Tensor::new(&[[1u32, 2, 3, 4], [5, 6, 7, 8]], &Device::Cpu)?;
/// let (x, y) = next_token_pairs(&windows)?;
/// assert_eq!(x.to_vec2::<u32>()?, [[1, 2, 3], [5, 6, 7]]);
/// assert_eq!(y.to_vec2::<u32>()?, [[2, 3, 4], [6, 7, 8]]);
/// # Ok::<(), quantlens::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::InvalidParameter`] unless `windows` is u32, [`Error::RankMismatch`] unless it is a
/// matrix, [`Error::TooFewSamples`] for windows of fewer than 2 tokens, and
/// [`Error::EmptyTensor`] for no window.
pub fn next_token_pairs(windows: &Tensor) -> Result<(Tensor, Tensor)> {
    if windows.dtype() != DType::U32 {
        return Err(Error::InvalidParameter {
            name: "token windows",
            reason: format!("must be u32 token ids, got {:?}", windows.dtype()),
        });
    }
    let (n, len) = match *windows.dims() {
        [n, len] => (n, len),
        _ => {
            return Err(Error::RankMismatch {
                what: "token windows [n, t + 1]",
                expected: 2,
                shape: windows.dims().to_vec(),
            });
        }
    };
    if n == 0 {
        return Err(Error::EmptyTensor {
            what: "token windows",
            shape: windows.dims().to_vec(),
        });
    }
    if len < 2 {
        return Err(Error::TooFewSamples {
            what: "tokens per window",
            needed: 2,
            got: len,
        });
    }
    Ok((
        windows.narrow(1, 0, len - 1)?.contiguous()?,
        windows.narrow(1, 1, len - 1)?.contiguous()?,
    ))
}

/// A seeded Fisher–Yates permutation of `0..n`.
pub(crate) fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    SplitMix64::new(seed).shuffle(&mut order);
    order
}
