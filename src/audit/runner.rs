//! [`Audit`]: the runner that turns a model, its membership data and a list of schemes into
//! an [`AuditReport`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::mis::{Bootstrap, LossThreshold, MembershipSample, MisEstimator};
use crate::model::{
    CalibrationMode, EmbeddingSimilarity, LayerFilter, QuantizableModel, SequentialQuantization,
    StoreAs, evaluate, perplexity,
};
use crate::perturb::{Perturbation, perturb_weights};
use crate::probe::{CrossEntropy, LossProbe};
use crate::quant::Quantizer;

use super::data::{AuditData, Utility};
use super::plan::{self, FULL_PRECISION, PlanEntry, SeedStream, derived_seed};
use super::provenance::{Provenance, hash_bytes};
use super::report::{AuditReport, AuditRow, LayerErrorSummary, RowKind};
use super::shard::Shard;
use super::writers::WriteOptions;

/// What an audit reports while it runs, to the callback given to [`Audit::on_progress`].
#[derive(Debug)]
#[non_exhaustive]
pub enum AuditEvent<'r> {
    /// The run starts: `rows` rows are this run's share of the plan, of which `resumed` were
    /// read from the checkpoint and will not be recomputed.
    Started {
        /// Rows of the plan this run (shard) is responsible for.
        rows: usize,
        /// Rows already in the checkpoint.
        resumed: usize,
    },
    /// Model `training` is ready (trained, or cloned for an audit of a given model).
    Trained {
        /// Which of the K trainings.
        training: usize,
        /// Wall-clock seconds it took.
        seconds: f64,
    },
    /// A row is finished (and, with a checkpoint, saved).
    Row {
        /// The row.
        row: &'r AuditRow,
        /// Rows finished so far, resumed ones included.
        done: usize,
        /// Rows of this run's share of the plan.
        rows: usize,
    },
}

type DataFn<'a> = Box<dyn Fn(usize, u64) -> Result<AuditData> + Send + Sync + 'a>;
type TrainFn<'a, M> = Box<dyn Fn(&AuditData, u64) -> Result<M> + Send + Sync + 'a>;
type ProgressFn<'a> = Box<dyn FnMut(&AuditEvent<'_>) + 'a>;
type MetricsFn<'a, M> =
    Box<dyn Fn(&M, &M, &AuditData) -> Result<Vec<(String, f64)>> + Send + Sync + 'a>;

/// An audit: quantizers and perturbations applied to a model, each measured for privacy
/// (membership inference on members vs non-members), utility, storage and weight error.
///
/// The plan is fixed by the builder: for each of K trainings, a full-precision row, one row
/// per quantizer, one per perturbation, in the order given. [`Audit::run`] measures the rows
/// of its [`Shard`] (all by default), `jobs` rows at a time, and returns an
/// [`AuditReport`]. With a [`checkpoint`](Audit::checkpoint), every finished row is saved at
/// once, and a rerun of the same audit picks up where an interrupted one stopped.
///
/// Everything random derives from one seed and a row's plan position, so the same audit gives
/// the same numbers — and byte-identical JSON — however it is sharded, resumed or parallelised.
///
/// ```
/// use candle_core::Device;
/// use quantlens::audit::{Audit, AuditData, Utility};
/// use quantlens::data::{self, MembershipSplit, Standardizer};
/// use quantlens::model::{Mlp, MlpConfig, TrainConfig, train};
/// use quantlens::{QuantSpec, UniformQuantizer};
///
/// let dev = Device::Cpu;
/// let digits = data::digits()?;
/// let split = MembershipSplit::builder(digits.len()).seed(1).build()?;
/// let z = Standardizer::fit(&digits, split.members())?.transform(&digits)?;
/// let members = z.select(split.members())?.to_tensors(&dev)?;
/// let (x_out, y_out) = z.select(split.non_members())?.to_tensors(&dev)?;
/// let data = AuditData::new(members.clone(), (x_out.clone(), y_out.clone()))?
///     .with_utility(Utility::accuracy(x_out, y_out));
///
/// let mut mlp = Mlp::new(MlpConfig::new(z.n_features(), &[32], 10), 1, &dev)?;
/// train(&mut mlp, (&members.0, &members.1), None, &TrainConfig::new(3, 1))?;
///
/// let report = Audit::of_model("mlp 32 on digits", mlp, data)
///     .quantizer(UniformQuantizer::new(QuantSpec::int4().per_channel())?)
///     .quantizer(UniformQuantizer::new(QuantSpec::int2().per_channel())?)
///     .bootstrap_resamples(100)
///     .seed(7)
///     .run()?;
/// assert_eq!(report.rows.len(), 3);
/// println!("{}", report.to_markdown_string());
/// # Ok::<(), quantlens::Error>(())
/// ```
pub struct Audit<'a, M> {
    description: String,
    data: DataFn<'a>,
    train: TrainFn<'a, M>,
    trainings: usize,
    quantizers: Vec<Box<dyn Quantizer + 'a>>,
    perturbations: Vec<Box<dyn Perturbation + 'a>>,
    probe: Box<dyn LossProbe + 'a>,
    estimator: Option<Box<dyn MisEstimator + 'a>>,
    bootstrap_resamples: usize,
    calibration_mode: CalibrationMode,
    seed: u64,
    jobs: usize,
    memory_budget: Option<usize>,
    batch_rows: usize,
    shard: Shard,
    checkpoint: Option<PathBuf>,
    notes: String,
    progress: Option<ProgressFn<'a>>,
    metrics: Vec<MetricsFn<'a, M>>,
}

