#pragma once
// What the CPU matmul tests share: bit comparison, random inputs, and the check that the
// fused projections (matmul_qkv, matmul_swiglu, matmul_add) equal the unfused sequence.
#include <doctest/doctest.h>

#include <cstddef>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "eexit/backend/cpu.hpp"
#include "eexit/model/weights.hpp"

namespace eexit::test {

inline bool bitwise_equal(const float* a, const float* b, std::size_t n) {
  return std::memcmp(a, b, n * sizeof(float)) == 0;
}
inline bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && bitwise_equal(a.data(), b.data(), a.size());
}

// Forces one int8 dot-product variant (cpu_quant.hpp) while alive; restores the automatic
// choice even when a check fails.
struct ForceQuantIsa {
  explicit ForceQuantIsa(detail::quant_isa t) { detail::quant_isa_override() = t; }
  ~ForceQuantIsa() { detail::quant_isa_override() = detail::quant_isa::best; }
  ForceQuantIsa(const ForceQuantIsa&) = delete;
  ForceQuantIsa& operator=(const ForceQuantIsa&) = delete;
};
// The int8 variants this CPU has (scalar first).
inline std::vector<detail::quant_isa> quant_isas_here() {
  std::vector<detail::quant_isa> v = {detail::quant_isa::scalar};
  for (const detail::quant_isa t : {detail::quant_isa::avx2, detail::quant_isa::vnni})
    if (detail::cpu_has_quant_isa(t)) v.push_back(t);
  return v;
}

// Batch invariance of one (N, K) matrix w over the 16 rows of x (16, K): each row alone on
// `one` is the reference; batches of 1, 3 and 16 rows on `one` and `two` (a backend of more
// threads) must give its bits. Returns the batches that did not.
inline std::size_t batch_variant_runs(CpuBackend& one, CpuBackend& two, const std::vector<float>& x,
                                      std::size_t K, WeightView w, std::size_t N,
                                      const float* bias) {
  std::vector<float> alone(16 * N);
  for (std::size_t m = 0; m < 16; ++m)
    one.matmul(x.data() + m * K, 1, K, w, N, alone.data() + m * N, bias);
  std::size_t bad = 0;
  for (CpuBackend* be : {&one, &two})
    for (const std::size_t rows : {1, 3, 16})
      for (std::size_t m0 = 0; m0 + rows <= 16; m0 += rows) {
        std::vector<float> y(rows * N);
        be->matmul(x.data() + m0 * K, rows, K, w, N, y.data(), bias);
        bad += !bitwise_equal(y.data(), alone.data() + m0 * N, y.size());
      }
  return bad;
}

// n values uniform in [-1, 1).
inline std::vector<float> random(std::mt19937& rng, std::size_t n) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& e : v) e = u(rng);
  return v;
}

// One layer's projections for check_fused: q (out, in), k and v (kv_out, in), gate and up
// (hidden, in), down (out, hidden).
struct FusedWeights {
  std::size_t in, hidden, out, kv_out;
  eexit::WeightView q, k, v, gate, up, down;
};

// What the unfused sequence gave.
struct Unfused {
  std::vector<float> h;   // (rows, hidden) silu(x · gateᵀ) ⊙ (x · upᵀ)
  std::vector<float> xr;  // (rows, out) resid + h_in · downᵀ
};

// Runs on be the sequence forward_layer issues with set_fused(false) (matmul, swiglu, add)
// and the fused ops into buffers poisoned with NaN, CHECKs that they are bitwise equal and
// returns the unfused results. x (rows, in), h_in (rows, hidden), resid (rows, out); biases
// bq (out) and bk (kv_out), V without one.
inline Unfused check_fused(eexit::CpuBackend& be, const FusedWeights& w, std::size_t rows,
                           const std::vector<float>& x, const std::vector<float>& h_in,
                           const std::vector<float>& resid, const float* bq, const float* bk) {
  const std::size_t in = w.in, hidden = w.hidden, out = w.out, kv_out = w.kv_out;
  Unfused u{std::vector<float>(rows * hidden), resid};
  std::vector<float> up(rows * hidden), y(rows * out);
  be.matmul(x.data(), rows, in, w.gate, hidden, u.h.data());
  be.matmul(x.data(), rows, in, w.up, hidden, up.data());
  be.swiglu(u.h.data(), up.data(), u.h.data(), u.h.size());
  be.matmul(h_in.data(), rows, hidden, w.down, out, y.data());
  be.add(u.xr.data(), y.data(), u.xr.size());
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> fh(rows * hidden, nan), fup(rows * hidden, nan), fy(rows * out, nan);
  std::vector<float> fx = resid;
  be.matmul_swiglu(x.data(), rows, in, w.gate, w.up, hidden, fh.data(), fup.data());
  be.matmul_add(h_in.data(), rows, hidden, w.down, out, fy.data(), fx.data());
  CHECK(bitwise_equal(fh, u.h));
  CHECK(bitwise_equal(fx, u.xr));
  std::vector<float> q(rows * out), k(rows * kv_out), v(rows * kv_out);
  be.matmul(x.data(), rows, in, w.q, out, q.data(), bq);
  be.matmul(x.data(), rows, in, w.k, kv_out, k.data(), bk);
  be.matmul(x.data(), rows, in, w.v, kv_out, v.data(), nullptr);
  std::vector<float> fq(q.size(), nan), fk(k.size(), nan), fv(v.size(), nan);
  be.matmul_qkv(x.data(), rows, in, w.q, w.k, w.v, out, kv_out, fq.data(), fk.data(), fv.data(), bq,
                bk, nullptr);
  CHECK(bitwise_equal(fq, q));
  CHECK(bitwise_equal(fk, k));
  CHECK(bitwise_equal(fv, v));
  return u;
}

}  // namespace eexit::test
