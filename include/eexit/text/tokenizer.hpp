#pragma once
// Tokenizers: one eexit::Tokenizer class for three file flavours, picked by Tokenizer::load.
//  - HF tokenizer.json, SentencePiece-style BPE (Llama 2, TinyLlama): normalizer Prepend "▁" +
//    Replace " "->"▁" (or a Metaspace pre-tokenizer), BPE by merge rank, byte fallback <0xXX>.
//  - HF tokenizer.json, byte-level BPE (GPT-2, Llama 3, our own): GPT-2 or Llama 3 split rules
//    (hand-written scanners over generated Unicode tables, see pretokenize.hpp) and
//    bytes-to-unicode. Llama 3: ids equal to two npm implementations on tinyshakespeare and
//    Unicode strings (tests/text/llama3).
//    decode(encode(s)) == s for every valid UTF-8 s.
//  - llama2.c tokenizer.bin: encoded exactly like run.c (dummy prefix space, per-codepoint
//    lookup with <0xXX> fallback, then greedy merging of the best-scoring adjacent pair).
//  - GGUF tokenizer.ggml.* metadata (text/gguf_vocab.hpp): "llama" vocabularies become the
//    llama2.c kind (scores), "gpt2" ones the byte-level BPE kind (merges).
// Added tokens ("<s>", "<|eot_id|>", ...) found in the text are always split out as whole
// tokens first, as HF does by default; their lstrip/rstrip/single_word flags are ignored.
// decode() and StreamDecoder produce valid UTF-8: ill-formed bytes become one U+FFFD per
// maximal subpart (HF's ByteFallback decoder writes one per byte; only invalid output differs).
// Known vocabulary quirk: Llama 2's tokenizer.json spells SentencePiece's four U+00A0 pieces
// (ids 8655, 17891, 20246, 30081) with ASCII spaces, so NBSP in the input byte-falls-back to
// <0xC2><0xA0> where SentencePiece, GGUF and llama2.c's tokenizer.bin give 30081.
// Unsupported tokenizer.json features (other normalizers, WordPiece/Unigram models, unknown
// split regexes) throw eexit::error at load time instead of tokenizing differently.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <optional>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "eexit/core/error.hpp"
#include "eexit/model/gguf.hpp"
#include "eexit/text/pretokenize.hpp"
#include "eexit/text/utf8.hpp"

namespace eexit {

class StreamDecoder;

class Tokenizer {
 public:
  enum class Kind { sentencepiece_bpe, byte_level_bpe, llama2c };

  // path: a HF tokenizer.json, a llama2.c tokenizer.bin, or a directory holding tokenizer.json.
  static Tokenizer load(const std::string& path) { return load(path, -1); }
  // expected_vocab_size (>= 0): the model's vocabulary size; a mismatch throws. llama2.c's
  // tokenizer.bin stores no token count (run.c takes it from the checkpoint), so this is the
  // only way to detect a .bin truncated exactly at a record boundary.
  static Tokenizer load(const std::string& path, int expected_vocab_size) {
    namespace fs = std::filesystem;
    std::error_code ec;
    std::string file = path;
    if (fs::is_directory(path, ec)) file = (fs::path(path) / "tokenizer.json").string();
    Tokenizer t;
    if (gguf::has_magic(file)) {  // a model file may be gigabytes: mapped, not read into a string
      t.load_gguf(file);
      return t.check_vocab_size(file, expected_vocab_size);
    }
    const std::string data = read_file(file);
    std::size_t first = data.find_first_not_of(" \t\r\n");
    if (first != std::string::npos && data[first] == '{') {
      t.load_hf(file, data);
    } else {
      t.load_llama2c(file, data);
    }
    return t.check_vocab_size(file, expected_vocab_size);
  }

  // The tokenizer in a parsed GGUF file's tokenizer.ggml.* metadata (text/gguf_vocab.hpp).
  static inline Tokenizer from_gguf(const gguf::File& f);

  // add_special: add BOS (and any other ids) as the post-processor says; llama2.c: BOS.
  std::vector<int> encode(std::string_view text, bool add_special = true) const {
    std::vector<int> ids;
    if (add_special) ids = prefix_ids_;
    if (kind_ == Kind::llama2c) {
      encode_llama2c(text, ids);
    } else {
      encode_hf(text, ids);
    }
    if (add_special) ids.insert(ids.end(), suffix_ids_.begin(), suffix_ids_.end());
    return ids;
  }

  // Full decode by the tokenizer's decoder rules; special tokens skipped.
  inline std::string decode(std::span<const int> ids) const;

  // The raw bytes one token contributes (byte tokens resolved, "▁" -> " "); "" for special,
  // control and out-of-range ids.
  std::string token_bytes(int id) const {
    if (id < 0 || id >= vocab_size()) return {};
    return bytes_[static_cast<std::size_t>(id)];
  }

