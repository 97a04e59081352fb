// EngineService in process: submit and stream with each completion token (callback,
// use_future, use_awaitable), abort frees KV blocks, idle means asleep and a submit wakes
// it, faults fail requests instead of hanging them.
#include <utility>

// GCC 12 at -O1 with the sanitizers flags Boost 1.74's use_future promise creation as
// maybe-uninitialized (a false positive inside boost/asio/impl/use_future.hpp).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <doctest/doctest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <future>
#include <stdexcept>
#include <thread>

#include "../test_paths.hpp"
#include "eexit/eexit.hpp"
#include "eexit/serve/engine_service.hpp"
#include "eexit/serve/model_setup.hpp"

using namespace eexit;
namespace asio = boost::asio;
using serve::errc;
using serve::error_code;

namespace {

using Cache = PagedCache<CpuBackend, 16>;
using Eng = Engine<RuntimePolicy, Cache>;

struct Shakespeare {
  CpuBackend be{2};
  std::unique_ptr<LlamaModel<CpuBackend>> m = serve::load_serving_model<LlamaModel<CpuBackend>>(
      be, test::source("models/eexit-shakespeare"));
  LlamaModel<CpuBackend>& model = *m;
  Tokenizer tok = Tokenizer::load(test::source("models/eexit-shakespeare/tokenizer.json"),
                                  model.config().vocab_size);
};
Shakespeare& sh() {
  static Shakespeare s;
  return s;
}

GenerateRequest request(const std::string& prompt, int max_tokens = 12) {
  GenerateRequest r;
  for (int id : sh().tok.encode(prompt, true)) r.prompt.push_back(id);
  r.max_tokens = max_tokens;
  r.ignore_eos = true;
  return r;
}

// The same request on a fresh engine, alone, without the service. Call it only while the
// service is idle: both engines use sh().be, whose thread pool serves one caller at a time.
std::vector<std::int32_t> alone(const GenerateRequest& r, RuntimePolicy p = {}) {
  Cache cache(sh().be, sh().model.config(), 64);
  Eng e(sh().model, cache, p);
  e.add_request(r);
  return e.run_to_completion().at(0).tokens;
}

struct Fixture {
  Cache cache{sh().be, sh().model.config(), 64};
  Eng engine{sh().model, cache};
  serve::EngineService<Eng> svc{engine};
};

template <class Pred>
bool eventually(Pred p) {
  for (int i = 0; i < 2000; ++i) {
    if (p()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

}  // namespace

TEST_CASE("async_generate with use_future equals the engine alone") {
  Fixture f;
  auto r = request("ROMEO:\nBut soft, what light", 16);
  int steps = 0;
  auto fut = serve::async_generate(
      f.svc, r, [&](const RequestOutput&) { ++steps; }, asio::use_future);
  serve::Completion c = fut.get();
  CHECK(c.finish == finish_reason::length);
  CHECK(c.tokens == alone(r));
  CHECK(steps >= 1);
  CHECK(c.stats.generated_tokens == 16);
}

TEST_CASE("async_generate with a callback and with use_awaitable") {
  Fixture f;
  auto r = request("MERCUTIO:\n", 11);
  std::promise<serve::Completion> done;
  serve::async_generate(
      f.svc, r, [](const RequestOutput&) {},
      [&](error_code ec, serve::Completion c) {
        CHECK(!ec);
        done.set_value(std::move(c));
      });
  // Finished first: alone() shares the CpuBackend's pool, which one thread uses at a time.
  const auto first = done.get_future().get();
  CHECK(first.tokens == alone(r));
  asio::io_context io;
  serve::Completion got;
  int steps = 0;
  std::thread::id step_thread;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        got = co_await serve::async_generate(
            f.svc, r,
            [&](const RequestOutput&) {
              ++steps;
              step_thread = std::this_thread::get_id();
            },
            asio::use_awaitable);
      },
      asio::detached);
  io.run();
  CHECK(got.tokens == alone(r));
  CHECK(steps >= 1);
  CHECK(step_thread == std::this_thread::get_id());  // on the awaiting coroutine's executor
}

TEST_CASE("a callback gets each step's tokens as a stream") {
  Fixture f;
  auto r = request("KING HENRY:\n", 10);
  std::promise<std::vector<std::int32_t>> done;
  auto stream = std::make_shared<serve::TokenStream>(f.svc.submit(r));
  auto got = std::make_shared<std::vector<std::int32_t>>();
  std::function<void(error_code, RequestOutput)> next = [&, stream, got](error_code ec,
                                                                         RequestOutput o) {
    REQUIRE(!ec);
    for (auto& t : o.tokens) got->push_back(t.token);
    if (o.finished())
      done.set_value(*got);
    else
      stream->async_next(next);
  };
  stream->async_next(next);
  auto toks = done.get_future().get();
  CHECK(toks == alone(r));
  // After the last output: eof.
  auto fut = stream->async_next(asio::use_future);
  CHECK_THROWS(fut.get());
  next = nullptr;
}

TEST_CASE("use_awaitable: concurrent coroutines each get what they get alone") {
  Fixture f;
  asio::io_context io;
  std::vector<GenerateRequest> rs = {request("First Citizen:\n", 14),
                                     request("JULIET:\nO Romeo", 9), request("To be, or not", 20),
                                     request("HAMLET:\n", 5)};
  std::vector<std::vector<std::int32_t>> out(rs.size());
  for (std::size_t i = 0; i < rs.size(); ++i)
    asio::co_spawn(
        io,
        [&, i]() -> asio::awaitable<void> {
          auto s = f.svc.submit(rs[i], co_await asio::this_coro::executor);
          for (;;) {
            auto o = co_await s.async_next(asio::use_awaitable);
            for (auto& t : o.tokens) out[i].push_back(t.token);
            if (o.finished()) break;
          }
        },
        asio::detached);
  io.run();
  for (std::size_t i = 0; i < rs.size(); ++i) CHECK(out[i] == alone(rs[i]));
}

TEST_CASE("abort mid-stream frees the KV blocks and the service keeps serving") {
  Fixture f;
  auto s = f.svc.submit(request("ROMEO:\n", 400));
  auto first = s.async_next(asio::use_future).get();
  CHECK(!first.finished());
  CHECK(eventually([&] { return f.svc.metrics().kv_blocks_used > 0; }));
  s.abort();
  finish_reason why = finish_reason::none;
  for (;;) {
    auto o = s.async_next(asio::use_future).get();
    if (o.finished()) {
      why = o.finish;
      break;
    }
  }
  CHECK(why == finish_reason::abort);
  CHECK(eventually([&] { return f.svc.metrics().kv_blocks_used == 0; }));
  CHECK(f.svc.metrics().finished_abort == 1);
  // Dropping an unfinished stream aborts it too.
  {
    auto s2 = f.svc.submit(request("MERCUTIO:\n", 400));
    (void)s2.async_next(asio::use_future).get();
  }
  CHECK(eventually([&] { return f.svc.metrics().finished_abort == 2; }));
  CHECK(eventually([&] { return f.svc.metrics().kv_blocks_used == 0 && f.svc.pending() == 0; }));
  auto r = request("To be", 6);
  auto c = serve::async_generate(
               f.svc, r, [](const RequestOutput&) {}, asio::use_future)
               .get();
  CHECK(c.tokens == alone(r));
}

TEST_CASE("idle means asleep; a submit wakes the engine thread") {
  Fixture f;
  auto r = request("HAMLET:\n", 4);
  (void)serve::async_generate(
      f.svc, r, [](const RequestOutput&) {}, asio::use_future)
      .get();
  CHECK(eventually([&] { return f.svc.pending() == 0; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const auto before = f.svc.metrics().loop_iterations;
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CHECK(f.svc.metrics().loop_iterations == before);  // no wake-ups while nothing runs
  auto c = serve::async_generate(
               f.svc, r, [](const RequestOutput&) {}, asio::use_future)
               .get();
  CHECK(c.tokens == alone(r));
  CHECK(f.svc.metrics().loop_iterations > before);
}

TEST_CASE("a rejected request completes with errc::rejected and a message") {
  Fixture f;
  GenerateRequest bad;  // empty prompt
  auto s = f.svc.submit(bad);
  error_code ec;
  RequestOutput o;
  std::promise<void> p;
  s.async_next([&](error_code e, RequestOutput out) {
    ec = e;
    o = std::move(out);
    p.set_value();
  });
  p.get_future().get();
  CHECK(ec == errc::rejected);
  CHECK(o.finish == finish_reason::error);
  CHECK(o.error.find("prompt is empty") != std::string::npos);
  CHECK(f.svc.metrics().rejected == 1);
  CHECK(f.svc.pending() == 0);
}

TEST_CASE("over max_pending: errc::queue_full at once") {
  Cache cache{sh().be, sh().model.config(), 64};
  Eng engine{sh().model, cache};
  serve::EngineService<Eng> svc{engine, serve::ServiceOptions{.max_pending = 2}};
  auto a = svc.submit(request("A", 300));
  auto b = svc.submit(request("B", 300));
  auto c = svc.submit(request("C", 3));
  auto fut = c.async_next(asio::use_future);
  CHECK_THROWS_AS(fut.get(), boost::system::system_error);
  CHECK(svc.metrics().queue_full == 1);
}

TEST_CASE("a fault on the engine thread fails the in-flight requests, never hangs them") {
  Fixture f;
  auto s1 = f.svc.submit(request("ROMEO:\n", 400));
  auto s2 = f.svc.submit(request("JULIET:\n", 400));
  (void)s1.async_next(asio::use_future).get();
  f.svc.post_to_engine_thread([](Eng&) { throw std::runtime_error("injected"); });
  for (auto* s : {&s1, &s2}) {
    error_code ec;
    std::string msg;
    for (;;) {
      std::promise<void> p;
      RequestOutput o;
      s->async_next([&](error_code e, RequestOutput out) {
        ec = e;
        o = std::move(out);
        p.set_value();
      });
      p.get_future().get();
      if (ec || o.finished()) {
        msg = o.error;
        break;
      }
    }
    CHECK(ec == errc::engine_fault);
    CHECK(msg.find("injected") != std::string::npos);
  }
  CHECK(eventually([&] { return f.svc.metrics().kv_blocks_used == 0; }));
  auto r = request("To be", 5);
  auto c = serve::async_generate(
               f.svc, r, [](const RequestOutput&) {}, asio::use_future)
               .get();
  CHECK(c.tokens == alone(r));
}

TEST_CASE("stop fails what is in flight with errc::stopped") {
  Cache cache{sh().be, sh().model.config(), 64};
  Eng engine{sh().model, cache};
  serve::EngineService<Eng> svc{engine};
  auto s = svc.submit(request("ROMEO:\n", 400));
  (void)s.async_next(asio::use_future).get();
  svc.stop();
  error_code ec;
  for (;;) {
    std::promise<void> p;
    RequestOutput o;
    s.async_next([&](error_code e, RequestOutput out) {
      ec = e;
      o = std::move(out);
      p.set_value();
    });
    p.get_future().get();
    if (ec || o.finished()) break;
  }
  CHECK(ec == errc::stopped);
}

TEST_CASE("RuntimePolicy: split with per-row thresholds; full-depth threshold never exits") {
  RuntimePolicy p;
  p.rule = rule_from_name("split");
  p.thresholds.values = {0.0f};  // everything confident
  auto r = request("ROMEO:\n", 12);
  Cache cache(sh().be, sh().model.config(), 64);
  Eng e(sh().model, cache, p);
  e.add_request(r);
  auto c = e.run_to_completion().at(0);
  CHECK(std::all_of(c.exit_layers.begin() + 1, c.exit_layers.end(),  // the first: prefill
                    [&](int l) { return l == sh().model.exit_layers()[0]; }));
  auto r2 = r;
  r2.exit_threshold = full_depth_threshold;
  CHECK(alone(r2, p) == alone(r));
}

TEST_CASE("metrics: prefix-cache hits of a repeated prompt, and the blocks kept for them") {
  Cache cache{sh().be, sh().model.config(), 64};
  EngineOptions opt;
  opt.prefix_cache = true;
  Eng engine{sh().model, cache, RuntimePolicy{}, opt};
  serve::EngineService<Eng> svc{engine};
  // 3 full blocks and more: the second run takes the first 3 from the cache.
  auto r = request(
      "ROMEO:\nBut soft, what light through yonder window breaks? It is the east, "
      "and Juliet is the sun. Arise, fair sun, and kill the envious moon, who is "
      "already sick and pale with grief.",
      4);
  REQUIRE(r.prompt.size() > 49);
  const auto first = serve::async_generate(
                         svc, r, [](const RequestOutput&) {}, asio::use_future)
                         .get();
  const auto second = serve::async_generate(
                          svc, r, [](const RequestOutput&) {}, asio::use_future)
                          .get();
  CHECK(first.stats.cached_tokens == 0);
  CHECK(second.stats.cached_tokens >= 48);
  CHECK(second.tokens == first.tokens);
  serve::ServiceMetrics m;
  REQUIRE(eventually([&] {
    m = svc.metrics();
    // Cached once the second request has let go of them (the refresh after its last step).
    return m.prefix_cached_tokens == second.stats.cached_tokens && m.kv_blocks_cached >= 3;
  }));
  const auto text = serve::prometheus_text(m);
  CHECK(text.find("eexit_prefix_cache_hit_tokens_total " +
                  std::to_string(second.stats.cached_tokens) + "\n") != std::string::npos);
  CHECK(text.find("eexit_prefix_cache_hit_rate 0.") != std::string::npos);
  CHECK(text.find("eexit_kv_blocks_cached ") != std::string::npos);
  svc.stop();
}
