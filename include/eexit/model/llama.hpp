#pragma once
// LlamaModel: a Llama-family decoder (RMSNorm, RoPE, GQA, SwiGLU, optional QKV bias)
// with exit heads, on any backend. forward_layer reads top to bottom like llama2.c's
// forward(); the engine calls it layer by layer so that rows can leave at exit points.
#include <cmath>
#include <cstdint>
#include <numbers>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "eexit/core/dtype.hpp"
#include "eexit/core/error.hpp"
#include "eexit/core/kv_view.hpp"
#include "eexit/model/config.hpp"
#include "eexit/model/weights.hpp"

namespace eexit {

namespace detail {
// RoPE frequencies (head_dim/2), with Llama 3 scaling when configured (config.json's
// rope_scaling, or GGUF's per-frequency factors).
inline std::vector<float> rope_inv_freq(const ModelConfig& c) {
  const int half = c.head_dim / 2;
  std::vector<float> f(static_cast<std::size_t>(half));
  for (int i = 0; i < half; ++i) {
    double inv = 1.0 / std::pow(double(c.rope_theta), double(2 * i) / double(c.head_dim));
    const auto& s = c.rope_scaling;
    if (s.enabled) {
      const double low_wavelen = s.original_max_position / s.low_freq_factor;
      const double high_wavelen = s.original_max_position / s.high_freq_factor;
      const double wavelen = 2.0 * std::numbers::pi / inv;
      if (wavelen > low_wavelen) {
        inv /= s.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (s.original_max_position / wavelen - s.low_freq_factor) /
                              (s.high_freq_factor - s.low_freq_factor);
        inv = (1.0 - smooth) * inv / s.factor + smooth * inv;
      }
    }
    if (!c.rope_freq_factors.empty()) inv /= double(c.rope_freq_factors[std::size_t(i)]);
    f[std::size_t(i)] = float(inv);
  }
  return f;
}
}  // namespace detail

template <class Backend>
class LlamaModel {
 public:
  using backend_type = Backend;
  template <class T>
  using buffer = typename Backend::template buffer<T>;

  // Scratch for one step of up to max_rows rows; the engine owns one.
  struct Workspace {
    std::size_t max_rows = 0;
    buffer<float> xb;    // (rows, dim)      normed input of attention / MLP
    buffer<float> q;     // (rows, q_dim)
    buffer<float> k;     // (rows, kv_dim)
    buffer<float> v;     // (rows, kv_dim)
    buffer<float> att;   // (rows, q_dim)    attention output before wo
    buffer<float> proj;  // (rows, dim)      wo / w_down output
    buffer<float> hb;    // (rows, hidden)   gate, then silu(gate)*up
    buffer<float> hb2;   // (rows, hidden)   up
    buffer<float> fill;  // (rows, n_layers, 2, kv_dim)  K/V of skipped layers; exits only
  };

  LlamaModel(Backend& be, ModelWeights w);

  const ModelConfig& config() const noexcept { return cfg_; }
  Backend& backend() noexcept { return *be_; }
  int n_layers() const noexcept { return cfg_.n_layers; }
  // Layers after which an exit point sits; the last entry is always n_layers - 1.
  std::span<const int> exit_layers() const noexcept { return exit_layers_; }
  int n_exits() const noexcept { return int(exit_layers_.size()); }
  bool has_classifier(int exit) const noexcept { return heads_[std::size_t(exit)].has_classifier; }

  Workspace make_workspace(std::size_t max_rows) {
    Workspace ws;
    ws.max_rows = max_rows;
    const auto R = max_rows;
    ws.xb = be_->template allocate<float>(R * std::size_t(cfg_.dim));
    ws.q = be_->template allocate<float>(R * std::size_t(cfg_.q_dim()));
    ws.k = be_->template allocate<float>(R * std::size_t(cfg_.kv_dim()));
    ws.v = be_->template allocate<float>(R * std::size_t(cfg_.kv_dim()));
    ws.att = be_->template allocate<float>(R * std::size_t(cfg_.q_dim()));
    ws.proj = be_->template allocate<float>(R * std::size_t(cfg_.dim));
    ws.hb = be_->template allocate<float>(R * std::size_t(cfg_.hidden_dim));
    ws.hb2 = be_->template allocate<float>(R * std::size_t(cfg_.hidden_dim));
    if (n_exits() > 1)
      ws.fill = be_->template allocate<float>(R * std::size_t(cfg_.n_layers) * 2 *
                                              std::size_t(cfg_.kv_dim()));
    return ws;
  }

