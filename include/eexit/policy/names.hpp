#pragma once
// Names of run-time choices (measures, rules), taken from the alternatives of the variant
// that holds them: each stock type's name() is the only place its name is written, and the
// lists in errors and help text are built from the same variant (policy/registry.hpp).
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "eexit/core/error.hpp"

namespace eexit::detail {

// Every alternative of Variant default-constructs and has a name().
template <class Variant>
std::vector<std::string_view> alternative_names() {
  return []<std::size_t... I>(std::index_sequence<I...>) {
    return std::vector<std::string_view>{
        std::string_view(std::variant_alternative_t<I, Variant>{}.name())...};
  }
  (std::make_index_sequence<std::variant_size_v<Variant>>{});
}

// "a, b, c" (errors) or "a | b | c" (help text).
template <class Variant>
std::string joined_names(std::string_view sep = ", ") {
  std::string s;
  for (auto n : alternative_names<Variant>()) {
    if (!s.empty()) s += sep;
    s += n;
  }
  return s;
}

// The alternative whose name() is n; an eexit::error naming `field` and listing the valid
// names otherwise.
template <class Variant>
Variant alternative_from_name(std::string_view n, std::string_view field, std::string_view what) {
  Variant v;
  const bool found = [&]<std::size_t... I>(std::index_sequence<I...>) {
    return ((std::variant_alternative_t<I, Variant>{}.name() == n ? (v.template emplace<I>(), true)
                                                                  : false) ||
            ...);
  }
  (std::make_index_sequence<std::variant_size_v<Variant>>{});
  if (!found)
    throw error(field, "unknown " + std::string(what) + " '" + std::string(n) + "' (" +
                           joined_names<Variant>() + ")");
  return v;
}

}  // namespace eexit::detail
