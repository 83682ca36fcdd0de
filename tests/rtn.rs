//! Uniform quantizer against closed forms and independent references, and its error contract.

mod common;

use approx::assert_relative_eq;
use candle_core::{DType, Device, IndexOp, Tensor};
use common::{TestRng, values};
use quantlens::{
    Error, Granularity, QuantFormat, QuantSpec, Quantizer, ScaleDType, UniformQuantizer,
};

/// Seeded standard normals (SplitMix64 + Box–Muller), independent of Candle's RNG.
fn normals(n: usize, seed: u64) -> Vec<f32> {
    let mut g = TestRng::new(seed);
    (0..n).map(|_| g.normal() as f32).collect()
}

fn matrix(rows: usize, cols: usize, seed: u64) -> Tensor {
    Tensor::from_vec(normals(rows * cols, seed), (rows, cols), &Device::Cpu).unwrap()
}

/// Mean squared error in f64, and the closed form mean over elements of step²/12.
fn mse_and_closed_form(q: &UniformQuantizer, w: &Tensor, divisor: f64) -> (f64, f64) {
    let qt = q.quantize(w, None).unwrap();
    let x = values(w);
    let y = values(&qt.dequantize(&Device::Cpu).unwrap());
    let mse = x
        .iter()
        .zip(&y)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum::<f64>()
        / x.len() as f64;
    let steps = qt.scales().to_f32_vec();
    let expected = steps
        .iter()
        .map(|s| (*s as f64).powi(2) / divisor)
        .sum::<f64>()
        / steps.len() as f64;
    (mse, expected)
}

#[test]
fn int4_g128_error_matches_uniform_rounding_closed_form() {
    // Rounding error of a uniform grid is ~U(−step/2, step/2): variance step²/12.
    let w = matrix(1024, 1024, 1);
    for spec in [
        QuantSpec::int4().per_group(128),
        QuantSpec::int4().per_group(128).asymmetric(),
    ] {
        let q = UniformQuantizer::new(spec).unwrap();
        let (mse, expected) = mse_and_closed_form(&q, &w, 12.0);
        let rel = (mse - expected).abs() / expected;
        println!(
            "{}: mse {mse:.6e}, step²/12 {expected:.6e}, rel {rel:.4}",
            q.name()
        );
        assert!(rel < 0.05, "{}: mse {mse} vs step²/12 {expected}", q.name());
    }
}

#[test]
fn stochastic_rounding_is_unbiased_with_step_squared_over_six() {
    // floor(t + u): error e = q − t has E[e] = 0 and E[e²] = E[f(1 − f)]·step² = step²/6
    // for a fractional part f uniform on [0, 1).
    let w = matrix(512, 512, 2);
    let q = UniformQuantizer::new(QuantSpec::int4().per_group(128).stochastic(11)).unwrap();
    let (mse, expected) = mse_and_closed_form(&q, &w, 6.0);
    assert!(
        (mse - expected).abs() / expected < 0.05,
        "mse {mse} vs step²/6 {expected}"
    );

    // Bias: the mean signed error over 2^18 elements is ~0 within 5 standard errors.
    let x = values(&w);
    let y = values(&q.fake_quantize(&w, None).unwrap());
    let errs: Vec<f64> = x
        .iter()
        .zip(&y)
        .map(|(a, b)| *b as f64 - *a as f64)
        .collect();
    let mean = errs.iter().sum::<f64>() / errs.len() as f64;
    let sd = (errs.iter().map(|e| e * e).sum::<f64>() / errs.len() as f64).sqrt();
    assert!(
        mean.abs() < 5.0 * sd / (errs.len() as f64).sqrt(),
        "bias {mean}"
    );
}

#[test]
fn stochastic_rounding_is_seeded() {
    let w = matrix(16, 256, 3);
    let a = UniformQuantizer::new(QuantSpec::int3().stochastic(1)).unwrap();
    let b = UniformQuantizer::new(QuantSpec::int3().stochastic(2)).unwrap();
    assert_eq!(a.quantize(&w, None).unwrap(), a.quantize(&w, None).unwrap());
    assert_ne!(
        a.quantize(&w, None).unwrap().codes(),
        b.quantize(&w, None).unwrap().codes()
    );
}

#[test]
fn symmetric_int8_matches_an_f64_reference() {
    // Independent reference in f64: scale = absmax/127 rounded up to f16, q = round(w/scale).
    let w = matrix(8, 96, 4);
    let qt = UniformQuantizer::new(QuantSpec::int8().per_channel())
        .unwrap()
        .quantize(&w, None)
        .unwrap();
    let x = values(&w);
    let codes = qt.codes().unpack();
    for r in 0..8 {
        let row = &x[r * 96..(r + 1) * 96];
        let absmax = row.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
        let scale = qt.scales().get(r) as f64;
        assert!(scale >= absmax / 127.0 && scale <= absmax / 127.0 * (1.0 + 1.0 / 1024.0));
        for (k, &v) in row.iter().enumerate() {
            let want = (v as f64 / scale).round_ties_even() as i32 + 128;
            assert_eq!(codes[r * 96 + k] as i32, want);
        }
    }
}

