#pragma once
// EngineStats: the engine's counters, apart from the engine so that the parts of a step
// that count (the self-speculative step, engine/self_spec_step.hpp) add to them directly.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "eexit/engine/layer_walk.hpp"

namespace eexit {

// Engine-wide counters.
struct EngineStats {
  std::int64_t steps = 0;
  std::int64_t prompt_tokens = 0;  // prefill rows computed (recomputation included)
  // Prefix caching: prompt (or recomputed) tokens whose K/V came from cached blocks and
  // were not computed. Hit rate = prefix_cached_tokens / (that + prompt_tokens).
  std::int64_t prefix_cached_tokens = 0;
  std::int64_t generated_tokens = 0;
  std::int64_t preemptions = 0;
  std::int64_t decode_layers_computed = 0;  // layers run by decode rows
  std::int64_t decode_layers_full = 0;      // what full depth would have run
  std::vector<std::int64_t> exit_histogram;
  double fill_time_s = 0.0;
  std::int64_t involuntary_exits = 0;  // row-exit points where a row left unconfident
  std::int64_t involuntary_stays = 0;  // row-exit points where a confident row went on
  // Self-speculation: verify passes (one per speculating row and step), draft tokens
  // proposed and accepted, tokens those passes emitted, and the time of the draft walks
  // and of the walks that verified (prefill chunks riding in them included).
  std::int64_t verify_passes = 0;
  std::int64_t draft_tokens = 0;
  std::int64_t accepted_drafts = 0;
  std::int64_t speculative_tokens = 0;
  double draft_time_s = 0.0;
  double verify_time_s = 0.0;
  // Exit heads: exit points where one ran over the decode rows, and the rows it ran over
  // (a cost-model policy skips the ones that do not pay).
  std::int64_t exit_heads = 0;
  std::int64_t exit_head_rows = 0;
  // Deferred fill: rows that ran an exited token's skipped layers in the next step, the
  // layers they ran (not in decode_layers_computed), and rows dropped because their
  // sequence finished or was preempted first.
  std::int64_t deferred_rows = 0;
  std::int64_t deferred_layers = 0;
  std::int64_t deferred_dropped = 0;
  // The walk's counters (it keeps the totals).
  void take_walk(const WalkStats& ws) noexcept {
    fill_time_s = ws.fill_time_s;
    exit_heads = ws.exit_heads;
    exit_head_rows = ws.exit_head_rows;
    involuntary_exits = ws.involuntary_exits;
    involuntary_stays = ws.involuntary_stays;
  }
  // Tokens that left at an exit point before the last layer.
  std::int64_t early_exits() const noexcept {
    std::int64_t n = 0;
    for (std::size_t e = 0; e + 1 < exit_histogram.size(); ++e) n += exit_histogram[e];
    return n;
  }
  double prefix_hit_rate() const noexcept {
    const std::int64_t all = prefix_cached_tokens + prompt_tokens;
    return all ? double(prefix_cached_tokens) / double(all) : 0.0;
  }
  double acceptance_rate() const noexcept {
    return draft_tokens ? double(accepted_drafts) / double(draft_tokens) : 0.0;
  }
  double tokens_per_verify() const noexcept {
    return verify_passes ? double(speculative_tokens) / double(verify_passes) : 0.0;
  }
};

namespace detail {
inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace detail

}  // namespace eexit
