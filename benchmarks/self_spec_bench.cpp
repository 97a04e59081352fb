// eexit-bench-spec: self-speculative decoding vs FullDepth, greedy, in one run.
//
//   eexit-bench-spec MODEL_DIR [--data ../shared/data/tinyshakespeare.txt] [--threads 1]
//                    [--prompts 64] [--prompt-len 32] [--new 64] [--batches 1,4,16,64]
//                    [--configs L:K:T,...] [--reps 3] [--csv FILE] [--quick] [--costs-only]
//
// Prompts: held-out text (the last 10% of the data file's characters, which the embedded
// model did not train on), tokenized without special tokens; prompt i = BOS + prompt-len - 1
// tokens at an even spacing. Greedy, ignore_eos, --new tokens per prompt.
// Configurations: L:K:T = draft from the exit after layer L, at most K drafts per verify
// pass, stop drafting under max-prob T (0 = always K); L:K:T:nb = without the bonus row
// (Speculation::bonus_row).
//
// Speed, per batch size B: an Engine<P, PagedCache<CpuBackend,16>> with max_running = B gets
// the prompts in waves of B. Timed: the decode steps only (a wave's first step is its
// prefill, the same work for every policy). tokens/s = decode tokens / wall time of those
// steps; CPU ratio = the same with process CPU time (CLOCK_PROCESS_CPUTIME_ID), which time
// spent descheduled by other load on the machine does not inflate. The runs of one B
// alternate (full, config 1, config 2, ..., then again --reps times) and each one keeps its
// best run, so every ratio compares runs made within seconds of each other.
// Agreement: generated tokens equal to FullDepth's, position by position (must be 100%).
// Also: acceptance (accepted / proposed drafts), tokens per verify pass, and the draft and
// verify walks' share of the time.
//
// Step costs (the WHY): LayerWalk on its own, B sequences with 64 tokens of context each:
// the time of a full-depth walk of B·r rows (r positions per sequence) over the time of B
// rows; of a draft walk (layers 0..L and the exit head, B rows); and of a verify walk of
// k + 1 positions per sequence (k from layer L+1, one from layer 0), each over a full-depth
// walk of B rows; process CPU time (wall time of a few-millisecond walk on a loaded
// machine is mostly other processes' time slices), min over many repetitions.
//
// Oracle-acceptance mechanics (issue 17): --oracle-accept A,.. on any model with exit points
// (a random one: tools/make_random_model.py --preset llama-3.2-1b --exit-layers 3,7), random
// prompts. Each draft is replaced, with probability A, by the token a full-depth run of the
// same prompts produced at that position, else by another token (a hash of prompt and
// position decides, the same for every configuration); draft passes, verify walk and rollback
// run for real. Per batch size: the step costs (a full walk, a draft walk to layer L, a verify
// walk of k drafts with and without the bonus row; min of --cost-reps before each rep), then per
// A, draft layer L and k mode (fixed K, adaptive <= K one k per step, adaptive-row <= K per
// row (Speculation::per_row), each with "-nb": no bonus row) the
// measured speedup over full depth beside the prediction from those costs:
//   m(A, k) x full / (k x draft + verify(k)),  m = (1 - A^(k+1)) / (1 - A)  (A^k without bonus)
// (adaptive: the best k's prediction, or 1.0). --waves W runs W waves of B prompts per batch
// size (prompts = W x the largest B); --dtype converts the weights; --draft-vocab N keeps the
// draft head to N tokens (the first N of --draft-vocab-file, else ids 0..N-1: with an oracle
// only N matters, as the draft head's cost).
// --paired: each configuration's run gets a full-depth run of its own next to it (before it
// in even reps, after it in odd ones), and the ratio of each pair is kept; reported as the
// median and the range over reps beside the best-of ratio, and the step costs are measured
// again just before each pair, whose own prediction ("pred run" from those costs) gives the
// pair's err%. A pair is seconds apart, so the guest's bandwidth drifting over minutes (which
// moves a best-of ratio by a few percent when its full-depth run is minutes away, and a
// prediction from costs measured minutes earlier) cancels; it costs a full-depth run and a
// cost measurement per config and rep.
// --interleave (implies --paired): the pair's two runs go step by step in one process (two
// engines and caches over one model; generate_interleaved), so drift over seconds cancels
// too: at batch 16 separate runs seconds apart spanned 0.857-1.043 for the same work,
// interleaved pairs ~1%.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "bench_args.hpp"
#include "bench_clock.hpp"
#include "eexit/backend/cpu.hpp"
#include "eexit/cache/paged.hpp"
#include "eexit/engine/engine.hpp"
#include "eexit/engine/layer_walk.hpp"
#include "eexit/model/llama.hpp"
#include "eexit/model/load.hpp"
#include "eexit/policy/full_depth.hpp"
#include "eexit/policy/self_speculative.hpp"
#include "eexit/text/tokenizer.hpp"

using namespace eexit;
using clk = std::chrono::steady_clock;

