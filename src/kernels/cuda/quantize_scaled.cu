// Absmax-scaled quantization on the device: the NF4 / NormalFloat codebooks
// (src/quant/nf4.rs `encode_absmax_blocks`) and the small float formats FP8 E4M3 / E5M2,
// FP4 E2M1 and OCP MX (src/kernels/scaled.rs `quantize_scaled`), in two kernels with no host
// step in between:
//
// 1. `ql_scaled_absmax_{warp,block}_*`: per group, max |w| and finiteness, then the group's
//    stored scale by one of three rules (QL_RULE_*), a "group is all zero" flag, and a status
//    word (bit 0: a non-finite weight, bit 1: a scale its dtype cannot hold). One warp per
//    group up to 4096 elements, one block per group up to 64 Ki, beyond that many blocks per
//    group (`ql_scaled_absmax_part_*`, then `ql_scaled_absmax_finish`).
// 2. `ql_scaled_encode_{table,float}_*`: each thread encodes eight consecutive weights (eight
//    b-bit codes fill exactly b bytes, src/quant/packing.rs `pack_fixed`) against their
//    group's scale and writes the packed little-endian bytes.
//
// Every operation mirrors the CPU code with IEEE-rounded intrinsics (`__fdiv_rn`,
// `__fmul_rn`, `__fadd_rn`, `__dadd_rn`, `__double2float_rn`), so nvcc cannot contract or
// approximate anything and the bytes are the CPU's. Neither kernel stops on a fault: the host
// reads the status word and, when it is not 0, runs the CPU path once so the error names the
// first bad element or group exactly as there.

#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

#include "octet.cuh"

// Scale rules (the `rule` argument).
#define QL_RULE_TABLE 0 // NF4/NormalFloat: store_scale_up(absmax, dtype)
#define QL_RULE_FLOAT 1 // GroupScale::new, Scaling::Absmax: store_scale_up(absmax / max_finite)
#define QL_RULE_OCP 2   // GroupScale::new, Scaling::Ocp: ocp_scale(absmax, format)

// Scale dtypes (the `dtype` argument), as ScaleDType.
#define QL_DT_F32 0
#define QL_DT_F16 1
#define QL_DT_BF16 2
#define QL_DT_E8M0 3

// Threads per block of every kernel here; `BLOCK` in quantize_scaled.rs must equal it.
#define QL_S_THREADS 256

// `pow2` of src/kernels/scaled.rs: 2^k for k in [-149, 127], from its bits.
__device__ __forceinline__ float ql_pow2(int k) {
    return k >= -126 ? __uint_as_float((uint32_t)(k + 127) << 23)
                     : __uint_as_float(1u << (k + 149));
}

// `floor_log2` of src/kernels/scaled.rs: floor(log2 x) of a positive finite f32, exactly.
__device__ __forceinline__ int ql_floor_log2(float x) {
    const uint32_t bits = __float_as_uint(x) & 0x7FFFFFFFu;
    const int exp = (int)(bits >> 23);
    return exp == 0 ? (31 - __clz((int)bits)) - 149 : exp - 127;
}

// `exponent_up` of src/quant/grid.rs: the smallest k with 2^k >= x (−127 for x <= 0).
__device__ __forceinline__ int ql_exponent_up(float x) {
    if (x <= 0.0f) {
        return -127;
    }
    const uint32_t bits = __float_as_uint(x);
    const int exp = (int)((bits >> 23) & 0xFFu);
    const uint32_t man = bits & 0x7FFFFFu;
    if (exp == 0) {
        // Subnormal: x = man · 2^-149.
        const int k = (31 - __clz((int)man)) - 149;
        return (man & (man - 1u)) == 0u ? k : k + 1;
    }
    return man == 0u ? exp - 127 : exp - 126;
}

// `store_scale_up` of src/quant/grid.rs: round a non-negative scale up to the storage dtype;
// NaN when it does not fit (the CPU returns None there).
__device__ __forceinline__ float ql_store_scale_up(float x, uint32_t dtype) {
    const float nan = __uint_as_float(0x7FC00000u);
    if (!isfinite(x)) {
        return nan;
    }
    float v = x;
    if (dtype == QL_DT_F16) {
        __half h = __float2half_rn(x);
        if (__half2float(h) < x) {
            h = __ushort_as_half((unsigned short)(__half_as_ushort(h) + 1));
        }
        v = __half2float(h);
    } else if (dtype == QL_DT_BF16) {
        __nv_bfloat16 h = __float2bfloat16_rn(x);
        if (__bfloat162float(h) < x) {
            h = __ushort_as_bfloat16((unsigned short)(__bfloat16_as_ushort(h) + 1));
        }
        v = __bfloat162float(h);
    } else if (dtype == QL_DT_E8M0) {
        // pow2_up: 2^max(k, -127) for k = exponent_up(x) <= 127, else None.
        const int k = ql_exponent_up(x);
        if (k > 127) {
            return nan;
        }
        v = ql_pow2(k > -127 ? k : -127);
    }
    return isfinite(v) ? v : nan;
}

