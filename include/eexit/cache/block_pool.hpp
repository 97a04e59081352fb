#pragma once
// BlockPool: the KV blocks of a paged cache, their reference counts and their identities
// (automatic prefix caching, as vLLM's block manager). A block is free (no holder, no
// identity), held (ref > 0), or cached (no holder, but it has an identity: its K/V are
// those of a known prefix, kept until the space is needed and then evicted, least
// recently released first).
//
// A block's identity is (its parent's identity, its tokens): the parent is the block
// before it in the sequence, the first block's parent is 0. Identities are serial numbers
// handed out once and never reused, so a match is exact: the tokens are compared, a hash
// only finds the candidates, and a block whose parent was evicted can never be matched
// again (no later block gets the parent's serial). The chain fixes the positions, so equal
// identity means equal K/V in every layer for one model and cache.
#include <algorithm>
#include <cstdint>
#include <list>
#include <span>
#include <unordered_map>
#include <vector>

namespace eexit {

class BlockPool {
 public:
  // n_blocks blocks of block_size tokens (block_size: what an identity compares).
  explicit BlockPool(std::int32_t n_blocks, std::int32_t block_size = 1)
      : total_(n_blocks > 0 ? n_blocks : 0),
        block_size_(block_size),
        ref_(std::size_t(total_), 0),
        serial_(std::size_t(total_), 0),
        parent_(std::size_t(total_), 0),
        tokens_(std::size_t(total_) * std::size_t(block_size), 0),
        lru_pos_(std::size_t(total_)) {
    free_.reserve(std::size_t(total_));
    // Hand out low ids first: keeps a short run's working set compact.
    for (std::int32_t b = total_ - 1; b >= 0; --b) free_.push_back(b);
  }
  std::int32_t total() const noexcept { return total_; }
  // Blocks a take() can have: free ones and cached ones (which it evicts).
  std::int32_t free() const noexcept { return std::int32_t(free_.size() + lru_.size()); }
  std::int32_t used() const noexcept { return total_ - free(); }
  // Cached blocks: no holder, identity kept.
  std::int32_t cached() const noexcept { return std::int32_t(lru_.size()); }
  std::int32_t refs(std::int32_t b) const noexcept { return ref_[std::size_t(b)]; }
  std::uint64_t serial(std::int32_t b) const noexcept { return serial_[std::size_t(b)]; }

  // Takes n blocks (ref = 1), or none when fewer than n can be had. Free blocks first, then
  // the least recently released cached ones, whose identities are forgotten.
  bool take(std::int32_t n, std::vector<std::int32_t>& out) {
    if (n > free()) return false;
    for (std::int32_t i = 0; i < n; ++i) {
      std::int32_t b;
      if (!free_.empty()) {
        b = free_.back();
        free_.pop_back();
      } else {
        b = lru_.front();
        lru_.pop_front();
        forget(b);
      }
      ref_[std::size_t(b)] = 1;
      out.push_back(b);
    }
    return true;
  }
  // Drops one reference; the last one makes the block cached (it has an identity, and is
  // the most recently released) or free.
  void give_back(std::int32_t b) {
    if (--ref_[std::size_t(b)] > 0) return;
    if (serial_[std::size_t(b)] != 0)
      lru_pos_[std::size_t(b)] = lru_.insert(lru_.end(), b);
    else
      free_.push_back(b);
  }

  // The block with identity (parent, tokens), -1 if none. tokens: block_size ids.
  std::int32_t find(std::uint64_t parent, std::span<const std::int32_t> tokens) const {
    auto [lo, hi] = index_.equal_range(key(parent, tokens));
    for (auto it = lo; it != hi; ++it) {
      const std::int32_t b = it->second;
      if (parent_[std::size_t(b)] == parent &&
          std::equal(tokens.begin(), tokens.end(), block_tokens(b)))
        return b;
    }
    return -1;
  }
  // One more holder of a block find() returned (a cached one is held again).
  void share(std::int32_t b) {
    if (ref_[std::size_t(b)]++ == 0) lru_.erase(lru_pos_[std::size_t(b)]);
  }
  // Gives a held block without identity the identity (parent, tokens) and returns its
  // serial. Only for a block whose K/V are complete (every layer, full depth) for exactly
  // these tokens after that parent; the caller checks find() first (one block per identity).
  std::uint64_t name(std::int32_t b, std::uint64_t parent, std::span<const std::int32_t> tokens) {
    const std::uint64_t s = ++next_serial_;
    serial_[std::size_t(b)] = s;
    parent_[std::size_t(b)] = parent;
    std::copy(tokens.begin(), tokens.end(), block_tokens(b));
    index_.emplace(key(parent, tokens), b);
    return s;
  }

 private:
  const std::int32_t* block_tokens(std::int32_t b) const {
    return tokens_.data() + std::size_t(b) * std::size_t(block_size_);
  }
  std::int32_t* block_tokens(std::int32_t b) {
    return tokens_.data() + std::size_t(b) * std::size_t(block_size_);
  }
  // FNV-1a over the parent and the tokens: only picks candidates (find compares).
  static std::uint64_t key(std::uint64_t parent, std::span<const std::int32_t> tokens) {
    std::uint64_t h = 0xcbf29ce484222325ull;
    auto mix = [&h](std::uint64_t v) {
      for (int i = 0; i < 8; ++i, v >>= 8) h = (h ^ (v & 0xff)) * 0x100000001b3ull;
    };
    mix(parent);
    for (std::int32_t t : tokens) mix(std::uint32_t(t));
    return h;
  }
  void forget(std::int32_t b) {
    auto [lo, hi] = index_.equal_range(
        key(parent_[std::size_t(b)], {block_tokens(b), std::size_t(block_size_)}));
    for (auto it = lo; it != hi; ++it)
      if (it->second == b) {
        index_.erase(it);
        break;
      }
    serial_[std::size_t(b)] = 0;
  }

  std::int32_t total_ = 0;
  std::int32_t block_size_ = 1;
  std::vector<std::int32_t> ref_;
  std::vector<std::uint64_t> serial_;  // identity; 0 = none
  std::vector<std::uint64_t> parent_;  // the parent's serial (0: the first block)
  std::vector<std::int32_t> tokens_;   // (total, block_size): the identity's tokens
  std::vector<std::int32_t> free_;
  std::list<std::int32_t> lru_;  // cached blocks, least recently released first
  std::vector<std::list<std::int32_t>::iterator> lru_pos_;
  std::unordered_multimap<std::uint64_t, std::int32_t> index_;  // key -> named blocks
  std::uint64_t next_serial_ = 0;
};

}  // namespace eexit
