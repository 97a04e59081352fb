// The Q8_0 / Q4_0 matmul with int8 activations (cpu_quant.hpp): against a float64 reference
// over the dequantized weights and the dequantized Q8 activations, bitwise equal across its
// scalar / AVX2 / AVX-512 VNNI variants, and batch invariant (rows alone or batched, 1 or 2
// threads). The fp32-activation path keeps its own tests (cpu_typed_matmul_test).
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

using eexit::detail::quant_isa;

namespace {

using eexit::test::bitwise_equal;
using eexit::test::random;

using ForceIsa = eexit::test::ForceQuantIsa;

struct Case {
  std::size_t M, N, K;
  std::vector<float> x, bias;
  eexit::Weight w;
};

std::vector<float> run(eexit::CpuBackend& be, const Case& c, eexit::dtype t) {
  std::vector<float> y(c.M * c.N);
  be.matmul(c.x.data(), c.M, c.K, eexit::WeightView(t, c.w.bytes()), c.N, y.data(), c.bias.data());
  return y;
}

}  // namespace

TEST_CASE("activation rows quantize to Q8 blocks within half a step") {
  std::mt19937 rng(1);
  auto x = random(rng, 32 * 8);
  for (std::size_t j = 0; j < 32; ++j) x[32 + j] = 0.0f;  // an all-zero block: scale 0
  x[70] = 5.0f;                                           // one block with an outlier
  std::vector<std::int8_t> q(x.size());
  std::vector<float> d(x.size() / 32);
  eexit::detail::quantize_row_q8(x.data(), x.size(), q.data(), d.data());
  CHECK(d[1] == 0.0f);
  CHECK(q[70] == 127);
  for (std::size_t b = 0; b < d.size(); ++b) {
    float amax = 0.0f;
    for (std::size_t j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[32 * b + j]));
    CHECK(d[b] == amax / 127.0f);
    for (std::size_t j = 0; j < 32; ++j) {
      CHECK(std::abs(int(q[32 * b + j])) <= 127);
      CHECK(std::fabs(double(x[32 * b + j]) - double(d[b]) * q[32 * b + j]) <=
            0.5 * double(d[b]) * (1 + 1e-6));
    }
  }
}

