#pragma once
// Per-exit thresholds λ_e, optionally with CALM's decay over the decode position.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "eexit/core/error.hpp"

namespace eexit {

struct Thresholds {
  // One value for every exit point, or one per exit point (final excluded).
  std::vector<float> values{0.9f};
  // CALM: λ_t = λ·exp(−τ·t/N)/10 + 9λ/10 over decode position t of N (max_tokens): the
  // bar is λ at the first token and eases towards 0.9λ (for measures in [0, 1]).
  bool calm_decay = false;
  float tau = 4.0f;

  float at(int exit, std::int32_t t, std::int32_t N) const {
    const float lambda = values.size() == 1 ? values[0] : values[std::size_t(exit)];
    if (!calm_decay || N <= 0) return lambda;
    return lambda * std::exp(-tau * float(t) / float(N)) / 10.0f + 9.0f * lambda / 10.0f;
  }

  // n_exits: exit points before the final layer.
  void validate(int n_exits) const {
    if (values.empty()) throw error("thresholds", "no threshold given");
    if (values.size() != 1 && int(values.size()) != n_exits)
      throw error("thresholds", "give one threshold or one per exit point (" +
                                    std::to_string(n_exits) + "), got " +
                                    std::to_string(values.size()));
    for (float v : values)
      if (!std::isfinite(v)) throw error("thresholds", "thresholds must be finite numbers");
    if (!std::isfinite(tau) || tau < 0) throw error("thresholds", "tau must be >= 0");
  }
};

// A finite per-request threshold (GenerateRequest::exit_threshold) no confidence score
// reaches: that request's rows never count as confident, so it runs at full depth while
// the rest of its batch may exit.
inline constexpr float full_depth_threshold = std::numeric_limits<float>::max();

}  // namespace eexit
