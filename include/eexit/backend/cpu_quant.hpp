#pragma once
// Q8_0 / Q4_0 matmul with int8 activations (issue 10, item 3). Each input row is quantized
// once per matmul to Q8 blocks (32 values, an fp32 scale dx = max|x| / 127, values
// round-to-nearest-even of x / dx in [-127, 127]; llama.cpp stores that scale in fp16, we
// keep fp32: it costs nothing here and removes one rounding). A weight block (scale dw) and
// an activation block then give 8 exact int32 partial sums p[b][l], lane l covering
// elements 4l..4l+3, and every output element is, in this fixed order whatever the batch
// size, the tile or the thread (DESIGN.md §3 batch invariance), with 16 fp32 lanes
// (even blocks in lanes 0-7, odd blocks in lanes 8-15: one AVX-512 register holds a pair):
//     a[8 (b & 1) + l] = fma(float(p[b][l]), dw[b] * dx[b], a[8 (b & 1) + l])  for b in k order
//     t[l] = a[l] + a[l + 8];  y = ((t0 + t4) + (t2 + t6)) + ((t1 + t5) + (t3 + t7))  (+ bias)
// The integer sums are exact however they are formed, so the scalar, AVX2
// (vpmaddubsw + vpmaddwd, 8 lanes, two accumulators) and AVX-512 VNNI (vpdpbusd, 16 lanes)
// variants give the same bits; which one runs is chosen at run time by CPUID (the
// installed headers assume no -march flags: each variant is compiled under a target pragma).
//
// u8 x s8 products: vpdpbusd and vpmaddubsw multiply unsigned by signed bytes (Zen 4 has
// no vpdpbssd, that is AVX-VNNI-INT8). AVX2 uses the sign trick, |w| (unsigned) times x
// with w's sign: |w| <= 128 and |x| <= 127, so a vpmaddubsw pair sum stays below 2^15 and
// never saturates (Q4_0 first turns its nibbles into q - 8 in [-8, 7]). VNNI, which sums
// 4 products into int32 and cannot saturate, uses offsets instead, one instruction less:
// (w + 128) · x - 128 · Σx for Q8_0, q · x - 8 · Σx for Q4_0's unsigned nibbles q, with the
// offset terms from one vpdpbusd per activation block (shared by every output).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "eexit/backend/cpu_isa.hpp"
#include "eexit/backend/cpu_kernels.hpp"  // block_q8_0, block_q4_0, f16_scale

