#pragma once
// The policy concept: what the engine asks a policy at run time (DESIGN.md §3-4).
#include <concepts>
#include <cstdint>
#include <span>
#include <string_view>

#include "eexit/policy/exit_rows.hpp"

namespace eexit {

template <class P>
concept policy = std::copy_constructible<P> &&
    requires(P& p, const P& cp, const ExitRows& rows, std::span<std::uint8_t> conf,
             std::span<std::uint8_t> leave, int exit) {
  { cp.name() } -> std::convertible_to<std::string_view>;
  // false: the engine never computes exit heads (FullDepth).
  { cp.evaluates_exits() } -> std::convertible_to<bool>;
  // What to compute for the active decode rows at exit point `exit`.
  { cp.needs(exit) } -> std::same_as<ExitNeeds>;
  // Per row: is it confident, and does it leave here. A row that leaves is sampled from
  // this exit's head and its skipped layers' K/V are filled before the step ends.
  p.decide(rows, conf, leave);
};

}  // namespace eexit
