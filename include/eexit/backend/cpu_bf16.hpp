#pragma once
// bf16-weight matmul with bf16 activations (issue 10): each input row is rounded once per
// matmul to bf16 (round to nearest even, as vcvtne2ps2bf16: a zero or subnormal input gives
// a zero of its sign, NaN stays a quiet NaN) into a row of Kp = K rounded up to 32 elements,
// zero padded. Every output element is then, whatever the batch size, the tile or the
// thread (DESIGN.md §3 batch invariance), this fixed sequence on 16 fp32 lanes, which is
// what AVX-512 BF16's vdpbf16ps does per lane (Intel's definition: two fused multiply-adds,
// the odd element first, inputs denormals-are-zero, results flush-to-zero, round to nearest
// even, MXCSR neither read nor written; a bf16 x bf16 product is exact in fp32):
//     for each chunk c of 32 elements (k = 32c .. 32c + 31, weights past K read as +0):
//       a[l] = ftz(fma(x[k + 2l + 1], daz(w[k + 2l + 1]), a[l]))
//       a[l] = ftz(fma(x[k + 2l],     daz(w[k + 2l]),     a[l]))     l = 0 .. 15
//     y = hsum16(a) (+ bias)      (a[i] += a[i + 8], += a[i + 4], += a[i + 2], a[0] + a[1])
// daz(v): a subnormal v as a zero of its sign; ftz(r): a subnormal result as a zero of its
// sign, tininess detected after rounding (what vdpbf16ps and MXCSR FTZ do on the Zen 4
// this was checked on: a test pins the boundary case). The accumulators never hold a
// subnormal (ftz), so vdpbf16ps's DAZ on them changes nothing. The reduction and the bias
// run with ordinary IEEE arithmetic.
//
// Three variants give these bits (tests/backend/cpu_bf16_matmul_test compares them):
// scalar (the definition, any CPU), AVX2 (16 lanes as two registers; the odd element of a
// bf16 pair is the high half of its dword, the even one the low half shifted up; DAZ/FTZ
// from MXCSR, set only around the multiply-add loop) and AVX-512 BF16 (vdpbf16ps, 32
// products per instruction). Which runs is chosen at run time by CPUID; the installed
// headers assume no -march flags (each SIMD variant is compiled under a target pragma).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "eexit/backend/cpu_isa.hpp"
#include "eexit/backend/cpu_kernels.hpp"  // bf16_t

// 64-byte vectors by value (hsum16's vf16) "change the ABI" without AVX-512: moot for
// inline helpers. GCC 12's AVX-512 casts and extracts use _mm512_undefined_*: false
// "uninitialised" warnings.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace eexit::detail {

// Which bf16 dot-product variant runs: `best` picks the fastest the CPU has; the others
// force one (tests compare them; a forced variant the CPU lacks falls back to scalar).
enum class bf16_isa : std::uint8_t { best, scalar, avx2, avx512bf16 };

template <>
struct isa_traits<bf16_isa> {
  static constexpr bf16_isa last = bf16_isa::avx512bf16;
  static constexpr const char* names[] = {"best", "scalar", "avx2 (emulated dpbf16)",
                                          "avx512-bf16"};
  static bool supported(bf16_isa t) noexcept {
    static const bool avx2 = EEXIT_CPU_SUPPORTS("avx2") && EEXIT_CPU_SUPPORTS("fma");
    static const bool bf16 = avx2 && EEXIT_CPU_SUPPORTS("avx512bw") &&
                             EEXIT_CPU_SUPPORTS("avx512vl") && EEXIT_CPU_SUPPORTS("avx512bf16");
    return t == bf16_isa::avx512bf16 ? bf16 : t == bf16_isa::avx2 && avx2;
  }
};
// The names tests and benchmarks use (cpu_isa.hpp has the one implementation). All variants
// give the same bits, so the choice never changes results.
inline constexpr auto& bf16_isa_override = isa_override<bf16_isa>;
inline constexpr auto& cpu_has_bf16_isa = isa_supported<bf16_isa>;
inline constexpr auto& bf16_isa_now = isa_now<bf16_isa>;
inline constexpr auto& bf16_isa_name = isa_name<bf16_isa>;

// Row length of the rounded activations: K rounded up to whole 32-element chunks.
inline constexpr std::size_t bf16_padded(std::size_t K) noexcept {
  return (K + 31) / 32 * 32;
}