namespace eexit::detail {

// Which int8 dot-product variant runs: `best` picks the widest the CPU has; the others
// force one (tests compare them; a forced variant the CPU lacks falls back to scalar).
enum class quant_isa : std::uint8_t { best, scalar, avx2, vnni };

template <>
struct isa_traits<quant_isa> {
  static constexpr quant_isa last = quant_isa::vnni;
  static constexpr const char* names[] = {"best", "scalar", "avx2", "avx512-vnni"};
  static bool supported(quant_isa t) noexcept {
    // clang 14's __builtin_cpu_supports knows no "f16c"; every AVX2 CPU has it.
#if defined(__clang__)
    static const bool avx2 = EEXIT_CPU_SUPPORTS("avx2") && EEXIT_CPU_SUPPORTS("fma");
#else
    static const bool avx2 =
        EEXIT_CPU_SUPPORTS("avx2") && EEXIT_CPU_SUPPORTS("fma") && EEXIT_CPU_SUPPORTS("f16c");
#endif
    static const bool vnni =
        avx2 && EEXIT_CPU_SUPPORTS("avx512vnni") && EEXIT_CPU_SUPPORTS("avx512vl");
    return t == quant_isa::vnni ? vnni : t == quant_isa::avx2 && avx2;
  }
};
// The names tests and benchmarks use (cpu_isa.hpp has the one implementation).
inline constexpr auto& quant_isa_override = isa_override<quant_isa>;
inline constexpr auto& cpu_has_quant_isa = isa_supported<quant_isa>;
inline constexpr auto& quant_isa_now = isa_now<quant_isa>;
inline constexpr auto& quant_isa_name = isa_name<quant_isa>;

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

// The fixed reduction of the 8 lanes t (see the header comment).
inline float q_hsum8(const float* t) noexcept {
  const float u0 = t[0] + t[4], u1 = t[1] + t[5], u2 = t[2] + t[6], u3 = t[3] + t[7];
  return (u0 + u2) + (u1 + u3);
}

// The scalar variant, and the definition of the arithmetic: one output element.
template <class W>
inline float q_dot_scalar(const std::int8_t* xq, const float* xd, const W* w,
                          std::size_t nb) noexcept {
  float a[16] = {};
  for (std::size_t b = 0; b < nb; ++b) {
    const float s = f16_scale(w[b].d) * xd[b];
    const std::int8_t* x = xq + 32 * b;
    float* ab = a + 8 * (b & 1);
    for (std::size_t l = 0; l < 8; ++l) {
      std::int32_t p = 0;
      for (std::size_t e = 4 * l; e < 4 * l + 4; ++e) p += q_weight(w[b], e) * x[e];
      ab[l] = std::fma(float(p), s, ab[l]);
    }
  }
  float t[8];
  for (std::size_t l = 0; l < 8; ++l) t[l] = a[l] + a[l + 8];
  return q_hsum8(t);
}

// y[m, n] = dot(m, n) (+ bias[n]) for m < M, n in [n0, n1): the scalar variants' loops.
template <class Dot>
inline void scalar_outputs(std::size_t M, std::size_t n0, std::size_t n1, float* y, std::size_t ldy,
                           const float* bias, const Dot& dot) noexcept {
  for (std::size_t m = 0; m < M; ++m)
    for (std::size_t n = n0; n < n1; ++n) {
      float s = dot(m, n);
      if (bias) s += bias[n];
      y[m * ldy + n] = s;
    }
}

template <class W>
inline void matmul_q8act_scalar(const std::int8_t* xq, const float* xd, std::size_t M, const W* w,
                                std::size_t K, std::size_t n0, std::size_t n1, float* y,
                                std::size_t ldy, const float* bias) noexcept {
  const std::size_t nb = K / 32;
  scalar_outputs(M, n0, n1, y, ldy, bias, [&](std::size_t m, std::size_t n) {
    return q_dot_scalar(xq + m * K, xd + m * nb, w + n * nb, nb);
  });
}

// ---- The interleaved layout (repacked at load: CpuBackend::repack_weights) -----------
// Row-by-row blocks make every output pay its own nibble unpack, fp16 scale conversion and
// scale broadcast. The interleaved layout does that work once at load instead: a matrix
// (N, K) is cut into groups of q_rows = 8 consecutive rows (the last group padded with zero
// rows) and its blocks into pairs (b, b + 1) (an odd count padded with a zero block); for
// each group, pair after pair in k order, one chunk holds
//   float sc[8][2]      the fp32 scales of blocks b, b + 1 of each row (f16 widened exactly)
//   Q8_0: u8 w[8][64]   each row's 64 weights as w + 128, in pair order (below)
//   Q4_0: u8 w[4][64]   rows 2i (low nibbles) and 2i + 1 (high nibbles), w + 8, pair order
// Pair order puts 4-weight group l of block b + p at bytes 4 (2l + p) .. +3: an AVX-512
// register of 16 int32 lanes then holds lane (l, p) at 2l + p, which one 8-byte broadcast of
// a scale pair serves, and an activation row is quantized into the same order once per
// matmul (quantize_row_q8_il). Why 8 rows: one 64-byte load and two ANDs give two Q4_0 rows,
// 8 rows x 64 bytes fill the 8 weight registers of a decode tile (1 x 8) with 8 accumulators
// beside them (32 registers), and the 16 scales of a chunk are one cache line.
// The arithmetic per output is exactly q_dot_scalar's (lane (l, p) is a[8p + l]; the padded
// block adds fma(0, 0, a) = a: accumulators start at +0 and never become -0), so results
// equal the row layout's bit for bit.
inline constexpr std::size_t q_rows = 8;

template <class W>
inline constexpr std::size_t il_chunk = std::is_same_v<W, block_q8_0> ? 64 + 8 * 64 : 64 + 4 * 64;

// Byte of weight e (0..31) of block b + p in a pair's 64 bytes.
constexpr std::size_t il_pos(std::size_t p, std::size_t e) noexcept {
  return 4 * (2 * (e / 4) + p) + e % 4;
}

// Bytes of the interleaved (N, K) matrix.
template <class W>
constexpr std::size_t il_bytes(std::size_t N, std::size_t K) noexcept {
  return (N + q_rows - 1) / q_rows * ((K / 32 + 1) / 2) * il_chunk<W>;
}

// The weight of row j (0..7) of a chunk at byte pos of its pair order, as a signed integer.
inline int il_weight(const unsigned char* chunk, std::size_t j, std::size_t pos,
                     const block_q8_0*) noexcept {
  return int(chunk[64 + 64 * j + pos]) - 128;
}
inline int il_weight(const unsigned char* chunk, std::size_t j, std::size_t pos,
                     const block_q4_0*) noexcept {
  const unsigned v = chunk[64 + 64 * (j / 2) + pos];
  return int(j % 2 ? v >> 4 : v & 15u) - 8;
}
inline float il_scale(const unsigned char* chunk, std::size_t j, std::size_t p) noexcept {
  float s;
  std::memcpy(&s, chunk + 4 * (2 * j + p), 4);
  return s;
}

// w (N, K/32 blocks, as stored) -> dst (il_bytes(N, K)) in the interleaved layout.
template <class W>
inline void repack_il(const W* w, std::size_t N, std::size_t K, unsigned char* dst) noexcept {
  constexpr bool q8 = std::is_same_v<W, block_q8_0>;
  const std::size_t nb = K / 32, np = (nb + 1) / 2, groups = (N + q_rows - 1) / q_rows;
  // Padding (rows past N, the block past nb) holds weight 0 with scale 0.
  for (std::size_t c = 0; c < groups * np; ++c) {
    unsigned char* ch = dst + c * il_chunk<W>;
    std::memset(ch, 0, 64);
    std::memset(ch + 64, q8 ? 0x80 : 0x88, il_chunk<W> - 64);
  }
  for (std::size_t n = 0; n < N; ++n)
    for (std::size_t b = 0; b < nb; ++b) {
      const std::size_t j = n % q_rows, p = b % 2;
      unsigned char* ch = dst + (n / q_rows * np + b / 2) * il_chunk<W>;
      const W& blk = w[n * nb + b];
      const float d = f16_scale(blk.d);
      std::memcpy(ch + 4 * (2 * j + p), &d, 4);
      for (std::size_t e = 0; e < 32; ++e) {
        const int v = q_weight(blk, e);
        if constexpr (q8) {
          ch[64 + 64 * j + il_pos(p, e)] = static_cast<unsigned char>(v + 128);
        } else {
          unsigned char& byte = ch[64 + 64 * (j / 2) + il_pos(p, e)];
          const unsigned q = unsigned(v + 8);
          byte = static_cast<unsigned char>(j % 2 ? (byte & 0x0Fu) | q << 4 : (byte & 0xF0u) | q);
        }
      }
    }
}

// Row r (K weights) of an interleaved matrix w to fp32: d * q, as convert_to_f32 widens
// the stored blocks (the same values: the stored scale is the fp16 one widened exactly).
template <class W>
inline void dequantize_row_il(const unsigned char* w, std::size_t K, std::size_t r,
                              float* out) noexcept {
  const std::size_t nb = K / 32, np = (nb + 1) / 2, j = r % q_rows;
  const unsigned char* g = w + r / q_rows * np * il_chunk<W>;
  for (std::size_t b = 0; b < nb; ++b) {
    const unsigned char* ch = g + b / 2 * il_chunk<W>;
    const float d = il_scale(ch, j, b % 2);
    for (std::size_t e = 0; e < 32; ++e)
      out[32 * b + e] =
          d * float(il_weight(ch, j, il_pos(b % 2, e), static_cast<const W*>(nullptr)));
  }
}

// One activation row x (K) to Q8 blocks in pair order: qs (64 np) int8, d (2 np) fp32, the
// padding block zero. The values are quantize_row_q8's.
inline void quantize_row_q8_il(const float* x, std::size_t K, std::int8_t* qs, float* d) noexcept {
  const std::size_t nb = K / 32;
  for (std::size_t b = 0; b < 2 * ((nb + 1) / 2); ++b) {
    std::int8_t t[32] = {};
    d[b] = 0.0f;
    if (b < nb) quantize_row_q8(x + 32 * b, 32, t, d + b);
    for (std::size_t e = 0; e < 32; ++e) qs[64 * (b / 2) + il_pos(b % 2, e)] = t[e];
  }
}

// The scalar variant on the interleaved layout: output j of the group at g, q_dot_scalar's
// arithmetic (the padding block skipped).
template <class W>
inline float q_dot_il_scalar(const std::int8_t* xq, const float* xd, const unsigned char* g,
                             std::size_t j, std::size_t nb) noexcept {
  float a[16] = {};
  for (std::size_t b = 0; b < nb; ++b) {
    const std::size_t p = b % 2;
    const unsigned char* ch = g + b / 2 * il_chunk<W>;
    const float s = il_scale(ch, j, p) * xd[b];
    const std::int8_t* x = xq + 64 * (b / 2);
    float* ab = a + 8 * p;
    for (std::size_t l = 0; l < 8; ++l) {
      std::int32_t sum = 0;
      for (std::size_t e = 4 * l; e < 4 * l + 4; ++e) {
        const std::size_t pos = il_pos(p, e);
        sum += il_weight(ch, j, pos, static_cast<const W*>(nullptr)) * x[pos];
      }
      ab[l] = std::fma(float(sum), s, ab[l]);
    }
  }
  float t[8];
  for (std::size_t l = 0; l < 8; ++l) t[l] = a[l] + a[l + 8];
  return q_hsum8(t);
}

// y[m, n] for m < M, n in [n0, n1) (any bounds) from x in pair order (quantize_row_q8_il:
// xq (M, 64 np), xd (M, 2 np)) and the interleaved w (il_bytes(N, K), n1 <= N).
template <class W>
inline void matmul_q8act_il_scalar(const std::int8_t* xq, const float* xd, std::size_t M,
                                   const unsigned char* w, std::size_t K, std::size_t n0,
                                   std::size_t n1, float* y, std::size_t ldy,
                                   const float* bias) noexcept {
  const std::size_t nb = K / 32, np = (nb + 1) / 2;
  scalar_outputs(M, n0, n1, y, ldy, bias, [&](std::size_t m, std::size_t n) {
    return q_dot_il_scalar<W>(xq + m * 64 * np, xd + m * 2 * np, w + n / q_rows * np * il_chunk<W>,
                              n % q_rows, nb);
  });
}

}  // namespace eexit::detail

