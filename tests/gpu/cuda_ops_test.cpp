// Every CudaBackend op against CpuBackend (the reference) on fresh random data. The error
// is normwise, ‖gpu − cpu‖ / ‖cpu‖ over the op's output (elementwise relative error is
// meaningless for outputs near zero after cancellation): fp32 ≤ 1e-5, bf16 weights ≤ 1e-2.
// Each check prints "PARITY <op> <dtype> <error> <bound>" for benchmarks/gpu/check.sh.
// Label gpu: needs an NVIDIA GPU.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "eexit/backend/cpu.hpp"
#include "eexit/backend/cuda.hpp"
#include "eexit/cache/kv_storage.hpp"
#include "eexit/policy/measures.hpp"

using namespace eexit;

namespace {

constexpr double f32_bound = 1e-5, bf16_bound = 1e-2;

// Never destroyed: a static's destructor would run after the CUDA runtime's own teardown.
CudaBackend& gpu() {
  static CudaBackend* be = new CudaBackend;
  return *be;
}
CudaBackend& gpu_bf16() {
  static CudaBackend* be =
      new CudaBackend(CudaBackend::Options{.weights = weight_dtype::bf16, .bf16_min_elements = 1});
  return *be;
}
CpuBackend& cpu() {
  static CpuBackend be(2);
  return be;
}

std::vector<float> randn(std::size_t n, std::uint32_t seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

CudaBuffer<float> up(CudaBackend& be, const std::vector<float>& v) {
  CudaBuffer<float> b;
  be.upload<float>(b, std::span<const float>(v));
  return b;
}
std::vector<float> down(CudaBackend& be, const CudaBuffer<float>& b) {
  std::vector<float> v(b.size());
  be.download<float>(std::span<float>(v), b);
  return v;
}

double normwise(const std::vector<float>& got, const std::vector<float>& want) {
  REQUIRE(got.size() == want.size());
  double num = 0.0, den = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double d = double(got[i]) - double(want[i]);
    num += d * d;
    den += double(want[i]) * double(want[i]);
  }
  if (!std::isfinite(num)) return INFINITY;
  return den > 0.0 ? std::sqrt(num / den) : std::sqrt(num);
}

void parity(const char* op, const char* dtype, const std::vector<float>& got,
            const std::vector<float>& want, double bound) {
  const double e = normwise(got, want);
  std::printf("PARITY %-14s %-5s %.3e %.0e\n", op, dtype, e, bound);
  std::fflush(stdout);
  CAPTURE(op);
  CHECK(e <= bound);
}

}  // namespace

TEST_CASE("matmul: fp32 and bf16 weights, with and without bias, 1..64 rows") {
  for (std::size_t rows : {1u, 7u, 64u}) {
    const std::size_t in = 512, out = 384;
    auto x = randn(rows * in, 1 + std::uint32_t(rows)), w = randn(out * in, 2, 0.05f),
         b = randn(out, 3);
    for (bool bias : {false, true}) {
      std::vector<float> want(rows * out);
      cpu().matmul(x.data(), rows, in, w.data(), out, want.data(), bias ? b.data() : nullptr);
      for (bool bf16 : {false, true}) {
        CudaBackend& be = bf16 ? gpu_bf16() : gpu();
        auto dx = up(be, x), dw = up(be, w), db = up(be, b);
        auto dy = be.allocate<float>(rows * out);
        be.matmul(dx.data(), rows, in, dw.data(), out, dy.data(), bias ? db.data() : nullptr);
        parity(bias ? "matmul+bias" : "matmul", bf16 ? "bf16" : "fp32", down(be, dy), want,
               bf16 ? bf16_bound : f32_bound);
      }
    }
  }
}

TEST_CASE("a matmul reading inside an uploaded weight (offset pointer) uses that weight's slice") {
  const std::size_t rows = 3, in = 128, out = 64;
  auto x = randn(rows * in, 4), w = randn(4 * out * in, 5, 0.1f);
  std::vector<float> want(rows * out);
  cpu().matmul(x.data(), rows, in, w.data() + 2 * out * in, out, want.data());
  for (bool bf16 : {false, true}) {
    CudaBackend& be = bf16 ? gpu_bf16() : gpu();
    auto dx = up(be, x), dw = up(be, w);
    auto dy = be.allocate<float>(rows * out);
    be.matmul(dx.data(), rows, in, dw.data() + 2 * out * in, out, dy.data());
    parity("matmul-slice", bf16 ? "bf16" : "fp32", down(be, dy), want,
           bf16 ? bf16_bound : f32_bound);
  }
}

