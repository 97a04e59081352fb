#pragma once
// Compile-once instantiations: an opt-in for programs of many translation units.
//
// The library is header-only, so every translation unit that runs a model on the CPU
// instantiates LlamaModel<CpuBackend> and compiles, with it, every CPU matmul kernel for
// every weight type (most of the time an -O3 build of such a file takes), and every one
// that calls load_model compiles every checkpoint format's parser. A program with
// many of them (this repository's tests, samples and benchmarks) can compile that once:
//   - compile every translation unit with EEXIT_EXTERN_TEMPLATES defined (model/llama.hpp
//     then declares the instantiation extern), and
//   - include this header in exactly one of them (with the same compiler flags).
// Nothing changes in what runs: the same code, compiled in one place. In CMake, a static
// library with one source that includes this header, whose PUBLIC compile definitions carry
// EEXIT_EXTERN_TEMPLATES, is all it takes (see eexit_instances in CMakeLists.txt).
#include "eexit/backend/cpu.hpp"
#include "eexit/model/llama.hpp"
#include "eexit/model/load.hpp"

namespace eexit {
template class LlamaModel<CpuBackend>;
template ModelWeights detail::load_any<>(const std::string&, std::optional<dtype>);
}  // namespace eexit
