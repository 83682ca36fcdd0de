//! [`AuditRow`] and [`AuditReport`]: the data an audit fills, one row per configuration.
//!
//! Everything here is plain data with serde derives. Field order is the declaration order and
//! every map is a `BTreeMap`, so serialising the same report always gives the same bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::mis::{Interval, MembershipSample, MisEstimate};
use crate::model::QuantizationReport;
use crate::perturb::PerturbationReport;

use super::provenance::Provenance;

/// Version of the JSON layout written by [`AuditReport::to_json_string`]; readers refuse any
/// other.
pub const SCHEMA_VERSION: u32 = 1;

/// What a row's model is, relative to the full-precision model it was derived from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RowKind {
    /// The unmodified model: the baseline every other row is compared with.
    FullPrecision,
    /// Weights (or activations) quantized by a [`Quantizer`](crate::Quantizer).
    Quantizer,
    /// Weights perturbed by a [`Perturbation`](crate::Perturbation) (noise, clipping, flips).
    Perturbation,
}

impl RowKind {
    /// The name used in the JSON, CSV and Markdown outputs.
    pub fn as_str(self) -> &'static str {
        match self {
            RowKind::FullPrecision => "full_precision",
            RowKind::Quantizer => "quantizer",
            RowKind::Perturbation => "perturbation",
        }
    }
}

/// A two-sided confidence interval, as written in a report (a serialisable
/// [`Interval`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ci {
    /// Lower end, in the unit of the figure it bounds.
    pub lower: f64,
    /// Upper end, in the unit of the figure it bounds.
    pub upper: f64,
    /// Nominal coverage, e.g. 0.95.
    pub level: f64,
}

impl From<Interval> for Ci {
    fn from(i: Interval) -> Self {
        Ci {
            lower: i.lower,
            upper: i.upper,
            level: i.level,
        }
    }
}

impl From<Ci> for Interval {
    fn from(c: Ci) -> Self {
        Interval {
            lower: c.lower,
            upper: c.upper,
            level: c.level,
        }
    }
}

/// How far quantization moved the weights, summarised over the quantized layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerErrorSummary {
    /// Mean over layers of `‖W − Ŵ‖_F / ‖W‖_F` (dimensionless).
    pub mean_relative_error: f64,
    /// Largest per-layer relative error (dimensionless).
    pub max_relative_error: f64,
    /// Name of the layer with the largest relative error.
    pub worst_layer: String,
    /// Number of layers summarised.
    pub layers: usize,
}

impl LayerErrorSummary {
    /// The summary of a [`QuantizationReport`]; `None` when it has no layer.
    pub fn from_quantization_report(report: &QuantizationReport) -> Option<Self> {
        Self::of_layers(report.layers.iter().map(|l| (&l.name, l.relative_error)))
    }

    /// The summary of a [`PerturbationReport`] (relative norm of each layer's change); `None`
    /// when it has no layer.
    pub fn from_perturbation_report(report: &PerturbationReport) -> Option<Self> {
        Self::of_layers(report.layers.iter().map(|l| (&l.name, l.relative)))
    }

    /// Mean, max and worst layer of `(name, relative error)` pairs; `None` for none.
    fn of_layers<'r>(layers: impl Iterator<Item = (&'r String, f64)>) -> Option<Self> {
        let layers: Vec<(&String, f64)> = layers.collect();
        let (worst, max) = layers.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1))?;
        let mean = layers.iter().map(|l| l.1).sum::<f64>() / layers.len() as f64;
        Some(LayerErrorSummary {
            mean_relative_error: mean,
            max_relative_error: max,
            worst_layer: worst.clone(),
            layers: layers.len(),
        })
    }
}

