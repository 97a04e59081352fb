#pragma once
// The CPU backend's compute kernels. Every output element is computed by one fixed
// sequence of operations that does not depend on how many rows are in the batch or
// which thread runs it: a sequence's tokens never depend on what else is batched with
// it (DESIGN.md §3 invariant). This is why projections use our own kernel rather than
// OpenBLAS sgemm, whose blocking (and so rounding) changes with the row count.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "eexit/core/dtype.hpp"    // f16_to_f32
#include "eexit/model/config.hpp"  // rope_style

#if defined(__AVX512F__) || defined(__F16C__)
#include <immintrin.h>
#endif

// Without AVX-512 enabled, GCC warns that passing 64-byte vectors by value "changes the
// ABI". These helpers are inline and never cross a library boundary, so the note is moot.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
// GCC 12 flags the _mm512_undefined_* inside AVX-512 conversion intrinsics as possibly
// uninitialised (a false positive of its own headers).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace eexit::detail {

// 16 floats: one AVX-512 register, or two AVX2 / four SSE registers where the compiler
// targets those; the arithmetic order is the same on all of them.
typedef float vf16 __attribute__((vector_size(64), aligned(4)));

inline vf16 load16(const float* p) noexcept {
  return *reinterpret_cast<const vf16*>(p);
}

// Fixed-order horizontal sum: pairwise halves, the same for every element.
inline float hsum16(vf16 v) noexcept {
  float a[16];
  std::memcpy(a, &v, sizeof a);
  for (int w = 8; w >= 1; w /= 2)
    for (int i = 0; i < w; ++i) a[i] += a[i + w];
  return a[0];
}

// The accumulator of the dot-product kernels: 16 lanes, each summing every 16th product in
// k order with a fused multiply-add, then reduced by pairwise halves (hsum16's order).
// With AVX-512 these are intrinsics (the generic vector code compiles to stack copies);
// otherwise the vector extension, whose a*b+c the compiler contracts the same way
// everywhere in a build. Either way every caller uses the same three operations.
#if defined(__AVX512F__)
using vacc = __m512;
inline vacc vzero() noexcept {
  return _mm512_setzero_ps();
}
inline vacc vload(const float* p) noexcept {
  return _mm512_loadu_ps(p);
}
inline vacc vfma(vacc a, vacc b, vacc c) noexcept {
  return _mm512_fmadd_ps(a, b, c);
}
#else
using vacc = vf16;
inline vacc vzero() noexcept {
  return vf16{};
}
inline vacc vload(const float* p) noexcept {
  return load16(p);
}
inline vacc vfma(vacc a, vacc b, vacc c) noexcept {
  return a * b + c;
}
#endif

typedef float vf8 __attribute__((vector_size(32)));
typedef float vf4 __attribute__((vector_size(16)));

// hsum16's order with vector shuffles: a[i] += a[i+8]; a[i] += a[i+4]; a[i] += a[i+2];
// a[0] += a[1]. (Shuffles rather than extract intrinsics, which GCC 12 flags as
// reading uninitialised registers.)
inline float vhsum(vacc v) noexcept {
  const vf8 s8 = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                 __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const vf4 s4 =
      __builtin_shufflevector(s8, s8, 0, 1, 2, 3) + __builtin_shufflevector(s8, s8, 4, 5, 6, 7);
  const float s2a = s4[0] + s4[2], s2b = s4[1] + s4[3];
  return s2a + s2b;
}