#if defined(EEXIT_ISA_X86)
// The SIMD variants, each in a region compiled for its target (templates included). Each
// namespace's `kernel` tag names its tiles (found by argument-dependent lookup) for the
// shared loops (matmul_q8act_tiles, matmul_q8act_il_tiles) and says its output tile widths.
// With -march=native GCC inlines the tiles into those loops, as it did into the per-variant
// loops they replaced (marked noinline, int8 decode at batch 1 ran 2-4% slower); built
// without -march, the loops call them. Either way a tile does the same operations in the
// same order, so the bits do not depend on it.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
// GCC 12 flags the _mm512_undefined_* inside AVX-512 casts and extracts as (possibly)
// uninitialised, a false positive of its own headers (as in cpu_kernels.hpp).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

EEXIT_TARGET_BEGIN("avx2,fma,f16c")
namespace eexit::detail::avx2q {

// A weight block as 32 signed bytes in element order.
inline __m256i wbytes(const block_q8_0& b) noexcept {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
}
inline __m256i wbytes(const block_q4_0& b) noexcept {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
  const __m128i m = _mm_set1_epi8(15);
  const __m128i lo = _mm_and_si128(raw, m), hi = _mm_and_si128(_mm_srli_epi16(raw, 4), m);
  return _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8));
}

