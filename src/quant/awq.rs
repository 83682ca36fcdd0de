//! AWQ: activation-aware weight quantization (Lin et al., 2023, "AWQ: Activation-aware Weight
//! Quantization for LLM Compression and Acceleration").
//!
//! A few input channels of a layer carry much larger activations than the rest, and the
//! weights that multiply them matter most for the output. AWQ protects them by scaling: with
//! per-input-channel scales `s > 0`,
//!
//! ```text
//! y = x Wᵀ = (x·diag(s)⁻¹) (W·diag(s))ᵀ,
//! ```
//!
//! so quantizing the smoothed weight `W·diag(s)` instead of `W` leaves the function alone
//! while channel `j`'s weights are rounded on a grid that is, relative to them, `s_j` times
//! finer (as long as they do not set the group's range): the output error contributed by
//! channel `j` shrinks roughly by `1/s_j`. The scales follow the activations,
//!
//! ```text
//! s_j(α) = max(mean|x_j|^α, 10⁻⁴) / √(max_k · min_k of the same),   α ∈ [0, 1],
//! ```
//!
//! (normalised as the reference implementation does), and α is chosen on a grid (`0, 1/20,
//! …, 19/20` by default, as in the reference code) to minimise the layer's output error on
//! the calibration inputs,
//!
//! ```text
//! E(α) = ‖X(W − Ŵ_α)ᵀ‖² / n = tr(Δ_α G Δ_αᵀ),  Δ_α = W − Q(W·diag(s_α))·diag(s_α)⁻¹,  G = XᵀX/n,
//! ```
//!
//! computed from the [`Calibration`]'s Gram matrix ([`output_error`](super::output_error)).
//! `α = 0` gives `s = 1`, which is exactly the base quantizer, so AWQ never does worse than
//! its base on the calibration data.
//!
//! **Clipping search** (on by default, as in the reference): for the chosen scales, each run
//! of `group_len` smoothed weights of a row (the base quantizer's groups, or whole rows) is
//! clamped to `±r·max|w|` for `r = 1, 0.95, …, 0.55`, and each run keeps the `r` with the
//! smallest error `δᵀ G_cc δ` on its own inputs (the block of `G` for its columns). The
//! clipped weight is kept only if its full output error `E` is lower than without clipping.
//!
//! The result is the base quantizer's [`QuantizedTensor`] of the (clipped) smoothed weight
//! with [`input_scales`](QuantizedTensor::input_scales) `s` (f16, 2 bytes per input channel,
//! counted in the storage): [`dequantize`](QuantizedTensor::dequantize) gives the effective
//! weight, and a packed [`LinearLayer`](crate::model::LinearLayer) divides its input by `s`.
//! When the chosen `s` is all ones the result is the base quantizer's own tensor, with no
//! input scales.
//!
//! Cost: one base quantization and one `[out, in] × [in, in]` f64 product per grid point,
//! plus one quantization and a block-diagonal pass per clipping ratio.

use std::fmt;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use half::f16;

use crate::error::{Error, Result};
use crate::quant::calibration::Calibration;
use crate::quant::output_error::{Gram, check_calibration};
use crate::quant::quantizer::Quantizer;
use crate::quant::smoothing::{
    HostWeight, base_calibration, check_alpha, quantize_smoothed, round_scales, scale_columns,
};
use crate::quant::spec::QuantSpec;
use crate::quant::tensor::QuantizedTensor;
use crate::quant::uniform::UniformQuantizer;

/// Grid points of the default α search.
const DEFAULT_POINTS: usize = 20;
/// The default clipping grid: ratios `1 − k/20` for `k < 0.5 · 20`.
const DEFAULT_CLIP: ClipGrid = ClipGrid {
    n_grid: 20,
    max_shrink: 0.5,
};

/// Which α values are tried.
#[derive(Debug, Clone, Copy, PartialEq)]
enum AlphaGrid {
    /// `k / n` for `k = 0..n`.
    Points(usize),
    /// One fixed α.
    Fixed(f64),
}

