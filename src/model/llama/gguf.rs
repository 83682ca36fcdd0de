//! Loading a Llama-architecture GGUF checkpoint (llama.cpp's format): the configuration from
//! the `llama.*` metadata, every tensor dequantized to f32, and a record of how each one was
//! stored in the file.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::Device;
use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::{Content, Value};

use crate::error::{Error, Result};
use crate::model::llama::config::{LlamaConfig, RopeStyle};
use crate::model::llama::{BlockWeights, Llama, Weights};

/// GGUF tensor names of a block's projections, in the order of `PROJECTIONS`.
const GGUF_PROJECTIONS: [&str; 7] = [
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];

/// The storage format of every tensor a model was loaded from, by GGUF tensor name, so that a
/// report can say what its "full-precision" reference really is (SmolLM2's GGUF is a Q4_1
/// checkpoint: its f32 weights are dequantized 4-bit values).
///
/// ```no_run
/// # use candle_core::Device;
/// # use quantlens::model::Llama;
/// let model = Llama::from_gguf("SmolLM2-135M-Instruct.Q4_1.gguf", &Device::Cpu)?;
/// let src = model.source_formats().unwrap();
/// println!("{src}"); // SmolLM2-135M-Instruct.Q4_1.gguf: 210× Q4_1, 61× F32, 1× Q8_0
/// assert_eq!(src.format("blk.0.attn_q.weight"), Some("Q4_1"));
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFormats {
    path: PathBuf,
    formats: BTreeMap<String, String>,
}

impl SourceFormats {
    /// The file the weights were read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Format of every loaded tensor (`"Q4_1"`, `"Q8_0"`, `"F32"`, …), by GGUF tensor name.
    pub fn by_tensor(&self) -> &BTreeMap<String, String> {
        &self.formats
    }

    /// The format of one tensor.
    pub fn format(&self, tensor: &str) -> Option<&str> {
        self.formats.get(tensor).map(String::as_str)
    }