// The scale of a group with absmax `amax` (`bad`: a weight was not finite), written with its
// zero flag; faults are OR-ed into `status`. Runs on one thread per group.
__device__ __forceinline__ void ql_group_scale(float amax, int bad, uint32_t rule,
                                               uint32_t dtype, float max_finite, int emax,
                                               uint64_t g, float *__restrict__ scales,
                                               uint8_t *__restrict__ zero,
                                               uint32_t *__restrict__ status) {
    float scale;
    if (rule == QL_RULE_OCP) {
        // ocp_scale: 2^(floor(log2 amax) − emax) clamped to E8M0's range; 2^-127 for 0.
        if (amax == 0.0f) {
            scale = ql_pow2(-127);
        } else {
            scale = ql_pow2(min(max(ql_floor_log2(amax) - emax, -127), 127));
        }
    } else {
        float raw = amax;
        if (rule == QL_RULE_FLOAT) {
            raw = __fdiv_rn(amax, max_finite);
            if (raw == 0.0f && amax > 0.0f) {
                raw = __uint_as_float(1u); // a subnormal absmax whose quotient underflows
            }
        }
        scale = ql_store_scale_up(raw, dtype);
    }
    const uint32_t flags = (bad ? 1u : 0u) | (isnan(scale) ? 2u : 0u);
    if (flags) {
        atomicOr(status, flags);
    }
    scales[g] = scale;
    zero[g] = amax == 0.0f ? 1 : 0;
}

// max |v| and "not finite" of one weight folded into the running pair. For finite weights
// `fmaxf` is an exact maximum, so the order of the reduction does not matter.
__device__ __forceinline__ void ql_fold(float v, float &amax, int &bad) {
    bad |= !isfinite(v);
    amax = fmaxf(amax, fabsf(v));
}

// `seg` lanes per group (a power of two, at most 32): a warp reduces 32/seg groups at once, so
// short groups keep every lane busy (NF4's 64 bf16 weights are 8 octets: 8 lanes each, 4
// groups per warp; one group per warp left 24 lanes idle and measured 225 us on 8192^2).
template <typename T>
__device__ void ql_absmax_warp(const T *__restrict__ x, uint64_t group_len, uint64_t groups,
                               uint32_t seg, uint32_t rule, uint32_t dtype, float max_finite,
                               int emax, float *scales, uint8_t *zero, uint32_t *status) {
    const uint64_t warp = (uint64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const uint64_t first = warp * (32 / seg);
    if (first >= groups) {
        return; // uniform across the warp: whole warps exit together
    }
    const unsigned lane = threadIdx.x % 32;
    const unsigned sub = lane % seg;
    const uint64_t g = first + lane / seg;
    const bool active = g < groups; // lanes past the last group still join the shuffles
    float amax = 0.0f;
    int bad = 0;
    if (active) {
        const T *xg = x + g * group_len;
        // Whole octets of a 16-byte aligned tensor: every group starts 16-byte aligned.
        const bool vec = group_len % 8 == 0 && (reinterpret_cast<uintptr_t>(x) % 16) == 0;
        if (vec) {
            const uint64_t octets = group_len / 8;
            for (uint64_t o = sub; o < octets; o += seg) {
                const QlOctet<T> v = ql_load_octet(xg + 8 * o);
#pragma unroll
                for (int k = 0; k < 8; ++k) {
                    ql_fold(to_f32(v.v[k]), amax, bad);
                }
            }
        } else {
            for (uint64_t i = sub; i < group_len; i += seg) {
                ql_fold(to_f32(xg[i]), amax, bad);
            }
        }
    }
    // XOR offsets below `seg` stay inside the lane's aligned segment.
    for (unsigned s = seg / 2; s > 0; s >>= 1) {
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, s));
        bad |= __shfl_xor_sync(0xffffffffu, bad, s);
    }
    if (active && sub == 0) {
        ql_group_scale(amax, bad, rule, dtype, max_finite, emax, g, scales, zero, status);
    }
}

