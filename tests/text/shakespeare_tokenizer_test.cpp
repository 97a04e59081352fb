// The embedded model's tokenizer (models/eexit-shakespeare/tokenizer.json, trained by
// tools/train_bpe.py): our C++ Tokenizer must encode exactly as the Python tokenizer that
// produced the training data (ids in tests/fixtures/ee_reference.json, written by
// tools/ee_reference.py), and round-trip the whole held-out text.
#include <doctest/doctest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "../test_paths.hpp"
#include "eexit/text/tokenizer.hpp"

namespace {

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE(f);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

const eexit::Tokenizer& shakespeare() {
  static const eexit::Tokenizer tok =
      eexit::Tokenizer::load(eexit::test::source("models/eexit-shakespeare/tokenizer.json"));
  return tok;
}

}  // namespace

TEST_CASE("shakespeare tokenizer: special token is BOS and EOS, vocab 1024") {
  const auto& tok = shakespeare();
  CHECK(tok.vocab_size() == 1024);
  CHECK(tok.bos_id() == 1023);
  CHECK(tok.eos_id() == 1023);
  CHECK(tok.is_special(1023));
  CHECK(tok.encode("") == std::vector<int>{1023});
  CHECK(tok.encode("", /*add_special=*/false).empty());
}

TEST_CASE("shakespeare tokenizer: encode equals the Python tokenizer") {
  const auto fixture =
      nlohmann::json::parse(slurp(eexit::test::source("tests/fixtures/ee_reference.json")));
  const auto& cases = fixture.at("tokenizer");
  REQUIRE(cases.size() >= 5);
  for (const auto& c : cases) {
    const std::string text = c.at("text").get<std::string>();
    const std::vector<int> want = c.at("ids").get<std::vector<int>>();
    CAPTURE(text);
    CHECK(shakespeare().encode(text) == want);
  }
  for (const auto& p : fixture.at("prompts")) {
    const std::string text = p.at("text").get<std::string>();
    CAPTURE(text);
    CHECK(shakespeare().encode(text) == p.at("ids").get<std::vector<int>>());
  }
}

TEST_CASE("shakespeare tokenizer: decode(encode(x)) == x on the held-out 10%") {
  const std::string all = slurp(eexit::test::shared("data/tinyshakespeare.txt"));
  // The held-out part is the last 10% of the characters (the text is ASCII, so of the bytes):
  // tools/train_bpe.py split_text.
  const std::string held = all.substr(all.size() * 9 / 10);
  REQUIRE(held.size() > 100000);
  const auto ids = shakespeare().encode(held);
  REQUIRE(!ids.empty());
  CHECK(ids.front() == 1023);
  // Byte-level BPE with 767 merges: about 2.4 characters per token on Shakespeare.
  CHECK(ids.size() < held.size() / 2);
  CHECK(shakespeare().decode(ids) == held);
}
