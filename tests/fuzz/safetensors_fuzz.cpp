// libFuzzer target: safetensors header parsing on arbitrary bytes. The only acceptable
// outcomes are a parsed header whose tensors all lie inside the input, or eexit::error;
// anything else (a crash, a sanitizer report, another exception) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "eexit/core/error.hpp"
#include "eexit/model/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto h = eexit::safetensors::parse_header(std::span(data, size), size, "fuzz");
    for (const auto& t : h.tensors) {
      // The invariants the readers rely on: in bounds, and sized by shape and dtype.
      if (t.begin > t.end || t.end > size || t.begin < h.data_offset) std::abort();
      if (t.element_size == 0 || t.bytes() % t.element_size != 0) std::abort();
    }
  } catch (const eexit::error&) {
  }
  return 0;
}
