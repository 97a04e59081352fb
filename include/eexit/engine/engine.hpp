#pragma once
// Engine: continuous batching over a model and a KV cache (DESIGN.md §3). One step is
//   plan   = scheduler.schedule()   which sequences, how many tokens each (scheduler.hpp)
//   rows   = the plan's rows        prefill rows first, decode rows last
//   walk   = layer_walk.run(...)    the model over the rows; tokens reach the sampling sink
//   update = outputs                tokens, text and finished requests (sequence.hpp)
// No threads and no Asio here: the serving layer drives step() from one thread.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "eexit/concepts.hpp"
#include "eexit/core/error.hpp"
#include "eexit/engine/completion.hpp"
#include "eexit/engine/deferred_fill.hpp"
#include "eexit/engine/layer_walk.hpp"
#include "eexit/engine/request.hpp"
#include "eexit/engine/scheduler.hpp"
#include "eexit/engine/sequence.hpp"
#include "eexit/engine/speculation.hpp"
#include "eexit/engine/validate.hpp"
#include "eexit/model/llama.hpp"
#include "eexit/policy/exit_policy.hpp"
#include "eexit/policy/full_depth.hpp"
#include "eexit/policy/self_speculative.hpp"
#include "eexit/text/tokenizer.hpp"

namespace eexit {

struct EngineOptions {
  std::int32_t max_batch_tokens = 256;  // rows per step: decode rows + prefill chunk rows
  std::int32_t max_running = 64;        // sequences in the running batch
  std::uint64_t seed = 0x5eed;          // seeds requests that bring none (mixed with the id)
};

// Engine-wide counters.
struct EngineStats {
  std::int64_t steps = 0;
  std::int64_t prompt_tokens = 0;  // prefill rows computed (recomputation included)
  std::int64_t generated_tokens = 0;
  std::int64_t preemptions = 0;
  std::int64_t decode_layers_computed = 0;  // layers run by decode rows
  std::int64_t decode_layers_full = 0;      // what full depth would have run
  std::vector<std::int64_t> exit_histogram;
  double fill_time_s = 0.0;
  std::int64_t involuntary_exits = 0;  // row-exit points where a row left unconfident
  std::int64_t involuntary_stays = 0;  // row-exit points where a confident row went on
  // Self-speculation: verify passes (one per speculating row and step), draft tokens
  // proposed and accepted, tokens those passes emitted, and the time of the draft walks
  // and of the walks that verified (prefill chunks riding in them included).
  std::int64_t verify_passes = 0;
  std::int64_t draft_tokens = 0;
  std::int64_t accepted_drafts = 0;
  std::int64_t speculative_tokens = 0;
  double draft_time_s = 0.0;
  double verify_time_s = 0.0;
  // Exit heads: exit points where one ran over the decode rows, and the rows it ran over
  // (a cost-model policy skips the ones that do not pay).
  std::int64_t exit_heads = 0;
  std::int64_t exit_head_rows = 0;
  // Deferred fill: rows that ran an exited token's skipped layers in the next step, the
  // layers they ran (not in decode_layers_computed), and rows dropped because their
  // sequence finished or was preempted first.
  std::int64_t deferred_rows = 0;
  std::int64_t deferred_layers = 0;
  std::int64_t deferred_dropped = 0;
  // Tokens that left at an exit point before the last layer.
  std::int64_t early_exits() const noexcept {
    std::int64_t n = 0;
    for (std::size_t e = 0; e + 1 < exit_histogram.size(); ++e) n += exit_histogram[e];
    return n;
  }
  double acceptance_rate() const noexcept {
    return draft_tokens ? double(accepted_drafts) / double(draft_tokens) : 0.0;
  }
  double tokens_per_verify() const noexcept {
    return verify_passes ? double(speculative_tokens) / double(verify_passes) : 0.0;
  }
};

template <policy Policy, kv_cache Cache,
          exit_model Model = LlamaModel<typename Cache::backend_type>>
requires fills_cache<Model, Cache>
class Engine {
 public:
  using policy_type = Policy;
  using cache_type = Cache;
  using model_type = Model;
  using Completion = eexit::Completion;

