#pragma once
// HttpServer: the OpenAI-compatible HTTP/1.1 front of an EngineService (Boost.Beast, one
// coroutine per connection, as Beast's C++20 examples). Keep-alive; a body limit on the
// parser; tcp_stream timeouts for idle and slow clients, for reads and for writes; SSE
// streaming as chunked transfer (HTTP/1.1) or a close-delimited body (HTTP/1.0), one event
// per engine step, flushed as it comes.
//
// - Disconnects: a failed or timed-out write, or a reset, aborts the request, so its KV
//   blocks are freed by the engine's next step. A FIN alone is not one (see
//   watch_disconnect): a half-closed client still reads its answer.
// - Load: at most max_connections open connections (one more gets 503); accept errors for
//   want of descriptors (EMFILE/ENFILE) back off instead of retrying at once.
// - The I/O thread never parses, formats or tokenizes a request body: that runs on a small
//   worker pool (a 1 MiB prompt takes a while with some tokenizers), so /health and the
//   other clients are answered meanwhile.
// - /health is liveness (200 while the process serves), /ready readiness (200 once the
//   model is loaded, which is before listen(); 503 from the start of a drain).
// - shutdown(): close idle connections, let running requests finish until a deadline, then
//   stop the service (they end with an error event and [DONE]). Meanwhile new connections
//   still get /health (200) and /ready (503), so that a load balancer or a Kubernetes probe
//   sees "alive, not ready"; new generation requests get 503 shutting_down. The listener
//   closes once the last running request is done.
//
// Run the io_context on ONE thread: sessions share no strand.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "eexit/serve/engine_service.hpp"
#include "eexit/serve/metrics.hpp"
#include "eexit/serve/openai.hpp"
#include "eexit/text/chat_template.hpp"
#include "eexit/text/tokenizer.hpp"

namespace eexit::serve {

struct HttpConfig {
  openai::Limits limits;  // model name, context, server policy
  std::string api_key;    // empty = no check
  std::size_t max_body_bytes = 1 << 20;
  std::chrono::milliseconds idle_timeout{30000};   // waiting for (the rest of) a request
  std::chrono::milliseconds write_timeout{30000};  // a client that does not read
  ChatStyle chat_style = ChatStyle::plain;
  std::string bos_text = "<s>", eos_text = "</s>";  // for chat templates
  std::int32_t bos_id = -1;                         // prompt of an empty text
  std::int32_t default_max_tokens = 16;             // completions without max_tokens
  std::size_t max_connections = 0;  // open connections; one more gets 503 (0: no limit)
  bool metrics_public = false;      // /metrics without the API key (it tells request counts)
  unsigned tokenizer_threads = 2;   // the pool that parses and tokenizes request bodies
};

// Completes with fn() run on `ex` (a worker pool): void(std::exception_ptr, R), back on
// the handler's executor. Lets a coroutine on the I/O thread wait for CPU work without
// holding the thread.
template <class Executor, class Fn, class CompletionToken>
auto async_run_on(Executor ex, Fn fn, CompletionToken&& token) {
  using R = std::invoke_result_t<Fn&>;
  return asio::async_initiate<CompletionToken, void(std::exception_ptr, R)>(
      [ex](auto handler, Fn f) {
        auto work = asio::make_work_guard(asio::get_associated_executor(handler));
        asio::post(ex,
                   [h = std::move(handler), f = std::move(f), work = std::move(work)]() mutable {
                     std::exception_ptr err;
                     R r{};
                     try {
                       r = f();
                     } catch (...) {
                       err = std::current_exception();
                     }
                     auto back = work.get_executor();
                     work.reset();
                     asio::post(back, [h = std::move(h), err, r = std::move(r)]() mutable {
                       std::move(h)(err, std::move(r));
                     });
                   });
      },
      token, std::move(fn));
}

// Counters of the HTTP front, for /metrics (I/O thread only).
struct HttpCounters {
  std::int64_t connections_open = 0, connections_refused = 0, accept_errors = 0;
};

inline std::string prometheus_text(const HttpCounters& c) {
  std::string o;
  auto metric = [&](const char* name, const char* type, const char* help, std::int64_t v) {
    o += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" +
         name + " " + std::to_string(v) + "\n";
  };
  metric("eexit_http_connections_open", "gauge", "Open client connections.", c.connections_open);
  metric("eexit_http_connections_refused_total", "counter",
         "Connections refused with 503 over --max-connections.", c.connections_refused);
  metric("eexit_http_accept_errors_total", "counter",
         "Failed accepts (e.g. out of file descriptors).", c.accept_errors);
  return o;
}

// `Tok`: Tokenizer, or anything with its encode / token_bytes / vocab_size (tests wrap it).
template <class Service, class Tok = Tokenizer>
class HttpServer {
 public:
  using tcp = asio::ip::tcp;

