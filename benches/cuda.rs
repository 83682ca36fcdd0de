//! CUDA kernels timed with CUDA events in one process, next to same-run peers: a device-to-device
//! copy (the bandwidth ceiling), Candle's own CUDA `QMatMul` (Q4_0), and cuBLAS bf16 through
//! Candle's matmul. `benches/cuda_peer.py` times the PyTorch peers in the same `run` command.
//!
//! Built by `scripts/cuda-build.sh benches` (feature `cuda`, release) into
//! `target/cuda-dist/cuda-bench.gz`; run on the GPU machine with
//! `gunzip -c target/cuda-dist/cuda-bench.gz > /tmp/b && chmod +x /tmp/b && /tmp/b`.
//!
//! Method: every entry is run a few times to warm up, then the GPU is given a head start of
//! ~3 ms of copies so that the host enqueues the timed iterations faster than they run; an
//! event is recorded between consecutive iterations and the median of [`ITERS`] gaps is
//! reported. L2 (50 MiB on an H100) favours nobody: the packed weights (34 MiB each) rotate
//! over [`ROTATE`] copies, so every iteration reads a weight evicted by the three others; the
//! other operands (bf16 weights 128 MiB, logits ≥ 400 MiB, copies 512 MiB) exceed L2 anyway.

use std::time::Instant;

use candle_core::cuda_backend::cudarc::driver::sys::CUevent_flags;
use candle_core::cuda_backend::cudarc::driver::{CudaEvent, CudaSlice, CudaStream};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use quantlens::{
    CudaQuantizedWeight, FloatQuantizer, Nf4Quantizer, QuantSpec, Quantizer, UniformQuantizer,
    cross_entropy_per_sample_deferred,
};

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Timed iterations per entry (the median is reported).
const ITERS: usize = 60;
const WARMUP: usize = 5;
/// Distinct copies of each packed weight, cycled so that L2 never holds the next one.
const ROTATE: usize = 4;
const N: usize = 8192;
const GROUP: usize = 128;

struct Bench {
    dev: Device,
    stream: std::sync::Arc<CudaStream>,
    /// 512 MiB source and destination of the copy peer; also the head-start work.
    copy_src: CudaSlice<u8>,
    copy_dst: CudaSlice<u8>,
    rows: Vec<Row>,
}

struct Row {
    name: String,
    us: f64,
    /// Bytes moved per call (read + write), for a bandwidth column; 0 when not meaningful.
    bytes: f64,
    peer: Option<(String, f64)>,
}

impl Bench {
    fn event(&self) -> Res<CudaEvent> {
        Ok(self
            .stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?)
    }

    /// Keep the GPU busy ~3 ms so the host can enqueue ahead of it.
    fn head_start(&mut self) -> Res<()> {
        for _ in 0..4 {
            self.stream
                .memcpy_dtod(&self.copy_src, &mut self.copy_dst)?;
        }
        Ok(())
    }

    /// Median event time (µs) of `f(i)` over `ITERS` iterations.
    fn time(&mut self, mut f: impl FnMut(usize) -> Res<()>) -> Res<f64> {
        for i in 0..WARMUP {
            f(i)?;
        }
        self.dev.synchronize()?;
        self.head_start()?;
        let mut events = Vec::with_capacity(ITERS + 1);
        events.push(self.event()?);
        for i in 0..ITERS {
            f(i)?;
            events.push(self.event()?);
        }
        self.dev.synchronize()?;
        let mut t: Vec<f64> = events
            .windows(2)
            .map(|w| w[0].elapsed_ms(&w[1]).map(|ms| ms as f64 * 1e3))
            .collect::<std::result::Result<_, _>>()?;
        t.sort_by(f64::total_cmp);
        Ok(t[t.len() / 2])
    }

    fn add(&mut self, name: &str, us: f64, bytes: f64, peer: Option<(&str, f64)>) {
        let row = Row {
            name: name.into(),
            us,
            bytes,
            peer: peer.map(|(n, t)| (n.into(), t)),
        };
        print_row(&row);
        self.rows.push(row);
    }
}

fn print_row(r: &Row) {
    let bw = if r.bytes > 0.0 {
        format!("{:8.0} GB/s", r.bytes / r.us / 1e3)
    } else {
        " ".repeat(13)
    };
    let peer = match &r.peer {
        Some((name, t)) => format!("  {:5.2}x vs {name} ({t:.1} us)", t / r.us),
        None => String::new(),
    };
    println!("{:<58} {:9.1} us {bw}{peer}", r.name, r.us);
}

