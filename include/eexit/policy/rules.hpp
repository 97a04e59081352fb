#pragma once
// Batch rules: what the batch does at an exit point given which decode rows are confident.
#include <algorithm>
#include <concepts>
#include <cstdint>
#include <span>
#include <string_view>

#include "eexit/concepts.hpp"

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

static_assert(batch_rule<ExitWhenAllConfident> && batch_rule<ExitConfidentRows>);

}  // namespace eexit
