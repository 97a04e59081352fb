#pragma once
// Host-side weights as every loader produces them: row-major, nn.Linear layout
// (out_features, in_features). Norms and biases are fp32; the matrices are Weights, kept
// in the precision they were stored in (fp32, bf16, f16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K), so that a
// bf16 checkpoint costs bf16 bytes in memory and per decode step. A backend uploads them once into
// its own buffers.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "eexit/core/dtype.hpp"
#include "eexit/core/error.hpp"
#include "eexit/model/config.hpp"

namespace eexit {

// A weight matrix as loaded: fp32 (a std::vector<float>, as before) or the packed
// elements of another dtype. fp32 weights read and write like the vector they hold, so
// code that builds weights by hand (tests, tools) keeps working.
class Weight {
 public:
  Weight() = default;
  Weight(std::vector<float> v) : f32_(std::move(v)) {}  // NOLINT: implicit on purpose
  Weight& operator=(std::vector<float> v) {
    f32_ = std::move(v);
    type_ = dtype::f32;
    packed_.clear();
    n_ = 0;
    return *this;
  }
  // n elements of type t (not f32) as their little-endian bytes.
  static Weight packed(dtype t, std::size_t n, std::vector<unsigned char> bytes) {
    if (bytes.size() != row_bytes(t, n) || n % block_weights(t))
      throw error("weight", "packed size does not match its type");
    if (t == dtype::f32) {
      std::vector<float> v(n);
      // Zero-element tensors are legal; memcpy must not see their null data(), even for 0.
      if (n) std::memcpy(v.data(), bytes.data(), n * 4);
      return Weight(std::move(v));
    }
    Weight w;
    w.type_ = t;
    w.n_ = n;
    w.packed_ = std::move(bytes);
    return w;
  }

  dtype type() const noexcept { return type_; }
  std::size_t size() const noexcept { return type_ == dtype::f32 ? f32_.size() : n_; }
  bool empty() const noexcept { return size() == 0; }
  // The stored bytes (any type).
  const void* bytes() const noexcept {
    return type_ == dtype::f32 ? static_cast<const void*>(f32_.data()) : packed_.data();
  }
  std::size_t byte_size() const noexcept { return row_bytes(type_, size()); }

  // fp32 access. The const accessors are for type() == f32 (what hand-built weights are;
  // use to_f32() otherwise); the mutable ones widen a packed weight to fp32 first.
  std::vector<float>& f32() { return mut(); }
  const std::vector<float>& f32() const noexcept { return f32_; }
  operator std::vector<float>&() { return mut(); }                      // NOLINT
  operator const std::vector<float>&() const noexcept { return f32_; }  // NOLINT
  float* data() { return mut().data(); }
  const float* data() const noexcept { return f32_.data(); }
  float& operator[](std::size_t i) { return mut()[i]; }
  float operator[](std::size_t i) const noexcept { return f32_[i]; }
  auto begin() { return mut().begin(); }
  auto end() { return mut().end(); }
  auto begin() const noexcept { return f32_.begin(); }
  auto end() const noexcept { return f32_.end(); }

  // The values as fp32, whatever the type (exact: every stored type widens exactly).
  std::vector<float> to_f32() const {
    if (type_ == dtype::f32) return f32_;
    std::vector<float> v(n_);
    convert_to_f32(type_, packed_.data(), v.data(), n_);
    return v;
  }
  // The same weight stored as t: rounded to nearest even when t is a narrower float type,
  // quantized as llama.cpp's reference quantizers do for q8_0 / q4_0 (then size() must be
  // a multiple of 32 and the rows whole blocks: the caller knows the row length).
  Weight converted(dtype t) const {
    if (t == type_) return *this;
    if (is_kquant(t))  // (no quantizer here: K-quant weights come from files as they are)
      throw error("weight", "cannot convert to " + std::string(dtype_name(t)));
    std::vector<float> v = to_f32();
    if (t == dtype::f32) return Weight(std::move(v));
    if (is_quantized(t)) {
      if (v.size() % quant_block)
        throw error("weight", std::string(dtype_name(t)) + " needs a multiple of 32 weights");
      std::vector<unsigned char> b(row_bytes(t, v.size()));
      for (std::size_t k = 0; k < v.size() / quant_block; ++k)
        (t == dtype::q8_0 ? quantize_q8_0 : quantize_q4_0)(
            v.data() + k * quant_block, b.data() + row_bytes(t, k * quant_block));
      return packed(t, v.size(), std::move(b));
    }
    std::vector<unsigned char> b(row_bytes(t, v.size()));
    for (std::size_t i = 0; i < v.size(); ++i) {
      const std::uint16_t h = t == dtype::bf16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
      std::memcpy(b.data() + 2 * i, &h, 2);
    }
    return packed(t, v.size(), std::move(b));
  }

