// Automatic prefix caching (cache/paged.hpp, cache/block_pool.hpp; the scheduler's
// match_prefix and the engine's commit_prefill):
//   - the cache alone: identities, sharing by reference, cached blocks kept and evicted
//     least recently released first, never a match of the last token, duplicates;
//   - on the embedded model (exits after layers 1 and 3 of 6), in caches poisoned with NaN
//     (a shared slot read before it was written would poison the logits): the output with
//     prefix caching equals the output without it, token for token and exit for exit, for
//     every policy, when requests sharing a long prefix arrive together and one after
//     another, and in a conversation whose prompts hold earlier turns' generated tokens
//     (sharing those blocks, whose K/V may be exit-filled, fails it for the exit-state
//     fill); and the hits really happen (cached tokens > 0, exactly that many fewer
//     prefill rows). Requests admitted in the same step do not hit each other: a block
//     becomes shareable once the walk that computes it has run;
//   - under preemption (a small cache): the same for the policies whose output does not
//     depend on the schedule (full depth, self-speculation). An early-exit policy's output
//     does (a recomputed token's K/V are full depth where its first pass filled them from
//     an exit), and prefix caching changes when preemption happens; those runs must still
//     finish every request, without a poisoned read.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "../test_models.hpp"
#include "eexit/eexit.hpp"

using namespace eexit;

namespace {

test::EmbeddedModel& sh() {
  return test::embedded_model();
}

using Cache = PagedCache<CpuBackend, 16>;

std::vector<std::int32_t> seq_tokens(int n, int salt = 0) {
  std::vector<std::int32_t> t;
  for (int i = 0; i < n; ++i) t.push_back(5 + (i * 37 + salt * 11) % 900);
  return t;
}

}  // namespace

// ---- the cache alone -------------------------------------------------------------------

TEST_CASE("PagedCache: full-depth blocks are named, kept after release and shared by a match") {
  Cache cache(sh().be, sh().model.config(), 8);
  const auto t = seq_tokens(40);  // 2 full blocks + 8 tokens
  REQUIRE(cache.match_prefix(1, t) == 0);
  REQUIRE(cache.reserve(1, 40));
  cache.commit_full_depth(1, t, 40);
  CHECK(cache.blocks_used() == 3);
  CHECK(cache.blocks_cached() == 0);
  const std::vector<std::int32_t> a(cache.block_table(1), cache.block_table(1) + 3);

  SUBCASE("a second sequence shares the held blocks; it computes from the first unshared one") {
    CHECK(cache.match_prefix(2, t) == 32);
    CHECK(cache.length(2) == 32);
    CHECK(cache.blocks_used() == 3);  // nothing new taken
    CHECK(cache.block_table(2)[0] == a[0]);
    CHECK(cache.block_table(2)[1] == a[1]);
    REQUIRE(cache.reserve(2, 8));  // its own third block: never one of the shared ones
    CHECK(cache.block_table(2)[2] != a[2]);
    CHECK(cache.blocks_used() == 4);
    cache.release(1);
    CHECK(cache.blocks_used() == 3);  // the shared blocks are still held by 2
    cache.release(2);
    CHECK(cache.blocks_used() == 0);
    CHECK(cache.blocks_cached() == 2);
    CHECK(cache.free_tokens() == 8 * 16);  // cached blocks count as free
  }
  SUBCASE("released blocks stay cached and match again") {
    cache.release(1);
    CHECK(cache.blocks_used() == 0);
    CHECK(cache.blocks_cached() == 2);  // the partial third block is free, not cached
    CHECK(cache.match_prefix(3, t) == 32);
    CHECK(cache.blocks_cached() == 0);
    CHECK(cache.blocks_used() == 2);
    cache.release(3);
  }
  SUBCASE("the last token is never matched: a prompt of exactly two blocks shares one") {
    cache.release(1);
    const std::vector<std::int32_t> two(t.begin(), t.begin() + 32);
    CHECK(cache.match_prefix(4, two) == 16);
    cache.release(4);
    const std::vector<std::int32_t> one_more(t.begin(), t.begin() + 33);
    CHECK(cache.match_prefix(5, one_more) == 32);
    cache.release(5);
  }
  SUBCASE("a different token anywhere in a block stops the match there") {
    cache.release(1);
    auto u = t;
    u[20] += 1;  // in the second block
    CHECK(cache.match_prefix(6, u) == 16);
    cache.release(6);
    auto v = t;
    v[0] += 1;  // the first block differs: nothing after it can match
    CHECK(cache.match_prefix(7, v) == 0);
    CHECK(cache.length(7) == 0);
  }
  SUBCASE("cached blocks are evicted when free ones run out, least recently released first") {
    cache.release(1);
    const auto w = seq_tokens(40, 1);
    REQUIRE(cache.reserve(8, 40));
    cache.commit_full_depth(8, w, 40);
    cache.release(8);
    CHECK(cache.blocks_cached() == 4);
    CHECK(cache.free_tokens() == 8 * 16);
    // 6 blocks: the 4 free ones, then the 2 cached ones released first (t's).
    REQUIRE(cache.reserve(9, 6 * 16));
    CHECK(cache.blocks_cached() == 2);
    cache.release(9);
    CHECK(cache.match_prefix(10, t) == 0);
    CHECK(cache.match_prefix(11, w) == 32);
    cache.release(11);
    REQUIRE(cache.reserve(12, 8 * 16));  // everything: every identity is forgotten
    cache.release(12);
    CHECK(cache.blocks_cached() == 0);
    CHECK(cache.match_prefix(13, w) == 0);
  }
  SUBCASE("two sequences computing the same blocks: one copy is kept, the chain goes on") {
    REQUIRE(cache.reserve(14, 40));
    cache.commit_full_depth(14, t, 40);  // a duplicate of 1's: stays private
    cache.release(1);
    cache.release(14);
    CHECK(cache.blocks_cached() == 2);
    CHECK(cache.match_prefix(15, t) == 32);
    cache.release(15);
  }
  SUBCASE("only committed tokens are named; a rollback keeps them") {
    const auto u = seq_tokens(64, 2);
    REQUIRE(cache.reserve(16, 40));
    cache.commit_full_depth(16, u, 20);  // one full block committed
    REQUIRE(cache.reserve(16, 24));      // decode tokens: never committed
    cache.truncate(16, 30);
    cache.release(16);
    cache.release(1);
    CHECK(cache.match_prefix(17, u) == 16);
    cache.release(17);
  }
}

