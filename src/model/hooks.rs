//! Forward hooks: code that sees (and may replace) the input of every linear layer during a
//! forward pass — calibration capture, activation quantization, activation noise.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::perturb::Perturbation;
use crate::quant::{
    ActivationFormat, ActivationQuantizer, Calibration, FloatFormat, QuantSpec, Quantizer,
    ScaleDType, UniformQuantizer,
};
use crate::rng;

/// Called by every [`LinearLayer`](super::LinearLayer) with its input, just before the
/// multiplication.
///
/// Return `Ok(None)` to leave the input as it is, `Ok(Some(x))` to replace it (the layer then
/// multiplies `x`), or `Err(Error::ForwardStopped { .. })` to end the forward pass early once
/// the hook has seen what it needs. Hooks run in the order the layers execute.
///
/// ```
/// use candle_core::Tensor;
/// use quantlens::model::ForwardHook;
///
/// /// Records which layers ran.
/// struct Trace(Vec<String>);
/// impl ForwardHook for Trace {
///     fn layer_input(&mut self, layer: &str, _x: &Tensor) -> quantlens::Result<Option<Tensor>> {
///         self.0.push(layer.to_string());
///         Ok(None)
///     }
/// }
/// ```
pub trait ForwardHook {
    /// See the input `x` of layer `layer`; optionally replace it.
    fn layer_input(&mut self, layer: &str, x: &Tensor) -> Result<Option<Tensor>>;

    /// [`layer_input`](Self::layer_input) for a batch that carries padding, called instead of
    /// it by models whose batches are padded ([`BertEncoder`](crate::model::BertEncoder)):
    /// `token_rows` (u32, 1-D) lists the rows of `x`, viewed as a matrix
    /// `[positions, in_features]`, that hold real tokens; the others are padding, computed but
    /// meaningless.
    ///
    /// Hooks that gather statistics override it to leave the padding out
    /// ([`CaptureInputs`] does); the default ignores `token_rows`, which is right for hooks
    /// that transform each row on its own.
    fn padded_layer_input(
        &mut self,
        layer: &str,
        x: &Tensor,
        token_rows: &Tensor,
    ) -> Result<Option<Tensor>> {
        let _ = token_rows;
        self.layer_input(layer, x)
    }
}

impl<H: ForwardHook + ?Sized> ForwardHook for &mut H {
    fn layer_input(&mut self, layer: &str, x: &Tensor) -> Result<Option<Tensor>> {
        (**self).layer_input(layer, x)
    }

    fn padded_layer_input(
        &mut self,
        layer: &str,
        x: &Tensor,
        token_rows: &Tensor,
    ) -> Result<Option<Tensor>> {
        (**self).padded_layer_input(layer, x, token_rows)
    }
}

impl<H: ForwardHook + ?Sized> ForwardHook for Box<H> {
    fn layer_input(&mut self, layer: &str, x: &Tensor) -> Result<Option<Tensor>> {
        (**self).layer_input(layer, x)
    }

    fn padded_layer_input(
        &mut self,
        layer: &str,
        x: &Tensor,
        token_rows: &Tensor,
    ) -> Result<Option<Tensor>> {
        (**self).padded_layer_input(layer, x, token_rows)
    }
}

/// Hands every layer input of a padded batch to `hooks` through
/// [`ForwardHook::padded_layer_input`]; what a padded model wraps its hooks in.
pub(crate) struct PaddedBatch<'a> {
    hooks: &'a mut dyn ForwardHook,
    token_rows: Tensor,
}

impl<'a> PaddedBatch<'a> {
    /// `mask: [batch, seq]`, 1 for tokens and 0 for padding.
    pub(crate) fn new(hooks: &'a mut dyn ForwardHook, mask: &Tensor) -> Result<Self> {
        let flags: Vec<f32> = mask.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        let rows: Vec<u32> = (0u32..)
            .zip(&flags)
            .filter(|&(_, &m)| m != 0.0)
            .map(|(i, _)| i)
            .collect();
        let n = rows.len();
        Ok(PaddedBatch {
            hooks,
            token_rows: Tensor::from_vec(rows, n, mask.device())?,
        })
    }
}

impl ForwardHook for PaddedBatch<'_> {
    fn layer_input(&mut self, layer: &str, x: &Tensor) -> Result<Option<Tensor>> {
        self.hooks.padded_layer_input(layer, x, &self.token_rows)
    }
}

/// The hook that does nothing: a plain forward pass.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