// vhsum of four accumulators at once, in the same order per element (each step adds the
// same pairs; a + b == b + a exactly), so the four sums are bitwise vhsum's.
inline vf4 vhsum4(vacc a, vacc b, vacc c, vacc d) noexcept {
  // [a.s8 | b.s8], [c.s8 | d.s8]: s8[i] = v[i] + v[i+8]
  const vacc ab =
      __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
      __builtin_shufflevector(a, b, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  const vacc cd =
      __builtin_shufflevector(c, d, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
      __builtin_shufflevector(c, d, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  // [a.s4 | b.s4 | c.s4 | d.s4]: s4[i] = s8[i] + s8[i+4]
  const vacc s4 =
      __builtin_shufflevector(ab, cd, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
      __builtin_shufflevector(ab, cd, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
  // per group of four: s2[i] = s4[i] + s4[i+2], then s1 = s2[0] + s2[1]
  const vacc s2 =
      s4 + __builtin_shufflevector(s4, s4, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
  const vacc s1 =
      s2 + __builtin_shufflevector(s2, s2, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
  return __builtin_shufflevector(s1, s1, 0, 4, 8, 12);
}

// vhsum of sixteen accumulators at once: lane j of the result is vhsum(a[j]) bitwise (the
// same pairs added at each step as vhsum4). 15 vector adds and 30 shuffles for 16 sums,
// where 16 vhsum calls are 16 dependent chains ending in scalar adds.
inline vacc vhsum16(const vacc (&a)[16]) noexcept {
  // s8: [a[2m].s8 | a[2m+1].s8], s8[i] = v[i] + v[i+8]
  vacc p[8];
  for (int m = 0; m < 8; ++m)
    p[m] = __builtin_shufflevector(a[2 * m], a[2 * m + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19,
                                   20, 21, 22, 23) +
           __builtin_shufflevector(a[2 * m], a[2 * m + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26,
                                   27, 28, 29, 30, 31);
  // s4: [a[4m].s4 | .. | a[4m+3].s4], s4[i] = s8[i] + s8[i+4]
  vacc q[4];
  for (int m = 0; m < 4; ++m)
    q[m] = __builtin_shufflevector(p[2 * m], p[2 * m + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19,
                                   24, 25, 26, 27) +
           __builtin_shufflevector(p[2 * m], p[2 * m + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22,
                                   23, 28, 29, 30, 31);
  // s2: [a[8m].(s4[0] + s4[2], s4[1] + s4[3]) | ...], eight accumulators a vector
  vacc r[2];
  for (int m = 0; m < 2; ++m)
    r[m] = __builtin_shufflevector(q[2 * m], q[2 * m + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21,
                                   24, 25, 28, 29) +
           __builtin_shufflevector(q[2 * m], q[2 * m + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22,
                                   23, 26, 27, 30, 31);
  // s1 = s2a + s2b, lane j for a[j]
  return __builtin_shufflevector(r[0], r[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28,
                                 30) +
         __builtin_shufflevector(r[0], r[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29,
                                 31);
}

// Lane-wise max (max is exact: the order of the comparisons does not change the result).
inline vacc vmax(vacc a, vacc b) noexcept {
#if defined(__AVX512F__)
  return _mm512_max_ps(a, b);
#else
  return a > b ? a : b;
#endif
}

// Weight element types of the kernels besides float: 16-bit patterns, widened to fp32 on
// load (activations and accumulation stay fp32, so the arithmetic per element is the f32
// kernel's, on the rounded weights).
struct bf16_t {
  std::uint16_t bits;
};
struct f16_t {
  std::uint16_t bits;
};
static_assert(sizeof(bf16_t) == 2 && sizeof(f16_t) == 2);

inline float to_f32(float w) noexcept {
  return w;
}
inline float to_f32(bf16_t w) noexcept {
  std::uint32_t u = std::uint32_t(w.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float to_f32(f16_t w) noexcept {
#if defined(__F16C__)
  return _cvtsh_ss(w.bits);
#else
  return f16_to_f32(w.bits);  // no _Float16: not every compiler has it (clang 14 on x86-64)
#endif
}

// 16 consecutive weights as fp32 lanes. With AVX-512, intrinsics: GCC 12 scalarises
// __builtin_convertvector from 16-bit and 8-bit lanes to float (one vpinsr/vpextr per
// lane), which made f16 / Q8_0 / Q4_0 matmuls 2-4x slower than fp32. Elsewhere the
// vector extensions (correct, slower). bf16 is a zero-extension and a shift either way.
typedef std::uint16_t vu16 __attribute__((vector_size(32), aligned(2)));
typedef std::uint32_t vu32 __attribute__((vector_size(64)));
inline vacc wload(const float* p) noexcept {
  return vload(p);
}
#if defined(__AVX512F__)
inline vacc wload(const bf16_t* p) noexcept {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline vacc wload(const f16_t* p) noexcept {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
#else
inline vacc wload(const bf16_t* p) noexcept {
  const vu32 u = __builtin_convertvector(*reinterpret_cast<const vu16*>(p), vu32) << 16;
  vacc r;
  std::memcpy(&r, &u, sizeof r);
  return r;
}
inline vacc wload(const f16_t* p) noexcept {
  float f[16];
  for (int i = 0; i < 16; ++i) f[i] = to_f32(p[i]);
  vacc r;
  std::memcpy(&r, f, sizeof r);
  return r;
}
#endif

// llama.cpp's block layouts (ggml-common.h): 32 weights a block, an fp16 scale d.
// Q8_0: w[i] = d * qs[i]. Q4_0: w[i] = d * ((qs[i] & 15) - 8) and w[i + 16] = d * ((qs[i]
// >> 4) - 8) for i < 16. Both products are exact in fp32 (11-bit scale times a 4- or 8-bit
// integer), so a quantized matmul here (fp32 activations: CpuBackend's quant_act::f32) is the
// fp32 kernel on the dequantized weights, bit for bit. The default for these types, int8
// activations and integer block dot products, is cpu_quant.hpp.
struct block_q8_0 {
  std::uint16_t d;
  std::int8_t qs[32];
};
struct block_q4_0 {
  std::uint16_t d;
  std::uint8_t qs[16];
};
static_assert(sizeof(block_q8_0) == 34 && sizeof(block_q4_0) == 18);

// Weights per storage unit of W (a block holds 32).
template <class W>
inline constexpr std::size_t per_unit = 1;
template <>
inline constexpr std::size_t per_unit<block_q8_0> = 32;
template <>
inline constexpr std::size_t per_unit<block_q4_0> = 32;

typedef std::int8_t vi8x16 __attribute__((vector_size(16), aligned(1)));
typedef std::uint8_t vu8x16 __attribute__((vector_size(16), aligned(1)));

inline float f16_scale(std::uint16_t d) noexcept {
  return to_f32(f16_t{d});
}

// Weights k..k+15 of the row at `row` (k a multiple of 16) as fp32 lanes.
template <class W>
inline vacc wload_k(const W* row, std::size_t k) noexcept {
  return wload(row + k);
}
#if defined(__AVX512F__)
inline vacc wload_k(const block_q8_0* row, std::size_t k) noexcept {
  const block_q8_0& b = row[k / 32];
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs + (k & 16)));
  return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), _mm512_set1_ps(f16_scale(b.d)));
}
inline vacc wload_k(const block_q4_0* row, std::size_t k) noexcept {
  const block_q4_0& b = row[k / 32];
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
  const __m128i nib = _mm_and_si128((k & 16) ? _mm_srli_epi16(raw, 4) : raw, _mm_set1_epi8(15));
  const __m512 q =
      _mm512_sub_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(nib)), _mm512_set1_ps(8.0f));
  return _mm512_mul_ps(q, _mm512_set1_ps(f16_scale(b.d)));
}
#else
inline vacc wload_k(const block_q8_0* row, std::size_t k) noexcept {
  const block_q8_0& b = row[k / 32];
  const vf16 q = __builtin_convertvector(*reinterpret_cast<const vi8x16*>(b.qs + (k & 16)), vf16);
  const vf16 w = q * f16_scale(b.d);
  vacc r;
  std::memcpy(&r, &w, sizeof r);
  return r;
}
inline vacc wload_k(const block_q4_0* row, std::size_t k) noexcept {
  const block_q4_0& b = row[k / 32];
  const vu8x16 raw = *reinterpret_cast<const vu8x16*>(b.qs);
  const vu8x16 nib = (k & 16) ? vu8x16(raw >> 4) : vu8x16(raw & 15);
  const vf16 w = (__builtin_convertvector(nib, vf16) - 8.0f) * f16_scale(b.d);
  vacc r;
  std::memcpy(&r, &w, sizeof r);
  return r;
}
#endif

// Tail of a dot product (k % 16 elements), same order everywhere. An explicit fma rather
// than s += x * w: whether the compiler contracts that depends on what it was inlined
// into, and then the fp32 and the bf16 / f16 kernels (or two tile shapes) could round
// the same products differently.
template <class W>
inline float tail_dot(const float* x, const W* w, std::size_t k0, std::size_t k) noexcept {
  float s = 0.0f;
  if constexpr (per_unit<W> == 1)  // block rows are whole blocks: no tail
    for (std::size_t i = k0; i < k; ++i) s = std::fma(x[i], to_f32(w[i]), s);
  return s;
}

// Keeps v in a register: GCC otherwise folds a load used by several FMAs into each of
// them as a memory operand (one load per FMA instead of one per vector), and the loads,
// not the FMAs, then bound the tile. No instruction, so no change to the arithmetic.
inline void reg_barrier(vacc& v) noexcept {
#if defined(__AVX512F__)
  asm("" : "+v"(v));
#else
  (void)v;
#endif
}

// One register tile: MR rows x NR outputs, MR*NR accumulators. y[i, n+j] for the MR rows
// at x (row stride ldx) and outputs n..n+NR-1. Every element gets the same sequence:
// vfma over k blocks in order, vhsum, + tail_dot, + bias; the tile shape changes only
// which elements share loads.
// A tile may run over part of k, [kb, ke) (multiples of 16; see xwt_k_chunk): it then
// starts from the accumulators a previous part left in spill (MR*NR vectors) unless kb
// is 0, and leaves its own there unless ke reaches K16, where it finishes the elements.
// Storing and reloading a vector does not change it, so the sequence per element is the
// same however k is split.
template <std::size_t MR, std::size_t NR, bool Prefetch, bool Chunked, class W>
inline void xwt_tile_part(const float* x, std::size_t ldx, const W* w, std::size_t K,
                          std::size_t K16, std::size_t n, float* y, std::size_t ldy,
                          const float* bias, std::size_t kb, std::size_t ke, vacc* spill) noexcept {
  vacc acc[MR][NR];
  if (!Chunked || kb == 0) {
#pragma GCC unroll 16
    for (std::size_t i = 0; i < MR; ++i)
#pragma GCC unroll 16
      for (std::size_t j = 0; j < NR; ++j) acc[i][j] = vzero();
  } else {
#pragma GCC unroll 16
    for (std::size_t i = 0; i < MR; ++i)
#pragma GCC unroll 16
      for (std::size_t j = 0; j < NR; ++j) acc[i][j] = spill[i * NR + j];
  }
  const std::size_t k0 = Chunked ? kb : 0, k1 = Chunked ? std::min(ke, K16) : K16;
  const std::size_t ld = K / per_unit<W>;  // row stride of W in storage units
  const W* wr = w + n * ld;
  for (std::size_t k = k0; k < k1; k += 16) {
    vacc wv[NR];
#pragma GCC unroll 16
    for (std::size_t j = 0; j < NR; ++j) {
      wv[j] = wload_k(wr + j * ld, k);
      if constexpr (MR > 2 && std::is_same_v<W, float>) reg_barrier(wv[j]);
    }
    if constexpr (Prefetch) {  // the next NR rows of W, one cache line per row and step
#pragma GCC unroll 16
      for (std::size_t j = 0; j < NR; ++j)
        __builtin_prefetch(wr + (NR + j) * ld + k / per_unit<W>, 0, 3);
    }
#pragma GCC unroll 16
    for (std::size_t i = 0; i < MR; ++i) {
      vacc xv = vload(x + i * ldx + k);
      if constexpr (MR > 2) reg_barrier(xv);
#pragma GCC unroll 16
      for (std::size_t j = 0; j < NR; ++j) acc[i][j] = vfma(xv, wv[j], acc[i][j]);
    }
  }
  if (Chunked && k1 < K16) {
#pragma GCC unroll 16
    for (std::size_t i = 0; i < MR; ++i)
#pragma GCC unroll 16
      for (std::size_t j = 0; j < NR; ++j) spill[i * NR + j] = acc[i][j];
    return;
  }
  if constexpr (NR == 4) {
#pragma GCC unroll 16
    for (std::size_t i = 0; i < MR; ++i) {
      vf4 s = vhsum4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
      vf4 t;
      for (std::size_t j = 0; j < 4; ++j) t[j] = tail_dot(x + i * ldx, wr + j * ld, K16, K);
      s += t;
      if (bias) {
        vf4 b;
        std::memcpy(&b, bias + n, sizeof b);
        s += b;
      }
      std::memcpy(y + i * ldy + n, &s, sizeof s);
    }
    return;
  }
  for (std::size_t i = 0; i < MR; ++i)
    for (std::size_t j = 0; j < NR; ++j) {
      float s = vhsum(acc[i][j]) + tail_dot(x + i * ldx, wr + j * ld, K16, K);
      if (bias) s += bias[n + j];
      y[i * ldy + n + j] = s;
    }
}

// The tile over all of k. (Its own function with the signature of before the k chunks:
// GCC then compiles the decode tiles exactly as it did, register for register.)
template <std::size_t MR, std::size_t NR, bool Prefetch = false, bool Chunked = false, class W>
inline void xwt_tile(const float* x, std::size_t ldx, const W* w, std::size_t K, std::size_t K16,
                     std::size_t n, float* y, std::size_t ldy, const float* bias,
                     std::size_t kb = 0, std::size_t ke = SIZE_MAX,
                     vacc* spill = nullptr) noexcept {
  if constexpr (Chunked)
    xwt_tile_part<MR, NR, Prefetch, true>(x, ldx, w, K, K16, n, y, ldy, bias, kb, ke, spill);
  else
    xwt_tile_part<MR, NR, Prefetch, false>(x, ldx, w, K, K16, n, y, ldy, bias, 0, K16, nullptr);
}

// Outputs [n0, n1) for MR rows: NR-wide tiles, then single outputs.
template <std::size_t MR, std::size_t NR, class W>
inline void xwt_rows(const float* x, std::size_t ldx, const W* w, std::size_t K, std::size_t K16,
                     std::size_t n0, std::size_t n1, float* y, std::size_t ldy,
                     const float* bias) noexcept {
  std::size_t n = n0;
  for (; n + NR <= n1; n += NR) xwt_tile<MR, NR>(x, ldx, w, K, K16, n, y, ldy, bias);
  for (; n < n1; ++n) xwt_tile<MR, 1>(x, ldx, w, K, K16, n, y, ldy, bias);
}

// One tile of mr (1..6) rows x NR outputs at output n (over k in [kb, ke): xwt_tile).
template <std::size_t NR, bool Prefetch = false, bool Chunked = false, class W>
inline void xwt_tile_m(std::size_t mr, const float* x, std::size_t ldx, const W* w, std::size_t K,
                       std::size_t K16, std::size_t n, float* y, std::size_t ldy, const float* bias,
                       std::size_t kb = 0, std::size_t ke = SIZE_MAX,
                       vacc* spill = nullptr) noexcept {
  switch (mr) {
    case 1:
      xwt_tile<1, NR, Prefetch, Chunked>(x, ldx, w, K, K16, n, y, ldy, bias, kb, ke, spill);
      break;
    case 2:
      xwt_tile<2, NR, Prefetch, Chunked>(x, ldx, w, K, K16, n, y, ldy, bias, kb, ke, spill);
      break;
    case 3:
      xwt_tile<3, NR, Prefetch, Chunked>(x, ldx, w, K, K16, n, y, ldy, bias, kb, ke, spill);
      break;
    case 4:
      xwt_tile<4, NR, Prefetch, Chunked>(x, ldx, w, K, K16, n, y, ldy, bias, kb, ke, spill);
      break;
    case 5:
      xwt_tile<5, NR, Prefetch, Chunked>(x, ldx, w, K, K16, n, y, ldy, bias, kb, ke, spill);
      break;
    default:
      xwt_tile<6, NR, Prefetch, Chunked>(x, ldx, w, K, K16, n, y, ldy, bias, kb, ke, spill);
      break;
  }
}

// Register tiles are at most 6 rows x 4 outputs (24 accumulators + 4 W + 1 x registers
// of the 32 AVX-512 has); one or two rows (decode) take 8 outputs per tile so that more
// W rows stream at once.
inline constexpr std::size_t xwt_max_rows = 6;
// Up to this many rows the x rows stay in L2 while W streams past them once.
inline constexpr std::size_t xwt_stream_rows = 48;
// Rows longer than this (in k) run in chunks of this many (whole Q8_0 / Q4_0 blocks), so
// that a tile's x rows and W rows stay in L1 together (6 + 4 rows of 4 KiB at most); the
// accumulators wait in a stack buffer between chunks (xwt_tile). Measured on Zen 5: at
// K = 2048 the unchunked 6x4 tiles ran at 70% of their K = 768 rate.
inline constexpr std::size_t xwt_k_chunk = 1024;
// At most this many outputs per L2 block of W when k is chunked (their accumulators, 6
// rows each, are the stack buffer: 64 x 6 x 64 B = 24 KiB).
inline constexpr std::size_t xwt_chunk_block = 64;

// 3..xwt_stream_rows rows: W is streamed from memory once, and each group of 4 W rows is
// used by every row tile while it is in L1, so loads from DRAM overlap the arithmetic.
// Chunked: k in chunks of kc (K16 > kc), each chunk through every row tile of the group.
template <bool Chunked, class W>
inline void xwt_stream(const float* x, std::size_t M, std::size_t ldx, const W* w, std::size_t K,
                       std::size_t K16, std::size_t kc, std::size_t n0, std::size_t n1, float* y,
                       std::size_t ldy, const float* bias) noexcept {
  vacc spill[Chunked ? xwt_stream_rows * 4 : 1];  // (M, 4) accumulators between k chunks
  std::size_t n = n0;
  for (; n + 4 <= n1; n += 4)
    for (std::size_t kb = 0; kb < (Chunked ? K16 : 1); kb += kc) {
      xwt_tile_m<4, true, Chunked>(std::min(xwt_max_rows, M), x, ldx, w, K, K16, n, y, ldy, bias,
                                   kb, kb + kc, spill);
      for (std::size_t m0 = xwt_max_rows; m0 < M; m0 += xwt_max_rows)
        xwt_tile_m<4, false, Chunked>(std::min(xwt_max_rows, M - m0), x + m0 * ldx, ldx, w, K, K16,
                                      n, y + m0 * ldy, ldy, bias, kb, kb + kc,
                                      spill + (Chunked ? m0 * 4 : 0));
    }
  for (; n < n1; ++n)
    for (std::size_t m0 = 0; m0 < M; m0 += xwt_max_rows)
      xwt_tile_m<1>(std::min(xwt_max_rows, M - m0), x + m0 * ldx, ldx, w, K, K16, n, y + m0 * ldy,
                    ldy, bias);
}

// More rows (prefill): block over outputs so that a block of W (its k chunk, when
// Chunked) stays in L2 while every row tile passes it; a row tile takes the chunks in
// order, each through every 4-output tile of the block.
template <bool Chunked, class W>
inline void xwt_prefill(const float* x, std::size_t M, std::size_t ldx, const W* w, std::size_t K,
                        std::size_t K16, std::size_t kc, std::size_t n0, std::size_t n1, float* y,
                        std::size_t ldy, const float* bias) noexcept {
  std::size_t nb = std::max<std::size_t>(
      8, (512 * 1024 * per_unit<W> / sizeof(W) / std::max<std::size_t>(K, 1)) / 8 * 8);
  if (Chunked) nb = std::min(nb, xwt_chunk_block);
  vacc spill[Chunked ? xwt_chunk_block * xwt_max_rows : 1];  // (block outputs, 6 rows)
  for (std::size_t nb0 = n0; nb0 < n1; nb0 += nb) {
    const std::size_t nb1 = std::min(n1, nb0 + nb), n4 = nb0 + (nb1 - nb0) / 4 * 4;
    for (std::size_t m0 = 0; m0 < M; m0 += xwt_max_rows) {
      const std::size_t mr = std::min(xwt_max_rows, M - m0);
      for (std::size_t kb = 0; kb < (Chunked ? K16 : 1); kb += kc)
        for (std::size_t n = nb0; n < n4; n += 4)
          xwt_tile_m<4, false, Chunked>(mr, x + m0 * ldx, ldx, w, K, K16, n, y + m0 * ldy, ldy,
                                        bias, kb, kb + kc,
                                        spill + (Chunked ? (n - nb0) * xwt_max_rows : 0));
      for (std::size_t n = n4; n < nb1; ++n)
        xwt_tile_m<1>(mr, x + m0 * ldx, ldx, w, K, K16, n, y + m0 * ldy, ldy, bias);
    }
  }
}

// y[m, n] = dot(x[m, :], w[n, :]) (+ bias[n]) for m in [0, M), n in [n0, n1).
// x: (M, K) row stride ldx; w: (N, K) contiguous rows; y: (M, N) row stride ldy.
// Every element is computed by the same arithmetic whatever M, the tile it lands in, the
// k chunks or the range [n0, n1) a thread was given (see xwt_tile), so results are batch
// invariant.
template <class W>
inline void matmul_xwt(const float* x, std::size_t M, std::size_t ldx, const W* w, std::size_t K,
                       std::size_t n0, std::size_t n1, float* y, std::size_t ldy,
                       const float* bias) noexcept {
  const std::size_t K16 = K / 16 * 16;
  if (M <= 2) {  // decode: one pass over W, no blocking needed
    if (M == 1)
      xwt_rows<1, 8>(x, ldx, w, K, K16, n0, n1, y, ldy, bias);
    else
      xwt_rows<2, 8>(x, ldx, w, K, K16, n0, n1, y, ldy, bias);
    return;
  }
  const bool chunked = K16 > xwt_k_chunk;
  const std::size_t kc = chunked ? xwt_k_chunk : 1;
  if (M <= xwt_stream_rows)
    return chunked ? xwt_stream<true>(x, M, ldx, w, K, K16, kc, n0, n1, y, ldy, bias)
                   : xwt_stream<false>(x, M, ldx, w, K, K16, kc, n0, n1, y, ldy, bias);
  chunked ? xwt_prefill<true>(x, M, ldx, w, K, K16, kc, n0, n1, y, ldy, bias)
          : xwt_prefill<false>(x, M, ldx, w, K, K16, kc, n0, n1, y, ldy, bias);
}

// The kernel entry the backend calls. A build for a target with AVX2 (ours: -march=native)
// runs matmul_xwt as compiled. A build for baseline x86-64 (an installed header used
// without -m flags) would run it on SSE2 alone: there, an AVX2+FMA+F16C copy of the whole
// kernel (flatten inlines every helper into it, so all of it is compiled for that target)
// is chosen at run time by CPUID. Both perform the same operations in the same order
// (16 lanes, one fused multiply-add per product, the same reduction), so the choice does
// not change results.
#if defined(__x86_64__) && !defined(__AVX2__) && defined(__GNUC__) && !defined(__clang__)
#define EEXIT_CPU_DISPATCH 1
template <class W>
__attribute__((target("avx2,fma,f16c"), flatten)) inline void matmul_xwt_avx2(
    const float* x, std::size_t M, std::size_t ldx, const W* w, std::size_t K, std::size_t n0,
    std::size_t n1, float* y, std::size_t ldy, const float* bias) noexcept {
  matmul_xwt(x, M, ldx, w, K, n0, n1, y, ldy, bias);
}
inline bool cpu_has_avx2() noexcept {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("f16c");
  return has;
}
#endif

template <class W>
inline void matmul_xwt_dispatch(const float* x, std::size_t M, std::size_t ldx, const W* w,
                                std::size_t K, std::size_t n0, std::size_t n1, float* y,
                                std::size_t ldy, const float* bias) noexcept {
#if defined(EEXIT_CPU_DISPATCH)
  if (cpu_has_avx2()) return matmul_xwt_avx2(x, M, ldx, w, K, n0, n1, y, ldy, bias);
#endif
  matmul_xwt(x, M, ldx, w, K, n0, n1, y, ldy, bias);
}

// Which kernel build runs here (for benchmarks and tests to report).
inline const char* kernel_isa() noexcept {
#if defined(__AVX512F__)
  return "avx512 (compile time)";
#elif defined(__AVX2__)
  return "avx2 (compile time)";
#elif defined(EEXIT_CPU_DISPATCH)
  return cpu_has_avx2() ? "avx2 (run-time dispatch)" : "generic (no avx2 at run time)";
#else
  return "generic";
#endif
}

// a · b, b fp32 or 16-bit (widened on load: an f16 KV cache's rows); the same arithmetic
// either way.
template <class W>
inline float dot(const float* a, const W* b, std::size_t n) noexcept {
  const std::size_t n16 = n / 16 * 16;
  vacc acc = vzero();
  for (std::size_t k = 0; k < n16; k += 16) acc = vfma(vload(a + k), wload(b + k), acc);
  return vhsum(acc) + tail_dot(a, b, n16, n);
}

// dst[0, n) = src rounded to IEEE half: f32_to_f16's bits for every number (vcvtps2ph rounds
// to nearest even too, so the vector part and the scalar tail agree; a nan stays a nan).
inline void to_f16(const float* src, f16_t* dst, std::size_t n) noexcept {
  std::size_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16)
    // The masked form: GCC 12's _mm512_cvtps_ph passes an undefined source that
    // -Wmaybe-uninitialized reports; all 16 lanes are written either way.
    _mm256_storeu_si256(
        reinterpret_cast<__m256i*>(dst + i),
        _mm512_mask_cvtps_ph(_mm256_setzero_si256(), __mmask16(0xffff), _mm512_loadu_ps(src + i),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
  for (; i < n; ++i) dst[i] = f16_t{f32_to_f16(src[i])};
}

inline void rmsnorm_row(const float* x, const float* w, float* y, std::size_t dim,
                        float eps) noexcept {
  float ss = 0.0f;
  for (std::size_t i = 0; i < dim; ++i) ss += x[i] * x[i];
  const float inv = 1.0f / std::sqrt(ss / float(dim) + eps);
  for (std::size_t i = 0; i < dim; ++i) y[i] = w[i] * (x[i] * inv);
}

inline float silu(float x) noexcept {
  return x / (1.0f + std::exp(-x));
}

// Rotates the n_heads heads of one row, x (n_heads, head_dim), at position pos. The
// angles are computed in chunks of 64 on the stack: no allocation, any head_dim.
inline void rope_row(float* x, std::size_t n_heads, std::size_t head_dim, std::int32_t pos,
                     const float* inv_freq, rope_style style) noexcept {
  const std::size_t half = head_dim / 2;
  constexpr std::size_t chunk = 64;
  float cs[chunk], sn[chunk];
  for (std::size_t i0 = 0; i0 < half; i0 += chunk) {
    const std::size_t i1 = std::min(half, i0 + chunk);
    for (std::size_t i = i0; i < i1; ++i) {
      const double a = double(pos) * double(inv_freq[i]);
      cs[i - i0] = float(std::cos(a));
      sn[i - i0] = float(std::sin(a));
    }
    for (std::size_t h = 0; h < n_heads; ++h) {
      float* v = x + h * head_dim;
      for (std::size_t i = i0; i < i1; ++i) {
        float* a = style == rope_style::interleaved ? v + 2 * i : v + i;
        float* b = style == rope_style::interleaved ? v + 2 * i + 1 : v + i + half;
        const float x0 = *a, x1 = *b;
        *a = x0 * cs[i - i0] - x1 * sn[i - i0];
        *b = x0 * sn[i - i0] + x1 * cs[i - i0];
      }
    }
  }
}

}  // namespace eexit::detail

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
