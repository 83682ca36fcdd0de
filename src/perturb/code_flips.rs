//! Fault injection into packed storage: random bit flips and sign flips in a
//! [`QuantizedTensor`]'s codes.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::perturb::Perturbation;
use crate::perturb::values;
use crate::quant::{PackedCodes, QuantFormat, QuantizedParts, QuantizedTensor, Quantizer};
use crate::rng::{self, SplitMix64};

/// Keeps flip draws apart from noise draws under the same seed.
const DOMAIN: u64 = 0x464c_4950_434f_4445; // "FLIPCODE"

/// What a flip changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlipTarget {
    /// One bit of one packed code (a storage fault).
    Bits,
    /// The sign of one element's value: the code that decodes to `−v` (sign, ternary, float
    /// and symmetric uniform formats).
    Signs,
}

/// How many flips.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FlipAmount {
    /// Each candidate (bit, or element for sign flips) independently with probability `p`.
    Rate(f64),
    /// Exactly `n` distinct candidates, chosen uniformly.
    Exactly(usize),
}

/// How many flips a call made, and how many it declined because the code would not be a value
/// of the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct FlipCounts {
    /// Flips applied.
    pub applied: usize,
    /// Flips drawn but not applied: the new code would be invalid (ternary 3, an FP8 NaN or
    /// infinity code) or, for sign flips, the negated value has no code.
    pub skipped: usize,
}

/// Random bit flips or sign flips in the codes of a [`QuantizedTensor`], returning a new one
/// with the same scales, zero points and codebook: a fault-injection model of packed storage.
///
/// * [`bits`](Self::bits)`(p)`: every bit of every code (`numel · bits` candidates) flips
///   independently with probability p; [`exact_bits`](Self::exact_bits)`(n)`: exactly n
///   distinct bits.
/// * [`signs`](Self::signs)`(p)` / [`exact_signs`](Self::exact_signs)`(n)`: replace an
///   element's code by the code of its negated value — the sign bit of float formats, `0 ↔ 2`
///   for ternary, `0 ↔ 1` for sign, `q ↦ 2z − q` for symmetric uniform grids. Negating a zero
///   value counts as a flip (the stored code may change, the value does not). Formats without
///   a sign symmetry (asymmetric uniform, codebooks) are an [`Error::Unsupported`].
///
/// **Invalid codes.** A flip whose result is not a value of the format (ternary code 3, FP8
/// NaN/∞ codes, the negation of a symmetric grid's lowest code `−2^(b−1)`, which has no
/// positive twin) is never applied. With a rate it is *skipped* (counted in
/// [`FlipCounts::skipped`]), so on such formats the applied rate is slightly below p; with an
/// exact count it is *redrawn*: candidates are visited in a seeded uniform order without
/// replacement until n flips are applied, and a tensor with fewer than n valid candidates is
/// an error. Bits of one code are tried in order from the least significant, each against the
/// code as already flipped.
///
/// Draws are counter-based (rates) or a seeded partial Fisher–Yates (exact counts): same seed,
/// same bytes.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::perturb::CodeFlips;
/// use quantlens::{QuantSpec, Quantizer, UniformQuantizer};
///
/// let w = Tensor::randn(0f32, 1.0, (8, 64), &Device::Cpu)?;
/// let qt = UniformQuantizer::new(QuantSpec::int4().per_channel())?.quantize(&w, None)?;
/// let (hit, counts) = CodeFlips::exact_bits(5).flip_counted(&qt, 1)?;
/// assert_eq!(counts.applied, 5);
/// let differing: u32 = qt.codes().bytes().iter().zip(hit.codes().bytes())
///     .map(|(a, b)| (a ^ b).count_ones()).sum();
/// assert_eq!(differing, 5);
/// assert_eq!(hit.scales(), qt.scales());
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CodeFlips {
    target: FlipTarget,
    amount: FlipAmount,
}

impl CodeFlips {
    /// Any target and amount.
    pub fn new(target: FlipTarget, amount: FlipAmount) -> Self {
        CodeFlips { target, amount }
    }

