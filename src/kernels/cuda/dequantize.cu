// Group-wise dequantization of densely packed codes, one thread per element (grid-stride).
//
// Bit-identical to the CPU path (src/kernels/cpu/decode.rs): every value is computed with the
// same IEEE f32 operations in the same order. `__fmul_rn`/`__fadd_rn`/`__fdiv_rn` forbid nvcc
// from contracting a multiply and an add into one FMA (which would round once instead of
// twice) and pin division to IEEE round-to-nearest whatever the compiler flags.
//
// Code `i` of a `bits`-bit stream occupies bits [i*bits, i*bits + bits) of a little-endian bit
// string (src/quant/packing.rs), so it spans at most two bytes for bits <= 8.

#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

// How a code becomes a value; must match `Mode` in dequantize.rs.
#define MODE_UNIFORM 0 // scale * (q - zero[g])
#define MODE_AFFINE 1  // q * scale + offset[g], two roundings
#define MODE_TABLE 2   // scale * table[g / groups_per_table][q]

struct Params {
    uint64_t n;
    uint32_t bits;
    uint32_t group_len;
    uint32_t mode;
    uint32_t table_len;
    uint32_t groups_per_table;
    uint32_t cols; // 0: no input scales
};

__device__ __forceinline__ float decode_one(
    const uint8_t *__restrict__ codes, const float *__restrict__ scales,
    const int32_t *__restrict__ zeros, const float *__restrict__ aux,
    const float *__restrict__ in_scales, const Params &p, uint64_t i) {
    const uint64_t bit = i * p.bits;
    const uint64_t byte = bit >> 3;
    const uint32_t sh = (uint32_t)(bit & 7);
    uint32_t w = codes[byte];
    if (sh + p.bits > 8) {
        w |= ((uint32_t)codes[byte + 1]) << 8;
    }
    const uint32_t c = (w >> sh) & ((1u << p.bits) - 1u);
    const uint64_t g = i / p.group_len;
    const float scale = scales[g];
    float v;
    if (p.mode == MODE_UNIFORM) {
        v = __fmul_rn((float)((int32_t)c - zeros[g]), scale);
    } else if (p.mode == MODE_AFFINE) {
        v = __fadd_rn(__fmul_rn((float)c, scale), aux[g]);
    } else {
        const uint64_t t = g / p.groups_per_table;
        v = __fmul_rn(scale, aux[t * p.table_len + c]);
    }
    if (p.cols != 0) {
        v = __fdiv_rn(v, in_scales[i % p.cols]);
    }
    return v;
}

#define DEQUANT_KERNEL(NAME, T, CONVERT)                                                        \
    extern "C" __global__ void NAME(const uint8_t *__restrict__ codes,                          \
                                    const float *__restrict__ scales,                           \
                                    const int32_t *__restrict__ zeros,                          \
                                    const float *__restrict__ aux,                              \
                                    const float *__restrict__ in_scales, Params p,              \
                                    T *__restrict__ out) {                                      \
        const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;                               \
        for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < p.n;             \
             i += stride) {                                                                     \
            out[i] = CONVERT(decode_one(codes, scales, zeros, aux, in_scales, p, i));           \
        }                                                                                       \
    }

__device__ __forceinline__ float identity(float v) { return v; }

DEQUANT_KERNEL(ql_dequantize_f32, float, identity)
DEQUANT_KERNEL(ql_dequantize_f16, __half, __float2half_rn)
DEQUANT_KERNEL(ql_dequantize_bf16, __nv_bfloat16, __float2bfloat16_rn)