fn main() -> Res<()> {
    let t0 = Instant::now();
    let dev = Device::new_cuda(0)?;
    let Device::Cuda(cuda) = &dev else {
        return Err("not a CUDA device".into());
    };
    let stream = cuda.cuda_stream();
    let copy_bytes = 512usize << 20;
    let copy_src = stream.alloc_zeros::<u8>(copy_bytes)?;
    let copy_dst = stream.alloc_zeros::<u8>(copy_bytes)?;
    let mut b = Bench {
        dev: dev.clone(),
        stream: stream.clone(),
        copy_src,
        copy_dst,
        rows: Vec::new(),
    };
    println!(
        "quantlens CUDA bench: median of {ITERS} event-timed iterations after {WARMUP} warm-up"
    );

    // --- Bandwidth ceiling: a device-to-device copy (bytes counted read + write).
    let stream2 = stream.clone();
    let (src, mut dst) = (
        stream.alloc_zeros::<u8>(copy_bytes)?,
        stream.alloc_zeros::<u8>(copy_bytes)?,
    );
    let copy_us = b.time(|_| Ok(stream2.memcpy_dtod(&src, &mut dst)?))?;
    drop((src, dst));
    b.add("dtod copy 512 MiB", copy_us, 2.0 * copy_bytes as f64, None);
    let copy_bw = 2.0 * copy_bytes as f64 / copy_us; // bytes per µs

    // --- Weights: random bf16 8192², quantized on the GPU to int4 g128 (sym and asym).
    let w = Tensor::randn(0f32, 1.0, (N, N), &dev)?.to_dtype(DType::BF16)?;
    let sym = UniformQuantizer::new(QuantSpec::int4().per_group(GROUP))?;
    let asym = UniformQuantizer::new(QuantSpec::int4().per_group(GROUP).asymmetric())?;
    let t_q = b.time(|_| {
        sym.quantize(&w, None)?;
        Ok(())
    })?;
    let q_sym = sym.quantize(&w, None)?;
    let q_asym = asym.quantize(&w, None)?;
    // Quantize reads 2 bytes and writes half a byte per weight (plus scales); it includes a
    // host round trip for the group parameters and the download of the codes.
    let q_bytes = (N * N) as f64 * 2.5;
    b.add(
        "quantize int4 g128 bf16 8192^2 (incl. D2H of codes)",
        t_q,
        q_bytes,
        Some(("copy of same bytes", q_bytes / copy_bw)),
    );
    // Device-side quantize straight into a resident weight: one kernel reads the bf16 weight
    // and writes codes, f32 scales (and zero points); only a 4-byte status comes back.
    let groups = (N * N / GROUP) as f64;
    for (name, spec, zero_bytes) in [
        ("sym", QuantSpec::int4().per_group(GROUP), 0.0),
        ("asym", QuantSpec::int4().per_group(GROUP).asymmetric(), 1.0),
    ] {
        let us = b.time(|_| {
            CudaQuantizedWeight::quantize(&w, &spec)?;
            Ok(())
        })?;
        let bytes = (N * N) as f64 * 2.5 + groups * (4.0 + zero_bytes);
        b.add(
            &format!("CudaQuantizedWeight::quantize int4 g128 {name} bf16 8192^2"),
            us,
            bytes,
            Some(("copy of same bytes", bytes / copy_bw)),
        );
    }
    // The same without the status read: `quantize_deferred` queues the kernel and returns;
    // the status is checked by `finish` (not called here, as a caller quantizing many layers
    // pays that round trip once for all of them). End to end: allocations, status memset,
    // kernel.
    for (name, spec, zero_bytes) in [
        ("sym", QuantSpec::int4().per_group(GROUP), 0.0),
        ("asym", QuantSpec::int4().per_group(GROUP).asymmetric(), 1.0),
    ] {
        let us = b.time(|_| {
            // Dropped unfinished: the timing stops at the queued kernel.
            drop(CudaQuantizedWeight::quantize_deferred(&w, &spec)?);
            Ok(())
        })?;
        let bytes = (N * N) as f64 * 2.5 + groups * (4.0 + zero_bytes);
        b.add(
            &format!("CudaQuantizedWeight::quantize_deferred int4 g128 {name} bf16 8192^2"),
            us,
            bytes,
            Some(("copy of same bytes", bytes / copy_bw)),
        );
    }
    // Eight layers queued, then finished: one wait for all (per-layer time reported).
    let us = b.time(|_| {
        let pending = (0..8)
            .map(|_| {
                CudaQuantizedWeight::quantize_deferred(&w, &QuantSpec::int4().per_group(GROUP))
            })
            .collect::<quantlens::Result<Vec<_>>>()?;
        for p in pending {
            p.finish()?;
        }
        Ok(())
    })? / 8.0;
    let bytes = (N * N) as f64 * 2.5 + groups * 4.0;
    b.add(
        "  per layer: 8 x quantize_deferred, then 8 x finish (sym)",
        us,
        bytes,
        Some(("copy of same bytes", bytes / copy_bw)),
    );

    // NF4 and FP8 quantize on the device (`quantize_scaled.cu`), into a host QuantizedTensor:
    // absmax kernel, encode kernel, then the D2H of codes and scales (pageable memory), which
    // the "copy" peer does not include.
    let nf4 = Nf4Quantizer::new();
    let nf4_dq = Nf4Quantizer::new().double_quant();
    let fp8 = FloatQuantizer::fp8_e4m3();
    let fp8_g128 = FloatQuantizer::fp8_e4m3().per_group(GROUP);
    let mxfp4 = FloatQuantizer::mxfp4();
    let scaled: [(&str, &dyn Quantizer, f64, f64); 5] = [
        ("Nf4Quantizer g64 f32 scales", &nf4, 0.5, 64.0),
        ("Nf4Quantizer g64 double-quant", &nf4_dq, 0.5, 64.0),
        ("FloatQuantizer fp8 e4m3 per-channel", &fp8, 1.0, N as f64),
        ("FloatQuantizer fp8 e4m3 g128", &fp8_g128, 1.0, GROUP as f64),
        ("FloatQuantizer mxfp4 g32", &mxfp4, 0.5, 32.0),
    ];
    for (name, qz, code_bytes, group) in scaled {
        let us = b.time(|_| {
            qz.quantize(&w, None)?;
            Ok(())
        })?;
        let bytes = (N * N) as f64 * (2.0 + code_bytes) + (N * N) as f64 / group * 4.0;
        b.add(
            &format!("{name} bf16 8192^2 (incl. D2H of codes)"),
            us,
            bytes,
            Some(("copy of same bytes", bytes / copy_bw)),
        );
    }
    let ws: Vec<CudaQuantizedWeight> = (0..ROTATE)
        .map(|_| CudaQuantizedWeight::new(&q_sym, &dev))
        .collect::<quantlens::Result<_>>()?;
    let wa: Vec<CudaQuantizedWeight> = (0..ROTATE)
        .map(|_| CudaQuantizedWeight::new(&q_asym, &dev))
        .collect::<quantlens::Result<_>>()?;

    // --- Dequantize (resident codes) vs a copy of the same bytes.
    for (dtype, size) in [(DType::BF16, 2.0), (DType::F16, 2.0), (DType::F32, 4.0)] {
        let us = b.time(|i| {
            ws[i % ROTATE].dequantize(dtype)?;
            Ok(())
        })?;
        let bytes = (N * N) as f64 * (0.5 + size) + (N * N / GROUP) as f64 * 4.0;
        b.add(
            &format!("dequantize int4 g128 sym -> {dtype:?}"),
            us,
            bytes,
            Some(("copy of same bytes", bytes / copy_bw)),
        );
    }
    let us = b.time(|i| {
        wa[i % ROTATE].dequantize(DType::BF16)?;
        Ok(())
    })?;
    let bytes = (N * N) as f64 * 2.5 + (N * N / GROUP) as f64 * 5.0;
    b.add(
        "dequantize int4 g128 asym -> BF16",
        us,
        bytes,
        Some(("copy of same bytes", bytes / copy_bw)),
    );
    // The upload path (QuantizedTensor on the host → GPU) for reference.
    let us = b.time(|_| {
        q_sym.dequantize_to(&dev, DType::BF16)?;
        Ok(())
    })?;
    b.add(
        "dequantize_to(cuda) from host codes (upload + decode)",
        us,
        0.0,
        None,
    );

    // --- Peers on the weight: cuBLAS bf16 and Candle's Q4_0.
    let w_bf16 = w.clone();
    let q40: Vec<QMatMul> = (0..ROTATE)
        .map(|_| {
            QMatMul::from_qtensor(QTensor::quantize(
                &w.to_dtype(DType::F32)?,
                GgmlDType::Q4_0,
            )?)
        })
        .collect::<candle_core::Result<_>>()?;

    // --- GEMV / GEMM: y = x · Wᵀ, x [m, 8192] bf16.
    for m in [1usize, 2, 4, 8, 16, 64, 128, 256] {
        let x = Tensor::randn(0f32, 1.0, (m, N), &dev)?.to_dtype(DType::BF16)?;
        let xf = x.to_dtype(DType::F32)?;
        let cublas = b.time(|_| {
            x.matmul(&w_bf16.t()?)?;
            Ok(())
        })?;
        let fused = b.time(|i| {
            ws[i % ROTATE].matmul(&x)?;
            Ok(())
        })?;
        let fused_asym = b.time(|i| {
            wa[i % ROTATE].matmul(&x)?;
            Ok(())
        })?;
        let deq_cublas = b.time(|i| {
            let wd = ws[i % ROTATE].dequantize(DType::BF16)?;
            x.matmul(&wd.t()?)?;
            Ok(())
        })?;
        let candle_q40 = b.time(|i| {
            q40[i % ROTATE].forward(&xf)?;
            Ok(())
        })?;
        let wbytes = (N * N) as f64 * 0.5 + (N * N / GROUP) as f64 * 4.0;
        b.add(&format!("cuBLAS bf16 matmul m={m}"), cublas, 0.0, None);
        b.add(
            &format!("fused int4 g128 sym matmul m={m} (bf16)"),
            fused,
            wbytes,
            Some(("cuBLAS bf16", cublas)),
        );
        b.add(
            &format!("fused int4 g128 asym matmul m={m} (bf16)"),
            fused_asym,
            wbytes + (N * N / GROUP) as f64,
            Some(("cuBLAS bf16", cublas)),
        );
        b.add(
            &format!("  vs dequantize-then-cuBLAS m={m}"),
            fused,
            0.0,
            Some(("deq+cuBLAS", deq_cublas)),
        );
        b.add(
            &format!("  vs Candle QMatMul Q4_0 m={m} (f32 x)"),
            fused,
            0.0,
            Some(("Candle Q4_0", candle_q40)),
        );
        if m <= 8 {
            let xf16 = x.to_dtype(DType::F32)?;
            let f32_us = b.time(|i| {
                ws[i % ROTATE].matmul(&xf16)?;
                Ok(())
            })?;
            b.add(
                &format!("fused int4 g128 sym matmul m={m} (f32 x)"),
                f32_us,
                wbytes,
                Some(("cuBLAS bf16", cublas)),
            );
        }
    }
    drop((ws, wa, q40, w, w_bf16));

    // --- Per-sample cross-entropy, 4096 x 49152.
    let (rows, vocab) = (4096usize, 49152usize);
    let logits32 = (Tensor::randn(0f32, 1.0, (rows, vocab), &dev)? * 3.0)?;
    let targets = Tensor::rand(0f32, vocab as f32, rows, &dev)?
        .floor()?
        .to_dtype(DType::U32)?;
    let targets64 = targets.to_dtype(DType::I64)?;
    for dtype in [DType::F32, DType::BF16] {
        let logits = logits32.to_dtype(dtype)?;
        let bytes = (rows * vocab * dtype.size_in_bytes()) as f64;
        let ours = b.time(|_| {
            cross_entropy_per_sample_deferred(&logits, &targets)?;
            Ok(())
        })?;
        let ours64 = b.time(|_| {
            cross_entropy_per_sample_deferred(&logits, &targets64)?;
            Ok(())
        })?;
        let candle = b.time(|_| {
            let lp = candle_nn::ops::log_softmax(&logits, candle_core::D::Minus1)?;
            lp.gather(&targets.unsqueeze(1)?, 1)?.neg()?;
            Ok(())
        })?;
        b.add(
            &format!("fused cross-entropy {rows}x{vocab} {dtype:?} u32 targets"),
            ours,
            bytes,
            Some(("Candle log_softmax+gather", candle)),
        );
        b.add(
            &format!("fused cross-entropy {rows}x{vocab} {dtype:?} i64 targets"),
            ours64,
            bytes,
            Some(("copy bandwidth over the logits", bytes / copy_bw)),
        );
        // Correctness spot check against the checked path.
        let checked = quantlens::cross_entropy_per_sample(&logits, &targets)?;
        let host = checked.to_vec1::<f32>()?;
        println!(
            "    (checked losses: mean {:.4})",
            host.iter().sum::<f32>() / rows as f32
        );
    }
    println!("total {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}