  Engine(Model& model, Cache& cache, Policy policy = Policy{}, EngineOptions opt = {})
      : model_(&model),
        cache_(&cache),
        policy_(std::move(policy)),
        opt_(check(opt)),
        spec_cfg_(speculation_of(policy_)),
        draft_exit_(draft_exit_of(model, spec_cfg_)),
        k_max_(draft_exit_ >= 0 ? spec_cfg_.max_draft : 0),
        sched_(cache, {opt_.max_batch_tokens, opt_.max_running}),
        defers_(policy_defers_fill(policy_)),
        walk_(model, cache,
              std::size_t(opt_.max_batch_tokens + opt_.max_running * (k_max_ + int(defers_))),
              std::size_t(opt_.max_running) * std::size_t(k_max_ + 1)) {
    if (defers_)
      deferred_ = DeferredFill<backend_type>(model.backend(), std::size_t(opt_.max_running),
                                             std::size_t(model.config().dim));
    if (k_max_ > 0)  // (max_running, K, dim) each drafting row's layer-E states, by round
      draft_hidden_ = model.backend().template allocate<float>(
          std::size_t(opt_.max_running) * std::size_t(k_max_) * std::size_t(model.config().dim));
    if constexpr (requires { policy_.thresholds.validate(0); })
      policy_.thresholds.validate(model.n_exits() - 1);
    if (k_max_ == 0 && policy_.evaluates_exits())
      for (int e = 0; e + 1 < model.n_exits(); ++e)
        if (policy_.needs(e).classifier && !model.has_classifier(e))
          throw error("policy", "the classifier measure needs classifier heads; exit " +
                                    std::to_string(e) + " of this model has none");
    stats_.exit_histogram.assign(std::size_t(model.n_exits()), 0);
  }

  // Optional: enables stop strings and text in outputs. The tokenizer must outlive the engine.
  void set_tokenizer(const Tokenizer* tok) { tok_ = tok; }

  // Throws what add_request would for `req`: eexit::request_error with its code. Reads only
  // what no step changes (config, cache capacity, tokenizer), so a serving layer may check a
  // request on its own thread before handing it over.
  void validate(const GenerateRequest& req) const {
    validate_request(req, model_->config(), cache_->capacity_tokens(), tok_ != nullptr);
  }

  // Queues a request. Throws eexit::request_error (with its code) for a request that can
  // never run; nothing is queued then.
  request_id add_request(GenerateRequest req) {
    validate(req);
    const request_id id = next_id_++;
    const std::uint64_t seed = req.sampling.seed.value_or(mix_seed(opt_.seed, std::uint64_t(id)));
    auto s = std::make_unique<Sequence>(id, std::move(req), seed, model_->n_exits(), tok_);
    sched_.add(*s);
    Sequence& added = *s;
    seqs_.emplace(id, std::move(s));
    // Nothing to generate: done now (the prefill would otherwise sample one token).
    if (added.req.max_tokens == 0) finish(added, finish_reason::length);
    return id;
  }

  // Aborts a request wherever it is; its KV blocks are freed now. The next step reports it
  // finished with finish_reason::abort. false if the id is unknown or already finished.
  bool abort(request_id id) {
    auto it = seqs_.find(id);
    if (it == seqs_.end() || it->second->done) return false;
    finish(*it->second, finish_reason::abort);
    return true;
  }

  bool has_work() const noexcept {
    return !sched_.running().empty() || !sched_.waiting().empty() || !pending_out_.empty();
  }
  std::size_t n_running() const noexcept { return sched_.running().size(); }
  std::size_t n_waiting() const noexcept { return sched_.waiting().size(); }
  const EngineStats& stats() const noexcept { return stats_; }
  Policy& policy() noexcept { return policy_; }
  Model& model() noexcept { return *model_; }
  Cache& cache() noexcept { return *cache_; }
  const EngineOptions& options() const noexcept { return opt_; }
  // Deferred fill: the rows the next step will run (each a token that exited in this step,
  // seq = its request id, start = the first layer it skipped).
  const std::vector<typename DeferredFill<typename Model::backend_type>::Row>& deferred_pending()
      const noexcept {
    return deferred_.pending();
  }
  // The draft exit point index while self-speculating, -1 when not.
  int draft_exit() const noexcept { return draft_exit_; }

