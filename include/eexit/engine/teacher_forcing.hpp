#pragma once
// TeacherForcingSink: a LayerWalk sink that scores given tokens instead of sampling: for
// every yielded row, log p(the row's true next token) under the head that decided, and
// which exit that was. Perplexity through the engine's own exit decisions (the walk, the
// policy, the fill) with nothing mirrored.
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "eexit/engine/layer_walk.hpp"

namespace eexit {

struct TeacherForcedToken {
  std::int32_t slot = 0;   // the walk row's slot
  int exit = 0;            // exit point index that decided (n_exits - 1 = final head)
  std::int32_t layer = 0;  // the layer after which it sits
  double logprob = 0.0;    // log p(truth[slot]) under that head, in double
};

struct TeacherForcingSink {
  std::span<const std::int32_t> truth;  // (slots) the true next token of each slot
  std::vector<TeacherForcedToken> scored;

  // log softmax(logits)[tok], in double (one row, vocab logits).
  static double logprob(std::span<const float> lg, std::int32_t tok) {
    double mx = lg[0];
    for (float v : lg) mx = std::max(mx, double(v));
    double s = 0;
    for (float v : lg) s += std::exp(double(v) - mx);
    return double(lg[std::size_t(tok)]) - mx - std::log(s);
  }

  void operator()(const YieldedRows& y) {
    for (std::size_t j = 0; j < y.n; ++j) {
      const std::int32_t slot = y.slot[j];
      scored.push_back({slot, y.exit, y.layer, logprob(y.row_logits(j), truth[std::size_t(slot)])});
    }
  }
};

static_assert(walk_sink<TeacherForcingSink>);

}  // namespace eexit