// The block's (max |w|, not finite) pairs folded by a shared-memory tree; afterwards every
// thread's `amax` and `bad` hold the block's result.
__device__ __forceinline__ void ql_block_fold(float &amax, int &bad) {
    __shared__ float samax[QL_S_THREADS];
    __shared__ int sbad[QL_S_THREADS];
    samax[threadIdx.x] = amax;
    sbad[threadIdx.x] = bad;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            samax[threadIdx.x] = fmaxf(samax[threadIdx.x], samax[threadIdx.x + s]);
            sbad[threadIdx.x] |= sbad[threadIdx.x + s];
        }
        __syncthreads();
    }
    amax = samax[0];
    bad = sbad[0];
}

// One block per group, for groups longer than 4096 elements.
template <typename T>
__device__ void ql_absmax_block(const T *__restrict__ x, uint64_t group_len, uint32_t rule,
                                uint32_t dtype, float max_finite, int emax, float *scales,
                                uint8_t *zero, uint32_t *status) {
    const uint64_t g = blockIdx.x;
    const T *xg = x + g * group_len;
    float amax = 0.0f;
    int bad = 0;
    for (uint64_t i = threadIdx.x; i < group_len; i += blockDim.x) {
        ql_fold(to_f32(xg[i]), amax, bad);
    }
    ql_block_fold(amax, bad);
    if (threadIdx.x == 0) {
        ql_group_scale(amax, bad, rule, dtype, max_finite, emax, g, scales, zero, status);
    }
}

// Long groups (per-tensor, over 64 Ki elements): many blocks per group, so one block does
// not read the whole tensor alone. Block (b, g) reduces elements b·256 + t, block-strided over
// group g, then folds its result into the group's running maximum with an integer atomicMax on
// the bits (non-negative floats, +inf included, order as their bit patterns; fmaxf never lets
// a NaN in) and ORs its "not finite" flag. `amax_bits` and `bad_flags` start at 0 (+0.0, none).
template <typename T>
__device__ void ql_absmax_part(const T *__restrict__ x, uint64_t group_len,
                               uint32_t *__restrict__ amax_bits,
                               uint32_t *__restrict__ bad_flags) {
    const uint64_t g = blockIdx.y;
    const T *xg = x + g * group_len;
    float amax = 0.0f;
    int bad = 0;
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < group_len; i += stride) {
        ql_fold(to_f32(xg[i]), amax, bad);
    }
    ql_block_fold(amax, bad);
    if (threadIdx.x == 0) {
        atomicMax(amax_bits + g, __float_as_uint(amax));
        if (bad) {
            atomicOr(bad_flags + g, 1u);
        }
    }
}

// After `ql_absmax_part`: one thread per group turns the maximum into the scale.
__device__ void ql_absmax_finish(const uint32_t *__restrict__ amax_bits,
                                 const uint32_t *__restrict__ bad_flags, uint64_t groups,
                                 uint32_t rule, uint32_t dtype, float max_finite, int emax,
                                 float *scales, uint8_t *zero, uint32_t *status) {
    const uint64_t g = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= groups) {
        return;
    }
    ql_group_scale(__uint_as_float(amax_bits[g]), bad_flags[g] != 0u, rule, dtype, max_finite,
                   emax, g, scales, zero, status);
}

extern "C" __global__ void __launch_bounds__(QL_S_THREADS)
    ql_scaled_absmax_finish(const uint32_t *amax_bits, const uint32_t *bad_flags,
                            uint64_t groups, uint32_t rule, uint32_t dtype, float max_finite,
                            int32_t emax, float *scales, uint8_t *zero, uint32_t *status) {
    ql_absmax_finish(amax_bits, bad_flags, groups, rule, dtype, max_finite, emax, scales, zero,
                     status);
}

// Rust's f32::next_down (towards −∞; ±0 gives the negative smallest subnormal).
__device__ __forceinline__ float ql_next_down(float v) {
    const uint32_t bits = __float_as_uint(v);
    const uint32_t abs = bits & 0x7FFFFFFFu;
    if (abs == 0u) {
        return __uint_as_float(0x80000001u);
    }
    return __uint_as_float(bits == abs ? bits - 1u : bits + 1u);
}

