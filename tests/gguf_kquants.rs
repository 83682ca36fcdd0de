//! llama.cpp K-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K) read from GGUF files.
//!
//! The independent reference is Candle's own implementation: tensors are quantized by
//! `QTensor::quantize` (or built from random super-block bytes), written by Candle's GGUF
//! writer, read by quantlens, and our `dequantize()` must equal Candle's
//! `QTensor::dequantize` bit for bit. Malformed K-quant tensors must give clear errors.

mod common;

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use candle_core::quantized::ggml_file::qtensor_from_ggml;
use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{DType, Device, Tensor};
use common::{TestRng, values};
use half::f16;
use quantlens::io::{
    GgufFallback, GgufWriter, SafetensorsWriter, TensorEntry, load_gguf, load_into, read_gguf,
    read_safetensors,
};
use quantlens::model::{LayerWeight, Llama, Mlp, MlpConfig, QuantizableModel};
use quantlens::{Error, QuantFormat, QuantizedTensor};

/// Every K-quant type: Candle's dtype, GGML's name and id, the bytes of one super-block
/// (llama.cpp's `block_q*_K` structs), and the quantlens format and group length it must read
/// as (the mapping the reader documents).
const K_TYPES: [(GgmlDType, &str, u32, usize, QuantFormat, usize); 6] = [
    (
        GgmlDType::Q2K,
        "Q2_K",
        10,
        84,
        QuantFormat::Affine { bits: 2 },
        16,
    ),
    (GgmlDType::Q3K, "Q3_K", 11, 110, uniform(3), 16),
    (
        GgmlDType::Q4K,
        "Q4_K",
        12,
        144,
        QuantFormat::Affine { bits: 4 },
        32,
    ),
    (
        GgmlDType::Q5K,
        "Q5_K",
        13,
        176,
        QuantFormat::Affine { bits: 5 },
        32,
    ),
    (GgmlDType::Q6K, "Q6_K", 14, 210, uniform(6), 16),
    (GgmlDType::Q8K, "Q8_K", 15, 292, uniform(8), 256),
];

const fn uniform(bits: u8) -> QuantFormat {
    QuantFormat::Uniform {
        bits,
        symmetric: true,
    }
}

/// Weights per super-block.
const QK_K: usize = 256;

/// A file in the temp directory, unique per call, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str) -> Self {
        TempFile(std::env::temp_dir().join(format!(
            "quantlens-kquants-{tag}-{}.gguf",
            std::process::id()
        )))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        std::fs::remove_file(&self.0).ok();
    }
}

/// A `rows × cols` matrix whose rows cycle through what quantizers find hard: Gaussian
/// values, Gaussian values with large outliers, constant rows (positive, zero, negative) and
/// tiny values (f16 super-scales in the subnormal range).
fn matrix(rows: usize, cols: usize, seed: u64) -> Tensor {
    let mut rng = TestRng::new(seed);
    let mut v = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            let x = match r % 6 {
                0 => 0.5 * rng.normal() + 0.05,
                1 if c % 37 == 5 => 40.0 * rng.normal(),
                1 => 0.2 * rng.normal(),
                2 => 0.3,
                3 => 0.0,
                4 => -1.7,
                _ => 1e-6 * rng.normal(),
            };
            v.push(x as f32);
        }
    }
    Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
}

/// A GGUF file (version 2) written by Candle.
fn candle_gguf(tensors: &[(&str, &QTensor)]) -> Vec<u8> {
    let arch = gguf_file::Value::String("llama".into());
    let mut c = Cursor::new(Vec::new());
    gguf_file::write(&mut c, &[("general.architecture", &arch)], tensors).unwrap();
    c.into_inner()
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Assert that `ours` (read by quantlens) dequantizes to exactly Candle's values for `theirs`.
fn assert_same(what: &str, ours: &QuantizedTensor, theirs: &QTensor) {
    let want = values(&theirs.dequantize(&Device::Cpu).unwrap());
    let got = values(&ours.dequantize(&Device::Cpu).unwrap());
    assert_eq!(ours.shape(), theirs.shape().dims(), "{what}");
    assert_eq!(ours.dtype(), DType::F32, "{what}");
    if let Some(i) = (0..want.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!(
            "{what}: element {i} of {} is {} (bits {:#x}), Candle gives {} (bits {:#x})",
            want.len(),
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits()
        );
    }
}

fn quantized<'a>(file: &'a quantlens::io::GgufFile, name: &str) -> &'a QuantizedTensor {
    file.tensor(name)
        .and_then(TensorEntry::as_quantized)
        .unwrap_or_else(|| panic!("{name} is not a quantized tensor"))
}

