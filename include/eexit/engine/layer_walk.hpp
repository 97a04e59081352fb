#pragma once
// LayerWalk: the only code that runs a model over rows (DESIGN.md §3, the loop inside the
// step): embed, every layer, the exit points (ask the policy, KV-fill and compact the rows
// that leave), the final head. It does not sample: every row that yields a token is handed
// to a sink with the logits of the head that decided, so the engine samples and a
// benchmark can teacher-force (score given tokens) through exactly the same decisions.
//
// Row order: prefill rows first, decode rows last. Rows that leave at an exit point are
// decode rows, so the active range shrinks from its end and prefill rows never move.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "eexit/concepts.hpp"
#include "eexit/core/error.hpp"
#include "eexit/core/kv_view.hpp"
#include "eexit/policy/exit_rows.hpp"

namespace eexit {

// The decode rows of one walk, struct of arrays: ExitRows points into these vectors and
// the walk compacts them in place when rows leave (no copies in and out per exit point).
struct DecodeRows {
  std::vector<std::int32_t> slot;       // (n) the caller's id of the row (what its sink gets)
  std::vector<std::int64_t> request;    // (n) request id
  std::vector<std::int32_t> step;       // (n) tokens the sequence generated so far
  std::vector<std::int32_t> max_steps;  // (n) its max_tokens
  std::vector<float> threshold;         // (n) the request's exit threshold, NaN = policy's
  std::vector<std::uint32_t> state;     // (n) policy scratch, zero at the walk's start

  std::size_t size() const noexcept { return slot.size(); }
  void clear() {
    slot.clear();
    request.clear();
    step.clear();
    max_steps.clear();
    threshold.clear();
    state.clear();
  }
  void push(std::int32_t s, std::int64_t req, std::int32_t st, std::int32_t max_st, float thr) {
    slot.push_back(s);
    request.push_back(req);
    step.push_back(st);
    max_steps.push_back(max_st);
    threshold.push_back(thr);
    state.push_back(0);
  }
  // Keeps the rows with leave[i] == 0, in order.
  void keep_staying(const std::uint8_t* leave) {
    std::size_t k = 0;
    for (std::size_t i = 0; i < size(); ++i) {
      if (leave[i]) continue;
      slot[k] = slot[i];
      request[k] = request[i];
      step[k] = step[i];
      max_steps[k] = max_steps[i];
      threshold[k] = threshold[i];
      state[k] = state[i];
      ++k;
    }
    slot.resize(k);
    request.resize(k);
    step.resize(k);
    max_steps.resize(k);
    threshold.resize(k);
    state.resize(k);
  }
};

// One walk's input. tokens and rowkv: (rows), prefill rows [0, n_prefill) then one row per
// decode row. yield_rows / yield_slots: the prefill rows (< n_prefill) whose output is a
// token (the last row of a chunk that ends its prompt) and the caller's id for each.
// The walk reorders rowkv and decode as rows leave; the caller refills all of it per walk.
struct WalkRows {
  std::vector<std::int32_t> tokens;  // (rows)
  std::vector<RowKv> rowkv;          // (rows)
  std::size_t n_prefill = 0;
  std::vector<std::int32_t> yield_rows, yield_slots;  // (prefill rows that yield a token)
  DecodeRows decode;                                  // (rows - n_prefill)

