//! An in-memory table of numeric features with a class or regression target.

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

/// What is predicted.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Class labels `0..names.len()`.
    Classes {
        /// One label per row.
        labels: Vec<u32>,
        /// Class names, indexed by label.
        names: Vec<String>,
    },
    /// A real-valued target per row.
    Values(Vec<f32>),
}

/// A categorical attribute per row (e.g. B3DB's data-quality group), for sliced metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Groups {
    /// One group id per row.
    pub ids: Vec<u32>,
    /// Group names, indexed by id.
    pub names: Vec<String>,
}

/// Rows of `f32` features (NaN marks a missing value) with a target.
///
/// ```
/// let digits = quantlens::data::digits()?;
/// assert_eq!((digits.len(), digits.n_features()), (1797, 64));
/// assert_eq!(digits.n_classes(), Some(10));
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TabularData {
    name: String,
    features: Vec<f32>,
    feature_names: Vec<String>,
    target: Target,
    groups: Option<Groups>,
}

impl TabularData {
    /// Assemble a table from row-major `features` (`rows × feature_names.len()`).
    pub fn new(
        name: impl Into<String>,
        features: Vec<f32>,
        feature_names: Vec<String>,
        target: Target,
    ) -> Result<Self> {
        let d = feature_names.len();
        let rows = match &target {
            Target::Classes { labels, names } => {
                if let Some(&bad) = labels.iter().find(|&&l| l as usize >= names.len()) {
                    return Err(Error::InvalidParameter {
                        name: "labels",
                        reason: format!("label {bad} but only {} class names", names.len()),
                    });
                }
                labels.len()
            }
            Target::Values(v) => v.len(),
        };
        if d == 0 || features.len() != rows * d {
            return Err(Error::ShapeMismatch(format!(
                "{} feature values for {rows} rows × {d} features",
                features.len()
            )));
        }
        Ok(TabularData {
            name: name.into(),
            features,
            feature_names,
            target,
            groups: None,
        })
    }

    /// Attach a group id per row.
    pub fn with_groups(mut self, groups: Groups) -> Result<Self> {
        if groups.ids.len() != self.len() {
            return Err(Error::ShapeMismatch(format!(
                "{} group ids for {} rows",
                groups.ids.len(),
                self.len()
            )));
        }
        if let Some(&bad) = groups
            .ids
            .iter()
            .find(|&&g| g as usize >= groups.names.len())
        {
            return Err(Error::InvalidParameter {
                name: "groups",
                reason: format!("group id {bad} but only {} names", groups.names.len()),
            });
        }
        self.groups = Some(groups);
        Ok(self)
    }

    /// The data set's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.features.len() / self.feature_names.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }

    /// Number of features per row.
    pub fn n_features(&self) -> usize {
        self.feature_names.len()
    }

    /// Feature names.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    /// Row-major features; NaN marks a missing value.
    pub fn features(&self) -> &[f32] {
        &self.features
    }

    /// One row's features.
    pub fn row(&self, i: usize) -> &[f32] {
        let d = self.n_features();
        &self.features[i * d..(i + 1) * d]
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Class labels, for a classification table.
    pub fn labels(&self) -> Option<&[u32]> {
        match &self.target {
            Target::Classes { labels, .. } => Some(labels),
            Target::Values(_) => None,
        }
    }

    /// Number of classes, for a classification table.
    pub fn n_classes(&self) -> Option<usize> {
        match &self.target {
            Target::Classes { names, .. } => Some(names.len()),
            Target::Values(_) => None,
        }
    }

    /// The per-row groups, if any.
    pub fn groups(&self) -> Option<&Groups> {
        self.groups.as_ref()
    }

    /// Number of missing (NaN) feature values.
    pub fn missing_values(&self) -> usize {
        self.features.iter().filter(|v| v.is_nan()).count()
    }

    /// The rows `rows`, in that order.
    pub fn select(&self, rows: &[usize]) -> Result<TabularData> {
        let n = self.len();
        if let Some(&bad) = rows.iter().find(|&&r| r >= n) {
            return Err(Error::InvalidParameter {
                name: "rows",
                reason: format!("row {bad} out of range for {n} rows"),
            });
        }
        let features = rows.iter().flat_map(|&r| self.row(r)).copied().collect();
        let target = match &self.target {
            Target::Classes { labels, names } => Target::Classes {
                labels: rows.iter().map(|&r| labels[r]).collect(),
                names: names.clone(),
            },
            Target::Values(v) => Target::Values(rows.iter().map(|&r| v[r]).collect()),
        };
        let groups = self.groups.as_ref().map(|g| Groups {
            ids: rows.iter().map(|&r| g.ids[r]).collect(),
            names: g.names.clone(),
        });
        Ok(TabularData {
            name: self.name.clone(),
            features,
            feature_names: self.feature_names.clone(),
            target,
            groups,
        })
    }

    /// Features `[rows, n_features]` (f32) and targets (`u32` labels `[rows]`, or f32 values
    /// `[rows]`) on `device`. Missing values must have been imputed first
    /// ([`Standardizer`](super::Standardizer)).
    pub fn to_tensors(&self, device: &Device) -> Result<(Tensor, Tensor)> {
        let missing = self.missing_values();
        if missing > 0 {
            return Err(Error::NonFinite {
                what: "features (missing values: impute them with a Standardizer first)",
                count: missing,
                first_index: self.features.iter().position(|v| v.is_nan()).unwrap_or(0),
            });
        }
        if let Some(i) = self.features.iter().position(|v| v.is_infinite()) {
            return Err(Error::NonFinite {
                what: "features",
                count: self.features.iter().filter(|v| v.is_infinite()).count(),
                first_index: i,
            });
        }
        let x = Tensor::from_slice(&self.features, (self.len(), self.n_features()), device)?;
        let y = match &self.target {
            Target::Classes { labels, .. } => Tensor::from_slice(labels, labels.len(), device)?,
            Target::Values(v) => Tensor::from_slice(v, v.len(), device)?,
        };
        Ok((x, y))
    }
}
