//! Perturbation injectors (the perturbation lens of Gong et al., AAAI 2024): norms, shapes,
//! seeds, step-matched noise, clipping, anchoring, code flips, weights and activations, and the
//! quantization-vs-noise report — each checked against an independent computation in this file.

mod common;

use common::TestRng;

use candle_core::{DType, Device, Tensor};
use quantlens::model::{
    ForwardHook, LayerFilter, LayerWeight, LinearLayer, Mlp, MlpConfig, PerturbActivations,
    QuantizableModel, SequentialQuantization,
};
use quantlens::perturb::{
    Clip, CodeFlips, Distribution, ErrorSource, ErrorStats, Intensity, Noise, NoiseShape,
    StepNoise, layer_seed, perturb_weights, perturbation_equivalence,
};
use quantlens::{
    Calibration, Codebook, Error, FloatFormat, LevelStorage, PackedCodes, Perturbation,
    QuantFormat, QuantSpec, QuantizedParts, QuantizedTensor, Quantizer, Scales, UniformQuantizer,
};

// ---------------------------------------------------------------------------------------------
// Helpers: data from the test's own generator, naive f64 arithmetic.

fn gaussian(rows: usize, cols: usize, seed: u64) -> Tensor {
    let mut g = TestRng::new(seed);
    let v: Vec<f32> = (0..rows * cols).map(|_| g.normal() as f32).collect();
    Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
}

/// Elements as f64 (exact from f32/f16/bf16/f64).
fn vals(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// Bit patterns of the elements as f32 (exact and injective for f32/f16/bf16).
fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

fn norm(v: &[f64]) -> f64 {
    let mut s = 0.0;
    for x in v {
        s += x * x;
    }
    s.sqrt()
}

fn diff(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

fn rtn(spec: QuantSpec) -> UniformQuantizer {
    UniformQuantizer::new(spec).unwrap()
}

fn all_shapes() -> Vec<NoiseShape> {
    vec![
        NoiseShape::Plain,
        NoiseShape::MagnitudeUp,
        NoiseShape::MagnitudeDown { eps: 0.01 },
        NoiseShape::MagnitudeDown { eps: 0.5 },
    ]
}

const DISTRIBUTIONS: [Distribution; 3] = [
    Distribution::Gaussian,
    Distribution::Uniform,
    Distribution::Rademacher,
];

/// Unit roundoff of a dtype (half an ulp, relative).
fn unit_roundoff(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => 2f64.powi(-11),
        DType::BF16 => 2f64.powi(-8),
        _ => 2f64.powi(-24),
    }
}

// ---------------------------------------------------------------------------------------------
// Additive noise.

#[test]
fn delta_has_norm_tau_for_every_distribution_and_shape() {
    let x = gaussian(24, 40, 1);
    let xn = norm(&vals(&x));
    for d in DISTRIBUTIONS {
        for shape in all_shapes() {
            for (intensity, tau) in [
                (Intensity::Absolute(0.37), 0.37),
                (Intensity::Relative(0.05), 0.05 * xn),
                (Intensity::Absolute(0.0), 0.0),
            ] {
                let noise = Noise::from_distribution(d)
                    .with_shape(shape)
                    .with_intensity(intensity);
                let delta = vals(&noise.delta(&x, 5).unwrap());
                let got = norm(&delta);
                assert!(
                    (got - tau).abs() <= 1e-12 * tau.max(1.0),
                    "{}: ‖Δ‖ = {got}, τ = {tau}",
                    noise.name()
                );
            }
        }
    }
}

#[test]
fn applied_noise_reaches_tau_up_to_rounding_in_each_dtype() {
    // ‖y − x‖ differs from τ by at most the norm of the rounding of y to its dtype (triangle
    // inequality), which is at most u·‖y‖ with u the dtype's unit roundoff.
    let x32 = gaussian(16, 64, 2);
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let x = x32.to_dtype(dtype).unwrap();
        for d in DISTRIBUTIONS {
            for shape in all_shapes() {
                let noise = Noise::from_distribution(d).with_shape(shape).absolute(1.5);
                let y = noise.apply(&x, 11).unwrap();
                assert_eq!(y.dtype(), dtype);
                assert_eq!(y.dims(), x.dims());
                let (xv, yv) = (vals(&x), vals(&y));
                let bound = unit_roundoff(dtype) * norm(&yv) * 1.001 + 1e-12;
                let got = norm(&diff(&yv, &xv));
                assert!(
                    (got - 1.5).abs() <= bound,
                    "{} {dtype:?}: ‖y − x‖ = {got}, bound {bound}",
                    noise.name()
                );
            }
        }
    }
}

#[test]
fn noise_is_tau_times_the_shaped_draws_over_their_norm() {
    // Rebuild g from the raw draws with the paper's formulas and compare Δ = τ·g/‖g‖.
    let x = gaussian(8, 50, 3);
    let xv = vals(&x);
    let n = xv.len();
    let mean_abs = xv.iter().map(|v| v.abs()).sum::<f64>() / n as f64;
    for d in DISTRIBUTIONS {
        let xi = d.sample(21, n);
        for shape in all_shapes() {
            let g: Vec<f64> = match shape {
                NoiseShape::Plain => xi.clone(),
                NoiseShape::MagnitudeUp => xi.iter().zip(&xv).map(|(e, x)| x.abs() * e).collect(),
                NoiseShape::MagnitudeDown { eps } => xi
                    .iter()
                    .zip(&xv)
                    .map(|(e, x)| e / (x.abs() + eps * mean_abs))
                    .collect(),
            };
            let gn = norm(&g);
            let delta = vals(
                &Noise::from_distribution(d)
                    .with_shape(shape)
                    .absolute(0.8)
                    .delta(&x, 21)
                    .unwrap(),
            );
            for (dv, gv) in delta.iter().zip(&g) {
                assert!((dv - 0.8 * gv / gn).abs() < 1e-14, "{d:?} {shape:?}");
            }
        }
    }
}