impl ForwardHook for NoHooks {
    fn layer_input(&mut self, _layer: &str, _x: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

/// Several hooks applied in turn: each sees the input as the previous one left it.
///
/// Order matters: `[quantize activations, capture]` calibrates on quantized activations,
/// `[capture, quantize activations]` on full-precision ones.
impl<A: ForwardHook, B: ForwardHook> ForwardHook for (A, B) {
    fn layer_input(&mut self, layer: &str, x: &Tensor) -> Result<Option<Tensor>> {
        let a = self.0.layer_input(layer, x)?;
        let b = self.1.layer_input(layer, a.as_ref().unwrap_or(x))?;
        Ok(b.or(a))
    }

    fn padded_layer_input(
        &mut self,
        layer: &str,
        x: &Tensor,
        token_rows: &Tensor,
    ) -> Result<Option<Tensor>> {
        let a = self.0.padded_layer_input(layer, x, token_rows)?;
        let b = self
            .1
            .padded_layer_input(layer, a.as_ref().unwrap_or(x), token_rows)?;
        Ok(b.or(a))
    }
}

impl ForwardHook for Vec<Box<dyn ForwardHook + '_>> {
    fn layer_input(&mut self, layer: &str, x: &Tensor) -> Result<Option<Tensor>> {
        let mut current: Option<Tensor> = None;
        for hook in self.iter_mut() {
            if let Some(next) = hook.layer_input(layer, current.as_ref().unwrap_or(x))? {
                current = Some(next);
            }
        }
        Ok(current)
    }

    fn padded_layer_input(
        &mut self,
        layer: &str,
        x: &Tensor,
        token_rows: &Tensor,
    ) -> Result<Option<Tensor>> {
        let mut current: Option<Tensor> = None;
        for hook in self.iter_mut() {
            let input = current.as_ref().unwrap_or(x);
            if let Some(next) = hook.padded_layer_input(layer, input, token_rows)? {
                current = Some(next);
            }
        }
        Ok(current)
    }
}

/// Which layers a hook acts on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LayerFilter {
    /// Every linear layer.
    #[default]
    All,
    /// Only the named layers.
    Only(Vec<String>),
    /// Every layer but the named ones (e.g. keep `lm_head` in full precision).
    Except(Vec<String>),
}

impl LayerFilter {
    /// Whether `layer` is selected.
    pub fn matches(&self, layer: &str) -> bool {
        match self {
            LayerFilter::All => true,
            LayerFilter::Only(names) => names.iter().any(|n| n == layer),
            LayerFilter::Except(names) => !names.iter().any(|n| n == layer),
        }
    }
}

/// Streams the inputs of the selected layers into one [`Calibration`] per layer, without
/// keeping the activations.
///
/// A packed layer with [input scales](crate::QuantizedTensor::input_scales) (AWQ,
/// SmoothQuant) hands its hooks the smoothed input `x·diag(s)⁻¹`, so that is what is captured
/// there (what a static activation scale for that layer must cover);
/// [`SequentialQuantization`](super::SequentialQuantization) densifies such layers before
/// capturing their inputs for re-quantization.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::model::{CaptureInputs, LinearLayer};
///
/// let layer = LinearLayer::new("proj", Tensor::ones((3, 2), candle_core::DType::F32, &Device::Cpu)?, None)?;
/// let mut capture = CaptureInputs::all();
/// layer.forward(&Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu)?, &mut capture)?;
/// let calib = capture.into_calibrations();
/// assert_eq!(calib["proj"].samples(), 2);
/// assert_eq!(calib["proj"].act_absmax(), &[3.0, 4.0]);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct CaptureInputs {
    filter: LayerFilter,
    calibrations: BTreeMap<String, Calibration>,
}

impl CaptureInputs {
    /// Capture every layer's input.
    pub fn all() -> Self {
        CaptureInputs::default()
    }

    /// Capture the selected layers' inputs.
    pub fn new(filter: LayerFilter) -> Self {
        CaptureInputs {
            filter,
            calibrations: BTreeMap::new(),
        }
    }

    /// The statistics gathered so far, by layer name.
    pub fn calibrations(&self) -> &BTreeMap<String, Calibration> {
        &self.calibrations
    }

    /// Take the statistics, by layer name.
    pub fn into_calibrations(self) -> BTreeMap<String, Calibration> {
        self.calibrations
    }
}

impl CaptureInputs {
    fn observe(&mut self, layer: &str, x: &Tensor) -> Result<()> {
        let in_features = x.dims().last().copied().unwrap_or(0);
        self.calibrations
            .entry(layer.to_string())
            .or_insert_with(|| Calibration::new(in_features))
            .observe(x)
    }
}

