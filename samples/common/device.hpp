#pragma once
// --device cpu|cuda, --gpu-memory-fraction F and --kv-dtype f32|f16, shared by eexit-generate
// and eexit-server.
// The CUDA backend is there only when the sample was built with it (EEXIT_HAS_CUDA, from
// linking eexit::cuda); otherwise --device cuda is a usage error that says so.
#include <cstdint>
#include <string>
#include <type_traits>

#include "args.hpp"
#include "eexit/backend/cpu.hpp"
#include "eexit/cache/kv_storage.hpp"
#include "eexit/model/config.hpp"
#ifdef EEXIT_HAS_CUDA
#include "eexit/backend/cuda.hpp"
#endif

namespace eexit::samples {

#ifdef EEXIT_HAS_CUDA
inline constexpr bool built_with_cuda = true;
#else
inline constexpr bool built_with_cuda = false;
#endif

struct DeviceChoice {
  bool cuda = false;
  double gpu_memory_fraction = 0.0;  // share of the device for weights + KV; 0 = not given
  dtype kv = dtype::f32;             // the KV cache's precision (--kv-dtype)
};

// The flags' help lines, for the samples' --help.
inline constexpr const char* kDeviceHelp =
    "  --device D              cpu | cuda (default cpu; cuda needs a build with the CUDA\n"
    "                          backend, -DEEXIT_ENABLE_CUDA=ON, and uses GPU 0)\n"
    "  --gpu-memory-fraction F with --device cuda: size the KV cache so that the process\n"
    "                          uses at most F of the GPU's memory, (0, 1] (instead of "
    "--kv-blocks)\n"
    "  --kv-dtype T            K/V precision in the cache: f32 (default) or f16 (half the\n"
    "                          memory and the bytes attention reads; llama.cpp's default;\n"
    "                          --device cpu only)\n";

// Throws usage_error for a bad --device / --gpu-memory-fraction / --kv-dtype.
inline DeviceChoice parse_device(const Args& a) {
  DeviceChoice d;
  const std::string dev = a.str("device", "cpu");
  if (dev == "cuda")
    d.cuda = true;
  else if (dev != "cpu")
    throw usage_error("--device: '" + dev + "' is not one of cpu, cuda");
  if (d.cuda && !built_with_cuda)
    throw usage_error(
        "--device cuda: this build has no CUDA backend (configure with -DEEXIT_ENABLE_CUDA=ON)");
  if (a.has("gpu-memory-fraction")) {
    if (!d.cuda) throw usage_error("--gpu-memory-fraction needs --device cuda");
    if (a.has("kv-blocks"))
      throw usage_error("--gpu-memory-fraction and --kv-blocks both size the KV cache: give one");
    d.gpu_memory_fraction = a.real("gpu-memory-fraction", 0.9, 1e-6, 1.0);
  }
  try {
    d.kv = parse_kv_dtype(a.str("kv-dtype", "f32"));
  } catch (const error& e) {
    throw usage_error(std::string("--") + e.what());  // "--kv-dtype: unknown ..."
  }
  if (d.cuda && d.kv == dtype::f16)
    throw usage_error("--kv-dtype f16: the CUDA backend keeps K/V in f32 (use --device cpu)");
  return d;
}

// f(backend) on the chosen backend (constructed here: CudaBackend throws eexit::error when
// there is no device). Returns f's result.
template <class F>
int with_backend(const DeviceChoice& d, unsigned cpu_threads, F&& f) {
#ifdef EEXIT_HAS_CUDA
  if (d.cuda) {
    CudaBackend be;
    return f(be);
  }
#endif
  (void)d;
  CpuBackend be(cpu_threads);
  return f(be);
}

// KV blocks of 16 tokens: what --gpu-memory-fraction leaves once the model is loaded (call
// it after loading), else `otherwise`.
template <class Backend>
std::int32_t kv_blocks(Backend& be, const DeviceChoice& d, const ModelConfig& cfg,
                       std::int32_t otherwise) {
#ifdef EEXIT_HAS_CUDA
  if constexpr (std::is_same_v<Backend, CudaBackend>)
    if (d.gpu_memory_fraction > 0.0)
      return kv_blocks_from_memory(be, cfg, 16, d.gpu_memory_fraction);
#endif
  (void)be, (void)d, (void)cfg;
  return otherwise;
}

}  // namespace eexit::samples
