#pragma once
// What a policy sees at an exit point: the active decode rows of this step, in host
// memory, and what it may ask the engine to compute for them. The per-row arrays point
// straight into the walk's decode rows (DecodeRows, struct of arrays): nothing is copied.
#include <cstddef>
#include <cstdint>

namespace eexit {

// What the engine computes at an exit point before calling the policy. Ask for little:
// scores cost one fused backend pass over the exit logits; logits_host and hidden copy
// rows to the host on a device backend.
struct ExitNeeds {
  bool scores = false;       // exit head -> ExitRows::scores and top1 (backend exit_scores)
  bool logits_host = false;  // the exit logits themselves, (n, vocab) on the host
  bool hidden = false;       // exit hidden states (n, dim) on the host
  bool prev_hidden = false;  // hidden state at the previous exit point (n, dim)
  bool classifier = false;   // classifier head outputs (n)
};

struct ExitRows {
  int exit = 0;   // exit point index (0 = first)
  int layer = 0;  // the layer after which it sits
  int n_layers = 0;
  std::size_t n = 0;  // active decode rows
  std::size_t vocab = 0, dim = 0;
  // (n, 3) when needs.scores: max probability, top-1 minus top-2 probability, entropy (nats)
  const float* scores = nullptr;
  const std::int32_t* top1 = nullptr;  // (n) when needs.scores: argmax (ties: lowest id)
  const float* logits = nullptr;       // (n, vocab) when needs.logits_host
  const float* hidden = nullptr;       // (n, dim) exit hidden state when needs.hidden
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

// What the walk tells a policy that asks (begin_exit) as it reaches an exit point, before
// it asks what to compute there: enough to weigh evaluating the exit against its cost.
struct ExitPointInfo {
  int exit = 0;   // exit point index
  int layer = 0;  // the layer after which it sits
  int n_layers = 0;
  std::size_t n_decode = 0;  // active decode rows (those that may leave)
  std::size_t n_active = 0;  // active rows in all (prefill and late rows included)
  std::size_t n_yield = 0;   // rows the final head will read if none leaves
  // Filled in by ExitPolicy from its measure and fill strategy:
  bool head = true;            // evaluating needs the exit head (logits), not just states
  bool deferred_fill = false;  // leaving rows' skipped layers run with the next step
};

}  // namespace eexit
