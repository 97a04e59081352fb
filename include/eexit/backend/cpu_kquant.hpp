#pragma once
// Q4_K / Q5_K / Q6_K matmul with int8 activations (issue 19): the K-quants kept quantized
// on the CPU, under cpu_quant.hpp's rules. A K-quant super-block (256 weights) is 8
// sub-blocks of 32 (dtype.hpp's kq_decode), each, with unsigned q,
//     Q4_K, Q5_K: w[e] = s · q[e] - o        (s = d · scale_j, o = dmin · min_j)
//     Q6_K:       w[e] = s[e / 16] · (q[e] - 32)  (s[h] = d · its int8 scale)
// s and o are exact in fp32 (an fp16 times a 6- or 8-bit integer). Against one Q8
// activation block (dx, x) of cpu_quant.hpp, with lanes l (elements 4l..4l+3), h = l / 4 and
// the lane's exact int32 sums p[l] = Σ (q - c) · x (c = 32 for Q6_K, else 0) and
// cx[l] = Σ x, every output element is, in this fixed order whatever the batch size, the
// tile or the thread (DESIGN.md §3):
//     a[8 (b & 1) + l] = fma(float(p[l]), s[h] · dx, a[...])
//     Q4_K, Q5_K only:   a[8 (b & 1) + l] = fma(float(cx[l]) · dx, -o, a[...])
// for blocks b in k order, then cpu_quant.hpp's reduction of the 16 lanes. Scalar, AVX2 and
// AVX-512 VNNI variants do exactly these operations (the integer sums are exact however
// they are formed: q <= 63 and |x| <= 127, so a vpmaddubsw pair sum stays below 2^15;
// the Q6_K offset is 32 · Σ x, one shift of the Σ x every output of a row shares, as the
// o term's cx is), so they give the same bits.
//
// Layout (repack_kq, at load): cpu_quant.hpp's interleaved one (groups of q_rows = 8 rows,
// blocks in pairs, weights in pair order), a chunk per group and pair of blocks holding
//   Q4_K, Q5_K: float s[8][2] (row j, block p), float -o[8][2]; Q6_K: float s[8][2 h][2 p]
//   u8 nib[4][64]   rows 2i (low nibbles) and 2i + 1 (high) of q & 15, as Q4_0's
//   Q5_K: u64 hi[8]   bit pos: bit 4 of row j's weight at pos
//   Q6_K: u8 hi[2][64]  bits 2r..2r+1 of byte pos of plane i: bits 4-5 of row 4i + r's
// 6, 7 and 8 bits a weight (the file: 4.5, 5.5, 6.56). The activations are the pair-order
// Q8 rows of the Q8_0 / Q4_0 interleaved layout (quantize_row_q8_il), so a fused product
// may mix all five types. Matrices kept as stored (a row offset not on a group, repacking
// off) run the scalar arithmetic on the file's blocks (matmul_kq_raw): the same bits.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "eexit/backend/cpu_quant.hpp"
#include "eexit/core/dtype.hpp"