  // x (rows, dim) = token embeddings
  void embed(const std::int32_t* tokens, std::size_t rows, float* x);

  // One transformer block over rows [0, rows) of the residual stream x (rows, dim).
  // Each row's K/V is written into its cache slot before attention reads the cache,
  // so prefill chunks and decode rows take the same path.
  void forward_layer(int l, float* x, std::size_t rows, const RowKv* rk, const KvLayerView& kv,
                     Workspace& ws);

  // Whether forward_layer issues the fused projections (matmul_qkv, matmul_swiglu,
  // matmul_add; the default) or the ops they fuse, one by one. Both give the same bits; the switch
  // is for measuring the fusion side by side (eexit-bench-decode --unfused) and for its tests.
  void set_fused(bool on) noexcept { fused_ = on; }
  bool fused() const noexcept { return fused_; }

  // logits (rows, vocab) of exit point `exit` for hidden states h (rows, dim).
  // The last exit is the model's own final norm + LM head.
  void exit_logits(int exit, const float* h, std::size_t rows, float* logits, Workspace& ws);

  // The draft vocabulary (ExitConfig::draft_vocab): the token id of each column of
  // draft_logits; empty = none (draft passes use exit_logits).
  std::span<const std::int32_t> draft_vocab() const noexcept { return cfg_.early_exit.draft_vocab; }
  // logits (rows, draft_vocab().size()) of exit point `exit` (not the last) for hidden
  // states h (rows, dim): exit_logits' columns draft_vocab(), from a copy of those head
  // rows made at load (the weights' own bytes, so the same values).
  void draft_logits(int exit, const float* h, std::size_t rows, float* logits, Workspace& ws);

  // Classifier confidence of exit `exit` (which must have one): out (rows) =
  // sigmoid(w · rmsnorm(h) + b), with the exit head's norm.
  void exit_classifier(int exit, const float* h, std::size_t rows, float* out, Workspace& ws);

  // The paper's KV fill for rows that exit after layer `exit_layer`: K/V of every skipped
  // layer j > exit_layer from the exit hidden states h (rows, dim), in one projection over
  // all rows and layers. Layer j's input norm is folded into its K/V weights
  // (W·(n̂ ⊙ w_j) = (W·diag(w_j))·n̂), so one unit-weight RMSNorm and one matmul serve
  // every layer; RoPE at each row's position and the cache writes follow in one op.
  template <class Cache>
  void kv_fill(int exit_layer, const float* h, std::size_t rows, const RowKv* rk, Cache& cache,
               Workspace& ws) {
    const int first = exit_layer + 1, n_fill = cfg_.n_layers - first;
    if (n_fill <= 0 || rows == 0) return;
    fill_project(first, h, rows, ws);
    views_.clear();
    for (int j = first; j < cfg_.n_layers; ++j) views_.push_back(cache.view(j));
    be_->fill_kv(D(ws.fill), rows, std::size_t(n_fill), rk, views_.data(),
                 std::size_t(cfg_.n_kv_heads), std::size_t(cfg_.head_dim), D(inv_freq_), cfg_.rope);
  }

  // The KV fill (DESIGN.md §3): K/V of layer l for hidden states h (rows, dim), as layer l
  // would have computed them from its input: input norm, K/V projection, RoPE at each
  // row's position; written into the rows' cache slots. Attention and MLP do not run.
  void kv_from_hidden(int l, const float* h, std::size_t rows, const RowKv* rk,
                      const KvLayerView& kv, Workspace& ws);

 private:
  // kv_fill's projection: ws.fill (rows, n_layers - first, 2, kv_dim) = the folded K/V
  // weights of layers first.. applied to rmsnorm(h). Not a template, unlike kv_fill, so an
  // explicit instantiation of the model compiles it (and the matmul kernels) once.
  void fill_project(int first, const float* h, std::size_t rows, Workspace& ws);

