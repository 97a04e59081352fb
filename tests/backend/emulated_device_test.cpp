// CudaBackend's host-side logic (staging, bf16 weight copies, which pointers reach the
// device) and LlamaModel's use of it, without a GPU: this file defines the launchers of
// detail::cuda itself, over an emulated device made of host memory that
//   - knows every live device allocation, and records each pointer an op or copy was given
//     that lies outside them (a host pointer passed as device memory faults on a GPU);
//   - poisons new allocations (0xFF bytes: NaN floats, -1 ints), as fresh cudaMalloc
//     memory holds garbage, and reuses a freed block of the same size first, as caching
//     allocators do, so stale state keyed by an address shows;
//   - computes the ops it needs for real (naive loops), so results are compared with
//     CpuBackend, the reference.
// It is not linked with eexit_cuda (the name does not start with cuda_), so it runs in the
// CPU-only CI. Bugs of issue 11 item 2 that it shows: the classifier bias passed as a host
// pointer, reserve_staging reallocating the row metadata without restaging it, bf16 copies
// of freed weights left allocated (and found again through a reused address).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "eexit/backend/cpu.hpp"
#include "eexit/backend/cuda.hpp"
#include "eexit/model/llama.hpp"

namespace emu {

struct Block {
  std::unique_ptr<char[]> mem;
  std::size_t bytes;
};
std::map<const char*, Block> live;    // base -> block
std::vector<Block> freed;             // reused first (same size), newest first
std::vector<std::string> violations;  // "op: pointer outside device memory"
int gemm_bf16_calls = 0, gemm_f32_calls = 0;

bool on_device(const void* p, std::size_t bytes) {
  const char* c = static_cast<const char*>(p);
  auto it = live.upper_bound(c);
  if (it == live.begin()) return false;
  --it;
  return c >= it->first && c + bytes <= it->first + it->second.bytes;
}
void need(const char* op, const void* p, std::size_t bytes) {
  if (p && bytes && !on_device(p, bytes)) violations.push_back(std::string(op) + ": host pointer");
}
std::size_t live_bytes() {
  std::size_t n = 0;
  for (auto& [p, b] : live) n += b.bytes;
  return n;
}
float bf16_to_f32(std::uint16_t h) {
  const std::uint32_t u = std::uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace emu

// ---- the launchers CudaBackend calls, on the emulated device ------------------------------
namespace eexit::detail::cuda {

struct Context {
  int device;
};

int device_count() noexcept {
  return 1;
}
Context* create(int device) {
  return new Context{device};
}
void destroy(Context* c) noexcept {
  delete c;
}
std::string device_name(const Context*) {
  return "emulated";
}
void mem_info(Context*, std::size_t& free_bytes, std::size_t& total_bytes) {
  total_bytes = std::size_t(1) << 30;
  free_bytes = total_bytes - emu::live_bytes();
}
void* dmalloc(Context*, std::size_t bytes, const char*) {
  emu::Block b;
  for (auto it = emu::freed.rbegin(); it != emu::freed.rend(); ++it)
    if (it->bytes == bytes) {
      b = std::move(*it);
      emu::freed.erase(std::next(it).base());
      break;
    }
  if (!b.mem) b = {std::make_unique<char[]>(bytes), bytes};
  std::memset(b.mem.get(), 0xFF, bytes);
  char* p = b.mem.get();
  emu::live.emplace(p, std::move(b));
  return p;
}
void dfree(Context*, void* p) noexcept {
  auto it = emu::live.find(static_cast<const char*>(p));
  if (it == emu::live.end()) {
    emu::violations.push_back("dfree: not a device allocation");
    return;
  }
  emu::freed.push_back(std::move(it->second));
  emu::live.erase(it);
}
void h2d(Context*, void* dst, const void* src, std::size_t bytes) {
  emu::need("h2d", dst, bytes);
  std::memcpy(dst, src, bytes);
}
void d2h(Context*, void* dst, const void* src, std::size_t bytes) {
  emu::need("d2h", src, bytes);
  std::memcpy(dst, src, bytes);
}
void synchronize(Context*) {}
void to_bf16(Context*, const float* src, void* dst, std::size_t n) {
  emu::need("to_bf16", src, n * 4);
  emu::need("to_bf16", dst, n * 2);
  for (std::size_t i = 0; i < n; ++i) {
    std::uint32_t u;
    std::memcpy(&u, src + i, 4);
    u += 0x7FFF + ((u >> 16) & 1);  // round to nearest even
    static_cast<std::uint16_t*>(dst)[i] = std::uint16_t(u >> 16);
  }
}
template <class W>
void gemm(const char* op, const float* x, std::size_t rows, std::size_t in, const W& w,
          std::size_t out, float* y, const float* bias) {
  emu::need(op, x, rows * in * 4);
  emu::need(op, y, rows * out * 4);
  emu::need(op, bias, out * 4);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t o = 0; o < out; ++o) {
      double s = bias ? bias[o] : 0.0;
      for (std::size_t i = 0; i < in; ++i) s += double(x[r * in + i]) * w(o * in + i);
      y[r * out + o] = float(s);
    }
}
void gemm_f32(Context*, const float* x, std::size_t rows, std::size_t in, const float* w,
              std::size_t out, float* y, const float* bias) {
  ++emu::gemm_f32_calls;
  emu::need("gemm_f32", w, out * in * 4);
  gemm(
      "gemm_f32", x, rows, in, [w](std::size_t i) { return double(w[i]); }, out, y, bias);
}
void gemm_bf16(Context*, const float* x, std::size_t rows, std::size_t in, const void* w,
               std::size_t out, float* y, const float* bias) {
  ++emu::gemm_bf16_calls;
  emu::need("gemm_bf16", w, out * in * 2);
  const auto* wb = static_cast<const std::uint16_t*>(w);
  gemm(
      "gemm_bf16", x, rows, in, [wb](std::size_t i) { return double(emu::bf16_to_f32(wb[i])); },
      out, y, bias);
}
void rmsnorm(Context*, const float* x, const float* w, float* y, std::size_t rows, std::size_t dim,
             float eps) {
  emu::need("rmsnorm", x, rows * dim * 4);
  emu::need("rmsnorm", w, dim * 4);
  emu::need("rmsnorm", y, rows * dim * 4);
  for (std::size_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (std::size_t i = 0; i < dim; ++i) ss += double(x[r * dim + i]) * x[r * dim + i];
    const double inv = 1.0 / std::sqrt(ss / double(dim) + eps);
    for (std::size_t i = 0; i < dim; ++i) y[r * dim + i] = float(x[r * dim + i] * inv * w[i]);
  }
}
void sigmoid(Context*, float* x, std::size_t n) {
  emu::need("sigmoid", x, n * 4);
  for (std::size_t i = 0; i < n; ++i) x[i] = 1.0f / (1.0f + std::exp(-x[i]));
}
// Half-split RoPE at each row's position, read from the staged metadata.
void rope(Context*, float* x, std::size_t rows, std::size_t n_heads, std::size_t head_dim,
          const std::int32_t* meta, const float* inv_freq, bool interleaved) {
  emu::need("rope", x, rows * n_heads * head_dim * 4);
  emu::need("rope", meta, rows * 4);
  emu::need("rope", inv_freq, head_dim / 2 * 4);
  if (interleaved) emu::violations.push_back("rope: the emulation does half-split only");
  const std::size_t half = head_dim / 2;
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t h = 0; h < n_heads; ++h) {
      float* v = x + (r * n_heads + h) * head_dim;
      for (std::size_t i = 0; i < half; ++i) {
        const double a = double(meta[r]) * double(inv_freq[i]);
        const float c = float(std::cos(a)), s = float(std::sin(a)), x0 = v[i], x1 = v[i + half];
        v[i] = x0 * c - x1 * s;
        v[i + half] = x0 * s + x1 * c;
      }
    }
}

}  // namespace eexit::detail::cuda

