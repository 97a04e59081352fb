#pragma once
// CUDA and cuBLAS status -> eexit::error with the failing call, file and line. The
// throwing helper is plain C++ (g++-clean); the checking macros need the CUDA headers and
// are defined only where they are available (the nvcc translation unit, CUDA-aware users).
#include <string>

#include "eexit/core/error.hpp"

namespace eexit::detail::cuda {

[[noreturn]] inline void throw_error(const char* api, const char* expr, const char* file, int line,
                                     const std::string& what) {
  throw eexit::error(std::string(api) + " " + expr + " at " + file + ":" + std::to_string(line),
                     what);
}

}  // namespace eexit::detail::cuda

#if __has_include(<cuda_runtime_api.h>)
#include <cuda_runtime_api.h>

// EEXIT_CUDA_CHECK(cudaMalloc(...)): throws eexit::error("cuda cudaMalloc(...) at f.cu:12:
// out of memory (cudaErrorMemoryAllocation)") on failure.
#define EEXIT_CUDA_CHECK(expr)                                                                \
  do {                                                                                        \
    const cudaError_t eexit_err_ = (expr);                                                    \
    if (eexit_err_ != cudaSuccess)                                                            \
      ::eexit::detail::cuda::throw_error(                                                     \
          "cuda", #expr, __FILE__, __LINE__,                                                  \
          std::string(cudaGetErrorString(eexit_err_)) + " (" + cudaGetErrorName(eexit_err_) + \
              ")");                                                                           \
  } while (0)

// Checks the last kernel launch (launch configuration errors; faults surface at the next
// synchronizing call).
#define EEXIT_CUDA_CHECK_LAUNCH() EEXIT_CUDA_CHECK(cudaGetLastError())
#endif

#if __has_include(<cublas_v2.h>) && __has_include(<cuda_runtime_api.h>)
#include <cublas_v2.h>

#define EEXIT_CUBLAS_CHECK(expr)                                                      \
  do {                                                                                \
    const cublasStatus_t eexit_st_ = (expr);                                          \
    if (eexit_st_ != CUBLAS_STATUS_SUCCESS)                                           \
      ::eexit::detail::cuda::throw_error("cublas", #expr, __FILE__, __LINE__,         \
                                         std::string(cublasGetStatusString(eexit_st_))); \
  } while (0)
#endif