  HttpServer(asio::io_context& io, Service& svc, const Tok& tok, HttpConfig cfg)
      : io_(io),
        svc_(svc),
        tok_(tok),
        cfg_(std::move(cfg)),
        acceptor_(io),
        workers_(cfg_.tokenizer_threads ? cfg_.tokenizer_threads : 1),
        drain_timer_(io) {
    texts_.text = [this](int id) { return tok_.token_bytes(id); };
  }
  ~HttpServer() { workers_.join(); }

  // Binds and starts accepting (port 0: any free port; see port()).
  void listen(const tcp::endpoint& ep) {
    acceptor_.open(ep.protocol());
    acceptor_.set_option(asio::socket_base::reuse_address(true));
    acceptor_.bind(ep);
    acceptor_.listen(asio::socket_base::max_listen_connections);
    port_ = acceptor_.local_endpoint().port();
    asio::co_spawn(io_, accept_loop(), asio::detached);
  }
  unsigned short port() const { return port_; }
  // Stops accepting; connections end with the io_context.
  void close() {
    boost::system::error_code ec;
    acceptor_.close(ec);
  }

  // Graceful stop (call on the I/O thread, e.g. from a signal_set handler): /ready fails
  // from now on, idle connections close, requests that run go on and their connections
  // close after their answer. New connections are still accepted, each for one request
  // (probes: /health 200, /ready 503; generation: 503 shutting_down). After `timeout`, what
  // still runs is stopped through the service (streams end with an error event and [DONE],
  // others get 503); `grace` later, every connection left is closed. Once no connection is
  // left the listener closes and on_drained runs (the server then holds no work on the
  // io_context). A second call does nothing.
  void shutdown(std::chrono::milliseconds timeout,
                std::chrono::milliseconds grace = std::chrono::milliseconds(2000),
                std::function<void()> on_drained = {}) {
    if (draining_) return;
    draining_ = true;
    grace_ = grace;
    on_drained_ = std::move(on_drained);
    for (auto& c : conns_)
      if (!c.busy) c.stream->cancel();  // waiting for a next request: none will be read
    if (conns_.empty()) {
      drained();
      return;
    }
    drain_timer_.expires_after(timeout);
    drain_timer_.async_wait([this](error_code ec) {
      if (ec || conns_.empty()) return;
      svc_.stop();  // fails what is in flight with errc::stopped: every answer ends
      drain_timer_.expires_after(grace_);
      drain_timer_.async_wait([this](error_code ec2) {
        if (ec2) return;
        for (auto& c : conns_) c.stream->close();
      });
    });
  }
  // Ends everything now (a second signal): the service stops, every connection closes.
  void shutdown_now() {
    shutdown(std::chrono::milliseconds(0), std::chrono::milliseconds(0));
    close();
    drain_timer_.cancel();
    svc_.stop();
    for (auto& c : conns_) c.stream->close();
  }
  bool draining() const noexcept { return draining_; }
  const HttpCounters& counters() const noexcept { return counters_; }

 private:
  using awaitable = asio::awaitable<void>;
  using Request = boost::beast::http::request<boost::beast::http::string_body>;
  using Stream = boost::beast::tcp_stream;

  // The last connection of a drain has ended: the listener closes, on_drained runs (posted:
  // outside any session).
  void drained() {
    close();
    if (auto f = std::exchange(on_drained_, nullptr)) asio::post(io_, std::move(f));
  }

  // One open connection; busy while it has a request to answer.
  struct Conn {
    Stream* stream;
    bool busy = false;
  };

  // Out of descriptors (or kernel memory): the connection stays in the backlog and the next
  // accept fails the same way at once; retrying without a pause spins the I/O thread.
  static bool out_of_resources(const error_code& ec) {
    return ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space ||
           ec == asio::error::no_memory ||
           (ec.category() == asio::error::get_system_category() && ec.value() == ENFILE);
  }

