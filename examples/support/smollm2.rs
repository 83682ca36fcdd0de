//! Set-up shared by the SmolLM2 examples: a seeded split of the Python documentation by
//! document into held-out evaluation text and calibration text.

use candle_core::{Device, Tensor};
use quantlens::text::{TextCorpus, TokenWindows, Tokenizer, token_stream};

/// Evaluation tokens and calibration batches from disjoint documents.
pub struct TextSplit {
    /// The first `n_eval · seq_len` tokens of the evaluation half (documents shuffled with the
    /// seed, each followed by end-of-sequence).
    pub eval_tokens: Vec<u32>,
    /// `n_calib` windows of `seq_len` tokens drawn (seeded) from the calibration half, in
    /// batches of up to 4.
    pub calibration: Vec<Tensor>,
}

/// Splits the Python docs by document (half each) with `seed`; `n_calib = 0` gives no
/// calibration batches.
pub fn text_split(
    tok: &Tokenizer,
    seed: u64,
    n_eval: usize,
    seq_len: usize,
    n_calib: usize,
) -> quantlens::Result<TextSplit> {
    let corpus = TextCorpus::python_docs()?.shuffled(seed);
    let (eval_docs, calib_docs) = corpus.split_by_document(0.5, seed)?;
    let eos = tok.eos_id();
    let eval_tokens: Vec<u32> = token_stream(&eval_docs.shuffled(seed), tok, eos)?
        .into_iter()
        .take(n_eval * seq_len)
        .collect();
    let mut calibration = Vec::new();
    if n_calib > 0 {
        let stream = token_stream(&calib_docs, tok, eos)?;
        let windows = TokenWindows::non_overlapping(seq_len)?.sample_tensor(
            &stream,
            n_calib,
            seed,
            &Device::Cpu,
        )?;
        let n = windows.dim(0)?;
        for start in (0..n).step_by(4) {
            calibration.push(windows.narrow(0, start, 4.min(n - start))?);
        }
    }
    Ok(TextSplit {
        eval_tokens,
        calibration,
    })
}
