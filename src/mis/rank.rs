//! Comparing quantizers: CI-aware ranking by MIS, a paired bootstrap test, and the
//! privacy–utility Pareto front.

use rayon::prelude::*;

use crate::error::{Error, Result};

use super::bootstrap::{Bootstrap, Groups, Plan, Statistic, draw_sides, par_resamples};
use super::estimate::MisEstimate;
use super::interval::{Interval, percentile_interval};
use super::sample::MembershipSample;

/// One entry of a ranking by MIS.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    /// The name given with the estimate (e.g. the quantizer's).
    pub name: String,
    /// 1 = most secure. Entries whose intervals are linked by overlaps share a rank.
    pub rank: usize,
    /// The MIS estimate.
    pub mis: f64,
    /// Its confidence interval.
    pub ci: Interval,
}

/// Rank named estimates by MIS (higher = more secure = rank 1), with CI-aware ties.
///
/// A ranks above B only when their intervals are separated, directly or through a chain of
/// separated groups: entries are grouped into the connected components of the "intervals
/// overlap" relation, components are ordered (they never overlap each other), and every
/// entry of a component gets the same rank — one plus the number of entries in the
/// components above it (competition ranking: 1, 1, 3). Chaining is what makes ties
/// transitive; a long chain of overlapping intervals is one tie, which is the honest reading
/// of such data. Within a rank, entries are listed by MIS (descending), then name.
///
/// Errors: an estimate without a confidence interval, or a non-finite MIS or interval.
///
/// ```
/// use quantlens::Interval;
/// use quantlens::mis::{MisEstimate, rank_by_mis};
///
/// let est = |mis: f64, half: f64| {
///     let ci = Interval { lower: mis - half, upper: mis + half, level: 0.95 };
///     MisEstimate::from_counts(1.0 - mis, Some(ci), 1000, 1000)
/// };
/// let ranked = rank_by_mis(&[
///     ("int8", est(0.90, 0.02)),
///     ("int4", est(0.87, 0.02)), // overlaps int8: tied
///     ("int2", est(0.70, 0.02)), // separated: below both
/// ])?;
/// let ranks: Vec<(&str, usize)> = ranked.iter().map(|r| (r.name.as_str(), r.rank)).collect();
/// assert_eq!(ranks, [("int8", 1), ("int4", 1), ("int2", 3)]);
/// # Ok::<(), quantlens::Error>(())
/// ```
pub fn rank_by_mis<S: AsRef<str>>(estimates: &[(S, MisEstimate)]) -> Result<Vec<Ranked>> {
    let mut entries = estimates
        .iter()
        .map(|(name, e)| {
            let name = name.as_ref().to_string();
            let ci = e.ci.ok_or_else(|| Error::InvalidParameter {
                name: "estimates",
                reason: format!("{name} has no confidence interval to rank by"),
            })?;
            if !(e.mis.is_finite() && ci.lower.is_finite() && ci.upper.is_finite()) {
                return Err(Error::InvalidParameter {
                    name: "estimates",
                    reason: format!("{name} has a non-finite MIS or interval"),
                });
            }
            Ok(Ranked {
                name,
                rank: 0,
                mis: e.mis,
                ci,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // Sweep from the highest upper end down: an interval joins the current component iff it
    // reaches the component's lowest point so far.
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|&i, &j| entries[j].ci.upper.total_cmp(&entries[i].ci.upper));
    let mut component_low = f64::INFINITY;
    let mut rank = 0;
    for (seen, &i) in order.iter().enumerate() {
        let ci = entries[i].ci;
        if seen == 0 || ci.upper < component_low {
            rank = seen + 1;
            component_low = ci.lower;
        } else {
            component_low = component_low.min(ci.lower);
        }
        entries[i].rank = rank;
    }
    entries.sort_by(|x, y| {
        x.rank
            .cmp(&y.rank)
            .then(y.mis.total_cmp(&x.mis))
            .then_with(|| x.name.cmp(&y.name))
    });
    Ok(entries)
}

/// The outcome of a paired bootstrap comparison of two score sets on the same examples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedComparison {
    /// The statistic compared.
    pub statistic: Statistic,
    /// Its value on `a` minus its value on `b`, on the full samples.
    pub difference: f64,
    /// Percentile interval of the difference.
    pub ci: Interval,
    /// Two-sided bootstrap p-value for "no difference": twice the smaller share of
    /// resampled differences on either side of 0 (capped at 1). Below `1 − level` exactly
    /// when the percentile interval excludes 0, up to interpolation.
    pub p_value: f64,
    /// Number of resamples.
    pub resamples: usize,
}

/// Paired bootstrap of `statistic(a) − statistic(b)`, where `a` and `b` score the *same*
/// examples in the same order (e.g. one model quantized two ways): each resample draws one set
/// of example indices and applies it to both, so the correlation between the two score sets
/// cancels out of the difference instead of inflating its spread.
///
/// Errors: samples of different sizes ([`Error::ShapeMismatch`]), or a statistic the sizes
/// cannot support (an FPR below 1/n).
///
/// ```
/// use quantlens::MembershipSample;
/// use quantlens::mis::{Bootstrap, Statistic, paired_bootstrap};
///
/// let m: Vec<f64> = (0..500).map(|i| (i as f64 * 0.618).fract()).collect();
/// let n: Vec<f64> = (0..500).map(|i| (i as f64 * 0.414).fract() + 0.3).collect();
/// let a = MembershipSample::new(m.clone(), n.clone())?;
/// // b: the same examples with a little less separation.
/// let b = MembershipSample::new(m.iter().map(|x| x + 0.1).collect(), n)?;
/// let c = paired_bootstrap(&a, &b, Statistic::Advantage, &Bootstrap::new(400, 0.95, 1)?)?;
/// assert!(c.difference > 0.0 && c.ci.lower > 0.0 && c.p_value < 0.05);
/// # Ok::<(), quantlens::Error>(())
/// ```
pub fn paired_bootstrap(
    a: &MembershipSample,
    b: &MembershipSample,
    statistic: Statistic,
    bootstrap: &Bootstrap,
) -> Result<PairedComparison> {
    let (m, n) = (a.n_members(), a.n_non_members());
    if (m, n) != (b.n_members(), b.n_non_members()) {
        return Err(Error::ShapeMismatch(format!(
            "paired samples must score the same examples: {m} + {n} vs {} + {}",
            b.n_members(),
            b.n_non_members()
        )));
    }
    let (sa, sb) = (SortedSide::new(a)?, SortedSide::new(b)?);
    let plan = Plan::new(&[statistic], n)?;
    let stat = |groups: &Groups, w: &[u32]| {
        plan.evaluate(&groups.roc_counts(w, &plan.fp_budgets), m, n)[0]
    };
    let ones = vec![1u32; m + n];
    let difference = stat(&sa.groups, &ones) - stat(&sb.groups, &ones);
    let mut diffs = par_resamples(
        bootstrap.resamples(),
        bootstrap.seed(),
        || (vec![0u32; m + n], vec![0u32; m + n]),
        |(counts, w), g| {
            // One draw of example indices per side, moved to each sample's sorted order.
            draw_sides(g, counts, m);
            sa.scatter(counts, w);
            let da = stat(&sa.groups, w);
            sb.scatter(counts, w);
            da - stat(&sb.groups, w)
        },
    );
    let below = diffs.iter().filter(|&&d| d <= 0.0).count();
    let above = diffs.iter().filter(|&&d| d >= 0.0).count();
    let p_value = (2.0 * below.min(above) as f64 / diffs.len() as f64).min(1.0);
    Ok(PairedComparison {
        statistic,
        difference,
        ci: percentile_interval(&mut diffs, bootstrap.level()),
        p_value,
        resamples: bootstrap.resamples(),
    })
}

/// A sample sorted once, with the place of every example in the sorted weight slice
/// `[members | non-members]`.
struct SortedSide {
    groups: Groups,
    pos: Vec<u32>,
}

impl SortedSide {
    fn new(s: &MembershipSample) -> Result<Self> {
        let m = s.n_members();
        if m + s.n_non_members() > u32::MAX as usize {
            return Err(Error::Unsupported(format!(
                "paired bootstrap of more than {} scores",
                u32::MAX
            )));
        }
        let (pa, va) = argsort(s.members());
        let (pb, vb) = argsort(s.non_members());
        let pos = pa
            .into_iter()
            .chain(pb.into_iter().map(|p| p + m as u32))
            .collect();
        Ok(SortedSide {
            groups: Groups::by_value(&va, &vb)?,
            pos,
        })
    }

    /// Move per-example counts (in example order) to sorted positions.
    fn scatter(&self, counts: &[u32], w: &mut [u32]) {
        for (&p, &c) in self.pos.iter().zip(counts) {
            w[p as usize] = c;
        }
    }
}

/// Sorted values and, for each original index, its position in the sorted order (ties broken
/// by index, so the order is deterministic).
fn argsort(v: &[f64]) -> (Vec<u32>, Vec<f64>) {
    // −0.0 folded into +0.0, as everywhere else, so that ties group by `==`.
    let key = |i: u32| v[i as usize] + 0.0;
    let mut idx: Vec<u32> = (0..v.len() as u32).collect();
    idx.par_sort_by(|&i, &j| key(i).total_cmp(&key(j)));
    let mut pos = vec![0u32; v.len()];
    for (rank, &i) in idx.iter().enumerate() {
        pos[i as usize] = rank as u32;
    }
    (pos, idx.iter().map(|&i| key(i)).collect())
}

/// Indices of the privacy–utility Pareto front of `(mis, utility)` points, both "higher is
/// better": the points no other point matches on both and beats on one. Equal points are all
/// kept. Order: MIS descending, then utility descending, then index — deterministic.
///
/// Errors: a NaN or infinite coordinate ([`Error::NonFinite`]).
///
/// ```
/// use quantlens::mis::pareto_front;
/// // (MIS, accuracy) of four quantizers.
/// let pts = [(0.90, 0.80), (0.95, 0.70), (0.85, 0.75), (0.90, 0.80)];
/// assert_eq!(pareto_front(&pts)?, vec![1, 0, 3]); // (0.85, 0.75) is dominated
/// # Ok::<(), quantlens::Error>(())
/// ```
pub fn pareto_front(points: &[(f64, f64)]) -> Result<Vec<usize>> {
    let flat: Vec<f64> = points.iter().flat_map(|&(x, y)| [x, y]).collect();
    if let Some(first) = flat.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: "(mis, utility) points",
            count: flat.iter().filter(|v| !v.is_finite()).count(),
            first_index: first / 2,
        });
    }
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&i, &j| {
        let (p, q) = (points[i], points[j]);
        q.0.total_cmp(&p.0)
            .then(q.1.total_cmp(&p.1))
            .then(i.cmp(&j))
    });
    // Sweep by MIS descending. Within a run of equal MIS only the top utility can survive,
    // and it survives iff it beats every utility of strictly higher MIS.
    let mut front = Vec::new();
    let mut best_above = f64::NEG_INFINITY;
    let mut k = 0;
    while k < order.len() {
        let mis = points[order[k]].0;
        let top = points[order[k]].1;
        let mut end = k;
        while end < order.len() && points[order[end]].0 == mis {
            if points[order[end]].1 == top && top > best_above {
                front.push(order[end]);
            }
            end += 1;
        }
        best_above = best_above.max(top);
        k = end;
    }
    Ok(front)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est(mis: f64, lo: f64, hi: f64) -> MisEstimate {
        MisEstimate::from_counts(
            1.0 - mis,
            Some(Interval {
                lower: lo,
                upper: hi,
                level: 0.95,
            }),
            10,
            10,
        )
    }

    #[test]
    fn chained_overlaps_tie_and_separated_intervals_order() {
        // a–b overlap, b–c overlap, a–c separated: one chain, one rank.
        let r = rank_by_mis(&[
            ("c", est(0.5, 0.45, 0.55)),
            ("a", est(0.7, 0.65, 0.75)),
            ("b", est(0.6, 0.54, 0.66)),
            ("d", est(0.2, 0.1, 0.3)),
            ("e", est(0.2, 0.1, 0.3)),
        ])
        .unwrap();
        let got: Vec<(&str, usize)> = r.iter().map(|x| (x.name.as_str(), x.rank)).collect();
        assert_eq!(got, [("a", 1), ("b", 1), ("c", 1), ("d", 4), ("e", 4)]);
        // Touching ends count as overlapping (closed intervals).
        let r = rank_by_mis(&[("x", est(0.5, 0.4, 0.5)), ("y", est(0.6, 0.5, 0.7))]).unwrap();
        assert_eq!((r[0].rank, r[1].rank), (1, 1));
        let no_ci = MisEstimate::from_counts(0.1, None, 10, 10);
        assert!(rank_by_mis(&[("z", no_ci)]).is_err());
        assert!(rank_by_mis::<&str>(&[]).unwrap().is_empty());
    }

    #[test]
    fn identical_samples_do_not_differ() {
        let s = MembershipSample::new(vec![0.1, 0.5, 0.2, 0.9], vec![0.3, 0.4, 1.0]).unwrap();
        let c =
            paired_bootstrap(&s, &s, Statistic::Auc, &Bootstrap::new(50, 0.9, 0).unwrap()).unwrap();
        assert_eq!(
            (c.difference, c.ci.lower, c.ci.upper, c.p_value),
            (0.0, 0.0, 0.0, 1.0)
        );
        let short = MembershipSample::new(vec![0.1], vec![0.3, 0.4, 1.0]).unwrap();
        assert!(matches!(
            paired_bootstrap(&s, &short, Statistic::Auc, &Bootstrap::default()),
            Err(Error::ShapeMismatch(_))
        ));
    }

    #[test]
    fn pareto_rejects_nan() {
        assert!(matches!(
            pareto_front(&[(0.5, 0.5), (f64::NAN, 0.1)]),
            Err(Error::NonFinite { first_index: 1, .. })
        ));
        assert!(pareto_front(&[]).unwrap().is_empty());
    }
}
