// libFuzzer target: llama2.c checkpoint loading (legacy and version-1 headers). Acceptable:
// eexit::error, or weights whose tensors have exactly the sizes the config implies.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "eexit/core/error.hpp"
#include "eexit/model/llama2c.hpp"
#include "fuzz_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string path = eexit::fuzz::write_input(data, size, "model.bin");
  try {
    const eexit::ModelWeights w = eexit::load_llama2c(path);
    const auto& c = w.config;
    const auto d = std::size_t(c.dim), v = std::size_t(c.vocab_size);
    if (c.vocab_size < 3 || c.dim % c.n_heads != 0 || c.n_heads % c.n_kv_heads != 0) std::abort();
    if (w.tok_embedding.size() != v * d || w.layers.size() != std::size_t(c.n_layers)) std::abort();
    for (const auto& l : w.layers)
      if (l.wq.size() != d * std::size_t(c.q_dim()) || l.wk.size() != d * std::size_t(c.kv_dim()))
        std::abort();
  } catch (const eexit::error&) {
  }
  return 0;
}
