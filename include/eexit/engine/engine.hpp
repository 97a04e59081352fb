#pragma once
// Engine: continuous batching over a model and a KV cache (DESIGN.md §3). One step
// plans a batch of rows under a token budget (running sequences first, then new ones,
// prompts in chunks), runs it layer by layer, samples, and reports what each request
// got. No threads and no Asio here: the serving layer drives step() from one thread.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "eexit/concepts.hpp"
#include "eexit/core/error.hpp"
#include "eexit/engine/request.hpp"
#include "eexit/model/llama.hpp"
#include "eexit/policy/exit_policy.hpp"
#include "eexit/policy/full_depth.hpp"
#include "eexit/policy/policy.hpp"
#include "eexit/sampling/sampler.hpp"
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
};

namespace detail {
// A backend whose float pointers are device memory (CudaBackend): the engine stages the rows
// a policy reads to the host (ExitRows is host memory). Host backends pass pointers as is.
template <class B>
inline constexpr bool is_device_backend_v = requires {
  requires B::is_device;
};
}  // namespace detail

template <policy Policy, kv_cache Cache,
          exit_model Model = LlamaModel<typename Cache::backend_type>>
requires fills_cache<Model, Cache>
class Engine {
 public:
  using policy_type = Policy;
  using cache_type = Cache;
  using model_type = Model;

  Engine(Model& model, Cache& cache, Policy policy = Policy{}, EngineOptions opt = {})
      : model_(&model), cache_(&cache), policy_(std::move(policy)), opt_(opt) {
    const auto& c = model.config();
    if (opt_.max_batch_tokens <= 0 || opt_.max_running <= 0)
      throw error("engine options", "max_batch_tokens and max_running must be positive");
    ws_ = model.make_workspace(std::size_t(opt_.max_batch_tokens));
    auto& be = backend();
    x_ = be.template allocate<float>(std::size_t(opt_.max_batch_tokens) * std::size_t(c.dim));
    h_ = be.template allocate<float>(std::size_t(opt_.max_running) * std::size_t(c.dim));
    logits_ =
        be.template allocate<float>(std::size_t(opt_.max_running) * std::size_t(c.vocab_size));
    scores_ = be.template allocate<float>(std::size_t(opt_.max_running));
    if constexpr (requires { policy_.thresholds.validate(0); })
      policy_.thresholds.validate(model.n_exits() - 1);
    if (policy_.evaluates_exits())
      for (int e = 0; e + 1 < model.n_exits(); ++e)
        if (policy_.needs(e).classifier && !model.has_classifier(e))
          throw error("policy", "the classifier measure needs classifier heads; exit " +
                                    std::to_string(e) + " of this model has none");
    stats_.exit_histogram.assign(std::size_t(model.n_exits()), 0);
  }

  // Optional: enables stop strings and text in outputs. The tokenizer must outlive the engine.
  void set_tokenizer(const Tokenizer* tok) { tok_ = tok; }

  // Queues a request. Throws eexit::error for a request that can never run (empty prompt,
  // a token outside the vocabulary, a prompt that does not fit the context or the cache,
  // bad sampling parameters); nothing is queued then.
  request_id add_request(GenerateRequest req) {
    const auto& c = model_->config();
    if (req.prompt.empty()) throw error("request", "prompt is empty");
    for (auto t : req.prompt)
      if (t < 0 || t >= c.vocab_size)
        throw error("request", "prompt token " + std::to_string(t) + " is outside the vocabulary");
    if (std::int64_t(req.prompt.size()) >= c.max_seq_len)
      throw error("request", "prompt has " + std::to_string(req.prompt.size()) +
                                 " tokens; the context holds " + std::to_string(c.max_seq_len));
    if (std::int64_t(req.prompt.size()) + 1 > cache_->capacity_tokens())
      throw error("request", "prompt does not fit the KV cache");
    if (req.max_tokens < 0) throw error("request", "max_tokens must be >= 0");
    if (!req.stop.empty() && !tok_) throw error("request", "stop strings need a tokenizer");
    req.sampling.validate();
    if (std::isinf(req.exit_threshold)) throw error("request", "exit_threshold must be finite");
    const request_id id = next_id_++;
    const std::uint64_t seed =
        req.sampling.seed ? *req.sampling.seed : mix(opt_.seed, std::uint64_t(id));
    auto s = std::make_unique<Sequence>(id, std::move(req), seed);
    s->stats.prompt_tokens = std::int32_t(s->req.prompt.size());
    s->stats.exit_histogram.assign(std::size_t(model_->n_exits()), 0);
    s->arrival = clock::now();
    if (tok_) s->detok.emplace(*tok_, s->req.prompt.back());
    Sequence& added = *s;
    waiting_.push_back(s.get());
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
    return !running_.empty() || !waiting_.empty() || !pending_out_.empty();
  }
  std::size_t n_running() const noexcept { return running_.size(); }
  std::size_t n_waiting() const noexcept { return waiting_.size(); }
  const EngineStats& stats() const noexcept { return stats_; }
  Policy& policy() noexcept { return policy_; }
  Model& model() noexcept { return *model_; }
  Cache& cache() noexcept { return *cache_; }
  const EngineOptions& options() const noexcept { return opt_; }

