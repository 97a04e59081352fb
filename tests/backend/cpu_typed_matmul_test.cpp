// The CPU matmul with weights kept in bf16 / f16: against a float64 reference over the same
// rounded weights, bitwise equal to the fp32 kernel over those weights widened (the typed
// kernels differ from it only in how W is loaded), and batch invariant.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "eexit/backend/cpu.hpp"
#include "eexit/model/weights.hpp"

namespace {

bool bitwise_equal(const float* a, const float* b, std::size_t n) {
  return std::memcmp(a, b, n * sizeof(float)) == 0;
}

std::vector<float> random(std::mt19937& rng, std::size_t n) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& e : v) e = u(rng);
  return v;
}

}  // namespace

TEST_CASE("bf16 and f16 weight matmul: float64 reference, fp32-kernel bits, batch invariance") {
  std::mt19937 rng(99);
  eexit::CpuBackend one(1), two(2);
  constexpr std::size_t M = 7;
  // K not a multiple of 16 (tails), N not a multiple of 8 (partial tiles), and a shape
  // large enough to split over two threads.
  const std::pair<std::size_t, std::size_t> shapes[] = {{13, 172}, {64, 64}, {3, 9}, {260, 1000}};
  for (const eexit::dtype t : {eexit::dtype::bf16, eexit::dtype::f16}) {
    CAPTURE(eexit::dtype_name(t));
    double worst = 0.0;
    for (const auto& [N, K] : shapes) {
      CAPTURE(N);
      CAPTURE(K);
      const auto x = random(rng, M * K), bias = random(rng, N);
      const eexit::Weight w = eexit::Weight(random(rng, N * K)).converted(t);
      REQUIRE(w.type() == t);
      const std::vector<float> wr = w.to_f32();  // the rounded weights, exactly
      const eexit::WeightView wv(t, w.bytes());
      std::vector<float> y(M * N), yf(M * N);
      one.matmul(x.data(), M, K, wv, N, y.data(), bias.data());
      one.matmul(x.data(), M, K, wr.data(), N, yf.data(), bias.data());
      CHECK(bitwise_equal(y.data(), yf.data(), M * N));
      // float64 reference: error relative to sum |x*w| (the scale of rounding in a dot).
      for (std::size_t m = 0; m < M; ++m)
        for (std::size_t n = 0; n < N; ++n) {
          double ref = bias[n], mag = std::fabs(double(bias[n]));
          for (std::size_t k = 0; k < K; ++k) {
            ref += double(x[m * K + k]) * double(wr[n * K + k]);
            mag += std::fabs(double(x[m * K + k]) * double(wr[n * K + k]));
          }
          worst = std::max(worst, std::fabs(double(y[m * N + n]) - ref) / mag);
        }
      // Batch invariance: each row alone, and on two threads, gives the same bits.
      std::size_t bad = 0;
      for (std::size_t m = 0; m < M; ++m) {
        std::vector<float> y1(N);
        two.matmul(x.data() + m * K, 1, K, wv, N, y1.data(), bias.data());
        bad += !bitwise_equal(y1.data(), y.data() + m * N, N);
      }
      CHECK(bad == 0);
      std::vector<float> y2(M * N);
      two.matmul(x.data(), M, K, wv, N, y2.data(), bias.data());
      CHECK(bitwise_equal(y2.data(), y.data(), M * N));
    }
    MESSAGE(eexit::dtype_name(t) << " matmul vs float64: max |y - ref| / sum|x*w| " << worst);
    CHECK(worst <= 1e-6);
  }
}

TEST_CASE("embed widens bf16 and f16 rows exactly") {
  std::mt19937 rng(5);
  eexit::CpuBackend be(1);
  constexpr std::size_t V = 10, D = 24;
  for (const eexit::dtype t : {eexit::dtype::bf16, eexit::dtype::f16}) {
    const eexit::Weight w = eexit::Weight(random(rng, V * D)).converted(t);
    const std::vector<float> wr = w.to_f32();
    const std::int32_t ids[] = {3, 0, 9, 3};
    std::vector<float> out(4 * D);
    be.embed(ids, 4, eexit::WeightView(t, w.bytes()), D, out.data());
    for (std::size_t r = 0; r < 4; ++r)
      CHECK(bitwise_equal(out.data() + r * D, wr.data() + std::size_t(ids[r]) * D, D));
  }
}