namespace eexit::detail {

// The three layouts' tags (template arguments of the shared loops).
struct kq4_t {};
struct kq5_t {};
struct kq6_t {};
template <class K>
inline constexpr dtype kq_dtype = std::is_same_v<K, kq4_t>   ? dtype::q4_k
                                  : std::is_same_v<K, kq5_t> ? dtype::q5_k
                                                             : dtype::q6_k;
template <class K>
inline constexpr bool kq_min = !std::is_same_v<K, kq6_t>;  // w = s · q - o
template <class K>
inline constexpr int kq_off = std::is_same_v<K, kq6_t> ? 32 : 0;  // w = s · (q - 32)

template <>
inline constexpr std::size_t il_chunk<kq4_t> = 128 + 4 * 64;
template <>
inline constexpr std::size_t il_chunk<kq5_t> = 128 + 4 * 64 + 64;
template <>
inline constexpr std::size_t il_chunk<kq6_t> = 128 + 4 * 64 + 128;
inline constexpr std::size_t kq_nib = 128, kq_hi = 128 + 4 * 64;

// Row j's unsigned q at byte pos of a chunk's pair order.
template <class K>
inline int kq_q(const unsigned char* ch, std::size_t j, std::size_t pos) noexcept {
  const unsigned v = ch[kq_nib + 64 * (j / 2) + pos];
  unsigned q = j % 2 ? v >> 4 : v & 15u;
  if constexpr (std::is_same_v<K, kq5_t>) {
    std::uint64_t h;
    std::memcpy(&h, ch + kq_hi + 8 * j, 8);
    q |= unsigned(h >> pos & 1u) << 4;
  } else if constexpr (std::is_same_v<K, kq6_t>) {
    q |= (ch[kq_hi + 64 * (j / 4) + pos] >> (2 * (j % 4)) & 3u) << 4;
  }
  return int(q);
}
// Byte offsets of row j's scale of block p, half h, and of its -o.
template <class K>
constexpr std::size_t kq_s_at(std::size_t j, std::size_t p, std::size_t h) noexcept {
  return kq_min<K> ? 8 * j + 4 * p : 16 * j + 8 * h + 4 * p;
}
constexpr std::size_t kq_mo_at(std::size_t j, std::size_t p) noexcept {
  return 64 + 8 * j + 4 * p;
}
inline float kq_f32(const unsigned char* at) noexcept {
  float v;
  std::memcpy(&v, at, 4);
  return v;
}

// w (N rows of K weights, the file's super-blocks) -> dst (il_bytes<K>(N, Kw)).
template <class K>
inline void repack_kq(const unsigned char* w, std::size_t N, std::size_t Kw,
                      unsigned char* dst) noexcept {
  constexpr dtype t = kq_dtype<K>;
  const std::size_t nb = Kw / 32, np = nb / 2, rb = row_bytes(t, Kw);
  std::memset(dst, 0, il_bytes<K>(N, Kw));  // padding rows: q 0, scales 0
  for (std::size_t n = 0; n < N; ++n)
    for (std::size_t b = 0; b < nb; ++b) {
      const std::size_t j = n % q_rows, p = b % 2;
      unsigned char* ch = dst + (n / q_rows * np + b / 2) * il_chunk<K>;
      const kq_sub s = kq_decode(t, w + n * rb + b / 8 * kquant_bytes(t), int(b % 8));
      for (std::size_t h = 0; h < 2; ++h) std::memcpy(ch + kq_s_at<K>(j, p, h), &s.s[h], 4);
      if constexpr (kq_min<K>) {
        const float mo = -s.o;
        std::memcpy(ch + kq_mo_at(j, p), &mo, 4);
      }
      std::uint64_t hi = 0;
      if constexpr (std::is_same_v<K, kq5_t>) std::memcpy(&hi, ch + kq_hi + 8 * j, 8);
      for (std::size_t e = 0; e < 32; ++e) {
        const std::size_t pos = il_pos(p, e);
        const unsigned q = s.q[e];
        ch[kq_nib + 64 * (j / 2) + pos] |= static_cast<unsigned char>((q & 15u) << 4 * (j % 2));
        if constexpr (std::is_same_v<K, kq5_t>) hi |= std::uint64_t(q >> 4) << pos;
        if constexpr (std::is_same_v<K, kq6_t>)
          ch[kq_hi + 64 * (j / 4) + pos] |= static_cast<unsigned char>((q >> 4) << 2 * (j % 4));
      }
      if constexpr (std::is_same_v<K, kq5_t>) std::memcpy(ch + kq_hi + 8 * j, &hi, 8);
    }
}

// Row r of a repacked matrix to fp32: the values convert_to_f32 gives for the file's blocks.
template <class K>
inline void dequantize_row_kq(const unsigned char* w, std::size_t Kw, std::size_t r,
                              float* out) noexcept {
  const std::size_t nb = Kw / 32, np = nb / 2, j = r % q_rows;
  const unsigned char* g = w + r / q_rows * np * il_chunk<K>;
  for (std::size_t b = 0; b < nb; ++b) {
    const unsigned char* ch = g + b / 2 * il_chunk<K>;
    kq_sub s{};
    for (std::size_t h = 0; h < 2; ++h) s.s[h] = kq_f32(ch + kq_s_at<K>(j, b % 2, h));
    if constexpr (kq_min<K>) s.o = -kq_f32(ch + kq_mo_at(j, b % 2));
    for (std::size_t e = 0; e < 32; ++e)
      s.q[e] = static_cast<std::uint8_t>(kq_q<K>(ch, j, il_pos(b % 2, e)));
    for (int e = 0; e < 32; ++e) out[32 * b + std::size_t(e)] = kq_value(kq_dtype<K>, s, e);
  }
}

// One lane's step of the arithmetic (the header comment), shared by the scalar variants.
template <class K>
inline void kq_lane(float& a, std::int32_t p, std::int32_t cx, float s, float mo,
                    float dx) noexcept {
  a = std::fma(float(p), s * dx, a);
  if constexpr (kq_min<K>) a = std::fma(float(cx) * dx, mo, a);
}
inline float kq_reduce(const float* a) noexcept {
  float t[8];
  for (std::size_t l = 0; l < 8; ++l) t[l] = a[l] + a[l + 8];
  return q_hsum8(t);
}

// The scalar variant on the repacked layout: output j of the group at g.
template <class K>
inline float kq_dot_il_scalar(const std::int8_t* xq, const float* xd, const unsigned char* g,
                              std::size_t j, std::size_t nb) noexcept {
  float a[16] = {};
  for (std::size_t b = 0; b < nb; ++b) {
    const std::size_t p = b % 2;
    const unsigned char* ch = g + b / 2 * il_chunk<K>;
    const std::int8_t* x = xq + 64 * (b / 2);
    const float mo = kq_min<K> ? kq_f32(ch + kq_mo_at(j, p)) : 0.0f;
    for (std::size_t l = 0; l < 8; ++l) {
      std::int32_t sum = 0, cx = 0;
      for (std::size_t e = 4 * l; e < 4 * l + 4; ++e) {
        const std::size_t pos = il_pos(p, e);
        sum += (kq_q<K>(ch, j, pos) - kq_off<K>)*x[pos];
        cx += x[pos];
      }
      kq_lane<K>(a[8 * p + l], sum, cx, kq_f32(ch + kq_s_at<K>(j, p, l / 4)), mo, xd[b]);
    }
  }
  return kq_reduce(a);
}

// The scalar arithmetic on the file's blocks (x in element order: quantize_row_q8).
template <class K>
inline float kq_dot_raw(const std::int8_t* xq, const float* xd, const unsigned char* row,
                        std::size_t nb) noexcept {
  constexpr dtype t = kq_dtype<K>;
  float a[16] = {};
  for (std::size_t b = 0; b < nb; ++b) {
    const kq_sub s = kq_decode(t, row + b / 8 * kquant_bytes(t), int(b % 8));
    const std::int8_t* x = xq + 32 * b;
    for (std::size_t l = 0; l < 8; ++l) {
      std::int32_t sum = 0, cx = 0;
      for (std::size_t e = 4 * l; e < 4 * l + 4; ++e) {
        sum += (int(s.q[e]) - kq_off<K>)*x[e];
        cx += x[e];
      }
      kq_lane<K>(a[8 * (b & 1) + l], sum, cx, s.s[l / 4], -s.o, xd[b]);
    }
  }
  return kq_reduce(a);
}

template <class K>
inline void matmul_kq_il_scalar(const std::int8_t* xq, const float* xd, std::size_t M,
                                const unsigned char* w, std::size_t Kw, std::size_t n0,
                                std::size_t n1, float* y, std::size_t ldy,
                                const float* bias) noexcept {
  const std::size_t nb = Kw / 32, np = nb / 2;
  scalar_outputs(M, n0, n1, y, ldy, bias, [&](std::size_t m, std::size_t n) {
    return kq_dot_il_scalar<K>(xq + m * 64 * np, xd + m * 2 * np, w + n / q_rows * np * il_chunk<K>,
                               n % q_rows, nb);
  });
}

// y[m, n] for n in [n0, n1) from x in element order (quantize_row_q8) and the matrix as the
// file stores it (rows of row_bytes(t, Kw)).
template <class K>
inline void matmul_kq_raw(const std::int8_t* xq, const float* xd, std::size_t M,
                          const unsigned char* w, std::size_t Kw, std::size_t n0, std::size_t n1,
                          float* y, std::size_t ldy, const float* bias) noexcept {
  const std::size_t nb = Kw / 32, rb = row_bytes(kq_dtype<K>, Kw);
  scalar_outputs(M, n0, n1, y, ldy, bias, [&](std::size_t m, std::size_t n) {
    return kq_dot_raw<K>(xq + m * Kw, xd + m * nb, w + n * rb, nb);
  });
}

}  // namespace eexit::detail

