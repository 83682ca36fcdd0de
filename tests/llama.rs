//! Models II: the Llama decoder. A tiny random model against a naive f64 re-implementation
//! written here (RoPE in both styles, grouped-query attention, causal mask), the KV cache
//! against the full forward, training and quantization through the crate's machinery,
//! perplexity against closed forms, and SmolLM2-135M (GGUF fixture) against Candle's own
//! `quantized_llama`.

mod common;

use std::io::Cursor;

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use common::{TestRng, assert_blockwise_equals_prefix, packed_weights};
use quantlens::model::{
    CalibrationMode, GenerateConfig, Llama, LlamaConfig, NoHooks, PerplexityConfig,
    QuantizableModel, RopeStyle, Sampling, SequentialQuantization, TrainConfig, next_token_pairs,
    perplexity, train,
};
use quantlens::{Error, GptqQuantizer, QuantSpec, Quantizer, UniformQuantizer};

const VOCAB: usize = 61;

/// vocab 61, hidden 32, 2 blocks, 4 query heads sharing 2 KV heads (head_dim 8), context 16.
fn tiny_config(style: RopeStyle) -> LlamaConfig {
    LlamaConfig::tiny(VOCAB, 32, 2, 4, 2)
        .max_seq_len(16)
        .rope_style(style)
}

/// A tiny model whose parameters are far from their initial values: a few steps of training
/// move the norm gains and the embedding off their init, and the projections are replaced by
/// N(0, 1/in) draws so that attention is sharp and position-dependent (at std 0.02 it would
/// be nearly uniform and a wrong RoPE or mask could go unnoticed).
fn scrambled_model(style: RopeStyle, seed: u64) -> Llama {
    let mut model = Llama::new(tiny_config(style), seed, &Device::Cpu).unwrap();
    let windows = random_ids(6, 9, seed ^ 1);
    let (x, y) = next_token_pairs(&windows).unwrap();
    train(
        &mut model,
        (&x, &y),
        None,
        &TrainConfig::new(3, seed)
            .learning_rate(0.05)
            .weight_decay(0.0),
    )
    .unwrap();
    let mut g = TestRng::new(seed ^ 2);
    for name in model.layer_names() {
        let (o, i) = model.weight(&name).unwrap().dims2().unwrap();
        let std = 1.0 / (i as f64).sqrt();
        let w: Vec<f32> = (0..o * i).map(|_| (g.normal() * std) as f32).collect();
        model
            .set_weight(
                &name,
                Tensor::from_vec(w, (o, i), &Device::Cpu).unwrap().into(),
            )
            .unwrap();
    }
    model
}

fn random_ids(rows: usize, cols: usize, seed: u64) -> Tensor {
    let mut g = TestRng::new(seed);
    let ids: Vec<u32> = (0..rows * cols)
        .map(|_| (g.next_u64() % VOCAB as u64) as u32)
        .collect();
    Tensor::from_vec(ids, (rows, cols), &Device::Cpu).unwrap()
}

fn to_f64(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// max |a − b| / max |b|.
fn rel_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs()));
    let worst = a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    worst / scale
}

/// A row-major matrix in f64.
struct Mat {
    rows: usize,
    cols: usize,
    data: Vec<f64>,
}

impl Mat {
    fn of(t: &Tensor) -> Mat {
        let (rows, cols) = t.dims2().unwrap();
        Mat {
            rows,
            cols,
            data: to_f64(t),
        }
    }

    /// `x Wᵀ` for one input row.
    fn apply(&self, x: &[f64]) -> Vec<f64> {
        assert_eq!(x.len(), self.cols);
        (0..self.rows)
            .map(|r| {
                let w = &self.data[r * self.cols..(r + 1) * self.cols];
                w.iter().zip(x).map(|(a, b)| a * b).sum()
            })
            .collect()
    }
}

/// The decoder written out in f64, one sequence at a time, from the model's own parameters.
struct Reference {
    config: LlamaConfig,
    embedding: Mat,
    lm_head: Mat,
    final_norm: Vec<f64>,
    /// Per block: attn norm, mlp norm, q, k, v, o, gate, up, down.
    blocks: Vec<(Vec<f64>, Vec<f64>, Vec<Mat>)>,
}

impl Reference {
    fn of(model: &Llama) -> Reference {
        let config = model.config().clone();
        let blocks = (0..config.num_layers)
            .map(|i| {
                let mats = [
                    "attn.q_proj",
                    "attn.k_proj",
                    "attn.v_proj",
                    "attn.o_proj",
                    "mlp.gate_proj",
                    "mlp.up_proj",
                    "mlp.down_proj",
                ]
                .iter()
                .map(|p| Mat::of(&model.weight(&format!("blocks.{i}.{p}")).unwrap()))
                .collect();
                (
                    to_f64(&model.attn_norm(i).unwrap()),
                    to_f64(&model.mlp_norm(i).unwrap()),
                    mats,
                )
            })
            .collect();
        Reference {
            embedding: Mat::of(&model.embedding()),
            lm_head: Mat::of(&model.lm_head()),
            final_norm: to_f64(&model.final_norm()),
            blocks,
            config,
        }
    }