#[test]
fn rademacher_draws_are_constant_in_magnitude_and_uniform_draws_bounded() {
    let n = 10_000;
    let r = Distribution::Rademacher.sample(4, n);
    assert!(r.iter().all(|v| v.abs() == 1.0));
    let plus = r.iter().filter(|v| **v > 0.0).count() as f64;
    // Binomial(n, ½): within 5 standard deviations.
    assert!((plus - n as f64 / 2.0).abs() < 5.0 * (n as f64 / 4.0).sqrt());
    // Plain Rademacher noise: every |Δ_i| = τ/√N exactly (up to f64 rounding).
    let x = gaussian(10, 10, 4);
    let delta = vals(&Noise::rademacher().absolute(2.0).delta(&x, 4).unwrap());
    for d in delta {
        assert!((d.abs() - 2.0 / 10.0).abs() < 1e-15);
    }
    let u = Distribution::Uniform.sample(4, n);
    assert!(u.iter().all(|v| v.abs() < 1.0));
    let (lo, hi) = u
        .iter()
        .fold((1.0f64, -1.0f64), |(l, h), v| (l.min(*v), h.max(*v)));
    assert!(lo < -0.99 && hi > 0.99, "draws should fill (−1, 1)");
    let g = Distribution::Gaussian.sample(4, n);
    assert!(g.iter().all(|v| v.is_finite()));
}

#[test]
fn same_seed_same_bytes_different_seed_different_bytes() {
    let x32 = gaussian(12, 32, 5);
    let int4 = rtn(QuantSpec::int4().per_channel());
    let injectors: Vec<Box<dyn Perturbation>> = vec![
        Box::new(Noise::gaussian().relative(0.1)),
        Box::new(Noise::uniform().magnitude_up().absolute(0.5)),
        Box::new(
            Noise::rademacher()
                .magnitude_down()
                .anchored_to(int4.clone(), 1.0),
        ),
        Box::new(StepNoise::new(int4.clone())),
        Box::new(CodeFlips::bits(0.05).through(int4.clone())),
        Box::new(CodeFlips::exact_signs(7).through(int4.clone())),
    ];
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let x = x32.to_dtype(dtype).unwrap();
        for p in &injectors {
            let a = p.apply(&x, 42).unwrap();
            let b = p.apply(&x, 42).unwrap();
            let c = p.apply(&x, 43).unwrap();
            assert_eq!(a.dtype(), dtype, "{}", p.name());
            assert_eq!(bits(&a), bits(&b), "{} {dtype:?}: same seed", p.name());
            assert_ne!(bits(&a), bits(&c), "{} {dtype:?}: new seed", p.name());
        }
    }
}

#[test]
fn anchored_tau_is_the_quantizer_error_norm() {
    let x = gaussian(32, 64, 6);
    let int4 = rtn(QuantSpec::int4().per_channel());
    let err = norm(&diff(
        &vals(&int4.fake_quantize(&x, None).unwrap()),
        &vals(&x),
    ));
    assert!(err > 0.0);
    for k in [0.5, 1.0, 2.0] {
        let noise = Noise::gaussian().anchored_to(int4.clone(), k);
        assert!((noise.intensity().norm_for(&x).unwrap() - k * err).abs() < 1e-12 * err);
        let d = vals(&noise.delta(&x, 1).unwrap());
        assert!((norm(&d) - k * err).abs() < 1e-12 * err);
    }
    // Activations of rank 3: the quantizer sees [rows, last_dim].
    let a = gaussian(6, 64, 7).reshape((2, 3, 64)).unwrap();
    let a_err = norm(&diff(
        &vals(
            &int4
                .fake_quantize(&a.reshape((6, 64)).unwrap(), None)
                .unwrap(),
        ),
        &vals(&a),
    ));
    let tau = Intensity::anchored(int4, 1.0).norm_for(&a).unwrap();
    assert!((tau - a_err).abs() < 1e-12 * a_err);
}

