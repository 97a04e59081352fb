// The one nvcc translation unit of eexit (DESIGN.md §6): every kernels/*.cuh, the CUDA
// context behind CudaBackend, and the host launchers declared in
// include/eexit/backend/cuda.hpp. Nothing here includes serve/ (nvcc 13 cannot compile
// Boost 1.74 Asio). Every launch is on the context's stream; CUB gets that stream
// explicitly; THRUST_DEVICE_SYSTEM is never set.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cub/device/device_segmented_sort.cuh>
#include <string>

#include "add.cuh"
#include "attention.cuh"
#include "common.cuh"
#include "convert.cuh"
#include "eexit/backend/cuda.hpp"
#include "eexit/backend/cuda_check.hpp"
#include "embed.cuh"
#include "exit_scores.cuh"
#include "rmsnorm.cuh"
#include "rope.cuh"
#include "sampling.cuh"
#include "store_kv.cuh"
#include "swiglu.cuh"

namespace eexit::detail::cuda {

namespace k = eexit::kernels;

// Scratch that grows on first use to the largest shape seen (a warm-up step sizes it, so
// steady-state steps allocate nothing).
struct Scratch {
  void* p = nullptr;
  std::size_t bytes = 0;
  void* get(std::size_t need) {
    if (need <= bytes) return p;
    if (p) cudaFree(p);  // synchronizes: no queued kernel still reads it
    p = nullptr;
    bytes = 0;
    EEXIT_CUDA_CHECK(cudaMalloc(&p, need));
    bytes = need;
    return p;
  }
  void release() noexcept {
    if (p) cudaFree(p);
    p = nullptr;
    bytes = 0;
  }
};

struct Context {
  int device = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  Scratch x_bf16, sort_keys, sort_ids_in, sort_ids_out, sort_offsets, sort_temp;
};

namespace {

constexpr int kBlock = 256;

unsigned row_grid(std::size_t rows) {
  return unsigned(std::min<std::size_t>(rows, std::size_t(1) << 20));
}

void check_launch() { EEXIT_CUDA_CHECK_LAUNCH(); }

std::string mib(std::size_t b) { return std::to_string(b >> 20) + " MiB"; }

}  // namespace

int device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver / no device" status
    return 0;
  }
  return n;
}

Context* create(int device) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    cudaGetLastError();
    throw eexit::error("cuda", std::string("no CUDA device available") +
                                   (e != cudaSuccess ? std::string(" (") + cudaGetErrorString(e) + ")"
                                                     : std::string()));
  }
  if (device < 0 || device >= n)
    throw eexit::error("cuda", "device " + std::to_string(device) + " does not exist (" +
                                   std::to_string(n) + " visible)");
  auto* c = new Context;
  c->device = device;
  try {
    EEXIT_CUDA_CHECK(cudaSetDevice(device));
    EEXIT_CUDA_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    EEXIT_CUBLAS_CHECK(cublasCreate(&c->blas));
    EEXIT_CUBLAS_CHECK(cublasSetStream(c->blas, c->stream));
    // fp32 GEMMs stay fp32 (no TF32): the CPU parity bound is 1e-5 relative.
    EEXIT_CUBLAS_CHECK(cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH));
  } catch (...) {
    destroy(c);
    throw;
  }
  return c;
}

void destroy(Context* c) noexcept {
  if (!c) return;
  if (c->stream) cudaStreamSynchronize(c->stream);
  for (Scratch* s : {&c->x_bf16, &c->sort_keys, &c->sort_ids_in, &c->sort_ids_out,
                     &c->sort_offsets, &c->sort_temp})
    s->release();
  if (c->blas) cublasDestroy(c->blas);
  if (c->stream) cudaStreamDestroy(c->stream);
  delete c;
}

std::string device_name(const Context* c) {
  cudaDeviceProp p{};
  EEXIT_CUDA_CHECK(cudaGetDeviceProperties(&p, c->device));
  return p.name;
}

void mem_info(Context*, std::size_t& free_bytes, std::size_t& total_bytes) {
  EEXIT_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
}

void* dmalloc(Context*, std::size_t bytes, const char* what) {
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes);
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    std::size_t f = 0, t = 0;
    cudaMemGetInfo(&f, &t);
    throw eexit::error("cuda", "out of device memory allocating " + mib(bytes) + " for " + what +
                                   " (" + mib(f) + " free of " + mib(t) + ")");
  }
  EEXIT_CUDA_CHECK(e);
  return p;
}

void dfree(Context*, void* p) noexcept { cudaFree(p); }

