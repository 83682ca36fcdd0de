// Fused dequantize-matmul y = x · Wᵀ for uniform 4-bit weights W [n, k] (packed codes, one f32
// scale and one zero point per group of `group_len` codes along k, group_len a multiple of 32)
// and activations x [m, k] in f32/f16/bf16; y [m, n] in the activations' dtype.
//
// * `ql_gemv_u4_*_m<M>` (decode, M = 1..8 tokens): each warp owns 2 weight rows; each
//   lane streams one 32-code chunk per row per step (a 16-byte load, the next one already in
//   flight), decodes it word by word to exact (q - z) floats and reuses them for all M tokens;
//   the scale is applied once per chunk. f32 accumulation, one warp reduction at the end. The
//   weight is read exactly once.
// * `ql_mm_u4_*` (larger batches, f16/bf16 only): block tiles of the output; each step loads a
//   [BM, 64] tile of x and dequantizes a [BN, 64] tile of W to the activation dtype in shared
//   memory (the same values `dequantize` produces), then multiplies with tensor cores (WMMA
//   16x16x16, f32 accumulators). No cp.async pipelining yet.
#include <mma.h>

#include "int4.cuh"

struct MatmulDims {
    uint32_t m;                // tokens
    uint32_t n;                // weight rows = output features
    uint32_t k;                // input features, a multiple of 32
    uint32_t chunks_per_group; // group_len / 32
    uint32_t steps_per_split;  // tiled kernel: 64-wide k steps per blockIdx.z (split-k)
};

// 16-byte view of activations: 8 halves or 4 floats.
template <typename T> struct QlVec {
    static constexpr int PER16 = 16 / sizeof(T);
};

#define GEMV_WARPS 8
// Weight rows per warp: 4 for one token of f32 (each 32-byte activation load then feeds 4
// rows: 41.5 -> 25.8 us on 8192^2), 2 otherwise (for one bf16 token 4 rows measured 22.7 us
// against 21.5; from 2 tokens on 4 rows spill registers).
#define GEMV_ROWS(T, M) ((M) == 1 && sizeof(T) == 4 ? 4 : 2)

// Eight activations (one 32-bit word of codes) of token row `xr` at column `col`, as f32.
template <typename T>
__device__ __forceinline__ void ql_load8(const T *__restrict__ xr, uint32_t col, float out[8]);
// bf16 widens by placing its bits: the low half shifted up by an integer multiply, which ptxas
// puts partly on the FMA pipe (IMAD.U32), the high half masked. The generic conversion became
// two PRMTs on the ALU pipe, the busiest one here (code decode); one bf16 token: 20.4 -> 19.8 us.
template <>
__device__ __forceinline__ void ql_load8(const __nv_bfloat16 *__restrict__ xr, uint32_t col,
                                         float out[8]) {
    const uint4 b = __ldg(reinterpret_cast<const uint4 *>(xr + col));
    const uint32_t w[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        out[2 * i] = __uint_as_float(w[i] * 65536u);
        out[2 * i + 1] = __uint_as_float(w[i] & 0xFFFF0000u);
    }
}
template <typename T>
__device__ __forceinline__ void ql_load8(const T *__restrict__ xr, uint32_t col, float out[8]) {
    constexpr int PER = QlVec<T>::PER16;
    const uint4 *p = reinterpret_cast<const uint4 *>(xr + col);
#pragma unroll
    for (int v = 0; v < 8 / PER; ++v) {
        union {
            uint4 u;
            T t[PER];
        } b;
        b.u = __ldg(p + v);
#pragma unroll
        for (int e = 0; e < PER; ++e) {
            out[v * PER + e] = ql_to_f32(b.t[e]);
        }
    }
}

