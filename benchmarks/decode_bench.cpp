// eexit-bench-decode: CPU decode throughput against the machine's two ceilings, in one run.
//
//   eexit-bench-decode MODEL [--threads 2] [--prompt 128] [--new 64] [--batches 1,4,16]
//                      [--reps 5] [--json] [--dtypes
//                      f32,bf16,f16,q8_0,q4_0,bf16-f32act,q8_0-f32act,q4_0-f32act,
//                      q8_0-rows,q4_0-rows, any of them + -kvf16]
//                      [--baseline-threads N] [--no-blas] [--unfused]
//
// MODEL: anything load_model reads (a HF directory, a llama2.c .bin, a GGUF file); the
// weights keep the file's precision (a Q4_0 GGUF decodes as Q4_0), and bytes per token
// are those of the stored tensors.
//
// Ceilings (OpenBLAS, --threads threads):
//   bandwidth: cblas_sgemv over a 1 GiB matrix (far beyond the caches), best of --reps,
//              bytes of the matrix per second;
//   FLOP rate: cblas_sgemm 2048 x 2048 x 2048, best of --reps, 2·M·N·K per second.
// Decode: for each batch size B, an Engine<FullDepth, PagedCache<CpuBackend,16>> gets B
// requests of --prompt random ids (seeded), max_tokens --new, ignore_eos, greedy. The
// budget admits every prompt in the first step, so step 1 is the whole prefill (and yields
// each request's first token) and every later step decodes exactly B rows. Decode tokens/s
// = tokens of the steps after the prefill step / their wall time (sampling included).
// The same is run with CpuBackend(threads, matmul_impl::blas) (OpenBLAS sgemm): "ours vs
// OpenBLAS" is the ratio of decode tokens/s (--no-blas skips it: the BLAS path only
// differs for fp32 weights, and run_vs_llamacpp.sh does not need it). The machine may be shared:
// every figure is the best of several runs (ceilings measured before and after the decode runs).
// --dtypes: the same weights converted on load to each weight precision (ModelWeights::
// convert; every run of every dtype interleaved within a batch size), tok/s and the ratio
// to f32. Bytes per token scale with each dtype's bytes per weight. q8_0 / q4_0 run with
// int8 activations and bf16 with bf16 ones (the backend's defaults); bf16-f32act /
// q8_0-f32act / q4_0-f32act with fp32 ones (bf16_act::f32 / quant_act::f32: the weights
// widened or dequantized into the fp32 kernel); q8_0-rows / q4_0-rows with int8 ones on the
// blocks as stored, not repacked at load (CpuBackend::set_repack(false)); f32 every matrix
// widened to fp32 (for a file in other types, e.g. a K-quant mix: what loading it cost
// before its types had kernels). A -kvf16 suffix (q8_0-kvf16, f32-kvf16, ...) runs that
// variant with an f16 KV cache (--kv-dtype f16): with a long --prompt, what halving the K/V
// bytes saves.
// --baseline-threads N: also f32 on a CpuBackend of N threads, interleaved (e.g. 1: does
// the default thread count help or hurt on this model?).
// --unfused: also f32 with the fused projections off (LlamaModel::set_fused(false): the
// ops one by one, same bits), interleaved: what the fusion saves.
// Fractions: batch 1 = tokens/s · bytes streamed per token / bandwidth, where bytes per
// token = every weight a decode step reads (all layer matrices and norms, final norm,
// lm_head; the embedding contributes one row) plus the K/V it reads at the mean decode
// position; batch 16 = tokens/s · FLOPs per token / FLOP rate, where FLOPs per token =
// 2 · (parameters of the matrices) + attention (4 · n_heads · head_dim · context per layer).
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench_args.hpp"
#include "eexit/backend/cpu.hpp"
#include "eexit/cache/paged.hpp"
#include "eexit/engine/engine.hpp"
#include "eexit/model/llama.hpp"
#include "eexit/model/load.hpp"

using namespace eexit;
using clk = std::chrono::steady_clock;

