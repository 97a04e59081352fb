// The scheduler alone, over a real PagedCache with a tiny config and no model: the token
// budget split, FCFS admission, chunked prefill continuation, preemption of the newest
// running sequence when the cache is full, and a request that never fits.
#include "eexit/engine/scheduler.hpp"

#include <doctest/doctest.h>

#include <memory>
#include <numeric>
#include <vector>

#include "eexit/backend/cpu.hpp"
#include "eexit/cache/paged.hpp"

using namespace eexit;

namespace {

using Cache = PagedCache<CpuBackend, 4>;  // 4 tokens per block

ModelConfig tiny() {
  ModelConfig c;
  c.dim = 8;
  c.hidden_dim = 16;
  c.n_layers = 1;
  c.n_heads = 1;
  c.n_kv_heads = 1;
  c.head_dim = 8;
  c.vocab_size = 16;
  c.max_seq_len = 64;
  return c;
}

struct Fixture {
  CpuBackend be{1};
  std::vector<std::unique_ptr<Sequence>> seqs;

  Sequence& make(std::int64_t id, std::size_t prompt_len) {
    GenerateRequest r;
    r.prompt.resize(prompt_len);
    std::iota(r.prompt.begin(), r.prompt.end(), 1);
    seqs.push_back(std::make_unique<Sequence>(id, std::move(r), 1, 1));
    return *seqs.back();
  }
};

// What the engine does with a plan: lays its rows out for the walk (which advances
// n_computed), and a chunk that ends its sequence gets one more (sampled) token.
WalkRows ran(Plan& p, const Cache& cache) {
  WalkRows rows;
  lay_out_rows(p, cache, rows);
  for (const Chunk& ch : p.chunks)
    if (ch.samples) ch.seq->tokens.push_back(0);
  return rows;
}

}  // namespace

TEST_CASE("scheduler: FCFS admission under the token budget, prompts in chunks") {
  Fixture f;
  Cache cache(f.be, tiny(), 64);
  Scheduler<Cache> s(cache, {.max_batch_tokens = 10, .max_running = 8});
  Sequence& a = f.make(1, 6);
  Sequence& b = f.make(2, 7);
  Sequence& c = f.make(3, 3);
  s.add(a);
  s.add(b);
  s.add(c);

  Plan p1 = s.schedule();  // a whole (6), b's first 4 rows; c waits
  REQUIRE(p1.chunks.size() == 2);
  CHECK(p1.chunks[0].seq == &a);
  CHECK(p1.chunks[0].n == 6);
  CHECK(p1.chunks[0].samples);
  CHECK_FALSE(p1.chunks[0].decode);
  CHECK(p1.chunks[1].seq == &b);
  CHECK(p1.chunks[1].start == 0);
  CHECK(p1.chunks[1].n == 4);
  CHECK_FALSE(p1.chunks[1].samples);
  CHECK(s.waiting().size() == 1);
  CHECK(cache.length(1) == 6);
  CHECK(cache.length(2) == 4);
  ran(p1, cache);

  Plan p2 = s.schedule();  // running first: a decodes (1), b continues (3), then c (3)
  REQUIRE(p2.chunks.size() == 3);
  CHECK(p2.chunks[0].seq == &a);
  CHECK(p2.chunks[0].decode);
  CHECK(p2.chunks[1].seq == &b);
  CHECK(p2.chunks[1].start == 4);
  CHECK(p2.chunks[1].n == 3);
  CHECK(p2.chunks[1].samples);
  CHECK_FALSE(p2.chunks[1].decode);  // ends the prompt: a prefill row that samples
  CHECK(p2.chunks[2].seq == &c);
  CHECK(p2.chunks[2].n == 3);
  CHECK(s.waiting().empty());
  CHECK(p2.preempted.empty());

  // The walk's rows: prefill chunks first (b's 3, c's 3), a's decode row last.
  const WalkRows rows = ran(p2, cache);
  CHECK(rows.tokens.size() == 7);
  CHECK(rows.n_prefill == 6);
  CHECK(rows.tokens == std::vector<std::int32_t>{5, 6, 7, 1, 2, 3, 0});
  CHECK(rows.rowkv[0].pos == 4);
  CHECK(rows.rowkv[6].pos == 6);
  CHECK(rows.yield_rows == std::vector<std::int32_t>{2, 5});  // b and c end their prompts
  REQUIRE(rows.decode.size() == 1);
  CHECK(p2.chunks[std::size_t(rows.decode.slot[0])].seq == &a);
  CHECK(rows.decode.request[0] == 1);
  CHECK(a.n_computed == 7);
}

TEST_CASE("scheduler: max_running caps admission; the rest waits in order") {
  Fixture f;
  Cache cache(f.be, tiny(), 64);
  Scheduler<Cache> s(cache, {.max_batch_tokens = 100, .max_running = 2});
  Sequence& a = f.make(1, 2);
  Sequence& b = f.make(2, 2);
  Sequence& c = f.make(3, 2);
  s.add(a);
  s.add(b);
  s.add(c);
  Plan p = s.schedule();
  REQUIRE(p.chunks.size() == 2);
  CHECK(p.chunks[0].seq == &a);
  CHECK(p.chunks[1].seq == &b);
  REQUIRE(s.waiting().size() == 1);
  CHECK(s.waiting().front() == &c);
}

