//! Models II: the BERT encoder. The real all-MiniLM-L6-v2 checkpoint against Candle's own BERT
//! (`candle-transformers`), and tiny random encoders against a naive f64 re-implementation
//! written here; quantization stages, loading, and bad input.

mod common;

use common::{Recording, assert_blockwise_equals_prefix};

use std::collections::HashMap;
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::bert as candle_bert;
use quantlens::model::{
    BertConfig, BertEncoder, CaptureInputs, EmbeddingSimilarity, ForwardHook, HiddenAct, LayerNorm,
    QuantizableModel, SequentialQuantization,
};
use quantlens::{Error, GptqQuantizer, QuantSpec, UniformQuantizer};

// ---------------------------------------------------------------------------------------------
// The real model
// ---------------------------------------------------------------------------------------------

/// "[CLS] hello world [SEP]"
const HELLO: [u32; 4] = [101, 7592, 2088, 102];
/// "[CLS] the quick brown fox jumps over the lazy dog . [SEP]"
const FOX: [u32; 12] = [
    101, 1996, 4248, 2829, 4419, 14523, 2058, 1996, 13971, 3899, 1012, 102,
];

/// Our encoder vs Candle's: the largest |difference| of normalised embeddings allowed.
const CANDLE_TOLERANCE: f64 = 1e-4;
/// A row padded with [PAD] vs the same row alone.
const PADDING_TOLERANCE: f64 = 1e-5;

fn minilm_paths() -> (std::path::PathBuf, std::path::PathBuf) {
    common::ensure_fixtures();
    (
        quantlens::data::fixture_path("minilm/model.safetensors").unwrap(),
        quantlens::data::fixture_path("minilm/config.json").unwrap(),
    )
}

/// The checkpoint, loaded once per test binary.
fn minilm() -> &'static BertEncoder {
    static MODEL: OnceLock<BertEncoder> = OnceLock::new();
    MODEL.get_or_init(|| {
        let (model, config) = minilm_paths();
        BertEncoder::from_safetensors(model, config, &Device::Cpu).unwrap()
    })
}

/// Candle's BERT on the same file and config.
fn candle_minilm() -> &'static candle_bert::BertModel {
    static MODEL: OnceLock<candle_bert::BertModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let (model, config) = minilm_paths();
        // Candle's `HiddenAct` deserialises "gelu" (lowercase) to the exact erf GELU.
        let config: candle_bert::Config =
            serde_json::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
        assert_eq!(config.hidden_act, candle_bert::HiddenAct::Gelu);
        // SAFETY: the fixture is not modified while mapped.
        let vb = unsafe {
            candle_nn::VarBuilder::from_mmaped_safetensors(&[model], DType::F32, &Device::Cpu)
                .unwrap()
        };
        candle_bert::BertModel::load(vb, &config).unwrap()
    })
}

/// Rows of token ids right-padded with 0 into one `[b, t]` tensor.
fn padded(rows: &[&[u32]]) -> Tensor {
    let t = rows.iter().map(|r| r.len()).max().unwrap();
    let flat: Vec<u32> = rows
        .iter()
        .flat_map(|r| r.iter().copied().chain(std::iter::repeat(0)).take(t))
        .collect();
    Tensor::from_vec(flat, (rows.len(), t), &Device::Cpu).unwrap()
}

fn rows_f64(t: &Tensor) -> Vec<Vec<f64>> {
    t.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap()
}

/// sentence-transformers' recipe on Candle's last hidden state, in f64: mean over the
/// non-padding tokens, then divide by the L2 norm.
fn candle_embeddings(ids: &Tensor) -> Vec<Vec<f64>> {
    let mask = ids.ne(0u32).unwrap().to_dtype(DType::U32).unwrap();
    let hidden = candle_minilm()
        .forward(ids, &ids.zeros_like().unwrap(), Some(&mask))
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec3::<f64>()
        .unwrap();
    let mask = mask.to_vec2::<u32>().unwrap();
    hidden
        .iter()
        .zip(&mask)
        .map(|(tokens, m)| {
            let d = tokens[0].len();
            let mut mean = vec![0.0; d];
            let n = m.iter().filter(|&&v| v == 1).count() as f64;
            for (tok, &keep) in tokens.iter().zip(m) {
                if keep == 1 {
                    for (acc, v) in mean.iter_mut().zip(tok) {
                        *acc += v / n;
                    }
                }
            }
            let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
            mean.iter().map(|v| v / norm).collect()
        })
        .collect()
}

fn max_abs_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f64::max)
}

