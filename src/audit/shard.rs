//! Splitting an audit plan over several processes ([`Shard`]), merging their partial reports
//! ([`AuditReport::merge`]) and resuming an interrupted run ([`AuditReport::missing_rows`]).
//!
//! Rows are dealt round-robin (row `r` goes to shard `r mod n`), so neighbouring plan entries —
//! often the same scheme at neighbouring bit widths, of similar cost — land on different
//! shards and the shards finish at about the same time.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

use super::report::AuditReport;

/// One of `count` shards of an audit plan, written `"i/n"` with a **1-based** `i`
/// (`"1/3"`, `"2/3"`, `"3/3"`), as on a command line.
///
/// ```
/// use quantlens::audit::Shard;
///
/// let s: Shard = "2/3".parse()?;
/// assert_eq!((s.index(), s.count()), (2, 3));
/// // Round-robin: shard 2 of 3 takes plan rows 1, 4, 7, …
/// assert_eq!(s.indices(10), vec![1, 4, 7]);
/// assert!("0/3".parse::<Shard>().is_err());
/// assert!("4/3".parse::<Shard>().is_err());
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    /// 1-based.
    index: usize,
    count: usize,
}

impl Shard {
    /// Shard `index` (1-based) of `count`.
    ///
    /// Errors ([`Error::InvalidParameter`]): `count == 0`, or `index` outside `1..=count`.
    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 {
            return Err(Error::InvalidParameter {
                name: "shard",
                reason: "the shard count must be at least 1".into(),
            });
        }
        if index == 0 || index > count {
            return Err(Error::InvalidParameter {
                name: "shard",
                reason: format!(
                    "shard index {index} is outside 1..={count} (shards are numbered from 1)"
                ),
            });
        }
        Ok(Shard { index, count })
    }

    /// The whole plan as one shard, `1/1`.
    pub fn whole() -> Self {
        Shard { index: 1, count: 1 }
    }

    /// The shard's 1-based index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The number of shards.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether plan row `row_index` (0-based) belongs to this shard: `row_index mod count ==
    /// index − 1`.
    pub fn selects(&self, row_index: usize) -> bool {
        row_index % self.count == self.index - 1
    }

    /// The plan rows of this shard, for a plan of `plan_len` rows, in increasing order.
    pub fn indices(&self, plan_len: usize) -> Vec<usize> {
        (self.index - 1..plan_len).step_by(self.count).collect()
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = Error;

    /// Parses `"i/n"` (surrounding spaces allowed) with a 1-based `i`.
    ///
    /// Errors ([`Error::InvalidParameter`]): no `/`, a part that is not a non-negative
    /// integer, `n = 0`, or `i` outside `1..=n`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::InvalidParameter {
            name: "shard",
            reason: format!("{s:?} {why}; expected \"i/n\" with 1 ≤ i ≤ n, e.g. \"2/4\""),
        };
        let (i, n) = s.trim().split_once('/').ok_or_else(|| bad("has no '/'"))?;
        let i: usize = i
            .trim()
            .parse()
            .map_err(|_| bad("has a shard index that is not a non-negative integer"))?;
        let n: usize = n
            .trim()
            .parse()
            .map_err(|_| bad("has a shard count that is not a non-negative integer"))?;
        Shard::new(i, n)
    }
}

impl AuditReport {
    /// Combines partial reports of one plan (shards, or the pieces of an interrupted run)
    /// into one, rows sorted by index. The result is the report an unsharded run would have
    /// written: its JSON is byte-identical, whatever the order of `parts`.
    ///
    /// Errors ([`Error::InvalidParameter`]): no part, parts of different schema versions or
    /// provenance (different seeds, data, model, crate version, …), or two rows with the
    /// same index.
    ///
    /// ```
    /// use quantlens::audit::{AuditReport, AuditRow, Provenance, RowKind, Shard};
    ///
    /// let plan = ["fp32", "int8", "int4", "nf4"];
    /// let part = |shard: Shard| {
    ///     let mut r = AuditReport::new(Provenance::new("toy"));
    ///     for i in shard.indices(plan.len()) {
    ///         r.push(AuditRow::new(i, plan[i], RowKind::Quantizer))?;
    ///     }
    ///     Ok::<_, quantlens::Error>(r)
    /// };
    /// let merged = AuditReport::merge([part("2/2".parse()?)?, part("1/2".parse()?)?])?;
    /// assert_eq!(merged.completed_indices(), vec![0, 1, 2, 3]);
    /// assert!(merged.missing_rows(4).is_empty());
    /// # Ok::<(), quantlens::Error>(())
    /// ```
    pub fn merge(parts: impl IntoIterator<Item = AuditReport>) -> Result<AuditReport> {
        let mut parts = parts.into_iter();
        let mut merged = parts.next().ok_or_else(|| Error::InvalidParameter {
            name: "parts",
            reason: "nothing to merge: no partial report given".into(),
        })?;
        for (k, part) in parts.enumerate() {
            if part.schema_version != merged.schema_version {
                return Err(Error::InvalidParameter {
                    name: "parts",
                    reason: format!(
                        "part {} has schema version {}, part 0 has {}",
                        k + 1,
                        part.schema_version,
                        merged.schema_version
                    ),
                });
            }
            if part.provenance != merged.provenance {
                return Err(Error::InvalidParameter {
                    name: "parts",
                    reason: format!(
                        "part {} has a different provenance from part 0 (model, seeds, split, hashes, version or notes differ): they are not shards of one audit",
                        k + 1
                    ),
                });
            }
            merged.rows.extend(part.rows);
        }
        // Stable sort, then any equal neighbours are duplicates.
        merged.rows.sort_by_key(|r| r.index);
        if let Some(w) = merged.rows.windows(2).find(|w| w[0].index == w[1].index) {
            return Err(Error::InvalidParameter {
                name: "parts",
                reason: format!(
                    "row {} ({:?} and {:?}) appears more than once",
                    w[0].index, w[0].scheme, w[1].scheme
                ),
            });
        }
        Ok(merged)
    }

    /// The plan indices of the rows this report has, increasing.
    pub fn completed_indices(&self) -> Vec<usize> {
        let set: BTreeSet<usize> = self.rows.iter().map(|r| r.index).collect();
        set.into_iter().collect()
    }

    /// The plan indices in `0..plan_len` this report has no row for, increasing: what a
    /// resumed run still has to compute.
    pub fn missing_rows(&self, plan_len: usize) -> Vec<usize> {
        let done: BTreeSet<usize> = self.rows.iter().map(|r| r.index).collect();
        (0..plan_len).filter(|i| !done.contains(i)).collect()
    }
}
