//! Tokenizers of the crate's real models: WordPiece from a `tokenizer.json` (all-MiniLM-L6-v2)
//! and byte-level BPE rebuilt from a GGUF file's metadata (SmolLM2).
//!
//! Both are thin wrappers over the `tokenizers` crate (already a dependency of Candle), so the
//! algorithms are Hugging Face's; what this file adds is the construction from GGUF metadata,
//! the special-token conventions, and errors in the crate's own type.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper};

use crate::data::fixture_path;
use crate::error::{Error, Result};

/// GGUF token type of control tokens (`<|im_start|>`, `<|endoftext|>`): matched literally in
/// text, never split by the BPE.
const GGUF_CONTROL_TOKEN: i32 = 3;

/// Which tokenization algorithm a [`Tokenizer`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenizerKind {
    /// GPT-2-style byte-level BPE (lossless: every string round-trips).
    ByteLevelBpe,
    /// BERT's WordPiece (lower-cases and strips accents for uncased models, so it does not
    /// round-trip text exactly).
    WordPiece,
    /// Anything else a `tokenizer.json` describes.
    Other,
}

/// A text tokenizer with the special-token ids the models need.
///
/// ```no_run
/// use quantlens::text::Tokenizer;
///
/// // The fixtures of scripts/fetch-fixtures.sh.
/// let bpe = Tokenizer::smollm2()?;
/// let ids = bpe.encode("Quantization changes what a model leaks.")?;
/// assert_eq!(bpe.decode(&ids)?, "Quantization changes what a model leaks.");
///
/// let wordpiece = Tokenizer::minilm()?;
/// assert_eq!(wordpiece.encode_with_special("Hello world!")?, [101, 7592, 2088, 999, 102]);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    kind: TokenizerKind,
    bos: Option<u32>,
    eos: Option<u32>,
    pad: Option<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind)
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("pad", &self.pad)
            .finish()
    }
}

fn tokenizer_error(context: &str, e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(format!("{context}: {e}"))
}