  // One iteration. Never throws: a failure fails the requests of this step with
  // finish_reason::error and the engine stays usable.
  std::vector<RequestOutput> step() noexcept {
    std::vector<RequestOutput> out;
    try {
      step_impl(out);
    } catch (const std::exception& e) {
      fail_running(e.what());
    } catch (...) {
      fail_running("unknown error in step");
    }
    for (auto id : std::vector<request_id>(pending_out_))  // finished outside a chunk
      if (auto it = seqs_.find(id); it != seqs_.end()) emit(*it->second, out);
    return out;
  }

  // Convenience: run until every queued request is finished; outputs in request order.
  std::vector<Completion> run_to_completion() {
    std::vector<request_id> order;
    for (auto& [id, s] : seqs_)
      if (!s->done) order.push_back(id);
    std::sort(order.begin(), order.end());
    CompletionAccumulator acc;
    while (has_work())
      for (auto& o : step()) acc.add(o);
    std::vector<Completion> res;
    for (auto id : order) res.push_back(acc.take(id));
    return res;
  }

 private:
  static EngineOptions check(EngineOptions o) {
    if (o.max_batch_tokens <= 0 || o.max_running <= 0)
      throw error("engine options", "max_batch_tokens and max_running must be positive");
    return o;
  }

  static Speculation speculation_of(const Policy& p) {
    if constexpr (speculative_policy<Policy>) {
      Speculation s = p.speculation();
      s.validate();
      return s;
    } else {
      return Speculation{.max_draft = 0};
    }
  }

  // The exit point index drafts leave at; -1 = no speculation.
  static int draft_exit_of(const Model& m, const Speculation& s) {
    if (!s.enabled()) return -1;
    const auto layers = m.exit_layers();
    if (m.n_exits() < 2)
      throw error("self-spec", "the model has no early exit point to draft from (add exit layers)");
    if (s.draft_layer < 0) return 0;
    for (int e = 0; e + 1 < m.n_exits(); ++e)
      if (layers[std::size_t(e)] == s.draft_layer) return e;
    std::string have;
    for (int e = 0; e + 1 < m.n_exits(); ++e) {
      if (e) have.push_back(',');
      have.append(std::to_string(layers[std::size_t(e)]));
    }
    throw error("self-spec", "draft layer " + std::to_string(s.draft_layer) +
                                 " is not an exit point of the model (exit layers: " + have + ")");
  }

