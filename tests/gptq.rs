//! GPTQ: against an independent float64 OBQ implementation, equal to RTN on diagonal
//! Hessians, better than RTN on the layer-output error, the conformance kit through a
//! calibrating wrapper, bad input, determinism, and a whole model through
//! `SequentialQuantization`.

mod common;

use common::{TestRng, values};

use candle_core::{DType, Device, Tensor};
use proptest::prelude::*;
use quantlens::model::{Mlp, MlpConfig, QuantizableModel, SequentialQuantization};
use quantlens::{
    Calibration, Error, GptqQuantizer, Granularity, QuantSpec, QuantizedTensor, Quantizer,
    ScaleDType, UniformQuantizer,
};

// ---------------------------------------------------------------------------------------------
// Data

fn matrix(rows: usize, cols: usize, sd: f64, rng: &mut TestRng) -> Vec<f32> {
    (0..rows * cols)
        .map(|_| (rng.normal() * sd) as f32)
        .collect()
}

fn tensor(data: Vec<f32>, rows: usize, cols: usize) -> Tensor {
    Tensor::from_vec(data, (rows, cols), &Device::Cpu).unwrap()
}

/// Kinds of calibration inputs.
#[derive(Debug, Clone, Copy)]
enum Inputs {
    /// Independent N(0, 1) features.
    Iid,
    /// AR(1) along the features with correlation `rho`, every 7th feature 5× louder.
    Ar1(f64),
    /// `z·M` for a random square mixing matrix `M`.
    Mixed,
    /// Fewer samples than features (rank deficient), and every 5th feature never active.
    DeadLowRank,
}

fn inputs(kind: Inputs, cols: usize, seed: u64) -> Tensor {
    let mut rng = TestRng::new(seed);
    let n = match kind {
        Inputs::DeadLowRank => cols / 2,
        _ => 4 * cols,
    };
    let mut x = vec![0f32; n * cols];
    match kind {
        Inputs::Iid => x.iter_mut().for_each(|v| *v = rng.normal() as f32),
        Inputs::Ar1(rho) => {
            for row in x.chunks_mut(cols) {
                let mut prev = rng.normal();
                for (j, v) in row.iter_mut().enumerate() {
                    prev = rho * prev + (1.0 - rho * rho).sqrt() * rng.normal();
                    *v = (prev * if j % 7 == 0 { 5.0 } else { 1.0 }) as f32;
                }
            }
        }
        Inputs::Mixed => {
            let m: Vec<f64> = (0..cols * cols).map(|_| rng.normal()).collect();
            for row in x.chunks_mut(cols) {
                let z: Vec<f64> = (0..cols).map(|_| rng.normal()).collect();
                for (j, v) in row.iter_mut().enumerate() {
                    *v = (0..cols).map(|k| z[k] * m[k * cols + j]).sum::<f64>() as f32;
                }
            }
        }
        Inputs::DeadLowRank => {
            for row in x.chunks_mut(cols) {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = if j % 5 == 3 { 0.0 } else { rng.normal() as f32 };
                }
            }
        }
    }
    tensor(x, n, cols)
}

fn calibration(x: &Tensor) -> Calibration {
    let mut c = Calibration::new(x.dims()[1]);
    c.observe(x).unwrap();
    c
}

/// `tr(ΔW·H·ΔWᵀ)` in f64.
fn output_error(w: &[f32], w_hat: &[f32], h: &[f64], cols: usize) -> f64 {
    w.chunks(cols)
        .zip(w_hat.chunks(cols))
        .map(|(a, b)| {
            let d: Vec<f64> = a
                .iter()
                .zip(b)
                .map(|(x, y)| *x as f64 - *y as f64)
                .collect();
            (0..cols)
                .map(|i| d[i] * (0..cols).map(|j| h[i * cols + j] * d[j]).sum::<f64>())
                .sum::<f64>()
        })
        .sum()
}

// ---------------------------------------------------------------------------------------------
// The float64 reference: Optimal Brain Quantization column by column, explicit H⁻¹ downdates,
// no blocks, no Cholesky; the uniform grid written out again.

/// One group's grid, as the uniform quantizer defines it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Grid {
    scale: f32,
    zero: i32,
    lo: i32,
    hi: i32,
}

