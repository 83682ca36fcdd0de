//! Builds the CUDA kernels in `src/kernels/cuda/*.cu` to PTX when feature `cuda` is on; does
//! nothing otherwise, so CPU-only builds need no CUDA toolkit.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Kernel sources, each compiled to `$OUT_DIR/<stem>.ptx`.
const KERNELS: &[&str] = &[
    "src/kernels/cuda/dequantize.cu",
    "src/kernels/cuda/quantize.cu",
    "src/kernels/cuda/qmatmul.cu",
    "src/kernels/cuda/cross_entropy.cu",
    "src/kernels/cuda/quantize_scaled.cu",
];
/// Headers the kernels include.
const HEADERS: &[&str] = &["src/kernels/cuda/int4.cuh", "src/kernels/cuda/octet.cuh"];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=NVCC");
    println!("cargo::rerun-if-env-changed=CUDA_HOME");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let nvcc = nvcc();
    for h in HEADERS {
        println!("cargo::rerun-if-changed={h}");
    }
    for src in KERNELS {
        println!("cargo::rerun-if-changed={src}");
        let stem = Path::new(src)
            .file_stem()
            .expect("kernel paths have a file name");
        let ptx = out.join(stem).with_extension("ptx");
        // compute_80 PTX: the driver JITs it for any GPU from Ampere on (H100/H200 included).
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", "-std=c++17", "-arch=compute_80", "-o"])
            .arg(&ptx)
            .arg(src)
            .status()
            .unwrap_or_else(|e| panic!("feature `cuda`: cannot run {}: {e}", nvcc.display()));
        assert!(status.success(), "nvcc failed on {src}: {status}");
    }
}

/// `$NVCC`, else `$CUDA_HOME/bin/nvcc`, else `nvcc` from PATH.
fn nvcc() -> PathBuf {
    if let Some(n) = std::env::var_os("NVCC") {
        return n.into();
    }
    if let Some(home) = std::env::var_os("CUDA_HOME") {
        let p = Path::new(&home).join("bin").join("nvcc");
        if p.exists() {
            return p;
        }
    }
    "nvcc".into()
}