/// One configuration of an audit plan and what it measured.
///
/// Build one with [`AuditRow::new`] and the `with_*` helpers, or set the public fields
/// directly. Optional figures are `None` when not measured (a classifier has no perplexity,
/// a TPR at 0.1 % FPR needs at least 1000 non-members); they are written as `null` in JSON,
/// an empty cell in CSV and "–" in Markdown.
///
/// ```
/// use quantlens::MembershipSample;
/// use quantlens::audit::{AuditRow, RowKind};
/// use quantlens::mis::{LossThreshold, MisEstimator};
///
/// let sample = MembershipSample::new(vec![0.1, 0.2, 0.3], vec![0.25, 0.4, 0.5])?;
/// // Three non-members are too few for a TPR at 1 % or 0.1 % FPR: ask for none.
/// let est = LossThreshold::new().with_fprs(&[]).estimate(&sample)?;
/// let row = AuditRow::new(1, "rtn-w4-g128-asym", RowKind::Quantizer)
///     .with_estimate(&est)
///     .with_sample(&sample)
///     .with_accuracy(0.93);
/// assert_eq!(row.mis, Some(est.mis));
/// assert!((row.member_loss_mean.unwrap() - 0.2).abs() < 1e-12);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditRow {
    /// Position of the configuration in the audit plan (0-based); rows are sorted by it.
    pub index: usize,
    /// The scheme's short name, e.g. `"rtn-w4-g128-asym"`, `"nf4"`, `"fp32"`.
    pub scheme: String,
    /// Full precision, quantizer or perturbation.
    pub kind: RowKind,
    /// The scheme's full configuration (any JSON value; `null` when not recorded).
    pub config: serde_json::Value,
    /// True storage of the quantized weights in bits per weight, scales and zero points
    /// included (e.g. 4.156 for int4 with f16 scales per 128); `None` for full precision.
    pub bits_per_weight: Option<f64>,
    /// Size of the whole model as it would be stored, in bytes.
    pub model_bytes: Option<u64>,
    /// Classification accuracy on held-out data, a fraction in `[0, 1]`.
    pub accuracy: Option<f64>,
    /// Perplexity on held-out text (`exp` of the mean per-token NLL in nats; lower is better).
    pub perplexity: Option<f64>,
    /// Mean cosine similarity of the embeddings to the full-precision model's, in `[−1, 1]`.
    pub embedding_cosine: Option<f64>,
    /// Membership-inference security `1 − advantage`, in `[0, 1]` (1 = no leak measured).
    pub mis: Option<f64>,
    /// Confidence interval of `mis`.
    pub mis_ci: Option<Ci>,
    /// The attack's advantage `TPR − FPR` at its best threshold, in `[0, 1]`.
    pub advantage: Option<f64>,
    /// Confidence interval of `advantage`.
    pub advantage_ci: Option<Ci>,
    /// Area under the attack's ROC curve (0.5 = chance).
    pub auc: Option<f64>,
    /// Confidence interval of `auc`.
    pub auc_ci: Option<Ci>,
    /// Attack TPR at 1 % FPR (a fraction); needs at least 100 non-members.
    pub tpr_at_1pct: Option<f64>,
    /// Attack TPR at 0.1 % FPR (a fraction); needs at least 1000 non-members.
    pub tpr_at_01pct: Option<f64>,
    /// Mean per-sample loss of the members (in the probe's unit, nats for cross-entropy).
    pub member_loss_mean: Option<f64>,
    /// Mean per-sample loss of the non-members (same unit).
    pub non_member_loss_mean: Option<f64>,
    /// Summary of the per-layer weight error; `None` for full precision.
    pub layer_error: Option<LayerErrorSummary>,
    /// Extra named figures, one column each in CSV and Markdown (explanation agreement,
    /// custom utilities…), e.g. `"attribution_spearman" → 0.93`. Keys sort, so the columns
    /// come out in the same order on every run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// Which of the audit's K repeated trainings the row measures (0-based); `None` for a row
    /// aggregated over all of them ([`AuditReport::aggregate_trainings`]).
    #[serde(default)]
    pub training: Option<usize>,
    /// Wall-clock time of the row (quantize + evaluate + attack), in seconds; `None` when not
    /// recorded. Left out of the JSON unless asked for
    /// ([`WriteOptions::with_timing`](super::WriteOptions::with_timing)), since it is the one
    /// figure that differs between two runs of the same audit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// The seed of the row's random choices (stochastic rounding, noise, bootstrap).
    pub seed: u64,
    /// Per-sample losses of the members, for histograms and ROC plots (may be left out of the
    /// JSON, see [`WriteOptions::include_losses`](super::WriteOptions::include_losses)).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_losses: Vec<f64>,
    /// Per-sample losses of the non-members (same unit as `member_losses`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub non_member_losses: Vec<f64>,
}

