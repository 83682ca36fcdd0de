//! Column selection, imputation and standardisation, fitted on the training members only.

use crate::data::tabular::TabularData;
use crate::error::{Error, Result};

/// Options of [`Standardizer::fit_with`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct StandardizeOptions {
    /// Drop a feature missing in more than this fraction of the fitting rows (default 0.01).
    pub max_missing_fraction: f64,
    /// Drop features that are constant on the fitting rows (default true): they carry no
    /// information, and their standard deviation is zero.
    pub drop_constant: bool,
    /// Clip standardised values to `±clip` (default `None`). Heavy-tailed descriptors put
    /// unseen rows tens of standard deviations out; clipping keeps one feature from
    /// dominating a non-member's logits.
    pub clip: Option<f32>,
}

impl Default for StandardizeOptions {
    fn default() -> Self {
        StandardizeOptions {
            max_missing_fraction: 0.01,
            drop_constant: true,
            clip: None,
        }
    }
}

impl StandardizeOptions {
    /// Clip standardised values to `±limit`.
    pub fn clip(mut self, limit: f32) -> Self {
        self.clip = Some(limit);
        self
    }

    /// Keep (`false`) or drop (`true`, the default) features constant on the fitting rows; a
    /// kept constant feature standardises to 0. Keep them when the input width matters, e.g.
    /// for group quantization of the first layer.
    pub fn drop_constant(mut self, drop: bool) -> Self {
        self.drop_constant = drop;
        self
    }

    /// Drop features missing in more than `fraction` of the fitting rows.
    pub fn max_missing_fraction(mut self, fraction: f64) -> Self {
        self.max_missing_fraction = fraction;
        self
    }
}

/// Feature preprocessing whose statistics come from the fitting rows alone.
///
/// Fitted on the training members: (1) features missing in more than
/// [`max_missing_fraction`](StandardizeOptions::max_missing_fraction) of them are dropped —
/// in B3DB these are whole descriptor families Mordred could not compute for many molecules,
/// and imputing a column that is mostly made up would only add noise; (2) the remaining
/// missing cells are imputed with the members' median, robust to the heavy tails of molecular
/// descriptors; (3) constant features are dropped; (4) each kept feature is shifted and scaled
/// to zero mean and unit variance *on the members*.
///
/// Using only the members matters for membership inference: statistics that saw the
/// non-members would leak information about them into the model's inputs.
///
/// ```
/// use quantlens::data::{Standardizer, digits};
/// let data = digits()?;
/// let members: Vec<usize> = (0..900).collect();
/// let s = Standardizer::fit(&data, &members)?;
/// let z = s.transform(&data)?;
/// assert_eq!(z.n_features(), s.kept_features().len());
/// assert!(z.n_features() < 64); // always-blank corner pixels are dropped
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    kept: Vec<usize>,
    median: Vec<f32>,
    mean: Vec<f64>,
    std: Vec<f64>,
    options: StandardizeOptions,
}

impl Standardizer {
    /// Fit with the default options.
    pub fn fit(data: &TabularData, rows: &[usize]) -> Result<Self> {
        Standardizer::fit_with(data, rows, StandardizeOptions::default())
    }

    /// Fit on `rows` of `data` (the training members).
    pub fn fit_with(
        data: &TabularData,
        rows: &[usize],
        options: StandardizeOptions,
    ) -> Result<Self> {
        if rows.len() < 2 {
            return Err(Error::TooFewSamples {
                what: "standardizer fitting rows",
                needed: 2,
                got: rows.len(),
            });
        }
        if let Some(&bad) = rows.iter().find(|&&r| r >= data.len()) {
            return Err(Error::InvalidParameter {
                name: "rows",
                reason: format!("row {bad} out of range for {} rows", data.len()),
            });
        }
        if !(0.0..=1.0).contains(&options.max_missing_fraction) {
            return Err(Error::InvalidParameter {
                name: "max_missing_fraction",
                reason: format!("must lie in [0, 1], got {}", options.max_missing_fraction),
            });
        }
        if let Some(c) = options.clip
            && !(c.is_finite() && c > 0.0)
        {
            return Err(Error::InvalidParameter {
                name: "clip",
                reason: format!("must be finite and > 0, got {c}"),
            });
        }
        let d = data.n_features();
        let (mut kept, mut median, mut mean, mut std) = (vec![], vec![], vec![], vec![]);
        let mut column = Vec::with_capacity(rows.len());
        for j in 0..d {
            column.clear();
            column.extend(
                rows.iter()
                    .map(|&r| data.row(r)[j])
                    .filter(|v| v.is_finite()),
            );
            let missing = rows.len() - column.len();
            if missing as f64 > options.max_missing_fraction * rows.len() as f64
                || column.is_empty()
            {
                continue;
            }
            column.sort_by(f32::total_cmp);
            let mid = column.len() / 2;
            let med = if column.len() % 2 == 1 {
                column[mid]
            } else {
                ((column[mid - 1] as f64 + column[mid] as f64) / 2.0) as f32
            };
            // Moments in f64 of the imputed column: descriptors reach 1e11, whose squares
            // overflow f32.
            let n = rows.len() as f64;
            let sum: f64 =
                column.iter().map(|&v| v as f64).sum::<f64>() + missing as f64 * med as f64;
            let mu = sum / n;
            let ss: f64 = column.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>()
                + missing as f64 * (med as f64 - mu).powi(2);
            let sd = (ss / n).sqrt();
            if options.drop_constant && sd <= f64::EPSILON * mu.abs().max(1.0) {
                continue;
            }
            kept.push(j);
            median.push(med);
            mean.push(mu);
            std.push(if sd > 0.0 { sd } else { 1.0 });
        }
        if kept.is_empty() {
            return Err(Error::InvalidParameter {
                name: "features",
                reason: "every feature was dropped (too many missing values or constant)".into(),
            });
        }
        Ok(Standardizer {
            kept,
            median,
            mean,
            std,
            options,
        })
    }

    /// Indices (into the original table) of the features kept.
    pub fn kept_features(&self) -> &[usize] {
        &self.kept
    }

    /// Per kept feature: the imputation median, mean and standard deviation on the members.
    pub fn statistics(&self) -> (&[f32], &[f64], &[f64]) {
        (&self.median, &self.mean, &self.std)
    }

    /// Apply to every row of `data` (which must have the fitted table's columns): keep,
    /// impute, standardise (and clip).
    pub fn transform(&self, data: &TabularData) -> Result<TabularData> {
        let d = data.n_features();
        if let Some(&last) = self.kept.last()
            && last >= d
        {
            return Err(Error::ShapeMismatch(format!(
                "standardizer fitted on ≥ {} features, table has {d}",
                last + 1
            )));
        }
        let mut features = Vec::with_capacity(data.len() * self.kept.len());
        for i in 0..data.len() {
            let row = data.row(i);
            for (k, &j) in self.kept.iter().enumerate() {
                let v = if row[j].is_finite() {
                    row[j]
                } else {
                    self.median[k]
                };
                let mut z = ((v as f64 - self.mean[k]) / self.std[k]) as f32;
                if let Some(c) = self.options.clip {
                    z = z.clamp(-c, c);
                }
                features.push(z);
            }
        }
        let names = self
            .kept
            .iter()
            .map(|&j| data.feature_names()[j].clone())
            .collect();
        let out = TabularData::new(data.name(), features, names, data.target().clone())?;
        match data.groups() {
            Some(g) => out.with_groups(g.clone()),
            None => Ok(out),
        }
    }
}
