// Per-row cross-entropy of logits [rows, cols] in one pass: one block per row, a streaming
// log-sum-exp per thread, one block reduction, then the loss in f64 by thread 0.
//
// Same formulation as the CPU kernel (src/kernels/cpu/cross_entropy.rs): the target is left
// out of the streaming state (m = max_{i≠t} x_i, s = Σ_{i≠t} exp(x_i − m)) and the loss is
// ln(1 + s·e^{m − x_t}) with log1p, so a dominant target keeps its tiny loss to full relative
// precision instead of cancelling in lse − x_t. Chunks of 8 logits: one max, one rescale of s
// when the max grows, 8 exp2 (MUFU, 2 ulp) summed in f32, then added to an f64 running sum.
//
// Special values as on the CPU: −∞ logits contribute nothing; a −∞ target gives +∞; a NaN or
// +∞ logit makes the row NaN (the host then names the element). A target outside 0..cols is
// recorded in `*bad` as UINT32_MAX − row, the largest value kept, so the smallest such row wins
// and a zeroed buffer means none (no upload needed to initialise it); its row is NaN, unless `skip` is set and the
// target is the all-ones value (UINT32_MAX / -1), which marks a row that is not read (loss 0).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "int4.cuh"

#define CE_THREADS 256
#define CE_UNROLL 4
#define CE_LOG2E 1.4426950408889634f

struct CeState {
    float m;  // max of the logits seen (−∞ at start)
    double s; // Σ exp(x − m)
};

__device__ __forceinline__ CeState ce_combine(CeState a, CeState b) {
    const float m = fmaxf(a.m, b.m);
    // An operand already at the max (both −∞ included) contributes its sum unscaled.
    const double sa = a.m == m ? a.s : a.s * (double)exp2f((a.m - m) * CE_LOG2E);
    const double sb = b.m == m ? b.s : b.s * (double)exp2f((b.m - m) * CE_LOG2E);
    // fmaxf drops a NaN max; a NaN row is still NaN through its sum.
    return CeState{m, sa + sb};
}

// Fold 8 logits (the target already replaced by −∞) into the state.
__device__ __forceinline__ void ce_push8(CeState &st, const float v[8]) {
    float cm = v[0];
#pragma unroll
    for (int e = 1; e < 8; ++e) {
        cm = fmaxf(cm, v[e]);
    }
    if (cm > st.m) {
        st.s *= (double)exp2f((st.m - cm) * CE_LOG2E);
        st.m = cm;
    }
    // While the max is −∞ every finite-free logit is −∞ (term 0) or NaN (term NaN).
    const float ms = st.m == -INFINITY ? 0.0f : st.m;
    float part = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
        part += exp2f((v[e] - ms) * CE_LOG2E);
    }
    st.s += (double)part;
}

template <typename T>
__device__ __forceinline__ void ce_load8(const T *__restrict__ row, uint32_t c, uint32_t cols,
                                         bool vec, uint32_t t, float v[8]) {
    const uint32_t i0 = c * 8;
    if (vec && i0 + 8 <= cols) {
        constexpr int PER = 16 / sizeof(T);
        const uint4 *p = reinterpret_cast<const uint4 *>(row + i0);
#pragma unroll
        for (int q = 0; q < 8 / PER; ++q) {
            union {
                uint4 u;
                T t[PER];
            } b;
            b.u = __ldcs(p + q); // streamed once: evict first
#pragma unroll
            for (int e = 0; e < PER; ++e) {
                v[q * PER + e] = ql_to_f32(b.t[e]);
            }
        }
    } else {
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            v[e] = i0 + e < cols ? ql_to_f32(row[i0 + e]) : -INFINITY;
        }
    }
    if (t - i0 < 8u) {
        v[t - i0] = -INFINITY;
    }
}

__device__ __forceinline__ bool ce_in_range(uint32_t t, uint32_t cols) { return t < cols; }
__device__ __forceinline__ bool ce_in_range(int64_t t, uint32_t cols) {
    return t >= 0 && t < (int64_t)cols;
}

