//! Agreement between two attribution vectors over the same features: Spearman's ρ (average
//! ranks for ties), Kendall's τ-b (Knight's O(n log n) algorithm), the Jaccard overlap of the
//! top-k features by magnitude, and cosine similarity. All in f64.

use crate::error::{Error, Result};
use crate::mis::check_scores;

/// Spearman's rank correlation: the Pearson correlation of the ranks, ties given the average
/// of the ranks they span.
///
/// Errors when the lengths differ, fewer than two values are given, a value is NaN or ±∞, or
/// either side is constant (its ranks have no variance, so the correlation is undefined).
///
/// ```
/// use quantlens::explain::spearman;
/// assert_eq!(spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0])?, 1.0);
/// assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0])?, -1.0);
/// assert!(spearman(&[1.0, 1.0], &[1.0, 2.0]).is_err()); // a constant side
/// # Ok::<(), quantlens::Error>(())
/// ```
pub fn spearman(a: &[f64], b: &[f64]) -> Result<f64> {
    check_pair(a, b, 2)?;
    let (ra, rb) = (average_ranks(a), average_ranks(b));
    let n = a.len() as f64;
    // Average ranks always have mean (n + 1) / 2.
    let mid = (n + 1.0) / 2.0;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        let (dx, dy) = (x - mid, y - mid);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    if saa == 0.0 || sbb == 0.0 {
        return Err(constant_side("Spearman's ρ"));
    }
    Ok((sab / (saa * sbb).sqrt()).clamp(-1.0, 1.0))
}

/// Kendall's τ-b: `(C − D) / √((n₀ − n₁)(n₀ − n₂))` with `C`/`D` the concordant/discordant
/// pairs, `n₀ = n(n−1)/2`, and `n₁`, `n₂` the pairs tied in `a`, in `b`. Computed in
/// O(n log n) by Knight's algorithm (sort by `(a, b)`, count the inversions of `b` with a
/// merge sort).
///
/// Errors as [`spearman`] does.
///
/// ```
/// use quantlens::explain::kendall_tau_b;
/// // One discordant pair of three: (C − D) / 3 = 1/3.
/// assert!((kendall_tau_b(&[1.0, 2.0, 3.0], &[1.0, 3.0, 2.0])? - 1.0 / 3.0).abs() < 1e-15);
/// # Ok::<(), quantlens::Error>(())
/// ```
pub fn kendall_tau_b(a: &[f64], b: &[f64]) -> Result<f64> {
    check_pair(a, b, 2)?;
    // −0.0 and 0.0 compare equal but sort apart under `total_cmp`; one zero keeps ties
    // contiguous (grad × input gives signed zeros wherever an input is zero).
    let (a, b) = (&canonical_zeros(a), &canonical_zeros(b));
    let n = a.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[i].total_cmp(&a[j]).then(b[i].total_cmp(&b[j])));
    let pairs = |t: u64| t * t.saturating_sub(1) / 2;
    let n0 = pairs(n as u64);
    // Pairs tied in a (n1), and tied in both (n3), from runs of the sorted order.
    let (mut n1, mut n3) = (0u64, 0u64);
    let (mut run_a, mut run_ab) = (1u64, 1u64);
    for w in order.windows(2) {
        let (i, j) = (w[0], w[1]);
        if a[i] == a[j] {
            run_a += 1;
            if b[i] == b[j] {
                run_ab += 1;
            } else {
                n3 += pairs(run_ab);
                run_ab = 1;
            }
        } else {
            n1 += pairs(run_a);
            n3 += pairs(run_ab);
            run_a = 1;
            run_ab = 1;
        }
    }
    n1 += pairs(run_a);
    n3 += pairs(run_ab);
    // Discordant pairs: strict inversions of b in this order (pairs tied in a are sorted by b,
    // so they contribute none).
    let mut ys: Vec<f64> = order.iter().map(|&i| b[i]).collect();
    let mut scratch = vec![0.0; n];
    let discordant = inversions(&mut ys, &mut scratch);
    // `ys` is now sorted: runs give the pairs tied in b.
    let mut n2 = 0u64;
    let mut run_b = 1u64;
    for w in ys.windows(2) {
        if w[0] == w[1] {
            run_b += 1;
        } else {
            n2 += pairs(run_b);
            run_b = 1;
        }
    }
    n2 += pairs(run_b);
    let (da, db) = (n0 - n1, n0 - n2);
    if da == 0 || db == 0 {
        return Err(constant_side("Kendall's τ-b"));
    }
    let numerator = (n0 + n3) as f64 - (n1 + n2) as f64 - 2.0 * discordant as f64;
    Ok((numerator / ((da as f64) * (db as f64)).sqrt()).clamp(-1.0, 1.0))
}

/// The Jaccard overlap `|A ∩ B| / |A ∪ B|` of the index sets of the `k` largest `|a|` and the
/// `k` largest `|b|` (ties broken towards the lower index, so the sets are well defined).
///
/// Errors when the lengths differ, the vectors are empty or hold NaN/±∞, or `k` is 0 or
/// larger than the length.
///
/// ```
/// use quantlens::explain::top_k_jaccard;
/// // Top-2 by magnitude: {0, 3} and {0, 1}: one shared of three.
/// let j = top_k_jaccard(&[5.0, 0.1, 0.2, -4.0], &[3.0, 2.0, 0.0, 1.0], 2)?;
/// assert!((j - 1.0 / 3.0).abs() < 1e-15);
/// assert!(top_k_jaccard(&[1.0], &[1.0], 2).is_err());
/// # Ok::<(), quantlens::Error>(())
/// ```
pub fn top_k_jaccard(a: &[f64], b: &[f64], k: usize) -> Result<f64> {
    check_pair(a, b, 1)?;
    check_k(k, a.len())?;
    let (ta, tb) = (top_k_by_magnitude(a, k), top_k_by_magnitude(b, k));
    let mut in_a = vec![false; a.len()];
    for &i in &ta {
        in_a[i] = true;
    }
    let shared = tb.iter().filter(|&&i| in_a[i]).count();
    Ok(shared as f64 / (2 * k - shared) as f64)
}

