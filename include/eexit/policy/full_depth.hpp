#pragma once
// FullDepth: never exits early. The baseline every other policy is measured against.
#include <string_view>

namespace eexit {

struct FullDepth {
  std::string_view name() const noexcept { return "full"; }
  bool evaluates_exits() const noexcept { return false; }
};

}  // namespace eexit
