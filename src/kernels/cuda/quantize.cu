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

#include "octet.cuh"

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

// ---------------------------------------------------------------------------------------
// Device-resident int4 quantize (`CudaQuantizedWeight::quantize`): statistics, parameters,
// codes in ONE kernel, nothing read back but a status word.
//
// A *segment* of S lanes (S a power of two ≤ 32 dividing group_len / 8, so xor shuffles stay
// inside it; at most group_len / 32 so that a lane has four octets or more to amortise the
// per-group parameter work over) owns one group: each lane loads eight consecutive weights at
// a time (one 16-byte load for f16/bf16), the segment reduces min / max / finiteness by shuffles, every lane then
// derives the group's parameters itself (same inputs, same operations: no broadcast) and
// encodes its weights into one 32-bit word of eight codes. The parameter arithmetic is
// `UniformParams::from_range` / `store_scale_up` / `encode_nearest` (src/quant/grid.rs)
// operation by operation with IEEE-rounded intrinsics, so the result is the CPU's bit for bit.

// Chunks of eight weights a lane keeps in registers between the two passes; longer groups
// re-read the rest (it is still in L1/L2: the same warp read it microseconds before).
#define QL_Q_CACHED 4

// `round_to_i32` of src/quant/grid.rs: the 1.5·2^23 trick, round-half-to-even.
__device__ __forceinline__ int32_t ql_rne(float t) {
    return __float_as_int(__fadd_rn(t, 12582912.0f)) - 0x4B400000;
}

// `store_scale_up`: round a non-negative scale up to the storage dtype (0 f32, 1 f16,
// 2 bf16); NaN when it does not fit (the caller flags the overflow).
__device__ __forceinline__ float ql_store_scale_up(float x, uint32_t dtype) {
    if (!isfinite(x)) {
        return __int_as_float(0x7FC00000);
    }
    float v = x;
    if (dtype == 1) {
        __half h = __float2half_rn(x);
        if (__half2float(h) < x) {
            h = __ushort_as_half((unsigned short)(__half_as_ushort(h) + 1));
        }
        v = __half2float(h);
    } else if (dtype == 2) {
        __nv_bfloat16 h = __float2bfloat16_rn(x);
        if (__bfloat162float(h) < x) {
            h = __ushort_as_bfloat16((unsigned short)(__bfloat16_as_ushort(h) + 1));
        }
        v = __bfloat162float(h);
    }
    return isfinite(v) ? v : __int_as_float(0x7FC00000);
}

// Min, max and a finiteness probe of one octet folded into `lo`, `hi`, `probe`: `v·0` is 0
// for finite v and NaN otherwise, so `probe` (a sum of them) is NaN iff a weight is not
// finite (one FMA per weight instead of a classify and an OR). Halves work on pairs.
__device__ __forceinline__ void ql_octet_stats(const QlOctet<float> &o, float &lo, float &hi,
                                               float &probe) {
#pragma unroll
    for (int k = 0; k < 8; ++k) {
        lo = fminf(lo, o.v[k]);
        hi = fmaxf(hi, o.v[k]);
        probe = __fmaf_rn(o.v[k], 0.0f, probe);
    }
}
template <typename T, typename T2>
__device__ __forceinline__ void ql_octet_stats2(const QlOctet<T> &o, T2 zero2, float &lo,
                                                float &hi, float &probe) {
    const T2 *p = reinterpret_cast<const T2 *>(o.v);
    T2 mn = __hmin2(__hmin2(p[0], p[1]), __hmin2(p[2], p[3]));
    T2 mx = __hmax2(__hmax2(p[0], p[1]), __hmax2(p[2], p[3]));
    T2 pr = __hmul2(p[0], zero2);
    pr = __hfma2(p[1], zero2, pr);
    pr = __hfma2(p[2], zero2, pr);
    pr = __hfma2(p[3], zero2, pr);
    lo = fminf(lo, fminf(to_f32(mn.x), to_f32(mn.y)));
    hi = fmaxf(hi, fmaxf(to_f32(mx.x), to_f32(mx.y)));
    probe = __fadd_rn(probe, __fadd_rn(to_f32(pr.x), to_f32(pr.y)));
}
__device__ __forceinline__ void ql_octet_stats(const QlOctet<__half> &o, float &lo, float &hi,
                                               float &probe) {
    ql_octet_stats2<__half, __half2>(o, __float2half2_rn(0.0f), lo, hi, probe);
}
__device__ __forceinline__ void ql_octet_stats(const QlOctet<__nv_bfloat16> &o, float &lo,
                                               float &hi, float &probe) {
    ql_octet_stats2<__nv_bfloat16, __nv_bfloat162>(o, __float2bfloat162_rn(0.0f), lo, hi,
                                                    probe);
}