/// Where tensor `t`'s blocks lie in `file`, a GGUF file holding it.
fn data_range(file: &[u8], t: &QTensor) -> std::ops::Range<usize> {
    let data = t.data().unwrap();
    let at = file
        .windows(data.len())
        .rposition(|w| w == &data[..])
        .expect("tensor data");
    at..at + data.len()
}

/// The bytes of a random finite f16 (any sign, subnormals included).
fn finite_f16(rng: &mut TestRng) -> [u8; 2] {
    loop {
        let h = f16::from_bits(rng.next_u64() as u16);
        if h.is_finite() {
            return h.to_le_bytes();
        }
    }
}

fn malformed(bytes: &[u8]) -> String {
    match read_gguf(bytes) {
        Err(Error::Malformed { reason, .. }) => reason,
        other => panic!("expected a malformed-file error, got {other:?}"),
    }
}

/// Byte position of tensor `name`'s dimension count in Candle's tensor infos (the name is
/// stored as a u64 length and its bytes).
fn info_at(bytes: &[u8], name: &str) -> usize {
    let mut pat = (name.len() as u64).to_le_bytes().to_vec();
    pat.extend(name.as_bytes());
    let at = bytes
        .windows(pat.len())
        .position(|w| w == pat)
        .expect("tensor info");
    at + pat.len()
}

#[test]
fn candle_quantized_k_tensors_read_bit_for_bit() {
    let shapes: [&[usize]; 5] = [&[1, 256], &[6, 512], &[12, 1024], &[512], &[2, 3, 256]];
    for (i, &(dtype, name, _, _, format, group_len)) in K_TYPES.iter().enumerate() {
        let theirs: Vec<QTensor> = shapes
            .iter()
            .enumerate()
            .map(|(j, shape)| {
                let n: usize = shape.iter().product();
                let t = matrix(n / 256, 256, 100 * i as u64 + j as u64)
                    .reshape(*shape)
                    .unwrap();
                QTensor::quantize(&t, dtype).unwrap()
            })
            .collect();
        let names: Vec<String> = (0..shapes.len()).map(|j| format!("t{j}")).collect();
        let list: Vec<(&str, &QTensor)> = names.iter().map(String::as_str).zip(&theirs).collect();
        let file = read_gguf(&candle_gguf(&list)).unwrap();
        assert_eq!(file.tensors().len(), shapes.len());
        for (n, t) in names.iter().zip(&theirs) {
            let ours = quantized(&file, n);
            assert_eq!(ours.format(), format, "{name} {n}");
            assert_eq!(ours.group_len(), group_len, "{name} {n}");
            assert_same(&format!("{name} {n}"), ours, t);
            // Loaded, a tensor costs about what the file holds (Q2_K's 4-bit sub-block
            // scales and minima take a byte each in memory).
            // (plus the two f32 zero offsets of the two-level scales).
            let (file_bytes, ours_bytes) = (t.storage_size_in_bytes(), ours.storage_bytes());
            assert!(
                ours_bytes as f64 <= 1.25 * file_bytes as f64 + 8.0,
                "{name} {n}: {ours_bytes} bytes for {file_bytes}"
            );
        }
    }
}