// ---- the engine ------------------------------------------------------------------------

namespace {

// Requests that share a prefix of 53 tokens (3 full blocks and 5 tokens): some end in it,
// one ends exactly on a block boundary (48), the rest go on with their own tokens.
std::vector<GenerateRequest> family(int n, int round, int max_tokens = 12) {
  const auto shared = seq_tokens(53);
  std::vector<GenerateRequest> rs;
  for (int i = 0; i < n; ++i) {
    GenerateRequest r;
    const int keep = i == 0 ? 48 : i == 1 ? 53 : 40 + 5 * i;
    r.prompt.assign(shared.begin(), shared.begin() + std::min(keep, 53));
    for (int j = 53; j < keep; ++j) r.prompt.push_back(7 + (j * 13 + i * 29 + round * 7) % 900);
    r.max_tokens = max_tokens + 2 * i;
    r.ignore_eos = true;
    rs.push_back(r);
  }
  return rs;
}

// What a run produced: every request's completion, in order, and the engine's counters.
struct Outcome {
  std::vector<Completion> done;
  EngineStats stats;
};

// Token for token and exit for exit.
void check_same(const Outcome& on, const Outcome& off) {
  REQUIRE(on.done.size() == off.done.size());
  for (std::size_t i = 0; i < on.done.size(); ++i) {
    CAPTURE(i);
    CHECK(on.done[i].tokens == off.done[i].tokens);
    CHECK(on.done[i].exit_layers == off.done[i].exit_layers);
  }
}

// Runs `rounds` one after another on one engine (so later rounds can hit what earlier
// ones cached), each round's requests together, and checks every request finished cleanly.
template <class P>
Outcome run(P policy, const std::vector<std::vector<GenerateRequest>>& rounds, bool prefix,
            std::int32_t blocks = 64, std::int32_t budget = 1024, dtype kv = dtype::f32) {
  Cache cache(sh().be, sh().model.config(), blocks, kv);
  cache.fill(NAN);
  EngineOptions opt;
  opt.max_batch_tokens = budget;
  opt.prefix_cache = prefix;
  Engine<P, Cache> engine(sh().model, cache, policy, opt);
  Outcome out;
  for (const auto& rs : rounds) {
    for (const auto& r : rs) engine.add_request(r);
    std::size_t i = 0;
    for (auto& c : engine.run_to_completion()) {
      INFO(c.error);
      CHECK(c.finish == finish_reason::length);
      CHECK(std::int32_t(c.tokens.size()) == rs[i++].max_tokens);
      out.done.push_back(std::move(c));
    }
    CHECK(cache.blocks_used() == 0);
  }
  out.stats = engine.stats();
  if (!prefix) CHECK(out.stats.prefix_cached_tokens == 0);
  return out;
}

// A conversation on one engine: each turn's prompt is the previous turn's prompt, its
// output and a few new tokens, so the prompt covers blocks of generated tokens, whose K/V
// may be exit-filled: those must not be shared (their tokens are recomputed, at full
// depth, as prompt tokens, exactly as without prefix caching).
template <class P>
Outcome conversation(P policy, bool prefix, dtype kv = dtype::f32) {
  Cache cache(sh().be, sh().model.config(), 64, kv);
  cache.fill(NAN);
  EngineOptions opt;
  opt.prefix_cache = prefix;
  Engine<P, Cache> engine(sh().model, cache, policy, opt);
  Outcome out;
  GenerateRequest r = family(1, 0, 40)[0];
  for (int turn = 0; turn < 4; ++turn) {
    engine.add_request(r);
    const auto c = engine.run_to_completion().at(0);
    INFO(c.error);
    CHECK(c.finish == finish_reason::length);
    r.prompt.insert(r.prompt.end(), c.tokens.begin(), c.tokens.end());
    out.done.push_back(c);
    for (int j = 0; j < 3 + turn; ++j) r.prompt.push_back(9 + (turn * 31 + j * 17) % 900);
  }
  CHECK(cache.blocks_used() == 0);
  out.stats = engine.stats();
  return out;
}
template <class Rule, class Fill>
ExitPolicy<AnyMeasure, Rule, Fill> exit_policy(float threshold) {
  ExitPolicy<AnyMeasure, Rule, Fill> p;
  p.thresholds.values = {threshold};
  return p;
}
// Adaptive with fixed costs (not learned from timings) and no exploration: deterministic.
Adaptive adaptive(float threshold) {
  Adaptive p;
  p.thresholds.values = {threshold};
  p.rule.costs.resize(3);
  for (std::size_t n : {1u, 2u, 4u, 8u, 16u, 32u, 64u}) {
    p.rule.costs.layer.set(n, 1e-5 * double(n));  // compute-bound: a split pays
    for (auto& h : p.rule.costs.head) h.set(n, 1e-7 * double(n));
    for (auto& f : p.rule.costs.fill) f.set(n, 0.0);
  }
  p.rule.opt.learn_costs = false;
  p.rule.opt.explore_every = 0;
  p.rule.opt.prior_pass = 0.9;
  return p;
}
SelfSpeculative<> self_spec(int draft_layer, int k) {
  SelfSpeculative<> p;
  p.spec = {draft_layer, k, 0.0f, true};
  return p;
}

// The scenarios every policy runs with prefix caching off and on: rounds that share a
// prefix, the first round filling the cache, each later round (together, or one request
// per round) hitting it, and a conversation. Checks equality, and that the hits happened
// and saved prefill. exits_early: the policy must exit some tokens early in these runs (the
// point of the test is exit-filled K/V next to shared blocks).
template <class P>
void same_with_and_without(const P& policy, bool exits_early = false, dtype kv = dtype::f32) {
  SUBCASE("requests arriving together, then again together") {
    const std::vector<std::vector<GenerateRequest>> rounds{family(5, 0), family(5, 1)};
    const auto off = run(policy, rounds, false, 64, 1024, kv);
    const auto on = run(policy, rounds, true, 64, 1024, kv);
    check_same(on, off);
    CHECK(on.stats.prefix_cached_tokens > 0);
    CHECK(on.stats.prompt_tokens + on.stats.prefix_cached_tokens == off.stats.prompt_tokens);
    CHECK(on.stats.prompt_tokens < off.stats.prompt_tokens);
    if (exits_early) CHECK(off.stats.early_exits() > 0);
  }
  SUBCASE("requests arriving one after another") {
    std::vector<std::vector<GenerateRequest>> rounds;
    for (int k = 0; k < 2; ++k)
      for (auto& r : family(5, k)) rounds.push_back({r});
    const auto off = run(policy, rounds, false, 64, 1024, kv);
    const auto on = run(policy, rounds, true, 64, 1024, kv);
    check_same(on, off);
    // Every request after the first shares at least its first two blocks.
    CHECK(on.stats.prefix_cached_tokens >= 9 * 32);
    CHECK(on.stats.prompt_tokens + on.stats.prefix_cached_tokens == off.stats.prompt_tokens);
    if (exits_early) CHECK(off.stats.early_exits() > 0);
  }
  SUBCASE("a conversation: each prompt holds the previous turns' generated tokens") {
    const auto off = conversation(policy, false, kv);
    const auto on = conversation(policy, true, kv);
    check_same(on, off);
    CHECK(on.stats.prefix_cached_tokens >= 3 * 48);
    CHECK(on.stats.prompt_tokens + on.stats.prefix_cached_tokens == off.stats.prompt_tokens);
    if (exits_early) CHECK(off.stats.early_exits() > 0);
  }
}

}  // namespace

