// The forward of a Llama 3.2 1B-config checkpoint (facebook/layerskip-llama3.2-1B's config:
// "llama3" rope_scaling, tied embeddings, GQA 4:1, head_dim 64, rope_theta 500000, bf16)
// against tools/reference_forward.py in float64, in its HF form and its GGUF forms (bf16 and
// f32, written by tools/gguf_tool.py from-hf the way llama.cpp's converter writes them:
// rope_freqs.weight, no output.weight). Logits of the final head and of LayerSkip's shared
// exit head, and every layer's K/V, at positions up to 4159 of one prompt.
//
// The checkpoint (tests/model/tests.cmake) is a small variant of the 1B config, same keys:
// dim 512, 8 query / 2 KV heads of 64, 2 layers, MLP 1024, vocab 512, exit after layer 0.
// head_dim 64 with rope_theta 500000 puts the 32 frequencies into all three llama3 bands
// (wavelength 2*pi*500000^(2i/64) against 8192/4 = 2048 and 8192/1): i = 0..14 kept,
// i = 15..17 interpolated, i = 18..31 divided by 32 (checked below). The bands only change
// the rotation where position x frequency is not small: at i = 18 the angle at position 4000
// is 2.5 rad unscaled and 0.08 rad scaled, so the prompt runs to position 4159 (past 2048,
// 4096) and K there differs by O(1) if a band is wrong.
//
// Set EEXIT_L32_1B_MODEL (a model path) and EEXIT_L32_1B_REF (tools/reference_dump.py's JSON
// of it) to run the last case on a true-size checkpoint (tools/check_llama3_1b.sh does).
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numbers>
#include <string>
#include <vector>

#include "eexit/backend/cpu.hpp"
#include "eexit/cache/paged.hpp"
#include "eexit/model/llama.hpp"
#include "eexit/model/load.hpp"

using nlohmann::json;
using vec = std::vector<double>;

