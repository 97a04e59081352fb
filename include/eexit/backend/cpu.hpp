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
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <memory>
#include <new>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "eexit/backend/cpu_bf16.hpp"
#include "eexit/backend/cpu_exit_scores.hpp"
#include "eexit/backend/cpu_kernels.hpp"
#include "eexit/backend/cpu_kquant.hpp"
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
// Activations of a bf16-weight matmul: bf16 (each input row rounded once per matmul to bf16,
// bf16 x bf16 dot products as AVX-512 BF16's vdpbf16ps computes them: cpu_bf16.hpp;
// llama.cpp's choice, the default) or f32 (the weights widened to fp32 lanes, the fp32
// kernel: exact on the bf16 weights). Either is batch invariant; the choice is per backend.
enum class bf16_act : std::uint8_t { bf16, f32 };

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

// The CPU backend's buffers: blocks of 2 MiB or more start on a 2 MiB boundary and are
// marked for transparent huge pages (madvise; Debian's default THP mode only backs marked
// memory), before anything touches them. Attention reads each cached position's K/V row
// (kv_dim floats, 3 KiB at the 110M shape) in part, one row after another: with 4 KiB
// pages nearly every row is a new page, where the hardware prefetchers stop and the TLB
// misses, so decode at a 1,450-token context spent ~10 ms a token in attention, 4x its
// bytes at the guest's bandwidth. Smaller blocks come from the usual allocator. Only
// virtual space is padded: the pages before the boundary are never touched.
template <class T>
struct PageAllocator {
  using value_type = T;
  static constexpr std::size_t huge = std::size_t(2) << 20;
  PageAllocator() noexcept = default;
  template <class U>
  PageAllocator(const PageAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    if (n > std::numeric_limits<std::size_t>::max() / sizeof(T)) throw std::bad_array_new_length();
    const std::size_t bytes = n * sizeof(T);
    if (bytes < huge) return std::allocator<T>{}.allocate(n);
    // aligned_alloc wants a multiple of the alignment; the tail past `bytes` is never touched.
    void* p = std::aligned_alloc(huge, (bytes + huge - 1) / huge * huge);
    if (!p) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    madvise(p, bytes, MADV_HUGEPAGE);  // advice: where THP is off it changes nothing
#endif
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t n) noexcept {
    if (n * sizeof(T) < huge)
      std::allocator<T>{}.deallocate(p, n);
    else
      std::free(p);
  }
  friend bool operator==(const PageAllocator&, const PageAllocator&) noexcept {
    return true;
  }
};

// fn(t, row of position t in pool) for positions t0 .. t1-1 of a row's block table, block
// by block (one lookup per block, not a division per position).
template <class T, class Fn>
inline void each_position(const T* pool, const std::int32_t* table, std::size_t bs, std::size_t d,
                          std::size_t t0, std::size_t t1, Fn&& fn) {
  for (std::size_t t = t0; t < t1;) {
    const std::size_t b = t / bs, base = b * bs, end = std::min(t1, base + bs);
    const T* blk = pool + std::size_t(table[b]) * bs * d;
    for (; t < end; ++t) fn(t, blk + (t - base) * d);
  }
}

// The K and V pools of a cache layer as the attention kernels read them: T = float (an fp32
// cache) or f16_t (an f16 cache: each element widened on load, wload / to_f32, so the
// arithmetic after the load is the fp32 path's).
template <class T>
inline std::pair<const T*, const T*> kv_pools(const KvLayerView& c) noexcept {
  if constexpr (std::is_same_v<T, float>)
    return {c.k, c.v};
  else
    return {reinterpret_cast<const f16_t*>(c.k16), reinterpret_cast<const f16_t*>(c.v16)};
}

// The softmax of one row's scores a[0..n) in place, with their max mx given; returns
// 1 / the sum, which the p·v pass multiplies in (p_t = a[t] · inv). Each e_t =
// exp_nonpos16(clamp_exp16(a[t] - mx)), lane-wise (so the same bits whichever lane or tile
// a position lands in; std::exp, one position at a time, was a fifth of a ~50-token prefill
// over a 1,400-token cached prefix); the sum: lane t % 16 adds e_t in position order, then
// hsum16's order over the lanes.
inline float softmax_exps(float* a, std::size_t n, float mx) noexcept {
  const vf16 m = vf16{} + mx;
  vf16 sum{};
  std::size_t t = 0;
  for (; t + 16 <= n; t += 16) {
    const vf16 e = exp_nonpos16(clamp_exp16(load16(a + t) - m));
    std::memcpy(a + t, &e, sizeof e);
    sum += e;
  }
  if (t < n) {
    float x[16] = {};
    std::memcpy(x, a + t, (n - t) * sizeof(float));
    const vf16 e = exp_nonpos16(clamp_exp16(load16(x) - m));
    float y[16] = {};
    std::memcpy(y, &e, (n - t) * sizeof(float));  // lanes past n add nothing
    std::memcpy(a + t, y, (n - t) * sizeof(float));
    sum += load16(y);
  }
  return 1.0f / hsum16(sum);
}

// Scores of 16 positions for one head (head_dim 16·HV): 16 independent dot() chains and one
// transposed horizontal sum, lane j = (dot(q, tile[j] + koff) + 0) · scale, dot()'s bits.
template <std::size_t HV, class T>
inline vacc score16(const float* qh, const T* const (&tile)[16], std::size_t koff,
                    vacc scale_v) noexcept {
  vacc qv[HV], acc[16];
#pragma GCC unroll 16
  for (std::size_t i = 0; i < HV; ++i) qv[i] = vload(qh + 16 * i);
#pragma GCC unroll 16
  for (std::size_t j = 0; j < 16; ++j) {
    const T* kr = tile[j] + koff;
    vacc a = vzero();
#pragma GCC unroll 16
    for (std::size_t i = 0; i < HV; ++i) a = vfma(qv[i], wload(kr + 16 * i), a);
    acc[j] = a;
  }
  return (vhsum16(acc) + vzero()) * scale_v;
}