#[test]
fn bad_noise_parameters_and_inputs_are_errors() {
    let x = gaussian(4, 8, 8);
    for bad in [
        Noise::gaussian().absolute(-1.0),
        Noise::gaussian().absolute(f64::NAN),
        Noise::gaussian().absolute(f64::INFINITY),
        Noise::uniform().relative(-0.1),
        Noise::rademacher().anchored_to(rtn(QuantSpec::int4()), -1.0),
    ] {
        assert!(
            matches!(bad.apply(&x, 0), Err(Error::InvalidParameter { .. })),
            "{}",
            bad.name()
        );
        assert!(bad.validate().is_err());
    }
    let noise = Noise::gaussian().relative(0.1);
    let nan = Tensor::new(&[[1f32, f32::NAN], [0.0, 2.0]], &Device::Cpu).unwrap();
    assert!(matches!(
        noise.apply(&nan, 0),
        Err(Error::NonFinite {
            count: 1,
            first_index: 1,
            ..
        })
    ));
    let inf = Tensor::new(&[f32::INFINITY], &Device::Cpu).unwrap();
    assert!(matches!(noise.apply(&inf, 0), Err(Error::NonFinite { .. })));
    let step = StepNoise::new(rtn(QuantSpec::int4()));
    assert!(matches!(step.apply(&nan, 0), Err(Error::NonFinite { .. })));
    assert!(matches!(
        step.local_steps(&nan),
        Err(Error::NonFinite { .. })
    ));
    let ints = Tensor::new(&[1u32, 2], &Device::Cpu).unwrap();
    assert!(matches!(
        noise.apply(&ints, 0),
        Err(Error::UnsupportedDType { .. })
    ));
    let empty = Tensor::zeros((0, 4), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        noise.apply(&empty, 0),
        Err(Error::EmptyTensor { .. })
    ));
    // Anchoring to a quantizer that cannot take this tensor: groups of 64 on rows of 48.
    let g64 = Noise::gaussian().anchored_to(rtn(QuantSpec::int4().per_group(64)), 1.0);
    assert!(matches!(
        g64.apply(&gaussian(4, 48, 9), 0),
        Err(Error::GroupSizeMismatch { .. })
    ));
}

/// A quantizer that hands back the wrong shape: anchors must notice.
struct Broken;
impl Quantizer for Broken {
    fn name(&self) -> String {
        "broken".into()
    }
    fn quantize(&self, _: &Tensor, _: Option<&Calibration>) -> quantlens::Result<QuantizedTensor> {
        Err(Error::Unsupported("only fake_quantize".into()))
    }
    fn fake_quantize(&self, w: &Tensor, _: Option<&Calibration>) -> quantlens::Result<Tensor> {
        Ok(w.flatten_all()?)
    }
}