// q_hsum8 on a register: lanes i + i+4, then i + i+2, then 0 + 1.
inline float hsum8(__m256 v) noexcept {
  const __m128 t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 u = _mm_add_ps(t, _mm_movehl_ps(t, t));
  return _mm_cvtss_f32(_mm_add_ss(u, _mm_shuffle_ps(u, u, 1)));
}

// Block b of MR rows x NR outputs into acc (the even or the odd lanes).
template <std::size_t MR, std::size_t NR, class W>
inline void block(const std::int8_t* xq, const float* xd, const W* wr, std::size_t K, std::size_t b,
                  __m256 (&acc)[MR][NR]) noexcept {
  const std::size_t nb = K / 32;
  __m256i wu[NR], ws[NR];
  float dw[NR];
  for (std::size_t j = 0; j < NR; ++j) {
    const W& blk = wr[j * nb + b];
    ws[j] = wbytes(blk);
    wu[j] = _mm256_abs_epi8(ws[j]);
    dw[j] = _cvtsh_ss(blk.d);
  }
  for (std::size_t i = 0; i < MR; ++i) {
    const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + i * K + 32 * b));
    const float dx = xd[i * nb + b];
    for (std::size_t j = 0; j < NR; ++j) {
      const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(wu[j], _mm256_sign_epi8(xv, ws[j])),
                                          _mm256_set1_epi16(1));
      acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw[j] * dx), acc[i][j]);
    }
  }
}

// 16 registers: 1 x 4 tiles for one row (two accumulators each), 4 x 2 for more.
struct kernel {
  static constexpr std::size_t nr1 = 4, nrm = 2;
};