#[test]
fn sign_quantization_uses_mean_absolute_value() {
    let w = matrix(4, 64, 5);
    let qt = UniformQuantizer::new(QuantSpec::binary().per_group(32))
        .unwrap()
        .quantize(&w, None)
        .unwrap();
    assert_eq!(qt.format(), QuantFormat::Sign);
    let x = values(&w);
    let y = values(&qt.dequantize(&Device::Cpu).unwrap());
    for g in 0..8 {
        let mean = x[g * 32..(g + 1) * 32]
            .iter()
            .map(|v| v.abs() as f64)
            .sum::<f64>()
            / 32.0;
        assert_relative_eq!(qt.scales().get(g) as f64, mean, max_relative = 1e-3);
        for i in g * 32..(g + 1) * 32 {
            assert_eq!(
                y[i],
                qt.scales()
                    .get(g)
                    .copysign(if x[i] >= 0.0 { 1.0 } else { -1.0 })
            );
        }
    }
    assert_eq!(qt.bits_per_weight(), 1.0 + 16.0 / 32.0);
}

#[test]
fn storage_is_counted_honestly() {
    let w = matrix(64, 256, 6);
    let cases = [
        // (spec, expected bytes)
        (
            QuantSpec::int4().per_group(128).asymmetric(),
            64 * 256 / 2 + 128 * 2 + 128 / 2,
        ),
        (QuantSpec::int4().per_group(128), 64 * 256 / 2 + 128 * 2),
        (QuantSpec::int8().per_channel(), 64 * 256 + 64 * 2),
        (QuantSpec::int3().per_tensor(), 64 * 256 * 3 / 8 + 2),
        (
            QuantSpec::int2().per_group(64).asymmetric(),
            64 * 256 / 4 + 256 * 2 + 256 / 4,
        ),
        (
            QuantSpec::int8()
                .per_channel()
                .with_scale_dtype(ScaleDType::F32),
            64 * 256 + 64 * 4,
        ),
    ];
    for (spec, bytes) in cases {
        let qt = UniformQuantizer::new(spec)
            .unwrap()
            .quantize(&w, None)
            .unwrap();
        assert_eq!(qt.storage_bytes(), bytes, "{spec:?}");
        assert_eq!(qt.bits_per_weight(), bytes as f64 * 8.0 / (64.0 * 256.0));
    }
    // Dense 3-bit packing with a ragged tail: 3·13 = 39 bits → 5 bytes of codes.
    let w = matrix(1, 13, 7);
    let qt = UniformQuantizer::new(QuantSpec::int3())
        .unwrap()
        .quantize(&w, None)
        .unwrap();
    assert_eq!(qt.codes().storage_bytes(), 5);
}

#[test]
fn half_precision_inputs_keep_their_dtype() {
    let w = matrix(8, 128, 8);
    let q = UniformQuantizer::new(QuantSpec::int4().per_group(64)).unwrap();
    let reference = values(&q.fake_quantize(&w, None).unwrap());
    for dtype in [DType::F16, DType::BF16] {
        let wh = w.to_dtype(dtype).unwrap();
        let out = q.fake_quantize(&wh, None).unwrap();
        assert_eq!(out.dtype(), dtype);
        assert_eq!(out.dims(), &[8, 128]);
        // Same grid up to the input's rounding: at most one step apart (usually equal).
        let y = values(&out);
        let qt = q.quantize(&wh, None).unwrap();
        for (i, (a, b)) in reference.iter().zip(&y).enumerate() {
            assert!((a - b).abs() <= qt.scales().get(i / 64) * 1.01 + 1e-2 * a.abs());
        }
        assert_eq!(
            q.quantize(&wh, None)
                .unwrap()
                .dequantize_to(&Device::Cpu, DType::F32)
                .unwrap()
                .dtype(),
            DType::F32
        );
    }
}

#[test]
fn non_contiguous_input_equals_contiguous() {
    let w = matrix(64, 32, 9);
    let t = w.t().unwrap(); // [32, 64], strided
    assert!(!t.is_contiguous());
    let q = UniformQuantizer::new(QuantSpec::int4().per_group(16)).unwrap();
    assert_eq!(
        q.quantize(&t, None).unwrap(),
        q.quantize(&t.contiguous().unwrap(), None).unwrap()
    );
    // And a narrowed view with an offset into its storage.
    let v = w.i((10..20, ..)).unwrap();
    assert_eq!(
        q.quantize(&v, None).unwrap(),
        q.quantize(&v.contiguous().unwrap(), None).unwrap()
    );
}

