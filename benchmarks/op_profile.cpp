// eexit-bench-ops: where a decode step's time goes, op by op, on the CPU backend.
//
//   eexit-bench-ops MODEL_DIR [--threads 2] [--prompt 32] [--new 32] [--batch 1] [--reps 3]
//                             [--unfused] [--kv-dtype f32|f16] [--suffix N]
//
// The model and the engine run on TimedCpu, a CpuBackend whose every op is timed (wall
// clock around the call; the CPU backend is synchronous, so that is the op's time). The
// step is timed as a whole too: what the ops do not account for is the engine's own work
// (scheduling, block tables, sampling, streaming the tokens). B requests of --prompt random
// ids, --new tokens each, greedy, ignore_eos; the first step is the whole prefill and is
// left out, so every figure is per decode step of B rows. Best of --reps runs (by step
// time); the table is that run's. --unfused: the model issues the unfused op sequence
// (LlamaModel::set_fused(false)), for a side-by-side of the fused element-wise ops.
// --kv-dtype f16: the KV cache in f16 (with a long --prompt: what attention costs then).
// --suffix N: the shared-prefix case of a server with prefix caching: one request of the
// --prompt ids runs first (one token), then the B requests are that prompt followed by N
// ids of their own; the first step, their suffixes' prefill over the cached prompt (what
// their time to first token is), is profiled in a table of its own, best of --reps.
// The timing adds two clock reads per op (~50 ns each; ~100 ops per layer step at most).
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <utility>

#include "bench_args.hpp"
#include "bench_clock.hpp"
#include "eexit/backend/cpu.hpp"
#include "eexit/cache/paged.hpp"
#include "eexit/engine/engine.hpp"
#include "eexit/model/llama.hpp"
#include "eexit/model/load.hpp"

using namespace eexit;
using clk = std::chrono::steady_clock;

namespace {

#define EEXIT_BENCH_OPS(X) \
  X(matmul)                \
  X(matmul_qkv)            \
  X(matmul_swiglu)         \
  X(matmul_add)            \
  X(rmsnorm)               \
  X(rope)                  \
  X(store_kv)              \
  X(attention)             \
  X(swiglu) X(add) X(embed) X(gather_rows) X(copy) X(fill) X(sigmoid) X(fill_kv) X(exit_scores)

enum class op : int {
#define X(name) name,
  EEXIT_BENCH_OPS(X)
#undef X
      count
};
constexpr const char* op_names[] = {
#define X(name) #name,
    EEXIT_BENCH_OPS(X)
#undef X
};
constexpr std::size_t n_ops = std::size_t(op::count);

// CpuBackend with a wall-clock total and a call count per op.
struct TimedCpu : CpuBackend {
  using CpuBackend::CpuBackend;
  std::array<double, n_ops> seconds{};
  std::array<long, n_ops> calls{};
  void reset() {
    seconds.fill(0);
    calls.fill(0);
  }