impl AuditRow {
    /// A row at `index` of the plan with every measurement empty, `config = null`, training
    /// 0, no time and `seed = 0`.
    pub fn new(index: usize, scheme: impl Into<String>, kind: RowKind) -> Self {
        AuditRow {
            index,
            scheme: scheme.into(),
            kind,
            config: serde_json::Value::Null,
            bits_per_weight: None,
            model_bytes: None,
            accuracy: None,
            perplexity: None,
            embedding_cosine: None,
            mis: None,
            mis_ci: None,
            advantage: None,
            advantage_ci: None,
            auc: None,
            auc_ci: None,
            tpr_at_1pct: None,
            tpr_at_01pct: None,
            member_loss_mean: None,
            non_member_loss_mean: None,
            layer_error: None,
            metrics: BTreeMap::new(),
            training: Some(0),
            seconds: None,
            seed: 0,
            member_losses: Vec::new(),
            non_member_losses: Vec::new(),
        }
    }

    /// Sets the scheme's configuration.
    pub fn with_config(mut self, config: serde_json::Value) -> Self {
        self.config = config;
        self
    }

    /// Copies MIS, advantage, AUC (with their intervals) and the TPRs at exactly 0.01 and
    /// 0.001 FPR from an estimate (a TPR the estimator was not asked for stays `None`).
    pub fn with_estimate(mut self, est: &MisEstimate) -> Self {
        self.mis = Some(est.mis);
        self.mis_ci = est.ci.map(Ci::from);
        self.advantage = Some(est.advantage);
        self.advantage_ci = est.advantage_ci().map(Ci::from);
        self.auc = est.auc.map(|a| a.value);
        self.auc_ci = est.auc.and_then(|a| a.ci).map(Ci::from);
        self.tpr_at_1pct = est.tpr_at(0.01).map(|t| t.tpr);
        self.tpr_at_01pct = est.tpr_at(0.001).map(|t| t.tpr);
        self
    }

    /// Keeps the per-sample losses and their means.
    pub fn with_sample(mut self, sample: &MembershipSample) -> Self {
        self.member_losses = sample.members().to_vec();
        self.non_member_losses = sample.non_members().to_vec();
        self.member_loss_mean = mean(&self.member_losses);
        self.non_member_loss_mean = mean(&self.non_member_losses);
        self
    }

    /// Copies bits per weight and the layer-error summary from a quantization run.
    pub fn with_quantization_report(mut self, report: &QuantizationReport) -> Self {
        if !report.layers.is_empty() {
            self.bits_per_weight = Some(report.bits_per_weight());
        }
        self.layer_error = LayerErrorSummary::from_quantization_report(report);
        self
    }

    /// Sets the accuracy (a fraction).
    pub fn with_accuracy(mut self, accuracy: f64) -> Self {
        self.accuracy = Some(accuracy);
        self
    }

    /// Sets the perplexity.
    pub fn with_perplexity(mut self, perplexity: f64) -> Self {
        self.perplexity = Some(perplexity);
        self
    }

    /// Sets the embedding cosine similarity.
    pub fn with_embedding_cosine(mut self, cosine: f64) -> Self {
        self.embedding_cosine = Some(cosine);
        self
    }

    /// Sets the wall-clock seconds and the seed.
    pub fn with_timing(mut self, seconds: f64, seed: u64) -> Self {
        self.seconds = Some(seconds);
        self.seed = seed;
        self
    }

    /// Sets which of the K repeated trainings the row measures.
    pub fn with_training(mut self, training: usize) -> Self {
        self.training = Some(training);
        self
    }

