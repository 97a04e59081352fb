#pragma once
// The loaders under fuzz read files, not memory: each input is written to one file in a
// directory of this process's own (nothing else beside it, so tokenizer_config.json and
// friends are never picked up), rewritten for every input.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace eexit::fuzz {

inline std::string write_input(const std::uint8_t* data, std::size_t size, const char* name) {
  static const std::filesystem::path dir = [] {
    const char* t = std::getenv("TMPDIR");
    auto d = std::filesystem::path(t && *t ? t : "/tmp") /
             ("eexit_fuzz_" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  const std::string path = (dir / name).string();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), std::streamsize(size));
  if (!out) std::abort();  // the harness's own failure, not a finding
  return path;
}

}  // namespace eexit::fuzz
