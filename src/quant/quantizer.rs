//! The `Quantizer` trait: the one interface every weight-quantization scheme implements.

use candle_core::Tensor;

use crate::error::Result;
use crate::quant::calibration::Calibration;
use crate::quant::tensor::QuantizedTensor;

/// A weight-quantization scheme.
///
/// Object safe, so an audit can hold a `Vec<Box<dyn Quantizer>>`. Implementations must keep
/// the contract the conformance suite ([`crate::testing`], feature `testing`) checks:
/// shape and dtype preserved, `fake_quantize` equal to `quantize` then `dequantize` bit for
/// bit, same input and seed ⇒ same bytes, and a clear [`crate::Error`] (never a panic) on bad
/// input.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::{QuantSpec, Quantizer, UniformQuantizer};
///
/// let schemes: Vec<Box<dyn Quantizer>> = vec![
///     Box::new(UniformQuantizer::new(QuantSpec::int8().per_channel())?),
///     Box::new(UniformQuantizer::new(QuantSpec::int4().per_group(32).asymmetric())?),
/// ];
/// let w = Tensor::randn(0f32, 0.02, (64, 128), &Device::Cpu)?;
/// for q in &schemes {
///     let w_hat = q.fake_quantize(&w, None)?;
///     let err = (&w - &w_hat)?.sqr()?.mean_all()?.to_scalar::<f32>()?;
///     println!("{}: mse {err:.2e}", q.name());
/// }
/// # Ok::<(), quantlens::Error>(())
/// ```
pub trait Quantizer: Send + Sync {
    /// A stable name for reports, unique per configuration (e.g. `rtn-w4-g128-asym`).
    fn name(&self) -> String;

    /// Quantize a `[out_features, in_features]` weight.
    ///
    /// `calib` carries what data-aware methods need (Hessian, activation statistics);
    /// data-free methods ignore it.
    fn quantize(&self, weight: &Tensor, calib: Option<&Calibration>) -> Result<QuantizedTensor>;

    /// The weight as the quantized model sees it: quantize, then dequantize to the weight's
    /// dtype on the weight's device.
    fn fake_quantize(&self, weight: &Tensor, calib: Option<&Calibration>) -> Result<Tensor> {
        self.quantize(weight, calib)?.dequantize(weight.device())
    }

    /// Whether [`quantize`](Self::quantize) reads the [`Calibration`] it is given.
    ///
    /// Data-free schemes (round-to-nearest, codebooks, float formats) keep the default `false`;
    /// data-aware ones (GPTQ, AWQ, SmoothQuant) return `true`, which tells
    /// [`SequentialQuantization`](crate::model::SequentialQuantization) to run calibration
    /// forward passes before quantizing each layer.
    fn uses_calibration(&self) -> bool {
        false
    }

    /// The full configuration, for reports: an audit row records it so that a reader can
    /// rebuild the scheme. The default gives `{"name": …}` only; the crate's quantizers add
    /// every setting (`{"name": …, "settings": "<Debug form>"}`, plus `"base"` for wrappers).
    fn config(&self) -> serde_json::Value {
        serde_json::json!({ "name": self.name() })
    }
}

/// `{"name", "settings"}`: the configuration of a quantizer whose `Debug` form lists all of
/// its settings.
pub(crate) fn debug_config<Q: Quantizer + std::fmt::Debug + ?Sized>(q: &Q) -> serde_json::Value {
    serde_json::json!({ "name": q.name(), "settings": format!("{q:?}") })
}

impl<Q: Quantizer + ?Sized> Quantizer for Box<Q> {
    fn name(&self) -> String {
        (**self).name()
    }
    fn quantize(&self, weight: &Tensor, calib: Option<&Calibration>) -> Result<QuantizedTensor> {
        (**self).quantize(weight, calib)
    }
    fn fake_quantize(&self, weight: &Tensor, calib: Option<&Calibration>) -> Result<Tensor> {
        (**self).fake_quantize(weight, calib)
    }
    fn uses_calibration(&self) -> bool {
        (**self).uses_calibration()
    }
    fn config(&self) -> serde_json::Value {
        (**self).config()
    }
}

/// A borrowed quantizer is a quantizer, so wrappers (`NullSpaceRefine`, AWQ) can borrow their
/// base instead of owning it.
impl<Q: Quantizer + ?Sized> Quantizer for &Q {
    fn name(&self) -> String {
        (**self).name()
    }
    fn quantize(&self, weight: &Tensor, calib: Option<&Calibration>) -> Result<QuantizedTensor> {
        (**self).quantize(weight, calib)
    }
    fn fake_quantize(&self, weight: &Tensor, calib: Option<&Calibration>) -> Result<Tensor> {
        (**self).fake_quantize(weight, calib)
    }
    fn uses_calibration(&self) -> bool {
        (**self).uses_calibration()
    }
    fn config(&self) -> serde_json::Value {
        (**self).config()
    }
}
