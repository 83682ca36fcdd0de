//! [`Provenance`]: what an audit report was computed from, so that two reports can be compared
//! (and partial reports merged) only when they describe the same experiment.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Result;

/// Sizes of the membership split behind every row of a report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SplitSizes {
    /// Samples the model was trained on (the attack's positives).
    pub members: usize,
    /// Held-out samples of the same distribution (the attack's negatives).
    pub non_members: usize,
    /// Samples used to calibrate data-aware quantizers (0 when none).
    pub calibration: usize,
    /// Samples of the whole population the split was drawn from.
    pub population: usize,
}

impl SplitSizes {
    /// Sizes in the order members, non-members, calibration, population.
    pub fn new(members: usize, non_members: usize, calibration: usize, population: usize) -> Self {
        SplitSizes {
            members,
            non_members,
            calibration,
            population,
        }
    }
}

/// What an audit was computed from: crate version, seeds, split sizes, data hashes, model.
///
/// Two partial reports can be merged only if their provenance is equal, so every field that
/// changes the numbers belongs here. Seeds are kept in a `BTreeMap` so that the JSON lists them
/// in name order, whatever order they were inserted in.
///
/// ```
/// use quantlens::audit::{Provenance, SplitSizes, hash_f32};
///
/// let p = Provenance::new("mlp 64-64-10 on digits")
///     .with_seed("split", 1)
///     .with_seed("train", 2)
///     .with_split(SplitSizes::new(898, 899, 0, 1797))
///     .with_data_hash(hash_f32(&[0.5, 1.5]));
/// assert_eq!(p.crate_version, env!("CARGO_PKG_VERSION"));
/// assert_eq!(p.seeds["train"], 2);
/// assert_eq!(p.data_hash.len(), 64);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Provenance {
    /// The quantlens version that wrote the report (`CARGO_PKG_VERSION`).
    pub crate_version: String,
    /// What was audited, e.g. `"SmolLM2-135M-Instruct Q4_1 (GGUF)"`.
    pub model: String,
    /// Named seeds (`"split"`, `"train"`, `"bootstrap"`, …).
    pub seeds: BTreeMap<String, u64>,
    /// Sizes of the membership split.
    pub split: SplitSizes,
    /// Number of repeated trainings (shadow or target models) behind each row; 1 for one.
    pub trainings: usize,
    /// Hex SHA-256 of the evaluation data (members and non-members), empty when not recorded.
    pub data_hash: String,
    /// Hex SHA-256 of the calibration data, empty when there is none.
    pub calibration_hash: String,
    /// How privacy was measured: the loss probe, the MIS estimator and its interval, the
    /// calibration mode (filled by [`Audit`](super::Audit); empty when not recorded).
    #[serde(default)]
    pub attack: String,
    /// Free-form notes (hardware, command line, caveats).
    pub notes: String,
}

impl Provenance {
    /// Provenance of an audit of `model`, with this crate's version, K = 1 training, no seeds,
    /// empty split sizes, hashes and notes.
    pub fn new(model: impl Into<String>) -> Self {
        Provenance {
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            model: model.into(),
            seeds: BTreeMap::new(),
            split: SplitSizes::default(),
            trainings: 1,
            data_hash: String::new(),
            calibration_hash: String::new(),
            attack: String::new(),
            notes: String::new(),
        }
    }

    /// Records a named seed (replacing one of the same name).
    pub fn with_seed(mut self, name: impl Into<String>, seed: u64) -> Self {
        self.seeds.insert(name.into(), seed);
        self
    }

    /// Sets the membership split sizes.
    pub fn with_split(mut self, split: SplitSizes) -> Self {
        self.split = split;
        self
    }

    /// Sets K, the number of repeated trainings behind each row.
    pub fn with_trainings(mut self, k: usize) -> Self {
        self.trainings = k;
        self
    }

