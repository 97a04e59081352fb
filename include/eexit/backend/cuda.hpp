#pragma once
// CudaBackend: the same ops as CpuBackend (the reference) on an NVIDIA GPU: cuBLAS GEMMs
// and the kernels of kernels/*.cuh, all on one CUDA stream. This header is plain C++ and
// compiles with g++ alone (DESIGN.md §6): the launchers it declares are defined in the one
// nvcc translation unit kernels/eexit_kernels.cu (library eexit_cuda; link eexit::cuda).
//
// Memory conventions (the same calls as CpuBackend, so the model and engine run unchanged):
// - float buffers and the float pointers ops take are DEVICE memory (buffer<T>, data()).
// - index arrays (embed tokens, gather_rows indices), RowKv arrays and their block tables,
//   and KvLayerView arrays (fill_kv) are HOST memory: they come from the scheduler. The
//   backend packs them and stages them to the device itself; a RowKv array whose content
//   equals the last one staged (the same step's next layer) is not copied again.
// - KvLayerView::k / v point into device memory (the cache's storage is a backend buffer).
//
// Weights: Options::weights = weight_dtype::bf16 keeps, for every uploaded float buffer of
// at least Options::bf16_min_elements elements, a bf16 copy; matmul with a weight pointer
// inside such a buffer runs cublasGemmEx on bf16 inputs with fp32 accumulation and output
// (activations are rounded to bf16 on the way in). The fp32 copy stays: the embedding
// reads it and fp32 parity runs compare against it.
//
// The step stays on the device except: the staged index/metadata uploads (bytes), and the
// downloads the engine asks for. exit_scores / argmax reduce a row of logits to a few
// bytes on the device so an exit decision needs no logits on the host.
//
// CUDA graphs: not captured yet. A decode step's shapes change every step (row count,
// each row's position and block table, which rows leave at an exit point), and the
// metadata is staged from pageable host memory, which stream capture does not allow; a
// graph per (row count) bucket over device-resident, pinned-staged metadata is the next step.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <map>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "eexit/core/dtype.hpp"
#include "eexit/core/error.hpp"
#include "eexit/core/kv_view.hpp"
#include "eexit/model/config.hpp"

