#pragma once
// HttpServer: the OpenAI-compatible HTTP/1.1 front of an EngineService (Boost.Beast, one
// coroutine per connection, as Beast's C++20 examples). Keep-alive; a body limit on the
// parser; tcp_stream timeouts for idle and slow clients, for reads and for writes; SSE
// streaming as chunked transfer, one chunk per engine step, flushed as it comes. A client
// that goes away mid-stream (a write fails or times out) has its request aborted, so its
// KV blocks are freed by the engine's next step.
//
// Run the io_context on ONE thread: sessions share no strand.
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "eexit/serve/engine_service.hpp"
#include "eexit/serve/openai.hpp"
#include "eexit/text/tokenizer.hpp"

namespace eexit::serve {

struct HttpConfig {
  openai::Limits limits;  // model name, context, server policy
  std::string api_key;    // empty = no check
  std::size_t max_body_bytes = 1 << 20;
  std::chrono::milliseconds idle_timeout{30000};   // waiting for (the rest of) a request
  std::chrono::milliseconds write_timeout{30000};  // a client that does not read
  openai::ChatStyle chat_style = openai::ChatStyle::plain;
  std::string bos_text = "<s>", eos_text = "</s>";  // for chat templates
  std::int32_t bos_id = -1;                         // prompt of an empty text
  std::int32_t default_max_tokens = 16;             // completions without max_tokens
};

template <class Service>
class HttpServer {
 public:
  using tcp = asio::ip::tcp;

  HttpServer(asio::io_context& io, Service& svc, const Tokenizer& tok, HttpConfig cfg)
      : io_(io), svc_(svc), tok_(tok), cfg_(std::move(cfg)), acceptor_(io) {
    texts_.text = [this](int id) { return tok_.token_bytes(id); };
  }

  // Binds and starts accepting (port 0: any free port; see port()).
  void listen(const tcp::endpoint& ep) {
    acceptor_.open(ep.protocol());
    acceptor_.set_option(asio::socket_base::reuse_address(true));
    acceptor_.bind(ep);
    acceptor_.listen(asio::socket_base::max_listen_connections);
    asio::co_spawn(io_, accept_loop(), asio::detached);
  }
  unsigned short port() const { return acceptor_.local_endpoint().port(); }
  // Stops accepting; connections end with the io_context.
  void close() {
    boost::system::error_code ec;
    acceptor_.close(ec);
  }

 private:
  using awaitable = asio::awaitable<void>;
  using Request = boost::beast::http::request<boost::beast::http::string_body>;
  using Stream = boost::beast::tcp_stream;

  awaitable accept_loop() {
    for (;;) {
      error_code ec;
      tcp::socket sock =
          co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
        continue;  // e.g. too many open files: keep serving the others
      }
      // SSE writes are small and latency-bound: no Nagle (it would hold a token back until
      // the client's delayed ACK, ~40 ms).
      sock.set_option(tcp::no_delay(true), ec);
      asio::co_spawn(io_, session(std::move(sock)), asio::detached);
    }
  }

