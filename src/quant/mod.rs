//! Weight quantization: specs, packed formats, and the quantizers themselves.

pub mod calibration;
pub(crate) mod grid;
pub mod packing;
pub mod quantizer;
pub mod spec;
pub mod tensor;
pub mod uniform;

pub use calibration::Calibration;
pub use packing::PackedCodes;
pub use quantizer::Quantizer;
pub use spec::{Granularity, QuantSpec, Rounding, ScaleDType};
pub use tensor::{QuantFormat, QuantizedTensor, Scales};
pub use uniform::UniformQuantizer;
