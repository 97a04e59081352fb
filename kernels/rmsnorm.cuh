#pragma once
// RMSNorm: y (rows, dim) = w * x / sqrt(mean(x^2) + eps). One block per row.
#include "common.cuh"

namespace eexit::kernels {

__global__ void rmsnorm_kernel(const float* __restrict__ x, const float* __restrict__ w,
                               float* __restrict__ y, std::size_t rows, std::size_t dim, float eps) {
  for (std::size_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * dim;
    float ss = 0.0f;
    for (std::size_t i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
    ss = block_sum(ss);
    const float inv = 1.0f / sqrtf(ss / float(dim) + eps);
    for (std::size_t i = threadIdx.x; i < dim; i += blockDim.x) y[r * dim + i] = w[i] * (xr[i] * inv);
  }
}

}  // namespace eexit::kernels