namespace {

double seconds_since(clk::time_point t0) {
  return std::chrono::duration<double>(clk::now() - t0).count();
}

struct Options {
  std::string model;
  unsigned threads = 2;
  int prompt = 128;
  int n_new = 64;
  std::vector<int> batches{1, 4, 16};
  int reps = 5;         // ceiling measurements (best of)
  int decode_reps = 3;  // decode runs per batch size and implementation (best of)
  bool json = false;
  std::vector<std::string> dtypes;  // extra weight precisions (f32 is always run)
  unsigned baseline_threads = 0;    // 0 = none
  bool blas = true;                 // also run the OpenBLAS sgemm backend
  bool unfused = false;             // also f32 without the fused projections
};

constexpr const char* usage_lines =
    "eexit-bench-decode MODEL [--threads 2] [--prompt 128] [--new 64]\n"
    "                          [--batches 1,4,16] [--reps 5] [--decode-reps 3] [--json]\n"
    "                          [--dtypes LIST] [--baseline-threads N] [--no-blas] "
    "[--unfused]\n";

Options parse(int argc, char** argv) {
  Options o;
  const bench::Flag dtypes{"--dtypes", [&](const bench::Value& value) {
                             for (const std::string& t : bench::split(value()))
                               o.dtypes.push_back(t);
                           }};
  bench::parse_args(
      argc, argv, usage_lines, o.model,
      {dtypes, bench::opt("--threads", o.threads), bench::opt("--prompt", o.prompt),
       bench::opt("--new", o.n_new), bench::opt("--reps", o.reps),
       bench::opt("--decode-reps", o.decode_reps), bench::set("--json", o.json),
       bench::set("--no-blas", o.blas, false), bench::set("--unfused", o.unfused),
       bench::opt("--baseline-threads", o.baseline_threads), bench::opt("--batches", o.batches)});
  if (o.model.empty()) bench::usage("MODEL is required");
  if (o.threads == 0 || o.prompt < 1 || o.n_new < 2 || o.reps < 1 || o.decode_reps < 1 ||
      o.batches.empty())
    bench::usage("bad option value");
  return o;
}

// ---- ceilings ---------------------------------------------------------------------
// Weight streaming: y = A·x with A (rows, cols) read once per call, as decode reads W.
double sgemv_bytes_per_s(std::size_t bytes, int reps) {
  const std::size_t cols = 4096, rows = bytes / 4 / cols;
  std::vector<float> a(rows * cols), x(cols, 1.0f), y(rows);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = float(i % 1024) * 1e-3f;  // touch every page
  double best = 1e30;
  for (int r = 0; r < reps + 1; ++r) {  // the first call warms up threads and TLBs
    const auto t0 = clk::now();
    cblas_sgemv(CblasRowMajor, CblasNoTrans, int(rows), int(cols), 1.0f, a.data(), int(cols),
                x.data(), 1, 0.0f, y.data(), 1);
    const double t = seconds_since(t0);
    if (r > 0) best = std::min(best, t);
  }
  return double(rows * cols * 4) / best;
}

double sgemm_flop_per_s(int n, int reps) {
  std::vector<float> a(std::size_t(n) * n), b(std::size_t(n) * n), c(std::size_t(n) * n);
  std::mt19937 g(1);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (auto& v : a) v = u(g);
  for (auto& v : b) v = u(g);
  double best = 1e30;
  for (int r = 0; r < reps + 1; ++r) {
    const auto t0 = clk::now();
    // B transposed, as our projections are x·Wᵀ.
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
    const double t = seconds_since(t0);
    if (r > 0) best = std::min(best, t);
  }
  return 2.0 * double(n) * n * n / best;
}

// ---- model cost per decode token ---------------------------------------------------
struct Costs {
  double weight_bytes;  // read once per decode step (whatever the batch)
  double kv_bytes;      // K/V read per token at the mean decode position
  double flops;         // per token
  double mat_params;    // weights of the matrices a step reads (layers + LM head)
};

// Bytes one decode step streams: every matrix and norm in its stored precision, the
// final norm, the LM head (the embedding when tied) and one embedding row.
double streamed_weight_bytes(const ModelWeights& w) {
  double b = 0;
  for (const auto& L : w.layers) {
    for (const Weight* m : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down})
      b += double(m->byte_size());
    b += 4.0 *
         double(L.attn_norm.size() + L.ffn_norm.size() + L.bq.size() + L.bk.size() + L.bv.size());
  }
  b += 4.0 * double(w.final_norm.size());
  b += double((w.lm_head.empty() ? w.tok_embedding : w.lm_head).byte_size());
  return b + double(w.tok_embedding.byte_size()) / double(w.config.vocab_size);
}

// weight_bytes: streamed_weight_bytes of the weights as loaded.
Costs costs(const ModelConfig& c, int prompt, int n_new, double weight_bytes) {
  const double d = c.dim, h = c.hidden_dim, q = c.q_dim(), kv = c.kv_dim(), v = c.vocab_size;
  const double per_layer_mat = d * q + 2 * d * kv + q * d + 3 * d * h;
  const double mat = c.n_layers * per_layer_mat + v * d;  // + lm_head
  // Decode steps run at positions prompt .. prompt+n_new-2, attending over pos+1 tokens.
  const double ctx = prompt + (n_new - 2) / 2.0 + 1;
  Costs k;
  k.weight_bytes = weight_bytes;
  k.kv_bytes = 4 * c.n_layers * 2 * kv * ctx;
  k.flops = 2 * mat + c.n_layers * 4.0 * c.n_heads * c.head_dim * ctx;
  k.mat_params = mat;
  return k;
}

