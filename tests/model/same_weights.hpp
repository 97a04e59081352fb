#pragma once
// Weight-by-weight equality of two loaded checkpoints (loader and GGUF tests).
#include <doctest/doctest.h>

#include "eexit/model/weights.hpp"

namespace eexit::test {

// as_used: compare the LM heads the model will use (the embedding when tied), so that a
// tied checkpoint equals an untied one holding a copy; otherwise lm_head as stored.
inline void check_same_weights(const ModelWeights& a, const ModelWeights& b, bool as_used = false) {
  CHECK(a.tok_embedding == b.tok_embedding);
  CHECK(a.final_norm == b.final_norm);
  if (as_used) {
    CHECK((a.lm_head.empty() ? a.tok_embedding : a.lm_head) ==
          (b.lm_head.empty() ? b.tok_embedding : b.lm_head));
  } else {
    CHECK(a.lm_head == b.lm_head);
  }
  REQUIRE(a.layers.size() == b.layers.size());
  for (std::size_t i = 0; i < a.layers.size(); ++i) {
    CAPTURE(i);
    const auto &x = a.layers[i], &y = b.layers[i];
    CHECK(x.attn_norm == y.attn_norm);
    CHECK(x.wq == y.wq);
    CHECK(x.wk == y.wk);
    CHECK(x.wv == y.wv);
    CHECK(x.wo == y.wo);
    CHECK(x.ffn_norm == y.ffn_norm);
    CHECK(x.w_gate == y.w_gate);
    CHECK(x.w_down == y.w_down);
    CHECK(x.w_up == y.w_up);
  }
}

}  // namespace eexit::test
