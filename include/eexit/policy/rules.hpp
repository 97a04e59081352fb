#pragma once
// Batch rules: what the batch does at an exit point given which decode rows are confident.
#include <algorithm>
#include <concepts>
#include <cstdint>
#include <span>
#include <string_view>
#include <variant>

#include "eexit/concepts.hpp"
#include "eexit/policy/adaptive.hpp"
#include "eexit/policy/cost_model.hpp"
#include "eexit/policy/names.hpp"
#include "eexit/policy/speculation.hpp"

namespace eexit {

// The paper's rule: the batch goes on unless every active decode row is confident; then
// all of them exit here. No involuntary exits; confident rows may stay (involuntary stays).
struct ExitWhenAllConfident {
  std::string_view name() const { return "all-confident"; }
  void apply(std::span<const std::uint8_t> conf, std::span<std::uint8_t> leave) const {
    const bool all = std::all_of(conf.begin(), conf.end(), [](std::uint8_t c) { return c != 0; });
    std::fill(leave.begin(), leave.end(), std::uint8_t(all));
  }
};

// DREX's split: confident rows leave now, the rest go on as a smaller batch. No
// involuntary exits and no involuntary stays.
struct ExitConfidentRows {
  std::string_view name() const { return "split"; }
  void apply(std::span<const std::uint8_t> conf, std::span<std::uint8_t> leave) const {
    std::copy(conf.begin(), conf.end(), leave.begin());
  }
};

// Whether a rule ever lets a row leave: rules that never do say so with evaluates_exits(),
// every other rule may.
template <class R>
bool rule_evaluates_exits(const R& r) {
  if constexpr (requires { r.evaluates_exits(); })
    return bool(r.evaluates_exits());
  else
    return true;
}

// Optional members a rule may have, for rules that decide per exit point and learn costs
// (AdaptiveRule): a rule without them evaluates every exit, applies apply(), learns nothing.
template <class R>
bool rule_evaluates_at(const R& r, int exit) {
  if constexpr (requires { r.evaluates_at(exit); })
    return bool(r.evaluates_at(exit));
  else
    return true;
}
template <class R>
void rule_begin_exit(R& r, const ExitPointInfo& i) {
  if constexpr (requires { r.begin_exit(i); }) r.begin_exit(i);
}
template <class R>
void rule_apply_at(R& r, const ExitRows& rows, std::span<const std::uint8_t> conf,
                   std::span<std::uint8_t> leave) {
  if constexpr (requires { r.apply_at(rows, conf, leave); })
    r.apply_at(rows, conf, leave);
  else
    r.apply(conf, leave);
}
template <class R>
bool rule_wants_timings(const R& r) {
  if constexpr (requires { r.wants_timings(); })
    return bool(r.wants_timings());
  else
    return false;
}
template <class R>
void rule_observe(R& r, const WalkTimings& t) {
  if constexpr (requires { r.observe(t); }) r.observe(t);
}

// Full depth as a rule, for a policy chosen at run time (`--policy full`): no row leaves,
// and evaluates_exits() tells the engine not to compute exit heads at all, so it costs
// what the FullDepth policy costs.
struct NeverExit {
  std::string_view name() const { return "full"; }
  bool evaluates_exits() const { return false; }
  void apply(std::span<const std::uint8_t>, std::span<std::uint8_t> leave) const {
    std::fill(leave.begin(), leave.end(), std::uint8_t(0));
  }
};

// Self-speculative decoding as a run-time choice (`--policy self-spec`): no row leaves at
// an exit point, every token is verified at full depth; the engine drafts from the exit
// in `spec` instead (policy/self_speculative.hpp, the engine's speculative_policy path).
struct SpeculateFromExit {
  Speculation spec{};
  std::string_view name() const { return "self-spec"; }
  bool evaluates_exits() const { return false; }
  Speculation speculation() const { return spec; }
  void apply(std::span<const std::uint8_t>, std::span<std::uint8_t> leave) const {
    std::fill(leave.begin(), leave.end(), std::uint8_t(0));
  }
};

// One of the stock rules chosen at run time (CLI, server). The first alternative is the
// default: a runtime policy starts at full depth until told otherwise. What issue 9 adds
// (the rule "adaptive", the decode mode "self-spec") is one more alternative here, whose
// type tells the engine what it is; its name() is its name in the registry
// (policy/registry.hpp), which lists the alternatives.
struct AnyRule {
  using alternatives = std::variant<NeverExit, ExitWhenAllConfident, ExitConfidentRows,
                                    SpeculateFromExit, AdaptiveRule>;
  alternatives r{};

  std::string_view name() const {
    return std::visit([](const auto& x) { return x.name(); }, r);
  }
  bool evaluates_exits() const {
    return std::visit([](const auto& x) { return rule_evaluates_exits(x); }, r);
  }
  void apply(std::span<const std::uint8_t> conf, std::span<std::uint8_t> leave) const {
    std::visit([&](const auto& x) { x.apply(conf, leave); }, r);
  }
  bool evaluates_at(int e) const {
    return std::visit([&](const auto& x) { return rule_evaluates_at(x, e); }, r);
  }
  void begin_exit(const ExitPointInfo& i) {
    std::visit([&](auto& x) { rule_begin_exit(x, i); }, r);
  }
  void apply_at(const ExitRows& rows, std::span<const std::uint8_t> conf,
                std::span<std::uint8_t> leave) {
    std::visit([&](auto& x) { rule_apply_at(x, rows, conf, leave); }, r);
  }
  bool wants_timings() const {
    return std::visit([](const auto& x) { return rule_wants_timings(x); }, r);
  }
  void observe(const WalkTimings& t) {
    std::visit([&](auto& x) { rule_observe(x, t); }, r);
  }
  // The self-spec alternative's drafting; off (max_draft 0) for every other rule.
  Speculation speculation() const {
    return std::visit(
        [](const auto& x) {
          if constexpr (requires { x.speculation(); })
            return Speculation(x.speculation());
          else
            return Speculation{.max_draft = 0};
        },
        r);
  }
  // Throws eexit::error("policy", ...) listing the valid names.
  static AnyRule from_name(std::string_view n) {
    return {detail::alternative_from_name<alternatives>(n, "policy", "policy")};
  }
};

static_assert(batch_rule<ExitWhenAllConfident> && batch_rule<ExitConfidentRows> &&
              batch_rule<NeverExit> && batch_rule<SpeculateFromExit> && batch_rule<AdaptiveRule> &&
              batch_rule<AnyRule>);

}  // namespace eexit