// ---- decode --------------------------------------------------------------------------
struct Run {
  int batch;
  double prefill_s, decode_s;
  std::int64_t decode_tokens;
  double tok_s() const { return double(decode_tokens) / decode_s; }
};

Run run_batch(LlamaModel<CpuBackend>& model, const Options& o, int B, dtype kv = dtype::f32) {
  using Cache = PagedCache<CpuBackend, 16>;
  const auto& c = model.config();
  const int per_seq_blocks = (o.prompt + o.n_new + 15) / 16;
  Cache cache(model.backend(), c, B * per_seq_blocks, kv);
  EngineOptions eo;
  eo.max_batch_tokens = B * o.prompt;  // every prompt in the first step
  eo.max_running = B;
  Engine<FullDepth, Cache> engine(model, cache, FullDepth{}, eo);
  std::mt19937 g(1234);  // the same prompts for every implementation
  std::uniform_int_distribution<std::int32_t> tok(3, c.vocab_size - 1);
  for (int b = 0; b < B; ++b) {
    GenerateRequest r;
    r.prompt.resize(std::size_t(o.prompt));
    for (auto& t : r.prompt) t = tok(g);
    r.max_tokens = o.n_new;
    r.ignore_eos = true;
    engine.add_request(std::move(r));
  }
  Run run{B, 0, 0, 0};
  auto t0 = clk::now();
  auto out = engine.step();  // the whole prefill; samples every request's first token
  run.prefill_s = seconds_since(t0);
  std::int64_t first = 0;
  for (auto& r : out) first += std::int64_t(r.tokens.size());
  if (first != B) {
    std::fprintf(stderr, "prefill step yielded %lld tokens, expected %d\n", (long long)first, B);
    std::exit(1);
  }
  t0 = clk::now();
  while (engine.has_work())
    for (auto& r : engine.step()) {
      if (r.finish == finish_reason::error) {
        std::fprintf(stderr, "request failed: %s\n", r.error.c_str());
        std::exit(1);
      }
      run.decode_tokens += std::int64_t(r.tokens.size());
    }
  run.decode_s = seconds_since(t0);
  return run;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  openblas_set_num_threads(int(o.threads));

  if (!o.json) std::printf("measuring ceilings (OpenBLAS, %u threads)...\n", o.threads);
  std::fflush(stdout);
  double bw = sgemv_bytes_per_s(std::size_t(1) << 30, o.reps);
  double flops = sgemm_flop_per_s(2048, o.reps);

  auto t0 = clk::now();
  ModelWeights w = load_model(o.model);
  const double load_s = seconds_since(t0);
  const ModelConfig cfg = w.config;
  const Costs k = costs(cfg, o.prompt, o.n_new, streamed_weight_bytes(w));
  // Weight-streaming rate for a matrix as large as one decode step's weights: shows how
  // much of the model the (shared, virtualised) last-level cache can hold.
  const double bw_model = sgemv_bytes_per_s(std::size_t(k.weight_bytes), o.reps);

  CpuBackend be_ours(o.threads, matmul_impl::invariant);
  CpuBackend be_blas(o.threads, matmul_impl::blas);
  // The extra variants: each dtype on a backend of its own (same thread count), and f32 on
  // --baseline-threads threads.
  struct Variant {
    std::string name;
    double weight_bytes;  // per decode step
    std::unique_ptr<CpuBackend> be;
    std::unique_ptr<LlamaModel<CpuBackend>> model;
    Run best[16];           // per batch index
    dtype kv = dtype::f32;  // the KV cache's precision
  };
  std::vector<Variant> variants;
  for (const std::string& full_name : o.dtypes) {
    const bool kvf16 = full_name.ends_with("-kvf16");
    const std::string name = kvf16 ? full_name.substr(0, full_name.size() - 6) : full_name;
    const bool f32act = name.ends_with("-f32act"), rows = name.ends_with("-rows");
    const std::string base = f32act ? name.substr(0, name.size() - 7)
                             : rows ? name.substr(0, name.size() - 5)
                                    : name;
    const dtype t = base == "f32"    ? dtype::f32
                    : base == "bf16" ? dtype::bf16
                    : base == "f16"  ? dtype::f16
                    : base == "q8_0" ? dtype::q8_0
                    : base == "q4_0"
                        ? dtype::q4_0
                        : (bench::usage(("unknown dtype " + name).c_str()), dtype::f32);
    ModelWeights wt = w;
    wt.convert(t);
    Variant v{full_name,
              streamed_weight_bytes(wt),
              std::make_unique<CpuBackend>(o.threads, matmul_impl::invariant,
                                           f32act ? quant_act::f32 : quant_act::int8,
                                           f32act ? bf16_act::f32 : bf16_act::bf16),
              nullptr,
              {}};
    v.be->set_repack(!rows);
    v.kv = kvf16 ? dtype::f16 : dtype::f32;
    v.model = std::make_unique<LlamaModel<CpuBackend>>(*v.be, std::move(wt));
    variants.push_back(std::move(v));
  }
  if (o.baseline_threads) {
    Variant v{"f32@" + std::to_string(o.baseline_threads) + "thr",
              k.weight_bytes,
              std::make_unique<CpuBackend>(o.baseline_threads),
              nullptr,
              {}};
    v.model = std::make_unique<LlamaModel<CpuBackend>>(*v.be, w);
    variants.push_back(std::move(v));
  }
  if (o.unfused) {
    Variant v{"f32 unfused", k.weight_bytes, std::make_unique<CpuBackend>(o.threads), nullptr, {}};
    v.model = std::make_unique<LlamaModel<CpuBackend>>(*v.be, w);
    v.model->set_fused(false);
    variants.push_back(std::move(v));
  }
  if (o.batches.size() > 16) bench::usage("at most 16 batch sizes");
  // Without --no-blas the weights are held twice (a 1B-shape f32 model is 4.4 GB each).
  LlamaModel<CpuBackend> ours(be_ours, o.blas ? ModelWeights(w) : std::move(w));
  std::unique_ptr<LlamaModel<CpuBackend>> blas;
  if (o.blas) blas = std::make_unique<LlamaModel<CpuBackend>>(be_blas, std::move(w));
  // --no-blas: an empty run (0 tokens) that the output leaves out.
  auto run_blas = [&](int B) { return blas ? run_batch(*blas, o, B) : Run{B, 0, 1, 0}; };

  struct Row {
    Run a, b;
  };
  std::vector<Row> rows;
  for (int B : o.batches) {
    if (!o.json) std::printf("batch %d...\n", B);
    std::fflush(stdout);
    // Best of --decode-reps runs, alternating implementations, so that a burst of other
    // load on the machine (it is shared) hits neither side alone.
    Row r{run_batch(ours, o, B), run_blas(B)};
    const std::size_t bi = rows.size();
    for (auto& v : variants) v.best[bi] = run_batch(*v.model, o, B, v.kv);
    for (int i = 1; i < o.decode_reps; ++i) {
      const Run a = run_batch(ours, o, B), b = run_blas(B);
      for (auto& v : variants) {
        const Run x = run_batch(*v.model, o, B, v.kv);
        const double p = std::min(v.best[bi].prefill_s, x.prefill_s);
        if (x.tok_s() > v.best[bi].tok_s()) v.best[bi] = x;
        v.best[bi].prefill_s = p;
      }
      const double pa = std::min(r.a.prefill_s, a.prefill_s),
                   pb = std::min(r.b.prefill_s, b.prefill_s);
      if (a.tok_s() > r.a.tok_s()) r.a = a;
      if (b.tok_s() > r.b.tok_s()) r.b = b;
      r.a.prefill_s = pa;  // prefill: best of the runs too
      r.b.prefill_s = pb;
    }
    rows.push_back(r);
  }
  // The ceilings again after the decode runs; the best of both is the ceiling.
  bw = std::max(bw, sgemv_bytes_per_s(std::size_t(1) << 30, o.reps));
  flops = std::max(flops, sgemm_flop_per_s(2048, o.reps));

  const double bytes_tok = k.weight_bytes + k.kv_bytes;
  auto frac_bw = [&](const Run& r) {
    return r.tok_s() * (k.weight_bytes / r.batch + k.kv_bytes) / bw;
  };
  auto frac_fl = [&](const Run& r) { return r.tok_s() * k.flops / flops; };

  if (o.json) {
    std::printf(
        "{\"model\":\"%s\",\"threads\":%u,\"prompt\":%d,\"new\":%d,"
        "\"bandwidth_GBps\":%.3f,\"bandwidth_model_sized_GBps\":%.3f,\"sgemm_GFLOPs\":%.3f,"
        "\"weight_MB\":%.3f,\"kv_MB_per_token\":%.4f,\"MFLOP_per_token\":%.3f,\"runs\":[",
        o.model.c_str(), o.threads, o.prompt, o.n_new, bw / 1e9, bw_model / 1e9, flops / 1e9,
        k.weight_bytes / 1e6, k.kv_bytes / 1e6, k.flops / 1e6);
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const auto& r = rows[i];
      std::printf(
          "%s{\"batch\":%d,\"ours_tok_s\":%.4f,\"ours_prefill_s\":%.4f,"
          "\"ours_frac_bandwidth\":%.4f,\"ours_frac_flops\":%.4f",
          i ? "," : "", r.a.batch, r.a.tok_s(), r.a.prefill_s, frac_bw(r.a), frac_fl(r.a));
      if (blas)
        std::printf(
            ",\"blas_tok_s\":%.4f,\"blas_prefill_s\":%.4f,\"blas_frac_bandwidth\":%.4f,"
            "\"blas_frac_flops\":%.4f",
            r.b.tok_s(), r.b.prefill_s, frac_bw(r.b), frac_fl(r.b));
      std::printf("}");
    }
    std::printf("]}\n");
    return 0;
  }

  std::printf(
      "\nmodel %s: dim %d, %d layers, %d heads (%d kv), hidden %d, vocab %d (loaded in %.1f s)\n",
      o.model.c_str(), cfg.dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.hidden_dim,
      cfg.vocab_size, load_s);
  std::printf(
      "per decode token: %.1f MB of weights per step + %.1f MB K/V (%.1f MB at batch 1), "
      "%.1f MFLOP\n",
      k.weight_bytes / 1e6, k.kv_bytes / 1e6, bytes_tok / 1e6, k.flops / 1e6);
  std::printf(
      "ceilings (%u threads): sgemv 1 GiB %.2f GB/s (model-sized %.0f MB: %.2f GB/s), "
      "sgemm 2048^3 %.1f GFLOP/s\n",
      o.threads, bw / 1e9, k.weight_bytes / 1e6, bw_model / 1e9, flops / 1e9);
  std::printf(
      "prompt %d, %d new tokens; decode tok/s = tokens after the prefill step / their time\n\n",
      o.prompt, o.n_new);
  std::printf("%5s | %10s %9s %9s | %10s %9s %9s | %7s | %9s %9s\n", "batch", "ours tok/s", "of BW",
              "of FLOP", "BLAS tok/s", "of BW", "of FLOP", "ours/BL", "prefill s", "BLAS pf s");
  for (const auto& r : rows)
    if (blas)
      std::printf("%5d | %10.1f %8.1f%% %8.1f%% | %10.1f %8.1f%% %8.1f%% | %7.2f | %9.2f %9.2f\n",
                  r.a.batch, r.a.tok_s(), 100 * frac_bw(r.a), 100 * frac_fl(r.a), r.b.tok_s(),
                  100 * frac_bw(r.b), 100 * frac_fl(r.b), r.a.tok_s() / r.b.tok_s(), r.a.prefill_s,
                  r.b.prefill_s);
    else
      std::printf("%5d | %10.1f %8.1f%% %8.1f%% | %10s %9s %9s | %7s | %9.2f %9s\n", r.a.batch,
                  r.a.tok_s(), 100 * frac_bw(r.a), 100 * frac_fl(r.a), "-", "-", "-", "-",
                  r.a.prefill_s, "-");
  if (!variants.empty()) {
    std::printf("\nweight precisions (our kernel; bytes per step scale with the dtype):\n");
    std::printf("%-12s %5s | %10s %8s %9s %9s | %9s\n", "variant", "batch", "tok/s", "x f32",
                "of BW", "of FLOP", "prefill s");
    for (const auto& v : variants)
      for (std::size_t i = 0; i < rows.size(); ++i) {
        const Run& r = v.best[i];
        const double kv_b = v.kv == dtype::f16 ? k.kv_bytes / 2 : k.kv_bytes;
        const double fb = r.tok_s() * (v.weight_bytes / r.batch + kv_b) / bw;
        std::printf("%-12s %5d | %10.1f %8.2f %8.1f%% %8.1f%% | %9.2f\n", v.name.c_str(), r.batch,
                    r.tok_s(), r.tok_s() / rows[i].a.tok_s(), 100 * fb, 100 * frac_fl(r),
                    r.prefill_s);
      }
  }
  std::printf("\ntargets: batch 1 >= 90%% of BW, batch 16 >= 50%% of FLOP\n");
  return 0;
}
