// Self-speculative decoding through the batched engine: drafts from an exit head, one
// full-depth verify pass, rejection-sampling accept, cache rollback. What full depth
// generates is the reference: greedy output must equal it token for token in every
// configuration (draft exits, k fixed or adaptive, batch 1 and 8, prefill chunks and
// preemption in the mix, both caches, two models); sampled output must have its
// distribution; a rolled-back cache must hold exactly what a cache that never saw the
// rejected drafts holds.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "../test_paths.hpp"
#include "eexit/eexit.hpp"
#include "eexit/policy/self_speculative.hpp"

using namespace eexit;

namespace {

struct Shakespeare {
  CpuBackend be{2};
  LlamaModel<CpuBackend> model{be, load_model(test::source("models/eexit-shakespeare"))};
  Tokenizer tok = Tokenizer::load(test::source("models/eexit-shakespeare/tokenizer.json"));
};
Shakespeare& shakespeare() {
  static Shakespeare s;
  return s;
}

struct Stories {
  CpuBackend be{2};
  LlamaModel<CpuBackend> model{be, [] {
                                 auto w =
                                     load_model(test::shared("models/stories260K/stories260K.bin"));
                                 w.config.early_exit.exit_layers = {2};  // an exit after layer 2
                                 return w;
                               }()};
};
Stories& stories() {
  static Stories s;
  return s;
}

const char* kTexts[] = {"ROMEO:\nBut soft, what light",   "First Citizen:\nWe are accounted",
                        "KING HENRY:\nOnce more unto",    "JULIET:\nO Romeo, Romeo",
                        "MENENIUS:\nI tell you, friends", "HAMLET:\nTo be, or not",
                        "LADY MACBETH:\nOut, damned",     "PROSPERO:\nWe are such stuff"};

std::vector<GenerateRequest> shakespeare_requests(int n, int max_tokens = 40) {
  std::vector<GenerateRequest> rs;
  for (int i = 0; i < n; ++i) {
    GenerateRequest r;
    r.prompt = shakespeare().tok.encode(kTexts[i % 8]);
    r.max_tokens = max_tokens + 3 * i;
    r.ignore_eos = true;
    rs.push_back(r);
  }
  return rs;
}

std::vector<GenerateRequest> stories_requests(int n) {
  std::vector<GenerateRequest> rs;
  for (int i = 0; i < n; ++i) {
    GenerateRequest r;
    r.prompt = {1};
    for (int j = 0; j < 2 + 3 * i; ++j) r.prompt.push_back(259 + (i * 41 + j * 13) % 250);
    r.max_tokens = 30 + 2 * i;
    r.ignore_eos = true;
    rs.push_back(r);
  }
  return rs;
}

SelfSpeculative<> self_spec(int draft_layer, int k, float threshold = 0.0f) {
  SelfSpeculative<> p;
  p.spec = {draft_layer, k, threshold};
  return p;
}

struct Result {
  std::vector<std::vector<std::int32_t>> tokens;
  std::vector<finish_reason> finish;
  EngineStats stats;
};

// Runs the requests to completion; Cache is paged (blocks of 16) or contiguous.
template <class Cache, class P, class M>
Result run(M& model, P policy, const std::vector<GenerateRequest>& rs, std::int32_t cache_size,
           EngineOptions opt = {}, const Tokenizer* tok = nullptr) {
  Cache cache(model.backend(), model.config(), cache_size);
  cache.fill(NAN);  // a slot read before it is written poisons the logits: sampling throws
  Engine<P, Cache> engine(model, cache, policy, opt);
  if (tok) engine.set_tokenizer(tok);
  for (const auto& r : rs) engine.add_request(r);
  Result out;
  for (auto& c : engine.run_to_completion()) {
    CHECK(c.finish != finish_reason::error);
    INFO(c.error);
    out.tokens.push_back(c.tokens);
    out.finish.push_back(c.finish);
  }
  out.stats = engine.stats();
  if constexpr (requires { cache.blocks_used(); }) CHECK(cache.blocks_used() == 0);
  return out;
}

using Paged = PagedCache<CpuBackend, 16>;
using Contiguous = ContiguousCache<CpuBackend>;

}  // namespace

TEST_CASE(
    "self-spec greedy equals full depth on the embedded model: exits 0 and 1, several k, "
    "batch 1 and 8, both caches") {
  auto& m = shakespeare().model;
  for (int batch : {1, 8}) {
    const auto rs = shakespeare_requests(batch);
    const auto full = run<Paged>(m, FullDepth{}, rs, 256);
    for (int layer : {1, 3}) {
      for (auto [k, thr] : {std::pair{1, 0.0f}, {2, 0.0f}, {4, 0.0f}, {4, 0.3f}, {6, 0.6f}}) {
        CAPTURE(batch);
        CAPTURE(layer);
        CAPTURE(k);
        CAPTURE(thr);
        const auto paged = run<Paged>(m, self_spec(layer, k, thr), rs, 256);
        CHECK(paged.tokens == full.tokens);
        CHECK(paged.stats.verify_passes > 0);
        CHECK(paged.stats.accepted_drafts > 0);  // the drafts did something
        CHECK(paged.stats.accepted_drafts <= paged.stats.draft_tokens);
        CHECK(paged.stats.generated_tokens == full.stats.generated_tokens);
        const auto contiguous = run<Contiguous>(m, self_spec(layer, k, thr), rs, 8);
        CHECK(contiguous.tokens == full.tokens);
      }
    }
  }
}

