//! # quantlens
//!
//! Quantize [Candle](https://docs.rs/candle-core) tensors and models, and measure what
//! quantization does beyond accuracy: how much a model leaks about its training data
//! (membership inference), how it reacts to perturbation, and how faithful its explanations
//! stay.
//!
//! The crate is built around four small, object-safe traits over [`candle_core::Tensor`]:
//!
//! | trait | does | in this release |
//! |---|---|---|
//! | [`Quantizer`] | weight → [`QuantizedTensor`] (packed codes + scales or codebooks) | [`UniformQuantizer`] (RTN at 1–8 bits, any granularity, nearest or stochastic), [`Nf4Quantizer`], [`KMeansQuantizer`], [`CompandingQuantizer`], [`TernaryQuantizer`], [`FloatQuantizer`] (FP8, FP4, MXFP8/MXFP4), [`AffineQuantizer`], [`ActivationQuantizer`]; calibrated: [`GptqQuantizer`], [`AwqQuantizer`], [`SmoothQuantizer`], [`quant::NullSpaceRefine`] |
//! | [`Perturbation`] | seeded noise on weights or activations | [`Noise`] (Gaussian/uniform/Rademacher, magnitude-shaped, norm-anchored to a quantizer), [`StepNoise`], [`CodeFlips`], [`Clip`]; [`perturb::perturbation_equivalence`] |
//! | [`LossProbe`] | model outputs → one loss per sample | [`CrossEntropy`] (fused CPU kernel), [`SequenceNll`], [`SquaredError`] |
//! | [`MisEstimator`] | member / non-member losses → MIS = 1 − advantage | [`LossThreshold`] (with AUC, TPR@FPR, bootstrap/DKW intervals), [`SmoothedTv`]; plus [`mis::Lira`], [`mis::Rmia`], DP ε audits, ranking, the experimental [`mis::MisIndicator`] |
//!
//! Around them: [`model`] (the [`model::QuantizableModel`] trait; an MLP, a Llama-family decoder
//! that loads SmolLM2 from GGUF or trains from scratch, a BERT encoder for all-MiniLM-L6-v2;
//! seeded training, forward hooks, sequential whole-model quantization, perplexity, embedding
//! similarity), [`text`] (tokenizers, the Python-docs corpus, token windows), [`data`]
//! (embedded digits, scikit-learn tables, B3DB molecules, standardisation fitted on members
//! only, membership splits), [`io`] (GGUF and safetensors, bit-compatible with Candle's
//! reader for Q4_0/Q4_1/Q8_0), [`explain`] (attributions, their agreement and faithfulness,
//! counterfactuals, fact recall, neuron contributions, logit lens) and [`audit`] (the
//! headline workflow: a model × quantizers and perturbations → a privacy–utility report with
//! provenance, JSON/CSV/Markdown/SVG, shards, resume).
//!
//! ```text
//! weights ─► Quantizer ─► QuantizedTensor ─► dequantize ─► model ─► LossProbe ─► MisEstimator
//! ```
//!
//! ## A membership experiment in a few lines
//!
//! ```
//! use candle_core::Device;
//! use quantlens::data::{self, MembershipSplit, Standardizer};
//! use quantlens::mis::{Bootstrap, LossThreshold, MisEstimator};
//! use quantlens::model::{Mlp, MlpConfig, QuantizableModel, SequentialQuantization, TrainConfig, train};
//! use quantlens::{CrossEntropy, LossProbe, MembershipSample, QuantSpec, UniformQuantizer};
//!
//! let dev = Device::Cpu;
//! let digits = data::digits()?;
//! let split = MembershipSplit::builder(digits.len()).seed(1).build()?;
//! let z = Standardizer::fit(&digits, split.members())?.transform(&digits)?;
//! let (x_in, y_in) = z.select(split.members())?.to_tensors(&dev)?;
//! let (x_out, y_out) = z.select(split.non_members())?.to_tensors(&dev)?;
//!
//! let mut mlp = Mlp::new(MlpConfig::new(z.n_features(), &[64], 10), 1, &dev)?;
//! train(&mut mlp, (&x_in, &y_in), None, &TrainConfig::new(5, 1))?;
//! let rtn = UniformQuantizer::new(QuantSpec::int4().per_channel())?;
//! SequentialQuantization::new(&rtn).run(&mut mlp)?;
//!
//! let losses = |x, y| -> quantlens::Result<Vec<f64>> {
//!     let l = CrossEntropy::new().per_sample_losses(&mlp.forward(x)?, y)?;
//!     Ok(l.to_vec1::<f32>()?.into_iter().map(f64::from).collect())
//! };
//! let sample = MembershipSample::new(losses(&x_in, &y_in)?, losses(&x_out, &y_out)?)?;
//! let est = LossThreshold::new().with_fprs(&[0.01]).with_bootstrap(Bootstrap::new(200, 0.95, 1)?).estimate(&sample)?;
//! println!("{est}"); // MIS 0.9… [.., ..] | advantage … | AUC … | TPR@1% … | n = 898 members, 899 non-members
//! assert!(est.mis > 0.0 && est.mis <= 1.0);
//! # Ok::<(), quantlens::Error>(())
//! ```
//!
//! ## Quantizing a weight
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use quantlens::{QuantSpec, Quantizer, UniformQuantizer};
//!
//! let w = Tensor::randn(0f32, 0.02, (256, 512), &Device::Cpu)?;
//! let int4 = UniformQuantizer::new(QuantSpec::int4().per_group(128).asymmetric())?;
//! let qt = int4.quantize(&w, None)?;
//!
//! // Real packing: two codes a byte, one f16 scale and one 4-bit zero point per group.
//! let groups = 256 * 512 / 128;
//! assert_eq!(qt.storage_bytes(), 256 * 512 / 2 + groups * 2 + groups / 2);
//! println!("{}: {:.3} bits/weight", int4.name(), qt.bits_per_weight()); // 4.156
//!
//! // Round to nearest: every weight within half a step of its group's grid.
//! let w_hat = qt.dequantize(&Device::Cpu)?;
//! let worst = (&w - &w_hat)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! let max_step = qt.scales().to_f32_vec().into_iter().fold(0f32, f32::max);
//! assert!(worst <= 0.5 * max_step * 1.0001);
//! # Ok::<(), quantlens::Error>(())
//! ```
//!
//! ## Conventions
//!
//! Weights are `[out_features, in_features]`; groups run along `in_features`. For `b` bits,
//! symmetric: `scale = absmax / (2^(b−1) − 1)`; asymmetric: `scale = (max − min) / (2^b − 1)`
//! over the group's range widened to include 0, `zero = round(−min / scale)`; codes
//! `q = clamp(round(w / scale) + zero, 0, 2^b − 1)` with ties to even; value `scale · (q − zero)`.
//! Scales are stored in f16 by default (rounded up, so the grid still covers the group).
//! `storage_bytes()` counts codes, scales and zero points.
//!
//! ## Errors
//!
//! Every fallible call returns [`Result`] with the single [`enum@Error`] type. Bad input — a
//! bit width out of range, a group size that does not divide `in_features`, a tensor that is
//! not a matrix, an empty tensor, an integer dtype, NaN or ±Inf weights — is an error that
//! names it, never a panic.
//!
//! ## Backends
//!
//! Hot loops are dispatched on the tensor's [`candle_core::Device`] (module `kernels`): the CPU
//! kernels use every core (rayon) and vectorise (AVX2 picked at run time). The `cuda` feature
//! (off by default; nvcc at build time, see `docs/cuda.md` in the repository) adds a CUDA
//! backend for tensors on `Device::Cuda`:
//!
//! - dequantization of every format, bit for bit the CPU's values;
//! - round-to-nearest uniform quantization (2–8 bits), with the CPU's codes and scales;
//! - the fused per-sample cross-entropy behind `CrossEntropy` probes;
//! - `CudaQuantizedWeight`, a device-resident int4 weight with a fused dequantize-matmul.
//!
//! The other quantizers (GPTQ, AWQ, codebooks, float formats) still run on the host: given a
//! GPU tensor they return [`Error::UnsupportedDevice`], whose hint says to move it with
//! `.to_device(&Device::Cpu)`. Without the feature, dequantizing *to* a GPU decodes on the
//! host and uploads.
//!
//! ## Testing your own quantizer
//!
//! With the `testing` feature, `quantlens::testing` offers proptest strategies for weight
//! matrices (outliers, constant rows, tiny and huge magnitudes) and a conformance suite any
//! [`Quantizer`] can run in its own tests.
//!
//! ## Not yet
//!
//! CUDA quantize kernels for NF4 and the float formats, and a 4-bit GEMV that reaches its
//! speed target; see `docs/status.md` in the repository.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

