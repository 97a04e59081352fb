#pragma once
// What a caller submits to the engine and what it gets back.
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "eexit/sampling/sampler.hpp"

namespace eexit {

using request_id = std::int64_t;

struct GenerateRequest {
  std::vector<std::int32_t> prompt;  // token ids, BOS included if the model wants one
  SamplingParams sampling;
  std::int32_t max_tokens = 16;
  std::vector<std::int32_t> stop_token_ids;
  std::vector<std::string> stop;  // stop strings (needs a tokenizer on the engine)
  bool ignore_eos = false;
  // This request's early-exit threshold (every exit point), overriding the policy's; NaN =
  // the policy's own. Lets one batch mix requests that trade speed for quality differently.
  float exit_threshold = std::numeric_limits<float>::quiet_NaN();
};

enum class finish_reason : std::uint8_t { none, stop, length, abort, error };

constexpr std::string_view finish_reason_name(finish_reason r) noexcept {
  switch (r) {
    case finish_reason::none:
      return "";
    case finish_reason::stop:
      return "stop";
    case finish_reason::length:
      return "length";
    case finish_reason::abort:
      return "abort";
    case finish_reason::error:
      return "error";
  }
  return "";
}

struct TokenEvent {
  std::int32_t token = 0;
  std::int32_t exit_layer = 0;  // layer whose exit produced it (n_layers-1 = full depth)
  float logprob = 0.0f;         // when requested
  std::vector<TokenLogprob> top;
};

// Per request counters; exit_histogram[e] counts tokens that left at exit point e.
struct RequestStats {
  std::int32_t prompt_tokens = 0;
  std::int32_t generated_tokens = 0;
  std::int32_t preemptions = 0;
  // Prefix caching: tokens whose K/V came from cached blocks instead of being computed
  // (summed over admissions: a preempted request may hit again when it comes back).
  std::int32_t cached_tokens = 0;
  std::vector<std::int64_t> exit_histogram;
  std::int64_t layers_computed = 0;  // decode layers actually run, summed over tokens
  // Self-speculation: verify passes, draft tokens proposed, draft tokens accepted, tokens
  // the verify passes emitted (accepted drafts + one each, unless a stop cut the run).
  std::int32_t verify_passes = 0;
  std::int32_t draft_tokens = 0;
  std::int32_t accepted_drafts = 0;
  std::int32_t speculative_tokens = 0;
  double time_to_first_token_s = 0.0;
  double total_time_s = 0.0;
};

// What one step produced for one request.
struct RequestOutput {
  request_id id = 0;
  std::vector<TokenEvent> tokens;  // new this step
  std::string text;                // new text this step (complete UTF-8; needs a tokenizer)
  finish_reason finish = finish_reason::none;
  std::string error;   // when finish == error
  RequestStats stats;  // filled when finished
  bool finished() const noexcept { return finish != finish_reason::none; }
};

}  // namespace eexit
