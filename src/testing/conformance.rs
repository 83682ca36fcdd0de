//! A conformance suite any [`Quantizer`] can run in its own tests.

use std::panic::{AssertUnwindSafe, catch_unwind};

use candle_core::{DType, Device, Tensor};
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::quant::{Calibration, QuantizedTensor, Quantizer};
use crate::testing::strategies::{WeightMatrix, weight_matrix};

/// How far a dequantized weight may be from the original, in units of its group's step
/// ([`QuantizedTensor::step`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ErrorBound {
    /// Round to nearest: at most half a step.
    HalfStep,
    /// Stochastic rounding and other one-sided schemes: less than one step.
    FullStep,
    /// Every value decodes to the level of its group nearest to the weight
    /// ([`QuantizedTensor::group_levels`]): codebooks fitted or fixed, float formats with
    /// round-to-nearest, round-to-nearest uniform grids.
    NearestLevel,
    /// Every value decodes to one of the two levels of its group that bracket the weight (the
    /// end level when the weight lies outside the grid): rounding in a transformed domain
    /// (companding), stochastic rounding, any monotone rounding rule.
    AdjacentLevel,
    /// No per-element bound (sign quantization, ternary with a target sparsity).
    Unchecked,
}

/// Configuration of a conformance run; [`run`](Self::run) panics with a readable report (and
/// proptest's minimal failing case) when the quantizer breaks the contract.
#[derive(Debug, Clone)]
pub struct Conformance {
    cases: u32,
    rows: std::ops::RangeInclusive<usize>,
    cols_multiple_of: usize,
    col_blocks: std::ops::RangeInclusive<usize>,
    log10_magnitude: std::ops::RangeInclusive<f64>,
    dtypes: Vec<DType>,
    bound: ErrorBound,
    calibrated: bool,
}

impl Default for Conformance {
    fn default() -> Self {
        Self::new()
    }
}

impl Conformance {
    /// 32 cases of 1–6 × 8k matrices (k ≤ 4), magnitudes 1e-6..1e4, f32/f16/bf16, half-step bound.
    pub fn new() -> Self {
        Conformance {
            cases: 32,
            rows: 1..=6,
            cols_multiple_of: 8,
            col_blocks: 1..=4,
            log10_magnitude: -6.0..=4.0,
            dtypes: vec![DType::F32, DType::F16, DType::BF16],
            bound: ErrorBound::HalfStep,
            calibrated: false,
        }
    }
    /// Number of generated matrices.
    pub fn cases(mut self, cases: u32) -> Self {
        self.cases = cases;
        self
    }
    /// Range of row counts.
    pub fn rows(mut self, rows: std::ops::RangeInclusive<usize>) -> Self {
        self.rows = rows;
        self
    }
    /// Column counts are multiples of this (e.g. the group size).
    pub fn cols_multiple_of(mut self, n: usize) -> Self {
        self.cols_multiple_of = n;
        self
    }
    /// Range of the multiplier `k` in `cols = cols_multiple_of · k`.
    pub fn col_blocks(mut self, blocks: std::ops::RangeInclusive<usize>) -> Self {
        self.col_blocks = blocks;
        self
    }
    /// Range of `log10` of the value magnitudes.
    pub fn log10_magnitude(mut self, range: std::ops::RangeInclusive<f64>) -> Self {
        self.log10_magnitude = range;
        self
    }
    /// Input dtypes to try.
    pub fn dtypes(mut self, dtypes: Vec<DType>) -> Self {
        self.dtypes = dtypes;
        self
    }
    /// The reconstruction bound to check.
    pub fn error_bound(mut self, bound: ErrorBound) -> Self {
        self.bound = bound;
        self
    }
    /// Hand the quantizer a [`Calibration`] with every call (for data-aware quantizers such as
    /// AWQ and SmoothQuant): [`test_calibration`] of the matrix's width.
    pub fn calibrated(mut self) -> Self {
        self.calibrated = true;
        self
    }