impl AlphaGrid {
    fn values(self) -> Vec<f64> {
        match self {
            AlphaGrid::Points(n) => (0..n).map(|k| k as f64 / n as f64).collect(),
            AlphaGrid::Fixed(a) => vec![a],
        }
    }
}

/// Clipping ratios `1 − k/n_grid` for `k = 0..⌊max_shrink · n_grid⌋`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ClipGrid {
    n_grid: usize,
    max_shrink: f64,
}

impl ClipGrid {
    fn ratios(self) -> Vec<f64> {
        let steps = (self.max_shrink * self.n_grid as f64 + 1e-9).floor() as usize;
        (0..steps.max(1))
            .map(|k| 1.0 - k as f64 / self.n_grid as f64)
            .collect()
    }
}

/// AWQ around any data-free base [`Quantizer`] (default: RTN int4, groups of 128,
/// asymmetric): activation-aware per-input-channel scaling with a grid search of α on the
/// layer's output error, then an optional clipping search. See the [module docs](self) for
/// the math.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::quant::output_error::layer_output_error;
/// use quantlens::{AwqQuantizer, Calibration, QuantSpec, Quantizer, UniformQuantizer};
///
/// let dev = Device::Cpu;
/// let w = Tensor::randn(0f32, 1.0, (32, 64), &dev)?;
/// // Inputs whose first four channels are 20× larger than the rest.
/// let boost: Vec<f32> = (0..64).map(|j| if j < 4 { 20.0 } else { 1.0 }).collect();
/// let x = Tensor::randn(0f32, 1.0, (256, 64), &dev)?
///     .broadcast_mul(&Tensor::new(boost.as_slice(), &dev)?)?;
/// let mut calib = Calibration::new(64);
/// calib.observe(&x)?;
///
/// let rtn = UniformQuantizer::new(QuantSpec::int3().per_group(32).asymmetric())?;
/// let awq = AwqQuantizer::new().with_base(rtn.clone());
/// let qt = awq.quantize(&w, Some(&calib))?;
/// assert!(qt.input_scales().is_some());
/// let e_awq = layer_output_error(&w, &qt.dequantize(&dev)?, &calib)?;
/// let e_rtn = layer_output_error(&w, &rtn.fake_quantize(&w, None)?, &calib)?;
/// assert!(e_awq < e_rtn);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Clone)]
pub struct AwqQuantizer {
    base: Arc<dyn Quantizer>,
    alphas: AlphaGrid,
    clip: Option<ClipGrid>,
}

impl fmt::Debug for AwqQuantizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwqQuantizer")
            .field("base", &self.base.name())
            .field("alphas", &self.alphas)
            .field("clip", &self.clip)
            .finish()
    }
}

impl Default for AwqQuantizer {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`AwqQuantizer::search`] found for one layer.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AwqSearch {
    /// The quantized weight (what [`Quantizer::quantize`] returns).
    pub tensor: QuantizedTensor,
    /// The chosen α (the smallest among equally good ones).
    pub alpha: f64,
    /// `(α, output error)` for every α tried, before clipping, in grid order.
    pub errors: Vec<(f64, f64)>,
    /// Whether the clipped weight was kept (it is only when it lowers the output error).
    pub clipped: bool,
    /// The output error `‖X(W − Ŵ)ᵀ‖²/n` of [`tensor`](Self::tensor) on the calibration
    /// inputs.
    pub output_error: f64,
}

impl AwqQuantizer {
    /// AWQ over RTN int4 in asymmetric groups of 128 (f16 scales), α searched on
    /// `0, 0.05, …, 0.95`, clipping search on.
    pub fn new() -> Self {
        let spec = QuantSpec::int4().per_group(128).asymmetric();
        AwqQuantizer {
            // A valid spec: `new` cannot fail on it.
            base: Arc::new(UniformQuantizer::new(spec).unwrap_or_else(|_| unreachable!())),
            alphas: AlphaGrid::Points(DEFAULT_POINTS),
            clip: Some(DEFAULT_CLIP),
        }
    }

