#pragma once
// The CPU backend's compute kernels. Every output element is computed by one fixed
// sequence of operations that does not depend on how many rows are in the batch or
// which thread runs it: a sequence's tokens never depend on what else is batched with
// it (DESIGN.md §3 invariant). This is why projections use our own kernel rather than
// OpenBLAS sgemm, whose blocking (and so rounding) changes with the row count.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>

namespace eexit::detail {

// 16 floats: one AVX-512 register, or two AVX2 / four SSE registers where the compiler
// targets those; the arithmetic order is the same on all of them.
typedef float vf16 __attribute__((vector_size(64), aligned(4)));

inline vf16 load16(const float* p) noexcept {
  vf16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Fixed-order horizontal sum: pairwise halves, the same for every element.
inline float hsum16(vf16 v) noexcept {
  float a[16];
  std::memcpy(a, &v, sizeof a);
  for (int w = 8; w >= 1; w /= 2)
    for (int i = 0; i < w; ++i) a[i] += a[i + w];
  return a[0];
}

// Tail of a dot product (k % 16 elements), same order everywhere.
inline float tail_dot(const float* x, const float* w, std::size_t k0, std::size_t k) noexcept {
  float s = 0.0f;
  for (std::size_t i = k0; i < k; ++i) s += x[i] * w[i];
  return s;
}

// y[m, n] = dot(x[m, :], w[n, :]) (+ bias[n]) for m in [0, M), n in [n0, n1).
// x: (M, K) row stride ldx; w: (N, K) contiguous rows; y: (M, N) row stride ldy.
// Tiles of 4 rows x 4 outputs keep 16 accumulators in registers; edges use the same
// per-element arithmetic, so tiling never changes a value.
inline void matmul_xwt(const float* x, std::size_t M, std::size_t ldx, const float* w,
                       std::size_t K, std::size_t n0, std::size_t n1, float* y, std::size_t ldy,
                       const float* bias) noexcept {
  const std::size_t K16 = K / 16 * 16;
  constexpr std::size_t MR = 4, NR = 4;
  // Block over outputs so that a block of W stays in L2 while every row tile passes it.
  const std::size_t nb = std::max<std::size_t>(NR, (256 * 1024 / 4 / std::max<std::size_t>(K, 1)) / NR * NR);
  for (std::size_t nb0 = n0; nb0 < n1; nb0 += nb) {
    const std::size_t nb1 = std::min(n1, nb0 + nb);
    for (std::size_t m0 = 0; m0 < M; m0 += MR) {
      const std::size_t mr = std::min(MR, M - m0);
      std::size_t n = nb0;
      if (mr == MR) {
        for (; n + NR <= nb1; n += NR) {
          vf16 acc[MR][NR] = {};
          const float* xr[MR] = {x + (m0 + 0) * ldx, x + (m0 + 1) * ldx, x + (m0 + 2) * ldx,
                                 x + (m0 + 3) * ldx};
          const float* wr[NR] = {w + (n + 0) * K, w + (n + 1) * K, w + (n + 2) * K,
                                 w + (n + 3) * K};
          for (std::size_t k = 0; k < K16; k += 16) {
            vf16 wv[NR];
            for (std::size_t j = 0; j < NR; ++j) wv[j] = load16(wr[j] + k);
            for (std::size_t i = 0; i < MR; ++i) {
              const vf16 xv = load16(xr[i] + k);
              for (std::size_t j = 0; j < NR; ++j) acc[i][j] += xv * wv[j];
            }
          }
          for (std::size_t i = 0; i < MR; ++i)
            for (std::size_t j = 0; j < NR; ++j) {
              float s = hsum16(acc[i][j]) + tail_dot(xr[i], wr[j], K16, K);
              if (bias) s += bias[n + j];
              y[(m0 + i) * ldy + n + j] = s;
            }
        }
      }
      // Edge: remaining outputs (or a short row tile), one row at a time, 4 outputs wide.
      for (std::size_t i = 0; i < mr; ++i) {
        const float* xr = x + (m0 + i) * ldx;
        std::size_t nn = (mr == MR) ? n : nb0;
        for (; nn < nb1; ++nn) {
          const float* wr = w + nn * K;
          vf16 acc = {};
          for (std::size_t k = 0; k < K16; k += 16) acc += load16(xr + k) * load16(wr + k);
          float s = hsum16(acc) + tail_dot(xr, wr, K16, K);
          if (bias) s += bias[nn];
          y[(m0 + i) * ldy + nn] = s;
        }
      }
    }
  }
}

inline float dot(const float* a, const float* b, std::size_t n) noexcept {
  const std::size_t n16 = n / 16 * 16;
  vf16 acc = {};
  for (std::size_t k = 0; k < n16; k += 16) acc += load16(a + k) * load16(b + k);
  return hsum16(acc) + tail_dot(a, b, n16, n);
}

inline void rmsnorm_row(const float* x, const float* w, float* y, std::size_t dim, float eps) noexcept {
  float ss = 0.0f;
  for (std::size_t i = 0; i < dim; ++i) ss += x[i] * x[i];
  const float inv = 1.0f / std::sqrt(ss / float(dim) + eps);
  for (std::size_t i = 0; i < dim; ++i) y[i] = w[i] * (x[i] * inv);
}

inline float silu(float x) noexcept { return x / (1.0f + std::exp(-x)); }

}  // namespace eexit::detail