// Causal attention of heads h0 .. h0+g-1 (g <= G) of one row: for each head, o (head_dim)
// = softmax(scale · q·Kᵀ) · V over the row's positions 0 .. n_ctx-1. q, out: the row's
// (n_heads, head_dim); query head h reads kv head h / group. att: (G, n_ctx) scratch.
// K/V are read block by block through the row's block table (one lookup per block, not a
// division per position), and position by position for all g heads at once, so that each
// position's heads are read as one contiguous run of the (n_slots, kv_dim) pool rather
// than g streams that stride across it. HV > 0: head_dim == 16·HV, outputs accumulated in
// G·HV registers; HV == 0 (G == 1): any head_dim, accumulated in memory. Every head gets the
// same arithmetic whatever g, h0 or the path: dot products as dot(), then p·v added into
// each output element in position order (-march=native builds contract both paths' a·b + c
// into one fused multiply-add per term).
template <std::size_t HV, std::size_t G, class T>
inline void attend_heads(const float* q, float* out, float* att, std::size_t head_dim,
                         std::size_t n_ctx, const RowKv& rk, const KvLayerView& cache,
                         std::size_t h0, std::size_t g, std::size_t group, float scale) noexcept {
  static_assert(HV > 0 || G == 1);
  const std::size_t d = std::size_t(cache.kv_dim), bs = std::size_t(cache.block_size);
  const std::pair<const T*, const T*> pools = kv_pools<T>(cache);
  const T *const K = pools.first, *const V = pools.second;
  std::size_t koff[G];  // each head's offset in a position's row of the pool
  for (std::size_t h = 0; h < G; ++h) koff[h] = (h0 + std::min(h, g - 1)) / group * head_dim;
  // fn(t, row of position t in pool) over the positions, block by block.
  auto each = [&](const T* pool, auto&& fn) {
    each_position(pool, rk.block_table, bs, d, 0, n_ctx, fn);
  };
  float mx[G];
  for (std::size_t h = 0; h < G; ++h) mx[h] = -std::numeric_limits<float>::infinity();
  auto score = [&](std::size_t t, const T* row) {  // one position, dot() per head
#pragma GCC unroll 8
    for (std::size_t h = 0; h < G; ++h)
      if (h < g) {
        const float s = dot(q + (h0 + h) * head_dim, row + koff[h], head_dim) * scale;
        att[h * n_ctx + t] = s;
        mx[h] = std::max(mx[h], s);
      }
  };
  if constexpr (HV == 0) {
    each(K, score);
  } else {
    // 16 positions at a time: per head, 16 independent dot() chains and one vhsum16, so a
    // position's score is dot()'s bits (vhsum, + 0 for the empty tail, x scale) without its
    // latency: one position at a time, each dot waited on its own FMA chain and horizontal
    // sum (~80 cycles a position and head at a 1,450-token context, the larger part of a
    // long-context step). The last n_ctx % 16 positions go one at a time.
    const T* tile[16];
    std::size_t nt = 0, t_first = 0;
    vacc mxv[G];
    for (std::size_t h = 0; h < G; ++h) mxv[h] = vzero() - std::numeric_limits<float>::infinity();
    const vacc scale_v = vzero() + scale;
    each(K, [&](std::size_t t, const T* row) {
      if (nt == 0) t_first = t;
      tile[nt++] = row;
      if (nt < 16) return;
      nt = 0;
#pragma GCC unroll 8
      for (std::size_t h = 0; h < G; ++h)
        if (h < g) {
          const vacc s = score16<HV>(q + (h0 + h) * head_dim, tile, koff[h], scale_v);
          std::memcpy(att + h * n_ctx + t_first, &s, sizeof s);
          mxv[h] = vmax(mxv[h], s);
        }
    });
    for (std::size_t j = 0; j < nt; ++j) score(t_first + j, tile[j]);
    for (std::size_t h = 0; h < g; ++h) {
      float m[16];
      std::memcpy(m, &mxv[h], sizeof m);
      for (float x : m) mx[h] = std::max(mx[h], x);
    }
  }
  float inv[G] = {};
  for (std::size_t h = 0; h < g; ++h) inv[h] = softmax_exps(att + h * n_ctx, n_ctx, mx[h]);
  if constexpr (HV == 0) {
    float* o = out + h0 * head_dim;
    std::fill_n(o, head_dim, 0.0f);
    each(V, [&](std::size_t t, const T* row) {
      const float p = att[t] * inv[0];
      const T* vt = row + koff[0];
      for (std::size_t i = 0; i < head_dim; ++i) o[i] += p * to_f32(vt[i]);
    });
  } else {
    vacc acc[G][HV];
    for (std::size_t h = 0; h < G; ++h)
      for (std::size_t i = 0; i < HV; ++i) acc[h][i] = vzero();
    each(V, [&](std::size_t t, const T* row) {
#pragma GCC unroll 8
      for (std::size_t h = 0; h < G; ++h)
        if (h < g) {
          const vacc p = vzero() + att[h * n_ctx + t] * inv[h];
#pragma GCC unroll 16
          for (std::size_t i = 0; i < HV; ++i)
            acc[h][i] = vfma(p, wload(row + koff[h] + 16 * i), acc[h][i]);
        }
    });
    for (std::size_t h = 0; h < g; ++h)
      std::memcpy(out + (h0 + h) * head_dim, acc[h], sizeof acc[h]);
  }
}