    /// Quantize the smoothed weight with `base` instead (any data-free quantizer: uniform,
    /// NF4, k-means, FP4, …).
    pub fn with_base(mut self, base: impl Quantizer + 'static) -> Self {
        self.base = Arc::new(base);
        self
    }

    /// Search α on `points` values `0, 1/points, …, (points − 1)/points` (20 by default).
    pub fn with_grid(mut self, points: usize) -> Result<Self> {
        if points == 0 {
            return Err(Error::InvalidParameter {
                name: "AWQ grid points",
                reason: "need at least one point".into(),
            });
        }
        self.alphas = AlphaGrid::Points(points);
        Ok(self)
    }

    /// Use one fixed α in [0, 1] instead of a search; `with_alpha(0.0)` (with clipping off)
    /// is exactly the base quantizer.
    pub fn with_alpha(mut self, alpha: f64) -> Result<Self> {
        self.alphas = AlphaGrid::Fixed(check_alpha(alpha, "AWQ alpha")?);
        Ok(self)
    }

    /// Turn the clipping search on (default) or off.
    pub fn with_clip_search(mut self, on: bool) -> Self {
        self.clip = on.then_some(self.clip.unwrap_or(DEFAULT_CLIP));
        self
    }

    /// Clipping ratios `1 − k/n_grid` for `k = 0..⌊max_shrink · n_grid⌋` (default 20 and
    /// 0.5: ten ratios from 1 down to 0.55); turns the clipping search on.
    pub fn with_clip_grid(mut self, n_grid: usize, max_shrink: f64) -> Result<Self> {
        if n_grid == 0 || !(0.0..1.0).contains(&max_shrink) {
            return Err(Error::InvalidParameter {
                name: "AWQ clip grid",
                reason: format!(
                    "need n_grid ≥ 1 and max_shrink in [0, 1), got {n_grid} and {max_shrink}"
                ),
            });
        }
        self.clip = Some(ClipGrid { n_grid, max_shrink });
        Ok(self)
    }

    /// The α values searched, in order.
    pub fn alphas(&self) -> Vec<f64> {
        self.alphas.values()
    }

    /// The base quantizer.
    pub fn base(&self) -> &dyn Quantizer {
        &*self.base
    }

    /// The input scales AWQ uses for α: `max(mean|x_j|^α, 10⁻⁴)`, normalised by the
    /// geometric mean of its extremes, rounded to f16 (and clamped to f16's normal range).
    ///
    /// ```
    /// use candle_core::{Device, Tensor};
    /// use quantlens::{AwqQuantizer, Calibration};
    /// let mut calib = Calibration::new(3);
    /// calib.observe(&Tensor::new(&[[1f32, 4.0, 16.0]], &Device::Cpu)?)?;
    /// assert_eq!(AwqQuantizer::input_scales(&calib, 0.5)?, vec![0.5, 1.0, 2.0]);
    /// assert_eq!(AwqQuantizer::input_scales(&calib, 0.0)?, vec![1.0, 1.0, 1.0]);
    /// # Ok::<(), quantlens::Error>(())
    /// ```
    pub fn input_scales(calib: &Calibration, alpha: f64) -> Result<Vec<f32>> {
        check_alpha(alpha, "AWQ alpha")?;
        check_calibration(calib, calib.in_features(), "AWQ")?;
        Ok(awq_scales(&calib.act_mean_abs(), alpha)
            .into_iter()
            .map(f16::to_f32)
            .collect())
    }

