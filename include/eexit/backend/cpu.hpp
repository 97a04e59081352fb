#pragma once
// CpuBackend: fp32 compute on host memory. The reference every other backend is tested
// against. Projections run our batch-invariant kernel (cpu_kernels.hpp); OpenBLAS sgemm
// is available as an option (matmul_impl::blas) for throughput when bitwise batch
// invariance is not needed, and is what benchmarks compare the kernel against. A build
// without BLAS (EEXIT_NO_BLAS, CMake -DEEXIT_WITH_BLAS=OFF) rejects matmul_impl::blas.
#ifndef EEXIT_NO_BLAS
#include <cblas.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "eexit/backend/cpu_exit_scores.hpp"
#include "eexit/backend/cpu_kernels.hpp"
#include "eexit/backend/cpu_quant.hpp"
#include "eexit/core/dtype.hpp"
#include "eexit/core/error.hpp"
#include "eexit/core/kv_view.hpp"
#include "eexit/core/thread_pool.hpp"
#include "eexit/model/config.hpp"

namespace eexit {

enum class matmul_impl : std::uint8_t { invariant, blas };
// Activations of a Q8_0 / Q4_0 matmul: int8 (each input row quantized once per matmul to Q8
// blocks, integer dot products: cpu_quant.hpp; llama.cpp's choice, the default) or f32
// (the weights dequantized to fp32 lanes, the fp32 kernel: exact on the dequantized
// weights). Either is batch invariant; the choice is per backend, never per row count.
enum class quant_act : std::uint8_t { int8, f32 };

namespace detail {
#ifdef EEXIT_NO_BLAS
inline constexpr bool has_blas = false;
#else
inline constexpr bool has_blas = true;
#endif
// y (rows, out) = x (rows, in) · Wᵀ through OpenBLAS; never reached without it (CpuBackend
// refuses matmul_impl::blas there).
inline void blas_xwt(const float* x, std::size_t rows, std::size_t in, const float* w,
                     std::size_t out, float* y) {
#ifndef EEXIT_NO_BLAS
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(out), int(in), 1.0f, x,
              int(in), w, int(in), 0.0f, y, int(out));
#else
  (void)x, (void)rows, (void)in, (void)w, (void)out, (void)y;
#endif
}
}  // namespace detail

struct CpuBackend {
  template <class T>
  using buffer = std::vector<T>;
  static constexpr const char* name = "cpu";

  explicit CpuBackend(unsigned n_threads = 0, matmul_impl mm = matmul_impl::invariant,
                      quant_act qa = quant_act::int8)
      : pool_(n_threads), mm_(mm), qa_(qa) {
    if (!detail::has_blas && mm == matmul_impl::blas)
      throw error("CpuBackend", "matmul_impl::blas needs a build with BLAS (EEXIT_WITH_BLAS=ON)");
  }
  CpuBackend(const CpuBackend&) = delete;
  CpuBackend& operator=(const CpuBackend&) = delete;

  // ---- memory --------------------------------------------------------------------
  template <class T>
  buffer<T> allocate(std::size_t n) {
    return buffer<T>(n);
  }
  template <class T>
  void upload(buffer<T>& dst, std::span<const T> src) {
    dst.assign(src.begin(), src.end());
  }
  template <class T>
  void download(std::span<T> dst, const buffer<T>& src) {
    std::copy_n(src.begin(), std::min(dst.size(), src.size()), dst.begin());
  }
  void synchronize() noexcept {}
  template <class T>
  static T* data(buffer<T>& b) noexcept {
    return b.data();
  }
  template <class T>
  static const T* data(const buffer<T>& b) noexcept {
    return b.data();
  }

  // n elements at p readable on the host: p itself (host memory already), no copy.
  template <class T>
  const T* host_view(const T* p, std::size_t /*n*/, std::vector<T>& /*staging*/) noexcept {
    return p;
  }
  // x[0, n) = value (poisoning a cache in tests, zeroing).
  void fill(float* x, std::size_t n, float value) { std::fill_n(x, n, value); }

  unsigned threads() const noexcept { return pool_.size(); }
  ThreadPool& pool() noexcept { return pool_; }

