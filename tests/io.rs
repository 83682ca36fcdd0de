//! Saving and loading: exact round trips for every format, GGUF compatibility checked against
//! Candle's own reader and writer (the independent reference), malformed files, whole models.

mod common;

use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{DType, Device, Tensor};
use common::{TestRng, values};
use half::f16;
use quantlens::io::{
    FileFormat, GgufFallback, GgufValue, GgufWriter, SafetensorsWriter, TensorEntry, load_gguf,
    load_into, load_safetensors, read_gguf, read_safetensors, save_model, save_model_as,
};
use quantlens::model::{LayerWeight, Mlp, MlpConfig, QuantizableModel};
use quantlens::{
    AffineQuantizer, AwqQuantizer, Calibration, Codebook, DoubleQuantScales, Error, FloatFormat,
    Granularity, LevelStorage, PackedCodes, QuantFormat, QuantSpec, QuantizedParts,
    QuantizedTensor, Quantizer, ScaleDType, Scales, UniformQuantizer,
};
use quantlens::{
    CompandingQuantizer, FloatQuantizer, KMeansQuantizer, Nf4Quantizer, SmoothQuantizer,
    TernaryQuantizer,
};

/// A file in the temp directory, unique per process and call, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(ext: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        TempFile(std::env::temp_dir().join(format!(
            "quantlens-io-test-{}-{}.{ext}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        )))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        std::fs::remove_file(&self.0).ok();
    }
}

fn weights(rows: usize, cols: usize, seed: u64) -> Tensor {
    let mut rng = TestRng::new(seed);
    let v: Vec<f32> = (0..rows * cols)
        .map(|_| (0.7 * rng.normal() + 0.1) as f32)
        .collect();
    Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

fn codes(n: usize, bits: u8, seed: u64, ok: impl Fn(u8) -> bool) -> PackedCodes {
    let mut rng = TestRng::new(seed);
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        let c = (rng.next_u64() >> (64 - bits)) as u8;
        if ok(c) {
            v.push(c);
        }
    }
    PackedCodes::pack(&v, bits).unwrap()
}

fn f16_scales(n: usize, seed: u64) -> Scales {
    let mut rng = TestRng::new(seed);
    Scales::F16(
        (0..n)
            .map(|_| f16::from_f32((0.01 + rng.uniform()) as f32))
            .collect(),
    )
}

fn parts(shape: &[usize], format: QuantFormat, group_len: usize, seed: u64) -> QuantizedParts {
    let numel: usize = shape.iter().product();
    QuantizedParts::new(
        shape.to_vec(),
        DType::F32,
        format,
        group_len,
        codes(numel, format.code_bits(), seed, |_| true),
        f16_scales(numel / group_len, seed + 1),
    )
}

/// `p` after `edit`: `QuantizedParts` is `#[non_exhaustive]`, so no `..base` literals.
fn edited(mut p: QuantizedParts, edit: impl FnOnce(&mut QuantizedParts)) -> QuantizedParts {
    edit(&mut p);
    p
}

/// Every uniform, sign and affine configuration the quantizers make.
fn quantizer_variants() -> Vec<(String, QuantizedTensor)> {
    let w = weights(4, 64, 1);
    let mut quantizers: Vec<Box<dyn Quantizer>> = Vec::new();
    for bits in 2..=8 {
        for g in [
            Granularity::PerChannel,
            Granularity::PerGroup(8),
            Granularity::PerGroup(32),
        ] {
            let spec = QuantSpec::new(bits).with_granularity(g);
            quantizers.push(Box::new(UniformQuantizer::new(spec.symmetric()).unwrap()));
            quantizers.push(Box::new(UniformQuantizer::new(spec.asymmetric()).unwrap()));
        }
    }
    for dtype in [ScaleDType::F32, ScaleDType::BF16, ScaleDType::E8M0] {
        let spec = QuantSpec::int4().per_group(32).with_scale_dtype(dtype);
        quantizers.push(Box::new(UniformQuantizer::new(spec).unwrap()));
        quantizers.push(Box::new(UniformQuantizer::new(spec.asymmetric()).unwrap()));
    }
    quantizers.push(Box::new(
        UniformQuantizer::new(QuantSpec::int3().per_group(16).stochastic(5)).unwrap(),
    ));
    for g in [Granularity::PerTensor, Granularity::PerGroup(16)] {
        quantizers.push(Box::new(
            UniformQuantizer::new(QuantSpec::binary().with_granularity(g)).unwrap(),
        ));
    }
    quantizers.push(Box::new(AffineQuantizer::q4_1()));
    quantizers.push(Box::new(
        AffineQuantizer::new(3, Granularity::PerChannel, ScaleDType::F32).unwrap(),
    ));
    quantizers.push(Box::new(
        AffineQuantizer::new(8, Granularity::PerGroup(16), ScaleDType::BF16).unwrap(),
    ));
    // Codebooks, ternary and float formats through their real quantizers.
    quantizers.push(Box::new(Nf4Quantizer::new().block_size(32)));
    quantizers.push(Box::new(Nf4Quantizer::new().block_size(16).double_quant()));
    quantizers.push(Box::new(KMeansQuantizer::new(3).unwrap()));
    quantizers.push(Box::new(
        KMeansQuantizer::new(4)
            .unwrap()
            .per_tensor()
            .scaled_per_group(16),
    ));
    quantizers.push(Box::new(CompandingQuantizer::new(4).unwrap().per_group(32)));
    quantizers.push(Box::new(TernaryQuantizer::with_sparsity(0.33).unwrap()));
    quantizers.push(Box::new(FloatQuantizer::fp8_e4m3()));
    quantizers.push(Box::new(FloatQuantizer::fp8_e5m2().per_tensor()));
    quantizers.push(Box::new(FloatQuantizer::fp4_e2m1()));
    quantizers.push(Box::new(FloatQuantizer::mxfp4()));
    quantizers.push(Box::new(FloatQuantizer::mxfp8()));
    let mut out: Vec<(String, QuantizedTensor)> = quantizers
        .iter()
        .map(|q| (q.name(), q.quantize(&w, None).unwrap()))
        .collect();
    // The dtype dequantize returns travels with the tensor, native GGML types included.
    let int4 = UniformQuantizer::new(QuantSpec::int4().per_group(32)).unwrap();
    for dtype in [DType::F16, DType::BF16] {
        let wd = w.to_dtype(dtype).unwrap();
        out.push((format!("q4_0 {dtype:?}"), int4.quantize(&wd, None).unwrap()));
        out.push((
            format!("q4_1 {dtype:?}"),
            AffineQuantizer::q4_1().quantize(&wd, None).unwrap(),
        ));
    }
    // Input scales (AWQ, SmoothQuant) on layouts that would otherwise be Q4_0 and Q8_0.
    let calib = salient_calibration(64);
    let q8_0 = UniformQuantizer::new(QuantSpec::int8().per_group(32)).unwrap();
    for (name, q) in [
        ("awq q4_0", AwqQuantizer::new().with_base(int4)),
        (
            "awq nf4",
            AwqQuantizer::new().with_base(Nf4Quantizer::new()),
        ),
    ] {
        out.push((name.into(), q.quantize(&w, Some(&calib)).unwrap()));
    }
    let sq = SmoothQuantizer::new().with_base(q8_0);
    out.push((
        "smoothquant q8_0".into(),
        sq.quantize(&w, Some(&calib)).unwrap(),
    ));
    let w16 = w.to_dtype(DType::F16).unwrap();
    out.push((
        "smoothquant f16".into(),
        sq.quantize(&w16, Some(&calib)).unwrap(),
    ));
    for (_, q) in &out[out.len() - 4..] {
        assert!(q.input_scales().is_some());
    }
    out
}

