#pragma once
// FullDepth: never exits early. The baseline every other policy is measured against.
#include <algorithm>
#include <cstdint>
#include <span>
#include <string_view>

#include "eexit/policy/exit_rows.hpp"

namespace eexit {

struct FullDepth {
  std::string_view name() const noexcept { return "full"; }
  bool evaluates_exits() const noexcept { return false; }
  ExitNeeds needs(int) const noexcept { return {}; }
  void decide(const ExitRows&, std::span<std::uint8_t> conf, std::span<std::uint8_t> leave) {
    std::fill(conf.begin(), conf.end(), std::uint8_t(0));
    std::fill(leave.begin(), leave.end(), std::uint8_t(0));
  }
};

}  // namespace eexit
