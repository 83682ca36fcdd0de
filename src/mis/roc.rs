//! [`Roc`]: the ROC of the loss-threshold attack, built once by sorting each side once.
//!
//! The attack at threshold τ says "member" iff `score ≤ τ`, so TPR(τ) = F_mem(τ) and
//! FPR(τ) = F_non(τ), the two empirical CDFs. Only thresholds at observed scores matter (plus
//! τ = −∞, "flag nothing"), and a group of equal scores — on either side or both — is crossed
//! in one step: a tie between a member and a non-member is one diagonal step of the curve.

use rayon::prelude::*;

use crate::error::{Error, Result};

use super::interval::check_fpr;
use super::sample::MembershipSample;

/// Below this many scores a side is sorted on the calling thread: spawning costs more.
const PAR_SORT_MIN: usize = 1 << 16;

/// One operating point of the loss-threshold attack "member iff `score ≤ threshold`".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OperatingPoint {
    /// The threshold; `−∞` means "flag nothing" (TPR = FPR = 0).
    pub threshold: f64,
    /// Members flagged.
    pub true_positives: usize,
    /// Non-members flagged.
    pub false_positives: usize,
    /// `true_positives / n_members`.
    pub tpr: f64,
    /// `false_positives / n_non_members`.
    pub fpr: f64,
}

impl OperatingPoint {
    /// `TPR − FPR` at this point.
    pub fn advantage(&self) -> f64 {
        self.tpr - self.fpr
    }
}

/// The empirical ROC of the loss-threshold attack, with its summary statistics.
///
/// Construction sorts each side once (O(n log n), in parallel for large sides) and makes one
/// linear merge pass for the AUC and the best threshold; every later query is a binary search
/// or another linear pass.
///
/// **TPR at a fixed FPR α** follows the *conservative* rule: the largest TPR among the
/// deterministic thresholds whose empirical FPR is at most α, with no interpolation. The
/// alternative — interpolating linearly between the two ROC vertices around α, which a
/// randomised threshold attains and which e.g. scikit-learn's `roc_curve` + `np.interp`
/// reports — is never smaller; the conservative value is what an attacker who must commit to
/// one threshold gets. With fewer than ⌈1/α⌉ non-members no threshold but "zero false
/// positives" has FPR ≤ α, so the query is refused with [`Error::TooFewSamples`].
///
/// ```
/// use quantlens::MembershipSample;
/// use quantlens::mis::Roc;
///
/// let s = MembershipSample::new(vec![0.1, 0.2, 0.5, 0.9], vec![0.3, 0.5, 0.8, 1.0])?;
/// let roc = Roc::new(&s);
/// // Pairs (member < non-member) + ½·ties, over 16 pairs: 4 + 4 + (2 + ½) + 1 = 11.5.
/// assert_eq!(roc.auc(), 11.5 / 16.0);
/// let best = roc.best_threshold();
/// assert_eq!((best.threshold, best.true_positives, best.false_positives), (0.2, 2, 0));
/// assert_eq!(roc.advantage(), 0.5);
/// // FPR ≤ 25 %: at most one false positive, so τ < 0.5 and TPR = 2/4.
/// assert_eq!(roc.tpr_at_fpr(0.25)?.tpr, 0.5);
/// assert!(roc.tpr_at_fpr(0.1).is_err()); // needs ≥ 10 non-members
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Roc {
    members: Vec<f64>,
    non_members: Vec<f64>,
    auc: f64,
    best: OperatingPoint,
}

impl Roc {
    /// Build the ROC of a sample (the sample is copied; see [`Roc::from_sample`] to move it).
    pub fn new(sample: &MembershipSample) -> Roc {
        Roc::from_sorted(
            sorted(sample.members().to_vec()),
            sorted(sample.non_members().to_vec()),
        )
    }

