//! GPTQ (Frantar et al. 2022, <https://arxiv.org/abs/2210.17323>): data-aware rounding on any
//! uniform grid, minimising the layer-output error instead of the weight error.
//!
//! # The math
//!
//! For a linear layer with inputs `X` (`n × d`) the squared output error of a weight change
//! `ΔW` is `‖ΔW·Xᵀ‖² ∝ tr(ΔW·H·ΔWᵀ)` with `H = 2·XᵀX/n` ([`Calibration::hessian_f64`]).
//! Rows of `W` do not interact, so each row solves the same problem: quantize the inputs one
//! at a time and, after rounding `w_i` to `q_i`, move the not-yet-quantized weights to absorb
//! the error optimally (Optimal Brain Quantization):
//!
//! ```text
//! δ_F = −(w_i − q_i)/[H_F⁻¹]_ii · [H_F⁻¹]_{:,i}     (F = inputs still free)
//! ```
//!
//! GPTQ keeps the order fixed for all rows, which makes the sequence of `H_F⁻¹` the same for
//! every row: row `i` of the upper Cholesky factor `U` of `H⁻¹` (`H⁻¹ = UᵀU`) is exactly the
//! scaled `i`-th row of the `H_F⁻¹` in force when input `i` is quantized. So:
//!
//! ```text
//! e_i = (w_i − q_i) / U_ii          w_j −= e_i · U_ij   (j > i)
//! ```
//!
//! and `ΔW = E·U`; since `U·H·Uᵀ = I`, the output error is `tr(ΔW·H·ΔWᵀ) = ‖E‖²` for the
//! damped `H` — reported as [`GptqReport::loss`].
//!
//! # The algorithm (the reference code, with two exact shortcuts)
//!
//! 1. Inputs never seen (`H_ii = 0`) get `H_ii = 1` and their weights are zeroed.
//! 2. Act-order (optional): inputs by decreasing `H_ii`.
//! 3. Damping: `H += percdamp · mean(diag H) · I` (`percdamp` = 0.01 by default); if the
//!    Cholesky factorisation still fails, an error — or, with [`GptqQuantizer::damp_retry`],
//!    ten times the damping until a cap, reported in [`GptqReport`].
//! 4. `U`: the reference factors `H`, forms `H⁻¹` and factors it again. Here `H = R·Rᵀ` with `R`
//!    upper triangular (the Cholesky factor of `H` with rows and columns reversed), and
//!    `U = R⁻¹`: `H⁻¹ = R⁻ᵀR⁻¹ = UᵀU`, one factorisation and one triangular inverse instead of
//!    three cubic steps, and no explicit `H⁻¹`.
//! 5. Lazy blocks of 128 inputs: inside a block, input by input as above, the updates limited
//!    to the block; after it, `W[:, later] −= E_block · U[block, later]` in one product.
//!
//! Group parameters (scale, zero point) follow the uniform grid (the arithmetic of
//! [`UniformQuantizer`](crate::UniformQuantizer), to the bit): per tensor and per channel they
//! come from the weights before the sweep (after dead inputs are zeroed; the reference takes
//! per-channel ranges before zeroing them); per group they are computed when the sweep reaches
//! the group's first input, from the group's *current* weights — all earlier errors applied.
//! (Blocks are aligned so that every group starts at a block start or lies inside one block,
//! which makes the lazy updates give the same weights as column-by-column updates; the
//! reference reads the group from its stale copy of the matrix when a group starts inside a
//! block.) With act-order, groups would no longer be contiguous runs; [`QuantizedTensor`]
//! stores contiguous groups, so act-order uses **static groups** (AutoGPTQ's `static_groups`):
//! parameters of each original contiguous group computed before the sweep, codes written back
//! at their original position. Static groups can also be asked for without act-order.
//!
//! Memory: at most the f64 Hessian and two `in × in` f32 matrices at once (`16·in²` bytes,
//! 268 MB at `in = 4096`), plus a copy of the weights.
//!
//! Precision: the Hessian is read in f64 (damping added in f64), factorised and inverted in f32
//! with f64 diagonal blocks; the sweep runs in f32 like the reference, the loss is summed in
//! f64. The result is an ordinary uniform [`QuantizedTensor`]; its `dequantize` is exactly the
//! `scale · (q − zero)` values the sweep used for the errors.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::kernels::cpu::gptq::{GridMode, Sweep, SweepFault, min_max, sweep};
use crate::kernels::cpu::linalg::{NotPositiveDefinite, inverse_upper_factor};
use crate::quant::calibration::Calibration;
use crate::quant::grid::{UniformParams, raw_uniform_scale};
use crate::quant::packing::PackedCodes;
use crate::quant::quantizer::Quantizer;
use crate::quant::scales::Scales;
use crate::quant::spec::{Granularity, QuantSpec, Rounding, ScaleDType};
use crate::quant::tensor::{QuantFormat, QuantizedTensor};
use crate::quant::uniform::check_weight_matrix;

