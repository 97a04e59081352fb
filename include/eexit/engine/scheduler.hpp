#pragma once
// Scheduler: which sequences run this step and how many of their tokens (DESIGN.md §3,
// "plan"). Running sequences first, oldest first; then waiting ones, first come first
// served, while the token budget, the running slots and the cache allow. With prefix
// caching (a prefix_caching_cache, SchedulerOptions::prefix_cache) a sequence admitted with
// nothing in the cache starts on the cached blocks of its longest known prefix and only the
// rest is scheduled. Prompts go in chunks of what the budget leaves. When the cache is full the
// newest running sequence is preempted (its blocks freed; it is recomputed from scratch later). A
// sequence that cannot fit even alone never will: it is handed back to be finished with "length".
// Needs only a kv_cache: no model, testable on the host.
#include <algorithm>
#include <cstdint>
#include <deque>
#include <span>
#include <vector>

#include "eexit/concepts.hpp"
#include "eexit/engine/layer_walk.hpp"
#include "eexit/engine/sequence.hpp"

namespace eexit {

// One scheduled piece of work: `n` tokens of `seq` from position `start`.
struct Chunk {
  Sequence* seq;
  std::int32_t start, n;
  bool samples;  // the chunk ends at the sequence's last token: its last row yields a token
  bool decode;   // one generated token (not prompt or recompute): may exit early
};

// What schedule() decided for one step; the KV slots of every chunk are reserved.
struct Plan {
  std::vector<Chunk> chunks;          // running order (oldest first), then admitted ones
  std::vector<Sequence*> preempted;   // freed this step, back at the head of the queue
  std::vector<Sequence*> never_fits;  // removed from the queues: finish with "length"
  std::int64_t cached_tokens = 0;     // prefix caching: tokens admitted sequences did not compute
  bool empty() const noexcept { return chunks.empty(); }
};

struct SchedulerOptions {
  std::int32_t max_batch_tokens = 256;  // rows per step
  std::int32_t max_running = 64;        // sequences in the running batch
  bool prefix_cache = false;            // start admitted sequences on cached prefix blocks
};

// Prefill chunks first, decode rows last, so that rows leaving at an exit point shrink
// the walk's active range from its end and prefill rows never move. A row's slot is its
// chunk's index in plan.chunks after this reordering.
inline void order_chunks(Plan& plan) {
  std::stable_partition(plan.chunks.begin(), plan.chunks.end(),
                        [](const Chunk& ch) { return !ch.decode; });
}

// Appends the rows of the plan's chunks (ordered by order_chunks) to the walk's rows, except
// chunks k with skip[k] >= 0 (rows the caller lays out itself: self-speculation's verify
// rows). Advances those sequences' n_computed: once the walk has run, these K/V are in the
// cache.
template <kv_cache Cache>
void append_chunk_rows(Plan& plan, const Cache& cache, WalkRows& rows,
                       std::span<const int> skip = {}) {
  auto& chunks = plan.chunks;
  for (std::size_t k = 0; k < chunks.size(); ++k) {
    if (k < skip.size() && skip[k] >= 0) continue;
    const Chunk& ch = chunks[k];
    Sequence& s = *ch.seq;
    const std::int32_t* bt = cache.block_table(s.id);
    for (std::int32_t j = 0; j < ch.n; ++j) {
      rows.tokens.push_back(s.tokens[std::size_t(ch.start + j)]);
      rows.rowkv.push_back(RowKv{bt, ch.start + j});
    }
    if (ch.decode) {
      rows.decode.push(std::int32_t(k), s.id, s.stats.generated_tokens, s.req.max_tokens,
                       s.req.exit_threshold);
    } else {
      rows.n_prefill += std::size_t(ch.n);
      if (ch.samples) rows.yield_last(std::int32_t(k));
    }
    s.n_computed += ch.n;
  }
}

// The plan's rows for the walk, in walk order (order_chunks, then every chunk's rows).
template <kv_cache Cache>
void lay_out_rows(Plan& plan, const Cache& cache, WalkRows& rows) {
  order_chunks(plan);
  rows.clear();
  append_chunk_rows(plan, cache, rows);
}

template <kv_cache Cache>
class Scheduler {
 public:
  Scheduler(Cache& cache, SchedulerOptions opt) : cache_(&cache), opt_(opt) {}