/// Cosine similarity `a·b / (‖a‖ ‖b‖)`.
///
/// Errors when the lengths differ, the vectors are empty or hold NaN/±∞, or either is all
/// zeros (no direction).
///
/// ```
/// use quantlens::explain::cosine_similarity;
/// assert!((cosine_similarity(&[1.0, 0.0], &[1.0, 1.0])? - 0.5f64.sqrt()).abs() < 1e-15);
/// # Ok::<(), quantlens::Error>(())
/// ```
pub fn cosine_similarity(a: &[f64], b: &[f64]) -> Result<f64> {
    check_pair(a, b, 1)?;
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return Err(Error::InvalidParameter {
            name: "attributions",
            reason: "an all-zero vector has no direction; cosine similarity is undefined".into(),
        });
    }
    Ok((dot / (na * nb)).clamp(-1.0, 1.0))
}

/// `v` with every −0.0 replaced by 0.0.
fn canonical_zeros(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| x + 0.0).collect()
}

/// The indices of the `k` largest `|v|`, ties towards the lower index.
pub(crate) fn top_k_by_magnitude(v: &[f64], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&i, &j| v[j].abs().total_cmp(&v[i].abs()).then(i.cmp(&j)));
    order.truncate(k);
    order
}

/// Ranks 1..=n, tied values sharing the average of the ranks they span.
fn average_ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut ranks = vec![0.0; v.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && v[order[end]] == v[order[start]] {
            end += 1;
        }
        // Positions start..end hold ranks start+1..=end; their average:
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// Sort `v` ascending (stable merge sort) and return the number of pairs `i < j` with
/// `v[i] > v[j]` (strictly: equal values are not inversions).
fn inversions(v: &mut [f64], scratch: &mut [f64]) -> u64 {
    let n = v.len();
    if n < 2 {
        return 0;
    }
    let mid = n / 2;
    let (left_scratch, right_scratch) = scratch.split_at_mut(mid);
    let mut count = {
        let (l, r) = v.split_at_mut(mid);
        inversions(l, left_scratch) + inversions(r, right_scratch)
    };
    let (mut i, mut j, mut k) = (0, mid, 0);
    while i < mid && j < n {
        // `<=` keeps equal values in order and does not count them.
        if v[i] <= v[j] {
            scratch[k] = v[i];
            i += 1;
        } else {
            scratch[k] = v[j];
            // v[j] jumps ahead of every remaining left value, each larger than it.
            count += (mid - i) as u64;
            j += 1;
        }
        k += 1;
    }
    scratch[k..k + mid - i].copy_from_slice(&v[i..mid]);
    k += mid - i;
    scratch[k..k + n - j].copy_from_slice(&v[j..n]);
    v.copy_from_slice(&scratch[..n]);
    count
}

/// Same length, at least `min_len` values, all finite.
pub(crate) fn check_pair(a: &[f64], b: &[f64], min_len: usize) -> Result<()> {
    if a.len() != b.len() {
        return Err(Error::ShapeMismatch(format!(
            "attribution vectors of lengths {} and {} cannot be compared",
            a.len(),
            b.len()
        )));
    }
    check_scores("first attribution vector", a)?;
    check_scores("second attribution vector", b)?;
    if a.len() < min_len {
        return Err(Error::TooFewSamples {
            what: "attribution values to rank",
            needed: min_len,
            got: a.len(),
        });
    }
    Ok(())
}

/// `1 ≤ k ≤ len`.
pub(crate) fn check_k(k: usize, len: usize) -> Result<()> {
    if k == 0 || k > len {
        return Err(Error::InvalidParameter {
            name: "k",
            reason: format!("top-k needs 1 ≤ k ≤ {len} (the number of features), got {k}"),
        });
    }
    Ok(())
}

fn constant_side(what: &str) -> Error {
    Error::InvalidParameter {
        name: "attributions",
        reason: format!("{what} is undefined when one vector is constant"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inversions_count_strict_pairs_and_sort() {
        let mut v = [3.0, 1.0, 2.0, 2.0, 0.0];
        let mut s = [0.0; 5];
        // (3,1) (3,2) (3,2) (3,0) (1,0) (2,0) (2,0) = 7
        assert_eq!(inversions(&mut v, &mut s), 7);
        assert_eq!(v, [0.0, 1.0, 2.0, 2.0, 3.0]);
    }

    #[test]
    fn ties_get_average_ranks() {
        assert_eq!(average_ranks(&[5.0, 1.0, 5.0, 3.0]), [3.5, 1.0, 3.5, 2.0]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(spearman(&[1.0, 2.0], &[1.0]).is_err());
        assert!(spearman(&[], &[]).is_err());
        assert!(spearman(&[1.0], &[1.0]).is_err());
        assert!(kendall_tau_b(&[1.0, f64::NAN], &[1.0, 2.0]).is_err());
        assert!(kendall_tau_b(&[1.0, 2.0], &[4.0, 4.0]).is_err());
        assert!(top_k_jaccard(&[1.0, 2.0], &[1.0, 2.0], 0).is_err());
        assert!(cosine_similarity(&[0.0, 0.0], &[1.0, 2.0]).is_err());
        assert!(cosine_similarity(&[f64::INFINITY], &[1.0]).is_err());
    }
}