TEST_CASE("int8-activation Q8_0 / Q4_0 matmul: float64 reference, variants bitwise equal") {
  std::mt19937 rng(7);
  eexit::CpuBackend be(1);  // quant_act::int8 is the default
  std::vector<quant_isa> isas = {quant_isa::scalar};
  for (const quant_isa t : {quant_isa::avx2, quant_isa::vnni}) {
    if (eexit::detail::cpu_has_quant_isa(t))
      isas.push_back(t);
    else
      MESSAGE(std::string(eexit::detail::quant_isa_name(t)) << " not on this CPU: not compared");
  }
  MESSAGE("automatic choice: " << std::string(
              eexit::detail::quant_isa_name(eexit::detail::quant_isa_now())));
  for (const eexit::dtype t : {eexit::dtype::q8_0, eexit::dtype::q4_0}) {
    CAPTURE(eexit::dtype_name(t));
    double worst = 0.0;  // error / bound
    std::size_t mismatched = 0;
    // Rows 1..17 (partial row tiles of 4), odd output counts (partial tiles of 8, 4 and 2),
    // odd and even block counts (a last block without a pair).
    for (std::size_t M = 1; M <= 17; ++M)
      for (const auto& [n_out, k_in] :
           std::vector<std::pair<std::size_t, std::size_t>>{{1, 32}, {7, 96}, {37, 288}}) {
        const std::size_t N = n_out, K = k_in;  // (doctest's CAPTURE takes no bindings)
        CAPTURE(M);
        CAPTURE(N);
        CAPTURE(K);
        Case c{M,
               N,
               K,
               random(rng, M * K),
               random(rng, N),
               eexit::Weight(random(rng, N * K)).converted(t)};
        if (M == 5) std::fill_n(c.x.begin() + 32, 32, 0.0f);  // a zero activation block
        const std::vector<float> wr = c.w.to_f32();           // the dequantized weights
        std::vector<std::int8_t> xq(M * K);
        std::vector<float> xd(M * K / 32);
        for (std::size_t m = 0; m < M; ++m)
          eexit::detail::quantize_row_q8(c.x.data() + m * K, K, xq.data() + m * K,
                                         xd.data() + m * K / 32);
        std::vector<float> y0;
        for (const quant_isa isa : isas) {
          ForceIsa force(isa);
          const auto y = run(be, c, t);
          if (y0.empty())
            y0 = y;
          else
            mismatched += !bitwise_equal(y, y0);
        }
        // The integer block sums are exact, so the only error is fp32 rounding: per lane nb
        // fused multiply-adds plus the rounding of dw * dx, 3 reduction adds and the bias
        // add, i.e. at most (nb + 5) u · sum |x·w| (u = 2^-24) to first order.
        const double bound = double(K / 32 + 5) * std::ldexp(1.0, -24);
        for (std::size_t m = 0; m < M; ++m)
          for (std::size_t n = 0; n < N; ++n) {
            double ref = c.bias[n], mag = std::fabs(double(c.bias[n]));
            for (std::size_t k = 0; k < K; ++k) {
              const double xv = double(xd[m * K / 32 + k / 32]) * xq[m * K + k];
              ref += xv * double(wr[n * K + k]);
              mag += std::fabs(xv * double(wr[n * K + k]));
            }
            worst = std::max(worst, std::fabs(double(y0[m * N + n]) - ref) / (mag * bound));
          }
      }
    MESSAGE(eexit::dtype_name(t) << " int8 matmul vs float64: max error / bound " << worst);
    CHECK(worst <= 1.0);
    CHECK(mismatched == 0);
  }
}

TEST_CASE("int8-activation Q8_0 / Q4_0 matmul is batch invariant over rows and threads") {
  std::mt19937 rng(11);
  eexit::CpuBackend one(1), two(2);
  constexpr std::size_t N = 261, K = 1024;  // large enough for two threads to split
  for (const eexit::dtype t : {eexit::dtype::q8_0, eexit::dtype::q4_0}) {
    CAPTURE(eexit::dtype_name(t));
    const auto x = random(rng, 16 * K), bias = random(rng, N);
    const eexit::Weight w = eexit::Weight(random(rng, N * K)).converted(t);
    const eexit::WeightView wv(t, w.bytes());
    CHECK(eexit::test::batch_variant_runs(one, two, x, K, wv, N, bias.data()) == 0);
    // And the int8 path really differs from the fp32-activation one (it quantizes x).
    eexit::CpuBackend f32act(1, eexit::matmul_impl::invariant, eexit::quant_act::f32);
    std::vector<float> yf(N);
    f32act.matmul(x.data(), 1, K, wv, N, yf.data(), bias.data());
    std::vector<float> y8(N);
    one.matmul(x.data(), 1, K, wv, N, y8.data(), bias.data());
    CHECK(!bitwise_equal(yf, y8));
  }
}

namespace {

// w (N, K) of type t repacked by the backend into its interleaved layout (cpu_quant.hpp).
struct Repacked {
  eexit::CpuBackend::buffer<std::uint16_t> buf;
  std::uint8_t interleave = 0;
  eexit::dtype t;
  Repacked(eexit::CpuBackend& be, eexit::dtype type, const eexit::Weight& w, std::size_t N,
           std::size_t K)
      : t(type) {
    interleave = be.repack_weights(buf, t, w.bytes(), N, K, N);
  }
  eexit::WeightView view() const { return {t, buf.data(), interleave}; }
};

}  // namespace

