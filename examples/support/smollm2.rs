//! Set-up shared by the SmolLM2 examples: a seeded split of the Python documentation by
//! document into held-out evaluation text and calibration text.

use candle_core::{Device, Tensor};
use quantlens::text::{TextCorpus, TokenWindows, Tokenizer, token_stream};

/// The two halves of the Python docs, split by document with `seed`: (evaluation, calibration).
pub fn halves(seed: u64) -> quantlens::Result<(TextCorpus, TextCorpus)> {
    TextCorpus::python_docs()?
        .shuffled(seed)
        .split_by_document(0.5, seed)
}

/// The first `n_eval · seq_len` tokens of the evaluation half (documents shuffled with the
/// seed, each followed by end-of-sequence).
#[allow(dead_code)] // not every example evaluates perplexity
pub fn eval_tokens(
    tok: &Tokenizer,
    seed: u64,
    n_eval: usize,
    seq_len: usize,
) -> quantlens::Result<Vec<u32>> {
    let (eval_docs, _) = halves(seed)?;
    Ok(token_stream(&eval_docs.shuffled(seed), tok, tok.eos_id())?
        .into_iter()
        .take(n_eval * seq_len)
        .collect())
}

/// `n_calib` windows of `seq_len` tokens drawn (seeded) from the calibration half, in batches
/// of up to 4.
#[allow(dead_code)] // not every example calibrates
pub fn calibration_batches(
    tok: &Tokenizer,
    seed: u64,
    n_calib: usize,
    seq_len: usize,
) -> quantlens::Result<Vec<Tensor>> {
    let (_, calib_docs) = halves(seed)?;
    let stream = token_stream(&calib_docs, tok, tok.eos_id())?;
    let windows = TokenWindows::non_overlapping(seq_len)?.sample_tensor(
        &stream,
        n_calib,
        seed,
        &Device::Cpu,
    )?;
    let n = windows.dim(0)?;
    (0..n)
        .step_by(4)
        .map(|start| Ok(windows.narrow(0, start, 4.min(n - start))?))
        .collect()
}
