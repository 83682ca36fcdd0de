// Weight access shared by the quantize kernels: widening one weight to f32, and eight
// consecutive weights as one unit read with 16-byte vector loads (one for bf16/f16, two for f32).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

// One weight widened to f32.
__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> union QlOctet {
    T v[8];
    uint4 u[sizeof(T) / 2];
};

// Eight consecutive weights by 16-byte loads; `p` must be 16-byte aligned.
template <typename T>
__device__ __forceinline__ QlOctet<T> ql_load_octet(const T *__restrict__ p) {
    QlOctet<T> o;
    const uint4 *src = reinterpret_cast<const uint4 *>(p);
#pragma unroll
    for (int w = 0; w < (int)(sizeof(T) / 2); ++w) {
        o.u[w] = __ldg(src + w);
    }
    return o;
}