    /// Quantize `weight` with the α search (and clipping search), reporting what was tried.
    pub fn search(&self, weight: &Tensor, calib: &Calibration) -> Result<AwqSearch> {
        let w = HostWeight::read(weight)?;
        check_calibration(calib, w.cols, &self.name())?;
        let gram = Gram::new(calib)?;
        let mean = calib.act_mean_abs();
        let mut errors = Vec::new();
        let mut best: Option<Candidate> = None;
        for alpha in self.alphas.values() {
            let s = awq_scales(&mean, alpha);
            let c = self.candidate(weight, &w, Some(&gram), &s, None, Some(calib))?;
            errors.push((alpha, c.error));
            if best.as_ref().is_none_or(|b| c.error < b.error) {
                best = Some(Candidate { alpha, ..c });
            }
        }
        let Some(mut best) = best else {
            // The grid has at least one point by construction.
            return Err(Error::Unsupported("AWQ with an empty α grid".into()));
        };
        let mut clipped = false;
        if let Some(grid) = self.clip {
            let c = self.clip_search(weight, &w, &gram, &best, grid, calib)?;
            if c.error < best.error {
                best = Candidate {
                    alpha: best.alpha,
                    ..c
                };
                clipped = true;
            }
        }
        Ok(AwqSearch {
            tensor: best.tensor,
            alpha: best.alpha,
            errors,
            clipped,
            output_error: best.error,
        })
    }

    /// Quantize with input scales `s` (the smoothed weight clipped to `limits`, one limit per
    /// run of `limits.1` elements), with its output error when `gram` is given (NaN if not).
    fn candidate(
        &self,
        weight: &Tensor,
        w: &HostWeight,
        gram: Option<&Gram>,
        s: &[f16],
        limits: Option<(&[f32], usize)>,
        calib: Option<&Calibration>,
    ) -> Result<Candidate> {
        let ones = s.iter().all(|&v| v == f16::ONE);
        let plain = base_calibration(&*self.base, calib, None)?;
        let tensor = if ones && limits.is_none() {
            // s = 1: exactly the base quantizer on the weight as given.
            self.base.quantize(weight, plain.as_ref())?
        } else {
            let sf: Vec<f32> = s.iter().map(|v| v.to_f32()).collect();
            let mut smoothed = scale_columns(&w.values, &sf);
            if let Some((limits, run)) = limits {
                for (chunk, &m) in smoothed.chunks_mut(run).zip(limits) {
                    chunk.iter_mut().for_each(|v| *v = v.clamp(-m, m));
                }
            }
            if ones {
                let mut qt = self
                    .base
                    .quantize(&w.tensor(smoothed)?, plain.as_ref())?
                    .into_parts();
                qt.dtype = w.dtype;
                QuantizedTensor::assemble(qt)?
            } else {
                quantize_smoothed(&*self.base, w, smoothed, s, calib)?
            }
        };
        let delta = delta(&tensor, w)?;
        let error = match gram {
            Some(g) => g.output_error(&delta, w.rows, w.cols)?,
            None => f64::NAN,
        };
        Ok(Candidate {
            tensor,
            s: s.to_vec(),
            delta,
            error,
            alpha: 0.0,
        })
    }

    /// Per run of the base quantizer's groups (or whole rows), the clipping ratio with the
    /// smallest block output error; then the whole clipped weight, quantized once more.
    fn clip_search(
        &self,
        weight: &Tensor,
        w: &HostWeight,
        gram: &Gram,
        unclipped: &Candidate,
        grid: ClipGrid,
        calib: &Calibration,
    ) -> Result<Candidate> {
        let g = unclipped.tensor.group_len();
        let run = if g <= w.cols && w.cols.is_multiple_of(g) {
            g
        } else {
            w.cols
        };
        let sf: Vec<f32> = unclipped.s.iter().map(|v| v.to_f32()).collect();
        let amax: Vec<f32> = scale_columns(&w.values, &sf)
            .chunks(run)
            .map(|c| c.iter().fold(0f32, |m, v| m.max(v.abs())))
            .collect();
        // Ratio 1 is the unclipped candidate itself.
        let mut best_err = gram.block_errors(&unclipped.delta, run);
        let mut best_ratio = vec![1.0f64; amax.len()];
        for ratio in grid.ratios().into_iter().filter(|&r| r < 1.0) {
            let limits: Vec<f32> = amax.iter().map(|&m| (m as f64 * ratio) as f32).collect();
            let c = self.candidate(
                weight,
                w,
                None,
                &unclipped.s,
                Some((&limits, run)),
                Some(calib),
            )?;
            let errs = gram.block_errors(&c.delta, run);
            for ((e, be), br) in errs.iter().zip(&mut best_err).zip(&mut best_ratio) {
                if *e < *be {
                    *be = *e;
                    *br = ratio;
                }
            }
        }
        let limits: Vec<f32> = amax
            .iter()
            .zip(&best_ratio)
            .map(|(&m, &r)| (m as f64 * r) as f32)
            .collect();
        self.candidate(
            weight,
            w,
            Some(gram),
            &unclipped.s,
            Some((&limits, run)),
            Some(calib),
        )
    }
}

