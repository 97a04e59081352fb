#pragma once
// ContiguousCache: llama2.c's layout, one region of max_seq_len positions per sequence
// slot. Expressed as a block table of one block of max_seq_len tokens, so the same
// attention code serves both caches.
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "eexit/cache/kv_storage.hpp"

namespace eexit {

template <class Backend>
class ContiguousCache {
 public:
  using backend_type = Backend;
  using seq_id = std::int64_t;

  // n_seqs sequence slots of cfg.max_seq_len positions each; kv: the K/V precision.
  ContiguousCache(Backend& be, const ModelConfig& cfg, std::int32_t n_seqs, dtype kv = dtype::f32)
      : storage_(be, cfg, std::size_t(n_seqs > 0 ? n_seqs : 0) * std::size_t(cfg.max_seq_len), kv),
        max_seq_len_(cfg.max_seq_len),
        slot_ids_(std::size_t(n_seqs)) {
    for (std::int32_t i = n_seqs - 1; i >= 0; --i) {
      slot_ids_[std::size_t(i)] = i;
      free_.push_back(i);
    }
  }

  std::int32_t block_size() const noexcept { return max_seq_len_; }

  bool reserve(seq_id seq, std::int32_t n) {
    auto it = seqs_.find(seq);
    if (it == seqs_.end()) {
      if (free_.empty() || n > max_seq_len_) return false;
      it = seqs_.emplace(seq, Seq{free_.back(), 0}).first;
      free_.pop_back();
    }
    if (it->second.length + n > max_seq_len_) return false;
    it->second.length += n;
    return true;
  }
  void truncate(seq_id seq, std::int32_t new_length) {
    auto it = seqs_.find(seq);
    if (it != seqs_.end() && new_length < it->second.length) it->second.length = new_length;
  }
  void release(seq_id seq) {
    auto it = seqs_.find(seq);
    if (it == seqs_.end()) return;
    free_.push_back(it->second.slot);
    seqs_.erase(it);
  }
  std::int32_t length(seq_id seq) const {
    auto it = seqs_.find(seq);
    return it == seqs_.end() ? 0 : it->second.length;
  }
  // A slot is all or nothing: a sequence that has one may grow to max_seq_len.
  std::int64_t free_tokens() const noexcept { return std::int64_t(free_.size()) * max_seq_len_; }
  std::int64_t capacity_tokens() const noexcept {
    return std::int64_t(slot_ids_.size()) * max_seq_len_;
  }
  std::int32_t blocks_used() const noexcept { return std::int32_t(seqs_.size()); }
  std::int32_t blocks_total() const noexcept { return std::int32_t(slot_ids_.size()); }
  std::int32_t max_seq_len() const noexcept { return max_seq_len_; }

  const std::int32_t* block_table(seq_id seq) const {
    auto it = seqs_.find(seq);
    return it == seqs_.end() ? nullptr : &slot_ids_[std::size_t(it->second.slot)];
  }
  KvLayerView view(int layer) { return storage_.view(layer, max_seq_len_); }
  dtype kv_dtype() const noexcept { return storage_.kv_dtype(); }
  void fill(float x) { storage_.fill(x); }

 private:
  struct Seq {
    std::int32_t slot;
    std::int32_t length;
  };
  detail::KvStorage<Backend> storage_;
  std::int32_t max_seq_len_;
  std::vector<std::int32_t> slot_ids_;  // slot_ids_[i] == i: a one-entry block table per slot
  std::vector<std::int32_t> free_;
  std::unordered_map<seq_id, Seq> seqs_;
};

}  // namespace eexit