fn round_up(x: f32, dtype: ScaleDType) -> f32 {
    use half::{bf16, f16};
    match dtype {
        ScaleDType::F32 => x,
        ScaleDType::F16 => {
            let h = f16::from_f32(x);
            if h.to_f32() < x {
                f16::from_bits(h.to_bits() + 1).to_f32()
            } else {
                h.to_f32()
            }
        }
        ScaleDType::BF16 => {
            let h = bf16::from_f32(x);
            if h.to_f32() < x {
                bf16::from_bits(h.to_bits() + 1).to_f32()
            } else {
                h.to_f32()
            }
        }
        ScaleDType::E8M0 => {
            let mut p = 2f32.powi(-127);
            while p < x {
                p *= 2.0;
            }
            p
        }
    }
}

fn grid(min: f32, max: f32, spec: &QuantSpec) -> Grid {
    let bits = spec.bits as i32;
    if spec.symmetric {
        let qmax = (1 << (bits - 1)) - 1;
        let absmax = min.abs().max(max.abs());
        let mut s = absmax / qmax as f32;
        if s == 0.0 && absmax > 0.0 {
            s = f32::from_bits(1);
        }
        Grid {
            scale: round_up(s, spec.scale_dtype),
            zero: 1 << (bits - 1),
            lo: -qmax,
            hi: qmax,
        }
    } else {
        let qmax = (1 << bits) - 1;
        let (lo, hi) = (min.min(0.0), max.max(0.0));
        let mut s = (hi - lo) / qmax as f32;
        if s == 0.0 && hi > lo {
            s = f32::from_bits(1);
        }
        let scale = round_up(s, spec.scale_dtype);
        let zero = if scale > 0.0 {
            (-lo / scale).round_ties_even().clamp(0.0, qmax as f32) as i32
        } else {
            0
        };
        Grid {
            scale,
            zero,
            lo: -zero,
            hi: qmax - zero,
        }
    }
}

fn min_max(x: impl IntoIterator<Item = f32>) -> (f32, f32) {
    x.into_iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        })
}

/// `H⁻¹` by Gauss–Jordan elimination with partial pivoting, f64.
fn invert(h: &[f64], n: usize) -> Vec<f64> {
    let mut a = h.to_vec();
    let mut inv = vec![0f64; n * n];
    for i in 0..n {
        inv[i * n + i] = 1.0;
    }
    for c in 0..n {
        let p = (c..n)
            .max_by(|&x, &y| a[x * n + c].abs().total_cmp(&a[y * n + c].abs()))
            .unwrap();
        for j in 0..n {
            a.swap(c * n + j, p * n + j);
            inv.swap(c * n + j, p * n + j);
        }
        let d = a[c * n + c];
        for j in 0..n {
            a[c * n + j] /= d;
            inv[c * n + j] /= d;
        }
        for r in 0..n {
            if r != c {
                let f = a[r * n + c];
                if f != 0.0 {
                    for j in 0..n {
                        a[r * n + j] -= f * a[c * n + j];
                        inv[r * n + j] -= f * inv[c * n + j];
                    }
                }
            }
        }
    }
    inv
}

#[derive(Debug, Clone)]
struct Config {
    spec: QuantSpec,
    act_order: bool,
    static_groups: bool,
    block: usize,
}

impl Config {
    fn quantizer(&self) -> GptqQuantizer {
        GptqQuantizer::new(self.spec)
            .unwrap()
            .act_order(self.act_order)
            .static_groups(self.static_groups)
            .block_size(self.block)
            .unwrap()
    }
}

struct Reference {
    /// Dequantized weights, original order.
    deq: Vec<f64>,
    /// `Σ (w − q)² / [H_F⁻¹]_qq` over all rows and steps.
    loss: f64,
    /// Rounding decisions (codes and dynamic group grids) made.
    decisions: usize,
    /// Decisions at an f32-vs-f64 tie where the reference followed the fast code.
    forced: usize,
}

/// Half-width, in steps, of the window around a rounding midpoint inside which f32 and f64
/// may legitimately disagree.
const TIE: f64 = 2e-3;

