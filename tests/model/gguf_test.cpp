// GGUF: the container reader, the llama loader and the exit-point options.
//  - stories260K.gguf (llama.cpp's converter output) against stories260K.bin: config,
//    bit-identical weights, the same 256 greedy tokens (the logits are in logits_test).
//  - Q8_0/Q4_0/F16/BF16 files written by tools/gguf_tool.py (numpy, llama.cpp's reference
//    quantizers) against numpy's own dequantization, and hand-built blocks.
//  - malformed files built here byte by byte (a writer independent of the reader).
//  - exit points from eexit.early_exit.* metadata and from LoadOptions::exit_layers.
#include "eexit/model/gguf.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "../test_paths.hpp"
#include "eexit/eexit.hpp"
#include "eexit/model/load.hpp"
#include "same_weights.hpp"

using namespace eexit;

namespace {

using Bytes = std::vector<std::uint8_t>;

const std::string stories_bin = test::shared("models/stories260K/stories260K.bin");
const std::string stories_gguf = test::shared("models/stories260K/stories260K.gguf");

Bytes read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE(f.good());
  return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const eexit::error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("NOT eexit::error: ") + e.what();
  }
  return "no exception";
}

#define CHECK_EEXIT_ERROR(expr, ...)                                                            \
  do {                                                                                          \
    const std::string msg_ = error_of([&] { (void)(expr); });                                   \
    CHECK_MESSAGE(msg_.rfind("NOT ", 0) != 0, msg_);                                            \
    CHECK_MESSAGE(msg_ != "no exception", "expected eexit::error");                             \
    for (const std::string& part_ : std::initializer_list<std::string>{__VA_ARGS__})            \
      CHECK_MESSAGE(msg_.find(part_) != std::string::npos, "'", msg_, "' lacks '", part_, "'"); \
  } while (0)

// ---- a GGUF writer of our own (test side, shares nothing with the reader) ----------------

template <class T>
void put(Bytes& b, T v) {
  const std::size_t n = b.size();
  b.resize(n + sizeof v);
  std::memcpy(b.data() + n, &v, sizeof v);
}
void put_str(Bytes& b, const std::string& s) {
  put<std::uint64_t>(b, s.size());
  b.insert(b.end(), s.begin(), s.end());
}

// One metadata value: its u32 type followed by its encoding.
Bytes v_u32(std::uint32_t v) {
  Bytes b;
  put<std::uint32_t>(b, 4);
  put(b, v);
  return b;
}
Bytes v_f32(float v) {
  Bytes b;
  put<std::uint32_t>(b, 6);
  put(b, v);
  return b;
}
Bytes v_str(const std::string& s) {
  Bytes b;
  put<std::uint32_t>(b, 8);
  put_str(b, s);
  return b;
}
Bytes v_arr_i32(const std::vector<std::int32_t>& v) {
  Bytes b;
  put<std::uint32_t>(b, 9);
  put<std::uint32_t>(b, 5);
  put<std::uint64_t>(b, v.size());
  for (auto x : v) put(b, x);
  return b;
}
Bytes v_arr_str(const std::vector<std::string>& v) {
  Bytes b;
  put<std::uint32_t>(b, 9);
  put<std::uint32_t>(b, 8);
  put<std::uint64_t>(b, v.size());
  for (const auto& x : v) put_str(b, x);
  return b;
}
Bytes v_arr_f32(const std::vector<float>& v) {
  Bytes b;
  put<std::uint32_t>(b, 9);
  put<std::uint32_t>(b, 6);
  put<std::uint64_t>(b, v.size());
  for (auto x : v) put(b, x);
  return b;
}

struct Tensor {
  std::string name;
  std::vector<std::uint64_t> ne;
  std::uint32_t type = 0;  // F32
  Bytes data;
  std::optional<std::uint64_t> offset = {};  // none: the writer places it
};

struct Spec {
  std::uint32_t version = 3;
  std::vector<std::pair<std::string, Bytes>> kv;
  std::vector<Tensor> tensors;
  std::uint64_t alignment = 32;

  Spec& set(const std::string& key, Bytes v) {
    for (auto& [k, old] : kv)
      if (k == key) {
        old = std::move(v);
        return *this;
      }
    kv.emplace_back(key, std::move(v));
    return *this;
  }
  Spec& erase(const std::string& key) {
    std::erase_if(kv, [&](const auto& e) { return e.first == key; });
    return *this;
  }
  Tensor& tensor(const std::string& name) {
    for (auto& t : tensors)
      if (t.name == name) return t;
    FAIL("no tensor " << name);
    return tensors.front();
  }
};

Bytes build(const Spec& s) {
  Bytes b;
  put<std::uint32_t>(b, 0x46554747u);
  put(b, s.version);
  put<std::uint64_t>(b, s.tensors.size());
  put<std::uint64_t>(b, s.kv.size());
  for (const auto& [k, v] : s.kv) {
    put_str(b, k);
    b.insert(b.end(), v.begin(), v.end());
  }
  std::uint64_t off = 0;
  std::vector<std::uint64_t> offs;
  for (const auto& t : s.tensors) {
    put_str(b, t.name);
    put<std::uint32_t>(b, std::uint32_t(t.ne.size()));
    for (auto d : t.ne) put(b, d);
    put(b, t.type);
    const std::uint64_t o = t.offset.value_or(off);
    put(b, o);
    offs.push_back(o);
    off = std::max(off, (o + t.data.size() + s.alignment - 1) / s.alignment * s.alignment);
  }
  b.resize((b.size() + s.alignment - 1) / s.alignment * s.alignment, 0);
  const std::size_t data = b.size();
  for (std::size_t i = 0; i < s.tensors.size(); ++i) {
    const Bytes& d = s.tensors[i].data;
    if (offs[i] > (1u << 24)) continue;  // a deliberately absurd offset: nothing to place
    if (data + offs[i] + d.size() > b.size()) b.resize(data + offs[i] + d.size(), 0);
    std::memcpy(b.data() + data + offs[i], d.data(), d.size());
  }
  return b;
}

Bytes f32_data(std::size_t n, float seed) {
  Bytes b;
  for (std::size_t i = 0; i < n; ++i) put(b, std::sin(seed + 0.37f * float(i)) * 0.1f);
  return b;
}

