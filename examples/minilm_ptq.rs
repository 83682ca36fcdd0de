//! Calibrated post-training quantization on real full-precision weights: every linear layer of
//! all-MiniLM-L6-v2, calibrated on 256 sequences of the Python documentation run through the
//! model itself, judged on 256 held-out sequences from other documents.
//!
//! For RTN, GPTQ, GPTQ with act-order, AWQ and SmoothQuant (with int8 per-token activations),
//! each with and without null-space refinement (Q2N), at 4 and 3 bits with groups of 128, it
//! prints the held-out layer-output relative error `‖X(W − Ŵ)ᵀ‖ / ‖XWᵀ‖` (mean over the 36
//! layers and the worst layer), the time to quantize all layers, and the cosine similarity of
//! the quantized model's sentence embeddings to the full-precision ones.
//!
//! Every layer is calibrated on the full-precision model's inputs, and every scheme sees the
//! same inputs, so the rows differ only by the quantizer.
//!
//! `bash scripts/fetch-fixtures.sh minilm python-docs`, then
//! `cargo run --release --example minilm_ptq [-- --quick]` (the table in docs/benchmarks.md).

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{Device, Tensor};
use quantlens::model::{
    BertEncoder, CaptureInputs, EmbeddingSimilarity, ForwardHook, LayerWeight, LinearLayer,
    NoHooks, QuantizableModel, QuantizeActivations,
};
use quantlens::quant::output_error::relative_layer_output_error;
use quantlens::quant::{NullSpaceCache, NullSpaceRefine};
use quantlens::text::{TextCorpus, Tokenizer};
use quantlens::{
    AwqQuantizer, Calibration, GptqQuantizer, QuantSpec, QuantizedTensor, Quantizer,
    SmoothQuantizer, UniformQuantizer,
};
use rayon::prelude::*;

#[path = "support/minilm.rs"]
mod support;
use support::{BATCH, SEQ_LEN, embeddings, sequences};

/// Seed of the document split between calibration and held-out text.
const SPLIT_SEED: u64 = 20261125;

/// Records every layer's input tensors (the held-out activations for the W·A8 rows, whose
/// error depends on the inputs themselves, not only on their Gram matrix).
#[derive(Default)]
struct KeepInputs(BTreeMap<String, Vec<Tensor>>);

impl ForwardHook for KeepInputs {
    fn layer_input(&mut self, layer: &str, x: &Tensor) -> quantlens::Result<Option<Tensor>> {
        let rows = x.elem_count() / x.dims().last().copied().unwrap_or(1);
        let flat = x.reshape((rows, x.dims()[x.rank() - 1]))?;
        self.0.entry(layer.to_string()).or_default().push(flat);
        Ok(None)
    }
}

/// One row of the table: a quantizer and whether activations are quantized (int8 per token).
struct Scheme {
    name: String,
    quantizer: Box<dyn Quantizer>,
    a8: bool,
}

fn schemes(bits: u8, cache: &NullSpaceCache) -> quantlens::Result<Vec<Scheme>> {
    let spec = QuantSpec::new(bits).per_group(128).asymmetric();
    let rtn = || UniformQuantizer::new(spec);
    let mut out = Vec::new();
    let mut push = |name: &str, q: Box<dyn Quantizer>, a8: bool| {
        out.push(Scheme {
            name: name.to_string(),
            quantizer: q,
            a8,
        })
    };
    macro_rules! with_q2n {
        ($name:expr, $make:expr, $a8:expr) => {
            push($name, Box::new($make), $a8);
            push(
                &format!("{} + Q2N", $name),
                Box::new(NullSpaceRefine::new($make).share_cache(cache)),
                $a8,
            );
        };
    }
    with_q2n!("RTN", rtn()?, false);
    with_q2n!("GPTQ", GptqQuantizer::new(spec)?, false);
    with_q2n!(
        "GPTQ act-order",
        GptqQuantizer::new(spec)?
            .act_order(true)
            .static_groups(true),
        false
    );
    with_q2n!("AWQ", AwqQuantizer::new().with_base(rtn()?), false);
    with_q2n!(
        &format!("SmoothQuant W{bits}A8"),
        SmoothQuantizer::new().with_base(rtn()?),
        true
    );
    Ok(out)
}

