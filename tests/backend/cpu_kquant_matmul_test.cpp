// The Q4_K / Q5_K / Q6_K matmul with int8 activations (cpu_kquant.hpp): against a float64
// reference over the dequantized weights and activations, bitwise equal across its scalar /
// AVX2 / AVX-512 VNNI variants and the file's layout, batch invariant (rows alone or batched,
// 1 or 2 threads), embedding rows as convert_to_f32 gives them, and fused with Q8_0 / Q4_0.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "eexit/backend/cpu.hpp"
#include "eexit/model/weights.hpp"
#include "matmul_test_helpers.hpp"

using eexit::dtype;
using eexit::detail::quant_isa;

namespace {

using eexit::test::bitwise_equal;
using eexit::test::random;

using ForceIsa = eexit::test::ForceQuantIsa;

std::vector<quant_isa> isas_here() {
  auto v = eexit::test::quant_isas_here();
  if (v.back() != quant_isa::vnni) MESSAGE("avx512-vnni not on this CPU: not compared");
  return v;
}

// n weights of K-quant t as random super-blocks: every scale, min and q bit random, the fp16
// d and dmin finite and of the size a real file has (dmin may be 0).
eexit::Weight random_kquant(std::mt19937& rng, dtype t, std::size_t n) {
  std::vector<unsigned char> b(eexit::row_bytes(t, n));
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(1e-4f, 4e-3f);
  for (auto& c : b) c = static_cast<unsigned char>(byte(rng));
  const std::size_t sb = eexit::kquant_bytes(t);
  for (std::size_t s = 0; s < n / eexit::kquant_block; ++s) {
    unsigned char* p = b.data() + s * sb;
    auto put = [](unsigned char* at, float v) {
      const std::uint16_t h = eexit::f32_to_f16(v);
      std::memcpy(at, &h, 2);
    };
    if (t == dtype::q6_k) {
      put(p + 208, scale(rng));
    } else {
      put(p, scale(rng));
      put(p + 2, s % 5 == 3 ? 0.0f : scale(rng));
    }
  }
  return eexit::Weight::packed(t, n, std::move(b));
}

// w (N, K) repacked by the backend.
struct Repacked {
  eexit::CpuBackend::buffer<std::uint16_t> buf;
  std::uint8_t interleave = 0;
  dtype t;
  Repacked(eexit::CpuBackend& be, dtype type, const eexit::Weight& w, std::size_t N, std::size_t K)
      : t(type) {
    interleave = be.repack_weights(buf, t, w.bytes(), N, K, N);
  }
  eexit::WeightView view() const { return {t, buf.data(), interleave}; }
};

constexpr dtype kquants[] = {dtype::q4_k, dtype::q5_k, dtype::q6_k};

}  // namespace

