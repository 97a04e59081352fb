// eexit-bench-load: eexit-server's HTTP path under load, against the in-process engine on
// the same workload, in one run. For each policy (full depth, then early exit) and each
// client count (1, 8, 32, 64): an in-process HttpServer on a loopback port, C client
// threads (Beast, keep-alive, streaming SSE) that issue a fixed number of greedy requests
// between them under a time limit; then the same requests through the Engine directly,
// C at a time (a closed loop like the clients'). Reports requests/s, tokens/s, time to
// first token and inter-token latency p50/p99 (of the best server repeat), and
// server/in-process tokens/s (best of --repeat interleaved runs each).
#include <utility>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "../samples/common/args.hpp"
#include "eexit/eexit.hpp"
#include "eexit/serve/engine_service.hpp"
#include "eexit/serve/http_server.hpp"
#include "eexit/serve/model_setup.hpp"

#ifndef EEXIT_DEFAULT_MODEL
#define EEXIT_DEFAULT_MODEL "models/eexit-shakespeare"
#endif

namespace {

using namespace eexit;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Clock = std::chrono::steady_clock;
using Cache = PagedCache<CpuBackend, 16>;
using Eng = Engine<RuntimePolicy, Cache>;

constexpr const char* kHelp = R"(usage: eexit-bench-load [options]

  --model PATH        HF model directory (default: the embedded eexit-shakespeare)
  --max-tokens N      tokens per request (default 64)
  --requests-per-client N  requests = max(16, N x clients) per run (default 4)
  --time-limit S      seconds per run before clients stop issuing (default 60)
  --clients LIST      comma-separated client counts (default 1,8,32,64)
  --threshold X       early-exit threshold (default: the model's)
  --threads N         engine CPU threads (default 1: clients and I/O need the other core)
  --repeat N          interleaved server/in-process repeats, best of each (default 3)
  --help
)";

const char* kPrompts[] = {"ROMEO:\n",          "JULIET:\n",       "First Citizen:\n",
                          "KING HENRY:\n",     "HAMLET:\nTo be",  "MERCUTIO:\n",
                          "Nurse:\nO lamb",    "BENVOLIO:\n",     "LADY MACBETH:\nOut,",
                          "GLOUCESTER:\nNow is"};

struct Sample {
  double ttft_s = 0;
  std::vector<double> itl_s;
  std::int64_t tokens = 0;
  bool ok = false;
};

struct RunResult {
  double wall_s = 0;
  std::int64_t requests = 0, tokens = 0, failed = 0, steps = 0;
  std::vector<double> ttft, itl;
};

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, std::size_t(p * double(v.size() - 1) + 0.5))];
}

// One streaming request over an open keep-alive connection.
Sample stream_request(beast::tcp_stream& s, const std::string& body) {
  Sample out;
  http::request<http::string_body> req{http::verb::post, "/v1/completions", 11};
  req.set(http::field::host, "127.0.0.1");
  req.set(http::field::content_type, "application/json");
  req.keep_alive(true);
  req.body() = body;
  req.prepare_payload();
  const auto t0 = Clock::now();
  auto last = t0;
  s.expires_after(std::chrono::seconds(120));
  http::write(s, req);
  http::response_parser<http::empty_body> p;
  p.body_limit(std::numeric_limits<std::uint64_t>::max());
  std::string pending;
  auto on_chunk = [&](std::uint64_t, beast::string_view piece, beast::error_code&) -> std::size_t {
    pending.append(piece.data(), piece.size());
    std::size_t end;
    while ((end = pending.find("\n\n")) != std::string::npos) {
      std::string ev = pending.substr(0, end);
      pending.erase(0, end + 2);
      if (ev.rfind("data: {", 0) != 0) continue;
      auto j = nlohmann::json::parse(ev.substr(6), nullptr, false);
      if (!j.is_object() || !j.contains("choices") || j["choices"].empty()) continue;
      const auto n = std::int64_t(j["choices"][0]["exit_layers"].size());
      if (n == 0) continue;
      const auto now = Clock::now();
      if (out.tokens == 0)
        out.ttft_s = std::chrono::duration<double>(now - t0).count();
      else
        out.itl_s.push_back(std::chrono::duration<double>(now - last).count() / double(n));
      last = now;
      out.tokens += n;
      if (!j["choices"][0]["finish_reason"].is_null()) out.ok = true;
    }
    return piece.size();
  };
  p.on_chunk_body(on_chunk);
  beast::flat_buffer buf;
  http::read(s, buf, p);
  s.expires_never();
  if (p.get().result() != http::status::ok) out.ok = false;
  return out;
}