/// Inputs of `cols` channels, every 16th one 20× larger than the rest.
fn salient_calibration(cols: usize) -> Calibration {
    let mut rng = TestRng::new(77);
    let x: Vec<f32> = (0..32 * cols)
        .map(|i| (rng.normal() * if i % cols % 16 == 3 { 20.0 } else { 1.0 }) as f32)
        .collect();
    let mut calib = Calibration::new(cols);
    calib
        .observe(&Tensor::from_vec(x, (32, cols), &Device::Cpu).unwrap())
        .unwrap();
    calib
}

/// Formats no quantizer makes yet, assembled by hand.
fn handmade_variants() -> Vec<(String, QuantizedTensor)> {
    let mut v = Vec::new();
    let mut add = |name: &str, p: QuantizedParts| {
        v.push((name.to_string(), QuantizedTensor::assemble(p).unwrap()));
    };
    add(
        "ternary",
        edited(parts(&[3, 32], QuantFormat::Ternary, 16, 3), |p| {
            p.codes = codes(96, 2, 3, |c| c < 3)
        }),
    );
    let cb = |levels: usize, table_len: usize, storage: LevelStorage| {
        let mut rng = TestRng::new(levels as u64);
        let l: Vec<f32> = (0..levels).map(|_| rng.normal() as f32).collect();
        Codebook::new(l, table_len, storage).unwrap()
    };
    add(
        "codebook 2-bit f16 levels",
        parts(&[4, 32], QuantFormat::Codebook { bits: 2 }, 32, 4).with_codebook(cb(
            4,
            4,
            LevelStorage::F16,
        )),
    );
    add(
        "codebook 3-bit f32 levels, a table per row",
        parts(&[4, 64], QuantFormat::Codebook { bits: 3 }, 32, 5).with_codebook(cb(
            4 * 8,
            8,
            LevelStorage::F32,
        )),
    );
    add(
        "codebook 4-bit implicit levels, double-quantized scales",
        edited(
            parts(&[4, 128], QuantFormat::Codebook { bits: 4 }, 64, 6).with_codebook(cb(
                16,
                16,
                LevelStorage::Implicit,
            )),
            |p| {
                p.scales = Scales::Double(
                    DoubleQuantScales::new(
                        vec![-128, -3, 0, 7, 127, 1, 2, 3],
                        vec![0.01, 0.02, 0.5],
                        3,
                        0.25,
                    )
                    .unwrap(),
                )
            },
        ),
    );
    for (f, scales) in [
        (FloatFormat::E4M3, f16_scales(8, 7)),
        (FloatFormat::E5M2, Scales::F32(vec![0.5, 2.0])),
        (
            FloatFormat::E2M1,
            Scales::E8M0(vec![0, 1, 126, 127, 128, 200, 254, 127]),
        ),
    ] {
        let n = 256;
        add(
            &format!("float {}", f.tag()),
            edited(
                parts(&[4, 64], QuantFormat::Float(f), n / scales.len(), 8),
                |p| {
                    p.codes = codes(n, f.bits(), 8, |c| f.is_finite_code(c));
                    p.scales = scales.clone();
                },
            ),
        );
    }
    add(
        "affine with double-quantized offsets",
        edited(
            parts(&[2, 64], QuantFormat::Affine { bits: 5 }, 32, 9).with_offsets(Scales::Double(
                DoubleQuantScales::new(vec![-5, 9, 100, -100], vec![0.001, 0.002], 2, -0.5)
                    .unwrap(),
            )),
            |p| p.dtype = DType::BF16,
        ),
    );
    add(
        "uniform 4-bit symmetric, rank 3 (Q4_0)",
        parts(
            &[2, 3, 64],
            QuantFormat::Uniform {
                bits: 4,
                symmetric: true,
            },
            32,
            10,
        ),
    );
    add(
        "uniform 8-bit symmetric, rank 1 (Q8_0)",
        parts(
            &[96],
            QuantFormat::Uniform {
                bits: 8,
                symmetric: true,
            },
            32,
            11,
        ),
    );
    add(
        "uniform 4-bit symmetric g32 over rows of 16 (not Q4_0)",
        parts(
            &[4, 16],
            QuantFormat::Uniform {
                bits: 4,
                symmetric: true,
            },
            32,
            12,
        ),
    );
    add(
        "codebook with f32 input scales",
        parts(&[4, 8], QuantFormat::Codebook { bits: 2 }, 8, 14)
            .with_codebook(cb(4, 4, LevelStorage::F32))
            .with_input_scales(Scales::F32(vec![0.5, 1.25, 3.0, 1e-3, 7.0, 2.0, 1.0, 0.1])),
    );
    add(
        "fp8 with double-quantized input scales",
        edited(
            parts(&[4, 64], QuantFormat::Float(FloatFormat::E4M3), 32, 15).with_input_scales(
                Scales::Double(
                    DoubleQuantScales::new(
                        (0..64).map(|i| (i * 3 % 100) as i8).collect(),
                        vec![0.01, 0.02],
                        32,
                        1.5,
                    )
                    .unwrap(),
                ),
            ),
            |p| p.codes = codes(4 * 64, 8, 15, |c| FloatFormat::E4M3.is_finite_code(c)),
        ),
    );
    add(
        "uniform 6-bit asymmetric, f32 scales",
        edited(
            parts(
                &[4, 8],
                QuantFormat::Uniform {
                    bits: 6,
                    symmetric: false,
                },
                8,
                13,
            )
            .with_zeros(PackedCodes::pack(&[0, 17, 63, 32], 6).unwrap()),
            |p| p.scales = Scales::F32(vec![0.1, 0.2, 0.3, 0.4]),
        ),
    );
    v
}

