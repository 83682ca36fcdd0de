//! Shared by the integration tests: fixtures on demand, and a seeded generator written out here
//! so that test data never comes from the crate under test.
// Each test binary uses part of this module.
#![allow(dead_code)]

use std::sync::{Mutex, OnceLock};

use candle_core::{DType, Tensor};
use quantlens::{Calibration, QuantizedTensor, Quantizer, UniformQuantizer};

/// Make sure the fixture cache is filled: run `scripts/fetch-fixtures.sh` once per test binary
/// (it is idempotent and verifies SHA-256), and fail loudly — naming the script — when it
/// cannot, instead of skipping.
pub fn ensure_fixtures() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let outcome = DONE.get_or_init(|| {
        let status = std::process::Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/scripts/fetch-fixtures.sh"
            ))
            .status()
            .map_err(|e| format!("could not start scripts/fetch-fixtures.sh: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "scripts/fetch-fixtures.sh failed ({status}); run it by hand to see why"
            ))
        }
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

/// SplitMix64 (Vigna) with the uniforms and normals the tests draw, independent of
/// `quantlens::rng`.
pub struct TestRng(u64);

impl TestRng {
    pub fn new(seed: u64) -> Self {
        TestRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform on [0, 1) with 53 bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform on (0, 1): the 53-bit grid shifted by half a step, never 0.
    pub fn uniform_open(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Box–Muller (cosine branch) on [0, 1) uniforms, the first clamped away from 0.
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform().max(1e-300), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Box–Muller (cosine branch) on (0, 1) uniforms.
    pub fn normal_open(&mut self) -> f64 {
        let u1 = self.uniform_open();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * self.uniform_open()).cos()
    }
}

/// Every element of `t`, row-major, as f32 (panics on failure: test code).
pub fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// A data-aware quantizer that records the calibration it is handed for each layer, in call
/// order, then rounds to nearest with `inner`.
pub struct Recording {
    pub inner: UniformQuantizer,
    pub seen: Mutex<Vec<Calibration>>,
}

impl Recording {
    pub fn new(inner: UniformQuantizer) -> Self {
        Recording {
            inner,
            seen: Mutex::new(Vec::new()),
        }
    }

    /// The calibrations seen, in call order.
    pub fn into_seen(self) -> Vec<Calibration> {
        self.seen.into_inner().unwrap()
    }
}

impl Quantizer for Recording {
    fn name(&self) -> String {
        "recording".into()
    }
    fn quantize(
        &self,
        w: &Tensor,
        calib: Option<&Calibration>,
    ) -> quantlens::Result<QuantizedTensor> {
        self.seen
            .lock()
            .unwrap()
            .push(calib.expect("calibration").clone());
        self.inner.quantize(w, None)
    }
    fn uses_calibration(&self) -> bool {
        true
    }
}

/// A model seen through a wrapper that counts its whole-model forward passes and may hide its
/// [`BlockChain`](quantlens::model::BlockChain): with `chain == false`, sequential calibration
/// must re-run the model's prefix for every stage.
pub struct Counted<M> {
    pub inner: M,
    pub chain: bool,
    pub forwards: std::sync::atomic::AtomicUsize,
}

impl<M> Counted<M> {
    pub fn new(inner: M, chain: bool) -> Self {
        Counted {
            inner,
            chain,
            forwards: Default::default(),
        }
    }

    pub fn forwards(&self) -> usize {
        self.forwards.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl<M: quantlens::model::QuantizableModel> quantlens::model::QuantizableModel for Counted<M> {
    fn linear_layers(&self) -> Vec<&quantlens::model::LinearLayer> {
        self.inner.linear_layers()
    }

    fn linear_layer_mut(&mut self, name: &str) -> Option<&mut quantlens::model::LinearLayer> {
        self.inner.linear_layer_mut(name)
    }

    fn forward_hooked(
        &self,
        input: &Tensor,
        hooks: &mut dyn quantlens::model::ForwardHook,
    ) -> quantlens::Result<Tensor> {
        self.forwards
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.forward_hooked(input, hooks)
    }

    fn quantization_stages(&self) -> Vec<Vec<String>> {
        self.inner.quantization_stages()
    }

    fn as_block_chain(&self) -> Option<&dyn quantlens::model::BlockChain> {
        if self.chain {
            self.inner.as_block_chain()
        } else {
            None
        }
    }
}

/// The packed weight of every layer of `model`, by name (panics on a dense layer).
pub fn packed_weights<M: quantlens::model::QuantizableModel + ?Sized>(
    model: &M,
) -> Vec<(String, QuantizedTensor)> {
    model
        .linear_layers()
        .into_iter()
        .map(|l| match l.weight() {
            quantlens::model::LayerWeight::Packed(q) => (l.name().to_string(), (**q).clone()),
            quantlens::model::LayerWeight::Dense(_) => panic!("{} is not packed", l.name()),
        })
        .collect()
}

/// Quantize copies of `fp` with `quantizer` by sequential calibration on `batches` twice,
/// block by block and with the block chain hidden (prefix re-run per stage), and check the two
/// agree: same reports, same packed weights, no whole-model pass on the block path and one
/// per stage and batch on the other. Returns the block-wise model and its report.
pub fn assert_blockwise_equals_prefix<M>(
    fp: &M,
    batches: &[Tensor],
    quantizer: &dyn Quantizer,
) -> (M, quantlens::model::QuantizationReport)
where
    M: quantlens::model::QuantizableModel + Clone,
{
    let quantized = |chain: bool| {
        let mut model = Counted::new(fp.clone(), chain);
        let report = quantlens::model::SequentialQuantization::new(quantizer)
            .calibration(batches.to_vec())
            .run(&mut model)
            .unwrap();
        (model, report)
    };
    let (blockwise, blockwise_report) = quantized(true);
    let (prefix, prefix_report) = quantized(false);
    assert_eq!(blockwise.forwards(), 0);
    assert_eq!(
        prefix.forwards(),
        fp.quantization_stages().len() * batches.len()
    );
    assert_eq!(blockwise_report, prefix_report);
    assert_eq!(packed_weights(&blockwise), packed_weights(&prefix));
    (blockwise.inner, blockwise_report)
}