TEST_CASE("K-quant int8 matmul: float64 reference, variants and layouts bitwise equal") {
  std::mt19937 rng(41);
  eexit::CpuBackend be(1);
  const auto isas = isas_here();
  for (const dtype t : kquants) {
    CAPTURE(eexit::dtype_name(t));
    double worst = 0.0;
    std::size_t mismatched = 0, runs = 0;
    // Outputs not a multiple of 8 (a padded last group, partial tiles), one and two
    // super-blocks, rows 1..17 (partial row tiles).
    for (const auto& [n_out, k_in] :
         std::vector<std::pair<std::size_t, std::size_t>>{{1, 256}, {7, 512}, {37, 256}}) {
      const std::size_t N = n_out, K = k_in;
      CAPTURE(N);
      CAPTURE(K);
      const eexit::Weight w = random_kquant(rng, t, N * K);
      const Repacked il(be, t, w, N, K);
      REQUIRE(il.interleave == 8);
      const std::vector<float> wr = w.to_f32();
      // |s · (q - c)| and |o| per weight, for the error bound
      std::vector<double> ws(N * K), wo(N * K);
      for (std::size_t i = 0; i < N * K / 32; ++i) {
        const auto* row = static_cast<const unsigned char*>(w.bytes());
        const auto s =
            eexit::detail::kq_decode(t, row + i / 8 * eexit::kquant_bytes(t), int(i % 8));
        for (std::size_t e = 0; e < 32; ++e) {
          const int q = int(s.q[e]) - (t == dtype::q6_k ? 32 : 0);
          ws[32 * i + e] = std::fabs(double(s.s[e / 16]) * q);
          wo[32 * i + e] = std::fabs(double(s.o));
        }
      }
      const auto bias = random(rng, N);
      for (std::size_t M = 1; M <= 17; M += (M < 4 ? 1 : 6)) {
        CAPTURE(M);
        auto x = random(rng, M * K);
        if (M == 5) std::fill_n(x.begin() + 32, 32, 0.0f);  // a zero activation block
        std::vector<std::int8_t> xq(M * K);
        std::vector<float> xd(M * K / 32);
        for (std::size_t m = 0; m < M; ++m)
          eexit::detail::quantize_row_q8(x.data() + m * K, K, xq.data() + m * K,
                                         xd.data() + m * K / 32);
        std::vector<float> y0(M * N);
        be.set_repack(false);  // (matmul reads the view it is given; this is for clarity)
        be.matmul(x.data(), M, K, eexit::WeightView(t, w.bytes()), N, y0.data(), bias.data());
        be.set_repack(true);
        for (const quant_isa isa : isas) {
          ForceIsa force(isa);
          std::vector<float> y(M * N, -1.0f);
          be.matmul(x.data(), M, K, il.view(), N, y.data(), bias.data());
          mismatched += !bitwise_equal(y, y0);
          ++runs;
        }
        // Exact integer sums: the error is fp32 rounding, per lane at most 2 fused
        // multiply-adds a block, the products s·dx and cx·dx, the reduction and the bias.
        const double bound = double(2 * K / 32 + 8) * std::ldexp(1.0, -24);
        for (std::size_t m = 0; m < M; ++m)
          for (std::size_t n = 0; n < N; ++n) {
            double ref = bias[n], mag = std::fabs(double(bias[n]));
            for (std::size_t k = 0; k < K; ++k) {
              const double xv = double(xd[m * K / 32 + k / 32]) * xq[m * K + k];
              ref += xv * double(wr[n * K + k]);
              mag += std::fabs(xv) * (ws[n * K + k] + wo[n * K + k]);
            }
            worst = std::max(worst, std::fabs(double(y0[m * N + n]) - ref) / (mag * bound));
          }
      }
    }
    MESSAGE(eexit::dtype_name(t) << ": " << runs
                                 << " runs; int8 matmul vs float64: max error / bound " << worst);
    CHECK(worst <= 1.0);
    CHECK(mismatched == 0);
  }
}

TEST_CASE("K-quant int8 matmul is batch invariant over rows and threads") {
  std::mt19937 rng(43);
  eexit::CpuBackend one(1), two(2);
  constexpr std::size_t N = 261, K = 1024;  // large enough for two threads to split
  for (const dtype t : kquants)
    for (const quant_isa isa : isas_here()) {
      CAPTURE(eexit::dtype_name(t));
      CAPTURE(eexit::detail::quant_isa_name(isa));
      ForceIsa force(isa);
      const auto x = random(rng, 16 * K), bias = random(rng, N);
      const eexit::Weight w = random_kquant(rng, t, N * K);
      const Repacked il(one, t, w, N, K);
      CHECK(eexit::test::batch_variant_runs(one, two, x, K, il.view(), N, bias.data()) == 0);
    }
}

