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

#include "eexit/engine/completion.hpp"
#include "eexit/engine/request.hpp"
#include "eexit/serve/token_stream.hpp"

namespace eexit::serve {

// The one Completion type, the engine's (engine/completion.hpp), also under serve::.
using eexit::Completion;

namespace detail {
template <class Handler, class OnToken>
struct GenerateOp {
  Handler handler;
  OnToken on_token;
  std::shared_ptr<TokenStream> stream;
  std::shared_ptr<CompletionAccumulator> acc;

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
    acc->add(o);
    if (any) on_token(static_cast<const RequestOutput&>(o));
    if (ec || o.finished()) {
      Completion done = acc->take(o.id);
      if (!o.finished()) {  // an error without a last output of the engine's
        done.finish = finish_reason::error;
        done.error = o.error;
      }
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
        Op{std::move(handler), std::move(cb), std::move(stream),
           std::make_shared<CompletionAccumulator>()}
            .start();
      },
      token, std::move(req), std::move(on_token));
}

}  // namespace eexit::serve
