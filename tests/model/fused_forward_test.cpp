// LlamaModel::forward_layer with the fused projections (matmul_add, matmul_swiglu; the
// default) against the unfused op sequence (set_fused(false)) on the embedded model:
// the residual stream after every layer and the final logits are the same bits, with f32
// and bf16 weights, over prefill chunks and a batched decode step; and the fused decode
// step is batch invariant (each row alone gives the bits it got in the batch).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "../test_paths.hpp"
#include "eexit/backend/cpu.hpp"
#include "eexit/cache/paged.hpp"
#include "eexit/model/llama.hpp"
#include "eexit/model/load.hpp"

using namespace eexit;

namespace {

using Cache = PagedCache<CpuBackend, 16>;

// Everything a run computed: the residual stream after each layer of each step, and the
// final logits of each step's rows, concatenated.
struct Trace {
  std::vector<float> x, logits;
};

// Three sequences' prompts (one chunk each, 5 / 9 / 17 tokens), then one decode step of
// the three rows together, then (batch invariance) the same decode rows one at a time.
// alone: the residual streams of that last part (row by row, layer by layer).
Trace run(LlamaModel<CpuBackend>& model, CpuBackend& be, bool fused, std::vector<float>& alone) {
  model.set_fused(fused);
  const auto& c = model.config();
  const std::size_t dim = std::size_t(c.dim), vocab = std::size_t(c.vocab_size);
  Cache cache(be, c, 8);
  cache.fill(std::numeric_limits<float>::quiet_NaN());  // unwritten slots must not be read
  auto ws = model.make_workspace(17);
  std::vector<float> x(17 * dim), logits(17 * vocab);
  Trace t;
  auto step = [&](const std::vector<std::int32_t>& tokens, const std::vector<RowKv>& rk,
                  std::vector<float>& into) {
    const std::size_t rows = tokens.size();
    model.embed(tokens.data(), rows, x.data());
    for (int l = 0; l < model.n_layers(); ++l) {
      model.forward_layer(l, x.data(), rows, rk.data(), cache.view(l), ws);
      into.insert(into.end(), x.begin(), x.begin() + long(rows * dim));
    }
    model.exit_logits(model.n_exits() - 1, x.data(), rows, logits.data(), ws);
    t.logits.insert(t.logits.end(), logits.begin(), logits.begin() + long(rows * vocab));
  };
  const std::int32_t lens[] = {5, 9, 17};
  for (Cache::seq_id s = 0; s < 3; ++s) {
    const std::int32_t n = lens[s];
    REQUIRE(cache.reserve(s, n));
    std::vector<std::int32_t> tokens;
    std::vector<RowKv> rk;
    for (std::int32_t p = 0; p < n; ++p) {
      tokens.push_back(std::int32_t((37 * p + 11 * s + 3) % c.vocab_size));
      rk.push_back({cache.block_table(s), p});
    }
    step(tokens, rk, t.x);
  }
  std::vector<std::int32_t> tokens;
  std::vector<RowKv> rk;
  for (Cache::seq_id s = 0; s < 3; ++s) {
    REQUIRE(cache.reserve(s, 1));
    tokens.push_back(std::int32_t(100 + s));
    rk.push_back({cache.block_table(s), lens[s]});
  }
  step(tokens, rk, t.x);
  // Each decode row again, alone: it rewrites its own K/V slot with what it wrote before.
  alone.clear();
  for (std::size_t r = 0; r < 3; ++r) {
    std::vector<float> xs;
    step({tokens[r]}, {rk[r]}, xs);
    alone.insert(alone.end(), xs.begin(), xs.end());
  }
  return t;
}

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("the fused forward gives the unfused forward's bits, and is batch invariant") {
  for (const dtype t : {dtype::f32, dtype::bf16}) {
    CAPTURE(dtype_name(t));
    ModelWeights w = load_model(test::source("models/eexit-shakespeare"));
    w.convert(t);
    CpuBackend be(2);
    LlamaModel<CpuBackend> model(be, std::move(w));
    CHECK(model.fused());  // the default
    const std::size_t dim = std::size_t(model.config().dim);
    const int L = model.n_layers();
    std::vector<float> alone_f, alone_u;
    const Trace f = run(model, be, true, alone_f);
    const Trace u = run(model, be, false, alone_u);
    REQUIRE(f.x.size() == std::size_t(L) * (5 + 9 + 17 + 3) * dim);
    CHECK(bitwise_equal(f.x, u.x));
    CHECK(bitwise_equal(f.logits, u.logits));
    // The batched decode step's rows: the last 3 · L · dim floats of x are its layers.
    REQUIRE(alone_f.size() == 3 * std::size_t(L) * dim);
    const float* batched = f.x.data() + f.x.size() - 3 * std::size_t(L) * dim;
    std::size_t bad = 0;
    for (std::size_t r = 0; r < 3; ++r)
      for (int l = 0; l < L; ++l)
        bad += std::memcmp(alone_f.data() + (r * std::size_t(L) + std::size_t(l)) * dim,
                           batched + (std::size_t(l) * 3 + r) * dim, dim * sizeof(float)) != 0;
    CHECK(bad == 0);
    CHECK(bitwise_equal(alone_f, alone_u));
    // The logits are real values (the NaN-poisoned cache was never read).
    for (float v : f.logits) REQUIRE(std::isfinite(v));
  }
}