namespace {

using Model = LlamaModel<CpuBackend>;
using Cache = PagedCache<CpuBackend, 16>;

// Which clock walk_cost reads: process CPU time (default: a shared machine's other load does
// not inflate it) or wall time (--cost-clock wall, on a quiet machine: what the speedups are
// measured in; CPU time also counts a worker thread waiting for the other).
bool cost_clock_wall = false;

struct Config {
  int layer = 1, k = 4;
  float threshold = 0.0f;
  bool bonus = true;
  std::string label() const {
    char b[64];
    std::snprintf(b, sizeof b, "L%d k%d t%.2g%s", layer, k, double(threshold), bonus ? "" : " nb");
    return b;
  }
};

struct Options {
  std::string model, data = "../shared/data/tinyshakespeare.txt", csv;
  unsigned threads = 1;
  int n_prompts = 64, prompt_len = 32, n_new = 64, reps = 3, cost_reps = 40;
  bool costs_only = false, paired = false, interleave = false;
  // Oracle-acceptance mechanics (--oracle-accept): acceptance rates, draft layers, K.
  std::vector<float> oracle;
  std::vector<int> draft_layers;
  int oracle_k = 4;
  std::string dtype_name, draft_vocab_file, k_modes = "fixed,adaptive";
  int draft_vocab = 0, waves = 0;  // waves: oracle mode's prompts per B = waves x B (0: all)
  std::vector<int> batches{1, 4, 16, 64};
  std::vector<Config> configs{{1, 2, 0},    {1, 3, 0, false},    {3, 2, 0},   {3, 3, 0, false},
                              {3, 4, 0.3f}, {3, 4, 0.3f, false}, {3, 6, 0.5f}};
};

constexpr const char* usage_lines =
    "eexit-bench-spec MODEL_DIR [--data FILE] [--threads 1] [--prompts 64]\n"
    "         [--prompt-len 32] [--new 64] [--batches 1,4,16,64] [--configs L:K:T,..]\n"
    "         [--reps 3] [--csv FILE] [--quick] [--costs-only] [--cost-reps 40]\n"
    "         [--dtype f32|bf16] [--draft-vocab N [--draft-vocab-file F]] [--cost-clock cpu]\n"
    "         [--oracle-accept A,.. [--draft-layers L,..] [--k 4] [--waves W] [--paired]\n"
    "          [--interleave] [--k-modes "
    "fixed,adaptive,adaptive-row,fixed-nb,adaptive-nb,adaptive-row-nb]]\n";

Options parse(int argc, char** argv) {
  Options o;
  bool quick = false;
  bench::parse_args(argc, argv, usage_lines, o.model,
                    {bench::opt("--data", o.data),
                     bench::opt("--threads", o.threads),
                     bench::opt("--prompts", o.n_prompts),
                     bench::opt("--prompt-len", o.prompt_len),
                     bench::opt("--new", o.n_new),
                     bench::opt("--reps", o.reps),
                     bench::opt("--csv", o.csv),
                     bench::opt("--batches", o.batches),
                     bench::set("--costs-only", o.costs_only),
                     bench::opt("--cost-reps", o.cost_reps),
                     bench::opt("--oracle-accept", o.oracle),
                     bench::opt("--draft-layers", o.draft_layers),
                     bench::opt("--k", o.oracle_k),
                     bench::opt("--k-modes", o.k_modes),
                     bench::opt("--dtype", o.dtype_name),
                     bench::opt("--draft-vocab", o.draft_vocab),
                     bench::opt("--draft-vocab-file", o.draft_vocab_file),
                     bench::opt("--waves", o.waves),
                     bench::set("--paired", o.paired),
                     bench::set("--interleave", o.interleave),
                     {"--cost-clock",
                      [&](const bench::Value& value) {
                        const std::string v = value();
                        if (v != "cpu" && v != "wall") bench::usage("--cost-clock: cpu or wall");
                        cost_clock_wall = v == "wall";
                      }},
                     bench::set("--quick", quick),
                     {"--configs", [&](const bench::Value& value) {
                        o.configs.clear();
                        for (const std::string& t : bench::split(value())) {
                          const auto f = bench::split(t, ':');
                          if (f.size() != 3 && f.size() != 4)
                            bench::usage("a config is L:K:T or L:K:T:nb");
                          o.configs.push_back({std::stoi(f[0]), std::stoi(f[1]), std::stof(f[2]),
                                               f.size() == 3 || f[3] != "nb"});
                        }
                      }}});
  if (quick) {  // smoke run: seconds
    o.n_prompts = 4;
    o.batches = {1, 4};
    o.reps = 1;
    o.n_new = 24;
  }
  if (o.model.empty()) bench::usage("MODEL_DIR is required");
  if (o.threads == 0 || o.n_prompts < 1 || o.prompt_len < 2 || o.n_new < 2 || o.reps < 1 ||
      o.cost_reps < 1 || o.oracle_k < 1 || o.oracle_k > 16 || o.draft_vocab < 0)
    bench::usage("bad option value");
  for (float a : o.oracle)
    if (!(a >= 0.0f && a < 1.0f)) bench::usage("--oracle-accept: rates in [0, 1)");
  if (!o.dtype_name.empty() && o.dtype_name != "f32" && o.dtype_name != "bf16")
    bench::usage("--dtype: f32 or bf16");
  if (o.interleave) o.paired = true;
  if (o.waves > 0) o.n_prompts = o.waves * *std::max_element(o.batches.begin(), o.batches.end());
  for (int B : o.batches)
    if (B < 1 || o.n_prompts % B) bench::usage("every batch size must divide --prompts");
  return o;
}

std::vector<std::vector<std::int32_t>> held_out_prompts(const Options& o, const Model& model,
                                                        const Tokenizer& tok) {
  std::ifstream f(o.data, std::ios::binary);
  if (!f) {
    std::fprintf(stderr, "cannot read %s\n", o.data.c_str());
    std::exit(1);
  }
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string text = ss.str();
  const auto ids = tok.encode(std::string_view(text).substr(text.size() * 9 / 10), false);
  const std::size_t len = std::size_t(o.prompt_len - 1);
  if (ids.size() < len + std::size_t(o.n_prompts)) bench::usage("the held-out text is too short");
  std::vector<std::vector<std::int32_t>> ps;
  for (int i = 0; i < o.n_prompts; ++i) {
    const std::size_t off = std::size_t(i) * (ids.size() - len) / std::size_t(o.n_prompts);
    std::vector<std::int32_t> p{model.config().bos_id};
    p.insert(p.end(), ids.begin() + long(off), ids.begin() + long(off + len));
    ps.push_back(std::move(p));
  }
  return ps;
}

struct Run {
  double wall = 0, cpu = 0;
  std::int64_t tokens = 0;
  std::vector<std::vector<std::int32_t>> out;  // per prompt
  EngineStats stats;
};

// One configuration over interleaved repetitions: the run with the least wall time, and the
// least CPU time of any of them.
struct Best {
  Run run;
  double cpu = 1e30;
  void keep(Run&& x) {
    cpu = std::min(cpu, x.cpu);
    if (run.tokens == 0 || x.wall < run.wall) run = std::move(x);
  }
  // Tokens per second (wall, or CPU time) over full depth's.
  double x_over(const Best& full, bool cpu_time) const {
    const double per = double(run.tokens) / double(full.run.tokens);
    return (cpu_time ? full.cpu / cpu : full.run.wall / run.wall) * per;
  }
  // Percent of full depth's tokens this run generated too, position by position.
  double agreement(const Best& full) const {
    std::size_t same = 0, total = 0;
    for (std::size_t p = 0; p < full.run.out.size(); ++p)
      for (std::size_t j = 0; j < full.run.out[p].size(); ++j, ++total)
        same += j < run.out[p].size() && run.out[p][j] == full.run.out[p][j];
    return 100.0 * double(same) / double(total);
  }
};

// One run of a policy over the prompts, a step at a time: waves of B requests (a wave's
// first step is its prefill, not timed), then its decode steps, timed. on_add(id, prompt
// index) is told each request's engine id as it is added (the oracle's table).
template <class P>
class Runner {
 public:
  Runner(Model& model, const P& policy, const std::vector<std::vector<std::int32_t>>& ps, int B,
         int n_new, std::function<void(request_id, std::size_t)> on_add = {})
      : ps_(ps),
        B_(B),
        n_new_(n_new),
        on_add_(std::move(on_add)),
        cache_(model.backend(), model.config(), B * ((int(ps[0].size()) + n_new + 16 + 15) / 16)),
        engine_(model, cache_, policy, options(B, int(ps[0].size()))) {
    run_.out.resize(ps.size());
  }
  bool done() const { return next_ >= ps_.size() && !engine_.has_work(); }
  // Share of the decode tokens generated so far, in [0, 1].
  double progress() const {
    return double(run_.tokens) / (double(ps_.size()) * double(n_new_ - 1));
  }
  // One engine step (a new wave's requests first when the last one has finished).
  void step() {
    bool prefill = false;
    if (!engine_.has_work()) {
      idx_.clear();
      for (int b = 0; b < B_; ++b, ++next_) {
        GenerateRequest r;
        r.prompt = ps_[next_];
        r.max_tokens = n_new_;
        r.ignore_eos = true;
        const request_id id = engine_.add_request(std::move(r));
        idx_[id] = next_;
        if (on_add_) on_add_(id, next_);
      }
      prefill = true;
    }
    const double c0 = bench::cpu_now();
    const auto t0 = clk::now();
    auto outs = engine_.step();
    const double wall = std::chrono::duration<double>(clk::now() - t0).count();
    const double cpu = bench::cpu_now() - c0;
    for (auto& o : outs) {
      if (o.finish == finish_reason::error) {
        std::fprintf(stderr, "request failed: %s\n", o.error.c_str());
        std::exit(1);
      }
      for (auto& t : o.tokens) run_.out[idx_.at(o.id)].push_back(t.token);
      if (!prefill) run_.tokens += std::int64_t(o.tokens.size());
    }
    if (!prefill) {
      run_.wall += wall;
      run_.cpu += cpu;
    }
  }
  Run finish() {
    run_.stats = engine_.stats();
    return std::move(run_);
  }

