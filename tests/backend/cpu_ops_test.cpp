// Every CpuBackend op against PyTorch (tests/fixtures/cpu_ops.json, written by
// tools/make_ops_fixture.py from float64 references), and the batch invariance of matmul:
// a row's result is bitwise the same whatever rows and thread count it is computed with.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "../test_paths.hpp"
#include "eexit/backend/cpu.hpp"
#include "eexit/core/kv_view.hpp"
#include "eexit/model/config.hpp"
#include "eexit/model/llama.hpp"
#include "matmul_test_helpers.hpp"

using nlohmann::json;

namespace {

// Relative tolerance against the float64 reference, with an absolute floor for values
// near zero (where float32 cancellation makes relative error meaningless).
constexpr double rel_tol = 1e-5;
constexpr double abs_tol = 1e-6;

const json& fixture() {
  static const json j = [] {
    std::ifstream in(eexit::test::source("tests/fixtures/cpu_ops.json"));
    REQUIRE(in.good());
    return json::parse(in);
  }();
  return j;
}

std::vector<float> floats(const json& j) {
  return j.get<std::vector<float>>();
}

// Largest error seen per op, reported at the end of each test case.
struct ErrorStats {
  double max_rel = 0.0;  // |a-b| / |b| over elements with |b| > abs_tol / rel_tol
  double max_abs = 0.0;  // |a-b| over all elements
};

// Checks got ≈ want elementwise: |got - want| <= rel * |want| + abs.
void check_close(const std::vector<float>& got, const std::vector<float>& want,
                 const std::string& what, ErrorStats& st, double rel = rel_tol,
                 double abs = abs_tol) {
  REQUIRE(got.size() == want.size());
  std::size_t bad = 0, first_bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double a = got[i], b = want[i], d = std::fabs(a - b);
    st.max_abs = std::max(st.max_abs, d);
    if (std::fabs(b) > abs / rel) st.max_rel = std::max(st.max_rel, d / std::fabs(b));
    if (!(d <= rel * std::fabs(b) + abs)) {
      if (!bad) first_bad = i;
      ++bad;
    }
  }
  INFO(what << ": first mismatch at " << first_bad << ": got " << got[first_bad] << ", want "
            << want[first_bad]);
  CHECK(bad == 0);
}

void report(const std::string& op, const ErrorStats& st) {
  MESSAGE(op << ": max relative error " << st.max_rel << ", max absolute error " << st.max_abs);
}

// Float32 rounding in a dot product is relative to the terms summed, not to the sum: an
// output that cancels to near zero carries the error of its large terms. So the BLAS path
// is compared per element against scale = Σ_k |x_k·w_k| + |bias|: |a - b| <= rel_tol · scale.
double max_dot_error(const std::vector<float>& got, const std::vector<float>& want,
                     const std::vector<float>& x, const std::vector<float>& w, const float* bias,
                     std::size_t M, std::size_t N, std::size_t K) {
  double worst = 0.0;
  for (std::size_t m = 0; m < M; ++m)
    for (std::size_t n = 0; n < N; ++n) {
      double scale = bias ? std::fabs(double(bias[n])) : 0.0;
      for (std::size_t k = 0; k < K; ++k) scale += std::fabs(double(x[m * K + k]) * w[n * K + k]);
      const double d = std::fabs(double(got[m * N + n]) - want[m * N + n]);
      worst = std::max(worst, d / scale);
    }
  return worst;
}

using eexit::test::bitwise_equal;

// An f16 KV pool from fp32 values (the cache's rounding, eexit::f32_to_f16) and the exact
// fp32 widening of one.
std::vector<std::uint16_t> to_half(const std::vector<float>& x) {
  std::vector<std::uint16_t> h(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) h[i] = eexit::f32_to_f16(x[i]);
  return h;
}
std::vector<float> widen(const std::vector<std::uint16_t>& h) {
  std::vector<float> x(h.size());
  for (std::size_t i = 0; i < h.size(); ++i) x[i] = eexit::f16_to_f32(h[i]);
  return x;
}

// A cache layer's view over fp32 pools k, v, or (half) f16 pools k16, v16.
eexit::KvLayerView kv_view(bool half, std::vector<float>& k, std::vector<float>& v,
                           std::vector<std::uint16_t>& k16, std::vector<std::uint16_t>& v16,
                           std::int32_t block_size, std::size_t kv_dim) {
  if (half) return {nullptr, nullptr, block_size, std::int32_t(kv_dim), k16.data(), v16.data()};
  return {k.data(), v.data(), block_size, std::int32_t(kv_dim)};
}

}  // namespace

