// The Adaptive policy (policy/adaptive.hpp): its arithmetic with injected costs (no
// timings in tests), and through the engine on the embedded model (exits after layers 1
// and 3 of 6): a pass rate of 0 stops it computing exit heads, a pass rate of 1 with cheap
// heads exits, and a threshold nothing passes gives full depth's tokens.
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

std::vector<GenerateRequest> requests(int n) {
  std::vector<GenerateRequest> rs;
  for (int i = 0; i < n; ++i) {
    GenerateRequest r;
    r.prompt = {1};
    for (int j = 0; j < 3 + 2 * i; ++j) r.prompt.push_back(5 + (i * 37 + j * 11) % 200);
    r.max_tokens = 30;
    r.ignore_eos = true;
    rs.push_back(r);
  }
  return rs;
}

struct Run {
  std::vector<std::vector<std::int32_t>> tokens, exits;
  EngineStats stats;
  AdaptiveStats decisions;
  std::int64_t heads_first_half = -1;  // exit heads after half the steps
};

template <class P>
Run run(P policy, const std::vector<GenerateRequest>& rs) {
  Cache cache(sh().be, sh().model.config(), 64);
  Engine<P, Cache> engine(sh().model, cache, std::move(policy));
  for (auto& r : rs) engine.add_request(r);
  Run out;
  CompletionAccumulator acc;
  std::vector<request_id> ids;
  for (std::size_t i = 0; i < rs.size(); ++i) ids.push_back(request_id(i + 1));
  while (engine.has_work()) {
    for (auto& o : engine.step()) acc.add(o);
    if (engine.stats().steps == 15) out.heads_first_half = engine.stats().exit_heads;
  }
  for (auto id : ids) {
    auto c = acc.take(id);
    out.tokens.push_back(c.tokens);
    out.exits.push_back(c.exit_layers);
  }
  out.stats = engine.stats();
  if constexpr (requires { engine.policy().rule.stats; })
    out.decisions = engine.policy().rule.stats;
  return out;
}

// Costs of a step that is weight-bound (a layer costs the same for 1 or 64 rows) or
// compute-bound (it costs in proportion to rows); exit heads cost `head` per row.
CostModel costs(bool compute_bound, double head, int n_exits = 3) {
  CostModel c;
  c.resize(std::size_t(n_exits));
  for (std::size_t n : {1u, 2u, 4u, 8u, 16u, 32u, 64u}) {
    c.layer.set(n, compute_bound ? 1e-5 * double(n) : 1e-3);
    for (auto& h : c.head) h.set(n, head * double(n));
    for (auto& f : c.fill) f.set(n, 0.0);
  }
  return c;
}

Adaptive adaptive(float threshold, CostModel c, double prior, int explore = 0) {
  Adaptive p;
  p.thresholds.values = {threshold};
  p.rule.costs = std::move(c);
  p.rule.opt.learn_costs = false;
  p.rule.opt.prior_pass = prior;
  p.rule.opt.explore_every = explore;
  return p;
}

template <class P>
P with(float threshold) {
  P p;
  p.thresholds.values = {threshold};
  return p;
}

// Exit 0 after layer 1 of 6 (R = 4 layers after it), 16 decode rows, nothing else.
ExitPointInfo exit0() {
  ExitPointInfo i;
  i.exit = 0;
  i.layer = 1;
  i.n_layers = 6;
  i.n_decode = i.n_active = i.n_yield = 16;
  return i;
}

// Feeds exit 0 one evaluation in which `passed` of 10 rows were confident.
void observe_pass(AdaptiveRule& r, int passed) {
  ExitRows rows;
  rows.exit = 0;
  rows.n = 10;
  std::vector<std::uint8_t> conf(10, 0), leave(10, 0);
  for (int j = 0; j < passed; ++j) conf[std::size_t(j)] = 1;
  r.begin_exit(exit0());
  r.apply_at(rows, conf, leave);
}

}  // namespace

TEST_CASE("OpCost: reads what was set, interpolates between row counts, extends below and above") {
  OpCost c;
  CHECK(c.at(4) == 0.0);
  CHECK_FALSE(c.known());
  c.set(8, 5.0);
  CHECK(c.at(2) == doctest::Approx(5.0));  // one row count seen: fewer rows not cheaper
  c.set(2, 2.0);
  CHECK(c.known());
  CHECK(c.at(2) == doctest::Approx(2.0));
  CHECK(c.at(5) == doctest::Approx(3.5));
  CHECK(c.at(1) == doctest::Approx(1.5));    // below: the line through 2 and 8 rows
  CHECK(c.at(16) == doctest::Approx(10.0));  // above the largest: in proportion to rows
  CHECK(c.at(0) == 0.0);
  c.observe(8, 7.0, 0.5);  // moving average of what was seen at 8 rows
  CHECK(c.at(8) == doctest::Approx(6.0));
  c.set(4, 4.0);  // a steep line (1 per row) is kept from going under "proportional"
  CHECK(c.at(1) == doctest::Approx(1.0));
}

