#pragma once
// A policy written from scratch: a row leaves only once its confidence has passed the
// threshold at two consecutive exit points (a guard against one lucky exit head), and
// every row decides for itself (split batch rule). It models eexit::policy with four
// member functions; nothing to inherit, nothing virtual.
#include <eexit/eexit.hpp>

struct TwoInARow {
  explicit TwoInARow(float t = 0.5f) : threshold(t) {}
  float threshold;

  std::string_view name() const { return "two-in-a-row"; }
  bool evaluates_exits() const { return true; }
  // Ask the engine for the exit head's scores (max prob, margin, entropy) at every exit.
  eexit::ExitNeeds needs(int /*exit*/) const { return {.scores = true}; }

  void decide(const eexit::ExitRows& rows, std::span<std::uint8_t> confident,
              std::span<std::uint8_t> leave) {
    eexit::MaxProb measure;
    scores_.resize(rows.n);
    measure.score(rows, scores_.data());
    for (std::size_t i = 0; i < rows.n; ++i) {
      confident[i] = scores_[i] >= threshold;
      // row_state is per-row scratch that lives for one step and moves with its row:
      // here, "was confident at the previous exit point".
      const bool before = rows.row_state[i] != 0;
      leave[i] = confident[i] && before;
      rows.row_state[i] = confident[i];
    }
  }

 private:
  std::vector<float> scores_;
};

static_assert(eexit::policy<TwoInARow>);
