//! B3DB blood–brain-barrier permeability data (Meng et al. 2021, CC0-1.0), with the 1,613
//! Mordred 2-D descriptors of its "extended" files, so no SMILES parsing is needed.

use std::borrow::Cow;
use std::path::Path;

use crate::data::fixtures::{fixture_path, read_text};
use crate::data::tabular::{Groups, TabularData, Target};
use crate::error::{Error, Result};

/// Metadata columns before the descriptors in the extended files.
const CLASSIFICATION_META: usize = 12;

/// B3DB classification: 7,807 molecules, BBB+ (label 1) / BBB− (label 0), 1,613 descriptors
/// with missing values as NaN, and the data-quality group (A–D) as [`Groups`]. From the
/// fixture cache (`b3db/B3DB_classification_extended.tsv.gz`).
pub fn b3db_classification() -> Result<TabularData> {
    load_b3db_classification(&fixture_path("b3db/B3DB_classification_extended.tsv.gz")?)
}

/// B3DB regression: 1,058 molecules with a numeric logBB target and the same descriptors.
/// From the fixture cache (`b3db/B3DB_regression_extended.tsv.gz`).
pub fn b3db_regression() -> Result<TabularData> {
    load_b3db_regression(&fixture_path("b3db/B3DB_regression_extended.tsv.gz")?)
}

/// Parse a B3DB classification file (plain or gzipped TSV) with descriptor columns.
pub fn load_b3db_classification(path: &Path) -> Result<TabularData> {
    let text = read_text(path)?;
    let table = Tsv::parse(path.display().to_string(), &text)?;
    let label = table.column("BBB+/BBB-")?;
    let group = table.column("group")?;
    let first = table.first_descriptor(CLASSIFICATION_META)?;
    let mut labels = Vec::with_capacity(table.rows.len());
    let mut group_names: Vec<String> = Vec::new();
    let mut group_ids = Vec::with_capacity(table.rows.len());
    for (i, row) in table.rows.iter().enumerate() {
        labels.push(match row[label].as_ref() {
            "BBB+" => 1,
            "BBB-" => 0,
            other => {
                return Err(table.error(i, format!("label {other:?} is neither BBB+ nor BBB-")));
            }
        });
        let g = row[group].to_string();
        let id = match group_names.iter().position(|n| *n == g) {
            Some(id) => id,
            None => {
                group_names.push(g);
                group_names.len() - 1
            }
        };
        group_ids.push(id as u32);
    }
    // Name groups in sorted order so ids do not depend on row order.
    let mut sorted = group_names.clone();
    sorted.sort();
    let remap: Vec<u32> = group_names
        .iter()
        .map(|n| sorted.iter().position(|s| s == n).unwrap_or(0) as u32)
        .collect();
    let group_ids = group_ids.iter().map(|&g| remap[g as usize]).collect();
    let (features, names) = table.descriptors(first)?;
    TabularData::new(
        "b3db-classification",
        features,
        names,
        Target::Classes {
            labels,
            names: vec!["BBB-".into(), "BBB+".into()],
        },
    )?
    .with_groups(Groups {
        ids: group_ids,
        names: sorted,
    })
}

/// Parse a B3DB regression file (plain or gzipped TSV) with descriptor columns.
pub fn load_b3db_regression(path: &Path) -> Result<TabularData> {
    let text = read_text(path)?;
    let table = Tsv::parse(path.display().to_string(), &text)?;
    let target = table.column("logBB")?;
    // The regression file has fewer metadata columns; descriptors start after the last one.
    let first = table.column("ABC")?;
    let mut values = Vec::with_capacity(table.rows.len());
    for (i, row) in table.rows.iter().enumerate() {
        values.push(
            row[target]
                .parse::<f32>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    table.error(i, format!("logBB {:?} is not a number", row[target]))
                })?,
        );
    }
    let (features, names) = table.descriptors(first)?;
    TabularData::new("b3db-regression", features, names, Target::Values(values))
}

struct Tsv<'a> {
    path: String,
    header: Vec<Cow<'a, str>>,
    rows: Vec<Vec<Cow<'a, str>>>,
}

/// Tab-separated records with CSV-style quoting: a field that starts with `"` runs to the
/// closing quote and may hold tabs and newlines (B3DB has compound names broken over two
/// lines), `""` inside it is a literal quote.
struct Records<'a> {
    text: &'a str,
    pos: usize,
    /// 1-based line number where the next record starts.
    line: usize,
}