TEST_CASE("prefix caching changes no output: full depth") {
  same_with_and_without(FullDepth{});
}

TEST_CASE("prefix caching changes no output: all-confident, fill from the exit state") {
  same_with_and_without(exit_policy<ExitWhenAllConfident, FillFromExitState>(0.3f), true);
}

TEST_CASE("prefix caching changes no output: all-confident, deferred fill") {
  same_with_and_without(exit_policy<ExitWhenAllConfident, DeferredRecompute>(0.3f), true);
}

TEST_CASE("prefix caching changes no output: split, fill from the exit state") {
  same_with_and_without(exit_policy<ExitConfidentRows, FillFromExitState>(0.3f), true);
}

TEST_CASE("prefix caching changes no output: split, deferred fill") {
  same_with_and_without(exit_policy<ExitConfidentRows, DeferredRecompute>(0.3f), true);
}

TEST_CASE("prefix caching changes no output: adaptive") {
  same_with_and_without(adaptive(0.3f), true);
}

TEST_CASE("prefix caching changes no output: self-speculation") {
  same_with_and_without(self_spec(1, 3));
}

TEST_CASE("prefix caching changes no output in an f16 KV cache: all-confident, exit state") {
  same_with_and_without(exit_policy<ExitWhenAllConfident, FillFromExitState>(0.3f), true,
                        dtype::f16);
}