TEST_CASE("f32_to_f16 rounds as F16C's vcvtps2ph, and to_f16's vector part agrees") {
  // Every half widens and narrows back to itself (nan aside: a quiet nan).
  for (std::uint32_t h = 0; h < 0x10000u; ++h) {
    const float f = eexit::f16_to_f32(std::uint16_t(h));
    if (std::isnan(f))
      CHECK((eexit::f32_to_f16(f) & 0x7e00u) == 0x7e00u);
    else
      CHECK(eexit::f32_to_f16(f) == h);
  }
  // Ties, both ends of the subnormals, overflow, and random bit patterns of every exponent.
  std::vector<float> xs = {0.0f,
                           -0.0f,
                           65504.0f,
                           65519.99f,
                           65520.0f,
                           -65520.0f,
                           1e9f,
                           std::ldexp(1.0f, -14),
                           std::ldexp(1.0f, -24),
                           std::ldexp(1.0f, -25),
                           std::ldexp(1.5f, -25),
                           std::ldexp(1.0f, -26),
                           1.0f + std::ldexp(1.0f, -11),
                           1.0f + 3 * std::ldexp(1.0f, -11),
                           std::numeric_limits<float>::infinity(),
                           std::numeric_limits<float>::denorm_min()};
  std::mt19937 rng(5);
  for (int i = 0; i < 200000; ++i) {
    const std::uint32_t u = rng();
    float f;
    std::memcpy(&f, &u, 4);
    if (!std::isnan(f)) xs.push_back(f);
  }
  std::vector<eexit::detail::f16_t> vec(xs.size());
  eexit::detail::to_f16(xs.data(), vec.data(), xs.size());
  std::size_t bad_vec = 0, bad_hw = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const std::uint16_t want = eexit::f32_to_f16(xs[i]);
    bad_vec += vec[i].bits != want;
#if defined(__F16C__)
    bad_hw += _cvtss_sh(xs[i], 0) != want;  // the CPU's own conversion, round to nearest even
#endif
  }
  CHECK(bad_vec == 0);
  CHECK(bad_hw == 0);
#if !defined(__F16C__)
  MESSAGE("built without F16C: f32_to_f16 not compared with vcvtps2ph here");
#endif
}

TEST_CASE("matmul matches PyTorch, invariant and BLAS paths") {
  eexit::CpuBackend inv(2);
  eexit::CpuBackend blas(2, eexit::matmul_impl::blas);
  ErrorStats st_inv, st_blas, st_blas_vs_inv;
  for (const auto& c : fixture()["matmul"]) {
    const std::size_t m = c["rows"], k = c["in"], n = c["out"];
    const auto x = floats(c["x"]), w = floats(c["w"]), want = floats(c["y"]);
    const std::vector<float> bias = c.contains("bias") ? floats(c["bias"]) : std::vector<float>{};
    const float* b = bias.empty() ? nullptr : bias.data();
    CAPTURE(m);
    CAPTURE(k);
    CAPTURE(n);
    std::vector<float> y(m * n, std::numeric_limits<float>::quiet_NaN());
    inv.matmul(x.data(), m, k, w.data(), n, y.data(), b);
    check_close(y, want, "invariant", st_inv);
    std::vector<float> yb(m * n, std::numeric_limits<float>::quiet_NaN());
    blas.matmul(x.data(), m, k, w.data(), n, yb.data(), b);
    check_close(yb, want, "blas", st_blas);
    check_close(yb, y, "blas vs invariant", st_blas_vs_inv);
  }
  report("matmul (invariant)", st_inv);
  report("matmul (blas)", st_blas);
  report("matmul (blas vs invariant)", st_blas_vs_inv);
}

