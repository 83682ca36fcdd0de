//! AWQ and SmoothQuant: the smoothing algebra, the α search against its own α = 0 (the base
//! quantizer), W8A8 forwards with and without smoothing, the layer output error against a
//! direct f64 computation on stored inputs, and bad input.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{TestRng, values};
use quantlens::model::{
    LayerWeight, LinearLayer, Mlp, MlpConfig, NoHooks, QuantizableModel, QuantizeActivations,
    SequentialQuantization, StoreAs,
};
use quantlens::quant::output_error::{layer_output_error, relative_layer_output_error};
use quantlens::{
    AwqQuantizer, Calibration, Error, Nf4Quantizer, QuantSpec, Quantizer, SmoothQuantizer,
    UniformQuantizer,
};

const DEV: Device = Device::Cpu;

fn matrix(rows: usize, cols: usize, sd: f64, seed: u64) -> Vec<f32> {
    let mut rng = TestRng::new(seed);
    (0..rows * cols)
        .map(|_| (sd * rng.normal()) as f32)
        .collect()
}

fn tensor(v: &[f32], rows: usize, cols: usize) -> Tensor {
    Tensor::from_slice(v, (rows, cols), &DEV).unwrap()
}

/// `rows × cols` activations, N(0, 1) with channel `j` multiplied by `boost(j)`.
fn activations(rows: usize, cols: usize, seed: u64, boost: impl Fn(usize) -> f32) -> Vec<f32> {
    let mut v = matrix(rows, cols, 1.0, seed);
    for (i, x) in v.iter_mut().enumerate() {
        *x *= boost(i % cols);
    }
    v
}

/// A few salient input channels: every 32nd (from 7) is 20× larger.
fn salient(j: usize) -> f32 {
    if j % 32 == 7 { 20.0 } else { 1.0 }
}

/// Outlier channels as SmoothQuant describes them: a handful 60× larger than the rest.
fn outliers(j: usize) -> f32 {
    if j % 40 == 3 { 60.0 } else { 1.0 }
}

fn calibration(x: &[f32], cols: usize, batches: usize) -> Calibration {
    let rows = x.len() / cols;
    let mut calib = Calibration::new(cols);
    let per = rows.div_ceil(batches);
    for start in (0..rows).step_by(per) {
        let n = per.min(rows - start);
        calib
            .observe(&tensor(&x[start * cols..(start + n) * cols], n, cols))
            .unwrap();
    }
    calib
}

/// `‖X(W − Ŵ)ᵀ‖²/n` straight from the stored inputs, in f64.
fn naive_output_error(x: &[f32], w: &[f32], w_hat: &[f32], cols: usize) -> f64 {
    let n = x.len() / cols;
    let mut total = 0.0;
    for xr in x.chunks(cols) {
        for (wr, hr) in w.chunks(cols).zip(w_hat.chunks(cols)) {
            let y: f64 = (0..cols)
                .map(|j| xr[j] as f64 * (wr[j] as f64 - hr[j] as f64))
                .sum();
            total += y * y;
        }
    }
    total / n as f64
}

/// `‖XWᵀ‖²/n` in f64.
fn naive_output_energy(x: &[f32], w: &[f32], cols: usize) -> f64 {
    naive_output_error(x, w, &vec![0.0; w.len()], cols)
}