/// `‖Y − Ŷ‖ / ‖Y‖` over the held-out inputs of one layer, with the quantized layer's inputs
/// quantized to int8 per token (after its smoothing division, as deployed).
fn a8_error(w: &Tensor, q: &QuantizedTensor, inputs: &[Tensor]) -> quantlens::Result<f64> {
    let full = LinearLayer::new("full", w.clone(), None)?;
    let quantized = LinearLayer::new("full", q.clone(), None)?;
    let mut a8 = QuantizeActivations::per_token(8)?;
    let (mut num, mut den) = (0.0, 0.0);
    for x in inputs {
        let y = full.forward(x, &mut NoHooks)?;
        let y_hat = quantized.forward(x, &mut a8)?;
        num += (&y - &y_hat)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        den += y.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    Ok((num / den).sqrt())
}

fn main() -> quantlens::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (n_calib, n_heldout, n_embed): (usize, usize, usize) =
        if quick { (32, 32, 16) } else { (256, 256, 64) };
    let dev = Device::Cpu;
    let model = BertEncoder::minilm(&dev)?;
    let tok = Tokenizer::minilm()?;
    let corpus = TextCorpus::python_docs()?;
    let (calib_docs, heldout_docs) = corpus.split_by_document(0.5, SPLIT_SEED)?;
    let calib_batches = sequences(&calib_docs, &tok, n_calib, SPLIT_SEED)?;
    let heldout_batches = sequences(&heldout_docs, &tok, n_heldout, SPLIT_SEED)?;
    println!(
        "all-MiniLM-L6-v2 (f32): {} linear layers; calibration {} x {SEQ_LEN} tokens from {} docs, held out {} x {SEQ_LEN} from {} other docs (split seed {SPLIT_SEED})",
        model.layer_names().len(),
        n_calib,
        calib_docs.len(),
        n_heldout,
        heldout_docs.len()
    );

    // Full-precision statistics: calibration Grams, held-out Grams and held-out inputs.
    let t0 = Instant::now();
    let mut capture = CaptureInputs::all();
    for b in &calib_batches {
        model.forward_hooked(b, &mut capture)?;
    }
    let calib: BTreeMap<String, Calibration> = capture.into_calibrations();
    let mut capture = CaptureInputs::all();
    let mut kept = KeepInputs::default();
    for b in &heldout_batches {
        model.forward_hooked(b, &mut (&mut capture, &mut kept))?;
    }
    let heldout: BTreeMap<String, Calibration> = capture.into_calibrations();
    let embed_batches: Vec<Tensor> = heldout_batches
        .iter()
        .take(n_embed.div_ceil(BATCH))
        .cloned()
        .collect();
    let reference = embeddings(&model, &embed_batches, &mut NoHooks)?;
    println!(
        "captured activations in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    let names = model.layer_names();
    let originals: Vec<Tensor> = names
        .iter()
        .map(|n| model.weight(n))
        .collect::<quantlens::Result<_>>()?;
    let cache = NullSpaceCache::default();
    println!();
    println!(
        "| scheme | bits | held-out rel. output error, mean | worst layer | layers better than the base | embedding cosine (mean / min) | quantize time |"
    );
    println!("|---|---|---|---|---|---|---|");
    for bits in [4u8, 3] {
        // The previous row's per-layer errors: each "+ Q2N" row follows its base.
        let mut base_errors: Vec<f64> = Vec::new();
        for scheme in schemes(bits, &cache)? {
            let t = Instant::now();
            let quantized: Vec<QuantizedTensor> = names
                .par_iter()
                .zip(&originals)
                .map(|(n, w)| scheme.quantizer.quantize(w, calib.get(n)))
                .collect::<quantlens::Result<_>>()?;
            let elapsed = t.elapsed().as_secs_f64();
            let errors: Vec<(String, f64)> = names
                .par_iter()
                .zip(&originals)
                .zip(&quantized)
                .map(|((n, w), q)| {
                    let e = if scheme.a8 {
                        a8_error(w, q, &kept.0[n])?
                    } else {
                        relative_layer_output_error(w, &q.dequantize(&dev)?, &heldout[n])?
                    };
                    Ok((n.clone(), e))
                })
                .collect::<quantlens::Result<_>>()?;
            let mean = errors.iter().map(|e| e.1).sum::<f64>() / errors.len() as f64;
            let worst = errors
                .iter()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .cloned()
                .unwrap_or_default();

            let mut m = model.clone();
            for (n, q) in names.iter().zip(quantized) {
                m.set_weight(n, LayerWeight::Packed(Box::new(q)))?;
            }
            let got = if scheme.a8 {
                embeddings(&m, &embed_batches, &mut QuantizeActivations::per_token(8)?)?
            } else {
                embeddings(&m, &embed_batches, &mut NoHooks)?
            };
            let cos = EmbeddingSimilarity::between(&reference, &got)?;
            let better = if scheme.name.ends_with("Q2N") {
                let n = errors
                    .iter()
                    .zip(&base_errors)
                    .filter(|(e, b)| e.1 < **b)
                    .count();
                format!("{n}/{}", errors.len())
            } else {
                "–".to_string()
            };
            base_errors = errors.iter().map(|e| e.1).collect();
            println!(
                "| {} | {bits} | {mean:.4} | {:.4} ({}) | {better} | {:.5} / {:.5} | {elapsed:.1} s |",
                scheme.name, worst.1, worst.0, cos.mean, cos.min
            );
        }
    }
    println!();
    println!(
        "Null-space bases computed: {} (one eigendecomposition per distinct layer input).",
        cache.len()
    );
    Ok(())
}
