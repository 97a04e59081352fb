// Loaders: llama2.c v0/v1, safetensors, HF config/weights, load_model dispatch.
// Good files must load to exactly the weights of stories260K.bin; every kind of corrupt file
// must throw eexit::error whose message names the file and the tensor or field at fault.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../test_paths.hpp"
#include "eexit/model/hf.hpp"
#include "eexit/model/llama2c.hpp"
#include "eexit/model/load.hpp"
#include "eexit/model/safetensors.hpp"
#include "same_weights.hpp"

namespace fs = std::filesystem;
using nlohmann::json;
using Bytes = std::vector<unsigned char>;

namespace {

const std::string stories_bin = eexit::test::shared("models/stories260K/stories260K.bin");

// A fresh directory per use, removed afterwards, so tests never see each other's files.
struct TempDir {
  fs::path path;
  TempDir() {
    static std::atomic<int> counter{0};
    path = fs::temp_directory_path() /
           ("eexit_loader_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

Bytes read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}
void write_bytes(const std::string& path, const Bytes& b) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}
void write_text(const std::string& path, const std::string& s) {
  std::ofstream(path, std::ios::binary) << s;
}
template <class T>
void put(Bytes& b, T v) {
  unsigned char raw[sizeof(T)];
  std::memcpy(raw, &v, sizeof(T));
  b.insert(b.end(), raw, raw + sizeof(T));
}
void put(Bytes& b, const std::vector<float>& v) {
  for (float f : v) put(b, f);
}
void put(Bytes& b, const eexit::Weight& v) {
  put(b, v.to_f32());
}

// The message of the eexit::error that f throws ("" if it throws nothing or something else).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const eexit::error& e) {
    return e.what();
  } catch (...) {
    return "";
  }
  return "";
}

// Checks that expr throws eexit::error and that the message names every given part.
#define CHECK_EEXIT_ERROR(expr, ...)                                                            \
  do {                                                                                          \
    CHECK_THROWS_AS((void)(expr), eexit::error);                                                \
    const std::string msg_ = error_of([&] { (void)(expr); });                                   \
    for (const std::string& part_ : std::initializer_list<std::string>{__VA_ARGS__})            \
      CHECK_MESSAGE(msg_.find(part_) != std::string::npos, "'", msg_, "' lacks '", part_, "'"); \
  } while (0)

// ---- llama2.c writers (test-side, independent of the loader) -------------------------

void put_header(Bytes& b, const eexit::ModelConfig& c, int vocab_field) {
  for (int v :
       {c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, vocab_field, c.max_seq_len})
    put(b, std::int32_t(v));
}

// Legacy v0 layout; freq_cis is copied from the original file (the loader ignores it).
Bytes write_v0(const eexit::ModelWeights& m, const Bytes& freq_cis) {
  const auto& c = m.config;
  Bytes b;
  put_header(b, c, m.lm_head.empty() ? c.vocab_size : -c.vocab_size);
  put(b, m.tok_embedding);
  for (auto& l : m.layers) put(b, l.attn_norm);
  for (auto& l : m.layers) put(b, l.wq);
  for (auto& l : m.layers) put(b, l.wk);
  for (auto& l : m.layers) put(b, l.wv);
  for (auto& l : m.layers) put(b, l.wo);
  for (auto& l : m.layers) put(b, l.ffn_norm);
  for (auto& l : m.layers) put(b, l.w_gate);
  for (auto& l : m.layers) put(b, l.w_down);
  for (auto& l : m.layers) put(b, l.w_up);
  put(b, m.final_norm);
  b.insert(b.end(), freq_cis.begin(), freq_cis.end());
  put(b, m.lm_head);
  return b;
}

// Version-1 layout as karpathy/llama2.c export.py version1_export writes it.
Bytes write_v1(const eexit::ModelWeights& m, int version = 1) {
  const auto& c = m.config;
  Bytes b;
  put(b, std::uint32_t(0x616b3432));
  put(b, std::int32_t(version));
  put_header(b, c, c.vocab_size);
  b.push_back(m.lm_head.empty() ? 1 : 0);
  b.resize(256, 0);
  for (auto& l : m.layers) put(b, l.attn_norm);
  for (auto& l : m.layers) put(b, l.ffn_norm);
  put(b, m.final_norm);
  put(b, m.tok_embedding);
  for (auto& l : m.layers) put(b, l.wq);
  for (auto& l : m.layers) put(b, l.wk);
  for (auto& l : m.layers) put(b, l.wv);
  for (auto& l : m.layers) put(b, l.wo);
  for (auto& l : m.layers) put(b, l.w_gate);
  for (auto& l : m.layers) put(b, l.w_down);
  for (auto& l : m.layers) put(b, l.w_up);
  put(b, m.lm_head);
  return b;
}

using eexit::test::check_same_weights;

// Undoes the converter's per-head row permutation: HF row h*hd + p*hd/2 + i holds
// llama2.c row h*hd + 2i + p (rotate_half pairs i with i + hd/2).
std::vector<float> unpermute(const std::vector<float>& hf, int n_heads, int hd, int cols) {
  std::vector<float> out(hf.size());
  for (int h = 0; h < n_heads; ++h)
    for (int p = 0; p < 2; ++p)
      for (int i = 0; i < hd / 2; ++i)
        std::memcpy(&out[std::size_t((h * hd + 2 * i + p) * cols)],
                    &hf[std::size_t((h * hd + p * hd / 2 + i) * cols)], sizeof(float) * cols);
  return out;
}

