// eexit-bench-exit-scores: the cost of scoring one row at one exit point, before and after
// exit scores became a backend op, side by side in one run.
//
//   eexit-bench-exit-scores [--threads 2] [--seconds 1] [--reps 2]
//
// before: the host-side measures of the commit before the op (copied below): MaxProb's
//   max_prob (max pass + float exp sums, 8 lanes) and Margin / NegEntropy's softmax_stats
//   (top-2 pass + exp sums with the z term), each once per row.
// after:  CpuBackend::exit_scores: max prob, margin, entropy and argmax together, 16-lane
//   polynomial exp (threads split rows only above 2^19 logits per call).
// Per (vocab, rows): each variant runs for --seconds at a time, the variants interleaved
// --reps times; the best rate of each is reported as microseconds per row per exit.
// Logits are N(0, 3²) with one token at +12 (a typical confident-ish exit row).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "eexit/backend/cpu.hpp"

using namespace eexit;
using clk = std::chrono::steady_clock;

namespace before {
// detail::max_prob / softmax_stats as they were in policy/measures.hpp (commit 149fb9a).
struct SoftmaxStats {
  float p1 = 0, p2 = 0, entropy = 0;
};
inline float row_max(const float* z, std::size_t n) {
  float m = -INFINITY;
  for (std::size_t i = 0; i < n; ++i) m = std::max(m, z[i]);
  return m;
}
template <bool with_z>
inline void exp_sums(const float* z, std::size_t n, float m, float& S, float& Sz) {
  float s[8] = {}, sz[8] = {};
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (std::size_t k = 0; k < 8; ++k) {
      const float d = z[i + k] - m, e = std::exp(d);
      s[k] += e;
      if constexpr (with_z) sz[k] += e * d;
    }
  for (; i < n; ++i) {
    const float d = z[i] - m, e = std::exp(d);
    s[0] += e;
    if constexpr (with_z) sz[0] += e * d;
  }
  S = Sz = 0.0f;
  for (std::size_t k = 0; k < 8; ++k) {
    S += s[k];
    Sz += sz[k];
  }
}
inline float max_prob(const float* z, std::size_t n) {
  float S, Sz;
  exp_sums<false>(z, n, row_max(z, n), S, Sz);
  return 1.0f / S;
}
inline SoftmaxStats softmax_stats(const float* z, std::size_t n) {
  float m1 = -INFINITY, m2 = -INFINITY;
  for (std::size_t i = 0; i < n; ++i) {
    if (z[i] > m1) {
      m2 = m1;
      m1 = z[i];
    } else if (z[i] > m2) {
      m2 = z[i];
    }
  }
  float S, Sz;
  exp_sums<true>(z, n, m1, S, Sz);
  SoftmaxStats st;
  st.p1 = 1.0f / S;
  st.p2 = n > 1 ? std::exp(m2 - m1) / S : 0.0f;
  st.entropy = std::log(S) - Sz / S;
  return st;
}
}  // namespace before

namespace {

volatile float g_sink;

// Runs fn (one call = `rows` rows) for at least `seconds`; returns microseconds per row.
template <class Fn>
double us_per_row(Fn&& fn, std::size_t rows, double seconds) {
  std::int64_t calls = 0;
  const auto t0 = clk::now();
  double el = 0;
  do {
    fn();
    ++calls;
    el = std::chrono::duration<double>(clk::now() - t0).count();
  } while (el < seconds);
  return el * 1e6 / double(calls) / double(rows);
}

}  // namespace

int main(int argc, char** argv) {
  unsigned threads = 2;
  double seconds = 1.0;
  int reps = 2;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--threads")
      threads = unsigned(std::atoi(next()));
    else if (a == "--seconds")
      seconds = std::atof(next());
    else if (a == "--reps")
      reps = std::atoi(next());
    else {
      std::fprintf(stderr,
                   "usage: eexit-bench-exit-scores [--threads N] [--seconds S] [--reps R]\n");
      return 2;
    }
  }
  CpuBackend be(threads);
  std::printf(
      "exit scoring, us per row per exit (best of %d interleaved runs of %.1f s; %u threads)\n",
      reps, seconds, threads);
  std::printf("%7s %5s %12s %12s %12s %14s %14s\n", "vocab", "rows", "max_prob", "stats", "op",
              "max_prob/op", "stats/op");
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  for (std::size_t vocab : {std::size_t(1024), std::size_t(32000)}) {
    for (std::size_t rows : {std::size_t(1), std::size_t(16), std::size_t(64)}) {
      std::vector<float> z(rows * vocab), out(rows * 3);
      std::vector<std::int32_t> top(rows);
      for (auto& v : z) v = nd(rng);
      for (std::size_t r = 0; r < rows; ++r) z[r * vocab + (r * 7919) % vocab] += 12.0f;
      auto mp = [&] {
        float acc = 0;
        for (std::size_t r = 0; r < rows; ++r) acc += before::max_prob(z.data() + r * vocab, vocab);
        g_sink = acc;
      };
      auto ss = [&] {
        float acc = 0;
        for (std::size_t r = 0; r < rows; ++r) {
          const auto st = before::softmax_stats(z.data() + r * vocab, vocab);
          acc += st.p1 - st.p2 + st.entropy;
        }
        g_sink = acc;
      };
      auto op = [&] {
        be.exit_scores(z.data(), rows, vocab, out.data(), top.data());
        g_sink = out[0];
      };
      double b_mp = 1e30, b_ss = 1e30, b_op = 1e30;
      for (int k = 0; k < reps; ++k) {
        b_mp = std::min(b_mp, us_per_row(mp, rows, seconds));
        b_ss = std::min(b_ss, us_per_row(ss, rows, seconds));
        b_op = std::min(b_op, us_per_row(op, rows, seconds));
      }
      std::printf("%7zu %5zu %12.3f %12.3f %12.3f %13.1fx %13.1fx\n", vocab, rows, b_mp, b_ss, b_op,
                  b_mp / b_op, b_ss / b_op);
      std::fflush(stdout);
    }
  }
  return 0;
}
