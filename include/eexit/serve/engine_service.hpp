#pragma once
// EngineService: one thread owns an Engine and runs its step loop; any thread submits
// requests and receives each step's output through Asio completion tokens (DESIGN.md §5).
//
//   engine thread:  wait (condition variable; asleep while idle)
//                   -> drain submissions and aborts -> engine.step()
//                   -> post each RequestOutput to its request's handler executor
//
// Callers get a TokenStream per request (async_next: one RequestOutput per step that
// produced something for it) or use async_generate for the whole completion with a
// per-step callback. Both accept any completion token: a callback, asio::use_future,
// asio::use_awaitable. An abort (TokenStream::abort, or destroying an unfinished stream)
// reaches the engine before its next step: the request's KV blocks are freed then.
// Faults never hang a request: a failed step fails its requests (finish_reason::error,
// errc::engine_error); an exception outside step() fails every request in flight
// (errc::engine_fault); stop() fails what is left (errc::stopped).
//
// Boost 1.74 (DESIGN.md §6): <utility> before Asio; no cancellation slots, so aborts are
// explicit calls.
#include <array>
#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/system/error_code.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "eexit/engine/request.hpp"

namespace eexit::serve {

namespace asio = boost::asio;
using error_code = boost::system::error_code;

// ---- errors -------------------------------------------------------------------------
enum class errc {
  rejected = 1,  // the engine refused the request (RequestOutput::error says why)
  queue_full,    // more requests in flight than ServiceOptions::max_pending
  engine_error,  // the step that ran it failed (finish_reason::error)
  engine_fault,  // an exception on the engine thread outside step()
  stopped,       // the service stopped before the request finished
};

namespace detail {
class error_category_impl : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "eexit.serve"; }
  std::string message(int ev) const override {
    switch (errc(ev)) {
      case errc::rejected:
        return "request rejected";
      case errc::queue_full:
        return "too many requests in flight";
      case errc::engine_error:
        return "the engine failed the request";
      case errc::engine_fault:
        return "fault on the engine thread";
      case errc::stopped:
        return "the engine service stopped";
    }
    return "unknown eexit.serve error";
  }
};
}  // namespace detail

inline const boost::system::error_category& error_category() noexcept {
  static const detail::error_category_impl cat;
  return cat;
}
inline error_code make_error_code(errc e) noexcept {
  return {int(e), error_category()};
}

}  // namespace eexit::serve

template <>
struct boost::system::is_error_code_enum<eexit::serve::errc> : std::true_type {};

namespace eexit::serve {

struct ServiceOptions {
  // Requests submitted and not yet finished; one more is refused with errc::queue_full.
  std::size_t max_pending = 256;
};

// Upper bounds (seconds) of the step-time histogram buckets; +Inf is implicit.
inline constexpr std::array<double, 12> step_time_buckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5};

// A consistent snapshot of the service and its engine, refreshed after every iteration.
struct ServiceMetrics {
  std::int64_t submitted = 0;
  std::int64_t finished_stop = 0, finished_length = 0, finished_abort = 0, finished_error = 0;
  std::int64_t rejected = 0, queue_full = 0;
  std::int64_t prompt_tokens = 0, generated_tokens = 0, steps = 0, preemptions = 0;
  std::int64_t running = 0, waiting = 0;
  std::int64_t kv_blocks_used = 0, kv_blocks_total = 0;
  std::array<std::int64_t, step_time_buckets.size() + 1> step_time_counts{};  // last: +Inf
  double step_time_sum_s = 0.0;
  std::vector<std::int32_t> exit_layers;     // layer of each exit point
  std::vector<std::int64_t> exit_histogram;  // tokens per exit point
  std::int64_t loop_iterations = 0;          // engine-thread wake-ups (idle must not spin)
  // Self-speculation (EngineStats): verify passes, drafts proposed and accepted, tokens
  // the verify passes emitted.
  std::int64_t verify_passes = 0, draft_tokens = 0, accepted_drafts = 0, speculative_tokens = 0;
};

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

template <class Engine>
class EngineService final : public detail::ServiceCore {
 public:
  using engine_type = Engine;
  using executor_type = asio::thread_pool::executor_type;

  // The engine must outlive the service; only the service's thread touches it from now on
  // (its backend too: CpuBackend's pool serves one calling thread at a time).
  explicit EngineService(Engine& engine, ServiceOptions opt = {}) : engine_(&engine), opt_(opt) {
    refresh_metrics(0.0, false);
    thread_ = std::thread([this] { run(); });
  }
  ~EngineService() {
    stop();
    pool_.join();
  }
  EngineService(const EngineService&) = delete;
  EngineService& operator=(const EngineService&) = delete;

  // Where completions of handlers without an executor of their own run.
  executor_type get_executor() noexcept { return pool_.get_executor(); }

