#pragma once
// Confidence measures: map the active rows at an exit point to one score per row, higher
// = more confident. A row is confident when its score >= the exit's threshold.
#include <algorithm>
#include <cmath>
#include <concepts>
#include <string>
#include <string_view>
#include <variant>

#include "eexit/core/error.hpp"
#include "eexit/policy/exit_rows.hpp"
#include "eexit/policy/names.hpp"

namespace eexit {

template <class M>
concept confidence_measure = requires(const M& m, const ExitRows& r, float* out) {
  { m.needs() } -> std::same_as<ExitNeeds>;
  m.score(r, out);
  { m.name() } -> std::convertible_to<std::string_view>;
};

namespace detail {
// Softmax statistics of one row of logits: max probability, second probability, entropy.
// Scores are computed for every active row at every exit point, so this is one pass of
// float exponentials (vectorisable) after the max, not double math.
struct SoftmaxStats {
  float p1 = 0, p2 = 0, entropy = 0;
};
inline float row_max(const float* z, std::size_t n) {
  float m = -INFINITY;
  for (std::size_t i = 0; i < n; ++i) m = std::max(m, z[i]);
  return m;
}
// Σ e^(z_i - m); with_z also gives Σ e^(z_i - m)·(z_i - m) for the entropy.
template <bool with_z>
inline void exp_sums(const float* z, std::size_t n, float m, float& S, float& Sz) {
  float s[8] = {}, sz[8] = {};
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (std::size_t k = 0; k < 8; ++k) {
      const float d = z[i + k] - m, e = std::exp(d);
      s[k] += e;
      if constexpr (with_z) sz[k] += e * d;
    }
  for (; i < n; ++i) {
    const float d = z[i] - m, e = std::exp(d);
    s[0] += e;
    if constexpr (with_z) sz[0] += e * d;
  }
  S = Sz = 0.0f;
  for (std::size_t k = 0; k < 8; ++k) {
    S += s[k];
    Sz += sz[k];
  }
}
inline float max_prob(const float* z, std::size_t n) {
  float S, Sz;
  exp_sums<false>(z, n, row_max(z, n), S, Sz);
  return 1.0f / S;
}
inline SoftmaxStats softmax_stats(const float* z, std::size_t n) {
  float m1 = -INFINITY, m2 = -INFINITY;
  for (std::size_t i = 0; i < n; ++i) {
    if (z[i] > m1) {
      m2 = m1;
      m1 = z[i];
    } else if (z[i] > m2) {
      m2 = z[i];
    }
  }
  // p_i = e^(z_i - m1) / S; H = log S - Σ p_i (z_i - m1)
  float S, Sz;
  exp_sums<true>(z, n, m1, S, Sz);
  SoftmaxStats st;
  st.p1 = 1.0f / S;
  st.p2 = n > 1 ? std::exp(m2 - m1) / S : 0.0f;
  st.entropy = std::log(S) - Sz / S;
  return st;
}
}  // namespace detail

// Max softmax probability of the exit logits.
struct MaxProb {
  ExitNeeds needs() const { return {.logits = true}; }
  std::string_view name() const { return "max-prob"; }
  void score(const ExitRows& r, float* out) const {
    for (std::size_t i = 0; i < r.n; ++i)
      out[i] = detail::max_prob(r.logits + i * r.vocab, r.vocab);
  }
};

// Top-1 minus top-2 probability (CALM's "softmax response").
struct Margin {
  ExitNeeds needs() const { return {.logits = true}; }
  std::string_view name() const { return "margin"; }
  void score(const ExitRows& r, float* out) const {
    for (std::size_t i = 0; i < r.n; ++i) {
      const auto st = detail::softmax_stats(r.logits + i * r.vocab, r.vocab);
      out[i] = st.p1 - st.p2;
    }
  }
};

// Negative entropy (nats) of the exit distribution: 0 is certain, so thresholds are <= 0.
struct NegEntropy {
  ExitNeeds needs() const { return {.logits = true}; }
  std::string_view name() const { return "entropy"; }
  void score(const ExitRows& r, float* out) const {
    for (std::size_t i = 0; i < r.n; ++i)
      out[i] = -detail::softmax_stats(r.logits + i * r.vocab, r.vocab).entropy;
  }
};

// Cosine of the hidden states at this and the previous exit point ("saturation": the
// state stopped changing). Needs no exit head at all until a row leaves.
struct Cosine {
  ExitNeeds needs() const { return {.prev_hidden = true}; }
  std::string_view name() const { return "cosine"; }
  void score(const ExitRows& r, float* out) const {
    for (std::size_t i = 0; i < r.n; ++i) {
      const float* a = r.hidden + i * r.dim;
      const float* b = r.prev_hidden + i * r.dim;
      double ab = 0, aa = 0, bb = 0;
      for (std::size_t k = 0; k < r.dim; ++k) {
        ab += double(a[k]) * b[k];
        aa += double(a[k]) * a[k];
        bb += double(b[k]) * b[k];
      }
      out[i] = (aa > 0 && bb > 0) ? float(ab / std::sqrt(aa * bb)) : 0.0f;
    }
  }
};

// The exit's classifier head (linear + sigmoid), trained to say "exit here".
struct Classifier {
  ExitNeeds needs() const { return {.classifier = true}; }
  std::string_view name() const { return "classifier"; }
  void score(const ExitRows& r, float* out) const { std::copy_n(r.classifier, r.n, out); }
};

// One of the stock measures chosen at run time (CLI, server request). std::visit per
// exit point, not per element: the dispatch is off the hot path.
struct AnyMeasure {
  std::variant<MaxProb, Margin, NegEntropy, Cosine, Classifier> m = MaxProb{};

  ExitNeeds needs() const {
    return std::visit([](const auto& x) { return x.needs(); }, m);
  }
  std::string_view name() const {
    return std::visit([](const auto& x) { return x.name(); }, m);
  }
  void score(const ExitRows& r, float* out) const {
    std::visit([&](const auto& x) { x.score(r, out); }, m);
  }
  // Throws eexit::error("measure", ...) listing the valid names.
  static AnyMeasure from_name(std::string_view n) {
    return {detail::alternative_from_name<decltype(m)>(n, "measure", "confidence measure")};
  }
};

static_assert(confidence_measure<MaxProb> && confidence_measure<Margin> &&
              confidence_measure<NegEntropy> && confidence_measure<Cosine> &&
              confidence_measure<Classifier> && confidence_measure<AnyMeasure>);

}  // namespace eexit
