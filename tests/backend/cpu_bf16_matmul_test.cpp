// The bf16-weight matmul with bf16 activations (cpu_bf16.hpp, CpuBackend's default for bf16
// weights): against a float64 reference over the bf16-rounded activations and weights, the
// scalar / AVX2 / AVX-512 BF16 variants bitwise equal (the hardware's vdpbf16ps and
// vcvtne2ps2bf16 are the reference the scalar definition is checked against), batch
// invariant, and the fused projections bitwise equal to the unfused sequence.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "eexit/backend/cpu.hpp"
#include "eexit/model/weights.hpp"
#include "matmul_test_helpers.hpp"

namespace {

using eexit::detail::bf16_isa;
using eexit::test::bitwise_equal;
using eexit::test::random;

// Forces one kernel variant for its lifetime.
struct ForceIsa {
  explicit ForceIsa(bf16_isa t) { eexit::detail::bf16_isa_override() = t; }
  ~ForceIsa() { eexit::detail::bf16_isa_override() = bf16_isa::best; }
  ForceIsa(const ForceIsa&) = delete;
  ForceIsa& operator=(const ForceIsa&) = delete;
};

// x rounded to bf16 by the weight converter (eexit::f32_to_bf16, round to nearest even):
// the same as the activation rounding for the normal values these tests use.
float bf16_round(float v) {
  return eexit::bf16_to_f32(eexit::f32_to_bf16(v));
}

}  // namespace

TEST_CASE("bf16 activations: float64 reference, batch invariance over 1..53 rows and threads") {
  MESSAGE(
      "bf16 kernel: " << std::string(eexit::detail::bf16_isa_name(eexit::detail::bf16_isa_now())));
  std::mt19937 rng(7);
  eexit::CpuBackend one(1), two(2);  // bf16_act::bf16, the default
  constexpr std::size_t M = 53;      // past the kernel's 48-row streaming limit
  // (N, K): K odd, below one 32-element chunk, a chunk and one, and real widths; N not a
  // multiple of the 8- / 4-output tiles.
  const std::vector<std::pair<std::size_t, std::size_t>> shapes = {
      {1, 1}, {13, 3}, {9, 31}, {37, 32}, {11, 33}, {100, 95}, {64, 200}, {260, 768}};
  double worst = 0.0, worst_unrounded = 0.0;
  for (const auto& shape : shapes) {
    const std::size_t N = shape.first, K = shape.second;  // named: CAPTURE takes them by lambda
    CAPTURE(N);
    CAPTURE(K);
    const auto x = random(rng, M * K), bias = random(rng, N);
    const eexit::Weight w = eexit::Weight(random(rng, N * K)).converted(eexit::dtype::bf16);
    const std::vector<float> wr = w.to_f32();
    const eexit::WeightView wv(eexit::dtype::bf16, w.bytes());
    std::vector<float> y(M * N);
    one.matmul(x.data(), M, K, wv, N, y.data(), bias.data());
    // float64 over the rounded values: only the fp32 accumulation errs (16 lanes of K/16
    // fused multiply-adds, then 4 additions), relative to sum |x*w|. Against the unrounded
    // activations the bf16 rounding (up to 2^-8 of each |x|) shows.
    for (std::size_t m = 0; m < M; ++m)
      for (std::size_t n = 0; n < N; ++n) {
        double ref = bias[n], ref_u = bias[n], mag = std::fabs(double(bias[n]));
        for (std::size_t k = 0; k < K; ++k) {
          const double wk = wr[n * K + k];
          ref += double(bf16_round(x[m * K + k])) * wk;
          ref_u += double(x[m * K + k]) * wk;
          mag += std::fabs(double(x[m * K + k]) * wk);
        }
        worst = std::max(worst, std::fabs(double(y[m * N + n]) - ref) / mag);
        worst_unrounded = std::max(worst_unrounded, std::fabs(double(y[m * N + n]) - ref_u) / mag);
      }
    // Each row alone on one and two threads, and in batches of 3 and 16, gives the same bits
    // as in the batch of 53.
    std::size_t bad = 0;
    for (auto* be : {&one, &two}) {
      for (std::size_t m = 0; m < M; ++m) {
        std::vector<float> y1(N);
        be->matmul(x.data() + m * K, 1, K, wv, N, y1.data(), bias.data());
        bad += !bitwise_equal(y1.data(), y.data() + m * N, N);
      }
      for (const std::size_t b : {3u, 16u})
        for (std::size_t m0 = 0; m0 + b <= M; m0 += b) {
          std::vector<float> yb(b * N);
          be->matmul(x.data() + m0 * K, b, K, wv, N, yb.data(), bias.data());
          bad += !bitwise_equal(yb.data(), y.data() + m0 * N, b * N);
        }
      std::vector<float> y2(M * N);
      be->matmul(x.data(), M, K, wv, N, y2.data(), bias.data());
      bad += !bitwise_equal(y2.data(), y.data(), M * N);
    }
    CHECK(bad == 0);
  }
  MESSAGE("bf16 activations vs float64 on the rounded values: max |y - ref| / sum|x*w| "
          << worst << "; vs the unrounded activations " << worst_unrounded);
  CHECK(worst <= 1e-6);
  CHECK(worst_unrounded <= 1.0 / 256);  // half a bf16 ulp: at most 2^-8 of each |x|
  CHECK(worst_unrounded > 1e-6);        // the activations really were rounded
}

