//! Ranking schemes by a metric, for comparing orderings across metrics.

/// 1-based ranks, largest value first; ties share the best rank.
pub fn ranks(v: &[f64]) -> Vec<usize> {
    v.iter()
        .map(|x| 1 + v.iter().filter(|y| *y > x).count())
        .collect()
}