TEST_CASE(
    "interleaved Q8_0 / Q4_0 weights: the row layout's bits, every variant and thread count") {
  std::mt19937 rng(23);
  eexit::CpuBackend one(1), two(2);
  const auto isas = eexit::test::quant_isas_here();
  for (const eexit::dtype t : {eexit::dtype::q8_0, eexit::dtype::q4_0}) {
    CAPTURE(eexit::dtype_name(t));
    std::size_t mismatched = 0, runs = 0;
    // Outputs not a multiple of 8 (a padded last group, partial tiles of 8, 4 and 2), odd
    // and even block counts (a padded last pair), rows 1..17 (partial row tiles of 4), and
    // one shape large enough for two threads to split its outputs.
    for (const auto& [n_out, k_in] : std::vector<std::pair<std::size_t, std::size_t>>{
             {1, 32}, {7, 96}, {13, 64}, {37, 288}, {261, 1024}}) {
      const std::size_t N = n_out, K = k_in;
      CAPTURE(N);
      CAPTURE(K);
      const eexit::Weight w = eexit::Weight(random(rng, N * K)).converted(t);
      const Repacked il(one, t, w, N, K);
      REQUIRE(il.interleave == 8);
      const auto bias = random(rng, N);
      for (std::size_t M = 1; M <= 17; M += (N > 100 ? 8 : 1)) {
        CAPTURE(M);
        const auto x = random(rng, M * K);
        std::vector<float> ref(M * N);
        {
          ForceIsa force(quant_isa::scalar);
          one.matmul(x.data(), M, K, eexit::WeightView(t, w.bytes()), N, ref.data(), bias.data());
        }
        for (const quant_isa isa : isas)
          for (eexit::CpuBackend* be : {&one, &two}) {
            ForceIsa force(isa);
            std::vector<float> y(M * N, -1.0f);
            be->matmul(x.data(), M, K, il.view(), N, y.data(), bias.data());
            mismatched += !bitwise_equal(y, ref);
            ++runs;
          }
      }
    }
    MESSAGE(eexit::dtype_name(t) << ": " << runs << " interleaved runs against the row layout");
    CHECK(mismatched == 0);
  }
}

TEST_CASE("int8 fused projections: one quantization, the unfused sequence's bits") {
  std::mt19937 rng(29);
  eexit::CpuBackend be(2);
  constexpr std::size_t K = 96, Q = 37, KV = 13, H = 45;  // splits inside groups of 8
  for (const eexit::dtype t : {eexit::dtype::q8_0, eexit::dtype::q4_0})
    for (const bool interleaved : {false, true})
      for (const quant_isa isa : eexit::test::quant_isas_here()) {
        CAPTURE(eexit::dtype_name(t));
        CAPTURE(interleaved);
        CAPTURE(eexit::detail::quant_isa_name(isa));
        ForceIsa force(isa);
        auto make = [&](std::size_t n) { return eexit::Weight(random(rng, n * K)).converted(t); };
        const eexit::Weight wq = make(Q), wk = make(KV), wv = make(KV), wg = make(H), wu = make(H),
                            wo = make(H);
        std::vector<Repacked> il;
        for (const auto* w : {&wq, &wk, &wv, &wg, &wu, &wo})
          il.emplace_back(be, t, *w, w->size() / K, K);
        auto view = [&](std::size_t i, const eexit::Weight& w) {
          return interleaved ? il[i].view() : eexit::WeightView(t, w.bytes());
        };
        const auto bq = random(rng, Q), bk = random(rng, KV), bv = random(rng, KV);
        for (const std::size_t M : {1, 5, 16}) {
          CAPTURE(M);
          const auto x = random(rng, M * K);
          std::vector<float> q(M * Q), k(M * KV), v(M * KV), q1(M * Q), k1(M * KV), v1(M * KV);
          be.matmul_qkv(x.data(), M, K, view(0, wq), view(1, wk), view(2, wv), Q, KV, q.data(),
                        k.data(), v.data(), bq.data(), bk.data(), bv.data());
          be.matmul(x.data(), M, K, view(0, wq), Q, q1.data(), bq.data());
          be.matmul(x.data(), M, K, view(1, wk), KV, k1.data(), bk.data());
          be.matmul(x.data(), M, K, view(2, wv), KV, v1.data(), bv.data());
          CHECK(bitwise_equal(q, q1));
          CHECK(bitwise_equal(k, k1));
          CHECK(bitwise_equal(v, v1));
          std::vector<float> h(M * H), up(M * H), h1(M * H), up1(M * H);
          be.matmul_swiglu(x.data(), M, K, view(3, wg), view(4, wu), H, h.data(), up.data());
          be.matmul(x.data(), M, K, view(3, wg), H, h1.data());
          be.matmul(x.data(), M, K, view(4, wu), H, up1.data());
          be.swiglu(h1.data(), up1.data(), h1.data(), M * H);
          CHECK(bitwise_equal(h, h1));
          // matmul_add: a (M, K) through wo (H, K) added into r (M, H)
          auto r = random(rng, M * H), r1 = r;
          std::vector<float> y(M * H), y1(M * H);
          be.matmul_add(x.data(), M, K, view(5, wo), H, y.data(), r.data());
          be.matmul(x.data(), M, K, view(5, wo), H, y1.data());
          be.add(r1.data(), y1.data(), M * H);
          CHECK(bitwise_equal(r, r1));
        }
      }
}