inline std::uint32_t f32_bits(float v) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &v, 4);
  return u;
}
inline float bits_f32(std::uint32_t u) noexcept {
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}

// vcvtne2ps2bf16 on one value (Intel's convert_fp32_to_bfloat16). Branch-free selects so
// that the row loop vectorises.
inline std::uint16_t round_bf16(float v) noexcept {
  const std::uint32_t u = f32_bits(v);
  const std::uint32_t mag = u & 0x7FFFFFFFu;
  const std::uint32_t nearest = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;  // inf stays inf
  const std::uint32_t r = (u & 0x7F800000u) == 0 ? (u >> 16) & 0x8000u   // zero, subnormal
                          : mag > 0x7F800000u    ? (u >> 16) | 0x40u     // quiet NaN
                                                 : nearest;
  return std::uint16_t(r);
}

// One activation row x (K) to xb (bf16_padded(K)): rounded, zero padded.
inline void round_row_bf16(const float* x, std::size_t K, std::uint16_t* xb) noexcept {
  for (std::size_t k = 0; k < K; ++k) xb[k] = round_bf16(x[k]);
  for (std::size_t k = K; k < bf16_padded(K); ++k) xb[k] = 0;
}

inline float bf16_daz(std::uint16_t h) noexcept {
  const std::uint32_t u = std::uint32_t(h) << 16;
  return bits_f32((u & 0x7F800000u) == 0 ? u & 0x80000000u : u);
}
// hsum16's order on 16 lanes in memory (hsum16 takes a 64-byte vector by value, which a
// build without AVX-512 notes as an ABI change at every call site).
inline float hsum16_lanes(float* a) noexcept {
  for (int w = 8; w >= 1; w /= 2)
    for (int i = 0; i < w; ++i) a[i] += a[i + w];
  return a[0];
}
inline float f32_ftz(float r) noexcept {
  const std::uint32_t u = f32_bits(r);
  return (u & 0x7F800000u) == 0 ? bits_f32(u & 0x80000000u) : r;
}

// The scalar variant, and the definition of the arithmetic: one output element.
// xb: bf16_padded(K) rounded activations; w: K weights.
inline float bf16_dot_scalar(const std::uint16_t* xb, const bf16_t* w, std::size_t K) noexcept {
  float a[16] = {};
  for (std::size_t c = 0; c < K; c += 32)
    for (std::size_t l = 0; l < 16; ++l)
      for (const std::size_t e : {c + 2 * l + 1, c + 2 * l}) {
        const float we = e < K ? bf16_daz(w[e].bits) : 0.0f;
        a[l] = f32_ftz(std::fma(bf16_daz(xb[e]), we, a[l]));
      }
  return hsum16_lanes(a);
}

// y[m, n] = xb[m, :] · w[n, :] (+ bias[n]), m in [0, M), n in [n0, n1); xb: (M, ldx) rounded
// rows (ldx >= bf16_padded(K)), w: (N, K), y: (M, ldy).
inline void matmul_bf16act_scalar(const std::uint16_t* xb, std::size_t ldx, std::size_t M,
                                  const bf16_t* w, std::size_t K, std::size_t n0, std::size_t n1,
                                  float* y, std::size_t ldy, const float* bias) noexcept {
  for (std::size_t m = 0; m < M; ++m)
    for (std::size_t n = n0; n < n1; ++n) {
      float s = bf16_dot_scalar(xb + m * ldx, w + n * K, K);
      if (bias) s += bias[n];
      y[m * ldy + n] = s;
    }
}

}  // namespace eexit::detail

