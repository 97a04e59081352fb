#pragma once
// PagedCache: vLLM-style block tables over a pool of fixed-size blocks, with automatic
// prefix caching: full blocks whose K/V were computed at full depth get an identity (their
// tokens and everything before them, block_pool.hpp), stay cached after their sequences
// release them, and a new sequence starts on the cached blocks of its longest matching
// prefix (match_prefix) instead of computing them again.
//
// What is shared: only blocks that commit_full_depth named, i.e. blocks every position of
// which was computed through every layer by a prefill row (prompt prefill or the
// recomputation after a preemption). A block that holds a decode token (whose deeper K/V
// may be an exit fill, a deferred fill or a rolled-back draft) is never named, so early
// exit never leaks into another sequence's context. Shared blocks are read-only: a match
// stops one token short of the sequence's end, so the sequence writes only positions past
// its shared blocks, and truncate never drops below what the sequence computed.
#include <algorithm>
#include <cstdint>
#include <span>
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

  // n_blocks blocks of BlockSize tokens; kv: the K/V precision (dtype::f32 or f16).
  PagedCache(Backend& be, const ModelConfig& cfg, std::int32_t n_blocks, dtype kv = dtype::f32)
      : storage_(be, cfg, std::size_t(n_blocks > 0 ? n_blocks : 0) * BlockSize, kv),
        pool_(n_blocks, BlockSize),
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
    if (std::int32_t(s.ids.size()) > new_length / BlockSize)
      s.ids.resize(std::size_t(new_length / BlockSize));
  }
  void release(seq_id seq) {
    auto it = seqs_.find(seq);
    if (it == seqs_.end()) return;
    // Last block first: of a sequence's cached blocks the tail is evicted before the head,
    // which other prompts are likelier to share.
    auto& bl = it->second.blocks;
    for (auto b = bl.rbegin(); b != bl.rend(); ++b) pool_.give_back(*b);
    seqs_.erase(it);
  }

  // Prefix caching. For a sequence that holds nothing yet: takes the cached blocks of the
  // longest prefix of `tokens` (whole blocks, at most tokens.size() - 1 tokens: the last
  // token is always computed, the engine needs its logits) and returns how many tokens they
  // hold; the sequence's length is that. 0 if none match (nothing changes then).
  std::int32_t match_prefix(seq_id seq, std::span<const std::int32_t> tokens) {
    if (seqs_.count(seq) || tokens.empty()) return 0;
    const std::int32_t most = std::int32_t(tokens.size() - 1) / BlockSize;
    Seq s;
    std::uint64_t parent = 0;
    for (std::int32_t i = 0; i < most; ++i) {
      const std::int32_t b =
          pool_.find(parent, tokens.subspan(std::size_t(i) * BlockSize, BlockSize));
      if (b < 0) break;
      pool_.share(b);
      s.blocks.push_back(b);
      parent = pool_.serial(b);
      s.ids.push_back(parent);
    }
    if (s.blocks.empty()) return 0;
    s.length = std::int32_t(s.blocks.size()) * BlockSize;
    const std::int32_t n = s.length;
    seqs_.emplace(seq, std::move(s));
    return n;
  }
  // The K/V of the sequence's first n tokens (`tokens` holds at least those) are complete:
  // every layer, computed at full depth by prefill rows (or shared). Names its full blocks
  // among them, so that later sequences can share them. The engine calls this after a walk
  // for every prefill chunk; never for decode tokens (see the top of this file).
  void commit_full_depth(seq_id seq, std::span<const std::int32_t> tokens, std::int32_t n) {
    auto it = seqs_.find(seq);
    if (it == seqs_.end()) return;
    auto& s = it->second;
    n = std::min({n, s.length, std::int32_t(tokens.size())});
    for (std::int32_t i = std::int32_t(s.ids.size()); (i + 1) * BlockSize <= n; ++i) {
      const auto toks = tokens.subspan(std::size_t(i) * BlockSize, BlockSize);
      const std::uint64_t parent = s.ids.empty() ? 0 : s.ids.back();
      const std::int32_t b = s.blocks[std::size_t(i)];
      const std::int32_t same = pool_.find(parent, toks);
      // Another sequence computed the same block first: the chain goes on through its
      // identity and this copy stays private (freed, not cached, on release).
      s.ids.push_back(same >= 0 ? pool_.serial(same) : pool_.name(b, parent, toks));
    }
  }
  // Blocks no sequence holds that keep their K/V for a later match (evictable: counted free).
  std::int32_t blocks_cached() const noexcept { return pool_.cached(); }
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
  dtype kv_dtype() const noexcept { return storage_.kv_dtype(); }
  void fill(float x) { storage_.fill(x); }

 private:
  struct Seq {
    std::vector<std::int32_t> blocks;
    std::vector<std::uint64_t> ids;  // identities of the leading full-depth blocks (chain)
    std::int32_t length = 0;
  };
  detail::KvStorage<Backend> storage_;
  BlockPool pool_;
  std::int32_t max_seq_len_;
  std::unordered_map<seq_id, Seq> seqs_;
};

}  // namespace eexit
