//! Loss probes against references written here: a two-pass f64 log-sum-exp over the f32
//! values the probe sees, a `log1p` form for losses too small for that, naive squared error,
//! and Candle's own `cross_entropy` / `log_softmax`.

use candle_core::{D, DType, Device, IndexOp, Tensor};
use proptest::prelude::*;
use quantlens::rng::SplitMix64;
use quantlens::{CrossEntropy, Error, LossProbe, SequenceNll, SquaredError};

/// The accuracy the probes promise, relative to the exact loss of the f32 logits.
const REL_TOL: f64 = 1e-5;

fn normals(n: usize, scale: f64, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| (rng.normal() * scale) as f32).collect()
}

fn indices(n: usize, classes: usize, seed: u64) -> Vec<u32> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| (rng.next_u64() % classes as u64) as u32)
        .collect()
}

/// Neumaier-compensated sum, so that the reference's own error stays at a few ulp.
fn sum_f64(xs: impl Iterator<Item = f64>) -> f64 {
    let (mut s, mut c) = (0f64, 0f64);
    for x in xs {
        let t = s + x;
        c += if s.abs() >= x.abs() {
            (s - t) + x
        } else {
            (x - t) + s
        };
        s = t;
    }
    s + c
}

/// `lse(row) − row[t]`, two passes in f64, and a bound on its own absolute error (the
/// rounding of `max + ln s − x_t` in f64).
fn reference(row: &[f32], t: usize) -> (f64, f64) {
    let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let xt = row[t] as f64;
    if xt == f64::NEG_INFINITY {
        return (f64::INFINITY, 0.0);
    }
    let s = sum_f64(row.iter().map(|&v| (v as f64 - m).exp()));
    let err = 4.0 * f64::EPSILON * (m.abs() + xt.abs() + s.ln() + 1.0);
    (m + s.ln() - xt, err)
}

/// `log1p(Σ_{i≠t} exp(x_i − x_t))` in f64: exact to a few ulp *relative* when the target is
/// the largest logit, where `reference` is not.
fn log1p_reference(row: &[f32], t: usize) -> f64 {
    let xt = row[t] as f64;
    let s = sum_f64(
        row.iter()
            .enumerate()
            .filter(|(i, _)| *i != t)
            .map(|(_, &v)| (v as f64 - xt).exp()),
    );
    s.ln_1p()
}

fn assert_close(got: f32, (want, ref_err): (f64, f64), what: &str) {
    if want.is_infinite() {
        assert_eq!(got as f64, want, "{what}");
        return;
    }
    // f32 cannot hold a loss below its normal range to any relative accuracy.
    let tol = REL_TOL * want.abs() + ref_err + f32::MIN_POSITIVE as f64;
    assert!(
        (got as f64 - want).abs() <= tol,
        "{what}: got {got:e}, want {want:e} (tolerance {tol:e})"
    );
}

fn rows_f32(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_dtype(DType::F32).unwrap().to_vec2().unwrap()
}