    /// How many tensors of each format, most frequent first: `210× Q4_1, 61× F32, 1× Q8_0`.
    pub fn summary(&self) -> String {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for f in self.formats.values() {
            *counts.entry(f).or_default() += 1;
        }
        let mut counts: Vec<(&str, usize)> = counts.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        counts
            .iter()
            .map(|(f, n)| format!("{n}× {f}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for SourceFormats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.path.file_name().unwrap_or(self.path.as_os_str());
        write!(f, "{}: {}", name.to_string_lossy(), self.summary())
    }
}

impl Llama {
    /// SmolLM2-135M-Instruct from the fixture cache
    /// (`smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`, filled by `scripts/fetch-fixtures.sh`),
    /// dequantized to f32. Its weights carry Q4_1 rounding: say so wherever it serves as the
    /// full-precision reference ([`Llama::source_formats`]).
    pub fn smollm2(device: &Device) -> Result<Self> {
        Llama::from_gguf(
            crate::data::fixture_path("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")?,
            device,
        )
    }

    /// Load a GGUF checkpoint of architecture `llama` (SmolLM2, TinyLlama, Llama 2/3, …),
    /// dequantizing every tensor to f32 on `device`.
    ///
    /// The configuration comes from the metadata (`llama.block_count`, `embedding_length`,
    /// `feed_forward_length`, `attention.head_count`, `attention.head_count_kv`,
    /// `rope.freq_base`, `attention.layer_norm_rms_epsilon`, `context_length`), the vocabulary
    /// size from `token_embd.weight`, tied embeddings from the absence of `output.weight`.
    /// RoPE is [`Interleaved`](RopeStyle::Interleaved): llama.cpp's converter permutes the q/k
    /// rows for it. [`Llama::source_formats`] records each tensor's format in the file.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be opened, [`Error::Malformed`] when it is not GGUF,
    /// lacks a metadata key or a tensor, or holds a tensor of the wrong shape, and
    /// [`Error::Unsupported`] for another architecture, a mixture of experts, partial RoPE or
    /// RoPE scaling (Llama 3.1's `rope_freqs`, linear or YaRN context extension).
    pub fn from_gguf(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let malformed = |reason: String| Error::Malformed {
            path: path.display().to_string(),
            reason,
        };
        let file = File::open(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut reader = BufReader::new(file);
        let content =
            Content::read(&mut reader).map_err(|e| malformed(format!("not a GGUF file: {e}")))?;
        let config = config_from_metadata(&content, path)?;

        let mut formats = BTreeMap::new();
        let mut load = |name: &str, shape: &[usize]| -> Result<candle_core::Tensor> {
            let info = content
                .tensor_infos
                .get(name)
                .ok_or_else(|| malformed(format!("missing tensor {name}")))?;
            if info.shape.dims() != shape {
                return Err(malformed(format!(
                    "tensor {name} has shape {:?}, the metadata implies {shape:?}",
                    info.shape.dims()
                )));
            }
            let q = content
                .tensor(&mut reader, name, device)
                .map_err(|e| malformed(format!("tensor {name}: {e}")))?;
            formats.insert(name.to_string(), ggml_name(info.ggml_dtype).to_string());
            Ok(q.dequantize(device)?)
        };

        let (v, h) = (config.vocab_size, config.hidden_size);
        let embedding = load("token_embd.weight", &[v, h])?;
        let lm_head = if config.tie_embeddings {
            None
        } else {
            Some(load("output.weight", &[v, h])?)
        };
        let final_norm = load("output_norm.weight", &[h])?;
        let shapes = super::projection_shapes(&config);
        let mut blocks = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let linear = GGUF_PROJECTIONS
                .iter()
                .zip(shapes)
                .map(|(p, (o, n))| load(&format!("blk.{i}.{p}.weight"), &[o, n]))
                .collect::<Result<Vec<_>>>()?;
            blocks.push(BlockWeights {
                attn_norm: load(&format!("blk.{i}.attn_norm.weight"), &[h])?,
                mlp_norm: load(&format!("blk.{i}.ffn_norm.weight"), &[h])?,
                linear,
            });
        }
        let weights = Weights {
            embedding,
            lm_head,
            final_norm,
            blocks,
        };
        let source = SourceFormats {
            path: path.to_path_buf(),
            formats,
        };
        Llama::from_weights(config, weights, Some(source), device)
    }
}

/// The model configuration the `llama.*` metadata and the embedding's shape describe.
fn config_from_metadata(content: &Content, path: &Path) -> Result<LlamaConfig> {
    let malformed = |reason: String| Error::Malformed {
        path: path.display().to_string(),
        reason,
    };
    let md = &content.metadata;
    let arch = match md.get("general.architecture") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(malformed("no general.architecture string".into())),
    };
    if arch != "llama" {
        return Err(Error::Unsupported(format!(
            "{}: architecture {arch:?}; Llama::from_gguf reads \"llama\" checkpoints",
            path.display()
        )));
    }
    let int = |key: &str| -> Result<Option<usize>> {
        match md.get(&format!("llama.{key}")) {
            None => Ok(None),
            Some(v) => as_usize(v)
                .map(Some)
                .ok_or_else(|| malformed(format!("llama.{key} is not a non-negative integer"))),
        }
    };
    let float = |key: &str| -> Result<Option<f64>> {
        match md.get(&format!("llama.{key}")) {
            None => Ok(None),
            Some(v) => as_f64(v)
                .map(Some)
                .ok_or_else(|| malformed(format!("llama.{key} is not a number"))),
        }
    };
    let required = |key: &str, v: Option<usize>| {
        v.ok_or_else(|| malformed(format!("missing metadata key llama.{key}")))
    };
    if int("expert_count")?.unwrap_or(0) > 1 {
        return Err(Error::Unsupported(format!(
            "{}: a mixture-of-experts checkpoint",
            path.display()
        )));
    }
    // Llama 3.1-style frequency scaling and linear/YaRN context extension change every RoPE
    // angle; loading such a file as plain RoPE would give wrong logits, so refuse it.
    let scaling = match md.get("llama.rope.scaling.type") {
        Some(Value::String(s)) => s.as_str(),
        _ => "none",
    };
    if scaling != "none" || content.tensor_infos.contains_key("rope_freqs.weight") {
        return Err(Error::Unsupported(format!(
            "{}: RoPE scaling ({}) is not implemented",
            path.display(),
            if scaling != "none" {
                scaling
            } else {
                "rope_freqs.weight"
            }
        )));
    }
    let num_layers = required("block_count", int("block_count")?)?;
    let hidden_size = required("embedding_length", int("embedding_length")?)?;
    let intermediate_size = required("feed_forward_length", int("feed_forward_length")?)?;
    let num_heads = required("attention.head_count", int("attention.head_count")?)?;
    // Absent in multi-head checkpoints: one KV head per query head.
    let num_kv_heads = int("attention.head_count_kv")?.unwrap_or(num_heads);
    let max_seq_len = required("context_length", int("context_length")?)?;
    let rms_eps = float("attention.layer_norm_rms_epsilon")?
        .ok_or_else(|| malformed("missing llama.attention.layer_norm_rms_epsilon".into()))?;
    // llama.cpp's default when the key is absent.
    let rope_theta = float("rope.freq_base")?.unwrap_or(10_000.0);
    if num_heads == 0 {
        return Err(malformed("llama.attention.head_count is 0".into()));
    }
    let head_dim = int("attention.key_length")?.unwrap_or(hidden_size / num_heads);
    if let Some(rope_dim) = int("rope.dimension_count")?
        && rope_dim != head_dim
    {
        return Err(Error::Unsupported(format!(
            "{}: RoPE on {rope_dim} of {head_dim} head dimensions (partial rotary)",
            path.display()
        )));
    }
    let embd = content
        .tensor_infos
        .get("token_embd.weight")
        .ok_or_else(|| malformed("missing tensor token_embd.weight".into()))?;
    let vocab_size = match *embd.shape.dims() {
        [v, h] if h == hidden_size => v,
        _ => {
            return Err(malformed(format!(
                "token_embd.weight has shape {:?}, expected [vocab, {hidden_size}]",
                embd.shape.dims()
            )));
        }
    };
    let config = LlamaConfig {
        vocab_size,
        hidden_size,
        intermediate_size,
        num_layers,
        num_heads,
        num_kv_heads,
        head_dim,
        rope_theta,
        rms_eps,
        max_seq_len,
        tie_embeddings: !content.tensor_infos.contains_key("output.weight"),
        rope_style: RopeStyle::Interleaved,
    };
    config
        .validate()
        .map_err(|e| malformed(format!("inconsistent llama.* metadata: {e}")))?;
    Ok(config)
}

fn as_usize(v: &Value) -> Option<usize> {
    let n: i128 = match *v {
        Value::U8(x) => x.into(),
        Value::I8(x) => x.into(),
        Value::U16(x) => x.into(),
        Value::I16(x) => x.into(),
        Value::U32(x) => x.into(),
        Value::I32(x) => x.into(),
        Value::U64(x) => x.into(),
        Value::I64(x) => x.into(),
        _ => return None,
    };
    usize::try_from(n).ok()
}

fn as_f64(v: &Value) -> Option<f64> {
    match *v {
        Value::F32(x) => Some(x.into()),
        Value::F64(x) => Some(x),
        _ => as_usize(v).map(|n| n as f64),
    }
}

/// GGML's own spelling of a tensor type (`Q4_K`, where Candle's `Debug` writes `Q4K`), so
/// [`SourceFormats`] and our GGUF errors name types alike.
fn ggml_name(dtype: GgmlDType) -> &'static str {
    match dtype {
        GgmlDType::F32 => "F32",
        GgmlDType::F16 => "F16",
        GgmlDType::BF16 => "BF16",
        GgmlDType::Q4_0 => "Q4_0",
        GgmlDType::Q4_1 => "Q4_1",
        GgmlDType::Q5_0 => "Q5_0",
        GgmlDType::Q5_1 => "Q5_1",
        GgmlDType::Q8_0 => "Q8_0",
        GgmlDType::Q8_1 => "Q8_1",
        GgmlDType::Q2K => "Q2_K",
        GgmlDType::Q3K => "Q3_K",
        GgmlDType::Q4K => "Q4_K",
        GgmlDType::Q5K => "Q5_K",
        GgmlDType::Q6K => "Q6_K",
        GgmlDType::Q8K => "Q8_K",
    }
}
