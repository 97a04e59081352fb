// eexit-bench-gpu: decode throughput of the same engine on an NVIDIA GPU, in one run.
//
//   eexit-bench-gpu [--model DIR] [--new 48] [--prompt 16] [--batches 1,16,64] [--small]
//
// Models:
//   random-1B: a random-weight Llama-shape model (dim 2048, 16 layers, 32 heads, 8 kv heads,
//              hidden 8192, vocab 32000), weights bf16 on the GPU (fp32 accumulation),
//              exit points after layers 3, 7 and 11 (shared head). --small shrinks it to a
//              quick smoke shape (dim 256, 4 layers) for a build check.
//   embedded:  --model (default models/eexit-shakespeare), fp32.
// Exits: the confidence measure is SCRIPTED, not a model's confidence (random weights have
//   none): for each row and decode step a hash picks its exit point with probabilities
//   30% / 30% / 20% / 20% (exit 0, 1, 2, full depth; on a model with fewer exit points the
//   remainder goes to full depth). Its score is 1 at and after that exit point, 0 before;
//   threshold 0.5. The measure needs no logits, so an exit point costs the engine nothing
//   until rows leave. FullDepth, AllConfident and SplitAtExit run the same requests.
// Decode tokens/s: B requests of --prompt random ids, max_tokens --new, ignore_eos, greedy;
//   step 1 is the whole prefill; tokens of the later steps / their wall time.
// Bandwidth at batch 1 (FullDepth, random-1B): bytes of weights one decode step reads
//   (every bf16 matrix incl. the LM head) × steps/s, against a device-to-device copy of
//   1 GiB measured in the same run (2 × bytes / time: it reads and writes them).
// Output: one line per measurement, "BENCH key=value ...", then a table. Exit status 3
//   (with a "BENCH FAILED" line per measurement) when any request ended in error or with
//   fewer tokens than --new: such figures are not measurements.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "eexit/backend/cuda.hpp"
#include "eexit/cache/paged.hpp"
#include "eexit/engine/engine.hpp"
#include "eexit/model/llama.hpp"
#include "eexit/model/load.hpp"
#include "eexit/policy/exit_policy.hpp"
#include "eexit/policy/full_depth.hpp"

using namespace eexit;
using clk = std::chrono::steady_clock;

