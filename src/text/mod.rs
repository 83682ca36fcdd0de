//! Text for the language models: tokenizers, the Python documentation corpus, token windows.
//!
//! - [`Tokenizer`]: SmolLM2's byte-level BPE rebuilt from its GGUF metadata, and MiniLM's
//!   WordPiece from `tokenizer.json` (both run by the `tokenizers` crate).
//! - [`TextCorpus`]: named documents read from a directory (the Python 3.11 docs of the fixture
//!   cache), split by document with a seed for membership experiments.
//! - [`token_stream`] and [`TokenWindows`]: documents → one token stream → fixed-length windows
//!   with a stride, as `[n, length]` tensors for calibration, perplexity and training.
//! - [`CompactVocabulary`]: a corpus re-indexed to its most frequent ids, for small models
//!   trained here.

mod compact;
mod corpus;
mod sequences;
mod tokenizer;

pub use compact::CompactVocabulary;
pub use corpus::{Document, TextCorpus};
pub use sequences::{TokenWindows, token_stream};
pub use tokenizer::{Tokenizer, TokenizerKind};
