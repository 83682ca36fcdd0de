//! Lloyd–Max (1-D k-means) codebooks fitted to the weights, per tensor, channel or group.

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::kernels::cpu::table::{absmax_scale, check_finite, encode_groups_f32};
use crate::quant::calibration::Calibration;
use crate::quant::codebook::{Codebook, LevelStorage, encode_nearest};
use crate::quant::packing::PackedCodes;
use crate::quant::quantizer::Quantizer;
use crate::quant::scales::Scales;
use crate::quant::spec::{Granularity, ScaleDType};
use crate::quant::tensor::{QuantFormat, QuantizedParts, QuantizedTensor};
use crate::quant::uniform::check_weight_matrix;
use crate::rng::SplitMix64;

/// How Lloyd's iteration is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KMeansInit {
    /// k-means++ seeding (Arthur & Vassilvitskii 2007): each next centroid drawn with
    /// probability proportional to the squared distance to the nearest one chosen so far.
    PlusPlus {
        /// Seed of the draws (each codebook draws from its own stream derived from it).
        seed: u64,
    },
    /// Centroids at the `(i + ½)/k` quantiles of the values: deterministic, no seed.
    Quantiles,
}

/// Options of a 1-D Lloyd–Max fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LloydMax {
    /// Starting centroids.
    pub init: KMeansInit,
    /// Stop after this many iterations at most.
    pub max_iterations: usize,
    /// Stop when no centroid moves by more than this fraction of the values' range.
    pub tolerance: f64,
}

impl Default for LloydMax {
    /// k-means++ with seed 0, at most 100 iterations, tolerance 1e-6.
    fn default() -> Self {
        LloydMax {
            init: KMeansInit::PlusPlus { seed: 0 },
            max_iterations: 100,
            tolerance: 1e-6,
        }
    }
}

impl LloydMax {
    /// Fit `k` levels to `values` (minimising the squared error of nearest-level rounding).
    /// (The quantizer fits a weighted variant: see [`KMeansQuantizer`].)
    ///
    /// The 1-D algorithm: values are sorted once with prefix sums, so each iteration finds the
    /// cells (between midpoints of adjacent centroids) by binary search and their means in
    /// O(1) each — O(k log n) per iteration after an O(n log n) sort, rather than the O(nk) of
    /// generic k-means. An empty cell keeps its centroid. Returns the `k` centroids ascending
    /// (repeated when the values have fewer than `k` distinct points).
    ///
    /// ```
    /// use quantlens::quant::kmeans::{KMeansInit, LloydMax};
    /// let x = [0.0f32, 0.1, 0.2, 10.0, 10.1, 10.2];
    /// let fit = LloydMax { init: KMeansInit::Quantiles, ..LloydMax::default() };
    /// let c = fit.fit(&x, 2)?;
    /// assert!((c[0] - 0.1).abs() < 1e-6 && (c[1] - 10.1).abs() < 1e-5);
    /// # Ok::<(), quantlens::Error>(())
    /// ```
    pub fn fit(&self, values: &[f32], k: usize) -> Result<Vec<f32>> {
        if values.is_empty() {
            return Err(Error::TooFewSamples {
                what: "k-means values",
                got: 0,
                needed: 1,
            });
        }
        if k == 0 {
            return Err(Error::InvalidParameter {
                name: "k",
                reason: "at least one level is needed".into(),
            });
        }
        if self.tolerance.is_nan() || self.tolerance < 0.0 {
            return Err(Error::InvalidParameter {
                name: "tolerance",
                reason: format!("must be ≥ 0, got {}", self.tolerance),
            });
        }
        check_finite(values)?;
        let mut points: Vec<(f64, f64)> = values.iter().map(|&v| (v as f64, 1.0)).collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(fit_sorted(&points, k, self)
            .into_iter()
            .map(|c| c as f32)
            .collect())
    }
}