fn all_variants() -> Vec<(String, QuantizedTensor)> {
    let mut v = quantizer_variants();
    v.extend(handmade_variants());
    v
}

#[test]
fn every_format_round_trips_exactly_through_gguf_and_safetensors() {
    let variants = all_variants();
    let dense_f32 = weights(3, 5, 20);
    let dense_bf16 = weights(2, 7, 21).to_dtype(DType::BF16).unwrap();
    let (gguf, st) = (TempFile::new("gguf"), TempFile::new("safetensors"));
    let mut gw = GgufWriter::new().metadata("general.name", "round trip");
    let mut sw = SafetensorsWriter::new().metadata("purpose", "round trip");
    for (i, (_, q)) in variants.iter().enumerate() {
        gw = gw.tensor(format!("t{i}"), q);
        sw = sw.tensor(format!("t{i}"), q);
    }
    gw = gw
        .dense("dense.f32", &dense_f32)
        .dense("dense.bf16", &dense_bf16);
    sw = sw
        .dense("dense.f32", &dense_f32)
        .dense("dense.bf16", &dense_bf16);
    gw.write(&gguf.0).unwrap();
    sw.write(&st.0).unwrap();

    let g = load_gguf(&gguf.0).unwrap();
    let s = load_safetensors(&st.0).unwrap();
    for (i, (label, q)) in variants.iter().enumerate() {
        for (fmt, entry) in [
            ("gguf", g.tensor(&format!("t{i}"))),
            ("safetensors", s.tensor(&format!("t{i}"))),
        ] {
            let back = entry.and_then(TensorEntry::as_quantized);
            assert_eq!(back, Some(q), "{label} through {fmt}");
        }
    }
    for file_tensors in [g.tensors(), s.tensors()] {
        assert_eq!(
            file_tensors.len(),
            variants.len() + 2,
            "parts are not listed as tensors"
        );
    }
    for (name, t) in [("dense.f32", &dense_f32), ("dense.bf16", &dense_bf16)] {
        for e in [g.tensor(name), s.tensor(name)] {
            let d = e.and_then(TensorEntry::as_dense).unwrap();
            assert_eq!(d.dtype(), t.dtype());
            assert_eq!(d.dims(), t.dims());
            assert!(same_bits(&values(d), &values(t)));
        }
    }
    // The caller's metadata comes back; the per-tensor layout keys do not.
    assert_eq!(
        g.metadata_value("general.name").and_then(GgufValue::as_str),
        Some("round trip")
    );
    assert_eq!(
        g.metadata_value("general.alignment")
            .and_then(GgufValue::as_u64),
        Some(32)
    );
    assert!(
        g.metadata()
            .iter()
            .all(|(k, _)| !k.starts_with("quantlens.t"))
    );
    assert_eq!(
        s.metadata_value("purpose").map(String::as_str),
        Some("round trip")
    );
    assert!(
        s.metadata()
            .iter()
            .all(|(k, _)| !k.starts_with("quantlens.t"))
    );
    // In-memory reading agrees with reading the file.
    let mem = read_gguf(&std::fs::read(&gguf.0).unwrap()).unwrap();
    assert_eq!(
        mem.names().collect::<Vec<_>>(),
        g.names().collect::<Vec<_>>()
    );
}

