// Early exit on a real model: stories260K with shared exit heads after layers 1 and 3
// (LayerSkip style: the final norm + LM head read an intermediate hidden state).
#include <doctest/doctest.h>

#include <cmath>
#include <map>

#include "../test_paths.hpp"
#include "eexit/eexit.hpp"

using namespace eexit;

namespace {

ModelWeights stories_weights(int cut_layers = 0) {
  auto w = load_model(test::shared("models/stories260K/stories260K.bin"));
  w.config.early_exit.exit_layers = {1, 3};
  if (cut_layers) {  // the model cut after `cut_layers` layers, its own final head on top
    w.layers.resize(std::size_t(cut_layers));
    w.config.n_layers = cut_layers;
    w.config.early_exit.exit_layers.clear();
  }
  return w;
}

struct Stories {
  CpuBackend be{2};
  LlamaModel<CpuBackend> model{be, stories_weights()};
};
Stories& stories() {
  static Stories s;
  return s;
}

using Cache = PagedCache<CpuBackend, 16>;

std::vector<GenerateRequest> requests(int n, bool sampled = false) {
  std::vector<GenerateRequest> rs;
  for (int i = 0; i < n; ++i) {
    GenerateRequest r;
    r.prompt = {1};
    for (int j = 0; j < 2 + 3 * i; ++j) r.prompt.push_back(259 + (i * 41 + j * 13) % 250);
    r.max_tokens = 24 + 2 * i;
    r.ignore_eos = true;
    if (sampled && i % 2) {
      r.sampling.temperature = 0.7f;
      r.sampling.seed = 77 + std::uint64_t(i);
    }
    rs.push_back(r);
  }
  return rs;
}

template <class P>
struct Run {
  std::vector<std::vector<std::int32_t>> tokens, exits;
  EngineStats stats;
};

template <class P, class M = LlamaModel<CpuBackend>>
Run<P> run(M& model, P policy, const std::vector<GenerateRequest>& rs, int blocks = 128,
           dtype kv = dtype::f32) {
  Cache cache(stories().be, model.config(), blocks, kv);
  Engine<P, Cache> engine(model, cache, policy);
  for (auto& r : rs) engine.add_request(r);
  Run<P> out;
  for (auto& c : engine.run_to_completion()) {
    out.tokens.push_back(c.tokens);
    out.exits.push_back(c.exit_layers);
  }
  out.stats = engine.stats();
  CHECK(cache.blocks_used() == 0);
  return out;
}

template <class P>
P with(float threshold, std::string_view measure = "max-prob") {
  P p;
  p.measure = AnyMeasure::from_name(measure);
  p.thresholds.values = {threshold};
  return p;
}

std::int64_t early(const EngineStats& st) {
  std::int64_t n = 0;
  for (std::size_t e = 0; e + 1 < st.exit_histogram.size(); ++e) n += st.exit_histogram[e];
  return n;
}

}  // namespace

TEST_CASE("with a threshold no row can pass, every policy equals full depth token for token") {
  auto& m = stories().model;
  const auto rs = requests(8, true);
  const auto full = run(m, FullDepth{}, rs);
  for (auto measure : {"max-prob", "margin", "entropy", "cosine"}) {
    CAPTURE(measure);
    const float never = std::string_view(measure) == "entropy" ? 1.0f : 2.0f;
    const auto all = run(m, with<AllConfident>(never, measure), rs);
    const auto split = run(m, with<SplitAtExit>(never, measure), rs);
    CHECK(all.tokens == full.tokens);
    CHECK(split.tokens == full.tokens);
    CHECK(early(all.stats) == 0);
    CHECK(early(split.stats) == 0);
  }
}