#if defined(EEXIT_ISA_X86)
EEXIT_TARGET_BEGIN("avx2,fma")
namespace eexit::detail::avx2b {

// The 16 lanes of MR rows x NR outputs at output n, into lanes[i][j][0..15], under the
// caller's MXCSR (DAZ | FTZ). Not inlined: no arithmetic of the caller can be moved into
// the region where the flags are set.
template <std::size_t MR, std::size_t NR>
__attribute__((noinline)) void lanes(const std::uint16_t* xb, std::size_t ldx, const bf16_t* w,
                                     std::size_t K, std::size_t n, float (*out)[NR][16]) noexcept {
  __m256 acc[MR][NR][2];
#pragma GCC unroll 4
  for (std::size_t i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (std::size_t j = 0; j < NR; ++j) acc[i][j][0] = acc[i][j][1] = _mm256_setzero_ps();
  const __m256i hi = _mm256_set1_epi32(int(0xFFFF0000u));
  const bf16_t* wr = w + n * K;
  for (std::size_t k = 0; k < K; k += 32) {
    const std::size_t left = K - k;
#pragma GCC unroll 2
    for (std::size_t h = 0; h < 2; ++h) {  // elements k + 16h .. k + 16h + 15: lanes 8h ..
      __m256i wo[NR], we[NR];
#pragma GCC unroll 4
      for (std::size_t j = 0; j < NR; ++j) {
        __m256i v;
        const bf16_t* p = wr + j * K + k + 16 * h;
        if (left >= 16 * h + 16) {
          v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
        } else {  // the last chunk: weights past K as +0
          alignas(32) std::uint16_t t[16] = {};
          if (left > 16 * h) std::memcpy(t, p, (left - 16 * h) * 2);
          v = _mm256_load_si256(reinterpret_cast<const __m256i*>(t));
        }
        wo[j] = _mm256_and_si256(v, hi);
        we[j] = _mm256_slli_epi32(v, 16);
      }
#pragma GCC unroll 4
      for (std::size_t i = 0; i < MR; ++i) {
        const __m256i v =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb + i * ldx + k + 16 * h));
        const __m256 xo = _mm256_castsi256_ps(_mm256_and_si256(v, hi));
        const __m256 xe = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
#pragma GCC unroll 4
        for (std::size_t j = 0; j < NR; ++j) {
          acc[i][j][h] = _mm256_fmadd_ps(xo, _mm256_castsi256_ps(wo[j]), acc[i][j][h]);
          acc[i][j][h] = _mm256_fmadd_ps(xe, _mm256_castsi256_ps(we[j]), acc[i][j][h]);
        }
      }
    }
  }
  for (std::size_t i = 0; i < MR; ++i)
    for (std::size_t j = 0; j < NR; ++j) {
      _mm256_storeu_ps(out[i][j], acc[i][j][0]);
      _mm256_storeu_ps(out[i][j] + 8, acc[i][j][1]);
    }
}

template <std::size_t MR, std::size_t NR>
inline void tile(const std::uint16_t* xb, std::size_t ldx, const bf16_t* w, std::size_t K,
                 std::size_t n, float* y, std::size_t ldy, const float* bias) noexcept {
  float l[MR][NR][16];
  const unsigned csr = _mm_getcsr();
  _mm_setcsr(csr | 0x8040u);  // FTZ (bit 15) and DAZ (bit 6): vdpbf16ps's rules
  lanes<MR, NR>(xb, ldx, w, K, n, l);
  _mm_setcsr(csr);
  store_tile<MR, NR>([&](std::size_t i, std::size_t j) { return hsum16_lanes(l[i][j]); }, n, y, ldy,
                     bias);
}

// 16 registers: 1 x 4 tiles for one row, 2 x 2 otherwise (two accumulators each).
inline void matmul_bf16act(const std::uint16_t* xb, std::size_t ldx, std::size_t M, const bf16_t* w,
                           std::size_t K, std::size_t n0, std::size_t n1, float* y, std::size_t ldy,
                           const float* bias) noexcept {
  std::size_t m = 0;
  for (; m + 2 <= M; m += 2) {
    std::size_t n = n0;
    for (; n + 2 <= n1; n += 2) tile<2, 2>(xb + m * ldx, ldx, w, K, n, y + m * ldy, ldy, bias);
    for (; n < n1; ++n) tile<2, 1>(xb + m * ldx, ldx, w, K, n, y + m * ldy, ldy, bias);
  }
  if (m < M) {
    std::size_t n = n0;
    for (; n + 4 <= n1; n += 4) tile<1, 4>(xb + m * ldx, ldx, w, K, n, y + m * ldy, ldy, bias);
    for (; n < n1; ++n) tile<1, 1>(xb + m * ldx, ldx, w, K, n, y + m * ldy, ldy, bias);
  }
}

}  // namespace eexit::detail::avx2b
EEXIT_TARGET_END

EEXIT_TARGET_BEGIN("avx2,fma,avx512f,avx512bw,avx512vl,avx512bf16")
namespace eexit::detail::avx512b {

// hsum16's order on a register: halves, then quarters, then lanes 0 + 2 | 1 + 3, then 0 + 1.
inline float hsum(__m512 v) noexcept {
  const __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v),
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  const __m128 t = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  const __m128 u = _mm_add_ps(t, _mm_movehl_ps(t, t));
  return _mm_cvtss_f32(_mm_add_ss(u, _mm_shuffle_ps(u, u, 1)));
}

