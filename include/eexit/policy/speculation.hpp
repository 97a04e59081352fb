#pragma once
// Speculation: where and how much a self-speculative decode mode drafts (runtime values;
// policy/self_speculative.hpp has the mode itself). Its own header so that the rules
// (policy/rules.hpp, the runtime "self-spec" rule) can carry it without the engine.
#include "eexit/core/error.hpp"
#include "eexit/policy/exit_rows.hpp"

namespace eexit {

struct CostModel;  // policy/cost_model.hpp

struct Speculation {
  int draft_layer = -1;  // the exit point after this layer drafts; -1 = the model's first
  int max_draft = 4;     // K: most draft tokens per row and step; 0 = off (plain decode)
  // A row stops drafting at a draft scored under this (0 = never: always K drafts). 0.5
  // (max-prob) was the best of those measured on the embedded model (benchmarks/RESULTS.md).
  float threshold = 0.5f;
  // Verify the last draft too: one more row from layer 0 per pass, whose logits give a
  // bonus token when every draft is kept. Nearly free where a step is weight-bound (large
  // models, GPUs); a full row of compute where it is compute-bound (small models on a CPU).
  // Without it a pass emits at most K tokens and the last draft starts the next pass.
  bool bonus_row = true;
  // Choose k per step (issue 17 item 3): each step drafts the k in [0, K] that the measured
  // costs (the walks' layer and head times as a function of rows, policy/cost_model.hpp)
  // and the measured acceptance predict to give the most tokens per second; 0 where the
  // rows are already compute-bound and a verify row costs as much as a step. Off: always K.
  bool adaptive = false;
  // Adaptive k's costs given rather than measured (tests, what-if studies): used as they
  // are, never learned from timings, and no step-time correction. Must outlive the engine.
  const CostModel* costs = nullptr;
  // Adaptive k: one k for all decode rows of a step (false), or then lowered row by row
  // (true: rows whose own drafts are rarely kept draft less). Per row pays where rows differ
  // (one writes code, one prose); where they do not, each row's short-window estimate is
  // noise that a per-row choice follows: at batch 16 on the 1B shape, with the same
  // acceptance in every row, side by side in one run, per row ran 0.90x full depth at
  // acceptance 0.9 where one k per step ran 1.02x (benchmarks/RESULTS.md, "Fourth run").
  bool per_row = false;

  bool enabled() const noexcept { return max_draft > 0; }
  // Throws eexit::error naming the field.
  void validate() const {
    if (max_draft < 0 || max_draft > 64)
      throw error("speculation", "max_draft (draft tokens) must be in [0, 64]");
    if (draft_layer < -1) throw error("speculation", "draft_layer must be -1 or a layer index");
    if (!(threshold == threshold)) throw error("speculation", "threshold is NaN");
  }
};

// Drafts are scored from the draft head's exit scores (ExitRows::scores / top1) only.
inline void check_draft_measure(const ExitNeeds& n) {
  if (n.logits_host || n.hidden || n.prev_hidden || n.classifier)
    throw error("self-spec",
                "the draft confidence measure may use exit scores only "
                "(max-prob, margin, entropy)");
}

}  // namespace eexit
