//! One post-norm BERT encoder layer: multi-head self-attention and a feed-forward block, each
//! followed by a residual connection and a LayerNorm.

use candle_core::{Device, Tensor};

use crate::error::Result;
use crate::model::bert::config::{BertConfig, HiddenAct};
use crate::model::bert::norm::LayerNorm;
use crate::model::bert::params::{Init, ParamSource};
use crate::model::hooks::ForwardHook;
use crate::model::linear::LinearLayer;

/// One encoder layer. Its projections are [`LinearLayer`]s named
/// `blocks.{i}.attn.{q,k,v,o}_proj` and `blocks.{i}.mlp.{up,down}_proj`; the LayerNorms stay
/// in full precision.
#[derive(Debug, Clone)]
pub struct BertLayer {
    q_proj: LinearLayer,
    k_proj: LinearLayer,
    v_proj: LinearLayer,
    o_proj: LinearLayer,
    attention_norm: LayerNorm,
    up_proj: LinearLayer,
    down_proj: LinearLayer,
    output_norm: LayerNorm,
    heads: usize,
    act: HiddenAct,
}

impl BertLayer {
    pub(super) fn load(
        index: usize,
        config: &BertConfig,
        src: &mut dyn ParamSource,
        device: &Device,
    ) -> Result<Self> {
        let (h, ff) = (config.hidden_size, config.intermediate_size);
        let hf = format!("encoder.layer.{index}");
        let mut linear =
            |ours: &str, theirs: &str, out: usize, inp: usize| -> Result<LinearLayer> {
                let w = src.get(
                    &format!("{hf}.{theirs}.weight"),
                    &[out, inp],
                    Init::Normal,
                    device,
                )?;
                let b = src.get(&format!("{hf}.{theirs}.bias"), &[out], Init::Normal, device)?;
                LinearLayer::new(format!("blocks.{index}.{ours}"), w, Some(b))
            };
        let q_proj = linear("attn.q_proj", "attention.self.query", h, h)?;
        let k_proj = linear("attn.k_proj", "attention.self.key", h, h)?;
        let v_proj = linear("attn.v_proj", "attention.self.value", h, h)?;
        let o_proj = linear("attn.o_proj", "attention.output.dense", h, h)?;
        let up_proj = linear("mlp.up_proj", "intermediate.dense", ff, h)?;
        let down_proj = linear("mlp.down_proj", "output.dense", h, ff)?;
        let mut norm = |theirs: &str| -> Result<LayerNorm> {
            Ok(LayerNorm::new(
                src.get(
                    &format!("{hf}.{theirs}.LayerNorm.weight"),
                    &[h],
                    Init::OnePlusNormal,
                    device,
                )?,
                src.get(
                    &format!("{hf}.{theirs}.LayerNorm.bias"),
                    &[h],
                    Init::Normal,
                    device,
                )?,
                config.layer_norm_eps,
            ))
        };
        Ok(BertLayer {
            q_proj,
            k_proj,
            v_proj,
            o_proj,
            attention_norm: norm("attention.output")?,
            up_proj,
            down_proj,
            output_norm: norm("output")?,
            heads: config.num_attention_heads,
            act: config.hidden_act,
        })
    }

    /// The LayerNorm after the attention block's residual.
    pub fn attention_norm(&self) -> &LayerNorm {
        &self.attention_norm
    }

    /// The LayerNorm after the feed-forward block's residual.
    pub fn output_norm(&self) -> &LayerNorm {
        &self.output_norm
    }

    /// The projections in the order the forward pass runs them: q, k, v, o, up, down.
    pub fn linear_layers(&self) -> [&LinearLayer; 6] {
        [
            &self.q_proj,
            &self.k_proj,
            &self.v_proj,
            &self.o_proj,
            &self.up_proj,
            &self.down_proj,
        ]
    }

    pub(super) fn linear_layers_mut(&mut self) -> [&mut LinearLayer; 6] {
        [
            &mut self.q_proj,
            &mut self.k_proj,
            &mut self.v_proj,
            &mut self.o_proj,
            &mut self.up_proj,
            &mut self.down_proj,
        ]
    }

    /// `x: [b, t, hidden]` → `[b, t, hidden]`; `mask_bias: [b, 1, 1, t]` is 0 for real keys
    /// and a huge negative number for padding.
    pub(super) fn forward(
        &self,
        x: &Tensor,
        mask_bias: &Tensor,
        hooks: &mut dyn ForwardHook,
    ) -> Result<Tensor> {
        let attended = self.attention(x, mask_bias, hooks)?;
        let h = self.attention_norm.forward(&(x + attended)?)?;
        let up = self.up_proj.forward(&h, hooks)?;
        let up = match self.act {
            HiddenAct::Gelu => up.gelu_erf()?,
            HiddenAct::GeluTanh => up.gelu()?,
            HiddenAct::Relu => up.relu()?,
        };
        let down = self.down_proj.forward(&up, hooks)?;
        self.output_norm.forward(&(h + down)?)
    }

    /// Multi-head scaled dot-product self-attention, output projection included.
    fn attention(
        &self,
        x: &Tensor,
        mask_bias: &Tensor,
        hooks: &mut dyn ForwardHook,
    ) -> Result<Tensor> {
        let (b, t, hidden) = x.dims3()?;
        let head_dim = hidden / self.heads;
        // [b, t, hidden] → [b, heads, t, head_dim]
        let split = |y: Tensor| -> Result<Tensor> {
            Ok(y.reshape((b, t, self.heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = split(self.q_proj.forward(x, hooks)?)?;
        let k = split(self.k_proj.forward(x, hooks)?)?;
        let v = split(self.v_proj.forward(x, hooks)?)?;
        let scores = (q.matmul(&k.t()?.contiguous()?)? / (head_dim as f64).sqrt())?
            .broadcast_add(mask_bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, hidden))?;
        self.o_proj.forward(&context, hooks)
    }
}