impl<'a, M> Audit<'a, M>
where
    M: QuantizableModel + Clone + 'a,
{
    /// An audit of a model already trained on `data`'s members (K = 1).
    pub fn of_model(description: impl Into<String>, model: M, data: AuditData) -> Self {
        Self::with_sources(
            description,
            Box::new(move |_, _| Ok(data.clone())),
            Box::new(move |_, _| Ok(model.clone())),
        )
    }

    /// An audit over `trainings` (K ≥ 1) repeated trainings: for training `k`, `data(k,
    /// seed)` draws a membership split and `train(&data, seed)` fits a model on its members,
    /// each with its own derived seed. One split is one draw of a random quantity; K of them
    /// give its spread ([`AuditReport::aggregate_trainings`]).
    ///
    /// Both functions must be deterministic in their seed. A shard trains only the models its
    /// rows need; the data of every training is drawn (it is hashed into the provenance).
    pub fn repeated(
        description: impl Into<String>,
        trainings: usize,
        data: impl Fn(usize, u64) -> Result<AuditData> + Send + Sync + 'a,
        train: impl Fn(&AuditData, u64) -> Result<M> + Send + Sync + 'a,
    ) -> Self {
        let mut audit = Self::with_sources(description, Box::new(data), Box::new(train));
        audit.trainings = trainings;
        audit
    }

    fn with_sources(
        description: impl Into<String>,
        data: DataFn<'a>,
        train: TrainFn<'a, M>,
    ) -> Self {
        Audit {
            description: description.into(),
            data,
            train,
            trainings: 1,
            quantizers: Vec::new(),
            perturbations: Vec::new(),
            probe: Box::new(CrossEntropy::new()),
            estimator: None,
            bootstrap_resamples: 1000,
            calibration_mode: CalibrationMode::Sequential,
            seed: 0,
            jobs: 1,
            memory_budget: None,
            batch_rows: 256,
            shard: Shard::whole(),
            checkpoint: None,
            notes: String::new(),
            progress: None,
            metrics: Vec::new(),
        }
    }

    /// Adds a quantizer (one row per training).
    pub fn quantizer(mut self, quantizer: impl Quantizer + 'a) -> Self {
        self.quantizers.push(Box::new(quantizer));
        self
    }

    /// Adds quantizers (one row each per training), in order.
    pub fn quantizers(
        mut self,
        quantizers: impl IntoIterator<Item = Box<dyn Quantizer + 'a>>,
    ) -> Self {
        self.quantizers.extend(quantizers);
        self
    }

    /// Adds a weight perturbation (one row per training), applied to every linear layer.
    pub fn perturbation(mut self, perturbation: impl Perturbation + 'a) -> Self {
        self.perturbations.push(Box::new(perturbation));
        self
    }

    /// Adds weight perturbations (one row each per training), in order.
    pub fn perturbations(
        mut self,
        perturbations: impl IntoIterator<Item = Box<dyn Perturbation + 'a>>,
    ) -> Self {
        self.perturbations.extend(perturbations);
        self
    }

    /// The per-sample loss the attack reads (default [`CrossEntropy`]).
    pub fn probe(mut self, probe: impl LossProbe + 'a) -> Self {
        self.probe = Box::new(probe);
        self
    }

    /// The MIS estimator. The default is [`LossThreshold`] with a bootstrap interval
    /// ([`bootstrap_resamples`](Self::bootstrap_resamples) resamples, 95 %, one derived seed
    /// for every row) and the TPR at 1 % and 0.1 % FPR where there are enough non-members
    /// (100 and 1000).
    pub fn estimator(mut self, estimator: impl MisEstimator + 'a) -> Self {
        self.estimator = Some(Box::new(estimator));
        self
    }

    /// Bootstrap resamples of the default estimator (default 1000).
    pub fn bootstrap_resamples(mut self, resamples: usize) -> Self {
        self.bootstrap_resamples = resamples;
        self
    }

    /// Which inputs data-aware quantizers calibrate on (default
    /// [`CalibrationMode::Sequential`]).
    pub fn calibration_mode(mut self, mode: CalibrationMode) -> Self {
        self.calibration_mode = mode;
        self
    }

    /// The audit's seed (default 0): splits, trainings, noise and bootstrap derive from it.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Rows measured at once (default 1). Each holds its own copy of the model, so memory
    /// grows with `jobs`; Candle's kernels already use every core, so more jobs pay off for
    /// small models, whose work is dominated by per-row overheads.
    pub fn jobs(mut self, jobs: usize) -> Self {
        self.jobs = jobs;
        self
    }

    /// Caps the rows measured at once so that their model copies fit in `bytes`: at most
    /// `⌊bytes / model size⌋` rows (at least 1, at most [`jobs`](Self::jobs)), the model size
    /// being [`QuantizableModel::storage_bytes`] of the trained full-precision model. Each row
    /// also needs its activations, so leave headroom.
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = Some(bytes);
        self
    }

    /// Samples per forward pass when computing losses (default 256).
    pub fn batch_rows(mut self, rows: usize) -> Self {
        self.batch_rows = rows;
        self
    }

    /// Measure only this shard's rows (default: all). Merge the shards' reports with
    /// [`AuditReport::merge`].
    pub fn shard(mut self, shard: Shard) -> Self {
        self.shard = shard;
        self
    }

    /// Save the report to `path` (JSON, timings and losses included) after every row, and
    /// resume from it if it exists: rows it already has are not recomputed. The file must
    /// come from the same audit (same provenance and plan), or the run is refused.
    pub fn checkpoint(mut self, path: impl Into<PathBuf>) -> Self {
        self.checkpoint = Some(path.into());
        self
    }

    /// Free-form notes for the provenance (hardware, command line). They are part of the
    /// provenance: a checkpoint or shard written with other notes does not merge.
    pub fn notes(mut self, notes: impl Into<String>) -> Self {
        self.notes = notes.into();
        self
    }

    /// Adds extra columns: `f(full_precision, model, data)` returns named figures for each
    /// row's model (explanation agreement, fact recall, a task score…), stored in
    /// [`AuditRow::metrics`]. Called on the worker threads, once per row, full-precision row
    /// included; names must be the same for every row.
    pub fn metrics(
        mut self,
        f: impl Fn(&M, &M, &AuditData) -> Result<Vec<(String, f64)>> + Send + Sync + 'a,
    ) -> Self {
        self.metrics.push(Box::new(f));
        self
    }

    /// Called on the calling thread as the audit progresses (see [`AuditEvent`]).
    pub fn on_progress(mut self, f: impl FnMut(&AuditEvent<'_>) + 'a) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    /// The plan: every configuration of every training, in row order (all shards).
    pub fn plan(&self) -> Vec<PlanEntry> {
        let mut slots = vec![(FULL_PRECISION.to_string(), RowKind::FullPrecision)];
        slots.extend(
            self.quantizers
                .iter()
                .map(|q| (q.name(), RowKind::Quantizer)),
        );
        slots.extend(
            self.perturbations
                .iter()
                .map(|p| (p.name(), RowKind::Perturbation)),
        );
        plan::build(self.trainings, &slots)
    }

    fn validate(&self, plan: &[PlanEntry]) -> Result<()> {
        let positive = |name: &'static str, v: usize| {
            if v == 0 {
                Err(Error::InvalidParameter {
                    name,
                    reason: "must be at least 1".into(),
                })
            } else {
                Ok(())
            }
        };
        positive("trainings", self.trainings)?;
        positive("jobs", self.jobs)?;
        positive("batch_rows", self.batch_rows)?;
        if self.estimator.is_none() {
            positive("bootstrap_resamples", self.bootstrap_resamples)?;
        }
        let mut seen = BTreeMap::new();
        for e in plan.iter().filter(|e| e.training == 0) {
            if let Some(first) = seen.insert(e.scheme.clone(), e.slot) {
                return Err(Error::InvalidParameter {
                    name: "schemes",
                    reason: format!(
                        "two schemes are both called {:?} (positions {first} and {}): rows are told apart by name",
                        e.scheme, e.slot
                    ),
                });
            }
        }
        Ok(())
    }

    /// Runs the audit (this shard's rows) and returns its report, rows sorted by plan index.
    ///
    /// Errors: bad settings (K, jobs or batch rows of 0, two schemes with one name), data or
    /// training errors, a checkpoint from another audit or shard, and the first error of any
    /// row — after the rows that did finish are saved to the checkpoint, so a rerun resumes.
    pub fn run(&mut self) -> Result<AuditReport> {
        let plan = self.plan();
        self.validate(&plan)?;
        let datasets = (0..self.trainings)
            .map(|k| (self.data)(k, derived_seed(self.seed, SeedStream::Split, k)))
            .collect::<Result<Vec<_>>>()?;
        let provenance = self.provenance(&datasets)?;
        let selected = self.shard.indices(plan.len());
        let mut report = resume(self.checkpoint.as_deref(), &provenance, &plan, self.shard)?;
        let rows = selected.len();
        let mut done = report.rows.len();
        emit(
            &mut self.progress,
            &AuditEvent::Started {
                rows,
                resumed: done,
            },
        );

        let measure = Measure {
            metrics: &self.metrics,
            quantizers: &self.quantizers,
            perturbations: &self.perturbations,
            probe: self.probe.as_ref(),
            estimator: self.estimator.as_deref(),
            bootstrap: Bootstrap::new(
                self.bootstrap_resamples.max(1),
                0.95,
                derived_seed(self.seed, SeedStream::Bootstrap, 0),
            )?,
            mode: self.calibration_mode,
            seed: self.seed,
            batch_rows: self.batch_rows,
        };
        for (k, data) in datasets.iter().enumerate() {
            let pending: Vec<&PlanEntry> = selected
                .iter()
                .map(|&i| &plan[i])
                .filter(|e| e.training == k && report.row(e.index).is_none())
                .collect();
            if pending.is_empty() {
                continue;
            }
            let start = Instant::now();
            let model = (self.train)(data, derived_seed(self.seed, SeedStream::Train, k))?;
            let seconds = start.elapsed().as_secs_f64();
            emit(
                &mut self.progress,
                &AuditEvent::Trained {
                    training: k,
                    seconds,
                },
            );

            let jobs = match self.memory_budget {
                Some(bytes) => self.jobs.min(bytes / model.storage_bytes().max(1)).max(1),
                None => self.jobs,
            };
            let mut first_error = None;
            let checkpoint = self.checkpoint.as_deref();
            let progress = &mut self.progress;
            measure.rows_in_parallel(&model, data, &pending, jobs, |result| {
                let saved = result.and_then(|row| {
                    let index = row.index;
                    report.push(row)?;
                    save_checkpoint(checkpoint, &report)?;
                    Ok(index)
                });
                match saved {
                    Ok(index) => {
                        done += 1;
                        if let Some(row) = report.row(index) {
                            emit(progress, &AuditEvent::Row { row, done, rows });
                        }
                        true
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                        false
                    }
                }
            });
            if let Some(e) = first_error {
                return Err(e);
            }
        }
        Ok(report)
    }

    /// The provenance of this audit on these data sets.
    fn provenance(&self, datasets: &[AuditData]) -> Result<Provenance> {
        let first = &datasets[0];
        let (data_hash, calibration_hash) = if datasets.len() == 1 {
            (first.data_hash()?, first.calibration_hash()?)
        } else {
            // One hash over the K splits' hashes, in training order.
            let mut data = Vec::new();
            let mut calibration = Vec::new();
            for d in datasets {
                data.push(d.data_hash()?);
                calibration.push(d.calibration_hash()?);
            }
            (
                hash_bytes(data.join("\n").as_bytes()),
                hash_bytes(calibration.join("\n").as_bytes()),
            )
        };
        let estimator = match &self.estimator {
            Some(e) => e.name(),
            None => format!(
                "loss-threshold, basic bootstrap ({} resamples, 95%)",
                self.bootstrap_resamples
            ),
        };
        Ok(Provenance::new(self.description.clone())
            .with_seed("audit", self.seed)
            .with_split(first.split_sizes())
            .with_trainings(self.trainings)
            .with_data_hash(data_hash)
            .with_calibration_hash(calibration_hash)
            .with_attack(format!(
                "probe: {}; estimator: {estimator}; calibration: {:?}",
                self.probe.name(),
                self.calibration_mode
            ))
            .with_notes(self.notes.clone()))
    }
}

