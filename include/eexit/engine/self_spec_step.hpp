#pragma once
// SpecStep: the self-speculative part of an engine step (DESIGN.md §3, LayerSkip), kept
// out of Engine so that its step reads plan -> drafts -> rows -> walk -> outputs. Per step:
//   plan(chunks)            which decode rows draft and how far; reserves their slots
//   draft(walk, policy, st) the draft passes: layers 0..E + exit E's head, one position each
//   lay_out_verify(rows, b) every drafted position as a late row from layer E+1 (+ bonus row)
//   take(slot, row)         in the walk's sink: records which yielded row is which position
//   accept(y, accept, st)   per row, rejection sampling against the full model; roll back
// The engine keeps the sequences, the scheduler and the walk; SpecStep reaches back only
// through what each call is given (the walk, the policy's draft_confidence, the engine's
// accept function for each emitted token and its EngineStats).
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "eexit/concepts.hpp"
#include "eexit/core/error.hpp"
#include "eexit/engine/engine_stats.hpp"
#include "eexit/engine/layer_walk.hpp"
#include "eexit/engine/scheduler.hpp"
#include "eexit/engine/sequence.hpp"
#include "eexit/engine/speculation.hpp"
#include "eexit/policy/cost_model.hpp"
#include "eexit/policy/exit_rows.hpp"
#include "eexit/policy/full_depth.hpp"
#include "eexit/policy/self_speculative.hpp"

namespace eexit {

// What a policy asks to speculate (validated); off for a policy that does not speculate.
template <class Policy>
Speculation speculation_of(const Policy& p) {
  if constexpr (speculative_policy<Policy>) {
    Speculation s = p.speculation();
    s.validate();
    return s;
  } else {
    return Speculation{.max_draft = 0};
  }
}

// FullDepth that hands the walk's op timings to a CostModel when on: the policy of the draft
// passes and of the verify walk while speculating (Speculation::adaptive learns from both).
struct TimedFullDepth : FullDepth {
  CostModel* costs = nullptr;
  bool on = false;
  bool wants_timings() const noexcept { return on; }
  void observe(const WalkTimings& t) {
    if (costs) costs->observe(t);
  }
};

template <class Model, class Cache>
requires exit_model<Model> && kv_cache<Cache> && fills_cache<Model, Cache>
class SpecStep {
 public:
  using backend_type = typename Model::backend_type;

  // max_running: sequences in a step, each may draft. Throws eexit::error when the draft
  // layer is not an exit point of the model.
  SpecStep(Model& model, Cache& cache, Speculation cfg, std::size_t max_running)
      : model_(&model),
        cache_(&cache),
        cfg_(cfg),
        draft_exit_(draft_exit_of(model, cfg_)),
        k_max_(draft_exit_ >= 0 ? cfg_.max_draft : 0) {
    if (k_max_ > 0)  // (max_running, K, dim) each drafting row's layer-E states, by round
      draft_hidden_ = model.backend().template allocate<float>(max_running * std::size_t(k_max_) *
                                                               std::size_t(model.config().dim));
    if (cfg_.costs) costs_ = *cfg_.costs;  // given: never timed, never corrected
    full_.costs = &costs_;
    full_.on = cfg_.adaptive && k_max_ > 0 && !cfg_.costs;
  }

  // The verify walk's policy (the engine's, while speculating): FullDepth, timed for the
  // cost model when k is adaptive.
  TimedFullDepth& walk_policy() noexcept { return full_; }

  // The draft exit point index while self-speculating, -1 when not.
  int draft_exit() const noexcept { return draft_exit_; }
  // K: most drafts per row and step; 0 without speculation.
  int k_max() const noexcept { return k_max_; }
  // Some row drafts in this step.
  bool active() const noexcept { return !spec_.empty(); }
  // Per chunk of this step's plan: its drafting row, -1 = laid out as usual (the skip list
  // of append_chunk_rows).
  const std::vector<int>& of_chunk() const noexcept { return spec_of_chunk_; }

