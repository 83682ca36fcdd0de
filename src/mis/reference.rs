//! Per-example losses of reference (shadow) models, and which of them trained on which
//! example: the input of reference-model attacks (LiRA, RMIA).

use crate::error::{Error, Result};
use crate::mis::MembershipSample;

/// Losses of `K` reference models on `N` audited examples, with a flag per (model, example)
/// saying whether that model trained on that example.
///
/// ```
/// use quantlens::mis::ReferenceLosses;
/// // Two reference models, three examples; model 0 trained on example 1.
/// let refs = ReferenceLosses::new(
///     vec![vec![0.9, 0.1, 1.2], vec![1.0, 0.8, 1.1]],
///     vec![vec![false, true, false], vec![false, false, false]],
/// )?;
/// assert_eq!((refs.models(), refs.examples()), (2, 3));
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceLosses {
    examples: usize,
    /// `losses[k][i]`: loss of reference model `k` on example `i`.
    losses: Vec<Vec<f64>>,
    trained_on: Vec<Vec<bool>>,
}

impl ReferenceLosses {
    /// `losses[k][i]` and `trained_on[k][i]` for reference model `k` and example `i`. Losses
    /// must be finite and non-negative.
    pub fn new(losses: Vec<Vec<f64>>, trained_on: Vec<Vec<bool>>) -> Result<Self> {
        if losses.is_empty() {
            return Err(Error::TooFewSamples {
                what: "reference models",
                needed: 1,
                got: 0,
            });
        }
        let examples = losses[0].len();
        if examples == 0 {
            return Err(Error::TooFewSamples {
                what: "reference-model examples",
                needed: 1,
                got: 0,
            });
        }
        if trained_on.len() != losses.len()
            || losses.iter().any(|l| l.len() != examples)
            || trained_on.iter().any(|t| t.len() != examples)
        {
            return Err(Error::ShapeMismatch(format!(
                "reference losses and membership flags must both be {} models × {examples} examples",
                losses.len()
            )));
        }
        for l in &losses {
            check_losses("reference-model losses", l)?;
        }
        Ok(ReferenceLosses {
            examples,
            losses,
            trained_on,
        })
    }

    /// Reference models that trained on none of the examples (offline references, or the
    /// population side of RMIA).
    pub fn offline(losses: Vec<Vec<f64>>) -> Result<Self> {
        let flags = losses.iter().map(|l| vec![false; l.len()]).collect();
        ReferenceLosses::new(losses, flags)
    }

    /// Number of reference models.
    pub fn models(&self) -> usize {
        self.losses.len()
    }

    /// Number of examples.
    pub fn examples(&self) -> usize {
        self.examples
    }

    /// Loss of model `k` on example `i`.
    pub fn loss(&self, k: usize, i: usize) -> f64 {
        self.losses[k][i]
    }

    /// Whether model `k` trained on example `i`.
    pub fn trained_on(&self, k: usize, i: usize) -> bool {
        self.trained_on[k][i]
    }
}

/// Losses must be finite and ≥ 0 (they are negative log-likelihoods or squared errors).
pub(crate) fn check_losses(what: &'static str, losses: &[f64]) -> Result<()> {
    if let Some(first_index) = losses.iter().position(|l| !l.is_finite()) {
        return Err(Error::NonFinite {
            what,
            count: losses.iter().filter(|l| !l.is_finite()).count(),
            first_index,
        });
    }
    if let Some(i) = losses.iter().position(|&l| l < 0.0) {
        return Err(Error::InvalidParameter {
            name: "losses",
            reason: format!("{what}: loss {} at index {i} is negative", losses[i]),
        });
    }
    Ok(())
}

/// Split attack scores (higher = more likely a member) into a [`MembershipSample`] by the true
/// membership of each example; scores are negated so that, as everywhere in `mis`, lower means
/// "member".
///
/// ```
/// use quantlens::mis::sample_from_scores;
/// let s = sample_from_scores(&[3.0, -1.0, 2.0], &[true, false, true])?;
/// assert_eq!(s.members(), &[-3.0, -2.0]);
/// # Ok::<(), quantlens::Error>(())
/// ```
pub fn sample_from_scores(scores: &[f64], is_member: &[bool]) -> Result<MembershipSample> {
    if scores.len() != is_member.len() {
        return Err(Error::ShapeMismatch(format!(
            "{} scores but {} membership flags",
            scores.len(),
            is_member.len()
        )));
    }
    let (mut members, mut non_members) = (Vec::new(), Vec::new());
    for (&s, &m) in scores.iter().zip(is_member) {
        if m {
            members.push(-s);
        } else {
            non_members.push(-s);
        }
    }
    MembershipSample::new(members, non_members)
}
