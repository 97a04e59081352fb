#pragma once
// Hyper-parameters of a Llama-family decoder and of its exit points.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "eexit/core/enums.hpp"

namespace eexit {

// Llama 3 "rope_scaling" (rope_type "llama3"): frequencies below a band are divided by
// factor, above kept, in between interpolated.
struct RopeScaling {
  bool enabled = false;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int original_max_position = 8192;
};

enum class exit_head_kind : std::uint8_t {
  shared,     // final norm + LM head of the model (LayerSkip)
  dedicated,  // each exit has its own norm and linear (EE-LLM)
};

// Exit points: after layer exit_layers[i] (0-based). The last layer is always an exit
// point and is not listed here; it uses the model's own final norm and LM head.
struct ExitConfig {
  std::vector<int> exit_layers;
  exit_head_kind head = exit_head_kind::shared;
  bool classifier = false;  // a linear + sigmoid confidence head per exit point
  // Defaults a config.json may carry for the policy (API/CLI override them).
  std::string measure = "max-prob";
  std::vector<float> thresholds;  // one per listed exit point; empty = policy default
  // Self-speculation's draft vocabulary (issue 17): the token ids a draft pass's head
  // computes logits for, distinct, each < vocab_size; empty = the whole vocabulary. The
  // verify pass and every other head stay full-vocabulary. Set by LoadOptions::draft_vocab.
  std::vector<std::int32_t> draft_vocab;
};

struct ModelConfig {
  int dim = 0;         // hidden size
  int hidden_dim = 0;  // MLP intermediate size
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;  // usually dim / n_heads
  int vocab_size = 0;
  int max_seq_len = 0;
  float rope_theta = 10000.0f;
  float rms_eps = 1e-5f;
  rope_style rope = rope_style::half;
  RopeScaling rope_scaling;
  // GGUF's spelling of Llama 3 scaling (llama.cpp writes the tensor rope_freqs.weight):
  // head_dim/2 per-frequency divisors, frequency i = theta^(-2i/head_dim) / factor[i].
  // Empty = none. Applied on top of rope_scaling (a GGUF file sets only this one).
  std::vector<float> rope_freq_factors;
  bool tied_embeddings = false;
  bool qkv_bias = false;  // Qwen2
  int bos_id = 1;
  std::vector<int> eos_ids{2};
  ExitConfig early_exit;

  // Adds a token id that ends generation, unless it is one already.
  void add_eos(int id) {
    if (std::find(eos_ids.begin(), eos_ids.end(), id) == eos_ids.end()) eos_ids.push_back(id);
  }
  int q_dim() const noexcept { return n_heads * head_dim; }
  int kv_dim() const noexcept { return n_kv_heads * head_dim; }
};

}  // namespace eexit