eexit::ModelWeights unpermuted(eexit::ModelWeights m) {
  const auto& c = m.config;
  for (auto& l : m.layers) {
    l.wq = unpermute(l.wq, c.n_heads, c.head_dim, c.dim);
    l.wk = unpermute(l.wk, c.n_kv_heads, c.head_dim, c.dim);
  }
  return m;
}

std::vector<float> bf16_round(std::vector<float> v) {
  for (float& f : v) f = eexit::bf16_to_f32(eexit::f32_to_bf16(f));
  return v;
}

eexit::ModelWeights bf16_rounded(eexit::ModelWeights m) {
  m.tok_embedding = bf16_round(m.tok_embedding);
  m.final_norm = bf16_round(m.final_norm);
  m.lm_head = bf16_round(m.lm_head);
  for (auto& l : m.layers) {
    for (auto* v : {&l.attn_norm, &l.ffn_norm}) *v = bf16_round(*v);
    for (auto* v : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_down, &l.w_up}) *v = bf16_round(*v);
  }
  return m;
}

// ---- safetensors writer (test-side) --------------------------------------------------

struct Entry {
  std::string name;
  std::string dtype;
  std::vector<std::int64_t> shape;
  Bytes data;
};

Entry f32_entry(std::string name, std::vector<std::int64_t> shape, float base) {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  std::vector<float> v(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = base + 0.01f * float(i);
  Bytes b;
  put(b, v);
  return {std::move(name), "F32", std::move(shape), std::move(b)};
}

Bytes safetensors_bytes(const std::vector<Entry>& entries, const json& metadata = nullptr) {
  json h = json::object();
  std::uint64_t off = 0;
  for (const auto& e : entries) {
    h[e.name] = {
        {"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {off, off + e.data.size()}}};
    off += e.data.size();
  }
  if (!metadata.is_null()) h["__metadata__"] = metadata;
  const std::string s = h.dump();
  Bytes b;
  put(b, std::uint64_t(s.size()));
  b.insert(b.end(), s.begin(), s.end());
  for (const auto& e : entries) b.insert(b.end(), e.data.begin(), e.data.end());
  return b;
}

Bytes raw_safetensors(const std::string& header_json, std::size_t data_bytes) {
  Bytes b;
  put(b, std::uint64_t(header_json.size()));
  b.insert(b.end(), header_json.begin(), header_json.end());
  b.resize(b.size() + data_bytes, 0);
  return b;
}

// ---- a tiny HF model written from scratch --------------------------------------------

json tiny_config() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"hidden_size", 4},
          {"intermediate_size", 6},
          {"num_hidden_layers", 3},
          {"num_attention_heads", 2},
          {"num_key_value_heads", 1},
          {"vocab_size", 8},
          {"max_position_embeddings", 16},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 10000.0},
          {"tie_word_embeddings", false},
          {"bos_token_id", 1},
          {"eos_token_id", {2, 3}}};
}

std::vector<Entry> tiny_tensors(const json& cfg) {
  const std::int64_t d = 4, h = 6, v = 8, q = 4, kv = 2;
  std::vector<Entry> t;
  float base = 0;
  auto add = [&](const std::string& name, std::vector<std::int64_t> shape) {
    t.push_back(f32_entry(name, std::move(shape), base += 1));
  };
  add("model.embed_tokens.weight", {v, d});
  for (int l = 0; l < 3; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {d});
    add(p + "self_attn.q_proj.weight", {q, d});
    add(p + "self_attn.k_proj.weight", {kv, d});
    add(p + "self_attn.v_proj.weight", {kv, d});
    add(p + "self_attn.o_proj.weight", {d, q});
    if (cfg.value("architectures", json::array({""}))[0] == "Qwen2ForCausalLM") {
      add(p + "self_attn.q_proj.bias", {q});
      add(p + "self_attn.k_proj.bias", {kv});
      add(p + "self_attn.v_proj.bias", {kv});
    }
    add(p + "post_attention_layernorm.weight", {d});
    add(p + "mlp.gate_proj.weight", {h, d});
    add(p + "mlp.up_proj.weight", {h, d});
    add(p + "mlp.down_proj.weight", {d, h});
  }
  add("model.norm.weight", {d});
  add("lm_head.weight", {v, d});
  if (cfg.contains("early_exit")) {
    const auto& ee = cfg["early_exit"];
    for (std::size_t i = 0; i < ee["exit_layers"].size(); ++i) {
      const std::string p = "model.exit_heads." + std::to_string(i) + ".";
      if (ee.value("head", "shared") == "dedicated") {
        add(p + "norm.weight", {d});
        add(p + "proj.weight", {v, d});
      }
      if (ee.value("classifier", false)) {
        add(p + "classifier.weight", {1, d});
        add(p + "classifier.bias", {1});
      }
    }
  }
  return t;
}

void write_tiny(const TempDir& dir, const json& cfg, const std::vector<Entry>& tensors) {
  write_text(dir / "config.json", cfg.dump(2));
  write_bytes(dir / "model.safetensors", safetensors_bytes(tensors));
}

std::vector<Entry> without(std::vector<Entry> t, const std::string& name) {
  std::erase_if(t, [&](const Entry& e) { return e.name == name; });
  return t;
}

const char* hf_fixture_dir() {
  return std::getenv("EEXIT_HF_FIXTURE_DIR");
}

}  // namespace

// ---- llama2.c -------------------------------------------------------------------------