/// The GGML types a file's tensors have, as Candle's reader sees them.
fn candle_types(path: &PathBuf) -> Vec<(String, GgmlDType, Vec<usize>)> {
    let mut f = File::open(path).unwrap();
    let c = gguf_file::Content::read(&mut f).unwrap();
    let mut v: Vec<_> = c
        .tensor_infos
        .iter()
        .map(|(n, i)| (n.clone(), i.ggml_dtype, i.shape.dims().to_vec()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn candle_dequantizes_our_q4_0_q4_1_q8_0_to_our_exact_values() {
    let w = weights(8, 128, 30);
    let q4_0 = UniformQuantizer::new(QuantSpec::int4().per_group(32))
        .unwrap()
        .quantize(&w, None)
        .unwrap();
    let q8_0 = UniformQuantizer::new(QuantSpec::int8().per_group(32))
        .unwrap()
        .quantize(&w, None)
        .unwrap();
    let q4_1 = AffineQuantizer::q4_1().quantize(&w, None).unwrap();
    // Every code value, including 0 (−8·d), which our symmetric quantizer never emits.
    let rank3 = QuantizedTensor::assemble(parts(
        &[2, 3, 64],
        QuantFormat::Uniform {
            bits: 4,
            symmetric: true,
        },
        32,
        31,
    ))
    .unwrap();
    let all8 = QuantizedTensor::assemble(parts(
        &[4, 64],
        QuantFormat::Uniform {
            bits: 8,
            symmetric: true,
        },
        32,
        32,
    ))
    .unwrap();
    let w16 = w.to_dtype(DType::F16).unwrap();
    let file = TempFile::new("gguf");
    GgufWriter::new()
        .tensor("q4_0", &q4_0)
        .tensor("q4_1", &q4_1)
        .tensor("q8_0", &q8_0)
        .tensor("rank3", &rank3)
        .tensor("all8", &all8)
        .dense("f32", &w)
        .dense("f16", &w16)
        .write(&file.0)
        .unwrap();

    let types = candle_types(&file.0);
    let expect = [
        ("all8", GgmlDType::Q8_0, vec![4, 64]),
        ("f16", GgmlDType::F16, vec![8, 128]),
        ("f32", GgmlDType::F32, vec![8, 128]),
        ("q4_0", GgmlDType::Q4_0, vec![8, 128]),
        ("q4_1", GgmlDType::Q4_1, vec![8, 128]),
        ("q8_0", GgmlDType::Q8_0, vec![8, 128]),
        ("rank3", GgmlDType::Q4_0, vec![2, 3, 64]),
    ];
    assert_eq!(
        types,
        expect
            .iter()
            .map(|(n, t, s)| (n.to_string(), *t, s.clone()))
            .collect::<Vec<_>>()
    );

    let mut f = File::open(&file.0).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    assert_eq!(
        content.metadata["general.architecture"]
            .to_string()
            .unwrap(),
        "quantlens"
    );
    let theirs = |name: &str| -> Vec<f32> {
        let mut f = File::open(&file.0).unwrap();
        values(
            &content
                .tensor(&mut f, name, &Device::Cpu)
                .unwrap()
                .dequantize(&Device::Cpu)
                .unwrap(),
        )
    };
    for (name, q) in [
        ("q4_0", &q4_0),
        ("q4_1", &q4_1),
        ("q8_0", &q8_0),
        ("rank3", &rank3),
        ("all8", &all8),
    ] {
        let ours = values(&q.dequantize(&Device::Cpu).unwrap());
        assert!(same_bits(&theirs(name), &ours), "{name}");
    }
    assert!(same_bits(&theirs("f32"), &values(&w)));
    assert!(same_bits(&theirs("f16"), &values(&w16)));
}

#[test]
fn our_reader_matches_candles_writer_and_dequantizer() {
    let w = weights(4, 96, 40);
    let types = [
        ("q4_0", GgmlDType::Q4_0),
        ("q4_1", GgmlDType::Q4_1),
        ("q8_0", GgmlDType::Q8_0),
        ("f32", GgmlDType::F32),
        ("f16", GgmlDType::F16),
    ];
    let qts: Vec<(&str, QTensor)> = types
        .iter()
        .map(|&(n, t)| (n, QTensor::quantize(&w, t).unwrap()))
        .collect();
    let file = TempFile::new("gguf");
    {
        let mut f = File::create(&file.0).unwrap();
        let arch = gguf_file::Value::String("candle".into());
        let refs: Vec<(&str, &QTensor)> = qts.iter().map(|(n, q)| (*n, q)).collect();
        gguf_file::write(&mut f, &[("general.architecture", &arch)], &refs).unwrap();
    }
    let ours = load_gguf(&file.0).unwrap();
    assert_eq!(
        ours.metadata_value("general.architecture")
            .and_then(GgufValue::as_str),
        Some("candle")
    );
    for (name, qt) in &qts {
        let entry = ours.tensor(name).unwrap();
        assert_eq!(entry.shape(), [4, 96], "{name}");
        let theirs = values(&qt.dequantize(&Device::Cpu).unwrap());
        let mine = values(&entry.to_dense(&Device::Cpu).unwrap());
        assert!(same_bits(&mine, &theirs), "{name}");
    }
    let format = |n: &str| ours.tensor(n).unwrap().as_quantized().unwrap().format();
    assert_eq!(
        format("q4_0"),
        QuantFormat::Uniform {
            bits: 4,
            symmetric: true
        }
    );
    assert_eq!(format("q4_1"), QuantFormat::Affine { bits: 4 });
    assert_eq!(
        format("q8_0"),
        QuantFormat::Uniform {
            bits: 8,
            symmetric: true
        }
    );
    assert_eq!(
        ours.tensor("f16").unwrap().as_dense().unwrap().dtype(),
        DType::F16
    );
}

/// A tensor with input scales never travels as a GGML block type (which has no place for
/// them), and the F16 fallback holds its effective weight.
#[test]
fn input_scales_travel_as_parts_and_fall_back_to_the_effective_weight() {
    let w = weights(4, 64, 51);
    let calib = salient_calibration(64);
    let int4 = UniformQuantizer::new(QuantSpec::int4().per_group(32)).unwrap();
    let awq = AwqQuantizer::new()
        .with_base(int4)
        .quantize(&w, Some(&calib))
        .unwrap();
    assert!(awq.input_scales().is_some());
    let (packed, f16_file) = (TempFile::new("gguf"), TempFile::new("gguf"));
    GgufWriter::new()
        .tensor("w", &awq)
        .write(&packed.0)
        .unwrap();
    // Packed parts (Candle's reader knows no I8, so look at the bytes): the input scales are
    // a tensor of their own, next to the codes.
    let bytes = std::fs::read(&packed.0).unwrap();
    for part in ["w.codes", "w.input_scales"] {
        assert!(
            bytes.windows(part.len()).any(|b| b == part.as_bytes()),
            "{part}"
        );
    }
    let back = load_gguf(&packed.0).unwrap();
    assert_eq!(
        back.tensor("w").and_then(TensorEntry::as_quantized),
        Some(&awq)
    );
    GgufWriter::new()
        .fallback(GgufFallback::DequantizeF16)
        .tensor("w", &awq)
        .write(&f16_file.0)
        .unwrap();
    let back = load_gguf(&f16_file.0).unwrap();
    let d = back.tensor("w").unwrap().as_dense().unwrap();
    let want = awq.dequantize_to(&Device::Cpu, DType::F16).unwrap();
    assert!(same_bits(&values(d), &values(&want)));
}

#[test]
fn dequantize_fallback_keeps_files_readable_by_candle() {
    let w = weights(4, 64, 50);
    let q3 = UniformQuantizer::new(QuantSpec::int3().per_group(16).asymmetric())
        .unwrap()
        .quantize(&w, None)
        .unwrap();
    let file = TempFile::new("gguf");
    GgufWriter::new()
        .fallback(GgufFallback::DequantizeF16)
        .tensor("q3", &q3)
        .write(&file.0)
        .unwrap();
    assert_eq!(
        candle_types(&file.0),
        vec![("q3".to_string(), GgmlDType::F16, vec![4, 64])]
    );
    let back = load_gguf(&file.0).unwrap();
    let d = back.tensor("q3").unwrap().as_dense().unwrap();
    let want = q3.dequantize_to(&Device::Cpu, DType::F16).unwrap();
    assert!(same_bits(&values(d), &values(&want)));
}

/// A small valid GGUF file: a Q4_0 tensor `a` and an F32 tensor `b`.
fn small_gguf() -> Vec<u8> {
    let w = weights(2, 32, 60);
    let q = UniformQuantizer::new(QuantSpec::int4().per_group(32))
        .unwrap()
        .quantize(&w, None)
        .unwrap();
    GgufWriter::new()
        .tensor("a", &q)
        .dense("b", &w)
        .to_bytes()
        .unwrap()
}

/// Byte positions of tensor `name`'s type id and offset in the tensor infos.
fn info_fields(bytes: &[u8], name: &str) -> (usize, usize) {
    let mut pat = (name.len() as u64).to_le_bytes().to_vec();
    pat.extend(name.as_bytes());
    pat.extend(2u32.to_le_bytes()); // both test tensors are matrices
    let at = bytes
        .windows(pat.len())
        .position(|w| w == pat)
        .expect("tensor info");
    let ty = at + pat.len() + 2 * 8;
    (ty, ty + 4)
}

fn malformed(bytes: &[u8]) -> String {
    match read_gguf(bytes) {
        Err(Error::Malformed { reason, .. }) => reason,
        other => panic!("expected a malformed-file error, got {other:?}"),
    }
}

#[test]
fn malformed_gguf_files_give_clear_errors() {
    let good = small_gguf();
    assert!(read_gguf(&good).is_ok());
    let patched = |at: usize, new: &[u8]| {
        let mut b = good.clone();
        b[at..at + new.len()].copy_from_slice(new);
        b
    };

    assert!(malformed(&patched(0, b"GGUX")).contains("magic"));
    assert!(malformed(&patched(4, &1u32.to_le_bytes())).contains("version 1"));
    assert!(malformed(&patched(8, &u64::MAX.to_le_bytes())).contains("declares"));
    assert!(malformed(&good[..good.len() - 40]).contains("truncated"));

    let (ty, offset) = info_fields(&good, "b");
    let m = malformed(&patched(ty, &12u32.to_le_bytes()));
    assert!(m.contains("Q4_K (12)") && m.contains("\"b\""), "{m}");
    assert!(malformed(&patched(ty, &99u32.to_le_bytes())).contains("unknown GGML type id 99"));
    let old = u64::from_le_bytes(good[offset..offset + 8].try_into().unwrap());
    let m = malformed(&patched(offset, &(old + 4).to_le_bytes()));
    assert!(m.contains("not a multiple of the alignment 32"), "{m}");
    let m = malformed(&patched(offset, &(old + 1024).to_le_bytes()));
    assert!(m.contains("truncated: tensor \"b\""), "{m}");

    let key = b"general.alignment";
    let at = good.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 4;
    assert_eq!(good[at..at + 4], 32u32.to_le_bytes());
    let m = malformed(&patched(at, &48u32.to_le_bytes()));
    assert!(m.contains("not a power of two"), "{m}");

    match load_gguf(std::env::temp_dir().join("quantlens-no-such-file.gguf")) {
        Err(Error::Io { path, .. }) => assert!(path.ends_with("quantlens-no-such-file.gguf")),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

#[test]
fn truncated_and_corrupted_files_never_panic() {
    let good = small_gguf();
    for n in 0..good.len() {
        let r = catch_unwind(|| read_gguf(&good[..n]).map(|_| ()));
        let r = r.unwrap_or_else(|_| panic!("read_gguf panicked on a {n}-byte prefix"));
        // Only the final padding may go missing.
        if n + 32 <= good.len() {
            assert!(r.is_err(), "a {n}-byte prefix was accepted");
        }
    }
    let mut rng = TestRng::new(70);
    for _ in 0..3000 {
        let mut b = good.clone();
        let at = (rng.next_u64() % b.len() as u64) as usize;
        b[at] = rng.next_u64() as u8;
        let r = catch_unwind(AssertUnwindSafe(|| read_gguf(&b).map(|_| ())));
        assert!(
            r.is_ok(),
            "read_gguf panicked with byte {at} set to {}",
            b[at]
        );
    }
    let st = SafetensorsWriter::new()
        .tensor("x", &handmade_variants()[3].1)
        .to_bytes()
        .unwrap();
    for n in 0..st.len() {
        let r = catch_unwind(|| read_safetensors(&st[..n]).map(|_| ()));
        assert!(
            r.unwrap_or_else(|_| panic!("read_safetensors panicked at {n}"))
                .is_err(),
            "a {n}-byte prefix was accepted"
        );
    }
}

/// A safetensors file with `quantlens.x.*` metadata and tensors, written without our writer.
fn raw_safetensors(meta: &[(&str, &str)], tensors: &[(&str, Tensor)]) -> Vec<u8> {
    let meta = meta
        .iter()
        .map(|(k, v)| (format!("quantlens.x.{k}"), v.to_string()))
        .collect();
    safetensors::tensor::serialize(tensors.iter().map(|(n, t)| (*n, t)), Some(meta)).unwrap()
}

fn st_error(bytes: &[u8]) -> String {
    match read_safetensors(bytes) {
        Err(Error::Malformed { reason, .. }) => reason,
        other => panic!("expected a malformed-file error, got {other:?}"),
    }
}

#[test]
fn inconsistent_parts_give_clear_errors() {
    let dev = Device::Cpu;
    let u8s = |n: usize| Tensor::zeros(n, DType::U8, &dev).unwrap();
    let f16s = |n: usize| Tensor::ones(n, DType::F16, &dev).unwrap();
    let fields = [
        ("format", "uniform"),
        ("bits", "4"),
        ("symmetric", "true"),
        ("shape", "2,32"),
        ("dtype", "f32"),
        ("group_len", "32"),
        ("scale_dtype", "f16"),
    ];
    let ok = raw_safetensors(&fields, &[("x.codes", u8s(32)), ("x.scales", f16s(2))]);
    assert!(read_safetensors(&ok).is_ok());

    let m = st_error(&raw_safetensors(
        &fields,
        &[("x.codes", u8s(31)), ("x.scales", f16s(2))],
    ));
    assert!(m.contains("\"x\"") && m.contains("need 32 bytes"), "{m}");
    let m = st_error(&raw_safetensors(&fields, &[("x.codes", u8s(32))]));
    assert!(m.contains("part `scales` is missing"), "{m}");
    let m = st_error(&raw_safetensors(
        &fields,
        &[("x.codes", u8s(32)), ("x.scales", f16s(3))],
    ));
    assert!(m.contains("3 scales for 2 groups"), "{m}");
    let mut bad = fields;
    bad[0] = ("format", "nf5");
    assert!(st_error(&raw_safetensors(&bad, &[("x.codes", u8s(32))])).contains("unknown format"));
    let mut bad = fields;
    bad[3] = ("shape", "2,x");
    assert!(st_error(&raw_safetensors(&bad, &[("x.codes", u8s(32))])).contains("not a shape"));
    let mut bad = fields;
    bad[6] = ("scale_dtype", "e8m0");
    let m = st_error(&raw_safetensors(
        &bad,
        &[
            ("x.codes", u8s(32)),
            ("x.scales", Tensor::new(&[255u8, 0], &dev).unwrap()),
        ],
    ));
    assert!(m.contains("scale 0 is not finite"), "{m}");
    let m = st_error(&raw_safetensors(
        &fields,
        &[
            ("x.codes", u8s(32)),
            ("x.scales", f16s(2)),
            ("x.zeros", u8s(1)),
        ],
    ));
    assert!(m.contains("zero points on a format that has none"), "{m}");
    let m = st_error(&raw_safetensors(&fields, &[]));
    assert!(m.contains("parts (x.codes, …) are missing"), "{m}");
    // Input scales: one per input channel, positive, and present when announced.
    let mut with_input = fields.to_vec();
    with_input.push(("input_scale_dtype", "f16"));
    let parts = |input: Tensor| {
        raw_safetensors(
            &with_input,
            &[
                ("x.codes", u8s(32)),
                ("x.scales", f16s(2)),
                ("x.input_scales", input),
            ],
        )
    };
    assert!(read_safetensors(&parts(f16s(32))).is_ok());
    let m = st_error(&parts(f16s(31)));
    assert!(m.contains("31 input scales"), "{m}");
    let zero = Tensor::zeros(32, DType::F16, &dev).unwrap();
    let m = st_error(&parts(zero));
    assert!(
        m.contains("input scale 0 = 0 is not finite and positive"),
        "{m}"
    );
    let m = st_error(&raw_safetensors(
        &with_input,
        &[("x.codes", u8s(32)), ("x.scales", f16s(2))],
    ));
    assert!(m.contains("part `input_scales` is missing"), "{m}");
    assert!(st_error(b"\x10\0\0\0\0\0\0\0{not json}      ").contains("not a valid safetensors"));
}

#[test]
fn writers_refuse_what_they_cannot_write() {
    let w = weights(2, 32, 80);
    let q = UniformQuantizer::new(QuantSpec::int3().per_channel())
        .unwrap()
        .quantize(&w, None)
        .unwrap();
    let dup = GgufWriter::new()
        .tensor("a", &q)
        .dense("a.codes", &w)
        .to_bytes();
    assert!(
        matches!(dup, Err(Error::InvalidParameter { .. })),
        "{dup:?}"
    );
    let dup = SafetensorsWriter::new()
        .tensor("a", &q)
        .dense("a.scales", &w)
        .to_bytes();
    assert!(
        matches!(dup, Err(Error::InvalidParameter { .. })),
        "{dup:?}"
    );
    let long = "x".repeat(60);
    let r = GgufWriter::new().tensor(long, &q).to_bytes();
    assert!(matches!(r, Err(Error::InvalidParameter { .. })), "{r:?}");
    let r = GgufWriter::new()
        .metadata("general.alignment", 64u32)
        .to_bytes();
    assert!(matches!(r, Err(Error::InvalidParameter { .. })), "{r:?}");
    let mixed = GgufValue::Array(vec![1u32.into(), "two".into()]);
    let r = GgufWriter::new().metadata("x", mixed).to_bytes();
    assert!(matches!(r, Err(Error::InvalidParameter { .. })), "{r:?}");
    let r = SafetensorsWriter::new()
        .metadata("quantlens.a.format", "x")
        .to_bytes();
    assert!(matches!(r, Err(Error::InvalidParameter { .. })), "{r:?}");
    let ints = Tensor::new(&[1u32, 2], &Device::Cpu).unwrap();
    let r = GgufWriter::new().dense("i", &ints).to_bytes();
    assert!(matches!(r, Err(Error::UnsupportedDType { .. })), "{r:?}");
    let rank5 = Tensor::zeros((1, 1, 1, 1, 2), DType::F32, &Device::Cpu).unwrap();
    let r = GgufWriter::new().dense("r", &rank5).to_bytes();
    assert!(matches!(r, Err(Error::InvalidParameter { .. })), "{r:?}");
    // safetensors holds integer dense tensors as they are.
    let st = SafetensorsWriter::new()
        .dense("i", &ints)
        .to_bytes()
        .unwrap();
    let back = read_safetensors(&st).unwrap();
    assert_eq!(
        back.tensor("i")
            .unwrap()
            .as_dense()
            .unwrap()
            .to_vec1::<u32>()
            .unwrap(),
        vec![1, 2]
    );
}

/// An MLP with a Q4_0 layer, a packed 3-bit asymmetric layer (quantlens parts in GGUF), a
/// Q4_1 layer and a dense layer.
fn quantized_mlp(seed: u64) -> Mlp {
    let config = MlpConfig::new(64, &[64, 32, 32], 10);
    let mut mlp = Mlp::new(config, seed, &Device::Cpu).unwrap();
    let schemes: [(&str, Box<dyn Quantizer>); 3] = [
        (
            "layers.0",
            Box::new(UniformQuantizer::new(QuantSpec::int4().per_group(32)).unwrap()),
        ),
        (
            "layers.1",
            Box::new(UniformQuantizer::new(QuantSpec::int3().per_group(32).asymmetric()).unwrap()),
        ),
        ("layers.2", Box::new(AffineQuantizer::q4_1())),
    ];
    for (name, q) in schemes {
        let qt = q.quantize(&mlp.weight(name).unwrap(), None).unwrap();
        mlp.set_weight(name, qt.into()).unwrap();
    }
    mlp
}

fn logits(m: &Mlp, x: &Tensor) -> Vec<f32> {
    values(&m.forward(x).unwrap())
}

#[test]
fn model_round_trips_give_bit_identical_logits() {
    let mlp = quantized_mlp(1);
    let x = weights(5, 64, 90);
    let want = logits(&mlp, &x);
    for ext in ["gguf", "safetensors"] {
        let file = TempFile::new(ext);
        save_model(&mlp, &file.0).unwrap();
        let mut fresh = Mlp::new(MlpConfig::new(64, &[64, 32, 32], 10), 2, &Device::Cpu).unwrap();
        assert!(!same_bits(&logits(&fresh, &x), &want));
        load_into(&mut fresh, &file.0).unwrap();
        assert!(same_bits(&logits(&fresh, &x), &want), "{ext}");
        for (a, b) in mlp.linear_layers().iter().zip(fresh.linear_layers()) {
            match (a.weight(), b.weight()) {
                (LayerWeight::Packed(p), LayerWeight::Packed(q)) => assert_eq!(p, q),
                (LayerWeight::Dense(p), LayerWeight::Dense(q)) => {
                    assert!(same_bits(&values(p), &values(q)))
                }
                _ => panic!("{ext}: layer {} changed kind", a.name()),
            }
            assert!(same_bits(
                &values(a.bias().unwrap()),
                &values(b.bias().unwrap())
            ));
        }
    }
    // Any extension, with the format named; loading sniffs the format.
    let file = TempFile::new("bin");
    assert!(matches!(
        save_model(&mlp, &file.0),
        Err(Error::InvalidParameter { .. })
    ));
    save_model_as(&mlp, &file.0, FileFormat::Gguf).unwrap();
    let mut fresh = Mlp::new(MlpConfig::new(64, &[64, 32, 32], 10), 3, &Device::Cpu).unwrap();
    load_into(&mut fresh, &file.0).unwrap();
    assert!(same_bits(&logits(&fresh, &x), &want));
}

#[test]
fn smoothed_models_round_trip_with_their_w8a8_forward() {
    use quantlens::model::{QuantizeActivations, SequentialQuantization};
    let config = MlpConfig::new(64, &[32], 10);
    let mut mlp = Mlp::new(config.clone(), 5, &Device::Cpu).unwrap();
    let x = weights(16, 64, 92);
    SequentialQuantization::new(&SmoothQuantizer::new())
        .calibration([x.clone()])
        .run(&mut mlp)
        .unwrap();
    let a8 = |m: &Mlp| {
        let mut hook = QuantizeActivations::per_token(8).unwrap();
        values(&m.forward_hooked(&x, &mut hook).unwrap())
    };
    let want = a8(&mlp);
    for ext in ["gguf", "safetensors"] {
        let file = TempFile::new(ext);
        save_model(&mlp, &file.0).unwrap();
        let mut fresh = Mlp::new(config.clone(), 6, &Device::Cpu).unwrap();
        load_into(&mut fresh, &file.0).unwrap();
        assert!(same_bits(&a8(&fresh), &want), "{ext}");
        for (a, b) in mlp.linear_layers().iter().zip(fresh.linear_layers()) {
            match (a.weight(), b.weight()) {
                (LayerWeight::Packed(p), LayerWeight::Packed(q)) => {
                    assert!(p.input_scales().is_some());
                    assert_eq!(p, q)
                }
                _ => panic!("{ext}: layer {} is not packed", a.name()),
            }
        }
    }
}

#[test]
fn loading_into_another_architecture_fails_and_changes_nothing() {
    let mlp = quantized_mlp(1);
    let file = TempFile::new("safetensors");
    save_model(&mlp, &file.0).unwrap();
    let x = weights(2, 64, 91);

    let mut wider = Mlp::new(MlpConfig::new(64, &[64, 48, 32], 10), 4, &Device::Cpu).unwrap();
    let before = logits(&wider, &x);
    let r = load_into(&mut wider, &file.0);
    assert!(
        matches!(r, Err(Error::ShapeMismatch(ref m)) if m.contains("layers.1.weight")),
        "{r:?}"
    );
    assert!(
        same_bits(&logits(&wider, &x), &before),
        "a failed load changed the model"
    );

    let mut shallower = Mlp::new(MlpConfig::new(64, &[64, 32], 10), 5, &Device::Cpu).unwrap();
    let r = load_into(&mut shallower, &file.0);
    assert!(matches!(r, Err(Error::ShapeMismatch(_))), "{r:?}");

    // A file with a tensor no layer owns.
    let extra = weights(1, 1, 92);
    let names: Vec<_> = mlp.layer_names();
    let layers = mlp.linear_layers();
    let mut w = GgufWriter::new().dense("extra", &extra);
    for (n, l) in names.iter().zip(&layers) {
        w = match l.weight() {
            LayerWeight::Dense(t) => w.dense(format!("{n}.weight"), t),
            LayerWeight::Packed(q) => w.tensor(format!("{n}.weight"), q),
        };
        w = w.dense(format!("{n}.bias"), l.bias().unwrap());
    }
    let gguf = TempFile::new("gguf");
    w.write(&gguf.0).unwrap();
    let mut fresh = Mlp::new(MlpConfig::new(64, &[64, 32, 32], 10), 6, &Device::Cpu).unwrap();
    let r = load_into(&mut fresh, &gguf.0);
    assert!(
        matches!(r, Err(Error::Malformed { ref reason, .. }) if reason.contains("extra belongs to no layer")),
        "{r:?}"
    );
}

#[test]
fn affine_q4_1_values_match_ggml_arithmetic() {
    let w = weights(3, 64, 100);
    let q = AffineQuantizer::q4_1().quantize(&w, None).unwrap();
    assert_eq!(q.bits_per_weight(), 5.0);
    let (Scales::F16(d), Some(Scales::F16(m))) = (q.scales(), q.offsets()) else {
        panic!("q4_1 stores f16 scales and offsets");
    };
    let codes = q.codes().unpack();
    let deq = values(&q.dequantize(&Device::Cpu).unwrap());
    for (i, (&c, &y)) in codes.iter().zip(&deq).enumerate() {
        let want = (c as f32) * d[i / 32].to_f32() + m[i / 32].to_f32();
        assert_eq!(y.to_bits(), want.to_bits());
    }
    // Half a step (plus f32 rounding) from every weight: the grid covers each group.
    let x = values(&w);
    for (i, (&a, &b)) in x.iter().zip(&deq).enumerate() {
        let step = d[i / 32].to_f32();
        assert!(
            (a - b).abs() <= 0.5 * step * (1.0 + 1e-3) + 1e-6,
            "{i}: {a} vs {b}"
        );
    }
}

#[cfg(feature = "testing")]
#[test]
fn affine_quantizer_passes_the_conformance_suite() {
    use quantlens::testing::{Conformance, ErrorBound};
    Conformance::new()
        .cols_multiple_of(32)
        .error_bound(ErrorBound::NearestLevel)
        .run(&AffineQuantizer::q4_1());
    for (bits, g) in [(2, Granularity::PerChannel), (8, Granularity::PerTensor)] {
        Conformance::new()
            .cases(16)
            .error_bound(ErrorBound::NearestLevel)
            .run(&AffineQuantizer::new(bits, g, ScaleDType::F16).unwrap());
    }
    Conformance::new()
        .cases(16)
        .cols_multiple_of(16)
        .log10_magnitude(-30.0..=30.0)
        .dtypes(vec![DType::F32])
        .error_bound(ErrorBound::NearestLevel)
        .run(&AffineQuantizer::new(5, Granularity::PerGroup(16), ScaleDType::F32).unwrap());
}