  awaitable accept_loop() {
    asio::steady_timer backoff(io_);
    std::chrono::milliseconds pause{0};
    for (;;) {
      error_code ec;
      tcp::socket sock =
          co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
        ++counters_.accept_errors;
        if (out_of_resources(ec)) {
          // 10 ms, doubling to 1 s; a success resets it. Other clients are served meanwhile.
          pause =
              std::clamp(pause * 2, std::chrono::milliseconds(10), std::chrono::milliseconds(1000));
          backoff.expires_after(pause);
          co_await backoff.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        }
        continue;
      }
      pause = std::chrono::milliseconds(0);
      if (draining_ && !acceptor_.is_open()) continue;  // drained: closes it
      if (cfg_.max_connections && std::size_t(counters_.connections_open) >= cfg_.max_connections) {
        ++counters_.connections_refused;
        asio::co_spawn(io_, refuse(std::move(sock)), asio::detached);
        continue;
      }
      // SSE writes are small and latency-bound: no Nagle (it would hold a token back until
      // the client's delayed ACK, ~40 ms).
      sock.set_option(tcp::no_delay(true), ec);
      ++counters_.connections_open;  // counted here: co_spawn starts the session later
      asio::co_spawn(io_, session(std::move(sock)), asio::detached);
    }
  }

  // Over max_connections: a 503 and a lingering close, without reading the request.
  awaitable refuse(tcp::socket sock) {
    Stream stream(std::move(sock));
    const auto e =
        openai::make_error(503, "too many open connections; retry later", std::string(),
                           std::string("too_many_connections"), std::string("server_error"));
    co_await send_error(stream, e, 11, false);
    co_await linger_close(stream, std::chrono::milliseconds(1000));
  }

  // Closes after a shutdown of our sending side. A client still sending (a body we did not
  // read) would get a reset, and with it lose our response, if we closed at once: drain,
  // bounded in time and bytes, until it sees the response and closes its end.
  static awaitable linger_close(Stream& stream, std::chrono::milliseconds linger) {
    error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (linger.count() > 0) {
      char sink[16384];
      std::size_t drained = 0;
      stream.expires_after(linger);
      while (!ec && drained < (std::size_t(64) << 20)) {
        drained += co_await stream.async_read_some(asio::buffer(sink),
                                                   asio::redirect_error(asio::use_awaitable, ec));
      }
    }
    stream.socket().close(ec);
  }

  awaitable session(tcp::socket sock) {
    namespace http = boost::beast::http;
    Stream stream(std::move(sock));
    conns_.push_front(Conn{&stream});
    const auto self = conns_.begin();
    struct Unregister {
      HttpServer* srv;
      typename std::list<Conn>::iterator it;
      ~Unregister() {
        srv->conns_.erase(it);
        --srv->counters_.connections_open;
        if (srv->draining_ && srv->conns_.empty()) {
          srv->drain_timer_.cancel();
          srv->drained();
        }
      }
    } unregister{this, self};
    boost::beast::flat_buffer buf;
    bool unread_body = false;  // an error answered a request whose body we did not read
    // Accepted during a drain: one request (a probe), read within the drain's grace.
    const bool late = draining_;
    try {
      for (bool first = true; first || !draining_; first = false) {
        http::request_parser<http::string_body> parser;
        parser.body_limit(cfg_.max_body_bytes);
        parser.header_limit(64 * 1024);
        error_code ec;
        self->busy = false;
        stream.expires_after(late ? std::min(cfg_.idle_timeout, grace_) : cfg_.idle_timeout);
        co_await http::async_read(stream, buf, parser,
                                  asio::redirect_error(asio::use_awaitable, ec));
        stream.expires_never();
        self->busy = true;
        if (ec) {
          if (ec == http::error::body_limit) {
            const auto e = openai::make_error(
                413, "the request body is over " + std::to_string(cfg_.max_body_bytes) + " bytes",
                std::string(), std::string("request_too_large"));
            unread_body = true;
            co_await send_error(stream, e, 11, false);
          } else if (ec != http::error::end_of_stream &&
                     ec.category() == error_code(http::error::bad_target).category()) {
            const auto e = openai::make_error(400, "malformed HTTP request: " + ec.message());
            unread_body = true;
            co_await send_error(stream, e, 11, false);
          }
          break;
        }
        Request req = parser.release();
        const bool keep = req.keep_alive();
        const bool ok = co_await handle(stream, req);
        if (!ok || !keep) break;
      }
    } catch (const std::exception&) {
      // A failed write or anything unexpected ends this connection only.
    }
    self->busy = true;  // closing: a shutdown must not cancel the linger below
    co_await linger_close(
        stream, unread_body ? std::chrono::milliseconds(2000) : std::chrono::milliseconds(0));
  }

