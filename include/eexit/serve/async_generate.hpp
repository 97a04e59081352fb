#pragma once
// async_generate: one whole completion from any service with submit()/get_executor()
// (EngineService), with a per-step callback, through any Asio completion token.
#include <utility>  // before Asio: GCC 12 with Boost 1.74 needs it (DESIGN.md §6)
// Asio and the standard library:
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <memory>
#include <string>
#include <vector>

#include "eexit/engine/request.hpp"
#include "eexit/serve/token_stream.hpp"

namespace eexit::serve {

// A whole completion: every token of a request and how it ended.
struct Completion {
  std::vector<TokenEvent> tokens;
  std::string text;
  finish_reason finish = finish_reason::none;
  std::string error;
  RequestStats stats;
};

namespace detail {
template <class Handler, class OnToken>
struct GenerateOp {
  Handler handler;
  OnToken on_token;
  std::shared_ptr<TokenStream> stream;
  std::shared_ptr<Completion> acc;

  using executor_type = asio::associated_executor_t<Handler, asio::any_io_executor>;
  executor_type get_executor() const noexcept {
    return asio::get_associated_executor(handler, stream->get_executor());
  }

  void start() {
    auto s = stream;
    s->async_next(std::move(*this));
  }
  void operator()(error_code ec, RequestOutput o) {
    const bool any = !o.tokens.empty() || !o.text.empty();
    for (auto& t : o.tokens) acc->tokens.push_back(t);
    acc->text += o.text;
    if (any) on_token(static_cast<const RequestOutput&>(o));
    if (ec || o.finished()) {
      acc->finish = o.finished() ? o.finish : finish_reason::error;
      acc->error = o.error;
      acc->stats = std::move(o.stats);
      auto done = std::move(*acc);
      stream.reset();
      std::move(handler)(ec, std::move(done));
      return;
    }
    start();
  }
};
}  // namespace detail

// Submits `req` and completes with the whole Completion: void(error_code, Completion).
// on_token(const RequestOutput&) runs for each step that produced tokens or text, on the
// completion handler's executor (the service's default pool for plain callbacks without one).
template <class Service, class OnToken, class CompletionToken>
auto async_generate(Service& svc, GenerateRequest req, OnToken on_token, CompletionToken&& token) {
  return asio::async_initiate<CompletionToken, void(error_code, Completion)>(
      [&svc](auto handler, GenerateRequest r, OnToken cb) {
        // The stream's own executor is only a default: each step completes on the
        // handler's associated executor (GenerateOp::get_executor).
        auto stream = std::make_shared<TokenStream>(
            svc.submit(std::move(r), asio::any_io_executor(svc.get_executor())));
        using Op = detail::GenerateOp<decltype(handler), OnToken>;
        Op{std::move(handler), std::move(cb), std::move(stream), std::make_shared<Completion>()}
            .start();
      },
      token, std::move(req), std::move(on_token));
}

}  // namespace eexit::serve
