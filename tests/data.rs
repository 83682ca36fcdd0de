//! Data sets (embedded and fixtures), preprocessing and membership splits.
//!
//! Fixture tests run `scripts/fetch-fixtures.sh` first (idempotent; CI also runs it); when it
//! cannot fetch, they fail with a message naming the script rather than skipping.

mod common;

use std::collections::BTreeSet;

use proptest::prelude::*;
use quantlens::Error;
use quantlens::data::{
    self, MembershipSplit, ReferenceMode, StandardizeOptions, Standardizer, TabularData, Target,
};

fn class_counts(labels: &[u32], classes: usize) -> Vec<usize> {
    let mut c = vec![0; classes];
    for &l in labels {
        c[l as usize] += 1;
    }
    c
}

#[test]
fn embedded_digits_are_the_uci_digits() {
    let d = data::digits().unwrap();
    assert_eq!((d.len(), d.n_features()), (1797, 64));
    // Class sizes of the UCI optdigits test set as shipped by scikit-learn.
    assert_eq!(
        class_counts(d.labels().unwrap(), 10),
        [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    );
    assert!(
        d.features()
            .iter()
            .all(|&p| (0.0..=16.0).contains(&p) && p.fract() == 0.0)
    );
    assert_eq!(d.missing_values(), 0);
}

#[test]
fn breast_cancer_and_wine_from_fixtures() {
    common::ensure_fixtures();
    let bc = data::breast_cancer().expect("run scripts/fetch-fixtures.sh");
    assert_eq!((bc.len(), bc.n_features()), (569, 30));
    // WDBC: 212 malignant (label 0), 357 benign (label 1).
    assert_eq!(class_counts(bc.labels().unwrap(), 2), [212, 357]);
    assert_eq!(bc.row(0)[0], 17.99);
    let wine = data::wine().expect("run scripts/fetch-fixtures.sh");
    assert_eq!((wine.len(), wine.n_features()), (178, 13));
    assert_eq!(class_counts(wine.labels().unwrap(), 3), [59, 71, 48]);
}

#[test]
fn b3db_classification_from_fixtures() {
    common::ensure_fixtures();
    let b = data::b3db_classification().expect("run scripts/fetch-fixtures.sh");
    assert_eq!((b.len(), b.n_features()), (7807, 1613));
    // fixtures.md: 4,956 BBB+ / 2,851 BBB−.
    assert_eq!(class_counts(b.labels().unwrap(), 2), [2851, 4956]);
    let g = b.groups().unwrap();
    assert_eq!(g.names, ["A", "B", "C", "D"]);
    assert_eq!(class_counts(&g.ids, 4), [1058, 3621, 3077, 51]);
    // fixtures.md: about 9.6% of the numeric cells are missing.
    let frac = b.missing_values() as f64 / b.features().len() as f64;
    assert!((frac - 0.095).abs() < 0.005, "{frac}");
    assert_eq!(b.feature_names()[0], "ABC");
    assert!((b.row(0)[0] - 21.716_72).abs() < 1e-4);

    let r = data::b3db_regression().expect("run scripts/fetch-fixtures.sh");
    assert_eq!(r.len(), 1058);
    let Target::Values(v) = r.target() else {
        panic!("regression target")
    };
    assert!(v.iter().all(|x| x.is_finite() && (-3.0..=2.5).contains(x)));
}

#[test]
fn a_missing_fixture_names_the_script() {
    let err =
        data::load_sklearn_csv(std::path::Path::new("/nonexistent/wine_data.csv")).unwrap_err();
    assert!(matches!(err, Error::MissingFixture { .. }));
    assert!(
        err.to_string().contains("scripts/fetch-fixtures.sh"),
        "{err}"
    );
}

#[test]
fn malformed_tables_are_parse_errors_with_line_numbers() {
    let dir = std::env::temp_dir().join(format!("quantlens-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("bad.csv");
    std::fs::write(&p, "2,2,a,b\n1.0,2.0,0\n1.0,oops,1\n").unwrap();
    let err = data::load_sklearn_csv(&p).unwrap_err();
    assert!(matches!(err, Error::Parse { line: 3, .. }), "{err}");
    std::fs::write(&p, "2,2,a,b\n1.0,2.0,0\n1.0,2.0,7\n").unwrap();
    assert!(matches!(
        data::load_sklearn_csv(&p),
        Err(Error::Parse { line: 3, .. })
    ));
    std::fs::write(&p, "3,2,a,b\n1.0,2.0,0\n1.0,2.0,1\n").unwrap();
    assert!(matches!(
        data::load_sklearn_csv(&p),
        Err(Error::Parse { line: 1, .. })
    ));
    let t = dir.join("bad.tsv");
    std::fs::write(&t, "NO.\tBBB+/BBB-\tgroup\n1\tBBB+\tA\n").unwrap();
    assert!(matches!(
        data::load_b3db_classification(&t),
        Err(Error::Parse { .. })
    ));
    std::fs::remove_dir_all(&dir).ok();
}

/// A small table with missing values and one constant column.
fn toy() -> TabularData {
    let nan = f32::NAN;
    #[rustfmt::skip]
    let x = vec![
        1.0, 5.0, nan, 3.0,
        2.0, 5.0, nan, 1.0,
        3.0, 5.0, 1.0, nan,
        4.0, 5.0, nan, 7.0,
        100.0, 9.0, 2.0, 9.0,
    ];
    TabularData::new(
        "toy",
        x,
        (0..4).map(|j| format!("f{j}")).collect(),
        Target::Classes {
            labels: vec![0, 1, 0, 1, 0],
            names: vec!["a".into(), "b".into()],
        },
    )
    .unwrap()
}

#[test]
fn standardizer_uses_member_statistics_only() {
    let t = toy();
    let members = [0, 1, 2, 3];
    let s = Standardizer::fit_with(
        &t,
        &members,
        StandardizeOptions::default().max_missing_fraction(0.3),
    )
    .unwrap();
    // f1 is constant on the members (5), f2 is missing in 3/4 > 30%: both dropped.
    assert_eq!(s.kept_features(), [0, 3]);
    let z = s.transform(&t).unwrap();
    // f0 on members: 1,2,3,4 → mean 2.5, population sd √1.25.
    let sd0 = 1.25f64.sqrt();
    for (i, v) in [1.0, 2.0, 3.0, 4.0, 100.0].iter().enumerate() {
        assert!((z.row(i)[0] as f64 - (v - 2.5) / sd0).abs() < 1e-5);
    }
    // f3 on members: 3,1,(missing → median of 1,3,7 = 3),7 → values 3,1,3,7: mean 3.5.
    let (med, mean, sd) = s.statistics();
    assert_eq!(med[1], 3.0);
    assert!((mean[1] - 3.5).abs() < 1e-12);
    let sd3 = ((0.25 + 6.25 + 0.25 + 12.25) / 4.0f64).sqrt();
    assert!((sd[1] - sd3).abs() < 1e-12);
    assert!((z.row(2)[1] as f64 - (3.0 - 3.5) / sd3).abs() < 1e-5);
    // The non-member row (index 4) did not move the statistics.
    assert_eq!(z.missing_values(), 0);
    // Clipping.
    let c = Standardizer::fit_with(
        &t,
        &members,
        StandardizeOptions::default()
            .max_missing_fraction(0.3)
            .clip(3.0),
    )
    .unwrap();
    assert_eq!(c.transform(&t).unwrap().row(4)[0], 3.0);
    // Errors.
    assert!(Standardizer::fit(&t, &[0]).is_err());
    assert!(Standardizer::fit(&t, &[0, 9]).is_err());
    assert!(
        Standardizer::fit_with(&t, &members, StandardizeOptions::default().clip(-1.0)).is_err()
    );
}

#[test]
fn split_parts_are_disjoint_sized_and_reproducible() {
    let split = MembershipSplit::builder(103)
        .members(40)
        .non_members(30)
        .calibration(10)
        .seed(5)
        .build()
        .unwrap();
    let parts = [
        split.members(),
        split.non_members(),
        split.calibration(),
        split.population(),
    ];
    assert_eq!(parts.map(<[usize]>::len), [40, 30, 10, 23]);
    let all: BTreeSet<usize> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    assert_eq!(all, (0..103).collect());
    let again = MembershipSplit::builder(103)
        .members(40)
        .non_members(30)
        .calibration(10)
        .seed(5)
        .build()
        .unwrap();
    assert_eq!(split, again);
    let other = MembershipSplit::builder(103)
        .members(40)
        .non_members(30)
        .seed(6)
        .build()
        .unwrap();
    assert_ne!(split.members(), other.members());
    assert_eq!(
        split.to_string(),
        "103 rows, seed 5: 40 members, 30 non-members, 10 calibration, 23 population"
    );
    let half = MembershipSplit::builder(11).build().unwrap();
    assert_eq!((half.members().len(), half.non_members().len()), (5, 6));
}

#[test]
fn stratified_split_keeps_class_shares() {
    let labels: Vec<u32> = (0..1000).map(|i| if i % 10 < 2 { 1 } else { 0 }).collect();
    let split = MembershipSplit::builder(1000)
        .stratify(&labels)
        .seed(9)
        .build()
        .unwrap();
    for part in [split.members(), split.non_members()] {
        let ones = part.iter().filter(|&&i| labels[i] == 1).count();
        assert!((ones as i64 - 100).abs() <= 2, "{ones} of {}", part.len());
    }
    assert!(split.is_stratified());
}

#[test]
fn reference_splits_online_and_offline() {
    let online = MembershipSplit::builder(200)
        .members(80)
        .non_members(80)
        .reference_models(16, ReferenceMode::Online)
        .seed(3)
        .build()
        .unwrap();
    let audited: BTreeSet<usize> = online
        .members()
        .iter()
        .chain(online.non_members())
        .copied()
        .collect();
    for r in online.references() {
        // 160 audited rows, each IN for 8 of 16 models: about 80 rows a model.
        assert!((r.train.len() as i64 - 80).abs() <= 25, "{}", r.train.len());
        assert!(r.train.iter().all(|i| audited.contains(i)));
        assert!(r.train.windows(2).all(|w| w[0] < w[1]));
    }
    let total: usize = online.references().iter().map(|r| r.train.len()).sum();
    assert_eq!(total, 160 * 8);
    // Balanced: every audited row is IN for exactly half of the models.
    for &row in &audited {
        let ins = online
            .references()
            .iter()
            .filter(|r| r.contains(row))
            .count();
        assert_eq!(ins, 8, "row {row}");
    }
    assert!(
        MembershipSplit::builder(20)
            .reference_models(1, ReferenceMode::Online)
            .build()
            .is_err()
    );
    let offline = MembershipSplit::builder(200)
        .members(80)
        .non_members(80)
        .reference_models(4, ReferenceMode::Offline)
        .seed(3)
        .build()
        .unwrap();
    for r in offline.references() {
        assert_eq!(r.train.len(), 20);
        assert!(r.train.iter().all(|i| offline.population().contains(i)));
    }
    assert!(
        offline
            .to_string()
            .ends_with("; 4 offline reference models of 20 rows")
    );
    // Offline needs a population.
    assert!(
        MembershipSplit::builder(10)
            .reference_models(2, ReferenceMode::Offline)
            .build()
            .is_err()
    );
}

#[test]
fn split_refuses_impossible_sizes() {
    assert!(
        MembershipSplit::builder(10)
            .members(8)
            .non_members(3)
            .build()
            .is_err()
    );
    assert!(MembershipSplit::builder(10).members(0).build().is_err());
    assert!(MembershipSplit::builder(1).build().is_err());
    assert!(
        MembershipSplit::builder(10)
            .stratify(&[0, 1])
            .build()
            .is_err()
    );
}

proptest! {
    #[test]
    fn any_valid_split_is_a_partition(n in 2usize..300, m_frac in 0.05f64..0.5, c_frac in 0.0f64..0.3, seed: u64, strat: bool) {
        let members = ((n as f64 * m_frac) as usize).max(1);
        let calibration = (n as f64 * c_frac) as usize;
        prop_assume!(members + calibration < n);
        let labels: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
        let mut b = MembershipSplit::builder(n).members(members).calibration(calibration).seed(seed);
        if strat {
            b = b.stratify(&labels);
        }
        let s = b.build().unwrap();
        let mut all: Vec<usize> = [s.members(), s.non_members(), s.calibration(), s.population()].concat();
        all.sort_unstable();
        prop_assert_eq!(all, (0..n).collect::<Vec<_>>());
        prop_assert_eq!(s.members().len(), members);
        prop_assert_eq!(s.calibration().len(), calibration);
    }
}