  // ---- the step: plan -> rows -> walk -> outputs -------------------------------------
  // With self-speculation: plan -> drafts (walks up to the draft exit) -> rows (verify
  // positions of the drafting rows first, starting late) -> walk -> accept, roll back.
  void step_impl(std::vector<RequestOutput>& out) {
    Plan plan = sched_.schedule();
    stats_.preemptions += std::int64_t(plan.preempted.size());
    for (Sequence* s : plan.never_fits) finish(*s, finish_reason::length);
    if (plan.empty()) return;
    ++stats_.steps;
    auto& chunks = plan.chunks;
    order_chunks(plan);  // chunk indices below are after this reordering
    spec_.clear();
    spec_of_chunk_.assign(chunks.size(), -1);
    if (k_max_ > 0) {
      plan_drafts(chunks);
      if (!spec_.empty()) draft();
    }
    rows_.clear();
    if (defers_) lay_out_deferred();
    const std::int32_t base = std::int32_t(chunks.size());  // verify slots start here
    const int late = model_->exit_layers()[std::size_t(std::max(draft_exit_, 0))] + 1;
    for (std::size_t e = 0; e < spec_.size(); ++e) {  // the draft positions: from layer E+1
      SpecRow& r = spec_[e];
      const std::int32_t* bt = cache_->block_table(r.s->id);
      for (int i = 0; i < r.rounds; ++i) {
        rows_.push_late(r.token(i), RowKv{bt, r.pos + i}, late, draft_state(e, i));
        yield(base + std::int32_t(e) * (k_max_ + 1) + i);
      }
    }
    for (std::size_t e = 0; e < spec_.size(); ++e) {  // a last draft no pass has seen
      SpecRow& r = spec_[e];
      const int k = r.k();
      if (r.rounds > k || !spec_cfg_.bonus_row) continue;
      rows_.tokens.push_back(r.drafts.back());
      rows_.rowkv.push_back(RowKv{cache_->block_table(r.s->id), r.pos + k});
      ++rows_.n_prefill;
      yield(base + std::int32_t(e) * (k_max_ + 1) + k);
    }
    append_chunk_rows(plan, *cache_, rows_, spec_of_chunk_);  // the drafting rows' are above
    for (const Chunk& ch : chunks)
      if (!ch.decode) stats_.prompt_tokens += ch.n;
    SamplingSink sink{this, &chunks, base};
    const auto t0 = std::chrono::steady_clock::now();
    // While speculating nothing exits early: every token is verified at full depth.
    in_walk_ = true;
    try {
      if (k_max_ > 0)
        walk_.run(full_, rows_, sink);
      else
        walk_.run(policy_, rows_, sink);
    } catch (...) {
      end_walk();
      throw;
    }
    end_walk();
    if (!spec_.empty()) stats_.verify_time_s += seconds_since(t0);
    const WalkStats& ws = walk_.stats();
    stats_.fill_time_s = ws.fill_time_s;
    stats_.exit_heads = ws.exit_heads;
    stats_.exit_head_rows = ws.exit_head_rows;
    stats_.involuntary_exits = ws.involuntary_exits;
    stats_.involuntary_stays = ws.involuntary_stays;
    for (auto& ch : chunks)
      if (!ch.seq->new_tokens.empty() || ch.seq->done) emit(*ch.seq, out);
  }

  void end_walk() {
    in_walk_ = false;
    for (Sequence* s : finished_in_walk_) sched_.remove(*s);
    finished_in_walk_.clear();
  }

  // ---- deferred fill --------------------------------------------------------------------
  // The rows that exited in the last step run their skipped layers now, first in the row
  // order (late rows, deepest start first), from the exit states saved in deferred_h_[0].
  // A row whose sequence finished, was aborted or was preempted since is dropped: its K/V
  // are gone with its blocks (a preempted sequence recomputes every layer of every token).
  void lay_out_deferred() {
    const auto laid = deferred_.lay_out(
        rows_, model_->config().n_layers,
        [&](const auto& r) {
          const auto it = seqs_.find(r.seq);
          const Sequence* s = it == seqs_.end() ? nullptr : it->second.get();
          return s && !s->done && s->in_cache && s->stats.preemptions == r.tag &&
                 s->n_computed > r.pos;
        },
        [&](std::int64_t seq) { return cache_->block_table(seq); });
    stats_.deferred_rows += laid.rows;
    stats_.deferred_layers += laid.layers;
    stats_.deferred_dropped += laid.dropped;
  }

  void yield(std::int32_t slot) {
    rows_.yield_rows.push_back(std::int32_t(rows_.tokens.size()) - 1);
    rows_.yield_slots.push_back(slot);
  }

  static double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }

