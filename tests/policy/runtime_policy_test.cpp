// The runtime policy and the policy registry: every name maps to its type, unknown names
// are errors that list the valid ones, and RuntimePolicy (measure and rule chosen at run
// time) generates exactly what the static policy of the same name generates on the
// embedded model (models/eexit-shakespeare: exits after layers 1 and 3 of 6).
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <variant>

#include "../test_models.hpp"
#include "eexit/eexit.hpp"

using namespace eexit;

namespace {

test::EmbeddedModel& sh() {
  return test::embedded_model();
}

using Cache = PagedCache<CpuBackend, 16>;

// Two prompts run as one batch, greedy: a split then has rows that leave and rows that go on.
std::vector<GenerateRequest> requests() {
  std::vector<GenerateRequest> rs;
  for (const char* p : {"ROMEO:\n", "First Citizen:\nWe are"}) {
    GenerateRequest r;
    for (int id : sh().tok.encode(p, true)) r.prompt.push_back(id);
    r.max_tokens = 40;
    r.ignore_eos = true;
    rs.push_back(r);
  }
  return rs;
}

struct Run {
  std::vector<std::vector<std::int32_t>> tokens, exits;
  EngineStats stats;
};

template <class P>
Run run(P policy) {
  Cache cache(sh().be, sh().model.config(), 64);
  Engine<P, Cache> engine(sh().model, cache, std::move(policy));
  for (auto& r : requests()) engine.add_request(r);
  Run out;
  for (auto& c : engine.run_to_completion()) {
    out.tokens.push_back(c.tokens);
    out.exits.push_back(c.exit_layers);
  }
  out.stats = engine.stats();
  return out;
}

// The model's own thresholds (config.json early_exit), so that rows do exit.
Thresholds model_thresholds() {
  Thresholds t;
  t.values = sh().model.config().early_exit.thresholds;
  return t;
}

template <class P>
P static_policy(std::string_view measure) {
  P p;
  p.measure = measure_from_name(measure);
  p.thresholds = model_thresholds();
  return p;
}

std::int64_t early_exits(const EngineStats& st) {
  std::int64_t n = 0;
  for (std::size_t e = 0; e + 1 < st.exit_histogram.size(); ++e) n += st.exit_histogram[e];
  return n;
}

// A measure that counts how often the engine asked for scores (through a shared counter:
// the engine holds its own copy of the policy).
struct CountingMeasure {
  int* calls = nullptr;
  ExitNeeds needs() const { return MaxProb{}.needs(); }
  std::string_view name() const { return "counting"; }
  void score(const ExitRows& r, float* out) const {
    ++*calls;
    MaxProb{}.score(r, out);
  }
};

}  // namespace

TEST_CASE("registry: policy and measure names round-trip to the stock types") {
  CHECK(policy_names() ==
        std::vector<std::string_view>{"full", "all-confident", "split", "self-spec", "adaptive"});
  CHECK(policy_names_help() == "full | all-confident | split | self-spec | adaptive");
  CHECK(fill_names() == std::vector<std::string_view>{"exit-state", "deferred"});
  CHECK(fill_from_name("deferred").deferred());
  CHECK_FALSE(fill_from_name("exit-state").deferred());
  CHECK_THROWS_WITH_AS(fill_from_name("later"),
                       doctest::Contains("unknown fill strategy 'later' (exit-state, deferred)"),
                       error);
  CHECK(make_runtime_policy("split", "max-prob", {}, {}, "deferred").fill.deferred());
  CHECK(measure_names() ==
        std::vector<std::string_view>{"max-prob", "margin", "entropy", "cosine", "classifier"});
  for (auto n : policy_names()) {
    CAPTURE(n);
    CHECK(is_policy_name(n));
    CHECK(rule_from_name(n).name() == n);
    CHECK(make_runtime_policy(n).name() == n);
  }
  for (auto n : measure_names()) {
    CAPTURE(n);
    CHECK(measure_from_name(n).name() == n);
  }
  CHECK(std::holds_alternative<NeverExit>(rule_from_name("full").r));
  CHECK(std::holds_alternative<ExitWhenAllConfident>(rule_from_name("all-confident").r));
  CHECK(std::holds_alternative<ExitConfidentRows>(rule_from_name("split").r));
  CHECK(std::holds_alternative<SpeculateFromExit>(rule_from_name("self-spec").r));
  CHECK(std::holds_alternative<AdaptiveRule>(rule_from_name("adaptive").r));
  CHECK(std::holds_alternative<Margin>(measure_from_name("margin").m));
  CHECK(std::holds_alternative<Classifier>(measure_from_name("classifier").m));
  // The static policies carry the same names as their runtime counterparts.
  CHECK(FullDepth{}.name() == rule_from_name("full").name());
  CHECK(AllConfident{}.name() == "all-confident");
  CHECK(SplitAtExit{}.name() == "split");
  // Default-constructed, a runtime policy runs at full depth.
  CHECK(RuntimePolicy{}.name() == "full");
  CHECK_FALSE(RuntimePolicy{}.evaluates_exits());
}