  // ---- responses ----------------------------------------------------------------------
  asio::awaitable<bool> send(Stream& stream, unsigned status, std::string body,
                             const char* content_type, unsigned version, bool keep) {
    namespace http = boost::beast::http;
    http::response<http::string_body> res{http::status(status), version};
    res.set(http::field::server, "eexit");
    res.set(http::field::content_type, content_type);
    res.keep_alive(keep && !draining_);  // draining: this connection closes after it
    res.body() = std::move(body);
    res.prepare_payload();
    error_code ec;
    stream.expires_after(cfg_.write_timeout);
    co_await http::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
    stream.expires_never();
    co_return !ec;
  }
  asio::awaitable<bool> send_json(Stream& stream, unsigned status, const openai::json& j,
                                  unsigned version, bool keep) {
    co_return co_await send(stream, status, openai::dump(j), "application/json", version, keep);
  }
  asio::awaitable<bool> send_error(Stream& stream, const openai::ApiError& e, unsigned version,
                                   bool keep) {
    co_return co_await send_json(stream, unsigned(e.status), openai::error_body(e), version, keep);
  }

  // ---- routing ------------------------------------------------------------------------
  // What to answer with, for everything but generation (decided outside any coroutine:
  // GCC 12 miscompiles string literals inside co_await expressions).
  struct Simple {
    unsigned status = 200;
    std::string body;
    std::string content_type = "application/json";
    bool generate = false, chat = false;
  };

  Simple route(const Request& req) const {
    namespace http = boost::beast::http;
    std::string target(req.target());
    if (auto q = target.find('?'); q != std::string::npos) target.resize(q);
    const bool is_get = req.method() == http::verb::get, is_post = req.method() == http::verb::post;
    auto error = [](const openai::ApiError& e) {
      return Simple{unsigned(e.status), openai::dump(openai::error_body(e)), "application/json"};
    };
    auto not_allowed = [&] {
      return error(openai::make_error(405, "method not allowed", "", "method_not_allowed"));
    };
    // /health and /ready stay open for load balancers and probes; /metrics tells request
    // counts and the model's shape, so it needs the key unless metrics_public.
    if (target == "/health") {
      if (!is_get) return not_allowed();
      return Simple{200, "{\"status\":\"ok\"}"};
    }
    // Readiness: the model is loaded before the server listens, so only a drain fails it.
    if (target == "/ready") {
      if (!is_get) return not_allowed();
      if (draining_) return Simple{503, "{\"status\":\"draining\"}"};
      return Simple{200, "{\"status\":\"ready\"}"};
    }
    const bool needs_key =
        target.rfind("/v1/", 0) == 0 || (target == "/metrics" && !cfg_.metrics_public);
    if (needs_key && !cfg_.api_key.empty()) {
      const auto auth = req[http::field::authorization];
      if (auth != "Bearer " + cfg_.api_key)
        return error(
            openai::make_error(401, "Incorrect or missing API key", "", "invalid_api_key"));
    }
    if (target == "/metrics") {
      if (!is_get) return not_allowed();
      return Simple{200, prometheus_text(svc_.metrics()) + prometheus_text(counters_),
                    "text/plain; version=0.0.4"};
    }
    if (target == "/v1/models") {
      if (!is_get) return not_allowed();
      openai::json model = {{"id", cfg_.limits.model_name},
                            {"object", "model"},
                            {"created", created_},
                            {"owned_by", "eexit"},
                            {"max_model_len", cfg_.limits.context}};
      return Simple{200,
                    openai::dump({{"object", "list"}, {"data", openai::json::array({model})}})};
    }
    if (target == "/v1/completions" || target == "/v1/chat/completions") {
      if (!is_post) return not_allowed();
      if (draining_)
        return error(openai::make_error(503, "the server is shutting down", std::string(),
                                        std::string("shutting_down"), std::string("server_error")));
      Simple g;
      g.generate = true;
      g.chat = target == "/v1/chat/completions";
      return g;
    }
    return error(openai::make_error(404, "no route for " + target, "", "not_found"));
  }