  // ---- self-speculation ----------------------------------------------------------------
  // One decode row that drafts this step. Its input token sits at pos; slots pos+1..pos+cap
  // are reserved for drafts.
  struct SpecRow {
    Sequence* s = nullptr;
    std::int32_t pos = 0;
    int cap = 0;                            // most drafts (reserved slots)
    int rounds = 0;                         // draft passes run: positions pos..pos+rounds-1
    bool drafting = true;                   // takes part in the next draft pass
    bool verified = false;                  // its verify rows were accepted from
    std::vector<std::int32_t> drafts;       // (k) draft tokens
    std::vector<std::vector<TokenProb>> q;  // (k) the distributions they were drawn from
    std::optional<Sampler> sampler;         // the sequence's sampler advanced by the drafts
    std::vector<std::int32_t> yrow;         // (k+1) each verify position's yielded row
    int k() const noexcept { return int(drafts.size()); }
    // The token at position pos + i.
    std::int32_t token(int i) const {
      return i == 0 ? s->tokens[std::size_t(pos)] : drafts[std::size_t(i - 1)];
    }
  };

  float* draft_state(std::size_t e, int round) {
    const std::size_t dim = std::size_t(model_->config().dim);
    return backend_type::data(draft_hidden_) + (e * std::size_t(k_max_) + std::size_t(round)) * dim;
  }
  using backend_type = typename Model::backend_type;

  // Which decode rows draft, and how much: as many of K as the request can still use and
  // the cache can reserve now (never preempting for it); k = 0 decodes plainly. Logprobs
  // of speculated tokens come from their verify position's full-depth logits.
  void plan_drafts(const std::vector<Chunk>& chunks) {
    const std::int32_t max_len = model_->config().max_seq_len;
    for (std::size_t k = 0; k < chunks.size(); ++k) {
      const Chunk& ch = chunks[k];
      Sequence& s = *ch.seq;
      if (!ch.decode) continue;
      // Slots past pos a pass may write: pos+1..pos+cap with the bonus row, one fewer
      // without (then a single draft would only re-derive the plain decode's token).
      const bool bonus = spec_cfg_.bonus_row;
      const int least = bonus ? 1 : 2;
      int cap = std::min({k_max_, s.req.max_tokens - s.stats.generated_tokens - (bonus ? 1 : 0),
                          max_len - 1 - ch.start});
      while (cap >= least && !cache_->reserve(s.id, bonus ? cap : cap - 1)) --cap;
      if (cap < least) continue;
      spec_of_chunk_[k] = int(spec_.size());
      SpecRow& r = spec_.emplace_back();
      r.s = &s;
      r.pos = ch.start;
      r.cap = cap;
      r.sampler.emplace(s.sampler);
      r.yrow.assign(std::size_t(cap + 1), -1);
    }
  }

  // The draft passes: every drafting row runs layers 0..E and the draft head, one position
  // per pass, all rows batched; a row stops at its cap or at a draft scored under the
  // threshold (that draft is dropped, its position's state still serves the verify).
  void draft() {
    const auto t0 = std::chrono::steady_clock::now();
    for (int round = 0;; ++round) {
      draft_rows_.clear();
      for (std::size_t e = 0; e < spec_.size(); ++e) {
        SpecRow& r = spec_[e];
        if (!r.drafting) continue;
        draft_rows_.tokens.push_back(r.token(round));
        draft_rows_.rowkv.push_back(RowKv{cache_->block_table(r.s->id), r.pos + round});
        draft_rows_.yield_rows.push_back(std::int32_t(draft_rows_.n_prefill++));
        draft_rows_.yield_slots.push_back(std::int32_t(e));
      }
      if (draft_rows_.tokens.empty()) break;
      draft_rows_.stop_exit = draft_exit_;
      DraftSink sink{this};
      walk_.run(full_, draft_rows_, sink);
    }
    stats_.draft_time_s += seconds_since(t0);
  }

  struct DraftSink {
    Engine* eng;
    void operator()(const YieldedRows& y) { eng->take_drafts(y); }
  };