  // Queues a request; thread-safe. Outputs come through the returned stream, completed on
  // `ex` unless the handler has an associated executor.
  TokenStream submit(GenerateRequest req, asio::any_io_executor ex) {
    auto ch = std::make_shared<detail::Channel>();
    std::uint64_t ticket = 0;
    bool full = false, stopped = false;
    {
      std::lock_guard lk(m_);
      ticket = next_ticket_++;
      if (stop_) {
        stopped = true;
      } else if (pending_ >= opt_.max_pending) {
        full = true;
      } else {
        ++pending_;
        cmds_.push_back(Cmd{ticket, ch, std::move(req), false, {}});
      }
    }
    if (full || stopped) {
      RequestOutput o;
      o.finish = finish_reason::error;
      o.error = full ? "too many requests in flight" : "the engine service stopped";
      if (full) {
        std::lock_guard lk(metrics_m_);
        ++metrics_.queue_full;
      }
      ch->deliver(full ? errc::queue_full : errc::stopped, std::move(o), true);
    } else {
      cv_.notify_one();
    }
    return TokenStream(this, ticket, std::move(ch), std::move(ex));
  }
  TokenStream submit(GenerateRequest req) {
    return submit(std::move(req), asio::any_io_executor(pool_.get_executor()));
  }

  void abort(std::uint64_t ticket) override {
    {
      std::lock_guard lk(m_);
      if (stop_) return;
      cmds_.push_back(Cmd{ticket, nullptr, {}, true, {}});
    }
    cv_.notify_one();
  }

  ServiceMetrics metrics() const {
    std::lock_guard lk(metrics_m_);
    return metrics_;
  }
  std::size_t pending() const {
    std::lock_guard lk(m_);
    return pending_;
  }
  const ServiceOptions& options() const noexcept { return opt_; }