namespace eexit {

enum class weight_dtype : std::uint8_t { f32, bf16 };

namespace detail::cuda {

// Stream, cuBLAS handle and scratch of one backend; defined in kernels/eexit_kernels.cu.
struct Context;

// Devices visible to the runtime; 0 when there is no driver or no device (never throws).
int device_count() noexcept;
// Throws eexit::error when there is no device or `device` is out of range.
Context* create(int device);
void destroy(Context* c) noexcept;
std::string device_name(const Context* c);
void mem_info(Context* c, std::size_t& free_bytes, std::size_t& total_bytes);

// Memory. dmalloc throws eexit::error("cuda", "out of device memory ...") naming `what`.
void* dmalloc(Context* c, std::size_t bytes, const char* what);
void dfree(Context* c, void* p) noexcept;
// Host -> device, ordered on the stream; src may be reused as soon as this returns.
void h2d(Context* c, void* dst, const void* src, std::size_t bytes);
// Device -> host; waits for the stream (the result is on the host when this returns).
void d2h(Context* c, void* dst, const void* src, std::size_t bytes);
void d2d(Context* c, void* dst, const void* src, std::size_t bytes);
void fill_f32(Context* c, float* p, std::size_t n, float value);
void synchronize(Context* c);
void to_bf16(Context* c, const float* src, void* dst, std::size_t n);

// Row metadata, packed by the backend (see CudaBackend::stage_rows): int32
//   [0, rows)        position of each row
//   [rows, 2 rows)   offset into this array of the row's block table
//   [2 rows, ...)    block tables, blocks 0 .. pos / block_size of each row
// y (rows, out) = x (rows, in) · Wᵀ (+ bias), fp32 in/out, fp32 compute (no TF32).
void gemm_f32(Context* c, const float* x, std::size_t rows, std::size_t in, const float* w,
              std::size_t out, float* y, const float* bias);
// The same with W (out, in) in bf16; x is rounded to bf16 in context scratch.
void gemm_bf16(Context* c, const float* x, std::size_t rows, std::size_t in, const void* w,
               std::size_t out, float* y, const float* bias);
void rmsnorm(Context* c, const float* x, const float* w, float* y, std::size_t rows,
             std::size_t dim, float eps);
void rope(Context* c, float* x, std::size_t rows, std::size_t n_heads, std::size_t head_dim,
          const std::int32_t* meta, const float* inv_freq, bool interleaved);
void store_kv(Context* c, const float* k, const float* v, std::size_t rows,
              const std::int32_t* meta, float* kc, float* vc, int block_size, int kv_dim);
void attention(Context* c, const float* q, float* out, std::size_t rows, std::size_t n_heads,
               std::size_t n_kv_heads, std::size_t head_dim, const std::int32_t* meta,
               const float* kc, const float* vc, int block_size, int kv_dim);
void swiglu(Context* c, const float* gate, const float* up, float* out, std::size_t n);
void add(Context* c, float* x, const float* y, std::size_t n);
void embed(Context* c, const std::int32_t* tokens, std::size_t n, const float* table,
           std::size_t dim, float* out);
void gather_rows(Context* c, const float* src, const std::int32_t* idx, std::size_t n,
                 std::size_t dim, float* dst);
void sigmoid(Context* c, float* x, std::size_t n);
// views: device array of 2 * n_fill pointers (K of fill layer f at 2f, V at 2f + 1).
void fill_kv(Context* c, const float* kv, std::size_t rows, std::size_t n_fill,
             const std::int32_t* meta, float* const* views, int block_size, std::size_t n_kv_heads,
             std::size_t head_dim, const float* inv_freq, bool interleaved);
// Per row of logits (rows, vocab), one pass: out (rows, 3) = max probability, top-1 minus
// top-2 probability, entropy (nats); top1 (rows) = argmax (ties -> lowest id).
void exit_scores(Context* c, const float* logits, std::size_t rows, std::size_t vocab, float* out,
                 std::int32_t* top1);
void argmax(Context* c, const float* logits, std::size_t rows, std::size_t vocab,
            std::int32_t* out);
// Sampling on the device: per row, temperature, then top-k (0 = off), then top-p (1 =
// off), one uniform u (rows) in [0, 1) per row; out (rows) = token ids.
void sample_top_k_top_p(Context* c, const float* logits, std::size_t rows, std::size_t vocab,
                        float temperature, int top_k, float top_p, const float* u,
                        std::int32_t* out);

}  // namespace detail::cuda

class CudaBackend;
namespace detail::cuda {
// Tells `be` that the float buffer at p is being freed (defined after CudaBackend).
void forget_bf16_copy(CudaBackend* be, const void* p) noexcept;
}  // namespace detail::cuda

// RAII device memory of n elements of T. Move-only; the default is empty.
template <class T>
class CudaBuffer {
 public:
  CudaBuffer() = default;
  CudaBuffer(detail::cuda::Context* c, std::size_t n, const char* what = "buffer")
      : ctx_(c), n_(n) {
    if (n) p_ = static_cast<T*>(detail::cuda::dmalloc(c, n * sizeof(T), what));
  }
  CudaBuffer(const CudaBuffer&) = delete;
  CudaBuffer& operator=(const CudaBuffer&) = delete;
  CudaBuffer(CudaBuffer&& o) noexcept
      : ctx_(std::exchange(o.ctx_, nullptr)),
        p_(std::exchange(o.p_, nullptr)),
        n_(std::exchange(o.n_, 0)),
        bf16_owner_(std::exchange(o.bf16_owner_, nullptr)) {}
  CudaBuffer& operator=(CudaBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      ctx_ = std::exchange(o.ctx_, nullptr);
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
      bf16_owner_ = std::exchange(o.bf16_owner_, nullptr);
    }
    return *this;
  }
  ~CudaBuffer() { reset(); }

  T* data() noexcept { return p_; }
  const T* data() const noexcept { return p_; }
  std::size_t size() const noexcept { return n_; }
  bool empty() const noexcept { return n_ == 0; }

 private:
  friend class CudaBackend;
  void reset() noexcept {
    if (p_ && bf16_owner_) detail::cuda::forget_bf16_copy(bf16_owner_, p_);
    if (p_) detail::cuda::dfree(ctx_, p_);
    p_ = nullptr;
    n_ = 0;
    bf16_owner_ = nullptr;
  }
  detail::cuda::Context* ctx_ = nullptr;
  T* p_ = nullptr;
  std::size_t n_ = 0;
  // The backend holding a bf16 copy of this (float) buffer's contents, if any: the copy
  // must go when this memory does, or it stays allocated and a later buffer at the same
  // address would be multiplied with the old weights.
  CudaBackend* bf16_owner_ = nullptr;
};