template <typename T, typename I>
__device__ __forceinline__ void ce_row(const T *__restrict__ logits, const I *__restrict__ targets,
                                       uint32_t cols, uint32_t vec, uint32_t skip,
                                       float *__restrict__ out, uint32_t *__restrict__ bad) {
    const uint32_t r = blockIdx.x;
    const I tt = targets[r];
    if (skip && tt == (I)-1) {
        if (threadIdx.x == 0) {
            out[r] = 0.0f;
        }
        return;
    }
    if (!ce_in_range(tt, cols)) {
        if (threadIdx.x == 0) {
            out[r] = __int_as_float(0x7fc00000);
            atomicMax(bad, 0xFFFFFFFFu - r);
        }
        return;
    }
    const uint32_t t = (uint32_t)tt;
    const T *row = logits + (uint64_t)r * cols;
    const uint32_t chunks = (cols + 7) / 8;
    CeState st{-INFINITY, 0.0};
    for (uint32_t c0 = threadIdx.x; c0 < chunks; c0 += CE_THREADS * CE_UNROLL) {
        float v[CE_UNROLL][8];
#pragma unroll
        for (int u = 0; u < CE_UNROLL; ++u) {
            const uint32_t c = c0 + u * CE_THREADS;
            if (c < chunks) {
                ce_load8(row, c, cols, vec != 0, t, v[u]);
            } else {
#pragma unroll
                for (int e = 0; e < 8; ++e) {
                    v[u][e] = -INFINITY;
                }
            }
        }
#pragma unroll
        for (int u = 0; u < CE_UNROLL; ++u) {
            ce_push8(st, v[u]);
        }
    }
    // Warp, then block reduction of (m, s).
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        CeState o;
        o.m = __shfl_xor_sync(0xffffffffu, st.m, off);
        o.s = __shfl_xor_sync(0xffffffffu, st.s, off);
        st = ce_combine(st, o);
    }
    __shared__ float sm[CE_THREADS / 32];
    __shared__ double ss[CE_THREADS / 32];
    const uint32_t lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    if (lane == 0) {
        sm[warp] = st.m;
        ss[warp] = st.s;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        CeState acc{sm[0], ss[0]};
        for (int w = 1; w < CE_THREADS / 32; ++w) {
            acc = ce_combine(acc, CeState{sm[w], ss[w]});
        }
        const float xt = ql_to_f32(row[t]);
        float loss;
        if (isnan(xt) || xt == INFINITY || acc.m == INFINITY || isnan(acc.s)) {
            loss = __int_as_float(0x7fc00000);
        } else if (xt == -INFINITY) {
            loss = INFINITY;
        } else if (acc.s == 0.0) {
            loss = 0.0f;
        } else {
            const double d = (double)acc.m - (double)xt;
            // ln(1 + S) with S = s·e^d; beyond e^700 ln S = ln s + d (e^d would overflow).
            loss = d < 700.0 ? (float)log1p(acc.s * exp(d)) : (float)(log(acc.s) + d);
        }
        out[r] = loss;
    }
}

#define CE_KERNEL(NAME, T, I)                                                                   \
    extern "C" __global__ void __launch_bounds__(CE_THREADS)                                    \
        NAME(const T *__restrict__ logits, const I *__restrict__ targets, uint32_t cols,        \
             uint32_t vec, uint32_t skip, float *__restrict__ out, uint32_t *__restrict__ bad) {\
        ce_row<T, I>(logits, targets, cols, vec, skip, out, bad);                               \
    }

CE_KERNEL(ql_cross_entropy_f32_u32, float, uint32_t)
CE_KERNEL(ql_cross_entropy_f16_u32, __half, uint32_t)
CE_KERNEL(ql_cross_entropy_bf16_u32, __nv_bfloat16, uint32_t)
CE_KERNEL(ql_cross_entropy_f32_i64, float, int64_t)
CE_KERNEL(ql_cross_entropy_f16_i64, __half, int64_t)
CE_KERNEL(ql_cross_entropy_bf16_i64, __nv_bfloat16, int64_t)
