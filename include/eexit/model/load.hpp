#pragma once
// One entry point for every checkpoint format eexit reads, chosen by what the path is.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "eexit/core/error.hpp"
#include "eexit/model/draft_vocab.hpp"
#include "eexit/model/gguf.hpp"
#include "eexit/model/hf.hpp"
#include "eexit/model/llama2c.hpp"
#include "eexit/model/weights.hpp"

namespace eexit {

// What a caller may change about a checkpoint while loading it.
struct LoadOptions {
  // Shared-head exit points (final norm + LM head) after these layers, added to the ones
  // the checkpoint declares (LayerSkip checkpoints ship as plain Llamas and carry none).
  // Each must lie in [0, n_layers - 2]; the last layer is always an exit point.
  std::vector<int> exit_layers;
  // Precision the weight matrices are kept in: unset (auto) keeps each tensor's own
  // (fp32, bf16, f16, Q8_0, Q4_0 as stored); a dtype converts every matrix to it.
  std::optional<dtype> weights;
  // Self-speculation's draft vocabulary (model/draft_vocab.hpp): token ids the draft head
  // computes logits for; empty = the whole vocabulary. Checked against the loaded vocabulary.
  std::vector<std::int32_t> draft_vocab;
};

// Adds extra shared-head exit points to m (merged with the checkpoint's, kept sorted).
// Where the checkpoint has dedicated heads or classifiers, a new exit point would have no
// weights of its own: refused rather than guessed. The checkpoint's per-exit default
// thresholds no longer line up with the exit list and are dropped (pass thresholds).
inline void add_exit_layers(ModelWeights& m, const std::vector<int>& layers,
                            const std::string& where = "exit_layers") {
  if (layers.empty()) return;
  ExitConfig& e = m.config.early_exit;
  const int n = m.config.n_layers;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    if (layers[i] < 0 || layers[i] > n - 2)
      throw error(where, "layer " + std::to_string(layers[i]) + " out of range [0, " +
                             std::to_string(n - 2) + "] for a model of " + std::to_string(n) +
                             " layers (the last layer is always an exit point)");
    if (i > 0 && layers[i] <= layers[i - 1]) throw error(where, "must be strictly increasing");
  }
  std::vector<int> merged = e.exit_layers;
  for (int l : layers)
    if (std::find(merged.begin(), merged.end(), l) == merged.end()) merged.push_back(l);
  std::sort(merged.begin(), merged.end());
  if (merged == e.exit_layers) return;
  if (!e.exit_layers.empty() && (e.head != exit_head_kind::shared || e.classifier))
    throw error(where,
                "the checkpoint's own exit points have dedicated heads or classifiers; "
                "shared-head exit points cannot be added to them");
  e.exit_layers = std::move(merged);
  e.thresholds.clear();
  m.exit_heads.clear();  // every head is shared: LlamaModel needs no per-exit weights
}

// Comma-separated layer list ("3,7") -> layers; where names the flag in errors.
inline std::vector<int> parse_exit_layers(std::string_view text, const std::string& where) {
  std::vector<int> out;
  std::size_t b = 0;
  while (b <= text.size()) {
    std::size_t e = text.find(',', b);
    if (e == std::string_view::npos) e = text.size();
    const std::string item(text.substr(b, e - b));
    std::size_t used = 0;
    long v = -1;
    try {
      v = std::stol(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size() || v < 0 || v > (1 << 20))
      throw error(where, "'" + item + "' is not a layer number (expected e.g. 3,7)");
    out.push_back(int(v));
    b = e + 1;
  }
  return out;
}

// A directory, *.safetensors or *.json -> Hugging Face layout (load_hf); any other file is
// sniffed: "GGUF" magic -> load_gguf, everything else is read as a llama2.c checkpoint,
// whose own size check rejects files that are not one.
namespace detail {
// A template only so that a compile-once build (eexit/instantiate.hpp) can declare it extern:
// it pulls in every format's parser, which no other translation unit then compiles again.
template <class = void>
ModelWeights load_any(const std::string& path, std::optional<dtype> weights) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path p(path);
  if (fs::is_directory(p, ec)) return load_hf(path, weights);
  if (!fs::exists(p, ec)) throw error(path, "no such file or directory");
  const std::string ext = p.extension().string();
  if (ext == ".safetensors" || ext == ".json") return load_hf(path, weights);

  std::ifstream in(path, std::ios::binary);
  if (!in) throw error(path, "cannot open file");
  char magic[4] = {};
  in.read(magic, 4);
  ModelWeights m = in.gcount() == 4 && std::string_view(magic, 4) == "GGUF" ? load_gguf(path)
                                                                            : load_llama2c(path);
  if (weights) m.convert(*weights);
  return m;
}
}  // namespace detail

inline ModelWeights load_model(const std::string& path) {
  return detail::load_any<>(path, {});
}

// load_model, then the options applied (exit layers validated against the loaded config).
inline ModelWeights load_model(const std::string& path, const LoadOptions& opt) {
  ModelWeights m = detail::load_any<>(path, opt.weights);
  add_exit_layers(m, opt.exit_layers);
  if (!opt.draft_vocab.empty()) {
    check_draft_vocab(opt.draft_vocab, m.config.vocab_size, "draft vocabulary");
    m.config.early_exit.draft_vocab = opt.draft_vocab;
  }
  return m;
}

#if defined(EEXIT_EXTERN_TEMPLATES)
extern template ModelWeights detail::load_any<>(const std::string&, std::optional<dtype>);
#endif

}  // namespace eexit