    fn rms_norm(&self, x: &[f64], gain: &[f64]) -> Vec<f64> {
        let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        let r = 1.0 / (ms + self.config.rms_eps).sqrt();
        x.iter().zip(gain).map(|(v, g)| v * r * g).collect()
    }

    /// Rotate one head vector at position `pos`.
    fn rope(&self, v: &mut [f64], pos: usize) {
        let d = v.len();
        for i in 0..d / 2 {
            let angle = pos as f64 * self.config.rope_theta.powf(-2.0 * i as f64 / d as f64);
            let (a, b) = match self.config.rope_style {
                RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                RopeStyle::Halves => (i, i + d / 2),
            };
            let (x0, x1) = (v[a], v[b]);
            v[a] = x0 * angle.cos() - x1 * angle.sin();
            v[b] = x0 * angle.sin() + x1 * angle.cos();
        }
    }

    /// Logits `[t][vocab]` of one sequence.
    fn forward(&self, ids: &[u32]) -> Vec<Vec<f64>> {
        let c = &self.config;
        let (h, d) = (c.hidden_size, c.head_dim);
        let mut x: Vec<Vec<f64>> = ids
            .iter()
            .map(|&id| self.embedding.data[id as usize * h..(id as usize + 1) * h].to_vec())
            .collect();
        for (attn_norm, mlp_norm, w) in &self.blocks {
            let n: Vec<Vec<f64>> = x.iter().map(|r| self.rms_norm(r, attn_norm)).collect();
            let heads = |m: &Mat, count: usize| -> Vec<Vec<Vec<f64>>> {
                // [position][head][d], rotated.
                n.iter()
                    .enumerate()
                    .map(|(pos, r)| {
                        let y = m.apply(r);
                        (0..count)
                            .map(|hh| {
                                let mut v = y[hh * d..(hh + 1) * d].to_vec();
                                self.rope(&mut v, pos);
                                v
                            })
                            .collect()
                    })
                    .collect()
            };
            let q = heads(&w[0], c.num_heads);
            let k = heads(&w[1], c.num_kv_heads);
            let v: Vec<Vec<f64>> = n.iter().map(|r| w[2].apply(r)).collect();
            let group = c.num_heads / c.num_kv_heads;
            for i in 0..x.len() {
                let mut concat = vec![0.0; c.num_heads * d];
                for hh in 0..c.num_heads {
                    let kv = hh / group;
                    let scores: Vec<f64> = (0..=i)
                        .map(|j| {
                            q[i][hh]
                                .iter()
                                .zip(&k[j][kv])
                                .map(|(a, b)| a * b)
                                .sum::<f64>()
                                / (d as f64).sqrt()
                        })
                        .collect();
                    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for (j, p) in e.iter().enumerate() {
                        for t in 0..d {
                            concat[hh * d + t] += p / z * v[j][kv * d + t];
                        }
                    }
                }
                let o = w[3].apply(&concat);
                for (a, b) in x[i].iter_mut().zip(o) {
                    *a += b;
                }
            }
            for r in x.iter_mut() {
                let n2 = self.rms_norm(r, mlp_norm);
                let g = w[4].apply(&n2);
                let u = w[5].apply(&n2);
                let a: Vec<f64> = g
                    .iter()
                    .zip(&u)
                    .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                    .collect();
                for (a, b) in r.iter_mut().zip(w[6].apply(&a)) {
                    *a += b;
                }
            }
        }
        x.iter()
            .map(|r| self.lm_head.apply(&self.rms_norm(r, &self.final_norm)))
            .collect()
    }
}

#[test]
fn forward_matches_a_naive_f64_decoder_in_both_rope_styles() {
    let ids = random_ids(2, 11, 5);
    let rows = ids.to_vec2::<u32>().unwrap();
    let mut outputs = Vec::new();
    for style in [RopeStyle::Interleaved, RopeStyle::Halves] {
        let model = scrambled_model(style, 3);
        // Training moved the norms away from 1 (so the reference really reads them).
        assert!(
            to_f64(&model.attn_norm(1).unwrap())
                .iter()
                .any(|g| (g - 1.0).abs() > 0.01)
        );
        let logits = model.forward(&ids).unwrap();
        assert_eq!(logits.dims(), [2, 11, VOCAB]);
        assert_eq!(logits.dtype(), DType::F32);
        let ours = to_f64(&logits);
        let reference = Reference::of(&model);
        let want: Vec<f64> = rows
            .iter()
            .flat_map(|r| reference.forward(r).into_iter().flatten())
            .collect();
        let diff = rel_diff(&ours, &want);
        assert!(diff < 1e-4, "{style:?}: relative difference {diff:e}");
        outputs.push(ours);
    }
    // The same parameters with the other pairing give clearly different logits: the
    // comparison above is sensitive to the RoPE style.
    assert!(rel_diff(&outputs[0], &outputs[1]) > 1e-2);
}

