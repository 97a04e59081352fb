#pragma once
// What every loaded tokenizer must do, whatever file it came from: encode a few texts that
// reach each code path (spaces, added-token look-alikes, byte fallback, ill-formed UTF-8)
// into in-range ids, and decode any ids, in range or not, into valid UTF-8.
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "eexit/text/tokenizer.hpp"
#include "eexit/text/utf8.hpp"

namespace eexit::fuzz {

inline void check_tokenizer(const Tokenizer& tok) {
  static const std::string_view texts[] = {
      "Hello world", "  two  spaces\n\nnewlines\t", "<s></s><unk><|endoftext|> <0x41>",
      "caf\xC3\xA9 \xE2\x96\x81 \xF0\x9F\x98\x80", "\xFF\xC3(\xE2\x82 bad utf-8", ""};
  for (std::string_view t : texts) {
    for (bool special : {true, false}) {
      const std::vector<int> ids = tok.encode(t, special);
      for (int id : ids)
        if (id < 0 || id >= tok.vocab_size()) std::abort();
      const std::string back = tok.decode(ids);
      if (detail::utf8_lossy(back) != back) std::abort();  // not valid UTF-8
    }
  }
  const std::vector<int> odd = {-1, 0, 1, 2, tok.vocab_size() - 1, tok.vocab_size(), 1 << 30};
  const std::string s = tok.decode(odd);
  if (detail::utf8_lossy(s) != s) std::abort();
}

}  // namespace eexit::fuzz