#if defined(EEXIT_ISA_X86)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

// The SIMD variants: avx2l's and vnnil's register lanes (lane 2l + p of an output's
// accumulators holds a[8p + l]), their reductions and broadcasts; the shared loop is
// matmul_q8act_il_tiles (cpu_quant.hpp), which finds these tiles by their kernel tag.
EEXIT_TARGET_BEGIN("avx2,fma,f16c")
namespace eexit::detail::avx2k {

// Half k (elements 16k..16k+15 of both blocks) of row j's q, unsigned bytes.
template <class K>
inline __m256i whalf(const unsigned char* ch, std::size_t j, std::size_t k) noexcept {
  const __m256i v =
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ch + kq_nib + 64 * (j / 2) + 32 * k));
  __m256i q = _mm256_and_si256(j % 2 ? _mm256_srli_epi16(v, 4) : v, _mm256_set1_epi8(15));
  if constexpr (std::is_same_v<K, kq5_t>) {
    std::uint32_t h;
    std::memcpy(&h, ch + kq_hi + 8 * j + 4 * k, 4);
    // byte i <- byte i / 8 of h, then its bit i % 8
    const __m256i bytes = _mm256_shuffle_epi8(
        _mm256_set1_epi32(int(h)),
        _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
    const __m256i bit = _mm256_set1_epi64x(std::int64_t(0x8040201008040201ull));
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
    q = _mm256_or_si256(q, _mm256_and_si256(set, _mm256_set1_epi8(16)));
  } else if constexpr (std::is_same_v<K, kq6_t>) {
    const __m256i hv =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ch + kq_hi + 64 * (j / 4) + 32 * k));
    const __m256i two = _mm256_and_si256(_mm256_srl_epi16(hv, _mm_cvtsi32_si128(int(2 * (j % 4)))),
                                         _mm256_set1_epi8(3));
    q = _mm256_or_si256(q, _mm256_slli_epi16(two, 4));
  }
  return q;
}