#[test]
fn logits_are_causal() {
    let model = scrambled_model(RopeStyle::Interleaved, 4);
    let ids = random_ids(1, 12, 6);
    let base = model.forward(&ids).unwrap();
    let j = 7;
    let mut changed = ids.to_vec2::<u32>().unwrap();
    changed[0][j] = (changed[0][j] + 1) % VOCAB as u32;
    let after = model
        .forward(&Tensor::new(changed, &Device::Cpu).unwrap())
        .unwrap();
    let prefix = |t: &Tensor, from: usize, len: usize| to_f64(&t.narrow(1, from, len).unwrap());
    let before_j = rel_diff(&prefix(&after, 0, j), &prefix(&base, 0, j));
    assert!(before_j < 1e-6, "positions < {j} moved by {before_j:e}");
    assert!(rel_diff(&prefix(&after, j, 12 - j), &prefix(&base, j, 12 - j)) > 1e-3);
}

#[test]
fn kv_cache_decoding_equals_the_full_forward() {
    let model = scrambled_model(RopeStyle::Halves, 5);
    let ids = random_ids(2, 14, 7);
    let full = to_f64(&model.forward(&ids).unwrap());
    let mut cache = model.kv_cache(14).unwrap();
    // A prompt of 5, one token, a chunk of 3, then one at a time.
    let mut pieces = Vec::new();
    let mut start = 0;
    for len in [5, 1, 3, 1, 1, 1, 1, 1] {
        let chunk = ids.narrow(1, start, len).unwrap();
        pieces.push(
            model
                .forward_cached(&chunk, &mut cache, &mut NoHooks)
                .unwrap(),
        );
        start += len;
        assert_eq!(cache.len(), start);
    }
    let cached = to_f64(&Tensor::cat(&pieces, 1).unwrap());
    let diff = rel_diff(&cached, &full);
    assert!(diff < 1e-4, "cached decoding differs by {diff:e}");
    // The cache is full: one more position is an error, not a silent overwrite.
    let one = ids.narrow(1, 0, 1).unwrap();
    assert!(
        model
            .forward_cached(&one, &mut cache, &mut NoHooks)
            .is_err()
    );
    // Truncating rewinds: re-feeding the last token gives its logits again.
    cache.truncate(13);
    let again = model
        .forward_cached(&ids.narrow(1, 13, 1).unwrap(), &mut cache, &mut NoHooks)
        .unwrap();
    let last = to_f64(&model.forward(&ids).unwrap().narrow(1, 13, 1).unwrap());
    assert!(rel_diff(&to_f64(&again), &last) < 1e-4);
    // A different batch size than the cache holds is refused.
    cache.truncate(2);
    assert!(matches!(
        model.forward_cached(&random_ids(3, 1, 1), &mut cache, &mut NoHooks),
        Err(Error::ShapeMismatch(_))
    ));
    assert!(model.kv_cache(0).is_err());
    assert!(model.kv_cache(17).is_err());
    // The last-position variant (what generation uses) gives the last row of the full pass.
    let mut fresh = model.kv_cache(14).unwrap();
    let last = model
        .forward_cached_last(&ids, &mut fresh, &mut NoHooks)
        .unwrap();
    assert_eq!(last.dims(), [2, VOCAB]);
    let want = model.forward(&ids).unwrap().narrow(1, 13, 1).unwrap();
    assert!(rel_diff(&to_f64(&last), &to_f64(&want)) < 1e-5);
    assert_eq!(fresh.len(), 14);
}

#[test]
fn same_seed_same_weights() {
    let bytes = |m: &Llama| -> Vec<Vec<f64>> {
        let mut all: Vec<Vec<f64>> = m
            .layer_names()
            .iter()
            .map(|n| to_f64(&m.weight(n).unwrap()))
            .collect();
        all.push(to_f64(&m.embedding()));
        all
    };
    let cfg = tiny_config(RopeStyle::Interleaved);
    let a = Llama::new(cfg.clone(), 11, &Device::Cpu).unwrap();
    let b = Llama::new(cfg.clone(), 11, &Device::Cpu).unwrap();
    let c = Llama::new(cfg.clone(), 12, &Device::Cpu).unwrap();
    assert_eq!(bytes(&a), bytes(&b));
    assert_ne!(bytes(&a), bytes(&c));
    // Initial scale: N(0, 0.02²) for q (960 draws: the sample std is within 10%).
    let q = to_f64(&a.weight("blocks.0.attn.q_proj").unwrap());
    let std = (q.iter().map(|v| v * v).sum::<f64>() / q.len() as f64).sqrt();
    assert!((std - 0.02).abs() < 0.002, "{std}");
    // An untied head is a separate parameter.
    let untied = Llama::new(cfg.tie_embeddings(false), 11, &Device::Cpu).unwrap();
    assert_ne!(to_f64(&untied.lm_head()), to_f64(&untied.embedding()));
    assert_eq!(to_f64(&a.lm_head()), to_f64(&a.embedding()));
}

