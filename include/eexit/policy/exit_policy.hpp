#pragma once
// ExitPolicy: a confidence measure, a batch rule and a fill strategy bundled into a type
// that models eexit::policy. The stock policies are aliases of it; a user's own policy
// can be one too, or any struct that models the concept (samples/custom_policy).
#include <algorithm>
#include <cmath>
#include <span>
#include <string_view>
#include <vector>

#include "eexit/policy/exit_rows.hpp"
#include "eexit/policy/fill.hpp"
#include "eexit/policy/measures.hpp"
#include "eexit/policy/rules.hpp"
#include "eexit/policy/speculation.hpp"
#include "eexit/policy/thresholds.hpp"

namespace eexit {

// Fill: FillFromExitState, DeferredRecompute or AnyFill (policy/fill.hpp); the engine
// reads policy_defers_fill(policy) to choose.
template <confidence_measure Measure, batch_rule Rule, class Fill = FillFromExitState>
struct ExitPolicy {
  using fill_strategy = Fill;
  Measure measure{};
  Thresholds thresholds{};
  Rule rule{};
  Fill fill{};

  std::string_view name() const { return rule.name(); }
  // A rule that never lets a row leave (NeverExit) says so, and the engine then computes
  // no exit heads: full depth chosen at run time costs what FullDepth costs.
  bool evaluates_exits() const { return rule_evaluates_exits(rule); }
  // A rule that decides per exit point (AdaptiveRule) may skip one: nothing is computed.
  ExitNeeds needs(int exit) const {
    return evaluates_exits() && rule_evaluates_at(rule, exit) ? measure.needs() : ExitNeeds{};
  }
  // The walk reached an exit point (before needs()): lets the rule weigh it.
  void begin_exit(ExitPointInfo i) {
    const ExitNeeds n = measure.needs();
    i.head = n.scores || n.logits_host;
    i.deferred_fill = fill.deferred();
    rule_begin_exit(rule, i);
  }
  // The walk's timings, for a rule that learns costs (wants_timings).
  bool wants_timings() const { return rule_wants_timings(rule); }
  void observe(const WalkTimings& t) { rule_observe(rule, t); }

  // confident[i]: row i's score passes the exit's threshold; leave[i]: row i exits here.
  void decide(const ExitRows& rows, std::span<std::uint8_t> confident,
              std::span<std::uint8_t> leave) {
    if (!rule_evaluates_at(rule, rows.exit)) {  // skipped: no scores were computed
      std::fill(confident.begin(), confident.end(), std::uint8_t(0));
      std::fill(leave.begin(), leave.end(), std::uint8_t(0));
      return;
    }
    scores_.resize(rows.n);
    measure.score(rows, scores_.data());
    for (std::size_t i = 0; i < rows.n; ++i) {
      const float own = rows.row_threshold ? rows.row_threshold[i] : NAN;
      const float lambda =
          std::isnan(own) ? thresholds.at(rows.exit, rows.step[i], rows.max_steps[i]) : own;
      confident[i] = scores_[i] >= lambda;
    }
    rule_apply_at(rule, rows, confident, leave);
  }
  // Self-speculation (the speculative_policy capability): the rule's, when it is the
  // self-spec decode mode; off otherwise. Drafts are scored with this policy's measure.
  Speculation speculation() const {
    if constexpr (requires { rule.speculation(); })
      return rule.speculation();
    else
      return Speculation{.max_draft = 0};
  }
  void draft_confidence(const ExitRows& r, float* out) const {
    check_draft_measure(measure.needs());
    measure.score(r, out);
  }

  // The scores of the last decide() call (statistics, tests).
  std::span<const float> last_scores() const { return scores_; }

 private:
  std::vector<float> scores_;
};

using AllConfident = ExitPolicy<AnyMeasure, ExitWhenAllConfident>;
using SplitAtExit = ExitPolicy<AnyMeasure, ExitConfidentRows>;
// The cost-model policy (policy/adaptive.hpp): evaluates an exit only where it pays and
// picks all-confident or split per step and exit point.
using Adaptive = ExitPolicy<AnyMeasure, AdaptiveRule>;
// The policy chosen at run time (CLI flags, the server): measure and rule by name
// (policy/registry.hpp). Default-constructed it runs at full depth. A batch shares one
// rule, so a request can change only its own threshold (ExitRows::row_threshold, from
// GenerateRequest::exit_threshold; full_depth_threshold keeps one request at full depth).
// The fill too is chosen at run time (`--fill exit-state|deferred`).
using RuntimePolicy = ExitPolicy<AnyMeasure, AnyRule, AnyFill>;

}  // namespace eexit
