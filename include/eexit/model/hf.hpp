#pragma once
// Hugging Face checkpoints: config.json (LlamaForCausalLM, Qwen2ForCausalLM,
// MistralForCausalLM, plus our optional "early_exit" block) and safetensors weights, in one
// file or sharded with model.safetensors.index.json.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>

#include "eexit/core/error.hpp"
#include "eexit/model/config.hpp"
#include "eexit/model/safetensors.hpp"
#include "eexit/model/weights.hpp"

namespace eexit {

namespace detail::hf {

// Sanity bounds: far above any real model, low enough that products of them cannot
// overflow 64 bits and that a corrupt config fails here rather than in an allocation.
inline constexpr std::int64_t max_dim = 1 << 20;
inline constexpr std::int64_t max_vocab = 1 << 22;
inline constexpr std::int64_t max_layers = 1 << 12;
inline constexpr std::int64_t max_positions = 1 << 24;

using json = nlohmann::json;

inline std::string field(std::string_view where, std::string_view key) {
  std::string s(where);
  s += ": field '";
  s += key;
  s += "'";
  return s;
}

// A field that may be absent or null (HF writes null for "use the default").
inline const json* opt(const json& j, std::string_view key) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

inline std::int64_t as_int(const json& v, std::string_view where, std::string_view key) {
  if (v.is_number_integer()) return v.get<std::int64_t>();  // also matches unsigned
  // A large unsigned value does not fit int64: the range check below reports it.
  throw error(field(where, key), "must be an integer");
}

inline int int_in(const json& j, std::string_view where, std::string_view key,
                  std::optional<std::int64_t> fallback, std::int64_t lo, std::int64_t hi) {
  const json* v = opt(j, key);
  std::int64_t x;
  if (v) {
    if (v->is_number_unsigned() && v->get<std::uint64_t>() > std::uint64_t(hi))
      throw error(field(where, key), "must be at most " + std::to_string(hi));
    x = as_int(*v, where, key);
  } else if (fallback) {
    x = *fallback;
  } else {
    throw error(field(where, key), "missing");
  }
  if (x < lo || x > hi)
    throw error(field(where, key), "value " + std::to_string(x) + " out of range [" +
                                       std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return int(x);
}

inline float positive_float(const json& j, std::string_view where, std::string_view key,
                            float fallback) {
  const json* v = opt(j, key);
  if (!v) return fallback;
  if (!v->is_number()) throw error(field(where, key), "must be a number");
  const double d = v->get<double>();
  if (!std::isfinite(d) || d <= 0 || d > 1e30) throw error(field(where, key), "must be > 0");
  // The model computes with the float, not the double: 1e-50 passes "> 0" as a double but
  // is 0.0f (NaN logits at every request), and a subnormal float loses its precision.
  const float f = float(d);
  if (!std::isnormal(f))
    throw error(field(where, key),
                "value " + v->dump() + " underflows float (the smallest normal float is 1.2e-38)");
  return f;
}

inline bool boolean(const json& j, std::string_view where, std::string_view key, bool fallback) {
  const json* v = opt(j, key);
  if (!v) return fallback;
  if (!v->is_boolean()) throw error(field(where, key), "must be true or false");
  return v->get<bool>();
}

inline std::string string(const json& j, std::string_view where, std::string_view key,
                          std::string fallback) {
  const json* v = opt(j, key);
  if (!v) return fallback;
  if (!v->is_string()) throw error(field(where, key), "must be a string");
  return v->get<std::string>();
}

inline void parse_rope_scaling(const json& j, std::string_view where, ModelConfig& c) {
  const json* rs = opt(j, "rope_scaling");
  if (!rs) return;
  const std::string w = field(where, "rope_scaling");
  if (!rs->is_object()) throw error(w, "must be an object or null");
  // transformers accepts both spellings: "rope_type" (new) and "type" (old).
  std::string type = string(*rs, w, "rope_type", "");
  if (type.empty()) type = string(*rs, w, "type", "");
  if (type.empty() || type == "default") return;
  if (type != "llama3")
    throw error(w, "rope type '" + type + "' is not supported (only \"llama3\")");
  const auto num = [&](std::string_view key) {
    const json* v = opt(*rs, key);
    if (!v) throw error(field(w, key), "missing (required for llama3)");
    return positive_float(*rs, w, key, 0.0f);
  };
  c.rope_scaling.enabled = true;
  c.rope_scaling.factor = num("factor");
  c.rope_scaling.low_freq_factor = num("low_freq_factor");
  c.rope_scaling.high_freq_factor = num("high_freq_factor");
  c.rope_scaling.original_max_position =
      int_in(*rs, w, "original_max_position_embeddings", std::nullopt, 1, max_positions);
  if (!(c.rope_scaling.high_freq_factor > c.rope_scaling.low_freq_factor))
    throw error(w, "high_freq_factor must exceed low_freq_factor");
}

inline void parse_early_exit(const json& j, std::string_view where, ModelConfig& c) {
  const json* ee = opt(j, "early_exit");
  if (!ee) return;
  const std::string w = field(where, "early_exit");
  if (!ee->is_object()) throw error(w, "must be an object");
  ExitConfig& e = c.early_exit;

  const json* layers = opt(*ee, "exit_layers");
  if (!layers || !layers->is_array()) throw error(field(w, "exit_layers"), "missing or not a list");
  for (const auto& l : *layers) {
    const std::int64_t v = as_int(l, w, "exit_layers");
    // The last layer is always an exit point (the model's own head), so it is not listed.
    if (v < 0 || v >= c.n_layers - 1)
      throw error(field(w, "exit_layers"), "layer " + std::to_string(v) + " out of range [0, " +
                                               std::to_string(c.n_layers - 2) +
                                               "] (the last layer is implicit)");
    if (!e.exit_layers.empty() && v <= e.exit_layers.back())
      throw error(field(w, "exit_layers"), "must be strictly increasing");
    e.exit_layers.push_back(int(v));
  }

  const std::string head = string(*ee, w, "head", "shared");
  if (head == "shared") {
    e.head = exit_head_kind::shared;
  } else if (head == "dedicated") {
    e.head = exit_head_kind::dedicated;
  } else {
    throw error(field(w, "head"), "must be \"shared\" or \"dedicated\", not \"" + head + "\"");
  }
  e.classifier = boolean(*ee, w, "classifier", false);
  e.measure = string(*ee, w, "measure", e.measure);
  if (e.measure.empty()) throw error(field(w, "measure"), "must not be empty");

  if (const json* th = opt(*ee, "thresholds")) {
    if (!th->is_array()) throw error(field(w, "thresholds"), "must be a list of numbers");
    if (th->size() != e.exit_layers.size())
      throw error(field(w, "thresholds"), "has " + std::to_string(th->size()) + " entries for " +
                                              std::to_string(e.exit_layers.size()) +
                                              " exit layers");
    for (const auto& t : *th) {
      // Checked as double: a value beyond float range would become inf in the config.
      if (!t.is_number() || !(std::abs(t.get<double>()) <= double(FLT_MAX)))
        throw error(field(w, "thresholds"), "must be finite numbers");
      e.thresholds.push_back(t.get<float>());
    }
  }
}

// eos_token_id of a config.json or generation_config.json (an id or a list): each id,
// checked against the vocabulary, joins c's EOS ids.
inline void add_eos_ids(const json& eos, std::string_view where, ModelConfig& c) {
  const auto add = [&](const json& v) {
    const std::int64_t id = as_int(v, where, "eos_token_id");
    if (id < 0 || id >= c.vocab_size)
      throw error(field(where, "eos_token_id"), "id " + std::to_string(id) + " outside vocab");
    c.add_eos(int(id));
  };
  if (eos.is_array()) {
    for (const auto& v : eos) add(v);
  } else {
    add(eos);
  }
}

}  // namespace detail::hf

// config.json -> ModelConfig. where names the file in errors.
inline ModelConfig parse_hf_config(const nlohmann::json& j, std::string_view where) {
  using namespace detail::hf;
  if (!j.is_object()) throw error(where, "config is not a JSON object");
  ModelConfig c;
  c.rope = rope_style::half;  // HF stores Q/K permuted for rotate_half

  std::string arch;
  if (const json* a = opt(j, "architectures")) {
    if (!a->is_array() || a->empty() || !(*a)[0].is_string())
      throw error(field(where, "architectures"), "must be a non-empty list of strings");
    arch = (*a)[0].get<std::string>();
    if (arch != "LlamaForCausalLM" && arch != "Qwen2ForCausalLM" && arch != "MistralForCausalLM")
      throw error(field(where, "architectures"), "architecture '" + arch + "' is not supported");
  }
  const std::string model_type = string(j, where, "model_type", "");
  if (arch.empty() && !model_type.empty() && model_type != "llama" && model_type != "qwen2" &&
      model_type != "mistral")
    throw error(field(where, "model_type"), "model type '" + model_type + "' is not supported");
  const bool qwen2 = arch == "Qwen2ForCausalLM" || (arch.empty() && model_type == "qwen2");

  c.dim = int_in(j, where, "hidden_size", std::nullopt, 1, max_dim);
  c.hidden_dim = int_in(j, where, "intermediate_size", std::nullopt, 1, max_dim);
  c.n_layers = int_in(j, where, "num_hidden_layers", std::nullopt, 1, max_layers);
  c.n_heads = int_in(j, where, "num_attention_heads", std::nullopt, 1, max_dim);
  c.n_kv_heads = int_in(j, where, "num_key_value_heads", c.n_heads, 1, c.n_heads);
  if (c.n_heads % c.n_kv_heads != 0)
    throw error(field(where, "num_key_value_heads"), std::to_string(c.n_kv_heads) +
                                                         " does not divide num_attention_heads " +
                                                         std::to_string(c.n_heads));
  if (opt(j, "head_dim")) {
    c.head_dim = int_in(j, where, "head_dim", std::nullopt, 1, max_dim);
  } else {
    if (c.dim % c.n_heads != 0)
      throw error(
          field(where, "num_attention_heads"),
          std::to_string(c.n_heads) + " does not divide hidden_size " + std::to_string(c.dim));
    c.head_dim = c.dim / c.n_heads;
  }
  if (c.head_dim % 2 != 0) throw error(field(where, "head_dim"), "must be even (RoPE pairs)");
  if (std::int64_t(c.n_heads) * c.head_dim > max_dim)
    throw error(field(where, "head_dim"), "num_attention_heads * head_dim is absurdly large");
  c.vocab_size = int_in(j, where, "vocab_size", std::nullopt, 1, max_vocab);
  c.max_seq_len = int_in(j, where, "max_position_embeddings", 2048, 1, max_positions);
  // Mistral's sliding window is not implemented: attending past it would silently differ
  // from the reference, so the usable context stops at the window.
  if (opt(j, "sliding_window") && boolean(j, where, "use_sliding_window", true))
    c.max_seq_len =
        std::min(c.max_seq_len, int_in(j, where, "sliding_window", std::nullopt, 1, max_positions));
  c.rope_theta = positive_float(j, where, "rope_theta", 10000.0f);
  c.rms_eps = positive_float(j, where, "rms_norm_eps", 1e-6f);
  c.tied_embeddings = boolean(j, where, "tie_word_embeddings", false);
  c.qkv_bias = qwen2 || boolean(j, where, "attention_bias", false);
  c.bos_id = int_in(j, where, "bos_token_id", 1, 0, c.vocab_size - 1);
  if (const json* eos = opt(j, "eos_token_id")) {
    c.eos_ids.clear();
    add_eos_ids(*eos, where, c);
  }
  // The default EOS id (2, SentencePiece's) must exist: a tiny vocabulary has to name its own.
  for (int id : c.eos_ids)
    if (id >= c.vocab_size)
      throw error(field(where, "eos_token_id"),
                  "missing, and the default id " + std::to_string(id) +
                      " is outside the vocabulary of " + std::to_string(c.vocab_size));
  parse_rope_scaling(j, where, c);
  parse_early_exit(j, where, c);
  return c;
}

namespace detail::hf {

// config.json and index files are a few KB; a huge one is not ours to slurp into memory.
inline constexpr std::uintmax_t max_json_bytes = 64u << 20;

inline nlohmann::json read_json(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw error(p.string(), "cannot open file");
  std::error_code ec;
  const auto size = std::filesystem::file_size(p, ec);
  if (ec || size > max_json_bytes)
    throw error(p.string(),
                "not a regular file of at most " + std::to_string(max_json_bytes) + " bytes");
  std::stringstream ss;
  ss << in.rdbuf();
  auto j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw error(p.string(), "not well-formed JSON");
  return j;
}

// Where each tensor lives: one file, or a weight_map over shards opened on first use.
class TensorSource {
 public:
  explicit TensorSource(const std::filesystem::path& weights) {
    const std::string name = weights.filename().string();
    if (name.size() > 11 && name.ends_with(".index.json")) {
      index_ = weights.string();
      dir_ = weights.parent_path();
      const json j = read_json(weights);
      const json* wm = j.is_object() ? opt(j, "weight_map") : nullptr;
      if (!wm || !wm->is_object())
        throw error(field(index_, "weight_map"), "missing or not an object");
      for (const auto& [tensor, shard] : wm->items()) {
        if (!shard.is_string()) throw error(field(index_, "weight_map." + tensor), "not a string");
        const auto& s = shard.get_ref<const std::string&>();
        // Shards are plain names next to the index; anything else could point anywhere.
        if (s.empty() || s.find('/') != std::string::npos || s.find('\\') != std::string::npos ||
            s == "." || s == "..")
          throw error(field(index_, "weight_map." + tensor),
                      "shard '" + s + "' is not a file name");
        map_[tensor] = s;
      }
    } else {
      single_ = std::make_unique<safetensors::File>(weights.string());
    }
  }

