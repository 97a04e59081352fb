#pragma once
// ExitPolicy: a confidence measure, a batch rule and a fill strategy bundled into a type
// that models eexit::policy. The stock policies are aliases of it; a user's own policy
// can be one too, or any struct that models the concept (samples/custom_policy).
#include <cmath>
#include <span>
#include <string_view>
#include <vector>

#include "eexit/policy/exit_rows.hpp"
#include "eexit/policy/measures.hpp"
#include "eexit/policy/rules.hpp"
#include "eexit/policy/thresholds.hpp"

namespace eexit {

// Fill strategies: how K/V of the layers an exited token skipped get into the cache.
// FillFromExitState is the paper's: projected from the exit hidden state before the step
// ends (ModelType::kv_fill). It is the only one today, so the engine does not read the
// tag yet; the parameter stays because the early-exit issue (9) adds a second strategy
// (deferred recompute of the skipped layers with the next step's rows, DESIGN.md §3),
// which the engine will select by this type.
struct FillFromExitState {};

template <confidence_measure Measure, batch_rule Rule, class Fill = FillFromExitState>
struct ExitPolicy {
  using fill_strategy = Fill;
  Measure measure{};
  Thresholds thresholds{};
  Rule rule{};

  std::string_view name() const { return rule.name(); }
  // A rule that never lets a row leave (NeverExit) says so, and the engine then computes
  // no exit heads: full depth chosen at run time costs what FullDepth costs.
  bool evaluates_exits() const { return rule_evaluates_exits(rule); }
  ExitNeeds needs(int /*exit*/) const { return evaluates_exits() ? measure.needs() : ExitNeeds{}; }

  // confident[i]: row i's score passes the exit's threshold; leave[i]: row i exits here.
  void decide(const ExitRows& rows, std::span<std::uint8_t> confident,
              std::span<std::uint8_t> leave) {
    scores_.resize(rows.n);
    measure.score(rows, scores_.data());
    for (std::size_t i = 0; i < rows.n; ++i) {
      const float own = rows.row_threshold ? rows.row_threshold[i] : NAN;
      const float lambda =
          std::isnan(own) ? thresholds.at(rows.exit, rows.step[i], rows.max_steps[i]) : own;
      confident[i] = scores_[i] >= lambda;
    }
    rule.apply(confident, leave);
  }
  // The scores of the last decide() call (statistics, tests).
  std::span<const float> last_scores() const { return scores_; }

 private:
  std::vector<float> scores_;
};

using AllConfident = ExitPolicy<AnyMeasure, ExitWhenAllConfident>;
using SplitAtExit = ExitPolicy<AnyMeasure, ExitConfidentRows>;
// The policy chosen at run time (CLI flags, the server): measure and rule by name
// (policy/registry.hpp). Default-constructed it runs at full depth. A batch shares one
// rule, so a request can change only its own threshold (ExitRows::row_threshold, from
// GenerateRequest::exit_threshold; full_depth_threshold keeps one request at full depth).
using RuntimePolicy = ExitPolicy<AnyMeasure, AnyRule>;

}  // namespace eexit