pub mod audit;
pub mod data;
pub mod error;
pub mod explain;
pub mod io;
pub(crate) mod kernels;
pub mod mis;
pub mod model;
pub mod perturb;
pub mod probe;
pub mod quant;
pub mod rng;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
pub mod text;

pub use error::{Error, Result};
pub use mis::{Interval, MembershipSample, MisEstimate, MisEstimator};
pub use mis::{LossThreshold, Roc, SmoothedTv};
pub use perturb::{Clip, CodeFlips, Noise, Perturbation, StepNoise};
pub use probe::{CrossEntropy, LossProbe, SequenceNll, SquaredError};
pub use quant::{ActivationFormat, ActivationQuantizer, FloatQuantizer};
pub use quant::{
    AffineQuantizer, Calibration, Codebook, CompandingQuantizer, DoubleQuantScales, FloatFormat,
    Granularity, KMeansQuantizer, LevelStorage, NF4_LEVELS, Nf4Quantizer, PackedCodes, QuantFormat,
    QuantSpec, QuantizedParts, QuantizedTensor, Quantizer, Rounding, ScaleDType, Scales,
    TernaryQuantizer, UniformQuantizer,
};
pub use quant::{AwqQuantizer, SmoothQuantizer};
pub use quant::{GptqQuantizer, GptqReport};

/// CUDA kernels with a public entry point (feature `cuda`): the device-resident 4-bit weight
/// with its fused matmul, and the fused per-sample cross-entropy.
#[cfg(feature = "cuda")]
pub use kernels::cuda::{
    CudaQuantizedWeight, PendingLosses, PendingQuantize, cross_entropy_per_sample,
    cross_entropy_per_sample_deferred,
};