impl ForwardHook for CaptureInputs {
    fn layer_input(&mut self, layer: &str, x: &Tensor) -> Result<Option<Tensor>> {
        if self.filter.matches(layer) {
            self.observe(layer, x)?;
        }
        Ok(None)
    }

    /// Captures the token rows only: padding would otherwise count as calibration samples
    /// (and pull the Hessian and activation ranges towards what `[PAD]` positions compute).
    fn padded_layer_input(
        &mut self,
        layer: &str,
        x: &Tensor,
        token_rows: &Tensor,
    ) -> Result<Option<Tensor>> {
        if self.filter.matches(layer) {
            let in_features = x.dims().last().copied().unwrap_or(0);
            let positions = x.elem_count() / in_features.max(1);
            let tokens = x
                .reshape((positions, in_features))?
                .index_select(token_rows, 0)?;
            self.observe(layer, &tokens)?;
        }
        Ok(None)
    }
}

/// Fake-quantizes the selected layers' inputs with a [`Quantizer`], one row (token or example)
/// at a time: with a per-channel spec this is the usual dynamic per-token activation
/// quantization (the "A8" of W8A8). Layers packed by
/// [`SmoothQuantizer`](crate::SmoothQuantizer) hand it their smoothed inputs.
pub struct QuantizeActivations {
    quantizer: Box<dyn Quantizer>,
    /// Layer-specific quantizers (static scales calibrated per layer); they take precedence.
    per_layer: BTreeMap<String, Box<dyn Quantizer>>,
    filter: LayerFilter,
}

impl QuantizeActivations {
    /// Quantize every layer's input with `quantizer`, applied to the input viewed as a matrix
    /// `[tokens, in_features]` (so per-channel granularity means per token).
    pub fn new(quantizer: impl Quantizer + 'static) -> Self {
        QuantizeActivations {
            quantizer: Box::new(quantizer),
            per_layer: BTreeMap::new(),
            filter: LayerFilter::All,
        }
    }

    /// Symmetric per-token activation quantization at `bits` (f32 scales, round to nearest):
    /// `per_token(8)` is the A8 of W8A8 and W4A8.
    pub fn per_token(bits: u8) -> Result<Self> {
        let spec = QuantSpec::new(bits)
            .per_channel()
            .symmetric()
            .with_scale_dtype(ScaleDType::F32);
        Ok(QuantizeActivations::new(UniformQuantizer::new(spec)?))
    }

    /// Dynamic per-token FP8 E4M3 activation quantization (f32 scale `absmax / 448` per
    /// token): the "A8" of FP8 W8A8 serving.
    ///
    /// ```
    /// use quantlens::model::QuantizeActivations;
    /// assert_eq!(QuantizeActivations::fp8_per_token().name(), "act-fp8-e4m3-token");
    /// ```
    pub fn fp8_per_token() -> Self {
        QuantizeActivations::new(ActivationQuantizer::fp8_per_token(FloatFormat::E4M3))
    }

    /// Static per-tensor activation quantization with one scale for every selected layer,
    /// calibrated from `calib` (see [`ActivationQuantizer::static_from_calibration`]); values
    /// beyond the calibrated range saturate.
    pub fn static_from_calibration(format: ActivationFormat, calib: &Calibration) -> Result<Self> {
        Ok(QuantizeActivations::new(
            ActivationQuantizer::static_from_calibration(format, calib)?,
        ))
    }

    /// Static per-tensor activation quantization with **one scale per layer**, each
    /// calibrated from that layer's statistics (e.g. [`CaptureInputs::into_calibrations`]).
    /// Only the layers in `calibrations` are quantized; the others keep full-precision inputs.
    ///
    /// ```
    /// use candle_core::{DType, Device, Tensor};
    /// use quantlens::quant::ActivationFormat;
    /// use quantlens::model::{CaptureInputs, LinearLayer, QuantizeActivations};
    ///
    /// let layer = LinearLayer::new("proj", Tensor::ones((3, 2), DType::F32, &Device::Cpu)?, None)?;
    /// let x = Tensor::new(&[[1f32, -2.0], [0.5, 4.0]], &Device::Cpu)?;
    /// let mut capture = CaptureInputs::all();
    /// layer.forward(&x, &mut capture)?;
    /// let mut a8 = QuantizeActivations::static_per_layer(ActivationFormat::Int8, &capture.into_calibrations())?;
    /// let y = layer.forward(&x, &mut a8)?;
    /// assert_eq!(y.dims(), &[2, 3]);
    /// assert_eq!(a8.name(), "act-int8-static-per-layer");
    /// # Ok::<(), quantlens::Error>(())
    /// ```
    pub fn static_per_layer(
        format: ActivationFormat,
        calibrations: &BTreeMap<String, Calibration>,
    ) -> Result<Self> {
        let mut per_layer: BTreeMap<String, Box<dyn Quantizer>> = BTreeMap::new();
        for (name, calib) in calibrations {
            per_layer.insert(
                name.clone(),
                Box::new(ActivationQuantizer::static_from_calibration(format, calib)?),
            );
        }
        Ok(QuantizeActivations {
            quantizer: Box::new(ActivationQuantizer::per_token(format)),
            filter: LayerFilter::Only(per_layer.keys().cloned().collect()),
            per_layer,
        })
    }

