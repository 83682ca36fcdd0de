//! CPU kernels: rayon over both cores, auto-vectorised inner loops (SSE2 or AVX2), each with a
//! plain scalar twin in its test module.

pub(crate) mod uniform;
