#pragma once
// UTF-8 scanning shared by the tokenizers and the stream decoder. Validation follows the
// Unicode "well-formed byte sequences" table (no overlongs, no surrogates, <= U+10FFFF), and
// ill-formed input is replaced by U+FFFD per *maximal subpart*, as WHATWG / Python's
// errors="replace" / Rust's from_utf8_lossy do, so that our output matches theirs.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

// EEXIT_TOKENIZER_WORK(n): counts n units of work (bytes scanned or written, symbols,
// heap operations) in every tokenizer loop, so that a test can check that encoding and
// decoding grow linearly without timing anything. Compiled in only when a translation unit
// defines EEXIT_TOKENIZER_COUNT_WORK before including the tokenizer (one test does); the
// count is per thread.
#ifdef EEXIT_TOKENIZER_COUNT_WORK
namespace eexit::detail {
inline thread_local std::uint64_t tokenizer_work = 0;
}
#define EEXIT_TOKENIZER_WORK(n) (::eexit::detail::tokenizer_work += std::uint64_t(n))
#else
#define EEXIT_TOKENIZER_WORK(n) ((void)0)
#endif

namespace eexit::detail {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

enum class Utf8Status { complete, incomplete, invalid };

struct Utf8Scan {
  Utf8Status status;
  std::size_t len;  // complete: sequence length; incomplete: bytes present; invalid: bytes to skip
  char32_t cp = 0;  // valid only when complete
};

// Looks at the sequence starting at s[i]. "incomplete" means every byte so far is allowed and
// the string ends before the sequence does: a streaming caller should wait for more bytes.
inline Utf8Scan utf8_scan(std::string_view s, std::size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return {Utf8Status::complete, 1, b0};
  std::size_t need;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  char32_t cp;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2, cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3, cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;  // overlong
    if (b0 == 0xED) hi = 0x9F;  // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4, cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;  // overlong
    if (b0 == 0xF4) hi = 0x8F;  // > U+10FFFF
  } else {
    return {Utf8Status::invalid, 1};
  }
  for (std::size_t k = 1; k < need; ++k) {
    if (i + k >= s.size()) return {Utf8Status::incomplete, k};
    const auto b = static_cast<unsigned char>(s[i + k]);
    const bool ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) return {Utf8Status::invalid, k};  // the maximal subpart is the k bytes before b
    cp = (cp << 6) | (b & 0x3F);
  }
  return {Utf8Status::complete, need, cp};
}

inline void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Moves the complete, valid prefix of `pending` to the result, replacing ill-formed parts by
// U+FFFD. With at_end false a trailing incomplete sequence stays in `pending` (it may be
// completed by the next token); with at_end true it becomes one U+FFFD.
inline std::string utf8_take_complete(std::string& pending, bool at_end) {
  std::string out;
  std::size_t i = 0;
  EEXIT_TOKENIZER_WORK(pending.size());
  while (i < pending.size()) {
    const Utf8Scan sc = utf8_scan(pending, i);
    if (sc.status == Utf8Status::complete) {
      out.append(pending, i, sc.len);
    } else if (sc.status == Utf8Status::invalid || at_end) {
      out += kReplacementChar;
    } else {
      break;
    }
    i += sc.len;
  }
  pending.erase(0, i);
  return out;
}

inline std::string utf8_lossy(std::string_view s) {
  std::string tmp(s);
  return utf8_take_complete(tmp, true);
}

}  // namespace eexit::detail
