// End-to-end generation on stories260K: the greedy reference, batch invariance, paged vs
// contiguous, and preemption under a cache too small for the batch.
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>

#include "../test_paths.hpp"
#include "eexit/backend/cpu.hpp"
#include "eexit/cache/contiguous.hpp"
#include "eexit/cache/paged.hpp"
#include "eexit/engine/engine.hpp"
#include "eexit/model/llama.hpp"
#include "eexit/model/load.hpp"

using namespace eexit;

namespace {

std::vector<std::int32_t> reference_ids() {
  std::ifstream f(test::shared("models/stories260K/greedy_reference_t0.txt"));
  REQUIRE(f.good());
  std::string line;
  std::vector<std::int32_t> ids;
  while (std::getline(f, line)) {
    if (line.rfind("ids:", 0) == 0 || line.find_first_not_of("0123456789 ") == std::string::npos) {
      std::istringstream ss(line.substr(line.find(':') == std::string::npos ? 0 : line.find(':') + 1));
      for (std::int32_t v; ss >> v;) ids.push_back(v);
      if (ids.size() >= 256) break;
    }
  }
  return ids;
}

struct Stories {
  CpuBackend be{2};
  LlamaModel<CpuBackend> model{be, load_model(test::shared("models/stories260K/stories260K.bin"))};
};

Stories& stories() {
  static Stories s;
  return s;
}

GenerateRequest greedy(std::vector<std::int32_t> prompt, int max_tokens) {
  GenerateRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.ignore_eos = true;
  return r;
}

}  // namespace

TEST_CASE("greedy generation from BOS reproduces the stories260K reference") {
  auto ref = reference_ids();
  REQUIRE(ref.size() == 256);
  auto& s = stories();
  PagedCache<CpuBackend, 16> cache(s.be, s.model.config(), 64);
  Engine<FullDepth, PagedCache<CpuBackend, 16>> engine(s.model, cache);
  engine.add_request(greedy({1}, 256));
  auto out = engine.run_to_completion();
  REQUIRE(out.size() == 1);
  CHECK(out[0].tokens == ref);
  CHECK(out[0].finish == finish_reason::length);
  CHECK(cache.blocks_used() == 0);
}
