#pragma once
// AdaptiveRule (`--policy adaptive`): a batch rule with a cost model (DESIGN.md §3, "Cost
// model"; DREX's adaptive rebatching made general). At every exit point, before anything
// is computed there, it weighs what evaluating the exit is expected to save against what
// the exit head costs for the rows at hand, and decides per step and exit point
//   - whether to evaluate the exit at all (no head is computed when it does not pay), and
//   - whether the batch splits (confident rows leave) or exits only when all are confident.
// Saving, with R = layers after the exit, C(n) = one layer's seconds for n rows, n active
// rows of which d decode rows, p = the exit's recent per-row pass rate, a = its recent
// all-rows pass rate, H_e / H_f = exit / final head seconds, F = the fill's:
//   split: R·(C(n) − C(n − p·d)) + H_f(y) − H_f(y − p·d) − F(p·d)
//   all:   a·[R·(C(n) − C(n − d)) + H_f(y) − H_f(y − d) − F(d)]
//   evaluate iff max(split, all) > H_e(d); choose the larger.
// With a deferred fill F(k) = R·(C(n + k) − C(n)): the skipped layers ride in the next step.
// In a weight-bound step C(n) hardly grows with n, so only "all" saves; in a compute-bound
// one every leaving row saves its share, so "split" does. Costs come from the walk's own
// timings (learned online; injected in tests). Pass rates are moving averages over the
// evaluations; every `explore_every`-th walk evaluates every exit so they cannot freeze.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "eexit/policy/cost_model.hpp"
#include "eexit/policy/exit_rows.hpp"

namespace eexit {

struct AdaptiveOptions {
  int explore_every = 16;   // every Nth walk evaluates every exit point; 0 = never
  double pass_keep = 0.9;   // weight of the past in the pass-rate moving averages
  double prior_pass = 0.5;  // pass rates before an exit was ever evaluated
  bool learn_costs = true;  // fold the walk's timings into the cost model
};

// Decisions, counted per exit point reached with decode rows.
struct AdaptiveStats {
  std::int64_t exits_evaluated = 0;  // the exit head was worth it (or explored)
  std::int64_t exits_skipped = 0;    // it was not: nothing computed there
  std::int64_t chose_all = 0;        // evaluated with the all-confident rule
  std::int64_t chose_split = 0;      // evaluated with the split rule
  std::int64_t explored = 0;         // evaluations the arithmetic alone would have skipped
};

struct AdaptiveRule {
  AdaptiveOptions opt{};
  CostModel costs{};
  AdaptiveStats stats{};

  std::string_view name() const { return "adaptive"; }
  bool wants_timings() const { return opt.learn_costs; }

  // The expected savings of the two rules at exit i.info (seconds, before the head's cost).
  struct Savings {
    double split = 0, all = 0, head = 0;
  };
  Savings savings(const ExitPointInfo& i) const {
    const std::size_t e = std::size_t(i.exit);
    const double p = e < pass_row_.size() ? pass_row_[e] : opt.prior_pass;
    const double a = e < pass_all_.size() ? pass_all_[e] : opt.prior_pass;
    const double R = double(i.n_layers - 1 - i.layer), n = double(i.n_active);
    const double d = double(i.n_decode), y = double(i.n_yield);
    const int last = int(costs.head.size()) - 1;  // final head's index, once timed
    auto gain = [&](double k) {                   // k rows leave here
      const double layers = R * (costs.layer_at(n) - costs.layer_at(n - k));
      const double final_head =
          last > i.exit ? costs.head_at(last, y) - costs.head_at(last, y - k) : 0.0;
      const double fill = i.deferred_fill ? R * (costs.layer_at(n + k) - costs.layer_at(n))
                                          : costs.fill_at(i.exit, k);
      return layers + final_head - fill;
    };
    Savings s;
    s.split = gain(p * d);
    s.all = a * gain(d);
    s.head = i.head ? costs.head_at(i.exit, d) : 0.0;
    return s;
  }

  // Decides exit i.exit for this walk: whether it is evaluated and with which rule.
  void begin_exit(const ExitPointInfo& i) {
    const std::size_t e = std::size_t(i.exit);
    grow(e + 1);
    const Savings s = savings(i);
    const bool pays = std::max(s.split, s.all) > s.head;
    const bool explore = opt.explore_every > 0 && walks_ % std::int64_t(opt.explore_every) == 0;
    eval_[e] = pays || explore;
    split_[e] = s.split > s.all;
    if (!eval_[e]) {
      ++stats.exits_skipped;
      return;
    }
    ++stats.exits_evaluated;
    stats.explored += !pays;
    ++(split_[e] ? stats.chose_split : stats.chose_all);
  }
  // Whether exit e is evaluated in this walk (true before begin_exit decided it).
  bool evaluates_at(int e) const { return std::size_t(e) >= eval_.size() || eval_[std::size_t(e)]; }
  bool splits_at(int e) const { return std::size_t(e) < split_.size() && split_[std::size_t(e)]; }

  // The rows' confidence at an evaluated exit: update its pass rates, apply its rule.
  void apply_at(const ExitRows& r, std::span<const std::uint8_t> conf,
                std::span<std::uint8_t> leave) {
    const std::size_t e = std::size_t(r.exit);
    grow(e + 1);
    std::size_t passed = 0;
    for (auto c : conf) passed += c != 0;
    const double k = opt.pass_keep;
    if (!conf.empty()) {
      pass_row_[e] = k * pass_row_[e] + (1 - k) * double(passed) / double(conf.size());
      pass_all_[e] = k * pass_all_[e] + (1 - k) * double(passed == conf.size());
    }
    const bool all = passed == conf.size();
    for (std::size_t j = 0; j < conf.size(); ++j) leave[j] = split_[e] ? conf[j] : all;
  }
  // batch_rule's plain form (no exit known): split.
  void apply(std::span<const std::uint8_t> conf, std::span<std::uint8_t> leave) const {
    std::copy(conf.begin(), conf.end(), leave.begin());
  }

  // The walk is over: learn its costs; the next walk decides afresh.
  void observe(const WalkTimings& t) {
    if (opt.learn_costs) costs.observe(t);
    ++walks_;
    std::fill(eval_.begin(), eval_.end(), std::uint8_t(1));
  }

  double pass_rate(int e) const {
    return std::size_t(e) < pass_row_.size() ? pass_row_[std::size_t(e)] : opt.prior_pass;
  }
  double all_pass_rate(int e) const {
    return std::size_t(e) < pass_all_.size() ? pass_all_[std::size_t(e)] : opt.prior_pass;
  }

 private:
  void grow(std::size_t n) {
    if (pass_row_.size() >= n) return;
    pass_row_.resize(n, opt.prior_pass);
    pass_all_.resize(n, opt.prior_pass);
    eval_.resize(n, 1);
    split_.resize(n, 1);
  }
  std::vector<double> pass_row_, pass_all_;  // (exit points) moving averages
  std::vector<std::uint8_t> eval_, split_;   // (exit points) this walk's decisions
  std::int64_t walks_ = 0;
};

}  // namespace eexit
