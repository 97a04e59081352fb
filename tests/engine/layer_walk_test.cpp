// LayerWalk's late rows: rows that start at a layer > 0 from a hidden state an earlier walk
// left (a stopped draft walk, stop_exit), mixed with full-depth rows that yield, and
// decode rows that exit, in one walk. Checked against one plain full-depth walk of the
// same tokens on stories260K (exits after layers 1 and 3): the logits of every position
// and the K/V of every layer at every position must match, in caches poisoned with NaN.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <vector>

#include "../test_paths.hpp"
#include "eexit/eexit.hpp"

using namespace eexit;

namespace {

using Cache = PagedCache<CpuBackend, 4>;  // small blocks: rows cross block boundaries

struct Stories {
  CpuBackend be{2};
  LlamaModel<CpuBackend> model{be, [] {
                                 auto w =
                                     load_model(test::shared("models/stories260K/stories260K.bin"));
                                 w.config.early_exit.exit_layers = {1, 3};
                                 return w;
                               }()};
};

// A sink that keeps each yielded row's logits and hidden state by slot.
struct Keep {
  explicit Keep(std::size_t d) : dim(d) {}
  std::size_t dim;
  std::map<std::int32_t, std::vector<float>> logits, hidden, scores;
  std::map<std::int32_t, int> exit;
  void operator()(const YieldedRows& y) {
    for (std::size_t j = 0; j < y.n; ++j) {
      const auto lg = y.row_logits(j);
      logits[y.slot[j]].assign(lg.begin(), lg.end());
      hidden[y.slot[j]].assign(y.hidden + j * dim, y.hidden + (j + 1) * dim);
      if (y.scores) scores[y.slot[j]].assign(y.scores + 3 * j, y.scores + 3 * j + 3);
      exit[y.slot[j]] = y.exit;
    }
  }
};

const std::vector<std::int32_t> kTokens = {1,   300, 271, 402, 287, 333,
                                           450, 261, 299, 310, 288, 277};
const std::vector<std::int32_t> kOther = {1, 290, 350, 260, 270};  // a second sequence

// Prefill rows of seq for positions [from, to), each yielding with slot = slot0 + position.
void push_prefill(WalkRows& w, const Cache& c, std::int64_t seq, const std::vector<std::int32_t>& t,
                  int from, int to, std::int32_t slot0) {
  for (int p = from; p < to; ++p) {
    w.tokens.push_back(t[std::size_t(p)]);
    w.rowkv.push_back(RowKv{c.block_table(seq), p});
    ++w.n_prefill;
    w.yield_rows.push_back(std::int32_t(w.tokens.size()) - 1);
    w.yield_slots.push_back(slot0 + p);
  }
}

// The AllConfident policy with threshold 0 at every exit: every decode row leaves at exit 0.
AllConfident exit_always() {
  AllConfident p;
  p.measure = AnyMeasure::from_name("max-prob");
  p.thresholds.values = {0.0f, 0.0f};
  return p;
}

void check_close(const std::vector<float>& a, const std::vector<float>& b, const char* what) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    REQUIRE(std::isfinite(a[i]));
    REQUIRE(std::isfinite(b[i]));
    worst = std::max(worst, double(std::fabs(a[i] - b[i])));
  }
  INFO(what);
  CHECK(worst <= 1e-4);
}

}  // namespace

