#pragma once
// The cost model an adaptive policy decides by (DESIGN.md §3, "Cost model"): seconds of a
// layer, of each exit head and of each exit's KV fill as a function of the row count,
// measured, not assumed. The walk reports what it timed (WalkTimings) to a policy that
// asks for it (policy_observes_costs); the policy folds it into a CostModel.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace eexit {

// What an op of a walk was: a transformer layer, exit head `index` (logits + scores), or
// the KV fill of the rows leaving at exit `index`.
enum class op_kind : std::uint8_t { layer, head, fill };

struct OpTiming {
  op_kind kind = op_kind::layer;
  int index = 0;         // layer index, or exit point index for head and fill
  std::size_t rows = 0;  // rows the op ran over
  double seconds = 0.0;  // wall time, the backend synchronized
};

// Every timed op of one walk, in walk order.
struct WalkTimings {
  std::vector<OpTiming> ops;
  void clear() { ops.clear(); }
  void add(op_kind k, int index, std::size_t rows, double s) { ops.push_back({k, index, rows, s}); }
};

// Seconds of one op as a function of rows: an exponential moving average per power-of-two
// bucket of row counts (of the rows and of the seconds seen there), read back by linear
// interpolation between buckets. Below the smallest row count seen it extends the line
// through the two smallest (a fixed weight-read cost plus a per-row one: decode batches see
// few row counts, prefill chunks give the slope), kept between "flat" (weight-bound) and
// "in proportion to rows"; with one row count seen, flat (fewer rows are not assumed
// cheaper). Above the largest it scales with rows (compute-bound). Unseen: 0, so a policy
// tries the op and learns its cost.
class OpCost {
 public:
  static constexpr int buckets = 16;

  // keep: the weight of what was seen before (0 = replace, for injected costs).
  void observe(std::size_t rows, double seconds, double keep) {
    if (rows == 0 || !(seconds >= 0)) return;
    const int b = bucket(rows);
    const std::size_t i = std::size_t(b);
    const double k = seen_[i] ? keep : 0.0;
    n_[i] = k * n_[i] + (1 - k) * double(rows);
    t_[i] = k * t_[i] + (1 - k) * seconds;
    seen_[i] = true;
  }
  void set(std::size_t rows, double seconds) { observe(rows, seconds, 0.0); }
  bool known() const {
    for (bool s : seen_)
      if (s) return true;
    return false;
  }

  // Whether some row count at or below `rows` has been seen (else at() extends the
  // smallest seen flat down to rows).
  bool seen_at_or_below(double rows) const {
    for (int b = 0; b < buckets; ++b)
      if (seen_[std::size_t(b)] && n_[std::size_t(b)] <= rows) return true;
    return false;
  }

  double at(double rows) const {
    if (rows <= 0) return 0.0;
    int lo = -1, hi = -1, hi2 = -1;  // the nearest seen buckets at or below / above rows
    for (int b = 0; b < buckets; ++b) {
      if (!seen_[std::size_t(b)]) continue;
      if (n_[std::size_t(b)] <= rows)
        lo = b;
      else if (hi < 0)
        hi = b;
      else if (hi2 < 0)
        hi2 = b;
    }
    if (lo < 0 && hi < 0) return 0.0;
    if (lo < 0) {  // below every row count seen
      const double n0 = n_[std::size_t(hi)], t0 = t_[std::size_t(hi)];
      if (hi2 < 0) return t0;
      const double slope = (t_[std::size_t(hi2)] - t0) / (n_[std::size_t(hi2)] - n0);
      return std::clamp(t0 - slope * (n0 - rows), t0 * rows / n0, t0);
    }
    const double n0 = n_[std::size_t(lo)], t0 = t_[std::size_t(lo)];
    if (hi < 0) return t0 * rows / n0;
    const double n1 = n_[std::size_t(hi)], t1 = t_[std::size_t(hi)];
    return t0 + (t1 - t0) * (rows - n0) / (n1 - n0);
  }

 private:
  static int bucket(std::size_t rows) {
    int b = 0;
    while (b + 1 < buckets && (std::size_t(2) << b) <= rows) ++b;
    return b;
  }
  std::array<double, buckets> n_{}, t_{};
  std::array<bool, buckets> seen_{};
};

// All the costs a step is made of. Transformer layers of a Llama are alike, so one OpCost
// serves every layer; heads and fills are per exit point (dedicated heads differ, and a
// fill from an early exit covers more layers).
struct CostModel {
  OpCost layer;
  std::vector<OpCost> head, fill;  // (exit points, the final head included)
  double keep = 0.9;               // moving-average weight of past timings

  void resize(std::size_t n_exits) {
    if (head.size() < n_exits) head.resize(n_exits);
    if (fill.size() < n_exits) fill.resize(n_exits);
  }
  double layer_at(double rows) const { return layer.at(rows); }
  double head_at(int e, double rows) const {
    return std::size_t(e) < head.size() ? head[std::size_t(e)].at(rows) : 0.0;
  }
  double fill_at(int e, double rows) const {
    return std::size_t(e) < fill.size() ? fill[std::size_t(e)].at(rows) : 0.0;
  }
  void observe(const WalkTimings& t) {
    for (const auto& op : t.ops) {
      if (op.kind == op_kind::layer) {
        layer.observe(op.rows, op.seconds, keep);
        continue;
      }
      resize(std::size_t(op.index) + 1);
      auto& c = op.kind == op_kind::head ? head : fill;
      c[std::size_t(op.index)].observe(op.rows, op.seconds, keep);
    }
  }
};

}  // namespace eexit