namespace {

struct Reference {
  std::vector<std::int32_t> tokens;
  std::vector<int> check;  // positions compared
  vec inv_freq;
  std::vector<int> exit_layers;
  std::vector<vec> logits;                    // [i] at check[i]
  std::vector<std::vector<vec>> exit_logits;  // [e][i]
  std::vector<std::vector<vec>> k, v;         // [layer][i]
};

Reference read_reference(const std::string& path) {
  std::ifstream in(path);
  REQUIRE_MESSAGE(in.good(), path);
  const json j = json::parse(in);
  Reference r;
  j.at("tokens").get_to(r.tokens);
  j.at("check").get_to(r.check);
  j.at("inv_freq").get_to(r.inv_freq);
  j.at("exit_layers").get_to(r.exit_layers);
  j.at("logits").get_to(r.logits);
  j.at("exit_logits").get_to(r.exit_logits);
  j.at("k").get_to(r.k);
  j.at("v").get_to(r.v);
  return r;
}

// What our forward gives at the reference's positions, same layout as Reference.
struct Got {
  std::vector<vec> logits;
  std::vector<std::vector<vec>> exit_logits, k, v;
  bool pairs = false;  // K in interleaved-pair order (a GGUF model)
  std::size_t head_dim = 0;
};

// One prompt through LlamaModel<CpuBackend> over a paged cache, in prefill chunks of up to
// 512 rows as the engine's step runs them; exit logits from the shared head after each
// exit layer, K/V read back from the cache slots.
Got run(const std::string& model_path, const Reference& ref, eexit::bf16_act act) {
  eexit::CpuBackend be(2, eexit::matmul_impl::invariant, eexit::quant_act::int8, act);
  eexit::LlamaModel<eexit::CpuBackend> model(be, eexit::load_model(model_path));
  const auto& c = model.config();
  REQUIRE(model.n_exits() == int(ref.exit_layers.size()) + 1);
  for (std::size_t e = 0; e < ref.exit_layers.size(); ++e)
    REQUIRE(model.exit_layers()[e] == ref.exit_layers[e]);
  const std::size_t dim = std::size_t(c.dim), vocab = std::size_t(c.vocab_size);
  const std::size_t kvd = std::size_t(c.kv_dim()), T = ref.tokens.size();
  using Cache = eexit::PagedCache<eexit::CpuBackend, 16>;
  Cache cache(be, c, std::int32_t(T / 16 + 1));
  constexpr Cache::seq_id seq = 3;
  constexpr std::size_t chunk = 512;
  auto ws = model.make_workspace(chunk);
  std::vector<float> x(chunk * dim), logits(vocab);

  Got g;
  g.pairs = c.rope == eexit::rope_style::interleaved;
  g.head_dim = std::size_t(c.head_dim);
  g.logits.resize(ref.check.size());
  g.exit_logits.assign(ref.exit_layers.size(), std::vector<vec>(ref.check.size()));
  for (std::size_t p0 = 0; p0 < T; p0 += chunk) {
    const std::size_t rows = std::min(chunk, T - p0);
    REQUIRE(cache.reserve(seq, std::int32_t(rows)));
    const std::int32_t* bt = cache.block_table(seq);
    std::vector<eexit::RowKv> rk;
    for (std::size_t r = 0; r < rows; ++r) rk.push_back({bt, std::int32_t(p0 + r)});
    model.embed(ref.tokens.data() + p0, rows, x.data());
    // The head of exit e (or the final one) on the checked rows of this chunk.
    auto heads = [&](int exit, std::vector<vec>& out) {
      for (std::size_t i = 0; i < ref.check.size(); ++i) {
        const std::size_t p = std::size_t(ref.check[i]);
        if (p < p0 || p >= p0 + rows) continue;
        model.exit_logits(exit, x.data() + (p - p0) * dim, 1, logits.data(), ws);
        out[i].assign(logits.begin(), logits.end());
      }
    };
    for (int l = 0; l < model.n_layers(); ++l) {
      model.forward_layer(l, x.data(), rows, rk.data(), cache.view(l), ws);
      for (std::size_t e = 0; e < ref.exit_layers.size(); ++e)
        if (ref.exit_layers[e] == l) heads(int(e), g.exit_logits[e]);
    }
    heads(model.n_exits() - 1, g.logits);
  }
  const std::int32_t* bt = cache.block_table(seq);
  for (int l = 0; l < model.n_layers(); ++l) {
    const eexit::KvLayerView kv = cache.view(l);
    g.k.emplace_back();
    g.v.emplace_back();
    for (int p : ref.check) {
      const std::size_t s = kv.slot(eexit::RowKv{bt, p}, p);
      g.k.back().emplace_back(kv.k + s * kvd, kv.k + (s + 1) * kvd);
      g.v.back().emplace_back(kv.v + s * kvd, kv.v + (s + 1) * kvd);
    }
  }
  return g;
}

// max_i |a_i - b_i| / max_i |b_i| over every vector of a set: errors relative to the scale
// of what is compared (a K row's entries or a position's logits), worst over the set.
double rel_error(const std::vector<vec>& got, const std::vector<vec>& want) {
  REQUIRE(got.size() == want.size());
  double worst = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    REQUIRE(got[i].size() == want[i].size());
    double diff = 0, scale = 0;
    for (std::size_t j = 0; j < got[i].size(); ++j) {
      diff = std::max(diff, std::fabs(got[i][j] - want[i][j]));
      scale = std::max(scale, std::fabs(want[i][j]));
    }
    worst = std::max(worst, diff / scale);
  }
  return worst;
}

double abs_error(const std::vector<vec>& got, const std::vector<vec>& want) {
  double worst = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    for (std::size_t j = 0; j < got[i].size(); ++j)
      worst = std::max(worst, std::fabs(got[i][j] - want[i][j]));
  return worst;
}

std::size_t argmax(const vec& v) {
  return std::size_t(std::max_element(v.begin(), v.end()) - v.begin());
}

