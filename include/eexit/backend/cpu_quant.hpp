#pragma once
// Q8_0 / Q4_0 matmul with int8 activations (issue 10, item 3). Each input row is quantized
// once per matmul to Q8 blocks (32 values, an fp32 scale dx = max|x| / 127, values
// round-to-nearest-even of x / dx in [-127, 127]; llama.cpp stores that scale in fp16, we
// keep fp32: it costs nothing here and removes one rounding). A weight block (scale dw) and
// an activation block then give 8 exact int32 partial sums, lane l covering elements
// 4l..4l+3, and every output element is, in this fixed order whatever the batch size, the
// tile or the thread (DESIGN.md §3 batch invariance):
//     acc[l] = fma(float(p[b][l]), dw[b] * dx[b], acc[l])    for blocks b = 0, 1, ... in k order
//     y = ((acc0 + acc4) + (acc2 + acc6)) + ((acc1 + acc5) + (acc3 + acc7))  (+ bias)
// The integer sums are exact however they are formed, so the scalar, AVX2
// (vpmaddubsw + vpmaddwd) and AVX-512 VNNI (vpdpbusd) variants give the same bits; which
// one runs is chosen at run time by CPUID (the installed headers assume no -march flags).
//
// u8 x s8 products: vpdpbusd and vpmaddubsw multiply unsigned by signed bytes (Zen 4 has
// no vpdpbssd, that is AVX-VNNI-INT8). We use the sign trick: |w| (unsigned) times x with
// w's sign. |w| <= 128 and |x| <= 127, so a vpmaddubsw pair sum stays below 2^15 and never
// saturates; Q4_0 first turns its nibbles into signed q - 8 in [-8, 7].
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "eexit/backend/cpu_kernels.hpp"  // block_q8_0, block_q4_0, f16_scale

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define EEXIT_QUANT_X86 1
#endif