    /// Run the suite: every generated case through [`check_case`], then [`check_bad_inputs`].
    ///
    /// # Panics
    /// With a description of the first violated property and the minimal failing matrix.
    pub fn run(&self, q: &dyn Quantizer) {
        let strategy = weight_matrix(
            self.rows.clone(),
            self.cols_multiple_of,
            self.col_blocks.clone(),
            self.log10_magnitude.clone(),
            self.dtypes.clone(),
        );
        let mut runner = TestRunner::new(Config {
            cases: self.cases,
            failure_persistence: None,
            ..Config::default()
        });
        let bound = self.bound;
        let calibrated = self.calibrated;
        let result = runner.run(&strategy, |w| {
            let calib = calibrated.then(|| test_calibration(w.cols, 0));
            check_case_with(q, &w, bound, calib.as_ref()).map_err(TestCaseError::fail)
        });
        if let Err(e) = result {
            panic!("{} fails conformance: {e}", q.name());
        }
        let calib = calibrated.then(|| test_calibration(64, 1));
        if let Err(e) = check_bad_inputs_with(q, calib.as_ref()) {
            panic!("{} fails conformance on bad input: {e}", q.name());
        }
    }
}

/// Seeded calibration statistics for a layer of `in_features` inputs: 64 rows of
/// near-Gaussian values (sum of three uniforms) in which every 16th channel (starting at 3)
/// is 20× larger — the salient channels activation-aware methods look for.
pub fn test_calibration(in_features: usize, seed: u64) -> Calibration {
    let mut rng = crate::rng::SplitMix64::new(0xCA11_B4A7 ^ seed);
    let rows = 64;
    let data: Vec<f32> = (0..rows * in_features)
        .map(|i| {
            let u = rng.next_f32() + rng.next_f32() + rng.next_f32() - 1.5;
            if i % in_features % 16 == 3 {
                20.0 * u
            } else {
                u
            }
        })
        .collect();
    let mut calib = Calibration::new(in_features);
    if in_features > 0 {
        // Finite values of the right width: `observe` cannot fail on them.
        let x = Tensor::from_vec(data, (rows, in_features), &Device::Cpu);
        if let Ok(x) = x {
            calib.observe(&x).ok();
        }
    }
    calib
}

/// Run `f`, turning a panic into an error message.
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("{what} panicked: {msg}")
    })
}

fn values(t: &Tensor) -> Result<Vec<f32>, String> {
    t.to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| e.to_string())
}

/// Relative epsilon and absolute subnormal spacing of the dequantized dtype: rounding the
/// result to it adds up to half an ulp (an absolute one below its smallest normal number).
fn dtype_rounding(dtype: DType) -> (f32, f32) {
    match dtype {
        DType::F16 => (9.77e-4, 5.97e-8),
        DType::BF16 => (7.82e-3, f32::MIN_POSITIVE),
        _ => (f32::EPSILON, f32::MIN_POSITIVE),
    }
}

/// Check one weight matrix against every property of the contract.
///
/// * quantize succeeds (or fails with an error, never a panic — an error here is a failure,
///   since generated matrices are valid input);
/// * the packed tensor keeps shape, dtype and element count; codes and zero points fit their
///   bit width; scales are finite and non-negative;
/// * `dequantize` keeps shape and dtype and equals `fake_quantize` bit for bit;
/// * every element is within the [`ErrorBound`] of its group's step;
/// * quantizing again, and again on a one-thread pool, gives the same bytes.
///
/// For a tensor with [input scales](QuantizedTensor::input_scales) `s`, the bounds apply to
/// the smoothed weight `w·s` (in f32) and its decode
/// ([`dequantize_smoothed`](QuantizedTensor::dequantize_smoothed)), and `dequantize` must be
/// that decode divided by `s`, bit for bit in f32.
pub fn check_case(q: &dyn Quantizer, w: &WeightMatrix, bound: ErrorBound) -> Result<(), String> {
    check_case_with(q, w, bound, None)
}

