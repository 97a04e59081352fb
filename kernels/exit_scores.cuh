#pragma once
// Exit confidence fused over the vocabulary: per row of logits, in one pass, the running
// max m, Z = Σ e^(z-m), S = Σ e^(z-m)(z-m) (rescaled when m grows) and the top-2 values,
// merged across the block. Then max prob = 1/Z, top-2 margin = (1 - e^(m2-m))/Z and
// entropy = log Z - S/Z: what policy/measures.hpp computes on the host, in double like it.
#include <math_constants.h>

#include "common.cuh"

namespace eexit::kernels {

struct SoftmaxAcc {
  double m, z, s;  // running max, Σ e^(x-m), Σ e^(x-m)(x-m)
  float t1, t2;    // top-1 and top-2 values (duplicates count: t2 == t1 on a tie)
  int i1;          // index of t1, lowest on ties

  __device__ void init() {
    m = -CUDART_INF;
    z = 0.0;
    s = 0.0;
    t1 = t2 = -CUDART_INF_F;
    i1 = 0x7fffffff;
  }
  __device__ void push(float x, int i) {
    const double xd = double(x);
    if (xd > m) {
      const double c = exp(m - xd);  // 0 when m is -inf
      s = z > 0.0 ? c * (s + (m - xd) * z) : 0.0;
      z = z * c;
      m = xd;
    }
    const double e = exp(xd - m);
    z += e;
    s += e * (xd - m);
    if (x > t1 || (x == t1 && i < i1)) {
      t2 = t1;
      t1 = x;
      i1 = i;
    } else if (x > t2) {
      t2 = x;
    }
  }
  __device__ void merge(const SoftmaxAcc& o) {
    if (o.z > 0.0) {
      const double M = fmax(m, o.m);
      const double ca = z > 0.0 ? exp(m - M) : 0.0, cb = exp(o.m - M);
      const double sa = z > 0.0 ? ca * (s + (m - M) * z) : 0.0;
      s = sa + cb * (o.s + (o.m - M) * o.z);
      z = z * ca + o.z * cb;
      m = M;
    }
    if (o.t1 > t1 || (o.t1 == t1 && o.i1 < i1)) {
      t2 = fmaxf(t1, o.t2);
      t1 = o.t1;
      i1 = o.i1;
    } else {
      t2 = fmaxf(t2, o.t1);
    }
  }
  __device__ void shfl_merge(int offset) {
    SoftmaxAcc o;
    o.m = __shfl_xor_sync(0xffffffffu, m, offset);
    o.z = __shfl_xor_sync(0xffffffffu, z, offset);
    o.s = __shfl_xor_sync(0xffffffffu, s, offset);
    o.t1 = __shfl_xor_sync(0xffffffffu, t1, offset);
    o.t2 = __shfl_xor_sync(0xffffffffu, t2, offset);
    o.i1 = __shfl_xor_sync(0xffffffffu, i1, offset);
    merge(o);
  }
};

// One block per row (blockDim.x a multiple of 32). out (rows, 3): p1, margin, entropy.
// Either output may be null.
__global__ void exit_scores_kernel(const float* __restrict__ logits, std::size_t rows,
                                   std::size_t vocab, float* __restrict__ out,
                                   std::int32_t* __restrict__ top1) {
  __shared__ SoftmaxAcc part[32];
  const int lane = threadIdx.x % kWarp, w = threadIdx.x / kWarp;
  for (std::size_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* z = logits + r * vocab;
    SoftmaxAcc a;
    a.init();
    for (std::size_t i = threadIdx.x; i < vocab; i += blockDim.x) a.push(z[i], int(i));
    for (int o = kWarp / 2; o > 0; o /= 2) a.shfl_merge(o);
    if (lane == 0) part[w] = a;
    __syncthreads();
    if (threadIdx.x == 0) {
      SoftmaxAcc t = part[0];
      for (int k = 1; k < int(blockDim.x / kWarp); ++k) t.merge(part[k]);
      if (out) {
        const double p1 = 1.0 / t.z;
        const double p2 = vocab > 1 ? exp(double(t.t2) - t.m) / t.z : 0.0;
        out[r * 3 + 0] = float(p1);
        out[r * 3 + 1] = float(p1) - float(p2);
        out[r * 3 + 2] = float(log(t.z) - t.s / t.z);
      }
      if (top1) top1[r] = t.i1;
    }
    __syncthreads();
  }
}

}  // namespace eexit::kernels
