// DeferredRecompute (policy/fill.hpp): an exited token's skipped layers run for real in the
// next step, from its saved exit state. On the embedded model (exits after layers 1 and 3
// of 6), in caches poisoned with NaN:
//   - after every step the only unwritten slots are the skipped layers of the tokens that
//     exited in that step (and those are unwritten: the fill really was deferred);
//   - once written, every slot equals what one full-depth pass over the same tokens writes
//     (the exit-state fill, the negative control, does not);
//   - with a threshold nothing passes, the tokens are full depth's.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <vector>

#include "../test_models.hpp"
#include "eexit/eexit.hpp"

using namespace eexit;

namespace {

test::EmbeddedModel& sh() {
  return test::embedded_model();
}

using Cache = PagedCache<CpuBackend, 16>;

std::vector<GenerateRequest> requests(int n, int max_tokens) {
  std::vector<GenerateRequest> rs;
  for (int i = 0; i < n; ++i) {
    GenerateRequest r;
    r.prompt = {1};
    for (int j = 0; j < 4 + 3 * i; ++j) r.prompt.push_back(5 + (i * 29 + j * 13) % 200);
    r.max_tokens = max_tokens + 3 * i;  // sequences finish at different steps
    r.ignore_eos = true;
    rs.push_back(r);
  }
  return rs;
}

template <class Fill>
using Split = ExitPolicy<AnyMeasure, ExitConfidentRows, Fill>;

template <class Fill>
Split<Fill> split(float threshold) {
  Split<Fill> p;
  p.thresholds.values = {threshold};
  return p;
}

// K/V of one sequence at one layer and position: (kv_dim) each.
struct Kv {
  std::vector<float> k, v;
};
Kv read_kv(Cache& cache, request_id id, int layer, std::int32_t pos) {
  const int kvd = sh().model.config().kv_dim();
  const auto view = cache.view(layer);
  const std::size_t slot = view.slot(RowKv{cache.block_table(id), pos}, pos);
  const float* k = view.k + slot * std::size_t(kvd);
  const float* v = view.v + slot * std::size_t(kvd);
  return {{k, k + kvd}, {v, v + kvd}};
}
bool all_nan(const Kv& a) {
  for (float x : a.k)
    if (!std::isnan(x)) return false;
  return true;
}
bool all_finite(const Kv& a) {
  for (std::size_t i = 0; i < a.k.size(); ++i)
    if (!std::isfinite(a.k[i]) || !std::isfinite(a.v[i])) return false;
  return true;
}
double max_diff(const Kv& a, const Kv& b) {
  double d = 0;
  for (std::size_t i = 0; i < a.k.size(); ++i)
    d = std::max({d, double(std::fabs(a.k[i] - b.k[i])), double(std::fabs(a.v[i] - b.v[i]))});
  return d;
}

// The K/V one full-depth pass writes for `tokens`: a prefill of all of them in a poisoned
// cache of its own (read back while its sequence is still running).
struct Reference {
  Cache cache{sh().be, sh().model.config(), 64};
  Engine<FullDepth, Cache> engine{sh().model, cache};
  request_id id = 0;
  explicit Reference(const std::vector<std::int32_t>& tokens) {
    cache.fill(NAN);
    GenerateRequest r;
    r.prompt = tokens;
    r.max_tokens = 2;
    r.ignore_eos = true;
    id = engine.add_request(r);
    engine.step();  // the whole prompt in one chunk: every layer of every position
  }
};

// Runs the requests `steps` steps; after each, checks the cache as the header says and
// returns the worst difference to the full-depth reference over the written slots.
template <class Fill>
double run_and_check(float threshold, int steps, std::int64_t* deferred_rows = nullptr) {
  const auto& cfg = sh().model.config();
  Cache cache(sh().be, cfg, 64);
  cache.fill(NAN);
  Engine<Split<Fill>, Cache> engine(sh().model, cache, split<Fill>(threshold));
  const auto rs = requests(4, 24);
  std::map<request_id, std::vector<std::int32_t>> tokens;
  for (auto& r : rs) tokens[engine.add_request(r)] = r.prompt;
  double worst = 0;
  for (int s = 0; s < steps && engine.has_work(); ++s) {
    for (auto& o : engine.step())
      for (const auto& t : o.tokens) tokens[o.id].push_back(t.token);
    // (request, position) -> first layer unwritten by this step's exits.
    std::map<std::pair<request_id, std::int32_t>, int> pending;
    for (const auto& d : engine.deferred_pending()) pending[{request_id(d.seq), d.pos}] = d.start;
    if (!Fill{}.deferred()) REQUIRE(pending.empty());
    for (auto& [id, toks] : tokens) {
      const std::int32_t len = cache.length(id);
      if (len == 0) continue;  // finished: its blocks are free
      Reference ref(std::vector<std::int32_t>(toks.begin(), toks.begin() + len));
      for (std::int32_t t = 0; t < len; ++t) {
        const auto it = pending.find({id, t});
        for (int l = 0; l < cfg.n_layers; ++l) {
          CAPTURE(s);
          CAPTURE(t);
          CAPTURE(l);
          const Kv got = read_kv(cache, id, l, t);
          if (it != pending.end() && l >= it->second) {
            CHECK(all_nan(got));  // deferred: the next step writes it
            continue;
          }
          REQUIRE(all_finite(got));
          worst = std::max(worst, max_diff(got, read_kv(ref.cache, ref.id, l, t)));
        }
      }
    }
  }
  if (deferred_rows) *deferred_rows = engine.stats().deferred_rows;
  return worst;
}

}  // namespace