/// [`check_case`] with a calibration handed to every `quantize` and `fake_quantize` call.
pub fn check_case_with(
    q: &dyn Quantizer,
    w: &WeightMatrix,
    bound: ErrorBound,
    calib: Option<&Calibration>,
) -> Result<(), String> {
    let t = w.to_tensor().map_err(|e| e.to_string())?;
    let qt: QuantizedTensor = no_panic("quantize", || q.quantize(&t, calib))?
        .map_err(|e| format!("quantize failed on valid input: {e}"))?;
    if qt.shape() != [w.rows, w.cols] || qt.dtype() != w.dtype || qt.numel() != w.rows * w.cols {
        return Err(format!(
            "shape/dtype not kept: {:?} {:?} for {}x{} {:?}",
            qt.shape(),
            qt.dtype(),
            w.rows,
            w.cols,
            w.dtype
        ));
    }
    let bits = qt.format().code_bits();
    let limit = 1u32 << bits;
    if let Some(i) = qt.codes().unpack().iter().position(|&c| c as u32 >= limit) {
        return Err(format!("code {i} exceeds {bits} bits"));
    }
    if let Some(z) = qt.zeros()
        && z.unpack().iter().any(|&c| c as u32 >= limit)
    {
        return Err("a zero point exceeds the code width".into());
    }
    let scales = qt.scales().to_f32_vec();
    if let Some(i) = scales.iter().position(|s| !(s.is_finite() && *s >= 0.0)) {
        return Err(format!(
            "scale {i} = {} is not finite and non-negative",
            scales[i]
        ));
    }

    let deq = no_panic("dequantize", || qt.dequantize(&Device::Cpu))?.map_err(|e| e.to_string())?;
    let fake =
        no_panic("fake_quantize", || q.fake_quantize(&t, calib))?.map_err(|e| e.to_string())?;
    for (name, x) in [("dequantize", &deq), ("fake_quantize", &fake)] {
        if x.dims() != t.dims() || x.dtype() != t.dtype() {
            return Err(format!("{name} returned {:?} {:?}", x.dims(), x.dtype()));
        }
    }
    let deq_v = values(&deq)?;
    let fake_v = values(&fake)?;
    if let Some(i) = (0..deq_v.len()).find(|&i| deq_v[i].to_bits() != fake_v[i].to_bits()) {
        return Err(format!(
            "dequantize != fake_quantize at {i}: {} vs {}",
            deq_v[i], fake_v[i]
        ));
    }

    // The weight the codes encode and its decode: W and Ŵ, or W·diag(s) and Q(W·diag(s)).
    let (reference, decoded) = match qt.input_scales() {
        None => (w.clone(), deq_v),
        Some(s) => {
            let s = s.to_f32_vec();
            let smoothed = no_panic("dequantize_smoothed", || {
                qt.dequantize_smoothed(&Device::Cpu)
            })?
            .map_err(|e| e.to_string())?;
            if smoothed.dims() != t.dims() || smoothed.dtype() != t.dtype() {
                return Err(format!(
                    "dequantize_smoothed returned {:?} {:?}",
                    smoothed.dims(),
                    smoothed.dtype()
                ));
            }
            let eff = qt
                .dequantize_to(&Device::Cpu, DType::F32)
                .map_err(|e| e.to_string())
                .and_then(|t| values(&t))?;
            let raw = qt
                .dequantize_smoothed_to(&Device::Cpu, DType::F32)
                .map_err(|e| e.to_string())
                .and_then(|t| values(&t))?;
            let cols = w.cols;
            if let Some(i) =
                (0..eff.len()).find(|&i| eff[i].to_bits() != (raw[i] / s[i % cols]).to_bits())
            {
                return Err(format!(
                    "dequantize at {i} is {}, not the smoothed {} / input scale {}",
                    eff[i],
                    raw[i],
                    s[i % cols]
                ));
            }
            let mut reference = w.clone();
            reference.data = w
                .data
                .iter()
                .enumerate()
                .map(|(i, &x)| x * s[i % cols])
                .collect();
            (reference, values(&smoothed)?)
        }
    };
    let w = &reference;
    let deq_v = decoded;
    if matches!(bound, ErrorBound::NearestLevel | ErrorBound::AdjacentLevel) {
        check_levels(&qt, w, &deq_v, bound)?;
    }
    let factor = match bound {
        ErrorBound::HalfStep => Some(0.5f32),
        ErrorBound::FullStep => Some(1.0f32),
        _ => None,
    };
    if let Some(factor) = factor {
        let (eps, tiny) = dtype_rounding(w.dtype);
        for (i, (&x, &y)) in w.data.iter().zip(&deq_v).enumerate() {
            let group = i / qt.group_len();
            let Some(step) = qt.step(group) else {
                return Err("the error bound needs a format with a step".into());
            };
            let err = (x - y).abs();
            // The bound, plus the rounding of the f32 arithmetic and of the output dtype.
            let allowed = factor * step * (1.0 + 1e-5) + eps * x.abs().max(y.abs()) + tiny;
            // Written so that a NaN error also fails.
            if err.is_nan() || err > allowed {
                return Err(format!(
                    "element {i} (group {group}): |{x} - {y}| = {err} > {allowed} (step {step})"
                ));
            }
        }
    }

    let again = q.quantize(&t, calib).map_err(|e| e.to_string())?;
    if again != qt {
        return Err("quantizing twice gave different results".into());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| e.to_string())?;
    let single = pool
        .install(|| q.quantize(&t, calib))
        .map_err(|e| e.to_string())?;
    if single != qt {
        return Err("one thread and many threads gave different results".into());
    }
    Ok(())
}

