// eexit-bench-tokenizer: encode (and decode) time against input size, for each tokenizer kind
// and four kinds of input, to show that every path grows linearly: the "x10" column is the
// time at 10x the input divided by the time at 1x and should read ~10 (a quadratic path reads
// ~100). Results in benchmarks/RESULTS.md.
//
//   eexit-bench-tokenizer [--sizes 10000,100000,1000000] [--reps 3]
//       [--sp PATH] [--bytelevel PATH] [--llama2c PATH]
// Defaults: TinyLlama's tokenizer.json (SentencePiece-style BPE), the embedded model's
// tokenizer.json (byte-level BPE) and llama2.c's tokenizer.bin, from ../shared and models/.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "eexit/text/tokenizer.hpp"

namespace {

// n bytes of one kind of input; "random" is uniformly random bytes (mostly invalid UTF-8).
std::string make_input(const std::string& kind, std::size_t n) {
  std::string s;
  s.reserve(n);
  if (kind == "spaces") {
    s.assign(n, ' ');
  } else if (kind == "newlines") {
    s.assign(n, '\n');
  } else if (kind == "words") {
    static const char* words[] = {"the ",  "quick ", "brown ", "fox ",  "jumps ", "over ",
                                  "lazy ", "dog, ",  "and ",   "then ", "it ",    "ran. "};
    std::mt19937 rng(1);
    while (s.size() < n) s += words[rng() % 12];
    s.resize(n);
  } else {
    std::mt19937 rng(2);
    while (s.size() < n) s += static_cast<char>(rng() & 0xFF);
  }
  return s;
}

std::vector<std::size_t> parse_sizes(const std::string& arg) {
  std::vector<std::size_t> out;
  std::size_t b = 0;
  while (b <= arg.size()) {
    std::size_t e = arg.find(',', b);
    if (e == std::string::npos) e = arg.size();
    out.push_back(std::stoul(arg.substr(b, e - b)));
    b = e + 1;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string sizes_arg = "10000,100000,1000000";
  int reps = 3;
  std::string sp = EEXIT_SHARED_DIR "/models/tokenizers/tinyllama-1.1b-chat-v1.0/tokenizer.json";
  std::string bl = EEXIT_SOURCE_DIR "/models/eexit-shakespeare/tokenizer.json";
  std::string l2 = EEXIT_SHARED_DIR "/models/tokenizers/llama2c/tokenizer.bin";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "%s needs a value\n", a.c_str());
      return 2;
    }
    const std::string v = argv[++i];
    if (a == "--sizes") {
      sizes_arg = v;
    } else if (a == "--reps") {
      reps = std::max(1, std::atoi(v.c_str()));
    } else if (a == "--sp") {
      sp = v;
    } else if (a == "--bytelevel") {
      bl = v;
    } else if (a == "--llama2c") {
      l2 = v;
    } else {
      std::fprintf(stderr, "unknown flag %s\n", a.c_str());
      return 2;
    }
  }
  try {
    const std::vector<std::size_t> sizes = parse_sizes(sizes_arg);
    struct Named {
      const char* name;
      eexit::Tokenizer tok;
    };
    std::vector<Named> toks = {{"sentencepiece-bpe", eexit::Tokenizer::load(sp)},
                               {"byte-level-bpe", eexit::Tokenizer::load(bl)},
                               {"llama2c", eexit::Tokenizer::load(l2)}};
    std::printf("%-18s %-9s %9s %9s %11s %6s %11s %6s\n", "tokenizer", "input", "bytes", "tokens",
                "encode ms", "x10", "decode ms", "x10");
    for (const Named& t : toks) {
      for (const char* kind : {"spaces", "newlines", "words", "random"}) {
        double prev_enc = 0, prev_dec = 0;
        for (std::size_t n : sizes) {
          const std::string text = make_input(kind, n);
          double enc = 1e30, dec = 1e30;
          std::size_t ntok = 0;
          for (int r = 0; r < reps; ++r) {  // best of reps: the machine is shared
            const auto t0 = std::chrono::steady_clock::now();
            const std::vector<int> ids = t.tok.encode(text);
            const auto t1 = std::chrono::steady_clock::now();
            const std::string back = t.tok.decode(ids);
            const auto t2 = std::chrono::steady_clock::now();
            ntok = ids.size();
            if (back.empty()) throw std::runtime_error("decode gave nothing");
            enc = std::min(enc, std::chrono::duration<double, std::milli>(t1 - t0).count());
            dec = std::min(dec, std::chrono::duration<double, std::milli>(t2 - t1).count());
          }
          char ge[16] = "", gd[16] = "";
          if (prev_enc > 0) std::snprintf(ge, sizeof ge, "%.1f", enc / prev_enc);
          if (prev_dec > 0) std::snprintf(gd, sizeof gd, "%.1f", dec / prev_dec);
          std::printf("%-18s %-9s %9zu %9zu %11.2f %6s %11.2f %6s\n", t.name, kind, n, ntok, enc,
                      ge, dec, gd);
          std::fflush(stdout);
          prev_enc = enc, prev_dec = dec;
        }
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "eexit-bench-tokenizer: %s\n", e.what());
    return 1;
  }
  return 0;
}
