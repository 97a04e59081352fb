// libFuzzer target: HF tokenizer.json loading, then encoding and decoding with whatever
// loaded. Acceptable outcomes: eexit::error from load, or a tokenizer whose encode returns
// ids inside its vocabulary and whose decode returns valid UTF-8. Anything else (a crash, a
// sanitizer report, another exception escaping) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "eexit/core/error.hpp"
#include "eexit/text/tokenizer.hpp"
#include "fuzz_file.hpp"
#include "tokenizer_checks.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string path = eexit::fuzz::write_input(data, size, "tokenizer.json");
  try {
    eexit::fuzz::check_tokenizer(eexit::Tokenizer::load(path));
  } catch (const eexit::error&) {
  }
  return 0;
}