template <typename T, int M, bool ASYM>
__device__ __forceinline__ void gemv_u4(const T *__restrict__ x, const uint4 *__restrict__ codes,
                                        const float *__restrict__ scales,
                                        const uint8_t *__restrict__ zeros, int32_t zero,
                                        MatmulDims d, T *__restrict__ y) {
    constexpr int R = GEMV_ROWS(T, M);
    const uint32_t lane = threadIdx.x & 31u;
    const uint32_t warp = threadIdx.x >> 5;
    const uint32_t row0 = (blockIdx.x * GEMV_WARPS + warp) * R;
    if (row0 >= d.n) {
        return;
    }
    const uint32_t kc = d.k >> 5;                 // chunks per row
    const uint32_t gpr = kc / d.chunks_per_group; // groups per row
    // Rows past the end repeat the last row; their sums are never written.
    const uint4 *rowp[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        rowp[r] = codes + (uint64_t)min(row0 + r, d.n - 1) * kc;
    }
    float acc[M][R];
#pragma unroll
    for (int m = 0; m < M; ++m) {
#pragma unroll
        for (int r = 0; r < R; ++r) {
            acc[m][r] = 0.0f;
        }
    }
    // Software pipeline: the next chunk's codes, scales and zero points are in flight while
    // this one is multiplied (a scale fetched only when needed would put one DRAM latency in
    // every step).
    uint4 cur[R];
    float scale[R], magic[R];
    auto fetch = [&](uint32_t c, uint4 w[R], float sc[R], float mg[R]) {
        const uint32_t g = c / d.chunks_per_group;
#pragma unroll
        for (int r = 0; r < R; ++r) {
            w[r] = __ldg(rowp[r] + c);
            const uint64_t gi = (uint64_t)min(row0 + r, d.n - 1) * gpr + g;
            sc[r] = __ldg(scales + gi);
            mg[r] = QL_MAGIC + (float)(ASYM ? (int32_t)__ldg(zeros + gi) : zero);
        }
    };
    if (lane < kc) {
        fetch(lane, cur, scale, magic);
    }
    for (uint32_t c = lane; c < kc; c += 32) {
        uint4 nxt[R];
        float nscale[R], nmagic[R];
        // With two rows the fetch is unconditional (the last step re-reads its own chunk, a
        // cached and harmless load): ptxas sank the conditional fetch to the end of the step
        // to save registers under the 64-register cap, which left every step's load latency
        // exposed (one bf16 token: 21.7 -> 20.4 us). With four rows (one f32 token) the
        // unconditional fetch measured slower (25.7 -> 28.1 us), so it stays conditional.
        if (R == 2) {
            fetch(min(c + 32, kc - 1), nxt, nscale, nmagic);
        } else if (c + 32 < kc) {
            fetch(c + 32, nxt, nscale, nmagic);
        }
        float part[M][R];
#pragma unroll
        for (int m = 0; m < M; ++m) {
#pragma unroll
            for (int r = 0; r < R; ++r) {
                part[m][r] = 0.0f;
            }
        }
#pragma unroll
        for (int wi = 0; wi < 4; ++wi) {
            float q[R][8];
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const uint32_t word = wi == 0 ? cur[r].x : wi == 1 ? cur[r].y : wi == 2 ? cur[r].z : cur[r].w;
                ql_decode8(word, magic[r], q[r]);
            }
#pragma unroll
            for (int m = 0; m < M; ++m) {
                float xv[8];
                ql_load8<T>(x + (uint64_t)m * d.k, c * 32 + wi * 8, xv);
#pragma unroll
                for (int r = 0; r < R; ++r) {
#pragma unroll
                    for (int e = 0; e < 8; ++e) {
                        part[m][r] = fmaf(xv[e], q[r][e], part[m][r]);
                    }
                }
            }
        }
#pragma unroll
        for (int m = 0; m < M; ++m) {
#pragma unroll
            for (int r = 0; r < R; ++r) {
                acc[m][r] = fmaf(scale[r], part[m][r], acc[m][r]);
            }
        }
#pragma unroll
        for (int r = 0; r < R; ++r) {
            cur[r] = nxt[r];
            scale[r] = nscale[r];
            magic[r] = nmagic[r];
        }
    }
#pragma unroll
    for (int m = 0; m < M; ++m) {
#pragma unroll
        for (int r = 0; r < R; ++r) {
            float v = acc[m][r];
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) {
                v += __shfl_xor_sync(0xffffffffu, v, off);
            }
            if (lane == (uint32_t)(m * R + r) % 32u && row0 + r < d.n) {
                y[(uint64_t)m * d.n + row0 + r] = ql_from_f32(v, (T *)nullptr);
            }
        }
    }
}

