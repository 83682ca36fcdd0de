//! Float formats (FP8, FP4, MX) and activation quantization against independent f64
//! references: values enumerated from the bit layout, nearest levels by brute force, scales
//! rounded up by search, the OCP block exponent by repeated doubling; ml_dtypes for encoding.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{TestRng, values};
use quantlens::model::{
    Mlp, MlpConfig, QuantizableModel, QuantizeActivations, SequentialQuantization,
};
use quantlens::{
    ActivationFormat, ActivationQuantizer, Calibration, Error, FloatFormat, FloatQuantizer,
    Granularity, QuantFormat, QuantSpec, Quantizer, ScaleDType, UniformQuantizer,
};

const FORMATS: [FloatFormat; 3] = [FloatFormat::E4M3, FloatFormat::E5M2, FloatFormat::E2M1];

// ---------------------------------------------------------------- independent references

/// The finite non-negative values of a format, ascending, written out from the layout:
/// subnormals `k · 2^(1−bias−m)`, normals `k · 2^(e−bias−m)` for `k ∈ [2^m, 2^(m+1))`.
/// The magnitude code of the i-th value is `i` (codes increase with magnitude).
fn positive_levels(f: FloatFormat) -> Vec<f64> {
    let (e_bits, m, top_exp) = match f {
        FloatFormat::E4M3 => (4, 3, 15),
        FloatFormat::E5M2 => (5, 2, 30),
        FloatFormat::E2M1 => (2, 1, 3),
    };
    let bias = (1 << (e_bits - 1)) - 1;
    let mut v = vec![0.0];
    v.extend((1..1 << m).map(|k| k as f64 * 2f64.powi(1 - bias - m)));
    for e in 1..=top_exp {
        v.extend(((1 << m)..(2 << m)).map(|k| k as f64 * 2f64.powi(e - bias - m)));
    }
    if f == FloatFormat::E4M3 {
        v.pop(); // S.1111.111 is NaN
    }
    v
}

/// Nearest level to `t` (f64 distances), ties to the even code, beyond the top saturating;
/// returns the code (sign bit from `t`).
fn nearest_code(levels: &[f64], bits: u8, t: f32) -> u8 {
    let a = (t as f64).abs();
    let mut best = 0usize;
    for i in 1..levels.len() {
        let (d_best, d) = ((a - levels[best]).abs(), (a - levels[i]).abs());
        if d < d_best || (d == d_best && i % 2 == 0) {
            best = i;
        }
    }
    best as u8
        | if t.is_sign_negative() {
            1 << (bits - 1)
        } else {
            0
        }
}

fn code_value(levels: &[f64], bits: u8, code: u8) -> f64 {
    let sign_bit = 1u8 << (bits - 1);
    let v = levels[(code & (sign_bit - 1)) as usize];
    if code & sign_bit != 0 { -v } else { v }
}

/// The smallest value of `dtype` at or above `x ≥ 0`, by searching its representable values.
fn round_up_by_search(x: f32, dtype: ScaleDType) -> f32 {
    match dtype {
        ScaleDType::F32 => x,
        ScaleDType::F16 => (0..0x7C00u16)
            .map(|b| half::f16::from_bits(b).to_f32())
            .find(|&v| v >= x)
            .expect("fits f16"),
        ScaleDType::BF16 => (0..0x7F80u16)
            .map(|b| half::bf16::from_bits(b).to_f32())
            .find(|&v| v >= x)
            .expect("fits bf16"),
        ScaleDType::E8M0 => (-127..=127)
            .map(|k| 2f64.powi(k) as f32)
            .find(|&v| v >= x)
            .expect("fits e8m0"),
    }
}

/// `floor(log2 a)` for `a > 0` by doubling and halving in f64 (exact for every f32).
fn floor_log2_by_doubling(a: f32) -> i32 {
    let a = a as f64;
    let (mut k, mut p) = (0i32, 1f64);
    while p > a {
        p /= 2.0;
        k -= 1;
    }
    while p * 2.0 <= a {
        p *= 2.0;
        k += 1;
    }
    k
}

