// Group-wise dequantization of densely packed codes, one thread per eight codes (grid-stride).
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

#include "int4.cuh"

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

template <typename T, typename I, typename F>
__device__ __forceinline__ void decode_octets(const uint8_t *__restrict__ codes,
                                              const float *__restrict__ scales,
                                              const int32_t *__restrict__ zeros,
                                              const float *__restrict__ aux,
                                              const float *__restrict__ in_scales,
                                              const Params &p, T *__restrict__ out, F convert) {
    const I n = (I)p.n;
    const I octets = (n + 7) / 8;
    const I stride = (I)gridDim.x * blockDim.x;
    const uint32_t mask = (1u << p.bits) - 1u;
    for (I o = (I)blockIdx.x * blockDim.x + threadIdx.x; o < octets; o += stride) {
        const I i0 = o * 8;
        const uint32_t count = (uint32_t)min((I)8, n - i0);
        const uint32_t nbytes = (count * p.bits + 7) / 8;
        const uint8_t *src = codes + (uint64_t)o * p.bits;
        uint64_t word = 0;
        for (uint32_t b = 0; b < nbytes; ++b) {
            word |= ((uint64_t)src[b]) << (8 * b);
        }
        I g = i0 / p.group_len;
        I group_end = (g + 1) * (I)p.group_len;
        I col = p.cols ? i0 % p.cols : 0;
        // The octet's values, stored with 16-byte writes when it is whole (i0 is a multiple
        // of 8, so `out + i0` is 16-byte aligned for 2-byte and 32-byte for 4-byte types).
        union {
            T v[8];
            uint4 u[sizeof(T) / 2];
        } buf;
        for (uint32_t k = 0; k < count; ++k) {
            const I i = i0 + k;
            if (i == group_end) {
                ++g;
                group_end += p.group_len;
            }
            const uint32_t c = (uint32_t)(word >> (k * p.bits)) & mask;
            const float scale = scales[g];
            float v;
            if (p.mode == MODE_UNIFORM) {
                v = __fmul_rn((float)((int32_t)c - zeros[g]), scale);
            } else if (p.mode == MODE_AFFINE) {
                v = __fadd_rn(__fmul_rn((float)c, scale), aux[g]);
            } else {
                const I t = g / p.groups_per_table;
                v = __fmul_rn(scale, aux[(uint64_t)t * p.table_len + c]);
            }
            if (p.cols != 0) {
                v = __fdiv_rn(v, in_scales[col]);
                col = col + 1 == p.cols ? 0 : col + 1;
            }
            buf.v[k] = convert(v);
        }
        if (count == 8) {
            uint4 *dst = reinterpret_cast<uint4 *>(out + i0);
#pragma unroll
            for (uint32_t w = 0; w < sizeof(T) / 2; ++w) {
                dst[w] = buf.u[w];
            }
        } else {
            for (uint32_t k = 0; k < count; ++k) {
                out[i0 + k] = buf.v[k];
            }
        }
    }
}

#define DEQUANT_KERNEL(NAME, T, CONVERT)                                                        \
    extern "C" __global__ void NAME(const uint8_t *__restrict__ codes,                          \
                                    const float *__restrict__ scales,                           \
                                    const int32_t *__restrict__ zeros,                          \
                                    const float *__restrict__ aux,                              \
                                    const float *__restrict__ in_scales, Params p,              \
                                    T *__restrict__ out) {                                      \
        auto convert = [](float v) { return CONVERT(v); };                                      \
        if (p.n < (1ull << 31)) {                                                               \
            decode_octets<T, uint32_t>(codes, scales, zeros, aux, in_scales, p, out, convert);  \
        } else {                                                                                \
            decode_octets<T, uint64_t>(codes, scales, zeros, aux, in_scales, p, out, convert);  \
        }                                                                                       \
    }

__device__ __forceinline__ float identity(float v) { return v; }

DEQUANT_KERNEL(ql_dequantize_f32, float, identity)
DEQUANT_KERNEL(ql_dequantize_f16, __half, __float2half_rn)
DEQUANT_KERNEL(ql_dequantize_bf16, __nv_bfloat16, __float2bfloat16_rn)