TEST_CASE("stories260K.bin loads with the documented shapes and config") {
  const auto m = eexit::load_llama2c(stories_bin);
  const auto& c = m.config;
  CHECK(c.dim == 64);
  CHECK(c.hidden_dim == 172);
  CHECK(c.n_layers == 5);
  CHECK(c.n_heads == 8);
  CHECK(c.n_kv_heads == 4);
  CHECK(c.head_dim == 8);
  CHECK(c.vocab_size == 512);
  CHECK(c.max_seq_len == 512);
  CHECK(c.tied_embeddings);
  CHECK(c.rope == eexit::rope_style::interleaved);
  CHECK(c.bos_id == 1);
  CHECK(c.eos_ids == std::vector<int>{2});
  CHECK(c.early_exit.exit_layers.empty());
  CHECK(m.tok_embedding.size() == 512u * 64);
  CHECK(m.lm_head.empty());
  CHECK(m.final_norm.size() == 64u);
  REQUIRE(m.layers.size() == 5u);
  for (const auto& l : m.layers) {
    CHECK(l.attn_norm.size() == 64u);
    CHECK(l.wq.size() == 64u * 64);
    CHECK(l.wk.size() == 32u * 64);
    CHECK(l.wv.size() == 32u * 64);
    CHECK(l.wo.size() == 64u * 64);
    CHECK(l.ffn_norm.size() == 64u);
    CHECK(l.w_gate.size() == 172u * 64);
    CHECK(l.w_down.size() == 64u * 172);
    CHECK(l.w_up.size() == 172u * 64);
    CHECK(l.bq.empty());
  }
  CHECK(m.exit_heads.empty());

  // Writing the weights back in v0 order reproduces the file byte for byte, so every array
  // was read from the right place.
  const Bytes file = read_bytes(stories_bin);
  const std::size_t freq_bytes = 2 * 512 * 4 * 4;
  const std::size_t freq_at = file.size() - freq_bytes;
  const Bytes freq(file.begin() + std::ptrdiff_t(freq_at), file.end());
  CHECK(write_v0(m, freq) == file);

  CHECK(eexit::load_model(stories_bin).tok_embedding == m.tok_embedding);
}

TEST_CASE("llama2.c version 1 and untied classifiers load equal to v0") {
  const auto v0 = eexit::load_llama2c(stories_bin);
  TempDir dir;
  write_bytes(dir / "v1.bin", write_v1(v0));
  const auto v1 = eexit::load_model(dir / "v1.bin");
  CHECK(v1.config.dim == 64);
  CHECK(v1.config.tied_embeddings);
  CHECK(v1.config.rope == eexit::rope_style::interleaved);
  check_same_weights(v0, v1);

  // Untied: a distinct classifier at the end (negative vocab in v0, flag 0 in v1).
  auto untied = v0;
  untied.lm_head = v0.tok_embedding;
  for (float& f : untied.lm_head) f *= -0.5f;
  untied.config.tied_embeddings = false;
  const Bytes file = read_bytes(stories_bin);
  const Bytes freq(file.end() - 2 * 512 * 4 * 4, file.end());
  write_bytes(dir / "untied_v0.bin", write_v0(untied, freq));
  write_bytes(dir / "untied_v1.bin", write_v1(untied));
  for (const char* name : {"untied_v0.bin", "untied_v1.bin"}) {
    CAPTURE(name);
    const auto u = eexit::load_llama2c(dir / name);
    CHECK_FALSE(u.config.tied_embeddings);
    CHECK(u.config.vocab_size == 512);
    check_same_weights(untied, u);
  }

  // Version 2 (Q8_0) is a different format; refuse it by field.
  write_bytes(dir / "v2.bin", write_v1(v0, 2));
  CHECK_EEXIT_ERROR(eexit::load_llama2c(dir / "v2.bin"), "v2.bin", "version");
}

TEST_CASE("corrupt llama2.c files throw eexit::error naming file and field") {
  TempDir dir;
  const Bytes file = read_bytes(stories_bin);
  CHECK_EEXIT_ERROR(eexit::load_llama2c(dir / "nope.bin"), "nope.bin", "cannot open");
  CHECK_EEXIT_ERROR(eexit::load_model(dir / "nope.bin"), "nope.bin");

  // Truncated at many offsets (and one byte too long): the size check catches each.
  for (std::size_t cut : {std::size_t(0), std::size_t(1), std::size_t(27), std::size_t(28),
                          std::size_t(29), std::size_t(255), std::size_t(4096), file.size() / 2,
                          file.size() - 16384, file.size() - 4, file.size() - 1, file.size() + 1}) {
    CAPTURE(cut);
    Bytes t(file.begin(), file.begin() + std::ptrdiff_t(std::min(cut, file.size())));
    t.resize(cut, 0);
    write_bytes(dir / "cut.bin", t);
    if (cut < 28) {
      CHECK_EEXIT_ERROR(eexit::load_llama2c(dir / "cut.bin"), "cut.bin", "too short");
    } else {
      CHECK_EEXIT_ERROR(eexit::load_llama2c(dir / "cut.bin"), "cut.bin", "expected 1056540",
                        std::to_string(cut));
    }
  }

  // Absurd or inconsistent header fields (index into the 7 int32).
  struct Case {
    int index;
    std::int32_t value;
    const char* field;
  };
  for (const Case& k :
       {Case{0, 1 << 30, "dim"}, Case{0, 0, "dim"}, Case{1, -172, "hidden_dim"},
        Case{2, 0, "n_layers"}, Case{2, 1 << 20, "n_layers"}, Case{3, 0, "n_heads"},
        Case{3, 7, "n_heads"}, Case{3, 64, "n_heads"}, Case{4, 3, "n_kv_heads"},
        Case{4, 16, "n_kv_heads"}, Case{5, INT32_MIN, "vocab_size"}, Case{5, 0, "vocab_size"},
        Case{5, 2, "vocab_size"}, Case{5, -2, "vocab_size"}, Case{6, -1, "seq_len"}}) {
    const std::string field = k.field;
    CAPTURE(field);
    CAPTURE(k.value);
    Bytes b = file;
    std::memcpy(b.data() + 4 * k.index, &k.value, 4);
    write_bytes(dir / "hdr.bin", b);
    CHECK_EEXIT_ERROR(eexit::load_llama2c(dir / "hdr.bin"), "hdr.bin", k.field);
  }
}