    /// Each bit of each code flipped with probability `rate` ∈ [0, 1].
    pub fn bits(rate: f64) -> Self {
        CodeFlips::new(FlipTarget::Bits, FlipAmount::Rate(rate))
    }

    /// Exactly `n` distinct bits flipped.
    pub fn exact_bits(n: usize) -> Self {
        CodeFlips::new(FlipTarget::Bits, FlipAmount::Exactly(n))
    }

    /// Each element's sign flipped with probability `rate` ∈ [0, 1].
    pub fn signs(rate: f64) -> Self {
        CodeFlips::new(FlipTarget::Signs, FlipAmount::Rate(rate))
    }

    /// Exactly `n` distinct elements' signs flipped.
    pub fn exact_signs(n: usize) -> Self {
        CodeFlips::new(FlipTarget::Signs, FlipAmount::Exactly(n))
    }

    /// What is flipped.
    pub fn target(&self) -> FlipTarget {
        self.target
    }

    /// How many flips.
    pub fn amount(&self) -> FlipAmount {
        self.amount
    }

    /// Check the rate (in [0, 1]).
    pub fn validate(&self) -> Result<()> {
        if let FlipAmount::Rate(p) = self.amount {
            values::probability("flip rate", p)?;
        }
        Ok(())
    }

    /// A short tag: `bits-p0.001`, `bits-n5`, `signs-p0.01`, `signs-n3`.
    pub fn tag(&self) -> String {
        let target = match self.target {
            FlipTarget::Bits => "bits",
            FlipTarget::Signs => "signs",
        };
        match self.amount {
            FlipAmount::Rate(p) => format!("{target}-p{p}"),
            FlipAmount::Exactly(n) => format!("{target}-n{n}"),
        }
    }

    /// Use as a [`Perturbation`] of dense tensors: quantize with `quantizer`, flip, dequantize.
    pub fn through(self, quantizer: impl Quantizer + 'static) -> QuantizedFlips {
        QuantizedFlips {
            flips: self,
            quantizer: Arc::new(quantizer),
        }
    }

    /// The flipped tensor.
    pub fn flip(&self, qt: &QuantizedTensor, seed: u64) -> Result<QuantizedTensor> {
        Ok(self.flip_counted(qt, seed)?.0)
    }

    /// The flipped tensor and how many flips were applied and skipped.
    pub fn flip_counted(
        &self,
        qt: &QuantizedTensor,
        seed: u64,
    ) -> Result<(QuantizedTensor, FlipCounts)> {
        self.validate()?;
        let format = qt.format();
        let bits = qt.codes().bits() as usize;
        let valid = valid_codes(format);
        let mut codes = qt.codes().unpack();
        let key = rng::mix(seed ^ DOMAIN);
        let counts = match self.target {
            FlipTarget::Bits => {
                let total = codes.len() * bits;
                self.visit(total, key, |pos| {
                    let (i, k) = (pos / bits, pos % bits);
                    let c = codes[i] ^ (1 << k);
                    let ok = valid[c as usize];
                    if ok {
                        codes[i] = c;
                    }
                    ok
                })?
            }
            FlipTarget::Signs => {
                let neg = negation_table(format)?;
                let total = codes.len();
                self.visit(total, key, |i| match neg[codes[i] as usize] {
                    Some(c) if valid[c as usize] => {
                        codes[i] = c;
                        true
                    }
                    _ => false,
                })?
            }
        };
        let tensor = QuantizedTensor::assemble(QuantizedParts {
            shape: qt.shape().to_vec(),
            dtype: qt.dtype(),
            format,
            group_len: qt.group_len(),
            codes: PackedCodes::pack(&codes, bits as u8)?,
            scales: qt.scales().clone(),
            zeros: qt.zeros().cloned(),
            offsets: qt.offsets().cloned(),
            codebook: qt.codebook().cloned(),
            input_scales: qt.input_scales().cloned(),
        })?;
        Ok((tensor, counts))
    }

