//! The shape of a BERT encoder, read from a Hugging Face `config.json` or built for tests.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// The feed-forward non-linearity (`hidden_act` in `config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HiddenAct {
    /// `"gelu"`: the exact GELU, `x · Φ(x) = x/2 · (1 + erf(x/√2))` (BERT, MiniLM).
    #[default]
    Gelu,
    /// `"gelu_new"`, `"gelu_pytorch_tanh"`: the tanh approximation of GELU.
    GeluTanh,
    /// `"relu"`: `max(0, x)`.
    Relu,
}

impl HiddenAct {
    /// The `hidden_act` string of `config.json`, as Hugging Face spells it.
    fn parse(name: &str) -> Result<Self> {
        match name {
            "gelu" => Ok(HiddenAct::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(HiddenAct::GeluTanh),
            "relu" => Ok(HiddenAct::Relu),
            other => Err(Error::Unsupported(format!(
                "BERT hidden_act {other:?}; supported: \"gelu\" (exact, erf), \"gelu_new\" / \
                 \"gelu_pytorch_tanh\" (tanh approximation), \"relu\""
            ))),
        }
    }
}

/// The architecture of a [`BertEncoder`](super::BertEncoder): widths, depth, vocabulary and
/// the few constants the forward pass needs.
///
/// Read a checkpoint's with [`from_json_file`](Self::from_json_file); build a small one for
/// tests with [`new`](Self::new) and adjust the public fields.
///
/// ```
/// use quantlens::model::BertConfig;
///
/// let mut config = BertConfig::new(100, 32, 2, 4, 64);
/// config.max_position_embeddings = 16;
/// config.validate()?;
/// assert_eq!(config.head_dim(), 8);
///
/// config.num_attention_heads = 5; // 32 is not a multiple of 5
/// assert!(config.validate().is_err());
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BertConfig {
    /// Number of token ids (rows of the word-embedding table).
    pub vocab_size: usize,
    /// Width of the hidden states (and of the sentence embeddings).
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer; must divide `hidden_size`.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// The feed-forward non-linearity.
    pub hidden_act: HiddenAct,
    /// Longest sequence the position embeddings cover.
    pub max_position_embeddings: usize,
    /// Rows of the token-type (segment) table; the encoder uses type 0 only.
    pub type_vocab_size: usize,
    /// The ε of every LayerNorm.
    pub layer_norm_eps: f64,
    /// The id of `[PAD]`: positions holding it are masked out of attention and pooling.
    pub pad_token_id: u32,
    /// Standard deviation of the seeded random initialisation
    /// ([`BertEncoder::new`](super::BertEncoder::new)); not used when loading a checkpoint.
    pub initializer_range: f64,
}

/// The fields of `config.json` the encoder reads; everything else in the file is ignored.
#[derive(Deserialize)]
struct RawConfig {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    hidden_act: String,
    max_position_embeddings: usize,
    type_vocab_size: usize,
    layer_norm_eps: f64,
    #[serde(default)]
    pad_token_id: u32,
    #[serde(default = "default_initializer_range")]
    initializer_range: f64,
    #[serde(default)]
    position_embedding_type: Option<String>,
}

fn default_initializer_range() -> f64 {
    0.02
}

impl BertConfig {
    /// A configuration with the given widths and BERT's defaults for the rest: exact GELU,
    /// 512 positions, 2 token types, ε = 1e-12, `[PAD]` = 0, initializer range 0.02.
    ///
    /// The result is not validated here (fields may still be adjusted);
    /// [`BertEncoder::new`](super::BertEncoder::new) validates it.
    pub fn new(
        vocab_size: usize,
        hidden_size: usize,
        num_hidden_layers: usize,
        num_attention_heads: usize,
        intermediate_size: usize,
    ) -> Self {
        BertConfig {
            vocab_size,
            hidden_size,
            num_hidden_layers,
            num_attention_heads,
            intermediate_size,
            hidden_act: HiddenAct::Gelu,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            initializer_range: 0.02,
        }
    }

    /// Read and validate a Hugging Face `config.json`.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// [`from_json_file`](Self::from_json_file) from text in memory (errors name the file
    /// `<memory>`).
    ///
    /// ```
    /// use quantlens::model::{BertConfig, HiddenAct};
    ///
    /// let json = r#"{"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
    ///     "num_attention_heads": 12, "intermediate_size": 1536, "hidden_act": "gelu",
    ///     "max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
    ///     "pad_token_id": 0, "model_type": "bert"}"#;
    /// let config = BertConfig::from_json_str(json)?;
    /// assert_eq!((config.hidden_size, config.hidden_act), (384, HiddenAct::Gelu));
    ///
    /// let swish = json.replace("\"gelu\"", "\"swish\"");
    /// assert!(BertConfig::from_json_str(&swish).is_err());
    /// # Ok::<(), quantlens::Error>(())
    /// ```
    pub fn from_json_str(text: &str) -> Result<Self> {
        Self::parse(text, "<memory>")
    }

    fn parse(text: &str, path: &str) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| Error::Malformed {
            path: path.to_string(),
            reason: format!("not a BERT config.json: {e}"),
        })?;
        if let Some(kind) = &raw.position_embedding_type
            && kind != "absolute"
        {
            return Err(Error::Unsupported(format!(
                "BERT position_embedding_type {kind:?}; only \"absolute\" is implemented"
            )));
        }
        let config = BertConfig {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            intermediate_size: raw.intermediate_size,
            hidden_act: HiddenAct::parse(&raw.hidden_act)?,
            max_position_embeddings: raw.max_position_embeddings,
            type_vocab_size: raw.type_vocab_size,
            layer_norm_eps: raw.layer_norm_eps,
            pad_token_id: raw.pad_token_id,
            initializer_range: raw.initializer_range,
        };
        config.validate()?;
        Ok(config)
    }

    /// Check that the numbers fit together: every width at least 1, heads dividing the hidden
    /// width, `[PAD]` inside the vocabulary, a positive finite ε and initializer range.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |name: &'static str, reason: String| Err(Error::InvalidParameter { name, reason });
        let widths = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        if let Some((name, _)) = widths.iter().find(|(_, w)| *w == 0) {
            return bad(name, "must be at least 1".into());
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(
                "num_attention_heads",
                format!(
                    "hidden_size = {} is not a multiple of num_attention_heads = {}",
                    self.hidden_size, self.num_attention_heads
                ),
            );
        }
        if self.pad_token_id as usize >= self.vocab_size {
            return bad(
                "pad_token_id",
                format!(
                    "{} is outside the vocabulary 0..{}",
                    self.pad_token_id, self.vocab_size
                ),
            );
        }
        if !self.layer_norm_eps.is_finite() || self.layer_norm_eps <= 0.0 {
            return bad(
                "layer_norm_eps",
                format!("must be finite and > 0, got {}", self.layer_norm_eps),
            );
        }
        if !self.initializer_range.is_finite() || self.initializer_range <= 0.0 {
            return bad(
                "initializer_range",
                format!("must be finite and > 0, got {}", self.initializer_range),
            );
        }
        Ok(())
    }

    /// Width of one attention head, `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }
}