TEST_CASE("matmul is batch invariant: rows, slices and thread counts give identical bits") {
  std::mt19937 rng(1234);
  auto random = [&](std::size_t n) { return eexit::test::random(rng, n); };
  constexpr std::size_t M = 37;
  eexit::CpuBackend one(1), two(2), three(3);
  eexit::CpuBackend blas(2, eexit::matmul_impl::blas);
  double blas_err = 0.0;
  // (out, in): N not a multiple of 4, K not a multiple of 16, enough outputs to split over
  // threads (groups of 4 outputs, at least 16 groups a thread), and K large enough that
  // the kernel blocks over outputs (1000 floats a row: 64 outputs a block).
  const std::pair<std::size_t, std::size_t> shapes[] = {
      {5, 172}, {13, 172}, {64, 64}, {7, 16}, {3, 9}, {259, 172}, {150, 1000}, {512, 64}};
  for (const auto& [N, K] : shapes) {
    CAPTURE(N);
    CAPTURE(K);
    const auto x = random(M * K), w = random(N * K), bias = random(N);
    for (const float* b : {static_cast<const float*>(nullptr), bias.data()}) {
      CAPTURE(b != nullptr);
      std::vector<float> full(M * N);
      one.matmul(x.data(), M, K, w.data(), N, full.data(), b);
      // Thread counts.
      for (auto* be : {&two, &three}) {
        std::vector<float> y(M * N);
        be->matmul(x.data(), M, K, w.data(), N, y.data(), b);
        CHECK_MESSAGE(bitwise_equal(y.data(), full.data(), M * N), be->threads() << " threads");
      }
      // Each row alone.
      std::size_t single_bad = 0;
      for (std::size_t i = 0; i < M; ++i) {
        std::vector<float> y(N);
        two.matmul(x.data() + i * K, 1, K, w.data(), N, y.data(), b);
        single_bad += !bitwise_equal(y.data(), full.data() + i * N, N);
      }
      CHECK(single_bad == 0);
      // 5-row slices at offsets that put each row at every position of a 4-row tile.
      for (std::size_t off : {0u, 1u, 2u, 3u, 7u, 16u, 30u, 32u}) {
        CAPTURE(off);
        std::vector<float> y(5 * N);
        three.matmul(x.data() + off * K, 5, K, w.data(), N, y.data(), b);
        CHECK(bitwise_equal(y.data(), full.data() + off * N, 5 * N));
      }
      // BLAS: not bitwise, but the same values.
      std::vector<float> yb(M * N);
      blas.matmul(x.data(), M, K, w.data(), N, yb.data(), b);
      const double e = max_dot_error(yb, full, x, w, b, M, N, K);
      CHECK(e <= rel_tol);
      blas_err = std::max(blas_err, e);
    }
  }
  MESSAGE("matmul random (blas vs invariant): max |a-b| / sum|x*w| " << blas_err);
}

TEST_CASE("rmsnorm matches PyTorch") {
  eexit::CpuBackend be(1);
  ErrorStats st;
  for (const auto& c : fixture()["rmsnorm"]) {
    const std::size_t rows = c["rows"], dim = c["dim"];
    const auto x = floats(c["x"]), w = floats(c["w"]);
    std::vector<float> y(rows * dim);
    be.rmsnorm(x.data(), w.data(), y.data(), rows, dim, c["eps"].get<float>());
    check_close(y, floats(c["y"]), "rmsnorm dim " + std::to_string(dim), st);
  }
  report("rmsnorm", st);
}

TEST_CASE("rope matches PyTorch in both styles, with and without Llama 3 scaling") {
  eexit::CpuBackend be(1);
  ErrorStats st, st_freq;
  for (const auto& c : fixture()["rope"]) {
    const std::string style = c["style"];
    const std::size_t n_heads = c["n_heads"], hd = c["head_dim"];
    const auto positions = c["positions"].get<std::vector<std::int32_t>>();
    CAPTURE(style);
    CAPTURE(hd);
    // The frequencies come from the model's own code, from a config like the loaders make.
    eexit::ModelConfig cfg;
    cfg.head_dim = int(hd);
    cfg.rope_theta = c["rope_theta"].get<float>();
    cfg.rope = style == "half" ? eexit::rope_style::half : eexit::rope_style::interleaved;
    const bool scaled = c.contains("rope_scaling");
    CAPTURE(scaled);
    if (scaled) {
      const auto& s = c["rope_scaling"];
      cfg.rope_scaling.enabled = true;
      cfg.rope_scaling.factor = s["factor"];
      cfg.rope_scaling.low_freq_factor = s["low_freq_factor"];
      cfg.rope_scaling.high_freq_factor = s["high_freq_factor"];
      cfg.rope_scaling.original_max_position = s["original_max_position"];
    }
    const auto inv_freq = eexit::detail::rope_inv_freq(cfg);
    check_close(inv_freq, floats(c["inv_freq"]), "inv_freq", st_freq);

    std::vector<eexit::RowKv> rk;
    for (auto p : positions) rk.push_back(eexit::RowKv{nullptr, p});
    auto x = floats(c["x"]);
    REQUIRE(x.size() == positions.size() * n_heads * hd);
    be.rope(x.data(), positions.size(), n_heads, hd, rk.data(), inv_freq.data(), cfg.rope);
    check_close(x, floats(c["y"]), "rope " + style, st);
  }
  report("rope inv_freq", st_freq);
  report("rope", st);
}

