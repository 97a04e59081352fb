// The sample's from-scratch policy (samples/custom_policy/two_in_a_row.hpp) through the
// Engine on the embedded model: a row can never leave at the first exit point, and leaves
// at the second exactly when it was confident at both.
#include <doctest/doctest.h>

#include "../../samples/custom_policy/two_in_a_row.hpp"
#include "../test_paths.hpp"

using namespace eexit;
using Cache = PagedCache<CpuBackend, 16>;

namespace {
Engine<TwoInARow, Cache>::Completion generate(LlamaModel<CpuBackend>& model, CpuBackend& be,
                                              float threshold) {
  Cache cache(be, model.config(), 64);
  Engine<TwoInARow, Cache> engine(model, cache, TwoInARow(threshold));
  GenerateRequest r;
  r.prompt = {1023, 813, 58, 10};  // BOS "ROMEO:\n" in the embedded tokenizer
  r.max_tokens = 48;
  r.ignore_eos = true;
  engine.add_request(r);
  return engine.run_to_completion().at(0);
}
}  // namespace

TEST_CASE("TwoInARow: exits only after two confident exit points in a row") {
  CpuBackend be(2);
  LlamaModel<CpuBackend> model(be, load_model(test::source("models/eexit-shakespeare")));
  const auto exits = model.exit_layers();  // {1, 3, 5}
  REQUIRE(exits.size() == 3);
  SUBCASE("always confident: every decoded token leaves at the second exit point") {
    const auto out = generate(model, be, -1.0f);
    CHECK(out.exit_layers[0] == exits[2]);  // from the prompt: full depth
    for (std::size_t i = 1; i < out.exit_layers.size(); ++i) CHECK(out.exit_layers[i] == exits[1]);
  }
  SUBCASE("a real threshold: some leave at the second exit, none at the first") {
    const auto out = generate(model, be, 0.3f);
    int second = 0;
    for (auto l : out.exit_layers) {
      CHECK(l != exits[0]);
      second += l == exits[1];
    }
    CHECK(second > 0);
  }
}
