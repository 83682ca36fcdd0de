//! [`MembershipSample`]: validated member / non-member scores.

use crate::error::{Error, Result};

/// Per-sample scores of members (trained on) and non-members (never seen), where a *lower*
/// score means "more likely a member" (a loss).
///
/// Built only through [`MembershipSample::new`], which refuses empty sides and non-finite
/// scores, so every estimator can rely on clean input.
#[derive(Debug, Clone, PartialEq)]
pub struct MembershipSample {
    members: Vec<f64>,
    non_members: Vec<f64>,
}

impl MembershipSample {
    /// Validate and wrap the two score lists.
    ///
    /// ```
    /// use quantlens::MembershipSample;
    /// assert!(MembershipSample::new(vec![0.1, 0.2], vec![0.9]).is_ok());
    /// assert!(MembershipSample::new(vec![], vec![0.9]).is_err());
    /// assert!(MembershipSample::new(vec![f64::NAN], vec![0.9]).is_err());
    /// ```
    pub fn new(members: Vec<f64>, non_members: Vec<f64>) -> Result<Self> {
        check_scores("member scores", &members)?;
        check_scores("non-member scores", &non_members)?;
        Ok(MembershipSample {
            members,
            non_members,
        })
    }

    /// Scores of the members.
    pub fn members(&self) -> &[f64] {
        &self.members
    }

    /// Scores of the non-members.
    pub fn non_members(&self) -> &[f64] {
        &self.non_members
    }

    /// Number of member scores.
    pub fn n_members(&self) -> usize {
        self.members.len()
    }

    /// Number of non-member scores.
    pub fn n_non_members(&self) -> usize {
        self.non_members.len()
    }

    /// The two score lists, members first, without copying.
    pub fn into_parts(self) -> (Vec<f64>, Vec<f64>) {
        (self.members, self.non_members)
    }
}

/// Refuse an empty list and any NaN or ±Inf, naming the list.
pub(crate) fn check_scores(what: &'static str, v: &[f64]) -> Result<()> {
    if v.is_empty() {
        return Err(Error::TooFewSamples {
            what,
            needed: 1,
            got: 0,
        });
    }
    if let Some(first_index) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::NonFinite {
            what,
            count: v.iter().filter(|x| !x.is_finite()).count(),
            first_index,
        });
    }
    Ok(())
}