  void clear() {
    tokens.clear();
    rowkv.clear();
    n_prefill = 0;
    yield_rows.clear();
    yield_slots.clear();
    decode.clear();
  }
};

// Rows that got their token at one head, as a sink sees them (host memory).
struct YieldedRows {
  int exit = 0;            // exit point index (n_exits - 1 = the final head)
  std::int32_t layer = 0;  // the layer after which it sits
  std::size_t n = 0;       // rows
  std::size_t vocab = 0;
  const std::int32_t* slot = nullptr;       // (n) the caller's row ids
  const float* logits = nullptr;            // (head rows, vocab)
  const std::int32_t* logit_row = nullptr;  // (n) each row's row in logits
  const std::int32_t* top1 = nullptr;       // (n) argmax where the exit computed scores, or null
  std::span<const float> row_logits(std::size_t j) const {
    return {logits + std::size_t(logit_row[j]) * vocab, vocab};
  }
};

// A sink takes the rows that yield tokens, once per head that yields any, in walk order.
template <class S>
concept walk_sink = requires(S& s, const YieldedRows& y) {
  s(y);
};

// Counters a walk adds to.
struct WalkStats {
  std::int64_t involuntary_exits = 0;  // row-exit points where a row left unconfident
  std::int64_t involuntary_stays = 0;  // row-exit points where a confident row went on
  double fill_time_s = 0.0;
};

template <class Model, class Cache>
requires exit_model<Model> && kv_cache<Cache> && fills_cache<Model, Cache>
class LayerWalk {
 public:
  using backend_t = typename Model::backend_type;

  // max_rows: rows per walk; max_yield: rows that yield a token per walk (decode rows +
  // prefill chunks that end their prompt).
  LayerWalk(Model& model, Cache& cache, std::size_t max_rows, std::size_t max_yield)
      : model_(&model), cache_(&cache), max_rows_(max_rows), max_yield_(max_yield) {
    const auto& c = model.config();
    auto& be = model.backend();
    ws_ = model.make_workspace(max_rows);
    x_ = be.template allocate<float>(max_rows * std::size_t(c.dim));
    h_ = be.template allocate<float>(max_yield * std::size_t(c.dim));
    logits_ = be.template allocate<float>(max_yield * std::size_t(c.vocab_size));
    scores_ = be.template allocate<float>(max_yield * 3);
    top1_ = be.template allocate<std::int32_t>(max_yield);
    cls_ = be.template allocate<float>(max_yield);
  }

  std::size_t max_rows() const noexcept { return max_rows_; }
  std::size_t max_yield() const noexcept { return max_yield_; }
  const WalkStats& stats() const noexcept { return stats_; }

  // Runs the rows through the model; every row that yields a token reaches the sink. The
  // K/V of every row (and, by the fill, of every layer a leaving row skipped) is in the
  // cache afterwards. Throws on a model or backend failure only.
  template <policy Policy, walk_sink Sink>
  void run(Policy& pol, WalkRows& w, Sink& sink) {
    const auto& c = model_->config();
    const std::size_t dim = std::size_t(c.dim), rows = w.tokens.size(), np = w.n_prefill;
    if (rows == 0) return;
    if (rows > max_rows_ || w.yield_rows.size() + w.decode.size() > max_yield_)
      throw error("layer walk", "more rows than the walk was sized for");
    float* x = backend_t::data(x_);  // (rows, dim) residual stream
    model_->embed(w.tokens.data(), rows, x);
    const int n_exits = model_->n_exits();
    const bool exits = pol.evaluates_exits() && w.decode.size() > 0 && n_exits > 1;
    track_prev_ = false;
    if (exits)
      for (int e = 0; e + 1 < n_exits; ++e) track_prev_ |= pol.needs(e).prev_hidden;
    if (track_prev_) keep_prev(x + np * dim, (rows - np) * dim);  // the embedding
    const auto exit_layers = model_->exit_layers();
    std::size_t n_active = rows;
    for (int l = 0, e = 0; l < c.n_layers && n_active > 0; ++l) {
      model_->forward_layer(l, x, n_active, w.rowkv.data(), cache_->view(l), ws_);
      if (e + 1 < n_exits && l == exit_layers[std::size_t(e)]) {
        if (exits && n_active > np) n_active = exit_point(pol, e, l, w, n_active, sink);
        ++e;
      }
    }
    final_head(w, n_active, sink);
  }

