#pragma once
// Hand-written GPT-2 / Llama 3 pre-tokenizer splits and the GPT-2 bytes-to-unicode table.
//
// std::regex has no \p{L} / \p{N}, so the two standard patterns are implemented as explicit
// scanners that follow the alternation order of the regexes:
//   GPT-2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   Llama 3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
//            | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// Character classes: \p{L} and \p{N} are the Unicode general categories, from tables generated
// out of the Unicode data (text/unicode_classes.hpp, tools/gen_unicode_classes.mjs); \s is the
// Unicode White_Space property, as in the Rust regex engines that HF tokenizers and tiktoken
// run (it has U+0085 and not U+FEFF: JavaScript's \s is the other way round, so JS ports of
// these tokenizers split differently around those two characters). Checked against two npm
// implementations of the Llama 3 tokenizer by tests/text/llama3. Splits always partition the
// input, so byte-level round trips are exact.
#include <array>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "eexit/text/unicode_classes.hpp"
#include "eexit/text/utf8.hpp"

namespace eexit::detail {

enum class SplitRule { none, gpt2, llama3 };

inline bool cp_is_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

inline bool cp_is_number(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  return unicode::in_ranges(unicode::number, c);
}

inline bool cp_is_letter(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  return unicode::in_ranges(unicode::letter, c);
}

// Punctuation, symbols, marks, controls, unassigned: the [^\s\p{L}\p{N}] class.
inline bool cp_is_other(char32_t c) {
  return !cp_is_space(c) && !cp_is_number(c) && !cp_is_letter(c);
}

// Splits text into byte ranges [begin, end) by the GPT-2 or Llama 3 rules. Ill-formed UTF-8
// bytes are treated one by one as punctuation, so the ranges always cover the whole input.
inline std::vector<std::pair<std::size_t, std::size_t>> pre_split(std::string_view text,
                                                                  SplitRule rule) {
  struct Cp {
    char32_t c;
    std::size_t off;
  };
  std::vector<Cp> cps;
  cps.reserve(text.size() + 1);
  EEXIT_TOKENIZER_WORK(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const Utf8Scan sc = utf8_scan(text, i);
    if (sc.status == Utf8Status::complete) {
      cps.push_back({sc.cp, i});
      i += sc.len;
    } else {
      cps.push_back({0xFFFD, i});
      i += 1;
    }
  }
  const std::size_t n = cps.size();
  cps.push_back({0, text.size()});  // sentinel: byte offset of the end

  std::vector<std::pair<std::size_t, std::size_t>> out;
  if (rule == SplitRule::none) {
    if (!text.empty()) out.emplace_back(0, text.size());
    return out;
  }
  const bool l3 = rule == SplitRule::llama3;
  auto at = [&](std::size_t k) -> char32_t { return k < n ? cps[k].c : 0; };
  auto lower = [](char32_t c) -> char32_t { return (c >= 'A' && c <= 'Z') ? c + 32 : c; };
  auto is_nl = [](char32_t c) { return c == '\r' || c == '\n'; };

  std::size_t i = 0;
  while (i < n) {
    std::size_t j = i;  // end (exclusive, in code points) of the match at i
    const char32_t c = at(i);
    if (c == '\'' && i + 1 < n) {
      const char32_t a = l3 ? lower(at(i + 1)) : at(i + 1);
      const char32_t b = i + 2 < n ? (l3 ? lower(at(i + 2)) : at(i + 2)) : 0;
      if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
        j = i + 3;
      } else if (a == 's' || a == 't' || a == 'm' || a == 'd') {
        j = i + 2;
      }
    }
    if (j == i) {  // letters with an optional one-character prefix
      std::size_t k = i;
      if (l3) {
        if (!cp_is_letter(c) && !is_nl(c) && !cp_is_number(c) && i + 1 < n &&
            cp_is_letter(at(i + 1)))
          k = i + 1;
      } else if (c == ' ' && i + 1 < n && cp_is_letter(at(i + 1))) {
        k = i + 1;
      }
      if (k < n && cp_is_letter(at(k))) {
        while (k < n && cp_is_letter(at(k))) ++k;
        j = k;
      }
    }
    if (j == i) {  // numbers
      std::size_t k = i;
      if (!l3 && c == ' ' && i + 1 < n && cp_is_number(at(i + 1))) k = i + 1;
      if (k < n && cp_is_number(at(k))) {
        const std::size_t limit = l3 ? k + 3 : n;
        while (k < n && k < limit && cp_is_number(at(k))) ++k;
        j = k;
      }
    }
    if (j == i) {  // punctuation run with an optional leading space
      std::size_t k = i;
      if (c == ' ' && i + 1 < n && cp_is_other(at(i + 1))) k = i + 1;
      if (k < n && cp_is_other(at(k))) {
        while (k < n && cp_is_other(at(k))) ++k;
        if (l3)
          while (k < n && is_nl(at(k))) ++k;
        j = k;
      }
    }
    if (j == i && cp_is_space(c)) {
      std::size_t e = i;
      while (e < n && cp_is_space(at(e))) ++e;
      EEXIT_TOKENIZER_WORK(e - i);  // scanned forward, and at most as far back
      if (l3) {                     // \s*[\r\n]+ : up to and including the last newline of the run
        for (std::size_t k = e; k > i; --k) {
          if (is_nl(at(k - 1))) {
            j = k;
            break;
          }
        }
      }
      if (j == i) {
        // \s+(?!\S): leave the last space to prefix the next word; \s+ otherwise.
        j = (e == n || e - i == 1) ? e : e - 1;
      }
    }
    if (j == i) j = i + 1;  // unreachable with the classes above; keeps the loop total
    EEXIT_TOKENIZER_WORK(j - i);
    out.emplace_back(cps[i].off, cps[j].off);
    i = j;
  }
  return out;
}

// GPT-2's bytes_to_unicode: printable bytes map to themselves, the others to U+0100 + n, so
// every byte has a visible, non-space character in the vocabulary.
inline const std::array<char32_t, 256>& byte_to_unicode() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      t[b] = keep ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

inline const std::array<std::string, 256>& byte_to_unicode_utf8() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    for (int b = 0; b < 256; ++b) append_utf8(t[b], byte_to_unicode()[b]);
    return t;
  }();
  return table;
}

// Inverse map: code point -> byte, or -1.
inline int unicode_to_byte(char32_t c) {
  static const std::array<int, 512> table = [] {
    std::array<int, 512> t;
    t.fill(-1);
    for (int b = 0; b < 256; ++b) t[byte_to_unicode()[b]] = b;
    return t;
  }();
  return c < 512 ? table[c] : -1;
}

}  // namespace eexit::detail