    /// Offer candidates `0..total` to `try_flip` (which applies a flip and says whether it
    /// could) according to the amount.
    fn visit(
        &self,
        total: usize,
        key: u64,
        mut try_flip: impl FnMut(usize) -> bool,
    ) -> Result<FlipCounts> {
        let mut counts = FlipCounts::default();
        let tally = |ok: bool, counts: &mut FlipCounts| {
            if ok {
                counts.applied += 1;
            } else {
                counts.skipped += 1;
            }
        };
        match self.amount {
            FlipAmount::Rate(p) => {
                for pos in 0..total {
                    if values::unit(rng::nth(key, pos as u64 + 1)) < p {
                        tally(try_flip(pos), &mut counts);
                    }
                }
            }
            FlipAmount::Exactly(n) => {
                if n > total {
                    return Err(Error::InvalidParameter {
                        name: "flip count",
                        reason: format!("{n} flips asked of a tensor with {total} candidates"),
                    });
                }
                // Partial Fisher–Yates over 0..total, the permutation kept sparse: position
                // k of the shuffled order is drawn from k..total, without replacement.
                let mut moved: HashMap<usize, usize> = HashMap::new();
                let mut draws = SplitMix64::new(key);
                let mut k = 0;
                while counts.applied < n && k < total {
                    let j = k + (draws.next_u64() % (total - k) as u64) as usize;
                    let pick = moved.get(&j).copied().unwrap_or(j);
                    let at_k = moved.get(&k).copied().unwrap_or(k);
                    moved.insert(j, at_k);
                    k += 1;
                    tally(try_flip(pick), &mut counts);
                }
                if counts.applied < n {
                    return Err(Error::InvalidParameter {
                        name: "flip count",
                        reason: format!(
                            "only {} of the {n} requested flips keep the codes valid in this \
                             tensor",
                            counts.applied
                        ),
                    });
                }
            }
        }
        Ok(counts)
    }
}

/// Which codes of the format are values (not past a table's end, not NaN/∞).
fn valid_codes(format: QuantFormat) -> Vec<bool> {
    let n = 1usize << format.code_bits();
    match format.unit_levels() {
        Some(levels) => (0..n)
            .map(|c| levels.get(c).is_some_and(|v| v.is_finite()))
            .collect(),
        None => vec![true; n],
    }
}

/// For each code, the code of the negated value (None when the format has none).
fn negation_table(format: QuantFormat) -> Result<Vec<Option<u8>>> {
    let n = 1usize << format.code_bits();
    Ok(match format {
        QuantFormat::Sign => vec![Some(1), Some(0)],
        QuantFormat::Ternary => vec![Some(2), Some(1), Some(0), None],
        QuantFormat::Float(f) => {
            let sign = 1usize << (f.bits() - 1);
            (0..n).map(|c| Some((c ^ sign) as u8)).collect()
        }
        QuantFormat::Uniform {
            bits,
            symmetric: true,
        } => {
            // Value scale·(q − z) with z = 2^(b−1): −value is code 2z − q, which exists for
            // every code but 0.
            let z = 1usize << (bits - 1);
            (0..n)
                .map(|q| (2 * z - q < n).then(|| (2 * z - q) as u8))
                .collect()
        }
        other => {
            return Err(Error::Unsupported(format!(
                "sign flips need a sign-symmetric format (sign, ternary, float, symmetric \
                 uniform); {other:?} has no code for −v in general"
            )));
        }
    })
}

