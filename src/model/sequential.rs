//! Whole-model quantization, layer by layer in execution order (GPTQ-style sequential
//! calibration: each layer is calibrated on the inputs produced by the already-quantized
//! layers before it).

use std::collections::BTreeMap;

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::model::blocks::{BlockChain, BlockState};
use crate::model::hooks::{CaptureInputs, LayerFilter, NoHooks, StopAfter};
use crate::model::{LayerWeight, QuantizableModel};
use crate::quant::{Calibration, Quantizer};

/// How a quantized layer is stored back into the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreAs {
    /// Packed codes, dequantized at every forward pass: the deployed memory footprint.
    #[default]
    Packed,
    /// The dequantized ("fake-quantized") dense weight: same numbers, faster repeated
    /// evaluation.
    FakeQuantized,
}

/// Which inputs a data-aware quantizer is calibrated on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CalibrationMode {
    /// Each stage on the inputs produced by the already-quantized stages before it (GPTQ's
    /// recipe: later layers see, and correct for, earlier layers' errors). Costs one
    /// (truncated) forward pass of the calibration batches per stage; for a model that is a
    /// [`BlockChain`] (Llama, BERT), the inputs of each block are cached and a stage runs its
    /// block alone, with the same result.
    #[default]
    Sequential,
    /// Every stage on the full-precision model's inputs, captured in one forward pass before
    /// any layer changes: far cheaper on deep models (one pass instead of one per stage),
    /// but each layer is blind to the errors of the layers before it.
    FullPrecision,
}

/// What happened to one layer.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LayerReport {
    /// Position among the layers being quantized (0-based).
    pub index: usize,
    /// How many layers are being quantized.
    pub total: usize,
    /// The layer's name.
    pub name: String,
    /// `[out_features, in_features]`.
    pub shape: (usize, usize),
    /// Storage of the quantized weight, including scales and zero points.
    pub storage_bytes: usize,
    /// `storage_bytes · 8 / (out · in)`.
    pub bits_per_weight: f64,
    /// `‖W − Ŵ‖_F / ‖W‖_F` (0 for an all-zero weight).
    pub relative_error: f64,
    /// Calibration rows (tokens or examples) behind the layer's statistics; 0 for a data-free
    /// quantizer.
    pub calibration_rows: usize,
}

/// What a [`SequentialQuantization`] run did, layer by layer.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct QuantizationReport {
    /// The quantizer's name.
    pub quantizer: String,
    /// One entry per quantized layer, in the order they were quantized.
    pub layers: Vec<LayerReport>,
}

impl QuantizationReport {
    /// Bytes of all quantized layers.
    pub fn storage_bytes(&self) -> usize {
        self.layers.iter().map(|l| l.storage_bytes).sum()
    }

    /// Average bits per weight over all quantized layers.
    pub fn bits_per_weight(&self) -> f64 {
        let weights: usize = self.layers.iter().map(|l| l.shape.0 * l.shape.1).sum();
        if weights == 0 {
            return 0.0;
        }
        self.storage_bytes() as f64 * 8.0 / weights as f64
    }
}

/// Quantizes a [`QuantizableModel`] stage by stage in execution order.
///
/// For a data-aware quantizer ([`Quantizer::uses_calibration`]), each stage's calibration
/// statistics are captured by forward passes of the calibration batches through the model *as
/// it is at that moment* — earlier layers already quantized — and the pass stops as soon as the
/// stage's inputs have been seen. Data-free quantizers skip the passes, so the result equals
/// quantizing every layer on its own.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::model::{Mlp, MlpConfig, QuantizableModel, SequentialQuantization};
/// use quantlens::{QuantSpec, UniformQuantizer};
///
/// let mut mlp = Mlp::new(MlpConfig::new(8, &[16], 3), 7, &Device::Cpu)?;
/// let rtn = UniformQuantizer::new(QuantSpec::int4().per_group(8))?;
/// let mut seen = Vec::new();
/// let report = SequentialQuantization::new(&rtn)
///     .on_progress(|layer| seen.push(layer.name.clone()))
///     .run(&mut mlp)?;
/// assert_eq!(seen, ["layers.0", "layers.1"]);
/// assert!(report.bits_per_weight() < 8.0);
/// # Ok::<(), quantlens::Error>(())
/// ```
pub struct SequentialQuantization<'a> {
    quantizer: &'a dyn Quantizer,
    calibration: Vec<Tensor>,
    filter: LayerFilter,
    store: StoreAs,
    mode: CalibrationMode,
    progress: Option<ProgressFn<'a>>,
}

