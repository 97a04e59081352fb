// The same engine on the GPU: stories260K greedy tokens identical to the CPU's, and
// early-exit tokens and exit layers identical to the CPU's in fp32 (AllConfident and
// SplitAtExit, several measures and thresholds, a batch of 8 with varied prompts), with a
// poisoned cache (NaN) so that an unwritten KV slot would show. Label gpu.
#include <doctest/doctest.h>

#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "../test_paths.hpp"
#include "eexit/backend/cuda.hpp"
#include "eexit/eexit.hpp"

using namespace eexit;

namespace {

ModelWeights stories_weights(bool exits) {
  auto w = load_model(test::shared("models/stories260K/stories260K.bin"));
  if (exits) w.config.early_exit.exit_layers = {1, 3};
  return w;
}

std::vector<GenerateRequest> requests(int n) {
  std::vector<GenerateRequest> rs;
  for (int i = 0; i < n; ++i) {
    GenerateRequest r;
    r.prompt = {1};
    for (int j = 0; j < 2 + 3 * i; ++j) r.prompt.push_back(259 + (i * 41 + j * 13) % 250);
    r.max_tokens = 24 + 2 * i;
    r.ignore_eos = true;
    rs.push_back(r);
  }
  return rs;
}

struct Out {
  std::vector<std::vector<std::int32_t>> tokens, exits;
};

template <class Be, class P>
Out run(Be& be, LlamaModel<Be>& model, P policy, const std::vector<GenerateRequest>& rs) {
  using Cache = PagedCache<Be, 16>;
  Cache cache(be, model.config(), 128);
  cache.fill(NAN);
  Engine<P, Cache> engine(model, cache, policy);
  for (auto& r : rs) engine.add_request(r);
  Out o;
  for (auto& c : engine.run_to_completion()) {
    o.tokens.push_back(c.tokens);
    o.exits.push_back(c.exit_layers);
  }
  CHECK(cache.blocks_used() == 0);
  return o;
}

template <class P>
P with(float threshold, std::string_view measure) {
  P p;
  p.measure = AnyMeasure::from_name(measure);
  p.thresholds.values = {threshold};
  return p;
}

// Prints the first difference, for the check script's log.
void report(const char* what, const Out& gpu, const Out& cpu) {
  const bool same = gpu.tokens == cpu.tokens && gpu.exits == cpu.exits;
  std::printf("ENGINE %-40s %s\n", what, same ? "identical" : "DIFFERENT");
  for (std::size_t i = 0; !same && i < cpu.tokens.size() && i < gpu.tokens.size(); ++i)
    for (std::size_t k = 0; k < cpu.tokens[i].size() && k < gpu.tokens[i].size(); ++k)
      if (cpu.tokens[i][k] != gpu.tokens[i][k] || cpu.exits[i][k] != gpu.exits[i][k]) {
        std::printf("  request %zu token %zu: cpu %d@%d gpu %d@%d\n", i, k, cpu.tokens[i][k],
                    cpu.exits[i][k], gpu.tokens[i][k], gpu.exits[i][k]);
        break;
      }
  std::fflush(stdout);
}

}  // namespace

TEST_CASE("stories260K greedy on the GPU equals the CPU token for token") {
  CpuBackend cb(2);
  CudaBackend gb;
  LlamaModel<CpuBackend> cm(cb, stories_weights(false));
  LlamaModel<CudaBackend> gm(gb, stories_weights(false));
  const auto rs = requests(8);
  const auto cpu = run(cb, cm, FullDepth{}, rs);
  const auto gpu = run(gb, gm, FullDepth{}, rs);
  report("stories260K greedy, 8 requests", gpu, cpu);
  CHECK(gpu.tokens == cpu.tokens);
}

TEST_CASE("early exit on the GPU: tokens and exit layers equal the CPU's in fp32") {
  CpuBackend cb(2);
  CudaBackend gb;
  LlamaModel<CpuBackend> cm(cb, stories_weights(true));
  LlamaModel<CudaBackend> gm(gb, stories_weights(true));
  const auto rs = requests(8);
  for (std::string measure : {"max-prob", "margin", "entropy", "cosine"}) {
    for (float t : {0.3f, 0.6f}) {
      const float thr = measure == "entropy" ? -2.0f * t : measure == "cosine" ? 0.9f + t / 10 : t;
      CAPTURE(measure);
      CAPTURE(thr);
      const auto c_all = run(cb, cm, with<AllConfident>(thr, measure), rs);
      const auto g_all = run(gb, gm, with<AllConfident>(thr, measure), rs);
      const auto c_split = run(cb, cm, with<SplitAtExit>(thr, measure), rs);
      const auto g_split = run(gb, gm, with<SplitAtExit>(thr, measure), rs);
      const std::string a = "AllConfident " + measure + " " + std::to_string(thr);
      const std::string s = "SplitAtExit " + measure + " " + std::to_string(thr);
      report(a.c_str(), g_all, c_all);
      report(s.c_str(), g_split, c_split);
      CHECK(g_all.tokens == c_all.tokens);
      CHECK(g_all.exits == c_all.exits);
      CHECK(g_split.tokens == c_split.tokens);
      CHECK(g_split.exits == c_split.exits);
    }
  }
}