  int vocab_size() const { return static_cast<int>(pieces_.size()); }
  int bos_id() const { return bos_; }
  int eos_id() const { return eos_; }
  int unk_id() const { return unk_; }
  Kind kind() const { return kind_; }
  bool is_special(int id) const {
    return id >= 0 && id < vocab_size() && special_[static_cast<std::size_t>(id)];
  }
  // Lookup by piece string as stored (HF: "▁the" / "Ġthe"; llama2.c: " the").
  std::optional<int> token_id(std::string_view piece) const {
    auto it = piece_to_id_.find(std::string(piece));
    if (it == piece_to_id_.end()) return std::nullopt;
    return it->second;
  }
  // The piece string as stored; "" for out-of-range ids.
  std::string piece(int id) const {
    if (id < 0 || id >= vocab_size()) return {};
    return pieces_[static_cast<std::size_t>(id)];
  }
  // Whether decoding drops one leading space of the text (SentencePiece's dummy prefix).
  bool strips_leading_space() const { return strip_leading_space_; }

 private:
  friend class StreamDecoder;
  using json = nlohmann::json;

  struct Merge {
    int rank;
    int id;
  };
  struct Added {
    std::string content;
    int id;
  };

  Kind kind_ = Kind::sentencepiece_bpe;
  std::vector<std::string> pieces_;  // (vocab) as stored
  std::vector<std::string> bytes_;   // (vocab) what each token decodes to
  std::vector<char> special_;        // (vocab)
  std::vector<float> scores_;        // (vocab) llama2.c only
  std::unordered_map<std::string, int> piece_to_id_;
  std::unordered_map<std::uint64_t, Merge> merges_;            // (left id, right id) -> merge
  std::vector<Added> added_;                                   // longest content first
  std::vector<char> added_first_ = std::vector<char>(256, 0);  // first bytes of added_
  std::vector<int> byte_token_ = std::vector<int>(256, -1);    // byte -> <0xXX> id
  std::vector<int> prefix_ids_, suffix_ids_;                   // post-processor template
  int bos_ = -1, eos_ = -1, unk_ = -1;
  bool strip_leading_space_ = false;
  bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false;
  // SentencePiece-style normalization / Metaspace pre-tokenization.
  std::string prepend_;  // prepended to every non-empty segment ("▁")
  bool prepend_first_only_ = false;
  std::vector<std::pair<std::string, std::string>> replace_;
  bool metaspace_split_ = false;
  // Byte-level pre-tokenization.
  detail::SplitRule split_ = detail::SplitRule::none;
  bool add_prefix_space_ = false;