struct Setup {
  CpuBackend& be;
  LlamaModel<CpuBackend>& model;
  const Tokenizer& tok;
  int max_tokens;
};

std::vector<GenerateRequest> workload(const Setup& st, std::int64_t n) {
  std::vector<GenerateRequest> rs;
  for (std::int64_t i = 0; i < n; ++i) {
    GenerateRequest r;
    for (int id : st.tok.encode(kPrompts[std::size_t(i) % std::size(kPrompts)], true))
      r.prompt.push_back(id);
    r.max_tokens = st.max_tokens;
    r.ignore_eos = true;
    rs.push_back(std::move(r));
  }
  return rs;
}

Eng make_engine(const Setup& st, Cache& cache, const RuntimePolicy& pol) {
  EngineOptions eo;
  eo.max_running = 64;
  eo.max_batch_tokens = 256;
  return Eng(st.model, cache, pol, eo);
}

RunResult run_server(const Setup& st, const RuntimePolicy& pol, int clients,
                     std::int64_t n_requests, double time_limit_s) {
  Cache cache(st.be, st.model.config(), 2048);
  Eng engine = make_engine(st, cache, pol);
  engine.set_tokenizer(&st.tok);
  serve::EngineService<Eng> svc(engine);
  asio::io_context io(1);
  serve::HttpConfig hc;
  hc.limits.model_name = "bench";
  hc.limits.context = st.model.config().max_seq_len;
  hc.limits.server_policy = pol.rule;
  serve::HttpServer<serve::EngineService<Eng>> server(io, svc, st.tok, hc);
  server.listen({asio::ip::make_address("127.0.0.1"), 0});
  const auto port = server.port();
  std::thread io_thread([&] { io.run(); });

  std::atomic<std::int64_t> next{0};
  std::mutex m;
  RunResult res;
  const auto t0 = Clock::now();
  const auto deadline = t0 + std::chrono::duration<double>(time_limit_s);
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c)
    threads.emplace_back([&] {
      try {
        asio::io_context cio;
        beast::tcp_stream s(cio);
        s.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
        s.socket().set_option(asio::ip::tcp::no_delay(true));
        for (;;) {
          const auto i = next.fetch_add(1);
          if (i >= n_requests || Clock::now() > deadline) break;
          nlohmann::json body = {{"model", "bench"},
                                 {"prompt", kPrompts[std::size_t(i) % std::size(kPrompts)]},
                                 {"max_tokens", st.max_tokens},
                                 {"temperature", 0},
                                 {"ignore_eos", true},
                                 {"stream", true}};
          auto smp = stream_request(s, body.dump());
          std::lock_guard lk(m);
          if (!smp.ok) {
            ++res.failed;
            continue;
          }
          ++res.requests;
          res.tokens += smp.tokens;
          res.ttft.push_back(smp.ttft_s);
          res.itl.insert(res.itl.end(), smp.itl_s.begin(), smp.itl_s.end());
        }
      } catch (const std::exception& e) {
        std::lock_guard lk(m);
        ++res.failed;
        std::cerr << "client: " << e.what() << "\n";
      }
    });
  for (auto& t : threads) t.join();
  res.wall_s = std::chrono::duration<double>(Clock::now() - t0).count();
  // Drain rather than io.stop(): no session coroutine is left suspended when the server goes.
  asio::post(io, [&] { server.shutdown(std::chrono::milliseconds(0)); });
  io_thread.join();
  svc.stop();
  res.steps = svc.metrics().steps;
  return res;
}

// The same requests straight into the Engine, `clients` in flight at a time.
RunResult run_inproc(const Setup& st, const RuntimePolicy& pol, int clients,
                     std::int64_t n_requests) {
  Cache cache(st.be, st.model.config(), 2048);
  Eng engine = make_engine(st, cache, pol);
  engine.set_tokenizer(&st.tok);
  auto rs = workload(st, n_requests);
  RunResult res;
  const auto t0 = Clock::now();
  std::size_t next = 0;
  int in_flight = 0;
  while (next < rs.size() || in_flight > 0) {
    while (in_flight < clients && next < rs.size()) {
      engine.add_request(rs[next++]);
      ++in_flight;
    }
    for (auto& o : engine.step()) {
      res.tokens += std::int64_t(o.tokens.size());
      if (o.finished()) {
        --in_flight;
        ++res.requests;
      }
    }
  }
  res.wall_s = std::chrono::duration<double>(Clock::now() - t0).count();
  res.steps = engine.stats().steps;
  return res;
}

}  // namespace