/// Default relative damping: `0.01 · mean(diag H)`.
pub const DEFAULT_PERCDAMP: f64 = 0.01;
/// Default lazy-update block (inputs per block).
pub const DEFAULT_BLOCK_SIZE: usize = 128;

/// GPTQ on a uniform grid (2..=8 bits, symmetric or asymmetric, any granularity and scale
/// dtype); the calibration's Hessian decides how rounding errors are redistributed.
///
/// [`quantize`](Quantizer::quantize) needs `Some(&Calibration)` of the layer's inputs
/// (`in_features` wide, at least one sample); without it, an [`Error::InvalidParameter`].
/// See the [module docs](self) for the algorithm.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::{Calibration, GptqQuantizer, QuantSpec, Quantizer, UniformQuantizer};
///
/// let dev = Device::Cpu;
/// // Correlated inputs: x = z·M with a random mixing matrix.
/// let z = Tensor::randn(0f32, 1.0, (256, 64), &dev)?;
/// let mix = Tensor::randn(0f32, 1.0, (64, 64), &dev)?;
/// let x = z.matmul(&mix)?;
/// let mut calib = Calibration::new(64);
/// calib.observe(&x)?;
///
/// let w = Tensor::randn(0f32, 0.1, (32, 64), &dev)?;
/// let spec = QuantSpec::int4().per_group(32).asymmetric();
/// let gptq = GptqQuantizer::new(spec)?.act_order(true);
/// assert_eq!(gptq.name(), "gptq-w4-g32-asym-actorder");
/// let (qt, report) = gptq.quantize_with_report(&w, &calib)?;
///
/// // The output error ‖(W − Ŵ)·Xᵀ‖² is below round-to-nearest's.
/// let out_err = |w_hat: &Tensor| -> candle_core::Result<f32> {
///     (&w - w_hat)?.matmul(&x.t()?)?.sqr()?.sum_all()?.to_scalar::<f32>()
/// };
/// let rtn = UniformQuantizer::new(spec)?.fake_quantize(&w, None)?;
/// assert!(out_err(&qt.dequantize(&dev)?)? < out_err(&rtn)?);
/// assert_eq!(report.attempts, 1);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct GptqQuantizer {
    spec: QuantSpec,
    act_order: bool,
    static_groups: bool,
    percdamp: f64,
    max_percdamp: f64,
    block_size: usize,
}

/// What one GPTQ run did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct GptqReport {
    /// The relative damping that worked (fraction of the mean Hessian diagonal).
    pub percdamp: f64,
    /// The absolute damping added to the Hessian diagonal.
    pub damping: f64,
    /// Cholesky factorisations tried (1 when the configured damping worked).
    pub attempts: usize,
    /// Inputs whose Hessian diagonal was 0 (never excited): their weights were set to 0.
    pub dead_inputs: usize,
    /// `tr(ΔW·H_damped·ΔWᵀ) = Σ e²`, the layer-output error GPTQ minimises, with `ΔW` taken
    /// from the weights after dead inputs were zeroed.
    pub loss: f64,
}