/// Weighted Lloyd–Max on points ascending by value (finite values, positive total weight
/// unless all weights are 0, which is treated as equal weights).
fn fit_sorted(points: &[(f64, f64)], k: usize, opts: &LloydMax) -> Vec<f64> {
    let n = points.len();
    let total_w: f64 = points.iter().map(|p| p.1).sum();
    let uniform = total_w.is_nan() || total_w <= 0.0;
    let weight = |p: &(f64, f64)| if uniform { 1.0 } else { p.1 };
    // Prefix sums of w and w·x: the weighted mean of any run of sorted points in O(1).
    let (mut pw, mut pwx) = (Vec::with_capacity(n + 1), Vec::with_capacity(n + 1));
    pw.push(0.0);
    pwx.push(0.0);
    let (mut aw, mut awx) = (0.0, 0.0);
    for p in points {
        aw += weight(p);
        awx += weight(p) * p.0;
        pw.push(aw);
        pwx.push(awx);
    }
    let mut c: Vec<f64> = match opts.init {
        KMeansInit::Quantiles => (0..k)
            .map(|i| {
                // The point where the cumulative weight passes the (i + ½)/k quantile.
                let target = (i as f64 + 0.5) / k as f64 * aw;
                let j = pw[1..].partition_point(|&c| c <= target).min(n - 1);
                points[j].0
            })
            .collect(),
        KMeansInit::PlusPlus { seed } => plus_plus(points, &weight, k, seed),
    };
    c.sort_by(f64::total_cmp);
    let range = points[n - 1].0 - points[0].0;
    for _ in 0..opts.max_iterations {
        let mut moved = 0f64;
        let mut lo = 0;
        let mut next = c.clone();
        for j in 0..k {
            // Cell j: values above the midpoint with c[j−1] and at or below the one with c[j+1]
            // (ties to the lower level, as the encoder rounds).
            let hi = if j + 1 < k {
                let mid = 0.5 * (c[j] + c[j + 1]);
                points.partition_point(|p| p.0 <= mid)
            } else {
                n
            };
            let hi = hi.max(lo);
            let w = pw[hi] - pw[lo];
            if w > 0.0 {
                next[j] = (pwx[hi] - pwx[lo]) / w;
            }
            moved = moved.max((next[j] - c[j]).abs());
            lo = hi;
        }
        c = next;
        c.sort_by(f64::total_cmp);
        if moved <= opts.tolerance * range {
            break;
        }
    }
    c
}

/// Weighted k-means++ seeding in 1-D, O(n·k).
fn plus_plus(
    points: &[(f64, f64)],
    weight: &dyn Fn(&(f64, f64)) -> f64,
    k: usize,
    seed: u64,
) -> Vec<f64> {
    let n = points.len();
    let mut rng = SplitMix64::new(seed);
    // The first centre is drawn in proportion to weight, the next ones to weight · D².
    let draw = |rng: &mut SplitMix64, mass: &dyn Fn(usize) -> f64| -> Option<usize> {
        let total: f64 = (0..n).map(mass).sum();
        if total.is_nan() || total <= 0.0 {
            return None;
        }
        let target = rng.next_f64() * total;
        let mut acc = 0.0;
        for i in 0..n {
            acc += mass(i);
            if acc > target {
                return Some(i);
            }
        }
        Some(n - 1)
    };
    let first = points[draw(&mut rng, &|i| weight(&points[i])).unwrap_or(0)].0;
    let mut centers = vec![first];
    let mut d2: Vec<f64> = points.iter().map(|p| (p.0 - first).powi(2)).collect();
    while centers.len() < k {
        // Fewer distinct values than levels: repeat one.
        let next = match draw(&mut rng, &|i| weight(&points[i]) * d2[i]) {
            Some(i) => points[i].0,
            None => first,
        };
        centers.push(next);
        for (d, p) in d2.iter_mut().zip(points) {
            *d = d.min((p.0 - next).powi(2));
        }
    }
    centers
}