// A tiny llama: dim 8, 2 layers, 2 heads / 1 kv head (head size 4), MLP 16, vocab 32, tied.
Spec tiny_llama() {
  Spec s;
  s.set("general.architecture", v_str("llama"))
      .set("llama.context_length", v_u32(64))
      .set("llama.embedding_length", v_u32(8))
      .set("llama.feed_forward_length", v_u32(16))
      .set("llama.block_count", v_u32(2))
      .set("llama.attention.head_count", v_u32(2))
      .set("llama.attention.head_count_kv", v_u32(1))
      .set("llama.rope.dimension_count", v_u32(4))
      .set("llama.rope.freq_base", v_f32(500000.0f))
      .set("llama.attention.layer_norm_rms_epsilon", v_f32(1e-6f))
      .set("llama.vocab_size", v_u32(32));
  float seed = 0;
  auto add = [&](const std::string& name, std::vector<std::uint64_t> ne) {
    std::size_t n = 1;
    for (auto d : ne) n *= d;
    s.tensors.push_back({name, ne, 0, f32_data(n, seed += 1.0f)});
  };
  add("token_embd.weight", {8, 32});
  for (int l = 0; l < 2; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    add(p + "attn_norm.weight", {8});
    add(p + "attn_q.weight", {8, 8});
    add(p + "attn_k.weight", {8, 4});
    add(p + "attn_v.weight", {8, 4});
    add(p + "attn_output.weight", {8, 8});
    add(p + "ffn_norm.weight", {8});
    add(p + "ffn_gate.weight", {8, 16});
    add(p + "ffn_down.weight", {16, 8});
    add(p + "ffn_up.weight", {8, 16});
  }
  add("output_norm.weight", {8});
  return s;
}

ModelWeights load_bytes(const Bytes& b) {
  return load_gguf(gguf::File::parse(std::span(b.data(), b.size()), "mem.gguf"));
}

GenerateRequest greedy(int max_tokens) {
  GenerateRequest r;
  r.prompt = {1};
  r.max_tokens = max_tokens;
  r.ignore_eos = true;
  return r;
}

template <class P = FullDepth>
std::vector<std::int32_t> generate(ModelWeights w, int max_tokens, P policy = {},
                                   EngineStats* stats = nullptr) {
  CpuBackend be(2);
  LlamaModel<CpuBackend> model(be, std::move(w));
  PagedCache<CpuBackend, 16> cache(be, model.config(), 64);
  Engine<P, PagedCache<CpuBackend, 16>> engine(model, cache, policy);
  engine.add_request(greedy(max_tokens));
  auto out = engine.run_to_completion();
  REQUIRE(out.size() == 1);
  if (stats) *stats = engine.stats();
  return out[0].tokens;
}

std::string fixture(const std::string& name) {
  const char* dir = std::getenv("EEXIT_GGUF_FIXTURE_DIR");
  return dir ? std::string(dir) + "/" + name : std::string();
}

}  // namespace

TEST_CASE("stories260K.gguf: the .bin's config and bit-identical weights") {
  const auto f = gguf::File::open(stories_gguf);
  CHECK(f.version() == 3);
  CHECK(f.tensors().size() == 48);
  CHECK(f.metadata().size() == 19);
  CHECK(f.alignment() == 32);
  CHECK(f.data_offset() == 14176);  // as SOURCES.md measured it
  CHECK(f.find("tokenizer.ggml.tokens")->strings.size() == 512);
  CHECK(f.find("tokenizer.ggml.tokens")->strings[259] == "\xE2\x96\x81t");
  CHECK(f.tensor("blk.0.ffn_down.weight")->ne == std::vector<std::int64_t>{172, 64});

  const ModelWeights g = load_model(stories_gguf), b = load_model(stories_bin);
  const ModelConfig &c = g.config, &cb = b.config;
  CHECK(c.dim == 64);
  CHECK(c.hidden_dim == 172);
  CHECK(c.n_layers == 5);
  CHECK(c.n_heads == 8);
  CHECK(c.n_kv_heads == 4);
  CHECK(c.head_dim == 8);
  CHECK(c.vocab_size == 512);
  CHECK(c.max_seq_len == 2048);  // the GGUF's context_length (the .bin says 512)
  CHECK(c.rope == rope_style::interleaved);
  CHECK(c.rope == cb.rope);
  CHECK(c.rope_theta == cb.rope_theta);
  CHECK(c.rms_eps == cb.rms_eps);
  CHECK(c.bos_id == 1);
  CHECK(c.eos_ids == std::vector<int>{2});
  CHECK_FALSE(c.tied_embeddings);  // output.weight is present (a copy of token_embd)
  CHECK(c.early_exit.exit_layers.empty());
  test::check_same_weights(g, b, /*as_used=*/true);
}

TEST_CASE("stories260K.gguf generates exactly the 256 greedy tokens stories260K.bin does") {
  const auto g = generate(load_model(stories_gguf), 256);
  const auto b = generate(load_model(stories_bin), 256);
  REQUIRE(g.size() == 256);
  CHECK(g == b);
  // And the text is the one llama2.c's doc prints, through the GGUF's own tokenizer.
  const Tokenizer tok = Tokenizer::load(stories_gguf, 512);
  std::vector<int> ids(g.begin(), g.end());
  CHECK(tok.decode(ids).rfind("Once upon a time, there was a little girl named Lily.", 0) == 0);
}

TEST_CASE("Q8_0 and Q4_0 blocks built by hand dequantize per llama.cpp's layout") {
  // Q8_0: f16 d = 0.5 (0x3800), q = -128, -127, ..., -97.
  Bytes q8 = {0x00, 0x38};
  for (int j = 0; j < 32; ++j) q8.push_back(std::uint8_t(std::int8_t(-128 + j)));
  std::vector<float> y(32);
  gguf::dequantize(gguf::tensor_type::q8_0, q8, y);
  for (int j = 0; j < 32; ++j) CHECK(y[std::size_t(j)] == 0.5f * float(-128 + j));
  // Q4_0: d = -2 (0xC000); byte j holds element j (low nibble) and j+16 (high nibble).
  Bytes q4 = {0x00, 0xC0};
  for (int j = 0; j < 16; ++j) q4.push_back(std::uint8_t(j | (15 - j) << 4));
  gguf::dequantize(gguf::tensor_type::q4_0, q4, y);
  for (int j = 0; j < 16; ++j) {
    CHECK(y[std::size_t(j)] == -2.0f * float(j - 8));
    CHECK(y[std::size_t(j + 16)] == -2.0f * float(15 - j - 8));
  }
  // A size that does not match the element count is refused, not read past.
  CHECK_THROWS_AS(gguf::dequantize(gguf::tensor_type::q4_0, std::span(q4).first(17), y),
                  eexit::error);
}