  // ---- ops -----------------------------------------------------------------------
  // The weight precisions matmul and embed take as stored (the model converts others).
  static constexpr bool accepts_weights(dtype t) noexcept {
    return t == dtype::f32 || t == dtype::bf16 || t == dtype::f16 || t == dtype::q8_0 ||
           t == dtype::q4_0;
  }

  // y (rows, out) = x (rows, in) · Wᵀ (+ bias); w: (out, in) in its stored precision.
  void matmul(const float* x, std::size_t rows, std::size_t in, WeightView w, std::size_t out,
              float* y, const float* bias = nullptr) {
    if (rows == 0) return;
    switch (w.type) {
      case dtype::bf16:
        return matmul_t(x, rows, in, static_cast<const detail::bf16_t*>(w.data), out, y, bias);
      case dtype::f16:
        return matmul_t(x, rows, in, static_cast<const detail::f16_t*>(w.data), out, y, bias);
      case dtype::q8_0:
        return matmul_q(x, rows, in, static_cast<const detail::block_q8_0*>(w.data), out, y, bias);
      case dtype::q4_0:
        return matmul_q(x, rows, in, static_cast<const detail::block_q4_0*>(w.data), out, y, bias);
      case dtype::f32:
        break;
    }
    if (mm_ == matmul_impl::blas) {
      detail::blas_xwt(x, rows, in, w.f32(), out, y);
      if (bias)
        for (std::size_t r = 0; r < rows; ++r)
          for (std::size_t o = 0; o < out; ++o) y[r * out + o] += bias[o];
      return;
    }
    matmul_t(x, rows, in, w.f32(), out, y, bias);
  }

  // y (rows, dim) = rmsnorm(x) * w; rows in parallel when there are enough of them.
  void rmsnorm(const float* x, const float* w, float* y, std::size_t rows, std::size_t dim,
               float eps) {
    pool_.parallel_for_work(rows, 2 * dim, [&](std::size_t r0, std::size_t r1) {
      for (std::size_t r = r0; r < r1; ++r)
        detail::rmsnorm_row(x + r * dim, w, y + r * dim, dim, eps);
    });
  }

  // Rotates each head of x (rows, n_heads, head_dim) in place at the row's position.
  // inv_freq: (head_dim/2) frequencies, scaling already applied. Rows in parallel; the
  // angles of a row are computed in chunks on the stack (no allocation in a step).
  void rope(float* x, std::size_t rows, std::size_t n_heads, std::size_t head_dim,
            const RowKv* rowkv, const float* inv_freq, rope_style style) {
    const std::size_t half = head_dim / 2;
    // cos/sin (double precision) dominate: ~20 multiply-adds' worth each.
    pool_.parallel_for_work(rows, half * (40 + 4 * n_heads), [&](std::size_t r0, std::size_t r1) {
      for (std::size_t r = r0; r < r1; ++r)
        detail::rope_row(x + r * n_heads * head_dim, n_heads, head_dim, rowkv[r].pos, inv_freq,
                         style);
    });
  }

  // Writes each row's k, v (rows, kv_dim) into its slot at its position.
  void store_kv(const float* k, const float* v, std::size_t rows, const RowKv* rowkv,
                const KvLayerView& cache) {
    const std::size_t d = std::size_t(cache.kv_dim);
    for (std::size_t r = 0; r < rows; ++r) {
      const std::size_t s = cache.slot(rowkv[r], rowkv[r].pos);
      std::copy_n(k + r * d, d, cache.k + s * d);
      std::copy_n(v + r * d, d, cache.v + s * d);
    }
  }

