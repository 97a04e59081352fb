// eexit-bench-mechanics: how much of early exit's arithmetic speed-up the engine's
// mechanics (row compaction, exit heads over leaving rows, the KV fill, the late rows of a
// deferred fill, scheduling, sampling) deliver, independent of any model's quality.
//
//   eexit-bench-mechanics MODEL_DIR [--batches 1,16] [--prompt 8] [--new 32] [--reps 3]
//                         [--threads 1] [--fills exit-state,deferred] [--csv FILE]
//
// MODEL_DIR: a random-weight Llama of the 110M shape (benchmarks/run_mechanics.sh makes it
//   with tools/make_random_model.py: dim 768, 12 layers, 12 heads, hidden 2048, vocab
//   32000, f32); shared exit heads after layers 3, 6 and 9 are added here.
// Exits are SCRIPTED (random weights have no confidence): a hash of (request id, decode
//   step) sends each row out after layer 3 (30%), 6 (30%), 9 (20%) or at full depth (20%),
//   deterministic per row, the same in every run. The decision needs no exit head (it costs
//   nothing); a leaving row's head runs over the leaving rows only. Batch rule: split.
// Runs: B requests of --prompt random ids, --new tokens each, greedy, ignore_eos; step 1 is
//   the prefill and is not counted. Full depth and the scripted policy (per fill) alternate,
//   --reps times; each keeps its fastest run (the machine is shared).
// Figures, per B and fill:
//   achieved = full depth's decode wall time / the scripted run's (tokens are the same count)
//   ideal    = the same ratio from the cost model's arithmetic: every op the walk ran (layer
//              over n rows, head over n rows, fill of n rows) priced at the mean time of that
//              op at that row count over all timed runs of this B (both policies, every rep),
//              summed per run. It counts the layers and heads saved and the fill paid, and
//              nothing of what the mechanics add around them.
//   efficiency = achieved / ideal (target >= 85%).
// The walk times each op (policy_observes_costs), in the full-depth runs too, so both sides
// pay the same timing overhead.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "eexit/backend/cpu.hpp"
#include "eexit/cache/paged.hpp"
#include "eexit/engine/engine.hpp"
#include "eexit/model/llama.hpp"
#include "eexit/model/load.hpp"
#include "eexit/policy/cost_model.hpp"
#include "eexit/policy/fill.hpp"

using namespace eexit;
using clk = std::chrono::steady_clock;