fn emax_elem(f: FloatFormat) -> i32 {
    match f {
        FloatFormat::E4M3 => 8,
        FloatFormat::E5M2 => 15,
        FloatFormat::E2M1 => 2,
    }
}

/// Codes and scales of one quantization, written out group by group.
struct Reference {
    codes: Vec<u8>,
    scales: Vec<f32>,
}

fn reference(x: &[f32], group_len: usize, q: &FloatQuantizer) -> Reference {
    let f = q.format();
    let levels = positive_levels(f);
    let max = *levels.last().unwrap();
    let mut r = Reference {
        codes: vec![],
        scales: vec![],
    };
    for xs in x.chunks(group_len) {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if q.is_microscaling() {
            if amax == 0.0 {
                2f64.powi(-127) as f32
            } else {
                let k = (floor_log2_by_doubling(amax) - emax_elem(f)).clamp(-127, 127);
                2f64.powi(k) as f32
            }
        } else {
            // The scale is absmax / max_finite, one f32 division, then rounded up.
            let mut raw = amax / max as f32;
            if raw == 0.0 && amax > 0.0 {
                raw = f32::from_bits(1);
            }
            round_up_by_search(raw, q.scale_dtype())
        };
        r.scales.push(scale);
        for &w in xs {
            r.codes.push(if amax == 0.0 {
                0
            } else {
                nearest_code(&levels, f.bits(), w / scale)
            });
        }
    }
    r
}

/// Gaussian weights with a few outliers (×20), and some exact zeros.
fn weights(rows: usize, cols: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut g = TestRng::new(seed);
    (0..rows * cols)
        .map(|i| {
            let z = g.normal() as f32 * scale;
            match i % 97 {
                3 => 20.0 * z,
                50 => 0.0,
                _ => z,
            }
        })
        .collect()
}

fn check_against_reference(q: &FloatQuantizer, x: &[f32], rows: usize, cols: usize) {
    let w = Tensor::from_slice(x, (rows, cols), &Device::Cpu).unwrap();
    let qt = q.quantize(&w, None).unwrap();
    let g = q.granularity().group_len(rows, cols).unwrap();
    let r = reference(x, g, q);
    assert_eq!(qt.format(), QuantFormat::Float(q.format()));
    assert_eq!(qt.scales().to_f32_vec(), r.scales, "{} scales", q.name());
    assert_eq!(
        qt.scales().dtype(),
        Some(q.scale_dtype()),
        "{} scale dtype",
        q.name()
    );
    let codes = qt.codes().unpack();
    let levels = positive_levels(q.format());
    let deq = values(&qt.dequantize(&Device::Cpu).unwrap());
    for i in 0..x.len() {
        assert_eq!(
            codes[i],
            r.codes[i],
            "{}: element {i} = {} (scale {})",
            q.name(),
            x[i],
            r.scales[i / g]
        );
        // The value: one f32 product of the scale and the level.
        let want =
            (r.scales[i / g] * code_value(&levels, q.format().bits(), r.codes[i]) as f32).to_bits();
        assert_eq!(deq[i].to_bits(), want, "{}: value {i}", q.name());
    }
}

fn configurations() -> Vec<FloatQuantizer> {
    let mut qs = Vec::new();
    for f in [FloatFormat::E4M3, FloatFormat::E5M2] {
        for g in [
            Granularity::PerTensor,
            Granularity::PerChannel,
            Granularity::PerGroup(32),
        ] {
            for dt in [
                ScaleDType::F32,
                ScaleDType::F16,
                ScaleDType::BF16,
                ScaleDType::E8M0,
            ] {
                qs.push(
                    FloatQuantizer::new(f)
                        .with_granularity(g)
                        .with_scale_dtype(dt),
                );
            }
        }
    }
    for g in [16, 32] {
        for dt in [ScaleDType::F16, ScaleDType::F32, ScaleDType::E8M0] {
            qs.push(FloatQuantizer::fp4_e2m1().per_group(g).with_scale_dtype(dt));
        }
    }
    qs.push(FloatQuantizer::fp4_e2m1().per_channel());
    for f in FORMATS {
        qs.push(FloatQuantizer::mx(f));
    }
    qs
}

