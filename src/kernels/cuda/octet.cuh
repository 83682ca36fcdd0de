// Eight consecutive weights of any element type as one unit: the quantize kernels read them
// with 16-byte vector loads (one for bf16/f16, two for f32).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

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