void h2d(Context* c, void* dst, const void* src, std::size_t bytes) {
  EEXIT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
}
void d2h(Context* c, void* dst, const void* src, std::size_t bytes) {
  EEXIT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
  EEXIT_CUDA_CHECK(cudaStreamSynchronize(c->stream));
}
void d2d(Context* c, void* dst, const void* src, std::size_t bytes) {
  EEXIT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream));
}
void fill_f32(Context* c, float* p, std::size_t n, float value) {
  k::fill_kernel<<<k::grid_for(n, kBlock), kBlock, 0, c->stream>>>(p, n, value);
  check_launch();
}
void synchronize(Context* c) { EEXIT_CUDA_CHECK(cudaStreamSynchronize(c->stream)); }

void to_bf16(Context* c, const float* src, void* dst, std::size_t n) {
  k::to_bf16_kernel<<<k::grid_for(n, kBlock), kBlock, 0, c->stream>>>(
      src, static_cast<__nv_bfloat16*>(dst), n);
  check_launch();
}

// ---- GEMM: y (rows, out) = x (rows, in) · Wᵀ. Row-major y is column-major yᵀ = W·xᵀ:
// A = W viewed column-major (in, out), transposed; B = x column-major (in, rows).
namespace {
void bias_init(Context* c, float* y, const float* bias, std::size_t rows, std::size_t out) {
  k::broadcast_rows_kernel<<<k::grid_for(rows * out, kBlock), kBlock, 0, c->stream>>>(y, bias,
                                                                                     rows, out);
  check_launch();
}
void gemm(Context* c, const void* x, cudaDataType xt, std::size_t rows, std::size_t in,
          const void* w, cudaDataType wt, std::size_t out, float* y, const float* bias) {
  const float alpha = 1.0f, beta = bias ? 1.0f : 0.0f;
  if (bias) bias_init(c, y, bias, rows, out);
  EEXIT_CUBLAS_CHECK(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, int(out), int(rows), int(in),
                                  &alpha, w, wt, int(in), x, xt, int(in), &beta, y, CUDA_R_32F,
                                  int(out), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}
}  // namespace

void gemm_f32(Context* c, const float* x, std::size_t rows, std::size_t in, const float* w,
              std::size_t out, float* y, const float* bias) {
  gemm(c, x, CUDA_R_32F, rows, in, w, CUDA_R_32F, out, y, bias);
}

void gemm_bf16(Context* c, const float* x, std::size_t rows, std::size_t in, const void* w,
               std::size_t out, float* y, const float* bias) {
  void* xb = c->x_bf16.get(rows * in * sizeof(__nv_bfloat16));
  to_bf16(c, x, xb, rows * in);
  gemm(c, xb, CUDA_R_16BF, rows, in, w, CUDA_R_16BF, out, y, bias);
}

// ---- ops -------------------------------------------------------------------------------
void rmsnorm(Context* c, const float* x, const float* w, float* y, std::size_t rows,
             std::size_t dim, float eps) {
  k::rmsnorm_kernel<<<row_grid(rows), kBlock, 0, c->stream>>>(x, w, y, rows, dim, eps);
  check_launch();
}

void rope(Context* c, float* x, std::size_t rows, std::size_t n_heads, std::size_t head_dim,
          const std::int32_t* meta, const float* inv_freq, bool interleaved) {
  const std::size_t n = rows * n_heads * (head_dim / 2);
  k::rope_kernel<<<k::grid_for(n, kBlock), kBlock, 0, c->stream>>>(x, rows, n_heads, int(head_dim),
                                                                  meta, inv_freq, interleaved);
  check_launch();
}

void store_kv(Context* c, const float* kk, const float* v, std::size_t rows,
              const std::int32_t* meta, float* kc, float* vc, int block_size, int kv_dim) {
  const std::size_t n = rows * std::size_t(kv_dim);
  k::store_kv_kernel<<<k::grid_for(n, kBlock), kBlock, 0, c->stream>>>(
      kk, v, rows, k::RowMeta{meta, int(rows)}, kc, vc, block_size, kv_dim);
  check_launch();
}

void attention(Context* c, const float* q, float* out, std::size_t rows, std::size_t n_heads,
               std::size_t n_kv_heads, std::size_t head_dim, const std::int32_t* meta,
               const float* kc, const float* vc, int block_size, int kv_dim) {
  k::attention_kernel<<<row_grid(rows * n_heads), k::kAttnWarps * k::kWarp, 0, c->stream>>>(
      q, out, rows, int(n_heads), int(n_kv_heads), int(head_dim), k::RowMeta{meta, int(rows)}, kc,
      vc, block_size, kv_dim);
  check_launch();
}

void swiglu(Context* c, const float* gate, const float* up, float* out, std::size_t n) {
  k::swiglu_kernel<<<k::grid_for(n, kBlock), kBlock, 0, c->stream>>>(gate, up, out, n);
  check_launch();
}

void add(Context* c, float* x, const float* y, std::size_t n) {
  k::add_kernel<<<k::grid_for(n, kBlock), kBlock, 0, c->stream>>>(x, y, n);
  check_launch();
}

void embed(Context* c, const std::int32_t* tokens, std::size_t n, const float* table,
           std::size_t dim, float* out) {
  k::embed_kernel<<<row_grid(n), kBlock, 0, c->stream>>>(tokens, n, table, dim, out);
  check_launch();
}

void gather_rows(Context* c, const float* src, const std::int32_t* idx, std::size_t n,
                 std::size_t dim, float* dst) {
  k::gather_rows_kernel<<<row_grid(n), kBlock, 0, c->stream>>>(src, idx, n, dim, dst);
  check_launch();
}

void sigmoid(Context* c, float* x, std::size_t n) {
  k::sigmoid_kernel<<<k::grid_for(n, kBlock), kBlock, 0, c->stream>>>(x, n);
  check_launch();
}

void fill_kv(Context* c, const float* kv, std::size_t rows, std::size_t n_fill,
             const std::int32_t* meta, float* const* views, int block_size,
             std::size_t n_kv_heads, std::size_t head_dim, const float* inv_freq,
             bool interleaved) {
  k::fill_kv_kernel<<<row_grid(rows * n_fill), kBlock, 0, c->stream>>>(
      kv, rows, n_fill, k::RowMeta{meta, int(rows)}, views, block_size, int(n_kv_heads),
      int(head_dim), inv_freq, interleaved);
  check_launch();
}

void exit_scores(Context* c, const float* logits, std::size_t rows, std::size_t vocab,
                 float* out, std::int32_t* top1) {
  k::exit_scores_kernel<<<row_grid(rows), 512, 0, c->stream>>>(logits, rows, vocab, out, top1);
  check_launch();
}

void argmax(Context* c, const float* logits, std::size_t rows, std::size_t vocab,
            std::int32_t* out) {
  k::argmax_kernel<<<row_grid(rows), 512, 0, c->stream>>>(logits, rows, vocab, out);
  check_launch();
}

void sample_top_k_top_p(Context* c, const float* logits, std::size_t rows, std::size_t vocab,
                        float temperature, int top_k, float top_p, const float* u,
                        std::int32_t* out) {
  if (temperature <= 0.0f) {
    argmax(c, logits, rows, vocab, out);
    return;
  }
  const std::size_t n = rows * vocab;
  auto* keys = static_cast<float*>(c->sort_keys.get(n * sizeof(float)));
  auto* ids_in = static_cast<int*>(c->sort_ids_in.get(n * sizeof(int)));
  auto* ids_out = static_cast<int*>(c->sort_ids_out.get(n * sizeof(int)));
  auto* offsets = static_cast<int*>(c->sort_offsets.get((rows + 1) * sizeof(int)));
  k::row_offsets_kernel<<<k::grid_for(rows + 1, kBlock), kBlock, 0, c->stream>>>(offsets, rows,
                                                                                vocab);
  check_launch();
  k::iota_rows_kernel<<<k::grid_for(n, kBlock), kBlock, 0, c->stream>>>(ids_in, rows, vocab);
  check_launch();
  // Stable per-row sort, descending: equal logits keep ascending ids.
  std::size_t temp_bytes = 0;
  EEXIT_CUDA_CHECK(cub::DeviceSegmentedSort::StableSortPairsDescending(
      nullptr, temp_bytes, logits, keys, ids_in, ids_out, int(n), int(rows), offsets, offsets + 1,
      c->stream));
  void* temp = c->sort_temp.get(std::max<std::size_t>(temp_bytes, 1));
  EEXIT_CUDA_CHECK(cub::DeviceSegmentedSort::StableSortPairsDescending(
      temp, temp_bytes, logits, keys, ids_in, ids_out, int(n), int(rows), offsets, offsets + 1,
      c->stream));
  k::sample_sorted_kernel<<<k::grid_for(rows, 64), 64, 0, c->stream>>>(
      keys, ids_out, rows, vocab, temperature, top_k, top_p, u, out);
  check_launch();
}

}  // namespace eexit::detail::cuda