TEST_CASE("quantized GGUF files dequantize to numpy's reference values, bit for bit") {
  if (fixture("x").empty()) {
    MESSAGE("EEXIT_GGUF_FIXTURE_DIR not set (run through ctest): skipped");
    return;
  }
  for (const char* t : {"q8_0", "q4_0", "f16", "bf16"}) {
    CAPTURE(t);
    const std::string q = fixture(std::string("stories260K_") + t + ".gguf");
    const auto f = gguf::File::open(q);
    // The 2-D weights really are in the type (rows of 172 stay F16, as llama.cpp falls back).
    const auto want = std::string(t) == "q8_0"   ? gguf::tensor_type::q8_0
                      : std::string(t) == "q4_0" ? gguf::tensor_type::q4_0
                      : std::string(t) == "f16"  ? gguf::tensor_type::f16
                                                 : gguf::tensor_type::bf16;
    CHECK(f.tensor("blk.1.attn_q.weight")->type == want);
    CHECK(f.tensor("blk.1.ffn_gate.weight")->type == want);
    CHECK(f.tensor("blk.1.attn_norm.weight")->type == gguf::tensor_type::f32);
    const auto raw = f.tensor("blk.1.attn_q.weight")->data;
    CHECK(raw.size() == 64 * 64 / gguf::traits(want).blck * gguf::traits(want).type_size);
    test::check_same_weights(
        load_model(q), load_model(fixture(std::string("stories260K_") + t + ".expected.gguf")));
  }
  // Quantization error is real but small: greedy tokens of the Q8_0 model against f32.
  const auto f32 = generate(load_model(stories_gguf), 128);
  for (const char* t : {"q8_0", "q4_0"}) {
    const auto q = generate(load_model(fixture(std::string("stories260K_") + t + ".gguf")), 128);
    std::size_t same = 0;
    while (same < q.size() && q[same] == f32[same]) ++same;
    MESSAGE(std::string(t) << ": first " << same << " of 128 greedy tokens equal the f32 model's");
    if (std::string(t) == "q8_0") CHECK(same >= 32);
  }
}

TEST_CASE("Q4_K, Q5_K and Q6_K super-blocks dequantize as numpy reads ggml's layout") {
  if (fixture("x").empty()) {
    MESSAGE("EEXIT_GGUF_FIXTURE_DIR not set (run through ctest): skipped");
    return;
  }
  // tools/gguf_tool.py q4k / q5k / q6k: random blocks (the first with zero and subnormal
  // scales) and numpy's element-by-element dequantization, as F32.
  struct Case {
    const char* name;
    gguf::tensor_type type;
    std::uint64_t block_bytes;
  };
  for (const Case& k :
       {Case{"q4k", gguf::tensor_type::q4_k, 144}, Case{"q5k", gguf::tensor_type::q5_k, 176},
        Case{"q6k", gguf::tensor_type::q6_k, 210}}) {
    CAPTURE(k.name);
    const std::string base = std::string(k.name).insert(2, "_");  // q4_k
    const auto q = gguf::File::open(fixture(base + ".gguf"));
    const auto e = gguf::File::open(fixture(base + ".expected.gguf"));
    REQUIRE(q.tensor(k.name)->type == k.type);
    CHECK(q.tensor(k.name)->n_bytes == 6u * k.block_bytes);
    const auto got = gguf::read_f32(q, k.name, {3, 512});
    const auto want = gguf::read_f32(e, k.name, {3, 512});
    REQUIRE(got.size() == want.size());
    std::size_t bad = 0, exact = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {  // a compiler may fuse d*q - m into one FMA
      bad += !(std::fabs(got[i] - want[i]) <= 1e-6f * std::max(1.0f, std::fabs(want[i])));
      exact += std::memcmp(&got[i], &want[i], sizeof(float)) == 0;
    }
    CHECK(bad == 0);
    if (k.type == gguf::tensor_type::q6_k) CHECK(exact == got.size());  // (d*scale)*q: no FMA
    // read_weight keeps the blocks (the CPU backend's int8 kernels take them); widened, they
    // are dequantize's values, bit for bit.
    const Weight w = gguf::read_weight(q, k.name, {3, 512});
    CHECK(w.type() == (k.type == gguf::tensor_type::q4_k   ? dtype::q4_k
                       : k.type == gguf::tensor_type::q5_k ? dtype::q5_k
                                                           : dtype::q6_k));
    CHECK(w.byte_size() == 6u * k.block_bytes);
    const std::vector<float> widened = w.to_f32();
    CHECK(std::memcmp(widened.data(), got.data(), got.size() * sizeof(float)) == 0);
  }
}