/// `‖A − B‖_F / ‖B‖_F` in f64.
fn rel(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

#[test]
fn layer_output_error_matches_a_direct_f64_computation() {
    let (rows, cols, n) = (24, 48, 300);
    let x = activations(n, cols, 1, |j| 0.1 + (j % 5) as f32);
    let calib = calibration(&x, cols, 3);
    let w = matrix(rows, cols, 0.5, 2);
    let noise = matrix(rows, cols, 0.01, 3);
    let w_hat: Vec<f32> = w.iter().zip(&noise).map(|(a, b)| a + b).collect();
    let got =
        layer_output_error(&tensor(&w, rows, cols), &tensor(&w_hat, rows, cols), &calib).unwrap();
    let want = naive_output_error(&x, &w, &w_hat, cols);
    assert!((got - want).abs() <= 1e-5 * want, "{got} vs {want}");
    let got_rel =
        relative_layer_output_error(&tensor(&w, rows, cols), &tensor(&w_hat, rows, cols), &calib)
            .unwrap();
    let want_rel = (want / naive_output_energy(&x, &w, cols)).sqrt();
    assert!((got_rel - want_rel).abs() <= 1e-5 * want_rel);
    // Identical weights: no error; a zero layer: 0 or ∞ relative error.
    let t = tensor(&w, rows, cols);
    assert_eq!(layer_output_error(&t, &t, &calib).unwrap(), 0.0);
    let zero = Tensor::zeros((rows, cols), DType::F32, &DEV).unwrap();
    assert_eq!(
        relative_layer_output_error(&zero, &zero, &calib).unwrap(),
        0.0
    );
    assert_eq!(
        relative_layer_output_error(&zero, &t, &calib).unwrap(),
        f64::INFINITY
    );
    // f16 weights read exactly.
    let (w16, h16) = (
        t.to_dtype(DType::F16).unwrap(),
        zero.to_dtype(DType::F16).unwrap(),
    );
    let e16 = layer_output_error(&w16, &h16, &calib).unwrap();
    let w16v = values(&w16);
    let want16 = naive_output_energy(&x, &w16v, cols);
    assert!((e16 - want16).abs() <= 1e-5 * want16);
}

#[test]
fn awq_with_alpha_zero_is_exactly_its_base_quantizer() {
    let (rows, cols) = (16, 256);
    let x = activations(128, cols, 4, salient);
    let calib = calibration(&x, cols, 2);
    let w = tensor(&matrix(rows, cols, 0.3, 5), rows, cols);
    let bases: [fn() -> Box<dyn Quantizer>; 3] = [
        || Box::new(UniformQuantizer::new(QuantSpec::int4().per_group(128).asymmetric()).unwrap()),
        || Box::new(UniformQuantizer::new(QuantSpec::int3().per_channel()).unwrap()),
        || Box::new(Nf4Quantizer::new()),
    ];
    for make in bases {
        let base = make();
        for w in [w.clone(), w.to_dtype(DType::BF16).unwrap()] {
            let plain = base.quantize(&w, None).unwrap();
            let awq = AwqQuantizer::new()
                .with_base(make())
                .with_alpha(0.0)
                .unwrap()
                .with_clip_search(false);
            let qt = awq.quantize(&w, Some(&calib)).unwrap();
            assert_eq!(qt, plain, "{}", base.name());
            assert!(qt.input_scales().is_none());
            let (a, b) = (
                awq.fake_quantize(&w, Some(&calib)).unwrap(),
                base.fake_quantize(&w, None).unwrap(),
            );
            assert!(
                values(&a)
                    .iter()
                    .zip(values(&b))
                    .all(|(p, q)| p.to_bits() == q.to_bits())
            );
        }
    }
}

#[test]
fn awq_search_beats_its_base_on_salient_channels() {
    let (rows, cols) = (64, 256);
    let x = activations(512, cols, 6, salient);
    let calib = calibration(&x, cols, 4);
    let wv = matrix(rows, cols, 0.05, 7);
    let w = tensor(&wv, rows, cols);
    let rtn = UniformQuantizer::new(QuantSpec::int4().per_group(128).asymmetric()).unwrap();
    let base_err = layer_output_error(&w, &rtn.fake_quantize(&w, None).unwrap(), &calib).unwrap();

    for clip in [false, true] {
        let awq = AwqQuantizer::new().with_clip_search(clip);
        assert_eq!(awq.base().name(), rtn.name());
        let found = awq.search(&w, &calib).unwrap();
        // α = 0 is the first grid point and is the base quantizer.
        assert_eq!(found.errors.len(), 20);
        assert_eq!(found.errors[0].0, 0.0);
        assert!((found.errors[0].1 - base_err).abs() <= 1e-12 * base_err);
        let min = found
            .errors
            .iter()
            .map(|e| e.1)
            .fold(f64::INFINITY, f64::min);
        assert!(found.output_error <= min);
        assert!(found.alpha > 0.0);
        // The reported error is the tensor's, measured independently on the stored inputs.
        let w_hat = values(&found.tensor.dequantize(&DEV).unwrap());
        let direct = naive_output_error(&x, &wv, &w_hat, cols);
        assert!((found.output_error - direct).abs() <= 1e-5 * direct);
        let via_quantize = awq.quantize(&w, Some(&calib)).unwrap();
        assert_eq!(via_quantize, found.tensor);
        let s = found.tensor.input_scales().unwrap();
        assert_eq!(s.len(), cols);
        // Strictly better than RTN with salient channels.
        assert!(
            found.output_error < 0.8 * base_err,
            "awq (clip {clip}) {} vs rtn {base_err}",
            found.output_error
        );
        println!(
            "AWQ clip={clip}: α = {}, clipped = {}, output error {:.4e} vs RTN {:.4e} ({:.1}%)",
            found.alpha,
            found.clipped,
            found.output_error,
            base_err,
            100.0 * found.output_error / base_err
        );
    }
    let noclip = AwqQuantizer::new()
        .with_clip_search(false)
        .search(&w, &calib)
        .unwrap();
    let clip = AwqQuantizer::new().search(&w, &calib).unwrap();
    assert!(clip.output_error <= noclip.output_error);
    assert_eq!(clip.alpha, noclip.alpha);
}

#[test]
fn awq_storage_counts_the_input_scales() {
    let (rows, cols) = (8, 256);
    let calib = calibration(&activations(64, cols, 8, salient), cols, 1);
    let w = tensor(&matrix(rows, cols, 0.1, 9), rows, cols);
    let qt = AwqQuantizer::new().quantize(&w, Some(&calib)).unwrap();
    let plain = UniformQuantizer::new(QuantSpec::int4().per_group(128).asymmetric())
        .unwrap()
        .quantize(&w, None)
        .unwrap();
    assert_eq!(qt.storage_bytes(), plain.storage_bytes() + 2 * cols);
    assert_eq!(qt.dtype(), DType::F32);
    // f16 weights come back as f16.
    let w16 = w.to_dtype(DType::F16).unwrap();
    let q16 = AwqQuantizer::new().quantize(&w16, Some(&calib)).unwrap();
    assert_eq!(q16.dequantize(&DEV).unwrap().dtype(), DType::F16);
}

#[test]
fn smoothing_leaves_the_full_precision_output_unchanged() {
    let (rows, cols, n) = (32, 120, 64);
    let xv = activations(n, cols, 10, outliers);
    let calib = calibration(&xv, cols, 2);
    let wv = matrix(rows, cols, 0.2, 11);
    let (x, w) = (tensor(&xv, n, cols), tensor(&wv, rows, cols));
    for alpha in [0.0, 0.25, 0.5, 0.8, 1.0] {
        let sq = SmoothQuantizer::new().with_alpha(alpha).unwrap();
        let s = sq.smoothing_scales(&w, &calib).unwrap();
        assert!(s.iter().all(|v| v.is_finite() && *v > 0.0));
        let st = Tensor::new(s.as_slice(), &DEV).unwrap();
        let y_smooth = x
            .broadcast_div(&st)
            .unwrap()
            .matmul(&w.broadcast_mul(&st).unwrap().t().unwrap())
            .unwrap();
        let y = x.matmul(&w.t().unwrap()).unwrap();
        let r = rel(&values(&y_smooth), &values(&y));
        assert!(r < 1e-5, "α = {alpha}: {r}");
        // Balanced ranges at α = 0.5: max|X_j/s_j| = max|W_j·s_j| (up to the f16 rounding of s).
        if alpha == 0.5 {
            let amax = calib.act_absmax();
            for j in 0..cols {
                let wmax = (0..rows)
                    .map(|i| wv[i * cols + j].abs())
                    .fold(0f32, f32::max);
                let (a, b) = (amax[j] / s[j], wmax * s[j]);
                assert!((a / b - 1.0).abs() < 2e-3, "channel {j}: {a} vs {b}");
            }
        }
    }
}

/// Packed (input divided before the hooks) and dense fake-quantized (effective weight) layers
/// compute the same function, without activation quantization.
#[test]
fn packed_and_fake_quantized_smoothed_layers_agree() {
    let (rows, cols, n) = (24, 80, 50);
    let xv = activations(n, cols, 12, outliers);
    let calib = calibration(&xv, cols, 1);
    let w = tensor(&matrix(rows, cols, 0.2, 13), rows, cols);
    let x = tensor(&xv, n, cols);
    let quantizers: Vec<Box<dyn Quantizer>> = vec![
        Box::new(SmoothQuantizer::new()),
        Box::new(AwqQuantizer::new().with_base(
            UniformQuantizer::new(QuantSpec::int4().per_group(16).asymmetric()).unwrap(),
        )),
    ];
    for q in quantizers {
        let qt = q.quantize(&w, Some(&calib)).unwrap();
        assert!(qt.input_scales().is_some(), "{}", q.name());
        let fake = q.fake_quantize(&w, Some(&calib)).unwrap();
        let packed = LinearLayer::new("l", qt.clone(), None).unwrap();
        let dense = LinearLayer::new("l", fake.clone(), None).unwrap();
        assert_eq!(
            values(&packed.dense_weight().unwrap()),
            values(&fake),
            "{}",
            q.name()
        );
        let (yp, yd) = (
            packed.forward(&x, &mut NoHooks).unwrap(),
            dense.forward(&x, &mut NoHooks).unwrap(),
        );
        let r = rel(&values(&yp), &values(&yd));
        assert!(r < 1e-5, "{}: {r}", q.name());
        // The smoothed weight times the smoothed input, by hand.
        let s = Tensor::new(qt.input_scales().unwrap().to_f32_vec().as_slice(), &DEV).unwrap();
        let by_hand = x
            .broadcast_div(&s)
            .unwrap()
            .matmul(&qt.dequantize_smoothed(&DEV).unwrap().t().unwrap())
            .unwrap();
        assert_eq!(values(&by_hand), values(&yp));
    }
}

#[test]
fn smoothquant_w8a8_beats_plain_w8a8_on_outlier_channels() {
    let (rows, cols, n) = (64, 160, 256);
    let xv = activations(n, cols, 14, outliers);
    let calib = calibration(&xv, cols, 2);
    let w = tensor(&matrix(rows, cols, 0.1, 15), rows, cols);
    let x = tensor(&xv, n, cols);
    let y = values(
        &LinearLayer::new("l", w.clone(), None)
            .unwrap()
            .forward(&x, &mut NoHooks)
            .unwrap(),
    );
    let rtn8 = UniformQuantizer::new(QuantSpec::int8().per_channel()).unwrap();
    let w8a8 = |qt| -> f64 {
        let layer = LinearLayer::new("l", LayerWeight::Packed(Box::new(qt)), None).unwrap();
        let mut a8 = QuantizeActivations::per_token(8).unwrap();
        rel(&values(&layer.forward(&x, &mut a8).unwrap()), &y)
    };
    let plain = w8a8(rtn8.quantize(&w, None).unwrap());
    let smooth = w8a8(SmoothQuantizer::new().quantize(&w, Some(&calib)).unwrap());
    println!("W8A8 relative output error: plain {plain:.4e}, SmoothQuant α=0.5 {smooth:.4e}");
    assert!(smooth < 0.5 * plain, "{smooth} vs {plain}");
}

#[test]
fn smoothquant_through_an_mlp_with_sequential_quantization() {
    let cols = 80;
    let fp = Mlp::new(MlpConfig::new(cols, &[64], 10), 3, &DEV).unwrap();
    let xv = activations(256, cols, 16, outliers);
    let x = tensor(&xv, 256, cols);
    let y = values(&fp.forward(&x).unwrap());
    let run = |q: &dyn Quantizer, store: StoreAs| -> Mlp {
        let mut m = fp.clone();
        SequentialQuantization::new(q)
            .calibration([x.narrow(0, 0, 128).unwrap(), x.narrow(0, 128, 128).unwrap()])
            .store_as(store)
            .run(&mut m)
            .unwrap();
        m
    };
    let a8 = |m: &Mlp| -> f64 {
        let mut hook = QuantizeActivations::per_token(8).unwrap();
        rel(&values(&m.forward_hooked(&x, &mut hook).unwrap()), &y)
    };
    let rtn8 = UniformQuantizer::new(QuantSpec::int8().per_channel()).unwrap();
    let sq = SmoothQuantizer::new();
    let plain = a8(&run(&rtn8, StoreAs::Packed));
    let smooth_model = run(&sq, StoreAs::Packed);
    let smooth = a8(&smooth_model);
    println!("MLP W8A8 relative logit error: plain {plain:.4e}, SmoothQuant {smooth:.4e}");
    assert!(smooth < plain, "{smooth} vs {plain}");
    // Weight-only: packed and fake-quantized storage compute the same function.
    let fake = run(&sq, StoreAs::FakeQuantized);
    let r = rel(
        &values(&smooth_model.forward(&x).unwrap()),
        &values(&fake.forward(&x).unwrap()),
    );
    assert!(r < 1e-5, "{r}");
    // Re-quantizing a smoothed model calibrates on the layer's real inputs (not X·diag(s)⁻¹):
    // the first layer sees the model input, so its new scales match the old ones.
    let first = |m: &Mlp| match m.linear_layer("layers.0").unwrap().weight() {
        LayerWeight::Packed(q) => q.input_scales().unwrap().to_f32_vec(),
        LayerWeight::Dense(_) => panic!("not packed"),
    };
    let mut again = smooth_model.clone();
    SequentialQuantization::new(&sq)
        .calibration([x.narrow(0, 0, 128).unwrap(), x.narrow(0, 128, 128).unwrap()])
        .run(&mut again)
        .unwrap();
    let (s0, s1) = (first(&smooth_model), first(&again));
    let worst = s0
        .iter()
        .zip(&s1)
        .map(|(a, b)| (a / b - 1.0).abs())
        .fold(0f32, f32::max);
    assert!(worst < 0.02, "input scales moved by {worst}");
}

#[test]
fn awq_through_sequential_quantization_weight_only() {
    let cols = 64;
    let fp = Mlp::new(MlpConfig::new(cols, &[128], 10), 4, &DEV).unwrap();
    let x = tensor(&activations(256, cols, 17, salient), 256, cols);
    let y = values(&fp.forward(&x).unwrap());
    let error = |q: &dyn Quantizer| -> f64 {
        let mut m = fp.clone();
        SequentialQuantization::new(q)
            .calibration([x.clone()])
            .run(&mut m)
            .unwrap();
        rel(&values(&m.forward(&x).unwrap()), &y)
    };
    let base = UniformQuantizer::new(QuantSpec::int3().per_group(32).asymmetric()).unwrap();
    let rtn = error(&base);
    let awq = error(&AwqQuantizer::new().with_base(base));
    println!("MLP W3A16 g32 relative logit error: RTN {rtn:.4e}, AWQ {awq:.4e}");
    assert!(awq < rtn, "{awq} vs {rtn}");
}

#[test]
fn bad_inputs_are_clear_errors() {
    let cols = 64;
    let calib = calibration(&activations(16, cols, 18, salient), cols, 1);
    let w = tensor(&matrix(4, cols, 0.1, 19), 4, cols);
    let awq = AwqQuantizer::new()
        .with_base(UniformQuantizer::new(QuantSpec::int4().per_group(32)).unwrap());
    let sq = SmoothQuantizer::new();
    let quantizers: [&dyn Quantizer; 2] = [&awq, &sq];
    for q in quantizers {
        assert!(q.uses_calibration());
        let name = q.name();
        // No calibration.
        let err = q.quantize(&w, None).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidParameter {
                    name: "calibration",
                    ..
                }
            ),
            "{name}: {err}"
        );
        assert!(q.fake_quantize(&w, None).is_err());
        // Width mismatch.
        let narrow = calibration(&activations(16, 32, 20, salient), 32, 1);
        let err = q.quantize(&w, Some(&narrow)).unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch(_)), "{name}: {err}");
        assert!(err.to_string().contains("32"), "{err}");
        // A calibration that saw nothing.
        let err = q.quantize(&w, Some(&Calibration::new(cols))).unwrap_err();
        assert!(matches!(err, Error::TooFewSamples { .. }), "{name}: {err}");
        // NaN and ±Inf weights, wrong ranks, integer dtype.
        let mut bad = matrix(4, cols, 0.1, 21);
        bad[77] = f32::NAN;
        let err = q
            .quantize(&tensor(&bad, 4, cols), Some(&calib))
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::NonFinite {
                    first_index: 77,
                    ..
                }
            ),
            "{name}: {err}"
        );
        bad[77] = f32::NEG_INFINITY;
        assert!(q.quantize(&tensor(&bad, 4, cols), Some(&calib)).is_err());
        let flat = Tensor::ones(cols, DType::F32, &DEV).unwrap();
        assert!(matches!(
            q.quantize(&flat, Some(&calib)),
            Err(Error::RankMismatch { .. })
        ));
        let ints = Tensor::ones((4, cols), DType::U32, &DEV).unwrap();
        assert!(q.quantize(&ints, Some(&calib)).is_err());
    }
    // α outside [0, 1], NaN α; empty grids.
    for alpha in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            AwqQuantizer::new().with_alpha(alpha),
            Err(Error::InvalidParameter { .. })
        ));
        assert!(matches!(
            SmoothQuantizer::new().with_alpha(alpha),
            Err(Error::InvalidParameter { .. })
        ));
        assert!(AwqQuantizer::input_scales(&calib, alpha).is_err());
    }
    assert!(AwqQuantizer::new().with_grid(0).is_err());
    assert!(AwqQuantizer::new().with_clip_grid(0, 0.5).is_err());
    assert!(AwqQuantizer::new().with_clip_grid(20, 1.0).is_err());
    assert!(AwqQuantizer::new().with_clip_grid(20, f64::NAN).is_err());
    // Smoothing over a quantizer that already smooths would drop one set of scales.
    let nested = AwqQuantizer::new().with_base(SmoothQuantizer::new());
    assert!(matches!(
        nested.quantize(&w, Some(&calib)),
        Err(Error::Unsupported(_))
    ));
    // The output error checks its inputs too.
    let other = tensor(&matrix(4, 32, 0.1, 22), 4, 32);
    assert!(matches!(
        layer_output_error(&w, &other, &calib),
        Err(Error::ShapeMismatch(_))
    ));
    assert!(matches!(
        layer_output_error(&other, &other, &calib),
        Err(Error::ShapeMismatch(_))
    ));
    let mut nan = matrix(4, cols, 0.1, 23);
    nan[5] = f32::NAN;
    assert!(matches!(
        layer_output_error(&w, &tensor(&nan, 4, cols), &calib),
        Err(Error::NonFinite { first_index: 5, .. })
    ));
    assert!(matches!(
        layer_output_error(&w, &w, &Calibration::new(cols)),
        Err(Error::TooFewSamples { .. })
    ));
}