class CudaBackend {
 public:
  template <class T>
  using buffer = CudaBuffer<T>;
  static constexpr const char* name = "cuda";

  struct Options {
    int device = 0;
    weight_dtype weights = weight_dtype::f32;
    std::size_t bf16_min_elements = 1 << 16;  // smaller uploads (norms, biases) stay fp32
  };

  // Throws eexit::error when no CUDA device is present.
  CudaBackend() : CudaBackend(Options{}) {}
  explicit CudaBackend(Options opt) : opt_(opt), ctx_(detail::cuda::create(opt.device)) {}
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;
  ~CudaBackend() {
    // Buffers the backend owns go before the context they were allocated from.
    bf16_.clear();
    meta_dev_ = {};
    idx_dev_ = {};
    views_dev_ = {};
    detail::cuda::destroy(ctx_);
  }

  static int device_count() noexcept { return detail::cuda::device_count(); }
  static bool available() noexcept { return device_count() > 0; }
  std::string device_name() const { return detail::cuda::device_name(ctx_); }
  const Options& options() const noexcept { return opt_; }
  detail::cuda::Context* context() noexcept { return ctx_; }
  void mem_info(std::size_t& free_bytes, std::size_t& total_bytes) {
    detail::cuda::mem_info(ctx_, free_bytes, total_bytes);
  }

  // ---- memory --------------------------------------------------------------------
  template <class T>
  buffer<T> allocate(std::size_t n) {
    buffer<T> b(ctx_, n);
    forget_shadows(b.data(), n * sizeof(T));
    return b;
  }
  template <class T>
  void upload(buffer<T>& dst, std::span<const T> src) {
    if (dst.size() != src.size()) dst = allocate<T>(src.size());
    if (!src.empty()) detail::cuda::h2d(ctx_, dst.data(), src.data(), src.size_bytes());
    if constexpr (std::is_same_v<T, float>) {
      if (opt_.weights == weight_dtype::bf16 && src.size() >= opt_.bf16_min_elements) {
        Shadow s{src.size(), buffer<std::uint16_t>(ctx_, src.size(), "bf16 weights")};
        detail::cuda::to_bf16(ctx_, dst.data(), s.data.data(), src.size());
        bf16_.insert_or_assign(dst.data(), std::move(s));
        dst.bf16_owner_ = this;
      }
    }
  }
  template <class T>
  void download(std::span<T> dst, const buffer<T>& src) {
    const std::size_t n = std::min(dst.size(), src.size());
    if (n) detail::cuda::d2h(ctx_, dst.data(), src.data(), n * sizeof(T));
  }
  // n elements of device memory at src into host dst (waits for the stream).
  template <class T>
  void download(T* dst, const T* src, std::size_t n) {
    if (n) detail::cuda::d2h(ctx_, dst, src, n * sizeof(T));
  }
  template <class T>
  void upload(T* dst, const T* src, std::size_t n) {
    if (n) detail::cuda::h2d(ctx_, dst, src, n * sizeof(T));
  }
  void synchronize() { detail::cuda::synchronize(ctx_); }
  // n elements at device pointer p, readable on the host: downloaded into staging (the
  // stream waited for). The engine asks only for what a policy or sampler reads.
  template <class T>
  const T* host_view(const T* p, std::size_t n, std::vector<T>& staging) {
    staging.resize(n);
    if (n) download(staging.data(), p, n);
    return staging.data();
  }
  template <class T>
  static T* data(buffer<T>& b) noexcept {
    return b.data();
  }
  template <class T>
  static const T* data(const buffer<T>& b) noexcept {
    return b.data();
  }
  // x (n) = value (the KV storage's poison hook uses it).
  void fill(float* x, std::size_t n, float value) { detail::cuda::fill_f32(ctx_, x, n, value); }