TEST_CASE("bf16 kernel variants give the same bits, subnormals and odd K included") {
  std::mt19937 rng(11);
  std::vector<bf16_isa> isas = {bf16_isa::scalar};
  for (const bf16_isa t : {bf16_isa::avx2, bf16_isa::avx512bf16})
    if (eexit::detail::cpu_has_bf16_isa(t)) isas.push_back(t);
  MESSAGE(isas.size() << " variants on this CPU");
  for (const std::size_t K : {1u, 5u, 32u, 63u, 64u, 172u, 257u}) {
    CAPTURE(K);
    const std::size_t N = 21, M = 50, ld = eexit::detail::bf16_padded(K);
    auto x = random(rng, M * K);
    // 50 rows: the blocked path past 48 rows, then rows 0 and 0..2 alone (decode paths).
    // Activations that round to subnormals (flushed to zero), weights that are bf16
    // subnormals (read as zero), and products whose sums underflow.
    for (std::size_t i = 0; i < x.size(); i += 4) x[i] = std::ldexp(x[i], -100 - int(i % 30));
    std::vector<eexit::detail::bf16_t> w(N * K);
    for (std::size_t i = 0; i < w.size(); ++i) {
      float v = std::uniform_real_distribution<float>(-1.0f, 1.0f)(rng);
      if (i % 3 == 0) v = std::ldexp(v, -20 - int(i % 110));
      w[i].bits = std::uint16_t(eexit::detail::f32_bits(v) >> 16);
    }
    const auto bias = random(rng, N);
    std::vector<std::uint16_t> xb(M * ld);
    for (std::size_t m = 0; m < M; ++m)
      eexit::detail::round_row_bf16(x.data() + m * K, K, xb.data() + m * ld);
    std::vector<std::vector<float>> ys;
    for (const bf16_isa t : isas) {
      const ForceIsa force(t);
      ys.emplace_back((M + 1 + 3) * N);
      float* y = ys.back().data();
      eexit::detail::matmul_bf16act(xb.data(), ld, M, w.data(), K, 0, N, y, N, bias.data());
      eexit::detail::matmul_bf16act(xb.data(), ld, 1, w.data(), K, 0, N, y + M * N, N, bias.data());
      eexit::detail::matmul_bf16act(xb.data(), ld, 3, w.data(), K, 0, N, y + (M + 1) * N, N,
                                    bias.data());
    }
    for (std::size_t v = 1; v < ys.size(); ++v) {
      CAPTURE(eexit::detail::bf16_isa_name(isas[v]));
      CHECK(bitwise_equal(ys[v].data(), ys[0].data(), ys[0].size()));
    }
  }
}

