#pragma once
// llama2.c checkpoints (karpathy/llama2.c export.py), float32 only:
// - legacy v0: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
//   seq_len); a negative vocab_size means the classifier is stored (untied) at the end.
//   Order: embedding, per-kind stacks over layers (rms_att, wq, wk, wv, wo, rms_ffn, w1, w2,
//   w3), rms_final, freq_cis real/imag (seq_len, head_dim/2) each, [classifier].
// - v1: uint32 magic "ak42", int32 version 1, the 7 int32, uint8 shared_classifier, zero
//   padding to 256 bytes. Order: rms_att, rms_ffn, rms_final, embedding, wq, wk, wv, wo,
//   w1, w2, w3 (each stacked over layers), [classifier]; no freq_cis.
// RoPE is the interleaved-pair kind; BOS 1, EOS 2 (the SentencePiece Llama 2 vocabulary).
#include <bit>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "eexit/core/error.hpp"
#include "eexit/model/weights.hpp"

namespace eexit {

namespace detail::llama2c {

inline constexpr std::uint32_t magic = 0x616b3432;  // "ak42" read as a little-endian uint32
inline constexpr std::size_t v1_header_bytes = 256;
// Bounds that keep every size product below 2^63 and catch garbage headers early.
inline constexpr std::int64_t max_dim = 1 << 20;
inline constexpr std::int64_t max_vocab = 1 << 22;
inline constexpr std::int64_t max_layers = 1 << 12;
inline constexpr std::int64_t max_seq = 1 << 24;

inline std::int32_t i32_at(const unsigned char* p) noexcept {
  std::uint32_t v = std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 |
                    std::uint32_t(p[3]) << 24;
  return std::int32_t(v);
}

inline void check(const std::string& file, const char* name, std::int64_t v, std::int64_t hi) {
  if (v < 1 || v > hi)
    throw error(file + ": header field '" + name + "'",
                "value " + std::to_string(v) + " out of range [1, " + std::to_string(hi) + "]");
}

class Reader {
 public:
  Reader(std::ifstream& in, const std::string& file) : in_(in), file_(file) {}
  // Reads count floats into a new vector; the caller checked the file size up front, so a
  // short read means the file changed under us.
  std::vector<float> floats(std::uint64_t count, const char* what) {
    std::vector<float> v(count);
    in_.read(reinterpret_cast<char*>(v.data()), std::streamsize(count * 4));
    if (std::uint64_t(in_.gcount()) != count * 4)
      throw error(file_ + ": tensor '" + what + "'", "short read (file truncated while reading?)");
    return v;
  }
  void skip(std::uint64_t count) { in_.seekg(std::streamoff(count * 4), std::ios::cur); }

