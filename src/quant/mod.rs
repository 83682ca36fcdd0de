//! Weight quantization: specs, packed formats, and the quantizers themselves.

pub mod activation;
pub mod affine;
pub mod calibration;
pub mod codebook;
pub mod companding;
pub mod float;
pub mod float_format;
pub(crate) mod grid;
pub mod kmeans;
pub mod nf4;
pub mod packing;
pub mod quantizer;
pub mod reconstruction;
pub mod scales;
pub mod spec;
pub mod tensor;
pub mod ternary;
pub mod uniform;

pub use activation::{ActivationFormat, ActivationQuantizer};
pub use affine::AffineQuantizer;
pub use calibration::Calibration;
pub use codebook::{Codebook, LevelStorage};
pub use companding::CompandingQuantizer;
pub use float::FloatQuantizer;
pub use float_format::FloatFormat;
pub use kmeans::{KMeansInit, KMeansQuantizer, LloydMax};
pub use nf4::{NF4_LEVELS, Nf4Quantizer};
pub use packing::PackedCodes;
pub use quantizer::Quantizer;
pub use reconstruction::Reconstruction;
pub use scales::{DoubleQuantScales, Scales};
pub use spec::{Granularity, QuantSpec, Rounding, ScaleDType};
pub use tensor::{QuantFormat, QuantizedParts, QuantizedTensor};
pub use ternary::{TernaryQuantizer, TernaryRule};
pub use uniform::UniformQuantizer;
