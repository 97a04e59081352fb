#pragma once
// Sequence: one request's state inside the engine: its tokens, its sampler, how much of it
// the cache holds, and the accept / stop checks that run on every token it gets (EOS and
// stop ids, stop strings on the detokenised text, max_tokens and the context length).
// Knows nothing of models or caches: the scheduler moves it, the walk's sink feeds it.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "eexit/engine/request.hpp"
#include "eexit/sampling/sampler.hpp"
#include "eexit/text/tokenizer.hpp"

namespace eexit {

// The seed of a request that brings none: the engine's seed mixed with the request id
// (splitmix64's finaliser), so that requests draw independent streams.
inline std::uint64_t mix_seed(std::uint64_t a, std::uint64_t b) {
  std::uint64_t z = a + 0x9e3779b97f4a7c15ull * (b + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// What a sequence's stop checks need to know of the model.
struct StopLimits {
  std::span<const std::int32_t> eos_ids;
  std::int32_t max_seq_len = 0;
};

struct Sequence {
  using clock = std::chrono::steady_clock;

  // tok: optional; enables stop strings and text. n_exits sizes the exit histogram.
  Sequence(request_id i, GenerateRequest r, std::uint64_t seed, int n_exits,
           const Tokenizer* tok = nullptr)
      : id(i),
        req(std::move(r)),
        tokens(req.prompt),
        sampler(req.sampling, seed),
        spec_rng(seed ^ 0x243f6a8885a308d3ull) {
    n_prompt = std::int32_t(req.prompt.size());
    sampler.set_prompt(req.prompt);
    stats.prompt_tokens = n_prompt;
    stats.exit_histogram.assign(std::size_t(n_exits), 0);
    arrival = clock::now();
    if (tok && !req.prompt.empty()) detok.emplace(*tok, req.prompt.back());
  }

  request_id id;
  GenerateRequest req;
  std::vector<std::int32_t> tokens;  // prompt + generated
  std::int32_t n_prompt = 0;
  std::int32_t n_computed = 0;  // tokens whose K/V are in the cache
  Sampler sampler;
  // Self-speculation's draws (draft tokens, accept tests, residual samples): a stream of
  // its own, so that they are independent of the sampler's and the output depends only on
  // the seed.
  Rng spec_rng;
  // Self-speculation's acceptance in this sequence (adaptive k per row): decaying counts of
  // kept drafts and of rejections.
  double spec_kept = 0.0, spec_rejected = 0.0;
  std::optional<StreamDecoder> detok;
  std::string text;           // decoded so far (for stop strings)
  std::size_t text_sent = 0;  // bytes of text already reported
  RequestStats stats;
  clock::time_point arrival;
  bool done = false;
  bool in_cache = false;  // holds KV slots (set by the scheduler)
  finish_reason finish = finish_reason::none;
  std::string error;
  std::vector<TokenEvent> new_tokens;  // since the last report

  // Tokens not yet in the cache (the whole sequence after a preemption).
  std::int32_t pending() const noexcept { return std::int32_t(tokens.size()) - n_computed; }

  // Appends a sampled token that left at exit point exit_index (layer exit_layer) and runs
  // the stop checks in the order a user reads them: EOS / stop ids, stop strings, length.
  // Returns why the sequence is finished now, or finish_reason::none.
  finish_reason accept(const SampleResult& r, int exit_index, std::int32_t exit_layer,
                       const StopLimits& lim) {
    sampler.accept(r.token);
    tokens.push_back(r.token);
    if (stats.generated_tokens == 0)
      stats.time_to_first_token_s = std::chrono::duration<double>(clock::now() - arrival).count();
    ++stats.generated_tokens;
    ++stats.exit_histogram[std::size_t(exit_index)];
    new_tokens.push_back(TokenEvent{r.token, exit_layer, r.logprob, r.top});
    const bool is_eos =
        std::find(lim.eos_ids.begin(), lim.eos_ids.end(), r.token) != lim.eos_ids.end();
    if ((is_eos && !req.ignore_eos) ||
        std::find(req.stop_token_ids.begin(), req.stop_token_ids.end(), r.token) !=
            req.stop_token_ids.end())
      return finish_reason::stop;
    if (detok) {
      const std::size_t before = text.size();
      text += detok->push(r.token);
      if (cut_at_stop_string(before)) return finish_reason::stop;
    }
    if (stats.generated_tokens >= req.max_tokens || std::int32_t(tokens.size()) >= lim.max_seq_len)
      return finish_reason::length;
    return finish_reason::none;
  }

  // Marks the sequence finished (once) and completes its text: a stop string already cut
  // it; otherwise the decoder's held-back bytes are flushed.
  void mark_finished(finish_reason why) {
    if (done) return;
    done = true;
    finish = why;
    if (detok && why != finish_reason::stop) text += detok->flush();
    stats.total_time_s = std::chrono::duration<double>(clock::now() - arrival).count();
  }

  // What this sequence produced since the last call: new tokens and complete new text; the
  // final stats and finish reason once done.
  RequestOutput take_output() {
    RequestOutput o;
    o.id = id;
    o.tokens = std::move(new_tokens);
    new_tokens.clear();
    if (text.size() > text_sent) {
      o.text = text.substr(text_sent);
      text_sent = text.size();
    }
    if (done) {
      o.finish = finish;
      o.error = error;
      o.stats = stats;
    }
    return o;
  }

 private:
  // Truncates the text before the first stop string; true if one matched. before: text
  // length before this token, so only matches that end in new text count.
  bool cut_at_stop_string(std::size_t before) {
    for (const auto& stop : req.stop) {
      if (stop.empty()) continue;
      const std::size_t from = before >= stop.size() ? before - stop.size() + 1 : 0;
      const auto pos = text.find(stop, from);
      if (pos != std::string::npos) {
        text.resize(pos);
        return true;
      }
    }
    return false;
  }
};

}  // namespace eexit
