#pragma once
// Token choice on the device: argmax (greedy; ties -> lowest id, as the host sampler) and
// temperature / top-k / top-p sampling over logits sorted per row by CUB (see
// eexit_kernels.cu: DeviceSegmentedSort on the context's stream).
#include <math_constants.h>

#include "common.cuh"

namespace eexit::kernels {

// One block per row.
__global__ void argmax_kernel(const float* __restrict__ logits, std::size_t rows,
                              std::size_t vocab, std::int32_t* __restrict__ out) {
  __shared__ float sv[32];
  __shared__ int si[32];
  const int lane = threadIdx.x % kWarp, w = threadIdx.x / kWarp;
  for (std::size_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* z = logits + r * vocab;
    float bv = -CUDART_INF_F;
    int bi = 0x7fffffff;
    for (std::size_t i = threadIdx.x; i < vocab; i += blockDim.x)
      if (z[i] > bv) {  // ascending i per thread: the first max wins
        bv = z[i];
        bi = int(i);
      }
    for (int o = kWarp / 2; o > 0; o /= 2) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (ov > bv || (ov == bv && oi < bi)) {
        bv = ov;
        bi = oi;
      }
    }
    if (lane == 0) {
      sv[w] = bv;
      si[w] = bi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int k = 1; k < int(blockDim.x / kWarp); ++k)
        if (sv[k] > bv || (sv[k] == bv && si[k] < bi)) {
          bv = sv[k];
          bi = si[k];
        }
      // All -inf or NaN rows: id 0 rather than an out-of-range id.
      out[r] = bi == 0x7fffffff ? 0 : bi;
    }
    __syncthreads();
  }
}

// Segment offsets for the per-row sort: offsets[r] = r * vocab, r in [0, rows].
__global__ void row_offsets_kernel(int* offsets, std::size_t rows, std::size_t vocab) {
  for (std::size_t r = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; r <= rows;
       r += std::size_t(gridDim.x) * blockDim.x)
    offsets[r] = int(r * vocab);
}
__global__ void iota_rows_kernel(int* ids, std::size_t rows, std::size_t vocab) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < rows * vocab;
       i += std::size_t(gridDim.x) * blockDim.x)
    ids[i] = int(i % vocab);
}

// sorted (rows, vocab) logits descending with their ids. One thread per row (correct
// first: the walk stops at the top-k / top-p cut, which is short for the usual settings).
// p_i ∝ e^((z_i - z_0) / T) over the first k; keep the shortest prefix whose mass reaches
// top_p; draw with u[r] over the kept mass.
__global__ void sample_sorted_kernel(const float* __restrict__ sorted, const int* __restrict__ ids,
                                     std::size_t rows, std::size_t vocab, float temperature,
                                     int top_k, float top_p, const float* __restrict__ u,
                                     std::int32_t* __restrict__ out) {
  for (std::size_t r = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; r < rows;
       r += std::size_t(gridDim.x) * blockDim.x) {
    const float* z = sorted + r * vocab;
    const int* id = ids + r * vocab;
    const std::size_t k = top_k > 0 && std::size_t(top_k) < vocab ? std::size_t(top_k) : vocab;
    const double inv_t = 1.0 / double(temperature), z0 = double(z[0]);
    double total = 0.0;
    for (std::size_t i = 0; i < k; ++i) total += exp((double(z[i]) - z0) * inv_t);
    std::size_t keep = k;
    if (top_p < 1.0f) {
      double cum = 0.0;
      for (std::size_t i = 0; i < k; ++i) {
        cum += exp((double(z[i]) - z0) * inv_t);
        if (cum >= double(top_p) * total) {
          keep = i + 1;
          total = cum;
          break;
        }
      }
    }
    const double target = double(u[r]) * total;
    double cum = 0.0;
    std::size_t pick = keep - 1;
    for (std::size_t i = 0; i < keep; ++i) {
      cum += exp((double(z[i]) - z0) * inv_t);
      if (cum > target) {
        pick = i;
        break;
      }
    }
    out[r] = id[pick];
  }
}

}  // namespace eexit::kernels