fn obq_reference(
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &[f64],
    cfg: &Config,
    fast: &QuantizedTensor,
) -> Result<Reference, String> {
    let n = cols;
    let spec = &cfg.spec;
    let mut h = h.to_vec();
    let mut w: Vec<f64> = w.iter().map(|&v| v as f64).collect();
    for i in 0..n {
        if h[i * n + i] == 0.0 {
            h[i * n + i] = 1.0;
            for r in 0..rows {
                w[r * n + i] = 0.0;
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    if cfg.act_order {
        order.sort_by(|&a, &b| h[b * n + b].total_cmp(&h[a * n + a]));
    }
    let damp = 0.01 * (0..n).map(|i| h[i * n + i]).sum::<f64>() / n as f64;
    let hp: Vec<f64> = (0..n * n)
        .map(|k| {
            let (i, j) = (k / n, k % n);
            h[order[i] * n + order[j]] + if i == j { damp } else { 0.0 }
        })
        .collect();
    let mut hinv = invert(&hp, n);

    // What the fast implementation stored.
    let codes = fast.codes().unpack();
    let glen = fast.group_len();
    let fast_grid = |flat: usize| -> (f32, i32) {
        let g = flat / glen;
        let zero = fast
            .zero_point(g)
            .expect("uniform formats have zero points");
        (fast.scales().get(g), zero)
    };

    let group_cols = match spec.granularity {
        Granularity::PerGroup(g) => g,
        _ => n,
    };
    let dynamic = group_cols < n && !cfg.static_groups && !cfg.act_order;
    let gpr = n / group_cols;
    let mut grids = vec![None::<Grid>; rows * gpr];
    let (mut decisions, mut forced) = (0, 0);
    if !dynamic {
        // Fixed grids come from the same f32 weights: they must agree to the bit.
        let all = min_max(w.iter().map(|&v| v as f32));
        for r in 0..rows {
            for g in 0..gpr {
                let (mn, mx) = if spec.granularity == Granularity::PerTensor {
                    all
                } else {
                    min_max(
                        w[r * n + g * group_cols..r * n + (g + 1) * group_cols]
                            .iter()
                            .map(|&v| v as f32),
                    )
                };
                let mine = grid(mn, mx, spec);
                let theirs = fast_grid(r * n + g * group_cols);
                if (mine.scale, mine.zero) != theirs {
                    return Err(format!(
                        "row {r} group {g}: grid {mine:?} but GPTQ stored {theirs:?}"
                    ));
                }
                grids[r * gpr + g] = Some(mine);
            }
        }
    }
    let dtype_ulp = match spec.scale_dtype {
        ScaleDType::F32 => 1e-4,
        ScaleDType::F16 => 1.01 * 2f64.powi(-10),
        ScaleDType::BF16 => 1.01 * 2f64.powi(-7),
        ScaleDType::E8M0 => 1.01,
    };

    let mut deq = vec![0f64; rows * n];
    let mut loss = 0f64;
    for i in 0..n {
        let col = order[i];
        let d = hinv[i * n + i];
        for r in 0..rows {
            let g = col / group_cols;
            if dynamic && col.is_multiple_of(group_cols) {
                // The group's current weights, all earlier errors applied.
                let (mn, mx) = min_max(
                    w[r * n + col..r * n + col + group_cols]
                        .iter()
                        .map(|&v| v as f32),
                );
                let mine = grid(mn, mx, spec);
                let (fs, fz) = fast_grid(r * n + col);
                let rel = (mine.scale as f64 - fs as f64).abs() / (fs as f64).max(1e-30);
                decisions += 1;
                let chosen =
                    if (mine.scale, mine.zero) == (fs, fz) || (rel <= 1e-4 && mine.zero == fz) {
                        mine
                    } else if rel <= dtype_ulp && (mine.zero - fz).abs() <= 1 {
                        forced += 1;
                        let qmax = if spec.symmetric {
                            (1 << (spec.bits - 1)) - 1
                        } else {
                            (1 << spec.bits) - 1
                        };
                        Grid {
                            scale: fs,
                            zero: fz,
                            lo: if spec.symmetric { -qmax } else { -fz },
                            hi: if spec.symmetric { qmax } else { qmax - fz },
                        }
                    } else {
                        return Err(format!(
                            "row {r} group {g}: grid {mine:?} from the updated weights, GPTQ \
                         stored ({fs}, {fz})"
                        ));
                    };
                grids[r * gpr + g] = Some(chosen);
            }
            let p = grids[r * gpr + g].expect("grid set before use");
            let x = w[r * n + col];
            let fast_k = codes[r * n + col] as i32 - p.zero;
            let k = if p.scale > 0.0 {
                let t = (x / p.scale as f64).clamp(p.lo as f64, p.hi as f64);
                let k = t.round_ties_even() as i32;
                decisions += 1;
                if k != fast_k {
                    let mid = (k + fast_k) as f64 / 2.0;
                    if (k - fast_k).abs() == 1 && (t - mid).abs() < TIE {
                        forced += 1;
                    } else {
                        return Err(format!(
                            "row {r}, input {col} (step {i}): w/scale = {t}, reference code \
                             {k}, GPTQ code {fast_k}"
                        ));
                    }
                }
                fast_k
            } else {
                0
            };
            let q = p.scale as f64 * k as f64;
            deq[r * n + col] = q;
            loss += (x - q) * (x - q) / d;
            let e = (x - q) / d;
            for j in i + 1..n {
                w[r * n + order[j]] -= e * hinv[i * n + j];
            }
        }
        // Remove input i from H_F⁻¹.
        for a in i + 1..n {
            let f = hinv[a * n + i] / d;
            for b in i + 1..n {
                hinv[a * n + b] -= f * hinv[i * n + b];
            }
        }
    }
    Ok(Reference {
        deq,
        loss,
        decisions,
        forced,
    })
}

fn obq_configs() -> Vec<Config> {
    let c = |spec: QuantSpec, act_order, static_groups, block| Config {
        spec,
        act_order,
        static_groups,
        block,
    };
    let g = |n| QuantSpec::int4().per_group(n).asymmetric();
    vec![
        c(QuantSpec::int4().per_channel(), false, false, 8),
        c(g(8), false, false, 16),
        c(
            QuantSpec::int3().per_group(16).asymmetric(),
            false,
            false,
            24,
        ),
        // Groups longer than blocks: each group split into blocks of 4.
        c(g(16), false, false, 4),
        c(g(8), true, false, 8),
        c(
            QuantSpec::int2()
                .per_group(16)
                .with_scale_dtype(ScaleDType::F32),
            true,
            false,
            12,
        ),
        c(QuantSpec::int8().per_tensor().asymmetric(), true, false, 8),
        c(g(16).with_scale_dtype(ScaleDType::BF16), false, true, 16),
        c(
            QuantSpec::int4()
                .per_channel()
                .asymmetric()
                .with_scale_dtype(ScaleDType::F32),
            false,
            false,
            128,
        ),
        c(QuantSpec::int3().per_group(32), false, false, 128),
        c(g(8).with_scale_dtype(ScaleDType::F32), false, false, 8),
    ]
}

#[test]
fn matches_float64_obq_reference() {
    let kinds = [
        Inputs::Iid,
        Inputs::Ar1(0.9),
        Inputs::Mixed,
        Inputs::DeadLowRank,
    ];
    let (mut decisions, mut forced) = (0, 0);
    for (shape_i, &(rows, cols)) in [(8usize, 32usize), (16, 64)].iter().enumerate() {
        for (kind_i, &kind) in kinds.iter().enumerate() {
            let seed = 100 * shape_i as u64 + kind_i as u64;
            let calib = calibration(&inputs(kind, cols, seed));
            let h = calib.hessian_f64();
            let mut rng = TestRng::new(seed + 7);
            let w = matrix(rows, cols, 0.1, &mut rng);
            let wt = tensor(w.clone(), rows, cols);
            for cfg in obq_configs() {
                let q = cfg.quantizer();
                let ctx = format!("{rows}x{cols}, {kind:?}, {}", q.name());
                let (qt, report) = q.quantize_with_report(&wt, &calib).unwrap();
                let reference = obq_reference(&w, rows, cols, &h, &cfg, &qt)
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                decisions += reference.decisions;
                forced += reference.forced;
                let fast = values(&qt.dequantize(&Device::Cpu).unwrap());
                for (i, (&a, &b)) in fast.iter().zip(&reference.deq).enumerate() {
                    let step = qt.step(i / qt.group_len()).unwrap() as f64;
                    assert!(
                        (a as f64 - b).abs() <= 1e-4 * b.abs().max(step),
                        "{ctx}: element {i}: {a} vs {b}"
                    );
                }
                let rel = (report.loss - reference.loss).abs() / reference.loss.max(1e-30);
                assert!(
                    rel < 1e-3,
                    "{ctx}: loss {} vs reference {}",
                    report.loss,
                    reference.loss
                );
                let dead = if matches!(kind, Inputs::DeadLowRank) {
                    (0..cols).filter(|j| j % 5 == 3).count()
                } else {
                    0
                };
                assert_eq!(report.dead_inputs, dead, "{ctx}");
            }
        }
    }
    eprintln!("OBQ: {forced} forced of {decisions}");
    // Ties within 2e-3 of a step are rare: a handful in thousands of decisions.
    assert!(
        forced * 200 <= decisions,
        "{forced} of {decisions} decisions were f32/f64 ties"
    );
    assert!(decisions > 10_000);
}

// ---------------------------------------------------------------------------------------------
// Diagonal Hessians: no error feedback, so GPTQ is RTN exactly.

#[test]
fn diagonal_hessian_gives_rtn_exactly() {
    let (rows, cols) = (12, 64);
    let mut rng = TestRng::new(5);
    let mut w = matrix(rows, cols, 0.05, &mut rng);
    w[17] = 0.9; // an outlier
    w[300] = -1.3;
    // X = diag(d): H = 2·diag(d²)/cols, off-diagonals exactly 0. First d = 1 (identity).
    let identity = {
        let mut x = vec![0f32; cols * cols];
        (0..cols).for_each(|i| x[i * cols + i] = 1.0);
        calibration(&tensor(x, cols, cols))
    };
    let diagonal = {
        let mut x = vec![0f32; cols * cols];
        (0..cols).for_each(|i| x[i * cols + i] = (0.1 + 3.0 * rng.uniform()) as f32);
        calibration(&tensor(x, cols, cols))
    };
    let mut checked = 0;
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let wt = tensor(w.clone(), rows, cols).to_dtype(dtype).unwrap();
        for granularity in [
            Granularity::PerTensor,
            Granularity::PerChannel,
            Granularity::PerGroup(8),
            Granularity::PerGroup(32),
        ] {
            for bits in [2, 3, 4, 8] {
                for symmetric in [true, false] {
                    for scale_dtype in [
                        ScaleDType::F16,
                        ScaleDType::F32,
                        ScaleDType::BF16,
                        ScaleDType::E8M0,
                    ] {
                        let spec = QuantSpec::new(bits)
                            .with_granularity(granularity)
                            .with_scale_dtype(scale_dtype);
                        let spec = if symmetric {
                            spec.symmetric()
                        } else {
                            spec.asymmetric()
                        };
                        let rtn = UniformQuantizer::new(spec).unwrap().quantize(&wt, None);
                        for act_order in [false, true] {
                            let gptq = GptqQuantizer::new(spec)
                                .unwrap()
                                .act_order(act_order)
                                .block_size(16)
                                .unwrap();
                            for calib in [&identity, &diagonal] {
                                let got = gptq.quantize(&wt, Some(calib)).unwrap();
                                assert_eq!(
                                    &got,
                                    rtn.as_ref().unwrap(),
                                    "{} on {dtype:?}",
                                    gptq.name()
                                );
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    assert_eq!(checked, 3 * 4 * 4 * 2 * 4 * 2 * 2);
}

// ---------------------------------------------------------------------------------------------
// The point of GPTQ: lower layer-output error than RTN on correlated inputs.

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn beats_rtn_on_output_error(
        seed in 0u64..1_000_000,
        rows in 8usize..=32,
        wide in any::<bool>(),
        bits in 3u8..=4,
        rho in 0.5f64..0.95,
        act_order in any::<bool>(),
        grouped in any::<bool>(),
    ) {
        let cols = if wide { 128 } else { 64 };
        let calib = calibration(&inputs(Inputs::Ar1(rho), cols, seed));
        let h = calib.hessian_f64();
        let mut rng = TestRng::new(seed ^ 0xabcdef);
        let w = matrix(rows, cols, 0.1, &mut rng);
        let wt = tensor(w.clone(), rows, cols);
        let spec = QuantSpec::new(bits).asymmetric();
        let spec = if grouped { spec.per_group(32) } else { spec.per_channel() };
        let gptq = GptqQuantizer::new(spec).unwrap().act_order(act_order);
        let ours = values(&gptq.fake_quantize(&wt, Some(&calib)).unwrap());
        let rtn = values(&UniformQuantizer::new(spec).unwrap().fake_quantize(&wt, None).unwrap());
        let (e_gptq, e_rtn) = (output_error(&w, &ours, &h, cols), output_error(&w, &rtn, &h, cols));
        prop_assert!(e_gptq < e_rtn, "{}: GPTQ {e_gptq:e} vs RTN {e_rtn:e}", gptq.name());
    }
}

#[test]
fn report_loss_is_the_damped_output_error() {
    let (rows, cols) = (24, 96);
    let calib = calibration(&inputs(Inputs::Mixed, cols, 3));
    let mut h = calib.hessian_f64();
    let mut rng = TestRng::new(4);
    let w = matrix(rows, cols, 0.1, &mut rng);
    let q = GptqQuantizer::new(QuantSpec::int3().per_group(32).asymmetric())
        .unwrap()
        .act_order(true)
        .block_size(40)
        .unwrap();
    let (qt, report) = q
        .quantize_with_report(&tensor(w.clone(), rows, cols), &calib)
        .unwrap();
    let mean = (0..cols).map(|i| h[i * cols + i]).sum::<f64>() / cols as f64;
    assert_eq!(report.attempts, 1);
    assert_eq!(report.percdamp, 0.01);
    assert!((report.damping - 0.01 * mean).abs() <= 1e-12 * mean);
    (0..cols).for_each(|i| h[i * cols + i] += report.damping);
    let exact = output_error(&w, &values(&qt.dequantize(&Device::Cpu).unwrap()), &h, cols);
    assert!(
        (report.loss - exact).abs() <= 1e-3 * exact,
        "{} vs {exact}",
        report.loss
    );
}

#[test]
fn dead_inputs_decode_to_zero() {
    let (rows, cols) = (8, 40);
    let calib = calibration(&inputs(Inputs::DeadLowRank, cols, 9));
    let mut rng = TestRng::new(10);
    let wt = tensor(matrix(rows, cols, 1.0, &mut rng), rows, cols);
    let (qt, report) = GptqQuantizer::new(QuantSpec::int4().per_group(8).asymmetric())
        .unwrap()
        .quantize_with_report(&wt, &calib)
        .unwrap();
    assert_eq!(report.dead_inputs, 8);
    let v = values(&qt.dequantize(&Device::Cpu).unwrap());
    for r in 0..rows {
        for j in (3..cols).step_by(5) {
            assert_eq!(v[r * cols + j], 0.0);
        }
    }
}

#[test]
fn half_precision_weights_give_the_same_codes() {
    let (rows, cols) = (16, 64);
    let calib = calibration(&inputs(Inputs::Ar1(0.8), cols, 11));
    let mut rng = TestRng::new(12);
    let w16 = tensor(matrix(rows, cols, 0.1, &mut rng), rows, cols)
        .to_dtype(DType::F16)
        .unwrap();
    let w32 = w16.to_dtype(DType::F32).unwrap();
    let q = GptqQuantizer::new(QuantSpec::int4().per_group(16).asymmetric()).unwrap();
    let (a, b) = (
        q.quantize(&w16, Some(&calib)).unwrap(),
        q.quantize(&w32, Some(&calib)).unwrap(),
    );
    assert_eq!(a.dtype(), DType::F16);
    assert_eq!(a.codes(), b.codes());
    assert_eq!(a.scales(), b.scales());
    assert_eq!(a.zeros(), b.zeros());
    let fake = q.fake_quantize(&w16, Some(&calib)).unwrap();
    assert_eq!(fake.dtype(), DType::F16);
}

// ---------------------------------------------------------------------------------------------
// Bad input.

/// Inputs 0 and 1 identical: the Hessian is exactly singular.
fn singular_calibration(cols: usize) -> Calibration {
    let mut rng = TestRng::new(13);
    let mut x = matrix(4 * cols, cols, 1.0, &mut rng);
    for row in x.chunks_mut(cols) {
        row[1] = row[0];
    }
    calibration(&tensor(x, 4 * cols, cols))
}

#[test]
fn bad_input_is_a_clear_error() {
    let (rows, cols) = (4, 64);
    let calib = calibration(&inputs(Inputs::Iid, cols, 14));
    let q = GptqQuantizer::new(QuantSpec::int4().per_group(16)).unwrap();
    let good = tensor(vec![0.25; rows * cols], rows, cols);

    let mut nan = vec![0.5f32; rows * cols];
    nan[37] = f32::NAN;
    nan[40] = f32::INFINITY;
    assert!(matches!(
        q.quantize(&tensor(nan, rows, cols), Some(&calib)),
        Err(Error::NonFinite {
            what: "weight",
            count: 2,
            first_index: 37
        })
    ));
    let rank3 = Tensor::ones((2, 2, cols), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        q.quantize(&rank3, Some(&calib)),
        Err(Error::RankMismatch { .. })
    ));
    assert!(matches!(
        q.quantize(&good, None),
        Err(Error::InvalidParameter {
            name: "calibration",
            ..
        })
    ));
    assert!(matches!(
        q.quantize(&good, Some(&Calibration::new(32))),
        Err(Error::ShapeMismatch(_))
    ));
    assert!(matches!(
        q.quantize(&good, Some(&Calibration::new(cols))),
        Err(Error::InvalidParameter {
            name: "calibration",
            ..
        })
    ));
    let odd = GptqQuantizer::new(QuantSpec::int4().per_group(24)).unwrap();
    assert!(matches!(
        odd.quantize(&good, Some(&calib)),
        Err(Error::GroupSizeMismatch {
            group_size: 24,
            in_features: 64
        })
    ));
    // Inputs so large that XᵀX overflows f32: an infinite Hessian.
    let huge = calibration(&tensor(vec![1e25; 2 * cols], 2, cols));
    assert!(matches!(
        q.quantize(&good, Some(&huge)),
        Err(Error::NonFinite {
            what: "calibration Hessian",
            ..
        })
    ));
    // Weights beyond f16 scales.
    let big = tensor(vec![1e6; rows * cols], rows, cols);
    assert!(matches!(
        q.quantize(&big, Some(&calib)),
        Err(Error::ScaleOutOfRange { group: 0, .. })
    ));
    let u32s = Tensor::ones((rows, cols), DType::U32, &Device::Cpu).unwrap();
    assert!(matches!(
        q.quantize(&u32s, Some(&calib)),
        Err(Error::UnsupportedDType { .. })
    ));
}

#[test]
fn singular_hessian_needs_damping() {
    let (rows, cols) = (4, 64);
    let calib = singular_calibration(cols);
    let mut rng = TestRng::new(15);
    let w = tensor(matrix(rows, cols, 0.1, &mut rng), rows, cols);
    let spec = QuantSpec::int4().per_channel();

    let undamped = GptqQuantizer::new(spec).unwrap().with_damping(0.0).unwrap();
    match undamped.quantize(&w, Some(&calib)) {
        Err(Error::NotPositiveDefinite {
            index, percdamp, ..
        }) => {
            assert!(index <= 1, "pivot of input {index}");
            assert_eq!(percdamp, 0.0);
        }
        other => panic!("expected NotPositiveDefinite, got {other:?}"),
    }
    let tiny = GptqQuantizer::new(spec)
        .unwrap()
        .with_damping(1e-9)
        .unwrap();
    // Not enough, and retries capped below what works.
    match tiny
        .clone()
        .damp_retry(1e-8)
        .unwrap()
        .quantize(&w, Some(&calib))
    {
        Err(Error::NotPositiveDefinite { percdamp, .. }) => assert_eq!(percdamp, 1e-8),
        other => panic!("expected NotPositiveDefinite, got {other:?}"),
    }
    // Retries ×10 until the factorisation works; the report says which damping did.
    let retry = tiny.damp_retry(0.1).unwrap();
    assert!(retry.name().ends_with("-damp0.000000001-retry0.1"));
    let (_, report) = retry.quantize_with_report(&w, &calib).unwrap();
    assert!(report.attempts >= 2, "{report:?}");
    let expected = 1e-9 * 10f64.powi(report.attempts as i32 - 1);
    assert!(
        (report.percdamp / expected - 1.0).abs() < 1e-9,
        "{report:?}"
    );
    let h = calib.hessian_f64();
    let mean = (0..cols).map(|i| h[i * cols + i]).sum::<f64>() / cols as f64;
    assert!((report.damping / (report.percdamp * mean) - 1.0).abs() < 1e-12);
    // The default damping handles it at once.
    let (_, report) = GptqQuantizer::new(spec)
        .unwrap()
        .quantize_with_report(&w, &calib)
        .unwrap();
    assert_eq!(report.attempts, 1);
}

#[test]
fn names_are_stable() {
    let spec = QuantSpec::int4().per_group(128).asymmetric();
    let q = GptqQuantizer::new(spec).unwrap();
    assert_eq!(q.name(), "gptq-w4-g128-asym");
    assert_eq!(
        q.clone().act_order(true).name(),
        "gptq-w4-g128-asym-actorder"
    );
    assert_eq!(
        q.clone().static_groups(true).name(),
        "gptq-w4-g128-asym-static"
    );
    let q = GptqQuantizer::new(
        QuantSpec::int3()
            .per_channel()
            .with_scale_dtype(ScaleDType::F32),
    )
    .unwrap()
    .with_damping(0.1)
    .unwrap()
    .block_size(64)
    .unwrap();
    assert_eq!(q.name(), "gptq-w3-c-sym-s32-damp0.1-b64");
    assert!(q.uses_calibration());
}

// ---------------------------------------------------------------------------------------------
// Determinism.

#[test]
fn same_bytes_on_one_thread_and_many() {
    let (rows, cols) = (100, 384);
    let calib = calibration(&inputs(Inputs::Ar1(0.9), cols, 16));
    let mut rng = TestRng::new(17);
    let w = tensor(matrix(rows, cols, 0.1, &mut rng), rows, cols);
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for q in [
        GptqQuantizer::new(QuantSpec::int4().per_group(64).asymmetric())
            .unwrap()
            .act_order(true),
        GptqQuantizer::new(QuantSpec::int3().per_group(32).asymmetric()).unwrap(),
        GptqQuantizer::new(QuantSpec::int4().per_channel()).unwrap(),
    ] {
        let (a, ra) = q.quantize_with_report(&w, &calib).unwrap();
        let (b, rb) = q.quantize_with_report(&w, &calib).unwrap();
        let (c, rc) = one.install(|| q.quantize_with_report(&w, &calib).unwrap());
        assert_eq!(a, b, "{}", q.name());
        assert_eq!(a, c, "{}: one thread differs", q.name());
        assert_eq!(ra.loss.to_bits(), rb.loss.to_bits());
        assert_eq!(ra.loss.to_bits(), rc.loss.to_bits());
    }
}

// ---------------------------------------------------------------------------------------------
// A whole model.

#[test]
fn sequential_gptq_beats_rtn_on_an_mlp() {
    let dev = Device::Cpu;
    let base = Mlp::new(MlpConfig::new(32, &[64, 64], 8), 3, &dev).unwrap();
    let batch = |seed| inputs(Inputs::Ar1(0.9), 32, seed).narrow(0, 0, 96).unwrap();
    let calib_batches = vec![batch(20), batch(21)];
    let held_out = inputs(Inputs::Ar1(0.9), 32, 22);
    let reference = base.forward(&held_out).unwrap();
    let spec = QuantSpec::int3().per_group(16).asymmetric();
    let rtn = UniformQuantizer::new(spec).unwrap();
    let gptq = GptqQuantizer::new(spec).unwrap().act_order(true);
    let mut errors = Vec::new();
    for q in [&rtn as &dyn Quantizer, &gptq] {
        let mut m = base.clone();
        let report = SequentialQuantization::new(q)
            .calibration(calib_batches.clone())
            .run(&mut m)
            .unwrap();
        assert_eq!(report.layers.len(), 3);
        let rows = if q.uses_calibration() { 192 } else { 0 };
        assert!(report.layers.iter().all(|l| l.calibration_rows == rows));
        let out = m.forward(&held_out).unwrap();
        let mse = (&out - &reference)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        errors.push(mse);
    }
    assert!(
        errors[1] < 0.8 * errors[0],
        "GPTQ output MSE {} vs RTN {}",
        errors[1],
        errors[0]
    );
}

// ---------------------------------------------------------------------------------------------
// The conformance kit, through a wrapper that supplies a calibration when none is given.

#[cfg(feature = "testing")]
mod conformance {
    use super::*;
    use quantlens::testing::{Conformance, ErrorBound};

    /// GPTQ with a made-up calibration of the right width: `2·I` plus correlated random rows.
    struct SelfCalibrated(GptqQuantizer);

    impl Quantizer for SelfCalibrated {
        fn name(&self) -> String {
            self.0.name()
        }
        fn quantize(
            &self,
            weight: &Tensor,
            calib: Option<&Calibration>,
        ) -> quantlens::Result<QuantizedTensor> {
            if let Some(c) = calib {
                return self.0.quantize(weight, Some(c));
            }
            let cols = weight.dims().last().copied().unwrap_or(1).max(1);
            let mut x = vec![0f32; cols * cols];
            (0..cols).for_each(|i| x[i * cols + i] = 2.0);
            let mut c = Calibration::new(cols);
            c.observe(&tensor(x, cols, cols))?;
            c.observe(&inputs(Inputs::Ar1(0.7), cols, cols as u64))?;
            self.0.quantize(weight, Some(&c))
        }
        fn uses_calibration(&self) -> bool {
            true
        }
    }

    #[test]
    fn conformance_through_a_calibrating_wrapper() {
        let specs = [
            (QuantSpec::int4().per_group(8).asymmetric(), false),
            (QuantSpec::int4().per_group(16).asymmetric(), true),
            (QuantSpec::int3().per_channel(), false),
            (QuantSpec::int8().per_tensor().asymmetric(), true),
            (
                QuantSpec::int2()
                    .per_group(8)
                    .with_scale_dtype(ScaleDType::BF16),
                true,
            ),
        ];
        for (spec, act_order) in specs {
            let multiple = match spec.granularity {
                Granularity::PerGroup(g) => g,
                _ => 8,
            };
            let q = SelfCalibrated(GptqQuantizer::new(spec).unwrap().act_order(act_order));
            Conformance::new()
                .cases(12)
                .cols_multiple_of(multiple)
                .col_blocks(1..=3)
                .error_bound(ErrorBound::Unchecked)
                .run(&q);
        }
        // f32 scales: far beyond f16's range.
        let q = SelfCalibrated(
            GptqQuantizer::new(
                QuantSpec::int4()
                    .per_group(8)
                    .asymmetric()
                    .with_scale_dtype(ScaleDType::F32),
            )
            .unwrap(),
        );
        Conformance::new()
            .cases(12)
            .error_bound(ErrorBound::Unchecked)
            .log10_magnitude(-30.0..=30.0)
            .dtypes(vec![DType::F32])
            .run(&q);
    }
}
