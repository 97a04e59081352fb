#pragma once
// Embedding lookup: out (n, dim) = table[tokens].
#include "common.cuh"

namespace eexit::kernels {

__global__ void embed_kernel(const std::int32_t* __restrict__ tokens, std::size_t n,
                             const float* __restrict__ table, std::size_t dim,
                             float* __restrict__ out) {
  for (std::size_t r = blockIdx.x; r < n; r += gridDim.x) {
    const float* src = table + std::size_t(tokens[r]) * dim;
    for (std::size_t i = threadIdx.x; i < dim; i += blockDim.x) out[r * dim + i] = src[i];
  }
}

// Row gather / compaction for split batches: dst row i = src row idx[i].
__global__ void gather_rows_kernel(const float* __restrict__ src, const std::int32_t* __restrict__ idx,
                                   std::size_t n, std::size_t dim, float* __restrict__ dst) {
  for (std::size_t r = blockIdx.x; r < n; r += gridDim.x) {
    const float* s = src + std::size_t(idx[r]) * dim;
    for (std::size_t i = threadIdx.x; i < dim; i += blockDim.x) dst[r * dim + i] = s[i];
  }
}

}  // namespace eexit::kernels
