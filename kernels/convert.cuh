#pragma once
// fp32 -> bf16 (round to nearest even), for weights at upload and GEMM inputs.
#include <cuda_bf16.h>

#include "common.cuh"

namespace eexit::kernels {

__global__ void to_bf16_kernel(const float* __restrict__ src, __nv_bfloat16* __restrict__ dst,
                               std::size_t n) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x)
    dst[i] = __float2bfloat16_rn(src[i]);
}

}  // namespace eexit::kernels
