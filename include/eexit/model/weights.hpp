#pragma once
// Host-side weights as every loader produces them: fp32, row-major, nn.Linear layout
// (out_features, in_features). A backend uploads them once into its own buffers.
#include <vector>

#include "eexit/model/config.hpp"

namespace eexit {

struct LayerWeights {
  std::vector<float> attn_norm;  // (dim)
  std::vector<float> wq;         // (n_heads*head_dim, dim)
  std::vector<float> wk;         // (n_kv_heads*head_dim, dim)
  std::vector<float> wv;         // (n_kv_heads*head_dim, dim)
  std::vector<float> wo;         // (dim, n_heads*head_dim)
  std::vector<float> bq, bk, bv; // (q_dim), (kv_dim), (kv_dim); empty unless qkv_bias
  std::vector<float> ffn_norm;   // (dim)
  std::vector<float> w_gate;     // (hidden_dim, dim)   llama2.c w1
  std::vector<float> w_down;     // (dim, hidden_dim)   llama2.c w2
  std::vector<float> w_up;       // (hidden_dim, dim)   llama2.c w3
};

// One dedicated exit head (ExitConfig::head == dedicated) and/or its classifier.
struct ExitHeadWeights {
  std::vector<float> norm;               // (dim); empty = shared final norm
  std::vector<float> proj;               // (vocab, dim); empty = shared LM head
  std::vector<float> classifier_w;       // (dim); empty unless ExitConfig::classifier
  float classifier_b = 0.0f;
};

struct ModelWeights {
  ModelConfig config;
  std::vector<float> tok_embedding;  // (vocab, dim)
  std::vector<LayerWeights> layers;  // n_layers
  std::vector<float> final_norm;     // (dim)
  std::vector<float> lm_head;        // (vocab, dim); empty when tied to tok_embedding
  // One per ExitConfig::exit_layers entry (may be empty when every head is shared and
  // there is no classifier).
  std::vector<ExitHeadWeights> exit_heads;
};

}  // namespace eexit
