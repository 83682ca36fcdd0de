//! The small real tables that ship inside the scikit-learn wheel: digits (embedded in this
//! crate), breast cancer and wine (from the fixture cache).

use std::io::Read;
use std::path::Path;

use crate::data::fixtures::{fixture_path, read_text};
use crate::data::tabular::{TabularData, Target};
use crate::error::{Error, Result};

/// UCI optical digits as shipped in scikit-learn 1.5.2 (`sklearn/datasets/data/digits.csv.gz`,
/// CC BY 4.0, SHA-256 `09f66e6d…aa22`): 57 KB, compiled into the crate.
const DIGITS_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");

/// The 1,797 UCI handwritten digits: 64 pixel counts in `0..=16` (8×8), 10 classes. Embedded,
/// so it needs no download. Features are the raw counts; standardise them with a
/// [`Standardizer`](super::Standardizer) fitted on the training members.
pub fn digits() -> Result<TabularData> {
    let mut csv = String::new();
    flate2::read::GzDecoder::new(DIGITS_GZ)
        .read_to_string(&mut csv)
        .map_err(|e| Error::Parse {
            path: "embedded digits.csv.gz".into(),
            line: 0,
            reason: e.to_string(),
        })?;
    let names = (0..10).map(|d| d.to_string()).collect();
    parse_labelled_csv("digits", "embedded digits.csv.gz", &csv, false, names)
}

/// Wisconsin diagnostic breast cancer: 569 rows, 30 features, classes malignant / benign
/// (`breast_cancer.csv` from the fixture cache).
pub fn breast_cancer() -> Result<TabularData> {
    load_sklearn_csv(&fixture_path("sklearn/breast_cancer.csv")?)
}

/// Wine recognition: 178 rows, 13 features, 3 cultivars (`wine_data.csv` from the fixture
/// cache).
pub fn wine() -> Result<TabularData> {
    load_sklearn_csv(&fixture_path("sklearn/wine_data.csv")?)
}

/// A scikit-learn data CSV with its one-line header `n_samples,n_features,class names…`,
/// then one row per sample: features, then the integer label.
pub fn load_sklearn_csv(path: &Path) -> Result<TabularData> {
    let text = read_text(path)?;
    let shown = path.display().to_string();
    let header = text.lines().next().ok_or_else(|| Error::Parse {
        path: shown.clone(),
        line: 1,
        reason: "empty file".into(),
    })?;
    let fields: Vec<&str> = header.split(',').map(str::trim).collect();
    let parse_count = |i: usize| -> Result<usize> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| Error::Parse {
                path: shown.clone(),
                line: 1,
                reason: format!("header {header:?} is not `n_samples,n_features,classes…`"),
            })
    };
    let (rows, cols) = (parse_count(0)?, parse_count(1)?);
    let class_names = fields[2..].iter().map(|s| s.to_string()).collect();
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().trim_end_matches("_data").to_string())
        .unwrap_or_default();
    let data = parse_labelled_csv(&name, &shown, &text, true, class_names)?;
    if data.len() != rows || data.n_features() != cols {
        return Err(Error::Parse {
            path: shown,
            line: 1,
            reason: format!(
                "header promises {rows}×{cols}, body has {}×{}",
                data.len(),
                data.n_features()
            ),
        });
    }
    Ok(data)
}

/// Rows of `features…,label`.
fn parse_labelled_csv(
    name: &str,
    path: &str,
    text: &str,
    skip_header: bool,
    class_names: Vec<String>,
) -> Result<TabularData> {
    let mut features = Vec::new();
    let mut labels = Vec::new();
    let mut width = None;
    for (i, line) in text.lines().enumerate().skip(skip_header as usize) {
        if line.trim().is_empty() {
            continue;
        }
        let err = |reason: String| Error::Parse {
            path: path.to_string(),
            line: i + 1,
            reason,
        };
        let values: Vec<&str> = line.split(',').map(str::trim).collect();
        if *width.get_or_insert(values.len()) != values.len() || values.len() < 2 {
            return Err(err(format!(
                "{} fields, expected {:?}",
                values.len(),
                width
            )));
        }
        for v in &values[..values.len() - 1] {
            features.push(
                v.parse::<f32>()
                    .map_err(|_| err(format!("{v:?} is not a number")))?,
            );
        }
        let label = values[values.len() - 1];
        let label = label
            .parse::<f32>()
            .ok()
            .filter(|l| l.fract() == 0.0 && *l >= 0.0 && (*l as usize) < class_names.len())
            .ok_or_else(|| err(format!("label {label:?} is not a class index")))?;
        labels.push(label as u32);
    }
    let d = width.map_or(0, |w| w - 1);
    let feature_names = (0..d).map(|j| format!("x{j}")).collect();
    TabularData::new(
        name,
        features,
        feature_names,
        Target::Classes {
            labels,
            names: class_names,
        },
    )
}