  // Which decode rows draft, and how much: each the k adaptive k chose for it (or K), as
  // many of those as the request can still use and the cache can reserve now (never
  // preempting for it); k = 0 decodes plainly. Logprobs of speculated tokens come from
  // their verify position's full-depth logits. chunks are ordered (order_chunks); without
  // speculation nothing drafts.
  void plan(const std::vector<Chunk>& chunks) {
    spec_.clear();
    spec_of_chunk_.assign(chunks.size(), -1);
    taken_ = false;
    if (k_max_ == 0) return;
    if (full_.on) step_t0_ = std::chrono::steady_clock::now();  // for end_step
    if (cfg_.adaptive)
      choose_k(chunks);
    else
      k_of_chunk_.assign(chunks.size(), k_max_);
    const std::int32_t max_len = model_->config().max_seq_len;
    for (std::size_t k = 0; k < chunks.size(); ++k) {
      const Chunk& ch = chunks[k];
      Sequence& s = *ch.seq;
      if (!ch.decode || k_of_chunk_[k] == 0) continue;
      // Slots past pos a pass may write: pos+1..pos+cap with the bonus row, one fewer
      // without (then a single draft would only re-derive the plain decode's token).
      const bool bonus = cfg_.bonus_row;
      const int least = bonus ? 1 : 2;
      int cap =
          std::min({k_of_chunk_[k], s.req.max_tokens - s.stats.generated_tokens - (bonus ? 1 : 0),
                    max_len - 1 - ch.start});
      while (cap >= least && !cache_->reserve(s.id, bonus ? cap : cap - 1)) --cap;
      if (cap < least) continue;
      spec_of_chunk_[k] = int(spec_.size());
      SpecRow& r = spec_.emplace_back();
      r.s = &s;
      r.pos = ch.start;
      r.cap = cap;
      r.sampler.emplace(s.sampler);
      r.yrow.assign(std::size_t(cap + 1), -1);
    }
  }

