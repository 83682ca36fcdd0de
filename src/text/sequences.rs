//! Token streams and the fixed-length windows cut from them: the unit of calibration,
//! perplexity and language-model training.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::rng::SplitMix64;
use crate::text::{TextCorpus, Tokenizer};

/// The documents of `corpus`, tokenized (without special tokens) and concatenated in corpus
/// order, with `separator` (e.g. the end-of-text id) between consecutive documents.
///
/// Documents are tokenized in parallel; the result does not depend on the thread count.
pub fn token_stream(
    corpus: &TextCorpus,
    tokenizer: &Tokenizer,
    separator: Option<u32>,
) -> Result<Vec<u32>> {
    let per_doc = corpus
        .documents()
        .par_iter()
        .map(|d| tokenizer.encode(&d.text))
        .collect::<Result<Vec<_>>>()?;
    let mut stream =
        Vec::with_capacity(per_doc.iter().map(Vec::len).sum::<usize>() + per_doc.len());
    for (i, ids) in per_doc.into_iter().enumerate() {
        if i > 0
            && let Some(sep) = separator
        {
            stream.push(sep);
        }
        stream.extend(ids);
    }
    Ok(stream)
}

/// Windows of `length` tokens taken every `stride` tokens from a stream, optionally framed by
/// special tokens (BERT's `[CLS] … [SEP]`): then each window holds `length` ids of which the
/// first and/or last are the framing tokens.
///
/// ```
/// use quantlens::text::TokenWindows;
///
/// let stream: Vec<u32> = (0..10).collect();
/// let w = TokenWindows::new(4, 3)?;
/// assert_eq!(w.windows(&stream).collect::<Vec<_>>(), [vec![0, 1, 2, 3], vec![3, 4, 5, 6], vec![6, 7, 8, 9]]);
/// let framed = TokenWindows::non_overlapping(4)?.framed(Some(101), Some(102))?;
/// assert_eq!(framed.windows(&stream).next(), Some(vec![101, 0, 1, 102]));
/// let batch = w.to_tensor(&stream, Some(2), &candle_core::Device::Cpu)?;
/// assert_eq!(batch.dims(), [2, 4]);
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenWindows {
    length: usize,
    stride: usize,
    prefix: Option<u32>,
    suffix: Option<u32>,
}

impl TokenWindows {
    /// Windows of `length ≥ 1` tokens every `stride ≥ 1` tokens (overlapping when
    /// `stride < length`, gapped when larger).
    pub fn new(length: usize, stride: usize) -> Result<Self> {
        if length == 0 {
            return Err(Error::InvalidParameter {
                name: "length",
                reason: "a window needs at least one token".into(),
            });
        }
        if stride == 0 {
            return Err(Error::InvalidParameter {
                name: "stride",
                reason: "the stride must be at least 1".into(),
            });
        }
        Ok(TokenWindows {
            length,
            stride,
            prefix: None,
            suffix: None,
        })
    }

    /// Disjoint, adjacent windows of `length` tokens.
    pub fn non_overlapping(length: usize) -> Result<Self> {
        TokenWindows::new(length, length)
    }

    /// Frame every window with `prefix` and `suffix` ids: a window then carries
    /// `length − framing` stream tokens (at least one) and the stride counts stream tokens. A
    /// non-overlapping layout (`stride == length`, as [`non_overlapping`](Self::non_overlapping)
    /// makes) stays non-overlapping: its stride becomes `length − framing`. Other strides are
    /// kept as given.
    pub fn framed(mut self, prefix: Option<u32>, suffix: Option<u32>) -> Result<Self> {
        self.prefix = prefix;
        self.suffix = suffix;
        if self.body() == 0 {
            return Err(Error::InvalidParameter {
                name: "length",
                reason: format!(
                    "{} leaves no room for stream tokens between the framing tokens",
                    self.length
                ),
            });
        }
        if self.stride > self.body() && self.stride == self.length {
            // A non-overlapping layout stays non-overlapping over the stream tokens.
            self.stride = self.body();
        }
        Ok(self)
    }