fn ce(logits: &Tensor, targets: &Tensor) -> Vec<f32> {
    CrossEntropy::new()
        .per_sample_losses(logits, targets)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// CE of every row against the reference, with u32 targets.
fn check_ce(logits: &Tensor, targets: &[u32], what: &str) {
    let tt = Tensor::new(targets, logits.device()).unwrap();
    let got = ce(logits, &tt);
    for (r, (row, &t)) in rows_f32(logits).iter().zip(targets).enumerate() {
        assert_close(
            got[r],
            reference(row, t as usize),
            &format!("{what} row {r}"),
        );
    }
}

fn dtype_of(i: usize) -> DType {
    [DType::F32, DType::F16, DType::BF16][i]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn cross_entropy_matches_the_f64_reference(
        rows in 1usize..24,
        cols in 1usize..400,
        scale in prop_oneof![Just(1.0), Just(30.0), Just(1e4)],
        dtype in 0usize..3,
        masked in prop_oneof![Just(0.0), Just(0.2), Just(0.9)],
        target_dtype in 0usize..3,
        seed: u64,
    ) {
        let mut x = normals(rows * cols, scale, seed);
        let mut rng = SplitMix64::new(seed ^ 0xABCD);
        for v in &mut x {
            if rng.next_f64() < masked {
                *v = f32::NEG_INFINITY;
            }
        }
        let logits = Tensor::from_vec(x, (rows, cols), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype_of(dtype))
            .unwrap();
        let t = indices(rows, cols, seed ^ 7);
        let targets = match target_dtype {
            0 => Tensor::new(t.as_slice(), &Device::Cpu).unwrap(),
            1 => Tensor::new(t.iter().map(|&v| v as i64).collect::<Vec<_>>().as_slice(), &Device::Cpu).unwrap(),
            _ if cols <= 256 => Tensor::new(t.iter().map(|&v| v as u8).collect::<Vec<_>>().as_slice(), &Device::Cpu).unwrap(),
            _ => Tensor::new(t.as_slice(), &Device::Cpu).unwrap(),
        };
        let got = ce(&logits, &targets);
        for (r, row) in rows_f32(&logits).iter().enumerate() {
            let (want, err) = reference(row, t[r] as usize);
            let tol = REL_TOL * want.abs() + err + f32::MIN_POSITIVE as f64;
            if want.is_infinite() {
                prop_assert_eq!(got[r] as f64, want);
            } else {
                prop_assert!((got[r] as f64 - want).abs() <= tol, "row {}: {:e} vs {:e}", r, got[r], want);
            }
        }
    }

    #[test]
    fn squared_error_matches_naive(
        n in 1usize..50,
        d in 0usize..40,
        scale in prop_oneof![Just(1e-3), Just(1.0), Just(1e4)],
        dtype in 0usize..3,
        mean: bool,
        seed: u64,
    ) {
        // d = 0 stands for rank-1 inputs.
        let shape: Vec<usize> = if d == 0 { vec![n] } else { vec![n, d] };
        let width = d.max(1);
        let p = Tensor::from_vec(normals(n * width, scale, seed), shape.as_slice(), &Device::Cpu).unwrap().to_dtype(dtype_of(dtype)).unwrap();
        let y = Tensor::from_vec(normals(n * width, scale, seed + 1), shape.as_slice(), &Device::Cpu).unwrap();
        let probe = if mean { SquaredError::new().mean_over_outputs() } else { SquaredError::new() };
        let got: Vec<f32> = probe.per_sample_losses(&p, &y).unwrap().to_vec1().unwrap();
        let pv: Vec<f32> = p.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let yv: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        for i in 0..n {
            let mut want = 0f64;
            for j in 0..width {
                let e = pv[i * width + j] as f64 - yv[i * width + j] as f64;
                want += e * e;
            }
            if mean {
                want /= width as f64;
            }
            prop_assert!((got[i] as f64 - want).abs() <= 1e-6 * want + 1e-38, "{} vs {}", got[i], want);
        }
    }
}

#[test]
fn large_vocabularies() {
    for (vocab, seed) in [(50_257, 1), (131_072, 2)] {
        let rows = 6;
        let logits = Tensor::from_vec(
            normals(rows * vocab, 3.0, seed),
            (rows, vocab),
            &Device::Cpu,
        )
        .unwrap();
        let mut t = indices(rows, vocab, seed);
        t[0] = 0;
        t[1] = vocab as u32 - 1;
        check_ce(&logits, &t, &format!("V={vocab} f32"));
        check_ce(
            &logits.to_dtype(DType::BF16).unwrap(),
            &t,
            &format!("V={vocab} bf16"),
        );
        check_ce(
            &logits.to_dtype(DType::F16).unwrap(),
            &t,
            &format!("V={vocab} f16"),
        );
    }
}

#[test]
fn dominant_target_keeps_relative_accuracy() {
    // lse and x_t agree to ~8 (then ~12) digits: lse − x_t in f32 would be 0 or noise.
    for (vocab, lead, approx_loss) in [(1000, 25.0, 1e-8), (50_257, 39.0, 1e-12)] {
        let mut x = normals(vocab, 1.0, 3);
        x[17] = lead;
        let logits = Tensor::from_vec(x.clone(), (1, vocab), &Device::Cpu).unwrap();
        let got = ce(&logits, &Tensor::new(&[17u32], &Device::Cpu).unwrap())[0] as f64;
        let want = log1p_reference(&x, 17);
        assert!(
            want > approx_loss / 30.0 && want < approx_loss * 30.0,
            "test setup: loss {want:e}"
        );
        assert!(
            (got - want).abs() <= REL_TOL * want,
            "V={vocab}: got {got:e}, want {want:e}, relative error {:e}",
            (got - want).abs() / want
        );
        // The same case in f16 and bf16 (a dominant target exactly representable).
        for dtype in [DType::F16, DType::BF16] {
            let l = logits.to_dtype(dtype).unwrap();
            let xr = rows_f32(&l).remove(0);
            let got = ce(&l, &Tensor::new(&[17u32], &Device::Cpu).unwrap())[0] as f64;
            let want = log1p_reference(&xr, 17);
            assert!(
                (got - want).abs() <= REL_TOL * want,
                "{dtype:?}: {got:e} vs {want:e}"
            );
        }
    }
}

#[test]
fn equal_logits_give_ln_vocab() {
    for vocab in [1usize, 2, 10, 50_257, 131_072] {
        for c in [0f32, 7.5, -1e4, 1e30] {
            let logits = Tensor::full(c, (2, vocab), &Device::Cpu).unwrap();
            let t = Tensor::new(&[0u32, vocab as u32 - 1], &Device::Cpu).unwrap();
            let want = (vocab as f64).ln();
            for got in ce(&logits, &t) {
                assert!(
                    (got as f64 - want).abs() <= 1e-7 * want,
                    "V={vocab}, c={c}: {got} vs ln V = {want}"
                );
            }
        }
    }
}

#[test]
fn masked_entries_contribute_nothing() {
    let vocab = 300;
    let x = normals(vocab, 2.0, 4);
    let mut masked = x.clone();
    let keep: Vec<usize> = (0..vocab).filter(|i| i % 3 == 0).collect();
    for (i, v) in masked.iter_mut().enumerate() {
        if i % 3 != 0 {
            *v = f32::NEG_INFINITY;
        }
    }
    let sub: Vec<f32> = keep.iter().map(|&i| x[i]).collect();
    let logits = Tensor::from_vec(masked, (1, vocab), &Device::Cpu).unwrap();
    // Target 30 is kept (sub index 10); the loss is the CE over the kept entries.
    let got = ce(&logits, &Tensor::new(&[30u32], &Device::Cpu).unwrap())[0];
    assert_close(got, reference(&sub, 10), "masked");
    // A masked target has probability 0: loss +∞ (not an error).
    let got = ce(&logits, &Tensor::new(&[31u32], &Device::Cpu).unwrap())[0];
    assert_eq!(got, f32::INFINITY);
    // Only the target unmasked: probability 1, loss 0.
    let mut only = vec![f32::NEG_INFINITY; vocab];
    only[5] = -3.0;
    let logits = Tensor::from_vec(only, (1, vocab), &Device::Cpu).unwrap();
    assert_eq!(
        ce(&logits, &Tensor::new(&[5u32], &Device::Cpu).unwrap())[0],
        0.0
    );
}

#[test]
fn extreme_logits_do_not_overflow() {
    let max = f32::MAX;
    let row = vec![max, max, 0.0, -max, 1e30, -1e30];
    let logits = Tensor::from_vec(row.clone(), (1, 6), &Device::Cpu).unwrap();
    let loss = |t: u32| ce(&logits, &Tensor::new(&[t], &Device::Cpu).unwrap())[0];
    assert_close(
        loss(0),
        (std::f64::consts::LN_2, 1e-16),
        "target at f32::MAX",
    );
    // ≈ f32::MAX + ln 2, which rounds to f32::MAX.
    assert_eq!(loss(2), max);
    assert_close(loss(4), reference(&row, 4), "target 1e30");
    // 2·f32::MAX does not fit in f32: saturates to +∞ (documented).
    assert_eq!(loss(3), f32::INFINITY);
    let row = [1e30f32, -1e30, 0.0];
    let logits = Tensor::from_vec(row.to_vec(), (1, 3), &Device::Cpu).unwrap();
    let loss = |t: u32| ce(&logits, &Tensor::new(&[t], &Device::Cpu).unwrap())[0];
    assert_eq!(loss(0), 0.0);
    assert_close(loss(1), reference(&row, 1), "±1e30");
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let (rows, vocab) = (48, 50_257);
    let logits =
        Tensor::from_vec(normals(rows * vocab, 4.0, 9), (rows, vocab), &Device::Cpu).unwrap();
    let t = Tensor::new(indices(rows, vocab, 9).as_slice(), &Device::Cpu).unwrap();
    let short = Tensor::from_vec(normals(4096 * 10, 2.0, 10), (4096, 10), &Device::Cpu).unwrap();
    let ts = Tensor::new(indices(4096, 10, 10).as_slice(), &Device::Cpu).unwrap();
    let seq_logits = logits.reshape((6, 8, vocab)).unwrap();
    let seq_t = t.reshape((6, 8)).unwrap();
    let run = || {
        let a: Vec<u32> = ce(&logits, &t).iter().map(|v| v.to_bits()).collect();
        let b: Vec<u32> = ce(&short, &ts).iter().map(|v| v.to_bits()).collect();
        let c: Vec<u32> = SequenceNll::new()
            .per_sample_losses(&seq_logits, &seq_t)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        (a, b, c)
    };
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(run);
    let three = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap()
        .install(run);
    assert_eq!(one, run());
    assert_eq!(one, three);
}

#[test]
fn sequence_nll_mean_over_counted_tokens() {
    let (b, t, vocab) = (4, 9, 300);
    let logits =
        Tensor::from_vec(normals(b * t * vocab, 3.0, 5), (b, t, vocab), &Device::Cpu).unwrap();
    let mut ids: Vec<i64> = indices(b * t, vocab, 5)
        .into_iter()
        .map(i64::from)
        .collect();
    // Padding at the end of sequence 1, a prompt token at the start of sequence 2.
    for j in 5..t {
        ids[t + j] = -100;
    }
    ids[2 * t] = -100;
    // A mask drops two more tokens of sequence 3.
    let mut mask = vec![1u8; b * t];
    mask[3 * t + 1] = 0;
    mask[3 * t + 4] = 0;
    let targets = Tensor::from_vec(ids.clone(), (b, t), &Device::Cpu).unwrap();
    let mask_t = Tensor::from_vec(mask.clone(), (b, t), &Device::Cpu).unwrap();
    let nll = SequenceNll::new();
    let tok = nll
        .per_token_losses(&logits, &targets, Some(&mask_t))
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let seq = nll
        .per_sequence_losses(&logits, &targets, Some(&mask_t))
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let rows = rows_f32(&logits.reshape((b * t, vocab)).unwrap());
    for (s, (tok_s, &seq_s)) in tok.iter().zip(&seq).enumerate() {
        let mut sum = 0f64;
        let mut n = 0;
        for (j, &got) in tok_s.iter().enumerate() {
            let k = s * t + j;
            if ids[k] == -100 || mask[k] == 0 {
                assert_eq!(got, 0.0, "ignored token ({s}, {j})");
                continue;
            }
            let want = reference(&rows[k], ids[k] as usize);
            assert_close(got, want, &format!("token ({s}, {j})"));
            sum += want.0;
            n += 1;
        }
        assert_close(seq_s, (sum / n as f64, 1e-12), &format!("sequence {s}"));
    }
    assert_eq!(
        (
            tok[1].iter().filter(|v| **v != 0.0).count(),
            tok[3].iter().filter(|v| **v != 0.0).count()
        ),
        (5, t - 2)
    );
    // Without a mask, per_sample_losses is the mean over the non-ignored tokens.
    let plain = nll.per_sample_losses(&logits, &targets).unwrap();
    let tok = nll.per_token_losses(&logits, &targets, None).unwrap();
    let counts = Tensor::new(&[9f32, 5.0, 8.0, 9.0], &Device::Cpu).unwrap();
    let mean = (tok.sum(1).unwrap() / counts)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for (a, b) in plain.to_vec1::<f32>().unwrap().iter().zip(&mean) {
        assert!((a - b).abs() <= 1e-6 * b, "{a} vs {b}");
    }
}

#[test]
fn sequence_nll_ignore_index_options() {
    let logits = Tensor::zeros((2, 3, 50), DType::F32, &Device::Cpu).unwrap();
    let targets = Tensor::new(&[[1i64, 49, 49], [49, 49, 49]], &Device::Cpu).unwrap();
    let pad = SequenceNll::new().ignore_index(49);
    assert_eq!(pad.name(), "sequence-nll");
    // Sequence 1 is all padding: its mean is undefined.
    match pad.per_sample_losses(&logits, &targets) {
        Err(Error::NoCountedTokens { sequence: 1 }) => {}
        other => panic!("{other:?}"),
    }
    // Per-token losses are still defined.
    let tok = pad.per_token_losses(&logits, &targets, None).unwrap();
    assert_eq!(tok.i(1).unwrap().to_vec1::<f32>().unwrap(), vec![0.0; 3]);
    // Counting every token: ln 50 everywhere.
    let all = SequenceNll::new().without_ignore_index();
    for v in all
        .per_sample_losses(&logits, &targets)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
    {
        assert!((v as f64 - 50f64.ln()).abs() < 1e-6);
    }
    // −100 is then an ordinary (out-of-range) id.
    let neg = Tensor::new(&[[1i64, -100, 2]], &Device::Cpu).unwrap();
    match all.per_sample_losses(&logits.i(0..1).unwrap(), &neg) {
        Err(Error::TargetOutOfRange {
            index: 1,
            value: -100,
            classes: 50,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn agrees_with_candle() {
    let (rows, classes) = (64, 1000);
    for (scale, seed) in [(1.0, 1), (5.0, 2), (20.0, 3)] {
        let logits = Tensor::from_vec(
            normals(rows * classes, scale, seed),
            (rows, classes),
            &Device::Cpu,
        )
        .unwrap();
        let t = Tensor::new(indices(rows, classes, seed).as_slice(), &Device::Cpu).unwrap();
        let ours = ce(&logits, &t);
        // Candle in f32: mean loss, and the per-example losses through log_softmax + gather.
        let candle_mean = candle_nn::loss::cross_entropy(&logits, &t)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        let ours_mean = ours.iter().map(|v| *v as f64).sum::<f64>() / rows as f64;
        assert!(
            (ours_mean - candle_mean).abs() <= 1e-5 * candle_mean,
            "scale {scale}: mean {ours_mean} vs candle {candle_mean}"
        );
        let candle_each = candle_nn::ops::log_softmax(&logits, D::Minus1)
            .unwrap()
            .gather(&t.unsqueeze(1).unwrap(), 1)
            .unwrap()
            .squeeze(1)
            .unwrap()
            .neg()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (a, b) in ours.iter().zip(&candle_each) {
            // Candle's f32 log-softmax is accurate to a few ulp of lse, not of the loss.
            let slack = 4.0 * f32::EPSILON * (scale as f32 * 5.0 + 10.0);
            assert!((a - b).abs() <= 1e-5 * b.abs() + slack, "{a} vs {b}");
        }
    }
}

#[test]
fn names_are_stable() {
    assert_eq!(CrossEntropy::new().name(), "cross-entropy");
    assert_eq!(SequenceNll::new().name(), "sequence-nll");
    assert_eq!(SquaredError::new().name(), "squared-error");
    assert_eq!(
        SquaredError::new().mean_over_outputs().name(),
        "mean-squared-error"
    );
    let boxed: Vec<Box<dyn LossProbe>> = vec![
        Box::new(CrossEntropy::new()),
        Box::new(SequenceNll::new()),
        Box::new(SquaredError::new()),
    ];
    assert_eq!(boxed.len(), 3);
}

mod errors {
    use super::*;

    fn cpu<const N: usize>(v: [f32; N], shape: &[usize]) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }

    fn ce_err(logits: &Tensor, targets: &Tensor) -> Error {
        CrossEntropy::new()
            .per_sample_losses(logits, targets)
            .expect_err("must fail")
    }

    #[test]
    fn wrong_rank() {
        let t = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
        let e = ce_err(&cpu([0.0; 6], &[6]), &t);
        assert!(
            matches!(
                e,
                Error::RankMismatch {
                    what: "logits",
                    expected: 2,
                    ..
                }
            ),
            "{e}"
        );
        let e = ce_err(&cpu([0.0; 6], &[2, 3]), &t.reshape((2, 1)).unwrap());
        assert!(
            matches!(
                e,
                Error::RankMismatch {
                    what: "targets",
                    expected: 1,
                    ..
                }
            ),
            "{e}"
        );
        let e = SequenceNll::new()
            .per_sample_losses(&cpu([0.0; 6], &[2, 3]), &t)
            .unwrap_err();
        assert!(matches!(e, Error::RankMismatch { expected: 3, .. }), "{e}");
        let e = SquaredError::new()
            .per_sample_losses(&cpu([0.0; 8], &[2, 2, 2]), &cpu([0.0; 8], &[2, 2, 2]))
            .unwrap_err();
        assert!(matches!(e, Error::RankMismatch { expected: 2, .. }), "{e}");
    }

    #[test]
    fn batch_size_mismatch() {
        let t = Tensor::new(&[0u32, 1, 2], &Device::Cpu).unwrap();
        let e = ce_err(&cpu([0.0; 6], &[2, 3]), &t);
        assert!(matches!(e, Error::ShapeMismatch(_)), "{e}");
        assert!(e.to_string().contains("2 rows"), "{e}");
        let tt = Tensor::new(&[[0u32, 1], [1, 0]], &Device::Cpu).unwrap();
        let e = SequenceNll::new()
            .per_sample_losses(&cpu([0.0; 12], &[2, 3, 2]), &tt)
            .unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch(_)), "{e}");
        let mask = Tensor::new(&[1u8, 1, 1], &Device::Cpu).unwrap();
        let e = SequenceNll::new()
            .per_token_losses(&cpu([0.0; 8], &[2, 2, 2]), &tt, Some(&mask))
            .unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch(_)), "{e}");
    }

    #[test]
    fn non_integer_targets() {
        let e = ce_err(&cpu([0.0; 6], &[2, 3]), &cpu([0.0, 1.0], &[2]));
        assert!(
            matches!(
                e,
                Error::NonIntegerTargets {
                    dtype: DType::F32,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn unsupported_logit_dtype() {
        let logits = cpu([0.0; 6], &[2, 3]).to_dtype(DType::F64).unwrap();
        let e = ce_err(&logits, &Tensor::new(&[0u32, 1], &Device::Cpu).unwrap());
        assert!(
            matches!(
                e,
                Error::UnsupportedDType {
                    dtype: DType::F64,
                    ..
                }
            ),
            "{e}"
        );
        let ints = Tensor::new(&[1u32, 2], &Device::Cpu).unwrap();
        let e = SquaredError::new()
            .per_sample_losses(&ints, &ints)
            .unwrap_err();
        assert!(matches!(e, Error::UnsupportedDType { .. }), "{e}");
    }

    #[test]
    fn target_out_of_range_names_the_entry() {
        let logits = cpu([0.0; 9], &[3, 3]);
        let e = ce_err(&logits, &Tensor::new(&[0u32, 2, 3], &Device::Cpu).unwrap());
        assert!(
            matches!(
                e,
                Error::TargetOutOfRange {
                    index: 2,
                    value: 3,
                    classes: 3,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("entry 2"), "{e}");
        let e = ce_err(&logits, &Tensor::new(&[0i64, -1, 1], &Device::Cpu).unwrap());
        assert!(
            matches!(
                e,
                Error::TargetOutOfRange {
                    index: 1,
                    value: -1,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn empty_batch() {
        let empty = Tensor::zeros((0, 10), DType::F32, &Device::Cpu).unwrap();
        let t = Tensor::zeros(0, DType::U32, &Device::Cpu).unwrap();
        assert!(matches!(ce_err(&empty, &t), Error::EmptyTensor { .. }));
        let no_classes = Tensor::zeros((2, 0), DType::F32, &Device::Cpu).unwrap();
        let t2 = Tensor::zeros(2, DType::U32, &Device::Cpu).unwrap();
        assert!(matches!(
            ce_err(&no_classes, &t2),
            Error::EmptyTensor { .. }
        ));
        let e = SequenceNll::new()
            .per_sample_losses(
                &Tensor::zeros((2, 0, 5), DType::F32, &Device::Cpu).unwrap(),
                &Tensor::zeros((2, 0), DType::U32, &Device::Cpu).unwrap(),
            )
            .unwrap_err();
        assert!(matches!(e, Error::EmptyTensor { .. }), "{e}");
        let e = SquaredError::new()
            .per_sample_losses(
                &t.to_dtype(DType::F32).unwrap(),
                &t.to_dtype(DType::F32).unwrap(),
            )
            .unwrap_err();
        assert!(matches!(e, Error::EmptyTensor { .. }), "{e}");
    }

    #[test]
    fn nan_and_positive_infinity() {
        let t = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
        let e = ce_err(&cpu([0.0, 1.0, 2.0, 3.0, f32::NAN, 5.0], &[2, 3]), &t);
        assert!(
            matches!(
                e,
                Error::NonFinite {
                    what: "logits",
                    count: 1,
                    first_index: 4
                }
            ),
            "{e}"
        );
        let e = ce_err(&cpu([f32::INFINITY, 1.0, 2.0, 3.0, 4.0, 5.0], &[2, 3]), &t);
        assert!(matches!(e, Error::NonFinite { first_index: 0, .. }), "{e}");
        // In half precision too.
        let h = cpu([0.0, 1.0, 2.0, 3.0, f32::NAN, 5.0], &[2, 3])
            .to_dtype(DType::F16)
            .unwrap();
        assert!(matches!(
            ce_err(&h, &t),
            Error::NonFinite { first_index: 4, .. }
        ));
        let e = SquaredError::new()
            .per_sample_losses(&cpu([1.0, 2.0], &[2]), &cpu([0.0, f32::NAN], &[2]))
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::NonFinite {
                    what: "targets",
                    first_index: 1,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn squared_error_shape_mismatch() {
        let e = SquaredError::new()
            .per_sample_losses(&cpu([0.0; 6], &[2, 3]), &cpu([0.0; 6], &[3, 2]))
            .unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch(_)), "{e}");
        let e = SquaredError::new()
            .per_sample_losses(&cpu([0.0; 2], &[2]), &cpu([0.0; 2], &[2, 1]))
            .unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch(_)), "{e}");
    }
}