 private:
  static EngineOptions options(int B, int prompt_len) {
    EngineOptions eo;
    eo.max_batch_tokens = B * prompt_len;  // a wave's prompts in its first step
    eo.max_running = B;
    return eo;
  }
  const std::vector<std::vector<std::int32_t>>& ps_;
  int B_, n_new_;
  std::function<void(request_id, std::size_t)> on_add_;
  Cache cache_;
  Engine<P, Cache> engine_;
  std::size_t next_ = 0;  // the next prompt to add
  std::map<request_id, std::size_t> idx_;
  Run run_;
};

template <class P>
Run generate(Model& model, const P& policy, const std::vector<std::vector<std::int32_t>>& ps, int B,
             int n_new, const std::function<void(request_id, std::size_t)>& on_add = {}) {
  Runner<P> r(model, policy, ps, B, n_new, on_add);
  while (!r.done()) r.step();
  return r.finish();
}

// Two policies' runs of the same prompts, interleaved a step at a time (two engines and caches
// over one model): the next step is always the one of the run that is further behind in its
// share of the decode tokens, so both sample the same seconds of the machine in proportion to
// their work (this guest's speed drifts by 10-30% over seconds to minutes; runs made one after
// the other, even seconds apart, carry that drift into their ratio).
template <class P0, class P1>
std::pair<Run, Run> generate_interleaved(
    Model& model, const P0& p0, const P1& p1, const std::vector<std::vector<std::int32_t>>& ps,
    int B, int n_new, const std::function<void(request_id, std::size_t)>& on_add1 = {}) {
  Runner<P0> a(model, p0, ps, B, n_new);
  Runner<P1> b(model, p1, ps, B, n_new, on_add1);
  while (!a.done() || !b.done()) {
    if (!a.done() && (b.done() || a.progress() <= b.progress()))
      a.step();
    else
      b.step();
  }
  return {a.finish(), b.finish()};
}

// ---- step costs ----------------------------------------------------------------------

// Min over reps of one walk of B sequences x r rows each at context 64 (stop_exit: a draft).
// late > 0: a verify pass: the first r - 1 rows of each sequence start at layer `late` (from
// a stand-in hidden state), the last from layer 0 (bonus) or also late (!bonus).
double walk_cost(Model& model, int B, int r, int stop_exit, int reps, int late = 0,
                 bool bonus = true) {
  const int ctx = 64;
  Cache cache(model.backend(), model.config(), B * ((ctx + r + 15) / 16));
  LayerWalk<Model, Cache> walk(model, cache, std::size_t(B * (ctx + r)), std::size_t(B * r));
  FullDepth full;
  auto none = [](const YieldedRows&) {};
  WalkRows w;
  for (int b = 0; b < B; ++b) {  // the context, once
    if (!cache.reserve(b + 1, ctx + r)) std::exit(1);
    for (int p = 0; p < ctx; ++p) {
      w.tokens.push_back(std::int32_t(p % model.config().vocab_size));
      w.rowkv.push_back(RowKv{cache.block_table(b + 1), p});
    }
  }
  w.n_prefill = w.tokens.size();
  walk.run(full, w, none);
  auto state = model.backend().allocate<float>(std::size_t(model.config().dim));
  model.backend().fill(CpuBackend::data(state), std::size_t(model.config().dim), 0.05f);
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    w.clear();
    const int n_late = late > 0 ? (bonus ? r - 1 : r) : 0;
    if (late > 0)
      for (int b = 0; b < B; ++b)
        for (int j = 0; j < n_late; ++j) {
          w.push_late(std::int32_t(j + 3), RowKv{cache.block_table(b + 1), ctx + j}, late,
                      CpuBackend::data(state));
          w.yield_last(std::int32_t(w.tokens.size()) - 1);
        }
    for (int b = 0; b < B; ++b)
      for (int j = n_late; j < r; ++j) {
        w.tokens.push_back(std::int32_t(j + 3));
        w.rowkv.push_back(RowKv{cache.block_table(b + 1), ctx + j});
        w.yield_last(std::int32_t(w.tokens.size()) - 1);
      }
    w.n_prefill = w.tokens.size();
    w.stop_exit = stop_exit;
    const double c0 = bench::cpu_now();
    const auto t0 = clk::now();
    walk.run(full, w, none);
    best = std::min(best, cost_clock_wall ? std::chrono::duration<double>(clk::now() - t0).count()
                                          : bench::cpu_now() - c0);
  }
  return best;
}