  // Sizes staging for steps of up to max_rows rows whose block tables hold up to
  // max_blocks blocks, so that a step allocates nothing (they otherwise grow on demand).
  void reserve_staging(std::size_t max_rows, std::size_t max_blocks_per_row,
                       std::size_t max_fill_layers = 0) {
    // A new meta_dev_ holds nothing yet: what was staged must be staged again.
    if (grow(meta_dev_, 2 * max_rows + max_rows * max_blocks_per_row)) {
      meta_staged_.clear();
      staged_rows_ = 0;
    }
    grow(idx_dev_, max_rows);
    grow(views_dev_, 2 * max_fill_layers);
  }

  // ---- ops (CpuBackend's signatures) -----------------------------------------------
  // Weights the model uploads as stored; others arrive widened to fp32 (their bf16
  // shadow, Options::weights, still applies).
  static constexpr bool accepts_weights(dtype t) noexcept { return t == dtype::f32; }

  void matmul(const float* x, std::size_t rows, std::size_t in, WeightView wv, std::size_t out,
              float* y, const float* bias = nullptr) {
    if (rows == 0) return;
    if (wv.type == dtype::bf16) {  // a bf16 matrix uploaded by the caller as it is
      detail::cuda::gemm_bf16(ctx_, x, rows, in, wv.data, out, y, bias);
      return;
    }
    const float* w = wv.f32();
    if (const void* wb = bf16_weight(w)) {
      detail::cuda::gemm_bf16(ctx_, x, rows, in, wb, out, y, bias);
      return;
    }
    detail::cuda::gemm_f32(ctx_, x, rows, in, w, out, y, bias);
  }
  void rmsnorm(const float* x, const float* w, float* y, std::size_t rows, std::size_t dim,
               float eps) {
    if (rows) detail::cuda::rmsnorm(ctx_, x, w, y, rows, dim, eps);
  }
  void rope(float* x, std::size_t rows, std::size_t n_heads, std::size_t head_dim,
            const RowKv* rowkv, const float* inv_freq, rope_style style) {
    if (!rows) return;
    // rope reads positions only: no block tables needed, but the packed form is shared.
    const std::int32_t* meta = stage_rows(rowkv, rows, 0);
    detail::cuda::rope(ctx_, x, rows, n_heads, head_dim, meta, inv_freq,
                       style == rope_style::interleaved);
  }
  void store_kv(const float* k, const float* v, std::size_t rows, const RowKv* rowkv,
                const KvLayerView& cache) {
    if (!rows) return;
    const std::int32_t* meta = stage_rows(rowkv, rows, cache.block_size);
    detail::cuda::store_kv(ctx_, k, v, rows, meta, cache.k, cache.v, cache.block_size,
                           cache.kv_dim);
  }
  void attention(const float* q, float* out, std::size_t rows, std::size_t n_heads,
                 std::size_t n_kv_heads, std::size_t head_dim, const RowKv* rowkv,
                 const KvLayerView& cache) {
    if (!rows) return;
    if (head_dim > 256 || head_dim % 2)
      throw error("cuda attention", "head_dim must be even and at most 256");
    const std::int32_t* meta = stage_rows(rowkv, rows, cache.block_size);
    detail::cuda::attention(ctx_, q, out, rows, n_heads, n_kv_heads, head_dim, meta, cache.k,
                            cache.v, cache.block_size, cache.kv_dim);
  }
  void swiglu(const float* gate, const float* up, float* out, std::size_t n) {
    if (n) detail::cuda::swiglu(ctx_, gate, up, out, n);
  }
  void add(float* x, const float* y, std::size_t n) {
    if (n) detail::cuda::add(ctx_, x, y, n);
  }
  // The fused projections of CpuBackend, as the ops in sequence: on the GPU each op is
  // one launch on the stream and the intermediates stay in device memory (a fused
  // epilogue in the GEMM would save the extra pass; not done).
  void matmul_qkv(const float* x, std::size_t rows, std::size_t in, WeightView wq, WeightView wk,
                  WeightView wv, std::size_t q_out, std::size_t kv_out, float* q, float* k,
                  float* v, const float* bq, const float* bk, const float* bv) {
    matmul(x, rows, in, wq, q_out, q, bq);
    matmul(x, rows, in, wk, kv_out, k, bk);
    matmul(x, rows, in, wv, kv_out, v, bv);
  }
  void matmul_swiglu(const float* x, std::size_t rows, std::size_t in, WeightView w_gate,
                     WeightView w_up, std::size_t hidden, float* h, float* up) {
    matmul(x, rows, in, w_gate, hidden, h);
    matmul(x, rows, in, w_up, hidden, up);
    swiglu(h, up, h, rows * hidden);
  }
  void matmul_add(const float* a, std::size_t rows, std::size_t in, WeightView w, std::size_t out,
                  float* y, float* x) {
    matmul(a, rows, in, w, out, y);
    add(x, y, rows * out);
  }
  // tokens: host array of n ids.
  void embed(const std::int32_t* tokens, std::size_t n, WeightView table, std::size_t dim,
             float* out) {
    if (!n) return;
    detail::cuda::embed(ctx_, stage_idx(tokens, n), n, table.f32(), dim, out);
  }
  // idx: host array of n row indices. dst must not alias src.
  void gather_rows(const float* src, const std::int32_t* idx, std::size_t n, std::size_t dim,
                   float* dst) {
    if (!n) return;
    detail::cuda::gather_rows(ctx_, src, stage_idx(idx, n), n, dim, dst);
  }
  void copy(const float* src, float* dst, std::size_t n) {
    if (n) detail::cuda::d2d(ctx_, dst, src, n * sizeof(float));
  }
  void sigmoid(float* x, std::size_t n) {
    if (n) detail::cuda::sigmoid(ctx_, x, n);
  }
  // views: host array of n_fill layer views (same block size and kv_dim).
  void fill_kv(const float* kv, std::size_t rows, std::size_t n_fill, const RowKv* rowkv,
               const KvLayerView* views, std::size_t n_kv_heads, std::size_t head_dim,
               const float* inv_freq, rope_style style) {
    if (!rows || !n_fill) return;
    const std::int32_t* meta = stage_rows(rowkv, rows, views[0].block_size);
    views_host_.resize(2 * n_fill);
    for (std::size_t f = 0; f < n_fill; ++f) {
      views_host_[2 * f] = views[f].k;
      views_host_[2 * f + 1] = views[f].v;
    }
    grow(views_dev_, views_host_.size());
    detail::cuda::h2d(ctx_, views_dev_.data(), views_host_.data(),
                      views_host_.size() * sizeof(float*));
    detail::cuda::fill_kv(ctx_, kv, rows, n_fill, meta, views_dev_.data(), views[0].block_size,
                          n_kv_heads, head_dim, inv_freq, style == rope_style::interleaved);
  }