namespace eexit::detail {

// Which int8 dot-product variant runs: `best` picks the widest the CPU has; the others
// force one (tests compare them; a forced variant the CPU lacks falls back to scalar).
enum class quant_isa : std::uint8_t { best, scalar, avx2, vnni };

inline std::atomic<quant_isa>& quant_isa_override() noexcept {
  static std::atomic<quant_isa> v{quant_isa::best};
  return v;
}

inline bool cpu_has_quant_isa(quant_isa t) noexcept {
#if defined(EEXIT_QUANT_X86)
  // clang 14's __builtin_cpu_supports knows no "f16c"; every AVX2 CPU has it.
#if defined(__clang__)
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                           __builtin_cpu_supports("f16c");
#endif
  static const bool vnni =
      avx2 && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl");
  switch (t) {
    case quant_isa::avx2:
      return avx2;
    case quant_isa::vnni:
      return vnni;
    default:
      return true;
  }
#else
  return t == quant_isa::scalar || t == quant_isa::best;
#endif
}

// The variant a call runs now (override, else the widest available).
inline quant_isa quant_isa_now() noexcept {
  const quant_isa o = quant_isa_override().load(std::memory_order_relaxed);
  if (o != quant_isa::best) return cpu_has_quant_isa(o) ? o : quant_isa::scalar;
  if (cpu_has_quant_isa(quant_isa::vnni)) return quant_isa::vnni;
  if (cpu_has_quant_isa(quant_isa::avx2)) return quant_isa::avx2;
  return quant_isa::scalar;
}

inline const char* quant_isa_name(quant_isa t) noexcept {
  switch (t) {
    case quant_isa::scalar:
      return "scalar";
    case quant_isa::avx2:
      return "avx2";
    case quant_isa::vnni:
      return "avx512-vnni";
    default:
      return "best";
  }
}

// One activation row x (K), K a multiple of 32, to Q8 blocks: qs (K) int8, d (K/32) fp32.
// x = d * qs up to rounding. Non-finite inputs give garbage but no undefined behaviour.
inline void quantize_row_q8(const float* x, std::size_t K, std::int8_t* qs, float* d) noexcept {
  for (std::size_t b = 0; b < K / 32; ++b) {
    const float* xb = x + 32 * b;
    float amax = 0.0f;
    for (std::size_t j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float db = amax / 127.0f;
    const float id = db != 0.0f ? 1.0f / db : 0.0f;
    for (std::size_t j = 0; j < 32; ++j) {
      const float q = std::fmin(127.0f, std::fmax(-127.0f, std::nearbyint(xb[j] * id)));
      qs[32 * b + j] = static_cast<std::int8_t>(q);
    }
    d[b] = db;
  }
}

// Weight j (0..31) of a block as a signed integer.
inline int q_weight(const block_q8_0& b, std::size_t j) noexcept {
  return b.qs[j];
}
inline int q_weight(const block_q4_0& b, std::size_t j) noexcept {
  return (j < 16 ? (b.qs[j] & 15) : (b.qs[j - 16] >> 4)) - 8;
}

// The fixed reduction of the 8 lane accumulators (see the header comment).
inline float q_hsum8(const float* a) noexcept {
  const float t0 = a[0] + a[4], t1 = a[1] + a[5], t2 = a[2] + a[6], t3 = a[3] + a[7];
  return (t0 + t2) + (t1 + t3);
}

// The scalar variant, and the definition of the arithmetic: one output element.
template <class W>
inline float q_dot_scalar(const std::int8_t* xq, const float* xd, const W* w,
                          std::size_t nb) noexcept {
  float acc[8] = {};
  for (std::size_t b = 0; b < nb; ++b) {
    const float s = f16_scale(w[b].d) * xd[b];
    const std::int8_t* x = xq + 32 * b;
    for (std::size_t l = 0; l < 8; ++l) {
      std::int32_t p = 0;
      for (std::size_t e = 4 * l; e < 4 * l + 4; ++e) p += q_weight(w[b], e) * x[e];
      acc[l] = std::fma(float(p), s, acc[l]);
    }
  }
  return q_hsum8(acc);
}

template <class W>
inline void matmul_q8act_scalar(const std::int8_t* xq, const float* xd, std::size_t M, const W* w,
                                std::size_t K, std::size_t n0, std::size_t n1, float* y,
                                std::size_t ldy, const float* bias) noexcept {
  const std::size_t nb = K / 32;
  for (std::size_t m = 0; m < M; ++m)
    for (std::size_t n = n0; n < n1; ++n) {
      float s = q_dot_scalar(xq + m * K, xd + m * nb, w + n * nb, nb);
      if (bias) s += bias[n];
      y[m * ldy + n] = s;
    }
}

}  // namespace eexit::detail

#if defined(EEXIT_QUANT_X86)
// The SIMD variants: one body (cpu_quant_simd.inl) compiled twice, for AVX2 and for
// AVX-512 VNNI, each under its own target pragma so that no -march flag is needed.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#define EEXIT_QUANT_NS avx2q
#define EEXIT_QUANT_TARGET "avx2,fma,f16c"
#define EEXIT_QUANT_DOT(u, s) _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
#include "eexit/backend/cpu_quant_simd.inl"
#define EEXIT_QUANT_NS vnniq
#define EEXIT_QUANT_TARGET "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
#define EEXIT_QUANT_DOT(u, s) _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
#include "eexit/backend/cpu_quant_simd.inl"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif  // EEXIT_QUANT_X86

namespace eexit::detail {

// y[m, n] = x[m, :] · w[n, :] (+ bias[n]) for m in [0, M), n in [n0, n1), x given as its
// Q8 blocks (quantize_row_q8): xq (M, K) int8, xd (M, K/32). w: (N, K/32) blocks.
template <class W>
inline void matmul_q8act(const std::int8_t* xq, const float* xd, std::size_t M, const W* w,
                         std::size_t K, std::size_t n0, std::size_t n1, float* y, std::size_t ldy,
                         const float* bias) noexcept {
  switch (quant_isa_now()) {
#if defined(EEXIT_QUANT_X86)
    case quant_isa::vnni:
      return vnniq::matmul_q8act(xq, xd, M, w, K, n0, n1, y, ldy, bias);
    case quant_isa::avx2:
      return avx2q::matmul_q8act(xq, xd, M, w, K, n0, n1, y, ldy, bias);
#endif
    default:
      return matmul_q8act_scalar(xq, xd, M, w, K, n0, n1, y, ldy, bias);
  }
}

}  // namespace eexit::detail
