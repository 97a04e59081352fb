// End-to-end generation on stories260K: the greedy reference, batch invariance, paged vs
// contiguous, and preemption under a cache too small for the batch.
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>

#include "../test_paths.hpp"
#include "eexit/backend/cpu.hpp"
#include "eexit/cache/contiguous.hpp"
#include "eexit/cache/paged.hpp"
#include "eexit/engine/engine.hpp"
#include "eexit/model/llama.hpp"
#include "eexit/model/load.hpp"

using namespace eexit;

namespace {

std::vector<std::int32_t> reference_ids() {
  std::ifstream f(test::shared("models/stories260K/greedy_reference_t0.txt"));
  REQUIRE(f.good());
  std::string line;
  std::vector<std::int32_t> ids;
  while (std::getline(f, line)) {
    if (line.rfind("ids:", 0) == 0 || line.find_first_not_of("0123456789 ") == std::string::npos) {
      std::istringstream ss(
          line.substr(line.find(':') == std::string::npos ? 0 : line.find(':') + 1));
      for (std::int32_t v; ss >> v;) ids.push_back(v);
      if (ids.size() >= 256) break;
    }
  }
  return ids;
}

struct Stories {
  CpuBackend be{2};
  LlamaModel<CpuBackend> model{be, load_model(test::shared("models/stories260K/stories260K.bin"))};
};

Stories& stories() {
  static Stories s;
  return s;
}

GenerateRequest greedy(std::vector<std::int32_t> prompt, int max_tokens) {
  GenerateRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.ignore_eos = true;
  return r;
}

}  // namespace

TEST_CASE("greedy generation from BOS reproduces the stories260K reference") {
  auto ref = reference_ids();
  REQUIRE(ref.size() == 256);
  auto& s = stories();
  PagedCache<CpuBackend, 16> cache(s.be, s.model.config(), 64);
  Engine<FullDepth, PagedCache<CpuBackend, 16>> engine(s.model, cache);
  engine.add_request(greedy({1}, 256));
  auto out = engine.run_to_completion();
  REQUIRE(out.size() == 1);
  CHECK(out[0].tokens == ref);
  CHECK(out[0].finish == finish_reason::length);
  CHECK(cache.blocks_used() == 0);
}

namespace {

// Eight different requests: varied prompt lengths, greedy and seeded sampling.
std::vector<GenerateRequest> eight_requests() {
  std::vector<GenerateRequest> rs;
  for (int i = 0; i < 8; ++i) {
    std::vector<std::int32_t> prompt{1};
    for (int j = 0; j < 3 + 5 * i; ++j) prompt.push_back(259 + (i * 37 + j * 11) % 250);
    auto r = greedy(prompt, 20 + 3 * i);
    if (i % 2) {
      r.sampling.temperature = 0.8f;
      r.sampling.top_p = 0.9f;
      r.sampling.seed = 1000 + std::uint64_t(i);
    }
    rs.push_back(r);
  }
  return rs;
}

template <class Cache>
std::vector<std::vector<std::int32_t>> run_batch(Cache& cache,
                                                 const std::vector<GenerateRequest>& rs,
                                                 EngineOptions opt = {},
                                                 EngineStats* stats = nullptr) {
  auto& s = stories();
  Engine<FullDepth, Cache> engine(s.model, cache, {}, opt);
  for (auto& r : rs) engine.add_request(r);
  std::vector<std::vector<std::int32_t>> toks;
  for (auto& c : engine.run_to_completion()) {
    CHECK(c.finish == finish_reason::length);
    toks.push_back(c.tokens);
  }
  if (stats) *stats = engine.stats();
  return toks;
}

std::vector<std::vector<std::int32_t>> run_alone(const std::vector<GenerateRequest>& rs) {
  auto& s = stories();
  std::vector<std::vector<std::int32_t>> toks;
  for (auto& r : rs) {
    PagedCache<CpuBackend, 16> cache(s.be, s.model.config(), 64);
    toks.push_back(run_batch(cache, {r})[0]);
  }
  return toks;
}

}  // namespace