// The K-quant files people download are llama.cpp's mixes (Q4_K_M: Q4_K with Q6_K for the
// token embedding / output, attn_v and ffn_down; Q5_K_M likewise; rows that are not whole
// super-blocks fall back to Q5_0 / Q5_1 / Q8_0). gguf_tool.py kmix writes such a tiny tied
// llama and its twin with every tensor F32 as numpy dequantizes it.
TEST_CASE("a Q4_K_M-style mixed GGUF loads every tensor in its type and runs as its F32 twin") {
  if (fixture("x").empty()) {
    MESSAGE("EEXIT_GGUF_FIXTURE_DIR not set (run through ctest): skipped");
    return;
  }
  const std::string qpath = fixture("kmix.gguf"), epath = fixture("kmix.expected.gguf");
  const auto f = gguf::File::open(qpath);
  using tt = gguf::tensor_type;
  CHECK(f.tensor("token_embd.weight")->type == tt::q6_k);
  CHECK(f.tensor("blk.0.attn_q.weight")->type == tt::q4_k);
  CHECK(f.tensor("blk.0.attn_v.weight")->type == tt::q6_k);
  CHECK(f.tensor("blk.0.attn_output.weight")->type == tt::q5_1);  // rows of 32
  CHECK(f.tensor("blk.1.attn_output.weight")->type == tt::q5_0);
  CHECK(f.tensor("blk.0.ffn_up.weight")->type == tt::q5_k);
  CHECK(f.tensor("blk.1.ffn_down.weight")->type == tt::q6_k);
  CHECK(f.tensor("output_norm.weight")->type == tt::f32);

  const ModelWeights q = load_model(qpath), e = load_model(epath);
  // Each matrix kept in its type (K-quants no longer widened to fp32 at load).
  CHECK(q.tok_embedding.type() == dtype::q6_k);
  CHECK(q.layers[0].wq.type() == dtype::q4_k);
  CHECK(q.layers[0].wv.type() == dtype::q6_k);
  CHECK(q.layers[0].w_up.type() == dtype::q5_k);
  CHECK(q.layers[0].wo.type() == dtype::f32);  // Q5_1: widened
  // Weight for weight, within an FMA's rounding of d*q - m.
  auto close = [](const Weight& a, const Weight& b) {
    const auto x = a.to_f32(), y = b.to_f32();
    if (x.size() != y.size()) return false;
    for (std::size_t i = 0; i < x.size(); ++i)
      if (!(std::fabs(x[i] - y[i]) <= 1e-6f * std::max(1.0f, std::fabs(y[i])))) return false;
    return true;
  };
  CHECK(close(q.tok_embedding, e.tok_embedding));
  for (std::size_t l = 0; l < q.layers.size(); ++l) {
    CAPTURE(l);
    const auto &a = q.layers[l], &b = e.layers[l];
    CHECK(a.attn_norm == b.attn_norm);
    for (auto [x, y] : {std::pair{&a.wq, &b.wq},
                        {&a.wk, &b.wk},
                        {&a.wv, &b.wv},
                        {&a.wo, &b.wo},
                        {&a.w_gate, &b.w_gate},
                        {&a.w_up, &b.w_up},
                        {&a.w_down, &b.w_down}})
      CHECK(close(*x, *y));
  }
  // The logits at every position of a prompt within the int8 activations' rounding (the
  // K-quant products quantize x to Q8 blocks; the twin's fp32 products do not), bitwise the
  // same whether the matrices were repacked at load or are read as the file stores them, and
  // the same greedy tokens.
  auto prefill_logits = [](const std::string& path, bool repack = true) {
    CpuBackend be(2);
    be.set_repack(repack);
    LlamaModel<CpuBackend> m(be, load_model(path));
    const std::vector<std::int32_t> tokens = {1, 7, 30, 2, 19, 11};
    const std::size_t n = tokens.size(), dim = std::size_t(m.config().dim);
    PagedCache<CpuBackend, 16> cache(be, m.config(), 4);
    REQUIRE(cache.reserve(0, std::int32_t(n)));
    std::vector<RowKv> rk;
    for (std::int32_t p = 0; p < std::int32_t(n); ++p) rk.push_back(RowKv{cache.block_table(0), p});
    auto ws = m.make_workspace(n);
    std::vector<float> x(n * dim), logits(n * std::size_t(m.config().vocab_size));
    m.embed(tokens.data(), n, x.data());
    for (int l = 0; l < m.n_layers(); ++l)
      m.forward_layer(l, x.data(), n, rk.data(), cache.view(l), ws);
    m.exit_logits(m.n_exits() - 1, x.data(), n, logits.data(), ws);
    return logits;
  };
  const auto lq = prefill_logits(qpath), le = prefill_logits(epath);
  REQUIRE(lq.size() == le.size());
  double worst = 0, scale = 0;
  for (std::size_t i = 0; i < lq.size(); ++i) {
    worst = std::max(worst, double(std::fabs(lq[i] - le[i])));
    scale = std::max(scale, double(std::fabs(le[i])));
  }
  MESSAGE("K-mix vs its F32 twin, logits: max|a-b| = " << worst << ", max|logit| = " << scale);
  CHECK(scale > 0.1);
  CHECK(worst <= 0.05 * scale);  // (measured 0.013)
  const auto lr = prefill_logits(qpath, false);
  CHECK(std::memcmp(lr.data(), lq.data(), lq.size() * sizeof(float)) == 0);
  CHECK(generate(load_model(qpath), 24) == generate(load_model(epath), 24));

  // A NaN scale in one block of a file llama.cpp could have written: refused, named.
  Bytes b = read_bytes(qpath);
  const gguf::TensorInfo* up = f.tensor("blk.1.ffn_up.weight");
  const std::size_t at = std::size_t(f.data_offset() + up->offset) + 3 * 176 + 2;  // block 3's dmin
  b[at] = 0x00, b[at + 1] = 0x7E;
  CHECK_EEXIT_ERROR(load_gguf(gguf::File::parse(b, "kmix.gguf")),
                    "kmix.gguf: tensor 'blk.1.ffn_up.weight'", "Q5_K block 3", "dmin", "NaN");
  // and an inf d in a Q6_K matrix (its d sits at the end of the block), kept quantized too
  Bytes c = read_bytes(qpath);
  const gguf::TensorInfo* down = f.tensor("blk.0.ffn_down.weight");
  const std::size_t at6 = std::size_t(f.data_offset() + down->offset) + 2 * 210 + 208;
  c[at6] = 0x00, c[at6 + 1] = 0x7C;
  CHECK_EEXIT_ERROR(load_gguf(gguf::File::parse(c, "kmix.gguf")),
                    "kmix.gguf: tensor 'blk.0.ffn_down.weight'", "Q6_K block 2", "scale d", "inf");
}

TEST_CASE("GGUF tokenizer of ggml-vocab-llama-spm.gguf reproduces llama.cpp's test vectors") {
  const std::string path = test::shared("models/tokenizers/ggml-vocab-llama-spm.gguf");
  const Tokenizer tok = Tokenizer::load(path, 32000);
  CHECK(tok.bos_id() == 1);
  CHECK(tok.eos_id() == 2);
  CHECK(tok.unk_id() == 0);
  CHECK(tok.is_special(1));
  std::ifstream fi(path + ".inp", std::ios::binary), fo(path + ".out");
  REQUIRE(fi.good());
  REQUIRE(fo.good());
  std::stringstream si;
  si << fi.rdbuf();
  const std::string inp = si.str(), sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> cases;
  for (std::size_t b = 0, e; (e = inp.find(sep, b)) != std::string::npos; b = e + sep.size())
    cases.push_back(inp.substr(b, e - b));
  REQUIRE(cases.size() == 46);
  std::size_t i = 0;
  for (std::string line; std::getline(fo, line); ++i) {
    REQUIRE(i < cases.size());
    CAPTURE(cases[i]);
    std::vector<int> want;
    std::istringstream ls(line);
    for (int x; ls >> x;) want.push_back(x);
    const auto got = tok.encode(cases[i], false);
    CHECK(got == want);
    CHECK(tok.decode(got) == cases[i]);
  }
  CHECK(i == cases.size());
  CHECK(tok.encode("Hello", true) == std::vector<int>{1, 15043});  // add_bos_token true
}