TEST_CASE("scheduler: a full cache preempts the newest running sequence") {
  Fixture f;
  Cache cache(f.be, tiny(), 4);  // 16 tokens in all
  Scheduler<Cache> s(cache, {.max_batch_tokens = 64, .max_running = 8});
  Sequence& a = f.make(1, 8);  // 2 blocks
  Sequence& b = f.make(2, 8);  // 2 blocks: the cache is full after both prefill
  s.add(a);
  s.add(b);
  Plan p1 = s.schedule();
  REQUIRE(p1.chunks.size() == 2);
  CHECK(cache.free_tokens() == 0);
  ran(p1, cache);  // both have 9 tokens now, 8 in the cache

  Plan p2 = s.schedule();  // a's decode needs a 3rd block: b (newest) is preempted
  REQUIRE(p2.preempted.size() == 1);
  CHECK(p2.preempted[0] == &b);
  CHECK(b.n_computed == 0);
  CHECK_FALSE(b.in_cache);
  CHECK(b.stats.preemptions == 1);
  REQUIRE(p2.chunks.size() == 1);
  CHECK(p2.chunks[0].seq == &a);
  CHECK(p2.chunks[0].decode);
  REQUIRE(s.waiting().size() == 1);
  CHECK(s.waiting().front() == &b);  // back at the head of the queue
  CHECK(cache.length(1) == 9);
  CHECK(cache.length(2) == 0);
  ran(p2, cache);

  // b comes back once a is gone, recomputing its whole sequence (prompt + its token).
  s.remove(a);
  Plan p3 = s.schedule();
  REQUIRE(p3.chunks.size() == 1);
  CHECK(p3.chunks[0].seq == &b);
  CHECK(p3.chunks[0].start == 0);
  CHECK(p3.chunks[0].n == 9);
  CHECK(p3.chunks[0].samples);
  CHECK_FALSE(p3.chunks[0].decode);  // recompute is prefill, it never exits early
}

TEST_CASE("scheduler: a sequence that cannot fit even alone is handed back to finish") {
  Fixture f;
  Cache cache(f.be, tiny(), 2);  // 8 tokens
  Scheduler<Cache> s(cache, {.max_batch_tokens = 64, .max_running = 8});
  Sequence& big = f.make(1, 12);
  Sequence& ok = f.make(2, 3);
  s.add(big);
  s.add(ok);
  Plan p = s.schedule();
  REQUIRE(p.never_fits.size() == 1);
  CHECK(p.never_fits[0] == &big);
  REQUIRE(p.chunks.size() == 1);  // the next in line still runs
  CHECK(p.chunks[0].seq == &ok);
  CHECK(cache.length(1) == 0);

  // A running sequence that outgrows the whole cache alone: never fits either.
  ran(p, cache);  // ok: 4 tokens, 3 in the cache
  for (int i = 0; i < 5; ++i) {
    Plan d = s.schedule();
    CHECK(d.never_fits.empty());
    ran(d, cache);
  }
  // ok now holds 8 tokens in the cache (2 blocks, all of it) and needs a 9th slot alone.
  Plan last = s.schedule();
  REQUIRE(last.never_fits.size() == 1);
  CHECK(last.never_fits[0] == &ok);
  CHECK(last.chunks.empty());
  CHECK(s.running().empty());
  CHECK(cache.free_tokens() == 8);
}

TEST_CASE("scheduler: prefix caching starts a sequence on cached blocks, or gives them back") {
  Fixture f;
  Cache cache(f.be, tiny(), 4);
  Scheduler<Cache> s(cache, {64, 8, true});
  // a's 9-token prompt: 2 full blocks computed, named as the engine would after the walk.
  Sequence& a = f.make(1, 9);
  s.add(a);
  Plan p1 = s.schedule();
  REQUIRE(p1.chunks.size() == 1);
  CHECK(p1.cached_tokens == 0);
  ran(p1, cache);
  cache.commit_full_depth(a.id, a.tokens, 9);
  s.remove(a);  // finished: its 2 full blocks stay cached
  CHECK(cache.blocks_cached() == 2);

  SUBCASE("a sequence with the same prompt computes only what is past the cached blocks") {
    Sequence& b = f.make(2, 9);
    s.add(b);
    Plan p = s.schedule();
    REQUIRE(p.chunks.size() == 1);
    CHECK(p.cached_tokens == 8);
    CHECK(b.stats.cached_tokens == 8);
    CHECK(p.chunks[0].start == 8);
    CHECK(p.chunks[0].n == 1);
    CHECK_FALSE(p.chunks[0].decode);  // a prompt token: a prefill row, full depth
    CHECK(cache.blocks_cached() == 0);
    CHECK(cache.blocks_used() == 3);
  }
  SUBCASE("when the rest does not fit, the shared blocks go back to the cache") {
    Sequence& c = f.make(3, 6);  // other tokens: holds 2 blocks, none cached to share
    std::fill(c.tokens.begin(), c.tokens.end(), 9);
    s.add(c);
    Plan pc = s.schedule();
    REQUIRE(pc.chunks.size() == 1);
    CHECK(pc.cached_tokens == 0);
    ran(pc, cache);
    // d shares a's 2 blocks but needs 2 more for its 13 tokens: only the 2 cached blocks
    // are not held, so it waits, and those stay cached.
    Sequence& d = f.make(4, 13);
    s.add(d);
    Plan pd = s.schedule();
    REQUIRE(pd.chunks.size() == 1);  // c's decode row only
    CHECK(pd.chunks[0].seq == &c);
    CHECK(pd.cached_tokens == 0);
    CHECK(d.n_computed == 0);
    CHECK(d.stats.cached_tokens == 0);
    CHECK(cache.length(d.id) == 0);
    CHECK(cache.blocks_cached() == 2);
    CHECK(s.waiting().size() == 1);
  }
}