impl GptqQuantizer {
    /// GPTQ on the grid of `spec` (bits 2..=8, nearest rounding), no act-order, damping 0.01,
    /// no damping retries, blocks of 128.
    pub fn new(spec: QuantSpec) -> Result<Self> {
        spec.validate()?;
        if !(2..=8).contains(&spec.bits) {
            return Err(Error::InvalidBits {
                bits: spec.bits,
                min: 2,
                max: 8,
                scheme: "GPTQ",
            });
        }
        if spec.rounding != Rounding::Nearest {
            return Err(Error::Unsupported(
                "GPTQ rounds to nearest; its error feedback replaces stochastic rounding".into(),
            ));
        }
        Ok(GptqQuantizer {
            spec,
            act_order: false,
            static_groups: false,
            percdamp: DEFAULT_PERCDAMP,
            max_percdamp: DEFAULT_PERCDAMP,
            block_size: DEFAULT_BLOCK_SIZE,
        })
    }

    /// Quantize inputs in order of decreasing Hessian diagonal (`desc_act`). With groups this
    /// implies static groups.
    pub fn act_order(mut self, on: bool) -> Self {
        self.act_order = on;
        self
    }

    /// Compute every group's parameters from the weights before the sweep (AutoGPTQ's
    /// `static_groups`) instead of at the group's start. Always on with act-order and groups.
    pub fn static_groups(mut self, on: bool) -> Self {
        self.static_groups = on;
        self
    }

    /// Relative damping: `percdamp · mean(diag H)` is added to the diagonal (finite, ≥ 0).
    /// Resets the retry cap to `percdamp` (no retries).
    pub fn with_damping(mut self, percdamp: f64) -> Result<Self> {
        if !(percdamp.is_finite() && percdamp >= 0.0) {
            return Err(Error::InvalidParameter {
                name: "percdamp",
                reason: format!("must be finite and non-negative, got {percdamp}"),
            });
        }
        self.percdamp = percdamp;
        self.max_percdamp = percdamp;
        Ok(self)
    }

    /// When the damped Hessian is not positive definite, retry with ten times the damping
    /// while it stays at most `max_percdamp` (the damping used is in [`GptqReport`]).
    ///
    /// ```
    /// use quantlens::{GptqQuantizer, QuantSpec};
    /// let q = GptqQuantizer::new(QuantSpec::int4())?.damp_retry(1.0)?; // 0.01, 0.1, 1
    /// assert!(GptqQuantizer::new(QuantSpec::int4())?.damp_retry(0.001).is_err());
    /// # Ok::<(), quantlens::Error>(())
    /// ```
    pub fn damp_retry(mut self, max_percdamp: f64) -> Result<Self> {
        if !(max_percdamp.is_finite() && max_percdamp >= self.percdamp) {
            return Err(Error::InvalidParameter {
                name: "max_percdamp",
                reason: format!(
                    "must be finite and at least the damping {}, got {max_percdamp}",
                    self.percdamp
                ),
            });
        }
        if max_percdamp > self.percdamp && self.percdamp == 0.0 {
            return Err(Error::InvalidParameter {
                name: "max_percdamp",
                reason: "retries multiply the damping by 10; start from a positive damping".into(),
            });
        }
        self.max_percdamp = max_percdamp;
        Ok(self)
    }

    /// Inputs per lazy-update block (≥ 1; 128 by default). Changes only the speed and the
    /// rounding of the f32 arithmetic, not the algorithm.
    pub fn block_size(mut self, block_size: usize) -> Result<Self> {
        if block_size == 0 {
            return Err(Error::InvalidParameter {
                name: "block_size",
                reason: "must be at least 1".into(),
            });
        }
        self.block_size = block_size;
        Ok(self)
    }

    /// The grid this quantizer rounds to.
    pub fn spec(&self) -> &QuantSpec {
        &self.spec
    }

    /// Whether act-order is on.
    pub fn is_act_order(&self) -> bool {
        self.act_order
    }

