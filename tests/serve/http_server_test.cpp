// HttpServer in-process, over real loopback sockets: what the I/O thread must never wait for.
#include <utility>  // before Asio: GCC 12 with Boost 1.74 needs it (DESIGN.md §6)
// Asio and the rest:
#include <doctest/doctest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>

#include "../test_paths.hpp"
#include "eexit/eexit.hpp"
#include "eexit/serve/engine_service.hpp"
#include "eexit/serve/http_server.hpp"
#include "eexit/serve/model_setup.hpp"

using namespace eexit;
namespace asio = boost::asio;
namespace http = boost::beast::http;

namespace {

using Cache = PagedCache<CpuBackend, 16>;
using Eng = Engine<RuntimePolicy, Cache>;
using Service = serve::EngineService<Eng>;

// The real tokenizer, except that encoding a large text waits until the test lets it go:
// it stands for a tokenizer that takes seconds over a 1 MiB prompt, with the wait under
// the test's control instead of the clock's.
struct GatedTokenizer {
  const Tokenizer* tok;
  std::promise<void>* entered;
  std::shared_future<void> release;
  std::vector<int> encode(std::string_view text, bool add_special = true) const {
    if (text.size() > (std::size_t(1) << 16)) {
      entered->set_value();
      release.wait();
    }
    return tok->encode(text, add_special);
  }
  std::string token_bytes(int id) const { return tok->token_bytes(id); }
  int vocab_size() const { return tok->vocab_size(); }
};

// One request on its own connection (Connection: close): the response's status and body.
std::pair<unsigned, std::string> exchange(unsigned short port, http::verb verb,
                                          const std::string& target, std::string body = {}) {
  asio::io_context io;
  asio::ip::tcp::socket sock(io);
  sock.connect({asio::ip::make_address("127.0.0.1"), port});
  http::request<http::string_body> req{verb, target, 11};
  req.set(http::field::host, "127.0.0.1");
  req.set(http::field::connection, "close");
  if (!body.empty()) req.set(http::field::content_type, "application/json");
  req.body() = std::move(body);
  req.prepare_payload();
  http::write(sock, req);
  boost::beast::flat_buffer buf;
  http::response_parser<http::string_body> res;
  res.body_limit(std::uint64_t(1) << 24);
  http::read(sock, buf, res);
  return {res.get().result_int(), res.get().body()};
}

// The embedded model served on a loopback port by an HttpServer whose tokenizer is gated
// (above), its io_context running on io_thread.
struct GatedServer {
  CpuBackend be{2};
  std::unique_ptr<LlamaModel<CpuBackend>> model = serve::load_serving_model<LlamaModel<CpuBackend>>(
      be, test::source("models/eexit-shakespeare"));
  Tokenizer tok = Tokenizer::load(test::source("models/eexit-shakespeare/tokenizer.json"),
                                  model->config().vocab_size);
  Cache cache{be, model->config(), 64};
  Eng engine{*model, cache};
  Service svc{engine};
  std::promise<void> entered, release;
  GatedTokenizer gated{&tok, &entered, release.get_future().share()};
  asio::io_context io{1};
  serve::HttpServer<Service, GatedTokenizer> server{io, svc, gated, config()};
  unsigned short port = listen();
  std::thread io_thread{[this] { io.run(); }};

  serve::HttpConfig config() const {
    serve::HttpConfig cfg;
    cfg.limits.model_name = "m";
    cfg.limits.context = model->config().max_seq_len;
    cfg.max_body_bytes = 4 << 20;
    return cfg;
  }
  unsigned short listen() {
    server.listen({asio::ip::make_address("127.0.0.1"), 0});
    return server.port();
  }
};

}  // namespace