#[test]
fn bad_inputs_and_configs_are_errors() {
    let model = Llama::new(tiny_config(RopeStyle::Interleaved), 1, &Device::Cpu).unwrap();
    let dev = Device::Cpu;
    let f32_ids = Tensor::new(&[[1f32, 2.0]], &dev).unwrap();
    assert!(matches!(
        model.forward(&f32_ids),
        Err(Error::InvalidParameter { .. })
    ));
    let rank1 = Tensor::new(&[1u32, 2], &dev).unwrap();
    let rank3 = Tensor::new(&[[[1u32, 2]]], &dev).unwrap();
    for ids in [rank1, rank3] {
        assert!(matches!(
            model.forward(&ids),
            Err(Error::RankMismatch { expected: 2, .. })
        ));
    }
    let too_big = Tensor::new(&[[1u32, 61, 3]], &dev).unwrap();
    assert!(matches!(
        model.forward(&too_big),
        Err(Error::TargetOutOfRange {
            index: 1,
            value: 61,
            classes: 61,
            ..
        })
    ));
    let too_long = random_ids(1, 17, 1);
    assert!(matches!(
        model.forward(&too_long),
        Err(Error::InvalidParameter { .. })
    ));
    let empty = Tensor::zeros((1, 0), DType::U32, &dev).unwrap();
    assert!(model.forward(&empty).is_err());

    let base = tiny_config(RopeStyle::Interleaved);
    let mut bad_head = base.clone();
    bad_head.head_dim = 6; // 4 · 6 ≠ 32
    let mut odd_head = LlamaConfig::tiny(VOCAB, 36, 2, 4, 2);
    odd_head.head_dim = 9; // 4 · 9 = 36, but odd
    let bad_configs = [
        LlamaConfig::tiny(VOCAB, 32, 2, 4, 3), // 4 heads, 3 KV heads
        LlamaConfig::tiny(0, 32, 2, 4, 2),
        LlamaConfig::tiny(VOCAB, 32, 0, 4, 2),
        LlamaConfig::tiny(VOCAB, 30, 2, 4, 2), // 30 / 4 is not whole
        bad_head,
        odd_head,
        base.clone().rms_eps(0.0),
        base.clone().rope_theta(f64::NAN),
        base.clone().max_seq_len(0),
    ];
    for cfg in bad_configs {
        assert!(
            matches!(
                Llama::new(cfg.clone(), 0, &dev),
                Err(Error::InvalidParameter { .. })
            ),
            "{cfg:?}"
        );
    }

    // Generation: empty prompt, prompt + new tokens past the context, bad sampling settings.
    assert!(model.generate(&[], &GenerateConfig::new(2)).is_err());
    assert!(model.generate(&[1; 10], &GenerateConfig::new(7)).is_err());
    assert!(model.generate(&[70], &GenerateConfig::new(1)).is_err());
    for sampling in [
        Sampling::Sample {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
        },
        Sampling::Sample {
            temperature: 1.0,
            top_k: Some(0),
            top_p: None,
            seed: 0,
        },
        Sampling::Sample {
            temperature: 1.0,
            top_k: None,
            top_p: Some(1.5),
            seed: 0,
        },
    ] {
        let cfg = GenerateConfig::new(2).sampling(sampling);
        assert!(matches!(
            model.generate(&[1, 2], &cfg),
            Err(Error::InvalidParameter { .. })
        ));
    }
}

#[test]
fn quantization_stages_group_shared_inputs() {
    let model = Llama::new(tiny_config(RopeStyle::Interleaved), 1, &Device::Cpu).unwrap();
    let stages = model.quantization_stages();
    let names = |i: usize, ps: &[&str]| -> Vec<String> {
        ps.iter().map(|p| format!("blocks.{i}.{p}")).collect()
    };
    let mut want = Vec::new();
    for i in 0..2 {
        want.push(names(i, &["attn.q_proj", "attn.k_proj", "attn.v_proj"]));
        want.push(names(i, &["attn.o_proj"]));
        want.push(names(i, &["mlp.gate_proj", "mlp.up_proj"]));
        want.push(names(i, &["mlp.down_proj"]));
    }
    assert_eq!(stages, want);
    // The stages list every layer once, in execution order.
    assert_eq!(stages.concat(), model.layer_names());
}