    /// Quantize `weight` (`[out, in]`, f32/f16/bf16, on the CPU) with the Hessian of `calib`,
    /// and say what happened.
    pub fn quantize_with_report(
        &self,
        weight: &Tensor,
        calib: &Calibration,
    ) -> Result<(QuantizedTensor, GptqReport)> {
        let (rows, cols) = check_weight_matrix(weight)?;
        if !matches!(weight.device(), Device::Cpu) {
            return Err(Error::UnsupportedDevice {
                op: "GPTQ",
                device: format!("{:?}", weight.device().location()),
                hint: "no kernel for this device yet; move the weight with .to_device(&Device::Cpu)",
            });
        }
        if calib.in_features() != cols {
            return Err(Error::ShapeMismatch(format!(
                "calibration of {} input features for a weight with in_features = {cols}",
                calib.in_features()
            )));
        }
        if calib.samples() == 0 {
            return Err(Error::InvalidParameter {
                name: "calibration",
                reason: "no samples observed; GPTQ needs the layer's inputs".into(),
            });
        }
        let group_len = self.spec.granularity.group_len(rows, cols)?;
        // f16 and bf16 widen to f32 exactly.
        let mut w = weight
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        check_finite(&w, "weight")?;
        let mut h = calib.hessian_f64();
        if let Some(i) = h.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "calibration Hessian",
                count: h.iter().filter(|v| !v.is_finite()).count(),
                first_index: i,
            });
        }

        // 1. Dead inputs.
        let n = cols;
        let dead: Vec<usize> = (0..n).filter(|&i| h[i * n + i] == 0.0).collect();
        for &i in &dead {
            h[i * n + i] = 1.0;
        }
        if !dead.is_empty() {
            w.par_chunks_mut(cols).for_each(|row| {
                for &i in &dead {
                    row[i] = 0.0;
                }
            });
        }

        // 2. Grid parameters fixed before the sweep (per tensor, per channel, static groups).
        let group_cols = match self.spec.granularity {
            Granularity::PerGroup(g) => g,
            Granularity::PerTensor | Granularity::PerChannel => cols,
        };
        let dynamic = matches!(self.spec.granularity, Granularity::PerGroup(g) if g < cols)
            && !self.static_groups
            && !self.act_order;
        let mut params = self.initial_params(&w, rows, cols, group_cols, dynamic)?;

        // 3. Act-order permutation.
        let perm: Option<Vec<usize>> = self.act_order.then(|| {
            let mut p: Vec<usize> = (0..n).collect();
            p.sort_by(|&a, &b| h[b * n + b].total_cmp(&h[a * n + a]));
            p
        });
        let order = |i: usize| perm.as_ref().map_or(i, |p| p[i]);

        // 4. Damping, Cholesky of the reversed Hessian, triangular inverse: U = R⁻¹.
        let mean_diag = (0..n).map(|i| h[i * n + i]).sum::<f64>() / n as f64;
        let mut percdamp = self.percdamp;
        let mut attempts = 0;
        let (u, damping) = loop {
            attempts += 1;
            let damping = percdamp * mean_diag;
            let mut a = vec![0f32; n * n];
            a.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
                let hi = order(i);
                for (j, v) in row.iter_mut().enumerate().skip(i) {
                    let d = if i == j { damping } else { 0.0 };
                    *v = (h[hi * n + order(j)] + d) as f32;
                }
            });
            let failed = match inverse_upper_factor(a, n) {
                Ok(u) => break (u, damping),
                Err(NotPositiveDefinite { pivot }) => pivot,
            };
            let next = percdamp * 10.0;
            if next > self.max_percdamp * (1.0 + 1e-12) || percdamp == 0.0 {
                return Err(Error::NotPositiveDefinite {
                    what: "damped calibration Hessian",
                    index: order(failed),
                    percdamp,
                    damping,
                });
            }
            percdamp = next;
        };
        drop(h);

        // 5. The sweep, on weights in processing order.
        let mut wp = match &perm {
            Some(p) => {
                let mut wp = vec![0f32; rows * cols];
                wp.par_chunks_mut(cols)
                    .zip(w.par_chunks(cols))
                    .for_each(|(dst, src)| {
                        for (d, &j) in dst.iter_mut().zip(p) {
                            *d = src[j];
                        }
                    });
                wp
            }
            None => w,
        };
        let blocks = block_plan(cols, self.block_size, group_cols, dynamic);
        let mode = if dynamic {
            GridMode::Dynamic {
                bits: self.spec.bits,
                symmetric: self.spec.symmetric,
                scale_dtype: self.spec.scale_dtype,
            }
        } else {
            GridMode::Fixed
        };
        let out = sweep(Sweep {
            w: &mut wp,
            rows,
            cols,
            u: &u,
            perm: perm.as_deref(),
            group_cols,
            params: &mut params,
            mode,
            blocks: &blocks,
        })
        .map_err(|f| match f {
            SweepFault::ScaleOverflow { group, scale } => Error::ScaleOutOfRange {
                group,
                scale,
                dtype: self.spec.scale_dtype,
            },
            SweepFault::NonFinite { index } => Error::NonFinite {
                what: "GPTQ-updated weights (the Hessian is too ill-conditioned; raise the damping)",
                count: 1,
                first_index: index,
            },
        })?;

        // 6. Assemble: per tensor keeps one of the (identical) per-row parameters.
        let params = if self.spec.granularity == Granularity::PerTensor {
            &params[..1]
        } else {
            &params[..]
        };
        let bits = self.spec.bits;
        let codes = PackedCodes::pack(&out.codes, bits)?;
        let scales = Scales::from_f32(
            params.iter().map(|p| p.scale).collect(),
            self.spec.scale_dtype,
        );
        let zeros = if self.spec.symmetric {
            None
        } else {
            Some(PackedCodes::pack(
                &params.iter().map(|p| p.zero as u8).collect::<Vec<_>>(),
                bits,
            )?)
        };
        let qt = QuantizedTensor::from_parts(
            vec![rows, cols],
            weight.dtype(),
            QuantFormat::Uniform {
                bits,
                symmetric: self.spec.symmetric,
            },
            group_len,
            codes,
            scales,
            zeros,
        )?;
        Ok((
            qt,
            GptqReport {
                percdamp,
                damping,
                attempts,
                dead_inputs: dead.len(),
                loss: out.loss,
            },
        ))
    }

    /// Parameters of every row's groups (`rows × cols/group_cols`, original order): computed now
    /// unless `dynamic`, in which case the sweep fills them in.
    fn initial_params(
        &self,
        w: &[f32],
        rows: usize,
        cols: usize,
        group_cols: usize,
        dynamic: bool,
    ) -> Result<Vec<UniformParams>> {
        let gpr = cols / group_cols;
        let (bits, sym, dtype) = (self.spec.bits, self.spec.symmetric, self.spec.scale_dtype);
        let zero = UniformParams::from_range(0.0, 0.0, bits, sym, dtype)
            .expect("a zero range always has a scale");
        let mut params = vec![zero; rows * gpr];
        if dynamic {
            return Ok(params);
        }
        let overflow = |group: usize, min: f32, max: f32| Error::ScaleOutOfRange {
            group,
            scale: raw_uniform_scale(min, max, bits, sym),
            dtype,
        };
        if self.spec.granularity == Granularity::PerTensor {
            let (min, max, _) = min_max(w);
            let p = UniformParams::from_range(min, max, bits, sym, dtype)
                .ok_or_else(|| overflow(0, min, max))?;
            params.iter_mut().for_each(|q| *q = p);
            return Ok(params);
        }
        let bad = params
            .par_chunks_mut(gpr)
            .zip(w.par_chunks(cols))
            .enumerate()
            .map(|(r, (pr, wr))| {
                for (g, (p, wg)) in pr.iter_mut().zip(wr.chunks(group_cols)).enumerate() {
                    let (min, max, _) = min_max(wg);
                    match UniformParams::from_range(min, max, bits, sym, dtype) {
                        Some(v) => *p = v,
                        None => return Some((r * gpr + g, min, max)),
                    }
                }
                None
            })
            .reduce(|| None, |a, b| a.into_iter().chain(b).min_by_key(|x| x.0));
        match bad {
            Some((group, min, max)) => Err(overflow(group, min, max)),
            None => Ok(params),
        }
    }
}