struct Errors {
  double logits = 0, logits_abs = 0, exits = 0, k = 0, v = 0;
  int argmax_diff = 0;  // checked positions whose top-1 token differs
};

// The reference's K rows (HF layout: rotate_half pairs (j, j + head_dim/2)) in the pair
// layout of a model whose Q/K rows llama.cpp's converter un-permuted (pairs (2j, 2j+1)).
std::vector<vec> interleave(const std::vector<vec>& k, std::size_t head_dim) {
  std::vector<vec> out = k;
  const std::size_t half = head_dim / 2;
  for (std::size_t i = 0; i < k.size(); ++i)
    for (std::size_t h = 0; h < k[i].size() / head_dim; ++h)
      for (std::size_t j = 0; j < half; ++j) {
        out[i][h * head_dim + 2 * j] = k[i][h * head_dim + j];
        out[i][h * head_dim + 2 * j + 1] = k[i][h * head_dim + half + j];
      }
  return out;
}

Errors compare(const std::string& model_path, const Reference& ref, eexit::bf16_act act) {
  const auto t0 = std::chrono::steady_clock::now();
  const Got g = run(model_path, ref, act);
  Errors e;
  e.logits = rel_error(g.logits, ref.logits);
  e.logits_abs = abs_error(g.logits, ref.logits);
  for (std::size_t x = 0; x < ref.exit_layers.size(); ++x)
    e.exits = std::max(e.exits, rel_error(g.exit_logits[x], ref.exit_logits[x]));
  for (std::size_t l = 0; l < ref.k.size(); ++l) {
    // The reference is the HF form's: K of a GGUF form is in interleaved-pair order.
    const auto want = g.pairs ? interleave(ref.k[l], g.head_dim) : ref.k[l];
    e.k = std::max(e.k, rel_error(g.k[l], want));
    e.v = std::max(e.v, rel_error(g.v[l], ref.v[l]));
  }
  for (std::size_t i = 0; i < ref.check.size(); ++i)
    e.argmax_diff += argmax(g.logits[i]) != argmax(ref.logits[i]);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string acts = act == eexit::bf16_act::bf16 ? "bf16" : "f32";
  MESSAGE(model_path << " (" << acts << " activations)"
                     << ": logits rel " << e.logits << " (abs " << e.logits_abs << "), exit "
                     << e.exits << ", K " << e.k << ", V " << e.v << ", top-1 differs at "
                     << e.argmax_diff << " of " << ref.check.size() << " positions; " << s << " s");
  return e;
}

// Logits, exit logits and V within tol of their scale, K within tol_k.
void check_within(const Errors& e, double tol, double tol_k) {
  CHECK(e.logits <= tol);
  CHECK(e.exits <= tol);
  CHECK(e.k <= tol_k);
  CHECK(e.v <= tol);
}

std::string fixture(const std::string& name) {
  const char* d = std::getenv("EEXIT_L32_FIXTURE_DIR");
  return d ? std::string(d) + "/" + name : std::string();
}

}  // namespace