/// Non-uniform quantization with codebooks fitted by Lloyd–Max (1-D k-means) to the weights.
///
/// Each codebook of `2^bits` levels serves a run of weights (the whole tensor, an output
/// channel — SqueezeLLM's choice, the default — or a group). Within it, weights are first
/// divided by an absmax scale per *scale group* (the codebook's run by default; finer with
/// [`scaled_per_group`](Self::scaled_per_group), so one shared table serves many small
/// groups), the table is fitted to the normalised values — each weighted by its scale
/// squared, so the fit minimises the squared error in the weights themselves — and each
/// weight is rounded to the level nearest to it as decoded. Levels are stored (f16 by default) and counted in
/// [`QuantizedTensor::bits_per_weight`]: per-group tables are accurate but cost
/// `2^bits · 16 / group` extra bits per weight.
///
/// Error bound: nearest level of the group's decoded table
/// ([`ErrorBound::NearestLevel`](crate::testing::ErrorBound)).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::{KMeansQuantizer, Quantizer};
///
/// let w = Tensor::randn(0f32, 1.0, (64, 1024), &Device::Cpu)?;
/// // One 16-level table for the tensor, one absmax scale per 128 weights.
/// let q = KMeansQuantizer::new(4)?.per_tensor().scaled_per_group(128).seed(7);
/// let qt = q.quantize(&w, None)?;
/// assert_eq!(q.name(), "kmeans-w4-t-s128-seed7");
/// assert!(qt.bits_per_weight() < 4.14);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KMeansQuantizer {
    bits: u8,
    codebook: Granularity,
    scale_group: Option<usize>,
    scale_dtype: ScaleDType,
    levels: LevelStorage,
    fit: LloydMax,
}

impl KMeansQuantizer {
    /// `2^bits` levels (bits 1..=8), one codebook and one scale per output channel, f16
    /// levels and scales, k-means++ seed 0.
    pub fn new(bits: u8) -> Result<Self> {
        if !(1..=8).contains(&bits) {
            return Err(Error::InvalidBits {
                bits,
                min: 1,
                max: 8,
                scheme: "k-means codebook",
            });
        }
        Ok(KMeansQuantizer {
            bits,
            codebook: Granularity::PerChannel,
            scale_group: None,
            scale_dtype: ScaleDType::F16,
            levels: LevelStorage::F16,
            fit: LloydMax::default(),
        })
    }
    /// One codebook for the whole tensor.
    pub fn per_tensor(mut self) -> Self {
        self.codebook = Granularity::PerTensor;
        self
    }
    /// One codebook per output channel.
    pub fn per_channel(mut self) -> Self {
        self.codebook = Granularity::PerChannel;
        self
    }
    /// One codebook per `n` weights along `in_features`.
    pub fn per_group(mut self, n: usize) -> Self {
        self.codebook = Granularity::PerGroup(n);
        self
    }
    /// Normalise by an absmax scale per `n` weights inside each codebook's run (`n` must
    /// divide it).
    pub fn scaled_per_group(mut self, n: usize) -> Self {
        self.scale_group = Some(n);
        self
    }
    /// Storage dtype of the scales (rounded up, so every weight lies inside its grid).
    pub fn with_scale_dtype(mut self, dtype: ScaleDType) -> Self {
        self.scale_dtype = dtype;
        self
    }
    /// How the fitted levels are stored (f16 or f32; `Implicit` is refused at quantize time,
    /// fitted levels must be stored).
    pub fn with_level_storage(mut self, storage: LevelStorage) -> Self {
        self.levels = storage;
        self
    }
    /// Seed of k-means++ (switches to k-means++ initialisation).
    pub fn seed(mut self, seed: u64) -> Self {
        self.fit.init = KMeansInit::PlusPlus { seed };
        self
    }
    /// Fit options (initialisation, iteration cap, tolerance).
    pub fn with_fit(mut self, fit: LloydMax) -> Self {
        self.fit = fit;
        self
    }