  static std::uint64_t pair_key(int a, int b) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) |
           static_cast<std::uint32_t>(b);
  }

  Tokenizer&& check_vocab_size(const std::string& file, int expected) {
    if (expected >= 0 && vocab_size() != expected)
      throw error(file, "vocabulary has " + std::to_string(vocab_size()) +
                            " tokens, the model expects " + std::to_string(expected));
    return std::move(*this);
  }

  // Defined in text/gguf_vocab.hpp (included at the end of this header).
  inline void load_gguf(const gguf::File& f);
  inline void load_gguf(const std::string& file);

  static std::string read_file(const std::string& file) {
    std::ifstream f(file, std::ios::binary);
    if (!f) throw error(file, "cannot open file");
    std::string data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (f.bad()) throw error(file, "read failed");
    return data;
  }

  // One pass into a new string: replacing in place shifts the whole tail at every match,
  // which made " " -> "▁" quadratic (1 MiB of spaces took seconds).
  static std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
    if (from.empty()) return std::string(s);
    std::string out;
    out.reserve(s.size());
    std::size_t pos = 0;
    for (std::size_t hit; (hit = s.find(from, pos)) != std::string_view::npos;
         pos = hit + from.size()) {
      out.append(s, pos, hit - pos);
      out.append(to);
    }
    out.append(s.substr(pos));
    EEXIT_TOKENIZER_WORK(s.size() + out.size());
    return out;
  }

  // "<0xAB>" -> 0xAB, else -1.
  static int parse_byte_piece(std::string_view p) {
    if (p.size() != 6 || p.substr(0, 3) != "<0x" || p[5] != '>') return -1;
    auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    const int hi = hex(p[3]), lo = hex(p[4]);
    return (hi < 0 || lo < 0) ? -1 : hi * 16 + lo;
  }

  void resize_vocab(std::size_t n) {
    pieces_.resize(n);
    bytes_.resize(n);
    special_.resize(n, 0);
  }

  // ---- llama2.c tokenizer.bin -----------------------------------------------------------
  void load_llama2c(const std::string& file, const std::string& data) {
    kind_ = Kind::llama2c;
    std::size_t off = 0;
    auto take = [&](void* dst, std::size_t n, const char* what) {
      if (data.size() - off < n) throw error(file, std::string("truncated: ") + what);
      std::memcpy(dst, data.data() + off, n);
      off += n;
    };
    std::int32_t max_len = 0;
    take(&max_len, 4, "max_token_length");
    if (max_len <= 0 || max_len > (1 << 20)) throw error(file, "bad max_token_length");
    while (off < data.size()) {
      const std::size_t id = pieces_.size();
      float score = 0;
      std::int32_t len = 0;
      take(&score, 4, "token score");
      take(&len, 4, "token length");
      if (!std::isfinite(score)) throw error(file, "token " + std::to_string(id) + ": bad score");
      // run.c sizes its merge buffer by max_token_length; a longer piece would overflow it.
      if (len < 0 || len > max_len)
        throw error(file, "token " + std::to_string(id) + ": bad length " + std::to_string(len));
      std::string p(static_cast<std::size_t>(len), '\0');
      take(p.data(), p.size(), "token bytes");
      pieces_.push_back(std::move(p));
      scores_.push_back(score);
    }
    // run.c hard-codes 0 = <unk>, 1 = BOS, 2 = EOS.
    if (pieces_.size() < 3) throw error(file, "fewer than 3 tokens");
    bytes_.resize(pieces_.size());
    special_.assign(pieces_.size(), 0);
    unk_ = 0, bos_ = 1, eos_ = 2;
    prefix_ids_ = {bos_};
    for (int s = 0; s < 3; ++s) special_[static_cast<std::size_t>(s)] = 1;
    for (std::size_t i = 0; i < pieces_.size(); ++i) {
      piece_to_id_.emplace(pieces_[i], static_cast<int>(i));  // first id wins on duplicates
      if (special_[i]) continue;
      const int b = parse_byte_piece(pieces_[i]);
      bytes_[i] = b >= 0 ? std::string(1, static_cast<char>(b)) : pieces_[i];
      if (b >= 0 && byte_token_[static_cast<std::size_t>(b)] < 0)
        byte_token_[static_cast<std::size_t>(b)] = static_cast<int>(i);
    }
    strip_leading_space_ = true;
  }

  void encode_llama2c(std::string_view text, std::vector<int>& out) const {
    std::vector<int> toks;
    auto push_piece = [&](std::string_view p) {
      auto it = piece_to_id_.find(std::string(p));
      if (it != piece_to_id_.end()) {
        toks.push_back(it->second);
        return;
      }
      for (unsigned char b : p) {
        const int id = byte_token_[b];
        toks.push_back(id >= 0 ? id : unk_);
      }
    };
    // SentencePiece's add_dummy_prefix, as run.c does it: a separate " " token that merging
    // then glues to the first word.
    if (!text.empty()) push_piece(" ");
    // run.c's codepoint grouping: a lead byte plus up to 3 continuation bytes, unvalidated.
    EEXIT_TOKENIZER_WORK(text.size());
    for (std::size_t i = 0; i < text.size();) {
      std::size_t j = i + 1;
      while (j < text.size() && j - i < 4 && (static_cast<unsigned char>(text[j]) & 0xC0) == 0x80)
        ++j;
      push_piece(text.substr(i, j - i));
      i = j;
    }
    // Greedy merging: repeatedly merge the adjacent pair whose concatenation is a token with the
    // highest score, the leftmost one on ties, and never a pair scoring <= -1e10 (run.c's
    // initial best_score). run.c rescans all pairs per merge (quadratic); a heap over a linked
    // list picks the same pair each round: stale entries are skipped, and original positions
    // keep left-to-right order, so the smallest position is the leftmost.
    struct Node {
      int id, next;
      bool alive;
    };
    struct Cand {
      float score;
      int pos, id;
      bool operator<(const Cand& o) const {  // priority_queue top = highest score, then leftmost
        return score != o.score ? score < o.score : pos > o.pos;
      }
    };
    const int n = static_cast<int>(toks.size());
    std::vector<Node> nodes(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i)
      nodes[static_cast<std::size_t>(i)] = {toks[static_cast<std::size_t>(i)],
                                            i + 1 < n ? i + 1 : -1, true};
    auto pair_id = [&](int i) -> int {
      const Node& l = nodes[static_cast<std::size_t>(i)];
      if (l.next < 0) return -1;
      std::string cat = pieces_[static_cast<std::size_t>(l.id)];
      cat += pieces_[static_cast<std::size_t>(nodes[static_cast<std::size_t>(l.next)].id)];
      EEXIT_TOKENIZER_WORK(cat.size());
      auto it = piece_to_id_.find(cat);
      return it == piece_to_id_.end() ? -1 : it->second;
    };
    std::priority_queue<Cand> heap;
    auto consider = [&](int i) {
      const int id = pair_id(i);
      if (id < 0) return;
      const float score = scores_[static_cast<std::size_t>(id)];
      if (score > -1e10f) heap.push({score, i, id});
    };
    std::vector<int> prev(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) prev[static_cast<std::size_t>(i)] = i - 1;
    for (int i = 0; i + 1 < n; ++i) consider(i);
    while (!heap.empty()) {
      const Cand c = heap.top();
      heap.pop();
      Node& l = nodes[static_cast<std::size_t>(c.pos)];
      if (!l.alive || pair_id(c.pos) != c.id) continue;  // stale
      Node& r = nodes[static_cast<std::size_t>(l.next)];
      l.id = c.id;
      r.alive = false;
      l.next = r.next;
      if (r.next >= 0) prev[static_cast<std::size_t>(r.next)] = c.pos;
      consider(c.pos);
      if (prev[static_cast<std::size_t>(c.pos)] >= 0)
        consider(prev[static_cast<std::size_t>(c.pos)]);
    }
    toks.clear();
    for (int i = 0; i >= 0 && n > 0; i = nodes[static_cast<std::size_t>(i)].next)
      toks.push_back(nodes[static_cast<std::size_t>(i)].id);
    out.insert(out.end(), toks.begin(), toks.end());
  }

  // ---- HF tokenizer.json ------------------------------------------------------------------
  static const json& field(const json& j, const char* key, const std::string& where) {
    if (!j.is_object()) throw error(where, "expected an object");
    auto it = j.find(key);
    if (it == j.end()) throw error(where + "." + key, "missing");
    return *it;
  }
  static std::string str_field(const json& j, const char* key, const std::string& where) {
    const json& v = field(j, key, where);
    if (!v.is_string()) throw error(where + "." + key, "expected a string");
    return v.get<std::string>();
  }
  static bool bool_field(const json& j, const char* key, bool def, const std::string& where) {
    if (!j.is_object()) throw error(where, "expected an object");
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return def;
    if (!it->is_boolean()) throw error(where + "." + key, "expected a boolean");
    return it->get<bool>();
  }

  int id_of(const std::string& piece, const std::string& where) const {
    auto it = piece_to_id_.find(piece);
    if (it == piece_to_id_.end()) throw error(where, "unknown token \"" + piece + "\"");
    return it->second;
  }

  void load_hf(const std::string& file, const std::string& data) {
    json j;
    try {
      j = json::parse(data);
    } catch (const json::exception& e) {
      throw error(file, std::string("bad JSON: ") + e.what());
    }
    try {
      parse_hf(file, j);
    } catch (const json::exception& e) {  // a type our checks did not anticipate
      throw error(file, std::string("unexpected JSON content: ") + e.what());
    }
    read_tokenizer_config(file);
  }

  void parse_hf(const std::string& file, const json& j) {
    const std::string w = file + ":";
    const json& model = field(j, "model", w);
    const std::string wm = w + "model";
    if (!model.is_object()) throw error(wm, "expected an object");
    if (model.contains("type") && !(model["type"].is_string() && model["type"] == "BPE"))
      throw error(wm + ".type", "only BPE models are supported");
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      auto it = model.find(k);
      if (it != model.end() && !it->is_null() && !(it->is_string() && it->get<std::string>() == ""))
        throw error(wm + "." + k, "not supported");
    }
    byte_fallback_ = bool_field(model, "byte_fallback", false, wm);
    fuse_unk_ = bool_field(model, "fuse_unk", false, wm);
    ignore_merges_ = bool_field(model, "ignore_merges", false, wm);

    // Vocabulary: piece -> id; ids may leave gaps, which stay empty pieces.
    const json& vocab = field(model, "vocab", wm);
    if (!vocab.is_object()) throw error(wm + ".vocab", "expected an object");
    // Ids index dense arrays, so a corrupt huge id must not size them: allow gaps, but only
    // a few more ids than there are entries.
    std::int64_t max_ids = static_cast<std::int64_t>(vocab.size()) + 1024;
    if (auto at = j.find("added_tokens"); at != j.end() && at->is_array())
      max_ids += static_cast<std::int64_t>(at->size());
    auto check_id = [&](const json& v, const std::string& where) -> int {
      if (!v.is_number_integer()) throw error(where, "expected an integer id");
      const auto id = v.get<std::int64_t>();
      if (id < 0 || id >= max_ids) throw error(where, "id out of range");
      return static_cast<int>(id);
    };
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      const int id = check_id(it.value(), wm + ".vocab[\"" + it.key() + "\"]");
      if (static_cast<std::size_t>(id) >= pieces_.size()) resize_vocab(id + 1);
      pieces_[static_cast<std::size_t>(id)] = it.key();
      piece_to_id_[it.key()] = id;
    }

    // Added tokens: matched in raw text; special ones decode to nothing.
    std::vector<char> added_flag;
    if (auto it = j.find("added_tokens"); it != j.end() && !it->is_null()) {
      if (!it->is_array()) throw error(w + "added_tokens", "expected an array");
      for (std::size_t k = 0; k < it->size(); ++k) {
        const json& a = (*it)[k];
        const std::string wa = w + "added_tokens[" + std::to_string(k) + "]";
        const int id = check_id(field(a, "id", wa), wa + ".id");
        std::string content = str_field(a, "content", wa);
        if (content.empty()) throw error(wa + ".content", "empty");
        if (static_cast<std::size_t>(id) >= pieces_.size()) resize_vocab(id + 1);
        pieces_[static_cast<std::size_t>(id)] = content;
        piece_to_id_[content] = id;
        if (bool_field(a, "special", false, wa)) special_[static_cast<std::size_t>(id)] = 1;
        added_flag.resize(pieces_.size(), 0);
        added_flag[static_cast<std::size_t>(id)] = 1;
        added_first_[static_cast<unsigned char>(content[0])] = 1;
        added_.push_back({std::move(content), id});
      }
    }
    added_flag.resize(pieces_.size(), 0);
    std::stable_sort(added_.begin(), added_.end(), [](const Added& a, const Added& b) {
      return a.content.size() > b.content.size();
    });
    if (pieces_.empty()) throw error(wm + ".vocab", "empty");

    if (auto it = model.find("unk_token"); it != model.end() && !it->is_null()) {
      if (!it->is_string()) throw error(wm + ".unk_token", "expected a string");
      unk_ = id_of(it->get<std::string>(), wm + ".unk_token");
    }

    // Merges: "a b" strings or ["a", "b"] pairs; rank = position.
    const json& merges = field(model, "merges", wm);
    if (!merges.is_array()) throw error(wm + ".merges", "expected an array");
    merges_.reserve(merges.size());
    for (std::size_t r = 0; r < merges.size(); ++r) {
      const json& m = merges[r];
      const std::string wr = wm + ".merges[" + std::to_string(r) + "]";
      std::string a, b;
      if (m.is_string()) {
        // Llama 2's tokenizer.json has three merges of tokens that contain ASCII spaces
        // (SentencePiece's U+00A0 pieces, written as spaces), e.g. "   " = " " + " ". Take the
        // first split where both halves and their concatenation are tokens.
        const std::string s = m.get<std::string>();
        bool found = false;
        for (std::size_t sp = s.find(' '); sp != std::string::npos && !found;
             sp = s.find(' ', sp + 1)) {
          a = s.substr(0, sp), b = s.substr(sp + 1);
          found = piece_to_id_.count(a) && piece_to_id_.count(b) && piece_to_id_.count(a + b);
        }
        if (!found && s.find(' ') == std::string::npos) throw error(wr, "expected \"left right\"");
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>(), b = m[1].get<std::string>();
      } else {
        throw error(wr, "expected a string or a pair of strings");
      }
      const int ia = id_of(a, wr), ib = id_of(b, wr), ic = id_of(a + b, wr);
      merges_.emplace(pair_key(ia, ib), Merge{static_cast<int>(r), ic});  // first rank wins
    }

    parse_normalizer(j.contains("normalizer") ? j["normalizer"] : json(), w + "normalizer");
    bool byte_level = false;
    parse_pre_tokenizer(j.contains("pre_tokenizer") ? j["pre_tokenizer"] : json(),
                        w + "pre_tokenizer", byte_level);
    bool decoder_byte_level = false;
    parse_decoder(j.contains("decoder") ? j["decoder"] : json(), w + "decoder", decoder_byte_level);
    byte_level = byte_level || decoder_byte_level;
    kind_ = byte_level ? Kind::byte_level_bpe : Kind::sentencepiece_bpe;
    parse_post_processor(j.contains("post_processor") ? j["post_processor"] : json(),
                         w + "post_processor");

    // What each token decodes to.
    for (std::size_t i = 0; i < pieces_.size(); ++i) {
      const std::string& p = pieces_[i];
      if (special_[i]) continue;
      if (added_flag[i]) {
        bytes_[i] = p;
      } else if (byte_level) {
        std::string out;
        for (std::size_t k = 0; k < p.size();) {
          const detail::Utf8Scan sc = detail::utf8_scan(p, k);
          const std::size_t len = sc.status == detail::Utf8Status::complete ? sc.len : 1;
          const int b =
              sc.status == detail::Utf8Status::complete ? detail::unicode_to_byte(sc.cp) : -1;
          if (b >= 0) {
            out += static_cast<char>(b);
          } else {
            out.append(p, k, len);
          }
          k += len;
        }
        bytes_[i] = std::move(out);
      } else {
        const int b = byte_fallback_ ? parse_byte_piece(p) : -1;
        bytes_[i] =
            b >= 0 ? std::string(1, static_cast<char>(b)) : replace_all(p, "\xE2\x96\x81", " ");
      }
      if (!byte_level && byte_fallback_) {
        const int b = parse_byte_piece(p);
        if (b >= 0 && byte_token_[static_cast<std::size_t>(b)] < 0)
          byte_token_[static_cast<std::size_t>(b)] = static_cast<int>(i);
      }
    }
    if (byte_level) {
      // Every byte must have its character in the vocabulary, or some texts cannot be encoded.
      for (int b = 0; b < 256; ++b) {
        auto it = piece_to_id_.find(detail::byte_to_unicode_utf8()[static_cast<std::size_t>(b)]);
        if (it == piece_to_id_.end())
          throw error(wm + ".vocab",
                      "byte-level vocabulary lacks the character for byte " + std::to_string(b));
        byte_token_[static_cast<std::size_t>(b)] = it->second;
      }
    }
    if (bos_ < 0 && !prefix_ids_.empty()) bos_ = prefix_ids_.front();
    for (const char* name : {"<s>", "<|begin_of_text|>"}) {
      if (bos_ >= 0) break;
      if (auto id = token_id(name)) bos_ = *id;
    }
    for (const char* name : {"</s>", "<|end_of_text|>", "<|endoftext|>"}) {
      if (eos_ >= 0) break;
      if (auto id = token_id(name)) eos_ = *id;
    }
  }

  void parse_normalizer(const json& n, const std::string& w) {
    if (n.is_null()) return;
    const std::string type = str_field(n, "type", w);
    if (type == "Sequence") {
      const json& list = field(n, "normalizers", w);
      if (!list.is_array()) throw error(w + ".normalizers", "expected an array");
      for (std::size_t k = 0; k < list.size(); ++k)
        parse_normalizer(list[k], w + ".normalizers[" + std::to_string(k) + "]");
    } else if (type == "Prepend") {
      if (!replace_.empty()) throw error(w, "Prepend after Replace is not supported");
      prepend_ += str_field(n, "prepend", w);
    } else if (type == "Replace") {
      const json& pat = field(n, "pattern", w);
      if (!pat.is_object() || !pat.contains("String"))
        throw error(w + ".pattern", "only String patterns are supported");
      std::string from = str_field(pat, "String", w + ".pattern");
      if (from.empty()) throw error(w + ".pattern", "empty");
      replace_.emplace_back(std::move(from), str_field(n, "content", w));
    } else {
      throw error(w + ".type", "normalizer \"" + type + "\" is not supported");
    }
  }

  void parse_pre_tokenizer(const json& p, const std::string& w, bool& byte_level) {
    if (p.is_null()) return;
    const std::string type = str_field(p, "type", w);
    if (type == "Sequence") {
      const json& list = field(p, "pretokenizers", w);
      if (!list.is_array()) throw error(w + ".pretokenizers", "expected an array");
      for (std::size_t k = 0; k < list.size(); ++k)
        parse_pre_tokenizer(list[k], w + ".pretokenizers[" + std::to_string(k) + "]", byte_level);
    } else if (type == "ByteLevel") {
      byte_level = true;
      add_prefix_space_ = bool_field(p, "add_prefix_space", false, w);
      if (bool_field(p, "use_regex", true, w) && split_ == detail::SplitRule::none)
        split_ = detail::SplitRule::gpt2;
    } else if (type == "Split") {
      const json& pat = field(p, "pattern", w);
      if (!pat.is_object() || !pat.contains("Regex"))
        throw error(w + ".pattern", "only Regex patterns are supported");
      const std::string re = str_field(pat, "Regex", w + ".pattern");
      if (re.find("\\p{N}{1,3}") != std::string::npos && re.find("(?i:'s") != std::string::npos) {
        split_ = detail::SplitRule::llama3;
      } else if (re.find("'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+") != std::string::npos) {
        split_ = detail::SplitRule::gpt2;
      } else {
        throw error(w + ".pattern", "unsupported split regex (only GPT-2 / Llama 3 patterns)");
      }
      if (bool_field(p, "invert", false, w)) throw error(w + ".invert", "not supported");
    } else if (type == "Metaspace") {
      std::string rep = p.contains("replacement") ? str_field(p, "replacement", w) : "\xE2\x96\x81";
      replace_.emplace_back(" ", rep);
      std::string scheme = "always";
      if (p.contains("prepend_scheme")) {
        scheme = str_field(p, "prepend_scheme", w);
      } else if (!bool_field(p, "add_prefix_space", true, w)) {
        scheme = "never";
      }
      if (scheme != "never") prepend_ = rep;
      prepend_first_only_ = scheme == "first";
      metaspace_split_ = bool_field(p, "split", true, w);
    } else {
      throw error(w + ".type", "pre_tokenizer \"" + type + "\" is not supported");
    }
  }

  void parse_decoder(const json& d, const std::string& w, bool& byte_level) {
    if (d.is_null()) return;
    const std::string type = str_field(d, "type", w);
    if (type == "Sequence") {
      const json& list = field(d, "decoders", w);
      if (!list.is_array()) throw error(w + ".decoders", "expected an array");
      for (std::size_t k = 0; k < list.size(); ++k)
        parse_decoder(list[k], w + ".decoders[" + std::to_string(k) + "]", byte_level);
    } else if (type == "ByteLevel") {
      byte_level = true;
    } else if (type == "Strip") {
      const json& start = field(d, "start", w);
      if (!start.is_number_integer()) throw error(w + ".start", "expected an integer");
      if (str_field(d, "content", w) == " " && start.get<std::int64_t>() > 0)
        strip_leading_space_ = true;
    } else if (type == "Metaspace") {
      std::string scheme = "always";
      if (d.contains("prepend_scheme")) scheme = str_field(d, "prepend_scheme", w);
      if (scheme != "never" && bool_field(d, "add_prefix_space", true, w))
        strip_leading_space_ = true;
    }
    // Replace "▁"->" ", ByteFallback and Fuse are what token_bytes already does.
  }

  void parse_post_processor(const json& p, const std::string& w) {
    if (p.is_null()) return;
    const std::string type = str_field(p, "type", w);
    if (type == "Sequence") {
      const json& list = field(p, "processors", w);
      if (!list.is_array()) throw error(w + ".processors", "expected an array");
      for (std::size_t k = 0; k < list.size(); ++k)
        parse_post_processor(list[k], w + ".processors[" + std::to_string(k) + "]");
    } else if (type == "TemplateProcessing") {
      const json& single = field(p, "single", w);
      if (!single.is_array()) throw error(w + ".single", "expected an array");
      const json& specials = field(p, "special_tokens", w);
      bool seen_a = false;
      prefix_ids_.clear(), suffix_ids_.clear();
      for (std::size_t k = 0; k < single.size(); ++k) {
        const std::string ws = w + ".single[" + std::to_string(k) + "]";
        const json& piece = single[k];
        if (piece.is_object() && piece.contains("Sequence")) {
          seen_a = true;
        } else if (piece.is_object() && piece.contains("SpecialToken")) {
          const std::string name = str_field(piece["SpecialToken"], "id", ws + ".SpecialToken");
          const json& spec = field(specials, name.c_str(), w + ".special_tokens");
          const json& ids = field(spec, "ids", w + ".special_tokens." + name);
          if (!ids.is_array())
            throw error(w + ".special_tokens." + name + ".ids", "expected an array");
          for (const json& idj : ids) {
            if (!idj.is_number_integer()) throw error(w + ".special_tokens." + name, "bad id");
            const auto id = idj.get<std::int64_t>();
            if (id < 0 || id >= vocab_size())
              throw error(w + ".special_tokens." + name, "id out of range");
            (seen_a ? suffix_ids_ : prefix_ids_).push_back(static_cast<int>(id));
          }
        } else {
          throw error(ws, "expected Sequence or SpecialToken");
        }
      }
    }
    // ByteLevel (offsets only) and others add no tokens for a single sequence.
  }

  // tokenizer_config.json next to tokenizer.json names BOS/EOS where the template does not.
  void read_tokenizer_config(const std::string& file) {
    namespace fs = std::filesystem;
    const fs::path cfg = fs::path(file).parent_path() / "tokenizer_config.json";
    std::error_code ec;
    if (!fs::is_regular_file(cfg, ec)) return;
    const std::string where = cfg.string();
    json j;
    try {
      j = json::parse(read_file(where));
    } catch (const json::exception& e) {
      throw error(where, std::string("bad JSON: ") + e.what());
    }
    if (!j.is_object()) throw error(where, "expected an object");
    auto name_of = [&](const char* key) -> std::optional<std::string> {
      auto it = j.find(key);
      if (it == j.end() || it->is_null()) return std::nullopt;
      if (it->is_string()) return it->get<std::string>();
      if (it->is_object()) return str_field(*it, "content", where + ":" + key);
      throw error(where + ":" + key, "expected a string or an object");
    };
    if (auto b = name_of("bos_token"); b && prefix_ids_.empty()) {
      if (auto id = token_id(*b)) bos_ = *id;
    }
    if (auto e = name_of("eos_token")) {
      if (auto id = token_id(*e)) eos_ = *id;
    }
  }

  // Splits text around added tokens (leftmost, then longest match) and tokenizes the rest.
  void encode_hf(std::string_view text, std::vector<int>& out) const {
    std::size_t start = 0, i = 0;
    bool first_segment = true;
    while (i < text.size()) {
      const Added* hit = nullptr;
      if (!added_first_[static_cast<unsigned char>(text[i])]) {
        ++i;
        continue;
      }
      for (const Added& a : added_) {
        EEXIT_TOKENIZER_WORK(std::min(a.content.size(), text.size() - i));
        if (text.compare(i, a.content.size(), a.content) == 0) {
          hit = &a;
          break;
        }
      }
      if (!hit) {
        ++i;
        continue;
      }
      encode_segment(text.substr(start, i - start), first_segment && start == 0, out);
      first_segment = false;
      out.push_back(hit->id);
      i += hit->content.size();
      start = i;
    }
    encode_segment(text.substr(start), start == 0, out);
  }

  void encode_segment(std::string_view seg, bool at_text_start, std::vector<int>& out) const {
    if (seg.empty()) return;
    EEXIT_TOKENIZER_WORK(seg.size());
    if (kind_ == Kind::byte_level_bpe) {
      std::string s(seg);
      if (add_prefix_space_ && s.front() != ' ') s.insert(s.begin(), ' ');
      for (auto [b, e] : detail::pre_split(s, split_)) {
        std::string_view word = std::string_view(s).substr(b, e - b);
        if (ignore_merges_) {
          std::string mapped;
          for (unsigned char c : word) mapped += detail::byte_to_unicode_utf8()[c];
          if (auto it = piece_to_id_.find(mapped); it != piece_to_id_.end()) {
            out.push_back(it->second);
            continue;
          }
        }
        std::vector<int> syms;
        for (unsigned char c : word) syms.push_back(byte_token_[c]);
        bpe(syms, out);
      }
      return;
    }
    std::string s(seg);
    if (!prepend_.empty() && (!prepend_first_only_ || at_text_start)) s = prepend_ + s;
    for (const auto& [from, to] : replace_) s = replace_all(s, from, to);
    if (metaspace_split_ && !prepend_.empty()) {
      // Metaspace split: each word starts at a replacement character.
      std::size_t b = 0;
      while (b < s.size()) {
        std::size_t e = s.find(prepend_, b + 1);
        if (e == std::string::npos) e = s.size();
        bpe_chars(std::string_view(s).substr(b, e - b), out);
        b = e;
      }
    } else {
      bpe_chars(s, out);
    }
  }

  // Initial symbols = UTF-8 characters; unknown ones fall back to <0xXX> bytes or <unk>.
  void bpe_chars(std::string_view word, std::vector<int>& out) const {
    if (ignore_merges_) {
      if (auto it = piece_to_id_.find(std::string(word)); it != piece_to_id_.end()) {
        out.push_back(it->second);
        return;
      }
    }
    std::vector<int> syms;
    EEXIT_TOKENIZER_WORK(word.size());
    auto push_unk = [&] {
      if (unk_ < 0) return;  // HF errors here; dropping keeps encode total for odd vocabularies
      if (fuse_unk_ && !syms.empty() && syms.back() == unk_) return;
      syms.push_back(unk_);
    };
    for (std::size_t i = 0; i < word.size();) {
      const detail::Utf8Scan sc = detail::utf8_scan(word, i);
      const std::size_t len = sc.status == detail::Utf8Status::complete ? sc.len : 1;
      auto it = piece_to_id_.find(std::string(word.substr(i, len)));
      if (it != piece_to_id_.end()) {
        syms.push_back(it->second);
      } else if (byte_fallback_) {
        bool all = true;
        for (std::size_t k = i; k < i + len; ++k)
          all = all && byte_token_[static_cast<unsigned char>(word[k])] >= 0;
        if (all) {
          for (std::size_t k = i; k < i + len; ++k)
            syms.push_back(byte_token_[static_cast<unsigned char>(word[k])]);
        } else {
          push_unk();
        }
      } else {
        push_unk();
      }
      i += len;
    }
    bpe(syms, out);
  }

  // Applies merges lowest rank first (leftmost on ties), like HF's Word::merge_all: a heap of
  // candidate pairs over a linked list of symbols; stale heap entries are skipped.
  void bpe(const std::vector<int>& ids, std::vector<int>& out) const {
    const int n = static_cast<int>(ids.size());
    EEXIT_TOKENIZER_WORK(n);
    if (n <= 1) {
      out.insert(out.end(), ids.begin(), ids.end());
      return;
    }
    struct Sym {
      int id, prev, next;
      bool alive;
    };
    struct Cand {
      int rank, pos, id;
      bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::vector<Sym> s(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i)
      s[static_cast<std::size_t>(i)] = {ids[static_cast<std::size_t>(i)], i - 1,
                                        i + 1 < n ? i + 1 : -1, true};
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
    auto consider = [&](int i) {
      const int j = s[static_cast<std::size_t>(i)].next;
      if (j < 0) return;
      auto it = merges_.find(
          pair_key(s[static_cast<std::size_t>(i)].id, s[static_cast<std::size_t>(j)].id));
      if (it != merges_.end()) heap.push({it->second.rank, i, it->second.id});
    };
    for (int i = 0; i + 1 < n; ++i) consider(i);
    while (!heap.empty()) {
      const Cand c = heap.top();
      heap.pop();
      EEXIT_TOKENIZER_WORK(1);
      Sym& a = s[static_cast<std::size_t>(c.pos)];
      if (!a.alive || a.next < 0) continue;
      Sym& b = s[static_cast<std::size_t>(a.next)];
      auto it = merges_.find(pair_key(a.id, b.id));
      if (it == merges_.end() || it->second.rank != c.rank) continue;  // stale entry
      a.id = c.id;
      b.alive = false;
      a.next = b.next;
      if (b.next >= 0) s[static_cast<std::size_t>(b.next)].prev = c.pos;
      if (a.prev >= 0) consider(a.prev);
      consider(c.pos);
    }
    for (int i = 0; i >= 0; i = s[static_cast<std::size_t>(i)].next)
      out.push_back(s[static_cast<std::size_t>(i)].id);
  }
};

