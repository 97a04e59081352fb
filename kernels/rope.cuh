#pragma once
// RoPE in place on x (rows, n_heads, head_dim) at each row's position, both layouts
// (interleaved pairs as llama2.c/Meta; halves as HF). The angle is computed in double, as
// the CPU reference does, so both backends rotate by the same float cos/sin.
#include "common.cuh"

namespace eexit::kernels {

__device__ inline void rope_pair(float* v, int i, int half, bool interleaved, float c, float s) {
  float* a = interleaved ? v + 2 * i : v + i;
  float* b = interleaved ? v + 2 * i + 1 : v + i + half;
  const float x0 = *a, x1 = *b;
  *a = x0 * c - x1 * s;
  *b = x0 * s + x1 * c;
}

__device__ inline void rope_angle(std::int32_t pos, float inv_freq, float& c, float& s) {
  const double a = double(pos) * double(inv_freq);
  c = float(cos(a));
  s = float(sin(a));
}

// One thread per (row, head, pair).
__global__ void rope_kernel(float* __restrict__ x, std::size_t rows, std::size_t n_heads,
                            int head_dim, const std::int32_t* __restrict__ meta,
                            const float* __restrict__ inv_freq, bool interleaved) {
  const int half = head_dim / 2;
  const std::size_t n = rows * n_heads * std::size_t(half);
  for (std::size_t t = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; t < n;
       t += std::size_t(gridDim.x) * blockDim.x) {
    const int i = int(t % std::size_t(half));
    const std::size_t rh = t / std::size_t(half);
    const std::size_t r = rh / n_heads;
    float c, s;
    rope_angle(meta[r], inv_freq[i], c, s);
    rope_pair(x + rh * std::size_t(head_dim), i, half, interleaved, c, s);
  }
}

}  // namespace eexit::kernels