  // A weight matrix in the backend's memory, in its stored precision.
  struct Matrix {
    dtype type = dtype::f32;
    std::uint8_t interleave = 0;  // the backend's layout (repack_weights), 0: as stored
    buffer<float> f32;            // (out, in) when type == f32
    buffer<std::uint16_t> h16;    // (out, in) bf16 / f16 bit patterns / blocks otherwise
    WeightView view() const noexcept {
      return type == dtype::f32 ? WeightView(D(f32)) : WeightView(type, D(h16), interleave);
    }
  };
  // Whether the backend's matmul and embed take weights of type t as they are; others
  // are widened to fp32 on upload.
  bool accepts(dtype t) const noexcept {
    if constexpr (requires { Backend::accepts_weights(t); })
      return Backend::accepts_weights(t);
    else
      return t == dtype::f32;
  }
  // Uploads v, (v.size() / cols, cols), in its precision (or widened, see accepts) and
  // frees the host copy, so that peak host memory stays at one copy of the model (and one
  // matrix). A backend with a repack_weights hook may store it in its own layout instead;
  // slice_rows: views are taken at row offsets that are multiples of it (the row count when
  // v is used whole; 0: v is only an embedding table, which stays as stored).
  Matrix upload_matrix(Weight& v, std::size_t cols, std::size_t slice_rows) {
    Matrix m;
    if (!accepts(v.type())) v = v.to_f32();
    m.type = v.type();
    if constexpr (requires {
                    be_->repack_weights(m.h16, m.type, v.bytes(), cols, cols, slice_rows);
                  }) {
      if (m.type != dtype::f32)
        m.interleave =
            be_->repack_weights(m.h16, m.type, v.bytes(), v.size() / cols, cols, slice_rows);
    }
    if (m.interleave) {
      // stored by the backend in its layout
    } else if (m.type == dtype::f32) {
      m.f32 = be_->template allocate<float>(v.size());
      be_->template upload<float>(m.f32, std::span<const float>(v.f32()));
    } else {
      // Every packed type is a whole number of 16-bit words (2-byte elements, 34- and
      // 18-byte blocks), so one buffer type serves them all.
      const auto* p = static_cast<const std::uint16_t*>(v.bytes());
      m.h16 = be_->template allocate<std::uint16_t>(v.byte_size() / 2);
      be_->template upload<std::uint16_t>(m.h16,
                                          std::span<const std::uint16_t>(p, v.byte_size() / 2));
    }
    v = Weight();
    return m;
  }
  struct Layer {
    buffer<float> attn_norm, bq, bk, bv, ffn_norm;
    Matrix wq, wk, wv, wo, w_gate, w_down, w_up;
    bool has_bias = false;
  };
  struct Head {
    Matrix proj, draft_proj;  // draft_proj: proj's draft-vocabulary rows (with a draft vocab)
    buffer<float> norm, classifier_w;
    buffer<float> classifier_b;  // (1)
    bool has_norm = false, has_proj = false, has_classifier = false;
  };

  template <class T>
  static T* D(buffer<T>& b) noexcept {
    return Backend::data(b);
  }
  template <class T>
  static const T* D(const buffer<T>& b) noexcept {
    return Backend::data(b);
  }
  // Stacked, norm-folded K/V weights of every layer for kv_fill: (n_layers, 2, kv_dim, dim),
  // stored in the K/V weights' own precision (folding rounds them once more; the fill is
  // an approximation of the skipped layers' K/V in any case).
  void fold_fill_weights(const ModelWeights& w) {
    const std::size_t dim = std::size_t(cfg_.dim), kvd = std::size_t(cfg_.kv_dim());
    std::vector<float> f(std::size_t(cfg_.n_layers) * 2 * kvd * dim), b;
    has_fill_bias_ = !w.layers[0].bk.empty();
    if (has_fill_bias_) b.resize(std::size_t(cfg_.n_layers) * 2 * kvd);
    for (std::size_t j = 0; j < w.layers.size(); ++j) {
      const auto& L = w.layers[j];
      for (int kv = 0; kv < 2; ++kv) {
        const std::vector<float> W = (kv == 0 ? L.wk : L.wv).to_f32();
        float* dst = f.data() + (j * 2 + std::size_t(kv)) * kvd * dim;
        for (std::size_t o = 0; o < kvd; ++o)
          for (std::size_t i = 0; i < dim; ++i) dst[o * dim + i] = W[o * dim + i] * L.attn_norm[i];
        if (has_fill_bias_) {
          const auto& B = kv == 0 ? L.bk : L.bv;
          std::copy(B.begin(), B.end(), b.begin() + long((j * 2 + std::size_t(kv)) * kvd));
        }
      }
    }
    // K-quant K/V weights fold into Q8_0 (there is no K-quant quantizer here).
    const dtype t = is_kquant(w.layers[0].wk.type()) ? dtype::q8_0 : w.layers[0].wk.type();
    Weight fw(std::move(f));
    if (!is_quantized(t) || dim % quant_block == 0) fw = fw.converted(t);
    fill_w_ = upload_matrix(fw, dim, 2 * kvd);  // kv_fill takes views at layer boundaries
    if (has_fill_bias_) {
      fill_b_ = be_->template allocate<float>(b.size());
      be_->template upload<float>(fill_b_, std::span<const float>(b));
    }
  }