TEST_CASE("prefix caching changes no output in an f16 KV cache: self-speculation") {
  same_with_and_without(self_spec(1, 3), false, dtype::f16);
}

TEST_CASE("prefix caching under preemption: full depth and self-speculation are unchanged") {
  // 9 blocks of 16 for 5 requests of 48-60 prompt tokens + 12-20 generated (4-5 blocks
  // each, 12 even when they share their first 3): preempted and recomputed over and over;
  // a small budget chunks the prefill too.
  std::vector<std::vector<GenerateRequest>> rounds{family(5, 0, 12), family(5, 1, 12)};
  for (std::int32_t budget : {1024, 24}) {
    CAPTURE(budget);
    const auto off = run(FullDepth{}, rounds, false, 9, budget);
    const auto on = run(FullDepth{}, rounds, true, 9, budget);
    CHECK(off.stats.preemptions > 0);
    CHECK(on.stats.preemptions > 0);
    CHECK(on.stats.prefix_cached_tokens > 0);
    check_same(on, off);
    const auto spec_off = run(self_spec(1, 3), rounds, false, 9, budget);
    const auto spec_on = run(self_spec(1, 3), rounds, true, 9, budget);
    CHECK(spec_on.stats.preemptions > 0);
    CHECK(spec_on.stats.prefix_cached_tokens > 0);
    // Greedy self-speculation is full depth's output (its exit layers say where a token was
    // verified, so only the tokens compare).
    for (std::size_t i = 0; i < off.done.size(); ++i) {
      CHECK(spec_off.done[i].tokens == off.done[i].tokens);
      CHECK(spec_on.done[i].tokens == off.done[i].tokens);
    }
    check_same(spec_on, spec_off);
  }
}

TEST_CASE("prefix caching under preemption: early-exit policies finish every request cleanly") {
  // run() checks: no error (a poisoned read throws in sampling), every request generates
  // max_tokens, no block is held at the end.
  std::vector<std::vector<GenerateRequest>> rounds{family(5, 0, 12), family(5, 1, 12)};
  const auto a = run(exit_policy<ExitWhenAllConfident, FillFromExitState>(0.3f), rounds, true, 9);
  const auto d = run(exit_policy<ExitConfidentRows, DeferredRecompute>(0.3f), rounds, true, 9);
  CHECK(a.stats.preemptions > 0);
  CHECK(d.stats.preemptions > 0);
  CHECK(a.stats.prefix_cached_tokens > 0);
  CHECK(d.stats.prefix_cached_tokens > 0);
  CHECK(a.stats.early_exits() > 0);
  CHECK(d.stats.early_exits() > 0);
}

TEST_CASE("prefix caching is off by default in the engine, and a contiguous cache ignores it") {
  const std::vector<std::vector<GenerateRequest>> rounds{family(3, 0), family(3, 0)};
  Cache cache(sh().be, sh().model.config(), 64);
  Engine<FullDepth, Cache> engine(sh().model, cache);
  CHECK_FALSE(engine.options().prefix_cache);
  using Contiguous = ContiguousCache<CpuBackend>;
  Contiguous cc(sh().be, sh().model.config(), 4);
  EngineOptions opt;
  opt.prefix_cache = true;
  Engine<FullDepth, Contiguous> ce(sh().model, cc, FullDepth{}, opt);
  for (const auto& rs : rounds) {
    for (const auto& r : rs) ce.add_request(r);
    ce.run_to_completion();
  }
  CHECK(ce.stats().prefix_cached_tokens == 0);
}
