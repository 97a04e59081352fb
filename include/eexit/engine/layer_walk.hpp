#pragma once
// LayerWalk: the only code that runs a model over rows (DESIGN.md §3, the loop inside the
// step): embed, every layer, the exit points (ask the policy, KV-fill and compact the rows
// that leave), the final head. It does not sample: every row that yields a token is handed
// to a sink with the logits of the head that decided, so the engine samples and a
// benchmark can teacher-force (score given tokens) through exactly the same decisions.
//
// Row order: rows that start late first (descending start layer), then the other rows
// that never exit (prefill chunks, verify rows), decode rows last. A late row enters the
// active range when the walk reaches its start layer, so the range grows at its front;
// rows that leave at an exit point are decode rows, so it shrinks from its end. At every
// layer the active rows are one contiguous range [lo, hi) and nothing is copied.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "eexit/concepts.hpp"
#include "eexit/core/error.hpp"
#include "eexit/core/kv_view.hpp"
#include "eexit/policy/cost_model.hpp"
#include "eexit/policy/exit_rows.hpp"
#include "eexit/policy/fill.hpp"

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

// One walk's input. tokens and rowkv: (rows). Rows [0, n_prefill) never exit early (the
// "may exit" flag is off): first the late rows, then prefill chunks and any other full-depth
// rows; then one row per decode row, which may exit (DecodeRows).
// Late rows [0, start_layer.size()): row i starts at layer start_layer[i] > 0 from the
// hidden state start_hidden[i] (backend memory, (dim): the output of layer start_layer[i]-1
// as an earlier walk left it); its token is not embedded and its K/V of the layers below
// its start must already be in the cache. Start layers are non-increasing.
// yield_rows / yield_slots (the "samples" flag): the rows < n_prefill whose output is a
// token (a chunk's last row that ends its prompt; every verify position of a speculative
// row, so several rows of one sequence may yield) and the caller's id for each.
// stop_exit >= 0 ends the walk at that exit point: no layer after it runs and every
// yielding row (yield rows and the decode rows still active) is yielded at that exit's
// head, with its scores (a draft pass); -1 = the final head.
// The walk reorders rowkv and decode as rows leave; the caller refills all of it per walk.
struct WalkRows {
  std::vector<std::int32_t> tokens;  // (rows)
  std::vector<RowKv> rowkv;          // (rows)
  std::size_t n_prefill = 0;
  std::vector<std::int32_t> start_layer;              // (late rows) non-increasing, each > 0
  std::vector<const float*> start_hidden;             // (late rows) each (dim), backend memory
  std::vector<std::int32_t> yield_rows, yield_slots;  // (rows < n_prefill that yield a token)
  DecodeRows decode;                                  // (rows - n_prefill)
  int stop_exit = -1;

