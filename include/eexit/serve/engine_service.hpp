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
// Errors: serve/errors.hpp; streams: serve/token_stream.hpp; metrics: serve/metrics.hpp;
// async_generate: serve/async_generate.hpp (included here for the service's users).
#include <utility>  // before Asio: GCC 12 with Boost 1.74 needs it (DESIGN.md §6)
// Asio and the standard library:
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "eexit/engine/request.hpp"
#include "eexit/serve/async_generate.hpp"  // callers of the service use it beside it
#include "eexit/serve/errors.hpp"
#include "eexit/serve/metrics.hpp"
#include "eexit/serve/token_stream.hpp"

namespace eexit::serve {

struct ServiceOptions {
  // Requests submitted and not yet finished; one more is refused with errc::queue_full.
  std::size_t max_pending = 256;
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

  // Throws eexit::request_error for a request the engine would refuse (Engine::validate);
  // thread-safe: the engine's checks read nothing a step changes.
  void validate(const GenerateRequest& req) const {
    if constexpr (requires { engine_->validate(req); }) engine_->validate(req);
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
      if constexpr (requires { engine_->cache().blocks_cached(); })
        M.kv_blocks_cached = engine_->cache().blocks_cached();
      if constexpr (requires { engine_->stats().generated_tokens; }) {
        const auto& st = engine_->stats();
        M.prompt_tokens = st.prompt_tokens;
        M.generated_tokens = st.generated_tokens;
        M.steps = st.steps;
        M.preemptions = st.preemptions;
        if constexpr (requires { st.prefix_cached_tokens; })
          M.prefix_cached_tokens = st.prefix_cached_tokens;
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

}  // namespace eexit::serve