  // One iteration. Never throws: a failure fails the requests of this step with
  // finish_reason::error and the engine stays usable.
  std::vector<RequestOutput> step() noexcept {
    std::vector<RequestOutput> out;
    try {
      out = step_impl();
    } catch (const std::exception& e) {
      fail_running(e.what());
    } catch (...) {
      fail_running("unknown error in step");
    }
    collect_pending(out);
    return out;
  }

  // Convenience: run until every queued request is finished; outputs in request order.
  struct Completion {
    request_id id;
    std::vector<std::int32_t> tokens;
    std::vector<std::int32_t> exit_layers;
    std::string text;
    finish_reason finish;
    RequestStats stats;
  };
  std::vector<Completion> run_to_completion() {
    std::unordered_map<request_id, Completion> acc;
    std::vector<request_id> order;
    for (auto& [id, s] : seqs_)
      if (!s->done) order.push_back(id);
    std::sort(order.begin(), order.end());
    while (has_work()) {
      for (auto& o : step()) {
        auto& c = acc[o.id];
        c.id = o.id;
        for (auto& t : o.tokens) {
          c.tokens.push_back(t.token);
          c.exit_layers.push_back(t.exit_layer);
        }
        c.text += o.text;
        if (o.finished()) {
          c.finish = o.finish;
          c.stats = o.stats;
        }
      }
    }
    std::vector<Completion> res;
    for (auto id : order) res.push_back(std::move(acc[id]));
    return res;
  }

 private:
  using clock = std::chrono::steady_clock;
  using backend_t = typename Model::backend_type;

  struct Sequence {
    Sequence(request_id i, GenerateRequest r, std::uint64_t seed)
        : id(i), req(std::move(r)), tokens(req.prompt), sampler(req.sampling, seed) {
      n_prompt = std::int32_t(req.prompt.size());
      sampler.set_prompt(req.prompt);
    }
    request_id id;
    GenerateRequest req;
    std::vector<std::int32_t> tokens;  // prompt + generated
    std::int32_t n_prompt = 0;
    std::int32_t n_computed = 0;  // tokens whose K/V are in the cache
    Sampler sampler;
    std::optional<StreamDecoder> detok;
    std::string text;           // decoded so far (for stop strings)
    std::size_t text_sent = 0;  // bytes of text already reported
    RequestStats stats;
    clock::time_point arrival;
    bool done = false;
    bool in_cache = false;
    finish_reason finish = finish_reason::none;
    std::string error;
    std::vector<TokenEvent> new_tokens;
  };

  // One scheduled piece of work: `n` tokens of `seq` from position `start`.
  struct Chunk {
    Sequence* seq;
    std::int32_t start, n;
    bool samples;  // the chunk ends at the sequence's last token: its last row yields a token
    bool decode;   // a generated token (not prompt or recompute): may exit early
  };

  backend_t& backend() { return model_->backend(); }

