//! MIS estimators at audit scale, against the irreducible cost in the same run.
//!
//! (a) ROC statistics (AUC, best-threshold advantage, TPR at 0.1 % and 1 %) on 10⁶ + 10⁶
//!     scores, beside a plain `sort_unstable_by(f64::total_cmp)` of the same 2·10⁶ values.
//! (b) A 1000-resample bootstrap of those statistics on 10⁵ + 10⁵ scores, beside the naive
//!     bootstrap that builds and re-sorts every resample (timed on 20 resamples; multiply by
//!     50 to compare).

use criterion::{Criterion, criterion_group, criterion_main};
use quantlens::MembershipSample;
use quantlens::mis::{Bootstrap, Roc, Statistic};
use quantlens::rng::SplitMix64;
use std::hint::black_box;
use std::time::Duration;

/// Gaussian losses, members shifted down by 0.5, from a fixed seed.
fn sample(n: usize, seed: u64) -> MembershipSample {
    let mut g = SplitMix64::new(seed);
    let members = (0..n).map(|_| g.normal() - 0.5).collect();
    let non_members = (0..n).map(|_| g.normal()).collect();
    MembershipSample::new(members, non_members).expect("finite scores")
}

const STATS: [Statistic; 4] = [
    Statistic::Advantage,
    Statistic::Auc,
    Statistic::TprAtFpr(0.001),
    Statistic::TprAtFpr(0.01),
];

fn roc_statistics(c: &mut Criterion) {
    let s = sample(1_000_000, 1);
    let all: Vec<f64> = s.members().iter().chain(s.non_members()).copied().collect();
    let mut g = c.benchmark_group("roc_1e6+1e6");
    g.sample_size(10);
    // The floor: one copy and one sort of every score.
    g.bench_function("peer/copy+sort_unstable_by(total_cmp)", |b| {
        b.iter(|| {
            let mut v = black_box(&all).clone();
            v.sort_unstable_by(f64::total_cmp);
            v
        })
    });
    g.bench_function("quantlens/roc+auc+advantage+tpr@fpr", |b| {
        b.iter(|| {
            let roc = Roc::new(black_box(&s));
            let t1 = roc.tpr_at_fpr(0.001).expect("enough non-members").tpr;
            let t2 = roc.tpr_at_fpr(0.01).expect("enough non-members").tpr;
            (roc.auc(), roc.advantage(), t1, t2)
        })
    });
    g.finish();
}

fn bootstrap(c: &mut Criterion) {
    let s = sample(100_000, 2);
    let roc = Roc::new(&s);
    let mut g = c.benchmark_group("bootstrap_1e5+1e5");
    g.sample_size(10);
    let boot = Bootstrap::new(1000, 0.95, 3).expect("valid settings");
    g.bench_function("quantlens/1000_resamples", |b| {
        b.iter(|| boot.replicates(black_box(&roc), &STATS).expect("valid"))
    });
    // The naive way: materialise each resample and sort it again.
    g.bench_function("naive_resort/20_resamples", |b| {
        b.iter(|| {
            let mut rng = SplitMix64::new(3);
            let mut draw = |v: &[f64]| -> Vec<f64> {
                (0..v.len())
                    .map(|_| v[((rng.next_u64() as u128 * v.len() as u128) >> 64) as usize])
                    .collect()
            };
            (0..20)
                .map(|_| {
                    let r = MembershipSample::new(draw(s.members()), draw(s.non_members()))
                        .expect("finite");
                    let roc = Roc::from_sample(r);
                    (roc.auc(), roc.advantage())
                })
                .collect::<Vec<_>>()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = roc_statistics, bootstrap
}
criterion_main!(benches);