  asio::awaitable<bool> handle(Stream& stream, Request& req) {
    const unsigned v = req.version();
    const bool keep = req.keep_alive();
    Simple r = route(req);
    if (r.generate) co_return co_await generate(stream, req, r.chat);
    co_return co_await send(stream, r.status, std::move(r.body), r.content_type.c_str(), v, keep);
  }

  // A generation request, parsed, checked and tokenized (on a worker: see prepare).
  struct Prepared {
    std::optional<openai::ApiError> error;  // what to answer instead
    openai::ParsedRequest pr;
    std::vector<std::int32_t> prompt;
  };

  // Parses, checks and tokenizes a body. Runs on the worker pool: reads only const state.
  // Every failure becomes an OpenAI-shaped error, a client's type errors among them.
  Prepared prepare(const std::string& text, bool chat) const {
    Prepared p;
    try {
      openai::json body;
      try {
        body = openai::json::parse(text);
      } catch (const openai::json::exception& e) {
        throw openai::make_error(400, std::string("invalid JSON body: ") + e.what());
      }
      try {
        p.pr = openai::parse_request(body, chat, cfg_.limits);
      } catch (const openai::json::exception& e) {
        // parse_request checks each type before reading it; this is a net for one it missed.
        throw openai::make_error(400, std::string("a field has the wrong type: ") + e.what());
      }
      p.prompt = tokenize(p.pr);
      const std::int32_t ctx = cfg_.limits.context;
      const auto n = std::int32_t(p.prompt.size());
      std::int32_t max_tokens =
          p.pr.max_tokens ? *p.pr.max_tokens : (chat ? ctx - n : cfg_.default_max_tokens);
      // OpenAI's rule, not the engine's: asking for more than the context holds is an error
      // (the engine would stop at the context's end).
      if (p.pr.max_tokens && n + max_tokens > ctx)
        openai::bad("max_tokens",
                    "This model's maximum context length is " + std::to_string(ctx) +
                        " tokens; you requested " + std::to_string(n + max_tokens) + " (" +
                        std::to_string(n) + " in the prompt, " + std::to_string(max_tokens) +
                        " in the completion)",
                    400, "context_length_exceeded");
      p.pr.gen.max_tokens = std::max(0, std::min(max_tokens, ctx - n));
      p.pr.gen.prompt = p.prompt;
      // The engine's own checks, here so that a refusal carries its code (the service only
      // learns that add_request threw); add_request repeats them.
      try {
        svc_.validate(p.pr.gen);
      } catch (const request_error& e) {
        throw openai::api_error_of(e, chat);
      }
    } catch (const openai::ApiError& e) {
      p.error = e;
    } catch (const std::exception& e) {
      p.error = openai::make_error(500, std::string("could not prepare the request: ") + e.what(),
                                   std::string(), std::string(), std::string("server_error"));
    }
    return p;
  }

