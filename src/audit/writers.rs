//! Writers and the reader for [`AuditReport`]: JSON (the lossless format, deterministic
//! bytes), CSV (one line per row, RFC 4180) and a Markdown table for humans, plus
//! [`AuditReport::write_all`], which writes them and the plots into one directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use super::plot::{self, UtilityMetric};
use super::report::{AuditReport, AuditRow, Ci, SCHEMA_VERSION};

/// What the writers include and how the plots are drawn.
///
/// ```
/// use quantlens::audit::{UtilityMetric, WriteOptions};
/// let opts = WriteOptions::default().without_losses().with_utility(UtilityMetric::Perplexity);
/// assert!(!opts.include_losses);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WriteOptions {
    /// Whether the JSON keeps the raw per-sample losses (default `true`). Without them the
    /// report is much smaller but cannot be re-plotted; the loss means stay.
    pub include_losses: bool,
    /// The utility on the frontier's x axis; `None` (the default) picks the first of accuracy,
    /// perplexity, embedding cosine that some row has.
    pub utility: Option<UtilityMetric>,
    /// Bins of each loss histogram (default 30).
    pub histogram_bins: usize,
    /// Whether the JSON keeps each row's wall-clock `seconds` (default `false`: without
    /// them, two runs of the same audit write byte-identical JSON). CSV and Markdown always
    /// show the time.
    pub include_timing: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            include_losses: true,
            utility: None,
            histogram_bins: 30,
            include_timing: false,
        }
    }
}

impl WriteOptions {
    /// Leaves the per-sample losses out of the JSON.
    pub fn without_losses(mut self) -> Self {
        self.include_losses = false;
        self
    }

    /// Chooses the utility on the frontier's x axis.
    pub fn with_utility(mut self, utility: UtilityMetric) -> Self {
        self.utility = Some(utility);
        self
    }

    /// Keeps the rows' wall-clock seconds in the JSON (the JSON of two runs then differs).
    pub fn with_timing(mut self) -> Self {
        self.include_timing = true;
        self
    }

    /// Sets the number of histogram bins (at least 1).
    pub fn with_histogram_bins(mut self, bins: usize) -> Self {
        self.histogram_bins = bins;
        self
    }
}

impl AuditReport {
    /// The report as pretty-printed JSON, ending in a newline.
    ///
    /// Deterministic: the same report gives the same bytes (fields in declaration order, maps
    /// sorted by key, floats in serde_json's shortest round-trip form), and a report read back
    /// with [`AuditReport::from_json_str`] writes the same bytes again. Timings are left out
    /// unless [`WriteOptions::include_timing`] is set, so two runs of one audit agree.
    ///
    /// Errors: a NaN or infinite number anywhere in a row ([`Error::NonFinite`]), since JSON
    /// cannot hold it.
    pub fn to_json_string(&self, options: &WriteOptions) -> Result<String> {
        for row in &self.rows {
            row.check_finite()?;
        }
        let json = if options.include_losses && options.include_timing {
            serde_json::to_string_pretty(self)
        } else {
            let mut slim = self.clone();
            for r in &mut slim.rows {
                if !options.include_losses {
                    r.member_losses.clear();
                    r.non_member_losses.clear();
                }
                if !options.include_timing {
                    r.seconds = None;
                }
            }
            serde_json::to_string_pretty(&slim)
        };
        let mut json = json.map_err(|e| Error::Unsupported(format!("report to JSON: {e}")))?;
        json.push('\n');
        Ok(json)
    }

    /// Writes [`AuditReport::to_json_string`] to `path`.
    pub fn write_json(&self, path: impl AsRef<Path>, options: &WriteOptions) -> Result<()> {
        write_file(path.as_ref(), &self.to_json_string(options)?)
    }