    /// Sets the hex SHA-256 of the evaluation data (see [`hash_tensor`], [`hash_f32`]).
    pub fn with_data_hash(mut self, hash: impl Into<String>) -> Self {
        self.data_hash = hash.into();
        self
    }

    /// Sets the hex SHA-256 of the calibration data.
    pub fn with_calibration_hash(mut self, hash: impl Into<String>) -> Self {
        self.calibration_hash = hash.into();
        self
    }

    /// Sets the description of the attack (probe, estimator, interval).
    pub fn with_attack(mut self, attack: impl Into<String>) -> Self {
        self.attack = attack.into();
        self
    }

    /// Sets the free-form notes.
    pub fn with_notes(mut self, notes: impl Into<String>) -> Self {
        self.notes = notes.into();
        self
    }
}

/// Lower-case hex SHA-256 of `bytes`.
///
/// ```
/// use quantlens::audit::hash_bytes;
/// assert_eq!(
///     hash_bytes(b"abc"),
///     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
/// );
/// ```
pub fn hash_bytes(bytes: &[u8]) -> String {
    to_hex(&Sha256::digest(bytes))
}

/// Hex SHA-256 of the little-endian bytes of `values` (the same on every platform).
pub fn hash_f32(values: &[f32]) -> String {
    let mut h = Sha256::new();
    for v in values {
        h.update(v.to_le_bytes());
    }
    to_hex(&h.finalize())
}

/// Hex SHA-256 of a tensor: its dtype name, its shape and its elements' little-endian bytes in
/// row-major order, so equal tensors hash equally whatever their layout or device, and a tensor
/// reshaped or cast hashes differently.
///
/// Errors: only Candle's, from copying the tensor to the host.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::audit::hash_tensor;
///
/// let a = Tensor::new(&[[1f32, 2.], [3., 4.]], &Device::Cpu)?;
/// assert_eq!(hash_tensor(&a)?, hash_tensor(&a.t()?.contiguous()?.t()?)?);
/// assert_ne!(hash_tensor(&a)?, hash_tensor(&a.reshape(4)?)?);
/// # Ok::<(), quantlens::Error>(())
/// ```
pub fn hash_tensor(t: &Tensor) -> Result<String> {
    let mut h = Sha256::new();
    // A header, so [1, 2] as f32 and the same bytes read as another dtype or shape differ.
    h.update(t.dtype().as_str().as_bytes());
    h.update([0u8]);
    h.update((t.rank() as u64).to_le_bytes());
    for &d in t.dims() {
        h.update((d as u64).to_le_bytes());
    }
    let flat = t.flatten_all()?;
    match t.dtype() {
        DType::U8 => h.update(flat.to_vec1::<u8>()?),
        DType::U32 => feed(&mut h, flat.to_vec1::<u32>()?, u32::to_le_bytes),
        DType::I64 => feed(&mut h, flat.to_vec1::<i64>()?, i64::to_le_bytes),
        DType::F16 => feed(&mut h, flat.to_vec1::<half::f16>()?, half::f16::to_le_bytes),
        DType::BF16 => feed(
            &mut h,
            flat.to_vec1::<half::bf16>()?,
            half::bf16::to_le_bytes,
        ),
        DType::F32 => feed(&mut h, flat.to_vec1::<f32>()?, f32::to_le_bytes),
        DType::F64 => feed(&mut h, flat.to_vec1::<f64>()?, f64::to_le_bytes),
        // Other dtypes (i16, i32, fp8, …): hash their f64 values, exact for every one of them.
        _ => feed(
            &mut h,
            flat.to_dtype(DType::F64)?.to_vec1::<f64>()?,
            f64::to_le_bytes,
        ),
    }
    Ok(to_hex(&h.finalize()))
}

fn feed<T: Copy, const N: usize>(h: &mut Sha256, values: Vec<T>, le: fn(T) -> [u8; N]) {
    for v in values {
        h.update(le(v));
    }
}

fn to_hex(digest: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(digest.len() * 2);
    for &b in digest {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0xf)] as char);
    }
    s
}