  // out (rows, 3) = max prob, margin, entropy; top1 (rows) = argmax. Device pointers.
  void exit_scores(const float* logits, std::size_t rows, std::size_t vocab, float* out,
                   std::int32_t* top1) {
    if (rows) detail::cuda::exit_scores(ctx_, logits, rows, vocab, out, top1);
  }

  // ---- device-side reductions (beyond CpuBackend) ----------------------------------
  void argmax(const float* logits, std::size_t rows, std::size_t vocab, std::int32_t* out) {
    if (rows) detail::cuda::argmax(ctx_, logits, rows, vocab, out);
  }
  void sample_top_k_top_p(const float* logits, std::size_t rows, std::size_t vocab,
                          float temperature, int top_k, float top_p, const float* u,
                          std::int32_t* out) {
    if (rows)
      detail::cuda::sample_top_k_top_p(ctx_, logits, rows, vocab, temperature, top_k, top_p, u,
                                       out);
  }

 private:
  struct Shadow {
    std::size_t n;
    buffer<std::uint16_t> data;
  };

  // The bf16 copy of the weight w points into (or null: use fp32).
  const void* bf16_weight(const float* w) const noexcept {
    if (bf16_.empty()) return nullptr;
    auto it = bf16_.upper_bound(w);
    if (it == bf16_.begin()) return nullptr;
    --it;
    const float* base = it->first;
    if (w < base || w >= base + it->second.n) return nullptr;
    return it->second.data.data() + (w - base);
  }

  // A new allocation overlapping a bf16 copy's fp32 buffer means that buffer was freed:
  // its copy is stale (and would otherwise be found by a reused address).
  void forget_shadows(const void* p, std::size_t bytes) {
    if (bf16_.empty() || !p) return;
    const char* lo = static_cast<const char*>(p);
    const char* hi = lo + bytes;
    for (auto it = bf16_.begin(); it != bf16_.end();) {
      const char* b = reinterpret_cast<const char*>(it->first);
      const char* e = b + it->second.n * sizeof(float);
      it = (b < hi && lo < e) ? bf16_.erase(it) : std::next(it);
    }
  }