TEST_CASE("a SentencePiece GGUF vocabulary without an unknown id or byte tokens still encodes") {
  // Found by gguf_fuzz: a character with no piece and no <0xXX> token became id -1.
  Bytes tokens;
  put<std::uint32_t>(tokens, 9);
  put<std::uint32_t>(tokens, 8);
  put<std::uint64_t>(tokens, 4);
  for (const char* t : {"<s>", "</s>",
                        "\xE2\x96\x81"
                        "a",
                        "a"})
    put_str(tokens, t);
  Spec s;
  s.set("tokenizer.ggml.model", v_str("llama")).set("tokenizer.ggml.tokens", tokens);
  const Bytes b = build(s);
  const Tokenizer t = Tokenizer::from_gguf(gguf::File::parse(b, "vocab.gguf"));
  const auto ids = t.encode("a b", false);
  REQUIRE(ids.size() >= 2);
  for (int id : ids) CHECK((id >= 0 && id < 4));  // unmatched characters are unk (0)
  CHECK(std::count(ids.begin(), ids.end(), 0) >= 1);
}

TEST_CASE("stories260K.gguf's tokenizer encodes and decodes as tok512.bin does") {
  const Tokenizer g = Tokenizer::load(stories_gguf, 512);
  const Tokenizer b = Tokenizer::load(test::shared("models/stories260K/tok512.bin"), 512);
  for (const char* s : {"Once upon a time, there was a little girl named Lily.", "", " ",
                        "  two  spaces\nand a newline", "caf\xC3\xA9 \xE2\x82\xAC 100%",
                        "\xF0\x9F\x98\x80 emoji"}) {
    CAPTURE(s);
    CHECK(g.encode(s, true) == b.encode(s, true));
    const auto ids = g.encode(s, false);
    CHECK(g.decode(ids) == b.decode(ids));
  }
}

TEST_CASE("a gpt2 GGUF vocabulary encodes as the tokenizer.json it was converted from") {
  if (fixture("x").empty()) {
    MESSAGE("EEXIT_GGUF_FIXTURE_DIR not set (run through ctest): skipped");
    return;
  }
  const Tokenizer g = Tokenizer::load(fixture("shakespeare_vocab.gguf"));
  const Tokenizer h = Tokenizer::load(test::source("models/eexit-shakespeare/tokenizer.json"));
  CHECK(g.kind() == Tokenizer::Kind::byte_level_bpe);
  CHECK(g.vocab_size() == h.vocab_size());
  std::ifstream f(test::shared("data/tinyshakespeare.txt"), std::ios::binary);
  std::string text(20000, '\0');
  f.read(text.data(), std::streamsize(text.size()));
  for (const std::string& s :
       {text, std::string("Hello<|endoftext|>world \xC3\xA9t\xC3\xA9  \n\n  x"), std::string()}) {
    const auto ids = g.encode(s, true);
    CHECK(ids == h.encode(s, true));
    CHECK(g.decode(ids) == h.decode(ids));
  }
}

TEST_CASE("a tiny GGUF built here loads: GQA, rope base, eps, tied output") {
  const ModelWeights m = load_bytes(build(tiny_llama()));
  const ModelConfig& c = m.config;
  CHECK(c.dim == 8);
  CHECK(c.n_kv_heads == 1);
  CHECK(c.head_dim == 4);
  CHECK(c.rope_theta == 500000.0f);
  CHECK(c.rms_eps == 1e-6f);
  CHECK(c.max_seq_len == 64);
  CHECK(c.tied_embeddings);
  CHECK(m.lm_head.empty());
  CHECK(m.layers[1].w_down.size() == 16u * 8u);
  // Row-major (out, in) = ggml's ne = [in, out]: element [r][k] is at r*in + k.
  Bytes e = tiny_llama().tensor("blk.1.ffn_down.weight").data;
  float v;
  std::memcpy(&v, e.data() + 4 * (3 * 16 + 5), 4);
  CHECK(m.layers[1].w_down[3 * 16 + 5] == v);
}

TEST_CASE("Llama 3 GGUF: EOS ids from eos/eot/eom ids and the end-of-generation control tokens") {
  std::vector<std::string> toks(32);
  std::vector<std::int32_t> types(32, 1);
  for (int i = 0; i < 32; ++i) {  // snprintf: GCC 12 warns falsely on "t" + std::to_string(i)
    char name[16];
    std::snprintf(name, sizeof name, "t%d", i);
    toks[std::size_t(i)] = name;
  }
  toks[5] = "<|end_of_text|>", toks[7] = "<|eot_id|>", toks[9] = "<|eom_id|>";
  types[5] = types[7] = 3;  // control; <|eom_id|> left normal: not an end of generation
  Spec s = tiny_llama();
  s.set("tokenizer.ggml.tokens", v_arr_str(toks))
      .set("tokenizer.ggml.token_type", v_arr_i32(types))
      .set("tokenizer.ggml.eos_token_id", v_u32(5));
  CHECK(load_bytes(build(s)).config.eos_ids == std::vector<int>{5, 7});
  // An Instruct GGUF: eos = <|eot_id|>; eot/eom ids named too; no duplicates.
  types[9] = 3;
  s.set("tokenizer.ggml.token_type", v_arr_i32(types))
      .set("tokenizer.ggml.eos_token_id", v_u32(7))
      .set("tokenizer.ggml.eot_token_id", v_u32(7))
      .set("tokenizer.ggml.eom_token_id", v_u32(9));
  CHECK(load_bytes(build(s)).config.eos_ids == std::vector<int>{7, 9, 5});
}