    /// Build the ROC, reusing the sample's buffers.
    pub fn from_sample(sample: MembershipSample) -> Roc {
        let (m, n) = sample.into_parts();
        let (m, n) = rayon::join(|| sorted(m), || sorted(n));
        Roc::from_sorted(m, n)
    }

    fn from_sorted(members: Vec<f64>, non_members: Vec<f64>) -> Roc {
        let (a, b) = (&members[..], &non_members[..]);
        let (m, n) = (a.len(), b.len());
        // AUC counted in half-pairs so that ties stay integral: 2·#{a < b} + #{a = b}.
        let mut half_pairs: u128 = 0;
        // Best advantage compared exactly as tp·n − fp·m (an integer), first maximum wins.
        let mut best = (0i128, f64::NEG_INFINITY, 0usize, 0usize);
        let (mut i, mut j) = (0, 0);
        while i < m || j < n {
            let v = if j == n || (i < m && a[i] <= b[j]) {
                a[i]
            } else {
                b[j]
            };
            let i0 = i;
            while i < m && a[i] == v {
                i += 1;
            }
            let j0 = j;
            while j < n && b[j] == v {
                j += 1;
            }
            let (cm, cn) = ((i - i0) as u128, (j - j0) as u128);
            half_pairs += 2 * cm * (n - j) as u128 + cm * cn;
            let d = i as i128 * n as i128 - j as i128 * m as i128;
            if d > best.0 {
                best = (d, v, i, j);
            }
        }
        let auc = half_pairs as f64 / (2.0 * m as f64 * n as f64);
        let best = point(best.1, best.2, best.3, m, n);
        Roc {
            members,
            non_members,
            auc,
            best,
        }
    }

    /// Number of member scores.
    pub fn n_members(&self) -> usize {
        self.members.len()
    }

    /// Number of non-member scores.
    pub fn n_non_members(&self) -> usize {
        self.non_members.len()
    }

    /// Member scores, ascending.
    pub fn sorted_members(&self) -> &[f64] {
        &self.members
    }

    /// Non-member scores, ascending.
    pub fn sorted_non_members(&self) -> &[f64] {
        &self.non_members
    }

    /// Area under the ROC: `P(ℓ_mem < ℓ_non) + ½ P(ℓ_mem = ℓ_non)` over all member /
    /// non-member pairs (the Mann–Whitney U over `n_m · n_n`).
    pub fn auc(&self) -> f64 {
        self.auc
    }

    /// Best-threshold advantage `max_τ [F_mem(τ) − F_non(τ)]`, the one-sided
    /// Kolmogorov–Smirnov statistic; at least 0 (τ = −∞ flags nobody).
    pub fn advantage(&self) -> f64 {
        self.best.advantage()
    }

    /// The operating point of the best threshold: the smallest threshold attaining
    /// [`Roc::advantage`], or `−∞` when no threshold beats flagging nobody.
    pub fn best_threshold(&self) -> OperatingPoint {
        self.best
    }

    /// The operating point of the attack "member iff `score ≤ threshold`".
    pub fn at_threshold(&self, threshold: f64) -> Result<OperatingPoint> {
        if threshold.is_nan() {
            return Err(Error::InvalidParameter {
                name: "threshold",
                reason: "must not be NaN".into(),
            });
        }
        let tp = self.members.partition_point(|&x| x <= threshold);
        let fp = self.non_members.partition_point(|&x| x <= threshold);
        Ok(point(
            threshold,
            tp,
            fp,
            self.n_members(),
            self.n_non_members(),
        ))
    }