/// The progress callback: called with each layer's report once it is quantized.
type ProgressFn<'a> = Box<dyn FnMut(&LayerReport) + 'a>;

impl<'a> SequentialQuantization<'a> {
    /// Quantize every linear layer with `quantizer`, stored packed.
    pub fn new(quantizer: &'a dyn Quantizer) -> Self {
        SequentialQuantization {
            quantizer,
            calibration: Vec::new(),
            filter: LayerFilter::All,
            store: StoreAs::Packed,
            mode: CalibrationMode::Sequential,
            progress: None,
        }
    }

    /// Model inputs (one tensor per batch) for data-aware quantizers.
    pub fn calibration(mut self, batches: impl IntoIterator<Item = Tensor>) -> Self {
        self.calibration = batches.into_iter().collect();
        self
    }

    /// Quantize only some layers (e.g. `LayerFilter::Except(vec!["lm_head".into()])`).
    pub fn layers(mut self, filter: LayerFilter) -> Self {
        self.filter = filter;
        self
    }

    /// Packed (default) or fake-quantized storage.
    pub fn store_as(mut self, store: StoreAs) -> Self {
        self.store = store;
        self
    }

    /// Calibrate sequentially (default) or on the full-precision model's inputs.
    pub fn calibration_mode(mut self, mode: CalibrationMode) -> Self {
        self.mode = mode;
        self
    }

