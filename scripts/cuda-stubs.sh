#!/bin/bash
# Link-time stub libraries for cudarc's `dynamic-linking` mode (what candle-core's `cuda` feature selects).
# usage: cuda-stubs.sh <CUDA_HOME> <cudarc source dir> [all|cuda]
#   cuda: only libcuda.so (driver; never shipped in wheels)
#   all : also libcublas/libcublasLt/libcurand/libnvrtc (saves ~950 MB of wheels)
# The stubs are written to $CUDA_HOME/lib/stubs (a dir cudarc's build.rs searches) and carry the
# same SONAME and symbol-version node as the real libraries, so the binary's dynamic section is
# identical to one linked against the real libraries.
set -euo pipefail
CUDA_HOME=$1; SRC=$2/src; WHAT=${3:-cuda}
OUT=$CUDA_HOME/lib/stubs; mkdir -p "$OUT"; T=$(mktemp -d)
stub() { # <link name> <soname> <sys module> <version node or ->
  grep -oP '^\s*pub unsafe fn \K\w+' "$SRC/$3/sys/mod.rs" | sort -u | awk '{print "void " $1 "(void) {}"}' > "$T/s.c"
  local vs=()
  if [ "$4" != - ]; then echo "$4 { global: *; };" > "$T/v.map"; vs=(-Wl,--version-script="$T/v.map"); fi
  gcc -shared -fPIC -o "$OUT/$1" "$T/s.c" -Wl,-soname,"$2" "${vs[@]}"
  echo "stub $OUT/$1 ($2, $(wc -l < "$T/s.c") symbols)"
}
stub libcuda.so libcuda.so.1 driver -
if [ "$WHAT" = all ]; then
  stub libcublas.so   libcublas.so.13   cublas   libcublas.so.13
  stub libcublasLt.so libcublasLt.so.13 cublaslt libcublasLt.so.13
  stub libcurand.so   libcurand.so.10   curand   libcurand.so.10
  stub libnvrtc.so    libnvrtc.so.13    nvrtc    libnvrtc.so.13
fi
# unversioned name for the runtime library candle-kernels links (-lcudart); wheels ship only .so.13
[ -e "$CUDA_HOME/lib/libcudart.so" ] || ln -s libcudart.so.13 "$CUDA_HOME/lib/libcudart.so"
rm -rf "$T"
