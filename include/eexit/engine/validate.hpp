#pragma once
// Request validation in one place: what makes a request one that can never run. Throws
// eexit::request_error with a request_errc code (the serving layer maps codes to HTTP
// statuses) and a message naming the problem.
#include <cmath>
#include <cstdint>
#include <string>

#include "eexit/core/error.hpp"
#include "eexit/engine/request.hpp"
#include "eexit/model/config.hpp"

namespace eexit {

// cache_tokens: the KV cache's capacity; has_tokenizer: stop strings need one.
inline void validate_request(const GenerateRequest& req, const ModelConfig& c,
                             std::int64_t cache_tokens, bool has_tokenizer) {
  using E = request_errc;
  if (req.prompt.empty()) throw request_error(E::empty_prompt, "prompt is empty");
  for (auto t : req.prompt)
    if (t < 0 || t >= c.vocab_size)
      throw request_error(E::token_out_of_vocab,
                          "prompt token " + std::to_string(t) + " is outside the vocabulary");
  if (std::int64_t(req.prompt.size()) >= c.max_seq_len)
    throw request_error(E::context_length_exceeded,
                        "prompt has " + std::to_string(req.prompt.size()) +
                            " tokens; the context holds " + std::to_string(c.max_seq_len));
  if (std::int64_t(req.prompt.size()) + 1 > cache_tokens)
    throw request_error(E::cache_too_small, "prompt does not fit the KV cache");
  if (req.max_tokens < 0) throw request_error(E::invalid_parameter, "max_tokens must be >= 0");
  if (!req.stop.empty() && !has_tokenizer)
    throw request_error(E::invalid_parameter, "stop strings need a tokenizer");
  try {
    req.sampling.validate();
  } catch (const error& e) {  // the sampler's own message, unchanged
    throw request_error(E::invalid_sampling, e.what(), "");
  }
  if (std::isinf(req.exit_threshold))
    throw request_error(E::invalid_parameter, "exit_threshold must be finite");
}

}  // namespace eexit