namespace {
// Block tables over a pool of n_blocks blocks for sequences of the given lengths: blocks
// out of order and interleaved between the sequences, block 3 unused.
std::vector<std::vector<std::int32_t>> interleaved_tables(const json& seqs, std::int32_t bs,
                                                          std::int32_t& n_blocks) {
  std::vector<std::vector<std::int32_t>> t(seqs.size());
  std::int32_t need = 0;
  for (const auto& s : seqs) need += (s["len"].get<std::int32_t>() + bs - 1) / bs;
  n_blocks = need + 1;
  std::int32_t next = n_blocks - 1;
  for (bool more = true; more;) {
    more = false;
    for (std::size_t i = 0; i < seqs.size(); ++i)
      if (std::int32_t(t[i].size()) * bs < seqs[i]["len"].get<std::int32_t>()) {
        if (next == 3) --next;
        t[i].push_back(next--);
        more = true;
      }
  }
  return t;
}
}  // namespace

TEST_CASE("store_kv + attention over a paged KV cache match PyTorch causal GQA attention") {
  // head_dim 8 (the any-head_dim path) and 64 (registers, several blocks per context)
  for (const char* key : {"attention", "attention_hd64"}) {
    CAPTURE(key);
    const auto& c = fixture()[key];
    const std::size_t n_heads = c["n_heads"], n_kv = c["n_kv_heads"], hd = c["head_dim"];
    const std::size_t kv_dim = n_kv * hd;
    constexpr std::int32_t block_size = 4;
    const auto& seqs = c["seqs"];
    std::int32_t n_blocks = 8;
    // Blocks out of order and interleaved between the sequences; block 3 stays unused.
    const std::vector<std::vector<std::int32_t>> tables =
        std::string(key) == "attention" ? std::vector<std::vector<std::int32_t>>{{5, 2, 7}, {0, 6}}
                                        : interleaved_tables(seqs, block_size, n_blocks);
    REQUIRE(seqs.size() == tables.size());

    // Pools start as NaN: reading any slot that was not written poisons the result. An f16
    // cache (half) stores each element rounded once (f32_to_f16); its attention is held to
    // the f16 rounding of K/V (2^-11 relative) against the fp32 reference.
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const std::uint16_t nan16 = eexit::f32_to_f16(nan);
    std::vector<float> kpool(std::size_t(n_blocks * block_size) * kv_dim, nan);
    std::vector<float> vpool(kpool.size(), nan);
    std::vector<std::uint16_t> kpool16(kpool.size(), nan16), vpool16(kpool.size(), nan16);

    for (const bool half : {false, true})
      for (const unsigned be_threads : {1u, 2u}) {
        eexit::CpuBackend be(be_threads);
        CAPTURE(half);
        CAPTURE(be_threads);
        const eexit::KvLayerView view =
            kv_view(half, kpool, vpool, kpool16, vpool16, block_size, kv_dim);
        std::fill(kpool.begin(), kpool.end(), nan);
        std::fill(vpool.begin(), vpool.end(), nan);
        std::fill(kpool16.begin(), kpool16.end(), nan16);
        std::fill(vpool16.begin(), vpool16.end(), nan16);
        for (std::size_t s = 0; s < seqs.size(); ++s) {
          const std::int32_t len = seqs[s]["len"];
          REQUIRE(std::int32_t(tables[s].size()) * block_size >= len);
          const auto k = floats(seqs[s]["k"]), v = floats(seqs[s]["v"]);  // (len, n_kv, hd)
          std::vector<eexit::RowKv> rk;
          for (std::int32_t t = 0; t < len; ++t) rk.push_back(eexit::RowKv{tables[s].data(), t});
          be.store_kv(k.data(), v.data(), std::size_t(len), rk.data(), view);
          // Each token landed in slot block_table[t / bs] * bs + t % bs.
          const auto kh = to_half(k), vh = to_half(v);
          for (std::int32_t t = 0; t < len; ++t) {
            const std::size_t slot =
                std::size_t(tables[s][std::size_t(t / block_size)] * block_size + t % block_size);
            const std::size_t at = std::size_t(t) * kv_dim;
            if (half) {
              CHECK(std::equal(kh.begin() + long(at), kh.begin() + long(at + kv_dim),
                               kpool16.begin() + long(slot * kv_dim)));
              CHECK(std::equal(vh.begin() + long(at), vh.begin() + long(at + kv_dim),
                               vpool16.begin() + long(slot * kv_dim)));
            } else {
              CHECK(bitwise_equal(kpool.data() + slot * kv_dim, k.data() + at, kv_dim));
              CHECK(bitwise_equal(vpool.data() + slot * kv_dim, v.data() + at, kv_dim));
            }
          }
        }
        std::vector<eexit::RowKv> rows;
        for (const auto& r : c["rows"])
          rows.push_back(eexit::RowKv{tables[r["seq"].get<std::size_t>()].data(),
                                      r["pos"].get<std::int32_t>()});
        const auto q = floats(c["q"]);
        std::vector<float> out(rows.size() * n_heads * hd, nan);
        be.attention(q.data(), out.data(), rows.size(), n_heads, n_kv, hd, rows.data(), view);
        ErrorStats st;
        if (half)
          check_close(out, floats(c["out"]), "attention (f16 K/V)", st, 4e-3, 2e-3);
        else
          check_close(out, floats(c["out"]), "attention", st);
        report(std::string(key) + (half ? " (f16 K/V)" : ""), st);
      }
  }
}

