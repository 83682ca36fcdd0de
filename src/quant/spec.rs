//! What a uniform quantizer does: bit width, granularity, symmetry, rounding, scale storage.

use crate::error::{Error, Result};

/// How many weights share one scale (and zero point).
///
/// Weights are `[out_features, in_features]`; groups run along `in_features`, so every
/// granularity is a run of contiguous elements in row-major order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// One scale for the whole tensor.
    PerTensor,
    /// One scale per output channel (row).
    PerChannel,
    /// One scale per `n` consecutive weights of a row; `n` must divide `in_features`.
    PerGroup(usize),
}

impl Granularity {
    /// Number of contiguous elements that share one scale in a `[rows, cols]` matrix.
    ///
    /// ```
    /// use quantlens::Granularity;
    /// assert_eq!(Granularity::PerGroup(128).group_len(4, 256).unwrap(), 128);
    /// assert!(Granularity::PerGroup(100).group_len(4, 256).is_err());
    /// ```
    pub fn group_len(&self, rows: usize, cols: usize) -> Result<usize> {
        match *self {
            Granularity::PerTensor => Ok(rows * cols),
            Granularity::PerChannel => Ok(cols),
            Granularity::PerGroup(0) => Err(Error::InvalidGroupSize { group_size: 0 }),
            Granularity::PerGroup(g) if !cols.is_multiple_of(g) => Err(Error::GroupSizeMismatch {
                group_size: g,
                in_features: cols,
            }),
            Granularity::PerGroup(g) => Ok(g),
        }
    }

    /// Short stable tag used in scheme names: `t`, `c`, `g128`.
    pub fn tag(&self) -> String {
        match self {
            Granularity::PerTensor => "t".into(),
            Granularity::PerChannel => "c".into(),
            Granularity::PerGroup(g) => format!("g{g}"),
        }
    }
}

/// How a scaled weight is mapped to an integer code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rounding {
    /// Round to the nearest level, ties to even (as `torch.round` and IEEE 754).
    Nearest,
    /// Round up with probability equal to the fractional part (unbiased).
    ///
    /// The random draw of element `i` is a hash of `(seed, i)`, so results do not depend on
    /// the number of threads: same seed, same bytes.
    Stochastic {
        /// Seed of the per-element random draws.
        seed: u64,
    },
}

/// The dtype scales are stored in. It sets the true storage size and the scale's precision.
///
/// F16 and BF16 scales are rounded *up* from their f32 value so that the stored grid still
/// covers every weight of its group: the half-step error bound holds for the stored scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ScaleDType {
    /// 32-bit scales: any finite weight magnitude.
    F32,
    /// 16-bit IEEE half scales (what GPTQ/AWQ checkpoints store). Scales above 65504 error.
    #[default]
    F16,
    /// bfloat16 scales: f32's range, 8 bits of precision.
    BF16,
    /// OCP E8M0 scales: powers of two `2^−127 … 2^127` in one byte (microscaling formats).
    /// Rounded up to the next power of two.
    E8M0,
}

impl ScaleDType {
    /// What a quantizer's [name](crate::Quantizer::name) ends with for this scale dtype:
    /// nothing for the quantizer's `default`, else `-s32`, `-s16`, `-sbf16` or `-se8m0`.
    ///
    /// ```
    /// use quantlens::ScaleDType;
    /// assert_eq!(ScaleDType::BF16.name_suffix(ScaleDType::F16), "-sbf16");
    /// assert_eq!(ScaleDType::F16.name_suffix(ScaleDType::F16), "");
    /// ```
    pub fn name_suffix(self, default: ScaleDType) -> &'static str {
        if self == default {
            return "";
        }
        match self {
            ScaleDType::F32 => "-s32",
            ScaleDType::F16 => "-s16",
            ScaleDType::BF16 => "-sbf16",
            ScaleDType::E8M0 => "-se8m0",
        }
    }

    /// Bytes one scale occupies in storage.
    pub fn size_in_bytes(&self) -> usize {
        match self {
            ScaleDType::F32 => 4,
            ScaleDType::F16 | ScaleDType::BF16 => 2,
            ScaleDType::E8M0 => 1,
        }
    }
}