#[test]
fn minilm_embeddings_match_candle_bert() {
    let model = minilm();
    let cases = [
        ("hello world", padded(&[&HELLO])),
        ("quick brown fox", padded(&[&FOX])),
        ("padded batch of both", padded(&[&HELLO, &FOX])),
    ];
    for (what, ids) in &cases {
        let ours = rows_f64(&model.forward(ids).unwrap());
        let reference = candle_embeddings(ids);
        let diff = max_abs_diff(&ours, &reference);
        eprintln!("{what}: max |ours − Candle| = {diff:.3e}");
        assert!(diff <= CANDLE_TOLERANCE, "{what}: {diff:e}");
        assert_eq!(ours[0].len(), 384);
    }
}

#[test]
fn minilm_padding_leaves_each_row_unchanged() {
    let model = minilm();
    let batch = rows_f64(&model.forward(&padded(&[&HELLO, &FOX])).unwrap());
    let hello = rows_f64(&model.forward(&padded(&[&HELLO])).unwrap());
    let fox = rows_f64(&model.forward(&padded(&[&FOX])).unwrap());
    let diff = max_abs_diff(&batch[..1], &hello).max(max_abs_diff(&batch[1..], &fox));
    eprintln!("padded vs unpadded: max |Δ| = {diff:.3e}");
    assert!(diff <= PADDING_TOLERANCE, "{diff:e}");
}

#[test]
fn minilm_layer_names_and_shapes() {
    let model = minilm();
    let names = model.layer_names();
    assert_eq!(names.len(), 36);
    for i in 0..6 {
        for (j, (proj, shape)) in [
            ("attn.q_proj", (384, 384)),
            ("attn.k_proj", (384, 384)),
            ("attn.v_proj", (384, 384)),
            ("attn.o_proj", (384, 384)),
            ("mlp.up_proj", (1536, 384)),
            ("mlp.down_proj", (384, 1536)),
        ]
        .into_iter()
        .enumerate()
        {
            let name = format!("blocks.{i}.{proj}");
            assert_eq!(names[6 * i + j], name);
            let layer = model.linear_layer(&name).unwrap();
            assert_eq!((layer.out_features(), layer.in_features()), shape);
            assert_eq!(layer.bias().unwrap().dims(), [shape.0]);
        }
    }
    assert_eq!(
        model.linear_parameters(),
        6 * (4 * 384 * 384 + 2 * 384 * 1536)
    );
    assert_eq!(model.quantization_stages().len(), 6 * 4);
    let config = model.config();
    assert_eq!(
        (config.vocab_size, config.hidden_act, config.pad_token_id),
        (30522, HiddenAct::Gelu, 0)
    );
    assert_eq!(model.embeddings().word_embeddings().dims(), [30522, 384]);
}

#[test]
fn minilm_cosine_sanity() {
    let model = minilm();
    let ids = padded(&[&HELLO, &FOX]);
    let emb = rows_f64(&model.forward(&ids).unwrap());
    // Unit norm, so the cosine is the plain dot product.
    for e in &emb {
        let norm = e.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-6, "norm {norm}");
    }
    let dot: f64 = emb[0].iter().zip(&emb[1]).map(|(a, b)| a * b).sum();
    let a = model.forward(&padded(&[&HELLO])).unwrap();
    let b = model.forward(&padded(&[&FOX])).unwrap();
    let s = EmbeddingSimilarity::between(&a, &b).unwrap();
    eprintln!("cos(hello world, quick brown fox) = {:.6}", s.cosines[0]);
    assert!((s.cosines[0] - dot).abs() < 1e-6);
    assert!(s.cosines[0] < 0.5, "unrelated sentences: {}", s.cosines[0]);
    // The same model on the same ids: exactly 1.
    let same = EmbeddingSimilarity::between_models(model, model, &[ids]).unwrap();
    assert_eq!(same.cosines, [1.0, 1.0]);
    assert_eq!((same.min, same.max_abs_difference), (1.0, 0.0));
}

#[test]
fn minilm_int8_keeps_embeddings_int2_does_not() {
    let batches = [padded(&[&HELLO, &FOX])];
    let measure = |spec: QuantSpec| {
        let mut q = minilm().clone();
        let rtn = UniformQuantizer::new(spec).unwrap();
        SequentialQuantization::new(&rtn).run(&mut q).unwrap();
        EmbeddingSimilarity::between_models(minilm(), &q, &batches).unwrap()
    };
    let int8 = measure(QuantSpec::int8().per_channel());
    let int2 = measure(QuantSpec::int2().per_channel());
    eprintln!("MiniLM int8 per-channel RTN: {int8}");
    eprintln!("MiniLM int2 per-channel RTN: {int2}");
    assert!(int8.min > 0.99 && int8.max_abs_difference > 0.0);
    assert!(int2.min < int8.min);
}

// ---------------------------------------------------------------------------------------------
// Tiny random encoders against a naive f64 forward pass
// ---------------------------------------------------------------------------------------------

