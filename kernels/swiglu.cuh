#pragma once
// SwiGLU: out = silu(gate) * up (out may alias gate).
#include "common.cuh"

namespace eexit::kernels {

__global__ void swiglu_kernel(const float* gate, const float* __restrict__ up, float* out,
                              std::size_t n) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

__global__ void sigmoid_kernel(float* x, std::size_t n) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x)
    x[i] = 1.0f / (1.0f + expf(-x[i]));
}

}  // namespace eexit::kernels
