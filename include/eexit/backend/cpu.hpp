#pragma once
// CpuBackend: fp32 compute on host memory. The reference every other backend is tested
// against. Projections run our batch-invariant kernel (cpu_kernels.hpp); OpenBLAS sgemm
// is available as an option (matmul_impl::blas) for throughput when bitwise batch
// invariance is not needed, and is what benchmarks compare the kernel against.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "eexit/backend/cpu_exit_scores.hpp"
#include "eexit/backend/cpu_kernels.hpp"
#include "eexit/core/kv_view.hpp"
#include "eexit/core/thread_pool.hpp"
#include "eexit/model/config.hpp"

namespace eexit {

enum class matmul_impl : std::uint8_t { invariant, blas };

struct CpuBackend {
  template <class T>
  using buffer = std::vector<T>;
  static constexpr const char* name = "cpu";

  explicit CpuBackend(unsigned n_threads = 0, matmul_impl mm = matmul_impl::invariant)
      : pool_(n_threads), mm_(mm) {}
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
  // y (rows, out) = x (rows, in) · Wᵀ (+ bias); w: (out, in).
  void matmul(const float* x, std::size_t rows, std::size_t in, const float* w, std::size_t out,
              float* y, const float* bias = nullptr) {
    if (rows == 0) return;
    if (mm_ == matmul_impl::blas) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(out), int(in), 1.0f, x,
                  int(in), w, int(in), 0.0f, y, int(out));
      if (bias)
        for (std::size_t r = 0; r < rows; ++r)
          for (std::size_t o = 0; o < out; ++o) y[r * out + o] += bias[o];
      return;
    }
    // Split outputs across threads evenly in multiples of 8 (whole register tiles, see
    // matmul_xwt); every thread reads all rows of x and its own slice of W. Which thread
    // computes an output never changes its value.
    constexpr std::size_t g = 8;
    const std::size_t groups = (out + g - 1) / g;
    pool_.parallel_for(
        groups,
        [&](std::size_t g0, std::size_t g1) {
          detail::matmul_xwt(x, rows, in, w, in, g0 * g, std::min(out, g1 * g), y, out, bias);
        },
        8);
  }

  // y (rows, dim) = rmsnorm(x) * w
  void rmsnorm(const float* x, const float* w, float* y, std::size_t rows, std::size_t dim,
               float eps) {
    for (std::size_t r = 0; r < rows; ++r)
      detail::rmsnorm_row(x + r * dim, w, y + r * dim, dim, eps);
  }

  // Rotates each head of x (rows, n_heads, head_dim) in place at the row's position.
  // inv_freq: (head_dim/2) frequencies, scaling already applied.
  void rope(float* x, std::size_t rows, std::size_t n_heads, std::size_t head_dim,
            const RowKv* rowkv, const float* inv_freq, rope_style style) {
    const std::size_t half = head_dim / 2;
    std::vector<float> cs(half), sn(half);
    for (std::size_t r = 0; r < rows; ++r) {
      for (std::size_t i = 0; i < half; ++i) {
        const double a = double(rowkv[r].pos) * double(inv_freq[i]);
        cs[i] = float(std::cos(a));
        sn[i] = float(std::sin(a));
      }
      for (std::size_t h = 0; h < n_heads; ++h) {
        float* v = x + (r * n_heads + h) * head_dim;
        for (std::size_t i = 0; i < half; ++i) {
          float* a = style == rope_style::interleaved ? v + 2 * i : v + i;
          float* b = style == rope_style::interleaved ? v + 2 * i + 1 : v + i + half;
          const float x0 = *a, x1 = *b;
          *a = x0 * cs[i] - x1 * sn[i];
          *b = x0 * sn[i] + x1 * cs[i];
        }
      }
    }
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
    pool_.parallel_for(rows * n_heads, [&](std::size_t b, std::size_t e) {
      std::vector<float> att;
      for (std::size_t task = b; task < e; ++task) {
        const std::size_t r = task / n_heads, h = task % n_heads;
        const RowKv& rk = rowkv[r];
        const std::size_t n_ctx = std::size_t(rk.pos) + 1;
        att.resize(n_ctx);
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
    for (std::size_t i = 0; i < n; ++i) out[i] = detail::silu(gate[i]) * up[i];
  }

  // x += y
  void add(float* x, const float* y, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) x[i] += y[i];
  }

  // out (n, dim) = table[tokens]
  void embed(const std::int32_t* tokens, std::size_t n, const float* table, std::size_t dim,
             float* out) {
    for (std::size_t r = 0; r < n; ++r)
      std::copy_n(table + std::size_t(tokens[r]) * dim, dim, out + r * dim);
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
    const std::size_t kvd = n_kv_heads * head_dim;
    std::vector<float> k(kvd);
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t f = 0; f < n_fill; ++f) {
        const float* src = kv + (r * n_fill + f) * 2 * kvd;
        std::copy_n(src, kvd, k.data());
        rope(k.data(), 1, n_kv_heads, head_dim, rowkv + r, inv_freq, style);
        store_kv(k.data(), src + kvd, 1, rowkv + r, views[f]);
      }
  }

 private:
  ThreadPool pool_;
  matmul_impl mm_;
};

}  // namespace eexit
