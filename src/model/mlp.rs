//! A multi-layer perceptron classifier (or regressor) built from [`LinearLayer`]s.

use candle_core::{Device, Tensor, Var};

use crate::error::{Error, Result};
use crate::model::hooks::{ForwardHook, NoHooks};
use crate::model::linear::LinearLayer;
use crate::model::train::Trainable;
use crate::model::{LayerWeight, QuantizableModel};
use crate::rng::SplitMix64;

/// The non-linearity between hidden layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// `max(0, x)`.
    #[default]
    Relu,
    /// Gaussian error linear unit (tanh approximation).
    Gelu,
    /// `tanh(x)`.
    Tanh,
    /// `x · sigmoid(x)`.
    Silu,
}

impl Activation {
    fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Relu => x.relu()?,
            Activation::Gelu => x.gelu()?,
            Activation::Tanh => x.tanh()?,
            Activation::Silu => x.silu()?,
        })
    }

    fn tag(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Gelu => "gelu",
            Activation::Tanh => "tanh",
            Activation::Silu => "silu",
        }
    }
}

/// Shape and regularisation of an [`Mlp`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MlpConfig {
    /// Number of input features.
    pub input: usize,
    /// Widths of the hidden layers; empty gives multinomial logistic regression.
    pub hidden: Vec<usize>,
    /// Number of outputs (classes, or regression targets).
    pub output: usize,
    /// Non-linearity after every hidden layer.
    pub activation: Activation,
    /// Probability of zeroing a hidden unit during training (inverted dropout); 0 disables it.
    pub dropout: f32,
}

impl MlpConfig {
    /// `input → hidden[0] → … → output`, ReLU, no dropout.
    pub fn new(input: usize, hidden: &[usize], output: usize) -> Self {
        MlpConfig {
            input,
            hidden: hidden.to_vec(),
            output,
            activation: Activation::Relu,
            dropout: 0.0,
        }
    }

    /// A different non-linearity.
    pub fn activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// Dropout probability on hidden units during training.
    pub fn dropout(mut self, p: f32) -> Self {
        self.dropout = p;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.input == 0 || self.output == 0 || self.hidden.contains(&0) {
            return Err(Error::InvalidParameter {
                name: "MLP widths",
                reason: format!(
                    "every width must be at least 1, got {} → {:?} → {}",
                    self.input, self.hidden, self.output
                ),
            });
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::InvalidParameter {
                name: "dropout",
                reason: format!("must lie in [0, 1), got {}", self.dropout),
            });
        }
        Ok(())
    }
}

/// A multi-layer perceptron whose linear layers are named `layers.0`, `layers.1`, … in order.
///
/// Weights start from PyTorch's default `nn.Linear` initialisation (uniform in
/// `±1/√in_features`, for weights and biases), drawn from [`SplitMix64`] so that the same seed
/// gives the same bytes on every machine.
///
/// Cloning copies the parameters: training a clone leaves the original untouched.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::model::{Mlp, MlpConfig, QuantizableModel};
///
/// let mlp = Mlp::new(MlpConfig::new(4, &[8, 8], 3), 42, &Device::Cpu)?;
/// assert_eq!(mlp.layer_names(), ["layers.0", "layers.1", "layers.2"]);
/// let logits = mlp.forward(&Tensor::zeros((5, 4), candle_core::DType::F32, &Device::Cpu)?)?;
/// assert_eq!(logits.dims(), [5, 3]);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug)]
pub struct Mlp {
    config: MlpConfig,
    layers: Vec<LinearLayer>,
    /// Weight and bias of every layer, in order: what the optimiser updates. The layers hold
    /// the same tensors until a weight is replaced.
    params: Vec<Var>,
}