// ---------------------------------------------------------------- encoding

#[test]
fn encode_agrees_with_ml_dtypes() {
    // Written by scripts/float_reference.py (ml_dtypes 0.6.0); inputs within ±max_finite.
    let csv = include_str!("data/float_formats_ml_dtypes.csv");
    let mut checked = [0usize; 3];
    for line in csv.lines().skip(1) {
        let mut it = line.split(',');
        let (name, bits, code) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        let k = match name {
            "e4m3" => 0,
            "e5m2" => 1,
            "e2m1" => 2,
            other => panic!("unknown format {other}"),
        };
        let x = f32::from_bits(u32::from_str_radix(bits, 16).unwrap());
        let want: u8 = code.parse().unwrap();
        assert_eq!(FORMATS[k].encode(x), want, "{name}: {x:e}");
        checked[k] += 1;
    }
    assert!(checked.iter().all(|&n| n >= 1000), "{checked:?}");
}

#[test]
fn encode_matches_the_independent_enumeration_on_a_log_sweep() {
    for f in FORMATS {
        let levels = positive_levels(f);
        assert_eq!(f.max_finite() as f64, *levels.last().unwrap());
        let mut g = TestRng::new(1);
        for _ in 0..20_000 {
            // log-uniform from min_subnormal/16 to 4·max, random sign
            let lo = (f.min_subnormal() / 16.0).log2() as f64;
            let hi = (4.0 * f.max_finite()).log2() as f64;
            let mut x = 2f64.powf(lo + (hi - lo) * g.uniform()) as f32;
            if g.uniform() < 0.5 {
                x = -x;
            }
            assert_eq!(
                f.encode(x),
                nearest_code(&levels, f.bits(), x),
                "{f:?} {x:e}"
            );
        }
    }
}

// ---------------------------------------------------------------- weight quantizers

#[test]
fn every_configuration_matches_the_f64_reference() {
    for q in configurations() {
        for (rows, cols, scale, seed) in [(7, 64, 1.0, 1), (3, 96, 3e-3, 2), (5, 32, 250.0, 3)] {
            let x = weights(rows, cols, scale, seed);
            check_against_reference(&q, &x, rows, cols);
        }
    }
}

#[test]
fn large_groups_and_thread_counts_give_the_reference_bytes() {
    // 300 × 320: per-tensor groups of 96 000 elements take the parallel two-pass reduction.
    let (rows, cols) = (300, 320);
    let x = weights(rows, cols, 0.02, 9);
    let w = Tensor::from_slice(&x, (rows, cols), &Device::Cpu).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for q in [
        FloatQuantizer::fp8_e4m3().per_tensor(),
        FloatQuantizer::fp8_e5m2(),
        FloatQuantizer::fp4_e2m1(),
        FloatQuantizer::mxfp8(),
        FloatQuantizer::mxfp4(),
    ] {
        check_against_reference(&q, &x, rows, cols);
        let one = pool.install(|| q.quantize(&w, None)).unwrap();
        assert_eq!(one, q.quantize(&w, None).unwrap(), "{}", q.name());
    }
}

#[test]
fn mx_block_exponent_follows_the_ocp_formula() {
    // Crafted blocks: amax exactly a power of two, just below one, an f32 subnormal, the
    // largest f32, zero; the other 31 elements smaller.
    let amaxes = [
        1.0f32,
        2f32.powi(10),
        2f32.powi(10).next_down(),
        7.0,
        0.75,
        1e-40,
        f32::from_bits(1),
        f32::MAX,
        3e-38,
        0.0,
    ];
    for f in FORMATS {
        let mut row = Vec::new();
        for (b, &a) in amaxes.iter().enumerate() {
            let mut block = vec![a / 3.0; 32];
            block[(b * 7) % 32] = if b % 2 == 0 { a } else { -a };
            row.extend(block);
        }
        let w = Tensor::from_slice(&row, (1, row.len()), &Device::Cpu).unwrap();
        let qt = FloatQuantizer::mx(f).quantize(&w, None).unwrap();
        let scales = qt.scales().to_f32_vec();
        for (b, &a) in amaxes.iter().enumerate() {
            let k = if a == 0.0 {
                -127
            } else {
                (floor_log2_by_doubling(a) - emax_elem(f)).clamp(-127, 127)
            };
            assert_eq!(scales[b] as f64, 2f64.powi(k), "{f:?}: amax {a:e}");
        }
        // One E8M0 byte per block.
        assert_eq!(qt.scales().storage_bytes(), amaxes.len());
        // A block whose amax sits at 2^(emax+1)·X·(1 − ε) saturates to max_finite·X.
        let x = scales[2]; // amax just below 2^10
        let deq = values(&qt.dequantize(&Device::Cpu).unwrap());
        assert_eq!(deq[64 + 14].abs(), f.max_finite() * x);
    }
}