#[test]
fn sequential_quantization_runs_over_the_model() {
    let fp = scrambled_model(RopeStyle::Interleaved, 8);
    let ids = random_ids(3, 10, 9);
    let before = to_f64(&fp.forward(&ids).unwrap());

    // Data-free RTN: every projection packed, the logits move a little.
    let mut rtn_model = fp.clone();
    let rtn = UniformQuantizer::new(QuantSpec::int8().per_channel()).unwrap();
    let report = SequentialQuantization::new(&rtn)
        .run(&mut rtn_model)
        .unwrap();
    assert_eq!(report.layers.len(), 14);
    let after = to_f64(&rtn_model.forward(&ids).unwrap());
    let moved = rel_diff(&after, &before);
    assert!(
        moved > 0.0 && moved < 0.05,
        "int8 moved logits by {moved:e}"
    );
    // The full-precision original is untouched by quantizing its clone.
    assert_eq!(to_f64(&fp.forward(&ids).unwrap()), before);
    // A quantized model refuses to train.
    let (x, y) = next_token_pairs(&random_ids(2, 5, 1)).unwrap();
    assert!(matches!(
        train(&mut rtn_model, (&x, &y), None, &TrainConfig::new(1, 0)),
        Err(Error::Unsupported(_))
    ));

    // Data-aware GPTQ through the grouped stages: every layer calibrated on all 30 tokens.
    let mut gptq_model = fp.clone();
    let gptq = GptqQuantizer::new(QuantSpec::int4().per_group(8)).unwrap();
    let report = SequentialQuantization::new(&gptq)
        .calibration([ids.narrow(0, 0, 2).unwrap(), ids.narrow(0, 2, 1).unwrap()])
        .run(&mut gptq_model)
        .unwrap();
    assert!(report.layers.iter().all(|l| l.calibration_rows == 30));
    let moved = rel_diff(&to_f64(&gptq_model.forward(&ids).unwrap()), &before);
    assert!(
        moved > 1e-4 && moved < 0.5,
        "int4 GPTQ moved logits by {moved:e}"
    );
    // Cached decoding goes through the quantized layers too.
    let mut cache = gptq_model.kv_cache(10).unwrap();
    let cached = gptq_model
        .forward_cached(&ids, &mut cache, &mut NoHooks)
        .unwrap();
    assert!(
        rel_diff(
            &to_f64(&cached),
            &to_f64(&gptq_model.forward(&ids).unwrap())
        ) < 1e-4
    );
}

#[test]
fn training_learns_a_repeated_pattern() {
    // The stream 3 7 1 9 4 3 7 1 9 4 …: every next token is determined by the current one.
    let pattern = [3u32, 7, 1, 9, 4];
    let windows: Vec<u32> = (0..10)
        .flat_map(|start| (0..9).map(move |i| pattern[(start + i) % 5]))
        .collect();
    let windows = Tensor::from_vec(windows, (10, 9), &Device::Cpu).unwrap();
    let (x, y) = next_token_pairs(&windows).unwrap();
    assert_eq!((x.dims(), y.dims()), (&[10, 8][..], &[10, 8][..]));
    let mut model = Llama::new(tiny_config(RopeStyle::Interleaved), 2, &Device::Cpu).unwrap();
    let history = train(
        &mut model,
        (&x, &y),
        None,
        &TrainConfig::new(15, 2).batch_size(5).learning_rate(1e-2),
    )
    .unwrap();
    let first = history.epochs[0].train_loss;
    let last = history.last().unwrap().train_loss;
    // Starts near ln 61 ≈ 4.1 (uniform), ends far below.
    assert!(first > 2.0 && last < 0.3, "{first} → {last}");
    // The trained model continues the pattern greedily.
    let continued = model.generate(&[3, 7, 1], &GenerateConfig::new(5)).unwrap();
    assert_eq!(continued, [9, 4, 3, 7, 1]);
    // Seeded sampling: same seed, same tokens; stop tokens end generation (and are kept).
    let sample = |seed| {
        let cfg = GenerateConfig::new(6).sampling(Sampling::Sample {
            temperature: 1.5,
            top_k: Some(20),
            top_p: Some(0.99),
            seed,
        });
        model.generate(&[3], &cfg).unwrap()
    };
    assert_eq!(sample(4), sample(4));
    let stopped = model
        .generate(&[3, 7], &GenerateConfig::new(6).stop_tokens(&[9]))
        .unwrap();
    assert_eq!(stopped, [1, 9]);
    // Targets of the wrong shape are refused.
    let y_short = y.narrow(1, 0, 7).unwrap();
    assert!(matches!(
        train(&mut model, (&x, &y_short), None, &TrainConfig::new(1, 0)),
        Err(Error::ShapeMismatch(_))
    ));
}

/// A "model" whose logits are all 0: the uniform distribution over `VOCAB` tokens.
struct Uniform;

impl QuantizableModel for Uniform {
    fn linear_layers(&self) -> Vec<&quantlens::model::LinearLayer> {
        Vec::new()
    }
    fn linear_layer_mut(&mut self, _name: &str) -> Option<&mut quantlens::model::LinearLayer> {
        None
    }
    fn forward_hooked(
        &self,
        input: &Tensor,
        _hooks: &mut dyn quantlens::model::ForwardHook,
    ) -> quantlens::Result<Tensor> {
        let (b, t) = input.dims2()?;
        Ok(Tensor::zeros((b, t, VOCAB), DType::F32, input.device())?)
    }
}

#[test]
fn perplexity_of_a_uniform_model_is_the_vocabulary_size() {
    let tokens: Vec<u32> = (0..50).map(|i| (i * 13 % VOCAB) as u32).collect();
    for (window, stride, batch) in [(8, 8, 1), (8, 3, 4), (49, 10, 2), (2, 1, 7), (64, 64, 1)] {
        let ppl = perplexity(
            &Uniform,
            &tokens,
            PerplexityConfig::new(window, stride).batch(batch),
        )
        .unwrap();
        assert_eq!(ppl.tokens, tokens.len() - 1, "{window}/{stride}");
        // Each scored token costs ln V: total = (n − 1) ln V, perplexity = V.
        let want = (tokens.len() - 1) as f64 * (VOCAB as f64).ln();
        assert!((ppl.total_nll - want).abs() < 1e-4 * want);
        assert!((ppl.perplexity - VOCAB as f64).abs() < 1e-4 * VOCAB as f64);
    }
    let cfg = PerplexityConfig::new(4, 2);
    assert!(matches!(
        perplexity(&Uniform, &[1], cfg),
        Err(Error::TooFewSamples { .. })
    ));
    for bad in [
        PerplexityConfig::new(1, 1),
        PerplexityConfig::new(4, 0),
        PerplexityConfig::new(4, 5),
        PerplexityConfig::new(4, 2).batch(0),
    ] {
        assert!(matches!(
            perplexity(&Uniform, &tokens, bad),
            Err(Error::InvalidParameter { .. })
        ));
    }
}

