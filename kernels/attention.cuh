#pragma once
// Paged attention over block tables with GQA, for decode and prefill rows alike: each row
// at position pos attends to its sequence's cache positions 0..pos (its own K/V already
// stored). One block per (row, query head); each warp walks every kWarps-th key with an
// online softmax (running max, sum and output in registers: lane j holds elements
// j, j+32, ... of the head), then the warps' partial results are merged.
// Prefill rows run the same kernel (correct, not tiled): a tiled causal kernel that shares
// K/V tiles between the rows of one chunk is the planned replacement for long prompts.
#include <math_constants.h>

#include "common.cuh"

namespace eexit::kernels {

constexpr int kAttnWarps = 4;
constexpr int kAttnMaxHeadDim = 256;
constexpr int kAttnPerLane = kAttnMaxHeadDim / kWarp;

__global__ void __launch_bounds__(kAttnWarps * kWarp)
    attention_kernel(const float* __restrict__ q, float* __restrict__ out, std::size_t rows,
                     int n_heads, int n_kv_heads, int head_dim, RowMeta meta,
                     const float* __restrict__ kc, const float* __restrict__ vc, int block_size,
                     int kv_dim) {
  __shared__ float sm_m[kAttnWarps], sm_l[kAttnWarps];
  __shared__ float sm_o[kAttnWarps][kAttnMaxHeadDim];
  const int lane = threadIdx.x % kWarp, w = threadIdx.x / kWarp;
  const int group = n_heads / n_kv_heads;
  const float scale = 1.0f / sqrtf(float(head_dim));
  for (std::size_t b = blockIdx.x; b < rows * std::size_t(n_heads); b += gridDim.x) {
    const int r = int(b / std::size_t(n_heads)), h = int(b % std::size_t(n_heads));
    const float* qh = q + b * std::size_t(head_dim);
    const std::size_t koff = std::size_t(h / group) * std::size_t(head_dim);
    float qv[kAttnPerLane], o[kAttnPerLane];
#pragma unroll
    for (int j = 0; j < kAttnPerLane; ++j) {
      const int i = lane + j * kWarp;
      qv[j] = i < head_dim ? qh[i] : 0.0f;
      o[j] = 0.0f;
    }
    float m = -CUDART_INF_F, l = 0.0f;
    const std::int32_t n_ctx = meta.pos(r) + 1;
    for (std::int32_t t = w; t < n_ctx; t += kAttnWarps) {
      const std::size_t s = meta.slot(r, t, block_size) * std::size_t(kv_dim) + koff;
      const float* kt = kc + s;
      float d = 0.0f;
#pragma unroll
      for (int j = 0; j < kAttnPerLane; ++j) {
        const int i = lane + j * kWarp;
        if (i < head_dim) d += qv[j] * kt[i];
      }
      const float sc = warp_sum(d) * scale;
      const float mn = fmaxf(m, sc);
      const float corr = expf(m - mn), p = expf(sc - mn);
      l = l * corr + p;
      const float* vt = vc + s;
#pragma unroll
      for (int j = 0; j < kAttnPerLane; ++j) {
        const int i = lane + j * kWarp;
        o[j] = o[j] * corr + (i < head_dim ? p * vt[i] : 0.0f);
      }
      m = mn;
    }
    if (lane == 0) {
      sm_m[w] = m;
      sm_l[w] = l;
    }
#pragma unroll
    for (int j = 0; j < kAttnPerLane; ++j) {
      const int i = lane + j * kWarp;
      if (i < head_dim) sm_o[w][i] = o[j];
    }
    __syncthreads();
    float M = -CUDART_INF_F;
    for (int k = 0; k < kAttnWarps; ++k) M = fmaxf(M, sm_m[k]);
    float L = 0.0f;
    for (int k = 0; k < kAttnWarps; ++k) L += sm_l[k] > 0.0f ? sm_l[k] * expf(sm_m[k] - M) : 0.0f;
    for (int i = threadIdx.x; i < head_dim; i += blockDim.x) {
      float acc = 0.0f;
      for (int k = 0; k < kAttnWarps; ++k)
        if (sm_l[k] > 0.0f) acc += sm_o[k][i] * expf(sm_m[k] - M);
      out[b * std::size_t(head_dim) + i] = acc / L;
    }
    __syncthreads();  // shared memory is reused by the next (row, head)
  }
}

}  // namespace eexit::kernels