// MR rows x NR outputs at output n: the weight blocks are loaded once for all MR rows.
template <std::size_t MR, std::size_t NR, class W>
inline void tile(kernel, const std::int8_t* xq, const float* xd, const W* w, std::size_t K,
                 std::size_t n, float* y, std::size_t ldy, const float* bias) noexcept {
  const std::size_t nb = K / 32;
  __m256 even[MR][NR], odd[MR][NR];
  for (std::size_t i = 0; i < MR; ++i)
    for (std::size_t j = 0; j < NR; ++j) even[i][j] = odd[i][j] = _mm256_setzero_ps();
  const W* wr = w + n * nb;
  std::size_t b = 0;
  for (; b + 2 <= nb; b += 2) {
    block<MR, NR>(xq, xd, wr, K, b, even);
    block<MR, NR>(xq, xd, wr, K, b + 1, odd);
  }
  if (b < nb) block<MR, NR>(xq, xd, wr, K, b, even);
  store_tile<MR, NR>(
      [&](std::size_t i, std::size_t j) { return hsum8(_mm256_add_ps(even[i][j], odd[i][j])); }, n,
      y, ldy, bias);
}

}  // namespace eexit::detail::avx2q
EEXIT_TARGET_END

EEXIT_TARGET_BEGIN("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")
namespace eexit::detail::vnniq {

// Blocks b and b + 1 (or b alone: the upper half zero) of one weight row as unsigned bytes
// in element order, and the offset that makes them signed.
inline __m512i wpair(const block_q8_0* b, bool two) noexcept {
  const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[0].qs));
  const __m256i hi =
      two ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[1].qs)) : _mm256_setzero_si256();
  return _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1),
                          _mm512_set1_epi8(char(0x80)));
}
inline __m512i wpair(const block_q4_0* b, bool two) noexcept {
  const __m128i r0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[0].qs));
  const __m128i r1 =
      two ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[1].qs)) : _mm_setzero_si128();
  const __m256i raw = _mm256_set_m128i(r1, r0);
  // [lo0 lo1 hi0 hi1] -> [lo0 hi0 lo1 hi1] (128-bit lanes): elements 0-31 of b, then of b + 1
  const __m512i z = _mm512_and_si512(
      _mm512_inserti64x4(_mm512_castsi256_si512(raw), _mm256_srli_epi16(raw, 4), 1),
      _mm512_set1_epi8(15));
  return _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(3, 1, 2, 0));
}
template <class W>
inline constexpr char woffset = std::is_same_v<W, block_q8_0> ? char(0x80) : char(8);

// v[0] in lanes 0-7, v[1] in lanes 8-15 (one permute: cheaper than two broadcasts).
inline __m512 pair_ps(__m128 v) noexcept {
  const __m512i idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(v));
}
// The scales of blocks b and b + 1 (or 0) of a weight row, and of an activation row.
template <class W>
inline __m512 wscale_pair(const W* b, bool two) noexcept {
  const std::uint32_t h = std::uint32_t(b[0].d) | (two ? std::uint32_t(b[1].d) << 16 : 0u);
  return pair_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(int(h))));
}
inline __m512 xscale_pair(const float* d, bool two) noexcept {
  return pair_ps(two ? _mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(d)))
                     : _mm_load_ss(d));
}

template <std::size_t MR, std::size_t NR, class W>
inline void pair(const std::int8_t* xq, const float* xd, const W* wr, std::size_t K, std::size_t b,
                 bool two, __m512 (&acc)[MR][NR]) noexcept {
  const std::size_t nb = K / 32;
  __m512i wu[NR];
  __m512 dw[NR];
  for (std::size_t j = 0; j < NR; ++j) {
    const W* blk = wr + j * nb + b;
    wu[j] = wpair(blk, two);
    dw[j] = wscale_pair(blk, two);
  }
  for (std::size_t i = 0; i < MR; ++i) {
    const __m512i xv =
        _mm512_maskz_loadu_epi8(two ? ~__mmask64(0) : __mmask64(0xFFFFFFFF), xq + i * K + 32 * b);
    // -offset * (sum of each 4 activations): the correction every output of this row shares
    const __m512i corr = _mm512_sub_epi32(
        _mm512_setzero_si512(),
        _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(woffset<W>), xv));
    const __m512 dx = xscale_pair(xd + i * nb + b, two);
    for (std::size_t j = 0; j < NR; ++j) {
      const __m512i p = _mm512_dpbusd_epi32(corr, wu[j], xv);
      acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(dw[j], dx), acc[i][j]);
    }
  }
}

// 32 registers: 1 x 8 tiles for one row (decode: 8 weight rows stream at once), 4 x 4 for
// more.
struct kernel {
  static constexpr std::size_t nr1 = 8, nrm = 4;
};

