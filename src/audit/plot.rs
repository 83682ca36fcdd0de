//! SVG plots of an audit: the privacy–utility frontier, ROC curves on log-log axes, and member
//! vs non-member loss histograms.
//!
//! Drawn with plotters' SVG backend without its `ttf` feature: text is written as SVG
//! `<text>` elements (the viewer picks the font), so nothing here needs system fonts or a
//! browser. Text widths for the layout are estimated, so long labels may overlap slightly.

use std::fmt::Display;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::mis::{MembershipSample, Roc, pareto_front};

use super::report::{AuditRow, RowKind};

/// The utility on the x axis of the frontier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UtilityMetric {
    /// [`AuditRow::accuracy`]; higher is better.
    Accuracy,
    /// [`AuditRow::perplexity`]; **lower** is better.
    Perplexity,
    /// [`AuditRow::embedding_cosine`]; higher is better.
    EmbeddingCosine,
}

impl UtilityMetric {
    /// The row's value of this utility, if measured.
    pub fn value(self, row: &AuditRow) -> Option<f64> {
        match self {
            UtilityMetric::Accuracy => row.accuracy,
            UtilityMetric::Perplexity => row.perplexity,
            UtilityMetric::EmbeddingCosine => row.embedding_cosine,
        }
    }

    /// Whether a larger value is better (false only for perplexity).
    pub fn higher_is_better(self) -> bool {
        !matches!(self, UtilityMetric::Perplexity)
    }

    /// The axis label, with unit and direction.
    pub fn axis_label(self) -> &'static str {
        match self {
            UtilityMetric::Accuracy => "accuracy (fraction correct, higher is better)",
            UtilityMetric::Perplexity => "perplexity (exp of mean token NLL, lower is better)",
            UtilityMetric::EmbeddingCosine => {
                "embedding cosine to full precision (higher is better)"
            }
        }
    }
}

/// The first of accuracy, perplexity, embedding cosine that some row has.
pub(crate) fn default_utility(rows: &[AuditRow]) -> Option<UtilityMetric> {
    [
        UtilityMetric::Accuracy,
        UtilityMetric::Perplexity,
        UtilityMetric::EmbeddingCosine,
    ]
    .into_iter()
    .find(|u| rows.iter().any(|r| u.value(r).is_some()))
}

/// Whether a row kept per-sample losses on both sides (needed for ROC and histograms).
pub(crate) fn has_losses(row: &AuditRow) -> bool {
    !row.member_losses.is_empty() && !row.non_member_losses.is_empty()
}

/// Indices into `points` (`(utility, mis)`) of the privacy–utility Pareto front: high MIS and
/// good utility (high, or low for perplexity), sorted by utility for drawing as a line.
///
/// Errors: a non-finite coordinate ([`Error::NonFinite`]).
pub fn frontier_indices(points: &[(f64, f64)], utility: UtilityMetric) -> Result<Vec<usize>> {
    // `pareto_front` wants both coordinates "higher is better": flip perplexity.
    let sign = if utility.higher_is_better() {
        1.0
    } else {
        -1.0
    };
    let oriented: Vec<(f64, f64)> = points.iter().map(|&(u, m)| (m, sign * u)).collect();
    let mut front = pareto_front(&oriented)?;
    front.sort_by(|&a, &b| points[a].0.total_cmp(&points[b].0).then(a.cmp(&b)));
    Ok(front)
}

