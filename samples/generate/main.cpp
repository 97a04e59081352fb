// eexit-generate: run one or more prompts through the engine on the CPU and stream the
// text, or print one JSON object per request with --json.
#include <chrono>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "../common/args.hpp"
#include "eexit/eexit.hpp"

namespace {

constexpr const char* kHelp = R"(usage: eexit-generate --model PATH --prompt TEXT [options]

Generates text with an eexit model on the CPU. Several --prompt flags run as one
continuously batched workload.

  --model PATH            model: a HF directory (config.json + safetensors), a .safetensors
                          file, or a llama2.c .bin checkpoint (required)
  --tokenizer PATH        tokenizer.json, llama2.c tokenizer.bin, or a directory; default:
                          tokenizer.json / tokenizer.bin / tok<vocab>.bin beside the model
  --prompt TEXT           a prompt (repeatable); "" starts from BOS alone
  --max-tokens N          tokens to generate per prompt (default 256)
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
  --max-batch-tokens N    rows per engine step (default 256)
  --kv-blocks N           KV cache blocks of 16 tokens (default: enough for every prompt)
  --json                  print one JSON object per request instead of streaming text
  --help                  this text
)";

std::string find_tokenizer(const std::string& model, int vocab) {
  namespace fs = std::filesystem;
  fs::path dir = fs::is_directory(model) ? fs::path(model) : fs::path(model).parent_path();
  for (auto name : {std::string("tokenizer.json"), std::string("tokenizer.bin"),
                    "tok" + std::to_string(vocab) + ".bin"})
    if (fs::exists(dir / name)) return (dir / name).string();
  throw eexit::error(model, "no tokenizer found beside the model; pass --tokenizer");
}

}  // namespace

int main(int argc, char** argv) {
  using namespace eexit;
  using samples::Args;
  using samples::usage_error;
  std::optional<Args> args;
  GenerateRequest base;
  try {
    args.emplace(argc, argv,
                 std::set<std::string>{"model", "tokenizer", "prompt", "max-tokens", "temperature",
                                       "top-k", "top-p", "min-p", "repetition-penalty",
                                       "presence-penalty", "frequency-penalty", "seed", "stop",
                                       "threads", "max-batch-tokens", "kv-blocks"},
                 std::set<std::string>{"json", "help", "ignore-eos"});
    if (args->has("help")) {
      std::cout << kHelp;
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
    if (!args->has("model")) throw usage_error("--model is required");
    if (!args->has("prompt")) throw usage_error("--prompt is required");
  } catch (const usage_error& e) {
    std::cerr << "eexit-generate: " << e.what() << "\n(see eexit-generate --help)\n";
    return 2;
  }
  const bool json = args->has("json");
  try {
    CpuBackend be(unsigned(args->integer("threads", 0, 0, 1024)));
    const std::string model_path = args->str("model");
    LlamaModel<CpuBackend> model(be, load_model(model_path));
    const auto& cfg = model.config();
    const auto tok =
        Tokenizer::load(args->has("tokenizer") ? args->str("tokenizer")
                                               : find_tokenizer(model_path, cfg.vocab_size),
                        cfg.vocab_size);

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
    using Cache = PagedCache<CpuBackend, 16>;
    const auto blocks = args->integer(
        "kv-blocks",
        std::min<long long>(tokens_needed / 16 + 2 * std::int64_t(reqs.size()) + 1, 1 << 20), 1,
        1 << 26);
    Cache cache(be, cfg, std::int32_t(blocks));
    EngineOptions opt;
    opt.max_batch_tokens = std::int32_t(args->integer("max-batch-tokens", 256, 1, 1 << 20));
    Engine<FullDepth, Cache> engine(model, cache, FullDepth{}, opt);
    engine.set_tokenizer(&tok);
    std::vector<request_id> ids;
    for (auto& r : reqs) ids.push_back(engine.add_request(r));

    const bool stream = !json && reqs.size() == 1;
    std::map<request_id, nlohmann::json> results;
    std::map<request_id, std::string> texts;
    const auto t0 = std::chrono::steady_clock::now();
    int failures = 0;
    while (engine.has_work()) {
      for (auto& o : engine.step()) {
        auto& j = results[o.id];
        for (auto& t : o.tokens) j["token_ids"].push_back(t.token);
        texts[o.id] += o.text;
        if (stream) std::cout << o.text << std::flush;
        if (o.finished()) {
          const auto& st = o.stats;
          j["finish_reason"] = std::string(finish_reason_name(o.finish));
          if (o.finish == finish_reason::error) {
            j["error"] = o.error;
            ++failures;
          }
          j["stats"] = {
              {"prompt_tokens", st.prompt_tokens},
              {"generated_tokens", st.generated_tokens},
              {"time_to_first_token_s", st.time_to_first_token_s},
              {"total_time_s", st.total_time_s},
              {"tokens_per_s", st.total_time_s > 0 ? st.generated_tokens / st.total_time_s : 0.0},
              {"preemptions", st.preemptions}};
        }
      }
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (std::size_t i = 0; i < ids.size(); ++i) {
      auto& j = results[ids[i]];
      if (!j.contains("token_ids")) j["token_ids"] = nlohmann::json::array();
      j["text"] = texts[ids[i]];
      if (json) {
        std::cout << j.dump() << "\n";
      } else if (!stream) {
        std::cout << "--- prompt " << i + 1 << " (" << j["finish_reason"].get<std::string>()
                  << ")\n"
                  << texts[ids[i]] << "\n";
      }
    }
    if (!json) {
      const auto& st = engine.stats();
      std::cerr << "\n[eexit] " << st.generated_tokens << " tokens in " << secs << " s ("
                << (secs > 0 ? double(st.generated_tokens) / secs : 0.0) << " tokens/s), "
                << reqs.size() << " request(s)\n";
    }
    return failures ? 1 : 0;
  } catch (const std::exception& e) {
    std::cerr << "eexit-generate: " << e.what() << "\n";
    return 1;
  }
}
