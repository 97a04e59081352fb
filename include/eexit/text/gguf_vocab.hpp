#pragma once
// Tokenizers from a GGUF file's tokenizer.ggml.* metadata, built with the two tokenizer
// kinds that already exist (no third BPE):
//  - model "llama" (SentencePiece: tokens, scores, token types, byte fallback <0xXX>): the
//    vocabulary is written as a llama2.c tokenizer.bin in memory ("▁" -> " ", as llama2.c's
//    export does) and read by the llama2.c loader, whose run.c-style merging of the
//    best-scoring pair is SentencePiece BPE's; then the GGUF's own unk/bos/eos ids, token
//    types (control/unknown tokens decode to nothing) and add_bos/add_eos flags apply.
//  - model "gpt2" (byte-level BPE: tokens, merges): the vocabulary becomes the equivalent
//    tokenizer.json object (ByteLevel pre-tokenizer and decoder, the split rule named by
//    tokenizer.ggml.pre) and goes through the HF loader. Control, unknown and user-defined
//    tokens are added tokens (split out of the text whole, as HF does).
// Limits: SentencePiece vocabularies ignore user-defined tokens' whole-match (they are
// reached by merging only) and need add_space_prefix (the Llama default).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "eexit/core/error.hpp"
#include "eexit/model/gguf.hpp"
#include "eexit/text/tokenizer.hpp"

namespace eexit {

namespace detail::gguf_vocab {

// llama.cpp's token types.
enum : std::int64_t {
  normal = 1,
  unknown = 2,
  control = 3,
  user_defined = 4,
  unused = 5,
  byte = 6
};

// SentencePiece's "▁" -> " " (built fresh: GCC 12 misreads an in-place replace as overlap).
inline std::string spaces_from_metaspace(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    if (s.compare(i, 3, "\xE2\x96\x81") == 0) {
      out += ' ';
      i += 3;
    } else {
      out += s[i++];
    }
  }
  return out;
}

// Token ids named by the metadata; absent -> fallback. Ids outside the vocabulary (GGUF
// writes 0xFFFFFFFF for "none") -> -1 for optional ones.
inline int token_id(const gguf::File& f, const std::string& key, int n, int fallback) {
  const gguf::Value* v = f.find(key);
  if (!v) return fallback;
  if (v->is_array() || !v->is_integer() || v->elem == gguf::value_type::boolean)
    throw error(f.field(key), "must be an integer");
  const std::int64_t id = v->ints[0];
  return id >= 0 && id < n ? int(id) : -1;
}

}  // namespace detail::gguf_vocab

inline Tokenizer Tokenizer::from_gguf(const gguf::File& f) {
  Tokenizer t;
  t.load_gguf(f);
  return t;
}

inline void Tokenizer::load_gguf(const std::string& file) { load_gguf(gguf::File::open(file)); }