TEST_CASE("attention is batch invariant: a row's bits alone, with its sequence, with others") {
  // Heads are taken 4 or 2 at a time depending on the rows, context and threads of the call
  // (one row at a long context on 2 threads: 2), and one at a time in memory for other head
  // sizes; a row's output must not depend on which.
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  constexpr std::int32_t block_size = 16;
  for (const std::size_t hd : {8u, 16u, 32u, 48u, 64u, 96u, 128u}) {
    const std::size_t n_heads = 12, n_kv = 4, kv_dim = n_kv * hd;
    CAPTURE(hd);
    // Sequence A: 300 positions in blocks 0..18 out of order; B: 9 positions in block 19.
    std::vector<std::int32_t> ta(19), tb{19};
    for (std::size_t b = 0; b < ta.size(); ++b) ta[b] = std::int32_t((b * 7) % 19);
    std::vector<float> kpool(std::size_t(20 * block_size) * kv_dim), vpool(kpool.size());
    for (auto& x : kpool) x = nd(rng);
    for (auto& x : vpool) x = nd(rng);
    auto kpool16 = to_half(kpool), vpool16 = to_half(vpool);
    std::vector<eexit::RowKv> rows;
    for (std::int32_t t = 280; t < 300; ++t) rows.push_back({ta.data(), t});  // a prefill chunk
    rows.push_back({tb.data(), 8});                                           // a decode row
    for (std::int32_t t = 30; t < 33; ++t) rows.push_back({ta.data(), t});    // a verify pass
    std::vector<float> q(rows.size() * n_heads * hd);
    for (auto& x : q) x = nd(rng);
    const std::size_t w = n_heads * hd;
    for (const bool half : {false, true})
      for (const unsigned threads : {1u, 2u}) {
        CAPTURE(half);
        CAPTURE(threads);
        const eexit::KvLayerView view =
            kv_view(half, kpool, vpool, kpool16, vpool16, block_size, kv_dim);
        eexit::CpuBackend be(threads);
        std::vector<float> all(q.size());
        be.attention(q.data(), all.data(), rows.size(), n_heads, n_kv, hd, rows.data(), view);
        std::size_t bad = 0;
        for (std::size_t r = 0; r < rows.size(); ++r) {  // each row alone
          std::vector<float> one(w);
          be.attention(q.data() + r * w, one.data(), 1, n_heads, n_kv, hd, &rows[r], view);
          bad += !bitwise_equal(one.data(), all.data() + r * w, w);
        }
        for (std::size_t r0 = 0; r0 + 3 <= rows.size(); r0 += 3) {  // three at a time
          std::vector<float> three(3 * w);
          be.attention(q.data() + r0 * w, three.data(), 3, n_heads, n_kv, hd, &rows[r0], view);
          bad += !bitwise_equal(three.data(), all.data() + r0 * w, 3 * w);
        }
        CHECK(bad == 0);
      }
  }
}