  void add(Sequence& s) { waiting_.push_back(&s); }
  // Takes s out of the queues and frees its blocks (finished, aborted, failed).
  void remove(Sequence& s) {
    release(s);
    if (auto it = std::find(running_.begin(), running_.end(), &s); it != running_.end())
      running_.erase(it);
    if (auto it = std::find(waiting_.begin(), waiting_.end(), &s); it != waiting_.end())
      waiting_.erase(it);
  }

  const std::vector<Sequence*>& running() const noexcept { return running_; }
  const std::deque<Sequence*>& waiting() const noexcept { return waiting_; }

  // Plans one step and reserves its KV slots. n_computed is not advanced: the engine does
  // that when it runs the plan.
  Plan schedule() {
    Plan plan;
    std::int32_t budget = opt_.max_batch_tokens;
    for (std::size_t i = 0; i < running_.size() && budget > 0;) {
      Sequence& s = *running_[i];
      const std::int32_t n = std::min(s.pending(), budget);
      bool gone = false;  // s itself was preempted or can never fit
      while (!cache_->reserve(s.id, n)) {
        Sequence& victim = *running_.back();
        if (&victim == &s && running_.size() == 1) {
          // Alone and still no room: not an error of the engine; it ends with "length", as
          // a context limit would end it.
          remove(s);
          plan.never_fits.push_back(&s);
          gone = true;
          break;
        }
        preempt(victim, plan);
        if (&victim == &s) {
          gone = true;
          break;
        }
      }
      if (gone) continue;  // running_[i] is now the next sequence
      s.in_cache = true;
      plan.chunks.push_back(make_chunk(s, n));
      budget -= n;
      ++i;
    }
    while (budget > 0 && !waiting_.empty() && std::int32_t(running_.size()) < opt_.max_running) {
      Sequence& s = *waiting_.front();
      const std::int32_t cached = match_prefix(s);
      const std::int32_t n = std::min(s.pending(), budget);
      if (!cache_->reserve(s.id, n)) {
        if (cached > 0) {  // give the shared blocks back (they stay cached)
          cache_->release(s.id);
          s.n_computed = 0;
        }
        if (running_.empty()) {  // an empty cache cannot hold it: never will
          waiting_.pop_front();
          plan.never_fits.push_back(&s);
          continue;
        }
        break;
      }
      waiting_.pop_front();
      running_.push_back(&s);
      s.in_cache = true;
      plan.cached_tokens += cached;
      s.stats.cached_tokens += cached;
      plan.chunks.push_back(make_chunk(s, n));
      budget -= n;
    }
    return plan;
  }

 private:
  void release(Sequence& s) {
    if (!s.in_cache) return;
    cache_->release(s.id);
    s.in_cache = false;
  }

  // A sequence with nothing in the cache (new, or preempted) takes the cached blocks of its
  // tokens' longest known prefix: those tokens count as computed. Returns how many.
  std::int32_t match_prefix(Sequence& s) {
    if constexpr (prefix_caching_cache<Cache>) {
      if (!opt_.prefix_cache || s.n_computed != 0 || s.in_cache) return 0;
      s.n_computed = cache_->match_prefix(s.id, s.tokens);
      return s.n_computed;
    } else {
      return 0;
    }
  }

  void preempt(Sequence& s, Plan& plan) {
    release(s);
    s.n_computed = 0;
    ++s.stats.preemptions;
    running_.erase(std::find(running_.begin(), running_.end(), &s));
    waiting_.push_front(&s);
    plan.preempted.push_back(&s);
  }

  static Chunk make_chunk(Sequence& s, std::int32_t n) {
    const std::int32_t start = s.n_computed;
    const bool samples = start + n == std::int32_t(s.tokens.size());
    return Chunk{&s, start, n, samples, samples && n == 1 && start >= s.n_prompt};
  }

  Cache* cache_;
  SchedulerOptions opt_;
  std::vector<Sequence*> running_;
  std::deque<Sequence*> waiting_;
};

}  // namespace eexit
