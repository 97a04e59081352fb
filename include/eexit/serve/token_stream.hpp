#pragma once
// TokenStream: the caller's end of one request in an EngineService. The engine thread
// delivers each step's RequestOutput into the request's Channel; async_next hands them
// over, one at a time, through any Asio completion token. Destroying an unfinished stream
// aborts its request.
//
// Boost 1.74 has no cancellation slots (DESIGN.md §6): aborts are explicit calls.
#include <utility>  // before Asio: GCC 12 with Boost 1.74 needs it (DESIGN.md §6)
// Asio and the standard library:
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <type_traits>

#include "eexit/engine/request.hpp"
#include "eexit/serve/errors.hpp"

namespace eexit::serve {

namespace asio = boost::asio;

namespace detail {

// A move-only type-erased callable (std::move_only_function is C++23). Completion
// handlers (use_awaitable's among them) are move-only, so std::function cannot hold them.
template <class Sig>
class unique_function;
template <class R, class... A>
class unique_function<R(A...)> {
  struct base {
    virtual ~base() = default;
    virtual R call(A... a) = 0;
  };
  template <class F>
  struct impl final : base {
    explicit impl(F&& fn) : f(std::move(fn)) {}
    R call(A... a) override { return f(std::forward<A>(a)...); }
    F f;
  };
  std::unique_ptr<base> p_;

 public:
  unique_function() = default;
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, unique_function>>>
  unique_function(F&& f) : p_(std::make_unique<impl<std::decay_t<F>>>(std::forward<F>(f))) {}
  explicit operator bool() const noexcept { return bool(p_); }
  R operator()(A... a) { return p_->call(std::forward<A>(a)...); }
};

// What one request's outputs travel through: filled by the engine thread, drained by
// TokenStream::async_next (at most one waiting handler at a time).
struct Channel {
  std::mutex m;
  std::deque<std::pair<error_code, RequestOutput>> queue;
  unique_function<void(error_code, RequestOutput)> waiter;
  bool closed = false;    // the last output has been queued or handed over
  bool consumed = false;  // ... and handed to the caller

  void deliver(error_code ec, RequestOutput o, bool last) {
    std::unique_lock lk(m);
    if (closed) return;
    closed = last;
    if (waiter) {
      auto w = std::move(waiter);
      waiter = {};
      consumed = last;
      lk.unlock();
      w(ec, std::move(o));
      return;
    }
    queue.emplace_back(ec, std::move(o));
  }
};

// What a TokenStream needs from its (templated) service.
class ServiceCore {
 public:
  virtual void abort(std::uint64_t ticket) = 0;

 protected:
  ~ServiceCore() = default;
};

}  // namespace detail

// The caller's end of one request. Move-only; destroying it before its last output aborts
// the request. The service must outlive its streams.
class TokenStream {
 public:
  TokenStream(detail::ServiceCore* svc, std::uint64_t ticket, std::shared_ptr<detail::Channel> ch,
              asio::any_io_executor ex)
      : svc_(svc), ticket_(ticket), ch_(std::move(ch)), ex_(std::move(ex)) {}
  TokenStream(TokenStream&& o) noexcept
      : svc_(std::exchange(o.svc_, nullptr)),
        ticket_(o.ticket_),
        ch_(std::move(o.ch_)),
        ex_(std::move(o.ex_)) {}
  TokenStream& operator=(TokenStream&& o) noexcept {
    if (this != &o) {
      abort();
      svc_ = std::exchange(o.svc_, nullptr);
      ticket_ = o.ticket_;
      ch_ = std::move(o.ch_);
      ex_ = std::move(o.ex_);
    }
    return *this;
  }
  TokenStream(const TokenStream&) = delete;
  TokenStream& operator=(const TokenStream&) = delete;
  ~TokenStream() { abort(); }

  using executor_type = asio::any_io_executor;
  executor_type get_executor() const { return ex_; }
  std::uint64_t ticket() const noexcept { return ticket_; }

  // True once the last output (finished, failed or rejected) was handed over.
  bool done() const {
    if (!ch_) return true;
    std::lock_guard lk(ch_->m);
    return ch_->consumed;
  }

  // Completes with the next RequestOutput of this request: void(error_code, RequestOutput).
  // The last one has finished() set (or an error: errc::rejected, engine_error,
  // engine_fault, stopped, queue_full); after it, asio::error::eof. One at a time.
  template <class CompletionToken>
  auto async_next(CompletionToken&& token) {
    return asio::async_initiate<CompletionToken, void(error_code, RequestOutput)>(
        [this](auto handler) { initiate_next(std::move(handler)); }, token);
  }

  // Asks the engine to drop the request (idempotent; nothing happens once it finished).
  // The stream then gets a last output with finish_reason::abort.
  void abort() noexcept {
    if (!svc_ || !ch_) return;
    {
      std::lock_guard lk(ch_->m);
      if (ch_->closed) return;
    }
    svc_->abort(ticket_);
  }

 private:
  template <class Handler>
  void initiate_next(Handler handler) {
    auto ex = asio::get_associated_executor(handler, ex_);
    if (!ch_) {
      asio::post(ex, Bound<Handler>{std::move(handler), asio::error::eof, {}});
      return;
    }
    std::unique_lock lk(ch_->m);
    if (!ch_->queue.empty()) {
      auto [ec, o] = std::move(ch_->queue.front());
      ch_->queue.pop_front();
      if (ch_->closed && ch_->queue.empty()) ch_->consumed = true;
      lk.unlock();
      asio::post(ex, Bound<Handler>{std::move(handler), ec, std::move(o)});
      return;
    }
    if (ch_->closed) {
      lk.unlock();
      asio::post(ex, Bound<Handler>{std::move(handler), asio::error::eof, {}});
      return;
    }
    // Keep the handler's executor alive until the engine thread completes it.
    auto work = asio::make_work_guard(ex);
    ch_->waiter = [h = std::move(handler), work = std::move(work)](error_code ec,
                                                                   RequestOutput o) mutable {
      auto ex2 = work.get_executor();
      asio::post(ex2, Bound<Handler>{std::move(h), ec, std::move(o)});
      work.reset();
    };
  }

  // The handler with its arguments, keeping the handler's associated executor.
  template <class Handler>
  struct Bound {
    Handler h;
    error_code ec;
    RequestOutput o;
    using executor_type = asio::associated_executor_t<Handler>;
    executor_type get_executor() const noexcept { return asio::get_associated_executor(h); }
    void operator()() { std::move(h)(ec, std::move(o)); }
  };

  detail::ServiceCore* svc_;
  std::uint64_t ticket_;
  std::shared_ptr<detail::Channel> ch_;
  asio::any_io_executor ex_;
};

}  // namespace eexit::serve