int main(int argc, char** argv) {
  using samples::Args;
  try {
    Args args(argc, argv,
              {"model", "max-tokens", "requests-per-client", "time-limit", "clients", "threshold",
               "threads", "repeat"},
              {"help"});
    if (args.has("help")) {
      std::cout << kHelp;
      return 0;
    }
    const std::string path = args.str("model", EEXIT_DEFAULT_MODEL);
    CpuBackend be(unsigned(args.integer("threads", 1, 0, 1024)));
    auto model = serve::load_serving_model<LlamaModel<CpuBackend>>(be, path);
    const auto tok = Tokenizer::load(path + "/tokenizer.json", model->config().vocab_size);
    Setup st{be, *model, tok, int(args.integer("max-tokens", 64, 1, 4096))};
    const auto per_client = args.integer("requests-per-client", 4, 1, 1 << 20);
    const double limit = args.real("time-limit", 60, 1, 86400);
    const int repeats = int(args.integer("repeat", 3, 1, 100));
    std::vector<int> counts;
    {
      std::stringstream ss(args.str("clients", "1,8,32,64"));
      std::string item;
      while (std::getline(ss, item, ','))
        counts.push_back(int(Args::parse_real("clients", item, 1, 1024)));
    }
    RuntimePolicy full;
    RuntimePolicy ee;
    ee.rule = rule_from_name("split");
    ee.measure = measure_from_name(model->config().early_exit.measure);
    if (!model->config().early_exit.thresholds.empty())
      ee.thresholds.values = model->config().early_exit.thresholds;
    if (args.has("threshold")) ee.thresholds.values = {float(args.real("threshold", 0.5, -1e6, 1e6))};

    std::printf("| policy | clients | requests | req/s | server tok/s | in-process tok/s | "
                "server/in-process | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | "
                "tokens/step server, in-process | failed |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (auto* pol : {&full, &ee}) {
      for (int c : counts) {
        const std::int64_t n = std::max<std::int64_t>(16, per_client * c);
        // Interleaved repeats, best of each: the machine is shared, so single runs swing.
        RunResult srv, inp;
        double stps = 0, itps = 0;
        for (int rep = 0; rep < repeats; ++rep) {
          auto s1 = run_server(st, *pol, c, n, limit);
          // On a thread of its own, as the service's engine runs (glibc's main-thread heap
          // behaves differently from a thread's arena).
          RunResult i1;
          std::thread([&] { i1 = run_inproc(st, *pol, c, s1.requests ? s1.requests : n); }).join();
          const double s_tps = double(s1.tokens) / s1.wall_s, i_tps = double(i1.tokens) / i1.wall_s;
          if (s_tps > stps) {
            stps = s_tps;
            srv = std::move(s1);
          }
          if (i_tps > itps) {
            itps = i_tps;
            inp = std::move(i1);
          }
        }
        std::printf("| %s | %d | %lld | %.1f | %.0f | %.0f | %.3f | %.2f | %.2f | %.3f | %.3f | %.1f, %.1f | "
                    "%lld |\n",
                    std::string(pol->name()).c_str(), c, (long long)srv.requests,
                    double(srv.requests) / srv.wall_s, stps, itps, stps / itps,
                    1e3 * pct(srv.ttft, 0.5), 1e3 * pct(srv.ttft, 0.99), 1e3 * pct(srv.itl, 0.5),
                    1e3 * pct(srv.itl, 0.99), double(srv.tokens) / double(std::max<std::int64_t>(1, srv.steps)),
                    double(inp.tokens) / double(std::max<std::int64_t>(1, inp.steps)),
                    (long long)srv.failed);
        std::fflush(stdout);
      }
    }
    return 0;
  } catch (const samples::usage_error& e) {
    std::cerr << "eexit-bench-load: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "eexit-bench-load: " << e.what() << "\n";
    return 1;
  }
}
