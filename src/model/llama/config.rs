//! The shape of a Llama-family decoder: sizes, attention layout, RoPE and normalisation
//! constants, validated before any weight is allocated.

use crate::error::{Error, Result};

/// How rotary position embeddings pair the dimensions of a head.
///
/// Both rotate pairs of dimensions by the angle `pos · θ^(−2i/d)`; they differ in which two
/// dimensions form pair `i`. A checkpoint's q/k projection rows are laid out for one of them, so
/// the style must match the file: GGUF (llama.cpp's converter permutes q/k rows) uses
/// [`Interleaved`](Self::Interleaved), Hugging Face checkpoints use [`Halves`](Self::Halves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RopeStyle {
    /// Pairs `(2i, 2i + 1)`: the GGML / GGUF layout (`candle_nn::rotary_emb::rope_i`).
    #[default]
    Interleaved,
    /// Pairs `(i, i + d/2)`: Hugging Face's `rotate_half` (`candle_nn::rotary_emb::rope`).
    Halves,
}

/// Sizes and constants of a [`Llama`](super::Llama) model.
///
/// Build one with [`LlamaConfig::smollm2_135m`] or [`LlamaConfig::tiny`] and adjust it with the
/// builder methods; [`validate`](Self::validate) (called by every constructor of the model)
/// checks that the pieces fit together.
///
/// ```
/// use quantlens::model::{LlamaConfig, RopeStyle};
///
/// let cfg = LlamaConfig::tiny(64, 32, 2, 4, 2).rope_style(RopeStyle::Halves).max_seq_len(16);
/// assert_eq!(cfg.head_dim, 8);
/// cfg.validate()?;
/// assert!(LlamaConfig::tiny(64, 32, 2, 4, 3).validate().is_err()); // 4 heads, 3 KV heads
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LlamaConfig {
    /// Number of token ids (rows of the embedding).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP's gate and up projections.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_layers: usize,
    /// Number of query heads.
    pub num_heads: usize,
    /// Number of key/value heads (grouped-query attention when fewer than `num_heads`).
    pub num_kv_heads: usize,
    /// Width of one head; `num_heads · head_dim` must equal `hidden_size`.
    pub head_dim: usize,
    /// RoPE base `θ`.
    pub rope_theta: f64,
    /// The `ε` under the square root of every RMSNorm.
    pub rms_eps: f64,
    /// Longest sequence the model accepts (the RoPE tables are built for it).
    pub max_seq_len: usize,
    /// Whether the LM head reuses the token embedding matrix.
    pub tie_embeddings: bool,
    /// Which dimensions RoPE pairs.
    pub rope_style: RopeStyle,
}

impl LlamaConfig {
    /// SmolLM2-135M (Hugging Face's `HuggingFaceTB/SmolLM2-135M`): 30 blocks of width 576,
    /// SwiGLU width 1536, 9 query heads sharing 3 KV heads of width 64, RoPE θ = 100 000,
    /// RMSNorm ε = 1e-5, vocabulary 49 152, tied embeddings, 8192-token context, interleaved
    /// RoPE (the GGUF layout).
    pub fn smollm2_135m() -> Self {
        LlamaConfig {
            vocab_size: 49_152,
            hidden_size: 576,
            intermediate_size: 1536,
            num_layers: 30,
            num_heads: 9,
            num_kv_heads: 3,
            head_dim: 64,
            rope_theta: 100_000.0,
            rms_eps: 1e-5,
            max_seq_len: 8192,
            tie_embeddings: true,
            rope_style: RopeStyle::Interleaved,
        }
    }

    /// A small model for experiments and tests: `head_dim = hidden_size / num_heads`, SwiGLU
    /// width `⌈8·hidden/3⌉` rounded up to a multiple of 8 (Llama's ratio), RoPE θ = 10 000,
    /// ε = 1e-5, 256-token context, tied embeddings, interleaved RoPE.
    pub fn tiny(
        vocab_size: usize,
        hidden_size: usize,
        num_layers: usize,
        num_heads: usize,
        num_kv_heads: usize,
    ) -> Self {
        LlamaConfig {
            vocab_size,
            hidden_size,
            intermediate_size: (8 * hidden_size).div_ceil(3).div_ceil(8) * 8,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim: hidden_size.checked_div(num_heads).unwrap_or(0),
            rope_theta: 10_000.0,
            rms_eps: 1e-5,
            max_seq_len: 256,
            tie_embeddings: true,
            rope_style: RopeStyle::Interleaved,
        }
    }

    /// A different SwiGLU width.
    pub fn intermediate_size(mut self, n: usize) -> Self {
        self.intermediate_size = n;
        self
    }

    /// A different context length.
    pub fn max_seq_len(mut self, n: usize) -> Self {
        self.max_seq_len = n;
        self
    }

    /// A different RoPE pairing.
    pub fn rope_style(mut self, style: RopeStyle) -> Self {
        self.rope_style = style;
        self
    }

    /// A different RoPE base.
    pub fn rope_theta(mut self, theta: f64) -> Self {
        self.rope_theta = theta;
        self
    }

    /// A different RMSNorm ε.
    pub fn rms_eps(mut self, eps: f64) -> Self {
        self.rms_eps = eps;
        self
    }

    /// A separate LM head (`false`) or the embedding reused (`true`).
    pub fn tie_embeddings(mut self, tie: bool) -> Self {
        self.tie_embeddings = tie;
        self
    }

    /// Queries per key/value head.
    pub fn kv_groups(&self) -> usize {
        self.num_heads.checked_div(self.num_kv_heads).unwrap_or(0)
    }

    /// Check that the sizes fit together: every size at least 1, `hidden = heads · head_dim`,
    /// `heads` a multiple of `kv_heads`, an even `head_dim` (RoPE rotates pairs), finite
    /// positive θ and ε.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |name: &'static str, reason: String| Err(Error::InvalidParameter { name, reason });
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("max_seq_len", self.max_seq_len),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return bad(name, "must be at least 1".into());
        }
        if self.num_heads * self.head_dim != self.hidden_size {
            return bad(
                "head_dim",
                format!(
                    "num_heads · head_dim = {} · {} must equal hidden_size = {}",
                    self.num_heads, self.head_dim, self.hidden_size
                ),
            );
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(
                "num_kv_heads",
                format!(
                    "num_heads = {} must be a multiple of num_kv_heads = {}",
                    self.num_heads, self.num_kv_heads
                ),
            );
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(
                "head_dim",
                format!("must be even (RoPE rotates pairs), got {}", self.head_dim),
            );
        }
        if self.rope_theta.is_nan() || self.rope_theta <= 0.0 || self.rope_theta.is_infinite() {
            return bad(
                "rope_theta",
                format!("must be finite and > 0, got {}", self.rope_theta),
            );
        }
        if self.rms_eps.is_nan() || self.rms_eps <= 0.0 || self.rms_eps.is_infinite() {
            return bad(
                "rms_eps",
                format!("must be finite and > 0, got {}", self.rms_eps),
            );
        }
        Ok(())
    }
}