/// One quantization tried by the search.
struct Candidate {
    tensor: QuantizedTensor,
    s: Vec<f16>,
    /// Effective weight − W, row-major f64.
    delta: Vec<f64>,
    error: f64,
    alpha: f64,
}

/// `Ŵ_eff − W` in f64.
fn delta(tensor: &QuantizedTensor, w: &HostWeight) -> Result<Vec<f64>> {
    let eff = tensor
        .dequantize_to(&Device::Cpu, DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok(eff
        .iter()
        .zip(&w.values)
        .map(|(&a, &b)| a as f64 - b as f64)
        .collect())
}

/// `max(mean^α, 1e-4)`, divided by `√(max · min)`, rounded to f16.
fn awq_scales(mean: &[f32], alpha: f64) -> Vec<f16> {
    let raw: Vec<f64> = mean
        .iter()
        .map(|&m| (m as f64).powf(alpha).max(1e-4))
        .collect();
    let (lo, hi) = raw
        .iter()
        .fold((f64::INFINITY, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let norm = (lo * hi).sqrt();
    round_scales(&raw.iter().map(|v| v / norm).collect::<Vec<_>>())
}

impl Quantizer for AwqQuantizer {
    fn config(&self) -> serde_json::Value {
        let mut config = super::quantizer::debug_config(self);
        config["base"] = self.base.config();
        config
    }

    /// `awq-{base}` by default; `-a{α}` for a fixed α, `-n{points}` for another grid,
    /// `-noclip` without clipping search, `-clip{n}x{shrink}` for another clipping grid.
    fn name(&self) -> String {
        let mut name = "awq".to_string();
        match self.alphas {
            AlphaGrid::Points(DEFAULT_POINTS) => {}
            AlphaGrid::Points(n) => name.push_str(&format!("-n{n}")),
            AlphaGrid::Fixed(a) => name.push_str(&format!("-a{a}")),
        }
        match self.clip {
            None => name.push_str("-noclip"),
            Some(c) if c == DEFAULT_CLIP => {}
            Some(c) => name.push_str(&format!("-clip{}x{}", c.n_grid, c.max_shrink)),
        }
        format!("{name}-{}", self.base.name())
    }

    /// AWQ needs the layer's [`Calibration`]: `None` is an error.
    fn quantize(&self, weight: &Tensor, calib: Option<&Calibration>) -> Result<QuantizedTensor> {
        let Some(calib) = calib else {
            return Err(missing_calibration(&self.name()));
        };
        Ok(self.search(weight, calib)?.tensor)
    }

    fn uses_calibration(&self) -> bool {
        true
    }
}

/// The error of a data-aware quantizer called without calibration.
pub(crate) fn missing_calibration(name: &str) -> Error {
    Error::InvalidParameter {
        name: "calibration",
        reason: format!(
            "{name} needs the layer's input statistics: pass Some(&Calibration) (captured with \
             CaptureInputs, or by SequentialQuantization with .calibration(batches))"
        ),
    }
}