TEST_CASE("registry: unknown names are eexit::error naming the field and listing the valid ones") {
  CHECK_FALSE(is_policy_name("fastest"));
  CHECK_FALSE(is_policy_name(""));
  try {
    rule_from_name("fastest");
    FAIL("no error");
  } catch (const eexit::error& e) {
    CHECK(e.where() == "policy");
    CHECK(std::string(e.what()) ==
          "policy: unknown policy 'fastest' (full, all-confident, split, self-spec, adaptive)");
  }
  try {
    make_runtime_policy("split", "max_prob");
    FAIL("no error");
  } catch (const eexit::error& e) {
    CHECK(e.where() == "measure");
    CHECK(std::string(e.what()) ==
          "measure: unknown confidence measure 'max_prob' (max-prob, "
          "margin, entropy, cosine, classifier)");
  }
}

TEST_CASE("rules: what each stock rule does with the confident rows") {
  const std::vector<std::uint8_t> some{1, 0, 1}, all{1, 1, 1};
  std::vector<std::uint8_t> leave(3, 7);
  for (auto [name, conf, want] :
       {std::tuple{"full", all, std::vector<std::uint8_t>{0, 0, 0}},
        std::tuple{"all-confident", some, std::vector<std::uint8_t>{0, 0, 0}},
        std::tuple{"all-confident", all, std::vector<std::uint8_t>{1, 1, 1}},
        std::tuple{"split", some, std::vector<std::uint8_t>{1, 0, 1}}}) {
    CAPTURE(name);
    rule_from_name(name).apply(conf, leave);
    CHECK(leave == want);
  }
  CHECK_FALSE(rule_from_name("full").evaluates_exits());
  CHECK(rule_from_name("all-confident").evaluates_exits());
  CHECK(rule_from_name("split").evaluates_exits());
  // self-spec never lets a row leave: it drafts instead (and only it drafts).
  CHECK_FALSE(rule_from_name("self-spec").evaluates_exits());
  CHECK(rule_from_name("self-spec").speculation().enabled());
  CHECK_FALSE(rule_from_name("split").speculation().enabled());
  CHECK_FALSE(RuntimePolicy{}.speculation().enabled());
}

TEST_CASE("RuntimePolicy equals the static policy of the same name, token for token") {
  const auto measure = sh().model.config().early_exit.measure;
  const auto full = run(FullDepth{});
  const auto rt_full = run(make_runtime_policy("full", measure, model_thresholds()));
  CHECK(rt_full.tokens == full.tokens);
  CHECK(rt_full.exits == full.exits);

  const auto all = run(static_policy<AllConfident>(measure));
  const auto rt_all = run(make_runtime_policy("all-confident", measure, model_thresholds()));
  CHECK(rt_all.tokens == all.tokens);
  CHECK(rt_all.exits == all.exits);
  CHECK(rt_all.stats.decode_layers_computed == all.stats.decode_layers_computed);

  const auto split = run(static_policy<SplitAtExit>(measure));
  const auto rt_split = run(make_runtime_policy("split", measure, model_thresholds()));
  CHECK(rt_split.tokens == split.tokens);
  CHECK(rt_split.exits == split.exits);
  CHECK(rt_split.stats.decode_layers_computed == split.stats.decode_layers_computed);

  // The comparison means something only if the early-exit policies do exit here, and the
  // split exits rows that all-confident keeps.
  CHECK(early_exits(rt_all.stats) > 0);
  CHECK(early_exits(rt_split.stats) > early_exits(rt_all.stats));
  CHECK(rt_split.stats.decode_layers_computed < full.stats.decode_layers_computed);
}

TEST_CASE("RuntimePolicy 'full' computes no exit heads and runs every layer") {
  const auto p = make_runtime_policy("full", "max-prob", model_thresholds());
  CHECK_FALSE(p.evaluates_exits());
  const ExitNeeds none = p.needs(0);
  CHECK_FALSE(
      (none.scores || none.logits_host || none.hidden || none.classifier || none.prev_hidden));

  const auto r = run(p);
  CHECK(r.stats.decode_layers_computed == r.stats.decode_layers_full);
  CHECK(r.stats.decode_layers_full > 0);
  CHECK(early_exits(r.stats) == 0);

  // The engine never asks the measure of a full-depth rule for scores; the same measure
  // under a rule that exits is asked (so the counter counts).
  using Counting = ExitPolicy<CountingMeasure, AnyRule>;
  int calls = 0;
  Counting c;
  c.measure.calls = &calls;
  c.thresholds = model_thresholds();
  c.rule = rule_from_name("full");
  const auto counted_full = run(c);
  CHECK(calls == 0);
  CHECK(counted_full.tokens == r.tokens);
  c.rule = rule_from_name("split");
  run(c);
  CHECK(calls > 0);
}
