// libFuzzer target: GGUF files on arbitrary bytes, through every layer a file reaches: the
// container parser, the llama loader (config + dequantized weights) and the tokenizer
// (built, then encoding and decoding a fixed text). The only acceptable outcomes are
// results that satisfy the invariants below, or eexit::error; anything else (a crash, a
// sanitizer report, another exception, an out-of-range id) is a bug.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "eexit/core/error.hpp"
#include "eexit/model/gguf.hpp"
#include "eexit/text/tokenizer.hpp"

namespace {

void check_weights(const eexit::ModelWeights& m) {
  const auto& c = m.config;
  const auto d = std::size_t(c.dim);
  if (m.tok_embedding.size() != std::size_t(c.vocab_size) * d) std::abort();
  if (m.layers.size() != std::size_t(c.n_layers)) std::abort();
  for (const auto& l : m.layers)
    if (l.wq.size() != std::size_t(c.q_dim()) * d || l.wk.size() != std::size_t(c.kv_dim()) * d ||
        l.w_down.size() != d * std::size_t(c.hidden_dim))
      std::abort();
  if (!c.tied_embeddings && m.lm_head.size() != m.tok_embedding.size()) std::abort();
  for (int e : c.early_exit.exit_layers)
    if (e < 0 || e >= c.n_layers - 1) std::abort();
}

void check_tokenizer(const eexit::Tokenizer& t) {
  const auto ids = t.encode("Hello world, \xC3\xBCn\xC3\xAF 123 <s>\n", true);
  for (int id : ids)
    if (id < 0 || id >= t.vocab_size()) std::abort();
  (void)t.decode(ids);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto f = eexit::gguf::File::parse(std::span(data, size), "fuzz");
    for (const auto& t : f.tensors()) {
      // The invariants the loaders rely on: in bounds, sized by shape and type.
      const auto* begin = t.data.data();
      if (t.n_bytes != t.data.size()) std::abort();
      if (t.n_bytes && (begin < data + f.data_offset() || begin + t.n_bytes > data + size))
        std::abort();
      const auto tt = eexit::gguf::traits(t.type);
      if (tt.blck == 0 || t.n_elements % tt.blck ||
          t.n_bytes != t.n_elements / tt.blck * tt.type_size)
        std::abort();
    }
    // No two tensors share a byte (each size matches its type and shape).
    std::vector<const eexit::gguf::TensorInfo*> by_start;
    for (const auto& t : f.tensors()) by_start.push_back(&t);
    std::sort(by_start.begin(), by_start.end(),
              [](const auto* a, const auto* b) { return a->data.data() < b->data.data(); });
    for (std::size_t i = 1; i < by_start.size(); ++i)
      if (by_start[i - 1]->data.data() + by_start[i - 1]->n_bytes > by_start[i]->data.data())
        std::abort();
    try {
      check_weights(eexit::load_gguf(f));
    } catch (const eexit::error&) {
    }
    try {
      check_tokenizer(eexit::Tokenizer::from_gguf(f));
    } catch (const eexit::error&) {
    }
  } catch (const eexit::error&) {
  }
  return 0;
}