namespace {

using Model = LlamaModel<CpuBackend>;
using Cache = PagedCache<CpuBackend, 16>;

std::uint64_t mix(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// The exit point a row leaves at: 0, 1, 2 (after layers 3, 6, 9) or 3 = full depth.
int scripted_exit(std::int64_t request, std::int32_t step) {
  const double u = double(mix(std::uint64_t(request) * 1315423911ull + std::uint64_t(step)) >> 11) /
                   double(1ull << 53);
  return u < 0.3 ? 0 : u < 0.6 ? 1 : u < 0.8 ? 2 : 3;
}

// The scripted policy (split), or full depth when `exits` is off; records the walk's op
// timings while `recording`.
struct Scripted {
  bool exits = true;
  AnyFill fill{};
  bool recording = false;
  std::shared_ptr<std::vector<OpTiming>> ops = std::make_shared<std::vector<OpTiming>>();

  std::string_view name() const { return exits ? "scripted" : "full"; }
  bool evaluates_exits() const { return exits; }
  ExitNeeds needs(int) const { return {}; }
  void decide(const ExitRows& r, std::span<std::uint8_t> conf, std::span<std::uint8_t> leave) {
    for (std::size_t i = 0; i < r.n; ++i) {
      conf[i] = scripted_exit(r.request[i], r.step[i]) <= r.exit;
      leave[i] = conf[i];
    }
  }
  bool wants_timings() const { return true; }
  void observe(const WalkTimings& t) {
    if (recording) ops->insert(ops->end(), t.ops.begin(), t.ops.end());
  }
};
static_assert(policy<Scripted>);

struct Run {
  double decode_s = 0;
  std::int64_t tokens = 0;
  std::vector<OpTiming> ops;
  EngineStats stats;
};

Run run(Model& model, Scripted pol, int B, int prompt_len, int n_new) {
  const auto& c = model.config();
  const int blocks = B * ((prompt_len + n_new + 15) / 16 + 1);
  Cache cache(model.backend(), c, blocks);
  EngineOptions eo;
  eo.max_running = B;
  eo.max_batch_tokens = B * prompt_len;
  pol.ops = std::make_shared<std::vector<OpTiming>>();
  Engine<Scripted, Cache> engine(model, cache, pol, eo);
  for (int b = 0; b < B; ++b) {
    GenerateRequest r;
    for (int j = 0; j < prompt_len; ++j)
      r.prompt.push_back(
          std::int32_t(mix(std::uint64_t(b * 1000 + j)) % std::uint64_t(c.vocab_size)));
    r.max_tokens = n_new;
    r.ignore_eos = true;
    engine.add_request(r);
  }
  engine.step();  // the prefill, every request's first token
  const std::int64_t first = engine.stats().generated_tokens;
  engine.policy().recording = true;
  const auto t0 = clk::now();
  while (engine.has_work()) engine.step();
  Run out;
  out.decode_s = std::chrono::duration<double>(clk::now() - t0).count();
  out.tokens = engine.stats().generated_tokens - first;
  out.ops = *engine.policy().ops;
  out.stats = engine.stats();
  return out;
}

// Mean seconds per (op kind, index, rows); the layers are one op (Llama layers are alike).
using OpKey = std::tuple<int, int, std::size_t>;
OpKey key(const OpTiming& t) {
  return {int(t.kind), t.kind == op_kind::layer ? 0 : t.index, t.rows};
}
struct Prices {
  std::map<OpKey, std::pair<double, std::int64_t>> sum;
  void add(const std::vector<OpTiming>& ops) {
    for (const auto& t : ops) {
      auto& s = sum[key(t)];
      s.first += t.seconds;
      ++s.second;
    }
  }
  double price(const std::vector<OpTiming>& ops) const {
    double total = 0;
    for (const auto& t : ops) {
      const auto& s = sum.at(key(t));
      total += s.first / double(s.second);
    }
    return total;
  }
};

std::string loadavg() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

template <class T>
std::vector<T> parse_list(const std::string& s) {
  std::vector<T> v;
  std::stringstream ss(s);
  for (std::string t; std::getline(ss, t, ',');) {
    if constexpr (std::is_same_v<T, std::string>)
      v.push_back(t);
    else
      v.push_back(T(std::stod(t)));
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir, csv;
  std::vector<int> batches{1, 16};
  std::vector<std::string> fills{"exit-state", "deferred"};
  int prompt_len = 8, n_new = 32, reps = 3;
  unsigned threads = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "missing value for %s\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--batches")
      batches = parse_list<int>(val());
    else if (a == "--prompt")
      prompt_len = std::stoi(val());
    else if (a == "--new")
      n_new = std::stoi(val());
    else if (a == "--reps")
      reps = std::stoi(val());
    else if (a == "--threads")
      threads = unsigned(std::stoul(val()));
    else if (a == "--fills")
      fills = parse_list<std::string>(val());
    else if (a == "--csv")
      csv = val();
    else if (a[0] == '-') {
      std::fprintf(stderr,
                   "usage: eexit-bench-mechanics MODEL_DIR [--batches 1,16] [--prompt 8] "
                   "[--new 32] [--reps 3] [--threads 1] [--fills exit-state,deferred] "
                   "[--csv FILE]\n");
      return 2;
    } else
      model_dir = a;
  }
  if (model_dir.empty() || reps < 1 || n_new < 2 || prompt_len < 1) {
    std::fprintf(stderr, "MODEL_DIR is required (and --reps >= 1, --new >= 2)\n");
    return 2;
  }
  ModelWeights w = load_model(model_dir);
  w.config.early_exit.exit_layers = {3, 6, 9};
  CpuBackend be(threads);
  Model model(be, std::move(w));
  const auto& c = model.config();
  const std::string load_start = loadavg();
  std::printf(
      "eexit-bench-mechanics: %s (dim %d, %d layers, vocab %d), shared exits after layers 3, "
      "6, 9; scripted exits 30/30/20/20%%, split; %d-token prompts, %d new tokens, threads %u, "
      "best of %d interleaved; load average at start %s\n\n",
      model_dir.c_str(), c.dim, c.n_layers, c.vocab_size, prompt_len, n_new, threads, reps,
      load_start.c_str());
  std::printf("%3s %-10s | %9s %9s | %8s %8s %6s | %7s | %6s %6s\n", "B", "fill", "full tok/s",
              "tok/s", "achieved", "ideal", "eff", "layers", "fill s", "defer");
  std::ofstream out;
  if (!csv.empty()) {
    out.open(csv);
    out << "batch,fill,full_tok_s,tok_s,achieved,ideal,efficiency,layers_frac,"
           "fill_time_s,deferred_rows,load_start\n";
  }
  for (int B : batches) {
    Run full_best;
    std::map<std::string, Run> best;
    Prices prices;
    for (int r = 0; r < reps; ++r) {
      Scripted f;
      f.exits = false;
      Run fr = run(model, f, B, prompt_len, n_new);
      prices.add(fr.ops);
      if (r == 0 || fr.decode_s < full_best.decode_s) full_best = std::move(fr);
      for (const auto& fill : fills) {
        Scripted s;
        s.fill = AnyFill::from_name(fill);
        Run sr = run(model, s, B, prompt_len, n_new);
        prices.add(sr.ops);
        auto it = best.find(fill);
        if (it == best.end() || sr.decode_s < it->second.decode_s) best[fill] = std::move(sr);
      }
    }
    const double full_model = prices.price(full_best.ops);
    for (const auto& fill : fills) {
      const Run& s = best[fill];
      const double achieved = full_best.decode_s / s.decode_s;
      const double ideal = full_model / prices.price(s.ops);
      const double layers = double(s.stats.decode_layers_computed) /
                            double(std::max<std::int64_t>(1, s.stats.decode_layers_full));
      std::printf("%3d %-10s | %9.1f %9.1f | %8.3f %8.3f %5.1f%% | %6.1f%% | %6.3f %6lld\n", B,
                  fill.c_str(), double(full_best.tokens) / full_best.decode_s,
                  double(s.tokens) / s.decode_s, achieved, ideal, 100 * achieved / ideal,
                  100 * layers, s.stats.fill_time_s, (long long)s.stats.deferred_rows);
      if (out)
        out << B << ',' << fill << ',' << double(full_best.tokens) / full_best.decode_s << ','
            << double(s.tokens) / s.decode_s << ',' << achieved << ',' << ideal << ','
            << achieved / ideal << ',' << layers << ',' << s.stats.fill_time_s << ','
            << s.stats.deferred_rows << ',' << load_start << '\n';
    }
    std::fflush(stdout);
  }
  std::printf("\nload average at end %s\n", loadavg().c_str());
  return 0;
}