namespace {

std::uint64_t mix(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// The scripted exit distribution (see the header comment).
struct Scripted {
  ExitNeeds needs() const { return {}; }
  std::string_view name() const { return "scripted"; }
  void score(const ExitRows& r, float* out) const {
    for (std::size_t i = 0; i < r.n; ++i) {
      const std::uint64_t h = mix(std::uint64_t(r.step[i]) * 1315423911ull + i * 2654435761ull);
      const double u = double(h >> 11) / double(1ull << 53);
      const int pick = u < 0.3 ? 0 : u < 0.6 ? 1 : u < 0.8 ? 2 : 99;
      out[i] = r.exit >= pick ? 1.0f : 0.0f;
    }
  }
};
using ScriptedAll = ExitPolicy<Scripted, ExitWhenAllConfident>;
using ScriptedSplit = ExitPolicy<Scripted, ExitConfidentRows>;

// Uniform(-a, a) from a counter hash, filled by all cores (1e9 values in about a second).
void fill_uniform(std::vector<float>& v, std::size_t n, float a, std::uint64_t seed) {
  v.resize(n);
  const unsigned T = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < T; ++t)
    ts.emplace_back([&, t] {
      for (std::size_t i = t; i < n; i += T) {
        const std::uint64_t h = mix(seed * 0x100000001b3ull + i);
        v[i] = a * (float(double(h >> 11) / double(1ull << 53)) * 2.0f - 1.0f);
      }
    });
  for (auto& th : ts) th.join();
}

ModelWeights random_model(bool small) {
  ModelWeights w;
  auto& c = w.config;
  c.dim = small ? 256 : 2048;
  c.n_layers = small ? 4 : 16;
  c.n_heads = small ? 8 : 32;
  c.n_kv_heads = small ? 2 : 8;
  c.head_dim = c.dim / c.n_heads;
  c.hidden_dim = small ? 1024 : 8192;
  c.vocab_size = small ? 4096 : 32000;
  c.max_seq_len = 2048;
  c.rope_theta = 500000.0f;
  c.early_exit.exit_layers = small ? std::vector<int>{0, 1, 2} : std::vector<int>{3, 7, 11};
  const std::size_t dim = std::size_t(c.dim), qd = std::size_t(c.q_dim()),
                    kvd = std::size_t(c.kv_dim()), hid = std::size_t(c.hidden_dim),
                    voc = std::size_t(c.vocab_size);
  std::uint64_t seed = 1;
  const float a_in = 1.7f / std::sqrt(float(dim)), a_hid = 1.7f / std::sqrt(float(hid));
  fill_uniform(w.tok_embedding, voc * dim, 1.0f, seed++);
  w.layers.resize(std::size_t(c.n_layers));
  for (auto& L : w.layers) {
    L.attn_norm.assign(dim, 1.0f);
    L.ffn_norm.assign(dim, 1.0f);
    fill_uniform(L.wq, qd * dim, a_in, seed++);
    fill_uniform(L.wk, kvd * dim, a_in, seed++);
    fill_uniform(L.wv, kvd * dim, a_in, seed++);
    fill_uniform(L.wo, dim * qd, a_in, seed++);
    fill_uniform(L.w_gate, hid * dim, a_in, seed++);
    fill_uniform(L.w_up, hid * dim, a_in, seed++);
    fill_uniform(L.w_down, dim * hid, a_hid, seed++);
  }
  w.final_norm.assign(dim, 1.0f);
  fill_uniform(w.lm_head, voc * dim, a_in, seed++);
  return w;
}

// Bytes of weights one decode step streams with bf16 matrices (norms are negligible).
double step_weight_bytes(const ModelConfig& c, double bytes_per) {
  const double dim = c.dim, qd = c.q_dim(), kvd = c.kv_dim(), hid = c.hidden_dim;
  const double per_layer = qd * dim + 2 * kvd * dim + dim * qd + 3 * hid * dim;
  return bytes_per * (per_layer * c.n_layers + double(c.vocab_size) * dim);
}

struct Result {
  double tok_s = 0, step_s = 0;
  std::int64_t tokens = 0, early = 0;
  // Requests that did not end normally with all their tokens: Engine::step() never throws
  // (a CUDA fault fails the step's requests with finish_reason::error), so without this
  // count a broken run would still print numbers.
  int failed = 0;
  std::string why;  // the first failure
};

// Finished requests of one step's outputs: an error, or fewer tokens than asked, is a failure.
void tally(const std::vector<RequestOutput>& outs, int n_new, int& finished, Result& r) {
  for (const auto& o : outs) {
    if (!o.finished()) continue;
    ++finished;
    std::string why;
    if (o.finish == finish_reason::error)
      why = "request " + std::to_string(o.id) + " ended in error: " + o.error;
    else if (o.stats.generated_tokens != n_new)
      why = "request " + std::to_string(o.id) + " generated " +
            std::to_string(o.stats.generated_tokens) + " of " + std::to_string(n_new) +
            " tokens (" + std::string(finish_reason_name(o.finish)) + ")";
    if (why.empty()) continue;
    if (r.failed++ == 0) r.why = why;
  }
}

template <class P>
Result decode(CudaBackend& be, LlamaModel<CudaBackend>& model, P policy, int batch, int prompt,
              int n_new) {
  const auto& c = model.config();
  using Cache = PagedCache<CudaBackend, 16>;
  const std::int32_t need = batch * ((prompt + n_new) / 16 + 2);
  const std::int32_t fit = kv_blocks_from_memory(be, c, 16, 0.9);
  Cache cache(be, c, std::min(need, fit));
  EngineOptions opt;
  opt.max_batch_tokens = batch * prompt;
  opt.max_running = batch;
  be.reserve_staging(std::size_t(opt.max_batch_tokens), std::size_t(c.max_seq_len / 16 + 1),
                     std::size_t(c.n_layers));
  Engine<P, Cache> engine(model, cache, policy, opt);
  for (int b = 0; b < batch; ++b) {
    GenerateRequest r;
    for (int t = 0; t < prompt; ++t)
      r.prompt.push_back(std::int32_t(3 + mix(std::uint64_t(b) * 977 + std::uint64_t(t)) %
                                              std::uint64_t(c.vocab_size - 3)));
    r.max_tokens = n_new;
    r.ignore_eos = true;
    engine.add_request(r);
  }
  Result r;
  int finished = 0;
  tally(engine.step(), n_new, finished, r);  // the whole prefill (and each request's first token)
  be.synchronize();
  const auto t0 = clk::now();
  const std::int64_t g0 = engine.stats().generated_tokens, s0 = engine.stats().steps;
  while (engine.has_work()) tally(engine.step(), n_new, finished, r);
  be.synchronize();
  const double dt = std::chrono::duration<double>(clk::now() - t0).count();
  if (finished != batch) {
    r.failed += batch - finished;
    if (r.why.empty()) r.why = std::to_string(batch - finished) + " requests never finished";
  }
  r.tokens = engine.stats().generated_tokens - g0;
  r.tok_s = double(r.tokens) / dt;
  r.step_s = dt / double(std::max<std::int64_t>(1, engine.stats().steps - s0));
  const auto& h = engine.stats().exit_histogram;
  for (std::size_t e = 0; e + 1 < h.size(); ++e) r.early += h[e];
  return r;
}

double d2d_bandwidth(CudaBackend& be) {
  const std::size_t n = (std::size_t(1) << 30) / sizeof(float);
  auto a = be.allocate<float>(n), b = be.allocate<float>(n);
  be.fill(a.data(), n, 1.0f);
  be.copy(a.data(), b.data(), n);  // warm-up
  be.synchronize();
  double best = 1e30;
  for (int i = 0; i < 5; ++i) {
    const auto t0 = clk::now();
    be.copy(a.data(), b.data(), n);
    be.synchronize();
    best = std::min(best, std::chrono::duration<double>(clk::now() - t0).count());
  }
  return 2.0 * double(n * sizeof(float)) / best;
}

struct Row {
  std::string model, policy;
  int batch;
  Result r;
};

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir = std::string(EEXIT_SOURCE_DIR) + "/models/eexit-shakespeare";
  int n_new = 48, prompt = 16;
  bool small = false;
  std::vector<int> batches = {1, 16, 64};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--model") model_dir = next();
    else if (a == "--new") n_new = std::stoi(next());
    else if (a == "--prompt") prompt = std::stoi(next());
    else if (a == "--small") small = true;
    else if (a == "--batches") {
      batches.clear();
      std::string s = next();
      for (std::size_t p = 0; p < s.size();) {
        const std::size_t q = s.find(',', p);
        batches.push_back(std::stoi(s.substr(p, q - p)));
        p = q == std::string::npos ? s.size() : q + 1;
      }
    } else {
      std::fprintf(stderr, "usage: eexit-bench-gpu [--model DIR] [--new N] [--prompt N] "
                           "[--batches 1,16,64] [--small]\n");
      return 2;
    }
  }
  try {
    std::vector<Row> rows;
    double bw_copy = 0, bw_decode = 0;
    {
      CudaBackend be(CudaBackend::Options{.weights = weight_dtype::bf16});
      std::printf("BENCH device=\"%s\"\n", be.device_name().c_str());
      bw_copy = d2d_bandwidth(be);
      std::printf("BENCH d2d_copy_GBps=%.1f\n", bw_copy / 1e9);
      auto t0 = clk::now();
      LlamaModel<CudaBackend> model(be, random_model(small));
      be.synchronize();
      std::printf("BENCH random_model_load_s=%.1f\n",
                  std::chrono::duration<double>(clk::now() - t0).count());
      ScriptedAll all;
      all.thresholds.values = {0.5f};
      ScriptedSplit split;
      split.thresholds.values = {0.5f};
      const std::string name = small ? "random-small-bf16" : "random-1B-bf16";
      for (int b : batches) {
        rows.push_back({name, "FullDepth", b, decode(be, model, FullDepth{}, b, prompt, n_new)});
        if (b == 1) bw_decode = step_weight_bytes(model.config(), 2.0) / rows.back().r.step_s;
        rows.push_back({name, "AllConfident", b, decode(be, model, all, b, prompt, n_new)});
        rows.push_back({name, "SplitAtExit", b, decode(be, model, split, b, prompt, n_new)});
      }
    }
    {
      CudaBackend be;
      LlamaModel<CudaBackend> model(be, load_model(model_dir));
      ScriptedAll all;
      all.thresholds.values = {0.5f};
      ScriptedSplit split;
      split.thresholds.values = {0.5f};
      for (int b : batches) {
        rows.push_back({"embedded-fp32", "FullDepth", b, decode(be, model, FullDepth{}, b, prompt, n_new)});
        rows.push_back({"embedded-fp32", "AllConfident", b, decode(be, model, all, b, prompt, n_new)});
        rows.push_back({"embedded-fp32", "SplitAtExit", b, decode(be, model, split, b, prompt, n_new)});
      }
    }
    for (auto& r : rows)
      std::printf("BENCH model=%s policy=%s batch=%d tok_s=%.1f step_ms=%.3f early=%lld/%lld\n",
                  r.model.c_str(), r.policy.c_str(), r.batch, r.r.tok_s, r.r.step_s * 1e3,
                  (long long)r.r.early, (long long)r.r.tokens);
    std::printf("\n%-18s %-13s %6s %12s %10s %8s\n", "model", "policy", "batch", "decode tok/s",
                "step ms", "early");
    for (auto& r : rows)
      std::printf("%-18s %-13s %6d %12.1f %10.3f %7.0f%%\n", r.model.c_str(), r.policy.c_str(),
                  r.batch, r.r.tok_s, r.r.step_s * 1e3,
                  r.r.tokens ? 100.0 * double(r.r.early) / double(r.r.tokens) : 0.0);
    std::printf("\nbandwidth at batch 1 (FullDepth, bf16 weights): %.1f GB/s = %.0f%% of a "
                "device-to-device copy (%.1f GB/s)\n",
                bw_decode / 1e9, 100.0 * bw_decode / bw_copy, bw_copy / 1e9);
    std::printf("exits are SCRIPTED (30/30/20/20%% at exits 0/1/2/full), not model confidence\n");
    int failed_rows = 0;
    for (auto& r : rows)
      if (r.r.failed) {
        ++failed_rows;
        std::printf("BENCH FAILED model=%s policy=%s batch=%d: %d of %d requests: %s\n",
                    r.model.c_str(), r.policy.c_str(), r.batch, r.r.failed, r.batch,
                    r.r.why.c_str());
      }
    if (failed_rows) return 3;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "eexit-bench-gpu: %s\n", e.what());
    return 1;
  }
  return 0;
}