fn emit(progress: &mut Option<ProgressFn<'_>>, event: &AuditEvent<'_>) {
    if let Some(f) = progress.as_mut() {
        f(event);
    }
}

/// What measuring a row needs, borrowed from the [`Audit`] (shared by the worker threads).
struct Measure<'x, 'a, M> {
    metrics: &'x [MetricsFn<'a, M>],
    quantizers: &'x [Box<dyn Quantizer + 'a>],
    perturbations: &'x [Box<dyn Perturbation + 'a>],
    probe: &'x (dyn LossProbe + 'a),
    estimator: Option<&'x (dyn MisEstimator + 'a)>,
    bootstrap: Bootstrap,
    mode: CalibrationMode,
    seed: u64,
    batch_rows: usize,
}

impl<M: QuantizableModel + Clone> Measure<'_, '_, M> {
    /// Measures `pending` on `jobs` worker threads, handing each result to `on_row` on the
    /// calling thread as it arrives; once `on_row` returns `false`, no further row starts
    /// (rows already running finish and are still handed over).
    fn rows_in_parallel(
        &self,
        fp: &M,
        data: &AuditData,
        pending: &[&PlanEntry],
        jobs: usize,
        mut on_row: impl FnMut(Result<AuditRow>) -> bool,
    ) {
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|scope| {
            for _ in 0..jobs.min(pending.len()) {
                let tx = tx.clone();
                let (next, stop) = (&next, &stop);
                scope.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let Some(entry) = pending.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            break;
                        };
                        let result = self.row(fp, data, entry);
                        // A failed row stops new ones at once, without waiting for `on_row`.
                        if result.is_err() {
                            stop.store(true, Ordering::Relaxed);
                        }
                        if tx.send(result).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            for result in rx {
                if !on_row(result) {
                    stop.store(true, Ordering::Relaxed);
                }
            }
        });
    }

    /// One row: derive the model, probe members and non-members, attack, measure utility.
    fn row(&self, fp: &M, data: &AuditData, entry: &PlanEntry) -> Result<AuditRow> {
        let start = Instant::now();
        let row_seed = derived_seed(self.seed, SeedStream::Row, entry.index);
        let mut row = AuditRow::new(entry.index, entry.scheme.clone(), entry.kind)
            .with_training(entry.training);
        let fp_bytes = fp.storage_bytes();
        let derived;
        let model = match entry.kind {
            RowKind::FullPrecision => {
                row = row.with_config(serde_json::json!({ "name": FULL_PRECISION }));
                row.model_bytes = Some(fp_bytes as u64);
                fp
            }
            RowKind::Quantizer => {
                let q = &self.quantizers[entry.slot - 1];
                let mut m = fp.clone();
                let report = SequentialQuantization::new(q.as_ref())
                    .calibration(data.calibration().iter().cloned())
                    .calibration_mode(self.mode)
                    // Dense: the rows are evaluated at once, and the sizes come from the report.
                    .store_as(StoreAs::FakeQuantized)
                    .run(&mut m)?;
                let replaced = report
                    .layers
                    .iter()
                    .map(|l| Ok(fp.linear_layer(&l.name)?.weight().storage_bytes()))
                    .sum::<Result<usize>>()?;
                row.model_bytes = Some((fp_bytes - replaced + report.storage_bytes()) as u64);
                row = row
                    .with_config(q.config())
                    .with_quantization_report(&report);
                derived = m;
                &derived
            }
            RowKind::Perturbation => {
                let p = &self.perturbations[entry.slot - 1 - self.quantizers.len()];
                let mut m = fp.clone();
                let report = perturb_weights(&mut m, p.as_ref(), &LayerFilter::All, row_seed)?;
                row.layer_error = LayerErrorSummary::from_perturbation_report(&report);
                row.model_bytes = Some(fp_bytes as u64);
                row = row.with_config(p.config());
                derived = m;
                &derived
            }
        };
        if data.has_membership() {
            row = self.attack(row, model, data)?;
        }
        if let Some(utility) = data.utility() {
            row = match utility {
                Utility::Accuracy { inputs, labels } => {
                    row.with_accuracy(evaluate(model, inputs, labels)?.accuracy)
                }
                Utility::Perplexity { tokens, config } => {
                    row.with_perplexity(perplexity(model, tokens, *config)?.perplexity)
                }
                Utility::EmbeddingCosine { inputs } => row.with_embedding_cosine(
                    EmbeddingSimilarity::between_models(fp, model, std::slice::from_ref(inputs))?
                        .mean,
                ),
            };
        }
        for f in self.metrics {
            for (name, value) in f(fp, model, data)? {
                row = row.with_metric(name, value);
            }
        }
        Ok(row.with_timing(start.elapsed().as_secs_f64(), row_seed))
    }

    /// The membership attack on `model`: probe members and non-members, estimate MIS.
    fn attack(&self, row: AuditRow, model: &M, data: &AuditData) -> Result<AuditRow> {
        let (xm, ym) = data.members()?;
        let (xn, yn) = data.non_members()?;
        let sample =
            MembershipSample::new(self.losses(model, xm, ym)?, self.losses(model, xn, yn)?)?;
        let estimate = match self.estimator {
            Some(e) => e.estimate(&sample)?,
            None => {
                let n = sample.non_members().len();
                let fprs: Vec<f64> = [(0.01, 100), (0.001, 1000)]
                    .into_iter()
                    .filter(|&(_, needed)| n >= needed)
                    .map(|(fpr, _)| fpr)
                    .collect();
                LossThreshold::new()
                    .with_fprs(&fprs)
                    .with_bootstrap(self.bootstrap)
                    .estimate(&sample)?
            }
        };
        Ok(row.with_estimate(&estimate).with_sample(&sample))
    }

    /// Per-sample losses of `model` on `(x, y)`, `batch_rows` samples per forward pass.
    fn losses(&self, model: &M, x: &Tensor, y: &Tensor) -> Result<Vec<f64>> {
        let n = x.dims()[0];
        let mut out = Vec::with_capacity(n);
        let mut start = 0;
        while start < n {
            let len = self.batch_rows.min(n - start);
            let outputs = model.forward(&x.narrow(0, start, len)?)?;
            let losses = self
                .probe
                .per_sample_losses(&outputs, &y.narrow(0, start, len)?)?;
            out.extend(
                losses
                    .to_dtype(DType::F64)?
                    .flatten_all()?
                    .to_vec1::<f64>()?,
            );
            start += len;
        }
        Ok(out)
    }
}