template <std::size_t MR, std::size_t NR, class W>
inline void tile(kernel, const std::int8_t* xq, const float* xd, const W* w, std::size_t K,
                 std::size_t n, float* y, std::size_t ldy, const float* bias) noexcept {
  const std::size_t nb = K / 32;
  __m512 acc[MR][NR];
  for (std::size_t i = 0; i < MR; ++i)
    for (std::size_t j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  const W* wr = w + n * nb;
  std::size_t b = 0;
  for (; b + 2 <= nb; b += 2) pair<MR, NR>(xq, xd, wr, K, b, true, acc);
  if (b < nb) pair<MR, NR>(xq, xd, wr, K, b, false, acc);
  store_tile<MR, NR>(
      [&](std::size_t i, std::size_t j) {
        return avx2q::hsum8(_mm256_add_ps(
            _mm512_castps512_ps256(acc[i][j]),
            _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[i][j]), 1))));
      },
      n, y, ldy, bias);
}

}  // namespace eexit::detail::vnniq
EEXIT_TARGET_END

// The SIMD variants on the interleaved layout. Register lane 2l + p of an output's
// accumulators holds a[8p + l] of q_dot_scalar (VNNI: one zmm; AVX2: two ymm, l < 4 and
// l >= 4), so a pair's scales are one 8-byte broadcast, and the final reduction is
// q_hsum8's: adjacent lanes (t[l] = a[l] + a[l + 8]), then halves twice, then lanes 0 + 2.
EEXIT_TARGET_BEGIN("avx2,fma,f16c")
namespace eexit::detail::avx2l {

inline __m256 pair_bcast(const void* p) noexcept {
  double d;
  std::memcpy(&d, p, 8);
  return _mm256_castpd_ps(_mm256_set1_pd(d));
}
// u: lanes 0, 2, 4, 6 hold u0..u3 of q_hsum8; returns (u0 + u2) + (u1 + u3).
inline float reduce_u(__m256 u) noexcept {
  const __m128 w = _mm_add_ps(_mm256_castps256_ps128(u), _mm256_extractf128_ps(u, 1));
  return _mm_cvtss_f32(_mm_add_ss(w, _mm_movehl_ps(w, w)));
}
inline float reduce(__m256 lo, __m256 hi) noexcept {
  return reduce_u(_mm256_add_ps(_mm256_add_ps(lo, _mm256_permute_ps(lo, 0xB1)),
                                _mm256_add_ps(hi, _mm256_permute_ps(hi, 0xB1))));
}

// Half k (0, 1) of row j's pair as the operand of dot: Q8_0 the signed weights, Q4_0 the
// unsigned nibbles (w + 8, whose pair sums with x stay below 2^15: no saturation).
inline __m256i whalf(const unsigned char* ch, std::size_t j, std::size_t k,
                     const block_q8_0*) noexcept {
  return _mm256_xor_si256(
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ch + 64 + 64 * j + 32 * k)),
      _mm256_set1_epi8(char(0x80)));
}
inline __m256i whalf(const unsigned char* ch, std::size_t j, std::size_t k,
                     const block_q4_0*) noexcept {
  const __m256i v =
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ch + 64 + 64 * (j / 2) + 32 * k));
  return _mm256_and_si256(j % 2 ? _mm256_srli_epi16(v, 4) : v, _mm256_set1_epi8(15));
}
// What every output subtracts for activations xv: 0 for Q8_0, 8 * (sums of 4) for Q4_0.
inline __m256i xcorr(__m256i, const block_q8_0*) noexcept {
  return _mm256_setzero_si256();
}
inline __m256i xcorr(__m256i xv, const block_q4_0*) noexcept {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(8), xv), _mm256_set1_epi16(1));
}
// The 8 exact int32 sums of 4 products.
inline __m256i dot(__m256i w, __m256i xv, __m256i, const block_q8_0*) noexcept {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(xv, w)),
                           _mm256_set1_epi16(1));
}
inline __m256i dot(__m256i w, __m256i xv, __m256i corr, const block_q4_0*) noexcept {
  return _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(w, xv), _mm256_set1_epi16(1)),
                          corr);
}

// NR divides 8 and is even (a Q4_0 row pair is one load). 16 registers, two accumulators an
// output: 1 x 4 tiles for one row, 4 x 2 for more.
struct kernel {
  static constexpr std::size_t nr1 = 4, nrm = 2;
};