    /// Restrict to some layers.
    pub fn layers(mut self, filter: LayerFilter) -> Self {
        self.filter = filter;
        self
    }

    /// The name of the activation quantizer, for reports.
    pub fn name(&self) -> String {
        match self.per_layer.values().next() {
            // `int8-static-1.5e0` → `act-int8-static-per-layer`.
            Some(q) => format!(
                "act-{}-static-per-layer",
                q.name().split("-static").next().unwrap_or_default()
            ),
            None => format!("act-{}", self.quantizer.name()),
        }
    }
}

impl ForwardHook for QuantizeActivations {
    fn layer_input(&mut self, layer: &str, x: &Tensor) -> Result<Option<Tensor>> {
        if !self.filter.matches(layer) {
            return Ok(None);
        }
        let dims = x.dims().to_vec();
        let in_features = dims.last().copied().unwrap_or(0);
        let matrix = x.reshape(((), in_features))?;
        // Quantizers accept f32/f16/bf16; keep the activation's own dtype on the way out.
        let matrix = if matches!(matrix.dtype(), DType::F32 | DType::F16 | DType::BF16) {
            matrix
        } else {
            matrix.to_dtype(DType::F32)?
        };
        let quantizer = self.per_layer.get(layer).unwrap_or(&self.quantizer);
        let q = quantizer.fake_quantize(&matrix, None)?;
        Ok(Some(q.to_dtype(x.dtype())?.reshape(dims)?))
    }
}

/// Adds a [`Perturbation`] to the selected layers' inputs (activation noise).
///
/// Each call draws with its own seed, derived from the hook's seed, the layer name and how many
/// times that layer has been called, so a sequence of forward passes is reproducible and no two
/// layers (or batches) share noise.
pub struct PerturbActivations {
    perturbation: Box<dyn Perturbation>,
    seed: u64,
    filter: LayerFilter,
    calls: BTreeMap<String, u64>,
}

impl PerturbActivations {
    /// Perturb every layer's input with `perturbation`, seeded by `seed`.
    pub fn new(perturbation: impl Perturbation + 'static, seed: u64) -> Self {
        PerturbActivations {
            perturbation: Box::new(perturbation),
            seed,
            filter: LayerFilter::All,
            calls: BTreeMap::new(),
        }
    }

    /// Restrict to some layers.
    pub fn layers(mut self, filter: LayerFilter) -> Self {
        self.filter = filter;
        self
    }

    /// The name of the perturbation, for reports.
    pub fn name(&self) -> String {
        format!("act-{}", self.perturbation.name())
    }
}

impl ForwardHook for PerturbActivations {
    fn layer_input(&mut self, layer: &str, x: &Tensor) -> Result<Option<Tensor>> {
        if !self.filter.matches(layer) {
            return Ok(None);
        }
        let count = self.calls.entry(layer.to_string()).or_insert(0);
        let name_hash = layer
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| rng::mix(h ^ b as u64));
        let seed = rng::mix(self.seed ^ name_hash) ^ rng::mix(*count);
        *count += 1;
        Ok(Some(self.perturbation.apply(x, seed)?))
    }
}

/// Stops the forward pass once every layer in `layers` has been seen (used to capture a
/// prefix of the model without paying for the rest).
pub(crate) struct StopAfter {
    pending: Vec<String>,
}

impl StopAfter {
    pub(crate) fn new(layers: &[String]) -> Self {
        StopAfter {
            pending: layers.to_vec(),
        }
    }
}

impl ForwardHook for StopAfter {
    fn layer_input(&mut self, layer: &str, _x: &Tensor) -> Result<Option<Tensor>> {
        self.pending.retain(|l| l != layer);
        if self.pending.is_empty() {
            return Err(Error::ForwardStopped {
                layer: layer.to_string(),
            });
        }
        Ok(None)
    }
}