/// Column blocks in processing order. With dynamic groups every group must start at a block
/// start or lie inside one block (so its parameters see all earlier updates): blocks are a
/// whole number of groups when groups are short, and groups are split into blocks when long.
fn block_plan(
    cols: usize,
    block: usize,
    group_cols: usize,
    dynamic: bool,
) -> Vec<std::ops::Range<usize>> {
    let ranges = |start: usize, end: usize, step: usize| {
        (start..end)
            .step_by(step)
            .map(move |s| s..(s + step).min(end))
    };
    if dynamic && group_cols > block {
        (0..cols)
            .step_by(group_cols)
            .flat_map(|g| ranges(g, g + group_cols, block))
            .collect()
    } else if dynamic {
        ranges(0, cols, group_cols * (block / group_cols)).collect()
    } else {
        ranges(0, cols, block).collect()
    }
}

fn check_finite(x: &[f32], what: &'static str) -> Result<()> {
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what,
            count: x.iter().filter(|v| !v.is_finite()).count(),
            first_index: i,
        });
    }
    Ok(())
}

impl Quantizer for GptqQuantizer {
    fn config(&self) -> serde_json::Value {
        super::quantizer::debug_config(self)
    }

    fn name(&self) -> String {
        let s = &self.spec;
        let mut name = format!(
            "gptq-w{}-{}-{}",
            s.bits,
            s.granularity.tag(),
            if s.symmetric { "sym" } else { "asym" }
        );
        if self.act_order {
            name.push_str("-actorder");
        } else if self.static_groups && matches!(s.granularity, Granularity::PerGroup(_)) {
            name.push_str("-static");
        }
        name.push_str(s.scale_dtype.name_suffix(ScaleDType::F16));
        if self.percdamp != DEFAULT_PERCDAMP {
            name.push_str(&format!("-damp{}", self.percdamp));
        }
        if self.max_percdamp != self.percdamp {
            name.push_str(&format!("-retry{}", self.max_percdamp));
        }
        if self.block_size != DEFAULT_BLOCK_SIZE {
            name.push_str(&format!("-b{}", self.block_size));
        }
        name
    }