// Causal attention of head h for nr <= R rows of one sequence (one block table) at once,
// head_dim 16·HV: each K/V position is read once for all of them. Rows of a prefill chunk
// (or of a verify pass) attend over the same cached positions, and one row at a time read a
// layer's K/V (8.9 MB at 1,450 positions of the 110M shape: from L3, not L2) once per row:
// the larger part of a ~50-token prefill over a 1,400-token cached prefix. Every row gets
// attend_heads' arithmetic in attend_heads' order, so the same bits: the 16-position tiles
// all rows have, then each row's own further tiles and its last n_ctx % 16 positions one at
// a time (its max: the tiles' lanes after the single positions, as there); the softmax per
// row; p·v in position order, the positions all rows have first. q, out: the first row's
// (n_heads, head_dim), the rows `stride` floats apart; n_ctx: each row's; att: (R,
// att_stride) scratch, att_stride >= every n_ctx.
// attend_rows' R for head_dim 16·HV: R·HV output accumulators in registers (HV 1-4: 4
// rows, 6 and 8: 2; 0 = no vector path, one row at a time).
constexpr std::size_t attend_rows_r(std::size_t hv) noexcept {
  return hv == 1 || hv == 2 || hv == 4 ? 4 : hv == 6 || hv == 8 ? 2 : 1;
}

template <std::size_t HV, std::size_t R, class T>
inline void attend_rows(const float* q, float* out, std::size_t stride, float* att,
                        std::size_t att_stride, std::size_t head_dim, const std::size_t* n_ctx,
                        std::size_t nr, const std::int32_t* table, const KvLayerView& cache,
                        std::size_t h, std::size_t group, float scale) noexcept {
  static_assert(HV > 0 && R > 0);
  const std::size_t d = std::size_t(cache.kv_dim), bs = std::size_t(cache.block_size);
  const std::pair<const T*, const T*> pools = kv_pools<T>(cache);
  const T *const K = pools.first, *const V = pools.second;
  const std::size_t koff = h / group * head_dim, qoff = h * head_dim;
  std::size_t common = n_ctx[0], tiles = n_ctx[0] / 16 * 16;  // positions / 16-tiles all have
  for (std::size_t r = 1; r < nr; ++r) {
    common = std::min(common, n_ctx[r]);
    tiles = std::min(tiles, n_ctx[r] / 16 * 16);
  }
  const vacc scale_v = vzero() + scale;
  vacc mxv[R];
  float mx[R];
  for (std::size_t r = 0; r < R; ++r) {
    mxv[r] = vzero() - std::numeric_limits<float>::infinity();
    mx[r] = -std::numeric_limits<float>::infinity();
  }
  const T* tile[16];
  std::size_t nt = 0;
  // Row r's scores of the 16 positions of tl (K rows, each head's part at offset off).
  auto score_tile = [&](std::size_t r, std::size_t t_first, const auto& tl, std::size_t off) {
    const vacc s = score16<HV>(q + r * stride + qoff, tl, off, scale_v);
    std::memcpy(att + r * att_stride + t_first, &s, sizeof s);
    mxv[r] = vmax(mxv[r], s);
  };
  each_position(K, table, bs, d, 0, tiles, [&](std::size_t t, const T* row) {
    tile[nt++] = row;
    if (nt < 16) return;
    nt = 0;
    if constexpr (std::is_same_v<T, float>) {
#pragma GCC unroll 4
      for (std::size_t r = 0; r < R; ++r)
        if (r < nr) score_tile(r, t - 15, tile, koff);
    } else {
      // An f16 tile that every row scores is widened once, into kt, not once per row: the
      // conversions were a quarter of the vector work of a prefill chunk's attention. The
      // same fp32 values (widening is exact), so the same bits.
      alignas(64) float kt[16 * 16 * HV];
      const float* wide[16];
      for (std::size_t j = 0; j < 16; ++j) {
        float* w = kt + j * 16 * HV;
#pragma GCC unroll 16
        for (std::size_t i = 0; i < HV; ++i) {
          const vacc x = wload(tile[j] + koff + 16 * i);
          std::memcpy(w + 16 * i, &x, sizeof x);
        }
        wide[j] = w;
      }
#pragma GCC unroll 4
      for (std::size_t r = 0; r < R; ++r)
        if (r < nr) score_tile(r, t - 15, wide, 0);
    }
  });
  for (std::size_t r = 0; r < nr; ++r) {
    const std::size_t end = n_ctx[r] / 16 * 16;
    each_position(K, table, bs, d, tiles, end, [&](std::size_t t, const T* row) {
      tile[nt++] = row;
      if (nt < 16) return;
      nt = 0;
      score_tile(r, t - 15, tile, koff);
    });
    float* a = att + r * att_stride;
    each_position(K, table, bs, d, end, n_ctx[r], [&](std::size_t t, const T* row) {
      a[t] = dot(q + r * stride + qoff, row + koff, head_dim) * scale;
      mx[r] = std::max(mx[r], a[t]);
    });
    float m[16];
    std::memcpy(m, &mxv[r], sizeof m);
    for (float x : m) mx[r] = std::max(mx[r], x);
  }
  float inv[R] = {};
  for (std::size_t r = 0; r < nr; ++r) inv[r] = softmax_exps(att + r * att_stride, n_ctx[r], mx[r]);
  vacc acc[R][HV];
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t i = 0; i < HV; ++i) acc[r][i] = vzero();
  each_position(V, table, bs, d, 0, common, [&](std::size_t t, const T* row) {
    vacc v[HV];
#pragma GCC unroll 16
    for (std::size_t i = 0; i < HV; ++i) v[i] = wload(row + koff + 16 * i);
#pragma GCC unroll 4
    for (std::size_t r = 0; r < R; ++r)
      if (r < nr) {
        const vacc p = vzero() + att[r * att_stride + t] * inv[r];
#pragma GCC unroll 16
        for (std::size_t i = 0; i < HV; ++i) acc[r][i] = vfma(p, v[i], acc[r][i]);
      }
  });
  for (std::size_t r = 0; r < nr; ++r) {
    vacc o[HV];
    for (std::size_t i = 0; i < HV; ++i) o[i] = acc[r][i];
    each_position(V, table, bs, d, common, n_ctx[r], [&](std::size_t t, const T* row) {
      const vacc p = vzero() + att[r * att_stride + t] * inv[r];
#pragma GCC unroll 16
      for (std::size_t i = 0; i < HV; ++i) o[i] = vfma(p, wload(row + koff + 16 * i), o[i]);
    });
    std::memcpy(out + r * stride + qoff, o, sizeof o);
  }
}
}  // namespace detail