TEST_CASE("deferred fill: only this step's exits are unwritten, and every written slot is exact") {
  std::int64_t rows = 0;
  const double deferred = run_and_check<DeferredRecompute>(0.3f, 40, &rows);
  CHECK(rows > 20);  // tokens really exited and had their layers recomputed
  CHECK(deferred < 1e-4);
  // The negative control: the paper's fill projects K/V from the exit state, which is not
  // what the skipped layers compute.
  const double projected = run_and_check<FillFromExitState>(0.3f, 40);
  CHECK(projected > 1e-2);
}

TEST_CASE("deferred fill: with a threshold nothing passes, the tokens are full depth's") {
  const auto rs = requests(5, 20);
  auto run = [&](auto policy) {
    Cache cache(sh().be, sh().model.config(), 64);
    Engine<decltype(policy), Cache> engine(sh().model, cache, policy);
    for (auto& r : rs) engine.add_request(r);
    std::vector<std::vector<std::int32_t>> out;
    for (auto& c : engine.run_to_completion()) out.push_back(c.tokens);
    CHECK(engine.stats().deferred_rows == 0);
    return out;
  };
  CHECK(run(split<DeferredRecompute>(2.0f)) == run(FullDepth{}));
  // The runtime name, with the adaptive rule too.
  CHECK(run(make_runtime_policy("split", "max-prob", Thresholds{{2.0f}}, {}, "deferred")) ==
        run(FullDepth{}));
  CHECK(run(make_runtime_policy("adaptive", "max-prob", Thresholds{{2.0f}}, {}, "deferred")) ==
        run(FullDepth{}));
}

TEST_CASE("deferred fill: a sequence that finishes or is preempted drops its deferred row") {
  // A cache too small for all four: sequences are preempted and recomputed.
  const auto& cfg = sh().model.config();
  const auto rs = requests(4, 30);
  auto run = [&](auto policy, int blocks, EngineStats* st) {
    Cache cache(sh().be, cfg, blocks);
    cache.fill(NAN);  // a dropped row whose slot was still read would poison the logits
    Engine<decltype(policy), Cache> engine(sh().model, cache, policy);
    for (auto& r : rs) engine.add_request(r);
    std::vector<std::vector<std::int32_t>> out;
    for (auto& c : engine.run_to_completion()) out.push_back(c.tokens);
    *st = engine.stats();
    CHECK(cache.blocks_used() == 0);
    return out;
  };
  EngineStats roomy, tight;
  const auto a = run(split<DeferredRecompute>(0.3f), 64, &roomy);
  const auto b = run(split<DeferredRecompute>(0.3f), 6, &tight);
  CHECK(tight.preemptions > 0);
  // A token that ends its sequence defers nothing (its blocks go when the walk ends); a
  // preempted sequence's row is dropped, its K/V recomputed with the rest of it.
  CHECK(roomy.deferred_dropped == 0);
  CHECK(tight.deferred_dropped > 0);
  CHECK(roomy.deferred_rows > 0);
  // Greedy and exact either way: preemption recomputes the same K/V, so the same tokens.
  CHECK(a == b);
}