// hsum of four registers at once, the same additions per register (each step adds the same
// pairs; a + b == b + a exactly), so the four sums are bitwise hsum's: y[0..3] = the sums
// (+ bias[0..3] where bias is given).
inline void hsum4(__m512 a, __m512 b, __m512 c, __m512 d, const float* bias, float* y) noexcept {
  // [a.s8 | b.s8], [c.s8 | d.s8]: s8[i] = v[i] + v[i + 8]
  const __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(3, 2, 3, 2)));
  // [a.s4 | b.s4 | c.s4 | d.s4]: s4[i] = s8[i] + s8[i + 4]
  const __m512 s4 = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(3, 1, 3, 1)));
  // per group of four: s2[i] = s4[i] + s4[i + 2], then s1 = s2[0] + s2[1]
  const __m512 s2 = _mm512_add_ps(s4, _mm512_permute_ps(s4, _MM_SHUFFLE(1, 0, 3, 2)));
  const __m512 s1 = _mm512_add_ps(s2, _mm512_permute_ps(s2, _MM_SHUFFLE(2, 3, 0, 1)));
  __m128 r = _mm512_castps512_ps128(
      _mm512_permutexvar_ps(_mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0), s1));
  if (bias) r = _mm_add_ps(r, _mm_loadu_ps(bias));
  _mm_storeu_ps(y, r);
}