    /// The largest TPR over deterministic thresholds whose empirical FPR is at most `fpr`
    /// (the conservative rule, see the type's docs), with the smallest such threshold.
    ///
    /// Errors: `fpr` outside (0, 1), or fewer than ⌈1/fpr⌉ non-members
    /// ([`Error::TooFewSamples`]; TPR at 0.1 % needs 1000).
    pub fn tpr_at_fpr(&self, fpr: f64) -> Result<OperatingPoint> {
        let (m, n) = (self.n_members(), self.n_non_members());
        let k = allowed_false_positives_checked(fpr, n)?;
        let (a, b) = (&self.members, &self.non_members);
        // Thresholds with at most k false positives are exactly those below the (k+1)-th
        // smallest non-member score; the best flags every member below it.
        let tp = if k >= n {
            m
        } else {
            let limit = b[k];
            a.partition_point(|&x| x < limit)
        };
        if tp == 0 {
            return Ok(point(f64::NEG_INFINITY, 0, 0, m, n));
        }
        let threshold = a[tp - 1];
        let fp = b.partition_point(|&x| x <= threshold);
        Ok(point(threshold, tp, fp, m, n))
    }

    /// The vertices of the ROC polyline, from `(0, 0)` at `−∞` to `(1, 1)`, for plotting.
    ///
    /// One vertex per distinct score, except that interior points of straight vertical or
    /// horizontal runs are dropped (the polyline is unchanged); a tie across both sides is a
    /// diagonal segment.
    pub fn curve(&self) -> Vec<OperatingPoint> {
        let (a, b) = (&self.members[..], &self.non_members[..]);
        let (m, n) = (a.len(), b.len());
        let mut out = vec![point(f64::NEG_INFINITY, 0, 0, m, n)];
        let (mut i, mut j) = (0, 0);
        while i < m || j < n {
            let v = if j == n || (i < m && a[i] <= b[j]) {
                a[i]
            } else {
                b[j]
            };
            let (i0, j0) = (i, j);
            while i < m && a[i] == v {
                i += 1;
            }
            while j < n && b[j] == v {
                j += 1;
            }
            let p = point(v, i, j, m, n);
            // Extend a straight run instead of adding a vertex inside it.
            let len = out.len();
            if len >= 2 {
                let (q, r) = (out[len - 2], out[len - 1]);
                let vertical = j == j0 && r.false_positives == q.false_positives;
                let horizontal = i == i0 && r.true_positives == q.true_positives;
                if vertical || horizontal {
                    out[len - 1] = p;
                    continue;
                }
            }
            out.push(p);
        }
        out
    }
}

/// An operating point from counts.
fn point(threshold: f64, tp: usize, fp: usize, m: usize, n: usize) -> OperatingPoint {
    OperatingPoint {
        threshold,
        true_positives: tp,
        false_positives: fp,
        tpr: tp as f64 / m as f64,
        fpr: fp as f64 / n as f64,
    }
}

/// Sort ascending with −0.0 folded into +0.0, so that the total order used for sorting agrees
/// with `==` on the (finite) scores and ties group correctly.
pub(crate) fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    for x in &mut v {
        *x += 0.0;
    }
    if v.len() >= PAR_SORT_MIN {
        v.par_sort_unstable_by(f64::total_cmp);
    } else {
        v.sort_unstable_by(f64::total_cmp);
    }
    v
}

/// The most false positives `k` with `k / n ≤ fpr`, with the division done in f64 exactly as
/// a reader would check it (so 1/1000 ≤ 0.001 holds).
pub(crate) fn allowed_false_positives(fpr: f64, n: usize) -> usize {
    let nf = n as f64;
    let mut k = ((fpr * nf).floor().max(0.0) as usize).min(n);
    while k < n && ((k + 1) as f64 / nf) <= fpr {
        k += 1;
    }
    while k > 0 && (k as f64 / nf) > fpr {
        k -= 1;
    }
    k
}

/// The fewest non-members for which TPR at `fpr` is defined: the smallest `n` with
/// `1 / n ≤ fpr`, i.e. ⌈1/fpr⌉.
pub(crate) fn min_non_members(fpr: f64) -> usize {
    let mut c = ((1.0 / fpr).ceil() as usize).max(1);
    while c > 1 && 1.0 / ((c - 1) as f64) <= fpr {
        c -= 1;
    }
    while 1.0 / (c as f64) > fpr {
        c += 1;
    }
    c
}

