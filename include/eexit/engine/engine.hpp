#pragma once
// Engine: continuous batching over a model and a KV cache (DESIGN.md §3). One step is
//   plan   = scheduler.schedule()   which sequences, how many tokens each (scheduler.hpp)
//   drafts = spec.draft(...)        self-speculation only: draft passes (self_spec_step.hpp)
//   rows   = the plan's rows        deferred-fill and verify rows first, decode rows last
//   walk   = layer_walk.run(...)    the model over the rows; tokens reach the sampling sink
//   update = outputs                tokens, text and finished requests (sequence.hpp)
// No threads and no Asio here: the serving layer drives step() from one thread.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "eexit/concepts.hpp"
#include "eexit/core/error.hpp"
#include "eexit/engine/completion.hpp"
#include "eexit/engine/deferred_fill.hpp"
#include "eexit/engine/engine_stats.hpp"
#include "eexit/engine/layer_walk.hpp"
#include "eexit/engine/request.hpp"
#include "eexit/engine/scheduler.hpp"
#include "eexit/engine/self_spec_step.hpp"
#include "eexit/engine/sequence.hpp"
#include "eexit/engine/validate.hpp"
#include "eexit/model/llama.hpp"
#include "eexit/policy/exit_policy.hpp"
#include "eexit/policy/full_depth.hpp"
#include "eexit/text/tokenizer.hpp"

