#pragma once
// PagedCache: vLLM-style block tables over a pool of fixed-size blocks.
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "eexit/cache/block_pool.hpp"
#include "eexit/cache/kv_storage.hpp"

namespace eexit {

template <class Backend, int BlockSize = 16>
class PagedCache {
  static_assert(BlockSize > 0, "BlockSize must be positive");

 public:
  using backend_type = Backend;
  using seq_id = std::int64_t;
  static constexpr int block_size_v = BlockSize;

  PagedCache(Backend& be, const ModelConfig& cfg, std::int32_t n_blocks)
      : storage_(be, cfg, std::size_t(n_blocks > 0 ? n_blocks : 0) * BlockSize),
        pool_(n_blocks),
        max_seq_len_(cfg.max_seq_len) {}

  std::int32_t block_size() const noexcept { return BlockSize; }

  // Room for n more tokens of seq (positions length..length+n-1). false = cache full:
  // nothing changes.
  bool reserve(seq_id seq, std::int32_t n) {
    auto& s = seqs_[seq];
    const std::int32_t need_tokens = s.length + n;
    if (need_tokens > max_seq_len_) {
      if (s.blocks.empty() && s.length == 0) seqs_.erase(seq);
      return false;
    }
    const std::int32_t need_blocks = (need_tokens + BlockSize - 1) / BlockSize;
    const std::int32_t more = need_blocks - std::int32_t(s.blocks.size());
    if (more > 0 && !pool_.take(more, s.blocks)) {
      if (s.blocks.empty()) seqs_.erase(seq);
      return false;
    }
    s.length = need_tokens;
    return true;
  }
  // Forget tokens past new_length (speculative rollback); frees whole blocks.
  void truncate(seq_id seq, std::int32_t new_length) {
    auto it = seqs_.find(seq);
    if (it == seqs_.end() || new_length >= it->second.length) return;
    auto& s = it->second;
    s.length = new_length;
    const std::int32_t keep = (new_length + BlockSize - 1) / BlockSize;
    while (std::int32_t(s.blocks.size()) > keep) {
      pool_.give_back(s.blocks.back());
      s.blocks.pop_back();
    }
  }
  void release(seq_id seq) {
    auto it = seqs_.find(seq);
    if (it == seqs_.end()) return;
    for (auto b : it->second.blocks) pool_.give_back(b);
    seqs_.erase(it);
  }
  std::int32_t length(seq_id seq) const {
    auto it = seqs_.find(seq);
    return it == seqs_.end() ? 0 : it->second.length;
  }
  std::int64_t free_tokens() const noexcept { return std::int64_t(pool_.free()) * BlockSize; }
  std::int64_t capacity_tokens() const noexcept { return std::int64_t(pool_.total()) * BlockSize; }
  std::int32_t blocks_used() const noexcept { return pool_.used(); }
  std::int32_t blocks_total() const noexcept { return pool_.total(); }
  std::int32_t max_seq_len() const noexcept { return max_seq_len_; }

  const std::int32_t* block_table(seq_id seq) const {
    auto it = seqs_.find(seq);
    return it == seqs_.end() ? nullptr : it->second.blocks.data();
  }
  KvLayerView view(int layer) { return storage_.view(layer, BlockSize); }
  void fill(float x) { storage_.fill(x); }

 private:
  struct Seq {
    std::vector<std::int32_t> blocks;
    std::int32_t length = 0;
  };
  detail::KvStorage<Backend> storage_;
  BlockPool pool_;
  std::int32_t max_seq_len_;
  std::unordered_map<seq_id, Seq> seqs_;
};

}  // namespace eexit