TEST_CASE("self-spec greedy equals full depth with prefill chunks and preemption in the mix") {
  auto& m = shakespeare().model;
  const auto rs = shakespeare_requests(8, 48);
  const auto full = run<Paged>(m, FullDepth{}, rs, 256);
  // Small steps: prompts go in chunks that ride in verify passes beside drafting rows.
  EngineOptions small{.max_batch_tokens = 12, .max_running = 8};
  const auto chunked = run<Paged>(m, self_spec(1, 3), rs, 256, small);
  CHECK(chunked.tokens == full.tokens);
  // A cache too small for all eight: rows draft less when slots run out and sequences are
  // preempted (and recomputed) between steps.
  const auto tight = run<Paged>(m, self_spec(3, 4, 0.2f), rs, 14, small);
  CHECK(tight.stats.preemptions > 0);
  CHECK(tight.tokens == full.tokens);
  const auto tight_full = run<Paged>(m, FullDepth{}, rs, 14, small);
  CHECK(tight_full.tokens == full.tokens);
}

TEST_CASE("self-spec greedy equals full depth on stories260K with an exit after layer 2") {
  auto& m = stories().model;
  for (int batch : {1, 8}) {
    const auto rs = stories_requests(batch);
    const auto full = run<Paged>(m, FullDepth{}, rs, 128);
    for (auto [k, thr] : {std::pair{2, 0.0f}, {4, 0.0f}, {4, 0.4f}}) {
      CAPTURE(batch);
      CAPTURE(k);
      const auto out = run<Paged>(m, self_spec(2, k, thr), rs, 128);
      CHECK(out.tokens == full.tokens);
      CHECK(out.stats.verify_passes > 0);
      const auto contiguous = run<Contiguous>(m, self_spec(-1, k, thr), rs, 8);
      CHECK(contiguous.tokens == full.tokens);
    }
  }
}

TEST_CASE("self-spec stops inside an accepted run: stop ids, stop strings, max_tokens") {
  auto& s = shakespeare();
  auto rs = shakespeare_requests(4, 30);
  const auto full = run<Paged>(s.model, FullDepth{}, rs, 256);
  // Stop at a token that full depth emits mid-way: the run must end exactly there.
  for (std::size_t i = 0; i < rs.size(); ++i) {
    rs[i].stop_token_ids = {full.tokens[i][7]};
    rs[i].max_tokens = 30;
  }
  const auto full_stop = run<Paged>(s.model, FullDepth{}, rs, 256);
  const auto spec_stop = run<Paged>(s.model, self_spec(3, 4), rs, 256);
  CHECK(spec_stop.tokens == full_stop.tokens);
  CHECK(spec_stop.finish == full_stop.finish);
  // Stop strings on the detokenised text, and max_tokens that cut a run.
  auto rs2 = shakespeare_requests(4, 30);
  for (auto& r : rs2) {
    r.stop = {"e"};
    r.max_tokens = 5;
  }
  const auto a = run<Paged>(s.model, FullDepth{}, rs2, 256, {}, &s.tok);
  const auto b = run<Paged>(s.model, self_spec(1, 4), rs2, 256, {}, &s.tok);
  CHECK(a.tokens == b.tokens);
  CHECK(a.finish == b.finish);
}

TEST_CASE("self-spec refuses a draft layer that is not an exit point, and a model without exits") {
  auto& s = shakespeare();
  Paged cache(s.be, s.model.config(), 16);
  using E = Engine<SelfSpeculative<>, Paged>;
  CHECK_THROWS_AS([&] { E e(s.model, cache, self_spec(2, 4)); }(), error);
  CHECK_NOTHROW([&] { E e(s.model, cache, self_spec(3, 4)); }());
  auto w = load_model(test::source("models/eexit-shakespeare"));
  w.config.early_exit.exit_layers.clear();
  w.exit_heads.clear();
  LlamaModel<CpuBackend> plain(s.be, std::move(w));
  Paged c2(s.be, plain.config(), 16);
  CHECK_THROWS_AS([&] { E e(plain, c2, self_spec(-1, 4)); }(), error);
  // k = 0 is plain decoding, whatever the model.
  CHECK_NOTHROW([&] { E e(plain, c2, self_spec(-1, 0)); }());
}
