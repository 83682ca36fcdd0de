//! The crate's single error type.

use candle_core::DType;

use crate::quant::ScaleDType;

/// Everything that can go wrong in quantlens.
///
/// Variants name the bad input so that a caller (or a report) can say what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A bit width outside what the scheme supports.
    #[error("{scheme} supports bit widths {min}..={max}, got {bits}")]
    InvalidBits {
        /// The requested bit width.
        bits: u8,
        /// Smallest supported width.
        min: u8,
        /// Largest supported width.
        max: u8,
        /// The scheme that refused it.
        scheme: &'static str,
    },

    /// A group size of zero.
    #[error("group size must be at least 1, got {group_size}")]
    InvalidGroupSize {
        /// The requested group size.
        group_size: usize,
    },

    /// A group size that does not divide the dimension groups run along.
    #[error("group size {group_size} does not divide in_features = {in_features}")]
    GroupSizeMismatch {
        /// The requested group size.
        group_size: usize,
        /// The length of the dimension groups run along (the last one).
        in_features: usize,
    },

    /// A tensor of the wrong rank.
    #[error("{what} must have rank {expected}, got shape {shape:?}")]
    RankMismatch {
        /// What the tensor was meant to be ("weight matrix", …).
        what: &'static str,
        /// The rank that was needed.
        expected: usize,
        /// The shape that came in.
        shape: Vec<usize>,
    },

    /// A tensor (or a dimension of it) with no elements.
    #[error("{what} is empty (shape {shape:?})")]
    EmptyTensor {
        /// What the tensor was meant to be.
        what: &'static str,
        /// The shape that came in.
        shape: Vec<usize>,
    },

    /// A dtype the operation does not accept.
    #[error("{what} must be f32, f16 or bf16, got {dtype:?}")]
    UnsupportedDType {
        /// What the tensor was meant to be.
        what: &'static str,
        /// The dtype that came in.
        dtype: DType,
    },

    /// NaN or ±Inf in data that must be finite.
    #[error(
        "{what} contains {count} non-finite value(s) (NaN or Inf); first at flat index {first_index}"
    )]
    NonFinite {
        /// What the data was meant to be.
        what: &'static str,
        /// How many values are NaN or infinite.
        count: usize,
        /// Row-major index of the first one.
        first_index: usize,
    },

    /// Targets that are not integer class indices.
    #[error("{what} must have an integer dtype (u8, u32, i16, i32 or i64), got {dtype:?}")]
    NonIntegerTargets {
        /// What the tensor was meant to be.
        what: &'static str,
        /// The dtype that came in.
        dtype: DType,
    },

    /// A class index outside `0..classes`.
    #[error("{what}: entry {index} (row-major) is {value}, outside 0..{classes}")]
    TargetOutOfRange {
        /// What the tensor was meant to be.
        what: &'static str,
        /// Row-major index of the first bad entry.
        index: usize,
        /// Its value.
        value: i64,
        /// The number of classes (the logits' last dimension).
        classes: usize,
    },

    /// A sequence whose every token is ignored or masked, so its mean loss is undefined.
    #[error("sequence {sequence} has no counted token (every target is ignored or masked out)")]
    NoCountedTokens {
        /// Index of the sequence in the batch.
        sequence: usize,
    },

    /// A quantization scale that the chosen scale dtype cannot hold.
    #[error(
        "group {group}: scale {scale:e} does not fit in {dtype:?}; use ScaleDType::F32 for weights of this magnitude"
    )]
    ScaleOutOfRange {
        /// Index of the group whose scale overflowed.
        group: usize,
        /// The scale as computed in f32 (may be infinite).
        scale: f32,
        /// The storage dtype that could not hold it.
        dtype: ScaleDType,
    },

    /// The operation has no kernel on this device yet.
    #[error("{op} is not available on {device}: {hint}")]
    UnsupportedDevice {
        /// The operation.
        op: &'static str,
        /// The device, as Candle prints it.
        device: String,
        /// What to do instead.
        hint: &'static str,
    },

    /// A configuration that is well-formed but not supported.
    #[error("unsupported configuration: {0}")]
    Unsupported(String),

    /// Parts of a quantized tensor that do not fit together (lengths, code ranges).
    #[error("inconsistent quantized tensor: {0}")]
    InconsistentParts(String),

    /// A data sample too small (or empty) for the estimate asked of it.
    #[error("{what}: need at least {needed} value(s), got {got}")]
    TooFewSamples {
        /// Which sample.
        what: &'static str,
        /// The minimum size.
        needed: usize,
        /// The size that came in.
        got: usize,
    },

    /// Shapes of two inputs that must agree.
    #[error("shape mismatch: {0}")]
    ShapeMismatch(String),

    /// A [`ForwardHook`](crate::model::ForwardHook) ended the forward pass early, after
    /// seeing what it needed. Not a failure: callers that install such a hook catch it.
    #[error("forward pass stopped by a hook at layer {layer}")]
    ForwardStopped {
        /// The layer whose input was the last one needed.
        layer: String,
    },

    /// A model has no linear layer of that name.
    #[error("no linear layer named {name:?}; the model has {available}")]
    UnknownLayer {
        /// The name asked for.
        name: String,
        /// The layer names the model does have, comma-separated (shortened when long).
        available: String,
    },

    /// A data file that a fixture script provides is missing or unreadable.
    #[error(
        "fixture {path} is missing or unreadable ({reason}); run scripts/fetch-fixtures.sh (or point QUANTLENS_FIXTURES at its cache)"
    )]
    MissingFixture {
        /// The path that was looked for.
        path: String,
        /// What went wrong opening it.
        reason: String,
    },

    /// A data file that does not parse as the expected format.
    #[error("{path}, line {line}: {reason}")]
    Parse {
        /// The file (or embedded data set) being read.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },

    /// A file that could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the operating system reported.
        #[source]
        source: std::io::Error,
    },

    /// A model or tensor file ([`crate::io`]) whose contents are not what its format
    /// promises: a bad magic number, a truncated section, a misaligned offset, an unknown
    /// type, or parts that do not fit together.
    #[error("{path}: malformed file: {reason}")]
    Malformed {
        /// The file.
        path: String,
        /// What is wrong, and where.
        reason: String,
    },

    /// A parameter outside its valid range (a confidence level, a resample count, an FPR, a
    /// learning rate, a split larger than the data set).
    #[error("invalid {name}: {reason}")]
    InvalidParameter {
        /// The parameter, as the API names it.
        name: &'static str,
        /// What was wrong and what is accepted.
        reason: String,
    },

    /// A group of sliced membership scores with no score on one side.
    #[error("group {group} has no {side}; drop the group or merge it with another")]
    EmptyGroup {
        /// The group label, as `Debug` prints it.
        group: String,
        /// The empty side ("member scores" or "non-member scores").
        side: &'static str,
    },

    /// A matrix that must be symmetric positive definite (a damped Hessian) is not, even
    /// after damping: its Cholesky factorisation met a pivot that is not positive.
    #[error(
        "{what} is not positive definite: the pivot of input {index} failed with damping {percdamp} x mean(diag) = {damping:e}; raise the damping or allow retries with a larger one"
    )]
    NotPositiveDefinite {
        /// The matrix ("calibration Hessian", …).
        what: &'static str,
        /// The input (row/column, original order) whose pivot failed.
        index: usize,
        /// The relative damping of the last attempt (fraction of the mean diagonal).
        percdamp: f64,
        /// The absolute damping added to the diagonal in the last attempt.
        damping: f64,
    },

    /// The tokenizer could not be built or could not encode or decode (from the `tokenizers`
    /// crate).
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// An error from Candle itself.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `Result` with [`enum@Error`] as the error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