impl<'a> Iterator for Records<'a> {
    type Item = Vec<Cow<'a, str>>;

    fn next(&mut self) -> Option<Self::Item> {
        let bytes = self.text.as_bytes();
        if self.pos >= bytes.len() {
            return None;
        }
        let mut fields = Vec::new();
        loop {
            if bytes.get(self.pos) == Some(&b'"') {
                let mut value = String::new();
                let mut i = self.pos + 1;
                let mut start = i;
                while i < bytes.len() {
                    if bytes[i] == b'"' {
                        value.push_str(&self.text[start..i]);
                        if bytes.get(i + 1) == Some(&b'"') {
                            value.push('"');
                            i += 2;
                            start = i;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    if bytes[i] == b'\n' {
                        self.line += 1;
                    }
                    i += 1;
                }
                if i >= bytes.len() && start < bytes.len() && bytes[bytes.len() - 1] != b'"' {
                    value.push_str(&self.text[start..]);
                }
                fields.push(Cow::Owned(value));
                self.pos = i;
            } else {
                let end = bytes[self.pos..]
                    .iter()
                    .position(|&b| b == b'\t' || b == b'\n')
                    .map_or(bytes.len(), |k| self.pos + k);
                fields.push(Cow::Borrowed(
                    self.text[self.pos..end].trim_end_matches('\r'),
                ));
                self.pos = end;
            }
            match bytes.get(self.pos) {
                Some(b'\t') => self.pos += 1,
                Some(b'\n') => {
                    self.pos += 1;
                    self.line += 1;
                    return Some(fields);
                }
                // End of text, or garbage after a closing quote: the record ends here.
                _ => {
                    if let Some(k) = bytes[self.pos.min(bytes.len())..]
                        .iter()
                        .position(|&b| b == b'\n')
                    {
                        self.pos += k + 1;
                        self.line += 1;
                    } else {
                        self.pos = bytes.len();
                    }
                    return Some(fields);
                }
            }
        }
    }
}

impl<'a> Tsv<'a> {
    fn parse(path: String, text: &'a str) -> Result<Tsv<'a>> {
        let mut records = Records {
            text,
            pos: 0,
            line: 1,
        };
        let header: Vec<Cow<'a, str>> = records.next().ok_or_else(|| Error::Parse {
            path: path.clone(),
            line: 1,
            reason: "empty file".into(),
        })?;
        let mut rows = Vec::new();
        loop {
            let line = records.line;
            let Some(row) = records.next() else { break };
            if row.len() == 1 && row[0].is_empty() {
                continue;
            }
            if row.len() != header.len() {
                return Err(Error::Parse {
                    path,
                    line,
                    reason: format!("{} fields, header has {}", row.len(), header.len()),
                });
            }
            rows.push(row);
        }
        Ok(Tsv { path, header, rows })
    }

    fn column(&self, name: &str) -> Result<usize> {
        self.header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| Error::Parse {
                path: self.path.clone(),
                line: 1,
                reason: format!("no column {name:?}"),
            })
    }

    fn first_descriptor(&self, meta: usize) -> Result<usize> {
        if self.header.len() <= meta {
            return Err(Error::Parse {
                path: self.path.clone(),
                line: 1,
                reason: format!(
                    "{} columns: not an extended file with descriptors",
                    self.header.len()
                ),
            });
        }
        Ok(meta)
    }

    fn error(&self, row: usize, reason: String) -> Error {
        Error::Parse {
            path: self.path.clone(),
            line: row + 2,
            reason,
        }
    }

    /// Descriptor columns `first..` as row-major f32; empty or non-numeric cells (and values
    /// beyond f32's range) become NaN = missing.
    fn descriptors(&self, first: usize) -> Result<(Vec<f32>, Vec<String>)> {
        let names: Vec<String> = self.header[first..].iter().map(|s| s.to_string()).collect();
        let mut features = Vec::with_capacity(self.rows.len() * names.len());
        for row in &self.rows {
            features.extend(row[first..].iter().map(|cell| {
                cell.parse::<f32>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .unwrap_or(f32::NAN)
            }));
        }
        Ok((features, names))
    }
}