TEST_CASE("rmsnorm, swiglu, add, sigmoid, copy, embed, gather_rows") {
  auto& be = gpu();
  const std::size_t rows = 9, dim = 2048;
  auto x = randn(rows * dim, 10, 3.0f), w = randn(dim, 11), y = randn(rows * dim, 12);
  {
    std::vector<float> want(rows * dim);
    cpu().rmsnorm(x.data(), w.data(), want.data(), rows, dim, 1e-5f);
    auto dx = up(be, x), dw = up(be, w);
    auto dy = be.allocate<float>(rows * dim);
    be.rmsnorm(dx.data(), dw.data(), dy.data(), rows, dim, 1e-5f);
    parity("rmsnorm", "fp32", down(be, dy), want, f32_bound);
  }
  {
    std::vector<float> want(rows * dim);
    cpu().swiglu(x.data(), y.data(), want.data(), rows * dim);
    auto dx = up(be, x), dy = up(be, y);
    be.swiglu(dx.data(), dy.data(), dx.data(), rows * dim);  // in place, as the model does
    parity("swiglu", "fp32", down(be, dx), want, f32_bound);
  }
  {
    auto want = x;
    cpu().add(want.data(), y.data(), want.size());
    auto dx = up(be, x), dy = up(be, y);
    be.add(dx.data(), dy.data(), x.size());
    parity("add", "fp32", down(be, dx), want, f32_bound);
  }
  {
    auto want = x;
    cpu().sigmoid(want.data(), want.size());
    auto dx = up(be, x);
    be.sigmoid(dx.data(), x.size());
    parity("sigmoid", "fp32", down(be, dx), want, f32_bound);
  }
  {
    auto dx = up(be, x);
    auto dy = be.allocate<float>(x.size());
    be.copy(dx.data(), dy.data(), x.size());
    CHECK(down(be, dy) == x);
  }
  {
    const std::size_t vocab = 500, d = 96;
    auto table = randn(vocab * d, 13);
    std::vector<std::int32_t> ids = {0, 499, 7, 7, 250, 1};
    std::vector<float> want(ids.size() * d);
    cpu().embed(ids.data(), ids.size(), table.data(), d, want.data());
    auto dt = up(be, table);
    auto dy = be.allocate<float>(want.size());
    be.embed(ids.data(), ids.size(), dt.data(), d, dy.data());
    CHECK(down(be, dy) == want);
    std::vector<std::int32_t> idx = {5, 0, 3};
    std::vector<float> want_g(idx.size() * d);
    cpu().gather_rows(want.data(), idx.data(), idx.size(), d, want_g.data());
    auto dg = be.allocate<float>(want_g.size());
    be.gather_rows(dy.data(), idx.data(), idx.size(), d, dg.data());
    CHECK(down(be, dg) == want_g);
  }
}

TEST_CASE("rope, both styles, rows at different positions") {
  auto& be = gpu();
  const std::size_t rows = 5, heads = 8, hd = 128;
  std::vector<float> inv(hd / 2);
  for (std::size_t i = 0; i < inv.size(); ++i)
    inv[i] = float(1.0 / std::pow(500000.0, double(2 * i) / double(hd)));
  std::vector<RowKv> rk(rows);
  const std::int32_t pos[] = {0, 1, 17, 1000, 8191};
  for (std::size_t r = 0; r < rows; ++r) rk[r].pos = pos[r];
  auto x = randn(rows * heads * hd, 20);
  for (auto style : {rope_style::half, rope_style::interleaved}) {
    auto want = x;
    cpu().rope(want.data(), rows, heads, hd, rk.data(), inv.data(), style);
    auto dx = up(be, x), di = up(be, inv);
    be.rope(dx.data(), rows, heads, hd, rk.data(), di.data(), style);
    parity(style == rope_style::half ? "rope-half" : "rope-interl", "fp32", down(be, dx), want,
           f32_bound);
  }
}

namespace {
// A paged pool: n_blocks of block_size slots, K and V of (slots, kv_dim), and block tables
// that scatter each sequence over the pool.
struct Pool {
  std::size_t n_blocks, block_size, kv_dim;
  std::vector<float> k, v;
  KvLayerView cpu_view() {
    return {k.data(), v.data(), std::int32_t(block_size), std::int32_t(kv_dim)};
  }
};
}  // namespace

