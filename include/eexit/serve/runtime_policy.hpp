#pragma once
// RuntimePolicy: the server's exit policy, chosen at run time (flags) instead of as a type.
// The Engine's Policy parameter is compile-time; a server wants `--policy full|all-confident
// |split` and a measure and thresholds from flags, so this one type switches on a value.
//
// Per request: the engine asks the policy once per exit point for all active rows of the
// batch, so a per-request *rule* (split for one request, all-confident for another) has no
// clean meaning inside one batch. What does: a per-request *threshold*. Where the engine
// hands one per row (ExitRows::row_threshold, from GenerateRequest::exit_threshold; NaN =
// none), a row is confident against its own threshold; a request that asks for full depth
// gets a threshold no score reaches (full_depth_threshold). The batch rule stays the
// server's.
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "eexit/core/error.hpp"
#include "eexit/policy/exit_rows.hpp"
#include "eexit/policy/measures.hpp"
#include "eexit/policy/policy.hpp"
#include "eexit/policy/thresholds.hpp"

namespace eexit::serve {

enum class PolicyKind { full, all_confident, split };

inline PolicyKind policy_kind_from_name(std::string_view n) {
  if (n == "full") return PolicyKind::full;
  if (n == "all-confident") return PolicyKind::all_confident;
  if (n == "split") return PolicyKind::split;
  throw error("policy", "unknown policy '" + std::string(n) + "' (full, all-confident, split)");
}
constexpr std::string_view policy_kind_name(PolicyKind k) noexcept {
  switch (k) {
    case PolicyKind::full:
      return "full";
    case PolicyKind::all_confident:
      return "all-confident";
    case PolicyKind::split:
      return "split";
  }
  return "full";
}

// A finite threshold no confidence score reaches: the row never counts as confident.
inline constexpr float full_depth_threshold = std::numeric_limits<float>::max();

// True when this build's engine passes per-row thresholds to policies.
inline constexpr bool has_row_thresholds = requires(ExitRows r) { r.row_threshold; };

struct RuntimePolicy {
  PolicyKind kind = PolicyKind::full;
  AnyMeasure measure{};
  Thresholds thresholds{};

  std::string_view name() const noexcept { return policy_kind_name(kind); }
  bool evaluates_exits() const noexcept { return kind != PolicyKind::full; }
  ExitNeeds needs(int) const { return measure.needs(); }

  void decide(const ExitRows& rows, std::span<std::uint8_t> confident,
              std::span<std::uint8_t> leave) {
    scores_.resize(rows.n);
    measure.score(rows, scores_.data());
    bool all = rows.n > 0;
    for (std::size_t i = 0; i < rows.n; ++i) {
      float lambda = std::numeric_limits<float>::quiet_NaN();
      if constexpr (has_row_thresholds)
        if (rows.row_threshold) lambda = rows.row_threshold[i];
      if (std::isnan(lambda)) lambda = thresholds.at(rows.exit, rows.step[i], rows.max_steps[i]);
      confident[i] = scores_[i] >= lambda;
      all = all && confident[i];
    }
    for (std::size_t i = 0; i < rows.n; ++i) {
      switch (kind) {
        case PolicyKind::full:
          leave[i] = 0;
          break;
        case PolicyKind::all_confident:
          leave[i] = all;
          break;
        case PolicyKind::split:
          leave[i] = confident[i];
          break;
      }
    }
  }

 private:
  std::vector<float> scores_;
};

static_assert(policy<RuntimePolicy>);

}  // namespace eexit::serve
