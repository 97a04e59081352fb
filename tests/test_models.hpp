#pragma once
// The models most engine and policy tests run, each loaded once per test executable (a
// function-local static): the embedded early-exit model with its tokenizer.
#include "eexit/eexit.hpp"
#include "test_paths.hpp"

namespace eexit::test {

struct EmbeddedModel {
  CpuBackend be{2};
  LlamaModel<CpuBackend> model{be, load_model(source("models/eexit-shakespeare"))};
  Tokenizer tok =
      Tokenizer::load(source("models/eexit-shakespeare/tokenizer.json"), model.config().vocab_size);
};

inline EmbeddedModel& embedded_model() {
  static EmbeddedModel m;
  return m;
}

}  // namespace eexit::test