TEST_CASE("interleaved weights: row views at whole groups, embedding rows, when not to repack") {
  std::mt19937 rng(31);
  eexit::CpuBackend be(1);
  constexpr std::size_t N = 45, K = 96;
  for (const eexit::dtype t : {eexit::dtype::q8_0, eexit::dtype::q4_0}) {
    CAPTURE(eexit::dtype_name(t));
    const eexit::Weight w = eexit::Weight(random(rng, N * K)).converted(t);
    const eexit::WeightView rowv(t, w.bytes());
    const Repacked il(be, t, w, N, K);
    REQUIRE(il.interleave == 8);
    // rows_from at a multiple of 8 (the KV fill's layer offsets): the rows from there on.
    const auto x = random(rng, 3 * K);
    for (const std::size_t r0 : {8, 16, 40}) {
      CAPTURE(r0);
      std::vector<float> a((N - r0) * 3), b((N - r0) * 3);
      be.matmul(x.data(), 3, K, rowv.rows_from(r0, K), N - r0, a.data());
      be.matmul(x.data(), 3, K, il.view().rows_from(r0, K), N - r0, b.data());
      CHECK(bitwise_equal(a, b));
    }
    CHECK_THROWS_AS(il.view().rows_from(3, K), eexit::error);
    // embed (a tied embedding table is the LM head too): every row, the last group's included.
    std::vector<std::int32_t> ids(N);
    for (std::size_t i = 0; i < N; ++i) ids[i] = std::int32_t((i * 7) % N);
    std::vector<float> ea(N * K), eb(N * K, -1.0f);
    be.embed(ids.data(), N, rowv, K, ea.data());
    be.embed(ids.data(), N, il.view(), K, eb.data());
    CHECK(bitwise_equal(ea, eb));
    // Not repacked: fp32 activations, views inside groups, an embedding-only table, off.
    eexit::CpuBackend::buffer<std::uint16_t> buf;
    eexit::CpuBackend f32act(1, eexit::matmul_impl::invariant, eexit::quant_act::f32);
    CHECK(f32act.repack_weights(buf, t, w.bytes(), N, K, N) == 0);
    CHECK(be.repack_weights(buf, t, w.bytes(), N, K, 12) == 0);
    CHECK(be.repack_weights(buf, t, w.bytes(), N, K, 0) == 0);
    be.set_repack(false);
    CHECK(be.repack_weights(buf, t, w.bytes(), N, K, N) == 0);
    be.set_repack(true);
    CHECK(buf.empty());
    const eexit::Weight wf(random(rng, N * K));
    CHECK(be.repack_weights(buf, eexit::dtype::f32, wf.bytes(), N, K, N) == 0);
  }
}