    fn lengths(&self, rows: usize, cols: usize) -> Result<(usize, usize)> {
        let table_len = self.codebook.group_len(rows, cols)?;
        let scale_len = match self.scale_group {
            None => table_len,
            Some(n) => {
                let n = Granularity::PerGroup(n).group_len(rows, cols)?;
                if !table_len.is_multiple_of(n) {
                    return Err(Error::InvalidParameter {
                        name: "scaled_per_group",
                        reason: format!(
                            "scale groups of {n} do not tile codebook runs of {table_len}"
                        ),
                    });
                }
                n
            }
        };
        Ok((table_len, scale_len))
    }
}

impl Quantizer for KMeansQuantizer {
    fn config(&self) -> serde_json::Value {
        super::quantizer::debug_config(self)
    }

    fn name(&self) -> String {
        let mut name = format!("kmeans-w{}-{}", self.bits, self.codebook.tag());
        if let Some(n) = self.scale_group {
            name.push_str(&format!("-s{n}"));
        }
        match self.fit.init {
            KMeansInit::PlusPlus { seed } => name.push_str(&format!("-seed{seed}")),
            KMeansInit::Quantiles => name.push_str("-quantile"),
        }
        if self.levels == LevelStorage::F32 {
            name.push_str("-l32");
        }
        name
    }

    fn quantize(&self, weight: &Tensor, _calib: Option<&Calibration>) -> Result<QuantizedTensor> {
        let (rows, cols) = check_weight_matrix(weight)?;
        let (run_len, scale_len) = self.lengths(rows, cols)?;
        if self.levels == LevelStorage::Implicit {
            return Err(Error::InvalidParameter {
                name: "level storage",
                reason: "fitted levels must be stored (F16 or F32)".into(),
            });
        }
        let x = weight
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        check_finite(&x)?;
        let dtype = self.scale_dtype;
        let scales: Vec<f32> = x
            .chunks(scale_len)
            .enumerate()
            .map(|(g, v)| absmax_scale(g, v, dtype))
            .collect::<Result<_>>()?;
        let k = 1usize << self.bits;
        let per_run = run_len / scale_len;
        // Fit each run's table to its values divided by their scale, in parallel; each run
        // draws from its own seed so the result does not depend on thread count.
        let tables: Vec<Vec<f32>> = x
            .par_chunks(run_len)
            .enumerate()
            .map(|(t, run)| {
                // Rounding u = w/s to level c costs s²·(u − c)² in the weight: each normalised
                // value is weighted by its scale squared, so groups with large weights get
                // the levels they need (unweighted, the many small-scale groups would win).
                let mut u: Vec<(f64, f64)> = run
                    .chunks(scale_len)
                    .zip(&scales[t * per_run..(t + 1) * per_run])
                    .flat_map(|(v, &s)| {
                        let s = s as f64;
                        v.iter().map(move |&w| {
                            if s > 0.0 {
                                (w as f64 / s, s * s)
                            } else {
                                (0.0, 0.0)
                            }
                        })
                    })
                    .collect();
                u.sort_by(|a, b| a.0.total_cmp(&b.0));
                let mut fit = self.fit;
                if let KMeansInit::PlusPlus { seed } = fit.init {
                    fit.init = KMeansInit::PlusPlus {
                        seed: crate::rng::nth(seed, t as u64),
                    };
                }
                fit_sorted(&u, k, &fit)
                    .into_iter()
                    .map(|c| c as f32)
                    .collect()
            })
            .collect();
        let codebook = Codebook::new(tables.concat(), k, self.levels)?;
        let encoded = encode_groups_f32(&x, scale_len, |g, v, codes| {
            let table = codebook.table(g / per_run);
            encode_nearest(scales[g], table, v, codes);
            Ok(scales[g])
        })?;
        QuantizedTensor::assemble(
            QuantizedParts::new(
                vec![rows, cols],
                weight.dtype(),
                QuantFormat::Codebook { bits: self.bits },
                scale_len,
                PackedCodes::pack_trusted(&encoded.codes, self.bits)?,
                Scales::from_f32(scales, dtype),
            )
            .with_codebook(codebook),
        )
    }
}