// ---- safetensors ----------------------------------------------------------------------

TEST_CASE("safetensors headers parse and validate") {
  using eexit::safetensors::parse_header;
  const auto parse = [](const Bytes& b) { return parse_header(b, b.size(), "x.safetensors"); };

  SUBCASE("a valid file, with metadata and overlapping tensors") {
    Bytes b =
        safetensors_bytes({f32_entry("a", {2, 3}, 1), f32_entry("b", {3}, 2)}, {{"format", "pt"}});
    auto h = parse(b);
    REQUIRE(h.tensors.size() == 2u);
    CHECK(h.metadata.at("format") == "pt");
    const auto* a = h.find("a");
    REQUIRE(a);
    CHECK(a->shape == std::vector<std::int64_t>{2, 3});
    CHECK(a->type == eexit::dtype::f32);
    CHECK(a->begin == h.data_offset);
    CHECK(a->end == h.data_offset + 24);
    CHECK(h.find("c") == nullptr);
    // Two tensors over the same bytes are legal (the format does not forbid aliasing).
    const std::string j =
        R"({"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})";
    CHECK(parse(raw_safetensors(j, 4)).tensors.size() == 3u);
    // A prefix holding just the header is enough.
    const Bytes whole = raw_safetensors(j, 4);
    CHECK(
        parse_header(std::span(whole.data(), whole.size() - 4), whole.size(), "p").tensors.size() ==
        3u);
  }

  SUBCASE("corrupt headers") {
    CHECK_EEXIT_ERROR(parse(Bytes{1, 2, 3}), "x.safetensors", "too short");
    Bytes b = raw_safetensors("{}", 0);
    b[0] = 200;  // header length 200 > file size
    CHECK_EEXIT_ERROR(parse(b), "x.safetensors", "exceeds the file size");
    b[0] = 0;
    b[7] = 0x10;  // header length 2^60: absurd
    CHECK_EEXIT_ERROR(parse(b), "x.safetensors", "exceeds the limit");
    b = raw_safetensors("{}", 0);  // a file large enough, but a header length over the limit
    const std::uint64_t big = 101ull << 20;
    std::memcpy(b.data(), &big, 8);
    CHECK_EEXIT_ERROR(parse_header(b, big + 8, "x.safetensors"), "x.safetensors", "limit");
    CHECK_EEXIT_ERROR(parse(raw_safetensors("{\"a\":", 0)), "x.safetensors", "JSON");
    CHECK_EEXIT_ERROR(parse(raw_safetensors("[1,2]", 0)), "x.safetensors", "not a JSON object");
    CHECK_EEXIT_ERROR(parse(raw_safetensors(R"({"w":[1]})", 0)), "tensor 'w'", "not a JSON object");
    CHECK_EEXIT_ERROR(
        parse(raw_safetensors(R"({"w":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}})", 4)),
        "x.safetensors", "tensor 'w'", "unknown dtype 'F33'");
    CHECK_EEXIT_ERROR(
        parse(raw_safetensors(R"({"w":{"dtype":7,"shape":[1],"data_offsets":[0,4]}})", 4)),
        "tensor 'w'", "dtype");
    CHECK_EEXIT_ERROR(
        parse(raw_safetensors(R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})", 16)),
        "tensor 'w'", "data_offsets", "(2, 2)");
    CHECK_EEXIT_ERROR(
        parse(raw_safetensors(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8)),
        "tensor 'w'", "past the end");
    CHECK_EEXIT_ERROR(
        parse(raw_safetensors(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", 8)),
        "tensor 'w'", "begin 8 > end 4");
    CHECK_EEXIT_ERROR(
        parse(raw_safetensors(
            R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551615]}})", 8)),
        "tensor 'w'", "past the end");
    CHECK_EEXIT_ERROR(
        parse(raw_safetensors(
            R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}})", 8)),
        "tensor 'w'", "overflow");
    CHECK_EEXIT_ERROR(
        parse(raw_safetensors(
            R"({"w":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,4]}})", 8)),
        "tensor 'w'", "overflow");
    CHECK_EEXIT_ERROR(
        parse(raw_safetensors(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 8)),
        "tensor 'w'", "shape");
    CHECK_EEXIT_ERROR(
        parse(raw_safetensors(R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 8)),
        "tensor 'w'", "shape");
    CHECK_EEXIT_ERROR(parse(raw_safetensors(R"({"w":{"dtype":"F32","shape":[1]}})", 8)),
                      "tensor 'w'", "data_offsets");
    CHECK_EEXIT_ERROR(
        parse(raw_safetensors(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 8)),
        "tensor 'w'", "data_offsets");
    CHECK_EEXIT_ERROR(parse(raw_safetensors(R"({"__metadata__":{"k":1}})", 0)), "__metadata__.k",
                      "strings");
    CHECK_EEXIT_ERROR(parse(raw_safetensors(R"({"__metadata__":[]})", 0)), "__metadata__");
  }
}