/// Random super-block bytes reach every bit of every field (negative Q6_K scales, all 64 Q3_K
/// scales, the packed high bits of the Q4_K/Q5_K scales and minima, negative and subnormal
/// super-scales), which a quantizer of smooth data may never produce.
#[test]
fn random_super_blocks_read_bit_for_bit() {
    let mut rng = TestRng::new(7);
    for &(dtype, name, _, block_bytes, _, _) in &K_TYPES {
        let (rows, blocks_per_row) = (8, 3);
        let blocks = rows * blocks_per_row;
        let mut bytes: Vec<u8> = (0..blocks * block_bytes)
            .map(|_| rng.next_u64() as u8)
            .collect();
        for (b, block) in bytes.chunks_exact_mut(block_bytes).enumerate() {
            // Where each type keeps its f16 super-scales (d, then dmin), or Q8_K its f32 d.
            let at: &[usize] = match dtype {
                GgmlDType::Q2K => &[80, 82],
                GgmlDType::Q3K => &[108],
                GgmlDType::Q4K | GgmlDType::Q5K => &[0, 2],
                GgmlDType::Q6K => &[208],
                _ => &[],
            };
            for &a in at {
                // Some blocks have d (and dmin) +0 or −0: signed zeros must survive.
                let h = match b % 6 {
                    4 => [0x00, 0x00],
                    5 => [0x00, 0x80],
                    _ => finite_f16(&mut rng),
                };
                block[a..a + 2].copy_from_slice(&h);
            }
            if dtype == GgmlDType::Q8K {
                let d = (rng.normal() * 1e-2) as f32;
                block[..4].copy_from_slice(&d.to_le_bytes());
            }
        }
        let shape = vec![rows, blocks_per_row * QK_K];
        if dtype == GgmlDType::Q8K {
            // Candle cannot build a Q8_K tensor from bytes: put them in place of a quantized
            // one's and check against `d · q`, computed here.
            let t = QTensor::quantize(&matrix(shape[0], shape[1], 1), dtype).unwrap();
            let mut file = candle_gguf(&[("w", &t)]);
            let range = data_range(&file, &t);
            file[range].copy_from_slice(&bytes);
            let want: Vec<f32> = bytes
                .chunks_exact(block_bytes)
                .flat_map(|b| {
                    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    b[4..4 + QK_K].iter().map(move |&q| d * f32::from(q as i8))
                })
                .collect();
            let got = quantized(&read_gguf(&file).unwrap(), "w")
                .dequantize(&Device::Cpu)
                .unwrap();
            assert!(same_bits(&values(&got), &want), "{name}");
            continue;
        }
        let theirs = qtensor_from_ggml(dtype, &bytes, shape, &Device::Cpu).unwrap();
        let file = read_gguf(&candle_gguf(&[("w", &theirs)])).unwrap();
        assert_same(name, quantized(&file, "w"), &theirs);
    }
}

/// A Q4_K_M-like checkpoint: most matrices Q4_K, some Q6_K, norms F32, all in one file.
#[test]
fn q4_k_m_like_file_loads_whole() {
    let q = |rows, cols, seed, dtype| QTensor::quantize(&matrix(rows, cols, seed), dtype).unwrap();
    let embd = q(32, 256, 1, GgmlDType::Q6K);
    let attn_q = q(256, 256, 2, GgmlDType::Q4K);
    let attn_v = q(64, 256, 3, GgmlDType::Q6K);
    let ffn_up = q(512, 256, 4, GgmlDType::Q4K);
    let ffn_down = q(256, 512, 5, GgmlDType::Q6K);
    let norm_values: Vec<f32> = (0..256).map(|i| 1.0 + i as f32 / 512.0).collect();
    let norm = QTensor::quantize(
        &Tensor::new(norm_values.as_slice(), &Device::Cpu).unwrap(),
        GgmlDType::F32,
    )
    .unwrap();
    let tensors = [
        ("token_embd.weight", &embd),
        ("blk.0.attn_norm.weight", &norm),
        ("blk.0.attn_q.weight", &attn_q),
        ("blk.0.attn_v.weight", &attn_v),
        ("blk.0.ffn_up.weight", &ffn_up),
        ("blk.0.ffn_down.weight", &ffn_down),
    ];
    let file = TempFile::new("q4km");
    std::fs::write(&file.0, candle_gguf(&tensors)).unwrap();
    let loaded = load_gguf(&file.0).unwrap();
    let names: Vec<&str> = loaded.tensors().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, tensors.map(|(n, _)| n));
    assert_eq!(
        loaded
            .metadata_value("general.architecture")
            .and_then(|v| v.as_str()),
        Some("llama")
    );
    for (name, t) in tensors {
        if t.dtype() == GgmlDType::F32 {
            let d = loaded.tensor(name).and_then(TensorEntry::as_dense).unwrap();
            assert!(same_bits(&values(d), &norm_values), "{name}");
        } else {
            assert_same(name, quantized(&loaded, name), t);
        }
    }
}