#[test]
fn documented_error_bounds_hold() {
    for q in configurations() {
        let f = q.format();
        let m = f.mantissa_bits() as i32;
        let min_normal = 2f64.powi(1 - f.bias());
        let (rows, cols) = (8, 128);
        let x = weights(rows, cols, 1.0, 17);
        let w = Tensor::from_slice(&x, (rows, cols), &Device::Cpu).unwrap();
        let qt = q.quantize(&w, None).unwrap();
        let y = values(&qt.dequantize(&Device::Cpu).unwrap());
        let g = qt.group_len();
        let saturation = 1.0 - f.max_finite() as f64 / 2f64.powi(f.emax() + 1);
        for i in 0..x.len() {
            let s = qt.scales().get(i / g) as f64;
            let (w, y) = (x[i] as f64, y[i] as f64);
            let err = (w - y).abs();
            let t = w.abs() / s;
            // (Absmax scaling may put the largest weight a rounding above max_finite.)
            let allowed = if t > f.max_finite() as f64 * (1.0 + 1e-6) {
                assert!(
                    q.is_microscaling(),
                    "{}: absmax scaling saturated",
                    q.name()
                );
                saturation * w.abs()
            } else if t >= min_normal {
                2f64.powi(-(m + 1)) * w.abs()
            } else {
                s * f.min_subnormal() as f64 / 2.0
            };
            // Plus the f32 rounding of the division and the product.
            assert!(
                err <= allowed * (1.0 + 1e-6) + 1e-7 * w.abs(),
                "{}: |{w} − {y}| = {err} > {allowed}",
                q.name()
            );
        }
    }
    // The saturation bounds quoted in the docs.
    let sat = |f: FloatFormat| 1.0 - f.max_finite() / 2f32.powi(f.emax() + 1);
    assert_eq!(sat(FloatFormat::E4M3), 0.125);
    assert_eq!(sat(FloatFormat::E5M2), 0.125);
    assert_eq!(sat(FloatFormat::E2M1), 0.25);
}

