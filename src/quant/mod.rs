//! Weight quantization: specs, packed formats, and the quantizers themselves.

pub mod affine;
pub mod calibration;
pub mod codebook;
pub mod float_format;
pub(crate) mod grid;
pub mod packing;
pub mod quantizer;
pub mod scales;
pub mod spec;
pub mod tensor;
pub mod uniform;

pub use affine::AffineQuantizer;
pub use calibration::Calibration;
pub use codebook::{Codebook, LevelStorage};
pub use float_format::FloatFormat;
pub use packing::PackedCodes;
pub use quantizer::Quantizer;
pub use scales::{DoubleQuantScales, Scales};
pub use spec::{Granularity, QuantSpec, Rounding, ScaleDType};
pub use tensor::{QuantFormat, QuantizedParts, QuantizedTensor};
pub use uniform::UniformQuantizer;