TEST_CASE("a batch of 8 requests gives each the tokens it gets alone; paged equals contiguous") {
  auto& s = stories();
  const auto rs = eight_requests();
  const auto alone = run_alone(rs);
  for (std::size_t i = 0; i < rs.size(); ++i)
    CHECK(alone[i].size() == std::size_t(rs[i].max_tokens));
  // Sampled requests really sample: not all equal to their greedy version.
  PagedCache<CpuBackend, 16> paged(s.be, s.model.config(), 128);
  CHECK(run_batch(paged, rs) == alone);
  ContiguousCache<CpuBackend> contiguous(s.be, s.model.config(), 8);
  CHECK(run_batch(contiguous, rs) == alone);
  SUBCASE("chunked prefill under a small token budget changes nothing") {
    PagedCache<CpuBackend, 4> small_blocks(s.be, s.model.config(), 512);
    EngineOptions opt;
    opt.max_batch_tokens = 7;
    CHECK(run_batch(small_blocks, rs, opt) == alone);
  }
}

TEST_CASE("a cache too small for the batch preempts, and every request finishes unchanged") {
  auto& s = stories();
  const auto rs = eight_requests();
  const auto alone = run_alone(rs);
  // 8 requests need up to ~60 tokens each; 12 blocks of 16 hold about 3 of them at once.
  PagedCache<CpuBackend, 16> cache(s.be, s.model.config(), 12);
  EngineStats st;
  CHECK(run_batch(cache, rs, {}, &st) == alone);
  CHECK(st.preemptions > 0);
  CHECK(cache.blocks_used() == 0);
}

TEST_CASE("a seeded request samples the same tokens whatever runs beside it") {
  auto& s = stories();
  auto r = greedy({1, 300, 301}, 40);
  r.sampling.temperature = 1.0f;
  r.sampling.seed = 7;
  const auto alone = run_alone({r})[0];
  auto other = r;
  other.sampling.seed = 8;
  PagedCache<CpuBackend, 16> cache(s.be, s.model.config(), 64);
  auto both = run_batch(cache, {other, r, other});
  CHECK(both[1] == alone);
  CHECK(both[0] != alone);  // a different seed does give different tokens
}

TEST_CASE("abort frees the KV blocks and reports the request finished") {
  auto& s = stories();
  PagedCache<CpuBackend, 16> cache(s.be, s.model.config(), 64);
  Engine<FullDepth, PagedCache<CpuBackend, 16>> engine(s.model, cache);
  auto a = engine.add_request(greedy({1, 300}, 100));
  auto b = engine.add_request(greedy({1, 301}, 5));
  engine.step();
  engine.step();
  CHECK(cache.blocks_used() > 0);
  CHECK(engine.abort(a));
  CHECK_FALSE(engine.abort(a));
  bool saw_abort = false, b_done = false;
  while (engine.has_work())
    for (auto& o : engine.step()) {
      if (o.id == a) saw_abort = o.finish == finish_reason::abort;
      if (o.id == b && o.finished()) b_done = true;
    }
  CHECK(saw_abort);
  CHECK(b_done);
  CHECK(cache.blocks_used() == 0);
}

TEST_CASE("stop token ids and EOS end a request with finish reason stop") {
  auto& s = stories();
  const auto ref = run_alone({greedy({1}, 30)})[0];
  PagedCache<CpuBackend, 16> cache(s.be, s.model.config(), 64);
  Engine<FullDepth, PagedCache<CpuBackend, 16>> engine(s.model, cache);
  auto r = greedy({1}, 30);
  r.stop_token_ids = {ref[10]};
  engine.add_request(r);
  auto out = engine.run_to_completion();
  CHECK(out[0].finish == finish_reason::stop);
  const auto first = std::size_t(std::find(ref.begin(), ref.end(), ref[10]) - ref.begin());
  CHECK(out[0].tokens == std::vector<std::int32_t>(ref.begin(), ref.begin() + long(first) + 1));
}

