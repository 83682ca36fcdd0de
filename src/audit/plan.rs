//! The audit plan: the ordered list of configurations an [`Audit`](super::Audit) measures,
//! and the seeds derived from the audit's one seed.
//!
//! A row's position in the plan is its identity: shards select rows by it, a resumed run
//! skips the positions its checkpoint has, and every random choice of a row derives from the
//! audit seed and that position alone — so a row's numbers do not depend on which process,
//! thread or run computed it.

use serde::{Deserialize, Serialize};

use crate::rng;

use super::report::RowKind;

/// One configuration of an audit: which trained model, which scheme.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PlanEntry {
    /// Position in the plan (0-based); the row's [`index`](super::AuditRow::index).
    pub index: usize,
    /// Which of the K repeated trainings (0-based).
    pub training: usize,
    /// Position of the scheme within one training's rows: 0 is full precision, then the
    /// quantizers, then the perturbations, in the order given.
    pub slot: usize,
    /// The scheme's name.
    pub scheme: String,
    /// Full precision, quantizer or perturbation.
    pub kind: RowKind,
}

/// The name of the full-precision row.
pub const FULL_PRECISION: &str = "full-precision";

/// Independent seed streams, one per use, so that adding a row or a training never changes
/// the seeds of the others.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SeedStream {
    /// The membership split of training k.
    Split = 1,
    /// The training run of training k.
    Train = 2,
    /// A row's own random choices (perturbation noise).
    Row = 3,
    /// The bootstrap behind every interval (one seed for all rows: common random numbers make
    /// rows comparable).
    Bootstrap = 4,
}

/// The seed of item `i` (a training or a row) in stream `stream` of audit seed `seed`.
pub(crate) fn derived_seed(seed: u64, stream: SeedStream, i: usize) -> u64 {
    rng::nth(
        rng::mix(seed ^ (stream as u64).wrapping_mul(0xA24B_AED4_963E_E407)),
        i as u64 + 1,
    )
}

/// The plan for `trainings` repeated trainings of the `slots` schemes (full precision first).
pub(crate) fn build(trainings: usize, slots: &[(String, RowKind)]) -> Vec<PlanEntry> {
    let mut plan = Vec::with_capacity(trainings * slots.len());
    for training in 0..trainings {
        for (slot, (scheme, kind)) in slots.iter().enumerate() {
            plan.push(PlanEntry {
                index: plan.len(),
                training,
                slot,
                scheme: scheme.clone(),
                kind: *kind,
            });
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_differ_across_streams_and_items() {
        let mut seen = std::collections::BTreeSet::new();
        for stream in [
            SeedStream::Split,
            SeedStream::Train,
            SeedStream::Row,
            SeedStream::Bootstrap,
        ] {
            for i in 0..50 {
                assert!(seen.insert(derived_seed(7, stream, i)));
            }
        }
        assert_eq!(
            derived_seed(7, SeedStream::Row, 3),
            derived_seed(7, SeedStream::Row, 3)
        );
        assert_ne!(
            derived_seed(7, SeedStream::Row, 3),
            derived_seed(8, SeedStream::Row, 3)
        );
    }

    #[test]
    fn plan_repeats_the_slots_per_training() {
        let slots = vec![
            (FULL_PRECISION.to_string(), RowKind::FullPrecision),
            ("int4".to_string(), RowKind::Quantizer),
        ];
        let plan = build(3, &slots);
        assert_eq!(plan.len(), 6);
        assert_eq!((plan[3].training, plan[3].slot, plan[3].index), (1, 1, 3));
        assert_eq!(plan[5].scheme, "int4");
    }
}
