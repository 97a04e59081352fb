#pragma once
// The CPU exit-score kernel: one row of logits -> max probability, top-1 minus top-2
// probability, entropy (nats) and the argmax, in float, 16 lanes at a time. It runs for
// every active decode row at every exit point, so it is two streaming passes and no
// double math:
//   pass 1: per lane the two largest logits (m2 = max(m2, min(m1, z)); m1 = max(m1, z)),
//           merged across lanes; the argmax is the first index holding the maximum;
//   pass 2: S = Σ e^(z-m1) and Sz = Σ e^(z-m1)·(z-m1), with a polynomial exp that the
//           compiler vectorises (std::exp does not vectorise without -ffast-math).
// Every exponent is <= 0 after the max-subtraction, so nothing overflows; p1 = 1/S,
// p2 = e^(m2-m1)/S, H = log S - Sz/S.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "eexit/backend/cpu_kernels.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace eexit::detail {

typedef std::int32_t vi16 __attribute__((vector_size(64), aligned(4)));

// e^d for d <= 0, 16 lanes: d = n·ln2 + r with |r| <= ln2/2, e^r by its degree-6 Taylor
// polynomial (relative error < 2e-7), 2^n from the exponent bits. d is clamped at -87 so
// that 2^n stays a normal float; e^-87 ~ 1.6e-38 is nothing next to the max's term 1.
// d must already be clamped (clamp_exp16): the entropy term e·d uses the same d.
inline vf16 clamp_exp16(vf16 d) noexcept {
  const vf16 lo = vf16{} - 87.0f;
  return d < lo ? lo : d;
}
inline vf16 exp_nonpos16(vf16 d) noexcept {
  const vf16 t = d * 1.44269504088896341f;
  // Round to nearest: adding and subtracting 1.5·2^23 drops the fraction (|t| < 2^22).
  const vf16 n = (t + 12582912.0f) - 12582912.0f;
  const vf16 r = (d - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  vf16 p = r * (1.0f / 720) + (1.0f / 120);
  p = p * r + (1.0f / 24);
  p = p * r + (1.0f / 6);
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const vi16 bits = (__builtin_convertvector(n, vi16) + 127) << 23;
  vf16 scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// out[0..2] = max prob, top-1 - top-2 prob, entropy; *top1 = argmax (ties: lowest id).
inline void exit_scores_row(const float* z, std::size_t n, float* out,
                            std::int32_t* top1) noexcept {
  constexpr std::size_t W = 16;
  const std::size_t nv = n / W * W;
  float m1 = -INFINITY, m2 = -INFINITY;
  auto push = [&](float v) {
    if (v > m1) {
      m2 = m1;
      m1 = v;
    } else if (v > m2) {
      m2 = v;
    }
  };
  if (nv) {
    vf16 a = load16(z), b = vf16{} - INFINITY;  // per lane: largest, second largest
    for (std::size_t i = W; i < nv; i += W) {
      const vf16 v = load16(z + i);
      const vf16 lo = v < a ? v : a;
      a = v > a ? v : a;
      b = lo > b ? lo : b;
    }
    float la[W], lb[W];
    std::memcpy(la, &a, sizeof la);
    std::memcpy(lb, &b, sizeof lb);
    for (std::size_t k = 0; k < W; ++k) push(la[k]);
    for (std::size_t k = 0; k < W; ++k) push(lb[k]);
  }
  for (std::size_t i = nv; i < n; ++i) push(z[i]);
  std::size_t arg = 0;
  while (arg + 1 < n && !(z[arg] == m1)) ++arg;
  vf16 s{}, sz{};
  for (std::size_t i = 0; i < nv; i += W) {
    const vf16 d = clamp_exp16(load16(z + i) - m1), e = exp_nonpos16(d);
    s += e;
    sz += e * d;
  }
  float S = hsum16(s), Sz = hsum16(sz);
  for (std::size_t i = nv; i < n; ++i) {
    const float d = std::max(z[i] - m1, -87.0f), e = std::exp(d);  // the lanes' clamp
    S += e;
    Sz += e * d;
  }
  const float p1 = 1.0f / S;
  const float p2 = n > 1 ? std::exp(m2 - m1) / S : 0.0f;
  out[0] = p1;
  out[1] = p1 - p2;
  out[2] = std::log(S) - Sz / S;
  *top1 = std::int32_t(arg);
}

}  // namespace eexit::detail

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
