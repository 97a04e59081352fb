// One SIMD variant of the int8-activation Q8_0 / Q4_0 matmul, included by cpu_quant.hpp once
// per target (no include guard on purpose) with EEXIT_QUANT_NS naming its namespace and
// EEXIT_QUANT_DOT(u, s) giving 8 int32 lanes, lane l = sum of u[4l + e] * s[4l + e] over
// e < 4 (u unsigned, s signed bytes), all compiled for the target EEXIT_QUANT_TARGET (a
// pragma over the whole body: templates included, no -march flag needed). The arithmetic is
// cpu_quant.hpp's q_dot_scalar's. The three macros are undefined at the end.

#define EEXIT_QUANT_PRAGMA(x) _Pragma(#x)
#define EEXIT_QUANT_PRAGMA_X(x) EEXIT_QUANT_PRAGMA(x)
#if defined(__clang__)
EEXIT_QUANT_PRAGMA_X(clang attribute push(__attribute__((target(EEXIT_QUANT_TARGET))),
                                          apply_to = function))
#else
#pragma GCC push_options
EEXIT_QUANT_PRAGMA_X(GCC target(EEXIT_QUANT_TARGET))
#endif

namespace eexit::detail::EEXIT_QUANT_NS {

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

// The fixed reduction q_hsum8 does: lanes i + i+4, then i + i+2, then 0 + 1.
inline float hsum8(__m256 v) noexcept {
  const __m128 t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 u = _mm_add_ps(t, _mm_movehl_ps(t, t));
  return _mm_cvtss_f32(_mm_add_ss(u, _mm_shuffle_ps(u, u, 1)));
}

// MR rows x NR outputs at output n: for every block, NR weight blocks are loaded once and
// used by all MR rows.
template <std::size_t MR, std::size_t NR, class W>
inline void tile(const std::int8_t* xq, const float* xd, const W* w, std::size_t K, std::size_t n,
                 float* y, std::size_t ldy, const float* bias) noexcept {
  const std::size_t nb = K / 32;
  __m256 acc[MR][NR];
  for (std::size_t i = 0; i < MR; ++i)
    for (std::size_t j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
  const W* wr = w + n * nb;
  for (std::size_t b = 0; b < nb; ++b) {
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
        const __m256i p = EEXIT_QUANT_DOT(wu[j], _mm256_sign_epi8(xv, ws[j]));
        acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw[j] * dx), acc[i][j]);
      }
    }
  }
  for (std::size_t i = 0; i < MR; ++i)
    for (std::size_t j = 0; j < NR; ++j) {
      float s = hsum8(acc[i][j]);
      if (bias) s += bias[n + j];
      y[i * ldy + n + j] = s;
    }
}

// All M rows (in tiles of up to 4) for outputs n .. n + NR - 1.
template <std::size_t NR, class W>
inline void column(const std::int8_t* xq, const float* xd, std::size_t M, const W* w, std::size_t K,
                   std::size_t n, float* y, std::size_t ldy, const float* bias) noexcept {
  const std::size_t nb = K / 32;
  std::size_t m = 0;
  for (; m + 4 <= M; m += 4) tile<4, NR>(xq + m * K, xd + m * nb, w, K, n, y + m * ldy, ldy, bias);
  switch (M - m) {
    case 3:
      return tile<3, NR>(xq + m * K, xd + m * nb, w, K, n, y + m * ldy, ldy, bias);
    case 2:
      return tile<2, NR>(xq + m * K, xd + m * nb, w, K, n, y + m * ldy, ldy, bias);
    case 1:
      return tile<1, NR>(xq + m * K, xd + m * nb, w, K, n, y + m * ldy, ldy, bias);
    default:
      return;
  }
}

template <class W>
inline void matmul_q8act(const std::int8_t* xq, const float* xd, std::size_t M, const W* w,
                         std::size_t K, std::size_t n0, std::size_t n1, float* y, std::size_t ldy,
                         const float* bias) noexcept {
  // Each group of weight rows is used by every row while it is in L1 (the quantized rows
  // x, M * K bytes, stay in L2), so W streams from memory once whatever M.
  std::size_t n = n0;
  if (M == 1)  // decode: 4 weight rows stream at once
    for (; n + 4 <= n1; n += 4) column<4>(xq, xd, M, w, K, n, y, ldy, bias);
  else
    for (; n + 2 <= n1; n += 2) column<2>(xq, xd, M, w, K, n, y, ldy, bias);
  for (; n < n1; ++n) column<1>(xq, xd, M, w, K, n, y, ldy, bias);
}

}  // namespace eexit::detail::EEXIT_QUANT_NS

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#undef EEXIT_QUANT_PRAGMA_X
#undef EEXIT_QUANT_PRAGMA
#undef EEXIT_QUANT_DOT
#undef EEXIT_QUANT_TARGET
#undef EEXIT_QUANT_NS
