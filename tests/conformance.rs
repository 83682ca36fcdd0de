//! Every RTN configuration through the public conformance suite.

use candle_core::DType;
use quantlens::testing::{Conformance, ErrorBound};
use quantlens::{Granularity, QuantSpec, Quantizer, Rounding, ScaleDType, UniformQuantizer};

const GRANULARITIES: [Granularity; 5] = [
    Granularity::PerTensor,
    Granularity::PerChannel,
    Granularity::PerGroup(8),
    Granularity::PerGroup(32),
    Granularity::PerGroup(128),
];

fn suite_for(spec: &QuantSpec) -> Conformance {
    let multiple = match spec.granularity {
        Granularity::PerGroup(g) => g,
        _ => 8,
    };
    let bound = match (spec.bits, spec.rounding) {
        (1, _) => ErrorBound::Unchecked,
        (_, Rounding::Nearest) => ErrorBound::HalfStep,
        (_, Rounding::Stochastic { .. }) => ErrorBound::FullStep,
    };
    let suite = Conformance::new()
        .cases(24)
        .cols_multiple_of(multiple)
        .col_blocks(1..=3)
        .error_bound(bound);
    if spec.scale_dtype == ScaleDType::F32 {
        // f32 scales hold any finite magnitude, so push far beyond f16's range.
        suite.log10_magnitude(-30.0..=30.0).dtypes(vec![DType::F32])
    } else {
        suite
    }
}

fn all_specs() -> Vec<QuantSpec> {
    let mut specs = Vec::new();
    for g in GRANULARITIES {
        for rounding in [Rounding::Nearest, Rounding::Stochastic { seed: 7 }] {
            specs.push(
                QuantSpec::binary()
                    .with_granularity(g)
                    .with_rounding(rounding),
            );
            for bits in 2..=8 {
                for symmetric in [true, false] {
                    let s = QuantSpec::new(bits)
                        .with_granularity(g)
                        .with_rounding(rounding);
                    specs.push(if symmetric {
                        s.symmetric()
                    } else {
                        s.asymmetric()
                    });
                }
            }
        }
    }
    specs
}

#[test]
fn every_rtn_configuration_conforms() {
    let specs = all_specs();
    assert_eq!(specs.len(), 5 * 2 * (1 + 7 * 2));
    for spec in specs {
        let q = UniformQuantizer::new(spec).expect("valid spec");
        suite_for(&spec).run(&q);
    }
}

#[test]
fn other_scale_dtypes_conform() {
    for dtype in [ScaleDType::F32, ScaleDType::BF16] {
        for bits in [2, 3, 4, 8] {
            for g in [Granularity::PerChannel, Granularity::PerGroup(32)] {
                let spec = QuantSpec::new(bits)
                    .with_granularity(g)
                    .asymmetric()
                    .with_scale_dtype(dtype);
                let q = UniformQuantizer::new(spec).unwrap();
                suite_for(&spec).run(&q);
            }
        }
    }
}

/// The suite must catch a broken quantizer: one whose fake_quantize drifts from dequantize.
#[test]
#[should_panic(expected = "dequantize != fake_quantize")]
fn suite_catches_a_fake_quantize_mismatch() {
    struct Drifting(UniformQuantizer);
    impl Quantizer for Drifting {
        fn name(&self) -> String {
            "drifting".into()
        }
        fn quantize(
            &self,
            w: &candle_core::Tensor,
            c: Option<&quantlens::Calibration>,
        ) -> quantlens::Result<quantlens::QuantizedTensor> {
            self.0.quantize(w, c)
        }
        fn fake_quantize(
            &self,
            w: &candle_core::Tensor,
            c: Option<&quantlens::Calibration>,
        ) -> quantlens::Result<candle_core::Tensor> {
            Ok(self.0.fake_quantize(w, c)?.affine(1.001, 1e-3)?)
        }
    }
    let q = Drifting(UniformQuantizer::new(QuantSpec::int4()).unwrap());
    Conformance::new().cases(4).run(&q);
}

/// …and one whose error exceeds its claimed bound (stochastic rounding claimed as nearest).
#[test]
#[should_panic(expected = "fails conformance")]
fn suite_catches_a_violated_error_bound() {
    let q = UniformQuantizer::new(QuantSpec::int3().stochastic(1)).unwrap();
    Conformance::new()
        .cases(16)
        .error_bound(ErrorBound::HalfStep)
        .run(&q);
}

/// The level-based bounds agree with the step-based ones on uniform grids: nearest rounding
/// lands on the nearest level, stochastic rounding on a bracketing one.
#[test]
fn level_bounds_hold_for_uniform_grids() {
    for bits in [2, 4, 8] {
        for spec in [
            QuantSpec::new(bits).per_group(8).asymmetric(),
            QuantSpec::new(bits).per_channel(),
        ] {
            let q = UniformQuantizer::new(spec).unwrap();
            Conformance::new()
                .cases(12)
                .error_bound(ErrorBound::NearestLevel)
                .run(&q);
            let q = UniformQuantizer::new(spec.stochastic(3)).unwrap();
            Conformance::new()
                .cases(12)
                .error_bound(ErrorBound::AdjacentLevel)
                .run(&q);
        }
    }
}

/// …and catch what they should: stochastic rounding is not nearest-level rounding.
#[test]
#[should_panic(expected = "not its nearest level")]
fn nearest_level_bound_catches_stochastic_rounding() {
    let q = UniformQuantizer::new(QuantSpec::int3().stochastic(1)).unwrap();
    Conformance::new()
        .cases(16)
        .error_bound(ErrorBound::NearestLevel)
        .run(&q);
}