#[test]
fn code_flips_keep_the_input_scales() {
    let cols = 64;
    let calib = calibration(&activations(32, cols, 24, outliers), cols, 1);
    let w = tensor(&matrix(8, cols, 0.1, 25), 8, cols);
    let qt = SmoothQuantizer::new().quantize(&w, Some(&calib)).unwrap();
    let flipped = quantlens::CodeFlips::exact_bits(5).flip(&qt, 1).unwrap();
    assert_eq!(flipped.input_scales(), qt.input_scales());
    assert_ne!(flipped.codes(), qt.codes());
}

#[test]
fn names_are_unique_per_configuration() {
    let names = [
        AwqQuantizer::new().name(),
        AwqQuantizer::new().with_alpha(0.5).unwrap().name(),
        AwqQuantizer::new().with_grid(10).unwrap().name(),
        AwqQuantizer::new().with_clip_search(false).name(),
        AwqQuantizer::new().with_clip_grid(10, 0.3).unwrap().name(),
        AwqQuantizer::new()
            .with_base(UniformQuantizer::new(QuantSpec::int3().per_group(64)).unwrap())
            .name(),
        SmoothQuantizer::new().name(),
        SmoothQuantizer::new().with_alpha(0.8).unwrap().name(),
    ];
    assert_eq!(names[0], "awq-rtn-w4-g128-asym");
    assert_eq!(names[6], "smoothquant-a0.5-rtn-w8-c-sym");
    let unique: std::collections::HashSet<_> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "{names:?}");
    assert_eq!(
        AwqQuantizer::new().alphas(),
        (0..20).map(|k| k as f64 / 20.0).collect::<Vec<_>>()
    );
}