TEST_CASE("store_kv + paged attention with GQA: prefill rows and decode rows in one call") {
  auto& be = gpu();
  const std::size_t heads = 32, kv_heads = 8, hd = 64, kvd = kv_heads * hd, bs = 16, nb = 64;
  Pool p{nb, bs, kvd, randn(nb * bs * kvd, 30), randn(nb * bs * kvd, 31)};
  // Three sequences over a shuffled pool: A prefills positions 0..5, B decodes at 20, C at 300.
  std::vector<std::int32_t> blocks(nb);
  std::iota(blocks.begin(), blocks.end(), 0);
  std::shuffle(blocks.begin(), blocks.end(), std::mt19937(32));
  const std::int32_t* ta = blocks.data();
  const std::int32_t* tb = blocks.data() + 4;
  const std::int32_t* tc = blocks.data() + 10;  // 300 / 16 + 1 = 19 blocks
  std::vector<RowKv> rk;
  for (std::int32_t t = 0; t < 6; ++t) rk.push_back({ta, t});
  rk.push_back({tb, 20});
  rk.push_back({tc, 300});
  const std::size_t rows = rk.size();
  auto q = randn(rows * heads * hd, 33), kk = randn(rows * kvd, 34), vv = randn(rows * kvd, 35);
  std::vector<float> want(rows * heads * hd);
  Pool pc = p;
  cpu().store_kv(kk.data(), vv.data(), rows, rk.data(), pc.cpu_view());
  cpu().attention(q.data(), want.data(), rows, heads, kv_heads, hd, rk.data(), pc.cpu_view());

  auto dk = up(be, p.k), dv = up(be, p.v), dq = up(be, q), dkk = up(be, kk), dvv = up(be, vv);
  auto dout = be.allocate<float>(want.size());
  KvLayerView gv{dk.data(), dv.data(), std::int32_t(bs), std::int32_t(kvd)};
  be.store_kv(dkk.data(), dvv.data(), rows, rk.data(), gv);
  be.attention(dq.data(), dout.data(), rows, heads, kv_heads, hd, rk.data(), gv);
  CHECK(down(be, dk) == pc.k);
  CHECK(down(be, dv) == pc.v);
  parity("attention", "fp32", down(be, dout), want, f32_bound);
}

TEST_CASE("fill_kv: K/V of several skipped layers for several rows, rotated and stored") {
  auto& be = gpu();
  const std::size_t kv_heads = 4, hd = 32, kvd = kv_heads * hd, bs = 8, nb = 16, n_fill = 3;
  std::vector<float> inv(hd / 2);
  for (std::size_t i = 0; i < inv.size(); ++i)
    inv[i] = float(1.0 / std::pow(10000.0, double(2 * i) / double(hd)));
  std::vector<std::int32_t> table = {5, 2, 9, 0, 11};
  std::vector<RowKv> rk = {{table.data(), 3}, {table.data() + 2, 17}};
  const std::size_t rows = rk.size();
  auto kv = randn(rows * n_fill * 2 * kvd, 40);
  for (auto style : {rope_style::half, rope_style::interleaved}) {
    std::vector<std::vector<float>> ck, cv;
    std::vector<CudaBuffer<float>> gk, gvv;
    std::vector<KvLayerView> cviews, gviews;
    for (std::size_t f = 0; f < n_fill; ++f) {
      ck.push_back(randn(nb * bs * kvd, 41 + std::uint32_t(f)));
      cv.push_back(randn(nb * bs * kvd, 51 + std::uint32_t(f)));
      gk.push_back(up(be, ck.back()));
      gvv.push_back(up(be, cv.back()));
    }
    for (std::size_t f = 0; f < n_fill; ++f) {
      cviews.push_back({ck[f].data(), cv[f].data(), std::int32_t(bs), std::int32_t(kvd)});
      gviews.push_back({gk[f].data(), gvv[f].data(), std::int32_t(bs), std::int32_t(kvd)});
    }
    cpu().fill_kv(kv.data(), rows, n_fill, rk.data(), cviews.data(), kv_heads, hd, inv.data(),
                  style);
    auto dkv = up(be, kv), dinv = up(be, inv);
    be.fill_kv(dkv.data(), rows, n_fill, rk.data(), gviews.data(), kv_heads, hd, dinv.data(),
               style);
    std::vector<float> got, want;
    for (std::size_t f = 0; f < n_fill; ++f) {
      auto a = down(be, gk[f]), b = down(be, gvv[f]);
      got.insert(got.end(), a.begin(), a.end());
      got.insert(got.end(), b.begin(), b.end());
      want.insert(want.end(), ck[f].begin(), ck[f].end());
      want.insert(want.end(), cv[f].begin(), cv[f].end());
    }
    parity("fill_kv", "fp32", got, want, f32_bound);
  }
}