struct kernel {
  static constexpr std::size_t nr1 = 4, nrm = 2;
};

template <std::size_t MR, std::size_t NR, class K>
inline void tile(kernel, const std::int8_t* xq, const float* xd, std::size_t np,
                 const unsigned char* g, std::size_t j0, std::size_t n, std::size_t n0,
                 std::size_t n1, float* y, std::size_t ldy, const float* bias) noexcept {
  using avx2l::pair_bcast;
  __m256 acc[MR][NR][2];
  for (std::size_t i = 0; i < MR; ++i)
    for (std::size_t j = 0; j < NR; ++j) acc[i][j][0] = acc[i][j][1] = _mm256_setzero_ps();
  const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
  for (std::size_t q = 0; q < np; ++q) {
    const unsigned char* ch = g + q * il_chunk<K>;
    for (std::size_t k = 0; k < 2; ++k) {
      __m256i w[NR];
      for (std::size_t j = 0; j < NR; ++j) w[j] = whalf<K>(ch, j0 + j, k);
      for (std::size_t i = 0; i < MR; ++i) {
        const __m256i xv = _mm256_loadu_si256(
            reinterpret_cast<const __m256i*>(xq + i * 64 * np + 64 * q + 32 * k));
        const __m256 dx = pair_bcast(xd + i * 2 * np + 2 * q);
        const __m256i cx = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, xv), ones16);
        const __m256i corr = kq_off<K> ? _mm256_slli_epi32(cx, 5) : _mm256_setzero_si256();
        const __m256 cxd = _mm256_mul_ps(_mm256_cvtepi32_ps(cx), dx);
        for (std::size_t j = 0; j < NR; ++j) {
          const std::size_t r = j0 + j;
          const __m256i p =
              _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(w[j], xv), ones16), corr);
          acc[i][j][k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),
                                         _mm256_mul_ps(pair_bcast(ch + kq_s_at<K>(r, 0, k)), dx),
                                         acc[i][j][k]);
          if constexpr (kq_min<K>)
            acc[i][j][k] = _mm256_fmadd_ps(cxd, pair_bcast(ch + kq_mo_at(r, 0)), acc[i][j][k]);
        }
      }
    }
  }
  store_tile<MR, NR, true>(
      [&](std::size_t i, std::size_t j) { return avx2l::reduce(acc[i][j][0], acc[i][j][1]); }, n, y,
      ldy, bias, n0, n1);
}

}  // namespace eexit::detail::avx2k
EEXIT_TARGET_END