    /// Parses a report from JSON text; `origin` names it in errors (a path, `"<stdin>"`).
    ///
    /// Errors ([`Error::Malformed`]): text that is not JSON or not a report, a missing or
    /// different `schema_version` than [`SCHEMA_VERSION`], rows not sorted by index or with a
    /// repeated index.
    pub fn from_json_str(json: &str, origin: &str) -> Result<Self> {
        let malformed = |reason: String| Error::Malformed {
            path: origin.to_string(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| malformed(format!("not JSON: {e}")))?;
        // Check the version before the layout, so a newer file says so instead of failing
        // on a field this build does not know.
        match value.get("schema_version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(SCHEMA_VERSION) => {}
            Some(v) => {
                return Err(malformed(format!(
                    "schema_version {v} is not supported; this build of quantlens reads version {SCHEMA_VERSION}"
                )));
            }
            None => {
                return Err(malformed(
                    "no schema_version: not a quantlens audit report".into(),
                ));
            }
        }
        let report: AuditReport = serde_json::from_value(value)
            .map_err(|e| malformed(format!("not an audit report: {e}")))?;
        if let Some(w) = report.rows.windows(2).find(|w| w[0].index >= w[1].index) {
            return Err(malformed(format!(
                "rows must be sorted by a unique index; row {} is followed by row {}",
                w[0].index, w[1].index
            )));
        }
        Ok(report)
    }

    /// Reads a report written by [`AuditReport::write_json`].
    ///
    /// Errors: [`Error::Io`] when the file cannot be read; otherwise as
    /// [`AuditReport::from_json_str`].
    pub fn read_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        AuditReport::from_json_str(&text, &path.display().to_string())
    }

    /// The rows as CSV: a header line, then one line per row, lines ending in CRLF and fields
    /// quoted as RFC 4180 says (a field with a comma, a quote or a line break is put in double
    /// quotes, its quotes doubled). A missing figure is an empty cell; `config` is compact
    /// JSON; floats are printed in their shortest round-trip form.
    ///
    /// Each extra metric some row has ([`AuditRow::metrics`]) is one more column, after the
    /// fixed ones, in name order.
    pub fn to_csv_string(&self) -> String {
        let metrics = self.metric_names();
        let mut out = String::new();
        let mut header: Vec<String> = CSV_COLUMNS.iter().map(|(h, _)| h.to_string()).collect();
        header.extend(metrics.iter().cloned());
        push_csv_line(&mut out, &header);
        for row in &self.rows {
            let mut cells: Vec<String> = CSV_COLUMNS.iter().map(|(_, f)| f(row)).collect();
            cells.extend(metrics.iter().map(|m| cell(row.metrics.get(m).copied())));
            push_csv_line(&mut out, &cells);
        }
        out
    }

    /// The names of the extra metrics any row has, sorted.
    fn metric_names(&self) -> Vec<String> {
        let names: std::collections::BTreeSet<&String> =
            self.rows.iter().flat_map(|r| r.metrics.keys()).collect();
        names.into_iter().cloned().collect()
    }

    /// Writes [`AuditReport::to_csv_string`] to `path`.
    pub fn write_csv(&self, path: impl AsRef<Path>) -> Result<()> {
        write_file(path.as_ref(), &self.to_csv_string())
    }