TEST_CASE("malformed GGUF files throw eexit::error naming the field or tensor") {
  SUBCASE("truncated anywhere") {
    const Bytes file = read_bytes(stories_gguf);
    // Every cut inside the header, metadata and tensor infos, then through the data.
    std::vector<std::size_t> cuts;
    for (std::size_t c = 0; c < 14200; ++c) cuts.push_back(c);
    for (std::size_t c = 14200; c < file.size(); c += 4093) cuts.push_back(c);
    cuts.push_back(file.size() - 1);
    for (std::size_t cut : cuts) {
      const std::string msg =
          error_of([&] { load_gguf(gguf::File::parse(std::span(file).first(cut), "cut.gguf")); });
      if (msg.rfind("cut.gguf", 0) != 0) {
        CAPTURE(cut);
        FAIL_CHECK(msg);
      }
    }
  }
  SUBCASE("header") {
    Bytes b = build(tiny_llama());
    Bytes bad = b;
    bad[0] = 'X';
    CHECK_EEXIT_ERROR(load_bytes(bad), "mem.gguf", "magic", "not a GGUF");
    for (std::uint32_t v : {1u, 4u, 0xFFFFFFFFu}) {
      Spec s = tiny_llama();
      s.version = v;
      CHECK_EEXIT_ERROR(load_bytes(build(s)), "version", std::to_string(v));
    }
    bad = b;
    const std::uint64_t huge = std::uint64_t(1) << 60;
    std::memcpy(bad.data() + 8, &huge, 8);
    CHECK_EEXIT_ERROR(load_bytes(bad), "tensor_count", "exceeds");
    bad = b;
    std::memcpy(bad.data() + 16, &huge, 8);
    CHECK_EEXIT_ERROR(load_bytes(bad), "kv_count", "exceeds");
  }
  SUBCASE("metadata encoding") {
    Bytes len_bomb;  // a string claiming 2^62 bytes
    put<std::uint32_t>(len_bomb, 8);
    put<std::uint64_t>(len_bomb, std::uint64_t(1) << 62);
    CHECK_EEXIT_ERROR(load_bytes(build(tiny_llama().set("general.name", len_bomb))), "general.name",
                      "truncated");
    Bytes bad_type;
    put<std::uint32_t>(bad_type, 13);
    CHECK_EEXIT_ERROR(load_bytes(build(tiny_llama().set("x", bad_type))), "metadata 'x'",
                      "unknown value type");
    Bytes nested;
    put<std::uint32_t>(nested, 9);
    put<std::uint32_t>(nested, 9);
    put<std::uint64_t>(nested, 1);
    CHECK_EEXIT_ERROR(load_bytes(build(tiny_llama().set("x", nested))), "nested");
    Bytes arr_bomb;
    put<std::uint32_t>(arr_bomb, 9);
    put<std::uint32_t>(arr_bomb, 10);
    put<std::uint64_t>(arr_bomb, std::uint64_t(1) << 61);
    CHECK_EEXIT_ERROR(load_bytes(build(tiny_llama().set("x", arr_bomb))), "metadata 'x'",
                      "exceeds");
    Bytes bool2;
    put<std::uint32_t>(bool2, 7);
    put<std::uint8_t>(bool2, 2);
    CHECK_EEXIT_ERROR(load_bytes(build(tiny_llama().set("x", bool2))), "bool");
    Spec dup = tiny_llama();
    dup.kv.push_back(dup.kv.front());
    CHECK_EEXIT_ERROR(load_bytes(build(dup)), "general.architecture", "duplicate");
    for (std::uint32_t a : {0u, 3u, 1u << 30}) {
      CAPTURE(a);
      CHECK_EEXIT_ERROR(load_bytes(build(tiny_llama().set("general.alignment", v_u32(a)))),
                        "general.alignment");
    }
  }
  SUBCASE("K-quant and Q5 tensors") {
    // One tensor 'w' of the given type and bytes, then an F32 one (so that a size mismatch
    // shows as an overlap or a gap, as in a model file).
    auto file = [](std::uint32_t type, std::vector<std::uint64_t> ne, Bytes data) {
      Spec s;
      s.set("general.architecture", v_str("llama"));
      s.tensors.push_back({"w", std::move(ne), type, std::move(data), {}});
      s.tensors.push_back({"next", {128}, 0, f32_data(128, 0), {}});
      return build(s);
    };
    auto parse = [](const Bytes& b) { return gguf::File::parse(b, "mem.gguf"); };
    // Rows that are not whole super-blocks (llama.cpp would have fallen back to Q5_0 etc.).
    CHECK_EEXIT_ERROR(parse(file(14, {128, 2}, Bytes(210))), "mem.gguf: tensor 'w'",
                      "row length 128", "Q6_K block size 256");
    CHECK_EEXIT_ERROR(parse(file(13, {96, 8}, Bytes(528))), "tensor 'w'", "row length 96", "Q5_K");
    // A byte size that does not match type x elements: one block short, F32 bytes retyped.
    CHECK_EEXIT_ERROR(parse(file(13, {256, 2}, Bytes(176))), "mem.gguf: tensor 'w'",
                      "512 Q5_K elements take 352 bytes", "'next'", "overlap");
    CHECK_EEXIT_ERROR(parse(file(14, {256, 1}, Bytes(1024))), "mem.gguf: tensor 'w'",
                      "256 Q6_K elements take 210 bytes", "a gap");
    {
      Spec s;
      s.tensors.push_back({"w", {256, 2}, 12, Bytes(144), {}});  // the last tensor, cut short
      CHECK_EEXIT_ERROR(parse(build(s)), "tensor 'w'", "outside");
    }
    // f16 scales that are inf or NaN: refused with the tensor, block and field named.
    struct Scale {
      std::uint32_t type;
      std::uint64_t blck, size, at;
      const char* field;
    };
    for (const Scale& c :
         {Scale{12, 256, 144, 0, "d"}, Scale{12, 256, 144, 2, "dmin"}, Scale{13, 256, 176, 0, "d"},
          Scale{13, 256, 176, 2, "dmin"}, Scale{14, 256, 210, 208, "d"}, Scale{6, 32, 22, 0, "d"},
          Scale{7, 32, 24, 2, "m"}, Scale{8, 32, 34, 0, "d"}, Scale{2, 32, 18, 0, "d"}}) {
      for (std::uint16_t bits : {std::uint16_t(0x7C00), std::uint16_t(0xFC00),
                                 std::uint16_t(0x7E00), std::uint16_t(0xFFFF)}) {
        CAPTURE(c.type);
        CAPTURE(c.field);
        CAPTURE(bits);
        Bytes data(3 * c.size, 0);  // three blocks of zeros (scales 0: finite), the last bad
        data[2 * c.size + c.at] = std::uint8_t(bits), data[2 * c.size + c.at + 1] = bits >> 8;
        const Bytes b = file(c.type, {3 * c.blck}, data);
        const auto f = parse(b);
        const std::int64_t n = std::int64_t(3 * c.blck);
        CHECK_EEXIT_ERROR(gguf::read_f32(f, "w", {n}), "mem.gguf: tensor 'w'", "block 2",
                          std::string("scale ") + c.field + " is ", (bits & 0x3FF) ? "NaN" : "inf");
        // As a weight: Q8_0 and Q4_0 are kept packed, the others dequantized; both refuse.
        CHECK_EEXIT_ERROR(gguf::read_weight(f, "w", {n}), "mem.gguf: tensor 'w'", "block 2",
                          std::string("scale ") + c.field + " is ", (bits & 0x3FF) ? "NaN" : "inf");
      }
    }
  }
  SUBCASE("llama metadata") {
    CHECK_EEXIT_ERROR(load_bytes(build(tiny_llama().erase("llama.block_count"))),
                      "llama.block_count", "missing");
    CHECK_EEXIT_ERROR(load_bytes(build(tiny_llama().set("llama.block_count", v_str("2")))),
                      "llama.block_count", "integer");
    CHECK_EEXIT_ERROR(load_bytes(build(tiny_llama().set("llama.block_count", v_u32(0)))),
                      "llama.block_count", "out of range");
    CHECK_EEXIT_ERROR(
        load_bytes(build(tiny_llama().set("llama.embedding_length", v_u32(0xFFFFFFFFu)))),
        "llama.embedding_length", "out of range");
    CHECK_EEXIT_ERROR(
        load_bytes(build(tiny_llama().set("llama.attention.head_count_kv", v_u32(3)))),
        "head_count_kv");
    CHECK_EEXIT_ERROR(load_bytes(build(tiny_llama().set("llama.rope.dimension_count", v_u32(2)))),
                      "llama.rope.dimension_count", "partial RoPE");
    CHECK_EEXIT_ERROR(
        load_bytes(build(tiny_llama().set("llama.attention.layer_norm_rms_epsilon", v_u32(1)))),
        "layer_norm_rms_epsilon", "float");
    CHECK_EEXIT_ERROR(load_bytes(build(tiny_llama().set("llama.rope.freq_base", v_f32(-1.0f)))),
                      "llama.rope.freq_base", "> 0");
    CHECK_EEXIT_ERROR(load_bytes(build(tiny_llama().set("llama.rope.scaling.type", v_str("yarn")))),
                      "llama.rope.scaling.type", "yarn");
    CHECK_EEXIT_ERROR(load_bytes(build(tiny_llama().set("general.architecture", v_str("gpt2")))),
                      "general.architecture", "gpt2");
    CHECK_EEXIT_ERROR(load_bytes(build(tiny_llama().erase("general.architecture"))),
                      "general.architecture", "missing");
  }
  SUBCASE("tensor infos and data") {
    auto with = [](const std::function<void(Spec&)>& f) {
      Spec s = tiny_llama();
      f(s);
      return build(s);
    };
    const std::string q = "blk.0.attn_q.weight";
    CHECK_EEXIT_ERROR(load_bytes(with([&](Spec& s) { s.tensor(q).ne = {}; })), q, "n_dims");
    CHECK_EEXIT_ERROR(load_bytes(with([&](Spec& s) {
                        s.tensor(q).ne = {8, 8, 1, 1, 1};
                      })),
                      q, "n_dims");
    CHECK_EEXIT_ERROR(load_bytes(with([&](Spec& s) {
                        s.tensor(q).ne = {8, 0};
                      })),
                      q, "out of range");
    CHECK_EEXIT_ERROR(load_bytes(with([&](Spec& s) {
                        s.tensor(q).ne = {std::uint64_t(1) << 40, std::uint64_t(1) << 40};
                      })),
                      q, "absurd");
    CHECK_EEXIT_ERROR(load_bytes(with([&](Spec& s) { s.tensor(q).type = 99; })), q,
                      "type 99 is not supported");
    CHECK_EEXIT_ERROR(load_bytes(with([&](Spec& s) { s.tensor(q).type = 3; })), q,  // Q4_1
                      "type 3 is not supported");
    CHECK_EEXIT_ERROR(load_bytes(with([&](Spec& s) { s.tensor(q).type = 8; })), q, "Q8_0",
                      "block size");
    CHECK_EEXIT_ERROR(load_bytes(with([&](Spec& s) { s.tensor(q).offset = 4; })), q, "alignment");
    CHECK_EEXIT_ERROR(load_bytes(with([&](Spec& s) { s.tensor(q).offset = 1u << 30; })), q,
                      "outside");
    CHECK_EEXIT_ERROR(load_bytes(with([&](Spec& s) { s.tensor(q).offset = ~std::uint64_t(31); })),
                      q, "outside");
    CHECK_EEXIT_ERROR(load_bytes(with([&](Spec& s) {
                        s.tensor(q).ne = {8, 4};
                        s.tensor(q).data.resize(8 * 4 * 4);
                      })),
                      q, "shape", "(4, 8)", "(8, 8)");
    // Data that does not match the type and shape: it runs into the next tensor, or leaves
    // a gap before it (a tensor retyped without being rewritten).
    CHECK_EEXIT_ERROR(load_bytes(with([&](Spec& s) {
                        s.tensor(q).ne = {8, 16};
                      })),
                      q, "128 F32 elements take 512 bytes", "blk.0.attn_k.weight", "overlap");
    CHECK_EEXIT_ERROR(load_bytes(with([&](Spec& s) { s.tensor(q).type = 1; })), q,
                      "64 F16 elements take 128 bytes", "a gap", "type and shape");
    CHECK_EEXIT_ERROR(load_bytes(with([&](Spec& s) { s.tensor(q).name = "blk.0.attn_k.weight"; })),
                      "blk.0.attn_k.weight", "duplicate");
    CHECK_EEXIT_ERROR(load_bytes(with([&](Spec& s) { s.tensor(q).name = "other"; })), q, "missing");
    // Llama 3 scaling's per-frequency factors: head_size/2 of them, each finite and > 0.
    CHECK_EEXIT_ERROR(load_bytes(with([&](Spec& s) {
                        s.tensors.push_back({"rope_freqs.weight", {3}, 0, f32_data(3, 1), {}});
                      })),
                      "rope_freqs.weight", "shape");
    CHECK_EEXIT_ERROR(load_bytes(with([&](Spec& s) {
                        s.tensors.push_back({"rope_freqs.weight", {2}, 0, f32_data(2, 0), {}});
                      })),
                      "rope_freqs.weight", "> 0");
  }
}