TEST_CASE("safetensors::File reads tensors and checks name, shape and dtype") {
  TempDir dir;
  Entry ints{"ids", "I32", {2}, Bytes(8, 1)};
  Entry half{"h", "F16", {2}, Bytes{0x00, 0x3c, 0x00, 0xc0}};  // 1.0, -2.0
  Entry bf{"b", "BF16", {1}, Bytes{0x80, 0x3f}};               // 1.0
  write_bytes(dir / "t.safetensors", safetensors_bytes({f32_entry("w", {2, 2}, 1), ints, half, bf,
                                                        Entry{"e32", "F32", {0}, Bytes{}},
                                                        Entry{"e16", "F16", {3, 0}, Bytes{}}}));
  eexit::safetensors::File f(dir / "t.safetensors");
  CHECK(f.read("w", {2, 2}) == std::vector<float>{1.0f, 1.01f, 1.02f, 1.03f});
  CHECK(f.read("h", {2}) == std::vector<float>{1.0f, -2.0f});
  CHECK(f.read("b", {1}) == std::vector<float>{1.0f});
  // Zero-element tensors are legal safetensors; reading one must not hand memcpy a null
  // pointer (UBSan under the debug preset).
  CHECK(f.read("e32", {0}).empty());
  CHECK(f.read("e16", {3, 0}).empty());
  CHECK(f.read_weight("e32", {0}, {}).empty());
  CHECK(f.read_weight("e16", {3, 0}, {}).empty());
  CHECK_EEXIT_ERROR(f.read("w", {4}), "t.safetensors", "tensor 'w'", "(2, 2)", "expected (4)");
  CHECK_EEXIT_ERROR(f.read("q", {1}), "t.safetensors", "tensor 'q'", "missing");
  CHECK_EEXIT_ERROR(f.read("ids", {2}), "t.safetensors", "tensor 'ids'", "I32");

  CHECK_EEXIT_ERROR(eexit::safetensors::File(dir / "none.safetensors"), "none.safetensors");
  write_bytes(dir / "short.safetensors", Bytes{1, 0, 0});
  CHECK_EEXIT_ERROR(eexit::safetensors::File(dir / "short.safetensors"), "short.safetensors",
                    "too short");
  Bytes huge = raw_safetensors("{}", 0);
  huge[5] = 1;  // 2^40-byte header
  write_bytes(dir / "huge.safetensors", huge);
  CHECK_EEXIT_ERROR(eexit::safetensors::File(dir / "huge.safetensors"), "huge.safetensors",
                    "header length");
}

// ---- HF config ------------------------------------------------------------------------

TEST_CASE("generation_config.json's eos_token_id joins the config's EOS ids") {
  auto c = eexit::parse_hf_config(tiny_config(), "config.json");  // eos [2, 3]
  // Llama 3.x Instruct: config.json names 128001, generation_config.json lists three ids.
  eexit::add_generation_eos({{"eos_token_id", {3, 5, 7}}, {"temperature", 0.6}},
                            "generation_config.json", c);
  CHECK(c.eos_ids == std::vector<int>{2, 3, 5, 7});
  eexit::add_generation_eos({{"eos_token_id", 6}}, "g", c);
  CHECK(c.eos_ids == std::vector<int>{2, 3, 5, 7, 6});
  eexit::add_generation_eos({{"eos_token_id", nullptr}}, "g", c);
  eexit::add_generation_eos(nlohmann::json::object(), "g", c);
  CHECK(c.eos_ids.size() == 5u);
  CHECK_EEXIT_ERROR(eexit::add_generation_eos({{"eos_token_id", {1, 8}}}, "g.json", c), "g.json",
                    "eos_token_id", "outside vocab");
  CHECK_EEXIT_ERROR(eexit::add_generation_eos({{"eos_token_id", "x"}}, "g.json", c), "g.json",
                    "must be an integer");
}

TEST_CASE("parse_hf_config reads Llama, Qwen2 and Mistral fields") {
  auto j = tiny_config();
  auto c = eexit::parse_hf_config(j, "config.json");
  CHECK(c.dim == 4);
  CHECK(c.hidden_dim == 6);
  CHECK(c.n_layers == 3);
  CHECK(c.n_heads == 2);
  CHECK(c.n_kv_heads == 1);
  CHECK(c.head_dim == 2);
  CHECK(c.vocab_size == 8);
  CHECK(c.max_seq_len == 16);
  CHECK(c.rope == eexit::rope_style::half);
  CHECK_FALSE(c.tied_embeddings);
  CHECK_FALSE(c.qkv_bias);
  CHECK(c.eos_ids == std::vector<int>{2, 3});
  CHECK_FALSE(c.rope_scaling.enabled);

  j.erase("num_key_value_heads");
  j["eos_token_id"] = 5;
  j["rope_theta"] = 500000;  // an integer is a fine number
  j["rope_scaling"] = {{"rope_type", "llama3"},
                       {"factor", 8.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192}};
  c = eexit::parse_hf_config(j, "config.json");
  CHECK(c.n_kv_heads == 2);
  CHECK(c.eos_ids == std::vector<int>{5});
  CHECK(c.rope_theta == 500000.0f);
  CHECK(c.rope_scaling.enabled);
  CHECK(c.rope_scaling.factor == 8.0f);
  CHECK(c.rope_scaling.original_max_position == 8192);

  j = tiny_config();
  j["architectures"] = {"Qwen2ForCausalLM"};
  j["head_dim"] = 8;
  CHECK(eexit::parse_hf_config(j, "c").qkv_bias);
  CHECK(eexit::parse_hf_config(j, "c").head_dim == 8);
  j["architectures"] = {"MistralForCausalLM"};
  j["sliding_window"] = 8;
  CHECK(eexit::parse_hf_config(j, "c").max_seq_len == 8);
  j["sliding_window"] = nullptr;
  CHECK(eexit::parse_hf_config(j, "c").max_seq_len == 16);

  j = tiny_config();
  j["early_exit"] = {{"exit_layers", {0, 1}},
                     {"head", "dedicated"},
                     {"classifier", true},
                     {"measure", "softmax-response"},
                     {"thresholds", {0.9, 0.8}}};
  c = eexit::parse_hf_config(j, "c");
  CHECK(c.early_exit.exit_layers == std::vector<int>{0, 1});
  CHECK(c.early_exit.head == eexit::exit_head_kind::dedicated);
  CHECK(c.early_exit.classifier);
  CHECK(c.early_exit.measure == "softmax-response");
  CHECK(c.early_exit.thresholds == std::vector<float>{0.9f, 0.8f});
}

