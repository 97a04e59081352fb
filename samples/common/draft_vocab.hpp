#pragma once
// --draft-vocab N / --draft-vocab-file F, shared by eexit-generate and eexit-server: the
// self-speculative draft head's vocabulary (eexit/model/draft_vocab.hpp).
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "args.hpp"
#include "eexit/model/draft_vocab.hpp"

namespace eexit::samples {

inline constexpr const char* kDraftVocabHelp =
    R"(  --draft-vocab N         self-spec: the draft head computes logits only for the N most
                          frequent tokens of a ranking (--draft-vocab-file, else
                          draft_vocab.txt beside the model); the verify pass stays
                          full-vocabulary, so the output does not change
  --draft-vocab-file F    the ranking: token ids, most frequent first, one per line
                          (eexit-generate --rank-vocab CORPUS writes one); alone: all of it
)";

// The draft vocabulary the flags ask for (empty: none). Checks N's range at parse time
// (usage_error); reads the ranking when called with the model's path (eexit::error).
inline std::vector<std::int32_t> draft_vocab_option(const Args& args,
                                                    const std::string& model_path) {
  const auto n = std::size_t(args.integer("draft-vocab", 0, 1, 1 << 24));
  if (!args.has("draft-vocab") && !args.has("draft-vocab-file")) return {};
  std::string file;
  if (args.has("draft-vocab-file")) {
    file = args.str("draft-vocab-file");
  } else {
    file = shipped_draft_vocab_path(model_path);
    std::error_code ec;
    if (!std::filesystem::exists(file, ec))
      throw error("--draft-vocab",
                  "needs a token ranking: --draft-vocab-file F, or " + file +
                      " (eexit-generate --model M --rank-vocab CORPUS > F writes one)");
  }
  return draft_vocab_from_ranking(read_token_ranking(file), n, "--draft-vocab");
}

}  // namespace eexit::samples