TEST_CASE("late rows (start layer > 0) give the logits and K/V of one full-depth walk") {
  Stories s;
  const auto& cfg = s.model.config();
  const int n = int(kTokens.size()), a = 5;
  const std::size_t dim = std::size_t(cfg.dim);
  FullDepth full;
  auto ee = exit_always();

  // Reference: the whole sequence in one walk; the other sequence's prompt, then one
  // decode row of it that exits at exit 0.
  Cache ref(s.be, cfg, 16);
  ref.fill(NAN);
  LayerWalk<LlamaModel<CpuBackend>, Cache> wr(s.model, ref, 64, 64);
  Keep kr(dim);
  REQUIRE(ref.reserve(1, n));
  REQUIRE(ref.reserve(2, int(kOther.size()) - 1));
  WalkRows w;
  push_prefill(w, ref, 1, kTokens, 0, n, 0);
  push_prefill(w, ref, 2, kOther, 0, int(kOther.size()) - 1, 100);
  wr.run(full, w, kr);
  REQUIRE(ref.reserve(2, 1));
  w.clear();
  const int dpos = int(kOther.size()) - 1;
  w.tokens.push_back(kOther.back());
  w.rowkv.push_back(RowKv{ref.block_table(2), dpos});
  w.decode.push(200, 2, 0, 8, NAN);
  wr.run(ee, w, kr);
  REQUIRE(kr.exit.at(200) == 0);

  // Late: positions [0, a) stop at exit 1 (after layer 3), [a, n-1) at exit 0 (after layer
  // 1); then one walk finishes them from their saved states (start layers 4 and 2) with
  // the last token from layer 0, the other sequence's decode row exiting in the same walk.
  Cache late(s.be, cfg, 16);
  late.fill(NAN);
  LayerWalk<LlamaModel<CpuBackend>, Cache> wl(s.model, late, 64, 64);
  Keep k1(dim), k2(dim);
  REQUIRE(late.reserve(1, n));
  REQUIRE(late.reserve(2, int(kOther.size()) - 1));
  w.clear();
  push_prefill(w, late, 2, kOther, 0, dpos, 100);
  wl.run(full, w, k1);  // the other sequence's prompt, full depth
  w.clear();
  push_prefill(w, late, 1, kTokens, 0, a, 0);
  w.stop_exit = 1;
  wl.run(full, w, k1);
  w.clear();
  push_prefill(w, late, 1, kTokens, a, n - 1, 0);
  w.stop_exit = 0;
  wl.run(full, w, k1);
  for (int p = 0; p < n - 1; ++p) {
    CHECK(k1.exit.at(p) == (p < a ? 1 : 0));
    REQUIRE(k1.scores.at(p).size() == 3);  // a stopped walk scores its head (draft confidence)
    CHECK(k1.scores.at(p)[0] > 0.0f);
  }
  // The saved states (backend memory: the CPU backend's is host memory).
  auto saved = s.be.allocate<float>(std::size_t(n) * dim);
  for (int p = 0; p < n - 1; ++p)
    s.be.copy(k1.hidden.at(p).data(), CpuBackend::data(saved) + std::size_t(p) * dim, dim);
  REQUIRE(late.reserve(2, 1));
  w.clear();
  for (int p = 0; p < n - 1; ++p) {
    w.push_late(kTokens[std::size_t(p)], RowKv{late.block_table(1), p}, p < a ? 4 : 2,
                CpuBackend::data(saved) + std::size_t(p) * dim);
    w.yield_rows.push_back(p);
    w.yield_slots.push_back(p);
  }
  push_prefill(w, late, 1, kTokens, n - 1, n, 0);
  w.tokens.push_back(kOther.back());
  w.rowkv.push_back(RowKv{late.block_table(2), dpos});
  w.decode.push(200, 2, 0, 8, NAN);
  wl.run(ee, w, k2);

  for (int p = 0; p < n; ++p) {
    CAPTURE(p);
    CHECK(k2.exit.at(p) == 2);
    check_close(k2.logits.at(p), kr.logits.at(p), "final logits of a late row");
  }
  CHECK(k2.exit.at(200) == 0);
  check_close(k2.logits.at(200), kr.logits.at(200), "the exiting decode row beside late rows");
  // K/V of every layer at every position of both sequences.
  for (int l = 0; l < cfg.n_layers; ++l) {
    const KvLayerView vr = ref.view(l), vl = late.view(l);
    for (std::int64_t seq : {1, 2}) {
      const int len = seq == 1 ? n : int(kOther.size());
      for (int p = 0; p < len; ++p) {
        CAPTURE(l);
        CAPTURE(p);
        const RowKv rr{ref.block_table(seq), p}, rl{late.block_table(seq), p};
        const std::size_t kvd = std::size_t(vr.kv_dim);
        for (const bool is_k : {true, false}) {
          const float* pr = (is_k ? vr.k : vr.v) + vr.slot(rr, p) * kvd;
          const float* pl = (is_k ? vl.k : vl.v) + vl.slot(rl, p) * kvd;
          check_close(std::vector<float>(pr, pr + kvd), std::vector<float>(pl, pl + kvd), "K/V");
        }
      }
    }
  }
}

TEST_CASE("late rows that are out of order or start past the walk are refused") {
  Stories s;
  Cache c(s.be, s.model.config(), 8);
  REQUIRE(c.reserve(1, 2));
  LayerWalk<LlamaModel<CpuBackend>, Cache> walk(s.model, c, 8, 8);
  auto h = s.be.allocate<float>(std::size_t(s.model.config().dim));
  FullDepth full;
  Keep k(std::size_t(s.model.config().dim));
  WalkRows w;
  w.push_late(300, RowKv{c.block_table(1), 0}, 2, CpuBackend::data(h));
  w.push_late(301, RowKv{c.block_table(1), 1}, 4, CpuBackend::data(h));  // rises: refused
  CHECK_THROWS_AS(walk.run(full, w, k), error);
  w.clear();
  w.push_late(300, RowKv{c.block_table(1), 0}, 3, CpuBackend::data(h));
  w.stop_exit = 0;  // the walk ends after layer 1: a row starting at 3 never runs
  CHECK_THROWS_AS(walk.run(full, w, k), error);
}