  awaitable session(tcp::socket sock) {
    namespace http = boost::beast::http;
    Stream stream(std::move(sock));
    boost::beast::flat_buffer buf;
    bool unread_body = false;  // an error answered a request whose body we did not read
    try {
      for (;;) {
        http::request_parser<http::string_body> parser;
        parser.body_limit(cfg_.max_body_bytes);
        parser.header_limit(64 * 1024);
        error_code ec;
        stream.expires_after(cfg_.idle_timeout);
        co_await http::async_read(stream, buf, parser,
                                  asio::redirect_error(asio::use_awaitable, ec));
        stream.expires_never();
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
    error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (unread_body) {
      // Lingering close: a client still sending the body we refused would get a reset, and
      // with it lose our error response, if we closed now. Drain (bounded in time and
      // bytes) until it sees the response and closes its end.
      char sink[16384];
      std::size_t drained = 0;
      stream.expires_after(std::chrono::seconds(2));
      while (!ec && drained < (std::size_t(64) << 20)) {
        drained += co_await stream.async_read_some(asio::buffer(sink),
                                                   asio::redirect_error(asio::use_awaitable, ec));
      }
    }
    stream.socket().close(ec);
  }

  // ---- responses ----------------------------------------------------------------------
  asio::awaitable<bool> send(Stream& stream, unsigned status, std::string body,
                             const char* content_type, unsigned version, bool keep) {
    namespace http = boost::beast::http;
    http::response<http::string_body> res{http::status(status), version};
    res.set(http::field::server, "eexit");
    res.set(http::field::content_type, content_type);
    res.keep_alive(keep);
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
    if (target == "/health") {
      if (!is_get) return not_allowed();
      return Simple{200, "{\"status\":\"ok\"}"};
    }
    if (target == "/metrics") {
      if (!is_get) return not_allowed();
      return Simple{200, openai::prometheus_text(svc_.metrics()), "text/plain; version=0.0.4"};
    }
    if (target.rfind("/v1/", 0) == 0 && !cfg_.api_key.empty()) {
      const auto auth = req[http::field::authorization];
      if (auth != "Bearer " + cfg_.api_key)
        return error(
            openai::make_error(401, "Incorrect or missing API key", "", "invalid_api_key"));
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

  // Parses and checks a generation request; an error to answer with, or nothing.
  std::optional<openai::ApiError> prepare(const Request& req, bool chat, openai::ParsedRequest& pr,
                                          std::vector<std::int32_t>& prompt) const {
    try {
      openai::json body;
      try {
        body = openai::json::parse(req.body());
      } catch (const openai::json::exception& e) {
        throw openai::make_error(400, std::string("invalid JSON body: ") + e.what());
      }
      pr = openai::parse_request(body, chat, cfg_.limits);
      prompt = tokenize(pr);
      const std::int32_t ctx = cfg_.limits.context;
      const auto n = std::int32_t(prompt.size());
      if (n >= ctx)
        openai::bad(chat ? "messages" : "prompt",
                    "This model's maximum context length is " + std::to_string(ctx) +
                        " tokens; the prompt has " + std::to_string(n),
                    400, "context_length_exceeded");
      std::int32_t max_tokens =
          pr.max_tokens ? *pr.max_tokens : (chat ? ctx - n : cfg_.default_max_tokens);
      if (pr.max_tokens && n + max_tokens > ctx)
        openai::bad("max_tokens",
                    "This model's maximum context length is " + std::to_string(ctx) +
                        " tokens; you requested " + std::to_string(n + max_tokens) + " (" +
                        std::to_string(n) + " in the prompt, " + std::to_string(max_tokens) +
                        " in the completion)",
                    400, "context_length_exceeded");
      pr.gen.max_tokens = std::min(max_tokens, ctx - n);
    } catch (const openai::ApiError& e) {
      return e;
    }
    return std::nullopt;
  }

  // ---- generation ---------------------------------------------------------------------
  asio::awaitable<bool> generate(Stream& stream, Request& req, bool chat) {
    namespace http = boost::beast::http;
    const unsigned v = req.version();
    const bool keep = req.keep_alive();
    openai::ParsedRequest pr;
    std::vector<std::int32_t> prompt;
    if (auto err = prepare(req, chat, pr, prompt))
      co_return co_await send_error(stream, *err, v, keep);
    pr.gen.prompt = prompt;
    const std::int64_t n_prompt = std::int64_t(prompt.size());
    const std::string id = (chat ? "chatcmpl-" : "cmpl-") + std::to_string(++next_id_);
    const std::int64_t created = std::chrono::duration_cast<std::chrono::seconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count();

    auto tsp = std::make_shared<TokenStream>(
        svc_.submit(std::move(pr.gen), co_await asio::this_coro::executor));
    TokenStream& ts = *tsp;
    // Watch the socket while the request runs: a client that hangs up is noticed now, not
    // at the next write (a non-streaming request has none until it finishes).
    auto done = std::make_shared<bool>(false);
    asio::co_spawn(io_, watch_disconnect(stream.socket(), tsp, done), asio::detached);
    struct StopWatching {
      std::shared_ptr<bool> done;
      tcp::socket& sock;
      ~StopWatching() {
        *done = true;
        error_code ignored;
        sock.cancel(ignored);
      }
    } stop_watching{done, stream.socket()};
    error_code ec;
    RequestOutput o = co_await ts.async_next(asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return co_await send_failure(stream, ec, o, v, keep);

    if (!pr.stream) {
      Completion c;
      for (;;) {
        for (auto& t : o.tokens) c.tokens.push_back(std::move(t));
        c.text += o.text;
        if (o.finished()) break;
        o = co_await ts.async_next(asio::redirect_error(asio::use_awaitable, ec));
        if (ec) co_return co_await send_failure(stream, ec, o, v, keep);
      }
      c.finish = o.finish;
      c.stats = o.stats;
      co_return co_await send_json(
          stream, 200, openai::response_body(pr, id, created, c, n_prompt, texts_), v, keep);
    }

    // SSE: chunked transfer, one chunk per step.
    http::response<http::empty_body> res{http::status::ok, v};
    res.set(http::field::server, "eexit");
    res.set(http::field::content_type, "text/event-stream");
    res.set(http::field::cache_control, "no-cache");
    res.keep_alive(keep);
    res.chunked(true);
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
        const auto e =
            openai::make_error(500, o.error.empty() ? ec.message() : o.error, std::string(),
                               std::string("engine_error"), std::string("server_error"));
        payload = "data: " + openai::dump(openai::error_body(e)) + "\n\n";
        payload += "data: [DONE]\n\n";
      } else {
        generated += std::int64_t(o.tokens.size());
        std::optional<finish_reason> fin;
        if (o.finished()) fin = o.finish;
        if (!o.tokens.empty() || !o.text.empty() || fin || first) {
          auto chunk =
              openai::chunk_body(pr, id, created, o.tokens, o.text, fin, first, offset, texts_);
          if (fin) chunk["usage"] = openai::usage(n_prompt, generated);
          payload = "data: " + openai::dump(chunk) + "\n\n";
          first = false;
        }
        offset += o.text.size();
        if (fin) {
          if (pr.include_usage)
            payload +=
                "data: " + openai::dump(openai::usage_chunk(pr, id, created, n_prompt, generated)) +
                "\n\n";
          payload += "data: [DONE]\n\n";
        }
      }
      const bool last = bool(ec) || o.finished();
      if (!payload.empty()) {
        error_code wec;
        stream.expires_after(cfg_.write_timeout);
        co_await asio::async_write(stream, http::make_chunk(asio::buffer(payload)),
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
    error_code wec;
    stream.expires_after(cfg_.write_timeout);
    co_await asio::async_write(stream, http::make_chunk_last(),
                               asio::redirect_error(asio::use_awaitable, wec));
    stream.expires_never();
    co_return !wec && !ec;
  }

  // Aborts `ts` when the peer closes its end while the request runs. Stops (touching
  // nothing) once *done is set and the wait is cancelled; a pipelined next request (data,
  // not EOF) ends the watch too.
  static awaitable watch_disconnect(tcp::socket& sock, std::shared_ptr<TokenStream> ts,
                                    std::shared_ptr<bool> done) {
    error_code ec;
    co_await sock.async_wait(tcp::socket::wait_read, asio::redirect_error(asio::use_awaitable, ec));
    if (ec || *done) co_return;
    char c;
    const std::size_t n = sock.receive(asio::buffer(&c, 1), tcp::socket::message_peek, ec);
    if (ec || n == 0) ts->abort();
  }

  asio::awaitable<bool> send_failure(Stream& stream, error_code ec, const RequestOutput& o,
                                     unsigned v, bool keep) {
    openai::ApiError e;
    e.message = o.error.empty() ? ec.message() : o.error;
    if (ec == errc::rejected) {
      e.status = 400;
    } else if (ec == errc::queue_full) {
      e.status = 429;
      e.code = "rate_limit_exceeded";
      e.type = "rate_limit_error";
    } else if (ec == errc::stopped) {
      e.status = 503;
      e.type = "server_error";
    } else {
      e.status = 500;
      e.type = "server_error";
      e.code = "engine_error";
    }
    co_return co_await send_error(stream, e, v, keep);
  }

  std::vector<std::int32_t> tokenize(const openai::ParsedRequest& pr) const {
    std::vector<std::int32_t> ids;
    if (!pr.prompt_ids.empty()) {
      for (auto t : pr.prompt_ids) {
        if (t >= tok_.vocab_size())
          openai::bad("prompt", "token id " + std::to_string(t) + " is outside the vocabulary");
        ids.push_back(t);
      }
      return ids;
    }
    const std::string text =
        pr.chat ? openai::format_chat(cfg_.chat_style, pr.messages, cfg_.bos_text, cfg_.eos_text)
                : pr.prompt_text.value_or("");
    for (int t : tok_.encode(text, true)) ids.push_back(t);
    if (ids.empty()) {
      if (cfg_.bos_id < 0) openai::bad(pr.chat ? "messages" : "prompt", "the prompt is empty");
      ids.push_back(cfg_.bos_id);
    }
    return ids;
  }

  asio::io_context& io_;
  Service& svc_;
  const Tokenizer& tok_;
  HttpConfig cfg_;
  tcp::acceptor acceptor_;
  openai::TokenTexts texts_;
  std::uint64_t next_id_ = 0;
  std::int64_t created_ = std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
};

}  // namespace eexit::serve