// ---- oracle-acceptance mechanics (--oracle-accept) ---------------------------------------
// The draft at each position is replaced: with probability A by the token full depth
// produced there (from a full-depth run of the same prompts, greedy), else by another one,
// decided by a hash of (prompt, position) so every configuration with the same A sees the
// same right and wrong positions. Everything else (draft passes through layers 0..L and the
// draft head, the verify walk, rollback) runs for real: A sets the acceptance, the engine's
// mechanics set the speed. The model's own quality plays no part (a random model serves).

struct OracleTable {
  double accept = 0.8;
  int vocab = 0;
  const std::vector<std::vector<std::int32_t>>* truth = nullptr;  // per prompt, generated
  const std::vector<std::vector<std::int32_t>>* prompts = nullptr;
  std::unordered_map<request_id, std::size_t> prompt_of;
};

std::uint64_t mix(std::uint64_t x) {  // splitmix64's finalizer
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

struct OracleSpec : SelfSpeculative<> {
  std::shared_ptr<OracleTable> t;
  int oracle_draft(std::int64_t id, std::int32_t pos, int d) const {
    const std::size_t i = t->prompt_of.at(id);
    const auto g = std::int64_t(pos) - std::int64_t((*t->prompts)[i].size());
    const auto& truth = (*t->truth)[i];
    if (g < 0 || g >= std::int64_t(truth.size())) return d;
    const std::uint64_t h = mix((std::uint64_t(i) << 32) ^ std::uint64_t(g));
    const int right = truth[std::size_t(g)];
    if (double(h >> 11) * 0x1p-53 < t->accept) return right;
    return int((std::uint64_t(right) + 1 + mix(h) % std::uint64_t(t->vocab - 1)) %
               std::uint64_t(t->vocab));
  }
};

// Expected tokens a row emits per verify pass: k drafts, each kept with probability a given
// the ones before, the bonus row verifying the last.
double expected_tokens(double a, int k) {
  return (1.0 - std::pow(a, k + 1)) / (1.0 - a);
}

int oracle_main(const Options& o, Model& model) {
  const auto& c = model.config();
  std::vector<std::vector<std::int32_t>> ps;
  for (int i = 0; i < o.n_prompts; ++i) {  // random prompts: a random model reads no text
    std::vector<std::int32_t> p{c.bos_id};
    for (int j = 1; j < o.prompt_len; ++j)
      p.push_back(std::int32_t(mix(std::uint64_t(i) * 7919 + std::uint64_t(j)) %
                               std::uint64_t(c.vocab_size)));
    ps.push_back(std::move(p));
  }
  std::vector<int> layers = o.draft_layers;
  if (layers.empty())
    for (int e = 0; e + 1 < model.n_exits(); ++e)
      layers.push_back(model.exit_layers()[std::size_t(e)]);
  std::vector<int> exit_of;
  for (int l : layers) {
    int e = -1;
    for (int i = 0; i + 1 < model.n_exits(); ++i)
      if (model.exit_layers()[std::size_t(i)] == l) e = i;
    if (e < 0) bench::usage("--draft-layers: layer " + std::to_string(l) + " is not an exit point");
    exit_of.push_back(e);
  }
  const auto modes = bench::split(o.k_modes);
  for (const auto& m : modes)
    if (m != "fixed" && m != "adaptive" && m != "adaptive-row" && m != "fixed-nb" &&
        m != "adaptive-nb" && m != "adaptive-row-nb")
      bench::usage("--k-modes: fixed, adaptive, adaptive-row, each with -nb");
  const int K = o.oracle_k;
  const std::string load0 = bench::loadavg();
  std::printf(
      "eexit-bench-spec --oracle-accept: %s (%s), dim %d, %d layers, vocab %d, draft "
      "vocabulary %zu; %d prompts x %d random tokens, %d new, greedy; K %d; threads %u; "
      "reps %d; load %s\n",
      o.model.c_str(), o.dtype_name.empty() ? "as stored" : o.dtype_name.c_str(), c.dim, c.n_layers,
      c.vocab_size, model.draft_vocab().size(), o.n_prompts, o.prompt_len, o.n_new, K, o.threads,
      o.reps, load0.c_str());
  std::FILE* csv = o.csv.empty() ? nullptr : std::fopen(o.csv.c_str(), "w");
  if (csv)
    std::fprintf(
        csv,
        "batch,accept,draft_layer,k_mode,k,tok_s,x_full,x_full_cpu,predicted,predicted_run,"
        "acceptance,"
        "drafts_per_pass,tokens_per_pass,agreement,full_ms,draft_ms,verify_ms,dim,"
        "n_layers,vocab,draft_vocab,load_start,load_end,paired_median,paired_min,paired_max,"
        "paired_err_median\n");
  std::printf("step costs: %s time, min of %d\n", cost_clock_wall ? "wall" : "process CPU",
              o.cost_reps);
  std::printf(
      "\n(pred A: predicted at the nominal A; pred run: from the run's own acceptance,"
      " drafts and plain steps; err%%: measured x full vs pred run)\n");
  std::printf("%4s %5s %3s %-12s %9s %7s %7s %7s %8s %6s %7s %7s %7s %6s\n", "B", "A", "L", "k",
              "tok/s", "x full", "x cpu", "pred A", "pred run", "err%", "accept%", "dr/pass",
              "tok/pass", "agree%");
  const auto all_prompts = ps;
  for (int B : o.batches) {
    if (o.waves > 0)  // the first waves x B prompts
      ps.assign(all_prompts.begin(), all_prompts.begin() + std::ptrdiff_t(o.waves * B));
    // Step costs (min of --cost-reps walks, --cost-clock): the prediction's inputs. They are
    // measured again before every rep's runs and the min over all kept, so costs and runs
    // sample the same minutes (this guest's memory bandwidth drifts over minutes; costs
    // timed once before every run could be off by 10-30% from them).
    const bool any_nb = std::any_of(modes.begin(), modes.end(),
                                    [](const std::string& m) { return m.ends_with("-nb"); });
    struct StepCosts {
      double full1 = 1e30;
      std::vector<double> draft;  // (draft layers)
      // verify[nb][layer][k]: a verify walk of k drafts with (nb 0) or without (nb 1) the
      // bonus row
      std::vector<std::vector<std::vector<double>>> verify;
      void min_with(const StepCosts& o) {
        full1 = std::min(full1, o.full1);
        for (std::size_t li = 0; li < draft.size(); ++li) {
          draft[li] = std::min(draft[li], o.draft[li]);
          for (int nb = 0; nb < 2; ++nb)
            for (std::size_t k = 0; k < verify[0][li].size(); ++k)
              verify[nb][li][k] = std::min(verify[nb][li][k], o.verify[nb][li][k]);
        }
      }
    };
    const StepCosts unset{
        1e30, std::vector<double>(layers.size(), 1e30),
        std::vector<std::vector<std::vector<double>>>(
            2, std::vector<std::vector<double>>(layers.size(),
                                                std::vector<double>(std::size_t(K) + 1, 1e30)))};
    StepCosts all = unset;  // the min over every measurement of this B
    auto measure_costs = [&] {
      StepCosts now = unset;
      now.full1 = walk_cost(model, B, 1, -1, o.cost_reps);
      for (std::size_t li = 0; li < layers.size(); ++li) {
        now.draft[li] = walk_cost(model, B, 1, exit_of[li], o.cost_reps);
        for (int k = 1; k <= K; ++k) {
          now.verify[0][li][std::size_t(k)] =
              walk_cost(model, B, k + 1, -1, o.cost_reps, layers[li] + 1);
          if (any_nb)
            now.verify[1][li][std::size_t(k)] =
                walk_cost(model, B, k, -1, o.cost_reps, layers[li] + 1, false);
        }
      }
      all.min_with(now);
      return now;
    };
    // The prediction from what a run did (its realized acceptance, drafts and plain decode
    // steps): V verify passes of d drafts on average, S tokens from them, P tokens from plain
    // decode steps; full depth spends full1 per token. verify(d) is interpolated between whole
    // k (verify(0) = a plain step).
    auto predict_run = [&](const StepCosts& sc, std::size_t li, bool nb, const Run& r) {
      const auto& st = r.stats;
      const double V = double(st.verify_passes), P = double(r.tokens - st.speculative_tokens);
      const double d = V > 0 ? double(st.draft_tokens) / V : 0.0;
      const int k0 = std::min(int(d), K - 1);
      const auto& v = sc.verify[nb][li];
      const double v0 = k0 == 0 ? sc.full1 : v[std::size_t(k0)];
      const double vd = v0 + (d - k0) * (v[std::size_t(k0) + 1] - v0);
      return double(r.tokens) * sc.full1 / (V * (d * sc.draft[li] + vd) + P * sc.full1);
    };
    struct Cfg {
      double a;
      std::size_t li;
      bool adaptive, nb, per_row;
      Best best;
      // --paired, per rep: tok/s over its full-depth neighbour's, and that over the
      // prediction from the costs measured just before the pair (err)
      std::vector<double> pairs, pair_err;
    };
    std::vector<Cfg> cfgs;
    for (float a : o.oracle)
      for (std::size_t li = 0; li < layers.size(); ++li)
        for (const auto& m : modes)
          cfgs.push_back({a,
                          li,
                          m.starts_with("adaptive"),
                          m.ends_with("-nb"),
                          m.starts_with("adaptive-row"),
                          {},
                          {},
                          {}});
    Best full;
    // The truth: a full-depth run's tokens (greedy, the same in every run).
    std::vector<std::vector<std::int32_t>> truth;
    for (int rep = 0; rep < o.reps; ++rep) {
      // --paired measures costs and runs full depth beside every configuration; here only
      // the first rep's full-depth run is needed then (for the truth).
      if (!o.paired || rep == 0) {
        if (!o.paired) measure_costs();
        Run f = generate(model, FullDepth{}, ps, B, o.n_new);
        if (truth.empty()) truth = f.out;
        full.keep(std::move(f));
      }
      for (auto& cf : cfgs) {
        auto table = std::make_shared<OracleTable>();
        table->accept = cf.a;
        table->vocab = c.vocab_size;
        table->truth = &truth;
        table->prompts = &ps;
        OracleSpec p;
        p.spec = {layers[cf.li], K, 0.0f, !cf.nb, cf.adaptive};
        p.spec.per_row = cf.per_row;
        p.t = table;
        const bool full_first = rep % 2 == 0;
        const StepCosts now = o.paired ? measure_costs() : unset;
        const auto on_add = [&](request_id id, std::size_t i) { table->prompt_of[id] = i; };
        Run before, after, x;
        if (o.interleave) {
          std::tie(before, x) = generate_interleaved(model, FullDepth{}, p, ps, B, o.n_new, on_add);
        } else {
          if (o.paired && full_first) before = generate(model, FullDepth{}, ps, B, o.n_new);
          x = generate(model, p, ps, B, o.n_new, on_add);
          if (o.paired && !full_first) after = generate(model, FullDepth{}, ps, B, o.n_new);
        }
        if (o.paired) {
          Run& f = full_first || o.interleave ? before : after;
          const double ratio = (double(x.tokens) / x.wall) / (double(f.tokens) / f.wall);
          cf.pairs.push_back(ratio);
          cf.pair_err.push_back(ratio / predict_run(now, cf.li, cf.nb, x) - 1.0);
          full.keep(std::move(f));
        }
        cf.best.keep(std::move(x));
      }
    }
    const double full1 = all.full1;
    const auto& draft = all.draft;
    const auto& verify = all.verify;
    std::printf("  B %d step costs: full %.2f ms", B, full1 * 1e3);
    for (std::size_t li = 0; li < layers.size(); ++li) {
      std::printf(" | L%d draft %.2f ms (%.2f of full), verify k=1..%d:", layers[li],
                  draft[li] * 1e3, draft[li] / full1, K);
      for (int k = 1; k <= K; ++k) std::printf(" %.2f", verify[0][li][std::size_t(k)] / full1);
      if (any_nb) {
        std::printf(", without the bonus row:");
        for (int k = 1; k <= K; ++k) std::printf(" %.2f", verify[1][li][std::size_t(k)] / full1);
      }
    }
    std::printf("\n");
    // Predicted speedup: expected tokens per pass x full depth's seconds per token over the
    // pass's seconds (k draft walks + the verify walk), all from the step costs above.
    auto predict = [&](std::size_t li, double a, int k, bool nb) {
      const double m = nb ? expected_tokens(a, k - 1) : expected_tokens(a, k);
      return m * full1 / (k * draft[li] + verify[nb][li][std::size_t(k)]);
    };

    const std::string load1 = bench::loadavg();
    for (const auto& cf : cfgs) {
      const Run& r = cf.best.run;
      const double x = cf.best.x_over(full, false), xc = cf.best.x_over(full, true);
      const auto& st = r.stats;
      const double dpp = st.verify_passes ? double(st.draft_tokens) / double(st.verify_passes) : 0;
      // Fixed k: the prediction at K; adaptive: at the best k (1 = plain decode's 1.0x).
      double pred = 0;
      int kp = K;
      if (cf.adaptive) {
        pred = 1.0;
        for (int k = 1; k <= K; ++k)
          if (predict(cf.li, cf.a, k, cf.nb) > pred) pred = predict(cf.li, cf.a, kp = k, cf.nb);
      } else {
        pred = predict(cf.li, cf.a, K, cf.nb);
      }
      const double agree = cf.best.agreement(full);
      char kl[32];
      std::snprintf(kl, sizeof kl, "%s%d%s",
                    cf.per_row    ? "adaptR<="
                    : cf.adaptive ? "adapt<="
                                  : "fixed ",
                    K, cf.nb ? " nb" : "");
      const double pred_run = predict_run(all, cf.li, cf.nb, r);
      // Where a run's time went: the draft walks', the verify walks' (the engine's stats) and
      // the rest (scheduling, sampling, accepting, plain decode steps), per verify pass.
      const double per_pass = st.verify_passes ? double(B) / double(st.verify_passes) : 0.0;
      std::printf(
          "%4d %5.2f %3d %-12s %9.2f %7.2f %7.2f %7.2f %8.2f %6.1f %7.1f %7.2f %7.2f %6.1f\n", B,
          cf.a, layers[cf.li], kl, double(r.tokens) / r.wall, x, xc, pred, pred_run,
          100.0 * (x / pred_run - 1.0), 100.0 * st.acceptance_rate(), dpp, st.tokens_per_verify(),
          agree);
      // --paired: median and range of the per-rep pair ratios, and the median of each pair
      // against the prediction from the costs measured just before it (NaN without --paired).
      const double nan = std::numeric_limits<double>::quiet_NaN();
      auto median = [&](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        const std::size_t n = v.size();
        return n == 0 ? nan : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
      };
      const double pmed = median(cf.pairs), perr = median(cf.pair_err);
      const double pmin =
          cf.pairs.empty() ? nan : *std::min_element(cf.pairs.begin(), cf.pairs.end());
      const double pmax =
          cf.pairs.empty() ? nan : *std::max_element(cf.pairs.begin(), cf.pairs.end());
      if (!cf.pairs.empty()) {
        std::printf(
            "%38s paired with its own full-depth run: median %.3f x full (%.3f..%.3f), "
            "err%% median %+.1f; per pair (x full, err%%):",
            "", pmed, pmin, pmax, 100.0 * perr);
        for (std::size_t i = 0; i < cf.pairs.size(); ++i)
          std::printf(" %.3f/%+.1f", cf.pairs[i], 100.0 * cf.pair_err[i]);
        std::printf("\n");
      }
      std::printf(
          "%38s step time per pass: draft walks %.1f ms, verify walk %.1f ms, other %.1f "
          "ms (full depth: %.1f ms a step)\n",
          "", st.draft_time_s * per_pass * 1e3, st.verify_time_s * per_pass * 1e3,
          (r.wall - st.draft_time_s - st.verify_time_s) * per_pass * 1e3,
          full.run.wall / double(full.run.tokens) * B * 1e3);
      if (csv)
        std::fprintf(csv,
                     "%d,%.2f,%d,%s,%d,%.3f,%.4f,%.4f,%.4f,%.4f,%.4f,%.3f,%.3f,%.2f,%.3f,%.3f,%.3f,"
                     "%d,%d,%d,%zu,%s,%s,%.4f,%.4f,%.4f,%.4f\n",
                     B, cf.a, layers[cf.li],
                     cf.per_row    ? (cf.nb ? "adaptive-row-nb" : "adaptive-row")
                     : cf.adaptive ? (cf.nb ? "adaptive-nb" : "adaptive")
                                   : (cf.nb ? "fixed-nb" : "fixed"),
                     kp, double(r.tokens) / r.wall, x, xc, pred, pred_run, st.acceptance_rate(),
                     dpp, st.tokens_per_verify(), agree, full1 * 1e3, draft[cf.li] * 1e3,
                     verify[cf.nb][cf.li][std::size_t(kp)] * 1e3, c.dim, c.n_layers, c.vocab_size,
                     model.draft_vocab().size(), load0.c_str(), load1.c_str(), pmed, pmin, pmax,
                     perr);
    }
    std::printf("%4d  full depth: %.2f tok/s\n", B, double(full.run.tokens) / full.run.wall);
  }
  if (csv) std::fclose(csv);
  std::printf("load at end %s\n", bench::loadavg().c_str());
  return 0;
}

// The model as the options say: --dtype converts the matrices; --draft-vocab N keeps the
// first N ids of --draft-vocab-file's ranking, or ids 0..N-1 without one (with oracle
// acceptance only N matters: it sets the draft head's cost).
ModelWeights load(const Options& o) {
  LoadOptions lo;
  if (o.dtype_name == "f32") lo.weights = dtype::f32;
  if (o.dtype_name == "bf16") lo.weights = dtype::bf16;
  if (o.draft_vocab > 0) {
    if (!o.draft_vocab_file.empty()) {
      lo.draft_vocab = draft_vocab_from_ranking(read_token_ranking(o.draft_vocab_file),
                                                std::size_t(o.draft_vocab), "--draft-vocab");
    } else {
      for (int i = 0; i < o.draft_vocab; ++i) lo.draft_vocab.push_back(i);
    }
  }
  return load_model(o.model, lo);
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  CpuBackend be(o.threads);
  Model model(be, load(o));
  if (!o.oracle.empty()) return oracle_main(o, model);
  const Tokenizer tok = Tokenizer::load(o.model + "/tokenizer.json", model.config().vocab_size);
  const auto ps = held_out_prompts(o, model, tok);
  const std::string load0 = bench::loadavg();
  std::printf("eexit-bench-spec: %s, %d layers, exits after", o.model.c_str(),
              model.config().n_layers);
  for (int l : model.exit_layers()) std::printf(" %d", l);
  std::printf("; %d prompts x %d tokens, %d new, greedy; threads %u; reps %d; load %s\n",
              o.n_prompts, o.prompt_len, o.n_new, o.threads, o.reps, load0.c_str());

  // Step costs first: they explain the ratios below.
  std::printf("\nstep costs (LayerWalk alone, context 64, %s time, min of %d):\n",
              cost_clock_wall ? "wall" : "CPU", o.cost_reps);
  std::printf("  %4s  %9s  %s\n", "B", "full B",
              "full B*r / full B for r = 2 3 4 5 | draft/full | verify of k+1 / full, k = 2 3 4");
  const int n_exits = model.n_exits();
  for (int B : o.batches) {
    const double one = walk_cost(model, B, 1, -1, o.cost_reps);
    std::printf("  %4d  %7.3fms ", B, one * 1e3);
    for (int r : {2, 3, 4, 5}) std::printf(" %5.2f", walk_cost(model, B, r, -1, o.cost_reps) / one);
    std::printf("  |");
    for (int e = 0; e + 1 < n_exits; ++e)
      std::printf(" L%d %4.2f", model.exit_layers()[std::size_t(e)],
                  walk_cost(model, B, 1, e, o.cost_reps) / one);
    std::printf("  |");
    for (int e = 0; e + 1 < n_exits; ++e) {
      std::printf(" L%d", model.exit_layers()[std::size_t(e)]);
      for (int k : {2, 3, 4})
        std::printf(" %4.2f", walk_cost(model, B, k + 1, -1, o.cost_reps,
                                        model.exit_layers()[std::size_t(e)] + 1) /
                                  one);
    }
    std::printf("\n");
  }

  if (o.costs_only) return 0;
  struct Row {
    int B;
    std::string label;
    Best best;
  };
  std::vector<Row> rows;
  for (int B : o.batches) {
    Row full{B, "full", {}};
    std::vector<Row> cfg;
    for (auto& c : o.configs) cfg.push_back({B, c.label(), {}});
    for (int rep = 0; rep < o.reps; ++rep) {
      full.best.keep(generate(model, FullDepth{}, ps, B, o.n_new));
      for (std::size_t i = 0; i < o.configs.size(); ++i) {
        SelfSpeculative<> p;
        p.spec = {o.configs[i].layer, o.configs[i].k, o.configs[i].threshold, o.configs[i].bonus};
        cfg[i].best.keep(generate(model, p, ps, B, o.n_new));
      }
    }
    rows.push_back(std::move(full));
    for (auto& r : cfg) rows.push_back(std::move(r));
  }
  const std::string load1 = bench::loadavg();

  std::printf("\n%4s  %-14s %9s %7s %7s %8s %7s %8s %7s %7s\n", "B", "policy", "tok/s", "x full",
              "x cpu", "agree%", "accept%", "tok/pass", "draft%", "verify%");
  std::FILE* csv = o.csv.empty() ? nullptr : std::fopen(o.csv.c_str(), "w");
  if (csv)
    std::fprintf(csv,
                 "batch,policy,tok_s,x_full,x_full_cpu,agreement,acceptance,tokens_per_verify,"
                 "draft_share,verify_share,decode_tokens,reps,load_start,load_end\n");
  for (const auto& r : rows) {
    const Row* full = nullptr;
    for (const auto& f : rows)
      if (f.B == r.B && f.label == "full") full = &f;
    const Run& run = r.best.run;
    const double tps = double(run.tokens) / run.wall;
    const double x = r.best.x_over(full->best, false), xc = r.best.x_over(full->best, true);
    const auto& st = run.stats;
    const double agree = r.best.agreement(full->best);
    const double spec_s = st.draft_time_s + st.verify_time_s;
    std::printf("%4d  %-14s %9.1f %7.2f %7.2f %8.2f %7.1f %8.2f %7.1f %7.1f\n", r.B,
                r.label.c_str(), tps, x, xc, agree, 100.0 * st.acceptance_rate(),
                st.tokens_per_verify(), spec_s > 0 ? 100.0 * st.draft_time_s / run.wall : 0.0,
                spec_s > 0 ? 100.0 * st.verify_time_s / run.wall : 0.0);
    if (csv)
      std::fprintf(csv, "%d,%s,%.2f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%lld,%d,%s,%s\n", r.B,
                   r.label.c_str(), tps, x, xc, agree, st.acceptance_rate(), st.tokens_per_verify(),
                   st.draft_time_s / run.wall, st.verify_time_s / run.wall, (long long)run.tokens,
                   o.reps, load0.c_str(), load1.c_str());
  }
  if (csv) std::fclose(csv);
  std::printf("load at end %s\n", load1.c_str());
  return 0;
}
