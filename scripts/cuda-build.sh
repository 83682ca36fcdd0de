#!/usr/bin/env bash
# Reproducible CUDA build on a CPU-only machine (docs/cuda.md).
#
# usage: scripts/cuda-build.sh [setup|lib|tests|benches|all|env]   (default: all = setup + tests
#        + benches)
#
# 1. setup: nvcc 13.0 (must match the GPU machines' CUDA 13.0 driver) from PyPI wheels into a
#    venv OUTSIDE git ($QUANTLENS_CUDA_CACHE, default ~/.cache/quantlens-cuda), plus link stubs
#    for the CUDA libraries (no driver or cuBLAS is needed to link, only to run).
# 2. tests: `cargo test --release --features cuda --no-run` for the CUDA test binaries, then
#    gzipped copies in target/cuda-dist/ (git-ignored) for the `run` tool's carry:
#        gunzip -c target/cuda-dist/cuda.gz > /tmp/cuda && chmod +x /tmp/cuda && /tmp/cuda
# 3. benches: `cargo bench --features cuda --no-run` for benches/cuda.rs, gzipped as
#    target/cuda-dist/cuda-bench.gz, plus a copy of its PyTorch peer benches/cuda_peer.py.
# CARGO_TARGET_DIR is honoured (e.g. a persistent /work/cuda-target shared by sessions).
# Prints the environment to reuse (e.g. for `cargo clippy --features cuda`) with `env`.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${QUANTLENS_CUDA_CACHE:-$HOME/.cache/quantlens-cuda}
VENV=$CACHE/venv
PY=${PYTHON:-python3}
# Pinned: 13.0.x to match driver 580 (PTX ISA 9.0); cudarc 0.19.10 rejects newer toolkits.
WHEELS=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
        nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85)
CUDARC=0.19.10
# Test targets built and shipped (each needs `required-features = ["cuda"]` in Cargo.toml).
TESTS=(cuda)

setup() {
    if [ ! -x "$VENV/bin/nvcc-ok" ]; then
        "$PY" -m venv "$VENV"
        "$VENV/bin/pip" install --quiet "${WHEELS[@]}"   # one pip call: one nvidia/cu13 tree
        touch "$VENV/bin/nvcc-ok" && chmod +x "$VENV/bin/nvcc-ok"
    fi
    export CUDA_HOME
    CUDA_HOME=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu13
    export PATH="$CUDA_HOME/bin:$PATH"     # cudarc's build.rs runs plain `nvcc --version`
    export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}  # no GPU here; candle-kernels reads this
    nvcc --version | tail -2
    cargo fetch
    local src
    src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-$CUDARC | head -1)
    [ -d "$src" ] || { echo "cudarc $CUDARC sources not found (Cargo.lock?)" >&2; exit 1; }
    if [ ! -e "$CUDA_HOME/lib/stubs/libcublasLt.so" ]; then
        bash scripts/cuda-stubs.sh "$CUDA_HOME" "$src" all
    fi
}

# gzip every executable of kind $1 listed in target/cuda-dist/build.json as <name><$2>.gz
ship() {
    KIND=$1 SUFFIX=$2 "$PY" - <<'PY'
import json, gzip, hashlib, os
kind, suffix = os.environ["KIND"], os.environ["SUFFIX"]
for line in open("target/cuda-dist/build.json"):
    if not line.startswith("{"):
        continue
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == [kind]:
        name = m["target"]["name"] + suffix
        with open(m["executable"], "rb") as f, gzip.open(f"target/cuda-dist/{name}.gz", "wb", 6) as g:
            data = f.read(); g.write(data)
        print(f"target/cuda-dist/{name}.gz  <- {m['executable']} ({len(data)/1e6:.1f} MB, sha256 {hashlib.sha256(data).hexdigest()[:16]})")
PY
}

build_tests() {
    mkdir -p target/cuda-dist
    local args=() t
    for t in "${TESTS[@]}"; do args+=(--test "$t"); done
    cargo test --release --features cuda "${args[@]}" --no-run --message-format=json \
        > target/cuda-dist/build.json
    ship test ""
}

build_benches() {
    mkdir -p target/cuda-dist
    cargo bench --features cuda --bench cuda --no-run --message-format=json \
        > target/cuda-dist/build.json
    ship bench -bench
    cp benches/cuda_peer.py target/cuda-dist/
}

case "${1:-all}" in
    setup) setup ;;
    lib) setup; cargo build --release --features cuda ;;
    tests) setup; build_tests ;;
    benches) setup; build_benches ;;
    all) setup; build_tests; build_benches ;;
    env) setup >&2; echo "export CUDA_HOME=$CUDA_HOME PATH=$CUDA_HOME/bin:\$PATH CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP" ;;
    *) echo "usage: $0 [setup|lib|tests|benches|all|env]" >&2; exit 2 ;;
esac