TEST_CASE("AdaptiveRule: the rule flips from all-confident to split where the arithmetic says") {
  // Pass rates p = 0.9 per row and a = 0.5 for all rows: from a prior of 1, one evaluation
  // with 8 of 10 rows confident, weighted half and half.
  auto rule_with = [](bool compute_bound, double head) {
    AdaptiveRule r;
    r.opt.pass_keep = 0.5;
    r.opt.prior_pass = 1.0;
    r.opt.explore_every = 0;
    r.opt.learn_costs = false;
    r.costs = costs(compute_bound, head);
    observe_pass(r, 8);
    return r;
  };
  {
    AdaptiveRule r = rule_with(false, 0.0);
    CHECK(r.pass_rate(0) == doctest::Approx(0.9));
    CHECK(r.all_pass_rate(0) == doctest::Approx(0.5));
    // Weight-bound: rows leaving save nothing unless all leave. all = a·R·C = 0.5·4·1e-3.
    const auto s = r.savings(exit0());
    CHECK(s.split == doctest::Approx(0.0));
    CHECK(s.all == doctest::Approx(2e-3));
    r.begin_exit(exit0());
    CHECK(r.evaluates_at(0));
    CHECK_FALSE(r.splits_at(0));
  }
  {
    AdaptiveRule r = rule_with(true, 0.0);
    // Compute-bound: split = R·(C(16) − C(1.6)) = 4·14.4e-5; all = a·R·C(16) = 0.5·4·16e-5.
    const auto s = r.savings(exit0());
    CHECK(s.split == doctest::Approx(5.76e-4));
    CHECK(s.all == doctest::Approx(3.2e-4));
    r.begin_exit(exit0());
    CHECK(r.evaluates_at(0));
    CHECK(r.splits_at(0));
  }
  // The head is worth it up to the larger saving, where the final head the 14.4 leaving
  // rows no longer need counts too: 5.76e-4 + 14.4·h > 16·h, i.e. h < 3.6e-4 s per row.
  {
    AdaptiveRule r = rule_with(true, 3.5e-4);
    r.begin_exit(exit0());
    CHECK(r.evaluates_at(0));
    r = rule_with(true, 3.7e-4);
    r.begin_exit(exit0());
    CHECK_FALSE(r.evaluates_at(0));
    CHECK(r.stats.exits_skipped == 1);
  }
  // Prefill rows that stay make an all-exit save only the decode rows' share.
  {
    AdaptiveRule r = rule_with(false, 0.0);
    ExitPointInfo i = exit0();
    i.n_active = 48;  // 32 prefill rows stay at full depth
    CHECK(r.savings(i).all == doctest::Approx(0.0));
  }
}

TEST_CASE("AdaptiveRule: exploration evaluates every Nth walk an exit it would skip") {
  AdaptiveRule r;
  r.opt.prior_pass = 0.0;
  r.opt.explore_every = 4;
  r.opt.learn_costs = false;
  r.costs = costs(true, 1e-5);
  int evaluated = 0;
  for (int w = 0; w < 12; ++w) {
    r.begin_exit(exit0());
    evaluated += r.evaluates_at(0);
    r.observe(WalkTimings{});
  }
  CHECK(evaluated == 3);  // walks 0, 4, 8
  CHECK(r.stats.explored == 3);
  CHECK(r.stats.exits_skipped == 9);
}

TEST_CASE("Adaptive: a pass rate of 0 stops it computing exit heads; tokens stay full depth's") {
  const auto rs = requests(4);
  const auto full = run(FullDepth{}, rs);
  // Never confident from the start: no head at all.
  const auto none = run(adaptive(2.0f, costs(true, 1e-5), 0.0), rs);
  CHECK(none.stats.exit_heads == 0);
  CHECK(none.decisions.exits_skipped > 0);
  CHECK(none.tokens == full.tokens);
  // A prior of 0.5 that the rows never bear out: heads early on, none once the pass rate
  // has decayed to where p·(R·layer + head) per row no longer beats the head: p < 0.2 at
  // exit 0 (R = 4), after 9 evaluations of 0.9 decay; p < 1/3 at exit 1 (R = 2), after 4.
  const auto decays = run(adaptive(2.0f, costs(true, 1e-5), 0.5), rs);
  CHECK(decays.heads_first_half > 0);
  CHECK(decays.stats.exit_heads == decays.heads_first_half);
  CHECK(decays.tokens == full.tokens);
  CHECK(decays.stats.early_exits() == 0);
}

TEST_CASE("Adaptive: with pass rate 1 and cheap heads it exits as the static rules do") {
  const auto rs = requests(4);
  const auto all = run(with<AllConfident>(-2.0f), rs);  // every row confident at exit 0
  for (bool compute_bound : {false, true}) {
    CAPTURE(compute_bound);
    const auto a = run(adaptive(-2.0f, costs(compute_bound, 1e-7), 1.0), rs);
    CHECK(a.tokens == all.tokens);
    CHECK(a.exits == all.exits);
    CHECK(a.stats.early_exits() > 0);
    CHECK(a.decisions.exits_evaluated > 0);
  }
}

TEST_CASE("Adaptive: the rule chosen per step follows the costs") {
  const auto rs = requests(6);
  // A threshold some rows pass: the pass rates sit between 0 and 1.
  const auto weight = run(adaptive(0.5f, costs(false, 1e-7), 0.5, 8), rs);
  const auto compute = run(adaptive(0.5f, costs(true, 1e-7), 0.5, 8), rs);
  CHECK(weight.decisions.chose_split == 0);
  CHECK(weight.decisions.chose_all > 0);
  CHECK(compute.decisions.chose_split > 0);
  CHECK(compute.stats.involuntary_stays < weight.stats.involuntary_stays);
}

TEST_CASE("Adaptive: a threshold nothing passes gives full depth's tokens, costs learned online") {
  const auto rs = requests(5);
  const auto full = run(FullDepth{}, rs);
  Adaptive p;  // timings from the walk; exploration every 4th walk
  p.thresholds.values = {2.0f};
  p.rule.opt.explore_every = 4;
  const auto a = run(p, rs);
  CHECK(a.tokens == full.tokens);
  CHECK(a.stats.early_exits() == 0);
  CHECK(a.decisions.exits_evaluated > 0);  // at least the explored walks
  // The runtime policy of the same name.
  const auto r = run(make_runtime_policy("adaptive", "max-prob", Thresholds{{2.0f}}), rs);
  CHECK(r.tokens == full.tokens);
}