#[test]
fn perplexity_of_one_window_is_the_mean_next_token_nll() {
    let model = scrambled_model(RopeStyle::Interleaved, 10);
    let tokens: Vec<u32> = random_ids(1, 16, 3).to_vec2::<u32>().unwrap().remove(0);
    // One window of all 15 inputs: every target scored with full context.
    let ppl = perplexity(&model, &tokens, PerplexityConfig::new(15, 15)).unwrap();
    let reference = Reference::of(&model);
    let logits = reference.forward(&tokens[..15]);
    let nll: f64 = logits
        .iter()
        .zip(&tokens[1..])
        .map(|(row, &target)| {
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            lse - row[target as usize]
        })
        .sum();
    assert_eq!(ppl.tokens, 15);
    assert!(
        (ppl.total_nll - nll).abs() < 1e-4 * nll,
        "{} vs {nll}",
        ppl.total_nll
    );
    assert!((ppl.perplexity - (nll / 15.0).exp()).abs() < 1e-4 * ppl.perplexity);
    // Shorter windows give the later tokens less context: same count, another total.
    let short = perplexity(&model, &tokens, PerplexityConfig::new(4, 2).batch(3)).unwrap();
    assert_eq!(short.tokens, 15);
    assert!((short.total_nll - nll).abs() > 1e-3);
}

// ---------------------------------------------------------------------------------------------
// SmolLM2-135M from the GGUF fixture.

/// The start of a chat-formatted prompt in SmolLM2's vocabulary (any valid ids would do).
const SMOL_IDS: [u32; 24] = [
    1, 4093, 314, 253, 1345, 28, 1079, 9678, 30, 2, 198, 1, 520, 9531, 198, 19556, 314, 260, 3575,
    282, 4649, 47, 2, 198,
];

fn smollm2_path() -> std::path::PathBuf {
    common::ensure_fixtures();
    quantlens::data::fixture_path("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf").unwrap()
}