// `w / d` correctly rounded, given r = RN(1/d) and d in [2^-100, 2^100] with |w/d| ≤ 16:
// the fast path of nvcc's own `div.rn.f32` (a product and two FMA corrections, exact in this
// range since no intermediate under- or overflows; only a quotient below 2^-24 may come out
// off, and it rounds to code `zero` either way), without its range check and slow path.
__device__ __forceinline__ float ql_div_fast(float w, float d, float r) {
    float q = __fmul_rn(w, r);
    float e = __fmaf_rn(-d, q, w);
    q = __fmaf_rn(r, e, q);
    e = __fmaf_rn(-d, q, w);
    return __fmaf_rn(r, e, q);
}

template <bool FAST, typename T>
__device__ __forceinline__ uint32_t ql_encode_octet(const QlOctet<T> &o, float d,
                                                    float r, float qlo, float qhi,
                                                    int32_t zero_minus_magic) {
    uint32_t word = 0;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
        const float w = to_f32(o.v[k]);
        float t = FAST ? ql_div_fast(w, d, r) : __fdiv_rn(w, d);
        t = t < qlo ? qlo : t;
        t = t > qhi ? qhi : t;
        const uint32_t c = (uint32_t)(__float_as_int(__fadd_rn(t, 12582912.0f)) + zero_minus_magic);
        word |= (c & 0xFu) << (4 * k);
    }
    return word;
}

template <bool FAST, typename T>
__device__ __forceinline__ void ql_encode_group(const T *__restrict__ xg,
                                                const QlOctet<T> (&cache)[QL_Q_CACHED],
                                                uint32_t lane, uint32_t seg, uint32_t octets,
                                                float d, float r, float qlo, float qhi,
                                                int32_t zm, uint32_t *__restrict__ out) {
    if (octets == QL_Q_CACHED * seg) {
        // Exactly four octets per lane, held contiguously (see the loads): one 16-byte store.
        uint4 v;
        v.x = ql_encode_octet<FAST>(cache[0], d, r, qlo, qhi, zm);
        v.y = ql_encode_octet<FAST>(cache[1], d, r, qlo, qhi, zm);
        v.z = ql_encode_octet<FAST>(cache[2], d, r, qlo, qhi, zm);
        v.w = ql_encode_octet<FAST>(cache[3], d, r, qlo, qhi, zm);
        reinterpret_cast<uint4 *>(out)[lane] = v;
        return;
    }
#pragma unroll
    for (uint32_t j = 0; j < QL_Q_CACHED; ++j) {
        const uint32_t c = lane + j * seg;
        if (c < octets) {
            out[c] = ql_encode_octet<FAST>(cache[j], d, r, qlo, qhi, zm);
        }
    }
    for (uint32_t c = lane + QL_Q_CACHED * seg; c < octets; c += seg) {
        out[c] = ql_encode_octet<FAST>(ql_load_octet(xg + 8 * (uint64_t)c), d, r, qlo, qhi, zm);
    }
}

