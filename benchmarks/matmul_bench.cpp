// eexit-bench-matmul: the batch-invariant matmul kernel alone against OpenBLAS sgemm on the
// same shapes, one thread each, in one run.
//
//   eexit-bench-matmul [--rows 1,16,128] [--reps 5]
//
// Shapes: the projections of the 110M shape (dim 768, hidden 2048, vocab 32000; what
// eexit-bench-decode runs). For each (rows, shape): detail::matmul_xwt over all outputs
// with f32, bf16 and f16 weights, and cblas_sgemm (x · Wᵀ, OpenBLAS on 1 thread), best of
// --reps, in GFLOP/s (2·M·N·K per second). Every variant runs back to back on the same
// data, so read the ratios; the machine may be shared (the load average is printed). The
// weights of all shapes but the LM head fit in a 32 MiB L3 after the first rep.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bench_clock.hpp"
#include "eexit/backend/cpu_kernels.hpp"
#include "eexit/model/weights.hpp"

namespace {

using clk = std::chrono::steady_clock;
namespace d = eexit::detail;

template <class F>
double best_seconds(int reps, F&& f) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = clk::now();
    f();
    best = std::min(best, std::chrono::duration<double>(clk::now() - t0).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::size_t> rows{1, 16, 128};
  int reps = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reps" && i + 1 < argc) {
      reps = std::max(1, std::stoi(argv[++i]));
    } else if (a == "--rows" && i + 1 < argc) {
      rows.clear();
      std::stringstream ss(argv[++i]);
      for (std::string t; std::getline(ss, t, ',');) rows.push_back(std::stoul(t));
    } else {
      std::fprintf(stderr, "usage: eexit-bench-matmul [--rows 1,16,128] [--reps 5]\n");
      return 2;
    }
  }
  openblas_set_num_threads(1);
  struct Shape {
    const char* name;
    std::size_t N, K;
  };
  const Shape shapes[] = {{"qkv", 2304, 768},
                          {"wo", 768, 768},
                          {"gate", 2048, 768},
                          {"down", 768, 2048},
                          {"lm_head", 32000, 768}};
  std::printf("eexit-bench-matmul: kernel %s, 1 thread, best of %d; load average %s\n",
              d::kernel_isa(), reps, eexit::bench::loadavg().c_str());
  std::printf("%-8s %5s %6s %5s | %8s %8s %8s %8s GFLOP/s | f32/sgemm\n", "shape", "rows", "N", "K",
              "f32", "bf16", "f16", "sgemm");
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (const Shape& s : shapes) {
    std::vector<float> w(s.N * s.K);  // (N, K)
    for (auto& e : w) e = u(rng);
    const eexit::Weight wb = eexit::Weight(w).converted(eexit::dtype::bf16),  // (N, K) rounded
        wh = eexit::Weight(w).converted(eexit::dtype::f16);
    for (const std::size_t M : rows) {
      std::vector<float> x(M * s.K), y(M * s.N);  // (M, K), (M, N)
      for (auto& e : x) e = u(rng);
      const double flop = 2.0 * double(M) * double(s.N) * double(s.K);
      auto run = [&](const auto* wp) {
        return best_seconds(reps, [&] {
          d::matmul_xwt(x.data(), M, s.K, wp, s.K, 0, s.N, y.data(), s.N, nullptr);
        });
      };
      const double t32 = run(w.data()), tb = run(static_cast<const d::bf16_t*>(wb.bytes())),
                   th = run(static_cast<const d::f16_t*>(wh.bytes()));
      const double tblas = best_seconds(reps, [&] {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(s.N), int(s.K), 1.0f,
                    x.data(), int(s.K), w.data(), int(s.K), 0.0f, y.data(), int(s.N));
      });
      std::printf("%-8s %5zu %6zu %5zu | %8.1f %8.1f %8.1f %8.1f         | %.2f\n", s.name, M, s.N,
                  s.K, flop / t32 * 1e-9, flop / tb * 1e-9, flop / th * 1e-9, flop / tblas * 1e-9,
                  tblas / t32);
    }
  }
}
