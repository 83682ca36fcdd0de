//! Audit reports: the rows an audit fills, where they came from, and how they are written.
//!
//! An audit runs a plan of configurations (full precision, quantizers, perturbations) on one
//! model and data set; each gives one [`AuditRow`] — privacy (MIS with its interval, AUC, TPR
//! at low FPR), utility, storage, time. An [`AuditReport`] holds the rows with their
//! [`Provenance`] and writes:
//!
//! | output | what | |
//! |---|---|---|
//! | `report.json` | everything, lossless | deterministic bytes; [`AuditReport::read_json`] refuses another [`SCHEMA_VERSION`] |
//! | `report.csv` | one line per row | RFC 4180 quoting, empty cell for a missing figure |
//! | `report.md` | the table a reader wants | "–" for a missing figure |
//! | `frontier.svg` | MIS against utility, CI whiskers, Pareto front | [`frontier_svg`] |
//! | `roc.svg` | attack ROC per row, log-log | [`roc_svg`] |
//! | `losses.svg` | member vs non-member loss histograms | [`losses_svg`] |
//!
//! Long plans can be split over processes with [`Shard`] and the partial reports combined with
//! [`AuditReport::merge`]; an interrupted run resumes from its JSON with
//! [`AuditReport::missing_rows`].
//!
//! ```
//! use quantlens::audit::{AuditReport, AuditRow, Provenance, RowKind, WriteOptions};
//!
//! let mut report = AuditReport::new(Provenance::new("mlp on digits").with_seed("split", 1));
//! report.push(AuditRow::new(0, "fp32", RowKind::FullPrecision).with_accuracy(0.97))?;
//! report.push(AuditRow::new(1, "rtn-w4", RowKind::Quantizer).with_accuracy(0.95))?;
//! let json = report.to_json_string(&WriteOptions::default())?;
//! assert_eq!(AuditReport::from_json_str(&json, "<memory>")?, report);
//! assert_eq!(report.to_markdown_string().lines().count(), 2 + 2);
//! # Ok::<(), quantlens::Error>(())
//! ```

mod aggregate;
mod data;
mod plan;
mod plot;
mod provenance;
mod report;
mod runner;
mod shard;
mod writers;

pub use data::{AuditData, Utility};
pub use plan::{FULL_PRECISION, PlanEntry};
pub use runner::{Audit, AuditEvent};

pub use plot::{UtilityMetric, frontier_indices, frontier_svg, histogram, losses_svg, roc_svg};
pub use provenance::{Provenance, SplitSizes, hash_bytes, hash_f32, hash_tensor};
pub use report::{AuditReport, AuditRow, Ci, LayerErrorSummary, RowKind, SCHEMA_VERSION};
pub use shard::Shard;
pub use writers::WriteOptions;