// `Midpoints::new` of src/quant/codebook.rs for one pair of adjacent levels: the exact
// midpoint of the decoded levels `scale·a`, `scale·b` (f32 products, f64 mean), rounded down
// to f32.
__device__ __forceinline__ float ql_midpoint_down(float scale, float a, float b) {
    const double exact =
        __dmul_rn(__dadd_rn((double)__fmul_rn(scale, a), (double)__fmul_rn(scale, b)), 0.5);
    const float near = __double2float_rn(exact);
    return (double)near > exact ? ql_next_down(near) : near;
}

// `encode_block` + `encode_nearest` of src/quant/{nf4,codebook}.rs: a zero scale gives the
// zero level; otherwise the code is the number of midpoints strictly below `w` (ties go to
// the lower level). The midpoints ascend, so a binary search over them counts the same as
// the CPU's linear count.
struct QlTableEnc {
    const float *tab; // the levels, ascending, in shared memory
    uint32_t len;     // 2^bits
    uint32_t zero_code;
    const float *scales;

    __device__ __forceinline__ uint32_t code(float w, uint64_t g) const {
        const float s = scales[g];
        if (s == 0.0f) {
            return zero_code;
        }
        uint32_t lo = 0, hi = len - 1;
        while (lo < hi) {
            const uint32_t mid = (lo + hi) >> 1;
            if (w > ql_midpoint_down(s, tab[mid], tab[mid + 1])) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        return lo;
    }
};

// `Encoder` of src/quant/float_format.rs (its constants from `Encoder::new`), preceded by the
// group handling of `encode_group` in src/kernels/cpu/scaled.rs: +0 codes for an all-zero
// group, else `encode(w / divisor)` with divisor = scale, or 1 for a zero scale.
struct QlFloatEnc {
    uint32_t sign_shift, shift, rebias, min_normal, max_code, nan_code;
    float magic;
    const float *scales;
    const uint8_t *zero;

    __device__ __forceinline__ uint32_t encode(float v) const {
        const uint32_t bits = __float_as_uint(v);
        const uint32_t sign = (bits >> 31) << sign_shift;
        const uint32_t a = bits & 0x7FFFFFFFu;
        uint32_t mag;
        if (a < min_normal) {
            // Below the smallest normal: the f32 adder rounds to the subnormal lattice.
            const float t = __fadd_rn(__uint_as_float(a), magic);
            mag = __float_as_uint(t) - __float_as_uint(magic);
        } else {
            // Rebias, then drop `shift` mantissa bits rounding half to even.
            const uint32_t r = a - rebias;
            const uint32_t odd = (r >> shift) & 1u;
            mag = (r + (1u << (shift - 1)) - 1u + odd) >> shift;
        }
        mag = a > 0x7F800000u ? nan_code : min(mag, max_code);
        return mag | sign;
    }

