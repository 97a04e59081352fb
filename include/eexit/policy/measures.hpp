#pragma once
// Confidence measures: map the active rows at an exit point to one score per row, higher
// = more confident. A row is confident when its score >= the exit's threshold.
#include <algorithm>
#include <cmath>
#include <concepts>
#include <string>
#include <string_view>
#include <variant>

#include "eexit/concepts.hpp"
#include "eexit/core/error.hpp"
#include "eexit/policy/exit_rows.hpp"
#include "eexit/policy/names.hpp"

namespace eexit {

// Score columns of ExitRows::scores (the backend's exit_scores op).
inline constexpr std::size_t score_max_prob = 0, score_margin = 1, score_entropy = 2;

// Max softmax probability of the exit logits.
struct MaxProb {
  ExitNeeds needs() const { return {.scores = true}; }
  std::string_view name() const { return "max-prob"; }
  void score(const ExitRows& r, float* out) const {
    for (std::size_t i = 0; i < r.n; ++i) out[i] = r.scores[3 * i + score_max_prob];
  }
};

// Top-1 minus top-2 probability (CALM's "softmax response").
struct Margin {
  ExitNeeds needs() const { return {.scores = true}; }
  std::string_view name() const { return "margin"; }
  void score(const ExitRows& r, float* out) const {
    for (std::size_t i = 0; i < r.n; ++i) out[i] = r.scores[3 * i + score_margin];
  }
};

// Negative entropy (nats) of the exit distribution: 0 is certain, so thresholds are <= 0.
struct NegEntropy {
  ExitNeeds needs() const { return {.scores = true}; }
  std::string_view name() const { return "entropy"; }
  void score(const ExitRows& r, float* out) const {
    for (std::size_t i = 0; i < r.n; ++i) out[i] = -r.scores[3 * i + score_entropy];
  }
};

// Cosine of the hidden states at this and the previous exit point ("saturation": the
// state stopped changing). Needs no exit head at all until a row leaves.
struct Cosine {
  ExitNeeds needs() const { return {.hidden = true, .prev_hidden = true}; }
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