    /// Adds (or replaces) an extra named figure, written as its own column.
    pub fn with_metric(mut self, name: impl Into<String>, value: f64) -> Self {
        self.metrics.insert(name.into(), value);
        self
    }

    /// Every float of the row with its name, for the finiteness check before writing.
    fn floats(&self) -> Vec<(&'static str, f64)> {
        let mut out = Vec::new();
        let opts = [
            ("seconds", self.seconds),
            ("bits_per_weight", self.bits_per_weight),
            ("accuracy", self.accuracy),
            ("perplexity", self.perplexity),
            ("embedding_cosine", self.embedding_cosine),
            ("mis", self.mis),
            ("advantage", self.advantage),
            ("auc", self.auc),
            ("tpr_at_1pct", self.tpr_at_1pct),
            ("tpr_at_01pct", self.tpr_at_01pct),
            ("member_loss_mean", self.member_loss_mean),
            ("non_member_loss_mean", self.non_member_loss_mean),
        ];
        out.extend(opts.into_iter().filter_map(|(n, v)| v.map(|v| (n, v))));
        for (n, ci) in [
            ("mis_ci", self.mis_ci),
            ("advantage_ci", self.advantage_ci),
            ("auc_ci", self.auc_ci),
        ] {
            if let Some(c) = ci {
                out.extend([(n, c.lower), (n, c.upper), (n, c.level)]);
            }
        }
        if let Some(l) = &self.layer_error {
            out.push(("layer_error", l.mean_relative_error));
            out.push(("layer_error", l.max_relative_error));
        }
        out.extend(self.metrics.values().map(|&v| ("metrics", v)));
        out
    }

    /// Errors unless every float is finite: JSON has no NaN or ∞ (serde_json would write
    /// `null` and the row would not read back).
    pub(crate) fn check_finite(&self) -> Result<()> {
        let bad = |what: &'static str, values: &[f64]| -> Result<()> {
            if let Some(first) = values.iter().position(|v| !v.is_finite()) {
                return Err(Error::NonFinite {
                    what,
                    count: values.iter().filter(|v| !v.is_finite()).count(),
                    first_index: first,
                });
            }
            Ok(())
        };
        for (name, v) in self.floats() {
            bad(name, &[v])?;
        }
        bad("member_losses", &self.member_losses)?;
        bad("non_member_losses", &self.non_member_losses)
    }
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// A whole audit: the schema version, where the numbers came from, and one row per
/// configuration, sorted by [`AuditRow::index`].
///
/// Written by [`AuditReport::write_json`], [`AuditReport::write_csv`],
/// [`AuditReport::write_markdown`] and, with the SVG plots, [`AuditReport::write_all`]; split
/// and combined with [`Shard`](super::Shard) and [`AuditReport::merge`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditReport {
    /// The JSON layout version, [`SCHEMA_VERSION`] for reports built by this crate.
    pub schema_version: u32,
    /// What the rows were computed from.
    pub provenance: Provenance,
    /// One row per configuration, sorted by index.
    pub rows: Vec<AuditRow>,
}

impl AuditReport {
    /// An empty report of the current [`SCHEMA_VERSION`].
    pub fn new(provenance: Provenance) -> Self {
        AuditReport {
            schema_version: SCHEMA_VERSION,
            provenance,
            rows: Vec::new(),
        }
    }

    /// Adds a row, keeping the rows sorted by index.
    ///
    /// Errors: a row with that index already present ([`Error::InvalidParameter`]).
    pub fn push(&mut self, row: AuditRow) -> Result<()> {
        if self.row(row.index).is_some() {
            return Err(Error::InvalidParameter {
                name: "row",
                reason: format!("the report already has a row with index {}", row.index),
            });
        }
        let pos = self.rows.partition_point(|r| r.index < row.index);
        self.rows.insert(pos, row);
        Ok(())
    }

    /// The row at plan index `index`, if computed.
    pub fn row(&self, index: usize) -> Option<&AuditRow> {
        // A scan, not a binary search: `rows` is public and may have been reordered.
        self.rows.iter().find(|r| r.index == index)
    }
}