TEST_CASE("with a threshold every row passes, the output equals the model cut at the first exit") {
  // The first token comes from the prompt's last row, which always runs full depth; every
  // later token exits after layer 1. So: full depth's first token, then what the model cut
  // after layer 1 (its layers 0-1 + the shared head) generates from the prompt plus it.
  CpuBackend& be = stories().be;
  LlamaModel<CpuBackend> cut(be, stories_weights(2));
  auto rs = requests(6, true);
  for (auto& r : rs) r.sampling = {};  // greedy: the cut model's run must see the same draws
  const auto full = run(stories().model, FullDepth{}, rs);
  auto cut_rs = rs;
  for (std::size_t i = 0; i < rs.size(); ++i) {
    cut_rs[i].prompt.push_back(full.tokens[i][0]);
    --cut_rs[i].max_tokens;
  }
  const auto ref = run(cut, FullDepth{}, cut_rs);
  for (std::string measure : {"max-prob", "margin", "entropy", "cosine"}) {
    CAPTURE(measure);
    const float always = measure == "entropy" ? -100.0f : -2.0f;  // every score passes
    const auto all = run(stories().model, with<AllConfident>(always, measure), rs);
    const auto split = run(stories().model, with<SplitAtExit>(always, measure), rs);
    for (std::size_t i = 0; i < rs.size(); ++i) {
      auto expect = ref.tokens[i];
      expect.insert(expect.begin(), full.tokens[i][0]);
      CHECK(all.tokens[i] == expect);
      CHECK(split.tokens[i] == expect);
      CHECK(all.exits[i][0] == 4);
      for (std::size_t k = 1; k < all.exits[i].size(); ++k) CHECK(all.exits[i][k] == 1);
    }
  }
}

TEST_CASE("AllConfident never exits an unconfident row; SplitAtExit never keeps a confident one") {
  auto& m = stories().model;
  const auto rs = requests(8, true);
  for (float t : {0.3f, 0.5f, 0.7f}) {
    CAPTURE(t);
    const auto all = run(m, with<AllConfident>(t), rs);
    const auto split = run(m, with<SplitAtExit>(t), rs);
    CHECK(all.stats.involuntary_exits == 0);
    CHECK(split.stats.involuntary_exits == 0);
    CHECK(split.stats.involuntary_stays == 0);
    CHECK(early(split.stats) > 0);  // the threshold really lets rows out
    CHECK(split.stats.decode_layers_computed < split.stats.decode_layers_full);
    // Deterministic for a seed: the same run again gives the same tokens and exits.
    const auto again = run(m, with<SplitAtExit>(t), rs);
    CHECK(again.tokens == split.tokens);
    CHECK(again.exits == split.exits);
  }
}

TEST_CASE("SplitAtExit: a sequence's tokens and exit layers do not depend on its batch") {
  auto& m = stories().model;
  const auto rs = requests(8, true);
  for (float t : {0.4f, 0.6f}) {
    CAPTURE(t);
    const auto batch = run(m, with<SplitAtExit>(t), rs);
    for (std::size_t i = 0; i < rs.size(); ++i) {
      const auto alone = run(m, with<SplitAtExit>(t), {rs[i]});
      CHECK(alone.tokens[0] == batch.tokens[i]);
      CHECK(alone.exits[0] == batch.exits[i]);
    }
  }
}

TEST_CASE("a cache poisoned with NaN has no unwritten slot after any step with exits") {
  auto& m = stories().model;
  const auto& cfg = m.config();
  const std::size_t kvd = std::size_t(cfg.kv_dim());
  for (const dtype kv : {dtype::f32, dtype::f16}) {  // an f16 cache: its NaN bits
    CAPTURE(dtype_name(kv));
    Cache cache(stories().be, cfg, 128, kv);
    CHECK(cache.kv_dtype() == kv);
    cache.fill(std::nanf(""));
    auto policy = with<SplitAtExit>(0.4f);
    Engine<SplitAtExit, Cache> engine(m, cache, policy);
    std::vector<request_id> ids;
    for (auto& r : requests(6)) ids.push_back(engine.add_request(r));
    std::int64_t checked = 0;
    while (engine.has_work()) {
      engine.step();
      for (auto id : ids) {
        const std::int32_t len = cache.length(id);
        const std::int32_t* bt = cache.block_table(id);
        for (int l = 0; l < cfg.n_layers; ++l) {
          const auto v = cache.view(l);
          REQUIRE(v.half() == (kv == dtype::f16));
          auto nan_at = [&](const float* p, const std::uint16_t* p16, std::size_t i) {
            return std::isnan(v.half() ? f16_to_f32(p16[i]) : p[i]);
          };
          for (std::int32_t t = 0; t < len; ++t) {
            const std::size_t slot = v.slot(RowKv{bt, t}, t);
            for (std::size_t d = 0; d < kvd; ++d) {
              REQUIRE_FALSE(nan_at(v.k, v.k16, slot * kvd + d));
              REQUIRE_FALSE(nan_at(v.v, v.v16, slot * kvd + d));
            }
            ++checked;
          }
        }
      }
    }
    CHECK(checked > 1000);
    CHECK(early(engine.stats()) > 0);
  }
}