TEST_CASE("rope_freqs.weight (llama.cpp's Llama 3 scaling) divides the RoPE frequencies") {
  Spec s = tiny_llama();
  Bytes factors;
  put(factors, 1.0f);
  put(factors, 32.0f);
  s.tensors.push_back({"rope_freqs.weight", {2}, 0, factors, {}});
  const ModelWeights m = load_bytes(build(s));
  REQUIRE(m.config.rope_freq_factors == std::vector<float>{1.0f, 32.0f});
  ModelConfig plain = m.config;
  plain.rope_freq_factors.clear();
  const auto scaled = detail::rope_inv_freq(m.config), base = detail::rope_inv_freq(plain);
  CHECK(scaled[0] == base[0]);
  CHECK(scaled[1] == doctest::Approx(base[1] / 32.0f).epsilon(1e-7));
  CHECK(load_bytes(build(tiny_llama())).config.rope_freq_factors.empty());
}

TEST_CASE("exit points from eexit.early_exit.* metadata, validated") {
  Spec s = tiny_llama();
  s.set("eexit.early_exit.exit_layers", v_arr_i32({0}))
      .set("eexit.early_exit.thresholds", v_arr_f32({0.25f}))
      .set("eexit.early_exit.measure", v_str("entropy"));
  const ModelWeights m = load_bytes(build(s));
  CHECK(m.config.early_exit.exit_layers == std::vector<int>{0});
  CHECK(m.config.early_exit.thresholds == std::vector<float>{0.25f});
  CHECK(m.config.early_exit.measure == "entropy");
  CHECK(m.config.early_exit.head == exit_head_kind::shared);

  const std::string k = "eexit.early_exit.exit_layers";
  CHECK_EEXIT_ERROR(load_bytes(build(Spec(s).set(k, v_arr_i32({1})))), k, "out of range");
  CHECK_EEXIT_ERROR(load_bytes(build(Spec(s).set(k, v_arr_i32({-1})))), k, "out of range");
  CHECK_EEXIT_ERROR(load_bytes(build(Spec(s).set(k, v_str("0")))), k);
  CHECK_EEXIT_ERROR(load_bytes(build(Spec(s).erase(k))), k, "missing");
  CHECK_EEXIT_ERROR(
      load_bytes(build(Spec(s).set("eexit.early_exit.thresholds", v_arr_f32({0.1f, 0.2f})))),
      "eexit.early_exit.thresholds", "2 entries");
  CHECK_EEXIT_ERROR(load_bytes(build(Spec(s).set("eexit.early_exit.head", v_str("dedicated")))),
                    "eexit.early_exit.head", "shared");

  if (!fixture("x").empty()) {  // the same block written by tools/gguf_tool.py
    const auto e = load_model(fixture("stories260K_exit2.gguf"));
    CHECK(e.config.early_exit.exit_layers == std::vector<int>{2});
    CHECK(e.config.early_exit.thresholds == std::vector<float>{0.5f});
  }
}