namespace eexit {

struct EngineOptions {
  std::int32_t max_batch_tokens = 256;  // rows per step: decode rows + prefill chunk rows
  std::int32_t max_running = 64;        // sequences in the running batch
  std::uint64_t seed = 0x5eed;          // seeds requests that bring none (mixed with the id)
  // Automatic prefix caching, where the cache supports it (prefix_caching_cache:
  // PagedCache): prompt blocks computed at full depth are kept and shared by later requests
  // with the same prefix. Off by default in the engine (the server turns it on).
  bool prefix_cache = false;
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
        spec_(model, cache, speculation_of(policy_), std::size_t(opt_.max_running)),
        sched_(cache, {opt_.max_batch_tokens, opt_.max_running, opt_.prefix_cache}),
        defers_(policy_defers_fill(policy_)),
        walk_(
            model, cache,
            std::size_t(opt_.max_batch_tokens + opt_.max_running * (spec_.k_max() + int(defers_))),
            std::size_t(opt_.max_running) * std::size_t(spec_.k_max() + 1)) {
    if (defers_)
      deferred_ = decltype(deferred_)(model.backend(), std::size_t(opt_.max_running),
                                      std::size_t(model.config().dim));
    if constexpr (requires { policy_.thresholds.validate(0); })
      policy_.thresholds.validate(model.n_exits() - 1);
    if (spec_.k_max() == 0 && policy_.evaluates_exits())
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
  int draft_exit() const noexcept { return spec_.draft_exit(); }

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

  // ---- the step: plan -> (drafts) -> rows -> walk -> outputs ---------------------------
  // With self-speculation the drafts are walks up to the draft exit, the rows start with
  // the drafting rows' verify positions (late rows), and the sink accepts and rolls back.
  void step_impl(std::vector<RequestOutput>& out) {
    Plan plan = sched_.schedule();
    stats_.preemptions += std::int64_t(plan.preempted.size());
    stats_.prefix_cached_tokens += plan.cached_tokens;
    for (Sequence* s : plan.never_fits) finish(*s, finish_reason::length);
    if (plan.empty()) return;
    ++stats_.steps;
    auto& chunks = plan.chunks;
    order_chunks(plan);  // chunk indices below are after this reordering
    spec_.plan(chunks);  // which decode rows draft; none without speculation
    if (spec_.active()) spec_.draft(walk_, policy_, stats_);
    rows_.clear();
    if (defers_)  // last step's early exits run their skipped layers (late rows, first)
      lay_out_deferred(deferred_, rows_, model_->config().n_layers, *cache_, seqs_, stats_);
    spec_.lay_out_verify(rows_, std::int32_t(chunks.size()));   // slots after the chunks'
    append_chunk_rows(plan, *cache_, rows_, spec_.of_chunk());  // the drafting rows' are above
    for (const Chunk& ch : chunks)
      if (!ch.decode) stats_.prompt_tokens += ch.n;
    SamplingSink sink{this, &chunks};
    const auto t0 = std::chrono::steady_clock::now();
    // While speculating nothing exits early: every token is verified at full depth.
    in_walk_ = true;
    try {
      if (spec_.k_max() > 0)
        walk_.run(spec_.walk_policy(), rows_, sink);
      else
        walk_.run(policy_, rows_, sink);
      commit_prefill(chunks);  // before end_walk frees the blocks of finished sequences
    } catch (...) {
      end_walk();
      throw;
    }
    end_walk();
    if (spec_.active()) stats_.verify_time_s += detail::seconds_since(t0);
    spec_.end_step();  // adaptive k: what the step took against its prediction
    stats_.take_walk(walk_.stats());
    for (auto& ch : chunks)
      if (!ch.seq->new_tokens.empty() || ch.seq->done) emit(*ch.seq, out);
  }

  // Prefix caching: the prefill chunks' K/V are in the cache now, computed through every
  // layer; their full blocks become shareable. Decode chunks never are (their deeper K/V
  // may be an exit fill, a deferred fill or a draft's): paged.hpp's rule.
  void commit_prefill(const std::vector<Chunk>& chunks) {
    if constexpr (prefix_caching_cache<Cache>) {
      if (!opt_.prefix_cache) return;
      for (const Chunk& ch : chunks)
        if (!ch.decode) cache_->commit_full_depth(ch.seq->id, ch.seq->tokens, ch.start + ch.n);
    }
  }

  void end_walk() {
    in_walk_ = false;
    for (Sequence* s : finished_in_walk_) sched_.remove(*s);
    finished_in_walk_.clear();
  }

  // The walk's sink: samples each yielded row from its head's logits and feeds the
  // token to its sequence. slot = the row's chunk in this step's plan; slots past the
  // chunks are verify positions, which the speculative step accepts from.
  struct SamplingSink {
    Engine* eng;
    const std::vector<Chunk>* chunks;
    void operator()(const YieldedRows& y) {
      for (std::size_t j = 0; j < y.n; ++j) {
        if (eng->spec_.take(y.slot[j], j)) continue;  // a verify position: accepted below
        const Chunk& ch = (*chunks)[std::size_t(y.slot[j])];
        Sequence& s = *ch.seq;
        if (ch.decode) eng->account_decode(s, y.layer + 1);
        eng->accept(s, s.sampler.sample(y.row_logits(j)), y.exit, y.layer);
        if (eng->defers_ && ch.decode && !s.done && y.exit + 1 < eng->model_->n_exits())
          eng->deferred_.defer(s.id, ch.start, y.layer, s.tokens[std::size_t(ch.start)],
                               y.hidden + j * std::size_t(eng->model_->config().dim),
                               s.stats.preemptions);
      }
      // The speculative step's only way back: the engine's accept, for every emitted token.
      eng->spec_.accept(
          y, [e = eng](auto&&... a) { e->accept(a...); }, eng->stats_);
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
  SpecStep<Model, Cache> spec_;  // self-speculation's drafts, verify rows and acceptance
  Scheduler<Cache> sched_;
  bool defers_;  // the policy's fill is deferred (policy_defers_fill)
  LayerWalk<Model, Cache> walk_;
  DeferredFill<typename Model::backend_type> deferred_;  // the deferred fill's rows
  bool in_walk_ = false;                     // the walk is running: finish() delays removal
  std::vector<Sequence*> finished_in_walk_;  // removed from the scheduler when it ends
  WalkRows rows_;                            // this step's rows (the walk compacts its decode part)
  const Tokenizer* tok_ = nullptr;
  std::unordered_map<request_id, std::unique_ptr<Sequence>> seqs_;
  std::vector<request_id> pending_out_;  // finished, not yet reported
  request_id next_id_ = 1;
  EngineStats stats_;
};

}  // namespace eexit
