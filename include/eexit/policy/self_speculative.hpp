#pragma once
// Self-speculative decoding (LayerSkip; DESIGN.md §3): decode rows draft tokens through
// the layers up to a draft exit and its head, then one full-depth pass verifies every
// draft position and the engine keeps the longest prefix the full model agrees with (by
// speculative rejection sampling, which for greedy is "equal to the argmax"). The output
// is what full depth would give: exactly, token for token, when greedy; in distribution
// when sampling.
//
// A policy opts in by modelling `speculative_policy` (an optional capability the engine
// checks with `if constexpr`): speculation() says where and how much to draft, and
// draft_confidence() scores the drafts so a row stops drafting when its draft is unsure.
// SelfSpeculative is the stock one; the runtime policy (RuntimePolicy with the rule
// "self-spec", SpeculateFromExit) is another; a policy that does not model the concept is
// never asked and decodes as before.
#include <concepts>
#include <cstdint>
#include <span>
#include <string_view>

#include "eexit/concepts.hpp"
#include "eexit/core/error.hpp"
#include "eexit/policy/exit_rows.hpp"
#include "eexit/policy/measures.hpp"
#include "eexit/policy/speculation.hpp"

namespace eexit {

// The optional capability. draft_confidence: one score per draft row of an ExitRows that
// carries only scores and top1 (the draft head's exit_scores) and the shape fields.
template <class P>
concept speculative_policy = policy<P> && requires(const P& cp, const ExitRows& r, float* out) {
  { cp.speculation() } -> std::convertible_to<Speculation>;
  cp.draft_confidence(r, out);
};

// Benchmarks only (eexit-bench-spec --oracle-accept): a policy that can replace each draft,
// given the request id, the position the draft is for and the drafted token. The engine then
// treats the replacement as drawn from a one-hot q, so acceptance stays exact. Everything
// else (draft passes, verify walk, rollback) runs for real: the oracle sets the acceptance
// rate, the engine's mechanics set the speed.
template <class P>
concept draft_oracle = requires(const P& cp, std::int64_t id, std::int32_t pos, int d) {
  { cp.oracle_draft(id, pos, d) } -> std::convertible_to<int>;
};

// The stock self-speculative policy: never exits early (every emitted token is verified
// at full depth); drafts score with Measure, which may read only ExitRows::scores/top1.
template <confidence_measure Measure = MaxProb>
struct SelfSpeculative {
  Measure measure{};
  Speculation spec{};

  std::string_view name() const { return "self-spec"; }
  bool evaluates_exits() const { return false; }
  ExitNeeds needs(int) const { return {}; }
  void decide(const ExitRows&, std::span<std::uint8_t> conf, std::span<std::uint8_t> leave) {
    for (auto& c : conf) c = 0;
    for (auto& l : leave) l = 0;
  }
  Speculation speculation() const { return spec; }
  void draft_confidence(const ExitRows& r, float* out) const {
    check_draft_measure(measure.needs());
    measure.score(r, out);
  }
};

static_assert(speculative_policy<SelfSpeculative<>>);
static_assert(speculative_policy<SelfSpeculative<AnyMeasure>>);

}  // namespace eexit