    fn quantize(&self, weight: &Tensor, calib: Option<&Calibration>) -> Result<QuantizedTensor> {
        let calib = calib.ok_or_else(|| Error::InvalidParameter {
            name: "calibration",
            reason: format!(
                "{} is data-aware: pass the layer's input statistics (Some(&Calibration))",
                self.name()
            ),
        })?;
        self.quantize_with_report(weight, calib).map(|(q, _)| q)
    }

    fn uses_calibration(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_respect_dynamic_groups() {
        let cover = |b: &[std::ops::Range<usize>], cols| {
            assert_eq!(b.first().unwrap().start, 0);
            assert_eq!(b.last().unwrap().end, cols);
            assert!(b.windows(2).all(|w| w[0].end == w[1].start));
        };
        let b = block_plan(240, 128, 48, true);
        cover(&b, 240);
        assert!(b.iter().all(|r| r.start % 48 == 0 && r.len() % 48 == 0));
        let b = block_plan(600, 128, 300, true);
        cover(&b, 600);
        assert!(b.iter().any(|r| r.start == 300));
        assert!(b.iter().all(|r| r.len() <= 128));
        let b = block_plan(300, 128, 300, false);
        assert_eq!(b, vec![0..128, 128..256, 256..300]);
    }

    #[test]
    fn rejects_bad_configurations() {
        assert!(matches!(
            GptqQuantizer::new(QuantSpec::binary()),
            Err(Error::InvalidBits { .. })
        ));
        assert!(GptqQuantizer::new(QuantSpec::int4().stochastic(3)).is_err());
        let q = GptqQuantizer::new(QuantSpec::int4()).unwrap();
        assert!(q.clone().with_damping(-1.0).is_err());
        assert!(q.clone().with_damping(f64::NAN).is_err());
        assert!(q.clone().block_size(0).is_err());
        assert!(
            q.clone()
                .with_damping(0.0)
                .unwrap()
                .damp_retry(1.0)
                .is_err()
        );
        assert!(q.uses_calibration());
    }
}