  // The draft passes: every drafting row runs layers 0..E and the draft head, one position
  // per pass, all rows batched; a row stops at its cap or at a draft scored under the
  // threshold (that draft is dropped, its position's state still serves the verify).
  template <policy Policy>
  void draft(LayerWalk<Model, Cache>& walk, const Policy& pol, EngineStats& stats) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int round = 0;; ++round) {
      draft_rows_.clear();
      for (std::size_t e = 0; e < spec_.size(); ++e) {
        SpecRow& r = spec_[e];
        if (!r.drafting) continue;
        draft_rows_.push_yielding(
            r.token(round), RowKv{cache_->block_table(r.s->id), r.pos + round}, std::int32_t(e));
      }
      if (draft_rows_.tokens.empty()) break;
      draft_rows_.stop_exit = draft_exit_;
      auto sink = [&](const YieldedRows& y) { take_drafts(pol, y); };
      walk.run(full_, draft_rows_, sink);
    }
    stats.draft_time_s += detail::seconds_since(t0);
  }

  // The verify rows, first in the walk's row order (after deferred-fill rows, which start
  // deeper): every drafted position from layer E+1 on its saved state, then the last draft
  // from layer 0 where every draft was kept and the bonus row is on. Row e's position i
  // yields slot base + e * (K + 1) + i; slots under base are the caller's.
  void lay_out_verify(WalkRows& rows, std::int32_t base) {
    base_ = base;
    const int late = model_->exit_layers()[std::size_t(std::max(draft_exit_, 0))] + 1;
    for (std::size_t e = 0; e < spec_.size(); ++e) {  // the draft positions: from layer E+1
      SpecRow& r = spec_[e];
      const std::int32_t* bt = cache_->block_table(r.s->id);
      for (int i = 0; i < r.rounds; ++i) {
        rows.push_late(r.token(i), RowKv{bt, r.pos + i}, late, draft_state(e, i));
        rows.yield_last(base + std::int32_t(e) * (k_max_ + 1) + i);
      }
    }
    for (std::size_t e = 0; e < spec_.size(); ++e) {  // a last draft no pass has seen
      SpecRow& r = spec_[e];
      const int k = r.k();
      if (r.rounds > k || !cfg_.bonus_row) continue;
      rows.push_yielding(r.drafts.back(), RowKv{cache_->block_table(r.s->id), r.pos + k},
                         base + std::int32_t(e) * (k_max_ + 1) + k);
    }
  }

  // After the step's walks (adaptive k): what the step took, against what choose_k
  // predicted for the kind of step it turned out to be (some row drafted or none), corrects
  // that kind's later predictions.
  void end_step() {
    if (!full_.on) return;
    const bool drafted = active();
    const double predicted = drafted ? predicted_[1] : predicted_[0];
    predicted_ = {0.0, 0.0};
    if (!(predicted > 0)) return;
    step_scale_[drafted].observe(detail::seconds_since(step_t0_) / predicted);
  }

  // In the walk's sink, for each yielded row j: true if its slot is a verify position
  // (recorded for accept), false if it is the caller's.
  bool take(std::int32_t slot, std::size_t j) {
    if (slot < base_) return false;
    const std::int32_t v = slot - base_, per = k_max_ + 1;
    spec_[std::size_t(v / per)].yrow[std::size_t(v % per)] = std::int32_t(j);
    taken_ = true;
    return true;
  }

  // After the sink's take() calls for y: if any was a verify position, accepts from every
  // row whose positions y yielded. accept_token(seq, SampleResult, exit index, exit layer)
  // is the engine's: it feeds a token to the sequence and finishes it on a stop.
  template <class Accept>
  void accept(const YieldedRows& y, Accept&& accept_token, EngineStats& stats) {
    if (!taken_) return;
    taken_ = false;
    for (auto& r : spec_)
      if (!r.verified && r.yrow[0] >= 0) {
        r.verified = true;
        accept_row(r, y, accept_token, stats);
      }
  }

 private:
  // One decode row that drafts this step. Its input token sits at pos; slots pos+1..pos+cap
  // are reserved for drafts.
  struct SpecRow {
    Sequence* s = nullptr;
    std::int32_t pos = 0;
    int cap = 0;                            // most drafts (reserved slots)
    int rounds = 0;                         // draft passes run: positions pos..pos+rounds-1
    bool drafting = true;                   // takes part in the next draft pass
    bool verified = false;                  // its verify rows were accepted from
    std::vector<std::int32_t> drafts;       // (k) draft tokens
    std::vector<std::vector<TokenProb>> q;  // (k) the distributions they were drawn from
    std::optional<Sampler> sampler;         // the sequence's sampler advanced by the drafts
    std::vector<std::int32_t> yrow;         // (k+1) each verify position's yielded row
    int k() const noexcept { return int(drafts.size()); }
    // The token at position pos + i.
    std::int32_t token(int i) const {
      return i == 0 ? s->tokens[std::size_t(pos)] : drafts[std::size_t(i - 1)];
    }
  };

  // Adaptive k, per row and step: the k_i in [0, K] for each decode row i that give the
  // most predicted decode tokens per second for this step's rows. B decode rows, R0 other
  // rows (prefill chunks). Row i's acceptance a_i is per draft (geometric: the j-th draft
  // is kept with probability a_i given the ones before), so verified at v_i positions
  // (v_i = k_i + 1 with the bonus row, else k_i) it emits m_i = (1 - a_i^v_i) / (1 - a_i)
  // tokens; a_i is the sequence's own decaying count of kept and rejected drafts, with
  // `prior` pseudo-counts at the acceptance of every row (so a new sequence starts there).
  // Seconds, from the cost model (layer(rows), head(e, rows)), E + 1 layers up to the draft
  // exit, L in all, D drafting rows, D_r of them with k_i > r:
  //   sum over r < K of [(E+1) layer(D_r) + head(E, D_r)]            the draft passes
  //   + (E+1) layer(R0 + B - D + D') + (L-E-1) layer(R0 + B - D + sum v_i)
  //   + head(last, B - D + sum v_i)                                  the verify walk
  // (D' = D bonus rows from layer 0, or none; with D = 0 it is a plain step).
  // Without Speculation::per_row every row's a_i is the acceptance of all rows and the
  // search is the best k common to all rows. With it, a_i is the row's own and single rows
  // then go one lower while that gains (rows whose drafts are rarely kept drop out). It drafts only
  // where that beats a plain step by `margin`: the prediction's own error is some percent, and a
  // plain step is what full depth costs. Each prediction is scaled by what steps of its kind (plain
  // / drafting) took against their prediction (StepScale): the walk costs leave out what a step
  // does around them (sampling, acceptance, rollback, drafts spread to the whole vocabulary), and a
  // drafting step's share of it differs from a plain step's. At batch 16 an unscaled k = 1 looked a
  // few percent faster than k = 0 and ran slower.
  // Until the costs are known every row drafts K (and so measures); where k = 0 wins, one row
  // in turn still drafts one token after 16 plain steps, then 32, .. 128, so the acceptance
  // estimates and the drafting steps' scale follow the text and the machine (at batch 16 a
  // step where every row drafts one token costs 1.8 plain steps; one row drafting ~1.1).
  void choose_k(const std::vector<Chunk>& chunks) {
    k_of_chunk_.assign(chunks.size(), 0);
    rows_.clear();
    double R0 = 0;
    const double a_all = kept_ / (kept_ + rejected_);
    for (std::size_t c = 0; c < chunks.size(); ++c) {
      if (!chunks[c].decode) {
        R0 += double(chunks[c].n);
        continue;
      }
      const Sequence& s = *chunks[c].seq;
      const double a = cfg_.per_row
                           ? (s.spec_kept + prior * a_all) / (s.spec_kept + s.spec_rejected + prior)
                           : a_all;
      rows_.push_back({c, std::clamp(a, 0.0, 0.999)});
    }
    const std::size_t B = rows_.size();
    if (B == 0) return;
    if (!costs_.layer.known()) {
      for (const auto& r : rows_) k_of_chunk_[r.chunk] = k_max_;
      return;
    }
    // Layer costs seen only at more rows than this step's (a prefill's): below those the cost
    // model extends them flat, which prices every verify row as free (so a compute-bound
    // batch would draft in the first decode step after its prefill). A plain step first
    // teaches the cost of the decode rows.
    if (!costs_.layer.seen_at_or_below(R0 + double(B))) return;
    const double L = model_->config().n_layers;
    const int last = model_->n_exits() - 1;
    const double E1 = model_->exit_layers()[std::size_t(draft_exit_)] + 1;
    const int bonus = cfg_.bonus_row ? 1 : 0;
    auto layer = [&](double rows) { return costs_.layer_at(rows); };
    auto emitted = [&](std::size_t i, int k) {  // m_i
      if (k == 0) return 1.0;
      const double a = rows_[i].a;
      return (1.0 - std::pow(a, k + bonus)) / (1.0 - a);
    };
    KPlan& p = kplan_;
    p.k.assign(B, 0);
    p.at_least.assign(std::size_t(k_max_), 0);
    p.verified = 0;
    p.tokens = double(B);
    auto set = [&](KPlan& q, std::size_t i, int k) {  // row i drafts k
      const int old = q.k[i];
      const int sign = k > old ? 1 : -1;
      for (int r = std::min(old, k); r < std::max(old, k); ++r) q.at_least[std::size_t(r)] += sign;
      q.verified += (k ? k + bonus : 0) - (old ? old + bonus : 0);
      q.tokens += emitted(i, k) - emitted(i, old);
      q.k[i] = k;
    };
    auto seconds = [&](const KPlan& q) {  // predicted, before the step-time correction
      const double D = q.at_least.empty() ? 0 : q.at_least[0], plain = R0 + double(B) - D;
      double t = 0;
      for (int n : q.at_least)
        if (n > 0) t += E1 * layer(n) + costs_.head_at(draft_exit_, n);
      return t + E1 * layer(plain + bonus * D) + (L - E1) * layer(plain + q.verified) +
             costs_.head_at(last, double(B) - D + q.verified);
    };
    auto rate = [&](const KPlan& q) {
      return q.tokens / (step_scale_[q.at_least[0] > 0].value * seconds(q));
    };
    predicted_[0] = seconds(p);
    const double plain_rate = rate(p);
    // The best k for every row, then single rows one lower while that gains (each step
    // strictly raises the rate: it ends). Never higher than the common k: a draft pass
    // for a few rows is priced from row counts the costs may not have seen (extrapolated
    // below the smallest, optimistic where a pass is weight-bound); at batch 16 letting
    // the most accepting rows draft alone ran 8-16% slower than predicted.
    double best_rate = 0;
    int best_k = 0;
    for (int k = 1; k <= k_max_; ++k) {
      for (std::size_t i = 0; i < B; ++i) set(p, i, k);
      if (const double r = rate(p); r > best_rate) {
        best_rate = r;
        best_k = k;
      }
    }
    for (std::size_t i = 0; i < B; ++i) set(p, i, best_k);
    const std::size_t lowerings = cfg_.per_row ? B * std::size_t(k_max_) : 0;
    for (std::size_t it = 0; it < lowerings; ++it) {
      std::size_t bi = B;
      for (std::size_t i = 0; i < B; ++i) {
        if (p.k[i] == 0) continue;
        set(p, i, p.k[i] - 1);
        if (const double r = rate(p); r > best_rate * (1 + 1e-9)) {
          best_rate = r;
          bi = i;
        }
        set(p, i, p.k[i] + 1);
      }
      if (bi == B) break;
      set(p, bi, p.k[bi] - 1);
    }
    if (best_rate > plain_rate * (1 + margin)) {
      idle_steps_ = 0;
      explore_gap_ = explore_gap_min;
      for (std::size_t i = 0; i < B; ++i) k_of_chunk_[rows_[i].chunk] = p.k[i];
      predicted_[1] = seconds(p);
      return;
    }
    predicted_[1] = 0.0;
    if (++idle_steps_ < explore_gap_) return;
    // Explore: one row drafts one token, the rows taking turns in chunk order; the gap
    // doubles while the plan stays plain (16, 32, .. 128 steps: at batch 16 an exploring
    // step costs ~1.1 plain steps, and one every 16 steps was about half a percent of a
    // run that never drafts), back to 16 when a step drafts.
    idle_steps_ = 0;
    explore_gap_ = std::min(2 * explore_gap_, explore_gap_max);
    const std::size_t turn = std::size_t(explorations_++) % B;
    std::size_t j = 0;
    for (std::size_t c = 0; c < chunks.size(); ++c)
      if (chunks[c].decode && j++ == turn) k_of_chunk_[c] = 1;
    for (std::size_t i = 0; i < B; ++i) set(p, i, 0);
    set(p, 0, 1);  // the same cost whichever row it is
    predicted_[1] = seconds(p);
  }

  // Measured / predicted seconds of one kind of step: a moving average from 1. It corrects
  // a bias of some percent, so one step moves it a tenth of the way (one slow step, e.g.
  // while the cache's pages are first touched, does not set it), and a step off
  // by more than 2x, predicted from row counts the cost model had not seen yet (the first
  // decode step after a prefill), teaches nothing about the bias.
  struct StepScale {
    double value = 1.0;
    void observe(double r) {
      if (r >= 0.5 && r <= 2.0) value = 0.9 * value + 0.1 * r;
    }
  };

  // The exit point index drafts leave at; -1 = no speculation.
  static int draft_exit_of(const Model& m, const Speculation& s) {
    if (!s.enabled()) return -1;
    const auto layers = m.exit_layers();
    if (m.n_exits() < 2)
      throw error("self-spec", "the model has no early exit point to draft from (add exit layers)");
    if (s.draft_layer < 0) return 0;
    for (int e = 0; e + 1 < m.n_exits(); ++e)
      if (layers[std::size_t(e)] == s.draft_layer) return e;
    std::string have;
    for (int e = 0; e + 1 < m.n_exits(); ++e) {
      if (e) have.push_back(',');
      have.append(std::to_string(layers[std::size_t(e)]));
    }
    throw error("self-spec", "draft layer " + std::to_string(s.draft_layer) +
                                 " is not an exit point of the model (exit layers: " + have + ")");
  }

  float* draft_state(std::size_t e, int round) {
    const std::size_t dim = std::size_t(model_->config().dim);
    return backend_type::data(draft_hidden_) + (e * std::size_t(k_max_) + std::size_t(round)) * dim;
  }

  // A draft pass's rows at the draft head: save each row's layer-E state for its verify
  // row, draw a draft from the row's own sampler copy (so penalties see earlier drafts)
  // unless the policy scores it under the threshold.
  template <class Policy>
  void take_drafts(const Policy& pol, const YieldedRows& y) {
    const auto& c = model_->config();
    ExitRows er;
    er.exit = y.exit;
    er.layer = y.layer;
    er.n_layers = c.n_layers;
    er.n = y.n;
    er.vocab = y.vocab;
    er.dim = std::size_t(c.dim);
    er.scores = y.scores;
    er.top1 = y.top1;
    draft_conf_.assign(y.n, 0.0f);
    if constexpr (speculative_policy<Policy>) pol.draft_confidence(er, draft_conf_.data());
    auto& be = model_->backend();
    for (std::size_t j = 0; j < y.n; ++j) {
      SpecRow& r = spec_[std::size_t(y.slot[j])];
      be.copy(y.hidden + j * er.dim, draft_state(std::size_t(y.slot[j]), r.rounds), er.dim);
      ++r.rounds;
      const auto q = r.sampler->distribution(draft_row_logits(y, j));
      if (!(draft_conf_[j] >= cfg_.threshold)) {
        r.drafting = false;
        continue;
      }
      int d = spec::draw(q, r.s->spec_rng);
      if constexpr (draft_oracle<Policy>) {  // benchmarks: the oracle's token, from a one-hot q
        d = pol.oracle_draft(r.s->id, r.pos + r.rounds, d);
        r.q.push_back({TokenProb{d, 1.0}});
      } else {
        r.q.emplace_back(q.begin(), q.end());
      }
      r.drafts.push_back(d);
      r.sampler->accept(d);
      if (r.k() == r.cap) r.drafting = false;
    }
  }

  // Row j's draft logits over the whole vocabulary: as yielded, or, from a draft vocabulary's
  // columns, -inf outside it (the sampler drops those tokens, so q is zero there and
  // rejection sampling stays exact).
  std::span<const float> draft_row_logits(const YieldedRows& y, std::size_t j) {
    const auto cols = y.row_logits(j);
    if (!y.vocab_ids) return cols;
    full_logits_.assign(std::size_t(model_->config().vocab_size),
                        -std::numeric_limits<float>::infinity());
    for (std::size_t i = 0; i < cols.size(); ++i)
      full_logits_[std::size_t(y.vocab_ids[i])] = cols[i];
    return full_logits_;
  }

  // Accepts from one row's verify positions: draft i is kept by rejection sampling against
  // the full model's distribution at its position (penalties see the kept prefix, because
  // each kept token is accepted before the next position's distribution is taken); the
  // first rejected draft is replaced from the residual, and when all are kept the last
  // position gives a bonus token. Stops (EOS, stop strings, max_tokens) apply token by
  // token. The cache forgets every position past what was kept, in every layer.
  template <class Accept>
  void accept_row(SpecRow& r, const YieldedRows& y, Accept& accept_token, EngineStats& stats) {
    Sequence& s = *r.s;
    const int k = r.k(), last = model_->n_exits() - 1;
    const std::int32_t L = model_->config().n_layers;
    int m = 0, kept = 0;
    for (int i = 0; i <= k && !s.done; ++i) {
      const std::int32_t row = r.yrow[std::size_t(i)];
      if (row < 0) break;  // no bonus row: all k drafts kept, the last one is the next input
      const auto logits = y.row_logits(std::size_t(row));
      ++m;
      if (i == k) {
        accept_token(s, s.sampler.sample(logits), last, L - 1);
        break;
      }
      const auto p = s.sampler.distribution(logits);
      const int d = r.drafts[std::size_t(i)];
      const auto& q = r.q[std::size_t(i)];
      if (spec::keep_draft(p, q, d, s.spec_rng)) {
        ++kept;
        accept_token(s, s.sampler.result_for(logits, d), last, L - 1);
        continue;
      }
      accept_token(s, s.sampler.result_for(logits, spec::draw_residual(p, q, s.spec_rng)), last,
                   L - 1);
      rejected_ += 1.0;
      s.spec_rejected += 1.0;
      break;
    }
    // The acceptance estimates, every row's and this sequence's: kept / (kept + rejections),
    // decaying.
    kept_ += kept;
    kept_ *= decay;
    rejected_ *= decay;
    s.spec_kept = (s.spec_kept + kept) * row_decay;
    s.spec_rejected *= row_decay;
    // Every verified position ran all L layers (draft layers + the verify's).
    const std::int64_t layers =
        std::int64_t(r.rounds + (r.rounds == k && r.yrow[std::size_t(k)] >= 0)) * L;
    s.stats.layers_computed += layers;
    stats.decode_layers_computed += layers;
    stats.decode_layers_full += std::int64_t(m) * L;
    ++s.stats.verify_passes;
    s.stats.draft_tokens += k;
    s.stats.accepted_drafts += kept;
    s.stats.speculative_tokens += m;
    ++stats.verify_passes;
    stats.draft_tokens += k;
    stats.accepted_drafts += kept;
    stats.speculative_tokens += m;
    if (!s.done) {  // positions pos..pos+m-1 hold the kept tokens; the m-th new one is next
      s.n_computed = r.pos + m;
      cache_->truncate(s.id, r.pos + m);
    }
  }

  Model* model_;
  Cache* cache_;
  Speculation cfg_;
  int draft_exit_;  // -1: no speculation
  int k_max_;       // K, 0 without speculation
  // The draft walks' and the verify walk's policy: nothing leaves early (the stop exit
  // ends a draft walk); timed into costs_ when adaptive.
  TimedFullDepth full_;
  CostModel costs_;  // adaptive k: layer and head seconds by rows
  // Exploration: plain steps since the last exploring or drafting step, the gap before
  // the next one, explorations so far (whose row takes its turn)
  static constexpr int explore_gap_min = 16, explore_gap_max = 128;
  int idle_steps_ = 0, explore_gap_ = explore_gap_min;
  std::int64_t explorations_ = 0;
  struct RowAcc {
    std::size_t chunk;  // the decode row's chunk
    double a;           // its acceptance estimate
  };
  std::vector<RowAcc> rows_;  // (decode rows) choose_k's, in chunk order
  struct KPlan {              // choose_k's: a k per row of rows_
    std::vector<int> k;
    std::vector<int> at_least;  // (K) rows with k > r: the rows of draft pass r
    double verified = 0;        // verify rows from the draft layer on
    double tokens = 0;          // expected tokens emitted
  };
  KPlan kplan_;
  std::vector<int> k_of_chunk_;  // (chunks) this step's k per chunk (0: plain or not decode)
  std::chrono::steady_clock::time_point step_t0_{};  // when this step's plan began
  std::array<double, 2> predicted_{};        // this step's predicted seconds: plain, drafting
  std::array<StepScale, 2> step_scale_;      // measured / predicted: plain, drafting steps
  static constexpr double decay = 0.995;     // of the acceptance counts, per verified row
  static constexpr double row_decay = 0.95;  // of a sequence's, per verified row of it
  static constexpr double prior = 1.0;       // a sequence's pseudo-counts at every row's rate
  static constexpr double margin = 0.02;     // drafting must beat a plain step by this
  double kept_ = 1.0, rejected_ = 1.0;       // decaying counts; the prior is a = 0.5
  std::int32_t base_ = 0;                    // this step's first verify slot
  bool taken_ = false;                       // take() saw a verify position since the last accept
  std::vector<SpecRow> spec_;                // (drafting rows) this step's
  std::vector<int> spec_of_chunk_;           // (chunks) each chunk's drafting row, -1 = none
  WalkRows draft_rows_;                      // a draft pass's rows
  std::vector<float> draft_conf_;            // (draft pass rows) the policy's draft scores
  std::vector<float> full_logits_;  // (vocab) a draft row's logits spread out (draft_row_logits)
  typename backend_type::template buffer<float> draft_hidden_;  // (max_running, K, dim)
};

}  // namespace eexit