// MR rows x NR outputs (rows j0.. of the group at g, output n): outputs in [n0, n1) written.
template <std::size_t MR, std::size_t NR, class W>
inline void tile(kernel, const std::int8_t* xq, const float* xd, std::size_t np,
                 const unsigned char* g, std::size_t j0, std::size_t n, std::size_t n0,
                 std::size_t n1, float* y, std::size_t ldy, const float* bias) noexcept {
  const W* tag = nullptr;
  __m256 acc[MR][NR][2];
  for (std::size_t i = 0; i < MR; ++i)
    for (std::size_t j = 0; j < NR; ++j) acc[i][j][0] = acc[i][j][1] = _mm256_setzero_ps();
  for (std::size_t q = 0; q < np; ++q) {
    const unsigned char* ch = g + q * il_chunk<W>;
    for (std::size_t k = 0; k < 2; ++k) {
      __m256i w[NR];
      for (std::size_t j = 0; j < NR; ++j) w[j] = whalf(ch, j0 + j, k, tag);
      for (std::size_t i = 0; i < MR; ++i) {
        const __m256i xv = _mm256_loadu_si256(
            reinterpret_cast<const __m256i*>(xq + i * 64 * np + 64 * q + 32 * k));
        const __m256i corr = xcorr(xv, tag);
        const __m256 dx = pair_bcast(xd + i * 2 * np + 2 * q);
        for (std::size_t j = 0; j < NR; ++j)
          acc[i][j][k] =
              _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot(w[j], xv, corr, tag)),
                              _mm256_mul_ps(pair_bcast(ch + 8 * (j0 + j)), dx), acc[i][j][k]);
      }
    }
  }
  store_tile<MR, NR, true>(
      [&](std::size_t i, std::size_t j) { return reduce(acc[i][j][0], acc[i][j][1]); }, n, y, ldy,
      bias, n0, n1);
}

}  // namespace eexit::detail::avx2l
EEXIT_TARGET_END

EEXIT_TARGET_BEGIN("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")
namespace eexit::detail::vnnil {

inline __m512 pair_bcast(const void* p) noexcept {
  double d;
  std::memcpy(&d, p, 8);
  return _mm512_castpd_ps(_mm512_set1_pd(d));
}
inline float reduce(__m512 a) noexcept {
  const __m512 v = _mm512_add_ps(a, _mm512_permute_ps(a, 0xB1));
  return avx2l::reduce_u(_mm256_add_ps(
      _mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
}
// Row j's 64 weights of a chunk as unsigned bytes (w + 128 or w + 8) in pair order.
inline __m512i wrow(const unsigned char* ch, std::size_t j, const block_q8_0*) noexcept {
  return _mm512_loadu_si512(ch + 64 + 64 * j);
}
inline __m512i wrow(const unsigned char* ch, std::size_t j, const block_q4_0*) noexcept {
  const __m512i v = _mm512_loadu_si512(ch + 64 + 64 * (j / 2));
  return _mm512_and_si512(j % 2 ? _mm512_srli_epi16(v, 4) : v, _mm512_set1_epi8(15));
}

// 32 registers: 1 x 8 tiles for one row, 4 x 4 for more.
struct kernel {
  static constexpr std::size_t nr1 = 8, nrm = 4;
};

template <std::size_t MR, std::size_t NR, class W>
inline void tile(kernel, const std::int8_t* xq, const float* xd, std::size_t np,
                 const unsigned char* g, std::size_t j0, std::size_t n, std::size_t n0,
                 std::size_t n1, float* y, std::size_t ldy, const float* bias) noexcept {
  const W* tag = nullptr;
  __m512 acc[MR][NR];
  for (std::size_t i = 0; i < MR; ++i)
    for (std::size_t j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  for (std::size_t q = 0; q < np; ++q) {
    const unsigned char* ch = g + q * il_chunk<W>;
    __m512i wu[NR];
    __m512 dw[NR];
    for (std::size_t j = 0; j < NR; ++j) {
      wu[j] = wrow(ch, j0 + j, tag);
      dw[j] = pair_bcast(ch + 8 * (j0 + j));
    }
    for (std::size_t i = 0; i < MR; ++i) {
      const __m512i xv = _mm512_loadu_si512(xq + i * 64 * np + 64 * q);
      // -offset * (sum of each 4 activations): the correction every output of this row shares
      const __m512i corr = _mm512_sub_epi32(
          _mm512_setzero_si512(),
          _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(vnniq::woffset<W>), xv));
      const __m512 dx = pair_bcast(xd + i * 2 * np + 2 * q);
      for (std::size_t j = 0; j < NR; ++j)
        acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(corr, wu[j], xv)),
                                    _mm512_mul_ps(dw[j], dx), acc[i][j]);
    }
  }
  store_tile<MR, NR, true>([&](std::size_t i, std::size_t j) { return reduce(acc[i][j]); }, n, y,
                           ldy, bias, n0, n1);
}

}  // namespace eexit::detail::vnnil
EEXIT_TARGET_END

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace eexit::detail {

// The loops over rows and outputs of the stored layout, shared by the variants (Isa: their
// `kernel` tag): each group of NR weight rows is used by every row while it is in L1 (the
// quantized rows x, M * K bytes, stay in L2), so W streams from memory once whatever M.
template <class Isa, class W>
inline void matmul_q8act_tiles(const std::int8_t* xq, const float* xd, std::size_t M, const W* w,
                               std::size_t K, std::size_t n0, std::size_t n1, float* y,
                               std::size_t ldy, const float* bias) noexcept {
  const std::size_t nb = K / 32;
  const auto column = [&]<std::size_t NR>(std::size_t n) {
    row_tiles(M, [&]<std::size_t MR>(std::size_t m) {
      tile<MR, NR>(Isa{}, xq + m * K, xd + m * nb, w, K, n, y + m * ldy, ldy, bias);
    });
  };
  std::size_t n = n0;
  if (M == 1)
    for (; n + Isa::nr1 <= n1; n += Isa::nr1) column.template operator()<Isa::nr1>(n);
  else
    for (; n + Isa::nrm <= n1; n += Isa::nrm) column.template operator()<Isa::nrm>(n);
  for (; n < n1; ++n) column.template operator()<1>(n);
}

// The loops on the interleaved layout: group by group, NR of its 8 rows at a time, each used
// by every activation row while in L1. Groups cut by [n0, n1) are computed whole and written
// in part (the fused projections split at any output).
template <class Isa, class W>
inline void matmul_q8act_il_tiles(const std::int8_t* xq, const float* xd, std::size_t M,
                                  const unsigned char* w, std::size_t K, std::size_t n0,
                                  std::size_t n1, float* y, std::size_t ldy,
                                  const float* bias) noexcept {
  const std::size_t np = (K / 32 + 1) / 2, xs = 64 * np, ds = 2 * np;
  const auto groups = [&]<std::size_t NR>() {
    for (std::size_t g = n0 / q_rows; g * q_rows < n1; ++g)
      for (std::size_t j0 = 0; j0 < q_rows; j0 += NR) {
        const std::size_t n = g * q_rows + j0;
        if (n + NR > n0 && n < n1)
          row_tiles(M, [&]<std::size_t MR>(std::size_t m) {
            tile<MR, NR, W>(Isa{}, xq + m * xs, xd + m * ds, np, w + g * np * il_chunk<W>, j0, n,
                            n0, n1, y + m * ldy, ldy, bias);
          });
      }
  };
  if (M == 1)
    groups.template operator()<Isa::nr1>();
  else
    groups.template operator()<Isa::nrm>();
}

}  // namespace eexit::detail
#endif  // EEXIT_ISA_X86