TEST_CASE("bf16 kernel: flush to zero detects tininess after rounding, on every variant") {
  // Lane 0: 2^-63 * 2^-63 = 2^-126 (the smallest normal), then + 2^-75 * -2^-76: exactly
  // 2^-126 (1 - 2^-25), below the normal range but rounding up to 2^-126. Detected after
  // rounding (as vdpbf16ps does on the hardware this was written on) it stays 2^-126; before
  // rounding it would flush to zero.
  const float x[2] = {std::ldexp(1.0f, -75), std::ldexp(1.0f, -63)};
  const eexit::detail::bf16_t w[2] = {{eexit::f32_to_bf16(-std::ldexp(1.0f, -76))},
                                      {eexit::f32_to_bf16(std::ldexp(1.0f, -63))}};
  std::uint16_t xb[32];
  eexit::detail::round_row_bf16(x, 2, xb);
  for (const bf16_isa t : {bf16_isa::scalar, bf16_isa::avx2, bf16_isa::avx512bf16}) {
    if (!eexit::detail::cpu_has_bf16_isa(t)) continue;
    CAPTURE(eexit::detail::bf16_isa_name(t));
    const ForceIsa force(t);
    float y = -1.0f;
    eexit::detail::matmul_bf16act(xb, 32, 1, w, 2, 0, 1, &y, 1, nullptr);
    CHECK(y == std::ldexp(1.0f, -126));
  }
}

#if defined(EEXIT_ISA_X86)
// The activation rounding against the instruction it defines itself by.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) static void hw_round(
    const float* x, std::uint16_t* out) {
  const __m512bh r = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + 16), _mm512_loadu_ps(x));
  _mm512_storeu_si512(out, (__m512i)r);
}
#endif

TEST_CASE("activation rounding: vcvtne2ps2bf16's results, specials included") {
  using eexit::detail::round_bf16;
  const float inf = std::numeric_limits<float>::infinity();
  CHECK(round_bf16(1.0f) == 0x3F80);
  CHECK(round_bf16(-inf) == 0xFF80);
  CHECK(round_bf16(1e-40f) == 0x0000);   // subnormal: zero
  CHECK(round_bf16(-1e-40f) == 0x8000);  // of its sign
  CHECK((round_bf16(std::numeric_limits<float>::quiet_NaN()) & 0x7FC0) == 0x7FC0);
  CHECK(round_bf16(3.4e38f) == 0x7F80);  // rounds past the largest bf16
#if defined(EEXIT_ISA_X86)
  if (!eexit::detail::cpu_has_bf16_isa(bf16_isa::avx512bf16)) {
    MESSAGE("no AVX-512 BF16 on this CPU: the hardware comparison is skipped");
    return;
  }
  std::mt19937 rng(13);
  std::size_t bad = 0;
  for (int it = 0; it < 20000; ++it) {
    float x[32];
    std::uint16_t hw[32];
    for (float& v : x) {
      std::uint32_t u = std::uint32_t(rng());
      if (it % 2) u = (u & 0x8000FFFFu) | ((0x60u + u % 0x40u) << 23);  // many ties and normals
      v = eexit::detail::bits_f32(u);
    }
    hw_round(x, hw);
    for (int i = 0; i < 32; ++i) bad += hw[i] != round_bf16(x[i]);
  }
  CHECK(bad == 0);
#endif
}

TEST_CASE("bf16 activations: fused projections equal the unfused sequence bitwise") {
  std::mt19937 rng(17);
  constexpr std::size_t in = 75, hidden = 100, out = 44, kv_out = 20;  // odd K, partial tiles
  const auto t = eexit::dtype::bf16;
  auto weight = [&](std::size_t n) { return eexit::Weight(random(rng, n)).converted(t); };
  const eexit::Weight wg = weight(hidden * in), wu = weight(hidden * in), wd = weight(out * hidden),
                      wk = weight(kv_out * in), wv = weight(kv_out * in);
  const eexit::WeightView g(t, wg.bytes()), up_w(t, wu.bytes()), d(t, wd.bytes()),
      kw(t, wk.bytes()), vw(t, wv.bytes());
  // W_q (out, in): the first `out` rows of W_gate.
  const eexit::test::FusedWeights w{in, hidden, out, kv_out, g, kw, vw, g, up_w, d};
  const auto bq = random(rng, out), bk = random(rng, kv_out);
  eexit::CpuBackend one(1), two(2);
  for (const std::size_t rows : {1u, 3u, 16u, 53u}) {
    CAPTURE(rows);
    const auto x = random(rng, rows * in), h_in = random(rng, rows * hidden),
               resid = random(rng, rows * out);
    for (auto* be : {&one, &two})
      eexit::test::check_fused(*be, w, rows, x, h_in, resid, bq.data(), bk.data());
  }
}
