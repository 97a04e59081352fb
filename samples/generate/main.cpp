// eexit-generate: run one or more prompts through the engine on the CPU, with or without
// early exit, and stream the text, or print one JSON object per request with --json.
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <variant>

#include "../common/args.hpp"
#include "../common/default_model.hpp"
#include "../common/device.hpp"
#include "../common/draft_vocab.hpp"
#include "eexit/eexit.hpp"

namespace {

constexpr const char* kHelp = R"(usage: eexit-generate [--model PATH] --prompt TEXT [options]

Generates text with an eexit model on the CPU (or a GPU, --device cuda), with early
exit. Several --prompt flags run as one continuously batched workload.

  --model PATH            a HF directory (config.json + safetensors), a .safetensors file, a
                          llama2.c .bin checkpoint or a GGUF file (default: the embedded
                          early-exit model: @DEFAULT_MODEL@)
  --tokenizer PATH        tokenizer.json, llama2.c tokenizer.bin, a GGUF file, or a directory;
                          default: the GGUF model itself, else tokenizer.json / tokenizer.bin /
                          tok<vocab>.bin beside the model
  --exit-layers L[,M...]  add shared-head exit points (final norm + LM head) after these
                          layers (0-based, increasing, below the last layer) to any checkpoint
  --prompt TEXT           a prompt (repeatable); "" starts from BOS alone
  --max-tokens N          tokens to generate per prompt (default 256)
  --policy P              @POLICIES@ (default: all-confident when the
                          model has exit points, else full)
  --measure M             @MEASURES@ (default: the
                          model's config.json early_exit.measure, else max-prob)
  --threshold X[,Y...]    one threshold for every exit point, or one per exit point
                          (default: the model's config.json early_exit.thresholds, else 0.9)
  --calm                  CALM's decaying threshold over the decode position (tau 4)
  --draft-exit L          self-spec: draft from the exit point after layer L (default: the
                          model's first exit point)
  --draft-tokens K        self-spec: at most K draft tokens per verify pass (default @K@)
  --draft-threshold X     self-spec: a row stops drafting at a draft whose confidence
                          (--measure) is under X (default @DRAFT_THRESHOLD@; 0 = always K)
  --draft-adaptive        self-spec: draft per step the k <= K that the measured costs and
                          acceptance predict to be fastest (0 where rows are compute-bound)
  --draft-per-row         with --draft-adaptive: then lower k row by row where a row's own
                          drafts are rarely kept (default: one k for all rows of a step)
@DRAFT_VOCAB@  --rank-vocab CORPUS     count the model tokenizer's tokens over the text file CORPUS and
                          print them most frequent first ("id count" lines: a ranking for
                          --draft-vocab-file); no --prompt needed, nothing is generated
  --fill F                @FILLS@: how the K/V of the layers an exited
                          token skipped are written (default exit-state: projected from the
                          exit state; deferred: the skipped layers run for real in the next step)
  --compare-full-depth    run the same prompts again at full depth and print the ratio
  --temperature T         0 = greedy (default 0)
  --top-k K               keep the K most likely tokens (default 0 = off)
  --top-p P               nucleus sampling, (0, 1] (default 1 = off)
  --min-p P               drop tokens below P x the top probability (default 0 = off)
  --repetition-penalty R  > 0, 1 = off (default 1)
  --presence-penalty X    [-2, 2] (default 0)
  --frequency-penalty X   [-2, 2] (default 0)
  --seed S                sampling seed (default: fixed per request)
  --stop TEXT             stop string (repeatable)
  --ignore-eos            keep generating past EOS
  --threads N             CPU threads (default: all cores)
  --dtype D               auto | f32 | bf16 | f16 | q8_0 | q4_0: precision the weight
                          matrices are kept and computed in (default auto: as stored in
                          the file; q8_0 / q4_0 quantize matrices whose rows are whole
                          32-weight blocks, others stay as they are)
  --max-batch-tokens N    rows per engine step (default 256)
  --kv-blocks N           KV cache blocks of 16 tokens (default: enough for every prompt)
  --no-prefix-cache       compute every prompt in full (default: a prompt reuses the cached
                          KV blocks of a prefix an earlier prompt computed)
  --json                  print one JSON object per request instead of streaming text
  --help                  this text
)";

using namespace eexit;
using samples::Args;
using samples::usage_error;
template <class Backend>
using Cache = PagedCache<Backend, 16>;

std::string find_tokenizer(const std::string& model, int vocab) {
  namespace fs = std::filesystem;
  if (gguf::has_magic(model)) return model;  // a GGUF file carries its tokenizer
  fs::path dir = fs::is_directory(model) ? fs::path(model) : fs::path(model).parent_path();
  for (auto name : {std::string("tokenizer.json"), std::string("tokenizer.bin"),
                    "tok" + std::to_string(vocab) + ".bin"})
    if (fs::exists(dir / name)) return (dir / name).string();
  throw eexit::error(model, "no tokenizer found beside the model; pass --tokenizer");
}

struct RunResult {
  std::vector<nlohmann::json> per_request;
  EngineStats stats;
  std::optional<AdaptiveStats> adaptive;  // --policy adaptive: its decisions
  double seconds = 0;
  int failures = 0;
};

double mean_exit_layer(const std::vector<std::int64_t>& hist, std::span<const int> layers) {
  double n = 0, sum = 0;
  for (std::size_t e = 0; e < hist.size(); ++e) {
    n += double(hist[e]);
    sum += double(hist[e]) * layers[e];
  }
  return n > 0 ? sum / n : 0.0;
}

template <class Policy, class Backend>
RunResult run(LlamaModel<Backend>& model, Backend& be, const Tokenizer& tok,
              const std::vector<GenerateRequest>& reqs, Policy policy, EngineOptions opt,
              std::int32_t blocks, dtype kv, bool stream) {
  Cache<Backend> cache(be, model.config(), blocks, kv);
  Engine<Policy, Cache<Backend>> engine(model, cache, std::move(policy), opt);
  engine.set_tokenizer(&tok);
  std::vector<request_id> ids;
  std::map<request_id, std::size_t> index;  // id -> position in reqs
  for (auto& r : reqs) {
    ids.push_back(engine.add_request(r));
    index[ids.back()] = ids.size() - 1;
  }
  std::map<request_id, nlohmann::json> results;
  RunResult res;
  const auto exit_layers = model.exit_layers();
  const auto t0 = std::chrono::steady_clock::now();
  while (engine.has_work()) {
    for (auto& o : engine.step()) {
      auto& j = results[o.id];
      // An object from the start: a request can finish (error, max_tokens 0) with no token.
      if (j.is_null()) j = nlohmann::json::object();
      for (auto& t : o.tokens) {
        j["token_ids"].push_back(t.token);
        j["exit_layers"].push_back(t.exit_layer);
      }
      j["text"] = j.value("text", std::string()) + o.text;
      if (stream) std::cout << o.text << std::flush;
      if (!o.finished()) continue;
      const auto& st = o.stats;
      j["finish_reason"] = std::string(finish_reason_name(o.finish));
      if (o.finish == finish_reason::error) {
        j["error"] = o.error;
        ++res.failures;
      }
      // The engine ends a request the whole KV cache cannot hold with "length", like a
      // context limit; short of max_tokens and of the context, that is the only cause.
      const std::size_t i = index[o.id];
      if (o.finish == finish_reason::length && st.generated_tokens < reqs[i].max_tokens &&
          st.prompt_tokens + st.generated_tokens < model.config().max_seq_len)
        std::cerr << "eexit-generate: prompt " << i + 1 << " stopped after " << st.generated_tokens
                  << " of " << reqs[i].max_tokens << " tokens: the KV cache (--kv-blocks " << blocks
                  << " = " << cache.capacity_tokens() << " tokens) cannot hold more of it\n";
      j["stats"] = {
          {"prompt_tokens", st.prompt_tokens},
          {"generated_tokens", st.generated_tokens},
          {"time_to_first_token_s", st.time_to_first_token_s},
          {"total_time_s", st.total_time_s},
          {"tokens_per_s", st.total_time_s > 0 ? st.generated_tokens / st.total_time_s : 0.0},
          {"mean_exit_layer", mean_exit_layer(st.exit_histogram, exit_layers)},
          {"exit_histogram", st.exit_histogram},
          {"layers_computed", st.layers_computed},
          {"preemptions", st.preemptions},
          {"cached_tokens", st.cached_tokens},
          {"verify_passes", st.verify_passes},
          {"draft_tokens", st.draft_tokens},
          {"accepted_drafts", st.accepted_drafts},
          {"acceptance_rate", st.draft_tokens ? double(st.accepted_drafts) / st.draft_tokens : 0.0},
          {"tokens_per_verify",
           st.verify_passes ? double(st.speculative_tokens) / st.verify_passes : 0.0}};
    }
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  res.stats = engine.stats();
  if constexpr (requires { engine.policy().rule.r; })
    if (const auto* a = std::get_if<AdaptiveRule>(&engine.policy().rule.r)) res.adaptive = a->stats;
  for (auto id : ids) {
    auto& j = results[id];
    if (!j.contains("token_ids")) j["token_ids"] = j["exit_layers"] = nlohmann::json::array();
    res.per_request.push_back(std::move(j));
  }
  return res;
}

// --rank-vocab: the tokens of the text file at path, most frequent first, as "id count"
// lines on stdout (a ranking for --draft-vocab-file). Exit code for main.
int rank_vocab(const Tokenizer& tok, int vocab, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw error(path, "cannot open the corpus");
  // Whole, as one text: the tokens are the ones a prompt of this text would get.
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::int64_t> counts(std::size_t(vocab), 0);
  std::int64_t total = 0;
  for (const int t : tok.encode(text, false)) {
    ++counts[std::size_t(t)];
    ++total;
  }
  const auto ranking = rank_by_count(counts);
  std::cout << "# eexit-generate --rank-vocab " << path << ": " << total << " tokens, "
            << ranking.size() << " distinct of " << vocab << "; id count, most frequent first\n";
  for (const auto& [t, c] : ranking) std::cout << t << ' ' << c << '\n';
  return 0;
}

// kHelp with the policy and measure lists of policy/registry.hpp and the default model's
// search list in place.
std::string help_text() {
  std::string h = kHelp;
  for (auto [key, value] :
       {std::pair{std::string_view("@POLICIES@"), policy_names_help()},
        std::pair{std::string_view("@MEASURES@"), measure_names_help()},
        std::pair{std::string_view("@FILLS@"), fill_names_help()},
        std::pair{std::string_view("@K@"), std::to_string(Speculation{}.max_draft)},
        std::pair{std::string_view("@DRAFT_THRESHOLD@"),
                  (std::ostringstream() << Speculation{}.threshold).str()},
        std::pair{std::string_view("@DRAFT_VOCAB@"), std::string(samples::kDraftVocabHelp)},
        std::pair{std::string_view("@DEFAULT_MODEL@"),
                  samples::default_model_help("\n                          ")}})
    h.replace(h.find(key), key.size(), value);
  return h;
}

}  // namespace

int main(int argc, char** argv) {
  std::optional<Args> args;
  GenerateRequest base;
  std::vector<float> thresholds;
  LoadOptions load_opt;
  samples::DeviceChoice device;
  Speculation spec;
  try {
    args.emplace(argc, argv,
                 std::set<std::string>{"model",
                                       "tokenizer",
                                       "prompt",
                                       "max-tokens",
                                       "temperature",
                                       "top-k",
                                       "top-p",
                                       "min-p",
                                       "repetition-penalty",
                                       "presence-penalty",
                                       "frequency-penalty",
                                       "seed",
                                       "stop",
                                       "threads",
                                       "max-batch-tokens",
                                       "kv-blocks",
                                       "kv-dtype",
                                       "policy",
                                       "measure",
                                       "threshold",
                                       "exit-layers",
                                       "dtype",
                                       "device",
                                       "gpu-memory-fraction",
                                       "draft-exit",
                                       "draft-tokens",
                                       "draft-threshold",
                                       "draft-vocab",
                                       "draft-vocab-file",
                                       "rank-vocab",
                                       "fill"},
                 std::set<std::string>{"json", "help", "ignore-eos", "calm", "compare-full-depth",
                                       "draft-adaptive", "draft-per-row", "no-prefix-cache"});
    if (args->has("help")) {
      std::cout << help_text() << samples::kDeviceHelp;
      return 0;
    }
    base.max_tokens = std::int32_t(args->integer("max-tokens", 256, 0, 1 << 20));
    auto& sp = base.sampling;
    sp.temperature = float(args->real("temperature", 0.0, 0.0, 100.0));
    sp.top_k = int(args->integer("top-k", 0, 0, 1 << 24));
    sp.top_p = float(args->real("top-p", 1.0, 1e-9, 1.0));
    sp.min_p = float(args->real("min-p", 0.0, 0.0, 1.0));
    sp.repetition_penalty = float(args->real("repetition-penalty", 1.0, 1e-6, 100.0));
    sp.presence_penalty = float(args->real("presence-penalty", 0.0, -2.0, 2.0));
    sp.frequency_penalty = float(args->real("frequency-penalty", 0.0, -2.0, 2.0));
    if (args->has("seed"))
      sp.seed = std::uint64_t(args->integer("seed", 0, 0, std::numeric_limits<long long>::max()));
    base.stop = args->all("stop");
    base.ignore_eos = args->has("ignore-eos");
    args->integer("threads", 0, 0, 1024);
    args->integer("max-batch-tokens", 256, 1, 1 << 20);
    args->integer("kv-blocks", 0, 1, 1 << 26);
    if (args->has("dtype")) {
      const auto d = args->str("dtype");
      if (d == "f32")
        load_opt.weights = dtype::f32;
      else if (d == "bf16")
        load_opt.weights = dtype::bf16;
      else if (d == "f16")
        load_opt.weights = dtype::f16;
      else if (d == "q8_0")
        load_opt.weights = dtype::q8_0;
      else if (d == "q4_0")
        load_opt.weights = dtype::q4_0;
      else if (d != "auto")
        throw usage_error("--dtype: '" + d + "' is not one of auto, f32, bf16, f16, q8_0, q4_0");
    }
    for (const char* flag : {"policy", "measure", "fill"}) {
      if (!args->has(flag)) continue;
      try {
        const std::string_view f = flag;
        f == "policy"    ? void(rule_from_name(args->str(flag)))
        : f == "measure" ? void(measure_from_name(args->str(flag)))
                         : void(fill_from_name(args->str(flag)));
      } catch (const eexit::error& e) {
        throw usage_error(std::string("--") + e.what());
      }
    }
    if (args->has("threshold")) {
      std::stringstream ss(args->str("threshold"));
      for (std::string item; std::getline(ss, item, ',');)
        thresholds.push_back(float(Args::parse_real("threshold", item, -1e6, 1e6)));
    }
    if (args->has("exit-layers")) {
      try {
        load_opt.exit_layers = parse_exit_layers(args->str("exit-layers"), "--exit-layers");
      } catch (const eexit::error& e) {
        throw usage_error(e.what());
      }
    }
    spec.draft_layer = int(args->integer("draft-exit", -1, -1, 1 << 20));
    spec.max_draft = int(args->integer("draft-tokens", spec.max_draft, 0, 64));
    spec.threshold = float(args->real("draft-threshold", spec.threshold, -1e6, 1e6));
    spec.adaptive = args->has("draft-adaptive");
    spec.per_row = args->has("draft-per-row");
    args->integer("draft-vocab", 0, 1, 1 << 24);
    if (!args->has("prompt") && !args->has("rank-vocab")) throw usage_error("--prompt is required");
    device = samples::parse_device(*args);
  } catch (const usage_error& e) {
    std::cerr << "eexit-generate: " << e.what() << "\n(see eexit-generate --help)\n";
    return 2;
  }
  const bool json = args->has("json");
  try {
    return samples::with_backend(
        device, unsigned(args->integer("threads", 0, 0, 1024)), [&]<class Backend>(Backend& be) {
          const std::string model_path =
              args->has("model") ? args->str("model") : samples::default_model(argv[0]);
          load_opt.draft_vocab = samples::draft_vocab_option(*args, model_path);
          LlamaModel<Backend> model(be, load_model(model_path, load_opt));
          const auto& cfg = model.config();
          const auto tok =
              Tokenizer::load(args->has("tokenizer") ? args->str("tokenizer")
                                                     : find_tokenizer(model_path, cfg.vocab_size),
                              cfg.vocab_size);
          if (args->has("rank-vocab"))
            return rank_vocab(tok, cfg.vocab_size, args->str("rank-vocab"));
          const bool has_exits = model.n_exits() > 1;
          const std::string policy = args->str(
              "policy",
              std::string(has_exits ? ExitWhenAllConfident{}.name() : NeverExit{}.name()));
          const bool early_exit = rule_from_name(policy).evaluates_exits();
          const bool self_spec = rule_from_name(policy).speculation().enabled();
          if ((early_exit || self_spec) && !has_exits)
            throw eexit::error(model_path,
                               "the model has no exit points (config.json early_exit); "
                               "use --policy full");
          Thresholds thr;
          thr.values = !thresholds.empty()                  ? thresholds
                       : !cfg.early_exit.thresholds.empty() ? cfg.early_exit.thresholds
                                                            : std::vector<float>{0.9f};
          thr.calm_decay = args->has("calm");
          const std::string measure = args->str("measure", cfg.early_exit.measure);

          std::vector<GenerateRequest> reqs;
          std::int64_t tokens_needed = 0;
          for (const auto& p : args->all("prompt")) {
            GenerateRequest r = base;
            r.prompt.clear();
            for (int id : tok.encode(p, true)) r.prompt.push_back(id);
            if (r.prompt.empty()) r.prompt.push_back(cfg.bos_id);
            tokens_needed += std::int64_t(r.prompt.size()) + r.max_tokens;
            reqs.push_back(std::move(r));
          }
          const auto blocks = samples::kv_blocks(
              be, device, cfg,
              std::int32_t(args->integer(
                  "kv-blocks",
                  std::min<long long>(tokens_needed / 16 + 2 * std::int64_t(reqs.size()) + 1,
                                      1 << 20),
                  1, 1 << 26)));
          EngineOptions opt;
          opt.max_batch_tokens = std::int32_t(args->integer("max-batch-tokens", 256, 1, 1 << 20));
          opt.prefix_cache = !args->has("no-prefix-cache");

          const bool stream = !json && reqs.size() == 1;
          auto run_policy = [&](bool streaming) {
            return run(
                model, be, tok, reqs,
                make_runtime_policy(policy, measure, thr, spec, args->str("fill", "exit-state")),
                opt, blocks, device.kv, streaming);
          };
          RunResult res = run_policy(stream);

          for (std::size_t i = 0; i < res.per_request.size(); ++i) {
            const auto& j = res.per_request[i];
            if (json) {
              std::cout << j.dump() << "\n";
            } else if (!stream) {
              std::cout << "--- prompt " << i + 1 << " (" << j.value("finish_reason", "") << ")\n"
                        << j.value("text", "") << "\n";
            }
          }
          if (!json) {
            const auto& st = res.stats;
            const double tps = res.seconds > 0 ? double(st.generated_tokens) / res.seconds : 0.0;
            std::cerr << std::fixed << std::setprecision(2) << "\n[eexit] policy " << policy;
            if (early_exit) std::cerr << " (" << measure << ")";
            std::cerr << ": " << st.generated_tokens << " tokens in " << res.seconds << " s, "
                      << tps << " tokens/s, mean exit layer "
                      << mean_exit_layer(st.exit_histogram, model.exit_layers()) << " of "
                      << cfg.n_layers - 1 << ", layers computed "
                      << (st.decode_layers_full ? 100.0 * double(st.decode_layers_computed) /
                                                      double(st.decode_layers_full)
                                                : 100.0)
                      << "% of full depth\n";
            if (st.verify_passes)
              std::cerr << "[eexit] self-spec: " << st.verify_passes << " verify passes, "
                        << st.tokens_per_verify() << " tokens per pass, "
                        << 100.0 * st.acceptance_rate() << "% of " << st.draft_tokens
                        << " drafts accepted; draft " << st.draft_time_s << " s, verify "
                        << st.verify_time_s << " s\n";
            if (st.exit_heads || st.deferred_rows)
              std::cerr << "[eexit] exit heads computed at " << st.exit_heads << " exit points ("
                        << st.exit_head_rows << " rows); deferred fill: " << st.deferred_rows
                        << " rows, " << st.deferred_layers << " layers\n";
            if (st.prefix_cached_tokens)
              std::cerr << "[eexit] prefix cache: " << st.prefix_cached_tokens << " of "
                        << st.prefix_cached_tokens + st.prompt_tokens << " prompt tokens cached ("
                        << 100.0 * st.prefix_hit_rate() << "%)\n";
            if (res.adaptive)
              std::cerr << "[eexit] adaptive: " << res.adaptive->exits_evaluated
                        << " exit points evaluated (" << res.adaptive->chose_all
                        << " all-confident, " << res.adaptive->chose_split << " split, "
                        << res.adaptive->explored << " explored), " << res.adaptive->exits_skipped
                        << " skipped as not paying\n";
            if (args->has("compare-full-depth")) {
              // Alternate full depth and the policy three times and keep each one's best time, so
              // that a burst of other load on the machine does not decide the ratio.
              RunResult full =
                  run(model, be, tok, reqs, FullDepth{}, opt, blocks, device.kv, false);
              double best = res.seconds;
              for (int round = 0; round < 2; ++round) {
                best = std::min(best, run_policy(false).seconds);
                full.seconds = std::min(
                    full.seconds,
                    run(model, be, tok, reqs, FullDepth{}, opt, blocks, device.kv, false).seconds);
              }
              const double etps = best > 0 ? double(st.generated_tokens) / best : 0.0;
              const double ftps =
                  full.seconds > 0 ? double(full.stats.generated_tokens) / full.seconds : 0;
              std::size_t same = 0, total = 0;
              for (std::size_t i = 0; i < reqs.size(); ++i) {
                const auto& a = res.per_request[i]["token_ids"];
                const auto& b = full.per_request[i]["token_ids"];
                for (std::size_t k = 0; k < std::min(a.size(), b.size()); ++k) same += a[k] == b[k];
                total += b.size();
              }
              std::cerr << "[eexit] best of 3 alternating runs: " << policy << " " << etps
                        << " tokens/s, full depth " << ftps << " tokens/s -> "
                        << (ftps > 0 ? etps / ftps : 0.0) << "x full depth; "
                        << (total ? 100.0 * double(same) / double(total) : 100.0)
                        << "% of tokens equal to full depth's\n";
            }
          }
          return res.failures ? 1 : 0;
        });
  } catch (const std::exception& e) {
    std::cerr << "eexit-generate: " << e.what() << "\n";
    return 1;
  }
}