TEST_CASE("attention's bits are its definition's: dot() scores, softmax, p·v fused in order") {
  // The kernel scores 16 positions at a time (16 dot chains, one transposed horizontal sum)
  // and the rest one at a time; both must give dot()'s bits. The definition, one position
  // and head at a time: s = dot(q, k) * scale; e = the polynomial exp of max(s - max, -87);
  // p = e * (1 / sum e), the sum per lane t % 16 in position order, then over the lanes in
  // hsum16's order; o[i] = fma(p, v[i], o[i]) in position order (the vector path's
  // fused multiply-add). Contexts around multiples of 16, blocks of 4 and 16 (a tile spans
  // blocks of 4), every head size of the vector path, 1 and 2 threads (2 or 4 heads a task),
  // rows of one sequence next to each other (a prefill chunk's, taken together) and apart.
  // An f16 cache: the same definition on its elements widened to fp32 (exactly).
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const std::int32_t block_size : {4, 16}) {
    for (const std::size_t hd : {16u, 32u, 64u, 96u, 128u}) {
      const std::size_t n_heads = 8, n_kv = 2, kv_dim = n_kv * hd, group = n_heads / n_kv;
      CAPTURE(block_size);
      CAPTURE(hd);
      const std::int32_t n_blocks = 80 / block_size + 1;
      std::vector<std::int32_t> table(static_cast<std::size_t>(n_blocks)), other(table.size());
      for (std::size_t b = 0; b < table.size(); ++b) {
        table[b] = std::int32_t((b * 5 + 3) % table.size());
        other[b] = std::int32_t((b * 7 + 1) % table.size());
      }
      std::vector<float> kpool(std::size_t(n_blocks * block_size) * kv_dim), vpool(kpool.size());
      for (auto& x : kpool) x = nd(rng);
      for (auto& x : vpool) x = nd(rng);
      auto kpool16 = to_half(kpool), vpool16 = to_half(vpool);
      const auto kwide = widen(kpool16), vwide = widen(vpool16);
      const eexit::KvLayerView view =
          kv_view(false, kpool, vpool, kpool16, vpool16, block_size, kv_dim);
      const eexit::KvLayerView view16 =
          kv_view(true, kpool, vpool, kpool16, vpool16, block_size, kv_dim);
      // Rows of one sequence next to each other are taken up to 4 at a time (attend_rows:
      // tiles and positions they share, then each row's own); other rows one at a time.
      std::vector<eexit::RowKv> rows;
      for (const std::int32_t pos : {0, 7, 14, 15, 16, 17, 31, 32, 33, 47, 63, 64, 79})
        rows.push_back({table.data(), pos});
      for (const std::int32_t pos : {40, 41, 42, 43, 44}) rows.push_back({other.data(), pos});
      rows.push_back({table.data(), 50});
      rows.push_back({other.data(), 5});
      for (const std::int32_t pos : {78, 79}) rows.push_back({table.data(), pos});
      const std::size_t w = n_heads * hd;
      std::vector<float> q(rows.size() * w);
      for (auto& x : q) x = nd(rng);
      const float scale = 1.0f / std::sqrt(float(hd));
      // The definition over fp32 pools kp, vp.
      auto definition = [&](const std::vector<float>& kp, const std::vector<float>& vp) {
        std::vector<float> want(q.size());
        for (std::size_t r = 0; r < rows.size(); ++r) {
          const std::size_t n_ctx = std::size_t(rows[r].pos) + 1;
          for (std::size_t h = 0; h < n_heads; ++h) {
            std::vector<float> s(n_ctx);
            float mx = -std::numeric_limits<float>::infinity();
            for (std::size_t t = 0; t < n_ctx; ++t) {
              const std::size_t slot = std::size_t(view.slot(rows[r], std::int32_t(t)));
              s[t] = eexit::detail::dot(q.data() + r * w + h * hd,
                                        kp.data() + slot * kv_dim + h / group * hd, hd) *
                     scale;
              mx = std::max(mx, s[t]);
            }
            // e = exp_nonpos16(clamp_exp16(s - mx)) lane-wise; lane t % 16 sums e in position
            // order, the lanes in hsum16's order.
            float lanes[16] = {};
            for (std::size_t t = 0; t < n_ctx; ++t) {
              const eexit::detail::vf16 e = eexit::detail::exp_nonpos16(
                  eexit::detail::clamp_exp16(eexit::detail::vf16{} + (s[t] - mx)));
              s[t] = e[0];
              lanes[t % 16] += s[t];
            }
            eexit::detail::vf16 lv;
            std::memcpy(&lv, lanes, sizeof lv);
            const float inv = 1.0f / eexit::detail::hsum16(lv);
            float* o = want.data() + r * w + h * hd;
            for (std::size_t i = 0; i < hd; ++i) o[i] = 0.0f;
            for (std::size_t t = 0; t < n_ctx; ++t) {
              const std::size_t slot = std::size_t(view.slot(rows[r], std::int32_t(t)));
              const float p = s[t] * inv;
              const float* v = vp.data() + slot * kv_dim + h / group * hd;
              for (std::size_t i = 0; i < hd; ++i) o[i] = std::fma(p, v[i], o[i]);
            }
          }
        }
        return want;
      };
      const auto want32 = definition(kpool, vpool), want16 = definition(kwide, vwide);
      for (const bool half : {false, true})
        for (const unsigned threads : {1u, 2u}) {
          CAPTURE(half);
          CAPTURE(threads);
          eexit::CpuBackend be(threads);
          std::vector<float> got(q.size());
          be.attention(q.data(), got.data(), rows.size(), n_heads, n_kv, hd, rows.data(),
                       half ? view16 : view);
          const auto& want = half ? want16 : want32;
          std::size_t bad = 0;
          for (std::size_t r = 0; r < rows.size(); ++r)
            bad += !bitwise_equal(got.data() + r * w, want.data() + r * w, w);
          CHECK(bad == 0);
        }
    }
  }
}

