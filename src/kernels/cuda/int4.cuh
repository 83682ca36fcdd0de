// Shared device helpers for packed 4-bit codes (two codes per byte, code i in bits
// [4i, 4i + 4) of a little-endian bit string, src/quant/packing.rs). A *chunk* is 32
// consecutive codes: one 16-byte `uint4`, so chunk loads are single vector loads.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

// 2^23 as a float: for an integer 0 <= c < 2^23, the float with bits 0x4B000000 | c is
// exactly 2^23 + c. Subtracting 2^23 + z (exact for z < 2^23) then gives (float)(c - z)
// exactly, without an I2F conversion (quarter-rate on sm_80+).
#define QL_MAGIC 8388608.0f

// Conversions with round-to-nearest-even (like the `half` crate on the host), one pair at a
// time: the paired instructions round each half exactly as the single ones do.
template <typename T> struct QlPair;
template <> struct QlPair<float> {
    typedef float2 type;
    static __device__ __forceinline__ float2 make(float a, float b) { return make_float2(a, b); }
};
template <> struct QlPair<__half> {
    typedef __half2 type;
    static __device__ __forceinline__ __half2 make(float a, float b) {
        return __floats2half2_rn(a, b);
    }
};
template <> struct QlPair<__nv_bfloat16> {
    typedef __nv_bfloat162 type;
    static __device__ __forceinline__ __nv_bfloat162 make(float a, float b) {
        return __floats2bfloat162_rn(a, b);
    }
};

// Widening loads of activations to f32.
__device__ __forceinline__ float ql_to_f32(float v) { return v; }
__device__ __forceinline__ float ql_to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float ql_to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

__device__ __forceinline__ float ql_from_f32(float v, float *) { return v; }
__device__ __forceinline__ __half ql_from_f32(float v, __half *) { return __float2half_rn(v); }
__device__ __forceinline__ __nv_bfloat16 ql_from_f32(float v, __nv_bfloat16 *) {
    return __float2bfloat16_rn(v);
}

// The eight codes of one 32-bit word, minus the zero point, as exact floats, in code order.
// `lo`/`hi` hold the even/odd codes one per byte; `__byte_perm` puts a byte under the
// exponent bits 0x4B (one PRMT per code instead of a shift and a mask).
__device__ __forceinline__ void ql_decode8(uint32_t w, float magic_plus_zero, float out[8]) {
    const uint32_t lo = w & 0x0F0F0F0Fu;
    const uint32_t hi = (w >> 4) & 0x0F0F0F0Fu;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const uint32_t sel = 0x7440u | (uint32_t)k;
        out[2 * k] = __fsub_rn(__uint_as_float(__byte_perm(lo, 0x4B000000u, sel)), magic_plus_zero);
        out[2 * k + 1] =
            __fsub_rn(__uint_as_float(__byte_perm(hi, 0x4B000000u, sel)), magic_plus_zero);
    }
}