 private:
  // Exit point e after layer l over the active decode rows [np, n_active): ask the policy,
  // fill and yield the rows that leave, compact the rest. Returns the new n_active.
  template <class Policy, class Sink>
  std::size_t exit_point(Policy& pol, int e, int l, WalkRows& w, std::size_t n_active, Sink& sink) {
    const auto& c = model_->config();
    const std::size_t dim = std::size_t(c.dim), vocab = std::size_t(c.vocab_size);
    const std::size_t np = w.n_prefill, nd = n_active - np;
    auto& be = model_->backend();
    float* x = backend_t::data(x_);
    float* xd = x + np * dim;  // (nd, dim) decode rows' exit hidden states
    const ExitNeeds needs = pol.needs(e);
    const bool head = needs.scores || needs.logits_host;  // exit logits of all nd rows
    DecodeRows& d = w.decode;
    ExitRows er;
    er.exit = e;
    er.layer = l;
    er.n_layers = c.n_layers;
    er.n = nd;
    er.vocab = vocab;
    er.dim = dim;
    if (head) model_->exit_logits(e, xd, nd, backend_t::data(logits_), ws_);
    if (needs.scores) {
      be.exit_scores(backend_t::data(logits_), nd, vocab, backend_t::data(scores_),
                     backend_t::data(top1_));
      er.scores = be.host_view(backend_t::data(scores_), 3 * nd, stage_scores_);
      er.top1 = be.host_view(backend_t::data(top1_), nd, stage_top1_);
    }
    if (needs.logits_host)
      er.logits = be.host_view(backend_t::data(logits_), nd * vocab, stage_logits_);
    if (needs.hidden) er.hidden = be.host_view(xd, nd * dim, stage_hidden_);
    if (needs.prev_hidden) er.prev_hidden = prev_h_.data();
    if (needs.classifier) {
      model_->exit_classifier(e, xd, nd, backend_t::data(cls_), ws_);
      er.classifier = be.host_view(backend_t::data(cls_), nd, stage_cls_);
    }
    er.step = d.step.data();
    er.max_steps = d.max_steps.data();
    er.row_state = d.state.data();
    er.request = d.request.data();
    er.row_threshold = d.threshold.data();
    conf_.assign(nd, 0);
    leave_.assign(nd, 0);
    pol.decide(er, std::span<std::uint8_t>(conf_), std::span<std::uint8_t>(leave_));
    leaving_.clear();
    for (std::size_t i = 0; i < nd; ++i) {
      stats_.involuntary_exits += leave_[i] && !conf_[i];
      stats_.involuntary_stays += conf_[i] && !leave_[i];
      if (leave_[i]) leaving_.push_back(std::int32_t(np + i));
    }
    if (!leaving_.empty()) {
      const std::size_t nl = leaving_.size();
      // The leaving rows' exit hidden states, packed: for the fill (and the head when the
      // measure did not need it).
      be.gather_rows(x, leaving_.data(), nl, dim, backend_t::data(h_));
      fill_rowkv_.clear();
      for (auto r : leaving_) fill_rowkv_.push_back(w.rowkv[std::size_t(r)]);
      const auto t0 = std::chrono::steady_clock::now();
      model_->kv_fill(l, backend_t::data(h_), nl, fill_rowkv_.data(), *cache_, ws_);
      stats_.fill_time_s +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (!head) model_->exit_logits(e, backend_t::data(h_), nl, backend_t::data(logits_), ws_);
      YieldedRows y;
      y.exit = e;
      y.layer = l;
      y.n = nl;
      y.vocab = vocab;
      y.logits = be.host_view(backend_t::data(logits_), (head ? nd : nl) * vocab, stage_logits_);
      y_slot_.clear();
      y_row_.clear();
      y_top1_.clear();
      for (std::size_t j = 0; j < nl; ++j) {
        const std::size_t i = std::size_t(leaving_[j]) - np;
        y_slot_.push_back(d.slot[i]);
        y_row_.push_back(std::int32_t(head ? i : j));
        if (er.top1) y_top1_.push_back(er.top1[i]);
      }
      y.slot = y_slot_.data();
      y.logit_row = y_row_.data();
      y.top1 = er.top1 ? y_top1_.data() : nullptr;
      sink(y);
      // Compact the rows that go on to the front of the decode range, in order.
      std::size_t k = 0;
      for (std::size_t i = 0; i < nd; ++i) {
        if (leave_[i]) continue;
        if (k != i) {
          be.copy(xd + i * dim, xd + k * dim, dim);
          w.rowkv[np + k] = w.rowkv[np + i];
          if (track_prev_) std::copy_n(prev_h_.data() + i * dim, dim, prev_h_.data() + k * dim);
        }
        ++k;
      }
      d.keep_staying(leave_.data());
      n_active = np + k;
    }
    if (track_prev_) keep_prev(xd, (n_active - np) * dim);
    return n_active;
  }