/// Writes the privacy–utility frontier to `path` as SVG: one numbered point per row that has
/// both MIS and `utility`, vertical whiskers for the MIS confidence intervals, and the Pareto
/// front as a line. A panel to the right of the chart holds the legend and the key from
/// number to scheme name, so long names never cover the data.
///
/// Errors: no row with both figures ([`Error::TooFewSamples`]), a non-finite value
/// ([`Error::NonFinite`]), or a file that cannot be written ([`Error::Io`]).
pub fn frontier_svg(rows: &[AuditRow], utility: UtilityMetric, path: &Path) -> Result<()> {
    let pts: Vec<(&AuditRow, f64, f64)> = rows
        .iter()
        .filter_map(|r| Some((r, utility.value(r)?, r.mis?)))
        .collect();
    if pts.is_empty() {
        return Err(Error::TooFewSamples {
            what: "rows with both MIS and the chosen utility",
            needed: 1,
            got: 0,
        });
    }
    let xy: Vec<(f64, f64)> = pts.iter().map(|&(_, u, m)| (u, m)).collect();
    let front = frontier_indices(&xy, utility)?;
    let (x0, x1) = padded(xy.iter().map(|p| p.0));
    let ys = pts.iter().flat_map(|&(r, _, m)| {
        let ci = r.mis_ci.map_or([m, m], |c| [c.lower, c.upper]);
        [m, ci[0], ci[1]]
    });
    let (y0, y1) = padded(ys);
    let fail = draw_error(path);

    // The key needs one 18-pixel line per point below the legend.
    let height = (680).max(150 + 18 * pts.len() as u32);
    let root = SVGBackend::new(path, (1240, height)).into_drawing_area();
    root.fill(&WHITE).map_err(&fail)?;
    let (plot_area, key_area) = root.split_horizontally(820);
    let mut chart = ChartBuilder::on(&plot_area)
        .caption("Privacy–utility frontier", ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(75)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(&fail)?;
    chart
        .configure_mesh()
        .x_desc(utility.axis_label())
        .y_desc("MIS = 1 − attack advantage (higher is more private)")
        .x_label_formatter(&|v| format_tick(*v))
        .y_label_formatter(&|v| format_tick(*v))
        .draw()
        .map_err(&fail)?;

    // Whiskers first, so that points and numbers are drawn over them.
    let cap = (x1 - x0) * 0.006;
    let whisker = BLACK.mix(0.6).stroke_width(1);
    let cis: Vec<(f64, f64, f64)> = pts
        .iter()
        .filter_map(|&(r, u, _)| r.mis_ci.map(|c| (u, c.lower, c.upper)))
        .collect();
    let level = pts.iter().find_map(|(r, _, _)| r.mis_ci.map(|c| c.level));
    chart
        .draw_series(cis.iter().flat_map(|&(u, lo, hi)| {
            [
                PathElement::new(vec![(u, lo), (u, hi)], whisker),
                PathElement::new(vec![(u - cap, lo), (u + cap, lo)], whisker),
                PathElement::new(vec![(u - cap, hi), (u + cap, hi)], whisker),
            ]
        }))
        .map_err(&fail)?;
    let front_line: Vec<(f64, f64)> = front.iter().map(|&i| xy[i]).collect();
    chart
        .draw_series(LineSeries::new(front_line, GREEN.stroke_width(2)))
        .map_err(&fail)?;
    chart
        .draw_series(pts.iter().enumerate().map(|(i, &(r, u, m))| {
            EmptyElement::at((u, m))
                + Circle::new((0, 0), 5, kind_color(r.kind).filled())
                + Text::new((i + 1).to_string(), (6, -16), ("sans-serif", 13))
        }))
        .map_err(&fail)?;

    // The panel: legend, then the key.
    let text = |s: String, x: i32, y: i32| Text::new(s, (x, y), ("sans-serif", 13));
    let mut y = 40;
    let mut entry = |key_area: &DrawingArea<SVGBackend, Shift>, marker: Marker, label: String| {
        let drawn = match marker {
            Marker::Whisker => {
                key_area.draw(&PathElement::new(vec![(18, y - 6), (18, y + 8)], whisker))
            }
            Marker::Line => key_area.draw(&PathElement::new(
                vec![(8, y + 1), (28, y + 1)],
                GREEN.stroke_width(2),
            )),
            Marker::Dot(kind) => {
                key_area.draw(&Circle::new((18, y + 1), 5, kind_color(kind).filled()))
            }
        };
        let out = drawn.and_then(|_| key_area.draw(&text(label, 36, y - 6)));
        y += 20;
        out
    };
    let ci_label = match level {
        Some(l) => format!("MIS {} % confidence interval", format_tick(l * 100.0)),
        None => "MIS confidence interval".to_string(),
    };
    entry(&key_area, Marker::Whisker, ci_label).map_err(&fail)?;
    entry(
        &key_area,
        Marker::Line,
        "Pareto front (none both more private and more useful)".into(),
    )
    .map_err(&fail)?;
    for kind in [
        RowKind::FullPrecision,
        RowKind::Quantizer,
        RowKind::Perturbation,
    ] {
        if pts.iter().any(|(r, _, _)| r.kind == kind) {
            entry(&key_area, Marker::Dot(kind), kind_label(kind).to_string()).map_err(&fail)?;
        }
    }
    y += 14;
    for (i, (r, _, _)) in pts.iter().enumerate() {
        key_area
            .draw(&text(format!("{:>2}  {}", i + 1, r.scheme), 8, y))
            .map_err(&fail)?;
        y += 18;
    }
    root.present().map_err(&fail)
}

/// What a legend entry of the frontier's panel shows.
#[derive(Clone, Copy)]
enum Marker {
    Whisker,
    Line,
    Dot(RowKind),
}

/// Writes the loss-threshold attack's ROC curves to `path` as SVG, on log-log axes from
/// `1/n` (rounded down to a power of 10) to 1, `n` the largest number of non-members, or
/// members, of any row; one curve per
/// row with per-sample losses, and the chance diagonal TPR = FPR. Rates of 0 are drawn at the
/// axis minimum.
///
/// Errors: no row with per-sample losses on both sides ([`Error::TooFewSamples`]), non-finite
/// losses ([`Error::NonFinite`]), or a file that cannot be written ([`Error::Io`]).
pub fn roc_svg(rows: &[AuditRow], path: &Path) -> Result<()> {
    let mut curves = Vec::new();
    for r in rows.iter().filter(|r| has_losses(r)) {
        let sample = MembershipSample::new(r.member_losses.clone(), r.non_member_losses.clone())?;
        let roc = Roc::new(&sample);
        let pts: Vec<(f64, f64)> = roc.curve().iter().map(|p| (p.fpr, p.tpr)).collect();
        curves.push((r.scheme.as_str(), roc.n_members(), roc.n_non_members(), pts));
    }
    if curves.is_empty() {
        return Err(Error::TooFewSamples {
            what: "rows with per-sample member and non-member losses",
            needed: 1,
            got: 0,
        });
    }
    let n = curves
        .iter()
        .map(|c| c.1.max(c.2))
        .max()
        .unwrap_or(1)
        .max(2);
    // Start the axes at the decade at or below 1/n (a hair lower, so that rounding in the
    // log mapping cannot drop the decade's tick): every decade then gets a labelled tick.
    let lo = 10f64.powf((1.0 / n as f64).log10().floor()) * (1.0 - 1e-9);
    let fail = draw_error(path);

    let root = SVGBackend::new(path, (900, 760)).into_drawing_area();
    root.fill(&WHITE).map_err(&fail)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Loss-threshold attack ROC (log-log)", ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(75)
        .build_cartesian_2d((lo..1.0).log_scale(), (lo..1.0).log_scale())
        .map_err(&fail)?;
    chart
        .configure_mesh()
        .x_desc("false positive rate (non-members flagged), log scale")
        .y_desc("true positive rate (members flagged), log scale")
        .x_label_formatter(&|v| format_tick(*v))
        .y_label_formatter(&|v| format_tick(*v))
        .draw()
        .map_err(&fail)?;
    let chance = BLACK.mix(0.5).stroke_width(1);
    chart
        .draw_series(LineSeries::new([(lo, lo), (1.0, 1.0)], chance))
        .map_err(&fail)?
        .label("chance (TPR = FPR)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], chance));
    for (k, (scheme, _, _, pts)) in curves.into_iter().enumerate() {
        let color = Palette99::pick(k).stroke_width(2);
        let clamped = pts.into_iter().map(|(x, y)| (x.max(lo), y.max(lo)));
        chart
            .draw_series(LineSeries::new(clamped, color))
            .map_err(&fail)?
            .label(scheme)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(&fail)?;
    root.present().map_err(&fail)
}

/// Fraction of `values` in each of `bins` equal bins over `[lo, hi]` (the last bin closed;
/// values outside are not counted).
pub fn histogram(values: &[f64], lo: f64, hi: f64, bins: usize) -> Vec<f64> {
    if bins == 0 {
        return Vec::new();
    }
    let mut counts = vec![0usize; bins];
    let width = (hi - lo) / bins as f64;
    for &v in values {
        if !(lo..=hi).contains(&v) {
            continue;
        }
        // Rounding can put `hi` (or a value just below it) one past the end: clamp.
        let b = (((v - lo) / width) as usize).min(bins - 1);
        counts[b] += 1;
    }
    let n = values.len().max(1) as f64;
    counts.into_iter().map(|c| c as f64 / n).collect()
}

/// Writes member vs non-member loss histograms to `path` as SVG, one small panel per row with
/// per-sample losses (three panels a line), both sides over the same `bins` bins.
///
/// Errors: `bins == 0` ([`Error::InvalidParameter`]), no row with losses
/// ([`Error::TooFewSamples`]), non-finite losses ([`Error::NonFinite`]), or a file that
/// cannot be written ([`Error::Io`]).
pub fn losses_svg(rows: &[AuditRow], bins: usize, path: &Path) -> Result<()> {
    if bins == 0 {
        return Err(Error::InvalidParameter {
            name: "histogram_bins",
            reason: "need at least one bin".into(),
        });
    }
    let rows: Vec<&AuditRow> = rows.iter().filter(|r| has_losses(r)).collect();
    if rows.is_empty() {
        return Err(Error::TooFewSamples {
            what: "rows with per-sample member and non-member losses",
            needed: 1,
            got: 0,
        });
    }
    for r in &rows {
        r.check_finite()?;
    }
    let cols = rows.len().min(3);
    let lines = rows.len().div_ceil(cols);
    let fail = draw_error(path);
    let size = (cols as u32 * 400, lines as u32 * 320 + 50);
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(&fail)?;
    let body = root
        .titled(
            "Per-sample loss: members (blue) vs non-members (red)",
            ("sans-serif", 22),
        )
        .map_err(&fail)?;
    for (panel, r) in body.split_evenly((lines, cols)).iter().zip(&rows) {
        loss_panel(panel, r, bins, &fail)?;
    }
    root.present().map_err(&fail)
}

fn loss_panel<F>(
    panel: &DrawingArea<SVGBackend<'_>, Shift>,
    r: &AuditRow,
    bins: usize,
    fail: &F,
) -> Result<()>
where
    F: Fn(DrawingAreaErrorKind<std::io::Error>) -> Error,
{
    let all = r.member_losses.iter().chain(&r.non_member_losses).copied();
    let (lo, hi) = min_max(all);
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, hi + 0.5)
    };
    let m = histogram(&r.member_losses, lo, hi, bins);
    let nm = histogram(&r.non_member_losses, lo, hi, bins);
    let top = m.iter().chain(&nm).fold(0f64, |a, &b| a.max(b)) * 1.1;
    let width = (hi - lo) / bins as f64;
    let mut chart = ChartBuilder::on(panel)
        .caption(r.scheme.clone(), ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(lo..hi, 0.0..top.max(1e-9))
        .map_err(fail)?;
    chart
        .configure_mesh()
        .x_desc("per-sample loss")
        .y_desc("fraction of samples")
        .x_labels(5)
        .y_labels(5)
        .x_label_formatter(&|v| format_tick(*v))
        .y_label_formatter(&|v| format_tick(*v))
        .draw()
        .map_err(fail)?;
    for (fractions, color) in [(&m, BLUE), (&nm, RED)] {
        chart
            .draw_series(fractions.iter().enumerate().map(|(b, &f)| {
                let x = lo + b as f64 * width;
                Rectangle::new([(x, 0.0), (x + width, f)], color.mix(0.35).filled())
            }))
            .map_err(fail)?;
    }
    Ok(())
}

fn kind_color(kind: RowKind) -> RGBColor {
    match kind {
        RowKind::FullPrecision => BLACK,
        RowKind::Quantizer => RGBColor(31, 119, 180),
        RowKind::Perturbation => RGBColor(255, 127, 14),
    }
}

fn kind_label(kind: RowKind) -> &'static str {
    match kind {
        RowKind::FullPrecision => "full precision",
        RowKind::Quantizer => "quantizer",
        RowKind::Perturbation => "perturbation",
    }
}

fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// The range of `values` widened by 8 % on each side (or by 0.05 around a single value), so
/// that points do not sit on the frame.
fn padded(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = min_max(values);
    let pad = if hi > lo { (hi - lo) * 0.08 } else { 0.05 };
    (lo - pad, hi + pad)
}

/// A tick label with at most 9 decimals and no float noise: 0.01, not 0.010000000000000002.
fn format_tick(v: f64) -> String {
    let r = (v * 1e9).round() / 1e9;
    if r == 0.0 { "0".into() } else { r.to_string() }
}

/// Maps a plotters error to [`Error::Io`] naming the file.
fn draw_error<E: Display>(path: &Path) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(format!("drawing the plot: {e}")),
    }
}