TEST_CASE("bad config.json fields throw eexit::error naming the field") {
  struct Case {
    const char* name;
    std::function<void(json&)> edit;
    const char* field;
  };
  const std::vector<Case> cases = {
      {"missing hidden_size", [](json& j) { j.erase("hidden_size"); }, "hidden_size"},
      {"string hidden_size", [](json& j) { j["hidden_size"] = "64"; }, "hidden_size"},
      {"negative dim", [](json& j) { j["intermediate_size"] = -1; }, "intermediate_size"},
      {"absurd dim", [](json& j) { j["hidden_size"] = 1 << 21; }, "hidden_size"},
      {"huge unsigned", [](json& j) { j["hidden_size"] = 18446744073709551615ull; }, "hidden_size"},
      {"zero layers", [](json& j) { j["num_hidden_layers"] = 0; }, "num_hidden_layers"},
      {"heads not dividing", [](json& j) { j["num_attention_heads"] = 3; }, "num_attention_heads"},
      {"kv heads not dividing",
       [](json& j) {
         j["num_attention_heads"] = 4;
         j["num_key_value_heads"] = 3;
       },
       "num_key_value_heads"},
      {"more kv than q heads", [](json& j) { j["num_key_value_heads"] = 4; },
       "num_key_value_heads"},
      {"odd head_dim", [](json& j) { j["head_dim"] = 3; }, "head_dim"},
      {"vocab too big", [](json& j) { j["vocab_size"] = (1 << 22) + 1; }, "vocab_size"},
      {"float vocab", [](json& j) { j["vocab_size"] = 8.5; }, "vocab_size"},
      {"bad eps", [](json& j) { j["rms_norm_eps"] = -1; }, "rms_norm_eps"},
      {"bad theta", [](json& j) { j["rope_theta"] = "big"; }, "rope_theta"},
      // > 0 as a double, 0.0f (or subnormal) as the float the model computes with.
      {"eps underflows float", [](json& j) { j["rms_norm_eps"] = 1e-50; }, "rms_norm_eps"},
      {"theta underflows float", [](json& j) { j["rope_theta"] = 1e-50; }, "rope_theta"},
      {"eps subnormal float", [](json& j) { j["rms_norm_eps"] = 1e-40; }, "rms_norm_eps"},
      // The default EOS id 2 does not exist in a 2-token vocabulary.
      {"tiny vocab without eos",
       [](json& j) {
         j["vocab_size"] = 2;
         j["bos_token_id"] = 1;
         j.erase("eos_token_id");
       },
       "eos_token_id"},
      {"bad tie", [](json& j) { j["tie_word_embeddings"] = 1; }, "tie_word_embeddings"},
      {"eos outside vocab",
       [](json& j) {
         j["eos_token_id"] = {2, 99};
       },
       "eos_token_id"},
      {"eos string", [](json& j) { j["eos_token_id"] = "2"; }, "eos_token_id"},
      {"bos outside vocab", [](json& j) { j["bos_token_id"] = 8; }, "bos_token_id"},
      {"unknown architecture", [](json& j) { j["architectures"] = {"GPT2LMHeadModel"}; },
       "architectures"},
      {"rope yarn",
       [](json& j) {
         j["rope_scaling"] = {{"type", "yarn"}, {"factor", 2.0}};
       },
       "rope_scaling"},
      {"llama3 without factor",
       [](json& j) {
         j["rope_scaling"] = {{"rope_type", "llama3"},
                              {"low_freq_factor", 1.0},
                              {"high_freq_factor", 4.0},
                              {"original_max_position_embeddings", 8192}};
       },
       "factor"},
      {"early_exit not object", [](json& j) { j["early_exit"] = 3; }, "early_exit"},
      {"exit_layers missing", [](json& j) { j["early_exit"] = json::object(); }, "exit_layers"},
      {"exit_layers not increasing",
       [](json& j) {
         j["early_exit"] = {{"exit_layers", {1, 1}}};
       },
       "exit_layers"},
      {"exit_layers lists the last layer",
       [](json& j) {
         j["early_exit"] = {{"exit_layers", {0, 2}}};
       },
       "exit_layers"},
      {"exit_layers negative",
       [](json& j) {
         j["early_exit"] = {{"exit_layers", {-1}}};
       },
       "exit_layers"},
      {"exit_layers float",
       [](json& j) {
         j["early_exit"] = {{"exit_layers", {0.5}}};
       },
       "exit_layers"},
      {"bad head",
       [](json& j) {
         j["early_exit"] = {{"exit_layers", {0}}, {"head", "mine"}};
       },
       "head"},
      {"bad classifier",
       [](json& j) {
         j["early_exit"] = {{"exit_layers", {0}}, {"classifier", "yes"}};
       },
       "classifier"},
      {"bad measure",
       [](json& j) {
         j["early_exit"] = {{"exit_layers", {0}}, {"measure", 1}};
       },
       "measure"},
      {"thresholds length",
       [](json& j) {
         j["early_exit"] = {{"exit_layers", {0, 1}}, {"thresholds", {0.5}}};
       },
       "thresholds"},
      {"thresholds type",
       [](json& j) {
         j["early_exit"] = {{"exit_layers", {0}}, {"thresholds", {"x"}}};
       },
       "thresholds"},
      {"threshold beyond float",
       [](json& j) {
         j["early_exit"] = {{"exit_layers", {0}}, {"thresholds", {1e300}}};
       },
       "thresholds"},
  };
  for (const auto& k : cases) {
    CAPTURE(k.name);
    json j = tiny_config();
    k.edit(j);
    CHECK_EEXIT_ERROR(eexit::parse_hf_config(j, "dir/config.json"), "dir/config.json", k.field);
  }
  CHECK_EEXIT_ERROR(eexit::parse_hf_config(json::array(), "c.json"), "c.json", "object");
}