  // True when b was reallocated (its old contents are gone).
  template <class T>
  bool grow(buffer<T>& b, std::size_t n) {
    if (b.size() >= n) return false;
    std::size_t cap = b.size() ? b.size() : 64;
    while (cap < n) cap *= 2;
    b = buffer<T>(ctx_, cap, "staging");  // frees the old one (cudaFree orders after the stream)
    return true;
  }

  // Packs rows' positions and block tables (see detail::cuda) and stages them unless the
  // device already holds exactly this content. block_size 0: positions only.
  const std::int32_t* stage_rows(const RowKv* rk, std::size_t rows, std::int32_t block_size) {
    meta_host_.resize(2 * rows);
    for (std::size_t r = 0; r < rows; ++r) {
      meta_host_[r] = rk[r].pos;
      meta_host_[rows + r] = std::int32_t(meta_host_.size());
      if (block_size > 0 && rk[r].block_table) {
        const std::int32_t nb = rk[r].pos / block_size + 1;
        meta_host_.insert(meta_host_.end(), rk[r].block_table, rk[r].block_table + nb);
      }
    }
    // A positions-only pack is a prefix-compatible subset of a full one: reuse the full one.
    if (block_size == 0 && staged_rows_ == rows && meta_staged_.size() >= 2 * rows &&
        std::memcmp(meta_staged_.data(), meta_host_.data(), rows * sizeof(std::int32_t)) == 0)
      return meta_dev_.data();
    if (meta_host_ == meta_staged_) return meta_dev_.data();
    grow(meta_dev_, meta_host_.size());
    detail::cuda::h2d(ctx_, meta_dev_.data(), meta_host_.data(),
                      meta_host_.size() * sizeof(std::int32_t));
    meta_staged_ = meta_host_;
    staged_rows_ = rows;
    return meta_dev_.data();
  }

  const std::int32_t* stage_idx(const std::int32_t* host, std::size_t n) {
    grow(idx_dev_, n);
    detail::cuda::h2d(ctx_, idx_dev_.data(), host, n * sizeof(std::int32_t));
    return idx_dev_.data();
  }

  friend void detail::cuda::forget_bf16_copy(CudaBackend* be, const void* p) noexcept;

  Options opt_;
  detail::cuda::Context* ctx_;
  std::map<const float*, Shadow, std::less<>> bf16_;
  std::vector<std::int32_t> meta_host_, meta_staged_;
  std::size_t staged_rows_ = 0;
  std::vector<float*> views_host_;
  buffer<std::int32_t> meta_dev_, idx_dev_;
  buffer<float*> views_dev_;
};

inline void detail::cuda::forget_bf16_copy(CudaBackend* be, const void* p) noexcept {
  be->bf16_.erase(static_cast<const float*>(p));
}

// KV blocks that fit the device: the backend may use `fraction` of the device's total
// memory (vLLM's --gpu-memory-fraction); what is already in use (weights, workspace,
// other processes) counts against it. Throws eexit::error when not one block fits.
inline std::int32_t kv_blocks_from_memory(CudaBackend& be, const ModelConfig& cfg,
                                          std::int32_t block_size, double fraction) {
  if (!(fraction > 0.0 && fraction <= 1.0))
    throw error("--gpu-memory-fraction", "must be in (0, 1]");
  std::size_t free_b = 0, total_b = 0;
  be.mem_info(free_b, total_b);
  const double used = double(total_b - free_b);
  const double budget = double(total_b) * fraction - used;
  const double per_block = double(block_size) * double(cfg.kv_dim()) * 2.0 * double(cfg.n_layers) *
                           double(sizeof(float));
  const double n = budget / per_block;
  if (n < 1.0)
    throw error("--gpu-memory-fraction",
                "leaves no room for a KV block: " + std::to_string(std::int64_t(used) >> 20) +
                    " MiB of " + std::to_string(std::int64_t(total_b) >> 20) +
                    " MiB already in use; raise the fraction or use a smaller model");
  return n > 2147483647.0 ? 2147483647 : std::int32_t(n);
}

}  // namespace eexit