/// A tiny encoder: vocabulary 40, width 16, 2 layers of 4 heads, FFN 32, 10 positions, weights
/// wide enough (σ = 0.3) that attention is far from uniform and GELU leaves its linear part.
fn tiny_config(act: HiddenAct) -> BertConfig {
    let mut c = BertConfig::new(40, 16, 2, 4, 32);
    c.max_position_embeddings = 10;
    c.initializer_range = 0.3;
    c.hidden_act = act;
    c
}

/// Token rows for the tiny model, padded with 0 (lengths 6, 3, 5: positions 3–5 of row 1 and
/// 5 of row 2 are padding).
fn tiny_ids() -> Tensor {
    padded(&[&[1, 7, 22, 39, 5, 2], &[1, 30, 2], &[1, 11, 12, 13, 2]])
}

fn to_f64(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

struct NaiveLinear {
    w: Vec<f64>, // [out, in] row-major
    b: Vec<f64>,
    out: usize,
}

impl NaiveLinear {
    fn from(model: &BertEncoder, name: &str) -> Self {
        let layer = model.linear_layer(name).unwrap();
        NaiveLinear {
            w: to_f64(&model.weight(name).unwrap()),
            b: to_f64(layer.bias().unwrap()),
            out: layer.out_features(),
        }
    }
    fn apply(&self, x: &[f64]) -> Vec<f64> {
        (0..self.out)
            .map(|o| {
                let row = &self.w[o * x.len()..(o + 1) * x.len()];
                self.b[o] + row.iter().zip(x).map(|(w, v)| w * v).sum::<f64>()
            })
            .collect()
    }
}

struct NaiveNorm {
    g: Vec<f64>,
    b: Vec<f64>,
    eps: f64,
}

impl NaiveNorm {
    fn from(ln: &LayerNorm) -> Self {
        NaiveNorm {
            g: to_f64(ln.weight()),
            b: to_f64(ln.bias()),
            eps: ln.eps(),
        }
    }
    fn apply(&self, x: &[f64]) -> Vec<f64> {
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        x.iter()
            .zip(self.g.iter().zip(&self.b))
            .map(|(v, (g, b))| g * (v - mean) / (var + self.eps).sqrt() + b)
            .collect()
    }
}

/// erf(x) = 2/√π · e^(−x²) · Σₙ 2ⁿ x^(2n+1) / (1·3·…·(2n+1)): every term positive, so no
/// cancellation; full f64 accuracy for |x| ≤ 6, and erf = ±1 to f64 beyond.
fn erf(x: f64) -> f64 {
    if x.abs() > 6.0 {
        return x.signum();
    }
    let (mut term, mut sum, mut n) = (x, x, 0.0);
    while term.abs() > 1e-17 * sum.abs() {
        n += 1.0;
        term *= 2.0 * x * x / (2.0 * n + 1.0);
        sum += term;
    }
    2.0 / std::f64::consts::PI.sqrt() * (-x * x).exp() * sum
}

fn activation(act: HiddenAct, x: f64) -> f64 {
    match act {
        HiddenAct::Gelu => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
        HiddenAct::GeluTanh => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044715 * x.powi(3))).tanh())
        }
        HiddenAct::Relu => x.max(0.0),
        _ => unreachable!("the tests use the three variants above"),
    }
}

struct NaiveLayer {
    q: NaiveLinear,
    k: NaiveLinear,
    v: NaiveLinear,
    o: NaiveLinear,
    up: NaiveLinear,
    down: NaiveLinear,
    ln1: NaiveNorm,
    ln2: NaiveNorm,
}

/// BERT written out in loops over f64 copies of the model's parameters.
struct NaiveBert {
    word: Vec<Vec<f64>>,
    pos: Vec<Vec<f64>>,
    type0: Vec<f64>,
    ln: NaiveNorm,
    layers: Vec<NaiveLayer>,
    heads: usize,
    act: HiddenAct,
}