  // The rows still active that yield a token: prefill chunks that end their prompt, and
  // the decode rows that went the whole way. One final head over all of them.
  template <class Sink>
  void final_head(WalkRows& w, std::size_t n_active, Sink& sink) {
    const auto& c = model_->config();
    const std::size_t dim = std::size_t(c.dim), vocab = std::size_t(c.vocab_size);
    const std::size_t np = w.n_prefill;
    y_row_.assign(w.yield_rows.begin(), w.yield_rows.end());
    y_slot_.assign(w.yield_slots.begin(), w.yield_slots.end());
    for (std::size_t i = 0; i < n_active - np; ++i) {
      y_row_.push_back(std::int32_t(np + i));
      y_slot_.push_back(w.decode.slot[i]);
    }
    const std::size_t ns = y_row_.size();
    if (ns == 0) return;
    auto& be = model_->backend();
    const int last = model_->n_exits() - 1;
    be.gather_rows(backend_t::data(x_), y_row_.data(), ns, dim, backend_t::data(h_));
    model_->exit_logits(last, backend_t::data(h_), ns, backend_t::data(logits_), ws_);
    for (std::size_t j = 0; j < ns; ++j) y_row_[j] = std::int32_t(j);
    YieldedRows y;
    y.exit = last;
    y.layer = c.n_layers - 1;
    y.n = ns;
    y.vocab = vocab;
    y.slot = y_slot_.data();
    y.logits = be.host_view(backend_t::data(logits_), ns * vocab, stage_logits_);
    y.logit_row = y_row_.data();
    sink(y);
  }

  // prev_h_ = n floats of backend rows at p (the states the next exit point compares with).
  void keep_prev(const float* p, std::size_t n) {
    const float* h = model_->backend().host_view(p, n, stage_hidden_);
    prev_h_.assign(h, h + n);
  }

  Model* model_;
  Cache* cache_;
  std::size_t max_rows_, max_yield_;
  typename Model::Workspace ws_;
  // Backend buffers, sized once: x_ (max_rows, dim) residual stream; h_ (max_yield, dim)
  // packed rows for a head or the fill; logits_ (max_yield, vocab); scores_ (max_yield, 3);
  // top1_ (max_yield); cls_ (max_yield) classifier outputs.
  typename backend_t::template buffer<float> x_, h_, logits_, scores_, cls_;
  typename backend_t::template buffer<std::int32_t> top1_;
  // Host staging for host_view (used by device backends only; empty on the CPU).
  std::vector<float> stage_scores_, stage_logits_, stage_hidden_, stage_cls_;
  std::vector<std::int32_t> stage_top1_;
  std::vector<float> prev_h_;  // (active decode rows, dim) states at the previous exit point
  bool track_prev_ = false;
  std::vector<std::uint8_t> conf_, leave_;             // (decode rows) the policy's answers
  std::vector<std::int32_t> leaving_;                  // (leaving rows) their row in x
  std::vector<RowKv> fill_rowkv_;                      // (leaving rows)
  std::vector<std::int32_t> y_slot_, y_row_, y_top1_;  // (yielded rows) for the sink
  WalkStats stats_;
};

}  // namespace eexit