TEST_CASE("fill_kv stores what rope + store_kv store, in an fp32 and an f16 cache") {
  // The KV fill rotates each skipped layer's K at the row's position and stores K and V as
  // the forward does (store_kv), so a filled slot holds the forward's bits for the same K/V;
  // in an f16 cache, rounded once after the rotation.
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const std::size_t n_kv = 2, hd = 32, kvd = n_kv * hd, rows = 3, n_fill = 2;
  constexpr std::int32_t block_size = 4, n_blocks = 6;
  eexit::ModelConfig cfg;
  cfg.head_dim = int(hd);
  cfg.rope = eexit::rope_style::half;
  const auto inv_freq = eexit::detail::rope_inv_freq(cfg);
  const std::vector<std::int32_t> table{4, 1, 5, 0, 2, 3};
  const std::vector<eexit::RowKv> rk{{table.data(), 2}, {table.data(), 9}, {table.data(), 22}};
  std::vector<float> kv(rows * n_fill * 2 * kvd);  // (rows, n_fill, 2, kv_dim), K not rotated
  for (auto& x : kv) x = nd(rng);
  const std::size_t pool = std::size_t(n_blocks * block_size) * kvd;
  for (const bool half : {false, true}) {
    CAPTURE(half);
    eexit::CpuBackend be(1);
    // Layers 0, 1 filled (got) and layers 2, 3 written by rope + store_kv (want).
    std::vector<std::vector<float>> k32(4, std::vector<float>(pool)), v32 = k32;
    std::vector<std::vector<std::uint16_t>> k16(4, std::vector<std::uint16_t>(pool)), v16 = k16;
    auto view = [&](std::size_t i) {
      return kv_view(half, k32[i], v32[i], k16[i], v16[i], block_size, kvd);
    };
    const eexit::KvLayerView got[2] = {view(0), view(1)};
    be.fill_kv(kv.data(), rows, n_fill, rk.data(), got, n_kv, hd, inv_freq.data(), cfg.rope);
    for (std::size_t f = 0; f < n_fill; ++f) {
      std::vector<float> k(rows * kvd), v(rows * kvd);
      for (std::size_t r = 0; r < rows; ++r) {
        const float* src = kv.data() + (r * n_fill + f) * 2 * kvd;
        std::copy_n(src, kvd, k.data() + r * kvd);
        std::copy_n(src + kvd, kvd, v.data() + r * kvd);
      }
      be.rope(k.data(), rows, n_kv, hd, rk.data(), inv_freq.data(), cfg.rope);
      be.store_kv(k.data(), v.data(), rows, rk.data(), view(2 + f));
    }
    std::size_t written = 0;  // each row's slot in each filled layer, K and V
    for (std::size_t f = 0; f < n_fill; ++f) {
      if (half) {
        CHECK(k16[f] == k16[2 + f]);
        CHECK(v16[f] == v16[2 + f]);
      } else {
        CHECK(bitwise_equal(k32[f].data(), k32[2 + f].data(), pool));
        CHECK(bitwise_equal(v32[f].data(), v32[2 + f].data(), pool));
      }
      for (std::size_t i = 0; i < pool; ++i)
        written +=
            half ? (k16[f][i] != 0) + (v16[f][i] != 0) : (k32[f][i] != 0.0f) + (v32[f][i] != 0.0f);
    }
    CHECK(written >= rows * n_fill * 2 * kvd - 8);
  }
}

