// Tokenizing grows linearly with the input, for every tokenizer kind and kind of text: the
// tokenizer counts its work (bytes scanned or written, symbols, heap operations) when
// EEXIT_TOKENIZER_COUNT_WORK is defined, and 10x the input must cost about 10x the work. A
// quadratic path (as the in-place " " -> "▁" replacement was: 1 MiB of spaces took seconds)
// reads ~100x here. No clock is involved. Wall-clock figures: benchmarks/tokenizer_bench.cpp.
#define EEXIT_TOKENIZER_COUNT_WORK
#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "../test_paths.hpp"
#include "eexit/text/tokenizer.hpp"

using eexit::Tokenizer;
using eexit::test::shared;
using eexit::test::source;

namespace {

// n bytes of text of one kind; random bytes are mostly ill-formed UTF-8 (byte fallback).
std::string text_of(const std::string& kind, std::size_t n) {
  std::mt19937 rng(7);
  std::string s;
  s.reserve(n + 16);
  while (s.size() < n) {
    if (kind == "spaces") {
      s += ' ';
    } else if (kind == "newlines") {
      s += '\n';
    } else if (kind == "mixed-ws") {
      s += (rng() & 1) ? " \n" : "\t ";
    } else if (kind == "words") {
      static const char* w[] = {"to ", "be, ", "or ", "not ", "that ", "is ", "the ", "question. "};
      s += w[rng() % 8];
    } else if (kind == "angles") {  // every byte may start an added token ("<s>", "</s>")
      s += (rng() & 1) ? "</" : "<";
    } else {
      s += static_cast<char>(rng() & 0xFF);
    }
  }
  s.resize(n);
  return s;
}

struct Work {
  std::uint64_t encode = 0, decode = 0;
};

Work work_of(const Tokenizer& tok, const std::string& text) {
  Work w;
  eexit::detail::tokenizer_work = 0;
  const std::vector<int> ids = tok.encode(text);
  w.encode = eexit::detail::tokenizer_work;
  eexit::detail::tokenizer_work = 0;
  const std::string back = tok.decode(ids);
  w.decode = eexit::detail::tokenizer_work;
  CHECK(!back.empty());
  return w;
}

void check_linear(const Tokenizer& tok) {
  for (const std::string kind : {"spaces", "newlines", "mixed-ws", "words", "angles", "random"}) {
    CAPTURE(kind);
    const Work small = work_of(tok, text_of(kind, 20000));
    const Work big = work_of(tok, text_of(kind, 200000));
    REQUIRE(small.encode > 0);
    REQUIRE(small.decode > 0);
    const double enc = double(big.encode) / double(small.encode);
    const double dec = double(big.decode) / double(small.decode);
    CAPTURE(enc);
    CAPTURE(dec);
    // Linear: ~10 (a heap operation counts 1, so log n factors do not show); quadratic: ~100.
    CHECK(enc > 8.0);
    CHECK(enc < 12.0);
    CHECK(dec > 8.0);
    CHECK(dec < 12.0);
  }
}

}  // namespace

TEST_CASE("SentencePiece-style tokenizer.json (TinyLlama) encodes and decodes in linear work") {
  check_linear(Tokenizer::load(shared("models/tokenizers/tinyllama-1.1b-chat-v1.0")));
}

TEST_CASE("byte-level tokenizer.json (the embedded model) encodes and decodes in linear work") {
  check_linear(Tokenizer::load(source("models/eexit-shakespeare")));
}

TEST_CASE("llama2.c tokenizer.bin encodes and decodes in linear work") {
  check_linear(Tokenizer::load(shared("models/tokenizers/llama2c/tokenizer.bin")));
}

TEST_CASE("100 KB of spaces tokenize as the piecewise reference: runs of 16 \"▁\" tokens") {
  // TinyLlama's vocabulary has "▁" repeated up to 16 times as one token, and BPE merges the
  // lowest-rank pair leftmost first, so n spaces (+ the prepended "▁") become floor((n+1)/16)
  // 16-"▁" tokens and one token for the rest. Built here from the vocabulary, not the encoder.
  const Tokenizer tok = Tokenizer::load(shared("models/tokenizers/tinyllama-1.1b-chat-v1.0"));
  std::string run;
  for (int i = 0; i < 16; ++i) run += "\xE2\x96\x81";
  const auto sixteen = tok.token_id(run);
  REQUIRE(sixteen);
  const std::size_t n = 100000;  // + 1 prepended = 100001 = 6250 * 16 + 1
  std::vector<int> want = {tok.bos_id()};
  want.insert(want.end(), (n + 1) / 16, *sixteen);
  const auto rest = tok.token_id("\xE2\x96\x81");
  REQUIRE(rest);
  want.push_back(*rest);
  CHECK(tok.encode(std::string(n, ' ')) == want);
  // And the text decodes back (the dummy prefix stripped).
  CHECK(tok.decode(want) == std::string(n, ' '));
}
