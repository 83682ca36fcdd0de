// Group-wise round-to-nearest uniform quantization, in two kernels around a host step:
//
// 1. `ql_group_minmax[_warp]_*`: per group, min, max and "all finite" (one warp per group
//    up to `WARP_GROUP_MAX` elements, else one block per group).
// 2. The host computes each group's parameters with the very function the CPU kernel uses
//    (`UniformParams::from_range`), so scales and zero points are identical by construction.
// 3. `ql_encode_nearest_*`: each thread encodes eight consecutive weights (eight b-bit codes
//    fill exactly b bytes, src/quant/packing.rs) and writes their packed bytes.
//
// The encode follows `UniformParams::encode_nearest` (src/quant/grid.rs) operation by
// operation: IEEE division (`__fdiv_rn`), clamp, then round-half-to-even through the
// `1.5 * 2^23` trick with a round-to-nearest add (`__fadd_rn`, never contracted).

#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

#define MINMAX_THREADS 256

// One block per group of `group_len` consecutive elements.
template <typename T>
__device__ void group_minmax(const T *__restrict__ x, uint64_t group_len,
                             float *__restrict__ mn, float *__restrict__ mx,
                             uint8_t *__restrict__ finite) {
    __shared__ float smn[MINMAX_THREADS];
    __shared__ float smx[MINMAX_THREADS];
    __shared__ int sbad[MINMAX_THREADS];
    const uint64_t g = blockIdx.x;
    const T *xg = x + g * group_len;
    float lo = INFINITY, hi = -INFINITY;
    int bad = 0;
    for (uint64_t i = threadIdx.x; i < group_len; i += blockDim.x) {
        const float v = to_f32(xg[i]);
        bad |= !isfinite(v);
        lo = fminf(lo, v);
        hi = fmaxf(hi, v);
    }
    smn[threadIdx.x] = lo;
    smx[threadIdx.x] = hi;
    sbad[threadIdx.x] = bad;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            smn[threadIdx.x] = fminf(smn[threadIdx.x], smn[threadIdx.x + s]);
            smx[threadIdx.x] = fmaxf(smx[threadIdx.x], smx[threadIdx.x + s]);
            sbad[threadIdx.x] |= sbad[threadIdx.x + s];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        mn[g] = smn[0];
        mx[g] = smx[0];
        finite[g] = sbad[0] ? 0 : 1;
    }
}


// One warp per group, eight groups per block: for the usual short groups (32 … 4096
// elements) a whole block per group would leave most threads idle.
template <typename T>
__device__ void group_minmax_warp(const T *__restrict__ x, uint64_t group_len, uint64_t groups,
                                  float *__restrict__ mn, float *__restrict__ mx,
                                  uint8_t *__restrict__ finite) {
    const uint64_t g = (uint64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const unsigned lane = threadIdx.x % 32;
    if (g >= groups) {
        return; // whole warps exit together: g is uniform across a warp
    }
    const T *xg = x + g * group_len;
    float lo = INFINITY, hi = -INFINITY;
    int bad = 0;
    for (uint64_t i = lane; i < group_len; i += 32) {
        const float v = to_f32(xg[i]);
        bad |= !isfinite(v);
        lo = fminf(lo, v);
        hi = fmaxf(hi, v);
    }
    for (int s = 16; s > 0; s >>= 1) {
        lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, s));
        hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, s));
        bad |= __shfl_xor_sync(0xffffffffu, bad, s);
    }
    if (lane == 0) {
        mn[g] = lo;
        mx[g] = hi;
        finite[g] = bad ? 0 : 1;
    }
}

template <typename T>
__device__ void encode_nearest(const T *__restrict__ x, uint64_t n, uint32_t bits,
                               uint64_t group_len, const float *__restrict__ divisor,
                               const int32_t *__restrict__ zero, const float *__restrict__ lo,
                               const float *__restrict__ hi, uint8_t *__restrict__ out) {
    const bool aligned = (reinterpret_cast<uintptr_t>(x) % 16) == 0;
    const uint64_t octets = (n + 7) / 8;
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    for (uint64_t o = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; o < octets; o += stride) {
        uint64_t word = 0;
        const uint64_t i0 = o * 8;
        const uint32_t count = (uint32_t)min((uint64_t)8, n - i0);
        // The octet's weights, read with 16-byte loads when it is whole (i0 is a multiple of
        // 8 and the tensor's start is 16-byte aligned, checked by the caller).
        union {
            T v[8];
            uint4 u[sizeof(T) / 2];
        } buf;
        if (count == 8 && aligned) {
            const uint4 *src = reinterpret_cast<const uint4 *>(x + i0);
#pragma unroll
            for (uint32_t w = 0; w < sizeof(T) / 2; ++w) {
                buf.u[w] = src[w];
            }
        } else {
            for (uint32_t k = 0; k < count; ++k) {
                buf.v[k] = x[i0 + k];
            }
        }
        uint64_t g = i0 / group_len;
        uint64_t group_end = (g + 1) * group_len;
        for (uint32_t k = 0; k < count; ++k) {
            const uint64_t i = i0 + k;
            if (i == group_end) {
                ++g;
                group_end += group_len;
            }
            float t = __fdiv_rn(to_f32(buf.v[k]), divisor[g]);
            t = t < lo[g] ? lo[g] : t;
            t = t > hi[g] ? hi[g] : t;
            const int32_t r = __float_as_int(__fadd_rn(t, 12582912.0f)) - 0x4B400000;
            const uint64_t c = (uint64_t)(uint8_t)(r + zero[g]);
            word |= c << (k * bits);
        }
        // Bytes of this octet: `bits` for a full one, ceil(count * bits / 8) for the last.
        const uint32_t nbytes = (count * bits + 7) / 8;
        uint8_t *dst = out + o * bits;
        for (uint32_t b = 0; b < nbytes; ++b) {
            dst[b] = (uint8_t)(word >> (8 * b));
        }
    }
}

#define QUANT_KERNELS(SUFFIX, T)                                                               \
    extern "C" __global__ void ql_group_minmax_##SUFFIX(const T *__restrict__ x,               \
                                                        uint64_t group_len, float *mn,         \
                                                        float *mx, uint8_t *finite) {          \
        group_minmax<T>(x, group_len, mn, mx, finite);                                         \
    }                                                                                          \
    extern "C" __global__ void ql_group_minmax_warp_##SUFFIX(                                  \
        const T *__restrict__ x, uint64_t group_len, uint64_t groups, float *mn, float *mx,    \
        uint8_t *finite) {                                                                     \
        group_minmax_warp<T>(x, group_len, groups, mn, mx, finite);                            \
    }                                                                                          \
    extern "C" __global__ void ql_encode_nearest_##SUFFIX(                                     \
        const T *__restrict__ x, uint64_t n, uint32_t bits, uint64_t group_len,                \
        const float *divisor, const int32_t *zero, const float *lo, const float *hi,           \
        uint8_t *out) {                                                                        \
        encode_nearest<T>(x, n, bits, group_len, divisor, zero, lo, hi, out);                  \
    }

QUANT_KERNELS(f32, float)
QUANT_KERNELS(f16, __half)
QUANT_KERNELS(bf16, __nv_bfloat16)