// ---- HF checkpoints -----------------------------------------------------------------

TEST_CASE("a tiny HF checkpoint loads, with exit heads and Qwen2 biases") {
  TempDir dir;
  json cfg = tiny_config();
  cfg["early_exit"] = {{"exit_layers", {0, 1}}, {"head", "dedicated"}, {"classifier", true}};
  const auto tensors = tiny_tensors(cfg);
  write_tiny(dir, cfg, tensors);
  for (const std::string& p : {dir.path.string(), dir / "model.safetensors", dir / "config.json"}) {
    CAPTURE(p);
    const auto m = eexit::load_model(p);
    CHECK(m.config.n_layers == 3);
    CHECK(m.lm_head.size() == 32u);
    CHECK(m.tok_embedding[0] == 1.0f);
    REQUIRE(m.exit_heads.size() == 2u);
    CHECK(m.exit_heads[1].norm.size() == 4u);
    CHECK(m.exit_heads[1].proj.size() == 32u);
    CHECK(m.exit_heads[1].classifier_w.size() == 4u);
    // f32_entry fills a tensor with base, base + 0.01, ...: the bias is its tensor's base.
    const auto bias = std::find_if(tensors.begin(), tensors.end(), [](const Entry& e) {
      return e.name == "model.exit_heads.1.classifier.bias";
    });
    REQUIRE(bias != tensors.end());
    float expected_b;
    std::memcpy(&expected_b, bias->data.data(), 4);
    CHECK(m.exit_heads[1].classifier_b == expected_b);
  }

  TempDir qdir;
  json q = tiny_config();
  q["architectures"] = {"Qwen2ForCausalLM"};
  write_tiny(qdir, q, tiny_tensors(q));
  const auto qm = eexit::load_hf(qdir.path.string());
  CHECK(qm.config.qkv_bias);
  CHECK(qm.layers[2].bq.size() == 4u);
  CHECK(qm.layers[2].bk.size() == 2u);
  CHECK(qm.layers[2].bv.size() == 2u);
}