#[test]
fn an_anchor_that_changes_the_shape_is_an_error() {
    let noise = Noise::gaussian().anchored_to(Broken, 1.0);
    assert!(matches!(
        noise.apply(&gaussian(3, 4, 1), 0),
        Err(Error::ShapeMismatch(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// Step-matched noise.

#[test]
fn step_noise_on_a_uniform_grid_is_uniform_on_half_a_step() {
    let (rows, cols) = (128, 256);
    let x = gaussian(rows, cols, 10);
    let q = rtn(QuantSpec::int4().per_channel());
    let scales = q.quantize(&x, None).unwrap().scales().to_f32_vec();
    let noise = StepNoise::new(q);
    let steps = vals(&noise.local_steps(&x).unwrap());
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(*s, f64::from(scales[i / cols]));
    }
    let delta = vals(&noise.delta(&x, 3).unwrap());
    let n = delta.len() as f64;
    let u: Vec<f64> = delta.iter().zip(&steps).map(|(d, s)| d / s).collect();
    assert!(u.iter().all(|u| u.abs() < 0.5));
    // U(−½, ½): E[u] = 0 (sd 1/√12), E[u²] = 1/12 (sd of u² = √(1/80 − 1/144) = √(1/180)).
    let mean = u.iter().sum::<f64>() / n;
    let m2 = u.iter().map(|u| u * u).sum::<f64>() / n;
    assert!(mean.abs() < 5.0 * (1.0 / 12.0 / n).sqrt(), "mean {mean}");
    assert!(
        (m2 - 1.0 / 12.0).abs() < 5.0 * (1.0 / 180.0 / n).sqrt(),
        "E[u²] {m2}"
    );
    // The variance of Δ itself against the closed form mean(step²)/12.
    let var = delta.iter().map(|d| d * d).sum::<f64>() / n;
    let want = steps.iter().map(|s| s * s).sum::<f64>() / n / 12.0;
    assert!((var / want - 1.0).abs() < 5.0 * (1.0 / 180.0 / n).sqrt() * 12.0);
    // Applied: within half a step of x (plus f32 rounding of the result).
    let y = vals(&noise.apply(&x, 3).unwrap());
    for ((y, x), s) in y.iter().zip(&vals(&x)).zip(&steps) {
        assert!((y - x).abs() <= 0.5 * s + 4.0 * f64::from(f32::EPSILON) * y.abs().max(1.0));
    }
}

/// Test-local companding quantizer (the paper's cube-root scheme): y = sign(w)|w|^(1/3), per-row symmetric
/// int4 RTN on y with scale s = max|y|/7, cube back. Stored as a codebook of the 16 levels
/// k³ (k = −8..7) with per-row scale s³, so that value = s³·k³ = (s·k)³.
struct CubeRoot;

impl Quantizer for CubeRoot {
    fn name(&self) -> String {
        "cuberoot-w4-c".into()
    }

    fn quantize(&self, w: &Tensor, _: Option<&Calibration>) -> quantlens::Result<QuantizedTensor> {
        let (rows, cols) = w.dims2()?;
        let v = vals(w);
        let (mut codes, mut scales) = (Vec::new(), Vec::new());
        for row in v.chunks(cols) {
            let y: Vec<f64> = row.iter().map(|w| w.cbrt()).collect();
            let amax = y.iter().fold(0f64, |m, y| m.max(y.abs()));
            let s = if amax > 0.0 { amax / 7.0 } else { 1.0 };
            codes.extend(
                y.iter()
                    .map(|y| ((y / s).round().clamp(-8.0, 7.0) + 8.0) as u8),
            );
            scales.push((s * s * s) as f32);
        }
        let levels: Vec<f32> = (-8i32..=7).map(|k| (k * k * k) as f32).collect();
        QuantizedTensor::assemble(
            QuantizedParts::new(
                vec![rows, cols],
                w.dtype(),
                QuantFormat::Codebook { bits: 4 },
                cols,
                PackedCodes::pack(&codes, 4)?,
                Scales::F32(scales),
            )
            .with_codebook(Codebook::new(levels, 16, LevelStorage::Implicit)?),
        )
    }
}

#[test]
fn step_noise_on_a_non_uniform_grid_uses_the_bracketing_gap() {
    let (rows, cols) = (6, 40);
    let x = gaussian(rows, cols, 12);
    let qt = CubeRoot.quantize(&x, None).unwrap();
    let steps = vals(&StepNoise::new(CubeRoot).local_steps(&x).unwrap());
    let xv = vals(&x);
    for r in 0..rows {
        let s3 = qt.scales().get(r);
        // The row's levels as decode computes them: f32 product of scale and table entry.
        let levels: Vec<f64> = (-8i32..=7)
            .map(|k| f64::from(s3 * (k * k * k) as f32))
            .collect();
        for c in 0..cols {
            let x = xv[r * cols + c];
            // Linear scan: the last level ≤ x and the next one, clamped to the end gaps.
            let mut j = 0;
            while j + 1 < levels.len() && levels[j + 1] <= x {
                j += 1;
            }
            let j = j.min(levels.len() - 2);
            let want = if x < levels[0] {
                levels[1] - levels[0]
            } else {
                levels[j + 1] - levels[j]
            };
            assert_eq!(steps[r * cols + c], want, "row {r} col {c} x {x}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Clipping.

#[test]
fn clipping_hits_exactly_the_largest_magnitudes() {
    let x = gaussian(40, 50, 13); // 2000 distinct values
    let xv = vals(&x);
    let n = xv.len();
    let mut sorted: Vec<f64> = xv.iter().map(|v| v.abs()).collect();
    sorted.sort_by(f64::total_cmp);
    assert!(
        sorted.windows(2).all(|w| w[0] < w[1]),
        "test data must be tie-free"
    );
    // p = m/1000; k = ⌊p·n⌋ in integer arithmetic.
    for m in [0usize, 1, 10, 290, 500, 999, 1000] {
        let p = m as f64 / 1000.0;
        let k = m * n / 1000;
        let c = if k == n { 0.0 } else { sorted[n - k - 1] };
        let clip = Clip::fraction(p);
        assert_eq!(clip.threshold(&x).unwrap(), c, "p = {p}");
        let y = vals(&clip.apply(&x, 0).unwrap());
        let changed = y.iter().zip(&xv).filter(|(a, b)| a != b).count();
        assert_eq!(changed, k, "p = {p}");
        for (a, b) in y.iter().zip(&xv) {
            if b.abs() > c {
                assert_eq!(*a, c.copysign(*b));
            } else {
                assert_eq!(a, b);
            }
        }
    }
}

#[test]
fn clipping_keeps_ties_and_is_exact_in_half_precision() {
    // |x| sorted: 1, 2, 5, 5, 5. p = 0.4 → k = 2 → c = 5: the tied top values stay.
    let x = Tensor::new(&[5f32, -5.0, 1.0, 2.0, 5.0], &Device::Cpu).unwrap();
    let clip = Clip::fraction(0.4);
    assert_eq!(clip.threshold(&x).unwrap(), 5.0);
    assert_eq!(bits(&clip.apply(&x, 0).unwrap()), bits(&x));
    // bf16 / f16: outputs are inputs or ±c, exactly.
    for dtype in [DType::F16, DType::BF16] {
        let x = gaussian(10, 10, 14).to_dtype(dtype).unwrap();
        let clip = Clip::fraction(0.05);
        let c = clip.threshold(&x).unwrap();
        let y = clip.apply(&x, 7).unwrap();
        assert_eq!(y.dtype(), dtype);
        for (a, b) in vals(&y).iter().zip(vals(&x)) {
            assert_eq!(*a, if b.abs() > c { c.copysign(b) } else { b });
        }
    }
}

#[test]
fn clipping_refuses_bad_fractions_and_non_finite_input() {
    let x = gaussian(3, 3, 15);
    for p in [-0.1, 1.5, f64::NAN] {
        assert!(matches!(
            Clip::fraction(p).apply(&x, 0),
            Err(Error::InvalidParameter { .. })
        ));
    }
    let nan = Tensor::new(&[1f32, f32::NAN], &Device::Cpu).unwrap();
    assert!(matches!(
        Clip::fraction(0.1).apply(&nan, 0),
        Err(Error::NonFinite { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Code flips.

fn popcount_diff(a: &PackedCodes, b: &PackedCodes) -> u64 {
    a.bytes()
        .iter()
        .zip(b.bytes())
        .map(|(x, y)| u64::from((x ^ y).count_ones()))
        .sum()
}

#[test]
fn bit_flip_rate_matches_p_within_a_binomial_bound() {
    let x = gaussian(64, 256, 16);
    let qt = rtn(QuantSpec::int8().per_channel())
        .quantize(&x, None)
        .unwrap();
    let total = (qt.numel() * 8) as f64;
    for p in [0.001, 0.01, 0.2] {
        let (hit, counts) = CodeFlips::bits(p).flip_counted(&qt, 1).unwrap();
        let flipped = popcount_diff(qt.codes(), hit.codes());
        assert_eq!(flipped as usize, counts.applied);
        assert_eq!(counts.skipped, 0, "uniform grids have no invalid codes");
        let sd = (total * p * (1.0 - p)).sqrt();
        assert!(
            (flipped as f64 - total * p).abs() < 5.0 * sd,
            "p = {p}: {flipped} of {total}"
        );
        assert_eq!(hit.scales(), qt.scales());
    }
    let (none, _) = CodeFlips::bits(0.0).flip_counted(&qt, 1).unwrap();
    assert_eq!(none.codes(), qt.codes());
    let all = CodeFlips::bits(1.0).flip(&qt, 1).unwrap();
    for (a, b) in all.codes().unpack().iter().zip(qt.codes().unpack()) {
        assert_eq!(*a, !b);
    }
}

#[test]
fn exactly_n_bit_flips_flip_exactly_n_bits() {
    let x = gaussian(16, 30, 17);
    let qt = rtn(QuantSpec::int3().per_channel())
        .quantize(&x, None)
        .unwrap(); // 3-bit codes
    let total = qt.numel() * 3;
    for n in [0, 1, 17, 500, total] {
        let (hit, counts) = CodeFlips::exact_bits(n).flip_counted(&qt, 2).unwrap();
        assert_eq!(popcount_diff(qt.codes(), hit.codes()), n as u64);
        assert_eq!(counts.applied, n);
    }
    assert!(matches!(
        CodeFlips::exact_bits(total + 1).flip(&qt, 2),
        Err(Error::InvalidParameter { .. })
    ));
}

fn assembled(format: QuantFormat, codes: &[u8]) -> QuantizedTensor {
    QuantizedTensor::assemble(QuantizedParts::new(
        vec![1, codes.len()],
        DType::F32,
        format,
        codes.len(),
        PackedCodes::pack(codes, format.code_bits()).unwrap(),
        Scales::F32(vec![1.0]),
    ))
    .unwrap()
}

#[test]
fn flips_never_produce_invalid_codes() {
    // Ternary: code 3 is not a value. All zeros (code 1): flipping bit 1 gives 3.
    let ternary = assembled(QuantFormat::Ternary, &[1; 64]);
    let (hit, counts) = CodeFlips::bits(1.0).flip_counted(&ternary, 3).unwrap();
    assert!(hit.codes().unpack().iter().all(|&c| c < 3));
    assert_eq!(
        counts.applied + counts.skipped,
        128,
        "p = 1 draws every bit"
    );
    // Bit 0 first: 1 → 0; then bit 1: 0 → 2. Every code ends at 2 (value +1).
    assert!(hit.codes().unpack().iter().all(|&c| c == 2));
    // Exact counts redraw: 40 flips applied, all valid.
    let (hit, counts) = CodeFlips::exact_bits(40).flip_counted(&ternary, 3).unwrap();
    assert_eq!(counts.applied, 40);
    assert_eq!(popcount_diff(ternary.codes(), hit.codes()), 40);
    // All codes 2 (0b10): bit 0 alone gives 3, so 128 distinct valid flips are out of reach.
    let twos = assembled(QuantFormat::Ternary, &[2; 64]);
    assert!(matches!(
        CodeFlips::exact_bits(128).flip(&twos, 3),
        Err(Error::InvalidParameter { .. })
    ));
    // FP8 E4M3 at its largest value 0x7E: bit 0 would make the NaN code 0x7F.
    let e4m3 = assembled(QuantFormat::Float(FloatFormat::E4M3), &[0x7E; 32]);
    let (hit, counts) = CodeFlips::bits(0.5).flip_counted(&e4m3, 4).unwrap();
    assert!(counts.skipped > 0);
    assert!(
        hit.codes()
            .unpack()
            .iter()
            .all(|&c| FloatFormat::E4M3.decode(c).is_finite())
    );
}

#[test]
fn sign_flips_negate_values() {
    let x = gaussian(32, 64, 18);
    let q = rtn(QuantSpec::int4().per_channel());
    let qt = q.quantize(&x, None).unwrap();
    let before = vals(&qt.dequantize(&Device::Cpu).unwrap());
    let n = before.len() as f64;
    let p = 0.1;
    let (hit, counts) = CodeFlips::signs(p).flip_counted(&qt, 5).unwrap();
    let after = vals(&hit.dequantize(&Device::Cpu).unwrap());
    let mut negated = 0;
    for (a, b) in after.iter().zip(&before) {
        assert!(a == b || *a == -b);
        if a != b {
            negated += 1;
        }
    }
    // Flipped zeros keep their value, so `negated` ≤ applied; both near p·n.
    assert!(negated <= counts.applied);
    let sd = (n * p * (1.0 - p)).sqrt();
    assert!((counts.applied as f64 - n * p).abs() < 5.0 * sd);
    // Exactly 9 sign flips: at most 9 elements change code (zeros negate to themselves).
    let (hit, counts) = CodeFlips::exact_signs(9).flip_counted(&qt, 5).unwrap();
    assert_eq!(counts.applied, 9);
    let changed = hit
        .codes()
        .unpack()
        .iter()
        .zip(qt.codes().unpack())
        .filter(|(a, b)| **a != *b)
        .count();
    assert!(changed <= 9);
    let changed_values = vals(&hit.dequantize(&Device::Cpu).unwrap())
        .iter()
        .zip(&before)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(changed, changed_values);
    // Formats without a sign symmetry.
    let asym = rtn(QuantSpec::int4().asymmetric())
        .quantize(&x, None)
        .unwrap();
    assert!(matches!(
        CodeFlips::signs(0.1).flip(&asym, 0),
        Err(Error::Unsupported(_))
    ));
    let cube = CubeRoot.quantize(&x, None).unwrap();
    assert!(matches!(
        CodeFlips::exact_signs(1).flip(&cube, 0),
        Err(Error::Unsupported(_))
    ));
}

#[test]
fn flips_as_a_perturbation_are_quantize_flip_dequantize() {
    let x = gaussian(8, 32, 19);
    let q = rtn(QuantSpec::int4().per_group(16));
    let flips = CodeFlips::bits(0.02);
    let manual = flips
        .flip(&q.quantize(&x, None).unwrap(), 77)
        .unwrap()
        .dequantize(&Device::Cpu)
        .unwrap();
    let via = flips.through(q).apply(&x, 77).unwrap();
    assert_eq!(bits(&via), bits(&manual));
    for p in [-0.01, 1.01, f64::NAN] {
        assert!(matches!(
            CodeFlips::bits(p)
                .through(rtn(QuantSpec::int4()))
                .apply(&x, 0),
            Err(Error::InvalidParameter { .. })
        ));
    }
    let nan = Tensor::new(&[[f32::NAN, 1.0]], &Device::Cpu).unwrap();
    assert!(matches!(
        CodeFlips::bits(0.1)
            .through(rtn(QuantSpec::int4()))
            .apply(&nan, 0),
        Err(Error::NonFinite { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Weights and activations.

#[test]
fn layer_seeds_are_the_splitmix_stream_of_the_seed() {
    for seed in [0u64, 1, 0xDEAD_BEEF] {
        let mut g = TestRng::new(seed);
        for i in 0..5 {
            assert_eq!(layer_seed(seed, i), g.next_u64());
        }
    }
}

#[test]
fn perturb_weights_reports_and_applies_per_layer_noise() {
    let dev = Device::Cpu;
    let original = Mlp::new(MlpConfig::new(8, &[16, 12], 3), 7, &dev).unwrap();
    let noise = Noise::gaussian().relative(0.05);
    let mut m = original.clone();
    let report = perturb_weights(&mut m, &noise, &LayerFilter::All, 9).unwrap();
    assert_eq!(report.layers.len(), 3);
    assert_eq!(report.perturbation, noise.name());
    for (i, l) in report.layers.iter().enumerate() {
        let name = format!("layers.{i}");
        assert_eq!(l.name, name);
        assert_eq!(l.seed, layer_seed(9, i));
        let w = original.weight(&name).unwrap();
        let want = noise.apply(&w, l.seed).unwrap();
        let got = m.weight(&name).unwrap();
        assert_eq!(bits(&got), bits(&want));
        let (wv, gv) = (vals(&w), vals(&got));
        let dn = norm(&diff(&gv, &wv));
        assert!((l.delta_norm - dn).abs() < 1e-12 * dn);
        assert!((l.weight_norm - norm(&wv)).abs() < 1e-12 * norm(&wv));
        assert!((l.relative - 0.05).abs() < 1e-5);
    }
    assert!((report.relative() - 0.05).abs() < 1e-5);
    assert!(report.to_string().contains("layers.2"));

    // A filter changes which layers move, not the noise each one gets.
    let mut only = original.clone();
    let r = perturb_weights(
        &mut only,
        &noise,
        &LayerFilter::Only(vec!["layers.1".into()]),
        9,
    )
    .unwrap();
    assert_eq!(r.layers.len(), 1);
    assert_eq!(
        bits(&only.weight("layers.1").unwrap()),
        bits(&m.weight("layers.1").unwrap())
    );
    assert_eq!(
        bits(&only.weight("layers.0").unwrap()),
        bits(&original.weight("layers.0").unwrap())
    );
}

/// Changes the shape of whatever it is given.
struct Flatten;
impl Perturbation for Flatten {
    fn name(&self) -> String {
        "flatten".into()
    }
    fn apply(&self, t: &Tensor, _: u64) -> quantlens::Result<Tensor> {
        Ok(t.flatten_all()?)
    }
}

#[test]
fn perturb_weights_errors_leave_the_model_untouched() {
    let dev = Device::Cpu;
    let original = Mlp::new(MlpConfig::new(6, &[5], 2), 3, &dev).unwrap();
    let snapshot = |m: &Mlp| {
        m.layer_names()
            .iter()
            .map(|n| bits(&m.weight(n).unwrap()))
            .collect::<Vec<_>>()
    };
    let mut m = original.clone();
    let noise = Noise::gaussian().relative(0.1);
    let unknown = LayerFilter::Only(vec!["layers.0".into(), "lm_head".into()]);
    assert!(matches!(
        perturb_weights(&mut m, &noise, &unknown, 0),
        Err(Error::UnknownLayer { .. })
    ));
    assert!(matches!(
        perturb_weights(&mut m, &Flatten, &LayerFilter::All, 0),
        Err(Error::ShapeMismatch(_))
    ));
    let bad = Noise::gaussian().relative(-1.0);
    assert!(perturb_weights(&mut m, &bad, &LayerFilter::All, 0).is_err());
    assert_eq!(snapshot(&m), snapshot(&original));
}

#[test]
fn packed_weights_are_perturbed_dequantized_and_stored_dense() {
    let mut m = Mlp::new(MlpConfig::new(8, &[16], 3), 2, &Device::Cpu).unwrap();
    let q = rtn(QuantSpec::int4().per_channel());
    SequentialQuantization::new(&q).run(&mut m).unwrap();
    let packed = m.weight("layers.0").unwrap();
    assert!(matches!(
        m.linear_layer("layers.0").unwrap().weight(),
        LayerWeight::Packed(_)
    ));
    let noise = Noise::uniform().absolute(0.1);
    perturb_weights(&mut m, &noise, &LayerFilter::All, 4).unwrap();
    assert!(matches!(
        m.linear_layer("layers.0").unwrap().weight(),
        LayerWeight::Dense(_)
    ));
    let want = noise.apply(&packed, layer_seed(4, 0)).unwrap();
    assert_eq!(bits(&m.weight("layers.0").unwrap()), bits(&want));
}

/// Records every layer input it sees.
#[derive(Default)]
struct Record(Vec<(String, Tensor)>);
impl ForwardHook for Record {
    fn layer_input(&mut self, layer: &str, x: &Tensor) -> quantlens::Result<Option<Tensor>> {
        self.0.push((layer.to_string(), x.clone()));
        Ok(None)
    }
}

#[test]
fn activation_noise_through_the_hook_has_the_requested_norm() {
    let m = Mlp::new(MlpConfig::new(8, &[16], 3), 5, &Device::Cpu).unwrap();
    let x = gaussian(10, 8, 20);
    let (mut before, mut after) = (Record::default(), Record::default());
    {
        let mut hooks: Vec<Box<dyn ForwardHook + '_>> = vec![
            Box::new(&mut before),
            Box::new(PerturbActivations::new(Noise::gaussian().relative(0.1), 3)),
            Box::new(&mut after),
        ];
        m.forward_hooked(&x, &mut hooks).unwrap();
    }
    assert_eq!(before.0.len(), 2);
    for ((name, a), (name2, b)) in before.0.iter().zip(&after.0) {
        assert_eq!(name, name2);
        let (av, bv) = (vals(a), vals(b));
        let rel = norm(&diff(&bv, &av)) / norm(&av);
        assert!((rel - 0.1).abs() < 1e-5, "{name}: {rel}");
    }
}

#[test]
fn activation_noise_on_rank_three_inputs_anchors_on_tokens() {
    // [batch, tokens, features] through one layer: the anchor sees [6, 16].
    let layer = LinearLayer::new("proj", gaussian(4, 16, 21), None).unwrap();
    let x = gaussian(6, 16, 22).reshape((2, 3, 16)).unwrap();
    let int8 = rtn(QuantSpec::int8().per_channel());
    let anchor = norm(&diff(
        &vals(
            &int8
                .fake_quantize(&x.reshape((6, 16)).unwrap(), None)
                .unwrap(),
        ),
        &vals(&x),
    ));
    let mut seen = Record::default();
    {
        let mut hooks: Vec<Box<dyn ForwardHook + '_>> = vec![
            Box::new(PerturbActivations::new(
                Noise::rademacher().anchored_to(int8, 2.0),
                1,
            )),
            Box::new(&mut seen),
        ];
        let y = layer.forward(&x, &mut hooks).unwrap();
        assert_eq!(y.dims(), &[2, 3, 4]);
    }
    let moved = norm(&diff(&vals(&seen.0[0].1), &vals(&x)));
    assert!((moved - 2.0 * anchor).abs() < 1e-5 * anchor);
}

// ---------------------------------------------------------------------------------------------
// Quantization as noise.

/// Pearson correlation of |Δ| with |x| over the entries where `keep` holds, naive two-pass f64.
fn magnitude_correlation(x: &[f64], d: &[f64], keep: &[bool]) -> f64 {
    let a: Vec<f64> = (0..d.len())
        .filter(|&i| keep[i])
        .map(|i| d[i].abs())
        .collect();
    let b: Vec<f64> = (0..x.len())
        .filter(|&i| keep[i])
        .map(|i| x[i].abs())
        .collect();
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(&b).map(|(p, q)| (p - ma) * (q - mb)).sum();
    let va: f64 = a.iter().map(|p| (p - ma) * (p - ma)).sum();
    let vb: f64 = b.iter().map(|q| (q - mb) * (q - mb)).sum();
    cov / (va * vb).sqrt()
}

#[test]
fn rtn_error_is_uncorrelated_with_magnitude_and_companding_error_is_not() {
    let x = gaussian(256, 512, 23);
    let xv = vals(&x);
    let n = xv.len() as f64;
    // Uniform RTN: |Δ| is a triangle wave of period `step` in x; for a Gaussian with σ/step
    // ≈ 2.3 its correlation with |x| is of order exp(−2π²(σ/step)²) ≈ 0, so only sampling
    // noise remains (sd ≈ 1/√n).
    let q = rtn(QuantSpec::int4().per_channel());
    let d = diff(&vals(&q.fake_quantize(&x, None).unwrap()), &xv);
    let r_rtn = magnitude_correlation(&xv, &d, &vec![true; xv.len()]);
    assert!(r_rtn.abs() < 5.0 / n.sqrt(), "RTN: r = {r_rtn}");
    // Cube-root companding: |Δ| ≈ 3|x|^(2/3)|Δ_y|, clearly growing with |x|. The f32 scale
    // s³ can put a row's largest |x| an ulp beyond the top level (k = 7) or bottom level
    // (k = −8): such entries count as clipped, here as in the report.
    let qt = CubeRoot.quantize(&x, None).unwrap();
    let cols = 512;
    let keep: Vec<bool> = (0..xv.len())
        .map(|i| {
            let s3 = qt.scales().get(i / cols);
            let (lo, hi) = (f64::from(s3 * -512.0), f64::from(s3 * 343.0));
            (lo..=hi).contains(&xv[i])
        })
        .collect();
    let d = diff(&vals(&CubeRoot.fake_quantize(&x, None).unwrap()), &xv);
    let r_cube = magnitude_correlation(&xv, &d, &keep);
    assert!(r_cube > 0.3, "companding: r = {r_cube}");

    // The report agrees with the naive numbers (no entry is clipped by either scheme).
    let rep = perturbation_equivalence(&q, &x, 1).unwrap();
    assert_eq!(rep.unclipped, xv.len());
    let got = rep.quantizer_stats().magnitude_correlation.unwrap();
    assert!((got - r_rtn).abs() < 1e-9);
    let rep = perturbation_equivalence(&CubeRoot, &x, 1).unwrap();
    assert_eq!(rep.unclipped, keep.iter().filter(|k| **k).count());
    let got = rep.quantizer_stats().magnitude_correlation.unwrap();
    assert!((got - r_cube).abs() < 1e-9);
    eprintln!("RTN r = {r_rtn:.4}, cube-root r = {r_cube:.4}");
}

#[test]
fn equivalence_report_matches_naive_statistics() {
    let x = gaussian(64, 128, 24);
    let xv = vals(&x);
    let n = xv.len() as f64;
    let q = rtn(QuantSpec::int4().per_channel());
    let rep = perturbation_equivalence(&q, &x, 2).unwrap();
    println!("{rep}");
    let d = diff(&vals(&q.fake_quantize(&x, None).unwrap()), &xv);
    let mean = d.iter().sum::<f64>() / n;
    let var = d.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    let m4 = d.iter().map(|v| (v - mean).powi(4)).sum::<f64>() / n;
    let s = rep.quantizer_stats();
    assert_eq!(rep.quantizer, q.name());
    assert_eq!(rep.numel, xv.len());
    assert!((s.mean - mean).abs() < 1e-15);
    assert!((s.variance / var - 1.0).abs() < 1e-12);
    assert!((s.excess_kurtosis.unwrap() - (m4 / (var * var) - 3.0)).abs() < 1e-9);
    let rel = norm(&d) / norm(&xv);
    assert!((s.relative_norm - rel).abs() < 1e-12);
    // Norm-matched noise rows share the quantizer's ‖Δ‖/‖x‖.
    for src in [
        ErrorSource::Gaussian,
        ErrorSource::GaussianUp,
        ErrorSource::GaussianDown,
    ] {
        let r = rep.stats(src).unwrap();
        assert!((r.relative_norm - rel).abs() < 1e-12 * rel, "{src:?}");
    }
    // Step-matched noise has the quantizer's variance to within sampling error; RTN error on
    // a Gaussian is close to uniform (excess kurtosis −1.2), Gaussian noise is not.
    let step = rep.stats(ErrorSource::StepMatched).unwrap();
    assert!((step.variance / s.variance - 1.0).abs() < 0.05);
    // A mixture of uniforms of widths s_r (one per row) has excess kurtosis
    // 1.8·E[s⁴]/E[s²]² − 3 (−1.2 when every row has the same step).
    let scales = q.quantize(&x, None).unwrap().scales().to_f32_vec();
    let (m2s, m4s) = scales.iter().fold((0.0, 0.0), |(a, b), &v| {
        let v = f64::from(v);
        (a + v * v, b + v.powi(4))
    });
    let rows = scales.len() as f64;
    let want = 1.8 * (m4s / rows) / (m2s / rows).powi(2) - 3.0;
    assert!(
        (s.excess_kurtosis.unwrap() - want).abs() < 0.1,
        "want {want}"
    );
    assert!(
        (step.excess_kurtosis.unwrap() - want).abs() < 0.1,
        "want {want}"
    );
    let g = rep.stats(ErrorSource::Gaussian).unwrap();
    // Sample excess kurtosis of n Gaussians: sd √(24/n) ≈ 0.054.
    assert!(g.excess_kurtosis.unwrap().abs() < 0.3);
    assert!(
        rep.stats(ErrorSource::GaussianUp)
            .unwrap()
            .magnitude_correlation
            .unwrap()
            > 0.3
    );
    assert!(
        rep.stats(ErrorSource::GaussianDown)
            .unwrap()
            .magnitude_correlation
            .unwrap()
            < -0.1
    );
    let table = rep.to_string();
    assert!(table.contains("rtn-w4-c-sym") && table.contains("step-matched"));
    assert_eq!(table.lines().count(), 7);
}

#[test]
fn equivalence_refuses_bad_input() {
    let q = rtn(QuantSpec::int4().per_group(32));
    let nan = Tensor::new(&[[f32::NAN; 32]], &Device::Cpu).unwrap();
    assert!(matches!(
        perturbation_equivalence(&q, &nan, 0),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        perturbation_equivalence(&q, &gaussian(2, 48, 1), 0),
        Err(Error::GroupSizeMismatch { .. })
    ));
    assert!(matches!(
        ErrorStats::compute(&[1.0, 2.0], &[0.1], &[true, true]),
        Err(Error::ShapeMismatch(_))
    ));
    assert!(matches!(
        ErrorStats::compute(&[1.0], &[f64::NAN], &[true]),
        Err(Error::NonFinite { .. })
    ));
}