TEST_CASE("the fused KV fill equals each skipped layer's own norm + K/V projection + RoPE") {
  auto& m = stories().model;
  const auto& cfg = m.config();
  const std::size_t kvd = std::size_t(cfg.kv_dim()), dim = std::size_t(cfg.dim);
  Cache a(stories().be, cfg, 8), b(stories().be, cfg, 8);
  REQUIRE(a.reserve(1, 40));
  REQUIRE(b.reserve(1, 40));
  auto ws = m.make_workspace(4);
  std::vector<float> h(3 * dim);
  for (std::size_t i = 0; i < h.size(); ++i) h[i] = std::sin(0.37f * float(i)) * 2.0f;
  std::vector<RowKv> rk = {{a.block_table(1), 5}, {a.block_table(1), 17}, {a.block_table(1), 39}};
  std::vector<RowKv> rkb = {{b.block_table(1), 5}, {b.block_table(1), 17}, {b.block_table(1), 39}};
  m.kv_fill(1, h.data(), 3, rk.data(), a, ws);
  for (int j = 2; j < cfg.n_layers; ++j)
    m.kv_from_hidden(j, h.data(), 3, rkb.data(), b.view(j), ws);
  for (int j = 2; j < cfg.n_layers; ++j)
    for (auto& r : rk) {
      const auto va = a.view(j), vb = b.view(j);
      const std::size_t s = va.slot(r, r.pos);
      for (std::size_t d = 0; d < kvd; ++d) {
        CHECK(va.k[s * kvd + d] == doctest::Approx(vb.k[s * kvd + d]).epsilon(1e-5));
        CHECK(va.v[s * kvd + d] == doctest::Approx(vb.v[s * kvd + d]).epsilon(1e-5));
      }
    }
}

TEST_CASE("dedicated exit heads: a copy of the shared head changes nothing, another head does") {
  CpuBackend& be = stories().be;
  auto dedicated = [](float scale) {
    auto w = stories_weights();
    w.config.early_exit.head = exit_head_kind::dedicated;
    for (std::size_t e = 0; e < 2; ++e) {
      ExitHeadWeights h;
      h.norm = w.final_norm;
      h.proj = w.tok_embedding;  // stories260K ties its LM head to the embedding
      for (std::size_t i = 0; i < h.proj.size(); ++i) h.proj[i] *= (i % 7 == 0) ? scale : 1.0f;
      w.exit_heads.push_back(std::move(h));
    }
    return w;
  };
  LlamaModel<CpuBackend> same(be, dedicated(1.0f)), other(be, dedicated(-1.0f));
  const auto rs = requests(4);
  const auto shared_run = run(stories().model, with<SplitAtExit>(0.4f), rs);
  CHECK(run(same, with<SplitAtExit>(0.4f), rs).tokens == shared_run.tokens);
  CHECK(run(other, with<SplitAtExit>(0.4f), rs).tokens != shared_run.tokens);
}

TEST_CASE("a classifier measure on a model without classifier heads is refused up front") {
  Cache cache(stories().be, stories().model.config(), 8);
  CHECK_THROWS_AS(
      (Engine<AllConfident, Cache>(stories().model, cache, with<AllConfident>(0.5f, "classifier"))),
      eexit::error);
  auto wrong_count = with<AllConfident>(0.5f);
  wrong_count.thresholds.values = {0.1f, 0.2f, 0.3f};  // 2 exit points before the last
  CHECK_THROWS_AS((Engine<AllConfident, Cache>(stories().model, cache, wrong_count)), eexit::error);
}

