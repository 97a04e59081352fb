#pragma once
// Run-time choice among a kernel's instruction-set variants, shared by the int8
// (cpu_quant.hpp) and bf16 (cpu_bf16.hpp) matmuls. The installed headers assume no -march
// flags: each SIMD variant is compiled in a region under a target pragma
// (EEXIT_TARGET_BEGIN / EEXIT_TARGET_END) and one is picked per call by CPUID. A variant's
// enum lists `best` first and `scalar` second, then the SIMD variants narrowest first; its
// `isa_traits` specialisation says which CPU features each needs and what it is called.
#include <atomic>
#include <cstddef>
#include <cstdint>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define EEXIT_ISA_X86 1
#endif

#if defined(EEXIT_ISA_X86)
// A region of functions compiled for target t (a string literal, GCC's target syntax),
// templates included.
#define EEXIT_ISA_PRAGMA(x) _Pragma(#x)
#define EEXIT_ISA_PRAGMA_X(x) EEXIT_ISA_PRAGMA(x)
#if defined(__clang__)
#define EEXIT_TARGET_BEGIN(t) \
  EEXIT_ISA_PRAGMA_X(clang attribute push(__attribute__((target(t))), apply_to = function))
#define EEXIT_TARGET_END _Pragma("clang attribute pop")
#else
#define EEXIT_TARGET_BEGIN(t) _Pragma("GCC push_options") EEXIT_ISA_PRAGMA_X(GCC target(t))
#define EEXIT_TARGET_END _Pragma("GCC pop_options")
#endif
// CPUID feature test f (a string literal), for isa_traits::supported.
#define EEXIT_CPU_SUPPORTS(f) __builtin_cpu_supports(f)
#else
#define EEXIT_CPU_SUPPORTS(f) false
#endif

namespace eexit::detail {

// Specialised per variant enum E: `last` (its widest variant), `static bool supported(E)`
// (the CPU has what a SIMD variant needs; the CPUID answers cached in statics) and
// `names` (what benchmarks and tests print, one per enum value).
template <class E>
struct isa_traits;

// Whether variant t can run here (best and scalar always can).
template <class E>
inline bool isa_supported(E t) noexcept {
  return t == E::best || t == E::scalar || isa_traits<E>::supported(t);
}

// The forced variant (`best`: none). Tests compare the variants by setting it.
template <class E>
inline std::atomic<E>& isa_override() noexcept {
  static std::atomic<E> v{E::best};
  return v;
}

// The variant a call runs now: the override if the CPU has it (else scalar), otherwise the
// widest the CPU has. All variants of a kernel give the same bits, so this choice never
// changes results; it is fixed per process in practice.
template <class E>
inline E isa_now() noexcept {
  const E o = isa_override<E>().load(std::memory_order_relaxed);
  if (o != E::best) return isa_supported(o) ? o : E::scalar;
  for (auto i = std::uint8_t(isa_traits<E>::last); i > std::uint8_t(E::scalar); --i)
    if (isa_traits<E>::supported(static_cast<E>(i))) return static_cast<E>(i);
  return E::scalar;
}

// What a benchmark or test prints for variant t.
template <class E>
inline const char* isa_name(E t) noexcept {
  return isa_traits<E>::names[std::size_t(t)];
}

}  // namespace eexit::detail

namespace eexit::detail {

// The row-tile driver of the SIMD matmuls: rows [0, M) in tiles of 4 rows, then one tile of
// the 1-3 rows left; tile.template operator()<MR>(m) computes rows m .. m + MR - 1 (what a
// tile computes per element never depends on MR: batch invariance).
template <class Tile>
inline void row_tiles(std::size_t M, const Tile& tile) noexcept {
  std::size_t m = 0;
  for (; m + 4 <= M; m += 4) tile.template operator()<4>(m);
  switch (M - m) {
    case 3:
      return tile.template operator()<3>(m);
    case 2:
      return tile.template operator()<2>(m);
    case 1:
      return tile.template operator()<1>(m);
    default:
      return;
  }
}

// The end of an MR x NR tile at output n: y[i, n + j] = reduce(i, j) (+ bias[n + j]); with
// Clip only the outputs in [n0, n1) (a group of interleaved rows cut by the caller's range).
// Always inlined into the tile, so the accumulators stay in registers.
template <std::size_t MR, std::size_t NR, bool Clip = false, class Reduce>
[[gnu::always_inline]] inline void store_tile(const Reduce& reduce, std::size_t n, float* y,
                                              std::size_t ldy, const float* bias,
                                              std::size_t n0 = 0, std::size_t n1 = 0) noexcept {
  for (std::size_t i = 0; i < MR; ++i)
    for (std::size_t j = 0; j < NR; ++j)
      if (!Clip || (n + j >= n0 && n + j < n1)) {
        float s = reduce(i, j);
        if (bias) s += bias[n + j];
        y[i * ldy + n + j] = s;
      }
}

}  // namespace eexit::detail
