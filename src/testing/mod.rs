//! Property-test kit for quantizers (feature `testing`).
//!
//! * [`strategies`]: proptest strategies for weight matrices with the shapes and values that
//!   break quantizers — outliers, constant and all-zero rows, tiny and huge magnitudes — in
//!   f32, f16 and bf16.
//! * [`conformance`]: a suite any [`Quantizer`](crate::Quantizer) can run in its own tests.
//!
//! ```
//! use quantlens::testing::{Conformance, ErrorBound};
//! use quantlens::{QuantSpec, UniformQuantizer};
//!
//! let q = UniformQuantizer::new(QuantSpec::int4().per_group(32).asymmetric())?;
//! Conformance::new()
//!     .cols_multiple_of(32)
//!     .error_bound(ErrorBound::HalfStep)
//!     .cases(8)
//!     .run(&q);
//! # Ok::<(), quantlens::Error>(())
//! ```

pub mod conformance;
pub mod strategies;

pub use conformance::{
    Conformance, ErrorBound, check_bad_inputs, check_bad_inputs_with, check_case, check_case_with,
    test_calibration,
};
pub use strategies::{WeightKind, WeightMatrix, weight_matrix};