/// [`CodeFlips`] as a [`Perturbation`] of dense tensors: quantize with a quantizer, flip codes,
/// dequantize to the input's dtype.
///
/// The tensor is quantized as a matrix `[rows, last_dim]` (see
/// [`Intensity`](super::Intensity)). A flipped code that decodes past the input dtype's range
/// (an FP8 exponent bit pushed into an f16 weight's overflow) is an [`Error::NonFinite`].
///
/// ```
/// use candle_core::{Device, Tensor};
/// use quantlens::perturb::CodeFlips;
/// use quantlens::{Perturbation, QuantSpec, Quantizer, UniformQuantizer};
///
/// let w = Tensor::randn(0f32, 1.0, (4, 32), &Device::Cpu)?;
/// let int8 = UniformQuantizer::new(QuantSpec::int8().per_channel())?;
/// let faulty = CodeFlips::bits(1e-3).through(int8.clone());
/// assert_eq!(faulty.name(), "flips-bits-p0.001[rtn-w8-c-sym]");
/// let clean = int8.fake_quantize(&w, None)?;
/// let hit = faulty.apply(&w, 9)?;
/// assert_eq!(hit.dims(), clean.dims());
/// # Ok::<(), quantlens::Error>(())
/// ```
#[derive(Clone)]
pub struct QuantizedFlips {
    flips: CodeFlips,
    quantizer: Arc<dyn Quantizer>,
}

impl std::fmt::Debug for QuantizedFlips {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "QuantizedFlips({:?}, {})",
            self.flips,
            self.quantizer.name()
        )
    }
}

impl QuantizedFlips {
    /// The flips applied to the codes.
    pub fn flips(&self) -> &CodeFlips {
        &self.flips
    }
}

impl Perturbation for QuantizedFlips {
    /// `flips-{tag}[{quantizer}]`.
    fn name(&self) -> String {
        format!("flips-{}[{}]", self.flips.tag(), self.quantizer.name())
    }

    fn apply(&self, x: &Tensor, seed: u64) -> Result<Tensor> {
        values::read(x, "perturbed tensor")?;
        let qt = self.quantizer.quantize(&values::as_matrix(x)?, None)?;
        let out = self
            .flips
            .flip(&qt, seed)?
            .dequantize(x.device())?
            .reshape(x.dims())?;
        values::read(
            &out,
            "code-flipped tensor (a flipped code overflows the dtype)",
        )?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::FloatFormat;

    #[test]
    fn negation_tables_negate_values() {
        // Independent check on decoded values: neg(c) decodes to −decode(c).
        for f in [FloatFormat::E4M3, FloatFormat::E5M2, FloatFormat::E2M1] {
            let t = negation_table(QuantFormat::Float(f)).unwrap();
            assert_eq!(t.len(), 1 << f.bits());
            for (c, neg) in t.iter().enumerate() {
                let v = f.decode(c as u8);
                let w = f.decode(neg.unwrap());
                assert!(v.is_nan() && w.is_nan() || w == -v, "{f:?} code {c}");
            }
        }
        for bits in 2..=8u8 {
            let t = negation_table(QuantFormat::Uniform {
                bits,
                symmetric: true,
            })
            .unwrap();
            let z = 1i32 << (bits - 1);
            assert_eq!(t[0], None);
            for q in 1..(1i32 << bits) {
                assert_eq!(t[q as usize].unwrap() as i32 - z, -(q - z));
            }
        }
        let t = negation_table(QuantFormat::Ternary).unwrap();
        let levels = QuantFormat::Ternary.unit_levels().unwrap();
        for c in 0..3 {
            assert_eq!(levels[t[c].unwrap() as usize], -levels[c]);
        }
        assert!(matches!(
            negation_table(QuantFormat::Uniform {
                bits: 4,
                symmetric: false
            }),
            Err(Error::Unsupported(_))
        ));
        assert!(matches!(
            negation_table(QuantFormat::Codebook { bits: 4 }),
            Err(Error::Unsupported(_))
        ));
    }

    #[test]
    fn valid_codes_exclude_non_values() {
        assert_eq!(
            valid_codes(QuantFormat::Ternary),
            vec![true, true, true, false]
        );
        let e4m3 = valid_codes(QuantFormat::Float(FloatFormat::E4M3));
        assert_eq!(e4m3.iter().filter(|v| !**v).count(), 2);
        assert!(!e4m3[0x7F] && !e4m3[0xFF]);
        assert!(
            valid_codes(QuantFormat::Uniform {
                bits: 3,
                symmetric: false
            })
            .iter()
            .all(|&v| v)
        );
    }
}
