//! A named linear layer whose weight can be full precision or packed, and whose input passes
//! through the forward hooks: the building block every [`QuantizableModel`] is made of.
//!
//! [`QuantizableModel`]: super::QuantizableModel

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::model::hooks::ForwardHook;
use crate::quant::QuantizedTensor;

/// The weight of a [`LinearLayer`]: `[out_features, in_features]`.
#[derive(Debug, Clone)]
pub enum LayerWeight {
    /// A dense tensor: the trained weight, or a fake-quantized copy of it.
    Dense(Tensor),
    /// Packed codes and scales, dequantized on the fly at every forward pass (the memory
    /// footprint of a deployed quantized model, at the cost of one decode per call).
    Packed(Box<QuantizedTensor>),
}

impl LayerWeight {
    /// The shape as stored (a matrix for any weight a `LinearLayer` accepts).
    pub fn shape(&self) -> &[usize] {
        match self {
            LayerWeight::Dense(t) => t.dims(),
            LayerWeight::Packed(q) => q.shape(),
        }
    }

    /// `[out_features, in_features]`.
    pub fn dims(&self) -> (usize, usize) {
        match self.shape() {
            [o, i] => (*o, *i),
            // `LinearLayer` refuses anything else, so this arm is never reached through it.
            _ => (0, 0),
        }
    }

    /// Bytes this weight occupies: 4 (or 2) per element when dense, the true packed size
    /// (codes, scales, zero points) when packed.
    pub fn storage_bytes(&self) -> usize {
        match self {
            LayerWeight::Dense(t) => t.elem_count() * t.dtype().size_in_bytes(),
            LayerWeight::Packed(q) => q.storage_bytes(),
        }
    }
}

impl From<Tensor> for LayerWeight {
    fn from(t: Tensor) -> Self {
        LayerWeight::Dense(t)
    }
}

impl From<QuantizedTensor> for LayerWeight {
    fn from(q: QuantizedTensor) -> Self {
        LayerWeight::Packed(Box::new(q))
    }
}

/// `y = x Wᵀ + b` with a stable name, a replaceable weight and a hook on its input.
///
/// Models built from `LinearLayer`s get the whole [`QuantizableModel`](super::QuantizableModel)
/// machinery (weight replacement, calibration capture, activation quantization) by calling
/// [`forward`](Self::forward) with the hooks they were handed.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::model::{LinearLayer, NoHooks};
///
/// let w = Tensor::new(&[[1f32, 2.0], [0.0, -1.0]], &Device::Cpu)?;
/// let layer = LinearLayer::new("proj", w, None)?;
/// let x = Tensor::new(&[[1f32, 1.0]], &Device::Cpu)?;
/// assert_eq!(layer.forward(&x, &mut NoHooks)?.to_vec2::<f32>()?, vec![vec![3.0, -1.0]]);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct LinearLayer {
    name: String,
    weight: LayerWeight,
    bias: Option<Tensor>,
    /// Where dense copies of a packed weight are made: the device of the original dense weight
    /// (or of the bias), so swapping in a packed weight does not move the model.
    device: Device,
}

impl LinearLayer {
    /// A layer named `name` (stable, used in reports and hooks) with weight
    /// `[out_features, in_features]` and an optional bias `[out_features]`.
    pub fn new(
        name: impl Into<String>,
        weight: impl Into<LayerWeight>,
        bias: Option<Tensor>,
    ) -> Result<Self> {
        let name = name.into();
        let weight = weight.into();
        check_weight_rank(&weight)?;
        let (out_features, _) = weight.dims();
        if let Some(b) = &bias
            && b.dims() != [out_features]
        {
            return Err(Error::ShapeMismatch(format!(
                "layer {name}: bias {:?} does not match out_features = {out_features}",
                b.dims()
            )));
        }
        let device = match (&weight, &bias) {
            (LayerWeight::Dense(t), _) => t.device().clone(),
            (LayerWeight::Packed(_), Some(b)) => b.device().clone(),
            (LayerWeight::Packed(_), None) => Device::Cpu,
        };
        Ok(LinearLayer {
            name,
            weight,
            bias,
            device,
        })
    }

    /// The layer's stable name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of inputs.
    pub fn in_features(&self) -> usize {
        self.weight.dims().1
    }

    /// Number of outputs.
    pub fn out_features(&self) -> usize {
        self.weight.dims().0
    }

    /// The weight as stored.
    pub fn weight(&self) -> &LayerWeight {
        &self.weight
    }

    /// The bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The device the layer lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The weight as a dense f32 tensor on the layer's device; packed weights are dequantized
    /// (to the effective weight when they carry input scales).
    pub fn dense_weight(&self) -> Result<Tensor> {
        match &self.weight {
            LayerWeight::Dense(t) => Ok(t.to_dtype(DType::F32)?),
            LayerWeight::Packed(q) => q.dequantize_to(&self.device, DType::F32),
        }
    }

