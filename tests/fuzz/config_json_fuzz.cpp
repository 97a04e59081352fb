// libFuzzer target: config.json parsing (parse_hf_config, with the early_exit block).
// Acceptable: a JSON parse error, eexit::error, or a config that satisfies what the model
// code assumes (positive sizes, heads dividing, ids inside the vocabulary, normal floats).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "eexit/core/error.hpp"
#include "eexit/model/hf.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(data, data + size);
  } catch (const nlohmann::json::exception&) {
    return 0;  // not JSON: the loader reports that before parsing fields
  }
  try {
    const eexit::ModelConfig c = eexit::parse_hf_config(j, "fuzz/config.json");
    if (c.dim <= 0 || c.n_layers <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0) std::abort();
    if (c.n_heads % c.n_kv_heads != 0 || c.head_dim <= 0 || c.head_dim % 2 != 0) std::abort();
    if (c.bos_id < 0 || c.bos_id >= c.vocab_size) std::abort();
    for (int e : c.eos_ids)
      if (e < 0 || e >= c.vocab_size) std::abort();
    if (!std::isnormal(c.rms_eps) || !std::isnormal(c.rope_theta)) std::abort();
    int prev = -1;
    for (int l : c.early_exit.exit_layers) {
      if (l <= prev || l >= c.n_layers - 1) std::abort();
      prev = l;
    }
  } catch (const eexit::error&) {
  }
  return 0;
}