  // Causal attention of each row over its sequence's cache positions 0..pos.
  // q, out: (rows, n_heads, head_dim). GQA: query head h reads kv head h / (n_heads / n_kv).
  void attention(const float* q, float* out, std::size_t rows, std::size_t n_heads,
                 std::size_t n_kv_heads, std::size_t head_dim, const RowKv* rowkv,
                 const KvLayerView& cache) {
    const std::size_t group = n_heads / n_kv_heads;
    const std::size_t d = std::size_t(cache.kv_dim);
    const float scale = 1.0f / std::sqrt(float(head_dim));
    // Work per (row, head): two passes over its context. Mean context is not known
    // without a pass over rowkv; the largest position bounds it.
    std::size_t max_ctx = 1;
    for (std::size_t r = 0; r < rows; ++r)
      max_ctx = std::max(max_ctx, std::size_t(rowkv[r].pos) + 1);
    pool_.parallel_for_work(
        rows * n_heads, 2 * head_dim * max_ctx, [&](std::size_t b, std::size_t e) {
          // Scores of one (row, head), (n_ctx); per thread, grown only when the context does.
          thread_local std::vector<float> att;
          for (std::size_t task = b; task < e; ++task) {
            const std::size_t r = task / n_heads, h = task % n_heads;
            const RowKv& rk = rowkv[r];
            const std::size_t n_ctx = std::size_t(rk.pos) + 1;
            if (att.size() < n_ctx) att.resize(std::max(n_ctx, 2 * att.size()));
            const float* qh = q + (r * n_heads + h) * head_dim;
            const std::size_t koff = (h / group) * head_dim;
            float mx = -std::numeric_limits<float>::infinity();
            for (std::size_t t = 0; t < n_ctx; ++t) {
              const float* kt = cache.k + cache.slot(rk, std::int32_t(t)) * d + koff;
              att[t] = detail::dot(qh, kt, head_dim) * scale;
              mx = std::max(mx, att[t]);
            }
            float sum = 0.0f;
            for (std::size_t t = 0; t < n_ctx; ++t) {
              att[t] = std::exp(att[t] - mx);
              sum += att[t];
            }
            const float inv = 1.0f / sum;
            float* o = out + (r * n_heads + h) * head_dim;
            std::fill_n(o, head_dim, 0.0f);
            for (std::size_t t = 0; t < n_ctx; ++t) {
              const float* vt = cache.v + cache.slot(rk, std::int32_t(t)) * d + koff;
              const float p = att[t] * inv;
              for (std::size_t i = 0; i < head_dim; ++i) o[i] += p * vt[i];
            }
          }
        });
  }

  // out (n) = silu(gate) * up
  void swiglu(const float* gate, const float* up, float* out, std::size_t n) {
    elementwise(n, 16, [&](std::size_t i) { out[i] = detail::silu(gate[i]) * up[i]; });
  }

  // x += y
  void add(float* x, const float* y, std::size_t n) {
    elementwise(n, 1, [&](std::size_t i) { x[i] += y[i]; });
  }

  // out (n, dim) = table[tokens], widened (dequantized) to fp32 from the table's precision.
  void embed(const std::int32_t* tokens, std::size_t n, WeightView table, std::size_t dim,
             float* out) {
    for (std::size_t r = 0; r < n; ++r)
      convert_to_f32(table.type, table.rows_from(std::size_t(tokens[r]), dim).data, out + r * dim,
                     dim);
  }

  // dst row i = src row idx[i] (rows of width dim). dst must not alias src.
  void gather_rows(const float* src, const std::int32_t* idx, std::size_t n, std::size_t dim,
                   float* dst) {
    for (std::size_t i = 0; i < n; ++i)
      std::copy_n(src + std::size_t(idx[i]) * dim, dim, dst + i * dim);
  }

  void copy(const float* src, float* dst, std::size_t n) { std::copy_n(src, n, dst); }

