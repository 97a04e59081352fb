// CudaBackend models the backend concept, checked by g++ alone (include/eexit/backend/cuda.hpp
// needs no CUDA headers), so CI proves it without nvcc or a GPU. Where the CUDA library is
// linked (EEXIT_HAS_CUDA) and no device is present, constructing the backend is a clear
// eexit::error rather than a crash.
#include <doctest/doctest.h>

#include <string>

#include "eexit/backend/cuda.hpp"
#include "eexit/cache/paged.hpp"
#include "eexit/concepts.hpp"

static_assert(eexit::backend<eexit::CudaBackend>);
static_assert(eexit::kv_cache<eexit::PagedCache<eexit::CudaBackend, 16>>);
static_assert(!std::is_copy_constructible_v<eexit::CudaBuffer<float>>);
static_assert(std::is_nothrow_move_constructible_v<eexit::CudaBuffer<float>>);

// Anything that instantiates CudaBuffer's destructor needs the CUDA library to link.
#ifdef EEXIT_HAS_CUDA
TEST_CASE("a default CudaBuffer is empty and owns nothing") {
  eexit::CudaBuffer<float> b;
  CHECK(b.empty());
  CHECK(b.data() == nullptr);
  eexit::CudaBuffer<float> c = std::move(b);
  CHECK(c.size() == 0);
}

TEST_CASE("without a device, CudaBackend throws eexit::error naming the problem") {
  if (eexit::CudaBackend::available()) {
    MESSAGE("a CUDA device is present: the no-device path is not exercised here");
    return;
  }
  try {
    eexit::CudaBackend be;
    FAIL("constructed a CudaBackend without a device");
  } catch (const eexit::error& e) {
    CHECK(std::string(e.what()).find("no CUDA device") != std::string::npos);
  }
}
#endif