TEST_CASE("/health answers while a 1 MiB prompt is being tokenized") {
  GatedServer g;
  const auto port = g.port;

  // 1 MiB of text: the engine would refuse it (longer than the context), but only once it
  // is tokenized, and tokenizing waits for `release`.
  const std::string big = "{\"model\":\"m\",\"max_tokens\":1,\"prompt\":\"" +
                          std::string(std::size_t(1) << 20, 'a') + "\"}";
  auto big_answer = std::async(
      std::launch::async, [&] { return exchange(port, http::verb::post, "/v1/completions", big); });
  const bool tokenizing =
      g.entered.get_future().wait_for(std::chrono::seconds(60)) == std::future_status::ready;
  REQUIRE(tokenizing);

  // The events, in order: tokenizing has begun and not ended; /health is answered; only
  // then does tokenizing end and the big request get its answer. (The waits are bounds
  // that turn a hang into a failure, not timings.)
  auto health =
      std::async(std::launch::async, [&] { return exchange(port, http::verb::get, "/health"); });
  const bool answered = health.wait_for(std::chrono::seconds(60)) == std::future_status::ready;
  CHECK_MESSAGE(answered, "/health waited for the tokenizer: it ran on the I/O thread");
  const bool big_pending =
      big_answer.wait_for(std::chrono::seconds(0)) == std::future_status::timeout;
  CHECK(big_pending);
  g.release.set_value();
  if (answered) {
    const auto [status, body] = health.get();
    CHECK(status == 200);
    CHECK(body == "{\"status\":\"ok\"}");
  }
  const auto [status, body] = big_answer.get();
  CHECK(status == 400);
  CHECK(body.find("context_length_exceeded") != std::string::npos);
  if (!answered) health.get();

  asio::post(g.io, [&] { g.server.shutdown(std::chrono::milliseconds(0)); });
  g.io_thread.join();  // every connection closed: the io_context ran out of work
}

TEST_CASE("drain: /ready fails while /health passes; new generation gets 503; then it ends") {
  GatedServer g;
  const auto port = g.port;

  CHECK(exchange(port, http::verb::get, "/ready") ==
        std::pair<unsigned, std::string>{200, "{\"status\":\"ready\"}"});
  CHECK(exchange(port, http::verb::post, "/ready").first == 405);

  // A request that runs (held in the tokenizer) keeps the drain open: the events are in
  // order, not timed.
  const std::string big = "{\"model\":\"m\",\"max_tokens\":1,\"prompt\":\"" +
                          std::string(std::size_t(1) << 17, 'a') + "\"}";
  auto running = std::async(
      std::launch::async, [&] { return exchange(port, http::verb::post, "/v1/completions", big); });
  REQUIRE(g.entered.get_future().wait_for(std::chrono::seconds(60)) == std::future_status::ready);
  std::promise<void> draining;
  asio::post(g.io, [&] {
    g.server.shutdown(std::chrono::seconds(600));
    draining.set_value();
  });
  draining.get_future().wait();

  CHECK(exchange(port, http::verb::get, "/health") ==
        std::pair<unsigned, std::string>{200, "{\"status\":\"ok\"}"});
  CHECK(exchange(port, http::verb::get, "/ready") ==
        std::pair<unsigned, std::string>{503, "{\"status\":\"draining\"}"});
  const auto [status, body] = exchange(port, http::verb::post, "/v1/completions",
                                       "{\"model\":\"m\",\"max_tokens\":1,\"prompt\":\"a\"}");
  CHECK(status == 503);
  CHECK(body.find("shutting_down") != std::string::npos);

  // The running request gets its answer; the listener closes with the last connection and
  // the io_context runs out of work.
  g.release.set_value();
  CHECK(running.get().first == 400);  // context_length_exceeded, once tokenized
  g.io_thread.join();
  asio::io_context probe;
  asio::ip::tcp::socket sock(probe);
  boost::system::error_code ec;
  sock.connect({asio::ip::make_address("127.0.0.1"), port}, ec);
  CHECK(ec);  // refused: nothing listens any more
}
