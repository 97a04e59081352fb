#pragma once
// What a policy sees at an exit point: the active decode rows of this step, in host
// memory, and what it may ask the engine to compute for them.
#include <cstddef>
#include <cstdint>

namespace eexit {

// What the engine computes at an exit point before calling the policy.
struct ExitNeeds {
  bool logits = false;       // exit head logits (n, vocab)
  bool classifier = false;   // classifier head outputs (n)
  bool prev_hidden = false;  // hidden state at the previous exit point (n, dim)
};

struct ExitRows {
  int exit = 0;   // exit point index (0 = first)
  int layer = 0;  // the layer after which it sits
  int n_layers = 0;
  std::size_t n = 0;  // active decode rows
  std::size_t vocab = 0, dim = 0;
  const float* logits = nullptr;       // (n, vocab) when needs.logits
  const float* hidden = nullptr;       // (n, dim) exit hidden state (always)
  const float* prev_hidden = nullptr;  // (n, dim) when needs.prev_hidden; the embedding at exit 0
  const float* classifier = nullptr;   // (n) when needs.classifier
  const std::int32_t* step = nullptr;  // (n) tokens the row's sequence generated so far
  const std::int32_t* max_steps = nullptr;  // (n) the sequence's max_tokens
  // (n) per-row scratch a policy may use across the exit points of one step; zero at the
  // step's start and moved with its row when rows leave.
  std::uint32_t* row_state = nullptr;
  const std::int64_t* request = nullptr;  // (n) request id of each row
  // (n) the request's own threshold (GenerateRequest::exit_threshold) or NaN for none:
  // stock policies use it in place of their own for that row, at every exit point.
  const float* row_threshold = nullptr;
};

}  // namespace eexit
