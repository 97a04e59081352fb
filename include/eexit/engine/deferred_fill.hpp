#pragma once
// DeferredFill: the bookkeeping of the DeferredRecompute fill (policy/fill.hpp), for the
// engine and for anything else that drives the LayerWalk (the teacher-forced benchmark).
// A decode row that leaves at an exit point under a deferred fill saves its exit hidden
// state here; the next walk runs it again as a late row from the layer after the exit
// (LayerWalk's start-layer rows), writing the exact K/V of the layers it skipped, and
// yields nothing. Two backend buffers alternate: the rows of this walk start from one while
// the rows leaving in it save into the other. lay_out_deferred is the engine's use of it.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "eexit/concepts.hpp"
#include "eexit/core/error.hpp"
#include "eexit/core/kv_view.hpp"
#include "eexit/engine/engine_stats.hpp"
#include "eexit/engine/layer_walk.hpp"
#include "eexit/engine/request.hpp"
#include "eexit/engine/sequence.hpp"

namespace eexit {

template <class Backend>
class DeferredFill {
 public:
  struct Row {
    std::int64_t seq = 0;    // the cache's sequence id
    std::int32_t pos = 0;    // the token's position
    std::int32_t start = 0;  // the first layer it skipped
    std::int32_t token = 0;  // the token at pos (the row's input)
    std::int64_t tag = 0;    // the caller's (the engine: its sequence's preemption count)
  };

  DeferredFill() = default;
  // max_rows: rows that may leave in one walk; dim: the model's.
  DeferredFill(Backend& be, std::size_t max_rows, std::size_t dim)
      : be_(&be), max_rows_(max_rows), dim_(dim) {
    for (auto& b : h_) b = be.template allocate<float>(max_rows * dim);  // (max_rows, dim)
  }

  // Rows saved in the walk now running (or the last one), for the next walk.
  const std::vector<Row>& pending() const noexcept { return pending_; }

  // Forgets the pending rows (their sequences are gone).
  void drop_all() { pending_.clear(); }

  // A row left after layer exit_layer with exit hidden state h (backend memory, (dim)).
  void defer(std::int64_t seq, std::int32_t pos, std::int32_t exit_layer, std::int32_t token,
             const float* h, std::int64_t tag = 0) {
    if (pending_.size() >= max_rows_) throw error("deferred fill", "more rows than sized for");
    be_->copy(h, Backend::data(h_[1]) + pending_.size() * dim_, dim_);
    pending_.push_back({seq, pos, exit_layer + 1, token, tag});
  }

  // Before a walk: the pending rows that keep(row) accepts go into w as its first rows
  // (late rows, deepest start first; call on an empty w). The rest are dropped (their
  // sequence finished or was preempted). Returns {rows laid out, their layers, dropped}.
  struct Laid {
    std::int64_t rows = 0, layers = 0, dropped = 0;
  };
  template <class Keep, class BlockTable>
  Laid lay_out(WalkRows& w, std::int32_t n_layers, Keep keep, BlockTable block_table) {
    std::swap(h_[0], h_[1]);  // the saved states are read from [0]; new ones go to [1]
    laying_.swap(pending_);
    pending_.clear();
    order_.clear();
    Laid out;
    for (std::size_t i = 0; i < laying_.size(); ++i) {
      if (keep(laying_[i]))
        order_.push_back(i);
      else
        ++out.dropped;
    }
    std::stable_sort(order_.begin(), order_.end(), [&](std::size_t a, std::size_t b) {
      return laying_[a].start > laying_[b].start;
    });
    const float* saved = Backend::data(h_[0]);
    for (std::size_t i : order_) {
      const Row& r = laying_[i];
      w.push_late(r.token, RowKv{block_table(r.seq), r.pos}, r.start, saved + i * dim_);
      ++out.rows;
      out.layers += n_layers - r.start;
    }
    return out;
  }

 private:
  Backend* be_ = nullptr;
  std::size_t max_rows_ = 0, dim_ = 0;
  // (2, max_rows, dim): [0] the states this walk's late rows start from, [1] the exit
  // states saved in it; swapped by lay_out.
  typename Backend::template buffer<float> h_[2];
  std::vector<Row> pending_, laying_;
  std::vector<std::size_t> order_;
};

// The engine's step: the rows that exited in the last step run their skipped layers now,
// first in the row order (late rows, deepest start first). A row whose sequence finished,
// was aborted or was preempted since (the engine tags rows with the sequence's preemption
// count) is dropped: its K/V are gone with its blocks (a preempted sequence recomputes
// every layer of every token). Counts into stats' deferred_* fields.
template <class Backend, kv_cache Cache>
void lay_out_deferred(DeferredFill<Backend>& d, WalkRows& w, std::int32_t n_layers,
                      const Cache& cache,
                      const std::unordered_map<request_id, std::unique_ptr<Sequence>>& seqs,
                      EngineStats& stats) {
  const auto laid = d.lay_out(
      w, n_layers,
      [&](const auto& r) {
        const auto it = seqs.find(r.seq);
        const Sequence* s = it == seqs.end() ? nullptr : it->second.get();
        return s && !s->done && s->in_cache && s->stats.preemptions == r.tag &&
               s->n_computed > r.pos;
      },
      [&](std::int64_t seq) { return cache.block_table(seq); });
  stats.deferred_rows += laid.rows;
  stats.deferred_layers += laid.layers;
  stats.deferred_dropped += laid.dropped;
}

}  // namespace eexit