TEST_CASE("swiglu, add and embed match PyTorch") {
  eexit::CpuBackend be(1);
  const auto& f = fixture();
  {
    const auto gate = floats(f["swiglu"]["gate"]), up = floats(f["swiglu"]["up"]);
    std::vector<float> out(gate.size());
    be.swiglu(gate.data(), up.data(), out.data(), out.size());
    ErrorStats st;
    check_close(out, floats(f["swiglu"]["out"]), "swiglu", st);
    report("swiglu", st);
    // In place, as the model calls it (out aliases gate).
    auto g = gate;
    be.swiglu(g.data(), up.data(), g.data(), g.size());
    CHECK(bitwise_equal(g.data(), out.data(), out.size()));
  }
  {
    auto x = floats(f["add"]["x"]);
    const auto y = floats(f["add"]["y"]);
    be.add(x.data(), y.data(), x.size());
    ErrorStats st;
    check_close(x, floats(f["add"]["out"]), "add", st);
    CHECK(st.max_abs == 0.0);  // one correctly rounded float add: exact
    report("add", st);
  }
  {
    const std::size_t dim = f["embed"]["dim"];
    const auto table = floats(f["embed"]["table"]);
    const auto tokens = f["embed"]["tokens"].get<std::vector<std::int32_t>>();
    std::vector<float> out(tokens.size() * dim);
    be.embed(tokens.data(), tokens.size(), table.data(), dim, out.data());
    const auto want = floats(f["embed"]["out"]);
    CHECK(bitwise_equal(out.data(), want.data(), want.size()));
  }
}

// The fused projections against the ops they fuse, run one by one on the same backend:
// the same bits for every weight precision the fused path takes (f32, bf16, f16), for the
// precisions and the BLAS path that fall back to the sequence (Q8_0), at row counts of
// decode (1, 2), of small batches (5, 16) and of prefill (53, past the streaming limit of
// the kernel), on one to three threads, and batch invariant (a row alone = the row in the
// batch). h is also the gate output, as the model passes it.
TEST_CASE("matmul_qkv, matmul_swiglu and matmul_add equal matmul, swiglu and add bitwise") {
  std::mt19937 rng(99);
  auto random = [&](std::size_t n) { return eexit::test::random(rng, n); };
  constexpr std::size_t in = 192, hidden = 264, out = 200;  // 264 and 200: partial tile groups
  eexit::CpuBackend one(1), two(2), three(3), blas(2, eexit::matmul_impl::blas);
  for (const eexit::dtype t :
       {eexit::dtype::f32, eexit::dtype::bf16, eexit::dtype::f16, eexit::dtype::q8_0}) {
    CAPTURE(eexit::dtype_name(t));
    const eexit::Weight wg = eexit::Weight(random(hidden * in)).converted(t),
                        wu = eexit::Weight(random(hidden * in)).converted(t),
                        wd = eexit::Weight(random(out * hidden)).converted(t);
    const eexit::WeightView g(t, wg.bytes()), up_w(t, wu.bytes()), d(t, wd.bytes());
    // Q/K/V: kv_out 36, so slices of q | k | v start inside a tile group of each matrix.
    constexpr std::size_t kv_out = 36;
    const eexit::Weight wk = eexit::Weight(random(kv_out * in)).converted(t),
                        wv = eexit::Weight(random(kv_out * in)).converted(t);
    const eexit::WeightView kw(t, wk.bytes()), vw(t, wv.bytes());
    // W_q (out, in): the first `out` rows of W_gate.
    const eexit::test::FusedWeights w{in, hidden, out, kv_out, g, kw, vw, g, up_w, d};
    const auto bq = random(out), bk = random(kv_out);
    for (const std::size_t rows : {1u, 2u, 5u, 16u, 53u}) {
      CAPTURE(rows);
      const auto x = random(rows * in), h_in = random(rows * hidden), resid = random(rows * out);
      for (auto* be : {&one, &two, &three, &blas}) {
        CAPTURE(be->threads());
        CAPTURE(be == &blas);
        const auto [h, xr] =
            eexit::test::check_fused(*be, w, rows, x, h_in, resid, bq.data(), bk.data());
        // Batch invariance of the fused ops: the last row alone.
        const std::size_t r = rows - 1;
        std::vector<float> h1(hidden), up1(hidden), y1(out),
            x1(resid.begin() + long(r * out), resid.end());
        be->matmul_swiglu(x.data() + r * in, 1, in, g, up_w, hidden, h1.data(), up1.data());
        be->matmul_add(h_in.data() + r * hidden, 1, hidden, d, out, y1.data(), x1.data());
        if (be != &blas || t != eexit::dtype::f32) {  // OpenBLAS sgemm is not batch invariant
          CHECK(bitwise_equal(h1.data(), h.data() + r * hidden, hidden));
          CHECK(bitwise_equal(x1.data(), xr.data() + r * out, out));
        }
      }
    }
  }
}
