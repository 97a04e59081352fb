#pragma once
// Weight-by-weight equality of two loaded checkpoints (loader and GGUF tests).
#include <doctest/doctest.h>

#include "eexit/model/weights.hpp"

namespace eexit::test {

// Matrices compare by value (a Q8_0 matrix kept packed equals its dequantized fp32 copy).
inline bool same(const Weight& a, const Weight& b) {
  return a.to_f32() == b.to_f32();
}

// as_used: compare the LM heads the model will use (the embedding when tied), so that a
// tied checkpoint equals an untied one holding a copy; otherwise lm_head as stored.
inline void check_same_weights(const ModelWeights& a, const ModelWeights& b, bool as_used = false) {
  CHECK(same(a.tok_embedding, b.tok_embedding));
  CHECK(a.final_norm == b.final_norm);
  if (as_used) {
    CHECK(same(a.lm_head.empty() ? a.tok_embedding : a.lm_head,
               b.lm_head.empty() ? b.tok_embedding : b.lm_head));
  } else {
    CHECK(same(a.lm_head, b.lm_head));
  }
  REQUIRE(a.layers.size() == b.layers.size());
  for (std::size_t i = 0; i < a.layers.size(); ++i) {
    CAPTURE(i);
    const auto &x = a.layers[i], &y = b.layers[i];
    CHECK(x.attn_norm == y.attn_norm);
    CHECK(same(x.wq, y.wq));
    CHECK(same(x.wk, y.wk));
    CHECK(same(x.wv, y.wv));
    CHECK(same(x.wo, y.wo));
    CHECK(x.ffn_norm == y.ffn_norm);
    CHECK(same(x.w_gate, y.w_gate));
    CHECK(same(x.w_down, y.w_down));
    CHECK(same(x.w_up, y.w_up));
  }
}

}  // namespace eexit::test