  template <class F>
  void timed(op k, F&& f) {
    const auto t0 = clk::now();
    f();
    seconds[std::size_t(k)] += std::chrono::duration<double>(clk::now() - t0).count();
    ++calls[std::size_t(k)];
  }
#define EEXIT_TIMED(name)                                              \
  template <class... A>                                                \
  void name(A&&... a) {                                                \
    timed(op::name, [&] { CpuBackend::name(std::forward<A>(a)...); }); \
  }
  EEXIT_TIMED(matmul)
  EEXIT_TIMED(matmul_qkv)
  EEXIT_TIMED(matmul_swiglu)
  EEXIT_TIMED(matmul_add)
  EEXIT_TIMED(rmsnorm)
  EEXIT_TIMED(rope)
  EEXIT_TIMED(store_kv)
  EEXIT_TIMED(attention)
  EEXIT_TIMED(swiglu)
  EEXIT_TIMED(add)
  EEXIT_TIMED(embed)
  EEXIT_TIMED(gather_rows)
  EEXIT_TIMED(copy)
  EEXIT_TIMED(fill)
  EEXIT_TIMED(sigmoid)
  EEXIT_TIMED(fill_kv)
  EEXIT_TIMED(exit_scores)
#undef EEXIT_TIMED
};
static_assert(backend<TimedCpu>);

struct Options {
  std::string model;
  unsigned threads = 2;
  int prompt = 32, n_new = 32, batch = 1, reps = 3, suffix = 0;
  bool unfused = false;
  dtype kv = dtype::f32;
};

constexpr const char* usage_lines =
    "eexit-bench-ops MODEL_DIR [--threads 2] [--prompt 32] [--new 32] "
    "[--batch 1] [--reps 3] [--unfused] [--kv-dtype f32|f16] [--suffix N]\n";

Options parse(int argc, char** argv) {
  Options o;
  std::string kv = "f32";
  bench::parse_args(argc, argv, usage_lines, o.model,
                    {bench::opt("--threads", o.threads), bench::opt("--prompt", o.prompt),
                     bench::opt("--new", o.n_new), bench::opt("--batch", o.batch),
                     bench::opt("--reps", o.reps), bench::set("--unfused", o.unfused),
                     bench::opt("--kv-dtype", kv), bench::opt("--suffix", o.suffix)});
  if (o.model.empty()) bench::usage("missing MODEL_DIR");
  if (o.n_new < 2 || o.batch < 1 || o.prompt < 1 || o.suffix < 0)
    bench::usage("need --new >= 2, --batch >= 1, --prompt >= 1, --suffix >= 0");
  try {
    o.kv = parse_kv_dtype(kv);
  } catch (const std::exception& e) {
    bench::usage(e.what());
  }
  return o;
}

struct Profile {
  double step_s = 0;  // the profiled steps' wall time
  long steps = 0;
  std::array<double, n_ops> seconds{};
  std::array<long, n_ops> calls{};
};

// What the ops of the steps since be.reset() took, the steps taking `wall` seconds.
Profile profile_of(const TimedCpu& be, double wall, long steps) {
  Profile p;
  p.step_s = wall;
  p.steps = steps;
  p.seconds = be.seconds;
  p.calls = be.calls;
  return p;
}

struct Run {
  Profile decode, prefill;  // prefill: the first step (--suffix: the suffixes over the prompt)
};

Run run(LlamaModel<TimedCpu>& model, const Options& o) {
  using Cache = PagedCache<TimedCpu, 16>;
  TimedCpu& be = model.backend();
  const auto& c = model.config();
  const int own = o.suffix > 0 ? o.suffix : o.prompt;  // prompt ids each request prefills
  Cache cache(be, c, (o.batch + 1) * ((o.prompt + o.suffix + o.n_new + 15) / 16), o.kv);
  EngineOptions eo;
  eo.max_batch_tokens = std::max(o.batch * own, o.prompt);  // every prefill in one step
  eo.max_running = o.batch;
  eo.prefix_cache = o.suffix > 0;
  Engine<FullDepth, Cache> engine(model, cache, FullDepth{}, eo);
  std::mt19937 g(1234);
  std::uniform_int_distribution<std::int32_t> tok(3, c.vocab_size - 1);
  std::vector<std::int32_t> shared;
  if (o.suffix > 0) {  // the prompt into the prefix cache
    shared.resize(std::size_t(o.prompt));
    for (auto& t : shared) t = tok(g);
    GenerateRequest r;
    r.prompt = shared;
    r.max_tokens = 1;
    engine.add_request(std::move(r));
    while (engine.has_work()) (void)engine.step();
  }
  for (int b = 0; b < o.batch; ++b) {
    GenerateRequest r;
    if (o.suffix > 0) {
      r.prompt = shared;
      for (int i = 0; i < o.suffix; ++i) r.prompt.push_back(tok(g));
    } else {
      r.prompt.resize(std::size_t(o.prompt));
      for (auto& t : r.prompt) t = tok(g);
    }
    r.max_tokens = o.n_new;
    r.ignore_eos = true;
    engine.add_request(std::move(r));
  }
  Run out;
  be.reset();
  auto t0 = clk::now();
  (void)engine.step();  // the prefill
  out.prefill = profile_of(be, std::chrono::duration<double>(clk::now() - t0).count(), 1);
  be.reset();
  long steps = 0;
  t0 = clk::now();
  while (engine.has_work()) {
    (void)engine.step();
    ++steps;
  }
  out.decode = profile_of(be, std::chrono::duration<double>(clk::now() - t0).count(), steps);
  return out;
}

void print_table(const Profile& best) {
  const double per = 1e3 / double(best.steps);
  std::printf("%-14s %10s %9s %7s\n", "op", "ms/step", "calls", "share");
  double ops = 0, mm = 0;
  for (std::size_t k = 0; k < n_ops; ++k) {
    ops += best.seconds[k];
    if (k <= std::size_t(op::matmul_add)) mm += best.seconds[k];
  }
  for (std::size_t k = 0; k < n_ops; ++k)
    if (best.calls[k])
      std::printf("%-14s %10.3f %9.1f %6.1f%%\n", op_names[k], best.seconds[k] * per,
                  double(best.calls[k]) / double(best.steps), 100 * best.seconds[k] / best.step_s);
  std::printf("%-14s %10.3f\n", "engine (rest)", (best.step_s - ops) * per);
  std::printf("%-14s %10.3f\n", "step", best.step_s * per);
  std::printf("outside matmuls: %.3f ms per step (%.1f%%)\n", (best.step_s - mm) * per,
              100 * (best.step_s - mm) / best.step_s);
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  ModelWeights w = load_model(o.model);
  TimedCpu be(o.threads);
  LlamaModel<TimedCpu> model(be, std::move(w));
  model.set_fused(!o.unfused);
  const double cpu0 = bench::cpu_now();
  const auto w0 = clk::now();
  Profile best, best_prefill;
  for (int i = 0; i < o.reps; ++i) {
    Run r = run(model, o);
    if (i == 0 || r.decode.step_s < best.step_s) best = r.decode;
    if (i == 0 || r.prefill.step_s < best_prefill.step_s) best_prefill = r.prefill;
  }
  const double wall = std::chrono::duration<double>(clk::now() - w0).count();
  const double cpu = bench::cpu_now() - cpu0;
  std::printf("model %s, batch %d, %u threads, %s ops, %ld decode steps (best of %d runs)\n",
              o.model.c_str(), o.batch, o.threads, o.unfused ? "unfused" : "fused", best.steps,
              o.reps);
  std::printf("load average %s; process CPU / wall %.2f\n", bench::loadavg().c_str(), cpu / wall);
  if (o.suffix > 0) {
    std::printf("prefill of %d x %d suffix ids over a cached %d-id prompt (best of %d):\n", o.batch,
                o.suffix, o.prompt, o.reps);
    print_table(best_prefill);
    std::printf("decode:\n");
  }
  print_table(best);
  return 0;
}