/// `load_into` puts K-quant weights into a model as packed weights, and the model computes
/// with Candle's dequantized values (checked against a naive f64 forward pass).
#[test]
fn k_quant_weights_load_into_a_model() {
    let dev = Device::Cpu;
    let mut mlp = Mlp::new(MlpConfig::new(256, &[256], 4), 3, &dev).unwrap();
    let layers: Vec<(String, Vec<usize>, bool)> = mlp
        .linear_layers()
        .iter()
        .map(|l| {
            (
                l.name().to_string(),
                vec![l.out_features(), l.in_features()],
                l.bias().is_some(),
            )
        })
        .collect();
    assert_eq!(layers.len(), 2);
    let kinds = [GgmlDType::Q4K, GgmlDType::Q6K];
    let mut weights = Vec::new();
    let mut biases = Vec::new();
    for (i, (_, shape, has_bias)) in layers.iter().enumerate() {
        let w = matrix(shape[0], shape[1], 50 + i as u64);
        weights.push(QTensor::quantize(&w, kinds[i]).unwrap());
        let b: Vec<f32> = (0..shape[0]).map(|j| 0.01 * j as f32 - 0.5).collect();
        let b = Tensor::from_vec(b, shape[0], &dev).unwrap();
        biases.push(has_bias.then(|| QTensor::quantize(&b, GgmlDType::F32).unwrap()));
    }
    let names: Vec<(String, String)> = layers
        .iter()
        .map(|(n, _, _)| (format!("{n}.weight"), format!("{n}.bias")))
        .collect();
    let mut list: Vec<(&str, &QTensor)> = Vec::new();
    for (i, (wn, bn)) in names.iter().enumerate() {
        list.push((wn, &weights[i]));
        if let Some(b) = &biases[i] {
            list.push((bn, b));
        }
    }
    let file = TempFile::new("model");
    std::fs::write(&file.0, candle_gguf(&list)).unwrap();
    load_into(&mut mlp, &file.0).unwrap();

    let mut reference: Vec<(Vec<f64>, Vec<f64>)> = Vec::new();
    for (i, layer) in mlp.linear_layers().iter().enumerate() {
        match layer.weight() {
            LayerWeight::Packed(q) => assert_same(layer.name(), q, &weights[i]),
            LayerWeight::Dense(_) => panic!("{} should hold a packed weight", layer.name()),
        }
        let w = values(&weights[i].dequantize(&dev).unwrap());
        let b = match &biases[i] {
            Some(b) => values(&b.dequantize(&dev).unwrap()),
            None => vec![0.0; layers[i].1[0]],
        };
        reference.push((
            w.iter().map(|&x| f64::from(x)).collect(),
            b.iter().map(|&x| f64::from(x)).collect(),
        ));
    }

    let mut rng = TestRng::new(11);
    let x: Vec<f32> = (0..2 * 256).map(|_| rng.normal() as f32).collect();
    let y = values(
        &mlp.forward(&Tensor::from_vec(x.clone(), (2, 256), &dev).unwrap())
            .unwrap(),
    );
    for row in 0..2 {
        let mut h: Vec<f64> = x[row * 256..(row + 1) * 256]
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        for (l, (w, b)) in reference.iter().enumerate() {
            let n_in = h.len();
            let mut out: Vec<f64> = b
                .iter()
                .enumerate()
                .map(|(o, bo)| bo + (0..n_in).map(|k| w[o * n_in + k] * h[k]).sum::<f64>())
                .collect();
            if l + 1 < reference.len() {
                out.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            h = out;
        }
        for (o, want) in h.iter().enumerate() {
            let got = f64::from(y[row * 4 + o]);
            let tol = 1e-4 * (1.0 + want.abs());
            assert!(
                (got - want).abs() <= tol,
                "row {row} output {o}: {got} vs {want}"
            );
        }
    }
}

/// A K-quant tensor written back goes through the writers' fallbacks: exact as quantlens
/// packed parts (GGUF and safetensors), or as F16 values.
#[test]
fn k_quant_tensors_write_back_through_the_fallbacks() {
    for (i, &(dtype, name, ..)) in K_TYPES.iter().enumerate() {
        let theirs = QTensor::quantize(&matrix(6, 512, 300 + i as u64), dtype).unwrap();
        let file = read_gguf(&candle_gguf(&[("w", &theirs)])).unwrap();
        let q = quantized(&file, "w");

        let packed = GgufWriter::new().tensor("w", q).to_bytes().unwrap();
        assert_eq!(quantized(&read_gguf(&packed).unwrap(), "w"), q, "{name}");

        let st = SafetensorsWriter::new().tensor("w", q).to_bytes().unwrap();
        let back = read_safetensors(&st).unwrap();
        let back = back.tensor("w").and_then(TensorEntry::as_quantized);
        assert_eq!(back, Some(q), "{name}");

        let f16_bytes = GgufWriter::new()
            .fallback(GgufFallback::DequantizeF16)
            .tensor("w", q)
            .to_bytes()
            .unwrap();
        let f16_file = read_gguf(&f16_bytes).unwrap();
        let d = f16_file
            .tensor("w")
            .and_then(TensorEntry::as_dense)
            .unwrap();
        assert_eq!(d.dtype(), DType::F16);
        let want: Vec<f32> = values(&theirs.dequantize(&Device::Cpu).unwrap())
            .into_iter()
            .map(|v| f16::from_f32(v).to_f32())
            .collect();
        assert!(same_bits(&values(d), &want), "{name}");
    }
}

#[test]
fn truncated_k_quant_tensor_is_a_clear_error() {
    for &(dtype, name, ..) in &K_TYPES {
        let t = QTensor::quantize(&matrix(2, 512, 9), dtype).unwrap();
        let good = candle_gguf(&[("w", &t)]);
        assert!(read_gguf(&good).is_ok());
        // Cut inside the last super-block.
        let end = data_range(&good, &t).end;
        let m = malformed(&good[..end - 20]);
        assert!(
            m.contains("truncated") && m.contains("\"w\"") && m.contains(name),
            "{m}"
        );
        for n in 0..good.len() {
            let r = catch_unwind(AssertUnwindSafe(|| read_gguf(&good[..n]).map(|_| ())));
            match r {
                Ok(Err(Error::Malformed { .. })) => {}
                // Only the padding after the data is cut.
                Ok(Ok(())) if n >= end => {}
                Ok(other) => panic!("{name}: {n} of {} bytes gave {other:?}", good.len()),
                Err(_) => panic!("{name}: reading {n} of {} bytes panicked", good.len()),
            }
        }
    }
}

#[test]
fn k_quant_element_count_not_a_multiple_of_256_is_a_clear_error() {
    for &(dtype, name, id, ..) in &K_TYPES {
        let t = QTensor::quantize(&matrix(4, 256, 13), dtype).unwrap();
        let good = candle_gguf(&[("w", &t)]);
        let dims = info_at(&good, "w") + 4; // after the u32 dimension count
        for (inner, outer) in [(100u64, 4u64), (256, 1), (256, 5), (128, 3)] {
            let mut bad = good.clone();
            bad[dims..dims + 8].copy_from_slice(&inner.to_le_bytes());
            bad[dims + 8..dims + 16].copy_from_slice(&outer.to_le_bytes());
            let numel = inner * outer;
            let r = catch_unwind(|| read_gguf(&bad).map(|_| ()));
            let Ok(r) = r else {
                panic!("{name}: shape [{outer}, {inner}] panicked");
            };
            if numel.is_multiple_of(256) {
                // Whole super-blocks, just fewer or more of them than the data holds: fine or
                // truncated, never a panic.
                assert!(numel <= 1024 || matches!(r, Err(Error::Malformed { .. })));
                continue;
            }
            let m = malformed(&bad);
            assert!(
                m.contains("\"w\"")
                    && m.contains(&format!("{name} ({id})"))
                    && m.contains("256")
                    && m.contains("not a whole number"),
                "{m}"
            );
        }
    }
}

#[test]
fn iq_and_other_unsupported_types_are_refused_by_name() {
    let t = QTensor::quantize(&matrix(2, 256, 17), GgmlDType::Q4K).unwrap();
    let good = candle_gguf(&[("w", &t)]);
    let ty = info_at(&good, "w") + 4 + 2 * 8; // after the dimension count and two dims
    assert_eq!(good[ty..ty + 4], 12u32.to_le_bytes());
    for (id, type_name) in [
        (16u32, "IQ2_XXS"),
        (19, "IQ1_S"),
        (20, "IQ4_NL"),
        (23, "IQ4_XS"),
        (29, "IQ1_M"),
        (6, "Q5_0"),
        (7, "Q5_1"),
        (35, "TQ2_0"),
    ] {
        let mut bad = good.clone();
        bad[ty..ty + 4].copy_from_slice(&id.to_le_bytes());
        let m = malformed(&bad);
        assert!(
            m.contains(&format!("{type_name} ({id})"))
                && m.contains("not supported")
                && m.contains("\"w\""),
            "{m}"
        );
    }
}

/// The real SmolLM2 checkpoint with its `ffn_down` matrices (the only ones whose rows, 1536
/// weights, are whole super-blocks) requantized by Candle to Q4_K and, every third layer,
/// Q6_K — as llama.cpp's Q4_K_M does — and everything else (Q4_1, Q8_0, F32, all metadata)
/// as it was: every tensor of the file reads as Candle reads it, bit for bit.
#[test]
fn requantized_smollm2_checkpoint_reads_whole() {
    common::ensure_fixtures();
    let path = quantlens::data::fixture_path("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf").unwrap();
    let mut reader = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let content = gguf_file::Content::read(&mut reader).unwrap();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut k_count = [0usize; 2];
    let tensors: Vec<(&str, QTensor)> = names
        .iter()
        .map(|name| {
            let t = content.tensor(&mut reader, name, &Device::Cpu).unwrap();
            let t = match name.strip_prefix("blk.").and_then(|r| r.split_once('.')) {
                Some((layer, "ffn_down.weight")) => {
                    let q6 = layer.parse::<usize>().unwrap().is_multiple_of(3);
                    k_count[usize::from(q6)] += 1;
                    let dtype = if q6 { GgmlDType::Q6K } else { GgmlDType::Q4K };
                    QTensor::quantize(&t.dequantize(&Device::Cpu).unwrap(), dtype).unwrap()
                }
                _ => t,
            };
            (name.as_str(), t)
        })
        .collect();
    assert_eq!(k_count, [20, 10]);
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let list: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let mut bytes = Cursor::new(Vec::new());
    gguf_file::write(&mut bytes, &metadata, &list).unwrap();

    let file = read_gguf(bytes.get_ref()).unwrap();
    assert_eq!(file.tensors().len(), tensors.len());
    assert_eq!(
        file.metadata_value("general.architecture")
            .and_then(|v| v.as_str()),
        Some("llama")
    );
    for (name, t) in &tensors {
        match file.tensor(name).unwrap() {
            TensorEntry::Quantized(q) => assert_same(name, q, t),
            TensorEntry::Dense(d) => assert!(
                same_bits(&values(d), &values(&t.dequantize(&Device::Cpu).unwrap())),
                "{name}"
            ),
        }
    }

    // The same file as a model: the decoder loads, names the K types as GGML does, and holds
    // Candle's dequantized values.
    let tmp = TempFile::new("smollm2");
    std::fs::write(&tmp.0, bytes.get_ref()).unwrap();
    let model = Llama::from_gguf(&tmp.0, &Device::Cpu).unwrap();
    let formats = model.source_formats().unwrap();
    assert_eq!(formats.format("blk.0.ffn_down.weight"), Some("Q6_K"));
    assert_eq!(formats.format("blk.1.ffn_down.weight"), Some("Q4_K"));
    assert!(
        formats.summary().contains("20× Q4_K, 10× Q6_K"),
        "{}",
        formats.summary()
    );
    let (name, t) = tensors
        .iter()
        .find(|(n, _)| *n == "blk.1.ffn_down.weight")
        .unwrap();
    assert!(
        same_bits(
            &values(&model.weight("blocks.1.mlp.down_proj").unwrap()),
            &values(&t.dequantize(&Device::Cpu).unwrap())
        ),
        "{name}"
    );
}

/// Candle would decode an infinite or NaN super-scale to infinities and NaNs; quantlens keeps
/// finite scales only, so it names the super-block instead.
#[test]
fn non_finite_super_scale_is_a_clear_error() {
    for &(dtype, name, ..) in &K_TYPES {
        let t = QTensor::quantize(&matrix(2, 512, 21), dtype).unwrap();
        let mut bytes = candle_gguf(&[("w", &t)]);
        let data = data_range(&bytes, &t);
        let block_bytes = data.len() / 4;
        // d of the third super-block: an f16 infinity, or Q8_K's f32 NaN.
        let (at, value): (usize, &[u8]) = match dtype {
            GgmlDType::Q2K => (80, &[0x00, 0x7C]),
            GgmlDType::Q3K => (108, &[0x00, 0x7C]),
            GgmlDType::Q4K | GgmlDType::Q5K => (0, &[0x00, 0xFC]),
            GgmlDType::Q6K => (208, &[0x00, 0x7C]),
            _ => (0, &[0x00, 0x00, 0xC0, 0x7F]),
        };
        let at = data.start + 2 * block_bytes + at;
        bytes[at..at + value.len()].copy_from_slice(value);
        let m = malformed(&bytes);
        assert!(
            m.contains("\"w\"") && m.contains(&format!("{name} super-block 2")),
            "{m}"
        );
    }
}
