//! CPU kernels: rayon over both cores, auto-vectorised inner loops (SSE2 or AVX2), each with a
//! plain scalar twin in its test module.

mod alloc;
pub(crate) mod cross_entropy;
pub(crate) mod decode;
pub(crate) mod gptq;
pub(crate) mod linalg;
pub(crate) mod logsumexp;
pub(crate) mod scaled;
pub(crate) mod table;
pub(crate) mod uniform;

pub(crate) use alloc::zeroed_vec;
