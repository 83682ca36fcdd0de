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

/// Nearest-level encoding of `x` into `out` against the decoded levels `scale · table[i]`.
///
/// Built from the values the decoder will produce (`scale · level`, rounded in f32 exactly as
/// the decoder rounds them), so "nearest" holds for what a user gets back, not for an
/// idealised grid. `table` must be ascending with a power-of-two length up to 256 and
/// `scale ≥ 0`; a code is the number of midpoints strictly below the value, so ties go to the
/// lower level. Midpoints are exact (f64 halves of f32 sums) and live on the stack, sized by
/// the table, so the per-group setup costs no allocation.
pub(crate) fn encode_nearest(scale: f32, table: &[f32], x: &[f32], out: &mut [u8]) {
    debug_assert!(table.windows(2).all(|w| w[0] <= w[1]));
    match table.len() {
        2 => Midpoints::<1>::new(scale, table).encode(x, out),
        4 => Midpoints::<3>::new(scale, table).encode(x, out),
        8 => Midpoints::<7>::new(scale, table).encode(x, out),
        16 => Midpoints::<15>::new(scale, table).encode(x, out),
        32 => Midpoints::<31>::new(scale, table).encode(x, out),
        64 => Midpoints::<63>::new(scale, table).encode(x, out),
        128 => Midpoints::<127>::new(scale, table).encode(x, out),
        256 => Midpoints::<255>::new(scale, table).encode(x, out),
        n => unreachable!("codebook tables are validated to 2..=256 levels, got {n}"),
    }
}

/// The `M` midpoints between `M + 1` ascending decoded levels, each rounded *down* to f32.
///
/// For an f32 value `x` and an exact midpoint `m` (an f64), `x > m` ⇔ `x > round_down(m)`:
/// no f32 lies strictly between `round_down(m)` and `m`. So the comparisons run in f32 —
/// eight per AVX2 instruction — and still decide exactly as the f64 midpoints would.
struct Midpoints<const M: usize>([f32; M]);

impl<const M: usize> Midpoints<M> {
    #[inline]
    fn new(scale: f32, table: &[f32]) -> Self {
        let mut m = [0f32; M];
        for (m, w) in m.iter_mut().zip(table.windows(2)) {
            let exact = ((scale * w[0]) as f64 + (scale * w[1]) as f64) * 0.5;
            let near = exact as f32;
            *m = if near as f64 > exact {
                near.next_down()
            } else {
                near
            };
        }
        Midpoints(m)
    }
    /// A linear count of the midpoints below each value, eight values at a time with the
    /// lanes innermost so the compiler vectorises across values (a binary search measured
    /// 2.5× slower: its loads depend on the data).
    #[inline]
    fn encode(&self, x: &[f32], out: &mut [u8]) {
        let mut xs = x.chunks_exact(8);
        let mut os = out.chunks_exact_mut(8);
        for (xc, oc) in (&mut xs).zip(&mut os) {
            let mut acc = [0u8; 8];
            for &m in &self.0 {
                for (a, &v) in acc.iter_mut().zip(xc) {
                    *a += (v > m) as u8;
                }
            }
            oc.copy_from_slice(&acc);
        }
        for (c, &v) in os.into_remainder().iter_mut().zip(xs.remainder()) {
            *c = self.0.iter().map(|&m| (v > m) as u8).sum();
        }
    }
}

#[cfg(test)]
mod nearest_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The binary search equals a brute-force nearest search (ties to the lower level).
        #[test]
        fn encode_nearest_is_the_nearest_level(
            bits in 1u32..=8,
            raw in proptest::collection::vec(-10f32..10.0, 256),
            xs in proptest::collection::vec(-12f32..12.0, 64),
            scale in 0f32..3.0,
        ) {
            let mut table = raw[..1 << bits].to_vec();
            table.sort_by(f32::total_cmp);
            let mut codes = vec![0u8; xs.len()];
            encode_nearest(scale, &table, &xs, &mut codes);
            for (&x, &c) in xs.iter().zip(&codes) {
                let d = |k: usize| (x as f64 - (scale * table[k]) as f64).abs();
                let best = (0..table.len()).fold(0, |b, k| if d(k) < d(b) { k } else { b });
                prop_assert!(d(c as usize) <= d(best), "x {x}: code {c} vs {best}");
            }
        }
    }

    proptest! {
        /// Around each midpoint, the f32 comparison decides exactly as the f64 midpoint.
        #[test]
        fn rounded_down_midpoints_decide_exactly(a in -1e3f32..1e3, gap in 1e-6f32..10.0) {
            let b = a + gap;
            let table = [a, b];
            let exact = (a as f64 + b as f64) * 0.5;
            let near = exact as f32;
            for x in [near.next_down().next_down(), near.next_down(), near, near.next_up()] {
                let mut c = [0u8];
                encode_nearest(1.0, &table, &[x], &mut c);
                prop_assert_eq!(c[0] == 1, x as f64 > exact, "x {}", x);
            }
        }
    }
}