// Incremental decoding for streaming: never emits half a UTF-8 character.
class StreamDecoder {
 public:
  // tok must outlive the decoder.
  // prev_token: the token before the first one pushed (e.g. the last prompt token). If it is
  // BOS (or -1 for "start of text") and the tokenizer strips SentencePiece's dummy prefix,
  // the leading space of the first piece is stripped (as llama2.c / HF decoders do).
  explicit StreamDecoder(const Tokenizer& tok, int prev_token = -1)
      : tok_(&tok),
        strip_next_(tok.strips_leading_space() && (prev_token < 0 || prev_token == tok.bos_id())) {}

  // Returns the bytes that are now complete UTF-8 (ill-formed bytes already as U+FFFD).
  std::string push(int id) {
    if (id == tok_->bos_id() && id >= 0) {
      // llama2.c strips after every BOS; HF's Strip decoder only at the start of the text.
      if (tok_->kind() == Tokenizer::Kind::llama2c || !emitted_)
        strip_next_ = tok_->strips_leading_space();
      return {};
    }
    std::string b = tok_->token_bytes(id);
    EEXIT_TOKENIZER_WORK(b.size() + 1);
    if (b.empty()) {
      if (tok_->kind() == Tokenizer::Kind::llama2c) strip_next_ = false;
      return {};
    }
    if (strip_next_ && b.front() == ' ') b.erase(0, 1);
    strip_next_ = false;
    emitted_ = true;
    pending_ += b;
    return detail::utf8_take_complete(pending_, false);
  }

  // End of stream: the rest; an incomplete or ill-formed tail becomes U+FFFD.
  std::string flush() { return detail::utf8_take_complete(pending_, true); }

 private:
  const Tokenizer* tok_;
  bool strip_next_;
  bool emitted_ = false;
  std::string pending_;
};

inline std::string Tokenizer::decode(std::span<const int> ids) const {
  StreamDecoder d(*this, -1);
  std::string out;
  for (int id : ids) out += d.push(id);
  out += d.flush();
  return out;
}

}  // namespace eexit

#include "eexit/text/gguf_vocab.hpp"  // Tokenizer::load_gguf