  WeightView lm_head() const noexcept {
    return has_lm_head_ ? lm_head_.view() : tok_embedding_.view();
  }

  void qkv(const Layer& L, const float* xb, std::size_t rows, float* q, float* k, float* v) {
    const std::size_t dim = std::size_t(cfg_.dim);
    if (fused_) {
      be_->matmul_qkv(xb, rows, dim, L.wq.view(), L.wk.view(), L.wv.view(),
                      std::size_t(cfg_.q_dim()), std::size_t(cfg_.kv_dim()), q, k, v,
                      L.has_bias ? D(L.bq) : nullptr, L.has_bias ? D(L.bk) : nullptr,
                      L.has_bias ? D(L.bv) : nullptr);
      return;
    }
    be_->matmul(xb, rows, dim, L.wq.view(), std::size_t(cfg_.q_dim()), q,
                L.has_bias ? D(L.bq) : nullptr);
    be_->matmul(xb, rows, dim, L.wk.view(), std::size_t(cfg_.kv_dim()), k,
                L.has_bias ? D(L.bk) : nullptr);
    be_->matmul(xb, rows, dim, L.wv.view(), std::size_t(cfg_.kv_dim()), v,
                L.has_bias ? D(L.bv) : nullptr);
  }

  // Shapes were checked by the loader; this guards weights built by hand (tests, tools).
  // c: the config (w.config has been moved into cfg_ by then).
  static void validate(const ModelConfig& c, const ModelWeights& w) {
    if (c.dim <= 0 || c.n_layers <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 || c.head_dim <= 0 ||
        c.vocab_size <= 0 || c.hidden_dim <= 0 || c.max_seq_len <= 0 || c.n_heads % c.n_kv_heads)
      throw error("model config", "invalid dimensions");
    if (c.head_dim % 2) throw error("model config", "head_dim must be even for RoPE");
    auto need = [](const auto& v, std::size_t n, const std::string& what) {
      if (v.size() != n)
        throw error(what,
                    "has " + std::to_string(v.size()) + " elements, expected " + std::to_string(n));
    };
    const std::size_t dim = std::size_t(c.dim), qd = std::size_t(c.q_dim()),
                      kvd = std::size_t(c.kv_dim()), hid = std::size_t(c.hidden_dim),
                      voc = std::size_t(c.vocab_size);
    need(w.tok_embedding, voc * dim, "tok_embedding");
    if (w.layers.size() != std::size_t(c.n_layers)) throw error("layers", "count != n_layers");
    for (std::size_t i = 0; i < w.layers.size(); ++i) {
      const auto& L = w.layers[i];
      const std::string p = "layers." + std::to_string(i) + ".";
      need(L.attn_norm, dim, p + "attn_norm");
      need(L.wq, qd * dim, p + "wq");
      need(L.wk, kvd * dim, p + "wk");
      need(L.wv, kvd * dim, p + "wv");
      need(L.wo, dim * qd, p + "wo");
      need(L.ffn_norm, dim, p + "ffn_norm");
      need(L.w_gate, hid * dim, p + "w_gate");
      need(L.w_down, dim * hid, p + "w_down");
      need(L.w_up, hid * dim, p + "w_up");
      if (!L.bq.empty() || !L.bk.empty() || !L.bv.empty()) {
        need(L.bq, qd, p + "bq");
        need(L.bk, kvd, p + "bk");
        need(L.bv, kvd, p + "bv");
      }
    }
    need(w.final_norm, dim, "final_norm");
    if (!w.lm_head.empty()) need(w.lm_head, voc * dim, "lm_head");
    const auto& ex = c.early_exit.exit_layers;
    for (std::size_t i = 0; i < ex.size(); ++i)
      if (ex[i] < 0 || ex[i] >= c.n_layers - 1 || (i && ex[i] <= ex[i - 1]))
        throw error("early_exit.exit_layers", "must be increasing layer indices below n_layers-1");
    if (w.exit_heads.size() > ex.size()) throw error("exit_heads", "more heads than exit points");
    for (std::size_t e = 0; e < w.exit_heads.size(); ++e) {
      const auto& h = w.exit_heads[e];
      const std::string p = "exit_heads." + std::to_string(e) + ".";
      if (!h.norm.empty()) need(h.norm, dim, p + "norm");
      if (!h.proj.empty()) need(h.proj, voc * dim, p + "proj");
      if (!h.classifier_w.empty()) need(h.classifier_w, dim, p + "classifier");
    }
  }