impl NaiveBert {
    fn from(model: &BertEncoder) -> Self {
        let rows = |t: &Tensor| rows_f64(t);
        let e = model.embeddings();
        let layers = model
            .layers()
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let lin = |p: &str| NaiveLinear::from(model, &format!("blocks.{i}.{p}"));
                NaiveLayer {
                    q: lin("attn.q_proj"),
                    k: lin("attn.k_proj"),
                    v: lin("attn.v_proj"),
                    o: lin("attn.o_proj"),
                    up: lin("mlp.up_proj"),
                    down: lin("mlp.down_proj"),
                    ln1: NaiveNorm::from(l.attention_norm()),
                    ln2: NaiveNorm::from(l.output_norm()),
                }
            })
            .collect();
        NaiveBert {
            word: rows(e.word_embeddings()),
            pos: rows(e.position_embeddings()),
            type0: rows(e.token_type_embeddings())[0].clone(),
            ln: NaiveNorm::from(e.layer_norm()),
            layers,
            heads: model.config().num_attention_heads,
            act: model.config().hidden_act,
        }
    }

    /// Last hidden state of one row `[t][hidden]`; keys holding 0 ([PAD]) are left out of
    /// every softmax.
    fn hidden(&self, ids: &[u32]) -> Vec<Vec<f64>> {
        let mut x: Vec<Vec<f64>> = ids
            .iter()
            .enumerate()
            .map(|(p, &id)| {
                let sum: Vec<f64> = (0..self.type0.len())
                    .map(|j| self.word[id as usize][j] + self.type0[j] + self.pos[p][j])
                    .collect();
                self.ln.apply(&sum)
            })
            .collect();
        let keys: Vec<usize> = (0..ids.len()).filter(|&j| ids[j] != 0).collect();
        for l in &self.layers {
            let q: Vec<Vec<f64>> = x.iter().map(|r| l.q.apply(r)).collect();
            let k: Vec<Vec<f64>> = x.iter().map(|r| l.k.apply(r)).collect();
            let v: Vec<Vec<f64>> = x.iter().map(|r| l.v.apply(r)).collect();
            let hidden = x[0].len();
            let hd = hidden / self.heads;
            let mut next = Vec::with_capacity(x.len());
            for (i, xi) in x.iter().enumerate() {
                let mut ctx = vec![0.0; hidden];
                for h in 0..self.heads {
                    let span = h * hd..(h + 1) * hd;
                    let scores: Vec<f64> = keys
                        .iter()
                        .map(|&j| {
                            q[i][span.clone()]
                                .iter()
                                .zip(&k[j][span.clone()])
                                .map(|(a, b)| a * b)
                                .sum::<f64>()
                                / (hd as f64).sqrt()
                        })
                        .collect();
                    let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let exps: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                    let z: f64 = exps.iter().sum();
                    for (&j, e) in keys.iter().zip(&exps) {
                        for d in span.clone() {
                            ctx[d] += e / z * v[j][d];
                        }
                    }
                }
                let attn = l.o.apply(&ctx);
                let h1 = l
                    .ln1
                    .apply(&xi.iter().zip(&attn).map(|(a, b)| a + b).collect::<Vec<_>>());
                let up: Vec<f64> =
                    l.up.apply(&h1)
                        .iter()
                        .map(|&u| activation(self.act, u))
                        .collect();
                let down = l.down.apply(&up);
                next.push(
                    l.ln2
                        .apply(&h1.iter().zip(&down).map(|(a, b)| a + b).collect::<Vec<_>>()),
                );
            }
            x = next;
        }
        x
    }

    /// Mean over the non-padding tokens, L2-normalised.
    fn embedding(&self, ids: &[u32]) -> Vec<f64> {
        let h = self.hidden(ids);
        let kept: Vec<&Vec<f64>> = h
            .iter()
            .zip(ids)
            .filter(|(_, id)| **id != 0)
            .map(|(r, _)| r)
            .collect();
        let mean: Vec<f64> = (0..h[0].len())
            .map(|j| kept.iter().map(|r| r[j]).sum::<f64>() / kept.len() as f64)
            .collect();
        let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
        mean.iter().map(|v| v / norm).collect()
    }
}

#[test]
fn tiny_forward_matches_a_naive_f64_bert() {
    let ids = tiny_ids();
    let id_rows = ids.to_vec2::<u32>().unwrap();
    for (seed, act) in [
        (1, HiddenAct::Gelu),
        (2, HiddenAct::GeluTanh),
        (3, HiddenAct::Relu),
    ] {
        let model = BertEncoder::new(tiny_config(act), seed, &Device::Cpu).unwrap();
        let naive = NaiveBert::from(&model);
        let hidden = model
            .forward_hidden(&ids, &mut quantlens::model::NoHooks)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec3::<f64>()
            .unwrap();
        let emb = rows_f64(&model.forward(&ids).unwrap());
        let (mut hidden_diff, mut emb_diff) = (0f64, 0f64);
        for (r, row) in id_rows.iter().enumerate() {
            hidden_diff = hidden_diff.max(max_abs_diff(&hidden[r], &naive.hidden(row)));
            emb_diff = emb_diff.max(max_abs_diff(&emb[r..r + 1], &[naive.embedding(row)]));
        }
        eprintln!("{act:?}: max |Δ| hidden {hidden_diff:.2e}, embedding {emb_diff:.2e}");
        assert!(hidden_diff < 1e-5, "{act:?} hidden: {hidden_diff:e}");
        assert!(emb_diff < 1e-6, "{act:?} embedding: {emb_diff:e}");
    }
}