// MR rows x NR outputs at output n: each weight chunk is loaded once for all MR rows.
// Prefetch: also fetch the next NR weight rows, one cache line per row and step.
template <std::size_t MR, std::size_t NR, bool Prefetch = false>
inline void tile(const std::uint16_t* xb, std::size_t ldx, const bf16_t* w, std::size_t K,
                 std::size_t n, float* y, std::size_t ldy, const float* bias) noexcept {
  __m512 acc[MR][NR];
#pragma GCC unroll 8
  for (std::size_t i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (std::size_t j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  const bf16_t* wr = w + n * K;
  auto step = [&](std::size_t k, __mmask32 mask) __attribute__((always_inline)) {
    __m512i wv[NR];
#pragma GCC unroll 8
    for (std::size_t j = 0; j < NR; ++j) wv[j] = _mm512_maskz_loadu_epi16(mask, wr + j * K + k);
    if constexpr (Prefetch) {
#pragma GCC unroll 8
      for (std::size_t j = 0; j < NR; ++j) __builtin_prefetch(wr + (NR + j) * K + k, 0, 3);
    }
#pragma GCC unroll 8
    for (std::size_t i = 0; i < MR; ++i) {
      const __m512i xv = _mm512_loadu_si512(xb + i * ldx + k);
#pragma GCC unroll 8
      for (std::size_t j = 0; j < NR; ++j)
        acc[i][j] = _mm512_dpbf16_ps(acc[i][j], (__m512bh)xv, (__m512bh)wv[j]);
    }
  };
  std::size_t k = 0;
  for (; k + 32 <= K; k += 32) step(k, ~__mmask32(0));
  if (k < K) step(k, __mmask32((std::uint64_t(1) << (K - k)) - 1));
  if constexpr (NR % 4 == 0) {
#pragma GCC unroll 8
    for (std::size_t i = 0; i < MR; ++i)
#pragma GCC unroll 2
      for (std::size_t j = 0; j < NR; j += 4)
        hsum4(acc[i][j], acc[i][j + 1], acc[i][j + 2], acc[i][j + 3], bias ? bias + n + j : nullptr,
              y + i * ldy + n + j);
    return;
  }
  store_tile<MR, NR>([&](std::size_t i, std::size_t j) { return hsum(acc[i][j]); }, n, y, ldy,
                     bias);
}

// One tile of mr (1..6) rows x NR outputs.
template <std::size_t NR, bool Prefetch = false>
inline void tile_m(std::size_t mr, const std::uint16_t* xb, std::size_t ldx, const bf16_t* w,
                   std::size_t K, std::size_t n, float* y, std::size_t ldy,
                   const float* bias) noexcept {
  switch (mr) {
    case 1:
      return tile<1, NR, Prefetch>(xb, ldx, w, K, n, y, ldy, bias);
    case 2:
      return tile<2, NR, Prefetch>(xb, ldx, w, K, n, y, ldy, bias);
    case 3:
      return tile<3, NR, Prefetch>(xb, ldx, w, K, n, y, ldy, bias);
    case 4:
      return tile<4, NR, Prefetch>(xb, ldx, w, K, n, y, ldy, bias);
    case 5:
      return tile<5, NR, Prefetch>(xb, ldx, w, K, n, y, ldy, bias);
    default:
      return tile<6, NR, Prefetch>(xb, ldx, w, K, n, y, ldy, bias);
  }
}

// matmul_xwt's schedule: decode (1-2 rows) takes 8 outputs per tile so that 8 weight rows
// stream at once; more rows take 6 x 4 tiles (24 accumulators, 4 W and 1 x register of 32).
inline void matmul_bf16act(const std::uint16_t* xb, std::size_t ldx, std::size_t M, const bf16_t* w,
                           std::size_t K, std::size_t n0, std::size_t n1, float* y, std::size_t ldy,
                           const float* bias) noexcept {
  constexpr std::size_t mr = 6;
  if (M <= 2) {
    std::size_t n = n0;
    for (; n + 8 <= n1; n += 8) tile_m<8>(M, xb, ldx, w, K, n, y, ldy, bias);
    for (; n < n1; ++n) tile_m<1>(M, xb, ldx, w, K, n, y, ldy, bias);
    return;
  }
  if (M <= 48) {
    // Streaming: W read from memory once; each group of 4 W rows is used by every row tile
    // while it is in L1 (the rows, M * K * 2 bytes, stay in L2), and the first row tile
    // prefetches the next 4 W rows.
    std::size_t n = n0;
    for (; n + 4 <= n1; n += 4) {
      tile_m<4, true>(std::min(mr, M), xb, ldx, w, K, n, y, ldy, bias);
      for (std::size_t m0 = mr; m0 < M; m0 += mr)
        tile_m<4>(std::min(mr, M - m0), xb + m0 * ldx, ldx, w, K, n, y + m0 * ldy, ldy, bias);
    }
    for (; n < n1; ++n)
      for (std::size_t m0 = 0; m0 < M; m0 += mr)
        tile_m<1>(std::min(mr, M - m0), xb + m0 * ldx, ldx, w, K, n, y + m0 * ldy, ldy, bias);
    return;
  }
  // Prefill: a block of W (512 KiB) stays in L2 while each row tile (in L1) passes all of it;
  // the rows stream once per block.
  const std::size_t nb =
      std::max<std::size_t>(8, 512 * 1024 / 2 / std::max<std::size_t>(K, 1) / 8 * 8);
  for (std::size_t nb0 = n0; nb0 < n1; nb0 += nb) {
    const std::size_t nb1 = std::min(n1, nb0 + nb);
    for (std::size_t m0 = 0; m0 < M; m0 += mr) {
      const std::size_t r = std::min(mr, M - m0);
      std::size_t n = nb0;
      for (; n + 4 <= nb1; n += 4)
        tile_m<4>(r, xb + m0 * ldx, ldx, w, K, n, y + m0 * ldy, ldy, bias);
      for (; n < nb1; ++n) tile_m<1>(r, xb + m0 * ldx, ldx, w, K, n, y + m0 * ldy, ldy, bias);
    }
  }
}

}  // namespace eexit::detail::avx512b
EEXIT_TARGET_END

#endif  // EEXIT_ISA_X86

namespace eexit::detail {

// y[m, n] = xb[m, :] · w[n, :] (+ bias[n]) for m in [0, M), n in [n0, n1) with the
// arithmetic of the header comment. xb: (M, ldx) rows from round_row_bf16 (ldx >=
// bf16_padded(K)); w: (N, K) bf16; y: (M, ldy).
inline void matmul_bf16act(const std::uint16_t* xb, std::size_t ldx, std::size_t M, const bf16_t* w,
                           std::size_t K, std::size_t n0, std::size_t n1, float* y, std::size_t ldy,
                           const float* bias) noexcept {
  switch (bf16_isa_now()) {
#if defined(EEXIT_ISA_X86)
    case bf16_isa::avx512bf16:
      return avx512b::matmul_bf16act(xb, ldx, M, w, K, n0, n1, y, ldy, bias);
    case bf16_isa::avx2:
      return avx2b::matmul_bf16act(xb, ldx, M, w, K, n0, n1, y, ldy, bias);
#endif
    default:
      return matmul_bf16act_scalar(xb, ldx, M, w, K, n0, n1, y, ldy, bias);
  }
}

}  // namespace eexit::detail

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
