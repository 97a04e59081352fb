// libFuzzer target: llama2.c tokenizer.bin loading, then encoding and decoding with whatever
// loaded (see tokenizer_checks.hpp). Acceptable: eexit::error from load, or a tokenizer that
// passes the checks.
#include <cstddef>
#include <cstdint>
#include <string>

#include "eexit/core/error.hpp"
#include "eexit/text/tokenizer.hpp"
#include "fuzz_file.hpp"
#include "tokenizer_checks.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // A leading '{' would select the tokenizer.json parser: that has its own target.
  const std::string path = eexit::fuzz::write_input(data, size, "tokenizer.bin");
  try {
    eexit::fuzz::check_tokenizer(eexit::Tokenizer::load(path));
  } catch (const eexit::error&) {
  }
  return 0;
}