namespace {

using namespace eexit;

std::vector<float> random(std::size_t n, std::mt19937& rng, float a = 0.5f) {
  std::uniform_real_distribution<float> u(-a, a);
  std::vector<float> v(n);
  for (auto& e : v) e = u(rng);
  return v;
}

// A tiny Llama with one exit point after layer 0 whose head has a classifier.
ModelWeights classifier_model(float bias) {
  std::mt19937 rng(7);
  ModelWeights w;
  auto& c = w.config;
  c.dim = 16;
  c.hidden_dim = 32;
  c.n_layers = 2;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 8;
  c.vocab_size = 24;
  c.max_seq_len = 32;
  c.early_exit.exit_layers = {0};
  c.early_exit.classifier = true;
  const std::size_t d = 16, kv = 8, hid = 32;
  w.tok_embedding = random(24 * d, rng);
  for (int l = 0; l < 2; ++l) {
    LayerWeights L;
    L.attn_norm = random(d, rng);
    L.wq = random(d * d, rng);
    L.wk = random(kv * d, rng);
    L.wv = random(kv * d, rng);
    L.wo = random(d * d, rng);
    L.ffn_norm = random(d, rng);
    L.w_gate = random(hid * d, rng);
    L.w_down = random(d * hid, rng);
    L.w_up = random(hid * d, rng);
    w.layers.push_back(std::move(L));
  }
  w.final_norm = random(d, rng);
  ExitHeadWeights h;
  h.norm = random(d, rng);
  h.classifier_w = random(d, rng);
  h.classifier_b = bias;
  w.exit_heads.push_back(std::move(h));
  return w;
}

struct Fresh {  // every test starts from an empty emulated device
  Fresh() {
    emu::violations.clear();
    emu::gemm_bf16_calls = emu::gemm_f32_calls = 0;
  }
};

}  // namespace