  void take_drafts(const YieldedRows& y) {
    const auto& c = model_->config();
    ExitRows er;
    er.exit = y.exit;
    er.layer = y.layer;
    er.n_layers = c.n_layers;
    er.n = y.n;
    er.vocab = y.vocab;
    er.dim = std::size_t(c.dim);
    er.scores = y.scores;
    er.top1 = y.top1;
    draft_conf_.assign(y.n, 0.0f);
    if constexpr (speculative_policy<Policy>) policy_.draft_confidence(er, draft_conf_.data());
    auto& be = model_->backend();
    for (std::size_t j = 0; j < y.n; ++j) {
      SpecRow& r = spec_[std::size_t(y.slot[j])];
      be.copy(y.hidden + j * er.dim, draft_state(std::size_t(y.slot[j]), r.rounds), er.dim);
      ++r.rounds;
      const auto q = r.sampler->distribution(y.row_logits(j));
      if (!(draft_conf_[j] >= spec_cfg_.threshold)) {
        r.drafting = false;
        continue;
      }
      const int d = spec::draw(q, r.s->spec_rng);
      r.drafts.push_back(d);
      r.q.emplace_back(q.begin(), q.end());
      r.sampler->accept(d);
      if (r.k() == r.cap) r.drafting = false;
    }
  }

  // Accepts from one row's verify positions: draft i is kept by rejection sampling against
  // the full model's distribution at its position (penalties see the kept prefix, because
  // each kept token is accepted before the next position's distribution is taken); the
  // first rejected draft is replaced from the residual, and when all are kept the last
  // position gives a bonus token. Stops (EOS, stop strings, max_tokens) apply token by
  // token. The cache forgets every position past what was kept, in every layer.
  void accept_speculative(SpecRow& r, const YieldedRows& y) {
    Sequence& s = *r.s;
    const int k = r.k(), last = model_->n_exits() - 1;
    const std::int32_t L = model_->config().n_layers;
    int m = 0, kept = 0;
    for (int i = 0; i <= k && !s.done; ++i) {
      const std::int32_t row = r.yrow[std::size_t(i)];
      if (row < 0) break;  // no bonus row: all k drafts kept, the last one is the next input
      const auto logits = y.row_logits(std::size_t(row));
      ++m;
      if (i == k) {
        accept(s, s.sampler.sample(logits), last, L - 1);
        break;
      }
      const auto p = s.sampler.distribution(logits);
      const int d = r.drafts[std::size_t(i)];
      const auto& q = r.q[std::size_t(i)];
      if (spec::keep_draft(p, q, d, s.spec_rng)) {
        ++kept;
        accept(s, s.sampler.result_for(logits, d), last, L - 1);
        continue;
      }
      accept(s, s.sampler.result_for(logits, spec::draw_residual(p, q, s.spec_rng)), last, L - 1);
      break;
    }
    // Every verified position ran all L layers (draft layers + the verify's).
    const std::int64_t layers =
        std::int64_t(r.rounds + (r.rounds == k && r.yrow[std::size_t(k)] >= 0)) * L;
    s.stats.layers_computed += layers;
    stats_.decode_layers_computed += layers;
    stats_.decode_layers_full += std::int64_t(m) * L;
    ++s.stats.verify_passes;
    s.stats.draft_tokens += k;
    s.stats.accepted_drafts += kept;
    s.stats.speculative_tokens += m;
    ++stats_.verify_passes;
    stats_.draft_tokens += k;
    stats_.accepted_drafts += kept;
    stats_.speculative_tokens += m;
    if (!s.done) {  // positions pos..pos+m-1 hold the kept tokens; the m-th new one is next
      s.n_computed = r.pos + m;
      cache_->truncate(s.id, r.pos + m);
    }
  }

