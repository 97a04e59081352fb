#pragma once
// A draft vocabulary for self-speculation (issue 17): a draft pass's head computes logits
// only for the N most frequent tokens, so on a 128k-vocabulary model the draft stops
// paying for the whole LM head (Llama 3.2 1B: the head is ~21% of the weights a token
// reads). The verify pass stays full-vocabulary, so the output does not change: a draft
// outside the subset is never proposed (the draft distribution q is zero there) and
// rejection sampling stays exact (engine/speculation.hpp).
//
// The ranking comes from a token count over a corpus the user picks (eexit-generate
// --rank-vocab CORPUS writes one) and may ship with the model as draft_vocab.txt.
// Format: one token id per line, most frequent first; anything after the id on its line
// (the count) is ignored, as are blank lines and lines starting with '#'.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "eexit/core/error.hpp"

namespace eexit {

// The name of a ranking shipped with a model: in an HF model directory, or beside a model file.
inline constexpr const char* draft_vocab_file_name = "draft_vocab.txt";

// Where a ranking shipped with the model at model_path would be.
inline std::string shipped_draft_vocab_path(const std::string& model_path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path p(model_path);
  const fs::path dir = fs::is_directory(p, ec) ? p : p.parent_path();
  return (dir / draft_vocab_file_name).string();
}

// Checks ids as a draft vocabulary of a vocab-token model: not empty, each id in
// [0, vocab), none twice. where names the source in the error.
inline void check_draft_vocab(std::span<const std::int32_t> ids, int vocab,
                              const std::string& where) {
  if (ids.empty()) throw error(where, "the draft vocabulary is empty");
  std::vector<std::uint8_t> seen(std::size_t(std::max(vocab, 0)), 0);
  for (const std::int32_t t : ids) {
    if (t < 0 || t >= vocab)
      throw error(where, "token id " + std::to_string(t) +
                             " is outside the model's vocabulary [0, " + std::to_string(vocab) +
                             ")");
    if (seen[std::size_t(t)]++)
      throw error(where, "token id " + std::to_string(t) + " is listed twice");
  }
}

// Reads a ranking file (format above). Throws eexit::error naming the file and line.
inline std::vector<std::int32_t> read_token_ranking(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw error(path, "cannot open the draft vocabulary ranking");
  std::vector<std::int32_t> out;
  std::string line;
  for (std::size_t n = 1; std::getline(in, line); ++n) {
    const auto b = line.find_first_not_of(" \t\r");
    if (b == std::string::npos || line[b] == '#') continue;
    std::size_t e = b;
    while (e < line.size() && line[e] >= '0' && line[e] <= '9') ++e;
    const bool sep = e == line.size() || line[e] == ' ' || line[e] == '\t' || line[e] == '\r';
    if (e == b || e - b > 9 || !sep)
      throw error(path + ":" + std::to_string(n),
                  "expected a token id (a non-negative integer) at the start of the line");
    out.push_back(std::int32_t(std::stol(line.substr(b, e - b))));
  }
  if (out.empty()) throw error(path, "the draft vocabulary ranking lists no token");
  return out;
}

// The draft vocabulary: the first n ids of ranking (n = 0: all of them). A ranking shorter
// than n is an error (it would silently give a smaller subset than asked for). The ids are
// checked against the model's vocabulary where they are used (load_model, check_draft_vocab).
inline std::vector<std::int32_t> draft_vocab_from_ranking(std::span<const std::int32_t> ranking,
                                                          std::size_t n, const std::string& where) {
  if (n > ranking.size())
    throw error(where, "asked for the " + std::to_string(n) +
                           " most frequent tokens but the ranking lists " +
                           std::to_string(ranking.size()));
  return {ranking.begin(), ranking.begin() + std::ptrdiff_t(n ? n : ranking.size())};
}

// Token ids by count, most frequent first, ties to the lower id; tokens never counted are
// left out. counts[t] = occurrences of token t.
inline std::vector<std::pair<std::int32_t, std::int64_t>> rank_by_count(
    std::span<const std::int64_t> counts) {
  std::vector<std::pair<std::int32_t, std::int64_t>> r;
  for (std::size_t t = 0; t < counts.size(); ++t)
    if (counts[t] > 0) r.emplace_back(std::int32_t(t), counts[t]);
  std::stable_sort(r.begin(), r.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  return r;
}

}  // namespace eexit
