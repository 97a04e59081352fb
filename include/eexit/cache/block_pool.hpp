#pragma once
// A free list of fixed-size KV blocks (vLLM's block manager, without prefix sharing).
#include <cstdint>
#include <vector>

namespace eexit {

class BlockPool {
 public:
  explicit BlockPool(std::int32_t n_blocks) {
    free_.reserve(std::size_t(n_blocks));
    // Hand out low ids first: keeps a short run's working set compact.
    for (std::int32_t b = n_blocks - 1; b >= 0; --b) free_.push_back(b);
    total_ = n_blocks;
  }
  std::int32_t total() const noexcept { return total_; }
  std::int32_t free() const noexcept { return std::int32_t(free_.size()); }
  std::int32_t used() const noexcept { return total_ - free(); }
  // Takes n blocks, or none when fewer than n are free.
  bool take(std::int32_t n, std::vector<std::int32_t>& out) {
    if (n > free()) return false;
    for (std::int32_t i = 0; i < n; ++i) {
      out.push_back(free_.back());
      free_.pop_back();
    }
    return true;
  }
  void give_back(std::int32_t b) { free_.push_back(b); }

 private:
  std::vector<std::int32_t> free_;
  std::int32_t total_ = 0;
};

}  // namespace eexit