    /// The rows as a Markdown table: scheme, the training when the report has several,
    /// bits/weight, model size, each utility some row has, MIS with its interval, AUC, TPR at
    /// 1 % and 0.1 % FPR, the weight error (mean / max over layers), each extra metric, and
    /// the time when recorded. A column no row fills (a utility, the privacy figures of a
    /// utility-only audit, TPR at 0.1 % on fewer than 1000 non-members) is left out. Missing figures print as
    /// "–"; a `|` in a scheme name is escaped.
    pub fn to_markdown_string(&self) -> String {
        let has = |f: fn(&AuditRow) -> Option<f64>| self.rows.iter().any(|r| f(r).is_some());
        type Col = (String, Box<dyn Fn(&AuditRow) -> String>);
        let col = |h: &str, f: fn(&AuditRow) -> String| -> Col { (h.to_string(), Box::new(f)) };
        let mut cols: Vec<Col> = vec![col("scheme", |r| r.scheme.replace('|', "\\|"))];
        let trainings: std::collections::BTreeSet<Option<usize>> =
            self.rows.iter().map(|r| r.training).collect();
        if trainings.len() > 1 {
            cols.push(col("training", |r| {
                r.training.map_or("all".to_string(), |t| t.to_string())
            }));
        }
        cols.push(col("bits/weight", |r| fmt_opt(r.bits_per_weight, 3)));
        if self.rows.iter().any(|r| r.model_bytes.is_some()) {
            cols.push(col("size", |r| {
                r.model_bytes.map_or("–".into(), human_bytes)
            }));
        }
        if has(|r| r.accuracy) {
            cols.push(col("accuracy", |r| fmt_opt(r.accuracy, 4)));
        }
        if has(|r| r.perplexity) {
            cols.push(col("perplexity ↓", |r| fmt_opt(r.perplexity, 2)));
        }
        if has(|r| r.embedding_cosine) {
            cols.push(col("embedding cosine", |r| fmt_opt(r.embedding_cosine, 4)));
        }
        if has(|r| r.mis) {
            cols.push(col("MIS [CI]", |r| match (r.mis, r.mis_ci) {
                (Some(m), Some(c)) => format!("{m:.3} [{:.3}, {:.3}]", c.lower, c.upper),
                (m, _) => fmt_opt(m, 3),
            }));
        }
        if has(|r| r.auc) {
            cols.push(col("AUC", |r| fmt_opt(r.auc, 3)));
        }
        if has(|r| r.tpr_at_1pct) {
            cols.push(col("TPR@1%", |r| fmt_opt(r.tpr_at_1pct, 3)));
        }
        if has(|r| r.tpr_at_01pct) {
            cols.push(col("TPR@0.1%", |r| fmt_opt(r.tpr_at_01pct, 4)));
        }
        if self.rows.iter().any(|r| r.layer_error.is_some()) {
            cols.push(col("weight error mean / max", |r| match &r.layer_error {
                Some(l) => format!("{:.4} / {:.4}", l.mean_relative_error, l.max_relative_error),
                None => "–".into(),
            }));
        }
        for name in self.metric_names() {
            let key = name.clone();
            cols.push((
                name,
                Box::new(move |r| fmt_opt(r.metrics.get(&key).copied(), 4)),
            ));
        }
        if has(|r| r.seconds) {
            cols.push(col("time (s)", |r| fmt_opt(r.seconds, 1)));
        }

        let mut out = String::new();
        let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
        out.push_str(&line(cols.iter().map(|(h, _)| h.to_string()).collect()));
        out.push_str(&line(
            cols.iter()
                .enumerate()
                // Numbers right-aligned, the scheme name left-aligned.
                .map(|(i, _)| if i == 0 { ":---" } else { "---:" }.to_string())
                .collect(),
        ));
        for r in &self.rows {
            out.push_str(&line(cols.iter().map(|(_, f)| f(r)).collect()));
        }
        out
    }

    /// Writes [`AuditReport::to_markdown_string`] to `path`.
    pub fn write_markdown(&self, path: impl AsRef<Path>) -> Result<()> {
        write_file(path.as_ref(), &self.to_markdown_string())
    }

    /// Creates `dir` (and its parents) and writes `report.json`, `report.csv`, `report.md`,
    /// and the plots `frontier.svg` (MIS against utility), `roc.svg` (log-log ROC curves) and
    /// `losses.svg` (member / non-member loss histograms). Returns the paths written.
    ///
    /// A plot with nothing to draw is skipped: the frontier needs a row with both MIS and the
    /// chosen utility, the ROC and histograms a row with per-sample losses.
    pub fn write_all(&self, dir: impl AsRef<Path>, options: &WriteOptions) -> Result<Vec<PathBuf>> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let mut written = Vec::new();
        let json = dir.join("report.json");
        self.write_json(&json, options)?;
        written.push(json);
        let csv = dir.join("report.csv");
        self.write_csv(&csv)?;
        written.push(csv);
        let md = dir.join("report.md");
        self.write_markdown(&md)?;
        written.push(md);