  // x = 1 / (1 + exp(-x))
  void sigmoid(float* x, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) x[i] = 1.0f / (1.0f + std::exp(-x[i]));
  }

  // Per row of logits (rows, vocab): out (rows, 3) = max probability, top-1 minus top-2
  // probability, entropy in nats; top1 (rows) = argmax, ties to the lowest id. Rows are
  // independent, so threads split them only when there is enough work to pay the fork.
  void exit_scores(const float* logits, std::size_t rows, std::size_t vocab, float* out,
                   std::int32_t* top1) {
    auto run = [&](std::size_t b, std::size_t e) {
      for (std::size_t r = b; r < e; ++r)
        detail::exit_scores_row(logits + r * vocab, vocab, out + 3 * r, top1 + r);
    };
    constexpr std::size_t min_work = std::size_t(1) << 18;  // logits per thread
    if (rows * vocab < 2 * min_work)
      run(0, rows);
    else
      pool_.parallel_for(rows, run,
                         std::max<std::size_t>(1, min_work / std::max<std::size_t>(1, vocab)));
  }

  // The KV fill of skipped layers, batched over rows and layers: kv holds, per row, the K
  // and V of n_fill consecutive layers, (rows, n_fill, 2, kv_dim), not yet rotated. Each
  // K is rotated at the row's position and both are written into layer f's cache views[f].
  void fill_kv(const float* kv, std::size_t rows, std::size_t n_fill, const RowKv* rowkv,
               const KvLayerView* views, std::size_t n_kv_heads, std::size_t head_dim,
               const float* inv_freq, rope_style style) {
    // K is rotated in its cache slot (it is written there first), so nothing is allocated.
    const std::size_t kvd = n_kv_heads * head_dim;
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t f = 0; f < n_fill; ++f) {
        const float* src = kv + (r * n_fill + f) * 2 * kvd;
        const std::size_t s = views[f].slot(rowkv[r], rowkv[r].pos);
        float* k = views[f].k + s * kvd;
        std::copy_n(src, kvd, k);
        std::copy_n(src + kvd, kvd, views[f].v + s * kvd);
        detail::rope_row(k, n_kv_heads, head_dim, rowkv[r].pos, inv_freq, style);
      }
  }

 private:
  // Split outputs across threads evenly in multiples of 8 (whole register tiles, see
  // matmul_xwt), into as many parts as the work pays for; every thread reads all rows of
  // x and its own slice of W. Which thread computes an output never changes its value.
  template <class W>
  void matmul_t(const float* x, std::size_t rows, std::size_t in, const W* w, std::size_t out,
                float* y, const float* bias) {
    constexpr std::size_t g = 8;
    const std::size_t groups = (out + g - 1) / g;
    pool_.parallel_for_work(groups, g * in * rows, [&](std::size_t g0, std::size_t g1) {
      detail::matmul_xwt_dispatch(x, rows, in, w, in, g0 * g, std::min(out, g1 * g), y, out, bias);
    });
  }

  // Q8_0 / Q4_0 weights (in a multiple of 32): int8 activations unless the backend was
  // made with quant_act::f32. x is quantized once into qx_ / qd_, which grow only when a
  // larger (rows, in) than any before arrives (the first step of the largest batch).
  template <class W>
  void matmul_q(const float* x, std::size_t rows, std::size_t in, const W* w, std::size_t out,
                float* y, const float* bias) {
    if (qa_ == quant_act::f32) return matmul_t(x, rows, in, w, out, y, bias);
    const std::size_t nb = in / 32;
    if (qx_.size() < rows * in) qx_.resize(rows * in);
    if (qd_.size() < rows * nb) qd_.resize(rows * nb);
    std::int8_t* qx = qx_.data();
    float* qd = qd_.data();
    pool_.parallel_for_work(rows, 4 * in, [&](std::size_t r0, std::size_t r1) {
      for (std::size_t r = r0; r < r1; ++r)
        detail::quantize_row_q8(x + r * in, in, qx + r * in, qd + r * nb);
    });
    constexpr std::size_t g = 8;
    const std::size_t groups = (out + g - 1) / g;
    pool_.parallel_for_work(groups, g * in * rows, [&](std::size_t g0, std::size_t g1) {
      detail::matmul_q8act(qx, qd, rows, w, in, g0 * g, std::min(out, g1 * g), y, out, bias);
    });
  }

  // f(i) for i in [0, n), in parallel chunks of whole 16-element blocks when n pays for it.
  template <class F>
  void elementwise(std::size_t n, std::size_t work_per_elem, F&& f) {
    constexpr std::size_t b = 16;
    pool_.parallel_for_work((n + b - 1) / b, b * work_per_elem,
                            [&](std::size_t b0, std::size_t b1) {
                              const std::size_t e = std::min(n, b1 * b);
                              for (std::size_t i = b0 * b; i < e; ++i) f(i);
                            });
  }

  ThreadPool pool_;
  matmul_impl mm_;
  quant_act qa_;
  std::vector<std::int8_t> qx_;  // (rows, in) the quantized activations of a Q8_0/Q4_0 matmul
  std::vector<float> qd_;        // (rows, in / 32) their block scales
};

}  // namespace eexit
