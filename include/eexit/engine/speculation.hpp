#pragma once
// The arithmetic of speculative rejection sampling (Leviathan et al. 2023; Chen et al.
// 2023) over the Sampler's processed distributions (sparse, in token-id order): a draft d
// drawn from q is kept with probability min(1, p(d)/q(d)); on a rejection the token is
// drawn from norm(max(0, p - q)). The kept-or-replaced token is then distributed as p.
// For greedy sampling p and q are one-hot: a draft is kept iff it is p's argmax, and the
// replacement is that argmax; no randomness is used then.
#include <algorithm>
#include <cstdint>
#include <span>

#include "eexit/sampling/rng.hpp"
#include "eexit/sampling/sampler.hpp"

namespace eexit::spec {

// Probability of token t in a distribution sorted by token id (0 if absent).
inline double prob_of(std::span<const TokenProb> d, int t) {
  const auto it = std::lower_bound(d.begin(), d.end(), t,
                                   [](const TokenProb& a, int tok) { return a.token < tok; });
  return it != d.end() && it->token == t ? it->prob : 0.0;
}

// One draw from d (its probabilities need not sum to 1). One uniform unless d has one token.
inline int draw(std::span<const TokenProb> d, Rng& rng) {
  if (d.size() == 1) return d.front().token;
  double total = 0.0;
  for (const auto& tp : d) total += tp.prob;
  const double u = rng.uniform() * total;
  double cum = 0.0;
  for (const auto& tp : d)
    if (u < (cum += tp.prob)) return tp.token;
  return d.back().token;
}

// Keeps draft d (drawn from q) against the target p? Draws a uniform only when
// 0 < p(d) < q(d).
inline bool keep_draft(std::span<const TokenProb> p, std::span<const TokenProb> q, int d,
                       Rng& rng) {
  const double pd = prob_of(p, d), qd = prob_of(q, d);
  if (pd >= qd) return true;
  if (pd <= 0.0) return false;
  return rng.uniform() * qd < pd;
}

// The replacement after a rejection: a draw from max(0, p - q), normalised. A rejection
// means some p(t) < q(t), so p - q has positive mass somewhere; with rounding leaving none,
// p itself is used.
inline int draw_residual(std::span<const TokenProb> p, std::span<const TokenProb> q, Rng& rng) {
  std::size_t nonzero = 0;
  int only = p.front().token;
  double total = 0.0;
  for (const auto& tp : p) {
    const double r = tp.prob - prob_of(q, tp.token);
    if (r > 0.0) {
      total += r;
      only = tp.token;
      ++nonzero;
    }
  }
  if (nonzero == 0) return draw(p, rng);
  if (nonzero == 1) return only;
  const double u = rng.uniform() * total;
  double cum = 0.0;
  int last = only;
  for (const auto& tp : p) {
    const double r = tp.prob - prob_of(q, tp.token);
    if (r <= 0.0) continue;
    last = tp.token;
    if (u < (cum += r)) return tp.token;
  }
  return last;
}

}  // namespace eexit::spec