#[test]
fn tiny_int8_changes_embeddings_slightly_int2_more() {
    let model = BertEncoder::new(tiny_config(HiddenAct::Gelu), 4, &Device::Cpu).unwrap();
    let batches = [tiny_ids()];
    let measure = |spec: QuantSpec| {
        let mut q = model.clone();
        let rtn = UniformQuantizer::new(spec).unwrap();
        let report = SequentialQuantization::new(&rtn).run(&mut q).unwrap();
        assert_eq!(report.layers.len(), 12);
        EmbeddingSimilarity::between_models(&model, &q, &batches).unwrap()
    };
    let int8 = measure(QuantSpec::int8().per_channel());
    let int2 = measure(QuantSpec::int2().per_channel());
    eprintln!("tiny int8: {int8}\ntiny int2: {int2}");
    assert!(int8.min > 0.99, "{int8}");
    assert!(int8.max_abs_difference > 0.0);
    assert!(
        int2.mean < int8.mean && int2.min < int8.min,
        "{int2} vs {int8}"
    );
}

/// Records which layers ran, in order.
struct Trace(Vec<String>);

impl ForwardHook for Trace {
    fn layer_input(&mut self, layer: &str, _x: &Tensor) -> quantlens::Result<Option<Tensor>> {
        self.0.push(layer.to_string());
        Ok(None)
    }
}

#[test]
fn padded_batches_calibrate_on_their_tokens_only() {
    let model = BertEncoder::new(tiny_config(HiddenAct::Gelu), 6, &Device::Cpu).unwrap();
    let mut together = CaptureInputs::all();
    model.forward_hooked(&tiny_ids(), &mut together).unwrap();
    // The same three sequences one at a time, unpadded: the statistics of their tokens.
    let mut alone = CaptureInputs::all();
    for row in [
        &[1u32, 7, 22, 39, 5, 2][..],
        &[1, 30, 2],
        &[1, 11, 12, 13, 2],
    ] {
        model.forward_hooked(&padded(&[row]), &mut alone).unwrap();
    }
    let (together, alone) = (together.into_calibrations(), alone.into_calibrations());
    assert_eq!(together.len(), 12);
    for (layer, t) in &together {
        let a = &alone[layer];
        assert_eq!(t.samples(), 6 + 3 + 5, "{layer}");
        assert_eq!(t.samples(), a.samples(), "{layer}");
        for (x, y) in t.act_absmax().iter().zip(a.act_absmax()) {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                "{layer}: {x} vs {y}"
            );
        }
        for (x, y) in t.hessian_f64().iter().zip(a.hessian_f64()) {
            assert!(
                (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                "{layer}: {x} vs {y}"
            );
        }
    }
    // Hooks composed in a tuple or a list see the padding too.
    let mut pair = (Trace(Vec::new()), CaptureInputs::all());
    model.forward_hooked(&tiny_ids(), &mut pair).unwrap();
    for layer in together.keys() {
        assert_eq!(pair.1.calibrations()[layer].samples(), 14, "{layer}");
    }
    let mut seen = TokenRows(Vec::new());
    {
        let mut list: Vec<Box<dyn ForwardHook + '_>> = vec![Box::new(&mut seen)];
        model.forward_hooked(&tiny_ids(), &mut list).unwrap();
    }
    assert_eq!(
        seen.0,
        vec![Some(vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 13, 14, 15, 16]); 12]
    );
    // An unpadded batch takes the plain path.
    seen.0.clear();
    model
        .forward_hooked(&padded(&[&[1, 30, 2]]), &mut seen)
        .unwrap();
    assert_eq!(seen.0, vec![None; 12]);
}

/// Records the token rows each layer was told of (`None`: the batch had no padding).
struct TokenRows(Vec<Option<Vec<u32>>>);

impl ForwardHook for TokenRows {
    fn layer_input(&mut self, _layer: &str, _x: &Tensor) -> quantlens::Result<Option<Tensor>> {
        self.0.push(None);
        Ok(None)
    }

    fn padded_layer_input(
        &mut self,
        _layer: &str,
        _x: &Tensor,
        token_rows: &Tensor,
    ) -> quantlens::Result<Option<Tensor>> {
        self.0.push(Some(token_rows.to_vec1()?));
        Ok(None)
    }
}