TEST_CASE("teacher forcing the engine's own greedy tokens through the walk repeats its exits") {
  // The engine samples through LayerWalk's sampling sink; TeacherForcingSink scores given
  // tokens through the same walk. Fed the engine's own greedy output, it must see the same
  // exit decisions, and score each token with the log-probability the engine reported.
  auto& m = stories().model;
  auto rs = requests(3);
  for (auto& r : rs) r.sampling.logprobs = 0;
  const auto policy = with<SplitAtExit>(0.5f);
  Cache cache(stories().be, m.config(), 64);
  Engine<SplitAtExit, Cache> engine(m, cache, policy);
  std::vector<request_id> ids;
  for (auto& r : rs) ids.push_back(engine.add_request(r));
  std::map<request_id, std::vector<TokenEvent>> got;
  while (engine.has_work())
    for (auto& o : engine.step())
      for (auto& t : o.tokens) got[o.id].push_back(t);

  LayerWalk<LlamaModel<CpuBackend>, Cache> walk(m, cache, 64, 1);
  auto p = policy;
  std::int64_t early_exits = 0;
  for (std::size_t i = 0; i < rs.size(); ++i) {
    CAPTURE(i);
    const auto& ev = got[ids[i]];
    const auto& prompt = rs[i].prompt;
    REQUIRE(ev.size() == std::size_t(rs[i].max_tokens));
    REQUIRE(cache.reserve(99, std::int32_t(prompt.size() + ev.size())));
    const std::int32_t* bt = cache.block_table(99);
    TeacherForcingSink sink;
    std::vector<std::int32_t> truth(1);
    WalkRows w;
    for (std::size_t t = 0; t < ev.size(); ++t) {
      w.clear();
      truth[0] = ev[t].token;
      sink.truth = truth;
      if (t == 0) {  // the prompt, full depth; its last row predicts the first token
        for (std::size_t j = 0; j < prompt.size(); ++j) {
          w.tokens.push_back(prompt[j]);
          w.rowkv.push_back(RowKv{bt, std::int32_t(j)});
        }
        w.n_prefill = prompt.size();
        w.yield_rows.push_back(std::int32_t(prompt.size()) - 1);
        w.yield_slots.push_back(0);
      } else {
        w.tokens.push_back(ev[t - 1].token);
        w.rowkv.push_back(RowKv{bt, std::int32_t(prompt.size() + t - 1)});
        w.decode.push(0, ids[i], std::int32_t(t), rs[i].max_tokens, NAN);
      }
      walk.run(p, w, sink);
      REQUIRE(sink.scored.size() == t + 1);
      CHECK(sink.scored[t].layer == ev[t].exit_layer);
      CHECK(sink.scored[t].logprob == doctest::Approx(ev[t].logprob).epsilon(1e-4));
      early_exits += ev[t].exit_layer < m.config().n_layers - 1;
    }
    cache.release(99);
  }
  CHECK(early_exits > 0);  // the threshold really lets tokens out early
}

TEST_CASE("an f16 KV cache: early exit, self-spec and preemption keep full depth's tokens") {
  // The invariants hold for the cache's precision, whichever it is: with a threshold no row
  // passes, every policy equals full depth over the same f16 cache; self-spec greedy equals
  // it exactly (a verify row computes a 1-row decode's bits); a cache too small for the
  // batch (preemption, recomputation) changes nothing (no slot is left unwritten: above).
  auto& m = stories().model;
  const auto rs = requests(6);
  const auto full = run(m, FullDepth{}, rs, 128, dtype::f16);
  CHECK(run(m, with<AllConfident>(2.0f), rs, 128, dtype::f16).tokens == full.tokens);
  CHECK(run(m, with<SplitAtExit>(2.0f), rs, 128, dtype::f16).tokens == full.tokens);
  CHECK(run(m, FullDepth{}, rs, 12, dtype::f16).tokens == full.tokens);
  SelfSpeculative<> spec;
  spec.spec.draft_layer = 3;
  spec.spec.threshold = 0.0f;  // draft every time: verify and rollback on every step
  const auto ss = run(m, spec, rs, 128, dtype::f16);
  CHECK(ss.tokens == full.tokens);
  CHECK(ss.stats.accepted_drafts > 0);
  // Against the fp32 cache: the rounding of K/V (2^-11 relative) moves logits slightly, so
  // greedy tokens agree for most of the way (not asserted token for token).
  const auto f32 = run(m, FullDepth{}, rs);
  std::size_t same = 0, total = 0;
  for (std::size_t i = 0; i < rs.size(); ++i)
    for (std::size_t j = 0; j < full.tokens[i].size(); ++j, ++total)
      same += j < f32.tokens[i].size() && f32.tokens[i][j] == full.tokens[i][j];
  MESSAGE("f16 vs f32 KV cache, greedy: " << same << " of " << total << " tokens equal");
  CHECK(same * 10 >= total * 8);
}

TEST_CASE("an f16 KV cache is refused where the backend keeps f32 only, and bad names are errors") {
  CHECK(parse_kv_dtype("f16") == dtype::f16);
  CHECK(parse_kv_dtype("f32") == dtype::f32);
  CHECK_THROWS_WITH_AS(parse_kv_dtype("q8_0"), doctest::Contains("expected f32 or f16"), error);
  CHECK_THROWS_WITH_AS(Cache(stories().be, stories().model.config(), 4, dtype::bf16),
                       doctest::Contains("not supported"), error);
  static_assert(stores_f16_kv<CpuBackend>);
}