  // Rows ids of this (size() / cols, cols) matrix, in that order, as a (ids.size(), cols)
  // matrix of the same type: the stored bytes copied, so exact for every type (a block type's
  // rows are whole blocks). Throws eexit::error for an id out of range.
  Weight rows(std::span<const std::int32_t> ids, std::size_t cols) const {
    if (cols == 0 || size() % cols || cols % block_weights(type_))
      throw error("weight", "rows: the row length does not divide the matrix");
    const std::size_t n_rows = size() / cols, rb = row_bytes(type_, cols);
    std::vector<unsigned char> out(ids.size() * rb);
    const auto* src = static_cast<const unsigned char*>(bytes());
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] < 0 || std::size_t(ids[i]) >= n_rows)
        throw error("weight", "rows: row " + std::to_string(ids[i]) + " of " +
                                  std::to_string(n_rows) + " does not exist");
      std::memcpy(out.data() + i * rb, src + std::size_t(ids[i]) * rb, rb);
    }
    return packed(type_, ids.size() * cols, std::move(out));
  }

  friend bool operator==(const Weight& a, const Weight& b) noexcept {
    return a.type_ == b.type_ &&
           (a.type_ == dtype::f32 ? a.f32_ == b.f32_ : a.n_ == b.n_ && a.packed_ == b.packed_);
  }
  friend bool operator==(const Weight& a, const std::vector<float>& b) noexcept {
    return a.type_ == dtype::f32 && a.f32_ == b;
  }

 private:
  // One block of 32 weights x -> {f16 d; int8 q[32]}: d = max|x| / 127, q = round(x / d).
  static void quantize_q8_0(const float* x, unsigned char* out) noexcept {
    float amax = 0.0f;
    for (std::size_t j = 0; j < quant_block; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    const std::uint16_t dh = f32_to_f16(d);
    std::memcpy(out, &dh, 2);
    for (std::size_t j = 0; j < quant_block; ++j)
      out[2 + j] = static_cast<unsigned char>(static_cast<std::int8_t>(std::round(x[j] * id)));
  }
  // One block -> {f16 d; u8 q[16]}: d = (the value of largest magnitude) / -8, element j in
  // the low nibble of q[j], element j + 16 in the high one, each stored as q + 8 (0..15).
  static void quantize_q4_0(const float* x, unsigned char* out) noexcept {
    float amax = 0.0f, mx = 0.0f;
    for (std::size_t j = 0; j < quant_block; ++j)
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        mx = x[j];
      }
    const float d = mx / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    const std::uint16_t dh = f32_to_f16(d);
    std::memcpy(out, &dh, 2);
    auto q = [&](float v) { return std::min(15, int(static_cast<std::int8_t>(v * id + 8.5f))); };
    for (std::size_t j = 0; j < quant_block / 2; ++j)
      out[2 + j] = static_cast<unsigned char>(q(x[j]) | q(x[j + quant_block / 2]) << 4);
  }

  std::vector<float>& mut() {
    if (type_ != dtype::f32) *this = to_f32();
    return f32_;
  }

  dtype type_ = dtype::f32;
  std::vector<float> f32_;             // (n) when type_ == f32
  std::vector<unsigned char> packed_;  // row_bytes(type_, n_) otherwise
  std::size_t n_ = 0;
};

struct LayerWeights {
  std::vector<float> attn_norm;   // (dim)
  Weight wq;                      // (n_heads*head_dim, dim)
  Weight wk;                      // (n_kv_heads*head_dim, dim)
  Weight wv;                      // (n_kv_heads*head_dim, dim)
  Weight wo;                      // (dim, n_heads*head_dim)
  std::vector<float> bq, bk, bv;  // (q_dim), (kv_dim), (kv_dim); empty unless qkv_bias
  std::vector<float> ffn_norm;    // (dim)
  Weight w_gate;                  // (hidden_dim, dim)   llama2.c w1
  Weight w_down;                  // (dim, hidden_dim)   llama2.c w2
  Weight w_up;                    // (hidden_dim, dim)   llama2.c w3
};

// One dedicated exit head (ExitConfig::head == dedicated) and/or its classifier.
struct ExitHeadWeights {
  std::vector<float> norm;          // (dim); empty = shared final norm
  Weight proj;                      // (vocab, dim); empty = shared LM head
  std::vector<float> classifier_w;  // (dim); empty unless ExitConfig::classifier
  float classifier_b = 0.0f;
};

struct ModelWeights {
  ModelConfig config;
  Weight tok_embedding;              // (vocab, dim)
  std::vector<LayerWeights> layers;  // n_layers
  std::vector<float> final_norm;     // (dim)
  Weight lm_head;                    // (vocab, dim); empty when tied to tok_embedding
  // One per ExitConfig::exit_layers entry (may be empty when every head is shared and
  // there is no classifier).
  std::vector<ExitHeadWeights> exit_heads;

  // Every matrix stored as t (the --dtype override; norms and biases stay fp32).
  // Quantized types need rows of whole blocks: a matrix whose row length (in_features) is
  // not a multiple of 32 keeps its precision (as llama.cpp falls back per tensor).
  void convert(dtype t) {
    auto c = [&](Weight& w, int in) {
      if (w.empty() || (is_quantized(t) && in % int(quant_block) != 0)) return;
      w = w.converted(t);
    };
    const ModelConfig& k = config;
    c(tok_embedding, k.dim);
    c(lm_head, k.dim);
    for (auto& L : layers) {
      for (Weight* w : {&L.wq, &L.wk, &L.wv, &L.w_gate, &L.w_up}) c(*w, k.dim);
      c(L.wo, k.q_dim());
      c(L.w_down, k.hidden_dim);
    }
    for (auto& h : exit_heads) c(h.proj, k.dim);
  }
};

}  // namespace eexit