        let utility = options
            .utility
            .or_else(|| plot::default_utility(&self.rows));
        if let Some(u) = utility
            && self
                .rows
                .iter()
                .any(|r| r.mis.is_some() && u.value(r).is_some())
        {
            let p = dir.join("frontier.svg");
            plot::frontier_svg(&self.rows, u, &p)?;
            written.push(p);
        }
        if self.rows.iter().any(plot::has_losses) {
            let p = dir.join("roc.svg");
            plot::roc_svg(&self.rows, &p)?;
            written.push(p);
            let p = dir.join("losses.svg");
            plot::losses_svg(&self.rows, options.histogram_bins, &p)?;
            written.push(p);
        }
        Ok(written)
    }
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) => format!("{v:.digits$}"),
        None => "–".to_string(),
    }
}

fn cell(v: Option<f64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn ci_cell(ci: Option<Ci>, f: fn(Ci) -> f64) -> String {
    cell(ci.map(f))
}

type CsvColumn = (&'static str, fn(&AuditRow) -> String);

/// The CSV layout: one (header, cell) pair per column, in order.
const CSV_COLUMNS: &[CsvColumn] = &[
    ("index", |r| r.index.to_string()),
    ("scheme", |r| r.scheme.clone()),
    ("kind", |r| r.kind.as_str().to_string()),
    ("training", |r| {
        r.training.map(|t| t.to_string()).unwrap_or_default()
    }),
    ("config", |r| {
        if r.config.is_null() {
            String::new()
        } else {
            r.config.to_string()
        }
    }),
    ("bits_per_weight", |r| cell(r.bits_per_weight)),
    ("model_bytes", |r| {
        r.model_bytes.map(|b| b.to_string()).unwrap_or_default()
    }),
    ("accuracy", |r| cell(r.accuracy)),
    ("perplexity", |r| cell(r.perplexity)),
    ("embedding_cosine", |r| cell(r.embedding_cosine)),
    ("mis", |r| cell(r.mis)),
    ("mis_ci_lower", |r| ci_cell(r.mis_ci, |c| c.lower)),
    ("mis_ci_upper", |r| ci_cell(r.mis_ci, |c| c.upper)),
    ("mis_ci_level", |r| ci_cell(r.mis_ci, |c| c.level)),
    ("advantage", |r| cell(r.advantage)),
    ("advantage_ci_lower", |r| {
        ci_cell(r.advantage_ci, |c| c.lower)
    }),
    ("advantage_ci_upper", |r| {
        ci_cell(r.advantage_ci, |c| c.upper)
    }),
    ("auc", |r| cell(r.auc)),
    ("auc_ci_lower", |r| ci_cell(r.auc_ci, |c| c.lower)),
    ("auc_ci_upper", |r| ci_cell(r.auc_ci, |c| c.upper)),
    ("tpr_at_1pct", |r| cell(r.tpr_at_1pct)),
    ("tpr_at_01pct", |r| cell(r.tpr_at_01pct)),
    ("member_loss_mean", |r| cell(r.member_loss_mean)),
    ("non_member_loss_mean", |r| cell(r.non_member_loss_mean)),
    ("mean_relative_error", |r| {
        cell(r.layer_error.as_ref().map(|l| l.mean_relative_error))
    }),
    ("max_relative_error", |r| {
        cell(r.layer_error.as_ref().map(|l| l.max_relative_error))
    }),
    ("worst_layer", |r| {
        r.layer_error
            .as_ref()
            .map(|l| l.worst_layer.clone())
            .unwrap_or_default()
    }),
    ("seconds", |r| cell(r.seconds)),
    ("seed", |r| r.seed.to_string()),
];

/// Bytes in the largest binary unit that keeps the number at least 1 (`"1.5 MiB"`).
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn push_csv_line(out: &mut String, cells: &[String]) {
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if c.contains([',', '"', '\r', '\n']) {
            let _ = write!(out, "\"{}\"", c.replace('"', "\"\""));
        } else {
            out.push_str(c);
        }
    }
    out.push_str("\r\n");
}
