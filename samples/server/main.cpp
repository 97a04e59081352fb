// eexit-server: an OpenAI-compatible streaming HTTP server over the eexit engine (CPU, or
// a GPU with --device cuda).
// One engine thread (serve::EngineService), one I/O thread (serve::HttpServer).
#include <sys/resource.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <utility>

#include "../common/args.hpp"
#include "../common/default_model.hpp"
#include "../common/device.hpp"
#include "../common/draft_vocab.hpp"
#include "eexit/eexit.hpp"
#include "eexit/serve/engine_service.hpp"
#include "eexit/serve/http_server.hpp"
#include "eexit/serve/model_setup.hpp"
#include "eexit/text/chat_template.hpp"

namespace {

constexpr const char* kHelp = R"(usage: eexit-server [options]

Serves an eexit model over an OpenAI-compatible HTTP API (CPU, or GPU: --device):
  POST /v1/completions, POST /v1/chat/completions (stream: true for SSE),
  GET /v1/models, GET /health (liveness), GET /ready (readiness: 503 while
  draining), GET /metrics (Prometheus).

  --model PATH            HF model directory (config.json, model.safetensors,
                          tokenizer.json); default: the embedded eexit-shakespeare,
                          @DEFAULT_MODEL@
  --tokenizer PATH        tokenizer.json or GGUF (default: beside the model; a GGUF model's own)
  --exit-layers L[,M...]  add shared-head exit points after these layers (0-based) to any
                          checkpoint (HF, llama2.c .bin, GGUF)
  --served-model-name N   the model id clients use (default: the model directory's name, or
                          the model file's without its extension)
  --host H                address to bind (default 127.0.0.1)
  --port P                port (default 8000; 0 = any free port, printed at start)
  --api-key KEY           require "Authorization: Bearer KEY" on /v1/*
  --policy P              early exit: @POLICIES@ (default full)
  --measure M             @MEASURES@
                          (default: the model's config, else max-prob)
  --threshold X[,Y...]    one threshold, or one per exit point (default: the model's)
  --calm-decay            CALM's threshold decay over the decode position
  --draft-exit L          self-spec: draft from the exit after layer L (default: the first)
  --draft-tokens K        self-spec: at most K drafts per verify pass (default 4)
  --draft-threshold X     self-spec: stop drafting under this draft confidence (default 0.5)
  --draft-adaptive        self-spec: per step the k <= K the measured costs predict fastest
  --draft-per-row         with --draft-adaptive: then lower k row by row where a row's own
                          drafts are rarely kept (default: one k for all rows of a step)
@DRAFT_VOCAB@  --fill F                @FILLS@: K/V of skipped layers projected from
                          the exit state (default) or recomputed in the next step
  --chat-template T       auto | plain | llama2 | chatml | llama3 | zephyr (default auto:
                          detected from tokenizer_config.json's chat_template)
  --max-batch-tokens N    rows per engine step (default 256)
  --max-running N         sequences in the running batch (default 64)
  --kv-blocks N           KV cache blocks of 16 tokens (default 1024)
  --no-prefix-cache       compute every prompt in full (default: prompts that share a
                          prefix with an earlier one reuse its cached KV blocks)
  --max-pending N         requests in flight before 429 (default 256)
  --max-body-bytes N      request body limit (default 1048576)
  --timeout S             idle/slow client timeout in seconds (default 30)
  --max-connections N     open connections; one more gets 503 (default: the open-file
                          limit less 64)
  --shutdown-timeout S    on SIGTERM/SIGINT: /ready fails, new generation requests get
                          503, running requests finish for up to S seconds, then end
                          with an error (default 10); exits once none is left
  --metrics-public        serve /metrics without the API key (/health and /ready are
                          always open)
  --threads N             CPU threads for the engine (default: all cores)
  --help                  this text
)";

// kHelp with the policy and measure lists of policy/registry.hpp and the default model's
// search list in place.
std::string help_text() {
  std::string h = kHelp;
  for (auto [key, value] :
       {std::pair{std::string_view("@POLICIES@"), eexit::policy_names_help()},
        std::pair{std::string_view("@MEASURES@"), eexit::measure_names_help()},
        std::pair{std::string_view("@FILLS@"), eexit::fill_names_help()},
        std::pair{std::string_view("@DRAFT_VOCAB@"), std::string(eexit::samples::kDraftVocabHelp)},
        std::pair{std::string_view("@DEFAULT_MODEL@"),
                  eexit::samples::default_model_help("\n                          ")}})
    h.replace(h.find(key), key.size(), value);
  return h;
}

std::vector<float> parse_thresholds(const std::string& s) {
  std::vector<float> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    v.push_back(float(eexit::samples::Args::parse_real("threshold", item, -1e6, 1e6)));
  if (v.empty()) throw eexit::samples::usage_error("--threshold: no value");
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace eexit;
  using samples::Args;
  using samples::usage_error;
  namespace fs = std::filesystem;
  std::optional<Args> args;
  RuntimePolicy policy;
  std::optional<ChatStyle> style;
  LoadOptions load_opt;
  samples::DeviceChoice device;
  try {
    args.emplace(argc, argv,
                 std::set<std::string>{"model",
                                       "tokenizer",
                                       "served-model-name",
                                       "host",
                                       "port",
                                       "api-key",
                                       "policy",
                                       "measure",
                                       "threshold",
                                       "fill",
                                       "chat-template",
                                       "max-batch-tokens",
                                       "max-running",
                                       "kv-blocks",
                                       "kv-dtype",
                                       "max-pending",
                                       "max-body-bytes",
                                       "timeout",
                                       "threads",
                                       "exit-layers",
                                       "device",
                                       "gpu-memory-fraction",
                                       "max-connections",
                                       "shutdown-timeout",
                                       "draft-exit",
                                       "draft-tokens",
                                       "draft-threshold",
                                       "draft-vocab",
                                       "draft-vocab-file"},
                 std::set<std::string>{"help", "calm-decay", "metrics-public", "draft-adaptive",
                                       "draft-per-row", "no-prefix-cache"});
    if (args->has("help")) {
      std::cout << help_text() << samples::kDeviceHelp;
      return 0;
    }
    try {
      policy.rule = rule_from_name(args->str("policy", "full"));
      if (args->has("measure")) policy.measure = measure_from_name(args->str("measure"));
      if (args->has("fill")) policy.fill = fill_from_name(args->str("fill"));
    } catch (const error& e) {
      throw usage_error(std::string("--") + e.what());  // "policy: unknown policy ..."
    }
    if (args->has("threshold")) policy.thresholds.values = parse_thresholds(args->str("threshold"));
    policy.thresholds.calm_decay = args->has("calm-decay");
    if (auto* sp = std::get_if<SpeculateFromExit>(&policy.rule.r)) {  // --policy self-spec
      sp->spec.draft_layer = int(args->integer("draft-exit", -1, -1, 1 << 20));
      sp->spec.max_draft = int(args->integer("draft-tokens", sp->spec.max_draft, 0, 64));
      sp->spec.threshold = float(args->real("draft-threshold", sp->spec.threshold, -1e6, 1e6));
      sp->spec.adaptive = args->has("draft-adaptive");
      sp->spec.per_row = args->has("draft-per-row");
    }
    const auto ct = args->str("chat-template", "auto");
    if (ct != "auto") {
      style = chat_style_from_name(ct);
      if (!style) throw usage_error("--chat-template: unknown style '" + ct + "'");
    }
    args->integer("draft-vocab", 0, 1, 1 << 24);
    args->integer("port", 8000, 0, 65535);
    args->integer("max-batch-tokens", 256, 1, 1 << 20);
    args->integer("max-running", 64, 1, 4096);
    args->integer("kv-blocks", 1024, 1, 1 << 26);
    args->integer("max-pending", 256, 1, 1 << 20);
    args->integer("max-body-bytes", 1 << 20, 1024, 1 << 30);
    args->integer("timeout", 30, 1, 86400);
    args->integer("threads", 0, 0, 1024);
    args->integer("max-connections", 0, 1, 1 << 24);
    args->real("shutdown-timeout", 10, 0, 86400);
    if (args->has("exit-layers")) {
      try {
        load_opt.exit_layers = parse_exit_layers(args->str("exit-layers"), "--exit-layers");
      } catch (const error& e) {
        throw usage_error(e.what());
      }
    }
    device = samples::parse_device(*args);
  } catch (const usage_error& e) {
    std::cerr << "eexit-server: " << e.what() << "\n(see eexit-server --help)\n";
    return 2;
  }
  try {
    return samples::with_backend(
        device, unsigned(args->integer("threads", 0, 0, 1024)), [&]<class Backend>(Backend& be) {
          const std::string model_path =
              args->has("model") ? args->str("model") : samples::default_model(argv[0]);
          load_opt.draft_vocab = samples::draft_vocab_option(*args, model_path);
          auto model = serve::load_serving_model<LlamaModel<Backend>>(be, model_path, load_opt);
          const auto& cfg = model->config();
          // A model file given by its bare name ("x.gguf") lies in the working directory.
          const fs::path mp(model_path);
          const bool model_dir = fs::is_directory(mp);
          const fs::path dir = model_dir              ? mp
                               : mp.has_parent_path() ? mp.parent_path()
                                                      : fs::path(".");
          const auto tok =
              Tokenizer::load(args->has("tokenizer")          ? args->str("tokenizer")
                              : model_path.ends_with(".gguf") ? model_path
                                                              : (dir / "tokenizer.json").string(),
                              cfg.vocab_size);
          // Policy defaults from the model's config.json.
          if (!args->has("measure") && policy.evaluates_exits())
            policy.measure = measure_from_name(cfg.early_exit.measure);
          if (!args->has("threshold") && !cfg.early_exit.thresholds.empty())
            policy.thresholds.values = cfg.early_exit.thresholds;

          serve::HttpConfig hc;
          // Chat formatting from tokenizer_config.json (plain when there is none).
          const auto chat = load_chat_template(dir);
          hc.chat_style = chat.style;
          hc.bos_text = chat.bos_text;
          hc.eos_text = chat.eos_text;
          if (style) hc.chat_style = *style;
          // The model id: a file's name without its extension (as llama-server: x.gguf -> x),
          // else the directory's name.
          fs::path abs_dir = fs::absolute(dir).lexically_normal();
          if (abs_dir.filename().empty()) abs_dir = abs_dir.parent_path();  // "dir/"
          hc.limits.model_name = args->str(
              "served-model-name", model_dir ? abs_dir.filename().string() : mp.stem().string());
          hc.limits.context = cfg.max_seq_len;
          hc.limits.server_policy = policy.rule;
          hc.api_key = args->str("api-key");
          hc.max_body_bytes = std::size_t(args->integer("max-body-bytes", 1 << 20, 1024, 1 << 30));
          hc.idle_timeout = hc.write_timeout =
              std::chrono::seconds(args->integer("timeout", 30, 1, 86400));
          hc.bos_id = tok.bos_id() >= 0 ? tok.bos_id() : cfg.bos_id;
          hc.metrics_public = args->has("metrics-public");
          hc.max_connections = std::size_t(args->integer("max-connections", 0, 1, 1 << 24));
          if (!hc.max_connections) {
            // Below the descriptor limit, so that refusing (503) wins over EMFILE; 64 are left for
            // the model files, the listener, the refusals in flight and the like.
            rlimit rl{};
            if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
                rl.rlim_cur > 128)
              hc.max_connections = std::size_t(rl.rlim_cur) - 64;
          }

          using Cache = PagedCache<Backend, 16>;
          using Eng = Engine<RuntimePolicy, Cache>;
          Cache cache(
              be, cfg,
              samples::kv_blocks(be, device, cfg,
                                 std::int32_t(args->integer("kv-blocks", 1024, 1, 1 << 26))),
              device.kv);
          EngineOptions eo;
          eo.max_batch_tokens = std::int32_t(args->integer("max-batch-tokens", 256, 1, 1 << 20));
          eo.max_running = std::int32_t(args->integer("max-running", 64, 1, 4096));
          eo.prefix_cache = !args->has("no-prefix-cache");
          Eng engine(*model, cache, policy, eo);
          engine.set_tokenizer(&tok);
          serve::EngineService<Eng> svc(
              engine,
              serve::ServiceOptions{std::size_t(args->integer("max-pending", 256, 1, 1 << 20))});

          boost::asio::io_context io(1);
          serve::HttpServer<serve::EngineService<Eng>> server(io, svc, tok, hc);
          const auto host = boost::asio::ip::make_address(args->str("host", "127.0.0.1"));
          server.listen({host, static_cast<unsigned short>(args->integer("port", 8000, 0, 65535))});
          // The first signal drains (see HttpServer::shutdown); a second one ends at once.
          const auto drain = std::chrono::milliseconds(
              std::int64_t(1000 * args->real("shutdown-timeout", 10, 0, 86400)));
          boost::asio::signal_set signals(io, SIGINT, SIGTERM);
          signals.async_wait([&](const boost::system::error_code& ec, int) {
            if (ec) return;
            std::cout << "eexit-server: draining (up to " << drain.count() << " ms)" << std::endl;
            server.shutdown(drain, std::chrono::milliseconds(2000), [&] { signals.cancel(); });
            signals.async_wait([&](const boost::system::error_code& ec2, int) {
              if (!ec2) server.shutdown_now();
            });
          });
          std::cout << "eexit-server: listening on http://" << host.to_string() << ":"
                    << server.port() << " (model " << hc.limits.model_name << ", policy "
                    << policy.name() << ", chat template " << chat_style_name(hc.chat_style) << ")"
                    << std::endl;
          io.run();  // returns once the drain is over: no connection, no acceptor, no timer left
          signals.cancel();
          svc.stop();
          return 0;
        });
  } catch (const std::exception& e) {
    std::cerr << "eexit-server: " << e.what() << "\n";
    return 1;
  }
}