#[test]
fn qkv_form_one_stage_calibrated_on_the_same_input() {
    let mut model = BertEncoder::new(tiny_config(HiddenAct::Gelu), 5, &Device::Cpu).unwrap();
    let stages = model.quantization_stages();
    assert_eq!(stages.len(), 8);
    assert_eq!(
        stages[0],
        [
            "blocks.0.attn.q_proj",
            "blocks.0.attn.k_proj",
            "blocks.0.attn.v_proj"
        ]
    );
    assert_eq!(
        stages[1..4],
        [
            ["blocks.0.attn.o_proj"],
            ["blocks.0.mlp.up_proj"],
            ["blocks.0.mlp.down_proj"]
        ]
    );
    // Every layer gets the hooks, in execution order.
    let mut trace = Trace(Vec::new());
    model.forward_hooked(&tiny_ids(), &mut trace).unwrap();
    assert_eq!(trace.0, model.layer_names());

    let ids = tiny_ids();
    let naive = NaiveBert::from(&model);
    let rec = Recording::new(UniformQuantizer::new(QuantSpec::int8().per_channel()).unwrap());
    SequentialQuantization::new(&rec)
        .calibration([ids.clone()])
        .run(&mut model)
        .unwrap();
    let seen = rec.into_seen();
    assert_eq!(seen.len(), 12);
    // q, k and v were calibrated on one capture of the same input: identical statistics, one
    // row per token (padding left out), and the input is the embedding LayerNorm's output.
    let (q, k, v) = (&seen[0], &seen[1], &seen[2]);
    assert_eq!(q.samples(), 6 + 3 + 5);
    assert_eq!(q.hessian_f64(), k.hessian_f64());
    assert_eq!(q.hessian_f64(), v.hessian_f64());
    let mut gram = vec![0.0; 16 * 16];
    for (p, &id) in ids.to_vec2::<u32>().unwrap().iter().flatten().enumerate() {
        if id == 0 {
            continue; // [PAD]
        }
        let p = p % 6;
        let sum: Vec<f64> = (0..16)
            .map(|j| naive.word[id as usize][j] + naive.type0[j] + naive.pos[p][j])
            .collect();
        let x = naive.ln.apply(&sum);
        for i in 0..16 {
            for j in 0..16 {
                gram[i * 16 + j] += x[i] * x[j];
            }
        }
    }
    // Calibration::hessian = 2·Σxᵀx / n.
    for (h, g) in q.hessian_f64().iter().zip(&gram) {
        let h = h * q.samples() as f64 / 2.0;
        assert!((h - g).abs() <= 1e-4 * (1.0 + g.abs()), "{h} vs {g}");
    }
}

#[test]
fn same_seed_same_weights() {
    let config = tiny_config(HiddenAct::Gelu);
    let a = BertEncoder::new(config.clone(), 9, &Device::Cpu).unwrap();
    let b = BertEncoder::new(config.clone(), 9, &Device::Cpu).unwrap();
    let c = BertEncoder::new(config, 10, &Device::Cpu).unwrap();
    let params = |m: &BertEncoder| -> Vec<Vec<f64>> {
        let mut p: Vec<Vec<f64>> = m
            .layer_names()
            .iter()
            .flat_map(|n| {
                [
                    to_f64(&m.weight(n).unwrap()),
                    to_f64(m.linear_layer(n).unwrap().bias().unwrap()),
                ]
            })
            .collect();
        let e = m.embeddings();
        for t in [
            e.word_embeddings(),
            e.position_embeddings(),
            e.token_type_embeddings(),
            e.layer_norm().weight(),
            e.layer_norm().bias(),
        ] {
            p.push(to_f64(t));
        }
        for l in m.layers() {
            for ln in [l.attention_norm(), l.output_norm()] {
                p.push(to_f64(ln.weight()));
                p.push(to_f64(ln.bias()));
            }
        }
        p
    };
    let (pa, pb, pc) = (params(&a), params(&b), params(&c));
    assert_eq!(pa, pb);
    assert!(pa.iter().zip(&pc).all(|(x, y)| x != y));
    let ids = tiny_ids();
    assert_eq!(
        rows_f64(&a.forward(&ids).unwrap()),
        rows_f64(&b.forward(&ids).unwrap())
    );
}

// ---------------------------------------------------------------------------------------------
// Loading and bad input
// ---------------------------------------------------------------------------------------------

/// The tiny model's parameters under Hugging Face's names.
fn hf_tensors(model: &BertEncoder, prefix: &str) -> HashMap<String, Tensor> {
    let mut out = HashMap::new();
    let e = model.embeddings();
    let mut put = |name: String, t: &Tensor| {
        out.insert(format!("{prefix}{name}"), t.clone());
    };
    put(
        "embeddings.word_embeddings.weight".into(),
        e.word_embeddings(),
    );
    put(
        "embeddings.position_embeddings.weight".into(),
        e.position_embeddings(),
    );
    put(
        "embeddings.token_type_embeddings.weight".into(),
        e.token_type_embeddings(),
    );
    put(
        "embeddings.LayerNorm.weight".into(),
        e.layer_norm().weight(),
    );
    put("embeddings.LayerNorm.bias".into(), e.layer_norm().bias());
    for (i, l) in model.layers().iter().enumerate() {
        let hf = format!("encoder.layer.{i}");
        for (ours, theirs) in [
            ("attn.q_proj", "attention.self.query"),
            ("attn.k_proj", "attention.self.key"),
            ("attn.v_proj", "attention.self.value"),
            ("attn.o_proj", "attention.output.dense"),
            ("mlp.up_proj", "intermediate.dense"),
            ("mlp.down_proj", "output.dense"),
        ] {
            let layer = model.linear_layer(&format!("blocks.{i}.{ours}")).unwrap();
            put(
                format!("{hf}.{theirs}.weight"),
                &layer.dense_weight().unwrap(),
            );
            put(format!("{hf}.{theirs}.bias"), layer.bias().unwrap());
        }
        for (theirs, ln) in [
            ("attention.output", l.attention_norm()),
            ("output", l.output_norm()),
        ] {
            put(format!("{hf}.{theirs}.LayerNorm.weight"), ln.weight());
            put(format!("{hf}.{theirs}.LayerNorm.bias"), ln.bias());
        }
    }
    out
}