/// [`allowed_false_positives`] after checking `fpr` and that at least one false positive is
/// allowed.
pub(crate) fn allowed_false_positives_checked(fpr: f64, n: usize) -> Result<usize> {
    check_fpr(fpr)?;
    let k = allowed_false_positives(fpr, n);
    if k == 0 {
        return Err(Error::TooFewSamples {
            what: "non-member scores (TPR at FPR α needs ⌈1/α⌉)",
            needed: min_non_members(fpr),
            got: n,
        });
    }
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roc(m: &[f64], n: &[f64]) -> Roc {
        Roc::new(&MembershipSample::new(m.to_vec(), n.to_vec()).unwrap())
    }

    #[test]
    fn fpr_budget_uses_the_readers_division() {
        assert_eq!(allowed_false_positives(0.001, 1000), 1);
        assert_eq!(allowed_false_positives(0.001, 999), 0);
        assert_eq!(allowed_false_positives(0.01, 1000), 10);
        assert_eq!(allowed_false_positives(0.3, 10), 3);
        assert_eq!(min_non_members(0.001), 1000);
        assert_eq!(min_non_members(0.01), 100);
        assert_eq!(min_non_members(0.3), 4);
        assert_eq!(min_non_members(0.5), 2);
        for alpha in [0.001, 0.003, 0.01, 0.05, 0.1, 0.3, 0.7] {
            let c = min_non_members(alpha);
            assert!(allowed_false_positives(alpha, c) >= 1);
            assert_eq!(allowed_false_positives(alpha, c - 1), 0);
        }
    }

    #[test]
    fn a_cross_side_tie_is_one_diagonal_step() {
        let r = roc(&[1.0, 2.0], &[2.0, 3.0]);
        let c = r.curve();
        let pts: Vec<(usize, usize)> = c
            .iter()
            .map(|p| (p.true_positives, p.false_positives))
            .collect();
        assert_eq!(pts, vec![(0, 0), (1, 0), (2, 1), (2, 2)]);
        assert_eq!(r.auc(), (2.0 * 3.0 + 1.0) / 8.0);
    }

    #[test]
    fn negative_zero_ties_with_zero() {
        let r = roc(&[-0.0], &[0.0]);
        assert_eq!(r.auc(), 0.5);
        assert_eq!(r.advantage(), 0.0);
        assert_eq!(r.best_threshold().threshold, f64::NEG_INFINITY);
    }

    #[test]
    fn curve_collapses_straight_runs() {
        let r = roc(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]);
        let pts: Vec<(usize, usize)> = r
            .curve()
            .iter()
            .map(|p| (p.true_positives, p.false_positives))
            .collect();
        assert_eq!(pts, vec![(0, 0), (3, 0), (3, 3)]);
        assert_eq!(r.curve()[1].threshold, 3.0);
        assert_eq!(r.advantage(), 1.0);
    }

    #[test]
    fn tpr_at_fpr_edge_cases() {
        // Every non-member below every member: no member can be flagged at FPR < 1.
        let r = roc(&[5.0, 6.0], &[1.0, 2.0, 3.0, 4.0]);
        let p = r.tpr_at_fpr(0.5).unwrap();
        assert_eq!((p.true_positives, p.false_positives), (0, 0));
        assert_eq!(p.threshold, f64::NEG_INFINITY);
        // A budget as large as the side flags everyone.
        let r = roc(&[1.0, 9.0], &[2.0, 3.0]);
        let p = r.tpr_at_fpr(0.99).unwrap();
        assert_eq!((p.true_positives, p.false_positives), (1, 0));
        assert!(r.tpr_at_fpr(0.0).is_err());
        assert!(r.tpr_at_fpr(f64::NAN).is_err());
        assert!(r.at_threshold(f64::NAN).is_err());
        let p = r.at_threshold(f64::INFINITY).unwrap();
        assert_eq!((p.tpr, p.fpr), (1.0, 1.0));
    }
}