  std::vector<float> read(const std::string& name, std::initializer_list<std::int64_t> shape) {
    return file_for(name).read(name, shape);
  }
  // A weight matrix, in its stored precision or converted as opt says.
  Weight matrix(const std::string& name, std::initializer_list<std::int64_t> shape) {
    return file_for(name).read_weight(name, shape, as);
  }
  std::optional<dtype> as;  // unset: each matrix as stored
  bool has(const std::string& name) const {
    return single_ ? single_->header().find(name) != nullptr : map_.count(name) != 0;
  }

 private:
  safetensors::File& file_for(const std::string& name) {
    if (single_) return *single_;
    const auto it = map_.find(name);
    if (it == map_.end())
      throw error(index_ + ": tensor '" + name + "'", "missing from weight_map");
    auto& f = shards_[it->second];
    if (!f) f = std::make_unique<safetensors::File>((dir_ / it->second).string());
    return *f;
  }

  std::unique_ptr<safetensors::File> single_;
  std::string index_;
  std::filesystem::path dir_;
  std::map<std::string, std::string> map_;
  std::map<std::string, std::unique_ptr<safetensors::File>> shards_;
};

}  // namespace detail::hf

// generation_config.json's eos_token_id (an id or a list: Llama 3.x Instruct lists
// <|end_of_text|>, <|eom_id|>, <|eot_id|> = 128001, 128008, 128009 where config.json names
// one) joins the config's EOS ids, as transformers' generate() stops at all of them.
inline void add_generation_eos(const nlohmann::json& j, std::string_view where, ModelConfig& c) {
  using namespace detail::hf;
  if (!j.is_object()) throw error(where, "not a JSON object");
  const json* eos = opt(j, "eos_token_id");
  if (eos && !eos->is_null()) add_eos_ids(*eos, where, c);
}

// Loads an HF checkpoint. path: a directory with config.json and model.safetensors or
// model.safetensors.index.json; or a .safetensors / .index.json file with config.json beside
// it; or the config.json itself.
// as: the precision the matrices are kept in (unset: as stored).
inline ModelWeights load_hf(const std::string& path, std::optional<dtype> as = {}) {
  namespace fs = std::filesystem;
  using detail::hf::TensorSource;
  std::error_code ec;
  const fs::path p(path);
  fs::path dir, weights;
  if (fs::is_directory(p, ec)) {
    dir = p;
    if (fs::exists(dir / "model.safetensors", ec)) {
      weights = dir / "model.safetensors";
    } else if (fs::exists(dir / "model.safetensors.index.json", ec)) {
      weights = dir / "model.safetensors.index.json";
    } else {
      throw error(path, "directory has neither model.safetensors nor model.safetensors.index.json");
    }
  } else if (fs::is_regular_file(p, ec)) {
    dir = p.parent_path();
    const std::string name = p.filename().string();
    if (name.ends_with(".safetensors") || name.ends_with(".index.json")) {
      weights = p;
    } else if (fs::exists(dir / "model.safetensors", ec)) {  // path is the config.json
      weights = dir / "model.safetensors";
    } else {
      weights = dir / "model.safetensors.index.json";
    }
  } else {
    throw error(path, "no such file or directory");
  }
  if (dir.empty()) dir = ".";

  const fs::path config_path = dir / "config.json";
  ModelWeights m;
  m.config = parse_hf_config(detail::hf::read_json(config_path), config_path.string());
  if (const fs::path gen = dir / "generation_config.json"; fs::is_regular_file(gen, ec))
    add_generation_eos(detail::hf::read_json(gen), gen.string(), m.config);
  const ModelConfig& c = m.config;
  TensorSource src(weights);
  src.as = as;

  const std::int64_t d = c.dim, h = c.hidden_dim, v = c.vocab_size, q = c.q_dim(), kv = c.kv_dim();
  m.tok_embedding = src.matrix("model.embed_tokens.weight", {v, d});
  m.layers.resize(std::size_t(c.n_layers));
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string pre = "model.layers." + std::to_string(l) + ".";
    LayerWeights& L = m.layers[std::size_t(l)];
    L.attn_norm = src.read(pre + "input_layernorm.weight", {d});
    L.wq = src.matrix(pre + "self_attn.q_proj.weight", {q, d});
    L.wk = src.matrix(pre + "self_attn.k_proj.weight", {kv, d});
    L.wv = src.matrix(pre + "self_attn.v_proj.weight", {kv, d});
    L.wo = src.matrix(pre + "self_attn.o_proj.weight", {d, q});
    if (c.qkv_bias) {
      L.bq = src.read(pre + "self_attn.q_proj.bias", {q});
      L.bk = src.read(pre + "self_attn.k_proj.bias", {kv});
      L.bv = src.read(pre + "self_attn.v_proj.bias", {kv});
    }
    L.ffn_norm = src.read(pre + "post_attention_layernorm.weight", {d});
    L.w_gate = src.matrix(pre + "mlp.gate_proj.weight", {h, d});
    L.w_up = src.matrix(pre + "mlp.up_proj.weight", {h, d});
    L.w_down = src.matrix(pre + "mlp.down_proj.weight", {d, h});
  }
  m.final_norm = src.read("model.norm.weight", {d});
  // Tied checkpoints sometimes still carry lm_head.weight; the config decides.
  if (!c.tied_embeddings) m.lm_head = src.matrix("lm_head.weight", {v, d});

  const ExitConfig& e = c.early_exit;
  if (e.head == exit_head_kind::dedicated || e.classifier) {
    m.exit_heads.resize(e.exit_layers.size());
    for (std::size_t i = 0; i < e.exit_layers.size(); ++i) {
      const std::string pre = "model.exit_heads." + std::to_string(i) + ".";
      ExitHeadWeights& x = m.exit_heads[i];
      if (e.head == exit_head_kind::dedicated) {
        x.norm = src.read(pre + "norm.weight", {d});
        x.proj = src.matrix(pre + "proj.weight", {v, d});
      }
      if (e.classifier) {
        x.classifier_w = src.read(pre + "classifier.weight", {1, d});
        x.classifier_b = src.read(pre + "classifier.bias", {1})[0];
      }
    }
  }
  return m;
}

}  // namespace eexit