  std::size_t n_late() const noexcept { return start_layer.size(); }
  // Appends a late row; call before any other row, in non-increasing start order.
  void push_late(std::int32_t token, RowKv kv, std::int32_t start, const float* hidden) {
    tokens.push_back(token);
    rowkv.push_back(kv);
    start_layer.push_back(start);
    start_hidden.push_back(hidden);
    ++n_prefill;
  }
  // Marks the row appended last as yielding its token to the caller's slot.
  void yield_last(std::int32_t slot) {
    yield_rows.push_back(std::int32_t(tokens.size()) - 1);
    yield_slots.push_back(slot);
  }
  // Appends a row that runs from layer 0, never exits and yields to slot (a draft pass's
  // row, a bonus verify row); call before any decode row.
  void push_yielding(std::int32_t token, RowKv kv, std::int32_t slot) {
    tokens.push_back(token);
    rowkv.push_back(kv);
    ++n_prefill;
    yield_last(slot);
  }
  void clear() {
    tokens.clear();
    rowkv.clear();
    n_prefill = 0;
    start_layer.clear();
    start_hidden.clear();
    yield_rows.clear();
    yield_slots.clear();
    decode.clear();
    stop_exit = -1;
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
  // A draft pass with a draft vocabulary (model/draft_vocab.hpp): the token id of each of the
  // vocab logit columns (top1 holds token ids); null = column t is token t.
  const std::int32_t* vocab_ids = nullptr;
  const std::int32_t* top1 = nullptr;  // (n) argmax where the exit computed scores, or null
  const float* scores = nullptr;       // (n, 3) max prob, top-1 - top-2, entropy; stop_exit only
  // (n, dim) the rows' hidden states the head read, backend memory, valid during the call
  // (a draft saves them to start its verify rows late).
  const float* hidden = nullptr;
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
  std::int64_t exit_heads = 0;      // exit points where an exit head ran over the decode rows
  std::int64_t exit_head_rows = 0;  // rows those heads ran over
};

// A policy that learns costs: the walk times its ops (synchronizing the backend around
// each, so only when wants_timings() says so) and hands them over when it ends.
template <class P>
concept policy_observes_costs = requires(P& p, const P& cp, const WalkTimings& t) {
  { cp.wants_timings() } -> std::convertible_to<bool>;
  p.observe(t);
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
    const int n_exits = model_->n_exits();
    const int stop = w.stop_exit < 0 ? n_exits - 1 : w.stop_exit;
    const auto exit_layers = model_->exit_layers();
    const int last_layer = exit_layers[std::size_t(stop)];
    check_late(w, last_layer);
    auto& be = model_->backend();
    float* x = backend_t::data(x_);  // (rows, dim) residual stream
    const std::size_t nl = w.n_late();
    model_->embed(w.tokens.data() + nl, rows - nl, x + nl * dim);
    for (std::size_t i = 0; i < nl; ++i) be.copy(w.start_hidden[i], x + i * dim, dim);
    const bool exits = pol.evaluates_exits() && w.decode.size() > 0 && n_exits > 1;
    timings_.clear();
    timed_ = false;
    if constexpr (policy_observes_costs<Policy>) timed_ = pol.wants_timings();
    track_prev_ = false;
    if (exits)
      for (int e = 0; e < stop; ++e) track_prev_ |= pol.needs(e).prev_hidden;
    if (track_prev_) keep_prev(x + np * dim, (rows - np) * dim);  // the embedding
    std::size_t lo = nl, n_active = rows;                         // active rows: [lo, n_active)
    for (int l = 0, e = 0; l <= last_layer && n_active > 0; ++l) {
      while (lo > 0 && w.start_layer[lo - 1] <= l) --lo;
      first_active_ = lo;
      if (n_active > lo)
        timed(op_kind::layer, l, n_active - lo, [&] {
          model_->forward_layer(l, x + lo * dim, n_active - lo, w.rowkv.data() + lo,
                                cache_->view(l), ws_);
        });
      if (e < stop && l == exit_layers[std::size_t(e)]) {
        if (exits && n_active > np) n_active = exit_point(pol, e, l, w, n_active, sink);
        ++e;
      }
    }
    final_head(w, n_active, stop, sink);
    if constexpr (policy_observes_costs<Policy>) pol.observe(timings_);
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
    DecodeRows& d = w.decode;
    if constexpr (requires(ExitPointInfo i) { pol.begin_exit(i); }) {
      ExitPointInfo info;
      info.exit = e;
      info.layer = l;
      info.n_layers = c.n_layers;
      info.n_decode = nd;
      info.n_active = n_active - first_active_;
      info.n_yield = w.yield_rows.size() + nd;
      pol.begin_exit(info);
    }
    // Asked after begin_exit: a rule that weighs costs has decided this exit by now.
    const ExitNeeds needs = pol.needs(e);
    const bool head = needs.scores || needs.logits_host;  // exit logits of all nd rows
    if (head) {
      ++stats_.exit_heads;
      stats_.exit_head_rows += std::int64_t(nd);
    }
    ExitRows er;
    er.exit = e;
    er.layer = l;
    er.n_layers = c.n_layers;
    er.n = nd;
    er.vocab = vocab;
    er.dim = dim;
    timed(op_kind::head, e, nd, [&] {
      if (head) model_->exit_logits(e, xd, nd, backend_t::data(logits_), ws_);
      if (needs.scores)
        be.exit_scores(backend_t::data(logits_), nd, vocab, backend_t::data(scores_),
                       backend_t::data(top1_));
    });
    if (needs.scores) {
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
      // A deferred fill leaves the skipped layers to the next step (the caller saves the
      // exit states the sink sees and starts those rows late from them).
      if (!policy_defers_fill(pol)) {
        const auto t0 = std::chrono::steady_clock::now();
        timed(op_kind::fill, e, nl, [&] {
          model_->kv_fill(l, backend_t::data(h_), nl, fill_rowkv_.data(), *cache_, ws_);
        });
        stats_.fill_time_s +=
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      }
      if (!head)  // the measure needed no head: the leaving rows' own, over them alone
        timed(op_kind::head, e, nl, [&] {
          model_->exit_logits(e, backend_t::data(h_), nl, backend_t::data(logits_), ws_);
        });
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
      y.hidden = backend_t::data(h_);
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

  // Late rows must be sorted, start inside the walk and not exit.
  static void check_late(const WalkRows& w, int last_layer) {
    const std::size_t nl = w.n_late();
    if (w.start_hidden.size() != nl || nl > w.n_prefill)
      throw error("layer walk", "late rows: start_hidden or n_prefill does not match start_layer");
    for (std::size_t i = 0; i < nl; ++i)
      if (w.start_layer[i] <= 0 || w.start_layer[i] > last_layer || !w.start_hidden[i] ||
          (i && w.start_layer[i] > w.start_layer[i - 1]))
        throw error("layer walk", "late rows need non-increasing start layers in (0, last layer]");
  }

  // The rows still active that yield a token: prefill chunks that end their prompt, verify
  // rows, and the decode rows that went the whole way. One head over all of them: the
  // final head, or exit `stop`'s with its scores when the walk stops early.
  template <class Sink>
  void final_head(WalkRows& w, std::size_t n_active, int stop, Sink& sink) {
    const auto& c = model_->config();
    const std::size_t dim = std::size_t(c.dim), full_vocab = std::size_t(c.vocab_size);
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
    be.gather_rows(backend_t::data(x_), y_row_.data(), ns, dim, backend_t::data(h_));
    // A draft pass (stopping before the last exit) reads only the draft vocabulary's
    // columns when the model has one.
    std::span<const std::int32_t> ids;
    if constexpr (requires(const Model& m) { m.draft_vocab(); })
      if (stop + 1 < model_->n_exits()) ids = model_->draft_vocab();
    const std::size_t vocab = ids.empty() ? full_vocab : ids.size();
    timed(op_kind::head, stop, ns, [&] {
      if constexpr (requires(const Model& m) { m.draft_vocab(); })
        if (!ids.empty()) {
          model_->draft_logits(stop, backend_t::data(h_), ns, backend_t::data(logits_), ws_);
          return;
        }
      model_->exit_logits(stop, backend_t::data(h_), ns, backend_t::data(logits_), ws_);
    });
    for (std::size_t j = 0; j < ns; ++j) y_row_[j] = std::int32_t(j);
    YieldedRows y;
    y.exit = stop;
    y.layer = model_->exit_layers()[std::size_t(stop)];
    y.n = ns;
    y.hidden = backend_t::data(h_);
    if (stop + 1 < model_->n_exits()) {
      be.exit_scores(backend_t::data(logits_), ns, vocab, backend_t::data(scores_),
                     backend_t::data(top1_));
      y.scores = be.host_view(backend_t::data(scores_), 3 * ns, stage_scores_);
      y.top1 = be.host_view(backend_t::data(top1_), ns, stage_top1_);
      if (!ids.empty()) {  // columns -> token ids
        y_top1_.assign(y.top1, y.top1 + ns);
        for (auto& t : y_top1_) t = ids[std::size_t(t)];
        y.top1 = y_top1_.data();
        y.vocab_ids = ids.data();
      }
    }
    y.vocab = vocab;
    y.slot = y_slot_.data();
    y.logits = be.host_view(backend_t::data(logits_), ns * vocab, stage_logits_);
    y.logit_row = y_row_.data();
    sink(y);
  }

  // Runs f; with timings on, times it as one op over `rows` rows (the backend synchronized
  // before and after, so the time is the op's own on a device too).
  template <class F>
  void timed(op_kind k, int index, std::size_t rows, F&& f) {
    if (!timed_) {
      f();
      return;
    }
    auto& be = model_->backend();
    be.synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    be.synchronize();
    timings_.add(k, index, rows,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
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
  WalkTimings timings_;  // this walk's timed ops, when the policy learns costs
  bool timed_ = false;
  std::size_t first_active_ = 0;  // rows before it have not started yet (late rows)
};

}  // namespace eexit