  // ---- generation ---------------------------------------------------------------------
  asio::awaitable<bool> generate(Stream& stream, Request& req, bool chat) {
    namespace http = boost::beast::http;
    const unsigned v = req.version();
    const bool keep = req.keep_alive();
    // Off the I/O thread: parsing and tokenizing a 1 MiB body can take seconds. The job is
    // a named, trivially destructible lambda: GCC 12 destroys non-trivial temporaries of a
    // co_await expression wrongly (heap corruption).
    const std::string body = std::move(req.body());
    const auto job = [this, &body, chat] { return prepare(body, chat); };
    const auto pool = workers_.get_executor();
    Prepared prep = co_await async_run_on(pool, job, asio::use_awaitable);
    if (prep.error) co_return co_await send_error(stream, *prep.error, v, keep);
    openai::ParsedRequest& pr = prep.pr;
    const std::int64_t n_prompt = std::int64_t(prep.prompt.size());
    const std::string id = (chat ? "chatcmpl-" : "cmpl-") + std::to_string(++next_id_);
    const std::int64_t created = std::chrono::duration_cast<std::chrono::seconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count();

    auto tsp = std::make_shared<TokenStream>(
        svc_.submit(std::move(pr.gen), co_await asio::this_coro::executor));
    TokenStream& ts = *tsp;
    // Watch the socket while the request runs: a client that goes away is noticed now, not
    // at the next write (a non-streaming request has none until it finishes).
    auto done = std::make_shared<bool>(false);
    const bool probe = !pr.stream && v >= 11;
    asio::co_spawn(io_, watch_disconnect(stream.socket(), tsp, done, probe), asio::detached);
    struct StopWatching {
      std::shared_ptr<bool> done;
      tcp::socket& sock;
      void operator()() {
        if (*done) return;
        *done = true;
        error_code ignored;
        sock.cancel(ignored);
      }
      ~StopWatching() { (*this)(); }
    } stop_watching{done, stream.socket()};
    error_code ec;
    RequestOutput o = co_await ts.async_next(asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      stop_watching();  // no probe may interleave with the answer
      co_return co_await send_failure(stream, ec, o, v, keep);
    }

    if (!pr.stream) {
      CompletionAccumulator acc;
      for (;;) {
        acc.add(o);
        if (o.finished()) break;
        o = co_await ts.async_next(asio::redirect_error(asio::use_awaitable, ec));
        if (ec) break;
      }
      stop_watching();
      if (ec) co_return co_await send_failure(stream, ec, o, v, keep);
      const Completion c = acc.take(o.id);
      co_return co_await send_json(
          stream, 200, openai::response_body(pr, id, created, c, n_prompt, texts_), v, keep);
    }

    // SSE: HTTP/1.1 as chunked transfer, one chunk per step. HTTP/1.0 has no chunked
    // encoding: the body is close-delimited (no length, the connection ends it).
    const bool chunked = v >= 11;
    http::response<http::empty_body> res{http::status::ok, v};
    res.set(http::field::server, "eexit");
    res.set(http::field::content_type, "text/event-stream");
    res.set(http::field::cache_control, "no-cache");
    res.keep_alive(chunked && keep && !draining_);
    res.chunked(chunked);
    http::response_serializer<http::empty_body> sr{res};
    stream.expires_after(cfg_.write_timeout);
    co_await http::async_write_header(stream, sr, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return false;  // ts aborts the request when it goes out of scope
    bool first = true;
    std::size_t offset = 0;
    std::int64_t generated = 0;
    for (;;) {
      std::string payload;
      if (ec) {  // failed after the headers went out: an error event, then [DONE]
        const auto e = openai::api_error_of(ec, o.error);
        payload = "data: " + openai::dump(openai::error_body(e)) + "\n\n";
        payload += "data: [DONE]\n\n";
      } else {
        generated += std::int64_t(o.tokens.size());
        std::optional<finish_reason> fin;
        if (o.finished()) fin = o.finish;
        if (!o.tokens.empty() || !o.text.empty() || fin || first) {
          auto chunk =
              openai::chunk_body(pr, id, created, o.tokens, o.text, fin, first, offset, texts_);
          if (fin) {
            chunk["usage"] = openai::usage(n_prompt, generated, o.stats.cached_tokens);
            if (auto sp = openai::speculation(o.stats); !sp.is_null())
              chunk["speculation"] = std::move(sp);
          }
          payload = "data: " + openai::dump(chunk) + "\n\n";
          first = false;
        }
        offset += o.text.size();
        if (fin) {
          if (pr.include_usage)
            payload += "data: " +
                       openai::dump(openai::usage_chunk(pr, id, created, n_prompt, generated,
                                                        o.stats.cached_tokens)) +
                       "\n\n";
          payload += "data: [DONE]\n\n";
        }
      }
      const bool last = bool(ec) || o.finished();
      if (!payload.empty()) {
        error_code wec;
        stream.expires_after(cfg_.write_timeout);
        if (chunked)
          co_await asio::async_write(stream, http::make_chunk(asio::buffer(payload)),
                                     asio::redirect_error(asio::use_awaitable, wec));
        else
          co_await asio::async_write(stream, asio::buffer(payload),
                                     asio::redirect_error(asio::use_awaitable, wec));
        if (wec) {
          ts.abort();  // the client went away: free its blocks now
          co_return false;
        }
      }
      if (last) break;
      stream.expires_never();
      o = co_await ts.async_next(asio::redirect_error(asio::use_awaitable, ec));
    }
    if (!chunked) co_return false;  // the close ends the body
    error_code wec;
    stream.expires_after(cfg_.write_timeout);
    co_await asio::async_write(stream, http::make_chunk_last(),
                               asio::redirect_error(asio::use_awaitable, wec));
    stream.expires_never();
    co_return !wec && !ec;
  }

  // Aborts `ts` when the peer goes away while its request runs; stops (touching nothing)
  // once *done is set and the wait is cancelled. A pipelined next request (data) ends the
  // watch. A FIN (EOF) is not a disconnect: a client that half-closed (shutdown(SHUT_WR))
  // still reads its answer. A peer that closed fully answers our next bytes with a reset,
  // so after a FIN the watch waits for one (wait_error: EPOLLERR/EPOLLHUP), and a
  // non-streaming HTTP/1.1 request, which writes nothing until it finishes, is probed with
  // an interim "102 Processing" (a client must skip 1xx responses it does not expect, RFC
  // 9110 §15.2). A stream's own chunks are its probe; HTTP/1.0 has no 1xx, so there a
  // closed peer is noticed at the answer.
  static awaitable watch_disconnect(tcp::socket& sock, std::shared_ptr<TokenStream> ts,
                                    std::shared_ptr<bool> done, bool probe) {
    error_code ec;
    co_await sock.async_wait(tcp::socket::wait_read, asio::redirect_error(asio::use_awaitable, ec));
    if (ec || *done) co_return;
    char c;
    (void)sock.receive(asio::buffer(&c, 1), tcp::socket::message_peek, ec);
    if (!ec) co_return;  // data: a pipelined request, not our business
    if (ec != asio::error::eof) {
      ts->abort();  // a reset
      co_return;
    }
    if (probe) {
      static constexpr char processing[] = "HTTP/1.1 102 Processing\r\n\r\n";
      sock.send(asio::buffer(processing, sizeof processing - 1), 0, ec);
      if (ec) {
        ts->abort();
        co_return;
      }
    }
    for (int spurious = 0; spurious < 1000; ++spurious) {
      co_await sock.async_wait(tcp::socket::wait_error,
                               asio::redirect_error(asio::use_awaitable, ec));
      if (ec || *done) co_return;
      if (peer_reset(sock)) {
        ts->abort();
        co_return;
      }
    }
  }

  // After a FIN, recv reports EOF even once a reset came in (Linux checks "FIN seen" before
  // the pending error): ask the socket's error and TCP state instead.
  static bool peer_reset(tcp::socket& sock) {
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(sock.native_handle(), SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0)
      return true;
#ifdef TCP_INFO
    tcp_info ti{};
    len = sizeof ti;
    return ::getsockopt(sock.native_handle(), IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 &&
           ti.tcpi_state == TCP_CLOSE;
#else
    return false;
#endif
  }

  asio::awaitable<bool> send_failure(Stream& stream, error_code ec, const RequestOutput& o,
                                     unsigned v, bool keep) {
    co_return co_await send_error(stream, openai::api_error_of(ec, o.error), v, keep);
  }

  std::vector<std::int32_t> tokenize(const openai::ParsedRequest& pr) const {
    // Ids are checked against the vocabulary by Engine::validate.
    if (!pr.prompt_ids.empty()) return pr.prompt_ids;
    std::vector<std::int32_t> ids;
    const std::string text =
        pr.chat ? format_chat(cfg_.chat_style, pr.messages, cfg_.bos_text, cfg_.eos_text)
                : pr.prompt_text.value_or("");
    for (int t : tok_.encode(text, true)) ids.push_back(t);
    if (ids.empty() && cfg_.bos_id >= 0) ids.push_back(cfg_.bos_id);  // else: the engine refuses
    return ids;
  }

  asio::io_context& io_;
  Service& svc_;
  const Tok& tok_;
  HttpConfig cfg_;
  tcp::acceptor acceptor_;
  unsigned short port_ = 0;
  asio::thread_pool workers_;  // prepare(): JSON parsing, chat formatting, tokenizing
  asio::steady_timer drain_timer_;
  std::chrono::milliseconds grace_{2000};
  std::function<void()> on_drained_;
  bool draining_ = false;
  std::list<Conn> conns_;
  HttpCounters counters_;
  openai::TokenTexts texts_;
  std::uint64_t next_id_ = 0;
  std::int64_t created_ = std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
};

}  // namespace eexit::serve