#[test]
fn bad_input_is_a_clear_error() {
    let dev = Device::Cpu;
    assert!(matches!(
        UniformQuantizer::new(QuantSpec::new(0)),
        Err(Error::InvalidBits { bits: 0, .. })
    ));
    assert!(matches!(
        UniformQuantizer::new(QuantSpec::new(9)),
        Err(Error::InvalidBits { bits: 9, .. })
    ));
    assert!(matches!(
        UniformQuantizer::new(QuantSpec::int4().per_group(0)),
        Err(Error::InvalidGroupSize { group_size: 0 })
    ));
    assert!(matches!(
        UniformQuantizer::new(QuantSpec::binary().asymmetric()),
        Err(Error::Unsupported(_))
    ));

    let q = UniformQuantizer::new(QuantSpec::int4().per_group(100)).unwrap();
    let w = matrix(4, 256, 10);
    assert!(matches!(
        q.quantize(&w, None),
        Err(Error::GroupSizeMismatch {
            group_size: 100,
            in_features: 256
        })
    ));

    let q = UniformQuantizer::new(QuantSpec::int4()).unwrap();
    let v = Tensor::ones(16, DType::F32, &dev).unwrap();
    assert!(matches!(
        q.quantize(&v, None),
        Err(Error::RankMismatch { expected: 2, .. })
    ));
    let e = Tensor::zeros((0, 16), DType::F32, &dev).unwrap();
    assert!(matches!(
        q.quantize(&e, None),
        Err(Error::EmptyTensor { .. })
    ));
    let i = Tensor::ones((2, 16), DType::U8, &dev).unwrap();
    assert!(matches!(
        q.quantize(&i, None),
        Err(Error::UnsupportedDType {
            dtype: DType::U8,
            ..
        })
    ));

    let mut data = normals(4 * 64, 11);
    data[70] = f32::NAN;
    data[200] = f32::NEG_INFINITY;
    let bad = Tensor::from_vec(data, (4, 64), &dev).unwrap();
    match q.quantize(&bad, None) {
        Err(Error::NonFinite {
            count: 2,
            first_index: 70,
            ..
        }) => {}
        other => panic!("expected NonFinite at 70, got {other:?}"),
    }
    // Also through the large-group (two-pass) path.
    let mut data = normals(300 * 300, 12);
    data[89_999] = f32::INFINITY;
    let bad = Tensor::from_vec(data, (300, 300), &dev).unwrap();
    let qt = UniformQuantizer::new(QuantSpec::int8().per_tensor()).unwrap();
    assert!(matches!(
        qt.quantize(&bad, None),
        Err(Error::NonFinite {
            first_index: 89_999,
            ..
        })
    ));

    // A scale too large for f16, with the group named and a way out suggested.
    let huge = Tensor::from_vec(vec![1e6f32, -1e6, 3.0, 4.0], (2, 2), &dev).unwrap();
    let q2 = UniformQuantizer::new(QuantSpec::int2()).unwrap();
    let err = q2.quantize(&huge, None).unwrap_err();
    assert!(
        matches!(err, Error::ScaleOutOfRange { group: 0, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("ScaleDType::F32"));
    if let Error::ScaleOutOfRange { scale, .. } = err {
        assert_eq!(scale, 1e6); // absmax / (2^(2−1) − 1)
    }
    let q32 = UniformQuantizer::new(QuantSpec::int2().with_scale_dtype(ScaleDType::F32)).unwrap();
    assert!(q32.quantize(&huge, None).is_ok());

    // A buffer of the wrong size for dequantize_into.
    let qt = q.quantize(&w, None).unwrap();
    assert!(matches!(
        qt.dequantize_into(&mut [0.0; 3]),
        Err(Error::ShapeMismatch(_))
    ));
}

#[test]
fn names_are_stable_and_distinct() {
    let names: Vec<String> = [
        QuantSpec::int4().per_group(128).asymmetric(),
        QuantSpec::int4().per_group(128),
        QuantSpec::int8().per_channel(),
        QuantSpec::int8().per_tensor().stochastic(3),
        QuantSpec::binary().with_granularity(Granularity::PerGroup(64)),
        QuantSpec::int4().with_scale_dtype(ScaleDType::F32),
    ]
    .into_iter()
    .map(|s| UniformQuantizer::new(s).unwrap().name())
    .collect();
    assert_eq!(
        names,
        [
            "rtn-w4-g128-asym",
            "rtn-w4-g128-sym",
            "rtn-w8-c-sym",
            "rtn-w8-t-sym-sr3",
            "sign-w1-g64",
            "rtn-w4-c-sym-s32"
        ]
    );
}
