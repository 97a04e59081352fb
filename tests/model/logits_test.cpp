// End-to-end logits of LlamaModel<CpuBackend> over a paged KV cache against an independent
// float64 PyTorch forward (tests/fixtures/stories260K_logits.json, written by
// tools/make_reference_fixture.py): one prefill chunk, then single-token decode steps.
// The HF conversion of the same model (rotate_half RoPE, permuted Q/K; made by the ctest
// fixture in tests/model/tests.cmake) must give the same logits as the .bin.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../test_paths.hpp"
#include "eexit/backend/cpu.hpp"
#include "eexit/cache/paged.hpp"
#include "eexit/model/llama.hpp"
#include "eexit/model/load.hpp"

using nlohmann::json;

namespace {

const json& reference() {
  static const json j = [] {
    std::ifstream in(eexit::test::source("tests/fixtures/stories260K_logits.json"));
    REQUIRE(in.good());
    return json::parse(in);
  }();
  return j;
}

// Error of a logits vector: max_i |got_i - want_i| / max_i |want_i|.
double rel_error(const std::vector<float>& got, const std::vector<float>& want) {
  REQUIRE(got.size() == want.size());
  double diff = 0.0, scale = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    diff = std::max(diff, std::fabs(double(got[i]) - double(want[i])));
    scale = std::max(scale, std::fabs(double(want[i])));
  }
  return diff / scale;
}

std::size_t argmax(const std::vector<float>& v) {
  return std::size_t(std::max_element(v.begin(), v.end()) - v.begin());
}

// Logits at the last fed position of every step of the fixture, computed the way the
// engine's step does: embed, every layer over the cache, final exit head on the last row.
std::vector<std::vector<float>> run_steps(const std::string& model_path) {
  eexit::CpuBackend be(2);
  eexit::LlamaModel<eexit::CpuBackend> model(be, eexit::load_model(model_path));
  const auto& c = model.config();
  const std::size_t dim = std::size_t(c.dim), vocab = std::size_t(c.vocab_size);
  eexit::PagedCache<eexit::CpuBackend, 16> cache(be, c, 4);
  cache.fill(std::numeric_limits<float>::quiet_NaN());  // unwritten slots must not be read
  constexpr eexit::PagedCache<eexit::CpuBackend, 16>::seq_id seq = 7;

  std::vector<std::vector<float>> out;
  std::size_t max_rows = 0;
  for (const auto& s : reference()["steps"]) max_rows = std::max(max_rows, s["tokens"].size());
  auto ws = model.make_workspace(max_rows);
  std::vector<float> x(max_rows * dim);  // (rows, dim) residual stream
  std::vector<float> logits(vocab);
  for (const auto& s : reference()["steps"]) {
    const auto tokens = s["tokens"].get<std::vector<std::int32_t>>();
    const auto positions = s["positions"].get<std::vector<std::int32_t>>();
    const std::size_t rows = tokens.size();
    REQUIRE(positions.front() == cache.length(seq));
    REQUIRE(cache.reserve(seq, std::int32_t(rows)));
    const std::int32_t* bt = cache.block_table(seq);  // after reserve: it may have moved
    std::vector<eexit::RowKv> rk;
    for (auto p : positions) rk.push_back(eexit::RowKv{bt, p});
    model.embed(tokens.data(), rows, x.data());
    for (int l = 0; l < model.n_layers(); ++l)
      model.forward_layer(l, x.data(), rows, rk.data(), cache.view(l), ws);
    model.exit_logits(model.n_exits() - 1, x.data() + (rows - 1) * dim, 1, logits.data(), ws);
    out.push_back(logits);
  }
  return out;
}

}  // namespace

TEST_CASE("stories260K.bin logits match the PyTorch reference: prefill, then decode steps") {
  const auto& ref = reference();
  const auto got = run_steps(eexit::test::shared(ref["model"].get<std::string>()));
  REQUIRE(got.size() == ref["steps"].size());
  double worst = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const auto& s = ref["steps"][i];
    CAPTURE(i);
    const auto want = s["logits"].get<std::vector<float>>();
    REQUIRE(want.size() == ref["vocab_size"].get<std::size_t>());
    const double e = rel_error(got[i], want);
    CHECK(e <= 1e-4);
    CHECK(argmax(got[i]) == s["argmax"].get<std::size_t>());
    worst = std::max(worst, e);
  }
  MESSAGE("logits vs PyTorch: max over steps of max|a-b| / max|b| = " << worst);
}

TEST_CASE("the HF f32 conversion of stories260K gives the same logits as the .bin") {
  const char* root = std::getenv("EEXIT_HF_FIXTURE_DIR");
  if (!root) {
    MESSAGE("EEXIT_HF_FIXTURE_DIR not set (run through ctest): skipped");
    return;
  }
  const std::string dir = std::string(root) + "/stories260K_f32";
  REQUIRE(eexit::load_model(dir).config.rope == eexit::rope_style::half);
  const auto bin = run_steps(eexit::test::shared("models/stories260K/stories260K.bin"));
  const auto hf = run_steps(dir);
  REQUIRE(hf.size() == bin.size());
  double worst = 0.0;
  for (std::size_t i = 0; i < hf.size(); ++i) {
    CAPTURE(i);
    const double e = rel_error(hf[i], bin[i]);
    CHECK(e <= 1e-5);
    CHECK(argmax(hf[i]) == argmax(bin[i]));
    worst = std::max(worst, e);
  }
  MESSAGE("HF f32 vs .bin logits: max over steps of max|a-b| / max|b| = " << worst);
}

TEST_CASE("stories260K.gguf gives the .bin's logits (within 1e-5) and matches PyTorch") {
  const std::string gguf = eexit::test::shared("models/stories260K/stories260K.gguf");
  REQUIRE(eexit::load_model(gguf).config.rope == eexit::rope_style::interleaved);
  const auto bin = run_steps(eexit::test::shared("models/stories260K/stories260K.bin"));
  const auto gg = run_steps(gguf);
  REQUIRE(gg.size() == bin.size());
  const auto& ref = reference();
  double worst = 0.0;
  for (std::size_t i = 0; i < gg.size(); ++i) {
    CAPTURE(i);
    double diff = 0.0;
    for (std::size_t k = 0; k < gg[i].size(); ++k)
      diff = std::max(diff, std::fabs(double(gg[i][k]) - double(bin[i][k])));
    CHECK(diff <= 1e-5);
    CHECK(rel_error(gg[i], ref["steps"][i]["logits"].get<std::vector<float>>()) <= 1e-4);
    worst = std::max(worst, diff);
  }
  MESSAGE("GGUF vs .bin logits: max over steps of max|a-b| = " << worst);
}