/// The report to continue from: the checkpoint's rows if it exists (checked against this
/// audit), an empty report otherwise.
fn resume(
    checkpoint: Option<&Path>,
    provenance: &Provenance,
    plan: &[PlanEntry],
    shard: Shard,
) -> Result<AuditReport> {
    let Some(path) = checkpoint.filter(|p| p.exists()) else {
        return Ok(AuditReport::new(provenance.clone()));
    };
    let saved = AuditReport::read_json(path)?;
    let refuse = |reason: String| Error::InvalidParameter {
        name: "checkpoint",
        reason: format!(
            "{}: {reason}; delete it or choose another path",
            path.display()
        ),
    };
    if saved.provenance != *provenance {
        return Err(refuse(
            "it was written by a different audit (model, seeds, data, split, method, crate version or notes differ)".into(),
        ));
    }
    for row in &saved.rows {
        let matches = plan.get(row.index).is_some_and(|e| {
            e.scheme == row.scheme && e.kind == row.kind && Some(e.training) == row.training
        });
        if !matches {
            return Err(refuse(format!(
                "its row {} ({:?}) is not that row of this audit's plan",
                row.index, row.scheme
            )));
        }
        if !shard.selects(row.index) {
            return Err(refuse(format!(
                "its row {} belongs to another shard",
                row.index
            )));
        }
    }
    Ok(saved)
}

/// Writes `report` to `path` (if any) through a temporary file, so an interruption never
/// leaves half a checkpoint.
fn save_checkpoint(path: Option<&Path>, report: &AuditReport) -> Result<()> {
    let Some(path) = path else {
        return Ok(());
    };
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let json = report.to_json_string(&WriteOptions::default().with_timing())?;
    std::fs::write(&tmp, json).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