TEST_CASE("requests that can never run are refused with eexit::error, nothing queued") {
  auto& s = stories();
  PagedCache<CpuBackend, 16> cache(s.be, s.model.config(), 4);
  Engine<FullDepth, PagedCache<CpuBackend, 16>> engine(s.model, cache);
  CHECK_THROWS_AS(engine.add_request(greedy({}, 5)), eexit::error);
  CHECK_THROWS_AS(engine.add_request(greedy({1, 512}, 5)), eexit::error);
  CHECK_THROWS_AS(engine.add_request(greedy({1, -1}, 5)), eexit::error);
  CHECK_THROWS_AS(engine.add_request(greedy(std::vector<std::int32_t>(600, 5), 5)), eexit::error);
  CHECK_THROWS_AS(engine.add_request(greedy(std::vector<std::int32_t>(100, 5), 5)), eexit::error);
  auto bad = greedy({1}, 5);
  bad.sampling.temperature = -1.0f;
  CHECK_THROWS_AS(engine.add_request(bad), eexit::error);
  CHECK_FALSE(engine.has_work());
  // A request larger than the whole cache (4 blocks of 16) ends with "length", not a hang.
  engine.add_request(greedy({1}, 200));
  auto out = engine.run_to_completion();
  CHECK(out[0].finish == finish_reason::length);
  CHECK(out[0].tokens.size() >= 60);
  CHECK(cache.blocks_used() == 0);
}

TEST_CASE("refused requests carry a request_errc and the message names the problem") {
  auto& s = stories();
  PagedCache<CpuBackend, 16> cache(s.be, s.model.config(), 4);
  Engine<FullDepth, PagedCache<CpuBackend, 16>> engine(s.model, cache);
  auto refused = [&](GenerateRequest r, request_errc want, const std::string& msg) {
    try {
      engine.add_request(std::move(r));
      FAIL("accepted");
    } catch (const request_error& e) {
      CHECK(e.code() == want);
      CHECK(std::string(e.what()) == msg);
    }
  };
  refused(greedy({}, 5), request_errc::empty_prompt, "request: prompt is empty");
  refused(greedy({1, 512}, 5), request_errc::token_out_of_vocab,
          "request: prompt token 512 is outside the vocabulary");
  refused(greedy(std::vector<std::int32_t>(600, 5), 5), request_errc::context_length_exceeded,
          "request: prompt has 600 tokens; the context holds 512");
  refused(greedy(std::vector<std::int32_t>(100, 5), 5), request_errc::cache_too_small,
          "request: prompt does not fit the KV cache");
  refused(greedy({1}, -1), request_errc::invalid_parameter, "request: max_tokens must be >= 0");
  auto bad = greedy({1}, 5);
  bad.sampling.temperature = -1.0f;
  try {
    engine.add_request(bad);
    FAIL("accepted");
  } catch (const request_error& e) {
    CHECK(e.code() == request_errc::invalid_sampling);
    CHECK(std::string(e.what()).rfind("sampling: temperature", 0) == 0);  // as the sampler says
  }
  CHECK_FALSE(engine.has_work());
}

TEST_CASE("max_tokens 0 finishes with length and no token, beside a request that runs") {
  // The prefill's last row samples a token; with nothing to generate it must not run at all.
  auto& s = stories();
  const auto ref = run_alone({greedy({1, 300}, 4)})[0];
  PagedCache<CpuBackend, 16> cache(s.be, s.model.config(), 64);
  Engine<FullDepth, PagedCache<CpuBackend, 16>> engine(s.model, cache);
  const auto none = engine.add_request(greedy({1, 301, 302}, 0));
  const auto four = engine.add_request(greedy({1, 300}, 4));
  std::vector<std::int32_t> none_tokens, four_tokens;
  finish_reason none_finish = finish_reason::none;
  while (engine.has_work())
    for (auto& o : engine.step()) {
      for (auto& t : o.tokens) (o.id == none ? none_tokens : four_tokens).push_back(t.token);
      if (o.id == none && o.finished()) none_finish = o.finish;
      CHECK((o.id == none || o.id == four));
    }
  CHECK(none_finish == finish_reason::length);
  CHECK(none_tokens.empty());
  CHECK(four_tokens == ref);
  CHECK(engine.stats().generated_tokens == 4);
  CHECK(cache.blocks_used() == 0);
}