TEST_CASE("--exit-layers: shared-head exits on a checkpoint without any, validated") {
  CHECK(parse_exit_layers("3,7", "--exit-layers") == std::vector<int>{3, 7});
  CHECK(parse_exit_layers("2", "--exit-layers") == std::vector<int>{2});
  for (const char* bad : {"", "3,", ",3", "a", "3;7", "-1", "2.5", "3,,7"}) {
    CAPTURE(bad);
    CHECK_EEXIT_ERROR(parse_exit_layers(bad, "--exit-layers"), "--exit-layers");
  }
  LoadOptions o;
  o.exit_layers = {4};  // the last layer (5 layers) is always an exit point
  CHECK_EEXIT_ERROR(load_model(stories_bin, o), "exit_layers", "out of range [0, 3]");
  o.exit_layers = {2, 1};
  CHECK_EEXIT_ERROR(load_model(stories_bin, o), "exit_layers", "increasing");
  o.exit_layers = {2, 2};
  CHECK_EEXIT_ERROR(load_model(stories_bin, o), "increasing");

  // Merged with the checkpoint's own exits, sorted.
  ModelWeights w = load_model(stories_bin);
  w.config.early_exit.exit_layers = {1};
  w.config.early_exit.thresholds = {0.5f};
  add_exit_layers(w, {0, 3});
  CHECK(w.config.early_exit.exit_layers == std::vector<int>{0, 1, 3});
  CHECK(w.config.early_exit.thresholds.empty());
  w.config.early_exit.head = exit_head_kind::dedicated;
  CHECK_EEXIT_ERROR(add_exit_layers(w, {2}), "dedicated");

  // Every format takes them: the GGUF too.
  o.exit_layers = {2};
  CHECK(load_model(stories_gguf, o).config.early_exit.exit_layers == std::vector<int>{2});

  // Exit after layer 2 with a threshold every row passes: the histogram has that exit, and
  // every token after the first (the prompt's row runs full depth) is the model cut after
  // layer 2's.
  AllConfident always;
  always.measure = AnyMeasure::from_name("max-prob");
  always.thresholds.values = {-2.0f};
  EngineStats st;
  const auto exited = generate(load_model(stories_bin, o), 24, always, &st);
  REQUIRE(st.exit_histogram.size() == 2);
  CHECK(st.exit_histogram[0] == 23);
  CHECK(st.exit_histogram[1] == 1);
  ModelWeights cut = load_model(stories_bin);
  cut.layers.resize(3);
  cut.config.n_layers = 3;
  const auto full = generate(load_model(stories_bin), 1);
  CpuBackend be(2);
  LlamaModel<CpuBackend> cut_model(be, std::move(cut));
  PagedCache<CpuBackend, 16> cache(be, cut_model.config(), 64);
  Engine<FullDepth, PagedCache<CpuBackend, 16>> engine(cut_model, cache);
  GenerateRequest r = greedy(23);
  r.prompt.push_back(full[0]);
  engine.add_request(r);
  auto ref = engine.run_to_completion()[0].tokens;
  ref.insert(ref.begin(), full[0]);
  CHECK(exited == ref);
}
