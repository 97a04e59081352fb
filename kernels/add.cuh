#pragma once
// Residual add x += y, a bias broadcast y (rows, n) = b, and fills.
#include "common.cuh"

namespace eexit::kernels {

__global__ void add_kernel(float* x, const float* __restrict__ y, std::size_t n) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x)
    x[i] += y[i];
}

__global__ void broadcast_rows_kernel(float* __restrict__ y, const float* __restrict__ b,
                                      std::size_t rows, std::size_t n) {
  const std::size_t total = rows * n;
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < total;
       i += std::size_t(gridDim.x) * blockDim.x)
    y[i] = b[i % n];
}

__global__ void fill_kernel(float* x, std::size_t n, float v) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x)
    x[i] = v;
}

}  // namespace eexit::kernels