EEXIT_TARGET_BEGIN("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")
namespace eexit::detail::vnnik {

// Row j's 64 q of a chunk, unsigned bytes in pair order.
template <class K>
inline __m512i wrow(const unsigned char* ch, std::size_t j) noexcept {
  const __m512i v = _mm512_loadu_si512(ch + kq_nib + 64 * (j / 2));
  __m512i q = _mm512_and_si512(j % 2 ? _mm512_srli_epi16(v, 4) : v, _mm512_set1_epi8(15));
  if constexpr (std::is_same_v<K, kq5_t>) {
    std::uint64_t h;
    std::memcpy(&h, ch + kq_hi + 8 * j, 8);
    q = _mm512_mask_add_epi8(q, _cvtu64_mask64(h), q, _mm512_set1_epi8(16));
  } else if constexpr (std::is_same_v<K, kq6_t>) {
    const __m512i hv = _mm512_loadu_si512(ch + kq_hi + 64 * (j / 4));
    const __m512i two = _mm512_and_si512(_mm512_srl_epi16(hv, _mm_cvtsi32_si128(int(2 * (j % 4)))),
                                         _mm512_set1_epi8(3));
    q = _mm512_or_si512(q, _mm512_slli_epi16(two, 4));
  }
  return q;
}
// Row j's scales by lane: Q4_K / Q5_K one pair for all lanes, Q6_K half 0's pair in lanes
// 0-7 and half 1's in lanes 8-15.
template <class K>
inline __m512 wscale(const unsigned char* ch, std::size_t j) noexcept {
  if constexpr (kq_min<K>) {
    return vnnil::pair_bcast(ch + kq_s_at<K>(j, 0, 0));
  } else {
    const __m512i idx = _mm512_set_epi32(3, 2, 3, 2, 3, 2, 3, 2, 1, 0, 1, 0, 1, 0, 1, 0);
    return _mm512_permutexvar_ps(
        idx, _mm512_castps128_ps512(
                 _mm_loadu_ps(reinterpret_cast<const float*>(ch + kq_s_at<K>(j, 0, 0)))));
  }
}

struct kernel {
  static constexpr std::size_t nr1 = 8, nrm = 4;
};

template <std::size_t MR, std::size_t NR, class K>
inline void tile(kernel, const std::int8_t* xq, const float* xd, std::size_t np,
                 const unsigned char* g, std::size_t j0, std::size_t n, std::size_t n0,
                 std::size_t n1, float* y, std::size_t ldy, const float* bias) noexcept {
  using vnnil::pair_bcast;
  __m512 acc[MR][NR];
  for (std::size_t i = 0; i < MR; ++i)
    for (std::size_t j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  for (std::size_t q = 0; q < np; ++q) {
    const unsigned char* ch = g + q * il_chunk<K>;
    __m512i wu[NR];
    __m512 dw[NR];
    for (std::size_t j = 0; j < NR; ++j) {
      wu[j] = wrow<K>(ch, j0 + j);
      dw[j] = wscale<K>(ch, j0 + j);
    }
    for (std::size_t i = 0; i < MR; ++i) {
      const __m512i xv = _mm512_loadu_si512(xq + i * 64 * np + 64 * q);
      const __m512 dx = pair_bcast(xd + i * 2 * np + 2 * q);
      const __m512i cx = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(1), xv);
      const __m512i corr = kq_off<K>
                               ? _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(cx, 5))
                               : _mm512_setzero_si512();
      const __m512 cxd = _mm512_mul_ps(_mm512_cvtepi32_ps(cx), dx);
      for (std::size_t j = 0; j < NR; ++j) {
        acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(corr, wu[j], xv)),
                                    _mm512_mul_ps(dw[j], dx), acc[i][j]);
        if constexpr (kq_min<K>)
          acc[i][j] = _mm512_fmadd_ps(cxd, pair_bcast(ch + kq_mo_at(j0 + j, 0)), acc[i][j]);
      }
    }
  }
  store_tile<MR, NR, true>([&](std::size_t i, std::size_t j) { return vnnil::reduce(acc[i][j]); },
                           n, y, ldy, bias, n0, n1);
}

}  // namespace eexit::detail::vnnik
EEXIT_TARGET_END

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif  // EEXIT_ISA_X86

namespace eexit::detail {

// y[m, n] = x[m, :] · w[n, :] (+ bias[n]) for m < M, n in [n0, n1): x in pair order
// (quantize_row_q8_il), w a matrix repacked by repack_kq<K>.
template <class K>
inline void matmul_kq_il(const std::int8_t* xq, const float* xd, std::size_t M,
                         const unsigned char* w, std::size_t Kw, std::size_t n0, std::size_t n1,
                         float* y, std::size_t ldy, const float* bias) noexcept {
  switch (quant_isa_now()) {
#if defined(EEXIT_ISA_X86)
    case quant_isa::vnni:
      return matmul_q8act_il_tiles<vnnik::kernel, K>(xq, xd, M, w, Kw, n0, n1, y, ldy, bias);
    case quant_isa::avx2:
      return matmul_q8act_il_tiles<avx2k::kernel, K>(xq, xd, M, w, Kw, n0, n1, y, ldy, bias);
#endif
    default:
      return matmul_kq_il_scalar<K>(xq, xd, M, w, Kw, n0, n1, y, ldy, bias);
  }
}

// fn(tag) with the tag of K-quant type t.
template <class F>
inline decltype(auto) with_kq(dtype t, F&& fn) {
  if (t == dtype::q4_k) return fn(kq4_t{});
  if (t == dtype::q5_k) return fn(kq5_t{});
  return fn(kq6_t{});
}

}  // namespace eexit::detail