/// A uniform quantization scheme.
///
/// Built from a bit width with chained setters; validated when a quantizer is made from it
/// ([`crate::UniformQuantizer::new`]).
///
/// Conventions (see `docs/architecture.md`): symmetric `scale = absmax / (2^(b−1) − 1)` with
/// codes `q + 2^(b−1)`; asymmetric `scale = (max − min) / (2^b − 1)` over the group's range
/// widened to include 0, `zero = round(−min / scale)`, `q = clamp(round(w / scale) + zero)`.
/// Dequantized value: `scale · (q − zero)`.
///
/// ```
/// use quantlens::{Granularity, QuantSpec, Rounding};
/// let spec = QuantSpec::int4().per_group(128).asymmetric();
/// assert_eq!(spec.bits, 4);
/// assert_eq!(spec.granularity, Granularity::PerGroup(128));
/// assert!(!spec.symmetric);
/// assert_eq!(spec.rounding, Rounding::Nearest);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct QuantSpec {
    /// Bits per code: 2..=8, or 1 for symmetric sign (binary) quantization.
    pub bits: u8,
    /// How many weights share a scale.
    pub granularity: Granularity,
    /// Symmetric (zero point fixed at mid-range) or asymmetric (a zero point per group).
    pub symmetric: bool,
    /// Nearest or stochastic rounding.
    pub rounding: Rounding,
    /// Storage dtype of the scales.
    pub scale_dtype: ScaleDType,
}

impl QuantSpec {
    /// `bits`-bit codes, per-channel, symmetric, nearest rounding, f16 scales.
    pub fn new(bits: u8) -> Self {
        QuantSpec {
            bits,
            granularity: Granularity::PerChannel,
            symmetric: true,
            rounding: Rounding::Nearest,
            scale_dtype: ScaleDType::F16,
        }
    }
    /// 1-bit sign quantization: `w ≈ ±scale`, `scale = mean |w|` of the group.
    pub fn binary() -> Self {
        Self::new(1)
    }
    /// 2-bit codes.
    pub fn int2() -> Self {
        Self::new(2)
    }
    /// 3-bit codes.
    pub fn int3() -> Self {
        Self::new(3)
    }
    /// 4-bit codes.
    pub fn int4() -> Self {
        Self::new(4)
    }
    /// 8-bit codes.
    pub fn int8() -> Self {
        Self::new(8)
    }
    /// Set the granularity.
    pub fn with_granularity(mut self, granularity: Granularity) -> Self {
        self.granularity = granularity;
        self
    }
    /// One scale for the whole tensor.
    pub fn per_tensor(self) -> Self {
        self.with_granularity(Granularity::PerTensor)
    }
    /// One scale per output channel.
    pub fn per_channel(self) -> Self {
        self.with_granularity(Granularity::PerChannel)
    }
    /// One scale per `group_size` weights along `in_features`.
    pub fn per_group(self, group_size: usize) -> Self {
        self.with_granularity(Granularity::PerGroup(group_size))
    }
    /// Symmetric grid around zero.
    pub fn symmetric(mut self) -> Self {
        self.symmetric = true;
        self
    }
    /// Asymmetric grid with a zero point per group.
    pub fn asymmetric(mut self) -> Self {
        self.symmetric = false;
        self
    }
    /// Set the rounding mode.
    pub fn with_rounding(mut self, rounding: Rounding) -> Self {
        self.rounding = rounding;
        self
    }
    /// Seeded stochastic rounding.
    pub fn stochastic(self, seed: u64) -> Self {
        self.with_rounding(Rounding::Stochastic { seed })
    }
    /// Set the scale storage dtype.
    pub fn with_scale_dtype(mut self, scale_dtype: ScaleDType) -> Self {
        self.scale_dtype = scale_dtype;
        self
    }

    /// Check the spec on its own (bit range, group size, combinations).
    pub fn validate(&self) -> Result<()> {
        if !(1..=8).contains(&self.bits) {
            return Err(Error::InvalidBits {
                bits: self.bits,
                min: 1,
                max: 8,
                scheme: "uniform quantization",
            });
        }
        if self.bits == 1 && !self.symmetric {
            return Err(Error::Unsupported(
                "1-bit quantization is sign quantization and is symmetric only; \
                 an integer zero point leaves one of the two levels at 0"
                    .into(),
            ));
        }
        if let Granularity::PerGroup(0) = self.granularity {
            return Err(Error::InvalidGroupSize { group_size: 0 });
        }
        Ok(())
    }
}

impl Default for QuantSpec {
    fn default() -> Self {
        Self::int8()
    }
}
