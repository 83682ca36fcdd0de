//! Quantizing the token embedding and the LM head, which are not linear layers.

use crate::error::{Error, Result};
use crate::quant::{QuantizedTensor, Quantizer};

use super::Llama;

/// What [`Llama::quantize_embedding`] stored: the packed tables, for their sizes and errors.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EmbeddingQuantization {
    /// The token embedding `[vocab, hidden]` (also the LM head when the two are tied).
    pub embedding: QuantizedTensor,
    /// The separate LM head `[vocab, hidden]` of an untied model.
    pub lm_head: Option<QuantizedTensor>,
}

impl EmbeddingQuantization {
    /// Bytes of the quantized tables, scales included.
    pub fn storage_bytes(&self) -> usize {
        self.embedding.storage_bytes() + self.lm_head.as_ref().map_or(0, |q| q.storage_bytes())
    }
}

impl Llama {
    /// Quantize the token embedding table — and with it the tied LM head — and, for an untied
    /// model, the separate LM head, with `quantizer`; the model keeps the values they decode
    /// to (fake quantization: the tables stay f32 `[vocab, hidden]`).
    ///
    /// Deployed low-bit decoders quantize these tables too (llama.cpp's `token_embd`), and a
    /// decoder trained on a membership split can memorise through them, so a privacy audit
    /// that leaves them in full precision can miss the leak. The quantizer sees each table as
    /// a matrix with one row per token (per-channel granularity: one scale per token). It must
    /// be data-free: there are no inputs to calibrate a table on. The linear layers are left
    /// as they are; quantize the embedding first if their calibration should see it.
    ///
    /// ```
    /// use candle_core::Device;
    /// use quantlens::model::{Llama, LlamaConfig};
    /// use quantlens::{QuantSpec, UniformQuantizer};
    ///
    /// let mut model = Llama::new(LlamaConfig::tiny(50, 16, 1, 2, 1), 3, &Device::Cpu)?;
    /// let rtn = UniformQuantizer::new(QuantSpec::int4().per_channel())?;
    /// let packed = model.quantize_embedding(&rtn)?;
    /// assert!(packed.storage_bytes() < 50 * 16 * 4 / 4);
    /// # Ok::<(), quantlens::Error>(())
    /// ```
    pub fn quantize_embedding(
        &mut self,
        quantizer: &dyn Quantizer,
    ) -> Result<EmbeddingQuantization> {
        if quantizer.uses_calibration() {
            return Err(Error::InvalidParameter {
                name: "quantizer",
                reason: format!(
                    "{} needs calibration inputs; an embedding table has none (use a data-free \
                     quantizer such as UniformQuantizer or Nf4Quantizer)",
                    quantizer.name()
                ),
            });
        }
        // Quantize every table before changing any, so an error leaves the model untouched.
        let embedding = quantizer.quantize(&self.embedding.as_tensor().detach(), None)?;
        let lm_head = match &self.lm_head {
            Some(head) => Some(quantizer.quantize(&head.as_tensor().detach(), None)?),
            None => None,
        };
        let device = self.embedding.device().clone();
        self.embedding.set(&embedding.dequantize(&device)?)?;
        if let (Some(head), Some(q)) = (&self.lm_head, &lm_head) {
            head.set(&q.dequantize(&device)?)?;
        }
        Ok(EmbeddingQuantization { embedding, lm_head })
    }
}
