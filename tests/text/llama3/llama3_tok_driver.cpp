// The C++ side of tests/text/llama3/compare.mjs: tokenizes each case with eexit::Tokenizer
// loaded from a tokenizer.json and from a vocab-only GGUF, and prints one JSON line per case:
//   {"j": ids from tokenizer.json, "g": ids from the GGUF (omitted when equal to "j"),
//    "d": hex of decode(encode(x)) (tokenizer.json), "dg": false when the GGUF's decode differs,
//    "b": whether the tokens' raw bytes (special tokens: their text) concatenate to x}
// Encoding adds the special tokens (BOS) as each file says; decode skips special tokens.
// usage: llama3_tok_driver TOKENIZER.json VOCAB.gguf CASES   (CASES: one hex string a line,
// the case's bytes, so that ill-formed UTF-8 passes through unchanged)
//        llama3_tok_driver --chat TOKENIZER.json < CONVERSATIONS.json
// --chat: for each conversation (a list of {role, content}) prints {"text": the prompt that
// format_chat(ChatStyle::llama3) renders, "ids": its encoding with BOS}, one JSON line each:
// what eexit-server feeds the model for /v1/chat/completions.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "eexit/text/chat_template.hpp"
#include "eexit/text/tokenizer.hpp"

namespace {

std::string from_hex(const std::string& h) {
  auto nib = [](char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; };
  std::string s;
  for (std::size_t i = 0; i + 1 < h.size(); i += 2)
    s += static_cast<char>(nib(h[i]) * 16 + nib(h[i + 1]));
  return s;
}

std::string to_hex(const std::string& s) {
  static const char* d = "0123456789abcdef";
  std::string h;
  for (unsigned char c : s) h += d[c >> 4], h += d[c & 15];
  return h;
}

void ids_json(std::string& out, const std::vector<int>& ids) {
  out += '[';
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(ids[i]);
  }
  out += ']';
}

}  // namespace

int chat(const char* tokenizer) {
  const eexit::Tokenizer tok = eexit::Tokenizer::load(tokenizer, 128256);
  const auto convs = nlohmann::json::parse(std::cin);
  for (const auto& conv : convs) {
    std::vector<eexit::ChatMessage> msgs;
    for (const auto& m : conv) msgs.push_back({m.at("role"), m.at("content")});
    const std::string text = eexit::format_chat(eexit::ChatStyle::llama3, msgs);
    std::cout << nlohmann::json{{"text", text}, {"ids", tok.encode(text, true)}}.dump() << "\n";
  }
  return 0;
}

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--chat") {
    try {
      return chat(argv[2]);
    } catch (const std::exception& e) {
      std::cerr << "llama3_tok_driver: " << e.what() << "\n";
      return 1;
    }
  }
  if (argc != 4) {
    std::cerr << "usage: llama3_tok_driver TOKENIZER.json VOCAB.gguf CASES\n";
    return 2;
  }
  try {
    const auto t0 = std::chrono::steady_clock::now();
    const eexit::Tokenizer hf = eexit::Tokenizer::load(argv[1], 128256);
    const eexit::Tokenizer gg = eexit::Tokenizer::load(argv[2], 128256);
    const auto t1 = std::chrono::steady_clock::now();
    std::ifstream in(argv[3]);
    if (!in) throw eexit::error(argv[3], "cannot open");
    std::string line, out;
    std::size_t n = 0;
    while (std::getline(in, line)) {
      const std::string x = from_hex(line);
      const std::vector<int> a = hf.encode(x, true), b = gg.encode(x, true);
      std::string raw;
      // A special token's bytes are its text, except the BOS added in front.
      for (std::size_t k = a.empty() || a[0] != hf.bos_id() ? 0 : 1; k < a.size(); ++k)
        raw += hf.is_special(a[k]) ? hf.piece(a[k]) : hf.token_bytes(a[k]);
      const std::string d = hf.decode(a);
      out = "{\"j\":";
      ids_json(out, a);
      if (b != a) {
        out += ",\"g\":";
        ids_json(out, b);
      }
      out += ",\"d\":\"" + to_hex(d) + "\"";
      if (gg.decode(b) != d) out += ",\"dg\":false";
      out += std::string(",\"b\":") + (raw == x ? "true" : "false");
      out += "}\n";
      std::fwrite(out.data(), 1, out.size(), stdout);
      ++n;
    }
    const auto t2 = std::chrono::steady_clock::now();
    using ms = std::chrono::milliseconds;
    std::cerr << "llama3_tok_driver: " << n << " cases; load "
              << std::chrono::duration_cast<ms>(t1 - t0).count() << " ms, encode+decode "
              << std::chrono::duration_cast<ms>(t2 - t1).count() << " ms\n";
  } catch (const std::exception& e) {
    std::cerr << "llama3_tok_driver: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
