// CpuBackend::exit_scores against a double-precision softmax written here: max prob,
// top-1 minus top-2 prob, entropy and the argmax (ties to the lowest id), on random rows
// of many widths (the 16-lane body and the scalar tail), large offsets (the max
// subtraction), -inf entries, ties and a single-token vocabulary; and the threaded path
// (many rows of a wide vocabulary) gives the same values as one row at a time.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "eexit/backend/cpu.hpp"

using namespace eexit;

namespace {

struct Ref {
  double p1, margin, entropy;
  std::int32_t top1;
};

Ref reference(const float* z, std::size_t n) {
  std::size_t a = 0;
  for (std::size_t i = 1; i < n; ++i)
    if (z[i] > z[a]) a = i;
  double second = -INFINITY;
  for (std::size_t i = 0; i < n; ++i)
    if (i != a) second = std::max(second, double(z[i]));
  const double m = z[a];
  double s = 0;
  for (std::size_t i = 0; i < n; ++i) s += std::exp(double(z[i]) - m);
  double h = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double p = std::exp(double(z[i]) - m) / s;
    if (p > 0) h -= p * std::log(p);
  }
  const double p1 = 1.0 / s, p2 = n > 1 ? std::exp(second - m) / s : 0.0;
  return {p1, p1 - p2, h, std::int32_t(a)};
}

void check_rows(CpuBackend& be, const std::vector<float>& z, std::size_t rows, std::size_t vocab) {
  std::vector<float> out(rows * 3, -1.0f);
  std::vector<std::int32_t> top(rows, -1);
  be.exit_scores(z.data(), rows, vocab, out.data(), top.data());
  for (std::size_t r = 0; r < rows; ++r) {
    const Ref ref = reference(z.data() + r * vocab, vocab);
    CAPTURE(vocab);
    CAPTURE(r);
    CHECK(top[r] == ref.top1);
    CHECK(out[3 * r] == doctest::Approx(ref.p1).epsilon(2e-6));
    CHECK(std::abs(out[3 * r + 1] - ref.margin) <= 2e-6 * ref.p1 + 1e-7);
    CHECK(std::abs(out[3 * r + 2] - ref.entropy) <= 2e-5 * (1.0 + ref.entropy));
  }
}

}  // namespace

TEST_CASE("exit_scores: random rows of many widths match a double softmax") {
  CpuBackend be(2);
  std::mt19937 rng(7);
  for (std::size_t vocab : {1u, 2u, 15u, 16u, 17u, 100u, 512u, 1024u, 1031u, 32000u}) {
    for (float scale : {0.5f, 3.0f, 12.0f}) {
      const std::size_t rows = 5;
      std::normal_distribution<float> nd(0.0f, scale);
      std::vector<float> z(rows * vocab);
      for (auto& v : z) v = nd(rng);
      if (vocab > 3) z[2 * vocab + vocab / 2] = 60.0f;                     // a confident row
      for (std::size_t i = 0; i < vocab; ++i) z[3 * vocab + i] += 1.0e4f;  // a large offset
      check_rows(be, z, rows, vocab);
    }
  }
}

TEST_CASE("exit_scores: ties go to the lowest id and have zero margin; -inf entries count as 0") {
  CpuBackend be(1);
  const std::size_t vocab = 40;
  std::vector<float> z(3 * vocab, 0.0f);
  z[0 * vocab + 33] = z[0 * vocab + 7] = z[0 * vocab + 21] = 5.0f;   // three-way tie
  for (std::size_t i = 0; i < vocab; ++i) z[1 * vocab + i] = 0.25f;  // uniform: argmax 0
  for (std::size_t i = 0; i < vocab; ++i) z[2 * vocab + i] = i % 3 ? -INFINITY : float(i % 5);
  std::vector<float> out(9);
  std::vector<std::int32_t> top(3);
  be.exit_scores(z.data(), 3, vocab, out.data(), top.data());
  CHECK(top[0] == 7);
  CHECK(out[1] == 0.0f);
  CHECK(top[1] == 0);
  CHECK(out[0 + 3] == doctest::Approx(1.0 / 40).epsilon(1e-6));
  CHECK(out[2 + 3] == doctest::Approx(std::log(40.0)).epsilon(1e-5));
  check_rows(be, z, 3, vocab);
}

TEST_CASE("exit_scores: the threaded path (many wide rows) equals one row at a time") {
  CpuBackend be(2);
  const std::size_t rows = 40, vocab = 32000;
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 4.0f);
  std::vector<float> z(rows * vocab);
  for (auto& v : z) v = nd(rng);
  std::vector<float> all(rows * 3), one(3);
  std::vector<std::int32_t> top(rows), t1(1);
  be.exit_scores(z.data(), rows, vocab, all.data(), top.data());
  for (std::size_t r = 0; r < rows; ++r) {
    be.exit_scores(z.data() + r * vocab, 1, vocab, one.data(), t1.data());
    CHECK(t1[0] == top[r]);
    for (int k = 0; k < 3; ++k) CHECK(one[std::size_t(k)] == all[3 * r + std::size_t(k)]);
  }
}