#[cfg(feature = "testing")]
mod conformance {
    use quantlens::testing::{Conformance, ErrorBound};
    use quantlens::{AwqQuantizer, QuantSpec, SmoothQuantizer, UniformQuantizer};

    #[test]
    fn awq_and_smoothquant_pass_the_conformance_suite() {
        let g8 = UniformQuantizer::new(QuantSpec::int4().per_group(8).asymmetric()).unwrap();
        let suite = Conformance::new().calibrated().cases(16);
        suite.clone().error_bound(ErrorBound::HalfStep).run(
            &AwqQuantizer::new()
                .with_base(g8.clone())
                .with_clip_search(false),
        );
        suite
            .clone()
            .error_bound(ErrorBound::Unchecked)
            .run(&AwqQuantizer::new().with_base(g8));
        suite
            .clone()
            .error_bound(ErrorBound::HalfStep)
            .run(&SmoothQuantizer::new());
        suite
            .error_bound(ErrorBound::NearestLevel)
            .run(&SmoothQuantizer::new().with_alpha(0.8).unwrap());
    }
}

/// AWQ and SmoothQuant over a data-aware base (GPTQ) hand it the statistics of the smoothed
/// inputs: α = 0 is GPTQ itself, and the search is never worse than GPTQ on the calibration.
#[test]
fn awq_and_smoothquant_over_gptq() {
    use quantlens::GptqQuantizer;
    let cols = 64;
    let x = activations(512, cols, 31, salient);
    let calib = calibration(&x, cols, 4);
    let w = tensor(&matrix(32, cols, 0.1, 32), 32, cols);
    let gptq = GptqQuantizer::new(QuantSpec::int3().per_group(32).asymmetric()).unwrap();
    let plain = gptq.quantize(&w, Some(&calib)).unwrap();
    let zero = AwqQuantizer::new()
        .with_base(gptq.clone())
        .with_alpha(0.0)
        .unwrap()
        .with_clip_search(false);
    assert_eq!(zero.quantize(&w, Some(&calib)).unwrap(), plain);
    let awq = AwqQuantizer::new().with_base(gptq.clone());
    let err = |t: &Tensor| layer_output_error(&w, t, &calib).unwrap();
    let e_gptq = err(&plain.dequantize(&Device::Cpu).unwrap());
    let e_awq = err(&awq.fake_quantize(&w, Some(&calib)).unwrap());
    assert!(e_awq <= e_gptq * (1.0 + 1e-9), "{e_awq} vs {e_gptq}");
    let sq = SmoothQuantizer::new().with_base(gptq);
    let t = sq.quantize(&w, Some(&calib)).unwrap();
    assert!(t.input_scales().is_some());
    assert!(err(&t.dequantize(&Device::Cpu).unwrap()).is_finite());
    assert!(matches!(
        awq.quantize(&w, None),
        Err(Error::InvalidParameter { .. }) | Err(Error::Unsupported(_))
    ));
}