TEST_CASE("exit classifier on the device: its bias is device memory, scores equal the CPU's") {
  Fresh fresh;
  std::mt19937 rng(3);
  const std::size_t rows = 3;
  const auto h = random(rows * 16, rng, 2.0f);  // (rows, dim) hidden states
  constexpr float bias = 1.25f;                 // large enough to move every score

  CpuBackend cb(1);
  LlamaModel<CpuBackend> cm(cb, classifier_model(bias));
  auto cws = cm.make_workspace(rows);
  std::vector<float> want(rows);
  cm.exit_classifier(0, h.data(), rows, want.data(), cws);

  std::vector<float> got(rows);
  {
    CudaBackend gb;
    LlamaModel<CudaBackend> gm(gb, classifier_model(bias));
    auto gws = gm.make_workspace(rows);
    auto hd = gb.allocate<float>(h.size());
    gb.upload<float>(hd, std::span<const float>(h));
    auto out = gb.allocate<float>(rows);
    gm.exit_classifier(0, hd.data(), rows, out.data(), gws);
    gb.download(std::span<float>(got), out);
  }
  CHECK(emu::violations.empty());
  for (const auto& v : emu::violations) MESSAGE(v);
  for (std::size_t r = 0; r < rows; ++r) CHECK(got[r] == doctest::Approx(want[r]).epsilon(1e-5));
  // The bias took part: without it every score would be lower.
  LlamaModel<CpuBackend> nb(cb, classifier_model(0.0f));
  std::vector<float> unbiased(rows);
  nb.exit_classifier(0, h.data(), rows, unbiased.data(), cws);
  for (std::size_t r = 0; r < rows; ++r) CHECK(unbiased[r] < want[r] - 0.05f);
}

TEST_CASE("reserve_staging that reallocates the row metadata restages it") {
  Fresh fresh;
  CudaBackend be;
  const std::size_t heads = 1, hd = 4;
  const std::vector<float> inv_freq{1.0f, 0.5f};
  auto freq = be.allocate<float>(2);
  be.upload<float>(freq, std::span<const float>(inv_freq));
  const RowKv rows[2] = {{nullptr, 3}, {nullptr, 5}};
  const std::vector<float> x0{1, 0, 0, 0, 1, 0, 0, 0};  // (rows, heads, head_dim)
  auto x = be.allocate<float>(x0.size());
  auto rope_once = [&] {
    be.upload<float>(x, std::span<const float>(x0));
    be.rope(x.data(), 2, heads, hd, rows, freq.data(), rope_style::half);
    std::vector<float> y(x0.size());
    be.download(std::span<float>(y), x);
    return y;
  };
  const auto first = rope_once();
  // The same rows again: the metadata is already on the device and is not copied.
  CHECK(rope_once() == first);
  CHECK(first[0] == doctest::Approx(std::cos(3.0)));
  CHECK(first[4] == doctest::Approx(std::cos(5.0)));
  // A larger reservation replaces the device array; the next op must not trust the old one.
  be.reserve_staging(64, 8);
  CHECK(rope_once() == first);
  CHECK(emu::violations.empty());
}

TEST_CASE("a freed weight's bf16 copy is freed with it and never used for a new buffer") {
  Fresh fresh;
  CudaBackend be(CudaBackend::Options{.weights = weight_dtype::bf16, .bf16_min_elements = 64});
  std::mt19937 rng(11);
  const std::size_t in = 16, out = 8;
  const auto x = random(in, rng);
  auto xd = be.allocate<float>(in);
  be.upload<float>(xd, std::span<const float>(x));
  auto y = be.allocate<float>(out);
  const std::size_t with_io = emu::live_bytes();
  {
    const auto w = random(out * in, rng);
    auto wd = be.allocate<float>(w.size());
    be.upload<float>(wd, std::span<const float>(w));
    CHECK(emu::live_bytes() == with_io + w.size() * (4 + 2));  // fp32 + its bf16 copy
    be.matmul(xd.data(), 1, in, wd.data(), out, y.data());
    CHECK(emu::gemm_bf16_calls == 1);
  }
  CHECK(emu::live_bytes() == with_io);  // the weight and its copy are gone
  // A buffer at the freed address (the emulation reuses it, as caching allocators do),
  // made without upload, holds fp32 data the bf16 path knows nothing about.
  CudaBuffer<float> reused(be.context(), out * in);
  const std::vector<float> w2(out * in, 0.25f);
  be.upload(reused.data(), w2.data(), w2.size());
  be.matmul(xd.data(), 1, in, reused.data(), out, y.data());
  CHECK(emu::gemm_bf16_calls == 1);
  CHECK(emu::gemm_f32_calls == 1);
  std::vector<float> got(out);
  be.download(std::span<float>(got), y);
  double want = 0;
  for (float v : x) want += 0.25 * v;
  for (float g : got) CHECK(g == doctest::Approx(want).epsilon(1e-5));
  CHECK(emu::violations.empty());
}
