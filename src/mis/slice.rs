//! [`SlicedScores`]: member / non-member scores with a group label each (a class, a source, a
//! user-given slice), split into one [`MembershipSample`] per group.

use std::collections::BTreeMap;
use std::fmt::Debug;

use crate::error::{Error, Result};

use super::MisEstimator;
use super::estimate::MisEstimate;
use super::sample::{MembershipSample, check_scores};

/// Scores with a group label per score, grouped once at construction.
///
/// Groups come out in the order of their labels (`Ord`), so reports are deterministic. A
/// group present on one side only cannot be estimated: [`SlicedScores::samples`] and
/// [`SlicedScores::estimate_each`] refuse it with [`Error::EmptyGroup`] naming the group;
/// [`SlicedScores::sizes`] shows the counts first.
///
/// ```
/// use quantlens::mis::{Bootstrap, LossThreshold, SlicedScores};
///
/// // Losses of members and non-members, with their class labels.
/// let scores = SlicedScores::new(
///     &[0.1, 0.2, 0.3, 0.9, 1.1], &[0, 0, 1, 1, 1],
///     &[0.5, 0.6, 0.7, 1.0],      &[0, 1, 1, 0],
/// )?;
/// let attack = LossThreshold::new().with_fprs(&[]).with_bootstrap(Bootstrap::new(100, 0.9, 1)?);
/// for (class, est) in scores.estimate_each(&attack)? {
///     println!("class {class}: {est}");
/// }
/// // A class seen on one side only is named in the error.
/// let one_sided = SlicedScores::new(&[0.1, 0.2], &["a", "b"], &[0.5], &["a"])?;
/// assert!(one_sided.samples().unwrap_err().to_string().contains("\"b\""));
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SlicedScores<G> {
    groups: BTreeMap<G, (Vec<f64>, Vec<f64>)>,
}

/// How many scores a group holds on each side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSize<G> {
    /// The group label.
    pub group: G,
    /// Member scores in the group.
    pub members: usize,
    /// Non-member scores in the group.
    pub non_members: usize,
}

impl<G: Ord + Clone + Debug> SlicedScores<G> {
    /// Group the scores by label. Each score list must be non-empty, finite and as long as its
    /// label list.
    pub fn new(
        members: &[f64],
        member_groups: &[G],
        non_members: &[f64],
        non_member_groups: &[G],
    ) -> Result<Self> {
        check_scores("member scores", members)?;
        check_scores("non-member scores", non_members)?;
        for (what, scores, labels) in [
            ("member", members.len(), member_groups.len()),
            ("non-member", non_members.len(), non_member_groups.len()),
        ] {
            if scores != labels {
                return Err(Error::ShapeMismatch(format!(
                    "{scores} {what} scores but {labels} group labels"
                )));
            }
        }
        let mut groups: BTreeMap<G, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
        for (g, &x) in member_groups.iter().zip(members) {
            groups.entry(g.clone()).or_default().0.push(x);
        }
        for (g, &x) in non_member_groups.iter().zip(non_members) {
            groups.entry(g.clone()).or_default().1.push(x);
        }
        Ok(SlicedScores { groups })
    }

    /// Per-group counts, in label order.
    pub fn sizes(&self) -> Vec<GroupSize<G>> {
        self.groups
            .iter()
            .map(|(g, (m, n))| GroupSize {
                group: g.clone(),
                members: m.len(),
                non_members: n.len(),
            })
            .collect()
    }

    /// The sample of one group; [`Error::EmptyGroup`] if a side is empty (or the label is
    /// unknown).
    pub fn sample(&self, group: &G) -> Result<MembershipSample> {
        let (m, n) = self.groups.get(group).ok_or_else(|| Error::EmptyGroup {
            group: format!("{group:?}"),
            side: "scores at all",
        })?;
        for (side, v) in [("member scores", m), ("non-member scores", n)] {
            if v.is_empty() {
                return Err(Error::EmptyGroup {
                    group: format!("{group:?}"),
                    side,
                });
            }
        }
        MembershipSample::new(m.clone(), n.clone())
    }

    /// One sample per group, in label order; the first one-sided group is an error.
    pub fn samples(&self) -> Result<Vec<(G, MembershipSample)>> {
        self.groups
            .keys()
            .map(|g| Ok((g.clone(), self.sample(g)?)))
            .collect()
    }

    /// Run `estimator` on every group, in label order.
    pub fn estimate_each(&self, estimator: &dyn MisEstimator) -> Result<Vec<(G, MisEstimate)>> {
        self.samples()?
            .into_iter()
            .map(|(g, s)| Ok((g, estimator.estimate(&s)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_split_and_errors_name_the_bad_group() {
        let s = SlicedScores::new(&[1.0, 2.0, 3.0], &[2, 1, 2], &[4.0, 5.0], &[1, 2]).unwrap();
        let got = s.samples().unwrap();
        assert_eq!(got[0].0, 1);
        assert_eq!(got[0].1.members(), &[2.0]);
        assert_eq!(got[1].1.members(), &[1.0, 3.0]);
        assert_eq!(got[1].1.non_members(), &[5.0]);

        let s = SlicedScores::new(&[1.0], &[7], &[4.0, 5.0], &[7, 9]).unwrap();
        assert_eq!(
            s.sizes()[1],
            GroupSize {
                group: 9,
                members: 0,
                non_members: 1
            }
        );
        match s.samples().unwrap_err() {
            Error::EmptyGroup { group, side } => {
                assert_eq!((group.as_str(), side), ("9", "member scores"));
            }
            e => panic!("{e}"),
        }
        assert!(matches!(s.sample(&3), Err(Error::EmptyGroup { .. })));
        assert!(matches!(
            SlicedScores::new(&[1.0], &[1, 2], &[2.0], &[1]),
            Err(Error::ShapeMismatch(_))
        ));
        assert!(matches!(
            SlicedScores::new(&[f64::INFINITY], &[1], &[2.0], &[1]),
            Err(Error::NonFinite { .. })
        ));
    }
}