template <typename T>
__device__ void quantize_u4(const T *__restrict__ x, uint64_t groups, uint32_t group_len,
                            uint32_t seg_log2, uint32_t symmetric, uint32_t scale_dtype,
                            uint32_t *__restrict__ codes, float *__restrict__ scales,
                            uint8_t *__restrict__ zeros, uint32_t *__restrict__ status) {
    const uint64_t tid = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const uint32_t seg = 1u << seg_log2;
    const uint64_t g = tid >> seg_log2;
    const uint32_t lane = (uint32_t)tid & (seg - 1);
    // Segments never straddle a warp (seg divides 32), so a whole segment exits together
    // and the shuffles below only involve live lanes of live segments.
    const unsigned live = __ballot_sync(0xffffffffu, g < groups);
    if (g >= groups) {
        return;
    }
    const uint32_t octets = group_len / 8;
    const T *xg = x + g * group_len;
    // Octet c = lane + j·seg of the group: the first QL_Q_CACHED stay in registers (fully
    // unrolled, so no dynamic register indexing), the rest are re-read in the second pass.
    QlOctet<T> cache[QL_Q_CACHED];
    float lo = INFINITY, hi = -INFINITY, probe = 0.0f;
    // When the group is exactly four octets per lane, lane l holds octets 4l .. 4l+3 (so its
    // four code words are one 16-byte store); otherwise octets lane + j·seg (coalesced).
    const bool whole = octets == QL_Q_CACHED * seg;
#pragma unroll
    for (uint32_t j = 0; j < QL_Q_CACHED; ++j) {
        const uint32_t c = whole ? lane * QL_Q_CACHED + j : lane + j * seg;
        if (c < octets) {
            cache[j] = ql_load_octet(xg + 8 * (uint64_t)c);
        }
    }
#pragma unroll
    for (uint32_t j = 0; j < QL_Q_CACHED; ++j) {
        if (lane + j * seg < octets) {
            ql_octet_stats(cache[j], lo, hi, probe);
        }
    }
    for (uint32_t c = lane + QL_Q_CACHED * seg; c < octets; c += seg) {
        ql_octet_stats(ql_load_octet(xg + 8 * (uint64_t)c), lo, hi, probe);
    }
    for (uint32_t s = seg / 2; s > 0; s >>= 1) {
        lo = fminf(lo, __shfl_xor_sync(live, lo, s));
        hi = fmaxf(hi, __shfl_xor_sync(live, hi, s));
        probe = __fadd_rn(probe, __shfl_xor_sync(live, probe, s));
    }

    // UniformParams::from_range (4 bits).
    float raw, num, qmax;
    if (symmetric) {
        qmax = 7.0f;
        num = fmaxf(fabsf(lo), fabsf(hi));
    } else {
        qmax = 15.0f;
        num = __fsub_rn(fmaxf(hi, 0.0f), fminf(lo, 0.0f));
    }
    raw = __fdiv_rn(num, qmax);
    if (raw == 0.0f && num > 0.0f) {
        raw = __int_as_float(1); // positive_ratio: a subnormal range never gives scale 0
    }
    const float scale = ql_store_scale_up(raw, scale_dtype);
    int32_t zero;
    float qlo, qhi;
    if (symmetric) {
        zero = 8;
        qlo = -7.0f;
        qhi = 7.0f;
    } else {
        zero = 0;
        if (scale > 0.0f) {
            zero = min(max(ql_rne(__fdiv_rn(-fminf(lo, 0.0f), scale)), 0), 15);
        }
        qlo = -(float)zero;
        qhi = 15.0f - (float)zero;
    }
    const float d = scale > 0.0f ? scale : 1.0f;
    const bool fast = d >= 0x1p-100f && d <= 0x1p100f;
    const float r = __frcp_rn(d);
    if (lane == 0) {
        const uint32_t flags = (isnan(probe) ? 1u : 0u) | (isnan(scale) ? 2u : 0u);
        if (flags) {
            atomicOr(status, flags);
        }
        scales[g] = scale;
        if (!symmetric) {
            zeros[g] = (uint8_t)zero;
        }
    }

    // UniformParams::encode_nearest, eight codes to one little-endian word; the division's
    // path is chosen once per group, outside the loops.
    uint32_t *out = codes + g * octets;
    const int32_t zm = zero - 0x4B400000;
    if (fast) {
        ql_encode_group<true>(xg, cache, lane, seg, octets, d, r, qlo, qhi, zm, out);
    } else {
        ql_encode_group<false>(xg, cache, lane, seg, octets, d, r, qlo, qhi, zm, out);
    }
}

#define QUANT_U4_KERNEL(SUFFIX, T)                                                             \
    extern "C" __global__ void __launch_bounds__(256) ql_quantize_u4_##SUFFIX(                 \
        const T *__restrict__ x, uint64_t groups, uint32_t group_len, uint32_t seg_log2,      \
        uint32_t symmetric, uint32_t scale_dtype, uint32_t *codes, float *scales,              \
        uint8_t *zeros, uint32_t *status) {                                                    \
        quantize_u4<T>(x, groups, group_len, seg_log2, symmetric, scale_dtype, codes, scales,  \
                       zeros, status);                                                         \
    }

QUANT_U4_KERNEL(f32, float)
QUANT_U4_KERNEL(f16, __half)
QUANT_U4_KERNEL(bf16, __nv_bfloat16)