/// Check the level-based bounds: each decoded value is (up to the output dtype's rounding) the
/// nearest level of its group, or one of the two levels bracketing the weight.
fn check_levels(
    qt: &QuantizedTensor,
    w: &WeightMatrix,
    deq: &[f32],
    bound: ErrorBound,
) -> Result<(), String> {
    let (eps, tiny) = dtype_rounding(w.dtype);
    let same = |a: f32, b: f32| (a - b).abs() <= eps * a.abs().max(b.abs()) + tiny;
    let mut levels = Vec::new();
    let mut current = usize::MAX;
    for (i, (&x, &y)) in w.data.iter().zip(deq).enumerate() {
        let group = i / qt.group_len();
        if group != current {
            levels = qt.group_levels(group);
            current = group;
        }
        if levels.is_empty() {
            return Err(format!("group {group} has no levels"));
        }
        let ok = match bound {
            ErrorBound::NearestLevel => {
                let best = levels
                    .iter()
                    .map(|l| (x - l).abs())
                    .fold(f32::INFINITY, f32::min);
                // y must be a level, and no level may be closer to x than y is.
                levels.iter().any(|&l| same(l, y))
                    && (x - y).abs() <= best + eps * x.abs().max(y.abs()) + tiny
            }
            _ => {
                let below = levels.iter().rev().find(|&&l| l <= x).or(levels.first());
                let above = levels.iter().find(|&&l| l >= x).or(levels.last());
                [below, above].into_iter().flatten().any(|&l| same(l, y))
            }
        };
        if !ok {
            return Err(format!(
                "element {i} (group {group}): {x} decoded to {y}, not its {} level \
                 (group levels {:?})",
                if bound == ErrorBound::NearestLevel {
                    "nearest"
                } else {
                    "bracketing"
                },
                levels
            ));
        }
    }
    Ok(())
}

/// Bad input must give an `Err`, never a panic and never a result: tensors of rank 1 and 3,
/// an empty matrix, NaN and ±Inf weights, and an integer dtype.
pub fn check_bad_inputs(q: &dyn Quantizer) -> Result<(), String> {
    check_bad_inputs_with(q, None)
}

/// [`check_bad_inputs`] with a calibration (of 64 input features, the width of the bad
/// matrices) handed to every call, so that a data-aware quantizer gets past its calibration
/// check and must refuse the weights themselves.
pub fn check_bad_inputs_with(q: &dyn Quantizer, calib: Option<&Calibration>) -> Result<(), String> {
    let dev = Device::Cpu;
    let ok = |r: candle_core::Result<Tensor>| r.map_err(|e| e.to_string());
    let m = |v: f32| {
        let mut data = vec![0.5f32; 4 * 64];
        data[37] = v;
        Tensor::from_vec(data, (4, 64), &Device::Cpu)
    };
    let cases: Vec<(&str, Tensor)> = vec![
        ("rank 1", ok(Tensor::ones(64, DType::F32, &dev))?),
        ("rank 3", ok(Tensor::ones((2, 4, 64), DType::F32, &dev))?),
        ("empty", ok(Tensor::zeros((0, 64), DType::F32, &dev))?),
        ("NaN", ok(m(f32::NAN))?),
        ("+Inf", ok(m(f32::INFINITY))?),
        ("-Inf", ok(m(f32::NEG_INFINITY))?),
        ("u32 dtype", ok(Tensor::ones((4, 64), DType::U32, &dev))?),
    ];
    for (what, t) in cases {
        match no_panic(what, || q.quantize(&t, calib))? {
            Err(_) => {}
            Ok(_) => return Err(format!("{what}: quantize returned Ok")),
        }
        if no_panic(what, || q.fake_quantize(&t, calib))?.is_ok() {
            return Err(format!("{what}: fake_quantize returned Ok"));
        }
    }
    Ok(())
}