impl Mlp {
    /// A freshly initialised MLP, seeded.
    pub fn new(config: MlpConfig, seed: u64, device: &Device) -> Result<Self> {
        config.validate()?;
        let mut rng = SplitMix64::new(seed);
        let widths: Vec<usize> = std::iter::once(config.input)
            .chain(config.hidden.iter().copied())
            .chain(std::iter::once(config.output))
            .collect();
        let mut layers = Vec::with_capacity(widths.len() - 1);
        let mut params = Vec::with_capacity(2 * (widths.len() - 1));
        for (i, pair) in widths.windows(2).enumerate() {
            let (fan_in, fan_out) = (pair[0], pair[1]);
            let bound = 1.0 / (fan_in as f64).sqrt();
            let mut uniform = |n: usize| -> Vec<f32> {
                (0..n)
                    .map(|_| ((2.0 * rng.next_f64() - 1.0) * bound) as f32)
                    .collect()
            };
            let w = Var::from_tensor(&Tensor::from_vec(
                uniform(fan_out * fan_in),
                (fan_out, fan_in),
                device,
            )?)?;
            let b = Var::from_tensor(&Tensor::from_vec(uniform(fan_out), fan_out, device)?)?;
            layers.push(LinearLayer::new(
                format!("layers.{i}"),
                w.as_tensor().clone(),
                Some(b.as_tensor().clone()),
            )?);
            params.push(w);
            params.push(b);
        }
        Ok(Mlp {
            config,
            layers,
            params,
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &MlpConfig {
        &self.config
    }

    /// A short description for reports, e.g. `mlp-64x128x10-relu`.
    pub fn name(&self) -> String {
        let widths: Vec<String> = std::iter::once(self.config.input)
            .chain(self.config.hidden.iter().copied())
            .chain(std::iter::once(self.config.output))
            .map(|w| w.to_string())
            .collect();
        format!("mlp-{}-{}", widths.join("x"), self.config.activation.tag())
    }

    fn run(
        &self,
        x: &Tensor,
        hooks: &mut dyn ForwardHook,
        dropout_seed: Option<u64>,
    ) -> Result<Tensor> {
        if x.rank() != 2 || x.dims()[1] != self.config.input {
            return Err(Error::ShapeMismatch(format!(
                "MLP input must be [batch, {}], got {:?}",
                self.config.input,
                x.dims()
            )));
        }
        let last = self.layers.len() - 1;
        let mut h = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h, hooks)?;
            if i < last {
                h = self.config.activation.apply(&h)?;
                if let Some(seed) = dropout_seed
                    && self.config.dropout > 0.0
                {
                    h = dropout(&h, self.config.dropout, crate::rng::mix(seed ^ i as u64))?;
                }
            }
        }
        Ok(h)
    }
}

/// Inverted dropout with a host-generated, seeded mask (Candle's own RNG cannot be seeded
/// per call, and the mask must be the same bytes on every run).
fn dropout(h: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    let mut rng = SplitMix64::new(seed);
    let keep = 1.0 - p;
    let mask: Vec<f32> = (0..h.elem_count())
        .map(|_| {
            if rng.next_f32() < keep {
                1.0 / keep
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, h.dims(), h.device())?.to_dtype(h.dtype())?;
    Ok((h * mask)?)
}

impl Clone for Mlp {
    fn clone(&self) -> Self {
        // Fresh variables for the parameters that still back their layer, so the clone trains
        // independently; replaced (quantized) weights are immutable and shared.
        let mut params = Vec::with_capacity(self.params.len());
        let mut layers = self.layers.clone();
        for (layer, pair) in layers.iter_mut().zip(self.params.chunks(2)) {
            let (w, b) = (&pair[0], &pair[1]);
            let copy = |v: &Var| {
                v.as_tensor()
                    .copy()
                    .and_then(|t| Var::from_tensor(&t))
                    .expect("copying a CPU/GPU tensor that already exists does not fail")
            };
            let (w2, b2) = (copy(w), copy(b));
            if let LayerWeight::Dense(t) = layer.weight()
                && t.id() == w.as_tensor().id()
            {
                layer
                    .set_weight(w2.as_tensor().clone())
                    .expect("same shape by construction");
            }
            layer.replace_bias(b2.as_tensor().clone());
            params.push(w2);
            params.push(b2);
        }
        Mlp {
            config: self.config.clone(),
            layers,
            params,
        }
    }
}

impl QuantizableModel for Mlp {
    fn linear_layers(&self) -> Vec<&LinearLayer> {
        self.layers.iter().collect()
    }

    fn linear_layer_mut(&mut self, name: &str) -> Option<&mut LinearLayer> {
        self.layers.iter_mut().find(|l| l.name() == name)
    }

    fn forward_hooked(&self, input: &Tensor, hooks: &mut dyn ForwardHook) -> Result<Tensor> {
        self.run(input, hooks, None)
    }
}

impl Trainable for Mlp {
    fn parameters(&self) -> Result<Vec<Var>> {
        for (layer, w) in self.layers.iter().zip(self.params.iter().step_by(2)) {
            let trainable =
                matches!(layer.weight(), LayerWeight::Dense(t) if t.id() == w.as_tensor().id());
            if !trainable {
                return Err(Error::Unsupported(format!(
                    "layer {} has a replaced (quantized or perturbed) weight; train the \
                     full-precision model and quantize afterwards",
                    layer.name()
                )));
            }
        }
        Ok(self.params.clone())
    }

    fn forward_train(&self, input: &Tensor, step_seed: u64) -> Result<Tensor> {
        self.run(input, &mut NoHooks, Some(step_seed))
    }
}