inline void Tokenizer::load_gguf(const gguf::File& f) {
  namespace gv = detail::gguf_vocab;
  const std::string& file = f.where();
  const auto model = f.string("tokenizer.ggml.model");
  if (!model) throw error(f.field("tokenizer.ggml.model"), "missing (no tokenizer in this file)");
  const gguf::Value* tokens = f.array("tokenizer.ggml.tokens", false, false, true);
  if (!tokens || tokens->strings.empty())
    throw error(f.field("tokenizer.ggml.tokens"), "missing or empty");
  const std::vector<std::string>& tok = tokens->strings;
  const int n = int(tok.size());
  const gguf::Value* types = f.array("tokenizer.ggml.token_type", true, false, false);
  if (types && types->ints.size() != tok.size())
    throw error(f.field("tokenizer.ggml.token_type"), "has " + std::to_string(types->ints.size()) +
                                                          " entries for " + std::to_string(n) +
                                                          " tokens");
  const auto type_of = [&](int i) {
    return types ? types->ints[std::size_t(i)] : std::int64_t(gv::normal);
  };
  const bool spm = *model == "llama";
  if (!spm && *model != "gpt2")
    throw error(f.field("tokenizer.ggml.model"),
                "tokenizer model '" + *model + "' is not supported (only \"llama\" and \"gpt2\")");
  const bool add_bos = f.boolean("tokenizer.ggml.add_bos_token").value_or(spm);
  const bool add_eos = f.boolean("tokenizer.ggml.add_eos_token").value_or(false);
  const int bos = gv::token_id(f, "tokenizer.ggml.bos_token_id", n, spm ? 1 : -1);
  const int eos = gv::token_id(f, "tokenizer.ggml.eos_token_id", n, spm ? 2 : -1);
  int unk = gv::token_id(f, "tokenizer.ggml.unknown_token_id", n, -1);
  if (add_bos && bos < 0) throw error(f.field("tokenizer.ggml.bos_token_id"), "missing or invalid");
  if (add_eos && eos < 0) throw error(f.field("tokenizer.ggml.eos_token_id"), "missing or invalid");

  if (spm) {
    if (!f.boolean("tokenizer.ggml.add_space_prefix").value_or(true))
      throw error(f.field("tokenizer.ggml.add_space_prefix"),
                  "false is not supported (SentencePiece's dummy prefix is always added)");
    const gguf::Value* scores = f.array("tokenizer.ggml.scores", false, true, false);
    if (scores && scores->reals.size() != tok.size())
      throw error(f.field("tokenizer.ggml.scores"), "has " + std::to_string(scores->reals.size()) +
                                                        " entries for " + std::to_string(n) +
                                                        " tokens");
    // The in-memory tokenizer.bin: i32 max_token_length, then {f32 score, i32 len, bytes}.
    std::string bin(4, '\0');
    std::int32_t max_len = 1;
    for (int i = 0; i < n; ++i) {
      const std::string piece = gv::spaces_from_metaspace(tok[std::size_t(i)]);
      const double sd = scores ? scores->reals[std::size_t(i)] : 0.0;
      if (!std::isfinite(sd) || std::abs(sd) > 3e38)
        throw error(f.field("tokenizer.ggml.scores"),
                    "token " + std::to_string(i) + ": score is not a finite float");
      const float score = float(sd);
      const auto len = std::int32_t(piece.size());
      max_len = std::max(max_len, len);
      bin.append(reinterpret_cast<const char*>(&score), 4);
      bin.append(reinterpret_cast<const char*>(&len), 4);
      bin += piece;
    }
    std::memcpy(bin.data(), &max_len, 4);
    load_llama2c(file, bin);
    // The GGUF's types and ids replace llama2.c's hard-coded 0/1/2.
    for (int i = 0; i < n; ++i) {
      const auto k = std::size_t(i);
      const std::int64_t t = type_of(i);
      special_[k] = t == gv::control || t == gv::unknown;
      const int b = parse_byte_piece(pieces_[k]);
      bytes_[k] = special_[k] ? std::string() : b >= 0 ? std::string(1, char(b)) : pieces_[k];
      if (t == gv::unknown && unk < 0) unk = i;
    }
    // The llama2.c encoder emits unk for a character with neither a piece nor a byte token,
    // so it must be a real id: llama.cpp's SentencePiece default, 0, when none is named.
    unk_ = unk >= 0 ? unk : 0, bos_ = bos, eos_ = eos;
  } else {
    using json = nlohmann::json;
    const gguf::Value* merges = f.array("tokenizer.ggml.merges", false, false, true);
    if (!merges)
      throw error(f.field("tokenizer.ggml.merges"), "missing (a gpt2 vocabulary needs them)");
    // llama.cpp's pre-tokenizer names -> the split rules the HF loader knows.
    const std::string pre = f.string("tokenizer.ggml.pre").value_or("default");
    json pre_tok;
    if (pre == "default" || pre == "gpt-2" || pre == "gpt2") {
      pre_tok = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
    } else if (pre == "llama3" || pre == "llama-v3" || pre == "llama-bpe") {
      const char* llama3 =
          "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
          "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
      pre_tok = {
          {"type", "Sequence"},
          {"pretokenizers",
           json::array(
               {{{"type", "Split"}, {"pattern", {{"Regex", llama3}}}},
                {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}};
    } else {
      throw error(f.field("tokenizer.ggml.pre"),
                  "pre-tokenizer '" + pre + "' is not supported (gpt-2, llama-bpe)");
    }
    json vocab = json::object(), added = json::array();
    for (int i = 0; i < n; ++i) {
      const std::int64_t t = type_of(i);
      const std::string& p = tok[std::size_t(i)];
      if (t == gv::control || t == gv::unknown || t == gv::user_defined) {
        if (p.empty()) continue;  // an empty added token can never match; it decodes to ""
        added.push_back({{"id", i}, {"content", p}, {"special", t != gv::user_defined}});
      } else if (!vocab.contains(p)) {
        vocab[p] = i;
      }
    }
    json m = {{"type", "BPE"}, {"vocab", std::move(vocab)}, {"merges", merges->strings}};
    if (unk >= 0) m["unk_token"] = tok[std::size_t(unk)];
    json tmpl_single = json::array(), specials = json::object();
    if (add_bos) {
      tmpl_single.push_back({{"SpecialToken", {{"id", "bos"}, {"type_id", 0}}}});
      specials["bos"] = {{"id", "bos"}, {"ids", {bos}}, {"tokens", {tok[std::size_t(bos)]}}};
    }
    tmpl_single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
    if (add_eos) {
      tmpl_single.push_back({{"SpecialToken", {{"id", "eos"}, {"type_id", 0}}}});
      specials["eos"] = {{"id", "eos"}, {"ids", {eos}}, {"tokens", {tok[std::size_t(eos)]}}};
    }
    const json j = {
        {"model", std::move(m)},
        {"added_tokens", std::move(added)},
        {"pre_tokenizer", std::move(pre_tok)},
        {"decoder", {{"type", "ByteLevel"}}},
        {"post_processor",
         {{"type", "TemplateProcessing"}, {"single", tmpl_single}, {"special_tokens", specials}}}};
    try {
      parse_hf(file + ": tokenizer.ggml.*", j);
    } catch (const json::exception& e) {
      throw error(file + ": tokenizer.ggml.*", std::string("unexpected content: ") + e.what());
    }
    // Ids the JSON object could not hold (duplicate pieces at the end) still count.
    if (pieces_.size() < tok.size()) resize_vocab(tok.size());
    bos_ = bos, eos_ = eos;
  }
  if (spm) {  // the HF template already says this for gpt2
    prefix_ids_.clear(), suffix_ids_.clear();
    if (add_bos) prefix_ids_.push_back(bos);
    if (add_eos) suffix_ids_.push_back(eos);
  }
}

}  // namespace eexit
