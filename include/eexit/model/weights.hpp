#pragma once
// Host-side weights as every loader produces them: row-major, nn.Linear layout
// (out_features, in_features). Norms and biases are fp32; the matrices are Weights, kept
// in the precision they were stored in (fp32, bf16, f16), so that a bf16 checkpoint costs
// bf16 bytes in memory and per decode step. A backend uploads them once into its own
// buffers.
#include <cstdint>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#include "eexit/core/dtype.hpp"
#include "eexit/core/error.hpp"
#include "eexit/model/config.hpp"

namespace eexit {

// float -> IEEE half with round-to-nearest-even (overflow -> inf, nan stays nan).
inline std::uint16_t f32_to_f16(float f) noexcept {
  return std::bit_cast<std::uint16_t>(static_cast<_Float16>(f));
}

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
    if (t == dtype::f32) {
      std::vector<float> v(n);
      std::memcpy(v.data(), bytes.data(), n * 4);
      return Weight(std::move(v));
    }
    if (bytes.size() != row_bytes(t, n))
      throw error("weight", "packed size does not match its type");
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
  // The same weight stored as t (rounded to nearest even when t is narrower).
  Weight converted(dtype t) const {
    if (t == type_) return *this;
    std::vector<float> v = to_f32();
    if (t == dtype::f32) return Weight(std::move(v));
    std::vector<unsigned char> b(row_bytes(t, v.size()));
    for (std::size_t i = 0; i < v.size(); ++i) {
      const std::uint16_t h = t == dtype::bf16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
      std::memcpy(b.data() + 2 * i, &h, 2);
    }
    return packed(t, v.size(), std::move(b));
  }

  friend bool operator==(const Weight& a, const Weight& b) noexcept {
    return a.type_ == b.type_ &&
           (a.type_ == dtype::f32 ? a.f32_ == b.f32_ : a.n_ == b.n_ && a.packed_ == b.packed_);
  }
  friend bool operator==(const Weight& a, const std::vector<float>& b) noexcept {
    return a.type_ == dtype::f32 && a.f32_ == b;
  }

 private:
  std::vector<float>& mut() {
    if (type_ != dtype::f32) *this = to_f32();
    return f32_;
  }

  dtype type_ = dtype::f32;
  std::vector<float> f32_;             // (n) when type_ == f32
  std::vector<unsigned char> packed_;  // row_bytes(type_, n_) otherwise
  std::size_t n_ = 0;
};

// How a loader stores the matrices: nullopt (auto) keeps each tensor's own precision
// (fp32 files stay fp32); a dtype converts every matrix to it.
struct LoadOptions {
  std::optional<dtype> weights;
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
  void convert(dtype t) {
    auto c = [&](Weight& w) {
      if (!w.empty()) w = w.converted(t);
    };
    c(tok_embedding);
    c(lm_head);
    for (auto& L : layers)
      for (Weight* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_down, &L.w_up}) c(*w);
    for (auto& h : exit_heads) c(h.proj);
  }
};

}  // namespace eexit