  static std::uint64_t mix(std::uint64_t a, std::uint64_t b) {
    std::uint64_t z = a + 0x9e3779b97f4a7c15ull * (b + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }

  // ---- scheduling ------------------------------------------------------------------
  void preempt(Sequence& s) {
    cache_->release(s.id);
    s.in_cache = false;
    s.n_computed = 0;
    ++s.stats.preemptions;
    ++stats_.preemptions;
    running_.erase(std::find(running_.begin(), running_.end(), &s));
    waiting_.push_front(&s);
  }

  std::vector<Chunk> schedule() {
    std::vector<Chunk> chunks;
    std::int32_t budget = opt_.max_batch_tokens;
    auto pending = [](const Sequence& s) { return std::int32_t(s.tokens.size()) - s.n_computed; };
    // Running sequences, oldest first; the newest is preempted when the cache is full.
    for (std::size_t i = 0; i < running_.size() && budget > 0;) {
      Sequence& s = *running_[i];
      const std::int32_t n = std::min(pending(s), budget);
      bool self_preempted = false;
      while (!cache_->reserve(s.id, n)) {
        Sequence& victim = *running_.back();
        if (&victim == &s && running_.size() == 1) {
          // Alone and still no room: this request can never fit. Not an error of the
          // engine: it ends with "length", as a context limit would end it.
          finish(s, finish_reason::length);
          self_preempted = true;
          break;
        }
        preempt(victim);
        if (&victim == &s) {
          self_preempted = true;
          break;
        }
      }
      if (self_preempted) continue;  // running_[i] is now the next sequence
      s.in_cache = true;
      chunks.push_back(make_chunk(s, n));
      budget -= n;
      ++i;
    }
    // Waiting requests, first come first served, while budget, slots and cache allow.
    while (budget > 0 && !waiting_.empty() && std::int32_t(running_.size()) < opt_.max_running) {
      Sequence& s = *waiting_.front();
      const std::int32_t n = std::min(pending(s), budget);
      if (!cache_->reserve(s.id, n)) {
        if (running_.empty()) {  // an empty cache cannot hold it: never will
          waiting_.pop_front();
          finish(s, finish_reason::length);
          continue;
        }
        break;
      }
      waiting_.pop_front();
      running_.push_back(&s);
      s.in_cache = true;
      chunks.push_back(make_chunk(s, n));
      budget -= n;
    }
    return chunks;
  }

  Chunk make_chunk(Sequence& s, std::int32_t n) {
    const std::int32_t start = s.n_computed;
    const bool samples = start + n == std::int32_t(s.tokens.size());
    return Chunk{&s, start, n, samples, samples && n == 1 && start >= s.n_prompt};
  }

  // ---- the step --------------------------------------------------------------------
  std::vector<RequestOutput> step_impl() {
    auto chunks = schedule();
    if (chunks.empty()) return {};
    ++stats_.steps;
    const auto& c = model_->config();
    const std::size_t dim = std::size_t(c.dim);
    // Rows: prefill chunks first, decode rows last, so that rows leaving at an exit point
    // shrink the active range from its end and prefill rows never move.
    std::stable_partition(chunks.begin(), chunks.end(), [](const Chunk& ch) { return !ch.decode; });
    tokens_.clear();
    rowkv_.clear();
    dec_.clear();
    for (auto& ch : chunks) {
      const std::int32_t* bt = cache_->block_table(ch.seq->id);
      for (std::int32_t j = 0; j < ch.n; ++j) {
        tokens_.push_back(ch.seq->tokens[std::size_t(ch.start + j)]);
        rowkv_.push_back(RowKv{bt, ch.start + j});
      }
      if (ch.decode)
        dec_.push_back(DecodeRow{&ch, ch.seq->stats.generated_tokens, ch.seq->req.max_tokens, 0});
    }
    for (auto& ch : chunks) {
      ch.seq->n_computed += ch.n;
      if (!ch.decode) stats_.prompt_tokens += ch.n;
    }
    const std::size_t rows = tokens_.size();
    const std::size_t n_prefill = rows - dec_.size();
    std::size_t n_active = rows;
    float* x = backend_t::data(x_);  // (rows, dim) residual stream
    model_->embed(tokens_.data(), rows, x);

    const bool exits = policy_.evaluates_exits() && !dec_.empty() && model_->n_exits() > 1;
    const auto exit_layers = model_->exit_layers();
    bool track_prev = false;
    if (exits) {
      for (int e = 0; e + 1 < model_->n_exits(); ++e) track_prev |= policy_.needs(e).prev_hidden;
      if (track_prev) {  // the embedding
        const float* p = host_rows(x + n_prefill * dim, (rows - n_prefill) * dim);
        prev_h_.assign(p, p + (rows - n_prefill) * dim);
      }
    }
    for (int l = 0, e = 0; l < c.n_layers && n_active > 0; ++l) {
      model_->forward_layer(l, x, n_active, rowkv_.data(), cache_->view(l), ws_);
      if (e + 1 < model_->n_exits() && l == exit_layers[std::size_t(e)]) {
        if (exits && n_active > n_prefill)
          n_active = exit_point(e, l, x, n_prefill, n_active, track_prev);
        ++e;
      }
    }

    // Rows still active that yield a token: prefill chunks that end their prompt, and the
    // decode rows that went the whole way. One final LM head over all of them.
    sample_rows_.clear();
    std::vector<Sequence*> sampling;
    std::int32_t r0 = 0;
    for (auto& ch : chunks) {
      if (ch.samples && !ch.decode) {
        sample_rows_.push_back(r0 + ch.n - 1);
        sampling.push_back(ch.seq);
      }
      r0 += ch.n;
    }
    for (std::size_t i = 0; i < n_active - n_prefill; ++i) {
      sample_rows_.push_back(std::int32_t(n_prefill + i));
      sampling.push_back(dec_[i].chunk->seq);
      account_decode(*dec_[i].chunk->seq, c.n_layers);
    }
    const std::size_t ns = sample_rows_.size();
    auto& be = backend();
    const std::size_t vocab = std::size_t(c.vocab_size);
    if (ns) {
      be.gather_rows(x, sample_rows_.data(), ns, dim, backend_t::data(h_));
      model_->exit_logits(model_->n_exits() - 1, backend_t::data(h_), ns, backend_t::data(logits_),
                          ws_);
      logits_host_ = logits_on_host(ns * vocab);
    }
    for (std::size_t i = 0; i < ns; ++i) {
      std::span<const float> lg(logits_host_ + i * vocab, vocab);
      accept_token(*sampling[i], sampling[i]->sampler.sample(lg), model_->n_exits() - 1);
    }
    std::vector<RequestOutput> out;
    for (auto& ch : chunks)
      if (!ch.seq->new_tokens.empty() || ch.seq->done) emit(*ch.seq, out);
    return out;
  }

  // Exit point e after layer l over the active decode rows [n_prefill, n_active): ask the
  // policy, sample and KV-fill the rows that leave, compact the rest. Returns the new
  // n_active.
  std::size_t exit_point(int e, int l, float* x, std::size_t n_prefill, std::size_t n_active,
                         bool track_prev) {
    const auto& c = model_->config();
    const std::size_t dim = std::size_t(c.dim), vocab = std::size_t(c.vocab_size);
    const std::size_t nd = n_active - n_prefill;
    float* xd = x + n_prefill * dim;  // (nd, dim) decode rows' exit hidden states
    auto& be = backend();
    const ExitNeeds needs = policy_.needs(e);
    if (needs.logits) {
      model_->exit_logits(e, xd, nd, backend_t::data(logits_), ws_);
      logits_host_ = logits_on_host(nd * vocab);
    }
    if (needs.classifier) {
      model_->exit_classifier(e, xd, nd, backend_t::data(scores_), ws_);
      host_scores_.resize(nd);
      be.template download<float>(std::span<float>(host_scores_), scores_);
    }
    step_.resize(nd);
    max_steps_.resize(nd);
    state_.resize(nd);
    req_ids_.resize(nd);
    row_thr_.resize(nd);
    for (std::size_t i = 0; i < nd; ++i) {
      req_ids_[i] = dec_[i].chunk->seq->id;
      row_thr_[i] = dec_[i].chunk->seq->req.exit_threshold;
      step_[i] = dec_[i].step;
      max_steps_[i] = dec_[i].max_steps;
      state_[i] = dec_[i].state;
    }
    ExitRows er;
    er.exit = e;
    er.layer = l;
    er.n_layers = c.n_layers;
    er.n = nd;
    er.vocab = vocab;
    er.dim = dim;
    er.logits = needs.logits ? logits_host_ : nullptr;
    er.hidden = host_rows(xd, nd * dim);
    er.prev_hidden = needs.prev_hidden ? prev_h_.data() : nullptr;
    er.classifier = needs.classifier ? host_scores_.data() : nullptr;
    er.step = step_.data();
    er.max_steps = max_steps_.data();
    er.row_state = state_.data();
    er.request = req_ids_.data();
    er.row_threshold = row_thr_.data();
    conf_.assign(nd, 0);
    leave_.assign(nd, 0);
    policy_.decide(er, std::span<std::uint8_t>(conf_), std::span<std::uint8_t>(leave_));
    leaving_.clear();
    for (std::size_t i = 0; i < nd; ++i) {
      dec_[i].state = state_[i];
      stats_.involuntary_exits += leave_[i] && !conf_[i];
      stats_.involuntary_stays += conf_[i] && !leave_[i];
      if (leave_[i]) leaving_.push_back(std::int32_t(n_prefill + i));
    }
    if (!leaving_.empty()) {
      const std::size_t nl = leaving_.size();
      // The leaving rows' exit hidden states, packed: for the fill (and the head if the
      // measure did not need it).
      be.gather_rows(x, leaving_.data(), nl, dim, backend_t::data(h_));
      fill_rowkv_.clear();
      for (auto r : leaving_) fill_rowkv_.push_back(rowkv_[std::size_t(r)]);
      const auto t0 = clock::now();
      model_->kv_fill(l, backend_t::data(h_), nl, fill_rowkv_.data(), *cache_, ws_);
      stats_.fill_time_s += std::chrono::duration<double>(clock::now() - t0).count();
      if (!needs.logits) {
        model_->exit_logits(e, backend_t::data(h_), nl, backend_t::data(logits_), ws_);
        logits_host_ = logits_on_host(nl * vocab);
      }
      for (std::size_t j = 0; j < nl; ++j) {
        const std::size_t i = std::size_t(leaving_[j]) - n_prefill;
        const float* lg = logits_host_ + (needs.logits ? i : j) * vocab;
        Sequence& s = *dec_[i].chunk->seq;
        account_decode(s, l + 1);
        accept_token(s, s.sampler.sample(std::span<const float>(lg, vocab)), e);
      }
      // Compact the rows that go on to the front of the decode range, in order.
      std::size_t k = 0;
      for (std::size_t i = 0; i < nd; ++i) {
        if (leave_[i]) continue;
        if (k != i) {
          be.copy(xd + i * dim, xd + k * dim, dim);
          rowkv_[n_prefill + k] = rowkv_[n_prefill + i];
          dec_[k] = dec_[i];
          if (track_prev) std::copy_n(prev_h_.data() + i * dim, dim, prev_h_.data() + k * dim);
        }
        ++k;
      }
      dec_.resize(k);
      n_active = n_prefill + k;
    }
    if (track_prev) {
      const float* p = host_rows(xd, (n_active - n_prefill) * dim);
      prev_h_.assign(p, p + (n_active - n_prefill) * dim);
    }
    return n_active;
  }

  // The first n floats of logits_, readable on the host: no copy on a host backend.
  const float* logits_on_host(std::size_t n) {
    if constexpr (detail::is_device_backend_v<backend_t>) {
      host_logits_.resize(n);
      backend().template download<float>(std::span<float>(host_logits_), logits_);
      return host_logits_.data();
    } else {
      return backend_t::data(logits_);
    }
  }

  // n floats at backend pointer p, readable on the host: p itself on a host backend, a
  // copy (downloaded, the stream waited for) on a device backend.
  const float* host_rows(const float* p, std::size_t n) {
    if constexpr (detail::is_device_backend_v<backend_t>) {
      hidden_host_.resize(n);
      backend().download(hidden_host_.data(), p, n);
      return hidden_host_.data();
    } else {
      return p;
    }
  }

  void account_decode(Sequence& s, std::int64_t layers) {
    s.stats.layers_computed += layers;
    stats_.decode_layers_computed += layers;
    stats_.decode_layers_full += model_->config().n_layers;
  }

  void accept_token(Sequence& s, const SampleResult& r, int exit_index) {
    const auto& c = model_->config();
    const std::int32_t exit_layer = model_->exit_layers()[std::size_t(exit_index)];
    s.sampler.accept(r.token);
    s.tokens.push_back(r.token);
    if (s.stats.generated_tokens == 0)
      s.stats.time_to_first_token_s =
          std::chrono::duration<double>(clock::now() - s.arrival).count();
    ++s.stats.generated_tokens;
    ++s.stats.exit_histogram[std::size_t(exit_index)];
    ++stats_.exit_histogram[std::size_t(exit_index)];
    ++stats_.generated_tokens;
    TokenEvent ev{r.token, exit_layer, r.logprob, r.top};
    s.new_tokens.push_back(std::move(ev));
    // Stop checks, in the order a user reads them: EOS / stop ids, stop strings, length.
    const bool is_eos = std::find(c.eos_ids.begin(), c.eos_ids.end(), r.token) != c.eos_ids.end();
    if ((is_eos && !s.req.ignore_eos) ||
        std::find(s.req.stop_token_ids.begin(), s.req.stop_token_ids.end(), r.token) !=
            s.req.stop_token_ids.end()) {
      finish(s, finish_reason::stop);
      return;
    }
    if (s.detok) {
      const std::size_t before = s.text.size();
      s.text += s.detok->push(r.token);
      if (check_stop_strings(s, before)) return;
    }
    if (s.stats.generated_tokens >= s.req.max_tokens ||
        std::int32_t(s.tokens.size()) >= c.max_seq_len)
      finish(s, finish_reason::length);
  }

  // Truncates the text before the first stop string and finishes; true if one matched.
  // before: text length before this token, so only matches that end in new text count.
  bool check_stop_strings(Sequence& s, std::size_t before) {
    for (const auto& stop : s.req.stop) {
      if (stop.empty()) continue;
      const std::size_t from = before >= stop.size() ? before - stop.size() + 1 : 0;
      const auto pos = s.text.find(stop, from);
      if (pos != std::string::npos) {
        s.text.resize(pos);
        finish(s, finish_reason::stop);
        return true;
      }
    }
    return false;
  }

  void finish(Sequence& s, finish_reason why) {
    if (s.done) return;
    s.done = true;
    s.finish = why;
    if (s.in_cache) {
      cache_->release(s.id);
      s.in_cache = false;
    }
    if (auto it = std::find(running_.begin(), running_.end(), &s); it != running_.end())
      running_.erase(it);
    if (auto it = std::find(waiting_.begin(), waiting_.end(), &s); it != waiting_.end())
      waiting_.erase(it);
    if (s.detok && why != finish_reason::stop) s.text += s.detok->flush();
    s.stats.total_time_s = std::chrono::duration<double>(clock::now() - s.arrival).count();
    pending_out_.push_back(s.id);
  }

  void emit(Sequence& s, std::vector<RequestOutput>& out) {
    RequestOutput o;
    o.id = s.id;
    o.tokens = std::move(s.new_tokens);
    s.new_tokens.clear();
    if (s.text.size() > s.text_sent) {
      o.text = s.text.substr(s.text_sent);
      s.text_sent = s.text.size();
    }
    if (s.done) {
      o.finish = s.finish;
      o.error = s.error;
      o.stats = s.stats;
      pending_out_.erase(std::remove(pending_out_.begin(), pending_out_.end(), s.id),
                         pending_out_.end());
      seqs_.erase(s.id);  // s is gone after this
    }
    out.push_back(std::move(o));
  }

  // Finished requests that no chunk of this step reported (aborted, failed, never fit).
  void collect_pending(std::vector<RequestOutput>& out) {
    auto ids = pending_out_;
    for (auto id : ids)
      if (auto it = seqs_.find(id); it != seqs_.end()) emit(*it->second, out);
  }

  void fail_running(const std::string& what) {
    auto running = running_;
    for (Sequence* s : running) {
      s->error = what;
      finish(*s, finish_reason::error);
    }
  }

  Model* model_;
  Cache* cache_;
  Policy policy_;
  EngineOptions opt_;
  const Tokenizer* tok_ = nullptr;
  typename Model::Workspace ws_;
  typename backend_t::template buffer<float> x_, h_, logits_, scores_;
  std::vector<float> host_logits_;  // device backends: staged logits (logits_on_host)
  const float* logits_host_ = nullptr;
  std::vector<float> hidden_host_;  // device backends: staged hidden rows (host_rows)
  std::vector<std::int32_t> tokens_, sample_rows_;
  std::vector<RowKv> rowkv_, fill_rowkv_;
  // Per active decode row: its chunk, CALM inputs and the policy's scratch.
  struct DecodeRow {
    Chunk* chunk;
    std::int32_t step, max_steps;
    std::uint32_t state;
  };
  std::vector<DecodeRow> dec_;
  std::vector<float> prev_h_, host_scores_, row_thr_;
  std::vector<std::int64_t> req_ids_;
  std::vector<std::int32_t> step_, max_steps_, leaving_;
  std::vector<std::uint32_t> state_;
  std::vector<std::uint8_t> conf_, leave_;
  std::unordered_map<request_id, std::unique_ptr<Sequence>> seqs_;
  std::vector<Sequence*> running_;
  std::deque<Sequence*> waiting_;
  std::vector<request_id> pending_out_;
  request_id next_id_ = 1;
  EngineStats stats_;
};

}  // namespace eexit