    __device__ __forceinline__ uint32_t code(float w, uint64_t g) const {
        if (zero[g]) {
            return 0;
        }
        const float s = scales[g];
        return encode(__fdiv_rn(w, s > 0.0f ? s : 1.0f));
    }
};

// Formats (the `format` argument): 0 E4M3, 1 E5M2, 2 E2M1.
__device__ __forceinline__ QlFloatEnc ql_float_enc(uint32_t format, const float *scales,
                                                   const uint8_t *zero) {
    uint32_t m, bias, bits, max_code, nan_code;
    if (format == 0) {
        m = 3, bias = 7, bits = 8, max_code = 0x7E, nan_code = 0x7F;
    } else if (format == 1) {
        m = 2, bias = 15, bits = 8, max_code = 0x7B, nan_code = 0x7F;
    } else {
        m = 1, bias = 1, bits = 4, max_code = 0x7, nan_code = 0x7;
    }
    QlFloatEnc e;
    e.sign_shift = bits - 1;
    e.shift = 23 - m;
    e.rebias = (127 - bias) << 23;
    e.min_normal = (127 + 1 - bias) << 23;
    e.magic = __uint_as_float((127 + 23 + 1 - bias - m) << 23);
    e.max_code = max_code;
    e.nan_code = nan_code;
    e.scales = scales;
    e.zero = zero;
    return e;
}

// Octet o = i0/8: eight consecutive weights, possibly of two or more groups, encoded into one
// little-endian word of eight `bits`-bit codes, stored as `bits` bytes (ceil(count·bits/8)
// for a last, partial octet, its unused high bits 0 as in `pack_fixed`).
template <typename T, typename Enc>
__device__ __forceinline__ void ql_encode_octet(const T *__restrict__ x, uint64_t n,
                                                uint32_t bits, uint64_t group_len,
                                                const Enc &enc, uint8_t *__restrict__ out,
                                                uint64_t o, bool aligned) {
    const uint64_t i0 = o * 8;
    const uint32_t count = (uint32_t)min((uint64_t)8, n - i0);
    uint64_t g = i0 / group_len;
    uint64_t group_end = (g + 1) * group_len;
    uint64_t word = 0;
    if (count == 8) {
        // Constant indices only, so the octet stays in registers (a dynamic index put it in
        // local memory).
        QlOctet<T> buf;
        if (aligned) {
            buf = ql_load_octet(x + i0);
        } else {
#pragma unroll
            for (uint32_t k = 0; k < 8; ++k) {
                buf.v[k] = x[i0 + k];
            }
        }
#pragma unroll
        for (uint32_t k = 0; k < 8; ++k) {
            if (i0 + k == group_end) {
                // group_len >= 1: at most one boundary per element.
                ++g;
                group_end += group_len;
            }
            word |= (uint64_t)enc.code(to_f32(buf.v[k]), g) << (k * bits);
        }
    } else {
        for (uint32_t k = 0; k < count; ++k) {
            if (i0 + k == group_end) {
                ++g;
                group_end += group_len;
            }
            word |= (uint64_t)enc.code(to_f32(x[i0 + k]), g) << (k * bits);
        }
    }
    uint8_t *dst = out + o * bits;
    if (count == 8 && bits == 8) {
        *reinterpret_cast<uint64_t *>(dst) = word; // o·8: 8-byte aligned
    } else if (count == 8 && bits == 4) {
        *reinterpret_cast<uint32_t *>(dst) = (uint32_t)word; // o·4: 4-byte aligned
    } else {
        const uint32_t nbytes = (count * bits + 7) / 8;
        for (uint32_t b = 0; b < nbytes; ++b) {
            dst[b] = (uint8_t)(word >> (8 * b));
        }
    }
}

// Each thread encodes octets o, grid-stride.
template <typename T, typename Enc>
__device__ __forceinline__ void ql_encode_octets(const T *__restrict__ x, uint64_t n,
                                                 uint32_t bits, uint64_t group_len,
                                                 const Enc &enc, uint8_t *__restrict__ out) {
    const bool aligned = (reinterpret_cast<uintptr_t>(x) % 16) == 0;
    const uint64_t octets = (n + 7) / 8;
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    for (uint64_t o = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; o < octets; o += stride) {
        ql_encode_octet<T>(x, n, bits, group_len, enc, out, o, aligned);
    }
}

// Midpoints of the groups a block's tile of octets touches, computed once per tile in shared
// memory instead of once per weight and search step (NF4 g64: 15 per 64 weights against 4 per
// weight); at most this many, else the tile searches with `QlTableEnc` as before.
#define QL_S_MIDS 4096

// `QlTableEnc` with the midpoints of groups g0 .. g0 + count − 1 read from shared memory
// (`mids[(g − g0)·(len − 1) + j]` = the CPU's rounded-down midpoint of levels j and j + 1).
struct QlTableEncCached {
    const float *mids;
    uint64_t g0;
    uint32_t len;
    uint32_t zero_code;
    const float *scales;

