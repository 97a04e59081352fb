#pragma once
// Element types of stored weights and their conversion to the fp32 the CPU computes in.
#include <bit>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "eexit/core/error.hpp"

namespace eexit {

// f32 / f16 / bf16: element types. q8_0 / q4_0: llama.cpp's block-quantized types, 32
// weights a block with an fp16 scale (34 and 18 bytes a block); rows are whole blocks.
// q4_k / q5_k / q6_k: llama.cpp's K-quants, super-blocks of 256 weights (144, 176 and 210
// bytes) in sub-blocks of 32 (Q6_K: 16) with 6- or 8-bit scales; rows are whole super-blocks.
enum class dtype : std::uint8_t { f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k };

// The 32-weight block types (is_kquant: the 256-weight super-block ones).
constexpr bool is_quantized(dtype t) noexcept {
  return t == dtype::q8_0 || t == dtype::q4_0;
}
constexpr bool is_kquant(dtype t) noexcept {
  return t == dtype::q4_k || t == dtype::q5_k || t == dtype::q6_k;
}

// Weights per block of a quantized type, and per super-block of a K-quant.
inline constexpr std::size_t quant_block = 32;
inline constexpr std::size_t kquant_block = 256;

// Bytes per super-block of a K-quant.
constexpr std::size_t kquant_bytes(dtype t) noexcept {
  return t == dtype::q4_k ? 144 : t == dtype::q5_k ? 176 : t == dtype::q6_k ? 210 : 0;
}

// The weights a row of type t must be a multiple of (1 for element types).
constexpr std::size_t block_weights(dtype t) noexcept {
  return is_kquant(t) ? kquant_block : is_quantized(t) ? quant_block : 1;
}

// Bytes per element of the element types (0 for block-quantized ones: see row_bytes).
constexpr std::size_t dtype_size(dtype t) noexcept {
  return t == dtype::f32 ? 4 : is_quantized(t) || is_kquant(t) ? 0 : 2;
}

// Bytes of n weights of type t (for a quantized type n is a multiple of quant_block).
constexpr std::size_t row_bytes(dtype t, std::size_t n) noexcept {
  return t == dtype::q8_0   ? n / quant_block * 34
         : t == dtype::q4_0 ? n / quant_block * 18
         : is_kquant(t)     ? n / kquant_block * kquant_bytes(t)
                            : n * dtype_size(t);
}

// Bytes per row of a Q8_0 / Q4_0 matrix that the CPU backend interleaved at load
// (cpu_quant.hpp, "interleaved layout"): its blocks taken in pairs (an odd count padded
// with a zero block), each pair of a row as 64 quantized bytes (Q8_0) or a half of 64 shared
// with the next row (Q4_0), plus the pair's two fp32 scales. K-quants (cpu_kquant.hpp): 32
// bytes of nibbles, Q5_K 8 and Q6_K 16 more of high bits, and Q4_K / Q5_K two scales and two
// minima, Q6_K four scales (one per 16 weights). 0 for other types.
constexpr std::size_t interleaved_row_bytes(dtype t, std::size_t n) noexcept {
  const std::size_t pairs = (n / quant_block + 1) / 2;
  switch (t) {
    case dtype::q8_0:
      return pairs * (64 + 8);
    case dtype::q4_0:
      return pairs * (32 + 8);
    case dtype::q4_k:
      return pairs * (32 + 16);
    case dtype::q5_k:
      return pairs * (32 + 8 + 16);
    case dtype::q6_k:
      return pairs * (32 + 16 + 16);
    default:
      return 0;
  }
}

// A weight matrix (out, in), row-major, in the backend's memory, in its stored precision:
// what the backends' matmul and embed take. Implicit from a const float* so that fp32
// callers read as before. interleave: 0 for the layout as stored; R > 0 when a backend
// repacked the matrix at load into groups of R rows stored together (CpuBackend's
// repack_weights; only that backend makes and reads such views).
struct WeightView {
  dtype type = dtype::f32;
  const void* data = nullptr;
  std::uint8_t interleave = 0;
  WeightView() = default;
  WeightView(const float* p) noexcept : data(p) {}  // NOLINT: implicit on purpose
  WeightView(dtype t, const void* p, std::uint8_t il = 0) noexcept
      : type(t), data(p), interleave(il) {}
  const float* f32() const noexcept { return static_cast<const float*>(data); }
  // The view from row r on, rows of n weights. An interleaved view starts only at a whole
  // group (the model repacks a matrix only when the offsets it slices at allow it).
  WeightView rows_from(std::size_t r, std::size_t n) const {
    if (interleave == 0)
      return {type, static_cast<const unsigned char*>(data) + r * row_bytes(type, n)};
    if (r % interleave)
      throw error("WeightView::rows_from", "row " + std::to_string(r) + " is inside a group of " +
                                               std::to_string(interleave) + " interleaved rows");
    return {type, static_cast<const unsigned char*>(data) + r * interleaved_row_bytes(type, n),
            interleave};
  }
};

constexpr std::string_view dtype_name(dtype t) noexcept {
  switch (t) {
    case dtype::f32:
      return "F32";
    case dtype::f16:
      return "F16";
    case dtype::bf16:
      return "BF16";
    case dtype::q8_0:
      return "Q8_0";
    case dtype::q4_0:
      return "Q4_0";
    case dtype::q4_k:
      return "Q4_K";
    case dtype::q5_k:
      return "Q5_K";
    case dtype::q6_k:
      return "Q6_K";
  }
  return "?";
}

// IEEE half -> float, exact for every value (subnormals, inf, nan included).
inline float f16_to_f32(std::uint16_t h) noexcept {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  std::uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      bits = sign | std::uint32_t(127 - 15 - e) << 23 | (mant & 0x3ffu) << 13;
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | mant << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  return std::bit_cast<float>(bits);
}

inline float bf16_to_f32(std::uint16_t b) noexcept {
  return std::bit_cast<float>(std::uint32_t(b) << 16);
}

// float -> bf16 with round-to-nearest-even (nan stays nan).
inline std::uint16_t f32_to_bf16(float f) noexcept {
  std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return std::uint16_t((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return std::uint16_t(u >> 16);
}

// float -> IEEE half with round-to-nearest-even (overflow -> inf, nan stays nan), as F16C's
// vcvtps2ph with rounding 0 computes it for every number (a nan's payload is not kept). In
// integer arithmetic: _Float16 is not available on every compiler and target (clang 14 on
// x86-64 has none), and the headers must build everywhere.
inline std::uint16_t f32_to_f16(float f) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const std::uint16_t sign = std::uint16_t((x >> 16) & 0x8000u);
  const std::uint32_t a = x & 0x7fffffffu;
  if (a >= 0x7f800000u) return std::uint16_t(sign | (a > 0x7f800000u ? 0x7e00u : 0x7c00u));
  if (a >= 0x477ff000u) return std::uint16_t(sign | 0x7c00u);  // >= 65520 rounds to inf
  auto round = [](std::uint32_t v, std::uint32_t shift) {      // v >> shift, ties to even
    const std::uint32_t q = v >> shift, rem = v & ((1u << shift) - 1), halfway = 1u << (shift - 1);
    return q + (rem > halfway || (rem == halfway && (q & 1u)));
  };
  if (a < 0x38800000u) {  // below 2^-14: a half subnormal (or zero), in units of 2^-24
    const std::uint32_t e = a >> 23;
    if (e < 102) return sign;  // below 2^-25 (2^-25 itself ties to 0)
    return std::uint16_t(sign | round((a & 0x7fffffu) | 0x800000u, 126 - e));
  }
  return std::uint16_t(sign | round(a - 0x38000000u, 13));  // rebias 127 -> 15; a carry
                                                            // into the exponent is right
}

namespace detail {

// Sub-block j (0..7: weights 32j..32j+31) of a K-quant super-block sb, as the int8 kernels
// take it: unsigned q (Q4_K 4 bits, Q5_K 5, Q6_K 6) and w[e] = s[e / 16] * q[e] - o (Q4_K,
// Q5_K: s[0] == s[1] = d * scale_j, o = dmin * min_j) or s[e / 16] * (q[e] - 32) (Q6_K:
// d * its int8 scale per 16, o = 0). The products of an fp16 by a 6- or 8-bit integer are
// exact in fp32. llama.cpp's layouts: Q4_K {f16 d, dmin; u8 scales[12]; u8 qs[128]} (sub-
// blocks 2i, 2i + 1 the low and high nibbles of qs[32i..]), Q5_K the same with u8 qh[32]
// before qs (bit j of qh[l]: weight l of sub-block j), Q6_K {u8 ql[128], qh[64]; i8
// scales[16]; f16 d} (halves of 128 weights, see gguf.hpp's dequantize).
struct kq_sub {
  std::uint8_t q[32];
  float s[2];
  float o;
};

inline void q4_k_scale_min(int j, const std::uint8_t* q, int& sc, int& m) noexcept {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

inline kq_sub kq_decode(dtype t, const unsigned char* sb, int j) noexcept {
  kq_sub r{};
  const auto f16 = [](const unsigned char* p) {
    return f16_to_f32(std::uint16_t(p[0] | p[1] << 8));
  };
  if (t == dtype::q6_k) {
    const float d = f16(sb + 208);
    const int half = j / 4, g = j % 4;
    const unsigned char* ql = sb + 64 * half + (g % 2) * 32;
    const unsigned char* qh = sb + 128 + 32 * half;
    const auto* sc = reinterpret_cast<const std::int8_t*>(sb + 192 + 8 * half);
    for (int e = 0; e < 32; ++e)
      r.q[e] = std::uint8_t((g < 2 ? ql[e] & 0xF : ql[e] >> 4) | ((qh[e] >> (2 * g)) & 3) << 4);
    r.s[0] = d * float(sc[2 * g]);
    r.s[1] = d * float(sc[2 * g + 1]);
    return r;
  }
  const float d = f16(sb), dmin = f16(sb + 2);
  int sc, m;
  q4_k_scale_min(j, sb + 4, sc, m);
  r.s[0] = r.s[1] = d * float(sc);
  r.o = dmin * float(m);
  const bool q5 = t == dtype::q5_k;
  const unsigned char* qs = sb + (q5 ? 48 : 16) + 32 * (j / 2);
  for (int e = 0; e < 32; ++e) {
    const int nib = j % 2 ? qs[e] >> 4 : qs[e] & 0xF;
    r.q[e] = std::uint8_t(q5 ? nib | ((sb[16 + e] >> j) & 1) << 4 : nib);
  }
  return r;
}

// A decoded sub-block's weight e as fp32: gguf::dequantize's value (the same operations).
inline float kq_value(dtype t, const kq_sub& b, int e) noexcept {
  return t == dtype::q6_k ? b.s[e / 16] * float(int(b.q[e]) - 32)
                          : b.s[e / 16] * float(b.q[e]) - b.o;
}

}  // namespace detail

// Converts n little-endian elements of type t at src into floats at dst.
inline void convert_to_f32(dtype t, const void* src, float* dst, std::size_t n) noexcept {
  // An empty std::vector's data() may be null, and memcpy's pointers must not be, even for 0.
  if (n == 0) return;
  const auto* p = static_cast<const unsigned char*>(src);
  switch (t) {
    case dtype::f32:
      std::memcpy(dst, p, n * 4);
      return;
    case dtype::f16:
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        dst[i] = f16_to_f32(h);
      }
      return;
    case dtype::bf16:
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return;
    case dtype::q8_0:  // {f16 d; int8 q[32]}: w = d * q
      for (std::size_t b = 0; b < n / quant_block; ++b, p += 34, dst += 32) {
        const float d = f16_to_f32(std::uint16_t(p[0] | p[1] << 8));
        for (int j = 0; j < 32; ++j) dst[j] = d * float(std::int8_t(p[2 + j]));
      }
      return;
    case dtype::q4_0:  // {f16 d; u8 q[16]}: w[j] = d * (lo(q[j]) - 8), w[j+16] = d * (hi - 8)
      for (std::size_t b = 0; b < n / quant_block; ++b, p += 18, dst += 32) {
        const float d = f16_to_f32(std::uint16_t(p[0] | p[1] << 8));
        for (int j = 0; j < 16; ++j) {
          dst[j] = d * float((p[2 + j] & 0xF) - 8);
          dst[j + 16] = d * float((p[2 + j] >> 4) - 8);
        }
      }
      return;
    case dtype::q4_k:
    case dtype::q5_k:
    case dtype::q6_k:
      for (std::size_t b = 0; b < n / quant_block; ++b, dst += 32) {
        const detail::kq_sub s = detail::kq_decode(t, p + b / 8 * kquant_bytes(t), int(b % 8));
        for (int e = 0; e < 32; ++e) dst[e] = detail::kq_value(t, s, e);
      }
      return;
  }
}

}  // namespace eexit
