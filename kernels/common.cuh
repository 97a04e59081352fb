#pragma once
// Shared helpers of the kernels: launch shapes, warp/block reductions, row metadata.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace eexit::kernels {

constexpr int kWarp = 32;

inline unsigned grid_for(std::size_t n, int block) {
  const std::size_t g = (n + std::size_t(block) - 1) / std::size_t(block);
  return unsigned(g < 65535u * 32u ? g : 65535u * 32u);  // grid-stride loops cover the rest
}

__device__ inline float warp_sum(float v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ inline float warp_max(float v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ inline float block_sum(float v) {
  __shared__ float part[32];
  __shared__ float total;
  const int lane = threadIdx.x % kWarp, w = threadIdx.x / kWarp;
  v = warp_sum(v);
  __syncthreads();  // part may still be read by a previous call
  if (lane == 0) part[w] = v;
  __syncthreads();
  if (w == 0) {
    float s = lane < int(blockDim.x / kWarp) ? part[lane] : 0.0f;
    s = warp_sum(s);
    if (lane == 0) total = s;
  }
  __syncthreads();
  return total;
}

// Row metadata packed by CudaBackend::stage_rows:
//   [0, rows) positions, [rows, 2 rows) offsets of block tables, then the tables.
struct RowMeta {
  const std::int32_t* m;
  int rows;
  __device__ std::int32_t pos(int r) const { return m[r]; }
  __device__ const std::int32_t* table(int r) const { return m + m[rows + r]; }
  __device__ std::size_t slot(int r, std::int32_t t, int block_size) const {
    return std::size_t(table(r)[t / block_size]) * std::size_t(block_size) +
           std::size_t(t % block_size);
  }
};

}  // namespace eexit::kernels