  // Fails whatever is in flight with errc::stopped and joins the engine thread. Idempotent.
  void stop() {
    {
      std::lock_guard lk(m_);
      stop_ = true;
    }
    cv_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

  // Test hook: runs fn on the engine thread before its next step (fault injection).
  void post_to_engine_thread(std::function<void(Engine&)> fn) {
    {
      std::lock_guard lk(m_);
      if (stop_) return;
      Cmd c;
      c.hook = std::move(fn);
      cmds_.push_back(std::move(c));
    }
    cv_.notify_one();
  }

 private:
  struct Cmd {
    std::uint64_t ticket = 0;
    std::shared_ptr<detail::Channel> ch;
    GenerateRequest req;
    bool abort = false;
    std::function<void(Engine&)> hook;
  };
  struct Live {
    std::uint64_t ticket;
    std::shared_ptr<detail::Channel> ch;
  };

  void run() noexcept {
    std::vector<Cmd> cmds;
    bool work = false;
    for (;;) {
      cmds.clear();
      {
        std::unique_lock lk(m_);
        // Asleep while there is nothing to do: a submit or an abort wakes us.
        cv_.wait(lk, [&] { return stop_ || !cmds_.empty() || work; });
        if (stop_) break;
        cmds.swap(cmds_);
      }
      double step_s = 0.0;
      bool stepped = false;
      try {
        for (auto& c : cmds) handle(c);
        cmds.clear();
        if (engine_->has_work()) {
          const auto t0 = std::chrono::steady_clock::now();
          auto outs = engine_->step();
          step_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          stepped = true;
          for (auto& o : outs) route(std::move(o));
        }
        work = engine_->has_work();
      } catch (const std::exception& e) {
        fault(e.what());
        work = safe_has_work();
      } catch (...) {
        fault("unknown exception on the engine thread");
        work = safe_has_work();
      }
      // Commands drained but not handled (a fault midway) fail as well.
      for (auto& c : cmds)
        if (c.ch) fail(c.ch, errc::engine_fault, "fault on the engine thread");
      refresh_metrics(step_s, stepped);
    }
    // Stopping: nothing is left hanging.
    {
      std::lock_guard lk(m_);
      cmds.swap(cmds_);
    }
    for (auto& c : cmds)
      if (c.ch) fail(c.ch, errc::stopped, "the engine service stopped");
    for (auto& [id, live] : live_) {
      try {
        engine_->abort(id);
      } catch (...) {
      }
      fail(live.ch, errc::stopped, "the engine service stopped");
    }
    live_.clear();
    by_ticket_.clear();
    refresh_metrics(0.0, false);
  }

  void handle(Cmd& c) {
    if (c.hook) {
      auto hook = std::move(c.hook);
      c.hook = nullptr;
      hook(*engine_);
      return;
    }
    if (c.abort) {
      if (auto it = by_ticket_.find(c.ticket); it != by_ticket_.end()) engine_->abort(it->second);
      return;
    }
    auto ch = std::move(c.ch);
    c.ch = nullptr;  // handled: a later fault must not fail it twice
    request_id id = 0;
    try {
      id = engine_->add_request(std::move(c.req));
    } catch (const std::exception& e) {
      {
        std::lock_guard lk(metrics_m_);
        ++metrics_.rejected;
      }
      fail(ch, errc::rejected, e.what());
      return;
    }
    {
      std::lock_guard lk(metrics_m_);
      ++metrics_.submitted;
    }
    live_.emplace(id, Live{c.ticket, std::move(ch)});
    by_ticket_.emplace(c.ticket, id);
  }

  void route(RequestOutput o) {
    auto it = live_.find(o.id);
    if (it == live_.end()) return;
    const bool last = o.finished();
    error_code ec;
    if (o.finish == finish_reason::error) ec = errc::engine_error;
    auto ch = it->second.ch;
    if (last) {
      {
        std::lock_guard lk(metrics_m_);
        switch (o.finish) {
          case finish_reason::stop:
            ++metrics_.finished_stop;
            break;
          case finish_reason::length:
            ++metrics_.finished_length;
            break;
          case finish_reason::abort:
            ++metrics_.finished_abort;
            break;
          default:
            ++metrics_.finished_error;
        }
      }
      by_ticket_.erase(it->second.ticket);
      live_.erase(it);
      release_pending();
    }
    ch->deliver(ec, std::move(o), last);
  }

  // A request that ends without reaching the engine's outputs.
  void fail(const std::shared_ptr<detail::Channel>& ch, errc why, const std::string& msg) {
    RequestOutput o;
    o.finish = finish_reason::error;
    o.error = msg;
    release_pending();
    ch->deliver(why, std::move(o), true);
  }

  void release_pending() {
    std::lock_guard lk(m_);
    if (pending_) --pending_;
  }

  // An exception outside Engine::step (which never throws): every request in flight fails
  // with errc::engine_fault and is dropped from the engine, so its blocks are freed.
  void fault(const std::string& what) noexcept {
    try {
      for (auto& [id, live] : live_) {
        try {
          engine_->abort(id);
        } catch (...) {
        }
        {
          std::lock_guard lk(metrics_m_);
          ++metrics_.finished_error;
        }
        fail(live.ch, errc::engine_fault, "fault on the engine thread: " + what);
      }
      live_.clear();
      by_ticket_.clear();
      // The aborts above report on the next step; drain them now (nobody is listening).
      if (safe_has_work()) (void)engine_->step();
    } catch (...) {
    }
  }

  bool safe_has_work() noexcept {
    try {
      return engine_->has_work();
    } catch (...) {
      return false;
    }
  }

  void refresh_metrics(double step_s, bool stepped) noexcept {
    try {
      std::lock_guard lk(metrics_m_);
      auto& M = metrics_;
      ++M.loop_iterations;
      if (stepped) {
        std::size_t b = 0;
        while (b < step_time_buckets.size() && step_s > step_time_buckets[b]) ++b;
        ++M.step_time_counts[b];
        M.step_time_sum_s += step_s;
      }
      if constexpr (requires {
                      engine_->n_running();
                      engine_->n_waiting();
                    }) {
        M.running = std::int64_t(engine_->n_running());
        M.waiting = std::int64_t(engine_->n_waiting());
      }
      if constexpr (requires {
                      engine_->cache().blocks_used();
                      engine_->cache().blocks_total();
                    }) {
        M.kv_blocks_used = engine_->cache().blocks_used();
        M.kv_blocks_total = engine_->cache().blocks_total();
      }
      if constexpr (requires { engine_->stats().generated_tokens; }) {
        const auto& st = engine_->stats();
        M.prompt_tokens = st.prompt_tokens;
        M.generated_tokens = st.generated_tokens;
        M.steps = st.steps;
        M.preemptions = st.preemptions;
        M.exit_histogram = st.exit_histogram;
        if constexpr (requires { st.verify_passes; }) {
          M.verify_passes = st.verify_passes;
          M.draft_tokens = st.draft_tokens;
          M.accepted_drafts = st.accepted_drafts;
          M.speculative_tokens = st.speculative_tokens;
        }
      }
      if constexpr (requires { engine_->model().exit_layers(); }) {
        if (M.exit_layers.empty()) {
          const auto layers = engine_->model().exit_layers();
          M.exit_layers.assign(layers.begin(), layers.end());
        }
      }
    } catch (...) {
    }
  }

  Engine* engine_;
  ServiceOptions opt_;
  mutable std::mutex m_;
  std::condition_variable cv_;
  std::vector<Cmd> cmds_;
  bool stop_ = false;
  std::size_t pending_ = 0;
  std::uint64_t next_ticket_ = 1;
  // Engine thread only.
  std::unordered_map<request_id, Live> live_;
  std::unordered_map<std::uint64_t, request_id> by_ticket_;
  mutable std::mutex metrics_m_;
  ServiceMetrics metrics_;
  asio::thread_pool pool_{1};
  std::thread thread_;
};

// ---- async_generate -----------------------------------------------------------------

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
