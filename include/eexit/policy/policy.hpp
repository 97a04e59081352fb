#pragma once
// The policy concept: what the engine asks a policy at run time.
#include <concepts>
#include <string_view>

namespace eexit {

template <class P>
concept policy = std::copy_constructible<P> && requires(const P& cp) {
  { cp.name() } -> std::convertible_to<std::string_view>;
  // false: the engine never computes exit heads (FullDepth).
  { cp.evaluates_exits() } -> std::convertible_to<bool>;
};

}  // namespace eexit