const TINY_CONFIG_JSON: &str = r#"{"vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 2,
    "num_attention_heads": 4, "intermediate_size": 32, "hidden_act": "gelu",
    "max_position_embeddings": 10, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
    "pad_token_id": 0, "model_type": "bert"}"#;

#[test]
fn loads_checkpoints_with_or_without_bert_prefix_and_names_what_is_wrong() {
    let model = BertEncoder::new(tiny_config(HiddenAct::Gelu), 11, &Device::Cpu).unwrap();
    let dir = std::env::temp_dir().join(format!("quantlens-bert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, TINY_CONFIG_JSON).unwrap();
    let ids = tiny_ids();
    let want = rows_f64(&model.forward(&ids).unwrap());
    for prefix in ["", "bert."] {
        let path = dir.join(format!("model{prefix}safetensors"));
        candle_core::safetensors::save(&hf_tensors(&model, prefix), &path).unwrap();
        let loaded = BertEncoder::from_safetensors(&path, &config_path, &Device::Cpu).unwrap();
        assert_eq!(
            rows_f64(&loaded.forward(&ids).unwrap()),
            want,
            "prefix {prefix:?}"
        );
    }

    // A missing tensor and a tensor of the wrong shape are named.
    let path = dir.join("broken.safetensors");
    let mut tensors = hf_tensors(&model, "");
    tensors.remove("encoder.layer.1.attention.self.key.bias");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let err = BertEncoder::from_safetensors(&path, &config_path, &Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, Error::Malformed { reason, .. } if reason.contains("encoder.layer.1.attention.self.key.bias")),
        "{err}"
    );
    let mut tensors = hf_tensors(&model, "");
    tensors.insert(
        "encoder.layer.0.intermediate.dense.weight".into(),
        Tensor::zeros((16, 32), DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let err = BertEncoder::from_safetensors(&path, &config_path, &Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, Error::Malformed { reason, .. } if reason.contains("intermediate.dense.weight") && reason.contains("[32, 16]")),
        "{err}"
    );
    // Not a safetensors file at all.
    std::fs::write(&path, b"not a tensor file").unwrap();
    assert!(matches!(
        BertEncoder::from_safetensors(&path, &config_path, &Device::Cpu),
        Err(Error::Malformed { .. })
    ));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_configs_are_errors() {
    let ok = BertConfig::from_json_str(TINY_CONFIG_JSON).unwrap();
    assert_eq!((ok.hidden_size, ok.hidden_act), (16, HiddenAct::Gelu));
    assert_eq!(ok.initializer_range, 0.02);
    let variant =
        |from: &str, to: &str| BertConfig::from_json_str(&TINY_CONFIG_JSON.replace(from, to));
    assert!(matches!(
        variant("\"gelu\"", "\"swish\""),
        Err(Error::Unsupported(m)) if m.contains("swish")
    ));
    assert_eq!(
        variant("\"gelu\"", "\"gelu_new\"").unwrap().hidden_act,
        HiddenAct::GeluTanh
    );
    assert!(matches!(
        variant("\"num_attention_heads\": 4", "\"num_attention_heads\": 5"),
        Err(Error::InvalidParameter {
            name: "num_attention_heads",
            ..
        })
    ));
    assert!(matches!(
        variant("\"pad_token_id\": 0", "\"pad_token_id\": 40"),
        Err(Error::InvalidParameter {
            name: "pad_token_id",
            ..
        })
    ));
    assert!(matches!(
        variant("\"num_hidden_layers\": 2,", ""),
        Err(Error::Malformed { reason, .. }) if reason.contains("num_hidden_layers")
    ));
    assert!(matches!(
        variant(
            "\"model_type\"",
            "\"position_embedding_type\": \"relative_key\", \"model_type\""
        ),
        Err(Error::Unsupported(_))
    ));
    let mut c = tiny_config(HiddenAct::Gelu);
    c.layer_norm_eps = 0.0;
    assert!(matches!(
        BertEncoder::new(c, 0, &Device::Cpu),
        Err(Error::InvalidParameter {
            name: "layer_norm_eps",
            ..
        })
    ));
    let mut c = tiny_config(HiddenAct::Gelu);
    c.intermediate_size = 0;
    assert!(BertEncoder::new(c, 0, &Device::Cpu).is_err());
}

#[test]
fn bad_token_ids_are_errors() {
    let model = BertEncoder::new(tiny_config(HiddenAct::Gelu), 6, &Device::Cpu).unwrap();
    let dev = Device::Cpu;
    let run = |t: Tensor| model.forward(&t);
    // Float ids.
    assert!(matches!(
        run(Tensor::new(&[[1f32, 2.0]], &dev).unwrap()),
        Err(Error::NonIntegerTargets { .. })
    ));
    // Wrong rank.
    assert!(matches!(
        run(Tensor::new(&[1u32, 2], &dev).unwrap()),
        Err(Error::RankMismatch { expected: 2, .. })
    ));
    assert!(matches!(
        run(Tensor::zeros((1, 2, 3), DType::U32, &dev).unwrap()),
        Err(Error::RankMismatch { .. })
    ));
    // Empty.
    assert!(matches!(
        run(Tensor::zeros((1, 0), DType::U32, &dev).unwrap()),
        Err(Error::EmptyTensor { .. })
    ));
    // An id outside the vocabulary (40), and a negative one.
    assert!(matches!(
        run(Tensor::new(&[[1u32, 40, 2]], &dev).unwrap()),
        Err(Error::TargetOutOfRange {
            index: 1,
            value: 40,
            classes: 40,
            ..
        })
    ));
    assert!(matches!(
        run(Tensor::new(&[[1i64, 2, -3]], &dev).unwrap()),
        Err(Error::TargetOutOfRange {
            index: 2,
            value: -3,
            ..
        })
    ));
    // Longer than the 10 positions.
    assert!(matches!(
        run(Tensor::ones((1, 11), DType::U32, &dev).unwrap()),
        Err(Error::InvalidParameter { reason, .. }) if reason.contains("max_position_embeddings")
    ));
    // A row of nothing but padding.
    assert!(matches!(
        run(Tensor::new(&[[1u32, 2], [0, 0]], &dev).unwrap()),
        Err(Error::InvalidParameter { reason, .. }) if reason.contains("row 1")
    ));
    // The hidden-state entry point checks the same way.
    assert!(
        model
            .forward_hidden(
                &Tensor::new(&[[1u32, 41]], &dev).unwrap(),
                &mut quantlens::model::NoHooks
            )
            .is_err()
    );
    // Other integer dtypes are accepted and give the same embeddings as u32.
    let ids = tiny_ids();
    assert_eq!(
        rows_f64(&run(ids.to_dtype(DType::I64).unwrap()).unwrap()),
        rows_f64(&run(ids).unwrap())
    );
}

#[test]
fn embedding_similarity_refuses_mismatched_or_degenerate_inputs() {
    let dev = Device::Cpu;
    let a = Tensor::new(&[[1f32, 0.0], [0.0, 1.0]], &dev).unwrap();
    let b = Tensor::new(&[[1f32, 0.0]], &dev).unwrap();
    assert!(matches!(
        EmbeddingSimilarity::between(&a, &b),
        Err(Error::ShapeMismatch(_))
    ));
    let zero = Tensor::new(&[[1f32, 0.0], [0.0, 0.0]], &dev).unwrap();
    assert!(matches!(
        EmbeddingSimilarity::between(&a, &zero),
        Err(Error::InvalidParameter { reason, .. }) if reason.contains("row 1")
    ));
    let nan = Tensor::new(&[[1f32, f32::NAN], [0.0, 1.0]], &dev).unwrap();
    assert!(matches!(
        EmbeddingSimilarity::between(&a, &nan),
        Err(Error::NonFinite { first_index: 1, .. })
    ));
    // Opposite directions: −1; orthogonal: 0 (closed forms).
    let c = Tensor::new(&[[-2f32, 0.0], [3.0, 0.0]], &dev).unwrap();
    let s = EmbeddingSimilarity::between(&a, &c).unwrap();
    assert_eq!(s.cosines, [-1.0, 0.0]);
    assert_eq!((s.mean, s.min, s.worst_row()), (-0.5, -1.0, 0));
    assert_eq!(s.max_abs_difference, 3.0);
    let model = BertEncoder::new(tiny_config(HiddenAct::Gelu), 1, &dev).unwrap();
    assert!(matches!(
        EmbeddingSimilarity::between_models(&model, &model, &[]),
        Err(Error::TooFewSamples { .. })
    ));
}

#[test]
fn blockwise_sequential_gptq_equals_rerunning_the_prefix() {
    let fp = BertEncoder::new(tiny_config(HiddenAct::Gelu), 8, &Device::Cpu).unwrap();
    // A padded batch and an unpadded one.
    let batches = [tiny_ids(), padded(&[&[1, 4, 9, 16, 25, 36, 2]])];
    let gptq = GptqQuantizer::new(QuantSpec::int4().per_group(8)).unwrap();
    let (_, report) = assert_blockwise_equals_prefix(&fp, &batches, &gptq);
    // Token rows only: 6 + 3 + 5 from the padded batch, 7 from the other.
    assert!(report.layers.iter().all(|l| l.calibration_rows == 21));
}