    /// Ids per window, framing included.
    pub fn length(&self) -> usize {
        self.length
    }

    /// Stream tokens between the starts of consecutive windows.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Stream tokens per window.
    fn body(&self) -> usize {
        self.length - usize::from(self.prefix.is_some()) - usize::from(self.suffix.is_some())
    }

    /// Append window `i` of `tokens` (framing included) to `out`; `i < count(tokens.len())`.
    fn push_window(&self, tokens: &[u32], i: usize, out: &mut Vec<u32>) {
        let start = i * self.stride;
        out.extend(self.prefix);
        out.extend_from_slice(&tokens[start..start + self.body()]);
        out.extend(self.suffix);
    }

    /// How many whole windows a stream of `stream_len` tokens gives.
    pub fn count(&self, stream_len: usize) -> usize {
        if stream_len < self.body() {
            0
        } else {
            (stream_len - self.body()) / self.stride + 1
        }
    }

    /// The whole windows of `tokens`, in order (a partial window at the end is dropped).
    pub fn windows<'a>(&self, tokens: &'a [u32]) -> impl Iterator<Item = Vec<u32>> + 'a {
        let me = *self;
        (0..self.count(tokens.len())).map(move |i| {
            let mut w = Vec::with_capacity(me.length);
            me.push_window(tokens, i, &mut w);
            w
        })
    }

    /// `n` distinct windows drawn uniformly at random (seeded), kept in stream order, as a
    /// `[n, length]` u32 tensor: a sample spread over the whole stream rather than its first
    /// documents. Errors when the stream has fewer than `n` whole windows, or `n` is 0.
    ///
    /// ```
    /// use quantlens::text::TokenWindows;
    ///
    /// let stream: Vec<u32> = (0..1000).collect();
    /// let w = TokenWindows::non_overlapping(10)?;
    /// let a = w.sample_tensor(&stream, 5, 7, &candle_core::Device::Cpu)?;
    /// assert_eq!(a.dims(), [5, 10]);
    /// assert_eq!(a.to_vec2::<u32>()?, w.sample_tensor(&stream, 5, 7, &candle_core::Device::Cpu)?.to_vec2::<u32>()?);
    /// # Ok::<(), quantlens::Error>(())
    /// ```
    pub fn sample_tensor(
        &self,
        tokens: &[u32],
        n: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Tensor> {
        let available = self.count(tokens.len());
        if n == 0 || n > available {
            return Err(Error::TooFewSamples {
                what: "whole windows in the token stream",
                needed: n.max(1),
                got: available,
            });
        }
        let mut starts: Vec<usize> = (0..available).collect();
        SplitMix64::new(seed).shuffle(&mut starts);
        starts.truncate(n);
        starts.sort_unstable();
        let mut flat = Vec::with_capacity(n * self.length);
        for i in starts {
            self.push_window(tokens, i, &mut flat);
        }
        Ok(Tensor::from_vec(flat, (n, self.length), device)?)
    }

    /// The first `limit` windows (all when `None`) as a `[n, length]` u32 tensor. Errors when
    /// the stream has no whole window.
    pub fn to_tensor(
        &self,
        tokens: &[u32],
        limit: Option<usize>,
        device: &Device,
    ) -> Result<Tensor> {
        let n = limit.map_or(self.count(tokens.len()), |l| {
            l.min(self.count(tokens.len()))
        });
        if n == 0 {
            return Err(Error::TooFewSamples {
                what: "tokens for one window",
                needed: self.body(),
                got: tokens.len(),
            });
        }
        let flat: Vec<u32> = self.windows(tokens).take(n).flatten().collect();
        Ok(Tensor::from_vec(flat, (n, self.length), device)?)
    }
}
