//! Set-up shared by the MiniLM examples: framed token sequences from a document split of the
//! Python documentation, and sentence embeddings of batches of them.

use candle_core::{Device, Tensor};
use quantlens::model::{BertEncoder, ForwardHook, QuantizableModel};
use quantlens::text::{TextCorpus, TokenWindows, Tokenizer, token_stream};

/// Tokens per sequence, `[CLS]` and `[SEP]` included.
pub const SEQ_LEN: usize = 128;
/// Sequences per forward pass.
pub const BATCH: usize = 16;

/// `n` sequences `[n, SEQ_LEN]` framed by `[CLS] … [SEP]`, drawn at random (with `seed`)
/// from the token stream of `corpus`, in batches of `BATCH`.
pub fn sequences(
    corpus: &TextCorpus,
    tok: &Tokenizer,
    n: usize,
    seed: u64,
) -> quantlens::Result<Vec<Tensor>> {
    let stream = token_stream(corpus, tok, None)?;
    let windows = TokenWindows::non_overlapping(SEQ_LEN)?.framed(tok.bos_id(), tok.eos_id())?;
    let all = windows.sample_tensor(&stream, n, seed, &Device::Cpu)?;
    let n = all.dim(0)?;
    (0..n)
        .step_by(BATCH)
        .map(|s| Ok(all.narrow(0, s, BATCH.min(n - s))?))
        .collect()
}

/// Sentence embeddings `[n, hidden]` of all batches.
pub fn embeddings(
    model: &BertEncoder,
    batches: &[Tensor],
    hooks: &mut dyn ForwardHook,
) -> quantlens::Result<Tensor> {
    let parts = batches
        .iter()
        .map(|b| model.forward_hooked(b, hooks))
        .collect::<quantlens::Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 0)?)
}
