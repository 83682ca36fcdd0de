//! Level tables for codebook formats: codes index a small table of levels, which each group
//! multiplies by its scale.

use half::f16;

use crate::error::{Error, Result};

/// How a codebook's levels are stored, which sets what they cost in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LevelStorage {
    /// Fixed by the format itself (NF4's published levels, a companding curve's closed form):
    /// a reader rebuilds them from the format's name, so they cost no bytes per tensor.
    Implicit,
    /// Fitted levels stored as IEEE half (what SqueezeLLM-style checkpoints store).
    F16,
    /// Fitted levels stored as f32.
    F32,
}

impl LevelStorage {
    /// Bytes per stored level.
    pub fn size_in_bytes(&self) -> usize {
        match self {
            LevelStorage::Implicit => 0,
            LevelStorage::F16 => 2,
            LevelStorage::F32 => 4,
        }
    }
}

/// One or more tables of `table_len` levels each.
///
/// A tensor with `T` tables and `G` groups (scales) gives each table to `G / T` consecutive
/// groups: one table for the whole tensor, one per output row with finer scale groups inside
/// it, or one per group.
///
/// ```
/// use quantlens::{Codebook, LevelStorage};
/// let cb = Codebook::new(vec![-1.0, -0.25, 0.25, 1.0], 4, LevelStorage::F16)?;
/// assert_eq!(cb.tables(), 1);
/// assert_eq!(cb.table(0), &[-1.0, -0.25, 0.25, 1.0]);
/// assert_eq!(cb.storage_bytes(), 8);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Codebook {
    levels: Vec<f32>,
    table_len: usize,
    storage: LevelStorage,
}

impl Codebook {
    /// Tables laid end to end in `levels`, `table_len` each (a power of two, 2..=256).
    ///
    /// Levels are rounded to nearest in `storage` (f16 for [`LevelStorage::F16`]) so that the
    /// table in memory is exactly what a file holds. Errors on non-finite levels, on a table
    /// length that is not a power of two, or on a level count that is not a whole number of
    /// tables.
    pub fn new(levels: Vec<f32>, table_len: usize, storage: LevelStorage) -> Result<Self> {
        if !(2..=256).contains(&table_len) || !table_len.is_power_of_two() {
            return Err(Error::InconsistentParts(format!(
                "codebook tables must have 2, 4, …, 256 levels, got {table_len}"
            )));
        }
        if levels.is_empty() || !levels.len().is_multiple_of(table_len) {
            return Err(Error::InconsistentParts(format!(
                "{} levels are not a whole number of {table_len}-level tables",
                levels.len()
            )));
        }
        let levels: Vec<f32> = match storage {
            LevelStorage::F16 => levels
                .into_iter()
                .map(|v| f16::from_f32(v).to_f32())
                .collect(),
            _ => levels,
        };
        if let Some(i) = levels.iter().position(|v| !v.is_finite()) {
            return Err(Error::InconsistentParts(format!(
                "codebook level {i} is not finite (or overflows {storage:?})"
            )));
        }
        Ok(Codebook {
            levels,
            table_len,
            storage,
        })
    }

    /// All levels, table after table.
    pub fn levels(&self) -> &[f32] {
        &self.levels
    }
    /// Levels per table (`2^bits`).
    pub fn table_len(&self) -> usize {
        self.table_len
    }
    /// Number of tables.
    pub fn tables(&self) -> usize {
        self.levels.len() / self.table_len
    }
    /// Table `t`.
    pub fn table(&self, t: usize) -> &[f32] {
        &self.levels[t * self.table_len..(t + 1) * self.table_len]
    }
    /// How the levels are stored.
    pub fn storage(&self) -> LevelStorage {
        self.storage
    }
    /// Bytes the levels occupy in a file (0 when implicit).
    pub fn storage_bytes(&self) -> usize {
        self.levels.len() * self.storage.size_in_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_tables() {
        assert!(Codebook::new(vec![0.0; 3], 3, LevelStorage::F32).is_err());
        assert!(Codebook::new(vec![0.0; 6], 4, LevelStorage::F32).is_err());
        assert!(Codebook::new(vec![0.0, f32::NAN], 2, LevelStorage::F32).is_err());
        assert!(Codebook::new(vec![0.0, 1e6], 2, LevelStorage::F16).is_err());
        assert!(Codebook::new(vec![], 2, LevelStorage::F32).is_err());
    }

    #[test]
    fn f16_levels_are_rounded_once() {
        let cb = Codebook::new(vec![0.1, 0.2], 2, LevelStorage::F16).unwrap();
        assert_eq!(
            cb.levels(),
            &[f16::from_f32(0.1).to_f32(), f16::from_f32(0.2).to_f32()]
        );
        assert_eq!(cb.storage_bytes(), 4);
        let cb = Codebook::new(vec![0.1, 0.2], 2, LevelStorage::Implicit).unwrap();
        assert_eq!(cb.storage_bytes(), 0);
    }
}

/// Nearest-level encoding against a group's decoded levels.
///
/// Built from the values the decoder will produce (`scale · level`, rounded in f32 exactly as
/// the decoder rounds them), so "nearest" holds for what a user gets back, not for an
/// idealised grid. Levels must be ascending; a code is the number of midpoints strictly below
/// the value, so ties go to the lower level. Midpoints are exact (f64 halves of f32 sums).
#[derive(Debug, Clone)]
pub(crate) struct NearestLevel {
    midpoints: Vec<f64>,
}

impl NearestLevel {
    /// For ascending decoded `levels` (codes `0..levels.len()`).
    pub(crate) fn new(levels: &[f32]) -> Self {
        debug_assert!(levels.windows(2).all(|w| w[0] <= w[1]));
        NearestLevel {
            midpoints: levels
                .windows(2)
                .map(|w| (w[0] as f64 + w[1] as f64) * 0.5)
                .collect(),
        }
    }
    /// The code of the level nearest to `x`.
    #[inline]
    pub(crate) fn code(&self, x: f32) -> u8 {
        let x = x as f64;
        self.midpoints.iter().map(|&m| (x > m) as u8).sum()
    }
}

/// `scale · level` for every level, in f32, exactly as the decoder computes it.
pub(crate) fn decoded_levels(scale: f32, table: &[f32]) -> Vec<f32> {
    table.iter().map(|&l| scale * l).collect()
}