  // The walk's sink: samples each yielded row from its head's logits and feeds the
  // token to its sequence. slot = the row's chunk in this step's plan; slots from `base`
  // are verify positions (row e's position i at base + e * (K + 1) + i).
  struct SamplingSink {
    Engine* eng;
    const std::vector<Chunk>* chunks;
    std::int32_t base;
    void operator()(const YieldedRows& y) {
      bool verify = false;
      for (std::size_t j = 0; j < y.n; ++j) {
        if (y.slot[j] >= base) {
          const std::int32_t v = y.slot[j] - base, per = eng->k_max_ + 1;
          eng->spec_[std::size_t(v / per)].yrow[std::size_t(v % per)] = std::int32_t(j);
          verify = true;
          continue;
        }
        const Chunk& ch = (*chunks)[std::size_t(y.slot[j])];
        Sequence& s = *ch.seq;
        if (ch.decode) eng->account_decode(s, y.layer + 1);
        eng->accept(s, s.sampler.sample(y.row_logits(j)), y.exit, y.layer);
        if (eng->defers_ && ch.decode && !s.done && y.exit + 1 < eng->model_->n_exits())
          eng->deferred_.defer(s.id, ch.start, y.layer, s.tokens[std::size_t(ch.start)],
                               y.hidden + j * std::size_t(eng->model_->config().dim),
                               s.stats.preemptions);
      }
      if (verify)
        for (auto& r : eng->spec_)
          if (!r.verified && r.yrow[0] >= 0) {
            r.verified = true;
            eng->accept_speculative(r, y);
          }
    }
  };

  void account_decode(Sequence& s, std::int64_t layers) {
    s.stats.layers_computed += layers;
    stats_.decode_layers_computed += layers;
    stats_.decode_layers_full += model_->config().n_layers;
  }

  void accept(Sequence& s, const SampleResult& r, int exit_index, std::int32_t exit_layer) {
    const auto& c = model_->config();
    ++stats_.exit_histogram[std::size_t(exit_index)];
    ++stats_.generated_tokens;
    const finish_reason why = s.accept(r, exit_index, exit_layer, {c.eos_ids, c.max_seq_len});
    if (why != finish_reason::none) finish(s, why);
  }

  void finish(Sequence& s, finish_reason why) {
    if (s.done) return;
    // Inside a walk the sequence's blocks stay until it ends: a late row of it (a deferred
    // fill) may still write its K/V at a deeper layer after its decode row yielded.
    if (in_walk_)
      finished_in_walk_.push_back(&s);
    else
      sched_.remove(s);
    s.mark_finished(why);
    pending_out_.push_back(s.id);
  }

  void emit(Sequence& s, std::vector<RequestOutput>& out) {
    out.push_back(s.take_output());
    if (s.done) {
      pending_out_.erase(std::remove(pending_out_.begin(), pending_out_.end(), s.id),
                         pending_out_.end());
      seqs_.erase(s.id);  // s is gone after this
    }
  }

  void fail_running(const std::string& what) {
    for (Sequence* s : std::vector<Sequence*>(sched_.running())) {
      s->error = what;
      finish(*s, finish_reason::error);
    }
  }

  Model* model_;
  Cache* cache_;
  Policy policy_;
  EngineOptions opt_;
  Speculation spec_cfg_;
  int draft_exit_;  // -1: no speculation
  int k_max_;       // K, 0 without speculation
  Scheduler<Cache> sched_;
  bool defers_;  // the policy's fill is deferred (policy_defers_fill)
  LayerWalk<Model, Cache> walk_;
  DeferredFill<typename Model::backend_type> deferred_;  // the deferred fill's rows
  bool in_walk_ = false;                     // the walk is running: finish() delays removal
  std::vector<Sequence*> finished_in_walk_;  // removed from the scheduler when it ends
  WalkRows rows_;                            // this step's rows (the walk compacts its decode part)
  // Self-speculation: this step's drafting rows, each chunk's row in it (-1 = none), the
  // draft passes' rows, draft scores, and (max_running, K, dim) the drafts' layer-E states.
  FullDepth full_;
  std::vector<SpecRow> spec_;
  std::vector<int> spec_of_chunk_;
  WalkRows draft_rows_;
  std::vector<float> draft_conf_;
  typename Model::backend_type::template buffer<float> draft_hidden_;
  const Tokenizer* tok_ = nullptr;
  std::unordered_map<request_id, std::unique_ptr<Sequence>> seqs_;
  std::vector<request_id> pending_out_;  // finished, not yet reported
  request_id next_id_ = 1;
  EngineStats stats_;
};

}  // namespace eexit
