//! Real data sets and membership splits.
//!
//! - [`digits`] is compiled into the crate (UCI digits, 57 KB), so examples need no download.
//! - [`breast_cancer`], [`wine`], [`b3db_classification`] and [`b3db_regression`] read the
//!   fixture cache that `scripts/fetch-fixtures.sh` fills and verifies (SHA-256); when a file
//!   is absent the error names the script. `QUANTLENS_FIXTURES` overrides the cache location.
//! - [`Standardizer`] imputes and standardises with statistics of the training members only.
//! - [`MembershipSplit`] draws members, non-members, calibration, population and reference
//!   sets from a seed.

mod b3db;
mod fixtures;
mod sklearn;
mod split;
mod standardize;
mod tabular;

pub use b3db::{
    b3db_classification, b3db_regression, load_b3db_classification, load_b3db_regression,
};
pub use fixtures::{FIXTURES_ENV, fixture_path, fixtures_dir};
pub use sklearn::{breast_cancer, digits, load_sklearn_csv, wine};
pub use split::{MembershipSplit, MembershipSplitBuilder, ReferenceMode, ReferenceSplit};
pub use standardize::{StandardizeOptions, Standardizer};
pub use tabular::{Groups, TabularData, Target};