// One token of f16/bf16: at most 64 registers, so 4 blocks (32 warps) fit per SM and an
// 8192-row weight (4096 warps) runs in one wave on 132 SMs instead of 1.3 (ncu: 3 blocks/SM
// at 128 registers, 23.8 us against 21.5). Otherwise 2 blocks per SM (128 registers; capping
// 2-3 tokens at 80 registers to fit 3 blocks measured slower).
#define GEMV_MIN_BLOCKS(T, M) ((M) == 1 && sizeof(T) == 2 ? 4 : 2)
#define GEMV_KERNEL(NAME, T, M)                                                                 \
    extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32, GEMV_MIN_BLOCKS(T, M))        \
        NAME(const T *__restrict__ x, const uint4 *__restrict__ codes,                          \
             const float *__restrict__ scales, const uint8_t *__restrict__ zeros,               \
             int32_t zero, MatmulDims d, T *__restrict__ y) {                                   \
        if (zeros) {                                                                            \
            gemv_u4<T, M, true>(x, codes, scales, zeros, zero, d, y);                           \
        } else {                                                                                \
            gemv_u4<T, M, false>(x, codes, scales, zeros, zero, d, y);                          \
        }                                                                                       \
    }

#define GEMV_KERNELS(SUFFIX, T)                                                                 \
    GEMV_KERNEL(ql_gemv_u4_##SUFFIX##_m1, T, 1)                                                 \
    GEMV_KERNEL(ql_gemv_u4_##SUFFIX##_m2, T, 2)                                                 \
    GEMV_KERNEL(ql_gemv_u4_##SUFFIX##_m3, T, 3)                                                 \
    GEMV_KERNEL(ql_gemv_u4_##SUFFIX##_m4, T, 4)                                                 \
    GEMV_KERNEL(ql_gemv_u4_##SUFFIX##_m5, T, 5)                                                 \
    GEMV_KERNEL(ql_gemv_u4_##SUFFIX##_m6, T, 6)                                                 \
    GEMV_KERNEL(ql_gemv_u4_##SUFFIX##_m7, T, 7)                                                 \
    GEMV_KERNEL(ql_gemv_u4_##SUFFIX##_m8, T, 8)

GEMV_KERNELS(f32, float)
GEMV_KERNELS(f16, __half)
GEMV_KERNELS(bf16, __nv_bfloat16)

// ---------------------------------------------------------------------------------------------
// Tiled tensor-core kernel. WM x WN warps, each computing FM x FN fragments of 16x16; a block
// computes a BM x BN tile of y over the k range of its split (blockIdx.z). The global loads of
// step s+1 are issued into registers before the tensor-core work of step s (one-deep software
// pipeline). With one split the tile is converted and written to y; with several, each split
// writes f32 partial sums to `partial` [splits, m, n], summed in order by `ql_splitk_reduce_*`
// (deterministic, unlike atomics).
#define MM_BK 64
#define MM_PAD 8 // halves of padding per shared row: rows 144 bytes apart, 16-byte aligned

template <typename T, int WM, int WN, int FM, int FN>
__device__ __forceinline__ void mm_u4(const T *__restrict__ x, const uint4 *__restrict__ codes,
                                      const float *__restrict__ scales,
                                      const uint8_t *__restrict__ zeros, int32_t zero,
                                      MatmulDims d, T *__restrict__ y, float *__restrict__ partial) {
    using namespace nvcuda;
    constexpr int BM = WM * FM * 16;
    constexpr int BN = WN * FN * 16;
    constexpr int THREADS = WM * WN * 32;
    constexpr int LD = MM_BK + MM_PAD;
    constexpr int LDC = BN + 4;
    constexpr int TILE_BYTES = (BM + BN) * LD * (int)sizeof(T);
    constexpr int C_BYTES = BM * LDC * (int)sizeof(float);
    constexpr int XPT = (BM * 8 + THREADS - 1) / THREADS; // x uint4 per thread
    constexpr int WPT = (BN * 2 + THREADS - 1) / THREADS; // W chunks per thread
    __shared__ __align__(32) unsigned char smem[TILE_BYTES > C_BYTES ? TILE_BYTES : C_BYTES];
    T *xs = reinterpret_cast<T *>(smem);
    T *ws = xs + BM * LD;
    float *cs = reinterpret_cast<float *>(smem);

    const uint32_t m0 = blockIdx.y * BM;
    const uint32_t n0 = blockIdx.x * BN;
    const uint32_t kc = d.k >> 5;
    const uint32_t gpr = kc / d.chunks_per_group;
    const uint32_t k_begin = blockIdx.z * d.steps_per_split * MM_BK;
    const uint32_t k_end = min(d.k, k_begin + d.steps_per_split * MM_BK);
    const int warp = threadIdx.x >> 5;
    const int wm = warp / WN;
    const int wn = warp % WN;
    typedef typename QlPair<T>::type P;

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[FM][FN];
#pragma unroll
    for (int i = 0; i < FM; ++i) {
#pragma unroll
        for (int j = 0; j < FN; ++j) {
            wmma::fill_fragment(acc[i][j], 0.0f);
        }
    }

    uint4 xr[XPT];
    uint4 wr[WPT];
    float wscale[WPT], wmagic[WPT];
    // Global loads of the step at k0 into registers; zeros past the edges.
    auto load = [&](uint32_t k0) {
#pragma unroll
        for (int t = 0; t < XPT; ++t) {
            const int idx = threadIdx.x + t * THREADS;
            const int r = idx >> 3, q = idx & 7;
            const uint32_t kk = k0 + q * 8;
            xr[t] = make_uint4(0, 0, 0, 0);
            if (idx < BM * 8 && m0 + r < d.m && kk < k_end) {
                xr[t] = __ldg(reinterpret_cast<const uint4 *>(x + (uint64_t)(m0 + r) * d.k + kk));
            }
        }
#pragma unroll
        for (int t = 0; t < WPT; ++t) {
            const int idx = threadIdx.x + t * THREADS;
            const int r = idx >> 1, h = idx & 1;
            const uint32_t c = (k0 >> 5) + h;
            wr[t] = make_uint4(0, 0, 0, 0);
            wscale[t] = 0.0f;
            wmagic[t] = QL_MAGIC;
            if (idx < BN * 2 && n0 + r < d.n && c * 32 < k_end) {
                const uint32_t row = n0 + r;
                wr[t] = __ldg(codes + (uint64_t)row * kc + c);
                const uint64_t gi = (uint64_t)row * gpr + c / d.chunks_per_group;
                wscale[t] = scales[gi];
                wmagic[t] = QL_MAGIC + (float)(zeros ? (int32_t)zeros[gi] : zero);
            }
        }
    };
    // Registers to shared memory: x as is, W dequantized exactly as `dequantize` does.
    auto store = [&]() {
#pragma unroll
        for (int t = 0; t < XPT; ++t) {
            const int idx = threadIdx.x + t * THREADS;
            if (idx < BM * 8) {
                const int r = idx >> 3, q = idx & 7;
                *reinterpret_cast<uint4 *>(xs + r * LD + q * 8) = xr[t];
            }
        }
#pragma unroll
        for (int t = 0; t < WPT; ++t) {
            const int idx = threadIdx.x + t * THREADS;
            if (idx < BN * 2) {
                const int r = idx >> 1, h = idx & 1;
                union {
                    P p[16];
                    uint4 u[4];
                } buf;
                const uint32_t words[4] = {wr[t].x, wr[t].y, wr[t].z, wr[t].w};
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    float q8[8];
                    ql_decode8(words[j], wmagic[t], q8);
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        buf.p[4 * j + e] = QlPair<T>::make(__fmul_rn(q8[2 * e], wscale[t]),
                                                           __fmul_rn(q8[2 * e + 1], wscale[t]));
                    }
                }
                uint4 *dst = reinterpret_cast<uint4 *>(ws + r * LD + h * 32);
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    dst[e] = buf.u[e];
                }
            }
        }
    };

    if (k_begin < k_end) {
        load(k_begin);
    }
    for (uint32_t k0 = k_begin; k0 < k_end; k0 += MM_BK) {
        store();
        __syncthreads();
        if (k0 + MM_BK < k_end) {
            load(k0 + MM_BK);
        }
#pragma unroll
        for (int kk = 0; kk < MM_BK; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a[FM];
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b[FN];
#pragma unroll
            for (int i = 0; i < FM; ++i) {
                wmma::load_matrix_sync(a[i], xs + (wm * FM + i) * 16 * LD + kk, LD);
            }
#pragma unroll
            for (int j = 0; j < FN; ++j) {
                // Wᵀ as a column-major k x n matrix is W row-major: column j = row j of ws.
                wmma::load_matrix_sync(b[j], ws + (wn * FN + j) * 16 * LD + kk, LD);
            }
#pragma unroll
            for (int i = 0; i < FM; ++i) {
#pragma unroll
                for (int j = 0; j < FN; ++j) {
                    wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
                }
            }
        }
        __syncthreads();
    }
    // Accumulators to shared memory (reusing the tiles), then guarded writes.
#pragma unroll
    for (int i = 0; i < FM; ++i) {
#pragma unroll
        for (int j = 0; j < FN; ++j) {
            wmma::store_matrix_sync(cs + (wm * FM + i) * 16 * LDC + (wn * FN + j) * 16,
                                    acc[i][j], LDC, wmma::mem_row_major);
        }
    }
    __syncthreads();
    float *part = partial ? partial + (uint64_t)blockIdx.z * d.m * d.n : nullptr;
    for (int idx = threadIdx.x; idx < BM * BN; idx += THREADS) {
        const int r = idx / BN, c = idx % BN;
        if (m0 + r < d.m && n0 + c < d.n) {
            const uint64_t o = (uint64_t)(m0 + r) * d.n + n0 + c;
            if (part) {
                part[o] = cs[r * LDC + c];
            } else {
                y[o] = ql_from_f32(cs[r * LDC + c], (T *)nullptr);
            }
        }
    }
}

// Small batches (<= 32 tokens): 16 x 64 tiles, 4 warps. Larger: 64 x 128 tiles, 8 warps.
#define MM_KERNEL(NAME, T, WM, WN, FM, FN)                                                      \
    extern "C" __global__ void __launch_bounds__(WM * WN * 32)                                  \
        NAME(const T *__restrict__ x, const uint4 *__restrict__ codes,                          \
             const float *__restrict__ scales, const uint8_t *__restrict__ zeros,               \
             int32_t zero, MatmulDims d, T *__restrict__ y, float *__restrict__ partial) {      \
        mm_u4<T, WM, WN, FM, FN>(x, codes, scales, zeros, zero, d, y, partial);                 \
    }

MM_KERNEL(ql_mm_u4_f16_small, __half, 1, 4, 1, 1)
MM_KERNEL(ql_mm_u4_bf16_small, __nv_bfloat16, 1, 4, 1, 1)
MM_KERNEL(ql_mm_u4_f16_large, __half, 2, 4, 2, 2)
MM_KERNEL(ql_mm_u4_bf16_large, __nv_bfloat16, 2, 4, 2, 2)

// y[i] = Σ_s partial[s·mn + i], the splits summed in order.
#define SPLITK_REDUCE(NAME, T)                                                                  \
    extern "C" __global__ void NAME(const float *__restrict__ partial, uint32_t splits,         \
                                    uint32_t mn, T *__restrict__ y) {                           \
        const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;                               \
        if (i < mn) {                                                                           \
            float v = partial[i];                                                               \
            for (uint32_t s = 1; s < splits; ++s) {                                             \
                v += partial[(uint64_t)s * mn + i];                                             \
            }                                                                                   \
            y[i] = ql_from_f32(v, (T *)nullptr);                                                \
        }                                                                                       \
    }

SPLITK_REDUCE(ql_splitk_reduce_f16, __half)
SPLITK_REDUCE(ql_splitk_reduce_bf16, __nv_bfloat16)