struct CpuBackend {
  template <class T>
  using buffer = std::vector<T, detail::PageAllocator<T>>;
  static constexpr const char* name = "cpu";

  explicit CpuBackend(unsigned n_threads = 0, matmul_impl mm = matmul_impl::invariant,
                      quant_act qa = quant_act::int8, bf16_act ba = bf16_act::bf16)
      : pool_(n_threads), mm_(mm), qa_(qa), ba_(ba) {
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
  void fill(std::uint16_t* x, std::size_t n, std::uint16_t value) { std::fill_n(x, n, value); }

  // store_kv, attention and fill_kv take f16 K/V pools too (KvLayerView::k16 / v16).
  static constexpr bool stores_f16_kv = true;

  unsigned threads() const noexcept { return pool_.size(); }
  ThreadPool& pool() noexcept { return pool_; }

  // ---- ops -----------------------------------------------------------------------
  // The weight precisions matmul and embed take as stored (the model converts others).
  static constexpr bool accepts_weights(dtype t) noexcept {
    return t == dtype::f32 || t == dtype::bf16 || t == dtype::f16 || t == dtype::q8_0 ||
           t == dtype::q4_0 || is_kquant(t);
  }

  // The load-time hook (LlamaModel::upload_matrix): stores the (rows, cols) matrix of
  // type t at src (its file layout) into dst in the layout this backend reads fastest, if it
  // has one, and returns the WeightView::interleave to read it with; returns 0 and leaves
  // dst alone otherwise (the caller uploads the matrix as stored). Q8_0 / Q4_0 with int8
  // activations are repacked into groups of detail::q_rows rows (cpu_quant.hpp, the
  // interleaved layout); slice_rows: the row offsets the caller will take views at
  // (WeightView::rows_from) are multiples of it (rows or more: the matrix is used whole);
  // 0: the matrix is only an embedding table, kept as stored. Q4_K / Q5_K / Q6_K are
  // repacked likewise (cpu_kquant.hpp) whatever the activations (they always take int8 ones).
  std::uint8_t repack_weights(buffer<std::uint16_t>& dst, dtype t, const void* src,
                              std::size_t rows, std::size_t cols, std::size_t slice_rows) {
    if (is_kquant(t)) {
      if (!repack_ || cols % kquant_block || slice_rows == 0 ||
          (slice_rows < rows && slice_rows % detail::q_rows))
        return 0;
      detail::with_kq(t, [&]<class K>(K) {
        dst = allocate<std::uint16_t>(detail::il_bytes<K>(rows, cols) / 2);  // il_chunk is even
        detail::repack_kq<K>(static_cast<const unsigned char*>(src), rows, cols,
                             reinterpret_cast<unsigned char*>(dst.data()));
      });
      ++repacked_;
      return std::uint8_t(detail::q_rows);
    }
    if (!repack_ || qa_ != quant_act::int8 || !is_quantized(t) || cols % quant_block ||
        slice_rows == 0 || (slice_rows < rows && slice_rows % detail::q_rows))
      return 0;
    const bool q8 = t == dtype::q8_0;
    const std::size_t bytes = q8 ? detail::il_bytes<detail::block_q8_0>(rows, cols)
                                 : detail::il_bytes<detail::block_q4_0>(rows, cols);
    dst = allocate<std::uint16_t>(bytes / 2);  // il_chunk is even
    auto* d = reinterpret_cast<unsigned char*>(dst.data());
    if (q8)
      detail::repack_il(static_cast<const detail::block_q8_0*>(src), rows, cols, d);
    else
      detail::repack_il(static_cast<const detail::block_q4_0*>(src), rows, cols, d);
    ++repacked_;
    return std::uint8_t(detail::q_rows);
  }
  // How many matrices repack_weights has repacked (tests check the model's wiring with it).
  std::size_t repacked_matrices() const noexcept { return repacked_; }
  // Whether repack_weights repacks (on by default; off to measure or test the row layout).
  void set_repack(bool on) noexcept { repack_ = on; }

  // y (rows, out) = x (rows, in) · Wᵀ (+ bias); w: (out, in) in its stored precision.
  void matmul(const float* x, std::size_t rows, std::size_t in, WeightView w, std::size_t out,
              float* y, const float* bias = nullptr) {
    if (rows == 0) return;
    switch (w.type) {
      case dtype::bf16:
        if (ba_ == bf16_act::bf16) {  // rounded once, then split as matmul_t splits
          const std::uint16_t* xb = round_rows(x, rows, in);
          fused_slices(out, in * rows, [&](std::size_t n0, std::size_t n1) {
            matmul_range(x, xb, rows, in, w, out, n0, n1, y, bias);
          });
          return;
        }
        return matmul_t(x, rows, in, static_cast<const detail::bf16_t*>(w.data), out, y, bias);
      case dtype::f16:
        return matmul_t(x, rows, in, static_cast<const detail::f16_t*>(w.data), out, y, bias);
      case dtype::q8_0:
      case dtype::q4_0:
      case dtype::q4_k:
      case dtype::q5_k:
      case dtype::q6_k:
        return matmul_q(x, rows, in, w, out, y, bias);
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

  // Fused projections (one fork-join each, every element the same arithmetic as the
  // unfused sequence, so the results are bitwise equal to it; tests/backend/cpu_ops_test).
  // Each thread computes its slice of outputs and applies the element-wise tail to that
  // slice while it is still in its cache, instead of a second op over all of it.

  // q (rows, q_out), k and v (rows, kv_out) = x · W_qᵀ, x · W_kᵀ, x · W_vᵀ (+ their biases,
  // each may be null): the three projections of one input, split over their outputs
  // together; = three matmuls.
  void matmul_qkv(const float* x, std::size_t rows, std::size_t in, WeightView wq, WeightView wk,
                  WeightView wv, std::size_t q_out, std::size_t kv_out, float* q, float* k,
                  float* v, const float* bq, const float* bk, const float* bv) {
    if (rows == 0) return;
    if (quant_fusable(wq, wk) && quant_fusable(wq, wv)) {
      // Q8_0 / Q4_0: x quantized once for the three products, which split as below.
      quantize_x(x, rows, in, wq.interleave != 0);
      fused_slices(q_out + 2 * kv_out, in * rows, [&](std::size_t n0, std::size_t n1) {
        auto part = [&](std::size_t base, std::size_t n, WeightView w, float* y, const float* b) {
          const std::size_t a = std::max(n0, base), e = std::min(n1, base + n);
          if (a < e) product_q(rows, in, w, a - base, e - base, y, n, b);
        };
        part(0, q_out, wq, q, bq);
        part(q_out, kv_out, wk, k, bk);
        part(q_out + kv_out, kv_out, wv, v, bv);
      });
      return;
    }
    if (!fusable(wq) || !fusable(wk) || !fusable(wv)) {
      matmul(x, rows, in, wq, q_out, q, bq);
      matmul(x, rows, in, wk, kv_out, k, bk);
      matmul(x, rows, in, wv, kv_out, v, bv);
      return;
    }
    const std::uint16_t* xb = bf16_rows(x, rows, in, {wq, wk, wv});
    fused_slices(q_out + 2 * kv_out, in * rows, [&](std::size_t n0, std::size_t n1) {
      // The part of outputs [n0, n1) of q | k | v that falls in the matrix at `base`.
      auto part = [&](std::size_t base, std::size_t n, WeightView w, float* y, const float* b) {
        const std::size_t a = std::max(n0, base), e = std::min(n1, base + n);
        if (a < e) matmul_range(x, xb, rows, in, w, n, a - base, e - base, y, b);
      };
      part(0, q_out, wq, q, bq);
      part(q_out, kv_out, wk, k, bk);
      part(q_out + kv_out, kv_out, wv, v, bv);
    });
  }

  // h (rows, hidden) = silu(x · W_gateᵀ) ⊙ (x · W_upᵀ): the SwiGLU MLP up to the down
  // projection's input; = matmul, matmul, swiglu(h, up, h). up: (rows, hidden) scratch.
  void matmul_swiglu(const float* x, std::size_t rows, std::size_t in, WeightView w_gate,
                     WeightView w_up, std::size_t hidden, float* h, float* up) {
    if (rows == 0) return;
    if (quant_fusable(w_gate, w_up)) {
      quantize_x(x, rows, in, w_gate.interleave != 0);
      fused_slices(hidden, 2 * in * rows, [&](std::size_t n0, std::size_t n1) {
        product_q(rows, in, w_gate, n0, n1, h, hidden, nullptr);
        product_q(rows, in, w_up, n0, n1, up, hidden, nullptr);
        silu_mul(h, up, rows, hidden, n0, n1);
      });
      return;
    }
    if (!fusable(w_gate) || !fusable(w_up)) {
      matmul(x, rows, in, w_gate, hidden, h);
      matmul(x, rows, in, w_up, hidden, up);
      swiglu(h, up, h, rows * hidden);
      return;
    }
    const std::uint16_t* xb = bf16_rows(x, rows, in, {w_gate, w_up});
    fused_slices(hidden, 2 * in * rows, [&](std::size_t n0, std::size_t n1) {
      matmul_range(x, xb, rows, in, w_gate, hidden, n0, n1, h);
      matmul_range(x, xb, rows, in, w_up, hidden, n0, n1, up);
      silu_mul(h, up, rows, hidden, n0, n1);
    });
  }

  // x (rows, out) += a (rows, in) · Wᵀ: a projection with the residual add fused into it;
  // = matmul(a → y), add(x, y). y: (rows, out) scratch, left holding the projection.
  void matmul_add(const float* a, std::size_t rows, std::size_t in, WeightView w, std::size_t out,
                  float* y, float* x) {
    if (rows == 0) return;
    if (quant_fusable(w, w)) {  // Q8_0 / Q4_0: quantize, then each slice adds its own part
      quantize_x(a, rows, in, w.interleave != 0);
      fused_slices(out, in * rows, [&](std::size_t n0, std::size_t n1) {
        product_q(rows, in, w, n0, n1, y, out, nullptr);
        for (std::size_t r = 0; r < rows; ++r)
          for (std::size_t i = r * out + n0; i < r * out + n1; ++i) x[i] += y[i];
      });
      return;
    }
    if (!fusable(w)) {
      matmul(a, rows, in, w, out, y);
      add(x, y, rows * out);
      return;
    }
    const std::uint16_t* ab = bf16_rows(a, rows, in, {w});
    fused_slices(out, in * rows, [&](std::size_t n0, std::size_t n1) {
      matmul_range(a, ab, rows, in, w, out, n0, n1, y);
      for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t i = r * out + n0; i < r * out + n1; ++i) x[i] += y[i];
    });
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

  // Writes each row's k, v (rows, kv_dim) into its slot at its position (rounded to f16 in
  // an f16 cache).
  void store_kv(const float* k, const float* v, std::size_t rows, const RowKv* rowkv,
                const KvLayerView& cache) {
    const std::size_t d = std::size_t(cache.kv_dim);
    for (std::size_t r = 0; r < rows; ++r) {
      const std::size_t s = cache.slot(rowkv[r], rowkv[r].pos);
      store_kv_row(k + r * d, v + r * d, cache, s);
    }
  }

  // fn(integral_constant<HV>) for the head sizes the attention kernels keep in registers
  // (head_dim = 16·HV, HV 1, 2, 4, 6, 8), fn(integral_constant<0>) for any other hv.
  template <class Fn>
  static void with_hv(std::size_t hv, Fn&& fn) {
    using Z = std::size_t;
    switch (hv) {
      case 1:
        return fn(std::integral_constant<Z, 1>{});
      case 2:
        return fn(std::integral_constant<Z, 2>{});
      case 4:
        return fn(std::integral_constant<Z, 4>{});
      case 6:
        return fn(std::integral_constant<Z, 6>{});
      case 8:
        return fn(std::integral_constant<Z, 8>{});
      default:
        return fn(std::integral_constant<Z, 0>{});
    }
  }

  // fn(type_identity<T>) for the element type of the cache's K/V pools: float, or
  // detail::f16_t for an f16 cache (KvLayerView::half()).
  template <class Fn>
  static void with_kv(const KvLayerView& cache, Fn&& fn) {
    if (cache.half())
      fn(std::type_identity<detail::f16_t>{});
    else
      fn(std::type_identity<float>{});
  }

  // Causal attention of each row over its sequence's cache positions 0..pos.
  // q, out: (rows, n_heads, head_dim). GQA: query head h reads kv head h / (n_heads / n_kv).
  void attention(const float* q, float* out, std::size_t rows, std::size_t n_heads,
                 std::size_t n_kv_heads, std::size_t head_dim, const RowKv* rowkv,
                 const KvLayerView& cache) {
    const std::size_t group = n_heads / n_kv_heads;
    const float scale = 1.0f / std::sqrt(float(head_dim));
    // Work per (row, head): two passes over its context. Mean context is not known
    // without a pass over rowkv; the largest position bounds it.
    std::size_t max_ctx = 1;
    for (std::size_t r = 0; r < rows; ++r)
      max_ctx = std::max(max_ctx, std::size_t(rowkv[r].pos) + 1);
    // Heads are taken G at a time (their outputs in G·HV registers) where head_dim is a
    // multiple of 16 up to 128 (16, 32, 64, 96, 128); otherwise one at a time in memory.
    // Fewer heads a task where that spreads the tasks over the threads more evenly: one row
    // of 12 heads on 2 threads is 3 tasks of 4 heads (one thread runs two, the other waits
    // a third of the op: at a long context, decode at batch 1 is mostly this op) or 6 of 2.
    // Per thread (of the parts the op is worth), ceil(tasks / parts) x G heads; 2 where that
    // is fewer than 4's. A head's bits do not depend on G.
    const std::size_t hv = head_dim % 16 == 0 ? head_dim / 16 : 0;
    const std::size_t G_max = hv == 1 || hv == 2 || hv == 4 ? 4 : hv == 6 || hv == 8 ? 2 : 1;
    std::size_t G = G_max;
    if (G_max == 4) {
      const std::size_t T =
          pool_.parts_for(rows * ((n_heads + 3) / 4), 2 * head_dim * max_ctx * G_max);
      auto per_thread = [&](std::size_t g) {
        return (rows * ((n_heads + g - 1) / g) + T - 1) / T * g;
      };
      if (per_thread(2) < per_thread(4)) G = 2;
    }
    // Rows of one sequence (one block table: a prefill chunk, a verify pass) next to each
    // other are taken R at a time, one head a task (attend_rows: each K/V position read
    // once for the R rows, the same bits); every other row as above, G heads a task.
    // A sequence's groups of R rows are queued head by head (all groups of head 0, then of
    // head 1, ..): a thread's consecutive tasks then read the same head's K/V, which fits
    // its L2 (1,450 positions of one 64-wide head: 370 KB in f16). Measured on a 68-row
    // prefill over a 1,400-token cached prefix: ~1.5 ms of ~29 ms of attention with an f16
    // cache, no change with fp32 (740 KB a head).
    const std::size_t R = detail::attend_rows_r(hv);
    attn_tasks_.clear();
    bool grouped = false;
    for (std::size_t r = 0; r < rows;) {
      std::size_t e = r + 1;  // this sequence's rows next to each other: r .. e-1
      while (e < rows && rowkv[e].block_table == rowkv[r].block_table) ++e;
      if (e - r == 1 || R == 1) {
        for (; r < e; ++r)
          for (std::size_t h0 = 0; h0 < n_heads; h0 += G)
            attn_tasks_.push_back({r, 1, h0, std::min(G, n_heads - h0)});
        continue;
      }
      grouped = true;
      for (std::size_t h = 0; h < n_heads; ++h)  // in groups of up to R
        for (std::size_t g0 = r; g0 < e; g0 += R)
          attn_tasks_.push_back({g0, std::min(R, e - g0), h, 1});
      r = e;
    }
    const std::size_t per_task = 2 * head_dim * max_ctx * (grouped ? std::max(G, R) : G);
    pool_.parallel_for_work(attn_tasks_.size(), per_task, [&](std::size_t b, std::size_t e) {
      // Scores of one task's heads or rows, (G or R, n_ctx); per thread, grown only when the
      // context does.
      thread_local std::vector<float> att;
      const std::size_t stride = n_heads * head_dim;
      for (std::size_t task = b; task < e; ++task) {
        const AttnTask& tk = attn_tasks_[task];
        const float* qr = q + tk.r0 * stride;
        float* o = out + tk.r0 * stride;
        using std::integral_constant;
        using Z = std::size_t;
        if (tk.nr > 1) {
          std::size_t n_ctx[4], width = 0;
          for (std::size_t j = 0; j < tk.nr; ++j) {
            n_ctx[j] = std::size_t(rowkv[tk.r0 + j].pos) + 1;
            width = std::max(width, n_ctx[j]);
          }
          if (att.size() < tk.nr * width) att.resize(std::max(tk.nr * width, 2 * att.size()));
          with_hv(hv, [&](auto hv_c) {
            constexpr Z HV = decltype(hv_c)::value;
            if constexpr (HV > 0)
              with_kv(cache, [&](auto t) {
                detail::attend_rows<HV, detail::attend_rows_r(HV), typename decltype(t)::type>(
                    qr, o, stride, att.data(), width, head_dim, n_ctx, tk.nr,
                    rowkv[tk.r0].block_table, cache, tk.h0, group, scale);
              });
          });
          continue;
        }
        const RowKv& rk = rowkv[tk.r0];
        const std::size_t n_ctx = std::size_t(rk.pos) + 1;
        if (att.size() < G * n_ctx) att.resize(std::max(G * n_ctx, 2 * att.size()));
        with_hv(G == 1 ? 0 : hv, [&](auto hv_c) {  // G: 1, 2, or 4 for head_dim 16-64
          constexpr Z HV = decltype(hv_c)::value;
          auto run = [&](auto g_c) {
            with_kv(cache, [&](auto t) {
              detail::attend_heads<HV, decltype(g_c)::value, typename decltype(t)::type>(
                  qr, o, att.data(), head_dim, n_ctx, rk, cache, tk.h0, tk.g, group, scale);
            });
          };
          if constexpr (HV == 0)
            run(integral_constant<Z, 1>{});
          else if constexpr (HV > 4)
            run(integral_constant<Z, 2>{});
          else if (G == 4)
            run(integral_constant<Z, 4>{});
          else
            run(integral_constant<Z, 2>{});
        });
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
    for (std::size_t r = 0; r < n; ++r) {
      const std::size_t t = std::size_t(tokens[r]);
      const auto* il = static_cast<const unsigned char*>(table.data);
      if (table.interleave == 0)
        convert_to_f32(table.type, table.rows_from(t, dim).data, out + r * dim, dim);
      else if (is_kquant(table.type))
        detail::with_kq(table.type, [&]<class K>(K) {
          detail::dequantize_row_kq<K>(il, dim, t, out + r * dim);
        });
      else if (table.type == dtype::q8_0)
        detail::dequantize_row_il<detail::block_q8_0>(il, dim, t, out + r * dim);
      else
        detail::dequantize_row_il<detail::block_q4_0>(il, dim, t, out + r * dim);
    }
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
    // K is rotated in fp32 (in fill_k_, grown once to kv_dim) as the forward rotates it,
    // then stored as the forward stores it (store_kv_row), so a filled slot holds the bits a
    // full-depth pass would have written from the same K/V, in either cache precision.
    const std::size_t kvd = n_kv_heads * head_dim;
    if (fill_k_.size() < kvd) fill_k_.resize(kvd);
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t f = 0; f < n_fill; ++f) {
        const float* src = kv + (r * n_fill + f) * 2 * kvd;
        std::copy_n(src, kvd, fill_k_.data());
        detail::rope_row(fill_k_.data(), n_kv_heads, head_dim, rowkv[r].pos, inv_freq, style);
        store_kv_row(fill_k_.data(), src + kvd, views[f], views[f].slot(rowkv[r], rowkv[r].pos));
      }
  }

 private:
  // One position's k, v (kv_dim each) into slot s of the cache layer.
  static void store_kv_row(const float* k, const float* v, const KvLayerView& cache,
                           std::size_t s) noexcept {
    const std::size_t d = std::size_t(cache.kv_dim);
    if (cache.half()) {
      detail::to_f16(k, reinterpret_cast<detail::f16_t*>(cache.k16 + s * d), d);
      detail::to_f16(v, reinterpret_cast<detail::f16_t*>(cache.v16 + s * d), d);
      return;
    }
    std::copy_n(k, d, cache.k + s * d);
    std::copy_n(v, d, cache.v + s * d);
  }

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
  // made with quant_act::f32 (which reads the layout as stored: nothing is repacked then).
  // Q4_K / Q5_K / Q6_K (in a multiple of 256): int8 activations always.
  void matmul_q(const float* x, std::size_t rows, std::size_t in, WeightView w, std::size_t out,
                float* y, const float* bias) {
    if (qa_ == quant_act::f32 && !is_kquant(w.type)) {
      if (w.interleave)
        throw error("CpuBackend::matmul", "interleaved weights need int8 activations");
      if (w.type == dtype::q8_0)
        return matmul_t(x, rows, in, static_cast<const detail::block_q8_0*>(w.data), out, y, bias);
      return matmul_t(x, rows, in, static_cast<const detail::block_q4_0*>(w.data), out, y, bias);
    }
    quantize_x(x, rows, in, w.interleave != 0);
    constexpr std::size_t g = 8;
    const std::size_t groups = (out + g - 1) / g;
    pool_.parallel_for_work(groups, g * in * rows, [&](std::size_t g0, std::size_t g1) {
      product_q(rows, in, w, g0 * g, std::min(out, g1 * g), y, out, bias);
    });
  }
  // x (rows, in) quantized once into qx_ / qd_ for the products that follow: Q8 blocks in
  // element order for weights as stored, in pair order for interleaved ones (cpu_quant.hpp).
  // The buffers grow only when a larger (rows, in) than any before arrives (the first step
  // of the largest batch).
  void quantize_x(const float* x, std::size_t rows, std::size_t in, bool interleaved) {
    const std::size_t nb = in / 32, nbp = interleaved ? 2 * ((nb + 1) / 2) : nb;
    if (qx_.size() < rows * 32 * nbp) qx_.resize(rows * 32 * nbp);
    if (qd_.size() < rows * nbp) qd_.resize(rows * nbp);
    std::int8_t* qx = qx_.data();
    float* qd = qd_.data();
    pool_.parallel_for_work(rows, 4 * in, [&](std::size_t r0, std::size_t r1) {
      for (std::size_t r = r0; r < r1; ++r)
        if (interleaved)
          detail::quantize_row_q8_il(x + r * in, in, qx + r * 32 * nbp, qd + r * nbp);
        else
          detail::quantize_row_q8(x + r * in, in, qx + r * in, qd + r * nb);
    });
  }
  // Outputs [n0, n1) of y (rows, out) = x · Wᵀ (+ bias) from the x of the last quantize_x
  // (whose layout matches w's), on the calling thread.
  void product_q(std::size_t rows, std::size_t in, WeightView w, std::size_t n0, std::size_t n1,
                 float* y, std::size_t out, const float* bias) const noexcept {
    const std::int8_t* qx = qx_.data();
    const float* qd = qd_.data();
    const auto* il = static_cast<const unsigned char*>(w.data);
    if (is_kquant(w.type))
      detail::with_kq(w.type, [&]<class K>(K) {
        (w.interleave ? detail::matmul_kq_il<K> : detail::matmul_kq_raw<K>)(qx, qd, rows, il, in,
                                                                            n0, n1, y, out, bias);
      });
    else if (w.interleave && w.type == dtype::q8_0)
      detail::matmul_q8act_il<detail::block_q8_0>(qx, qd, rows, il, in, n0, n1, y, out, bias);
    else if (w.interleave)
      detail::matmul_q8act_il<detail::block_q4_0>(qx, qd, rows, il, in, n0, n1, y, out, bias);
    else if (w.type == dtype::q8_0)
      detail::matmul_q8act(qx, qd, rows, static_cast<const detail::block_q8_0*>(w.data), in, n0, n1,
                           y, out, bias);
    else
      detail::matmul_q8act(qx, qd, rows, static_cast<const detail::block_q4_0*>(w.data), in, n0, n1,
                           y, out, bias);
  }
  // Whether a and b run as one fused int8 product (one quantize_x for both): Q8_0 / Q4_0
  // with int8 activations or K-quants, the same layout (the quantized x's order follows it).
  bool quant_fusable(WeightView a, WeightView b) const noexcept {
    const auto int8 = [&](dtype t) {
      return is_kquant(t) || (qa_ == quant_act::int8 && is_quantized(t));
    };
    return int8(a.type) && int8(b.type) && (a.interleave != 0) == (b.interleave != 0);
  }
  // h = silu(h) ⊙ up on outputs [n0, n1) of each of the rows (rows, hidden): swiglu's arithmetic.
  static void silu_mul(float* h, const float* up, std::size_t rows, std::size_t hidden,
                       std::size_t n0, std::size_t n1) noexcept {
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t i = r * hidden + n0; i < r * hidden + n1; ++i)
        h[i] = detail::silu(h[i]) * up[i];
  }

  // Whether the fused projections run w fused: the element-type kernels of matmul_t. The
  // quantized types and OpenBLAS's f32 path take the unfused sequence (matmul decides how
  // they run).
  bool fusable(WeightView w) const noexcept {
    return w.type == dtype::bf16 || w.type == dtype::f16 ||
           (w.type == dtype::f32 && mm_ == matmul_impl::invariant);
  }
  // x (rows, in) rounded to bf16 into bx_ (rows, bf16_padded(in)), in parallel over rows;
  // bx_ grows only when a larger (rows, in) than any before arrives.
  const std::uint16_t* round_rows(const float* x, std::size_t rows, std::size_t in) {
    const std::size_t ld = detail::bf16_padded(in);
    if (bx_.size() < rows * ld) bx_.resize(rows * ld);
    std::uint16_t* xb = bx_.data();
    pool_.parallel_for_work(rows, 2 * in, [&](std::size_t r0, std::size_t r1) {
      for (std::size_t r = r0; r < r1; ++r) detail::round_row_bf16(x + r * in, in, xb + r * ld);
    });
    return xb;
  }
  // A fused op's input rounded once for all of its matrices, when one of them takes the
  // bf16-activation kernel; else null.
  const std::uint16_t* bf16_rows(const float* x, std::size_t rows, std::size_t in,
                                 std::initializer_list<WeightView> ws) {
    for (const WeightView& w : ws)
      if (w.type == dtype::bf16 && ba_ == bf16_act::bf16) return round_rows(x, rows, in);
    return nullptr;
  }
  // Outputs [n0, n1) of y (rows, out) = x · Wᵀ (+ bias) on the calling thread (w fusable);
  // xb: x rounded by bf16_rows (bf16 weights take the bf16-activation kernel when given).
  static void matmul_range(const float* x, const std::uint16_t* xb, std::size_t rows,
                           std::size_t in, WeightView w, std::size_t out, std::size_t n0,
                           std::size_t n1, float* y, const float* bias = nullptr) {
    if (w.type == dtype::bf16 && xb)
      detail::matmul_bf16act(xb, detail::bf16_padded(in), rows,
                             static_cast<const detail::bf16_t*>(w.data), in, n0, n1, y, out, bias);
    else if (w.type == dtype::bf16)
      detail::matmul_xwt_dispatch(x, rows, in, static_cast<const detail::bf16_t*>(w.data), in, n0,
                                  n1, y, out, bias);
    else if (w.type == dtype::f16)
      detail::matmul_xwt_dispatch(x, rows, in, static_cast<const detail::f16_t*>(w.data), in, n0,
                                  n1, y, out, bias);
    else
      detail::matmul_xwt_dispatch(x, rows, in, w.f32(), in, n0, n1, y, out, bias);
  }
  // fn(n0, n1) over [0, out) in slices of whole 8-output tile groups, as matmul_t splits
  // its outputs; work_per_output: multiply-adds per output over all rows.
  template <class F>
  void fused_slices(std::size_t out, std::size_t work_per_output, F&& fn) {
    constexpr std::size_t g = 8;
    pool_.parallel_for_work(
        (out + g - 1) / g, g * work_per_output,
        [&](std::size_t g0, std::size_t g1) { fn(g0 * g, std::min(out, g1 * g)); });
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
  bf16_act ba_;
  std::vector<std::uint16_t> bx_;  // (rows, bf16_padded(in)) the bf16 activations of a matmul
  bool repack_ = true;
  std::size_t repacked_ = 0;
  // The quantized activations of a Q8_0/Q4_0 matmul: (rows, in) in element order, or
  // (rows, 64 * pairs) in pair order for interleaved weights (the odd block padded).
  std::vector<std::int8_t> qx_;
  std::vector<float> qd_;  // (rows, in / 32) or (rows, 2 * pairs): their block scales
  // attention's tasks: rows r0 .. r0+nr-1 (nr > 1: one sequence's, attend_rows) and heads
  // h0 .. h0+g-1
  struct AttnTask {
    std::size_t r0, nr, h0, g;
  };
  std::vector<AttnTask> attn_tasks_;
  std::vector<float> fill_k_;  // (kv_dim): fill_kv's rotated K before store_kv_row stores it
};

}  // namespace eexit