TEST_CASE("corrupt HF checkpoints throw eexit::error naming file and tensor") {
  const json cfg = tiny_config();
  const auto good = tiny_tensors(cfg);

  SUBCASE("paths") {
    TempDir dir;
    CHECK_EEXIT_ERROR(eexit::load_hf(dir / "nothing"), "nothing", "no such file");
    CHECK_EEXIT_ERROR(eexit::load_model(dir / "nothing"), "nothing", "no such file");
    CHECK_EEXIT_ERROR(eexit::load_hf(dir.path.string()), "neither model.safetensors");
    write_bytes(dir / "model.safetensors", safetensors_bytes(good));
    CHECK_EEXIT_ERROR(eexit::load_hf(dir.path.string()), "config.json", "cannot open");
    write_text(dir / "config.json", "{\"hidden_size\": 4,");
    CHECK_EEXIT_ERROR(eexit::load_hf(dir.path.string()), "config.json", "JSON");
    fs::remove(dir / "config.json");
    fs::create_directory(dir / "config.json");  // not a regular file
    CHECK_EEXIT_ERROR(eexit::load_hf(dir.path.string()), "config.json");
    fs::remove(dir / "config.json");
    write_text(dir / "config.json", "{\"hidden_size\": 4,");
    CHECK_EEXIT_ERROR(eexit::load_hf(dir.path.string()), "config.json", "JSON");
  }
  SUBCASE("missing tensor") {
    TempDir dir;
    write_tiny(dir, cfg, without(good, "model.layers.1.mlp.up_proj.weight"));
    CHECK_EEXIT_ERROR(eexit::load_hf(dir.path.string()), "model.safetensors",
                      "model.layers.1.mlp.up_proj.weight", "missing");
  }
  SUBCASE("untied without lm_head") {
    TempDir dir;
    write_tiny(dir, cfg, without(good, "lm_head.weight"));
    CHECK_EEXIT_ERROR(eexit::load_hf(dir.path.string()), "model.safetensors", "lm_head.weight");
  }
  SUBCASE("wrong shape") {
    TempDir dir;
    auto t = good;
    t[0] = f32_entry("model.embed_tokens.weight", {8, 5}, 0);
    write_tiny(dir, cfg, t);
    CHECK_EEXIT_ERROR(eexit::load_hf(dir.path.string()), "model.safetensors",
                      "model.embed_tokens.weight", "(8, 5)", "expected (8, 4)");
  }
  SUBCASE("wrong dtype") {
    TempDir dir;
    auto t = good;
    t[1].dtype = "I32";
    write_tiny(dir, cfg, t);
    CHECK_EEXIT_ERROR(eexit::load_hf(dir.path.string()), "model.safetensors",
                      "model.layers.0.input_layernorm.weight", "I32");
  }
  SUBCASE("missing exit head and classifier tensors") {
    TempDir dir;
    json ee = cfg;
    ee["early_exit"] = {{"exit_layers", {1}}, {"head", "dedicated"}, {"classifier", true}};
    write_tiny(dir, ee, without(tiny_tensors(ee), "model.exit_heads.0.proj.weight"));
    CHECK_EEXIT_ERROR(eexit::load_hf(dir.path.string()), "model.exit_heads.0.proj.weight");
    write_tiny(dir, ee, without(tiny_tensors(ee), "model.exit_heads.0.classifier.bias"));
    CHECK_EEXIT_ERROR(eexit::load_hf(dir.path.string()), "model.exit_heads.0.classifier.bias");
  }
  SUBCASE("missing Qwen2 bias") {
    TempDir dir;
    json q = cfg;
    q["architectures"] = {"Qwen2ForCausalLM"};
    write_tiny(dir, q, without(tiny_tensors(q), "model.layers.2.self_attn.v_proj.bias"));
    CHECK_EEXIT_ERROR(eexit::load_hf(dir.path.string()), "model.layers.2.self_attn.v_proj.bias");
  }
  SUBCASE("sharded index problems") {
    TempDir dir;
    write_text(dir / "config.json", cfg.dump());
    std::vector<Entry> a(good.begin(), good.begin() + 10), b(good.begin() + 10, good.end());
    write_bytes(dir / "s1.safetensors", safetensors_bytes(a));
    write_bytes(dir / "s2.safetensors", safetensors_bytes(b));
    json wm = json::object();
    for (const auto& e : a) wm[e.name] = "s1.safetensors";
    for (const auto& e : b) wm[e.name] = "s2.safetensors";
    write_text(dir / "model.safetensors.index.json", json{{"weight_map", wm}}.dump());
    CHECK(eexit::load_hf(dir.path.string()).lm_head.size() == 32u);

    json missing = wm;
    missing.erase("model.norm.weight");
    write_text(dir / "model.safetensors.index.json", json{{"weight_map", missing}}.dump());
    CHECK_EEXIT_ERROR(eexit::load_hf(dir.path.string()), "model.safetensors.index.json",
                      "model.norm.weight", "weight_map");

    json escape = wm;
    escape["model.norm.weight"] = "../s2.safetensors";
    write_text(dir / "model.safetensors.index.json", json{{"weight_map", escape}}.dump());
    CHECK_EEXIT_ERROR(eexit::load_hf(dir.path.string()), "model.safetensors.index.json",
                      "model.norm.weight", "not a file name");

    json gone = wm;
    gone["model.norm.weight"] = "s3.safetensors";
    write_text(dir / "model.safetensors.index.json", json{{"weight_map", gone}}.dump());
    CHECK_EEXIT_ERROR(eexit::load_hf(dir.path.string()), "s3.safetensors", "cannot open");

    json wrong = wm;
    wrong["model.norm.weight"] = "s1.safetensors";  // the shard does not hold it
    write_text(dir / "model.safetensors.index.json", json{{"weight_map", wrong}}.dump());
    CHECK_EEXIT_ERROR(eexit::load_hf(dir.path.string()), "s1.safetensors", "model.norm.weight",
                      "missing");

    write_text(dir / "model.safetensors.index.json", R"({"weight_map": [1]})");
    CHECK_EEXIT_ERROR(eexit::load_hf(dir.path.string()), "model.safetensors.index.json",
                      "weight_map");
  }
}

TEST_CASE("converted stories260K HF checkpoints equal the .bin") {
  const char* root = hf_fixture_dir();
  if (!root) {
    MESSAGE("EEXIT_HF_FIXTURE_DIR not set (run through ctest): skipped");
    return;
  }
  const auto bin = eexit::load_llama2c(stories_bin);

  SUBCASE("f32, single file") {
    const std::string dir = std::string(root) + "/stories260K_f32";
    const auto hf = eexit::load_model(dir);
    const auto& c = hf.config;
    CHECK(c.dim == 64);
    CHECK(c.n_layers == 5);
    CHECK(c.n_heads == 8);
    CHECK(c.n_kv_heads == 4);
    CHECK(c.head_dim == 8);
    CHECK(c.vocab_size == 512);
    CHECK(c.max_seq_len == 512);
    CHECK(c.tied_embeddings);
    CHECK(c.rope == eexit::rope_style::half);
    CHECK(c.rms_eps == 1e-5f);
    CHECK(c.eos_ids == std::vector<int>{2});
    // Q/K rows differ (permuted for rotate_half) until the permutation is undone.
    CHECK(hf.layers[0].wq != bin.layers[0].wq);
    check_same_weights(bin, unpermuted(hf));
    check_same_weights(bin, unpermuted(eexit::load_hf(dir + "/model.safetensors")));
  }
  SUBCASE("bf16, two shards") {
    const std::string dir = std::string(root) + "/stories260K_bf16_sharded";
    const auto hf = eexit::load_model(dir + "/model.safetensors.index.json", [] {
      eexit::LoadOptions o;
      o.weights = eexit::dtype::f32;
      return o;
    }());
    CHECK(hf.config.dim == 64);
    // torch rounds to bf16 to nearest even, as f32_to_bf16 does: equality is exact.
    check_same_weights(bf16_rounded(bin), unpermuted(hf));
    // Loaded as stored, the matrices stay bf16 and widen to exactly those values.
    const auto kept = eexit::load_model(dir + "/model.safetensors.index.json");
    CHECK(kept.layers[0].wq.type() == eexit::dtype::bf16);
    CHECK(kept.layers[0].w_down.to_f32() == hf.layers[0].w_down.f32());
    CHECK(kept.tok_embedding.to_f32() == hf.tok_embedding.f32());
  }
}