impl Tokenizer {
    /// A tokenizer from a Hugging Face `tokenizer.json`. Padding and truncation settings in
    /// the file are dropped (quantlens pads and cuts sequences itself); the padding id is
    /// taken from the `[PAD]` token when the vocabulary has one.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| tokenizer_error(&path.display().to_string(), e))?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| tokenizer_error("dropping truncation", e))?;
        let kind = match inner.get_model() {
            tokenizers::ModelWrapper::WordPiece(_) => TokenizerKind::WordPiece,
            tokenizers::ModelWrapper::BPE(_) => TokenizerKind::ByteLevelBpe,
            _ => TokenizerKind::Other,
        };
        let find = |names: &[&str]| names.iter().find_map(|n| inner.token_to_id(n));
        let bos = find(&["[CLS]", "<s>", "<|begin_of_text|>"]);
        let eos = find(&["[SEP]", "</s>", "<|endoftext|>"]);
        let pad = find(&["[PAD]", "<pad>"]);
        Ok(Tokenizer {
            inner,
            kind,
            bos,
            eos,
            pad,
        })
    }

    /// all-MiniLM-L6-v2's WordPiece tokenizer from the fixture cache
    /// (`minilm/tokenizer.json`).
    pub fn minilm() -> Result<Self> {
        Tokenizer::from_file(fixture_path("minilm/tokenizer.json")?)
    }

    /// The byte-level BPE tokenizer stored in a GGUF file's metadata
    /// (`tokenizer.ggml.model = "gpt2"`: `tokens`, `merges`, `token_type`, BOS/EOS ids).
    ///
    /// The pre-tokenizer follows `tokenizer.ggml.pre`: `smollm` (SmolLM/SmolLM2) splits every
    /// digit into its own piece before GPT-2's split, as Hugging Face's tokenizer for those
    /// models does; `gpt2` and `default` use GPT-2's split alone. Control tokens (GGUF token
    /// type 3) are matched literally in the text.
    pub fn from_gguf(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let mut file = std::fs::File::open(path).map_err(|source| Error::Io {
            path: shown.clone(),
            source,
        })?;
        let content = gguf_file::Content::read(&mut file).map_err(|e| Error::Malformed {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        Tokenizer::from_gguf_metadata(&content.metadata, &shown)
    }

    /// SmolLM2-135M-Instruct's tokenizer from the fixture cache.
    pub fn smollm2() -> Result<Self> {
        Tokenizer::from_gguf(fixture_path("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")?)
    }

    fn from_gguf_metadata(meta: &HashMap<String, gguf_file::Value>, path: &str) -> Result<Self> {
        let malformed = |reason: String| Error::Malformed {
            path: path.to_string(),
            reason,
        };
        let get = |key: &str| {
            meta.get(key)
                .ok_or_else(|| malformed(format!("metadata key {key} is missing")))
        };
        let model = get("tokenizer.ggml.model")?
            .to_string()
            .map_err(|e| malformed(format!("tokenizer.ggml.model: {e}")))?;
        if model != "gpt2" {
            return Err(Error::Unsupported(format!(
                "{path}: tokenizer model {model:?} (only GPT-2-style byte-level BPE, \"gpt2\", is supported)"
            )));
        }
        let pre = match meta.get("tokenizer.ggml.pre") {
            Some(v) => v
                .to_string()
                .map_err(|e| malformed(format!("tokenizer.ggml.pre: {e}")))?
                .clone(),
            None => "default".to_string(),
        };
        let split_digits = match pre.as_str() {
            "smollm" => true,
            "gpt2" | "default" => false,
            other => {
                return Err(Error::Unsupported(format!(
                    "{path}: pre-tokenizer {other:?} (supported: smollm, gpt2, default)"
                )));
            }
        };
        let strings = |key: &str| -> Result<Vec<String>> {
            get(key)?
                .to_vec()
                .map_err(|e| malformed(format!("{key}: {e}")))?
                .iter()
                .map(|v| {
                    v.to_string()
                        .cloned()
                        .map_err(|e| malformed(format!("{key}: {e}")))
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let types: Vec<i32> = match meta.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(|e| malformed(format!("tokenizer.ggml.token_type: {e}")))?
                .iter()
                .map(|t| {
                    t.to_i32()
                        .map_err(|e| malformed(format!("tokenizer.ggml.token_type: {e}")))
                })
                .collect::<Result<_>>()?,
            None => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(malformed(format!(
                "{} token types for {} tokens",
                types.len(),
                tokens.len()
            )));
        }
        let id_of = |key: &str| -> Result<Option<u32>> {
            match meta.get(key) {
                Some(v) => {
                    let id = v.to_u32().map_err(|e| malformed(format!("{key}: {e}")))?;
                    if id as usize >= tokens.len() {
                        return Err(malformed(format!(
                            "{key} = {id} is outside the vocabulary of {}",
                            tokens.len()
                        )));
                    }
                    Ok(Some(id))
                }
                None => Ok(None),
            }
        };
        let bos = id_of("tokenizer.ggml.bos_token_id")?;
        let eos = id_of("tokenizer.ggml.eos_token_id")?;
        let pad = id_of("tokenizer.ggml.padding_token_id")?;

        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        if vocab.len() != tokens.len() {
            return Err(malformed(
                "tokenizer.ggml.tokens has duplicate entries".into(),
            ));
        }
        let merges = merges
            .iter()
            .enumerate()
            .map(|(i, m)| match m.split_once(' ') {
                Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => {
                    Ok((a.to_string(), b.to_string()))
                }
                _ => Err(malformed(format!(
                    "merge {i} ({m:?}) is not two tokens separated by one space"
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| malformed(format!("BPE tables: {e}")))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        let byte_level = ByteLevel::new(false, true, true);
        let pre_tokenizer: PreTokenizerWrapper = if split_digits {
            Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
        } else {
            byte_level.into()
        };
        inner.with_pre_tokenizer(Some(pre_tokenizer));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let control: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| **t == GGUF_CONTROL_TOKEN)
            .map(|(s, _)| AddedToken::from(s.clone(), true))
            .collect();
        inner
            .add_special_tokens(control)
            .map_err(|e| tokenizer_error("control tokens", e))?;
        Ok(Tokenizer {
            inner,
            kind: TokenizerKind::ByteLevelBpe,
            bos,
            eos,
            pad,
        })
    }

    /// The algorithm.
    pub fn kind(&self) -> TokenizerKind {
        self.kind
    }

    /// Vocabulary size, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Beginning-of-sequence id (`[CLS]` for BERT).
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// End-of-sequence id (`[SEP]` for BERT, `<|im_end|>`'s GGUF EOS for SmolLM2-Instruct).
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Padding id.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad
    }

    /// The id of a token string (`"[CLS]"`, `"<|im_start|>"`, `"Ġthe"`).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The token string of an id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Token ids of `text`, with no special tokens added (control tokens written in the text,
    /// such as `<|im_start|>`, are still recognised).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.ids(text, false)
    }

    /// Token ids of `text` with the model's special tokens added by its post-processor
    /// (`[CLS] … [SEP]` for BERT; nothing for SmolLM2, which adds no BOS).
    pub fn encode_with_special(&self, text: &str) -> Result<Vec<u32>> {
        self.ids(text, true)
    }

    fn ids(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| tokenizer_error("encode", e))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`, special tokens included. Ids outside the vocabulary are an error.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.text(ids, false)
    }

    /// The text of `ids` with special tokens left out.
    pub fn decode_skipping_special(&self, ids: &[u32]) -> Result<String> {
        self.text(ids, true)
    }

    /// Ids outside the vocabulary are refused here: the `tokenizers` crate would silently drop
    /// them from the text.
    fn text(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let vocab = self.vocab_size();
        if let Some(i) = ids.iter().position(|&id| id as usize >= vocab) {
            return Err(Error::TargetOutOfRange {
                what: "token ids",
                index: i,
                value: ids[i] as i64,
                classes: vocab,
            });
        }
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| tokenizer_error("decode", e))
    }
}