namespace eexit::detail {

// y[m, n] = x[m, :] · w[n, :] (+ bias[n]) for m in [0, M), n in [n0, n1), x given as its
// Q8 blocks (quantize_row_q8): xq (M, K) int8, xd (M, K/32). w: (N, K/32) blocks.
template <class W>
inline void matmul_q8act(const std::int8_t* xq, const float* xd, std::size_t M, const W* w,
                         std::size_t K, std::size_t n0, std::size_t n1, float* y, std::size_t ldy,
                         const float* bias) noexcept {
  switch (quant_isa_now()) {
#if defined(EEXIT_ISA_X86)
    case quant_isa::vnni:
      return matmul_q8act_tiles<vnniq::kernel>(xq, xd, M, w, K, n0, n1, y, ldy, bias);
    case quant_isa::avx2:
      return matmul_q8act_tiles<avx2q::kernel>(xq, xd, M, w, K, n0, n1, y, ldy, bias);
#endif
    default:
      return matmul_q8act_scalar(xq, xd, M, w, K, n0, n1, y, ldy, bias);
  }
}

// The same products on the interleaved layout: x in pair order (quantize_row_q8_il), w the
// interleaved bytes of an (N, K) matrix (repack_il), any [n0, n1) within N.
template <class W>
inline void matmul_q8act_il(const std::int8_t* xq, const float* xd, std::size_t M,
                            const unsigned char* w, std::size_t K, std::size_t n0, std::size_t n1,
                            float* y, std::size_t ldy, const float* bias) noexcept {
  switch (quant_isa_now()) {
#if defined(EEXIT_ISA_X86)
    case quant_isa::vnni:
      return matmul_q8act_il_tiles<vnnil::kernel, W>(xq, xd, M, w, K, n0, n1, y, ldy, bias);
    case quant_isa::avx2:
      return matmul_q8act_il_tiles<avx2l::kernel, W>(xq, xd, M, w, K, n0, n1, y, ldy, bias);
#endif
    default:
      return matmul_q8act_il_scalar<W>(xq, xd, M, w, K, n0, n1, y, ldy, bias);
  }
}

}  // namespace eexit::detail
