#pragma once
// KV writes: each row's k, v (rows, kv_dim) into its slot at its position, and the KV fill
// of skipped layers batched over rows and layers (the paper's FillFromExitState).
#include "common.cuh"
#include "rope.cuh"

namespace eexit::kernels {

__global__ void store_kv_kernel(const float* __restrict__ k, const float* __restrict__ v,
                                std::size_t rows, RowMeta meta, float* __restrict__ kc,
                                float* __restrict__ vc, int block_size, int kv_dim) {
  const std::size_t n = rows * std::size_t(kv_dim);
  for (std::size_t t = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; t < n;
       t += std::size_t(gridDim.x) * blockDim.x) {
    const int r = int(t / std::size_t(kv_dim));
    const std::size_t i = t % std::size_t(kv_dim);
    const std::size_t s = meta.slot(r, meta.pos(r), block_size);
    kc[s * std::size_t(kv_dim) + i] = k[t];
    vc[s * std::size_t(kv_dim) + i] = v[t];
  }
}

// kv (rows, n_fill, 2, kv_dim), not yet rotated; views (n_fill, 2) device pointers. One
// block per (row, fill layer): rotate K at the row's position, write K and V into layer
// f's slot.
__global__ void fill_kv_kernel(const float* __restrict__ kv, std::size_t rows, std::size_t n_fill,
                               RowMeta meta, float* const* __restrict__ views, int block_size,
                               int n_kv_heads, int head_dim, const float* __restrict__ inv_freq,
                               bool interleaved) {
  const int kvd = n_kv_heads * head_dim, half = head_dim / 2;
  for (std::size_t b = blockIdx.x; b < rows * n_fill; b += gridDim.x) {
    const int r = int(b / n_fill);
    const std::size_t f = b % n_fill;
    const float* src = kv + b * 2 * std::size_t(kvd);
    const std::int32_t pos = meta.pos(r);
    const std::size_t s = meta.slot(r, pos, block_size) * std::size_t(kvd);
    float* kc = views[2 * f] + s;
    float* vc = views[2 * f + 1] + s;
    for (int p = threadIdx.x; p < n_kv_heads * half; p += blockDim.x) {
      const int h = p / half, i = p % half;
      const int ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + half;
      float c, sn;
      rope_angle(pos, inv_freq[i], c, sn);
      const float x0 = src[h * head_dim + ia], x1 = src[h * head_dim + ib];
      kc[h * head_dim + ia] = x0 * c - x1 * sn;
      kc[h * head_dim + ib] = x0 * sn + x1 * c;
    }
    for (int i = threadIdx.x; i < kvd; i += blockDim.x) vc[i] = src[kvd + i];
  }
}

}  // namespace eexit::kernels