#[test]
fn bad_input_is_a_clear_error() {
    let dev = Device::Cpu;
    let mut data = vec![0.5f32; 4 * 64];
    data[37] = f32::NAN;
    data[100] = f32::INFINITY;
    let nan = Tensor::from_vec(data, (4, 64), &dev).unwrap();
    for q in configurations() {
        match q.quantize(&nan, None) {
            Err(Error::NonFinite {
                what,
                count,
                first_index,
            }) => {
                assert_eq!(
                    (what, count, first_index),
                    ("weight", 2, 37),
                    "{}",
                    q.name()
                )
            }
            other => panic!("{}: {other:?}", q.name()),
        }
    }
    let q = FloatQuantizer::fp8_e4m3();
    let rank1 = Tensor::ones(8, DType::F32, &dev).unwrap();
    assert!(matches!(
        q.quantize(&rank1, None),
        Err(Error::RankMismatch { expected: 2, .. })
    ));
    let empty = Tensor::zeros((0, 8), DType::F32, &dev).unwrap();
    assert!(matches!(
        q.quantize(&empty, None),
        Err(Error::EmptyTensor { .. })
    ));
    let ints = Tensor::ones((2, 8), DType::U32, &dev).unwrap();
    assert!(matches!(
        q.quantize(&ints, None),
        Err(Error::UnsupportedDType { .. })
    ));
    let w = Tensor::ones((2, 40), DType::F32, &dev).unwrap();
    for q in [
        FloatQuantizer::mxfp8(),
        FloatQuantizer::fp4_e2m1().per_group(16),
    ] {
        let e = q.quantize(&w, None).unwrap_err();
        assert!(
            matches!(
                e,
                Error::GroupSizeMismatch {
                    in_features: 40,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("does not divide in_features = 40"));
    }
}

#[test]
fn storage_is_counted() {
    let w = Tensor::from_vec(weights(4, 64, 1.0, 5), (4, 64), &Device::Cpu).unwrap();
    let bpw = |q: FloatQuantizer| q.quantize(&w, None).unwrap().bits_per_weight();
    assert_eq!(bpw(FloatQuantizer::fp8_e4m3()), 8.0 + 32.0 / 64.0);
    assert_eq!(bpw(FloatQuantizer::fp4_e2m1()), 4.0 + 16.0 / 16.0);
    assert_eq!(bpw(FloatQuantizer::mxfp8()), 8.25);
    assert_eq!(bpw(FloatQuantizer::mxfp4()), 4.25);
}

#[cfg(feature = "testing")]
mod conformance {
    use super::*;
    use quantlens::testing::{Conformance, ErrorBound};

    #[test]
    fn every_float_configuration_is_conformant() {
        for q in configurations() {
            let multiple = match q.granularity() {
                Granularity::PerGroup(g) => g,
                _ => 8,
            };
            let suite = Conformance::new()
                .cases(12)
                .cols_multiple_of(multiple)
                .col_blocks(1..=3)
                .error_bound(ErrorBound::NearestLevel);
            // Default magnitudes 1e-6..1e4 in f32/f16/bf16: every scale dtype holds them.
            suite.clone().run(&q);
            if q.scale_dtype() != ScaleDType::F16 {
                // f32, bf16 and E8M0 scales reach far beyond f16's range.
                suite
                    .log10_magnitude(-30.0..=30.0)
                    .dtypes(vec![DType::F32])
                    .run(&q);
            }
        }
    }

    #[test]
    fn activation_quantizers_are_conformant() {
        let qs = [
            ActivationQuantizer::int8_per_token(),
            ActivationQuantizer::fp8_per_token(FloatFormat::E4M3),
            ActivationQuantizer::fp8_per_token(FloatFormat::E5M2),
            ActivationQuantizer::fp8_static(FloatFormat::E4M3, 0.01).unwrap(),
            // Range ±127 000 covers the suite's magnitudes (≤ 3e4): half a step everywhere.
            // (Saturating int8 cannot use the level bounds: `group_levels` lists code 0,
            // −128·scale, which symmetric quantizers never produce; saturation is tested below.)
            ActivationQuantizer::int8_static(1000.0).unwrap(),
        ];
        for q in qs {
            // FP8 static scales saturate what lies beyond them: still the nearest level.
            let bound = match q.format() {
                ActivationFormat::Int8 => ErrorBound::HalfStep,
                ActivationFormat::Float(_) => ErrorBound::NearestLevel,
            };
            Conformance::new().cases(12).error_bound(bound).run(&q);
        }
    }
}

// ---------------------------------------------------------------- activations

/// Per token in f64: scale = absmax / max_level, value = scale · nearest level of x / scale.
fn per_token_reference(x: &[f32], cols: usize, format: ActivationFormat) -> Vec<f64> {
    let mut out = Vec::new();
    for row in x.chunks(cols) {
        let absmax = row.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
        out.extend(row.iter().map(|&v| match format {
            ActivationFormat::Int8 => {
                let step = absmax / 127.0;
                if step == 0.0 {
                    0.0
                } else {
                    (v as f64 / step).round() * step
                }
            }
            ActivationFormat::Float(f) => {
                let levels = positive_levels(f);
                let scale = absmax / f.max_finite() as f64;
                if scale == 0.0 {
                    0.0
                } else {
                    let t = v as f64 / scale;
                    let code = nearest_code(&levels, f.bits(), t as f32);
                    scale * code_value(&levels, f.bits(), code)
                }
            }
        }));
    }
    out
}

#[test]
fn per_token_activations_match_a_naive_f64_reference() {
    let (rows, cols) = (9, 40);
    let mut x = weights(rows, cols, 2.0, 21);
    x[3 * cols..4 * cols].fill(0.0); // an all-zero token
    let t = Tensor::from_slice(&x, (rows, cols), &Device::Cpu).unwrap();
    for format in [
        ActivationFormat::Int8,
        ActivationFormat::Float(FloatFormat::E4M3),
        ActivationFormat::Float(FloatFormat::E5M2),
    ] {
        let q = ActivationQuantizer::per_token(format);
        let y = values(&q.fake_quantize(&t, None).unwrap());
        let want = per_token_reference(&x, cols, format);
        for i in 0..x.len() {
            let absmax = x[(i / cols) * cols..(i / cols + 1) * cols]
                .iter()
                .fold(0f64, |m, v| m.max(v.abs() as f64));
            assert!(
                (y[i] as f64 - want[i]).abs() <= 1e-6 * absmax,
                "{format:?} element {i}: {} vs {}",
                y[i],
                want[i]
            );
        }
        let qt = q.quantize(&t, None).unwrap();
        assert_eq!(qt.num_groups(), rows, "one scale per token");
    }
}

#[test]
fn static_activations_saturate_beyond_the_scale() {
    let x = [0.3f32, -0.7, 5.0, -1e6, 1.27, 0.0, 2.0, -0.004];
    let t = Tensor::from_slice(&x, (2, 4), &Device::Cpu).unwrap();
    // int8 with step 0.01: range ±1.27.
    let q = ActivationQuantizer::int8_static(0.01).unwrap();
    let y = values(&q.fake_quantize(&t, None).unwrap());
    for (i, &v) in x.iter().enumerate() {
        let want = ((v as f64 / 0.01f32 as f64).round().clamp(-127.0, 127.0)) * 0.01f32 as f64;
        assert!(
            (y[i] as f64 - want).abs() <= 1e-7,
            "{v}: {} vs {want}",
            y[i]
        );
    }
    assert_eq!(y[2], 127.0 * 0.01f32);
    assert_eq!(y[3], -127.0 * 0.01f32);
    // FP8 E4M3 with scale 1/256: range ±448/256 = ±1.75.
    let s = 1.0 / 256.0;
    let levels = positive_levels(FloatFormat::E4M3);
    let q = ActivationQuantizer::fp8_static(FloatFormat::E4M3, s).unwrap();
    let qt = q.quantize(&t, None).unwrap();
    assert_eq!(qt.scales().to_f32_vec(), vec![s]);
    let y = values(&qt.dequantize(&Device::Cpu).unwrap());
    for (i, &v) in x.iter().enumerate() {
        let code = nearest_code(&levels, 8, v / s);
        let want = s as f64 * code_value(&levels, 8, code);
        assert_eq!(y[i] as f64, want, "{v}");
    }
    assert_eq!(y[2], 1.75);
    assert_eq!(y[3], -1.75);
}

#[test]
fn static_scale_from_calibration_covers_the_calibration_range() {
    let mut calib = Calibration::new(4);
    calib
        .observe(
            &Tensor::new(
                &[[1f32, -3.0, 0.5, 2.0], [0.1, 0.2, 0.3, 0.4]],
                &Device::Cpu,
            )
            .unwrap(),
        )
        .unwrap();
    let q = ActivationQuantizer::static_from_calibration(
        ActivationFormat::Float(FloatFormat::E4M3),
        &calib,
    )
    .unwrap();
    assert_eq!(q.static_scale(), Some(3.0 / 448.0));
    let q = ActivationQuantizer::static_from_calibration(ActivationFormat::Int8, &calib).unwrap();
    assert_eq!(q.static_scale(), Some(3.0 / 127.0));
    let h = QuantizeActivations::static_from_calibration(ActivationFormat::Int8, &calib).unwrap();
    assert_eq!(h.name(), format!("act-int8-static-{:e}", 3.0f32 / 127.0));
}

#[test]
fn activation_errors() {
    let dev = Device::Cpu;
    let mut data = vec![0.5f32; 12];
    data[7] = f32::NAN;
    let nan = Tensor::from_vec(data, (3, 4), &dev).unwrap();
    for q in [
        ActivationQuantizer::int8_per_token(),
        ActivationQuantizer::fp8_per_token(FloatFormat::E4M3),
        ActivationQuantizer::int8_static(0.1).unwrap(),
        ActivationQuantizer::fp8_static(FloatFormat::E5M2, 0.1).unwrap(),
    ] {
        assert!(
            matches!(
                q.quantize(&nan, None),
                Err(Error::NonFinite {
                    what: "activation",
                    first_index: 7,
                    count: 1
                })
            ),
            "{}",
            q.name()
        );
        let rank3 = Tensor::ones((2, 3, 4), DType::F32, &dev).unwrap();
        assert!(matches!(
            q.quantize(&rank3, None),
            Err(Error::RankMismatch { expected: 2, .. })
        ));
    }
    for bad in [0.0, -0.5, f32::NAN, f32::NEG_INFINITY] {
        assert!(matches!(
            ActivationQuantizer::fp8_static(FloatFormat::E4M3, bad),
            Err(Error::InvalidParameter { name: "scale", .. })
        ));
        assert!(ActivationQuantizer::int8_static(bad).is_err());
    }
}

// ---------------------------------------------------------------- W8A8 on a model

/// Seeded inputs, roughly standard normal.
fn inputs(n: usize, d: usize, seed: u64) -> Tensor {
    let mut g = TestRng::new(seed);
    let x: Vec<f32> = (0..n * d).map(|_| g.normal() as f32).collect();
    Tensor::from_vec(x, (n, d), &Device::Cpu).unwrap()
}

/// Largest |a − b| relative to the largest |a|.
fn relative_gap(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (values(a), values(b));
    let scale = a.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
    let gap = a
        .iter()
        .zip(&b)
        .fold(0f64, |m, (x, y)| m.max((x - y).abs() as f64));
    gap / scale
}

#[test]
fn w8a8_forward_stays_close_to_full_precision() {
    let cfg = MlpConfig::new(16, &[64, 32], 5);
    let x = inputs(50, 16, 31);
    let full = Mlp::new(cfg.clone(), 7, &Device::Cpu).unwrap();
    let reference = full.forward(&x).unwrap();

    // int8 weights (per channel) + int8 per-token activations.
    let mut int8 = Mlp::new(cfg.clone(), 7, &Device::Cpu).unwrap();
    let rtn = UniformQuantizer::new(QuantSpec::int8().per_channel()).unwrap();
    SequentialQuantization::new(&rtn).run(&mut int8).unwrap();
    let mut act = QuantizeActivations::per_token(8).unwrap();
    let y_int8 = int8.forward_hooked(&x, &mut act).unwrap();
    let gap_int8 = relative_gap(&reference, &y_int8);

    // FP8 E4M3 weights + FP8 per-token activations.
    let mut fp8 = Mlp::new(cfg, 7, &Device::Cpu).unwrap();
    let q = FloatQuantizer::fp8_e4m3();
    SequentialQuantization::new(&q).run(&mut fp8).unwrap();
    let mut act = QuantizeActivations::fp8_per_token();
    let y_fp8 = fp8.forward_hooked(&x, &mut act).unwrap();
    let gap_fp8 = relative_gap(&reference, &y_fp8);

    // int8 steps are absmax/127 (≤ 0.4% of the range); E4M3 keeps 1/16 relative precision.
    assert!(
        gap_int8 > 0.0 && gap_int8 < 0.03,
        "int8 W8A8 gap {gap_int8}"
    );
    assert!(gap_fp8 > 0.0 && gap_fp8 < 0.1, "fp8 W8A8 gap {gap_fp8}");
    assert_eq!(reference.dims(), y_fp8.dims());
}
