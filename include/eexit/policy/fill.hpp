#pragma once
// Fill strategies: how K/V of the layers an exited token skipped get into the cache
// (DESIGN.md §3). The third parameter of ExitPolicy; AnyFill picks one at run time.
#include <string>
#include <string_view>
#include <variant>

#include "eexit/policy/names.hpp"

namespace eexit {

// The paper's: K/V of every skipped layer projected from the exit hidden state before the
// step ends (the model's kv_fill: that layer's input norm, K/V projection and RoPE).
// Approximate (no attention or MLP of the skipped layers), cheap, complete at once.
struct FillFromExitState {
  std::string_view name() const { return "exit-state"; }
  constexpr bool deferred() const { return false; }
};

// EE-LLM / FREE: the skipped layers run for real (attention + MLP, exact K/V) as extra
// rows of the next step, starting at the layer after the exit from the saved exit hidden
// state; they yield no token. Until then the token's K/V of those layers are unwritten;
// the next token of the sequence, which needs them, runs in that same next step.
struct DeferredRecompute {
  std::string_view name() const { return "deferred"; }
  constexpr bool deferred() const { return true; }
};

// One of the fills chosen at run time (`--fill exit-state|deferred`).
struct AnyFill {
  using alternatives = std::variant<FillFromExitState, DeferredRecompute>;
  alternatives f{};
  std::string_view name() const {
    return std::visit([](const auto& x) { return x.name(); }, f);
  }
  bool deferred() const {
    return std::visit([](const auto& x) { return x.deferred(); }, f);
  }
  // Throws eexit::error("fill", ...) listing the valid names.
  static AnyFill from_name(std::string_view n) {
    return {detail::alternative_from_name<alternatives>(n, "fill", "fill strategy")};
  }
};

// Whether a policy defers its fill: a policy with a `fill` member whose deferred() says so.
// Any other policy fills from the exit state (the engine's default).
template <class P>
bool policy_defers_fill(const P& p) {
  if constexpr (requires { p.fill.deferred(); })
    return bool(p.fill.deferred());
  else
    return false;
}

}  // namespace eexit