    /// Replace the weight; its shape must stay `[out_features, in_features]`.
    pub fn set_weight(&mut self, weight: impl Into<LayerWeight>) -> Result<()> {
        let weight = weight.into();
        check_weight_rank(&weight)?;
        if weight.dims() != self.weight.dims() {
            return Err(Error::ShapeMismatch(format!(
                "layer {}: new weight {:?} does not match [out, in] = {:?}",
                self.name,
                weight.dims(),
                self.weight.dims()
            )));
        }
        self.weight = weight;
        Ok(())
    }

    /// Swap the bias tensor for another of the same shape (used when cloning trainable
    /// parameters).
    pub(crate) fn replace_bias(&mut self, bias: Tensor) {
        if self.bias.as_ref().is_some_and(|b| b.dims() == bias.dims()) {
            self.bias = Some(bias);
        }
    }

    /// Apply the layer to `x: [..., in_features]`, passing `x` through `hooks` first (which may
    /// observe it, replace it, or stop the forward pass).
    ///
    /// A packed weight with [input scales](QuantizedTensor::input_scales) `s` (AWQ,
    /// SmoothQuant) divides `x` by `s` first (in f32, rounded once to `x`'s dtype), hands the
    /// smoothed input `x·diag(s)⁻¹` to the hooks, and multiplies it by the smoothed weight
    /// `Q(W·diag(s))`: the same function as the effective weight of
    /// [`dense_weight`](Self::dense_weight) up to rounding, but activation quantization
    /// ([`QuantizeActivations`](crate::model::QuantizeActivations)) and calibration capture see
    /// the smoothed activations, as in a deployed W8A8 SmoothQuant model.
    pub fn forward(&self, x: &Tensor, hooks: &mut dyn ForwardHook) -> Result<Tensor> {
        self.forward_impl(x, hooks, true)
    }

    /// [`forward`](Self::forward) reading the weight and bias detached from any autograd
    /// graph: what a model's inference path calls when its weights are training variables, so
    /// that a forward pass does not keep every intermediate activation alive for a backward
    /// pass that never comes.
    pub(crate) fn forward_inference(
        &self,
        x: &Tensor,
        hooks: &mut dyn ForwardHook,
    ) -> Result<Tensor> {
        self.forward_impl(x, hooks, false)
    }

    fn forward_impl(
        &self,
        x: &Tensor,
        hooks: &mut dyn ForwardHook,
        track_gradients: bool,
    ) -> Result<Tensor> {
        let in_features = self.in_features();
        if x.dims().last() != Some(&in_features) {
            return Err(Error::ShapeMismatch(format!(
                "layer {}: input {:?} does not end in in_features = {in_features}",
                self.name,
                x.dims()
            )));
        }
        // A smoothed weight (AWQ, SmoothQuant) computes (X·diag(s)⁻¹)·Q(W·diag(s))ᵀ: the
        // division comes before the hooks, so activation quantization sees the smoothed input.
        let smoothed = match &self.weight {
            LayerWeight::Packed(q) => match q.input_scales() {
                Some(s) => Some(divide_channels(x, &s.to_f32_vec())?),
                None => None,
            },
            LayerWeight::Dense(_) => None,
        };
        let x = smoothed.as_ref().unwrap_or(x);
        let hooked = hooks.layer_input(&self.name, x)?;
        let x = hooked.as_ref().unwrap_or(x);
        // A parameter as this pass reads it: in the autograd graph, or a detached view.
        let read = |t: &Tensor| {
            if track_gradients {
                t.clone()
            } else {
                t.detach()
            }
        };
        let w = match &self.weight {
            LayerWeight::Dense(t) => read(t),
            LayerWeight::Packed(q) => q.dequantize_smoothed_to(x.device(), x.dtype())?,
        };
        let w = if w.dtype() == x.dtype() {
            w
        } else {
            w.to_dtype(x.dtype())?
        };
        // Candle's matmul wants matching ranks: fold leading dimensions into rows.
        let lead = &x.dims()[..x.rank() - 1];
        let rows: usize = lead.iter().product();
        let y = x.reshape((rows, in_features))?.matmul(&w.t()?)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(&read(b).to_dtype(y.dtype())?)?,
            None => y,
        };
        let mut out_dims = lead.to_vec();
        out_dims.push(self.out_features());
        Ok(y.reshape(out_dims)?)
    }
}

/// `x / s` along the last dimension, computed in f32 and returned in `x`'s dtype.
fn divide_channels(x: &Tensor, s: &[f32]) -> Result<Tensor> {
    let s = Tensor::from_slice(s, s.len(), x.device())?;
    Ok(x.to_dtype(DType::F32)?
        .broadcast_div(&s)?
        .to_dtype(x.dtype())?)
}

fn check_weight_rank(weight: &LayerWeight) -> Result<()> {
    if weight.shape().len() != 2 {
        return Err(Error::RankMismatch {
            what: "linear layer weight",
            expected: 2,
            shape: weight.shape().to_vec(),
        });
    }
    Ok(())
}