// ---------------------------------------------------------------------------------------------
// Fast path: uniform 4-bit codes whose groups are whole words of 8 codes (group length and
// element count multiples of 8), without input scales. Each warp decodes 128 consecutive
// 32-bit words (1024 codes): lane L takes words L, L+32, L+64, L+96, so every load and every
// store instruction of the warp touches one contiguous span (128 bytes of codes, 512 bytes of
// bf16/f16), all four loads are in flight before the first decode, and there is no
// per-element branch. Same f32 expression as the generic kernel, `scale * (float)(q - zero)`,
// so the result is bit-identical; `(float)(q - zero)` is formed exactly by `ql_decode8`.
#define U4_WORDS_PER_LANE 4

template <typename T, bool ASYM>
__device__ __forceinline__ void dequant_u4(const uint32_t *__restrict__ codes,
                                           const float *__restrict__ scales,
                                           const uint8_t *__restrict__ zeros, int32_t zero,
                                           uint32_t words, uint32_t words_per_group,
                                           T *__restrict__ out) {
    const uint32_t lane = threadIdx.x & 31u;
    const uint32_t base = (blockIdx.x * blockDim.x + (threadIdx.x & ~31u)) * U4_WORDS_PER_LANE;
    uint32_t w[U4_WORDS_PER_LANE];
#pragma unroll
    for (int j = 0; j < U4_WORDS_PER_LANE; ++j) {
        const uint32_t idx = base + j * 32 + lane;
        w[j] = idx < words ? __ldg(codes + idx) : 0u;
    }
    typedef typename QlPair<T>::type P;
    if constexpr (sizeof(T) == 4) {
        // f32: a word decodes to 32 bytes. For contiguous 512-byte store instructions, lane L
        // stores half (L & 1) of word L/2 (first store) and of word 16 + L/2 (second), taking
        // those words from their lanes with a shuffle.
#pragma unroll
        for (int j = 0; j < U4_WORDS_PER_LANE; ++j) {
            const uint32_t first = base + j * 32;
            if (first >= words) {
                break;
            }
#pragma unroll
            for (int s = 0; s < 2; ++s) {
                const uint32_t src = s * 16 + (lane >> 1);
                const uint32_t word = __shfl_sync(0xffffffffu, w[j], src);
                const uint32_t idx = first + src;
                if (idx < words) {
                    const uint32_t g = idx / words_per_group;
                    const float scale = scales[g];
                    const float magic = QL_MAGIC + (float)(ASYM ? (int32_t)zeros[g] : zero);
                    float d[8];
                    ql_decode8(word, magic, d);
                    const int h = (lane & 1) * 4;
                    const float4 v = make_float4(__fmul_rn(d[h], scale), __fmul_rn(d[h + 1], scale),
                                                 __fmul_rn(d[h + 2], scale), __fmul_rn(d[h + 3], scale));
                    reinterpret_cast<float4 *>(out)[(uint64_t)idx * 2 + (lane & 1)] = v;
                }
            }
        }
    } else {
#pragma unroll
    for (int j = 0; j < U4_WORDS_PER_LANE; ++j) {
        const uint32_t idx = base + j * 32 + lane;
        if (idx >= words) {
            break;
        }
        const uint32_t g = idx / words_per_group;
        const float scale = scales[g];
        const float magic = QL_MAGIC + (float)(ASYM ? (int32_t)zeros[g] : zero);
        float d[8];
        ql_decode8(w[j], magic, d);
        // 8 values of 2 bytes: one 16-byte store.
        union {
            P p[4];
            uint4 u;
        } buf;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            buf.p[k] = QlPair<T>::make(__fmul_rn(d[2 * k], scale), __fmul_rn(d[2 * k + 1], scale));
        }
        reinterpret_cast<uint4 *>(out)[idx] = buf.u;
    }
    }
}

// zeros == nullptr: symmetric, every group has zero point `zero`.
#define DEQUANT_U4_KERNEL(NAME, T)                                                              \
    extern "C" __global__ void NAME(const uint32_t *__restrict__ codes,                         \
                                    const float *__restrict__ scales,                           \
                                    const uint8_t *__restrict__ zeros, int32_t zero,            \
                                    uint32_t words, uint32_t words_per_group,                   \
                                    T *__restrict__ out) {                                      \
        if (zeros) {                                                                            \
            dequant_u4<T, true>(codes, scales, zeros, zero, words, words_per_group, out);       \
        } else {                                                                                \
            dequant_u4<T, false>(codes, scales, zeros, zero, words, words_per_group, out);      \
        }                                                                                       \
    }

DEQUANT_U4_KERNEL(ql_dequantize_u4_f32, float)
DEQUANT_U4_KERNEL(ql_dequantize_u4_f16, __half)
DEQUANT_U4_KERNEL(ql_dequantize_u4_bf16, __nv_bfloat16)