    __device__ __forceinline__ uint32_t code(float w, uint64_t g) const {
        if (scales[g] == 0.0f) {
            return zero_code;
        }
        const float *m = mids + (g - g0) * (len - 1);
        uint32_t lo = 0, hi = len - 1;
        while (lo < hi) {
            const uint32_t mid = (lo + hi) >> 1;
            if (w > m[mid]) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        return lo;
    }
};

template <typename T>
__device__ void ql_encode_table(const T *__restrict__ x, uint64_t n, uint32_t bits,
                                uint64_t group_len, const float *__restrict__ table,
                                uint32_t table_len, uint32_t zero_code,
                                const float *__restrict__ scales, uint8_t *__restrict__ out) {
    // The levels in shared memory (data-dependent indexing in the search), and the midpoints
    // of the current tile's groups. Every thread reaches every barrier: the tile loop runs the
    // same number of times for all threads of a block.
    __shared__ float stab[256];
    __shared__ float smids[QL_S_MIDS];
    for (uint32_t i = threadIdx.x; i < table_len; i += blockDim.x) {
        stab[i] = table[i];
    }
    QlTableEnc direct;
    direct.tab = stab;
    direct.len = table_len;
    direct.zero_code = zero_code;
    direct.scales = scales;
    QlTableEncCached cached;
    cached.mids = smids;
    cached.len = table_len;
    cached.zero_code = zero_code;
    cached.scales = scales;
    const bool aligned = (reinterpret_cast<uintptr_t>(x) % 16) == 0;
    const uint64_t octets = (n + 7) / 8;
    const uint32_t gaps = table_len - 1;
    for (uint64_t base = (uint64_t)blockIdx.x * blockDim.x; base < octets;
         base += (uint64_t)gridDim.x * blockDim.x) {
        const uint64_t last = min(octets, base + blockDim.x) * 8; // one past the tile's last weight
        const uint64_t g0 = base * 8 / group_len;
        const uint64_t count = (min(last, n) - 1) / group_len - g0 + 1;
        const bool use_cache = count * gaps <= QL_S_MIDS;
        __syncthreads(); // the levels are loaded; the previous tile's readers are done
        if (use_cache) {
            for (uint32_t i = threadIdx.x; i < count * gaps; i += blockDim.x) {
                const uint32_t j = i % gaps;
                const float s = scales[g0 + i / gaps];
                smids[i] = ql_midpoint_down(s, stab[j], stab[j + 1]);
            }
        }
        __syncthreads();
        const uint64_t o = base + threadIdx.x;
        if (o < octets) {
            if (use_cache) {
                cached.g0 = g0;
                ql_encode_octet<T>(x, n, bits, group_len, cached, out, o, aligned);
            } else {
                ql_encode_octet<T>(x, n, bits, group_len, direct, out, o, aligned);
            }
        }
    }
}

template <typename T>
__device__ void ql_encode_float(const T *__restrict__ x, uint64_t n, uint32_t bits,
                                uint64_t group_len, uint32_t format,
                                const float *__restrict__ scales,
                                const uint8_t *__restrict__ zero, uint8_t *__restrict__ out) {
    const QlFloatEnc enc = ql_float_enc(format, scales, zero);
    ql_encode_octets<T>(x, n, bits, group_len, enc, out);
}

#define SCALED_KERNELS(SUFFIX, T)                                                              \
    extern "C" __global__ void __launch_bounds__(QL_S_THREADS) ql_scaled_absmax_warp_##SUFFIX( \
        const T *__restrict__ x, uint64_t group_len, uint64_t groups, uint32_t seg,            \
        uint32_t rule, uint32_t dtype, float max_finite, int32_t emax, float *scales,          \
        uint8_t *zero, uint32_t *status) {                                                     \
        ql_absmax_warp<T>(x, group_len, groups, seg, rule, dtype, max_finite, emax, scales,    \
                          zero, status);                                                       \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(QL_S_THREADS)                                 \
        ql_scaled_absmax_block_##SUFFIX(const T *__restrict__ x, uint64_t group_len,           \
                                        uint32_t rule, uint32_t dtype, float max_finite,       \
                                        int32_t emax, float *scales, uint8_t *zero,            \
                                        uint32_t *status) {                                    \
        ql_absmax_block<T>(x, group_len, rule, dtype, max_finite, emax, scales, zero, status); \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(QL_S_THREADS) ql_scaled_absmax_part_##SUFFIX(  \
        const T *__restrict__ x, uint64_t group_len, uint32_t *amax_bits, uint32_t *bad_flags) { \
        ql_absmax_part<T>(x, group_len, amax_bits, bad_flags);                                 \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(QL_S_THREADS) ql_scaled_encode_table_##SUFFIX( \
        const T *__restrict__ x, uint64_t n, uint32_t bits, uint64_t group_len,                \
        const float *table, uint32_t table_len, uint32_t zero_code, const float *scales,       \
        uint8_t *out) {                                                                        \
        ql_encode_table<T>(x, n, bits, group_len, table, table_len, zero_code, scales, out);   \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(QL_S_THREADS) ql_scaled_encode_float_##SUFFIX( \
        const T *__restrict__ x, uint64_t n, uint32_t bits, uint64_t group_len,                \
        uint32_t format, const float *scales, const uint8_t *zero, uint8_t *out) {             \
        ql_encode_float<T>(x, n, bits, group_len, format, scales, zero, out);                  \
    }

SCALED_KERNELS(f32, float)
SCALED_KERNELS(f16, __half)
SCALED_KERNELS(bf16, __nv_bfloat16)