/// Candle's `quantized_llama` over the same file with every tensor dequantized to f32 first —
/// what `CANDLE_DEQUANTIZE_ALL=1` does inside `QMatMul::from_arc` (an F32 tensor is always
/// dequantized there). That variable is read once per thread into a thread-local, so rather
/// than depend on which thread of the test harness builds the model first, the F32 file is
/// written in memory and read back.
fn candle_dequantized(path: &std::path::Path) -> ModelWeights {
    let dev = Device::Cpu;
    let mut file = std::fs::File::open(path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut tensors = Vec::new();
    for name in content.tensor_infos.keys() {
        let q = content.tensor(&mut file, name, &dev).unwrap();
        let f = QTensor::quantize(&q.dequantize(&dev).unwrap(), GgmlDType::F32).unwrap();
        tensors.push((name.clone(), f));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut bytes = Cursor::new(Vec::new());
    gguf_file::write(&mut bytes, &metadata, &tensor_refs).unwrap();
    bytes.set_position(0);
    let f32_content = gguf_file::Content::read(&mut bytes).unwrap();
    ModelWeights::from_gguf(f32_content, &mut bytes, &dev).unwrap()
}

/// Candle's last-position logits after a prefill of `prefill` tokens, then after each further
/// token fed one at a time through its KV cache: positions `prefill − 1 ..`.
fn candle_logits(model: &mut ModelWeights, ids: &[u32], prefill: usize) -> Vec<Vec<f64>> {
    let dev = Device::Cpu;
    let row = |t: Tensor| to_f64(&t);
    let mut out = vec![row(model
        .forward(
            &Tensor::new(&ids[..prefill], &dev)
                .unwrap()
                .unsqueeze(0)
                .unwrap(),
            0,
        )
        .unwrap())];
    for (pos, &id) in ids.iter().enumerate().skip(prefill) {
        let x = Tensor::new(&[[id]], &dev).unwrap();
        out.push(row(model.forward(&x, pos).unwrap()));
    }
    out
}

#[test]
fn smollm2_config_and_source_formats_come_from_the_gguf() {
    let model = Llama::from_gguf(smollm2_path(), &Device::Cpu).unwrap();
    let c = model.config();
    assert_eq!(
        (c.num_layers, c.hidden_size, c.intermediate_size),
        (30, 576, 1536)
    );
    assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (9, 3, 64));
    assert_eq!((c.vocab_size, c.max_seq_len), (49_152, 8192));
    assert_eq!(c.rope_theta, 100_000.0);
    assert!((c.rms_eps - 1e-5).abs() < 1e-10);
    assert!(c.tie_embeddings);
    assert_eq!(c.rope_style, RopeStyle::Interleaved);
    let preset = LlamaConfig::smollm2_135m();
    assert_eq!(c.clone().rms_eps(preset.rms_eps), preset);
    assert_eq!(model.layer_names().len(), 210);
    let src = model.source_formats().unwrap();
    assert_eq!(src.summary(), "210× Q4_1, 61× F32, 1× Q8_0");
    assert_eq!(src.format("blk.3.ffn_down.weight"), Some("Q4_1"));
    assert_eq!(src.format("token_embd.weight"), Some("Q8_0"));

    // A file that is not GGUF, a missing file, and a GGUF missing a tensor are clear errors.
    let dir = std::env::temp_dir().join(format!("quantlens-llama-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.gguf");
    std::fs::write(&junk, b"not a gguf file at all").unwrap();
    assert!(matches!(
        Llama::from_gguf(&junk, &Device::Cpu),
        Err(Error::Malformed { .. })
    ));
    assert!(matches!(
        Llama::from_gguf(dir.join("absent.gguf"), &Device::Cpu),
        Err(Error::Io { .. })
    ));
    let mut file = std::fs::File::open(smollm2_path()).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .filter(|(k, _)| !k.starts_with("tokenizer."))
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let embd = content
        .tensor(&mut file, "token_embd.weight", &Device::Cpu)
        .unwrap();
    let partial = dir.join("partial.gguf");
    let mut out = std::fs::File::create(&partial).unwrap();
    gguf_file::write(&mut out, &metadata, &[("token_embd.weight", &embd)]).unwrap();
    drop(out);
    match Llama::from_gguf(&partial, &Device::Cpu) {
        Err(Error::Malformed { reason, .. }) => {
            assert!(reason.contains("missing tensor"), "{reason}")
        }
        other => panic!("expected a missing-tensor error, got {other:?}"),
    }
    // Another architecture is refused by name.
    let mut other_arch = metadata.clone();
    let qwen = gguf_file::Value::String("qwen2".into());
    for entry in other_arch.iter_mut() {
        if entry.0 == "general.architecture" {
            entry.1 = &qwen;
        }
    }
    let mut out = std::fs::File::create(&partial).unwrap();
    gguf_file::write(&mut out, &other_arch, &[("token_embd.weight", &embd)]).unwrap();
    drop(out);
    assert!(matches!(
        Llama::from_gguf(&partial, &Device::Cpu),
        Err(Error::Unsupported(_))
    ));
    // So is RoPE scaling, which plain RoPE would silently get wrong.
    let mut scaled = metadata.clone();
    let linear = gguf_file::Value::String("linear".into());
    scaled.push(("llama.rope.scaling.type", &linear));
    let mut out = std::fs::File::create(&partial).unwrap();
    gguf_file::write(&mut out, &scaled, &[("token_embd.weight", &embd)]).unwrap();
    drop(out);
    match Llama::from_gguf(&partial, &Device::Cpu) {
        Err(Error::Unsupported(why)) => assert!(why.contains("RoPE scaling"), "{why}"),
        other => panic!("expected RoPE scaling to be refused, got {other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn smollm2_logits_match_candle_quantized_llama() {
    let path = smollm2_path();
    let ours = Llama::from_gguf(&path, &Device::Cpu).unwrap();
    let ids = Tensor::new(&SMOL_IDS[..], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let logits = ours.forward(&ids).unwrap();
    assert_eq!(logits.dims(), [1, 24, 49_152]);
    let prefill = 8;
    let ours_tail = to_f64(&logits.narrow(1, prefill - 1, 24 - prefill + 1).unwrap());

    // Candle on the dequantized weights: the same numbers up to f32 rounding.
    let mut candle = candle_dequantized(&path);
    let theirs: Vec<f64> = candle_logits(&mut candle, &SMOL_IDS, prefill).concat();
    let diff = rel_diff(&ours_tail, &theirs);
    println!("SmolLM2 logits vs candle quantized_llama (dequantized f32): max rel diff {diff:.3e}");
    assert!(diff < 1e-3, "relative difference {diff:e}");

    // Candle's Q4_1 QMatMul quantizes activations to Q8_1 on the CPU: close, not equal.
    let mut file = std::fs::File::open(&path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut q4 = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap();
    let theirs_q = candle_logits(&mut q4, &SMOL_IDS, prefill).concat();
    let diff_q = rel_diff(&ours_tail, &theirs_q);
    println!("SmolLM2 logits vs candle quantized_llama (Q4_1 QMatMul): max rel diff {diff_q:.3e}");
    assert!(diff_q < 0.1, "relative difference {diff_q:e}");

    // Greedy generation: deterministic, and the same tokens as greedy decoding of Candle's
    // logits continued from the same prompt.
    let prompt = &SMOL_IDS[..12];
    let generated = ours.generate(prompt, &GenerateConfig::new(8)).unwrap();
    assert_eq!(generated.len(), 8);
    assert_eq!(
        generated,
        ours.generate(prompt, &GenerateConfig::new(8)).unwrap()
    );
    candle.clear_kv_cache();
    let argmax = |row: &[f64]| {
        row.iter()
            .enumerate()
            .fold((0, f64::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 { (i, v) } else { best }
            })
            .0 as u32
    };
    let mut seq = prompt.to_vec();
    let mut last = to_f64(
        &candle
            .forward(
                &Tensor::new(prompt, &Device::Cpu)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap(),
                0,
            )
            .unwrap(),
    );
    for _ in 0..8 {
        let next = argmax(&last);
        seq.push(next);
        let pos = seq.len() - 1;
        last = to_f64(
            &candle
                .forward(&Tensor::new(&[[next]], &Device::Cpu).unwrap(), pos)
                .unwrap(),
        );
    }
    assert_eq!(generated, seq[12..]);
}

#[test]
fn blockwise_sequential_gptq_equals_rerunning_the_prefix() {
    let fp = scrambled_model(RopeStyle::Halves, 21);
    let batches = [random_ids(2, 10, 5), random_ids(1, 7, 6)];
    let gptq = GptqQuantizer::new(QuantSpec::int4().per_group(8)).unwrap();
    let (blockwise, report) = assert_blockwise_equals_prefix(&fp, &batches, &gptq);
    assert!(report.layers.iter().all(|l| l.calibration_rows == 27));
    // Sequential calibration saw the quantized blocks: block 1 differs from calibrating on the
    // full-precision model's inputs.
    let mut upfront = fp.clone();
    SequentialQuantization::new(&gptq)
        .calibration(batches.clone())
        .calibration_mode(CalibrationMode::FullPrecision)
        .run(&mut upfront)
        .unwrap();
    let differs = packed_weights(&upfront)
        .iter()
        .zip(packed_weights(&blockwise))
        .filter(|(a, b)| a.1 != b.1)
        .map(|(a, _)| a.0.clone())
        .collect::<Vec<_>>();
    assert!(
        differs.iter().any(|n| n.starts_with("blocks.1.")),
        "{differs:?}"
    );
}

#[test]
fn quantized_embedding_feeds_lookup_and_tied_head() {
    let fp = scrambled_model(RopeStyle::Interleaved, 31);
    let ids = random_ids(2, 9, 32);
    let before = to_f64(&fp.forward(&ids).unwrap());
    let rtn = UniformQuantizer::new(QuantSpec::int4().per_channel()).unwrap();
    // What the quantizer makes of the table, computed here from the full-precision table.
    let expected = rtn
        .quantize(&fp.embedding(), None)
        .unwrap()
        .dequantize(&Device::Cpu)
        .unwrap();
    let mut model = fp.clone();
    let packed = model.quantize_embedding(&rtn).unwrap();
    assert!(packed.lm_head.is_none());
    assert_eq!(to_f64(&model.embedding()), to_f64(&expected));
    assert_eq!(to_f64(&model.lm_head()), to_f64(&expected));
    assert!(packed.storage_bytes() * 6 < VOCAB * 32 * 4);
    // The lookup reads the quantized rows; the linear layers are untouched.
    let rows = expected
        .index_select(&ids.flatten_all().unwrap(), 0)
        .unwrap();
    assert_eq!(to_f64(&model.embed(&ids).unwrap()), to_f64(&rows));
    for name in fp.layer_names() {
        assert_eq!(
            to_f64(&model.weight(&name).unwrap()),
            to_f64(&fp.weight(&name).unwrap())
        );
    }
    // Logits move, more at 2 bits than at 8.
    let moved = |bits: u8| {
        let mut m = fp.clone();
        let q = UniformQuantizer::new(QuantSpec::new(bits).per_channel()).unwrap();
        m.quantize_embedding(&q).unwrap();
        rel_diff(&to_f64(&m.forward(&ids).unwrap()), &before)
    };
    let (d8, d4, d2) = (
        moved(8),
        rel_diff(&to_f64(&model.forward(&ids).unwrap()), &before),
        moved(2),
    );
    assert!(0.0 < d8 && d8 < d4 && d4 < d2, "{d8:e} {d4:e} {d2:e}");

    // An untied head is quantized too.
    let mut untied = Llama::new(
        tiny_config(RopeStyle::Halves).tie_embeddings(false),
        5,
        &Device::Cpu,
    )
    .unwrap();
    let head = untied.lm_head();
    let packed = untied.quantize_embedding(&rtn).unwrap();
    let head_q = rtn.quantize(&head, None).unwrap();
    assert_eq!(packed.lm_head.as_ref(), Some(&head_q));
    assert_eq!(
        to_f64(&untied.lm_head()),
        to_f64(&head_q.dequantize(&Device::Cpu).unwrap())
    );

    // A data-aware quantizer is refused, and the model is left as it was.
    let gptq = GptqQuantizer::new(QuantSpec::int4()).unwrap();
    let mut m = fp.clone();
    assert!(matches!(
        m.quantize_embedding(&gptq),
        Err(Error::InvalidParameter {
            name: "quantizer",
            ..
        })
    ));
    assert_eq!(to_f64(&m.embedding()), to_f64(&fp.embedding()));
}