    /// Called after each layer is quantized.
    pub fn on_progress(mut self, f: impl FnMut(&LayerReport) + 'a) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    /// Quantize `model` in place.
    pub fn run<M: QuantizableModel + ?Sized>(
        mut self,
        model: &mut M,
    ) -> Result<QuantizationReport> {
        let names = model.layer_names();
        if let LayerFilter::Only(wanted) | LayerFilter::Except(wanted) = &self.filter
            && let Some(missing) = wanted.iter().find(|w| !names.contains(w))
        {
            return Err(super::unknown_layer(missing, &names));
        }
        let stages: Vec<Vec<String>> = model
            .quantization_stages()
            .into_iter()
            .map(|stage| {
                stage
                    .into_iter()
                    .filter(|n| self.filter.matches(n))
                    .collect::<Vec<_>>()
            })
            .filter(|stage| !stage.is_empty())
            .collect();
        let total = stages.iter().map(Vec::len).sum();
        let data_aware = self.quantizer.uses_calibration();
        if data_aware && self.calibration.is_empty() {
            return Err(Error::InvalidParameter {
                name: "calibration",
                reason: format!(
                    "{} uses calibration data; pass model inputs with .calibration(batches)",
                    self.quantizer.name()
                ),
            });
        }

        let mut report = QuantizationReport {
            quantizer: self.quantizer.name(),
            layers: Vec::with_capacity(total),
        };
        let upfront = if data_aware && self.mode == CalibrationMode::FullPrecision {
            let all: Vec<String> = stages.iter().flatten().cloned().collect();
            densify_smoothed(model, &all)?;
            Some(self.capture(model, &all, false)?)
        } else {
            None
        };
        // Block-wise calibration where the model allows it: stage s lies in block plan[s].
        let plan = match (&upfront, model.as_block_chain()) {
            (None, Some(chain)) if data_aware => block_plan(chain, &stages),
            _ => None,
        };
        let mut cache: Option<BlockInputs> = None;
        for (s, stage) in stages.iter().enumerate() {
            if data_aware && upfront.is_none() {
                densify_smoothed(model, stage)?;
            }
            let staged;
            let calibrations = match &upfront {
                Some(all) => all,
                None if data_aware => {
                    staged = match (&plan, model.as_block_chain()) {
                        (Some(plan), Some(chain)) => {
                            let inputs = match cache.take() {
                                Some(inputs) => inputs,
                                None => BlockInputs::new(chain, &self.calibration)?,
                            };
                            let inputs = cache.insert(inputs.advance_to(chain, plan[s])?);
                            inputs.capture(chain, stage)?
                        }
                        _ => self.capture(model, stage, true)?,
                    };
                    &staged
                }
                None => {
                    staged = Default::default();
                    &staged
                }
            };
            for name in stage {
                let layer = model.linear_layer(name)?;
                let weight = match layer.weight() {
                    LayerWeight::Dense(t) => t.clone(),
                    LayerWeight::Packed(_) => layer.dense_weight()?,
                };
                let calib = calibrations.get(name);
                if data_aware && calib.is_none() {
                    return Err(Error::Unsupported(format!(
                        "layer {name} never ran during the calibration forward passes"
                    )));
                }
                let q = self.quantizer.quantize(&weight, calib)?;
                let fake = q.dequantize(weight.device())?;
                let relative_error = crate::quant::reconstruction::relative_error(&weight, &fake)?;
                let entry = LayerReport {
                    index: report.layers.len(),
                    total,
                    name: name.clone(),
                    shape: (layer.out_features(), layer.in_features()),
                    storage_bytes: q.storage_bytes(),
                    bits_per_weight: q.bits_per_weight(),
                    relative_error,
                    calibration_rows: calib.map_or(0, |c| c.samples()),
                };
                let new_weight = match self.store {
                    StoreAs::Packed => LayerWeight::Packed(Box::new(q)),
                    StoreAs::FakeQuantized => LayerWeight::Dense(fake),
                };
                model.set_weight(name, new_weight)?;
                if let Some(progress) = self.progress.as_mut() {
                    progress(&entry);
                }
                report.layers.push(entry);
            }
        }
        Ok(report)
    }

    /// Calibration statistics of the `layers`' inputs over every calibration batch; with
    /// `stop_early` each pass ends once all of them have run.
    fn capture<M: QuantizableModel + ?Sized>(
        &self,
        model: &M,
        layers: &[String],
        stop_early: bool,
    ) -> Result<BTreeMap<String, Calibration>> {
        let mut capture = CaptureInputs::new(LayerFilter::Only(layers.to_vec()));
        for batch in &self.calibration {
            let outcome = if stop_early {
                model.forward_hooked(batch, &mut (&mut capture, StopAfter::new(layers)))
            } else {
                model.forward_hooked(batch, &mut capture)
            };
            match outcome {
                Ok(_) | Err(Error::ForwardStopped { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(capture.into_calibrations())
    }
}

/// For each stage, the block that runs all of its layers, if blocks are visited in order;
/// `None` when some stage does not lie in one block (the prefix path then handles every stage).
fn block_plan(chain: &dyn BlockChain, stages: &[Vec<String>]) -> Option<Vec<usize>> {
    let blocks: Vec<Vec<String>> = (0..chain.block_count())
        .map(|b| chain.block_layers(b))
        .collect();
    let mut plan = Vec::with_capacity(stages.len());
    for stage in stages {
        let b = blocks
            .iter()
            .position(|layers| stage.iter().all(|n| layers.contains(n)))?;
        if plan.last().is_some_and(|&last| b < last) {
            return None;
        }
        plan.push(b);
    }
    Some(plan)
}

/// The inputs of block `next` for every calibration batch, computed through the blocks before
/// it as they were when the pass moved on (quantized, since their stages come first).
struct BlockInputs {
    next: usize,
    states: Vec<BlockState>,
}

impl BlockInputs {
    fn new(chain: &dyn BlockChain, batches: &[Tensor]) -> Result<Self> {
        let states = batches
            .iter()
            .map(|b| chain.block_input(b))
            .collect::<Result<_>>()?;
        Ok(BlockInputs { next: 0, states })
    }

    /// Run the blocks before `block` (once each: the cache only moves forward).
    fn advance_to(mut self, chain: &dyn BlockChain, block: usize) -> Result<Self> {
        while self.next < block {
            for state in &mut self.states {
                *state = chain.run_block(self.next, state, &mut NoHooks)?;
            }
            self.next += 1;
        }
        Ok(self)
    }

    /// Calibration statistics of `layers`' inputs, running only block `self.next`, and only as
    /// far as those layers.
    fn capture(
        &self,
        chain: &dyn BlockChain,
        layers: &[String],
    ) -> Result<BTreeMap<String, Calibration>> {
        let mut capture = CaptureInputs::new(LayerFilter::Only(layers.to_vec()));
        for state in &self.states {
            let mut hooks = (&mut capture, StopAfter::new(layers));
            match chain.run_block(self.next, state, &mut hooks) {
                Ok(_) | Err(Error::ForwardStopped { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(capture.into_calibrations())
    }
}

/// A packed layer with input scales hands its hooks `X·diag(s)⁻¹`; calibration statistics must
/// describe `X`, the input of the weight about to be re-quantized, so such layers go back to
/// their dense effective weight first.
fn densify_smoothed<M: QuantizableModel + ?Sized>(model: &mut M, layers: &[String]) -> Result<()> {
    for name in layers {
        let layer = model.linear_layer(name)?;
        if let LayerWeight::Packed(q) = layer.weight()
            && q.input_scales().is_some()
        {
            let dense = layer.dense_weight()?;
            model.set_weight(name, LayerWeight::Dense(dense))?;
        }
    }
    Ok(())
}