  Backend* be_;
  ModelConfig cfg_;
  Matrix tok_embedding_, lm_head_, fill_w_;
  Matrix draft_head_;  // the LM head's draft-vocabulary rows (with a draft vocab and exits)
  buffer<float> final_norm_, inv_freq_, ones_, fill_b_;
  bool has_lm_head_ = false, has_fill_bias_ = false, fused_ = true;
  std::vector<KvLayerView> views_;
  std::vector<Layer> layers_;
  std::vector<Head> heads_;
  std::vector<int> exit_layers_;
};

// ---- member definitions -----------------------------------------------------------------
// Out of the class body, so they are not implicitly inline: a program (this repository's
// tests, samples and benchmarks) can compile LlamaModel<CpuBackend> once, in one translation
// unit, and keep every other one from instantiating it again (eexit/instantiate.hpp).

template <class Backend>
LlamaModel<Backend>::LlamaModel(Backend& be, ModelWeights w) : be_(&be), cfg_(std::move(w.config)) {
  validate(cfg_, w);
  if (!cfg_.early_exit.exit_layers.empty()) fold_fill_weights(w);
  auto up = [&](std::vector<float>& v) {
    auto b = be_->template allocate<float>(v.size());
    be_->template upload<float>(b, std::span<const float>(v));
    std::vector<float>().swap(v);  // keep peak host memory at one copy
    return b;
  };
  const std::size_t dim = std::size_t(cfg_.dim), qd = std::size_t(cfg_.q_dim()),
                    kvd = std::size_t(cfg_.kv_dim()), hid = std::size_t(cfg_.hidden_dim);
  const std::size_t voc = std::size_t(cfg_.vocab_size);
  // The draft vocabulary's rows of the shared LM head, copied before it is uploaded (and the
  // host copy freed); exits with a head of their own get theirs below.
  const auto& dv = cfg_.early_exit.draft_vocab;
  if (!dv.empty() && !cfg_.early_exit.exit_layers.empty()) {
    Weight rows = (w.lm_head.empty() ? w.tok_embedding : w.lm_head).rows(dv, dim);
    draft_head_ = upload_matrix(rows, dim, dv.size());
  }
  // The embedding table is also the LM head when there is none (tied).
  tok_embedding_ = upload_matrix(w.tok_embedding, dim, w.lm_head.empty() ? voc : 0);
  layers_.reserve(w.layers.size());
  for (auto& lw : w.layers) {
    Layer L;
    L.attn_norm = up(lw.attn_norm);
    L.wq = upload_matrix(lw.wq, dim, qd);
    L.wk = upload_matrix(lw.wk, dim, kvd);
    L.wv = upload_matrix(lw.wv, dim, kvd);
    L.wo = upload_matrix(lw.wo, qd, dim);
    L.has_bias = !lw.bq.empty();
    if (L.has_bias) {
      L.bq = up(lw.bq);
      L.bk = up(lw.bk);
      L.bv = up(lw.bv);
    }
    L.ffn_norm = up(lw.ffn_norm);
    L.w_gate = upload_matrix(lw.w_gate, dim, hid);
    L.w_down = upload_matrix(lw.w_down, hid, dim);
    L.w_up = upload_matrix(lw.w_up, dim, hid);
    layers_.push_back(std::move(L));
  }
  final_norm_ = up(w.final_norm);
  has_lm_head_ = !w.lm_head.empty();
  if (has_lm_head_) lm_head_ = upload_matrix(w.lm_head, dim, voc);
  exit_layers_ = cfg_.early_exit.exit_layers;
  exit_layers_.push_back(cfg_.n_layers - 1);
  heads_.resize(exit_layers_.size());
  for (std::size_t e = 0; e < w.exit_heads.size() && e + 1 < exit_layers_.size(); ++e) {
    auto& h = w.exit_heads[e];
    auto& H = heads_[e];
    H.has_norm = !h.norm.empty();
    if (H.has_norm) H.norm = up(h.norm);
    H.has_proj = !h.proj.empty();
    if (H.has_proj && !dv.empty()) {
      Weight rows = h.proj.rows(dv, dim);
      H.draft_proj = upload_matrix(rows, dim, dv.size());
    }
    if (H.has_proj) H.proj = upload_matrix(h.proj, dim, voc);
    H.has_classifier = !h.classifier_w.empty();
    if (H.has_classifier) {
      H.classifier_w = up(h.classifier_w);
      // The bias is an op operand like the weights: backend memory, not a host float.
      std::vector<float> b{h.classifier_b};
      H.classifier_b = up(b);
    }
  }
  std::vector<float> ones(std::size_t(cfg_.dim), 1.0f);
  ones_ = be_->template allocate<float>(ones.size());
  be_->template upload<float>(ones_, std::span<const float>(ones));
  auto f = detail::rope_inv_freq(cfg_);
  inv_freq_ = be_->template allocate<float>(f.size());
  be_->template upload<float>(inv_freq_, std::span<const float>(f));
}

template <class Backend>
void LlamaModel<Backend>::embed(const std::int32_t* tokens, std::size_t rows, float* x) {
  be_->embed(tokens, rows, tok_embedding_.view(), std::size_t(cfg_.dim), x);
}

template <class Backend>
void LlamaModel<Backend>::forward_layer(int l, float* x, std::size_t rows, const RowKv* rk,
                                        const KvLayerView& kv, Workspace& ws) {
  const auto& L = layers_[std::size_t(l)];
  const std::size_t dim = std::size_t(cfg_.dim), hd = std::size_t(cfg_.head_dim);
  const std::size_t qd = std::size_t(cfg_.q_dim());
  const std::size_t hidden = std::size_t(cfg_.hidden_dim);
  // attention
  be_->rmsnorm(x, D(L.attn_norm), D(ws.xb), rows, dim, cfg_.rms_eps);
  qkv(L, D(ws.xb), rows, D(ws.q), D(ws.k), D(ws.v));
  be_->rope(D(ws.q), rows, std::size_t(cfg_.n_heads), hd, rk, D(inv_freq_), cfg_.rope);
  be_->rope(D(ws.k), rows, std::size_t(cfg_.n_kv_heads), hd, rk, D(inv_freq_), cfg_.rope);
  be_->store_kv(D(ws.k), D(ws.v), rows, rk, kv);
  be_->attention(D(ws.q), D(ws.att), rows, std::size_t(cfg_.n_heads), std::size_t(cfg_.n_kv_heads),
                 hd, rk, kv);
  if (fused_) {
    be_->matmul_add(D(ws.att), rows, qd, L.wo.view(), dim, D(ws.proj), x);
  } else {
    be_->matmul(D(ws.att), rows, qd, L.wo.view(), dim, D(ws.proj));
    be_->add(x, D(ws.proj), rows * dim);
  }
  // SwiGLU MLP
  be_->rmsnorm(x, D(L.ffn_norm), D(ws.xb), rows, dim, cfg_.rms_eps);
  if (fused_) {
    be_->matmul_swiglu(D(ws.xb), rows, dim, L.w_gate.view(), L.w_up.view(), hidden, D(ws.hb),
                       D(ws.hb2));
    be_->matmul_add(D(ws.hb), rows, hidden, L.w_down.view(), dim, D(ws.proj), x);
    return;
  }
  be_->matmul(D(ws.xb), rows, dim, L.w_gate.view(), hidden, D(ws.hb));
  be_->matmul(D(ws.xb), rows, dim, L.w_up.view(), hidden, D(ws.hb2));
  be_->swiglu(D(ws.hb), D(ws.hb2), D(ws.hb), rows * hidden);
  be_->matmul(D(ws.hb), rows, hidden, L.w_down.view(), dim, D(ws.proj));
  be_->add(x, D(ws.proj), rows * dim);
}

template <class Backend>
void LlamaModel<Backend>::exit_logits(int exit, const float* h, std::size_t rows, float* logits,
                                      Workspace& ws) {
  const auto& H = heads_[std::size_t(exit)];
  const bool last = exit == n_exits() - 1;
  const float* norm = (!last && H.has_norm) ? D(H.norm) : D(final_norm_);
  const WeightView proj = (!last && H.has_proj) ? H.proj.view() : lm_head();
  be_->rmsnorm(h, norm, D(ws.xb), rows, std::size_t(cfg_.dim), cfg_.rms_eps);
  be_->matmul(D(ws.xb), rows, std::size_t(cfg_.dim), proj, std::size_t(cfg_.vocab_size), logits);
}

template <class Backend>
void LlamaModel<Backend>::draft_logits(int exit, const float* h, std::size_t rows, float* logits,
                                       Workspace& ws) {
  const auto& dv = cfg_.early_exit.draft_vocab;
  if (dv.empty() || exit < 0 || exit + 1 >= n_exits())
    throw error("draft_logits", "needs a draft vocabulary and an exit point before the last");
  const auto& H = heads_[std::size_t(exit)];
  const float* norm = H.has_norm ? D(H.norm) : D(final_norm_);
  const WeightView proj = H.has_proj ? H.draft_proj.view() : draft_head_.view();
  be_->rmsnorm(h, norm, D(ws.xb), rows, std::size_t(cfg_.dim), cfg_.rms_eps);
  be_->matmul(D(ws.xb), rows, std::size_t(cfg_.dim), proj, dv.size(), logits);
}

template <class Backend>
void LlamaModel<Backend>::exit_classifier(int exit, const float* h, std::size_t rows, float* out,
                                          Workspace& ws) {
  const auto& H = heads_[std::size_t(exit)];
  if (!H.has_classifier) throw error("exit " + std::to_string(exit), "has no classifier head");
  const float* norm = H.has_norm ? D(H.norm) : D(final_norm_);
  be_->rmsnorm(h, norm, D(ws.xb), rows, std::size_t(cfg_.dim), cfg_.rms_eps);
  be_->matmul(D(ws.xb), rows, std::size_t(cfg_.dim), D(H.classifier_w), 1, out, D(H.classifier_b));
  be_->sigmoid(out, rows);
}

template <class Backend>
void LlamaModel<Backend>::kv_from_hidden(int l, const float* h, std::size_t rows, const RowKv* rk,
                                         const KvLayerView& kv, Workspace& ws) {
  const auto& L = layers_[std::size_t(l)];
  const std::size_t dim = std::size_t(cfg_.dim), kvd = std::size_t(cfg_.kv_dim());
  be_->rmsnorm(h, D(L.attn_norm), D(ws.xb), rows, dim, cfg_.rms_eps);
  be_->matmul(D(ws.xb), rows, dim, L.wk.view(), kvd, D(ws.k), L.has_bias ? D(L.bk) : nullptr);
  be_->matmul(D(ws.xb), rows, dim, L.wv.view(), kvd, D(ws.v), L.has_bias ? D(L.bv) : nullptr);
  be_->rope(D(ws.k), rows, std::size_t(cfg_.n_kv_heads), std::size_t(cfg_.head_dim), rk,
            D(inv_freq_), cfg_.rope);
  be_->store_kv(D(ws.k), D(ws.v), rows, rk, kv);
}

template <class Backend>
void LlamaModel<Backend>::fill_project(int first, const float* h, std::size_t rows, Workspace& ws) {
  const std::size_t dim = std::size_t(cfg_.dim), kvd = std::size_t(cfg_.kv_dim());
  const std::size_t width = std::size_t(cfg_.n_layers - first) * 2 * kvd;
  be_->rmsnorm(h, D(ones_), D(ws.xb), rows, dim, cfg_.rms_eps);
  const std::size_t off = std::size_t(first) * 2 * kvd;
  be_->matmul(D(ws.xb), rows, dim, fill_w_.view().rows_from(off, dim), width, D(ws.fill),
              has_fill_bias_ ? D(fill_b_) + off : nullptr);
}

}  // namespace eexit

// Compile-once builds (eexit/instantiate.hpp): with EEXIT_EXTERN_TEMPLATES defined, no
// translation unit instantiates the CPU model's members; the one that includes
// eexit/instantiate.hpp does.
#if defined(EEXIT_EXTERN_TEMPLATES)
#include "eexit/backend/cpu.hpp"
namespace eexit {
extern template class LlamaModel<CpuBackend>;
}  // namespace eexit
#endif
