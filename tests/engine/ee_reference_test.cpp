// Early exit against an independent PyTorch reference (tools/ee_reference.py, float64) on
// the embedded model: tokens and exit layers at batch 1, and the K/V that the fill wrote.
#include <doctest/doctest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "../test_paths.hpp"
#include "eexit/eexit.hpp"

using namespace eexit;
using json = nlohmann::json;

namespace {

const json& fixture() {
  static const json j = [] {
    std::ifstream f(test::source("tests/fixtures/ee_reference.json"));
    REQUIRE(f.good());
    return json::parse(f);
  }();
  return j;
}

struct Embedded {
  CpuBackend be{2};
  LlamaModel<CpuBackend> model{be, load_model(test::source(fixture()["model"].get<std::string>()))};
};
Embedded& embedded() {
  static Embedded e;
  return e;
}

using Cache = PagedCache<CpuBackend, 16>;

AllConfident policy_of(const json& run) {
  AllConfident p;
  p.measure = AnyMeasure::from_name(run["measure"].get<std::string>());
  p.thresholds.values = run["thresholds"].get<std::vector<float>>();
  return p;
}

GenerateRequest request_of(const json& run, int extra_tokens = 0) {
  GenerateRequest r;
  r.prompt = fixture()["prompts"][run["prompt"].get<std::size_t>()]["ids"]
                 .get<std::vector<std::int32_t>>();
  r.max_tokens = run["max_new_tokens"].get<int>() + extra_tokens;
  r.ignore_eos = true;
  return r;
}

}  // namespace

TEST_CASE("the embedded model's config carries the exit points the reference used") {
  const auto& cfg = embedded().model.config();
  CHECK(cfg.n_layers == fixture()["n_layers"].get<int>());
  CHECK(cfg.early_exit.exit_layers == fixture()["exit_layers"].get<std::vector<int>>());
  CHECK(cfg.bos_id == fixture()["bos_id"].get<int>());
}

TEST_CASE("AllConfident at batch 1 gives the PyTorch reference's tokens and exit layers") {
  auto& e = embedded();
  int early_exits = 0;
  for (const auto& run : fixture()["runs"]) {
    CAPTURE(run["prompt"].get<int>());
    CAPTURE(run["measure"].get<std::string>());
    CAPTURE(run["thresholds"].dump());
    Cache cache(e.be, e.model.config(), 32);
    Engine<AllConfident, Cache> engine(e.model, cache, policy_of(run));
    engine.add_request(request_of(run));
    auto out = engine.run_to_completion();
    REQUIRE(out.size() == 1);
    CHECK(out[0].tokens == run["tokens"].get<std::vector<std::int32_t>>());
    CHECK(out[0].exit_layers == run["exit_layers"].get<std::vector<std::int32_t>>());
    for (auto l : out[0].exit_layers) early_exits += l < e.model.config().n_layers - 1;
  }
  CHECK(early_exits > 20);  // the runs really exercise early exits and fills
}

TEST_CASE("the KV fill writes the PyTorch projection of the exit hidden state") {
  auto& e = embedded();
  const auto& fx = fixture()["kv_fill"];
  const auto& run = fixture()["runs"][fx["run"].get<std::size_t>()];
  const auto& cfg = e.model.config();
  Cache cache(e.be, cfg, 32);
  cache.fill(std::nanf(""));
  Engine<AllConfident, Cache> engine(e.model, cache, policy_of(run));
  // Keep the request alive past the step of interest so its cache slots can be read.
  const auto id = engine.add_request(request_of(run, 8));
  const std::size_t step = fx["step"].get<std::size_t>();
  std::vector<std::int32_t> exits;
  while (exits.size() <= step + 1)
    for (auto& o : engine.step())
      for (auto& t : o.tokens) exits.push_back(t.exit_layer);
  REQUIRE(exits[step] == fx["exit_layer"].get<int>());
  const std::int32_t pos = fx["position"].get<std::int32_t>();
  const std::size_t kvd = std::size_t(cfg.kv_dim());
  int layers = 0;
  for (const auto& L : fx["layers"]) {
    const int j = L["layer"].get<int>();
    CAPTURE(j);
    REQUIRE(j > fx["exit_layer"].get<int>());
    const auto v = cache.view(j);
    const std::size_t slot = v.slot(RowKv{cache.block_table(id), pos}, pos);
    const auto k_ref = L["k"].get<std::vector<double>>();
    const auto v_ref = L["v"].get<std::vector<double>>();
    REQUIRE(k_ref.size() == kvd);
    double kmax = 0, vmax = 0, kerr = 0, verr = 0;
    for (std::size_t d = 0; d < kvd; ++d) {
      kmax = std::max(kmax, std::abs(k_ref[d]));
      vmax = std::max(vmax, std::abs(v_ref[d]));
      kerr = std::max(kerr, std::abs(double(v.k[slot * kvd + d]) - k_ref[d]));
      verr = std::max(verr, std::abs(double(v.v[slot * kvd + d]) - v_ref[d]));
    }
    CHECK(kerr / kmax < 1e-4);  // max |error| relative to the largest element
    CHECK(verr / vmax < 1e-4);
    ++layers;
  }
  CHECK(layers == cfg.n_layers - 1 - fx["exit_layer"].get<int>());
}
