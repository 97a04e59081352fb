#pragma once
// Completion: everything one request produced, folded from its per-step RequestOutputs.
// Engine::run_to_completion uses it; a serving layer can fold a stream the same way.
#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "eexit/engine/request.hpp"

namespace eexit {

struct Completion {
  request_id id = 0;
  std::vector<std::int32_t> tokens;
  std::vector<std::int32_t> exit_layers;  // (tokens) the layer each token left after
  std::vector<float> logprobs;            // (tokens) log p of each token (0 unless asked)
  std::vector<std::vector<TokenLogprob>> top_logprobs;  // (tokens, k) alternatives, if asked
  std::string text;
  finish_reason finish = finish_reason::none;
  RequestStats stats;
  std::string error;  // when finish == error
};

// Folds the outputs of any number of requests, in any interleaving.
class CompletionAccumulator {
 public:
  // Returns the request's completion so far; finished() on it says whether it is whole.
  const Completion& add(const RequestOutput& o) {
    Completion& c = acc_[o.id];
    c.id = o.id;
    for (const auto& t : o.tokens) {
      c.tokens.push_back(t.token);
      c.exit_layers.push_back(t.exit_layer);
      c.logprobs.push_back(t.logprob);
      c.top_logprobs.push_back(t.top);
    }
    c.text += o.text;
    if (o.finished()) {
      c.finish = o.finish;
      c.stats = o.stats;
      c.error = o.error;
    }
    return c;
  }
  // Hands over what was gathered for id (empty if nothing came) and forgets it.
  Completion take(request_id id) {
    Completion c;
    if (auto it = acc_.find(id); it != acc_.end()) {
      c = std::move(it->second);
      acc_.erase(it);
    }
    c.id = id;
    return c;
  }

 private:
  std::unordered_map<request_id, Completion> acc_;
};

}  // namespace eexit