TEST_CASE("exit scores fused over the vocabulary and device argmax match the host measures") {
  auto& be = gpu();
  const std::size_t rows = 6, vocab = 32000;
  auto z = randn(rows * vocab, 60, 2.0f);
  z[1 * vocab + 17] = 40.0f;                    // a confident row
  z[2 * vocab + 5] = z[2 * vocab + 9] = 30.0f;  // a tie: margin 0, argmax the lower id
  for (std::size_t i = 0; i < vocab; ++i) z[3 * vocab + i] = 0.25f;  // uniform
  auto dz = up(be, z);
  auto dout = be.allocate<float>(rows * 3);
  CudaBuffer<std::int32_t> dtop(be.context(), rows), dam(be.context(), rows);
  be.exit_scores(dz.data(), rows, vocab, dout.data(), dtop.data());
  be.argmax(dz.data(), rows, vocab, dam.data());
  std::vector<float> got = down(be, dout), want(rows * 3);
  std::vector<std::int32_t> top(rows), am(rows), cpu_top(rows);
  cpu().exit_scores(z.data(), rows, vocab, want.data(), cpu_top.data());  // the reference backend
  be.download<std::int32_t>(std::span<std::int32_t>(top), dtop);
  be.download<std::int32_t>(std::span<std::int32_t>(am), dam);
  for (std::size_t r = 0; r < rows; ++r) {
    const float* row = z.data() + r * vocab;
    CHECK(cpu_top[r] == top[r]);
    const auto first_max = std::int32_t(std::max_element(row, row + vocab) - row);
    CHECK(top[r] == first_max);
    CHECK(am[r] == first_max);
  }
  parity("exit_scores", "fp32", got, want, f32_bound);
  CHECK(top[2] == 5);
  CHECK(got[2 * 3 + 1] == 0.0f);
}

TEST_CASE("device sampling: top-k 1 and a tiny top-p are greedy; draws stay in the top-k") {
  auto& be = gpu();
  const std::size_t rows = 4, vocab = 1000;
  auto z = randn(rows * vocab, 70, 3.0f);
  auto dz = up(be, z);
  std::vector<float> u = {0.0f, 0.3f, 0.7f, 0.999f};
  auto du = up(be, u);
  CudaBuffer<std::int32_t> dout(be.context(), rows);
  std::vector<std::int32_t> got(rows);
  auto greedy = [&](std::size_t r) {
    const float* row = z.data() + r * vocab;
    return std::int32_t(std::max_element(row, row + vocab) - row);
  };
  be.sample_top_k_top_p(dz.data(), rows, vocab, 1.0f, 1, 1.0f, du.data(), dout.data());
  be.download<std::int32_t>(std::span<std::int32_t>(got), dout);
  for (std::size_t r = 0; r < rows; ++r) CHECK(got[r] == greedy(r));
  be.sample_top_k_top_p(dz.data(), rows, vocab, 0.8f, 0, 1e-6f, du.data(), dout.data());
  be.download<std::int32_t>(std::span<std::int32_t>(got), dout);
  for (std::size_t r = 0; r < rows; ++r) CHECK(got[r] == greedy(r));
  be.sample_top_k_top_p(dz.data(), rows, vocab, 1.0f, 5, 1.0f, du.data(), dout.data());
  be.download<std::int32_t>(std::span<std::int32_t>(got), dout);
  for (std::size_t r = 0; r < rows; ++r) {
    std::vector<float> row(z.begin() + long(r * vocab), z.begin() + long((r + 1) * vocab));
    std::vector<float> sorted = row;
    std::sort(sorted.begin(), sorted.end(), std::greater<>());
    CHECK(row[std::size_t(got[r])] >= sorted[4]);
  }
  CHECK(got[0] == greedy(0));  // u = 0 draws the most likely token
}

TEST_CASE("the KV storage poison hook fills device memory") {
  auto& be = gpu();
  ModelConfig cfg;
  cfg.dim = 64;
  cfg.n_layers = 2;
  cfg.n_heads = 4;
  cfg.n_kv_heads = 2;
  cfg.head_dim = 16;
  cfg.max_seq_len = 64;
  detail::KvStorage<CudaBackend> st(be, cfg, 32);
  st.fill(-3.0f);
  auto v = st.view(1, 16);
  std::vector<float> host(32 * std::size_t(cfg.kv_dim()));
  be.download(host.data(), v.v, host.size());
  CHECK(std::all_of(host.begin(), host.end(), [](float x) { return x == -3.0f; }));
}

TEST_CASE("out of device memory is an eexit::error, not a crash") {
  auto& be = gpu();
  std::size_t f = 0, t = 0;
  be.mem_info(f, t);
  CHECK_THROWS_AS(be.allocate<float>(t), eexit::error);  // 4x the device's memory
}