 private:
  std::ifstream& in_;
  const std::string& file_;
};

}  // namespace detail::llama2c

inline ModelWeights load_llama2c(const std::string& path) {
  using namespace detail::llama2c;
  static_assert(std::endian::native == std::endian::little, "llama2.c files are little-endian");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw error(path, "cannot open file");
  in.seekg(0, std::ios::end);
  const auto end = in.tellg();
  if (end < 0) throw error(path, "cannot determine the file size");
  const std::uint64_t file_size = std::uint64_t(end);
  in.seekg(0);

  unsigned char hdr[v1_header_bytes] = {};
  in.read(reinterpret_cast<char*>(hdr), sizeof hdr);
  const std::uint64_t got = std::uint64_t(in.gcount());
  in.clear();
  if (got < 28)
    throw error(path, "file too short for a llama2.c header (" + std::to_string(got) + " bytes)");

  const bool v1 = std::uint32_t(i32_at(hdr)) == magic;
  std::uint64_t header_bytes = 28;
  const unsigned char* params = hdr;
  if (v1) {
    if (got < v1_header_bytes) throw error(path, "file too short for a version-1 header");
    const std::int32_t version = i32_at(hdr + 4);
    if (version != 1)
      throw error(path + ": header field 'version'",
                  "version " + std::to_string(version) +
                      " is not supported (only float32 version 1 and legacy version 0)");
    header_bytes = v1_header_bytes;
    params = hdr + 8;
  }

  const std::int64_t dim = i32_at(params), hidden = i32_at(params + 4),
                     n_layers = i32_at(params + 8), n_heads = i32_at(params + 12),
                     n_kv_heads = i32_at(params + 16), seq_len = i32_at(params + 24);
  std::int64_t vocab = i32_at(params + 20);  // int64: negating INT32_MIN must not overflow
  bool shared = true;
  if (v1) {
    shared = params[28] != 0;
  } else if (vocab < 0) {
    shared = false;
    vocab = -vocab;
  }
  check(path, "dim", dim, max_dim);
  check(path, "hidden_dim", hidden, max_dim);
  check(path, "n_layers", n_layers, max_layers);
  check(path, "n_heads", n_heads, dim);
  check(path, "n_kv_heads", n_kv_heads, n_heads);
  check(path, "vocab_size", vocab, max_vocab);
  check(path, "seq_len", seq_len, max_seq);
  // run.c hard-codes BOS 1 and EOS 2: a smaller vocabulary would stop on an id it lacks.
  if (vocab < 3)
    throw error(path + ": header field 'vocab_size'",
                std::to_string(vocab) + " tokens, but BOS 1 and EOS 2 need at least 3");
  if (dim % n_heads != 0)
    throw error(path + ": header field 'n_heads'",
                std::to_string(n_heads) + " does not divide dim " + std::to_string(dim));
  if (n_heads % n_kv_heads != 0)
    throw error(path + ": header field 'n_kv_heads'",
                std::to_string(n_kv_heads) + " does not divide n_heads " + std::to_string(n_heads));
  const std::int64_t head_dim = dim / n_heads;
  if (head_dim % 2 != 0)
    throw error(path + ": header field 'n_heads'",
                "head size " + std::to_string(head_dim) + " is odd (RoPE rotates pairs)");
  const std::int64_t kv_dim = n_kv_heads * head_dim;

  // Every count below is < 2^22 * 2^20 * 2^12 * 3, so no product can overflow 64 bits.
  const std::uint64_t per_layer =
      std::uint64_t(2 * dim + dim * dim + 2 * kv_dim * dim + dim * dim + 3 * dim * hidden);
  std::uint64_t floats =
      std::uint64_t(vocab * dim) + std::uint64_t(n_layers) * per_layer + std::uint64_t(dim);
  if (!v1) floats += std::uint64_t(seq_len * head_dim);  // freq_cis real + imag
  if (!shared) floats += std::uint64_t(vocab * dim);
  const std::uint64_t expected = header_bytes + 4 * floats;
  if (file_size != expected)
    throw error(path, "file size " + std::to_string(file_size) + " does not match the header (" +
                          "expected " + std::to_string(expected) + " bytes for dim " +
                          std::to_string(dim) + ", " + std::to_string(n_layers) +
                          " layers, vocab " + std::to_string(vocab) +
                          (shared ? ", shared" : ", untied") + " classifier)");

  ModelWeights m;
  ModelConfig& c = m.config;
  c.dim = int(dim);
  c.hidden_dim = int(hidden);
  c.n_layers = int(n_layers);
  c.n_heads = int(n_heads);
  c.n_kv_heads = int(n_kv_heads);
  c.head_dim = int(head_dim);
  c.vocab_size = int(vocab);
  c.max_seq_len = int(seq_len);
  c.rope_theta = 10000.0f;
  c.rms_eps = 1e-5f;
  c.rope = rope_style::interleaved;
  c.tied_embeddings = shared;
  c.bos_id = 1;
  c.eos_ids = {2};

  in.seekg(std::streamoff(header_bytes));
  Reader r(in, path);
  const auto L = std::size_t(n_layers);
  m.layers.resize(L);
  const auto D = std::uint64_t(dim), H = std::uint64_t(hidden), KV = std::uint64_t(kv_dim);
  if (v1) {
    for (auto& l : m.layers) l.attn_norm = r.floats(D, "rms_att_weight");
    for (auto& l : m.layers) l.ffn_norm = r.floats(D, "rms_ffn_weight");
    m.final_norm = r.floats(D, "rms_final_weight");
    m.tok_embedding = r.floats(std::uint64_t(vocab) * D, "token_embedding_table");
  } else {
    m.tok_embedding = r.floats(std::uint64_t(vocab) * D, "token_embedding_table");
    for (auto& l : m.layers) l.attn_norm = r.floats(D, "rms_att_weight");
  }
  for (auto& l : m.layers) l.wq = r.floats(D * D, "wq");
  for (auto& l : m.layers) l.wk = r.floats(KV * D, "wk");
  for (auto& l : m.layers) l.wv = r.floats(KV * D, "wv");
  for (auto& l : m.layers) l.wo = r.floats(D * D, "wo");
  if (!v1)
    for (auto& l : m.layers) l.ffn_norm = r.floats(D, "rms_ffn_weight");
  for (auto& l : m.layers) l.w_gate = r.floats(H * D, "w1");
  for (auto& l : m.layers) l.w_down = r.floats(D * H, "w2");
  for (auto& l : m.layers) l.w_up = r.floats(H * D, "w3");
  if (!v1) {
    m.final_norm = r.floats(D, "rms_final_weight");
    // freq_cis: cos/sin tables for theta 10000, recomputed by the model; skip them.
    r.skip(std::uint64_t(seq_len * head_dim));
  }
  if (!shared) m.lm_head = r.floats(std::uint64_t(vocab) * D, "wcls");
  return m;
}

}  // namespace eexit