TEST_CASE("llama3 rope frequencies: ours equal the reference's and cover all three bands") {
  if (fixture("").empty()) {
    MESSAGE("EEXIT_L32_FIXTURE_DIR not set (run through ctest): skipped");
    return;
  }
  const Reference ref = read_reference(fixture("reference.json"));
  for (std::string form : {"hf", "l32.bf16.gguf"}) {
    CAPTURE(form);
    const eexit::ModelConfig c = eexit::load_model(fixture(form)).config;
    CHECK(c.head_dim == 64);
    CHECK(c.n_heads == 4 * c.n_kv_heads);
    CHECK(c.tied_embeddings);
    // HF: config.json's rope_scaling; GGUF: rope_freqs.weight factors.
    CHECK((c.rope_scaling.enabled || !c.rope_freq_factors.empty()));
    const auto f = eexit::detail::rope_inv_freq(c);
    REQUIRE(f.size() == ref.inv_freq.size());
    int kept = 0, mixed = 0, divided = 0;
    for (std::size_t i = 0; i < f.size(); ++i) {
      CAPTURE(i);
      // float32 storage of a float64 frequency (and, in GGUF, of its factor).
      CHECK(std::fabs(double(f[i]) - ref.inv_freq[i]) <= 3e-7 * ref.inv_freq[i]);
      const double unscaled = std::pow(500000.0, -double(2 * i) / 64.0);
      const double wavelen = 2 * std::numbers::pi / unscaled;
      if (wavelen < 8192.0 / 4) {
        ++kept;
        CHECK(ref.inv_freq[i] == doctest::Approx(unscaled).epsilon(1e-12));
      } else if (wavelen > 8192.0) {
        ++divided;
        CHECK(ref.inv_freq[i] == doctest::Approx(unscaled / 32).epsilon(1e-12));
      } else {
        ++mixed;
        CHECK(ref.inv_freq[i] < unscaled);
        CHECK(ref.inv_freq[i] > unscaled / 32);
      }
    }
    CHECK(kept == 15);
    CHECK(mixed == 3);
    CHECK(divided == 14);
  }
  CHECK(ref.check.back() >= 4096);
}

// Tolerances, of each compared vector's scale (max |a-b| / max |b|). f32 activations (bf16
// weights widened exactly, or the f32 GGUF): f32 sums over 512-1024 terms give ~1e-6 (seen:
// 1.2e-6 logits, 1.1e-6 V), allowed 1e-4. K also carries RoPE's f32 frequencies: frequency i
// is rounded by up to 2^-24 relative, which turns the angle at position p by up to
// p * f_i * 2^-24 = 2.5e-4 rad at p = 4159, f_0 = 1 (seen: 4.9e-5), allowed 5e-4. A wrong
// llama3 band or head pairing is off by O(1). bf16 activations (the default CPU kernel for
// bf16 weights, as llama.cpp's): every matmul input is rounded to 8 significant bits (2^-9
// relative), which compounds to ~5e-3 over two layers (seen: 5.1e-3); allowed 2e-2.
TEST_CASE("Llama 3.2 1B-config checkpoint (small variant): HF and GGUF forms vs float64") {
  if (fixture("").empty()) {
    MESSAGE("EEXIT_L32_FIXTURE_DIR not set (run through ctest): skipped");
    return;
  }
  const Reference ref = read_reference(fixture("reference.json"));
  for (std::string form : {"hf", "l32.bf16.gguf", "l32.f32.gguf"}) {
    CAPTURE(form);
    const Errors e = compare(fixture(form), ref, eexit::bf16_act::f32);
    check_within(e, 1e-4, 5e-4);
    CHECK(e.argmax_diff == 0);
  }
  // The bf16-activation kernel reads the same bf16 matrices from either form: HF's suffices.
  check_within(compare(fixture("hf"), ref, eexit::bf16_act::bf16), 2e-2, 2e-2);
}

// The true size: 16 layers of dim 2048 / MLP 8192, head over 128256 tokens (seen with f32
// activations: 7.5e-6 logits, 8e-6 K/V; bf16 activations: 1.4e-2; benchmarks/RESULTS.md).
TEST_CASE("true-size Llama 3.2 1B-config checkpoint vs float64 (EEXIT_L32_1B_MODEL/_REF)") {
  const char* model = std::getenv("EEXIT_L32_1B_MODEL");
  const char* refp = std::getenv("EEXIT_L32_1B_REF");
  if (!model || !refp) {
    MESSAGE("EEXIT_L32_1B_MODEL / EEXIT_L32_1B_REF not set (tools/check_llama3_1b.sh): skipped");
    return;
  }
  const Reference ref = read_reference(refp);
  check_within(compare(model, ref, eexit::bf16_act::f32), 1e-4, 1e-4);
  check_within(compare(model, ref, eexit::bf16_act::bf16), 5e-2, 5e-2);
}