TEST_CASE(
    "K-quant weights: embedding rows, row views, fused with Q8_0 / Q4_0, when not to repack") {
  std::mt19937 rng(47);
  eexit::CpuBackend be(2);
  constexpr std::size_t N = 45, K = 512;
  for (const dtype t : kquants) {
    CAPTURE(eexit::dtype_name(t));
    const eexit::Weight w = random_kquant(rng, t, N * K);
    const eexit::WeightView rowv(t, w.bytes());
    const Repacked il(be, t, w, N, K);
    REQUIRE(il.interleave == 8);
    // embed: every row as convert_to_f32 widens the file's blocks, from either layout.
    std::vector<std::int32_t> ids(N);
    for (std::size_t i = 0; i < N; ++i) ids[i] = std::int32_t((i * 7) % N);
    std::vector<float> ea(N * K), eb(N * K, -1.0f), ref(N * K);
    be.embed(ids.data(), N, rowv, K, ea.data());
    be.embed(ids.data(), N, il.view(), K, eb.data());
    const std::vector<float> all = w.to_f32();
    for (std::size_t i = 0; i < N; ++i)
      std::copy_n(all.begin() + long(std::size_t(ids[i]) * K), K, ref.begin() + long(i * K));
    CHECK(bitwise_equal(ea, ref));
    CHECK(bitwise_equal(eb, ref));
    // rows_from at whole groups
    const auto x = random(rng, 3 * K);
    for (const std::size_t r0 : {8, 40}) {
      std::vector<float> a((N - r0) * 3), b((N - r0) * 3);
      be.matmul(x.data(), 3, K, rowv.rows_from(r0, K), N - r0, a.data());
      be.matmul(x.data(), 3, K, il.view().rows_from(r0, K), N - r0, b.data());
      CHECK(bitwise_equal(a, b));
    }
    // fused with a Q8_0 and a Q4_0 matrix (one pair-order quantization of x for all)
    for (const dtype o : {dtype::q8_0, dtype::q4_0}) {
      const eexit::Weight wo = eexit::Weight(random(rng, 13 * K)).converted(o);
      const Repacked ilo(be, o, wo, 13, K);
      std::vector<float> q(3 * N), k(3 * 13), v(3 * 13), q1(3 * N), k1(3 * 13);
      be.matmul_qkv(x.data(), 3, K, il.view(), ilo.view(), ilo.view(), N, 13, q.data(), k.data(),
                    v.data(), nullptr, nullptr, nullptr);
      be.matmul(x.data(), 3, K, il.view(), N, q1.data());
      be.matmul(x.data(), 3, K, ilo.view(), 13, k1.data());
      CHECK(bitwise_equal(q, q1));
      CHECK(bitwise_equal(k, k1));
      CHECK(bitwise_equal(v, k1));
      // and gate / up of different types: the unfused sequence's bits
      std::vector<float> h(3 * 13), up(3 * 13), h1(3 * 13), up1(3 * 13);
      const eexit::Weight w13 = random_kquant(rng, t, 13 * K);
      const Repacked il13(be, t, w13, 13, K);
      be.matmul_swiglu(x.data(), 3, K, ilo.view(), il13.view(), 13, h.data(), up.data());
      be.matmul(x.data(), 3, K, ilo.view(), 13, h1.data());
      be.matmul(x.data(), 3, K, il13.view(), 13, up1.data());
      be.swiglu(h1.data(), up1.data(), h1.data(), 3 * 13);
      CHECK(bitwise_equal(h, h1));
    }
    // int8 activations even for a backend made with quant_act::f32 (K-quants have no fp32
    // kernel); not repacked: views inside groups, an embedding-only table, repacking off.
    eexit::CpuBackend f32act(1, eexit::matmul_impl::invariant, eexit::quant_act::f32);
    std::vector<float> a(3 * N), b(3 * N);
    f32act.matmul(x.data(), 3, K, rowv, N, a.data());
    be.matmul(x.data(), 3, K, il.view(), N, b.data());
    CHECK(bitwise_equal(a, b));
    eexit::CpuBackend::buffer<std::uint16_t> buf;
    CHECK(be.repack_weights(buf, t, w.bytes(), N, K, 12) == 0);
    CHECK(be.repack_weights(buf, t, w.bytes(), N, K, 0) == 0);
    be.set_repack(false);
    CHECK(be.repack_weights(buf, t, w.bytes(), N, K, N) == 0);
    be.set_repack(true);
    CHECK(buf.empty());
    // No K-quant quantizer: converting to one is refused.
    CHECK_THROWS_AS(eexit::Weight(random(rng, K)).converted(t), eexit::error);
  }
}
