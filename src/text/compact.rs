//! A compact vocabulary: the most frequent ids of a token stream plus one shared id for
//! every other token.
//!
//! A small model trained here with SmolLM2's 49,152-token vocabulary spends most of its
//! parameters, and most of its memorisation, in the embedding. Re-indexing a corpus to the few
//! thousand ids it actually uses keeps the tokenizer's segmentation while making the decoder's
//! blocks, which quantizers touch, the bulk of the model.

use std::collections::HashMap;

use crate::error::{Error, Result};

/// The `size − 1` most frequent ids of a stream, re-indexed `0..size − 1` by decreasing
/// frequency (ties: the smaller original id first), and `size − 1` for everything else.
///
/// ```
/// use quantlens::text::CompactVocabulary;
///
/// let stream = [7, 7, 7, 3, 3, 9, 1];
/// let vocab = CompactVocabulary::most_frequent(&stream, 3)?;
/// // 7 → 0, 3 → 1; 9 and 1 share the "other" id 2.
/// assert_eq!(vocab.encode(&[7, 3, 9, 1, 42]), vec![0, 1, 2, 2, 2]);
/// assert_eq!(vocab.original(1), Some(3));
/// assert_eq!(vocab.original(2), None);
/// assert!((vocab.coverage(&stream) - 5.0 / 7.0).abs() < 1e-12);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactVocabulary {
    /// Original id → compact id, for the kept ids.
    to_compact: HashMap<u32, u32>,
    /// Compact id → original id, for the kept ids (`size − 1` entries at most).
    kept: Vec<u32>,
    /// Number of compact ids, the "other" id included.
    size: usize,
}

impl CompactVocabulary {
    /// Keep the `size − 1` most frequent ids of `stream` (fewer if the stream has fewer
    /// distinct ids; `size` stays as asked, so a model's vocabulary does not depend on the
    /// data). Errors: `size < 2` or an empty stream.
    pub fn most_frequent(stream: &[u32], size: usize) -> Result<Self> {
        if size < 2 {
            return Err(Error::InvalidParameter {
                name: "size",
                reason: format!("a compact vocabulary needs at least 2 ids, got {size}"),
            });
        }
        if stream.is_empty() {
            return Err(Error::TooFewSamples {
                what: "tokens to count for a compact vocabulary",
                needed: 1,
                got: 0,
            });
        }
        let mut counts: HashMap<u32, usize> = HashMap::new();
        for &id in stream {
            *counts.entry(id).or_default() += 1;
        }
        let mut by_count: Vec<(u32, usize)> = counts.into_iter().collect();
        by_count.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let kept: Vec<u32> = by_count
            .into_iter()
            .take(size - 1)
            .map(|(id, _)| id)
            .collect();
        let to_compact = kept
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i as u32))
            .collect();
        Ok(CompactVocabulary {
            to_compact,
            kept,
            size,
        })
    }

    /// Number of compact ids, the "other" id included: the model's vocabulary size.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The id shared by every token not kept: `size − 1`.
    pub fn other_id(&self) -> u32 {
        (self.size - 1) as u32
    }

    /// Compact ids of `ids`.
    pub fn encode(&self, ids: &[u32]) -> Vec<u32> {
        let other = self.other_id();
        ids.iter()
            .map(|id| self.to_compact.get(id).copied().unwrap_or(other))
            .collect()
    }

    /// The original id of a compact id; `None` for the "other" id or an id out of range.
    pub fn original(&self, compact: u32) -> Option<u32> {
        self.kept.get(compact as usize).copied()
    }

    /// Share of `stream`'s tokens that keep their own id (0 for an empty stream).
    pub fn coverage(&self, stream: &[u32]) -> f64 {
        if stream.is_empty() {
            return 0.0;
        }
        let kept = stream
            .iter()
            .filter(|id| self.to_compact.contains_key(id))
            .count();
        kept as f64 / stream.len() as f64
    }
}
